//! The circular norm on a grid, `max_f σ₁(M(f))` over the half grid of frequencies,
//! computed without an eigen-decomposition per frequency.
//!
//! Every (frequency, group) block is reduced to its smaller Gram matrix `G(f) = MᴴM` (or
//! `MMᴴ`), whose largest eigenvalue is `σ₁²`. The eigenvalues of a 512×512 Hermitian matrix
//! cost tens of times more than its Cholesky factorisation (~3 ms), so the maximum is found so:
//!
//! 1. six Lanczos steps on every block give Ritz values that rank the blocks; the best four
//!    are refined (Lanczos until the residual is well inside the slack, then certified just
//!    above their Ritz value as in 2.), and the largest Ritz value `λ*` is attained;
//! 2. every other block is *certified* below `μ = λ*(1 + ρ)²` by a Cholesky factorisation of
//!    `μI − G(f)` (it succeeds only for a positive definite matrix; Higham's backward error of
//!    the computed factor `L` moves the eigenvalues by at most `4γ_{n+1}‖L‖_F²`, which is added);
//! 3. a block whose factorisation fails may exceed `λ*`: it is refined like the candidates
//!    (exact eigenvalues if even that certificate fails).
//!
//! The upper end is the largest certified bound plus the margin for forming `G(f)`; which
//! block attains the maximum only matters for the plane wave that the caller turns into the
//! certified lower end. Blocks below 16×16 simply get exact eigenvalues.
//!
//! `G(f)` itself is cheap for small kernels: `G(f) = Σ_Δ E_Δ·e^{iφ_Δ(f)}` where
//! `E_Δ = Σ_{t'−t=Δ} W_tᵀW_{t'}` sums the real tap products at each tap offset `Δ`, so a 3×3
//! kernel needs 81 real GEMMs once instead of a complex GEMM per frequency. Larger kernels on
//! small grids form `G(f)` from the kernel symbol instead, whichever costs fewer flops.

mod block;
mod gram;

pub(crate) use block::top_ritz;
pub(crate) use gram::{block_sigma_squared, sigma_squared_margin};

use super::spectrum::{KernelSymbol, C64};
use super::Conv2d;
use crate::error::{Error, Result};
use block::{BlockValue, BlockWork, ScratchVectors};
use faer::dyn_stack::MemBuffer;
use faer::linalg::cholesky::llt::factor::cholesky_in_place_scratch;
use faer::Par;
use gram::{tap_norm_sum, GramSource, Planes};
use rayon::prelude::*;
use std::sync::Mutex;

/// The circular norm on a grid: `max_f σ₁(M(f))`, with where it is attained.
pub(crate) struct CircularNorm {
    pub upper: f64,
    /// Per half-grid frequency, an upper bound on `max_g σ₁(M_g(f))²` (exact where the
    /// block's eigenvalues were computed, the certified bound elsewhere), without `margin`.
    pub per_frequency: Vec<f64>,
    /// The rounding margin on each `σ²` (forming `G(f)` and its eigenvalues).
    pub margin: f64,
    /// The frequency and group of the largest block found.
    pub frequency: usize,
    pub group: usize,
    /// Blocks whose σ₁ was resolved (refined to the slack, or exact eigenvalues).
    pub visited: usize,
    /// Frequencies in the half grid.
    pub total: usize,
}

/// How [`circular_norm`] treats the blocks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scan {
    /// Every block's `σ₁²` to the slack (the window bound integrates over all of them):
    /// blocks below 16×16 exactly, larger ones refined (Lanczos, then a Cholesky certificate
    /// just above the Ritz value).
    Every { slack: f64 },
    /// The maximum: exact for the largest block, every other certified below
    /// `λ*(1 + ρ)²` by Cholesky, `ρ` the slack given.
    Maximum { slack: f64 },
    /// Delattre et al.'s Gram iteration per block with this many squarings: a deterministic
    /// upper bound `‖G^{2^t}‖_F^{1/2^t}` without eigenvalues (the comparison method).
    Gram { squarings: usize },
}

/// Blocks smaller than this get exact eigenvalues (no estimates, no certification).
const SMALL_BLOCK: usize = 16;
/// Lanczos steps per block for the estimates that rank the blocks.
const ESTIMATE_STEPS: usize = 6;
/// Blocks with the best estimates that are refined up front.
const CANDIDATES: usize = 4;
/// Lanczos steps at most when refining a block (then exact eigenvalues if still needed).
const REFINE_STEPS: usize = 160;

/// Blocks assembled together (they share reads of the tap terms).
const BATCH: usize = 4;

