//! Parsing one TX packet from the slots copied out of the ring
//! (`spec/netif.md` §2; SECURITY.md NB1–NB10). Pure: no ring, no memory.

use pvio_abi::GrantRef;
use pvio_abi::netif::{
    ExtraInfo, NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETTXF_CSUM_BLANK,
    NETTXF_DATA_VALIDATED, NETTXF_EXTRA_INFO, NETTXF_MORE_DATA, TxRequest, TxResponse,
    XEN_NETIF_EXTRA_TYPE_GSO, XEN_NETIF_EXTRA_TYPE_MAX, XEN_NETIF_EXTRA_TYPE_MCAST_ADD,
    XEN_NETIF_EXTRA_TYPE_MCAST_DEL, XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6,
};

use smallvec::{SmallVec, smallvec};

use crate::packet::{ETH_HLEN, Gso, GsoKind};

/// Data slots of one packet accepted (`XEN_NETIF_NR_SLOTS_MIN`).
pub const MAX_TX_SLOTS: usize = 18;
/// Data slots of one packet treated as an attack (NB2): the vif is disabled.
pub const FATAL_TX_SLOTS: usize = 20;
const PAGE: usize = 4096;

/// One fragment to copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Frag {
    pub gref: GrantRef,
    pub offset: u16,
    pub len: u16,
}

/// What a parsed packet asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Copy the fragments and pass the packet on.
    Data,
    /// Answer every data slot with this error status; no packet.
    Drop(i16),
    /// A multicast filter update (dummy request): add (true) or delete.
    Mcast(bool, [u8; 6]),
}

/// A parsed packet: one response per consumed slot (data slots preset to
/// OKAY, extra slots to NULL), and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TxPacket {
    /// Inline for up to four slots: most packets allocate nothing here.
    pub rsps: SmallVec<[TxResponse; 4]>,
    /// Which entries of `rsps` answer data slots.
    pub data: SmallVec<[bool; 4]>,
    pub frags: SmallVec<[Frag; 2]>,
    pub len: usize,
    pub csum_blank: bool,
    pub data_validated: bool,
    pub gso: Option<Gso>,
    pub kind: Kind,
}

impl TxPacket {
    /// Sets the status of every data slot.
    pub(crate) fn fail(&mut self, status: i16) {
        for (r, d) in self.rsps.iter_mut().zip(&self.data) {
            if *d {
                r.status = status;
            }
        }
    }
}

/// What the backend offered (a frontend using more is dropped, not fatal).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TxLimits {
    pub sg: bool,
    pub gso_v4: bool,
    pub gso_v6: bool,
}

/// The extra-info view of a TX slot (its first 8 bytes).
pub(crate) fn extra_of(s: &TxRequest) -> ExtraInfo {
    bytemuck::pod_read_unaligned(&bytemuck::bytes_of(s)[..8])
}

