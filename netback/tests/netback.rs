//! netback against frontends written in the test, directly on the rings:
//! data through the switch, multi-queue, split event channels, the credit
//! scheduler, and the NB/CTL rows of SECURITY.md.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pvio_abi::netif::{
    ExtraGso, ExtraInfo, NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETRXF_CSUM_BLANK,
    NETRXF_DATA_VALIDATED, NETRXF_EXTRA_INFO, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED,
    NETTXF_EXTRA_INFO, NETTXF_MORE_DATA, TxRequest, XEN_NETIF_EXTRA_TYPE_GSO,
    XEN_NETIF_GSO_TYPE_TCPV4,
};
use pvio_abi::xenbus::XenbusState;
use pvio_netback::{NetbackConfig, Port, Switch};
use pvio_xenbus::device::{switch_state, wait_for_state};

const BCAST: [u8; 6] = [0xFF; 6];

fn gso4(mss: u16) -> ExtraInfo {
    ExtraInfo::gso(ExtraGso {
        size: mss,
        type_: XEN_NETIF_GSO_TYPE_TCPV4,
        pad: 0,
        features: 0,
    })
}

fn sw_port(sw: &Switch) -> Arc<dyn Port> {
    Arc::new(sw.port())
}

type Side = (pvio_netback::Netback, Dev, Front);

/// Two vifs on one switch, both connected.
fn pair(cfg: NetbackConfig, oa: Opts, ob: Opts) -> (World, Switch, Side, Side) {
    let mut w = World::new();
    let sw = Switch::new();
    let (na, da) = w.vif(sw_port(&sw), cfg, &[]);
    let (nb, db) = w.vif(sw_port(&sw), cfg, &[]);
    let fa = da.connect(oa);
    let fb = db.connect(ob);
    (w, sw, (na, da, fa), (nb, db, fb))
}

#[test]
fn tx_rx_through_switch_sizes_with_and_without_sg() {
    for rx_sg in [true, false] {
        let (_w, _sw, (_na, da, mut fa), (nb, db, mut fb)) = pair(
            NetbackConfig::default(),
            Opts::default(),
            Opts {
                sg: rx_sg,
                gso: rx_sg,
                ..Opts::default()
            },
        );
        // Plain frames, single and multi-slot on TX.
        for (len, frag) in [(60, 4096), (1514, 4096), (1514, 100), (4000, 4096)] {
            let f = frame(db.mac, da.mac, len, len as u8);
            let st = da.send_wait(&mut fa, 0, &f, frag, 0, &[]);
            assert!(st.iter().all(|&s| s == NETIF_RSP_OKAY), "{len}: {st:?}");
            let p = db.recv(&mut fb);
            assert_eq!(p.data, f, "len {len} sg {rx_sg}");
        }
        // Bigger than a page: only to an SG frontend.
        let f = frame(db.mac, da.mac, 9000, 9);
        assert!(
            da.send_wait(&mut fa, 0, &f, 4096, 0, &[])
                .iter()
                .all(|&s| s == NETIF_RSP_OKAY)
        );
        if rx_sg {
            let p = db.recv(&mut fb);
            assert_eq!(p.data, f);
            assert_eq!(p.slots.len(), 3);
        } else {
            wait_until("the drop", || nb.stats().rx_dropped >= 1);
        }
        // 64 KiB GSO: whole with SG+GSO, segmented otherwise.
        let f = tcp4(db.mac, da.mac, 65_000);
        let st = da.send_wait(
            &mut fa,
            0,
            &f,
            4096,
            NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED,
            &[gso4(1448)],
        );
        assert_eq!(st.len(), 16);
        assert!(st.iter().all(|&s| s == NETIF_RSP_OKAY));
        if rx_sg {
            let p = db.recv(&mut fb);
            assert_eq!(p.data, f);
            assert_ne!(p.flags & NETRXF_EXTRA_INFO, 0);
            assert_eq!(
                p.flags & (NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED),
                NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED
            );
            assert_eq!(p.extras.len(), 1);
            assert_eq!(p.extras[0].type_, XEN_NETIF_EXTRA_TYPE_GSO);
            assert_eq!(p.extras[0].as_gso().size, 1448);
        } else {
            let mut payload = Vec::new();
            while payload.len() < 65_000 {
                let p = db.recv(&mut fb);
                assert!(p.data.len() <= 1514);
                assert!(tcp4_ok(&p.data), "segment checksums complete");
                assert_eq!(p.flags & NETRXF_EXTRA_INFO, 0);
                payload.extend_from_slice(tcp4_payload(&p.data));
            }
            assert_eq!(payload, tcp4_payload(&f));
        }
        // And back the other way (B → A), a broadcast.
        let f = frame(BCAST, db.mac, 200, 3);
        assert_eq!(db.send_wait(&mut fb, 0, &f, 4096, 0, &[]), [NETIF_RSP_OKAY]);
        assert_eq!(da.recv(&mut fa).data, f);
    }
}