/// `max_f σ₁(M(f))` over the half grid (see the module docs); `memory_limit` caps the tap
/// product matrices and the per-thread scratch.
pub(crate) fn circular_norm(
    conv: &Conv2d,
    weights: &[f32],
    symbol: &KernelSymbol,
    scan: Scan,
    memory_limit: usize,
) -> Result<CircularNorm> {
    let (groups, _, _) = symbol.block_shape();
    let total = symbol.frequencies();
    let scanner = Scanner::new(conv, weights, symbol, memory_limit)?;
    let n = scanner.n;
    let blocks_total = total * groups;
    let all: Vec<usize> = (0..blocks_total).collect();
    let scan = match scan {
        Scan::Maximum { slack } if n < SMALL_BLOCK => Scan::Every { slack },
        other => other,
    };
    let values = match scan {
        Scan::Every { slack } => scanner.each(&all, &|s, p| scanner.refine(s, p, slack))?,
        Scan::Gram { squarings } => scanner.each(&all, &|s, p| {
            let v = s.gram_iteration(n, p, squarings);
            Ok(BlockValue {
                lower: v,
                upper: v,
                resolved: false,
            })
        })?,
        Scan::Maximum { slack } => scanner.maximum(&all, slack)?,
    };
    // The maximiser: the block with the largest known lower end.
    let argmax = (0..blocks_total).fold(0, |best, b| {
        if values[b].lower > values[best].lower {
            b
        } else {
            best
        }
    });
    let upper: Vec<f64> = values.iter().map(|v| v.upper).collect();
    let upper_squared = upper.iter().copied().fold(0.0, f64::max);
    let per_frequency = upper
        .chunks(groups)
        .map(|c| c.iter().copied().fold(0.0, f64::max))
        .collect();
    let margin = sigma_squared_margin(conv, weights);
    Ok(CircularNorm {
        upper: (upper_squared + margin).sqrt(),
        per_frequency,
        margin,
        frequency: argmax / groups,
        group: argmax % groups,
        visited: values.iter().filter(|v| v.resolved).count(),
        total,
    })
}

/// Runs work on the frequency blocks in parallel, assembling them in batches and reusing
/// per-thread scratch.
struct Scanner<'a> {
    source: GramSource<'a>,
    /// Size of the Gram matrices.
    n: usize,
    /// Blocks assembled together.
    batch: usize,
    /// Length of one frequency's symbol blocks (`groups·og·cg`).
    symbol_len: usize,
    /// `S²`, for the Cholesky certificate's margin.
    s2: f64,
    /// Scratch is pooled: rayon may call a map_init initialiser once per split, and a fresh
    /// 16n²-byte batch each time costs page faults.
    pool: Mutex<Vec<(ScratchVectors, Vec<Planes>)>>,
}

impl<'a> Scanner<'a> {
    fn new(
        conv: &Conv2d,
        weights: &[f32],
        symbol: &'a KernelSymbol,
        memory_limit: usize,
    ) -> Result<Self> {
        let (groups, og, cg) = symbol.block_shape();
        let source = GramSource::new(conv, weights, symbol, memory_limit);
        let n = source.n;
        // Each thread holds a batch of planes (16n² bytes each), a complex n² matrix and a
        // Lanczos basis: refuse blocks whose scratch alone exceeds the limit.
        let per_block_bytes = 16 * (n * n) as u128;
        let threads = rayon::current_num_threads().max(1) as u128;
        let least = threads * (2 * per_block_bytes + 16 * (REFINE_STEPS * n) as u128);
        if least > memory_limit as u128 {
            return Err(Error::TooLarge {
                what: format!("per-frequency Gram matrices of {n}×{n} ({threads} threads)"),
                needed: least,
                limit: memory_limit as u128,
            });
        }
        let batch = ((memory_limit as u128 / 4 / threads / per_block_bytes).saturating_sub(1)
            as usize)
            .clamp(1, BATCH);
        Ok(Scanner {
            source,
            n,
            batch,
            symbol_len: groups * og * cg,
            s2: tap_norm_sum(conv, weights).powi(2),
            pool: Mutex::new(Vec::new()),
        })
    }

    fn scratch(&self) -> (ScratchVectors, Vec<Planes>) {
        let n = self.n;
        let s = ScratchVectors {
            blocks: vec![C64::default(); self.symbol_len],
            complex: vec![C64::default(); n * n],
            split: std::array::from_fn(|_| vec![0.0; n]),
            stack: MemBuffer::new(cholesky_in_place_scratch::<C64>(
                n,
                Par::Seq,
                Default::default(),
            )),
        };
        (s, (0..self.batch).map(|_| Planes::new(n)).collect())
    }

