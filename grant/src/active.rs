//! The hypervisor's view of one granter's table: validation and pinning of
//! entries for maps and copies (`spec/grant.md` §2.2 and §4.4).

use alloc::vec::Vec;

use pvio_abi::DomId;
use pvio_abi::grant::{
    GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_SUB_PAGE, GTF_TYPE_MASK, GTF_WRITING,
    GntStatus,
};
use pvio_shmem::{Ordering, SharedMem};

use crate::{ENTRY_SIZE, entry_offset};

/// Pins one entry may carry at once (maps plus copies in flight). Beyond it
/// a pin fails with [`GntStatus::NoSpace`]; the counters never wrap (G6).
pub const MAX_PINS_PER_ENTRY: u32 = 1024;

/// How a pin uses the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinKind {
    /// Read-only use (`GTF_reading`).
    Read,
    /// Writable use (`GTF_reading | GTF_writing`).
    Write,
}

/// An entry the hypervisor has pinned: Xen's "active entry". The frame and
/// grantee are captured at the first pin; later pins do not re-read the
/// granter's (writable, untrusted) entry except to add write access.
#[derive(Debug, Clone, Copy)]
struct Active {
    grantee: DomId,
    frame: u32,
    pins: u32,
    writers: u32,
}

/// Compare-exchange attempts on the shared `flags`+`domid` word before a pin
/// gives up (Xen: 5). A granter flipping its flags in a loop gets an error,
/// not a livelocked hypervisor (G5).
const PIN_TRIES: u32 = 5;

/// Pins of one granter's entries, held by the hypervisor (behind its lock
/// for that granter).
#[derive(Debug, Default)]
pub struct ActiveGrants {
    /// Indexed by reference; grows to the highest pinned reference (at most
    /// the granter's table size).
    active: Vec<Option<Active>>,
    live: usize,
}

impl ActiveGrants {
    /// No pins.
    pub fn new() -> Self {
        ActiveGrants::default()
    }

    /// Entries with at least one pin.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Pins on `gref` (0 when not pinned).
    pub fn pins(&self, gref: u32) -> u32 {
        self.get(gref).map_or(0, |a| a.pins)
    }

    fn get(&self, gref: u32) -> Option<&Active> {
        self.active.get(gref as usize)?.as_ref()
    }

    fn get_mut(&mut self, gref: u32) -> Option<&mut Active> {
        self.active.get_mut(gref as usize)?.as_mut()
    }

    fn insert(&mut self, gref: u32, a: Active) {
        let i = gref as usize;
        if self.active.len() <= i {
            self.active.resize(i + 1, None);
        }
        if self.active[i].replace(a).is_none() {
            self.live += 1;
        }
    }

    fn remove(&mut self, gref: u32) {
        if let Some(slot) = self.active.get_mut(gref as usize)
            && slot.take().is_some()
        {
            self.live -= 1;
        }
    }

    /// Validates entry `gref` of the granter's `table` for use by `grantee`
    /// and pins it; returns the granted frame. In Xen's order: the reference
    /// must be in the table (`BadGntref`); an entry already pinned must be
    /// pinned by the same grantee with room for another pin; otherwise the
    /// entry must be exactly `permit_access` (not sub-page) for `grantee`,
    /// and writable for a write pin, and `GTF_reading` (plus `GTF_writing`)
    /// is set with a compare-exchange over the whole `flags`+`domid` word, so
    /// the granter's end-access compare-exchange and this one cannot both
    /// succeed (G10).
    pub fn pin<M: SharedMem>(
        &mut self,
        table: &M,
        gref: u32,
        grantee: DomId,
        kind: PinKind,
    ) -> Result<u32, GntStatus> {
        let nr = table.size() / ENTRY_SIZE;
        if gref as usize >= nr {
            return Err(GntStatus::BadGntref);
        }
        let write = kind == PinKind::Write;
        if let Some(a) = self.get(gref).copied() {
            if a.grantee != grantee {
                return Err(GntStatus::GeneralError);
            }
            if a.pins >= MAX_PINS_PER_ENTRY {
                return Err(GntStatus::NoSpace);
            }
            if write && a.writers == 0 {
                // First writable use of a pinned entry: check and set
                // GTF_writing on the live entry.
                set_flags(table, gref, grantee, GTF_WRITING, true)?;
            }
            let a = self.get_mut(gref).ok_or(GntStatus::GeneralError)?;
            a.pins += 1;
            a.writers += u32::from(write);
            return Ok(a.frame);
        }
        let bits = GTF_READING | if write { GTF_WRITING } else { 0 };
        set_flags(table, gref, grantee, bits, write)?;
        // The compare-exchange that set the bits acquired the granter's
        // release store of the flags, so the frame it wrote before is seen.
        let frame = match table.load_u32(entry_offset(gref) + 4, Ordering::Relaxed) {
            Ok(f) => f,
            Err(_) => {
                let _ = table.fetch_and_u16(entry_offset(gref), !bits, Ordering::AcqRel);
                return Err(GntStatus::GeneralError);
            }
        };
        self.insert(
            gref,
            Active {
                grantee,
                frame,
                pins: 1,
                writers: u32::from(write),
            },
        );
        Ok(frame)
    }

