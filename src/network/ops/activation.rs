//! Elementwise nonlinearities with a global Lipschitz constant, PRelu and Softmax.

use super::{
    expect_inputs, max_abs, single, At, Broadcast, Context, Kernel, Operation, Role, Saved,
};
use crate::error::{check_finite, Error, Result};

/// An elementwise nonlinearity with a global Lipschitz constant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `max(0, x)`.
    Relu,
    /// `x` for `x ≥ 0`, `αx` otherwise.
    LeakyRelu(f64),
    /// `x` for `x > 0`, `α(eˣ − 1)` otherwise.
    Elu(f64),
    /// `γ·x` for `x > 0`, `γα(eˣ − 1)` otherwise.
    Selu {
        /// α.
        alpha: f64,
        /// γ.
        gamma: f64,
    },
    /// `1/(1 + e⁻ˣ)`.
    Sigmoid,
    /// `max(0, min(1, αx + β))`.
    HardSigmoid {
        /// Slope α.
        alpha: f64,
        /// Offset β.
        beta: f64,
    },
    /// `tanh x`.
    Tanh,
    /// `ln(1 + eˣ)`.
    Softplus,
    /// `x·Φ(x)` (or its tanh approximation).
    Gelu {
        /// ONNX `approximate="tanh"`.
        tanh: bool,
    },
    /// `x·σ(x)` (also written `Mul(x, Sigmoid(x))`).
    Silu,
    /// `x·min(max(x + 3, 0), 6)/6` (MobileNetV3): slope `(2x + 3)/6` on `(−3, 3)`, so the
    /// constant is 3/2.
    HardSwish,
    /// `|x|`.
    Abs,
    /// `x·tanh(ln(1 + eˣ))`: slopes in `[−0.1126, 1.0885]`.
    Mish,
    /// `x/(1 + |x|)`: slope `1/(1 + |x|)²`.
    Softsign,
    /// The error function: slope `2e^{−x²}/√π ∈ (0, 2/√π]`.
    Erf,
    /// `min(max(x, lo), hi)` (ReLU6 is `Clip(0, 6)`).
    Clip {
        /// Lower limit.
        min: f64,
        /// Upper limit.
        max: f64,
    },
}

/// The supremum of GELU's derivative `Φ(x) + xφ(x)` (at `x = √2`: 1.12880…), rounded up;
/// the tanh approximation peaks at 1.1289… as well.
const GELU_LIPSCHITZ: f64 = 1.1290;
/// The supremum of Mish's derivative (1.088498… at x ≈ 1.4906), rounded up, and its
/// infimum (−0.112526… at x ≈ −2.2564), rounded down.
pub(crate) const MISH_SLOPES: (f64, f64) = (-0.1126, 1.0885);
/// The supremum of SiLU's derivative `σ(x)(1 + x(1 − σ(x)))` (1.09984… at x ≈ 2.3994), rounded up.
const SILU_LIPSCHITZ: f64 = 1.0999;

