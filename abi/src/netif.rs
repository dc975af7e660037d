//! Paravirtual network (vif): TX/RX ring structures, extra-info slots, the
//! control ring, flags, status codes and limits.
//!
//! Follows spec/netif.md §1, §4 and `io/netif.h`. Layouts are identical on
//! every ABI. Xen names the flags `NETTXF_*`/`NETRXF_*`/`NETIF_RSP_*`;
//! Linux prefixes them with `XEN_`; the values are the same.

use crate::ring::{ring_entry_size_of, ring_slots};
use crate::types::{GrantRef, PAGE_SIZE};
use bytemuck::{Pod, Zeroable};

// ---------------------------------------------------------------------------
// Ring structures
// ---------------------------------------------------------------------------

/// `netif_tx_request`, 12 bytes. **\[frontend\]** writes it.
///
/// First slot of a packet: `size` = total packet length; later slots
/// (after `NETTXF_more_data`): this fragment's length. `offset + size` of
/// one slot must not exceed 4096.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TxRequest {
    /// Grant of the page holding the fragment (read access suffices).
    pub gref: GrantRef,
    /// Offset of the data in that page.
    pub offset: u16,
    /// `NETTXF_*`.
    pub flags: u16,
    /// Identifier echoed in the response.
    pub id: u16,
    /// Packet length (first slot) or fragment length.
    pub size: u16,
}

/// `netif_tx_response`, 4 bytes. **\[backend\]** writes it; one per
/// consumed slot (`NETIF_RSP_NULL` for extra-info slots).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TxResponse {
    /// `id` of the request.
    pub id: u16,
    /// `NETIF_RSP_*`.
    pub status: i16,
}

/// `netif_rx_request`, 8 bytes. **\[frontend\]** posts an empty page,
/// granted writable.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RxRequest {
    /// Identifier echoed in the response.
    pub id: u16,
    /// Padding (C `pad`), 0.
    pub pad: u16,
    /// Grant of the buffer page.
    pub gref: GrantRef,
}

/// `netif_rx_response`, 8 bytes. **\[backend\]** writes it into the slot of
/// the request it consumed (same ring index).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RxResponse {
    /// `id` of the request in this slot.
    pub id: u16,
    /// Where the data starts in the buffer page.
    pub offset: u16,
    /// `NETRXF_*`.
    pub flags: u16,
    /// `> 0`: bytes in this slot; `<= 0`: `NETIF_RSP_*` or a `GNTST_*`.
    pub status: i16,
}

/// `netif_extra_info`, 8 bytes, aligned 2: occupies one TX request slot or
/// one RX response slot after a slot with `*_extra_info` set.
///
/// The 6-byte C union `u` is kept raw; read it with the typed views
/// ([`ExtraInfo::as_gso`], ...) after checking `type_`, build one with the
/// constructors ([`ExtraInfo::gso`], ...).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ExtraInfo {
    /// `XEN_NETIF_EXTRA_TYPE_*` (C `type`).
    pub type_: u8,
    /// `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
    /// Raw union (C `u`; its `pad` member is `uint16_t[3]`).
    pub u: [u16; 3],
}

/// `u.gso` of [`ExtraInfo`] (`XEN_NETIF_EXTRA_TYPE_GSO`), 6 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ExtraGso {
    /// MSS: payload bytes per segment.
    pub size: u16,
    /// `XEN_NETIF_GSO_TYPE_*` (C `type`).
    pub type_: u8,
    /// Padding, 0.
    pub pad: u8,
    /// No feature bits are defined; 0.
    pub features: u16,
}

/// `u.mcast` of [`ExtraInfo`] (`XEN_NETIF_EXTRA_TYPE_MCAST_{ADD,DEL}`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ExtraMcast {
    /// Ethernet multicast address.
    pub addr: [u8; 6],
}

/// `u.hash` of [`ExtraInfo`] (`XEN_NETIF_EXTRA_TYPE_HASH`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ExtraHash {
    /// Hash type **bit number** (`XEN_NETIF_CTRL_HASH_TYPE_*_BIT`, C `type`).
    pub type_: u8,
    /// `XEN_NETIF_CTRL_HASH_ALGORITHM_*`.
    pub algorithm: u8,
    /// The 32-bit hash, little-endian.
    pub value: [u8; 4],
}

impl ExtraHash {
    /// `value` as a number.
    #[inline]
    pub const fn value_u32(&self) -> u32 {
        u32::from_le_bytes(self.value)
    }
}

