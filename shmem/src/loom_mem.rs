//! A region whose every 32-bit word is a loom atomic, for model checking.
//!
//! Semantics match real memory for every access the ring and grant
//! protocols make: aligned `u32` accesses are single loom atomics; `u16`
//! accesses operate on their containing word (loads extract, stores and
//! read-modify-writes are compare-exchange loops that change only their
//! half); byte copies are made word by word like [`crate::HeapMem`]'s.
//! Two things differ and are stated here rather than hidden:
//! * a `u64` load or store is two `u32` accesses (low word first), so it is
//!   not single-copy atomic in the model; `u64` read-modify-writes return
//!   [`MemError::Unsupported`];
//! * a partial-word byte write is a compare-exchange loop on the word, which
//!   loom explores as a read-modify-write.
//!
//! Create it inside `loom::model`, like any loom object.

use loom::sync::atomic::AtomicU32;

use crate::error::check_range;
use crate::{MemError, Ordering, SharedMem};

/// Memory made of loom atomics.
#[derive(Debug)]
pub struct LoomMem {
    words: Box<[AtomicU32]>,
    len: usize,
}

impl LoomMem {
    /// A zeroed region of `len` bytes (rounded up to whole words internally;
    /// accesses are still checked against `len`).
    pub fn new(len: usize) -> Self {
        let words = (0..len.div_ceil(4)).map(|_| AtomicU32::new(0)).collect();
        LoomMem { words, len }
    }

    fn word(&self, offset: usize, n: usize) -> Result<&AtomicU32, MemError> {
        check_range(offset, n, self.len)?;
        if !offset.is_multiple_of(n) {
            return Err(MemError::Misaligned { offset, align: n });
        }
        self.words.get(offset / 4).ok_or(MemError::OutOfBounds {
            offset,
            len: n,
            size: self.len,
        })
    }

    /// Replaces the bits under `mask` of the word at `idx` with `bits`,
    /// returning the old word.
    fn merge(&self, w: &AtomicU32, mask: u32, bits: u32, order: Ordering) -> u32 {
        let fail = match order {
            Ordering::Release | Ordering::Relaxed => Ordering::Relaxed,
            Ordering::AcqRel => Ordering::Acquire,
            o => o,
        };
        let mut cur = w.load(Ordering::Relaxed);
        loop {
            let new = (cur & !mask) | (bits & mask);
            match w.compare_exchange(cur, new, order, fail) {
                Ok(old) => return old,
                Err(actual) => cur = actual,
            }
        }
    }
}

fn unsupported(what: &'static str) -> MemError {
    MemError::Unsupported { what }
}

impl SharedMem for LoomMem {
    fn size(&self) -> usize {
        self.len
    }

    fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<(), MemError> {
        check_range(offset, dst.len(), self.len)?;
        let mut i = 0;
        while i < dst.len() {
            let off = offset + i;
            let w = self.words[off / 4].load(Ordering::Relaxed).to_ne_bytes();
            let start = off % 4;
            let n = (4 - start).min(dst.len() - i);
            dst[i..i + n].copy_from_slice(&w[start..start + n]);
            i += n;
        }
        Ok(())
    }

    fn write_bytes(&self, offset: usize, src: &[u8]) -> Result<(), MemError> {
        check_range(offset, src.len(), self.len)?;
        let mut i = 0;
        while i < src.len() {
            let off = offset + i;
            let start = off % 4;
            let n = (4 - start).min(src.len() - i);
            let word = &self.words[off / 4];
            if n == 4 {
                let mut b = [0u8; 4];
                b.copy_from_slice(&src[i..i + 4]);
                word.store(u32::from_ne_bytes(b), Ordering::Relaxed);
            } else {
                let mut b = [0u8; 4];
                let mut m = [0u8; 4];
                b[start..start + n].copy_from_slice(&src[i..i + n]);
                m[start..start + n].fill(0xff);
                self.merge(
                    word,
                    u32::from_ne_bytes(m),
                    u32::from_ne_bytes(b),
                    Ordering::Relaxed,
                );
            }
            i += n;
        }
        Ok(())
    }

    fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), MemError> {
        check_range(offset, len, self.len)?;
        for i in 0..len {
            self.write_bytes(offset + i, &[byte])?;
        }
        Ok(())
    }

    fn load_u16(&self, offset: usize, order: Ordering) -> Result<u16, MemError> {
        let w = self.word(offset, 2)?;
        Ok((w.load(order) >> ((offset % 4) * 8)) as u16)
    }
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, MemError> {
        Ok(self.word(offset, 4)?.load(order))
    }
    fn load_u64(&self, offset: usize, order: Ordering) -> Result<u64, MemError> {
        check_range(offset, 8, self.len)?;
        if !offset.is_multiple_of(8) {
            return Err(MemError::Misaligned { offset, align: 8 });
        }
        let lo = self.load_u32(offset, order)?;
        let hi = self.load_u32(offset + 4, order)?;
        Ok(u64::from(lo) | (u64::from(hi) << 32))
    }

    fn store_u16(&self, offset: usize, val: u16, order: Ordering) -> Result<(), MemError> {
        let w = self.word(offset, 2)?;
        let shift = (offset % 4) * 8;
        self.merge(w, 0xffff << shift, u32::from(val) << shift, order);
        Ok(())
    }
    fn store_u32(&self, offset: usize, val: u32, order: Ordering) -> Result<(), MemError> {
        self.word(offset, 4)?.store(val, order);
        Ok(())
    }
    fn store_u64(&self, offset: usize, val: u64, order: Ordering) -> Result<(), MemError> {
        check_range(offset, 8, self.len)?;
        if !offset.is_multiple_of(8) {
            return Err(MemError::Misaligned { offset, align: 8 });
        }
        self.store_u32(offset, val as u32, order)?;
        self.store_u32(offset + 4, (val >> 32) as u32, order)
    }

    fn compare_exchange_u16(
        &self,
        offset: usize,
        current: u16,
        new: u16,
        success: Ordering,
        failure: Ordering,
    ) -> Result<Result<u16, u16>, MemError> {
        let w = self.word(offset, 2)?;
        let shift = (offset % 4) * 8;
        let mut cur = w.load(failure);
        loop {
            let half = (cur >> shift) as u16;
            if half != current {
                return Ok(Err(half));
            }
            let next = (cur & !(0xffff << shift)) | (u32::from(new) << shift);
            match w.compare_exchange(cur, next, success, failure) {
                Ok(_) => return Ok(Ok(current)),
                Err(actual) => cur = actual,
            }
        }
    }
    fn compare_exchange_u32(
        &self,
        offset: usize,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<Result<u32, u32>, MemError> {
        Ok(self
            .word(offset, 4)?
            .compare_exchange(current, new, success, failure))
    }
    fn compare_exchange_u64(
        &self,
        _offset: usize,
        _current: u64,
        _new: u64,
        _success: Ordering,
        _failure: Ordering,
    ) -> Result<Result<u64, u64>, MemError> {
        Err(unsupported("u64 compare-exchange in LoomMem"))
    }

    fn fetch_or_u16(&self, offset: usize, val: u16, order: Ordering) -> Result<u16, MemError> {
        let shift = (offset % 4) * 8;
        let old = self
            .word(offset, 2)?
            .fetch_or(u32::from(val) << shift, order);
        Ok((old >> shift) as u16)
    }
    fn fetch_and_u16(&self, offset: usize, val: u16, order: Ordering) -> Result<u16, MemError> {
        let shift = (offset % 4) * 8;
        let mask = (u32::from(val) << shift) | !(0xffff << shift);
        let old = self.word(offset, 2)?.fetch_and(mask, order);
        Ok((old >> shift) as u16)
    }
    fn fetch_or_u32(&self, offset: usize, val: u32, order: Ordering) -> Result<u32, MemError> {
        Ok(self.word(offset, 4)?.fetch_or(val, order))
    }
    fn fetch_and_u32(&self, offset: usize, val: u32, order: Ordering) -> Result<u32, MemError> {
        Ok(self.word(offset, 4)?.fetch_and(val, order))
    }
    fn fetch_or_u64(&self, _offset: usize, _val: u64, _order: Ordering) -> Result<u64, MemError> {
        Err(unsupported("u64 fetch-or in LoomMem"))
    }
    fn fetch_and_u64(&self, _offset: usize, _val: u64, _order: Ordering) -> Result<u64, MemError> {
        Err(unsupported("u64 fetch-and in LoomMem"))
    }

    fn fence(&self, order: Ordering) {
        loom::sync::atomic::fence(order)
    }
}
