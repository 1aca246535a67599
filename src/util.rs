//! Small concurrency helpers shared by the operators.

use std::sync::Mutex;

/// A pool of reusable `f64` buffers, so that operator applications do not allocate once warm.
#[derive(Default)]
pub(crate) struct BufferPool {
    buffers: Mutex<Vec<Vec<f64>>>,
}

impl BufferPool {
    /// A zeroed buffer of `len` elements (reused when one is free).
    pub(crate) fn take(&self, len: usize) -> Vec<f64> {
        let mut buf = self
            .buffers
            .lock()
            .map(|mut p| p.pop())
            .unwrap_or(None)
            .unwrap_or_default();
        buf.clear();
        buf.resize(len, 0.0);
        buf
    }

    /// Returns a buffer to the pool.
    pub(crate) fn give(&self, buf: Vec<f64>) {
        if let Ok(mut p) = self.buffers.lock() {
            p.push(buf);
        }
    }
}

/// A raw pointer into a buffer whose elements parallel tasks write disjointly.
pub(crate) struct DisjointWrites<T = f64> {
    ptr: *mut T,
    len: usize,
}

impl<T> Clone for DisjointWrites<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for DisjointWrites<T> {}

// SAFETY: users only write indices that no other thread touches during the parallel section.
unsafe impl<T: Send> Send for DisjointWrites<T> {}
// SAFETY: as for Send: concurrent users write disjoint indices only.
unsafe impl<T: Send> Sync for DisjointWrites<T> {}

impl<T> DisjointWrites<T> {
    pub(crate) fn new(buffer: &mut [T]) -> Self {
        DisjointWrites {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
        }
    }

    /// # Safety
    /// No other thread may write or read `index` concurrently, and the buffer must outlive
    /// the parallel section.
    pub(crate) unsafe fn write(&self, index: usize, value: T) {
        assert!(
            index < self.len,
            "DisjointWrites index {index} out of bounds {}",
            self.len
        );
        // SAFETY: in bounds (checked) and exclusive (guaranteed by the caller).
        unsafe { *self.ptr.add(index) = value };
    }
}

/// `a·b` rounded up (0 only when a factor is 0): products of bounds stay upper bounds
/// through rounding, and never underflow to 0.
pub(crate) fn mul_up(a: f64, b: f64) -> f64 {
    if a == 0.0 || b == 0.0 {
        0.0
    } else {
        (a * b).next_up()
    }
}

/// `a + b` rounded up (for non-negative terms).
pub(crate) fn add_up(a: f64, b: f64) -> f64 {
    (a + b).next_up()
}

/// `√(Σ xᵢ²)` rounded up.
pub(crate) fn norm_up(xs: impl IntoIterator<Item = f64>) -> f64 {
    let sq = xs.into_iter().fold(0.0, |s, x| add_up(s, mul_up(x, x)));
    if sq == 0.0 {
        0.0
    } else {
        sq.sqrt().next_up()
    }
}

/// `√a` rounded up (for `a ≥ 0`).
pub(crate) fn sqrt_up(a: f64) -> f64 {
    if a == 0.0 {
        0.0
    } else {
        a.sqrt().next_up()
    }
}
