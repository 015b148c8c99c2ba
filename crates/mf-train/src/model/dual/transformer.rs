//! Dual primitives of transformer networks (the DiT): tokens, layer norm, GELU and attention.
//!
//! Each computes its value with Burn, its tangent with the exact rule stated on it, and, on a
//! traced value, emits its ONNX nodes (opset 17).
use burn::prelude::*;
use burn::tensor::activation::softmax;

use super::{Attr, Dual};

/// √(2/π), GELU's tanh approximation's scale.
const GELU_SCALE: f64 = 0.797_884_560_802_865_4;
/// The cubic coefficient of GELU's tanh approximation.
const GELU_CUBIC: f64 = 0.044_715;

/// A feature map `[N, D, h, w]` as `h·w` tokens `[N, h·w, D]` (row-major positions): linear,
/// the tangent is rearranged alike.
pub fn tokens(x: Dual<4>) -> Dual<3> {
    let [_, d, h, w] = x.value.dims();
    let node = x.node.map(|n| {
        let shape = n.i64s("token_shape", &[0, d as i64, (h * w) as i64]);
        n.op("Reshape", &[&shape], "token_rows", &[]).op(
            "Transpose",
            &[],
            "tokens",
            &[("perm", Attr::Ints(vec![0, 2, 1]))],
        )
    });
    let f = |t: Tensor<4>| {
        let n = t.dims()[0];
        t.reshape([n, d, h * w]).swap_dims(1, 2)
    };
    Dual {
        value: f(x.value),
        tangent: x.tangent.map(f),
        node,
    }
}

/// Tokens `[N, h·w, p·p·C]` (one patch each, pixels row-major, channels last) back to an image,
/// flattened `[N, C·(h·p)·(w·p)]`: linear, the tangent is rearranged alike.
pub fn untokens(x: Dual<3>, channels: usize, patch: usize, grid: [usize; 2]) -> Dual<2> {
    let ([h, w], p, c) = (grid, patch, channels);
    let node = x.node.map(|n| {
        let cells = n.i64s(
            "patch_cells",
            &[0, h as i64, w as i64, p as i64, p as i64, c as i64],
        );
        let flat = n.i64s("image_flat", &[0, -1]);
        n.op("Reshape", &[&cells], "patches", &[])
            .op(
                "Transpose",
                &[],
                "image_cells",
                &[("perm", Attr::Ints(vec![0, 5, 1, 3, 2, 4]))],
            )
            .op("Reshape", &[&flat], "image", &[])
    });
    let f = |t: Tensor<3>| {
        let n = t.dims()[0];
        t.reshape([n, h, w, p, p, c])
            .permute([0, 5, 1, 3, 2, 4])
            .reshape([n, c * h * p * w * p])
    };
    Dual {
        value: f(x.value),
        tangent: x.tangent.map(f),
        node,
    }
}

/// Adds a constant `[L, D]` (a fixed position embedding) to every sample of `[N, L, D]`: the
/// tangent passes unchanged.
pub fn add_constant(x: Dual<3>, constant: Tensor<2>, stem: &str) -> Dual<3> {
    let node = x.node.map(|n| {
        let c = n.tensor(stem, constant.clone());
        n.op("Add", &[&c], &format!("{stem}.added"), &[])
    });
    let [l, d] = constant.dims();
    Dual {
        value: x.value + constant.reshape([1, l, d]),
        tangent: x.tangent,
        node,
    }
}

/// A per-sample vector `[N, D]` repeated over `tokens` positions, `[N, tokens, D]`: linear.
pub fn per_token(v: Dual<2>, tokens: usize) -> Dual<3> {
    let [n, d] = v.value.dims();
    let node = v.node.map(|node| {
        // ONNX broadcasts [N, 1, D] against the tokens; Burn gets the full shape.
        let axis = node.i64s("token_axis", &[1]);
        node.op("Unsqueeze", &[&axis], "per_token", &[])
    });
    let f = |t: Tensor<2>| t.reshape([n, 1, d]).expand([n, tokens, d]);
    Dual {
        value: f(v.value),
        tangent: v.tangent.map(f),
        node,
    }
}

