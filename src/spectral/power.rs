//! Power iteration on `B = AᵀA`: the method most libraries ship (PyTorch's spectral norm),
//! kept as the reference the benchmarks compare against. Its a-posteriori probabilistic bound
//! uses the polynomial `xᵏ`, so it certifies a width `ε` only after ~`ln(1/δ)/ε` steps.

use super::krylov::Tracker;
use super::probabilistic::{log_epsilon, power_upper};
use super::{rng_for, sigma_upper_from_lambda, start_vector, Hints};
use crate::bound::{Bound, Certificate, Method, Options};
use crate::error::Result;
use crate::kernels::{dot, norm2, scale};
use crate::operator::LinearOperator;

pub(crate) fn power(
    op: &dyn LinearOperator,
    opts: &Options,
    hints: &Hints<'_>,
) -> Result<(Bound, Vec<f64>)> {
    let mut run = Tracker::new(Method::Power, opts, hints);
    let (n, m) = (op.input_len(), op.output_len());
    let mut rng = rng_for(opts.seed, 0);
    let (mut v, sigma) = start_vector(n, &mut rng, hints);
    let log_eps = log_epsilon(opts.delta, sigma);
    let certificate = Certificate::Probabilistic { delta: opts.delta };
    let mut tmp = vec![0.0; m];
    let mut w = vec![0.0; n];
    let mut next_check = 1u32;

    if norm2(&v) == 0.0 {
        v = super::gaussian(n, &mut rng);
    }
    let mut log_norm = norm2(&v).ln();
    scale(1.0 / norm2(&v), &mut v);

    loop {
        op.gram(&v, &mut w, &mut tmp);
        run.matvecs += 2;
        run.iterations += 1;
        let k = run.iterations;
        let rayleigh = dot(&v, &w).max(0.0);
        let wn = norm2(&w);
        log_norm += wn.ln();
        if sigma > 0.0 {
            let t = power_upper(log_norm, k as usize, log_eps);
            run.offer_upper(sigma_upper_from_lambda(op, t, k as usize), certificate);
        }
        let cap = run.cap();
        let looks_done = run.looks_done(rayleigh.sqrt()) && k >= next_check;
        if looks_done || cap.is_some() || wn == 0.0 {
            if let Some(stop) = run.certify(op, &v, &mut tmp, cap) {
                return Ok(run.finish(stop));
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
