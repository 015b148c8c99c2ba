//! Forward-mode differentiation by hand: every layer maps (value, tangent) pairs.
//!
//! Burn has no forward-mode autodiff, so the JVP that MeanFlow's target needs is a dual
//! forward: each op below computes its value with Burn and, when a tangent is present, the
//! tangent with its exact derivative rule. Linear maps reuse Burn's own op on the tangent; the
//! nonlinear ones carry their rule. Without tangents the same code is the plain forward.
//!
//! Tangents are always computed from *detached* values and weights. On an autodiff device one
//! dual forward therefore yields u with its gradient graph and du/dt as a constant: the primal
//! pass is shared between the loss and the JVP, and the target stays under stop-gradient.
//!
//! Each primitive also carries its ONNX form: on values traced by [`super::trace::Tracer`] it
//! emits the nodes that compute it, so a network's graph is derived from its forward.
use burn::nn::Embedding;
use burn::prelude::*;
use burn::tensor::activation::sigmoid;

use super::trace::{Attr, Node, binary, nary};

mod transformer;
pub use transformer::{add_constant, attention, layer_norm, modulate, per_token, tokens, untokens};

/// A value with an optional tangent of the same shape.
#[derive(Debug, Clone)]
pub struct Dual<const D: usize> {
    /// The primal value.
    pub value: Tensor<D>,
    /// The directional derivative along the JVP's tangent, if one is being propagated.
    pub tangent: Option<Tensor<D>>,
    /// The graph value that computes it, when the forward is being traced.
    pub node: Option<Node>,
}

/// Class indices `[N]`, traced or not.
#[derive(Debug, Clone)]
pub struct Labels {
    /// The indices.
    pub value: Tensor<1, Int>,
    node: Option<Node>,
}

impl Labels {
    /// Plain class indices.
    pub fn new(value: Tensor<1, Int>) -> Self {
        Labels { value, node: None }
    }

    /// Indices held by the graph value `node`.
    pub(crate) fn traced(value: Tensor<1, Int>, node: Node) -> Self {
        Labels {
            value,
            node: Some(node),
        }
    }
}

impl<const D: usize> Dual<D> {
    /// A value without tangent (plain forward).
    pub fn primal(value: Tensor<D>) -> Self {
        Dual {
            value,
            tangent: None,
            node: None,
        }
    }

    /// A value with its tangent.
    pub fn new(value: Tensor<D>, tangent: Tensor<D>) -> Self {
        Dual {
            value,
            tangent: Some(tangent),
            node: None,
        }
    }

    /// A value held by the graph value `node`.
    pub(crate) fn traced(value: Tensor<D>, node: Node) -> Self {
        Dual {
            value,
            tangent: None,
            node: Some(node),
        }
    }

    /// The value cut from any gradient graph (what tangent rules read).
    fn detached(&self) -> Tensor<D> {
        self.value.clone().detach()
    }

    /// The tangent, or zeros when there is none (for mixing with tangent-carrying values).
    fn tangent_or_zeros(&self) -> Tensor<D> {
        self.tangent
            .clone()
            .unwrap_or_else(|| self.value.zeros_like())
    }

    /// Applies a linear map to value and tangent alike. The map is opaque to a trace: a
    /// network's forward uses the named primitives ([`Dual::reshape`], [`upsample2`], …).
    pub fn map_linear<const E: usize>(self, f: impl Fn(Tensor<D>) -> Tensor<E>) -> Dual<E> {
        if let Some(node) = &self.node {
            node.fail("map_linear is opaque to a trace; use a named primitive of dual.rs");
        }
        Dual {
            value: f(self.value),
            tangent: self.tangent.map(&f),
            node: self.node,
        }
    }

    /// Reshapes to `dims`, keeping the batch axis (dims[0] must be the batch size): linear, so
    /// the tangent is reshaped alike.
    pub fn reshape<const E: usize>(self, dims: [usize; E]) -> Dual<E> {
        let batch = self.value.dims()[0];
        let node = self.node.map(|n| {
            if dims[0] != batch {
                n.fail(format!(
                    "a reshape to {dims:?} moves the batch axis (size {batch}); the graph keeps it first"
                ));
            }
            let shape: Vec<i64> = std::iter::once(0)
                .chain(dims[1..].iter().map(|&d| d as i64))
                .collect();
            let s = n.i64s("shape", &shape);
            n.op("Reshape", &[&s], "reshaped", &[])
        });
        Dual {
            value: self.value.reshape(dims),
            tangent: self.tangent.map(|t| t.reshape(dims)),
            node,
        }
    }

