//! Shared fixtures: domains, a vif device, and a backend written directly
//! against the rings (the real netback is not needed): it can answer
//! correctly or break every rule.

#![allow(dead_code)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pvio_abi::netif::{
    ExtraGso, ExtraInfo, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETRXF_EXTRA_INFO, NETRXF_MORE_DATA,
    NETTXF_EXTRA_INFO, NETTXF_MORE_DATA, RxRequest, RxResponse, TxRequest, TxResponse,
};
use pvio_abi::xenbus::XenbusState;
use pvio_abi::{DomId, GrantRef, Port};
use pvio_hv::{Domain, DomainConfig, Hypervisor, MappedPages};
use pvio_netfront::{NetError, Netfront, NetfrontConfig};
use pvio_ring::BackRing;
use pvio_shmem::{SharedMem, Zeroable};
use pvio_xenbus::device::{read_opt, read_u32, switch_state, wait_for_state};
use pvio_xenbus::toolstack::{DevicePaths, create_device};

pub const GUARD: Duration = Duration::from_secs(10);

pub type TxB = BackRing<MappedPages, TxRequest, TxResponse>;
pub type RxB = BackRing<MappedPages, RxRequest, RxResponse>;

pub struct Fixture {
    pub hv: Hypervisor,
    pub dom0: Domain,
    pub fe: Domain,
    pub be: Domain,
    pub dev: DevicePaths,
}

/// Three domains and a vif between the frontend (1) and backend (2), with
/// `frontend_keys` for the toolstack's frontend directory.
pub fn domains(frontend_keys: &[(&str, &str)]) -> Fixture {
    let hv = Hypervisor::new();
    let dc = DomainConfig {
        pages: 16384,
        ..DomainConfig::default()
    };
    let dom0 = hv.create_domain(DomId(0), dc).unwrap();
    let fe = hv.create_domain(DomId(1), dc).unwrap();
    let be = hv.create_domain(DomId(2), dc).unwrap();
    let dev = DevicePaths::new(fe.id(), be.id(), "vif", 0);
    create_device(&dom0.store(), &dev, frontend_keys, &[]).unwrap();
    Fixture {
        hv,
        dom0,
        fe,
        be,
        dev,
    }
}

/// Every feature a backend can offer.
pub const ALL: &[(&str, &str)] = &[
    ("feature-rx-copy", "1"),
    ("feature-sg", "1"),
    ("feature-gso-tcpv4", "1"),
    ("feature-gso-tcpv6", "1"),
    ("feature-ipv6-csum-offload", "1"),
    ("feature-split-event-channels", "1"),
    ("multi-queue-max-queues", "4"),
];

/// The least a backend must offer.
pub const MINIMAL: &[(&str, &str)] = &[("feature-rx-copy", "1")];

/// Config for tests: short timeouts.
pub fn cfg() -> NetfrontConfig {
    NetfrontConfig {
        timeout: Duration::from_secs(5),
        tx_timeout: Duration::from_secs(5),
        close_timeout: Duration::from_millis(20),
        ..NetfrontConfig::default()
    }
}

pub struct BQueue {
    pub tx: TxB,
    pub rx: RxB,
    pub tx_port: Port,
    pub rx_port: Port,
}

/// The backend's half, by hand.
pub struct TestBack {
    pub be: Domain,
    pub fe: DomId,
    pub dev: DevicePaths,
    pub queues: Vec<BQueue>,
}

/// A TX packet as the backend read it.
#[derive(Debug, Clone)]
pub struct TxPkt {
    /// Data requests, in ring order (first one first).
    pub reqs: Vec<TxRequest>,
    pub extras: Vec<ExtraInfo>,
    pub data: Vec<u8>,
}

impl TxPkt {
    pub fn flags(&self) -> u16 {
        self.reqs[0].flags
    }
    pub fn gso(&self) -> Option<ExtraGso> {
        self.extras.first().map(|e| e.as_gso())
    }
}

fn extra_of_tx(r: &TxRequest) -> ExtraInfo {
    let mut e = ExtraInfo::zeroed();
    pvio_shmem::bytes_of_mut(&mut e).copy_from_slice(&pvio_shmem::bytes_of(r)[..8]);
    e
}

