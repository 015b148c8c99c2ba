//! # mf-train
//!
//! Trains average-velocity networks u_θ(z, r, t) with the MeanFlow objective (Geng et al.,
//! 2025) on Burn, on CPU (flex) and GPU (wgpu; CUDA behind a feature). The target
//! `u_tgt = v_g − (t − r)·(v_g·∂_z u + ∂_t u)` needs a Jacobian-vector product, which Burn
//! cannot take: [`model::dual`] computes it exactly with a hand-written dual forward.
pub use burn;

pub mod bench;
pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod couple;
pub mod datasets;
pub mod draw_ahead;
pub mod ema;
pub mod eval;
pub mod metrics;
pub mod model;
pub mod objective;
pub mod parallel;
pub mod plot;
pub mod rng;
pub mod sample;
pub mod train;
