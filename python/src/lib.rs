//! `lipschitz._lipschitz`: the crate's entry points for Python. Arrays come in as NumPy
//! views (no copy for C-contiguous float32 weights), the GIL is released while the crate
//! computes, results go out as JSON text the Python layer turns into dataclasses (the same
//! JSON the CLI prints, so Python and CLI agree to the bit), and every crate error becomes
//! `lipschitz.LipschitzError`.

use lipschitz::certify::{Certifier, CertifyOptions, ConstantOptions, Samples};
use lipschitz::conv::{conv2d_norm, Conv2d, ConvMethod, PaddingMode};
use lipschitz::network::{analyze, AnalysisOptions, LowerOptions, Network, NetworkMethod};
use lipschitz::onnx::{load_onnx, load_onnx_bytes, ImportOptions};
use lipschitz::{dense_norm, Bound as Interval, Options};
use numpy::PyUntypedArrayMethods;
use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArray4, PyReadonlyArrayDyn};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

pyo3::create_exception!(
    _lipschitz,
    LipschitzError,
    PyValueError,
    "A bad input or a failed computation; the message names the problem."
);

fn error(e: impl std::fmt::Display) -> PyErr {
    LipschitzError::new_err(e.to_string())
}

/// Runs `f` without the GIL, on `threads` workers (0: all cores).
fn compute<T: Send>(
    py: Python<'_>,
    threads: usize,
    f: impl FnOnce() -> lipschitz::Result<T> + Send,
) -> PyResult<T> {
    py.allow_threads(|| {
        if threads == 0 {
            return f().map_err(|e| e.to_string());
        }
        lipschitz::check_threads(threads).map_err(|e| format!("threads: {e}"))?;
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| format!("cannot start {threads} threads: {e}"))?
            .install(|| f().map_err(|e| e.to_string()))
    })
    .map_err(error)
}

fn bound_json(b: &Interval, method: String) -> String {
    serde_json::json!({
        "lower": b.lower,
        "upper": b.upper,
        "certificate": b.certificate.label(),
        "method": method,
        "iterations": b.iterations,
        "seconds": b.seconds,
    })
    .to_string()
}

fn layer_options(rtol: f64, seed: u64) -> PyResult<Options> {
    let opts = Options {
        rtol,
        seed,
        ..Options::default()
    };
    opts.validate().map_err(error)?;
    Ok(opts)
}

/// `‖W‖₂` of a dense matrix (rows = outputs), as JSON. float64 weights are rounded to
/// float32 and the interval widened by the rounding, so that it holds for the doubles.
#[pyfunction]
#[pyo3(signature = (w, rtol, method, seed, threads))]
fn dense_norm_json(
    py: Python<'_>,
    w: &Bound<'_, PyAny>,
    rtol: f64,
    method: &str,
    seed: u64,
    threads: usize,
) -> PyResult<String> {
    let mut opts = layer_options(rtol, seed)?;
    opts.method = method.parse().map_err(error)?;
    let b = if let Ok(a) = w.extract::<PyReadonlyArray2<f32>>() {
        let (rows, cols) = (a.shape()[0], a.shape()[1]);
        let data = a.as_slice().map_err(error)?;
        compute(py, threads, || dense_norm(data, rows, cols, &opts))?
    } else {
        let a = w.extract::<PyReadonlyArray2<f64>>()?;
        let (rows, cols) = (a.shape()[0], a.shape()[1]);
        let (data, rounding) = lipschitz::round_to_f32(a.as_slice().map_err(error)?);
        let mut b = compute(py, threads, || dense_norm(&data, rows, cols, &opts))?;
        b.widen(rounding);
        b
    };
    Ok(bound_json(&b, format!("{:?}", b.method).to_lowercase()))
}

/// `‖W‖₂` of a 2-D convolution (OIHW float32 weights) on images of `input` = (H, W), as JSON.
#[pyfunction]
#[pyo3(signature = (weight, input, stride, pads, dilation, groups, padding_mode, rtol, seed, threads))]
#[allow(clippy::too_many_arguments)]
fn conv2d_norm_json(
    py: Python<'_>,
    weight: PyReadonlyArray4<'_, f32>,
    input: [usize; 2],
    stride: [usize; 2],
    pads: [usize; 4],
    dilation: [usize; 2],
    groups: usize,
    padding_mode: &str,
    rtol: f64,
    seed: u64,
    threads: usize,
) -> PyResult<String> {
    let s = weight.shape();
    let (out_channels, in_per_group, kh, kw) = (s[0], s[1], s[2], s[3]);
    let mode = match padding_mode {
        "zeros" => PaddingMode::Zeros,
        "circular" => PaddingMode::Circular,
        other => {
            return Err(error(format!(
                "padding_mode '{other}': expected 'zeros' or 'circular'"
            )))
        }
    };
    let conv = Conv2d::new(out_channels, in_per_group * groups, [kh, kw], input)
        .stride(stride)
        .dilation(dilation)
        .groups(groups)
        .pads(pads)
        .mode(mode);
    let opts = layer_options(rtol, seed)?;
    let data = weight.as_slice().map_err(error)?;
    let r = compute(py, threads, || {
        conv2d_norm(data, &conv, ConvMethod::Auto, &opts)
    })?;
    Ok(bound_json(
        &r.bound,
        format!("{:?}", r.method).to_lowercase(),
    ))
}

/// The options of a network analysis, as the CLI takes them (a dict from Python).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct NetworkArgs {
    input_shape: Option<Vec<i64>>,
    rtol: f64,
    seed: u64,
    method: String,
    lower_samples: usize,
    lipsdp_max_size: usize,
    eclipse_max_size: usize,
    liplt_max_work: f64,
    memory_limit_mb: u64,
    threads: usize,
}

