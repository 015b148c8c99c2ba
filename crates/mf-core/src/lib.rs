//! What the MeanFlow Edge crates and the firmware share.
//!
//! - [`atomic`] (std): the one atomic file write (temp file, fsync, rename);
//! - [`bounded`] (std): reading a file whole, up to a limit;
//! - [`cli`] (std): how the command-line tools report an error and exit;
//! - [`noise`]: the sampler's Gaussian noise, bit-identical on every target (the firmware's
//!   pixels are compared with the runtime's);
//! - [`card`] (std): the model card every exported model carries;
//! - [`compact`]: the compact all-int8 model format the firmware runs, with its allocation-free
//!   one-step generation;
//! - [`schedule`]: the sampling schedules (one-step MeanFlow and its multi-step form, Euler
//!   for flow-matching baselines);
//! - [`batch`] (std): one batch of network inputs; [`tract`] (feature `tract`): an exported
//!   model run by tract, for the exporter's checks and mf-edge's tract backend;
//! - [`images`] (feature `images`): sample grids and atomic PNG writes;
//! - [`onnx`] (feature `onnx`): the ONNX protobuf messages, so that reading a model needs no
//!   tract.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
pub mod atomic;
#[cfg(feature = "std")]
pub mod batch;
#[cfg(feature = "std")]
pub mod bounded;
#[cfg(feature = "std")]
pub mod card;
#[cfg(feature = "std")]
pub mod cli;
pub mod compact;
#[cfg(feature = "std")]
pub mod idx;
#[cfg(feature = "images")]
pub mod images;
pub mod noise;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod schedule;
#[cfg(feature = "tract")]
pub mod tract;
