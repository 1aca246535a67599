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
use super::spectrum::{KernelSymbol, C64};
use super::{Conv2d, ConvOperator, DirectConv2d, PaddingMode};
use crate::bound::{Bound, Certificate, Method, Options, Stop};
use crate::error::{Error, Result};
use crate::kernels::UNIT_ROUNDOFF;
use crate::operator::LinearOperator;
use crate::spectral::{certified_ratio, spectral_norm_with_vector, Hints};
use faer::Mat;
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
    /// When `rtol` was not met: which end limited the width ("upper" or "lower").
    pub limited_by: Option<String>,
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

/// Frequencies a circular scan may visit regardless of the layer's size (a 4096² image has
/// 8.4 million); beyond this the grid must also be in proportion to the layer.
const MAX_SCAN_FREQUENCIES: u128 = 1 << 24;

/// True when the frequency grid is far larger than the layer itself: pads of tens of
/// thousands with a stride as large make a padded grid of billions of frequencies around a
/// layer of a few values, and scanning it would take hours that no time limit interrupts.
fn out_of_proportion(conv: &Conv2d, grid: [usize; 2]) -> bool {
    let frequencies = grid[0] as u128 * (grid[1] / 2 + 1) as u128;
    let layer = conv.input_len() as u128 + conv.output_len() as u128;
    frequencies > MAX_SCAN_FREQUENCIES && frequencies > 16 * layer
}

