//! Normalisation by statistics of the input itself: `LayerNormalization`,
//! `InstanceNormalization`, `GroupNormalization` (BatchNorm at inference is affine and lives
//! in `elementwise`).
//!
//! Each group `g` of consecutive elements (`d` of them) is mapped to
//! `y = γ ⊙ (x − μ)/s + β` with `μ` its mean and `s = √(var + ε)`, `var = ‖x − μ‖²/d`.
//! With `c = x − μ` and `P = I − 11ᵀ/d`, the Jacobian of `(x − μ)/s` is
//! `J = (P − c cᵀ/(d s²))/s`, symmetric: it is `0` on `1`, `ε/s³` along `c` and `1/s` on
//! the rest. So `‖J‖ = 1/s ≤ 1/√ε`, attained where the group is constant (`var = 0`), and
//! the constant of the whole operation is `max|γ|/√ε` — the true global constant, which is
//! large (about 300·max|γ| for ε = 1e-5), as the report's note says.

use super::{single, At, Broadcast, Context, Kernel, Operation, Role, Saved};
use crate::error::{Error, Result};
use crate::util::mul_up;

/// `γ ⊙ (x − μ_g)/√(var_g + ε) + β` over consecutive groups of `group` elements.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    /// The ONNX operator (`LayerNormalization`, …), for messages.
    pub kind: &'static str,
    /// Elements per group (consecutive in the flat tensor).
    pub group: usize,
    /// ε.
    pub eps: f64,
    /// γ.
    pub scale: Broadcast,
    /// β.
    pub shift: Broadcast,
}

impl super::Sealed for Normalize {}

impl Normalize {
    /// The proven constant `max|γ|/√ε`, rounded up.
    fn constant(&self) -> f64 {
        mul_up(
            self.scale.max_abs(),
            (1.0 / self.eps.sqrt()).next_up().next_up(),
        )
    }

    /// Mean and `s = √(var + ε)` of the group starting at `x[0]`.
    fn stats(&self, x: &[f64]) -> (f64, f64) {
        let d = x.len() as f64;
        let mean = x.iter().sum::<f64>() / d;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d;
        (mean, (var + self.eps).sqrt())
    }

    /// `out = J·t` on one group with input `x` (`J` is symmetric, so this is also `Jᵀ`).
    fn apply_jacobian(&self, x: &[f64], t: &[f64], out: &mut [f64]) {
        let d = x.len() as f64;
        let (mean, s) = self.stats(x);
        let t_mean = t.iter().sum::<f64>() / d;
        let ct: f64 = x
            .iter()
            .zip(t)
            .map(|(xi, ti)| (xi - mean) * (ti - t_mean))
            .sum();
        let k = ct / (d * s * s);
        for ((o, &xi), &ti) in out.iter_mut().zip(x).zip(t) {
            *o = ((ti - t_mean) - (xi - mean) * k) / s;
        }
    }
}

impl Operation for Normalize {
    fn op_type(&self) -> &'static str {
        self.kind
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let s = single(inputs)?;
        let n: usize = s.iter().product();
        if self.group == 0 || !n.is_multiple_of(self.group) {
            return Err(Error::invalid(
                "normalisation group",
                self.group,
                &format!("does not divide the {n} elements of {s:?}"),
            ));
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return Err(Error::invalid(
                "epsilon",
                self.eps,
                "must be a finite number > 0 (with ε = 0 the constant is infinite)",
            ));
        }
        for (what, b) in [("scale", &self.scale), ("bias", &self.shift)] {
            crate::error::check_finite(what, &b.values)?;
        }
        Ok(s.to_vec())
    }
    fn role(&self) -> Role {
        Role::Nonlinear
    }
    fn lipschitz(&self, _inputs: &[&[usize]]) -> Result<f64> {
        Ok(self.constant())
    }
    fn prepare<'a>(&'a self, _cx: &Context<'_>) -> Result<Box<dyn Kernel + 'a>> {
        Ok(Box::new(self))
    }
    fn note(&self) -> Option<String> {
        Some(format!(
            "its global constant max|γ|/√ε = {:.4e} is attained only where a group of its \
             input is constant (x = mean); it is the true global constant, and the network \
             bound carries it",
            self.constant()
        ))
    }
}

impl Kernel for &Normalize {
    fn forward(&self, ins: &[&[f64]], y: &mut [f64]) -> Saved {
        let g = self.group;
        for (k, (x, out)) in ins[0].chunks(g).zip(y.chunks_mut(g)).enumerate() {
            let (mean, s) = self.stats(x);
            for (j, (o, &xi)) in out.iter_mut().zip(x).enumerate() {
                let i = k * g + j;
                *o = self.scale.get(i) * (xi - mean) / s + self.shift.get(i);
            }
        }
        Vec::new()
    }
    fn jvp(&self, at: At<'_>, t: &[&[f64]], dy: &mut [f64]) {
        let g = self.group;
        for (k, ((x, t), out)) in at
            .input
            .chunks(g)
            .zip(t[0].chunks(g))
            .zip(dy.chunks_mut(g))
            .enumerate()
        {
            self.apply_jacobian(x, t, out);
            for (j, o) in out.iter_mut().enumerate() {
                *o *= self.scale.get(k * g + j);
            }
        }
    }
    fn vjp(&self, at: At<'_>, g: &[f64], outs: &mut [Vec<f64>]) {
        let n = self.group;
        let scaled: Vec<f64> = g
            .iter()
            .enumerate()
            .map(|(i, &v)| v * self.scale.get(i))
            .collect();
        for ((x, t), out) in at
            .input
            .chunks(n)
            .zip(scaled.chunks(n))
            .zip(outs[0].chunks_mut(n))
        {
            self.apply_jacobian(x, t, out);
        }
    }
}
