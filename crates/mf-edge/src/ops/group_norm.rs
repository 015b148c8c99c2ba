//! GroupNorm as exported: `Reshape → InstanceNormalization → Reshape → Mul(γ) → Add(β)`, with
//! the SiLU (`Sigmoid` + `Mul`) that usually follows, run as one step.
use anyhow::ensure;
use mf_kernels::norm::sigmoid;
use mf_kernels::{Isa, Layout, QuantParams};

use super::normalize::NormScratch;
use super::{FreshBuffers, broadcast, normalize, relayout_value, reshape, with_shape};
use crate::tensor::{Shape, Value};

/// The constants of one exported GroupNorm chain.
#[derive(Debug, Clone)]
pub struct GroupNormChain {
    /// The first Reshape's target (`[N, G, -1]` as exported).
    pub grouped: Vec<i64>,
    /// InstanceNormalization's per-group scale, bias and epsilon.
    pub scale: Vec<f32>,
    /// See `scale`.
    pub bias: Vec<f32>,
    /// See `scale`.
    pub epsilon: f32,
    /// The second Reshape's target (back to `[N, C, H, W]`).
    pub ungrouped: Vec<i64>,
    /// The Mul's constant (`γ`, per channel as exported).
    pub gamma: Value,
    /// The Add's constant (`β`).
    pub beta: Value,
    /// Whether the chain ends in SiLU.
    pub silu: bool,
}

impl GroupNormChain {
    /// The chain's output for `x`: in one pass when `γ` and `β` are per channel of the
    /// ungrouped shape and each channel lies in one group, else node by node; the same bits
    /// either way. The one pass writes into a buffer of `FreshBuffers`. With `codes`, the
    /// output is uint8 codes for those parameters (the codes of the f32 output).
    pub fn run(
        &self,
        x: &Value,
        isa: Isa,
        (buffer, bytes): FreshBuffers<'_>,
        codes: Option<QuantParams>,
    ) -> anyhow::Result<Value> {
        let (data, shape) = x.f32("GroupNorm input")?;
        let grouped = reshape(shape, &self.grouped)?;
        ensure!(
            grouped.len() >= 3,
            "InstanceNormalization of {grouped:?}: inputs are [N, C, D1, …] with at least one spatial axis"
        );
        let ungrouped = reshape(&grouped, &self.ungrouped)?;
        let (gamma, gamma_shape) = self.gamma.f32("GroupNorm scale (Mul)")?;
        let (beta, beta_shape) = self.beta.f32("GroupNorm shift (Add)")?;
        if per_channel(gamma_shape, &ungrouped) && per_channel(beta_shape, &ungrouped) {
            let norm = (&self.scale[..], &self.bias[..], self.epsilon);
            let target = (&ungrouped[..], (gamma, beta));
            let fused = match codes {
                None => {
                    normalize::group_norm(isa, data, &grouped, norm, target, self.silu, buffer, ())?
                        .map(|out| Value::F32(out, ungrouped.clone()))
                }
                Some(params) => normalize::group_norm(
                    isa, data, &grouped, norm, target, self.silu, bytes, params,
                )?
                .map(|out| Value::U8(out, ungrouped.clone())),
            };
            if let Some(out) = fused {
                return Ok(out);
            }
        }
        let out = self.node_by_node(
            data,
            &grouped,
            ungrouped,
            (gamma, gamma_shape),
            (beta, beta_shape),
        )?;
        Ok(match codes {
            None => out,
            Some(params) => {
                let (y, sy) = out.f32("GroupNorm")?;
                Value::U8(y.iter().map(|&v| params.quantize(v)).collect(), sy.into())
            }
        })
    }

