//! End-to-end tests of the network pair: the real [`Netfront`] and the real
//! [`Netback`] on the embedded hypervisor.
//!
//! * Two guests exchange frames through netback's in-process [`Switch`] in
//!   a matrix of negotiated features (SG, GSO, checksum offload, queues,
//!   event channels, and a mixed pair), every byte checked; what the
//!   receiver should get (the frame as sent, its checksum completed, its
//!   GSO frame cut into segments, or nothing) follows from what each side
//!   negotiated.
//! * netback on a TAP device inside a network namespace: ARP and ICMP with
//!   the kernel, and (feature `smoltcp`) a TCP transfer between smoltcp on
//!   the netfront and a server in the namespace.
//! * CTL rows end to end: reconnects, a stopped backend, bounded queues.
//!
//! Tests that need root, `/dev/net/tun`, `ip` or `python3` print
//! "SKIPPED: <why>" and return when one is missing. Every wait has a
//! generous guard that fails the test instead of hanging; no test asserts
//! on timing.

use std::collections::HashMap;
#[cfg(feature = "smoltcp")]
use std::io::{BufRead, BufReader};
use std::process::Command;
#[cfg(feature = "smoltcp")]
use std::process::{Child, ChildStdout, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvio_abi::DomId;
use pvio_hv::{Domain, DomainConfig, Hypervisor};
use pvio_netback::{Netback, NetbackConfig, Port, Switch, TapPort};
use pvio_netfront::{
    Gso, GsoKind, NetError, Netfront, NetfrontConfig, Packet, complete_checksum, queue_for,
};
use pvio_xenbus::toolstack::{DevicePaths, create_device};

/// Failure guard for every wait (never a speed assertion).
const GUARD: Duration = Duration::from_secs(30);
/// Slots of one page.
const PAGE: usize = 4096;
/// The MSS of the GSO frames.
const MSS: u16 = 1448;

// ------------------------------------------------------------------ frames

/// A deterministic byte pattern (xorshift64*), different per seed.
fn pattern(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(n);
    v
}

fn sum16(mut acc: u32, d: &[u8]) -> u32 {
    for c in d.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    acc as u16
}

/// A non-IP frame of `len` bytes (local experimental ethertype) whose
/// bytes 14..16 carry `key`.
fn plain(dst: [u8; 6], src: [u8; 6], len: usize, key: u16) -> Vec<u8> {
    let mut v = pattern(u64::from(key), len);
    v[..6].copy_from_slice(&dst);
    v[6..12].copy_from_slice(&src);
    v[12..14].copy_from_slice(&[0x88, 0xB5]);
    v[14..16].copy_from_slice(&key.to_be_bytes());
    v
}

const SRC_IP: [u8; 4] = [10, 0, 0, 1];
const DST_IP: [u8; 4] = [10, 0, 0, 2];

/// An IPv4/TCP frame (PSH|ACK) with a valid IP header checksum and, if
/// `partial`, the pseudo-header sum in the TCP checksum field (what a
/// `csum_blank` frame carries), else a complete TCP checksum.
fn tcp4(
    dst: [u8; 6],
    src: [u8; 6],
    ports: (u16, u16),
    seq: u32,
    payload: &[u8],
    partial: bool,
) -> Vec<u8> {
    let mut v = Vec::with_capacity(54 + payload.len());
    v.extend_from_slice(&dst);
    v.extend_from_slice(&src);
    v.extend_from_slice(&[0x08, 0x00]);
    let tot = (40 + payload.len()) as u16;
    v.extend_from_slice(&[0x45, 0]);
    v.extend_from_slice(&tot.to_be_bytes());
    v.extend_from_slice(&ports.0.to_be_bytes()); // IP id
    v.extend_from_slice(&[0x40, 0, 64, 6, 0, 0]);
    v.extend_from_slice(&SRC_IP);
    v.extend_from_slice(&DST_IP);
    let c = !fold(sum16(0, &v[14..34]));
    v[24..26].copy_from_slice(&c.to_be_bytes());
    v.extend_from_slice(&ports.0.to_be_bytes());
    v.extend_from_slice(&ports.1.to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&1u32.to_be_bytes());
    v.extend_from_slice(&[0x50, 0x18, 0xFF, 0xFF, 0, 0, 0, 0]);
    v.extend_from_slice(payload);
    let l4_len = 20 + payload.len() as u32;
    let pseudo = sum16(sum16(0, &SRC_IP), &DST_IP) + 6 + (l4_len & 0xFFFF) + (l4_len >> 16);
    if partial {
        v[50..52].copy_from_slice(&fold(pseudo).to_be_bytes());
    } else {
        let c = !fold(sum16(pseudo, &v[34..]));
        v[50..52].copy_from_slice(&c.to_be_bytes());
    }
    v
}

fn is_tcp4(d: &[u8]) -> bool {
    d.len() >= 54 && d[12..14] == [0x08, 0x00] && d[14] == 0x45 && d[23] == 6
}

fn ip_csum_ok(d: &[u8]) -> bool {
    fold(sum16(0, &d[14..34])) == 0xFFFF
}

/// The L4 checksum is complete and right.
fn l4_csum_ok(d: &[u8]) -> bool {
    let mut c = d.to_vec();
    complete_checksum(&mut c) && c == d
}

fn completed(d: &[u8]) -> Vec<u8> {
    let mut c = d.to_vec();
    assert!(complete_checksum(&mut c));
    c
}

fn first_diff(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!(
            "first difference at byte {i} ({:#04x} vs {:#04x})",
            a[i], b[i]
        ),
        None => format!("lengths {} vs {}", a.len(), b.len()),
    }
}

/// The key a test frame carries: bytes 14..16 of a plain frame, the
/// source port of a TCP frame.
fn key_of(d: &[u8]) -> Option<u16> {
    if d.len() >= 16 && d[12..14] == [0x88, 0xB5] {
        return Some(u16::from_be_bytes([d[14], d[15]]));
    }
    if is_tcp4(d) {
        return Some(u16::from_be_bytes([d[34], d[35]]));
    }
    None
}

