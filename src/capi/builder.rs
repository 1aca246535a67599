//! Building networks in code from C: `lip_network_add_*` append to the current tensor of a
//! handle through [`crate::network::NetworkBuilder`], the same builder Rust users and the
//! ONNX importer use.

use super::handle::{guard, network, network_mut, read, slice, Out};
use super::layer::{dense_weights, LipConv2d};
use super::network::LipNetwork;
use super::status::{CResult, Failure};
use crate::bound::Options;
use crate::network::{Activation, Pool2d};

/// Activation kinds for `lip_network_add_activation`.
pub const LIP_ACT_RELU: i32 = 0;
/// LeakyReLU with slope `param` (e.g. 0.01).
pub const LIP_ACT_LEAKY_RELU: i32 = 1;
/// tanh.
pub const LIP_ACT_TANH: i32 = 2;
/// Logistic sigmoid.
pub const LIP_ACT_SIGMOID: i32 = 3;
/// GELU (erf form).
pub const LIP_ACT_GELU: i32 = 4;
/// SiLU / swish `x·σ(x)`.
pub const LIP_ACT_SILU: i32 = 5;
/// ReLU6 (`Clip(0, 6)`).
pub const LIP_ACT_RELU6: i32 = 6;
/// ELU with `alpha = param`.
pub const LIP_ACT_ELU: i32 = 7;
/// Softplus.
pub const LIP_ACT_SOFTPLUS: i32 = 8;

/// The memory limit of the builder functions, which take no options: the default's.
fn builder_memory_limit() -> usize {
    Options::default().memory_limit
}

/// A copy of the `n` floats behind `p`, or `None` for NULL (an optional bias).
///
/// # Safety
/// `p` is NULL or points to `n` floats.
unsafe fn optional_floats(p: *const f32, n: usize) -> CResult<Option<Vec<f32>>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's contract, passed on.
    Ok(Some(
        unsafe { slice(p, n, "bias", builder_memory_limit()) }?.to_vec(),
    ))
}

/// Appends a dense layer `y = W x + b` on the last axis: `w` is `rows × cols` row-major
/// (rows = outputs), `bias` has `rows` entries or is NULL. The arrays are copied.
///
/// # Safety
/// `net` is a live handle; `w` points to rows·cols floats; `bias` is NULL or has `rows`.
#[no_mangle]
pub unsafe extern "C" fn lip_network_add_dense(
    net: *mut LipNetwork,
    w: *const f32,
    rows: usize,
    cols: usize,
    bias: *const f32,
) -> i32 {
    guard("lip_network_add_dense", || {
        // SAFETY: `net` is NULL or a live handle used by this thread alone, by contract.
        let n = unsafe { network_mut(net) }?;
        // SAFETY: `w` is NULL or rows·cols floats, `bias` NULL or `rows` floats, by contract.
        let weight = unsafe { dense_weights(w, rows, cols, builder_memory_limit()) }?.to_vec();
        // SAFETY: as above.
        let bias = unsafe { optional_floats(bias, rows) }?;
        n.build(|b| b.dense(weight, rows, cols, bias))
    })
}

/// Appends a conv layer. `conv` must describe the current tensor (channels, height, width);
/// `bias` has `out_channels` entries or is NULL. The arrays are copied.
///
/// # Safety
/// `net` is a live handle; `weight_oihw` has the conv's weight count; `bias` NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn lip_network_add_conv2d(
    net: *mut LipNetwork,
    weight_oihw: *const f32,
    conv: *const LipConv2d,
    bias: *const f32,
) -> i32 {
    guard("lip_network_add_conv2d", || {
        // SAFETY: `net` is NULL or a live handle used by this thread alone, by contract.
        let n = unsafe { network_mut(net) }?;
        // SAFETY: `conv` is NULL or a LipConv2d, by contract.
        let layer = unsafe { read(conv, "conv") }?.to_conv()?;
        let limit = builder_memory_limit();
        // SAFETY: the weights hold weight_len() floats, `bias` is NULL or `out_channels`
        // floats, by contract.
        let weight = unsafe { slice(weight_oihw, layer.weight_len(), "weight_oihw", limit) }?;
        // SAFETY: as above.
        let bias = unsafe { optional_floats(bias, layer.out_channels) }?;
        let weight = weight.to_vec();
        n.build(|b| b.conv(layer, weight, bias))
    })
}

/// Appends an elementwise activation (`LIP_ACT_*`); `param` is LeakyReLU's slope or ELU's
/// alpha and is ignored otherwise.
///
/// # Safety
/// `net` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn lip_network_add_activation(
    net: *mut LipNetwork,
    kind: i32,
    param: f64,
) -> i32 {
    guard("lip_network_add_activation", || {
        // SAFETY: `net` is NULL or a live handle used by this thread alone, by contract.
        let n = unsafe { network_mut(net) }?;
        if !param.is_finite() {
            return Err(Failure::invalid(format!("param = {param} must be finite")));
        }
        let act = match kind {
            LIP_ACT_RELU => Activation::Relu,
            LIP_ACT_LEAKY_RELU => Activation::LeakyRelu(param),
            LIP_ACT_TANH => Activation::Tanh,
            LIP_ACT_SIGMOID => Activation::Sigmoid,
            LIP_ACT_GELU => Activation::Gelu { tanh: false },
            LIP_ACT_SILU => Activation::Silu,
            LIP_ACT_RELU6 => Activation::Clip { min: 0.0, max: 6.0 },
            LIP_ACT_ELU => Activation::Elu(param),
            LIP_ACT_SOFTPLUS => Activation::Softplus,
            other => {
                return Err(Failure::invalid(format!(
                    "activation kind = {other}: expected a LIP_ACT_* code (0..8)"
                )))
            }
        };
        n.build(|b| b.activation(act))
    })
}

