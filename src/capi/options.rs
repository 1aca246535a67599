//! `LipOptions`: the options of the `_ex` functions, and running a call on a chosen number
//! of threads.

use super::handle::read_optional;
use super::status::{CResult, Failure, Status};
use crate::bound::{Method, Options};
use crate::network::{AnalysisOptions, LowerOptions, NetworkMethod};

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
    /// Largest LMI dimension (inputs + activation units) LipSDP-Neuron is computed for
    /// (default 2048: the interior-point method up to 900, ≤ ~5 s; the first-order method
    /// above, ~10 s at 2048); 0 turns it off.
    pub lipsdp_max_size: u64,
    /// Largest LMI dimension ECLipsE-Fast is computed for (default 4096); 0 turns it off.
    pub eclipse_max_size: u64,
    /// Budget of LipLT in units of work (activation values along each norm's path; default
    /// 3e7, ~30 s on two cores): over it, segments are shortened, then LipLT is skipped; 0
    /// turns it off. Finite and ≥ 0.
    pub liplt_max_work: f64,
}

/// The default options (rtol 1e-4, all cores, 2 GiB, 20 lower-bound starts).
#[no_mangle]
pub extern "C" fn lip_options_default() -> LipOptions {
    let o = Options::default();
    let a = AnalysisOptions::default();
    LipOptions {
        rtol: o.rtol,
        max_iterations: o.max_iterations,
        time_limit_seconds: 0.0,
        seed: o.seed,
        threads: 0,
        method: LIP_METHOD_AUTO,
        memory_limit_bytes: o.memory_limit as u64,
        lower_samples: LowerOptions::default().samples as u32,
        lipsdp_max_size: a.lipsdp_max_size as u64,
        eclipse_max_size: a.eclipse_max_size as u64,
        liplt_max_work: a.liplt_max_work as f64,
    }
}

impl LipOptions {
    pub(crate) fn to_options(self) -> CResult<Options> {
        let method = match self.method {
            LIP_METHOD_AUTO => Method::Auto,
            LIP_METHOD_EXACT => Method::Exact,
            LIP_METHOD_LANCZOS => Method::Lanczos,
            LIP_METHOD_BLOCK_LANCZOS => Method::BlockLanczos,
            LIP_METHOD_POWER => Method::Power,
            other => {
                return Err(Failure::invalid(format!(
                    "method = {other}: expected one of LIP_METHOD_AUTO..LIP_METHOD_POWER (0..4)"
                )))
            }
        };
        let time_limit = if self.time_limit_seconds == 0.0 {
            None
        } else {
            crate::bound::time_limit_from_secs(self.time_limit_seconds)?
        };
        if self.threads != 0 {
            crate::bound::check_threads(self.threads as usize)?;
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
        opts.validate()?;
        Ok(opts)
    }

    /// The network options: the layer options, the lower-bound search and the network
    /// methods' limits (a limit of 0 leaves its method out).
    pub(crate) fn to_analysis(self) -> CResult<AnalysisOptions> {
        let layer = self.to_options()?;
        if !(self.liplt_max_work.is_finite() && self.liplt_max_work >= 0.0) {
            return Err(Failure::invalid(format!(
                "liplt_max_work = {}: expected a finite number ≥ 0",
                self.liplt_max_work
            )));
        }
        let lower = (self.lower_samples > 0).then(|| LowerOptions {
            samples: self.lower_samples as usize,
            seed: self.seed,
            memory_limit: layer.memory_limit,
            ..LowerOptions::default()
        });
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let methods = NetworkMethod::ALL
            .into_iter()
            .filter(|m| match m {
                NetworkMethod::LipSdp => self.lipsdp_max_size > 0,
                NetworkMethod::Eclipse => self.eclipse_max_size > 0,
                NetworkMethod::LipLT => self.liplt_max_work > 0.0,
                NetworkMethod::Product => true,
            })
            .collect();
        Ok(AnalysisOptions {
            layer,
            lower,
            merge_linear_runs: true,
            methods,
            lipsdp_max_size: size(self.lipsdp_max_size),
            eclipse_max_size: size(self.eclipse_max_size),
            liplt_max_work: self.liplt_max_work as u128,
            ..AnalysisOptions::default()
        })
    }
}

/// Options read from C (NULL = defaults).
///
/// # Safety
/// `options` is NULL or points to a `LipOptions`.
pub(crate) unsafe fn read_options(options: *const LipOptions) -> LipOptions {
    // SAFETY: the caller's contract, passed on.
    unsafe { read_optional(options) }.unwrap_or_else(|| lip_options_default())
}

/// Runs `f` on a pool of `threads` workers (0: the global pool).
pub(crate) fn with_threads<T: Send>(
    threads: u32,
    f: impl FnOnce() -> CResult<T> + Send,
) -> CResult<T> {
    if threads == 0 {
        return f();
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads as usize)
        .build()
        .map_err(|e| {
            Failure::new(
                Status::Internal,
                format!("cannot start {threads} threads: {e}"),
            )
        })?;
    pool.install(f)
}