    /// SiLU: y = x·s with s = σ(x); dy = s·(1 + x·(1 − s))·dx.
    pub fn silu(self) -> Dual<D> {
        let s = sigmoid(self.value.clone());
        let tangent = self.tangent.as_ref().map(|dx| {
            let (x, s) = (self.detached(), s.clone().detach());
            let slope = s.clone() * (x * (s.neg() + 1.0) + 1.0);
            slope * dx.clone()
        });
        let node = self.node.map(|n| {
            let s = n.op("Sigmoid", &[], "sigmoid", &[]);
            n.op("Mul", &[s.name()], "silu", &[])
        });
        Dual {
            value: self.value * s,
            tangent,
            node,
        }
    }

    /// Concatenates along `dim`; a part without tangent contributes zeros.
    pub fn cat(parts: Vec<Dual<D>>, dim: usize) -> Dual<D> {
        let any_tangent = parts.iter().any(|p| p.tangent.is_some());
        let tangent = any_tangent
            .then(|| Tensor::cat(parts.iter().map(|p| p.tangent_or_zeros()).collect(), dim));
        let nodes: Vec<Option<Node>> = parts.iter().map(|p| p.node.clone()).collect();
        let node = nary(
            "Concat",
            &nodes,
            "concat",
            &[("axis", Attr::Int(dim as i64))],
        );
        Dual {
            value: Tensor::cat(parts.into_iter().map(|p| p.value).collect(), dim),
            tangent,
            node,
        }
    }
}

impl<const D: usize> std::ops::Add for Dual<D> {
    type Output = Dual<D>;

    /// d(a + b) = da + db.
    fn add(self, other: Dual<D>) -> Dual<D> {
        let tangent = match (self.tangent, other.tangent) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        Dual {
            node: binary("Add", &self.node, &other.node),
            value: self.value + other.value,
            tangent,
        }
    }
}

impl<const D: usize> std::ops::Sub for Dual<D> {
    type Output = Dual<D>;

    /// d(a − b) = da − db.
    fn sub(self, other: Dual<D>) -> Dual<D> {
        let tangent = match (self.tangent, other.tangent) {
            (Some(a), Some(b)) => Some(a - b),
            (Some(a), None) => Some(a),
            (None, Some(b)) => Some(-b),
            (None, None) => None,
        };
        Dual {
            node: binary("Sub", &self.node, &other.node),
            value: self.value - other.value,
            tangent,
        }
    }
}

impl<const D: usize> std::ops::Mul for Dual<D> {
    type Output = Dual<D>;

    /// Element-wise (same shapes): d(ab) = da·b + a·db.
    fn mul(self, other: Dual<D>) -> Dual<D> {
        let tangent = match (&self.tangent, &other.tangent) {
            (None, None) => None,
            _ => Some(
                self.tangent_or_zeros() * other.detached()
                    + self.detached() * other.tangent_or_zeros(),
            ),
        };
        Dual {
            node: binary("Mul", &self.node, &other.node),
            value: self.value * other.value,
            tangent,
        }
    }
}

/// Linear layer `y = x·W + b` (Burn's `[in, out]` weight): dy = dx·W.
pub fn linear<const D: usize>(x: Dual<D>, layer: &burn::nn::Linear) -> Dual<D> {
    let tangent = x
        .tangent
        .map(|dx| burn::tensor::module::linear(dx, layer.weight.val().detach(), None));
    let node = x.node.map(|n| {
        let path = n.path_of(layer.weight.id, "linear");
        n.tap(&path, &x.value);
        let w = n.tensor(&format!("{path}.weight"), layer.weight.val());
        let y = n.op("MatMul", &[&w], &path, &[]);
        match &layer.bias {
            Some(b) => {
                let b = n.tensor(&format!("{path}.bias"), b.val());
                y.op("Add", &[&b], &format!("{path}.out"), &[])
            }
            None => y,
        }
    });
    Dual {
        value: layer.forward(x.value),
        tangent,
        node,
    }
}

/// The rows of an embedding table for each class: a lookup, constant in every tangent.
pub fn embedding(table: &Embedding, labels: &Labels) -> Dual<2> {
    let weight = table.weight.val();
    let node = labels.node.as_ref().map(|n| {
        let path = n.path_of(table.weight.id, "embedding");
        let w = n.tensor(&format!("{path}.weight"), weight.clone());
        n.emit("Gather", &[&w, n.name()], &path, &[("axis", Attr::Int(0))])
    });
    Dual {
        value: weight.select(0, labels.value.clone()),
        tangent: None,
        node,
    }
}

/// The frequencies of a sinusoidal embedding: `scale · 10000^(−i/half)` for i < half.
pub fn embedding_frequencies(dim: usize, scale: f64) -> Vec<f64> {
    let half = dim / 2;
    (0..half)
        .map(|i| scale * (-(10000f64.ln()) * i as f64 / half as f64).exp())
        .collect()
}

