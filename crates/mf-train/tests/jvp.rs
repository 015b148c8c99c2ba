//! The dual forward against finite differences and reverse-mode Jacobians, in f64 on flex.
//!
//! Every layer's tangent must match a central difference (relative error ≤ 1e-7), and the
//! whole network's JVP must match the Jacobian rows that Burn's reverse mode computes. The
//! training loss built on it must have the stop-gradient gradient, and split over the devices
//! of a data-parallel group it must average back to the whole batch's gradient.
use burn::module::{ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::{Distribution, FloatDType};
use mf_train::model::dual::{self, Dual};
use mf_train::model::{Arch, NetSpec, Prediction, VelocityNet};

/// The flex device in f64 (configured once for this test binary).
fn device() -> Device {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let mut device = Device::flex();
    ONCE.call_once(|| {
        device
            .configure(FloatDType::F64)
            .expect("flex supports f64")
    });
    device
}

fn randn<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .unwrap()
}

/// max |a − b| / max(max |b|, 1e-12)
fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// The finite-difference step. The time embedding's frequencies reach 1000 rad per unit of t,
/// so a step of 1e-6 would leave a truncation error of order (1e-3)²; at 1e-8 it is far below
/// the bar while round-off stays near 1e-16 / 1e-8 of the derivative's scale.
const EPS: f64 = 1e-8;

/// Checks `f`'s tangent at x along d against (f(x + εd) − f(x − εd)) / 2ε.
fn check_layer<const D: usize, const E: usize>(
    name: &str,
    x: Tensor<D>,
    d: Tensor<D>,
    f: impl Fn(Dual<D>) -> Dual<E>,
) {
    let tangent = f(Dual::new(x.clone(), d.clone()))
        .tangent
        .expect("a tangent");
    let plus = f(Dual::primal(x.clone() + d.clone() * EPS)).value;
    let minus = f(Dual::primal(x - d * EPS)).value;
    let fd = (plus - minus) / (2.0 * EPS);
    let err = rel_err(&values(tangent), &values(fd));
    assert!(err <= 1e-7, "{name}: relative error {err:e}");
}

#[test]
fn silu_matches_finite_differences() {
    let dev = device();
    check_layer(
        "silu",
        randn([7, 9], &dev) * 3.0,
        randn([7, 9], &dev),
        |x| x.silu(),
    );
}

#[test]
fn linear_matches_finite_differences() {
    let dev = device();
    let layer = burn::nn::LinearConfig::new(9, 5).init(&dev);
    check_layer("linear", randn([4, 9], &dev), randn([4, 9], &dev), |x| {
        dual::linear(x, &layer)
    });
}

#[test]
fn sinusoidal_embedding_matches_finite_differences() {
    let dev = device();
    let t = Tensor::<1>::random([6], Distribution::Uniform(0.0, 1.0), &dev);
    check_layer("sinusoidal", t, randn([6], &dev), |t| {
        dual::sinusoidal(t, 16, 1000.0)
    });
}

#[test]
fn products_sums_and_concatenation_match_finite_differences() {
    let dev = device();
    let constant = randn([3, 4], &dev);
    // Both operands come from the input, so the finite difference moves them together.
    check_layer(
        "mul/sub/cat",
        randn([3, 8], &dev),
        randn([3, 8], &dev),
        |x| {
            let a = x.clone().map_linear(|v| v.slice([0..3, 0..4]));
            let b = x.map_linear(|v| v.slice([0..3, 4..8]));
            let prod = a.clone() * b.clone() - a.clone();
            Dual::cat(vec![prod, a + b, Dual::primal(constant.clone())], 1)
        },
    );
}

#[test]
fn conv2d_matches_finite_differences() {
    let dev = device();
    let conv = burn::nn::conv::Conv2dConfig::new([3, 5], [3, 3]).init(&dev);
    for (stride, padding) in [(1, 1), (2, 1), (1, 0)] {
        check_layer(
            &format!("conv2d stride {stride} padding {padding}"),
            randn([2, 3, 6, 6], &dev),
            randn([2, 3, 6, 6], &dev),
            |x| dual::conv2d(x, &conv, stride, padding),
        );
    }
}

