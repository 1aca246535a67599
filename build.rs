//! Generates the C header from `src/capi/` with cbindgen into `$OUT_DIR/lipschitz.h`, and
//! `lipschitz.pc` beside the libraries.
//!
//! The build never writes into the source tree. The committed `include/lipschitz.h` is
//! checked against the fresh copy by `tests/c_header.rs`, which also refreshes it when run
//! with `LIPSCHITZ_BLESS_HEADER=1`.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/capi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/capi/mod.rs")) // follows `mod network;`
        .generate()
        .expect("cbindgen can parse src/capi/");
    bindings.write_to_file(out_dir.join("lipschitz.h"));
    write_pkg_config(&crate_dir, &out_dir);
}

/// Writes `lipschitz.pc` into the profile directory (`target/<profile>/`, beside the
/// libraries), pointing at this checkout's `include/` and that directory:
/// `PKG_CONFIG_PATH=target/release pkg-config --cflags --libs lipschitz`.
fn write_pkg_config(crate_dir: &std::path::Path, out_dir: &std::path::Path) {
    // OUT_DIR is target/<profile>/build/<pkg>-<hash>/out.
    let Some(profile_dir) = out_dir.ancestors().nth(3) else {
        return;
    };
    let pc = format!(
        "prefix={root}\nincludedir=${{prefix}}/include\nlibdir={lib}\n\n\
         Name: lipschitz\nDescription: Certified Lipschitz constants of neural networks\n\
         Version: {version}\nCflags: -I${{includedir}}\nLibs: -L${{libdir}} -llipschitz\n\
         Libs.private: -lpthread -ldl -lm\n",
        root = crate_dir.display(),
        lib = profile_dir.display(),
        version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default(),
    );
    let _ = std::fs::write(profile_dir.join("lipschitz.pc"), pc);
}
