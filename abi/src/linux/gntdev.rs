//! `/dev/xen/gntdev`: map or copy grants of other domains (backend side).
//!
//! Follows spec/grant.md §5.1 and Linux `include/uapi/xen/gntdev.h`.
//! Workflow: `IOCTL_GNTDEV_MAP_GRANT_REF` → `mmap(index)` → `munmap` →
//! `IOCTL_GNTDEV_UNMAP_GRANT_REF`.

use super::ioc_none;
use crate::types::{DomId, GrantRef};
use bytemuck::{Pod, Zeroable};

/// `ioctl_gntdev_grant_ref`, 8 bytes: one (domain, grant) pair to map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IoctlGntdevGrantRef {
    /// **\[in\]** Granting domain (32-bit here, unlike `domid_t`).
    pub domid: u32,
    /// **\[in\]** Grant reference.
    pub ref_: u32,
}

/// `ioctl_gntdev_map_grant_ref` with `count` = 1, 24 bytes.
///
/// For `count` > 1 the ioctl takes this header followed by `count` refs
/// (see [`ioctl_gntdev_map_grant_ref_size`]); the ioctl number encodes the
/// one-ref size regardless.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IoctlGntdevMapGrantRef {
    /// **\[in\]** Number of grants (> 0).
    pub count: u32,
    /// Padding (C `pad`).
    pub pad: u32,
    /// **\[out\]** Offset to pass to `mmap`.
    pub index: u64,
    /// **\[in\]** The grants (`refs[count]` in C).
    pub refs: [IoctlGntdevGrantRef; 1],
}

/// Offset of `refs` in [`IoctlGntdevMapGrantRef`].
pub const IOCTL_GNTDEV_MAP_GRANT_REF_REFS_OFFSET: usize = 16;

/// Bytes of an `ioctl_gntdev_map_grant_ref` argument with `count` refs
/// (at least one ref's worth); saturates instead of overflowing.
#[inline]
pub const fn ioctl_gntdev_map_grant_ref_size(count: usize) -> usize {
    let n = if count == 0 { 1 } else { count };
    match n.checked_mul(core::mem::size_of::<IoctlGntdevGrantRef>()) {
        Some(b) => IOCTL_GNTDEV_MAP_GRANT_REF_REFS_OFFSET.saturating_add(b),
        None => usize::MAX,
    }
}

/// `ioctl_gntdev_unmap_grant_ref`, 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IoctlGntdevUnmapGrantRef {
    /// **\[in\]** `index` returned by the map.
    pub index: u64,
    /// **\[in\]** Number of pages.
    pub count: u32,
    /// Padding (C `pad`).
    pub pad: u32,
}

/// `ioctl_gntdev_get_offset_for_vaddr`, 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IoctlGntdevGetOffsetForVaddr {
    /// **\[in\]** Address of the first mapped page.
    pub vaddr: u64,
    /// **\[out\]** Offset used in the `mmap`.
    pub offset: u64,
    /// **\[out\]** Number of pages mapped there.
    pub count: u32,
    /// Padding (C `pad`).
    pub pad: u32,
}

/// `ioctl_gntdev_set_max_grants`, 4 bytes (legacy; ignored by newer
/// kernels).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IoctlGntdevSetMaxGrants {
    /// **\[in\]** Maximum grants mapped at once.
    pub count: u32,
}

/// `ioctl_gntdev_unmap_notify`, 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IoctlGntdevUnmapNotify {
    /// **\[in\]** File offset of a byte in a mapped page.
    pub index: u64,
    /// **\[in\]** `UNMAP_NOTIFY_*`.
    pub action: u32,
    /// **\[in\]** Port to signal with `UNMAP_NOTIFY_SEND_EVENT`.
    pub event_channel_port: u32,
}

/// One side of a [`GntdevGrantCopySegment`]: the C union
/// `{ void *virt; struct { grant_ref_t ref; u16 offset; domid_t domid; } foreign; }`,
/// 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GntdevCopyPtr {
    /// Raw union: a local address (`virt`), or `foreign.ref` (bits 0..32),
    /// `foreign.offset` (bits 32..48), `foreign.domid` (bits 48..64).
    pub raw: u64,
}

