//! Builds the C examples with the system C compiler (`-Wall -Wextra -Werror`) against the
//! generated header, links them against both the shared and the static library, runs them,
//! and compares what they print with the Rust API's results.

use lipschitz::conv::{conv2d_norm, Conv2d, ConvMethod, PaddingMode};
use lipschitz::network::{
    analyze, Activation, AnalysisOptions, LowerOptions, Network, NetworkBuilder,
};
use lipschitz::onnx::{load_onnx, ImportOptions};
use lipschitz::{dense_norm, Options};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<profile>`, where cargo puts liblipschitz.{so,a} (the test binary is in `deps/`).
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/..")
        .to_path_buf()
}

fn weight(i: usize) -> f32 {
    ((i * 7 % 11) as i32 - 5) as f32 / 10.0
}

/// Compiles `c_examples/<source>` (C11 or C++17 by extension) with warnings as errors,
/// links it against the shared or the static library, runs it with `args` and returns stdout.
fn compile_and_run(source: &str, static_link: bool, args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = library_dir();
    for file in ["liblipschitz.a", "liblipschitz.so"] {
        assert!(
            lib.join(file).exists(),
            "{} is missing: run `cargo build --release` (or `bash scripts/check.sh`) before the tests",
            lib.join(file).display()
        );
    }
    let cpp = source.ends_with(".cpp");
    let out = std::env::temp_dir().join(format!(
        "lipschitz_{}_{}_{}",
        source.replace('.', "_"),
        if static_link { "static" } else { "shared" },
        std::process::id()
    ));
    let (compiler, default, std) = if cpp {
        ("CXX", "c++", "-std=c++17")
    } else {
        ("CC", "cc", "-std=c11")
    };
    let mut cc = Command::new(std::env::var(compiler).unwrap_or_else(|_| default.into()));
    cc.args([std, "-Wall", "-Wextra", "-Werror", "-pthread", "-I"])
        .arg(root.join("include"))
        .arg(root.join("c_examples").join(source));
    if static_link {
        cc.arg(lib.join("liblipschitz.a"))
            .args(["-lpthread", "-ldl", "-lm"]);
    } else {
        cc.arg(format!("-L{}", lib.display()))
            .arg("-llipschitz")
            .arg(format!("-Wl,-rpath,{}", lib.display()));
    }
    let status = cc
        .arg("-o")
        .arg(&out)
        .status()
        .expect("a C/C++ compiler is installed");
    assert!(
        status.success(),
        "compiling {source} failed (static = {static_link})"
    );
    let run = Command::new(&out)
        .args(args)
        .output()
        .expect("run the example");
    let _ = std::fs::remove_file(&out);
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{source} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}

fn line<'a>(output: &'a str, name: &str) -> Vec<&'a str> {
    output
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no '{name}' line in:\n{output}"))
        .split_whitespace()
        .collect()
}

fn check(output: &str, name: &str, lower: f64, upper: f64) {
    let fields = line(output, name);
    let (l, u): (f64, f64) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    assert_eq!(
        (l, u),
        (lower, upper),
        "{name}: C printed {l} {u}, Rust gives {lower} {upper}"
    );
}

#[test]
fn layer_bound_example_matches_the_rust_api() {
    let dense: Vec<f32> = (0..12).map(weight).collect();
    let d = dense_norm(&dense, 3, 4, &Options::with_rtol(1e-6)).unwrap();
    let conv = Conv2d::new(4, 3, [3, 3], [8, 7]).padding(1);
    let w: Vec<f32> = (0..conv.weight_len()).map(weight).collect();
    let opts = Options::with_rtol(1e-6);
    let z = conv2d_norm(&w, &conv, ConvMethod::Auto, &opts)
        .unwrap()
        .bound;
    let c = conv2d_norm(
        &w,
        &conv.clone().mode(PaddingMode::Circular),
        ConvMethod::Auto,
        &opts,
    )
    .unwrap()
    .bound;
    for static_link in [false, true] {
        let out = compile_and_run("layer_bound.c", static_link, &[]);
        assert!(
            out.contains(&format!("lipschitz {}", env!("CARGO_PKG_VERSION"))),
            "{out}"
        );
        check(&out, "dense", d.lower, d.upper);
        check(&out, "conv_zeros", z.lower, z.upper);
        check(&out, "conv_circular", c.lower, c.upper);
        assert!(
            line(&out, "bad_padding_mode")
                .join(" ")
                .contains("padding_mode = 7"),
            "{out}"
        );
        assert!(
            line(&out, "null_weights").join(" ").contains("w is NULL"),
            "{out}"
        );
    }
}

fn fields_of(output: &str, prefix: &str) -> Vec<Vec<String>> {
    output
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

#[test]
fn network_bound_example_matches_the_rust_api() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for model in ["cnn_bn.onnx", "residual.onnx"] {
        let path = root.join("tests/fixtures/onnx").join(model);
        let net = load_onnx(&path, &ImportOptions::default()).unwrap();
        let report = analyze(&net, &analysis_options(1e-6)).unwrap();
        for static_link in [false, true] {
            let out = compile_and_run(
                "network_bound.c",
                static_link,
                &[path.to_str().unwrap(), "1e-6"],
            );
            let layers = fields_of(&out, "layer ");
            assert_eq!(layers.len(), report.layers.len(), "{out}");
            for (f, l) in layers.iter().zip(&report.layers) {
                assert_eq!(f[2], l.name, "{out}");
                assert_eq!(f[3], l.op, "{out}");
                let (lo, up): (f64, f64) = (f[4].parse().unwrap(), f[5].parse().unwrap());
                assert_eq!((lo, up), (l.lower, l.upper), "{model} {}", l.name);
            }
            let n = &fields_of(&out, "network ")[0];
            let (lo, up): (f64, f64) = (n[1].parse().unwrap(), n[2].parse().unwrap());
            assert_eq!(up, report.network.upper, "{model}");
            assert_eq!(Some(lo), report.network.lower, "{model}");
            assert_eq!(
                n[3].parse::<i32>().unwrap(),
                report.network.certificate.code()
            );
        }
    }
}

fn analysis_options(rtol: f64) -> AnalysisOptions {
    AnalysisOptions {
        layer: Options::with_rtol(rtol),
        lower: Some(LowerOptions::default()),
        merge_linear_runs: true,
        ..AnalysisOptions::default()
    }
}

/// The network `c_examples/network.cpp` builds, made with the Rust API.
fn cpp_network() -> Network {
    let w = |n: usize, salt: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7 + salt) % 11) as i32 - 5) as f32 / 20.0)
            .collect()
    };
    let conv = |cin| Conv2d::new(4, cin, [3, 3], [8, 8]).padding(1);
    let mut net = NetworkBuilder::new("network", &[1, 3, 8, 8]).unwrap();
    net.conv(conv(3), w(4 * 3 * 9, 0), None).unwrap();
    let f = |x: f32| vec![x as f64; 4];
    net.batch_norm(&f(1.5), &f(0.1), &f(0.0), &f(2.0), 1e-5)
        .unwrap();
    let skip = net.activation(Activation::Relu).unwrap();
    net.conv(conv(4), w(4 * 4 * 9, 1), None).unwrap();
    net.activation(Activation::Relu).unwrap();
    net.conv(conv(4), w(4 * 4 * 9, 2), None).unwrap();
    net.add(skip).unwrap();
    net.activation(Activation::Relu).unwrap();
    net.global_avg_pool().unwrap();
    net.dense(w(12, 3), 3, 4, None).unwrap();
    net.finish()
}

#[test]
fn cpp_wrapper_example_builds_the_same_network_as_rust() {
    let report = analyze(&cpp_network(), &analysis_options(1e-6)).unwrap();
    for static_link in [false, true] {
        let out = compile_and_run("network.cpp", static_link, &[]);
        let layers = fields_of(&out, "layer ");
        assert_eq!(layers.len(), report.layers.len(), "{out}");
        for (f, l) in layers.iter().zip(&report.layers) {
            let (lo, up): (f64, f64) = (f[3].parse().unwrap(), f[4].parse().unwrap());
            assert_eq!((lo, up), (l.lower, l.upper), "{}:\n{out}", l.name);
        }
        let n = &fields_of(&out, "network ")[0];
        let (lo, up): (f64, f64) = (n[1].parse().unwrap(), n[2].parse().unwrap());
        assert_eq!(up, report.network.upper, "{out}");
        assert_eq!(Some(lo), report.network.lower, "{out}");
        let errors = fields_of(&out, "error ");
        assert_eq!(errors.len(), 2, "{out}");
        assert!(out.contains("expects 4 inputs"), "{out}");
        assert!(out.contains("/no/such/model.onnx"), "{out}");
    }
}

#[test]
fn pkg_config_file_links_the_examples() {
    let lib = library_dir();
    let pc =
        std::fs::read_to_string(lib.join("lipschitz.pc")).expect("the build writes lipschitz.pc");
    assert!(
        pc.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{pc}"
    );
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "lipschitz"])
        .env("PKG_CONFIG_PATH", &lib)
        .output()
        .expect("pkg-config is installed");
    assert!(
        flags.status.success(),
        "{}",
        String::from_utf8_lossy(&flags.stderr)
    );
    let flags = String::from_utf8(flags.stdout).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = std::env::temp_dir().join(format!("lipschitz_pc_{}", std::process::id()));
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .arg(root.join("c_examples/layer_bound.c"))
        .args(flags.split_whitespace())
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cc layer_bound.c $(pkg-config --cflags --libs lipschitz) failed"
    );
    let run = Command::new(&exe).output().unwrap();
    let _ = std::fs::remove_file(&exe);
    assert!(run.status.success());
    assert!(String::from_utf8_lossy(&run.stdout).contains("conv_circular"));
}

#[test]
fn error_paths_and_eight_threads_from_c() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx/circular.onnx");
    for static_link in [false, true] {
        let out = compile_and_run("error_paths.c", static_link, &[model.to_str().unwrap()]);
        assert_eq!(out.trim(), "ok", "{out}");
    }
}

#[test]
fn certify_example_matches_the_rust_api() {
    use lipschitz::certify::{Certifier, CertifyOptions, Samples};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/certify");
    let model = dir.join("mlp.onnx");
    let (x, y) = (dir.join("x_test.npy"), dir.join("y_test.npy"));
    let net = load_onnx(&model, &ImportOptions::default()).unwrap();
    let opts = CertifyOptions {
        local: true,
        ..CertifyOptions::default()
    };
    let certifier = Certifier::new(&net, &opts, &mut |_, _, _| {}).unwrap();
    let samples = Samples::read(&x, Some(&y), certifier.sample_shape(), 10).unwrap();
    let report = certifier.certify(&samples, &[0.2]).unwrap();
    let out = compile_and_run(
        "certify.c",
        false,
        &[
            model.to_str().unwrap(),
            x.to_str().unwrap(),
            y.to_str().unwrap(),
            "0.2",
        ],
    );
    let rows = fields_of(&out, "sample ");
    assert_eq!(rows.len(), 360, "{out}");
    for (f, s) in rows.iter().zip(&report.samples) {
        let num = |k: usize| f[k].parse::<f64>().unwrap();
        assert_eq!(f[2].parse::<usize>().unwrap(), s.label);
        assert_eq!(f[3].parse::<usize>().unwrap(), s.predicted);
        assert_eq!(num(4), s.margin);
        assert_eq!(num(5), s.radius_global);
        assert_eq!(Some(num(6)), s.radius_pairwise);
        assert_eq!(Some(num(7)), s.radius_local);
    }
    let summary = &fields_of(&out, "summary ")[0];
    assert_eq!(summary[1].parse::<f64>().unwrap(), report.lipschitz.upper);
    assert_eq!(summary[4].parse::<f64>().unwrap(), report.clean_accuracy);
    let certified = &fields_of(&out, "certified ")[0];
    let acc = &report.certified_accuracy;
    for (k, expected) in [
        acc.global[0],
        acc.pairwise.as_ref().unwrap()[0],
        acc.local.as_ref().unwrap()[0],
    ]
    .into_iter()
    .enumerate()
    {
        let got: f64 = certified[2 + k].parse().unwrap();
        assert!((got - expected).abs() < 1e-6, "{certified:?} vs {acc:?}");
    }
}
