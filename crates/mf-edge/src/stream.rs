//! `paint --stream`: camera-art on a stream of frames. Frames come in as ffmpeg writes them
//! (`-f rawvideo` grey or RGB of a fixed size, or `-f image2pipe` PNGs), each is fitted to the
//! model, noised to the strength, mapped back in one step and written out at its own size and
//! format, one frame at a time, so frames already written stay valid when a later one fails.
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use image::{DynamicImage, GrayImage, RgbImage};
use mf_core::card::ModelCard;

use crate::backends::Backend;
use crate::images::{self, MAX_PHOTO_BYTES};
use crate::sampler;

/// Pixel layouts of raw frames (ffmpeg's `-pix_fmt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PixelFormat {
    /// One byte per pixel.
    Gray,
    /// Three bytes per pixel, R G B.
    Rgb24,
}

impl PixelFormat {
    /// Bytes per pixel.
    pub fn channels(self) -> usize {
        match self {
            PixelFormat::Gray => 1,
            PixelFormat::Rgb24 => 3,
        }
    }
}

/// How frames are framed on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFormat {
    /// Raw frames of a fixed size, back to back.
    Raw {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Pixel layout.
        pixels: PixelFormat,
    },
    /// Whole PNG files, back to back.
    Png,
}

/// The largest side of a raw frame.
pub const MAX_SIDE: u32 = 16384;

/// Parses `--size WxH` (each side 1 to [`MAX_SIDE`]).
pub fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let accepted = format!("WxH with each side 1 to {MAX_SIDE}, e.g. 128x128");
    let (w, h) = text
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{text:?} is not a size ({accepted})"))?;
    let side = |s: &str| {
        s.trim()
            .parse::<u32>()
            .ok()
            .filter(|v| (1..=MAX_SIDE).contains(v))
            .ok_or_else(|| format!("{text:?} is not a size ({accepted})"))
    };
    Ok((side(w)?, side(h)?))
}

/// Checks that a frame of `width × height × channels` bytes is at most [`MAX_PHOTO_BYTES`]
/// (what a photo may have), before anything of that size is allocated.
pub fn check_frame_size(width: u32, height: u32, channels: usize) -> anyhow::Result<usize> {
    let len = width as u64 * height as u64 * channels as u64;
    ensure!(
        len <= MAX_PHOTO_BYTES,
        "a {width}x{height} frame of {channels} channels has {len} bytes; at most \
         {MAX_PHOTO_BYTES} are accepted"
    );
    Ok(len as usize)
}

impl FrameFormat {
    /// Checks that frames of this format fit in memory ([`check_frame_size`]).
    pub fn check(self) -> anyhow::Result<()> {
        if let FrameFormat::Raw {
            width,
            height,
            pixels,
        } = self
        {
            check_frame_size(width, height, pixels.channels())?;
        }
        Ok(())
    }
}

/// Reads frames one at a time.
pub struct FrameReader<R> {
    input: R,
    format: FrameFormat,
    /// The number of the next frame, from 1.
    next: usize,
}

/// What one `read_full` got.
enum Fill {
    /// The buffer is full.
    Full,
    /// The stream ended before the first byte.
    End,
    /// The stream ended after this many bytes.
    Short(usize),
}

/// The eight bytes every PNG file starts with.
const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

impl<R: Read> FrameReader<R> {
    /// A reader of `format` frames from `input`.
    pub fn new(input: R, format: FrameFormat) -> FrameReader<R> {
        FrameReader {
            input,
            format,
            next: 1,
        }
    }

    /// Fills `buf` from the stream, telling a clean end from a short read.
    fn read_full(&mut self, buf: &mut [u8]) -> anyhow::Result<Fill> {
        let mut got = 0;
        while got < buf.len() {
            match self.input.read(&mut buf[got..]) {
                Ok(0) => {
                    return Ok(if got == 0 {
                        Fill::End
                    } else {
                        Fill::Short(got)
                    });
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot read frame {}", self.next));
                }
            }
        }
        Ok(Fill::Full)
    }

    /// The next frame, or None at the end of the stream.
    pub fn next_frame(&mut self) -> anyhow::Result<Option<DynamicImage>> {
        let n = self.next;
        let frame = match self.format {
            FrameFormat::Raw {
                width,
                height,
                pixels,
            } => {
                let len = check_frame_size(width, height, pixels.channels())?;
                let mut buf = vec![0u8; len];
                match self.read_full(&mut buf)? {
                    Fill::End => return Ok(None),
                    Fill::Short(got) => bail!(
                        "frame {n} is short: the stream ended after {got} of its {len} bytes \
                         ({width}x{height} {pixels:?})"
                    ),
                    Fill::Full => {}
                }
                match pixels {
                    PixelFormat::Gray => DynamicImage::ImageLuma8(
                        GrayImage::from_raw(width, height, buf).expect("sized"),
                    ),
                    PixelFormat::Rgb24 => DynamicImage::ImageRgb8(
                        RgbImage::from_raw(width, height, buf).expect("sized"),
                    ),
                }
            }
            FrameFormat::Png => match self.read_png()? {
                None => return Ok(None),
                Some(bytes) => image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
                    .map_err(|e| anyhow::anyhow!("frame {n} is not a valid PNG: {e}"))?,
            },
        };
        self.next += 1;
        Ok(Some(frame))
    }

