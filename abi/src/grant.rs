//! Grant tables: entries (v1 and v2), `GTF_*` flags, and the
//! `GNTTABOP_*` hypercall argument structures, flags and status codes.
//!
//! Follows spec/grant.md §1–4 and `grant_table.h`. The Linux
//! `/dev/xen/gntdev` and `/dev/xen/gntalloc` structures (grant.md §5) are
//! in [`crate::linux`].
//!
//! Layouts are x86_64: guest handles and `xen_pfn_t` are 64 bits.

use crate::types::{DOMID_SELF, DomId, GrantHandle, GrantRef, GuestHandle, PAGE_SIZE, XenPfn};
use bytemuck::{Pod, Zeroable};
use core::fmt;

pub use crate::types::HYPERVISOR_GRANT_TABLE_OP;

// ---------------------------------------------------------------------------
// Entries
// ---------------------------------------------------------------------------

/// Version-1 grant entry (`grant_entry_v1`), 8 bytes; 512 per 4 KiB frame.
///
/// Create: write `domid` and `frame`, write barrier, then `flags` last.
/// End access with a 16-bit compare-exchange on `flags` (spec grant.md §2.2).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GrantEntryV1 {
    /// **\[xen, guest\]** `GTF_*` type and sub-flags.
    pub flags: u16,
    /// **\[guest\]** The domain being granted rights (grantee).
    pub domid: DomId,
    /// **\[guest\]** GFN granted (or, for accept-transfer, the slot to fill);
    /// **\[xen\]** the new frame after a completed transfer.
    pub frame: u32,
}

/// Common header of a v2 grant entry (`grant_entry_header`), 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GrantEntryHeader {
    /// **\[xen, guest\]** `GTF_*` type and sub-flags (v2: no
    /// `GTF_reading`/`GTF_writing`; those live in the status frames).
    pub flags: u16,
    /// **\[guest\]** The grantee.
    pub domid: DomId,
}

/// v2 entry, `full_page` member: a whole page (access or accept-transfer).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GrantEntryV2FullPage {
    /// **\[xen, guest\]** Header.
    pub hdr: GrantEntryHeader,
    /// Padding (C `pad0`).
    pub pad0: u32,
    /// **\[guest\]** Frame number (64 bits, unlike v1).
    pub frame: u64,
}

/// v2 entry, `sub_page` member (`GTF_permit_access | GTF_sub_page`): bytes
/// `[page_off, page_off + length)` of `frame`; copy only, never mappable.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GrantEntryV2SubPage {
    /// **\[xen, guest\]** Header.
    pub hdr: GrantEntryHeader,
    /// **\[guest\]** First granted byte.
    pub page_off: u16,
    /// **\[guest\]** Number of granted bytes.
    pub length: u16,
    /// **\[guest\]** Frame number.
    pub frame: u64,
}

/// v2 entry, `transitive` member (`GTF_transitive`): grant `gref` of
/// `trans_domid` onwards; copy only. The C struct is 12 bytes inside the
/// 16-byte union; `_pad1` makes this view 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GrantEntryV2Transitive {
    /// **\[xen, guest\]** Header.
    pub hdr: GrantEntryHeader,
    /// **\[guest\]** Domain whose grant is passed on.
    pub trans_domid: DomId,
    /// Padding (C `pad0`).
    pub pad0: u16,
    /// **\[guest\]** The grant in `trans_domid`'s table.
    pub gref: GrantRef,
    /// Rest of the 16-byte union (C `__spacer`).
    pub _pad1: u32,
}

/// Version-2 grant entry (`union grant_entry_v2`), 16 bytes, aligned 8.
///
/// Read the member selected by `hdr.flags` with [`GrantEntryV2::full_page`],
/// [`GrantEntryV2::sub_page`] or [`GrantEntryV2::transitive`]; build one
/// with `From`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GrantEntryV2 {
    /// **\[xen, guest\]** Common header.
    pub hdr: GrantEntryHeader,
    /// Member-specific bytes 4..16.
    pub body: [u32; 3],
}

impl GrantEntryV2 {
    /// View as the `full_page` member.
    #[inline]
    pub fn full_page(self) -> GrantEntryV2FullPage {
        bytemuck::cast(self)
    }
    /// View as the `sub_page` member.
    #[inline]
    pub fn sub_page(self) -> GrantEntryV2SubPage {
        bytemuck::cast(self)
    }
    /// View as the `transitive` member.
    #[inline]
    pub fn transitive(self) -> GrantEntryV2Transitive {
        bytemuck::cast(self)
    }
}

