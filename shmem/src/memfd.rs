use std::ffi::CStr;
use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use memmap2::MmapRaw;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};

use crate::raw::RawRegion;

/// Why a memfd region could not be created or adopted.
#[derive(Debug)]
pub enum MemfdError {
    /// A zero length was asked for.
    ZeroLength,
    /// A system call failed.
    Sys {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        err: std::io::Error,
    },
    /// An fd received from a peer lacks `F_SEAL_SHRINK`: the peer could
    /// truncate it and make our accesses fault (SECURITY.md L3).
    NotSealed {
        /// The seals the fd does have.
        seals: i32,
    },
}

impl fmt::Display for MemfdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemfdError::ZeroLength => write!(f, "a memfd region needs a non-zero length"),
            MemfdError::Sys { what, err } => write!(f, "{what}: {err}"),
            MemfdError::NotSealed { seals } => write!(
                f,
                "memfd is not sealed against shrinking (seals {seals:#x}); refusing to map it"
            ),
        }
    }
}

impl std::error::Error for MemfdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MemfdError::Sys { err, .. } => Some(err),
            _ => None,
        }
    }
}

fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> MemfdError {
    move |e| MemfdError::Sys {
        what,
        err: std::io::Error::from(e),
    }
}

/// Memory backed by a sealed memfd and mapped `MAP_SHARED`.
///
/// The fd can be passed to another process (over a Unix socket with
/// `SCM_RIGHTS`), which maps the same pages with [`MemfdMem::from_fd`]. The
/// size is fixed: regions created here are sealed with `F_SEAL_SHRINK`,
/// `F_SEAL_GROW` and `F_SEAL_SEAL`, and an fd from a peer is mapped only if it
/// carries `F_SEAL_SHRINK`, so no peer can truncate the file under our mapping
/// and turn our accesses into `SIGBUS`.
#[derive(Debug)]
pub struct MemfdMem {
    // `raw` points into `map`: declared first so it is dropped first.
    raw: RawRegion,
    map: MmapRaw,
    fd: OwnedFd,
}

impl MemfdMem {
    /// Creates a zeroed, sealed memfd region of `len` bytes named `name`
    /// (the name shows in `/proc/PID/fd`).
    pub fn new(name: &CStr, len: usize) -> Result<Self, MemfdError> {
        if len == 0 {
            return Err(MemfdError::ZeroLength);
        }
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
            .map_err(sys("memfd_create"))?;
        let size = i64::try_from(len).map_err(|_| MemfdError::Sys {
            what: "memfd size",
            err: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
        nix::unistd::ftruncate(&fd, size).map_err(sys("ftruncate memfd"))?;
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
            ),
        )
        .map_err(sys("seal memfd"))?;
        Self::map(fd, len)
    }

    /// Maps a memfd received from a peer. Fails unless it is sealed against
    /// shrinking; the size is taken from the file.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, MemfdError> {
        let seals = fcntl(&fd, FcntlArg::F_GET_SEALS).map_err(sys("F_GET_SEALS"))?;
        if seals & SealFlag::F_SEAL_SHRINK.bits() == 0 {
            return Err(MemfdError::NotSealed { seals });
        }
        let st = nix::sys::stat::fstat(&fd).map_err(sys("fstat memfd"))?;
        let len = usize::try_from(st.st_size).unwrap_or(0);
        if len == 0 {
            return Err(MemfdError::ZeroLength);
        }
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Self, MemfdError> {
        let file = File::from(fd);
        let map = memmap2::MmapOptions::new()
            .len(len)
            .map_raw(&file)
            .map_err(|err| MemfdError::Sys {
                what: "mmap memfd",
                err,
            })?;
        let base = NonNull::new(map.as_mut_ptr()).ok_or(MemfdError::ZeroLength)?;
        // SAFETY: `map` is a MAP_SHARED read/write mapping of `len` bytes that
        // lives as long as the returned value (it is a field, dropped after
        // `raw`); the file cannot shrink (sealed, checked or set above), so
        // every page stays backed; no reference into it is ever created.
        let raw = unsafe { RawRegion::new(base, len) }.ok_or(MemfdError::Sys {
            what: "mmap returned an address that is not page-aligned",
            err: std::io::Error::from(std::io::ErrorKind::InvalidData),
        })?;
        Ok(MemfdMem {
            raw,
            map,
            fd: OwnedFd::from(file),
        })
    }

    #[inline]
    fn raw(&self) -> &RawRegion {
        &self.raw
    }

    /// The memfd, to pass to a peer (duplicate it with `try_clone_to_owned`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the mapping is empty (never true for a constructed region).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }
}

crate::impl_shared_mem_via_raw!(MemfdMem);
