//! Hosted mode through the command line: `pvio hv` and driver processes
//! (`pvio blkback`, `pvio blkfront --hv`, `pvio netback --switch`,
//! `pvio netfront --hv`), all started by the test and killed on drop.
//!
//! * qemu-io over the NBD export of a hosted blkfront, then `qemu-img
//!   compare` of the (quiescent) export against the image file;
//! * two network namespaces, each with a TAP bridged by a netfront
//!   process, joined through one netback switch process: ping both ways
//!   and a TCP transfer checked by hash (python3);
//! * `xenstore-ls` against the daemon's store socket.
//!
//! Tools that are missing (qemu-utils, xenstore-utils, root/ip/python3)
//! make a test print "SKIPPED: <why>" and return, except under CI for the
//! packages CI installs. No timing assertions: every wait has a guard.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PVIO: &str = env!("CARGO_BIN_EXE_pvio");
const GUARD: Duration = Duration::from_secs(60);

fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A pvio process, its stderr in a log file; killed on drop.
struct Pvio {
    child: Option<Child>,
    log: PathBuf,
    name: String,
}

impl Drop for Pvio {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Pvio {
    fn start(dir: &Path, name: &str, args: &[&str]) -> Pvio {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(PVIO)
            .args(args)
            .env("PVIO_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Pvio {
            child: Some(child),
            log,
            name: name.into(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `what` (the process must not exit).
    fn wait_for(&mut self, what: &str) {
        let start = Instant::now();
        loop {
            let log = self.log();
            if log.contains(what) {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} exited ({st}) before `{what}`: {log}", self.name);
            }
            assert!(
                start.elapsed() < GUARD,
                "{}: no `{what}` in: {log}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM; the process must exit 0 by itself, saying so.
    fn terminate(mut self) {
        let mut c = self.child.take().unwrap();
        let st = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let start = Instant::now();
        let status = loop {
            if let Some(s) = c.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > GUARD {
                let _ = c.kill();
                let _ = c.wait();
                panic!("{} did not stop on SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = self.log();
        assert!(status.success(), "{} exit {status}: {log}", self.name);
        assert!(log.contains("pvio: stopped"), "{}: {log}", self.name);
    }
}

/// `pvio hv` on `dir/hv.sock` (store on `xs`, default `hv.sock.xs`).
fn daemon(dir: &Path, xs: Option<&Path>) -> (Pvio, String) {
    let sock = dir.join("hv.sock").to_string_lossy().into_owned();
    let mut args = vec!["hv", "--socket", &sock];
    let xs_s;
    if let Some(x) = xs {
        xs_s = x.to_string_lossy().into_owned();
        args.extend(["--xenstore", &xs_s]);
    }
    let mut p = Pvio::start(dir, "hv", &args);
    p.wait_for("pvio: hypervisor on");
    (p, sock)
}

fn run(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().unwrap();
    let all = text(&o);
    println!("$ {cmd} {args:?}\n{all}");
    assert!(o.status.success(), "{cmd} {args:?} failed: {all}");
    assert!(
        !all.contains("Pattern verification failed") && !all.contains("error"),
        "{cmd}: {all}"
    );
    all
}

fn skip_unless_ci(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{why} under CI (.ci/run installs it)"
    );
    println!("SKIPPED: {why}");
}

/// (a) `pvio hv` + `pvio blkback --hv` + `pvio blkfront --hv --nbd`:
/// qemu-io patterns written and read back, then the quiescent export
/// compares identical with the image file (blkback writes through).
#[test]
fn blk_hosted_qemu_io_and_compare() {
    if !(have("qemu-img", "--version") && have("qemu-io", "--version")) {
        skip_unless_ci("qemu-img or qemu-io missing (apt-get install qemu-utils)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let nbd = dir.path().join("nbd.sock");
    let (hv, sock) = daemon(dir.path(), None);
    let mut bb = Pvio::start(
        dir.path(),
        "blkback",
        &[
            "blkback",
            "--hv",
            &sock,
            "--image",
            img.to_str().unwrap(),
            "--frontend-id",
            "5",
            "--backend-id",
            "4",
        ],
    );
    bb.wait_for("pvio: serving");
    let nbd_arg = format!("unix:{}", nbd.display());
    let mut bf = Pvio::start(
        dir.path(),
        "blkfront",
        &[
            "blkfront",
            "--hv",
            &sock,
            "--nbd",
            &nbd_arg,
            "--frontend-id",
            "5",
            "--backend-id",
            "4",
        ],
    );
    bf.wait_for("pvio: exporting");
    let url = format!("nbd+unix:///?socket={}", nbd.display());
    let info = run("qemu-img", &["info", "-f", "raw", &url]);
    assert!(info.contains("33554432 bytes"), "{info}");
    run(
        "qemu-io",
        &[
            "-f",
            "raw",
            &url,
            "-c",
            "write -P 0xab 0 64k",
            "-c",
            "read -P 0xab 0 64k",
            "-c",
            "write -P 0x5a 1M 1M",
            "-c",
            "write -P 0x11 31M 3584",
            "-c",
            "write -P 0x22 20M 512",
            "-c",
            "read -P 0x5a 1M 1M",
            "-c",
            "read -P 0x11 31M 3584",
            "-c",
            "flush",
        ],
    );
    run(
        "qemu-io",
        &["-f", "raw", "-r", &url, "-c", "read -P 0x22 20M 512"],
    );
    // Quiescent now: the export and the file must agree.
    let out = run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            &url,
            img.to_str().unwrap(),
        ],
    );
    assert!(out.contains("Images are identical"), "{out}");
    bf.terminate();
    assert!(!nbd.exists(), "the NBD socket is removed");
    bb.terminate();
    hv.terminate();
    let d = std::fs::read(&img).unwrap();
    assert!(d[..64 << 10].iter().all(|&b| b == 0xab));
    assert!(d[1 << 20..2 << 20].iter().all(|&b| b == 0x5a));
    assert!(d[20 << 20..(20 << 20) + 512].iter().all(|&b| b == 0x22));
    assert!(d[31 << 20..(31 << 20) + 3584].iter().all(|&b| b == 0x11));
}

/// (c) `xenstore-ls` (Debian's xenstore-utils) against `pvio hv
/// --xenstore PATH` lists the device tree a backend created.
#[test]
fn xenstore_ls_against_the_daemon() {
    if !have("xenstore-ls", "--help") && !Path::new("/usr/bin/xenstore-ls").exists() {
        skip_unless_ci("xenstore-ls missing (apt-get install xenstore-utils)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let xs = dir.path().join("store.sock");
    let (hv, sock) = daemon(dir.path(), Some(&xs));
    let mut bb = Pvio::start(
        dir.path(),
        "blkback",
        &[
            "blkback",
            "--hv",
            &sock,
            "--xenstore",
            xs.to_str().unwrap(),
            "--image",
            img.to_str().unwrap(),
            "--read-only",
        ],
    );
    bb.wait_for("pvio: serving");
    let o = Command::new("xenstore-ls")
        .arg("/local/domain")
        .env("XENSTORED_PATH", &xs)
        .output()
        .unwrap();
    let out = text(&o);
    println!("{out}");
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("frontend = \"/local/domain/2/device/vbd/51712\""),
        "{out}"
    );
    assert!(
        out.contains("backend = \"/local/domain/1/backend/vbd/2/51712\""),
        "{out}"
    );
    // (Written by the toolstack role before serving; the backend's
    // features follow asynchronously.)
    assert!(out.contains("frontend-id = \"2\""), "{out}");
    assert!(out.contains("backend-id = \"1\""), "{out}");
    bb.terminate();
    hv.terminate();
}

// ------------------------------------------------------------ network

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("ip {args:?}: {}", text(&o).trim()))
    }
}

fn in_ns(ns: &str, cmd: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(cmd);
    c
}

/// The link `name` exists in the root namespace.
fn link_exists(name: &str) -> bool {
    ip(&["link", "show", "dev", name]).is_ok()
}

/// Three ICMP echo requests, each answered (a raw socket: root).
const PING_PY: &str = r#"
import socket, struct, sys, time
dst = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(5)
def csum(b):
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xFFFF)
    t += t >> 16
    return ~t & 0xFFFF
ok = 0
for seq in range(3):
    body = b"pvio" * 8
    c = csum(struct.pack("!BBHHH", 8, 0, 0, 0x77, seq) + body)
    s.sendto(struct.pack("!BBHHH", 8, 0, c, 0x77, seq) + body, (dst, 0))
    end = time.time() + 5
    while time.time() < end:
        try:
            d, a = s.recvfrom(2048)
        except socket.timeout:
            break
        h = (d[0] & 15) * 4
        t, _, _, i, q = struct.unpack("!BBHHH", d[h:h + 8])
        if t == 0 and i == 0x77 and q == seq and a[0] == dst:
            ok += 1
            break
print("%d/3 replies" % ok)
sys.exit(0 if ok == 3 else 1)
"#;

const SERVER_PY: &str = r#"
import hashlib, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5201))
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
h, n = hashlib.sha256(), 0
while True:
    b = c.recv(1 << 16)
    if not b:
        break
    h.update(b)
    n += len(b)
print(n, h.hexdigest(), flush=True)
"#;

const CLIENT_PY: &str = r#"
import hashlib, random, socket, sys
data = random.Random(7).randbytes(16 << 20)
c = socket.create_connection((sys.argv[1], 5201), timeout=60)
c.sendall(data)
c.shutdown(socket.SHUT_WR)
c.recv(1)
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"#;

/// (b) Two namespaces, each with a TAP bridged by a `pvio netfront`
/// process, joined by one `pvio netback --switch` process serving both
/// frontends: ping both ways, and 16 MiB over TCP arrive intact.
#[test]
fn net_hosted_two_namespaces_through_one_switch() {
    let why = if !Path::new("/dev/net/tun").exists() {
        Some("no /dev/net/tun")
    } else if !have("python3", "--version") {
        Some("no python3")
    } else if !have("ip", "-V") {
        Some("no ip (iproute2)")
    } else {
        None
    };
    if let Some(why) = why {
        println!("SKIPPED: {why}");
        return;
    }
    let tag = std::process::id() % 100_000;
    let (ns1, ns2) = (format!("pvh1-{tag}"), format!("pvh2-{tag}"));
    if let Err(e) = ip(&["netns", "add", &ns1]) {
        println!("SKIPPED: cannot create a network namespace (root needed): {e}");
        return;
    }
    let _g1 = Netns(ns1.clone());
    ip(&["netns", "add", &ns2]).unwrap();
    let _g2 = Netns(ns2.clone());
    let (tap1, tap2) = (format!("pvht1-{tag}"), format!("pvht2-{tag}"));

    let dir = tempfile::tempdir().unwrap();
    let (hv, sock) = daemon(dir.path(), None);
    let mut nb = Pvio::start(
        dir.path(),
        "netback",
        &[
            "netback",
            "--hv",
            &sock,
            "--switch",
            "--backend-id",
            "1",
            "--frontend-id",
            "2",
            "--frontend-id",
            "3",
        ],
    );
    nb.wait_for("ready; SIGINT/SIGTERM");
    let mut fronts = Vec::new();
    for (fe, tap) in [("2", &tap1), ("3", &tap2)] {
        let mut p = Pvio::start(
            dir.path(),
            &format!("netfront{fe}"),
            &[
                "netfront",
                "--hv",
                &sock,
                "--tap",
                tap,
                "--frontend-id",
                fe,
                "--backend-id",
                "1",
            ],
        );
        p.wait_for("bridged to TAP");
        assert!(link_exists(tap), "{tap} created by the netfront process");
        fronts.push(p);
    }
    let macs: Vec<String> = fronts
        .iter()
        .map(|p| {
            let l = p.log();
            let at = l.find("(mac ").unwrap() + 5;
            l[at..at + 17].to_string()
        })
        .collect();
    assert_ne!(macs[0], macs[1], "a distinct MAC per frontend");
    // Move each TAP into its namespace (the netfront's fd stays valid).
    for (ns, tap, addr) in [(&ns1, &tap1, "10.98.0.1/24"), (&ns2, &tap2, "10.98.0.2/24")] {
        ip(&["link", "set", tap, "netns", ns]).unwrap();
        ip(&["-n", ns, "addr", "add", addr, "dev", tap]).unwrap();
        ip(&["-n", ns, "link", "set", tap, "up"]).unwrap();
        ip(&["-n", ns, "link", "set", "lo", "up"]).unwrap();
    }
    // ping (iputils-ping), or the same ICMP echo from python3.
    let have_ping = have("ping", "-V");
    for (ns, to) in [(&ns1, "10.98.0.2"), (&ns2, "10.98.0.1")] {
        let o = if have_ping {
            in_ns(ns, &["ping", "-c", "3", "-W", "5", to]).output()
        } else {
            in_ns(ns, &["python3", "-c", PING_PY, to]).output()
        }
        .unwrap();
        let out = text(&o);
        println!("{out}");
        assert!(o.status.success(), "ping {to} from {ns}: {out}");
        assert!(
            out.contains(" 0% packet loss") || out.contains("3/3 replies"),
            "{out}"
        );
    }
    // TCP: 16 MiB from ns1 to ns2, hash checked.
    let mut server = ChildGuard(
        in_ns(&ns2, &["python3", "-c", SERVER_PY, "10.98.0.2"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = std::io::BufReader::new(server.0.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "listening");
    let o = in_ns(&ns1, &["python3", "-c", CLIENT_PY, "10.98.0.2"])
        .output()
        .unwrap();
    let sent = text(&o);
    assert!(o.status.success(), "client: {sent}");
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert!(server.0.wait().unwrap().success());
    println!("sent {sent} received {line}");
    assert_eq!(line.trim(), sent.trim(), "the transfer arrived intact");
    assert!(line.starts_with(&(16u64 << 20).to_string()));

    for p in fronts {
        p.terminate();
    }
    nb.terminate();
    hv.terminate();
}

/// Kills and reaps a helper process on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
