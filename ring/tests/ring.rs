//! Unit tests of every ring operation, and the RING rows of SECURITY.md.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtOrd};

use common::{Req, Rng, Rsp};
use pvio_ring::{
    BackRing, Fault, FrontRing, RingError, SetupError, entry_size, layout, need_notify, slots_for,
};
use pvio_shmem::{AccessKind, AccessLog, HeapMem, MemfdMem, Ordering, SharedMem, SharedMemExt};

type Front<M> = FrontRing<M, Req, Rsp>;
type Back<M> = BackRing<M, Req, Rsp>;

const ENTRY: usize = 64;

fn page() -> Arc<HeapMem> {
    Arc::new(HeapMem::pages(1).unwrap())
}

fn pair(mem: &Arc<HeapMem>) -> (Front<Arc<HeapMem>>, Back<Arc<HeapMem>>) {
    let front = Front::init(mem.clone()).unwrap();
    let back = Back::attach(mem.clone()).unwrap();
    (front, back)
}

fn slot_off(idx: u32, nr: u32) -> usize {
    layout::HEADER + (idx & (nr - 1)) as usize * ENTRY
}

// ---------------------------------------------------------------- geometry

#[test]
fn slot_counts_match_spec() {
    use pvio_abi::{blkif, netif};
    // blkif, x86_64 layout: 32, 64, 128, 256, 512 for orders 0..4.
    let e = entry_size::<blkif::Request, blkif::Response>();
    assert_eq!(e, 112);
    for (order, slots) in [(0, 32), (1, 64), (2, 128), (3, 256), (4, 512)] {
        assert_eq!(slots_for(4096 << order, e), slots, "blkif order {order}");
    }
    // blkif, i386 layout (108-byte entries): 32.
    assert_eq!(slots_for(4096, 108), 32);
    // netif TX (12), RX (8), control (16).
    assert_eq!(entry_size::<netif::TxRequest, netif::TxResponse>(), 12);
    assert_eq!(slots_for(4096, 12), 256);
    assert_eq!(entry_size::<netif::RxRequest, netif::RxResponse>(), 8);
    assert_eq!(slots_for(4096, 8), 256);
    assert_eq!(entry_size::<netif::CtrlRequest, netif::CtrlResponse>(), 16);
    assert_eq!(slots_for(4096, 16), 128);
    // The bench's 64-byte requests: 32 slots a page.
    assert_eq!(entry_size::<Req, Rsp>(), 64);
    assert_eq!(slots_for(4096, 64), 32);
    // Degenerate sizes give 0, never panic.
    assert_eq!(slots_for(0, 64), 0);
    assert_eq!(slots_for(64, 64), 0);
    assert_eq!(slots_for(4096, 0), 0);
    assert_eq!(slots_for(usize::MAX, 1), 1 << 31);
}

#[test]
fn entry_size_is_the_c_union() {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct A([u8; 10]);
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct B(u32);
    assert_eq!(entry_size::<A, B>(), 12, "size 10 rounded up to align 4");
    assert_eq!(entry_size::<B, A>(), 12);
}

#[test]
fn ring_sizes_other_than_1_to_16_pages_are_refused() {
    for pages in [3usize, 5, 17, 32] {
        let mem = HeapMem::pages(pages).unwrap();
        assert_eq!(
            Front::init(&mem).unwrap_err(),
            SetupError::BadSize {
                bytes: pages * 4096
            },
            "{pages} pages"
        );
        assert!(Back::attach(&mem).is_err());
    }
    let mem = HeapMem::pages(16).unwrap();
    assert_eq!(Front::init(&mem).unwrap().nr_ents(), 512);
    let small = HeapMem::new(100).unwrap();
    assert_eq!(
        Front::init_bytes(&small, 100).unwrap_err(),
        SetupError::BadSize { bytes: 100 }
    );
    assert_eq!(
        Front::init_bytes(&small, 200).unwrap_err(),
        SetupError::BadSize { bytes: 200 }
    );
    let mem = HeapMem::new(64 + 2 * 64).unwrap();
    assert_eq!(Front::init_bytes(&mem, 64 + 2 * 64).unwrap().nr_ents(), 2);
}

#[test]
fn init_writes_the_header() {
    let mem = page();
    mem.fill(0, 4096, 0xFF).unwrap();
    let front = Front::init(mem.clone()).unwrap();
    assert_eq!(front.nr_ents(), 32);
    assert_eq!(
        mem.load_u32(layout::REQ_PROD, Ordering::Relaxed).unwrap(),
        0
    );
    assert_eq!(
        mem.load_u32(layout::RSP_PROD, Ordering::Relaxed).unwrap(),
        0
    );
    assert_eq!(
        mem.load_u32(layout::REQ_EVENT, Ordering::Relaxed).unwrap(),
        1
    );
    assert_eq!(
        mem.load_u32(layout::RSP_EVENT, Ordering::Relaxed).unwrap(),
        1
    );
    let pad: [u8; 48] = mem.read_obj(layout::PAD).unwrap();
    assert_eq!(pad, [0u8; 48]);
    let slot0: [u8; 64] = mem.read_obj(layout::HEADER).unwrap();
    assert_eq!(slot0, [0xFF; 64], "init leaves slots alone");
}

// ---------------------------------------------------------------- operations

