//! Networks from C: reading ONNX or starting a network to build, the handle's lifetime,
//! and the queries (layer names, layer bounds, the network bound). The builder functions
//! are in `builder.rs`.

use super::handle::{guard, guard_value, network, register, slice, Out};
use super::layer::LipBound;
use super::options::{lip_options_default, read_options, with_threads, LipOptions};
use super::status::{CResult, Failure, Status};
use crate::network::ops::Role;
use crate::network::{analyze, Analysis, Network, NetworkBuilder, NetworkMethod};
use crate::onnx::{load_onnx, ImportOptions};
use std::ffi::{c_char, CString};
use std::sync::Mutex;

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
    pub(crate) fn new(builder: NetworkBuilder) -> Self {
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

    fn analysis(&self, o: &LipOptions) -> CResult<Analysis> {
        // Validated first: invalid options are an error even when an analysis is cached.
        let analysis = o.to_analysis()?;
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| Failure::new(Status::Internal, "network lock poisoned"))?;
        // Reused only for exactly the same options (every field: limits change results).
        if let Some((k, a)) = cache.as_ref() {
            if k == o {
                return Ok(a.clone());
            }
        }
        let a = with_threads(o.threads, || {
            Ok(analyze(self.builder.network(), &analysis)?)
        })?;
        *cache = Some((*o, a.clone()));
        Ok(a)
    }

    /// Runs one builder step, then refreshes the names and drops the cached analysis.
    pub(crate) fn build<T>(
        &mut self,
        step: impl FnOnce(&mut NetworkBuilder) -> crate::Result<T>,
    ) -> CResult<()> {
        step(&mut self.builder)?;
        self.refresh();
        Ok(())
    }

    /// The value the next builder call reads.
    pub(crate) fn current(&self) -> usize {
        self.builder.current()
    }

    pub(crate) fn network(&self) -> &Network {
        self.builder.network()
    }
}

fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// The shape behind `shape` (`None` when `ndim` is 0).
///
/// # Safety
/// `shape` is NULL or points to `ndim` values.
unsafe fn shape_from(shape: *const i64, ndim: usize) -> CResult<Option<Vec<i64>>> {
    if ndim == 0 {
        return Ok(None);
    }
    if ndim > 8 {
        return Err(Failure::invalid(format!(
            "ndim = {ndim}: at most 8 dimensions"
        )));
    }
    // SAFETY: the caller's contract, passed on (8 values are far below any limit).
    let values = unsafe { slice(shape, ndim, "input_shape", usize::MAX) }?;
    Ok(Some(values.to_vec()))
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
    guard_value("lip_network_from_onnx", std::ptr::null_mut(), || {
        // SAFETY: `path` is NULL or NUL-terminated, `input_shape` NULL or `ndim` values.
        let (file, shape) = unsafe {
            (
                super::handle::path(path, "path")?,
                shape_from(input_shape, ndim)?,
            )
        };
        let opts = ImportOptions {
            input_shape: shape,
            ..ImportOptions::default()
        };
        let net = load_onnx(&file, &opts)?;
        Ok(register(LipNetwork::new(NetworkBuilder::from_network(net))))
    })
}

/// Starts a network built in code, with the given input shape ({1, C, H, W} for images,
/// {1, F} for vectors). Add layers with the `lip_network_add_*` functions; each reads the
/// output of the previous one. Returns NULL on failure.
///
/// # Safety
/// `input_shape` points to `ndim` values.
#[no_mangle]
pub unsafe extern "C" fn lip_network_new(input_shape: *const i64, ndim: usize) -> *mut LipNetwork {
    guard_value("lip_network_new", std::ptr::null_mut(), || {
        // SAFETY: `input_shape` is NULL or points to `ndim` values.
        let shape = unsafe { shape_from(input_shape, ndim) }?
            .ok_or_else(|| Failure::invalid("ndim must be ≥ 1"))?;
        if shape.iter().any(|&d| d <= 0) {
            return Err(Failure::invalid(format!(
                "input_shape {shape:?} has a dimension ≤ 0"
            )));
        }
        let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        let net = NetworkBuilder::new("network", &dims)?;
        Ok(register(LipNetwork::new(net)))
    })
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
    // SAFETY: the caller's contract, passed on.
    guard("lip_network_free", || unsafe { super::handle::free(net) });
}

