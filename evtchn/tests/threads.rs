//! Multi-threaded behaviour: ping-pong without lost events, waking a
//! blocked waiter on close, and the EVT rows that need concurrency (E3, E4
//! under real threads, E6). Timeouts are failure guards only; assertions
//! are about counts and states, never about speed.
#![cfg(not(feature = "loom"))]

mod common;

use common::{BE, FE, GUARD, connected};
use pvio_evtchn::{
    DomId, EventChannels, EvtchnError, MAX_PORTS, Port, PortState, PortWait, SpuriousGuard,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::thread;
use std::time::{Duration, Instant};

/// Iteration counts: smaller under Miri, whose interpreter is ~1000x slower.
const fn miri_or(miri: u64, native: u64) -> u64 {
    if cfg!(miri) { miri } else { native }
}

#[test]
fn ping_pong_10000_round_trips_single_port_waits() {
    const ROUNDS: u64 = miri_or(100, 10_000);
    let (ec, fp, bp) = connected();
    let mut wf = ec.waiter(FE).unwrap();
    let mut wb = ec.waiter(BE).unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            for i in 0..ROUNDS {
                assert_eq!(
                    wb.wait_port(bp, GUARD),
                    Ok(PortWait::Fired),
                    "lost ping {i}"
                );
                ec.send(BE, bp).unwrap();
            }
        });
        for i in 0..ROUNDS {
            ec.send(FE, fp).unwrap();
            assert_eq!(
                wf.wait_port(fp, GUARD),
                Ok(PortWait::Fired),
                "lost pong {i}"
            );
        }
    });
    let (f, b) = (ec.counters(FE).unwrap(), ec.counters(BE).unwrap());
    assert_eq!((f.sends, f.coalesced, f.deliveries), (ROUNDS, 0, ROUNDS));
    assert_eq!(
        (b.sends, b.coalesced, b.deliveries),
        (ROUNDS, 0, ROUNDS + 1)
    );
}

#[test]
fn ping_pong_10000_round_trips_domain_waits() {
    const ROUNDS: u64 = miri_or(100, 10_000);
    let (ec, fp, bp) = connected();
    let mut wf = ec.waiter(FE).unwrap();
    let mut wb = ec.waiter(BE).unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..ROUNDS {
                let p = wb.wait(GUARD).unwrap();
                assert_eq!(p.iter().collect::<Vec<_>>(), [bp], "lost ping");
                ec.send(BE, bp).unwrap();
            }
        });
        for _ in 0..ROUNDS {
            ec.send(FE, fp).unwrap();
            let p = wf.wait(GUARD).unwrap();
            assert_eq!(p.iter().collect::<Vec<_>>(), [fp], "lost pong");
        }
    });
}

/// Several senders on separate channels into one receiving domain: each
/// sender publishes work, then sends. However the sends coalesce, the
/// receiver must end up seeing all the work (no lost final event).
#[test]
fn concurrent_senders_lose_no_event() {
    const SENDERS: usize = 4;
    const PER_SENDER: u64 = miri_or(200, 20_000);
    let ec = EventChannels::new();
    ec.add_domain(BE, MAX_PORTS).unwrap();
    let mut chans = Vec::new();
    for i in 0..SENDERS {
        let d = DomId(10 + i as u16);
        ec.add_domain(d, 8).unwrap();
        let p = ec.alloc_unbound(d, BE).unwrap();
        let bp = ec.bind_interdomain(BE, d, p).unwrap();
        chans.push((d, p, bp));
    }
    let work: Vec<AtomicU64> = (0..SENDERS).map(|_| AtomicU64::new(0)).collect();
    let mut w = ec.waiter(BE).unwrap();
    assert_eq!(w.try_take().len(), SENDERS, "the bind events");
    thread::scope(|s| {
        for (i, &(d, p, _)) in chans.iter().enumerate() {
            let (ec, work) = (&ec, &work);
            s.spawn(move || {
                for _ in 0..PER_SENDER {
                    work[i].fetch_add(1, SeqCst);
                    ec.send(d, p).unwrap();
                }
            });
        }
        let mut seen = vec![0u64; SENDERS];
        while seen.iter().sum::<u64>() < SENDERS as u64 * PER_SENDER {
            let p = w.wait(GUARD).unwrap();
            assert!(!p.is_empty(), "lost event: seen {seen:?}");
            for port in &p {
                let i = chans.iter().position(|c| c.2 == port).unwrap();
                seen[i] = work[i].load(SeqCst);
            }
        }
    });
    // Edges raised after the receiver saw the last work: one per channel.
    assert!(w.try_take().len() <= SENDERS);
    let c = ec.counters(BE).unwrap();
    let sent: u64 = chans.iter().map(|c| ec.counters(c.0).unwrap().sends).sum();
    let coalesced: u64 = chans
        .iter()
        .map(|c| ec.counters(c.0).unwrap().coalesced)
        .sum();
    assert_eq!(sent, SENDERS as u64 * PER_SENDER);
    assert_eq!(
        c.deliveries,
        SENDERS as u64 + sent - coalesced,
        "one delivery per edge"
    );
}