#[test]
fn push_publish_consume_respond() {
    let mem = page();
    let (mut front, mut back) = pair(&mem);
    assert_eq!(front.free_requests(), 32);
    for id in 0..5 {
        front.push_request(&Req::new(id)).unwrap();
    }
    assert_eq!(front.free_requests(), 27);
    // Not published yet: the backend sees nothing.
    assert_eq!(back.unconsumed_requests().unwrap(), 0);
    assert_eq!(back.next_request().unwrap(), None);
    front.publish().unwrap();
    assert_eq!(back.unconsumed_requests().unwrap(), 5);
    for id in 0..5 {
        let req = back.next_request().unwrap().unwrap();
        assert_eq!(req, Req::new(id));
    }
    assert_eq!(back.next_request().unwrap(), None);
    assert_eq!(back.unanswered(), 5);
    for id in 0..5 {
        back.push_response(&Rsp::ok(id)).unwrap();
    }
    assert_eq!(
        back.push_response(&Rsp::ok(99)),
        Err(RingError::NoRequestToAnswer)
    );
    assert_eq!(
        front.next_response().unwrap(),
        None,
        "unpublished responses are invisible"
    );
    back.publish().unwrap();
    assert_eq!(front.unconsumed_responses().unwrap(), 5);
    let mut got = vec![];
    assert_eq!(front.drain_responses(3, |r| got.push(r.id)).unwrap(), 3);
    assert_eq!(front.drain_responses(100, |r| got.push(r.id)).unwrap(), 2);
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    assert_eq!(front.free_requests(), 32);
    assert_eq!(front.outstanding(), 0);
    assert_eq!(front.indices(), (5, 5));
    assert_eq!(back.indices(), (5, 5));
    assert_eq!(back.stats().consumed, 5);
    assert_eq!(front.stats().consumed, 5);
}

#[test]
fn full_ring_refuses_requests() {
    let mem = page();
    let (mut front, mut back) = pair(&mem);
    for id in 0..32 {
        front.push_request(&Req::new(id)).unwrap();
    }
    assert!(front.is_full());
    assert_eq!(front.push_request(&Req::new(32)), Err(RingError::Full));
    assert_eq!(front.reserve(1).unwrap_err(), RingError::Full);
    front.publish().unwrap();
    // One response frees one slot.
    back.next_request().unwrap().unwrap();
    back.push_response(&Rsp::ok(0)).unwrap();
    back.publish().unwrap();
    assert!(front.is_full(), "a response counts only once consumed");
    assert_eq!(front.next_response().unwrap(), Some(Rsp::ok(0)));
    front.push_request(&Req::new(32)).unwrap();
}

#[test]
fn batches_publish_once() {
    let mem = page();
    let (mut front, mut back) = pair(&mem);
    let mut next = 0u64;
    for round in 0..20 {
        let mut batch = front.reserve(32).unwrap();
        assert_eq!(batch.remaining(), 32);
        for _ in 0..32 {
            batch.push(&Req::new(next)).unwrap();
            next += 1;
        }
        assert_eq!(
            batch.push(&Req::new(0)),
            Err(RingError::Full),
            "beyond the reservation"
        );
        assert_eq!(batch.len(), 32);
        batch.publish().unwrap();
        let mut ids = vec![];
        assert_eq!(
            back.drain_requests(u32::MAX, |r| ids.push(r.id)).unwrap(),
            32
        );
        let mut rb = back.reserve(32).unwrap();
        for id in &ids {
            rb.push(&Rsp::ok(*id)).unwrap();
        }
        rb.publish().unwrap();
        let mut seen = 0;
        front
            .drain_responses(u32::MAX, |r| {
                assert_eq!(r.id, ids[seen]);
                seen += 1;
            })
            .unwrap();
        assert_eq!(seen, 32);
        assert_eq!(
            front.stats().publishes,
            round + 1,
            "one req_prod store per batch"
        );
        assert_eq!(
            back.stats().publishes,
            round + 1,
            "one rsp_prod store per batch"
        );
    }
    assert_eq!(back.reserve(1).unwrap_err(), RingError::NoRequestToAnswer);
    // A dropped batch publishes nothing and leaves the private index alone.
    {
        let mut batch = front.reserve(4).unwrap();
        batch.push(&Req::new(1)).unwrap();
    }
    front.publish().unwrap();
    assert_eq!(back.unconsumed_requests().unwrap(), 0);
    assert_eq!(front.free_requests(), 32);
}

#[test]
fn hold_off_predicate() {
    // Event inside (old, new] notifies; outside does not.
    assert!(need_notify(0, 1, 1));
    assert!(!need_notify(0, 1, 2));
    assert!(!need_notify(5, 5, 5), "nothing published, nothing sent");
    assert!(need_notify(5, 10, 10));
    assert!(need_notify(5, 10, 6));
    assert!(
        !need_notify(5, 10, 5),
        "the event at old was already crossed"
    );
    assert!(!need_notify(5, 10, 11));
}

/// SECURITY.md R2: the predicate and the whole ring across the u32 wrap.
#[test]
fn r2_hold_off_predicate_across_wrap() {
    let old = u32::MAX - 2;
    let new = 2u32; // crossed the wrap
    for event in [u32::MAX - 1, u32::MAX, 0, 1, 2] {
        assert!(
            need_notify(old, new, event),
            "event {event} lies in (old, new]"
        );
    }
    for event in [u32::MAX - 2, 3, 100, u32::MAX - 100] {
        assert!(
            !need_notify(old, new, event),
            "event {event} lies outside (old, new]"
        );
    }
}

