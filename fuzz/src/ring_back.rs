//! `ring_back`: the back ring (`pvio_ring::BackRing`) consuming requests
//! from a hostile frontend that writes indices and slots at will (SECURITY.md
//! R1, R2, R3, R4, R9): never a panic, never an access outside the ring
//! (a `Fault::Memory` would be one), never more requests owed than slots,
//! and a fault is sticky.

use std::sync::Arc;

use arbitrary::Arbitrary;
use pvio_abi::blkif::{Request, Response};
use pvio_ring::{BackRing, Fault, RingError, SetupError, layout};
use pvio_shmem::{HeapMem, Ordering, SharedMem};

use crate::Enc;

type Back = BackRing<Arc<HeapMem>, Request, Response>;

/// Ring setup: both producer indices start at `start`, `req_prod` then
/// moves `ahead`; a ring of `1 << (order % 2)` pages.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub start: u32,
    pub ahead: u8,
    pub order: u8,
}

/// One step of the hostile frontend or of the backend.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Frontend: `req_prod = v`.
    SetReqProd(u32),
    /// Frontend: `req_prod += n % 64`.
    BumpReqProd(u8),
    /// Frontend: `rsp_event = v`.
    SetRspEvent(u32),
    /// Frontend: fills ring slot `slot` with `byte`.
    WriteSlot { slot: u8, byte: u8 },
    /// Backend: `drain_requests(limit)`.
    Drain(u8),
    /// Backend: `answer_requests(limit)`.
    Answer(u8),
    /// Backend: `push_response`.
    Push(i16),
    /// Backend: `publish_and_check_notify`.
    Publish,
    /// Backend: `final_check_for_requests`.
    FinalCheck,
    /// Backend: `unconsumed_requests`.
    Unconsumed,
    /// Frontend scribbles on the backend's `rsp_prod`.
    ScribbleRspProd(u32),
}

/// Number of [`Op`] variants (for [`Enc::variant`]).
pub const OPS: u32 = 11;

pub fn run(data: &[u8]) {
    let Some((h, ops)) = crate::decode::<Header, Op>(data) else {
        return;
    };
    let pages = 1usize << (h.order % 2);
    let mem = Arc::new(HeapMem::pages(pages).expect("heap ring"));
    let store = |off: usize, v: u32| mem.store_u32(off, v, Ordering::Release).unwrap();
    let load = |off: usize| mem.load_u32(off, Ordering::Acquire).unwrap();
    store(layout::RSP_PROD, h.start);
    store(layout::REQ_PROD, h.start.wrapping_add(u32::from(h.ahead)));
    let mut back = match Back::attach(mem.clone()) {
        Ok(b) => b,
        Err(SetupError::Inconsistent { .. }) => {
            // R4: refused only when the indices really are inconsistent.
            assert!(u32::from(h.ahead) > (pages as u32) * 32, "{h:?}");
            return;
        }
        Err(e) => panic!("attach: {e}"),
    };
    let nr = back.nr_ents();
    assert!(u32::from(h.ahead) <= nr, "R4: inconsistent ring attached");
    let entry = pvio_ring::entry_size::<Request, Response>();
    let mut broken = false;
    for op in ops {
        let before = back.unanswered();
        let r: Result<(), RingError> = match op {
            Op::SetReqProd(v) => {
                store(layout::REQ_PROD, v);
                Ok(())
            }
            Op::BumpReqProd(n) => {
                store(
                    layout::REQ_PROD,
                    load(layout::REQ_PROD).wrapping_add(u32::from(n % 64)),
                );
                Ok(())
            }
            Op::SetRspEvent(v) => {
                store(layout::RSP_EVENT, v);
                Ok(())
            }
            Op::WriteSlot { slot, byte } => {
                let off = layout::HEADER + (u32::from(slot) % nr) as usize * entry;
                mem.fill(off, entry, byte).unwrap();
                Ok(())
            }
            Op::Drain(limit) => back.drain_requests(u32::from(limit), |_| {}).map(|n| {
                assert!(n <= u32::from(limit));
            }),
            Op::Answer(limit) => back
                .answer_requests(u32::from(limit), |req| Response {
                    id: req.id,
                    operation: req.operation,
                    status: 0,
                    ..Default::default()
                })
                .map(|n| assert!(n <= u32::from(limit))),
            Op::Push(status) => {
                let r = back.push_response(&Response {
                    status,
                    ..Default::default()
                });
                if before == 0 {
                    assert!(r.is_err(), "a response without a request");
                }
                r
            }
            Op::Publish => back.publish_and_check_notify().map(|_| ()),
            Op::FinalCheck => back.final_check_for_requests().map(|_| ()),
            Op::Unconsumed => back.unconsumed_requests().map(|n| {
                assert!(n <= nr, "more requests than slots: {n}");
            }),
            Op::ScribbleRspProd(v) => {
                store(layout::RSP_PROD, v);
                Ok(())
            }
        };
        // Never more requests owed than there are slots for their responses
        // (R1/R9), never an access outside the ring, faults are sticky.
        assert!(back.unanswered() <= nr, "owes {}", back.unanswered());
        assert!(
            !matches!(back.fault(), Some(Fault::Memory(_))),
            "out of bounds: {:?}",
            back.fault()
        );
        if broken {
            assert!(back.fault().is_some(), "fault not sticky");
            assert!(!matches!(r, Ok(()) if !is_frontend(&op)));
        }
        if let Err(RingError::Broken(_)) = r {
            broken = true;
        }
    }
}

