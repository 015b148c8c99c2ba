//! # mf-edge's C API
//!
//! One-step MeanFlow generation for apps in any language with a C FFI (Android NDK, iOS,
//! C/C++): open a model from a path, from bytes or the embedded default, generate images or
//! paint a photo into the caller's buffer, and read the model's card. Built as a `cdylib`
//! (`libmf_edge_capi.so`) and a `staticlib` (`libmf_edge_capi.a`); the header
//! `include/mf_edge.h` is generated from this file by cbindgen (a test fails when it drifts).
//!
//! Every function returns an [`MfeStatus`]; on anything but `MFE_STATUS_OK`,
//! [`mfe_last_error`] gives a message naming the problem and what is accepted. No panic
//! crosses the boundary, and a bad argument (a null pointer, a short buffer, a class out of
//! range) is an error code, never undefined behaviour on our side. A model handle may be used
//! from one thread at a time.
//!
//! Pixels are bytes, rows top to bottom, channels interleaved (grey: 1, RGB: 3).
use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use anyhow::Context;
use mf_edge::backends::{self, Backend, BackendKind, BackendOptions};
use mf_edge::model::Model;
use mf_edge::stream::PixelFormat;
use mf_edge::{DEFAULT_MODEL, images, sampler};

/// What a call did.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfeStatus {
    /// Success.
    Ok = 0,
    /// A required pointer was null.
    NullPointer = 1,
    /// An argument is out of range (class, count, steps, strength, size, channels).
    InvalidArgument = 2,
    /// The caller's buffer is smaller than the result.
    BufferTooSmall = 3,
    /// The model could not be read or is not a MeanFlow model.
    ModelError = 4,
    /// The network failed to run.
    RuntimeError = 5,
    /// An internal error (a bug): caught before it crossed the boundary.
    InternalError = 6,
}

/// An open model with the native engine ready to run it. Opaque to C.
pub struct MfeModel {
    model: Model,
    backend: Box<dyn Backend>,
}

/// The most images one `mfe_generate` makes.
const MAX_COUNT: u32 = 100_000;
/// The most network evaluations per image.
const MAX_STEPS: u32 = 1000;
/// The most model values one call holds (2 GiB of f32), as for the CLI.
const MAX_VALUES: usize = 1 << 29;

/// An error with the status it maps to.
struct Failure(MfeStatus, anyhow::Error);

/// Shorthand for building a failure.
fn fail(status: MfeStatus, error: impl Into<anyhow::Error>) -> Failure {
    Failure(status, error.into())
}

thread_local! {
    /// The message of this thread's last failure.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as this thread's last error.
fn set_error(message: String) {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

/// Runs `body`, turning a failure or a panic into a status and the last error.
fn guard(body: impl FnOnce() -> Result<(), Failure>) -> MfeStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => MfeStatus::Ok,
        Ok(Err(Failure(status, error))) => {
            set_error(format!("{error:#}"));
            status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            set_error(format!("internal error (please report it): {what}"));
            MfeStatus::InternalError
        }
    }
}

/// An invalid-argument failure with `message` unless `ok`.
fn require(ok: bool, message: impl FnOnce() -> String) -> Result<(), Failure> {
    if ok {
        Ok(())
    } else {
        Err(fail(MfeStatus::InvalidArgument, anyhow::anyhow!(message())))
    }
}

/// Checks that a pointer argument is not null.
fn non_null<T>(ptr: *const T, name: &str) -> Result<(), Failure> {
    if ptr.is_null() {
        Err(fail(
            MfeStatus::NullPointer,
            anyhow::anyhow!("{name} is null"),
        ))
    } else {
        Ok(())
    }
}

/// Sets the number of threads the native engine uses in this process (default: one per core,
/// or `MF_THREADS`). The threads start when the first model runs; afterwards only the count
/// they started with is accepted.
#[unsafe(no_mangle)]
pub extern "C" fn mfe_set_threads(threads: u32) -> MfeStatus {
    guard(|| {
        let n = threads as usize;
        if !(1..=1024).contains(&n) {
            return Err(fail(
                MfeStatus::InvalidArgument,
                anyhow::anyhow!("{threads} threads: 1 to 1024 are accepted"),
            ));
        }
        if mf_kernels::team::configure(n) || mf_kernels::team::threads() == n {
            Ok(())
        } else {
            Err(fail(
                MfeStatus::InvalidArgument,
                anyhow::anyhow!(
                    "the engine's threads already started with {} threads: call mfe_set_threads \
                     before the first model runs",
                    mf_kernels::team::threads()
                ),
            ))
        }
    })
}