impl From<GrantEntryV2FullPage> for GrantEntryV2 {
    #[inline]
    fn from(v: GrantEntryV2FullPage) -> Self {
        bytemuck::cast(v)
    }
}
impl From<GrantEntryV2SubPage> for GrantEntryV2 {
    #[inline]
    fn from(v: GrantEntryV2SubPage) -> Self {
        bytemuck::cast(v)
    }
}
impl From<GrantEntryV2Transitive> for GrantEntryV2 {
    #[inline]
    fn from(v: GrantEntryV2Transitive) -> Self {
        bytemuck::cast(v)
    }
}

/// `grant_status_t`: one v2 status word (`GTF_reading`/`GTF_writing`) per
/// entry, in the status frames (`GNTTABOP_get_status_frames`).
pub type GrantStatusWord = u16;

/// `GNTTAB_NR_RESERVED_ENTRIES`: refs 0..8 are reserved; allocate from 8.
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;
/// `GNTTAB_RESERVED_CONSOLE`: ref of the console ring.
pub const GNTTAB_RESERVED_CONSOLE: u32 = 0;
/// `GNTTAB_RESERVED_XENSTORE`: ref of the xenstore ring.
pub const GNTTAB_RESERVED_XENSTORE: u32 = 1;
/// v1 entries per 4 KiB grant frame.
pub const ENTRIES_PER_FRAME_V1: usize = PAGE_SIZE / core::mem::size_of::<GrantEntryV1>();
/// v2 entries per 4 KiB grant frame.
pub const ENTRIES_PER_FRAME_V2: usize = PAGE_SIZE / core::mem::size_of::<GrantEntryV2>();
/// v2 status words per 4 KiB status frame.
pub const STATUS_ENTRIES_PER_FRAME: usize = PAGE_SIZE / core::mem::size_of::<GrantStatusWord>();
/// Xen's default maximum number of grant frames per domain (boot option
/// `gnttab_max_frames`); not part of the headers.
pub const DEFAULT_MAX_GRANT_FRAMES: u32 = 64;

// ---------------------------------------------------------------------------
// GTF_* (flags of an entry)
// ---------------------------------------------------------------------------

/// `GTF_invalid`: the entry grants nothing.
pub const GTF_INVALID: u16 = 0;
/// `GTF_permit_access`: `domid` may map/copy `frame`.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// `GTF_accept_transfer`: `domid` may transfer one page into this guest.
pub const GTF_ACCEPT_TRANSFER: u16 = 2;
/// `GTF_transitive` (v2 only): pass on another domain's grant; copy only.
pub const GTF_TRANSITIVE: u16 = 3;
/// `GTF_type_mask`: the type bits (0–1).
pub const GTF_TYPE_MASK: u16 = 3;
/// `GTF_readonly` **\[guest\]**: read-only access only.
pub const GTF_READONLY: u16 = 1 << 2;
/// `GTF_reading` **\[xen\]**: in use (mapped or being copied) by the grantee.
pub const GTF_READING: u16 = 1 << 3;
/// `GTF_writing` **\[xen\]**: in use writably by the grantee.
pub const GTF_WRITING: u16 = 1 << 4;
/// `GTF_PWT` **\[guest\]**: x86 cache attribute for mappings.
pub const GTF_PWT: u16 = 1 << 5;
/// `GTF_PCD` **\[guest\]**: x86 cache attribute for mappings.
pub const GTF_PCD: u16 = 1 << 6;
/// `GTF_PAT` **\[guest\]**: x86 cache attribute for mappings.
pub const GTF_PAT: u16 = 1 << 7;
/// `GTF_sub_page` **\[guest\]** (v2): grant a byte range; copy only.
pub const GTF_SUB_PAGE: u16 = 1 << 8;
/// `GTF_transfer_committed` **\[xen\]** (accept-transfer): transfer started.
pub const GTF_TRANSFER_COMMITTED: u16 = 1 << 2;
/// `GTF_transfer_completed` **\[xen\]** (accept-transfer): `frame` is valid.
pub const GTF_TRANSFER_COMPLETED: u16 = 1 << 3;

// ---------------------------------------------------------------------------
// GNTTABOP_* commands
// ---------------------------------------------------------------------------