/// `u.xdp` of [`ExtraInfo`] (`XEN_NETIF_EXTRA_TYPE_XDP`, Linux only).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ExtraXdp {
    /// RX headroom in bytes.
    pub headroom: u16,
    /// Padding, 0.
    pub pad: [u16; 2],
}

impl ExtraInfo {
    /// An extra of type `type_` with a raw union; `flags` = 0.
    #[inline]
    pub const fn new(type_: u8, u: [u16; 3]) -> Self {
        ExtraInfo { type_, flags: 0, u }
    }
    /// A GSO extra.
    #[inline]
    pub fn gso(gso: ExtraGso) -> Self {
        Self::new(XEN_NETIF_EXTRA_TYPE_GSO, bytemuck::cast(gso))
    }
    /// A multicast add (`add`) or delete extra.
    #[inline]
    pub fn mcast(add: bool, addr: [u8; 6]) -> Self {
        let ty = if add {
            XEN_NETIF_EXTRA_TYPE_MCAST_ADD
        } else {
            XEN_NETIF_EXTRA_TYPE_MCAST_DEL
        };
        Self::new(ty, bytemuck::cast(ExtraMcast { addr }))
    }
    /// A hash extra.
    #[inline]
    pub fn hash(hash: ExtraHash) -> Self {
        Self::new(XEN_NETIF_EXTRA_TYPE_HASH, bytemuck::cast(hash))
    }
    /// An XDP headroom extra (Linux only).
    #[inline]
    pub fn xdp(headroom: u16) -> Self {
        Self::new(
            XEN_NETIF_EXTRA_TYPE_XDP,
            bytemuck::cast(ExtraXdp {
                headroom,
                pad: [0; 2],
            }),
        )
    }
    /// Returns `self` with `XEN_NETIF_EXTRA_FLAG_MORE` set or cleared.
    #[inline]
    pub const fn with_more(mut self, more: bool) -> Self {
        if more {
            self.flags |= XEN_NETIF_EXTRA_FLAG_MORE;
        } else {
            self.flags &= !XEN_NETIF_EXTRA_FLAG_MORE;
        }
        self
    }
    /// Whether another extra slot follows.
    #[inline]
    pub const fn has_more(&self) -> bool {
        self.flags & XEN_NETIF_EXTRA_FLAG_MORE != 0
    }
    /// The union read as `u.gso` (meaningful if `type_` is GSO).
    #[inline]
    pub fn as_gso(&self) -> ExtraGso {
        bytemuck::cast(self.u)
    }
    /// The union read as `u.mcast` (meaningful for MCAST_ADD/DEL).
    #[inline]
    pub fn as_mcast(&self) -> ExtraMcast {
        bytemuck::cast(self.u)
    }
    /// The union read as `u.hash` (meaningful if `type_` is HASH).
    #[inline]
    pub fn as_hash(&self) -> ExtraHash {
        bytemuck::cast(self.u)
    }
    /// The union read as `u.xdp` (meaningful if `type_` is XDP).
    #[inline]
    pub fn as_xdp(&self) -> ExtraXdp {
        bytemuck::cast(self.u)
    }
}

/// `xen_netif_ctrl_request`, 16 bytes. **\[frontend\]** writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CtrlRequest {
    /// Identifier echoed in the response.
    pub id: u16,
    /// `XEN_NETIF_CTRL_TYPE_*` (C `type`).
    pub type_: u16,
    /// Type-specific arguments.
    pub data: [u32; 3],
}

/// `xen_netif_ctrl_response`, 12 bytes. **\[backend\]** writes it; may be
/// out of order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CtrlResponse {
    /// `id` of the request.
    pub id: u16,
    /// `type` of the request (C `type`).
    pub type_: u16,
    /// `XEN_NETIF_CTRL_STATUS_*`.
    pub status: u32,
    /// Type-specific result.
    pub data: u32,
}

/// `xen_netif_gref`, 8 bytes: an entry of the gref-mapping tables of the
/// control ring (`ADD_GREF_MAPPING` / `DEL_GREF_MAPPING`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetifGref {
    /// **\[frontend\]** Grant.
    pub ref_: GrantRef,
    /// **\[frontend\]** `XEN_NETIF_CTRLF_GREF_*`.
    pub flags: u16,
    /// **\[backend\]** `XEN_NETIF_CTRL_STATUS_*`.
    pub status: u16,
}

// ---------------------------------------------------------------------------
// Flags and values
// ---------------------------------------------------------------------------

