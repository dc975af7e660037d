//! Shared memory that a peer may write at any moment.
//!
//! This is the only crate of pvio with `unsafe` on shared memory. Every
//! protocol crate (rings, grant tables, drivers) is safe code over the
//! [`SharedMem`] trait defined here.
//!
//! # Access rules
//!
//! A region handed out by this crate is memory that another domain (another
//! thread, or another process mapping the same memfd) may read and write
//! concurrently, with no cooperation and no good intent. So:
//!
//! * **No reference into the region ever escapes.** There is no `&[u8]`,
//!   `&T` or `&mut T` into shared memory in any public API: the compiler would
//!   be entitled to re-read through a reference (a double fetch, XSA-155).
//! * **Values are copied in and out, once.** [`SharedMemExt::read_obj`] copies a
//!   [`Pod`] value out of the region in a single pass; the caller validates and
//!   uses the private copy only. [`SharedMemExt::write_obj`] copies a value in.
//!   These copies are made of relaxed atomic loads and stores of the widest
//!   naturally aligned word (8, 4, 2 or 1 bytes): like Linux's `READ_ONCE`, the
//!   compiler can neither tear one read into two nor re-read, and unlike
//!   `ptr::read_volatile` they are not data races under Rust's memory model,
//!   so the concurrency tests run cleanly under Miri and loom.
//!   A copy of more than one word is not atomic as a whole: a peer may change
//!   the bytes mid-copy, and the caller must validate the copy it got.
//! * **Indices and flags are atomics with explicit orderings**: aligned
//!   `u16`/`u32`/`u64` loads, stores, compare-exchanges and bit operations,
//!   plus [`SharedMem::fence`]. Misaligned or out-of-bounds accesses return
//!   [`MemError`]; nothing here panics on a bad offset.
//!
//! # Backends
//!
//! * [`HeapMem`]: page-aligned, zeroed heap pages (one process).
//! * [`MemfdMem`]: a memfd mapped shared, sealed against shrinking and growing,
//!   shareable with another process by passing its fd.
//! * `LoomMem` (feature `loom`): every 32-bit word is a loom atomic, so the
//!   ring and grant protocols can be model-checked with the very code that
//!   runs in production (loom atomics cannot be laid over a mapped page, so
//!   the model swaps the memory, not the atomic types).
//! * [`Window`]: a bounds-checked sub-range of any other region.
//! * [`AccessLog`]: a wrapper that records every access, for tests that prove
//!   each slot is read exactly once (SECURITY.md R6).

#![cfg_attr(not(feature = "std"), no_std)]

#[cfg(feature = "alloc")]
extern crate alloc;

mod error;
mod ext;
#[cfg(feature = "alloc")]
mod heap;
#[cfg(feature = "std")]
mod instrument;
#[cfg(feature = "loom")]
mod loom_mem;
#[cfg(feature = "std")]
mod memfd;
#[cfg(feature = "alloc")]
mod raw;
mod window;

/// Views a slice of `Pod` values as bytes.
pub use bytemuck::cast_slice as bytes_of_slice;
pub use bytemuck::{Pod, Zeroable, bytes_of, bytes_of_mut};
pub use core::sync::atomic::Ordering;
pub use error::MemError;
pub use ext::SharedMemExt;
#[cfg(feature = "alloc")]
pub use heap::HeapMem;
#[cfg(feature = "std")]
pub use instrument::{Access, AccessKind, AccessLog};
#[cfg(feature = "loom")]
pub use loom_mem::LoomMem;
#[cfg(feature = "std")]
pub use memfd::{MemfdError, MemfdMem, recv_with_fds};
pub use window::Window;

/// Alignment check of the default `read_pod`/`write_pod` (regions start
/// page-aligned, so an offset aligned for `T` is an address aligned for `T`).
#[inline]
pub(crate) fn check_align<T>(offset: usize) -> Result<(), MemError> {
    if offset.is_multiple_of(align_of::<T>()) {
        Ok(())
    } else {
        Err(MemError::Misaligned {
            offset,
            align: align_of::<T>(),
        })
    }
}

/// Offset of record `i` of `stride` bytes from `offset`, without overflow.
#[inline]
pub(crate) fn record(offset: usize, stride: usize, i: usize) -> Result<usize, MemError> {
    i.checked_mul(stride)
        .and_then(|x| x.checked_add(offset))
        .ok_or(MemError::OutOfBounds {
            offset,
            len: usize::MAX,
            size: usize::MAX,
        })
}

