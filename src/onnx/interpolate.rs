//! `Resize`/`Upsample` in modes `linear` (bilinear, trilinear…) and `cubic`, lowered to the
//! separable [`Interpolate`] operation with the taps ONNX's reference computes: the output
//! coordinate mapped back by `coordinate_transformation_mode`, neighbours past the edge
//! clamped to it (or dropped and the weights renormalised with `exclude_outside`).

use super::attrs::{attr_float, attr_int, attr_string};
use super::importer::Importer;
use super::proto::NodeProto;
use super::select::{resize_geometry, CoordinateMode};
use crate::error::Result;
use crate::network::ops::{AxisMap, Interpolate};
use crate::network::ValueId;

/// The cubic convolution weights of the four neighbours `⌊c⌋ − 1 … ⌊c⌋ + 2` at fraction `t`.
fn cubic_weights(t: f64, a: f64) -> [f64; 4] {
    let far = |s: f64| ((a * s - 5.0 * a) * s + 8.0 * a) * s - 4.0 * a;
    let near = |s: f64| ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// `Resize` with `mode` linear or cubic.
pub(super) fn linear_resize(
    imp: &mut Importer,
    node: &NodeProto,
    label: &str,
    x: ValueId,
    xs: &[usize],
    mode: &str,
) -> Result<()> {
    let (cubic, kind) = match mode {
        "linear" | "bilinear" => (false, "linear"),
        "cubic" => (true, "cubic"),
        other => {
            return Err(imp.err(format!(
                "node {label}: Resize mode '{other}' is not supported"
            )))
        }
    };
    let (out, scales) = resize_geometry(imp, node, label, xs)?;
    let default_ct = if node.op_type == "Upsample" || imp.opset < 11 {
        "asymmetric"
    } else {
        "half_pixel"
    };
    let ct_name =
        attr_string(node, "coordinate_transformation_mode").unwrap_or_else(|| default_ct.into());
    let ct = CoordinateMode::parse(&ct_name).ok_or_else(|| {
        imp.err(format!(
            "node {label}: coordinate_transformation_mode '{ct_name}' is not supported"
        ))
    })?;
    let a = attr_float(node, "cubic_coeff_a", -0.75);
    let exclude = attr_int(node, "exclude_outside", 0) != 0;
    imp.selection_shape(label, &out)?;
    let mut maps = Vec::with_capacity(xs.len());
    for k in 0..xs.len() {
        let n = xs[k];
        let taps: Vec<Vec<(usize, f64)>> = (0..out[k])
            .map(|o| {
                let c = ct.source(o, n, out[k], scales[k]);
                let base = c.floor();
                let t = c - base;
                let (offsets, weights): (Vec<i64>, Vec<f64>) = if cubic {
                    ((-1..=2).collect(), cubic_weights(t, a).to_vec())
                } else {
                    (vec![0, 1], vec![1.0 - t, t])
                };
                let mut taps: Vec<(usize, f64)> = Vec::with_capacity(4);
                let mut kept = 0.0;
                for (d, w) in offsets.iter().zip(weights) {
                    let i = base as i64 + d;
                    if exclude && !(0..n as i64).contains(&i) {
                        continue;
                    }
                    kept += w;
                    let i = i.clamp(0, n as i64 - 1) as usize;
                    match taps.iter_mut().find(|(j, _)| *j == i) {
                        Some(tap) => tap.1 += w,
                        None => taps.push((i, w)),
                    }
                }
                if exclude && kept != 0.0 {
                    taps.iter_mut().for_each(|t| t.1 /= kept);
                }
                taps.retain(|&(_, w)| w != 0.0);
                taps
            })
            .collect();
        let identity = taps.len() == n
            && taps
                .iter()
                .enumerate()
                .all(|(o, t)| t.as_slice() == [(o, 1.0)]);
        maps.push((!identity).then_some(AxisMap { input: n, taps }));
    }
    let op = Interpolate { mode: kind, maps };
    imp.push(node, label, "Resize", op, &[x])
}
