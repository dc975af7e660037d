//! The one place that turns a raw pointer into accesses.
//!
//! [`RawRegion`] is a base pointer and a length. Its only constructor is
//! `unsafe` and states the invariant every other function here relies on:
//! `[base, base + len)` is valid for reads and writes, and stays mapped, for
//! as long as the region is alive. Everything else is bounds-checked safe code
//! plus single-instruction atomic accesses.

use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

use crate::error::check_range;
use crate::{MemError, PAGE_SIZE, Pod};

/// A base pointer and a length, valid for the lifetime of its owner.
#[derive(Debug)]
pub(crate) struct RawRegion {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a RawRegion is only an address range; all accesses through it are
// atomic, so sharing it between threads cannot cause a data race.
unsafe impl Send for RawRegion {}
// SAFETY: as above: every access is an atomic operation.
unsafe impl Sync for RawRegion {}

/// Widest natural granule (8, 4, 2 or 1 bytes) for a copy starting at
/// offset (or address) `addr` of `len` bytes.
#[inline]
fn granule(addr: usize, len: usize) -> usize {
    1 << (addr | len | 8).trailing_zeros()
}

macro_rules! atomic_accessor {
    ($name:ident, $atomic:ty, $int:ty) => {
        /// The atomic word at `offset`, which must be naturally aligned.
        ///
        /// The returned reference is to an atomic type, which has interior
        /// mutability: the peer writing the same word concurrently is exactly
        /// what atomics are for. It never outlives `&self`.
        #[inline]
        pub(crate) fn $name(&self, offset: usize) -> Result<&$atomic, MemError> {
            const N: usize = core::mem::size_of::<$int>();
            check_range(offset, N, self.len)?;
            // The base is page-aligned (constructor invariant), so the
            // offset's alignment is the address's.
            if !offset.is_multiple_of(N) {
                return Err(MemError::Misaligned { offset, align: N });
            }
            let ptr = self.at(offset);
            // SAFETY: offset + N <= len (checked above), so ptr is in bounds; aligned for the atomic type (checked
            // above), valid while &self lives, and only ever accessed through
            // atomic operations by this crate.
            Ok(unsafe { <$atomic>::from_ptr(ptr.cast::<$int>()) })
        }
    };
}

/// A read prefetch of the cache line holding `p` (no-op off x86_64 and
/// under Miri).
#[inline(always)]
fn prefetch_line(p: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch is only a hint: it never faults and does not
        // access memory in the language's sense; p lies inside the region.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>()) }
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}

/// Whether the CPU has `prefetchw` (CPUID 0x8000_0001 ECX bit 8,
/// `3DNowPrefetch`/`PRFCHW`), asked once; never under Miri (no CPUID).
#[inline]
fn has_prefetchw() -> bool {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        use core::sync::atomic::AtomicU8;
        static HAS: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 no, 2 yes
        match HAS.load(Ordering::Relaxed) {
            0 => {
                // CPUID exists on every x86_64 CPU (a safe intrinsic).
                let ecx = core::arch::x86_64::__cpuid(0x8000_0001).ecx;
                let yes = ecx & (1 << 8) != 0;
                HAS.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
                yes
            }
            v => v == 2,
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    {
        false
    }
}

/// A prefetch-for-ownership of the line holding `p`; call only when
/// [`has_prefetchw`] said yes.
#[inline(always)]
fn prefetchw_line(p: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: PREFETCHW is only a hint: it never faults, does not modify
    // memory or flags, and the caller checked the CPU supports it.
    unsafe {
        core::arch::asm!("prefetchw [{}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    prefetch_line(p);
}

/// Copies of at least this many bytes use [`bulk_copy`].
pub(crate) const BULK_MIN: usize = 256;

/// Copies `len` bytes from `src` to `dst`, each byte read and written once.
///
/// On x86_64 this is one `rep movsb` (fast-string microcode: memcpy speed
/// for whole pages). Being inline assembly, it is opaque to the compiler,
/// which can neither re-read nor assume anything about the bytes, and it is
/// not a Rust-level data race when a peer writes the same memory (the
/// hardware copies whatever is there, like a DMA engine would). Elsewhere,
/// and under Miri, it is a loop of relaxed atomic byte copies.
///
/// `src_shared` says whether `src` is shared memory (read atomically by the
/// fallback) or a private buffer, perhaps behind a shared reference (read
/// plainly: an atomic view of it would need write permission).
///
/// # Safety
/// `src..src+len` must be valid for reads and `dst..dst+len` for writes,
/// the two ranges must not overlap, and any shared memory among them must
/// only ever be accessed atomically or through this function; with
/// `src_shared == false`, nobody writes `src` during the copy.
#[inline]
pub(crate) unsafe fn bulk_copy(src: *const u8, dst: *mut u8, len: usize, src_shared: bool) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: the caller guarantees both ranges are valid and disjoint;
    // `rep movsb` copies exactly len bytes forwards (DF is clear per the ABI)
    // and touches nothing else.
    unsafe {
        core::arch::asm!(
            "rep movsb",
            inout("rcx") len => _,
            inout("rsi") src => _,
            inout("rdi") dst => _,
            options(nostack, preserves_flags)
        );
    }
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    let _ = src_shared;
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    for i in 0..len {
        let b = if src_shared {
            // SAFETY: i < len: inside both valid ranges; shared bytes are
            // only accessed atomically.
            unsafe { AtomicU8::from_ptr(src.wrapping_add(i).cast_mut()) }.load(Ordering::Relaxed)
        } else {
            // SAFETY: i < len: inside the valid source range, private and
            // not written during the copy (caller).
            unsafe { src.wrapping_add(i).read() }
        };
        // SAFETY: as above.
        unsafe { AtomicU8::from_ptr(dst.wrapping_add(i)) }.store(b, Ordering::Relaxed);
    }
}

/// Loads a `T` from `p`, one relaxed atomic load per naturally aligned word.
///
/// # Safety
/// `p..p + size_of::<T>()` must lie inside a live region (valid, only ever
/// accessed atomically) and `p` must be aligned for `T`.
#[inline(always)]
unsafe fn load_pod<T: Pod>(p: *mut u8) -> T {
    let mut val = MaybeUninit::<T>::uninit();
    macro_rules! load_words {
        ($atomic:ty, $int:ty) => {{
            const N: usize = size_of::<$int>();
            let dst = val.as_mut_ptr().cast::<$int>();
            for i in 0..size_of::<T>() / N {
                let w = p.wrapping_add(i * N).cast::<$int>();
                // SAFETY: w..w+N lies inside the T at p (caller), which is in
                // the region; w is aligned (align_of::<T>() >= N); the region
                // is only accessed atomically.
                let word = unsafe { <$atomic>::from_ptr(w) };
                let v = word.load(Ordering::Relaxed);
                // SAFETY: dst points to a local MaybeUninit<T>, aligned for
                // $int and i * N + N <= size_of::<T>().
                unsafe { dst.add(i).write(v) };
            }
        }};
    }
    match align_of::<T>().min(8) {
        8 if size_of::<T>().is_multiple_of(8) => load_words!(AtomicU64, u64),
        4 | 8 if size_of::<T>().is_multiple_of(4) => load_words!(AtomicU32, u32),
        2 | 4 | 8 if size_of::<T>().is_multiple_of(2) => load_words!(AtomicU16, u16),
        _ => load_words!(AtomicU8, u8),
    }
    // SAFETY: every byte of val was written above (the word size divides
    // size_of::<T>()), and T: Pod accepts any bit pattern.
    unsafe { val.assume_init() }
}

/// Stores `val` at `p`, one relaxed atomic store per naturally aligned word.
///
/// # Safety
/// As for [`load_pod`].
#[inline(always)]
unsafe fn store_pod<T: Pod>(p: *mut u8, val: &T) {
    macro_rules! store_words {
        ($atomic:ty, $int:ty) => {{
            const N: usize = size_of::<$int>();
            let src = (val as *const T).cast::<$int>();
            for i in 0..size_of::<T>() / N {
                // SAFETY: src points to a live T, aligned for $int, with
                // i * N + N <= size_of::<T>(); a Pod T has no padding bytes.
                let v = unsafe { src.add(i).read() };
                let w = p.wrapping_add(i * N).cast::<$int>();
                // SAFETY: as in load_pod.
                let word = unsafe { <$atomic>::from_ptr(w) };
                word.store(v, Ordering::Relaxed);
            }
        }};
    }
    match align_of::<T>().min(8) {
        8 if size_of::<T>().is_multiple_of(8) => store_words!(AtomicU64, u64),
        4 | 8 if size_of::<T>().is_multiple_of(4) => store_words!(AtomicU32, u32),
        2 | 4 | 8 if size_of::<T>().is_multiple_of(2) => store_words!(AtomicU16, u16),
        _ => store_words!(AtomicU8, u8),
    }
}

impl RawRegion {
    /// Wraps `len` bytes at `base`.
    ///
    /// Returns `None` unless `base` is aligned to [`PAGE_SIZE`]: every
    /// alignment check here looks at offsets only, which is right because the
    /// base is page-aligned.
    ///
    /// # Safety
    /// `[base, base + len)` must be valid for reads and writes, and stay
    /// allocated and mapped, for the whole lifetime of the returned value.
    /// No Rust reference (`&`/`&mut` to non-atomic data) may be created into
    /// that memory by anyone while the value lives.
    pub(crate) unsafe fn new(base: NonNull<u8>, len: usize) -> Option<Self> {
        if !(base.as_ptr() as usize).is_multiple_of(PAGE_SIZE) {
            return None;
        }
        Some(RawRegion { base, len })
    }

    /// The base pointer, for the owner's deallocation or unmapping.
    #[allow(dead_code)]
    pub(crate) fn base_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    atomic_accessor!(atomic_u16, AtomicU16, u16);
    atomic_accessor!(atomic_u32, AtomicU32, u32);
    atomic_accessor!(atomic_u64, AtomicU64, u64);

    /// Pointer to `offset`, which the caller has bounds-checked.
    #[inline]
    fn at(&self, offset: usize) -> *mut u8 {
        debug_assert!(offset <= self.len);
        self.base.as_ptr().wrapping_add(offset)
    }

    /// Copies out of the region, each byte read once, in the widest naturally
    /// aligned relaxed atomic loads the range allows.
    #[inline]
    pub(crate) fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<(), MemError> {
        check_range(offset, dst.len(), self.len)?;
        let base = self.at(offset);
        if dst.len() >= BULK_MIN {
            // SAFETY: the source range is inside the region (checked above),
            // dst is a distinct local buffer of the same length.
            unsafe { bulk_copy(base, dst.as_mut_ptr(), dst.len(), true) };
            return Ok(());
        }
        macro_rules! copy_out {
            ($atomic:ty, $int:ty) => {{
                const N: usize = core::mem::size_of::<$int>();
                for (i, chunk) in dst.chunks_exact_mut(N).enumerate() {
                    let p = base.wrapping_add(i * N).cast::<$int>();
                    // SAFETY: [offset, offset + dst.len()) is in bounds
                    // (checked above) and p..p+N lies inside it; `granule`
                    // guarantees p is N-aligned; the region is valid while
                    // self lives and is only accessed atomically.
                    let word = unsafe { <$atomic>::from_ptr(p) };
                    chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
                }
            }};
        }
        match granule(offset, dst.len()) {
            8 => copy_out!(AtomicU64, u64),
            4 => copy_out!(AtomicU32, u32),
            2 => copy_out!(AtomicU16, u16),
            _ => copy_out!(AtomicU8, u8),
        }
        Ok(())
    }

    /// Copies into the region, each byte written once, in the widest
    /// naturally aligned relaxed atomic stores the range allows.
    #[inline]
    pub(crate) fn write_bytes(&self, offset: usize, src: &[u8]) -> Result<(), MemError> {
        check_range(offset, src.len(), self.len)?;
        let base = self.at(offset);
        if src.len() >= BULK_MIN {
            // SAFETY: the destination range is inside the region (checked
            // above), src is a distinct local buffer of the same length.
            unsafe { bulk_copy(src.as_ptr(), base, src.len(), false) };
            return Ok(());
        }
        macro_rules! copy_in {
            ($atomic:ty, $int:ty) => {{
                const N: usize = core::mem::size_of::<$int>();
                for (i, chunk) in src.chunks_exact(N).enumerate() {
                    let mut w = [0u8; N];
                    w.copy_from_slice(chunk);
                    let p = base.wrapping_add(i * N).cast::<$int>();
                    // SAFETY: as in read_bytes: in bounds, N-aligned, valid,
                    // atomic-only.
                    let word = unsafe { <$atomic>::from_ptr(p) };
                    word.store(<$int>::from_ne_bytes(w), Ordering::Relaxed);
                }
            }};
        }
        match granule(offset, src.len()) {
            8 => copy_in!(AtomicU64, u64),
            4 => copy_in!(AtomicU32, u32),
            2 => copy_in!(AtomicU16, u16),
            _ => copy_in!(AtomicU8, u8),
        }
        Ok(())
    }

    /// Checks that `n` records of `stride` bytes starting at `offset` hold a
    /// `T` each inside the region, naturally aligned; returns the first
    /// record's address. `n == 0` is always fine.
    #[inline(always)]
    fn check_records<T>(
        &self,
        offset: usize,
        stride: usize,
        n: usize,
    ) -> Result<*mut u8, MemError> {
        let span = match n.checked_sub(1) {
            None => 0,
            Some(k) => k
                .checked_mul(stride)
                .and_then(|x| x.checked_add(size_of::<T>()))
                .ok_or(MemError::OutOfBounds {
                    offset,
                    len: usize::MAX,
                    size: self.len,
                })?,
        };
        check_range(offset, span, self.len)?;
        if !offset.is_multiple_of(align_of::<T>())
            || (n > 1 && !stride.is_multiple_of(align_of::<T>()))
        {
            return Err(MemError::Misaligned {
                offset,
                align: align_of::<T>(),
            });
        }
        Ok(self.at(offset))
    }

    /// Copies a `T` out of the region: one relaxed atomic load per naturally
    /// aligned word of `T` (8, 4, 2 or 1 bytes, chosen at compile time from
    /// `T`'s alignment), straight into the result, which the compiler keeps
    /// in registers. A misaligned offset is an error.
    #[inline(always)]
    pub(crate) fn read_pod<T: Pod>(&self, offset: usize) -> Result<T, MemError> {
        let p = self.check_records::<T>(offset, 0, 1)?;
        // SAFETY: check_records verified p..p+size_of::<T>() is inside the
        // region and p is aligned for T.
        Ok(unsafe { load_pod(p) })
    }

    /// Copies `val` into the region, one relaxed atomic store per naturally
    /// aligned word of `T` (see [`Self::read_pod`]).
    #[inline(always)]
    pub(crate) fn write_pod<T: Pod>(&self, offset: usize, val: &T) -> Result<(), MemError> {
        let p = self.check_records::<T>(offset, 0, 1)?;
        // SAFETY: as in read_pod.
        unsafe { store_pod(p, val) };
        Ok(())
    }

    /// [`crate::SharedMem::read_records`]: one bounds check for the batch.
    #[inline(always)]
    pub(crate) fn read_records<T: Pod>(
        &self,
        offset: usize,
        stride: usize,
        n: usize,
        mut f: impl FnMut(T),
    ) -> Result<(), MemError> {
        let p = self.check_records::<T>(offset, stride, n)?;
        for i in 0..n {
            // SAFETY: check_records verified every record i < n lies inside
            // the region and is aligned for T.
            f(unsafe { load_pod(p.wrapping_add(i * stride)) });
        }
        Ok(())
    }

    /// [`crate::SharedMem::write_records`]: one bounds check for the batch.
    #[inline(always)]
    pub(crate) fn write_records<T: Pod>(
        &self,
        offset: usize,
        stride: usize,
        n: usize,
        mut f: impl FnMut(usize) -> T,
    ) -> Result<(), MemError> {
        let p = self.check_records::<T>(offset, stride, n)?;
        for i in 0..n {
            let val = f(i);
            // SAFETY: as in read_records.
            unsafe { store_pod(p.wrapping_add(i * stride), &val) };
        }
        Ok(())
    }

    /// [`crate::SharedMem::update_records`]: one bounds check for the batch.
    #[inline(always)]
    pub(crate) fn update_records<R: Pod, W: Pod>(
        &self,
        offset: usize,
        stride: usize,
        n: usize,
        mut f: impl FnMut(R) -> W,
    ) -> Result<(), MemError> {
        let p = self.check_records::<R>(offset, stride, n)?;
        self.check_records::<W>(offset, stride, n)?;
        for i in 0..n {
            let rec = p.wrapping_add(i * stride);
            // SAFETY: check_records verified every record holds an aligned R
            // and an aligned W inside the region.
            let w = f(unsafe { load_pod::<R>(rec) });
            // SAFETY: as above.
            unsafe { store_pod(rec, &w) };
        }
        Ok(())
    }

    /// Prefetches the cache lines of `[offset, offset + len)` that lie in
    /// the region (at most 64 lines per call).
    #[inline]
    pub(crate) fn prefetch(&self, offset: usize, len: usize, write: bool) {
        const LINE: usize = 64;
        let end = offset.saturating_add(len).min(self.len);
        let mut off = offset - offset % LINE;
        let mut n = 0;
        let write = write && has_prefetchw();
        while off < end && n < 64 {
            if write {
                prefetchw_line(self.at(off));
            } else {
                prefetch_line(self.at(off));
            }
            off += LINE;
            n += 1;
        }
    }

    /// The address of `[offset, offset + len)`, bounds-checked, for a copy
    /// between regions.
    #[inline]
    pub(crate) fn range(&self, offset: usize, len: usize) -> Result<*mut u8, MemError> {
        check_range(offset, len, self.len)?;
        Ok(self.at(offset))
    }

    /// Sets `len` bytes at `offset` to `byte`.
    pub(crate) fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), MemError> {
        check_range(offset, len, self.len)?;
        let chunk = [byte; BULK_MIN * 2];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk.len());
            self.write_bytes(offset + done, &chunk[..n])?;
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::granule;

    #[test]
    fn granule_picks_widest_aligned_word() {
        assert_eq!(granule(0x1000, 64), 8);
        assert_eq!(granule(0x1004, 64), 4);
        assert_eq!(granule(0x1000, 12), 4);
        assert_eq!(granule(0x1002, 4), 2);
        assert_eq!(granule(0x1001, 8), 1);
        assert_eq!(granule(0x1000, 0), 8);
    }
}