#[test]
fn rx_checksum_completed_for_no_csum_offload_frontend() {
    let (_w, _sw, (_na, da, mut fa), (_nb, db, mut fb)) = pair(
        NetbackConfig::default(),
        Opts::default(),
        Opts {
            no_csum_offload: true,
            ..Opts::default()
        },
    );
    let f = tcp4(db.mac, da.mac, 500);
    da.send_wait(
        &mut fa,
        0,
        &f,
        4096,
        NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED,
        &[],
    );
    let p = db.recv(&mut fb);
    assert_eq!(p.flags & NETRXF_CSUM_BLANK, 0);
    assert!(tcp4_ok(&p.data));
    assert_eq!(tcp4_payload(&p.data), tcp4_payload(&f));
}

/// NB18: each RX response (and the GSO extra) is in the slot of the
/// request it consumed, and carries that request's id.
#[test]
fn nb18_rx_response_in_request_slot() {
    let (_w, _sw, (_na, da, mut fa), (_nb, db, mut fb)) =
        pair(NetbackConfig::default(), Opts::default(), Opts::default());
    // Make the ids differ from the slot indices.
    for _ in 0..3 {
        let f = frame(db.mac, da.mac, 100, 1);
        da.send_wait(&mut fa, 0, &f, 4096, 0, &[]);
        db.recv(&mut fb);
    }
    let f = tcp4(db.mac, da.mac, 10_000);
    da.send_wait(&mut fa, 0, &f, 4096, NETTXF_CSUM_BLANK, &[gso4(1000)]);
    let p = db.recv(&mut fb);
    assert_eq!(p.data, f);
    assert_eq!(p.reqs.len(), 4, "3 data slots + the extra");
    // Slot indices consecutive from the first request, data responses carry
    // their own request's id.
    for w in p.reqs.windows(2) {
        assert_eq!(w[1].0, w[0].0.wrapping_add(1));
    }
    assert_eq!(p.slots[0].id, p.reqs[0].1);
    assert_eq!(p.slots[1].id, p.reqs[2].1);
    assert_eq!(p.slots[2].id, p.reqs[3].1);
}

/// A second vif on the same backend keeps working.
fn bystander_works(da: &Dev, fa: &mut Front, db: &Dev, fb: &mut Front) {
    let f = frame(db.mac, da.mac, 300, 77);
    assert_eq!(da.send_wait(fa, 0, &f, 4096, 0, &[]), [NETIF_RSP_OKAY]);
    assert_eq!(db.recv(fb).data, f);
}

fn req(gref: pvio_abi::GrantRef, offset: u16, size: u16, flags: u16, id: u16) -> TxRequest {
    TxRequest {
        gref,
        offset,
        flags,
        id,
        size,
    }
}

/// A chain of `n` data slots of 20 bytes each.
fn chain(d: &Dev, n: usize) -> Vec<TxRequest> {
    let (_, g) = d.tx_page(0, &[0x55; 4096]);
    (0..n)
        .map(|i| {
            req(
                g,
                0,
                if i == 0 { (n * 20) as u16 } else { 20 },
                if i + 1 < n { NETTXF_MORE_DATA } else { 0 },
                i as u16,
            )
        })
        .collect()
}

#[test]
fn nb1_19_slots_dropped_with_errors_vif_stays_up() {
    let (_w, _sw, (na, da, mut fa), (_nb, db, mut fb)) =
        pair(NetbackConfig::default(), Opts::default(), Opts::default());
    let mut slots = chain(&da, 19);
    slots[0].size = 19 * 20;
    da.raw_tx(&mut fa, 0, &slots);
    let r = da.tx_responses(&mut fa, 0, 19);
    assert!(r.iter().all(|r| r.status == NETIF_RSP_ERROR), "{r:?}");
    assert_eq!(
        r.iter().map(|r| r.id).collect::<Vec<_>>(),
        (0..19).collect::<Vec<u16>>()
    );
    // 18 slots are fine.
    let mut slots = chain(&da, 18);
    slots[0].size = 18 * 20;
    da.raw_tx(&mut fa, 0, &slots);
    let r = da.tx_responses(&mut fa, 0, 18);
    assert!(r.iter().all(|r| r.status == NETIF_RSP_OKAY));
    assert!(!na.stats().broken);
    db.recv(&mut fb);
    bystander_works(&da, &mut fa, &db, &mut fb);
}

