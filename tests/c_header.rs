//! The committed C header must be what cbindgen generates from the current `src/capi.rs`.

#[test]
fn c_header_is_current() {
    let fresh = include_str!(concat!(env!("OUT_DIR"), "/lipschitz.h"));
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/lipschitz.h"))
            .expect("include/lipschitz.h exists");
    assert!(
        fresh == committed,
        "include/lipschitz.h is stale: run `cargo build` outside CI and commit the header"
    );
}
