//! Attacks on the tool, made at test time the way an attacker would make them: model files
//! whose external data is a symbolic link, a hard link or a FIFO; devices and FIFOs given as
//! the model or a `.npy` file; sizes chosen to overflow, exhaust memory or burn time; weights
//! and attributes chosen to produce a wrong certificate; hostile arguments at the C boundary
//! and a hostile stdout for the CLI. Each must end in a clean error (or a correct interval),
//! quickly, without reading a byte from outside the model's folder.

// The C ABI is called directly with the arguments written beside each call; its safety
// contract is what these tests exercise, so the unsafe blocks are not annotated one by one.
#![allow(clippy::undocumented_unsafe_blocks)]

use lipschitz::capi::*;
use lipschitz::network::{analyze, AnalysisOptions};
use lipschitz::onnx::{load_onnx, load_onnx_bytes, ImportOptions};
use lipschitz::{Error, Options};
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::onnx::*;

fn quick() -> AnalysisOptions {
    AnalysisOptions {
        lower: None,
        ..AnalysisOptions::default()
    }
}

/// A fresh, empty folder for one test's files.
fn folder(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lipschitz-hostile-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Runs `f` on a thread and fails the test if it takes longer than `limit` (a hang).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("took longer than {limit:?}: a hang"))
}

fn load_err(path: &Path) -> String {
    load_onnx(path, &ImportOptions::default())
        .map(|_| ())
        .expect_err("the attack must be refused")
        .to_string()
}

// ---- 1. files outside the model's folder -----------------------------------------------

/// A "secret" outside the model's folder, and a model of one 1×4 Gemm whose weights are
/// stored in external data at `location`.
fn secret_and_model(dir: &Path, location: &str) -> (PathBuf, PathBuf) {
    let outside = dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let secret = outside.join("secret.bin");
    std::fs::write(&secret, [0x40u8; 16]).unwrap();
    let model_dir = dir.join("model");
    std::fs::create_dir_all(&model_dir).unwrap();
    let bytes = model(
        &[1, 4],
        vec![gemm("x", "y", "W")],
        vec![external_tensor("W", &[1, 4], location)],
    );
    let path = model_dir.join("m.onnx");
    std::fs::write(&path, bytes).unwrap();
    (secret, path)
}