impl NetworkArgs {
    fn options(&self) -> PyResult<(ImportOptions, AnalysisOptions)> {
        let mut layer = layer_options(self.rtol, self.seed)?;
        let memory_limit = usize::try_from(self.memory_limit_mb)
            .ok()
            .and_then(|mb| mb.checked_mul(1 << 20))
            .filter(|&b| b > 0)
            .ok_or_else(|| error(format!("memory_limit_mb = {}", self.memory_limit_mb)))?;
        layer.memory_limit = memory_limit;
        let methods = NetworkMethod::selection(&self.method).map_err(error)?;
        if !(self.liplt_max_work.is_finite() && self.liplt_max_work >= 0.0) {
            return Err(error(format!("liplt_max_work = {}", self.liplt_max_work)));
        }
        let lower = (self.lower_samples > 0).then(|| LowerOptions {
            samples: self.lower_samples,
            seed: self.seed,
            memory_limit,
            ..LowerOptions::default()
        });
        Ok((
            ImportOptions {
                input_shape: self.input_shape.clone(),
                memory_limit,
            },
            AnalysisOptions {
                layer,
                lower,
                merge_linear_runs: true,
                methods,
                lipsdp_max_size: self.lipsdp_max_size,
                eclipse_max_size: self.eclipse_max_size,
                liplt_max_work: self.liplt_max_work as u128,
                ..AnalysisOptions::default()
            },
        ))
    }
}

/// Reads a model from a path (`str`) or from ONNX bytes.
fn load(model: &Bound<'_, PyAny>, import: &ImportOptions) -> PyResult<Network> {
    if let Ok(bytes) = model.downcast::<PyBytes>() {
        return load_onnx_bytes(bytes.as_bytes(), "ONNX bytes", None, import).map_err(error);
    }
    let path: std::path::PathBuf = model.extract()?;
    load_onnx(&path, import).map_err(error)
}

/// Analyses a network (a path or ONNX bytes): the CLI's JSON report.
#[pyfunction]
fn analyze_json(py: Python<'_>, model: &Bound<'_, PyAny>, args: NetworkArgs) -> PyResult<String> {
    let (import, opts) = args.options()?;
    let net = load(model, &import)?;
    let report = compute(py, args.threads, || analyze(&net, &opts))?;
    serde_json::to_string(&report).map_err(error)
}

/// Certifies samples (`inputs`: N × the model's input shape, or N × values; float64) with
/// their labels: the JSON of `lipschitz certify --json`.
#[pyfunction]
#[pyo3(signature = (model, inputs, labels, eps, local, deterministic, args))]
#[allow(clippy::too_many_arguments)]
fn certify_json(
    py: Python<'_>,
    model: &Bound<'_, PyAny>,
    inputs: PyReadonlyArrayDyn<'_, f64>,
    labels: PyReadonlyArray1<'_, i64>,
    eps: Vec<f64>,
    local: bool,
    deterministic: bool,
    args: NetworkArgs,
) -> PyResult<String> {
    let (import, analysis) = args.options()?;
    let net = load(model, &import)?;
    let n = inputs.shape().first().copied().unwrap_or(0);
    let values = inputs.as_slice().map_err(error)?.to_vec();
    let labels: Vec<usize> = labels
        .as_slice()
        .map_err(error)?
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            usize::try_from(l).map_err(|_| error(format!("labels[{i}] = {l} is negative")))
        })
        .collect::<PyResult<_>>()?;
    if labels.len() != n {
        return Err(error(format!(
            "{} labels for {n} input samples",
            labels.len()
        )));
    }
    let opts = CertifyOptions {
        constants: ConstantOptions {
            analysis,
            deterministic,
            ..ConstantOptions::default()
        },
        local,
    };
    let report = compute(py, args.threads, || {
        let certifier = Certifier::new(&net, &opts, &mut |_, _, _| {})?;
        let dim = certifier.input_len();
        if n * dim != values.len() {
            return Err(lipschitz::Error::Model {
                source_name: net.source().to_string(),
                detail: format!(
                    "inputs have {} values per sample; the model takes {dim}",
                    values.len().checked_div(n).unwrap_or(0)
                ),
            });
        }
        let samples = Samples::new(values, dim, labels, certifier.constants().classes)?;
        certifier.certify(&samples, &eps)
    })?;
    serde_json::to_string(&report).map_err(error)
}

/// The crate's defaults for the options Python exposes, as JSON (one source of truth).
#[pyfunction]
fn defaults_json() -> String {
    let a = AnalysisOptions::default();
    serde_json::json!({
        "seed": Options::default().seed,
        "memory_limit_mb": (Options::default().memory_limit >> 20) as u64,
        "lower_samples": LowerOptions::default().samples,
        "lipsdp_max_size": a.lipsdp_max_size,
        "eclipse_max_size": a.eclipse_max_size,
        "liplt_max_work": a.liplt_max_work as f64,
        "max_pair_analyses": ConstantOptions::default().max_pair_analyses,
    })
    .to_string()
}

/// The native module.
#[pymodule]
fn _lipschitz(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("LipschitzError", m.py().get_type::<LipschitzError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(defaults_json, m)?)?;
    m.add_function(wrap_pyfunction!(dense_norm_json, m)?)?;
    m.add_function(wrap_pyfunction!(conv2d_norm_json, m)?)?;
    m.add_function(wrap_pyfunction!(analyze_json, m)?)?;
    m.add_function(wrap_pyfunction!(certify_json, m)?)?;
    Ok(())
}
