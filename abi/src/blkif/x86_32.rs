//! blkif layouts of the i386 ABI (protocol `"x86_32-abi"`), where `u64` is
//! aligned to 4 bytes: no padding before `id`, smaller structures.
//!
//! Follows spec/blkif.md §2. The structures are `#[repr(C, packed(4))]`,
//! which reproduces the i386 alignment exactly; fields can be read and
//! written by value but not borrowed. Convert to and from the native
//! (x86_64) structures with `From`; the conversions copy every field and
//! zero the padding.
//!
//! Linux blkback assumes this layout when the frontend writes no
//! `protocol` key.

use super::{BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, BLKIF_MAX_SEGMENTS_PER_REQUEST, RequestSegment};
use crate::ring::{ring_entry_size_of, ring_slots};
use crate::types::{GrantRef, PAGE_SIZE};
use bytemuck::{Pod, Zeroable};

/// `blkif_request` (i386), 108 bytes.
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Request {
    /// `BLKIF_OP_*`.
    pub operation: u8,
    /// Number of valid entries in `seg`.
    pub nr_segments: u8,
    /// Virtual device handle.
    pub handle: u16,
    /// Opaque id echoed in the response.
    pub id: u64,
    /// Start sector.
    pub sector_number: u64,
    /// Segments.
    pub seg: [RequestSegment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}

/// `blkif_request_discard` (i386), 28 bytes.
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RequestDiscard {
    /// `BLKIF_OP_DISCARD`.
    pub operation: u8,
    /// 0 or `BLKIF_DISCARD_SECURE`.
    pub flag: u8,
    /// Virtual device handle.
    pub handle: u16,
    /// Opaque id echoed in the response.
    pub id: u64,
    /// First sector.
    pub sector_number: u64,
    /// Number of sectors.
    pub nr_sectors: u64,
}

/// `blkif_request_indirect` (i386), 64 bytes.
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RequestIndirect {
    /// `BLKIF_OP_INDIRECT`.
    pub operation: u8,
    /// `BLKIF_OP_READ` or `BLKIF_OP_WRITE`.
    pub indirect_op: u8,
    /// Number of segments.
    pub nr_segments: u16,
    /// Opaque id echoed in the response.
    pub id: u64,
    /// Start sector.
    pub sector_number: u64,
    /// Virtual device handle.
    pub handle: u16,
    /// Padding.
    pub _pad0: [u8; 2],
    /// Grants of the descriptor pages.
    pub indirect_grefs: [GrantRef; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
    /// Explicit `u64 pad` of the i386 header (makes the struct 64 bytes).
    pub pad: u64,
}

/// `blkif_response` (i386), 12 bytes.
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Response {
    /// `id` of the request.
    pub id: u64,
    /// Operation of the request.
    pub operation: u8,
    /// Padding.
    pub _pad0: u8,
    /// `BLKIF_RSP_*`.
    pub status: i16,
}

/// Ring entry size (union of [`Request`] and [`Response`]): 108 bytes.
pub const RING_ENTRY_SIZE: usize = ring_entry_size_of::<Request, Response>();
/// Slots of a one-page ring: 32.
pub const RING_SLOTS: u32 = ring_slots(PAGE_SIZE, RING_ENTRY_SIZE);

impl Request {
    /// The first 28 bytes of this slot read as a discard request.
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

impl From<Request> for super::Request {
    fn from(r: Request) -> Self {
        super::Request {
            operation: r.operation,
            nr_segments: r.nr_segments,
            handle: r.handle,
            _pad0: [0; 4],
            id: r.id,
            sector_number: r.sector_number,
            seg: r.seg,
        }
    }
}

impl From<super::Request> for Request {
    fn from(r: super::Request) -> Self {
        Request {
            operation: r.operation,
            nr_segments: r.nr_segments,
            handle: r.handle,
            id: r.id,
            sector_number: r.sector_number,
            seg: r.seg,
        }
    }
}

impl From<RequestDiscard> for super::RequestDiscard {
    fn from(r: RequestDiscard) -> Self {
        super::RequestDiscard {
            operation: r.operation,
            flag: r.flag,
            handle: r.handle,
            _pad0: [0; 4],
            id: r.id,
            sector_number: r.sector_number,
            nr_sectors: r.nr_sectors,
        }
    }
}

impl From<super::RequestDiscard> for RequestDiscard {
    fn from(r: super::RequestDiscard) -> Self {
        RequestDiscard {
            operation: r.operation,
            flag: r.flag,
            handle: r.handle,
            id: r.id,
            sector_number: r.sector_number,
            nr_sectors: r.nr_sectors,
        }
    }
}

impl From<RequestIndirect> for super::RequestIndirect {
    fn from(r: RequestIndirect) -> Self {
        super::RequestIndirect {
            operation: r.operation,
            indirect_op: r.indirect_op,
            nr_segments: r.nr_segments,
            _pad0: [0; 4],
            id: r.id,
            sector_number: r.sector_number,
            handle: r.handle,
            _pad1: [0; 2],
            indirect_grefs: r.indirect_grefs,
            _pad2: [0; 4],
        }
    }
}

impl From<super::RequestIndirect> for RequestIndirect {
    fn from(r: super::RequestIndirect) -> Self {
        RequestIndirect {
            operation: r.operation,
            indirect_op: r.indirect_op,
            nr_segments: r.nr_segments,
            id: r.id,
            sector_number: r.sector_number,
            handle: r.handle,
            _pad0: [0; 2],
            indirect_grefs: r.indirect_grefs,
            pad: 0,
        }
    }
}

impl From<Response> for super::Response {
    fn from(r: Response) -> Self {
        super::Response {
            id: r.id,
            operation: r.operation,
            _pad0: 0,
            status: r.status,
            _pad1: [0; 4],
        }
    }
}

impl From<super::Response> for Response {
    fn from(r: super::Response) -> Self {
        Response {
            id: r.id,
            operation: r.operation,
            _pad0: 0,
            status: r.status,
        }
    }
}

// Compile-time layout checks (spec/blkif.md §2, i386 columns).
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<Request>() == 108);
    assert!(align_of::<Request>() == 4);
    assert!(offset_of!(Request, handle) == 2);
    assert!(offset_of!(Request, id) == 4);
    assert!(offset_of!(Request, sector_number) == 12);
    assert!(offset_of!(Request, seg) == 20);
    assert!(size_of::<RequestDiscard>() == 28);
    assert!(offset_of!(RequestDiscard, id) == 4);
    assert!(offset_of!(RequestDiscard, sector_number) == 12);
    assert!(offset_of!(RequestDiscard, nr_sectors) == 20);
    assert!(size_of::<RequestIndirect>() == 64);
    assert!(offset_of!(RequestIndirect, nr_segments) == 2);
    assert!(offset_of!(RequestIndirect, id) == 4);
    assert!(offset_of!(RequestIndirect, sector_number) == 12);
    assert!(offset_of!(RequestIndirect, handle) == 20);
    assert!(offset_of!(RequestIndirect, indirect_grefs) == 24);
    assert!(offset_of!(RequestIndirect, pad) == 56);
    assert!(size_of::<Response>() == 12);
    assert!(offset_of!(Response, operation) == 8);
    assert!(offset_of!(Response, status) == 10);
    assert!(RING_ENTRY_SIZE == 108);
    assert!(RING_SLOTS == 32);
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blkif;

    #[test]
    fn conversions_roundtrip() {
        let mut seg = [RequestSegment::default(); BLKIF_MAX_SEGMENTS_PER_REQUEST];
        seg[0] = RequestSegment {
            gref: GrantRef(17),
            first_sect: 1,
            last_sect: 6,
            _pad0: [0; 2],
        };
        let native = blkif::Request {
            operation: blkif::BLKIF_OP_WRITE,
            nr_segments: 1,
            handle: 0x300,
            id: 0x1122_3344_5566_7788,
            sector_number: 0xAABB_CCDD_0011,
            seg,
            ..Default::default()
        };
        let r32 = Request::from(native);
        let bytes = bytemuck::bytes_of(&r32);
        assert_eq!(&bytes[4..12], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&bytes[20..24], &17u32.to_le_bytes());
        assert_eq!(blkif::Request::from(r32), native);

        let rsp = blkif::Response {
            id: 5,
            operation: 1,
            status: -1,
            ..Default::default()
        };
        let rsp32 = Response::from(rsp);
        assert_eq!(
            bytemuck::bytes_of(&rsp32),
            &[5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0xFF, 0xFF]
        );
        assert_eq!(blkif::Response::from(rsp32), rsp);

        let d = blkif::RequestDiscard {
            operation: 5,
            id: 3,
            nr_sectors: 8,
            ..Default::default()
        };
        assert_eq!(blkif::RequestDiscard::from(RequestDiscard::from(d)), d);
        let i = blkif::RequestIndirect {
            operation: 6,
            nr_segments: 12,
            id: 4,
            ..Default::default()
        };
        assert_eq!(blkif::RequestIndirect::from(RequestIndirect::from(i)), i);

        let mut buf = [0u8; 108];
        buf[..28].copy_from_slice(bytemuck::bytes_of(&RequestDiscard::from(d)));
        let slot: Request = bytemuck::pod_read_unaligned(&buf);
        assert_eq!(slot.to_discard(), RequestDiscard::from(d));
        assert_eq!({ slot.to_indirect().id }, 3);
    }
}
