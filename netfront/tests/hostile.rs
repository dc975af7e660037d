//! netfront against a hostile backend written in the test, directly on the
//! rings: the NF rows of SECURITY.md (NF1–NF6).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use pvio_abi::netif::{ExtraInfo, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETRXF_EXTRA_INFO, RxResponse};
use pvio_abi::xenbus::XenbusState;
use pvio_netfront::{NetError, Netfront, NetfrontConfig, Packet};
use pvio_shmem::SharedMem;
use pvio_xenbus::device::read_state;

fn assert_broken(fx: &Fixture, f: &mut Netfront) {
    wait_broken(f);
    assert!(matches!(
        f.send(Packet::new(vec![0u8; 60])),
        Err(NetError::Broken(_))
    ));
    assert!(f.recv().is_none());
    assert!(matches!(
        f.wait(Duration::from_millis(1)),
        Err(NetError::Broken(_))
    ));
    let xs = fx.dom0.store();
    assert_eq!(read_state(&xs, &fx.dev.frontend), XenbusState::Closing);
    let home = format!("/local/domain/{}/", fx.fe.id().0);
    let err_path = fx.dev.frontend.replacen(&home, &format!("{home}error/"), 1) + "/error";
    assert!(
        !xs.read(&err_path).unwrap_or_default().is_empty(),
        "the frontend reported the fault in the store"
    );
}

fn untrusted() -> NetfrontConfig {
    NetfrontConfig {
        trusted: Some(false),
        ..cfg()
    }
}

#[test]
fn nf1_tx_response_id_not_outstanding_breaks() {
    // A slot never used, and a used slot with the wrong generation.
    for bad in [|_id: u16| 200u16, |id: u16| id ^ 0x5500] {
        let (fx, mut f, mut b) = setup(&[], cfg());
        f.send(Packet::new(frame(&mut Rng(1), 60))).unwrap();
        let p = b.tx_packet(0);
        b.tx_response(0, bad(p.reqs[0].id), NETIF_RSP_OKAY);
        assert_broken(&fx, &mut f);
    }
}

#[test]
fn nf1_duplicate_tx_response_breaks_without_double_free() {
    let (fx, mut f, mut b) = setup(&[], cfg());
    let mut rng = Rng(2);
    f.send(Packet::new(frame(&mut rng, 60))).unwrap();
    f.send(Packet::new(frame(&mut rng, 60))).unwrap();
    let p1 = b.tx_packet(0);
    let _p2 = b.tx_packet(0);
    b.answer_tx(0, &p1, NETIF_RSP_OKAY);
    let _ = f.wait(Duration::from_millis(10));
    assert!(f.broken().is_none());
    assert_eq!(f.tx_in_flight(), 1);
    // The second slot answered with the first id again.
    b.tx_response(0, p1.reqs[0].id, NETIF_RSP_OKAY);
    assert_broken(&fx, &mut f);
}

#[test]
fn nf1_null_response_with_no_extra_outstanding_breaks() {
    let (fx, mut f, mut b) = setup(&[], cfg());
    f.send(Packet::new(frame(&mut Rng(3), 60))).unwrap();
    let _ = b.tx_packet(0);
    b.tx_response(0, 0, NETIF_RSP_NULL);
    assert_broken(&fx, &mut f);
}

#[test]
fn nf2_rx_offset_plus_status_past_the_page_breaks() {
    for (offset, status) in [(4000u16, 200i16), (0, 4097), (1, 4096), (4096, 1)] {
        let (fx, mut f, mut b) = setup(&[], cfg());
        b.rx_response(
            0,
            RxResponse {
                id: 0,
                offset,
                flags: 0,
                status,
            },
        );
        b.flush_rx(0);
        assert_broken(&fx, &mut f);
        assert_eq!(f.stats().rx_packets, 0);
    }
}

