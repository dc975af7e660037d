//! A disk that does nothing, instantly.

use crate::{Completion, Disk, DiskError, DiskInfo, DiskOp, DiskQueue};

/// A disk that completes every valid operation at once without touching
/// memory (reads leave the buffers as they are, writes store nothing): the
/// driver path without a device, for benchmarks. Operations are validated
/// like [`MemDisk`](crate::MemDisk)'s, so an out-of-range one completes with
/// an error.
#[derive(Debug, Clone, Copy)]
pub struct NullDisk {
    info: DiskInfo,
}

impl NullDisk {
    /// A writable disk of `sectors` 512-byte sectors.
    pub fn new(sectors: u64) -> Self {
        NullDisk {
            info: DiskInfo {
                sectors,
                sector_size: 512,
                physical_sector_size: 512,
                readonly: false,
                flush: true,
                discard: true,
                discard_granularity: 512,
            },
        }
    }
}

impl Disk for NullDisk {
    fn info(&self) -> DiskInfo {
        self.info
    }

    fn queue(&self, depth: u32) -> Result<Box<dyn DiskQueue>, DiskError> {
        Ok(Box::new(NullQueue {
            info: self.info,
            depth: depth.max(1) as usize,
            queued: Vec::new(),
            done: Vec::new(),
        }))
    }
}

/// Completes operations at `submit`, like [`MemDisk`](crate::MemDisk)'s
/// queue.
#[derive(Debug)]
struct NullQueue {
    info: DiskInfo,
    depth: usize,
    queued: Vec<Completion>,
    done: Vec<Completion>,
}

impl DiskQueue for NullQueue {
    fn push(&mut self, op: DiskOp) -> Result<(), (DiskError, DiskOp)> {
        if self.room() == 0 {
            return Err((DiskError::QueueFull, op));
        }
        self.queued.push(Completion {
            tag: op.tag,
            result: op.validate(&self.info),
            op,
        });
        Ok(())
    }

    fn submit(&mut self) -> Result<usize, DiskError> {
        let n = self.queued.len();
        self.done.append(&mut self.queued);
        Ok(n)
    }

    fn reap(&mut self, _min: usize, out: &mut Vec<Completion>) -> Result<usize, DiskError> {
        let n = self.done.len();
        out.append(&mut self.done);
        Ok(n)
    }

    fn in_flight(&self) -> usize {
        self.queued.len() + self.done.len()
    }

    fn room(&self) -> usize {
        self.depth.saturating_sub(self.in_flight())
    }
}