// --------------------------------------------------------------- fixtures

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The hypervisor, dom0 and a driver domain running the backends.
struct Host {
    hv: Hypervisor,
    dom0: Domain,
    be: Domain,
}

fn dc() -> DomainConfig {
    DomainConfig {
        pages: 16384,
        ..DomainConfig::default()
    }
}

impl Host {
    fn new() -> Host {
        let hv = Hypervisor::new();
        let dom0 = hv.create_domain(DomId(0), dc()).unwrap();
        let be = hv.create_domain(DomId(1), dc()).unwrap();
        Host { hv, dom0, be }
    }

    /// A guest `id` with a vif plugged into `port`, served by a netback
    /// offering `nb`, connected with `cfg`.
    fn guest(&self, id: u16, port: Arc<dyn Port>, nb: NetbackConfig, cfg: NetfrontConfig) -> Guest {
        let dom = self.hv.create_domain(DomId(id), dc()).unwrap();
        let dev = DevicePaths::new(dom.id(), self.be.id(), "vif", 0);
        let mac = mac_str([0x02, 0, 0, 0, (id >> 8) as u8, id as u8]);
        let keys = [("mac", mac.as_str())];
        create_device(&self.dom0.store(), &dev, &keys, &keys).unwrap();
        let mut g = Guest {
            be: self.be.clone(),
            dom,
            dev,
            port,
            nb_cfg: nb,
            cfg,
            nb: None,
            nf: None,
        };
        g.start_backend();
        g.connect();
        g
    }
}

/// One guest: its domain, vif, backend and frontend.
struct Guest {
    be: Domain,
    dom: Domain,
    dev: DevicePaths,
    port: Arc<dyn Port>,
    nb_cfg: NetbackConfig,
    cfg: NetfrontConfig,
    nb: Option<Netback>,
    nf: Option<Netfront>,
}

impl Drop for Guest {
    fn drop(&mut self) {
        drop(self.nf.take());
        if let Some(nb) = self.nb.take() {
            nb.stop();
        }
    }
}

impl Guest {
    fn start_backend(&mut self) {
        assert!(self.nb.is_none());
        self.nb = Some(Netback::serve(
            self.be.clone(),
            self.dev.clone(),
            self.port.clone(),
            self.nb_cfg,
        ));
    }

    fn connect(&mut self) {
        assert!(self.nf.is_none());
        let nf = Netfront::connect(self.dom.clone(), self.dev.clone(), self.cfg)
            .unwrap_or_else(|e| panic!("{}: connect: {e}", self.dev.frontend));
        self.nf = Some(nf);
    }

    fn nf(&mut self) -> &mut Netfront {
        self.nf.as_mut().expect("frontend connected")
    }

    fn nb(&self) -> &Netback {
        self.nb.as_ref().expect("backend running")
    }

    fn mac(&self) -> [u8; 6] {
        self.nf.as_ref().expect("frontend connected").mac()
    }

    /// Takes every frame received so far.
    fn drain(&mut self, out: &mut Vec<Packet>) {
        while self.nf().recv_batch(out, 256) > 0 {}
    }

    /// Receives until `n` frames are in `out` (failing after GUARD).
    fn recv_n(&mut self, out: &mut Vec<Packet>, n: usize, what: &str) {
        let deadline = Instant::now() + GUARD;
        loop {
            self.drain(out);
            if out.len() >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: received {} of {n} frames",
                out.len()
            );
            let _ = self.nf().wait(Duration::from_millis(20));
        }
    }
}

/// Whether the sender has the room it needs: what the receiver's
/// frontend advertised decides what netback hands it.
#[derive(Debug, Clone, Copy)]
struct RxCaps {
    sg: bool,
    gso: bool,
    csum: bool,
}

fn rx_caps(cfg: &NetfrontConfig) -> RxCaps {
    RxCaps {
        sg: cfg.sg,
        gso: cfg.sg && cfg.gso_tcpv4,
        csum: cfg.csum_offload,
    }
}

// ----------------------------------------------------- the switch matrix

/// A frame of the matrix.
#[derive(Debug, Clone, Copy)]
enum Case {
    /// A non-IP frame of this many bytes.
    Plain(usize),
    /// A TCP frame of this many bytes, complete checksum.
    Tcp(usize),
    /// A TCP frame of this many bytes, partial checksum (`csum_blank`).
    TcpPartial(usize),
    /// A TCPv4 GSO frame of this many bytes (MSS [`MSS`]).
    Gso(usize),
}

const CASES: &[Case] = &[
    Case::Plain(60),
    Case::Plain(61),
    Case::Plain(1500),
    Case::Plain(1514),
    Case::Plain(4096),
    Case::Plain(4097),
    Case::Plain(9000),
    Case::Plain(30000),
    Case::Plain(65000),
    Case::Plain(65535),
    Case::Tcp(60),
    Case::Tcp(1514),
    Case::TcpPartial(60),
    Case::TcpPartial(1514),
    Case::TcpPartial(4096),
    Case::TcpPartial(9000),
    Case::Gso(3000),
    Case::Gso(4097),
    Case::Gso(9000),
    Case::Gso(30000),
    Case::Gso(65000),
];

/// What the receiver should get.
#[derive(Debug)]
enum Expect {
    /// The send is refused with this error.
    Refused(NetError),
    /// The frame as sent, with these flags.
    Exact { csum_blank: bool, gso: Option<Gso> },
    /// The frame with its checksum completed, `csum_blank` off.
    Completed,
    /// MSS-sized TCP segments reassembling to the payload.
    Segmented { payload: Vec<u8>, seq0: u32 },
    /// Nothing: netback drops it (too large for the receiver).
    Dropped,
}