#[test]
fn external_data_through_a_symlink_to_a_file_is_refused() {
    let dir = folder("symlink-file");
    let (secret, model) = secret_and_model(&dir, "w.bin");
    std::os::unix::fs::symlink(&secret, dir.join("model/w.bin")).unwrap();
    let e = load_err(&model);
    assert!(e.contains("symbolic link") && e.contains("refused"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn external_data_through_a_symlinked_folder_is_refused() {
    let dir = folder("symlink-dir");
    let (_, model) = secret_and_model(&dir, "sub/secret.bin");
    std::os::unix::fs::symlink(dir.join("outside"), dir.join("model/sub")).unwrap();
    let e = load_err(&model);
    assert!(e.contains("symbolic link") && e.contains("refused"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn external_data_through_a_hard_link_is_refused() {
    let dir = folder("hardlink");
    let (secret, model) = secret_and_model(&dir, "w.bin");
    std::fs::hard_link(&secret, dir.join("model/w.bin")).unwrap();
    let e = load_err(&model);
    assert!(e.contains("hard links") && e.contains("refused"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn external_data_that_is_a_fifo_or_a_folder_is_refused_without_blocking() {
    let dir = folder("fifo");
    let (_, model) = secret_and_model(&dir, "w.bin");
    mkfifo(&dir.join("model/w.bin"));
    let m = model.clone();
    let e = within(Duration::from_secs(20), move || load_err(&m));
    assert!(e.contains("FIFO") && e.contains("refused"), "{e}");
    std::fs::remove_file(dir.join("model/w.bin")).unwrap();
    std::fs::create_dir_all(dir.join("model/w.bin")).unwrap();
    let e = load_err(&model);
    assert!(e.contains("directory") && e.contains("refused"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn external_data_outside_by_name_is_refused_and_inside_is_read() {
    let dir = folder("names");
    let (secret, model) = secret_and_model(&dir, "../outside/secret.bin");
    assert!(load_err(&model).contains("leaves the model's folder"));
    let (_, model) = secret_and_model(&dir, secret.to_str().unwrap());
    assert!(load_err(&model).contains("absolute"));
    // The same bytes as a regular file inside the folder are read: 4 floats of 3.0.
    let (_, model) = secret_and_model(&dir, "data/w.bin");
    std::fs::create_dir_all(dir.join("model/data")).unwrap();
    let w: Vec<u8> = [3.0f32; 4].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("model/data/w.bin"), w).unwrap();
    let net = load_onnx(&model, &ImportOptions::default()).unwrap();
    let a = analyze(&net, &quick()).unwrap();
    assert!(a.layers[0].lower <= 6.0 && 6.0 <= a.layers[0].upper);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn external_data_symlink_is_refused_through_the_c_abi() {
    let dir = folder("symlink-c");
    let (secret, model) = secret_and_model(&dir, "w.bin");
    std::os::unix::fs::symlink(&secret, dir.join("model/w.bin")).unwrap();
    let path = CString::new(model.to_str().unwrap()).unwrap();
    let net = unsafe { lip_network_from_onnx(path.as_ptr(), std::ptr::null(), 0) };
    assert!(net.is_null());
    let e = unsafe { CStr::from_ptr(lip_last_error()) }
        .to_string_lossy()
        .into_owned();
    assert!(e.contains("symbolic link"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

// ---- 2. hangs and unbounded reads -------------------------------------------------------

#[test]
fn devices_and_fifos_as_model_or_npy_are_refused_without_reading() {
    let e = within(Duration::from_secs(20), || load_err(Path::new("/dev/zero")));
    assert!(e.contains("device"), "{e}");
    let e = within(Duration::from_secs(20), || {
        lipschitz::npy::read_npy_matrix(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string()
    });
    assert!(e.contains("device"), "{e}");
    let dir = folder("fifo-model");
    let fifo = dir.join("m.onnx");
    mkfifo(&fifo);
    let f = fifo.clone();
    let e = within(Duration::from_secs(20), move || load_err(&f));
    assert!(e.contains("FIFO"), "{e}");
    let e = within(Duration::from_secs(20), move || {
        lipschitz::npy::read_npy_matrix(&fifo)
            .unwrap_err()
            .to_string()
    });
    assert!(e.contains("FIFO"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

// ---- 3. aborts and CPU burns from pooling sizes -----------------------------------------

fn pool_model(kernel: i64, pad: i64) -> Vec<u8> {
    model(
        &[1, 1, 4, 4],
        vec![node(
            "MaxPool",
            &["x"],
            "y",
            vec![
                attr_ints("kernel_shape", &[kernel, kernel]),
                attr_ints("pads", &[pad, pad, pad, pad]),
            ],
        )],
        vec![],
    )
}

#[test]
fn huge_pooling_windows_give_an_error_or_a_bound_quickly() {
    // Pads of half the kernel: the padded input just holds the window, the output is 5×5.
    for (kernel, pad) in [(1 << 40, 1 << 39), (1 << 62, 1 << 61), (1 << 30, 1 << 29)] {
        let started = Instant::now();
        let bytes = pool_model(kernel, pad);
        let outcome = within(Duration::from_secs(30), move || {
            let net = load_onnx_bytes(&bytes, "pool", None, &ImportOptions::default())?;
            analyze(&net, &AnalysisOptions::default()).map(|a| a.network.upper)
        });
        if let Ok(upper) = outcome {
            assert!(
                upper.is_finite() && upper >= 0.0,
                "kernel {kernel}: {upper}"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "kernel {kernel}: {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_pool_too_costly_to_evaluate_is_refused() {
    // 65 536 windows of 32 768 taps each on a 32 768-long row: 2^31 work per channel × 16.
    let bytes = model(
        &[1, 16, 1 << 15, 1],
        vec![node(
            "AveragePool",
            &["x"],
            "y",
            vec![
                attr_ints("kernel_shape", &[1 << 15, 1]),
                attr_ints("pads", &[1 << 15, 0, 1 << 15, 0]),
            ],
        )],
        vec![],
    );
    let e = load_onnx_bytes(&bytes, "pool", None, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("operations per evaluation"), "{e}");
}

#[test]
fn a_huge_pool_through_the_c_builder_does_not_kill_the_host() {
    let shape = [1i64, 1, 4, 4];
    let net = unsafe { lip_network_new(shape.as_ptr(), 4) };
    assert!(!net.is_null());
    let status = unsafe { lip_network_add_pool(net, 1, 0xFFFF_FFFF, 1, 0x7FFF_FFFF) };
    if status == LIP_OK {
        let handle = net as usize;
        let s = within(Duration::from_secs(30), move || {
            let mut out = LipBound::default();
            let s = unsafe { lip_network_bound(handle as *const LipNetwork, 1e-3, &mut out) };
            (s, out.upper)
        });
        assert!(s.0 == LIP_OK || s.0 < 0);
        if s.0 == LIP_OK {
            assert!(s.1.is_finite());
        }
    }
    unsafe { lip_network_free(net) };
}

// ---- 4. the memory limit ----------------------------------------------------------------

#[test]
fn absurd_ranks_are_refused_before_they_are_copied() {
    let dims: Vec<i64> = vec![1; 100_000];
    let bytes = model(&dims, vec![node("Identity", &["x"], "y", vec![])], vec![]);
    let started = Instant::now();
    let e = load_onnx_bytes(&bytes, "rank", None, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("rank 100000"), "{e}");
    // Unsqueeze with 300 000 axes (quadratic before).
    let axes: Vec<i64> = (0..300_000).collect();
    let bytes = model(
        &[1, 4],
        vec![node("Unsqueeze", &["x", "axes"], "y", vec![])],
        vec![i64_tensor("axes", &axes)],
    );
    let e = load_onnx_bytes(&bytes, "unsqueeze", None, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("over the limit of 64"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn weight_copies_count_against_the_memory_limit() {
    // A 2000×2000 float Gemm (16 MB): the decoded model, the tensor and the layer's copy
    // need ~48 MB, over a 40 MB limit; with 200 MB it loads.
    let n = 2000usize;
    let w: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32).collect();
    let bytes = model(
        &[1, n as i64],
        vec![gemm("x", "y", "W")],
        vec![f32_tensor("W", &[n as i64, n as i64], &w)],
    );
    let small = ImportOptions {
        memory_limit: 40 << 20,
        ..ImportOptions::default()
    };
    let e = load_onnx_bytes(&bytes, "big", None, &small).unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    let large = ImportOptions {
        memory_limit: 200 << 20,
        ..ImportOptions::default()
    };
    load_onnx_bytes(&bytes, "big", None, &large).unwrap();
}

#[test]
fn constants_doubled_by_concat_run_into_the_limit() {
    // Each Concat doubles a folded constant: 2^40 values after 30 nodes, from a tiny file.
    let mut nodes = Vec::new();
    let mut last = "c0".to_string();
    for k in 1..=30 {
        let out = format!("c{k}");
        nodes.push(node(
            "Concat",
            &[&last, &last],
            &out,
            vec![attr_i("axis", 0)],
        ));
        last = out;
    }
    nodes.push(node("Reshape", &["x", &last], "y", vec![]));
    let bytes = model(&[1, 4], nodes, vec![i64_tensor("c0", &[1; 1024])]);
    let started = Instant::now();
    let opts = ImportOptions {
        memory_limit: 256 << 20,
        ..ImportOptions::default()
    };
    let e = load_onnx_bytes(&bytes, "concat", None, &opts).unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

// ---- 5. wrong certificates --------------------------------------------------------------

#[test]
fn double_weights_are_certified_as_stored_not_as_rounded_to_f32() {
    // 16777217 = 2^24 + 1 rounds to 2^24 in f32; diag(1 + 2^-30, ½) rounds to diag(1, ½).
    for (values, rows, cols, norm) in [
        (vec![16_777_217.0], 1, 1, 16_777_217.0),
        (
            vec![1.0 + 2f64.powi(-30), 0.0, 0.0, 0.5],
            2,
            2,
            1.0 + 2f64.powi(-30),
        ),
    ] {
        let bytes = model(
            &[1, cols],
            vec![gemm("x", "y", "W")],
            vec![f64_tensor("W", &[rows, cols], &values)],
        );
        let net = load_onnx_bytes(&bytes, "f64", None, &ImportOptions::default()).unwrap();
        let a = analyze(&net, &quick()).unwrap();
        let l = &a.layers[0];
        assert!(
            l.lower <= norm && norm <= l.upper,
            "[{}, {}] ∌ {norm}",
            l.lower,
            l.upper
        );
        assert!(a.network.upper >= norm);
        assert_ne!(
            l.certificate.label(),
            "exact",
            "a widened bound is not exact"
        );
        // The lower-bound search would run on the f32 copy: it is skipped, and says so.
        let a = analyze(&net, &AnalysisOptions::default()).unwrap();
        assert!(a.network.lower.is_none());
        assert!(
            a.network.notes.iter().any(|n| n.contains("float64")),
            "{:?}",
            a.network.notes
        );
    }
}

#[test]
fn gemm_alpha_is_applied_exactly_or_widened() {
    // alpha·w rounds in f32 for alpha = 0.1: the interval holds the exact product.
    let alpha = 0.1f32;
    let w = 3.000_000_2f32;
    let norm = alpha as f64 * w as f64;
    let bytes = model(
        &[1, 1],
        vec![node(
            "Gemm",
            &["x", "W"],
            "y",
            vec![attr_i("transB", 1), attr_f("alpha", alpha)],
        )],
        vec![f32_tensor("W", &[1, 1], &[w])],
    );
    let net = load_onnx_bytes(&bytes, "alpha", None, &ImportOptions::default()).unwrap();
    let a = analyze(&net, &quick()).unwrap();
    let l = &a.layers[0];
    assert!(
        l.lower <= norm && norm <= l.upper,
        "[{}, {}] ∌ {norm}",
        l.lower,
        l.upper
    );
}

#[test]
fn double_npy_matrices_are_certified_as_stored() {
    let dir = folder("npy64");
    let header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1), }";
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(16_777_217.0f64.to_le_bytes());
    let path = dir.join("w.npy");
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lipschitz"))
        .args(["dense", path.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (lower, upper) = (
        v["layers"][0]["lower"].as_f64().unwrap(),
        v["layers"][0]["upper"].as_f64().unwrap(),
    );
    assert!(
        lower <= 16_777_217.0 && 16_777_217.0 <= upper,
        "[{lower}, {upper}]"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn non_finite_activation_attributes_are_errors_naming_node_and_attribute() {
    for (op, attr, value) in [
        ("Selu", "gamma", f32::NAN),
        ("HardSigmoid", "alpha", f32::INFINITY),
        ("LeakyRelu", "alpha", f32::NAN),
        ("Elu", "alpha", f32::NEG_INFINITY),
    ] {
        let bytes = model(
            &[1, 4],
            vec![node(op, &["x"], "act", vec![attr_f(attr, value)])],
            vec![],
        );
        let e = load_onnx_bytes(&bytes, "attr", None, &ImportOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("'act'") && e.contains(attr), "{op}: {e}");
    }
    // The C builder checks the same.
    let shape = [1i64, 4];
    let net = unsafe { lip_network_new(shape.as_ptr(), 2) };
    let s = unsafe { lip_network_add_activation(net, LIP_ACT_LEAKY_RELU, f64::NAN) };
    assert_eq!(s, LIP_ERR_INVALID_ARGUMENT);
    unsafe { lip_network_free(net) };
}

/// `depth` layers of `x ↦ scale·x` (1×1 Gemms) with ReLUs between them.
fn scaled_chain(depth: usize, scale: f32) -> Vec<u8> {
    let mut nodes = Vec::new();
    let mut last = "x".to_string();
    for k in 0..depth {
        let g = format!("g{k}");
        nodes.push(gemm(&last, &g, "W"));
        let r = format!("r{k}");
        nodes.push(node("Relu", &[&g], &r, vec![]));
        last = r;
    }
    model(&[1, 1], nodes, vec![f32_tensor("W", &[1, 1], &[scale])])
}

#[test]
fn bounds_that_underflow_stay_positive_and_overflow_is_an_error() {
    let net = load_onnx_bytes(
        &scaled_chain(10, 1e-38),
        "tiny",
        None,
        &ImportOptions::default(),
    )
    .unwrap();
    let a = analyze(&net, &quick()).unwrap();
    assert!(a.network.upper > 0.0, "upper {}", a.network.upper);
    assert!(a.network.underflow);
    let net = load_onnx_bytes(
        &scaled_chain(10, 1e38),
        "huge",
        None,
        &ImportOptions::default(),
    )
    .unwrap();
    let e = analyze(&net, &quick()).unwrap_err().to_string();
    assert!(e.contains("overflows"), "{e}");
}

#[test]
fn pads_that_overflow_and_values_defined_twice_are_refused() {
    let bytes = model(
        &[1, 1, 4, 4],
        vec![node("Pad", &["x", "pads"], "y", vec![])],
        vec![i64_tensor("pads", &[0, 0, i64::MAX, 0, 0, 0, i64::MAX, 0])],
    );
    let e = load_onnx_bytes(&bytes, "pad", None, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("overflow"), "{e}");
    let bytes = model(
        &[1, 2],
        vec![
            node("Relu", &["x"], "y", vec![]),
            node("Tanh", &["x"], "y", vec![]),
        ],
        vec![],
    );
    let e = load_onnx_bytes(&bytes, "ssa", None, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("already defined"), "{e}");
}

// ---- 6. the C boundary ------------------------------------------------------------------

#[test]
fn c_options_out_of_range_are_errors_and_huge_time_limits_mean_no_limit() {
    let w = [1.0f32, 2.0, 3.0, 4.0];
    let mut out = LipBound::default();
    let mut o = lip_options_default();
    o.time_limit_seconds = 1e300;
    assert_eq!(
        unsafe { lip_dense_norm_ex(w.as_ptr(), 2, 2, &o, &mut out) },
        LIP_OK
    );
    assert!(out.lower <= out.upper);
    o.time_limit_seconds = 0.0;
    o.threads = 5000;
    let started = Instant::now();
    let s = unsafe { lip_dense_norm_ex(w.as_ptr(), 2, 2, &o, &mut out) };
    assert_eq!(s, LIP_ERR_INVALID_ARGUMENT);
    assert!(started.elapsed() < Duration::from_secs(1));
    // A size of −1 with a 4-float buffer: refused before any read.
    let s = unsafe { lip_dense_norm(w.as_ptr(), usize::MAX, 1, 1e-4, &mut out) };
    assert_eq!(s, LIP_ERR_TOO_LARGE);
    let s = unsafe { lip_dense_norm(w.as_ptr(), 1 << 40, 1, 1e-4, &mut out) };
    assert_eq!(s, LIP_ERR_TOO_LARGE);
}

#[test]
fn a_cached_network_analysis_does_not_hide_changed_options() {
    let shape = [1i64, 3];
    let net = unsafe { lip_network_new(shape.as_ptr(), 2) };
    let w = [1.0f32, 0.0, 0.0, 0.0, 2.0, 0.0];
    assert_eq!(
        unsafe { lip_network_add_dense(net, w.as_ptr(), 2, 3, std::ptr::null()) },
        LIP_OK
    );
    let mut o = lip_options_default();
    o.lower_samples = 0;
    let mut out = LipBound::default();
    assert_eq!(unsafe { lip_network_bound_ex(net, &o, &mut out) }, LIP_OK);
    o.threads = 5000;
    assert_eq!(
        unsafe { lip_network_bound_ex(net, &o, &mut out) },
        LIP_ERR_INVALID_ARGUMENT
    );
    o.threads = 0;
    o.time_limit_seconds = -1.0;
    assert_eq!(
        unsafe { lip_network_bound_ex(net, &o, &mut out) },
        LIP_ERR_INVALID_ARGUMENT
    );
    unsafe { lip_network_free(net) };
}

// ---- 7. the CLI's stdout ----------------------------------------------------------------

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/onnx")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_closed_or_broken_stdout_is_a_clean_error() {
    let bin = env!("CARGO_BIN_EXE_lipschitz");
    let script = format!(
        "'{bin}' analyze '{}' --json --no-lower | head -c 10 >/dev/null; echo \"status ${{PIPESTATUS[0]}}\"",
        fixture("mlp.onnx")
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stdout.contains("status 101"), "{stdout} {stderr}");
    let out = Command::new("bash")
        .args([
            "-c",
            &format!("'{bin}' analyze '{}' --no-lower >&-", fixture("mlp.onnx")),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a closed stdout must not succeed silently"
    );
    assert!(
        stderr.starts_with("error:") && stderr.contains("closed"),
        "{stderr}"
    );
}

// ---- 8. wrongly refused -----------------------------------------------------------------

#[test]
fn constants_may_come_first_in_add_sub_and_mul() {
    // y = b + W x, z = 2 · y, u = c − z: the constant on the left each time.
    let bytes = model(
        &[1, 2],
        vec![
            node("MatMul", &["x", "W"], "m", vec![]),
            node("Add", &["b", "m"], "y", vec![]),
            node("Mul", &["two", "y"], "z", vec![]),
            node("Sub", &["b", "z"], "u", vec![]),
        ],
        vec![
            f32_tensor("W", &[2, 2], &[3.0, 0.0, 0.0, 1.0]),
            f32_tensor("b", &[2], &[1.0, -1.0]),
            f32_tensor("two", &[], &[2.0]),
        ],
    );
    let net = load_onnx_bytes(&bytes, "first", None, &ImportOptions::default()).unwrap();
    let a = analyze(&net, &AnalysisOptions::default()).unwrap();
    let (lower, upper) = (a.network.lower.unwrap(), a.network.upper);
    assert!(
        lower <= 6.0 * (1.0 + 1e-9) && 6.0 <= upper,
        "[{lower}, {upper}]"
    );
    assert!(
        lower >= 6.0 * (1.0 - 1e-6),
        "a linear network's lower bound is its norm: {lower}"
    );
}

// ---- found by fuzzing (c_builder) -------------------------------------------------------

#[test]
fn pads_and_strides_out_of_proportion_do_not_scan_billions_of_frequencies() {
    use lipschitz::conv::{conv2d_norm, Conv2d, ConvMethod};
    // A 6×6 image padded by 40 000 on each side and read with stride 40 000: a 3×3 output,
    // and a padded grid of 6.4 billion frequencies that the embedding bound would scan.
    let conv = Conv2d::new(2, 2, [3, 3], [6, 6])
        .pads([40_000; 4])
        .stride([40_000, 40_000]);
    let w: Vec<f32> = (0..conv.weight_len())
        .map(|i| (i % 5) as f32 - 2.0)
        .collect();
    let started = Instant::now();
    let r = within(Duration::from_secs(30), move || {
        conv2d_norm(&w, &conv, ConvMethod::Auto, &Options::default())
    })
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        r.bound.lower <= r.bound.upper && r.bound.meets(1e-4),
        "{:?}",
        r.bound
    );
    // The same geometry on a layer too large for a dense SVD is refused, not scanned.
    let conv = Conv2d::new(64, 64, [3, 3], [64, 64])
        .pads([1 << 20; 4])
        .stride([1 << 20, 1 << 20]);
    let w = vec![0.01f32; conv.weight_len()];
    let e = within(Duration::from_secs(30), move || {
        conv2d_norm(&w, &conv, ConvMethod::Auto, &Options::default()).map(|r| r.bound.upper)
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("out of proportion"), "{e}");
}

#[test]
fn a_scale_folded_into_a_layer_that_underflows_f32_is_not_certified_as_zero() {
    // Gemm then BatchNorm with scale 1e-60: the folded weights 3e-60 and 1e-60 flush to 0 in
    // f32, and a relative rounding bound would certify the zero layer exactly (the c_builder
    // fuzz target found a network certified at 0 with an attained lower bound of 1.8e79).
    let bytes = model(
        &[1, 2],
        vec![
            gemm("x", "g", "W"),
            node(
                "BatchNormalization",
                &["g", "scale", "bias", "mean", "var"],
                "y",
                vec![attr_f("epsilon", 0.0)],
            ),
        ],
        vec![
            f32_tensor("W", &[2, 2], &[3.0, 0.0, 0.0, 1.0]),
            f64_tensor("scale", &[2], &[1e-60, 1e-60]),
            f64_tensor("bias", &[2], &[0.0, 0.0]),
            f64_tensor("mean", &[2], &[0.0, 0.0]),
            f64_tensor("var", &[2], &[1.0, 1.0]),
        ],
    );
    let net = load_onnx_bytes(&bytes, "flush", None, &ImportOptions::default()).unwrap();
    let a = analyze(&net, &AnalysisOptions::default()).unwrap();
    let l = &a.layers[0];
    assert_eq!(l.folded.len(), 1, "the BatchNorm is folded into the Gemm");
    assert!(
        l.lower <= 3e-60 && 3e-60 <= l.upper,
        "[{}, {}]",
        l.lower,
        l.upper
    );
    assert!(a.network.upper >= 3e-60);
    if let Some(lower) = a.network.lower {
        assert!(lower <= a.network.upper, "[{lower}, {}]", a.network.upper);
    }
}
