//! The C ABI for options and whole networks: `LipOptions` and the `_ex` variants, networks
//! read from ONNX or built in code, their bounds, per-layer results and names.

use super::{
    catch, guard, lib_error, null, set_last_error, LipBound, LipConv2d, LIP_ERR_INTERNAL,
    LIP_ERR_INVALID_ARGUMENT, LIP_ERR_TOO_LARGE,
};
use crate::bound::{Method, Options};
use crate::network::ops::Role;
use crate::network::{
    analyze, Activation, Analysis, AnalysisOptions, LowerOptions, Network, NetworkBuilder, Pool2d,
};
use crate::onnx::{load_onnx, ImportOptions};
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

/// `LipOptions::method`: pick the best method for each layer.
pub const LIP_METHOD_AUTO: i32 = 0;
/// Dense SVD of the explicit matrix (small layers only).
pub const LIP_METHOD_EXACT: i32 = 1;
/// Lanczos with full reorthogonalisation.
pub const LIP_METHOD_LANCZOS: i32 = 2;
/// Block Lanczos.
pub const LIP_METHOD_BLOCK_LANCZOS: i32 = 3;
/// Power iteration (the slow reference).
pub const LIP_METHOD_POWER: i32 = 4;

/// Activation kinds for `lip_network_add_activation`.
pub const LIP_ACT_RELU: i32 = 0;
/// LeakyReLU with slope `param` (e.g. 0.01).
pub const LIP_ACT_LEAKY_RELU: i32 = 1;
/// tanh.
pub const LIP_ACT_TANH: i32 = 2;
/// Logistic sigmoid.
pub const LIP_ACT_SIGMOID: i32 = 3;
/// GELU (erf form).
pub const LIP_ACT_GELU: i32 = 4;
/// SiLU / swish `x·σ(x)`.
pub const LIP_ACT_SILU: i32 = 5;
/// ReLU6 (`Clip(0, 6)`).
pub const LIP_ACT_RELU6: i32 = 6;
/// ELU with `alpha = param`.
pub const LIP_ACT_ELU: i32 = 7;
/// Softplus.
pub const LIP_ACT_SOFTPLUS: i32 = 8;

/// Options for the `_ex` functions. Start from `lip_options_default()` and change fields.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LipOptions {
    /// Relative tolerance: stop once `upper ≤ lower·(1 + rtol)` (> 0; default 1e-4).
    pub rtol: f64,
    /// Iteration cap per layer (default 5000).
    pub max_iterations: u32,
    /// Time cap per layer in seconds; 0 = none. The interval reached is reported.
    pub time_limit_seconds: f64,
    /// Seed of every random start (results are deterministic for a seed).
    pub seed: u64,
    /// Worker threads for this call; 0 = all cores (the global pool).
    pub threads: u32,
    /// One of the `LIP_METHOD_*` codes.
    pub method: i32,
    /// Memory cap in bytes for kernel spectra, Krylov bases and activations (default 2 GiB).
    pub memory_limit_bytes: u64,
    /// Random inputs for the network lower-bound search; 0 skips the search (lower = 0).
    pub lower_samples: u32,
}

/// The default options (rtol 1e-4, all cores, 2 GiB, 3 lower-bound samples).
#[no_mangle]
pub extern "C" fn lip_options_default() -> LipOptions {
    let o = Options::default();
    LipOptions {
        rtol: o.rtol,
        max_iterations: o.max_iterations,
        time_limit_seconds: 0.0,
        seed: o.seed,
        threads: 0,
        method: LIP_METHOD_AUTO,
        memory_limit_bytes: o.memory_limit as u64,
        lower_samples: LowerOptions::default().samples as u32,
    }
}

