//! Hosted mode with the real drivers: blkfront in one process, blkback in
//! another, the daemon (and the toolstack, dom0 on the daemon's store) in
//! this one; the xenstore handshake runs over the daemon's store
//! connections (`Domain::store` of a hosted domain is a wire connection).
//!
//! Children are this test binary re-executed with `PVIO_HOSTED_ROLE` set
//! (running `hosted_drivers_child`); they print `@@ ...` lines and take
//! commands on stdin. Every child is killed and reaped by a guard.
//!
//! * writes then reads verified through the handshake;
//! * LIFE L2: SIGKILL the backend process mid-I/O; the toolstack (this
//!   process) recreates the device once the dead domain is gone, a new
//!   backend process connects as the same domain, the frontend reconnects
//!   and replays, and no write is lost (every block checked through the
//!   frontend and in the image file);
//! * LIFE L1: SIGKILL a frontend process mid-I/O; the backend releases
//!   every mapping and serves another frontend.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use pvio_abi::DomId;
use pvio_blkback::{Blkback, BlkbackConfig};
use pvio_blkdisk::{FileOptions, UringDisk};
use pvio_blkfront::{Blkfront, BlkfrontConfig, BlockDone, BlockIo, BlockOp};
use pvio_hv::hosted::Daemon;
use pvio_hv::{Domain, DomainConfig, Hypervisor};
use pvio_xenbus::toolstack::{DevicePaths, create_device};

/// Catches a hung child or a condition never reached (not a timing
/// assertion).
const GUARD: Duration = Duration::from_secs(60);
const BLOCK: usize = 4096;
/// Blocks of the image (16 MiB).
const NBLK: u64 = 4096;
const DEVID: u32 = 51712;
const BACKEND: DomId = DomId(2);

fn cfg() -> DomainConfig {
    DomainConfig {
        pages: 16384,
        ..DomainConfig::default()
    }
}

fn dev(fe: DomId) -> DevicePaths {
    DevicePaths::new(fe, BACKEND, "vbd", DEVID)
}

/// Block `i` as written in generation `g`.
fn pattern(g: u32, i: u64) -> Vec<u8> {
    let w = (u64::from(g) << 32) | i;
    w.to_le_bytes().repeat(BLOCK / 8)
}