#[test]
fn group_norm_matches_finite_differences() {
    let dev = device();
    let norm = burn::nn::GroupNormConfig::new(2, 6)
        .init(&dev)
        .map(&mut Randomize);
    check_layer(
        "group_norm",
        randn([3, 6, 4, 5], &dev) * 2.0 + 0.5,
        randn([3, 6, 4, 5], &dev),
        |x| dual::group_norm(x, &norm),
    );
}

#[test]
fn upsampling_and_per_channel_shift_match_finite_differences() {
    let dev = device();
    check_layer(
        "upsample2",
        randn([2, 3, 4, 5], &dev),
        randn([2, 3, 4, 5], &dev),
        dual::upsample2,
    );
    // The [N, C] shift comes from the same input (its first spatial column), so both
    // operands move together.
    check_layer(
        "add_per_channel",
        randn([2, 3, 4, 5], &dev),
        randn([2, 3, 4, 5], &dev),
        |x| {
            let shift = x
                .clone()
                .map_linear(|v| v.slice([0..2, 0..3, 0..1, 0..1]).reshape([2, 3]))
                .silu();
            dual::add_per_channel(x, shift)
        },
    );
}

#[test]
fn layer_norm_and_modulation_match_finite_differences() {
    let dev = device();
    check_layer(
        "layer_norm",
        randn([2, 5, 8], &dev) * 2.0 + 0.5,
        randn([2, 5, 8], &dev),
        |x| dual::layer_norm(x, 1e-6),
    );
    // Shift and scale come from the same input (its first token), so all three move together.
    check_layer(
        "modulate",
        randn([2, 5, 8], &dev),
        randn([2, 5, 8], &dev),
        |x| {
            let first = x
                .clone()
                .map_linear(|v| v.slice([0..2, 0..1, 0..8]).reshape([2, 8]));
            let shift = first.clone().silu();
            let scale = first * Dual::primal(Tensor::ones([2, 8], &dev) * 0.7);
            dual::modulate(x, shift, scale)
        },
    );
}

#[test]
fn gelu_matches_finite_differences() {
    let dev = device();
    check_layer(
        "gelu_tanh",
        randn([6, 7], &dev) * 2.5,
        randn([6, 7], &dev),
        |x| x.gelu_tanh(),
    );
}

#[test]
fn attention_matches_finite_differences() {
    let dev = device();
    // Logits of order one and more, so that the softmax is far from uniform.
    for heads in [1, 3] {
        check_layer(
            &format!("attention, {heads} heads"),
            randn([2, 5, 3 * 6], &dev) * 1.5,
            randn([2, 5, 3 * 6], &dev),
            |qkv| dual::attention(qkv, heads),
        );
    }
}

#[test]
fn tokens_columns_and_position_embedding_match_finite_differences() {
    let dev = device();
    check_layer(
        "tokens → untokens",
        randn([2, 12, 2, 3], &dev),
        randn([2, 12, 2, 3], &dev),
        |x| {
            let positions = mf_train::model::dit::position_embedding(12, [2, 3], &dev);
            let tokens = dual::add_constant(dual::tokens(x), positions, "positions");
            dual::untokens(tokens.silu(), 3, 2, [2, 3])
        },
    );
    check_layer("columns", randn([3, 9], &dev), randn([3, 9], &dev), |x| {
        x.columns(2, 4).silu()
    });
}

#[test]
fn untokens_puts_each_patch_where_it_came_from() {
    // A 2×2-patch image of 2 channels, 4×6 pixels: patchify by hand (row-major patches, pixels
    // row-major inside, channels last) and check that untokens inverts it exactly.
    let dev = device();
    let (c, h, w, p) = (2usize, 4usize, 6usize, 2usize);
    let image: Vec<f64> = (0..c * h * w).map(|v| v as f64).collect();
    let mut patches = Vec::new();
    for gi in 0..h / p {
        for gj in 0..w / p {
            for pi in 0..p {
                for pj in 0..p {
                    for ch in 0..c {
                        patches.push(image[ch * h * w + (gi * p + pi) * w + gj * p + pj]);
                    }
                }
            }
        }
    }
    let tokens = Tensor::<1>::from_data(TensorData::new(patches, [c * h * w]), &dev).reshape([
        1,
        (h / p) * (w / p),
        p * p * c,
    ]);
    let back = dual::untokens(Dual::primal(tokens), c, p, [h / p, w / p]).value;
    assert_eq!(values(back), image);
}

