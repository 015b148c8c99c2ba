#!/usr/bin/env python3
"""PyTorch peers of mf-train's networks and objectives, for side-by-side step timing
(tools/gpu-check): the same network, batch, objective and guidance as an mf-train config, the
JVP by torch.func.jvp. What `mf-train bench` times is mirrored step for step: draw a batch,
(guidance forward without gradients), forward (with the JVP for MeanFlow), adaptive-weight loss,
backward, Adam, EMA, and the loss read back (a device sync).

Networks, as crates/mf-train/src/model/{mlp,unet}.rs define them:
  mlp:  [z | sin/cos emb(t) | sin/cos emb(t - r) | class emb (+1 null)] -> depth x (Linear width
        + SiLU) -> Linear dims (zero-initialised).
  unet: cond = SiLU(Linear([emb(t) | emb(t - r) | class])) of size 4 width; stem 3x3 conv; per
        level a residual block (GroupNorm(8), SiLU, 3x3 conv, + Linear(cond) per channel,
        GroupNorm, SiLU, 3x3 conv (zero), 1x1 skip when channels change) and a stride-2 3x3 conv
        between levels; a middle block; on the way up nearest 2x upsampling, concatenated skips
        and a block per level; GroupNorm, SiLU, 3x3 conv (zero) to the image's channels.
  dit:  DiT with adaLN-Zero (crates/mf-train/src/model/dit.rs): p x p patches by a stride-p conv,
        fixed 2-D sin-cos position embeddings; cond = TimeEmbedder(t) + TimeEmbedder(t - r) +
        class embedding (width, + null), TimeEmbedder = Linear, SiLU, Linear; per block
        LayerNorm(no affine, eps 1e-6), modulate, attention (qkv side by side, heads), gate;
        LayerNorm, modulate, Linear, GELU(tanh), Linear, gate; modulations SiLU -> Linear (zero);
        final adaLN and a zero Linear to p*p*C per token, patches back to the image.
  prediction = "x" returns u = (z - x_hat) / max(t, 0.05).

  python3 tools/peers/meanflow_torch.py --config crates/mf-train/configs/mnist.toml \\
      --data data/mnist --objective meanflow --steps 20 --device cuda --json

The MNIST MLP follows ../shared/peers/torch_meanflow_mnist.py, the peer earlier comparisons used.
"""
import argparse, json, math, os, re, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

T_FLOOR = 0.05
GROUPS = 8


def read_config(path):
    """The mf-train TOML config (tomllib, or the flat subset our configs use)."""
    try:
        import tomllib
        with open(path, "rb") as f:
            return tomllib.load(f)
    except ImportError:
        config, section = {}, None
        for line in open(path):
            line = line.split("#", 1)[0].strip()
            if m := re.fullmatch(r"\[(\w+)\]", line):
                section = config.setdefault(m.group(1), {})
            elif "=" in line:
                key, value = (s.strip() for s in line.split("=", 1))
                section[key] = json.loads(value.replace("'", '"'))
        return config


def idx(path):
    b = open(path, "rb").read()
    dims = b[3]
    shape = [int.from_bytes(b[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(b, np.uint8, offset=4 + 4 * dims).reshape(shape)


def time_emb(t, dim, scale):
    half = dim // 2
    freqs = scale * torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=t.dtype) / half)
    a = t[:, None] * freqs[None]
    return torch.cat([a.sin(), a.cos()], dim=1)


class Conditioned(nn.Module):
    """Embeddings of t, t - r and the class, and x-prediction's u, shared by both networks."""

    def __init__(self, m, classes):
        super().__init__()
        self.time_dim, self.time_scale = m["time_dim"], m.get("time_scale", 1000.0)
        self.xpred = m.get("prediction", "u") == "x"
        self.cls = nn.Embedding(classes + 1, m.get("class_dim", m["width"]))

    def embed(self, t, r, y):
        return [time_emb(t, self.time_dim, self.time_scale),
                time_emb(t - r, self.time_dim, self.time_scale), self.cls(y)]

    def forward(self, z, t, r, y):
        out = self.net(z, t, r, y)
        if self.xpred:
            return (z - out) / t.clamp(min=T_FLOOR)[:, None]
        return out


class MLP(Conditioned):
    def __init__(self, m, dims, classes):
        super().__init__(m, classes)
        width, depth = m["width"], m["depth"]
        sizes = [dims + 2 * m["time_dim"] + m["class_dim"]] + [width] * depth
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])])
        self.out = nn.Linear(width, dims)
        nn.init.zeros_(self.out.weight); nn.init.zeros_(self.out.bias)

    def net(self, z, t, r, y):
        h = torch.cat([z] + self.embed(t, r, y), dim=1)
        for layer in self.layers:
            h = F.silu(layer(h))
        return self.out(h)


