//! blkfront against a hostile backend written in the test, directly on the
//! ring: the BF rows of SECURITY.md (BF1, BF2, BF4) and bad backend keys.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Fixture, GUARD, domains};
use pvio_abi::blkif::{
    BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_RSP_OKAY, Request, RequestSegment, Response,
};
use pvio_abi::xenbus::XenbusState;
use pvio_abi::{GrantRef, Port};
use pvio_blkfront::{BlkError, Blkfront, BlkfrontConfig, BlockDone, BlockIo, BlockOp};
use pvio_hv::{Domain, MappedPages};
use pvio_ring::BackRing;
use pvio_shmem::SharedMem;
use pvio_xenbus::device::{read_u32, read_u32_or, switch_state, wait_for_state};
use pvio_xenbus::toolstack::DevicePaths;

type Ring = BackRing<MappedPages, Request, Response>;

const SECTORS: u64 = 4096;

/// The backend's half, by hand.
struct Hostile {
    be: Domain,
    fe: pvio_abi::DomId,
    ring: Ring,
    port: Port,
}

impl Hostile {
    fn next(&mut self) -> Request {
        let deadline = Instant::now() + GUARD;
        loop {
            if let Some(r) = self.ring.next_request().unwrap() {
                return r;
            }
            assert!(Instant::now() < deadline, "no request");
            std::thread::yield_now();
        }
    }

    /// Writes a response past what the ring API allows (a duplicate), at
    /// `rsp_prod`, and publishes it.
    fn raw_answer(&mut self, id: u64, operation: u8, status: i16) {
        let mem = self.ring.mem();
        let prod = mem.load_u32(8, Ordering::Acquire).unwrap();
        let slot = 64 + (prod % self.ring.nr_ents()) as usize * 112;
        let rsp = Response {
            id,
            operation,
            status,
            ..Default::default()
        };
        mem.write_bytes(slot, pvio_shmem::bytes_of(&rsp)).unwrap();
        mem.store_u32(8, prod + 1, Ordering::Release).unwrap();
        let _ = self.be.events().send(self.port);
    }

    fn answer(&mut self, id: u64, operation: u8, status: i16) {
        self.ring
            .push_response(&Response {
                id,
                operation,
                status,
                ..Default::default()
            })
            .unwrap();
        self.ring.publish().unwrap();
        let _ = self.be.events().send(self.port);
    }

    /// Reads the whole page of a segment's grant (what a backend can see).
    fn page(&self, seg: &RequestSegment) -> Vec<u8> {
        let m = self.be.map_readonly(self.fe, seg.gref).unwrap();
        let mut v = vec![0; 4096];
        m.read_bytes(0, &mut v).unwrap();
        v
    }

    fn fill(&self, gref: GrantRef, byte: u8) {
        let m = self.be.map(self.fe, gref).unwrap();
        m.fill(0, 4096, byte).unwrap();
    }
}

/// Runs the backend handshake with `features` (written before InitWait)
/// and `props` (written at connect) while the frontend connects.
fn connect(
    fx: &Fixture,
    features: &[(&str, &str)],
    props: &[(&str, &str)],
    cfg: BlkfrontConfig,
) -> (Result<Blkfront, BlkError>, Option<Hostile>) {
    let be = fx.be.clone();
    let dev = fx.dev.clone();
    let features: Vec<(String, String)> = features
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let props: Vec<(String, String)> = props
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let backend = std::thread::spawn(move || backend_half(be, dev, features, props));
    let f = Blkfront::connect(
        fx.fe.clone(),
        fx.dev.clone(),
        BlkfrontConfig {
            timeout: Duration::from_secs(3),
            ..cfg
        },
    );
    (f, backend.join().unwrap())
}