/// SECURITY.md R2: legitimate traffic starting at `u32::MAX - 5` crosses the
/// wrap with correct data, notifications and no overflow panic (tests run
/// with debug assertions, so any non-wrapping arithmetic would panic).
#[test]
fn r2_traffic_across_index_wrap() {
    let mem = page();
    let start = u32::MAX - 5;
    for off in [layout::REQ_PROD, layout::RSP_PROD] {
        mem.store_u32(off, start, Ordering::Relaxed).unwrap();
    }
    for off in [layout::REQ_EVENT, layout::RSP_EVENT] {
        mem.store_u32(off, start.wrapping_add(1), Ordering::Relaxed)
            .unwrap();
    }
    let mut front = Front::attach(mem.clone(), start).unwrap();
    let mut back = Back::attach(mem.clone()).unwrap();
    assert_eq!(back.indices(), (start, start));
    let mut rng = Rng(7);
    let (mut sent, mut recv) = (0u64, 0u64);
    let mut notifies = 0;
    while recv < 2000 {
        let n = (rng.below(8) as u32 + 1).min(front.free_requests());
        for _ in 0..n {
            front.push_request(&Req::new(sent)).unwrap();
            sent += 1;
        }
        if front.publish_and_check_notify().unwrap().is_needed() {
            notifies += 1;
        }
        while let Some(req) = back.next_request().unwrap() {
            assert!(req.is_valid());
            back.push_response(&Rsp::ok(req.id)).unwrap();
        }
        let _ = back.publish_and_check_notify().unwrap();
        assert!(!back.final_check_for_requests().unwrap());
        front
            .drain_responses(u32::MAX, |r| {
                assert_eq!(r.id, recv);
                recv += 1;
            })
            .unwrap();
    }
    assert!(front.indices().0 < start, "the indices wrapped");
    assert!(notifies > 0);
}

#[test]
fn notify_hold_off_in_both_directions() {
    let mem = page();
    let (mut front, mut back) = pair(&mem);
    // req_event starts at 1: the first request notifies.
    front.push_request(&Req::new(0)).unwrap();
    assert!(front.publish_and_check_notify().unwrap().is_needed());
    // The backend has not re-armed: more requests are suppressed.
    front.push_request(&Req::new(1)).unwrap();
    assert!(!front.publish_and_check_notify().unwrap().is_needed());
    assert_eq!(front.stats().notifies, 1);
    assert_eq!(front.stats().suppressed, 1);
    // Nothing to publish: never notify.
    assert!(!front.publish_and_check_notify().unwrap().is_needed());
    // The backend consumes, then its final check re-arms at req_cons + 1.
    while back.next_request().unwrap().is_some() {}
    assert!(!back.final_check_for_requests().unwrap());
    assert_eq!(
        mem.load_u32(layout::REQ_EVENT, Ordering::Relaxed).unwrap(),
        3
    );
    front.push_request(&Req::new(2)).unwrap();
    assert!(front.publish_and_check_notify().unwrap().is_needed());
    // The final check sees work that raced in and does not re-arm past it.
    assert!(back.final_check_for_requests().unwrap());

    // Responses: rsp_event starts at 1, so the first publication notifies.
    back.next_request().unwrap().unwrap();
    for id in 0..3 {
        back.push_response(&Rsp::ok(id)).unwrap();
    }
    assert!(back.publish_and_check_notify().unwrap().is_needed());
    assert!(
        front.final_check_for_responses().unwrap(),
        "responses are waiting"
    );
    front.drain_responses(u32::MAX, |_| {}).unwrap();
    assert!(!front.final_check_for_responses().unwrap());
    assert_eq!(
        mem.load_u32(layout::RSP_EVENT, Ordering::Relaxed).unwrap(),
        4
    );
}

#[test]
fn batched_event_index_wakes_once_per_batch() {
    let mem = page();
    let (mut front, mut back) = pair(&mem);
    for id in 0..16 {
        front.push_request(&Req::new(id)).unwrap();
    }
    let _ = front.publish_and_check_notify().unwrap();
    // Ask to be woken after 8 responses; more than outstanding is capped.
    assert!(!front.final_check_for_responses_after(8).unwrap());
    assert_eq!(
        mem.load_u32(layout::RSP_EVENT, Ordering::Relaxed).unwrap(),
        8
    );
    let mut wakes = 0;
    for _ in 0..16 {
        back.next_request().unwrap().unwrap();
        back.push_response(&Rsp::ok(0)).unwrap();
        if back.publish_and_check_notify().unwrap().is_needed() {
            wakes += 1;
        }
    }
    assert_eq!(wakes, 1, "one wakeup for the batch of 8, none after");
    front.drain_responses(u32::MAX, |_| {}).unwrap();
    front.push_request(&Req::new(0)).unwrap();
    let _ = front.publish_and_check_notify().unwrap();
    assert!(!front.final_check_for_responses_after(1000).unwrap());
    assert_eq!(
        mem.load_u32(layout::RSP_EVENT, Ordering::Relaxed).unwrap(),
        17,
        "capped at the one outstanding request"
    );
    // The backend's variant: wake after 4 requests.
    back.next_request().unwrap().unwrap();
    assert!(!back.final_check_for_requests_after(4).unwrap());
    assert_eq!(
        mem.load_u32(layout::REQ_EVENT, Ordering::Relaxed).unwrap(),
        21
    );
    // A backend that needs 4 requests at once: 2 waiting are not enough, and
    // the wakeup is asked for when the 4th (counted from req_cons) comes.
    for id in 0..2 {
        front.push_request(&Req::new(id)).unwrap();
    }
    let _ = front.publish_and_check_notify().unwrap();
    assert!(
        back.final_check_for_requests_after(4).unwrap(),
        "any waiting"
    );
    assert!(!back.final_check_for_requests_at_least(4).unwrap());
    assert_eq!(
        mem.load_u32(layout::REQ_EVENT, Ordering::Relaxed).unwrap(),
        21
    );
    front.push_request(&Req::new(2)).unwrap();
    assert!(!front.publish_and_check_notify().unwrap().is_needed());
    front.push_request(&Req::new(3)).unwrap();
    assert!(front.publish_and_check_notify().unwrap().is_needed());
    assert!(back.final_check_for_requests_at_least(4).unwrap());
}

