//! Compares every layout number and constant of `pvio-abi` with the real C
//! headers: Xen's public headers (Debian: `libxen-dev`, `/usr/include/xen`)
//! and the Linux UAPI `xen/{gntdev,gntalloc,evtchn}.h` (`linux-libc-dev`).
//!
//! How it works:
//!
//! * `x86_64_layouts_match_c_headers`: a C program ([`C_PROGRAM`], an
//!   independent hand-written list) includes the headers and prints one
//!   `NAME VALUE` line per `sizeof`, `offsetof` and constant. The Rust side
//!   ([`expect_x86_64`]) lists the same names with the values of this
//!   crate. Every C line needs at least one Rust expectation and every Rust
//!   expectation needs a C line; all mismatches are reported at once.
//!   Names are matched ignoring case and whitespace (C `GTF_permit_access`
//!   is Rust `GTF_PERMIT_ACCESS`).
//! * Items newer than the installed headers are feature-probed (a tiny C
//!   file is compiled; on success the program gets `-DPVIO_HAVE_<x>`) or
//!   `#ifdef`-tested; when missing, the program prints `NAME absent`, which
//!   is accepted only for the names in [`MAY_BE_ABSENT`].
//! * `xenstore_domain_interface`: Xen 4.17 headers lack the trailing
//!   `evtchn_port` field and the struct is 2076 bytes. When the probe says
//!   the field is missing, the expected size becomes
//!   `XENSTORE_DOMAIN_INTERFACE_SIZE_XEN_4_17` (2076), which must also equal
//!   the Rust offset of `evtchn_port` — i.e. the only difference allowed is
//!   that one trailing field. Every other field is compared normally.
//! * `i386_layouts_match_c_headers`: the i386 structures
//!   (`blkif::x86_32`, 32-bit constants) are checked by compiling the
//!   headers with `-m32 -S` (no 32-bit libc needed): each expected name is
//!   used as a C expression `const long long v_N = (NAME);` and the values
//!   are read back from the assembly.
//! * `every_public_item_is_compared`: scans `src/` for every `pub const`
//!   and every field of every `pub struct`, and requires each to appear in
//!   the expectations above, unless it is padding (`_pad*`, no C
//!   counterpart) or listed in [`RUST_ONLY`] with the reason it has no C
//!   counterpart.
//!
//! If the C compiler or the headers are missing the C tests print
//! `SKIPPED: <reason>`, or fail when `CI=true`. `$CC` is honoured.