/// Map grants ([`MapGrantRef`]).
pub const GNTTABOP_MAP_GRANT_REF: u32 = 0;
/// Unmap grants ([`UnmapGrantRef`]).
pub const GNTTABOP_UNMAP_GRANT_REF: u32 = 1;
/// Set up the caller's table frames ([`SetupTable`]).
pub const GNTTABOP_SETUP_TABLE: u32 = 2;
/// Debug dump ([`DumpTable`]).
pub const GNTTABOP_DUMP_TABLE: u32 = 3;
/// Page transfer, PV only ([`Transfer`]).
pub const GNTTABOP_TRANSFER: u32 = 4;
/// Grant copy ([`GrantCopy`]).
pub const GNTTABOP_COPY: u32 = 5;
/// Query table size ([`QuerySize`]).
pub const GNTTABOP_QUERY_SIZE: u32 = 6;
/// Unmap and replace a PV mapping ([`UnmapAndReplace`]).
pub const GNTTABOP_UNMAP_AND_REPLACE: u32 = 7;
/// Select table version ([`SetVersion`]).
pub const GNTTABOP_SET_VERSION: u32 = 8;
/// Get v2 status frames ([`GetStatusFrames`]).
pub const GNTTABOP_GET_STATUS_FRAMES: u32 = 9;
/// Query table version ([`GetVersion`]).
pub const GNTTABOP_GET_VERSION: u32 = 10;
/// Swap two entries ([`SwapGrantRef`]).
pub const GNTTABOP_SWAP_GRANT_REF: u32 = 11;
/// Cache maintenance (Arm; [`CacheFlush`]).
pub const GNTTABOP_CACHE_FLUSH: u32 = 12;

// ---------------------------------------------------------------------------
// GNTMAP_*, GNTCOPY_*, GNTTAB_CACHE_*
// ---------------------------------------------------------------------------

/// `GNTMAP_device_map`: make the frame accessible to devices (returns
/// `dev_bus_addr`).
pub const GNTMAP_DEVICE_MAP: u32 = 1 << 0;
/// `GNTMAP_host_map`: map for CPU access at `host_addr`.
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
/// `GNTMAP_readonly`: read-only mapping.
pub const GNTMAP_READONLY: u32 = 1 << 2;
/// `GNTMAP_application_map` (PV): mapping usable by user space too.
pub const GNTMAP_APPLICATION_MAP: u32 = 1 << 3;
/// `GNTMAP_contains_pte` (PV): `host_addr` is the machine address of a PTE.
pub const GNTMAP_CONTAINS_PTE: u32 = 1 << 4;
/// `_GNTMAP_guest_avail0`: bit number of the first PTE "available" bit.
pub const GNTMAP_GUEST_AVAIL0: u32 = 16;
/// `GNTMAP_guest_avail_mask`: the PTE "available" bits.
pub const GNTMAP_GUEST_AVAIL_MASK: u32 = u32::MAX << GNTMAP_GUEST_AVAIL0;

/// `GNTCOPY_source_gref`: `source.u` is a grant ref in `source.domid`'s table
/// (else a frame of the caller, with `domid` = `DOMID_SELF`).
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
/// `GNTCOPY_dest_gref`: `dest.u` is a grant ref.
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;

/// `GNTTAB_CACHE_CLEAN` ([`CacheFlush::op`]).
pub const GNTTAB_CACHE_CLEAN: u32 = 1 << 0;
/// `GNTTAB_CACHE_INVAL` ([`CacheFlush::op`]).
pub const GNTTAB_CACHE_INVAL: u32 = 1 << 1;
/// `GNTTAB_CACHE_SOURCE_GREF`: [`CacheFlush::a`] holds a grant ref.
pub const GNTTAB_CACHE_SOURCE_GREF: u32 = 1 << 31;

// ---------------------------------------------------------------------------
// GNTST_* status codes
// ---------------------------------------------------------------------------