/// The frame of case `i` from `src` to `dst`, its packet, and what a
/// receiver with `rx` gets from a sender that negotiated `tx`.
fn build(
    i: usize,
    case: Case,
    dst: [u8; 6],
    src: [u8; 6],
    tx: pvio_netfront::NetInfo,
    rx: RxCaps,
) -> (u16, Packet, Expect) {
    let key = 1000 + i as u16;
    let seq0 = 0x1000_0000 + (i as u32) * 0x10_0000;
    let (data, csum_blank, gso, payload) = match case {
        Case::Plain(n) => (plain(dst, src, n, key), false, None, Vec::new()),
        Case::Tcp(n) | Case::TcpPartial(n) | Case::Gso(n) => {
            let payload = pattern(u64::from(key), n - 54);
            let partial = !matches!(case, Case::Tcp(_));
            let d = tcp4(dst, src, (key, 80), seq0, &payload, partial);
            let gso = matches!(case, Case::Gso(_)).then_some(Gso {
                kind: GsoKind::TcpV4,
                size: MSS,
            });
            (d, partial, gso, payload)
        }
    };
    let len = data.len();
    let pkt = Packet {
        data: data.into(),
        csum_blank,
        data_validated: csum_blank,
        gso,
    };
    let expect = if len > PAGE && !tx.sg {
        Expect::Refused(NetError::TooLarge(len))
    } else if gso.is_some() && !tx.gso_tcpv4 {
        Expect::Refused(NetError::Unsupported("GSO of this type"))
    } else if gso.is_some() {
        if rx.gso {
            Expect::Exact {
                csum_blank: true,
                gso,
            }
        } else {
            Expect::Segmented { payload, seq0 }
        }
    } else if len > PAGE && !rx.sg {
        Expect::Dropped
    } else if csum_blank && !rx.csum {
        Expect::Completed
    } else {
        Expect::Exact {
            csum_blank,
            gso: None,
        }
    };
    (key, pkt, expect)
}

/// Checks the segments a GSO frame `orig` was cut into.
fn check_segments(what: &str, orig: &[u8], segs: &[Packet], payload: &[u8], seq0: u32) {
    let mss = usize::from(MSS);
    assert_eq!(
        segs.len(),
        payload.len().div_ceil(mss),
        "{what}: number of segments"
    );
    let mut segs: Vec<&Packet> = segs.iter().collect();
    segs.sort_by_key(|p| u32::from_be_bytes(p.data[38..42].try_into().unwrap()));
    let mut joined = Vec::with_capacity(payload.len());
    for (n, s) in segs.iter().enumerate() {
        let d = &s.data[..];
        assert!(is_tcp4(d), "{what}: segment {n} is TCP/IPv4");
        assert!(s.gso.is_none(), "{what}: segment {n} has no GSO");
        assert!(!s.csum_blank, "{what}: segment {n} has a complete checksum");
        assert!(ip_csum_ok(d), "{what}: segment {n}: IP header checksum");
        assert!(l4_csum_ok(d), "{what}: segment {n}: TCP checksum");
        let tot = usize::from(u16::from_be_bytes([d[16], d[17]]));
        assert_eq!(tot + 14, d.len(), "{what}: segment {n}: IP total length");
        let seq = u32::from_be_bytes(d[38..42].try_into().unwrap());
        assert_eq!(seq, seq0 + joined.len() as u32, "{what}: segment {n}: seq");
        let body = &d[54..];
        assert!(
            body.len() <= mss && (body.len() == mss || n + 1 == segs.len()),
            "{what}: segment {n} carries {} bytes",
            body.len()
        );
        // Addresses, ports and ack as in the original.
        assert_eq!(&d[..12], &orig[..12], "{what}: segment {n}: MACs");
        assert_eq!(&d[26..38], &orig[26..38], "{what}: segment {n}: addresses");
        assert_eq!(&d[42..46], &orig[42..46], "{what}: segment {n}: ack");
        joined.extend_from_slice(body);
    }
    assert!(
        joined == payload,
        "{what}: reassembled payload: {}",
        first_diff(&joined, payload)
    );
}

