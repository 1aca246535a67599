//! The C entry points called as C would call them: results equal the Rust API's, and every
//! bad argument gives a status and a message instead of a crash.

// The C ABI is called directly with the arguments written beside each call; its safety
// contract is what these tests exercise, so the unsafe blocks are not annotated one by one.
#![allow(clippy::undocumented_unsafe_blocks)]

use lipschitz::capi::*;
use lipschitz::conv::{conv2d_norm, Conv2d, ConvMethod, PaddingMode};
use lipschitz::{dense_norm, Options};
use std::ffi::CStr;

fn last_error() -> String {
    unsafe { CStr::from_ptr(lip_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn layer() -> LipConv2d {
    LipConv2d {
        out_channels: 4,
        in_channels: 3,
        kernel_h: 3,
        kernel_w: 3,
        input_h: 8,
        input_w: 7,
        stride_h: 1,
        stride_w: 1,
        dilation_h: 1,
        dilation_w: 1,
        groups: 1,
        pad_top: 1,
        pad_left: 1,
        pad_bottom: 1,
        pad_right: 1,
        padding_mode: LIP_PADDING_ZEROS,
    }
}

#[test]
fn results_match_the_rust_api() {
    let w: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) / 3.0).collect();
    let mut out = LipBound::default();
    assert_eq!(
        unsafe { lip_dense_norm(w.as_ptr(), 3, 4, 1e-6, &mut out) },
        LIP_OK
    );
    let rust = dense_norm(&w, 3, 4, &Options::with_rtol(1e-6)).unwrap();
    assert_eq!(
        (out.lower, out.upper, out.certificate),
        (rust.lower, rust.upper, LIP_CERT_EXACT)
    );

    let c = layer();
    let cw: Vec<f32> = (0..4 * 3 * 9)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0)
        .collect();
    assert_eq!(
        unsafe { lip_conv2d_norm(cw.as_ptr(), &c, 1e-6, &mut out) },
        LIP_OK
    );
    let conv = Conv2d::new(4, 3, [3, 3], [8, 7]).padding(1);
    let rust = conv2d_norm(&cw, &conv, ConvMethod::Auto, &Options::with_rtol(1e-6)).unwrap();
    assert_eq!((out.lower, out.upper), (rust.bound.lower, rust.bound.upper));
    let circular = LipConv2d {
        padding_mode: LIP_PADDING_CIRCULAR,
        ..c
    };
    assert_eq!(
        unsafe { lip_conv2d_norm(cw.as_ptr(), &circular, 1e-6, &mut out) },
        LIP_OK
    );
    assert_eq!(out.certificate, LIP_CERT_EXACT);
    let rust = conv2d_norm(
        &cw,
        &conv.mode(PaddingMode::Circular),
        ConvMethod::Auto,
        &Options::default(),
    )
    .unwrap();
    assert_eq!(out.upper, rust.bound.upper);
    let version = unsafe { CStr::from_ptr(lip_version()) }.to_str().unwrap();
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
}

#[test]
fn bad_arguments_return_status_and_message() {
    let w = [1.0f32; 12];
    let mut out = LipBound::default();
    unsafe {
        assert_eq!(
            lip_dense_norm(std::ptr::null(), 3, 4, 1e-4, &mut out),
            LIP_ERR_NULL_POINTER
        );
        assert!(last_error().contains("w is NULL"));
        assert_eq!(
            lip_dense_norm(w.as_ptr(), 3, 4, 1e-4, std::ptr::null_mut()),
            LIP_ERR_NULL_POINTER
        );
        assert_eq!(
            lip_dense_norm(w.as_ptr(), 0, 4, 1e-4, &mut out),
            LIP_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            lip_dense_norm(w.as_ptr(), usize::MAX, 2, 1e-4, &mut out),
            LIP_ERR_TOO_LARGE
        );
        assert!(last_error().contains("overflows"), "{}", last_error());
        assert_eq!(
            lip_dense_norm(w.as_ptr(), 3, 4, -1.0, &mut out),
            LIP_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("rtol"));
        let nan = [1.0f32, f32::NAN, 0.0, 0.0];
        assert_eq!(
            lip_dense_norm(nan.as_ptr(), 2, 2, 1e-4, &mut out),
            LIP_ERR_NON_FINITE
        );
        assert!(last_error().contains("index 1"));

        let cw = [0.5f32; 108];
        assert_eq!(
            lip_conv2d_norm(cw.as_ptr(), std::ptr::null(), 1e-4, &mut out),
            LIP_ERR_NULL_POINTER
        );
        assert!(last_error().contains("conv is NULL"));
        let bad_mode = LipConv2d {
            padding_mode: 7,
            ..layer()
        };
        assert_eq!(
            lip_conv2d_norm(cw.as_ptr(), &bad_mode, 1e-4, &mut out),
            LIP_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("padding_mode = 7"));
        let bad_groups = LipConv2d {
            groups: 2,
            ..layer()
        };
        assert_eq!(
            lip_conv2d_norm(cw.as_ptr(), &bad_groups, 1e-4, &mut out),
            LIP_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("groups"));
        let zero_stride = LipConv2d {
            stride_w: 0,
            ..layer()
        };
        assert_eq!(
            lip_conv2d_norm(cw.as_ptr(), &zero_stride, 1e-4, &mut out),
            LIP_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("stride width"));
        let huge = LipConv2d {
            in_channels: u32::MAX,
            out_channels: u32::MAX,
            ..layer()
        };
        assert_ne!(lip_conv2d_norm(cw.as_ptr(), &huge, 1e-4, &mut out), LIP_OK);
    }
}