/// `GNTST_okay`: success.
pub const GNTST_OKAY: i16 = 0;
/// `GNTST_general_error`: unspecified error (most validation failures).
pub const GNTST_GENERAL_ERROR: i16 = -1;
/// `GNTST_bad_domain`: unknown domain id.
pub const GNTST_BAD_DOMAIN: i16 = -2;
/// `GNTST_bad_gntref`: unrecognised or inappropriate grant ref.
pub const GNTST_BAD_GNTREF: i16 = -3;
/// `GNTST_bad_handle`: bad mapping handle.
pub const GNTST_BAD_HANDLE: i16 = -4;
/// `GNTST_bad_virt_addr`: bad virtual address to map.
pub const GNTST_BAD_VIRT_ADDR: i16 = -5;
/// `GNTST_bad_dev_addr`: bad device address to unmap.
pub const GNTST_BAD_DEV_ADDR: i16 = -6;
/// `GNTST_no_device_space`: out of I/O MMU space.
pub const GNTST_NO_DEVICE_SPACE: i16 = -7;
/// `GNTST_permission_denied`: not enough privilege.
pub const GNTST_PERMISSION_DENIED: i16 = -8;
/// `GNTST_bad_page`: page invalid for the operation.
pub const GNTST_BAD_PAGE: i16 = -9;
/// `GNTST_bad_copy_arg`: copy arguments cross a page boundary.
pub const GNTST_BAD_COPY_ARG: i16 = -10;
/// `GNTST_address_too_big`: transfer page address too large.
pub const GNTST_ADDRESS_TOO_BIG: i16 = -11;
/// `GNTST_eagain`: not done (e.g. page paged out); retry.
pub const GNTST_EAGAIN: i16 = -12;
/// `GNTST_no_space`: out of space (e.g. maptrack handles).
pub const GNTST_NO_SPACE: i16 = -13;

/// A known `GNTST_*` status value.
///
/// `TryFrom<i16>` fails (returning the raw value) for unknown codes; use
/// [`gntst_name`] to print any raw status.
#[non_exhaustive]
#[repr(i16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GntStatus {
    /// `GNTST_okay`.
    Okay = GNTST_OKAY,
    /// `GNTST_general_error`.
    GeneralError = GNTST_GENERAL_ERROR,
    /// `GNTST_bad_domain`.
    BadDomain = GNTST_BAD_DOMAIN,
    /// `GNTST_bad_gntref`.
    BadGntref = GNTST_BAD_GNTREF,
    /// `GNTST_bad_handle`.
    BadHandle = GNTST_BAD_HANDLE,
    /// `GNTST_bad_virt_addr`.
    BadVirtAddr = GNTST_BAD_VIRT_ADDR,
    /// `GNTST_bad_dev_addr`.
    BadDevAddr = GNTST_BAD_DEV_ADDR,
    /// `GNTST_no_device_space`.
    NoDeviceSpace = GNTST_NO_DEVICE_SPACE,
    /// `GNTST_permission_denied`.
    PermissionDenied = GNTST_PERMISSION_DENIED,
    /// `GNTST_bad_page`.
    BadPage = GNTST_BAD_PAGE,
    /// `GNTST_bad_copy_arg`.
    BadCopyArg = GNTST_BAD_COPY_ARG,
    /// `GNTST_address_too_big`.
    AddressTooBig = GNTST_ADDRESS_TOO_BIG,
    /// `GNTST_eagain`.
    Eagain = GNTST_EAGAIN,
    /// `GNTST_no_space`.
    NoSpace = GNTST_NO_SPACE,
}

/// (C name, message of `GNTTABOP_error_msgs`) indexed by `-status`.
const GNTST_TABLE: [(&str, &str); 14] = [
    ("GNTST_okay", "okay"),
    ("GNTST_general_error", "undefined error"),
    ("GNTST_bad_domain", "unrecognised domain id"),
    ("GNTST_bad_gntref", "invalid grant reference"),
    ("GNTST_bad_handle", "invalid mapping handle"),
    ("GNTST_bad_virt_addr", "invalid virtual address"),
    ("GNTST_bad_dev_addr", "invalid device address"),
    (
        "GNTST_no_device_space",
        "no spare translation slot in the I/O MMU",
    ),
    ("GNTST_permission_denied", "permission denied"),
    ("GNTST_bad_page", "bad page"),
    ("GNTST_bad_copy_arg", "copy arguments cross page boundary"),
    ("GNTST_address_too_big", "page address size too large"),
    ("GNTST_eagain", "operation not done; try again"),
    ("GNTST_no_space", "out of space"),
];

const fn gntst_index(status: i16) -> Option<usize> {
    if status <= 0 && status >= GNTST_NO_SPACE {
        Some((-(status as i32)) as usize)
    } else {
        None
    }
}

/// The C name of a raw `GNTST_*` value (`"GNTST_bad_gntref"`), or
/// `"GNTST_unknown"`.
pub const fn gntst_name(status: i16) -> &'static str {
    match gntst_index(status) {
        Some(i) => GNTST_TABLE[i].0,
        None => "GNTST_unknown",
    }
}

/// Xen's message for a raw `GNTST_*` value (`GNTTABOP_error_msgs`), or
/// `"unknown grant status"`.
pub const fn gntst_message(status: i16) -> &'static str {
    match gntst_index(status) {
        Some(i) => GNTST_TABLE[i].1,
        None => "unknown grant status",
    }
}