/// Sinusoidal embedding of a scalar per sample, `[N] → [N, dim]`:
/// `[sin(a), cos(a)]` with a = t·ω_i ([`embedding_frequencies`]); its tangent is
/// `[cos(a), −sin(a)]·ω_i·dt`.
pub fn sinusoidal(t: Dual<1>, dim: usize, scale: f64) -> Dual<2> {
    let half = dim / 2;
    let device = t.value.device();
    let freqs = embedding_frequencies(dim, scale);
    let freqs = Tensor::<1>::from_data(TensorData::new(freqs, [half]), &device)
        .cast(t.value.dtype())
        .reshape([1, half]);
    let n = t.value.dims()[0];
    let a = t.value.reshape([n, 1]) * freqs.clone();
    let (sin, cos) = (a.clone().sin(), a.cos());
    let tangent = t.tangent.map(|dt| {
        let da = dt.reshape([n, 1]) * freqs;
        Tensor::cat(
            vec![
                cos.clone().detach() * da.clone(),
                sin.clone().detach().neg() * da,
            ],
            1,
        )
    });
    let node = t.node.map(|n| {
        let column = n.i64s("axis1", &[1]);
        let column = n.op("Unsqueeze", &[&column], "column", &[]);
        let freqs: Vec<f32> = embedding_frequencies(dim, scale)
            .iter()
            .map(|&f| f as f32)
            .collect();
        let freqs = n.f32s("time_frequencies", &[1, half], &freqs);
        let a = column.op("Mul", &[&freqs], "angle", &[]);
        let sin = a.op("Sin", &[], "sin", &[]);
        let cos = a.op("Cos", &[], "cos", &[]);
        sin.op(
            "Concat",
            &[cos.name()],
            "embedding",
            &[("axis", Attr::Int(1))],
        )
    });
    Dual {
        value: Tensor::cat(vec![sin, cos], 1),
        tangent,
        node,
    }
}

