//! Builds the C examples with the system C compiler (`-Wall -Wextra -Werror`) against the
//! generated header, links them against both the shared and the static library, runs them,
//! and compares what they print with the Rust API's results.

use lipschitz::conv::{conv2d_norm, Conv2d, ConvMethod, PaddingMode};
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

fn compile_and_run(static_link: bool) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = library_dir();
    for file in ["liblipschitz.a", "liblipschitz.so"] {
        assert!(
            lib.join(file).exists(),
            "{} is missing: run `cargo build --release` (or `bash scripts/check.sh`) before the tests",
            lib.join(file).display()
        );
    }
    let out = std::env::temp_dir().join(format!(
        "lipschitz_layer_bound_{}_{}",
        if static_link { "static" } else { "shared" },
        std::process::id()
    ));
    let mut cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cc.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root.join("include"))
        .arg(root.join("c_examples/layer_bound.c"));
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
        .expect("a C compiler (cc) is installed");
    assert!(
        status.success(),
        "compiling layer_bound.c failed (static = {static_link})"
    );
    let run = Command::new(&out).output().expect("run layer_bound");
    let _ = std::fs::remove_file(&out);
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "layer_bound failed:\n{stdout}\n{}",
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
        let out = compile_and_run(static_link);
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
