//! A raw image file (or block device) driven by io_uring.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pvio_shmem::{HeapMem, PAGE_SIZE};

use crate::sys::{self, Align, Finished, Rejected, Ring};
use crate::{Completion, Disk, DiskError, DiskInfo, DiskOp, DiskOpKind, DiskQueue, SECTOR_SIZE};

/// Whether a [`UringDisk`] bypasses the host page cache (`O_DIRECT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DirectIo {
    /// `O_DIRECT` if the filesystem accepts it, else through the page cache.
    #[default]
    Auto,
    /// `O_DIRECT`, or [`UringDisk::open`] fails.
    Always,
    /// Always through the page cache.
    Never,
}

/// How [`UringDisk::open`] opens the image. The default is writable,
/// [`DirectIo::Auto`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileOptions {
    /// Open the file read-only; writes and discards complete with
    /// [`DiskError::ReadOnly`].
    pub readonly: bool,
    /// Whether to use `O_DIRECT`.
    pub direct: DirectIo,
}

/// A raw disk image (a regular file, or a block device) read and written
/// through io_uring, one ring per [`DiskQueue`].
///
/// Reads and writes go straight between the file and the operation's
/// segments when the segments are plain memory
/// ([`SharedMem::raw_view`](pvio_shmem::SharedMem::raw_view)) and, with
/// `O_DIRECT`, meet the kernel's memory alignment (`STATX_DIOALIGN`);
/// otherwise through a page-aligned bounce buffer.
///
/// With `O_DIRECT` the disk holds a second, buffered descriptor of the same
/// file for the operations whose file offset or length is not a multiple of
/// the direct-I/O offset alignment (possible only when that alignment is
/// above 512, e.g. on a 4096-byte-sector device: a frontend that honours
/// [`DiskInfo::sector_size`] never sends one). Mixing buffered and direct
/// I/O on one file is coherent on Linux for operations that do not overlap
/// in time: a direct read or write first writes back and drops the cached
/// pages of its range. Overlapping operations in flight together have no
/// defined order anyway. Flushes (`fdatasync`) and discards (punching a
/// hole) apply to the file, whichever descriptor carries them.
///
/// On a memory filesystem (tmpfs, ramfs, hugetlbfs) that cannot do
/// non-blocking I/O (no `RWF_NOWAIT`: io_uring would hand every read and
/// write to a kernel worker thread, two thread wakeups per I/O for a copy of
/// a microsecond or so), reads and writes are done inline instead
/// ([`UringDisk::inline`]): [`DiskQueue::submit`] does them with
/// `preadv`/`pwritev` in the calling thread, one after the other, and
/// [`DiskQueue::reap`] hands them back as usual. Flushes and discards still
/// go through io_uring.
#[derive(Debug)]
pub struct UringDisk {
    /// File 0 carries every operation it can; with `O_DIRECT`, file 1 is
    /// the buffered descriptor for misaligned ones.
    files: Arc<[File]>,
    info: DiskInfo,
    /// The `O_DIRECT` alignments of file 0, `None` when buffered.
    dio: Option<Align>,
    /// Reads and writes are done inline (see the type's docs).
    inline: bool,
}

impl UringDisk {
    /// Opens the image at `path`. Its size must be a non-zero multiple of
    /// 512 bytes.
    pub fn open(path: impl AsRef<Path>, opts: FileOptions) -> Result<UringDisk, DiskError> {
        let path = path.as_ref();
        let buffered = open_file(path, opts.readonly, false).map_err(DiskError::Io)?;
        let meta = buffered.metadata().map_err(DiskError::Io)?;
        let kind = meta.file_type();
        if !kind.is_file() && !kind.is_block_device() {
            return Err(DiskError::Invalid("not a regular file or block device"));
        }
        // Seeking also sizes a block device (whose metadata says 0).
        let len = (&buffered).seek(SeekFrom::End(0)).map_err(DiskError::Io)?;
        if len == 0 {
            return Err(DiskError::Invalid("the image is empty"));
        }
        if !len.is_multiple_of(SECTOR_SIZE) {
            return Err(DiskError::Invalid(
                "the image size is not a multiple of 512 bytes",
            ));
        }

        let direct = match opts.direct {
            DirectIo::Never => None,
            DirectIo::Auto => match open_direct(path, opts.readonly) {
                Ok(d) => Some(d),
                Err(e) if refuses_direct(&e) => None,
                Err(e) => return Err(DiskError::Io(e)),
            },
            DirectIo::Always => Some(open_direct(path, opts.readonly).map_err(|e| {
                DiskError::Io(io::Error::new(
                    e.kind(),
                    format!("O_DIRECT unavailable for {}: {e}", path.display()),
                ))
            })?),
        };

        let (files, dio): (Arc<[File]>, _) = match direct {
            Some((file, align)) => (Arc::from([file, buffered]), Some(align)),
            None => (Arc::from([buffered]), None),
        };
        // The logical sector is the direct-I/O offset alignment, if the
        // image is made of whole ones and Linux can use it (<= a page).
        let sector_size = match dio {
            Some(a) if a.len <= PAGE_SIZE && len.is_multiple_of(a.len as u64) => {
                (a.len as u32).max(SECTOR_SIZE as u32)
            }
            _ => SECTOR_SIZE as u32,
        };
        let inline = on_memory_fs(&files[0]) && sys::nowait_unsupported(&files[files.len() - 1]);
        let blksize = (meta.blksize() as u32).clamp(SECTOR_SIZE as u32, PAGE_SIZE as u32);
        let physical_sector_size = sector_size.max(blksize.next_power_of_two().min(4096));
        Ok(UringDisk {
            files,
            info: DiskInfo {
                sectors: len / SECTOR_SIZE,
                sector_size,
                physical_sector_size,
                readonly: opts.readonly,
                flush: true,
                discard: true,
                discard_granularity: physical_sector_size,
            },
            dio,
            inline,
        })
    }

