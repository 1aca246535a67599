//! Evaluation of nodes whose inputs are all constants: the shape arithmetic exporters write
//! (`Shape → Gather → Concat → Reshape`, `ConstantOfShape`, `Where`), and weights computed
//! from parameters in the forward pass and left in the graph (AOL's rescaling
//! `W·diag(Σ|WᵀW|)^{-1/2}`, SLL's `T`, orthogonal or normalised weights).
//!
//! What is certified is the model in exact arithmetic (as for BatchNorm's `γ/√(σ² + ε)`):
//! values are computed in `f64` with numpy broadcasting, and every float result carries
//! `error`, a bound on `max_i |ours_i − exact_i|`. Each operation adds the propagated input
//! errors (through its local Lipschitz constant on the values at hand) and its own rounding
//! `u·max|out|` with `u = 2⁻⁵¹` (twice `f64`'s unit roundoff); sums of `n` terms add
//! `γ_n = nu/(1 − nu)` times their sum of magnitudes (Higham, (3.5)). A layer whose weights
//! carry an error gets `error·√len` as its Frobenius weight error and an elementwise scale
//! gets `error` added to its constant (see `Node::weight_error`). Integer results are exact.

use super::tensor::{Const, ConstData};
use crate::error::{Error, Result};

/// Twice `f64`'s unit roundoff.
pub(super) const U: f64 = f64::EPSILON;

/// `γ_n = nu/(1 − nu)` for sums of `n` terms.
fn gamma(n: usize) -> f64 {
    let nu = n as f64 * U;
    if nu >= 0.5 {
        f64::INFINITY
    } else {
        nu / (1.0 - nu)
    }
}

/// A constant being evaluated: dims, values, whether integer, and its error bound.
#[derive(Debug, Clone)]
pub(super) struct Arr {
    pub(super) dims: Vec<usize>,
    pub(super) v: Vec<f64>,
    pub(super) int: bool,
    pub(super) err: f64,
}

fn bad(what: &str, value: impl std::fmt::Debug, reason: &str) -> Error {
    Error::invalid(what, format!("{value:?}"), reason)
}

impl Arr {
    pub(super) fn of(c: &Const) -> Arr {
        Arr {
            dims: c.dims.clone(),
            v: c.f64s(),
            int: c.is_int(),
            err: c.error,
        }
    }

    pub(super) fn into_const(self) -> Result<Const> {
        if let Some(i) = self.v.iter().position(|x| !x.is_finite()) {
            return Err(bad("folded constant", self.v[i], "is not finite"));
        }
        let data = if self.int {
            ConstData::I64(self.v.iter().map(|&x| x as i64).collect())
        } else {
            ConstData::F64(self.v)
        };
        Ok(Const {
            dims: self.dims,
            data,
            error: if self.int { 0.0 } else { self.err },
        })
    }

    fn max_abs(&self) -> f64 {
        self.v.iter().fold(0.0f64, |m, x| m.max(x.abs()))
    }

    fn min_abs(&self) -> f64 {
        self.v.iter().fold(f64::INFINITY, |m, x| m.min(x.abs()))
    }