/// The whole-batch check of the default record methods: every record in
/// bounds (so a batch that does not fit touches nothing).
#[inline]
pub(crate) fn check_records<T>(
    size: usize,
    offset: usize,
    stride: usize,
    n: usize,
) -> Result<(), MemError> {
    if let Some(last) = n.checked_sub(1) {
        let end = record(offset, stride, last)?;
        error::check_range(end, size_of::<T>(), size)?;
    }
    Ok(())
}

/// An opaque view of a plain-memory region (see [`SharedMem::raw_view`]):
/// nothing can be done with it but hand it to [`copy`].
#[derive(Debug, Clone, Copy)]
pub struct RawView<'a> {
    #[cfg(feature = "alloc")]
    region: &'a raw::RawRegion,
    start: usize,
    len: usize,
    #[cfg(not(feature = "alloc"))]
    _never: core::convert::Infallible,
    #[cfg(not(feature = "alloc"))]
    _life: core::marker::PhantomData<&'a ()>,
}

impl<'a> RawView<'a> {
    #[cfg(feature = "alloc")]
    pub(crate) fn new(region: &'a raw::RawRegion) -> Self {
        RawView {
            region,
            start: 0,
            len: region.len(),
        }
    }

    /// The address of `[offset, offset + len)` of the view, for handing to
    /// the kernel (an io_uring read or write straight into shared pages).
    /// `None` if the range is out of bounds. The address is valid while the
    /// region is: whoever hands it to the kernel must keep the region alive
    /// until the kernel is done with it, and must never form a Rust
    /// reference from it.
    pub fn addr(&self, offset: usize, len: usize) -> Option<*mut u8> {
        error::check_range(offset, len, self.len).ok()?;
        #[cfg(feature = "alloc")]
        {
            self.region.range(self.start + offset, len).ok()
        }
        #[cfg(not(feature = "alloc"))]
        {
            None
        }
    }

    /// The sub-range `[offset, offset + len)` of this view.
    pub(crate) fn narrow(self, offset: usize, len: usize) -> Option<Self> {
        error::check_range(offset, len, self.len).ok()?;
        Some(RawView {
            start: self.start + offset,
            len,
            ..self
        })
    }
}

/// Copies `len` bytes from `src` at `src_offset` to `dst` at `dst_offset`,
/// each byte read and written once: the grant-copy primitive. Between two
/// plain-memory regions it is one bulk copy (memcpy speed); otherwise the
/// bytes go through a small bounce buffer and the regions' byte methods.
/// Overlapping ranges of one region are copied through the bounce buffer.
pub fn copy<S: SharedMem + ?Sized, D: SharedMem + ?Sized>(
    src: &S,
    src_offset: usize,
    dst: &D,
    dst_offset: usize,
    len: usize,
) -> Result<(), MemError> {
    error::check_range(src_offset, len, src.size())?;
    error::check_range(dst_offset, len, dst.size())?;
    #[cfg(feature = "alloc")]
    if len >= raw::BULK_MIN
        && let (Some(s), Some(d)) = (src.raw_view(), dst.raw_view())
    {
        let s_ptr = s.region.range(s.start + src_offset, len)?;
        let d_ptr = d.region.range(d.start + dst_offset, len)?;
        let (a, b) = (s_ptr as usize, d_ptr as usize);
        if a + len <= b || b + len <= a {
            // SAFETY: both ranges were bounds-checked inside live regions
            // (which stay mapped while the borrows of src and dst live), they
            // do not overlap, and region memory is only accessed atomically
            // or by bulk_copy.
            unsafe { raw::bulk_copy(s_ptr, d_ptr, len, true) };
            return Ok(());
        }
    }
    // Chunks through a bounce buffer; backwards when the destination lies
    // after the source, so overlapping ranges of one region move like memmove.
    let mut buf = [0u8; 512];
    let chunks = len.div_ceil(buf.len());
    for k in 0..chunks {
        let k = if dst_offset > src_offset {
            chunks - 1 - k
        } else {
            k
        };
        let at = k * buf.len();
        let n = (len - at).min(buf.len());
        src.read_bytes(src_offset + at, &mut buf[..n])?;
        dst.write_bytes(dst_offset + at, &buf[..n])?;
    }
    Ok(())
}

/// The protocol page size: every Xen ring and grant works in 4096-byte pages.
pub const PAGE_SIZE: usize = 4096;

/// A region of memory that a peer may write concurrently.
///
/// Offsets are byte offsets from the start of the region. Every method checks
/// bounds (and natural alignment for the atomic word operations) and returns
/// [`MemError`] instead of panicking.
///
/// The trait is safe to implement: a wrapper (a window, an access log, a
/// fault injector) forwards to another implementation; only the backends in
/// this crate touch raw memory.
pub trait SharedMem {
    /// Size of the region in bytes.
    fn size(&self) -> usize;

