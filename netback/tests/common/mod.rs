//! A frontend written directly against the rings, for netback's tests.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvio_abi::netif::{
    ExtraInfo, NETIF_RSP_NULL, NETRXF_EXTRA_INFO, NETRXF_MORE_DATA, NETTXF_EXTRA_INFO,
    NETTXF_MORE_DATA, RxRequest, RxResponse, TxRequest, TxResponse,
};
use pvio_abi::xenbus::XenbusState;
use pvio_abi::{DomId, GrantRef, Port as EvtPort};
use pvio_hv::{Domain, DomainConfig, Hypervisor, Window};
use pvio_netback::{Netback, NetbackConfig, Port};
use pvio_ring::FrontRing;
use pvio_shmem::{MemfdMem, SharedMem};
use pvio_xenbus::device::{switch_state, wait_for_state};
use pvio_xenbus::toolstack::{DevicePaths, create_device};

/// Failure guard for waits (never a speed assertion).
pub const GUARD: Duration = Duration::from_secs(10);

pub type TxFront = FrontRing<Window<Arc<MemfdMem>>, TxRequest, TxResponse>;
pub type RxFront = FrontRing<Window<Arc<MemfdMem>>, RxRequest, RxResponse>;

/// The hypervisor, dom0 and a backend domain.
pub struct World {
    pub hv: Hypervisor,
    pub dom0: Domain,
    pub be: Domain,
    next_dom: u16,
}

impl World {
    pub fn new() -> World {
        let hv = Hypervisor::new();
        let dc = DomainConfig {
            pages: 256,
            ..DomainConfig::default()
        };
        let dom0 = hv.create_domain(DomId(0), dc).unwrap();
        let be = hv.create_domain(DomId(1), dc).unwrap();
        World {
            hv,
            dom0,
            be,
            next_dom: 2,
        }
    }

    /// A new frontend domain with a vif device served by a new netback.
    pub fn vif(
        &mut self,
        port: Arc<dyn Port>,
        cfg: NetbackConfig,
        backend_keys: &[(&str, &str)],
    ) -> (Netback, Dev) {
        let id = DomId(self.next_dom);
        self.next_dom += 1;
        let fe = self
            .hv
            .create_domain(
                id,
                DomainConfig {
                    pages: 2048,
                    grant_frames: 8,
                    ..DomainConfig::default()
                },
            )
            .unwrap();
        let dev = DevicePaths::new(id, self.be.id(), "vif", 0);
        let mac = format!("00:16:3e:00:00:{:02x}", id.0);
        let mut keys = vec![("mac", mac.as_str())];
        keys.extend_from_slice(backend_keys);
        create_device(&self.dom0.store(), &dev, &[("mac", &mac)], &keys).unwrap();
        let nb = Netback::serve(self.be.clone(), dev.clone(), port, cfg);
        (
            nb,
            Dev {
                fe,
                be_id: self.be.id(),
                dev,
                mac: [0x00, 0x16, 0x3e, 0, 0, id.0 as u8],
            },
        )
    }
}

/// A vif device seen from its frontend domain.
pub struct Dev {
    pub fe: Domain,
    pub be_id: DomId,
    pub dev: DevicePaths,
    pub mac: [u8; 6],
}

/// Frontend options.
#[derive(Clone, Copy, Debug)]
pub struct Opts {
    pub queues: u32,
    pub split: bool,
    pub sg: bool,
    pub gso: bool,
    pub rx_bufs: u32,
    pub rx_copy: bool,
    pub no_csum_offload: bool,
    pub mcast_control: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            queues: 1,
            split: false,
            sg: true,
            gso: true,
            rx_bufs: 64,
            rx_copy: true,
            no_csum_offload: false,
            mcast_control: false,
        }
    }
}

pub struct Buf {
    pub id: u16,
    pub frame: u32,
    pub gref: GrantRef,
}

pub struct Queue {
    pub tx: TxFront,
    pub rx: RxFront,
    pub tx_port: EvtPort,
    pub rx_port: EvtPort,
    /// RX buffers by ring index of their request.
    pub posted: HashMap<u32, Buf>,
    pub spare: Vec<Buf>,
    next_id: u16,
}

pub struct Front {
    pub q: Vec<Queue>,
    pub rings: Vec<GrantRef>,
}

/// A received packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxPkt {
    pub data: Vec<u8>,
    pub flags: u16,
    pub extras: Vec<ExtraInfo>,
    pub slots: Vec<RxResponse>,
    /// `(ring index, request id)` of each slot used.
    pub reqs: Vec<(u32, u16)>,
    pub queue: usize,
}

