//! The bounds that rest on the LipSDP-Neuron program: ECLipsE-Fast's closed-form
//! multipliers and LipSDP-Neuron's optimal ones, on the network unrolled once
//! (`unroll.rs`). Both are verified by the same rigorous check (`sdp::verify`): the bound
//! reported is the one the check proves, never a solver's objective. LipSDP-Neuron is
//! solved by the interior-point method (`interior.rs`) up to `INTERIOR_MAX_SIZE` and by
//! the first-order eigenvalue method (`first_order.rs`) above. (ECLipsE-Fast's
//! multipliers do not start the interior-point solver: from them it took 21 iterations on
//! a 64-256×3-10 MLP against 14 from `interior::start`'s; they do start the first-order
//! one.)

use super::eclipse;
use super::expand::{expand_to_relus, Expand};
use super::first_order;
use super::interior;
use super::liplt::Outcome;
use super::sdp::{self, Problem};
use super::unroll::{lmi_size, unroll};
use crate::bound::{Bound, Certificate, Method, Options, Stop};
use crate::error::Result;
use crate::network::graph::Network;
use faer::Mat;
use std::time::{Duration, Instant};

/// Default largest LMI dimension (input coordinates + activation units) for LipSDP-Neuron.
pub(super) const DEFAULT_MAX_SIZE: usize = 2048;

/// Largest LMI solved by the interior-point method (`interior.rs`, the optimum): each of
/// its 10–20 iterations costs about ten `N×N` matrix products (on two cores: `N = 832`,
/// 3.1 s; `N = 1024`, 7.0 s). Larger LMIs go to the first-order method
/// (`first_order.rs`), whose cost grows with the units' Cholesky factorisations instead.
pub(super) const INTERIOR_MAX_SIZE: usize = 900;

/// Default largest LMI dimension for ECLipsE-Fast: a few dense `N×N` factorisations and
/// the unrolled matrices (`N = 4096`: about 1 GiB, a few seconds on two cores).
pub(super) const DEFAULT_ECLIPSE_MAX_SIZE: usize = 4096;

/// Safety net on the solver's wall time, for sizes raised far above the default; its
/// iterate when it ends is still verified (a valid, looser bound, and a note says so).
/// Within the default size the step cap ends the solver first, so results do not depend
/// on the machine's speed.
pub(super) const BUDGET: Duration = Duration::from_secs(300);

/// One method's outcome and its time in seconds (the unrolling included).
pub(super) type Timed = (Outcome, f64);

/// What [`sdp_bounds`] found for each method asked for, and the notes for readers.
pub(super) struct SdpBounds {
    /// ECLipsE-Fast, when asked for.
    pub eclipse: Option<Timed>,
    /// LipSDP-Neuron, when asked for.
    pub lipsdp: Option<Timed>,
    /// Remarks (a solver stopped early).
    pub notes: Vec<String>,
}

/// The ECLipsE-Fast and LipSDP-Neuron bounds of the network, for the methods given a size
/// limit (`None`: not asked for); `factor` as for LipLT.
pub(super) fn sdp_bounds(
    net: &Network,
    live: &[bool],
    factor: &[f64],
    opts: &Options,
    eclipse_max: Option<usize>,
    lipsdp_max: Option<usize>,
    interior_max: usize,
) -> Result<SdpBounds> {
    let started = Instant::now();
    // Max pooling and pair sorts as ReLUs (`expand.rs`): the same function, with per-unit
    // constraints.
    let expanded = expand_to_relus(net, live, factor, Expand::SortsAndPools)?;
    let live_expanded;
    let (net, live, factor) = match &expanded {
        Some((n, f)) => {
            live_expanded = n.live_nodes();
            (n, live_expanded.as_slice(), f.as_slice())
        }
        None => (net, live, factor),
    };
    let mut found = SdpBounds {
        eclipse: None,
        lipsdp: None,
        notes: Vec::new(),
    };
    let size = match lmi_size(net, live) {
        Ok(size) => size,
        Err(why) => {
            found.eclipse = eclipse_max.map(|_| (why.clone(), 0.0));
            found.lipsdp = lipsdp_max.map(|_| (why, 0.0));
            return Ok(found);
        }
    };
    let fits = |max: Option<usize>, knob: &str| -> Option<std::result::Result<(), Outcome>> {
        let max = max?;
        Some(if size <= max {
            Ok(())
        } else {
            Err(Outcome::OverBudget(format!(
                "an LMI of dimension {size} (input + activation units), over the limit of \
                 {max} ({knob})"
            )))
        })
    };
    let eclipse_fits = fits(
        eclipse_max,
        "AnalysisOptions::eclipse_max_size, CLI --eclipse-max-size",
    );
    let lipsdp_fits = fits(
        lipsdp_max,
        "AnalysisOptions::lipsdp_max_size, CLI --lipsdp-max-size",
    );
    let (run_eclipse, run_lipsdp) = (
        matches!(eclipse_fits, Some(Ok(()))),
        matches!(lipsdp_fits, Some(Ok(()))),
    );
    if let Some(Err(why)) = eclipse_fits {
        found.eclipse = Some((why, 0.0));
    }
    if let Some(Err(why)) = lipsdp_fits {
        found.lipsdp = Some((why, 0.0));
    }
    if !(run_eclipse || run_lipsdp) {
        return Ok(found);
    }
    let problem = match unroll(net, live, factor, opts)? {
        Ok(p) => p,
        Err(why) => {
            if run_eclipse {
                found.eclipse = Some((why.clone(), 0.0));
            }
            if run_lipsdp {
                found.lipsdp = Some((why, 0.0));
            }
            return Ok(found);
        }
    };
    let gy = problem.ey.transpose() * &problem.ey;
    let unrolled = started.elapsed().as_secs_f64();
    let first_order = run_lipsdp && problem.size() > interior_max;
    // ECLipsE-Fast's multipliers: its bound, and the first-order method's start.
    let t = Instant::now();
    let greedy = (run_eclipse || first_order)
        .then(|| eclipse::multipliers(&problem, &gy))
        .flatten();
    let greedy_seconds = t.elapsed().as_secs_f64();
    if run_eclipse {
        let t = Instant::now();
        let outcome = match &greedy {
            Some((rho, t)) => match sdp::verify(&problem, &gy, *rho, t) {
                Some(upper) => Outcome::Bound(bound(upper, 0), None),
                None => Outcome::OverBudget(
                    "its multipliers did not pass the Cholesky check; not used".into(),
                ),
            },
            None => Outcome::OverBudget(
                "its greedy multipliers are not feasible (activations with slopes of both \
                 signs)"
                    .into(),
            ),
        };
        let seconds = unrolled + greedy_seconds + t.elapsed().as_secs_f64();
        found.eclipse = Some((outcome, seconds));
    }
    if run_lipsdp {
        let t = Instant::now();
        let (outcome, note) = if first_order {
            lipsdp_first_order(&problem, &gy, greedy, interior_max)
        } else {
            lipsdp(&problem, &gy)
        };
        found.notes.extend(note);
        // The first-order method starts from ECLipsE-Fast's multipliers: their time counts.
        let start = if first_order { greedy_seconds } else { 0.0 };
        found.lipsdp = Some((outcome, unrolled + start + t.elapsed().as_secs_f64()));
    }
    Ok(found)
}

