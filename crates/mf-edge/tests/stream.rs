//! `mf-edge paint --stream` in an ffmpeg pipe, as a camera-art app runs it: a generated clip
//! goes through as raw grey frames, raw RGB frames and PNGs, comes out with every frame, at
//! the input's size, and decodes; a broken stream is an error naming the frame, and the frames
//! before it stay whole. Needs Debian's ffmpeg (tools/setup installs it).
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const EDGE: &str = env!("CARGO_BIN_EXE_mf-edge");

/// ffmpeg's output for `args` (quiet), failing the test when ffmpeg is missing or fails.
fn ffmpeg(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-nostdin"])
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg is not installed: run tools/setup");
    if let Some(bytes) = input {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `mf-edge paint --stream` with `args` on `input`: (success, stdout, stderr).
fn paint_stream(args: &[&str], input: &[u8]) -> (bool, Vec<u8>, String) {
    let mut child = Command::new(EDGE)
        .args(["paint", "--stream", "--class", "3", "--strength", "0.7"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A two-second 128x128 test clip at 30 frames/s, in ffmpeg's raw `pix_fmt`.
fn clip(pix_fmt: &str) -> Vec<u8> {
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=128x128:rate=30",
            "-t",
            "2",
            "-f",
            "rawvideo",
            "-pix_fmt",
            pix_fmt,
            "-",
        ],
        None,
    )
}

/// Frames in a video file, counted by decoding every one.
fn decoded_frames(video: &Path) -> usize {
    let raw = ffmpeg(
        &[
            "-i",
            video.to_str().unwrap(),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            "-",
        ],
        None,
    );
    assert_eq!(raw.len() % (128 * 128), 0);
    raw.len() / (128 * 128)
}

#[test]
fn a_raw_clip_goes_through_ffmpeg_frame_for_frame() {
    let dir = tempfile::tempdir().unwrap();
    for (pix_fmt, channels) in [("gray", 1), ("rgb24", 3)] {
        let input = clip(pix_fmt);
        assert_eq!(input.len(), 60 * 128 * 128 * channels);
        let (ok, art, log) = paint_stream(&["--size", "128x128", "--pix-fmt", pix_fmt], &input);
        assert!(ok, "{log}");
        assert_eq!(
            art.len(),
            input.len(),
            "{pix_fmt}: one art frame per input frame"
        );
        assert!(
            log.contains("painted 60 frames") && log.contains("frames/s"),
            "{log}"
        );
        // The art is not the input: each frame was mapped to a digit.
        let differing = art
            .iter()
            .zip(&input)
            .filter(|(a, b)| a.abs_diff(**b) > 32)
            .count();
        assert!(
            differing > art.len() / 10,
            "{pix_fmt}: only {differing} bytes changed"
        );
        let video = dir.path().join(format!("{pix_fmt}.mp4"));
        ffmpeg(
            &[
                "-f",
                "rawvideo",
                "-pix_fmt",
                pix_fmt,
                "-s",
                "128x128",
                "-r",
                "30",
                "-i",
                "-",
                "-pix_fmt",
                "yuv420p",
                "-y",
                video.to_str().unwrap(),
            ],
            Some(&art),
        );
        assert_eq!(decoded_frames(&video), 60, "{pix_fmt}");
    }
}

#[test]
fn a_png_stream_comes_back_as_pngs_of_the_input_size() {
    let input = ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=96x64:rate=10",
            "-t",
            "1",
            "-f",
            "image2pipe",
            "-c:v",
            "png",
            "-",
        ],
        None,
    );
    let (ok, art, log) = paint_stream(&[], &input);
    assert!(ok, "{log}");
    let dir = tempfile::tempdir().unwrap();
    let pattern = dir.path().join("frame%02d.png");
    ffmpeg(
        &[
            "-f",
            "image2pipe",
            "-c:v",
            "png",
            "-i",
            "-",
            "-y",
            pattern.to_str().unwrap(),
        ],
        Some(&art),
    );
    let frames: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(frames.len(), 10, "{log}");
    let first = image::open(dir.path().join("frame01.png")).unwrap();
    assert_eq!((first.width(), first.height()), (96, 64));
}

#[test]
fn a_broken_stream_names_the_frame_and_keeps_the_frames_before_it() {
    let frame = 32 * 24;
    let mut input: Vec<u8> = (0..2 * frame).map(|i| (i % 251) as u8).collect();
    input.extend(std::iter::repeat_n(7u8, frame / 2));
    let (ok, art, log) = paint_stream(&["--size", "32x24"], &input);
    assert!(!ok);
    assert!(
        log.contains("frame 3 is short") && log.contains("384 of its 768 bytes"),
        "{log}"
    );
    assert_eq!(art.len(), 2 * frame, "the two whole frames were written");

    let (ok, art, log) = paint_stream(&[], b"\x89PNG\r\n\x1a\nnot really a png");
    assert!(!ok && art.is_empty());
    assert!(log.contains("frame 1"), "{log}");
}
