//! Power iteration on `B = AᵀA`: the method most libraries ship (PyTorch's spectral norm),
//! kept as the reference the benchmarks compare against. Its a-posteriori probabilistic bound
//! uses the polynomial `xᵏ`, so it certifies a width `ε` only after ~`ln(1/δ)/ε` steps.

use super::probabilistic::{log_epsilon, power_upper};
use super::{
    certified_ratio, finish, rng_for, sigma_upper_from_lambda, start_vector, BestUpper, Budget,
    Hints,
};
use crate::bound::{meets_tolerance, Bound, Certificate, Method, Options, Stop};
use crate::error::Result;
use crate::kernels::{dot, norm2, scale};
use crate::operator::LinearOperator;

pub(crate) fn power(
    op: &dyn LinearOperator,
    opts: &Options,
    hints: &Hints<'_>,
) -> Result<(Bound, Vec<f64>)> {
    let budget = Budget::new(opts);
    let (n, m) = (op.input_len(), op.output_len());
    let mut rng = rng_for(opts.seed, 0);
    let (mut v, sigma) = start_vector(n, &mut rng, hints);
    let log_eps = log_epsilon(opts.delta, sigma);
    let certificate = Certificate::Probabilistic { delta: opts.delta };
    let mut upper = BestUpper::from_hints(hints);
    let mut tmp = vec![0.0; m];
    let mut w = vec![0.0; n];
    let mut lower = 0.0f64;
    let mut matvecs = 0u64;
    let mut next_check = 1u32;
    let mut best: Vec<f64> = Vec::new();

    let v_norm = norm2(&v);
    if v_norm == 0.0 {
        v = super::gaussian(n, &mut rng);
    }
    let mut log_norm = norm2(&v).ln();
    scale(1.0 / norm2(&v), &mut v);

    let mut k = 0u32;
    loop {
        op.gram(&v, &mut w, &mut tmp);
        matvecs += 2;
        k += 1;
        let rayleigh = dot(&v, &w).max(0.0);
        let wn = norm2(&w);
        log_norm += wn.ln();
        if sigma > 0.0 {
            let t = power_upper(log_norm, k as usize, log_eps);
            upper.offer(sigma_upper_from_lambda(op, t, k as usize), certificate);
        }
        let cap = budget.exhausted(k);
        let looks_done =
            meets_tolerance(rayleigh.sqrt(), upper.value, opts.rtol) && k >= next_check;
        if looks_done || cap.is_some() || wn == 0.0 {
            let ratio = certified_ratio(op, &v, &mut tmp);
            if ratio > lower || best.is_empty() {
                lower = lower.max(ratio);
                best.clone_from(&v);
            }
            matvecs += 1;
            if meets_tolerance(lower, upper.value, opts.rtol) {
                return Ok((
                    finish(
                        lower,
                        upper,
                        Method::Power,
                        k,
                        matvecs,
                        Stop::Converged,
                        &budget,
                    ),
                    best,
                ));
            }
            if let Some(stop) = cap {
                return Ok((
                    finish(lower, upper, Method::Power, k, matvecs, stop, &budget),
                    best,
                ));
            }
            if wn == 0.0 {
                // B v = 0 exactly: restart from fresh noise (the bound above already used it).
                v = super::gaussian(n, &mut rng);
                let vn = norm2(&v);
                scale(1.0 / vn, &mut v);
                continue;
            }
            next_check = k + 1 + k / 4;
        }
        v.copy_from_slice(&w);
        scale(1.0 / wn, &mut v);
    }
}
