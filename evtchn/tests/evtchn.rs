//! Single-threaded semantics of the registry (spec/evtchn.md §1–3) and the
//! EVT rows of SECURITY.md that need no concurrency (E1, E2, E8, E9).
#![cfg(not(feature = "loom"))]

mod common;

use common::{BE, FE, GUARD, connected};
use pvio_abi::DOMID_SELF;
use pvio_abi::evtchn::{EVTCHNSTAT_CLOSED, EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_UNBOUND, xen_errno};
use pvio_evtchn::{
    Counters, DomId, EventChannels, EvtchnError, MAX_PORTS, Pending, Port, PortState, PortWait,
};
use std::time::Duration;

const SHORT: Duration = Duration::from_millis(10);

fn ports(p: &Pending) -> Vec<u32> {
    p.iter().map(|p| p.0).collect()
}

#[test]
fn interdomain_lifecycle() {
    let ec = EventChannels::new();
    ec.add_domain(BE, MAX_PORTS).unwrap();
    ec.add_domain(FE, MAX_PORTS).unwrap();
    let mut wb = ec.waiter(BE).unwrap();
    let mut wf = ec.waiter(FE).unwrap();

    // Frontend: alloc_unbound for the backend.
    let fp = ec.alloc_unbound(FE, BE).unwrap();
    assert_eq!(fp, Port(1));
    let s = ec.status(FE, fp).unwrap();
    assert_eq!(s.state, PortState::Unbound { remote_dom: BE });
    assert!(!s.pending && !s.masked);
    assert_eq!(ec.active_ports(FE).unwrap(), 1);

    // Backend: bind; both ends interdomain, the new port pending once.
    let bp = ec.bind_interdomain(BE, FE, fp).unwrap();
    assert_eq!(bp, Port(1));
    assert_eq!(
        ec.status(FE, fp).unwrap().state,
        PortState::Interdomain {
            remote_dom: BE,
            remote_port: bp
        }
    );
    assert_eq!(
        ec.status(BE, bp).unwrap().state,
        PortState::Interdomain {
            remote_dom: FE,
            remote_port: fp
        }
    );
    assert!(ec.status(BE, bp).unwrap().pending);
    assert_eq!(ports(&wb.wait(GUARD).unwrap()), [1]);
    assert!(wb.try_take().is_empty());

    // Both directions.
    ec.send(FE, fp).unwrap();
    assert_eq!(ports(&wb.wait(GUARD).unwrap()), [bp.0]);
    ec.send(BE, bp).unwrap();
    assert_eq!(ports(&wf.wait(GUARD).unwrap()), [fp.0]);

    // The backend closes: the frontend's port goes back to unbound(BE).
    ec.send(FE, fp).unwrap(); // pending on bp, cleared by the close
    ec.close(BE, bp).unwrap();
    let s = ec.status(BE, bp).unwrap();
    assert_eq!(s.state, PortState::Closed);
    assert!(
        !s.pending && s.masked,
        "a freed port is not pending, masked"
    );
    assert_eq!(
        ec.status(FE, fp).unwrap().state,
        PortState::Unbound { remote_dom: BE }
    );
    // Waiters are kicked by the close: an empty return, then nothing.
    assert!(wb.wait(GUARD).unwrap().is_empty());
    assert!(wb.try_take().is_empty());
    assert!(wf.wait(GUARD).unwrap().is_empty());
    // Send on the unbound port: dropped silently while the backend lives.
    ec.send(FE, fp).unwrap();
    assert!(wb.try_take().is_empty());

    // The backend can bind again (the closer is the remembered remote).
    let bp2 = ec.bind_interdomain(BE, FE, fp).unwrap();
    assert_eq!(bp2, bp, "lowest free port");
    assert_eq!(ports(&wb.wait(GUARD).unwrap()), [bp2.0]);
    ec.send(FE, fp).unwrap();
    assert_eq!(ports(&wb.wait(GUARD).unwrap()), [bp2.0]);

    // Now the frontend closes.
    ec.close(FE, fp).unwrap();
    assert_eq!(
        ec.status(BE, bp2).unwrap().state,
        PortState::Unbound { remote_dom: FE }
    );
    assert_eq!(ec.active_ports(FE).unwrap(), 0);
    assert_eq!(ec.active_ports(BE).unwrap(), 1);
    ec.close(BE, bp2).unwrap();
    assert_eq!(ec.active_ports(BE).unwrap(), 0);

    let c = ec.counters(FE).unwrap();
    assert_eq!(
        (c.sends, c.coalesced),
        (4, 0),
        "sends counted, dropped ones included"
    );
    assert_eq!(ec.counters(BE).unwrap().deliveries, 4);
    assert_eq!(ec.counters(FE).unwrap().deliveries, 1);
}