impl Dev {
    /// Writes the frontend keys and connects (netif: straight to Connected).
    pub fn connect(&self, o: Opts) -> Front {
        let f = self.write_keys(o);
        let xs = self.fe.store();
        switch_state(&xs, &self.dev.frontend, XenbusState::Connected).unwrap();
        wait_for_state(&xs, &self.dev.backend, GUARD, |s| {
            s == XenbusState::Connected
        })
        .unwrap();
        f
    }

    pub fn write_keys(&self, o: Opts) -> Front {
        let xs = self.fe.store();
        wait_for_state(&xs, &self.dev.backend, GUARD, |s| {
            s == XenbusState::InitWait
        })
        .unwrap();
        let w = |k: &str, v: &str| xs.write(&self.dev.frontend_key(k), v.as_bytes()).unwrap();
        let b = |x: bool| if x { "1" } else { "0" };
        let mut qs = Vec::new();
        let mut rings = Vec::new();
        for i in 0..o.queues {
            let dir = if o.queues == 1 {
                String::new()
            } else {
                format!("queue-{i}/")
            };
            let frames = self.fe.alloc_frames(2).unwrap();
            let tx = TxFront::init(self.fe.frame(frames[0]).unwrap()).unwrap();
            let rx = RxFront::init(self.fe.frame(frames[1]).unwrap()).unwrap();
            let tg = self.fe.grant_access(self.be_id, frames[0], false).unwrap();
            let rg = self.fe.grant_access(self.be_id, frames[1], false).unwrap();
            rings.extend([tg, rg]);
            w(&format!("{dir}tx-ring-ref"), &tg.0.to_string());
            w(&format!("{dir}rx-ring-ref"), &rg.0.to_string());
            let ev = self.fe.events();
            let tx_port = ev.alloc_unbound(self.be_id).unwrap();
            let rx_port = if o.split {
                let p = ev.alloc_unbound(self.be_id).unwrap();
                w(&format!("{dir}event-channel-tx"), &tx_port.0.to_string());
                w(&format!("{dir}event-channel-rx"), &p.0.to_string());
                p
            } else {
                w(&format!("{dir}event-channel"), &tx_port.0.to_string());
                tx_port
            };
            qs.push(Queue {
                tx,
                rx,
                tx_port,
                rx_port,
                posted: HashMap::new(),
                spare: Vec::new(),
                next_id: 0,
            });
        }
        w("multi-queue-num-queues", &o.queues.to_string());
        w("request-rx-copy", b(o.rx_copy));
        w("feature-rx-notify", "1");
        w("feature-sg", b(o.sg));
        w("feature-gso-tcpv4", b(o.gso));
        w("feature-gso-tcpv6", b(o.gso));
        w("feature-ipv6-csum-offload", "1");
        w("feature-no-csum-offload", b(o.no_csum_offload));
        w("request-multicast-control", b(o.mcast_control));
        let mut f = Front { q: qs, rings };
        for qi in 0..f.q.len() {
            self.post_rx(&mut f, qi, o.rx_bufs);
        }
        f
    }

    /// Posts `n` more RX buffers on queue `qi`.
    pub fn post_rx(&self, f: &mut Front, qi: usize, n: u32) {
        let q = &mut f.q[qi];
        for _ in 0..n {
            let buf = match q.spare.pop() {
                Some(b) => b,
                None => {
                    let frame = self.fe.alloc_frames(1).unwrap()[0];
                    let gref = self.fe.grant_access(self.be_id, frame, false).unwrap();
                    Buf { id: 0, frame, gref }
                }
            };
            let id = q.next_id;
            q.next_id = q.next_id.wrapping_add(1);
            let idx = q.rx.indices().0;
            q.rx.push_request(&RxRequest {
                id,
                pad: 0,
                gref: buf.gref,
            })
            .unwrap();
            q.posted.insert(idx, Buf { id, ..buf });
        }
        if q.rx.publish_and_check_notify().unwrap().is_needed() {
            self.fe.events().send(q.rx_port).unwrap();
        }
    }

    /// Sends raw TX slots on queue `qi` (publishes and notifies).
    pub fn raw_tx(&self, f: &mut Front, qi: usize, slots: &[TxRequest]) {
        let q = &mut f.q[qi];
        for s in slots {
            q.tx.push_request(s).unwrap();
        }
        if q.tx.publish_and_check_notify().unwrap().is_needed() {
            self.fe.events().send(q.tx_port).unwrap();
        }
    }

