//! Frame inspection: the flow hash that maps a frame to a queue, and
//! checksum completion in software (for a partial checksum the peer cannot
//! offload, or for a stack that wants complete checksums).
//!
//! Everything here parses bytes the caller or the backend supplied:
//! every offset is checked against the frame, and a frame that does not
//! parse is simply "not IP" (queue 0, checksum left alone).

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// The network layer of a frame, as far as hashing and checksums need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct L3<'a> {
    pub v6: bool,
    pub proto: u8,
    pub src: &'a [u8],
    pub dst: &'a [u8],
    /// Offset of the transport header in the frame.
    pub l4: usize,
    /// Transport length (header + payload) from the IP header, bounded by
    /// the frame.
    pub l4_len: usize,
    /// Not the first fragment (or more fragments follow): no ports.
    pub fragment: bool,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Parses the Ethernet (one optional VLAN tag) and IP headers.
pub(crate) fn parse_l3(frame: &[u8]) -> Option<L3<'_>> {
    let mut et = be16(frame, 12)?;
    let mut off = ETH_HLEN;
    if et == ETHERTYPE_VLAN {
        et = be16(frame, 16)?;
        off += 4;
    }
    match et {
        ETHERTYPE_IPV4 => {
            let ip = frame.get(off..)?;
            let vihl = *ip.first()?;
            let ihl = usize::from(vihl & 0xf) * 4;
            if vihl >> 4 != 4 || ihl < 20 || ip.len() < ihl {
                return None;
            }
            let total = usize::from(be16(ip, 2)?);
            if total < ihl {
                return None;
            }
            let frag = be16(ip, 6)?;
            let fragment = frag & 0x3fff != 0;
            Some(L3 {
                v6: false,
                proto: ip[9],
                src: &ip[12..16],
                dst: &ip[16..20],
                l4: off + ihl,
                l4_len: (total - ihl).min(ip.len() - ihl),
                fragment,
            })
        }
        ETHERTYPE_IPV6 => {
            let ip = frame.get(off..off + 40)?;
            if ip[0] >> 4 != 6 {
                return None;
            }
            let payload = usize::from(be16(ip, 4)?);
            let rest = frame.len() - off - 40;
            Some(L3 {
                v6: true,
                proto: ip[6],
                src: &ip[8..24],
                dst: &ip[24..40],
                l4: off + 40,
                l4_len: payload.min(rest),
                fragment: false,
            })
        }
        _ => None,
    }
}

/// A deterministic hash of a frame's flow: protocol, addresses and (for
/// TCP and UDP, unless fragmented) ports. `None` for non-IP frames.
pub fn flow_hash(frame: &[u8]) -> Option<u32> {
    let l3 = parse_l3(frame)?;
    // FNV-1a, 64-bit, folded.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    eat(l3.proto);
    l3.src.iter().for_each(|&b| eat(b));
    l3.dst.iter().for_each(|&b| eat(b));
    if matches!(l3.proto, IPPROTO_TCP | IPPROTO_UDP)
        && !l3.fragment
        && let Some(ports) = frame.get(l3.l4..l3.l4 + 4)
    {
        ports.iter().for_each(|&b| eat(b));
    }
    Some((h ^ (h >> 32)) as u32)
}

/// The queue (of `queues`) a frame goes out on: by [`flow_hash`], non-IP
/// frames on queue 0.
pub fn queue_for(frame: &[u8], queues: usize) -> usize {
    if queues <= 1 {
        return 0;
    }
    flow_hash(frame).map_or(0, |h| h as usize % queues)
}

fn sum16(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Whether a frame is IPv6 (for checksum offload decisions).
pub(crate) fn is_ipv6(frame: &[u8]) -> bool {
    parse_l3(frame).is_some_and(|l| l.v6)
}

/// Fills in the complete TCP or UDP checksum of an IPv4 or IPv6 frame
/// (whatever its checksum field held: zero, a pseudo-header sum, garbage).
/// Returns false, changing nothing, for other frames.
pub fn complete_checksum(frame: &mut [u8]) -> bool {
    let Some(l3) = parse_l3(frame) else {
        return false;
    };
    if l3.fragment {
        return false;
    }
    let field = match l3.proto {
        IPPROTO_TCP if l3.l4_len >= 20 => 16,
        IPPROTO_UDP if l3.l4_len >= 8 => 6,
        _ => return false,
    };
    let mut acc = sum16(0, l3.src);
    acc = sum16(acc, l3.dst);
    acc += u32::from(l3.proto);
    acc += l3.l4_len as u32 & 0xffff;
    acc += (l3.l4_len as u32) >> 16;
    let (l4, len, proto) = (l3.l4, l3.l4_len, l3.proto);
    frame[l4 + field] = 0;
    frame[l4 + field + 1] = 0;
    let mut c = fold(sum16(acc, &frame[l4..l4 + len]));
    if c == 0 && proto == IPPROTO_UDP {
        c = 0xffff;
    }
    frame[l4 + field..l4 + field + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_udp(sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8 + 4];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let ip = &mut f[14..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(32u16).to_be_bytes());
        ip[9] = IPPROTO_UDP;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        ip[20..22].copy_from_slice(&sport.to_be_bytes());
        ip[22..24].copy_from_slice(&dport.to_be_bytes());
        ip[24..26].copy_from_slice(&(12u16).to_be_bytes());
        ip[28..32].copy_from_slice(b"ping");
        f
    }

    #[test]
    fn hash_is_deterministic_and_port_sensitive() {
        let a = ipv4_udp(1000, 53);
        assert_eq!(flow_hash(&a), flow_hash(&a.clone()));
        assert_ne!(flow_hash(&a), flow_hash(&ipv4_udp(1001, 53)));
        assert_eq!(flow_hash(&[0u8; 60]), None);
        assert_eq!(queue_for(&[0u8; 60], 4), 0);
        assert_eq!(flow_hash(&a[..20]), None, "truncated");
    }

    #[test]
    fn udp_checksum_verifies() {
        let mut f = ipv4_udp(1, 2);
        assert!(complete_checksum(&mut f));
        let l3 = parse_l3(&f).unwrap();
        let mut acc = sum16(0, l3.src);
        acc = sum16(acc, l3.dst);
        acc += u32::from(l3.proto) + l3.l4_len as u32;
        assert_eq!(fold(sum16(acc, &f[l3.l4..])), 0);
    }

    #[test]
    fn garbage_never_panics() {
        for len in 0..80 {
            let mut f = vec![0x45u8; len];
            if len > 14 {
                f[12] = 0x08;
                f[13] = 0x00;
            }
            let _ = flow_hash(&f);
            let _ = complete_checksum(&mut f);
            let mut g = vec![0xffu8; len];
            let _ = complete_checksum(&mut g);
        }
    }
}
