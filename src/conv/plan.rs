//! [`ConvPlan`]: what bounding one conv layer will do, decided from its shape and the
//! options alone (no weights, no work): the method, the frequency grid, which window bounds
//! apply and how precisely each frequency scan must resolve its blocks.

use super::circular::Scan;
use super::norm::ConvMethod;
use super::{Conv2d, PaddingMode};
use crate::bound::{Certificate, Options};
use crate::error::{Error, Result};

/// Frequencies a circular scan may visit regardless of the layer's size (a 4096² image has
/// 8.4 million); beyond this the grid must also be in proportion to the layer.
pub(super) const MAX_SCAN_FREQUENCIES: u128 = 1 << 24;

/// Squarings of the Gram-iteration method (Delattre et al. use 6 for conv layers).
const GRAM_SQUARINGS: usize = 6;

/// The decisions behind a conv layer's bound.
#[derive(Debug, Clone)]
pub(super) struct ConvPlan {
    /// The method, with `Auto` resolved.
    pub method: ConvMethod,
    /// The frequency grid of the circular embedding (the image for circular padding, the
    /// padded image for zero padding).
    pub grid: [usize; 2],
    /// Small enough for a dense SVD of the explicit matrix.
    pub small: bool,
    /// `√(m_h·m_w)`: outputs that wrap onto the same input rows repeat rows of the circular
    /// conv, whose norm is multiplied by this.
    pub repetition: f64,
    /// Zero padding on an image of at most `MAX_WINDOW` pixels: the window bound is computed
    /// with the embedding.
    pub windowed: bool,
    /// Zero padding on an image of at most `MAX_LARGE_WINDOW` pixels: the window bound is
    /// computed when the embedding bound misses `rtol` after a short Lanczos run.
    pub large_window: bool,
    /// The maximum frequency block is certified to this relative slack.
    pub slack: f64,
    /// Every block, for a window bound, is certified to this one.
    pub window_slack: f64,
    /// The certificate of the embedding's upper bound.
    pub upper_certificate: Certificate,
    /// The grid is far larger than the layer (see [`out_of_proportion`]).
    pub out_of_proportion: bool,
    /// Zero padding on an image so small for its kernel that no proven bound can meet
    /// `rtol` (see [`predicted_window_excess`]): `Auto` goes straight to Lanczos from a random
    /// start, without the frequency scan.
    pub lanczos_only: bool,
}

impl ConvPlan {
    /// Plans the bound of `conv` by `method` under `opts`.
    pub fn new(conv: &Conv2d, requested: ConvMethod, opts: &Options) -> Result<ConvPlan> {
        let circular_exact = conv.is_exactly_circular();
        let [mh, mw] = conv.circular_multiplicity()?;
        let (n, m) = (conv.input_len() as f64, conv.output_len() as f64);
        let small = n.min(m).powi(2) * n.max(m) <= opts.exact_flop_limit
            && n * m * 24.0 <= opts.memory_limit as f64;
        let method = match requested {
            ConvMethod::Auto if circular_exact => ConvMethod::ExactCircular,
            ConvMethod::Auto if small => ConvMethod::Exact,
            ConvMethod::Auto => ConvMethod::Lanczos,
            ConvMethod::ExactCircular if !circular_exact => {
                return Err(Error::invalid(
                    "conv method",
                    "exact-circular",
                    "needs circular padding with one output per input position (stride 1), \
                     or a stride that divides the image with one output per residue (use \
                     auto or lanczos)",
                ))
            }
            other => other,
        };
        let grid = match conv.padding_mode {
            PaddingMode::Circular => conv.input,
            PaddingMode::Zeros => conv.padded_size(),
        };
        let zeros = conv.padding_mode == PaddingMode::Zeros;
        let pixels = conv.input[0] * conv.input[1];
        let windowed = zeros && pixels <= super::window::MAX_WINDOW && method != ConvMethod::Gram;
        let lanczos_only = requested == ConvMethod::Auto
            && method == ConvMethod::Lanczos
            && zeros
            && predicted_window_excess(conv) > 4.0 * opts.rtol;
        let large_window = zeros
            && !windowed
            && pixels <= super::window::MAX_LARGE_WINDOW
            && super::window::fits(pixels, opts.memory_limit)
            && !matches!(method, ConvMethod::BoundsOnly | ConvMethod::Gram);
        Ok(ConvPlan {
            method,
            grid,
            small,
            repetition: ((mh * mw) as f64).sqrt(),
            windowed,
            large_window,
            // The maximum is certified to a slack well inside rtol; the window bound needs
            // every block, each only to a fraction of rtol (the window itself is looser).
            slack: (opts.rtol / 4.0).clamp(1e-13, 1e-8),
            window_slack: (opts.rtol / 8.0).clamp(1e-13, 1e-5),
            upper_certificate: if circular_exact && method != ConvMethod::Gram {
                Certificate::Exact
            } else {
                Certificate::Deterministic
            },
            out_of_proportion: out_of_proportion(conv, grid),
            lanczos_only,
        })
    }