impl LipOptions {
    fn to_options(self) -> Result<Options, (i32, String)> {
        let method = match self.method {
            LIP_METHOD_AUTO => Method::Auto,
            LIP_METHOD_EXACT => Method::Exact,
            LIP_METHOD_LANCZOS => Method::Lanczos,
            LIP_METHOD_BLOCK_LANCZOS => Method::BlockLanczos,
            LIP_METHOD_POWER => Method::Power,
            other => {
                return Err((
                    LIP_ERR_INVALID_ARGUMENT,
                    format!(
                    "method = {other}: expected one of LIP_METHOD_AUTO..LIP_METHOD_POWER (0..4)"
                ),
                ))
            }
        };
        let time_limit = if self.time_limit_seconds == 0.0 {
            None
        } else {
            crate::bound::time_limit_from_secs(self.time_limit_seconds).map_err(lib_error)?
        };
        if self.threads != 0 {
            crate::bound::check_threads(self.threads as usize).map_err(lib_error)?;
        }
        let opts = Options {
            rtol: self.rtol,
            max_iterations: self.max_iterations,
            time_limit,
            seed: self.seed,
            method,
            memory_limit: usize::try_from(self.memory_limit_bytes).unwrap_or(usize::MAX),
            ..Options::default()
        };
        opts.validate().map_err(lib_error)?;
        Ok(opts)
    }
}

/// Reads options from C (NULL = defaults).
unsafe fn read_options(options: *const LipOptions) -> Result<LipOptions, (i32, String)> {
    if options.is_null() {
        Ok(lip_options_default())
    } else {
        // SAFETY: non-null; the caller guarantees it points to a LipOptions.
        Ok(unsafe { options.read() })
    }
}

/// Runs `f` on a pool of `threads` workers (0: the global pool).
fn with_threads<T: Send>(
    threads: u32,
    f: impl FnOnce() -> Result<T, (i32, String)> + Send,
) -> Result<T, (i32, String)> {
    if threads == 0 {
        return f();
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads as usize)
        .build()
        .map_err(|e| {
            (
                LIP_ERR_INTERNAL,
                format!("cannot start {threads} threads: {e}"),
            )
        })?;
    pool.install(f)
}

/// [`super::lip_dense_norm`] with options (`options` may be NULL for the defaults).
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
    guard("lip_dense_norm_ex", || {
        if out.is_null() {
            return Err(null("out"));
        }
        let o = unsafe { read_options(options) }?;
        let opts = o.to_options()?;
        let weights = unsafe { dense_weights(w, rows, cols, opts.memory_limit) }?;
        let bound = with_threads(o.threads, || {
            crate::dense_norm(weights, rows, cols, &opts).map_err(lib_error)
        })?;
        // SAFETY: non-null, writable by contract.
        unsafe { out.write(LipBound::from(&bound)) };
        Ok(())
    })
}

/// [`super::lip_conv2d_norm`] with options (`options` may be NULL for the defaults).
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
    guard("lip_conv2d_norm_ex", || {
        if out.is_null() {
            return Err(null("out"));
        }
        if conv.is_null() {
            return Err(null("conv"));
        }
        if weight_oihw.is_null() {
            return Err(null("weight_oihw"));
        }
        let o = unsafe { read_options(options) }?;
        let opts = o.to_options()?;
        // SAFETY: non-null; points to a LipConv2d by contract.
        let layer = unsafe { conv.read() }.to_conv()?;
        // SAFETY: weight_len() readable floats by contract.
        let weights = unsafe {
            floats(
                weight_oihw,
                layer.weight_len(),
                "weight_oihw",
                opts.memory_limit,
            )
        }?;
        let result = with_threads(o.threads, || {
            crate::conv::conv2d_norm(weights, &layer, crate::conv::ConvMethod::Auto, &opts)
                .map_err(lib_error)
        })?;
        // SAFETY: non-null, writable by contract.
        unsafe { out.write(LipBound::from(&result.bound)) };
        Ok(())
    })
}

