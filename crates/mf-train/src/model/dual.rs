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
use burn::prelude::*;
use burn::tensor::activation::sigmoid;

/// A value with an optional tangent of the same shape.
#[derive(Debug, Clone)]
pub struct Dual<const D: usize> {
    /// The primal value.
    pub value: Tensor<D>,
    /// The directional derivative along the JVP's tangent, if one is being propagated.
    pub tangent: Option<Tensor<D>>,
}

impl<const D: usize> Dual<D> {
    /// A value without tangent (plain forward).
    pub fn primal(value: Tensor<D>) -> Self {
        Dual {
            value,
            tangent: None,
        }
    }

    /// A value with its tangent.
    pub fn new(value: Tensor<D>, tangent: Tensor<D>) -> Self {
        Dual {
            value,
            tangent: Some(tangent),
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

    /// Applies a linear map to value and tangent alike.
    pub fn map_linear<const E: usize>(self, f: impl Fn(Tensor<D>) -> Tensor<E>) -> Dual<E> {
        Dual {
            value: f(self.value),
            tangent: self.tangent.map(&f),
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
        Dual {
            value: self.value * s,
            tangent,
        }
    }

    /// Concatenates along `dim`; a part without tangent contributes zeros.
    pub fn cat(parts: Vec<Dual<D>>, dim: usize) -> Dual<D> {
        let any_tangent = parts.iter().any(|p| p.tangent.is_some());
        let tangent = any_tangent
            .then(|| Tensor::cat(parts.iter().map(|p| p.tangent_or_zeros()).collect(), dim));
        Dual {
            value: Tensor::cat(parts.into_iter().map(|p| p.value).collect(), dim),
            tangent,
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
    Dual {
        value: layer.forward(x.value),
        tangent,
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
    Dual {
        value: Tensor::cat(vec![sin, cos], 1),
        tangent,
    }
}

/// A 2-D convolution `y = W ⋆ x + b` with square stride and padding: dy = W ⋆ dx.
pub fn conv2d(x: Dual<4>, conv: &burn::nn::conv::Conv2d, stride: usize, padding: usize) -> Dual<4> {
    let options =
        || burn::tensor::ops::ConvOptions::new([stride; 2], [padding; 2], [1, 1], conv.groups);
    let tangent = x
        .tangent
        .map(|dx| burn::tensor::module::conv2d(dx, conv.weight.val().detach(), None, options()));
    let value = burn::tensor::module::conv2d(
        x.value,
        conv.weight.val(),
        conv.bias.as_ref().map(|b| b.val()),
        options(),
    );
    Dual { value, tangent }
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
    let mut value = xhat.reshape([n, c, h, w]);
    if let Some(g) = gamma {
        value = value * g;
    }
    if let Some(b) = beta {
        value = value + b;
    }
    Dual { value, tangent }
}

/// Nearest-neighbour upsampling by 2, `[N, C, H, W] → [N, C, 2H, 2W]` (linear: the tangent
/// is upsampled alike).
pub fn upsample2(x: Dual<4>) -> Dual<4> {
    x.map_linear(|t| {
        let [n, c, h, w] = t.dims();
        t.reshape([n, c, h, 1, w, 1])
            .expand([n, c, h, 2, w, 2])
            .reshape([n, c, 2 * h, 2 * w])
    })
}

/// Adds a per-sample, per-channel vector `[N, C]` to every position of `[N, C, H, W]`.
pub fn add_per_channel(x: Dual<4>, v: Dual<2>) -> Dual<4> {
    let [n, c, h, w] = x.value.dims();
    let spread = |t: Tensor<2>| t.reshape([n, c, 1, 1]).expand([n, c, h, w]);
    x + v.map_linear(spread)
}
