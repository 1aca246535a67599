//! The kernel symbol: per-frequency blocks `M(f) = Σ_{p,q} w[:,:,p,q]·e^{+2πi(f_h·p·d_h/N_h +
//! f_w·q·d_w/N_w)}` (the conjugate of Sedghi et al.'s `K̂(ω)`; same singular values) on an
//! `N_h × N_w` grid, in `f64`, computed on demand so that no layer-sized spectrum is stored.
//!
//! Only the half grid `f_w ∈ [0, N_w/2]` is enumerated: for real kernels
//! `M(−f) = conj(M(f))` has the same singular values. Taps beyond the grid wrap (aliasing) by
//! construction of the exponent. Blocks are computed separably: first `Σ_q` for every
//! `(f_w, p)`, then `Σ_p` per frequency, `C_out·C_in/g·kH` complex multiply-adds each.

use super::Conv2d;
use num_complex::Complex;
use rayon::prelude::*;

/// `f64` complex.
pub type C64 = Complex<f64>;

/// The per-frequency blocks of one conv layer on one grid.
pub struct KernelSymbol {
    nh: usize,
    nw: usize,
    wf: usize,
    kh: usize,
    groups: usize,
    og: usize,
    cg: usize,
    /// `partial[(f_w·kH + p)·pairs + pair]`, pairs ordered `(g, o, c)`.
    partial: Vec<C64>,
    /// `th[f_h·kH + p] = e^{+2πi·f_h·(p·d_h mod N_h)/N_h}`.
    th: Vec<C64>,
}

fn twiddle(k: usize, pos: usize, n: usize) -> C64 {
    let angle = 2.0 * std::f64::consts::PI * ((k * pos) % n) as f64 / n as f64;
    C64::new(angle.cos(), angle.sin())
}

impl KernelSymbol {
    /// Bytes [`KernelSymbol::new`] and the per-frequency passes over it allocate for `grid`:
    /// the twiddles, the partial sums (one `C_out × C_in/g` block per `(f_w, tap row)`), and one
    /// bound per (frequency, group).
    pub fn estimate_memory(conv: &Conv2d, grid: [usize; 2]) -> u128 {
        let [nh, nw] = grid.map(|v| v as u128);
        let wf = nw / 2 + 1;
        let (kh, kw) = (conv.kernel[0] as u128, conv.kernel[1] as u128);
        let pairs = (conv.out_channels * conv.group_in()) as u128;
        16 * (wf * kw + nh * kh + wf * kh * pairs) + 24 * nh * wf * conv.groups as u128
    }

    /// Prepares the symbol of a validated layer (`weights` OIHW) on the grid `[N_h, N_w]`.
    pub fn new(conv: &Conv2d, weights: &[f32], grid: [usize; 2]) -> Self {
        let [nh, nw] = grid;
        let wf = nw / 2 + 1;
        let (kh, kw) = (conv.kernel[0], conv.kernel[1]);
        let pairs = conv.out_channels * conv.group_in();
        let tw: Vec<C64> = (0..wf)
            .flat_map(|k| (0..kw).map(move |q| (k, q)))
            .map(|(k, q)| twiddle(k, (q * conv.dilation[1]) % nw, nw))
            .collect();
        let th = (0..nh)
            .flat_map(|k| (0..kh).map(move |p| (k, p)))
            .map(|(k, p)| twiddle(k, (p * conv.dilation[0]) % nh, nh))
            .collect();
        let mut partial = vec![C64::default(); wf * kh * pairs];
        partial
            .par_chunks_mut(pairs)
            .enumerate()
            .for_each(|(row, dst)| {
                let (f_w, p) = (row / kh, row % kh);
                for (pair, v) in dst.iter_mut().enumerate() {
                    let w = &weights[pair * kh * kw + p * kw..][..kw];
                    let mut acc = C64::default();
                    for (q, wq) in w.iter().enumerate() {
                        acc += tw[f_w * kw + q] * *wq as f64;
                    }
                    *v = acc;
                }
            });
        KernelSymbol {
            nh,
            nw,
            wf,
            kh,
            groups: conv.groups,
            og: conv.group_out(),
            cg: conv.group_in(),
            partial,
            th,
        }
    }

    /// Number of frequencies in the half grid, `N_h·(N_w/2 + 1)`.
    pub fn frequencies(&self) -> usize {
        self.nh * self.wf
    }

    /// Grid coordinates `(f_h, f_w)` of frequency index `f` (`f = f_w·N_h + f_h`).
    pub fn coordinates(&self, f: usize) -> (usize, usize) {
        (f % self.nh, f / self.nh)
    }

    /// The grid `[N_h, N_w]`.
    pub fn grid(&self) -> [usize; 2] {
        [self.nh, self.nw]
    }

    /// Groups, and each group's block shape `(C_out/g, C_in/g)`.
    pub fn block_shape(&self) -> (usize, usize, usize) {
        (self.groups, self.og, self.cg)
    }

    /// Writes `M(f)` of every group, `[g][o][c]` row-major, into `out` (`groups·og·cg`).
    pub fn blocks(&self, f: usize, out: &mut [C64]) {
        let (f_h, f_w) = self.coordinates(f);
        let pairs = self.groups * self.og * self.cg;
        out[..pairs].fill(C64::default());
        for p in 0..self.kh {
            let t = self.th[f_h * self.kh + p];
            let src = &self.partial[(f_w * self.kh + p) * pairs..(f_w * self.kh + p + 1) * pairs];
            for (o, s) in out.iter_mut().zip(src) {
                *o += t * s;
            }
        }
    }
}