#[test]
fn nf2_rx_bad_extra_info_breaks() {
    // Unknown type, GSO of unknown type, GSO of size 0.
    for extra in [
        ExtraInfo::new(0, [0; 3]),
        ExtraInfo::new(9, [0; 3]),
        ExtraInfo::new(1, [1448, 7, 0]),
        ExtraInfo::new(1, [0, 1, 0]),
    ] {
        let (fx, mut f, mut b) = setup(&[], cfg());
        b.rx_response(
            0,
            RxResponse {
                id: 0,
                offset: 0,
                flags: NETRXF_EXTRA_INFO,
                status: 60,
            },
        );
        b.rx_response(0, rx_of_extra(extra));
        b.flush_rx(0);
        assert_broken(&fx, &mut f);
    }
}

#[test]
fn nf2_rx_multi_slot_without_sg_breaks() {
    let fx = domains(&[]);
    let (f, b) = connect(&fx, ALL, NetfrontConfig { sg: false, ..cfg() });
    let (mut f, mut b) = (f.unwrap(), b.unwrap());
    b.inject(0, &frame(&mut Rng(4), 5000), 0, None);
    assert_broken(&fx, &mut f);
}

#[test]
fn nf3_tx_rsp_prod_overflow_breaks() {
    let (fx, mut f, b) = setup(&[], cfg());
    f.send(Packet::new(frame(&mut Rng(5), 60))).unwrap();
    b.set_rsp_prod_tx(0, 1000);
    assert_broken(&fx, &mut f);
}

#[test]
fn nf3_rx_rsp_prod_overflow_breaks() {
    let (fx, mut f, b) = setup(&[], cfg());
    // 256 requests posted; a rsp_prod past them.
    b.set_rsp_prod_rx(0, 257);
    assert_broken(&fx, &mut f);
}

#[test]
fn nf4_tx_page_still_mapped_is_quarantined_never_reused() {
    let (_fx, mut f, mut b) = setup(&[], untrusted());
    let mut rng = Rng(6);
    let first = frame(&mut rng, 1000);
    f.send(Packet::new(first.clone())).unwrap();
    let p = b.tx_packet(0);
    // The backend keeps the page mapped past its response.
    let held = b.be.map_readonly(b.fe, p.reqs[0].gref).unwrap();
    b.answer_tx(0, &p, NETIF_RSP_OKAY);
    let _ = f.wait(Duration::from_millis(10));
    assert_eq!(f.tx_in_flight(), 0);
    assert_eq!(f.quarantined_pages(), 1);
    for _ in 0..300 {
        f.send(Packet::new(frame(&mut rng, 1000))).unwrap();
        b.echo_tx(0);
        let mut page = vec![0; 1000];
        held.read_bytes(0, &mut page).unwrap();
        assert_eq!(page, first, "a quarantined page was reused");
    }
    assert!(f.broken().is_none());
    // Released: the page comes back.
    drop(held);
    let _ = f.wait(Duration::from_millis(10));
    let _ = f.recv();
    assert_eq!(f.quarantined_pages(), 0);
}

#[test]
fn nf4_nf5_rx_page_still_mapped_is_quarantined_and_data_bounced() {
    let (_fx, mut f, mut b) = setup(&[], untrusted());
    let req = b.next_rx(0);
    let held = b.be.map(b.fe, req.gref).unwrap();
    held.fill(0, 4096, 0x5a).unwrap();
    b.queues[0]
        .rx
        .push_response(&RxResponse {
            id: req.id,
            offset: 0,
            flags: 0,
            status: 100,
        })
        .unwrap();
    b.flush_rx(0);
    let p = recv_one(&mut f);
    assert_eq!(p.data.as_ref(), &[0x5a; 100][..]);
    assert_eq!(f.quarantined_pages(), 1);
    // The backend rewrites the page: the frame the caller holds is a copy.
    held.fill(0, 4096, 0xff).unwrap();
    assert_eq!(p.data.as_ref(), &[0x5a; 100][..]);
}