// ---- networks ---------------------------------------------------------------------------

fn fixture(name: &str) -> std::ffi::CString {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/onnx")
        .join(name);
    std::ffi::CString::new(p.to_str().unwrap()).unwrap()
}

#[test]
fn network_functions_refuse_bad_arguments() {
    unsafe {
        assert!(lip_network_from_onnx(std::ptr::null(), std::ptr::null(), 0).is_null());
        assert!(last_error().contains("path is NULL"), "{}", last_error());
        let missing = std::ffi::CString::new("/no/such/file.onnx").unwrap();
        assert!(lip_network_from_onnx(missing.as_ptr(), std::ptr::null(), 0).is_null());
        assert!(last_error().contains("/no/such/file.onnx"));
        let non_utf8 = std::ffi::CString::new(vec![b'/', 0xff, 0xfe, b'x']).unwrap();
        assert!(lip_network_from_onnx(non_utf8.as_ptr(), std::ptr::null(), 0).is_null());
        assert!(!last_error().is_empty());
        let long = std::ffi::CString::new("a/".repeat(5000)).unwrap();
        assert!(lip_network_from_onnx(long.as_ptr(), std::ptr::null(), 0).is_null());
        let path = fixture("dynamic.onnx");
        assert!(lip_network_from_onnx(path.as_ptr(), std::ptr::null(), 4).is_null());
        assert!(last_error().contains("input_shape is NULL"));
        assert!(lip_network_from_onnx(path.as_ptr(), std::ptr::null(), 0).is_null());
        assert!(last_error().contains("--input-shape"));

        let mut out = LipBound::default();
        assert_eq!(
            lip_network_bound(std::ptr::null(), 1e-4, &mut out),
            LIP_ERR_NULL_POINTER
        );
        assert_eq!(lip_network_layer_count(std::ptr::null()), 0);
        assert!(lip_network_layer_name(std::ptr::null(), 0).is_null());
        lip_network_free(std::ptr::null_mut());

        let net = lip_network_from_onnx(fixture("mlp.onnx").as_ptr(), std::ptr::null(), 0);
        assert!(!net.is_null(), "{}", last_error());
        assert_eq!(lip_network_layer_count(net), 2);
        assert_eq!(
            lip_network_bound(net, 1e-4, std::ptr::null_mut()),
            LIP_ERR_NULL_POINTER
        );
        assert_eq!(
            lip_network_bound(net, -1.0, &mut out),
            LIP_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("rtol"));
        assert_eq!(
            lip_network_layer_bound(net, 2, 1e-4, &mut out),
            LIP_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("out of range"));
        assert!(lip_network_layer_name(net, 2).is_null());
        let mut o = lip_options_default();
        o.method = 42;
        assert_eq!(
            lip_network_bound_ex(net, &o, &mut out),
            LIP_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("method = 42"));
        o = lip_options_default();
        o.time_limit_seconds = f64::NAN;
        assert_eq!(
            lip_network_bound_ex(net, &o, &mut out),
            LIP_ERR_INVALID_ARGUMENT
        );
        assert_eq!(lip_network_bound(net, 1e-6, &mut out), LIP_OK);
        assert!(out.lower > 0.0 && out.lower <= out.upper);
        lip_network_free(net);
        // Use after free and double free: errors, never a dereference of the freed pointer.
        assert_eq!(
            lip_network_bound(net, 1e-4, &mut out),
            LIP_ERR_INVALID_ARGUMENT
        );
        assert!(
            last_error().contains("not a live network handle"),
            "{}",
            last_error()
        );
        assert_eq!(lip_network_layer_count(net), 0);
        assert!(lip_network_layer_name(net, 0).is_null());
        assert_eq!(lip_network_add_flatten(net), LIP_ERR_INVALID_ARGUMENT);
        lip_network_free(net);
        assert!(
            last_error().contains("lip_network_free"),
            "{}",
            last_error()
        );
        // A pointer that never was a handle.
        let mut bogus = 0u64;
        let fake = (&mut bogus as *mut u64).cast::<LipNetwork>();
        assert_eq!(
            lip_network_bound(fake, 1e-4, &mut out),
            LIP_ERR_INVALID_ARGUMENT
        );
        lip_network_free(fake);
        assert_eq!(bogus, 0);

        // The builder.
        let shape = [1i64, 4];
        let net = lip_network_new(shape.as_ptr(), 2);
        assert!(!net.is_null());
        let w = [1.0f32, f32::NAN, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(
            lip_network_add_dense(net, w.as_ptr(), 2, 4, std::ptr::null()),
            LIP_ERR_NON_FINITE
        );
        assert_eq!(
            lip_network_add_dense(net, std::ptr::null(), 2, 4, std::ptr::null()),
            LIP_ERR_NULL_POINTER
        );
        assert_eq!(
            lip_network_add_dense(net, w.as_ptr(), usize::MAX, 4, std::ptr::null()),
            LIP_ERR_TOO_LARGE
        );
        assert_eq!(
            lip_network_add_dense(net, w.as_ptr(), 0, 4, std::ptr::null()),
            LIP_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            lip_network_add_activation(net, 99, 0.0),
            LIP_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("activation kind = 99"));
        assert_eq!(lip_network_add_pool(net, 1, 2, 2, 0), LIP_ERR_MODEL);
        assert!(last_error().contains("(N, C, H, W)"), "{}", last_error());
        assert_eq!(lip_network_add_residual(net, 77), LIP_ERR_INVALID_ARGUMENT);
        let good = [1.0f32, 2.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(
            lip_network_add_dense(net, good.as_ptr(), 2, 4, std::ptr::null()),
            LIP_OK
        );
        assert_eq!(lip_network_layer_count(net), 1);
        assert_eq!(lip_network_layer_bound(net, 0, 1e-8, &mut out), LIP_OK);
        let rust = dense_norm(&good, 2, 4, &Options::with_rtol(1e-8)).unwrap();
        assert_eq!((out.lower, out.upper), (rust.lower, rust.upper));

        // Certification: two classes, two samples of four values.
        let x = [1.0f32, 0.0, 0.5, 0.0, -1.0, 0.0, 0.5, 0.0];
        let mut radii = [LipSampleRadii {
            predicted: -1,
            margin: 0.0,
            radius_global: 0.0,
            radius_pairwise: 0.0,
            radius_local: 0.0,
        }; 2];
        let mut summary = std::mem::zeroed::<LipCertifySummary>();
        let null: *const LipOptions = std::ptr::null();
        let labels = [1i64, 0];
        let certify =
            |x: *const f32, dim: usize, labels: *const i64, radii: *mut LipSampleRadii| {
                lip_network_certify(net, x, 2, dim, labels, 1, null, radii, std::ptr::null_mut())
            };
        assert_eq!(
            certify(std::ptr::null(), 4, labels.as_ptr(), radii.as_mut_ptr()),
            LIP_ERR_NULL_POINTER
        );
        assert_eq!(
            certify(x.as_ptr(), 4, std::ptr::null(), radii.as_mut_ptr()),
            LIP_ERR_NULL_POINTER
        );
        assert_eq!(
            certify(x.as_ptr(), 4, labels.as_ptr(), std::ptr::null_mut()),
            LIP_ERR_NULL_POINTER
        );
        assert_eq!(
            certify(x.as_ptr(), 3, labels.as_ptr(), radii.as_mut_ptr()),
            LIP_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("dim = 3"), "{}", last_error());
        let bad = [1i64, -3];
        assert_eq!(
            certify(x.as_ptr(), 4, bad.as_ptr(), radii.as_mut_ptr()),
            LIP_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("labels[1] = -3"), "{}", last_error());
        let big = [1i64, 2];
        assert_eq!(
            certify(x.as_ptr(), 4, big.as_ptr(), radii.as_mut_ptr()),
            LIP_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("2 classes"), "{}", last_error());
        assert_eq!(
            lip_network_certify(
                net,
                x.as_ptr(),
                2,
                4,
                labels.as_ptr(),
                1,
                null,
                radii.as_mut_ptr(),
                &mut summary
            ),
            LIP_OK
        );
        // y = W x with rows (1, 2, 0, 1) and (2, 3, 4, 5): sample 0 gives (1, 4), class 1
        // by 3; W has no nonlinearity, so the pair bound is ‖w_1 − w_0‖ = √(1 + 1 + 16 + 16).
        assert_eq!(radii[0].predicted, 1);
        assert!((radii[0].margin - 3.0).abs() < 1e-12);
        let exact = 3.0 / 34f64.sqrt();
        assert!(radii[0].radius_pairwise <= exact && radii[0].radius_pairwise > exact * 0.999);
        assert!(radii[0].radius_local >= radii[0].radius_pairwise);
        assert_eq!(summary.classes, 2);
        assert!((summary.lipschitz - rust.upper).abs() <= 1e-6 * rust.upper);
        lip_network_free(net);
        assert!(lip_network_new(shape.as_ptr(), 0).is_null());
        let zero = [1i64, 0];
        assert!(lip_network_new(zero.as_ptr(), 2).is_null());
    }
}

#[test]
fn eight_threads_get_the_sequential_results() {
    let models = [
        "mlp.onnx",
        "cnn_bn.onnx",
        "residual.onnx",
        "circular.onnx",
        "fire.onnx",
    ];
    let run = |k: usize| -> (f64, f64, f64, f64) {
        unsafe {
            let net = lip_network_from_onnx(
                fixture(models[k % models.len()]).as_ptr(),
                std::ptr::null(),
                0,
            );
            assert!(!net.is_null());
            let mut out = LipBound::default();
            assert_eq!(lip_network_bound(net, 1e-6, &mut out), LIP_OK);
            let mut layer = LipBound::default();
            assert_eq!(lip_network_layer_bound(net, 0, 1e-6, &mut layer), LIP_OK);
            lip_network_free(net);
            let w: Vec<f32> = (0..20 * (k + 3))
                .map(|i| ((i * 13 + k) % 17) as f32 - 8.0)
                .collect();
            let mut d = LipBound::default();
            assert_eq!(lip_dense_norm(w.as_ptr(), 20, k + 3, 1e-8, &mut d), LIP_OK);
            (out.lower, out.upper, layer.upper, d.upper)
        }
    };
    let sequential: Vec<_> = (0..8).map(run).collect();
    let concurrent: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8).map(|k| s.spawn(move || run(k))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(sequential, concurrent);
}

/// The fuzzer (fuzz/fuzz_targets/layer_description.rs) found a circular 1×1 conv with
/// pad_right = 2³²−1: four billion outputs, which used to be counted one by one. It is now
/// refused before any work proportional to its size.
#[test]
fn huge_declared_outputs_are_refused_quickly() {
    let mut c = layer();
    (
        c.out_channels,
        c.in_channels,
        c.kernel_h,
        c.kernel_w,
        c.input_h,
        c.input_w,
    ) = (1, 1, 1, 1, 1, 1);
    (c.pad_top, c.pad_left, c.pad_bottom, c.pad_right) = (1, 1, 0, u32::MAX);
    c.padding_mode = LIP_PADDING_CIRCULAR;
    let w = [1.0f32];
    let mut out = LipBound::default();
    let started = std::time::Instant::now();
    let status = unsafe { lip_conv2d_norm(w.as_ptr(), &c, 1e-4, &mut out) };
    assert_eq!(status, LIP_ERR_TOO_LARGE, "{}", last_error());
    assert!(last_error().contains("output"), "{}", last_error());
    assert!(started.elapsed().as_secs_f64() < 1.0);
}

/// The fuzzer found a strided circular conv whose dilation made the polyphase-equivalent
/// kernel need 188 GB; the equivalent is now refused and the layer bounded otherwise.
#[test]
fn absurd_dilations_do_not_allocate_absurd_kernels() {
    for name in [
        "layer_polyphase_huge_kernel.bin",
        "layer_huge_padded_grid.bin",
    ] {
        fuzzed_layer(name);
    }
}

/// Session 3's finding: a zero-padded 1×1 conv on a 1×1 image with top and left pads of
/// 2³²−1 has 2⁶⁴ outputs; the product wrapped to 0, slipped past the memory check, and the
/// 1×1 shortcut then scanned four billion rows (20 s). Output sizes are now validated.
#[test]
fn outputs_whose_count_overflows_are_refused() {
    let started = std::time::Instant::now();
    fuzzed_layer("layer_overflowing_output.bin");
    assert!(started.elapsed().as_secs_f64() < 1.0);
}

/// Another fuzzer finding: pads of 2³²−1 rows made the frequency grid (and the kernel
/// symbol) absurd; the symbol's memory is now estimated and refused first.
fn fuzzed_layer(name: &str) {
    let bytes = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/fuzz")
            .join(name),
    )
    .unwrap();
    // Decode as fuzz/fuzz_targets/layer_description.rs does.
    let field = |i: usize| match bytes.get(i) {
        None => 1,
        Some(255) => u32::MAX,
        Some(&b) => (b % 12) as u32,
    };
    let c = LipConv2d {
        out_channels: field(0),
        in_channels: field(1),
        kernel_h: field(2),
        kernel_w: field(3),
        input_h: field(4),
        input_w: field(5),
        stride_h: field(6),
        stride_w: field(7),
        dilation_h: field(8),
        dilation_w: field(9),
        groups: field(10),
        pad_top: field(11),
        pad_left: field(12),
        pad_bottom: field(13),
        pad_right: field(14),
        padding_mode: field(15),
    };
    let w = vec![0.5f32; 4096];
    let mut out = LipBound::default();
    let status = unsafe { lip_conv2d_norm(w.as_ptr(), &c, 1e-4, &mut out) };
    assert!(status == LIP_OK || status < 0, "{c:?}");
    if status == LIP_OK {
        assert!(out.lower <= out.upper);
    }
}

#[test]
fn every_network_method_is_reported_and_the_smallest_is_the_bound() {
    use lipschitz::network::{analyze, AnalysisOptions, NetworkMethod};
    use lipschitz::onnx::{load_onnx, ImportOptions};
    let path = fixture("residual.onnx");
    let rust = {
        let p = std::path::PathBuf::from(path.to_str().unwrap());
        let net = load_onnx(&p, &ImportOptions::default()).unwrap();
        analyze(&net, &AnalysisOptions::default()).unwrap()
    };
    unsafe {
        let net = lip_network_from_onnx(path.as_ptr(), std::ptr::null(), 0);
        assert!(!net.is_null(), "{}", last_error());
        let mut count = 0usize;
        assert_eq!(
            lip_network_method_count(net, std::ptr::null(), &mut count),
            LIP_OK
        );
        assert_eq!(count, rust.network.methods.len());
        let mut best = LipBound::default();
        assert_eq!(
            lip_network_bound_ex(net, std::ptr::null(), &mut best),
            LIP_OK
        );
        let (mut out, mut method) = (LipBound::default(), -1);
        for (i, m) in rust.network.methods.iter().enumerate() {
            assert_eq!(
                lip_network_method_bound(net, i, std::ptr::null(), &mut out, &mut method),
                LIP_OK
            );
            assert_eq!(out.upper, m.upper);
            assert!(out.upper >= best.upper);
            let want = match m.name {
                NetworkMethod::Product => LIP_NETWORK_METHOD_PRODUCT,
                NetworkMethod::LipLT => LIP_NETWORK_METHOD_LIPLT,
                NetworkMethod::LipSdp => LIP_NETWORK_METHOD_LIPSDP,
                NetworkMethod::Eclipse => LIP_NETWORK_METHOD_ECLIPSE,
            };
            assert_eq!(method, want);
        }
        assert!(
            rust.network.methods.len() == 4,
            "LipLT, ECLipsE-Fast and LipSDP-Neuron apply to the residual fixture"
        );
        assert_eq!(
            lip_network_method_bound(net, count, std::ptr::null(), &mut out, &mut method),
            LIP_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("lip_network_method_bound: method index"));
        assert_eq!(
            lip_network_method_bound(net, 0, std::ptr::null(), &mut out, std::ptr::null_mut()),
            LIP_ERR_NULL_POINTER
        );
        // The methods' limits: 0 leaves a method out, and a NaN budget is refused.
        let mut o = lip_options_default();
        o.lower_samples = 0;
        o.lipsdp_max_size = 0;
        o.liplt_max_work = 0.0;
        assert_eq!(lip_network_method_count(net, &o, &mut count), LIP_OK);
        assert_eq!(count, 2, "product and ECLipsE-Fast");
        let mut names = Vec::new();
        for i in 0..count {
            assert_eq!(
                lip_network_method_bound(net, i, &o, &mut out, &mut method),
                LIP_OK
            );
            names.push(method);
        }
        assert_eq!(
            names,
            [LIP_NETWORK_METHOD_PRODUCT, LIP_NETWORK_METHOD_ECLIPSE]
        );
        o.liplt_max_work = f64::NAN;
        assert_eq!(
            lip_network_method_count(net, &o, &mut count),
            LIP_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("liplt_max_work"), "{}", last_error());
        lip_network_free(net);
    }
}