pub fn rx_of_extra(e: ExtraInfo) -> RxResponse {
    let mut r = RxResponse::zeroed();
    pvio_shmem::bytes_of_mut(&mut r).copy_from_slice(pvio_shmem::bytes_of(&e));
    r
}

/// Runs the backend handshake with `features` while the frontend connects.
pub fn connect(
    fx: &Fixture,
    features: &[(&str, &str)],
    cfg: NetfrontConfig,
) -> (Result<Netfront, NetError>, Option<TestBack>) {
    let be = fx.be.clone();
    let dev = fx.dev.clone();
    let features: Vec<(String, String)> = features
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let backend = std::thread::spawn(move || backend_half(be, dev, features));
    let f = Netfront::connect(fx.fe.clone(), fx.dev.clone(), cfg);
    (f, backend.join().unwrap())
}

/// Connects with every feature; panics on failure.
pub fn setup(frontend_keys: &[(&str, &str)], cfg: NetfrontConfig) -> (Fixture, Netfront, TestBack) {
    let fx = domains(frontend_keys);
    let (f, b) = connect(&fx, ALL, cfg);
    (fx, f.unwrap(), b.unwrap())
}

fn backend_half(be: Domain, dev: DevicePaths, features: Vec<(String, String)>) -> Option<TestBack> {
    let xs = be.store();
    for (k, v) in &features {
        xs.write(&dev.backend_key(k), v.as_bytes()).unwrap();
    }
    switch_state(&xs, &dev.backend, XenbusState::InitWait).unwrap();
    wait_for_state(&xs, &dev.frontend, GUARD, |s| {
        matches!(s, XenbusState::Connected | XenbusState::Closing)
    })
    .ok()
    .filter(|s| *s == XenbusState::Connected)?;
    let key = |k: &str| dev.frontend_key(k);
    let n = read_opt(&xs, &key("multi-queue-num-queues"))
        .unwrap()
        .map_or(1, |_| {
            read_u32(&xs, &key("multi-queue-num-queues")).unwrap()
        });
    let mut queues = Vec::new();
    for i in 0..n {
        let dir = if n > 1 {
            format!("queue-{i}/")
        } else {
            String::new()
        };
        let u = |k: &str| read_u32(&xs, &key(&format!("{dir}{k}"))).unwrap();
        let tx = TxB::attach(
            be.map_pages(dev.frontend_id, &[GrantRef(u("tx-ring-ref"))])
                .unwrap(),
        )
        .unwrap();
        let rx = RxB::attach(
            be.map_pages(dev.frontend_id, &[GrantRef(u("rx-ring-ref"))])
                .unwrap(),
        )
        .unwrap();
        let split = read_opt(&xs, &key(&format!("{dir}event-channel-tx")))
            .unwrap()
            .is_some();
        let bind = |p: u32| {
            be.events()
                .bind_interdomain(dev.frontend_id, Port(p))
                .unwrap()
        };
        let (tx_port, rx_port) = if split {
            (bind(u("event-channel-tx")), bind(u("event-channel-rx")))
        } else {
            let p = bind(u("event-channel"));
            (p, p)
        };
        queues.push(BQueue {
            tx,
            rx,
            tx_port,
            rx_port,
        });
    }
    switch_state(&xs, &dev.backend, XenbusState::Connected).unwrap();
    Some(TestBack {
        fe: dev.frontend_id,
        be,
        dev,
        queues,
    })
}

impl TestBack {
    pub fn next_tx(&mut self, q: usize) -> TxRequest {
        let deadline = Instant::now() + GUARD;
        loop {
            if let Some(r) = self.queues[q].tx.next_request().unwrap() {
                return r;
            }
            assert!(Instant::now() < deadline, "no tx request");
            std::thread::yield_now();
        }
    }

    pub fn try_next_tx(&mut self, q: usize) -> Option<TxRequest> {
        self.queues[q].tx.next_request().unwrap()
    }