impl GntStatus {
    /// The raw value.
    #[inline]
    pub const fn as_i16(self) -> i16 {
        self as i16
    }
    /// The C name (`"GNTST_okay"`, ...).
    #[inline]
    pub const fn name(self) -> &'static str {
        gntst_name(self as i16)
    }
    /// Xen's message (`GNTTABOP_error_msgs`).
    #[inline]
    pub const fn message(self) -> &'static str {
        gntst_message(self as i16)
    }
}

impl TryFrom<i16> for GntStatus {
    type Error = i16;
    fn try_from(v: i16) -> Result<Self, i16> {
        use GntStatus::*;
        Ok(match v {
            GNTST_OKAY => Okay,
            GNTST_GENERAL_ERROR => GeneralError,
            GNTST_BAD_DOMAIN => BadDomain,
            GNTST_BAD_GNTREF => BadGntref,
            GNTST_BAD_HANDLE => BadHandle,
            GNTST_BAD_VIRT_ADDR => BadVirtAddr,
            GNTST_BAD_DEV_ADDR => BadDevAddr,
            GNTST_NO_DEVICE_SPACE => NoDeviceSpace,
            GNTST_PERMISSION_DENIED => PermissionDenied,
            GNTST_BAD_PAGE => BadPage,
            GNTST_BAD_COPY_ARG => BadCopyArg,
            GNTST_ADDRESS_TOO_BIG => AddressTooBig,
            GNTST_EAGAIN => Eagain,
            GNTST_NO_SPACE => NoSpace,
            other => return Err(other),
        })
    }
}

impl From<GntStatus> for i16 {
    #[inline]
    fn from(s: GntStatus) -> i16 {
        s as i16
    }
}

impl fmt::Display for GntStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

// ---------------------------------------------------------------------------
// GNTTABOP_* argument structures
// ---------------------------------------------------------------------------

/// `gnttab_map_grant_ref` (`GNTTABOP_map_grant_ref`), 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MapGrantRef {
    /// **\[in\]** Virtual address, or PTE machine address with
    /// `GNTMAP_contains_pte`.
    pub host_addr: u64,
    /// **\[in\]** `GNTMAP_*`.
    pub flags: u32,
    /// **\[in\]** Grant to map.
    pub ref_: GrantRef,
    /// **\[in\]** The granting domain.
    pub dom: DomId,
    /// **\[out\]** `GNTST_*`.
    pub status: i16,
    /// **\[out\]** Handle for the unmap.
    pub handle: GrantHandle,
    /// **\[out\]** Bus address of the frame (with `GNTMAP_device_map`).
    pub dev_bus_addr: u64,
}

/// `gnttab_unmap_grant_ref` (`GNTTABOP_unmap_grant_ref`), 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct UnmapGrantRef {
    /// **\[in\]** Host mapping to remove (0 = skip).
    pub host_addr: u64,
    /// **\[in\]** Device mapping to remove (0 = skip).
    pub dev_bus_addr: u64,
    /// **\[in\]** Handle returned by the map.
    pub handle: GrantHandle,
    /// **\[out\]** `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad0: [u8; 2],
}

/// `gnttab_unmap_and_replace` (`GNTTABOP_unmap_and_replace`), 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct UnmapAndReplace {
    /// **\[in\]** Host mapping to remove.
    pub host_addr: u64,
    /// **\[in\]** Address whose mapping replaces it.
    pub new_addr: u64,
    /// **\[in\]** Handle returned by the map.
    pub handle: GrantHandle,
    /// **\[out\]** `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad0: [u8; 2],
}

/// `gnttab_setup_table` (`GNTTABOP_setup_table`), 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SetupTable {
    /// **\[in\]** Domain (`DOMID_SELF` unless privileged).
    pub dom: DomId,
    /// Padding.
    pub _pad0: [u8; 2],
    /// **\[in\]** Number of frames wanted.
    pub nr_frames: u32,
    /// **\[out\]** `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad1: [u8; 6],
    /// **\[in\]** Guest handle of a `xen_pfn_t[nr_frames]` array to fill.
    pub frame_list: GuestHandle,
}

/// `gnttab_dump_table` (`GNTTABOP_dump_table`), 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct DumpTable {
    /// **\[in\]** Domain.
    pub dom: DomId,
    /// **\[out\]** `GNTST_*`.
    pub status: i16,
}