/// Parses the packet starting at `slots[0]`. `Err` is a fatal frontend
/// fault (the vif must be disabled).
pub(crate) fn parse(slots: &[TxRequest], lim: &TxLimits) -> Result<TxPacket, String> {
    let Some(first) = slots.first().copied() else {
        return Err("no slot".into());
    };
    let mut p = TxPacket {
        rsps: smallvec![TxResponse {
            id: first.id,
            status: NETIF_RSP_OKAY,
        }],
        data: smallvec![true],
        frags: SmallVec::new(),
        len: usize::from(first.size),
        csum_blank: first.flags & NETTXF_CSUM_BLANK != 0,
        data_validated: first.flags & NETTXF_DATA_VALIDATED != 0,
        gso: None,
        kind: Kind::Data,
    };
    let mut i = 1;
    let mut mcast = None;
    let mut gso_raw = None;
    if first.flags & NETTXF_EXTRA_INFO != 0 {
        loop {
            // NB9: MORE on the last slot, or extra_info with no slot after.
            let Some(s) = slots.get(i) else {
                return Err("extra-info slot missing".into());
            };
            i += 1;
            let e = extra_of(s);
            p.rsps.push(TxResponse {
                id: 0,
                status: NETIF_RSP_NULL,
            });
            p.data.push(false);
            match e.type_ {
                0 => return Err("extra-info type 0".into()),
                t if t >= XEN_NETIF_EXTRA_TYPE_MAX => {
                    return Err(format!("extra-info type {t}"));
                }
                XEN_NETIF_EXTRA_TYPE_GSO => gso_raw = Some(e.as_gso()),
                XEN_NETIF_EXTRA_TYPE_MCAST_ADD => mcast = Some((true, e.as_mcast().addr)),
                XEN_NETIF_EXTRA_TYPE_MCAST_DEL => mcast = Some((false, e.as_mcast().addr)),
                _ => {} // hash: ignored
            }
            if !e.has_more() {
                break;
            }
        }
    }
    if let Some(g) = gso_raw {
        // NB10.
        if g.size == 0 {
            return Err("GSO extra with size 0".into());
        }
        let kind = match g.type_ {
            XEN_NETIF_GSO_TYPE_TCPV4 => GsoKind::TcpV4,
            XEN_NETIF_GSO_TYPE_TCPV6 => GsoKind::TcpV6,
            t => return Err(format!("GSO extra of unknown type {t}")),
        };
        p.gso = Some(Gso { kind, size: g.size });
    }
    if let Some((add, addr)) = mcast {
        // The dummy request of a multicast update carries no packet.
        p.kind = Kind::Mcast(add, addr);
        p.len = 0;
        return Ok(p);
    }
    // Continuation slots.
    let mut remaining = usize::from(first.size);
    let mut data_slots = 1;
    let mut drop = false;
    let mut more = first.flags & NETTXF_MORE_DATA != 0;
    let mut rest: SmallVec<[Frag; 2]> = SmallVec::new();
    while more {
        if data_slots + 1 >= FATAL_TX_SLOTS {
            return Err(format!("packet of {} or more slots", FATAL_TX_SLOTS)); // NB2
        }
        let Some(s) = slots.get(i).copied() else {
            return Err("more_data on the last available slot".into()); // NB3
        };
        if data_slots + 1 > MAX_TX_SLOTS {
            drop = true; // NB1
        }
        i += 1;
        data_slots += 1;
        p.rsps.push(TxResponse {
            id: s.id,
            status: NETIF_RSP_OKAY,
        });
        p.data.push(true);
        if usize::from(s.offset) + usize::from(s.size) > PAGE {
            return Err(format!(
                "slot offset {} + size {} beyond the page",
                s.offset, s.size
            )); // NB4
        }
        if usize::from(s.size) > remaining {
            drop = true; // NB5
        } else if !drop {
            remaining -= usize::from(s.size);
            if s.size > 0 {
                // NB7: zero-length fragments are answered, never copied.
                rest.push(Frag {
                    gref: s.gref,
                    offset: s.offset,
                    len: s.size,
                });
            }
        }
        more = s.flags & NETTXF_MORE_DATA != 0;
    }
    if drop {
        p.kind = Kind::Drop(NETIF_RSP_ERROR);
        p.fail(NETIF_RSP_ERROR);
        return Ok(p);
    }
    if usize::from(first.offset) + remaining > PAGE {
        return Err(format!(
            "first slot offset {} + size {remaining} beyond the page",
            first.offset
        )); // NB4
    }
    let unsupported = (data_slots > 1 && !lim.sg)
        || match p.gso.map(|g| g.kind) {
            Some(GsoKind::TcpV4) => !lim.gso_v4,
            Some(GsoKind::TcpV6) => !lim.gso_v6,
            None => false,
        };
    if p.len < ETH_HLEN || unsupported {
        p.kind = Kind::Drop(NETIF_RSP_ERROR); // NB6
        p.fail(NETIF_RSP_ERROR);
        return Ok(p);
    }
    if remaining > 0 {
        p.frags.push(Frag {
            gref: first.gref,
            offset: first.offset,
            len: remaining as u16,
        });
    }
    p.frags.extend(rest);
    if p.gso.is_some() {
        // A GSO packet is partial-checksum by definition (Linux fixes up
        // frontends that forget the flag).
        p.csum_blank = true;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvio_abi::netif::ExtraGso;

    const LIM: TxLimits = TxLimits {
        sg: true,
        gso_v4: true,
        gso_v6: true,
    };

    fn req(size: u16, flags: u16) -> TxRequest {
        TxRequest {
            gref: GrantRef(8),
            offset: 0,
            flags,
            id: 1,
            size,
        }
    }

    fn extra_slot(e: ExtraInfo) -> TxRequest {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(bytemuck::bytes_of(&e));
        bytemuck::pod_read_unaligned(&b)
    }

    #[test]
    fn chain_limits() {
        for n in 1..=22usize {
            let mut v: Vec<TxRequest> = (0..n).map(|_| req(20, NETTXF_MORE_DATA)).collect();
            v[0].size = (n * 20) as u16;
            v[n - 1].flags = 0;
            let r = parse(&v, &LIM);
            match n {
                1..=18 => assert_eq!(r.unwrap().kind, Kind::Data, "{n}"),
                19 => assert_eq!(r.unwrap().kind, Kind::Drop(NETIF_RSP_ERROR)),
                _ => assert!(r.is_err(), "{n}"),
            }
        }
        // Truncated chain.
        assert!(parse(&[req(100, NETTXF_MORE_DATA)], &LIM).is_err());
        // Extra without a following slot; bad types.
        assert!(parse(&[req(100, NETTXF_EXTRA_INFO)], &LIM).is_err());
        for t in [0u8, 5, 200] {
            let e = extra_slot(ExtraInfo::new(t, [0; 3]));
            assert!(parse(&[req(100, NETTXF_EXTRA_INFO), e], &LIM).is_err());
        }
        let g = extra_slot(ExtraInfo::gso(ExtraGso {
            size: 0,
            type_: 1,
            ..Default::default()
        }));
        assert!(parse(&[req(100, NETTXF_EXTRA_INFO), g], &LIM).is_err());
    }
}