/// A network (read from ONNX or built in code) and its most recent analysis.
///
/// Opaque to C. Building functions (`lip_network_add_*`) must not run concurrently with
/// anything else on the same handle; the query functions may be called from several threads
/// on one handle (they serialise on an internal lock), and different handles are independent.
pub struct LipNetwork {
    /// The network, still open for `lip_network_add_*`.
    builder: NetworkBuilder,
    /// Names and op types of the linear layers, NUL-terminated for C.
    names: Vec<(CString, CString)>,
    /// The last analysis and the options it was made with.
    cache: Mutex<Option<(LipOptions, Analysis)>>,
}

impl LipNetwork {
    fn new(builder: NetworkBuilder) -> Self {
        let mut n = LipNetwork {
            builder,
            names: Vec::new(),
            cache: Mutex::new(None),
        };
        n.refresh();
        n
    }

    /// Recomputes the layer names after a change and drops the cached analysis.
    fn refresh(&mut self) {
        let net = self.builder.network();
        let live = net.live_nodes();
        self.names = net
            .nodes()
            .iter()
            .enumerate()
            .filter(|(k, n)| live[*k] && n.op.role() == Role::Layer)
            .map(|(_, n)| (c_string(&n.name), c_string(&n.kind)))
            .collect();
        if let Ok(mut c) = self.cache.lock() {
            *c = None;
        }
    }

    fn analysis(&self, o: &LipOptions) -> Result<Analysis, (i32, String)> {
        // Validated first: invalid options are an error even when an analysis is cached.
        let opts = o.to_options()?;
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| (LIP_ERR_INTERNAL, "network lock poisoned".to_string()))?;
        // Reused only for exactly the same options (every field: limits change results).
        if let Some((k, a)) = cache.as_ref() {
            if k == o {
                return Ok(a.clone());
            }
        }
        let lower = (o.lower_samples > 0).then(|| LowerOptions {
            samples: o.lower_samples as usize,
            seed: o.seed,
            memory_limit: opts.memory_limit,
            ..LowerOptions::default()
        });
        let analysis = AnalysisOptions {
            layer: opts,
            lower,
            merge_linear_runs: true,
        };
        let a = with_threads(o.threads, || {
            analyze(self.builder.network(), &analysis, &mut |_| {}).map_err(lib_error)
        })?;
        *cache = Some((*o, a.clone()));
        Ok(a)
    }

    /// Runs one builder step, then refreshes the names and drops the cached analysis.
    fn build<T>(
        &mut self,
        step: impl FnOnce(&mut NetworkBuilder) -> crate::Result<T>,
    ) -> Result<(), (i32, String)> {
        step(&mut self.builder).map_err(lib_error)?;
        self.refresh();
        Ok(())
    }

    fn network(&self) -> &Network {
        self.builder.network()
    }
}

fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// Runs `body` for functions that return a pointer: NULL (and a message) on failure.
fn guard_ptr<T>(function: &str, body: impl FnOnce() -> Result<*mut T, (i32, String)>) -> *mut T {
    match catch(body) {
        Ok(p) => p,
        Err((_, message)) => {
            set_last_error(&format!("{function}: {message}"));
            std::ptr::null_mut()
        }
    }
}

unsafe fn shape_from(shape: *const i64, ndim: usize) -> Result<Option<Vec<i64>>, (i32, String)> {
    if ndim == 0 {
        return Ok(None);
    }
    if shape.is_null() {
        return Err(null("input_shape"));
    }
    if ndim > 8 {
        return Err((
            LIP_ERR_INVALID_ARGUMENT,
            format!("ndim = {ndim}: at most 8 dimensions"),
        ));
    }
    // SAFETY: non-null, `ndim` readable values by contract.
    Ok(Some(
        unsafe { std::slice::from_raw_parts(shape, ndim) }.to_vec(),
    ))
}

