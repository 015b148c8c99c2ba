//! Tensors of the runtime: row-major data with a shape, in the few element types the
//! exported graphs use.
use anyhow::{Context, bail, ensure};
use half::f16;
use mf_core::onnx;
use mf_core::onnx::DataType;

/// The most elements one value may hold (1 GiB of f32): a graph that would compute a larger
/// one is refused with an error instead of an allocation that aborts the process.
pub const MAX_ELEMENTS: usize = 1 << 28;

/// The element count of `shape`, or an error when it overflows or exceeds [`MAX_ELEMENTS`].
pub fn element_count(shape: &[usize]) -> anyhow::Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .with_context(|| {
            format!(
                "a value of shape {shape:?} exceeds the {MAX_ELEMENTS} elements one value may hold"
            )
        })
}

/// A tensor's shape, held inline up to rank 8 (every shape a network here uses), so that a
/// value's shape is no heap allocation.
pub type Shape = smallvec::SmallVec<[usize; 8]>;

/// A tensor value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// float32 (float16 data is widened to f32 on load).
    F32(Vec<f32>, Shape),
    /// int64
    I64(Vec<i64>, Shape),
    /// int32 (the codes of a quantized bias)
    I32(Vec<i32>, Shape),
    /// int8
    I8(Vec<i8>, Shape),
    /// uint8
    U8(Vec<u8>, Shape),
}

impl Value {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Value::F32(_, s)
            | Value::I64(_, s)
            | Value::I32(_, s)
            | Value::I8(_, s)
            | Value::U8(_, s) => s,
        }
    }

    /// The f32 data and shape, or an error naming `what`.
    pub fn f32(&self, what: impl std::fmt::Display) -> anyhow::Result<(&[f32], &[usize])> {
        match self {
            Value::F32(d, s) => Ok((d, s)),
            other => bail!("{what}: expected float data, found {}", other.type_name()),
        }
    }

    /// The i64 data and shape, or an error naming `what`.
    pub fn i64(&self, what: impl std::fmt::Display) -> anyhow::Result<(&[i64], &[usize])> {
        match self {
            Value::I64(d, s) => Ok((d, s)),
            other => bail!("{what}: expected int64 data, found {}", other.type_name()),
        }
    }

    /// The element type's name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::F32(..) => "float",
            Value::I64(..) => "int64",
            Value::I32(..) => "int32",
            Value::I8(..) => "int8",
            Value::U8(..) => "uint8",
        }
    }

    /// A single number of a scalar or one-element tensor, as f64.
    pub fn scalar(&self, what: impl std::fmt::Display) -> anyhow::Result<f64> {
        let v = match self {
            Value::F32(d, _) if d.len() == 1 => d[0] as f64,
            Value::I64(d, _) if d.len() == 1 => d[0] as f64,
            Value::I32(d, _) if d.len() == 1 => d[0] as f64,
            Value::I8(d, _) if d.len() == 1 => d[0] as f64,
            Value::U8(d, _) if d.len() == 1 => d[0] as f64,
            _ => bail!("{what}: expected a scalar"),
        };
        Ok(v)
    }

    /// Decodes an ONNX initializer.
    pub fn from_proto(t: &onnx::TensorProto) -> anyhow::Result<Value> {
        let shape: Shape = t
            .dims
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<_, _>>()
            .map_err(|_| anyhow::anyhow!("initializer {} has a negative dimension", t.name))?;
        let count = element_count(&shape).with_context(|| format!("initializer {}", t.name))?;
        let raw = &t.raw_data;
        let from_raw = |size: usize| -> anyhow::Result<()> {
            ensure!(
                count.checked_mul(size) == Some(raw.len()),
                "initializer {}: {} bytes of data for {count} elements",
                t.name,
                raw.len()
            );
            Ok(())
        };
        // Without raw data the values are listed in a typed field of `count` entries.
        let listed = |len: usize| -> anyhow::Result<()> {
            ensure!(len == count, "initializer {}: wrong element count", t.name);
            Ok(())
        };
        let value = match DataType::try_from(t.data_type).unwrap_or(DataType::Undefined) {
            DataType::Float if raw.is_empty() => {
                listed(t.float_data.len())?;
                Value::F32(t.float_data.clone(), shape)
            }
            DataType::Float => {
                from_raw(4)?;
                Value::F32(
                    raw.chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect(),
                    shape,
                )
            }
            DataType::Float16 => {
                from_raw(2)?;
                let data = raw
                    .chunks_exact(2)
                    .map(|b| f16::from_le_bytes(b.try_into().unwrap()).to_f32())
                    .collect();
                Value::F32(data, shape)
            }
            DataType::Int64 if raw.is_empty() => {
                listed(t.int64_data.len())?;
                Value::I64(t.int64_data.clone(), shape)
            }
            DataType::Int64 => {
                from_raw(8)?;
                Value::I64(
                    raw.chunks_exact(8)
                        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                        .collect(),
                    shape,
                )
            }
            DataType::Int32 if raw.is_empty() => {
                listed(t.int32_data.len())?;
                Value::I32(t.int32_data.clone(), shape)
            }
            DataType::Int32 => {
                from_raw(4)?;
                Value::I32(
                    raw.chunks_exact(4)
                        .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
                        .collect(),
                    shape,
                )
            }
            // Without raw data, ONNX keeps 8-bit values one per int32_data entry.
            DataType::Int8 | DataType::Uint8 if raw.is_empty() => {
                listed(t.int32_data.len())?;
                let d = &t.int32_data;
                if t.data_type == DataType::Int8 as i32 {
                    Value::I8(d.iter().map(|&v| v as i8).collect(), shape)
                } else {
                    Value::U8(d.iter().map(|&v| v as u8).collect(), shape)
                }
            }
            DataType::Int8 => {
                from_raw(1)?;
                Value::I8(raw.iter().map(|&b| b as i8).collect(), shape)
            }
            DataType::Uint8 => {
                from_raw(1)?;
                Value::U8(raw.clone(), shape)
            }
            other => bail!("initializer {} has unsupported type {other:?}", t.name),
        };
        Ok(value)
    }
}
