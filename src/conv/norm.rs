//! Certified spectral norms of conv layers: one entry point, [`conv2d_norm`].
//!
//! * Circular padding, stride 1: exact. The 2-D DFT block-diagonalises the layer (Sedghi,
//!   Gupta & Long 2019), so `σ₁ = max_f σ₁(M(f))` over the half grid of frequencies.
//!   Frequencies are visited in decreasing order of `‖M(f)‖_F` and the scan stops once that
//!   cheap upper bound falls below the best `σ₁` found; each visited block's `σ₁` comes from
//!   the Hermitian eigenvalues of its smaller Gram matrix (faer). The lower end is a plane
//!   wave at the maximising frequency, evaluated through the direct `f64` operator.
//! * Zero padding (and circular with stride): the layer is `crop ∘ circular(N) ∘ embed` for
//!   the padded grid `N`, and stride only subsamples rows, so the circular norm on `N` is a
//!   deterministic upper bound. The lower end comes from Lanczos on the layer itself, warm
//!   started from the circular maximiser's plane wave; the final vector is re-evaluated with
//!   the direct `f64` operator. Small layers are solved exactly by a dense SVD instead.

use super::circular::{circular_norm, CircularNorm, Scan};
use super::plan::{ConvPlan, MAX_SCAN_FREQUENCIES};
use super::spectrum::KernelSymbol;
use super::wave::{cover_wave_to_input, plane_wave};
use super::{Conv2d, ConvOperator, DirectConv2d, PaddingMode};
use crate::bound::{Bound, Method, Options, Stop};
use crate::error::{Error, Result};
use crate::kernels::UNIT_ROUNDOFF;
use crate::operator::LinearOperator;
use crate::spectral::{certified_ratio, spectral_norm_with_vector, Hints};
use serde::Serialize;
use std::time::Instant;

/// Which algorithm bounds a conv layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConvMethod {
    /// Exact-circular when it applies, a dense SVD for small layers, Lanczos otherwise.
    #[default]
    Auto,
    /// Per-frequency exact norm (circular padding, stride 1 only).
    ExactCircular,
    /// Dense SVD of the explicit matrix (small layers).
    Exact,
    /// Lanczos on the layer, warm-started, with the circular-embedding upper bound.
    Lanczos,
    /// Power iteration on the layer (the reference), with the circular-embedding upper bound.
    Power,
    /// Gram iteration (Delattre et al. 2023) on every frequency block of the circular
    /// embedding: a deterministic upper bound without eigenvalues or iterations on the layer,
    /// and the plane-wave lower bound. The comparison method: never tighter than
    /// exact-circular, which certifies the same quantity exactly.
    Gram,
    /// Only the cheap proven bounds: the circular-embedding upper bound, and the plane-wave
    /// lower bound.
    BoundsOnly,
}

impl std::str::FromStr for ConvMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "auto" => Ok(ConvMethod::Auto),
            "exact-circular" => Ok(ConvMethod::ExactCircular),
            "exact" => Ok(ConvMethod::Exact),
            "lanczos" => Ok(ConvMethod::Lanczos),
            "power" => Ok(ConvMethod::Power),
            "gram" => Ok(ConvMethod::Gram),
            "bounds-only" => Ok(ConvMethod::BoundsOnly),
            _ => Err(Error::invalid(
                "conv method",
                s,
                "expected auto, exact-circular, exact, lanczos, power, gram or bounds-only",
            )),
        }
    }
}

/// The end of an interval that kept it wider than `rtol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitedBy {
    /// The upper bound stopped improving (the proven bounds' gap remains).
    Upper,
    /// A cap stopped the iteration while the lower end was still moving.
    Lower,
}