#[test]
fn close_while_waiting_wakes_the_waiter() {
    // Local close of the waited-on port.
    let (ec, _fp, bp) = connected();
    let mut wb = ec.waiter(BE).unwrap();
    thread::scope(|s| {
        let h = s.spawn(|| wb.wait_port(bp, GUARD));
        thread::sleep(Duration::from_millis(20));
        ec.close(BE, bp).unwrap();
        assert_eq!(h.join().unwrap(), Err(EvtchnError::InvalidPort(bp)));
    });

    // The peer closes its end.
    let (ec, fp, bp) = connected();
    let mut wb = ec.waiter(BE).unwrap();
    thread::scope(|s| {
        let h = s.spawn(|| wb.wait_port(bp, GUARD));
        thread::sleep(Duration::from_millis(20));
        ec.close(FE, fp).unwrap();
        assert_eq!(h.join().unwrap(), Err(EvtchnError::Closed(bp)));
    });

    // The domain is removed under a domain-wide wait.
    let (ec, _fp, _bp) = connected();
    let mut wb = ec.waiter(BE).unwrap();
    thread::scope(|s| {
        let h = s.spawn(|| {
            let start = Instant::now();
            loop {
                match wb.wait(GUARD) {
                    Ok(p) if p.is_empty() && start.elapsed() < GUARD => continue,
                    other => return other,
                }
            }
        });
        thread::sleep(Duration::from_millis(20));
        ec.remove_domain(BE).unwrap();
        assert_eq!(h.join().unwrap(), Err(EvtchnError::NoSuchDomain(BE)));
    });
}

/// E3: a peer floods notifications without work. The handler reports
/// every wakeup as empty; its guard backs off, so the handled wakeups stay
/// far below the sends (which coalesce while it sleeps).
#[test]
#[cfg_attr(miri, ignore = "statistical: needs real time and many sends")]
fn e3_notification_flood_without_work_backs_off() {
    let (ec, fp, _bp) = connected();
    let stop = AtomicBool::new(false);
    let mut w = ec.waiter(BE).unwrap();
    let mut guard = SpuriousGuard::new();
    let mut wakeups = 0u64;
    let sends = thread::scope(|s| {
        let flooder = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(SeqCst) {
                ec.send(FE, fp).unwrap();
                n += 1;
            }
            n
        });
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(200) {
            let p = w.wait(Duration::from_millis(20)).unwrap();
            if !p.is_empty() {
                wakeups += 1;
                guard.after_wakeup(false); // the ring had nothing new
            }
        }
        stop.store(true, SeqCst);
        flooder.join().unwrap()
    });
    let c = ec.counters(FE).unwrap();
    eprintln!(
        "E3: {wakeups} wakeups, {sends} sends, {} coalesced, {} back-offs",
        c.coalesced,
        guard.backoffs()
    );
    assert_eq!(c.sends, sends);
    assert!(wakeups > 0);
    assert_eq!(guard.spurious(), wakeups);
    assert!(
        guard.backoffs() > 0 && guard.is_backing_off(),
        "back-off engaged"
    );
    assert!(
        wakeups * 100 < sends,
        "{wakeups} handled wakeups for {sends} sends"
    );
    assert!(c.coalesced > sends / 2, "sends coalesce while it backs off");
}