fn backend_half(
    be: Domain,
    dev: DevicePaths,
    features: Vec<(String, String)>,
    props: Vec<(String, String)>,
) -> Option<Hostile> {
    let xs = be.store();
    for (k, v) in &features {
        xs.write(&dev.backend_key(k), v.as_bytes()).unwrap();
    }
    switch_state(&xs, &dev.backend, XenbusState::InitWait).unwrap();
    wait_for_state(&xs, &dev.frontend, GUARD, |s| s == XenbusState::Initialised).ok()?;
    let key = |k: &str| dev.frontend_key(k);
    let gref = GrantRef(read_u32(&xs, &key("ring-ref")).unwrap());
    let evtchn = Port(read_u32(&xs, &key("event-channel")).unwrap());
    let ring = Ring::attach(be.map_pages(dev.frontend_id, &[gref]).unwrap()).unwrap();
    let port = be
        .events()
        .bind_interdomain(dev.frontend_id, evtchn)
        .unwrap();
    for (k, v) in &props {
        xs.write(&dev.backend_key(k), v.as_bytes()).unwrap();
    }
    switch_state(&xs, &dev.backend, XenbusState::Connected).unwrap();
    Some(Hostile {
        be,
        fe: dev.frontend_id,
        ring,
        port,
    })
}

const PROPS: &[(&str, &str)] = &[("sectors", "4096"), ("info", "0"), ("sector-size", "512")];

fn setup(cfg: BlkfrontConfig, trusted: &str) -> (Fixture, Blkfront, Hostile) {
    let fx = domains(&[("trusted", trusted)]);
    let (f, h) = connect(&fx, &[("feature-persistent", "1")], PROPS, cfg);
    let f = f.unwrap();
    (fx, f, h.unwrap())
}

fn read_io(tag: u64, sector: u64) -> BlockIo {
    BlockIo {
        tag,
        op: BlockOp::Read,
        sector,
        data: vec![0; 4096],
    }
}

fn wait_all(f: &mut Blkfront, n: usize) -> Vec<BlockDone> {
    let mut out = Vec::new();
    let deadline = Instant::now() + GUARD;
    while out.len() < n {
        assert!(Instant::now() < deadline, "completions missing");
        f.wait(n - out.len(), Duration::from_millis(50), &mut out);
    }
    out
}

fn assert_broken(fx: &Fixture, f: &mut Blkfront, done: &[BlockDone]) {
    assert!(f.broken().is_some(), "the device is broken");
    for d in done {
        assert!(matches!(d.result, Err(BlkError::Broken(_))), "{d:?}");
    }
    let mut buf = [0; 512];
    assert!(matches!(f.read_at(0, &mut buf), Err(BlkError::Broken(_))));
    let xs = fx.dom0.store();
    let home = format!("/local/domain/{}/", fx.fe.id().0);
    let err_path = fx.dev.frontend.replacen(&home, &format!("{home}error/"), 1) + "/error";
    let err = xs.read(&err_path).unwrap_or_default();
    assert!(
        !err.is_empty(),
        "the frontend reported the fault in the store"
    );
}

#[test]
fn bf1_response_id_not_in_flight_breaks_the_device_and_fails_pending_io() {
    let (fx, mut f, mut h) = setup(BlkfrontConfig::default(), "1");
    for t in 0..3 {
        f.submit(read_io(t, t * 8)).unwrap();
    }
    let r = h.next();
    h.answer(r.id ^ 0x55, BLKIF_OP_READ, BLKIF_RSP_OKAY);
    let done = wait_all(&mut f, 3);
    assert_broken(&fx, &mut f, &done);
}

#[test]
fn bf1_duplicate_response_breaks_the_device() {
    let (fx, mut f, mut h) = setup(BlkfrontConfig::default(), "1");
    f.submit(read_io(1, 0)).unwrap();
    f.submit(read_io(2, 8)).unwrap();
    let r = h.next();
    h.answer(r.id, BLKIF_OP_READ, BLKIF_RSP_OKAY);
    let first = wait_all(&mut f, 1);
    assert_eq!(first[0].result, Ok(()));
    // The same id again: no longer in flight.
    h.raw_answer(r.id, BLKIF_OP_READ, BLKIF_RSP_OKAY);
    let done = wait_all(&mut f, 1);
    assert_broken(&fx, &mut f, &done);
}

