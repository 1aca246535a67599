//! The polyphase decomposition of strided convolutions.
//!
//! A circular conv with stride `s` dividing the image, whose outputs are the `H/s` distinct
//! residues, is — up to a permutation of inputs (split the image into its `s_h·s_w` phase
//! images) and a cyclic shift of outputs — a stride-1 circular conv on `(H/s_h) × (W/s_w)`
//! with `C_in·s_h·s_w` input channels. Both permutations are orthogonal, so the singular
//! values are the same and the per-frequency method is exact again.
//!
//! Tap `p` reads offset `u = p·d − pad`; it lands in phase `r = u mod s` at phase-image offset
//! `k = ⌊u/s⌋`. The new kernel has taps `k − k_min` (dilation 1, no collisions since
//! different `p` give different `u`).
//!
//! A zero-padded strided layer is the row/column restriction of the circular strided conv on
//! any grid `N ≥ padded size` that is a multiple of the stride, so the polyphase norm of that
//! circular layer is a proven upper bound, tighter than the stride-1 embedding.

use super::{Conv2d, PaddingMode};

/// Largest equivalent kernel built (2²⁸ weights, 1 GiB in f32); strides or dilations that
/// would need more are handled by the other methods.
const MAX_EQUIVALENT_WEIGHTS: u128 = 1 << 28;

/// The equivalent stride-1 circular conv and its OIHW weights, when it exists.
pub fn polyphase(conv: &Conv2d, weights: &[f32]) -> Option<(Conv2d, Vec<f32>)> {
    if conv.padding_mode != PaddingMode::Circular || conv.validate_weights(weights).is_err() {
        return None;
    }
    let out = conv.output_size().ok()?;
    let s = conv.stride;
    let mut phase_size = [0; 2];
    // Per axis and tap: (phase r, phase-image offset k).
    let mut maps: [Vec<(usize, i64)>; 2] = [Vec::new(), Vec::new()];
    for axis in 0..2 {
        let n = conv.input[axis];
        if !n.is_multiple_of(s[axis]) || out[axis] != n / s[axis] {
            return None;
        }
        phase_size[axis] = n / s[axis];
        maps[axis] = (0..conv.kernel[axis])
            .map(|p| {
                let u = (p * conv.dilation[axis]) as i64 - conv.pads[axis] as i64;
                let st = s[axis] as i64;
                (u.rem_euclid(st) as usize, u.div_euclid(st))
            })
            .collect();
    }
    let k_min = maps
        .clone()
        .map(|m| m.iter().map(|t| t.1).min().unwrap_or(0));
    let k_max = maps
        .clone()
        .map(|m| m.iter().map(|t| t.1).max().unwrap_or(0));
    let kernel = [
        (k_max[0] - k_min[0] + 1) as usize,
        (k_max[1] - k_min[1] + 1) as usize,
    ];
    // A dilated kernel spanning far more than the image would need an absurd equivalent
    // kernel (wrapping its taps would sum weights in f32 and lose exactness): not applicable,
    // the caller falls back to the other methods.
    let count = (conv.out_channels as u128)
        * (conv.group_in() * s[0] * s[1]) as u128
        * (kernel[0] as u128 * kernel[1] as u128);
    if count > (conv.weight_len() as u128 + 1) * (s[0] * s[1]) as u128 * 64 + (1 << 20)
        || count > MAX_EQUIVALENT_WEIGHTS
    {
        return None;
    }
    let phases = s[0] * s[1];
    let cg = conv.group_in();
    let new_cg = cg * phases;
    let mut w = vec![0f32; conv.out_channels * new_cg * kernel[0] * kernel[1]];
    for o in 0..conv.out_channels {
        for c in 0..cg {
            for (p, &(rh, kh)) in maps[0].iter().enumerate() {
                for (q, &(rw, kw)) in maps[1].iter().enumerate() {
                    let c_new = c * phases + rh * s[1] + rw;
                    let (th, tw) = ((kh - k_min[0]) as usize, (kw - k_min[1]) as usize);
                    let src = ((o * cg + c) * conv.kernel[0] + p) * conv.kernel[1] + q;
                    let dst = ((o * new_cg + c_new) * kernel[0] + th) * kernel[1] + tw;
                    w[dst] += weights[src];
                }
            }
        }
    }
    let new = Conv2d::new(
        conv.out_channels,
        conv.in_channels * phases,
        kernel,
        phase_size,
    )
    .groups(conv.groups)
    .pads([0, 0, kernel[0] - 1, kernel[1] - 1])
    .mode(PaddingMode::Circular);
    new.is_exactly_circular().then_some((new, w))
}

/// For a zero-padded strided layer: the circular strided layer on the smallest grid that
/// holds the padded input and is a multiple of the stride, with outputs at every residue.
/// Its (polyphase, exact) norm bounds the zero-padded layer.
pub fn circular_cover(conv: &Conv2d) -> Option<Conv2d> {
    if conv.padding_mode != PaddingMode::Zeros || conv.stride == [1, 1] {
        return None;
    }
    let padded = conv.padded_size();
    let extent = conv.kernel_extent();
    let mut grid = [0; 2];
    let mut pads = [0; 4];
    for axis in 0..2 {
        let s = conv.stride[axis];
        grid[axis] = padded[axis].div_ceil(s) * s;
        // Outputs i·s for i < N/s: bottom padding (ext − s)⁺ makes ⌊(N + pb − ext)/s⌋ + 1 = N/s.
        pads[axis + 2] = extent[axis].saturating_sub(s);
    }
    let cover = Conv2d {
        input: grid,
        pads,
        padding_mode: PaddingMode::Circular,
        ..conv.clone()
    };
    cover
        .output_size()
        .ok()
        .filter(|o| o[0] * conv.stride[0] == grid[0] && o[1] * conv.stride[1] == grid[1])?;
    Some(cover)
}