#[test]
#[cfg_attr(miri, ignore = "memfd_create is a system call Miri does not emulate")]
fn works_over_memfd_and_multi_page_rings() {
    let mem = Arc::new(MemfdMem::new(c"ring-test", 4 * 4096).unwrap());
    let mut front = Front::init(mem.clone()).unwrap();
    let mut back = Back::attach(mem.clone()).unwrap();
    assert_eq!(front.nr_ents(), 128);
    for id in 0..128 {
        front.push_request(&Req::new(id)).unwrap();
    }
    front.publish().unwrap();
    assert_eq!(
        back.drain_requests(u32::MAX, |r| assert!(r.is_valid()))
            .unwrap(),
        128
    );
}

// ---------------------------------------------------------------- SECURITY.md RING rows

/// SECURITY.md R1: `req_prod = rsp_prod_pvt + size + 1` breaks the ring,
/// stickily, iterating nothing; another ring is unaffected.
#[test]
fn r1_bogus_req_prod_breaks_ring() {
    let mem = page();
    let (mut front, mut back) = pair(&mem);
    let other = page();
    let (mut front2, mut back2) = pair(&other);
    mem.store_u32(layout::REQ_PROD, 32 + 1, Ordering::Release)
        .unwrap();
    let mut calls = 0;
    let err = back.drain_requests(u32::MAX, |_| calls += 1).unwrap_err();
    assert_eq!(
        err,
        RingError::Broken(Fault::RequestOverflow {
            req_prod: 33,
            req_cons: 0,
            rsp_prod_pvt: 0
        })
    );
    assert_eq!(calls, 0, "nothing iterated");
    // Sticky: even a now-valid index does not revive it.
    mem.store_u32(layout::REQ_PROD, 1, Ordering::Release)
        .unwrap();
    assert!(matches!(back.next_request(), Err(RingError::Broken(_))));
    assert!(matches!(
        back.unconsumed_requests(),
        Err(RingError::Broken(_))
    ));
    assert!(matches!(
        back.final_check_for_requests(),
        Err(RingError::Broken(_))
    ));
    assert!(matches!(
        back.push_response(&Rsp::ok(0)),
        Err(RingError::Broken(_))
    ));
    assert!(back.fault().is_some());
    // The frontend of this ring is not involved; the other ring is fine.
    let _ = &mut front;
    front2.push_request(&Req::new(9)).unwrap();
    front2.publish().unwrap();
    assert_eq!(back2.next_request().unwrap(), Some(Req::new(9)));
    // A huge index far beyond the ring is the same fault, not a long loop.
    let mem3 = page();
    let (_f3, mut back3) = pair(&mem3);
    mem3.store_u32(layout::REQ_PROD, u32::MAX / 2, Ordering::Release)
        .unwrap();
    assert!(matches!(
        back3.next_request(),
        Err(RingError::Broken(Fault::RequestOverflow { .. }))
    ));
}

/// SECURITY.md R3: a producer index that moves backwards breaks the ring,
/// even when the distance from `rsp_prod_pvt` still looks small.
#[test]
fn r3_req_prod_moving_backwards_breaks_ring() {
    let mem = page();
    let (mut front, mut back) = pair(&mem);
    for id in 0..10 {
        front.push_request(&Req::new(id)).unwrap();
    }
    front.publish().unwrap();
    for _ in 0..10 {
        back.next_request().unwrap().unwrap();
    }
    for id in 0..5 {
        back.push_response(&Rsp::ok(id)).unwrap();
    }
    back.publish().unwrap();
    // req_cons = 10, rsp_prod_pvt = 5; the frontend rewinds req_prod to 7.
    mem.store_u32(layout::REQ_PROD, 7, Ordering::Release)
        .unwrap();
    let mut calls = 0;
    assert!(matches!(
        back.drain_requests(u32::MAX, |_| calls += 1),
        Err(RingError::Broken(Fault::RequestOverflow {
            req_prod: 7,
            req_cons: 10,
            rsp_prod_pvt: 5
        }))
    ));
    assert_eq!(calls, 0);
    // Rewinding below rsp_prod_pvt is caught as well.
    let mem = page();
    let (mut front, mut back) = pair(&mem);
    front.push_request(&Req::new(0)).unwrap();
    front.publish().unwrap();
    back.next_request().unwrap().unwrap();
    mem.store_u32(layout::REQ_PROD, u32::MAX, Ordering::Release)
        .unwrap();
    assert!(matches!(back.next_request(), Err(RingError::Broken(_))));
}