/// Sends `slots` from A, expects A disabled, B unaffected.
fn expect_fatal(slots_of: impl FnOnce(&Dev) -> Vec<TxRequest>) {
    let mut w = World::new();
    let sw = Switch::new();
    let cfg = NetbackConfig::default();
    let (na, da) = w.vif(sw_port(&sw), cfg, &[]);
    let (_nb, db) = w.vif(sw_port(&sw), cfg, &[]);
    let (_nc, dc) = w.vif(sw_port(&sw), cfg, &[]);
    let mut fa = da.connect(Opts::default());
    let mut fb = db.connect(Opts::default());
    let mut fc = dc.connect(Opts::default());
    let slots = slots_of(&da);
    da.raw_tx(&mut fa, 0, &slots);
    wait_until("the vif to be disabled", || na.stats().broken);
    let st = na.stats();
    assert!(!st.carrier);
    assert_eq!(st.fatal, 1);
    wait_until("the error key", || {
        da.fe
            .store()
            .read(&da.dev.backend_key("error"))
            .is_ok_and(|e| !e.is_empty())
    });
    // The disabled vif takes nothing more; others keep going.
    // (A's MAC was never learnt: the frame is flooded to C as well.)
    let f = frame(da.mac, db.mac, 100, 1);
    db.send_wait(&mut fb, 0, &f, 4096, 0, &[]);
    assert_eq!(dc.recv(&mut fc).data, f);
    bystander_works(&db, &mut fb, &dc, &mut fc);
    bystander_works(&dc, &mut fc, &db, &mut fb);
    assert!(da.recv_within(&mut fa, Duration::from_millis(50)).is_none());
}

#[test]
fn nb2_20_slots_fatal() {
    expect_fatal(|d| chain(d, 20));
    expect_fatal(|d| chain(d, 40));
}

#[test]
fn nb3_more_data_on_last_available_slot_fatal() {
    expect_fatal(|d| {
        let (_, g) = d.tx_page(0, &[1; 100]);
        vec![req(g, 0, 100, NETTXF_MORE_DATA, 1)]
    });
}

#[test]
fn nb4_offset_plus_size_beyond_page_fatal() {
    expect_fatal(|d| {
        let (_, g) = d.tx_page(0, &[1; 100]);
        vec![req(g, 4000, 200, 0, 1)]
    });
    expect_fatal(|d| {
        let (_, g) = d.tx_page(0, &[1; 100]);
        vec![req(g, 0, 300, NETTXF_MORE_DATA, 1), req(g, 4090, 100, 0, 2)]
    });
}

#[test]
fn nb5_fragment_larger_than_remaining_dropped_not_fatal() {
    let (_w, _sw, (na, da, mut fa), (_nb, db, mut fb)) =
        pair(NetbackConfig::default(), Opts::default(), Opts::default());
    let (_, g) = da.tx_page(0, &[7; 4096]);
    da.raw_tx(
        &mut fa,
        0,
        &[req(g, 0, 100, NETTXF_MORE_DATA, 1), req(g, 0, 200, 0, 2)],
    );
    let r = da.tx_responses(&mut fa, 0, 2);
    assert!(r.iter().all(|r| r.status == NETIF_RSP_ERROR));
    assert!(!na.stats().broken);
    bystander_works(&da, &mut fa, &db, &mut fb);
}

#[test]
fn nb6_first_slot_shorter_than_ethernet_header() {
    let (_w, _sw, (na, da, mut fa), (_nb, db, mut fb)) =
        pair(NetbackConfig::default(), Opts::default(), Opts::default());
    for size in [0u16, 1, 13] {
        let (_, g) = da.tx_page(0, &[7; 64]);
        da.raw_tx(&mut fa, 0, &[req(g, 0, size, 0, 9)]);
        let r = da.tx_responses(&mut fa, 0, 1);
        assert_eq!((r[0].id, r[0].status), (9, NETIF_RSP_ERROR));
    }
    assert!(!na.stats().broken);
    assert!(db.recv_within(&mut fb, Duration::from_millis(20)).is_none());
    bystander_works(&da, &mut fa, &db, &mut fb);
}

#[test]
fn nb7_zero_length_fragments_answered_ok_not_passed_on() {
    let (_w, _sw, (na, da, mut fa), (_nb, db, mut fb)) =
        pair(NetbackConfig::default(), Opts::default(), Opts::default());
    let f = frame(db.mac, da.mac, 60, 5);
    let (_, g) = da.tx_page(0, &f);
    let mut slots = vec![req(g, 0, 60, NETTXF_MORE_DATA, 0)];
    for i in 1..6 {
        slots.push(req(g, 0, 0, if i < 5 { NETTXF_MORE_DATA } else { 0 }, i));
    }
    da.raw_tx(&mut fa, 0, &slots);
    let r = da.tx_responses(&mut fa, 0, 6);
    assert!(r.iter().all(|r| r.status == NETIF_RSP_OKAY));
    assert_eq!(db.recv(&mut fb).data, f);
    assert!(!na.stats().broken);
}

