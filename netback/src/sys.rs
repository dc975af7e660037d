//! The TAP ioctls (`linux/if_tun.h`) and the io_uring TAP writer: the only
//! `unsafe` code of the crate.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

/// `IFF_TAP`.
const IFF_TAP: libc::c_short = 0x0002;
/// `IFF_NO_PI`.
const IFF_NO_PI: libc::c_short = 0x1000;
/// `IFF_VNET_HDR`.
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// `TUN_F_CSUM`.
pub(crate) const TUN_F_CSUM: libc::c_ulong = 0x01;
/// `TUN_F_TSO4`.
pub(crate) const TUN_F_TSO4: libc::c_ulong = 0x02;
/// `TUN_F_TSO6`.
pub(crate) const TUN_F_TSO6: libc::c_ulong = 0x04;

// TUNSETIFF = _IOW('T', 202, int), argument: struct ifreq *.
nix::ioctl_write_ptr_bad!(
    tun_set_iff,
    nix::request_code_write!(b'T', 202, std::mem::size_of::<libc::c_int>()),
    libc::ifreq
);
// TUNSETPERSIST = _IOW('T', 203, int), argument by value.
nix::ioctl_write_int!(tun_set_persist, b'T', 203);
// TUNSETOFFLOAD = _IOW('T', 208, unsigned int), argument by value.
nix::ioctl_write_int!(tun_set_offload, b'T', 208);
// TUNSETVNETHDRSZ = _IOW('T', 216, int), argument: int *.
nix::ioctl_write_ptr!(tun_set_vnet_hdr_sz, b'T', 216, libc::c_int);

/// Opens `/dev/net/tun` and attaches it to TAP device `name` (created if
/// missing) with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, a `vnet_hdr_len`
/// byte header, the given offloads, and optionally persistent. Returns the
/// file and the device's actual name.
pub(crate) fn open_tap(
    name: &str,
    vnet_hdr_len: i32,
    offloads: libc::c_ulong,
    persistent: bool,
) -> io::Result<(File, String)> {
    if name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let fd = file.as_raw_fd();
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    // SAFETY: `fd` is an open tun file and `ifr` a valid, initialised ifreq
    // that outlives the call.
    unsafe { tun_set_iff(fd, &ifr) }.map_err(io::Error::from)?;
    let sz: libc::c_int = vnet_hdr_len;
    // SAFETY: `fd` is an attached tun file; `sz` is a valid int.
    unsafe { tun_set_vnet_hdr_sz(fd, &sz) }.map_err(io::Error::from)?;
    // SAFETY: `fd` is an attached tun file; the argument is a flag word.
    unsafe { tun_set_offload(fd, offloads as _) }.map_err(io::Error::from)?;
    if persistent {
        // SAFETY: as above; 1 = persistent.
        unsafe { tun_set_persist(fd, 1) }.map_err(io::Error::from)?;
    }
    let actual: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok((file, String::from_utf8_lossy(&actual).into_owned()))
}

/// Clears the persistent flag (the device goes away when the last fd
/// closes).
pub(crate) fn unpersist(file: &File) -> io::Result<()> {
    // SAFETY: `file` is an attached tun file; 0 = not persistent.
    unsafe { tun_set_persist(file.as_raw_fd(), 0) }
        .map(drop)
        .map_err(io::Error::from)
}

/// Frames written to a TAP device in batches through io_uring: one system
/// call for a round of frames instead of one `writev` each (the device
/// takes them inline: tun honours `IOCB_NOWAIT`, so nothing goes to an
/// io-wq thread).
pub(crate) struct TapRing {
    ring: io_uring::IoUring,
    fd: std::os::fd::RawFd,
}

impl std::fmt::Debug for TapRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapRing").field("fd", &self.fd).finish()
    }
}

impl TapRing {
    /// Frames per submission.
    pub(crate) const DEPTH: usize = 64;

    /// A ring writing to `file` (which must outlive the ring: the caller
    /// keeps both in one struct and drops the ring first).
    pub(crate) fn new(file: &File) -> io::Result<TapRing> {
        let ring = io_uring::IoUring::builder()
            .setup_coop_taskrun()
            .build(Self::DEPTH as u32)
            .or_else(|_| io_uring::IoUring::new(Self::DEPTH as u32))?;
        Ok(TapRing {
            ring,
            fd: file.as_raw_fd(),
        })
    }

    /// Writes each frame (its vnet header, then the frame) as one packet;
    /// at most [`TapRing::DEPTH`] frames. Returns how many writes failed or
    /// were short. An error is the ring's own: nothing is known to be
    /// written, the frames are leaked (the kernel may still read them) and
    /// the ring must not be used again.
    pub(crate) fn write_batch(
        &mut self,
        frames: Vec<([u8; 10], bytes::Bytes)>,
    ) -> io::Result<usize> {
        if frames.len() > Self::DEPTH {
            return Err(io::Error::other("TAP batch larger than the ring"));
        }
        let n = frames.len();
        let iovs: Vec<[libc::iovec; 2]> = frames
            .iter()
            .map(|(h, d)| {
                [
                    libc::iovec {
                        iov_base: h.as_ptr() as *mut libc::c_void,
                        iov_len: h.len(),
                    },
                    libc::iovec {
                        iov_base: d.as_ptr() as *mut libc::c_void,
                        iov_len: d.len(),
                    },
                ]
            })
            .collect();
        for (i, iov) in iovs.iter().enumerate() {
            let e = io_uring::opcode::Writev::new(io_uring::types::Fd(self.fd), iov.as_ptr(), 2)
                .build()
                .user_data(i as u64);
            // SAFETY: the iovecs (`iovs`) and the memory they name (the
            // headers and `Bytes` in `frames`, neither moved nor mutated
            // here) live until every submitted write has completed: the
            // loop below returns only then, or leaks both if the ring
            // fails. The fd outlives the ring (`new`'s contract). Room is
            // certain: n <= DEPTH and every earlier call drained the ring.
            if unsafe { self.ring.submission().push(&e) }.is_err() {
                std::mem::forget((iovs, frames));
                return Err(io::Error::other("TAP ring full"));
            }
        }
        let mut done = 0;
        let mut bad = 0;
        while done < n {
            match self.ring.submit_and_wait(n - done) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
                    ) => {}
                Err(e) => {
                    // Writes may still be in flight: their memory must
                    // never be freed.
                    std::mem::forget((iovs, frames));
                    return Err(e);
                }
            }
            for c in self.ring.completion() {
                done += 1;
                let want = frames
                    .get(c.user_data() as usize)
                    .map_or(0, |(h, d)| h.len() + d.len());
                if usize::try_from(c.result()).ok() != Some(want) {
                    bad += 1;
                }
            }
        }
        Ok(bad)
    }
}