fn is_frontend(op: &Op) -> bool {
    matches!(
        op,
        Op::SetReqProd(_)
            | Op::BumpReqProd(_)
            | Op::SetRspEvent(_)
            | Op::WriteSlot { .. }
            | Op::ScribbleRspProd(_)
    )
}

/// Seed inputs: legitimate traffic across the index wrap (R2), producer
/// overflow (R1), an index moving backwards (R3), an inconsistent ring at
/// attach (R4), a frontend that never takes responses (R9).
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let hdr = |e: &mut Enc, start: u32, ahead: u8| {
        e.u32(start).u8(ahead).u8(0);
    };
    let mut out = Vec::new();
    let mut e = Enc::new();
    hdr(&mut e, u32::MAX - 5, 0);
    for _ in 0..4 {
        e.variant(1, OPS).u8(7); // bump 7
        e.variant(5, OPS).u8(16); // answer
        e.variant(6, OPS).i16(0); // push (nothing owed)
        e.variant(7, OPS); // publish
        e.variant(8, OPS); // final check
    }
    out.push(("r2_wrap", e.done()));
    let mut e = Enc::new();
    hdr(&mut e, 100, 3);
    e.variant(0, OPS).u32(100 + 32 + 1); // R1
    e.variant(4, OPS).u8(255);
    e.variant(5, OPS).u8(1);
    out.push(("r1_overflow", e.done()));
    let mut e = Enc::new();
    hdr(&mut e, 10, 5);
    e.variant(4, OPS).u8(5);
    e.variant(0, OPS).u32(2); // R3: backwards
    e.variant(9, OPS);
    e.variant(4, OPS).u8(1);
    out.push(("r3_backwards", e.done()));
    let mut e = Enc::new();
    hdr(&mut e, 7, 200); // R4
    out.push(("r4_attach", e.done()));
    let mut e = Enc::new();
    hdr(&mut e, 0, 0);
    for _ in 0..3 {
        e.variant(1, OPS).u8(40);
        e.variant(3, OPS).u8(3).u8(0xAA);
        e.variant(4, OPS).u8(64); // consume, never answer (R9)
        e.variant(10, OPS).u32(77);
        e.variant(2, OPS).u32(5);
    }
    out.push(("r9_no_room", e.done()));
    out
}
