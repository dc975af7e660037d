//! Packets, the [`Port`] trait a vif is plugged into, and the few header
//! operations netback needs: locating the L4 checksum of a partial-checksum
//! packet, completing it in software, and segmenting a TCP GSO packet for a
//! frontend that cannot take it whole.
//!
//! Every parser here works on untrusted bytes: each length is checked before
//! use, and a packet that cannot be parsed is reported as `None` (the caller
//! drops it), never a panic.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

/// Ethernet header length.
pub const ETH_HLEN: usize = 14;
/// EtherType IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Kind of a GSO (large send) packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GsoKind {
    /// TCP over IPv4.
    TcpV4,
    /// TCP over IPv6.
    TcpV6,
}

/// GSO metadata: the packet is to be cut into TCP segments of `size`
/// payload bytes (the MSS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Gso {
    /// Protocol.
    pub kind: GsoKind,
    /// MSS (payload bytes per segment), never 0.
    pub size: u16,
}

/// One Ethernet frame with its offload metadata.
///
/// `csum_blank`: the L4 checksum is partial (holds the pseudo-header sum, as
/// Linux's `CHECKSUM_PARTIAL`) and must be completed by whoever delivers
/// it to a receiver that cannot. `data_validated`: the checksum is known
/// good. A GSO packet is always `csum_blank`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Packet {
    /// The frame, from the destination MAC on.
    pub data: Bytes,
    /// The L4 checksum is partial.
    pub csum_blank: bool,
    /// The checksum is known to be good.
    pub data_validated: bool,
    /// Large-send metadata.
    pub gso: Option<Gso>,
}

impl Packet {
    /// A plain frame without offloads.
    pub fn new(data: impl Into<Bytes>) -> Packet {
        Packet {
            data: data.into(),
            ..Packet::default()
        }
    }

    /// Destination MAC (if the frame is long enough).
    pub fn dst_mac(&self) -> Option<[u8; 6]> {
        self.data.get(0..6).and_then(|s| s.try_into().ok())
    }

    /// Source MAC (if the frame is long enough).
    pub fn src_mac(&self) -> Option<[u8; 6]> {
        self.data.get(6..12).and_then(|s| s.try_into().ok())
    }
}

/// Where packets for a guest are delivered: netback implements it for
/// each connected vif and hands it to the vif's [`Port`].
pub trait PacketSink: Send + Sync {
    /// Offers a packet to the guest. Returns `false` if it was dropped
    /// (queue full, carrier off, filtered); never blocks.
    fn deliver(&self, pkt: Packet) -> bool;

    /// Offers the packets of `pkts` in order, leaving it empty. Returns how
    /// many were dropped. One call per batch lets a sink take its locks and
    /// wake its reader once (the default offers them one by one).
    fn deliver_batch(&self, pkts: &mut Vec<Packet>) -> usize {
        let mut dropped = 0;
        for p in pkts.drain(..) {
            dropped += usize::from(!self.deliver(p));
        }
        dropped
    }
}

/// The network side of a vif: a TAP device ([`crate::TapPort`]), a port of
/// an in-process [`crate::Switch`], or anything else.
///
/// netback calls [`Port::transmit`] for each packet the guest sends and
/// [`Port::attach`] with its [`PacketSink`] while a frontend is connected
/// (`None` when it disconnects or the vif is disabled); the port calls
/// [`PacketSink::deliver`] for each packet that should reach the guest.
pub trait Port: Send + Sync {
    /// Sends a packet from the guest into the network. `false`: dropped.
    fn transmit(&self, pkt: Packet) -> bool;
    /// Sends the packets of `pkts` in order, leaving it empty. Returns how
    /// many [`Port::transmit`] would have refused (the default sends them
    /// one by one).
    fn transmit_batch(&self, pkts: &mut Vec<Packet>) -> usize {
        let mut dropped = 0;
        for p in pkts.drain(..) {
            dropped += usize::from(!self.transmit(p));
        }
        dropped
    }
    /// Sets (or, with `None`, removes) where packets for the guest go.
    fn attach(&self, sink: Option<Arc<dyn PacketSink>>);
    /// Offloads the port's receivers accept from [`Port::transmit`]
    /// (packets with other offloads are completed in software first).
    fn offloads(&self) -> Offloads {
        Offloads::all()
    }
}

/// Offloads a receiver accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Offloads {
    /// Partial IPv4 checksums.
    pub csum_v4: bool,
    /// Partial IPv6 checksums.
    pub csum_v6: bool,
    /// TCPv4 GSO.
    pub gso_v4: bool,
    /// TCPv6 GSO.
    pub gso_v6: bool,
    /// Frames larger than one page (scatter-gather).
    pub sg: bool,
}