#[test]
fn status_values_match_evtchnstat() {
    let (ec, fp, bp) = connected();
    let un = ec.alloc_unbound(FE, BE).unwrap();

    let s = ec.status(FE, Port(0)).unwrap();
    assert_eq!(s.state, PortState::Reserved);
    assert!(s.masked && !s.pending);
    assert_eq!(s.state.evtchnstat(), EVTCHNSTAT_CLOSED);

    let free = Port(100);
    let s = ec.status(FE, free).unwrap();
    assert_eq!(s.state, PortState::Closed);
    let abi = s.to_abi(FE, free);
    assert_eq!(
        (abi.dom, abi.port, abi.status),
        (FE, free, EVTCHNSTAT_CLOSED)
    );

    let abi = ec.status(FE, un).unwrap().to_abi(FE, un);
    assert_eq!(abi.status, EVTCHNSTAT_UNBOUND);
    assert_eq!(abi.unbound_dom(), BE);
    assert_eq!(abi.vcpu, 0);

    let abi = ec.status(BE, bp).unwrap().to_abi(BE, bp);
    assert_eq!(abi.status, EVTCHNSTAT_INTERDOMAIN);
    assert_eq!(abi.interdomain(), (FE, fp));

    let e = ec.status(FE, Port(MAX_PORTS)).unwrap_err();
    assert_eq!(e, EvtchnError::InvalidPort(Port(MAX_PORTS)));
    assert_eq!(e.errno(), xen_errno::EINVAL);
    let e = ec.status(DomId(7), Port(1)).unwrap_err();
    assert_eq!(e, EvtchnError::NoSuchDomain(DomId(7)));
    assert_eq!(e.errno(), xen_errno::ESRCH);
}

#[test]
fn lowest_free_port_first_never_zero() {
    let ec = EventChannels::new();
    ec.add_domain(FE, 16).unwrap();
    let got: Vec<u32> = (0..3)
        .map(|_| ec.alloc_unbound(FE, FE).unwrap().0)
        .collect();
    assert_eq!(got, [1, 2, 3]);
    ec.close(FE, Port(2)).unwrap();
    assert_eq!(ec.alloc_unbound(FE, DOMID_SELF).unwrap(), Port(2));
    assert_eq!(ec.alloc_unbound(FE, FE).unwrap(), Port(4));
}

#[test]
fn e1_send_on_bad_ports_is_an_error_not_a_crash() {
    let (ec, fp, _bp) = connected();
    let inv = |p: u32| EvtchnError::InvalidPort(Port(p));
    assert_eq!(ec.send(FE, Port(0)), Err(inv(0)));
    assert_eq!(ec.send(FE, Port(MAX_PORTS)), Err(inv(MAX_PORTS)));
    assert_eq!(ec.send(FE, Port(u32::MAX)), Err(inv(u32::MAX)));
    assert_eq!(ec.send(FE, Port(77)), Err(inv(77)), "never allocated");
    assert_eq!(
        ec.send(DomId(9), fp),
        Err(EvtchnError::NoSuchDomain(DomId(9)))
    );
    assert_eq!(
        ec.send(DOMID_SELF, fp),
        Err(EvtchnError::NoSuchDomain(DOMID_SELF))
    );
    assert_eq!(ec.send(FE, Port(0)).unwrap_err().errno(), xen_errno::EINVAL);

    // Unbound with a live remote: dropped, Ok (Xen semantics).
    let un = ec.alloc_unbound(FE, BE).unwrap();
    assert_eq!(ec.send(FE, un), Ok(()));

    // Closed.
    ec.close(FE, fp).unwrap();
    assert_eq!(ec.send(FE, fp), Err(inv(fp.0)));
    assert_eq!(ec.close(FE, fp), Err(inv(fp.0)), "double close");

    // The other operations refuse the same numbers.
    for p in [0, 77, MAX_PORTS, u32::MAX] {
        assert_eq!(ec.close(FE, Port(p)), Err(inv(p)));
        assert_eq!(ec.mask(FE, Port(p)), Err(inv(p)));
        assert_eq!(ec.unmask(FE, Port(p)), Err(inv(p)));
    }
    let mut w = ec.waiter(FE).unwrap();
    assert_eq!(w.wait_port(Port(0), SHORT), Err(inv(0)));
    assert_eq!(w.wait_port(Port(u32::MAX), SHORT), Err(inv(u32::MAX)));

    // A small domain: its limit, not 4096, bounds the ports.
    ec.add_domain(DomId(5), 8).unwrap();
    let p = ec.alloc_unbound(DomId(5), FE).unwrap();
    assert_eq!(ec.send(DomId(5), p), Ok(()));
    assert_eq!(ec.send(DomId(5), Port(8)), Err(inv(8)));
    assert_eq!(ec.status(DomId(5), Port(8)), Err(inv(8)));
}

