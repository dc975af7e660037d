//! blkback against a frontend written in the test, directly on the ring:
//! the handshake, data paths, and the BB/CTL rows of SECURITY.md.

use std::sync::Arc;
use std::time::Duration;

use pvio_abi::blkif::{
    BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE,
    BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY, Request, RequestDiscard,
    RequestIndirect, RequestSegment, Response,
};
use pvio_abi::xenbus::XenbusState;
use pvio_abi::{DomId, GrantRef, Port};
use pvio_blkback::{Blkback, BlkbackConfig};
use pvio_blkdisk::{Disk, MemDisk};
use pvio_hv::{Domain, DomainConfig, Hypervisor, Window};
use pvio_ring::FrontRing;
use pvio_shmem::{MemfdMem, SharedMem, SharedMemExt};
use pvio_xenbus::device::{read_u64, switch_state, wait_for_state};
use pvio_xenbus::toolstack::{DevicePaths, create_device};

const GUARD: Duration = Duration::from_secs(5);
const SECTORS: u64 = 2048; // 1 MiB

type Ring = FrontRing<Window<Arc<MemfdMem>>, Request, Response>;

struct Fixture {
    hv: Hypervisor,
    fe: Domain,
    be: Domain,
    dev: DevicePaths,
    disk: MemDisk,
    back: Option<Blkback>,
}

fn fixture(cfg: BlkbackConfig, readonly: bool) -> Fixture {
    let hv = Hypervisor::new();
    let dc = DomainConfig {
        pages: 512,
        ..DomainConfig::default()
    };
    let dom0 = hv.create_domain(DomId(0), dc).unwrap();
    let fe = hv.create_domain(DomId(1), dc).unwrap();
    let be = hv.create_domain(DomId(2), dc).unwrap();
    let dev = DevicePaths::new(fe.id(), be.id(), "vbd", 51712);
    create_device(&dom0.store(), &dev, &[], &[]).unwrap();
    let disk = MemDisk::new(SECTORS, readonly);
    let back = Blkback::serve(
        be.clone(),
        dev.clone(),
        Arc::new(disk.clone()) as Arc<dyn Disk>,
        cfg,
    );
    Fixture {
        hv,
        fe,
        be,
        dev,
        disk,
        back: Some(back),
    }
}

/// A minimal frontend: one queue, a ring of 2^order pages.
struct Front {
    ring: Ring,
    ring_grefs: Vec<GrantRef>,
    port: Port,
    next_id: u64,
}

impl Fixture {
    fn connect(&self, order: u32, persistent: bool) -> Front {
        let xs = self.fe.store();
        wait_for_state(&xs, &self.dev.backend, GUARD, |s| {
            s == XenbusState::InitWait
        })
        .unwrap();
        let n = 1u32 << order;
        let frames = self.fe.alloc_frames(n as usize).unwrap();
        let ring = Ring::init(self.fe.frames(frames[0], n).unwrap()).unwrap();
        let ring_grefs: Vec<GrantRef> = frames
            .iter()
            .map(|&f| self.fe.grant_access(self.be.id(), f, false).unwrap())
            .collect();
        let port = self.fe.events().alloc_unbound(self.be.id()).unwrap();
        if order == 0 {
            // A reconnecting frontend must not leave its previous ring order.
            let _ = xs.rm(&self.dev.frontend_key("ring-page-order"));
            xs.write(
                &self.dev.frontend_key("ring-ref"),
                ring_grefs[0].0.to_string().as_bytes(),
            )
            .unwrap();
        } else {
            xs.write(
                &self.dev.frontend_key("ring-page-order"),
                order.to_string().as_bytes(),
            )
            .unwrap();
            for (i, g) in ring_grefs.iter().enumerate() {
                xs.write(
                    &self.dev.frontend_key(&format!("ring-ref{i}")),
                    g.0.to_string().as_bytes(),
                )
                .unwrap();
            }
        }
        xs.write(
            &self.dev.frontend_key("event-channel"),
            port.0.to_string().as_bytes(),
        )
        .unwrap();
        xs.write(&self.dev.frontend_key("protocol"), b"x86_64-abi")
            .unwrap();
        xs.write(
            &self.dev.frontend_key("feature-persistent"),
            if persistent { b"1" } else { b"0" },
        )
        .unwrap();
        switch_state(&xs, &self.dev.frontend, XenbusState::Initialised).unwrap();
        wait_for_state(&xs, &self.dev.backend, GUARD, |s| {
            s == XenbusState::Connected
        })
        .unwrap();
        assert_eq!(
            read_u64(&xs, &self.dev.backend_key("sectors")).unwrap(),
            SECTORS
        );
        switch_state(&xs, &self.dev.frontend, XenbusState::Connected).unwrap();
        Front {
            ring,
            ring_grefs,
            port,
            next_id: 1,
        }
    }

