//! `netfront_responses`: the real `pvio_netfront::Netfront` on the embedded
//! hypervisor against a hostile backend driven by the fuzzer on the TX and
//! RX rings (SECURITY.md NF1–NF3, NF6, R11). The backend half is the one
//! netfront's own tests use (`netfront/tests/common`). The frontend must
//! never panic, and once broken it stays broken.

use std::time::Duration;

use arbitrary::Arbitrary;
use pvio_abi::netif::{ExtraInfo, RxResponse, TxRequest, TxResponse};
use pvio_netfront::{NetfrontConfig, Packet};
use pvio_shmem::{Ordering, SharedMem};

use crate::Enc;

#[allow(dead_code, unused_imports, clippy::all)]
#[path = "../../netfront/tests/common/mod.rs"]
mod common;

/// Frontend configuration.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub sg: bool,
    pub trusted: bool,
    pub queues: u8,
}

/// One step of the user or of the hostile backend; `q` picks a queue.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// User: send a frame of `len % 9000 + 14` bytes.
    Send { len: u16 },
    /// Backend: take the TX requests of queue `q`.
    TakeTx { q: u8 },
    /// Backend: answer a taken TX request (`id ^ xor` if `forge`).
    TxRsp {
        q: u8,
        pick: u8,
        forge: bool,
        xor: u16,
        status: i16,
    },
    /// Backend: answer a posted RX request with these fields (`id ^ xor`
    /// if `forge`).
    RxRsp {
        q: u8,
        forge: bool,
        xor: u16,
        offset: u16,
        flags: u16,
        status: i16,
    },
    /// Backend: answer a posted RX request with an extra-info slot.
    RxExtra {
        q: u8,
        ty: u8,
        more: bool,
        u: [u16; 3],
    },
    /// Backend: publish RX responses and notify.
    FlushRx { q: u8 },
    /// Backend: `rsp_prod` of TX or RX (`+ v % 8` if `rel`).
    RspProd { q: u8, rx: bool, rel: bool, v: u32 },
    /// User: receive.
    Recv,
    /// User: wait for nothing.
    Wait,
}

/// Number of [`Op`] variants.
pub const OPS: u32 = 9;

pub fn run(data: &[u8]) {
    let Some((h, ops)) = crate::decode::<Header, Op>(data) else {
        return;
    };
    let fx = common::domains(&[]);
    let cfg = NetfrontConfig {
        sg: h.sg,
        trusted: Some(h.trusted),
        queues: u32::from(h.queues % 3) + 1,
        ..common::cfg()
    };
    let (f, b) = common::connect(&fx, common::ALL, cfg);
    let (mut f, mut b) = match (f, b) {
        (Ok(f), Some(b)) => (f, b),
        (f, b) => panic!("handshake failed: {:?} {}", f.err(), b.is_some()),
    };
    let mut taken: Vec<Vec<TxRequest>> = vec![Vec::new(); b.queues.len()];
    let qn = b.queues.len();
    for op in ops {
        let broken_before = f.broken().is_some();
        match op {
            Op::Send { len } => {
                let n = usize::from(len % 9000) + 14;
                let _ = f.try_send(Packet::new(vec![0x42u8; n]));
            }
            Op::TakeTx { q } => {
                let q = usize::from(q) % qn;
                while taken[q].len() < 512
                    && let Ok(Some(r)) = b.queues[q].tx.next_request()
                {
                    taken[q].push(r);
                }
            }
            Op::TxRsp {
                q,
                pick,
                forge,
                xor,
                status,
            } => {
                let q = usize::from(q) % qn;
                if b.queues[q].tx.unanswered() > 0 && !taken[q].is_empty() {
                    let i = usize::from(pick) % taken[q].len();
                    let r = taken[q].remove(i);
                    let id = if forge { r.id ^ xor } else { r.id };
                    let ring = &mut b.queues[q].tx;
                    let _ = ring.push_response(&TxResponse { id, status });
                    let _ = ring.publish();
                    let _ = b.be.events().send(b.queues[q].tx_port);
                }
            }
            Op::RxRsp {
                q,
                forge,
                xor,
                offset,
                flags,
                status,
            } => {
                let q = usize::from(q) % qn;
                let ring = &mut b.queues[q].rx;
                if let Ok(Some(req)) = ring.next_request() {
                    let id = if forge { req.id ^ xor } else { req.id };
                    let _ = ring.push_response(&RxResponse {
                        id,
                        offset,
                        flags,
                        status,
                    });
                }
            }
            Op::RxExtra { q, ty, more, u } => {
                let q = usize::from(q) % qn;
                let ring = &mut b.queues[q].rx;
                if let Ok(Some(_)) = ring.next_request() {
                    let e = ExtraInfo::new(ty, u).with_more(more);
                    let _ = ring.push_response(&common::rx_of_extra(e));
                }
            }
            Op::FlushRx { q } => {
                let q = usize::from(q) % qn;
                let _ = b.queues[q].rx.publish();
                let _ = b.be.events().send(b.queues[q].rx_port);
            }
            Op::RspProd { q, rx, rel, v } => {
                let q = usize::from(q) % qn;
                let (mem, port) = if rx {
                    (b.queues[q].rx.mem(), b.queues[q].rx_port)
                } else {
                    (b.queues[q].tx.mem(), b.queues[q].tx_port)
                };
                let now = mem.load_u32(8, Ordering::Acquire).unwrap();
                let v = if rel { now.wrapping_add(v % 8) } else { v };
                mem.store_u32(8, v, Ordering::Release).unwrap();
                let _ = b.be.events().send(port);
            }
            Op::Recv => {
                if let Some(p) = f.recv() {
                    assert!(!broken_before, "a packet from a broken device");
                    let _ = p;
                }
            }
            Op::Wait => {
                let _ = f.wait(Duration::ZERO);
            }
        }
        let _ = f.wait(Duration::ZERO);
        if broken_before {
            assert!(f.broken().is_some(), "broken is sticky");
        }
    }
    f.close();
    drop(b);
    drop(fx);
}

