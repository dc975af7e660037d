//! loom models of the event-channel protocols (SECURITY.md E4, E7, E9 and
//! the wake protocol of `src/domain.rs`).
//!
//! Run with
//! `LOOM_MAX_PREEMPTIONS=3 cargo test -p pvio-evtchn --features loom --test loom --release`.
//!
//! Blocking waits are untimed under loom (the shim has no timed park), so
//! a lost wakeup shows up as a loom deadlock. Each model uses a registry
//! of 4 ports per domain (one bitmap word) and at most two threads.

use loom::thread;
use pvio_evtchn::{DomId, EventChannels, EvtchnError, Port, PortState};
use std::time::Duration;

const BE: DomId = DomId(0);
const FE: DomId = DomId(1);
const PORTS: u32 = 4;
/// Ignored under loom (no timed park); waits end by events only.
const FOREVER: Duration = Duration::from_secs(3600);

fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

/// Two domains and a bound channel, the bind's event consumed.
fn connected() -> (EventChannels, Port, Port) {
    let ec = EventChannels::with_max_ports(PORTS).unwrap();
    ec.add_domain(BE, PORTS).unwrap();
    ec.add_domain(FE, PORTS).unwrap();
    let fp = ec.alloc_unbound(FE, BE).unwrap();
    let bp = ec.bind_interdomain(BE, FE, fp).unwrap();
    let mut w = ec.waiter(BE).unwrap();
    assert!(w.try_take().contains(bp));
    (ec, fp, bp)
}

/// Deliveries to BE beyond the bind's own event.
fn deliveries(ec: &EventChannels) -> u64 {
    ec.counters(BE).unwrap().deliveries - 1
}

/// The wake protocol: a send racing the waiter going to sleep is never
/// lost (S0–S3 against W1/W2).
#[test]
fn send_wakes_a_sleeping_waiter() {
    model(|| {
        let (ec, fp, bp) = connected();
        let mut w = ec.waiter(BE).unwrap();
        let ec2 = ec.clone();
        let s = thread::spawn(move || ec2.send(FE, fp).unwrap());
        let p = w.wait(FOREVER).unwrap();
        assert_eq!(p.iter().collect::<Vec<_>>(), [bp]);
        s.join().unwrap();
        assert!(w.try_take().is_empty());
        assert_eq!(deliveries(&ec), 1);
    });
}

/// E9 / send vs unmask: the receiver masks, handles, unmasks and then
/// blocks if it has not seen the event yet; the sender sends once. The
/// event is delivered exactly once and the blocking wait always ends.
#[test]
fn send_vs_mask_handle_unmask_delivers_once() {
    model(|| {
        let (ec, fp, bp) = connected();
        let mut w = ec.waiter(BE).unwrap();
        let ec2 = ec.clone();
        let s = thread::spawn(move || ec2.send(FE, fp).unwrap());
        ec.mask(BE, bp).unwrap();
        let mut got = w.try_take().len();
        ec.unmask(BE, bp).unwrap();
        if got == 0 {
            got = w.wait(FOREVER).unwrap().len();
        }
        assert_eq!(got, 1);
        s.join().unwrap();
        assert!(w.try_take().is_empty());
        assert_eq!(deliveries(&ec), 1);
    });
}

/// Two sends against mask/handle/unmask/handle: every pending edge (a send
/// that newly set the bit) is delivered exactly once, and none is lost.
#[test]
fn one_delivery_per_pending_edge() {
    model(|| {
        let (ec, fp, bp) = connected();
        let mut w = ec.waiter(BE).unwrap();
        let ec2 = ec.clone();
        let s = thread::spawn(move || {
            ec2.send(FE, fp).unwrap();
            ec2.send(FE, fp).unwrap();
        });
        ec.mask(BE, bp).unwrap();
        let mut got = w.try_take().len();
        ec.unmask(BE, bp).unwrap();
        got += w.try_take().len();
        s.join().unwrap();
        got += w.try_take().len();
        let c = ec.counters(FE).unwrap();
        assert_eq!(c.sends, 2);
        let edges = c.sends - c.coalesced;
        assert!(edges >= 1);
        assert_eq!(got as u64, edges, "one delivery per edge");
        assert_eq!(deliveries(&ec), edges);
        assert!(!ec.status(BE, bp).unwrap().pending);
    });
}