    /// One PNG file's bytes: the signature, then chunks up to and including IEND.
    fn read_png(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        let n = self.next;
        let mut png = vec![0u8; 8];
        match self.read_full(&mut png)? {
            Fill::End => return Ok(None),
            Fill::Short(got) => {
                bail!("frame {n} is short: the stream ended {got} bytes into a PNG")
            }
            Fill::Full => {}
        }
        ensure!(
            png == PNG_SIGNATURE,
            "frame {n} does not start with the PNG signature (raw frames need --size and --pix-fmt)"
        );
        loop {
            let mut head = [0u8; 8];
            if !matches!(self.read_full(&mut head)?, Fill::Full) {
                bail!("frame {n} is short: the stream ended inside the PNG, before its IEND chunk");
            }
            let len = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as u64;
            let total = png.len() as u64 + 8 + len + 4;
            ensure!(
                total <= MAX_PHOTO_BYTES,
                "frame {n} is larger than the {MAX_PHOTO_BYTES} bytes a frame may have"
            );
            png.extend_from_slice(&head);
            let start = png.len();
            png.resize(total as usize, 0);
            if !matches!(self.read_full(&mut png[start..])?, Fill::Full) {
                bail!("frame {n} is short: the stream ended inside a PNG chunk");
            }
            if &head[4..] == b"IEND" {
                return Ok(Some(png));
            }
        }
    }
}

/// One frame painted: fitted to the model, noised to `strength`, mapped back in one network
/// evaluation, and resized to the frame's own size (grey or RGB as the frame was).
pub fn paint_frame(
    backend: &mut dyn Backend,
    card: &ModelCard,
    frame: &DynamicImage,
    class: Option<usize>,
    strength: f32,
    seed: u64,
) -> anyhow::Result<DynamicImage> {
    let (_, h, w) = images::image_shape(&card.sample_shape)?;
    let x = images::fit(frame, &card.sample_shape)?;
    let art = sampler::paint(backend, card, &x, class, strength, seed)?;
    let small = images::to_image(&art, &card.sample_shape)?;
    let channels = if frame.color().has_color() { 3 } else { 1 };
    let (width, height) = (frame.width(), frame.height());
    let big = images::resize_pixels(
        &images::pixels_of(&small, channels),
        (w as u32, h as u32),
        channels,
        (width, height),
    )?;
    Ok(if channels == 3 {
        DynamicImage::ImageRgb8(RgbImage::from_raw(width, height, big).expect("sized"))
    } else {
        DynamicImage::ImageLuma8(GrayImage::from_raw(width, height, big).expect("sized"))
    })
}

/// [`paint_frame`] on raw pixels (`width × height` of `format`, rows top to bottom), returning
/// pixels of the same size and format: what the C API's `mfe_paint` does.
#[allow(clippy::too_many_arguments)]
pub fn paint_pixels(
    backend: &mut dyn Backend,
    card: &ModelCard,
    pixels: &[u8],
    width: u32,
    height: u32,
    format: PixelFormat,
    class: Option<usize>,
    strength: f32,
    seed: u64,
) -> anyhow::Result<Vec<u8>> {
    let len = check_frame_size(width, height, format.channels())?;
    ensure!(
        width > 0 && height > 0 && pixels.len() == len,
        "{} bytes of pixels for a {width}x{height} {format:?} image of {len} bytes",
        pixels.len()
    );
    let pixels = pixels.to_vec();
    let frame = match format {
        PixelFormat::Gray => {
            DynamicImage::ImageLuma8(GrayImage::from_raw(width, height, pixels).expect("sized"))
        }
        PixelFormat::Rgb24 => {
            DynamicImage::ImageRgb8(RgbImage::from_raw(width, height, pixels).expect("sized"))
        }
    };
    let art = paint_frame(backend, card, &frame, class, strength, seed)?;
    Ok(match format {
        PixelFormat::Gray => art.to_luma8().into_raw(),
        PixelFormat::Rgb24 => art.to_rgb8().into_raw(),
    })
}

/// Writes one painted frame in the stream's format and flushes it.
pub fn write_frame(
    out: &mut dyn Write,
    format: FrameFormat,
    frame: &DynamicImage,
    number: usize,
) -> anyhow::Result<()> {
    let bytes = match format {
        FrameFormat::Raw { pixels, .. } => match pixels {
            PixelFormat::Gray => frame.to_luma8().into_raw(),
            PixelFormat::Rgb24 => frame.to_rgb8().into_raw(),
        },
        FrameFormat::Png => {
            let mut png = Vec::new();
            frame
                .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .with_context(|| format!("cannot encode frame {number}"))?;
            png
        }
    };
    out.write_all(&bytes)
        .and_then(|()| out.flush())
        .with_context(|| format!("cannot write frame {number}"))
}