/// A conv layer's certified interval with the evidence behind it.
#[derive(Debug, Clone, Serialize)]
pub struct ConvBound {
    /// The interval (certificate, stop reason, counts, time).
    pub bound: Bound,
    /// The conv-specific method used.
    pub method: ConvMethod,
    /// Proven upper bound from the circular embedding (exact for circular stride-1 layers).
    pub circular_upper: f64,
    /// Proven upper bound from the window bound (zero padding on images up to 1024 pixels;
    /// +∞ otherwise), see `conv::window`.
    pub window_upper: f64,
    /// The grid the circular bound was computed on.
    pub grid: [usize; 2],
    /// Frequency blocks whose σ₁ was resolved (refined to the slack, or exact eigenvalues);
    /// every other block was certified below the maximum by a Cholesky factorisation.
    pub frequencies_visited: usize,
    /// Frequencies in the half grid.
    pub frequencies_total: usize,
    /// When `rtol` was not met: which end limited the width.
    pub limited_by: Option<LimitedBy>,
    /// In words, the route taken and why (`lipschitz analyze --explain`): which bound gave
    /// each end, which operator the iterations used.
    pub route: String,
}

/// The window bound (see `conv::window`) from a circular norm's per-frequency values.
fn window_of(
    symbol: &KernelSymbol,
    circ: &CircularNorm,
    window: [usize; 2],
    slack: f64,
    memory_limit: usize,
) -> Result<f64> {
    let s: Vec<f64> = circ.per_frequency.iter().map(|v| v + circ.margin).collect();
    let bound = super::window::window_bound_squared(symbol, &s, window, slack, memory_limit)?;
    Ok(bound.sqrt())
}

/// A layer whose grid is out of proportion to it (see `ConvPlan`): bounded by the dense SVD of its explicit
/// matrix when that is small enough, refused otherwise.
fn exact_without_scan(
    conv: &Conv2d,
    weights: &[f32],
    plan: &ConvPlan,
    opts: &Options,
) -> Result<ConvBound> {
    let (grid, method, small) = (plan.grid, plan.method, plan.small);
    let scans = matches!(
        method,
        ConvMethod::ExactCircular | ConvMethod::BoundsOnly | ConvMethod::Gram
    );
    if !small || scans {
        return Err(Error::invalid(
            "conv frequency grid",
            format!("{}×{}", grid[0], grid[1]),
            &format!(
                "is out of proportion to the layer (input {:?}, pads {:?}, stride {:?}): over \
                 {MAX_SCAN_FREQUENCIES} frequencies to scan for a layer of {} values; refused",
                conv.input,
                conv.pads,
                conv.stride,
                conv.input_len() + conv.output_len()
            ),
        ));
    }
    let direct = DirectConv2d::new(conv, weights)?;
    let inner = Options {
        method: Method::Exact,
        ..opts.clone()
    };
    let (bound, _) = spectral_norm_with_vector(&direct, &inner, &Hints::default())?;
    Ok(ConvBound {
        route: format!(
            "{} of the layer's explicit matrix: its {}×{} frequency grid is out of proportion to it",
            describe_dense(&bound),
            grid[0],
            grid[1]
        ),
        bound,
        method: ConvMethod::Exact,
        circular_upper: f64::INFINITY,
        window_upper: f64::INFINITY,
        grid,
        frequencies_visited: 0,
        frequencies_total: 0,
        limited_by: None,
    })
}

/// Lanczos steps tried with the embedding bound before computing a large window bound.
const LANCZOS_BEFORE_WINDOW: u32 = 40;