/// Sends every case from `s` to `r` and checks what `r` receives.
fn one_way(label: &str, s: &mut Guest, r: &mut Guest) {
    let (dst, src) = (r.mac(), s.mac());
    let tx = s.nf().info();
    let rx = rx_caps(&r.cfg);
    let dropped0 = r.nb().stats().rx_dropped;
    let mut sent: HashMap<u16, (Case, Packet, Expect)> = HashMap::new();
    let mut want = 0;
    let mut drops = 0;
    let mut got = Vec::new();
    for (i, &case) in CASES.iter().enumerate() {
        let (key, pkt, expect) = build(i, case, dst, src, tx, rx);
        let res = s.nf().send(pkt.clone());
        match &expect {
            Expect::Refused(e) => {
                let err = res.expect_err("a frame the sender cannot send");
                assert_eq!(&err, e, "{label}: {case:?} refused");
                if let NetError::TooLarge(n) = err {
                    assert!(
                        err.to_string().contains(&n.to_string()),
                        "a clear error: {err}"
                    );
                }
            }
            _ => res.unwrap_or_else(|e| panic!("{label}: send {case:?}: {e}")),
        }
        match &expect {
            Expect::Refused(_) => {}
            Expect::Dropped => drops += 1,
            Expect::Segmented { payload, .. } => want += payload.len().div_ceil(usize::from(MSS)),
            _ => want += 1,
        }
        sent.insert(key, (case, pkt, expect));
        // Keep the receiver's queues short.
        r.drain(&mut got);
    }
    r.recv_n(&mut got, want, label);
    let deadline = Instant::now() + GUARD;
    while r.nb().stats().rx_dropped - dropped0 < drops {
        assert!(Instant::now() < deadline, "{label}: drops not counted");
        std::thread::sleep(Duration::from_millis(5));
    }
    r.drain(&mut got);
    assert_eq!(got.len(), want, "{label}: frames received");
    assert_eq!(
        r.nb().stats().rx_dropped - dropped0,
        drops,
        "{label}: frames netback dropped for the receiver"
    );
    // Group by key (the order across flows is not defined).
    let mut by_key: HashMap<u16, Vec<Packet>> = HashMap::new();
    for p in got {
        let k = key_of(&p.data).unwrap_or_else(|| panic!("{label}: unexpected frame {p:?}"));
        by_key.entry(k).or_default().push(p);
    }
    let mut keys: Vec<u16> = sent.keys().copied().collect();
    keys.sort_unstable();
    for k in keys {
        let (case, pkt, expect) = &sent[&k];
        let what = format!("{label}: {case:?}");
        let rcvd = by_key.remove(&k).unwrap_or_default();
        match expect {
            Expect::Refused(_) | Expect::Dropped => {
                assert!(rcvd.is_empty(), "{what}: should not arrive");
            }
            Expect::Exact { csum_blank, gso } => {
                assert_eq!(rcvd.len(), 1, "{what}: arrives once");
                let p = &rcvd[0];
                assert!(
                    p.data == pkt.data,
                    "{what}: {}",
                    first_diff(&p.data, &pkt.data)
                );
                assert_eq!(p.csum_blank, *csum_blank, "{what}: csum_blank");
                assert_eq!(p.gso, *gso, "{what}: GSO");
            }
            Expect::Completed => {
                assert_eq!(rcvd.len(), 1, "{what}: arrives once");
                let p = &rcvd[0];
                let c = completed(&pkt.data);
                assert!(p.data == c, "{what}: {}", first_diff(&p.data, &c));
                assert!(!p.csum_blank, "{what}: csum_blank off");
                assert!(l4_csum_ok(&p.data), "{what}: a valid checksum");
                assert_eq!(p.gso, None);
            }
            Expect::Segmented { payload, seq0 } => {
                check_segments(&what, &pkt.data, &rcvd, payload, *seq0);
            }
        }
    }
    assert!(by_key.is_empty(), "{label}: frames of unknown keys arrived");
}

/// Frames of `FLOWS` TCP flows, interleaved: each flow's frames arrive
/// complete and in order (a flow keeps to one queue each way), whatever
/// the order across flows.
fn flows_keep_order(label: &str, s: &mut Guest, r: &mut Guest) {
    const FLOWS: u16 = 8;
    const PER_FLOW: u32 = 64;
    let (dst, src) = (r.mac(), s.mac());
    let queues = s.nf().info().queues as usize;
    let mut used = vec![false; queues];
    let mut got = Vec::new();
    let mut batch = Vec::new();
    for n in 0..PER_FLOW {
        for f in 0..FLOWS {
            let payload = pattern(u64::from(n) << 16 | u64::from(f), 100 + f as usize * 50);
            let d = tcp4(dst, src, (2000 + f, 443), n, &payload, false);
            used[queue_for(&d, queues)] = true;
            batch.push(Packet::new(d));
        }
        if batch.len() >= 32 {
            s.nf().send_batch(batch.drain(..)).unwrap();
            r.drain(&mut got);
        }
    }
    s.nf().send_batch(batch.drain(..)).unwrap();
    assert!(
        used.iter().all(|u| *u),
        "{label}: the flows cover every queue"
    );
    let total = usize::from(FLOWS) * PER_FLOW as usize;
    r.recv_n(&mut got, total, label);
    assert_eq!(got.len(), total);
    let mut next = vec![0u32; usize::from(FLOWS)];
    for p in &got {
        let d = &p.data[..];
        assert!(l4_csum_ok(d) && ip_csum_ok(d), "{label}: checksums");
        let f = u16::from_be_bytes([d[34], d[35]]) - 2000;
        let seq = u32::from_be_bytes(d[38..42].try_into().unwrap());
        assert_eq!(seq, next[usize::from(f)], "{label}: flow {f} in order");
        let payload = pattern(u64::from(seq) << 16 | u64::from(f), 100 + f as usize * 50);
        assert!(d[54..] == payload[..], "{label}: flow {f} frame {seq}");
        next[usize::from(f)] += 1;
    }
}

/// Two guests on one switch with these frontend configs (the netback
/// offers everything).
fn matrix(label: &str, ca: NetfrontConfig, cb: NetfrontConfig) -> (Host, Guest, Guest) {
    let host = Host::new();
    let sw = Switch::new();
    let nb = NetbackConfig::default();
    let mut a = host.guest(2, Arc::new(sw.port()), nb, ca);
    let mut b = host.guest(3, Arc::new(sw.port()), nb, cb);
    one_way(&format!("{label} a->b"), &mut a, &mut b);
    one_way(&format!("{label} b->a"), &mut b, &mut a);
    flows_keep_order(&format!("{label} flows a->b"), &mut a, &mut b);
    flows_keep_order(&format!("{label} flows b->a"), &mut b, &mut a);
    for g in [&mut a, &mut b] {
        let st = g.nb().stats();
        assert!(!st.broken && st.fatal == 0 && st.tx_errors == 0, "{st:?}");
        assert!(g.nf().broken().is_none());
        assert_eq!(g.nf().stats().rx_errors, 0);
        assert_eq!(g.nf().stats().tx_errors, 0);
    }
    (host, a, b)
}

fn cfg() -> NetfrontConfig {
    NetfrontConfig {
        timeout: Duration::from_secs(10),
        tx_timeout: Duration::from_secs(10),
        close_timeout: Duration::from_secs(2),
        ..NetfrontConfig::default()
    }
}

fn no_sg() -> NetfrontConfig {
    NetfrontConfig { sg: false, ..cfg() }
}

fn no_offloads() -> NetfrontConfig {
    NetfrontConfig {
        gso_tcpv4: false,
        gso_tcpv6: false,
        csum_offload: false,
        ipv6_csum_offload: false,
        ..cfg()
    }
}

