//! smoltcp's `Interface` over netfront (feature `smoltcp`): the test
//! backend injects an ARP request and a ping, and checks the replies the
//! stack sends back through the TX ring.

#![cfg(feature = "smoltcp")]

mod common;

use common::*;
use pvio_abi::netif::NETRXF_CSUM_BLANK;
use pvio_netfront::NetfrontConfig;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
const PEER_IP: [u8; 4] = [10, 0, 0, 1];
const OUR_IP: [u8; 4] = [10, 0, 0, 2];

fn csum(data: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn arp_request(our_mac: [u8; 6]) -> Vec<u8> {
    let _ = our_mac;
    let mut f = Vec::new();
    f.extend([0xff; 6]);
    f.extend(PEER_MAC);
    f.extend([0x08, 0x06]);
    f.extend([0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend(PEER_MAC);
    f.extend(PEER_IP);
    f.extend([0; 6]);
    f.extend(OUR_IP);
    f.resize(60, 0);
    f
}

/// An IPv4 frame from the peer to us carrying `l4` of protocol `proto`.
fn ipv4(our_mac: [u8; 6], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x45, 0];
    ip.extend(((20 + l4.len()) as u16).to_be_bytes());
    ip.extend([0, 1, 0x40, 0, 64, proto, 0, 0]);
    ip.extend(PEER_IP);
    ip.extend(OUR_IP);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend(our_mac);
    f.extend(PEER_MAC);
    f.extend([0x08, 0x00]);
    f.extend(ip);
    f.extend(l4);
    f
}

/// An ICMP echo request.
fn ping(our_mac: [u8; 6], seq: u16) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34];
    icmp.extend(seq.to_be_bytes());
    icmp.extend(b"netfront ping payload");
    let c = csum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4(our_mac, 1, &icmp)
}

#[test]
fn smoltcp_interface_answers_arp_and_ping() {
    let (_fx, mut f, mut b) = setup(
        &[("mac", "02:16:3e:00:00:02")],
        NetfrontConfig {
            gso_tcpv4: false,
            gso_tcpv6: false,
            ..cfg()
        },
    );
    let mac = f.mac();
    let now = || Instant::from_millis(0);
    let mut iface = Interface::new(
        Config::new(HardwareAddress::Ethernet(EthernetAddress(mac))),
        &mut f,
        now(),
    );
    iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::v4(10, 0, 0, 2), 24)).unwrap();
    });
    let mut sockets = SocketSet::new(vec![]);

    // ARP: who has 10.0.0.2?
    b.inject(0, &arp_request(mac), 0, None);
    let _ = recv_wait(&mut f);
    iface.poll(now(), &mut f, &mut sockets);
    let r = b.echo_tx(0).data;
    assert_eq!(&r[0..6], &PEER_MAC, "unicast to the asker");
    assert_eq!(&r[6..12], &mac);
    assert_eq!(&r[12..14], &[0x08, 0x06]);
    assert_eq!(&r[20..22], &[0, 2], "an ARP reply");
    assert_eq!(&r[22..28], &mac);
    assert_eq!(&r[28..32], &OUR_IP);

    // Ping.
    for seq in [1u16, 2] {
        let req = ping(mac, seq);
        b.inject(0, &req, 0, None);
        let _ = recv_wait(&mut f);
        iface.poll(now(), &mut f, &mut sockets);
        let r = b.echo_tx(0).data;
        assert_eq!(&r[0..6], &PEER_MAC);
        assert_eq!(&r[12..14], &[0x08, 0x00]);
        let ip = &r[14..];
        assert_eq!(ip[9], 1, "ICMP");
        assert_eq!(&ip[12..16], &OUR_IP);
        assert_eq!(&ip[16..20], &PEER_IP);
        let icmp = &ip[20..usize::from(u16::from_be_bytes([ip[2], ip[3]]))];
        assert_eq!(icmp[0], 0, "echo reply");
        assert_eq!(&icmp[4..8], &[0x12, 0x34, 0, seq as u8]);
        assert_eq!(&icmp[8..], b"netfront ping payload");
        assert_eq!(csum(icmp), 0, "a valid ICMP checksum");
        assert_eq!(csum(&ip[..20]), 0, "a valid IP checksum");
    }

    // A UDP datagram to a closed port with a partial (here: garbage)
    // checksum flagged csum_blank: netfront completes it, so the stack
    // accepts it and answers port unreachable.
    let mut udp = vec![0x30, 0x39, 0x00, 0x07, 0, 20, 0xde, 0xad];
    udp.extend(b"discard me!!");
    b.inject(0, &ipv4(mac, 17, &udp), NETRXF_CSUM_BLANK, None);
    let _ = recv_wait(&mut f);
    iface.poll(now(), &mut f, &mut sockets);
    let r = b.echo_tx(0).data;
    let icmp = &r[34..];
    assert_eq!((icmp[0], icmp[1]), (3, 3), "port unreachable");
}

/// Waits until a frame is pending (without taking it: the stack does).
fn recv_wait(f: &mut pvio_netfront::Netfront) -> bool {
    let deadline = std::time::Instant::now() + GUARD;
    while f.rx_pending() == 0 {
        assert!(std::time::Instant::now() < deadline, "nothing received");
        let _ = f.wait(std::time::Duration::from_millis(20));
    }
    true
}
