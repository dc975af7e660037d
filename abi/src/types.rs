//! Basic Xen types: domain ids, grant references, event-channel ports,
//! grant handles, the protocol page size and the hypercall numbers.
//!
//! Follows spec/README.md ("Conventions") and `xen.h`.

use bytemuck::{Pod, Zeroable};
use core::fmt;

/// Protocol page size in bytes. Every ring, grant and indirect page is 4096
/// bytes, independent of the guest's own page size.
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// `__HYPERVISOR_grant_table_op`: hypercall number of `GNTTABOP_*` operations.
pub const HYPERVISOR_GRANT_TABLE_OP: u32 = 20;
/// `__HYPERVISOR_event_channel_op`: hypercall number of `EVTCHNOP_*` operations.
pub const HYPERVISOR_EVENT_CHANNEL_OP: u32 = 32;
/// `__HYPERVISOR_event_channel_op_compat`: the old multiplexed event-channel
/// hypercall taking an [`crate::evtchn::EvtchnOp`].
pub const HYPERVISOR_EVENT_CHANNEL_OP_COMPAT: u32 = 16;

/// `xen_pfn_t`: a guest/machine frame number (`unsigned long`; 64 bits on
/// x86_64).
pub type XenPfn = u64;
/// `XEN_GUEST_HANDLE(...)`: a guest virtual address passed to Xen (a pointer;
/// 64 bits on x86_64).
pub type GuestHandle = u64;

macro_rules! newtype {
    ($(#[$m:meta])* $name:ident($inner:ty), $fmt:literal) => {
        $(#[$m])*
        #[repr(transparent)]
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Pod, Zeroable,
        )]
        pub struct $name(pub $inner);

        impl From<$inner> for $name {
            #[inline]
            fn from(v: $inner) -> Self {
                Self(v)
            }
        }

        impl From<$name> for $inner {
            #[inline]
            fn from(v: $name) -> Self {
                v.0
            }
        }

        /// Formats the bare decimal number (as written in xenstore).
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, $fmt, self.0)
            }
        }
    };
}

newtype!(
    /// `domid_t`: a domain id (16 bits).
    DomId(u16),
    "{}"
);
newtype!(
    /// `grant_ref_t`: an index into the *granter's* grant table.
    GrantRef(u32),
    "{}"
);
newtype!(
    /// `evtchn_port_t`: an event-channel port number, local to one domain.
    Port(u32),
    "{}"
);
newtype!(
    /// `grant_handle_t`: the handle Xen returns for a grant mapping, needed to
    /// unmap it.
    GrantHandle(u32),
    "{}"
);

/// `DOMID_FIRST_RESERVED`: ids at or above this are not ordinary domains.
pub const DOMID_FIRST_RESERVED: DomId = DomId(0x7FF0);
/// `DOMID_SELF`: "the calling domain" in hypercall arguments.
pub const DOMID_SELF: DomId = DomId(0x7FF0);
/// `DOMID_IO`: restrict page-table updates to I/O memory.
pub const DOMID_IO: DomId = DomId(0x7FF1);
/// `DOMID_XEN`: the hypervisor itself as page owner.
pub const DOMID_XEN: DomId = DomId(0x7FF2);
/// `DOMID_COW`: owner of sharable (copy-on-write) pages.
pub const DOMID_COW: DomId = DomId(0x7FF3);
/// `DOMID_INVALID`: pages with unknown owner.
pub const DOMID_INVALID: DomId = DomId(0x7FF4);
/// `DOMID_IDLE`: the idle domain.
pub const DOMID_IDLE: DomId = DomId(0x7FFF);

impl DomId {
    /// [`DOMID_SELF`].
    pub const SELF: DomId = DOMID_SELF;

    /// True for ids that name no ordinary domain (`>= DOMID_FIRST_RESERVED`).
    #[inline]
    pub const fn is_reserved(self) -> bool {
        self.0 >= DOMID_FIRST_RESERVED.0
    }
}

const _: () = assert!(core::mem::size_of::<DomId>() == 2);
const _: () = assert!(core::mem::size_of::<GrantRef>() == 4);
const _: () = assert!(core::mem::size_of::<Port>() == 4);
const _: () = assert!(core::mem::size_of::<GrantHandle>() == 4);
const _: () = assert!(PAGE_SIZE == 1 << PAGE_SHIFT);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domid_helpers() {
        assert!(DomId::SELF.is_reserved());
        assert!(!DomId(0).is_reserved());
        assert!(!DomId(0x7FEF).is_reserved());
        assert_eq!(u16::from(DOMID_SELF), 0x7FF0);
        assert_eq!(GrantRef::from(7u32), GrantRef(7));
    }
}
