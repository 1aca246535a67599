//! `Add`, `Sub`, `Mul`, `Div` (between two activations, or an activation and a constant on
//! either side) and inference `BatchNormalization`.

use super::attrs::attr_float;
use super::importer::Importer;
use super::proto::NodeProto;
use super::tensor::Const;
use crate::error::Result;
use crate::network::ops::{Activation, Affine, Broadcast, Sum};
use crate::network::ValueId;

/// `Add`.
pub(super) fn add(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    imp.add_sub(node, label, false)
}

/// `Sub`.
pub(super) fn sub(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    imp.add_sub(node, label, true)
}

/// `Mul`.
pub(super) fn mul(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    imp.mul_div(node, label, false)
}

/// `Div`.
pub(super) fn div(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    imp.mul_div(node, label, true)
}

/// Inference `BatchNormalization(x, scale, bias, mean, var)`, lowered by
/// [`Affine::batch_norm`].
pub(super) fn batch_norm(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (x, xs) = imp.main_input(node, label)?;
    let mut p = Vec::new();
    for (i, role) in ["scale", "bias", "mean", "var"].iter().enumerate() {
        let name = node.input.get(i + 1).map(String::as_str).unwrap_or("");
        p.push(imp.constant(name, label, role)?.f64s());
    }
    let eps = attr_float(node, "epsilon", 1e-5);
    let op = Affine::batch_norm(&xs, &p[0], &p[1], &p[2], &p[3], eps)
        .map_err(|e| imp.err(format!("node {label}: {e}")))?;
    imp.push(node, label, "BatchNormalization", op, &[x])
}

/// One step of an elementwise scalar function: `s·x + b`, or an activation.
#[derive(Debug, Clone, Copy)]
enum Step {
    Affine(f64, f64),
    Act(Activation),
}

/// The chain with consecutive affine steps merged and an identity affine step between any two
/// activations and at both ends: `[A₀, f₁, A₁, …, f_n, A_n]`.
fn canonical(chain: &[Step]) -> Vec<Step> {
    let mut out = vec![Step::Affine(1.0, 0.0)];
    for &step in chain {
        match (out.last_mut(), step) {
            (Some(Step::Affine(s2, b2)), Step::Affine(s, b)) => {
                // (s·x + b) then (s2, b2) is already there: compose as s·(s2·x + b2) + b.
                let (ps, pb) = (*s2, *b2);
                *s2 = s * ps;
                *b2 = s * pb + b;
            }
            (_, Step::Act(a)) => {
                out.push(Step::Act(a));
                out.push(Step::Affine(1.0, 0.0));
            }
            _ => out.push(step),
        }
    }
    out
}

fn near(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1e-300)
}

/// `x·h(x)` as `scale·act(x)` for the gated activations exporters write out: SiLU
/// (`h = s·σ`), Mish (`h = s·tanh∘softplus`) and GELU (`h = s·(1 + erf(x/√2))`, which is
/// `2s·GELU`; a divisor `√2` rounded to `f32` scales the erf's argument by `1 ± 3e-8`,
/// which leaves the constant `sup_y Φ(y) + yφ(y)` unchanged).
fn gated(chain: &[Step]) -> Option<(Activation, f64)> {
    use Step::{Act, Affine};
    let id = |s: &Step| matches!(*s, Affine(a, b) if a == 1.0 && b == 0.0);
    match canonical(chain).as_slice() {
        [a0, Act(Activation::Sigmoid), Affine(s, b)] if id(a0) && *b == 0.0 => {
            Some((Activation::Silu, *s))
        }
        [a0, Act(Activation::Softplus), a1, Act(Activation::Tanh), Affine(s, b)]
            if id(a0) && id(a1) && *b == 0.0 =>
        {
            Some((Activation::Mish, *s))
        }
        [Affine(k, b0), Act(Activation::Erf), Affine(s, b)]
            if *b0 == 0.0 && near(*k, std::f64::consts::FRAC_1_SQRT_2) && near(*b, *s) =>
        {
            Some((Activation::Gelu { tanh: false }, 2.0 * s))
        }
        _ => None,
    }
}

/// Whether `h(x) = |x| + 1` (so that `x/h(x)` is Softsign).
fn is_softsign(chain: Option<&[Step]>) -> bool {
    let id = |s: &Step| matches!(*s, Step::Affine(a, b) if a == 1.0 && b == 0.0);
    matches!(
        chain.map(canonical).as_deref(),
        Some([a0, Step::Act(Activation::Abs), Step::Affine(s, b)]) if id(a0) && *s == 1.0 && *b == 1.0
    )
}

impl Importer {
    /// The steps from `x` to `h` when `h` is `x` through scalar affine maps and activations
    /// only (at most 16 steps).
    fn scalar_chain(&mut self, x: ValueId, h: ValueId) -> Option<Vec<Step>> {
        let net = self.net().network();
        let mut steps = Vec::new();
        let mut cur = h;
        for _ in 0..16 {
            if cur == x {
                steps.reverse();
                return Some(steps);
            }
            let node = net.nodes.iter().rev().find(|n| n.output == cur)?;
            if let Some(a) = node.op.downcast_ref::<Affine>() {
                if a.scale.values.len() != 1 || a.shift.values.len() != 1 {
                    return None;
                }
                steps.push(Step::Affine(a.scale.values[0], a.shift.values[0]));
            } else if let Some(act) = node.op.downcast_ref::<Activation>() {
                steps.push(Step::Act(*act));
            } else if !node.op.is_reshape() {
                return None;
            }
            cur = *node.inputs.first()?;
        }
        None
    }