    /// Runs `work` on every block of `items` (batched assembly), in parallel, results in
    /// order.
    fn each(&self, items: &[usize], work: &BlockWork<'_>) -> Result<Vec<BlockValue>> {
        let chunks: Vec<Result<Vec<BlockValue>>> = items
            .par_chunks(self.batch)
            .map(|chunk| {
                let taken = self.pool.lock().ok().and_then(|mut p| p.pop());
                let (mut s, mut planes) = taken.unwrap_or_else(|| self.scratch());
                self.source.assemble(chunk, &mut planes, &mut s);
                let values = chunk
                    .iter()
                    .zip(planes.iter())
                    .map(|(_, p)| work(&mut s, p))
                    .collect();
                if let Ok(mut p) = self.pool.lock() {
                    p.push((s, planes));
                }
                values
            })
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for c in chunks {
            out.extend(c?);
        }
        Ok(out)
    }

    /// A block refined: Lanczos to a residual well inside the slack, then a Cholesky
    /// certificate just above the Ritz value; exact eigenvalues if that fails (and for
    /// blocks too small for the rest to pay).
    fn refine(&self, s: &mut ScratchVectors, p: &Planes, slack: f64) -> Result<BlockValue> {
        let n = self.n;
        if n < SMALL_BLOCK {
            return s.exact(n, p).map(BlockValue::exact);
        }
        let (theta, residual) = s.ritz(n, p, REFINE_STEPS, slack / 4.0)?;
        let mu = (theta + residual) * (1.0 + slack);
        if let Some(upper) = s.certify(n, p, mu, self.s2) {
            return Ok(BlockValue {
                lower: theta,
                upper,
                resolved: true,
            });
        }
        s.exact(n, p).map(BlockValue::exact)
    }

    /// The maximum over `all` blocks: every block ranked by a few Lanczos steps, the best few
    /// refined, every other certified below the best (refined where that fails).
    fn maximum(&self, all: &[usize], slack: f64) -> Result<Vec<BlockValue>> {
        let n = self.n;
        // 1. Ritz values of every block after a few Lanczos steps, to rank them.
        let estimates = self.each(all, &|s, p| {
            s.ritz(n, p, ESTIMATE_STEPS, 0.0).map(|(t, _)| BlockValue {
                lower: t,
                upper: f64::INFINITY,
                resolved: false,
            })
        })?;
        let mut order = all.to_vec();
        order.sort_by(|&a, &b| {
            (estimates[b].lower)
                .total_cmp(&estimates[a].lower)
                .then(a.cmp(&b))
        });
        let (candidates, rest) = order.split_at(CANDIDATES.min(all.len()));
        // 2. The best few refined: their largest θ is λ*.
        let refined = self.each(candidates, &|s, p| self.refine(s, p, slack))?;
        let best = refined.iter().map(|v| v.lower).fold(0.0, f64::max);
        // 3. Every other block certified below μ = λ*(1 + ρ)², refined where that fails.
        // (A positive floor keeps the test meaningful for an all-zero kernel.)
        let mu = (best * (1.0 + slack).powi(2)).max(f64::MIN_POSITIVE);
        let certified = self.each(rest, &|s, p| match s.certify(n, p, mu, self.s2) {
            Some(upper) => Ok(BlockValue {
                lower: 0.0,
                upper,
                resolved: false,
            }),
            None => self.refine(s, p, slack),
        })?;
        let mut values: Vec<Option<BlockValue>> = (0..all.len()).map(|_| None).collect();
        for (&b, v) in candidates
            .iter()
            .chain(rest)
            .zip(refined.into_iter().chain(certified))
        {
            values[b] = Some(v);
        }
        Ok(values
            .into_iter()
            .map(|v| v.expect("every block is a candidate or certified"))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::PaddingMode;
    use rand::{Rng, SeedableRng};

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Layers covering tall and wide blocks, groups, dilation, rectangular kernels and a
    /// kernel that wraps around the grid.
    fn layers() -> Vec<(Conv2d, Vec<f32>)> {
        let specs = [
            Conv2d::new(12, 8, [3, 3], [16, 16]),
            Conv2d::new(6, 20, [3, 2], [12, 14]),
            Conv2d::new(32, 32, [3, 3], [10, 12]).groups(2),
            Conv2d::new(16, 16, [3, 3], [16, 16]).dilation([2, 3]),
            Conv2d::new(16, 24, [5, 5], [4, 6]),
        ];
        specs
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let c = c.mode(PaddingMode::Circular);
                let w = random(c.weight_len(), i as u64);
                (c, w)
            })
            .collect()
    }

    fn every_block_exactly(conv: &Conv2d, w: &[f32], memory_limit: usize) -> Vec<f64> {
        let symbol = KernelSymbol::new(conv, w, conv.input);
        circular_norm(conv, w, &symbol, Scan::Every { slack: 1e-12 }, memory_limit)
            .unwrap()
            .per_frequency
    }