#[test]
fn nb8_headers_split_one_byte_per_slot_linearised() {
    let (_w, _sw, (_na, da, mut fa), (_nb, db, mut fb)) =
        pair(NetbackConfig::default(), Opts::default(), Opts::default());
    // Head of 110 bytes, then 17 one-byte slots: 18 slots, 127 bytes.
    let f = frame(db.mac, da.mac, 127, 11);
    let mut slots = Vec::new();
    let (_, g) = da.tx_page(0, &f[..110]);
    slots.push(req(g, 0, 127, NETTXF_MORE_DATA, 0));
    for i in 0..17 {
        let (_, g) = da.tx_page(100 + i, &f[110 + i..111 + i]);
        slots.push(req(
            g,
            (100 + i) as u16,
            1,
            if i < 16 { NETTXF_MORE_DATA } else { 0 },
            i as u16 + 1,
        ));
    }
    da.raw_tx(&mut fa, 0, &slots);
    let r = da.tx_responses(&mut fa, 0, 18);
    assert!(r.iter().all(|r| r.status == NETIF_RSP_OKAY));
    assert_eq!(db.recv(&mut fb).data, f);
}

#[test]
fn nb9_bad_extra_type_or_dangling_more_fatal() {
    for t in [0u8, 5, 255] {
        expect_fatal(|d| {
            let (_, g) = d.tx_page(0, &[1; 100]);
            vec![
                req(g, 0, 100, NETTXF_EXTRA_INFO, 1),
                extra_slot(ExtraInfo::new(t, [0; 3])),
            ]
        });
    }
    expect_fatal(|d| {
        let (_, g) = d.tx_page(0, &[1; 100]);
        vec![
            req(g, 0, 100, NETTXF_EXTRA_INFO, 1),
            extra_slot(gso4(1000).with_more(true)),
        ]
    });
}

#[test]
fn nb10_gso_size_zero_or_unknown_type_fatal() {
    expect_fatal(|d| {
        let (_, g) = d.tx_page(0, &[1; 100]);
        vec![req(g, 0, 100, NETTXF_EXTRA_INFO, 1), extra_slot(gso4(0))]
    });
    expect_fatal(|d| {
        let (_, g) = d.tx_page(0, &[1; 100]);
        let e = ExtraInfo::gso(ExtraGso {
            size: 1000,
            type_: 9,
            pad: 0,
            features: 0,
        });
        vec![req(g, 0, 100, NETTXF_EXTRA_INFO, 1), extra_slot(e)]
    });
}

#[test]
fn nb11_65th_multicast_add_gets_error_and_filter_applies() {
    let (_w, _sw, (_na, da, mut fa), (nb, db, mut fb)) = pair(
        NetbackConfig::default(),
        Opts::default(),
        Opts {
            mcast_control: true,
            ..Opts::default()
        },
    );
    let (_, g) = db.tx_page(0, &[0; 64]);
    for i in 0..65u8 {
        let addr = [0x01, 0x00, 0x5e, 0, 1, i];
        db.raw_tx(
            &mut fb,
            0,
            &[
                req(g, 0, 0, NETTXF_EXTRA_INFO, u16::from(i)),
                extra_slot(ExtraInfo::mcast(true, addr)),
            ],
        );
        let r = db.tx_responses(&mut fb, 0, 2);
        assert_eq!(r[0].id, u16::from(i));
        assert_eq!(r[1].status, NETIF_RSP_NULL);
        let want = if i < 64 {
            NETIF_RSP_OKAY
        } else {
            NETIF_RSP_ERROR
        };
        assert_eq!(r[0].status, want, "add #{}", i + 1);
    }
    // Subscribed group passes, others are filtered.
    let f = frame([0x01, 0x00, 0x5e, 0, 1, 3], da.mac, 100, 1);
    da.send_wait(&mut fa, 0, &f, 4096, 0, &[]);
    assert_eq!(db.recv(&mut fb).data, f);
    let f = frame([0x01, 0x00, 0x5e, 0, 2, 3], da.mac, 100, 1);
    da.send_wait(&mut fa, 0, &f, 4096, 0, &[]);
    wait_until("the filter", || nb.stats().rx_filtered >= 1);
    // Delete one: room for another.
    db.raw_tx(
        &mut fb,
        0,
        &[
            req(g, 0, 0, NETTXF_EXTRA_INFO, 1),
            extra_slot(ExtraInfo::mcast(false, [0x01, 0x00, 0x5e, 0, 1, 0])),
            req(g, 0, 0, NETTXF_EXTRA_INFO, 2),
            extra_slot(ExtraInfo::mcast(true, [0x01, 0x00, 0x5e, 0, 9, 9])),
        ],
    );
    let r = db.tx_responses(&mut fb, 0, 4);
    assert_eq!((r[0].status, r[2].status), (NETIF_RSP_OKAY, NETIF_RSP_OKAY));
}