/// SECURITY.md R4: attaching to a ring whose indices are already
/// inconsistent fails (the caller then releases the mapping).
#[test]
fn r4_attach_to_inconsistent_ring_fails() {
    let mem = page();
    let _front = Front::init(mem.clone()).unwrap();
    mem.store_u32(layout::RSP_PROD, 100, Ordering::Relaxed)
        .unwrap();
    mem.store_u32(layout::REQ_PROD, 100 + 33, Ordering::Relaxed)
        .unwrap();
    assert_eq!(
        Back::attach(mem.clone()).unwrap_err(),
        SetupError::Inconsistent {
            req_prod: 133,
            rsp_prod: 100
        }
    );
    mem.store_u32(layout::REQ_PROD, 99, Ordering::Relaxed)
        .unwrap();
    assert!(
        Back::attach(mem.clone()).is_err(),
        "req_prod behind rsp_prod"
    );
    // Exactly full is consistent.
    mem.store_u32(layout::REQ_PROD, 132, Ordering::Relaxed)
        .unwrap();
    let back = Back::attach(mem.clone()).unwrap();
    assert_eq!(back.indices(), (100, 100));
    drop(back);
    assert_eq!(
        Arc::strong_count(&mem),
        2,
        "a refused attach keeps no reference"
    );
}

