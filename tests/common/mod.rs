//! Test helpers: seeded random matrices with prescribed singular values, and an independent
//! oracle (faer's dense SVD of the same `f32` matrix, computed in `f64`).
#![allow(dead_code)]

pub mod onnx;

use faer::Mat;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn gaussian_matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    (0..rows * cols)
        .map(|_| {
            let v: f64 = r.sample(rand_distr::StandardNormal);
            v as f32
        })
        .collect()
}

fn orthonormal_columns(n: usize, k: usize, seed: u64) -> Mat<f64> {
    let mut r = rng(seed);
    let g = Mat::<f64>::from_fn(n, k, |_, _| r.sample(rand_distr::StandardNormal));
    let qr = g.qr();
    qr.compute_thin_Q()
}

/// Row-major `rows × cols` matrix `U diag(s) Vᵀ` with random orthonormal `U`, `V`.
pub fn matrix_with_singular_values(rows: usize, cols: usize, s: &[f64], seed: u64) -> Vec<f32> {
    let k = s.len();
    let u = orthonormal_columns(rows, k, seed);
    let v = orthonormal_columns(cols, k, seed + 1);
    let mut a = vec![0f32; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            let mut acc = 0.0;
            for (l, sl) in s.iter().enumerate() {
                acc += u[(i, l)] * sl * v[(j, l)];
            }
            a[i * cols + j] = acc as f32;
        }
    }
    a
}

/// σ₁ of the row-major `f32` matrix, by faer's SVD in `f64` (independent of our code paths).
pub fn oracle_sigma(a: &[f32], rows: usize, cols: usize) -> f64 {
    let m = Mat::<f64>::from_fn(rows, cols, |i, j| a[i * cols + j] as f64);
    m.singular_values().unwrap()[0]
}

/// Asserts `lower ≤ σ ≤ upper` with the given absolute slack for the oracle's own rounding.
pub fn assert_contains(b: &lipschitz::Bound, sigma: f64, what: &str) {
    let slack = 1e-12 * sigma.max(1e-300);
    assert!(
        b.lower <= sigma + slack && sigma <= b.upper + slack,
        "{what}: σ = {sigma} not in [{}, {}] ({:?})",
        b.lower,
        b.upper,
        b
    );
}

/// `y[o,i,j] = Σ_c Σ_{p,q} w[o,c,p,q]·x̃[g(o)·cg + c, i·s + p·d − pad_top, j·s + q·d − pad_left]`,
/// written directly from the definition (no code shared with the library).
pub fn naive(conv: &lipschitz::conv::Conv2d, w: &[f32], x: &[f64]) -> Vec<f64> {
    let (h, wd) = (conv.input[0] as i64, conv.input[1] as i64);
    let ho = (h + (conv.pads[0] + conv.pads[2]) as i64
        - (conv.dilation[0] * (conv.kernel[0] - 1)) as i64
        - 1)
        / conv.stride[0] as i64
        + 1;
    let wo = (wd + (conv.pads[1] + conv.pads[3]) as i64
        - (conv.dilation[1] * (conv.kernel[1] - 1)) as i64
        - 1)
        / conv.stride[1] as i64
        + 1;
    let (ho, wo) = (ho as usize, wo as usize);
    let cg = conv.in_channels / conv.groups;
    let og = conv.out_channels / conv.groups;
    let (kh, kw) = (conv.kernel[0], conv.kernel[1]);
    let mut y = vec![0.0; conv.out_channels * ho * wo];
    for o in 0..conv.out_channels {
        let g = o / og;
        for i in 0..ho {
            for j in 0..wo {
                let mut acc = 0.0;
                for c in 0..cg {
                    for p in 0..kh {
                        for q in 0..kw {
                            let mut r = (i * conv.stride[0] + p * conv.dilation[0]) as i64
                                - conv.pads[0] as i64;
                            let mut s = (j * conv.stride[1] + q * conv.dilation[1]) as i64
                                - conv.pads[1] as i64;
                            if conv.padding_mode == lipschitz::conv::PaddingMode::Circular {
                                r = r.rem_euclid(h);
                                s = s.rem_euclid(wd);
                            } else if r < 0 || r >= h || s < 0 || s >= wd {
                                continue;
                            }
                            let xv = x[((g * cg + c) as i64 * h * wd + r * wd + s) as usize];
                            acc += w[((o * cg + c) * kh + p) * kw + q] as f64 * xv;
                        }
                    }
                }
                y[(o * ho + i) * wo + j] = acc;
            }
        }
    }
    y
}

/// The explicit matrix of the naive conv (column-major) and its σ₁ by faer's SVD.
pub fn naive_sigma(conv: &lipschitz::conv::Conv2d, w: &[f32]) -> f64 {
    let n = conv.input_len();
    let m = conv.output_len();
    let mut a = Mat::<f64>::zeros(m, n);
    for j in 0..n {
        let mut e = vec![0.0; n];
        e[j] = 1.0;
        for (i, v) in naive(conv, w, &e).into_iter().enumerate() {
            a[(i, j)] = v;
        }
    }
    a.singular_values().unwrap()[0]
}

