//! Paravirtual block device (vbd): request, discard, indirect and response
//! layouts, operations, status codes and limits.
//!
//! Follows spec/blkif.md §1–2 and `io/blkif.h`. The structures here are the
//! x86_64 / Arm layout (protocol `"x86_64-abi"` / `"arm-abi"`); the i386
//! layout (`"x86_32-abi"`) is in [`x86_32`], with conversions.
//!
//! All sector numbers (and `first_sect`/`last_sect`) are in 512-byte units.
//! `Request`, `RequestDiscard` and `RequestIndirect` overlay the same ring
//! slot; pick by `operation` with [`Request::to_discard`] /
//! [`Request::to_indirect`] on a private copy of the slot.

use crate::ring::{ring_entry_size_of, ring_slots};
use crate::types::{GrantRef, PAGE_SIZE};
use bytemuck::{Pod, Zeroable};

pub mod x86_32;

/// `blkif_vdev_t`: virtual device handle.
pub type Vdev = u16;
/// `blkif_sector_t`: sector number in 512-byte units.
pub type Sector = u64;

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

/// `BLKIF_OP_READ`: read sectors into the segments.
pub const BLKIF_OP_READ: u8 = 0;
/// `BLKIF_OP_WRITE`: write sectors from the segments.
pub const BLKIF_OP_WRITE: u8 = 1;
/// `BLKIF_OP_WRITE_BARRIER`: ordered write (`feature-barrier`).
pub const BLKIF_OP_WRITE_BARRIER: u8 = 2;
/// `BLKIF_OP_FLUSH_DISKCACHE`: flush the volatile cache
/// (`feature-flush-cache`); may carry no segments.
pub const BLKIF_OP_FLUSH_DISKCACHE: u8 = 3;
/// `BLKIF_OP_RESERVED_1`: reserved.
pub const BLKIF_OP_RESERVED_1: u8 = 4;
/// `BLKIF_OP_DISCARD`: [`RequestDiscard`] (`feature-discard`).
pub const BLKIF_OP_DISCARD: u8 = 5;
/// `BLKIF_OP_INDIRECT`: [`RequestIndirect`]
/// (`feature-max-indirect-segments`).
pub const BLKIF_OP_INDIRECT: u8 = 6;

/// `BLKIF_MAX_SEGMENTS_PER_REQUEST`: segments of a direct request.
pub const BLKIF_MAX_SEGMENTS_PER_REQUEST: usize = 11;
/// `BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`: descriptor pages of an indirect
/// request.
pub const BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST: usize = 8;
/// Segments per indirect descriptor page (Linux `SEGS_PER_INDIRECT_FRAME`).
pub const SEGS_PER_INDIRECT_FRAME: usize = PAGE_SIZE / core::mem::size_of::<RequestSegment>();

/// `BLKIF_RSP_EOPNOTSUPP`: operation not supported.
pub const BLKIF_RSP_EOPNOTSUPP: i16 = -2;
/// `BLKIF_RSP_ERROR`: I/O error.
pub const BLKIF_RSP_ERROR: i16 = -1;
/// `BLKIF_RSP_OKAY`: success.
pub const BLKIF_RSP_OKAY: i16 = 0;

/// `BLKIF_DISCARD_SECURE`: [`RequestDiscard::flag`] (only with
/// `discard-secure` = 1).
pub const BLKIF_DISCARD_SECURE: u8 = 1 << 0;

/// `VDISK_CDROM`: `info` bit.
pub const VDISK_CDROM: u32 = 0x1;
/// `VDISK_REMOVABLE`: `info` bit.
pub const VDISK_REMOVABLE: u32 = 0x2;
/// `VDISK_READONLY`: `info` bit.
pub const VDISK_READONLY: u32 = 0x4;

/// log2 of the protocol sector size.
pub const SECTOR_SHIFT: u32 = 9;
/// Protocol sector size (512 bytes), whatever `sector-size` says.
pub const SECTOR_SIZE: usize = 1 << SECTOR_SHIFT;
/// Sectors per 4 KiB page: valid `last_sect` values are `0..8`.
pub const SECTORS_PER_PAGE: usize = PAGE_SIZE / SECTOR_SIZE;

// ---------------------------------------------------------------------------
// Structures (x86_64 / Arm)
// ---------------------------------------------------------------------------

/// `blkif_request_segment`, 8 bytes (all ABIs). **\[frontend\]** writes it.
///
/// Valid iff `first_sect <= last_sect <= 7`; covers bytes
/// `[first_sect * 512, (last_sect + 1) * 512)` of the page.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RequestSegment {
    /// Grant of the data page.
    pub gref: GrantRef,
    /// First sector in the page (inclusive).
    pub first_sect: u8,
    /// Last sector in the page (inclusive).
    pub last_sect: u8,
    /// Padding.
    pub _pad0: [u8; 2],
}

