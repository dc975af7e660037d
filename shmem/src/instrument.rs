use std::sync::Mutex;

use crate::{MemError, Ordering, SharedMem};

/// Which kind of access an [`Access`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKind {
    /// A byte copy out of the region (`read_bytes`, `read_obj`).
    Read,
    /// A byte copy into the region.
    Write,
    /// An atomic load.
    Load,
    /// An atomic store.
    Store,
    /// A read-modify-write (compare-exchange, fetch-or, fetch-and).
    Rmw,
}

/// One recorded access: kind, offset and length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// What was done.
    pub kind: AccessKind,
    /// Where.
    pub offset: usize,
    /// How many bytes.
    pub len: usize,
}

/// A region wrapper that records every access, in order.
///
/// Tests use it to prove protocol properties such as "each request slot is
/// read exactly once" (SECURITY.md R6) or "the frontend never reads back a
/// request slot" (R12).
#[derive(Debug)]
pub struct AccessLog<M> {
    mem: M,
    log: Mutex<Vec<Access>>,
}

impl<M: SharedMem> AccessLog<M> {
    /// Wraps `mem`.
    pub fn new(mem: M) -> Self {
        AccessLog {
            mem,
            log: Mutex::new(Vec::new()),
        }
    }

    /// The wrapped region (accesses through it are not recorded).
    pub fn inner(&self) -> &M {
        &self.mem
    }

    /// Takes the accesses recorded so far, leaving the log empty.
    pub fn take(&self) -> Vec<Access> {
        std::mem::take(&mut *self.log.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn record(&self, kind: AccessKind, offset: usize, len: usize) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Access { kind, offset, len });
    }
}

macro_rules! logged {
    ($load:ident, $store:ident, $cas:ident, $or:ident, $and:ident, $int:ty) => {
        #[inline]
        fn $load(&self, offset: usize, order: Ordering) -> Result<$int, MemError> {
            self.record(AccessKind::Load, offset, size_of::<$int>());
            self.mem.$load(offset, order)
        }
        #[inline]
        fn $store(&self, offset: usize, val: $int, order: Ordering) -> Result<(), MemError> {
            self.record(AccessKind::Store, offset, size_of::<$int>());
            self.mem.$store(offset, val, order)
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
            self.record(AccessKind::Rmw, offset, size_of::<$int>());
            self.mem.$cas(offset, current, new, success, failure)
        }
        #[inline]
        fn $or(&self, offset: usize, val: $int, order: Ordering) -> Result<$int, MemError> {
            self.record(AccessKind::Rmw, offset, size_of::<$int>());
            self.mem.$or(offset, val, order)
        }
        #[inline]
        fn $and(&self, offset: usize, val: $int, order: Ordering) -> Result<$int, MemError> {
            self.record(AccessKind::Rmw, offset, size_of::<$int>());
            self.mem.$and(offset, val, order)
        }
    };
}

impl<M: SharedMem> SharedMem for AccessLog<M> {
    #[inline]
    fn size(&self) -> usize {
        self.mem.size()
    }
    #[inline]
    fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<(), MemError> {
        self.record(AccessKind::Read, offset, dst.len());
        self.mem.read_bytes(offset, dst)
    }
    #[inline]
    fn write_bytes(&self, offset: usize, src: &[u8]) -> Result<(), MemError> {
        self.record(AccessKind::Write, offset, src.len());
        self.mem.write_bytes(offset, src)
    }
    #[inline]
    fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), MemError> {
        self.record(AccessKind::Write, offset, len);
        self.mem.fill(offset, len, byte)
    }
    logged!(
        load_u16,
        store_u16,
        compare_exchange_u16,
        fetch_or_u16,
        fetch_and_u16,
        u16
    );
    logged!(
        load_u32,
        store_u32,
        compare_exchange_u32,
        fetch_or_u32,
        fetch_and_u32,
        u32
    );
    logged!(
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