/// Opens the native backend for `model` and hands the caller a handle.
fn open_model(model: Model, out: *mut *mut MfeModel) -> Result<(), Failure> {
    let opts = BackendOptions::default();
    let backend = backends::open(BackendKind::Native, &model, &opts)
        .map_err(|e| fail(MfeStatus::ModelError, e))?;
    let handle = Box::into_raw(Box::new(MfeModel { model, backend }));
    // SAFETY: the caller passed `out` non-null (checked by every caller of this function)
    // pointing at writable storage for one pointer.
    unsafe { out.write(handle) };
    Ok(())
}

/// Opens the ONNX model at `path` (a NUL-terminated UTF-8 path) and stores its handle in
/// `*out`; free it with [`mfe_model_free`].
///
/// # Safety
/// `path` must be null or a NUL-terminated string; `out` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mfe_model_open(path: *const c_char, out: *mut *mut MfeModel) -> MfeStatus {
    guard(|| {
        non_null(path, "path")?;
        non_null(out, "out")?;
        // SAFETY: `path` is non-null and the caller promises a NUL-terminated string.
        let path = unsafe { CStr::from_ptr(path) };
        let path = path.to_str().map_err(|_| {
            fail(
                MfeStatus::InvalidArgument,
                anyhow::anyhow!("path is not UTF-8 (UTF-8 paths are accepted)"),
            )
        })?;
        let model = Model::open(Path::new(path)).map_err(|e| fail(MfeStatus::ModelError, e))?;
        open_model(model, out)
    })
}

/// Opens a model from the `len` bytes of an ONNX file at `bytes` (copied; the caller keeps
/// its buffer) and stores its handle in `*out`.
///
/// # Safety
/// `bytes` must be null or readable for `len` bytes; `out` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mfe_model_open_bytes(
    bytes: *const u8,
    len: usize,
    out: *mut *mut MfeModel,
) -> MfeStatus {
    guard(|| {
        non_null(bytes, "bytes")?;
        non_null(out, "out")?;
        let limit = mf_edge::model::MAX_MODEL_BYTES;
        if len as u64 > limit {
            return Err(fail(
                MfeStatus::ModelError,
                anyhow::anyhow!("{len} bytes: a model may have at most {limit}"),
            ));
        }
        // SAFETY: `bytes` is non-null and the caller promises `len` readable bytes.
        let data = unsafe { std::slice::from_raw_parts(bytes, len) }.to_vec();
        let model = Model::from_bytes(data).map_err(|e| fail(MfeStatus::ModelError, e))?;
        open_model(model, out)
    })
}

/// Opens the default model embedded in the library (class-conditional MNIST, int8) and stores
/// its handle in `*out`.
///
/// # Safety
/// `out` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mfe_model_open_default(out: *mut *mut MfeModel) -> MfeStatus {
    guard(|| {
        non_null(out, "out")?;
        let model = Model::from_bytes(DEFAULT_MODEL.to_vec())
            .context("the embedded default model")
            .map_err(|e| fail(MfeStatus::ModelError, e))?;
        open_model(model, out)
    })
}

/// Frees a model handle (null is ignored).
///
/// # Safety
/// `model` must be null or a handle from an `mfe_model_open*` function, not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mfe_model_free(model: *mut MfeModel) {
    if !model.is_null() {
        // SAFETY: the caller promises a live handle made by Box::into_raw in `open_model`.
        drop(unsafe { Box::from_raw(model) });
    }
}

/// The model behind a handle, checked non-null.
///
/// # Safety
/// `model` must be null or a live handle used by no other thread.
unsafe fn handle<'a>(model: *mut MfeModel) -> Result<&'a mut MfeModel, Failure> {
    non_null(model, "model")?;
    // SAFETY: non-null, and the caller promises a live handle used by this thread alone.
    Ok(unsafe { &mut *model })
}

/// Writes `value` through an out-pointer, checked non-null.
///
/// # Safety
/// `ptr` must be null or writable.
unsafe fn store<T>(ptr: *mut T, value: T, name: &str) -> Result<(), Failure> {
    non_null(ptr, name)?;
    // SAFETY: non-null, and the caller promises writable storage for one T.
    unsafe { ptr.write(value) };
    Ok(())
}