#[test]
fn switch_default_sg_gso_csum_offload() {
    let (_h, mut a, _b) = matrix("default", cfg(), cfg());
    let i = a.nf().info();
    assert!(i.sg && i.gso_tcpv4 && i.gso_tcpv6 && i.queues == 1, "{i:?}");
}

#[test]
fn switch_sg_off_gso_off_large_frames_refused() {
    let (_h, mut a, b) = matrix("sg off", no_sg(), no_sg());
    let i = a.nf().info();
    assert!(!i.sg && !i.gso_tcpv4 && !i.gso_tcpv6, "GSO needs SG: {i:?}");
    // The refusal is clear and leaves the device usable.
    let (ma, mb) = (a.mac(), b.mac());
    let e = a
        .nf()
        .send(Packet::new(plain(mb, ma, 4097, 1)))
        .unwrap_err();
    assert_eq!(e, NetError::TooLarge(4097));
    assert_eq!(e.to_string(), "frame of 4097 bytes is too large");
    a.nf().send(Packet::new(plain(mb, ma, 4096, 2))).unwrap();
}

#[test]
fn switch_offloads_off_checksums_completed() {
    let (_h, mut a, _b) = matrix("offloads off", no_offloads(), no_offloads());
    let i = a.nf().info();
    assert!(i.sg && !i.gso_tcpv4, "{i:?}");
}

#[test]
fn switch_two_queues_split_event_channels() {
    let two = NetfrontConfig { queues: 2, ..cfg() };
    let (_h, mut a, mut b) = matrix("2 queues split", two, two);
    for g in [&mut a, &mut b] {
        let i = g.nf().info();
        assert!(i.queues == 2 && i.split_event_channels, "{i:?}");
        let st = g.nb().stats();
        assert!(st.queues == 2 && st.split, "{st:?}");
    }
}

#[test]
fn switch_two_queues_one_event_channel_each() {
    let two = NetfrontConfig {
        queues: 2,
        split_event_channels: false,
        ..cfg()
    };
    let (_h, mut a, _b) = matrix("2 queues shared channel", two, two);
    let i = a.nf().info();
    assert!(i.queues == 2 && !i.split_event_channels, "{i:?}");
    assert!(!a.nb().stats().split);
}

#[test]
fn switch_mixed_pair_gso_segmented_in_software() {
    let plain_b = NetfrontConfig {
        sg: false,
        csum_offload: false,
        ..cfg()
    };
    let (_h, mut a, mut b) = matrix("mixed", cfg(), plain_b);
    assert!(a.nf().info().gso_tcpv4);
    assert!(!b.nf().info().sg);
    // A receiver with SG but no GSO gets segments too (a third guest on
    // its own switch with `a`'s kind of sender).
    let host = Host::new();
    let sw = Switch::new();
    let nb = NetbackConfig::default();
    let mut s = host.guest(4, Arc::new(sw.port()), nb, cfg());
    let mut r = host.guest(5, Arc::new(sw.port()), nb, no_offloads());
    one_way("sg receiver without gso", &mut s, &mut r);
}

// ------------------------------------------------------------------ CTL

/// One frame each way between `a` and `b`, byte-exact, including a GSO
/// frame when both can. Frames equal to `noise` (sent earlier, still on
/// their way) are skipped; anything else is a failure.
fn ping_pong(label: &str, a: &mut Guest, b: &mut Guest, seed: u16) {
    ping_pong_past(label, a, b, seed, &[]);
}