/// A 1×1 zero-padded conv (any stride) applies its channel matrix at each output position
/// that reads an input pixel and outputs zeros elsewhere, so its norm is the largest
/// `σ₁(W_g)` over groups, computed as a dense layer; the dense lower vector placed at one
/// read pixel attains the lower end. `None` when the shortcut does not apply.
fn pointwise_norm(
    weights: &[f32],
    conv: &Conv2d,
    method: ConvMethod,
    opts: &Options,
) -> Result<Option<ConvBound>> {
    if conv.kernel != [1, 1]
        || conv.padding_mode != PaddingMode::Zeros
        || method == ConvMethod::Power
    {
        return Ok(None);
    }
    let out = conv.output_size()?;
    let reads = (0..2).all(|axis| {
        (0..out[axis]).any(|i| {
            let pos = (i * conv.stride[axis]) as i64 - conv.pads[axis] as i64;
            pos >= 0 && pos < conv.input[axis] as i64
        })
    });
    if !reads {
        return Ok(None);
    }
    let (og, cg) = (conv.group_out(), conv.group_in());
    let mut best: Option<Bound> = None;
    for g in 0..conv.groups {
        let w = &weights[g * og * cg..(g + 1) * og * cg];
        let b = crate::dense::dense_norm(w, og, cg, opts)?;
        best = Some(match best {
            None => b,
            Some(a) => Bound {
                lower: a.lower.max(b.lower),
                upper: a.upper.max(b.upper),
                certificate: if a.certificate.code() >= b.certificate.code() {
                    a.certificate
                } else {
                    b.certificate
                },
                iterations: a.iterations + b.iterations,
                matvecs: a.matvecs + b.matvecs,
                ..b
            },
        });
    }
    let bound = best.expect("groups ≥ 1");
    let route = format!(
        "pointwise: a 1×1 kernel applies its {og}×{cg} channel matrix at every pixel read \
         ({} of it{}), so its σ₁ is the layer's",
        describe_dense(&bound),
        if conv.groups > 1 { ", per group" } else { "" }
    );
    Ok(Some(ConvBound {
        bound,
        method: ConvMethod::Exact,
        circular_upper: bound.upper,
        window_upper: f64::INFINITY,
        grid: conv.input,
        frequencies_visited: 0,
        frequencies_total: 0,
        limited_by: None,
        route,
    }))
}

/// Certified interval for the spectral norm of a conv layer (weights OIHW).
///
/// `opts.rtol`, caps, seed and memory limit apply; `method` picks the algorithm.
///
/// ```
/// use lipschitz::conv::{conv2d_norm, Conv2d, ConvMethod, PaddingMode};
/// use lipschitz::{Certificate, Options};
/// // A circular 3×3 conv whose only tap is the centre: the identity, norm 1.
/// let conv = Conv2d::new(1, 1, [3, 3], [8, 8]).padding(1).mode(PaddingMode::Circular);
/// let mut w = vec![0.0f32; 9];
/// w[4] = 1.0;
/// let r = conv2d_norm(&w, &conv, ConvMethod::Auto, &Options::default())?;
/// assert_eq!(r.bound.certificate, Certificate::Exact);
/// assert!(r.bound.lower <= 1.0 && 1.0 <= r.bound.upper && r.bound.upper < 1.0 + 1e-12);
/// # Ok::<(), lipschitz::Error>(())
/// ```
pub fn conv2d_norm(
    weights: &[f32],
    conv: &Conv2d,
    method: ConvMethod,
    opts: &Options,
) -> Result<ConvBound> {
    let started = Instant::now();
    opts.validate()?;
    conv.validate_weights(weights)?;
    check_vectors_fit(conv, opts)?;
    let mut result = match shortcut(weights, conv, method, opts)? {
        Some(r) => r,
        None => {
            let plan = ConvPlan::new(conv, method, opts)?;
            if plan.out_of_proportion {
                exact_without_scan(conv, weights, &plan, opts)?
            } else if plan.lanczos_only {
                lanczos_only(weights, conv, &plan, opts)?
            } else {
                let proven = proven_bounds(weights, conv, &plan, opts)?;
                refine(weights, conv, &plan, proven, opts)?
            }
        }
    };
    result.bound.seconds = started.elapsed().as_secs_f64();
    Ok(result)
}

/// Every method holds a few input and output vectors in f64: layers whose vectors alone
/// exceed the memory limit are refused before any work proportional to their size.
fn check_vectors_fit(conv: &Conv2d, opts: &Options) -> Result<()> {
    let vectors = 8 * 4 * (conv.input_len() as u128 + conv.output_len() as u128);
    if vectors > opts.memory_limit as u128 {
        return Err(Error::TooLarge {
            what: format!(
                "conv layer {}→{} on {}×{} (output {:?}): input and output vectors",
                conv.in_channels,
                conv.out_channels,
                conv.input[0],
                conv.input[1],
                conv.output_size()?
            ),
            needed: vectors,
            limit: opts.memory_limit as u128,
        });
    }
    Ok(())
}

