//! The granter's grant table (`spec/grant.md` §1–2).

use alloc::vec::Vec;
use core::fmt;

use pvio_abi::grant::{
    GNTTAB_NR_RESERVED_ENTRIES, GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_TYPE_MASK,
    GTF_WRITING,
};
use pvio_abi::{DomId, GrantRef};
use pvio_shmem::{MemError, Ordering, SharedMem};

use crate::{ENTRY_SIZE, entry_offset};

/// Why a grant-table operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantError {
    /// Every reference is in use.
    NoFreeRefs,
    /// The reference is outside the table or one of the reserved ones.
    BadRef(GrantRef),
    /// The reference is not currently granted by this table.
    NotGranted(GrantRef),
    /// The grantee still has the frame mapped or a copy is in flight: access
    /// cannot end now, and the frame must not be reused (G10). Retry later,
    /// or hand it to [`GrantTable::end_access_deferred`].
    InUse(GrantRef),
    /// The table memory refused an access.
    Memory(MemError),
}

impl fmt::Display for GrantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantError::NoFreeRefs => write!(f, "no free grant references"),
            GrantError::BadRef(r) => {
                write!(f, "grant reference {} is out of range or reserved", r.0)
            }
            GrantError::NotGranted(r) => write!(f, "grant reference {} is not granted", r.0),
            GrantError::InUse(r) => {
                write!(f, "grant reference {} is still in use by the grantee", r.0)
            }
            GrantError::Memory(e) => write!(f, "grant table memory: {e}"),
        }
    }
}

impl core::error::Error for GrantError {}

impl From<MemError> for GrantError {
    fn from(e: MemError) -> Self {
        GrantError::Memory(e)
    }
}

/// The outcome of [`GrantTable::end_access_deferred`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndAccess {
    /// Access ended; the reference is free and the frame may be reused.
    Ended,
    /// The grantee still uses the frame: the grant stays on the deferred
    /// list and the frame must stay allocated until
    /// [`GrantTable::poll_deferred`] reports it released.
    Deferred,
}

/// Counters of a granter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GranterStats {
    /// Grants made.
    pub granted: u64,
    /// Grants ended.
    pub ended: u64,
    /// End-access attempts that found the grant in use.
    pub in_use: u64,
}

/// Bounded retries of the end-access compare-exchange. Only this domain and
/// the hypervisor write the flags, and the hypervisor's changes are single
/// pin/unpin steps, so a handful always suffices; the bound keeps a bug from
/// becoming a livelock.
const END_ACCESS_TRIES: u32 = 64;

/// A domain's own grant table: entries in a shared region, a free list of
/// references (reserved entries 0..7 never handed out), and the deferred
/// list of grants whose end was refused because they were in use.
#[derive(Debug)]
pub struct GrantTable<M> {
    mem: M,
    nr_entries: u32,
    free: Vec<u32>,
    granted: Vec<bool>,
    deferred: Vec<u32>,
    stats: GranterStats,
}

impl<M: SharedMem> GrantTable<M> {
    /// A table over `mem`, one 8-byte entry per 8 bytes (512 per page). The
    /// entries are zeroed (invalid).
    pub fn new(mem: M) -> Result<Self, GrantError> {
        let nr_entries = u32::try_from(mem.size() / ENTRY_SIZE).unwrap_or(u32::MAX);
        mem.fill(0, nr_entries as usize * ENTRY_SIZE, 0)?;
        // LIFO: the lowest reference is handed out first.
        let free = (GNTTAB_NR_RESERVED_ENTRIES..nr_entries).rev().collect();
        Ok(GrantTable {
            mem,
            nr_entries,
            free,
            granted: alloc::vec![false; nr_entries as usize],
            deferred: Vec::new(),
            stats: GranterStats::default(),
        })
    }

    /// Number of entries, reserved ones included.
    pub fn nr_entries(&self) -> u32 {
        self.nr_entries
    }

    /// References available for new grants.
    pub fn free_refs(&self) -> usize {
        self.free.len()
    }

    /// Grants whose end is deferred because they were in use.
    pub fn deferred(&self) -> usize {
        self.deferred.len()
    }

    /// Counters.
    pub fn stats(&self) -> &GranterStats {
        &self.stats
    }

