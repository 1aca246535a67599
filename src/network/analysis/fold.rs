//! Folding elementwise scales (inference BatchNorm, `Mul`/`Div` by a constant) into the conv
//! or dense layer next to them, so that the layer is bounded with its scaled weights:
//! `‖diag(a)·W‖ ≤ max|a|·‖W‖` is usually loose.

use super::super::graph::{Network, Node, Reader};
use super::super::ops::{Broadcast, Layer, Op};
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

/// What folding needs to know about the graph.
pub(super) struct FoldContext<'n> {
    pub net: &'n Network,
    pub readers: &'n [Vec<Reader>],
    pub producers: &'n [Option<usize>],
    pub live: &'n [bool],
    /// The layer each node was already folded into.
    pub absorbed_by: &'n [Option<usize>],
}

/// Absorbs the elementwise scales around layer `k` into its weights.
pub(super) fn fold(cx: &FoldContext<'_>, k: usize) -> Folded {
    let node = &cx.net.nodes[k];
    let layer = node.op.as_layer().expect("fold is called on layers");
    let (d_out, mut absorbed) = fold_outputs(cx, k, layer);
    let (d_in, mut before) = fold_inputs(cx, k, layer);
    absorbed.append(&mut before);
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

/// The scales after layer `k` (through reshapes, each value read only by the next node):
/// the output-side diagonal and the nodes absorbed.
fn fold_outputs(cx: &FoldContext<'_>, k: usize, layer: &dyn Layer) -> (Vec<f64>, Vec<usize>) {
    let net = cx.net;
    let mut d_out = vec![1.0f64; net.len_of(net.nodes[k].output)];
    let (mut absorbed, mut pending) = (Vec::new(), Vec::new());
    let mut v = net.nodes[k].output;
    while let [Reader::Node(j)] = cx.readers[v].as_slice() {
        let j = *j;
        if !cx.live[j] {
            break;
        }
        let fits = |d: &[f64]| layer.fits_output(d);
        if net.nodes[j].weight_error > 0.0 {
            break;
        }
        if !take(
            &net.nodes[j].op,
            j,
            &mut d_out,
            &mut pending,
            &mut absorbed,
            fits,
        ) {
            break;
        }
        v = net.nodes[j].output;
    }
    (d_out, absorbed)
}

/// The scales before layer `k` (through reshapes, each read only by the next node and not
/// already folded into an earlier layer): the input-side diagonal and the nodes absorbed.
fn fold_inputs(cx: &FoldContext<'_>, k: usize, layer: &dyn Layer) -> (Vec<f64>, Vec<usize>) {
    let net = cx.net;
    let mut d_in = vec![1.0f64; net.len_of(net.nodes[k].inputs[0])];
    let (mut absorbed, mut pending) = (Vec::new(), Vec::new());
    let mut u = net.nodes[k].inputs[0];
    while let Some(j) = cx.producers[u] {
        let only_k = cx.readers[u].as_slice() == [Reader::Node(k)].as_slice();
        if !only_k && pending.is_empty() {
            break;
        }
        if cx.readers[u].len() != 1 || cx.absorbed_by[j].is_some() {
            break;
        }
        let fits = |d: &[f64]| layer.fits_input(d);
        if net.nodes[j].weight_error > 0.0 {
            break;
        }
        if !take(
            &net.nodes[j].op,
            j,
            &mut d_in,
            &mut pending,
            &mut absorbed,
            fits,
        ) {
            break;
        }
        u = net.nodes[j].inputs[0];
    }
    (d_in, absorbed)
}

/// One step of a fold through node `j`: a reshape is passed (pending until a scale beyond
/// it is absorbed), a scale the layer `fits` is multiplied into `d` and absorbed with the
/// pending reshapes. False when the fold stops here.
fn take(
    op: &Op,
    j: usize,
    d: &mut Vec<f64>,
    pending: &mut Vec<usize>,
    absorbed: &mut Vec<usize>,
    fits: impl Fn(&[f64]) -> bool,
) -> bool {
    if op.is_reshape() {
        pending.push(j);
        return true;
    }
    match op.as_scale().and_then(|s| absorb(d, s, fits)) {
        Some(scaled) => {
            *d = scaled;
            pending.push(j);
            absorbed.append(pending);
            true
        }
        None => false,
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