/// `gnttab_transfer` (`GNTTABOP_transfer`, PV only), 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Transfer {
    /// **\[in\]** Frame to transfer.
    pub mfn: XenPfn,
    /// **\[in\]** Receiving domain.
    pub domid: DomId,
    /// Padding.
    pub _pad0: [u8; 2],
    /// **\[in\]** Receiver's accept-transfer grant.
    pub ref_: GrantRef,
    /// **\[out\]** `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad1: [u8; 6],
}

/// `gnttab_copy_ptr`: one side of a [`GrantCopy`], 16 bytes.
///
/// `u` is the C union `{ grant_ref_t ref; xen_pfn_t gmfn; }`: a grant ref
/// occupies its low 32 bits. Build with [`CopyPtr::gref`] or
/// [`CopyPtr::gmfn`], which keep the unused bytes zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CopyPtr {
    /// **\[in\]** Grant ref (`GNTCOPY_*_gref` set) or frame number.
    pub u: u64,
    /// **\[in\]** Owner of the grant, or `DOMID_SELF` for a frame.
    pub domid: DomId,
    /// **\[in\]** Byte offset within the 4 KiB page.
    pub offset: u16,
    /// Padding.
    pub _pad0: [u8; 4],
}

impl CopyPtr {
    /// A grant of `domid` (set the matching `GNTCOPY_*_gref` flag).
    #[inline]
    pub const fn gref(domid: DomId, gref: GrantRef, offset: u16) -> Self {
        CopyPtr {
            u: gref.0 as u64,
            domid,
            offset,
            _pad0: [0; 4],
        }
    }
    /// A frame of the caller (`domid` = `DOMID_SELF`; clear the flag).
    #[inline]
    pub const fn gmfn(gmfn: XenPfn, offset: u16) -> Self {
        CopyPtr {
            u: gmfn,
            domid: DOMID_SELF,
            offset,
            _pad0: [0; 4],
        }
    }
    /// `u.ref`: the low 32 bits of `u`.
    #[inline]
    pub const fn ref_(&self) -> GrantRef {
        GrantRef(self.u as u32)
    }
    /// `u.gmfn`.
    #[inline]
    pub const fn gmfn_value(&self) -> XenPfn {
        self.u
    }
}

/// `gnttab_copy` (`GNTTABOP_copy`), 40 bytes.
///
/// (Named `GrantCopy` rather than `Copy` so that a glob import does not
/// shadow the `Copy` trait.)
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GrantCopy {
    /// **\[in\]** Source.
    pub source: CopyPtr,
    /// **\[in\]** Destination.
    pub dest: CopyPtr,
    /// **\[in\]** Bytes to copy; neither side may cross its page.
    pub len: u16,
    /// **\[in\]** `GNTCOPY_*`.
    pub flags: u16,
    /// **\[out\]** `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad0: [u8; 2],
}

/// `gnttab_query_size` (`GNTTABOP_query_size`), 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct QuerySize {
    /// **\[in\]** Domain.
    pub dom: DomId,
    /// Padding.
    pub _pad0: [u8; 2],
    /// **\[out\]** Current number of frames.
    pub nr_frames: u32,
    /// **\[out\]** Maximum number of frames.
    pub max_nr_frames: u32,
    /// **\[out\]** `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad1: [u8; 2],
}

/// `gnttab_set_version` (`GNTTABOP_set_version`), 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SetVersion {
    /// **\[in/out\]** Requested (1 or 2) / resulting version.
    pub version: u32,
}

/// `gnttab_get_version` (`GNTTABOP_get_version`), 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GetVersion {
    /// **\[in\]** Domain.
    pub dom: DomId,
    /// Padding (C `pad`).
    pub pad: u16,
    /// **\[out\]** Table version.
    pub version: u32,
}

/// `gnttab_get_status_frames` (`GNTTABOP_get_status_frames`), 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GetStatusFrames {
    /// **\[in\]** Number of status frames wanted.
    pub nr_frames: u32,
    /// **\[in\]** Domain.
    pub dom: DomId,
    /// **\[out\]** `GNTST_*`.
    pub status: i16,
    /// **\[in\]** Guest handle of a `u64[nr_frames]` array to fill.
    pub frame_list: GuestHandle,
}

/// `gnttab_swap_grant_ref` (`GNTTABOP_swap_grant_ref`), 12 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SwapGrantRef {
    /// **\[in\]** First entry.
    pub ref_a: GrantRef,
    /// **\[in\]** Second entry.
    pub ref_b: GrantRef,
    /// **\[out\]** `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad0: [u8; 2],
}

