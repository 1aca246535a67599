//! Arbitrary conv and dense layer descriptions through the C ABI (the same validation the
//! Rust API uses): every call returns a status, never crashes; successful results are
//! ordered intervals. Run:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run layer_description -- -max_total_time=600`
#![no_main]
use libfuzzer_sys::fuzz_target;
use lipschitz::capi::*;

fn take(data: &mut &[u8]) -> u32 {
    let (head, rest) = data.split_at(data.len().min(1));
    *data = rest;
    // Small values are the interesting ones; 255 stands for "huge".
    match head.first() {
        None => 1,
        Some(255) => u32::MAX,
        Some(&b) => (b % 12) as u32,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut d = data;
    let conv = LipConv2d {
        out_channels: take(&mut d),
        in_channels: take(&mut d),
        kernel_h: take(&mut d),
        kernel_w: take(&mut d),
        input_h: take(&mut d),
        input_w: take(&mut d),
        stride_h: take(&mut d),
        stride_w: take(&mut d),
        dilation_h: take(&mut d),
        dilation_w: take(&mut d),
        groups: take(&mut d),
        pad_top: take(&mut d),
        pad_left: take(&mut d),
        pad_bottom: take(&mut d),
        pad_right: take(&mut d),
        padding_mode: take(&mut d),
    };
    let weights: Vec<f32> = d
        .chunks(4)
        .map(|c| {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            f32::from_le_bytes(b)
        })
        .collect();
    // Only call with a buffer that is long enough for the declared layer (the C contract).
    let needed = (conv.out_channels as u64)
        .saturating_mul((conv.in_channels / conv.groups.max(1)) as u64)
        .saturating_mul(conv.kernel_h as u64)
        .saturating_mul(conv.kernel_w as u64);
    let mut out = LipBound::default();
    let mut options = lip_options_default();
    options.max_iterations = 100;
    if needed <= weights.len() as u64 && needed > 0 {
        let status = unsafe { lip_conv2d_norm_ex(weights.as_ptr(), &conv, &options, &mut out) };
        if status == LIP_OK {
            assert!(
                out.lower >= 0.0 && out.lower <= out.upper,
                "{conv:?}: [{}, {}]",
                out.lower,
                out.upper
            );
        }
    }
    let (rows, cols) = (conv.out_channels as usize, conv.in_channels as usize);
    if rows.saturating_mul(cols) <= weights.len() {
        let status = unsafe { lip_dense_norm_ex(weights.as_ptr(), rows, cols, &options, &mut out) };
        if status == LIP_OK {
            assert!(out.lower >= 0.0 && out.lower <= out.upper);
        }
    }
});