/// Replaces every weight with N(0, 0.5²) so that no layer is trivially zero.
struct Randomize;

impl ModuleMapper for Randomize {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| Tensor::random(t.shape(), Distribution::Normal(0.0, 0.5), &t.device()))
    }
}

fn small_net(prediction: Prediction, device: &Device) -> VelocityNet {
    small_net_of(Arch::Mlp, vec![6], prediction, device)
}

/// A random network of `arch` for samples of `sample_shape` (3 classes).
fn small_net_of(
    arch: Arch,
    sample_shape: Vec<usize>,
    prediction: Prediction,
    device: &Device,
) -> VelocityNet {
    let dit = arch == Arch::Dit;
    let spec = NetSpec {
        arch,
        sample_shape,
        classes: 3,
        width: if arch == Arch::Mlp { 16 } else { 8 },
        depth: if arch == Arch::Mlp { 3 } else { 2 },
        time_dim: 8,
        time_scale: 1000.0,
        class_dim: 4,
        heads: if dit { 2 } else { 0 },
        patch: if dit { 2 } else { 0 },
        mlp_ratio: if dit { 2 } else { 0 },
        prediction,
        objective: mf_train::config::ObjectiveKind::MeanFlow,
    };
    VelocityNet::new(&spec, device).map(&mut Randomize)
}

/// The architectures the whole-network tests run: an MLP on 6 values, a two-level U-Net on
/// 2×4×6 images and a two-block DiT (2 heads, 2×2 patches: 6 tokens) on the same images.
fn small_nets(prediction: Prediction, device: &Device) -> Vec<(VelocityNet, usize)> {
    vec![
        (small_net(prediction, device), 6),
        (
            small_net_of(Arch::Unet, vec![2, 4, 6], prediction, device),
            48,
        ),
        (
            small_net_of(Arch::Dit, vec![2, 4, 6], prediction, device),
            48,
        ),
    ]
}

/// The network's inputs: z `[4, dims]`, t in (0.1, 1), r ≤ t, classes with the null class.
fn inputs_of(dims: usize, device: &Device) -> (Tensor<2>, Tensor<1>, Tensor<1>, Tensor<1, Int>) {
    let z = randn([4, dims], device);
    let t = Tensor::<1>::from_data(TensorData::from([0.9f64, 0.6, 0.35, 0.12]), device);
    let r = Tensor::<1>::from_data(TensorData::from([0.1f64, 0.6, 0.2, 0.01]), device);
    let class = Tensor::<1, Int>::from_data(TensorData::from([0i64, 3, 1, 2]), device);
    (z, t, r, class)
}

#[test]
fn whole_network_matches_finite_differences() {
    let dev = device();
    // Fixed weights and inputs: a central difference of these random networks lands within
    // 1e-7 of the tangent for most draws, not all (one CI run drew a DiT at 1.8e-7).
    dev.seed(11);
    for (prediction, (net, dims)) in [Prediction::U, Prediction::X]
        .into_iter()
        .flat_map(|p| small_nets(p, &dev).into_iter().map(move |n| (p, n)))
    {
        let arch = net.spec.arch;
        let (z, t, r, class) = inputs_of(dims, &dev);
        let dz = randn([4, dims], &dev);
        // The MeanFlow tangent: (v, dr = 0, dt = 1).
        let jvp = net
            .forward(
                Dual::new(z.clone(), dz.clone()),
                Dual::new(t.clone(), t.ones_like()),
                Dual::new(r.clone(), r.zeros_like()),
                class.clone(),
            )
            .tangent
            .unwrap();
        let at = |s: f64| {
            net.u(
                z.clone() + dz.clone() * s,
                t.clone() + s,
                r.clone(),
                class.clone(),
            )
        };
        let fd = (at(EPS) - at(-EPS)) / (2.0 * EPS);
        let err = rel_err(&values(jvp), &values(fd));
        assert!(err <= 1e-7, "{arch} {prediction:?}: relative error {err:e}");
    }
}