fn ping_pong_past(label: &str, a: &mut Guest, b: &mut Guest, seed: u16, noise: &[u8]) {
    fn one(label: &str, s: &mut Guest, r: &mut Guest, seed: u16, noise: &[u8]) {
        let d = plain(r.mac(), s.mac(), 1000, seed);
        s.nf().send(Packet::new(d.clone())).unwrap();
        let mut got = Vec::new();
        loop {
            r.recv_n(&mut got, 1, label);
            let p = got.remove(0);
            if p.data == noise {
                continue;
            }
            assert!(p.data == d, "{label}: {}", first_diff(&p.data, &d));
            break;
        }
        r.drain(&mut got);
        assert!(got.is_empty(), "{label}: unexpected frames {got:?}");
    }
    one(label, a, b, seed, noise);
    one(label, b, a, seed + 500, noise);
    if a.nf().info().gso_tcpv4 && b.nf().info().gso_tcpv4 {
        let payload = pattern(u64::from(seed), 60000);
        let d = tcp4(b.mac(), a.mac(), (seed + 1000, 80), 7, &payload, true);
        a.nf()
            .send(Packet {
                data: d.clone().into(),
                csum_blank: true,
                data_validated: true,
                gso: Some(Gso {
                    kind: GsoKind::TcpV4,
                    size: MSS,
                }),
            })
            .unwrap();
        let mut got = Vec::new();
        b.recv_n(&mut got, 1, label);
        assert!(got[0].data == d, "{label}: GSO frame");
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + GUARD;
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// C4: the frontend closes and connects again to the same running
/// netback, several times and with other features each time; traffic
/// resumes every time and the backend counts each connection.
#[test]
fn c4_frontend_reconnects_to_the_same_netback_and_traffic_resumes() {
    let host = Host::new();
    let sw = Switch::new();
    let nb = NetbackConfig::default();
    let mut a = host.guest(2, Arc::new(sw.port()), nb, cfg());
    let mut b = host.guest(3, Arc::new(sw.port()), nb, cfg());
    ping_pong("first connection", &mut a, &mut b, 1);
    let configs = [
        cfg(),
        no_sg(),
        NetfrontConfig { queues: 3, ..cfg() },
        no_offloads(),
        cfg(),
    ];
    for (round, c) in configs.into_iter().enumerate() {
        let label = format!("reconnect {round}");
        a.nf.take().unwrap().close();
        let n = round as u64 + 1;
        wait_until(&format!("{label}: netback disconnects"), || {
            a.nb().stats().disconnects == n
        });
        a.cfg = c;
        a.connect();
        assert_eq!(a.nb().stats().connects, n + 1, "{label}");
        let i = a.nf().info();
        assert_eq!(i.queues, c.queues, "{label}");
        assert_eq!(i.sg, c.sg, "{label}");
        wait_until(&format!("{label}: netback queues"), || {
            a.nb().stats().queues == c.queues
        });
        ping_pong(&label, &mut a, &mut b, 10 + round as u16);
        // The peer's connection was never disturbed.
        assert_eq!(b.nb().stats().connects, 1);
    }
    let st = a.nb().stats();
    assert!(!st.broken && st.fatal == 0 && st.refused == 0, "{st:?}");
}

/// The backend stops while the frontend is sending: the frontend reports
/// `Disconnected` (not a panic, a hang, a timeout or a broken protocol),
/// closes cleanly, and a frontend connects to a restarted backend on the
/// same vif (LIFE L2 without the replay, which netfront leaves to its
/// user).
#[test]
fn backend_stopped_frontend_reports_disconnected_then_reconnects() {
    let host = Host::new();
    let sw = Switch::new();
    let nb = NetbackConfig::default();
    let mut a = host.guest(2, Arc::new(sw.port()), nb, cfg());
    let mut b = host.guest(3, Arc::new(sw.port()), nb, cfg());
    ping_pong("before", &mut a, &mut b, 1);

    let backend = a.nb.take().unwrap();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        backend.stop();
    });
    let frame = Packet::new(plain(b.mac(), a.mac(), 1500, 7));
    let deadline = Instant::now() + GUARD;
    let err = loop {
        assert!(Instant::now() < deadline, "the frontend never noticed");
        if let Err(e) = a.nf().send(frame.clone()) {
            break e;
        }
        let mut burst = Vec::new();
        b.drain(&mut burst);
        assert!(burst.iter().all(|p| p.data == frame.data));
    };
    stopper.join().unwrap();
    assert!(matches!(err, NetError::Disconnected(_)), "{err:?}");
    // Every later call says the same, none panics.
    assert!(matches!(
        a.nf().wait(Duration::from_millis(10)),
        Err(NetError::Disconnected(_))
    ));
    assert!(matches!(
        a.nf().send(frame.clone()),
        Err(NetError::Disconnected(_))
    ));
    assert!(matches!(
        a.nf().try_send(frame.clone()),
        Err((NetError::Disconnected(_), _))
    ));
    assert!(a.nf().recv().is_none());
    assert!(a.nf().broken().is_none(), "not a protocol fault");
    a.nf.take().unwrap().close();

    // A new backend on the same vif (and switch port); a new frontend.
    a.start_backend();
    a.connect();
    // Frames of the burst that reached `b` before the backend stopped may
    // still be on their way to it.
    ping_pong_past("after restart", &mut a, &mut b, 2, &frame.data);
    assert_eq!(b.nb().stats().connects, 1);
}

/// C3 end to end: a frontend asking for more queues than netback offers,
/// and split event channels that are not offered, gets what is offered,
/// and the vif works.
#[test]
fn c3_queues_and_event_channels_bounded_by_the_backend() {
    let host = Host::new();
    let sw = Switch::new();
    let nb = NetbackConfig {
        max_queues: 2,
        split_event_channels: false,
        ..NetbackConfig::default()
    };
    let greedy = NetfrontConfig { queues: 8, ..cfg() };
    let mut a = host.guest(2, Arc::new(sw.port()), nb, greedy);
    let mut b = host.guest(3, Arc::new(sw.port()), NetbackConfig::default(), cfg());
    let i = a.nf().info();
    assert!(i.queues == 2 && !i.split_event_channels, "{i:?}");
    let st = a.nb().stats();
    assert!(st.queues == 2 && !st.split && st.refused == 0, "{st:?}");
    ping_pong("bounded", &mut a, &mut b, 3);
    flows_keep_order("bounded flows", &mut a, &mut b);
}

// --------------------------------------------------------- TAP and netns

/// Removes the network namespace when dropped (even if the test fails).
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

const NS_IP: [u8; 4] = [10, 98, 0, 1];
const FE_IP: [u8; 4] = [10, 98, 0, 2];

/// A TAP device moved into a namespace of its own, 10.98.0.1/24 on it,
/// up; `None` (after printing why) when the facility is missing.
fn tap_in_netns(tag: &str) -> Option<(Netns, Arc<TapPort>)> {
    if !std::path::Path::new("/dev/net/tun").exists() {
        println!("SKIPPED: no /dev/net/tun");
        return None;
    }
    let pid = std::process::id() % 1_000_000;
    let ns = Netns(format!("pvioe2e{tag}{pid}"));
    if let Err(e) = ip(&["netns", "add", &ns.0]) {
        println!("SKIPPED: cannot create a network namespace ({e})");
        return None;
    }
    let name = format!("pvioe2e{tag}{pid}");
    let tap = match TapPort::open(&name) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            println!("SKIPPED: cannot open TAP device {name}: {e}");
            return None;
        }
    };
    ip(&["link", "set", &name, "netns", &ns.0]).unwrap();
    ip(&["-n", &ns.0, "addr", "add", "10.98.0.1/24", "dev", &name]).unwrap();
    ip(&["-n", &ns.0, "link", "set", &name, "up"]).unwrap();
    ip(&["-n", &ns.0, "link", "set", "lo", "up"]).unwrap();
    Some((ns, tap))
}

fn arp(op: u16, dst: [u8; 6], src: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let mut d = vec![0u8; 60];
    d[..6].copy_from_slice(&dst);
    d[6..12].copy_from_slice(&src);
    d[12..14].copy_from_slice(&[0x08, 0x06]);
    d[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, op as u8]);
    d[22..28].copy_from_slice(&src);
    d[28..32].copy_from_slice(&spa);
    d[32..38].copy_from_slice(&tha);
    d[38..42].copy_from_slice(&tpa);
    d
}