    /// Copies `dst.len()` bytes starting at `offset` out of the region, each
    /// byte read exactly once (see the crate docs for the granularity).
    fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<(), MemError>;

    /// Copies `src` into the region at `offset`, each byte written once.
    fn write_bytes(&self, offset: usize, src: &[u8]) -> Result<(), MemError>;

    /// Sets `len` bytes at `offset` to `byte`.
    fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), MemError>;

    /// Hints that `[offset, offset + len)` will be accessed soon, so the
    /// cache lines a peer wrote travel in parallel instead of one demand miss
    /// at a time. With `write`, the lines are fetched for ownership (x86
    /// `prefetchw` where the CPU has it): a ring slot that this side reads and
    /// then overwrites moves between the cores once, not twice. No effect on
    /// contents or ordering; out-of-range parts are ignored. The default does
    /// nothing.
    #[inline]
    fn prefetch(&self, offset: usize, len: usize, write: bool) {
        let _ = (offset, len, write);
    }

    /// Where the region lies in this process's memory, for [`copy`] between
    /// two regions without a bounce buffer. `None` (the default) for regions
    /// that are not plain memory, such as models and recorders, which
    /// [`copy`] then reaches through their byte methods.
    #[inline]
    fn raw_view(&self) -> Option<RawView<'_>> {
        None
    }

    /// Copies a `T` out of the region at `offset`, each byte read once.
    /// `offset` must be aligned for `T` (else [`MemError::Misaligned`]), so
    /// backends over real memory load `T` word by word straight into
    /// registers; [`SharedMemExt::read_obj`] accepts any offset.
    #[inline]
    fn read_pod<T: Pod>(&self, offset: usize) -> Result<T, MemError>
    where
        Self: Sized,
    {
        check_align::<T>(offset)?;
        let mut val = T::zeroed();
        self.read_bytes(offset, bytemuck::bytes_of_mut(&mut val))?;
        Ok(val)
    }

    /// Copies `val` into the region at `offset`, which must be aligned for
    /// `T` (see [`SharedMem::read_pod`]).
    #[inline]
    fn write_pod<T: Pod>(&self, offset: usize, val: &T) -> Result<(), MemError>
    where
        Self: Sized,
    {
        check_align::<T>(offset)?;
        self.write_bytes(offset, bytemuck::bytes_of(val))
    }

    /// Visits `n` records of `stride` bytes from `offset`: copies a `T` out
    /// of the start of each (each byte read once) and hands it to `f`, in
    /// order. The whole range is bounds- and alignment-checked once, so a
    /// batch of ring slots costs one check, not one per slot.
    #[inline]
    fn read_records<T: Pod>(
        &self,
        offset: usize,
        stride: usize,
        n: usize,
        mut f: impl FnMut(T),
    ) -> Result<(), MemError>
    where
        Self: Sized,
    {
        check_records::<T>(self.size(), offset, stride, n)?;
        for i in 0..n {
            f(self.read_pod(record(offset, stride, i)?)?);
        }
        Ok(())
    }

    /// Writes `f(i)` at the start of record `i` of `n` records of `stride`
    /// bytes from `offset` (see [`SharedMem::read_records`]).
    #[inline]
    fn write_records<T: Pod>(
        &self,
        offset: usize,
        stride: usize,
        n: usize,
        mut f: impl FnMut(usize) -> T,
    ) -> Result<(), MemError>
    where
        Self: Sized,
    {
        check_records::<T>(self.size(), offset, stride, n)?;
        for i in 0..n {
            self.write_pod(record(offset, stride, i)?, &f(i))?;
        }
        Ok(())
    }

    /// For each of `n` records of `stride` bytes from `offset`: copies an `R`
    /// out of its start, and writes `f`'s `W` back over it (a ring backend
    /// answering requests in their own slots).
    #[inline]
    fn update_records<R: Pod, W: Pod>(
        &self,
        offset: usize,
        stride: usize,
        n: usize,
        mut f: impl FnMut(R) -> W,
    ) -> Result<(), MemError>
    where
        Self: Sized,
    {
        check_records::<R>(self.size(), offset, stride, n)?;
        check_records::<W>(self.size(), offset, stride, n)?;
        for i in 0..n {
            let off = record(offset, stride, i)?;
            let w = f(self.read_pod(off)?);
            self.write_pod(off, &w)?;
        }
        Ok(())
    }

    /// Atomic load of the aligned `u16` at `offset`.
    fn load_u16(&self, offset: usize, order: Ordering) -> Result<u16, MemError>;
    /// Atomic load of the aligned `u32` at `offset`.
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, MemError>;
    /// Atomic load of the aligned `u64` at `offset`.
    fn load_u64(&self, offset: usize, order: Ordering) -> Result<u64, MemError>;

    /// Atomic store to the aligned `u16` at `offset`.
    fn store_u16(&self, offset: usize, val: u16, order: Ordering) -> Result<(), MemError>;
    /// Atomic store to the aligned `u32` at `offset`.
    fn store_u32(&self, offset: usize, val: u32, order: Ordering) -> Result<(), MemError>;
    /// Atomic store to the aligned `u64` at `offset`.
    fn store_u64(&self, offset: usize, val: u64, order: Ordering) -> Result<(), MemError>;

    /// Atomic compare-exchange of the aligned `u16` at `offset`.
    ///
    /// The outer `Result` reports a bad offset; the inner one is
    /// `Ok(previous)` on success and `Err(actual)` when the value differed.
    fn compare_exchange_u16(
        &self,
        offset: usize,
        current: u16,
        new: u16,
        success: Ordering,
        failure: Ordering,
    ) -> Result<Result<u16, u16>, MemError>;
    /// Atomic compare-exchange of the aligned `u32` at `offset` (see
    /// [`SharedMem::compare_exchange_u16`]).
    fn compare_exchange_u32(
        &self,
        offset: usize,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<Result<u32, u32>, MemError>;
    /// Atomic compare-exchange of the aligned `u64` at `offset` (see
    /// [`SharedMem::compare_exchange_u16`]).
    fn compare_exchange_u64(
        &self,
        offset: usize,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<Result<u64, u64>, MemError>;

    /// Atomic bitwise OR into the aligned `u16` at `offset`; returns the old value.
    fn fetch_or_u16(&self, offset: usize, val: u16, order: Ordering) -> Result<u16, MemError>;
    /// Atomic bitwise AND into the aligned `u16` at `offset`; returns the old value.
    fn fetch_and_u16(&self, offset: usize, val: u16, order: Ordering) -> Result<u16, MemError>;
    /// Atomic bitwise OR into the aligned `u32` at `offset`; returns the old value.
    fn fetch_or_u32(&self, offset: usize, val: u32, order: Ordering) -> Result<u32, MemError>;
    /// Atomic bitwise AND into the aligned `u32` at `offset`; returns the old value.
    fn fetch_and_u32(&self, offset: usize, val: u32, order: Ordering) -> Result<u32, MemError>;
    /// Atomic bitwise OR into the aligned `u64` at `offset`; returns the old value.
    fn fetch_or_u64(&self, offset: usize, val: u64, order: Ordering) -> Result<u64, MemError>;
    /// Atomic bitwise AND into the aligned `u64` at `offset`; returns the old value.
    fn fetch_and_u64(&self, offset: usize, val: u64, order: Ordering) -> Result<u64, MemError>;

    /// A memory fence of the given ordering, in the memory model this region
    /// lives in (a real fence for real memory, a loom fence for `LoomMem`).
    fn fence(&self, order: Ordering);
}

/// Forwards every [`SharedMem`] method to `$target`.
macro_rules! forward_shared_mem {
    ($target:ident) => {
        #[inline]
        fn size(&self) -> usize {
            $target::size(self)
        }
        #[inline]
        fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<(), MemError> {
            $target::read_bytes(self, offset, dst)
        }
        #[inline]
        fn write_bytes(&self, offset: usize, src: &[u8]) -> Result<(), MemError> {
            $target::write_bytes(self, offset, src)
        }
        #[inline]
        fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), MemError> {
            $target::fill(self, offset, len, byte)
        }
        #[inline]
        fn prefetch(&self, offset: usize, len: usize, write: bool) {
            $target::prefetch(self, offset, len, write)
        }
        #[inline]
        fn raw_view(&self) -> Option<RawView<'_>> {
            $target::raw_view(self)
        }
        #[inline(always)]
        fn read_pod<T: Pod>(&self, offset: usize) -> Result<T, MemError> {
            $target::read_pod(self, offset)
        }
        #[inline(always)]
        fn write_pod<T: Pod>(&self, offset: usize, val: &T) -> Result<(), MemError> {
            $target::write_pod(self, offset, val)
        }
        #[inline(always)]
        fn read_records<T: Pod>(
            &self,
            offset: usize,
            stride: usize,
            n: usize,
            f: impl FnMut(T),
        ) -> Result<(), MemError> {
            $target::read_records(self, offset, stride, n, f)
        }
        #[inline(always)]
        fn write_records<T: Pod>(
            &self,
            offset: usize,
            stride: usize,
            n: usize,
            f: impl FnMut(usize) -> T,
        ) -> Result<(), MemError> {
            $target::write_records(self, offset, stride, n, f)
        }
        #[inline(always)]
        fn update_records<R: Pod, W: Pod>(
            &self,
            offset: usize,
            stride: usize,
            n: usize,
            f: impl FnMut(R) -> W,
        ) -> Result<(), MemError> {
            $target::update_records(self, offset, stride, n, f)
        }
        #[inline]
        fn load_u16(&self, offset: usize, order: Ordering) -> Result<u16, MemError> {
            $target::load_u16(self, offset, order)
        }
        #[inline]
        fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, MemError> {
            $target::load_u32(self, offset, order)
        }
        #[inline]
        fn load_u64(&self, offset: usize, order: Ordering) -> Result<u64, MemError> {
            $target::load_u64(self, offset, order)
        }
        #[inline]
        fn store_u16(&self, offset: usize, val: u16, order: Ordering) -> Result<(), MemError> {
            $target::store_u16(self, offset, val, order)
        }
        #[inline]
        fn store_u32(&self, offset: usize, val: u32, order: Ordering) -> Result<(), MemError> {
            $target::store_u32(self, offset, val, order)
        }
        #[inline]
        fn store_u64(&self, offset: usize, val: u64, order: Ordering) -> Result<(), MemError> {
            $target::store_u64(self, offset, val, order)
        }
        #[inline]
        fn compare_exchange_u16(
            &self,
            offset: usize,
            current: u16,
            new: u16,
            success: Ordering,
            failure: Ordering,
        ) -> Result<Result<u16, u16>, MemError> {
            $target::compare_exchange_u16(self, offset, current, new, success, failure)
        }
        #[inline]
        fn compare_exchange_u32(
            &self,
            offset: usize,
            current: u32,
            new: u32,
            success: Ordering,
            failure: Ordering,
        ) -> Result<Result<u32, u32>, MemError> {
            $target::compare_exchange_u32(self, offset, current, new, success, failure)
        }
        #[inline]
        fn compare_exchange_u64(
            &self,
            offset: usize,
            current: u64,
            new: u64,
            success: Ordering,
            failure: Ordering,
        ) -> Result<Result<u64, u64>, MemError> {
            $target::compare_exchange_u64(self, offset, current, new, success, failure)
        }
        #[inline]
        fn fetch_or_u16(&self, offset: usize, val: u16, order: Ordering) -> Result<u16, MemError> {
            $target::fetch_or_u16(self, offset, val, order)
        }
        #[inline]
        fn fetch_and_u16(&self, offset: usize, val: u16, order: Ordering) -> Result<u16, MemError> {
            $target::fetch_and_u16(self, offset, val, order)
        }
        #[inline]
        fn fetch_or_u32(&self, offset: usize, val: u32, order: Ordering) -> Result<u32, MemError> {
            $target::fetch_or_u32(self, offset, val, order)
        }
        #[inline]
        fn fetch_and_u32(&self, offset: usize, val: u32, order: Ordering) -> Result<u32, MemError> {
            $target::fetch_and_u32(self, offset, val, order)
        }
        #[inline]
        fn fetch_or_u64(&self, offset: usize, val: u64, order: Ordering) -> Result<u64, MemError> {
            $target::fetch_or_u64(self, offset, val, order)
        }
        #[inline]
        fn fetch_and_u64(&self, offset: usize, val: u64, order: Ordering) -> Result<u64, MemError> {
            $target::fetch_and_u64(self, offset, val, order)
        }
        #[inline]
        fn fence(&self, order: Ordering) {
            $target::fence(self, order)
        }
    };
}

