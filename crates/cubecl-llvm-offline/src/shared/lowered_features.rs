//! The device features the LLVM path would narrow. cubecl-cuda calls [`restrict_features`] only
//! when it compiles through LLVM (its `cpp` feature off); this build has no LLVM compiler, so
//! every kernel on that path fails to compile with [`crate::NO_LLVM`] whatever is advertised,
//! and the properties are left as the driver reported them.
use cubecl_core::ir::DeviceProperties;

/// The GPU target a device's features would be narrowed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuTarget {
    /// NVIDIA GPUs, through PTX.
    Nvptx,
}

/// Leaves `props` as they are: see the module's documentation.
pub fn restrict_features(_props: &mut DeviceProperties, _target: GpuTarget) {}