    /// Whether the disk uses `O_DIRECT` (what [`DirectIo::Auto`] chose).
    pub fn direct(&self) -> bool {
        self.dio.is_some()
    }

    /// Whether reads and writes are done inline by the queue's thread
    /// rather than through io_uring (a memory filesystem without
    /// non-blocking I/O: see the type's docs).
    pub fn inline(&self) -> bool {
        self.inline
    }
}

/// Whether `file` lives in memory (tmpfs, ramfs, hugetlbfs), where a read
/// or write is a copy that never waits for a device.
fn on_memory_fs(file: &File) -> bool {
    use nix::sys::statfs::{FsType, HUGETLBFS_MAGIC, TMPFS_MAGIC, fstatfs};
    // Not in nix: linux/magic.h.
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
    match fstatfs(file).map(|s| s.filesystem_type()) {
        Ok(t) => t == TMPFS_MAGIC || t == HUGETLBFS_MAGIC || t == RAMFS_MAGIC,
        Err(_) => false,
    }
}

impl Disk for UringDisk {
    fn info(&self) -> DiskInfo {
        self.info
    }

    fn queue(&self, depth: u32) -> Result<Box<dyn DiskQueue>, DiskError> {
        let ring = Ring::new(depth, Arc::clone(&self.files), self.inline).map_err(DiskError::Io)?;
        Ok(Box::new(UringQueue {
            ring,
            info: self.info,
            dio: self.dio,
            ready: Vec::new(),
            finished: Vec::new(),
        }))
    }
}

fn open_file(path: &Path, readonly: bool, direct: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(!readonly);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path)
}

/// Opens `path` with `O_DIRECT` and returns it with its alignments, after
/// one aligned read proves the filesystem really does direct I/O (some
/// accept the flag at open and refuse the I/O).
fn open_direct(path: &Path, readonly: bool) -> io::Result<(File, Align)> {
    let file = open_file(path, readonly, true)?;
    let (mem, offset) = sys::dio_align(&file).unwrap_or((512, 512));
    let (mem, offset) = (mem as usize, offset as usize);
    if !mem.is_power_of_two() || !offset.is_power_of_two() || offset > 1 << 20 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut buf = vec![0u8; offset + mem];
    let start = buf.as_ptr().align_offset(mem);
    file.read_at(&mut buf[start..start + offset], 0)?;
    Ok((file, Align { mem, len: offset }))
}

/// Whether `e` means "this filesystem does not do O_DIRECT".
fn refuses_direct(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP))
}

/// A queue over one io_uring.
#[derive(Debug)]
struct UringQueue {
    ring: Ring,
    info: DiskInfo,
    dio: Option<Align>,
    /// Operations finished without reaching the kernel (invalid, or empty),
    /// not yet reaped. They count against the depth.
    ready: Vec<Completion>,
    /// Scratch for [`Ring::reap`].
    finished: Vec<Finished>,
}

impl UringQueue {
    /// Which file `op` goes to, and the memory alignment it needs there.
    fn route(&self, op: &DiskOp) -> (usize, Align) {
        let Some(dio) = self.dio else {
            return (0, Align::NONE);
        };
        let aligned = |n: u64| n.is_multiple_of(dio.len as u64);
        match op.kind {
            DiskOpKind::Read | DiskOpKind::Write
                if !aligned(op.sector * SECTOR_SIZE) || !aligned(op.bytes()) =>
            {
                (1, Align::NONE)
            }
            _ => (0, dio),
        }
    }

