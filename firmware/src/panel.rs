//! The 240×240 ST7789 panel of a real board, through `mipidsi` over SPI. The board's HAL
//! provides the SPI device, the data/command and reset pins and a delay; everything drawn goes
//! through [`crate::screen::draw`], the same code the emulator and the host tests run.
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::OutputPin;
use embedded_hal::spi::SpiDevice;
use mipidsi::interface::SpiInterface;
use mipidsi::models::ST7789;
use mipidsi::options::ColorInversion;
use mipidsi::{Builder, Display};

/// The display driver type for a board's SPI device and pins.
pub type Panel<'b, SPI, DC, RST> = Display<SpiInterface<'b, SPI, DC>, ST7789, RST>;

/// Initializes a 240×240 ST7789 (colours inverted, as these panels expect); `buffer` is the
/// SPI interface's transfer buffer.
pub fn init<'b, SPI, DC, RST>(
    spi: SPI,
    dc: DC,
    rst: RST,
    buffer: &'b mut [u8],
    delay: &mut impl DelayNs,
) -> Option<Panel<'b, SPI, DC, RST>>
where
    SPI: SpiDevice,
    DC: OutputPin,
    RST: OutputPin,
{
    Builder::new(ST7789, SpiInterface::new(spi, dc, buffer))
        .display_size(240, 240)
        .invert_colors(ColorInversion::Inverted)
        .reset_pin(rst)
        .init(delay)
        .ok()
}
