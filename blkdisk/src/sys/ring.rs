//! One io_uring per disk queue, and the slots that keep each operation's
//! memory alive while the kernel uses it (see the module rule in `sys`).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use io_uring::{IoUring, opcode, squeue, types};
use pvio_shmem::{HeapMem, SharedMem};

use crate::{DiskOp, DiskOpKind, SECTOR_SIZE};

/// At most this many iovecs go in one submission (the kernel's
/// `UIO_MAXIOV`); a longer operation continues like a short transfer.
const IOV_MAX: usize = 1024;

/// What the kernel requires of the memory of a transfer (O_DIRECT): each
/// segment's address a multiple of `mem`, its length a multiple of `len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Align {
    pub mem: usize,
    pub len: usize,
}

impl Align {
    /// Buffered I/O: anything goes.
    pub const NONE: Align = Align { mem: 1, len: 1 };

    fn fits(self, addr: usize, len: usize) -> bool {
        addr.is_multiple_of(self.mem.max(1)) && len.is_multiple_of(self.len.max(1))
    }
}

/// Why [`Ring::push`] did not take an operation; the op comes back.
#[derive(Debug)]
pub(crate) enum Rejected {
    /// Every slot is taken.
    Full(DiskOp),
    /// A segment has no raw view, or is not aligned as asked: bounce it.
    NeedsBounce(DiskOp),
    /// The operation cannot be expressed (offset overflow, bounce buffer too
    /// small, no such file).
    Invalid(DiskOp, &'static str),
}

/// A reaped operation: the op (and its bounce buffer) handed back.
#[derive(Debug)]
pub(crate) struct Finished {
    pub op: DiskOp,
    pub bounce: Option<HeapMem>,
    pub result: io::Result<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Io {
    Read,
    Write,
    Flush,
    Discard,
}

/// An operation the kernel may be using. Everything its submission points
/// at lives here: the caller's regions (through `op`'s `Arc` segments), the
/// bounce buffer, and the iovec array.
#[derive(Debug)]
struct Slot {
    op: DiskOp,
    bounce: Option<HeapMem>,
    /// Remaining memory of a read or write (advanced after a short transfer).
    iov: Vec<libc::iovec>,
    io: Io,
    file: usize,
    /// File byte offset of the operation's start.
    offset: u64,
    /// Bytes of the whole transfer (or of the discarded range).
    total: u64,
    /// Bytes transferred so far.
    done: u64,
}

// SAFETY: the only non-Send fields are the iovecs' raw pointers. They point
// into regions this slot owns (`op`'s `Arc<dyn SharedMem + Send + Sync>`
// segments, or `bounce`, a `HeapMem`, which is Send), are only ever handed
// to the kernel, and are never dereferenced by this process.
unsafe impl Send for Slot {}

/// One io_uring instance and the operations in it.
///
/// In inline mode (files on which io_uring cannot do non-blocking I/O and
/// that are memory anyway: tmpfs) reads and writes never reach the ring:
/// [`Ring::submit`] does each with `preadv`/`pwritev` in the calling thread
/// and [`Ring::reap`] hands them back, exactly as if they had gone through
/// the ring. Flushes and discards still go through io_uring.
pub(crate) struct Ring {
    ring: IoUring,
    files: Arc<[File]>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Completions copied out of the CQ before they are handled.
    cqes: Vec<(u64, i32)>,
    /// Remainders of short transfers pushed since the last enter.
    resubmitted: usize,
    /// Reads and writes are done inline by `submit`.
    inline: bool,
    /// Inline slots pushed and not yet done, in push order.
    queued: Vec<usize>,
    /// Inline slots done and not yet reaped, with their outcome.
    ready: Vec<(usize, io::Result<()>)>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("files", &self.files)
            .field("depth", &self.slots.len())
            .field("in_flight", &self.in_flight())
            .field("resubmitted", &self.resubmitted)
            .field("inline", &self.inline)
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// A ring for up to `depth` operations (at least 1) on `files` (an
    /// operation names its file by index); reads and writes are done inline
    /// by [`Ring::submit`] if `inline`.
    pub fn new(depth: u32, files: Arc<[File]>, inline: bool) -> io::Result<Ring> {
        let depth = depth.max(1);
        // COOP_TASKRUN (Linux 5.19): a completion's task work waits for
        // the worker's next system call instead of interrupting it with an
        // IPI. The worker polls with system calls (sched_yield, enter), so
        // it sees completions as soon; on two vCPUs this took 5-10 µs off a
        // QD1 4 KiB op on ext4 and 10-20% off QD32. Older kernels: without.
        let ring = match IoUring::builder().setup_coop_taskrun().build(depth) {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::new(depth)?,
            Err(e) => return Err(e),
        };
        if (ring.params().sq_entries() as usize) < depth as usize {
            return Err(io::Error::other("io_uring smaller than the queue depth"));
        }
        let depth = depth as usize;
        Ok(Ring {
            ring,
            files,
            slots: (0..depth).map(|_| None).collect(),
            free: (0..depth).rev().collect(),
            cqes: Vec::with_capacity(depth),
            resubmitted: 0,
            inline,
            queued: Vec::with_capacity(depth),
            ready: Vec::with_capacity(depth),
        })
    }

