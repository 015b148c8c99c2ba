//! What the MeanFlow Edge crates and the firmware share.
//!
//! - [`noise`]: the sampler's Gaussian noise, bit-identical on every target (the firmware's
//!   pixels are compared with the runtime's);
//! - [`card`] (std): the model card every exported model carries;
//! - [`compact`]: the compact all-int8 model format the firmware runs, with its allocation-free
//!   one-step generation;
//! - [`schedule`]: the sampling schedules (one-step MeanFlow and its multi-step form, Euler
//!   for flow-matching baselines).
#![no_std]

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
pub mod card;
pub mod compact;
#[cfg(feature = "std")]
pub mod idx;
pub mod noise;
pub mod schedule;