/// Implements [`SharedMem`] for a wrapper type by delegating every method
/// to one of its fields (which must itself be a `SharedMem`):
/// `delegate_shared_mem!(MyMapping => window);`. For non-generic types.
#[macro_export]
macro_rules! delegate_shared_mem {
    ($ty:ty => $field:ident) => {
        impl $crate::SharedMem for $ty {
            #[inline]
            fn size(&self) -> usize {
                $crate::SharedMem::size(&self.$field)
            }
            #[inline]
            fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<(), $crate::MemError> {
                $crate::SharedMem::read_bytes(&self.$field, offset, dst)
            }
            #[inline]
            fn write_bytes(&self, offset: usize, src: &[u8]) -> Result<(), $crate::MemError> {
                $crate::SharedMem::write_bytes(&self.$field, offset, src)
            }
            #[inline]
            fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), $crate::MemError> {
                $crate::SharedMem::fill(&self.$field, offset, len, byte)
            }
            #[inline]
            fn prefetch(&self, offset: usize, len: usize, write: bool) {
                $crate::SharedMem::prefetch(&self.$field, offset, len, write)
            }
            #[inline]
            fn raw_view(&self) -> Option<$crate::RawView<'_>> {
                $crate::SharedMem::raw_view(&self.$field)
            }
            #[inline(always)]
            fn read_pod<T: $crate::Pod>(&self, offset: usize) -> Result<T, $crate::MemError> {
                $crate::SharedMem::read_pod(&self.$field, offset)
            }
            #[inline(always)]
            fn write_pod<T: $crate::Pod>(
                &self,
                offset: usize,
                val: &T,
            ) -> Result<(), $crate::MemError> {
                $crate::SharedMem::write_pod(&self.$field, offset, val)
            }
            #[inline(always)]
            fn read_records<T: $crate::Pod>(
                &self,
                offset: usize,
                stride: usize,
                n: usize,
                f: impl FnMut(T),
            ) -> Result<(), $crate::MemError> {
                $crate::SharedMem::read_records(&self.$field, offset, stride, n, f)
            }
            #[inline(always)]
            fn write_records<T: $crate::Pod>(
                &self,
                offset: usize,
                stride: usize,
                n: usize,
                f: impl FnMut(usize) -> T,
            ) -> Result<(), $crate::MemError> {
                $crate::SharedMem::write_records(&self.$field, offset, stride, n, f)
            }
            #[inline(always)]
            fn update_records<R: $crate::Pod, W: $crate::Pod>(
                &self,
                offset: usize,
                stride: usize,
                n: usize,
                f: impl FnMut(R) -> W,
            ) -> Result<(), $crate::MemError> {
                $crate::SharedMem::update_records(&self.$field, offset, stride, n, f)
            }
            #[inline]
            fn load_u16(
                &self,
                offset: usize,
                order: $crate::Ordering,
            ) -> Result<u16, $crate::MemError> {
                $crate::SharedMem::load_u16(&self.$field, offset, order)
            }
            #[inline]
            fn load_u32(
                &self,
                offset: usize,
                order: $crate::Ordering,
            ) -> Result<u32, $crate::MemError> {
                $crate::SharedMem::load_u32(&self.$field, offset, order)
            }
            #[inline]
            fn load_u64(
                &self,
                offset: usize,
                order: $crate::Ordering,
            ) -> Result<u64, $crate::MemError> {
                $crate::SharedMem::load_u64(&self.$field, offset, order)
            }
            #[inline]
            fn store_u16(
                &self,
                offset: usize,
                val: u16,
                order: $crate::Ordering,
            ) -> Result<(), $crate::MemError> {
                $crate::SharedMem::store_u16(&self.$field, offset, val, order)
            }
            #[inline]
            fn store_u32(
                &self,
                offset: usize,
                val: u32,
                order: $crate::Ordering,
            ) -> Result<(), $crate::MemError> {
                $crate::SharedMem::store_u32(&self.$field, offset, val, order)
            }
            #[inline]
            fn store_u64(
                &self,
                offset: usize,
                val: u64,
                order: $crate::Ordering,
            ) -> Result<(), $crate::MemError> {
                $crate::SharedMem::store_u64(&self.$field, offset, val, order)
            }
            #[inline]
            fn compare_exchange_u16(
                &self,
                offset: usize,
                current: u16,
                new: u16,
                success: $crate::Ordering,
                failure: $crate::Ordering,
            ) -> Result<Result<u16, u16>, $crate::MemError> {
                $crate::SharedMem::compare_exchange_u16(
                    &self.$field,
                    offset,
                    current,
                    new,
                    success,
                    failure,
                )
            }
            #[inline]
            fn compare_exchange_u32(
                &self,
                offset: usize,
                current: u32,
                new: u32,
                success: $crate::Ordering,
                failure: $crate::Ordering,
            ) -> Result<Result<u32, u32>, $crate::MemError> {
                $crate::SharedMem::compare_exchange_u32(
                    &self.$field,
                    offset,
                    current,
                    new,
                    success,
                    failure,
                )
            }
            #[inline]
            fn compare_exchange_u64(
                &self,
                offset: usize,
                current: u64,
                new: u64,
                success: $crate::Ordering,
                failure: $crate::Ordering,
            ) -> Result<Result<u64, u64>, $crate::MemError> {
                $crate::SharedMem::compare_exchange_u64(
                    &self.$field,
                    offset,
                    current,
                    new,
                    success,
                    failure,
                )
            }
            #[inline]
            fn fetch_or_u16(
                &self,
                offset: usize,
                val: u16,
                order: $crate::Ordering,
            ) -> Result<u16, $crate::MemError> {
                $crate::SharedMem::fetch_or_u16(&self.$field, offset, val, order)
            }
            #[inline]
            fn fetch_and_u16(
                &self,
                offset: usize,
                val: u16,
                order: $crate::Ordering,
            ) -> Result<u16, $crate::MemError> {
                $crate::SharedMem::fetch_and_u16(&self.$field, offset, val, order)
            }
            #[inline]
            fn fetch_or_u32(
                &self,
                offset: usize,
                val: u32,
                order: $crate::Ordering,
            ) -> Result<u32, $crate::MemError> {
                $crate::SharedMem::fetch_or_u32(&self.$field, offset, val, order)
            }
            #[inline]
            fn fetch_and_u32(
                &self,
                offset: usize,
                val: u32,
                order: $crate::Ordering,
            ) -> Result<u32, $crate::MemError> {
                $crate::SharedMem::fetch_and_u32(&self.$field, offset, val, order)
            }
            #[inline]
            fn fetch_or_u64(
                &self,
                offset: usize,
                val: u64,
                order: $crate::Ordering,
            ) -> Result<u64, $crate::MemError> {
                $crate::SharedMem::fetch_or_u64(&self.$field, offset, val, order)
            }
            #[inline]
            fn fetch_and_u64(
                &self,
                offset: usize,
                val: u64,
                order: $crate::Ordering,
            ) -> Result<u64, $crate::MemError> {
                $crate::SharedMem::fetch_and_u64(&self.$field, offset, val, order)
            }
            #[inline]
            fn fence(&self, order: $crate::Ordering) {
                $crate::SharedMem::fence(&self.$field, order)
            }
        }
    };
}