/// Number of linear layers (Conv, Gemm, MatMul) that `lip_network_layer_bound` can report;
/// 0 for NULL or a handle that is not live.
///
/// # Safety
/// `net` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn lip_network_layer_count(net: *const LipNetwork) -> usize {
    // SAFETY: the caller's contract, passed on.
    super::handle::catch(|| unsafe { network(net) }.map(|n| n.names.len())).unwrap_or(0)
}

/// Name of linear layer `i` (NUL-terminated, owned by the handle: valid until the next
/// builder call or `lip_network_free`). NULL if `i` is out of range.
///
/// # Safety
/// `net` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn lip_network_layer_name(net: *const LipNetwork, i: usize) -> *const c_char {
    // SAFETY: the caller's contract, passed on.
    unsafe { layer_label(net, i, 0) }
}

/// Operator of linear layer `i` ("Conv", "Gemm", "MatMul"); same lifetime as the name.
///
/// # Safety
/// `net` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn lip_network_layer_op(net: *const LipNetwork, i: usize) -> *const c_char {
    // SAFETY: the caller's contract, passed on.
    unsafe { layer_label(net, i, 1) }
}

/// Name (`which = 0`) or operator (`1`) of linear layer `i` of a live handle; NULL otherwise.
///
/// # Safety
/// `net` is NULL or a live handle.
unsafe fn layer_label(net: *const LipNetwork, i: usize, which: usize) -> *const c_char {
    // SAFETY: the caller's contract, passed on.
    super::handle::catch(|| unsafe { network(net) })
        .ok()
        .and_then(|n| n.names.get(i))
        .map_or(std::ptr::null(), |(name, op)| [name, op][which].as_ptr())
}

/// The network's certified interval: `upper` from the composition of the layer bounds
/// (BatchNorm folded, linear runs merged), `lower` attained by a pair of inputs (0 when
/// `lower_samples` is 0); `iterations` is the estimator steps of all layers. The analysis is
/// cached in the handle, so `lip_network_layer_bound` with the same options costs nothing
/// more.
///
/// # Safety
/// `net` is a live handle; `options` NULL or valid; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn lip_network_bound_ex(
    net: *const LipNetwork,
    options: *const LipOptions,
    out: *mut LipBound,
) -> i32 {
    // SAFETY: the caller's contract, passed on.
    unsafe { network_bound("lip_network_bound_ex", net, options, out) }
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
    // SAFETY: the caller's contract, with valid options.
    unsafe { network_bound("lip_network_bound", net, &o, out) }
}

/// The network bound functions, reporting errors under `function`'s name.
///
/// # Safety
/// As `lip_network_bound_ex`.
unsafe fn network_bound(
    function: &str,
    net: *const LipNetwork,
    options: *const LipOptions,
    out: *mut LipBound,
) -> i32 {
    guard(function, || {
        // SAFETY: the caller's contract for each pointer.
        let (n, out, o) = unsafe { (network(net)?, Out::new(out, "out")?, read_options(options)) };
        let a = n.analysis(&o)?;
        out.put(LipBound {
            lower: a.network.lower.unwrap_or(0.0),
            upper: a.network.upper,
            iterations: a.layers.iter().map(|l| l.iterations).sum(),
            certificate: a.network.certificate.code(),
        });
        Ok(())
    })
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
    // SAFETY: the caller's contract, passed on.
    unsafe { layer_bound("lip_network_layer_bound_ex", net, i, options, out) }
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
    // SAFETY: the caller's contract, with valid options.
    unsafe { layer_bound("lip_network_layer_bound", net, i, &o, out) }
}

