//! `netback_tx`: the netback TX chain parser (`netback/src/tx.rs`, through
//! `pvio_netback::fuzz_api::parse_tx_ring`, the TX worker's own loop) on the
//! slots a hostile frontend put on the ring (SECURITY.md NB1–NB10). A parse
//! that passes a packet on must describe it exactly: fragments inside their
//! pages, none empty, at most 18, lengths adding up to the packet's.

use arbitrary::Arbitrary;
use pvio_abi::GrantRef;
use pvio_abi::netif::{ExtraInfo, NETIF_RSP_ERROR, TxRequest};
use pvio_netback::fuzz_api::parse_tx_ring;
use pvio_netback::{FATAL_TX_SLOTS, MAX_TX_SLOTS};

use crate::Enc;

/// What the backend offered.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub sg: bool,
    pub gso_v4: bool,
    pub gso_v6: bool,
}

/// One TX ring slot.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// A data request; `flags` keeps its low 4 bits (the defined flags).
    Data {
        gref: u32,
        offset: u16,
        flags: u8,
        id: u16,
        size: u16,
    },
    /// An extra-info slot.
    Extra { ty: u8, more: bool, u: [u16; 3] },
    /// Anything.
    Raw([u8; 12]),
}

/// Number of [`Slot`] variants.
pub const SLOTS: u32 = 3;

fn slot(s: &Slot) -> TxRequest {
    match *s {
        Slot::Data {
            gref,
            offset,
            flags,
            id,
            size,
        } => TxRequest {
            gref: GrantRef(gref),
            offset,
            flags: u16::from(flags & 0xf),
            id,
            size,
        },
        Slot::Extra { ty, more, u } => {
            let e = ExtraInfo::new(ty, u).with_more(more);
            let mut b = [0u8; 12];
            b[..8].copy_from_slice(bytemuck::bytes_of(&e));
            bytemuck::pod_read_unaligned(&b)
        }
        Slot::Raw(b) => bytemuck::pod_read_unaligned(&b),
    }
}

pub fn run(data: &[u8]) {
    let Some((h, slots)) = crate::decode::<Header, Slot>(data) else {
        return;
    };
    let reqs: Vec<TxRequest> = slots.iter().map(slot).collect();
    let Ok(pkts) = parse_tx_ring(&reqs, h.sg, h.gso_v4, h.gso_v6) else {
        return; // fatal: the vif is disabled
    };
    let used: usize = pkts.iter().map(|p| p.slots).sum();
    assert_eq!(used, reqs.len(), "every slot answered exactly once");
    for p in &pkts {
        assert!(p.slots >= 1);
        assert!(p.data_statuses.len() < FATAL_TX_SLOTS, "NB2 not fatal");
        if p.pass {
            assert!(p.len >= 14, "NB6: runt passed on");
            assert!(
                p.frags.len() <= MAX_TX_SLOTS,
                "NB1: {} frags",
                p.frags.len()
            );
            let mut total = 0usize;
            for &(_, off, len) in &p.frags {
                assert!(len > 0, "NB7: empty fragment");
                assert!(usize::from(off) + usize::from(len) <= 4096, "NB4");
                total += usize::from(len);
            }
            assert_eq!(total, p.len, "fragments do not add up");
            if !h.sg {
                assert_eq!(p.data_statuses.len(), 1, "multi-slot without sg");
            }
        } else if p.frags.is_empty() && p.data_statuses.contains(&NETIF_RSP_ERROR) {
            assert!(p.data_statuses.iter().all(|&s| s == NETIF_RSP_ERROR));
        }
    }
}

fn data(e: &mut Enc, gref: u32, offset: u16, flags: u8, id: u16, size: u16) {
    e.variant(0, SLOTS)
        .u32(gref)
        .u16(offset)
        .u8(flags)
        .u16(id)
        .u16(size);
}

fn extra(e: &mut Enc, ty: u8, more: bool, u: [u16; 3]) {
    e.variant(1, SLOTS).u8(ty).bool(more);
    for v in u {
        e.u16(v);
    }
}

/// Seeds: a plain packet, a chain, GSO and multicast extras, the NB1/NB2
/// slot counts, 1-byte header slots (NB8), zero-length fragments (NB7).
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    const MORE: u8 = 4;
    const EXTRA: u8 = 8;
    let all = |e: &mut Enc| {
        e.bool(true).bool(true).bool(true);
    };
    let mut out = Vec::new();
    let mut e = Enc::new();
    all(&mut e);
    data(&mut e, 8, 0, 0, 1, 60);
    data(&mut e, 9, 100, MORE, 2, 3000);
    data(&mut e, 10, 0, 0, 3, 1000);
    out.push(("plain_and_chain", e.done()));
    let mut e = Enc::new();
    all(&mut e);
    data(&mut e, 8, 0, MORE | EXTRA, 1, 9000);
    extra(&mut e, 1, true, [1448, 1, 0]); // GSO TCPv4
    extra(&mut e, 2, false, [0x0133, 0, 0]); // mcast add
    data(&mut e, 9, 0, MORE, 2, 4096);
    data(&mut e, 10, 0, 0, 3, 904);
    out.push(("gso_mcast", e.done()));
    for (name, n) in [("nb1_19_slots", 19u16), ("nb2_20_slots", 20)] {
        let mut e = Enc::new();
        all(&mut e);
        data(&mut e, 8, 0, MORE, 0, 128);
        for i in 1..n {
            let more = if i + 1 < n { MORE } else { 0 };
            data(&mut e, 8 + u32::from(i), 0, more, i, 1);
        }
        out.push((name, e.done()));
    }
    let mut e = Enc::new();
    all(&mut e);
    data(&mut e, 8, 0, MORE, 0, 60);
    for i in 1..18u16 {
        data(&mut e, 8, 0, MORE, i, 0);
    }
    data(&mut e, 8, 4000, 0, 18, 0);
    out.push(("nb7_zero_frags", e.done()));
    let mut e = Enc::new();
    e.bool(false).bool(false).bool(false);
    data(&mut e, 8, 4090, MORE, 0, 20);
    extra(&mut e, 0, true, [0; 3]);
    e.variant(2, SLOTS).bytes(&[0xff; 12]);
    out.push(("nb4_nb9", e.done()));
    out
}
