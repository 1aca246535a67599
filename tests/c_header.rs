//! The committed C header must be what cbindgen generates from the current `src/capi/`
//! (build.rs writes the fresh copy into `OUT_DIR`, never into the source tree). Run with
//! `LIPSCHITZ_BLESS_HEADER=1` to refresh `include/lipschitz.h` after changing the C ABI.

#[test]
fn c_header_is_current() {
    let fresh = include_str!(concat!(env!("OUT_DIR"), "/lipschitz.h"));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/include/lipschitz.h");
    if std::env::var_os("LIPSCHITZ_BLESS_HEADER").is_some() {
        std::fs::write(path, fresh).expect("include/lipschitz.h is writable");
    }
    let committed = std::fs::read_to_string(path).expect("include/lipschitz.h exists");
    assert!(
        fresh == committed,
        "include/lipschitz.h is stale: run `LIPSCHITZ_BLESS_HEADER=1 cargo test --test \
         c_header` and commit the header"
    );
}