    /// Reads the whole TX page behind a grant.
    pub fn tx_page(&self, gref: GrantRef) -> Vec<u8> {
        let m = self.be.map_readonly(self.fe, gref).unwrap();
        let mut v = vec![0; 4096];
        m.read_bytes(0, &mut v).unwrap();
        v
    }

    /// Reads one complete TX packet from queue `q` (waiting for it).
    pub fn tx_packet(&mut self, q: usize) -> TxPkt {
        let first = self.next_tx(q);
        let mut extras = Vec::new();
        if first.flags & NETTXF_EXTRA_INFO != 0 {
            loop {
                let e = extra_of_tx(&self.next_tx(q));
                extras.push(e);
                if !e.has_more() {
                    break;
                }
            }
        }
        let mut reqs = vec![first];
        while reqs.last().unwrap().flags & NETTXF_MORE_DATA != 0 {
            reqs.push(self.next_tx(q));
            assert!(reqs.len() <= 18, "too many slots");
        }
        let rest: usize = reqs[1..].iter().map(|r| usize::from(r.size)).sum();
        let first_len = usize::from(first.size) - rest;
        let mut data = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            let len = if i == 0 {
                first_len
            } else {
                usize::from(r.size)
            };
            assert!(usize::from(r.offset) + len <= 4096);
            let m = self.be.map_readonly(self.fe, r.gref).unwrap();
            let mut v = vec![0; len];
            m.read_bytes(usize::from(r.offset), &mut v).unwrap();
            data.extend(v);
        }
        TxPkt { reqs, extras, data }
    }

    /// Answers a TX packet: one response per data slot with `status`, a
    /// NULL per extra, in ring order.
    pub fn answer_tx(&mut self, q: usize, p: &TxPkt, status: i16) {
        let ring = &mut self.queues[q].tx;
        let rsp = |id, status| TxResponse { id, status };
        ring.push_response(&rsp(p.reqs[0].id, status)).unwrap();
        for _ in &p.extras {
            ring.push_response(&rsp(0, NETIF_RSP_NULL)).unwrap();
        }
        for r in &p.reqs[1..] {
            ring.push_response(&rsp(r.id, status)).unwrap();
        }
        ring.publish().unwrap();
        let _ = self.be.events().send(self.queues[q].tx_port);
    }

    /// Reads and answers (OK) one packet.
    pub fn echo_tx(&mut self, q: usize) -> TxPkt {
        let p = self.tx_packet(q);
        self.answer_tx(q, &p, NETIF_RSP_OKAY);
        p
    }

    /// Pushes a TX response as is.
    pub fn tx_response(&mut self, q: usize, id: u16, status: i16) {
        let ring = &mut self.queues[q].tx;
        ring.push_response(&TxResponse { id, status }).unwrap();
        ring.publish().unwrap();
        let _ = self.be.events().send(self.queues[q].tx_port);
    }

    pub fn next_rx(&mut self, q: usize) -> RxRequest {
        let deadline = Instant::now() + GUARD;
        loop {
            if let Some(r) = self.queues[q].rx.next_request().unwrap() {
                return r;
            }
            assert!(Instant::now() < deadline, "no rx request posted");
            std::thread::yield_now();
        }
    }

    /// RX requests posted and not consumed.
    pub fn rx_posted(&mut self, q: usize) -> u32 {
        self.queues[q].rx.unconsumed_requests().unwrap()
    }

    /// Delivers `data` as one packet on queue `q` (slots of 4096 bytes at
    /// offset 0, a GSO extra if `gso`).
    pub fn inject(&mut self, q: usize, data: &[u8], flags: u16, gso: Option<ExtraGso>) {
        let chunks: Vec<&[u8]> = data.chunks(4096).collect();
        for (i, c) in chunks.iter().enumerate() {
            let req = self.next_rx(q);
            let m = self.be.map(self.fe, req.gref).unwrap();
            m.write_bytes(0, c).unwrap();
            drop(m);
            let mut f = if i + 1 < chunks.len() {
                NETRXF_MORE_DATA
            } else {
                0
            };
            if i == 0 {
                f |= flags;
                if gso.is_some() {
                    f |= NETRXF_EXTRA_INFO;
                }
            }
            self.queues[q]
                .rx
                .push_response(&RxResponse {
                    id: req.id,
                    offset: 0,
                    flags: f,
                    status: c.len() as i16,
                })
                .unwrap();
            if i == 0
                && let Some(g) = gso
            {
                let _ = self.next_rx(q);
                self.queues[q]
                    .rx
                    .push_response(&rx_of_extra(ExtraInfo::gso(g)))
                    .unwrap();
            }
        }
        self.flush_rx(q);
    }

    /// Pushes one RX response as is (consuming a posted request).
    pub fn rx_response(&mut self, q: usize, rsp: RxResponse) -> RxRequest {
        let req = self.next_rx(q);
        self.queues[q].rx.push_response(&rsp).unwrap();
        req
    }

    pub fn flush_rx(&mut self, q: usize) {
        self.queues[q].rx.publish().unwrap();
        let _ = self.be.events().send(self.queues[q].rx_port);
    }

    /// Writes `rsp_prod` of a ring directly.
    pub fn set_rsp_prod_tx(&self, q: usize, v: u32) {
        self.queues[q]
            .tx
            .mem()
            .store_u32(8, v, Ordering::Release)
            .unwrap();
        let _ = self.be.events().send(self.queues[q].tx_port);
    }

    pub fn set_rsp_prod_rx(&self, q: usize, v: u32) {
        self.queues[q]
            .rx
            .mem()
            .store_u32(8, v, Ordering::Release)
            .unwrap();
        let _ = self.be.events().send(self.queues[q].rx_port);
    }
}