    /// A data frame holding `bytes` at `offset`, granted read-only.
    pub fn tx_page(&self, offset: usize, bytes: &[u8]) -> (u32, GrantRef) {
        let frame = self.fe.alloc_frames(1).unwrap()[0];
        self.fe
            .frame(frame)
            .unwrap()
            .write_bytes(offset, bytes)
            .unwrap();
        (
            frame,
            self.fe.grant_access(self.be_id, frame, true).unwrap(),
        )
    }

    /// Sends one packet: fragments of at most `frag` bytes (one page each),
    /// `flags` on the first slot, then `extras`. Returns the slots used and
    /// the pages (free them with [`Dev::free_pages`] after the responses).
    pub fn send(
        &self,
        f: &mut Front,
        qi: usize,
        data: &[u8],
        frag: usize,
        flags: u16,
        extras: &[ExtraInfo],
    ) -> (Vec<TxRequest>, Vec<(u32, GrantRef)>) {
        let frag = frag.clamp(1, 4096);
        let chunks: Vec<&[u8]> = data.chunks(frag).collect();
        let mut slots = Vec::new();
        let mut pages = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let (frame, gref) = self.tx_page(0, c);
            pages.push((frame, gref));
            let mut fl = if i == 0 { flags } else { 0 };
            if i + 1 < chunks.len() {
                fl |= NETTXF_MORE_DATA;
            }
            if i == 0 && !extras.is_empty() {
                fl |= NETTXF_EXTRA_INFO;
            }
            slots.push(TxRequest {
                gref,
                offset: 0,
                flags: fl,
                id: i as u16 + 100,
                size: if i == 0 {
                    data.len() as u16
                } else {
                    c.len() as u16
                },
            });
            if i == 0 {
                for (k, e) in extras.iter().enumerate() {
                    let e = e.with_more(k + 1 < extras.len());
                    slots.push(extra_slot(e));
                }
            }
        }
        self.raw_tx(f, qi, &slots);
        (slots, pages)
    }

    pub fn free_pages(&self, pages: &[(u32, GrantRef)]) {
        for (frame, gref) in pages {
            let _ = self.fe.end_access(*gref);
            self.fe.free_frames(&[*frame]);
        }
    }

    /// Waits for `n` TX responses on queue `qi` (guarded).
    pub fn tx_responses(&self, f: &mut Front, qi: usize, n: usize) -> Vec<TxResponse> {
        let q = &mut f.q[qi];
        let mut out = Vec::new();
        let deadline = Instant::now() + GUARD;
        while out.len() < n {
            match q.tx.next_response().unwrap() {
                Some(r) => out.push(r),
                None => {
                    assert!(
                        Instant::now() < deadline,
                        "only {} of {n} TX responses",
                        out.len()
                    );
                    std::thread::yield_now();
                }
            }
        }
        out
    }

    /// Sends a packet and returns the statuses of its data slots (extras'
    /// NULL responses skipped), freeing its pages.
    pub fn send_wait(
        &self,
        f: &mut Front,
        qi: usize,
        data: &[u8],
        frag: usize,
        flags: u16,
        extras: &[ExtraInfo],
    ) -> Vec<i16> {
        let (slots, pages) = self.send(f, qi, data, frag, flags, extras);
        let r = self.tx_responses(f, qi, slots.len());
        self.free_pages(&pages);
        r.iter()
            .filter(|r| r.status != NETIF_RSP_NULL)
            .map(|r| r.status)
            .collect()
    }

    /// Receives the next packet on any queue, re-posting the buffers used;
    /// `None` after `wait` (a failure guard, not a clock).
    pub fn recv_within(&self, f: &mut Front, wait: Duration) -> Option<RxPkt> {
        let deadline = Instant::now() + wait;
        loop {
            for qi in 0..f.q.len() {
                if let Some(p) = self.try_recv(f, qi) {
                    return Some(p);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::yield_now();
        }
    }

    pub fn recv(&self, f: &mut Front) -> RxPkt {
        self.recv_within(f, GUARD).expect("no packet received")
    }

    fn try_recv(&self, f: &mut Front, qi: usize) -> Option<RxPkt> {
        let q = &mut f.q[qi];
        if q.rx.unconsumed_responses().unwrap() == 0 {
            return None;
        }
        // A packet is published whole: read until a slot without more_data.
        let mut p = RxPkt {
            data: Vec::new(),
            flags: 0,
            extras: Vec::new(),
            slots: Vec::new(),
            reqs: Vec::new(),
            queue: qi,
        };
        let deadline = Instant::now() + GUARD;
        let mut first = true;
        let mut extra_pending = false;
        loop {
            let idx = q.rx.indices().1;
            let Some(r) = q.rx.next_response().unwrap() else {
                assert!(Instant::now() < deadline, "partial RX packet");
                std::thread::yield_now();
                continue;
            };
            let buf = q.posted.remove(&idx).expect("response for a posted slot");
            p.reqs.push((idx, buf.id));
            if extra_pending {
                let e: ExtraInfo = bytemuck::cast(r);
                extra_pending = e.has_more();
                p.extras.push(e);
                q.spare.push(buf);
                continue;
            }
            p.slots.push(r);
            if first {
                p.flags = r.flags;
                extra_pending = r.flags & NETRXF_EXTRA_INFO != 0;
                first = false;
            }
            if r.status > 0 {
                let mut b = vec![0u8; r.status as usize];
                self.fe
                    .frame(buf.frame)
                    .unwrap()
                    .read_bytes(r.offset as usize, &mut b)
                    .unwrap();
                p.data.extend_from_slice(&b);
            }
            q.spare.push(buf);
            if r.flags & NETRXF_MORE_DATA == 0 && !extra_pending {
                break;
            }
        }
        let n = p.reqs.len() as u32;
        self.post_rx(f, qi, n);
        Some(p)
    }

    pub fn close(&self) {
        let xs = self.fe.store();
        switch_state(&xs, &self.dev.frontend, XenbusState::Closing).unwrap();
        wait_for_state(&xs, &self.dev.backend, GUARD, |s| s == XenbusState::Closing).unwrap();
        switch_state(&xs, &self.dev.frontend, XenbusState::Closed).unwrap();
        wait_for_state(&xs, &self.dev.backend, GUARD, |s| s == XenbusState::Closed).unwrap();
    }
}

/// An extra-info slot as a TX request slot.
pub fn extra_slot(e: ExtraInfo) -> TxRequest {
    let mut b = [0u8; 12];
    b[..8].copy_from_slice(bytemuck::bytes_of(&e));
    bytemuck::pod_read_unaligned(&b)
}

/// An Ethernet frame `dst <- src` of `len` bytes with a recognisable body.
pub fn frame(dst: [u8; 6], src: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut d = vec![0u8; len];
    d[..6].copy_from_slice(&dst);
    d[6..12].copy_from_slice(&src);
    d[12..14].copy_from_slice(&0x88B5u16.to_be_bytes()); // local experimental
    for (i, b) in d[14..].iter_mut().enumerate() {
        *b = seed.wrapping_add((i % 251) as u8);
    }
    d
}

fn sum16(mut acc: u32, d: &[u8]) -> u32 {
    for c in d.chunks(2) {
        let v = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        acc += u32::from(v);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    acc as u16
}

/// An IPv4/TCP frame with `payload` bytes and a partial checksum (the
/// pseudo-header sum in the checksum field, as a `csum_blank` sender).
pub fn tcp4(dst: [u8; 6], src: [u8; 6], payload: usize) -> Vec<u8> {
    let mut d = vec![0u8; 54 + payload];
    d[..6].copy_from_slice(&dst);
    d[6..12].copy_from_slice(&src);
    d[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    d[14] = 0x45;
    d[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
    d[22] = 64;
    d[23] = 6;
    d[26..30].copy_from_slice(&[10, 0, 0, 1]);
    d[30..34].copy_from_slice(&[10, 0, 0, 2]);
    let c = !fold(sum16(0, &d[14..34]));
    d[24..26].copy_from_slice(&c.to_be_bytes());
    d[34..36].copy_from_slice(&1234u16.to_be_bytes());
    d[36..38].copy_from_slice(&80u16.to_be_bytes());
    d[38..42].copy_from_slice(&1000u32.to_be_bytes());
    d[46] = 0x50;
    d[47] = 0x18;
    for (i, b) in d[54..].iter_mut().enumerate() {
        *b = (i * 7 % 256) as u8;
    }
    let mut acc = sum16(0, &d[26..34]);
    acc += 6 + (20 + payload) as u32;
    d[50..52].copy_from_slice(&fold(acc).to_be_bytes());
    d
}

/// Whether an IPv4/TCP frame's checksums are complete and right.
pub fn tcp4_ok(d: &[u8]) -> bool {
    let tot = u16::from_be_bytes([d[16], d[17]]) as usize;
    let mut acc = sum16(0, &d[26..34]);
    acc += 6 + (tot - 20) as u32;
    fold(sum16(0, &d[14..34])) == 0xFFFF && fold(sum16(acc, &d[34..14 + tot])) == 0xFFFF
}

/// TCP payload of an IPv4/TCP frame.
pub fn tcp4_payload(d: &[u8]) -> &[u8] {
    let tot = u16::from_be_bytes([d[16], d[17]]) as usize;
    &d[54..14 + tot]
}

/// Waits (guarded) until `cond` holds.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + GUARD;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