    /// Drops one pin of `kind` on `gref`. When the last writable pin goes,
    /// `GTF_writing` is cleared; when the last pin goes, `GTF_reading` and
    /// `GTF_writing` are cleared together in one atomic step (G9, G11).
    pub fn unpin<M: SharedMem>(
        &mut self,
        table: &M,
        gref: u32,
        kind: PinKind,
    ) -> Result<(), GntStatus> {
        let a = self.get_mut(gref).ok_or(GntStatus::BadHandle)?;
        let write = kind == PinKind::Write;
        if a.pins == 0 || (write && a.writers == 0) {
            return Err(GntStatus::BadHandle);
        }
        a.pins -= 1;
        a.writers -= u32::from(write);
        let clear = if a.pins == 0 {
            self.remove(gref);
            GTF_READING | GTF_WRITING
        } else if write && a.writers == 0 {
            GTF_WRITING
        } else {
            return Ok(());
        };
        table
            .fetch_and_u16(entry_offset(gref), !clear, Ordering::AcqRel)
            .map(|_| ())
            .map_err(|_| GntStatus::GeneralError)
    }

    /// Drops every pin held by `grantee` (the grantee died: G12), clearing
    /// the in-use flags of each entry it leaves unpinned. Returns how many
    /// entries were released.
    pub fn release_grantee<M: SharedMem>(&mut self, table: &M, grantee: DomId) -> usize {
        let grefs: Vec<u32> = (0..self.active.len() as u32)
            .filter(|&g| self.get(g).is_some_and(|a| a.grantee == grantee))
            .collect();
        for gref in &grefs {
            self.remove(*gref);
            let _ = table.fetch_and_u16(
                entry_offset(*gref),
                !(GTF_READING | GTF_WRITING),
                Ordering::AcqRel,
            );
        }
        grefs.len()
    }
}

/// Validates the live entry and sets `bits` with a compare-exchange over the
/// 32-bit `flags`+`domid` word (flags in the low half), at most
/// [`PIN_TRIES`] times.
fn set_flags<M: SharedMem>(
    table: &M,
    gref: u32,
    grantee: DomId,
    bits: u16,
    write: bool,
) -> Result<(), GntStatus> {
    let off = entry_offset(gref);
    let mut word = table
        .load_u32(off, Ordering::Acquire)
        .map_err(|_| GntStatus::GeneralError)?;
    for _ in 0..PIN_TRIES {
        let flags = word as u16;
        let domid = (word >> 16) as u16;
        if flags & GTF_TYPE_MASK != GTF_PERMIT_ACCESS
            || flags & GTF_SUB_PAGE != 0
            || domid != grantee.0
        {
            return Err(GntStatus::GeneralError);
        }
        if write && flags & GTF_READONLY != 0 {
            return Err(GntStatus::GeneralError);
        }
        let new = word | u32::from(bits);
        match table.compare_exchange_u32(off, word, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(actual)) => word = actual,
            Err(_) => return Err(GntStatus::GeneralError),
        }
    }
    Err(GntStatus::GeneralError)
}