/// `NETTXF_csum_blank`: checksum not filled in (partial checksum).
pub const NETTXF_CSUM_BLANK: u16 = 1 << 0;
/// `NETTXF_data_validated`: data already validated.
pub const NETTXF_DATA_VALIDATED: u16 = 1 << 1;
/// `NETTXF_more_data`: the packet continues in the next request.
pub const NETTXF_MORE_DATA: u16 = 1 << 2;
/// `NETTXF_extra_info`: extra-info slot(s) follow this request.
pub const NETTXF_EXTRA_INFO: u16 = 1 << 3;

/// `NETRXF_data_validated` (bit 0: swapped relative to TX).
pub const NETRXF_DATA_VALIDATED: u16 = 1 << 0;
/// `NETRXF_csum_blank` (bit 1: swapped relative to TX).
pub const NETRXF_CSUM_BLANK: u16 = 1 << 1;
/// `NETRXF_more_data`: the packet continues in the next slot.
pub const NETRXF_MORE_DATA: u16 = 1 << 2;
/// `NETRXF_extra_info`: extra-info slot(s) follow.
pub const NETRXF_EXTRA_INFO: u16 = 1 << 3;
/// `NETRXF_gso_prefix`: deprecated.
pub const NETRXF_GSO_PREFIX: u16 = 1 << 4;

/// `NETIF_RSP_DROPPED`: packet dropped.
pub const NETIF_RSP_DROPPED: i16 = -2;
/// `NETIF_RSP_ERROR`: error.
pub const NETIF_RSP_ERROR: i16 = -1;
/// `NETIF_RSP_OKAY`: success.
pub const NETIF_RSP_OKAY: i16 = 0;
/// `NETIF_RSP_NULL`: placeholder response for an extra-info slot.
pub const NETIF_RSP_NULL: i16 = 1;

/// `XEN_NETIF_EXTRA_TYPE_NONE`: never valid.
pub const XEN_NETIF_EXTRA_TYPE_NONE: u8 = 0;
/// `XEN_NETIF_EXTRA_TYPE_GSO`: [`ExtraGso`].
pub const XEN_NETIF_EXTRA_TYPE_GSO: u8 = 1;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`: [`ExtraMcast`].
pub const XEN_NETIF_EXTRA_TYPE_MCAST_ADD: u8 = 2;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`: [`ExtraMcast`].
pub const XEN_NETIF_EXTRA_TYPE_MCAST_DEL: u8 = 3;
/// `XEN_NETIF_EXTRA_TYPE_HASH`: [`ExtraHash`].
pub const XEN_NETIF_EXTRA_TYPE_HASH: u8 = 4;
/// `XEN_NETIF_EXTRA_TYPE_MAX` of Xen's header: valid types are `1..MAX`.
pub const XEN_NETIF_EXTRA_TYPE_MAX: u8 = 5;
/// `XEN_NETIF_EXTRA_TYPE_XDP`: [`ExtraXdp`] (Linux's header only; equal to
/// Xen's `XEN_NETIF_EXTRA_TYPE_MAX`).
pub const XEN_NETIF_EXTRA_TYPE_XDP: u8 = 5;
/// `XEN_NETIF_EXTRA_TYPE_MAX` of Linux's header (which has XDP).
pub const XEN_NETIF_EXTRA_TYPE_MAX_LINUX: u8 = 6;
/// `XEN_NETIF_EXTRA_FLAG_MORE`: another extra slot follows.
pub const XEN_NETIF_EXTRA_FLAG_MORE: u8 = 1 << 0;

/// `XEN_NETIF_GSO_TYPE_NONE`.
pub const XEN_NETIF_GSO_TYPE_NONE: u8 = 0;
/// `XEN_NETIF_GSO_TYPE_TCPV4`.
pub const XEN_NETIF_GSO_TYPE_TCPV4: u8 = 1;
/// `XEN_NETIF_GSO_TYPE_TCPV6`.
pub const XEN_NETIF_GSO_TYPE_TCPV6: u8 = 2;

/// `XEN_NETIF_NR_SLOTS_MIN`: data slots per packet a backend must accept
/// (and a frontend must not exceed).
pub const XEN_NETIF_NR_SLOTS_MIN: u32 = 18;
/// `XEN_NETIF_MAX_TX_SIZE`: largest TX packet.
pub const XEN_NETIF_MAX_TX_SIZE: u32 = 0xFFFF;
/// `XEN_NETIF_MAX_XDP_HEADROOM` (Linux only).
pub const XEN_NETIF_MAX_XDP_HEADROOM: u32 = 0x7FFF;

// Control ring.