/// The `foreign` member of [`GntdevCopyPtr`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GntdevCopyForeign {
    /// Grant reference.
    pub ref_: GrantRef,
    /// Offset within the granted page.
    pub offset: u16,
    /// Granting domain.
    pub domid: DomId,
}

impl GntdevCopyPtr {
    /// A local buffer address (`virt`).
    #[inline]
    pub const fn virt(addr: u64) -> Self {
        GntdevCopyPtr { raw: addr }
    }
    /// A foreign grant (`foreign`); set the matching `GNTCOPY_*_gref` flag.
    #[inline]
    pub fn foreign(ref_: GrantRef, offset: u16, domid: DomId) -> Self {
        bytemuck::cast(GntdevCopyForeign {
            ref_,
            offset,
            domid,
        })
    }
    /// The union read as `virt`.
    #[inline]
    pub const fn as_virt(&self) -> u64 {
        self.raw
    }
    /// The union read as `foreign`.
    #[inline]
    pub fn as_foreign(&self) -> GntdevCopyForeign {
        bytemuck::cast(*self)
    }
}

/// `gntdev_grant_copy_segment`, 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GntdevGrantCopySegment {
    /// **\[in\]** Source.
    pub source: GntdevCopyPtr,
    /// **\[in\]** Destination.
    pub dest: GntdevCopyPtr,
    /// **\[in\]** Bytes; a foreign side must not cross its page.
    pub len: u16,
    /// **\[in\]** `GNTCOPY_source_gref` / `GNTCOPY_dest_gref`.
    pub flags: u16,
    /// **\[out\]** `GNTST_*` (valid when the ioctl returned 0).
    pub status: i16,
    /// Padding.
    pub _pad0: [u8; 2],
}

/// `ioctl_gntdev_grant_copy`, 16 bytes on x86_64.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IoctlGntdevGrantCopy {
    /// **\[in\]** Number of segments.
    pub count: u32,
    /// Padding.
    pub _pad0: [u8; 4],
    /// **\[in\]** Address of `count` [`GntdevGrantCopySegment`]s.
    pub segments: u64,
}

/// `ioctl_gntdev_dmabuf_exp_from_refs` with one ref, 20 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IoctlGntdevDmabufExpFromRefs {
    /// **\[in\]** `GNTDEV_DMA_FLAG_*`.
    pub flags: u32,
    /// **\[in\]** Number of refs.
    pub count: u32,
    /// **\[out\]** dma-buf file descriptor.
    pub fd: u32,
    /// **\[in\]** Granting domain.
    pub domid: u32,
    /// **\[in\]** Grants (`refs[count]`).
    pub refs: [u32; 1],
}

/// `ioctl_gntdev_dmabuf_exp_wait_released`, 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IoctlGntdevDmabufExpWaitReleased {
    /// **\[in\]** dma-buf file descriptor.
    pub fd: u32,
    /// **\[in\]** Timeout in ms.
    pub wait_to_ms: u32,
}

/// `ioctl_gntdev_dmabuf_imp_to_refs` with one ref, 20 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IoctlGntdevDmabufImpToRefs {
    /// **\[in\]** dma-buf file descriptor.
    pub fd: u32,
    /// **\[in\]** Number of refs.
    pub count: u32,
    /// **\[in\]** Domain to grant to.
    pub domid: u32,
    /// Reserved, 0.
    pub reserved: u32,
    /// **\[out\]** Grants (`refs[count]`).
    pub refs: [u32; 1],
}

/// `ioctl_gntdev_dmabuf_imp_release`, 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IoctlGntdevDmabufImpRelease {
    /// **\[in\]** dma-buf file descriptor.
    pub fd: u32,
    /// Reserved, 0.
    pub reserved: u32,
}

