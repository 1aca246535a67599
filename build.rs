//! Generates the C header `include/lipschitz.h` from `src/capi.rs` with cbindgen.
//!
//! The header is committed. The build always writes a fresh copy to `$OUT_DIR/lipschitz.h`;
//! outside CI it also refreshes `include/lipschitz.h` so that developers see the change in
//! `git status`. In CI (`CI` set) the committed file is left alone and the test
//! `c_header_is_current` fails if it differs from the fresh one.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/capi.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=CI");
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/capi.rs"))
        .generate()
        .expect("cbindgen can parse src/capi.rs");
    bindings.write_to_file(out_dir.join("lipschitz.h"));
    if std::env::var_os("CI").is_none() {
        bindings.write_to_file(crate_dir.join("include/lipschitz.h"));
    }
}