/// E6: reset racing alloc (and binds, and a bystander channel). Every
/// allocated port is either unbound for its remote or, if a reset ran
/// meanwhile, closed; the port range never shrinks (status never says
/// `InvalidPort`); bystanders never notice; at the end all bindings are
/// symmetric.
#[test]
fn e6_reset_racing_alloc_stays_consistent() {
    const MAXP: u32 = 64;
    let (victim, peer, bystander) = (DomId(1), DomId(2), DomId(3));
    let ec = EventChannels::new();
    for d in [victim, peer, bystander] {
        ec.add_domain(d, MAXP).unwrap();
    }
    let a = ec.alloc_unbound(peer, bystander).unwrap();
    let b = ec.bind_interdomain(bystander, peer, a).unwrap();
    let started = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let allocs = AtomicU64::new(0);

    thread::scope(|s| {
        // Resetter.
        s.spawn(|| {
            while !stop.load(SeqCst) {
                started.fetch_add(1, SeqCst);
                ec.reset(victim).unwrap();
                done.fetch_add(1, SeqCst);
            }
        });
        // Bystander keeps using its channel.
        s.spawn(|| {
            while !stop.load(SeqCst) {
                ec.send(peer, a).unwrap();
                assert_eq!(
                    ec.status(bystander, b).unwrap().state,
                    PortState::Interdomain {
                        remote_dom: peer,
                        remote_port: a
                    }
                );
            }
        });
        // The peer binds whatever the victim offers it.
        s.spawn(|| {
            while !stop.load(SeqCst) {
                for p in 1..MAXP {
                    match ec.bind_interdomain(peer, victim, Port(p)) {
                        Ok(lp) => {
                            let _ = ec.close(peer, lp);
                        }
                        Err(EvtchnError::NotBindable { .. } | EvtchnError::NoSpace) => {}
                        Err(e) => panic!("bind: {e:?}"),
                    }
                }
            }
        });
        // Status reader: every port number below the limit stays valid.
        s.spawn(|| {
            while !stop.load(SeqCst) {
                for p in 0..MAXP {
                    let st = ec.status(victim, Port(p)).unwrap();
                    if p == 0 {
                        assert_eq!(st.state, PortState::Reserved);
                    }
                }
            }
        });
        // Allocator (this thread).
        for _ in 0..miri_or(20, 20_000) {
            let before = done.load(SeqCst);
            match ec.alloc_unbound(victim, peer) {
                Ok(p) => {
                    allocs.fetch_add(1, SeqCst);
                    assert!((1..MAXP).contains(&p.0));
                    let st = ec.status(victim, p).unwrap().state;
                    let quiet = started.load(SeqCst) == before;
                    match st {
                        PortState::Unbound { remote_dom } => assert_eq!(remote_dom, peer),
                        PortState::Interdomain { remote_dom, .. } => {
                            assert_eq!(remote_dom, peer)
                        }
                        PortState::Closed => assert!(!quiet, "closed without a reset"),
                        PortState::Reserved => panic!("port 0 handed out"),
                    }
                }
                Err(EvtchnError::NoSpace) => {}
                Err(e) => panic!("alloc: {e:?}"),
            }
        }
        stop.store(true, SeqCst);
    });
    assert!(allocs.load(SeqCst) > 0);

    // Quiescent: every interdomain binding is symmetric, counts match.
    for d in [victim, peer, bystander] {
        let mut active = 0;
        for p in 1..MAXP {
            let st = ec.status(d, Port(p)).unwrap();
            match st.state {
                PortState::Interdomain {
                    remote_dom,
                    remote_port,
                } => {
                    active += 1;
                    assert_eq!(
                        ec.status(remote_dom, remote_port).unwrap().state,
                        PortState::Interdomain {
                            remote_dom: d,
                            remote_port: Port(p)
                        }
                    );
                }
                PortState::Unbound { .. } => active += 1,
                PortState::Closed => assert!(st.masked && !st.pending),
                PortState::Reserved => unreachable!(),
            }
        }
        assert_eq!(ec.active_ports(d).unwrap(), active);
    }
    ec.reset(victim).unwrap();
    assert_eq!(ec.active_ports(victim).unwrap(), 0);
    assert_eq!(ec.alloc_unbound(victim, peer).unwrap(), Port(1));
}

