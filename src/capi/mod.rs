//! The C ABI: thin wrappers that validate what C hands us, convert it to the Rust API, catch
//! every panic and report failures as status codes plus a thread-local message.
//!
//! The header `include/lipschitz.h` is generated from this module (`mod.rs` and
//! `network.rs`) by cbindgen (see build.rs).

use crate::bound::Bound;
use crate::error::Error;
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

mod network;
pub use network::*;

/// Major version of the library this header belongs to (compare with `lip_version()`).
pub const LIP_VERSION_MAJOR: u32 = 0;
/// Minor version.
pub const LIP_VERSION_MINOR: u32 = 1;
/// Patch version.
pub const LIP_VERSION_PATCH: u32 = 0;

/// Success.
pub const LIP_OK: i32 = 0;
/// A required pointer argument was NULL.
pub const LIP_ERR_NULL_POINTER: i32 = -1;
/// An argument is out of range (a zero size, rtol ≤ 0, an unknown enum value, ...).
pub const LIP_ERR_INVALID_ARGUMENT: i32 = -2;
/// A weight is NaN or infinite.
pub const LIP_ERR_NON_FINITE: i32 = -3;
/// The problem would exceed the memory limit, or sizes overflow.
pub const LIP_ERR_TOO_LARGE: i32 = -4;
/// A numerical routine failed to converge.
pub const LIP_ERR_NUMERICAL: i32 = -5;
/// A model file could not be read or used (unreadable, malformed, unsupported operator, ...).
pub const LIP_ERR_MODEL: i32 = -6;
/// An internal error (a caught panic); please report it.
pub const LIP_ERR_INTERNAL: i32 = -99;

/// Certificate codes stored in `LipBound::certificate`.
pub const LIP_CERT_EXACT: i32 = 0;
/// The upper bound follows from a theorem (circular embedding, composition rules, ...).
pub const LIP_CERT_DETERMINISTIC: i32 = 1;
/// The upper bound holds with probability at least 1 − δ (δ = 1e-6 by default).
pub const LIP_CERT_PROBABILISTIC: i32 = 2;
/// No upper bound was proven (`upper` is +infinity).
pub const LIP_CERT_NONE: i32 = 3;

/// `LipConv2d::padding_mode`: zeros outside the image.
pub const LIP_PADDING_ZEROS: u32 = 0;
/// `LipConv2d::padding_mode`: periodic extension (PyTorch `padding_mode="circular"`).
pub const LIP_PADDING_CIRCULAR: u32 = 1;

/// A 2-D convolution's shape and options (PyTorch/ONNX conventions; weights OIHW
/// `(out_channels, in_channels/groups, kernel_h, kernel_w)`, cross-correlation).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct LipConv2d {
    /// Output channels.
    pub out_channels: u32,
    /// Input channels.
    pub in_channels: u32,
    /// Kernel height.
    pub kernel_h: u32,
    /// Kernel width.
    pub kernel_w: u32,
    /// Input image height.
    pub input_h: u32,
    /// Input image width.
    pub input_w: u32,
    /// Vertical stride (≥ 1).
    pub stride_h: u32,
    /// Horizontal stride (≥ 1).
    pub stride_w: u32,
    /// Vertical dilation (≥ 1).
    pub dilation_h: u32,
    /// Horizontal dilation (≥ 1).
    pub dilation_w: u32,
    /// Groups (divides both channel counts; depthwise: `groups = in_channels`).
    pub groups: u32,
    /// Rows of padding above.
    pub pad_top: u32,
    /// Columns of padding on the left.
    pub pad_left: u32,
    /// Rows of padding below.
    pub pad_bottom: u32,
    /// Columns of padding on the right.
    pub pad_right: u32,
    /// `LIP_PADDING_ZEROS` or `LIP_PADDING_CIRCULAR`.
    pub padding_mode: u32,
}

impl LipConv2d {
    pub(crate) fn to_conv(self) -> Result<crate::conv::Conv2d, (i32, String)> {
        let mode = match self.padding_mode {
            LIP_PADDING_ZEROS => crate::conv::PaddingMode::Zeros,
            LIP_PADDING_CIRCULAR => crate::conv::PaddingMode::Circular,
            other => {
                return Err((
                    LIP_ERR_INVALID_ARGUMENT,
                    format!("padding_mode = {other}: expected 0 (zeros) or 1 (circular)"),
                ))
            }
        };
        let u = |v: u32| v as usize;
        let conv = crate::conv::Conv2d::new(
            u(self.out_channels),
            u(self.in_channels),
            [u(self.kernel_h), u(self.kernel_w)],
            [u(self.input_h), u(self.input_w)],
        )
        .stride([u(self.stride_h), u(self.stride_w)])
        .dilation([u(self.dilation_h), u(self.dilation_w)])
        .groups(u(self.groups))
        .pads([
            u(self.pad_top),
            u(self.pad_left),
            u(self.pad_bottom),
            u(self.pad_right),
        ])
        .mode(mode);
        conv.validate().map_err(lib_error)?;
        Ok(conv)
    }
}

/// A certified interval: `lower ≤ ‖W‖₂ ≤ upper`.
///
/// `lower` is attained by a vector; `upper` is proven as `certificate` says (one of the
/// `LIP_CERT_*` codes). `iterations` counts estimator steps (0 for a direct method).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct LipBound {
    /// Attained lower end.
    pub lower: f64,
    /// Proven upper end.
    pub upper: f64,
    /// Estimator steps.
    pub iterations: u32,
    /// One of the `LIP_CERT_*` codes.
    pub certificate: i32,
}