fn echo_request(dst: [u8; 6], src: [u8; 6], id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; 42];
    d[..6].copy_from_slice(&dst);
    d[6..12].copy_from_slice(&src);
    d[12..14].copy_from_slice(&[0x08, 0x00]);
    d[14] = 0x45;
    d[16..18].copy_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
    d[18..20].copy_from_slice(&seq.to_be_bytes());
    d[22] = 64;
    d[23] = 1;
    d[26..30].copy_from_slice(&FE_IP);
    d[30..34].copy_from_slice(&NS_IP);
    let c = !fold(sum16(0, &d[14..34]));
    d[24..26].copy_from_slice(&c.to_be_bytes());
    d[34] = 8;
    d[38..40].copy_from_slice(&id.to_be_bytes());
    d[40..42].copy_from_slice(&seq.to_be_bytes());
    d.extend_from_slice(payload);
    let c = !fold(sum16(0, &d[34..]));
    d[36..38].copy_from_slice(&c.to_be_bytes());
    d
}

/// An ARP request from the kernel for the frontend's address.
fn is_arp_request_for_us(a: &[u8]) -> bool {
    a.len() >= 42 && a[12..14] == [8, 6] && a[20..22] == [0, 1] && a[38..42] == FE_IP
}

/// The real netfront resolves the namespace's address with ARP and pings
/// it; the kernel answers both (id, seq, payload and checksums checked).
#[test]
fn tap_netns_arp_and_icmp_echo() {
    let Some((_ns, tap)) = tap_in_netns("a") else {
        return;
    };
    let host = Host::new();
    let mut g = host.guest(
        2,
        tap.clone() as Arc<dyn Port>,
        NetbackConfig::default(),
        cfg(),
    );
    let mac = g.mac();

    // ARP: who has 10.98.0.1? (repeated until answered: the first frames
    // may go out before the kernel has the link up).
    let req = arp(1, [0xFF; 6], mac, FE_IP, [0; 6], NS_IP);
    let deadline = Instant::now() + GUARD;
    let ns_mac = 'arp: loop {
        assert!(Instant::now() < deadline, "no ARP reply from the kernel");
        g.nf().send(Packet::new(req.clone())).unwrap();
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            let _ = g.nf().wait(Duration::from_millis(50)).unwrap();
            while let Some(p) = g.nf().recv() {
                let a = &p.data;
                if a.len() >= 42 && a[12..14] == [8, 6] && a[20..22] == [0, 2] && a[28..32] == NS_IP
                {
                    assert_eq!(&a[..6], &mac, "the reply is for us");
                    assert_eq!(&a[32..38], &mac, "target hardware address");
                    assert_eq!(&a[38..42], &FE_IP, "target protocol address");
                    assert_eq!(&a[6..12], &a[22..28], "sender MAC");
                    break 'arp <[u8; 6]>::try_from(&a[22..28]).unwrap();
                }
            }
        }
    };

    // ICMP echo, several sizes (one needs SG on the way back: the kernel
    // answers with a frame as large as the request).
    let id = (std::process::id() & 0xFFFF) as u16;
    for (seq, size) in [(1u16, 56usize), (2, 1000), (3, 1472)] {
        let payload = pattern(u64::from(seq), size);
        let ping = echo_request(ns_mac, mac, id, seq, &payload);
        g.nf().send(Packet::new(ping.clone())).unwrap();
        let deadline = Instant::now() + GUARD;
        let mut resent = Instant::now();
        'echo: loop {
            assert!(Instant::now() < deadline, "no echo reply {seq}");
            let _ = g.nf().wait(Duration::from_millis(50)).unwrap();
            while let Some(p) = g.nf().recv() {
                let a = &p.data;
                if is_arp_request_for_us(a) {
                    let rep = arp(2, ns_mac, mac, FE_IP, ns_mac, NS_IP);
                    g.nf().send(Packet::new(rep)).unwrap();
                    continue;
                }
                if a.len() >= 42 && a[12..14] == [8, 0] && a[23] == 1 && a[34] == 0 {
                    assert_eq!(&a[..6], &mac);
                    assert_eq!(&a[6..12], &ns_mac);
                    assert_eq!(&a[26..30], &NS_IP);
                    assert_eq!(&a[30..34], &FE_IP);
                    assert_eq!(&a[38..40], &id.to_be_bytes(), "id");
                    assert_eq!(&a[40..42], &seq.to_be_bytes(), "seq");
                    let tot = usize::from(u16::from_be_bytes([a[16], a[17]]));
                    assert_eq!(&a[42..14 + tot], &payload[..], "the payload is echoed");
                    assert!(ip_csum_ok(a), "IP checksum");
                    assert_eq!(fold(sum16(0, &a[34..14 + tot])), 0xFFFF, "ICMP checksum");
                    break 'echo;
                }
            }
            if resent.elapsed() > Duration::from_secs(1) {
                // The kernel may have dropped it while resolving us.
                g.nf().send(Packet::new(ping.clone())).unwrap();
                resent = Instant::now();
            }
        }
    }
    let st = g.nb().stats();
    assert!(st.tx_packets >= 4 && st.rx_packets >= 4, "{st:?}");
    assert_eq!(tap.tx_errors(), 0);
    assert!(g.nf().broken().is_none());
}

#[cfg(feature = "smoltcp")]
/// Kills the child (a server in the namespace) when dropped.
struct Server(Child);

#[cfg(feature = "smoltcp")]
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(feature = "smoltcp")]
/// The Python server: reads `n` bytes, echoing them back as they come,
/// then half-closes, waits for the peer's FIN and prints the count and
/// the CRC-32 of what it read.
const ECHO_SERVER: &str = r#"
import socket, sys, zlib
n, port = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.98.0.1", port))
s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
got, crc = 0, 0
while got < n:
    b = c.recv(1 << 16)
    if not b:
        break
    got += len(b)
    crc = zlib.crc32(b, crc)
    c.sendall(b)