    /// Sends `req` (with a fresh id) and waits for its response.
    fn call(&self, f: &mut Front, mut req: Request) -> Response {
        req.id = f.next_id;
        f.next_id += 1;
        f.ring.push_request(&req).unwrap();
        if f.ring.publish_and_check_notify().unwrap().is_needed() {
            self.fe.events().send(f.port).unwrap();
        }
        let deadline = std::time::Instant::now() + GUARD;
        loop {
            if let Some(r) = f.ring.next_response().unwrap() {
                assert_eq!(r.id, req.id, "the id is echoed");
                return r;
            }
            assert!(std::time::Instant::now() < deadline, "no response");
            std::thread::yield_now();
        }
    }

    /// A data frame of the frontend, granted to the backend.
    fn data_page(&self, fill: u8, readonly: bool) -> (u32, GrantRef) {
        let frame = self.fe.alloc_frames(1).unwrap()[0];
        self.fe.frame(frame).unwrap().fill(0, 4096, fill).unwrap();
        (
            frame,
            self.fe.grant_access(self.be.id(), frame, readonly).unwrap(),
        )
    }

    fn close(&mut self) {
        let xs = self.fe.store();
        switch_state(&xs, &self.dev.frontend, XenbusState::Closing).unwrap();
        wait_for_state(&xs, &self.dev.backend, GUARD, |s| s == XenbusState::Closing).unwrap();
        switch_state(&xs, &self.dev.frontend, XenbusState::Closed).unwrap();
    }
}

fn rw(op: u8, sector: u64, segs: &[(GrantRef, u8, u8)]) -> Request {
    let mut r = Request {
        operation: op,
        nr_segments: segs.len() as u8,
        sector_number: sector,
        ..Default::default()
    };
    for (i, &(gref, first, last)) in segs.iter().enumerate() {
        r.seg[i] = RequestSegment {
            gref,
            first_sect: first,
            last_sect: last,
            ..Default::default()
        };
    }
    r
}

#[test]
fn write_then_read_back_persistent_and_not() {
    for persistent in [true, false] {
        let fx = fixture(BlkbackConfig::default(), false);
        let mut f = fx.connect(0, persistent);
        // Write 11 pages (one full request), readonly grants unless persistent.
        let pages: Vec<(u32, GrantRef)> = (0..11)
            .map(|i| fx.data_page(i as u8 + 1, !persistent))
            .collect();
        let segs: Vec<_> = pages.iter().map(|&(_, g)| (g, 0u8, 7u8)).collect();
        assert_eq!(
            fx.call(&mut f, rw(BLKIF_OP_WRITE, 16, &segs)).status,
            BLKIF_RSP_OKAY
        );
        let contents = fx.disk.contents();
        for i in 0..11usize {
            let at = (16 * 512) + i * 4096;
            assert!(
                contents[at..at + 4096].iter().all(|&b| b == i as u8 + 1),
                "page {i}"
            );
        }
        // Partial-page read: sectors 2..=5 of one page.
        let (frame, g) = fx.data_page(0, false);
        let r = fx.call(&mut f, rw(BLKIF_OP_READ, 16 + 8, &[(g, 2, 5)]));
        assert_eq!((r.status, r.operation), (BLKIF_RSP_OKAY, BLKIF_OP_READ));
        let mut page = vec![0u8; 4096];
        fx.fe
            .frame(frame)
            .unwrap()
            .read_bytes(0, &mut page)
            .unwrap();
        assert!(
            page[..1024].iter().all(|&b| b == 0),
            "outside the segment untouched"
        );
        assert!(
            page[1024..3072].iter().all(|&b| b == 2),
            "the second page's bytes"
        );
        assert!(page[3072..].iter().all(|&b| b == 0));
        let st = fx.back.as_ref().unwrap().stats();
        assert_eq!(st.requests, 2);
        if persistent {
            assert!(st.persistent_grants > 0);
        }
    }
}

