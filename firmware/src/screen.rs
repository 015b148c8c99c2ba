//! What the panel shows: the generated image scaled up, and a caption.
use core::fmt::Write;

use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::mono_font::ascii::FONT_6X10;
use embedded_graphics::pixelcolor::Rgb565;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::Text;

/// Pixel scale of the image on a 240×240 panel (28 × 7 = 196).
pub const SCALE: u32 = 7;

/// Draws an 8-bit image (`channels × side × side`, channels first) scaled by [`SCALE`] and
/// centred at the top, with a caption naming the class and seed underneath.
pub fn draw<D: DrawTarget<Color = Rgb565>>(
    target: &mut D,
    pixels: &[u8],
    channels: usize,
    side: usize,
    class: usize,
    seed: u64,
) -> Result<(), D::Error> {
    target.clear(Rgb565::new(2, 4, 2))?;
    let size = target.bounding_box().size;
    let left = (size.width as i32 - (side as u32 * SCALE) as i32) / 2;
    let plane = side * side;
    for y in 0..side {
        for x in 0..side {
            let at = |c: usize| pixels[c * plane + y * side + x];
            let color = if channels == 3 {
                Rgb565::new(at(0) >> 3, at(1) >> 2, at(2) >> 3)
            } else {
                Rgb565::new(at(0) >> 3, at(0) >> 2, at(0) >> 3)
            };
            let origin = Point::new(
                left + (x as u32 * SCALE) as i32,
                8 + (y as u32 * SCALE) as i32,
            );
            Rectangle::new(origin, Size::new(SCALE, SCALE))
                .into_styled(PrimitiveStyle::with_fill(color))
                .draw(target)?;
        }
    }
    let mut caption: heapless_string::Caption = heapless_string::Caption::new();
    let _ = write!(caption, "MeanFlow one step: class {class}, seed {seed}");
    let style = MonoTextStyle::new(&FONT_6X10, Rgb565::new(28, 56, 28));
    let y = 8 + (side as u32 * SCALE) as i32 + 20;
    Text::new(caption.as_str(), Point::new(6, y), style).draw(target)?;
    Ok(())
}

/// A fixed-capacity string for the caption (no allocator on the device).
mod heapless_string {
    /// Up to 64 bytes of text.
    pub struct Caption {
        buf: [u8; 64],
        len: usize,
    }

    impl Caption {
        pub fn new() -> Self {
            Caption {
                buf: [0; 64],
                len: 0,
            }
        }

        pub fn as_str(&self) -> &str {
            core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
        }
    }

    impl core::fmt::Write for Caption {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let end = self.len + s.len();
            if end > self.buf.len() {
                return Err(core::fmt::Error);
            }
            self.buf[self.len..end].copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
}