/// Reads an ONNX model (external data is looked up beside it).
///
/// `input_shape` (`ndim` values, e.g. {1, 3, 224, 224}) is needed for models with dynamic
/// dimensions and overrides the declared shape otherwise; pass NULL and 0 to use the model's.
/// Returns NULL on failure, with the reason in `lip_last_error()`. Free with
/// `lip_network_free`.
///
/// # Safety
/// `path` is a NUL-terminated string; `input_shape` points to `ndim` values or is NULL.
#[no_mangle]
pub unsafe extern "C" fn lip_network_from_onnx(
    path: *const c_char,
    input_shape: *const i64,
    ndim: usize,
) -> *mut LipNetwork {
    guard_ptr("lip_network_from_onnx", || {
        if path.is_null() {
            return Err(null("path"));
        }
        // SAFETY: non-null, NUL-terminated by contract.
        let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
        let path = path_from_bytes(bytes)?;
        let shape = unsafe { shape_from(input_shape, ndim) }?;
        let opts = ImportOptions {
            input_shape: shape,
            ..ImportOptions::default()
        };
        let net = load_onnx(&path, &opts).map_err(lib_error)?;
        Ok(register(LipNetwork::new(NetworkBuilder::from_network(net))))
    })
}

#[cfg(unix)]
fn path_from_bytes(bytes: &[u8]) -> Result<std::path::PathBuf, (i32, String)> {
    use std::os::unix::ffi::OsStrExt;
    Ok(std::path::PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
}

#[cfg(not(unix))]
fn path_from_bytes(bytes: &[u8]) -> Result<std::path::PathBuf, (i32, String)> {
    std::str::from_utf8(bytes)
        .map(std::path::PathBuf::from)
        .map_err(|_| (LIP_ERR_INVALID_ARGUMENT, "path is not UTF-8".to_string()))
}

/// Starts a network built in code, with the given input shape ({1, C, H, W} for images,
/// {1, F} for vectors). Add layers with the `lip_network_add_*` functions; each reads the
/// output of the previous one. Returns NULL on failure.
///
/// # Safety
/// `input_shape` points to `ndim` values.
#[no_mangle]
pub unsafe extern "C" fn lip_network_new(input_shape: *const i64, ndim: usize) -> *mut LipNetwork {
    guard_ptr("lip_network_new", || {
        let shape = unsafe { shape_from(input_shape, ndim) }?
            .ok_or((LIP_ERR_INVALID_ARGUMENT, "ndim must be ≥ 1".to_string()))?;
        if shape.iter().any(|&d| d <= 0) {
            return Err((
                LIP_ERR_INVALID_ARGUMENT,
                format!("input_shape {shape:?} has a dimension ≤ 0"),
            ));
        }
        let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        let net = NetworkBuilder::new("network", &dims).map_err(lib_error)?;
        Ok(register(LipNetwork::new(net)))
    })
}

/// Addresses of the live network handles. Every entry point checks its handle here before
/// dereferencing it, so a freed (or never allocated) pointer gets an error instead of a crash,
/// and a second `lip_network_free` is a no-op. (A freed address that the allocator hands to a
/// new network is live again: that case cannot be told apart.)
static LIVE_HANDLES: Mutex<std::collections::BTreeSet<usize>> =
    Mutex::new(std::collections::BTreeSet::new());

fn register(net: LipNetwork) -> *mut LipNetwork {
    let raw = Box::into_raw(Box::new(net));
    if let Ok(mut live) = LIVE_HANDLES.lock() {
        live.insert(raw as usize);
    }
    raw
}

fn is_live(net: *const LipNetwork) -> bool {
    LIVE_HANDLES
        .lock()
        .map(|live| live.contains(&(net as usize)))
        .unwrap_or(false)
}

fn not_live() -> (i32, String) {
    (
        LIP_ERR_INVALID_ARGUMENT,
        "net is not a live network handle (already freed, or not from lip_network_new / \
         lip_network_from_onnx)"
            .to_string(),
    )
}

/// Frees a network. NULL is a no-op, and so is a handle that is not live (freed already):
/// the second free of a double free is ignored, with a message in `lip_last_error()`. The
/// handle and every string obtained from it are invalid afterwards.
///
/// # Safety
/// `net` is NULL or a pointer obtained from `lip_network_from_onnx` / `lip_network_new`, not
/// in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn lip_network_free(net: *mut LipNetwork) {
    if net.is_null() {
        return;
    }
    let removed = LIVE_HANDLES
        .lock()
        .map(|mut live| live.remove(&(net as usize)))
        .unwrap_or(false);
    if !removed {
        super::set_last_error(&format!("lip_network_free: {}", not_live().1));
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: a live handle from Box::into_raw (it was registered, now removed).
        drop(unsafe { Box::from_raw(net) });
    }));
}