/// `XEN_NETIF_CTRL_TYPE_INVALID`.
pub const XEN_NETIF_CTRL_TYPE_INVALID: u16 = 0;
/// `XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS`.
pub const XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS: u16 = 1;
/// `XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS`.
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS: u16 = 2;
/// `XEN_NETIF_CTRL_TYPE_SET_HASH_KEY` (data\[0\] = gref, data\[1\] = length).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_KEY: u16 = 3;
/// `XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE`.
pub const XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE: u16 = 4;
/// `XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE` (data\[0\] = entries).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE: u16 = 5;
/// `XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING` (gref, entries, offset).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING: u16 = 6;
/// `XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM` (data\[0\] = algorithm).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM: u16 = 7;
/// `XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE` (Xen's header only).
pub const XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE: u16 = 8;
/// `XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING` (Xen's header only).
pub const XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING: u16 = 9;
/// `XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING` (Xen's header only).
pub const XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING: u16 = 10;

/// `XEN_NETIF_CTRL_STATUS_SUCCESS`.
pub const XEN_NETIF_CTRL_STATUS_SUCCESS: u32 = 0;
/// `XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED`.
pub const XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED: u32 = 1;
/// `XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER`.
pub const XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER: u32 = 2;
/// `XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW`.
pub const XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW: u32 = 3;

/// `XEN_NETIF_CTRL_HASH_ALGORITHM_NONE`.
pub const XEN_NETIF_CTRL_HASH_ALGORITHM_NONE: u32 = 0;
/// `XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ`.
pub const XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ: u32 = 1;

/// `_XEN_NETIF_CTRL_HASH_TYPE_IPV4`: bit number (IPv4 src+dst, 8 bytes).
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV4_BIT: u32 = 0;
/// `_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP`: bit number (+ ports, 12 bytes).
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP_BIT: u32 = 1;
/// `_XEN_NETIF_CTRL_HASH_TYPE_IPV6`: bit number (32 bytes).
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV6_BIT: u32 = 2;
/// `_XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP`: bit number (36 bytes).
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP_BIT: u32 = 3;
/// `XEN_NETIF_CTRL_HASH_TYPE_IPV4`: mask.
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV4: u32 = 1 << XEN_NETIF_CTRL_HASH_TYPE_IPV4_BIT;
/// `XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP`: mask.
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP: u32 = 1 << XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP_BIT;
/// `XEN_NETIF_CTRL_HASH_TYPE_IPV6`: mask.
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV6: u32 = 1 << XEN_NETIF_CTRL_HASH_TYPE_IPV6_BIT;
/// `XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP`: mask.
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP: u32 = 1 << XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP_BIT;

/// `XEN_NETIF_CTRLF_GREF_readonly`: [`NetifGref::flags`] bit.
pub const XEN_NETIF_CTRLF_GREF_READONLY: u16 = 1 << 0;

// ---------------------------------------------------------------------------
// Rings
// ---------------------------------------------------------------------------

/// TX ring entry (union of [`TxRequest`] and [`TxResponse`]): 12 bytes.
pub const TX_RING_ENTRY_SIZE: usize = ring_entry_size_of::<TxRequest, TxResponse>();
/// RX ring entry (union of [`RxRequest`] and [`RxResponse`]): 8 bytes.
pub const RX_RING_ENTRY_SIZE: usize = ring_entry_size_of::<RxRequest, RxResponse>();
/// Control ring entry (union of [`CtrlRequest`] and [`CtrlResponse`]): 16.
pub const CTRL_RING_ENTRY_SIZE: usize = ring_entry_size_of::<CtrlRequest, CtrlResponse>();
/// Slots of the (one-page) TX ring: 256.
pub const TX_RING_SLOTS: u32 = ring_slots(PAGE_SIZE, TX_RING_ENTRY_SIZE);
/// Slots of the (one-page) RX ring: 256.
pub const RX_RING_SLOTS: u32 = ring_slots(PAGE_SIZE, RX_RING_ENTRY_SIZE);
/// Slots of the (one-page) control ring: 128.
pub const CTRL_RING_SLOTS: u32 = ring_slots(PAGE_SIZE, CTRL_RING_ENTRY_SIZE);

// ---------------------------------------------------------------------------
// Compile-time layout checks (spec/netif.md §1, §4, §6)
// ---------------------------------------------------------------------------