/// Named conv layers covering every option, shared by the operator and norm tests.
pub fn conv_cases() -> Vec<(&'static str, lipschitz::conv::Conv2d)> {
    use lipschitz::conv::Conv2d;
    use lipschitz::conv::PaddingMode::*;
    vec![
        ("same 3×3", Conv2d::new(3, 2, [3, 3], [6, 6]).padding(1)),
        ("valid", Conv2d::new(2, 3, [3, 3], [7, 6])),
        (
            "asymmetric pads",
            Conv2d::new(2, 2, [3, 2], [5, 6]).pads([2, 0, 1, 3]),
        ),
        (
            "rectangular kernel and image",
            Conv2d::new(3, 2, [2, 5], [4, 9]).pads([1, 2, 1, 2]),
        ),
        (
            "stride 2",
            Conv2d::new(2, 3, [3, 3], [8, 7]).padding(1).stride([2, 2]),
        ),
        (
            "stride 3 × 2",
            Conv2d::new(2, 2, [3, 3], [10, 9]).padding(1).stride([3, 2]),
        ),
        (
            "dilation 2",
            Conv2d::new(2, 2, [3, 3], [9, 8])
                .padding(2)
                .dilation([2, 2]),
        ),
        (
            "groups",
            Conv2d::new(4, 6, [3, 3], [5, 5]).padding(1).groups(2),
        ),
        (
            "depthwise",
            Conv2d::new(3, 3, [3, 3], [6, 5]).padding(1).groups(3),
        ),
        (
            "depthwise multiplier 2",
            Conv2d::new(6, 3, [3, 3], [5, 5]).padding(1).groups(3),
        ),
        ("1×1", Conv2d::new(4, 3, [1, 1], [5, 4])),
        (
            "circular",
            Conv2d::new(2, 3, [3, 3], [6, 5]).padding(1).mode(Circular),
        ),
        (
            "circular stride 2",
            Conv2d::new(2, 2, [3, 3], [8, 6])
                .padding(1)
                .stride([2, 2])
                .mode(Circular),
        ),
        (
            "circular kernel > image",
            Conv2d::new(2, 2, [5, 4], [3, 2])
                .pads([2, 1, 2, 2])
                .mode(Circular),
        ),
        (
            "circular dilation wraps",
            Conv2d::new(1, 2, [3, 3], [4, 4])
                .padding(2)
                .dilation([2, 3])
                .mode(Circular),
        ),
        (
            "circular asymmetric, outputs wrap",
            Conv2d::new(2, 1, [2, 2], [3, 3])
                .pads([3, 0, 2, 4])
                .mode(Circular),
        ),
        ("zeros same", Conv2d::new(3, 2, [3, 3], [6, 6]).padding(1)),
        (
            "rectangular",
            Conv2d::new(3, 2, [2, 5], [4, 9]).pads([1, 2, 1, 2]),
        ),
        (
            "stride 3",
            Conv2d::new(2, 2, [3, 3], [10, 9]).padding(1).stride([3, 3]),
        ),
        (
            "circular dilation",
            Conv2d::new(2, 2, [3, 3], [7, 6])
                .padding(2)
                .dilation([2, 2])
                .mode(Circular),
        ),
        (
            "circular depthwise",
            Conv2d::new(4, 4, [3, 3], [6, 6])
                .padding(1)
                .groups(4)
                .mode(Circular),
        ),
        (
            "circular groups",
            Conv2d::new(4, 2, [3, 3], [5, 7])
                .padding(1)
                .groups(2)
                .mode(Circular),
        ),
        (
            "circular 8 channels",
            Conv2d::new(8, 8, [3, 3], [5, 6]).padding(1).mode(Circular),
        ),
        (
            "circular 12→9",
            Conv2d::new(12, 9, [3, 3], [4, 5]).padding(1).mode(Circular),
        ),
        (
            "zeros 8 channels",
            Conv2d::new(8, 8, [3, 3], [5, 5]).padding(1),
        ),
        (
            "zeros 16 channels",
            Conv2d::new(16, 16, [3, 3], [6, 6]).padding(1),
        ),
        (
            "circular outputs wrap",
            Conv2d::new(2, 2, [1, 1], [6, 6])
                .pads([1, 0, 0, 1])
                .stride([1, 2])
                .mode(Circular),
        ),
        (
            "circular big pads",
            Conv2d::new(2, 1, [2, 2], [3, 3])
                .pads([3, 0, 2, 4])
                .mode(Circular),
        ),
        (
            "circular valid-sized",
            Conv2d::new(2, 2, [3, 3], [6, 5]).mode(Circular),
        ),
        (
            "circular stride 2 exact",
            Conv2d::new(3, 2, [3, 3], [8, 6])
                .pads([1, 1, 0, 0])
                .stride([2, 2])
                .mode(Circular),
        ),
        (
            "circular stride 3×2 dilated",
            Conv2d::new(2, 2, [3, 2], [9, 8])
                .pads([2, 1, 0, 0])
                .stride([3, 2])
                .dilation([2, 1])
                .mode(Circular),
        ),
        (
            "circular stride 2 depthwise",
            Conv2d::new(4, 4, [3, 3], [6, 6])
                .pads([1, 1, 0, 0])
                .stride([2, 2])
                .groups(4)
                .mode(Circular),
        ),
        (
            "zeros stride 2 (ResNet-like)",
            Conv2d::new(4, 3, [3, 3], [8, 8]).padding(1).stride([2, 2]),
        ),
        (
            "zeros 1×1 stride 2",
            Conv2d::new(4, 3, [1, 1], [8, 7]).stride([2, 2]),
        ),
    ]
}