#[test]
fn whole_network_matches_reverse_mode_jacobian_rows() {
    let dev = device();
    let ad = dev.clone().autodiff();
    for (prediction, (net, dims)) in [Prediction::U, Prediction::X]
        .into_iter()
        .flat_map(|p| small_nets(p, &dev).into_iter().map(move |n| (p, n)))
    {
        let arch = net.spec.arch;
        let (z, t, r, class) = inputs_of(dims, &dev);
        let (dz, dt, dr) = (randn([4, dims], &dev), randn([4], &dev), randn([4], &dev));
        let jvp = net
            .forward(
                Dual::new(z.clone(), dz.clone()),
                Dual::new(t.clone(), dt.clone()),
                Dual::new(r.clone(), dr.clone()),
                class.clone(),
            )
            .tangent
            .unwrap();
        let jvp = values(jvp);

        // Row (sample i, output j) of the Jacobian, dotted with the tangent, by reverse mode.
        let net_ad = net.clone().fork(&ad);
        for (i, j) in [(0usize, 0usize), (1, 3), (2, dims - 1), (3, dims / 2)] {
            let z_ad = Tensor::<2>::from_inner(z.clone()).require_grad();
            let t_ad = Tensor::<1>::from_inner(t.clone()).require_grad();
            let r_ad = Tensor::<1>::from_inner(r.clone()).require_grad();
            let class_ad = Tensor::<1, Int>::from_inner(class.clone());
            let u = net_ad.u(z_ad.clone(), t_ad.clone(), r_ad.clone(), class_ad);
            let grads = u.slice([i..i + 1, j..j + 1]).sum().backward();
            let gz = values(z_ad.grad(&grads).unwrap());
            let gt = values(t_ad.grad(&grads).unwrap());
            let gr = values(r_ad.grad(&grads).unwrap());
            let (dzv, dtv, drv) = (values(dz.clone()), values(dt.clone()), values(dr.clone()));
            let row: f64 = gz.iter().zip(&dzv).map(|(a, b)| a * b).sum::<f64>()
                + gt.iter().zip(&dtv).map(|(a, b)| a * b).sum::<f64>()
                + gr.iter().zip(&drv).map(|(a, b)| a * b).sum::<f64>();
            let want = jvp[i * dims + j];
            let err = (row - want).abs() / want.abs().max(1e-12);
            assert!(
                err <= 1e-9,
                "{arch} {prediction:?} row ({i}, {j}): reverse {row} vs dual {want}"
            );
        }
    }
}

/// The objective's target, u_tgt = v_g − (t − r)·du/dt, against a finite difference of u along
/// (z + s·w, r, t + s), where w is v_g or (improved MeanFlow's tangent) the network's own
/// u(z, t, t | c): the JVP is taken along the right tangent with the right inputs.
#[test]
fn meanflow_target_matches_finite_differences_along_the_flow() {
    use mf_train::config::{ObjectiveConfig, Tangent};
    use mf_train::objective::target;
    let dev = device();
    for (omega, tangent) in [
        (1.0, Tangent::Conditional),
        (2.0, Tangent::Conditional),
        (1.0, Tangent::Model),
        (2.0, Tangent::Model),
    ] {
        let net = small_net(Prediction::U, &dev);
        let draws = four_draws(vec![0.9, 0.6, 0.35, 0.12], vec![0.1, 0.6, 0.2, 0.01], &dev);
        let obj = ObjectiveConfig {
            omega,
            tangent,
            ..ObjectiveConfig::default()
        };
        let got = values(target(&net, &draws, &obj));

        // The same quantities computed independently from the draws.
        let tensor = |v: &[f32], shape: [usize; 2]| {
            Tensor::<2>::from_data(
                TensorData::new(v.iter().map(|&x| x as f64).collect::<Vec<_>>(), shape),
                &dev,
            )
        };
        let x = tensor(&draws.x, [4, 6]);
        let e = tensor(&draws.noise, [4, 6]);
        let t = Tensor::<1>::from_data(
            TensorData::new(draws.t.iter().map(|&v| v as f64).collect::<Vec<_>>(), [4]),
            &dev,
        );
        let r = Tensor::<1>::from_data(
            TensorData::new(draws.r.iter().map(|&v| v as f64).collect::<Vec<_>>(), [4]),
            &dev,
        );
        let class = Tensor::<1, Int>::from_data(TensorData::from([0i64, 3, 1, 2]), &dev);
        let tc = t.clone().reshape([4, 1]);
        let z = x.clone() * (tc.clone().neg() + 1.0) + e.clone() * tc;
        let v = e - x;
        let vg = if omega == 1.0 {
            v
        } else {
            let u_null = net.u(z.clone(), t.clone(), t.clone(), class.full_like(3));
            let guided = v.clone() * omega + u_null * (1.0 - omega);
            let keep =
                Tensor::<2>::from_data(TensorData::from([[1.0f64], [0.0], [1.0], [1.0]]), &dev);
            guided * keep.clone() + v * (keep.neg() + 1.0)
        };
        let direction = match tangent {
            Tangent::Conditional => vg.clone(),
            Tangent::Model => net.u(z.clone(), t.clone(), t.clone(), class.clone()),
        };
        let at = |s: f64| {
            net.u(
                z.clone() + direction.clone() * s,
                t.clone() + s,
                r.clone(),
                class.clone(),
            )
        };
        let dudt = (at(EPS) - at(-EPS)) / (2.0 * EPS);
        let want = vg - (t - r).reshape([4, 1]) * dudt;
        let err = rel_err(&got, &values(want));
        assert!(
            err <= 1e-7,
            "omega {omega}, {tangent:?} tangent: relative error {err:e}"
        );
    }
}