#[test]
fn bf1_stale_id_of_a_reused_slot_breaks_the_device() {
    let (fx, mut f, mut h) = setup(BlkfrontConfig::default(), "1");
    f.submit(read_io(1, 0)).unwrap();
    let r1 = h.next();
    h.answer(r1.id, BLKIF_OP_READ, BLKIF_RSP_OKAY);
    assert_eq!(wait_all(&mut f, 1)[0].result, Ok(()));
    // The next request reuses the shadow slot with a new generation.
    f.submit(read_io(2, 8)).unwrap();
    let r2 = h.next();
    assert_eq!(r1.id & 0xffff_ffff, r2.id & 0xffff_ffff, "slot reused");
    assert_ne!(r1.id, r2.id);
    h.answer(r1.id, BLKIF_OP_READ, BLKIF_RSP_OKAY);
    let done = wait_all(&mut f, 1);
    assert_broken(&fx, &mut f, &done);
}

#[test]
fn bf1_wrong_operation_echo_breaks_the_device() {
    let (fx, mut f, mut h) = setup(BlkfrontConfig::default(), "1");
    f.submit(read_io(1, 0)).unwrap();
    let r = h.next();
    h.answer(r.id, BLKIF_OP_WRITE, BLKIF_RSP_OKAY);
    let done = wait_all(&mut f, 1);
    assert_broken(&fx, &mut f, &done);
}

#[test]
fn bf2_rsp_prod_overflow_breaks_the_device() {
    let (fx, mut f, h) = setup(BlkfrontConfig::default(), "1");
    for t in 0..2 {
        f.submit(read_io(t, t * 8)).unwrap();
    }
    // rsp_prod far past what was requested.
    let n = h.ring.nr_ents();
    h.ring
        .mem()
        .store_u32(8, n * 3 + 5, Ordering::Release)
        .unwrap();
    let _ = h.be.events().send(h.port);
    let done = wait_all(&mut f, 2);
    assert_broken(&fx, &mut f, &done);
}

#[test]
fn bad_responses_status_fail_only_that_request() {
    let (_fx, mut f, mut h) = setup(BlkfrontConfig::default(), "1");
    f.submit(read_io(1, 0)).unwrap();
    let r = h.next();
    h.answer(r.id, BLKIF_OP_READ, 77); // not a known status: an error
    let done = wait_all(&mut f, 1);
    assert_eq!(done[0].result, Err(BlkError::Io));
    assert!(f.broken().is_none());
    f.submit(read_io(2, 0)).unwrap();
    let r = h.next();
    h.answer(r.id, BLKIF_OP_READ, BLKIF_RSP_OKAY);
    assert_eq!(wait_all(&mut f, 1)[0].result, Ok(()));
}

/// BF4: an untrusted backend (toolstack `trusted` = 0) gets no persistent
/// grants even when it offers them, and never sees stale data in a page.
#[test]
fn bf4_untrusted_backend_gets_no_persistent_grants_and_zeroed_pages() {
    let (fx, mut f, mut h) = setup(BlkfrontConfig::default(), "0");
    let info = f.info();
    assert!(!info.trusted && !info.persistent);
    let xs = fx.dom0.store();
    assert_eq!(
        read_u32_or(&xs, &fx.dev.frontend_key("feature-persistent"), 9).unwrap(),
        0
    );
    // A read the backend fills with 0xaa (through a writable mapping).
    f.submit(read_io(1, 0)).unwrap();
    let r = h.next();
    h.fill(r.seg[0].gref, 0xaa);
    h.answer(r.id, BLKIF_OP_READ, BLKIF_RSP_OKAY);
    let d = wait_all(&mut f, 1).remove(0);
    assert!(d.data.iter().all(|&b| b == 0xaa), "the read data arrived");
    // A short write: the backend sees its 512 bytes and zeros, nothing of
    // the earlier read, though the pool reuses the page (LIFO).
    f.submit(BlockIo {
        tag: 2,
        op: BlockOp::Write,
        sector: 0,
        data: vec![0x55; 512],
    })
    .unwrap();
    let w = h.next();
    let page = h.page(&w.seg[0]);
    assert!(page[..512].iter().all(|&b| b == 0x55));
    assert!(
        page[512..].iter().all(|&b| b == 0),
        "stale data leaked to an untrusted backend"
    );
    // Per-request grants: the write's grant is read-only.
    assert!(h.be.map(fx.fe.id(), w.seg[0].gref).is_err());
    h.answer(w.id, BLKIF_OP_WRITE, BLKIF_RSP_OKAY);
    assert_eq!(wait_all(&mut f, 1)[0].result, Ok(()));
    assert_eq!(f.persistent_grants(), 0);
}

