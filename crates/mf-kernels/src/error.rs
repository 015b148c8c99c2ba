//! Errors the kernels report instead of panicking.
use core::fmt;

/// Why a kernel call or a packing step was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelError {
    /// A buffer does not have the length its shape implies.
    Shape {
        /// Which argument is wrong.
        what: &'static str,
        /// Elements expected from the shape.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// A scale is zero, negative or not finite.
    BadScale {
        /// Which argument holds it.
        what: &'static str,
        /// The value found.
        value: f32,
    },
    /// A convolution's geometry cannot be computed (the reason).
    Geometry(&'static str),
    /// An element-wise, softmax or matrix product's operands do not fit together (the reason).
    Operands(&'static str),
    /// `MF_KERNEL` names no kernel.
    UnknownKernel,
    /// The requested kernel needs CPU features this machine lacks.
    Unavailable(crate::Isa),
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::Shape {
                what,
                expected,
                got,
            } => {
                write!(f, "{what}: expected {expected} elements, got {got}")
            }
            KernelError::BadScale { what, value } => {
                write!(f, "{what}: scale {value} is not a positive finite number")
            }
            KernelError::Geometry(why) => write!(f, "convolution geometry: {why}"),
            KernelError::Operands(why) => write!(f, "operands: {why}"),
            KernelError::UnknownKernel => write!(
                f,
                "MF_KERNEL names no kernel; accepted: scalar, avx2, avx512vnni, neon, dotprod, i8mm"
            ),
            KernelError::Unavailable(isa) => write!(
                f,
                "kernel {} needs CPU features this machine lacks; available: {}",
                isa.name(),
                crate::isa::AvailableList
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for KernelError {}

/// Checks that a buffer has exactly `expected` elements.
pub(crate) fn check_len(
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), KernelError> {
    if expected == got {
        Ok(())
    } else {
        Err(KernelError::Shape {
            what,
            expected,
            got,
        })
    }
}

/// Checks that a scale can divide and multiply without producing inf or NaN.
pub(crate) fn check_scale(what: &'static str, value: f32) -> Result<(), KernelError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(KernelError::BadScale { what, value })
    }
}
