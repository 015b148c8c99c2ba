//! What the GPU targets share: the feature restriction of the LLVM path.
pub mod lowered_features;
