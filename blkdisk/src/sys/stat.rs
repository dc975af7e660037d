//! `statx` for the direct-I/O alignment of a file (nix does not wrap it).

use std::fs::File;
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