#[test]
fn multi_page_ring_flush_discard_indirect() {
    let fx = fixture(BlkbackConfig::default(), false);
    let mut f = fx.connect(2, true);
    assert_eq!(f.ring.nr_ents(), 128);
    assert_eq!(
        fx.call(&mut f, rw(BLKIF_OP_FLUSH_DISKCACHE, 0, &[])).status,
        BLKIF_RSP_OKAY
    );
    // Indirect write of 20 pages.
    let pages: Vec<(u32, GrantRef)> = (0..20)
        .map(|i| fx.data_page(0x40 + i as u8, false))
        .collect();
    let (ind_frame, ind_gref) = fx.data_page(0, true);
    let segs: Vec<RequestSegment> = pages
        .iter()
        .map(|&(_, g)| RequestSegment {
            gref: g,
            first_sect: 0,
            last_sect: 7,
            ..Default::default()
        })
        .collect();
    fx.fe
        .frame(ind_frame)
        .unwrap()
        .write_bytes(0, bytemuck_cast(&segs))
        .unwrap();
    let mut ind = RequestIndirect {
        operation: BLKIF_OP_INDIRECT,
        indirect_op: BLKIF_OP_WRITE,
        nr_segments: 20,
        sector_number: 100,
        ..Default::default()
    };
    ind.indirect_grefs[0] = ind_gref;
    let r = fx.call(&mut f, Request::from(ind));
    assert_eq!(
        (r.status, r.operation),
        (BLKIF_RSP_OKAY, BLKIF_OP_WRITE),
        "indirect echoes the inner op"
    );
    let c = fx.disk.contents();
    for i in 0..20usize {
        let at = 100 * 512 + i * 4096;
        assert!(
            c[at..at + 4096].iter().all(|&b| b == 0x40 + i as u8),
            "indirect page {i}"
        );
    }
    // Discard zeroes (MemDisk) the range.
    let d = RequestDiscard {
        operation: BLKIF_OP_DISCARD,
        sector_number: 100,
        nr_sectors: 8,
        ..Default::default()
    };
    assert_eq!(fx.call(&mut f, Request::from(d)).status, BLKIF_RSP_OKAY);
    assert!(
        fx.disk.contents()[100 * 512..108 * 512]
            .iter()
            .all(|&b| b == 0)
    );
}

fn bytemuck_cast(s: &[RequestSegment]) -> &[u8] {
    pvio_shmem::bytes_of_slice(s)
}