/// Layers with a closed route: circular with stride is exact again through the polyphase
/// decomposition; a 1×1 zero-padded conv is a dense layer.
fn shortcut(
    weights: &[f32],
    conv: &Conv2d,
    method: ConvMethod,
    opts: &Options,
) -> Result<Option<ConvBound>> {
    if conv.padding_mode == PaddingMode::Circular
        && conv.stride != [1, 1]
        && method != ConvMethod::BoundsOnly
    {
        if let Some((equivalent, w)) = super::polyphase::polyphase(conv, weights) {
            let inner = if method == ConvMethod::Gram {
                ConvMethod::Gram
            } else {
                ConvMethod::ExactCircular
            };
            let mut r = conv2d_norm(&w, &equivalent, inner, opts)?;
            r.route = format!(
                "polyphase: the stride-{}×{} circular layer is a stride-1 one on {}×{} with \
                 {} input channels; {}",
                conv.stride[0],
                conv.stride[1],
                equivalent.input[0],
                equivalent.input[1],
                equivalent.in_channels,
                r.route
            );
            return Ok(Some(r));
        }
    }
    pointwise_norm(weights, conv, method, opts)
}

/// What the proven bounds leave for the refinement: the interval so far, the operators and
/// the best start vector.
struct Proven<'w> {
    result: ConvBound,
    symbol: KernelSymbol,
    direct: DirectConv2d<'w>,
    /// The plane wave the lower end comes from.
    wave: Vec<f64>,
}

/// The proven interval without iterating on the layer: the circular embedding's norm (and,
/// with stride, the polyphase cover's), the window bounds, and the plane-wave lower end.
fn proven_bounds<'w>(
    weights: &'w [f32],
    conv: &Conv2d,
    plan: &ConvPlan,
    opts: &Options,
) -> Result<Proven<'w>> {
    let grid = plan.grid;
    let needed = KernelSymbol::estimate_memory(conv, grid);
    if needed > opts.memory_limit as u128 {
        return Err(Error::TooLarge {
            what: format!(
                "kernel symbol of the conv layer on its {}×{} frequency grid (input {:?} + pads {:?})",
                grid[0], grid[1], conv.input, conv.pads
            ),
            needed,
            limit: opts.memory_limit as u128,
        });
    }
    let symbol = KernelSymbol::new(conv, weights, grid);
    let mut circ = circular_norm(
        conv,
        weights,
        &symbol,
        plan.scan(plan.windowed),
        opts.memory_limit,
    )?;
    circ.upper *= plan.repetition * (1.0 + 4.0 * UNIT_ROUNDOFF);
    let direct = DirectConv2d::new(conv, weights)?;
    let mut wave = plane_wave(conv, &symbol, &circ)?;
    let mut wave_lower = certified_ratio(&direct, &wave, &mut vec![0.0; direct.output_len()]);
    let mut cover_window = f64::INFINITY;
    if let Some(cover) = strided_cover(weights, conv, plan, &direct, opts)? {
        circ.upper = circ.upper.min(cover.upper);
        cover_window = cover.window;
        if cover.lower > wave_lower {
            (wave, wave_lower) = (cover.wave, cover.lower);
        }
    }
    let window_upper = if plan.windowed {
        window_of(
            &symbol,
            &circ,
            conv.input,
            plan.window_slack,
            opts.memory_limit,
        )?
        .min(cover_window)
    } else {
        cover_window
    };
    let result = ConvBound {
        bound: Bound {
            lower: wave_lower,
            upper: circ.upper.min(window_upper).max(wave_lower),
            certificate: plan.upper_certificate,
            method: Method::Exact,
            iterations: 0,
            matvecs: 1,
            stop: Stop::Direct,
            seconds: 0.0,
        },
        method: plan.method,
        circular_upper: circ.upper,
        window_upper,
        grid,
        frequencies_visited: circ.visited,
        frequencies_total: circ.total,
        limited_by: None,
        route: String::new(),
    };
    Ok(Proven {
        result,
        symbol,
        direct,
        wave,
    })
}