    /// How a frequency scan resolves its blocks: every block (for a window bound) or only
    /// the maximum; the Gram method replaces eigenvalues by Gram iteration.
    pub fn scan(&self, every: bool) -> Scan {
        match self.method {
            ConvMethod::Gram => Scan::Gram {
                squarings: GRAM_SQUARINGS,
            },
            _ if every => Scan::Every {
                slack: self.window_slack,
            },
            _ => Scan::Maximum { slack: self.slack },
        }
    }
}

/// True when the frequency grid is far larger than the layer itself: pads of tens of
/// thousands with a stride as large make a padded grid of billions of frequencies around a
/// layer of a few values, and scanning it would take hours that no time limit interrupts.
fn out_of_proportion(conv: &Conv2d, grid: [usize; 2]) -> bool {
    let frequencies = grid[0] as u128 * (grid[1] / 2 + 1) as u128;
    let layer = conv.input_len() as u128 + conv.output_len() as u128;
    frequencies > MAX_SCAN_FREQUENCIES && frequencies > 16 * layer
}

/// The window bound's excess over a zero-padded layer's norm, predicted from its geometry
/// alone: `0.25·r²` with `r = (k − 1)/n` the kernel's reach over the image along the tighter
/// axis (`k` and `n` per phase for strided layers: `⌈extent/s⌉` and `⌈input/s⌉`). Measured on
/// random 3×3 layers of 32–512 channels (`examples/conv_norm_timing`), the excess is 2.2–2.9 %
/// at 7×7, 0.37–0.54 % at 14×14 and ~0.1 % at 28×28, whatever the channels; the prediction
/// (2.0 %, 0.51 %, 0.13 %) stays near or below. The embedding bound is looser still, so a
/// layer predicted far over `rtol` is certified faster by Lanczos alone: the scan that every
/// proven bound needs costs a third of the Lanczos run at 512 channels on 7×7, and more than
/// it on smaller images.
pub(super) fn predicted_window_excess(conv: &Conv2d) -> f64 {
    let extent = conv.kernel_extent();
    (0..2)
        .map(|axis| {
            let k = extent[axis].div_ceil(conv.stride[axis]);
            let n = conv.input[axis].div_ceil(conv.stride[axis]).max(1);
            let r = (k.saturating_sub(1)) as f64 / n as f64;
            0.25 * r * r
        })
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_excess_prediction_follows_the_kernel_reach() {
        let at = |n: usize, k: usize, s: usize| {
            predicted_window_excess(
                &Conv2d::new(1, 1, [k, k], [n, n])
                    .padding(k / 2)
                    .stride([s, s]),
            )
        };
        assert!((at(7, 3, 1) - 0.25 * (2.0f64 / 7.0).powi(2)).abs() < 1e-15);
        assert!((at(28, 3, 1) - 0.25 * (2.0f64 / 28.0).powi(2)).abs() < 1e-15);
        // Stride 2: per phase, a 2-tap kernel on a 7-pixel image.
        assert!((at(14, 3, 2) - 0.25 / 49.0).abs() < 1e-15);
        // Pointwise kernels reach nothing.
        assert_eq!(at(7, 1, 1), 0.0);
        // The tighter axis decides.
        let wide = Conv2d::new(1, 1, [3, 3], [4, 100]).padding(1);
        assert!((predicted_window_excess(&wide) - 0.25 * 0.25).abs() < 1e-15);
    }
}
