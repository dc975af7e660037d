//! `/dev/xen/gntalloc`: grant this process's own pages to another domain
//! (frontend side).
//!
//! Follows spec/grant.md §5.2 and Linux `include/uapi/xen/gntalloc.h`.

use super::ioc_none;
use bytemuck::{Pod, Zeroable};

/// `ioctl_gntalloc_alloc_gref` with `count` = 1, 24 bytes on x86_64 (tail
/// padding included; 20 on i386).
///
/// For `count` > 1 the argument is 16 header bytes followed by `count`
/// u32 refs; the ioctl number encodes the one-ref size regardless.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IoctlGntallocAllocGref {
    /// **\[in\]** Domain to grant the pages to.
    pub domid: u16,
    /// **\[in\]** `GNTALLOC_FLAG_*`.
    pub flags: u16,
    /// **\[in\]** Number of pages.
    pub count: u32,
    /// **\[out\]** Offset to pass to `mmap`.
    pub index: u64,
    /// **\[out\]** The new grant references (`gref_ids[count]`).
    pub gref_ids: [u32; 1],
    /// Tail padding (x86_64).
    pub _pad0: [u8; 4],
}

/// Offset of `gref_ids` in [`IoctlGntallocAllocGref`].
pub const IOCTL_GNTALLOC_ALLOC_GREF_IDS_OFFSET: usize = 16;

/// `GNTALLOC_FLAG_WRITABLE`: grant writable (default read-only).
pub const GNTALLOC_FLAG_WRITABLE: u16 = 1;

/// `ioctl_gntalloc_dealloc_gref`, 16 bytes on x86_64 (12 on i386).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IoctlGntallocDeallocGref {
    /// **\[in\]** `index` returned by the allocation.
    pub index: u64,
    /// **\[in\]** Number of pages.
    pub count: u32,
    /// Tail padding (x86_64).
    pub _pad0: [u8; 4],
}

/// `ioctl_gntalloc_unmap_notify`, 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IoctlGntallocUnmapNotify {
    /// **\[in\]** File offset of a byte in an allocated page.
    pub index: u64,
    /// **\[in\]** `UNMAP_NOTIFY_*`.
    pub action: u32,
    /// **\[in\]** Port to signal with `UNMAP_NOTIFY_SEND_EVENT`.
    pub event_channel_port: u32,
}

/// `IOCTL_GNTALLOC_ALLOC_GREF` (x86_64; i386: 0x00144705).
pub const IOCTL_GNTALLOC_ALLOC_GREF: u32 = 0x0018_4705;
/// `IOCTL_GNTALLOC_DEALLOC_GREF` (x86_64; i386: 0x000c4706).
pub const IOCTL_GNTALLOC_DEALLOC_GREF: u32 = 0x0010_4706;
/// `IOCTL_GNTALLOC_SET_UNMAP_NOTIFY` (same number as gntdev's).
pub const IOCTL_GNTALLOC_SET_UNMAP_NOTIFY: u32 = 0x0010_4707;

#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<IoctlGntallocAllocGref>() == 24);
    assert!(offset_of!(IoctlGntallocAllocGref, flags) == 2);
    assert!(offset_of!(IoctlGntallocAllocGref, count) == 4);
    assert!(offset_of!(IoctlGntallocAllocGref, index) == 8);
    assert!(offset_of!(IoctlGntallocAllocGref, gref_ids) == IOCTL_GNTALLOC_ALLOC_GREF_IDS_OFFSET);
    assert!(size_of::<IoctlGntallocDeallocGref>() == 16);
    assert!(offset_of!(IoctlGntallocDeallocGref, count) == 8);
    assert!(size_of::<IoctlGntallocUnmapNotify>() == 16);
    assert!(offset_of!(IoctlGntallocUnmapNotify, action) == 8);
    assert!(offset_of!(IoctlGntallocUnmapNotify, event_channel_port) == 12);
    assert!(IOCTL_GNTALLOC_ALLOC_GREF == ioc_none(b'G', 5, size_of::<IoctlGntallocAllocGref>()));
    assert!(
        IOCTL_GNTALLOC_DEALLOC_GREF == ioc_none(b'G', 6, size_of::<IoctlGntallocDeallocGref>())
    );
    assert!(
        IOCTL_GNTALLOC_SET_UNMAP_NOTIFY == ioc_none(b'G', 7, size_of::<IoctlGntallocUnmapNotify>())
    );
    assert!(IOCTL_GNTALLOC_SET_UNMAP_NOTIFY == super::gntdev::IOCTL_GNTDEV_SET_UNMAP_NOTIFY);
};