/// The image shape of a model's samples.
fn image_shape(m: &MfeModel) -> Result<(usize, usize, usize), Failure> {
    images::image_shape(&m.model.card.sample_shape).map_err(|e| fail(MfeStatus::ModelError, e))
}

/// Stores the shape of one generated image: channels (1 grey, 3 RGB), height and width.
///
/// # Safety
/// `model` must be a live handle or null; the out-pointers writable or null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mfe_model_shape(
    model: *mut MfeModel,
    channels: *mut u32,
    height: *mut u32,
    width: *mut u32,
) -> MfeStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let m = unsafe { handle(model) }?;
        let (c, h, w) = image_shape(m)?;
        // SAFETY: forwarded from this function's contract (each checked non-null).
        unsafe {
            store(channels, c as u32, "channels")?;
            store(height, h as u32, "height")?;
            store(width, w as u32, "width")
        }
    })
}

/// Stores the number of classes (0 for an unconditional model).
///
/// # Safety
/// `model` must be a live handle or null; `classes` writable or null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mfe_model_classes(model: *mut MfeModel, classes: *mut u32) -> MfeStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let m = unsafe { handle(model) }?;
        let n = m.model.card.class_names.len() as u32;
        // SAFETY: forwarded from this function's contract.
        unsafe { store(classes, n, "classes") }
    })
}

/// Copies the name of `class` into `buf` (`len` bytes, NUL-terminated); a buffer shorter
/// than the name and its NUL is `MFE_STATUS_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `model` must be a live handle or null; `buf` writable for `len` bytes or null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mfe_model_class_name(
    model: *mut MfeModel,
    class: u32,
    buf: *mut c_char,
    len: usize,
) -> MfeStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let m = unsafe { handle(model) }?;
        non_null(buf, "buf")?;
        let names = &m.model.card.class_names;
        let name = names.get(class as usize).ok_or_else(|| {
            fail(
                MfeStatus::InvalidArgument,
                anyhow::anyhow!(
                    "class {class} is out of range: 0..{} are accepted",
                    names.len()
                ),
            )
        })?;
        if len < name.len() + 1 {
            return Err(fail(
                MfeStatus::BufferTooSmall,
                anyhow::anyhow!(
                    "the name of class {class} needs {} bytes, buf has {len}",
                    name.len() + 1
                ),
            ));
        }
        // SAFETY: `buf` is non-null and writable for `len` ≥ name + 1 bytes; the source is a
        // separate Rust string, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(name.as_ptr(), buf.cast::<u8>(), name.len());
            buf.add(name.len()).write(0);
        }
        Ok(())
    })
}

/// The class to condition on: `class` must be in range for a class-conditional model, and
/// -1 (unconditional) for a model without classes.
fn class_of(m: &MfeModel, class: i32) -> Result<Option<usize>, Failure> {
    let classes = m.model.card.class_names.len();
    match (classes, class) {
        (0, -1) => Ok(None),
        (0, c) => Err(fail(
            MfeStatus::InvalidArgument,
            anyhow::anyhow!("class {c}: this model is unconditional, pass -1"),
        )),
        (n, c) if c >= 0 && (c as usize) < n => Ok(Some(c as usize)),
        (n, c) => Err(fail(
            MfeStatus::InvalidArgument,
            anyhow::anyhow!("class {c} is out of range: this model takes 0..{n}"),
        )),
    }
}

/// A mutable byte buffer from the caller, checked non-null and at least `need` bytes long.
///
/// # Safety
/// `ptr` must be null or writable for `len` bytes.
unsafe fn out_buffer<'a>(
    ptr: *mut u8,
    len: usize,
    need: usize,
    name: &str,
) -> Result<&'a mut [u8], Failure> {
    non_null(ptr, name)?;
    if len < need {
        return Err(fail(
            MfeStatus::BufferTooSmall,
            anyhow::anyhow!("{name} has {len} bytes; the result needs {need}"),
        ));
    }
    // SAFETY: non-null, and the caller promises `len` ≥ `need` writable bytes.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, need) })
}

