//! Linux user-space interfaces: the ioctl argument structures and numbers of
//! `/dev/xen/gntdev` ([`gntdev`]), `/dev/xen/gntalloc` ([`gntalloc`]) and
//! `/dev/xen/evtchn` ([`evtchn_dev`]).
//!
//! Follows spec/grant.md §5, spec/evtchn.md §5 and the Linux UAPI headers
//! `xen/gntdev.h`, `xen/gntalloc.h`, `xen/evtchn.h`. Ioctl numbers are the
//! x86_64 values; pointer-sized fields are 64 bits.

pub mod evtchn_dev;
pub mod gntalloc;
pub mod gntdev;

/// `_IOC(_IOC_NONE, ty, nr, size)` on x86 (direction bits 0):
/// `size << 16 | ty << 8 | nr`. `size` is truncated to the 14-bit field.
#[inline]
pub const fn ioc_none(ty: u8, nr: u8, size: usize) -> u32 {
    (((size as u32) & 0x3FFF) << 16) | ((ty as u32) << 8) | nr as u32
}

/// `UNMAP_NOTIFY_CLEAR_BYTE`: on unmap, write 0 to the byte at `index`.
pub const UNMAP_NOTIFY_CLEAR_BYTE: u32 = 0x1;
/// `UNMAP_NOTIFY_SEND_EVENT`: on unmap, signal `event_channel_port`.
pub const UNMAP_NOTIFY_SEND_EVENT: u32 = 0x2;