/// BB1–BB6, BB9, BB10: malformed requests get the exact error, id echoed,
/// and the device keeps serving.
#[test]
fn bb_malformed_requests() {
    let fx = fixture(
        BlkbackConfig {
            discard: false,
            ..BlkbackConfig::default()
        },
        false,
    );
    let mut f = fx.connect(0, true);
    let (_, g) = fx.data_page(1, false);
    let cases: Vec<(&str, Request, i16)> = vec![
        (
            "BB1 zero segments",
            rw(BLKIF_OP_READ, 0, &[]),
            BLKIF_RSP_ERROR,
        ),
        (
            "BB2 12 direct segments",
            {
                let mut r = rw(BLKIF_OP_READ, 0, &[(g, 0, 7)]);
                r.nr_segments = 12;
                r
            },
            BLKIF_RSP_ERROR,
        ),
        (
            "BB3 first > last",
            rw(BLKIF_OP_READ, 0, &[(g, 5, 4)]),
            BLKIF_RSP_ERROR,
        ),
        (
            "BB3 last = 8",
            rw(BLKIF_OP_READ, 0, &[(g, 0, 8)]),
            BLKIF_RSP_ERROR,
        ),
        (
            "BB4 wraps",
            rw(BLKIF_OP_READ, u64::MAX - 2, &[(g, 0, 7)]),
            BLKIF_RSP_ERROR,
        ),
        (
            "BB4 beyond end",
            rw(BLKIF_OP_READ, SECTORS - 4, &[(g, 0, 7)]),
            BLKIF_RSP_ERROR,
        ),
        ("BB6 unknown op", rw(99, 0, &[(g, 0, 7)]), BLKIF_RSP_ERROR),
        (
            "BB6 unadvertised discard",
            Request::from(RequestDiscard {
                operation: BLKIF_OP_DISCARD,
                nr_sectors: 8,
                ..Default::default()
            }),
            BLKIF_RSP_EOPNOTSUPP,
        ),
        (
            "BB10 same gref twice",
            rw(BLKIF_OP_READ, 0, &[(g, 0, 7), (g, 0, 7)]),
            BLKIF_RSP_ERROR,
        ),
        (
            "BB2 indirect above max",
            Request::from(RequestIndirect {
                operation: BLKIF_OP_INDIRECT,
                indirect_op: BLKIF_OP_READ,
                nr_segments: 257,
                ..Default::default()
            }),
            BLKIF_RSP_ERROR,
        ),
        (
            "BB8 revoked data gref",
            rw(BLKIF_OP_READ, 0, &[(GrantRef(9999), 0, 7)]),
            BLKIF_RSP_ERROR,
        ),
    ];
    for (what, req, want) in cases {
        let r = fx.call(&mut f, req);
        assert_eq!(r.status, want, "{what}");
    }
    // Still serving.
    assert_eq!(
        fx.call(&mut f, rw(BLKIF_OP_READ, 0, &[(g, 0, 7)])).status,
        BLKIF_RSP_OKAY
    );
    assert!(fx.back.as_ref().unwrap().stats().errors >= 11);
}

/// BB5: writes (and discards) to a read-only disk fail; reads work; `info`
/// says read-only.
#[test]
fn bb5_readonly_disk() {
    let fx = fixture(BlkbackConfig::default(), true);
    let mut f = fx.connect(0, true);
    let info = fx.fe.store().read(&fx.dev.backend_key("info")).unwrap();
    assert_eq!(info, b"4");
    let (_, g) = fx.data_page(1, false);
    assert_eq!(
        fx.call(&mut f, rw(BLKIF_OP_WRITE, 0, &[(g, 0, 7)])).status,
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        fx.call(&mut f, rw(BLKIF_OP_READ, 0, &[(g, 0, 7)])).status,
        BLKIF_RSP_OKAY
    );
}

/// BB13: a response writes only its 16 bytes (id, operation, zero padding,
/// status): the rest of the request slot is untouched.
#[test]
fn bb13_response_writes_only_its_fields() {
    let fx = fixture(BlkbackConfig::default(), false);
    let mut f = fx.connect(0, true);
    let (_, g) = fx.data_page(1, false);
    let mut req = rw(BLKIF_OP_READ, 0, &[(g, 0, 7)]);
    req.handle = 0xAAAA;
    let slot = 64 + (f.ring.indices().0 as usize % 32) * 112;
    let r = fx.call(&mut f, req);
    assert_eq!(r.status, BLKIF_RSP_OKAY);
    let mut bytes = [0u8; 112];
    f.ring.mem().read_bytes(slot, &mut bytes).unwrap();
    let rsp = Response {
        id: r.id,
        operation: BLKIF_OP_READ,
        status: BLKIF_RSP_OKAY,
        ..Default::default()
    };
    assert_eq!(
        &bytes[..16],
        pvio_shmem::bytes_of(&rsp),
        "exactly the response, zero padding"
    );
    let mut sent = rw(BLKIF_OP_READ, 0, &[(g, 0, 7)]);
    sent.id = r.id;
    sent.handle = 0xAAAA;
    assert_eq!(
        &bytes[16..],
        &pvio_shmem::bytes_of(&sent)[16..],
        "the rest is the request as sent"
    );
}