use pvio_abi::*;
use std::collections::{BTreeMap, BTreeSet};
use std::mem::{align_of, offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

// ===========================================================================
// Expectations
// ===========================================================================

/// One expected C value: normalised with [`norm`] for matching.
#[derive(Clone, Debug)]
struct Item {
    key: String,
    rust: String,
    value: i64,
}

#[derive(Default)]
struct Expect {
    items: Vec<Item>,
}

trait ToI64 {
    fn to_i64(self) -> i64;
}
macro_rules! to_i64_prim {
    ($($t:ty),*) => { $(impl ToI64 for $t { fn to_i64(self) -> i64 { i64::try_from(self).expect("value fits i64") } })* };
}
to_i64_prim!(u8, u16, u32, u64, usize, i8, i16, i32, i64);
impl ToI64 for DomId {
    fn to_i64(self) -> i64 {
        self.0.into()
    }
}
impl ToI64 for xenbus::XenbusState {
    fn to_i64(self) -> i64 {
        u32::from(self).into()
    }
}

impl Expect {
    fn add(&mut self, key: impl Into<String>, rust: impl Into<String>, value: impl ToI64) {
        self.items.push(Item {
            key: key.into(),
            rust: rust.into(),
            value: value.to_i64(),
        });
    }
}

/// Constants whose C name is the Rust name (up to case).
macro_rules! consts {
    ($e:ident, $($m:ident)::+ : $($name:ident),+ $(,)?) => {
        consts!(@each $e, ($($m)::+), $($name),+);
    };
    (@each $e:ident, $mp:tt, $($name:ident),+) => {
        $( consts!(@one $e, $mp, $name); )+
    };
    (@one $e:ident, ($($m:ident)::+), $name:ident) => {
        $e.add(
            stringify!($name),
            concat!($(stringify!($m), "::",)+ stringify!($name)),
            $($m)::+::$name,
        );
    };
}

/// Constants whose C name differs: `"C name" => rust::path`.
macro_rules! named {
    ($e:ident, $($c:literal => $($p:ident)::+),+ $(,)?) => {
        $( $e.add($c, stringify!($($p)::+).replace(' ', ""), $($p)::+); )+
    };
}

/// `sizeof` of a struct and `offsetof` of the listed fields; a field is
/// `name` (same in C and Rust) or `"c_name" = rust_name`.
macro_rules! layout {
    ($e:ident, $c:literal, $($p:ident)::+ { $($f:tt)* }) => {{
        type T = $($p)::+;
        let lab = stringify!($($p)::+).replace(' ', "");
        $e.add(format!("sizeof({})", $c), lab.clone(), size_of::<T>());
        layout!(@f $e, $c, T, lab, $($f)*);
    }};
    (@f $e:ident, $c:literal, $t:ty, $lab:ident, ) => {};
    (@f $e:ident, $c:literal, $t:ty, $lab:ident, $f:ident $(, $($rest:tt)*)?) => {
        $e.add(
            format!("offsetof({}, {})", $c, stringify!($f)),
            format!("{}.{}", $lab, stringify!($f)),
            offset_of!($t, $f),
        );
        layout!(@f $e, $c, $t, $lab, $($($rest)*)?);
    };
    (@f $e:ident, $c:literal, $t:ty, $lab:ident, $cf:literal = $rf:ident $(, $($rest:tt)*)?) => {
        $e.add(
            format!("offsetof({}, {})", $c, $cf),
            format!("{}.{}", $lab, stringify!($rf)),
            offset_of!($t, $rf),
        );
        layout!(@f $e, $c, $t, $lab, $($($rest)*)?);
    };
}

/// Everything of the crate that the x86_64 C program prints.
fn expect_x86_64() -> Vec<Item> {
    use pvio_abi::{blkif, evtchn, grant, linux, netif, ring, types, xenbus};
    let mut e = Expect::default();

    // ---- types (xen.h, grant_table.h, event_channel.h, ring.h) ----
    e.add("sizeof(domid_t)", "types::DomId", size_of::<DomId>());
    e.add(
        "sizeof(grant_ref_t)",
        "types::GrantRef",
        size_of::<GrantRef>(),
    );
    e.add("sizeof(evtchn_port_t)", "types::Port", size_of::<Port>());
    e.add(
        "sizeof(grant_handle_t)",
        "types::GrantHandle",
        size_of::<GrantHandle>(),
    );
    e.add(
        "sizeof(xen_pfn_t)",
        "types::XenPfn",
        size_of::<types::XenPfn>(),
    );
    e.add(
        "sizeof(xen_ulong_t)",
        "u64 (evtchn bitmap words)",
        size_of::<u64>(),
    );
    e.add(
        "sizeof(grant_status_t)",
        "grant::GrantStatusWord",
        size_of::<grant::GrantStatusWord>(),
    );
    e.add("sizeof(RING_IDX)", "u32 (ring indices)", size_of::<u32>());
    e.add(
        "sizeof(event_word_t)",
        "evtchn::EventWord",
        size_of::<evtchn::EventWord>(),
    );
    e.add(
        "sizeof(XENSTORE_RING_IDX)",
        "u32 (xenstore indices)",
        size_of::<u32>(),
    );
    e.add(
        "sizeof(blkif_vdev_t)",
        "blkif::Vdev",
        size_of::<blkif::Vdev>(),
    );
    e.add(
        "sizeof(blkif_sector_t)",
        "blkif::Sector",
        size_of::<blkif::Sector>(),
    );
    named!(e,
        "XEN_PAGE_SHIFT" => types::PAGE_SHIFT,
        "1 << XEN_PAGE_SHIFT" => types::PAGE_SIZE,
        "__HYPERVISOR_grant_table_op" => types::HYPERVISOR_GRANT_TABLE_OP,
        "__HYPERVISOR_event_channel_op" => types::HYPERVISOR_EVENT_CHANNEL_OP,
        "__HYPERVISOR_event_channel_op_compat" => types::HYPERVISOR_EVENT_CHANNEL_OP_COMPAT,
    );
    consts!(e, types: DOMID_FIRST_RESERVED, DOMID_SELF, DOMID_IO, DOMID_XEN, DOMID_COW,
        DOMID_INVALID, DOMID_IDLE);

    // ---- ring (io/ring.h) ----
    named!(e,
        "offsetof(struct blkif_sring, req_prod)" => ring::REQ_PROD_OFFSET,
        "offsetof(struct blkif_sring, req_event)" => ring::REQ_EVENT_OFFSET,
        "offsetof(struct blkif_sring, rsp_prod)" => ring::RSP_PROD_OFFSET,
        "offsetof(struct blkif_sring, rsp_event)" => ring::RSP_EVENT_OFFSET,
        "offsetof(struct blkif_sring, pvt)" => ring::PVT_OFFSET,
        "offsetof(struct blkif_sring, __pad)" => ring::PAD_OFFSET,
        "offsetof(struct blkif_sring, ring)" => ring::SRING_HEADER_SIZE,
    );
    layout!(e, "struct netif_tx_sring", ring::SringHeader {
        req_prod, req_event, rsp_prod, rsp_event, pvt, "__pad" = pad
    });
    // The C `sizeof(struct x_sring)` includes `ring[1]`; the header is what
    // precedes `ring`. Replace the bogus sizeof entry added by `layout!`.
    let hdr = e
        .items
        .iter()
        .position(|i| i.key == "sizeof(struct netif_tx_sring)")
        .unwrap();
    e.items[hdr].key = "offsetof(struct netif_tx_sring, ring)".into();
    e.add(
        "offsetof(struct netif_rx_sring, ring)",
        "ring::SringHeader",
        size_of::<ring::SringHeader>(),
    );
    e.add(
        "offsetof(struct xen_netif_ctrl_sring, ring)",
        "ring::SringHeader",
        size_of::<ring::SringHeader>(),
    );

    // ---- blkif (io/blkif.h) ----
    consts!(e, blkif: BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER,
        BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_RESERVED_1, BLKIF_OP_DISCARD, BLKIF_OP_INDIRECT,
        BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
        BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY, BLKIF_DISCARD_SECURE,
        VDISK_CDROM, VDISK_REMOVABLE, VDISK_READONLY);
    named!(e, "4096 / sizeof(struct blkif_request_segment)" => blkif::SEGS_PER_INDIRECT_FRAME);
    layout!(
        e,
        "struct blkif_request_segment",
        blkif::RequestSegment {
            gref,
            first_sect,
            last_sect
        }
    );
    layout!(
        e,
        "struct blkif_request",
        blkif::Request {
            operation,
            nr_segments,
            handle,
            id,
            sector_number,
            seg
        }
    );
    layout!(
        e,
        "struct blkif_request_discard",
        blkif::RequestDiscard {
            operation,
            flag,
            handle,
            id,
            sector_number,
            nr_sectors
        }
    );
    layout!(
        e,
        "struct blkif_request_indirect",
        blkif::RequestIndirect {
            operation,
            indirect_op,
            nr_segments,
            id,
            sector_number,
            handle,
            indirect_grefs
        }
    );
    layout!(
        e,
        "struct blkif_response",
        blkif::Response {
            id,
            operation,
            status
        }
    );
    named!(e,
        "sizeof(union blkif_sring_entry)" => blkif::RING_ENTRY_SIZE,
        "__CONST_RING_SIZE(blkif, 4096)" => blkif::RING_SLOTS,
    );
    e.add(
        "sizeof(union blkif_sring_entry)",
        "ring::ring_entry_size_of::<blkif::Request,blkif::Response>",
        ring::ring_entry_size_of::<blkif::Request, blkif::Response>(),
    );
    e.add(
        "__CONST_RING_SIZE(blkif, 4096)",
        "ring::ring_slots(4096, 112)",
        ring::ring_slots(4096, blkif::RING_ENTRY_SIZE),
    );
    for order in 0..=4u32 {
        let key = if order == 0 {
            "__CONST_RING_SIZE(blkif, 4096)".to_string()
        } else {
            format!("__CONST_RING_SIZE(blkif, 4096 << {order})")
        };
        e.add(
            key,
            format!("blkif::ring_slots_for_order({order})"),
            blkif::ring_slots_for_order(order),
        );
    }

    // ---- netif (io/netif.h) ----
    layout!(
        e,
        "struct netif_tx_request",
        netif::TxRequest {
            gref,
            offset,
            flags,
            id,
            size
        }
    );
    layout!(
        e,
        "struct netif_tx_response",
        netif::TxResponse { id, status }
    );
    layout!(
        e,
        "struct netif_rx_request",
        netif::RxRequest { id, pad, gref }
    );
    layout!(
        e,
        "struct netif_rx_response",
        netif::RxResponse {
            id,
            offset,
            flags,
            status
        }
    );
    layout!(e, "struct netif_extra_info", netif::ExtraInfo { "type" = type_, flags, u });
    {
        let u = offset_of!(netif::ExtraInfo, u);
        let mut union_member = |c: &str, lab: &str, off: usize| {
            e.add(
                format!("offsetof(struct netif_extra_info, {c})"),
                lab,
                u + off,
            )
        };
        union_member(
            "u.gso.size",
            "netif::ExtraGso.size",
            offset_of!(netif::ExtraGso, size),
        );
        union_member(
            "u.gso.type",
            "netif::ExtraGso.type_",
            offset_of!(netif::ExtraGso, type_),
        );
        union_member(
            "u.gso.pad",
            "netif::ExtraGso.pad",
            offset_of!(netif::ExtraGso, pad),
        );
        union_member(
            "u.gso.features",
            "netif::ExtraGso.features",
            offset_of!(netif::ExtraGso, features),
        );
        union_member(
            "u.mcast.addr",
            "netif::ExtraMcast.addr",
            offset_of!(netif::ExtraMcast, addr),
        );
        union_member(
            "u.hash.type",
            "netif::ExtraHash.type_",
            offset_of!(netif::ExtraHash, type_),
        );
        union_member(
            "u.hash.algorithm",
            "netif::ExtraHash.algorithm",
            offset_of!(netif::ExtraHash, algorithm),
        );
        union_member(
            "u.hash.value",
            "netif::ExtraHash.value",
            offset_of!(netif::ExtraHash, value),
        );
        union_member("u.pad", "netif::ExtraInfo.u", 0);
    }
    e.add(
        "sizeof(((struct netif_extra_info *)0)->u)",
        "netif::ExtraInfo.u",
        size_of::<[u16; 3]>(),
    );
    e.add(
        "sizeof(((struct netif_extra_info *)0)->u.gso)",
        "netif::ExtraGso",
        size_of::<netif::ExtraGso>(),
    );
    e.add(
        "sizeof(((struct netif_extra_info *)0)->u.mcast)",
        "netif::ExtraMcast",
        size_of::<netif::ExtraMcast>(),
    );
    e.add(
        "sizeof(((struct netif_extra_info *)0)->u.hash)",
        "netif::ExtraHash",
        size_of::<netif::ExtraHash>(),
    );
    e.add(
        "_Alignof(struct netif_extra_info)",
        "netif::ExtraInfo",
        align_of::<netif::ExtraInfo>(),
    );
    layout!(e, "struct xen_netif_ctrl_request", netif::CtrlRequest { id, "type" = type_, data });
    layout!(e, "struct xen_netif_ctrl_response", netif::CtrlResponse {
        id, "type" = type_, status, data
    });
    layout!(e, "struct xen_netif_gref", netif::NetifGref { "ref" = ref_, flags, status });
    named!(e,
        "sizeof(union netif_tx_sring_entry)" => netif::TX_RING_ENTRY_SIZE,
        "sizeof(union netif_rx_sring_entry)" => netif::RX_RING_ENTRY_SIZE,
        "sizeof(union xen_netif_ctrl_sring_entry)" => netif::CTRL_RING_ENTRY_SIZE,
        "__CONST_RING_SIZE(netif_tx, 4096)" => netif::TX_RING_SLOTS,
        "__CONST_RING_SIZE(netif_rx, 4096)" => netif::RX_RING_SLOTS,
        "__CONST_RING_SIZE(xen_netif_ctrl, 4096)" => netif::CTRL_RING_SLOTS,
        "_XEN_NETIF_CTRL_HASH_TYPE_IPV4" => netif::XEN_NETIF_CTRL_HASH_TYPE_IPV4_BIT,
        "_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP" => netif::XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP_BIT,
        "_XEN_NETIF_CTRL_HASH_TYPE_IPV6" => netif::XEN_NETIF_CTRL_HASH_TYPE_IPV6_BIT,
        "_XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP" => netif::XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP_BIT,
    );
    consts!(e, netif: NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED, NETTXF_MORE_DATA,
        NETTXF_EXTRA_INFO, NETRXF_DATA_VALIDATED, NETRXF_CSUM_BLANK, NETRXF_MORE_DATA,
        NETRXF_EXTRA_INFO, NETRXF_GSO_PREFIX, NETIF_RSP_DROPPED, NETIF_RSP_ERROR, NETIF_RSP_OKAY,
        NETIF_RSP_NULL, XEN_NETIF_EXTRA_TYPE_NONE, XEN_NETIF_EXTRA_TYPE_GSO,
        XEN_NETIF_EXTRA_TYPE_MCAST_ADD, XEN_NETIF_EXTRA_TYPE_MCAST_DEL, XEN_NETIF_EXTRA_TYPE_HASH,
        XEN_NETIF_EXTRA_TYPE_MAX, XEN_NETIF_EXTRA_FLAG_MORE, XEN_NETIF_GSO_TYPE_NONE,
        XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6, XEN_NETIF_NR_SLOTS_MIN,
        XEN_NETIF_MAX_TX_SIZE, XEN_NETIF_CTRL_TYPE_INVALID, XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS,
        XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, XEN_NETIF_CTRL_TYPE_SET_HASH_KEY,
        XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE, XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE,
        XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM,
        XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE, XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING,
        XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING, XEN_NETIF_CTRL_STATUS_SUCCESS,
        XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED, XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER,
        XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW, XEN_NETIF_CTRL_HASH_ALGORITHM_NONE,
        XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ, XEN_NETIF_CTRL_HASH_TYPE_IPV4,
        XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP, XEN_NETIF_CTRL_HASH_TYPE_IPV6,
        XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP, XEN_NETIF_CTRLF_GREF_READONLY);

    // ---- grant (grant_table.h) ----
    layout!(
        e,
        "struct grant_entry_v1",
        grant::GrantEntryV1 {
            flags,
            domid,
            frame
        }
    );
    layout!(
        e,
        "struct grant_entry_header",
        grant::GrantEntryHeader { flags, domid }
    );
    layout!(e, "union grant_entry_v2", grant::GrantEntryV2 { hdr });
    e.add(
        "sizeof(grant_entry_header_t)",
        "grant::GrantEntryV2.body",
        offset_of!(grant::GrantEntryV2, body),
    );
    e.add(
        "_Alignof(union grant_entry_v2)",
        "grant::GrantEntryV2",
        align_of::<grant::GrantEntryV2>(),
    );
    layout!(e, "union grant_entry_v2", grant::GrantEntryV2FullPage {
        "full_page.hdr" = hdr, "full_page.pad0" = pad0, "full_page.frame" = frame
    });
    layout!(e, "union grant_entry_v2", grant::GrantEntryV2SubPage {
        "sub_page.hdr" = hdr, "sub_page.page_off" = page_off, "sub_page.length" = length,
        "sub_page.frame" = frame
    });
    layout!(e, "union grant_entry_v2", grant::GrantEntryV2Transitive {
        "transitive.hdr" = hdr, "transitive.trans_domid" = trans_domid,
        "transitive.pad0" = pad0, "transitive.gref" = gref
    });
    e.add(
        "sizeof(((union grant_entry_v2 *)0)->full_page)",
        "grant::GrantEntryV2FullPage",
        size_of::<grant::GrantEntryV2FullPage>(),
    );
    e.add(
        "sizeof(((union grant_entry_v2 *)0)->sub_page)",
        "grant::GrantEntryV2SubPage",
        size_of::<grant::GrantEntryV2SubPage>(),
    );
    // The C transitive member is 12 bytes; the Rust view adds `_pad1`.
    e.add(
        "sizeof(((union grant_entry_v2 *)0)->transitive)",
        "grant::GrantEntryV2Transitive._pad1",
        offset_of!(grant::GrantEntryV2Transitive, _pad1),
    );
    e.add(
        "sizeof(((union grant_entry_v2 *)0)->__spacer)",
        "grant::GrantEntryV2Transitive",
        size_of::<grant::GrantEntryV2Transitive>(),
    );
    named!(e,
        "4096 / sizeof(grant_entry_v1_t)" => grant::ENTRIES_PER_FRAME_V1,
        "4096 / sizeof(grant_entry_v2_t)" => grant::ENTRIES_PER_FRAME_V2,
        "4096 / sizeof(grant_status_t)" => grant::STATUS_ENTRIES_PER_FRAME,
        "_GNTMAP_guest_avail0" => grant::GNTMAP_GUEST_AVAIL0,
    );
    consts!(e, grant: GNTTAB_NR_RESERVED_ENTRIES, GNTTAB_RESERVED_CONSOLE,
        GNTTAB_RESERVED_XENSTORE, GTF_INVALID, GTF_PERMIT_ACCESS, GTF_ACCEPT_TRANSFER,
        GTF_TRANSITIVE, GTF_TYPE_MASK, GTF_READONLY, GTF_READING, GTF_WRITING, GTF_PWT, GTF_PCD,
        GTF_PAT, GTF_SUB_PAGE, GTF_TRANSFER_COMMITTED, GTF_TRANSFER_COMPLETED,
        GNTTABOP_MAP_GRANT_REF, GNTTABOP_UNMAP_GRANT_REF, GNTTABOP_SETUP_TABLE,
        GNTTABOP_DUMP_TABLE, GNTTABOP_TRANSFER, GNTTABOP_COPY, GNTTABOP_QUERY_SIZE,
        GNTTABOP_UNMAP_AND_REPLACE, GNTTABOP_SET_VERSION, GNTTABOP_GET_STATUS_FRAMES,
        GNTTABOP_GET_VERSION, GNTTABOP_SWAP_GRANT_REF, GNTTABOP_CACHE_FLUSH,
        GNTMAP_DEVICE_MAP, GNTMAP_HOST_MAP, GNTMAP_READONLY, GNTMAP_APPLICATION_MAP,
        GNTMAP_CONTAINS_PTE, GNTMAP_GUEST_AVAIL_MASK, GNTCOPY_SOURCE_GREF, GNTCOPY_DEST_GREF,
        GNTTAB_CACHE_CLEAN, GNTTAB_CACHE_INVAL, GNTTAB_CACHE_SOURCE_GREF,
        GNTST_OKAY, GNTST_GENERAL_ERROR, GNTST_BAD_DOMAIN, GNTST_BAD_GNTREF, GNTST_BAD_HANDLE,
        GNTST_BAD_VIRT_ADDR, GNTST_BAD_DEV_ADDR, GNTST_NO_DEVICE_SPACE, GNTST_PERMISSION_DENIED,
        GNTST_BAD_PAGE, GNTST_BAD_COPY_ARG, GNTST_ADDRESS_TOO_BIG, GNTST_EAGAIN, GNTST_NO_SPACE);
    layout!(e, "struct gnttab_map_grant_ref", grant::MapGrantRef {
        host_addr, flags, "ref" = ref_, dom, status, handle, dev_bus_addr
    });
    layout!(
        e,
        "struct gnttab_unmap_grant_ref",
        grant::UnmapGrantRef {
            host_addr,
            dev_bus_addr,
            handle,
            status
        }
    );
    layout!(
        e,
        "struct gnttab_unmap_and_replace",
        grant::UnmapAndReplace {
            host_addr,
            new_addr,
            handle,
            status
        }
    );
    layout!(
        e,
        "struct gnttab_setup_table",
        grant::SetupTable {
            dom,
            nr_frames,
            status,
            frame_list
        }
    );
    layout!(
        e,
        "struct gnttab_dump_table",
        grant::DumpTable { dom, status }
    );
    layout!(e, "struct gnttab_transfer", grant::Transfer { mfn, domid, "ref" = ref_, status });
    layout!(
        e,
        "struct gnttab_copy_ptr",
        grant::CopyPtr { u, domid, offset }
    );
    layout!(
        e,
        "struct gnttab_copy",
        grant::GrantCopy {
            source,
            dest,
            len,
            flags,
            status
        }
    );
    for side in ["source", "dest"] {
        let base = if side == "source" {
            offset_of!(grant::GrantCopy, source)
        } else {
            offset_of!(grant::GrantCopy, dest)
        };
        for (c, rust, off) in [
            ("u.ref", "grant::CopyPtr.u", offset_of!(grant::CopyPtr, u)),
            ("u.gmfn", "grant::CopyPtr.u", offset_of!(grant::CopyPtr, u)),
            (
                "domid",
                "grant::CopyPtr.domid",
                offset_of!(grant::CopyPtr, domid),
            ),
            (
                "offset",
                "grant::CopyPtr.offset",
                offset_of!(grant::CopyPtr, offset),
            ),
        ] {
            e.add(
                format!("offsetof(struct gnttab_copy, {side}.{c})"),
                rust,
                base + off,
            );
        }
    }
    layout!(
        e,
        "struct gnttab_query_size",
        grant::QuerySize {
            dom,
            nr_frames,
            max_nr_frames,
            status
        }
    );
    layout!(
        e,
        "struct gnttab_set_version",
        grant::SetVersion { version }
    );
    layout!(
        e,
        "struct gnttab_get_version",
        grant::GetVersion { dom, pad, version }
    );
    layout!(
        e,
        "struct gnttab_get_status_frames",
        grant::GetStatusFrames {
            nr_frames,
            dom,
            status,
            frame_list
        }
    );
    layout!(
        e,
        "struct gnttab_swap_grant_ref",
        grant::SwapGrantRef {
            ref_a,
            ref_b,
            status
        }
    );
    layout!(e, "struct gnttab_cache_flush", grant::CacheFlush {
        a, "a.dev_bus_addr" = a, "a.ref" = a, offset, length, op
    });

    // ---- evtchn (event_channel.h, xen.h, xen/errno.h) ----
    consts!(e, evtchn: EVTCHNOP_BIND_INTERDOMAIN, EVTCHNOP_BIND_VIRQ, EVTCHNOP_BIND_PIRQ,
        EVTCHNOP_CLOSE, EVTCHNOP_SEND, EVTCHNOP_STATUS, EVTCHNOP_ALLOC_UNBOUND,
        EVTCHNOP_BIND_IPI, EVTCHNOP_BIND_VCPU, EVTCHNOP_UNMASK, EVTCHNOP_RESET,
        EVTCHNOP_INIT_CONTROL, EVTCHNOP_EXPAND_ARRAY, EVTCHNOP_SET_PRIORITY,
        EVTCHNSTAT_CLOSED, EVTCHNSTAT_UNBOUND, EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_PIRQ,
        EVTCHNSTAT_VIRQ, EVTCHNSTAT_IPI, VIRQ_TIMER, VIRQ_DEBUG, VIRQ_CONSOLE, VIRQ_DOM_EXC,
        VIRQ_TBUF, VIRQ_DEBUGGER, VIRQ_XENOPROF, VIRQ_CON_RING, VIRQ_PCPU_STATE, VIRQ_MEM_EVENT,
        VIRQ_ARGO, VIRQ_ENOMEM, VIRQ_XENPMU, VIRQ_ARCH_0, VIRQ_ARCH_1, VIRQ_ARCH_2, VIRQ_ARCH_3,
        VIRQ_ARCH_4, VIRQ_ARCH_5, VIRQ_ARCH_6, VIRQ_ARCH_7, NR_VIRQS, EVTCHN_2L_NR_CHANNELS,
        XEN_LEGACY_MAX_VCPUS, XEN_PVCLOCK_TSC_STABLE_BIT, XEN_PVCLOCK_GUEST_STOPPED,
        EVTCHN_FIFO_PRIORITY_MAX, EVTCHN_FIFO_PRIORITY_DEFAULT, EVTCHN_FIFO_PRIORITY_MIN,
        EVTCHN_FIFO_MAX_QUEUES, EVTCHN_FIFO_PENDING, EVTCHN_FIFO_MASKED, EVTCHN_FIFO_LINKED,
        EVTCHN_FIFO_BUSY, EVTCHN_FIFO_LINK_BITS, EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_NR_CHANNELS);
    named!(e,
        "BIND_PIRQ__WILL_SHARE" => evtchn::BIND_PIRQ_WILL_SHARE,
        "sizeof(xen_ulong_t) * 8" => evtchn::EVTCHN_2L_BITS_PER_WORD,
        "4096 / sizeof(event_word_t)" => evtchn::EVTCHN_FIFO_EVENT_WORDS_PER_PAGE,
        "XEN_EPERM" => evtchn::xen_errno::EPERM,
        "XEN_ENOENT" => evtchn::xen_errno::ENOENT,
        "XEN_ESRCH" => evtchn::xen_errno::ESRCH,
        "XEN_EAGAIN" => evtchn::xen_errno::EAGAIN,
        "XEN_ENOMEM" => evtchn::xen_errno::ENOMEM,
        "XEN_EACCES" => evtchn::xen_errno::EACCES,
        "XEN_EFAULT" => evtchn::xen_errno::EFAULT,
        "XEN_EBUSY" => evtchn::xen_errno::EBUSY,
        "XEN_EEXIST" => evtchn::xen_errno::EEXIST,
        "XEN_EINVAL" => evtchn::xen_errno::EINVAL,
        "XEN_ENOSPC" => evtchn::xen_errno::ENOSPC,
        "XEN_ENOSYS" => evtchn::xen_errno::ENOSYS,
        "XEN_EOPNOTSUPP" => evtchn::xen_errno::EOPNOTSUPP,
    );
    layout!(
        e,
        "struct evtchn_alloc_unbound",
        evtchn::AllocUnbound {
            dom,
            remote_dom,
            port
        }
    );
    layout!(
        e,
        "struct evtchn_bind_interdomain",
        evtchn::BindInterdomain {
            remote_dom,
            remote_port,
            local_port
        }
    );
    layout!(
        e,
        "struct evtchn_bind_virq",
        evtchn::BindVirq { virq, vcpu, port }
    );
    layout!(
        e,
        "struct evtchn_bind_pirq",
        evtchn::BindPirq { pirq, flags, port }
    );
    layout!(e, "struct evtchn_bind_ipi", evtchn::BindIpi { vcpu, port });
    layout!(e, "struct evtchn_close", evtchn::Close { port });
    layout!(e, "struct evtchn_send", evtchn::Send { port });
    layout!(e, "struct evtchn_unmask", evtchn::Unmask { port });
    layout!(
        e,
        "struct evtchn_status",
        evtchn::Status {
            dom,
            port,
            status,
            vcpu,
            u
        }
    );
    {
        let u = offset_of!(evtchn::Status, u);
        for (c, off) in [
            ("u.unbound.dom", 0),
            ("u.interdomain.dom", 0),
            ("u.interdomain.port", size_of::<u32>()),
            ("u.pirq", 0),
            ("u.virq", 0),
        ] {
            e.add(
                format!("offsetof(struct evtchn_status, {c})"),
                "evtchn::Status.u",
                u + off,
            );
        }
    }
    layout!(
        e,
        "struct evtchn_bind_vcpu",
        evtchn::BindVcpu { port, vcpu }
    );
    layout!(e, "struct evtchn_reset", evtchn::Reset { dom });
    layout!(
        e,
        "struct evtchn_init_control",
        evtchn::InitControl {
            control_gfn,
            offset,
            vcpu,
            link_bits,
            _pad
        }
    );
    layout!(
        e,
        "struct evtchn_expand_array",
        evtchn::ExpandArray { array_gfn }
    );
    layout!(
        e,
        "struct evtchn_set_priority",
        evtchn::SetPriority { port, priority }
    );
    layout!(e, "struct evtchn_op", evtchn::EvtchnOp { cmd, u });
    layout!(
        e,
        "struct vcpu_time_info",
        evtchn::VcpuTimeInfo {
            version,
            pad0,
            tsc_timestamp,
            system_time,
            tsc_to_system_mul,
            tsc_shift,
            flags,
            pad1
        }
    );
    layout!(
        e,
        "struct arch_vcpu_info",
        evtchn::ArchVcpuInfo { cr2, pad }
    );
    layout!(
        e,
        "struct vcpu_info",
        evtchn::VcpuInfo {
            evtchn_upcall_pending,
            evtchn_upcall_mask,
            evtchn_pending_sel,
            arch,
            time
        }
    );
    layout!(
        e,
        "struct arch_shared_info",
        evtchn::ArchSharedInfo {
            max_pfn,
            pfn_to_mfn_frame_list_list,
            nmi_reason,
            p2m_cr3,
            p2m_vaddr,
            p2m_generation
        }
    );
    layout!(
        e,
        "struct shared_info",
        evtchn::SharedInfo {
            vcpu_info,
            evtchn_pending,
            evtchn_mask,
            wc_version,
            wc_sec,
            wc_nsec,
            wc_sec_hi,
            arch
        }
    );
    layout!(
        e,
        "struct evtchn_fifo_control_block",
        evtchn::FifoControlBlock { ready, _rsvd, head }
    );

    // ---- xenbus (io/xenbus.h, io/xs_wire.h) ----
    for s in xenbus::XenbusState::ALL {
        e.add(
            format!("XenbusState{}", s.name()),
            format!("xenbus::XenbusState::{}", s.name()),
            s,
        );
    }
    consts!(e, xenbus: XS_CONTROL, XS_DEBUG, XS_DIRECTORY, XS_READ, XS_GET_PERMS, XS_WATCH,
        XS_UNWATCH, XS_TRANSACTION_START, XS_TRANSACTION_END, XS_INTRODUCE, XS_RELEASE,
        XS_GET_DOMAIN_PATH, XS_WRITE, XS_MKDIR, XS_RM, XS_SET_PERMS, XS_WATCH_EVENT, XS_ERROR,
        XS_IS_DOMAIN_INTRODUCED, XS_RESUME, XS_SET_TARGET, XS_RESET_WATCHES, XS_DIRECTORY_PART,
        XS_GET_FEATURE, XS_SET_FEATURE, XS_GET_QUOTA, XS_SET_QUOTA, XS_INVALID, XS_WATCH_PATH,
        XS_WATCH_TOKEN, XENSTORE_PAYLOAD_MAX, XENSTORE_ABS_PATH_MAX, XENSTORE_REL_PATH_MAX,
        XENSTORE_RING_SIZE, XENSTORE_SERVER_FEATURE_RECONNECTION, XENSTORE_SERVER_FEATURE_ERROR,
        XENSTORE_SERVER_FEATURE_WATCHDEPTH, XENSTORE_SERVER_FEATURE_DOMID_ANY,
        XENSTORE_CONNECTED, XENSTORE_RECONNECT, XENSTORE_ERROR_NONE, XENSTORE_ERROR_COMM,
        XENSTORE_ERROR_RINGIDX, XENSTORE_ERROR_PROTO);
    layout!(e, "struct xsd_sockmsg", xenbus::XsdSockmsg { "type" = type_, req_id, tx_id, len });
    layout!(
        e,
        "struct xenstore_domain_interface",
        xenbus::XenstoreDomainInterface {
            req,
            rsp,
            req_cons,
            req_prod,
            rsp_cons,
            rsp_prod,
            server_features,
            connection,
            error,
            evtchn_port
        }
    );
    named!(e,
        "offsetof(struct xenstore_domain_interface, error) + 4"
            => xenbus::XENSTORE_DOMAIN_INTERFACE_SIZE_XEN_4_17,
    );
    e.add(
        "count(xsd_errors)",
        "xenbus::XS_ERRORS",
        xenbus::XS_ERRORS.len(),
    );
    for (i, (name, errno)) in xenbus::XS_ERRORS.iter().enumerate() {
        e.add(
            format!("xsd_errors[{i}].{name}"),
            "xenbus::XS_ERRORS",
            *errno,
        );
    }

    // ---- linux (gntdev.h, gntalloc.h, evtchn.h) ----
    layout!(e, "struct ioctl_gntdev_grant_ref", linux::gntdev::IoctlGntdevGrantRef { domid, "ref" = ref_ });
    layout!(
        e,
        "struct ioctl_gntdev_map_grant_ref",
        linux::gntdev::IoctlGntdevMapGrantRef {
            count,
            pad,
            index,
            refs
        }
    );
    named!(e,
        "offsetof(struct ioctl_gntdev_map_grant_ref, refs)"
            => linux::gntdev::IOCTL_GNTDEV_MAP_GRANT_REF_REFS_OFFSET,
        "offsetof(struct ioctl_gntalloc_alloc_gref, gref_ids)"
            => linux::gntalloc::IOCTL_GNTALLOC_ALLOC_GREF_IDS_OFFSET,
    );
    e.add(
        "sizeof(struct ioctl_gntdev_map_grant_ref) + 3 * sizeof(struct ioctl_gntdev_grant_ref)",
        "linux::gntdev::ioctl_gntdev_map_grant_ref_size(4)",
        linux::gntdev::ioctl_gntdev_map_grant_ref_size(4),
    );
    layout!(
        e,
        "struct ioctl_gntdev_unmap_grant_ref",
        linux::gntdev::IoctlGntdevUnmapGrantRef { index, count, pad }
    );
    layout!(
        e,
        "struct ioctl_gntdev_get_offset_for_vaddr",
        linux::gntdev::IoctlGntdevGetOffsetForVaddr {
            vaddr,
            offset,
            count,
            pad
        }
    );
    layout!(
        e,
        "struct ioctl_gntdev_set_max_grants",
        linux::gntdev::IoctlGntdevSetMaxGrants { count }
    );
    layout!(
        e,
        "struct ioctl_gntdev_unmap_notify",
        linux::gntdev::IoctlGntdevUnmapNotify {
            index,
            action,
            event_channel_port
        }
    );
    layout!(
        e,
        "struct gntdev_grant_copy_segment",
        linux::gntdev::GntdevGrantCopySegment {
            source,
            dest,
            len,
            flags,
            status
        }
    );
    for side in ["source", "dest"] {
        let base = if side == "source" {
            offset_of!(linux::gntdev::GntdevGrantCopySegment, source)
        } else {
            offset_of!(linux::gntdev::GntdevGrantCopySegment, dest)
        };
        for (c, rust, off) in [
            (
                "virt",
                "linux::gntdev::GntdevCopyPtr.raw",
                offset_of!(linux::gntdev::GntdevCopyPtr, raw),
            ),
            (
                "foreign.ref",
                "linux::gntdev::GntdevCopyForeign.ref_",
                offset_of!(linux::gntdev::GntdevCopyForeign, ref_),
            ),
            (
                "foreign.offset",
                "linux::gntdev::GntdevCopyForeign.offset",
                offset_of!(linux::gntdev::GntdevCopyForeign, offset),
            ),
            (
                "foreign.domid",
                "linux::gntdev::GntdevCopyForeign.domid",
                offset_of!(linux::gntdev::GntdevCopyForeign, domid),
            ),
        ] {
            e.add(
                format!("offsetof(struct gntdev_grant_copy_segment, {side}.{c})"),
                rust,
                base + off,
            );
        }
    }
    e.add(
        "sizeof(((struct gntdev_grant_copy_segment *)0)->source)",
        "linux::gntdev::GntdevCopyPtr",
        size_of::<linux::gntdev::GntdevCopyPtr>(),
    );
    e.add(
        "sizeof(((struct gntdev_grant_copy_segment *)0)->source.foreign)",
        "linux::gntdev::GntdevCopyForeign",
        size_of::<linux::gntdev::GntdevCopyForeign>(),
    );
    layout!(
        e,
        "struct ioctl_gntdev_grant_copy",
        linux::gntdev::IoctlGntdevGrantCopy { count, segments }
    );
    layout!(
        e,
        "struct ioctl_gntdev_dmabuf_exp_from_refs",
        linux::gntdev::IoctlGntdevDmabufExpFromRefs {
            flags,
            count,
            fd,
            domid,
            refs
        }
    );
    layout!(
        e,
        "struct ioctl_gntdev_dmabuf_exp_wait_released",
        linux::gntdev::IoctlGntdevDmabufExpWaitReleased { fd, wait_to_ms }
    );
    layout!(
        e,
        "struct ioctl_gntdev_dmabuf_imp_to_refs",
        linux::gntdev::IoctlGntdevDmabufImpToRefs {
            fd,
            count,
            domid,
            reserved,
            refs
        }
    );
    layout!(
        e,
        "struct ioctl_gntdev_dmabuf_imp_release",
        linux::gntdev::IoctlGntdevDmabufImpRelease { fd, reserved }
    );
    layout!(
        e,
        "struct ioctl_gntalloc_alloc_gref",
        linux::gntalloc::IoctlGntallocAllocGref {
            domid,
            flags,
            count,
            index,
            gref_ids
        }
    );
    layout!(
        e,
        "struct ioctl_gntalloc_dealloc_gref",
        linux::gntalloc::IoctlGntallocDeallocGref { index, count }
    );
    layout!(
        e,
        "struct ioctl_gntalloc_unmap_notify",
        linux::gntalloc::IoctlGntallocUnmapNotify {
            index,
            action,
            event_channel_port
        }
    );
    layout!(
        e,
        "struct ioctl_evtchn_bind_virq",
        linux::evtchn_dev::IoctlEvtchnBindVirq { virq }
    );
    layout!(
        e,
        "struct ioctl_evtchn_bind_interdomain",
        linux::evtchn_dev::IoctlEvtchnBindInterdomain {
            remote_domain,
            remote_port
        }
    );
    layout!(
        e,
        "struct ioctl_evtchn_bind_unbound_port",
        linux::evtchn_dev::IoctlEvtchnBindUnboundPort { remote_domain }
    );
    layout!(
        e,
        "struct ioctl_evtchn_unbind",
        linux::evtchn_dev::IoctlEvtchnUnbind { port }
    );
    layout!(
        e,
        "struct ioctl_evtchn_notify",
        linux::evtchn_dev::IoctlEvtchnNotify { port }
    );
    layout!(
        e,
        "struct ioctl_evtchn_restrict_domid",
        linux::evtchn_dev::IoctlEvtchnRestrictDomid { domid }
    );
    layout!(
        e,
        "struct ioctl_evtchn_bind_static",
        linux::evtchn_dev::IoctlEvtchnBindStatic { port }
    );
    consts!(e, linux: UNMAP_NOTIFY_CLEAR_BYTE, UNMAP_NOTIFY_SEND_EVENT);
    consts!(e, linux::gntdev: GNTDEV_DMA_FLAG_WC, GNTDEV_DMA_FLAG_COHERENT,
        IOCTL_GNTDEV_MAP_GRANT_REF, IOCTL_GNTDEV_UNMAP_GRANT_REF,
        IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR, IOCTL_GNTDEV_SET_MAX_GRANTS,
        IOCTL_GNTDEV_SET_UNMAP_NOTIFY, IOCTL_GNTDEV_GRANT_COPY,
        IOCTL_GNTDEV_DMABUF_EXP_FROM_REFS, IOCTL_GNTDEV_DMABUF_EXP_WAIT_RELEASED,
        IOCTL_GNTDEV_DMABUF_IMP_TO_REFS, IOCTL_GNTDEV_DMABUF_IMP_RELEASE);
    consts!(e, linux::gntalloc: GNTALLOC_FLAG_WRITABLE, IOCTL_GNTALLOC_ALLOC_GREF,
        IOCTL_GNTALLOC_DEALLOC_GREF, IOCTL_GNTALLOC_SET_UNMAP_NOTIFY);
    consts!(e, linux::evtchn_dev: IOCTL_EVTCHN_BIND_VIRQ, IOCTL_EVTCHN_BIND_INTERDOMAIN,
        IOCTL_EVTCHN_BIND_UNBOUND_PORT, IOCTL_EVTCHN_UNBIND, IOCTL_EVTCHN_NOTIFY,
        IOCTL_EVTCHN_RESET, IOCTL_EVTCHN_RESTRICT_DOMID, IOCTL_EVTCHN_BIND_STATIC);

    e.items
}

/// The i386 values, checked with `cc -m32`. Each key is a C expression.
fn expect_i386() -> Vec<Item> {
    use pvio_abi::{blkif, evtchn, ring};
    let mut e = Expect::default();
    layout!(
        e,
        "struct blkif_request_segment",
        blkif::RequestSegment {
            gref,
            first_sect,
            last_sect
        }
    );
    layout!(
        e,
        "struct blkif_request",
        blkif::x86_32::Request {
            operation,
            nr_segments,
            handle,
            id,
            sector_number,
            seg
        }
    );
    layout!(
        e,
        "struct blkif_request_discard",
        blkif::x86_32::RequestDiscard {
            operation,
            flag,
            handle,
            id,
            sector_number,
            nr_sectors
        }
    );
    layout!(
        e,
        "struct blkif_request_indirect",
        blkif::x86_32::RequestIndirect {
            operation,
            indirect_op,
            nr_segments,
            id,
            sector_number,
            handle,
            indirect_grefs,
            pad
        }
    );
    layout!(
        e,
        "struct blkif_response",
        blkif::x86_32::Response {
            id,
            operation,
            status
        }
    );
    named!(e,
        "sizeof(union blkif_sring_entry)" => blkif::x86_32::RING_ENTRY_SIZE,
        "__CONST_RING_SIZE(blkif, 4096)" => blkif::x86_32::RING_SLOTS,
        "offsetof(struct blkif_sring, ring)" => ring::SRING_HEADER_SIZE,
        "EVTCHN_2L_NR_CHANNELS" => evtchn::EVTCHN_2L_NR_CHANNELS_X86_32,
    );
    e.items
}

/// Names the installed headers may lack (newer than Xen 4.17 / the Linux
/// UAPI installed), with the reason. Compared when present.
const MAY_BE_ABSENT: &[(&str, &str)] = &[
    (
        "offsetof(struct xenstore_domain_interface, evtchn_port)",
        "added after Xen 4.17",
    ),
    ("XS_GET_FEATURE", "added to xs_wire.h after Xen 4.17"),
    ("XS_SET_FEATURE", "added to xs_wire.h after Xen 4.17"),
    ("XS_GET_QUOTA", "added to xs_wire.h after Xen 4.17"),
    ("XS_SET_QUOTA", "added to xs_wire.h after Xen 4.17"),
    ("XENSTORE_SERVER_FEATURE_WATCHDEPTH", "added after Xen 4.17"),
    ("XENSTORE_SERVER_FEATURE_DOMID_ANY", "added after Xen 4.17"),
    ("IOCTL_EVTCHN_BIND_STATIC", "Linux UAPI newer than 6.1"),
    (
        "sizeof(struct ioctl_evtchn_bind_static)",
        "Linux UAPI newer than 6.1",
    ),
    (
        "offsetof(struct ioctl_evtchn_bind_static, port)",
        "Linux UAPI newer than 6.1",
    ),
];

/// Public items with no C counterpart in any installed header.
const RUST_ONLY: &[(&str, &str)] = &[
    (
        "grant::DEFAULT_MAX_GRANT_FRAMES",
        "hypervisor default (gnttab_max_frames), not a header constant",
    ),
    (
        "evtchn::EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES",
        "hypervisor limit, not a header constant",
    ),
    (
        "netif::XEN_NETIF_EXTRA_TYPE_XDP",
        "Linux kernel's include/xen/interface/io/netif.h only",
    ),
    (
        "netif::XEN_NETIF_EXTRA_TYPE_MAX_LINUX",
        "Linux kernel's netif.h only",
    ),
    (
        "netif::XEN_NETIF_MAX_XDP_HEADROOM",
        "Linux kernel's netif.h only",
    ),
    (
        "netif::ExtraXdp.headroom",
        "Linux kernel's netif.h only (u.xdp)",
    ),
    ("netif::ExtraXdp.pad", "Linux kernel's netif.h only (u.xdp)"),
    (
        "blkif::SECTOR_SHIFT",
        "512-byte sectors are stated in blkif.h prose only",
    ),
    (
        "blkif::SECTOR_SIZE",
        "512-byte sectors are stated in blkif.h prose only",
    ),
    (
        "blkif::SECTORS_PER_PAGE",
        "derived from the 512-byte sector rule",
    ),
    (
        "blkif::MAX_RING_PAGE_ORDER",
        "Linux XENBUS_MAX_RING_GRANT_ORDER, kernel-internal",
    ),
];

/// Matching key: no whitespace, upper case.
fn norm(key: &str) -> String {
    key.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase()
}

// ===========================================================================
// The C side
// ===========================================================================

const C_PROGRAM: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>      /* before xs_wire.h, which then defines xsd_errors[] */
#include <sys/ioctl.h>  /* _IOC for the Linux UAPI headers */
#include <xen/xen.h>
#include <xen/io/ring.h>
#include <xen/io/blkif.h>
#include <xen/io/netif.h>
#include <xen/grant_table.h>
#include <xen/event_channel.h>
#include <xen/io/xs_wire.h>
#include <xen/io/xenbus.h>
#include <xen/errno.h>
/* Linux UAPI (linux-libc-dev); they use Xen's domid_t / grant_ref_t. */
#include <xen/gntdev.h>
#include <xen/gntalloc.h>
#include <xen/evtchn.h>

#define S(t)    printf("sizeof(%s) %lld\n", #t, (long long)sizeof(t))
#define O(t, f) printf("offsetof(%s, %s) %lld\n", #t, #f, (long long)offsetof(t, f))
#define K(c)    printf("%s %lld\n", #c, (long long)(c))
#define E(x)    printf("%s %lld\n", #x, (long long)(x))
#define ABSENT(n) printf("%s absent\n", n)

int main(void)
{
    size_t i;

    /* ---- types ---- */
    S(domid_t); S(grant_ref_t); S(evtchn_port_t); S(grant_handle_t); S(xen_pfn_t);
    S(xen_ulong_t); S(grant_status_t); S(RING_IDX); S(event_word_t); S(XENSTORE_RING_IDX);
    S(blkif_vdev_t); S(blkif_sector_t);
    K(XEN_PAGE_SHIFT); E(1 << XEN_PAGE_SHIFT);
    K(__HYPERVISOR_grant_table_op); K(__HYPERVISOR_event_channel_op);
    K(__HYPERVISOR_event_channel_op_compat);
    K(DOMID_FIRST_RESERVED); K(DOMID_SELF); K(DOMID_IO); K(DOMID_XEN); K(DOMID_COW);
    K(DOMID_INVALID); K(DOMID_IDLE);

    /* ---- ring.h ---- */
    O(struct blkif_sring, req_prod); O(struct blkif_sring, req_event);
    O(struct blkif_sring, rsp_prod); O(struct blkif_sring, rsp_event);
    O(struct blkif_sring, pvt); O(struct blkif_sring, __pad); O(struct blkif_sring, ring);
    O(struct netif_tx_sring, req_prod); O(struct netif_tx_sring, req_event);
    O(struct netif_tx_sring, rsp_prod); O(struct netif_tx_sring, rsp_event);
    O(struct netif_tx_sring, pvt); O(struct netif_tx_sring, __pad);
    O(struct netif_tx_sring, ring); O(struct netif_rx_sring, ring);
    O(struct xen_netif_ctrl_sring, ring);

    /* ---- blkif.h ---- */
    K(BLKIF_OP_READ); K(BLKIF_OP_WRITE); K(BLKIF_OP_WRITE_BARRIER); K(BLKIF_OP_FLUSH_DISKCACHE);
    K(BLKIF_OP_RESERVED_1); K(BLKIF_OP_DISCARD); K(BLKIF_OP_INDIRECT);
    K(BLKIF_MAX_SEGMENTS_PER_REQUEST); K(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST);
    K(BLKIF_RSP_EOPNOTSUPP); K(BLKIF_RSP_ERROR); K(BLKIF_RSP_OKAY); K(BLKIF_DISCARD_SECURE);
    K(VDISK_CDROM); K(VDISK_REMOVABLE); K(VDISK_READONLY);
    E(4096 / sizeof(struct blkif_request_segment));
    S(struct blkif_request_segment); O(struct blkif_request_segment, gref);
    O(struct blkif_request_segment, first_sect); O(struct blkif_request_segment, last_sect);
    S(struct blkif_request); O(struct blkif_request, operation);
    O(struct blkif_request, nr_segments); O(struct blkif_request, handle);
    O(struct blkif_request, id); O(struct blkif_request, sector_number);
    O(struct blkif_request, seg);
    S(struct blkif_request_discard); O(struct blkif_request_discard, operation);
    O(struct blkif_request_discard, flag); O(struct blkif_request_discard, handle);
    O(struct blkif_request_discard, id); O(struct blkif_request_discard, sector_number);
    O(struct blkif_request_discard, nr_sectors);
    S(struct blkif_request_indirect); O(struct blkif_request_indirect, operation);
    O(struct blkif_request_indirect, indirect_op); O(struct blkif_request_indirect, nr_segments);
    O(struct blkif_request_indirect, id); O(struct blkif_request_indirect, sector_number);
    O(struct blkif_request_indirect, handle); O(struct blkif_request_indirect, indirect_grefs);
    S(struct blkif_response); O(struct blkif_response, id);
    O(struct blkif_response, operation); O(struct blkif_response, status);
    S(union blkif_sring_entry);
    E(__CONST_RING_SIZE(blkif, 4096));
    E(__CONST_RING_SIZE(blkif, 4096 << 1)); E(__CONST_RING_SIZE(blkif, 4096 << 2));
    E(__CONST_RING_SIZE(blkif, 4096 << 3)); E(__CONST_RING_SIZE(blkif, 4096 << 4));

    /* ---- netif.h ---- */
    S(struct netif_tx_request); O(struct netif_tx_request, gref);
    O(struct netif_tx_request, offset); O(struct netif_tx_request, flags);
    O(struct netif_tx_request, id); O(struct netif_tx_request, size);
    S(struct netif_tx_response); O(struct netif_tx_response, id);
    O(struct netif_tx_response, status);
    S(struct netif_rx_request); O(struct netif_rx_request, id);
    O(struct netif_rx_request, pad); O(struct netif_rx_request, gref);
    S(struct netif_rx_response); O(struct netif_rx_response, id);
    O(struct netif_rx_response, offset); O(struct netif_rx_response, flags);
    O(struct netif_rx_response, status);
    S(struct netif_extra_info); O(struct netif_extra_info, type);
    O(struct netif_extra_info, flags); O(struct netif_extra_info, u);
    O(struct netif_extra_info, u.gso.size); O(struct netif_extra_info, u.gso.type);
    O(struct netif_extra_info, u.gso.pad); O(struct netif_extra_info, u.gso.features);
    O(struct netif_extra_info, u.mcast.addr); O(struct netif_extra_info, u.hash.type);
    O(struct netif_extra_info, u.hash.algorithm); O(struct netif_extra_info, u.hash.value);
    O(struct netif_extra_info, u.pad);
    E(sizeof(((struct netif_extra_info *)0)->u));
    E(sizeof(((struct netif_extra_info *)0)->u.gso));
    E(sizeof(((struct netif_extra_info *)0)->u.mcast));
    E(sizeof(((struct netif_extra_info *)0)->u.hash));
    E(_Alignof(struct netif_extra_info));
    S(struct xen_netif_ctrl_request); O(struct xen_netif_ctrl_request, id);
    O(struct xen_netif_ctrl_request, type); O(struct xen_netif_ctrl_request, data);
    S(struct xen_netif_ctrl_response); O(struct xen_netif_ctrl_response, id);
    O(struct xen_netif_ctrl_response, type); O(struct xen_netif_ctrl_response, status);
    O(struct xen_netif_ctrl_response, data);
    S(struct xen_netif_gref); O(struct xen_netif_gref, ref);
    O(struct xen_netif_gref, flags); O(struct xen_netif_gref, status);
    S(union netif_tx_sring_entry); S(union netif_rx_sring_entry);
    S(union xen_netif_ctrl_sring_entry);
    E(__CONST_RING_SIZE(netif_tx, 4096)); E(__CONST_RING_SIZE(netif_rx, 4096));
    E(__CONST_RING_SIZE(xen_netif_ctrl, 4096));
    K(NETTXF_csum_blank); K(NETTXF_data_validated); K(NETTXF_more_data); K(NETTXF_extra_info);
    K(NETRXF_data_validated); K(NETRXF_csum_blank); K(NETRXF_more_data); K(NETRXF_extra_info);
    K(NETRXF_gso_prefix);
    K(NETIF_RSP_DROPPED); K(NETIF_RSP_ERROR); K(NETIF_RSP_OKAY); K(NETIF_RSP_NULL);
    K(XEN_NETIF_EXTRA_TYPE_NONE); K(XEN_NETIF_EXTRA_TYPE_GSO);
    K(XEN_NETIF_EXTRA_TYPE_MCAST_ADD); K(XEN_NETIF_EXTRA_TYPE_MCAST_DEL);
    K(XEN_NETIF_EXTRA_TYPE_HASH); K(XEN_NETIF_EXTRA_TYPE_MAX); K(XEN_NETIF_EXTRA_FLAG_MORE);
    K(XEN_NETIF_GSO_TYPE_NONE); K(XEN_NETIF_GSO_TYPE_TCPV4); K(XEN_NETIF_GSO_TYPE_TCPV6);
    K(XEN_NETIF_NR_SLOTS_MIN); K(XEN_NETIF_MAX_TX_SIZE);
    K(XEN_NETIF_CTRL_TYPE_INVALID); K(XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS);
    K(XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS); K(XEN_NETIF_CTRL_TYPE_SET_HASH_KEY);
    K(XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE); K(XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE);
    K(XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING); K(XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM);
    K(XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE); K(XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING);
    K(XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING);
    K(XEN_NETIF_CTRL_STATUS_SUCCESS); K(XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED);
    K(XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER); K(XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW);
    K(XEN_NETIF_CTRL_HASH_ALGORITHM_NONE); K(XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ);
    K(_XEN_NETIF_CTRL_HASH_TYPE_IPV4); K(_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP);
    K(_XEN_NETIF_CTRL_HASH_TYPE_IPV6); K(_XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP);
    K(XEN_NETIF_CTRL_HASH_TYPE_IPV4); K(XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP);
    K(XEN_NETIF_CTRL_HASH_TYPE_IPV6); K(XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP);
    K(XEN_NETIF_CTRLF_GREF_readonly);

    /* ---- grant_table.h ---- */
    S(struct grant_entry_v1); O(struct grant_entry_v1, flags);
    O(struct grant_entry_v1, domid); O(struct grant_entry_v1, frame);
    S(struct grant_entry_header); O(struct grant_entry_header, flags);
    O(struct grant_entry_header, domid);
    S(union grant_entry_v2); O(union grant_entry_v2, hdr);
    E(sizeof(grant_entry_header_t)); E(_Alignof(union grant_entry_v2));
    O(union grant_entry_v2, full_page.hdr); O(union grant_entry_v2, full_page.pad0);
    O(union grant_entry_v2, full_page.frame);
    O(union grant_entry_v2, sub_page.hdr); O(union grant_entry_v2, sub_page.page_off);
    O(union grant_entry_v2, sub_page.length); O(union grant_entry_v2, sub_page.frame);
    O(union grant_entry_v2, transitive.hdr); O(union grant_entry_v2, transitive.trans_domid);
    O(union grant_entry_v2, transitive.pad0); O(union grant_entry_v2, transitive.gref);
    E(sizeof(((union grant_entry_v2 *)0)->full_page));
    E(sizeof(((union grant_entry_v2 *)0)->sub_page));
    E(sizeof(((union grant_entry_v2 *)0)->transitive));
    E(sizeof(((union grant_entry_v2 *)0)->__spacer));
    E(4096 / sizeof(grant_entry_v1_t)); E(4096 / sizeof(grant_entry_v2_t));
    E(4096 / sizeof(grant_status_t));
    K(GNTTAB_NR_RESERVED_ENTRIES); K(GNTTAB_RESERVED_CONSOLE); K(GNTTAB_RESERVED_XENSTORE);
    K(GTF_invalid); K(GTF_permit_access); K(GTF_accept_transfer); K(GTF_transitive);
    K(GTF_type_mask); K(GTF_readonly); K(GTF_reading); K(GTF_writing); K(GTF_PWT); K(GTF_PCD);
    K(GTF_PAT); K(GTF_sub_page); K(GTF_transfer_committed); K(GTF_transfer_completed);
    K(GNTTABOP_map_grant_ref); K(GNTTABOP_unmap_grant_ref); K(GNTTABOP_setup_table);
    K(GNTTABOP_dump_table); K(GNTTABOP_transfer); K(GNTTABOP_copy); K(GNTTABOP_query_size);
    K(GNTTABOP_unmap_and_replace); K(GNTTABOP_set_version); K(GNTTABOP_get_status_frames);
    K(GNTTABOP_get_version); K(GNTTABOP_swap_grant_ref); K(GNTTABOP_cache_flush);
    K(GNTMAP_device_map); K(GNTMAP_host_map); K(GNTMAP_readonly); K(GNTMAP_application_map);
    K(GNTMAP_contains_pte); K(_GNTMAP_guest_avail0); K(GNTMAP_guest_avail_mask);
    K(GNTCOPY_source_gref); K(GNTCOPY_dest_gref);
    K(GNTTAB_CACHE_CLEAN); K(GNTTAB_CACHE_INVAL); K(GNTTAB_CACHE_SOURCE_GREF);
    K(GNTST_okay); K(GNTST_general_error); K(GNTST_bad_domain); K(GNTST_bad_gntref);
    K(GNTST_bad_handle); K(GNTST_bad_virt_addr); K(GNTST_bad_dev_addr);
    K(GNTST_no_device_space); K(GNTST_permission_denied); K(GNTST_bad_page);
    K(GNTST_bad_copy_arg); K(GNTST_address_too_big); K(GNTST_eagain); K(GNTST_no_space);
    S(struct gnttab_map_grant_ref); O(struct gnttab_map_grant_ref, host_addr);
    O(struct gnttab_map_grant_ref, flags); O(struct gnttab_map_grant_ref, ref);
    O(struct gnttab_map_grant_ref, dom); O(struct gnttab_map_grant_ref, status);
    O(struct gnttab_map_grant_ref, handle); O(struct gnttab_map_grant_ref, dev_bus_addr);
    S(struct gnttab_unmap_grant_ref); O(struct gnttab_unmap_grant_ref, host_addr);
    O(struct gnttab_unmap_grant_ref, dev_bus_addr); O(struct gnttab_unmap_grant_ref, handle);
    O(struct gnttab_unmap_grant_ref, status);
    S(struct gnttab_unmap_and_replace); O(struct gnttab_unmap_and_replace, host_addr);
    O(struct gnttab_unmap_and_replace, new_addr); O(struct gnttab_unmap_and_replace, handle);
    O(struct gnttab_unmap_and_replace, status);
    S(struct gnttab_setup_table); O(struct gnttab_setup_table, dom);
    O(struct gnttab_setup_table, nr_frames); O(struct gnttab_setup_table, status);
    O(struct gnttab_setup_table, frame_list);
    S(struct gnttab_dump_table); O(struct gnttab_dump_table, dom);
    O(struct gnttab_dump_table, status);
    S(struct gnttab_transfer); O(struct gnttab_transfer, mfn); O(struct gnttab_transfer, domid);
    O(struct gnttab_transfer, ref); O(struct gnttab_transfer, status);
    S(struct gnttab_copy_ptr); O(struct gnttab_copy_ptr, u); O(struct gnttab_copy_ptr, domid);
    O(struct gnttab_copy_ptr, offset);
    S(struct gnttab_copy); O(struct gnttab_copy, source); O(struct gnttab_copy, dest);
    O(struct gnttab_copy, len); O(struct gnttab_copy, flags); O(struct gnttab_copy, status);
    O(struct gnttab_copy, source.u.ref); O(struct gnttab_copy, source.u.gmfn);
    O(struct gnttab_copy, source.domid); O(struct gnttab_copy, source.offset);
    O(struct gnttab_copy, dest.u.ref); O(struct gnttab_copy, dest.u.gmfn);
    O(struct gnttab_copy, dest.domid); O(struct gnttab_copy, dest.offset);
    S(struct gnttab_query_size); O(struct gnttab_query_size, dom);
    O(struct gnttab_query_size, nr_frames); O(struct gnttab_query_size, max_nr_frames);
    O(struct gnttab_query_size, status);
    S(struct gnttab_set_version); O(struct gnttab_set_version, version);
    S(struct gnttab_get_version); O(struct gnttab_get_version, dom);
    O(struct gnttab_get_version, pad); O(struct gnttab_get_version, version);
    S(struct gnttab_get_status_frames); O(struct gnttab_get_status_frames, nr_frames);
    O(struct gnttab_get_status_frames, dom); O(struct gnttab_get_status_frames, status);
    O(struct gnttab_get_status_frames, frame_list);
    S(struct gnttab_swap_grant_ref); O(struct gnttab_swap_grant_ref, ref_a);
    O(struct gnttab_swap_grant_ref, ref_b); O(struct gnttab_swap_grant_ref, status);
    S(struct gnttab_cache_flush); O(struct gnttab_cache_flush, a);
    O(struct gnttab_cache_flush, a.dev_bus_addr); O(struct gnttab_cache_flush, a.ref);
    O(struct gnttab_cache_flush, offset); O(struct gnttab_cache_flush, length);
    O(struct gnttab_cache_flush, op);

    /* ---- event_channel.h, xen.h, errno.h ---- */
    K(EVTCHNOP_bind_interdomain); K(EVTCHNOP_bind_virq); K(EVTCHNOP_bind_pirq);
    K(EVTCHNOP_close); K(EVTCHNOP_send); K(EVTCHNOP_status); K(EVTCHNOP_alloc_unbound);
    K(EVTCHNOP_bind_ipi); K(EVTCHNOP_bind_vcpu); K(EVTCHNOP_unmask); K(EVTCHNOP_reset);
    K(EVTCHNOP_init_control); K(EVTCHNOP_expand_array); K(EVTCHNOP_set_priority);
    K(EVTCHNSTAT_closed); K(EVTCHNSTAT_unbound); K(EVTCHNSTAT_interdomain);
    K(EVTCHNSTAT_pirq); K(EVTCHNSTAT_virq); K(EVTCHNSTAT_ipi); K(BIND_PIRQ__WILL_SHARE);
    K(VIRQ_TIMER); K(VIRQ_DEBUG); K(VIRQ_CONSOLE); K(VIRQ_DOM_EXC); K(VIRQ_TBUF);
    K(VIRQ_DEBUGGER); K(VIRQ_XENOPROF); K(VIRQ_CON_RING); K(VIRQ_PCPU_STATE);
    K(VIRQ_MEM_EVENT); K(VIRQ_ARGO); K(VIRQ_ENOMEM); K(VIRQ_XENPMU); K(VIRQ_ARCH_0);
    K(VIRQ_ARCH_1); K(VIRQ_ARCH_2); K(VIRQ_ARCH_3); K(VIRQ_ARCH_4); K(VIRQ_ARCH_5);
    K(VIRQ_ARCH_6); K(VIRQ_ARCH_7); K(NR_VIRQS);
    K(EVTCHN_2L_NR_CHANNELS); E(sizeof(xen_ulong_t) * 8); K(XEN_LEGACY_MAX_VCPUS);
    K(XEN_PVCLOCK_TSC_STABLE_BIT); K(XEN_PVCLOCK_GUEST_STOPPED);
    K(EVTCHN_FIFO_PRIORITY_MAX); K(EVTCHN_FIFO_PRIORITY_DEFAULT); K(EVTCHN_FIFO_PRIORITY_MIN);
    K(EVTCHN_FIFO_MAX_QUEUES); K(EVTCHN_FIFO_PENDING); K(EVTCHN_FIFO_MASKED);
    K(EVTCHN_FIFO_LINKED); K(EVTCHN_FIFO_BUSY); K(EVTCHN_FIFO_LINK_BITS);
    K(EVTCHN_FIFO_LINK_MASK); K(EVTCHN_FIFO_NR_CHANNELS); E(4096 / sizeof(event_word_t));
    K(XEN_EPERM); K(XEN_ENOENT); K(XEN_ESRCH); K(XEN_EAGAIN); K(XEN_ENOMEM); K(XEN_EACCES);
    K(XEN_EFAULT); K(XEN_EBUSY); K(XEN_EEXIST); K(XEN_EINVAL); K(XEN_ENOSPC); K(XEN_ENOSYS);
    K(XEN_EOPNOTSUPP);
    S(struct evtchn_alloc_unbound); O(struct evtchn_alloc_unbound, dom);
    O(struct evtchn_alloc_unbound, remote_dom); O(struct evtchn_alloc_unbound, port);
    S(struct evtchn_bind_interdomain); O(struct evtchn_bind_interdomain, remote_dom);
    O(struct evtchn_bind_interdomain, remote_port); O(struct evtchn_bind_interdomain, local_port);
    S(struct evtchn_bind_virq); O(struct evtchn_bind_virq, virq);
    O(struct evtchn_bind_virq, vcpu); O(struct evtchn_bind_virq, port);
    S(struct evtchn_bind_pirq); O(struct evtchn_bind_pirq, pirq);
    O(struct evtchn_bind_pirq, flags); O(struct evtchn_bind_pirq, port);
    S(struct evtchn_bind_ipi); O(struct evtchn_bind_ipi, vcpu); O(struct evtchn_bind_ipi, port);
    S(struct evtchn_close); O(struct evtchn_close, port);
    S(struct evtchn_send); O(struct evtchn_send, port);
    S(struct evtchn_unmask); O(struct evtchn_unmask, port);
    S(struct evtchn_status); O(struct evtchn_status, dom); O(struct evtchn_status, port);
    O(struct evtchn_status, status); O(struct evtchn_status, vcpu); O(struct evtchn_status, u);
    O(struct evtchn_status, u.unbound.dom); O(struct evtchn_status, u.interdomain.dom);
    O(struct evtchn_status, u.interdomain.port); O(struct evtchn_status, u.pirq);
    O(struct evtchn_status, u.virq);
    S(struct evtchn_bind_vcpu); O(struct evtchn_bind_vcpu, port);
    O(struct evtchn_bind_vcpu, vcpu);
    S(struct evtchn_reset); O(struct evtchn_reset, dom);
    S(struct evtchn_init_control); O(struct evtchn_init_control, control_gfn);
    O(struct evtchn_init_control, offset); O(struct evtchn_init_control, vcpu);
    O(struct evtchn_init_control, link_bits); O(struct evtchn_init_control, _pad);
    S(struct evtchn_expand_array); O(struct evtchn_expand_array, array_gfn);
    S(struct evtchn_set_priority); O(struct evtchn_set_priority, port);
    O(struct evtchn_set_priority, priority);
    S(struct evtchn_op); O(struct evtchn_op, cmd); O(struct evtchn_op, u);
    S(struct vcpu_time_info); O(struct vcpu_time_info, version); O(struct vcpu_time_info, pad0);
    O(struct vcpu_time_info, tsc_timestamp); O(struct vcpu_time_info, system_time);
    O(struct vcpu_time_info, tsc_to_system_mul); O(struct vcpu_time_info, tsc_shift);
    O(struct vcpu_time_info, flags); O(struct vcpu_time_info, pad1);
    S(struct arch_vcpu_info); O(struct arch_vcpu_info, cr2); O(struct arch_vcpu_info, pad);
    S(struct vcpu_info); O(struct vcpu_info, evtchn_upcall_pending);
    O(struct vcpu_info, evtchn_upcall_mask); O(struct vcpu_info, evtchn_pending_sel);
    O(struct vcpu_info, arch); O(struct vcpu_info, time);
    S(struct arch_shared_info); O(struct arch_shared_info, max_pfn);
    O(struct arch_shared_info, pfn_to_mfn_frame_list_list);
    O(struct arch_shared_info, nmi_reason); O(struct arch_shared_info, p2m_cr3);
    O(struct arch_shared_info, p2m_vaddr); O(struct arch_shared_info, p2m_generation);
    S(struct shared_info); O(struct shared_info, vcpu_info);
    O(struct shared_info, evtchn_pending); O(struct shared_info, evtchn_mask);
    O(struct shared_info, wc_version); O(struct shared_info, wc_sec);
    O(struct shared_info, wc_nsec); O(struct shared_info, wc_sec_hi);
    O(struct shared_info, arch);
    S(struct evtchn_fifo_control_block); O(struct evtchn_fifo_control_block, ready);
    O(struct evtchn_fifo_control_block, _rsvd); O(struct evtchn_fifo_control_block, head);

    /* ---- xenbus.h, xs_wire.h ---- */
    K(XenbusStateUnknown); K(XenbusStateInitialising); K(XenbusStateInitWait);
    K(XenbusStateInitialised); K(XenbusStateConnected); K(XenbusStateClosing);
    K(XenbusStateClosed); K(XenbusStateReconfiguring); K(XenbusStateReconfigured);
    K(XS_CONTROL); K(XS_DEBUG); K(XS_DIRECTORY); K(XS_READ); K(XS_GET_PERMS); K(XS_WATCH);
    K(XS_UNWATCH); K(XS_TRANSACTION_START); K(XS_TRANSACTION_END); K(XS_INTRODUCE);
    K(XS_RELEASE); K(XS_GET_DOMAIN_PATH); K(XS_WRITE); K(XS_MKDIR); K(XS_RM); K(XS_SET_PERMS);
    K(XS_WATCH_EVENT); K(XS_ERROR); K(XS_IS_DOMAIN_INTRODUCED); K(XS_RESUME);
    K(XS_SET_TARGET); K(XS_RESET_WATCHES); K(XS_DIRECTORY_PART);
#ifdef PVIO_HAVE_XS_GET_FEATURE
    K(XS_GET_FEATURE);
#else
    ABSENT("XS_GET_FEATURE");
#endif
#ifdef PVIO_HAVE_XS_SET_FEATURE
    K(XS_SET_FEATURE);
#else
    ABSENT("XS_SET_FEATURE");
#endif
#ifdef PVIO_HAVE_XS_GET_QUOTA
    K(XS_GET_QUOTA);
#else
    ABSENT("XS_GET_QUOTA");
#endif
#ifdef PVIO_HAVE_XS_SET_QUOTA
    K(XS_SET_QUOTA);
#else
    ABSENT("XS_SET_QUOTA");
#endif
    K(XS_INVALID); K(XS_WATCH_PATH); K(XS_WATCH_TOKEN);
    K(XENSTORE_PAYLOAD_MAX); K(XENSTORE_ABS_PATH_MAX); K(XENSTORE_REL_PATH_MAX);
    K(XENSTORE_RING_SIZE); K(XENSTORE_SERVER_FEATURE_RECONNECTION);
    K(XENSTORE_SERVER_FEATURE_ERROR);
#ifdef XENSTORE_SERVER_FEATURE_WATCHDEPTH
    K(XENSTORE_SERVER_FEATURE_WATCHDEPTH);
#else
    ABSENT("XENSTORE_SERVER_FEATURE_WATCHDEPTH");
#endif
#ifdef XENSTORE_SERVER_FEATURE_DOMID_ANY
    K(XENSTORE_SERVER_FEATURE_DOMID_ANY);
#else
    ABSENT("XENSTORE_SERVER_FEATURE_DOMID_ANY");
#endif
    K(XENSTORE_CONNECTED); K(XENSTORE_RECONNECT); K(XENSTORE_ERROR_NONE);
    K(XENSTORE_ERROR_COMM); K(XENSTORE_ERROR_RINGIDX); K(XENSTORE_ERROR_PROTO);
    S(struct xsd_sockmsg); O(struct xsd_sockmsg, type); O(struct xsd_sockmsg, req_id);
    O(struct xsd_sockmsg, tx_id); O(struct xsd_sockmsg, len);
    S(struct xenstore_domain_interface); O(struct xenstore_domain_interface, req);
    O(struct xenstore_domain_interface, rsp); O(struct xenstore_domain_interface, req_cons);
    O(struct xenstore_domain_interface, req_prod); O(struct xenstore_domain_interface, rsp_cons);
    O(struct xenstore_domain_interface, rsp_prod);
    O(struct xenstore_domain_interface, server_features);
    O(struct xenstore_domain_interface, connection); O(struct xenstore_domain_interface, error);
#ifdef PVIO_HAVE_XS_EVTCHN_PORT
    O(struct xenstore_domain_interface, evtchn_port);
#else
    ABSENT("offsetof(struct xenstore_domain_interface, evtchn_port)");
#endif
    E(offsetof(struct xenstore_domain_interface, error) + 4);
    printf("count(xsd_errors) %zu\n", sizeof(xsd_errors) / sizeof(xsd_errors[0]));
    for (i = 0; i < sizeof(xsd_errors) / sizeof(xsd_errors[0]); i++)
        printf("xsd_errors[%zu].%s %d\n", i, xsd_errors[i].errstring, xsd_errors[i].errnum);

    /* ---- Linux UAPI: gntdev.h, gntalloc.h, evtchn.h ---- */
    S(struct ioctl_gntdev_grant_ref); O(struct ioctl_gntdev_grant_ref, domid);
    O(struct ioctl_gntdev_grant_ref, ref);
    S(struct ioctl_gntdev_map_grant_ref); O(struct ioctl_gntdev_map_grant_ref, count);
    O(struct ioctl_gntdev_map_grant_ref, pad); O(struct ioctl_gntdev_map_grant_ref, index);
    O(struct ioctl_gntdev_map_grant_ref, refs);
    E(sizeof(struct ioctl_gntdev_map_grant_ref) + 3 * sizeof(struct ioctl_gntdev_grant_ref));
    S(struct ioctl_gntdev_unmap_grant_ref); O(struct ioctl_gntdev_unmap_grant_ref, index);
    O(struct ioctl_gntdev_unmap_grant_ref, count); O(struct ioctl_gntdev_unmap_grant_ref, pad);
    S(struct ioctl_gntdev_get_offset_for_vaddr);
    O(struct ioctl_gntdev_get_offset_for_vaddr, vaddr);
    O(struct ioctl_gntdev_get_offset_for_vaddr, offset);
    O(struct ioctl_gntdev_get_offset_for_vaddr, count);
    O(struct ioctl_gntdev_get_offset_for_vaddr, pad);
    S(struct ioctl_gntdev_set_max_grants); O(struct ioctl_gntdev_set_max_grants, count);
    S(struct ioctl_gntdev_unmap_notify); O(struct ioctl_gntdev_unmap_notify, index);
    O(struct ioctl_gntdev_unmap_notify, action);
    O(struct ioctl_gntdev_unmap_notify, event_channel_port);
    S(struct gntdev_grant_copy_segment); O(struct gntdev_grant_copy_segment, source);
    O(struct gntdev_grant_copy_segment, dest); O(struct gntdev_grant_copy_segment, len);
    O(struct gntdev_grant_copy_segment, flags); O(struct gntdev_grant_copy_segment, status);
    O(struct gntdev_grant_copy_segment, source.virt);
    O(struct gntdev_grant_copy_segment, source.foreign.ref);
    O(struct gntdev_grant_copy_segment, source.foreign.offset);
    O(struct gntdev_grant_copy_segment, source.foreign.domid);
    O(struct gntdev_grant_copy_segment, dest.virt);
    O(struct gntdev_grant_copy_segment, dest.foreign.ref);
    O(struct gntdev_grant_copy_segment, dest.foreign.offset);
    O(struct gntdev_grant_copy_segment, dest.foreign.domid);
    E(sizeof(((struct gntdev_grant_copy_segment *)0)->source));
    E(sizeof(((struct gntdev_grant_copy_segment *)0)->source.foreign));
    S(struct ioctl_gntdev_grant_copy); O(struct ioctl_gntdev_grant_copy, count);
    O(struct ioctl_gntdev_grant_copy, segments);
    S(struct ioctl_gntdev_dmabuf_exp_from_refs);
    O(struct ioctl_gntdev_dmabuf_exp_from_refs, flags);
    O(struct ioctl_gntdev_dmabuf_exp_from_refs, count);
    O(struct ioctl_gntdev_dmabuf_exp_from_refs, fd);
    O(struct ioctl_gntdev_dmabuf_exp_from_refs, domid);
    O(struct ioctl_gntdev_dmabuf_exp_from_refs, refs);
    S(struct ioctl_gntdev_dmabuf_exp_wait_released);
    O(struct ioctl_gntdev_dmabuf_exp_wait_released, fd);
    O(struct ioctl_gntdev_dmabuf_exp_wait_released, wait_to_ms);
    S(struct ioctl_gntdev_dmabuf_imp_to_refs); O(struct ioctl_gntdev_dmabuf_imp_to_refs, fd);
    O(struct ioctl_gntdev_dmabuf_imp_to_refs, count);
    O(struct ioctl_gntdev_dmabuf_imp_to_refs, domid);
    O(struct ioctl_gntdev_dmabuf_imp_to_refs, reserved);
    O(struct ioctl_gntdev_dmabuf_imp_to_refs, refs);
    S(struct ioctl_gntdev_dmabuf_imp_release); O(struct ioctl_gntdev_dmabuf_imp_release, fd);
    O(struct ioctl_gntdev_dmabuf_imp_release, reserved);
    S(struct ioctl_gntalloc_alloc_gref); O(struct ioctl_gntalloc_alloc_gref, domid);
    O(struct ioctl_gntalloc_alloc_gref, flags); O(struct ioctl_gntalloc_alloc_gref, count);
    O(struct ioctl_gntalloc_alloc_gref, index); O(struct ioctl_gntalloc_alloc_gref, gref_ids);
    S(struct ioctl_gntalloc_dealloc_gref); O(struct ioctl_gntalloc_dealloc_gref, index);
    O(struct ioctl_gntalloc_dealloc_gref, count);
    S(struct ioctl_gntalloc_unmap_notify); O(struct ioctl_gntalloc_unmap_notify, index);
    O(struct ioctl_gntalloc_unmap_notify, action);
    O(struct ioctl_gntalloc_unmap_notify, event_channel_port);
    S(struct ioctl_evtchn_bind_virq); O(struct ioctl_evtchn_bind_virq, virq);
    S(struct ioctl_evtchn_bind_interdomain);
    O(struct ioctl_evtchn_bind_interdomain, remote_domain);
    O(struct ioctl_evtchn_bind_interdomain, remote_port);
    S(struct ioctl_evtchn_bind_unbound_port);
    O(struct ioctl_evtchn_bind_unbound_port, remote_domain);
    S(struct ioctl_evtchn_unbind); O(struct ioctl_evtchn_unbind, port);
    S(struct ioctl_evtchn_notify); O(struct ioctl_evtchn_notify, port);
    S(struct ioctl_evtchn_restrict_domid); O(struct ioctl_evtchn_restrict_domid, domid);
#ifdef IOCTL_EVTCHN_BIND_STATIC
    S(struct ioctl_evtchn_bind_static); O(struct ioctl_evtchn_bind_static, port);
    K(IOCTL_EVTCHN_BIND_STATIC);
#else
    ABSENT("sizeof(struct ioctl_evtchn_bind_static)");
    ABSENT("offsetof(struct ioctl_evtchn_bind_static, port)");
    ABSENT("IOCTL_EVTCHN_BIND_STATIC");
#endif
    K(UNMAP_NOTIFY_CLEAR_BYTE); K(UNMAP_NOTIFY_SEND_EVENT); K(GNTALLOC_FLAG_WRITABLE);
    K(GNTDEV_DMA_FLAG_WC); K(GNTDEV_DMA_FLAG_COHERENT);
    K(IOCTL_GNTDEV_MAP_GRANT_REF); K(IOCTL_GNTDEV_UNMAP_GRANT_REF);
    K(IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR); K(IOCTL_GNTDEV_SET_MAX_GRANTS);
    K(IOCTL_GNTDEV_SET_UNMAP_NOTIFY); K(IOCTL_GNTDEV_GRANT_COPY);
    K(IOCTL_GNTDEV_DMABUF_EXP_FROM_REFS); K(IOCTL_GNTDEV_DMABUF_EXP_WAIT_RELEASED);
    K(IOCTL_GNTDEV_DMABUF_IMP_TO_REFS); K(IOCTL_GNTDEV_DMABUF_IMP_RELEASE);
    K(IOCTL_GNTALLOC_ALLOC_GREF); K(IOCTL_GNTALLOC_DEALLOC_GREF);
    K(IOCTL_GNTALLOC_SET_UNMAP_NOTIFY);
    K(IOCTL_EVTCHN_BIND_VIRQ); K(IOCTL_EVTCHN_BIND_INTERDOMAIN);
    K(IOCTL_EVTCHN_BIND_UNBOUND_PORT); K(IOCTL_EVTCHN_UNBIND); K(IOCTL_EVTCHN_NOTIFY);
    K(IOCTL_EVTCHN_RESET); K(IOCTL_EVTCHN_RESTRICT_DOMID);
    return 0;
}
"#;

/// Prelude of the feature probes (x86_64).
const C_PRELUDE: &str = "#include <stddef.h>\n#include <stdint.h>\n#include <xen/xen.h>\n\
#include <xen/io/xs_wire.h>\n";

/// Source whose successful compilation shows the x86_64 prerequisites.
const C_HEADERS_64: &str = "#include <stdio.h>\n#include <stddef.h>\n#include <stdint.h>\n\
#include <errno.h>\n#include <sys/ioctl.h>\n#include <xen/xen.h>\n#include <xen/io/ring.h>\n\
#include <xen/io/blkif.h>\n#include <xen/io/netif.h>\n#include <xen/grant_table.h>\n\
#include <xen/event_channel.h>\n#include <xen/io/xs_wire.h>\n#include <xen/io/xenbus.h>\n\
#include <xen/errno.h>\n#include <xen/gntdev.h>\n#include <xen/gntalloc.h>\n\
#include <xen/evtchn.h>\nint pvio_probe;\n";

/// Prelude of the i386 evaluation: compiled `-m32 -ffreestanding`, so only
/// compiler-provided libc headers (no 32-bit glibc needed).
const C_HEADERS_I386: &str = "#include <stddef.h>\n#include <stdint.h>\n#include <xen/xen.h>\n\
#include <xen/io/ring.h>\n#include <xen/io/blkif.h>\n#include <xen/event_channel.h>\n";

/// (define, C snippet): `-D<define>` is passed when the snippet compiles.
const PROBES: &[(&str, &str)] = &[
    (
        "PVIO_HAVE_XS_GET_FEATURE",
        "int pvio_probe = XS_GET_FEATURE;",
    ),
    (
        "PVIO_HAVE_XS_SET_FEATURE",
        "int pvio_probe = XS_SET_FEATURE;",
    ),
    ("PVIO_HAVE_XS_GET_QUOTA", "int pvio_probe = XS_GET_QUOTA;"),
    ("PVIO_HAVE_XS_SET_QUOTA", "int pvio_probe = XS_SET_QUOTA;"),
    (
        "PVIO_HAVE_XS_EVTCHN_PORT",
        "size_t pvio_probe = offsetof(struct xenstore_domain_interface, evtchn_port);",
    ),
];

const XEN_INTERFACE_VERSION: &str = "-D__XEN_INTERFACE_VERSION__=0x00040e00";

// ===========================================================================
// Running the compiler
// ===========================================================================

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Reports a missing prerequisite: a failure under `CI=true`, else a skip.
fn unavailable(reason: &str) {
    assert!(
        !in_ci(),
        "{reason}\ninstall libxen-dev: apt-get install -y libxen-dev \
         (plus linux-libc-dev for xen/gntdev.h and a C compiler)"
    );
    eprintln!("SKIPPED: {reason}");
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("pvio-abi-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `$CC` (split on whitespace, e.g. `ccache gcc`) or `cc`.
fn cc_command() -> Command {
    let cc = std::env::var("CC").ok().filter(|s| !s.trim().is_empty());
    let cc = cc.unwrap_or_else(|| "cc".to_string());
    let mut parts = cc.split_whitespace();
    let mut cmd = Command::new(parts.next().expect("non-empty CC"));
    cmd.args(parts);
    cmd
}

/// Runs the compiler; `Err(stderr)` if it fails, `None` if it cannot run.
fn compile(args: &[&str], dir: &Path) -> Option<Result<(), String>> {
    let out = cc_command().args(args).current_dir(dir).output().ok()?;
    Some(if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    })
}

/// Checks that a compiler exists and the headers are usable by compiling
/// `src` with `extra` flags (e.g. `-m32`).
fn prerequisites(dir: &Path, extra: &[&str], src: &str) -> Result<(), String> {
    std::fs::write(dir.join("headers.c"), src).expect("write headers.c");
    let mut args = extra.to_vec();
    args.extend([XEN_INTERFACE_VERSION, "-fsyntax-only", "headers.c"]);
    match compile(&args, dir) {
        None => Err("C compiler not found (set $CC or install gcc)".into()),
        Some(Err(stderr)) => Err(format!(
            "Xen/Linux headers not usable with `cc {}`:\n{stderr}",
            args.join(" ")
        )),
        Some(Ok(())) => Ok(()),
    }
}

/// Values printed by the C program: `Some(v)`, or `None` for `absent`.
fn run_c_program(dir: &Path) -> Vec<(String, Option<i64>)> {
    let mut defines = Vec::new();
    for (define, snippet) in PROBES {
        let file = format!("{}.c", define.to_ascii_lowercase());
        std::fs::write(dir.join(&file), format!("{C_PRELUDE}{snippet}\n")).expect("write probe");
        if let Some(Ok(())) = compile(&[XEN_INTERFACE_VERSION, "-fsyntax-only", &file], dir) {
            defines.push(format!("-D{define}"));
        }
    }
    std::fs::write(dir.join("prog.c"), C_PROGRAM).expect("write prog.c");
    let mut args: Vec<&str> = vec![XEN_INTERFACE_VERSION];
    args.extend(defines.iter().map(String::as_str));
    args.extend(["-o", "prog", "prog.c"]);
    match compile(&args, dir) {
        Some(Ok(())) => {}
        Some(Err(stderr)) => panic!("the C program does not compile:\n{stderr}"),
        None => panic!("C compiler disappeared"),
    }
    let out = Command::new(dir.join("prog")).output().expect("run prog");
    assert!(out.status.success(), "prog failed: {out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8 output")
        .lines()
        .map(|line| {
            let (name, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            let value = match value {
                "absent" => None,
                v => Some(
                    v.parse::<i64>()
                        .unwrap_or_else(|_| panic!("bad value in {line:?}")),
                ),
            };
            (name.to_string(), value)
        })
        .collect()
}

/// Compiles `const long long v_N = (key_N);` with `extra` flags to assembly
/// and reads the values back (no linking, so no 32-bit libc is needed).
fn eval_in_asm(dir: &Path, extra: &[&str], keys: &[String]) -> Result<Vec<i64>, String> {
    let mut src = C_HEADERS_I386.to_string();
    for (i, k) in keys.iter().enumerate() {
        src.push_str(&format!("const long long v_{i} = (long long)({k});\n"));
    }
    std::fs::write(dir.join("eval.c"), src).expect("write eval.c");
    let mut args = extra.to_vec();
    args.extend([XEN_INTERFACE_VERSION, "-S", "-o", "eval.s", "eval.c"]);
    match compile(&args, dir) {
        Some(Ok(())) => {}
        Some(Err(stderr)) => return Err(stderr),
        None => return Err("C compiler not found".into()),
    }
    let asm = std::fs::read_to_string(dir.join("eval.s")).expect("read eval.s");
    let mut values = BTreeMap::new();
    let mut current: Option<(usize, Vec<u8>)> = None;
    for line in asm.lines() {
        let line = line.trim();
        if let Some(label) = line.strip_prefix("v_").and_then(|l| l.strip_suffix(':')) {
            current = label.parse().ok().map(|i| (i, Vec::new()));
            continue;
        }
        let Some((idx, bytes)) = current.as_mut() else {
            continue;
        };
        let mut words = line.split_whitespace();
        let (Some(dir), Some(arg)) = (words.next(), words.next()) else {
            continue;
        };
        let parse = |s: &str| -> i64 {
            if let Some(h) = s.strip_prefix("0x") {
                i64::from_str_radix(h, 16).expect("hex")
            } else {
                s.parse().expect("number")
            }
        };
        match dir {
            ".zero" => bytes.extend(std::iter::repeat_n(0u8, parse(arg) as usize)),
            ".long" | ".int" | ".4byte" => bytes.extend((parse(arg) as u32).to_le_bytes()),
            ".quad" | ".8byte" => bytes.extend(parse(arg).to_le_bytes()),
            _ => continue,
        }
        if bytes.len() >= 8 {
            let v = i64::from_le_bytes(bytes[..8].try_into().unwrap());
            values.insert(*idx, v);
            current = None;
        }
    }
    (0..keys.len())
        .map(|i| {
            values
                .get(&i)
                .copied()
                .ok_or_else(|| format!("no value for {}", keys[i]))
        })
        .collect()
}

// ===========================================================================
// Tests
// ===========================================================================

#[test]
fn x86_64_layouts_match_c_headers() {
    if !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        // Not a missing prerequisite: the x86_64 values do not apply here.
        eprintln!("SKIPPED: the header comparison runs on x86_64 Linux only");
        return;
    }
    let dir = TempDir::new("xen-headers");
    if let Err(reason) = prerequisites(&dir.0, &[], C_HEADERS_64) {
        unavailable(&reason);
        return;
    }
    let c_lines = run_c_program(&dir.0);

    // C side: name -> value (None = absent).
    let mut c: BTreeMap<String, (String, Option<i64>)> = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, value) in &c_lines {
        if c.insert(norm(name), (name.clone(), *value)).is_some() {
            problems.push(format!("C prints {name} twice"));
        }
    }

    // Rust side.
    let mut rust = expect_x86_64();
    let xs_size = norm("sizeof(struct xenstore_domain_interface)");
    let xs_port = norm("offsetof(struct xenstore_domain_interface, evtchn_port)");
    let xs_4_17 = matches!(c.get(&xs_port), Some((_, None)));
    if xs_4_17 {
        // Xen 4.17 headers: the struct ends before `evtchn_port`.
        let port_off = offset_of!(xenbus::XenstoreDomainInterface, evtchn_port);
        assert_eq!(
            xenbus::XENSTORE_DOMAIN_INTERFACE_SIZE_XEN_4_17,
            port_off,
            "the 4.17 size must be exactly the Rust struct without its trailing evtchn_port"
        );
        for item in rust.iter_mut().filter(|i| norm(&i.key) == xs_size) {
            item.rust =
                "xenbus::XENSTORE_DOMAIN_INTERFACE_SIZE_XEN_4_17 (header lacks evtchn_port)".into();
            item.value = xenbus::XENSTORE_DOMAIN_INTERFACE_SIZE_XEN_4_17 as i64;
        }
    }

    let may_be_absent: BTreeMap<String, &str> = MAY_BE_ABSENT
        .iter()
        .map(|(k, why)| (norm(k), *why))
        .collect();
    let mut rust_keys = BTreeSet::new();
    let mut compared = 0usize;
    let mut absent = Vec::new();
    for item in &rust {
        let key = norm(&item.key);
        rust_keys.insert(key.clone());
        match c.get(&key) {
            None => problems.push(format!(
                "only in Rust: {} = {} ({}): the C program does not print it",
                item.key, item.value, item.rust
            )),
            Some((name, None)) => match may_be_absent.get(&key) {
                Some(why) => absent.push(format!("{name} [{why}]")),
                None => problems.push(format!(
                    "{name}: absent from the installed headers but not in MAY_BE_ABSENT"
                )),
            },
            Some((name, Some(v))) => {
                compared += 1;
                if *v != item.value {
                    problems.push(format!(
                        "MISMATCH {name}: Rust {} = {}, C = {v}",
                        item.rust, item.value
                    ));
                }
            }
        }
    }
    for (key, (name, value)) in &c {
        if !rust_keys.contains(key) {
            problems.push(format!(
                "only in C: {name} = {value:?}: no Rust counterpart"
            ));
        }
    }
    absent.sort();
    absent.dedup();

    println!(
        "xen_headers (x86_64): compared {compared} Rust values against {} C entries \
         ({} C names printed); {} absent from the installed headers: {}",
        c.values().filter(|(_, v)| v.is_some()).count(),
        c.len(),
        absent.len(),
        absent.join(", ")
    );
    if xs_4_17 {
        println!(
            "xen_headers: xenstore_domain_interface is the Xen 4.17 layout (2076 bytes, \
             no evtchn_port); compared against XENSTORE_DOMAIN_INTERFACE_SIZE_XEN_4_17"
        );
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) comparing pvio-abi with the C headers:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn i386_layouts_match_c_headers() {
    if !cfg!(any(target_arch = "x86_64", target_arch = "x86")) {
        eprintln!("SKIPPED: the i386 comparison needs an x86 host compiler");
        return;
    }
    let dir = TempDir::new("xen-headers-i386");
    let flags = ["-m32", "-ffreestanding"];
    if let Err(reason) = prerequisites(&dir.0, &flags, C_HEADERS_I386) {
        unavailable(&reason);
        return;
    }
    let items = expect_i386();
    let keys: Vec<String> = items.iter().map(|i| i.key.clone()).collect();
    let values = eval_in_asm(&dir.0, &flags, &keys)
        .unwrap_or_else(|e| panic!("evaluating the i386 expressions failed:\n{e}"));
    let problems: Vec<String> = items
        .iter()
        .zip(&values)
        .filter(|(item, c)| item.value != **c)
        .map(|(item, c)| {
            format!(
                "MISMATCH {}: Rust {} = {}, C (i386) = {c}",
                item.key, item.rust, item.value
            )
        })
        .collect();
    println!("xen_headers (i386): compared {} values", items.len());
    assert!(
        problems.is_empty(),
        "i386 mismatches:\n  {}",
        problems.join("\n  ")
    );
}

/// Every `pub const` and every field of every `pub struct` in `src/` must be
/// compared above, be padding, or be in [`RUST_ONLY`].
#[test]
fn every_public_item_is_compared() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut public = BTreeSet::new();
    scan_dir(&src, &src, &mut public);
    assert!(
        public.len() > 300,
        "scanner found too little: {}",
        public.len()
    );

    let covered: BTreeSet<String> = expect_x86_64()
        .into_iter()
        .chain(expect_i386())
        .map(|i| i.rust)
        .collect();
    let rust_only: BTreeSet<String> = RUST_ONLY.iter().map(|(k, _)| k.to_string()).collect();

    let mut problems = Vec::new();
    for item in &public {
        let is_padding = item
            .rsplit_once('.')
            .is_some_and(|(_, f)| f.starts_with("_pad"));
        if !covered.contains(item) && !rust_only.contains(item) && !is_padding {
            problems.push(format!("{item} is not compared with any C header value"));
        }
        if covered.contains(item) && rust_only.contains(item) {
            problems.push(format!("{item} is compared but also listed in RUST_ONLY"));
        }
    }
    for item in &rust_only {
        if !public.contains(item) {
            problems.push(format!("RUST_ONLY lists {item}, which does not exist"));
        }
    }
    println!(
        "coverage: {} public consts/fields, {} Rust-only, all others compared",
        public.len(),
        rust_only.len()
    );
    assert!(
        problems.is_empty(),
        "coverage problems:\n  {}",
        problems.join("\n  ")
    );
}

/// Collects `module::CONST` and `module::Struct.field` labels.
fn scan_dir(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src")
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            scan_dir(root, &path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(root).unwrap().with_extension("");
        let module = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("::");
        let module = if module == "lib" {
            String::new()
        } else {
            format!("{module}::")
        };
        let text = std::fs::read_to_string(&path).expect("read source");
        let mut in_struct: Option<String> = None;
        for line in text.lines() {
            if let Some(name) = &in_struct {
                if line == "}" {
                    in_struct = None;
                } else if let Some((f, _)) = line
                    .strip_prefix("    pub ")
                    .and_then(|field| field.split_once(':'))
                {
                    out.insert(format!("{module}{name}.{}", f.trim()));
                }
                continue;
            }
            if let Some(rest) = line
                .strip_prefix("pub const ")
                .filter(|r| !r.starts_with("fn "))
            {
                let name = rest.split(':').next().unwrap().trim();
                out.insert(format!("{module}{name}"));
            } else if let Some(rest) = line
                .strip_prefix("pub struct ")
                .filter(|r| r.trim_end().ends_with('{'))
            {
                let name = rest.split([' ', '{', '<']).next().unwrap();
                in_struct = Some(name.to_string());
            }
        }
    }
}