unsafe fn handle<'a>(net: *const LipNetwork) -> Result<&'a LipNetwork, (i32, String)> {
    if net.is_null() {
        return Err(null("net"));
    }
    if !is_live(net) {
        return Err(not_live());
    }
    // SAFETY: a registered handle is a live Box, by the registry.
    unsafe { net.as_ref() }.ok_or_else(|| null("net"))
}

unsafe fn handle_mut<'a>(net: *mut LipNetwork) -> Result<&'a mut LipNetwork, (i32, String)> {
    if net.is_null() {
        return Err(null("net"));
    }
    if !is_live(net) {
        return Err(not_live());
    }
    // SAFETY: a registered handle is a live Box; not shared during building, by contract.
    unsafe { net.as_mut() }.ok_or_else(|| null("net"))
}

/// The `n` floats behind `p`. A count no real buffer can have is refused before anything is
/// read: more bytes than `isize::MAX` (no allocation is that large; a `size_t` of −1 lands
/// here) or than `memory_limit` (the array is copied or analysed under that limit).
unsafe fn floats<'a>(
    p: *const f32,
    n: usize,
    what: &str,
    memory_limit: usize,
) -> Result<&'a [f32], (i32, String)> {
    if p.is_null() {
        return Err(null(what));
    }
    let bytes = n as u128 * 4;
    if bytes > isize::MAX as u128 || bytes > memory_limit as u128 {
        return Err((
            LIP_ERR_TOO_LARGE,
            format!(
                "{what}: {n} floats ({bytes} bytes) exceed the memory limit of {memory_limit} \
                 bytes; refused before reading"
            ),
        ));
    }
    // SAFETY: `n` readable floats by contract, and n·4 ≤ isize::MAX as from_raw_parts needs.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// The memory limit of the builder functions, which take no options: the default's.
fn builder_memory_limit() -> usize {
    Options::default().memory_limit
}

/// The `rows × cols` weights behind `w`, once the sizes (positive, no overflow) and the
/// pointer are checked.
unsafe fn dense_weights<'a>(
    w: *const f32,
    rows: usize,
    cols: usize,
    memory_limit: usize,
) -> Result<&'a [f32], (i32, String)> {
    let len = rows.checked_mul(cols).ok_or((
        LIP_ERR_TOO_LARGE,
        format!("rows·cols = {rows}·{cols} overflows size_t"),
    ))?;
    if rows == 0 || cols == 0 {
        return Err((
            LIP_ERR_INVALID_ARGUMENT,
            format!("rows and cols must be positive, got {rows}×{cols}"),
        ));
    }
    // SAFETY: the caller guarantees `w` points to rows·cols floats (or is NULL, refused).
    unsafe { floats(w, len, "w", memory_limit) }
}