/// SECURITY.md R5: a flipper thread rewrites slots and indices continuously
/// while the backend parses. Every decision uses one private copy: the
/// backend answers valid requests, rejects torn ones, never consumes more
/// than the ring holds per snapshot, and never panics.
#[test]
fn r5_flipper_rewrites_slots_and_indices() {
    let mem = page();
    let _front = Front::init(mem.clone()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (mem, stop) = (mem.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(0x5eed);
            let mut flips = 0u64;
            while !stop.load(AtOrd::Relaxed) {
                let r = rng.next();
                match r % 4 {
                    0 => {
                        let off = layout::HEADER + rng.below(32) as usize * ENTRY;
                        let id = rng.next();
                        // Sometimes a valid request, sometimes garbage.
                        let req = if r & 16 == 0 {
                            Req::new(id)
                        } else {
                            Req {
                                check: id,
                                ..Req::new(id)
                            }
                        };
                        mem.write_obj(off, &req).unwrap();
                    }
                    1 => mem
                        .store_u32(layout::REQ_PROD, rng.next() as u32, Ordering::Release)
                        .unwrap(),
                    2 => {
                        let cur = mem.load_u32(layout::RSP_PROD, Ordering::Relaxed).unwrap();
                        let bump = rng.below(40) as u32;
                        mem.store_u32(layout::REQ_PROD, cur.wrapping_add(bump), Ordering::Release)
                            .unwrap();
                    }
                    _ => {
                        let off = layout::HEADER + rng.below(32 * 8) as usize * 8;
                        mem.store_u64(off, rng.next(), Ordering::Relaxed).unwrap();
                    }
                }
                flips += 1;
            }
            flips
        })
    };
    let (mut valid, mut invalid, mut breaks, mut refused) = (0u64, 0u64, 0u64, 0u64);
    // Under Miri (much slower, virtual clock) until both outcomes were seen.
    let budget = std::time::Duration::from_millis(if cfg!(miri) { 60_000 } else { 300 });
    let deadline = std::time::Instant::now() + budget;
    let mut back = Back::attach(mem.clone()).ok();
    while std::time::Instant::now() < deadline && !(cfg!(miri) && breaks > 0 && valid + invalid > 0)
    {
        let Some(b) = back.as_mut() else {
            match Back::attach(mem.clone()) {
                Ok(b) => back = Some(b),
                Err(_) => refused += 1,
            }
            continue;
        };
        let mut reqs = Vec::new();
        match b.drain_requests(u32::MAX, |r| reqs.push(r)) {
            Ok(n) => {
                assert!(n <= 32, "never more than the ring per snapshot");
                for req in reqs {
                    // Validation and use both look at the one private copy.
                    let status = if req.is_valid() {
                        valid += 1;
                        0
                    } else {
                        invalid += 1;
                        -1
                    };
                    b.push_response(&Rsp {
                        status,
                        ..Rsp::ok(req.id)
                    })
                    .unwrap();
                }
                b.publish().unwrap();
            }
            Err(RingError::Broken(_)) => {
                breaks += 1;
                back = None;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    stop.store(true, AtOrd::Relaxed);
    let flips = flipper.join().unwrap();
    eprintln!(
        "R5: {flips} flips; {valid} valid, {invalid} rejected, {breaks} rings broken, {refused} attaches refused"
    );
    assert!(breaks > 0, "the flipper's bogus indices were caught");
    assert!(valid + invalid > 0, "requests were parsed while flipping");
}

/// SECURITY.md R5, frontend side: a flipper rewriting `rsp_prod` and the
/// response slots never makes the frontend read beyond what it published.
#[test]
fn r5_flipper_against_frontend() {
    let mem = page();
    let mut front = Front::init(mem.clone()).unwrap();
    for id in 0..20 {
        front.push_request(&Req::new(id)).unwrap();
    }
    front.publish().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (mem, stop) = (mem.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(99);
            while !stop.load(AtOrd::Relaxed) {
                mem.store_u32(layout::RSP_PROD, rng.below(24) as u32, Ordering::Release)
                    .unwrap();
                let off = layout::HEADER + rng.below(32) as usize * ENTRY;
                mem.write_obj(off, &Rsp::ok(rng.next())).unwrap();
            }
        })
    };
    let mut consumed = 0u32;
    let mut broke = false;
    for _ in 0..200_000 {
        match front.drain_responses(u32::MAX, |_| consumed += 1) {
            Ok(_) => {}
            Err(RingError::Broken(Fault::ResponseOverflow { .. })) => {
                broke = true;
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    stop.store(true, AtOrd::Relaxed);
    flipper.join().unwrap();
    assert!(
        consumed <= 20,
        "never consumed more responses than requests published"
    );
    assert!(
        broke,
        "an rsp_prod beyond the published requests breaks the ring"
    );
}

/// SECURITY.md R6: with an instrumented memory, each request slot is read
/// exactly once per request, as one whole-request copy, across the wrap.
#[test]
fn r6_each_request_slot_read_exactly_once() {
    let mem = page();
    let front_view = Arc::new(AccessLog::new(mem.clone()));
    let back_view = Arc::new(AccessLog::new(mem.clone()));
    let mut front = Front::init(front_view.clone()).unwrap();
    let mut back = Back::attach(back_view.clone()).unwrap();
    back_view.take();
    let total = 100u32; // more than three laps of a 32-slot ring
    let mut sent = 0u32;
    let mut rng = Rng(3);
    let mut expected_reads = vec![0usize; 32];
    while sent < total {
        let n = (rng.below(7) as u32 + 1)
            .min(total - sent)
            .min(front.free_requests());
        for _ in 0..n {
            expected_reads[(sent % 32) as usize] += 1;
            front.push_request(&Req::new(u64::from(sent))).unwrap();
            sent += 1;
        }
        front.publish().unwrap();
        // Consume one at a time and in batches, alternately.
        if sent.is_multiple_of(2) {
            while let Some(r) = back.next_request().unwrap() {
                back.push_response(&Rsp::ok(r.id)).unwrap();
            }
        } else {
            let mut ids = vec![];
            back.drain_requests(u32::MAX, |r| ids.push(r.id)).unwrap();
            for id in ids {
                back.push_response(&Rsp::ok(id)).unwrap();
            }
        }
        back.publish().unwrap();
        front.drain_responses(u32::MAX, |_| {}).unwrap();
    }
    let mut reads = vec![0usize; 32];
    for a in back_view.take() {
        if a.kind == AccessKind::Read {
            assert!(a.offset >= layout::HEADER, "only slots are copied");
            assert_eq!(
                (a.offset - layout::HEADER) % ENTRY,
                0,
                "whole-slot copies only"
            );
            assert_eq!(
                a.len,
                std::mem::size_of::<Req>(),
                "one copy of the whole request"
            );
            reads[(a.offset - layout::HEADER) / ENTRY] += 1;
        } else {
            assert!(
                a.kind != AccessKind::Load || a.offset == layout::REQ_PROD,
                "the backend loads only req_prod: {a:?}"
            );
        }
    }
    assert_eq!(reads, expected_reads, "each request read exactly once");
    assert_eq!(reads.iter().sum::<usize>(), total as usize);
}

/// SECURITY.md R7: on a ring page pre-filled with 0xAA, after many
/// responses, every byte is either a response field, the frontend's own
/// request bytes, the zeroed header padding, or untouched 0xAA: no stale
/// private data of the backend.
#[test]
fn r7_no_stale_bytes_in_ring_page() {
    let mem = page();
    mem.fill(0, 4096, 0xAA).unwrap();
    let (mut front, mut back) = pair(&mem);
    let mut last_req = vec![None; 32];
    let mut last_rsp = vec![None; 32];
    for id in 0..300u64 {
        let idx = front.indices().0;
        let req = Req::new(id);
        front.push_request(&req).unwrap();
        front.publish().unwrap();
        let got = back.next_request().unwrap().unwrap();
        let rsp = Rsp {
            status: (id % 3) as i16 - 1,
            ..Rsp::ok(got.id)
        };
        back.push_response(&rsp).unwrap();
        back.publish().unwrap();
        front.next_response().unwrap().unwrap();
        last_req[(idx % 32) as usize] = Some(req);
        last_rsp[(idx % 32) as usize] = Some(rsp);
    }
    let page_bytes = mem.to_vec().unwrap();
    assert!(
        page_bytes[16..64].iter().all(|&b| b == 0),
        "header padding zeroed"
    );
    for slot in 0..32 {
        let bytes = &page_bytes[slot_off(slot, 32)..slot_off(slot, 32) + ENTRY];
        let rsp = last_rsp[slot as usize].unwrap();
        let req = last_req[slot as usize].unwrap();
        assert_eq!(
            &bytes[..16],
            bytemuck::bytes_of(&rsp),
            "response bytes, padding zero"
        );
        assert_eq!(
            &bytes[16..],
            &bytemuck::bytes_of(&req)[16..],
            "rest is the frontend's request"
        );
    }
    let tail = slot_off(31, 32) + ENTRY;
    assert!(
        page_bytes[tail..].iter().all(|&b| b == 0xAA),
        "bytes past the slots untouched"
    );
}

/// SECURITY.md R9: a frontend that never consumes responses cannot make the
/// backend overwrite them: the backend only ever answers requests it has
/// consumed, and with responses withheld it consumes at most one ring's
/// worth before a further `req_prod` is an overflow.
#[test]
fn r9_backend_never_overwrites_unconsumed_responses() {
    let mem = page();
    let (mut front, mut back) = pair(&mem);
    for id in 0..32 {
        front.push_request(&Req::new(id)).unwrap();
    }
    front.publish().unwrap();
    assert_eq!(back.drain_requests(u32::MAX, |_| {}).unwrap(), 32);
    for id in 0..32 {
        back.push_response(&Rsp::ok(id)).unwrap();
    }
    back.publish().unwrap();
    // The frontend consumes nothing; an honest one cannot push more.
    assert_eq!(front.push_request(&Req::new(99)), Err(RingError::Full));
    // The backend has nothing to answer: it cannot write another slot.
    assert_eq!(
        back.push_response(&Rsp::ok(0)),
        Err(RingError::NoRequestToAnswer)
    );
    assert_eq!(back.next_request().unwrap(), None);
    // Responses are all still there for the frontend.
    let mut n = 0;
    front
        .drain_responses(u32::MAX, |r| {
            assert_eq!(r.id, n);
            n += 1;
        })
        .unwrap();
    assert_eq!(n, 32);

    // Backend withholding responses (I/O in flight): a frontend that keeps
    // bumping req_prod gets at most a ring's worth consumed, then is broken.
    let mem = page();
    let (_front, mut back) = pair(&mem);
    mem.store_u32(layout::REQ_PROD, 32, Ordering::Release)
        .unwrap();
    assert_eq!(back.drain_requests(u32::MAX, |_| {}).unwrap(), 32);
    assert_eq!(back.unanswered(), 32);
    assert_eq!(back.next_request().unwrap(), None);
    mem.store_u32(layout::REQ_PROD, 33, Ordering::Release)
        .unwrap();
    assert!(matches!(
        back.next_request(),
        Err(RingError::Broken(Fault::RequestOverflow { .. }))
    ));
}

/// SECURITY.md R11: `rsp_prod - rsp_cons > size` (or any response beyond the
/// published requests) puts the frontend into its error state and consumes
/// nothing.
#[test]
fn r11_bogus_rsp_prod_breaks_frontend() {
    let mem = page();
    let (mut front, _back) = pair(&mem);
    for id in 0..4 {
        front.push_request(&Req::new(id)).unwrap();
    }
    front.publish().unwrap();
    mem.store_u32(layout::RSP_PROD, 33, Ordering::Release)
        .unwrap();
    let mut calls = 0;
    assert_eq!(
        front.drain_responses(u32::MAX, |_| calls += 1).unwrap_err(),
        RingError::Broken(Fault::ResponseOverflow {
            rsp_prod: 33,
            rsp_cons: 0,
            req_prod: 4
        })
    );
    assert_eq!(calls, 0);
    assert!(matches!(
        front.push_request(&Req::new(5)),
        Err(RingError::Broken(_))
    ));
    assert!(matches!(
        front.publish_and_check_notify(),
        Err(RingError::Broken(_))
    ));
    // Within the ring size but beyond the 4 published requests: also caught.
    let mem = page();
    let (mut front, _back) = pair(&mem);
    for id in 0..4 {
        front.push_request(&Req::new(id)).unwrap();
    }
    front.publish().unwrap();
    mem.store_u32(layout::RSP_PROD, 5, Ordering::Release)
        .unwrap();
    assert!(matches!(front.next_response(), Err(RingError::Broken(_))));
    // Backwards.
    let mem = page();
    let (mut front, mut back) = pair(&mem);
    front.push_request(&Req::new(0)).unwrap();
    front.publish().unwrap();
    back.next_request().unwrap().unwrap();
    back.push_response(&Rsp::ok(0)).unwrap();
    back.publish().unwrap();
    front.next_response().unwrap().unwrap();
    mem.store_u32(layout::RSP_PROD, 0, Ordering::Release)
        .unwrap();
    assert!(matches!(
        front.unconsumed_responses(),
        Err(RingError::Broken(_))
    ));
}

/// SECURITY.md R12: a backend that rewrites request slots after submission
/// cannot change what the frontend completes: the frontend never reads a
/// request slot back; it matches responses against its private shadow.
#[test]
fn r12_frontend_never_rereads_request_slots() {
    let mem = page();
    let front_view = Arc::new(AccessLog::new(mem.clone()));
    let mut front = Front::init(front_view.clone()).unwrap();
    let mut back = Back::attach(mem.clone()).unwrap();
    let mut shadow = std::collections::HashMap::new();
    for id in 0..8u64 {
        let req = Req::new(id);
        front.push_request(&req).unwrap();
        shadow.insert(id, req);
    }
    front.publish().unwrap();
    front_view.take();
    // Hostile backend: consume, then scribble over the request slots' tails.
    for _ in 0..8 {
        let r = back.next_request().unwrap().unwrap();
        back.push_response(&Rsp::ok(r.id)).unwrap();
    }
    for slot in 0..8 {
        mem.fill(slot_off(slot, 32) + 16, 48, 0x66).unwrap();
    }
    back.publish().unwrap();
    let mut completed = vec![];
    front
        .drain_responses(u32::MAX, |r| {
            let orig = shadow
                .remove(&r.id)
                .expect("response for an outstanding id");
            completed.push(orig);
        })
        .unwrap();
    assert_eq!(completed, (0..8).map(Req::new).collect::<Vec<_>>());
    for a in front_view.take() {
        match a.kind {
            AccessKind::Read => {
                assert_eq!(a.len, std::mem::size_of::<Rsp>(), "only responses read")
            }
            AccessKind::Load => assert_eq!(a.offset, layout::RSP_PROD),
            _ => {}
        }
    }
}

#[test]
fn answer_requests_and_batch_commit() {
    let mem = page();
    let (mut front, mut back) = pair(&mem);
    let mut b = front.reserve(10).unwrap();
    for id in 0..10 {
        b.push(&Req::new(id)).unwrap();
    }
    b.commit(); // private only
    assert_eq!(back.unconsumed_requests().unwrap(), 0);
    assert!(front.publish_and_check_notify().unwrap().is_needed());
    // Leave two requests unanswered (async I/O), then answer synchronously:
    // answers go into the oldest consumed slots, all ids come back once.
    back.next_request().unwrap().unwrap();
    back.next_request().unwrap().unwrap();
    assert_eq!(back.answer_requests(5, |r| Rsp::ok(r.id)).unwrap(), 5);
    assert_eq!(back.unanswered(), 2);
    assert_eq!(
        back.answer_requests(u32::MAX, |r| Rsp::ok(r.id)).unwrap(),
        3
    );
    back.push_response(&Rsp::ok(0)).unwrap();
    back.push_response(&Rsp::ok(1)).unwrap();
    let mut rb = back.reserve(0).unwrap();
    assert!(rb.is_empty());
    assert_eq!(rb.push(&Rsp::ok(9)), Err(RingError::NoRequestToAnswer));
    rb.commit();
    back.publish().unwrap();
    let mut ids = vec![];
    front.drain_responses(u32::MAX, |r| ids.push(r.id)).unwrap();
    ids.sort_unstable();
    assert_eq!(ids, (0..10).collect::<Vec<_>>());
    assert_eq!(back.stats().consumed, 10);
    assert_eq!(back.stats().produced, 10);
    // A broken ring refuses answer_requests too.
    mem.store_u32(layout::REQ_PROD, 99, Ordering::Release)
        .unwrap();
    assert!(matches!(
        back.answer_requests(1, |r| Rsp::ok(r.id)),
        Err(RingError::Broken(_))
    ));
}

#[test]
fn slots_misaligned_for_the_types_are_refused_at_setup() {
    let mem = HeapMem::pages(2).unwrap();
    // Indices must be 4-aligned: a window at an odd half-word is refused.
    let w = pvio_shmem::Window::new(&mem, 2, 4096).unwrap();
    assert!(matches!(
        Front::init_bytes(&w, 4096).unwrap_err(),
        SetupError::Memory(pvio_shmem::MemError::Misaligned { .. })
    ));
    // A window at a word offset works (its slots are copied in 4-byte words).
    let w = pvio_shmem::Window::new(&mem, 4, 4096).unwrap();
    let mut f = Front::init_bytes(&w, 4096).unwrap();
    let mut b = Back::attach_bytes(&w, 4096).unwrap();
    f.push_request(&Req::new(5)).unwrap();
    f.publish().unwrap();
    assert_eq!(b.next_request().unwrap(), Some(Req::new(5)));
    let w = pvio_shmem::Window::new(&mem, 4096, 4096).unwrap();
    assert!(Front::init(&w).is_ok(), "a page-aligned window is fine");
}

#[test]
fn fill_with_and_bulk_paths_across_the_wrap() {
    let mem = page();
    let (mut front, mut back) = pair(&mem);
    let mut next = 0u64;
    let mut seen = 0u64;
    for round in 0..40u64 {
        let n = (round % 7 + 1) as u32 * 3; // 3..21, so runs straddle the wrap
        let mut b = front.reserve(n).unwrap();
        let base = next;
        assert_eq!(b.fill_with(|i| Req::new(base + u64::from(i))).unwrap(), n);
        assert_eq!(
            b.fill_with(|_| unreachable!()).unwrap(),
            0,
            "nothing left to fill"
        );
        b.publish().unwrap();
        next += u64::from(n);
        if round % 2 == 0 {
            assert_eq!(
                back.answer_requests(u32::MAX, |r| {
                    assert!(r.is_valid());
                    Rsp::ok(r.id)
                })
                .unwrap(),
                n
            );
        } else {
            let mut ids = vec![];
            back.drain_requests(u32::MAX, |r| ids.push(r.id)).unwrap();
            for id in ids {
                back.push_response(&Rsp::ok(id)).unwrap();
            }
        }
        back.publish().unwrap();
        front
            .drain_responses(u32::MAX, |r| {
                assert_eq!(r.id, seen);
                seen += 1;
            })
            .unwrap();
    }
    assert_eq!(seen, next);
    assert!(front.indices().0 > 32 * 4, "wrapped the ring several times");
}

/// R8: a frontend that keeps the ring full gets at most `limit` requests
/// taken per call; the rest wait for the next poll, in order.
#[test]
fn r8_requests_per_poll_are_bounded_by_the_limit() {
    let mem = page();
    let (mut front, mut back) = pair(&mem);
    for id in 0..32 {
        front.push_request(&Req::new(id)).unwrap();
    }
    front.publish().unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let n = back.drain_requests(8, |r| seen.push(r.id)).unwrap();
        assert_eq!(n, 8, "never more than the limit per poll");
    }
    assert_eq!(back.drain_requests(8, |_| {}).unwrap(), 0);
    assert_eq!(seen, (0..32).collect::<Vec<_>>());
}
