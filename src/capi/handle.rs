//! Everything that touches a raw pointer or crosses the boundary, in one place: reading
//! arguments, writing results, the registry of live network handles, and the guards that
//! turn failures and panics into status codes.
//!
//! Every function here that reads or writes through a pointer is `unsafe` and states what the
//! caller's C contract guarantees; each `unsafe` block says which check makes it sound. The
//! entry points in the other files only call these.

use super::network::LipNetwork;
use super::status::{CResult, Failure, Status, LIP_OK};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

// ---- the boundary ------------------------------------------------------------------------

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Sets this thread's last-error message (NUL bytes removed).
pub(crate) fn set_last_error(message: &str) {
    let clean: String = message.chars().filter(|&c| c != '\0').collect();
    LAST_ERROR.with(|e| *e.borrow_mut() = CString::new(clean).unwrap_or_default());
}

/// This thread's last-error message, valid until the next failure on this thread.
pub(crate) fn last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// How many C calls are running now, on any thread. While one is, a panic (always caught at
/// the boundary and reported through `lip_last_error`) prints nothing on the host's stderr.
static ACTIVE_CALLS: AtomicUsize = AtomicUsize::new(0);

/// Installs, once, a panic hook that stays silent while a C call is running and defers to
/// the previous hook otherwise (the host's own panics, if it is a Rust program, still print).
fn install_quiet_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if ACTIVE_CALLS.load(Ordering::SeqCst) == 0 {
                previous(info);
            }
        }));
    });
}

/// Runs `body` at the C boundary: a panic becomes `LIP_ERR_INTERNAL` with its message, and
/// is not printed.
pub(crate) fn catch<T>(body: impl FnOnce() -> CResult<T>) -> CResult<T> {
    install_quiet_panic_hook();
    ACTIVE_CALLS.fetch_add(1, Ordering::SeqCst);
    let outcome = catch_unwind(AssertUnwindSafe(body));
    ACTIVE_CALLS.fetch_sub(1, Ordering::SeqCst);
    outcome.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(Failure::new(
            Status::Internal,
            format!("internal error (caught panic: {message}); please report it"),
        ))
    })
}

/// The boundary of functions returning a status: `LIP_OK`, or the failure's code with
/// `"{function}: {message}"` as the last error.
pub(crate) fn guard(function: &str, body: impl FnOnce() -> CResult<()>) -> i32 {
    match catch(body) {
        Ok(()) => LIP_OK,
        Err(f) => {
            set_last_error(&format!("{function}: {}", f.message));
            f.status as i32
        }
    }
}

/// The boundary of functions returning a value: `fallback` on failure (NULL, 0), with the
/// message as the last error.
pub(crate) fn guard_value<T>(function: &str, fallback: T, body: impl FnOnce() -> CResult<T>) -> T {
    match catch(body) {
        Ok(v) => v,
        Err(f) => {
            set_last_error(&format!("{function}: {}", f.message));
            fallback
        }
    }
}

// ---- reading arguments -------------------------------------------------------------------

/// A `T` read from C, or `None` for NULL.
///
/// # Safety
/// `p` is NULL or points to a readable, initialised `T`.
pub(crate) unsafe fn read_optional<T: Copy>(p: *const T) -> Option<T> {
    // SAFETY: non-null is checked by `as_ref`; the caller guarantees it points to a `T`.
    unsafe { p.as_ref() }.copied()
}

/// A `T` read from C; NULL is an error naming the argument.
///
/// # Safety
/// As [`read_optional`].
pub(crate) unsafe fn read<T: Copy>(p: *const T, name: &str) -> CResult<T> {
    // SAFETY: the caller's contract, passed on.
    unsafe { read_optional(p) }.ok_or_else(|| Failure::null(name))
}

/// The `n` values behind `p`. A count no real buffer can have is refused before anything is
/// read: more bytes than `isize::MAX` (no allocation is that large; a `size_t` of −1 lands
/// here) or than `memory_limit` (the array is copied or analysed under that limit).
///
/// # Safety
/// `p` is NULL or points to `n` readable, initialised values that stay unchanged during the
/// call.
pub(crate) unsafe fn slice<'a, T>(
    p: *const T,
    n: usize,
    what: &str,
    memory_limit: usize,
) -> CResult<&'a [T]> {
    if p.is_null() {
        return Err(Failure::null(what));
    }
    let bytes = n as u128 * std::mem::size_of::<T>() as u128;
    if bytes > isize::MAX as u128 || bytes > memory_limit as u128 {
        return Err(Failure::new(
            Status::TooLarge,
            format!(
                "{what}: {n} values ({bytes} bytes) exceed the memory limit of {memory_limit} \
                 bytes; refused before reading"
            ),
        ));
    }
    // SAFETY: non-null; `n` readable values by the caller's contract, and the byte count is
    // at most isize::MAX as from_raw_parts requires.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// A file path from a NUL-terminated C string (bytes as given on Unix).
///
/// # Safety
/// `p` is NULL or a NUL-terminated string.
pub(crate) unsafe fn path(p: *const c_char, name: &str) -> CResult<PathBuf> {
    if p.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    path_from_bytes(bytes)
}

