//! Small vector kernels on the hot paths, with run-time dispatch to AVX2/AVX-512 builds of
//! the same code.
//!
//! Why hand-written: a dense matvec with `f32` weights and `f64` vectors is bound by memory
//! bandwidth, and LLVM only vectorises the mixed-precision loops well when it may use wide
//! registers; we compile each kernel once per instruction set and pick at run time, so the
//! binary still runs on any x86-64 (and elsewhere) while using AVX-512 where present.
//!
//! The summation order is fixed by the code (eight independent accumulators, then a fixed
//! tree), not by the instruction set, so every build gives bit-identical results.

const LANES: usize = 8;
/// Accumulators of a dot product: four independent AVX-512 (or eight AVX2) dependency chains,
/// enough to hide the latency of floating-point addition.
const DOT_LANES: usize = 32;

/// Fixed-order pairwise sum of the accumulators.
#[inline(always)]
fn reduce_lanes(acc: &[f64; DOT_LANES]) -> f64 {
    let mut v = *acc;
    let mut width = DOT_LANES / 2;
    while width > 0 {
        for l in 0..width {
            v[l] += v[l + width];
        }
        width /= 2;
    }
    v[0]
}

#[inline(always)]
fn dot_f32_f64_body(a: &[f32], x: &[f64]) -> f64 {
    let n = a.len().min(x.len());
    let (a, x) = (&a[..n], &x[..n]);
    let mut acc = [0.0f64; DOT_LANES];
    let chunks = n / DOT_LANES;
    for c in 0..chunks {
        let ac = &a[c * DOT_LANES..c * DOT_LANES + DOT_LANES];
        let xc = &x[c * DOT_LANES..c * DOT_LANES + DOT_LANES];
        for l in 0..DOT_LANES {
            acc[l] += ac[l] as f64 * xc[l];
        }
    }
    let mut tail = 0.0;
    for i in chunks * DOT_LANES..n {
        tail += a[i] as f64 * x[i];
    }
    reduce_lanes(&acc) + tail
}

#[inline(always)]
fn axpy_f32_f64_body(alpha: f64, a: &[f32], z: &mut [f64]) {
    let n = a.len().min(z.len());
    for (zi, ai) in z[..n].iter_mut().zip(&a[..n]) {
        *zi += alpha * (*ai as f64);
    }
}

#[inline(always)]
fn dot_f64_body(a: &[f64], x: &[f64]) -> f64 {
    let n = a.len().min(x.len());
    let (a, x) = (&a[..n], &x[..n]);
    let mut acc = [0.0f64; DOT_LANES];
    let chunks = n / DOT_LANES;
    for c in 0..chunks {
        let ac = &a[c * DOT_LANES..c * DOT_LANES + DOT_LANES];
        let xc = &x[c * DOT_LANES..c * DOT_LANES + DOT_LANES];
        for l in 0..DOT_LANES {
            acc[l] += ac[l] * xc[l];
        }
    }
    let mut tail = 0.0;
    for i in chunks * DOT_LANES..n {
        tail += a[i] * x[i];
    }
    reduce_lanes(&acc) + tail
}

#[inline(always)]
fn axpy_f64_body(alpha: f64, a: &[f64], z: &mut [f64]) {
    let n = a.len().min(z.len());
    for (zi, ai) in z[..n].iter_mut().zip(&a[..n]) {
        *zi += alpha * *ai;
    }
}

macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident, $body:ident, ($($arg:ident : $ty:ty),*) -> $ret:ty) => {
        $(#[$doc])*
        #[inline]
        pub fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) -> $ret { $body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) -> $ret { $body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports the features `v4` was compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports the features `v3` was compiled for.
                    return unsafe { v3($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

/// `Σ a[i]·x[i]` with `f32` weights and `f64` accumulation (explicit AVX-512/AVX2 where
/// available; same summation order, hence the same bits, on every path).
#[inline]
pub fn dot_f32_f64(a: &[f32], x: &[f64]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F.
            return unsafe { x86::dot_f32_f64_avx512(a, x) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2.
            return unsafe { x86::dot_f32_f64_avx2(a, x) };
        }
    }
    dot_f32_f64_body(a, x)
}

/// `z += alpha·a` with `f32` `a` (explicit AVX-512/AVX2 where available; elementwise, so
/// every path gives the same bits).
#[inline]
pub fn axpy_f32_f64(alpha: f64, a: &[f32], z: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F.
            return unsafe { x86::axpy_f32_f64_avx512(alpha, a, z) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2.
            return unsafe { x86::axpy_f32_f64_avx2(alpha, a, z) };
        }
    }
    axpy_f32_f64_body(alpha, a, z)
}

/// Four dot products `aₖ·x` at once, sharing the loads of `x`; bit-identical to four calls of
/// [`dot_f32_f64`]. The rows must have equal lengths.
#[inline]
pub fn dot4_f32_f64(rows: [&[f32]; 4], x: &[f64]) -> [f64; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F.
            return unsafe { x86::dot4_f32_f64_avx512(rows, x) };
        }
    }
    rows.map(|r| dot_f32_f64(r, x))
}

