//! The hypervisor-side pin protocol against a hostile granter table.

use pvio_abi::DomId;
use pvio_abi::grant::{GTF_PERMIT_ACCESS, GTF_PWT, GTF_READING, GntStatus};
use pvio_grant::{ActiveGrants, GrantTable, PinKind};
use pvio_shmem::{HeapMem, MemError, Ordering, SharedMem};

/// A table region whose granter flips a flag bit between every read and
/// every compare-exchange of the hypervisor: the worst a granter can do.
struct Flipping(HeapMem);

macro_rules! fwd {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        $(fn $name(&self, $($arg: $ty),*) -> $ret { self.0.$name($($arg),*) })*
    };
}

impl SharedMem for Flipping {
    fwd! {
        size() -> usize;
        read_bytes(offset: usize, dst: &mut [u8]) -> Result<(), MemError>;
        write_bytes(offset: usize, src: &[u8]) -> Result<(), MemError>;
        fill(offset: usize, len: usize, byte: u8) -> Result<(), MemError>;
        load_u16(offset: usize, order: Ordering) -> Result<u16, MemError>;
        load_u32(offset: usize, order: Ordering) -> Result<u32, MemError>;
        load_u64(offset: usize, order: Ordering) -> Result<u64, MemError>;
        store_u16(offset: usize, val: u16, order: Ordering) -> Result<(), MemError>;
        store_u32(offset: usize, val: u32, order: Ordering) -> Result<(), MemError>;
        store_u64(offset: usize, val: u64, order: Ordering) -> Result<(), MemError>;
        compare_exchange_u16(offset: usize, current: u16, new: u16, s: Ordering, f: Ordering) -> Result<Result<u16, u16>, MemError>;
        compare_exchange_u64(offset: usize, current: u64, new: u64, s: Ordering, f: Ordering) -> Result<Result<u64, u64>, MemError>;
        fetch_or_u16(offset: usize, val: u16, order: Ordering) -> Result<u16, MemError>;
        fetch_and_u16(offset: usize, val: u16, order: Ordering) -> Result<u16, MemError>;
        fetch_or_u32(offset: usize, val: u32, order: Ordering) -> Result<u32, MemError>;
        fetch_and_u32(offset: usize, val: u32, order: Ordering) -> Result<u32, MemError>;
        fetch_or_u64(offset: usize, val: u64, order: Ordering) -> Result<u64, MemError>;
        fetch_and_u64(offset: usize, val: u64, order: Ordering) -> Result<u64, MemError>;
    }
    fn compare_exchange_u32(
        &self,
        offset: usize,
        current: u32,
        new: u32,
        s: Ordering,
        f: Ordering,
    ) -> Result<Result<u32, u32>, MemError> {
        // The granter strikes between the hypervisor's read and its swap.
        self.0.fetch_xor_flag(offset)?;
        self.0.compare_exchange_u32(offset, current, new, s, f)
    }
    fn fence(&self, order: Ordering) {
        self.0.fence(order)
    }
}

trait Xor {
    fn fetch_xor_flag(&self, offset: usize) -> Result<(), MemError>;
}

impl Xor for HeapMem {
    fn fetch_xor_flag(&self, offset: usize) -> Result<(), MemError> {
        let v = self.load_u16(offset, Ordering::Relaxed)?;
        self.store_u16(offset, v ^ GTF_PWT, Ordering::Relaxed)
    }
}

/// G5: a granter that changes its entry between every read and swap makes
/// the pin give up after bounded retries with an error, and leaves no
/// in-use bit behind.
#[test]
fn g5_pin_gives_up_on_a_flipping_granter() {
    let table = Flipping(HeapMem::pages(1).unwrap());
    let mut granter = GrantTable::new(&table.0).unwrap();
    let gref = granter.grant_access(DomId(2), 7, false).unwrap();
    let mut active = ActiveGrants::new();
    assert_eq!(
        active.pin(&table, gref.0, DomId(2), PinKind::Read),
        Err(GntStatus::GeneralError)
    );
    assert!(active.is_empty());
    let flags = table
        .0
        .load_u16(gref.0 as usize * 8, Ordering::Relaxed)
        .unwrap();
    assert_eq!(flags & GTF_READING, 0);
    assert_eq!(flags & !GTF_PWT, GTF_PERMIT_ACCESS);
    // The same entry, granter quiet: pins fine.
    assert_eq!(active.pin(&table.0, gref.0, DomId(2), PinKind::Read), Ok(7));
}

/// Unpin of something never pinned, or of a kind never pinned, is an error
/// and changes nothing.
#[test]
fn unpin_mismatches_are_errors() {
    let mem = HeapMem::pages(1).unwrap();
    let mut granter = GrantTable::new(&mem).unwrap();
    let gref = granter.grant_access(DomId(2), 7, false).unwrap();
    let mut active = ActiveGrants::new();
    assert_eq!(
        active.unpin(&mem, gref.0, PinKind::Read),
        Err(GntStatus::BadHandle)
    );
    active.pin(&mem, gref.0, DomId(2), PinKind::Read).unwrap();
    assert_eq!(
        active.unpin(&mem, gref.0, PinKind::Write),
        Err(GntStatus::BadHandle)
    );
    assert_eq!(active.pins(gref.0), 1);
    active.unpin(&mem, gref.0, PinKind::Read).unwrap();
    assert!(!granter.is_in_use(gref).unwrap());
    // Granter-side bookkeeping: free refs, exhaustion, reuse.
    let total = granter.free_refs();
    let mut refs = vec![];
    while let Ok(r) = granter.grant_access(DomId(3), 1, true) {
        refs.push(r);
    }
    assert_eq!(refs.len(), total);
    assert_eq!(
        granter.grant_access(DomId(3), 1, true),
        Err(pvio_grant::GrantError::NoFreeRefs)
    );
    for r in refs {
        granter.end_access(r).unwrap();
    }
    granter.end_access(gref).unwrap();
    assert_eq!(granter.free_refs(), total + 1);
}