const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<TxRequest>() == 12);
    assert!(offset_of!(TxRequest, gref) == 0);
    assert!(offset_of!(TxRequest, offset) == 4);
    assert!(offset_of!(TxRequest, flags) == 6);
    assert!(offset_of!(TxRequest, id) == 8);
    assert!(offset_of!(TxRequest, size) == 10);
    assert!(size_of::<TxResponse>() == 4);
    assert!(offset_of!(TxResponse, status) == 2);
    assert!(size_of::<RxRequest>() == 8);
    assert!(offset_of!(RxRequest, pad) == 2);
    assert!(offset_of!(RxRequest, gref) == 4);
    assert!(size_of::<RxResponse>() == 8);
    assert!(offset_of!(RxResponse, offset) == 2);
    assert!(offset_of!(RxResponse, flags) == 4);
    assert!(offset_of!(RxResponse, status) == 6);
    assert!(size_of::<ExtraInfo>() == 8);
    assert!(align_of::<ExtraInfo>() == 2);
    assert!(offset_of!(ExtraInfo, flags) == 1);
    assert!(offset_of!(ExtraInfo, u) == 2);
    assert!(size_of::<ExtraGso>() == 6);
    assert!(offset_of!(ExtraGso, type_) == 2);
    assert!(offset_of!(ExtraGso, pad) == 3);
    assert!(offset_of!(ExtraGso, features) == 4);
    assert!(size_of::<ExtraMcast>() == 6);
    assert!(size_of::<ExtraHash>() == 6);
    assert!(offset_of!(ExtraHash, algorithm) == 1);
    assert!(offset_of!(ExtraHash, value) == 2);
    assert!(size_of::<ExtraXdp>() == 6);
    assert!(offset_of!(ExtraXdp, pad) == 2);
    assert!(size_of::<CtrlRequest>() == 16);
    assert!(offset_of!(CtrlRequest, type_) == 2);
    assert!(offset_of!(CtrlRequest, data) == 4);
    assert!(size_of::<CtrlResponse>() == 12);
    assert!(offset_of!(CtrlResponse, type_) == 2);
    assert!(offset_of!(CtrlResponse, status) == 4);
    assert!(offset_of!(CtrlResponse, data) == 8);
    assert!(size_of::<NetifGref>() == 8);
    assert!(offset_of!(NetifGref, flags) == 4);
    assert!(offset_of!(NetifGref, status) == 6);
    // An extra-info slot fits in both a TX request and an RX response slot.
    assert!(size_of::<ExtraInfo>() <= TX_RING_ENTRY_SIZE);
    assert!(size_of::<ExtraInfo>() <= RX_RING_ENTRY_SIZE);
    assert!(TX_RING_ENTRY_SIZE == 12);
    assert!(RX_RING_ENTRY_SIZE == 8);
    assert!(CTRL_RING_ENTRY_SIZE == 16);
    assert!(TX_RING_SLOTS == 256);
    assert!(RX_RING_SLOTS == 256);
    assert!(CTRL_RING_SLOTS == 128);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_gso_bytes() {
        let e = ExtraInfo::gso(ExtraGso {
            size: 1448,
            type_: XEN_NETIF_GSO_TYPE_TCPV4,
            pad: 0,
            features: 0,
        })
        .with_more(true);
        // type, flags, size (LE) @2, gso type @4, pad @5, features @6.
        assert_eq!(bytemuck::bytes_of(&e), &[1, 1, 0xA8, 0x05, 1, 0, 0, 0]);
        assert!(e.has_more());
        assert_eq!(e.as_gso().size, 1448);
        assert_eq!(e.as_gso().type_, XEN_NETIF_GSO_TYPE_TCPV4);
        assert!(!e.with_more(false).has_more());
    }

    #[test]
    fn extra_mcast_hash_xdp() {
        let mac = [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb];
        let e = ExtraInfo::mcast(true, mac);
        assert_eq!(e.type_, XEN_NETIF_EXTRA_TYPE_MCAST_ADD);
        assert_eq!(&bytemuck::bytes_of(&e)[2..], &mac);
        assert_eq!(e.as_mcast().addr, mac);
        assert_eq!(
            ExtraInfo::mcast(false, mac).type_,
            XEN_NETIF_EXTRA_TYPE_MCAST_DEL
        );

        let h = ExtraInfo::hash(ExtraHash {
            type_: XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP_BIT as u8,
            algorithm: XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ as u8,
            value: 0x1234_5678u32.to_le_bytes(),
        });
        assert_eq!(
            bytemuck::bytes_of(&h),
            &[4, 0, 1, 1, 0x78, 0x56, 0x34, 0x12]
        );
        assert_eq!(h.as_hash().value_u32(), 0x1234_5678);

        let x = ExtraInfo::xdp(256);
        assert_eq!(x.type_, XEN_NETIF_EXTRA_TYPE_XDP);
        assert_eq!(x.as_xdp().headroom, 256);
        assert_eq!(bytemuck::bytes_of(&x), &[5, 0, 0, 1, 0, 0, 0, 0]);
    }
}