/// BB11/BB12: frontends connecting and disconnecting many times leave
/// nothing behind: every ring and data mapping released, every grant
/// endable, no frames leaked in the backend.
#[test]
fn bb12_repeated_connect_disconnect_no_leak() {
    let mut fx = fixture(BlkbackConfig::default(), false);
    for cycle in 0..30 {
        let mut f = fx.connect(cycle % 3, cycle % 2 == 0);
        let (_, g) = fx.data_page(7, cycle % 2 == 1);
        assert_eq!(
            fx.call(&mut f, rw(BLKIF_OP_WRITE, 8, &[(g, 0, 7)])).status,
            BLKIF_RSP_OKAY
        );
        fx.close();
        // After the backend's Closing, nothing of ours is mapped.
        assert_eq!(fx.be.live_mappings(), 0, "cycle {cycle}");
        for rg in &f.ring_grefs {
            fx.fe.end_access(*rg).unwrap();
        }
        fx.fe.end_access(g).unwrap();
        // Back to Initialising: the backend returns to InitWait.
        switch_state(&fx.fe.store(), &fx.dev.frontend, XenbusState::Initialising).unwrap();
    }
    // No bounce frame leaked: the backend domain can still have all of them.
    let all = fx.be.alloc_frames(512).expect("backend frames leaked");
    fx.be.free_frames(&all);
    assert!(fx.back.as_ref().unwrap().stats().connects >= 30);
    fx.back.take().unwrap().stop();
    let _ = &fx.hv;
}

/// C3: a ring order above the maximum (or missing ring references) is
/// refused: nothing mapped, the backend reports the error and closes.
#[test]
fn c3_bad_transport_keys_refused() {
    let fx = fixture(
        BlkbackConfig {
            max_ring_page_order: 1,
            ..BlkbackConfig::default()
        },
        false,
    );
    let xs = fx.fe.store();
    wait_for_state(&xs, &fx.dev.backend, GUARD, |s| s == XenbusState::InitWait).unwrap();
    xs.write(&fx.dev.frontend_key("ring-page-order"), b"3")
        .unwrap();
    xs.write(&fx.dev.frontend_key("event-channel"), b"5")
        .unwrap();
    switch_state(&xs, &fx.dev.frontend, XenbusState::Initialised).unwrap();
    wait_for_state(&xs, &fx.dev.backend, GUARD, |s| s == XenbusState::Closing).unwrap();
    assert_eq!(fx.be.live_mappings(), 0);
    assert!(xs.read(&fx.dev.backend_key("error")).is_ok());
    assert_eq!(fx.back.as_ref().unwrap().stats().refused, 1);
}

