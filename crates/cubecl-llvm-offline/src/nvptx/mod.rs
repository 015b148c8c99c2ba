//! NVPTX: the PTX version table.
pub mod ptx_version;
