//! Products computed in f32 outside the packed kernels: MatMul between activations (with
//! numpy's batch broadcasting, attention's Q·Kᵀ and P·V) and direct 2-D convolution.
use anyhow::ensure;

use super::{broadcast_shapes, strides};
use crate::tensor::{Value, element_count};

/// MatMul with numpy semantics: 1-D operands get a dimension for the product and lose it
/// after; batch dimensions broadcast.
pub fn matmul(a: &[f32], sa: &[usize], b: &[f32], sb: &[usize]) -> anyhow::Result<Value> {
    ensure!(
        !sa.is_empty() && !sb.is_empty(),
        "MatMul of {sa:?} by {sb:?}: scalars are not matrices"
    );
    let sa2: Vec<usize> = if sa.len() == 1 {
        vec![1, sa[0]]
    } else {
        sa.to_vec()
    };
    let sb2: Vec<usize> = if sb.len() == 1 {
        vec![sb[0], 1]
    } else {
        sb.to_vec()
    };
    let (m, k) = (sa2[sa2.len() - 2], sa2[sa2.len() - 1]);
    let (k2, n) = (sb2[sb2.len() - 2], sb2[sb2.len() - 1]);
    ensure!(
        k == k2,
        "MatMul of {sa:?} by {sb:?}: inner sizes {k} and {k2} differ"
    );
    let (ba, bb) = (&sa2[..sa2.len() - 2], &sb2[..sb2.len() - 2]);
    let (pa, pb, batch) = broadcast_shapes(ba, bb).map_err(|_| {
        anyhow::anyhow!("MatMul of {sa:?} by {sb:?}: batch dimensions do not broadcast")
    })?;
    let rank = batch.len();
    let count: usize = batch.iter().product();
    let mut out_shape = batch.clone();
    out_shape.extend([m, n]);
    let mut out = vec![0f32; element_count(&out_shape)?];
    let (sta, stb) = (strides(&pa), strides(&pb));
    let mut index = vec![0usize; rank];
    for t in 0..count {
        let offset = |p: &[usize], st: &[usize]| -> usize {
            (0..rank)
                .map(|d| if p[d] == 1 { 0 } else { index[d] * st[d] })
                .sum()
        };
        let (oa, ob) = (offset(&pa, &sta) * m * k, offset(&pb, &stb) * k * n);
        let c = &mut out[t * m * n..(t + 1) * m * n];
        for i in 0..m {
            for p in 0..k {
                let x = a[oa + i * k + p];
                let row = &b[ob + p * n..ob + (p + 1) * n];
                for (y, &w) in c[i * n..(i + 1) * n].iter_mut().zip(row) {
                    *y += x * w;
                }
            }
        }
        for d in (0..rank).rev() {
            index[d] += 1;
            if index[d] < batch[d] {
                break;
            }
            index[d] = 0;
        }
    }
    // A 1-D operand's added dimension is dropped again.
    if sb.len() == 1 {
        out_shape.remove(out_shape.len() - 1);
    }
    if sa.len() == 1 {
        out_shape.remove(out_shape.len() - if sb.len() == 1 { 1 } else { 2 });
    }
    Ok(Value::F32(out, out_shape))
}

/// A 2-D convolution's geometry (group 1).
pub struct Conv2d {
    /// Padding at the top, left, bottom and right.
    pub pads: [usize; 4],
    /// Vertical and horizontal stride.
    pub strides: [usize; 2],
    /// Vertical and horizontal dilation.
    pub dilations: [usize; 2],
}

