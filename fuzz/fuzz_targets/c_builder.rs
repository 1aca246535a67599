//! The C network builder driven by arbitrary bytes: shapes, layer sizes, activation
//! parameters (NaN and ±inf included), pooling sizes up to 2³²−1, residual ids, options
//! (time limits up to 1e300, thread counts, tolerances). Every call must return a status (no
//! crash, no abort, no hang), and every bound returned must be an ordered, finite interval.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run -O c_builder -- -max_total_time=600`
#![no_main]
use libfuzzer_sys::fuzz_target;
use lipschitz::capi::*;

/// The fuzzer's bytes, read front to back; `big` records whether a huge size was handed out.
struct Bytes<'a>(&'a [u8], bool);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn f64(&mut self) -> f64 {
        let b: [u8; 8] = std::array::from_fn(|_| self.u8());
        f64::from_le_bytes(b)
    }
    /// A small size, or now and then a huge one. (Small means ≤ 6: networks of a few hundred
    /// values, whose exact bounds take microseconds, so that the fuzzer explores shapes and
    /// sizes rather than spending its time in dense SVDs.)
    fn size(&mut self) -> u32 {
        match self.u8() % 8 {
            0 => {
                let v = self.u32();
                self.1 |= v > 64;
                v
            }
            _ => 1 + self.u8() as u32 % 6,
        }
    }
}

fn floats(n: usize, salt: u8) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 + salt as usize) % 13) as f32 / 6.0 - 1.0)
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data, false);
    let rank = 2 + b.u8() as usize % 3;
    let shape: Vec<i64> = (0..rank).map(|_| 1 + b.u8() as i64 % 7).collect();
    // SAFETY: `shape` holds `rank` values.
    let net = unsafe { lip_network_new(shape.as_ptr(), rank) };
    if net.is_null() {
        return;
    }
    let mut checkpoints = vec![0usize];
    for _ in 0..(b.u8() % 10) {
        let status = match b.u8() % 9 {
            0 => {
                let (rows, cols) = (b.size() as usize, b.size() as usize);
                let n = rows.saturating_mul(cols);
                // (A zero size makes n 0: the bias is sized by rows alone, so bound it too.)
                if n > 1 << 16 || rows > 1 << 16 {
                    continue;
                }
                let w = floats(n, b.u8());
                let bias = floats(rows, 3);
                let with_bias = b.u8() & 1 == 1;
                // SAFETY: w holds rows·cols floats, bias rows (or NULL).
                unsafe {
                    lip_network_add_dense(
                        net,
                        w.as_ptr(),
                        rows,
                        cols,
                        if with_bias {
                            bias.as_ptr()
                        } else {
                            std::ptr::null()
                        },
                    )
                }
            }
            1 => {
                let conv = LipConv2d {
                    out_channels: b.size(),
                    in_channels: b.size(),
                    kernel_h: b.size(),
                    kernel_w: b.size(),
                    input_h: b.size(),
                    input_w: b.size(),
                    stride_h: b.size(),
                    stride_w: b.size(),
                    dilation_h: b.size(),
                    dilation_w: b.size(),
                    groups: b.size(),
                    pad_top: b.size(),
                    pad_left: b.size(),
                    pad_bottom: b.size(),
                    pad_right: b.size(),
                    padding_mode: b.u8() as u32 % 3,
                };
                let n = [
                    conv.out_channels,
                    conv.in_channels,
                    conv.kernel_h,
                    conv.kernel_w,
                ]
                .iter()
                .fold(1u128, |a, &v| a * v as u128);
                if n > 1 << 16 || conv.out_channels > 1 << 16 {
                    continue;
                }
                // Enough floats for any group count (groups only divides the input side).
                let w = floats(n as usize, b.u8());
                let bias = floats(conv.out_channels as usize, 1);
                // SAFETY: w holds at least the weight count, bias out_channels floats.
                unsafe { lip_network_add_conv2d(net, w.as_ptr(), &conv, bias.as_ptr()) }
            }
            2 => unsafe { lip_network_add_activation(net, b.u8() as i32 % 11 - 1, b.f64()) },
            3 => {
                let c = b.size() as usize;
                if c > 1 << 12 {
                    continue;
                }
                let (g, m) = (floats(c, 1), floats(c, 2));
                let v: Vec<f32> = floats(c, 4).iter().map(|x| x.abs()).collect();
                // SAFETY: four arrays of `c` floats.
                unsafe {
                    lip_network_add_batch_norm(
                        net,
                        g.as_ptr(),
                        m.as_ptr(),
                        m.as_ptr(),
                        v.as_ptr(),
                        c,
                        b.f64(),
                    )
                }
            }
            4 => unsafe {
                lip_network_add_pool(net, b.u8() as i32 % 3, b.size(), b.size(), b.size())
            },
            5 => unsafe { lip_network_add_global_avg_pool(net) },
            6 => unsafe { lip_network_add_flatten(net) },
            7 => {
                let mut id = 0usize;
                let s = unsafe { lip_network_checkpoint(net, &mut id) };
                checkpoints.push(id);
                s
            }
            _ => {
                let pick = b.u8() as usize;
                let id = checkpoints.get(pick % 4).copied().unwrap_or(pick);
                unsafe { lip_network_add_residual(net, id) }
            }
        };
        assert!(status == LIP_OK || status < 0, "status {status}");
    }
    // A network with huge sizes was accepted by the builder (the validation paths are what
    // it tests): bounding it is legitimately slow (time proportional to its size), which
    // would only slow the fuzzer down. The importer targets bound small networks likewise.
    if b.1 {
        unsafe { lip_network_free(net) };
        return;
    }
    let mut o = lip_options_default();
    o.rtol = match b.u8() % 4 {
        0 => b.f64(),
        _ => 1e-2,
    };
    o.time_limit_seconds = match b.u8() % 4 {
        0 => b.f64(),
        1 => 1e300,
        _ => 0.005,
    };
    // Mostly the global pool: a pool of its own is built per call, which is slow to fuzz.
    o.threads = match b.u8() % 16 {
        0 => b.u32(),
        1 => 1,
        _ => 0,
    };
    o.max_iterations = 1 + b.u8() as u32 % 20;
    o.lower_samples = u32::from(b.u8() % 32 == 0);
    o.memory_limit_bytes = 64 << 20;
    o.method = b.u8() as i32 % 6 - 1;
    if o.threads > 8 && o.threads <= 256 {
        o.threads = 2; // valid, but thread pools that large only cost time here
    }
    if o.time_limit_seconds > 0.01 && o.time_limit_seconds < 1e9 {
        o.time_limit_seconds = 0.01;
    }
    let mut out = LipBound::default();
    // SAFETY: a live handle, options and out valid.
    let s = unsafe { lip_network_bound_ex(net, &o, &mut out) };
    assert!(s == LIP_OK || s < 0, "status {s}");
    if s == LIP_OK {
        assert!(
            out.upper.is_finite() && out.upper >= 0.0,
            "upper {}",
            out.upper
        );
        assert!(
            out.lower >= 0.0 && out.lower <= out.upper,
            "[{}, {}]",
            out.lower,
            out.upper
        );
    }
    let count = unsafe { lip_network_layer_count(net) };
    for i in 0..count.min(3) + 1 {
        let s = unsafe { lip_network_layer_bound_ex(net, i, &o, &mut out) };
        assert!(s == LIP_OK || s < 0, "status {s}");
        if s == LIP_OK {
            assert!(
                out.lower >= 0.0 && out.lower <= out.upper,
                "[{}, {}]",
                out.lower,
                out.upper
            );
        }
    }
    unsafe { lip_network_free(net) };
});