/// A frontend domain that disappears mid-connection: the backend notices
/// and releases everything.
#[test]
fn frontend_disappears_backend_releases_everything() {
    let fx = fixture(BlkbackConfig::default(), false);
    let mut f = fx.connect(1, true);
    let (_, g) = fx.data_page(3, false);
    assert_eq!(
        fx.call(&mut f, rw(BLKIF_OP_WRITE, 0, &[(g, 0, 7)])).status,
        BLKIF_RSP_OKAY
    );
    assert!(fx.be.live_mappings() > 0);
    fx.hv.destroy_domain(fx.fe.id()).unwrap();
    let deadline = std::time::Instant::now() + GUARD;
    while fx.be.live_mappings() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "backend kept mappings of a dead frontend"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SECURITY.md BB7 (XSA-155): a flipper thread rewrites the live indirect
/// page, between valid segments of two lengths and bogus ones (last before
/// first, past the page, a reference never granted), while requests that
/// use it are in flight. Every request is answered; one answered OKAY
/// wrote exactly one of the valid shapes at its own sectors, one answered
/// with an error wrote nothing, and nothing outside the requests' sectors
/// changed: the backend used the one copy it validated.
#[test]
fn bb7_indirect_page_rewritten_while_in_flight() {
    use std::sync::atomic::{AtomicBool, Ordering as AtOrd};
    const N: u64 = 240; // one 8-sector slot each, inside the 2048 sectors
    const IN_FLIGHT: u64 = 8;
    let fx = fixture(BlkbackConfig::default(), false);
    let mut f = fx.connect(0, true);
    let (_, data) = fx.data_page(0x77, true);
    let (ind_frame, ind_gref) = fx.data_page(0, true);
    let page = fx.fe.frame(ind_frame).unwrap();
    let seg = |gref, first_sect, last_sect| RequestSegment {
        gref,
        first_sect,
        last_sect,
        ..Default::default()
    };
    let variants = [
        seg(data, 2, 5),           // valid: 4 sectors
        seg(data, 0, 7),           // valid: 8 sectors
        seg(data, 5, 2),           // last before first
        seg(data, 0, 200),         // past the page
        seg(GrantRef(9999), 0, 7), // never granted
    ];
    page.write_obj(0, &variants[0]).unwrap();
    let stop = AtomicBool::new(false);
    let flips = std::thread::scope(|s| {
        let flipper = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(AtOrd::Relaxed) {
                page.write_obj(0, &variants[(n % 5) as usize]).unwrap();
                n += 1;
            }
            n
        });
        let (mut sent, mut got) = (0u64, 0u64);
        let mut status = vec![None; N as usize];
        let deadline = std::time::Instant::now() + GUARD * 4;
        while got < N {
            while sent < N && sent - got < IN_FLIGHT {
                let mut ind = RequestIndirect {
                    operation: BLKIF_OP_INDIRECT,
                    indirect_op: BLKIF_OP_WRITE,
                    nr_segments: 1,
                    sector_number: sent * 8,
                    id: sent,
                    ..Default::default()
                };
                ind.indirect_grefs[0] = ind_gref;
                f.ring.push_request(&Request::from(ind)).unwrap();
                sent += 1;
            }
            if f.ring.publish_and_check_notify().unwrap().is_needed() {
                fx.fe.events().send(f.port).unwrap();
            }
            while let Some(r) = f.ring.next_response().unwrap() {
                assert_eq!(r.operation, BLKIF_OP_WRITE, "the inner op is echoed");
                let slot = &mut status[r.id as usize];
                assert!(slot.is_none(), "one response per request");
                *slot = Some(r.status);
                got += 1;
            }
            assert!(std::time::Instant::now() < deadline, "responses missing");
            std::thread::yield_now();
        }
        stop.store(true, AtOrd::Relaxed);
        let flips = flipper.join().unwrap();
        let c = fx.disk.contents();
        let (mut ok, mut err) = (0, 0);
        for (i, st) in status.iter().enumerate() {
            let slot = &c[i * 8 * 512..(i + 1) * 8 * 512];
            let written = slot.iter().take_while(|&&b| b == 0x77).count();
            let rest_zero = slot[written..].iter().all(|&b| b == 0);
            match st.unwrap() {
                BLKIF_RSP_OKAY => {
                    ok += 1;
                    assert!(
                        rest_zero && (written == 4 * 512 || written == 8 * 512),
                        "request {i}: OKAY but wrote {written} bytes, not one valid shape"
                    );
                }
                BLKIF_RSP_ERROR => {
                    err += 1;
                    assert!(written == 0 && rest_zero, "request {i}: error but wrote");
                }
                s => panic!("request {i}: status {s}"),
            }
        }
        assert!(
            c[N as usize * 8 * 512..].iter().all(|&b| b == 0),
            "nothing written outside the requests' sectors"
        );
        eprintln!("BB7: {flips} flips; {ok} requests OKAY, {err} refused");
        flips
    });
    assert!(flips > 0);
    // Still serving with a stable page.
    page.write_obj(0, &variants[1]).unwrap();
    let mut ind = RequestIndirect {
        operation: BLKIF_OP_INDIRECT,
        indirect_op: BLKIF_OP_WRITE,
        nr_segments: 1,
        sector_number: 2040,
        ..Default::default()
    };
    ind.indirect_grefs[0] = ind_gref;
    assert_eq!(fx.call(&mut f, Request::from(ind)).status, BLKIF_RSP_OKAY);
}

