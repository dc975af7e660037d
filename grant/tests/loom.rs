//! loom models of the grant flag protocol, on `LoomMem` (the table is a
//! region of loom atomics; the code under test is the production code).
//!
//! `LOOM_MAX_PREEMPTIONS=3 cargo test -p pvio-grant --features loom --test loom --release`

use std::sync::Arc;

use loom::sync::Mutex;
use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use pvio_abi::DomId;
use pvio_abi::grant::{GTF_READING, GTF_WRITING};
use pvio_grant::{ActiveGrants, GrantError, GrantTable, PinKind};
use pvio_shmem::{LoomMem, Ordering, SharedMem};

const GRANTEE: DomId = DomId(2);
/// A small table: 16 entries (8 reserved).
const TABLE_BYTES: usize = 16 * 8;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

/// G10: the granter ends access while the hypervisor pins the entry for a
/// map. Exactly one compare-exchange wins: if the end succeeds no pin is
/// live and none can follow; while a pin is live the end fails.
#[test]
fn g10_end_access_races_map() {
    model(|| {
        let table = Arc::new(LoomMem::new(TABLE_BYTES));
        let mut granter = GrantTable::new(table.clone()).unwrap();
        let gref = granter.grant_access(GRANTEE, 5, false).unwrap();
        let active = Arc::new(Mutex::new(ActiveGrants::new()));
        let mapped = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(AtomicBool::new(false));

        let mapper = {
            let (table, active, mapped, ended) =
                (table.clone(), active.clone(), mapped.clone(), ended.clone());
            loom::thread::spawn(move || {
                let pinned = active
                    .lock()
                    .unwrap()
                    .pin(&*table, gref.0, GRANTEE, PinKind::Write);
                if let Ok(frame) = pinned {
                    assert_eq!(frame, 5);
                    mapped.store(true, SeqCst);
                    assert!(!ended.load(SeqCst), "access ended under a live mapping");
                    mapped.store(false, SeqCst);
                    active
                        .lock()
                        .unwrap()
                        .unpin(&*table, gref.0, PinKind::Write)
                        .unwrap();
                }
                pinned.is_ok()
            })
        };
        let end = granter.end_access(gref);
        match end {
            Ok(()) => {
                ended.store(true, SeqCst);
                assert!(!mapped.load(SeqCst), "ended while mapped");
            }
            Err(GrantError::InUse(_)) => {}
            Err(e) => panic!("{e}"),
        }
        let pinned = mapper.join().unwrap();
        if end.is_ok() {
            // After a successful end the entry is invalid: a new pin fails.
            assert!(
                active
                    .lock()
                    .unwrap()
                    .pin(&*table, gref.0, GRANTEE, PinKind::Read)
                    .is_err()
            );
        } else {
            assert!(pinned, "the end can only fail because the map won");
        }
        let flags = table
            .load_u16(gref.0 as usize * 8, Ordering::Acquire)
            .unwrap();
        assert_eq!(
            flags & (GTF_READING | GTF_WRITING),
            0,
            "no in-use bit left behind"
        );
    });
}

/// G11: the last unmap racing a status query: the in-use flags clear only
/// when the pin count reaches zero, in one step — a query that sees the
/// entry free finds no pins left.
#[test]
fn g11_last_unmap_races_status_query() {
    model(|| {
        let table = Arc::new(LoomMem::new(TABLE_BYTES));
        let mut granter = GrantTable::new(table.clone()).unwrap();
        let gref = granter.grant_access(GRANTEE, 3, false).unwrap();
        let active = Arc::new(Mutex::new(ActiveGrants::new()));
        {
            let mut a = active.lock().unwrap();
            a.pin(&*table, gref.0, GRANTEE, PinKind::Read).unwrap();
            a.pin(&*table, gref.0, GRANTEE, PinKind::Write).unwrap();
        }
        let released = Arc::new(AtomicU32::new(0));
        let unmappers: Vec<_> = [PinKind::Read, PinKind::Write]
            .into_iter()
            .map(|kind| {
                let (table, active, released) = (table.clone(), active.clone(), released.clone());
                loom::thread::spawn(move || {
                    active.lock().unwrap().unpin(&*table, gref.0, kind).unwrap();
                    released.fetch_add(1, SeqCst);
                })
            })
            .collect();
        let in_use = granter.is_in_use(gref).unwrap();
        if !in_use {
            assert_eq!(
                active.lock().unwrap().pins(gref.0),
                0,
                "flags cleared before the last pin went"
            );
        }
        for t in unmappers {
            t.join().unwrap();
        }
        assert_eq!(released.load(SeqCst), 2);
        assert!(!granter.is_in_use(gref).unwrap());
        granter.end_access(gref).unwrap();
    });
}