/// `gnttab_cache_flush` (`GNTTABOP_cache_flush`), 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CacheFlush {
    /// **\[in\]** Union `a { u64 dev_bus_addr; grant_ref_t ref; }`: a grant
    /// ref (low 32 bits) when `op` has `GNTTAB_CACHE_SOURCE_GREF`.
    pub a: u64,
    /// **\[in\]** Offset from the start of the grant.
    pub offset: u16,
    /// **\[in\]** Length within the grant.
    pub length: u16,
    /// **\[in\]** `GNTTAB_CACHE_*`.
    pub op: u32,
}

impl CacheFlush {
    /// `a.ref`: the low 32 bits of `a`.
    #[inline]
    pub const fn ref_(&self) -> GrantRef {
        GrantRef(self.a as u32)
    }
}

// ---------------------------------------------------------------------------
// Compile-time layout checks (x86_64 values of spec/grant.md §4.1)
// ---------------------------------------------------------------------------

const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<GrantEntryV1>() == 8);
    assert!(offset_of!(GrantEntryV1, flags) == 0);
    assert!(offset_of!(GrantEntryV1, domid) == 2);
    assert!(offset_of!(GrantEntryV1, frame) == 4);
    assert!(size_of::<GrantEntryHeader>() == 4);
    assert!(offset_of!(GrantEntryHeader, domid) == 2);
    assert!(size_of::<GrantEntryV2>() == 16);
    assert!(align_of::<GrantEntryV2>() == 8);
    assert!(size_of::<GrantEntryV2FullPage>() == 16);
    assert!(offset_of!(GrantEntryV2FullPage, pad0) == 4);
    assert!(offset_of!(GrantEntryV2FullPage, frame) == 8);
    assert!(size_of::<GrantEntryV2SubPage>() == 16);
    assert!(offset_of!(GrantEntryV2SubPage, page_off) == 4);
    assert!(offset_of!(GrantEntryV2SubPage, length) == 6);
    assert!(offset_of!(GrantEntryV2SubPage, frame) == 8);
    assert!(size_of::<GrantEntryV2Transitive>() == 16);
    assert!(offset_of!(GrantEntryV2Transitive, trans_domid) == 4);
    assert!(offset_of!(GrantEntryV2Transitive, pad0) == 6);
    assert!(offset_of!(GrantEntryV2Transitive, gref) == 8);
    assert!(ENTRIES_PER_FRAME_V1 == 512);
    assert!(ENTRIES_PER_FRAME_V2 == 256);

    assert!(size_of::<MapGrantRef>() == 32);
    assert!(offset_of!(MapGrantRef, host_addr) == 0);
    assert!(offset_of!(MapGrantRef, flags) == 8);
    assert!(offset_of!(MapGrantRef, ref_) == 12);
    assert!(offset_of!(MapGrantRef, dom) == 16);
    assert!(offset_of!(MapGrantRef, status) == 18);
    assert!(offset_of!(MapGrantRef, handle) == 20);
    assert!(offset_of!(MapGrantRef, dev_bus_addr) == 24);
    assert!(size_of::<UnmapGrantRef>() == 24);
    assert!(offset_of!(UnmapGrantRef, dev_bus_addr) == 8);
    assert!(offset_of!(UnmapGrantRef, handle) == 16);
    assert!(offset_of!(UnmapGrantRef, status) == 20);
    assert!(size_of::<UnmapAndReplace>() == 24);
    assert!(offset_of!(UnmapAndReplace, new_addr) == 8);
    assert!(offset_of!(UnmapAndReplace, handle) == 16);
    assert!(offset_of!(UnmapAndReplace, status) == 20);
    assert!(size_of::<DumpTable>() == 4);
    assert!(offset_of!(DumpTable, status) == 2);
    assert!(size_of::<QuerySize>() == 16);
    assert!(offset_of!(QuerySize, nr_frames) == 4);
    assert!(offset_of!(QuerySize, max_nr_frames) == 8);
    assert!(offset_of!(QuerySize, status) == 12);
    assert!(size_of::<SetVersion>() == 4);
    assert!(size_of::<GetVersion>() == 8);
    assert!(offset_of!(GetVersion, pad) == 2);
    assert!(offset_of!(GetVersion, version) == 4);
    assert!(size_of::<SwapGrantRef>() == 12);
    assert!(offset_of!(SwapGrantRef, ref_b) == 4);
    assert!(offset_of!(SwapGrantRef, status) == 8);
    assert!(size_of::<CacheFlush>() == 16);
    assert!(offset_of!(CacheFlush, offset) == 8);
    assert!(offset_of!(CacheFlush, length) == 10);
    assert!(offset_of!(CacheFlush, op) == 12);
};

