//! Hosted mode: the daemon in this process, each domain a child process
//! (this test binary re-executed with `PVIO_HOSTED_ROLE` set, running
//! `hosted_child`). Children print `@@ ...` lines; the parent reads them and
//! feeds the backend the frontend's grant and port on its stdin. Every
//! child is killed and reaped by a guard, whatever happens.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use pvio_abi::blkif::{Request, Response};
use pvio_abi::{DomId, GrantRef, Port};
use pvio_hv::hosted::Daemon;
use pvio_hv::{CopyDst, CopyOp, CopySrc, Domain, DomainConfig, EvtchnError, GntStatus};
use pvio_ring::{BackRing, FrontRing};
use pvio_shmem::MemfdMem;

const GUARD: Duration = Duration::from_secs(20);

fn cfg() -> DomainConfig {
    DomainConfig {
        pages: 64,
        ..DomainConfig::default()
    }
}

// ------------------------------------------------------------------ parent

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Proc {
    fn spawn(role: &str, sock: &str, dom: u16, env: &[(&str, String)]) -> Proc {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "hosted_child", "--nocapture", "--test-threads=1"])
            .env("PVIO_HOSTED_ROLE", role)
            .env("PVIO_SOCK", sock)
            .env("PVIO_DOM", dom.to_string())
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
                // libtest may have printed "test hosted_child ... " first.
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

    /// The next `@@` line (the guard only catches a hung child; it is not
    /// a timing assertion).
    fn line(&self) -> String {
        self.lines.recv_timeout(GUARD * 3).expect("child line")
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
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `dom`'s process has registered with the daemon. A frontend
/// allocates its port for the backend domain, which must exist by then
/// (`alloc_unbound` of an unknown remote is `NoSuchDomain`, as embedded),
/// so a backend is started and registered before its frontend.
fn wait_connected(daemon: &Daemon, dom: DomId) {
    let start = std::time::Instant::now();
    while !daemon.connected().contains(&dom) {
        assert!(start.elapsed() < GUARD, "{dom:?} never registered");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn sock(name: &str) -> String {
    std::env::temp_dir()
        .join(format!("pvio-hosted-{}-{name}.sock", std::process::id()))
        .to_string_lossy()
        .into_owned()
}

/// Test 1 and 3: a frontend process and a backend process exchange ring
/// requests over a granted ring with event channels (the `pvio_ring`
/// code); the backend cannot reach what was not granted to it.
#[test]
fn ring_between_processes_and_isolation() {
    let path = sock("ring");
    let daemon = Daemon::serve(&path).unwrap();
    let idle = Proc::spawn("idle", &path, 3, &[]);
    assert_eq!(idle.line(), "ready");
    let mut be = Proc::spawn("back", &path, 2, &[("PVIO_ISOLATION", "1".into())]);
    wait_connected(&daemon, DomId(2));
    let fe = Proc::spawn("front", &path, 1, &[("PVIO_N", "5000".into())]);
    let info = fe.line();
    be.tell(&format!("1 {info} 5000"));
    assert_eq!(fe.line(), "done");
    let released = be.line();
    assert!(released.starts_with("released 5000 0"), "{released}");
    assert!(fe.finish(), "frontend child failed");
    assert!(be.finish(), "backend child failed");
    drop(idle);
    drop(daemon);
}

/// Test 4 (LIFE L1): SIGKILL a frontend mid-I/O: the backend releases
/// everything and serves the next frontend.
#[test]
fn l1_sigkill_frontend_mid_io() {
    let path = sock("l1");
    let daemon = Daemon::serve(&path).unwrap();
    let mut be = Proc::spawn("back", &path, 2, &[]);
    wait_connected(&daemon, DomId(2));
    let mut a = Proc::spawn("front", &path, 1, &[("PVIO_N", "0".into())]);
    let info = a.line();
    be.tell(&format!("1 {info} 0"));
    assert_eq!(a.line(), "progress");
    a.sigkill();
    let released = be.line();
    let f: Vec<&str> = released.split(' ').collect();
    assert_eq!((f[0], f[2]), ("released", "0"), "{released}");
    // The daemon destroyed the killed domain.
    assert!(!daemon.hypervisor().domains().contains(&DomId(1)));
    let b = Proc::spawn("front", &path, 4, &[("PVIO_N", "3000".into())]);
    let info = b.line();
    be.tell(&format!("4 {info} 3000"));
    assert_eq!(b.line(), "done");
    assert_eq!(be.line(), "released 3000 0");
    assert!(b.finish());
    assert!(be.finish());
}

/// An event sent just before the sender closes its end is still delivered
/// (the receiver's channel-table refresh that drops the closed channel
/// used to discard its pending bit: a lost wakeup, seen in CI as the
/// frontend of the ring test waiting for its last responses). Two hosted
/// domains in this process, each with its own connection and dispatcher.
#[test]
fn send_then_close_is_delivered() {
    let path = sock("close");
    let daemon = Daemon::serve(&path).unwrap();
    let a = Domain::connect_hosted(&path, DomId(1), cfg()).unwrap();
    let b = Domain::connect_hosted(&path, DomId(2), cfg()).unwrap();
    for round in 0..200 {
        let pa = a.events().alloc_unbound(DomId(2)).unwrap();
        let w = a.port_waiter(pa).unwrap();
        let pb = b.events().bind_interdomain(DomId(1), pa).unwrap();
        b.events().send(pb).unwrap();
        b.events().close(pb).unwrap();
        assert!(
            w.wait(Duration::ZERO, GUARD).unwrap(),
            "round {round}: lost"
        );
        a.events().close(pa).unwrap();
    }
    drop((a, b));
    drop(daemon);
}

/// Hosted grant copies with local buffers (staged through the copier's
/// own frames, so the daemon never carries the data): both directions,
/// offsets, a batch larger than one staging set, and the failures of the
/// same ops embedded — a buffer shorter than the length, a read-only
/// grant as destination, a length past the page — which write nothing.
#[test]
fn grant_copy_with_local_buffers() {
    let path = sock("copy");
    let daemon = Daemon::serve(&path).unwrap();
    let a = Domain::connect_hosted(&path, DomId(1), cfg()).unwrap();
    let b = Domain::connect_hosted(&path, DomId(2), cfg()).unwrap();
    let f = a.alloc_frames(2).unwrap();
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    pvio_shmem::SharedMem::write_bytes(&a.frame(f[0]).unwrap(), 0, &pattern).unwrap();
    let rw = a.grant_access(DomId(2), f[0], false).unwrap();
    let ro = a.grant_access(DomId(2), f[1], true).unwrap();
    let src = |gref, offset| CopySrc::Gref {
        domid: DomId(1),
        gref,
        offset,
    };
    // A whole page out.
    let mut page = vec![0u8; 4096];
    let mut ops = [CopyOp::new(src(rw, 0), CopyDst::Buf(&mut page), 4096)];
    assert_eq!(b.grant_copy(&mut ops), 1, "{:?}", ops[0].status);
    assert_eq!(page, pattern);
    // 70 small reads at distinct offsets: more than one staging set.
    let mut bufs: Vec<Vec<u8>> = (0..70).map(|_| vec![0u8; 50]).collect();
    let mut ops: Vec<CopyOp<'_>> = bufs
        .iter_mut()
        .enumerate()
        .map(|(i, buf)| CopyOp::new(src(rw, i as u16 * 57), CopyDst::Buf(buf), 50))
        .collect();
    assert_eq!(b.grant_copy(&mut ops), 70);
    drop(ops);
    for (i, buf) in bufs.iter().enumerate() {
        assert_eq!(&buf[..], &pattern[i * 57..i * 57 + 50], "op {i}");
    }
    // In, at an offset.
    let data = [0xabu8; 100];
    let dst = |gref, offset| CopyDst::Gref {
        domid: DomId(1),
        gref,
        offset,
    };
    let mut ops = [CopyOp::new(CopySrc::Buf(&data), dst(rw, 1000), 100)];
    assert_eq!(b.grant_copy(&mut ops), 1);
    let mut back = vec![0u8; 4096];
    pvio_shmem::SharedMem::read_bytes(&a.frame(f[0]).unwrap(), 0, &mut back).unwrap();
    assert!(back[1000..1100].iter().all(|&x| x == 0xab));
    assert_eq!(&back[..1000], &pattern[..1000]);
    assert_eq!(&back[1100..], &pattern[1100..]);
    // Failures: a short buffer, a read-only destination, past the page.
    let mut short = [0u8; 10];
    let mut big = vec![0u8; 5000];
    let mut ops = [
        CopyOp::new(src(rw, 0), CopyDst::Buf(&mut short), 20),
        CopyOp::new(CopySrc::Buf(&data), dst(ro, 0), 100),
        CopyOp::new(src(rw, 0), CopyDst::Buf(&mut big), 4200),
        CopyOp::new(src(rw, 4000), CopyDst::Buf(&mut page), 200),
    ];
    assert_eq!(b.grant_copy(&mut ops), 0);
    for o in &ops {
        assert_ne!(o.status, GntStatus::Okay);
    }
    assert_eq!(short, [0u8; 10]);
    let mut ro_page = vec![1u8; 4096];
    pvio_shmem::SharedMem::read_bytes(&a.frame(f[1]).unwrap(), 0, &mut ro_page).unwrap();
    assert!(ro_page.iter().all(|&x| x == 0), "read-only grant untouched");
    drop((a, b));
    drop(daemon);
}

/// L3: memfds the daemon hands out are sealed; an fd without both size
/// seals is refused.
#[test]
fn l3_unsealed_memfd_refused() {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let fd = memfd_create(c"pvio-test-unsealed", MFdFlags::MFD_ALLOW_SEALING).unwrap();
    nix::unistd::ftruncate(&fd, 4096).unwrap();
    assert!(MemfdMem::from_fd(fd.try_clone().unwrap()).is_err());
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_ADD_SEALS(nix::fcntl::SealFlag::F_SEAL_SHRINK),
    )
    .unwrap();
    assert!(
        MemfdMem::from_fd(fd.try_clone().unwrap()).is_err(),
        "grow seal missing"
    );
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_ADD_SEALS(nix::fcntl::SealFlag::F_SEAL_GROW),
    )
    .unwrap();
    assert!(MemfdMem::from_fd(fd).is_ok());
}

// ------------------------------------------------------------------ children

/// The child entry: does nothing unless re-executed with a role.
#[test]
fn hosted_child() {
    let Ok(role) = std::env::var("PVIO_HOSTED_ROLE") else {
        return;
    };
    let sock = std::env::var("PVIO_SOCK").unwrap();
    let dom = DomId(std::env::var("PVIO_DOM").unwrap().parse().unwrap());
    let d = Domain::connect_hosted(&sock, dom, cfg()).unwrap();
    assert!(d.is_hosted());
    match role.as_str() {
        "idle" => idle(&d),
        "front" => front(&d),
        "back" => back(&d),
        r => panic!("unknown role {r}"),
    }
}

fn say(s: &str) {
    println!("@@ {s}");
}

fn idle(d: &Domain) {
    // A domain that grants nothing: fill memory with a secret.
    let f = d.alloc_frames(4).unwrap();
    for &x in &f {
        pvio_shmem::SharedMem::fill(&d.frame(x).unwrap(), 0, 4096, 0x5e).unwrap();
    }
    say("ready");
    let mut s = String::new();
    let _ = std::io::stdin().read_line(&mut s);
}

/// Frontend: grants a ring to domain 2, allocates a port, sends `N`
/// requests (`N = 0`: forever), checking each response.
fn front(d: &Domain) {
    let n: u64 = std::env::var("PVIO_N").unwrap().parse().unwrap();
    let be = DomId(2);
    let frame = d.alloc_frames(1).unwrap()[0];
    let private = d.alloc_frames(1).unwrap()[0];
    pvio_shmem::SharedMem::fill(&d.frame(private).unwrap(), 0, 4096, 0xa5).unwrap();
    let mut ring = FrontRing::<_, Request, Response>::init(d.frame(frame).unwrap()).unwrap();
    let gref = d.grant_access(be, frame, false).unwrap();
    let ev = d.events();
    let port = ev.alloc_unbound(be).unwrap();
    let w = d.port_waiter(port).unwrap();
    say(&format!("{} {} {private}", gref.0, port.0));
    let (mut sent, mut done) = (0u64, 0u64);
    while n == 0 || done < n {
        let room = if n == 0 {
            ring.free_requests()
        } else {
            ring.free_requests().min((n - sent) as u32)
        };
        if room > 0 {
            let mut b = ring.reserve(room).unwrap();
            let base = sent;
            b.fill_with(|i| Request {
                id: base + u64::from(i),
                operation: 1,
                ..Default::default()
            })
            .unwrap();
            sent += u64::from(room);
            if b.publish_and_check_notify().unwrap().is_needed() {
                ev.send(port).unwrap();
            }
        }
        let got = ring
            .drain_responses(u32::MAX, |r| {
                assert_eq!(r.id, done, "responses in order");
                assert_eq!(r.operation, 1);
                done += 1;
                if n == 0 && done == 1000 {
                    say("progress");
                }
            })
            .unwrap();
        if got == 0 && !ring.final_check_for_responses().unwrap() {
            assert!(w.wait(Duration::ZERO, GUARD).unwrap(), "lost wakeup");
        }
    }
    say("done");
    // Wait for the parent (the backend still maps the ring).
    let mut s = String::new();
    let _ = std::io::stdin().read_line(&mut s);
}

/// The names of the memfds this process holds (`/proc/self/fd`).
fn memfds() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.contains("memfd:"))
        .collect()
}

