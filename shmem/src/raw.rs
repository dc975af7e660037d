//! The one place that turns a raw pointer into accesses.
//!
//! [`RawRegion`] is a base pointer and a length. Its only constructor is
//! `unsafe` and states the invariant every other function here relies on:
//! `[base, base + len)` is valid for reads and writes, and stays mapped, for
//! as long as the region is alive. Everything else is bounds-checked safe code
//! plus single-instruction atomic accesses.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

use crate::MemError;
use crate::error::check_range;

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
/// `addr` of `len` bytes.
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
            if (self.base.as_ptr() as usize + offset) % N != 0 {
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

impl RawRegion {
    /// Wraps `len` bytes at `base`.
    ///
    /// # Safety
    /// `[base, base + len)` must be valid for reads and writes, and stay
    /// allocated and mapped, for the whole lifetime of the returned value.
    /// No Rust reference (`&`/`&mut` to non-atomic data) may be created into
    /// that memory by anyone while the value lives.
    pub(crate) unsafe fn new(base: NonNull<u8>, len: usize) -> Self {
        RawRegion { base, len }
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
        match granule(base as usize, dst.len()) {
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
        match granule(base as usize, src.len()) {
            8 => copy_in!(AtomicU64, u64),
            4 => copy_in!(AtomicU32, u32),
            2 => copy_in!(AtomicU16, u16),
            _ => copy_in!(AtomicU8, u8),
        }
        Ok(())
    }

    /// Sets `len` bytes at `offset` to `byte`.
    pub(crate) fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), MemError> {
        check_range(offset, len, self.len)?;
        let chunk = [byte; 64];
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
