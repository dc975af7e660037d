//! `pvio::bridge::bridge` between a netfront and a TAP device in a network
//! namespace, with a second netfront on the same switch as the far end:
//!
//! * TAP → netfront: a frame sent on the TAP's netdev in the namespace (a
//!   packet socket, python3) comes out of the peer netfront byte for byte;
//! * netfront → TAP: a frame the peer sends reaches the packet socket in
//!   the namespace byte for byte, and the kernel answers an ARP request
//!   sent through the bridge.
//!
//! Needs root, `/dev/net/tun`, `ip` and `python3`: prints "SKIPPED: <why>"
//! and returns when one is missing. Every wait has a generous guard; no
//! timing assertions.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pvio::bridge::bridge;
use pvio::embedded::Embedded;
use pvio_netback::{NetbackConfig, Switch, TapPort};
use pvio_netfront::{Netfront, NetfrontConfig, Packet};

const GUARD: Duration = Duration::from_secs(30);
const MAC_BRIDGE: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x01];
const MAC_PEER: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x02];
const NS_IP: [u8; 4] = [10, 97, 0, 1];
const PEER_IP: [u8; 4] = [10, 97, 0, 2];

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn frame(dst: [u8; 6], src: [u8; 6], key: u8, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(13) ^ key).collect();
    v[..6].copy_from_slice(&dst);
    v[6..12].copy_from_slice(&src);
    v[12..14].copy_from_slice(&[0x88, 0xb5]);
    v[14] = key;
    v
}

/// Python in the namespace: `send IFACE HEX` sends one frame on the
/// interface; `recv IFACE` prints "ready", then the hex of the first
/// frame of ethertype 0x88b5 it receives.
const PY: &str = r#"
import socket, sys
mode, ifname = sys.argv[1], sys.argv[2]
if mode == "send":
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    s.send(bytes.fromhex(sys.argv[3]))
else:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
    s.bind((ifname, 0x88b5))
    print("ready", flush=True)
    s.settimeout(60)
    while True:
        d, addr = s.recvfrom(65536)
        if addr[2] != socket.PACKET_OUTGOING:
            print(d.hex(), flush=True)
            break
"#;

fn recv_until(nf: &mut Netfront, what: &str, pred: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + GUARD;
    loop {
        assert!(Instant::now() < deadline, "{what}: nothing came");
        let _ = nf.wait(Duration::from_millis(20)).unwrap();
        while let Some(p) = nf.recv() {
            if pred(&p.data) {
                return p.data.to_vec();
            }
        }
    }
}

#[test]
fn tap_bridge_both_directions_byte_exact() {
    if !std::path::Path::new("/dev/net/tun").exists() {
        println!("SKIPPED: no /dev/net/tun");
        return;
    }
    let python = match Command::new("python3").arg("--version").output() {
        Ok(o) if o.status.success() => "python3",
        _ => {
            println!("SKIPPED: no python3");
            return;
        }
    };
    let pid = std::process::id() % 1_000_000;
    let ns = Netns(format!("pviobr{pid}"));
    if let Err(e) = ip(&["netns", "add", &ns.0]) {
        println!("SKIPPED: cannot create a network namespace ({e})");
        return;
    }
    let name = format!("pviobr{pid}");
    let tap = match TapPort::open(&name) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            println!("SKIPPED: cannot open TAP device {name}: {e}");
            return;
        }
    };
    ip(&["link", "set", &name, "netns", &ns.0]).unwrap();
    ip(&["-n", &ns.0, "addr", "add", "10.97.0.1/24", "dev", &name]).unwrap();
    ip(&["-n", &ns.0, "link", "set", &name, "up"]).unwrap();

    // Two vifs of one guest on the switch: one bridged to the TAP, one the
    // far end.
    let emb = Embedded::new().unwrap();
    let switch = Switch::new();
    let (nb_a, mut nf_a) = emb
        .vif(
            0,
            MAC_BRIDGE,
            Arc::new(switch.port()),
            NetbackConfig::default(),
            NetfrontConfig::default(),
        )
        .unwrap();
    let (nb_b, mut nf_b) = emb
        .vif(
            1,
            MAC_PEER,
            Arc::new(switch.port()),
            NetbackConfig::default(),
            NetfrontConfig::default(),
        )
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let bridge_thread = {
        let (tap, stop) = (tap.clone(), stop.clone());
        std::thread::spawn(move || {
            let r = bridge(&mut nf_a, &*tap, &stop);
            nf_a.close();
            r
        })
    };

    // TAP → netfront: a frame from the namespace reaches the peer intact.
    let from_ns = frame(MAC_PEER, [0x02, 0, 0, 0, 0x0b, 0x99], 0x5a, 1000);
    let deadline = Instant::now() + GUARD;
    let got = 'rx: loop {
        assert!(
            Instant::now() < deadline,
            "the namespace's frame never came"
        );
        let st = Command::new("ip")
            .args(["netns", "exec", &ns.0, python, "-c", PY, "send", &name])
            .arg(hex(&from_ns))
            .status()
            .unwrap();
        assert!(st.success());
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            let _ = nf_b.wait(Duration::from_millis(20)).unwrap();
            while let Some(p) = nf_b.recv() {
                if p.data.len() > 14 && p.data[12..14] == [0x88, 0xb5] {
                    break 'rx p.data.to_vec();
                }
            }
        }
    };
    assert_eq!(got, from_ns, "TAP -> netfront, byte for byte");

    // Netfront → TAP: a frame from the peer reaches a packet socket in the
    // namespace intact.
    let mut listener = Kill(
        Command::new("ip")
            .args(["netns", "exec", &ns.0, python, "-c", PY, "recv", &name])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(listener.0.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let to_ns = frame([0xff; 6], MAC_PEER, 0xa5, 1400);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(lines.next().map(|l| l.unwrap_or_default()));
    });
    let deadline = Instant::now() + GUARD;
    let seen = loop {
        assert!(
            Instant::now() < deadline,
            "the peer's frame never reached the namespace"
        );
        nf_b.send(Packet::new(to_ns.clone())).unwrap();
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(300)) {
            break l.expect("the listener printed the frame");
        }
    };
    assert_eq!(unhex(&seen), to_ns, "netfront -> TAP, byte for byte");

    // And the kernel answers an ARP request through the bridge.
    let mut req = vec![0u8; 42];
    req[..6].copy_from_slice(&[0xff; 6]);
    req[6..12].copy_from_slice(&MAC_PEER);
    req[12..14].copy_from_slice(&[0x08, 0x06]);
    req[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    req[22..28].copy_from_slice(&MAC_PEER);
    req[28..32].copy_from_slice(&PEER_IP);
    req[38..42].copy_from_slice(&NS_IP);
    nf_b.send(Packet::new(req)).unwrap();
    let rep = recv_until(&mut nf_b, "ARP reply", |a| {
        a.len() >= 42 && a[12..14] == [8, 6] && a[20..22] == [0, 2] && a[28..32] == NS_IP
    });
    assert_eq!(&rep[..6], &MAC_PEER);
    assert_eq!(&rep[32..38], &MAC_PEER);
    assert_eq!(&rep[38..42], &PEER_IP);

    stop.store(true, Ordering::Release);
    let st = bridge_thread.join().unwrap().unwrap();
    println!("{st:?}");
    assert!(
        st.port_to_netfront >= 1 && st.netfront_to_port >= 2,
        "{st:?}"
    );
    assert_eq!(st.port_errors, 0);
    nf_b.close();
    nb_a.stop();
    nb_b.stop();
}