#[cfg(unix)]
fn path_from_bytes(bytes: &[u8]) -> CResult<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
}

#[cfg(not(unix))]
fn path_from_bytes(bytes: &[u8]) -> CResult<PathBuf> {
    std::str::from_utf8(bytes)
        .map(PathBuf::from)
        .map_err(|_| Failure::invalid("path is not UTF-8"))
}

// ---- writing results ---------------------------------------------------------------------

/// A checked, writable result slot: made only from a non-null pointer the caller promised
/// is writable, so that writing it needs no further check.
pub(crate) struct Out<T>(NonNull<T>);

impl<T> Out<T> {
    /// Checks `p` before any work is done (a NULL `out` fails fast).
    ///
    /// # Safety
    /// `p` is NULL or points to writable memory for a `T` that outlives the call.
    pub(crate) unsafe fn new(p: *mut T, name: &str) -> CResult<Self> {
        NonNull::new(p).map(Out).ok_or_else(|| Failure::null(name))
    }

    /// Writes the result.
    pub(crate) fn put(self, value: T) {
        // SAFETY: non-null by construction, writable by the contract accepted in `new`.
        unsafe { self.0.as_ptr().write(value) }
    }
}

/// A checked, writable array of `n` result slots.
pub(crate) struct OutSlice<T>(NonNull<T>, usize);

impl<T: Copy> OutSlice<T> {
    /// Checks `p` before any work is done.
    ///
    /// # Safety
    /// `p` is NULL or points to writable memory for `n` values of `T` that outlives the call.
    pub(crate) unsafe fn new(p: *mut T, n: usize, name: &str) -> CResult<Self> {
        NonNull::new(p)
            .map(|p| OutSlice(p, n))
            .ok_or_else(|| Failure::null(name))
    }

    /// Writes the results (`values.len()` must be the `n` given to `new`).
    pub(crate) fn put(self, values: &[T]) {
        assert_eq!(values.len(), self.1, "OutSlice::put: wrong count");
        // SAFETY: non-null by construction; `n` writable slots by the contract accepted in
        // `new`; a fresh Rust slice cannot overlap the caller's buffer.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.0.as_ptr(), self.1) }
    }
}

// ---- network handles ---------------------------------------------------------------------

/// Addresses of the live network handles. Every entry point checks its handle here before
/// dereferencing it, so a freed (or never allocated) pointer gets an error instead of a
/// crash, and a second `lip_network_free` is a no-op. (A freed address that the allocator
/// hands to a new network is live again: that case cannot be told apart.)
static LIVE_HANDLES: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());

/// Moves a network to the heap and registers it as live.
pub(crate) fn register(net: LipNetwork) -> *mut LipNetwork {
    let raw = Box::into_raw(Box::new(net));
    if let Ok(mut live) = LIVE_HANDLES.lock() {
        live.insert(raw as usize);
    }
    raw
}

fn is_live(net: *const LipNetwork) -> bool {
    LIVE_HANDLES
        .lock()
        .map(|live| live.contains(&(net as usize)))
        .unwrap_or(false)
}

fn not_live() -> Failure {
    Failure::invalid(
        "net is not a live network handle (already freed, or not from lip_network_new / \
         lip_network_from_onnx)",
    )
}

fn check_live(net: *const LipNetwork) -> CResult<()> {
    if net.is_null() {
        Err(Failure::null("net"))
    } else if !is_live(net) {
        Err(not_live())
    } else {
        Ok(())
    }
}

/// The network behind a handle.
///
/// # Safety
/// `net` is NULL or a pointer the caller got from this library; no builder call runs on it
/// concurrently.
pub(crate) unsafe fn network<'a>(net: *const LipNetwork) -> CResult<&'a LipNetwork> {
    check_live(net)?;
    // SAFETY: a registered handle is a live Box (the registry says so).
    unsafe { net.as_ref() }.ok_or_else(|| Failure::null("net"))
}

/// The network behind a handle, for building.
///
/// # Safety
/// As [`network`], and nothing else uses the handle during the call.
pub(crate) unsafe fn network_mut<'a>(net: *mut LipNetwork) -> CResult<&'a mut LipNetwork> {
    check_live(net)?;
    // SAFETY: a registered handle is a live Box; exclusive during building, by contract.
    unsafe { net.as_mut() }.ok_or_else(|| Failure::null("net"))
}

/// Unregisters and drops a handle; a handle that is not live is left alone (an error).
///
/// # Safety
/// `net` is a pointer the caller got from this library, not in use by another thread.
pub(crate) unsafe fn free(net: *mut LipNetwork) -> CResult<()> {
    let removed = LIVE_HANDLES
        .lock()
        .map(|mut live| live.remove(&(net as usize)))
        .unwrap_or(false);
    if !removed {
        return Err(not_live());
    }
    // SAFETY: it was registered, so it came from Box::into_raw and is live; it is now
    // unregistered, so no later call can reach it.
    drop(unsafe { Box::from_raw(net) });
    Ok(())
}