/// The bounds from the strided circular cover of a zero-padded strided layer.
struct Cover {
    /// Its (polyphase-exact) norm, an upper bound of the layer.
    upper: f64,
    /// Its window bound (+∞ when not computed).
    window: f64,
    /// Its maximiser mapped to the layer's input, and the ratio that attains.
    wave: Vec<f64>,
    lower: f64,
}

/// Zero padding with stride: the strided circular cover (polyphase-exact) is tighter than
/// the stride-1 embedding, and its maximiser (a plane wave per phase) is a far better start.
fn strided_cover(
    weights: &[f32],
    conv: &Conv2d,
    plan: &ConvPlan,
    direct: &DirectConv2d<'_>,
    opts: &Options,
) -> Result<Option<Cover>> {
    let Some(cover) = super::polyphase::circular_cover(conv) else {
        return Ok(None);
    };
    let polyphase = super::polyphase::polyphase(&cover, weights)
        .filter(|(eq, _)| KernelSymbol::estimate_memory(eq, eq.input) <= opts.memory_limit as u128);
    let Some((equivalent, w)) = polyphase else {
        return Ok(None);
    };
    let eq_symbol = KernelSymbol::new(&equivalent, &w, equivalent.input);
    // The input lives on ⌈H/s⌉ × ⌈W/s⌉ pixels of each phase image: the window bound applies
    // to the equivalent layer too.
    let phase_window = [
        conv.input[0].div_ceil(conv.stride[0]),
        conv.input[1].div_ceil(conv.stride[1]),
    ];
    let eq_windowed = phase_window[0] * phase_window[1] <= super::window::MAX_WINDOW
        && plan.method != ConvMethod::Gram;
    let eq_circ = circular_norm(
        &equivalent,
        &w,
        &eq_symbol,
        plan.scan(eq_windowed),
        opts.memory_limit,
    )?;
    let window = if eq_windowed {
        window_of(
            &eq_symbol,
            &eq_circ,
            phase_window,
            plan.window_slack,
            opts.memory_limit,
        )?
    } else {
        f64::INFINITY
    };
    let phase_wave = plane_wave(&equivalent, &eq_symbol, &eq_circ)?;
    let wave = cover_wave_to_input(conv, &cover, &phase_wave);
    let lower = certified_ratio(direct, &wave, &mut vec![0.0; direct.output_len()]);
    Ok(Some(Cover {
        upper: eq_circ.upper * (1.0 + 4.0 * UNIT_ROUNDOFF),
        window,
        wave,
        lower,
    }))
}

/// Tightens the proven interval by the method: a dense SVD, or Lanczos (power iteration)
/// on the layer warm-started from the plane wave; the bounds-only methods stop here.
fn refine(
    weights: &[f32],
    conv: &Conv2d,
    plan: &ConvPlan,
    proven: Proven<'_>,
    opts: &Options,
) -> Result<ConvBound> {
    match plan.method {
        ConvMethod::Lanczos | ConvMethod::Power | ConvMethod::Auto => {
            iterate(weights, conv, plan, proven, opts)
        }
        ConvMethod::Exact => dense_svd(plan, proven, opts),
        ConvMethod::ExactCircular | ConvMethod::BoundsOnly | ConvMethod::Gram => {
            let mut result = proven.result;
            result.bound.method = if plan.method == ConvMethod::ExactCircular {
                Method::Exact
            } else {
                Method::Auto
            };
            result.route = if plan.method == ConvMethod::ExactCircular {
                format!(
                    "exact circular: the DFT block-diagonalises the layer on its {}×{} grid; \
                     {} of {} frequency blocks resolved, the others certified below the \
                     maximum by Cholesky",
                    plan.grid[0],
                    plan.grid[1],
                    result.frequencies_visited,
                    result.frequencies_total
                )
            } else {
                format!(
                    "proven bounds only ({:?}): {}",
                    plan.method,
                    upper_source(&result)
                )
            };
            Ok(result)
        }
    }
}

