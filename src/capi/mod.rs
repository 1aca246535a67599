//! The C ABI: thin wrappers that validate what C hands us, convert it to the Rust API, catch
//! every panic and report failures as status codes plus a thread-local message.
//!
//! The header `include/lipschitz.h` is generated from this module by cbindgen (build.rs;
//! `tests/c_header.rs` checks the committed copy). Files: `status.rs` (codes, the failure
//! type), `handle.rs` (every pointer read and write, the handle registry, the boundary
//! guards), `options.rs`, `layer.rs` (single layers), `network.rs` (handles and queries),
//! `builder.rs` (`lip_network_add_*`), `certify.rs` (`lip_network_certify`). The contract is described in docs/c-api.md.

use std::ffi::c_char;

mod builder;
mod certify;
mod handle;
mod layer;
mod network;
mod options;
mod status;

pub use builder::*;
pub use certify::*;
pub use layer::*;
pub use network::*;
pub use options::*;
pub use status::{
    LIP_ERR_INTERNAL, LIP_ERR_INVALID_ARGUMENT, LIP_ERR_MODEL, LIP_ERR_NON_FINITE,
    LIP_ERR_NULL_POINTER, LIP_ERR_NUMERICAL, LIP_ERR_TOO_LARGE, LIP_OK,
};

/// Major version of the library this header belongs to (compare with `lip_version()`).
pub const LIP_VERSION_MAJOR: u32 = 0;
/// Minor version.
pub const LIP_VERSION_MINOR: u32 = 1;
/// Patch version.
pub const LIP_VERSION_PATCH: u32 = 0;

/// The library version, e.g. "0.1.0". The string is static: never free it.
#[no_mangle]
pub extern "C" fn lip_version() -> *const c_char {
    static VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr().cast()
}

/// The message of the last failed call on this thread ("" if none).
///
/// The pointer stays valid until the next failing `lip_*` call on the same thread; copy the
/// string if you need it longer. Never free it.
#[no_mangle]
pub extern "C" fn lip_last_error() -> *const c_char {
    handle::last_error()
}