/// SECURITY.md BB8 (XSA-361/365): revoked grants — a data gref among valid
/// ones, an indirect page's gref, and a data gref named by a valid
/// indirect page — each get ERROR, and the mappings made for the valid
/// part of the request are undone (no persistent grants here, so the
/// backend holds no mapping once a request is answered).
#[test]
fn bb8_revoked_data_and_indirect_grefs() {
    let fx = fixture(BlkbackConfig::default(), false);
    let mut f = fx.connect(0, false);
    // Every grant is made before any is revoked: a freed reference is
    // reused by the next grant.
    let (_, good) = fx.data_page(0x11, false);
    let (_, good2) = fx.data_page(0x22, false);
    let (_, gone) = fx.data_page(0x33, false);
    let (_, gone_ind) = fx.data_page(0, false);
    let (ind_frame, ind_gref) = fx.data_page(0, true);
    fx.fe.end_access(gone).unwrap();
    fx.fe.end_access(gone_ind).unwrap();
    let base = fx.be.live_mappings();
    // A valid first segment, a revoked second one.
    let r = fx.call(&mut f, rw(BLKIF_OP_WRITE, 0, &[(good, 0, 7), (gone, 0, 7)]));
    assert_eq!(r.status, BLKIF_RSP_ERROR, "revoked data gref");
    assert_eq!(fx.be.live_mappings(), base, "partial mappings undone");
    assert!(
        fx.disk.contents()[..8 * 512].iter().all(|&b| b == 0),
        "nothing written"
    );
    // A revoked indirect page.
    let mut ind = RequestIndirect {
        operation: BLKIF_OP_INDIRECT,
        indirect_op: BLKIF_OP_READ,
        nr_segments: 2,
        sector_number: 16,
        ..Default::default()
    };
    ind.indirect_grefs[0] = gone_ind;
    assert_eq!(
        fx.call(&mut f, Request::from(ind)).status,
        BLKIF_RSP_ERROR,
        "revoked indirect gref"
    );
    assert_eq!(fx.be.live_mappings(), base);
    // A valid indirect page naming a valid and a revoked data gref.
    let segs =
        [(good2, 0u8, 7u8), (gone, 0, 7)].map(|(gref, first_sect, last_sect)| RequestSegment {
            gref,
            first_sect,
            last_sect,
            ..Default::default()
        });
    fx.fe
        .frame(ind_frame)
        .unwrap()
        .write_bytes(0, bytemuck_cast(&segs))
        .unwrap();
    ind.indirect_grefs[0] = ind_gref;
    ind.indirect_op = BLKIF_OP_WRITE;
    let r = fx.call(&mut f, Request::from(ind));
    assert_eq!((r.status, r.operation), (BLKIF_RSP_ERROR, BLKIF_OP_WRITE));
    assert_eq!(fx.be.live_mappings(), base, "partial mappings undone");
    assert!(
        fx.disk.contents()[16 * 512..32 * 512]
            .iter()
            .all(|&b| b == 0),
        "nothing written"
    );
    // Still serving.
    assert_eq!(
        fx.call(&mut f, rw(BLKIF_OP_WRITE, 0, &[(good, 0, 7)]))
            .status,
        BLKIF_RSP_OKAY
    );
    assert!(fx.disk.contents()[..8 * 512].iter().all(|&b| b == 0x11));
}