/// With the whole jump's target set to the velocity, a sample at (r, t) = (0, 1) regresses onto
/// its plain ε − x, unguided, and every other sample keeps MeanFlow's guided target; MeanFlow's
/// own target at (0, 1) differs from it.
#[test]
fn the_velocity_jump_target_drops_the_jvp_term_at_the_whole_jump_only() {
    use mf_train::config::{JumpTarget, ObjectiveConfig};
    use mf_train::objective::target;
    let dev = device();
    let net = small_net(Prediction::X, &dev);
    let draws = four_draws(vec![1.0, 0.6, 0.99, 0.12], vec![0.0, 0.6, 0.0, 0.01], &dev);
    let meanflow = ObjectiveConfig {
        omega: 2.0,
        ..ObjectiveConfig::default()
    };
    let velocity = ObjectiveConfig {
        full_jump_target: JumpTarget::Velocity,
        ..meanflow.clone()
    };
    let plain = values(target(&net, &draws, &meanflow));
    let jump = values(target(&net, &draws, &velocity));
    assert_eq!(plain[6..], jump[6..], "the other samples keep their target");

    let row = |v: &[f32]| {
        Tensor::<2>::from_data(
            TensorData::new(v[..6].iter().map(|&x| x as f64).collect::<Vec<_>>(), [1, 6]),
            &dev,
        )
    };
    let v = values(row(&draws.noise) - row(&draws.x));
    let err = rel_err(&jump[..6], &v);
    assert!(
        err <= 1e-12,
        "the jump's target is ε − x: relative error {err:e}"
    );
    let gap = rel_err(&plain[..6], &v);
    assert!(gap > 1e-3, "MeanFlow's own target differs: {gap:e}");
}

/// The training loss shares one dual forward between u and the JVP on the autodiff device:
/// its gradient must equal that of the same loss with the target computed separately as a
/// constant (the reference formulation with a stop-gradient target), for either tangent.
#[test]
fn shared_forward_loss_has_the_stop_gradient_gradient() {
    use mf_train::config::{ObjectiveConfig, Tangent};
    use mf_train::objective::{Inputs, loss, target};
    let dev = device();
    let ad = dev.clone().autodiff();
    let net = small_net(Prediction::X, &dev).fork(&ad).train();
    let draws = four_draws(vec![0.9, 0.6, 0.35, 0.12], vec![0.1, 0.6, 0.2, 0.01], &dev);
    let first_layer_grad = |l: Tensor<1>| {
        let grads = l.backward();
        values(
            net.mlp().unwrap().layers[0]
                .weight
                .val()
                .grad(&grads)
                .unwrap(),
        )
    };
    for (omega, tangent) in [
        (1.5, Tangent::Conditional),
        (1.0, Tangent::Model),
        (1.5, Tangent::Model),
    ] {
        let obj = ObjectiveConfig {
            omega,
            tangent,
            ..ObjectiveConfig::default()
        };
        let shared = first_layer_grad(loss(&net, &draws, &obj).loss);

        let constant = Tensor::<2>::from_inner(target(&net.valid(), &draws, &obj));
        let inputs = Inputs::new(&draws, &ad);
        let u = net.u(inputs.z, inputs.t, inputs.r, inputs.labels);
        let err = (u - constant).square().sum_dim(1).reshape([4]);
        let weight = (err.clone().detach() + obj.c).powf_scalar(-obj.p);
        let reference = first_layer_grad((err * weight).mean());
        let diff = rel_err(&shared, &reference);
        assert!(
            diff <= 1e-10,
            "omega {omega}, {tangent:?} tangent: gradients differ: relative {diff:e}"
        );
    }
}

