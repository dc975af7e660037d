//! `statx` for the direct-I/O alignment of a file (nix does not wrap it),
//! and a probe for non-blocking I/O support (`preadv2`).

use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;

/// The O_DIRECT alignments the kernel reports for `file` (`STATX_DIOALIGN`,
/// Linux 6.1): `(memory, file offset and length)` in bytes. `None` if the
/// kernel or filesystem does not say.
pub(crate) fn dio_align(file: &File) -> Option<(u32, u32)> {
    let mut stx = MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `stx` is a writable `statx` buffer that outlives the call, and
    // the path is a valid NUL-terminated (empty, with AT_EMPTY_PATH) string.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            stx.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: the buffer was zero-initialised (a valid `statx`: integers
    // only) and statx succeeded.
    let stx = unsafe { stx.assume_init() };
    let (mem, offset) = (stx.stx_dio_mem_align, stx.stx_dio_offset_align);
    (stx.stx_mask & libc::STATX_DIOALIGN != 0 && mem != 0 && offset != 0).then_some((mem, offset))
}

/// Whether the filesystem of `file` refuses non-blocking I/O
/// (`RWF_NOWAIT` fails with `EOPNOTSUPP`: the file has no `FMODE_NOWAIT`).
/// io_uring then hands every read and write on it to a kernel worker thread
/// instead of trying it inline. Probes one 512-byte read at offset 0 (pass
/// a buffered descriptor: no alignment needed).
pub(crate) fn nowait_unsupported(file: &File) -> bool {
    let mut buf = [0u8; 512];
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf`, a live, writable local buffer of
    // `iov_len` bytes, for the duration of this synchronous call.
    let rc = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, 0, libc::RWF_NOWAIT) };
    rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EOPNOTSUPP)
}