/// `GNTDEV_DMA_FLAG_WC`: write-combining dma-buf.
pub const GNTDEV_DMA_FLAG_WC: u32 = 1 << 0;
/// `GNTDEV_DMA_FLAG_COHERENT`: coherent dma-buf.
pub const GNTDEV_DMA_FLAG_COHERENT: u32 = 1 << 1;

/// `IOCTL_GNTDEV_MAP_GRANT_REF` ([`IoctlGntdevMapGrantRef`]).
pub const IOCTL_GNTDEV_MAP_GRANT_REF: u32 = 0x0018_4700;
/// `IOCTL_GNTDEV_UNMAP_GRANT_REF` ([`IoctlGntdevUnmapGrantRef`]).
pub const IOCTL_GNTDEV_UNMAP_GRANT_REF: u32 = 0x0010_4701;
/// `IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR` ([`IoctlGntdevGetOffsetForVaddr`]).
pub const IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR: u32 = 0x0018_4702;
/// `IOCTL_GNTDEV_SET_MAX_GRANTS` ([`IoctlGntdevSetMaxGrants`]; legacy).
pub const IOCTL_GNTDEV_SET_MAX_GRANTS: u32 = 0x0004_4703;
/// `IOCTL_GNTDEV_SET_UNMAP_NOTIFY` ([`IoctlGntdevUnmapNotify`]).
pub const IOCTL_GNTDEV_SET_UNMAP_NOTIFY: u32 = 0x0010_4707;
/// `IOCTL_GNTDEV_GRANT_COPY` ([`IoctlGntdevGrantCopy`]).
pub const IOCTL_GNTDEV_GRANT_COPY: u32 = 0x0010_4708;
/// `IOCTL_GNTDEV_DMABUF_EXP_FROM_REFS` ([`IoctlGntdevDmabufExpFromRefs`]).
pub const IOCTL_GNTDEV_DMABUF_EXP_FROM_REFS: u32 = 0x0014_4709;
/// `IOCTL_GNTDEV_DMABUF_EXP_WAIT_RELEASED`
/// ([`IoctlGntdevDmabufExpWaitReleased`]).
pub const IOCTL_GNTDEV_DMABUF_EXP_WAIT_RELEASED: u32 = 0x0008_470a;
/// `IOCTL_GNTDEV_DMABUF_IMP_TO_REFS` ([`IoctlGntdevDmabufImpToRefs`]).
pub const IOCTL_GNTDEV_DMABUF_IMP_TO_REFS: u32 = 0x0014_470b;
/// `IOCTL_GNTDEV_DMABUF_IMP_RELEASE` ([`IoctlGntdevDmabufImpRelease`]).
pub const IOCTL_GNTDEV_DMABUF_IMP_RELEASE: u32 = 0x0008_470c;

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<IoctlGntdevGrantRef>() == 8);
    assert!(offset_of!(IoctlGntdevGrantRef, ref_) == 4);
    assert!(size_of::<IoctlGntdevMapGrantRef>() == 24);
    assert!(offset_of!(IoctlGntdevMapGrantRef, pad) == 4);
    assert!(offset_of!(IoctlGntdevMapGrantRef, index) == 8);
    assert!(offset_of!(IoctlGntdevMapGrantRef, refs) == IOCTL_GNTDEV_MAP_GRANT_REF_REFS_OFFSET);
    assert!(size_of::<IoctlGntdevUnmapGrantRef>() == 16);
    assert!(offset_of!(IoctlGntdevUnmapGrantRef, count) == 8);
    assert!(size_of::<IoctlGntdevGetOffsetForVaddr>() == 24);
    assert!(offset_of!(IoctlGntdevGetOffsetForVaddr, offset) == 8);
    assert!(offset_of!(IoctlGntdevGetOffsetForVaddr, count) == 16);
    assert!(size_of::<IoctlGntdevSetMaxGrants>() == 4);
    assert!(size_of::<IoctlGntdevUnmapNotify>() == 16);
    assert!(offset_of!(IoctlGntdevUnmapNotify, action) == 8);
    assert!(offset_of!(IoctlGntdevUnmapNotify, event_channel_port) == 12);
    assert!(size_of::<GntdevCopyForeign>() == 8);
    assert!(offset_of!(GntdevCopyForeign, offset) == 4);
    assert!(offset_of!(GntdevCopyForeign, domid) == 6);
    assert!(size_of::<GntdevCopyPtr>() == 8);
    assert!(size_of::<GntdevGrantCopySegment>() == 24);
    assert!(offset_of!(GntdevGrantCopySegment, dest) == 8);
    assert!(offset_of!(GntdevGrantCopySegment, len) == 16);
    assert!(offset_of!(GntdevGrantCopySegment, flags) == 18);
    assert!(offset_of!(GntdevGrantCopySegment, status) == 20);
    assert!(size_of::<IoctlGntdevDmabufExpFromRefs>() == 20);
    assert!(size_of::<IoctlGntdevDmabufExpWaitReleased>() == 8);
    assert!(size_of::<IoctlGntdevDmabufImpToRefs>() == 20);
    assert!(size_of::<IoctlGntdevDmabufImpRelease>() == 8);

    assert!(IOCTL_GNTDEV_MAP_GRANT_REF == ioc_none(b'G', 0, size_of::<IoctlGntdevMapGrantRef>()));
    assert!(
        IOCTL_GNTDEV_UNMAP_GRANT_REF == ioc_none(b'G', 1, size_of::<IoctlGntdevUnmapGrantRef>())
    );
    assert!(
        IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR
            == ioc_none(b'G', 2, size_of::<IoctlGntdevGetOffsetForVaddr>())
    );
    assert!(IOCTL_GNTDEV_SET_MAX_GRANTS == ioc_none(b'G', 3, size_of::<IoctlGntdevSetMaxGrants>()));
    assert!(
        IOCTL_GNTDEV_SET_UNMAP_NOTIFY == ioc_none(b'G', 7, size_of::<IoctlGntdevUnmapNotify>())
    );
    assert!(
        IOCTL_GNTDEV_DMABUF_EXP_FROM_REFS
            == ioc_none(b'G', 9, size_of::<IoctlGntdevDmabufExpFromRefs>())
    );
    assert!(
        IOCTL_GNTDEV_DMABUF_EXP_WAIT_RELEASED
            == ioc_none(b'G', 10, size_of::<IoctlGntdevDmabufExpWaitReleased>())
    );
    assert!(
        IOCTL_GNTDEV_DMABUF_IMP_TO_REFS
            == ioc_none(b'G', 11, size_of::<IoctlGntdevDmabufImpToRefs>())
    );
    assert!(
        IOCTL_GNTDEV_DMABUF_IMP_RELEASE
            == ioc_none(b'G', 12, size_of::<IoctlGntdevDmabufImpRelease>())
    );
};

/// Layouts with a pointer (`segments`).
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<IoctlGntdevGrantCopy>() == 16);
    assert!(offset_of!(IoctlGntdevGrantCopy, segments) == 8);
    assert!(IOCTL_GNTDEV_GRANT_COPY == ioc_none(b'G', 8, size_of::<IoctlGntdevGrantCopy>()));
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_ptr_foreign_layout() {
        let p = GntdevCopyPtr::foreign(GrantRef(0x0102_0304), 0x0506, DomId(0x0708));
        assert_eq!(p.raw, 0x0708_0506_0102_0304);
        assert_eq!(p.as_foreign().domid, DomId(0x0708));
        assert_eq!(GntdevCopyPtr::virt(0x1000).as_virt(), 0x1000);
    }

    #[test]
    fn map_size() {
        assert_eq!(ioctl_gntdev_map_grant_ref_size(0), 24);
        assert_eq!(ioctl_gntdev_map_grant_ref_size(1), 24);
        assert_eq!(ioctl_gntdev_map_grant_ref_size(4), 48);
        assert_eq!(ioctl_gntdev_map_grant_ref_size(usize::MAX), usize::MAX);
    }
}