impl Activation {
    /// The global Lipschitz constant `sup |f'|` (a proven upper bound, rounded up where the
    /// supremum is irrational).
    pub fn constant(&self) -> f64 {
        match *self {
            Activation::Relu
            | Activation::Tanh
            | Activation::Softplus
            | Activation::Abs
            | Activation::Softsign => 1.0,
            Activation::Mish => MISH_SLOPES.1,
            // 2/√π, rounded up.
            Activation::Erf => std::f64::consts::FRAC_2_SQRT_PI.next_up(),
            Activation::LeakyRelu(a) => a.abs().max(1.0),
            Activation::Elu(a) => a.abs().max(1.0),
            Activation::Selu { alpha, gamma } => gamma.abs() * alpha.abs().max(1.0),
            Activation::Sigmoid => 0.25,
            Activation::HardSigmoid { alpha, .. } => alpha.abs(),
            Activation::Gelu { .. } => GELU_LIPSCHITZ,
            Activation::HardSwish => 1.5,
            Activation::Silu => SILU_LIPSCHITZ,
            Activation::Clip { min, max } => {
                if max > min {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }

    /// Checks the parameters: every slope, scale and offset finite (NaN or ±inf would make
    /// the constant or the outputs meaningless); Clip limits may be ±inf but not NaN.
    pub fn validate(&self) -> Result<()> {
        let (name, params): (&str, Vec<(&str, f64)>) = match *self {
            Activation::LeakyRelu(a) => ("LeakyRelu", vec![("alpha", a)]),
            Activation::Elu(a) => ("Elu", vec![("alpha", a)]),
            Activation::Selu { alpha, gamma } => ("Selu", vec![("alpha", alpha), ("gamma", gamma)]),
            Activation::HardSigmoid { alpha, beta } => {
                ("HardSigmoid", vec![("alpha", alpha), ("beta", beta)])
            }
            Activation::Clip { min, max } => {
                if min.is_nan() || max.is_nan() {
                    return Err(Error::invalid(
                        "Clip limits",
                        format!("{min}, {max}"),
                        "NaN",
                    ));
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        for (p, v) in params {
            if !v.is_finite() {
                return Err(Error::invalid(
                    &format!("{name} {p}"),
                    v,
                    "must be a finite number",
                ));
            }
        }
        Ok(())
    }

    /// `f(x)`.
    pub fn apply(&self, x: f64) -> f64 {
        match *self {
            Activation::Relu => x.max(0.0),
            Activation::LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Activation::Elu(a) => {
                if x > 0.0 {
                    x
                } else {
                    a * x.exp_m1()
                }
            }
            Activation::Selu { alpha, gamma } => {
                if x > 0.0 {
                    gamma * x
                } else {
                    gamma * alpha * x.exp_m1()
                }
            }
            Activation::Sigmoid => sigmoid(x),
            Activation::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Activation::Tanh => x.tanh(),
            Activation::Softplus => softplus(x),
            Activation::Gelu { tanh: false } => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
            Activation::Gelu { tanh: true } => 0.5 * x * (1.0 + gelu_tanh_inner(x).tanh()),
            Activation::Silu => x * sigmoid(x),
            Activation::HardSwish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
            Activation::Abs => x.abs(),
            Activation::Mish => x * softplus(x).tanh(),
            Activation::Softsign => x / (1.0 + x.abs()),
            Activation::Erf => erf(x),
            Activation::Clip { min, max } => x.max(min).min(max),
        }
    }

    /// `f'(x)` (one-sided where `f` has a kink; the choice does not affect any bound).
    pub fn derivative(&self, x: f64) -> f64 {
        match *self {
            Activation::Relu => f64::from(x > 0.0),
            Activation::LeakyRelu(a) => {
                if x >= 0.0 {
                    1.0
                } else {
                    a
                }
            }
            Activation::Elu(a) => {
                if x > 0.0 {
                    1.0
                } else {
                    a * x.exp()
                }
            }
            Activation::Selu { alpha, gamma } => {
                if x > 0.0 {
                    gamma
                } else {
                    gamma * alpha * x.exp()
                }
            }
            Activation::Sigmoid => {
                let s = sigmoid(x);
                s * (1.0 - s)
            }
            Activation::HardSigmoid { alpha, beta } => {
                let t = alpha * x + beta;
                if t > 0.0 && t < 1.0 {
                    alpha
                } else {
                    0.0
                }
            }
            Activation::Tanh => 1.0 - x.tanh().powi(2),
            Activation::Softplus => sigmoid(x),
            Activation::Gelu { tanh: false } => {
                let cdf = 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
                let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
                cdf + x * pdf
            }
            Activation::Gelu { tanh: true } => {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                let t = gelu_tanh_inner(x).tanh();
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x)
            }
            Activation::Silu => {
                let s = sigmoid(x);
                s * (1.0 + x * (1.0 - s))
            }
            Activation::HardSwish => {
                if x <= -3.0 {
                    0.0
                } else if x >= 3.0 {
                    1.0
                } else {
                    (2.0 * x + 3.0) / 6.0
                }
            }
            Activation::Abs => x.signum(),
            Activation::Mish => {
                let t = softplus(x).tanh();
                t + x * (1.0 - t * t) * sigmoid(x)
            }
            Activation::Softsign => 1.0 / ((1.0 + x.abs()) * (1.0 + x.abs())),
            Activation::Erf => (-x * x).exp() * 2.0 / std::f64::consts::PI.sqrt(),
            Activation::Clip { min, max } => f64::from(x > min && x < max),
        }
    }

    /// The ONNX operator name.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Relu => "Relu",
            Activation::LeakyRelu(_) => "LeakyRelu",
            Activation::Elu(_) => "Elu",
            Activation::Selu { .. } => "Selu",
            Activation::Sigmoid => "Sigmoid",
            Activation::HardSigmoid { .. } => "HardSigmoid",
            Activation::Tanh => "Tanh",
            Activation::Softplus => "Softplus",
            Activation::Gelu { .. } => "Gelu",
            Activation::Silu => "Silu",
            Activation::HardSwish => "HardSwish",
            Activation::Abs => "Abs",
            Activation::Mish => "Mish",
            Activation::Softsign => "Softsign",
            Activation::Erf => "Erf",
            Activation::Clip { .. } => "Clip",
        }
    }
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn softplus(x: f64) -> f64 {
    if x > 30.0 {
        x + (-x).exp()
    } else {
        x.exp().ln_1p()
    }
}

fn gelu_tanh_inner(x: f64) -> f64 {
    (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)
}

/// The error function (fdlibm's, within an ulp).
fn erf(x: f64) -> f64 {
    libm::erf(x)
}

impl super::Sealed for Activation {}

impl Operation for Activation {
    fn op_type(&self) -> &'static str {
        self.name()
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let s = single(inputs)?;
        self.validate()?;
        Ok(s.to_vec())
    }
    fn role(&self) -> Role {
        Role::Nonlinear
    }
    fn lipschitz(&self, _inputs: &[&[usize]]) -> Result<f64> {
        Ok(self.constant())
    }
    fn prepare<'a>(&'a self, _cx: &Context<'_>) -> Result<Box<dyn Kernel + 'a>> {
        Ok(Box::new(*self))
    }
}

impl Kernel for Activation {
    fn forward(&self, ins: &[&[f64]], y: &mut [f64]) -> Saved {
        for (yi, &xi) in y.iter_mut().zip(ins[0]) {
            *yi = self.apply(xi);
        }
        Vec::new()
    }
    fn jvp(&self, at: At<'_>, t: &[&[f64]], dy: &mut [f64]) {
        for ((d, &ti), &xi) in dy.iter_mut().zip(t[0]).zip(at.input) {
            *d = self.derivative(xi) * ti;
        }
    }
    fn vjp(&self, at: At<'_>, g: &[f64], outs: &mut [Vec<f64>]) {
        for ((d, &gi), &xi) in outs[0].iter_mut().zip(g).zip(at.input) {
            *d = self.derivative(xi) * gi;
        }
    }
}

/// `x` where positive, `slope·x` elsewhere; the slope broadcast along the tensor (ONNX
/// PRelu). Constant `max(1, max|slope|)`.
#[derive(Debug, Clone, PartialEq)]
pub struct PRelu {
    /// The slope for negative inputs.
    pub slope: Broadcast,
}

impl super::Sealed for PRelu {}

impl Operation for PRelu {
    fn op_type(&self) -> &'static str {
        "PRelu"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let s = single(inputs)?;
        check_finite("elementwise constant", &self.slope.values)?;
        Ok(s.to_vec())
    }
    fn role(&self) -> Role {
        Role::Nonlinear
    }
    fn lipschitz(&self, _inputs: &[&[usize]]) -> Result<f64> {
        Ok(max_abs(&self.slope.values).max(1.0))
    }
    fn prepare<'a>(&'a self, _cx: &Context<'_>) -> Result<Box<dyn Kernel + 'a>> {
        Ok(Box::new(self))
    }
}

impl PRelu {
    fn slope_at(&self, i: usize, x: f64) -> f64 {
        if x >= 0.0 {
            1.0
        } else {
            self.slope.get(i)
        }
    }
}

impl Kernel for &PRelu {
    fn forward(&self, ins: &[&[f64]], y: &mut [f64]) -> Saved {
        for (i, (yi, &xi)) in y.iter_mut().zip(ins[0]).enumerate() {
            *yi = if xi >= 0.0 {
                xi
            } else {
                self.slope.get(i) * xi
            };
        }
        Vec::new()
    }
    fn jvp(&self, at: At<'_>, t: &[&[f64]], dy: &mut [f64]) {
        for (i, ((d, &ti), &xi)) in dy.iter_mut().zip(t[0]).zip(at.input).enumerate() {
            *d = self.slope_at(i, xi) * ti;
        }
    }
    fn vjp(&self, at: At<'_>, g: &[f64], outs: &mut [Vec<f64>]) {
        for (i, ((d, &gi), &xi)) in outs[0].iter_mut().zip(g).zip(at.input).enumerate() {
            *d = self.slope_at(i, xi) * gi;
        }
    }
}

/// Softmax over slices of a tensor: `len` entries spaced `inner` apart. Its Jacobian
/// `diag(p) − p pᵀ` has norm at most ½.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Softmax {
    /// Entries per softmax.
    pub len: usize,
    /// Distance between consecutive entries of one softmax.
    pub inner: usize,
}

impl super::Sealed for Softmax {}

impl Operation for Softmax {
    fn op_type(&self) -> &'static str {
        "Softmax"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        expect_inputs(inputs, 1)?;
        let n: usize = inputs[0].iter().product();
        let (len, inner) = (self.len, self.inner);
        if len == 0 || inner == 0 || !n.is_multiple_of(len * inner) {
            return Err(Error::invalid(
                "Softmax axis",
                len,
                "does not divide the tensor",
            ));
        }
        Ok(inputs[0].to_vec())
    }
    fn role(&self) -> Role {
        Role::Nonlinear
    }
    fn lipschitz(&self, _inputs: &[&[usize]]) -> Result<f64> {
        Ok(0.5)
    }
    fn prepare<'a>(&'a self, _cx: &Context<'_>) -> Result<Box<dyn Kernel + 'a>> {
        Ok(Box::new(*self))
    }
}

