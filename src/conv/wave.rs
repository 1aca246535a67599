//! Start vectors for the lower bound of a conv layer: the plane wave at the frequency where
//! the circular symbol peaks (windowed by a sine for zero padding, whose top singular vectors
//! vanish at the borders), and its strided form through the polyphase cover.

use super::circular::CircularNorm;
use super::spectrum::{KernelSymbol, C64};
use super::{Conv2d, PaddingMode};
use crate::error::{Error, Result};
use faer::Mat;

/// A real input at the maximising frequency: `x[c][h][w] = Re(u_c·e^{2πi(f_h·h/N_h + f_w·w/N_w)})`
/// on the input channels of the maximising group, `u` the top right singular vector of `M(f)`
/// with its phase chosen to keep the real part large.
pub(super) fn plane_wave(
    conv: &Conv2d,
    symbol: &KernelSymbol,
    circ: &CircularNorm,
) -> Result<Vec<f64>> {
    let (groups, og, cg) = symbol.block_shape();
    let mut blocks = vec![C64::default(); groups * og * cg];
    symbol.blocks(circ.frequency, &mut blocks);
    let g = circ.group;
    let m = Mat::<C64>::from_fn(og, cg, |o, c| blocks[g * og * cg + o * cg + c]);
    let svd = m
        .thin_svd()
        .map_err(|e| Error::Numerical(format!("SVD of the maximising frequency block: {e:?}")))?;
    let v = svd.V();
    let mut u: Vec<C64> = (0..cg).map(|c| v[(c, 0)]).collect();
    if let Some(big) = u
        .iter()
        .copied()
        .max_by(|a, b| a.norm_sqr().total_cmp(&b.norm_sqr()))
    {
        if big.norm() > 0.0 {
            let phase = big.conj() / big.norm();
            u.iter_mut().for_each(|z| *z *= phase);
        }
    }
    let (f_h, f_w) = symbol.coordinates(circ.frequency);
    let [nh, nw] = symbol.grid();
    let (h, w) = (conv.input[0], conv.input[1]);
    // With zero padding the top singular vectors are plane waves under a window that vanishes
    // at the borders (like the sine eigenvectors of a Toeplitz matrix); circular layers need none.
    let window: [Vec<f64>; 2] = [h, w].map(|len| {
        (0..len)
            .map(|i| match conv.padding_mode {
                PaddingMode::Circular => 1.0,
                PaddingMode::Zeros => {
                    (std::f64::consts::PI * (i + 1) as f64 / (len + 1) as f64).sin()
                }
            })
            .collect()
    });
    let mut x = vec![0.0; conv.input_len()];
    for (c, uc) in u.iter().enumerate() {
        let plane = &mut x[(g * cg + c) * h * w..(g * cg + c + 1) * h * w];
        for a in 0..h {
            for b in 0..w {
                let turns =
                    ((f_h * a) % nh) as f64 / nh as f64 + ((f_w * b) % nw) as f64 / nw as f64;
                let angle = 2.0 * std::f64::consts::PI * turns;
                plane[a * w + b] =
                    (uc * C64::new(angle.cos(), angle.sin())).re * window[0][a] * window[1][b];
            }
        }
    }
    Ok(x)
}

/// Maps a vector on the polyphase-equivalent layer's input (channel `c·s_h·s_w + r_h·s_w +
/// r_w`, phase-image position `(a, b)`) back to the zero-padded strided layer's input: cover
/// position `(a·s_h + r_h, b·s_w + r_w)`, shifted by the top/left pads, under the sine window
/// that zero padding's singular vectors carry.
pub(super) fn cover_wave_to_input(conv: &Conv2d, cover: &Conv2d, phase_wave: &[f64]) -> Vec<f64> {
    let [sh, sw] = conv.stride;
    let [nh, nw] = cover.input;
    let (ph, pw) = (nh / sh, nw / sw);
    let (h, w) = (conv.input[0], conv.input[1]);
    let sine =
        |i: usize, len: usize| (std::f64::consts::PI * (i + 1) as f64 / (len + 1) as f64).sin();
    let mut x = vec![0.0; conv.input_len()];
    for c in 0..conv.in_channels {
        for a in 0..h {
            let ca = a + conv.pads[0];
            let (rh, ia) = (ca % sh, ca / sh);
            for b in 0..w {
                let cb = b + conv.pads[1];
                let (rw, ib) = (cb % sw, cb / sw);
                let channel = c * sh * sw + rh * sw + rw;
                let v = phase_wave[(channel * ph + ia) * pw + ib];
                x[(c * h + a) * w + b] = v * sine(a, h) * sine(b, w);
            }
        }
    }
    x
}