/// A deterministic network bound `upper`.
fn bound(upper: f64, iterations: usize) -> Bound {
    Bound {
        lower: 0.0,
        upper,
        certificate: Certificate::Deterministic,
        method: Method::Auto,
        iterations: iterations as u32,
        matvecs: 0,
        stop: Stop::Direct,
        seconds: 0.0,
    }
}

/// LipSDP-Neuron by the first-order method (LMIs over the interior-point limit), verified;
/// a note says which solver and that its bound may sit above the optimum.
fn lipsdp_first_order(
    problem: &Problem,
    gy: &Mat<f64>,
    greedy: Option<(f64, Vec<f64>)>,
    interior_max: usize,
) -> (Outcome, Option<String>) {
    let deadline = Instant::now() + BUDGET;
    // ECLipsE-Fast's multipliers are feasible and within a small factor of the optimum
    // (64-320×3-10: 6.46 against 3.74), a far better start than `interior::start`'s scan
    // (9.44), and cheaper (0.1 s against 1.3 s); the scan is the fallback for slopes of
    // both signs, where ECLipsE-Fast has none.
    let solution = greedy
        .or_else(|| interior::start(problem, gy))
        .and_then(|(_, t0)| first_order::solve(problem, gy, &t0, deadline));
    let Some(solution) = solution else {
        return (
            Outcome::OverBudget("no strictly feasible start found".into()),
            None,
        );
    };
    let Some(upper) = sdp::verify(problem, gy, solution.rho, &solution.t) else {
        return (
            Outcome::OverBudget(
                "the first-order multipliers did not pass the Cholesky check; not used".into(),
            ),
            None,
        );
    };
    let note = format!(
        "LipSDP-Neuron (LMI of dimension {}, over the interior-point limit {interior_max}) \
         solved by the first-order eigenvalue method in {} evaluations{}: its bound is \
         verified, and may sit a little above the program's optimum",
        problem.size(),
        solution.evaluations,
        if solution.timed_out {
            format!(" (stopped by the {} s safety net)", BUDGET.as_secs())
        } else {
            String::new()
        }
    );
    (
        Outcome::Bound(bound(upper, solution.evaluations), None),
        Some(note),
    )
}

/// LipSDP-Neuron, solved and verified; a note when the solver stopped before converging.
fn lipsdp(problem: &Problem, gy: &Mat<f64>) -> (Outcome, Option<String>) {
    let Some(solution) = interior::solve(problem, gy, Instant::now() + BUDGET) else {
        return (
            Outcome::OverBudget("no strictly feasible start found".into()),
            None,
        );
    };
    // The last iterate, else the last few centred ones (further from the boundary).
    let candidates = std::iter::once((solution.rho, &solution.t))
        .chain(solution.earlier.iter().rev().take(4).map(|(r, t)| (*r, t)));
    let verified = candidates
        .into_iter()
        .find_map(|(rho, t)| sdp::verify(problem, gy, rho, t));
    let Some(upper) = verified else {
        return (
            Outcome::OverBudget(
                "the solver's multipliers did not pass the Cholesky check; not used".into(),
            ),
            None,
        );
    };
    let note = (!solution.converged).then(|| {
        format!(
            "LipSDP-Neuron stopped after {} iterations (iteration cap or {} s safety net): its \
             bound is verified but not optimal",
            solution.steps,
            BUDGET.as_secs()
        )
    });
    (Outcome::Bound(bound(upper, solution.steps), None), note)
}
