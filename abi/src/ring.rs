//! The classic shared request/response ring: header layout and slot count.
//!
//! Follows spec/ring.md §2–3 and `io/ring.h` (`DEFINE_RING_TYPES`,
//! `__CONST_RING_SIZE`). The ring algorithms themselves (push, notify check,
//! final check, overflow checks) belong to the ring crate; this module only
//! fixes the bytes.
//!
//! A shared ring area of `total_bytes` (4096 << order) starts with one
//! [`SringHeader`] (64 bytes) followed by [`ring_slots`] entries, each the
//! size of the C union of request and response ([`ring_entry_size`]).
//! Indices (`RING_IDX`) are plain free-running `u32`s.

use bytemuck::{Pod, Zeroable};

/// Offset of [`SringHeader::req_prod`].
pub const REQ_PROD_OFFSET: usize = 0;
/// Offset of [`SringHeader::req_event`].
pub const REQ_EVENT_OFFSET: usize = 4;
/// Offset of [`SringHeader::rsp_prod`].
pub const RSP_PROD_OFFSET: usize = 8;
/// Offset of [`SringHeader::rsp_event`].
pub const RSP_EVENT_OFFSET: usize = 12;
/// Offset of [`SringHeader::pvt`].
pub const PVT_OFFSET: usize = 16;
/// Offset of [`SringHeader::pad`] (`__pad` in C).
pub const PAD_OFFSET: usize = 20;
/// Size of the header = offset of the first entry (`offsetof(sring, ring)`),
/// on every architecture.
pub const SRING_HEADER_SIZE: usize = 64;

/// Header of a shared ring (`struct <name>_sring` up to `ring[]`), 64 bytes.
///
/// The indices are free-running `RING_IDX` (u32) values compared with
/// wrapping arithmetic; slot = `idx & (nr_ents - 1)`. Access them atomically
/// (the peer writes concurrently); this struct only fixes their offsets.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct SringHeader {
    /// **\[frontend\]** One past the last request made visible.
    pub req_prod: u32,
    /// **\[backend\]** "Notify me when `req_prod` passes this value."
    pub req_event: u32,
    /// **\[backend\]** One past the last response made visible.
    pub rsp_prod: u32,
    /// **\[frontend\]** "Notify me when `rsp_prod` passes this value."
    pub rsp_event: u32,
    /// Legacy private union (`pvt.netif.smartpoll_active`,
    /// `pvt.tapif_user.msg`, `pvt_pad[4]`); unused, zeroed at init.
    pub pvt: [u8; 4],
    /// `__pad[44]`: zeroed at init.
    pub pad: [u8; 44],
}

impl SringHeader {
    /// The state `SHARED_RING_INIT` leaves: producers 0, event indices 1
    /// ("notify on the very first message"), padding zero.
    pub const INIT: SringHeader = SringHeader {
        req_prod: 0,
        req_event: 1,
        rsp_prod: 0,
        rsp_event: 1,
        pvt: [0; 4],
        pad: [0; 44],
    };
}

impl Default for SringHeader {
    /// All zeroes (not [`SringHeader::INIT`]).
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<SringHeader>() == SRING_HEADER_SIZE);
    assert!(offset_of!(SringHeader, req_prod) == REQ_PROD_OFFSET);
    assert!(offset_of!(SringHeader, req_event) == REQ_EVENT_OFFSET);
    assert!(offset_of!(SringHeader, rsp_prod) == RSP_PROD_OFFSET);
    assert!(offset_of!(SringHeader, rsp_event) == RSP_EVENT_OFFSET);
    assert!(offset_of!(SringHeader, pvt) == PVT_OFFSET);
    assert!(offset_of!(SringHeader, pad) == PAD_OFFSET);
};

/// Largest power of two `<= n` (0 for 0), like `io/ring.h`'s `__RD32`.
#[inline]
pub const fn round_down_pow2(n: u32) -> u32 {
    if n == 0 {
        0
    } else {
        1 << (31 - n.leading_zeros())
    }
}

/// Number of slots of a ring occupying `total_bytes` (header included) with
/// entries of `entry_size` bytes: `round_down_pow2((total - 64) / entry)`,
/// as `__CONST_RING_SIZE` computes it.
///
/// Returns 0 when the area cannot hold the header and one entry, or when
/// `entry_size` is 0. Never panics.
#[inline]
pub const fn ring_slots(total_bytes: usize, entry_size: usize) -> u32 {
    if entry_size == 0 || total_bytes < SRING_HEADER_SIZE {
        return 0;
    }
    let n = (total_bytes - SRING_HEADER_SIZE) / entry_size;
    let n = if n > u32::MAX as usize {
        u32::MAX
    } else {
        n as u32
    };
    round_down_pow2(n)
}