/// Appends a dense layer `y = W x + b` on the last axis: `w` is `rows × cols` row-major
/// (rows = outputs), `bias` has `rows` entries or is NULL. The arrays are copied.
///
/// # Safety
/// `net` is a live handle; `w` points to rows·cols floats; `bias` is NULL or has `rows`.
#[no_mangle]
pub unsafe extern "C" fn lip_network_add_dense(
    net: *mut LipNetwork,
    w: *const f32,
    rows: usize,
    cols: usize,
    bias: *const f32,
) -> i32 {
    guard("lip_network_add_dense", || {
        let n = unsafe { handle_mut(net) }?;
        let weight = unsafe { dense_weights(w, rows, cols, builder_memory_limit()) }?.to_vec();
        let bias = if bias.is_null() {
            None
        } else {
            Some(unsafe { floats(bias, rows, "bias", builder_memory_limit()) }?.to_vec())
        };
        n.build(|b| b.dense(weight, rows, cols, bias))
    })
}

/// Appends a conv layer. `conv` must describe the current tensor (channels, height, width);
/// `bias` has `out_channels` entries or is NULL. The arrays are copied.
///
/// # Safety
/// `net` is a live handle; `weight_oihw` has the conv's weight count; `bias` NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn lip_network_add_conv2d(
    net: *mut LipNetwork,
    weight_oihw: *const f32,
    conv: *const LipConv2d,
    bias: *const f32,
) -> i32 {
    guard("lip_network_add_conv2d", || {
        let n = unsafe { handle_mut(net) }?;
        if conv.is_null() {
            return Err(null("conv"));
        }
        let layer = unsafe { conv.read() }.to_conv()?;
        let weight = unsafe {
            floats(
                weight_oihw,
                layer.weight_len(),
                "weight_oihw",
                builder_memory_limit(),
            )
        }?
        .to_vec();
        let bias = if bias.is_null() {
            None
        } else {
            Some(
                unsafe { floats(bias, layer.out_channels, "bias", builder_memory_limit()) }?
                    .to_vec(),
            )
        };
        n.build(|b| b.conv(layer, weight, bias))
    })
}

/// Appends an elementwise activation (`LIP_ACT_*`); `param` is LeakyReLU's slope or ELU's
/// alpha and is ignored otherwise.
///
/// # Safety
/// `net` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn lip_network_add_activation(
    net: *mut LipNetwork,
    kind: i32,
    param: f64,
) -> i32 {
    guard("lip_network_add_activation", || {
        let n = unsafe { handle_mut(net) }?;
        if !param.is_finite() {
            return Err((
                LIP_ERR_INVALID_ARGUMENT,
                format!("param = {param} must be finite"),
            ));
        }
        let act = match kind {
            LIP_ACT_RELU => Activation::Relu,
            LIP_ACT_LEAKY_RELU => Activation::LeakyRelu(param),
            LIP_ACT_TANH => Activation::Tanh,
            LIP_ACT_SIGMOID => Activation::Sigmoid,
            LIP_ACT_GELU => Activation::Gelu { tanh: false },
            LIP_ACT_SILU => Activation::Silu,
            LIP_ACT_RELU6 => Activation::Clip { min: 0.0, max: 6.0 },
            LIP_ACT_ELU => Activation::Elu(param),
            LIP_ACT_SOFTPLUS => Activation::Softplus,
            other => {
                return Err((
                    LIP_ERR_INVALID_ARGUMENT,
                    format!("activation kind = {other}: expected a LIP_ACT_* code (0..8)"),
                ))
            }
        };
        n.build(|b| b.activation(act))
    })
}

/// Appends inference BatchNorm over axis 1: `y = γ(x − μ)/√(σ² + ε) + β`, each array with
/// `channels` entries (copied). It is folded into the conv or dense layer before it when the
/// network is bounded.
///
/// # Safety
/// `net` is a live handle; the four arrays hold `channels` floats each.
#[no_mangle]
pub unsafe extern "C" fn lip_network_add_batch_norm(
    net: *mut LipNetwork,
    gamma: *const f32,
    beta: *const f32,
    mean: *const f32,
    var: *const f32,
    channels: usize,
    eps: f64,
) -> i32 {
    guard("lip_network_add_batch_norm", || {
        let n = unsafe { handle_mut(net) }?;
        let shape = n.network().shapes()[n.builder.current()].clone();
        if shape.len() < 2 || shape[1] != channels {
            return Err((
                LIP_ERR_INVALID_ARGUMENT,
                format!("channels = {channels} does not match the current tensor {shape:?}"),
            ));
        }
        let [g, b, m, v] = [
            (gamma, "gamma"),
            (beta, "beta"),
            (mean, "mean"),
            (var, "var"),
        ]
        .map(|(p, name)| unsafe { floats(p, channels, name, builder_memory_limit()) });
        let (g, b, m, v) = (g?, b?, m?, v?);
        let [g, b, m, v] = [g, b, m, v].map(|p| p.iter().map(|&x| x as f64).collect::<Vec<_>>());
        n.build(|net| net.batch_norm(&g, &b, &m, &v, eps))
    })
}