/// NB12: with `rate` = "1000,100000" a flood goes no faster than the
/// credit (an upper bound: a slow machine only makes it looser); a
/// malformed rate means unlimited plus a warning; a 64 KiB packet passes a
/// small credit.
#[test]
fn nb12_credit_scheduler() {
    let mut w = World::new();
    let sw = Switch::new();
    let cfg = NetbackConfig::default();
    let (na, da) = w.vif(sw_port(&sw), cfg, &[("rate", "1000,100000")]);
    let (nb, db) = w.vif(sw_port(&sw), cfg, &[]);
    let (nc, dc) = w.vif(sw_port(&sw), cfg, &[("rate", "lots")]);
    let (nd, dd) = w.vif(sw_port(&sw), cfg, &[("rate", "1000,5000")]);
    let mut fa = da.connect(Opts::default());
    let mut fb = db.connect(Opts {
        rx_bufs: 200,
        ..Opts::default()
    });
    let mut fc = dc.connect(Opts::default());
    let mut fd = dd.connect(Opts::default());
    // Flood: 20 packets of 250 bytes = 5000 bytes, 5 windows of credit.
    let start = Instant::now();
    let mut pages = Vec::new();
    for i in 0..20 {
        let f = frame(db.mac, da.mac, 250, i);
        let (_, p) = da.send(&mut fa, 0, &f, 4096, 0, &[]);
        pages.extend(p);
    }
    let mut got = 0usize;
    while got < 20 {
        let p = db.recv(&mut fb);
        if p.data[6..12] == da.mac {
            got += 1;
            let elapsed = start.elapsed();
            // The initial credit, a refill at once (the window started at
            // connect), and one per window since.
            let windows = (elapsed.as_micros() / 100_000) as usize + 2;
            assert!(
                got * 250 <= windows * 1000,
                "{got} packets in {elapsed:?} exceed the credit"
            );
        }
    }
    da.tx_responses(&mut fa, 0, 20);
    da.free_pages(&pages);
    assert!(na.stats().credit_waits > 0);
    assert_eq!(na.stats().warnings, 0);
    // Malformed: unlimited, warned.
    assert_eq!(nc.stats().warnings, 1);
    for i in 0..20 {
        let f = frame(db.mac, dc.mac, 1000, i);
        dc.send_wait(&mut fc, 0, &f, 4096, 0, &[]);
        db.recv(&mut fb);
    }
    assert_eq!(nc.stats().credit_waits, 0);
    // 64 KiB through a 1000-byte credit.
    let f = tcp4(db.mac, dd.mac, 65_000);
    let st = dd.send_wait(&mut fd, 0, &f, 4096, NETTXF_CSUM_BLANK, &[gso4(1448)]);
    assert!(st.iter().all(|&s| s == NETIF_RSP_OKAY));
    assert_eq!(db.recv(&mut fb).data, f);
    assert!(nd.stats().credit_waits > 0);
    let _ = nb;
}

fn stall_cfg() -> NetbackConfig {
    NetbackConfig {
        rx_stall_timeout: Duration::from_millis(200),
        rx_queue_len: 32,
        ..NetbackConfig::default()
    }
}

/// NB13: a guest that never posts RX buffers: the queue stays capped,
/// drops are counted, the carrier goes off after the stall timeout, and
/// comes back when buffers appear.
#[test]
fn nb13_no_rx_buffers_stall_detected() {
    let (_w, _sw, (_na, da, mut fa), (nb, db, mut fb)) = pair(
        stall_cfg(),
        Opts::default(),
        Opts {
            rx_bufs: 0,
            ..Opts::default()
        },
    );
    for i in 0..100 {
        let f = frame(db.mac, da.mac, 200, i);
        da.send_wait(&mut fa, 0, &f, 4096, 0, &[]);
    }
    wait_until("the stall", || nb.stats().rx_stalls >= 1);
    let st = nb.stats();
    assert!(!st.carrier);
    assert!(st.rx_dropped >= 100 - 32, "{st:?}");
    assert!(!st.broken);
    // Buffers come: carrier back, traffic flows.
    db.post_rx(&mut fb, 0, 64);
    wait_until("the carrier", || nb.stats().carrier);
    let f = frame(db.mac, da.mac, 200, 200);
    da.send_wait(&mut fa, 0, &f, 4096, 0, &[]);
    assert_eq!(db.recv(&mut fb).data, f);
}

/// NB13, by bytes: a guest that does not read holds at most
/// `rx_queue_bytes` of frames (here 16 KiB: two 9000-byte frames fit the
/// count cap of 32 but not the byte cap), the rest dropped and counted.
#[test]
fn nb13_rx_backlog_capped_by_bytes() {
    let cfg = NetbackConfig {
        rx_queue_bytes: 16 << 10,
        ..stall_cfg()
    };
    let (_w, _sw, (_na, da, mut fa), (nb, db, mut fb)) = pair(
        cfg,
        Opts::default(),
        Opts {
            rx_bufs: 0,
            ..Opts::default()
        },
    );
    for i in 0..6 {
        let f = frame(db.mac, da.mac, 9000, i);
        da.send_wait(&mut fa, 0, &f, 4096, 0, &[]);
    }
    wait_until("the drops", || nb.stats().rx_dropped >= 5);
    let st = nb.stats();
    assert_eq!(
        st.rx_dropped, 5,
        "one 9000-byte frame fits in 16 KiB: {st:?}"
    );
    // Buffers come: the queued frame is delivered.
    db.post_rx(&mut fb, 0, 64);
    let got = db.recv(&mut fb);
    assert_eq!(got.data, frame(db.mac, da.mac, 9000, 0));
}