    /// A float result of values `v` whose inputs' errors propagate to `propagated`: adds the
    /// rounding of the operation itself.
    fn float(dims: Vec<usize>, v: Vec<f64>, propagated: f64) -> Arr {
        let m = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        Arr {
            dims,
            v,
            int: false,
            err: propagated + U * m,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.v.len()
    }
}

/// The broadcast shape of `a` and `b` (numpy rules).
pub(super) fn broadcast_dims(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let get = |d: &[usize], k: usize| {
        if k + d.len() < r {
            1
        } else {
            d[k + d.len() - r]
        }
    };
    (0..r)
        .map(|k| match (get(a, k), get(b, k)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            _ => Err(bad("operand shapes", (a, b), "do not broadcast")),
        })
        .collect()
}

/// For every element of `out` (broadcast) the flat index into a tensor of shape `d`.
fn broadcast_index(d: &[usize], out: &[usize]) -> Vec<usize> {
    let r = out.len();
    let total: usize = out.iter().product();
    let mut strides = vec![0usize; r];
    let mut s = 1;
    for k in (0..d.len()).rev() {
        let ko = k + r - d.len();
        strides[ko] = if d[k] == 1 { 0 } else { s };
        s *= d[k];
    }
    let mut idx = vec![0usize; r];
    let mut res = Vec::with_capacity(total);
    for _ in 0..total {
        res.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum());
        for k in (0..r).rev() {
            idx[k] += 1;
            if idx[k] < out[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    res
}

/// An elementwise binary operation with numpy broadcasting.
pub(super) fn binary(op: &str, a: &Arr, b: &Arr) -> Result<Arr> {
    let dims = broadcast_dims(&a.dims, &b.dims)?;
    let (ia, ib) = (
        broadcast_index(&a.dims, &dims),
        broadcast_index(&b.dims, &dims),
    );
    let pairs = ia.iter().zip(&ib).map(|(&i, &j)| (a.v[i], b.v[j]));
    let int = a.int && b.int;
    let (ma, mb) = (a.max_abs(), b.max_abs());
    let v: Vec<f64> = match op {
        "Add" => pairs.map(|(x, y)| x + y).collect(),
        "Sub" => pairs.map(|(x, y)| x - y).collect(),
        "Mul" => pairs.map(|(x, y)| x * y).collect(),
        "Div" if int => pairs
            .map(|(x, y)| if y == 0.0 { f64::NAN } else { (x / y).trunc() })
            .collect(),
        "Div" => pairs.map(|(x, y)| x / y).collect(),
        "Max" => pairs.map(|(x, y)| x.max(y)).collect(),
        "Min" => pairs.map(|(x, y)| x.min(y)).collect(),
        "Pow" => pairs.map(|(x, y)| x.powf(y)).collect(),
        "Equal" => pairs.map(|(x, y)| f64::from(x == y)).collect(),
        "Less" => pairs.map(|(x, y)| f64::from(x < y)).collect(),
        "Greater" => pairs.map(|(x, y)| f64::from(x > y)).collect(),
        other => return Err(bad("operator", other, "is not folded")),
    };
    let logical = matches!(op, "Equal" | "Less" | "Greater");
    if int || logical {
        if logical && (a.err > 0.0 || b.err > 0.0) {
            return Err(bad(
                "comparison",
                op,
                "of constants computed with rounding cannot be folded reliably",
            ));
        }
        return Ok(Arr {
            dims,
            v,
            int: true,
            err: 0.0,
        });
    }
    let (ea, eb) = (a.err, b.err);
    // Sums, differences and products of small integers (|v| < 2²⁶) are exact in f64.
    let small_int = |x: &Arr| {
        x.err == 0.0
            && x.v
                .iter()
                .all(|v| v.fract() == 0.0 && v.abs() < (1 << 26) as f64)
    };
    if matches!(op, "Add" | "Sub" | "Mul" | "Max" | "Min") && small_int(a) && small_int(b) {
        return Ok(Arr {
            dims,
            v,
            int: false,
            err: 0.0,
        });
    }
    let propagated = match op {
        "Add" | "Sub" => ea + eb,
        "Mul" => ea * mb + eb * ma + ea * eb,
        "Div" => {
            let my = b.min_abs();
            if my <= eb {
                return Err(bad(
                    "divisor",
                    my,
                    "is too close to 0 for its rounding error",
                ));
            }
            (ea * my + ma * eb) / (my * (my - eb))
        }
        "Max" | "Min" => ea.max(eb),
        // xᵖ with the exponent exact: p·|x|^(p−1) on [min|x| − e, max|x| + e] (p ≥ 1), or
        // refused with an error on the base for p < 1 near 0.
        "Pow" => {
            let p = b.v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            if eb > 0.0 || (ea > 0.0 && p < 1.0 && a.min_abs() <= 2.0 * ea) {
                return Err(bad(
                    "Pow",
                    op,
                    "of inexact constants near 0 cannot be folded",
                ));
            }
            let slope = if p >= 1.0 {
                p * (ma + ea).powf(p - 1.0)
            } else {
                p * (a.min_abs() - ea).powf(p - 1.0)
            };
            // powf is within a few ulps: 4u·max|out|.
            slope * ea + 4.0 * U * v.iter().fold(0.0f64, |m, x| m.max(x.abs()))
        }
        _ => unreachable!(),
    };
    Ok(Arr::float(dims, v, propagated))
}

/// `And`, `Or`, `Xor` of boolean constants, with broadcasting.
pub(super) fn logical(op: &str, a: &Arr, b: &Arr) -> Result<Arr> {
    let dims = broadcast_dims(&a.dims, &b.dims)?;
    let (ia, ib) = (
        broadcast_index(&a.dims, &dims),
        broadcast_index(&b.dims, &dims),
    );
    let v = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| {
            let (x, y) = (a.v[i] != 0.0, b.v[j] != 0.0);
            f64::from(match op {
                "And" => x && y,
                "Or" => x || y,
                _ => x != y,
            })
        })
        .collect();
    Ok(Arr {
        dims,
        v,
        int: true,
        err: 0.0,
    })
}

/// An elementwise unary operation.
pub(super) fn unary(op: &str, a: &Arr) -> Result<Arr> {
    let e = a.err;
    let (v, slope): (Vec<f64>, f64) = match op {
        "Abs" => (a.v.iter().map(|x| x.abs()).collect(), 1.0),
        "Neg" => (a.v.iter().map(|x| -x).collect(), 1.0),
        "Relu" => (a.v.iter().map(|x| x.max(0.0)).collect(), 1.0),
        "Sqrt" => {
            let m = a.v.iter().fold(f64::INFINITY, |m, &x| m.min(x));
            if m < 0.0 || (e > 0.0 && m <= e) {
                return Err(bad("Sqrt", m, "of a constant too close to 0 or negative"));
            }
            let slope = if e > 0.0 { 0.5 / (m - e).sqrt() } else { 0.0 };
            (a.v.iter().map(|x| x.sqrt()).collect(), slope)
        }
        "Reciprocal" => {
            let m = a.min_abs();
            if m <= e || m == 0.0 {
                return Err(bad("Reciprocal", m, "of a constant too close to 0"));
            }
            (a.v.iter().map(|x| 1.0 / x).collect(), 1.0 / (m - e).powi(2))
        }
        "Exp" => {
            let top = a.v.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
            (a.v.iter().map(|x| x.exp()).collect(), (top + e).exp())
        }
        "Sigmoid" => (a.v.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect(), 0.25),
        "Tanh" => (a.v.iter().map(|x| x.tanh()).collect(), 1.0),
        other => return Err(bad("operator", other, "is not folded")),
    };
    if a.int && matches!(op, "Abs" | "Neg" | "Relu") {
        return Ok(Arr {
            dims: a.dims.clone(),
            v,
            int: true,
            err: 0.0,
        });
    }
    // Transcendental functions are within a few ulps in any libm: 3u·max|out| more.
    let own = if matches!(op, "Exp" | "Sigmoid" | "Tanh") {
        3.0
    } else {
        0.0
    };
    let mut r = Arr::float(a.dims.clone(), v, slope * e);
    r.err += own * U * r.max_abs();
    Ok(r)
}

/// `MatMul` of constants: 2-D (or 1-D) operands, or batched with equal leading axes.
pub(super) fn matmul(a: &Arr, b: &Arr) -> Result<Arr> {
    let (ad, bd) = (a.dims.clone(), b.dims.clone());
    if ad.is_empty() || bd.is_empty() {
        return Err(bad(
            "MatMul operand shapes",
            (&ad, &bd),
            "must have rank ≥ 1",
        ));
    }
    let a2 = if ad.len() == 1 {
        vec![1, ad[0]]
    } else {
        ad.clone()
    };
    let b2 = if bd.len() == 1 {
        vec![bd[0], 1]
    } else {
        bd.clone()
    };
    let (ra, rb) = (a2.len(), b2.len());
    let (m, k, k2, n) = (a2[ra - 2], a2[ra - 1], b2[rb - 2], b2[rb - 1]);
    let batch_a: usize = a2[..ra - 2].iter().product();
    let batch_b: usize = b2[..rb - 2].iter().product();
    if k != k2 || (batch_a != batch_b && batch_a != 1 && batch_b != 1) {
        return Err(bad("MatMul operand shapes", (&ad, &bd), "do not agree"));
    }
    let batch = batch_a.max(batch_b);
    let mut v = vec![0.0; batch * m * n];
    // Per output: Σ|a||b|, Σ|a| and Σ|b| over the inner index, for its error bound.
    let mut propagated = 0.0f64;
    let (ea, eb) = (a.err, b.err);
    for t in 0..batch {
        let (oa, ob) = ((t % batch_a) * m * k, (t % batch_b) * k * n);
        for i in 0..m {
            for j in 0..n {
                let (mut sum, mut abs_ab, mut abs_a, mut abs_b) = (0.0, 0.0, 0.0, 0.0);
                for p in 0..k {
                    let (x, y) = (a.v[oa + i * k + p], b.v[ob + p * n + j]);
                    sum += x * y;
                    abs_ab += (x * y).abs();
                    abs_a += x.abs();
                    abs_b += y.abs();
                }
                v[(t * m + i) * n + j] = sum;
                let e = ea * abs_b + eb * abs_a + k as f64 * ea * eb + gamma(k) * abs_ab;
                propagated = propagated.max(e);
            }
        }
    }
    let mut dims: Vec<usize> = if batch_a >= batch_b {
        a2[..ra - 2].to_vec()
    } else {
        b2[..rb - 2].to_vec()
    };
    if ad.len() > 1 {
        dims.push(m);
    }
    if bd.len() > 1 {
        dims.push(n);
    }
    if a.int && b.int {
        return Ok(Arr {
            dims,
            v,
            int: true,
            err: 0.0,
        });
    }
    Ok(Arr::float(dims, v, propagated))
}

/// Sum, mean, maximum or minimum over `axes` (all when empty).
pub(super) fn reduce(op: &str, a: &Arr, axes: &[usize], keep: bool) -> Result<Arr> {
    let r = a.dims.len();
    let axes: Vec<usize> = if axes.is_empty() {
        (0..r).collect()
    } else {
        axes.to_vec()
    };
    let out_full: Vec<usize> = (0..r)
        .map(|k| if axes.contains(&k) { 1 } else { a.dims[k] })
        .collect();
    let n_out: usize = out_full.iter().product();
    let count = a.len() / n_out.max(1);
    let init = match op {
        "ReduceMax" => f64::NEG_INFINITY,
        "ReduceMin" => f64::INFINITY,
        _ => 0.0,
    };
    let mut v = vec![init; n_out];
    let mut magnitude = vec![0.0f64; n_out];
    let mut idx = vec![0usize; r];
    for &x in &a.v {
        let o = (0..r).fold(0usize, |acc, k| {
            acc * out_full[k] + if axes.contains(&k) { 0 } else { idx[k] }
        });
        magnitude[o] += x.abs();
        v[o] = match op {
            "ReduceMax" => v[o].max(x),
            "ReduceMin" => v[o].min(x),
            _ => v[o] + x,
        };
        for k in (0..r).rev() {
            idx[k] += 1;
            if idx[k] < a.dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    let (c, ma) = (count as f64, a.max_abs());
    // γ_n·Σ|x| per output (Higham, (3.5)).
    let summed = gamma(count) * magnitude.iter().fold(0.0f64, |m, &x| m.max(x));
    let propagated = match op {
        "ReduceSum" => c * a.err + summed,
        "ReduceMean" => {
            v.iter_mut().for_each(|x| *x /= c);
            a.err + summed / c + U * ma
        }
        "ReduceMax" | "ReduceMin" => a.err,
        other => return Err(bad("operator", other, "is not folded")),
    };
    let dims = if keep {
        out_full
    } else {
        (0..r)
            .filter(|k| !axes.contains(k))
            .map(|k| a.dims[k])
            .collect()
    };
    if a.int {
        return Ok(Arr {
            dims,
            v,
            int: true,
            err: 0.0,
        });
    }
    Ok(Arr::float(dims, v, propagated))
}

/// Elements of `a` moved to a tensor of shape `out`: element `o` is `a[source[o]]` (exact).
pub(super) fn rearrange(a: &Arr, out: Vec<usize>, source: &[u32]) -> Arr {
    Arr {
        dims: out,
        v: source.iter().map(|&i| a.v[i as usize]).collect(),
        int: a.int,
        err: a.err,
    }
}

/// A 2-D convolution of constants (`x` NCHW, `w` OIHW), with pads `[top, left, bottom,
/// right]`, strides, dilations and groups; errors as for a product with `C/g·kH·kW` terms.
pub(super) fn conv2d(
    x: &Arr,
    w: &Arr,
    pads: [usize; 4],
    stride: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
) -> Result<Arr> {
    let (xd, wd) = (&x.dims, &w.dims);
    if xd.len() != 4
        || wd.len() != 4
        || groups == 0
        || wd[1] * groups != xd[1]
        || !wd[0].is_multiple_of(groups)
    {
        return Err(bad("constant Conv shapes", (xd, wd), "do not agree"));
    }
    let (n, c, h, wi) = (xd[0], xd[1], xd[2], xd[3]);
    let (o, cg, kh, kw) = (wd[0], wd[1], wd[2], wd[3]);
    let extent = |k: usize, d: usize| d * (k - 1) + 1;
    let (ph, pw) = (h + pads[0] + pads[2], wi + pads[1] + pads[3]);
    if ph < extent(kh, dilation[0]) || pw < extent(kw, dilation[1]) {
        return Err(bad(
            "constant Conv",
            (xd, wd),
            "has a kernel larger than its input",
        ));
    }
    let ho = (ph - extent(kh, dilation[0])) / stride[0] + 1;
    let wo = (pw - extent(kw, dilation[1])) / stride[1] + 1;
    let og = o / groups;
    let mut v = vec![0.0; n * o * ho * wo];
    let mut propagated = 0.0f64;
    let terms = cg * kh * kw;
    for b in 0..n {
        for oc in 0..o {
            let g = oc / og;
            for i in 0..ho {
                for j in 0..wo {
                    let (mut sum, mut abs_xw, mut abs_x, mut abs_w) = (0.0, 0.0, 0.0, 0.0);
                    for ci in 0..cg {
                        for p in 0..kh {
                            for q in 0..kw {
                                let r = (i * stride[0] + p * dilation[0]) as i64 - pads[0] as i64;
                                let s = (j * stride[1] + q * dilation[1]) as i64 - pads[1] as i64;
                                if r < 0 || s < 0 || r >= h as i64 || s >= wi as i64 {
                                    continue;
                                }
                                let xv =
                                    x.v[((b * c + g * cg + ci) * h + r as usize) * wi + s as usize];
                                let wv = w.v[((oc * cg + ci) * kh + p) * kw + q];
                                sum += xv * wv;
                                abs_xw += (xv * wv).abs();
                                abs_x += xv.abs();
                                abs_w += wv.abs();
                            }
                        }
                    }
                    v[((b * o + oc) * ho + i) * wo + j] = sum;
                    let e = x.err * abs_w
                        + w.err * abs_x
                        + terms as f64 * x.err * w.err
                        + gamma(terms) * abs_xw;
                    propagated = propagated.max(e);
                }
            }
        }
    }
    Ok(Arr::float(vec![n, o, ho, wo], v, propagated))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Σ x_i y_i` with error-free transformations (Ogita–Rump–Oishi Dot2): accurate to about
    /// `u²`, a reference for the plain sums' error bounds.
    fn dot2(x: &[f64], y: &[f64]) -> f64 {
        let (mut s, mut c) = (0.0f64, 0.0f64);
        for (&a, &b) in x.iter().zip(y) {
            let p = a * b;
            let pe = a.mul_add(b, -p);
            let t = s + p;
            let z = t - s;
            let se = (s - (t - z)) + (p - z);
            s = t;
            c += pe + se;
        }
        s + c
    }

    fn random(n: usize, seed: u64) -> Vec<f64> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 1e3
            })
            .collect()
    }

    #[test]
    fn products_and_sums_stay_within_their_error_bounds() {
        let (m, k, n) = (7, 300, 5);
        let a = Arr {
            dims: vec![m, k],
            v: random(m * k, 1),
            int: false,
            err: 0.0,
        };
        let b = Arr {
            dims: vec![k, n],
            v: random(k * n, 2),
            int: false,
            err: 0.0,
        };
        let c = matmul(&a, &b).unwrap();
        assert!(c.err > 0.0);
        for i in 0..m {
            for j in 0..n {
                let col: Vec<f64> = (0..k).map(|p| b.v[p * n + j]).collect();
                let exact = dot2(&a.v[i * k..(i + 1) * k], &col);
                assert!(
                    (c.v[i * n + j] - exact).abs() <= c.err,
                    "{} vs {exact}",
                    c.v[i * n + j]
                );
            }
        }
        let s = reduce("ReduceSum", &a, &[1], false).unwrap();
        for i in 0..m {
            let exact = dot2(&a.v[i * k..(i + 1) * k], &vec![1.0; k]);
            assert!((s.v[i] - exact).abs() <= s.err);
        }
        // An input error propagates: x ± e through √ stays within the bound.
        let x = Arr {
            dims: vec![3],
            v: vec![4.0, 9.0, 0.25],
            int: false,
            err: 1e-3,
        };
        let r = unary("Sqrt", &x).unwrap();
        for (&xi, &ri) in x.v.iter().zip(&r.v) {
            for shifted in [xi - 1e-3, xi + 1e-3] {
                assert!((shifted.sqrt() - ri).abs() <= r.err);
            }
        }
        let q = binary(
            "Div",
            &x,
            &Arr {
                dims: vec![],
                v: vec![3.0],
                int: false,
                err: 1e-4,
            },
        )
        .unwrap();
        for (&xi, &qi) in x.v.iter().zip(&q.v) {
            for (dx, dy) in [(1e-3, -1e-4), (-1e-3, 1e-4)] {
                assert!(((xi + dx) / (3.0 + dy) - qi).abs() <= q.err);
            }
        }
    }

    #[test]
    fn near_zero_divisors_and_roots_of_inexact_constants_are_refused() {
        let x = Arr {
            dims: vec![2],
            v: vec![1e-9, 1.0],
            int: false,
            err: 1e-8,
        };
        assert!(unary("Sqrt", &x).is_err());
        assert!(unary("Reciprocal", &x).is_err());
        let one = Arr {
            dims: vec![],
            v: vec![1.0],
            int: false,
            err: 0.0,
        };
        assert!(binary("Div", &one, &x).is_err());
    }
}