/// Appends 2-D pooling on (1, C, H, W): `max = 1` for max pooling, 0 for average pooling
/// (padding excluded from the average); square `kernel`, `stride`, symmetric `pad`.
///
/// # Safety
/// `net` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn lip_network_add_pool(
    net: *mut LipNetwork,
    max: i32,
    kernel: u32,
    stride: u32,
    pad: u32,
) -> i32 {
    guard("lip_network_add_pool", || {
        let n = unsafe { handle_mut(net) }?;
        let (k, s, p) = (kernel as usize, stride as usize, pad as usize);
        let pool = Pool2d {
            kernel: [k, k],
            stride: [s, s],
            pads: [p; 4],
            dilation: [1, 1],
            ceil_mode: false,
        };
        match max {
            1 => n.build(|b| b.max_pool(pool)),
            0 => n.build(|b| b.avg_pool(pool, false)),
            other => Err((
                LIP_ERR_INVALID_ARGUMENT,
                format!("max = {other}: expected 0 or 1"),
            )),
        }
    })
}

/// Appends global average pooling and flattening: (1, C, H, W) → (1, C).
///
/// # Safety
/// `net` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn lip_network_add_global_avg_pool(net: *mut LipNetwork) -> i32 {
    guard("lip_network_add_global_avg_pool", || {
        let n = unsafe { handle_mut(net) }?;
        n.build(|b| b.global_avg_pool())
    })
}

/// Appends a flatten: (1, …) → (1, n).
///
/// # Safety
/// `net` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn lip_network_add_flatten(net: *mut LipNetwork) -> i32 {
    guard("lip_network_add_flatten", || {
        let n = unsafe { handle_mut(net) }?;
        n.build(|b| b.flatten())
    })
}

/// Writes the id of the current tensor to `*id`, to be added back later with
/// `lip_network_add_residual` (the start of a residual block).
///
/// # Safety
/// `net` is a live handle and `id` writable.
#[no_mangle]
pub unsafe extern "C" fn lip_network_checkpoint(net: *const LipNetwork, id: *mut usize) -> i32 {
    guard("lip_network_checkpoint", || {
        let n = unsafe { handle(net) }?;
        if id.is_null() {
            return Err(null("id"));
        }
        unsafe { id.write(n.builder.current()) };
        Ok(())
    })
}

/// Appends `current + tensor(id)` (a residual connection; the shapes must be equal).
///
/// # Safety
/// `net` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn lip_network_add_residual(net: *mut LipNetwork, id: usize) -> i32 {
    guard("lip_network_add_residual", || {
        let n = unsafe { handle_mut(net) }?;
        n.build(|b| b.add(id))
    })
}

/// Number of linear layers (Conv, Gemm, MatMul) that `lip_network_layer_bound` can report;
/// 0 for NULL or a handle that is not live.
///
/// # Safety
/// `net` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn lip_network_layer_count(net: *const LipNetwork) -> usize {
    catch_unwind(AssertUnwindSafe(|| {
        unsafe { handle(net) }.map_or(0, |n| n.names.len())
    }))
    .unwrap_or(0)
}