impl RequestSegment {
    /// Number of sectors, or `None` if the segment is invalid.
    #[inline]
    pub const fn sectors(&self) -> Option<u32> {
        if self.first_sect <= self.last_sect && (self.last_sect as usize) < SECTORS_PER_PAGE {
            Some((self.last_sect - self.first_sect) as u32 + 1)
        } else {
            None
        }
    }
}

/// `blkif_request` (read, write, barrier, flush), 112 bytes on x86_64.
/// **\[frontend\]** writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Request {
    /// `BLKIF_OP_*`.
    pub operation: u8,
    /// Number of valid entries in `seg` (0..=11).
    pub nr_segments: u8,
    /// Virtual device handle.
    pub handle: Vdev,
    /// Padding (x86_64 only).
    pub _pad0: [u8; 4],
    /// Opaque id echoed in the response.
    pub id: u64,
    /// Start sector.
    pub sector_number: Sector,
    /// Segments.
    pub seg: [RequestSegment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}

/// `blkif_request_discard`, 32 bytes on x86_64 (overlays [`Request`]).
/// **\[frontend\]** writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RequestDiscard {
    /// `BLKIF_OP_DISCARD`.
    pub operation: u8,
    /// 0 or `BLKIF_DISCARD_SECURE`.
    pub flag: u8,
    /// Virtual device handle.
    pub handle: Vdev,
    /// Padding (x86_64 only).
    pub _pad0: [u8; 4],
    /// Opaque id echoed in the response.
    pub id: u64,
    /// First sector.
    pub sector_number: Sector,
    /// Number of sectors.
    pub nr_sectors: u64,
}

/// `blkif_request_indirect`, 64 bytes (overlays [`Request`]).
/// **\[frontend\]** writes it; the segments live in the granted descriptor
/// pages ([`SEGS_PER_INDIRECT_FRAME`] per page).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RequestIndirect {
    /// `BLKIF_OP_INDIRECT`.
    pub operation: u8,
    /// `BLKIF_OP_READ` or `BLKIF_OP_WRITE`.
    pub indirect_op: u8,
    /// Number of segments (u16, unlike [`Request`]).
    pub nr_segments: u16,
    /// Padding (x86_64 only).
    pub _pad0: [u8; 4],
    /// Opaque id echoed in the response.
    pub id: u64,
    /// Start sector.
    pub sector_number: Sector,
    /// Virtual device handle (after `sector_number` here).
    pub handle: Vdev,
    /// Padding.
    pub _pad1: [u8; 2],
    /// Grants of the descriptor pages (read-only to the backend).
    pub indirect_grefs: [GrantRef; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
    /// Tail padding (x86_64; i386 has an explicit `u64 pad` here).
    pub _pad2: [u8; 4],
}

/// `blkif_response`, 16 bytes on x86_64. **\[backend\]** writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Response {
    /// `id` of the request.
    pub id: u64,
    /// Operation of the request (Linux echoes `indirect_op` for indirect).
    pub operation: u8,
    /// Padding.
    pub _pad0: u8,
    /// `BLKIF_RSP_*`.
    pub status: i16,
    /// Tail padding (x86_64 only).
    pub _pad1: [u8; 4],
}

impl Request {
    /// The first 32 bytes of this slot read as a discard request.
    #[inline]
    pub fn to_discard(&self) -> RequestDiscard {
        bytemuck::pod_read_unaligned(
            &bytemuck::bytes_of(self)[..core::mem::size_of::<RequestDiscard>()],
        )
    }
    /// The first 64 bytes of this slot read as an indirect request.
    #[inline]
    pub fn to_indirect(&self) -> RequestIndirect {
        bytemuck::pod_read_unaligned(
            &bytemuck::bytes_of(self)[..core::mem::size_of::<RequestIndirect>()],
        )
    }
}

/// A full ring slot holding `d` (remaining bytes zero).
impl From<RequestDiscard> for Request {
    fn from(d: RequestDiscard) -> Self {
        let mut r = Request::zeroed();
        bytemuck::bytes_of_mut(&mut r)[..core::mem::size_of::<RequestDiscard>()]
            .copy_from_slice(bytemuck::bytes_of(&d));
        r
    }
}

/// A full ring slot holding `i` (remaining bytes zero).
impl From<RequestIndirect> for Request {
    fn from(i: RequestIndirect) -> Self {
        let mut r = Request::zeroed();
        bytemuck::bytes_of_mut(&mut r)[..core::mem::size_of::<RequestIndirect>()]
            .copy_from_slice(bytemuck::bytes_of(&i));
        r
    }
}

