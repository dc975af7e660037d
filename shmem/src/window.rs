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