fn holds(name: &str) -> bool {
    memfds()
        .iter()
        .any(|p| p.contains(&format!("memfd:{name} ")))
}

/// Backend: for each `fe gref port private n` line on stdin, maps the
/// ring, binds the port and answers requests (`n` of them, or until the
/// frontend dies), then releases everything and reports.
fn back(d: &Domain) {
    let isolation = std::env::var("PVIO_ISOLATION").is_ok();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let v: Vec<u32> = line.split(' ').map(|x| x.parse().unwrap()).collect();
        let (fe, gref, rport, private, n) = (
            DomId(v[0] as u16),
            GrantRef(v[1]),
            Port(v[2]),
            v[3],
            u64::from(v[4]),
        );
        if isolation {
            isolation_checks(d, fe, gref, private);
        }
        let pages = d.map_pages(fe, &[gref]).unwrap();
        if isolation {
            // Holding a mapping of fe's grant: fe's memory memfd (and only
            // that of the other domains' memory).
            assert!(holds(&format!("pvio-dom{}-mem", fe.0)), "{:?}", memfds());
            assert!(!holds("pvio-dom3-mem"), "{:?}", memfds());
            assert!(!holds(&format!("pvio-dom{}-gnttab", fe.0)));
            assert!(!holds("pvio-dom3-gnttab"));
            l3_cannot_resize(&format!("pvio-dom{}-mem", fe.0));
        }
        let mut ring = BackRing::<_, Request, Response>::attach(pages).unwrap();
        let ev = d.events();
        let port = ev.bind_interdomain(fe, rport).unwrap();
        let w = d.port_waiter(port).unwrap();
        let mut answered = 0u64;
        let dead = |r: Result<(), EvtchnError>| matches!(r, Err(EvtchnError::Closed(_)));
        'serve: while n == 0 || answered < n {
            let k = ring
                .answer_requests(32, |r| Response {
                    id: r.id,
                    operation: r.operation,
                    ..Default::default()
                })
                .unwrap_or(0);
            answered += u64::from(k);
            if ring.publish_and_check_notify().unwrap().is_needed() && dead(ev.send(port)) {
                break;
            }
            if k == 0 && !ring.final_check_for_requests().unwrap_or(false) {
                loop {
                    match w.wait(Duration::ZERO, Duration::from_millis(100)) {
                        Ok(true) => break,
                        // Quiet: is the frontend still there?
                        Ok(false) if dead(ev.send(port)) => break 'serve,
                        Ok(false) if !ring.final_check_for_requests().unwrap_or(false) => {}
                        Ok(false) => break,
                        Err(_) => break 'serve,
                    }
                }
            }
        }
        drop(ring);
        let _ = ev.close(port);
        let live = d.live_mappings();
        if isolation {
            // No mapping left: the granter's memory is gone from here too.
            assert!(!holds(&format!("pvio-dom{}-mem", fe.0)), "{:?}", memfds());
        }
        say(&format!("released {answered} {live}"));
    }
}

