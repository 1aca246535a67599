//! The reference for the lower-bound search's target ("≥ 0.98 × the best of 20 random-start
//! gradient ascents"): 20 independent standard-normal starts, each the top direction by 100
//! power steps, then 300 Adam steps on `log ‖f(b) − f(a)‖ − log ‖b − a‖` over both points.
//! A deliberately different optimiser from `empirical_lower_bound`'s (no scales, no hops,
//! no line search), run far longer. Writes `tests/fixtures/lower_reference.json`, which
//! `tests/network_bounds.rs` checks the default search against:
//!
//! ```text
//! cargo run --release --example lower_reference
//! ```

use lipschitz::network::{Evaluator, Trace};
use lipschitz::onnx::{load_onnx, ImportOptions};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use std::collections::BTreeMap;

const STARTS: u64 = 20;
const POWER: usize = 100;
const STEPS: usize = 300;

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|e| e * e).sum::<f64>().sqrt()
}

/// The quotient of `(a, b)`, the output difference and both traces.
fn quotient(e: &Evaluator, a: &[f64], b: &[f64]) -> (f64, Vec<f64>, Trace, Trace) {
    let (ta, tb) = (e.forward(a), e.forward(b));
    let r: Vec<f64> = e
        .output(&tb)
        .iter()
        .zip(e.output(&ta))
        .map(|(p, q)| p - q)
        .collect();
    let d: Vec<f64> = b.iter().zip(a).map(|(p, q)| p - q).collect();
    (norm(&r) / norm(&d), r, ta, tb)
}

/// One start: the best quotient its ascent evaluates.
fn ascent(e: &Evaluator, seed: u64) -> f64 {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed_0000 + seed);
    let n = e.input_len();
    let x: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    let mut v: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    let t = e.forward(&x);
    for _ in 0..POWER {
        let nv = norm(&v);
        v.iter_mut().for_each(|c| *c /= nv);
        v = e.vjp(&t, &e.jvp(&t, &v));
    }
    let nv = norm(&v);
    let h = 1e-2 * norm(&x).max(1.0) / nv;
    let mut p: Vec<f64> = x.iter().chain(&x).copied().collect();
    p[n..].iter_mut().zip(&v).for_each(|(b, vi)| *b += h * vi);
    let (mut m, mut s) = (vec![0.0; 2 * n], vec![0.0; 2 * n]);
    let lr = 1e-2 * norm(&x).max(1.0) / (n as f64).sqrt();
    let mut best: f64 = 0.0;
    for k in 1..=STEPS {
        let (a, b) = p.split_at(n);
        let (q, r, ta, tb) = quotient(e, a, b);
        if !q.is_finite() {
            break;
        }
        best = best.max(q);
        let (r2, d): (f64, Vec<f64>) = (
            r.iter().map(|c| c * c).sum(),
            b.iter().zip(a).map(|(p, q)| p - q).collect(),
        );
        let d2: f64 = d.iter().map(|c| c * c).sum();
        let (ja, jb) = (e.vjp(&ta, &r), e.vjp(&tb, &r));
        let grad: Vec<f64> = (0..n)
            .map(|i| d[i] / d2 - ja[i] / r2)
            .chain((0..n).map(|i| jb[i] / r2 - d[i] / d2))
            .collect();
        for i in 0..2 * n {
            m[i] = 0.9 * m[i] + 0.1 * grad[i];
            s[i] = 0.999 * s[i] + 0.001 * grad[i] * grad[i];
            let (mh, sh) = (
                m[i] / (1.0 - 0.9f64.powi(k as i32)),
                s[i] / (1.0 - 0.999f64.powi(k as i32)),
            );
            p[i] += lr * mh / (sh.sqrt() + 1e-12);
        }
    }
    best
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut out = BTreeMap::new();
    for f in [
        "mlp",
        "cnn_bn",
        "circular",
        "residual",
        "fire",
        "linear_run",
    ] {
        let path = format!("tests/fixtures/onnx/{f}.onnx");
        let net = load_onnx(path.as_ref(), &ImportOptions::default())?;
        let e = Evaluator::new(&net, true, 1 << 30)?;
        let best = (0..STARTS).map(|s| ascent(&e, s)).fold(0.0, f64::max);
        println!("{f}: best of {STARTS} ascents {best:.6}");
        out.insert(format!("{f}.onnx"), best);
    }
    std::fs::write(
        "tests/fixtures/lower_reference.json",
        serde_json::to_string_pretty(&out)? + "\n",
    )?;
    Ok(())
}