/// The dense SVD of the layer's explicit matrix, intersected with the proven interval.
fn dense_svd(plan: &ConvPlan, proven: Proven<'_>, opts: &Options) -> Result<ConvBound> {
    let mut result = proven.result;
    let inner = Options {
        method: Method::Exact,
        ..opts.clone()
    };
    // A failed dense SVD (faer can return NaN on extreme values) leaves the proven
    // embedding interval in place.
    let (b, _) = match spectral_norm_with_vector(&proven.direct, &inner, &Hints::default()) {
        Ok(r) => r,
        Err(Error::Numerical(_)) => return Ok(result),
        Err(e) => return Err(e),
    };
    let proven_upper = result.bound.upper;
    result.bound = Bound {
        upper: b.upper.min(proven_upper),
        lower: b.lower.max(result.bound.lower),
        ..b
    };
    if b.upper > result.circular_upper {
        result.bound.certificate = plan.upper_certificate;
    }
    result.route = format!(
        "{} of the layer's explicit {}×{} matrix (a small layer)",
        describe_dense(&b),
        proven.direct.output_len(),
        proven.direct.input_len()
    );
    Ok(result)
}

/// Lanczos (or power iteration) on the layer, started from the plane wave and capped by the
/// proven upper bound; for large zero-padded images, a short run first and the window bound
/// only when the embedding bound misses `rtol`.
fn iterate(
    weights: &[f32],
    conv: &Conv2d,
    plan: &ConvPlan,
    proven: Proven<'_>,
    opts: &Options,
) -> Result<ConvBound> {
    let Proven {
        mut result,
        symbol,
        direct,
        wave,
    } = proven;
    let wave_lower = result.bound.lower;
    let (operator, why) = ConvOperator::auto_with_reason(conv, weights, 1, opts.memory_limit)?;
    let inner = Options {
        method: if plan.method == ConvMethod::Power {
            Method::Power
        } else {
            Method::Lanczos
        },
        ..opts.clone()
    };
    let mut tmp = vec![0.0; direct.output_len()];
    let mut run = |start: &[f64], upper: f64, max_iterations: u32| {
        let hints = Hints {
            start: Some(start),
            random_weight: 0.1,
            upper: Some((upper, plan.upper_certificate)),
        };
        let capped = Options {
            max_iterations,
            ..inner.clone()
        };
        let (b, v) = spectral_norm_with_vector(operator.as_operator(), &capped, &hints)?;
        // Re-evaluate the final vector with the accurate operator.
        let accurate = if v.is_empty() {
            0.0
        } else {
            certified_ratio(&direct, &v, &mut tmp)
        };
        Ok::<_, Error>((b, v, accurate.max(wave_lower)))
    };
    // A short run first when a large window bound is possible: when the embedding bound
    // already meets rtol, the window bound's eigenvalue problem is not worth its second.
    let first_cap = if plan.large_window {
        LANCZOS_BEFORE_WINDOW.min(opts.max_iterations)
    } else {
        opts.max_iterations
    };
    let (mut b, v, mut lower) = run(&wave, result.bound.upper, first_cap)?;
    if plan.large_window && b.upper.max(lower) > lower * (1.0 + opts.rtol) {
        let all = circular_norm(
            conv,
            weights,
            &symbol,
            Scan::Every { slack: plan.slack },
            opts.memory_limit,
        )?;
        let window = window_of(
            &symbol,
            &all,
            conv.input,
            plan.window_slack,
            opts.memory_limit,
        )?;
        result.window_upper = window.min(result.window_upper);
        let upper = result.bound.upper.min(result.window_upper);
        let start = if v.is_empty() { wave } else { v };
        let first = b.matvecs;
        (b, _, lower) = run(&start, upper, opts.max_iterations)?;
        b.matvecs += first;
        lower = lower.max(result.bound.lower);
    }
    let mut result = finish(result, b, lower, opts.rtol);
    result.route = format!(
        "{}, {} steps from the plane wave of the top frequency on the {}×{} grid; {}; operator {why}",
        if plan.method == ConvMethod::Power {
            "power iteration"
        } else {
            "Lanczos"
        },
        result.bound.iterations,
        plan.grid[0],
        plan.grid[1],
        upper_source(&result)
    );
    Ok(result)
}

