//! Xen grant tables, version 1 (`spec/grant.md`).
//!
//! A domain shares one of its page frames with another domain by writing a
//! [`GrantEntryV1`](pvio_abi::grant::GrantEntryV1) into its grant table, a
//! region shared between the domain and the hypervisor. Two sides live here:
//!
//! * [`GrantTable`], the **granter's** side: allocate references from a free
//!   list, grant a frame (domid, then frame, then a release barrier, then the
//!   flags), end access with the compare-exchange that fails while the
//!   grantee still has the frame in use (SECURITY.md G10), and defer ending
//!   such grants until they are released (never free a frame that is still
//!   granted).
//! * [`ActiveGrants`], the **hypervisor's** side, per granter: validating a
//!   map or copy against the granter's table and pinning the entry with the
//!   32-bit compare-exchange over `flags`+`domid` (at most five tries, then
//!   an error: G5), counting pins per entry (a limit, never a wrap: G6), and
//!   clearing `GTF_reading`/`GTF_writing` in one step when the last pin goes
//!   (G9, G11).
//!
//! Both are safe code over [`pvio_shmem::SharedMem`]; the table region is
//! the only thing they share, exactly as in Xen. The grantee's map, unmap
//! and copy operations are the hypervisor's (`pvio-hv`), built on
//! [`ActiveGrants`].

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod active;
mod table;

pub use active::{ActiveGrants, MAX_PINS_PER_ENTRY, PinKind};
pub use pvio_abi::grant::GntStatus;
pub use table::{EndAccess, GrantError, GrantTable, GranterStats};

/// Bytes per v1 entry.
pub const ENTRY_SIZE: usize = 8;

/// Byte offset of entry `gref` in a table region.
#[inline]
pub(crate) const fn entry_offset(gref: u32) -> usize {
    gref as usize * ENTRY_SIZE
}