def conv3x3(a, b, stride=1, zero=False):
    c = nn.Conv2d(a, b, 3, stride=stride, padding=1)
    if zero:
        nn.init.zeros_(c.weight); nn.init.zeros_(c.bias)
    return c


class ResBlock(nn.Module):
    def __init__(self, cin, cout, cond_dim):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(GROUPS, cin), conv3x3(cin, cout)
        self.cond = nn.Linear(cond_dim, cout)
        self.norm2, self.conv2 = nn.GroupNorm(GROUPS, cout), conv3x3(cout, cout, zero=True)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, cond):
        h = self.conv1(F.silu(self.norm1(x))) + self.cond(cond)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.skip(x) if self.skip is not None else x)


class UNet(Conditioned):
    def __init__(self, m, shape, classes):
        super().__init__(m, classes)
        width, levels = m["width"], m["depth"]
        self.shape = shape
        ch = lambda level: width << level
        cond_dim = 4 * width
        self.cond = nn.Linear(2 * m["time_dim"] + m["class_dim"], cond_dim)
        self.stem = conv3x3(shape[0], width)
        self.down = nn.ModuleList([ResBlock(width if l == 0 else ch(l - 1), ch(l), cond_dim) for l in range(levels)])
        self.downsample = nn.ModuleList([conv3x3(ch(l), ch(l), stride=2) for l in range(levels - 1)])
        self.middle = ResBlock(ch(levels - 1), ch(levels - 1), cond_dim)
        self.up = nn.ModuleList([ResBlock((ch(l) if l + 1 == levels else ch(l + 1)) + ch(l), ch(l), cond_dim)
                                 for l in range(levels)])
        self.out_norm, self.out_conv = nn.GroupNorm(GROUPS, width), conv3x3(width, shape[0], zero=True)

    def net(self, z, t, r, y):
        cond = F.silu(self.cond(torch.cat(self.embed(t, r, y), dim=1)))
        x = self.stem(z.reshape(-1, *self.shape))
        skips = []
        for level, block in enumerate(self.down):
            x = block(x, cond)
            skips.append(x)
            if level < len(self.downsample):
                x = self.downsample[level](x)
        x = self.middle(x, cond)
        for level in reversed(range(len(self.up))):
            if level + 1 < len(self.up):
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = self.up[level](torch.cat([x, skips.pop()], dim=1), cond)
        x = self.out_conv(F.silu(self.out_norm(x)))
        return x.reshape(z.shape[0], -1)


def position_embedding(dim, grid):
    """The fixed 2-D sin-cos embedding [h*w, dim]: j's then i's [sin, cos] at 10000^(-k/(dim/4))."""
    quarter = dim // 4
    omega = 10000.0 ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
    embed = lambda pos: torch.cat([(pos[:, None] * omega).sin(), (pos[:, None] * omega).cos()], 1)
    i, j = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    i, j = i.reshape(-1).double(), j.reshape(-1).double()
    return torch.cat([embed(j), embed(i)], 1).float()


def zero_linear(a, b):
    layer = nn.Linear(a, b)
    nn.init.zeros_(layer.weight); nn.init.zeros_(layer.bias)
    return layer


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class TimeEmbedder(nn.Module):
    def __init__(self, time_dim, width):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(time_dim, width), nn.Linear(width, width)

    def forward(self, emb):
        return self.fc2(F.silu(self.fc1(emb)))


