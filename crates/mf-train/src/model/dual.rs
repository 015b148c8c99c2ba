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
