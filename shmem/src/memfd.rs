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
    /// An fd received from a peer lacks `F_SEAL_SHRINK` or `F_SEAL_GROW`:
    /// the peer could change its size under our mapping and make our
    /// accesses fault (SECURITY.md L3).
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
                "memfd is not sealed against shrinking and growing (seals {seals:#x}); refusing to map it"
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
/// carries `F_SEAL_SHRINK` and `F_SEAL_GROW`, so no peer can truncate the file under our mapping
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
    /// shrinking and growing (`F_SEAL_SHRINK | F_SEAL_GROW`: SECURITY.md L3);
    /// the size is taken from the file.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, MemfdError> {
        let seals = fcntl(&fd, FcntlArg::F_GET_SEALS).map_err(sys("F_GET_SEALS"))?;
        let need = (SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW).bits();
        if seals & need != need {
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

/// Receives bytes into `buf` from a Unix socket with `recvmsg`, and the file
/// descriptors sent with them (`SCM_RIGHTS`, at most `max_fds`), which
/// become owned here (close-on-exec). `Ok((0, _))` is end of stream.
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> std::io::Result<(usize, std::vec::Vec<OwnedFd>)> {
    use std::os::fd::{AsRawFd, FromRawFd, RawFd};

    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut cbuf = std::vec![0u8; nix::sys::socket::cmsg_space::<RawFd>() * max_fds.max(1)];
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let (n, raw) = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cbuf),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => {
                let mut raw: std::vec::Vec<RawFd> = std::vec::Vec::new();
                if let Ok(cmsgs) = m.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(v) = c {
                            raw.extend(v);
                        }
                    }
                }
                break (m.bytes, raw);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let fds = raw
        .into_iter()
        .map(|fd| {
            // SAFETY: the kernel just installed `fd` in this process for this
            // SCM_RIGHTS message; nothing else owns or closes it.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .collect();
    Ok((n, fds))
}
