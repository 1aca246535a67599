//! Folding elementwise scales (inference BatchNorm, `Mul`/`Div` by a constant) into the conv
//! or dense layer next to them, so that the layer is bounded with its scaled weights:
//! `‖diag(a)·W‖ ≤ max|a|·‖W‖` is usually loose.

use super::super::graph::{Network, Node};
use super::super::ops::{Broadcast, Layer};
use crate::bound::Bound;

/// A layer with the elementwise scales folded into it.
pub(super) struct Folded {
    /// Node indices absorbed before (input side) and after (output side).
    pub absorbed: Vec<usize>,
    /// Weights with the scales applied (`None`: nothing absorbed, the node's own weights).
    pub weight: Option<Vec<f32>>,
    /// An upper bound on `‖weight − W∘S‖_F`, what rounding the folded weights to f32 changed.
    pub rounding: f64,
    /// `max |d_out|·max |d_in|`, the largest factor any weight was multiplied by (1 when
    /// nothing was absorbed).
    pub max_scale: f64,
}

/// Absorbs the elementwise scales around layer `k` into its weights.
pub(super) fn fold(
    net: &Network,
    k: usize,
    consumers: &[Vec<usize>],
    producer: &[usize],
    live: &[bool],
    absorbed_by: &[usize],
) -> Folded {
    let node = &net.nodes[k];
    let layer = node.op.as_layer().expect("fold is called on layers");
    let n_out = net.len_of(node.output);
    let n_in = net.len_of(node.inputs[0]);
    // Output side.
    let mut d_out = vec![1.0f64; n_out];
    let mut absorbed = Vec::new();
    let mut pending = Vec::new();
    let mut v = node.output;
    while let [j] = consumers[v].as_slice() {
        let j = *j;
        if j == usize::MAX || !live[j] {
            break;
        }
        let op = &net.nodes[j].op;
        if op.is_reshape() {
            pending.push(j);
        } else {
            let Some(d) = op
                .as_scale()
                .and_then(|s| absorb(&d_out, s, |d| layer.fits_output(d)))
            else {
                break;
            };
            d_out = d;
            pending.push(j);
            absorbed.append(&mut pending);
        }
        v = net.nodes[j].output;
    }
    // Input side.
    let mut d_in = vec![1.0f64; n_in];
    let mut pending = Vec::new();
    let mut u = node.inputs[0];
    loop {
        let j = producer[u];
        if j == usize::MAX || consumers[u].as_slice() != [k].as_slice() && pending.is_empty() {
            break;
        }
        if consumers[u].len() != 1 || absorbed_by[j] != usize::MAX {
            break;
        }
        let op = &net.nodes[j].op;
        if op.is_reshape() {
            pending.push(j);
        } else {
            let Some(d) = op
                .as_scale()
                .and_then(|s| absorb(&d_in, s, |d| layer.fits_input(d)))
            else {
                break;
            };
            d_in = d;
            pending.push(j);
            absorbed.append(&mut pending);
        }
        u = net.nodes[j].inputs[0];
    }
    let (weight, rounding) = if absorbed.is_empty() {
        (None, 0.0)
    } else {
        let (w, e) = scaled_weights(layer, &d_in, &d_out);
        (Some(w), e)
    };
    let max_abs = |d: &[f64]| d.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let max_scale = if absorbed.is_empty() {
        1.0
    } else {
        (max_abs(&d_in) * max_abs(&d_out)).next_up()
    };
    Folded {
        absorbed,
        weight,
        rounding,
        max_scale,
    }
}

/// The diagonal `d ⊙ scale`, if the layer can take it into its weights (`fits`).
fn absorb(d: &[f64], scale: &Broadcast, fits: impl Fn(&[f64]) -> bool) -> Option<Vec<f64>> {
    let trial: Vec<f64> = d
        .iter()
        .enumerate()
        .map(|(i, v)| v * scale.get(i))
        .collect();
    fits(&trial).then_some(trial)
}

/// The layer's weights times the folded scales, rounded to `f32`, and an upper bound on
/// `‖fl(W∘S) − W∘S‖_F`. The products are formed in f64 (two roundings, relative `2u₆₄`
/// each) and the difference to the `f32` result is taken exactly, so the bound also holds
/// where `f32` underflows (a tiny BatchNorm scale can flush a whole layer to 0, where a
/// relative `u·|w|` bound would claim the zero layer is exact).
fn scaled_weights(layer: &dyn Layer, d_in: &[f64], d_out: &[f64]) -> (Vec<f32>, f64) {
    let products = layer.scaled_products(d_in, d_out);
    let (rounded, error) = crate::bound::round_to_f32(&products);
    let norm = products.iter().map(|p| p * p).sum::<f64>().sqrt();
    let product_error = 4.0 * f64::EPSILON * norm * (1.0 + 1e-6);
    (rounded, error + product_error)
}

/// The weights a layer is bounded with differ from the exact ones in two ways, and the
/// interval is widened ([`Bound::widen`]) so that it contains the norm of the exact layer:
/// * folded weights are rounded to `f32`, within `Folded::rounding` (Frobenius);
/// * the node's own `f32` weights are within `weight_error` (Frobenius) of the source's
///   (f64 initializers), which folding multiplies by at most `max_scale`.
pub(super) fn widen_for_rounding(bound: &mut Bound, node: &Node, folded: &Folded) {
    let error = folded.rounding + node.weight_error * folded.max_scale;
    if error > 0.0 {
        bound.widen(frobenius_to_operator(node) * error * (1.0 + 1e-12));
    }
}

/// `c` with `‖layer(E)‖₂ ≤ c·‖E‖_F` for a weight perturbation `E` of a layer node (1 for
/// other nodes, which have no weights).
pub(super) fn frobenius_to_operator(node: &Node) -> f64 {
    node.op
        .as_layer()
        .map_or(1.0, |l| l.frobenius_to_operator())
}