/// Direct convolution of `x` `[N, C, H, W]` by `w` `[M, C, KH, KW]`, plus `bias` `[M]`.
pub fn conv2d(
    x: &[f32],
    sx: &[usize],
    w: &[f32],
    sw: &[usize],
    bias: Option<&[f32]>,
    g: &Conv2d,
) -> anyhow::Result<Value> {
    ensure!(
        sx.len() == 4 && sw.len() == 4 && sx[1] == sw[1],
        "Conv of {sx:?} by weights {sw:?}: 2-D convolutions of [N, C, H, W] by [M, C, KH, KW] (group 1) are supported"
    );
    let [n, c, h, wd] = [sx[0], sx[1], sx[2], sx[3]];
    let [m, _, kh, kw] = [sw[0], sw[1], sw[2], sw[3]];
    ensure!(
        bias.is_none_or(|b| b.len() == m),
        "Conv bias of {} values for {m} output channels",
        bias.map_or(0, <[f32]>::len)
    );
    ensure!(kh > 0 && kw > 0, "Conv weights {sw:?} have an empty kernel");
    // Checked: pads and dilations come from the file.
    let out_size = |size: usize, before: usize, after: usize, k: usize, d: usize, s: usize| {
        let span = (k - 1).checked_mul(d)?.checked_add(1)?;
        let padded = size.checked_add(before)?.checked_add(after)?;
        padded.checked_sub(span).map(|v| v / s + 1)
    };
    let (Some(oh), Some(ow)) = (
        out_size(h, g.pads[0], g.pads[2], kh, g.dilations[0], g.strides[0]),
        out_size(wd, g.pads[1], g.pads[3], kw, g.dilations[1], g.strides[1]),
    ) else {
        anyhow::bail!(
            "Conv kernel {kh}x{kw} (dilations {:?}) does not fit the {h}x{wd} input padded by {:?}",
            g.dilations,
            g.pads
        );
    };
    let shape = vec![n, m, oh, ow];
    let mut out = vec![0f32; element_count(&shape)?];
    for b in 0..n {
        for o in 0..m {
            let plane = &mut out[(b * m + o) * oh * ow..(b * m + o + 1) * oh * ow];
            plane.fill(bias.map_or(0.0, |bias| bias[o]));
            for ci in 0..c {
                let input = &x[(b * c + ci) * h * wd..(b * c + ci + 1) * h * wd];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let wv = w[((o * c + ci) * kh + ky) * kw + kx];
                        for y in 0..oh {
                            let iy = (y * g.strides[0] + ky * g.dilations[0]) as isize
                                - g.pads[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for xo in 0..ow {
                                let ix = (xo * g.strides[1] + kx * g.dilations[1]) as isize
                                    - g.pads[1] as isize;
                                if ix >= 0 && ix < wd as isize {
                                    plane[y * ow + xo] +=
                                        wv * input[iy as usize * wd + ix as usize];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(Value::F32(out, shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Conv2d = Conv2d {
        pads: [0; 4],
        strides: [1; 2],
        dilations: [1; 2],
    };

    #[test]
    fn conv_refuses_empty_kernels_and_kernels_larger_than_the_input() {
        let x = vec![1.0; 4];
        let err = conv2d(&x, &[1, 1, 2, 2], &[], &[1, 1, 0, 3], None, &PLAIN).unwrap_err();
        assert!(err.to_string().contains("empty kernel"), "{err}");
        let w = vec![1.0; 9];
        let err = conv2d(&x, &[1, 1, 2, 2], &w, &[1, 1, 3, 3], None, &PLAIN).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        // Padded by one it fits: a 3x3 box sum over the 2x2 ones at the four corners.
        let padded = Conv2d {
            pads: [1; 4],
            ..PLAIN
        };
        let out = conv2d(&x, &[1, 1, 2, 2], &w, &[1, 1, 3, 3], Some(&[0.5]), &padded).unwrap();
        assert_eq!(out, Value::F32(vec![4.5; 4], vec![1, 1, 2, 2]));
    }

    #[test]
    fn matmul_broadcasts_batches_and_drops_added_dimensions() {
        // [2, 1, 1, 2] x [3, 2, 1]: batches [2, 1] and [3] broadcast to [2, 3].
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let Value::F32(out, shape) = matmul(&a, &[2, 1, 1, 2], &b, &[3, 2, 1]).unwrap() else {
            panic!("f32 expected")
        };
        assert_eq!(shape, [2, 3, 1, 1]);
        assert_eq!(out, [1.0, 2.0, 3.0, 3.0, 4.0, 7.0]);
        let v = matmul(&[1.0, 2.0], &[2], &[3.0, 4.0], &[2]).unwrap();
        assert_eq!(v, Value::F32(vec![11.0], vec![]));
        assert!(matmul(&a, &[2, 2], &b, &[3, 2]).is_err());
    }
}