/// Layouts containing `xen_pfn_t` or guest handles (pointer-sized in C).
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<SetupTable>() == 24);
    assert!(offset_of!(SetupTable, nr_frames) == 4);
    assert!(offset_of!(SetupTable, status) == 8);
    assert!(offset_of!(SetupTable, frame_list) == 16);
    assert!(size_of::<Transfer>() == 24);
    assert!(offset_of!(Transfer, domid) == 8);
    assert!(offset_of!(Transfer, ref_) == 12);
    assert!(offset_of!(Transfer, status) == 16);
    assert!(size_of::<CopyPtr>() == 16);
    assert!(offset_of!(CopyPtr, domid) == 8);
    assert!(offset_of!(CopyPtr, offset) == 10);
    assert!(size_of::<GrantCopy>() == 40);
    assert!(offset_of!(GrantCopy, dest) == 16);
    assert!(offset_of!(GrantCopy, len) == 32);
    assert!(offset_of!(GrantCopy, flags) == 34);
    assert!(offset_of!(GrantCopy, status) == 36);
    assert!(size_of::<GetStatusFrames>() == 16);
    assert!(offset_of!(GetStatusFrames, dom) == 4);
    assert!(offset_of!(GetStatusFrames, status) == 6);
    assert!(offset_of!(GetStatusFrames, frame_list) == 8);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gntst_names_and_enum() {
        assert_eq!(gntst_name(0), "GNTST_okay");
        assert_eq!(gntst_name(-3), "GNTST_bad_gntref");
        assert_eq!(gntst_name(-13), "GNTST_no_space");
        assert_eq!(gntst_name(-14), "GNTST_unknown");
        assert_eq!(gntst_name(1), "GNTST_unknown");
        assert_eq!(gntst_name(i16::MIN), "GNTST_unknown");
        assert_eq!(gntst_message(-10), "copy arguments cross page boundary");
        for v in -13..=0i16 {
            let s = GntStatus::try_from(v).unwrap();
            assert_eq!(s.as_i16(), v);
            assert_eq!(s.name(), gntst_name(v));
        }
        assert_eq!(GntStatus::try_from(-14), Err(-14));
        assert_eq!(GntStatus::try_from(5), Err(5));
        assert_eq!(GntStatus::Eagain.name(), "GNTST_eagain");
        assert_eq!(i16::from(GntStatus::BadPage), GNTST_BAD_PAGE);
    }

    #[test]
    fn v2_views_roundtrip() {
        let sub = GrantEntryV2SubPage {
            hdr: GrantEntryHeader {
                flags: GTF_PERMIT_ACCESS | GTF_SUB_PAGE,
                domid: DomId(3),
            },
            page_off: 100,
            length: 200,
            frame: 0x1234_5678_9abc,
        };
        let e = GrantEntryV2::from(sub);
        assert_eq!(e.hdr, sub.hdr);
        assert_eq!(e.sub_page(), sub);
        assert_eq!(e.full_page().frame, 0x1234_5678_9abc);
        let t = GrantEntryV2Transitive {
            hdr: GrantEntryHeader {
                flags: GTF_TRANSITIVE,
                domid: DomId(1),
            },
            trans_domid: DomId(9),
            gref: GrantRef(77),
            ..Default::default()
        };
        assert_eq!(GrantEntryV2::from(t).transitive(), t);
    }

    #[test]
    fn copy_ptr_helpers() {
        let p = CopyPtr::gref(DomId(5), GrantRef(0xDEAD_BEEF), 12);
        assert_eq!(p.u, 0xDEAD_BEEF);
        assert_eq!(p.ref_(), GrantRef(0xDEAD_BEEF));
        // The ref is in the first four bytes (C union member at offset 0).
        assert_eq!(
            &bytemuck::bytes_of(&p)[..8],
            &[0xEF, 0xBE, 0xAD, 0xDE, 0, 0, 0, 0]
        );
        let f = CopyPtr::gmfn(0x1_0000_0000, 0);
        assert_eq!(f.domid, DOMID_SELF);
        assert_eq!(f.gmfn_value(), 0x1_0000_0000);
        let c = CacheFlush {
            a: 42,
            op: GNTTAB_CACHE_SOURCE_GREF,
            ..Default::default()
        };
        assert_eq!(c.ref_(), GrantRef(42));
    }
}