c.shutdown(socket.SHUT_WR)
while c.recv(1 << 16):
    pass
print(got, crc, flush=True)
c.close()
"#;

#[cfg(feature = "smoltcp")]
/// CRC-32 (IEEE), as Python's `zlib.crc32`.
fn crc32(d: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    let mut c = !0u32;
    for b in d {
        c = table[((c ^ u32::from(*b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(feature = "smoltcp")]
/// Starts the echo server in namespace `ns`; `None` (after printing why)
/// without python3.
fn echo_server(ns: &str, n: usize, port: u16) -> Option<(Server, BufReader<ChildStdout>)> {
    let python = match Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
    {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => {
            println!("SKIPPED: no python3");
            return None;
        }
    };
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, &python, "-c", ECHO_SERVER])
        .arg(n.to_string())
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut server = Server(child);
    let mut out = out;
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    if line.trim() != "ready" {
        let st = server.0.wait();
        panic!("the server did not start: {line:?} {st:?}");
    }
    Some((server, out))
}

#[cfg(not(feature = "smoltcp"))]
#[test]
fn smoltcp_tcp_through_tap_to_a_server_in_the_netns() {
    println!("SKIPPED: needs feature smoltcp");
}

/// smoltcp over the real netfront opens a TCP connection through netback
/// and the TAP to a server in the namespace and sends 4 MiB; the server
/// echoes every byte back and reports the CRC-32 of what it read. Both
/// directions are checked in full. (GSO off for the smoltcp side, as
/// netfront's docs say: the kernel's large TCP frames reach it segmented
/// by netback.)
#[cfg(feature = "smoltcp")]
#[test]
fn smoltcp_tcp_through_tap_to_a_server_in_the_netns() {
    use smoltcp::iface::{Config, Interface, SocketSet};
    use smoltcp::socket::tcp;
    use smoltcp::time::Instant as SInstant;
    use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

    const N: usize = 4 << 20;
    const PORT: u16 = 5201;
    let Some((ns, tap)) = tap_in_netns("t") else {
        return;
    };
    let Some((_server, mut out)) = echo_server(&ns.0, N, PORT) else {
        return;
    };
    let host = Host::new();
    let fcfg = NetfrontConfig {
        gso_tcpv4: false,
        gso_tcpv6: false,
        ..cfg()
    };
    let mut g = host.guest(
        2,
        tap.clone() as Arc<dyn Port>,
        NetbackConfig::default(),
        fcfg,
    );
    let mac = g.mac();
    let nf = g.nf();
    let mut iface = Interface::new(
        Config::new(HardwareAddress::Ethernet(EthernetAddress(mac))),
        nf,
        SInstant::now(),
    );
    iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::v4(10, 98, 0, 2), 24))
            .unwrap();
    });
    let mut sockets = SocketSet::new(vec![]);
    let sock = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 256 << 10]),
        tcp::SocketBuffer::new(vec![0; 256 << 10]),
    );
    let h = sockets.add(sock);
    sockets
        .get_mut::<tcp::Socket<'_>>(h)
        .connect(iface.context(), (IpAddress::v4(10, 98, 0, 1), PORT), 49_152)
        .unwrap();

    let data = pattern(0xC0FFEE, N);
    let mut sent = 0;
    let mut echoed: Vec<u8> = Vec::with_capacity(N);
    let mut closed = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "TCP transfer stuck: sent {sent}, echoed {} of {N}",
            echoed.len()
        );
        iface.poll(SInstant::now(), nf, &mut sockets);
        let s = sockets.get_mut::<tcp::Socket<'_>>(h);
        let mut progress = false;
        if s.can_send() && sent < N {
            let n = s.send_slice(&data[sent..]).unwrap();
            sent += n;
            progress |= n > 0;
        }
        while s.can_recv() {
            let n = s
                .recv(|b| {
                    echoed.extend_from_slice(b);
                    (b.len(), b.len())
                })
                .unwrap();
            if n == 0 {
                break;
            }
            progress = true;
        }
        if sent == N && !closed {
            s.close();
            closed = true;
            progress = true;
        }
        if echoed.len() >= N && !s.may_recv() {
            break;
        }
        assert!(
            s.is_open() || echoed.len() >= N,
            "connection closed early ({:?}): sent {sent}, echoed {}",
            s.state(),
            echoed.len()
        );
        if progress {
            continue;
        }
        let delay = iface
            .poll_delay(SInstant::now(), &sockets)
            .map_or(Duration::from_millis(10), |d| {
                Duration::from_micros(d.total_micros())
            })
            .min(Duration::from_millis(10));
        if !delay.is_zero() {
            nf.wait(delay).expect("netfront");
        }
    }
    assert_eq!(echoed.len(), N, "bytes echoed");
    assert!(
        echoed == data,
        "the echo differs: {}",
        first_diff(&echoed, &data)
    );
    // The server's view: every byte arrived, intact.
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let mut it = line.split_whitespace().map(|w| w.parse::<u64>().unwrap());
    assert_eq!(it.next(), Some(N as u64), "bytes the server read");
    assert_eq!(
        it.next(),
        Some(u64::from(crc32(&data))),
        "CRC-32 at the server"
    );
    // A few more polls so the final ACKs go out before the vif closes.
    for _ in 0..10 {
        iface.poll(SInstant::now(), nf, &mut sockets);
        let _ = nf.wait(Duration::from_millis(5));
    }
    assert!(nf.broken().is_none());
    let st = g.nb().stats();
    assert!(
        st.rx_packets > 0 && st.tx_packets > 0 && !st.broken,
        "{st:?}"
    );
    assert_eq!(tap.tx_errors(), 0);
}
