//! The network unrolled into the data of the LipSDP-Neuron program (`sdp.rs`), shared by
//! LipSDP-Neuron and ECLipsE-Fast.
//!
//! The unrolling cuts the network at every activation: with each activation replaced by 0
//! (`Linearised` with slope 0), the map from the input or from an activation's output to
//! the network output (columns of `E_y`) or to a later activation's input (rows of `Z`) is
//! linear; its explicit matrix is computed column by column with the `f64` direct operators,
//! whose rounding (`forward_error` per column) the check absorbs. Residual connections and
//! concatenations need nothing special: they are sums inside these linear maps. The blocks
//! come in graph order, so a unit's row of `Z` is zero on the columns of its own and every
//! later node: the program's matrix is block lower triangular off its diagonal.

use super::liplt::{nonlinear_slopes, Linearised, Outcome, Slopes};
use super::sdp::{Block, Problem};
use crate::bound::Options;
use crate::error::Result;
use crate::network::graph::Network;
use crate::{explicit_matrix, LinearOperator};
use faer::Mat;

/// Dense `N×N` matrices alive at once while the program is built, solved and checked:
/// `Z`, `E_yᵀE_y`, the LMI matrix, its shifted copy and its factor, the solver's inverse.
const MATRICES: u128 = 6;

/// The nonlinear nodes with their slopes `(k, α, β)`, or why the network cannot be
/// unrolled: a nonlinearity that is not a slope-restricted activation.
fn activations(
    net: &Network,
    live: &[bool],
) -> std::result::Result<Vec<(usize, f64, f64)>, Outcome> {
    let mut found = Vec::new();
    for (k, split) in nonlinear_slopes(net, live)? {
        let (alpha, beta) = split.ok_or(Outcome::NotApplicable)?;
        found.push((k, alpha, beta));
    }
    if found.is_empty() {
        return Err(Outcome::NotApplicable);
    }
    Ok(found)
}

/// The dimension `N` of the program's matrix (input coordinates + activation units), or
/// why the network cannot be unrolled.
pub(super) fn lmi_size(net: &Network, live: &[bool]) -> std::result::Result<usize, Outcome> {
    let units: usize = activations(net, live)?
        .iter()
        .map(|&(k, _, _)| net.len_of(net.nodes[k].output))
        .sum();
    Ok(net.len_of(0) + units)
}

/// The unrolled network, or why it cannot be unrolled (see [`activations`], and the memory
/// limit); `factor` is every node's proven bound, which caps the linearised operators as
/// in LipLT.
pub(super) fn unroll(
    net: &Network,
    live: &[bool],
    factor: &[f64],
    opts: &Options,
) -> Result<std::result::Result<Problem, Outcome>> {
    let nodes = match activations(net, live) {
        Ok(n) => n,
        Err(outcome) => return Ok(Err(outcome)),
    };
    let size = net.len_of(0)
        + nodes
            .iter()
            .map(|&(k, _, _)| net.len_of(net.nodes[k].output))
            .sum::<usize>();
    let needed = MATRICES * 8 * (size as u128).pow(2);
    if needed > opts.memory_limit as u128 {
        return Ok(Err(Outcome::OverBudget(format!(
            "an LMI of dimension {size} needs about {} MiB, over the memory limit of {} MiB",
            needed >> 20,
            opts.memory_limit >> 20
        ))));
    }
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
    Ok(Ok(Problem {
        n0,
        ey,
        z,
        blocks,
        ey_error,
    }))
}