impl Offloads {
    /// Everything.
    pub const fn all() -> Offloads {
        Offloads {
            csum_v4: true,
            csum_v6: true,
            gso_v4: true,
            gso_v6: true,
            sg: true,
        }
    }
}

/// Offsets of a frame's headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Headers {
    /// Start of the IP header.
    pub l3: usize,
    /// Start of the L4 header.
    pub l4: usize,
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// L4 protocol.
    pub proto: u8,
}

fn be16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(at)?, *d.get(at + 1)?]))
}

/// Parses Ethernet (one optional VLAN tag), IPv4 or IPv6 (no extension
/// headers), up to the L4 header. `None` for anything else.
pub(crate) fn parse_headers(d: &[u8]) -> Option<Headers> {
    let mut l3 = ETH_HLEN;
    let mut ety = be16(d, 12)?;
    if ety == ETH_P_8021Q {
        ety = be16(d, 16)?;
        l3 += 4;
    }
    match ety {
        ETH_P_IP => {
            let vihl = *d.get(l3)?;
            if vihl >> 4 != 4 {
                return None;
            }
            let ihl = usize::from(vihl & 0xF) * 4;
            if ihl < 20 || d.len() < l3 + ihl {
                return None;
            }
            Some(Headers {
                l3,
                l4: l3 + ihl,
                v6: false,
                proto: d[l3 + 9],
            })
        }
        ETH_P_IPV6 => {
            if d.len() < l3 + 40 || d[l3] >> 4 != 6 {
                return None;
            }
            Some(Headers {
                l3,
                l4: l3 + 40,
                v6: true,
                proto: d[l3 + 6],
            })
        }
        _ => None,
    }
}

/// Offset of the L4 checksum field relative to the L4 header.
fn csum_field(proto: u8) -> Option<usize> {
    match proto {
        IPPROTO_TCP => Some(16),
        IPPROTO_UDP => Some(6),
        _ => None,
    }
}

/// `(csum_start, csum_offset)` of a partial-checksum frame (virtio's
/// `NEEDS_CSUM` fields).
pub(crate) fn csum_location(d: &[u8]) -> Option<(usize, usize)> {
    let h = parse_headers(d)?;
    let off = csum_field(h.proto)?;
    if d.len() < h.l4 + off + 2 {
        return None;
    }
    Some((h.l4, off))
}

fn sum16(mut acc: u32, d: &[u8]) -> u32 {
    let mut chunks = d.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        acc += u32::from(*b) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    acc as u16
}

/// The (unfolded) pseudo-header sum of an L4 segment of `l4_len` bytes.
fn pseudo_sum(d: &[u8], h: &Headers, l4_len: usize) -> u32 {
    let mut acc = if h.v6 {
        sum16(0, &d[h.l3 + 8..h.l3 + 40])
    } else {
        sum16(0, &d[h.l3 + 12..h.l3 + 20])
    };
    acc += u32::from(h.proto);
    acc += (l4_len as u32) & 0xFFFF;
    acc += (l4_len as u32) >> 16;
    acc
}

/// Writes the pseudo-header sum into the L4 checksum field (what a
/// `CHECKSUM_PARTIAL` packet carries there). `false` if unparsable.
pub(crate) fn set_partial_csum(d: &mut [u8]) -> bool {
    let Some(h) = parse_headers(d) else {
        return false;
    };
    let Some(off) = csum_field(h.proto) else {
        return false;
    };
    let at = h.l4 + off;
    if d.len() < at + 2 {
        return false;
    }
    let l4_len = ip_payload_end(d, &h).saturating_sub(h.l4);
    let s = fold(pseudo_sum(d, &h, l4_len));
    d[at..at + 2].copy_from_slice(&s.to_be_bytes());
    true
}

/// End of the IP payload (the IP length field, bounded by the frame).
fn ip_payload_end(d: &[u8], h: &Headers) -> usize {
    let end = if h.v6 {
        be16(d, h.l3 + 4).map(|l| h.l3 + 40 + usize::from(l))
    } else {
        be16(d, h.l3 + 2).map(|l| h.l3 + usize::from(l))
    };
    end.unwrap_or(d.len()).min(d.len())
}