    /// Operations whose completion has not been reaped.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Free slots.
    pub fn room(&self) -> usize {
        self.free.len()
    }

    /// Queues `op` on file `file`, the kernel reading or writing the op's
    /// segments in place. Fails with [`Rejected::NeedsBounce`] if a segment
    /// has no raw view or does not meet `align`. The op must have been
    /// validated; reads and writes must have at least one segment.
    pub fn push(&mut self, op: DiskOp, file: usize, align: Align) -> Result<(), Rejected> {
        self.push_slot(op, None, file, align)
    }

    /// Queues a read or write `op` whose data goes through `bounce` (at
    /// least `op.bytes()` long): the caller copies the segments into it
    /// before a write and out of it after a read completes.
    pub fn push_bounced(
        &mut self,
        op: DiskOp,
        bounce: HeapMem,
        file: usize,
    ) -> Result<(), Rejected> {
        self.push_slot(op, Some(bounce), file, Align::NONE)
    }

    fn push_slot(
        &mut self,
        op: DiskOp,
        bounce: Option<HeapMem>,
        file: usize,
        align: Align,
    ) -> Result<(), Rejected> {
        if self.free.is_empty() {
            return Err(Rejected::Full(op));
        }
        if file >= self.files.len() {
            return Err(Rejected::Invalid(op, "no such file"));
        }
        let Some(offset) = op.sector.checked_mul(SECTOR_SIZE) else {
            return Err(Rejected::Invalid(op, "offset overflows"));
        };
        let (io, total, iov) = match op.kind {
            DiskOpKind::Flush => (Io::Flush, 0, Vec::new()),
            DiskOpKind::Discard { sectors } => match sectors.checked_mul(SECTOR_SIZE) {
                Some(total) => (Io::Discard, total, Vec::new()),
                None => return Err(Rejected::Invalid(op, "discard length overflows")),
            },
            kind @ (DiskOpKind::Read | DiskOpKind::Write) => {
                let io = if kind == DiskOpKind::Read {
                    Io::Read
                } else {
                    Io::Write
                };
                let total = op.bytes();
                let iov = match &bounce {
                    Some(b) => match iovecs_of_bounce(b, total) {
                        Some(iov) => iov,
                        None => return Err(Rejected::Invalid(op, "bounce buffer too small")),
                    },
                    None => match iovecs_of_segs(&op, align) {
                        Some(iov) => iov,
                        None => return Err(Rejected::NeedsBounce(op)),
                    },
                };
                (io, total, iov)
            }
        };
        let Some(&idx) = self.free.last() else {
            return Err(Rejected::Full(op));
        };
        let slot = Slot {
            op,
            bounce,
            iov,
            io,
            file,
            offset,
            total,
            done: 0,
        };
        if self.inline && matches!(io, Io::Read | Io::Write) {
            // Done by the next `submit`; the kernel sees the memory only
            // during that call.
            self.free.pop();
            self.slots[idx] = Some(slot);
            self.queued.push(idx);
            return Ok(());
        }
        let Some(entry) = entry(&self.files, &slot, idx) else {
            return Err(Rejected::Invalid(slot.op, "no such file"));
        };
        // SAFETY: every address in `entry` (a buffer, or the iovec array and
        // the buffers it lists) was computed from a region owned by `slot`
        // (`op`'s `Arc` segments or `bounce`, through the bounds-checked
        // `RawView::addr`) or is `slot.iov`'s heap array. The slot is stored
        // in `self.slots[idx]` right below, before any enter (moving it moves
        // neither the regions nor the array), and leaves it only in `finish`,
        // after this submission's completion has been reaped (or never: Drop
        // waits for every completion or leaks the slots).
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            return Err(Rejected::Full(slot.op));
        }
        self.free.pop();
        self.slots[idx] = Some(slot);
        Ok(())
    }

