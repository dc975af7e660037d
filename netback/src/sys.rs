//! The TAP ioctls (`linux/if_tun.h`): the only `unsafe` code of the crate.

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