/// E4 with real threads: closes and re-binds race a sender and the
/// handler. Sends never fail other than as documented, and a freed port
/// is never left pending.
#[test]
fn e4_close_racing_send_and_handler() {
    let (ec, fp, _bp) = connected();
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(SeqCst) {
                ec.send(FE, fp).unwrap(); // interdomain or unbound(BE, alive)
            }
        });
        let mut w = ec.waiter(BE).unwrap();
        let stop = &stop;
        s.spawn(move || {
            while !stop.load(SeqCst) {
                let _ = w.wait(Duration::from_millis(1)).unwrap();
            }
        });
        for _ in 0..miri_or(20, 2_000) {
            let bp = match ec.status(FE, fp).unwrap().state {
                PortState::Interdomain { remote_port, .. } => remote_port,
                s => panic!("{s:?}"),
            };
            ec.close(BE, bp).unwrap();
            let st = ec.status(BE, bp).unwrap();
            assert_eq!(st.state, PortState::Closed);
            assert!(!st.pending && st.masked, "freed port left pending");
            ec.bind_interdomain(BE, FE, fp).unwrap();
        }
        stop.store(true, SeqCst);
    });
}

/// Direct ports: 10,000 round trips where each side's port is direct for
/// its thread (events unpark the thread itself, no domain waiter), with
/// the domain waiters existing beside them and never handed those ports.
#[test]
fn direct_ports_ping_pong_without_the_domain_waiter() {
    const ROUNDS: u64 = miri_or(100, 10_000);
    let (ec, fp, bp) = connected();
    let mut wf = ec.waiter(FE).unwrap();
    let mut wb = ec.waiter(BE).unwrap();
    let wait_direct = |dom: DomId, port: Port| {
        let start = Instant::now();
        while !ec.take_port(dom, port).unwrap() {
            assert!(start.elapsed() < GUARD, "lost event on {dom:?}/{port:?}");
            thread::park_timeout(GUARD);
        }
    };
    thread::scope(|s| {
        s.spawn(|| {
            let token = ec.set_direct(BE, bp).unwrap();
            for _ in 0..ROUNDS {
                wait_direct(BE, bp);
                ec.send(BE, bp).unwrap();
            }
            ec.clear_direct(BE, bp, token);
        });
        let token = ec.set_direct(FE, fp).unwrap();
        // The backend may not be registered yet: its first ping can go to
        // its domain waiter's selector, and `take_port` still finds it.
        for _ in 0..ROUNDS {
            ec.send(FE, fp).unwrap();
            wait_direct(FE, fp);
        }
        ec.clear_direct(FE, fp, token);
    });
    // The domain waiters never got the direct ports' events.
    assert!(!wf.try_take().contains(fp));
    assert!(!wb.try_take().contains(bp));
    assert_eq!(
        ec.counters(BE).unwrap().deliveries,
        ROUNDS + 1,
        "bind + pings"
    );
}

/// Clearing a direct port hands an event its thread did not take to the
/// domain waiter; closing the port ends the registration; a stale token
/// clears nothing.
#[test]
fn clear_direct_hands_a_pending_event_back() {
    let (ec, fp, bp) = connected();
    let mut wb = ec.waiter(BE).unwrap();
    let t1 = ec.set_direct(BE, bp).unwrap();
    ec.send(FE, fp).unwrap();
    assert!(
        wb.try_take().is_empty(),
        "the direct port's event is not the waiter's"
    );
    let t2 = ec.set_direct(BE, bp).unwrap();
    ec.clear_direct(BE, bp, t1); // stale: t2 stays
    ec.send(FE, fp).unwrap(); // coalesced with the pending one
    assert!(wb.try_take().is_empty());
    ec.clear_direct(BE, bp, t2);
    assert_eq!(wb.wait(GUARD).unwrap().iter().collect::<Vec<_>>(), [bp]);
    // Direct again, then the port is closed and its number reused: the new
    // binding's events go to the domain waiter.
    ec.set_direct(BE, bp).unwrap();
    ec.close(BE, bp).unwrap();
    let fp2 = ec.alloc_unbound(FE, BE).unwrap();
    let bp2 = ec.bind_interdomain(BE, FE, fp2).unwrap();
    assert_eq!(bp2, bp, "the port number is reused");
    assert_eq!(wb.wait(GUARD).unwrap().iter().collect::<Vec<_>>(), [bp2]);
    ec.send(FE, fp2).unwrap();
    assert_eq!(wb.wait(GUARD).unwrap().iter().collect::<Vec<_>>(), [bp2]);
    assert_eq!(
        ec.set_direct(BE, Port(0)),
        Err(EvtchnError::InvalidPort(Port(0)))
    );
}