impl Dual<2> {
    /// Columns `start..start + len` of `[N, K]`: linear.
    pub fn columns(self, start: usize, len: usize) -> Dual<2> {
        let node = self.node.map(|n| {
            let starts = n.i64s("slice_start", &[start as i64]);
            let ends = n.i64s("slice_end", &[(start + len) as i64]);
            let axes = n.i64s("slice_axis", &[1]);
            n.op("Slice", &[&starts, &ends, &axes], "columns", &[])
        });
        Dual {
            value: self.value.narrow(1, start, len),
            tangent: self.tangent.map(|t| t.narrow(1, start, len)),
            node,
        }
    }
}

/// adaLN's modulation of tokens `[N, L, D]` by per-sample `shift` and `scale` `[N, D]`:
/// y = x·(1 + scale) + shift, so dy = dx·(1 + scale) + x·dscale + dshift.
pub fn modulate(x: Dual<3>, shift: Dual<2>, scale: Dual<2>) -> Dual<3> {
    let tokens = x.value.dims()[1];
    x.clone() + x * per_token(scale, tokens) + per_token(shift, tokens)
}

/// Layer normalization without affine parameters over the last axis of `[N, L, D]`:
/// x̂ = (x − μ)/σ with σ = √(var + ε), dx̂ = (dx − mean(dx) − x̂·mean(x̂·dx))/σ.
pub fn layer_norm(x: Dual<3>, epsilon: f64) -> Dual<3> {
    let d = x.value.dims()[2];
    let centered = x.value.clone() - x.value.clone().mean_dim(2);
    let inv = (centered.clone().square().mean_dim(2) + epsilon)
        .sqrt()
        .recip();
    let xhat = centered * inv.clone();
    let tangent = x.tangent.map(|dx| {
        let (xhat, inv) = (xhat.clone().detach(), inv.detach());
        let projection = (xhat.clone() * dx.clone()).mean_dim(2);
        (dx.clone() - dx.mean_dim(2) - xhat * projection) * inv
    });
    let node = x.node.map(|n| {
        let ones = n.f32s("layer_norm.unit_scale", &[d], &vec![1.0; d]);
        let zeros = n.f32s("layer_norm.zero_bias", &[d], &vec![0.0; d]);
        n.op(
            "LayerNormalization",
            &[&ones, &zeros],
            "layer_norm",
            &[
                ("axis", Attr::Int(-1)),
                ("epsilon", Attr::Float(epsilon as f32)),
            ],
        )
    });
    Dual {
        value: xhat,
        tangent,
        node,
    }
}

impl<const D: usize> Dual<D> {
    /// GELU, tanh approximation: y = x·(1 + tanh a)/2 with a = √(2/π)·(x + 0.044715·x³);
    /// dy = [(1 + tanh a)/2 + x·(1 − tanh² a)·√(2/π)·(1 + 3·0.044715·x²)/2]·dx.
    pub fn gelu_tanh(self) -> Dual<D> {
        let x = self.value.clone();
        let a = (x.clone() + x.clone().powi_scalar(3) * GELU_CUBIC) * GELU_SCALE;
        let th = a.tanh();
        let tangent = self.tangent.as_ref().map(|dx| {
            let (x, th) = (self.detached(), th.clone().detach());
            let da = (x.clone().square() * (3.0 * GELU_CUBIC) + 1.0) * GELU_SCALE;
            let slope = (th.clone() + 1.0) * 0.5 + x * (th.square().neg() + 1.0) * da * 0.5;
            slope * dx.clone()
        });
        let node = self.node.as_ref().map(|n| {
            let cubic = n.f32s("gelu.cubic", &[1], &[GELU_CUBIC as f32]);
            let scale = n.f32s("gelu.scale", &[1], &[GELU_SCALE as f32]);
            let half = n.f32s("gelu.half", &[1], &[0.5]);
            let one = n.f32s("gelu.one", &[1], &[1.0]);
            let square = n.op("Mul", &[n.name()], "gelu.square", &[]);
            let cube = square.op("Mul", &[n.name()], "gelu.cube", &[]);
            let inner = cube
                .op("Mul", &[&cubic], "gelu.cubic_term", &[])
                .op("Add", &[n.name()], "gelu.inner", &[])
                .op("Mul", &[&scale], "gelu.angle", &[])
                .op("Tanh", &[], "gelu.tanh", &[])
                .op("Add", &[&one], "gelu.gate", &[])
                .op("Mul", &[&half], "gelu.half_gate", &[]);
            n.op("Mul", &[inner.name()], "gelu", &[])
        });
        Dual {
            value: self.value * (th + 1.0) * 0.5,
            tangent,
            node,
        }
    }
}

