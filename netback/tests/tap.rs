//! netback on a real TAP device: the hand-written frontend talks ARP and
//! ICMP with the host kernel, inside a network namespace of its own.
//! Needs root, `/dev/net/tun` and `ip`; prints "SKIPPED: <why>" otherwise.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pvio_netback::{NetbackConfig, Port, TapPort};

const FE_IP: [u8; 4] = [10, 99, 0, 2];
const HOST_IP: [u8; 4] = [10, 99, 0, 1];

/// Removes the namespace when dropped (even if the test fails).
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

fn csum(d: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for c in d.chunks(2) {
        acc += u32::from(if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        });
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    !(acc as u16)
}

fn arp(op: u16, dst: [u8; 6], src: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let mut d = vec![0u8; 60];
    d[..6].copy_from_slice(&dst);
    d[6..12].copy_from_slice(&src);
    d[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    d[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, op as u8]);
    d[22..28].copy_from_slice(&src);
    d[28..32].copy_from_slice(&spa);
    d[32..38].copy_from_slice(&tha);
    d[38..42].copy_from_slice(&tpa);
    d
}

fn echo_request(dst: [u8; 6], src: [u8; 6], id: u16) -> Vec<u8> {
    let payload = 56;
    let mut d = vec![0u8; 14 + 20 + 8 + payload];
    d[..6].copy_from_slice(&dst);
    d[6..12].copy_from_slice(&src);
    d[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    d[14] = 0x45;
    d[16..18].copy_from_slice(&((20 + 8 + payload) as u16).to_be_bytes());
    d[22] = 64;
    d[23] = 1;
    d[26..30].copy_from_slice(&FE_IP);
    d[30..34].copy_from_slice(&HOST_IP);
    let c = csum(&d[14..34]);
    d[24..26].copy_from_slice(&c.to_be_bytes());
    d[34] = 8;
    d[38..40].copy_from_slice(&id.to_be_bytes());
    d[40..42].copy_from_slice(&1u16.to_be_bytes());
    for (i, b) in d[42..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let c = csum(&d[34..]);
    d[36..38].copy_from_slice(&c.to_be_bytes());
    d
}

#[test]
fn tap_arp_and_icmp_with_the_kernel_in_a_netns() {
    if !std::path::Path::new("/dev/net/tun").exists() {
        println!("SKIPPED: no /dev/net/tun");
        return;
    }
    let pid = std::process::id();
    let ns = Netns(format!("pvnb-{pid}"));
    if let Err(e) = ip(&["netns", "add", &ns.0]) {
        println!("SKIPPED: cannot create a network namespace ({e})");
        return;
    }
    let name = format!("pvnb{}", pid % 1_000_000);
    let tap = match TapPort::open(&name) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            println!("SKIPPED: cannot open TAP device {name}: {e}");
            return;
        }
    };
    assert_eq!(tap.name(), name);
    // The fd stays valid after the netdev moves to the namespace.
    ip(&["link", "set", &name, "netns", &ns.0]).unwrap();
    ip(&["-n", &ns.0, "addr", "add", "10.99.0.1/24", "dev", &name]).unwrap();
    ip(&["-n", &ns.0, "link", "set", &name, "up"]).unwrap();

    let mut w = World::new();
    let (nb, d) = w.vif(tap.clone() as Arc<dyn Port>, NetbackConfig::default(), &[]);
    let mut f = d.connect(Opts::default());

    // ARP: who has 10.99.0.1?
    let req = arp(1, [0xFF; 6], d.mac, FE_IP, [0; 6], HOST_IP);
    let deadline = Instant::now() + GUARD;
    let host_mac = loop {
        assert!(Instant::now() < deadline, "no ARP reply from the kernel");
        d.send_wait(&mut f, 0, &req, 4096, 0, &[]);
        let Some(p) = d.recv_within(&mut f, Duration::from_millis(500)) else {
            continue;
        };
        let a = &p.data;
        if a.len() >= 42 && a[12..14] == [8, 6] && a[20..22] == [0, 2] && a[28..32] == HOST_IP {
            assert_eq!(&a[..6], &d.mac, "the reply is for us");
            assert_eq!(&a[38..42], &FE_IP);
            break <[u8; 6]>::try_from(&a[22..28]).unwrap();
        }
    };

    // ICMP echo.
    let id = (pid & 0xFFFF) as u16;
    let ping = echo_request(host_mac, d.mac, id);
    d.send_wait(&mut f, 0, &ping, 4096, 0, &[]);
    let deadline = Instant::now() + GUARD;
    loop {
        assert!(Instant::now() < deadline, "no echo reply from the kernel");
        let Some(p) = d.recv_within(&mut f, Duration::from_millis(200)) else {
            d.send_wait(&mut f, 0, &ping, 4096, 0, &[]);
            continue;
        };
        let a = &p.data;
        // The kernel may ask who we are first.
        if a.len() >= 42 && a[12..14] == [8, 6] && a[20..22] == [0, 1] && a[38..42] == FE_IP {
            let rep = arp(2, host_mac, d.mac, FE_IP, host_mac, HOST_IP);
            d.send_wait(&mut f, 0, &rep, 4096, 0, &[]);
            continue;
        }
        if a.len() >= 42 && a[12..14] == [8, 0] && a[23] == 1 && a[34] == 0 {
            assert_eq!(&a[26..30], &HOST_IP);
            assert_eq!(&a[30..34], &FE_IP);
            assert_eq!(&a[38..40], &id.to_be_bytes());
            assert_eq!(&a[42..], &ping[42..], "the payload is echoed");
            assert_eq!(csum(&a[34..]), 0, "ICMP checksum");
            break;
        }
    }
    let st = nb.stats();
    assert!(st.tx_packets >= 2 && st.rx_packets >= 2, "{st:?}");
    assert_eq!(tap.tx_errors(), 0);
    d.close();
}
