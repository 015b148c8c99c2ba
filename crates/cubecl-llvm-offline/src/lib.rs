//! An offline stand-in for `cubecl-llvm` 0.11.3 (crates.io), whose build script downloads LLVM.
//!
//! cubecl-cuda depends on cubecl-llvm unconditionally, even when it compiles kernels with NVRTC
//! (its `cpp` feature). This crate provides what cubecl-cuda takes from it, with the same paths
//! and signatures: the PTX version table ([`nvptx::ptx_version::PtxVersion`]), the feature
//! restriction of the LLVM path ([`shared::lowered_features`]), and the LLVM compiler's types
//! ([`PlironCompiler`]), whose `compile` returns an error naming the way out. With NVRTC as the
//! compiler the error is never reached: cubecl-cuda builds its LLVM compiler only when the `cpp`
//! feature is off.

pub mod nvptx;
pub mod shared;

use core::fmt;

use cubecl_core::Compiler;
use cubecl_core::ir::amd::GfxArch;
use cubecl_core::ir::nvidia::SmArch;
use cubecl_core::prelude::KernelDefinition;
use cubecl_runtime::compiler::CompilationError;
use cubecl_runtime::kernel::BufferIOAttr;

use nvptx::ptx_version::PtxVersion;

/// What the LLVM path would compile for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LlvmTarget {
    /// The host CPU (cubecl-cpu).
    #[default]
    Cpu,
    /// NVIDIA GPUs, through PTX.
    Nvptx,
}

/// The LLVM compiler's options (the fields cubecl-cuda sets).
#[derive(Clone, Debug, Default)]
pub struct PlironOptions {
    /// AMDGPU architecture, or `None` for other targets.
    pub arch: Option<GfxArch>,
    /// NVPTX architecture, or `None` for other targets.
    pub sm_arch: Option<SmArch>,
    /// PTX version to emit, or `None` for the oldest the architecture accepts.
    pub ptx_version: Option<PtxVersion>,
    /// Pass scalars and static metadata in the kernel parameter block.
    pub grid_constants: bool,
}

/// A compiled NVPTX kernel (never produced here: the fields cubecl-cuda reads).
#[derive(Clone, Debug)]
pub struct NvptxModule {
    /// NUL-terminated PTX assembly.
    pub ptx: Vec<core::ffi::c_char>,
    /// Kernel entry point symbol.
    pub entrypoint: String,
    /// IR for logging and cache keys.
    pub ir: String,
    /// Shared memory required per launch, in bytes.
    pub shared_memory_size: usize,
    /// Buffer access modes in binding order.
    pub io: Vec<BufferIOAttr>,
}

/// A compiled kernel artifact.
#[derive(Clone, Debug)]
pub enum PlironArtifact {
    /// PTX for an NVIDIA GPU.
    NvptxCode(NvptxModule),
}

impl fmt::Display for PlironArtifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlironArtifact::NvptxCode(module) => f.write_str(&module.ir),
        }
    }
}

/// The LLVM kernel compiler: in this build it refuses, naming NVRTC as the compiler to use.
#[derive(Clone, Debug, Default)]
pub struct PlironCompiler {
    /// The target it was asked to compile for.
    pub target: LlvmTarget,
}

/// Why this build cannot compile through LLVM.
pub const NO_LLVM: &str = "this build has no LLVM kernel compiler (cubecl-llvm is replaced by \
    an offline stand-in); CUDA kernels are compiled with NVRTC (cubecl-cuda's `cpp` feature)";

impl Compiler for PlironCompiler {
    type Representation = PlironArtifact;
    type CompilationOptions = PlironOptions;

    fn compile(
        &mut self,
        _kernel: KernelDefinition,
        _options: &Self::CompilationOptions,
    ) -> Result<Self::Representation, CompilationError> {
        Err(CompilationError::Generic {
            reason: NO_LLVM.to_string(),
            backtrace: Default::default(),
        })
    }

    fn extension(&self) -> &'static str {
        "ll"
    }

    fn lang_tag(&self) -> &'static str {
        "llvm"
    }
}
