//! netfront against a well-behaved backend written in the test: the
//! handshake keys, TX and RX of every size, RX refill, flow hashing.

mod common;

use std::time::Duration;

use common::*;
use pvio_abi::netif::{
    ExtraGso, NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED,
    NETTXF_EXTRA_INFO, NETTXF_MORE_DATA, XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6,
};
use pvio_netfront::{Gso, GsoKind, NetError, NetfrontConfig, Packet, flow_hash, queue_for};
use pvio_xenbus::device::{read_opt, read_state};

fn key(fx: &Fixture, k: &str) -> Option<String> {
    read_opt(&fx.dom0.store(), &fx.dev.frontend_key(k))
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

#[test]
fn handshake_keys_single_queue_all_features() {
    let (fx, f, _b) = setup(
        &[("mac", "00:16:3e:01:02:03")],
        NetfrontConfig { queues: 1, ..cfg() },
    );
    let k = |n: &str| key(&fx, n);
    assert!(k("tx-ring-ref").is_some() && k("rx-ring-ref").is_some());
    assert!(k("event-channel").is_none(), "split channels replace it");
    assert!(k("event-channel-tx").is_some() && k("event-channel-rx").is_some());
    assert_ne!(k("event-channel-tx"), k("event-channel-rx"));
    assert_eq!(k("request-rx-copy").as_deref(), Some("1"));
    assert_eq!(k("feature-rx-notify").as_deref(), Some("1"));
    assert_eq!(k("feature-sg").as_deref(), Some("1"));
    assert_eq!(k("feature-gso-tcpv4").as_deref(), Some("1"));
    assert_eq!(k("feature-gso-tcpv6").as_deref(), Some("1"));
    assert_eq!(k("feature-no-csum-offload").as_deref(), Some("0"));
    assert_eq!(k("feature-ipv6-csum-offload").as_deref(), Some("1"));
    // The backend advertises multi-queue: the count is written, as Linux does.
    assert_eq!(k("multi-queue-num-queues").as_deref(), Some("1"));
    assert!(k("queue-0/tx-ring-ref").is_none());
    assert_eq!(
        read_state(&fx.dom0.store(), &fx.dev.frontend),
        pvio_abi::xenbus::XenbusState::Connected
    );
    let i = f.info();
    assert_eq!(i.mac, [0x00, 0x16, 0x3e, 1, 2, 3]);
    assert_eq!(i.mtu, 1500);
    assert!(i.sg && i.gso_tcpv4 && i.gso_tcpv6 && i.ipv6_csum_offload);
    assert!(i.split_event_channels && i.rx_notify && i.trusted);
    assert_eq!(i.queues, 1);
}

#[test]
fn handshake_keys_every_feature_off() {
    let fx = domains(&[]);
    let (f, _b) = connect(
        &fx,
        ALL,
        NetfrontConfig {
            sg: false,
            gso_tcpv4: false,
            gso_tcpv6: false,
            csum_offload: false,
            ipv6_csum_offload: false,
            split_event_channels: false,
            rx_notify: false,
            ..cfg()
        },
    );
    let f = f.unwrap();
    let k = |n: &str| key(&fx, n);
    assert!(k("event-channel").is_some());
    assert!(k("event-channel-tx").is_none() && k("event-channel-rx").is_none());
    assert_eq!(k("request-rx-copy").as_deref(), Some("1"));
    assert_eq!(k("feature-rx-notify").as_deref(), Some("0"));
    assert_eq!(k("feature-sg").as_deref(), Some("0"));
    assert_eq!(k("feature-gso-tcpv4").as_deref(), Some("0"));
    assert_eq!(k("feature-gso-tcpv6").as_deref(), Some("0"));
    assert_eq!(k("feature-no-csum-offload").as_deref(), Some("1"));
    assert_eq!(k("feature-ipv6-csum-offload").as_deref(), Some("0"));
    let i = f.info();
    assert!(!i.sg && !i.gso_tcpv4 && !i.gso_tcpv6 && !i.ipv6_csum_offload);
    assert!(!i.split_event_channels && !i.rx_notify);
    // No MAC from the toolstack: a locally administered unicast one.
    assert_eq!(i.mac[0] & 0x03, 0x02);
}

#[test]
fn handshake_minimal_backend_negotiates_everything_off() {
    let fx = domains(&[("mtu", "9000")]);
    let (f, _b) = connect(&fx, MINIMAL, cfg());
    let f = f.unwrap();
    let i = f.info();
    assert!(!i.sg && !i.gso_tcpv4 && !i.gso_tcpv6 && !i.ipv6_csum_offload);
    assert!(!i.split_event_channels);
    assert_eq!((i.queues, i.mtu), (1, 9000));
    let k = |n: &str| key(&fx, n);
    assert!(k("event-channel").is_some());
    assert!(
        k("multi-queue-num-queues").is_none(),
        "backend has no multi-queue"
    );
    // The frontend still advertises what it accepts on RX.
    assert_eq!(k("feature-sg").as_deref(), Some("1"));
}

#[test]
fn handshake_multi_queue_keys_with_and_without_split_channels() {
    for split in [true, false] {
        let fx = domains(&[]);
        let (f, b) = connect(
            &fx,
            ALL,
            NetfrontConfig {
                queues: 3,
                split_event_channels: split,
                ..cfg()
            },
        );
        let f = f.unwrap();
        assert_eq!(f.info().queues, 3);
        assert_eq!(b.unwrap().queues.len(), 3);
        let k = |n: &str| key(&fx, n);
        assert_eq!(k("multi-queue-num-queues").as_deref(), Some("3"));
        assert!(k("tx-ring-ref").is_none() && k("event-channel").is_none());
        for q in 0..3 {
            assert!(k(&format!("queue-{q}/tx-ring-ref")).is_some());
            assert!(k(&format!("queue-{q}/rx-ring-ref")).is_some());
            assert_eq!(k(&format!("queue-{q}/event-channel")).is_some(), !split);
            assert_eq!(k(&format!("queue-{q}/event-channel-tx")).is_some(), split);
            assert_eq!(k(&format!("queue-{q}/event-channel-rx")).is_some(), split);
        }
        assert!(k("queue-3/tx-ring-ref").is_none());
    }
}

#[test]
fn handshake_queue_count_bounded_by_backend() {
    let fx = domains(&[]);
    let (f, _b) = connect(
        &fx,
        &[("feature-rx-copy", "1"), ("multi-queue-max-queues", "2")],
        NetfrontConfig { queues: 8, ..cfg() },
    );
    assert_eq!(f.unwrap().info().queues, 2);
}

#[test]
fn handshake_refused_without_rx_copy_and_bad_mac() {
    let fx = domains(&[]);
    let (f, _b) = connect(
        &fx,
        &[("feature-sg", "1")],
        NetfrontConfig {
            timeout: Duration::from_millis(300),
            ..cfg()
        },
    );
    assert!(matches!(f, Err(NetError::Unsupported(_))), "{f:?}");
    let fx = domains(&[("mac", "not-a-mac")]);
    let (f, _b) = connect(
        &fx,
        ALL,
        NetfrontConfig {
            timeout: Duration::from_millis(300),
            ..cfg()
        },
    );
    assert!(matches!(f, Err(NetError::Store(_))), "{f:?}");
}

#[test]
fn backend_that_never_appears_times_out() {
    let fx = domains(&[]);
    let f = pvio_netfront::Netfront::connect(
        fx.fe.clone(),
        fx.dev.clone(),
        NetfrontConfig {
            timeout: Duration::from_millis(100),
            ..cfg()
        },
    );
    assert!(matches!(f, Err(NetError::Disconnected(_))));
}

#[test]
fn tx_sizes_byte_exact_with_sg() {
    let (_fx, mut f, mut b) = setup(&[], cfg());
    let mut rng = Rng(1);
    for len in [14, 60, 61, 1514, 4095, 4096, 4097, 8192, 9000, 40000, 65535] {
        let data = frame(&mut rng, len);
        f.send(Packet::new(data.clone())).unwrap();
        let p = b.echo_tx(0);
        assert_eq!(p.data, data, "len {len}");
        assert_eq!(p.reqs.len(), len.div_ceil(4096), "slots for {len}");
        assert_eq!(usize::from(p.reqs[0].size), len);
        for (i, r) in p.reqs.iter().enumerate() {
            let last = i + 1 == p.reqs.len();
            assert_eq!(r.flags & NETTXF_MORE_DATA != 0, !last);
        }
    }
    // Responses free every slot.
    let _ = f.wait(Duration::from_millis(1));
    let _ = f.recv();
    assert_eq!(f.tx_in_flight(), 0);
    assert_eq!(f.stats().tx_packets, 11);
}

#[test]
fn tx_gso_64k_frames_carry_the_extra_and_flags() {
    let (_fx, mut f, mut b) = setup(&[], cfg());
    let mut rng = Rng(2);
    for (kind, t) in [
        (GsoKind::TcpV4, XEN_NETIF_GSO_TYPE_TCPV4),
        (GsoKind::TcpV6, XEN_NETIF_GSO_TYPE_TCPV6),
    ] {
        let data = tcp4(&mut rng, 65535, 1234, 80);
        f.send(Packet {
            data: data.clone().into(),
            csum_blank: true,
            data_validated: false,
            gso: Some(Gso { kind, size: 1448 }),
        })
        .unwrap();
        let p = b.echo_tx(0);
        assert_eq!(p.data, data);
        assert_eq!(p.reqs.len(), 16);
        let fl = p.flags();
        assert_ne!(fl & NETTXF_EXTRA_INFO, 0);
        assert_ne!(fl & NETTXF_CSUM_BLANK, 0);
        assert_ne!(fl & NETTXF_DATA_VALIDATED, 0);
        let g = p.gso().unwrap();
        assert_eq!((g.size, g.type_), (1448, t));
        assert_eq!(p.extras.len(), 1);
        for r in &p.reqs[1..] {
            assert_eq!(r.flags & !NETTXF_MORE_DATA, 0, "flags only on the first");
        }
    }
    let _ = f.wait(Duration::from_millis(1));
    assert_eq!(f.tx_in_flight(), 0);
}

#[test]
fn tx_without_sg_sends_single_slots_and_rejects_larger() {
    let fx = domains(&[]);
    let (f, b) = connect(&fx, ALL, NetfrontConfig { sg: false, ..cfg() });
    let (mut f, mut b) = (f.unwrap(), b.unwrap());
    let mut rng = Rng(3);
    for len in [60, 1514, 4096] {
        let data = frame(&mut rng, len);
        f.send(Packet::new(data.clone())).unwrap();
        let p = b.echo_tx(0);
        assert_eq!((p.data, p.reqs.len()), (data, 1));
    }
    let big = frame(&mut rng, 4097);
    assert_eq!(f.send(Packet::new(big)), Err(NetError::TooLarge(4097)));
    // GSO needs SG.
    let g = Packet {
        data: tcp4(&mut rng, 3000, 1, 2).into(),
        csum_blank: true,
        data_validated: false,
        gso: Some(Gso {
            kind: GsoKind::TcpV4,
            size: 1000,
        }),
    };
    assert!(matches!(f.send(g), Err(NetError::Unsupported(_))));
    // Nothing half-sent.
    assert!(b.try_next_tx(0).is_none());
    assert!(f.broken().is_none());
}

#[test]
fn tx_rejects_malformed_frames() {
    let (_fx, mut f, mut b) = setup(&[], cfg());
    assert!(matches!(
        f.send(Packet::new(vec![0u8; 13])),
        Err(NetError::Invalid(_))
    ));
    assert_eq!(
        f.send(Packet::new(vec![0u8; 65536])),
        Err(NetError::TooLarge(65536))
    );
    let g = Packet {
        data: vec![0u8; 100].into(),
        gso: Some(Gso {
            kind: GsoKind::TcpV4,
            size: 0,
        }),
        ..Packet::default()
    };
    assert!(matches!(f.send(g), Err(NetError::Invalid(_))));
    assert!(b.try_next_tx(0).is_none());
}

#[test]
fn tx_checksum_flags_and_ipv6_completion_without_offload() {
    let fx = domains(&[]);
    let (f, b) = connect(&fx, MINIMAL, cfg());
    let (mut f, mut b) = (f.unwrap(), b.unwrap());
    let mut rng = Rng(4);
    // IPv4 partial checksum: offloaded (the default for IPv4).
    let d4 = tcp4(&mut rng, 200, 5, 6);
    f.send(Packet {
        data: d4.clone().into(),
        csum_blank: true,
        ..Packet::default()
    })
    .unwrap();
    let p = b.echo_tx(0);
    assert_eq!(p.flags(), NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED);
    assert_eq!(p.data, d4);
    // Validated only.
    f.send(Packet {
        data: d4.clone().into(),
        data_validated: true,
        ..Packet::default()
    })
    .unwrap();
    assert_eq!(b.echo_tx(0).flags(), NETTXF_DATA_VALIDATED);
    // IPv6 partial checksum, backend without IPv6 offload: completed here.
    let d6 = udp6(&mut rng, 300);
    f.send(Packet {
        data: d6.clone().into(),
        csum_blank: true,
        ..Packet::default()
    })
    .unwrap();
    let p = b.echo_tx(0);
    assert_eq!(p.flags() & NETTXF_CSUM_BLANK, 0);
    let mut expect = d6.clone();
    assert!(pvio_netfront::complete_checksum(&mut expect));
    assert_eq!(p.data, expect);
    assert_ne!(p.data[54 + 6..54 + 8], d6[54 + 6..54 + 8]);
}

#[test]
fn tx_batch_fills_the_ring_and_waits_for_room() {
    let (_fx, mut f, b) = setup(&[], cfg());
    let mut rng = Rng(5);
    let frames: Vec<Vec<u8>> = (0..600).map(|i| frame(&mut rng, 60 + i % 1400)).collect();
    let expect = frames.clone();
    // The backend answers from another thread while the batch waits for room.
    let h = std::thread::spawn(move || {
        let mut b = b;
        let mut got = Vec::new();
        while got.len() < 600 {
            got.push(b.echo_tx(0).data);
        }
        (b, got)
    });
    let n = f.send_batch(frames.into_iter().map(Packet::new)).unwrap();
    assert_eq!(n, 600);
    let (_b, got) = h.join().unwrap();
    assert_eq!(got, expect);
}

#[test]
fn try_send_hands_the_frame_back_when_full() {
    let (_fx, mut f, mut b) = setup(&[], cfg());
    let mut rng = Rng(6);
    let mut sent = 0;
    let back = loop {
        match f.try_send(Packet::new(frame(&mut rng, 100))) {
            Ok(()) => sent += 1,
            Err((e, p)) => break (e, p),
        }
        assert!(sent <= 256);
    };
    assert_eq!(back.0, NetError::Full);
    assert_eq!(back.1.data.len(), 100);
    assert_eq!(sent, 256);
    for _ in 0..sent {
        b.echo_tx(0);
    }
    let r = f.wait(common::GUARD).unwrap();
    assert!(r.tx, "room again");
    f.try_send(back.1).unwrap();
}

#[test]
fn rx_sizes_byte_exact_and_flags() {
    let (_fx, mut f, mut b) = setup(&[], cfg());
    let mut rng = Rng(7);
    for len in [14, 60, 61, 1514, 4095, 4096, 4097, 9000, 40000, 65535] {
        let data = frame(&mut rng, len);
        b.inject(0, &data, 0, None);
        let p = recv_one(&mut f);
        assert_eq!(p.data.as_ref(), &data[..], "len {len}");
        assert!(!p.csum_blank && !p.data_validated && p.gso.is_none());
    }
    let data = tcp4(&mut rng, 65000, 1, 2);
    b.inject(
        0,
        &data,
        NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED,
        Some(ExtraGso {
            size: 1460,
            type_: XEN_NETIF_GSO_TYPE_TCPV4,
            pad: 0,
            features: 0,
        }),
    );
    let p = recv_one(&mut f);
    assert_eq!(p.data.as_ref(), &data[..]);
    assert!(p.csum_blank && p.data_validated);
    assert_eq!(
        p.gso,
        Some(Gso {
            kind: GsoKind::TcpV4,
            size: 1460
        })
    );
    b.inject(0, &data[..100], NETRXF_DATA_VALIDATED, None);
    let p = recv_one(&mut f);
    assert!(!p.csum_blank && p.data_validated);
    assert_eq!(f.stats().rx_packets, 12);
}

#[test]
fn rx_batch_and_refill_keep_the_ring_stocked() {
    let (_fx, mut f, mut b) = setup(&[], cfg());
    let mut rng = Rng(8);
    assert_eq!(b.rx_posted(0), 256, "the ring starts full");
    let mut sent = Vec::new();
    let mut got = Vec::new();
    // 2000 frames through a 256-slot ring: only refills make room.
    for round in 0..20 {
        for i in 0..100 {
            let d = frame(&mut rng, 60 + (round * 100 + i) % 3000);
            b.inject(0, &d, 0, None);
            sent.push(d);
        }
        let mut out = Vec::new();
        while out.len() < 100 {
            let want = 100 - out.len();
            f.recv_batch(&mut out, want);
            if out.len() < 100 {
                let _ = f.wait(Duration::from_millis(20)).unwrap();
            }
        }
        got.extend(out.into_iter().map(|p| p.data.to_vec()));
        // Refilled in batches: at least the ring minus one batch is posted.
        let posted = b.rx_posted(0);
        assert!(posted > 256 - 32, "round {round}: {posted} posted");
    }
    assert_eq!(got, sent);
    assert!(f.stats().rx_posted >= 2000);
}

#[test]
fn rx_error_status_drops_only_that_frame() {
    let (_fx, mut f, mut b) = setup(&[], cfg());
    b.rx_response(
        0,
        pvio_abi::netif::RxResponse {
            id: 0,
            offset: 0,
            flags: 0,
            status: pvio_abi::netif::NETIF_RSP_ERROR,
        },
    );
    b.flush_rx(0);
    let d = frame(&mut Rng(9), 80);
    b.inject(0, &d, 0, None);
    assert_eq!(recv_one(&mut f).data.as_ref(), &d[..]);
    assert_eq!(f.stats().rx_errors, 1);
    assert!(f.broken().is_none());
}

#[test]
fn flow_hashing_is_deterministic_and_picks_the_queue() {
    let mut rng = Rng(10);
    let a = tcp4(&mut rng, 100, 1000, 80);
    let mut a2 = tcp4(&mut rng, 300, 1000, 80);
    a2[14 + 20 + 4..].fill(7); // payload differs, flow the same
    assert_eq!(flow_hash(&a), flow_hash(&a2));
    assert_eq!(queue_for(&a, 4), queue_for(&a2, 4));
    assert_eq!(queue_for(&frame(&mut rng, 100), 4), 0, "non-IP on queue 0");
    let queues: std::collections::HashSet<usize> = (0..64u16)
        .map(|p| queue_for(&tcp4(&mut rng, 80, 2000 + p, 80), 4))
        .collect();
    assert_eq!(queues.len(), 4, "flows spread over the queues");

    // On the wire: each frame goes out on the queue its flow hashes to.
    let fx = domains(&[]);
    let (f, b) = connect(&fx, ALL, NetfrontConfig { queues: 4, ..cfg() });
    let (mut f, mut b) = (f.unwrap(), b.unwrap());
    for p in 0..16u16 {
        let d = tcp4(&mut rng, 120, 3000 + p, 443);
        let q = queue_for(&d, 4);
        f.send(Packet::new(d.clone())).unwrap();
        assert_eq!(b.echo_tx(q).data, d);
    }
    // RX on every queue reaches the caller.
    for q in 0..4 {
        let d = frame(&mut rng, 70 + q);
        b.inject(q, &d, 0, None);
        assert_eq!(recv_one(&mut f).data.as_ref(), &d[..]);
    }
}