/// E4: the receiver closes its port while the peer sends on the channel.
/// The send succeeds (interdomain before, unbound with a live peer after);
/// afterwards the freed port is not pending and nothing is delivered for
/// it.
#[test]
fn e4_close_vs_send() {
    model(|| {
        let (ec, fp, bp) = connected();
        let mut w = ec.waiter(BE).unwrap();
        let ec2 = ec.clone();
        let s = thread::spawn(move || ec2.send(FE, fp));
        ec.close(BE, bp).unwrap();
        assert_eq!(s.join().unwrap(), Ok(()));
        let st = ec.status(BE, bp).unwrap();
        assert_eq!(st.state, PortState::Closed);
        assert!(!st.pending && st.masked);
        assert_eq!(
            ec.status(FE, fp).unwrap().state,
            PortState::Unbound { remote_dom: BE }
        );
        assert!(w.try_take().is_empty());
        assert_eq!(ec.active_ports(BE).unwrap(), 0);
    });
}

/// E4: the sender's own port is closed under it. The send either happened
/// before (its event stays on the peer's now-unbound port) or fails with
/// `InvalidPort`.
#[test]
fn e4_close_own_port_vs_send() {
    model(|| {
        let (ec, fp, bp) = connected();
        let mut w = ec.waiter(BE).unwrap();
        let ec2 = ec.clone();
        let s = thread::spawn(move || ec2.send(FE, fp));
        ec.close(FE, fp).unwrap();
        let sent = s.join().unwrap();
        let st = ec.status(FE, fp).unwrap();
        assert_eq!(st.state, PortState::Closed);
        assert!(!st.pending && st.masked);
        assert_eq!(
            ec.status(BE, bp).unwrap().state,
            PortState::Unbound { remote_dom: FE }
        );
        let got = w.try_take().len();
        match sent {
            Ok(()) => assert_eq!(got, 1),
            Err(e) => {
                assert_eq!(e, EvtchnError::InvalidPort(fp));
                assert_eq!(got, 0);
            }
        }
    });
}

/// E4 with three threads: the peer sends while the handler takes events
/// and the receiver's port is closed. The handler gets the event at most
/// once, and only if it was raised before the close; afterwards the freed
/// port is clean.
#[test]
fn e4_close_vs_send_and_handler() {
    model(|| {
        let (ec, fp, bp) = connected();
        let mut w = ec.waiter(BE).unwrap();
        let ec2 = ec.clone();
        let s = thread::spawn(move || ec2.send(FE, fp));
        let h = thread::spawn(move || w.try_take().len() + w.try_take().len());
        ec.close(BE, bp).unwrap();
        assert_eq!(s.join().unwrap(), Ok(()));
        let got = h.join().unwrap();
        assert!(got <= 1);
        let st = ec.status(BE, bp).unwrap();
        assert!(st.state == PortState::Closed && !st.pending && st.masked);
        assert_eq!(deliveries(&ec), got as u64);
    });
}

/// Two senders on two channels into one sleeping waiter: both events
/// arrive (no lost wakeup when senders race each other and the waiter),
/// each exactly once.
///
/// The waiter runs on its own thread: a sender may claim a wake and
/// `unpark` the waiter after it already returned (harmless for `std`), and
/// loom's `join` does not tolerate such a stray unpark of a joining thread.
#[test]
fn two_senders_one_waiter() {
    model(|| {
        let (ec, fp, bp) = connected();
        let fe2 = DomId(2);
        ec.add_domain(fe2, PORTS).unwrap();
        let fp2 = ec.alloc_unbound(fe2, BE).unwrap();
        let bp2 = ec.bind_interdomain(BE, fe2, fp2).unwrap();
        let mut w = ec.waiter(BE).unwrap();
        assert_eq!(w.try_take().iter().collect::<Vec<_>>(), [bp2]);
        let h = thread::spawn(move || {
            let (mut a, mut b) = (0, 0);
            while a + b < 2 {
                let p = w.wait(FOREVER).unwrap();
                a += usize::from(p.contains(bp));
                b += usize::from(p.contains(bp2));
            }
            (a, b, w.try_take().is_empty())
        });
        let ec2 = ec.clone();
        let s = thread::spawn(move || ec2.send(fe2, fp2).unwrap());
        ec.send(FE, fp).unwrap();
        s.join().unwrap();
        assert_eq!(h.join().unwrap(), (1, 1, true));
    });
}