/// Completes the L4 checksum of a partial-checksum frame in place.
/// `false` if the frame cannot be parsed.
pub(crate) fn complete_csum(d: &mut [u8]) -> bool {
    let Some(h) = parse_headers(d) else {
        return false;
    };
    let Some(off) = csum_field(h.proto) else {
        return false;
    };
    let end = ip_payload_end(d, &h);
    let at = h.l4 + off;
    if end < at + 2 {
        return false;
    }
    d[at..at + 2].copy_from_slice(&[0, 0]);
    let acc = sum16(pseudo_sum(d, &h, end - h.l4), &d[h.l4..end]);
    let mut c = !fold(acc);
    if c == 0 && h.proto == IPPROTO_UDP {
        c = 0xFFFF;
    }
    d[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// Cuts a TCP GSO packet into MSS-sized segments with complete checksums
/// (IPv4 header checksums too). `None` if the packet is not TCP of the
/// advertised kind or is malformed.
pub(crate) fn segment(pkt: &Packet) -> Option<Vec<Packet>> {
    let gso = pkt.gso?;
    let d = &pkt.data[..];
    let h = parse_headers(d)?;
    if h.proto != IPPROTO_TCP || h.v6 != (gso.kind == GsoKind::TcpV6) {
        return None;
    }
    let doff = usize::from(*d.get(h.l4 + 12)? >> 4) * 4;
    if doff < 20 {
        return None;
    }
    let hdr_len = h.l4 + doff;
    let end = ip_payload_end(d, &h);
    if end < hdr_len {
        return None;
    }
    let payload = &d[hdr_len..end];
    let mss = usize::from(gso.size.max(1));
    let seq0 = u32::from_be_bytes(d.get(h.l4 + 4..h.l4 + 8)?.try_into().ok()?);
    let flags0 = d[h.l4 + 13];
    let ip_id0 = if h.v6 { 0 } else { be16(d, h.l3 + 4)? };
    let n = payload.len().div_ceil(mss).max(1);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let mut b = BytesMut::with_capacity(hdr_len + chunk.len());
        b.put_slice(&d[..hdr_len]);
        b.put_slice(chunk);
        let l4_len = doff + chunk.len();
        if h.v6 {
            b[h.l3 + 4..h.l3 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        } else {
            let tot = (hdr_len - h.l3 + chunk.len()) as u16;
            b[h.l3 + 2..h.l3 + 4].copy_from_slice(&tot.to_be_bytes());
            b[h.l3 + 4..h.l3 + 6].copy_from_slice(&ip_id0.wrapping_add(i as u16).to_be_bytes());
            b[h.l3 + 10..h.l3 + 12].copy_from_slice(&[0, 0]);
            let c = !fold(sum16(0, &b[h.l3..h.l4]));
            b[h.l3 + 10..h.l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        let seq = seq0.wrapping_add((i * mss) as u32);
        b[h.l4 + 4..h.l4 + 8].copy_from_slice(&seq.to_be_bytes());
        // FIN and PSH only on the last segment, CWR only on the first.
        let mut fl = flags0;
        if i + 1 < n {
            fl &= !(0x01 | 0x08);
        }
        if i > 0 {
            fl &= !0x80;
        }
        b[h.l4 + 13] = fl;
        complete_csum(&mut b);
        out.push(Packet {
            data: b.freeze(),
            csum_blank: false,
            data_validated: true,
            gso: None,
        });
    }
    Some(out)
}

/// Adapts `pkt` to what a receiver accepts: segments GSO packets it cannot
/// take (or that would not fit without scatter-gather), completes partial
/// checksums it cannot take. `max_len` is the largest frame it takes
/// without GSO. Returns the packets to deliver (empty: drop).
pub(crate) fn adapt(pkt: Packet, off: &Offloads, max_len: usize) -> Adapted {
    if let Some(g) = pkt.gso {
        let ok = match g.kind {
            GsoKind::TcpV4 => off.gso_v4,
            GsoKind::TcpV6 => off.gso_v6,
        };
        if ok && (off.sg || pkt.data.len() <= max_len) {
            return Adapted::one(pkt);
        }
        return Adapted::many(
            segment(&pkt)
                .unwrap_or_default()
                .into_iter()
                .filter(|p| p.data.len() <= max_len)
                .collect(),
        );
    }
    if pkt.data.len() > max_len {
        return Adapted::none();
    }
    if pkt.csum_blank {
        let v6 = parse_headers(&pkt.data).map(|h| h.v6);
        let ok = match v6 {
            Some(true) => off.csum_v6,
            Some(false) => off.csum_v4,
            None => false,
        };
        if !ok {
            let mut b = BytesMut::from(&pkt.data[..]);
            if !complete_csum(&mut b) {
                return Adapted::none();
            }
            return Adapted::one(Packet {
                data: b.freeze(),
                csum_blank: false,
                data_validated: true,
                gso: None,
            });
        }
    }
    Adapted::one(pkt)
}

/// The packets [`adapt`] gives: usually the packet itself (no allocation),
/// else its segments, or nothing (drop).
#[derive(Debug, Default)]
pub(crate) struct Adapted {
    one: Option<Packet>,
    many: Vec<Packet>,
}

impl Adapted {
    fn one(p: Packet) -> Adapted {
        Adapted {
            one: Some(p),
            many: Vec::new(),
        }
    }

    fn many(v: Vec<Packet>) -> Adapted {
        Adapted { one: None, many: v }
    }

    fn none() -> Adapted {
        Adapted::default()
    }

    pub(crate) fn len(&self) -> usize {
        usize::from(self.one.is_some()) + self.many.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl IntoIterator for Adapted {
    type Item = Packet;
    type IntoIter = std::iter::Chain<std::option::IntoIter<Packet>, std::vec::IntoIter<Packet>>;

    fn into_iter(self) -> Self::IntoIter {
        self.one.into_iter().chain(self.many)
    }
}

/// A flow hash (IP addresses and L4 ports) for picking an RX queue.
pub(crate) fn flow_hash(d: &[u8]) -> u32 {
    let Some(h) = parse_headers(d) else {
        return 0;
    };
    let addrs = if h.v6 {
        d.get(h.l3 + 8..h.l3 + 40)
    } else {
        d.get(h.l3 + 12..h.l3 + 20)
    };
    let mut x: u32 = 0x811C_9DC5;
    let ports = if matches!(h.proto, IPPROTO_TCP | IPPROTO_UDP) {
        d.get(h.l4..h.l4 + 4)
    } else {
        None
    };
    for b in addrs.into_iter().chain(ports).flatten() {
        x = (x ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4/TCP frame with `payload` bytes, partial checksum.
    pub(crate) fn tcp4(payload: usize) -> Vec<u8> {
        let mut d = vec![0u8; 14 + 20 + 20 + payload];
        d[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        d[14] = 0x45;
        let tot = (40 + payload) as u16;
        d[16..18].copy_from_slice(&tot.to_be_bytes());
        d[22] = 64;
        d[23] = IPPROTO_TCP;
        d[26..30].copy_from_slice(&[10, 0, 0, 1]);
        d[30..34].copy_from_slice(&[10, 0, 0, 2]);
        d[46] = 0x50;
        d[47] = 0x18;
        for (i, b) in d[54..].iter_mut().enumerate() {
            *b = i as u8;
        }
        assert!(set_partial_csum(&mut d));
        d
    }

    fn verify_tcp(d: &[u8]) -> bool {
        let h = parse_headers(d).unwrap();
        let end = ip_payload_end(d, &h);
        fold(sum16(pseudo_sum(d, &h, end - h.l4), &d[h.l4..end])) == 0xFFFF
    }

    #[test]
    fn complete_and_segment() {
        let mut d = tcp4(1000);
        complete_csum(&mut d);
        assert!(verify_tcp(&d));
        let p = Packet {
            data: Bytes::from(tcp4(5000)),
            csum_blank: true,
            data_validated: true,
            gso: Some(Gso {
                kind: GsoKind::TcpV4,
                size: 1448,
            }),
        };
        let segs = segment(&p).unwrap();
        assert_eq!(segs.len(), 4);
        let total: usize = segs.iter().map(|s| s.data.len() - 54).sum();
        assert_eq!(total, 5000);
        for s in &segs {
            assert!(verify_tcp(&s.data));
            assert_eq!(fold(sum16(0, &s.data[14..34])), 0xFFFF);
        }
        assert!(adapt(p.clone(), &Offloads::default(), 1514).len() == 4);
        assert_eq!(adapt(p, &Offloads::all(), 4096).len(), 1);
    }

    #[test]
    fn garbage_does_not_parse() {
        for n in 0..80 {
            let d = vec![0x45u8; n];
            let _ = parse_headers(&d);
            let _ = csum_location(&d);
            let mut m = d.clone();
            let _ = complete_csum(&mut m);
            let _ = flow_hash(&d);
            let _ = segment(&Packet {
                data: Bytes::from(d),
                gso: Some(Gso {
                    kind: GsoKind::TcpV4,
                    size: 1,
                }),
                ..Packet::default()
            });
        }
    }
}