#[test]
fn e2_exhaustion_is_a_clean_no_space() {
    let ec = EventChannels::new();
    ec.add_domain(BE, 64).unwrap();
    ec.add_domain(FE, MAX_PORTS).unwrap();
    for i in 1..64 {
        assert_eq!(ec.alloc_unbound(BE, FE).unwrap(), Port(i));
    }
    let e = ec.alloc_unbound(BE, FE).unwrap_err();
    assert_eq!(e, EvtchnError::NoSpace);
    assert_eq!(e.errno(), xen_errno::ENOSPC);
    assert_eq!(ec.active_ports(BE).unwrap(), 63);

    // A bind that finds no local port leaves the remote port unbound.
    let fp = ec.alloc_unbound(FE, BE).unwrap();
    assert_eq!(ec.bind_interdomain(BE, FE, fp), Err(EvtchnError::NoSpace));
    assert_eq!(
        ec.status(FE, fp).unwrap().state,
        PortState::Unbound { remote_dom: BE }
    );
    for p in 1..64 {
        let s = ec.status(BE, Port(p)).unwrap();
        assert_eq!(s.state, PortState::Unbound { remote_dom: FE });
        assert!(!s.pending && !s.masked);
    }

    // Free one in the middle: exactly that one comes back.
    ec.close(BE, Port(17)).unwrap();
    assert_eq!(ec.bind_interdomain(BE, FE, fp).unwrap(), Port(17));
    assert_eq!(ec.alloc_unbound(BE, FE), Err(EvtchnError::NoSpace));
    ec.reset(BE).unwrap();
    assert_eq!(ec.active_ports(BE).unwrap(), 0);
    assert_eq!(ec.alloc_unbound(BE, FE).unwrap(), Port(1));

    // A full-size domain: 4095 ports, then NoSpace (minutes under Miri,
    // which has checked the same paths on the small domain above).
    if cfg!(miri) {
        return;
    }
    let big = DomId(2);
    ec.add_domain(big, MAX_PORTS).unwrap();
    for i in 1..MAX_PORTS {
        assert_eq!(ec.alloc_unbound(big, FE), Ok(Port(i)));
    }
    assert_eq!(ec.alloc_unbound(big, BE), Err(EvtchnError::NoSpace));
    assert_eq!(ec.active_ports(big).unwrap(), MAX_PORTS - 1);
}