/// A backend cannot reach what was not granted to it through the API.
fn isolation_checks(d: &Domain, fe: DomId, gref: GrantRef, private: u32) {
    // A domain that granted nothing: no map, no copy, and its memory is
    // never sent to us.
    assert!(d.map(DomId(3), GrantRef(8)).is_err());
    assert!(d.map_readonly(DomId(3), GrantRef(8)).is_err());
    // Not-granted references of the frontend, and its private frame's
    // number used as a reference.
    for g in [GrantRef(gref.0 + 1), GrantRef(private), GrantRef(100_000)] {
        assert!(d.map(fe, g).is_err(), "map of non-granted {g:?}");
    }
    let mut buf = [0u8; 64];
    let mut ops = [CopyOp::new(
        CopySrc::Gref {
            domid: DomId(3),
            gref: GrantRef(8),
            offset: 0,
        },
        CopyDst::Buf(&mut buf),
        64,
    )];
    assert_eq!(d.grant_copy(&mut ops), 0);
    assert_ne!(ops[0].status, GntStatus::Okay);
    // A failed map sent no memory.
    assert!(!holds("pvio-dom3-mem"), "{:?}", memfds());
    assert!(!holds(&format!("pvio-dom{}-mem", fe.0)), "{:?}", memfds());
    // A legitimate copy works, and still sends nothing.
    let mut ops = [CopyOp::new(
        CopySrc::Gref {
            domid: fe,
            gref,
            offset: 0,
        },
        CopyDst::Buf(&mut buf),
        64,
    )];
    assert_eq!(d.grant_copy(&mut ops), 1, "{:?}", ops[0].status);
    assert!(!holds(&format!("pvio-dom{}-mem", fe.0)));
}

/// L3: a peer cannot shrink or grow a memfd it was sent (sealed).
fn l3_cannot_resize(name: &str) {
    let path = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            std::fs::read_link(p)
                .is_ok_and(|l| l.to_string_lossy().contains(&format!("memfd:{name} ")))
        })
        .unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let len = f.metadata().unwrap().len();
    assert!(f.set_len(len / 2).is_err(), "shrink refused");
    assert!(f.set_len(len * 2).is_err(), "grow refused");
    assert_eq!(f.metadata().unwrap().len(), len);
}