/// A 2-D convolution `y = W ⋆ x + b` with square stride and padding: dy = W ⋆ dx.
pub fn conv2d(x: Dual<4>, conv: &burn::nn::conv::Conv2d, stride: usize, padding: usize) -> Dual<4> {
    let options =
        || burn::tensor::ops::ConvOptions::new([stride; 2], [padding; 2], [1, 1], conv.groups);
    let tangent = x
        .tangent
        .map(|dx| burn::tensor::module::conv2d(dx, conv.weight.val().detach(), None, options()));
    let input = x.value;
    let value = burn::tensor::module::conv2d(
        input.clone(),
        conv.weight.val(),
        conv.bias.as_ref().map(|b| b.val()),
        options(),
    );
    let node = x.node.map(|n| {
        let path = n.path_of(conv.weight.id, "conv");
        n.tap(&path, &input);
        // What the conv writes: an int8 export quantizes it too, for integer conv kernels.
        n.tap(&format!("{path}.output"), &value);
        let weight = conv.weight.val();
        let [_, _, kh, kw] = weight.dims();
        let w = n.tensor(&format!("{path}.weight"), weight);
        let mut inputs = vec![w];
        if let Some(b) = &conv.bias {
            inputs.push(n.tensor(&format!("{path}.bias"), b.val()));
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let (s, p) = (stride as i64, padding as i64);
        n.op(
            "Conv",
            &inputs,
            &path,
            &[
                ("kernel_shape", Attr::Ints(vec![kh as i64, kw as i64])),
                ("pads", Attr::Ints(vec![p; 4])),
                ("strides", Attr::Ints(vec![s, s])),
                ("group", Attr::Int(conv.groups as i64)),
            ],
        )
    });
    Dual {
        value,
        tangent,
        node,
    }
}

/// Group normalization over `[N, C, H, W]` with a per-channel affine map. Per group of
/// `C / G · H · W` values, x̂ = (x − μ)/σ with σ = √(var + ε), and
/// dx̂ = (dx − mean(dx) − x̂·mean(x̂·dx))/σ; then y = γ·x̂ + β, dy = γ·dx̂.
pub fn group_norm(x: Dual<4>, norm: &burn::nn::GroupNorm) -> Dual<4> {
    let [n, c, h, w] = x.value.dims();
    let groups = norm.num_groups;
    let grouped = [n, groups, c / groups * h * w];
    let xr = x.value.reshape(grouped);
    let centered = xr.clone() - xr.mean_dim(2);
    let inv = (centered.clone().square().mean_dim(2) + norm.epsilon)
        .sqrt()
        .recip();
    let xhat = centered * inv.clone();
    let gamma = norm.gamma.as_ref().map(|g| g.val().reshape([1, c, 1, 1]));
    let beta = norm.beta.as_ref().map(|b| b.val().reshape([1, c, 1, 1]));
    let tangent = x.tangent.map(|dx| {
        let (xhat, inv) = (xhat.clone().detach(), inv.detach());
        let dxr = dx.reshape(grouped);
        let projection = (xhat.clone() * dxr.clone()).mean_dim(2);
        let dxhat = (dxr.clone() - dxr.mean_dim(2) - xhat * projection) * inv;
        let dxhat = dxhat.reshape([n, c, h, w]);
        match &gamma {
            Some(g) => dxhat * g.clone().detach(),
            None => dxhat,
        }
    });
    let node = x.node.map(|x| {
        let path = match (&norm.gamma, &norm.beta) {
            (Some(g), _) => x.path_of(g.id, "group_norm"),
            (None, Some(b)) => x.path_of(b.id, "group_norm"),
            (None, None) => "group_norm".to_string(),
        };
        // InstanceNormalization over [N, G, C/G·H·W] is GroupNorm without its affine map.
        let grouped = x.i64s(&format!("{path}.grouped"), &[0, groups as i64, -1]);
        let xr = x.op("Reshape", &[&grouped], &format!("{path}.groups"), &[]);
        let ones = x.f32s(&format!("{path}.unit_scale"), &[groups], &vec![1.0; groups]);
        let zeros = x.f32s(&format!("{path}.zero_bias"), &[groups], &vec![0.0; groups]);
        let normed = xr.op(
            "InstanceNormalization",
            &[&ones, &zeros],
            &format!("{path}.normalized"),
            &[("epsilon", Attr::Float(norm.epsilon as f32))],
        );
        let shape = x.i64s(&format!("{path}.shape"), &[0, c as i64, h as i64, w as i64]);
        let mut y = normed.op("Reshape", &[&shape], &format!("{path}.ungrouped"), &[]);
        if let Some(g) = &gamma {
            let g = x.tensor(&format!("{path}.gamma"), g.clone().reshape([c, 1, 1]));
            y = y.op("Mul", &[&g], &format!("{path}.scaled"), &[]);
        }
        if let Some(b) = &beta {
            let b = x.tensor(&format!("{path}.beta"), b.clone().reshape([c, 1, 1]));
            y = y.op("Add", &[&b], &format!("{path}.out"), &[]);
        }
        y
    });
    let mut value = xhat.reshape([n, c, h, w]);
    if let Some(g) = gamma {
        value = value * g;
    }
    if let Some(b) = beta {
        value = value + b;
    }
    Dual {
        value,
        tangent,
        node,
    }
}

/// Nearest-neighbour upsampling by 2, `[N, C, H, W] → [N, C, 2H, 2W]` (linear: the tangent
/// is upsampled alike).
pub fn upsample2(x: Dual<4>) -> Dual<4> {
    let [_, c, h, w] = x.value.dims();
    let (c, h, w) = (c as i64, h as i64, w as i64);
    let node = x.node.map(|n| {
        let cells = n.i64s("cells", &[0, c, h, 1, w, 1]);
        let repeat = n.i64s("repeat", &[1, 1, 1, 2, 1, 2]);
        let joined = n.i64s("joined", &[0, c, 2 * h, 2 * w]);
        n.op("Reshape", &[&cells], "cells", &[])
            .op("Expand", &[&repeat], "repeated", &[])
            .op("Reshape", &[&joined], "upsampled", &[])
    });
    let repeat = |t: Tensor<4>| {
        let [n, c, h, w] = t.dims();
        t.reshape([n, c, h, 1, w, 1])
            .expand([n, c, h, 2, w, 2])
            .reshape([n, c, 2 * h, 2 * w])
    };
    Dual {
        value: repeat(x.value),
        tangent: x.tangent.map(repeat),
        node,
    }
}

/// Adds a per-sample, per-channel vector `[N, C]` to every position of `[N, C, H, W]`.
pub fn add_per_channel(x: Dual<4>, v: Dual<2>) -> Dual<4> {
    let [n, c, h, w] = x.value.dims();
    let spread = |t: Tensor<2>| t.reshape([n, c, 1, 1]).expand([n, c, h, w]);
    let node = v.node.map(|n| {
        let axes = n.i64s("spatial_axes", &[2, 3]);
        n.op("Unsqueeze", &[&axes], "per_channel", &[])
    });
    let spread = Dual {
        value: spread(v.value),
        tangent: v.tangent.map(spread),
        node,
    };
    x + spread
}
