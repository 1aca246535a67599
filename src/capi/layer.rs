//! Single layers from C: `LipConv2d`, `LipBound`, and the dense and conv norm functions.

use super::handle::{guard, read, slice, Out};
use super::options::{lip_options_default, read_options, with_threads, LipOptions};
use super::status::{CResult, Failure, Status};
use crate::bound::Bound;
use crate::conv::{Conv2d, ConvMethod, PaddingMode};

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
    pub(crate) fn to_conv(self) -> CResult<Conv2d> {
        let mode = match self.padding_mode {
            LIP_PADDING_ZEROS => PaddingMode::Zeros,
            LIP_PADDING_CIRCULAR => PaddingMode::Circular,
            other => {
                return Err(Failure::invalid(format!(
                    "padding_mode = {other}: expected 0 (zeros) or 1 (circular)"
                )))
            }
        };
        let u = |v: u32| v as usize;
        let conv = Conv2d::new(
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
        conv.validate()?;
        Ok(conv)
    }
}

/// A certified interval: `lower ≤ ‖W‖₂ ≤ upper`.
///
/// `lower` is attained by a vector; `upper` is proven as `certificate` says (one of the
/// `LIP_CERT_*` codes). `iterations` counts estimator steps (0 for a direct method; for a
/// network, the steps of all its layers).
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
    unsafe { dense_norm("lip_dense_norm", w, rows, cols, &options, out) }
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
    unsafe { conv2d_norm("lip_conv2d_norm", weight_oihw, conv, &options, out) }
}

/// [`lip_dense_norm`] with options (`options` may be NULL for the defaults).
///
/// # Safety
/// As `lip_dense_norm`; `options` is NULL or points to a `LipOptions`.
#[no_mangle]
pub unsafe extern "C" fn lip_dense_norm_ex(
    w: *const f32,
    rows: usize,
    cols: usize,
    options: *const LipOptions,
    out: *mut LipBound,
) -> i32 {
    // SAFETY: the same contract.
    unsafe { dense_norm("lip_dense_norm_ex", w, rows, cols, options, out) }
}

/// [`lip_conv2d_norm`] with options (`options` may be NULL for the defaults).
///
/// # Safety
/// As `lip_conv2d_norm`; `options` is NULL or points to a `LipOptions`.
#[no_mangle]
pub unsafe extern "C" fn lip_conv2d_norm_ex(
    weight_oihw: *const f32,
    conv: *const LipConv2d,
    options: *const LipOptions,
    out: *mut LipBound,
) -> i32 {
    // SAFETY: the same contract.
    unsafe { conv2d_norm("lip_conv2d_norm_ex", weight_oihw, conv, options, out) }
}

/// The dense layer functions, reporting errors under `function`'s name.
///
/// # Safety
/// As `lip_dense_norm_ex`.
unsafe fn dense_norm(
    function: &str,
    w: *const f32,
    rows: usize,
    cols: usize,
    options: *const LipOptions,
    out: *mut LipBound,
) -> i32 {
    guard(function, || {
        // SAFETY: `out` is NULL or writable, `options` NULL or valid, by contract.
        let (out, o) = unsafe { (Out::new(out, "out")?, read_options(options)) };
        let opts = o.to_options()?;
        // SAFETY: `w` is NULL or points to rows·cols floats, by contract.
        let weights = unsafe { dense_weights(w, rows, cols, opts.memory_limit) }?;
        let bound = with_threads(o.threads, || {
            Ok(crate::dense_norm(weights, rows, cols, &opts)?)
        })?;
        out.put(LipBound::from(&bound));
        Ok(())
    })
}

/// The conv layer functions, reporting errors under `function`'s name.
///
/// # Safety
/// As `lip_conv2d_norm_ex`.
unsafe fn conv2d_norm(
    function: &str,
    weight_oihw: *const f32,
    conv: *const LipConv2d,
    options: *const LipOptions,
    out: *mut LipBound,
) -> i32 {
    guard(function, || {
        // SAFETY: `out` is NULL or writable, `conv` NULL or valid, by contract.
        let (out, layer) = unsafe { (Out::new(out, "out")?, read(conv, "conv")?) };
        if weight_oihw.is_null() {
            return Err(Failure::null("weight_oihw"));
        }
        // SAFETY: `options` is NULL or valid, by contract.
        let o = unsafe { read_options(options) };
        let opts = o.to_options()?;
        let layer = layer.to_conv()?;
        // SAFETY: the weights hold weight_len() floats, by contract.
        let weights = unsafe {
            slice(
                weight_oihw,
                layer.weight_len(),
                "weight_oihw",
                opts.memory_limit,
            )
        }?;
        let result = with_threads(o.threads, || {
            Ok(crate::conv::conv2d_norm(
                weights,
                &layer,
                ConvMethod::Auto,
                &opts,
            )?)
        })?;
        out.put(LipBound::from(&result.bound));
        Ok(())
    })
}

/// The `rows × cols` weights behind `w`, once the sizes (positive, no overflow) and the
/// pointer are checked.
///
/// # Safety
/// `w` is NULL or points to `rows·cols` floats.
pub(crate) unsafe fn dense_weights<'a>(
    w: *const f32,
    rows: usize,
    cols: usize,
    memory_limit: usize,
) -> CResult<&'a [f32]> {
    let len = rows.checked_mul(cols).ok_or_else(|| {
        Failure::new(
            Status::TooLarge,
            format!("rows·cols = {rows}·{cols} overflows size_t"),
        )
    })?;
    if rows == 0 || cols == 0 {
        return Err(Failure::invalid(format!(
            "rows and cols must be positive, got {rows}×{cols}"
        )));
    }
    // SAFETY: the caller's contract, passed on.
    unsafe { slice(w, len, "w", memory_limit) }
}