/// Appends inference BatchNorm over axis 1: `y = γ(x − μ)/√(σ² + ε) + β`, each array with
/// `channels` entries (copied). It is folded into the conv or dense layer before it when the
/// network is bounded.
///
/// # Safety
/// `net` is a live handle; the four arrays hold `channels` floats each.
#[no_mangle]
pub unsafe extern "C" fn lip_network_add_batch_norm(
    net: *mut LipNetwork,
    gamma: *const f32,
    beta: *const f32,
    mean: *const f32,
    var: *const f32,
    channels: usize,
    eps: f64,
) -> i32 {
    guard("lip_network_add_batch_norm", || {
        // SAFETY: `net` is NULL or a live handle used by this thread alone, by contract.
        let n = unsafe { network_mut(net) }?;
        let shape = n.network().shapes()[n.current()].clone();
        if shape.len() < 2 || shape[1] != channels {
            return Err(Failure::invalid(format!(
                "channels = {channels} does not match the current tensor {shape:?}"
            )));
        }
        let [g, b, m, v] = [
            (gamma, "gamma"),
            (beta, "beta"),
            (mean, "mean"),
            (var, "var"),
        ]
        // SAFETY: each array is NULL or holds `channels` floats, by contract.
        .map(|(p, name)| unsafe { slice(p, channels, name, builder_memory_limit()) });
        let (g, b, m, v) = (g?, b?, m?, v?);
        let [g, b, m, v] = [g, b, m, v].map(|p| p.iter().map(|&x| x as f64).collect::<Vec<_>>());
        n.build(|net| net.batch_norm(&g, &b, &m, &v, eps))
    })
}

/// Appends 2-D pooling on (1, C, H, W): `max = 1` for max pooling, 0 for average pooling
/// (padding excluded from the average); square `kernel`, `stride`, symmetric `pad`.
///
/// # Safety
/// `net` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn lip_network_add_pool(
    net: *mut LipNetwork,
    max: i32,
    kernel: u32,
    stride: u32,
    pad: u32,
) -> i32 {
    guard("lip_network_add_pool", || {
        // SAFETY: `net` is NULL or a live handle used by this thread alone, by contract.
        let n = unsafe { network_mut(net) }?;
        let (k, s, p) = (kernel as usize, stride as usize, pad as usize);
        let pool = Pool2d {
            kernel: [k, k],
            stride: [s, s],
            pads: [p; 4],
            dilation: [1, 1],
            ceil_mode: false,
        };
        match max {
            1 => n.build(|b| b.max_pool(pool)),
            0 => n.build(|b| b.avg_pool(pool, false)),
            other => Err(Failure::invalid(format!("max = {other}: expected 0 or 1"))),
        }
    })
}

/// Appends global average pooling and flattening: (1, C, H, W) → (1, C).
///
/// # Safety
/// `net` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn lip_network_add_global_avg_pool(net: *mut LipNetwork) -> i32 {
    guard("lip_network_add_global_avg_pool", || {
        // SAFETY: `net` is NULL or a live handle used by this thread alone, by contract.
        let n = unsafe { network_mut(net) }?;
        n.build(|b| b.global_avg_pool())
    })
}

/// Appends a flatten: (1, …) → (1, n).
///
/// # Safety
/// `net` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn lip_network_add_flatten(net: *mut LipNetwork) -> i32 {
    guard("lip_network_add_flatten", || {
        // SAFETY: `net` is NULL or a live handle used by this thread alone, by contract.
        let n = unsafe { network_mut(net) }?;
        n.build(|b| b.flatten())
    })
}

/// Writes the id of the current tensor to `*id`, to be added back later with
/// `lip_network_add_residual` (the start of a residual block).
///
/// # Safety
/// `net` is a live handle and `id` writable.
#[no_mangle]
pub unsafe extern "C" fn lip_network_checkpoint(net: *const LipNetwork, id: *mut usize) -> i32 {
    guard("lip_network_checkpoint", || {
        // SAFETY: `net` is NULL or a live handle, `id` NULL or writable, by contract.
        let (n, id) = unsafe { (network(net)?, Out::new(id, "id")?) };
        id.put(n.current());
        Ok(())
    })
}

/// Appends `current + tensor(id)` (a residual connection; the shapes must be equal).
///
/// # Safety
/// `net` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn lip_network_add_residual(net: *mut LipNetwork, id: usize) -> i32 {
    guard("lip_network_add_residual", || {
        // SAFETY: `net` is NULL or a live handle used by this thread alone, by contract.
        let n = unsafe { network_mut(net) }?;
        n.build(|b| b.add(id))
    })
}