/// A layer whose grid is [`out_of_proportion`]: bounded by the dense SVD of its explicit
/// matrix when that is small enough, refused otherwise.
fn exact_without_scan(
    conv: &Conv2d,
    weights: &[f32],
    grid: [usize; 2],
    method: ConvMethod,
    small: bool,
    opts: &Options,
    started: Instant,
) -> Result<ConvBound> {
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
    let (mut bound, _) = spectral_norm_with_vector(&direct, &inner, &Hints::default())?;
    bound.seconds = started.elapsed().as_secs_f64();
    Ok(ConvBound {
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

/// Squarings of the Gram-iteration method (Delattre et al. use 6 for conv layers).
const GRAM_SQUARINGS: usize = 6;

/// A real input at the maximising frequency: `x[c][h][w] = Re(u_c·e^{2πi(f_h·h/N_h + f_w·w/N_w)})`
/// on the input channels of the maximising group, `u` the top right singular vector of `M(f)`
/// with its phase chosen to keep the real part large.
fn plane_wave(conv: &Conv2d, symbol: &KernelSymbol, circ: &CircularNorm) -> Result<Vec<f64>> {
    let (groups, og, cg) = symbol.block_shape();
    let mut blocks = vec![C64::default(); groups * og * cg];
    symbol.blocks(circ.frequency, &mut blocks);
    let g = circ.group;
    let m = Mat::<C64>::from_fn(og, cg, |o, c| blocks[g * og * cg + o * cg + c]);
    let svd = m
        .thin_svd()
        .map_err(|e| Error::Numerical(format!("SVD of the maximising frequency block: {e:?}")))?;
    let v = svd.V();
    let mut u: Vec<C64> = (0..cg).map(|c| v[(c, 0)]).collect();
    if let Some(big) = u
        .iter()
        .copied()
        .max_by(|a, b| a.norm_sqr().total_cmp(&b.norm_sqr()))
    {
        if big.norm() > 0.0 {
            let phase = big.conj() / big.norm();
            u.iter_mut().for_each(|z| *z *= phase);
        }
    }
    let (f_h, f_w) = symbol.coordinates(circ.frequency);
    let [nh, nw] = symbol.grid();
    let (h, w) = (conv.input[0], conv.input[1]);
    // With zero padding the top singular vectors are plane waves under a window that vanishes
    // at the borders (like the sine eigenvectors of a Toeplitz matrix); circular layers need none.
    let window: [Vec<f64>; 2] = [h, w].map(|len| {
        (0..len)
            .map(|i| match conv.padding_mode {
                PaddingMode::Circular => 1.0,
                PaddingMode::Zeros => {
                    (std::f64::consts::PI * (i + 1) as f64 / (len + 1) as f64).sin()
                }
            })
            .collect()
    });
    let mut x = vec![0.0; conv.input_len()];
    for (c, uc) in u.iter().enumerate() {
        let plane = &mut x[(g * cg + c) * h * w..(g * cg + c + 1) * h * w];
        for a in 0..h {
            for b in 0..w {
                let turns =
                    ((f_h * a) % nh) as f64 / nh as f64 + ((f_w * b) % nw) as f64 / nw as f64;
                let angle = 2.0 * std::f64::consts::PI * turns;
                plane[a * w + b] =
                    (uc * C64::new(angle.cos(), angle.sin())).re * window[0][a] * window[1][b];
            }
        }
    }
    Ok(x)
}

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
        let b = crate::spectral::dense_norm(w, og, cg, opts)?;
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
    Ok(Some(ConvBound {
        bound,
        method: ConvMethod::Exact,
        circular_upper: bound.upper,
        window_upper: f64::INFINITY,
        grid: conv.input,
        frequencies_visited: 0,
        frequencies_total: 0,
        limited_by: None,
    }))
}

/// Maps a vector on the polyphase-equivalent layer's input (channel `c·s_h·s_w + r_h·s_w +
/// r_w`, phase-image position `(a, b)`) back to the zero-padded strided layer's input: cover
/// position `(a·s_h + r_h, b·s_w + r_w)`, shifted by the top/left pads, under the sine window
/// that zero padding's singular vectors carry.
fn cover_wave_to_input(conv: &Conv2d, cover: &Conv2d, phase_wave: &[f64]) -> Vec<f64> {
    let [sh, sw] = conv.stride;
    let [nh, nw] = cover.input;
    let (ph, pw) = (nh / sh, nw / sw);
    let (h, w) = (conv.input[0], conv.input[1]);
    let sine =
        |i: usize, len: usize| (std::f64::consts::PI * (i + 1) as f64 / (len + 1) as f64).sin();
    let mut x = vec![0.0; conv.input_len()];
    for c in 0..conv.in_channels {
        for a in 0..h {
            let ca = a + conv.pads[0];
            let (rh, ia) = (ca % sh, ca / sh);
            for b in 0..w {
                let cb = b + conv.pads[1];
                let (rw, ib) = (cb % sw, cb / sw);
                let channel = c * sh * sw + rh * sw + rw;
                let v = phase_wave[(channel * ph + ia) * pw + ib];
                x[(c * h + a) * w + b] = v * sine(a, h) * sine(b, w);
            }
        }
    }
    x
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
    // Every method holds a few input and output vectors in f64: refuse layers whose vectors
    // alone exceed the memory limit before any work proportional to their size.
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
    // Circular with stride: exact again through the polyphase decomposition.
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
            r.bound.seconds = started.elapsed().as_secs_f64();
            return Ok(r);
        }
    }
    if let Some(mut r) = pointwise_norm(weights, conv, method, opts)? {
        r.bound.seconds = started.elapsed().as_secs_f64();
        return Ok(r);
    }
    let circular_exact = conv.is_exactly_circular();
    let [mh, mw] = conv.circular_multiplicity()?;
    let repetition = ((mh * mw) as f64).sqrt();
    let (n, m) = (conv.input_len() as f64, conv.output_len() as f64);
    let small = n.min(m).powi(2) * n.max(m) <= opts.exact_flop_limit
        && n * m * 24.0 <= opts.memory_limit as f64;
    let method = match method {
        ConvMethod::Auto if circular_exact => ConvMethod::ExactCircular,
        ConvMethod::Auto if small => ConvMethod::Exact,
        ConvMethod::Auto => ConvMethod::Lanczos,
        ConvMethod::ExactCircular if !circular_exact => return Err(Error::invalid(
            "conv method",
            "exact-circular",
            "needs circular padding with one output per input position (stride 1), or a stride that divides the image with one output per residue (use auto or lanczos)",
        )),
        other => other,
    };
    let grid = match conv.padding_mode {
        PaddingMode::Circular => conv.input,
        PaddingMode::Zeros => conv.padded_size(),
    };
    if out_of_proportion(conv, grid) {
        return exact_without_scan(conv, weights, grid, method, small, opts, started);
    }
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
    let windowed = conv.padding_mode == PaddingMode::Zeros
        && conv.input[0] * conv.input[1] <= super::window::MAX_WINDOW
        && method != ConvMethod::Gram;
    // The maximum is certified to a slack well inside rtol; the window bound needs every
    // block, each only to a fraction of rtol (the window itself is looser than that); the
    // Gram method replaces eigenvalues by Gram iteration.
    let slack = (opts.rtol / 4.0).clamp(1e-13, 1e-8);
    let window_slack = (opts.rtol / 8.0).clamp(1e-13, 1e-5);
    let scan = |every: bool| match method {
        ConvMethod::Gram => Scan::Gram {
            squarings: GRAM_SQUARINGS,
        },
        _ if every => Scan::Every {
            slack: window_slack,
        },
        _ => Scan::Maximum { slack },
    };
    let mut circ = circular_norm(conv, weights, &symbol, scan(windowed), opts.memory_limit)?;
    // Outputs that wrap onto the same input rows repeat rows of the circular conv.
    circ.upper *= repetition * (1.0 + 4.0 * UNIT_ROUNDOFF);
    // Zero padding on a small image: the window bound (x lives on the image only) is tighter.
    let direct = DirectConv2d::new(conv, weights)?;
    let mut tmp = vec![0.0; direct.output_len()];
    let mut cover_window = f64::INFINITY;
    let mut wave = plane_wave(conv, &symbol, &circ)?;
    let mut wave_lower = certified_ratio(&direct, &wave, &mut tmp);
    // Zero padding with stride: the strided circular cover (polyphase-exact) is tighter, and
    // its maximiser (a plane wave per phase) is a far better start than the stride-1 one.
    if let Some(cover) = super::polyphase::circular_cover(conv) {
        let polyphase = super::polyphase::polyphase(&cover, weights).filter(|(eq, _)| {
            KernelSymbol::estimate_memory(eq, eq.input) <= opts.memory_limit as u128
        });
        if let Some((equivalent, w)) = polyphase {
            let eq_symbol = KernelSymbol::new(&equivalent, &w, equivalent.input);
            // The input lives on ⌈H/s⌉ × ⌈W/s⌉ pixels of each phase image: the window bound
            // applies to the equivalent layer too.
            let phase_window = [
                conv.input[0].div_ceil(conv.stride[0]),
                conv.input[1].div_ceil(conv.stride[1]),
            ];
            let eq_windowed = phase_window[0] * phase_window[1] <= super::window::MAX_WINDOW
                && method != ConvMethod::Gram;
            let eq_circ = circular_norm(
                &equivalent,
                &w,
                &eq_symbol,
                scan(eq_windowed),
                opts.memory_limit,
            )?;
            circ.upper = circ.upper.min(eq_circ.upper * (1.0 + 4.0 * UNIT_ROUNDOFF));
            if eq_windowed {
                cover_window = window_of(
                    &eq_symbol,
                    &eq_circ,
                    phase_window,
                    window_slack,
                    opts.memory_limit,
                )?;
            }
            let phase_wave = plane_wave(&equivalent, &eq_symbol, &eq_circ)?;
            let start = cover_wave_to_input(conv, &cover, &phase_wave);
            let lower = certified_ratio(&direct, &start, &mut tmp);
            if lower > wave_lower {
                (wave, wave_lower) = (start, lower);
            }
        }
    }
    // Zero padding on a small image: the window bound (x lives on the image only). Up to
    // MAX_WINDOW pixels it is cheap and always computed; up to MAX_LARGE_WINDOW pixels only
    // when the embedding bound misses rtol (it then needs every frequency's exact σ₁).
    let pixels = conv.input[0] * conv.input[1];
    let large_window = conv.padding_mode == PaddingMode::Zeros
        && !windowed
        && pixels <= super::window::MAX_LARGE_WINDOW
        && super::window::fits(pixels, opts.memory_limit)
        && !matches!(method, ConvMethod::BoundsOnly | ConvMethod::Gram);
    let window =
        |all: &CircularNorm| window_of(&symbol, all, conv.input, window_slack, opts.memory_limit);
    let window_upper = if windowed {
        window(&circ)?.min(cover_window)
    } else {
        cover_window
    };
    let upper_cert = if circular_exact && method != ConvMethod::Gram {
        Certificate::Exact
    } else {
        Certificate::Deterministic
    };
    let mut result = ConvBound {
        bound: Bound {
            lower: wave_lower,
            upper: circ.upper.min(window_upper).max(wave_lower),
            certificate: upper_cert,
            method: Method::Exact,
            iterations: 0,
            matvecs: 1,
            stop: Stop::Direct,
            seconds: 0.0,
        },
        method,
        circular_upper: circ.upper,
        window_upper,
        grid,
        frequencies_visited: circ.visited,
        frequencies_total: circ.total,
        limited_by: None,
    };
    match method {
        ConvMethod::ExactCircular | ConvMethod::BoundsOnly | ConvMethod::Gram => {
            result.bound.method = if method == ConvMethod::ExactCircular {
                Method::Exact
            } else {
                Method::Auto
            };
        }
        ConvMethod::Exact => {
            let inner = Options {
                method: Method::Exact,
                ..opts.clone()
            };
            // A failed dense SVD (faer can return NaN on extreme values) leaves the proven
            // embedding interval in place.
            let (b, _) = match spectral_norm_with_vector(&direct, &inner, &Hints::default()) {
                Ok(r) => r,
                Err(Error::Numerical(_)) => return Ok(result),
                Err(e) => return Err(e),
            };
            result.bound = Bound {
                upper: b.upper.min(result.bound.upper),
                lower: b.lower.max(result.bound.lower),
                ..b
            };
            if b.upper > circ.upper {
                result.bound.certificate = upper_cert;
            }
        }
        ConvMethod::Lanczos | ConvMethod::Power | ConvMethod::Auto => {
            let operator = ConvOperator::auto(conv, weights, 1, opts.memory_limit)?;
            let inner = Options {
                method: if method == ConvMethod::Power {
                    Method::Power
                } else {
                    Method::Lanczos
                },
                ..opts.clone()
            };
            let mut run = |start: &[f64], upper: f64, max_iterations: u32| {
                let hints = Hints {
                    start: Some(start),
                    random_weight: 0.1,
                    upper: Some((upper, upper_cert)),
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
            let (mut b, mut v, mut lower) = if large_window {
                // A short run first: when the embedding bound already meets rtol, the
                // window bound's eigenvalue problem is not worth its second.
                run(
                    &wave,
                    result.bound.upper,
                    LANCZOS_BEFORE_WINDOW.min(opts.max_iterations),
                )?
            } else {
                run(&wave, result.bound.upper, opts.max_iterations)?
            };
            if large_window && b.upper.max(lower) > lower * (1.0 + opts.rtol) {
                let all = circular_norm(
                    conv,
                    weights,
                    &symbol,
                    Scan::Every { slack },
                    opts.memory_limit,
                )?;
                result.window_upper = window(&all)?.min(result.window_upper);
                let upper = result.bound.upper.min(result.window_upper);
                let start = if v.is_empty() { wave.clone() } else { v };
                let first = b.matvecs;
                (b, v, lower) = run(&start, upper, opts.max_iterations)?;
                b.matvecs += first;
                lower = lower.max(result.bound.lower);
            }
            drop(v);
            result.bound = Bound {
                lower,
                upper: b.upper.max(lower),
                matvecs: b.matvecs + 2,
                ..b
            };
            if result.bound.meets(opts.rtol) {
                result.bound.stop = Stop::Converged;
            } else {
                // Lanczos reports `UpperLimited` when its Ritz values converged; otherwise a cap
                // stopped it while the lower end was still moving.
                let side = if b.stop == Stop::UpperLimited {
                    "upper"
                } else {
                    "lower"
                };
                result.limited_by = Some(side.into());
                if b.stop == Stop::Converged {
                    result.bound.stop = Stop::UpperLimited;
                }
            }
        }
    }
    result.bound.seconds = started.elapsed().as_secs_f64();
    Ok(result)
}
