//! `blkfront_responses`: the real `pvio_blkfront::Blkfront` on the embedded
//! hypervisor against a hostile backend that the fuzzer drives on the ring
//! (SECURITY.md BF1, BF2, R11, R12): responses with any id, operation and
//! status, duplicated, unrequested, a `rsp_prod` anywhere. Every I/O
//! completes at most once; once the device is broken it stays broken; the
//! frontend never panics.

use std::collections::HashSet;
use std::time::Duration;

use arbitrary::Arbitrary;
use pvio_abi::blkif::{Request, Response};
use pvio_abi::xenbus::XenbusState;
use pvio_abi::{DomId, GrantRef, Port};
use pvio_blkfront::{Blkfront, BlkfrontConfig, BlockDone, BlockIo, BlockOp};
use pvio_hv::{Domain, DomainConfig, Hypervisor, MappedPages};
use pvio_ring::BackRing;
use pvio_shmem::{Ordering, SharedMem};
use pvio_xenbus::device::{read_u32, switch_state, wait_for_state};
use pvio_xenbus::toolstack::{DevicePaths, create_device};

use crate::Enc;

type Ring = BackRing<MappedPages, Request, Response>;

/// What the backend offers and the toolstack says.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub persistent: bool,
    pub indirect: bool,
    pub trusted: bool,
}

/// One step of the frontend's user or of the hostile backend.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The user submits an I/O of `sectors % 40 + 1` sectors.
    Submit { kind: u8, sector: u16, sectors: u8 },
    /// Backend: take the requests on the ring.
    Take,
    /// Backend: answer taken request `pick` (its id and operation unless
    /// `forge`, then `id ^ xor` and `op`).
    Answer {
        pick: u8,
        forge: bool,
        xor: u64,
        op: u8,
        status: i16,
    },
    /// Backend: write a response at `rsp_prod` whatever the ring allows.
    Raw { id: u64, op: u8, status: i16 },
    /// Backend: `rsp_prod = v` (or `rsp_prod + v % 8` if `rel`).
    RspProd { rel: bool, v: u32 },
    /// Backend: rewrite request slot `slot` after submission (R12).
    Scribble { slot: u8, byte: u8 },
    /// Backend: notify.
    Kick,
    /// User: poll for completions.
    Poll,
}

/// Number of [`Op`] variants.
pub const OPS: u32 = 8;

struct Hostile {
    be: Domain,
    ring: Ring,
    port: Port,
    taken: Vec<Request>,
}

const SECTORS: u64 = 1 << 14;

fn backend_half(be: Domain, dev: DevicePaths, h: Header) -> Option<Hostile> {
    let xs = be.store();
    if h.persistent {
        xs.write(&dev.backend_key("feature-persistent"), b"1")
            .ok()?;
    }
    if h.indirect {
        xs.write(&dev.backend_key("feature-max-indirect-segments"), b"64")
            .ok()?;
    }
    for (k, v) in [("feature-flush-cache", "1"), ("feature-discard", "1")] {
        xs.write(&dev.backend_key(k), v.as_bytes()).ok()?;
    }
    switch_state(&xs, &dev.backend, XenbusState::InitWait).ok()?;
    wait_for_state(&xs, &dev.frontend, Duration::from_secs(5), |s| {
        s == XenbusState::Initialised
    })
    .ok()?;
    let gref = GrantRef(read_u32(&xs, &dev.frontend_key("ring-ref")).ok()?);
    let evtchn = Port(read_u32(&xs, &dev.frontend_key("event-channel")).ok()?);
    let ring = Ring::attach(be.map_pages(dev.frontend_id, &[gref]).ok()?).ok()?;
    let port = be.events().bind_interdomain(dev.frontend_id, evtchn).ok()?;
    for (k, v) in [("sectors", "16384"), ("info", "0"), ("sector-size", "512")] {
        xs.write(&dev.backend_key(k), v.as_bytes()).ok()?;
    }
    switch_state(&xs, &dev.backend, XenbusState::Connected).ok()?;
    Some(Hostile {
        be,
        ring,
        port,
        taken: Vec::new(),
    })
}

