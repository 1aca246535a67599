//! Test helpers: seeded random matrices with prescribed singular values, and an independent
//! oracle (faer's dense SVD of the same `f32` matrix, computed in `f64`).
#![allow(dead_code)]

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
