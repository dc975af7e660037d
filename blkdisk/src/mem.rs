//! An in-memory disk.

use std::sync::{Arc, Mutex};

use crate::{Completion, Disk, DiskError, DiskInfo, DiskOp, DiskOpKind, DiskQueue, SECTOR_SIZE};

/// A disk held in memory: for tests and for images small enough to keep.
/// Operations complete synchronously at `submit`.
#[derive(Debug, Clone)]
pub struct MemDisk {
    data: Arc<Mutex<Vec<u8>>>,
    info: DiskInfo,
}

impl MemDisk {
    /// A zeroed disk of `sectors` 512-byte sectors.
    pub fn new(sectors: u64, readonly: bool) -> Self {
        let info = DiskInfo {
            sectors,
            sector_size: 512,
            physical_sector_size: 512,
            readonly,
            flush: true,
            discard: true,
            discard_granularity: 512,
        };
        MemDisk {
            data: Arc::new(Mutex::new(vec![0; (sectors * SECTOR_SIZE) as usize])),
            info,
        }
    }

    /// A copy of the contents.
    pub fn contents(&self) -> Vec<u8> {
        self.data.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn run(&self, op: &DiskOp) -> Result<(), DiskError> {
        op.validate(&self.info)?;
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let mut at = (op.sector * SECTOR_SIZE) as usize;
        match op.kind {
            DiskOpKind::Read => {
                for s in &op.segs {
                    s.mem
                        .write_bytes(s.offset, &data[at..at + s.len])
                        .map_err(DiskError::Memory)?;
                    at += s.len;
                }
            }
            DiskOpKind::Write => {
                for s in &op.segs {
                    s.mem
                        .read_bytes(s.offset, &mut data[at..at + s.len])
                        .map_err(DiskError::Memory)?;
                    at += s.len;
                }
            }
            DiskOpKind::Flush => {}
            DiskOpKind::Discard { sectors } => {
                data[at..at + (sectors * SECTOR_SIZE) as usize].fill(0)
            }
        }
        Ok(())
    }
}

impl Disk for MemDisk {
    fn info(&self) -> DiskInfo {
        self.info
    }

    fn queue(&self, depth: u32) -> Result<Box<dyn DiskQueue>, DiskError> {
        Ok(Box::new(MemQueue {
            disk: self.clone(),
            depth: depth.max(1) as usize,
            queued: Vec::new(),
            done: Vec::new(),
        }))
    }
}

struct MemQueue {
    disk: MemDisk,
    depth: usize,
    queued: Vec<DiskOp>,
    done: Vec<Completion>,
}

impl DiskQueue for MemQueue {
    fn push(&mut self, op: DiskOp) -> Result<(), (DiskError, DiskOp)> {
        if self.room() == 0 {
            return Err((DiskError::QueueFull, op));
        }
        self.queued.push(op);
        Ok(())
    }

    fn submit(&mut self) -> Result<usize, DiskError> {
        let n = self.queued.len();
        for op in self.queued.drain(..) {
            let result = self.disk.run(&op);
            self.done.push(Completion {
                tag: op.tag,
                result,
                op,
            });
        }
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