/// `z += Σₖ alphaₖ·aₖ`, adding the four terms in order, sharing the loads and stores of `z`;
/// bit-identical to four calls of [`axpy_f32_f64`].
#[inline]
pub fn axpy4_f32_f64(alphas: [f64; 4], rows: [&[f32]; 4], z: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F.
            return unsafe { x86::axpy4_f32_f64_avx512(alphas, rows, z) };
        }
    }
    for (alpha, row) in alphas.iter().zip(rows) {
        axpy_f32_f64(*alpha, row, z);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Explicit SIMD for the mixed-precision kernels. Multiplication and addition stay
    //! separate (no FMA) so that the rounding is that of the portable code.
    use super::{reduce_lanes, DOT_LANES};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot_f32_f64_avx512(a: &[f32], x: &[f64]) -> f64 {
        let n = a.len().min(x.len());
        let chunks = n / DOT_LANES;
        let (pa, px) = (a.as_ptr(), x.as_ptr());
        let mut acc = [_mm512_setzero_pd(); 4];
        for c in 0..chunks {
            let base = c * DOT_LANES;
            for (r, accr) in acc.iter_mut().enumerate() {
                // SAFETY: base + 8r + 8 ≤ chunks·32 ≤ n, inside both slices.
                let av = _mm512_cvtps_pd(unsafe { _mm256_loadu_ps(pa.add(base + 8 * r)) });
                // SAFETY: as above.
                let xv = unsafe { _mm512_loadu_pd(px.add(base + 8 * r)) };
                *accr = _mm512_add_pd(*accr, _mm512_mul_pd(av, xv));
            }
        }
        let mut lanes = [0.0f64; DOT_LANES];
        for (r, accr) in acc.iter().enumerate() {
            // SAFETY: lanes has 32 slots; 8r + 8 ≤ 32.
            unsafe { _mm512_storeu_pd(lanes.as_mut_ptr().add(8 * r), *accr) };
        }
        let mut tail = 0.0;
        for i in chunks * DOT_LANES..n {
            tail += a[i] as f64 * x[i];
        }
        reduce_lanes(&lanes) + tail
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot4_f32_f64_avx512(rows: [&[f32]; 4], x: &[f64]) -> [f64; 4] {
        let n = rows.iter().map(|r| r.len()).min().unwrap_or(0).min(x.len());
        let chunks = n / DOT_LANES;
        let px = x.as_ptr();
        let pr = rows.map(|r| r.as_ptr());
        let mut acc = [[_mm512_setzero_pd(); 4]; 4];
        for c in 0..chunks {
            let base = c * DOT_LANES;
            for r in 0..4 {
                // SAFETY: base + 8r + 8 ≤ chunks·32 ≤ n, inside x and every row.
                let xv = unsafe { _mm512_loadu_pd(px.add(base + 8 * r)) };
                for (k, acck) in acc.iter_mut().enumerate() {
                    // SAFETY: as above, for row k.
                    let av = _mm512_cvtps_pd(unsafe { _mm256_loadu_ps(pr[k].add(base + 8 * r)) });
                    acck[r] = _mm512_add_pd(acck[r], _mm512_mul_pd(av, xv));
                }
            }
        }
        let mut out = [0.0f64; 4];
        for k in 0..4 {
            let mut lanes = [0.0f64; DOT_LANES];
            for (r, accr) in acc[k].iter().enumerate() {
                // SAFETY: lanes has 32 slots; 8r + 8 ≤ 32.
                unsafe { _mm512_storeu_pd(lanes.as_mut_ptr().add(8 * r), *accr) };
            }
            let mut tail = 0.0;
            for i in chunks * DOT_LANES..n {
                tail += rows[k][i] as f64 * x[i];
            }
            out[k] = reduce_lanes(&lanes) + tail;
        }
        out
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn axpy4_f32_f64_avx512(alphas: [f64; 4], rows: [&[f32]; 4], z: &mut [f64]) {
        let n = rows.iter().map(|r| r.len()).min().unwrap_or(0).min(z.len());
        let chunks = n / 8;
        let pz = z.as_mut_ptr();
        let pr = rows.map(|r| r.as_ptr());
        let al = alphas.map(|a| _mm512_set1_pd(a));
        for c in 0..chunks {
            // SAFETY: 8c + 8 ≤ n, inside z and every row.
            unsafe {
                let mut zv = _mm512_loadu_pd(pz.add(8 * c));
                for k in 0..4 {
                    let av = _mm512_cvtps_pd(_mm256_loadu_ps(pr[k].add(8 * c)));
                    zv = _mm512_add_pd(zv, _mm512_mul_pd(al[k], av));
                }
                _mm512_storeu_pd(pz.add(8 * c), zv);
            }
        }
        for i in chunks * 8..n {
            for k in 0..4 {
                z[i] += alphas[k] * rows[k][i] as f64;
            }
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot_f32_f64_avx2(a: &[f32], x: &[f64]) -> f64 {
        let n = a.len().min(x.len());
        let chunks = n / DOT_LANES;
        let (pa, px) = (a.as_ptr(), x.as_ptr());
        let mut acc = [_mm256_setzero_pd(); 8];
        for c in 0..chunks {
            let base = c * DOT_LANES;
            for (r, accr) in acc.iter_mut().enumerate() {
                // SAFETY: base + 4r + 4 ≤ chunks·32 ≤ n, inside both slices.
                let av = _mm256_cvtps_pd(unsafe { _mm_loadu_ps(pa.add(base + 4 * r)) });
                // SAFETY: as above.
                let xv = unsafe { _mm256_loadu_pd(px.add(base + 4 * r)) };
                *accr = _mm256_add_pd(*accr, _mm256_mul_pd(av, xv));
            }
        }
        let mut lanes = [0.0f64; DOT_LANES];
        for (r, accr) in acc.iter().enumerate() {
            // SAFETY: lanes has 32 slots; 4r + 4 ≤ 32.
            unsafe { _mm256_storeu_pd(lanes.as_mut_ptr().add(4 * r), *accr) };
        }
        let mut tail = 0.0;
        for i in chunks * DOT_LANES..n {
            tail += a[i] as f64 * x[i];
        }
        reduce_lanes(&lanes) + tail
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn axpy_f32_f64_avx512(alpha: f64, a: &[f32], z: &mut [f64]) {
        let n = a.len().min(z.len());
        let chunks = n / 8;
        let (pa, pz) = (a.as_ptr(), z.as_mut_ptr());
        let al = _mm512_set1_pd(alpha);
        for c in 0..chunks {
            // SAFETY: 8c + 8 ≤ n, inside both slices.
            unsafe {
                let av = _mm512_cvtps_pd(_mm256_loadu_ps(pa.add(8 * c)));
                let zv = _mm512_loadu_pd(pz.add(8 * c));
                _mm512_storeu_pd(pz.add(8 * c), _mm512_add_pd(zv, _mm512_mul_pd(al, av)));
            }
        }
        for i in chunks * 8..n {
            z[i] += alpha * a[i] as f64;
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn axpy_f32_f64_avx2(alpha: f64, a: &[f32], z: &mut [f64]) {
        let n = a.len().min(z.len());
        let chunks = n / 4;
        let (pa, pz) = (a.as_ptr(), z.as_mut_ptr());
        let al = _mm256_set1_pd(alpha);
        for c in 0..chunks {
            // SAFETY: 4c + 4 ≤ n, inside both slices.
            unsafe {
                let av = _mm256_cvtps_pd(_mm_loadu_ps(pa.add(4 * c)));
                let zv = _mm256_loadu_pd(pz.add(4 * c));
                _mm256_storeu_pd(pz.add(4 * c), _mm256_add_pd(zv, _mm256_mul_pd(al, av)));
            }
        }
        for i in chunks * 4..n {
            z[i] += alpha * a[i] as f64;
        }
    }
}

#[inline(always)]
fn axpy_pair_body(c: f64, a: &[f64], z: &mut [f64], s: f64, b: &[f64], w: &mut [f64]) {
    let n = a.len().min(z.len());
    for (zi, ai) in z[..n].iter_mut().zip(&a[..n]) {
        *zi += c * *ai;
    }
    let n = b.len().min(w.len());
    for (wi, bi) in w[..n].iter_mut().zip(&b[..n]) {
        *wi += s * *bi;
    }
}

#[inline(always)]
fn hermitian_column_body(
    a: &[f64],
    b: &[f64],
    x: [&[f64]; 2],
    xj: [f64; 2],
    yr: &mut [f64],
    yi: &mut [f64],
) -> [f64; 2] {
    let n = a.len();
    let (b, xr, xi) = (&b[..n], &x[0][..n], &x[1][..n]);
    let (yr, yi) = (&mut yr[..n], &mut yi[..n]);
    let [xrj, xij] = xj;
    let mut re = [0.0f64; LANES];
    let mut im = [0.0f64; LANES];
    let chunks = n / LANES;
    for c in 0..chunks {
        for l in 0..LANES {
            let k = c * LANES + l;
            let (ak, bk) = (a[k], b[k]);
            yr[k] += ak * xrj - bk * xij;
            yi[k] += ak * xij + bk * xrj;
            re[l] += ak * xr[k] + bk * xi[k];
            im[l] += ak * xi[k] - bk * xr[k];
        }
    }
    let (mut tr, mut ti) = (0.0, 0.0);
    for k in chunks * LANES..n {
        let (ak, bk) = (a[k], b[k]);
        yr[k] += ak * xrj - bk * xij;
        yi[k] += ak * xij + bk * xrj;
        tr += ak * xr[k] + bk * xi[k];
        ti += ak * xi[k] - bk * xr[k];
    }
    let tree = |v: [f64; LANES]| ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
    [tree(re) + tr, tree(im) + ti]
}

dispatch!(
    /// `z += c·a` and `w += s·b` in `f64` (two independent updates in one call).
    axpy_pair, axpy_pair_body, (c: f64, a: &[f64], z: &mut [f64], s: f64, b: &[f64], w: &mut [f64]) -> ()
);
dispatch!(
    /// One column of a Hermitian matrix-vector product from the strictly lower part of
    /// column `j` (`a + i·b`, rows below the diagonal): `y[i] += (a + i·b)·x_j` below the
    /// diagonal, and returns `Σ_i (a − i·b)·x[i]` (the row-`j` contribution of the upper
    /// part). Complex vectors are split into real and imaginary slices.
    hermitian_column, hermitian_column_body,
    (a: &[f64], b: &[f64], x: [&[f64]; 2], xj: [f64; 2], yr: &mut [f64], yi: &mut [f64]) -> [f64; 2]
);
dispatch!(
    /// `Σ a[i]·x[i]` in `f64`.
    dot, dot_f64_body, (a: &[f64], x: &[f64]) -> f64
);
dispatch!(
    /// `z += alpha·a` in `f64`.
    axpy, axpy_f64_body, (alpha: f64, a: &[f64], z: &mut [f64]) -> ()
);

/// Euclidean norm, scaled to avoid overflow and underflow.
pub fn norm2(x: &[f64]) -> f64 {
    let scale = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if scale == 0.0 || !scale.is_finite() {
        return scale;
    }
    let inv = 1.0 / scale;
    let mut acc = [0.0f64; LANES];
    let chunks = x.len() / LANES;
    for c in 0..chunks {
        for l in 0..LANES {
            let v = x[c * LANES + l] * inv;
            acc[l] += v * v;
        }
    }
    let mut tail = 0.0;
    for v in &x[chunks * LANES..] {
        tail += (v * inv) * (v * inv);
    }
    let sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    scale * (sum + tail).sqrt()
}

/// `x *= alpha`.
pub fn scale(alpha: f64, x: &mut [f64]) {
    for v in x {
        *v *= alpha;
    }
}

/// Unit roundoff of `f64`.
pub const UNIT_ROUNDOFF: f64 = f64::EPSILON / 2.0;

/// `γ_k = k·u/(1 − k·u)`, the classical bound on relative rounding error of a `k`-term sum.
pub fn gamma(k: usize) -> f64 {
    let ku = k as f64 * UNIT_ROUNDOFF;
    if ku >= 0.5 {
        1.0
    } else {
        ku / (1.0 - ku)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatched_kernels_match_scalar_bodies_bitwise() {
        let a32: Vec<f32> = (0..1003)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let a64: Vec<f64> = a32.iter().map(|&v| v as f64 * 1.000001).collect();
        let x: Vec<f64> = (0..1003)
            .map(|i| ((i * 13 % 29) as f64 - 14.0) / 3.0)
            .collect();
        assert_eq!(dot_f32_f64(&a32, &x), dot_f32_f64_body(&a32, &x));
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: feature checked.
            let avx2 = unsafe { x86::dot_f32_f64_avx2(&a32, &x) };
            assert_eq!(avx2, dot_f32_f64_body(&a32, &x));
            let mut z3 = x.clone();
            let mut z4 = x.clone();
            // SAFETY: feature checked.
            unsafe { x86::axpy_f32_f64_avx2(-1.7, &a32, &mut z3) };
            axpy_f32_f64_body(-1.7, &a32, &mut z4);
            assert_eq!(z3, z4);
        }
        assert_eq!(dot(&a64, &x), dot_f64_body(&a64, &x));
        let mut z1 = x.clone();
        let mut z2 = x.clone();
        axpy_f32_f64(0.3, &a32, &mut z1);
        axpy_f32_f64_body(0.3, &a32, &mut z2);
        assert_eq!(z1, z2);
        let rows: [&[f32]; 4] = [&a32[..1000], &a32[1..1001], &a32[2..1002], &a32[3..1003]];
        let four = dot4_f32_f64(rows, &x[..1000]);
        for k in 0..4 {
            assert_eq!(four[k], dot_f32_f64_body(rows[k], &x[..1000]));
        }
        let mut z5 = x[..1000].to_vec();
        let mut z6 = x[..1000].to_vec();
        axpy4_f32_f64([0.5, -1.25, 3.0, 1e-3], rows, &mut z5);
        for (alpha, row) in [0.5, -1.25, 3.0, 1e-3].iter().zip(rows) {
            axpy_f32_f64_body(*alpha, row, &mut z6);
        }
        assert_eq!(z5, z6);
        // The Hermitian-column kernel: dispatched = scalar body, and = the plain definition.
        let (a, b) = (&a64[..1001], &a64[2..1003]);
        let (xr, xi) = (&x[..1001], &x[1..1002]);
        let (mut yr1, mut yi1) = (x[..1001].to_vec(), x[2..1003].to_vec());
        let (mut yr2, mut yi2) = (yr1.clone(), yi1.clone());
        let d1 = hermitian_column(a, b, [xr, xi], [0.7, -0.2], &mut yr1, &mut yi1);
        let d2 = hermitian_column_body(a, b, [xr, xi], [0.7, -0.2], &mut yr2, &mut yi2);
        assert_eq!((d1, &yr1, &yi1), (d2, &yr2, &yi2));
        let plain: f64 = (0..1001).map(|k| a[k] * xr[k] + b[k] * xi[k]).sum();
        assert!((d1[0] - plain).abs() <= 1e-12 * plain.abs().max(1.0));
        assert_eq!(yr1[5], x[5] + (a[5] * 0.7 - b[5] * -0.2));
        let (mut z7, mut w7) = (x.clone(), x.clone());
        let (mut z8, mut w8) = (x.clone(), x.clone());
        axpy_pair(0.3, &a64, &mut z7, -2.0, &x, &mut w7);
        axpy_pair_body(0.3, &a64, &mut z8, -2.0, &x, &mut w8);
        assert_eq!((z7, w7), (z8, w8));
        let naive: f64 = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((norm2(&x) - naive).abs() <= 1e-12 * naive);
        assert_eq!(norm2(&[0.0; 4]), 0.0);
        assert!((norm2(&[3e200, 4e200]) / 5e200 - 1.0).abs() < 1e-15);
    }
}
