//! The host baseline for disk benchmarks: the least a program can do with
//! io_uring to keep `depth` fixed-size reads or writes in flight, with none
//! of a [`DiskQueue`](crate::DiskQueue)'s bookkeeping (no ops, no
//! validation, no segments: one buffer per slot, one SQE per I/O).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use io_uring::{IoUring, opcode};
use pvio_shmem::{HeapMem, SharedMem};

/// A raw io_uring loop over its own page-aligned buffers (`depth` blocks of
/// `block` bytes, one per slot).
///
/// The buffers belong to the value and the kernel may use them only while
/// an I/O is in flight: [`RawUring::run`] returns when all of its I/O has
/// completed, or, if the ring fails, leaves the rest to `Drop`, which waits
/// for it (or leaks the buffers if the ring stops answering).
pub struct RawUring {
    ring: IoUring,
    /// `None` only after Drop leaked it.
    buf: Option<HeapMem>,
    block: usize,
    depth: usize,
    in_flight: usize,
}

impl std::fmt::Debug for RawUring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawUring")
            .field("block", &self.block)
            .field("depth", &self.depth)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl RawUring {
    /// A ring of `depth` slots (at least 1) of `block` bytes each (at least
    /// 1; a multiple of the logical block size for O_DIRECT files).
    pub fn new(depth: u32, block: usize) -> io::Result<Self> {
        let depth = depth.max(1);
        let invalid = || io::Error::from(io::ErrorKind::InvalidInput);
        if block == 0 || u32::try_from(block).is_err() {
            return Err(invalid());
        }
        let bytes = block.checked_mul(depth as usize).ok_or_else(invalid)?;
        let buf = HeapMem::new(bytes).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(RawUring {
            ring: IoUring::new(depth)?,
            buf: Some(buf),
            block,
            depth: depth as usize,
            in_flight: 0,
        })
    }

    /// Does `ops` reads (or writes, with `write`) of one block each on
    /// `file`, at the byte offsets `offset()` returns, keeping up to `depth`
    /// in flight. Fails if an I/O fails or transfers less than a block (the
    /// remaining I/O still completes first).
    pub fn run(
        &mut self,
        file: &File,
        write: bool,
        ops: u64,
        mut offset: impl FnMut() -> u64,
    ) -> io::Result<()> {
        self.drain()?;
        let fd = io_uring::types::Fd(file.as_raw_fd());
        let (block, depth) = (self.block, self.depth);
        let view = self
            .buf
            .as_ref()
            .and_then(|b| b.raw_view())
            .ok_or_else(|| io::Error::other("buffer gone"))?;
        let mut free: Vec<usize> = (0..depth).collect();
        let mut issued = 0;
        let mut failed = None;
        loop {
            while failed.is_none() && issued < ops {
                let Some(i) = free.pop() else { break };
                let Some(addr) = view.addr(i * block, block) else {
                    failed = Some(io::Error::other("slot outside the buffer"));
                    break;
                };
                let entry = if write {
                    opcode::Write::new(fd, addr.cast_const(), block as u32)
                        .offset(offset())
                        .build()
                } else {
                    opcode::Read::new(fd, addr, block as u32)
                        .offset(offset())
                        .build()
                };
                // SAFETY: `addr` is slot `i`'s block of `self.buf`, which
                // this value owns and never moves or frees while an I/O is
                // in flight (`run` waits for all of them, or Drop does), and
                // slot `i` is not handed out again until this I/O completes.
                if unsafe { self.ring.submission().push(&entry.user_data(i as u64)) }.is_err() {
                    free.push(i);
                    break;
                }
                self.in_flight += 1;
                issued += 1;
            }
            if self.in_flight == 0 {
                break;
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // In-flight I/O is left to Drop (the buffers stay owned).
                Err(e) => return Err(e),
            }
            for cqe in self.ring.completion() {
                self.in_flight -= 1;
                free.push(cqe.user_data() as usize);
                if cqe.result() != block as i32 && failed.is_none() {
                    failed = Some(if cqe.result() < 0 {
                        io::Error::from_raw_os_error(-cqe.result())
                    } else {
                        io::Error::from(io::ErrorKind::UnexpectedEof)
                    });
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Waits for every I/O in flight.
    fn drain(&mut self) -> io::Result<()> {
        let mut stuck = 0;
        while self.in_flight > 0 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => stuck = 0,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY))
                        && stuck < 1000 =>
                {
                    stuck += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
            let n = self.ring.completion().count();
            self.in_flight = self.in_flight.saturating_sub(n);
        }
        Ok(())
    }
}

impl Drop for RawUring {
    fn drop(&mut self) {
        if self.drain().is_err() {
            // The kernel may still use the buffers: never free them.
            std::mem::forget(self.buf.take());
        }
    }
}