impl Kernel for Softmax {
    fn forward(&self, ins: &[&[f64]], y: &mut [f64]) -> Saved {
        let (x, len, inner) = (ins[0], self.len, self.inner);
        for base in self.slices(x.len()) {
            let max = (0..len)
                .map(|t| x[base + t * inner])
                .fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for t in 0..len {
                let e = (x[base + t * inner] - max).exp();
                y[base + t * inner] = e;
                sum += e;
            }
            for t in 0..len {
                y[base + t * inner] /= sum;
            }
        }
        Vec::new()
    }
    fn jvp(&self, at: At<'_>, t: &[&[f64]], dy: &mut [f64]) {
        self.jacobian(at.output, t[0], dy);
    }
    fn vjp(&self, at: At<'_>, g: &[f64], outs: &mut [Vec<f64>]) {
        self.jacobian(at.output, g, &mut outs[0]);
    }
}

impl Softmax {
    /// `d = (diag(p) − p pᵀ) t` per slice (the Jacobian is symmetric: also the VJP).
    fn jacobian(&self, p: &[f64], t: &[f64], d: &mut [f64]) {
        let (len, inner) = (self.len, self.inner);
        for base in self.slices(p.len()) {
            let dot: f64 = (0..len)
                .map(|k| p[base + k * inner] * t[base + k * inner])
                .sum();
            for k in 0..len {
                let i = base + k * inner;
                d[i] = p[i] * (t[i] - dot);
            }
        }
    }