impl Hostile {
    fn raw(&mut self, rsp: &Response) {
        let mem = self.ring.mem();
        let prod = mem.load_u32(8, Ordering::Acquire).unwrap();
        let slot = 64 + (prod % self.ring.nr_ents()) as usize * 112;
        mem.write_bytes(slot, pvio_shmem::bytes_of(rsp)).unwrap();
        mem.store_u32(8, prod.wrapping_add(1), Ordering::Release)
            .unwrap();
    }
}

fn record(done: &mut Vec<BlockDone>, seen: &mut HashSet<u64>, broken_before: bool) {
    for d in done.drain(..) {
        assert!(seen.insert(d.tag), "I/O {} completed twice", d.tag);
        if broken_before {
            assert!(d.result.is_err(), "success after the device broke");
        }
    }
}

pub fn run(data: &[u8]) {
    let Some((h, ops)) = crate::decode::<Header, Op>(data) else {
        return;
    };
    let hv = Hypervisor::new();
    let dc = DomainConfig {
        pages: 512,
        ..DomainConfig::default()
    };
    let dom0 = hv.create_domain(DomId(0), dc).unwrap();
    let fe = hv.create_domain(DomId(1), dc).unwrap();
    let be = hv.create_domain(DomId(2), dc).unwrap();
    let dev = DevicePaths::new(fe.id(), be.id(), "vbd", 51712);
    let trusted = if h.trusted { "1" } else { "0" };
    create_device(&dom0.store(), &dev, &[("trusted", trusted)], &[]).unwrap();
    let backend = {
        let (be, dev, h) = (be.clone(), dev.clone(), h.clone());
        std::thread::spawn(move || backend_half(be, dev, h))
    };
    let cfg = BlkfrontConfig {
        ring_page_order: 0,
        max_pages: 256,
        timeout: Duration::from_secs(5),
        spin: Duration::ZERO,
        ..BlkfrontConfig::default()
    };
    let f = Blkfront::connect(fe.clone(), dev.clone(), cfg);
    let (mut f, mut b) = match (f, backend.join().unwrap()) {
        (Ok(f), Some(b)) => (f, b),
        (f, b) => panic!("handshake failed: {:?} {}", f.err(), b.is_some()),
    };
    let mut tag = 0u64;
    let mut seen = HashSet::new();
    let mut done = Vec::new();
    for op in ops {
        let broken_before = f.broken().is_some();
        match op {
            Op::Submit {
                kind,
                sector,
                sectors,
            } => {
                let n = u64::from(sectors % 40) + 1;
                let (op, data) = match kind % 4 {
                    0 => (BlockOp::Read, vec![0; n as usize * 512]),
                    1 => (BlockOp::Write, vec![0x77; n as usize * 512]),
                    2 => (BlockOp::Flush, Vec::new()),
                    _ => (BlockOp::Discard { sectors: n }, Vec::new()),
                };
                tag += 1;
                let io = BlockIo {
                    tag,
                    op,
                    sector: u64::from(sector) % SECTORS,
                    data,
                };
                if f.submit(io).is_err() {
                    seen.insert(tag);
                }
            }
            Op::Take => {
                while b.taken.len() < 256
                    && let Ok(Some(r)) = b.ring.next_request()
                {
                    b.taken.push(r);
                }
            }
            Op::Answer {
                pick,
                forge,
                xor,
                op,
                status,
            } => {
                if b.ring.unanswered() > 0 && !b.taken.is_empty() {
                    let r = b.taken.swap_remove(usize::from(pick) % b.taken.len());
                    let (id, operation) = if forge {
                        (r.id ^ xor, op)
                    } else {
                        (r.id, pvio_blkback_echo(&r))
                    };
                    let _ = b.ring.push_response(&Response {
                        id,
                        operation,
                        status,
                        ..Default::default()
                    });
                    let _ = b.ring.publish();
                }
            }
            Op::Raw { id, op, status } => b.raw(&Response {
                id,
                operation: op,
                status,
                ..Default::default()
            }),
            Op::RspProd { rel, v } => {
                let mem = b.ring.mem();
                let now = mem.load_u32(8, Ordering::Acquire).unwrap();
                let v = if rel { now.wrapping_add(v % 8) } else { v };
                mem.store_u32(8, v, Ordering::Release).unwrap();
            }
            Op::Scribble { slot, byte } => {
                let off = 64 + (u32::from(slot) % b.ring.nr_ents()) as usize * 112;
                b.ring.mem().fill(off, 112, byte).unwrap();
            }
            Op::Kick => {
                let _ = b.be.events().send(b.port);
            }
            Op::Poll => {
                f.poll(&mut done);
            }
        }
        f.poll(&mut done);
        record(&mut done, &mut seen, broken_before);
        if broken_before {
            assert!(f.broken().is_some(), "broken is sticky");
        }
    }
    // Break the ring on purpose (BF2) so that closing does not wait for
    // I/O the fuzzer never answered; every I/O must then be finished.
    let mem = b.ring.mem();
    let now = mem.load_u32(8, Ordering::Acquire).unwrap();
    let far = now.wrapping_add(b.ring.nr_ents() * 4 + 1);
    mem.store_u32(8, far, Ordering::Release).unwrap();
    let _ = b.be.events().send(b.port);
    let broken_before = f.broken().is_some();
    f.poll(&mut done);
    assert!(f.broken().is_some(), "BF2: rsp_prod overflow not noticed");
    record(&mut done, &mut seen, broken_before);
    assert_eq!(f.in_flight(), 0, "I/O left in flight on a broken device");
    for t in 1..=tag {
        assert!(seen.contains(&t), "I/O {t} never completed");
    }
    f.close();
    drop(b);
}