/// Small packets for a vif go straight into its posted buffers from the
/// delivering thread while nothing is queued before them (no RX thread
/// hand-off); once some wait for buffers, later ones queue behind them, and
/// every packet arrives in the order sent. Large ones go to the RX thread.
#[test]
fn rx_direct_fill_and_backlog_keep_order() {
    let (_w, sw, (_na, da, mut fa), (nb, db, mut fb)) = pair(
        NetbackConfig::default(),
        Opts::default(),
        Opts {
            rx_bufs: 2,
            ..Opts::default()
        },
    );
    let f = |i: u8| frame(db.mac, da.mac, 200, i);
    let send = |fa: &mut Front, i: u8| {
        assert_eq!(da.send_wait(fa, 0, &f(i), 4096, 0, &[]), [NETIF_RSP_OKAY]);
    };
    // Two buffers posted, nothing queued: written by A's TX thread.
    for i in 0..2 {
        send(&mut fa, i);
    }
    wait_until("two written", || nb.stats().rx_packets == 2);
    assert_eq!(nb.stats().rx_direct, 2);
    // No buffers left: these wait in the backlog.
    for i in 2..6 {
        send(&mut fa, i);
    }
    wait_until("six routed", || sw.stats().frames == 6);
    // Reading re-posts buffers one by one while more frames come: each new
    // frame finds the backlog ahead of it.
    for i in 0..6 {
        assert_eq!(db.recv(&mut fb).data, f(i), "frame {i}");
        send(&mut fa, 6 + i);
    }
    for i in 6..12 {
        assert_eq!(db.recv(&mut fb).data, f(i), "frame {i}");
    }
    // Drained: with room posted, the next ones are written directly again.
    db.post_rx(&mut fb, 0, 4);
    let direct = nb.stats().rx_direct;
    for i in 12..16 {
        send(&mut fa, i);
    }
    wait_until("sixteen written", || nb.stats().rx_packets == 16);
    assert_eq!(nb.stats().rx_direct, direct + 4);
    for i in 12..16 {
        assert_eq!(db.recv(&mut fb).data, f(i), "frame {i}");
    }
    // A large frame is left to the RX thread (its copy runs beside the
    // sender's next one).
    let big = frame(db.mac, da.mac, 3000, 16);
    assert_eq!(
        da.send_wait(&mut fa, 0, &big, 4096, 0, &[]),
        [NETIF_RSP_OKAY]
    );
    assert_eq!(db.recv(&mut fb).data, big);
    let st = nb.stats();
    assert_eq!((st.rx_direct, st.rx_packets), (direct + 4, 17), "{st:?}");
    assert_eq!(st.rx_dropped, 0);
}

/// Three vifs' TX threads deliver to one RX queue at once, with few
/// buffers posted: deliverers race for the ring, fill from each other's
/// backlog, and leave the rest to the RX thread. Every frame arrives, each
/// sender's in the order sent.
#[test]
fn concurrent_deliverers_lose_and_reorder_nothing() {
    const N: usize = 400;
    let mut w = World::new();
    let sw = Switch::new();
    let cfg = NetbackConfig::default();
    let senders: Vec<_> = (0..3)
        .map(|_| {
            let (nb, d) = w.vif(sw_port(&sw), cfg, &[]);
            let f = d.connect(Opts::default());
            (nb, d, f)
        })
        .collect();
    let (nb, db, mut fb) = {
        let (nb, d) = w.vif(sw_port(&sw), cfg, &[]);
        let f = d.connect(Opts {
            rx_bufs: 8,
            ..Opts::default()
        });
        (nb, d, f)
    };
    // B's address is learnt before the senders start.
    let f = frame(BCAST, db.mac, 60, 0);
    assert_eq!(db.send_wait(&mut fb, 0, &f, 4096, 0, &[]), [NETIF_RSP_OKAY]);
    wait_until("B learnt", || sw.stats().flooded >= 1);
    let macs: Vec<[u8; 6]> = senders.iter().map(|(_, d, _)| d.mac).collect();
    let mut senders = senders;
    std::thread::scope(|s| {
        for (_, d, f) in senders.iter_mut() {
            let (d, dst) = (&*d, db.mac);
            s.spawn(move || {
                for i in 0..N {
                    let fr = frame(dst, d.mac, 200, i as u8);
                    assert_eq!(d.send_wait(f, 0, &fr, 4096, 0, &[]), [NETIF_RSP_OKAY]);
                }
            });
        }
        let mut next = [0usize; 3];
        for _ in 0..3 * N {
            let p = db.recv(&mut fb);
            let src: [u8; 6] = p.data[6..12].try_into().unwrap();
            let k = macs
                .iter()
                .position(|m| *m == src)
                .expect("a sender's frame");
            let want = frame(db.mac, src, 200, next[k] as u8);
            assert_eq!(p.data, want, "sender {k}, frame {}", next[k]);
            next[k] += 1;
        }
    });
    let st = nb.stats();
    assert_eq!((st.rx_packets, st.rx_dropped), (3 * N as u64, 0), "{st:?}");
}