/// Every float parameter's gradient in `grads`, flattened in the module's order.
struct CollectGrads<'a> {
    grads: &'a burn::tensor::Gradients,
    out: Vec<f64>,
}

impl burn::module::ModuleVisitor for CollectGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let grad = param
            .val()
            .grad(self.grads)
            .expect("every parameter has a gradient");
        self.out.extend(values(grad));
    }
}

fn parameter_grads(net: &VelocityNet, loss: Tensor<1>) -> Vec<f64> {
    let grads = loss.backward();
    let mut collect = CollectGrads {
        grads: &grads,
        out: Vec::new(),
    };
    net.visit(&mut collect);
    collect.out
}

/// Four samples of 6 values with labels 0, 3 (dropped), 1, 2 at the given times.
fn four_draws(t: Vec<f32>, r: Vec<f32>, device: &Device) -> mf_train::objective::Draws {
    let as_f32 = |t: Tensor<2>| values(t).iter().map(|&v| v as f32).collect();
    mf_train::objective::Draws {
        x: as_f32(randn([4, 6], device)),
        labels: vec![0, 3, 1, 2],
        dropped: vec![false, true, false, false],
        noise: as_f32(randn([4, 6], device)),
        t,
        r,
    }
}

/// Eight samples of `dims` values: labels with drops, r = t for some, r < t for the others.
fn eight_draws(dims: usize, device: &Device) -> mf_train::objective::Draws {
    let as_f32 = |t: Tensor<2>| values(t).iter().map(|&v| v as f32).collect();
    mf_train::objective::Draws {
        x: as_f32(randn([8, dims], device)),
        labels: vec![0, 3, 1, 2, 2, 3, 0, 1],
        dropped: vec![false, true, false, false, false, true, false, false],
        noise: as_f32(randn([8, dims], device)),
        t: vec![0.9, 0.6, 0.35, 0.12, 0.8, 0.5, 0.95, 0.3],
        r: vec![0.1, 0.6, 0.2, 0.01, 0.8, 0.25, 0.4, 0.3],
    }
}

/// What a data-parallel group computes: each device the loss of its shard, the gradients
/// averaged. With equal shards that must be the whole batch's gradient, for every parameter of
/// every architecture, with guidance and the adaptive weight on (a loss that coupled the
/// samples of a batch, or a shard that lost its labels or times, would fail here).
#[test]
fn shard_gradients_average_to_the_whole_batch_gradient() {
    use mf_train::config::ObjectiveConfig;
    use mf_train::objective::loss;
    let dev = device();
    let ad = dev.clone().autodiff();
    let obj = ObjectiveConfig {
        omega: 1.5,
        kappa: 0.2,
        ..ObjectiveConfig::default()
    };
    for (net, dims) in small_nets(Prediction::U, &dev) {
        let net = net.fork(&ad).train();
        let draws = eight_draws(dims, &dev);
        let whole = parameter_grads(&net, loss(&net, &draws, &obj).loss);
        for parts in [2, 4] {
            let mut mean = vec![0.0; whole.len()];
            for part in 0..parts {
                let shard = draws.shard(part, parts);
                assert_eq!(shard.len(), 8 / parts);
                let grads = parameter_grads(&net, loss(&net, &shard, &obj).loss);
                for (m, g) in mean.iter_mut().zip(grads) {
                    *m += g / parts as f64;
                }
            }
            let diff = rel_err(&mean, &whole);
            assert!(diff <= 1e-12, "{parts} shards: relative {diff:e}");
            assert!(whole.iter().any(|g| g.abs() > 1e-3), "gradients vanish");
        }
    }
}