class DitBlock(nn.Module):
    def __init__(self, width, heads, mlp_ratio):
        super().__init__()
        self.heads = heads
        self.modulation = zero_linear(width, 6 * width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, mlp_ratio * width), nn.Linear(mlp_ratio * width, width)

    def forward(self, x, cond):
        n, l, d = x.shape
        m = self.modulation(F.silu(cond)).chunk(6, dim=1)
        h = modulate(F.layer_norm(x, (d,), eps=1e-6), m[0], m[1])
        q, k, v = (part.reshape(n, l, self.heads, d // self.heads).transpose(1, 2)
                   for part in self.qkv(h).chunk(3, dim=2))
        a = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(d // self.heads), dim=3) @ v
        x = x + m[2][:, None] * self.proj(a.transpose(1, 2).reshape(n, l, d))
        h = modulate(F.layer_norm(x, (d,), eps=1e-6), m[3], m[4])
        return x + m[5][:, None] * self.fc2(F.gelu(self.fc1(h), approximate="tanh"))


class DiT(Conditioned):
    def __init__(self, m, shape, classes):
        super().__init__(m, classes)
        width, p = m["width"], m.get("patch", 4)
        self.shape, self.p = shape, p
        self.grid = (shape[1] // p, shape[2] // p)
        self.cls = nn.Embedding(classes + 1, width)
        self.patch_embed = nn.Conv2d(shape[0], width, p, stride=p)
        self.t_embed, self.h_embed = TimeEmbedder(m["time_dim"], width), TimeEmbedder(m["time_dim"], width)
        self.blocks = nn.ModuleList([DitBlock(width, m.get("heads", 4), m.get("mlp_ratio", 4))
                                     for _ in range(m["depth"])])
        self.final_modulation = zero_linear(width, 2 * width)
        self.final_linear = zero_linear(width, p * p * shape[0])
        self.register_buffer("positions", position_embedding(width, self.grid))

    def net(self, z, t, r, y):
        emb_t, emb_h, cls = self.embed(t, r, y)
        cond = self.t_embed(emb_t) + self.h_embed(emb_h) + cls
        x = self.patch_embed(z.reshape(-1, *self.shape)).flatten(2).transpose(1, 2) + self.positions
        for block in self.blocks:
            x = block(x, cond)
        shift, scale = self.final_modulation(F.silu(cond)).chunk(2, dim=1)
        x = self.final_linear(modulate(F.layer_norm(x, (x.shape[2],), eps=1e-6), shift, scale))
        (h, w), p, c = self.grid, self.p, self.shape[0]
        x = x.reshape(-1, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(z.shape[0], -1)


def sample_tr(n, o, device):
    """(t, r) as mf-train draws them: a from t's logit-normal, b from r's (t's by default);
    t = max(a, b) ("sorted") or a ("clipped"), r = min(a, b), and r = t for a share."""
    g = torch.randn(n, 2, device=device)
    a = torch.sigmoid(g[:, 0] * o["t_sigma"] + o["t_mu"])
    b = torch.sigmoid(g[:, 1] * o.get("r_sigma", o["t_sigma"]) + o.get("r_mu", o["t_mu"]))
    t = a if o.get("time_sampler", "sorted") == "clipped" else torch.maximum(a, b)
    return t, torch.where(torch.rand(n, device=device) >= o["ratio_r_neq_t"], t, torch.minimum(a, b))


def onnx_z_shape(graph):
    """The per-sample shape of input z ([C, H, W] in mf-export's files)."""
    z = next(i for i in graph.input if i.name == "z")
    return [d.dim_value for d in z.type.tensor_type.shape.dim[1:]]


def check_onnx(model, path, m, dims, classes):
    """Loads the weights of an mf-export fp32 file of the same config into `model` and compares
    its u with ONNX Runtime's on fixed inputs: the peer is our network when they agree."""
    import onnx, onnx.numpy_helper, onnxruntime
    graph = onnx.load(path).graph
    state = model.state_dict()
    loaded = set()
    for t in graph.initializer:
        parts = t.name.split(".")
        if len(parts) < 2 or parts[-1] in ("zero_bias", "unit_scale"):
            continue
        name = ".".join(parts[1:]).replace("class_embed", "cls")
        name = name.replace("gamma", "weight").replace("beta", "bias")
        if m["arch"] == "mlp" and name.startswith(f"layers.{m['depth']}."):
            name = name.replace(f"layers.{m['depth']}.", "out.")
        if name not in state:
            continue
        value = torch.from_numpy(onnx.numpy_helper.to_array(t).copy())
        if value.dim() == 2 and name.endswith("weight") and name != "cls.weight":
            value = value.t()  # MatMul weights [in, out]; nn.Linear holds [out, in]
        state[name] = value.reshape(state[name].shape)
        loaded.add(name)
    missing = [k for k in state if k not in loaded and k != "positions"]
    if missing:
        sys.exit(f"error: {path} has no weights for {missing}")
    model.load_state_dict(state)
    n = 4
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, dims, generator=g)
    t = torch.tensor([1.0, 0.8, 0.5, 0.2])
    r = torch.tensor([0.0, 0.3, 0.5, 0.1])
    y = torch.tensor([0, 3, classes, 7])
    with torch.no_grad():
        ours = model(z, t, r, y).numpy()
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    z_in = z.numpy().reshape([n] + list(onnx_z_shape(graph)))
    theirs = session.run(["u"], {"z": z_in, "t": t.numpy(), "r": r.numpy(), "class": y.numpy()})[0]
    theirs = theirs.reshape(n, -1)
    err = float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-12))
    print(json.dumps({"peer_vs_onnx": path, "network": m["arch"], "max_relative_error": err}))
    if not err < 1e-4:
        sys.exit(f"error: the peer differs from {path} by {err:.3g} (relative)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="an mf-train TOML config (mlp, unet or dit)")
    ap.add_argument("--data", required=True, help="folder with train-{images-idx3,labels-idx1}-ubyte")
    ap.add_argument("--objective", choices=["flow-matching", "meanflow", "meanflow-guided"], nargs="+",
                    required=True, help="one or more, each timed on a fresh network (one row each)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, help="instead of the config's train.batch")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--check-onnx", metavar="FILE",
                    help="instead of timing: load FILE's weights (mf-export fp32 of this config) and "
                         "compare the peer's u with ONNX Runtime's")
    a = ap.parse_args()
    if a.check_onnx:
        return run(a, "meanflow")
    for objective in a.objective:
        run(a, objective)


def run(a, objective):
    """Times one objective on a fresh network (or, with --check-onnx, checks the network)."""
    c = read_config(a.config)
    m, o = c["model"], c["objective"]
    batch = a.batch or c["train"]["batch"]
    omega = o.get("omega", 1.0) if objective == "meanflow-guided" else 1.0
    kappa = o.get("kappa", 0.0) if objective == "meanflow-guided" else 0.0
    lo, hi = o.get("guidance_interval", [0.0, 1.0]) if objective == "meanflow-guided" else (0.0, 1.0)
    dev = torch.device("cpu" if a.check_onnx else a.device)
    torch.manual_seed(c["train"].get("seed", 0))

    X = torch.tensor(idx(os.path.join(a.data, "train-images-idx3-ubyte")), dtype=torch.float32)
    X = (X.reshape(len(X), -1) / 127.5 - 1).to(dev)
    Y = torch.tensor(idx(os.path.join(a.data, "train-labels-idx1-ubyte")), dtype=torch.long).to(dev)
    classes, dims = int(Y.max()) + 1, X.shape[1]
    side = int(round(math.sqrt(dims)))
    if m["arch"] == "mlp":
        model = MLP(m, dims, classes)
    elif m["arch"] == "unet":
        model = UNet(m, (1, side, side), classes)
    elif m["arch"] == "dit":
        model = DiT(m, (1, side, side), classes)
    else:
        sys.exit(f"error: arch {m['arch']!r} has no peer here (mlp, unet, dit)")
    if a.check_onnx:
        return check_onnx(model, a.check_onnx, m, dims, classes)
    model = model.to(dev)
    ema = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=c["optim"]["lr"], betas=(c["optim"]["beta1"], c["optim"]["beta2"]))
    decay = c["optim"]["ema_decay"]
    null = classes

    def step():
        i = torch.randint(0, len(X), (batch,), device=dev)
        x, y = X[i], Y[i]
        drop = torch.rand(batch, device=dev) < o["label_drop"]
        y = torch.where(drop, torch.full_like(y, null), y)
        e = torch.randn_like(x)
        t, r = sample_tr(batch, o, dev)
        if objective == "flow-matching":
            r = t
        z = (1 - t[:, None]) * x + t[:, None] * e
        v = e - x
        if objective == "flow-matching":
            u, tgt = model(z, t, t, y), v
        else:
            vg = v
            if omega != 1.0 or kappa != 0.0:
                with torch.no_grad():
                    u_null = model(z, t, t, torch.full_like(y, null))
                    g = omega * v + (1 - omega - kappa) * u_null
                    if kappa != 0.0:
                        g = g + kappa * model(z, t, t, y)
                    keep = (~drop) & (t >= lo) & (t <= hi)
                    vg = torch.where(keep[:, None], g, v)
            u, dudt = torch.func.jvp(lambda z_, t_, r_: model(z_, t_, r_, y), (z, t, r),
                                     (vg, torch.ones_like(t), torch.zeros_like(r)))
            tgt = (vg - (t - r).clamp(0, 1)[:, None] * dudt).detach()
        err = ((u - tgt) ** 2).sum(1)
        loss = (err / (err.detach() + o["c"]) ** o["p"]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in model.parameters()], 1 - decay)
        return loss.item()

    for _ in range(a.warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    seconds = time.perf_counter() - start
    if not math.isfinite(loss):
        sys.exit(f"error: the loss is {loss}")
    row = {
        "peer": "pytorch " + torch.__version__,
        "network": m["arch"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "objective": objective,
        "omega": omega,
        "batch": batch,
        "steps": a.steps,
        "ms_per_step": 1e3 * seconds / a.steps,
        "samples_per_s": a.steps * batch / seconds,
        "peak_allocated_mib": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
    }
    print(json.dumps(row) if a.json else
          f"{objective:<16} {omega:5.2f} {batch:6} {row['ms_per_step']:8.2f} {row['samples_per_s']:10.0f}",
          flush=True)


if __name__ == "__main__":
    main()