/// Generates `count` images of `class` (-1 for an unconditional model) from the noise of
/// `seed` in `steps` network evaluations (1 for one-step MeanFlow) into `pixels`:
/// `count × height × width × channels` bytes (see [`mfe_model_shape`]), the same pixels that
/// `mf-edge generate --seed S --count N --zoom 1 --out-dir` writes inside each image's border.
///
/// # Safety
/// `model` must be a live handle or null; `pixels` writable for `len` bytes or null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mfe_generate(
    model: *mut MfeModel,
    class: i32,
    seed: u64,
    count: u32,
    steps: u32,
    pixels: *mut u8,
    len: usize,
) -> MfeStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let m = unsafe { handle(model) }?;
        let class = class_of(m, class)?;
        require((1..=MAX_COUNT).contains(&count), || {
            format!("count {count}: 1 to {MAX_COUNT} are accepted")
        })?;
        require((1..=MAX_STEPS).contains(&steps), || {
            format!("steps {steps}: 1 to {MAX_STEPS} are accepted")
        })?;
        let (c, h, w) = image_shape(m)?;
        let values = (count as usize).saturating_mul(c * h * w);
        require(values <= MAX_VALUES, || {
            format!("{count} images exceed the {MAX_VALUES} values one call holds")
        })?;
        // SAFETY: forwarded from this function's contract.
        let out = unsafe { out_buffer(pixels, len, values, "pixels") }?;
        let card = &m.model.card;
        let samples = sampler::generate(
            m.backend.as_mut(),
            card,
            class,
            count as usize,
            seed,
            steps as usize,
        )
        .map_err(|e| fail(MfeStatus::RuntimeError, e))?;
        let bytes = images::interleaved_pixels(&samples, &card.sample_shape)
            .map_err(|e| fail(MfeStatus::RuntimeError, e))?;
        out.copy_from_slice(&bytes);
        Ok(())
    })
}

/// Paints a photo: `pixels` (`width × height × channels` bytes, channels 1 or 3) is fitted to
/// the model, noised to t = `strength` (in (0, 1]) with the noise of `seed`, mapped back in one
/// network evaluation toward `class` (-1 for an unconditional model), and written to `out`
/// at the photo's size and channels (`out_len` ≥ `width × height × channels`).
///
/// # Safety
/// `model` must be a live handle or null; `pixels` readable for `width × height × channels`
/// bytes or null; `out` writable for `out_len` bytes or null.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn mfe_paint(
    model: *mut MfeModel,
    pixels: *const u8,
    width: u32,
    height: u32,
    channels: u32,
    class: i32,
    strength: f32,
    seed: u64,
    out: *mut u8,
    out_len: usize,
) -> MfeStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let m = unsafe { handle(model) }?;
        let class = class_of(m, class)?;
        non_null(pixels, "pixels")?;
        let format = match channels {
            1 => PixelFormat::Gray,
            3 => PixelFormat::Rgb24,
            c => {
                return Err(fail(
                    MfeStatus::InvalidArgument,
                    anyhow::anyhow!("{c} channels: 1 (grey) or 3 (RGB) are accepted"),
                ));
            }
        };
        let side = mf_edge::stream::MAX_SIDE;
        require(
            (1..=side).contains(&width) && (1..=side).contains(&height),
            || format!("a {width}x{height} image: each side 1 to {side} is accepted"),
        )?;
        require(strength > 0.0 && strength <= 1.0, || {
            format!("strength {strength}: (0, 1] is accepted")
        })?;
        let need = mf_edge::stream::check_frame_size(width, height, channels as usize)
            .map_err(|e| fail(MfeStatus::InvalidArgument, e))?;
        // SAFETY: `pixels` is non-null and the caller promises `need` readable bytes.
        let input = unsafe { std::slice::from_raw_parts(pixels, need) };
        // SAFETY: forwarded from this function's contract.
        let dest = unsafe { out_buffer(out, out_len, need, "out") }?;
        let art = mf_edge::stream::paint_pixels(
            m.backend.as_mut(),
            &m.model.card,
            input,
            width,
            height,
            format,
            class,
            strength,
            seed,
        )
        .map_err(|e| fail(MfeStatus::RuntimeError, e))?;
        dest.copy_from_slice(&art);
        Ok(())
    })
}

/// The message of this thread's last failure ("" if none), valid until the next call on
/// this thread.
#[unsafe(no_mangle)]
pub extern "C" fn mfe_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// This library's version, e.g. "0.1.0".
#[unsafe(no_mangle)]
pub extern "C" fn mfe_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