/// E4 / close while waiting: a thread blocked in `wait_port` while the
/// port is closed under it: the close's kick wakes it and it reports
/// `InvalidPort`, never hangs.
#[test]
fn e4_close_wakes_wait_port() {
    model(|| {
        let (ec, _fp, bp) = connected();
        let mut w = ec.waiter(BE).unwrap();
        let h = thread::spawn(move || w.wait_port(bp, FOREVER));
        ec.close(BE, bp).unwrap();
        assert_eq!(h.join().unwrap(), Err(EvtchnError::InvalidPort(bp)));
    });
}

/// The peer closes its end while the domain's waiter blocks in `wait`:
/// the kick ends the wait (with an empty set), never hangs.
#[test]
fn peer_close_wakes_wait() {
    model(|| {
        let (ec, fp, bp) = connected();
        let mut w = ec.waiter(BE).unwrap();
        let h = thread::spawn(move || w.wait(FOREVER).map(|p| p.is_empty()));
        ec.close(FE, fp).unwrap();
        assert_eq!(h.join().unwrap(), Ok(true));
        assert_eq!(
            ec.status(BE, bp).unwrap().state,
            PortState::Unbound { remote_dom: FE }
        );
    });
}

/// E7: a reader racing the publication of a new port never sees the port
/// (nor the count that includes it) before the entry is initialised. Port
/// 1 was used and closed before, so it starts masked; a new port must be
/// seen unmasked.
#[test]
fn e7_new_port_is_published_after_its_entry() {
    model(|| {
        let ec = EventChannels::with_max_ports(PORTS).unwrap();
        ec.add_domain(BE, PORTS).unwrap();
        ec.add_domain(FE, PORTS).unwrap();
        let p = ec.alloc_unbound(FE, BE).unwrap();
        ec.close(FE, p).unwrap();
        assert!(ec.status(FE, p).unwrap().masked);

        let ec2 = ec.clone();
        let a = thread::spawn(move || ec2.alloc_unbound(FE, BE).unwrap());
        let n = ec.active_ports(FE).unwrap();
        let st = ec.status(FE, p).unwrap();
        if n >= 1 {
            assert_eq!(st.state, PortState::Unbound { remote_dom: BE });
        }
        if st.state != PortState::Closed {
            assert_eq!(st.state, PortState::Unbound { remote_dom: BE });
            assert!(!st.masked && !st.pending, "entry seen before init");
        }
        assert_eq!(a.join().unwrap(), p);
    });
}

/// Parks until the direct port `bp` of BE has an event (untimed: a lost
/// wakeup is a loom deadlock).
fn wait_direct(ec: &EventChannels, bp: Port) {
    while !ec.take_port(BE, bp).unwrap() {
        thread::park();
    }
}

/// Direct ports (`src/domain.rs`, D0 against R0): a send racing the
/// registration of the receiving thread is delivered to it exactly once,
/// and never taken by the domain waiter. (The receiver is the spawned
/// thread: a late `unpark` of it leaves a token that loom's `join` of the
/// parked thread would trip over, though `std` does not care.)
#[test]
fn direct_send_vs_registration() {
    model(|| {
        let (ec, fp, bp) = connected();
        let mut w = ec.waiter(BE).unwrap();
        let ec2 = ec.clone();
        let r = thread::spawn(move || {
            let token = ec2.set_direct(BE, bp).unwrap();
            wait_direct(&ec2, bp);
            token
        });
        ec.send(FE, fp).unwrap();
        let token = r.join().unwrap();
        assert!(w.try_take().is_empty());
        assert!(!ec.take_port(BE, bp).unwrap());
        assert_eq!(deliveries(&ec), 1);
        ec.clear_direct(BE, bp, token);
    });
}

/// Direct ports (D0 against C0/C1): a send racing the end of the
/// registration reaches the receiver exactly once, directly or through the
/// domain waiter.
#[test]
fn direct_send_vs_clear() {
    model(|| {
        let (ec, fp, bp) = connected();
        let mut w = ec.waiter(BE).unwrap();
        let token = ec.set_direct(BE, bp).unwrap();
        let ec2 = ec.clone();
        let s = thread::spawn(move || ec2.send(FE, fp).unwrap());
        let direct = ec.take_port(BE, bp).unwrap();
        ec.clear_direct(BE, bp, token);
        if !direct {
            assert_eq!(w.wait(FOREVER).unwrap().iter().collect::<Vec<_>>(), [bp]);
        }
        s.join().unwrap();
        assert!(w.try_take().is_empty());
        assert_eq!(deliveries(&ec), 1);
    });
}