/// NB14: one free RX slot while each packet needs three.
#[test]
fn nb14_one_free_slot_for_two_slot_packets_stall_detected() {
    let (_w, _sw, (_na, da, mut fa), (nb, db, mut fb)) = pair(
        stall_cfg(),
        Opts::default(),
        Opts {
            rx_bufs: 1,
            ..Opts::default()
        },
    );
    for i in 0..5 {
        let f = frame(db.mac, da.mac, 9000, i);
        da.send_wait(&mut fa, 0, &f, 4096, 0, &[]);
    }
    wait_until("the stall", || nb.stats().rx_stalls >= 1);
    assert!(!nb.stats().carrier);
    assert!(db.recv_within(&mut fb, Duration::from_millis(10)).is_none());
}

/// NB16: fragment k of n revoked before the copy: errors for the whole
/// packet, nothing passed on.
#[test]
fn nb16_revoked_fragment_fails_whole_packet() {
    let (_w, _sw, (na, da, mut fa), (_nb, db, mut fb)) =
        pair(NetbackConfig::default(), Opts::default(), Opts::default());
    let f = frame(db.mac, da.mac, 3 * 1000, 1);
    let pages: Vec<_> = (0..3)
        .map(|i| da.tx_page(0, &f[i * 1000..(i + 1) * 1000]))
        .collect();
    da.fe.end_access(pages[1].1).unwrap();
    let mut slots = Vec::new();
    for (i, &(_, g)) in pages.iter().enumerate() {
        slots.push(req(
            g,
            0,
            if i == 0 { 3000 } else { 1000 },
            if i < 2 { NETTXF_MORE_DATA } else { 0 },
            i as u16,
        ));
    }
    da.raw_tx(&mut fa, 0, &slots);
    let r = da.tx_responses(&mut fa, 0, 3);
    assert!(r.iter().all(|r| r.status == NETIF_RSP_ERROR), "{r:?}");
    assert!(db.recv_within(&mut fb, Duration::from_millis(20)).is_none());
    assert!(!na.stats().broken);
    bystander_works(&da, &mut fa, &db, &mut fb);
}

#[test]
fn multi_queue_split_event_channels() {
    for split in [false, true] {
        let o = Opts {
            queues: 4,
            split,
            ..Opts::default()
        };
        let (_w, _sw, (na, da, mut fa), (nb, db, mut fb)) = pair(NetbackConfig::default(), o, o);
        assert_eq!((na.stats().queues, na.stats().split), (4, split));
        let mut seen = std::collections::HashSet::new();
        for i in 0..64u16 {
            let qi = usize::from(i % 4);
            let mut f = tcp4(db.mac, da.mac, 100 + usize::from(i));
            f[34..36].copy_from_slice(&(1000 + i).to_be_bytes()); // new flow
            let st = da.send_wait(&mut fa, qi, &f, 4096, NETTXF_CSUM_BLANK, &[]);
            assert_eq!(st, [NETIF_RSP_OKAY]);
            let p = db.recv(&mut fb);
            assert_eq!(p.data, f);
            seen.insert(p.queue);
        }
        assert!(seen.len() > 1, "flows spread over RX queues: {seen:?}");
        assert_eq!(na.stats().tx_packets, 64);
        assert_eq!(nb.stats().rx_packets, 64);
    }
}