/// The layer bound functions, reporting errors under `function`'s name.
///
/// # Safety
/// As `lip_network_layer_bound_ex`.
unsafe fn layer_bound(
    function: &str,
    net: *const LipNetwork,
    i: usize,
    options: *const LipOptions,
    out: *mut LipBound,
) -> i32 {
    guard(function, || {
        // SAFETY: the caller's contract for `net` and `out`.
        let (n, out) = unsafe { (network(net)?, Out::new(out, "out")?) };
        if i >= n.names.len() {
            return Err(Failure::invalid(format!(
                "layer index {i} out of range (the network has {} linear layers)",
                n.names.len()
            )));
        }
        // SAFETY: `options` is NULL or valid, by contract.
        let o = unsafe { read_options(options) };
        let a = n.analysis(&o)?;
        out.put(LipBound::from(&a.layers[i].bound));
        Ok(())
    })
}

/// `lip_network_method_bound`'s `method`: AutoLip, the product along the graph.
pub const LIP_NETWORK_METHOD_PRODUCT: i32 = 0;
/// `lip_network_method_bound`'s `method`: the LipLT recursion.
pub const LIP_NETWORK_METHOD_LIPLT: i32 = 1;
/// `lip_network_method_bound`'s `method`: LipSDP-Neuron, verified.
pub const LIP_NETWORK_METHOD_LIPSDP: i32 = 2;
/// `lip_network_method_bound`'s `method`: ECLipsE-Fast's closed-form multipliers, verified.
pub const LIP_NETWORK_METHOD_ECLIPSE: i32 = 3;

/// How many network bounds the analysis with these options computed (the product always;
/// LipLT and LipSDP-Neuron where they apply). `lip_network_bound` reports the smallest.
///
/// # Safety
/// `net` is a live handle; `options` NULL or valid; `count` writable.
#[no_mangle]
pub unsafe extern "C" fn lip_network_method_count(
    net: *const LipNetwork,
    options: *const LipOptions,
    count: *mut usize,
) -> i32 {
    guard("lip_network_method_count", || {
        // SAFETY: the caller's contract for each pointer.
        let (n, out, o) = unsafe {
            (
                network(net)?,
                Out::new(count, "count")?,
                read_options(options),
            )
        };
        out.put(n.analysis(&o)?.network.methods.len());
        Ok(())
    })
}

/// Network bound `i` of the analysis with these options: its upper end and certificate in
/// `*out` (`lower` is the attained lower bound, as in `lip_network_bound`) and which method
/// it is (`LIP_NETWORK_METHOD_*`) in `*method`.
///
/// # Safety
/// `net` is a live handle; `options` NULL or valid; `out` and `method` writable.
#[no_mangle]
pub unsafe extern "C" fn lip_network_method_bound(
    net: *const LipNetwork,
    i: usize,
    options: *const LipOptions,
    out: *mut LipBound,
    method: *mut i32,
) -> i32 {
    guard("lip_network_method_bound", || {
        // SAFETY: the caller's contract for each pointer.
        let (n, out, method) = unsafe {
            (
                network(net)?,
                Out::new(out, "out")?,
                Out::new(method, "method")?,
            )
        };
        // SAFETY: `options` is NULL or valid, by contract.
        let o = unsafe { read_options(options) };
        let a = n.analysis(&o)?;
        let m = a.network.methods.get(i).ok_or_else(|| {
            Failure::invalid(format!(
                "method index {i} out of range (the analysis computed {})",
                a.network.methods.len()
            ))
        })?;
        out.put(LipBound {
            lower: a.network.lower.unwrap_or(0.0),
            upper: m.upper,
            iterations: 0,
            certificate: m.certificate.code(),
        });
        method.put(match m.name {
            NetworkMethod::Product => LIP_NETWORK_METHOD_PRODUCT,
            NetworkMethod::LipLT => LIP_NETWORK_METHOD_LIPLT,
            NetworkMethod::LipSdp => LIP_NETWORK_METHOD_LIPSDP,
            NetworkMethod::Eclipse => LIP_NETWORK_METHOD_ECLIPSE,
        });
        Ok(())
    })
}