#[test]
fn e8_notify_after_peer_exit_is_closed() {
    let (ec, fp, _bp) = connected();
    let never_bound = ec.alloc_unbound(FE, BE).unwrap();
    let mut old_be = ec.waiter(BE).unwrap();

    ec.remove_domain(BE).unwrap();
    assert!(!ec.has_domain(BE));
    assert_eq!(
        ec.status(FE, fp).unwrap().state,
        PortState::Unbound { remote_dom: BE }
    );
    for _ in 0..3 {
        let e = ec.send(FE, fp).unwrap_err();
        assert_eq!(e, EvtchnError::Closed(fp));
        assert_eq!(e.errno(), xen_errno::ESRCH);
    }
    assert_eq!(
        ec.send(FE, never_bound),
        Err(EvtchnError::Closed(never_bound))
    );
    assert_eq!(
        old_be.wait(GUARD).unwrap_err(),
        EvtchnError::NoSuchDomain(BE)
    );
    // Operations on the removed domain.
    assert_eq!(ec.send(BE, Port(1)), Err(EvtchnError::NoSuchDomain(BE)));
    assert_eq!(ec.alloc_unbound(FE, BE), Err(EvtchnError::NoSuchDomain(BE)));

    // The id comes back as a new domain: the old waiter stays dead, the
    // port is an ordinary unbound port again (dropped sends).
    ec.add_domain(BE, MAX_PORTS).unwrap();
    assert_eq!(ec.counters(BE).unwrap(), Counters::default());
    assert_eq!(old_be.try_take(), Pending::new());
    assert_eq!(
        old_be.wait(SHORT).unwrap_err(),
        EvtchnError::NoSuchDomain(BE)
    );
    let mut new_be = ec.waiter(BE).unwrap();
    ec.send(FE, fp).unwrap();
    let bp = ec.bind_interdomain(BE, FE, fp).unwrap();
    assert_eq!(ports(&new_be.wait(GUARD).unwrap()), [bp.0]);
}

#[test]
fn e9_masked_send_is_latched_and_unmask_delivers_once() {
    let (ec, fp, bp) = connected();
    let mut w = ec.waiter(BE).unwrap();
    ec.mask(BE, bp).unwrap();
    for _ in 0..3 {
        ec.send(FE, fp).unwrap();
    }
    let s = ec.status(BE, bp).unwrap();
    assert!(s.pending && s.masked, "latched in the pending bit only");
    assert!(w.try_take().is_empty());
    assert!(w.wait(SHORT).unwrap().is_empty());
    assert_eq!(w.wait_port(bp, SHORT), Ok(PortWait::TimedOut));

    ec.unmask(BE, bp).unwrap();
    assert_eq!(ports(&w.try_take()), [bp.0]);
    assert!(w.try_take().is_empty());
    ec.unmask(BE, bp).unwrap(); // not masked: nothing to deliver
    assert!(w.wait(SHORT).unwrap().is_empty());
    let c = ec.counters(FE).unwrap();
    assert_eq!((c.sends, c.coalesced), (3, 2));
    assert_eq!(ec.counters(BE).unwrap().deliveries, 2, "bind event + one");

    // Unmask of a port that is masked but not pending delivers nothing.
    ec.mask(BE, bp).unwrap();
    ec.unmask(BE, bp).unwrap();
    assert!(w.try_take().is_empty());

    // Masked while the waiter sleeps, unmasked from another thread: one.
    ec.mask(BE, bp).unwrap();
    ec.send(FE, fp).unwrap();
    std::thread::scope(|s| {
        let h = s.spawn(|| w.wait_port(bp, GUARD));
        ec.unmask(BE, bp).unwrap();
        assert_eq!(h.join().unwrap(), Ok(PortWait::Fired));
    });
    assert!(w.try_take().is_empty());
}

#[test]
fn pending_sends_coalesce_into_one_delivery() {
    let (ec, fp, bp) = connected();
    let mut w = ec.waiter(BE).unwrap();
    for _ in 0..10 {
        ec.send(FE, fp).unwrap();
    }
    let p = w.wait(GUARD).unwrap();
    assert_eq!(ports(&p), [bp.0]);
    assert_eq!(p.len(), 1);
    assert!(w.try_take().is_empty());
    let c = ec.counters(FE).unwrap();
    assert_eq!((c.sends, c.coalesced), (10, 9));
    assert_eq!(ec.counters(BE).unwrap().deliveries, 2, "bind event + one");
}