#[test]
fn trusted_backend_uses_persistent_grants() {
    let (_fx, mut f, mut h) = setup(BlkfrontConfig::default(), "1");
    assert!(f.info().persistent);
    f.submit(read_io(1, 0)).unwrap();
    let r = h.next();
    h.answer(r.id, BLKIF_OP_READ, BLKIF_RSP_OKAY);
    wait_all(&mut f, 1);
    f.submit(read_io(2, 0)).unwrap();
    let r2 = h.next();
    assert_eq!(r.seg[0].gref, r2.seg[0].gref, "the same grant is reused");
    h.answer(r2.id, BLKIF_OP_READ, BLKIF_RSP_OKAY);
    wait_all(&mut f, 1);
    assert_eq!(f.persistent_grants(), 1);
}

#[test]
fn bad_backend_keys_fail_the_connect_cleanly() {
    for (what, props) in [
        (
            "sector-size not a power of two",
            &[("sectors", "4096"), ("sector-size", "1000")][..],
        ),
        ("sectors missing", &[("sector-size", "512")][..]),
        ("sectors not a number", &[("sectors", "lots")][..]),
    ] {
        let fx = domains(&[]);
        let (f, h) = connect(&fx, &[], props, BlkfrontConfig::default());
        let e = f.expect_err(what);
        eprintln!("{what}: {e}");
        // The backend let go of the ring; deferred ends complete.
        drop(h);
        let _ = fx.fe.poll_deferred(|_| ());
        // Nothing stays granted or allocated for the failed connection.
        let deadline = Instant::now() + GUARD;
        while fx.fe.free_grant_refs() < fx.dom0.free_grant_refs() {
            assert!(Instant::now() < deadline, "{what}: grants left behind");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn backend_that_never_connects_times_out() {
    let fx = domains(&[]);
    let t = Instant::now();
    let f = Blkfront::connect(
        fx.fe.clone(),
        fx.dev.clone(),
        BlkfrontConfig {
            timeout: Duration::from_millis(200),
            ..BlkfrontConfig::default()
        },
    );
    assert!(matches!(f, Err(BlkError::Disconnected(_))));
    assert!(t.elapsed() < GUARD);
    let _ = SECTORS;
}

#[test]
fn silent_backend_blocking_call_times_out() {
    let (_fx, mut f, mut h) = setup(
        BlkfrontConfig {
            io_timeout: Duration::from_millis(200),
            ..BlkfrontConfig::default()
        },
        "1",
    );
    let mut buf = [0; 512];
    assert_eq!(f.read_at(0, &mut buf), Err(BlkError::Timeout));
    // Answered late: dropped, and the device goes on.
    let r = h.next();
    h.answer(r.id, BLKIF_OP_READ, BLKIF_RSP_OKAY);
    f.submit(read_io(5, 0)).unwrap();
    let r = h.next();
    h.answer(r.id, BLKIF_OP_READ, BLKIF_RSP_OKAY);
    let done = wait_all(&mut f, 1);
    assert_eq!((done[0].tag, &done[0].result), (5, &Ok(())));
}