/// C3: bad frontend keys are refused: backend Closing, error written,
/// nothing mapped.
#[test]
fn c3_bad_keys_refused() {
    type Case = (&'static str, fn(&Dev));
    let cases: [Case; 4] = [
        ("no request-rx-copy", |d| {
            d.fe.store()
                .write(&d.dev.frontend_key("request-rx-copy"), b"0")
                .unwrap();
        }),
        ("too many queues", |d| {
            d.fe.store()
                .write(&d.dev.frontend_key("multi-queue-num-queues"), b"9")
                .unwrap();
        }),
        ("zero queues", |d| {
            d.fe.store()
                .write(&d.dev.frontend_key("multi-queue-num-queues"), b"0")
                .unwrap();
        }),
        ("missing rx-ring-ref", |d| {
            d.fe.store().rm(&d.dev.frontend_key("rx-ring-ref")).unwrap();
        }),
    ];
    for (what, spoil) in cases {
        let mut w = World::new();
        let sw = Switch::new();
        let (nb, d) = w.vif(sw_port(&sw), NetbackConfig::default(), &[]);
        let _f = d.write_keys(Opts::default());
        spoil(&d);
        let xs = d.fe.store();
        switch_state(&xs, &d.dev.frontend, XenbusState::Connected).unwrap();
        wait_for_state(&xs, &d.dev.backend, GUARD, |s| s == XenbusState::Closing)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(w.be.live_mappings(), 0, "{what}");
        assert_eq!(nb.stats().refused, 1, "{what}");
        assert!(xs.read(&d.dev.backend_key("error")).is_ok());
    }
}

/// C4: Connected → Initialising → Connected reconnects cleanly; a repeated
/// Connected changes nothing; a closed frontend leaves nothing mapped.
#[test]
fn c4_reconnect_idempotent() {
    let mut w = World::new();
    let sw = Switch::new();
    let (na, da) = w.vif(sw_port(&sw), NetbackConfig::default(), &[]);
    let (_nb, db) = w.vif(sw_port(&sw), NetbackConfig::default(), &[]);
    let mut fb = db.connect(Opts::default());
    for round in 0..5 {
        let mut fa = da.connect(Opts {
            queues: 1 + round % 2,
            split: round % 2 == 1,
            ..Opts::default()
        });
        let xs = da.fe.store();
        // Repeated Connected: nothing happens.
        xs.write(&da.dev.frontend_key("state"), b"4").unwrap();
        bystander_works(&da, &mut fa, &db, &mut fb);
        bystander_works(&db, &mut fb, &da, &mut fa);
        assert_eq!(na.stats().connects, u64::from(round) + 1);
        switch_state(&xs, &da.dev.frontend, XenbusState::Initialising).unwrap();
        wait_for_state(&xs, &da.dev.backend, GUARD, |s| s == XenbusState::InitWait).unwrap();
        wait_until("the unmap", || {
            na.stats().disconnects == u64::from(round) + 1
        });
        for g in &fa.rings {
            da.fe.end_access(*g).unwrap();
        }
    }
    da.close();
    assert_eq!(na.stats().disconnects, 5);
}

/// A fatal fault disables only this connection: after the frontend
/// reconnects, the vif works again.
#[test]
fn broken_vif_recovers_on_reconnect() {
    let (_w, _sw, (na, da, mut fa), (_nb, db, mut fb)) =
        pair(NetbackConfig::default(), Opts::default(), Opts::default());
    let (_, g) = da.tx_page(0, &[1; 100]);
    da.raw_tx(&mut fa, 0, &[req(g, 4000, 200, 0, 1)]);
    wait_until("the vif to be disabled", || na.stats().broken);
    let xs = da.fe.store();
    switch_state(&xs, &da.dev.frontend, XenbusState::Initialising).unwrap();
    let mut fa = da.connect(Opts::default());
    assert!(!na.stats().broken);
    bystander_works(&da, &mut fa, &db, &mut fb);
}

/// The frontend domain disappears: the backend releases its mappings.
#[test]
fn frontend_disappears_backend_releases_everything() {
    let (w, _sw, (_na, da, mut fa), (_nb, db, mut fb)) =
        pair(NetbackConfig::default(), Opts::default(), Opts::default());
    bystander_works(&da, &mut fa, &db, &mut fb);
    let before = w.be.live_mappings();
    assert!(before >= 4);
    w.hv.destroy_domain(da.fe.id()).unwrap();
    wait_until("the unmap", || w.be.live_mappings() <= before - 2);
    let f = frame(BCAST, db.mac, 100, 1);
    db.send_wait(&mut fb, 0, &f, 4096, 0, &[]);
}

/// R1 (netback's "impossible number of requests"): a TX or RX `req_prod`
/// beyond the ring disables this vif only.
#[test]
fn r1_bogus_req_prod_disables_vif_only() {
    use pvio_shmem::{Ordering, SharedMem};
    for rx in [false, true] {
        let (_w, _sw, (na, da, fa), (_nb, db, mut fb)) =
            pair(NetbackConfig::default(), Opts::default(), Opts::default());
        if rx {
            let prod = fa.q[0].rx.indices().0;
            fa.q[0]
                .rx
                .mem()
                .store_u32(0, prod.wrapping_add(300), Ordering::Release)
                .unwrap();
            // Give the RX thread something to do.
            let f = frame(da.mac, db.mac, 100, 1);
            db.send_wait(&mut fb, 0, &f, 4096, 0, &[]);
        } else {
            fa.q[0]
                .tx
                .mem()
                .store_u32(0, 257, Ordering::Release)
                .unwrap();
            da.fe.events().send(fa.q[0].tx_port).unwrap();
        }
        wait_until("the vif to be disabled", || na.stats().broken);
        assert!(!na.stats().carrier);
        // The other vif still transmits.
        let f = frame(BCAST, db.mac, 60, 2);
        assert_eq!(db.send_wait(&mut fb, 0, &f, 4096, 0, &[]), [NETIF_RSP_OKAY]);
    }
}
