//! One-step MeanFlow generation on a microcontroller, and the screen that shows it.
//!
//! - [`app`]: the generator: a compact int8 model, static buffers, one network evaluation per
//!   image (`mf_core::compact`, the same arithmetic as `mf-edge`'s native int8 engine);
//! - [`screen`]: what the 240×240 panel shows, drawn through `embedded-graphics` into any
//!   `DrawTarget` (the ST7789 of [`panel`], or a [`framebuffer::Framebuffer`]);
//! - [`panel`]: bringing up an ST7789 with `mipidsi` over SPI.
#![no_std]

pub mod app;
pub mod framebuffer;
pub mod panel;
pub mod screen;