impl<M: SharedMem> SharedMem for &M {
    forward_shared_mem!(M);
}

#[cfg(feature = "alloc")]
impl<M: SharedMem> SharedMem for alloc::sync::Arc<M> {
    forward_shared_mem!(M);
}

#[cfg(feature = "alloc")]
impl<M: SharedMem> SharedMem for alloc::boxed::Box<M> {
    forward_shared_mem!(M);
}

#[cfg(feature = "alloc")]
/// Implements [`SharedMem`] for a type with a `raw(&self) -> &raw::RawRegion`
/// method, i.e. for every backend over real memory.
macro_rules! impl_shared_mem_via_raw {
    ($ty:ty) => {
        impl $crate::SharedMem for $ty {
            #[inline]
            fn size(&self) -> usize {
                self.raw().len()
            }
            #[inline]
            fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<(), $crate::MemError> {
                self.raw().read_bytes(offset, dst)
            }
            #[inline]
            fn write_bytes(&self, offset: usize, src: &[u8]) -> Result<(), $crate::MemError> {
                self.raw().write_bytes(offset, src)
            }
            #[inline]
            fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), $crate::MemError> {
                self.raw().fill(offset, len, byte)
            }
            #[inline]
            fn prefetch(&self, offset: usize, len: usize, write: bool) {
                self.raw().prefetch(offset, len, write)
            }
            #[inline]
            fn raw_view(&self) -> Option<$crate::RawView<'_>> {
                Some($crate::RawView::new(self.raw()))
            }
            #[inline(always)]
            fn read_pod<T: $crate::Pod>(&self, offset: usize) -> Result<T, $crate::MemError> {
                self.raw().read_pod(offset)
            }
            #[inline(always)]
            fn write_pod<T: $crate::Pod>(
                &self,
                offset: usize,
                val: &T,
            ) -> Result<(), $crate::MemError> {
                self.raw().write_pod(offset, val)
            }
            #[inline(always)]
            fn read_records<T: $crate::Pod>(
                &self,
                offset: usize,
                stride: usize,
                n: usize,
                f: impl FnMut(T),
            ) -> Result<(), $crate::MemError> {
                self.raw().read_records(offset, stride, n, f)
            }
            #[inline(always)]
            fn write_records<T: $crate::Pod>(
                &self,
                offset: usize,
                stride: usize,
                n: usize,
                f: impl FnMut(usize) -> T,
            ) -> Result<(), $crate::MemError> {
                self.raw().write_records(offset, stride, n, f)
            }
            #[inline(always)]
            fn update_records<R: $crate::Pod, W: $crate::Pod>(
                &self,
                offset: usize,
                stride: usize,
                n: usize,
                f: impl FnMut(R) -> W,
            ) -> Result<(), $crate::MemError> {
                self.raw().update_records(offset, stride, n, f)
            }
            #[inline]
            fn load_u16(
                &self,
                offset: usize,
                order: $crate::Ordering,
            ) -> Result<u16, $crate::MemError> {
                Ok(self.raw().atomic_u16(offset)?.load(order))
            }
            #[inline]
            fn load_u32(
                &self,
                offset: usize,
                order: $crate::Ordering,
            ) -> Result<u32, $crate::MemError> {
                Ok(self.raw().atomic_u32(offset)?.load(order))
            }
            #[inline]
            fn load_u64(
                &self,
                offset: usize,
                order: $crate::Ordering,
            ) -> Result<u64, $crate::MemError> {
                Ok(self.raw().atomic_u64(offset)?.load(order))
            }
            #[inline]
            fn store_u16(
                &self,
                offset: usize,
                val: u16,
                order: $crate::Ordering,
            ) -> Result<(), $crate::MemError> {
                self.raw().atomic_u16(offset)?.store(val, order);
                Ok(())
            }
            #[inline]
            fn store_u32(
                &self,
                offset: usize,
                val: u32,
                order: $crate::Ordering,
            ) -> Result<(), $crate::MemError> {
                self.raw().atomic_u32(offset)?.store(val, order);
                Ok(())
            }
            #[inline]
            fn store_u64(
                &self,
                offset: usize,
                val: u64,
                order: $crate::Ordering,
            ) -> Result<(), $crate::MemError> {
                self.raw().atomic_u64(offset)?.store(val, order);
                Ok(())
            }
            #[inline]
            fn compare_exchange_u16(
                &self,
                offset: usize,
                current: u16,
                new: u16,
                success: $crate::Ordering,
                failure: $crate::Ordering,
            ) -> Result<Result<u16, u16>, $crate::MemError> {
                Ok(self
                    .raw()
                    .atomic_u16(offset)?
                    .compare_exchange(current, new, success, failure))
            }
            #[inline]
            fn compare_exchange_u32(
                &self,
                offset: usize,
                current: u32,
                new: u32,
                success: $crate::Ordering,
                failure: $crate::Ordering,
            ) -> Result<Result<u32, u32>, $crate::MemError> {
                Ok(self
                    .raw()
                    .atomic_u32(offset)?
                    .compare_exchange(current, new, success, failure))
            }
            #[inline]
            fn compare_exchange_u64(
                &self,
                offset: usize,
                current: u64,
                new: u64,
                success: $crate::Ordering,
                failure: $crate::Ordering,
            ) -> Result<Result<u64, u64>, $crate::MemError> {
                Ok(self
                    .raw()
                    .atomic_u64(offset)?
                    .compare_exchange(current, new, success, failure))
            }
            #[inline]
            fn fetch_or_u16(
                &self,
                offset: usize,
                val: u16,
                order: $crate::Ordering,
            ) -> Result<u16, $crate::MemError> {
                Ok(self.raw().atomic_u16(offset)?.fetch_or(val, order))
            }
            #[inline]
            fn fetch_and_u16(
                &self,
                offset: usize,
                val: u16,
                order: $crate::Ordering,
            ) -> Result<u16, $crate::MemError> {
                Ok(self.raw().atomic_u16(offset)?.fetch_and(val, order))
            }
            #[inline]
            fn fetch_or_u32(
                &self,
                offset: usize,
                val: u32,
                order: $crate::Ordering,
            ) -> Result<u32, $crate::MemError> {
                Ok(self.raw().atomic_u32(offset)?.fetch_or(val, order))
            }
            #[inline]
            fn fetch_and_u32(
                &self,
                offset: usize,
                val: u32,
                order: $crate::Ordering,
            ) -> Result<u32, $crate::MemError> {
                Ok(self.raw().atomic_u32(offset)?.fetch_and(val, order))
            }
            #[inline]
            fn fetch_or_u64(
                &self,
                offset: usize,
                val: u64,
                order: $crate::Ordering,
            ) -> Result<u64, $crate::MemError> {
                Ok(self.raw().atomic_u64(offset)?.fetch_or(val, order))
            }
            #[inline]
            fn fetch_and_u64(
                &self,
                offset: usize,
                val: u64,
                order: $crate::Ordering,
            ) -> Result<u64, $crate::MemError> {
                Ok(self.raw().atomic_u64(offset)?.fetch_and(val, order))
            }
            #[inline]
            fn fence(&self, order: $crate::Ordering) {
                core::sync::atomic::fence(order)
            }
        }
    };
}
#[cfg(feature = "alloc")]
pub(crate) use impl_shared_mem_via_raw;