/// Name of linear layer `i` (NUL-terminated, owned by the handle: valid until the next
/// builder call or `lip_network_free`). NULL if `i` is out of range.
///
/// # Safety
/// `net` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn lip_network_layer_name(net: *const LipNetwork, i: usize) -> *const c_char {
    unsafe { layer_label(net, i, 0) }
}

/// Name (`which = 0`) or operator (`1`) of linear layer `i` of a live handle; NULL otherwise.
unsafe fn layer_label(net: *const LipNetwork, i: usize, which: usize) -> *const c_char {
    unsafe { handle(net) }
        .ok()
        .and_then(|n| n.names.get(i))
        .map_or(std::ptr::null(), |(name, op)| [name, op][which].as_ptr())
}

/// Operator of linear layer `i` ("Conv", "Gemm", "MatMul"); same lifetime as the name.
///
/// # Safety
/// `net` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn lip_network_layer_op(net: *const LipNetwork, i: usize) -> *const c_char {
    unsafe { layer_label(net, i, 1) }
}

/// The network's bounds: `upper` proven (composition along the graph, `certificate` says
/// how), `lower` attained by a pair of inputs (the empirical search; 0 when
/// `lower_samples` is 0). `iterations` is the number of linear layers. The analysis is cached
/// in the handle, so `lip_network_layer_bound` with the same options costs nothing more.
///
/// # Safety
/// `net` is a live handle; `options` NULL or valid; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn lip_network_bound_ex(
    net: *const LipNetwork,
    options: *const LipOptions,
    out: *mut LipBound,
) -> i32 {
    guard("lip_network_bound", || {
        let n = unsafe { handle(net) }?;
        if out.is_null() {
            return Err(null("out"));
        }
        let o = unsafe { read_options(options) }?;
        let a = n.analysis(&o)?;
        let b = LipBound {
            lower: a.network.lower.unwrap_or(0.0),
            upper: a.network.upper,
            iterations: a.layers.len() as u32,
            certificate: a.network.certificate_kind.code(),
        };
        unsafe { out.write(b) };
        Ok(())
    })
}

/// [`lip_network_bound_ex`] with default options and the given `rtol`.
///
/// # Safety
/// As `lip_network_bound_ex`.
#[no_mangle]
pub unsafe extern "C" fn lip_network_bound(
    net: *const LipNetwork,
    rtol: f64,
    out: *mut LipBound,
) -> i32 {
    let o = LipOptions {
        rtol,
        ..lip_options_default()
    };
    unsafe { lip_network_bound_ex(net, &o, out) }
}

/// Linear layer `i`'s certified interval (BatchNorm and constant scales folded in).
///
/// # Safety
/// `net` is a live handle; `options` NULL or valid; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn lip_network_layer_bound_ex(
    net: *const LipNetwork,
    i: usize,
    options: *const LipOptions,
    out: *mut LipBound,
) -> i32 {
    guard("lip_network_layer_bound", || {
        let n = unsafe { handle(net) }?;
        if out.is_null() {
            return Err(null("out"));
        }
        if i >= n.names.len() {
            return Err((
                LIP_ERR_INVALID_ARGUMENT,
                format!(
                    "layer index {i} out of range (the network has {} linear layers)",
                    n.names.len()
                ),
            ));
        }
        let o = unsafe { read_options(options) }?;
        let a = n.analysis(&o)?;
        unsafe { out.write(LipBound::from(&a.layers[i].bound)) };
        Ok(())
    })
}

/// [`lip_network_layer_bound_ex`] with default options and the given `rtol`.
///
/// # Safety
/// As `lip_network_layer_bound_ex`.
#[no_mangle]
pub unsafe extern "C" fn lip_network_layer_bound(
    net: *const LipNetwork,
    i: usize,
    rtol: f64,
    out: *mut LipBound,
) -> i32 {
    let o = LipOptions {
        rtol,
        ..lip_options_default()
    };
    unsafe { lip_network_layer_bound_ex(net, i, &o, out) }
}