    /// Does the inline operations pushed so far, then starts every pushed
    /// submission (one `io_uring_enter`). Returns how many the kernel took
    /// plus how many were done inline.
    pub fn submit(&mut self) -> io::Result<usize> {
        let inline = self.run_inline();
        loop {
            match self.ring.submit() {
                Ok(n) => {
                    self.resubmitted = 0;
                    return Ok(n + inline);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts every pushed submission and waits until `want` completions
    /// are ready to reap (returns at once if an inline operation is).
    pub fn wait(&mut self, want: usize) -> io::Result<()> {
        self.run_inline();
        if !self.ready.is_empty() {
            return self.submit().map(drop);
        }
        loop {
            match self.ring.submit_and_wait(want) {
                Ok(_) => {
                    self.resubmitted = 0;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Like [`Ring::wait`], but waits at most `timeout` for the
    /// completions (`IORING_ENTER_EXT_ARG`); running out of time is not an
    /// error.
    pub fn wait_timeout(&mut self, want: usize, timeout: Duration) -> io::Result<()> {
        self.run_inline();
        if !self.ready.is_empty() {
            return self.submit().map(drop);
        }
        let ts = types::Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        loop {
            match self.ring.submitter().submit_with_args(want, &args) {
                Ok(_) => {
                    self.resubmitted = 0;
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => {
                    self.resubmitted = 0;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether remainders of short transfers wait for an enter.
    pub fn resubmitted(&self) -> bool {
        self.resubmitted > 0
    }

    /// Moves the operations whose completions are in the CQ to `out`
    /// (without waiting). A short transfer is not finished: its remainder
    /// is pushed again (see [`Ring::resubmitted`]). A transfer that makes
    /// no progress (0 bytes: the file shrank under us) fails.
    pub fn reap(&mut self, out: &mut Vec<Finished>) -> usize {
        let mut n = 0;
        let ready = std::mem::take(&mut self.ready);
        for (idx, result) in ready {
            if let Some(f) = self.finish(idx, result) {
                out.push(f);
                n += 1;
            }
        }
        self.cqes.clear();
        self.cqes
            .extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
        for i in 0..self.cqes.len() {
            let (data, res) = self.cqes[i];
            if let Some(f) = self.complete(data as usize, res) {
                out.push(f);
                n += 1;
            }
        }
        n
    }

    /// Does every queued inline operation, in push order. Returns how many.
    fn run_inline(&mut self) -> usize {
        let queued = std::mem::take(&mut self.queued);
        let n = queued.len();
        for &idx in &queued {
            let result = self.transfer(idx);
            self.ready.push((idx, result));
        }
        self.queued = queued;
        self.queued.clear();
        n
    }

    /// Reads or writes the whole of inline slot `idx` with
    /// `preadv`/`pwritev`, continuing after short transfers.
    fn transfer(&mut self, idx: usize) -> io::Result<()> {
        let Some(Some(slot)) = self.slots.get_mut(idx) else {
            return Err(io::Error::other("no such slot"));
        };
        let fd = self
            .files
            .get(slot.file)
            .ok_or_else(|| io::Error::other("no such file"))?
            .as_raw_fd();
        while slot.done < slot.total {
            let n = slot.iov.len().min(IOV_MAX) as libc::c_int;
            let at = libc::off_t::try_from(slot.offset + slot.done)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            let r = if slot.io == Io::Read {
                // SAFETY: the iovecs were computed from regions slot `idx`
                // owns (`op`'s `Arc` segments or `bounce`, through the
                // bounds-checked `RawView::addr`), and the slot (so the
                // regions and the iovec array) outlives this synchronous
                // call; `n` is at most the array's length.
                unsafe { libc::preadv(fd, slot.iov.as_ptr(), n, at) }
            } else {
                // SAFETY: as for `preadv` above.
                unsafe { libc::pwritev(fd, slot.iov.as_ptr(), n, at) }
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let got = r as u64;
            if got == 0 {
                return Err(io::Error::from(if slot.io == Io::Read {
                    io::ErrorKind::UnexpectedEof
                } else {
                    io::ErrorKind::WriteZero
                }));
            }
            if got > slot.total - slot.done {
                return Err(io::Error::other(
                    "the kernel reported more bytes than asked",
                ));
            }
            slot.done += got;
            advance(&mut slot.iov, got as usize);
        }
        Ok(())
    }

    fn complete(&mut self, idx: usize, res: i32) -> Option<Finished> {
        let slot = self.slots.get_mut(idx)?.as_mut()?;
        let result = if res < 0 {
            Err(io::Error::from_raw_os_error(-res))
        } else if matches!(slot.io, Io::Flush | Io::Discard) {
            Ok(())
        } else {
            let got = res as u64;
            let left = slot.total - slot.done;
            if got > left {
                Err(io::Error::other(
                    "the kernel reported more bytes than asked",
                ))
            } else if got == left {
                slot.done = slot.total;
                Ok(())
            } else if got == 0 {
                Err(io::Error::from(if slot.io == Io::Read {
                    io::ErrorKind::UnexpectedEof
                } else {
                    io::ErrorKind::WriteZero
                }))
            } else {
                slot.done += got;
                advance(&mut slot.iov, got as usize);
                let pushed = match entry(&self.files, slot, idx) {
                    // SAFETY: as in `push_slot`: the addresses are in
                    // regions and the iovec array owned by slot `idx`, which
                    // stays in `self.slots` until this new submission's
                    // completion is reaped. The previous submission has
                    // completed, so the kernel no longer uses the array
                    // `advance` just rewrote.
                    Some(e) => unsafe { self.ring.submission().push(&e) }.is_ok(),
                    None => false,
                };
                if pushed {
                    self.resubmitted += 1;
                    return None;
                }
                Err(io::Error::other("could not resubmit a short transfer"))
            }
        };
        self.finish(idx, result)
    }

    fn finish(&mut self, idx: usize, result: io::Result<()>) -> Option<Finished> {
        let slot = self.slots.get_mut(idx)?.take()?;
        self.free.push(idx);
        Some(Finished {
            op: slot.op,
            bounce: slot.bounce,
            result,
        })
    }
}

impl Drop for Ring {
    /// Waits for every operation in flight, so no memory the kernel still
    /// reads or writes is freed. If the ring stops working, the slots (and
    /// the regions they hold) are leaked instead.
    fn drop(&mut self) {
        // Inline operations never reached the kernel, or are done.
        for idx in std::mem::take(&mut self.queued) {
            let _ = self.finish(idx, Ok(()));
        }
        for (idx, _) in std::mem::take(&mut self.ready) {
            let _ = self.finish(idx, Ok(()));
        }
        let mut stuck = 0;
        while self.in_flight() > 0 {
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
                Err(_) => {
                    for slot in self.slots.drain(..) {
                        std::mem::forget(slot);
                    }
                    self.free.clear();
                    return;
                }
            }
            let done: Vec<u64> = self.ring.completion().map(|c| c.user_data()).collect();
            for data in done {
                // Completed (even if short): the kernel is done with it.
                let _ = self.finish(data as usize, Ok(()));
            }
        }
    }
}

/// The submission for (the rest of) `slot`'s operation, tagged with `idx`.
/// `None` if the slot names no file of `files`.
fn entry(files: &[File], slot: &Slot, idx: usize) -> Option<squeue::Entry> {
    let fd = types::Fd(files.get(slot.file)?.as_raw_fd());
    let at = slot.offset + slot.done;
    let entry = match slot.io {
        Io::Read | Io::Write => {
            let n = slot.iov.len().min(IOV_MAX) as u32;
            let single = match slot.iov.first() {
                Some(v) if n == 1 => u32::try_from(v.iov_len).ok().map(|l| (v.iov_base, l)),
                _ => None,
            };
            match (slot.io, single) {
                (Io::Read, Some((base, len))) => {
                    opcode::Read::new(fd, base.cast(), len).offset(at).build()
                }
                (Io::Read, None) => opcode::Readv::new(fd, slot.iov.as_ptr(), n)
                    .offset(at)
                    .build(),
                (_, Some((base, len))) => opcode::Write::new(fd, base.cast_const().cast(), len)
                    .offset(at)
                    .build(),
                (_, None) => opcode::Writev::new(fd, slot.iov.as_ptr(), n)
                    .offset(at)
                    .build(),
            }
        }
        // IO_DRAIN: the flush starts only once every operation submitted
        // before it on this ring has completed, and later ones wait for it:
        // a barrier, stronger than the trait's "operations completed before
        // it".
        Io::Flush => opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .flags(squeue::Flags::IO_DRAIN),
        Io::Discard => opcode::Fallocate::new(fd, slot.total)
            .offset(slot.offset)
            .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
            .build(),
    };
    Some(entry.user_data(idx as u64))
}

/// The iovecs of `op`'s segments, each in place in its region, or `None` if
/// one has no raw view or misses `align`.
fn iovecs_of_segs(op: &DiskOp, align: Align) -> Option<Vec<libc::iovec>> {
    let mut iov = Vec::with_capacity(op.segs.len());
    for s in &op.segs {
        let addr = s.mem.raw_view()?.addr(s.offset, s.len)?;
        if !align.fits(addr as usize, s.len) {
            return None;
        }
        iov.push(libc::iovec {
            iov_base: addr.cast(),
            iov_len: s.len,
        });
    }
    Some(iov)
}

/// One iovec over the first `total` bytes of `bounce`.
fn iovecs_of_bounce(bounce: &HeapMem, total: u64) -> Option<Vec<libc::iovec>> {
    let len = usize::try_from(total).ok()?;
    let addr = bounce.raw_view()?.addr(0, len)?;
    Some(vec![libc::iovec {
        iov_base: addr.cast(),
        iov_len: len,
    }])
}

/// Drops the first `n` bytes of `iov` (after a short transfer).
fn advance(iov: &mut Vec<libc::iovec>, mut n: usize) {
    let mut skip = 0;
    while skip < iov.len() && n >= iov[skip].iov_len {
        n -= iov[skip].iov_len;
        skip += 1;
    }
    iov.drain(..skip);
    if let Some(first) = iov.first_mut() {
        let n = n.min(first.iov_len);
        first.iov_base = first.iov_base.cast::<u8>().wrapping_add(n).cast();
        first.iov_len -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iov(parts: &[(usize, usize)]) -> Vec<libc::iovec> {
        parts
            .iter()
            .map(|&(base, len)| libc::iovec {
                iov_base: std::ptr::without_provenance_mut(base),
                iov_len: len,
            })
            .collect()
    }

    fn parts(iov: &[libc::iovec]) -> Vec<(usize, usize)> {
        iov.iter()
            .map(|v| (v.iov_base as usize, v.iov_len))
            .collect()
    }

    #[test]
    fn advance_drops_whole_and_partial_segments() {
        let mut v = iov(&[(0x1000, 512), (0x3000, 1024), (0x8000, 512)]);
        advance(&mut v, 0);
        assert_eq!(parts(&v), [(0x1000, 512), (0x3000, 1024), (0x8000, 512)]);
        advance(&mut v, 512);
        assert_eq!(parts(&v), [(0x3000, 1024), (0x8000, 512)]);
        advance(&mut v, 600);
        assert_eq!(parts(&v), [(0x3000 + 600, 424), (0x8000, 512)]);
        advance(&mut v, 424 + 100);
        assert_eq!(parts(&v), [(0x8000 + 100, 412)]);
        advance(&mut v, 412);
        assert!(v.is_empty());
        advance(&mut v, 7);
        assert!(v.is_empty());
    }

    #[test]
    fn align_checks_address_and_length() {
        let a = Align {
            mem: 512,
            len: 4096,
        };
        assert!(a.fits(0x2000, 8192));
        assert!(!a.fits(0x2100, 8192));
        assert!(!a.fits(0x2000, 512));
        assert!(Align::NONE.fits(3, 5));
        assert!(Align { mem: 0, len: 0 }.fits(3, 5));
    }
}