/// Slots of a ring of `2^order` pages ([`ring_slots`] of `4096 << order`);
/// 0 if the byte size would overflow `usize`.
#[inline]
pub const fn ring_slots_for_order(order: u32, entry_size: usize) -> u32 {
    if order >= usize::BITS - crate::types::PAGE_SHIFT {
        return 0;
    }
    ring_slots(crate::types::PAGE_SIZE << order, entry_size)
}

/// Size of the C union of a request and a response type: the larger size,
/// rounded up to the larger alignment. An alignment of 0 counts as 1.
/// Saturates instead of overflowing.
#[inline]
pub const fn ring_entry_size(
    req_size: usize,
    req_align: usize,
    rsp_size: usize,
    rsp_align: usize,
) -> usize {
    let size = if req_size > rsp_size {
        req_size
    } else {
        rsp_size
    };
    let align = if req_align > rsp_align {
        req_align
    } else {
        rsp_align
    };
    let align = if align == 0 { 1 } else { align };
    match size.checked_add(align - 1) {
        Some(s) => s / align * align,
        None => usize::MAX / align * align,
    }
}

/// [`ring_entry_size`] for two Rust types.
#[inline]
pub const fn ring_entry_size_of<Req, Rsp>() -> usize {
    ring_entry_size(
        core::mem::size_of::<Req>(),
        core::mem::align_of::<Req>(),
        core::mem::size_of::<Rsp>(),
        core::mem::align_of::<Rsp>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{blkif, netif};

    #[test]
    fn round_down() {
        assert_eq!(round_down_pow2(0), 0);
        assert_eq!(round_down_pow2(1), 1);
        assert_eq!(round_down_pow2(36), 32);
        assert_eq!(round_down_pow2(64), 64);
        assert_eq!(round_down_pow2(u32::MAX), 1 << 31);
    }

    /// The slot-count table of spec/README.md and ring.md §3.
    #[test]
    fn slot_table() {
        let blk = ring_entry_size_of::<blkif::Request, blkif::Response>();
        assert_eq!(blk, 112);
        for (order, slots) in [(0, 32), (1, 64), (2, 128), (3, 256), (4, 512)] {
            assert_eq!(ring_slots(4096 << order, blk), slots, "order {order}");
            assert_eq!(ring_slots_for_order(order, blk), slots, "order {order}");
        }
        let blk32 = ring_entry_size_of::<blkif::x86_32::Request, blkif::x86_32::Response>();
        assert_eq!(blk32, 108);
        assert_eq!(ring_slots(4096, blk32), 32);
        let tx = ring_entry_size_of::<netif::TxRequest, netif::TxResponse>();
        let rx = ring_entry_size_of::<netif::RxRequest, netif::RxResponse>();
        let ctrl = ring_entry_size_of::<netif::CtrlRequest, netif::CtrlResponse>();
        assert_eq!((tx, rx, ctrl), (12, 8, 16));
        assert_eq!(ring_slots(4096, tx), 256);
        assert_eq!(ring_slots(4096, rx), 256);
        assert_eq!(ring_slots(4096, ctrl), 128);
        assert_eq!(blkif::RING_SLOTS, 32);
        assert_eq!(netif::TX_RING_SLOTS, 256);
        assert_eq!(netif::RX_RING_SLOTS, 256);
        assert_eq!(netif::CTRL_RING_SLOTS, 128);
    }

    #[test]
    fn slots_edge_cases_never_panic() {
        assert_eq!(ring_slots(0, 0), 0);
        assert_eq!(ring_slots(4096, 0), 0);
        assert_eq!(ring_slots(63, 1), 0);
        assert_eq!(ring_slots(64, 1), 0);
        assert_eq!(ring_slots(65, 1), 1);
        assert_eq!(ring_slots(64 + 111, 112), 0);
        assert_eq!(ring_slots(usize::MAX, 1), 1 << 31);
        assert_eq!(ring_slots(usize::MAX, usize::MAX), 0);
        assert_eq!(ring_slots_for_order(64, 112), 0);
        assert_eq!(ring_slots_for_order(u32::MAX, 112), 0);
    }

    #[test]
    fn entry_size() {
        assert_eq!(ring_entry_size(108, 4, 12, 4), 108);
        assert_eq!(ring_entry_size(12, 4, 4, 2), 12);
        assert_eq!(ring_entry_size(13, 4, 4, 8), 16);
        assert_eq!(ring_entry_size(5, 0, 0, 0), 5);
        assert_eq!(ring_entry_size(usize::MAX, 8, 0, 0), usize::MAX / 8 * 8);
    }

    #[test]
    fn init_header() {
        let h = SringHeader::INIT;
        assert_eq!((h.req_event, h.rsp_event), (1, 1));
        assert_eq!(bytemuck::bytes_of(&SringHeader::default()), &[0u8; 64]);
    }
}
