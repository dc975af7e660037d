//! Two guests' netfronts through the real netback and its switch: frames
//! of every size, GSO included, arrive byte-exact at the other guest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pvio_abi::DomId;
use pvio_hv::{DomainConfig, Hypervisor};
use pvio_netback::{Netback, NetbackConfig, Port, Switch};
use pvio_netfront::{Gso, GsoKind, Netfront, NetfrontConfig, Packet};
use pvio_xenbus::toolstack::{DevicePaths, create_device};

const GUARD: Duration = Duration::from_secs(20);

fn frame(dst: [u8; 6], src: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    v[..6].copy_from_slice(&dst);
    v[6..12].copy_from_slice(&src);
    v[12] = 0x88;
    v[13] = 0xb5;
    v
}

fn tcp4(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut v = frame(dst, src, len, 7);
    v[12] = 0x08;
    v[13] = 0x00;
    let ip = &mut v[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((len - 14) as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[7] = 0;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
    ip[32] = 0x50;
    v
}

#[test]
fn frames_cross_the_real_netback_byte_exact() {
    let hv = Hypervisor::new();
    let dc = DomainConfig {
        pages: 16384,
        ..DomainConfig::default()
    };
    let dom0 = hv.create_domain(DomId(0), dc).unwrap();
    let be = hv.create_domain(DomId(2), dc).unwrap();
    let sw = Switch::new();
    let mut guests = Vec::new();
    let mut backs = Vec::new();
    for (id, mac) in [(1u16, "02:00:00:00:00:01"), (3, "02:00:00:00:00:03")] {
        let fe = hv.create_domain(DomId(id), dc).unwrap();
        let dev = DevicePaths::new(fe.id(), be.id(), "vif", 0);
        create_device(&dom0.store(), &dev, &[("mac", mac)], &[("mac", mac)]).unwrap();
        let port: Arc<dyn Port> = Arc::new(sw.port());
        backs.push(Netback::serve(
            be.clone(),
            dev.clone(),
            port,
            NetbackConfig::default(),
        ));
        let f = Netfront::connect(
            fe,
            dev,
            NetfrontConfig {
                queues: 2,
                timeout: Duration::from_secs(10),
                close_timeout: Duration::from_secs(2),
                ..NetfrontConfig::default()
            },
        )
        .unwrap();
        guests.push(f);
    }
    let (ma, mb) = (guests[0].mac(), guests[1].mac());
    let mut sent = Vec::new();
    for (i, len) in [60usize, 61, 1514, 4096, 4097, 9000, 30000]
        .into_iter()
        .enumerate()
    {
        let d = frame(mb, ma, len, i as u8);
        guests[0].send(Packet::new(d.clone())).unwrap();
        sent.push(d);
    }
    let g = tcp4(mb, ma, 65000);
    guests[0]
        .send(Packet {
            data: g.clone().into(),
            csum_blank: true,
            data_validated: true,
            gso: Some(Gso {
                kind: GsoKind::TcpV4,
                size: 1448,
            }),
        })
        .unwrap();
    sent.push(g);
    let mut got: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + GUARD;
    while got.len() < sent.len() {
        assert!(
            Instant::now() < deadline,
            "received {} of {}",
            got.len(),
            sent.len()
        );
        let mut out = Vec::new();
        guests[1].recv_batch(&mut out, 64);
        got.extend(out.into_iter().map(|p| p.data.to_vec()));
        let _ = guests[1].wait(Duration::from_millis(20));
    }
    // Frames of different flows may take different queues: compare as
    // sets.
    got.sort();
    sent.sort();
    assert_eq!(got, sent);
    // And back the other way.
    let d = frame(ma, mb, 1000, 99);
    guests[1].send(Packet::new(d.clone())).unwrap();
    let deadline = Instant::now() + GUARD;
    let p = loop {
        if let Some(p) = guests[0].recv() {
            break p;
        }
        assert!(Instant::now() < deadline, "no reply");
        let _ = guests[0].wait(Duration::from_millis(20));
    };
    assert_eq!(p.data.as_ref(), &d[..]);
    assert!(guests.iter().all(|g| g.broken().is_none()));
    drop(guests);
    for b in backs {
        b.stop();
    }
}