#[test]
fn bind_interdomain_checks_the_remote_port() {
    let ec = EventChannels::with_max_ports(128).unwrap();
    for d in 0..3 {
        ec.add_domain(DomId(d), 128).unwrap();
    }
    let (a, b, c) = (DomId(0), DomId(1), DomId(2));
    let for_c = ec.alloc_unbound(a, c).unwrap();
    let nb = |p: u32| EvtchnError::NotBindable {
        remote_dom: a,
        remote_port: Port(p),
    };
    assert_eq!(
        ec.bind_interdomain(b, a, for_c),
        Err(nb(for_c.0)),
        "not for b"
    );
    assert_eq!(ec.bind_interdomain(b, a, Port(0)), Err(nb(0)));
    assert_eq!(ec.bind_interdomain(b, a, Port(50)), Err(nb(50)), "free");
    assert_eq!(
        ec.bind_interdomain(b, a, Port(128)),
        Err(EvtchnError::InvalidPort(Port(128)))
    );
    assert_eq!(
        ec.bind_interdomain(b, DomId(3), Port(1)),
        Err(EvtchnError::NoSuchDomain(DomId(3)))
    );
    let cp = ec.bind_interdomain(c, a, for_c).unwrap();
    assert_eq!(
        ec.bind_interdomain(c, a, for_c),
        Err(nb(for_c.0)),
        "already bound"
    );
    assert_eq!(nb(1).errno(), xen_errno::EINVAL);
    assert_eq!(
        ec.active_ports(b).unwrap(),
        0,
        "failed binds allocate nothing"
    );
    assert_eq!(
        ec.status(c, cp).unwrap().state.evtchnstat(),
        EVTCHNSTAT_INTERDOMAIN
    );
}

#[test]
fn loopback_channel_within_one_domain() {
    let ec = EventChannels::new();
    ec.add_domain(FE, 32).unwrap();
    let mut w = ec.waiter(FE).unwrap();
    let p = ec.alloc_unbound(FE, DOMID_SELF).unwrap();
    assert_eq!(
        ec.status(FE, p).unwrap().state,
        PortState::Unbound { remote_dom: FE }
    );
    let q = ec.bind_interdomain(FE, DOMID_SELF, p).unwrap();
    assert_eq!(ports(&w.try_take()), [q.0]);
    ec.send(FE, p).unwrap();
    ec.send(FE, q).unwrap();
    assert_eq!(ports(&w.wait(GUARD).unwrap()), [p.0, q.0]);
    ec.reset(FE).unwrap();
    assert_eq!(ec.active_ports(FE).unwrap(), 0);
    assert_eq!(ec.status(FE, p).unwrap().state, PortState::Closed);
    assert_eq!(ec.status(FE, q).unwrap().state, PortState::Closed);
}

#[test]
fn many_ports_are_taken_in_one_call_in_port_order() {
    let ec = EventChannels::new();
    ec.add_domain(BE, MAX_PORTS).unwrap();
    ec.add_domain(FE, MAX_PORTS).unwrap();
    let mut w = ec.waiter(BE).unwrap();
    let mut pairs = Vec::new();
    // Fewer under Miri (each port allocation is slow there).
    let n = if cfg!(miri) { 30 } else { 300 };
    for _ in 0..n {
        let fp = ec.alloc_unbound(FE, BE).unwrap();
        pairs.push((fp, ec.bind_interdomain(BE, FE, fp).unwrap()));
    }
    assert_eq!(w.try_take().len(), n, "a bind event per channel");
    // Fire every third channel, in reverse order; mask one of them.
    let fired: Vec<_> = pairs.iter().step_by(3).collect();
    ec.mask(BE, fired[1].1).unwrap();
    for (fp, _) in fired.iter().rev() {
        ec.send(FE, *fp).unwrap();
    }
    let p = w.wait(GUARD).unwrap();
    let mut expect: Vec<u32> = fired.iter().map(|(_, bp)| bp.0).collect();
    expect.remove(1);
    assert_eq!(ports(&p), expect);
    assert_eq!(p.into_iter().map(|p| p.0).collect::<Vec<_>>(), expect);
    assert!(p.contains(fired[0].1) && !p.contains(fired[1].1));
    assert_eq!(format!("{:?}", Pending::new()), "{}");
}

#[test]
fn one_waiter_per_domain() {
    let (ec, _fp, _bp) = connected();
    let w = ec.waiter(BE).unwrap();
    assert_eq!(w.domain(), BE);
    let e = ec.waiter(BE).unwrap_err();
    assert_eq!((e, e.errno()), (EvtchnError::Busy, xen_errno::EBUSY));
    drop(w);
    let _w = ec.waiter(BE).unwrap();
    assert_eq!(
        ec.waiter(DomId(42)).unwrap_err(),
        EvtchnError::NoSuchDomain(DomId(42))
    );
}