    /// The chain's output for `x` as NHWC pixel rows (`[N, H, W, C]`, what the engine keeps
    /// between convolutions), as pixel rows: in one pass (`normalize::group_norm_pixels`)
    /// when the chain groups whole channels and `γ`, `β` are per channel; otherwise the images
    /// are laid out as planes, run as [`GroupNormChain::run`] runs them, and laid back out.
    pub fn run_pixels(
        &self,
        x: &Value,
        isa: Isa,
        (buffer, bytes): FreshBuffers<'_>,
        codes: Option<QuantParams>,
        scratch: &mut NormScratch,
    ) -> anyhow::Result<Value> {
        let (data, shape) = x.f32("GroupNorm input")?;
        let &[n, h, w, c] = shape else {
            anyhow::bail!("GroupNorm of pixel rows of shape {shape:?}: [N, H, W, C] expected");
        };
        let planes: Shape = smallvec::smallvec![n, c, h, w];
        let grouped = reshape(&planes, &self.grouped)?;
        let ungrouped = reshape(&grouped, &self.ungrouped)?;
        let (gamma, gamma_shape) = self.gamma.f32("GroupNorm scale (Mul)")?;
        let (beta, beta_shape) = self.beta.f32("GroupNorm shift (Add)")?;
        let groups = grouped.get(1).copied().unwrap_or(0);
        let fits = grouped.len() >= 3
            && grouped[0] == n
            && groups > 0
            && c.is_multiple_of(groups)
            && ungrouped == planes
            && per_channel(gamma_shape, &planes)
            && per_channel(beta_shape, &planes);
        if fits {
            let rows = [n, h * w, c];
            let norm = (&self.scale[..], &self.bias[..], self.epsilon);
            let affine = (gamma, beta, self.silu);
            return Ok(match codes {
                None => {
                    let mut out = buffer(data.len());
                    let out_form = (&mut out[..], ());
                    normalize::group_norm_pixels(
                        isa, data, rows, groups, norm, affine, out_form, scratch,
                    )?;
                    Value::F32(out, shape.into())
                }
                Some(params) => {
                    let mut out = bytes(data.len());
                    let out_form = (&mut out[..], params);
                    normalize::group_norm_pixels(
                        isa, data, rows, groups, norm, affine, out_form, scratch,
                    )?;
                    Value::U8(out, shape.into())
                }
            });
        }
        let laid = relayout_value(x, Layout::Nchw, (&mut *buffer, &mut *bytes))?;
        let out = self.run(&laid, isa, (&mut *buffer, &mut *bytes), codes)?;
        relayout_value(&out, Layout::Nhwc, (buffer, bytes))
    }

    /// The chain's nodes one by one (γ or β not per channel, or a channel across groups).
    fn node_by_node(
        &self,
        data: &[f32],
        grouped: &[usize],
        ungrouped: Shape,
        (gamma, gamma_shape): (&[f32], &[usize]),
        (beta, beta_shape): (&[f32], &[usize]),
    ) -> anyhow::Result<Value> {
        let normalized =
            normalize::instance_norm(data, grouped, &self.scale, &self.bias, self.epsilon)?;
        let normalized = with_shape(normalized, ungrouped);
        let (y, sy) = normalized.f32("GroupNorm")?;
        let scaled = broadcast(y, sy, gamma, gamma_shape, |a, b| a * b)?;
        let (y, sy) = scaled.f32("GroupNorm")?;
        let shifted = broadcast(y, sy, beta, beta_shape, |a, b| a + b)?;
        if !self.silu {
            return Ok(shifted);
        }
        let (y, sy) = shifted.f32("GroupNorm")?;
        Ok(Value::F32(
            y.iter().map(|&a| a * sigmoid(a)).collect(),
            sy.into(),
        ))
    }
}