/// In words, which bound gave the upper end of `r`, and how far above the lower end the
/// proven bounds were.
fn upper_source(r: &ConvBound) -> String {
    let b = &r.bound;
    let which = match b.certificate {
        crate::Certificate::Probabilistic { delta } => {
            format!("upper end: the probabilistic a-posteriori bound (δ = {delta:e})")
        }
        crate::Certificate::Exact => "upper end: exact".to_string(),
        _ if b.upper >= r.window_upper => "upper end: the window bound".to_string(),
        _ if b.upper >= r.circular_upper => "upper end: the circular embedding".to_string(),
        _ => "upper end: deterministic".to_string(),
    };
    let excess = |u: f64| {
        if u.is_finite() && b.lower > 0.0 {
            format!("{:.3} %", 100.0 * (u / b.lower - 1.0))
        } else {
            "not computed".to_string()
        }
    };
    format!(
        "{which} (over the lower end: window bound {}, embedding {})",
        excess(r.window_upper),
        excess(r.circular_upper)
    )
}

/// "exact SVD" or "Lanczos, k steps" for a dense computation's bound.
fn describe_dense(b: &Bound) -> String {
    match b.method {
        Method::Exact => "exact SVD".to_string(),
        m => format!("{m:?}, {} steps", b.iterations),
    }
}

/// Lanczos from a random start, for small zero-padded images where no proven bound would
/// meet `rtol` (`ConvPlan::lanczos_only`): the probabilistic bound certifies the upper end,
/// and the final vector, re-evaluated with the direct `f64` operator, the lower end.
fn lanczos_only(
    weights: &[f32],
    conv: &Conv2d,
    plan: &ConvPlan,
    opts: &Options,
) -> Result<ConvBound> {
    let (operator, why) = ConvOperator::auto_with_reason(conv, weights, 1, opts.memory_limit)?;
    let direct = DirectConv2d::new(conv, weights)?;
    let inner = Options {
        method: Method::Lanczos,
        ..opts.clone()
    };
    let (b, v) = spectral_norm_with_vector(operator.as_operator(), &inner, &Hints::default())?;
    let route = format!(
        "Lanczos, {} steps from a random start: a {}×{} kernel on {}×{} leaves every proven \
         bound about {:.2} % above the norm (over 4·rtol), so no frequency scan; upper end: \
         the probabilistic a-posteriori bound; operator {why}",
        b.iterations,
        conv.kernel[0],
        conv.kernel[1],
        conv.input[0],
        conv.input[1],
        100.0 * super::plan::predicted_window_excess(conv)
    );
    let lower = if v.is_empty() {
        0.0
    } else {
        certified_ratio(&direct, &v, &mut vec![0.0; direct.output_len()])
    };
    let result = ConvBound {
        bound: b,
        method: ConvMethod::Lanczos,
        circular_upper: f64::INFINITY,
        window_upper: f64::INFINITY,
        grid: plan.grid,
        frequencies_visited: 0,
        frequencies_total: 0,
        limited_by: None,
        route,
    };
    Ok(finish(result, b, lower, opts.rtol))
}

/// The interval after iterating: the iteration's bound with the certified lower end, and
/// when `rtol` is missed, which end limited it.
fn finish(mut result: ConvBound, b: Bound, lower: f64, rtol: f64) -> ConvBound {
    result.bound = Bound {
        lower,
        upper: b.upper.max(lower),
        matvecs: b.matvecs + 2,
        ..b
    };
    if result.bound.meets(rtol) {
        result.bound.stop = Stop::Converged;
    } else {
        // Lanczos reports `UpperLimited` when its Ritz values converged; otherwise a cap
        // stopped it while the lower end was still moving.
        result.limited_by = Some(if b.stop == Stop::UpperLimited {
            LimitedBy::Upper
        } else {
            LimitedBy::Lower
        });
        if b.stop == Stop::Converged {
            result.bound.stop = Stop::UpperLimited;
        }
    }
    result
}