#[test]
fn wait_times_out_empty() {
    let (ec, _fp, bp) = connected();
    let mut w = ec.waiter(BE).unwrap();
    assert!(w.wait(SHORT).unwrap().is_empty());
    assert!(w.wait(Duration::ZERO).unwrap().is_empty());
    assert_eq!(w.wait_port(bp, SHORT), Ok(PortWait::TimedOut));
    w.set_spin(100);
    assert_eq!(w.wait_port(bp, SHORT), Ok(PortWait::TimedOut));
}

#[test]
fn wait_port_leaves_other_ports_pending() {
    let (ec, fp, bp) = connected();
    let fp2 = ec.alloc_unbound(FE, BE).unwrap();
    let mut w = ec.waiter(BE).unwrap();
    let bp2 = ec.bind_interdomain(BE, FE, fp2).unwrap(); // pending once
    ec.send(FE, fp).unwrap();
    assert_eq!(w.wait_port(bp, GUARD), Ok(PortWait::Fired));
    assert_eq!(ports(&w.try_take()), [bp2.0]);
}

#[test]
fn add_domain_rejects_bad_arguments() {
    let ec = EventChannels::with_max_ports(64).unwrap();
    assert_eq!(ec.port_limit(), 64);
    assert_eq!(
        ec.add_domain(DOMID_SELF, 64),
        Err(EvtchnError::InvalidArgument)
    );
    assert_eq!(
        ec.add_domain(DomId(0x7FFF), 64),
        Err(EvtchnError::InvalidArgument)
    );
    assert_eq!(ec.add_domain(FE, 0), Err(EvtchnError::InvalidArgument));
    assert_eq!(ec.add_domain(FE, 65), Err(EvtchnError::InvalidArgument));
    ec.add_domain(FE, 64).unwrap();
    assert_eq!(ec.add_domain(FE, 64), Err(EvtchnError::DomainExists(FE)));
    assert_eq!(ec.max_ports(FE), Ok(64));
    assert_eq!(ec.remove_domain(BE), Err(EvtchnError::NoSuchDomain(BE)));
    assert_eq!(ec.reset(BE), Err(EvtchnError::NoSuchDomain(BE)));
    assert!(EventChannels::with_max_ports(0).is_err());
    assert!(EventChannels::with_max_ports(MAX_PORTS + 1).is_err());
    // The highest ordinary domain id works.
    ec.add_domain(DomId(0x7FEF), 2).unwrap();
    assert_eq!(ec.alloc_unbound(DomId(0x7FEF), FE), Ok(Port(1)));
    assert_eq!(
        ec.alloc_unbound(DomId(0x7FEF), FE),
        Err(EvtchnError::NoSpace)
    );
}

#[test]
fn reset_closes_every_port_and_unbinds_peers() {
    let (ec, fp, bp) = connected();
    let un = ec.alloc_unbound(BE, FE).unwrap();
    ec.send(FE, fp).unwrap();
    ec.reset(BE).unwrap();
    for p in [bp, un] {
        let s = ec.status(BE, p).unwrap();
        assert_eq!(s.state, PortState::Closed);
        assert!(s.masked && !s.pending);
    }
    assert_eq!(
        ec.status(FE, fp).unwrap().state,
        PortState::Unbound { remote_dom: BE }
    );
    assert_eq!(ec.active_ports(BE).unwrap(), 0);
    assert_eq!(ec.send(FE, fp), Ok(()), "peer alive: dropped");
}

#[test]
fn errors_display_and_errno() {
    let all = [
        (EvtchnError::NoSuchDomain(BE), xen_errno::ESRCH),
        (EvtchnError::DomainExists(BE), xen_errno::EEXIST),
        (EvtchnError::InvalidArgument, xen_errno::EINVAL),
        (EvtchnError::InvalidPort(Port(3)), xen_errno::EINVAL),
        (
            EvtchnError::NotBindable {
                remote_dom: BE,
                remote_port: Port(3),
            },
            xen_errno::EINVAL,
        ),
        (EvtchnError::NoSpace, xen_errno::ENOSPC),
        (EvtchnError::Closed(Port(3)), xen_errno::ESRCH),
        (EvtchnError::Busy, xen_errno::EBUSY),
    ];
    for (e, errno) in all {
        assert_eq!(e.errno(), errno, "{e:?}");
        assert!(!e.to_string().is_empty());
    }
}