/// Multi-head self-attention on `qkv` `[N, L, 3D]` (queries, keys and values side by side,
/// each `heads` heads of D/heads): per head O = P·V with P = softmax(A), A = Q·Kᵀ/√d.
/// dA = (dQ·Kᵀ + Q·dKᵀ)/√d, dP = P ⊙ (dA − rowsum(P ⊙ dA)), dO = dP·V + P·dV. The tangent
/// reads the forward's P (detached, not copied): one attention matrix per head is held.
pub fn attention(qkv: Dual<3>, heads: usize) -> Dual<3> {
    let [n, l, d3] = qkv.value.dims();
    let d = d3 / 3;
    let dh = d / heads;
    let scale = 1.0 / (dh as f64).sqrt();
    // [N, L, 3D] → part i as [N, H, L, d].
    let part = |t: &Tensor<3>, i: usize| {
        t.clone()
            .narrow(2, i * d, d)
            .reshape([n, l, heads, dh])
            .swap_dims(1, 2)
    };
    let (q, k, v) = (
        part(&qkv.value, 0),
        part(&qkv.value, 1),
        part(&qkv.value, 2),
    );
    let p = softmax(q.clone().matmul(k.clone().swap_dims(2, 3)) * scale, 3);
    let merge = |o: Tensor<4>| o.swap_dims(1, 2).reshape([n, l, d]);
    let tangent = qkv.tangent.as_ref().map(|dqkv| {
        let (q, k, v, p) = (
            q.clone().detach(),
            k.clone().detach(),
            v.clone().detach(),
            p.clone().detach(),
        );
        let (dq, dk, dv) = (part(dqkv, 0), part(dqkv, 1), part(dqkv, 2));
        let da = (dq.matmul(k.swap_dims(2, 3)) + q.matmul(dk.swap_dims(2, 3))) * scale;
        let weighted = p.clone() * da.clone();
        let dp = weighted.clone() - p.clone() * weighted.sum_dim(3);
        merge(dp.matmul(v) + p.matmul(dv))
    });
    let node = qkv.node.as_ref().map(|x| {
        let split = x.i64s(
            "attention.head_shape",
            &[0, l as i64, heads as i64, dh as i64],
        );
        let axis = x.i64s("attention.axis", &[2]);
        let head = |i: usize, perm: Vec<i64>, stem: &str| {
            let starts = x.i64s("attention.start", &[(i * d) as i64]);
            let ends = x.i64s("attention.end", &[((i + 1) * d) as i64]);
            x.op("Slice", &[&starts, &ends, &axis], stem, &[])
                .op("Reshape", &[&split], &format!("{stem}.heads"), &[])
                .op(
                    "Transpose",
                    &[],
                    &format!("{stem}.by_head"),
                    &[("perm", Attr::Ints(perm))],
                )
        };
        let q = head(0, vec![0, 2, 1, 3], "query");
        let kt = head(1, vec![0, 2, 3, 1], "key");
        let v = head(2, vec![0, 2, 1, 3], "value");
        let scale = x.f32s("attention.scale", &[1], &[scale as f32]);
        let merged = x.i64s("attention.merged_shape", &[0, l as i64, d as i64]);
        q.op("MatMul", &[kt.name()], "attention.logits", &[])
            .op("Mul", &[&scale], "attention.scaled", &[])
            .op(
                "Softmax",
                &[],
                "attention.weights",
                &[("axis", Attr::Int(-1))],
            )
            .op("MatMul", &[v.name()], "attention.heads_out", &[])
            .op(
                "Transpose",
                &[],
                "attention.by_token",
                &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
            )
            .op("Reshape", &[&merged], "attention", &[])
    });
    Dual {
        value: merge(p.matmul(v)),
        tangent,
        node,
    }
}
