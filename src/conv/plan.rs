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
}

impl ConvPlan {
    /// Plans the bound of `conv` by `method` under `opts`.
    pub fn new(conv: &Conv2d, method: ConvMethod, opts: &Options) -> Result<ConvPlan> {
        let circular_exact = conv.is_exactly_circular();
        let [mh, mw] = conv.circular_multiplicity()?;
        let (n, m) = (conv.input_len() as f64, conv.output_len() as f64);
        let small = n.min(m).powi(2) * n.max(m) <= opts.exact_flop_limit
            && n * m * 24.0 <= opts.memory_limit as f64;
        let method = match method {
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