    /// The value `v` is a reshape of (itself when it is not one).
    fn through_reshapes(&mut self, v: ValueId) -> ValueId {
        let net = self.net().network();
        let mut cur = v;
        while let Some(n) = net.nodes.iter().rev().find(|n| n.output == cur) {
            if !n.op.is_reshape() {
                break;
            }
            cur = n.inputs[0];
        }
        cur
    }

    /// `scale·act(x)` as the node's output.
    fn push_scaled(
        &mut self,
        node: &NodeProto,
        label: &str,
        act: Activation,
        scale: f64,
        x: ValueId,
    ) -> Result<()> {
        if scale == 1.0 {
            return self.push(node, label, act.name(), act, &[x]);
        }
        let name = format!("{}/{}", node.output[0], act.name());
        let a = self.add_node(&name, label, act.name(), act, &[x])?;
        self.push(node, label, act.name(), Affine::scale_by(scale), &[a])
    }

    pub(super) fn add_sub(&mut self, node: &NodeProto, label: &str, sub: bool) -> Result<()> {
        let kind = if sub { "Sub" } else { "Add" };
        let (a, b) = (
            node.input[0].as_str(),
            node.input.get(1).map(String::as_str).unwrap_or(""),
        );
        match (self.values.get(a).copied(), self.values.get(b).copied()) {
            (Some(va), Some(vb)) => self.push(node, label, kind, Sum { subtract: sub }, &[va, vb]),
            (Some(v), None) | (None, Some(v)) => {
                let var_first = self.values.get(a) == Some(&v);
                let c = self
                    .constant(if var_first { b } else { a }, label, "operand")?
                    .clone();
                let shape = self.shape_of(v);
                let mut shift = self.broadcast(&c.dims, &c.f64s(), &shape, label)?;
                let mut scale = 1.0;
                if sub && var_first {
                    shift.values.iter_mut().for_each(|s| *s = -*s);
                } else if sub {
                    scale = -1.0;
                }
                self.push(
                    node,
                    label,
                    kind,
                    Affine {
                        scale: Broadcast::scalar(scale),
                        shift,
                    },
                    &[v],
                )
            }
            (None, None) => unreachable!("all-constant nodes are folded"),
        }
    }

    pub(super) fn mul_div(&mut self, node: &NodeProto, label: &str, div: bool) -> Result<()> {
        let kind = if div { "Div" } else { "Mul" };
        let (a, b) = (
            node.input[0].as_str(),
            node.input.get(1).map(String::as_str).unwrap_or(""),
        );
        match (self.values.get(a).copied(), self.values.get(b).copied()) {
            (Some(va), Some(vb)) if !div => {
                // x·σ(x) is SiLU, x·tanh(softplus(x)) Mish, x·(1 + erf(x/√2))/2 GELU.
                for (x, h) in [(va, vb), (vb, va)] {
                    let chain = self.scalar_chain(x, h);
                    if let Some((act, scale)) = chain.as_deref().and_then(gated) {
                        return self.push_scaled(node, label, act, scale, x);
                    }
                }
                let gated = [va, vb].iter().any(|&v| {
                    let act = self.through_reshapes(v);
                    let net = self.net().network();
                    net.nodes
                        .iter()
                        .rev()
                        .find(|n| n.output == act)
                        .is_some_and(|n| {
                            matches!(
                                n.op.downcast_ref::<Activation>(),
                                Some(Activation::Sigmoid | Activation::HardSigmoid { .. })
                            )
                        })
                });
                let why = if gated {
                    "x·σ(g(x)) (squeeze-and-excitation or GLU gating): where g(x) stays near 0 \
                     while x grows, its derivative grows like |x|·σ'(0)·‖∇g‖"
                } else {
                    "the product of two tensors that both depend on the input grows \
                     quadratically with the input"
                };
                self.not_lipschitz(node, label, why)
            }
            (Some(v), None) if div || self.values.contains_key(a) => {
                let c = self.constant(b, label, "operand")?.clone();
                self.scale_by(node, label, kind, v, &c, div)
            }
            (None, Some(v)) if !div => {
                let c = self.constant(a, label, "operand")?.clone();
                self.scale_by(node, label, kind, v, &c, false)
            }
            (Some(x), Some(h)) if div && is_softsign(self.scalar_chain(x, h).as_deref()) => {
                // x/(1 + |x|).
                self.push(node, label, "Softsign", Activation::Softsign, &[x])
            }
            _ => self.not_lipschitz(
                node,
                label,
                "a division by a tensor that depends on the input is unbounded near its zeros \
                 (a normalisation written out as Div/Sqrt is not recognised: export it as \
                 LayerNormalization with opset ≥ 17)",
            ),
        }
    }

    fn scale_by(
        &mut self,
        node: &NodeProto,
        label: &str,
        kind: &str,
        v: ValueId,
        c: &Const,
        invert: bool,
    ) -> Result<()> {
        let shape = self.shape_of(v);
        let mut vals = c.f64s();
        // How far each scale may be from its exact value (a constant folded from others).
        let mut error = c.error;
        if invert {
            if let Some(z) = vals.iter().position(|&d| d == 0.0) {
                return Err(self.err(format!(
                    "node {label}: division by zero (divisor element {z})"
                )));
            }
            let inverse = super::const_eval::unary("Reciprocal", &super::const_eval::Arr::of(c))
                .map_err(|e| self.err(format!("node {label}: {e}")))?;
            vals = inverse.v;
            error = if c.error > 0.0 { inverse.err } else { 0.0 };
        }
        let scale = self.broadcast(&c.dims, &vals, &shape, label)?;
        self.push(
            node,
            label,
            kind,
            Affine {
                scale,
                shift: Broadcast::scalar(0.0),
            },
            &[v],
        )?;
        self.record_weight_error(node, error)
    }
}