/// The operation a correct backend echoes (the inner one for indirect).
fn pvio_blkback_echo(r: &Request) -> u8 {
    pvio_blkback::fuzz_api::echo_op(r)
}

/// Seeds: correct answers, a duplicate, a forged id, a wrong operation, a
/// bad status, an overflowing `rsp_prod`, slots rewritten after submission.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let submit = |e: &mut Enc, kind: u8, sector: u16, n: u8| {
        e.variant(0, OPS).u8(kind).u16(sector).u8(n);
    };
    let answer = |e: &mut Enc, pick: u8, forge: bool, xor: u64, op: u8, status: i16| {
        e.variant(2, OPS)
            .u8(pick)
            .bool(forge)
            .u64(xor)
            .u8(op)
            .i16(status);
    };
    let mut out = Vec::new();
    let mut e = Enc::new();
    e.bool(true).bool(true).bool(true);
    submit(&mut e, 0, 0, 7);
    submit(&mut e, 1, 64, 39);
    submit(&mut e, 2, 0, 0);
    submit(&mut e, 3, 8, 8);
    e.variant(1, OPS);
    for _ in 0..4 {
        answer(&mut e, 0, false, 0, 0, 0);
    }
    e.variant(6, OPS).variant(7, OPS);
    submit(&mut e, 0, 100, 2);
    e.variant(1, OPS);
    answer(&mut e, 0, false, 0, 0, 77); // unknown status
    out.push(("answers", e.done()));
    let mut e = Enc::new();
    e.bool(false).bool(false).bool(false);
    submit(&mut e, 0, 0, 1);
    submit(&mut e, 0, 8, 1);
    e.variant(1, OPS);
    answer(&mut e, 0, false, 0, 0, 0);
    e.variant(3, OPS).u64(0).u8(0).i16(0); // a duplicate of something
    e.variant(6, OPS);
    out.push(("bf1_raw", e.done()));
    let mut e = Enc::new();
    e.bool(true).bool(false).bool(true);
    submit(&mut e, 1, 0, 3);
    e.variant(5, OPS).u8(0).u8(0xff); // R12
    e.variant(1, OPS);
    answer(&mut e, 0, true, 0x55, 1, 0); // BF1
    e.variant(6, OPS);
    out.push(("bf1_forged_r12", e.done()));
    let mut e = Enc::new();
    e.bool(true).bool(true).bool(false);
    submit(&mut e, 0, 0, 1);
    e.variant(4, OPS).bool(false).u32(1000); // BF2
    e.variant(6, OPS).variant(7, OPS);
    out.push(("bf2_overflow", e.done()));
    out
}
