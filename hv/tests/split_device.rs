//! Everything a split driver needs, together on the embedded hypervisor:
//! the toolstack creates a device in the store, the frontend grants a ring
//! and allocates an event channel, the backend maps and binds them after the
//! XenbusState handshake, and the two exchange requests with notification
//! hold-off. Then the frontend domain dies mid-connection.

use std::time::Duration;

use pvio_abi::blkif::{Request, Response};
use pvio_abi::xenbus::XenbusState;
use pvio_abi::{DomId, GrantRef, Port};
use pvio_hv::{DomainConfig, EvtchnError, Hypervisor, PortWait};
use pvio_ring::{BackRing, FrontRing};
use pvio_xenbus::device::{read_u32, switch_state, wait_for_state};
use pvio_xenbus::toolstack::{DevicePaths, create_device};

const GUARD: Duration = Duration::from_secs(5);
const N: u64 = 2000;

#[test]
fn split_device_end_to_end_then_frontend_dies() {
    let hv = Hypervisor::new();
    let cfg = DomainConfig {
        pages: 32,
        ..DomainConfig::default()
    };
    let dom0 = hv.create_domain(DomId(0), cfg).unwrap();
    let fe = hv.create_domain(DomId(1), cfg).unwrap();
    let be = hv.create_domain(DomId(2), cfg).unwrap();
    let dev = DevicePaths::new(fe.id(), be.id(), "vbd", 51712);
    create_device(&dom0.store(), &dev, &[], &[]).unwrap();

    let backend = {
        let (be, dev) = (be.clone(), dev.clone());
        std::thread::spawn(move || {
            let xs = be.store();
            switch_state(&xs, &dev.backend, XenbusState::InitWait).unwrap();
            wait_for_state(&xs, &dev.frontend, GUARD, |s| s == XenbusState::Initialised).unwrap();
            let gref = GrantRef(read_u32(&xs, &dev.frontend_key("ring-ref")).unwrap());
            let evtchn = Port(read_u32(&xs, &dev.frontend_key("event-channel")).unwrap());
            let ring_mem = be.map(dev.frontend_id, gref).unwrap();
            let mut ring = BackRing::<_, Request, Response>::attach(ring_mem).unwrap();
            let ev = be.events();
            let port = ev.bind_interdomain(dev.frontend_id, evtchn).unwrap();
            let mut waiter = ev.waiter().unwrap();
            switch_state(&xs, &dev.backend, XenbusState::Connected).unwrap();
            let mut answered = 0u64;
            let mut sleeps = 0u64;
            while answered < N {
                let k = ring.answer_requests(32, |r| Response {
                    id: r.id,
                    operation: r.operation,
                    ..Default::default()
                });
                let k = k.unwrap();
                answered += u64::from(k);
                if ring.publish_and_check_notify().unwrap().is_needed() {
                    ev.send(port).unwrap();
                }
                if k == 0 && !ring.final_check_for_requests().unwrap() {
                    sleeps += 1;
                    assert_eq!(
                        waiter.wait_port(port, GUARD).unwrap(),
                        PortWait::Fired,
                        "lost wakeup"
                    );
                }
            }
            // The frontend is about to die: a notification after that must be
            // a clean error, not a crash (E8), and the ring memory we mapped
            // stays readable.
            // (Closing, or already Unknown: the store may drop the dead
            // frontend's directory before this thread sees Closing.)
            let _ = wait_for_state(&xs, &dev.frontend, GUARD, |s| {
                matches!(s, XenbusState::Closing | XenbusState::Unknown)
            });
            let mut closed = false;
            for _ in 0..500 {
                match ev.send(port) {
                    Ok(()) => std::thread::sleep(Duration::from_millis(2)),
                    Err(EvtchnError::Closed(_)) => {
                        closed = true;
                        break;
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            assert!(closed, "send to a dead peer reports Closed");
            let _ = ring.unconsumed_requests();
            sleeps
        })
    };

    // Frontend: ring page, grant, event channel, keys, Initialised.
    let xs = fe.store();
    wait_for_state(&xs, &dev.backend, GUARD, |s| s == XenbusState::InitWait).unwrap();
    let frame = fe.alloc_frames(1).unwrap()[0];
    let mut ring = FrontRing::<_, Request, Response>::init(fe.frame(frame).unwrap()).unwrap();
    let gref = fe.grant_access(be.id(), frame, false).unwrap();
    let ev = fe.events();
    let port = ev.alloc_unbound(be.id()).unwrap();
    let mut waiter = ev.waiter().unwrap();
    xs.write(&dev.frontend_key("ring-ref"), gref.0.to_string().as_bytes())
        .unwrap();
    xs.write(
        &dev.frontend_key("event-channel"),
        port.0.to_string().as_bytes(),
    )
    .unwrap();
    xs.write(&dev.frontend_key("protocol"), b"x86_64-abi")
        .unwrap();
    switch_state(&xs, &dev.frontend, XenbusState::Initialised).unwrap();
    wait_for_state(&xs, &dev.backend, GUARD, |s| s == XenbusState::Connected).unwrap();
    switch_state(&xs, &dev.frontend, XenbusState::Connected).unwrap();

    let (mut sent, mut done) = (0u64, 0u64);
    while done < N {
        let room = ring.free_requests().min((N - sent) as u32);
        if room > 0 {
            let mut b = ring.reserve(room).unwrap();
            let base = sent;
            b.fill_with(|i| Request {
                id: base + u64::from(i),
                operation: 1,
                ..Default::default()
            })
            .unwrap();
            sent += u64::from(room);
            if b.publish_and_check_notify().unwrap().is_needed() {
                ev.send(port).unwrap();
            }
        }
        let got = ring
            .drain_responses(u32::MAX, |r| {
                assert_eq!(r.id, done, "responses in order, none lost or invented");
                done += 1;
            })
            .unwrap();
        if got == 0 && !ring.final_check_for_responses().unwrap() {
            assert_eq!(
                waiter.wait_port(port, GUARD).unwrap(),
                PortWait::Fired,
                "lost wakeup"
            );
        }
    }
    assert!(
        fe.grant_in_use(gref).unwrap(),
        "the backend still maps the ring"
    );
    switch_state(&xs, &dev.frontend, XenbusState::Closing).unwrap();
    hv.destroy_domain(fe.id()).unwrap();
    let backend_sleeps = backend.join().unwrap();
    eprintln!("backend slept {backend_sleeps} times for {N} requests");
    // The frontend's store entries went with it.
    assert!(dom0.store().read(&dev.frontend_key("state")).is_err());
}

/// A destroyed domain stays listed until its cleanup is done: once
/// `domains()` no longer names it, its store nodes are gone and its id can
/// be reused, so a toolstack that recreates its devices at that moment
/// never has them removed by a cleanup still running (found by the hosted
/// L2 test, where a new backend's nodes could vanish).
#[test]
fn destroyed_domain_listed_until_cleaned_up() {
    let hv = Hypervisor::new();
    let cfg = DomainConfig {
        pages: 16,
        ..DomainConfig::default()
    };
    let dom0 = hv.create_domain(DomId(0), cfg).unwrap();
    for round in 0..20 {
        let d = hv.create_domain(DomId(5), cfg).unwrap();
        let xs = d.store();
        for i in 0..300 {
            xs.write(&format!("data/n{i}"), b"x").unwrap();
        }
        drop(xs);
        drop(d);
        let destroyer = {
            let hv = hv.clone();
            std::thread::spawn(move || hv.destroy_domain(DomId(5)).unwrap())
        };
        while hv.domains().contains(&DomId(5)) {
            std::hint::spin_loop();
        }
        assert!(
            dom0.store().read("/local/domain/5/data/n299").is_err(),
            "round {round}: nodes still there once the domain is unlisted"
        );
        destroyer.join().unwrap();
    }
}