    #[test]
    fn tap_products_give_the_same_blocks_as_the_symbol() {
        for (conv, w) in layers() {
            let symbol = KernelSymbol::new(&conv, &w, conv.input);
            let taps = GramSource::new(&conv, &w, &symbol, usize::MAX);
            let (groups, og, cg) = symbol.block_shape();
            let expected: Vec<f64> = (0..symbol.frequencies())
                .map(|f| {
                    let mut blocks = vec![C64::default(); groups * og * cg];
                    symbol.blocks(f, &mut blocks);
                    blocks
                        .chunks(og * cg)
                        .map(|b| block_sigma_squared(b, og, cg).unwrap())
                        .fold(0.0, f64::max)
                })
                .collect();
            let got = every_block_exactly(&conv, &w, usize::MAX);
            for (f, (a, b)) in got.iter().zip(&expected).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-11 * b.max(1.0),
                    "{conv:?} f {f}: {a} vs {b}"
                );
            }
            // Both routes are exercised: the 5×5 kernel on a 4×6 grid is cheaper from the
            // symbol, every other layer from tap products.
            assert_eq!(taps.offsets.is_empty(), conv.kernel == [5, 5], "{conv:?}");
        }
    }

    #[test]
    fn the_certified_maximum_brackets_the_exact_one() {
        for (conv, w) in layers() {
            let symbol = KernelSymbol::new(&conv, &w, conv.input);
            let exact = every_block_exactly(&conv, &w, usize::MAX)
                .into_iter()
                .fold(0.0, f64::max);
            for slack in [1e-8, 1e-3] {
                let scan = Scan::Maximum { slack };
                let max = circular_norm(&conv, &w, &symbol, scan, usize::MAX).unwrap();
                let s = exact.sqrt();
                assert!(max.upper >= s, "{conv:?}: {} < {s}", max.upper);
                assert!(max.upper <= s * (1.0 + 2.0 * slack + 1e-12), "{conv:?}");
                // The maximiser found is the exact maximum's block (to the slack).
                let at = max.per_frequency[max.frequency];
                assert!(at >= exact * (1.0 - 1e-10), "{conv:?}: {at} vs {exact}");
            }
            // Gram iteration: an upper bound, looser than the exact maximum.
            let gram = circular_norm(&conv, &w, &symbol, Scan::Gram { squarings: 6 }, usize::MAX);
            let gram = gram.unwrap().upper;
            assert!(
                gram >= exact.sqrt() && gram <= exact.sqrt() * 1.1,
                "{conv:?}: {gram}"
            );
        }
    }

    #[test]
    fn cholesky_certifies_exactly_the_shifts_above_the_largest_eigenvalue() {
        let (conv, w) = layers().swap_remove(0);
        let symbol = KernelSymbol::new(&conv, &w, conv.input);
        let source = GramSource::new(&conv, &w, &symbol, usize::MAX);
        let n = source.n;
        let mut s = ScratchVectors {
            blocks: vec![C64::default(); 12 * 8],
            complex: vec![C64::default(); n * n],
            split: std::array::from_fn(|_| vec![0.0; n]),
            stack: MemBuffer::new(cholesky_in_place_scratch::<C64>(
                n,
                Par::Seq,
                Default::default(),
            )),
        };
        let mut planes = vec![Planes::new(n)];
        for f in [0, 5, 77] {
            source.assemble(&[f], &mut planes, &mut s);
            let lambda = s.exact(n, &planes[0]).unwrap();
            let above = s.certify(n, &planes[0], lambda * (1.0 + 1e-9), 1e3);
            assert!(above.is_some_and(|u| u >= lambda * (1.0 + 1e-9) && u < lambda * (1.0 + 1e-8)));
            assert!(s
                .certify(n, &planes[0], lambda * (1.0 - 1e-9), 1e3)
                .is_none());
            // The Lanczos estimate is a Rayleigh quotient (below), refined it converges.
            let (theta, _) = s.ritz(n, &planes[0], 3, 0.0).unwrap();
            assert!(theta <= lambda * (1.0 + 1e-12));
            let (theta, residual) = s.ritz(n, &planes[0], 200, 1e-12).unwrap();
            assert!((theta - lambda).abs() <= residual.max(1e-12 * lambda) * 1.01);
        }
    }

    #[test]
    fn an_all_zero_kernel_has_norm_zero() {
        let conv = Conv2d::new(20, 20, [3, 3], [8, 8]).mode(PaddingMode::Circular);
        let w = vec![0.0f32; conv.weight_len()];
        let symbol = KernelSymbol::new(&conv, &w, conv.input);
        let max = circular_norm(&conv, &w, &symbol, Scan::Maximum { slack: 1e-8 }, 1 << 30);
        assert!(max.unwrap().upper < 1e-100);
    }
}