    /// Start indices of the slices of a tensor with `n` elements.
    fn slices(&self, n: usize) -> impl Iterator<Item = usize> {
        let (len, inner) = (self.len, self.inner);
        let outer = n / (len * inner);
        (0..outer).flat_map(move |o| (0..inner).map(move |i| o * len * inner + i))
    }
}

#[cfg(test)]
mod tests {
    use super::Activation;

    fn all() -> Vec<Activation> {
        vec![
            Activation::Relu,
            Activation::LeakyRelu(0.1),
            Activation::LeakyRelu(-2.0),
            Activation::Elu(1.0),
            Activation::Elu(1.7),
            Activation::Selu {
                alpha: 1.673_263_192_176_818_8,
                gamma: 1.050_701_022_148_132_3,
            },
            Activation::Sigmoid,
            Activation::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            Activation::Tanh,
            Activation::Softplus,
            Activation::Gelu { tanh: false },
            Activation::Gelu { tanh: true },
            Activation::Silu,
            Activation::HardSwish,
            Activation::Clip { min: 0.0, max: 6.0 },
        ]
    }

    /// Points away from kinks (where the one-sided derivative is a choice).
    fn grid() -> impl Iterator<Item = f64> {
        (-8000..=8000).map(|i| i as f64 * 1e-3 + 3.7e-4)
    }

    #[test]
    fn derivatives_match_finite_differences() {
        for a in all() {
            for x in grid().step_by(37) {
                let h = 1e-6;
                let fd = (a.apply(x + h) - a.apply(x - h)) / (2.0 * h);
                // erf is evaluated to 1.2e-7 relative: GELU's differences are that noisy.
                let tol = if matches!(a, Activation::Gelu { tanh: false }) {
                    1e-3
                } else {
                    1e-6
                };
                assert!(
                    (fd - a.derivative(x)).abs() <= tol * (1.0 + fd.abs()),
                    "{a:?} at {x}: f' = {} but differences give {fd}",
                    a.derivative(x)
                );
            }
        }
    }

    #[test]
    fn constants_bound_every_slope_and_are_attained_to_a_tenth_of_a_percent() {
        for a in all() {
            let sup = grid().map(|x| a.derivative(x).abs()).fold(0.0, f64::max);
            let c = a.constant();
            assert!(sup <= c, "{a:?}: slope {sup} above the constant {c}");
            assert!(
                sup >= c * 0.999,
                "{a:?}: constant {c} is loose (largest slope {sup})"
            );
        }
    }
}