    fn push_bounced(&mut self, op: DiskOp, file: usize) -> Result<(), (DiskError, DiskOp)> {
        let bytes = op.bytes() as usize;
        let Some(bounce) = HeapMem::new(bytes.next_multiple_of(PAGE_SIZE)) else {
            return Err((DiskError::Io(io::ErrorKind::OutOfMemory.into()), op));
        };
        if op.kind == DiskOpKind::Write {
            let mut at = 0;
            for s in &op.segs {
                if let Err(e) = pvio_shmem::copy(&*s.mem, s.offset, &bounce, at, s.len) {
                    self.done(op, Err(DiskError::Memory(e)));
                    return Ok(());
                }
                at += s.len;
            }
        }
        match self.ring.push_bounced(op, bounce, file) {
            Ok(()) => Ok(()),
            Err(rejected) => self.rejected(rejected),
        }
    }

    fn rejected(&mut self, rejected: Rejected) -> Result<(), (DiskError, DiskOp)> {
        match rejected {
            Rejected::Full(op) => Err((DiskError::QueueFull, op)),
            Rejected::Invalid(op, why) => {
                self.done(op, Err(DiskError::Invalid(why)));
                Ok(())
            }
            // Only `push` can ask for a bounce, and a bounced op never does.
            Rejected::NeedsBounce(op) => {
                self.done(op, Err(DiskError::Invalid("cannot bounce the operation")));
                Ok(())
            }
        }
    }

    fn done(&mut self, op: DiskOp, result: Result<(), DiskError>) {
        self.ready.push(Completion {
            tag: op.tag,
            result,
            op,
        });
    }

    /// Moves what the ring has finished to `out`, and starts the remainders
    /// of short transfers.
    fn collect(&mut self, out: &mut Vec<Completion>) -> Result<(), DiskError> {
        self.ring.reap(&mut self.finished);
        for f in self.finished.drain(..) {
            let Finished { op, bounce, result } = f;
            let mut result = result.map_err(DiskError::Io);
            if let (Ok(()), DiskOpKind::Read, Some(b)) = (&result, op.kind, &bounce) {
                let mut at = 0;
                for s in &op.segs {
                    if let Err(e) = pvio_shmem::copy(b, at, &*s.mem, s.offset, s.len) {
                        result = Err(DiskError::Memory(e));
                        break;
                    }
                    at += s.len;
                }
            }
            out.push(Completion {
                tag: op.tag,
                result,
                op,
            });
        }
        if self.ring.resubmitted() {
            self.ring.submit().map_err(DiskError::Io)?;
        }
        Ok(())
    }
}

impl DiskQueue for UringQueue {
    fn push(&mut self, op: DiskOp) -> Result<(), (DiskError, DiskOp)> {
        if self.room() == 0 {
            return Err((DiskError::QueueFull, op));
        }
        if let Err(e) = op.validate(&self.info) {
            self.done(op, Err(e));
            return Ok(());
        }
        if matches!(op.kind, DiskOpKind::Read | DiskOpKind::Write) && op.segs.is_empty() {
            self.done(op, Ok(()));
            return Ok(());
        }
        let (file, align) = self.route(&op);
        match self.ring.push(op, file, align) {
            Ok(()) => Ok(()),
            Err(Rejected::NeedsBounce(op)) => self.push_bounced(op, file),
            Err(rejected) => self.rejected(rejected),
        }
    }

    fn submit(&mut self) -> Result<usize, DiskError> {
        self.ring.submit().map_err(DiskError::Io)
    }

    fn reap(&mut self, min: usize, out: &mut Vec<Completion>) -> Result<usize, DiskError> {
        let start = out.len();
        let want = min.min(self.in_flight());
        out.append(&mut self.ready);
        loop {
            self.collect(out)?;
            let got = out.len() - start;
            let pending = self.ring.in_flight();
            if got >= want || pending == 0 {
                return Ok(got);
            }
            // Each slot in flight has exactly one submission outstanding, so
            // up to `pending` completions will come.
            self.ring
                .wait((want - got).min(pending))
                .map_err(DiskError::Io)?;
        }
    }

    fn reap_timeout(
        &mut self,
        min: usize,
        timeout: Duration,
        out: &mut Vec<Completion>,
    ) -> Result<usize, DiskError> {
        let start = out.len();
        let want = min.min(self.in_flight());
        out.append(&mut self.ready);
        self.collect(out)?;
        let got = out.len() - start;
        let pending = self.ring.in_flight();
        if got >= want || pending == 0 {
            return Ok(got);
        }
        // One bounded wait (ETIME when it runs out), then whatever came.
        self.ring
            .wait_timeout((want - got).min(pending), timeout)
            .map_err(DiskError::Io)?;
        self.collect(out)?;
        Ok(out.len() - start)
    }

    fn in_flight(&self) -> usize {
        self.ring.in_flight() + self.ready.len()
    }

    fn room(&self) -> usize {
        self.ring.room().saturating_sub(self.ready.len())
    }
}