/// Whether a constant of shape `constant` broadcasts against `shape` as one value per index
/// of axis 1 (`[C, 1, …]` aligned to the right, or `[1, C, 1, …]`), leaving `shape` as it is.
fn per_channel(constant: &[usize], shape: &[usize]) -> bool {
    let Some(lead) = shape.len().checked_sub(constant.len()) else {
        return false;
    };
    shape.len() >= 2
        && constant.iter().enumerate().all(|(j, &d)| {
            let axis = j + lead;
            d == 1 || (axis == 1 && d == shape[1])
        })
        && constant.iter().product::<usize>() == shape[1]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GroupNorm + SiLU chain with the given reshapes (groups `grouped[1]`), a scale and
    /// bias per group, and `γ`, `β` of shape `per`.
    fn chain(grouped: &[i64], ungrouped: &[i64], per: &[usize]) -> GroupNormChain {
        let groups = grouped[1] as usize;
        let len: usize = per.iter().product();
        let ramp = |a: f32, b: f32, n: usize| (0..n).map(|i| a + b * i as f32).collect();
        GroupNormChain {
            grouped: grouped.to_vec(),
            scale: ramp(1.1, -0.07, groups),
            bias: ramp(0.1, -0.1, groups),
            epsilon: 1e-5,
            ungrouped: ungrouped.to_vec(),
            gamma: Value::F32(ramp(1.5, -0.01, len), per.into()),
            beta: Value::F32(ramp(-0.3, 0.002, len), per.into()),
            silu: true,
        }
    }

    /// `v` (`[n, c, h, w]` planes, f32 or codes) as pixel rows `[n, h, w, c]`.
    fn as_rows(v: &Value) -> Value {
        let (mut floats, mut bytes) = (|len| vec![0.0; len], |len| vec![0u8; len]);
        relayout_value(v, Layout::Nhwc, (&mut floats, &mut bytes)).unwrap()
    }

    #[test]
    fn pixel_rows_normalize_as_planes_do() {
        let isa = Isa::select().expect("a kernel family");
        // 80 channels (more than one chunk of 64) in 4 groups, 99 pixels (more than one block
        // of 64), two images: shared across the team. Each group sits far from zero, where
        // sums of squares would cancel.
        let (n, c, h, w) = (2, 80, 9, 11);
        let data: Vec<f32> = (0..n * c * h * w)
            .map(|i| {
                let group = i / (h * w) % c / 20;
                ((i * 7919) % 997) as f32 / 97.0 + 100.0 * (group as f32 + 1.0)
            })
            .collect();
        let planes = Value::F32(data, smallvec::smallvec![n, c, h, w]);
        let params = QuantParams::new(0.01, 128).expect("a valid scale");
        for per in [vec![c, 1, 1], vec![c, h, w]] {
            let chain = chain(&[0, 4, -1], &[0, 80, 9, 11], &per);
            let (mut fresh, mut bytes) = (|len| vec![0.0; len], |len| vec![0u8; len]);
            let mut scratch = NormScratch::default();
            for codes in [None, Some(params)] {
                let want = chain
                    .run(&planes, isa, (&mut fresh, &mut bytes), codes)
                    .unwrap();
                let got = chain
                    .run_pixels(
                        &as_rows(&planes),
                        isa,
                        (&mut fresh, &mut bytes),
                        codes,
                        &mut scratch,
                    )
                    .unwrap();
                let want = as_rows(&want);
                assert_eq!(got.shape(), [n, h, w, c]);
                if per == [c, h, w] {
                    // γ per element runs the nodes on planes: the same bits.
                    assert_eq!(got, want);
                    continue;
                }
                match (&got, &want) {
                    (Value::F32(g, _), Value::F32(w, _)) => {
                        for (i, (a, b)) in g.iter().zip(w).enumerate() {
                            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{i}: {a} vs {b}");
                        }
                    }
                    (Value::U8(g, _), Value::U8(w, _)) => {
                        let off = g.iter().zip(w).filter(|(a, b)| a != b).count();
                        assert!(g.iter().zip(w).all(|(a, b)| a.abs_diff(*b) <= 1));
                        assert!(off * 100 < g.len(), "{off} codes of {} differ", g.len());
                    }
                    _ => panic!("f32 values or codes as asked"),
                }
            }
        }
    }

    #[test]
    fn codes_are_the_codes_of_the_float_output() {
        let isa = Isa::select().expect("a kernel family");
        let (n, c, h, w) = (2, 6, 5, 7);
        let data: Vec<f32> = (0..n * c * h * w)
            .map(|i| ((i * 7919) % 997) as f32 / 97.0 - 4.0 + (i / (h * w)) as f32 * 0.3)
            .collect();
        let x = Value::F32(data, smallvec::smallvec![n, c, h, w]);
        let params = QuantParams::new(0.005, 40).expect("a valid scale");
        // γ per channel (the one pass) and per element (node by node).
        for per in [vec![c, 1, 1], vec![c, h, w]] {
            let chain = chain(&[2, 3, -1], &[2, 6, 5, 7], &per);
            let (mut fresh, mut bytes) = (|len| vec![0.0; len], |len| vec![0u8; len]);
            let floats = chain.run(&x, isa, (&mut fresh, &mut bytes), None).unwrap();
            let codes = chain
                .run(&x, isa, (&mut fresh, &mut bytes), Some(params))
                .unwrap();
            let (f, shape) = floats.f32("floats").unwrap();
            let want: Vec<u8> = f.iter().map(|&v| params.quantize(v)).collect();
            assert!(want.contains(&255) && want.iter().any(|&q| q != 255));
            assert_eq!(codes, Value::U8(want, shape.into()), "γ of shape {per:?}");
        }
    }
}
