//! Crate-private synchronisation shim (STYLE.md; after tokio's
//! `loom/mod.rs`).
//!
//! Every atomic, mutex, `Arc` and thread-parking call of the crate goes
//! through this module, so that the cargo feature `loom` swaps in loom's
//! model-checked versions (run by `tests/loom.rs`) while the ordinary build
//! uses `std`.
//!
//! Two things differ under loom, both documented where they are used:
//!
//! * **No timed park.** loom has no `park_timeout`; [`park`] ignores its
//!   timeout, so a loom model only ends a wait by an event or a kick (and
//!   loom reports a deadlock if neither comes — which is how the models
//!   check that no wakeup is lost).
//! * **[`dekker_fence`].** The wake protocol pairs a `SeqCst`
//!   read-modify-write with a later `SeqCst` load on each side (store X,
//!   load Y ∥ store Y, load X). The C++20 memory model forbids both loads
//!   from missing the other side's write because all four operations are
//!   in the single total order of `SeqCst` operations, so the `std` build
//!   needs no fence (on x86 the locked RMW is already a full barrier). loom
//!   models that total order only for `SeqCst` *fences*, and reports
//!   a false "lost wakeup" for the fence-free form; under loom
//!   [`dekker_fence`] therefore emits a `SeqCst` fence at the same point.
//!
//! The domain table uses [`OnceLock`] from `std` in both builds: loom has
//! no `OnceLock`, and the loom models add their domains before they spawn
//! threads, so no model explores its initialisation.

pub(crate) use std::sync::OnceLock;
pub(crate) use std::sync::atomic::Ordering;

#[cfg(not(feature = "loom"))]
mod imp {
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
    pub(crate) use std::sync::{Arc, Mutex, MutexGuard};
    pub(crate) use std::thread::{Thread, ThreadId, current, yield_now};
    use std::time::Duration;

    /// Blocks the current thread until it is unparked or `timeout` passes
    /// (`None`: no timeout). May return spuriously.
    #[inline]
    pub(crate) fn park(timeout: Option<Duration>) {
        match timeout {
            Some(t) => std::thread::park_timeout(t),
            None => std::thread::park(),
        }
    }

    /// No-op: see the module documentation.
    #[inline(always)]
    pub(crate) fn dekker_fence() {}
}

#[cfg(feature = "loom")]
mod imp {
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
    pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
    pub(crate) use loom::thread::{Thread, ThreadId, current, yield_now};
    use std::time::Duration;

    /// loom has no timed park: blocks until unparked (see the module
    /// documentation).
    #[inline]
    pub(crate) fn park(_timeout: Option<Duration>) {
        loom::thread::park();
    }

    /// A `SeqCst` fence, so that loom sees the Dekker pairs that `std`
    /// gets from the total order of `SeqCst` operations.
    #[inline]
    pub(crate) fn dekker_fence() {
        loom::sync::atomic::fence(super::Ordering::SeqCst);
    }
}

pub(crate) use imp::*;

/// Locks `m`, ignoring poisoning: every critical section of this crate
/// leaves its data consistent at each step, so a panic elsewhere does not
/// make the data unusable.
#[inline]
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
