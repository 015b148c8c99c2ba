//! An in-memory RGB565 screen: the emulator's panel, and the host tests' canvas.
use embedded_graphics::pixelcolor::Rgb565;
use embedded_graphics::pixelcolor::raw::RawU16;
use embedded_graphics::prelude::*;

/// A `W × H` RGB565 framebuffer.
pub struct Framebuffer<const W: usize, const H: usize, const N: usize> {
    pixels: [Rgb565; N],
}

impl<const W: usize, const H: usize, const N: usize> Framebuffer<W, H, N> {
    /// A black screen (a `static` initializer). `N` must be `W · H`.
    pub const fn new() -> Self {
        assert!(N == W * H, "N must be W * H");
        Framebuffer {
            pixels: [Rgb565::BLACK; N],
        }
    }

    /// The pixel at (x, y).
    pub fn pixel(&self, x: usize, y: usize) -> Rgb565 {
        self.pixels[y * W + x]
    }

    /// FNV-1a 32 of the raw RGB565 values, row by row (what the firmware reports).
    pub fn checksum(&self) -> u32 {
        self.pixels.iter().fold(0x811c_9dc5u32, |h, p| {
            let raw = RawU16::from(*p).into_inner();
            let h = (h ^ (raw & 0xff) as u32).wrapping_mul(0x0100_0193);
            (h ^ (raw >> 8) as u32).wrapping_mul(0x0100_0193)
        })
    }
}

impl<const W: usize, const H: usize, const N: usize> Default for Framebuffer<W, H, N> {
    fn default() -> Self {
        Framebuffer::new()
    }
}

impl<const W: usize, const H: usize, const N: usize> OriginDimensions for Framebuffer<W, H, N> {
    fn size(&self) -> Size {
        Size::new(W as u32, H as u32)
    }
}

impl<const W: usize, const H: usize, const N: usize> DrawTarget for Framebuffer<W, H, N> {
    type Color = Rgb565;
    type Error = core::convert::Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb565>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Self::Error> {
        for Pixel(p, color) in pixels {
            if p.x >= 0 && p.y >= 0 && (p.x as usize) < W && (p.y as usize) < H {
                self.pixels[p.y as usize * W + p.x as usize] = color;
            }
        }
        Ok(())
    }
}

/// The 240×240 screen of the ST7789 panel.
pub type Screen = Framebuffer<240, 240, { 240 * 240 }>;
