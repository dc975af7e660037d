//! Disk backends for blkback, behind one trait.
//!
//! A [`Disk`] describes a block device ([`DiskInfo`]) and opens
//! [`DiskQueue`]s, one per blkback worker: a queue takes batches of
//! [`DiskOp`]s and reports [`Completion`]s. An operation's data lives in
//! [`Seg`]ments of shared memory (the frontend's granted pages mapped into
//! the backend, or the backend's own bounce pages): the queue keeps each
//! operation, and so its memory, alive until it completes, and a backend
//! over real files reads and writes those pages directly (no bounce copy).
//!
//! Sectors are always 512 bytes (`spec/blkif.md` §1), whatever the device's
//! logical sector size.

// Only `sys` (the io_uring submissions and `statx`) opts out of this lint.
#![deny(unsafe_code)]

mod file;
mod mem;
mod null;
mod sys;

use std::fmt;
use std::sync::Arc;

pub use file::{DirectIo, FileOptions, UringDisk};
pub use mem::MemDisk;
pub use null::NullDisk;
use pvio_shmem::SharedMem;
pub use sys::baseline::RawUring;

/// Bytes per protocol sector.
pub const SECTOR_SIZE: u64 = 512;

/// What a disk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskInfo {
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// Logical block size in bytes (a power of two, at least 512).
    pub sector_size: u32,
    /// Physical block size in bytes.
    pub physical_sector_size: u32,
    /// Writes (and discards) are refused.
    pub readonly: bool,
    /// Flushes are meaningful (the device has a volatile cache).
    pub flush: bool,
    /// Discards are supported.
    pub discard: bool,
    /// Discard granularity in bytes (when `discard`).
    pub discard_granularity: u32,
}

/// Why a disk operation failed.
#[derive(Debug)]
pub enum DiskError {
    /// The range is outside the device, or the op is malformed.
    Invalid(&'static str),
    /// A write or discard on a read-only disk.
    ReadOnly,
    /// The operation is not supported by this disk.
    Unsupported,
    /// The queue already holds its depth of operations.
    QueueFull,
    /// Shared memory refused an access.
    Memory(pvio_shmem::MemError),
    /// The host I/O failed.
    Io(std::io::Error),
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskError::Invalid(why) => write!(f, "invalid disk operation: {why}"),
            DiskError::ReadOnly => write!(f, "disk is read-only"),
            DiskError::Unsupported => write!(f, "operation not supported by this disk"),
            DiskError::QueueFull => write!(f, "disk queue full"),
            DiskError::Memory(e) => write!(f, "disk I/O memory: {e}"),
            DiskError::Io(e) => write!(f, "disk I/O: {e}"),
        }
    }
}

impl std::error::Error for DiskError {}

/// A piece of memory an operation reads into or writes from: `len` bytes at
/// `offset` of `mem`.
#[derive(Clone)]
pub struct Seg {
    /// The region (kept alive by the operation until it completes).
    pub mem: Arc<dyn SharedMem + Send + Sync>,
    /// Byte offset in the region.
    pub offset: usize,
    /// Bytes.
    pub len: usize,
}

impl fmt::Debug for Seg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Seg")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskOpKind {
    /// Read the sectors into the segments, in order.
    Read,
    /// Write the segments to the sectors, in order.
    Write,
    /// Make everything completed before it durable.
    Flush,
    /// Discard `sectors` sectors (no segments).
    Discard {
        /// Sectors to discard.
        sectors: u64,
    },
}

/// One disk operation: `kind` at 512-byte `sector`, the segments laid out
/// back to back on disk. `tag` comes back in its [`Completion`].
#[derive(Debug)]
pub struct DiskOp {
    /// Caller's identifier.
    pub tag: u64,
    /// What to do.
    pub kind: DiskOpKind,
    /// First 512-byte sector.
    pub sector: u64,
    /// Memory, in disk order (empty for flush and discard).
    pub segs: Vec<Seg>,
}

impl DiskOp {
    /// Total bytes of the segments.
    pub fn bytes(&self) -> u64 {
        self.segs.iter().map(|s| s.len as u64).sum()
    }

    /// Checks the operation against `info`: the range inside the device,
    /// segment lengths multiples of 512, no writes to a read-only disk.
    pub fn validate(&self, info: &DiskInfo) -> Result<(), DiskError> {
        let sectors = match self.kind {
            DiskOpKind::Read | DiskOpKind::Write => {
                if self
                    .segs
                    .iter()
                    .any(|s| s.len == 0 || !(s.len as u64).is_multiple_of(SECTOR_SIZE))
                {
                    return Err(DiskError::Invalid("segment length not a multiple of 512"));
                }
                self.bytes() / SECTOR_SIZE
            }
            DiskOpKind::Flush => return Ok(()),
            DiskOpKind::Discard { sectors } => sectors,
        };
        if matches!(self.kind, DiskOpKind::Write | DiskOpKind::Discard { .. }) && info.readonly {
            return Err(DiskError::ReadOnly);
        }
        match self.sector.checked_add(sectors) {
            Some(end) if end <= info.sectors => Ok(()),
            _ => Err(DiskError::Invalid("range beyond the end of the disk")),
        }
    }
}

/// A finished operation.
#[derive(Debug)]
pub struct Completion {
    /// The operation's tag.
    pub tag: u64,
    /// Its outcome.
    pub result: Result<(), DiskError>,
    /// The operation (its segments are released when this is dropped).
    pub op: DiskOp,
}

/// A block device.
pub trait Disk: Send + Sync {
    /// What the device is.
    fn info(&self) -> DiskInfo;
    /// A submission/completion queue of up to `depth` operations in flight,
    /// for one worker thread.
    fn queue(&self, depth: u32) -> Result<Box<dyn DiskQueue>, DiskError>;
}

/// One worker's queue of operations.
pub trait DiskQueue: Send {
    /// Queues `op`. Nothing is promised to start before
    /// [`DiskQueue::submit`]. When the queue is full (see
    /// [`DiskQueue::room`]) the op comes back with `QueueFull`. Invalid ops
    /// are accepted and complete with their error.
    fn push(&mut self, op: DiskOp) -> Result<(), (DiskError, DiskOp)>;
    /// Starts every queued operation (one system call for the batch, for
    /// backends that make system calls). Returns how many started.
    fn submit(&mut self) -> Result<usize, DiskError>;
    /// Moves finished operations to `out`, waiting until at least `min` are
    /// available (0: do not wait). Returns how many were moved.
    fn reap(&mut self, min: usize, out: &mut Vec<Completion>) -> Result<usize, DiskError>;
    /// Like [`DiskQueue::reap`], but gives up waiting after `timeout` (a
    /// worker that must also watch its ring for new requests waits this
    /// way). Backends whose operations complete at `submit` never wait.
    fn reap_timeout(
        &mut self,
        min: usize,
        timeout: std::time::Duration,
        out: &mut Vec<Completion>,
    ) -> Result<usize, DiskError> {
        let _ = timeout;
        self.reap(min, out)
    }
    /// Operations pushed and not yet reaped.
    fn in_flight(&self) -> usize;
    /// How many more operations `push` accepts now.
    fn room(&self) -> usize;
}