/// Seeds: a TX round trip, RX deliveries good and bad (NF2), a forged TX
/// id (NF1), `rsp_prod` overflow (NF3), an extra-info slot.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let rx = |e: &mut Enc, forge: bool, offset: u16, flags: u16, status: i16| {
        e.variant(3, OPS)
            .u8(0)
            .bool(forge)
            .u16(0x55)
            .u16(offset)
            .u16(flags)
            .i16(status);
    };
    let mut out = Vec::new();
    let mut e = Enc::new();
    e.bool(true).bool(true).u8(0);
    e.variant(0, OPS).u16(100);
    e.variant(0, OPS).u16(5000);
    e.variant(1, OPS).u8(0);
    for _ in 0..4 {
        e.variant(2, OPS).u8(0).u8(0).bool(false).u16(0).i16(0);
    }
    rx(&mut e, false, 0, 0, 60);
    e.variant(5, OPS).u8(0).variant(7, OPS);
    rx(&mut e, false, 0, 4 | 1, 4096); // more_data
    rx(&mut e, false, 0, 0, 100);
    e.variant(5, OPS).u8(0).variant(7, OPS).variant(8, OPS);
    out.push(("roundtrip", e.done()));
    let mut e = Enc::new();
    e.bool(false).bool(false).u8(1);
    e.variant(0, OPS).u16(60);
    e.variant(1, OPS).u8(0);
    e.variant(2, OPS).u8(0).u8(0).bool(true).u16(0x5500).i16(0); // NF1
    out.push(("nf1_forged", e.done()));
    let mut e = Enc::new();
    e.bool(true).bool(true).u8(0);
    rx(&mut e, false, 4000, 0, 200); // NF2
    e.variant(5, OPS).u8(0).variant(7, OPS);
    out.push(("nf2_offset", e.done()));
    let mut e = Enc::new();
    e.bool(true).bool(true).u8(0);
    rx(&mut e, false, 0, 8, 60); // extra follows
    e.variant(4, OPS)
        .u8(0)
        .u8(1)
        .bool(false)
        .u16(1448)
        .u16(1)
        .u16(0);
    e.variant(5, OPS).u8(0).variant(7, OPS);
    e.variant(6, OPS).u8(0).bool(true).bool(false).u32(1000); // NF3
    e.variant(8, OPS);
    out.push(("nf3_extra", e.done()));
    out
}
