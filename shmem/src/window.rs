use crate::error::check_range;
use crate::{MemError, Ordering, SharedMem};

/// A sub-range `[offset, offset + len)` of another region, itself a region
/// whose offsets start at zero. Every access is bounds-checked against the
/// window, then against the parent.
#[derive(Debug, Clone)]
pub struct Window<M> {
    mem: M,
    offset: usize,
    len: usize,
}

impl<M: SharedMem> Window<M> {
    /// A window of `len` bytes at `offset` of `mem`.
    pub fn new(mem: M, offset: usize, len: usize) -> Result<Self, MemError> {
        check_range(offset, len, mem.size())?;
        Ok(Window { mem, offset, len })
    }

    /// The parent region.
    pub fn inner(&self) -> &M {
        &self.mem
    }

    /// Where the window starts in its parent.
    pub fn offset(&self) -> usize {
        self.offset
    }

    #[inline]
    fn at(&self, offset: usize, len: usize) -> Result<usize, MemError> {
        check_range(offset, len, self.len)?;
        Ok(self.offset + offset)
    }
}

macro_rules! windowed {
    ($load:ident, $store:ident, $cas:ident, $or:ident, $and:ident, $int:ty) => {
        #[inline]
        fn $load(&self, offset: usize, order: Ordering) -> Result<$int, MemError> {
            self.mem.$load(self.at(offset, size_of::<$int>())?, order)
        }
        #[inline]
        fn $store(&self, offset: usize, val: $int, order: Ordering) -> Result<(), MemError> {
            self.mem
                .$store(self.at(offset, size_of::<$int>())?, val, order)
        }
        #[inline]
        fn $cas(
            &self,
            offset: usize,
            current: $int,
            new: $int,
            success: Ordering,
            failure: Ordering,
        ) -> Result<Result<$int, $int>, MemError> {
            self.mem.$cas(
                self.at(offset, size_of::<$int>())?,
                current,
                new,
                success,
                failure,
            )
        }
        #[inline]
        fn $or(&self, offset: usize, val: $int, order: Ordering) -> Result<$int, MemError> {
            self.mem
                .$or(self.at(offset, size_of::<$int>())?, val, order)
        }
        #[inline]
        fn $and(&self, offset: usize, val: $int, order: Ordering) -> Result<$int, MemError> {
            self.mem
                .$and(self.at(offset, size_of::<$int>())?, val, order)
        }
    };
}

impl<M: SharedMem> SharedMem for Window<M> {
    #[inline]
    fn raw_view(&self) -> Option<crate::RawView<'_>> {
        self.mem.raw_view()?.narrow(self.offset, self.len)
    }
    #[inline]
    fn prefetch(&self, offset: usize, len: usize, write: bool) {
        if let Ok(at) = self.at(offset, len.min(self.len.saturating_sub(offset))) {
            self.mem.prefetch(at, len.min(self.len - offset), write)
        }
    }
    #[inline(always)]
    fn read_pod<T: crate::Pod>(&self, offset: usize) -> Result<T, MemError> {
        let at = self.at(offset, size_of::<T>())?;
        if self.offset.is_multiple_of(align_of::<T>()) {
            return self.mem.read_pod(at);
        }
        // A window at an offset misaligned for T: alignment is judged
        // relative to the window, and the bytes are copied one by one.
        crate::check_align::<T>(offset)?;
        let mut val = T::zeroed();
        self.mem.read_bytes(at, bytemuck::bytes_of_mut(&mut val))?;
        Ok(val)
    }
    #[inline(always)]
    fn write_pod<T: crate::Pod>(&self, offset: usize, val: &T) -> Result<(), MemError> {
        let at = self.at(offset, size_of::<T>())?;
        if self.offset.is_multiple_of(align_of::<T>()) {
            return self.mem.write_pod(at, val);
        }
        crate::check_align::<T>(offset)?;
        self.mem.write_bytes(at, bytemuck::bytes_of(val))
    }
    #[inline(always)]
    fn read_records<T: crate::Pod>(
        &self,
        offset: usize,
        stride: usize,
        n: usize,
        f: impl FnMut(T),
    ) -> Result<(), MemError> {
        crate::check_records::<T>(self.len, offset, stride, n)?;
        if !self.offset.is_multiple_of(align_of::<T>()) {
            let mut f = f;
            for i in 0..n {
                f(self.read_pod(crate::record(offset, stride, i)?)?);
            }
            return Ok(());
        }
        self.mem.read_records(self.offset + offset, stride, n, f)
    }
    #[inline(always)]
    fn write_records<T: crate::Pod>(
        &self,
        offset: usize,
        stride: usize,
        n: usize,
        f: impl FnMut(usize) -> T,
    ) -> Result<(), MemError> {
        crate::check_records::<T>(self.len, offset, stride, n)?;
        if !self.offset.is_multiple_of(align_of::<T>()) {
            let mut f = f;
            for i in 0..n {
                self.write_pod(crate::record(offset, stride, i)?, &f(i))?;
            }
            return Ok(());
        }
        self.mem.write_records(self.offset + offset, stride, n, f)
    }
    #[inline(always)]
    fn update_records<R: crate::Pod, W: crate::Pod>(
        &self,
        offset: usize,
        stride: usize,
        n: usize,
        f: impl FnMut(R) -> W,
    ) -> Result<(), MemError> {
        crate::check_records::<R>(self.len, offset, stride, n)?;
        crate::check_records::<W>(self.len, offset, stride, n)?;
        if !self.offset.is_multiple_of(align_of::<R>())
            || !self.offset.is_multiple_of(align_of::<W>())
        {
            let mut f = f;
            for i in 0..n {
                let off = crate::record(offset, stride, i)?;
                let w = f(self.read_pod(off)?);
                self.write_pod(off, &w)?;
            }
            return Ok(());
        }
        self.mem.update_records(self.offset + offset, stride, n, f)
    }
    #[inline]
    fn size(&self) -> usize {
        self.len
    }
    #[inline]
    fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<(), MemError> {
        self.mem.read_bytes(self.at(offset, dst.len())?, dst)
    }
    #[inline]
    fn write_bytes(&self, offset: usize, src: &[u8]) -> Result<(), MemError> {
        self.mem.write_bytes(self.at(offset, src.len())?, src)
    }
    #[inline]
    fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), MemError> {
        self.mem.fill(self.at(offset, len)?, len, byte)
    }
    windowed!(
        load_u16,
        store_u16,
        compare_exchange_u16,
        fetch_or_u16,
        fetch_and_u16,
        u16
    );
    windowed!(
        load_u32,
        store_u32,
        compare_exchange_u32,
        fetch_or_u32,
        fetch_and_u32,
        u32
    );
    windowed!(
        load_u64,
        store_u64,
        compare_exchange_u64,
        fetch_or_u64,
        fetch_and_u64,
        u64
    );
    #[inline]
    fn fence(&self, order: Ordering) {
        self.mem.fence(order)
    }
}