/// Receives one frame, waiting up to GUARD.
pub fn recv_one(f: &mut Netfront) -> pvio_netfront::Packet {
    let deadline = Instant::now() + GUARD;
    loop {
        if let Some(p) = f.recv() {
            return p;
        }
        assert!(Instant::now() < deadline, "no frame received");
        let _ = f.wait(Duration::from_millis(50));
    }
}

/// Waits until the device is broken.
pub fn wait_broken(f: &mut Netfront) {
    let deadline = Instant::now() + GUARD;
    while f.broken().is_none() {
        assert!(Instant::now() < deadline, "not broken");
        let _ = f.wait(Duration::from_millis(20));
        let _ = f.recv();
    }
}

/// A deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        for c in v.chunks_mut(8) {
            let x = self.next().to_le_bytes();
            c.copy_from_slice(&x[..c.len()]);
        }
        v
    }
}

/// An Ethernet frame of `len` bytes: random payload behind a non-IP
/// ethertype (so it hashes to queue 0).
pub fn frame(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v = rng.bytes(len);
    if len >= 14 {
        v[12] = 0x88;
        v[13] = 0xb5; // local experimental ethertype
    }
    v
}

/// An IPv4/TCP frame of `len` bytes (>= 54) between the given ports.
pub fn tcp4(rng: &mut Rng, len: usize, sport: u16, dport: u16) -> Vec<u8> {
    let mut v = rng.bytes(len);
    v[12] = 0x08;
    v[13] = 0x00;
    let ip = &mut v[14..];
    ip[0] = 0x45;
    let tot = (len - 14).min(0xffff) as u16;
    ip[2..4].copy_from_slice(&tot.to_be_bytes());
    ip[6] = 0;
    ip[7] = 0;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
    ip[20..22].copy_from_slice(&sport.to_be_bytes());
    ip[22..24].copy_from_slice(&dport.to_be_bytes());
    ip[32] = 0x50;
    v
}

/// An IPv6/UDP frame of `len` bytes (>= 62).
pub fn udp6(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v = rng.bytes(len);
    v[12] = 0x86;
    v[13] = 0xdd;
    let ip = &mut v[14..];
    ip[0] = 0x60;
    let pl = (len - 54) as u16;
    ip[4..6].copy_from_slice(&pl.to_be_bytes());
    ip[6] = 17;
    ip[40 + 4..40 + 6].copy_from_slice(&pl.to_be_bytes());
    v
}