#[test]
fn nf5_untrusted_backend_sees_only_the_packet_and_zeros() {
    let fx = domains(&[("trusted", "0")]);
    let (f, b) = connect(&fx, ALL, cfg());
    let (mut f, mut b) = (f.unwrap(), b.unwrap());
    assert!(!f.info().trusted);
    // A big frame, then a small one reusing the page (LIFO).
    f.send(Packet::new(vec![0xaa; 4000])).unwrap();
    let big = b.echo_tx(0);
    let _ = f.wait(Duration::from_millis(10));
    let mut small = vec![0x11u8; 60];
    small[12] = 0x88;
    f.send(Packet::new(small.clone())).unwrap();
    let p = b.tx_packet(0);
    let page = b.tx_page(p.reqs[0].gref);
    assert_eq!(&page[..60], &small[..]);
    assert!(
        page[60..].iter().all(|&x| x == 0),
        "stale bytes past the packet"
    );
    b.answer_tx(0, &p, NETIF_RSP_OKAY);
    let _ = f.wait(Duration::from_millis(10));
    // Per-use grants: both ended after their responses.
    assert!(b.be.map_readonly(b.fe, big.reqs[0].gref).is_err());
    assert!(b.be.map_readonly(b.fe, p.reqs[0].gref).is_err());
    // RX: buffers used for data come back zeroed before being posted again.
    for _ in 0..64 {
        b.inject(0, &[0xab; 4000], 0, None);
    }
    for _ in 0..64 {
        recv_one(&mut f);
    }
    let posted = b.rx_posted(0);
    assert!(posted >= 224, "refilled: {posted}");
    for _ in 0..posted {
        let r = b.next_rx(0);
        let m = b.be.map(b.fe, r.gref).unwrap();
        let mut v = vec![0; 4096];
        m.read_bytes(0, &mut v).unwrap();
        assert!(v.iter().all(|&x| x == 0), "a posted buffer held stale data");
    }
}

#[test]
fn trusted_backend_gets_persistent_grants() {
    let (_fx, mut f, mut b) = setup(&[("trusted", "1")], cfg());
    assert!(f.info().trusted);
    let mut rng = Rng(7);
    f.send(Packet::new(frame(&mut rng, 60))).unwrap();
    let a = b.echo_tx(0);
    let _ = f.wait(Duration::from_millis(10));
    f.send(Packet::new(frame(&mut rng, 60))).unwrap();
    let c = b.echo_tx(0);
    assert_eq!(
        a.reqs[0].gref, c.reqs[0].gref,
        "the page and its grant reused"
    );
}

#[test]
fn nf6_event_storm_costs_bounded_iterations() {
    let (_fx, mut f, mut b) = setup(&[], cfg());
    let stop = Arc::new(AtomicBool::new(false));
    let ports: Vec<_> = b
        .queues
        .iter()
        .flat_map(|q| [q.tx_port, q.rx_port])
        .collect();
    let be = b.be.clone();
    let s = stop.clone();
    let flood = std::thread::spawn(move || {
        let mut sent = 0u64;
        while !s.load(Ordering::Relaxed) {
            for &p in &ports {
                let _ = be.events().send(p);
                sent += 1;
            }
        }
        sent
    });
    // Nothing arrives: the wait runs to its end under the flood.
    let r = f.wait(Duration::from_millis(300)).unwrap();
    stop.store(true, Ordering::Relaxed);
    let sent = flood.join().unwrap();
    assert!(!r.rx);
    let st = f.stats();
    eprintln!("storm: {sent} events sent, {st:?}");
    assert!(st.spurious_events > 0);
    assert!(st.backoffs > 0, "the waiter backed off");
    // Unbounded spinning would go round hundreds of thousands of times.
    assert!(st.wait_loops < 2000, "{} loop iterations", st.wait_loops);
    // And the device still works.
    let d = frame(&mut Rng(8), 90);
    b.inject(0, &d, 0, None);
    assert_eq!(recv_one(&mut f).data.as_ref(), &d[..]);
}

#[test]
fn backend_leaving_connected_disconnects() {
    let (fx, mut f, b) = setup(&[], cfg());
    pvio_xenbus::device::switch_state(&fx.be.store(), &b.dev.backend, XenbusState::Closing)
        .unwrap();
    let deadline = std::time::Instant::now() + GUARD;
    loop {
        match f.wait(Duration::from_millis(20)) {
            Err(NetError::Disconnected(_)) => break,
            other => assert!(std::time::Instant::now() < deadline, "{other:?}"),
        }
    }
    assert!(matches!(
        f.send(Packet::new(vec![0u8; 60])),
        Err(NetError::Disconnected(_))
    ));
}