    /// The table region.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    /// Grants `frame` to `domid`, read-only or writable (`spec/grant.md`
    /// §2.1): stores `domid`, then `frame`, then makes the flags (and with
    /// them the type) visible last with a release store, so the hypervisor
    /// never sees a valid type with a stale domid or frame.
    pub fn grant_access(
        &mut self,
        domid: DomId,
        frame: u32,
        readonly: bool,
    ) -> Result<GrantRef, GrantError> {
        let gref = self.free.pop().ok_or(GrantError::NoFreeRefs)?;
        let off = entry_offset(gref);
        let res = (|| {
            self.mem.store_u16(off + 2, domid.0, Ordering::Relaxed)?;
            self.mem.store_u32(off + 4, frame, Ordering::Relaxed)?;
            let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
            // Release: domid and frame are visible before the type.
            self.mem.store_u16(off, flags, Ordering::Release)
        })();
        if let Err(e) = res {
            self.free.push(gref);
            return Err(e.into());
        }
        self.granted[gref as usize] = true;
        self.stats.granted += 1;
        Ok(GrantRef(gref))
    }

    fn check_granted(&self, gref: GrantRef) -> Result<(), GrantError> {
        if gref.0 < GNTTAB_NR_RESERVED_ENTRIES || gref.0 >= self.nr_entries {
            return Err(GrantError::BadRef(gref));
        }
        if !self.granted[gref.0 as usize] {
            return Err(GrantError::NotGranted(gref));
        }
        Ok(())
    }

    /// Tries once to end the grant with the compare-exchange protocol of
    /// `spec/grant.md` §2.2: fails if `GTF_reading`/`GTF_writing` is set,
    /// otherwise swaps the flags to 0 — and exactly one of this swap and a
    /// hypervisor pin (which sets the in-use bits with its own
    /// compare-exchange on the same word) wins.
    fn try_end(&mut self, gref: u32) -> Result<bool, GrantError> {
        let off = entry_offset(gref);
        let mut old = self.mem.load_u16(off, Ordering::Acquire)?;
        for _ in 0..END_ACCESS_TRIES {
            if old & (GTF_READING | GTF_WRITING) != 0 {
                return Ok(false);
            }
            match self
                .mem
                .compare_exchange_u16(off, old, 0, Ordering::AcqRel, Ordering::Acquire)?
            {
                Ok(_) => return Ok(true),
                Err(actual) => old = actual,
            }
        }
        Ok(false)
    }

    fn release(&mut self, gref: u32) {
        self.granted[gref as usize] = false;
        self.free.push(gref);
        self.stats.ended += 1;
    }

    /// Ends access to `gref` and frees the reference, or fails with
    /// [`GrantError::InUse`] while the grantee uses the frame; the grant then
    /// stays valid and the frame must not be reused (G10, XSA-396).
    pub fn end_access(&mut self, gref: GrantRef) -> Result<(), GrantError> {
        self.check_granted(gref)?;
        if self.try_end(gref.0)? {
            self.release(gref.0);
            Ok(())
        } else {
            self.stats.in_use += 1;
            Err(GrantError::InUse(gref))
        }
    }

    /// Like [`GrantTable::end_access`], but a grant in use goes on the
    /// deferred list instead of failing (Linux's policy since XSA-396).
    pub fn end_access_deferred(&mut self, gref: GrantRef) -> Result<EndAccess, GrantError> {
        match self.end_access(gref) {
            Ok(()) => Ok(EndAccess::Ended),
            Err(GrantError::InUse(_)) => {
                if !self.deferred.contains(&gref.0) {
                    self.deferred.push(gref.0);
                }
                Ok(EndAccess::Deferred)
            }
            Err(e) => Err(e),
        }
    }

    /// Retries every deferred end; calls `released` with each grant that
    /// ended (its frame may now be reused). Returns how many ended.
    pub fn poll_deferred(
        &mut self,
        mut released: impl FnMut(GrantRef),
    ) -> Result<usize, GrantError> {
        let mut ended = 0;
        let mut i = 0;
        while i < self.deferred.len() {
            let gref = self.deferred[i];
            if self.try_end(gref)? {
                self.deferred.swap_remove(i);
                self.release(gref);
                released(GrantRef(gref));
                ended += 1;
            } else {
                i += 1;
            }
        }
        Ok(ended)
    }

    /// Whether the grantee currently has `gref` mapped or in a copy.
    pub fn is_in_use(&self, gref: GrantRef) -> Result<bool, GrantError> {
        self.check_granted(gref)?;
        let flags = self.mem.load_u16(entry_offset(gref.0), Ordering::Acquire)?;
        Ok(flags & (GTF_READING | GTF_WRITING) != 0)
    }

    /// Whether `gref` is granted (type `permit_access`) right now.
    pub fn is_granted(&self, gref: GrantRef) -> bool {
        self.check_granted(gref).is_ok()
            && self
                .mem
                .load_u16(entry_offset(gref.0), Ordering::Acquire)
                .is_ok_and(|f| f & GTF_TYPE_MASK == GTF_PERMIT_ACCESS)
    }
}
