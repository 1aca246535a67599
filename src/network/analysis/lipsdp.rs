//! The LipSDP-Neuron bound, verified: the network unrolled into the program of `sdp.rs`,
//! solved, and the solver's multipliers checked rigorously. The reported bound is the one
//! the check proves, never the solver's objective.
//!
//! The unrolling cuts the network at every activation: with each activation replaced by 0
//! (`Linearised` with slope 0), the map from the input or from an activation's output to
//! the network output (columns of `E_y`) or to a later activation's input (rows of `Z`) is
//! linear; its explicit matrix is computed column by column with the `f64` direct operators,
//! whose rounding (`forward_error` per column) the check absorbs. Residual connections and
//! concatenations need nothing special: they are sums inside these linear maps.

use super::liplt::{nonlinear_slopes, Linearised, Outcome, Slopes};
use super::sdp::{self, Block, Problem};
use crate::bound::{Bound, Certificate, Method, Options, Stop};
use crate::error::Result;
use crate::network::graph::Network;
use crate::{explicit_matrix, LinearOperator};
use faer::Mat;
use std::time::{Duration, Instant};

/// Default largest LMI dimension (input coordinates + activation units): each Newton step
/// factors and inverts an `N×N` matrix, and a few hundred steps are needed (residual
/// fixture, `N = 504`: 270 steps, 7 s on two cores).
pub(super) const DEFAULT_MAX_SIZE: usize = 640;

/// Safety net on the solver's wall time, for sizes raised far above the default; its
/// iterate when it ends is still verified (a valid, looser bound, and a note says so).
/// Within the default size the step cap ends the solver first, so results do not depend
/// on the machine's speed.
pub(super) const BUDGET: Duration = Duration::from_secs(300);

/// The nonlinear nodes with their slopes `(k, α, β)`, or why the bound does not apply.
fn activations(
    net: &Network,
    live: &[bool],
    max_size: usize,
) -> std::result::Result<Vec<(usize, f64, f64)>, Outcome> {
    let mut found = Vec::new();
    for (k, split) in nonlinear_slopes(net, live)? {
        let (alpha, beta) = split.ok_or(Outcome::NotApplicable)?;
        found.push((k, alpha, beta));
    }
    if found.is_empty() {
        return Err(Outcome::NotApplicable);
    }
    let units: usize = found
        .iter()
        .map(|&(k, _, _)| net.len_of(net.nodes[k].output))
        .sum();
    let size = net.len_of(0) + units;
    if size > max_size {
        return Err(Outcome::OverBudget(format!(
            "an LMI of dimension {size} (input + activation units), over the limit of \
             {max_size} (AnalysisOptions::lipsdp_max_size, CLI --lipsdp-max-size)"
        )));
    }
    Ok(found)
}

/// The LipSDP-Neuron bound of the network, verified (module docs); `factor` as for LipLT.
pub(super) fn lipsdp_bound(
    net: &Network,
    live: &[bool],
    factor: &[f64],
    opts: &Options,
    max_size: usize,
) -> Result<(Outcome, Option<String>)> {
    let nodes = match activations(net, live, max_size) {
        Ok(n) => n,
        Err(outcome) => return Ok((outcome, None)),
    };
    let mut slope: Slopes = vec![None; net.nodes.len()];
    for &(k, _, _) in &nodes {
        slope[k] = Some(0.0);
    }
    let cx = Linearised::new(net, live, slope, factor, opts.memory_limit)?;
    let n0 = net.len_of(0);
    // Sources: the input, then every activation's output, at their columns of ξ.
    let mut sources = vec![(None, 0, n0)];
    let mut blocks = Vec::new();
    let mut col = n0;
    for &(k, alpha, beta) in &nodes {
        let width = net.len_of(net.nodes[k].output);
        sources.push((Some(k), col, width));
        blocks.push(Block {
            rows: col - n0..col - n0 + width,
            sum: alpha + beta,
            product: alpha * beta,
            error: 0.0,
        });
        col += width;
    }
    let size = col;
    let fill = |target, rows: usize, upto: usize| -> Result<(Mat<f64>, f64)> {
        let mut m = Mat::<f64>::zeros(rows, size);
        let mut err2 = 0.0;
        for &(source, c0, width) in &sources[..upto] {
            let Some((op, _)) = cx.operator(source, target) else {
                continue;
            };
            let a = explicit_matrix(&op, opts.memory_limit)?;
            for j in 0..width {
                for i in 0..rows {
                    m[(i, c0 + j)] = a[j * rows + i];
                }
            }
            err2 += width as f64 * op.forward_error().powi(2);
        }
        Ok((m, err2.sqrt()))
    };
    let out = net.outputs[0];
    let (ey, ey_error) = fill(out, net.len_of(out), sources.len())?;
    let mut z = Mat::<f64>::zeros(size - n0, size);
    for (j, &(k, _, _)) in nodes.iter().enumerate() {
        let target = net.nodes[k].inputs[0];
        let rows = blocks[j].rows.clone();
        let (zj, error) = fill(target, rows.len(), j + 1)?;
        for c in 0..size {
            for (r, i) in rows.clone().enumerate() {
                z[(i, c)] = zj[(r, c)];
            }
        }
        blocks[j].error = error;
    }
    let problem = Problem {
        n0,
        ey,
        z,
        blocks,
        ey_error,
    };
    let gy = problem.ey.transpose() * &problem.ey;
    let Some(solution) = sdp::solve(&problem, &gy, Instant::now() + BUDGET) else {
        return Ok((
            Outcome::OverBudget("no strictly feasible start found".into()),
            None,
        ));
    };
    // The last iterate, else the last few centred ones (further from the boundary).
    let candidates = std::iter::once((solution.rho, &solution.t))
        .chain(solution.earlier.iter().rev().take(4).map(|(r, t)| (*r, t)));
    let verified = candidates
        .into_iter()
        .find_map(|(rho, t)| sdp::verify(&problem, &gy, rho, t));
    let Some(upper) = verified else {
        return Ok((
            Outcome::OverBudget(
                "the solver's multipliers did not pass the Cholesky check; not used".into(),
            ),
            None,
        ));
    };
    let note = (!solution.converged).then(|| {
        format!(
            "LipSDP-Neuron stopped after {} Newton steps (step cap or {} s safety net): its \
             bound is verified but not optimal",
            solution.steps,
            BUDGET.as_secs()
        )
    });
    Ok((
        Outcome::Bound(Bound {
            lower: 0.0,
            upper,
            certificate: Certificate::Deterministic,
            method: Method::Auto,
            iterations: solution.steps as u32,
            matvecs: 0,
            stop: Stop::Direct,
            seconds: 0.0,
        }),
        note,
    ))
}