/// What a stream run did.
#[derive(Debug, Clone, Copy)]
pub struct StreamReport {
    /// Frames painted and written.
    pub frames: usize,
    /// Wall time from the first read to the last write.
    pub elapsed: Duration,
}

impl StreamReport {
    /// Frames per second over the whole run.
    pub fn fps(&self) -> f64 {
        self.frames as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Paints every frame of `input` onto `output` until the input ends; `on_frame` sees each
/// frame's number after it is written (for progress).
#[allow(clippy::too_many_arguments)]
pub fn paint_stream(
    backend: &mut dyn Backend,
    card: &ModelCard,
    format: FrameFormat,
    input: impl Read,
    output: &mut dyn Write,
    class: Option<usize>,
    strength: f32,
    seed: u64,
    mut on_frame: impl FnMut(usize),
) -> anyhow::Result<StreamReport> {
    images::image_shape(&card.sample_shape)?;
    format.check()?;
    let start = Instant::now();
    let mut reader = FrameReader::new(input, format);
    let mut frames = 0;
    while let Some(frame) = reader.next_frame()? {
        let number = frames + 1;
        let art = paint_frame(backend, card, &frame, class, strength, seed)
            .with_context(|| format!("cannot paint frame {number}"))?;
        write_frame(output, format, &art, number)?;
        frames = number;
        on_frame(frames);
    }
    Ok(StreamReport {
        frames,
        elapsed: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(width: u32, height: u32) -> FrameFormat {
        FrameFormat::Raw {
            width,
            height,
            pixels: PixelFormat::Gray,
        }
    }

    #[test]
    fn frames_larger_than_a_photo_are_refused_before_allocation() {
        let huge = FrameFormat::Raw {
            width: MAX_SIDE,
            height: MAX_SIDE,
            pixels: PixelFormat::Rgb24,
        };
        let err = huge.check().unwrap_err().to_string();
        assert!(
            err.contains("16384x16384") && err.contains("at most"),
            "{err}"
        );
        assert!(raw(MAX_SIDE, 1024).check().is_ok());
    }

    #[test]
    fn sizes_parse_and_bad_ones_name_what_is_accepted() {
        assert_eq!(parse_size("128x96"), Ok((128, 96)));
        for bad in ["128", "0x5", "5x0", "ax5", "99999x2"] {
            assert!(parse_size(bad).unwrap_err().contains("WxH"), "{bad}");
        }
    }

    #[test]
    fn raw_frames_are_split_and_a_short_one_is_named() {
        let bytes: Vec<u8> = (0..2 * 6 + 4).map(|i| i as u8).collect();
        let mut reader = FrameReader::new(bytes.as_slice(), raw(3, 2));
        let first = reader.next_frame().unwrap().unwrap();
        assert_eq!(first.to_luma8().into_raw(), [0, 1, 2, 3, 4, 5]);
        let second = reader.next_frame().unwrap().unwrap();
        assert_eq!(second.to_luma8().into_raw(), [6, 7, 8, 9, 10, 11]);
        let err = reader.next_frame().unwrap_err().to_string();
        assert!(
            err.contains("frame 3 is short") && err.contains("4 of its 6"),
            "{err}"
        );
    }

    #[test]
    fn png_frames_are_split_at_iend() {
        let mut stream = Vec::new();
        for shade in [10u8, 200] {
            let img = DynamicImage::ImageLuma8(GrayImage::from_pixel(5, 4, image::Luma([shade])));
            write_frame(&mut stream, FrameFormat::Png, &img, 1).unwrap();
        }
        let whole = stream.len();
        stream.extend_from_slice(&PNG_SIGNATURE);
        stream.extend_from_slice(&[0, 0, 0, 13, b'I', b'H']);
        let mut reader = FrameReader::new(stream.as_slice(), FrameFormat::Png);
        for shade in [10u8, 200] {
            let frame = reader.next_frame().unwrap().unwrap();
            assert_eq!((frame.width(), frame.height()), (5, 4));
            assert!(frame.to_luma8().pixels().all(|p| p.0[0] == shade));
        }
        let err = reader.next_frame().unwrap_err().to_string();
        assert!(
            err.contains("frame 3 is short"),
            "{err} (stream of {whole} bytes)"
        );
    }

    #[test]
    fn a_stream_that_is_not_png_is_named() {
        let mut reader = FrameReader::new(&b"GIF89a-not-a-png"[..], FrameFormat::Png);
        let err = reader.next_frame().unwrap_err().to_string();
        assert!(
            err.contains("frame 1") && err.contains("PNG signature"),
            "{err}"
        );
    }
}