// ------------------------------------------------------------------ parent

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Proc {
    fn spawn(role: &str, sock: &Path, dom: DomId, env: &[(&str, String)]) -> Proc {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "hosted_drivers_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PVIO_HOSTED_ROLE", role)
        .env("PVIO_SOCK", sock)
        .env("PVIO_DOM", dom.0.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(at) = l.find("@@ ") {
                    let _ = tx.send(l[at + 3..].to_string());
                }
            }
        });
        let stdin = child.stdin.take();
        Proc {
            child,
            stdin,
            lines,
        }
    }

    fn line(&self) -> String {
        self.lines.recv_timeout(GUARD).expect("child line")
    }

    fn expect(&self, want: &str) {
        let l = self.line();
        assert_eq!(l, want);
    }

    fn tell(&mut self, s: &str) {
        let w = self.stdin.as_mut().unwrap();
        writeln!(w, "{s}").unwrap();
        w.flush().unwrap();
    }

    fn finish(mut self) -> bool {
        self.stdin = None;
        self.child.wait().unwrap().success()
    }

    fn sigkill(&mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon, dom0 (the toolstack) in its hypervisor, and an image.
struct World {
    // Dropped in this order: the daemon while its socket file exists.
    daemon: Daemon,
    dom0: Domain,
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let hv = Hypervisor::new();
        let dom0 = hv.create_domain(DomId(0), DomainConfig::default()).unwrap();
        let daemon = Daemon::serve_with(dir.path().join("hv.sock"), hv).unwrap();
        let img = std::fs::File::create(dir.path().join("disk.img")).unwrap();
        img.set_len(NBLK * BLOCK as u64).unwrap();
        World { daemon, dom0, dir }
    }

    fn sock(&self) -> &Path {
        self.daemon.path()
    }

    fn image(&self) -> String {
        self.dir
            .path()
            .join("disk.img")
            .to_string_lossy()
            .into_owned()
    }

    fn hv(&self) -> &Hypervisor {
        self.daemon.hypervisor()
    }

    fn backend(&self) -> Proc {
        let p = Proc::spawn(
            "back",
            self.sock(),
            BACKEND,
            &[("PVIO_IMAGE", self.image())],
        );
        p.expect("ready");
        p
    }

    fn frontend(&self, dom: DomId, mode: &str) -> Proc {
        let p = Proc::spawn("front", self.sock(), dom, &[("PVIO_MODE", mode.into())]);
        p.expect("ready");
        p
    }

    /// The toolstack's part: the device's two directories, as dom0.
    fn create(&self, fe: DomId) {
        create_device(&self.dom0.store(), &dev(fe), &[], &[]).unwrap();
    }

    /// Waits until domain `id` is gone from the daemon's hypervisor.
    fn wait_gone(&self, id: DomId) {
        let deadline = Instant::now() + GUARD;
        while self.hv().domains().contains(&id) {
            assert!(Instant::now() < deadline, "domain {} not destroyed", id.0);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn file_block(&self, i: u64) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(self.image()).unwrap();
        let mut b = vec![0u8; BLOCK];
        f.read_exact_at(&mut b, i * BLOCK as u64).unwrap();
        b
    }
}

/// Writes then reads, verified, through the hosted handshake; the store
/// nodes of both ends exist in the daemon's store.
#[test]
fn blk_between_processes_writes_then_reads() {
    let mut w = World::new();
    let xs = w.dir.path().join("xs.sock");
    w.daemon.bind_store(&xs).unwrap();
    assert_eq!(w.daemon.store_path(), Some(xs.as_path()));
    let mut be = w.backend();
    let mut fe = w.frontend(DomId(1), "verify");
    w.create(DomId(1));
    be.tell(&format!("serve 1 {DEVID}"));
    fe.tell("go");
    let done = fe.line();
    assert!(done.starts_with("verified "), "{done}");
    // The handshake went through the daemon's store.
    let st = w.dom0.store();
    assert_eq!(st.read(&dev(DomId(1)).frontend_key("state")).unwrap(), b"4");
    assert_eq!(st.read(&dev(DomId(1)).backend_key("state")).unwrap(), b"4");
    // And through the daemon's store socket (dom0, the wire protocol).
    let wire = pvio_xenbus::wire::WireConn::connect(&xs).unwrap();
    use pvio_xenbus::XsClient;
    assert_eq!(
        wire.read(&dev(DomId(1)).backend_key("state")).unwrap(),
        b"4"
    );
    assert_eq!(
        wire.directory("/local/domain/2/backend/vbd/1").unwrap(),
        [DEVID.to_string()]
    );
    fe.tell("close");
    assert!(fe.finish(), "frontend failed");
    be.tell("quit");
    assert!(be.finish(), "backend failed");
    for i in 0..64 {
        assert_eq!(w.file_block(i), pattern(7, i), "block {i} in the image");
    }
}

/// LIFE L2: SIGKILL the backend process mid-I/O; a new backend process
/// (same domain id, device recreated by the toolstack) takes over, the
/// frontend replays, and no write is lost.
#[test]
fn l2_sigkill_backend_mid_io_frontend_replays() {
    let w = World::new();
    let mut be = w.backend();
    let mut fe = w.frontend(DomId(1), "rounds");
    w.create(DomId(1));
    be.tell(&format!("serve 1 {DEVID}"));
    fe.tell("go");
    fe.expect("round 1");
    // The frontend keeps 64 writes in flight all the time.
    be.sigkill();
    w.wait_gone(BACKEND);
    // The dead domain's store nodes are gone with it.
    assert!(
        w.dom0
            .store()
            .read(&dev(DomId(1)).backend_key("state"))
            .is_err()
    );
    let mut be2 = w.backend();
    w.create(DomId(1));
    be2.tell(&format!("serve 1 {DEVID}"));
    // Rounds complete again: the frontend reconnected.
    let mut l = fe.line();
    while l != "reconnected" {
        assert!(l.starts_with("round "), "{l}");
        l = fe.line();
    }
    fe.expect_round();
    fe.tell("finish");
    let v = fe.line();
    assert!(v.starts_with("verified "), "{v}");
    eprintln!("l2: {v}");
    let fin = fe.line();
    let g: u32 = fin.strip_prefix("final ").unwrap().parse().unwrap();
    fe.tell("close");
    assert!(fe.finish(), "frontend failed");
    be2.tell("quit");
    assert!(be2.finish(), "backend failed");
    for i in 0..NBLK {
        assert!(w.file_block(i) == pattern(g, i), "block {i} in the image");
    }
}

impl Proc {
    fn expect_round(&self) {
        let l = self.line();
        assert!(l.starts_with("round "), "{l}");
    }
}

/// LIFE L1: SIGKILL a frontend process mid-I/O; the backend releases
/// every mapping and keeps serving another frontend.
#[test]
fn l1_sigkill_frontend_mid_io_backend_serves_another() {
    let w = World::new();
    let mut be = w.backend();
    let mut a = w.frontend(DomId(1), "rounds");
    w.create(DomId(1));
    be.tell(&format!("serve 1 {DEVID}"));
    a.tell("go");
    a.expect("round 1");
    let backend = w.hv().domain(BACKEND).unwrap();
    assert!(backend.live_mappings() > 0);
    a.sigkill();
    w.wait_gone(DomId(1));
    let deadline = Instant::now() + GUARD;
    while backend.live_mappings() > 0 {
        assert!(Instant::now() < deadline, "backend kept mappings");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(be.alive(), "backend died with its frontend");
    // Another frontend, served by the same backend process.
    let mut b = w.frontend(DomId(3), "verify");
    w.create(DomId(3));
    be.tell(&format!("serve 3 {DEVID}"));
    b.tell("go");
    let done = b.line();
    assert!(done.starts_with("verified "), "{done}");
    b.tell("close");
    assert!(b.finish());
    be.tell("quit");
    assert!(be.finish());
    assert_eq!(backend.live_mappings(), 0);
}

// ------------------------------------------------------------------ children

#[test]
fn hosted_drivers_child() {
    let Ok(role) = std::env::var("PVIO_HOSTED_ROLE") else {
        return;
    };
    let sock = std::env::var("PVIO_SOCK").unwrap();
    let dom = DomId(std::env::var("PVIO_DOM").unwrap().parse().unwrap());
    let d = Domain::connect_hosted(&sock, dom, cfg()).unwrap();
    assert!(matches!(d.store(), pvio_xenbus::Client::Wire(_)));
    say("ready");
    match role.as_str() {
        "back" => back(&d),
        "front" => front(&d),
        r => panic!("unknown role {r}"),
    }
}

fn say(s: &str) {
    println!("@@ {s}");
}

/// Backend: `serve FE DEVID` starts blkback on the image for that device;
/// `quit` (or end of input) stops them all.
fn back(d: &Domain) {
    let image = std::env::var("PVIO_IMAGE").unwrap();
    let mut served = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let v: Vec<&str> = line.split(' ').collect();
        match v[0] {
            "serve" => {
                let fe = DomId(v[1].parse().unwrap());
                let devid: u32 = v[2].parse().unwrap();
                let disk = UringDisk::open(&image, FileOptions::default()).unwrap();
                let dev = DevicePaths::new(fe, d.id(), "vbd", devid);
                served.push(Blkback::serve(
                    d.clone(),
                    dev,
                    Arc::new(disk),
                    BlkbackConfig::default(),
                ));
            }
            "quit" => break,
            l => panic!("unknown command {l}"),
        }
    }
    for b in served {
        b.stop();
    }
}

fn stdin_line() -> String {
    let mut s = String::new();
    std::io::stdin().read_line(&mut s).unwrap();
    s.trim().to_string()
}

/// Frontend: waits for `go`, connects, then `verify` (writes 64 blocks,
/// reads them back) or `rounds` (writes every block of the disk, round
/// after round, 64 writes in flight, until `finish`; then checks every
/// block and writes a final round).
fn front(d: &Domain) {
    let mode = std::env::var("PVIO_MODE").unwrap();
    assert_eq!(stdin_line(), "go");
    let cfg = BlkfrontConfig {
        timeout: GUARD,
        ..BlkfrontConfig::default()
    };
    let fe_dev = DevicePaths::new(d.id(), BACKEND, "vbd", DEVID);
    let mut f = Blkfront::connect(d.clone(), fe_dev, cfg).unwrap();
    assert_eq!(f.info().sectors, NBLK * 8);
    match mode.as_str() {
        "verify" => {
            for i in 0..64 {
                f.write_at(i * 8, &pattern(7, i)).unwrap();
            }
            f.flush().unwrap();
            let mut b = vec![0u8; BLOCK];
            for i in 0..64 {
                f.read_at(i * 8, &mut b).unwrap();
                assert!(b == pattern(7, i), "block {i}");
            }
            say("verified 64");
        }
        "rounds" => rounds(&mut f),
        m => panic!("unknown mode {m}"),
    }
    assert_eq!(stdin_line(), "close");
    f.close();
}

fn rounds(f: &mut Blkfront) {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            if stdin_line() == "finish" {
                stop.store(true, Ordering::Release);
            }
        });
    }
    // last[i]: the generation of the last completed write of block i.
    let mut last = vec![0u32; NBLK as usize];
    let (mut next, mut in_flight, mut out) = (0u64, 0usize, Vec::<BlockDone>::new());
    let mut said_reconnect = false;
    let tag = |g: u32, i: u64| (u64::from(g) << 32) | i;
    loop {
        let g = (next / NBLK) as u32 + 1;
        let i = next % NBLK;
        if i == 0 && stop.load(Ordering::Acquire) {
            break;
        }
        if in_flight < 64 {
            f.submit(BlockIo {
                tag: tag(g, i),
                op: BlockOp::Write,
                sector: i * 8,
                data: pattern(g, i),
            })
            .map_err(|(e, _)| e)
            .unwrap();
            in_flight += 1;
            next += 1;
            continue;
        }
        f.wait(1, GUARD, &mut out);
        for done in out.drain(..) {
            assert_eq!(done.result, Ok(()), "write {:#x}", done.tag);
            let (dg, di) = ((done.tag >> 32) as u32, done.tag & 0xffff_ffff);
            assert!(dg > last[di as usize], "completed out of order");
            last[di as usize] = dg;
            in_flight -= 1;
            if di == NBLK - 1 {
                say(&format!("round {dg}"));
                if !said_reconnect && f.stats().connects >= 2 {
                    said_reconnect = true;
                    say("reconnected");
                }
            }
        }
    }
    while in_flight > 0 {
        f.wait(1, GUARD, &mut out);
        for done in out.drain(..) {
            assert_eq!(done.result, Ok(()), "write {:#x}", done.tag);
            let (dg, di) = ((done.tag >> 32) as u32, done.tag & 0xffff_ffff);
            last[di as usize] = dg;
            in_flight -= 1;
        }
    }
    // Every block holds its last completed write.
    let mut b = vec![0u8; BLOCK];
    for i in 0..NBLK {
        f.read_at(i * 8, &mut b).unwrap();
        assert!(b == pattern(last[i as usize], i), "block {i} lost a write");
    }
    let st = f.stats();
    say(&format!(
        "verified {} rounds, {} replayed, {} connects",
        last[0], st.replayed, st.connects
    ));
    let g = last.iter().max().copied().unwrap_or(0) + 1;
    for i in 0..NBLK {
        f.write_at(i * 8, &pattern(g, i)).unwrap();
    }
    f.flush().unwrap();
    say(&format!("final {g}"));
}
