//! Products computed in f32 outside the packed kernels: MatMul between activations (with
//! numpy's batch broadcasting, attention's Q·Kᵀ and P·V) and direct 2-D convolution with
//! weights known only at run time; and the Conv attributes every convolution is read with.
use anyhow::{bail, ensure};
use mf_core::onnx;
use mf_kernels::{Activation, ConvGeometry, Isa};

use super::FloatBuffer;
use super::{broadcast_shapes, int_attr, ints_attr, strides};
use crate::tensor::{Shape, Value, element_count};

/// MatMul with numpy semantics: 1-D operands get a dimension for the product and lose it
/// after; batch dimensions broadcast. The product goes into a buffer from `buffer`.
pub fn matmul(
    isa: Isa,
    [(a, sa), (b, sb)]: [(&[f32], &[usize]); 2],
    buffer: FloatBuffer<'_>,
) -> anyhow::Result<Value> {
    ensure!(
        !sa.is_empty() && !sb.is_empty(),
        "MatMul of {sa:?} by {sb:?}: scalars are not matrices"
    );
    let sa2: Shape = if sa.len() == 1 {
        Shape::from_slice(&[1, sa[0]])
    } else {
        Shape::from_slice(sa)
    };
    let sb2: Shape = if sb.len() == 1 {
        Shape::from_slice(&[sb[0], 1])
    } else {
        Shape::from_slice(sb)
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
    let len = element_count(&out_shape)?;
    let mut out = buffer(len);
    out.resize(len, 0.0);
    let (sta, stb) = (strides(&pa), strides(&pb));
    let mut index = Shape::from_elem(0, rank);
    for t in 0..count {
        let offset = |p: &[usize], st: &[usize]| -> usize {
            (0..rank)
                .map(|d| if p[d] == 1 { 0 } else { index[d] * st[d] })
                .sum()
        };
        let (oa, ob) = (offset(&pa, &sta) * m * k, offset(&pb, &stb) * k * n);
        let c = &mut out[t * m * n..(t + 1) * m * n];
        let (a, b) = (&a[oa..oa + m * k], &b[ob..ob + k * n]);
        mf_kernels::pointwise::matmul(isa, a, b, c, [m, k, n])?;
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

/// The largest Conv pad, stride or dilation accepted (larger ones are refused, not overflowed).
const MAX_GEOMETRY: i64 = 65_535;

/// The geometry of a Conv node with weights of shape `sw` `[M, C, KH, KW]`: group 1, explicit
/// pads (no auto_pad), pads, strides and dilations up to 65,535.
pub fn conv_geometry(node: &onnx::NodeProto, sw: &[usize]) -> anyhow::Result<ConvGeometry> {
    ensure!(
        sw.len() == 4,
        "Conv weights of shape {sw:?}: 2-D convolutions with weights [M, C, KH, KW] are supported"
    );
    let auto_pad = node.attribute.iter().find(|a| a.name == "auto_pad");
    ensure!(
        auto_pad.is_none_or(|a| a.s == b"NOTSET"),
        "Conv auto_pad is not supported (explicit pads are)"
    );
    ensure!(
        int_attr(node, "group", 1) == 1,
        "Conv with group {} is not supported (group 1 is)",
        int_attr(node, "group", 1)
    );
    let kernel = ints_attr(node, "kernel_shape");
    ensure!(
        kernel.is_empty()
            || kernel
                .iter()
                .map(|&k| k as usize)
                .eq(sw[2..].iter().copied()),
        "Conv kernel_shape {kernel:?} differs from its weights {sw:?}"
    );
    let two = |name: &str, default: usize| -> anyhow::Result<[usize; 2]> {
        match ints_attr(node, name) {
            [] => Ok([default; 2]),
            &[a, b]
                if [a, b]
                    .iter()
                    .all(|v| (default as i64..=MAX_GEOMETRY).contains(v)) =>
            {
                Ok([a as usize, b as usize])
            }
            other => bail!(
                "Conv {name} {other:?}: two values from {default} to {MAX_GEOMETRY} are supported"
            ),
        }
    };
    let pads = match ints_attr(node, "pads") {
        [] => [0; 4],
        &[t, l, b, r] if [t, l, b, r].iter().all(|v| (0..=MAX_GEOMETRY).contains(v)) => {
            [t as usize, l as usize, b as usize, r as usize]
        }
        other => {
            bail!("Conv pads {other:?}: four values from 0 to {MAX_GEOMETRY} are supported")
        }
    };
    let geometry = ConvGeometry {
        channels: sw[1],
        kernel: [sw[2], sw[3]],
        pads,
        strides: two("strides", 1)?,
        dilations: two("dilations", 1)?,
    };
    geometry.check()?;
    Ok(geometry)
}

/// Direct convolution of `x` `[N, C, H, W]` by `w` `[M, C, KH, KW]`, plus `bias` `[M]`
/// (mf-kernels' reference convolution: any weights, computed at run time).
pub fn conv2d(
    x: &[f32],
    sx: &[usize],
    w: &[f32],
    sw: &[usize],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
) -> anyhow::Result<Value> {
    ensure!(
        sx.len() == 4 && sw.len() == 4 && sx[1] == sw[1],
        "Conv of {sx:?} by weights {sw:?}: 2-D convolutions of [N, C, H, W] by [M, C, KH, KW] (group 1) are supported"
    );
    let m = sw[0];
    let zeros;
    let bias = match bias {
        Some(b) => b,
        None => {
            zeros = vec![0f32; m];
            &zeros
        }
    };
    ensure!(
        bias.len() == m,
        "Conv bias of {} values for {m} output channels",
        bias.len()
    );
    let [oh, ow] = g.output_size(sx[2], sx[3])?;
    let shape = Shape::from_slice(&[sx[0], m, oh, ow]);
    let mut out = vec![0f32; element_count(&shape)?];
    mf_kernels::reference::conv_f32(
        w,
        bias,
        Activation::None,
        m,
        g,
        x,
        [sx[0], sx[2], sx[3]],
        &mut out,
    )?;
    Ok(Value::F32(out, shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(kernel: usize, pads: usize) -> ConvGeometry {
        ConvGeometry {
            channels: 1,
            kernel: [kernel, 3],
            pads: [pads; 4],
            strides: [1; 2],
            dilations: [1; 2],
        }
    }

    #[test]
    fn conv_refuses_empty_kernels_and_kernels_larger_than_the_input() {
        let x = vec![1.0; 4];
        let err = geometry(0, 0).check().unwrap_err();
        assert!(err.to_string().contains("kernel is empty"), "{err}");
        let w = vec![1.0; 9];
        let err = conv2d(&x, &[1, 1, 2, 2], &w, &[1, 1, 3, 3], None, &geometry(3, 0)).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        // Padded by one it fits: a 3x3 box sum over the 2x2 ones at the four corners.
        let out = conv2d(
            &x,
            &[1, 1, 2, 2],
            &w,
            &[1, 1, 3, 3],
            Some(&[0.5]),
            &geometry(3, 1),
        )
        .unwrap();
        assert_eq!(
            out,
            Value::F32(vec![4.5; 4], smallvec::smallvec![1, 1, 2, 2])
        );
    }

    #[test]
    fn matmul_broadcasts_batches_and_drops_added_dimensions() {
        // [2, 1, 1, 2] x [3, 2, 1]: batches [2, 1] and [3] broadcast to [2, 3].
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let Value::F32(out, shape) = matmul(
            Isa::Scalar,
            [(&a, &[2, 1, 1, 2]), (&b, &[3, 2, 1])],
            &mut Vec::with_capacity,
        )
        .unwrap() else {
            panic!("f32 expected")
        };
        assert_eq!(shape.as_slice(), [2, 3, 1, 1]);
        assert_eq!(out, [1.0, 2.0, 3.0, 3.0, 4.0, 7.0]);
        let v = matmul(
            Isa::detect(),
            [(&[1.0, 2.0], &[2]), (&[3.0, 4.0], &[2])],
            &mut Vec::with_capacity,
        )
        .unwrap();
        assert_eq!(v, Value::F32(vec![11.0], smallvec::smallvec![]));
        assert!(
            matmul(
                Isa::Scalar,
                [(&a, &[2, 2]), (&b, &[3, 2])],
                &mut Vec::with_capacity
            )
            .is_err()
        );
    }
}