impl From<&Bound> for LipBound {
    fn from(b: &Bound) -> Self {
        LipBound {
            lower: b.lower,
            upper: b.upper,
            iterations: b.iterations,
            certificate: b.certificate.code(),
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn set_last_error(message: &str) {
    let clean: String = message.chars().filter(|&c| c != '\0').collect();
    LAST_ERROR.with(|e| *e.borrow_mut() = CString::new(clean).unwrap_or_default());
}

fn status_of(error: &Error) -> i32 {
    match error {
        Error::ZeroDimension { .. }
        | Error::LengthMismatch { .. }
        | Error::InvalidArgument { .. } => LIP_ERR_INVALID_ARGUMENT,
        Error::NonFinite { .. } => LIP_ERR_NON_FINITE,
        Error::TooLarge { .. } => LIP_ERR_TOO_LARGE,
        Error::Numerical(_) => LIP_ERR_NUMERICAL,
        Error::Model { .. } => LIP_ERR_MODEL,
    }
}

/// How many C calls are running now, on any thread. While one is, a panic (always caught at
/// the boundary and reported through `lip_last_error`) prints nothing on the host's stderr.
static ACTIVE_CALLS: AtomicUsize = AtomicUsize::new(0);

/// Installs, once, a panic hook that stays silent while a C call is running and defers to
/// the previous hook otherwise (the host's own panics, if it is a Rust program, still print).
fn install_quiet_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if ACTIVE_CALLS.load(Ordering::SeqCst) == 0 {
                previous(info);
            }
        }));
    });
}

/// Runs `body` at the C boundary: a panic becomes `LIP_ERR_INTERNAL` with its message, and is
/// not printed.
pub(crate) fn catch<T>(
    body: impl FnOnce() -> Result<T, (i32, String)>,
) -> Result<T, (i32, String)> {
    install_quiet_panic_hook();
    ACTIVE_CALLS.fetch_add(1, Ordering::SeqCst);
    let outcome = catch_unwind(AssertUnwindSafe(body));
    ACTIVE_CALLS.fetch_sub(1, Ordering::SeqCst);
    outcome.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err((
            LIP_ERR_INTERNAL,
            format!("internal error (caught panic: {message}); please report it"),
        ))
    })
}

/// Runs `body`, turning errors and panics into a status code and a last-error message.
pub(crate) fn guard(function: &str, body: impl FnOnce() -> Result<(), (i32, String)>) -> i32 {
    match catch(body) {
        Ok(()) => LIP_OK,
        Err((code, message)) => {
            set_last_error(&format!("{function}: {message}"));
            code
        }
    }
}

pub(crate) fn lib_error(e: Error) -> (i32, String) {
    (status_of(&e), e.to_string())
}

pub(crate) fn null(name: &str) -> (i32, String) {
    (LIP_ERR_NULL_POINTER, format!("{name} is NULL"))
}

/// The library version, e.g. "0.1.0". The string is static: never free it.
#[no_mangle]
pub extern "C" fn lip_version() -> *const c_char {
    static VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr().cast()
}

/// The message of the last failed call on this thread ("" if none).
///
/// The pointer stays valid until the next failing `lip_*` call on the same thread; copy the
/// string if you need it longer. Never free it.
#[no_mangle]
pub extern "C" fn lip_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Spectral norm of a dense layer `y = W x`.
///
/// `w`: `rows × cols` row-major `float` weights (rows = outputs), read only during the call.
/// `rtol`: relative tolerance (> 0), e.g. 1e-4. On success writes `*out` and returns `LIP_OK`;
/// otherwise returns a negative `LIP_ERR_*` code and sets `lip_last_error()`.
///
/// # Safety
/// `w` must point to `rows·cols` readable floats and `out` to a writable `LipBound`.
#[no_mangle]
pub unsafe extern "C" fn lip_dense_norm(
    w: *const f32,
    rows: usize,
    cols: usize,
    rtol: f64,
    out: *mut LipBound,
) -> i32 {
    let options = LipOptions {
        rtol,
        ..lip_options_default()
    };
    // SAFETY: the same contract, plus a valid options struct.
    unsafe { lip_dense_norm_ex(w, rows, cols, &options, out) }
}

/// Spectral norm of a 2-D convolution layer at the given input size.
///
/// `weight_oihw`: `out_channels·(in_channels/groups)·kernel_h·kernel_w` floats, read only
/// during the call. Circular stride-1 layers are exact (`LIP_CERT_EXACT`); zero padding gives
/// a deterministic upper bound from the circular embedding and a Lanczos lower bound.
///
/// # Safety
/// `weight_oihw` must point to that many readable floats, `conv` to a `LipConv2d` and `out`
/// to a writable `LipBound`.
#[no_mangle]
pub unsafe extern "C" fn lip_conv2d_norm(
    weight_oihw: *const f32,
    conv: *const LipConv2d,
    rtol: f64,
    out: *mut LipBound,
) -> i32 {
    let options = LipOptions {
        rtol,
        ..lip_options_default()
    };
    // SAFETY: the same contract, plus a valid options struct.
    unsafe { lip_conv2d_norm_ex(weight_oihw, conv, &options, out) }
}