// ---------------------------------------------------------------------------
// Ring
// ---------------------------------------------------------------------------

/// Ring entry size (union of [`Request`] and [`Response`]): 112 bytes.
pub const RING_ENTRY_SIZE: usize = ring_entry_size_of::<Request, Response>();
/// Slots of a one-page ring: 32.
pub const RING_SLOTS: u32 = ring_slots(PAGE_SIZE, RING_ENTRY_SIZE);
/// Largest `ring-page-order` Linux accepts (16 pages).
pub const MAX_RING_PAGE_ORDER: u32 = 4;

/// Slots of a ring of `2^order` pages: 32, 64, 128, 256, 512 for 0..=4
/// (same for the i386 layout).
#[inline]
pub const fn ring_slots_for_order(order: u32) -> u32 {
    crate::ring::ring_slots_for_order(order, RING_ENTRY_SIZE)
}

// ---------------------------------------------------------------------------
// Compile-time layout checks (spec/blkif.md §2, §6.4)
// ---------------------------------------------------------------------------

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<RequestSegment>() == 8);
    assert!(offset_of!(RequestSegment, first_sect) == 4);
    assert!(offset_of!(RequestSegment, last_sect) == 5);

    assert!(size_of::<Request>() == 112);
    assert!(offset_of!(Request, nr_segments) == 1);
    assert!(offset_of!(Request, handle) == 2);
    assert!(offset_of!(Request, id) == 8);
    assert!(offset_of!(Request, sector_number) == 16);
    assert!(offset_of!(Request, seg) == 24);

    assert!(size_of::<RequestDiscard>() == 32);
    assert!(offset_of!(RequestDiscard, flag) == 1);
    assert!(offset_of!(RequestDiscard, handle) == 2);
    assert!(offset_of!(RequestDiscard, id) == 8);
    assert!(offset_of!(RequestDiscard, sector_number) == 16);
    assert!(offset_of!(RequestDiscard, nr_sectors) == 24);

    assert!(size_of::<RequestIndirect>() == 64);
    assert!(offset_of!(RequestIndirect, indirect_op) == 1);
    assert!(offset_of!(RequestIndirect, nr_segments) == 2);
    assert!(offset_of!(RequestIndirect, id) == 8);
    assert!(offset_of!(RequestIndirect, sector_number) == 16);
    assert!(offset_of!(RequestIndirect, handle) == 24);
    assert!(offset_of!(RequestIndirect, indirect_grefs) == 28);

    assert!(size_of::<Response>() == 16);
    assert!(offset_of!(Response, operation) == 8);
    assert!(offset_of!(Response, status) == 10);

    assert!(RING_ENTRY_SIZE == 112);
    assert!(RING_SLOTS == 32);
    assert!(SEGS_PER_INDIRECT_FRAME == 512);
    assert!(ring_slots_for_order(MAX_RING_PAGE_ORDER) == 512);
    assert!(ring_slots_for_order(0) == ring_slots(PAGE_SIZE, RING_ENTRY_SIZE));
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_validation() {
        let s = |f, l| RequestSegment {
            gref: GrantRef(1),
            first_sect: f,
            last_sect: l,
            _pad0: [0; 2],
        };
        assert_eq!(s(0, 7).sectors(), Some(8));
        assert_eq!(s(3, 3).sectors(), Some(1));
        assert_eq!(s(4, 3).sectors(), None);
        assert_eq!(s(0, 8).sectors(), None);
    }

    #[test]
    fn overlays_roundtrip() {
        let d = RequestDiscard {
            operation: BLKIF_OP_DISCARD,
            flag: BLKIF_DISCARD_SECURE,
            handle: 0x51,
            id: 7,
            sector_number: 100,
            nr_sectors: 2048,
            ..Default::default()
        };
        let slot = Request::from(d);
        assert_eq!(slot.operation, BLKIF_OP_DISCARD);
        assert_eq!(slot.id, 7);
        assert_eq!(slot.to_discard(), d);
        let mut grefs = [GrantRef(0); 8];
        grefs[0] = GrantRef(99);
        let i = RequestIndirect {
            operation: BLKIF_OP_INDIRECT,
            indirect_op: BLKIF_OP_WRITE,
            nr_segments: 300,
            id: 9,
            sector_number: 8,
            handle: 0x51,
            indirect_grefs: grefs,
            ..Default::default()
        };
        let slot = Request::from(i);
        assert_eq!(slot.to_indirect(), i);
        assert_eq!(slot.id, 9);
    }

    #[test]
    fn multi_page_slots() {
        assert_eq!(
            [0, 1, 2, 3, 4].map(ring_slots_for_order),
            [32, 64, 128, 256, 512]
        );
    }
}
