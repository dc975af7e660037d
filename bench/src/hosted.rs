//! Hosted-mode pipelines for `benches/hosted.rs`: pvio's ring between two
//! processes against a Unix datagram socketpair carrying the same
//! messages, and blkfront → blkback with the backend in another process
//! (see [`crate::blk::Driver::connect_hosted`]).
//!
//! The other side of each pipeline is this same executable re-run with
//! [`ROLE`] set: a bench's `main` calls [`child_main`] first. The parent
//! runs the hypervisor daemon ([`Daemon`]) and is itself a hosted domain
//! (its own connection, memfd memory and dispatcher thread, exactly as a
//! separate process would be); the child is the backend domain.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use pvio_abi::{DomId, GrantRef, Port};
use pvio_hv::hosted::Daemon;
use pvio_hv::{Domain, DomainConfig, PortWaiter};
use pvio_ring::{BackRing, FrontRing};

use crate::{RING_PAGES, Req, Rsp, SLOTS};

/// The environment variable naming the role of a re-executed child.
pub const ROLE: &str = "PVIO_BENCH_ROLE";

/// How long a side waits for the other before the pipeline is declared
/// hung (a guard, not a timing assertion).
const GUARD: Duration = Duration::from_secs(20);

/// Empty polls before a side re-arms its event and sleeps.
const SPIN_POLLS: u32 = 2000;

/// Frontend domain id in the hosted pipelines.
pub const FRONTEND: DomId = DomId(1);
/// Backend domain id in the hosted pipelines (the child process).
pub const BACKEND: DomId = DomId(2);

fn dom_config() -> DomainConfig {
    DomainConfig {
        pages: 16384,
        ..DomainConfig::default()
    }
}

/// Runs the child role this process was started for, if any; returns
/// whether it was one (`main` then returns).
pub fn child_main() -> bool {
    let Ok(role) = std::env::var(ROLE) else {
        return false;
    };
    let r = match role.as_str() {
        "ring-back" => ring_back(),
        "dgram-echo" => dgram_echo(),
        "blkback" => crate::blk::hosted_blkback_child(),
        r => Err(io::Error::other(format!("unknown role {r}"))),
    };
    if let Err(e) = r {
        eprintln!("pvio-bench child {role}: {e}");
        std::process::exit(1);
    }
    true
}

/// Prints a line the parent reads.
pub(crate) fn say(s: &str) {
    println!("@@ {s}");
    let _ = io::stdout().flush();
}

/// A child process (this executable in a role), killed on drop.
pub(crate) struct Kid {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Kid {
    pub(crate) fn spawn(role: &str, env: &[(&str, String)]) -> io::Result<Kid> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.env(ROLE, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        let out = child.stdout.take().ok_or(io::ErrorKind::BrokenPipe)?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(at) = l.find("@@ ") {
                    let _ = tx.send(l[at + 3..].to_string());
                }
            }
        });
        let stdin = child.stdin.take();
        Ok(Kid {
            child,
            stdin,
            lines,
        })
    }

    /// The child's next line.
    pub(crate) fn line(&self) -> io::Result<String> {
        self.lines
            .recv_timeout(GUARD)
            .map_err(|_| io::Error::other("the child said nothing (it failed: see its stderr)"))
    }

    pub(crate) fn expect(&self, want: &str) -> io::Result<()> {
        let got = self.line()?;
        if got == want {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "child said {got:?}, not {want:?}"
            )))
        }
    }

    pub(crate) fn tell(&mut self, s: &str) -> io::Result<()> {
        let w = self.stdin.as_mut().ok_or(io::ErrorKind::BrokenPipe)?;
        writeln!(w, "{s}")?;
        w.flush()
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        // End of input asks the child to stop; the kill makes sure.
        self.stdin = None;
        reap(&mut self.child, Duration::from_secs(2));
    }
}

/// Gives `child` up to `grace` to exit after being asked to, then kills
/// and reaps it.
fn reap(child: &mut Child, grace: Duration) {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A daemon on a socket in a temporary directory.
pub(crate) struct HvDaemon {
    // The daemon goes before its directory.
    pub(crate) daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl HvDaemon {
    pub(crate) fn start(hv: Option<pvio_hv::Hypervisor>) -> io::Result<HvDaemon> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("hv.sock");
        let daemon = match hv {
            Some(hv) => Daemon::serve_with(&path, hv)?,
            None => Daemon::serve(&path)?,
        };
        Ok(HvDaemon { daemon, _dir: dir })
    }

    pub(crate) fn sock(&self) -> PathBuf {
        self.daemon.path().to_path_buf()
    }
}

fn hv_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Sets `stop` when standard input ends (the parent dropped us).
fn stop_on_eof() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let mut b = [0u8; 64];
        while matches!(io::stdin().read(&mut b), Ok(n) if n > 0) {}
        s.store(true, Ordering::Release);
    });
    stop
}

// ------------------------------------------------------------------ ring

/// pvio's ring between this process (the frontend domain) and a child
/// process (the backend domain), through the hypervisor daemon: the ring
/// pages are the frontend's, granted and mapped by the backend; each side
/// notifies the other over an event channel only when the ring's hold-off
/// asks for it, and sleeps on its port after 2000 empty polls (`SPIN_POLLS`).
pub struct HostedRing {
    // Drop order: the ring and our domain, then the child, then the daemon.
    ring: FrontRing<pvio_hv::Window<Arc<pvio_shmem::MemfdMem>>, Req, Rsp>,
    waiter: PortWaiter,
    port: Port,
    dom: Domain,
    child: Kid,
    hv: HvDaemon,
    /// Times the frontend slept on its port.
    pub sleeps: u64,
}

impl HostedRing {
    /// Starts the daemon and the backend process and connects the ring
    /// (`RING_PAGES` pages, [`SLOTS`] slots). The backend answers up to
    /// `batch` requests per publication.
    pub fn start(batch: u32) -> io::Result<HostedRing> {
        let hv = HvDaemon::start(None)?;
        let sock = hv.sock().to_string_lossy().into_owned();
        let mut child = Kid::spawn(
            "ring-back",
            &[
                ("PVIO_SOCK", sock.clone()),
                ("PVIO_BATCH", batch.to_string()),
            ],
        )?;
        child.expect("ready")?;
        let dom = Domain::connect_hosted(&sock, FRONTEND, dom_config()).map_err(hv_err)?;
        let n = RING_PAGES as u32;
        let first = dom
            .alloc_contiguous(RING_PAGES)
            .ok_or_else(|| io::Error::other("no frames for the ring"))?;
        let region = dom
            .frames(first, n)
            .ok_or_else(|| io::Error::other("ring frames"))?;
        let ring = FrontRing::init(region).map_err(hv_err)?;
        let grefs: Vec<GrantRef> = (first..first + n)
            .map(|f| dom.grant_access(BACKEND, f, false))
            .collect::<Result<_, _>>()
            .map_err(hv_err)?;
        let port = dom.events().alloc_unbound(BACKEND).map_err(hv_err)?;
        let waiter = dom.port_waiter(port).map_err(hv_err)?;
        let g: Vec<String> = grefs.iter().map(|g| g.0.to_string()).collect();
        child.tell(&format!("{} {}", port.0, g.join(" ")))?;
        child.expect("bound")?;
        Ok(HostedRing {
            ring,
            waiter,
            port,
            dom,
            child,
            hv,
            sleeps: 0,
        })
    }

    /// `n` request/response round trips, `batch` requests per
    /// publication; returns the elapsed time. Checks every response.
    pub fn run(&mut self, n: u64, batch: u32) -> io::Result<Duration> {
        let ev = self.dom.events();
        let t = Instant::now();
        let (mut sent, mut recv, mut sum, mut idle) = (0u64, 0u64, 0u64, 0u32);
        while recv < n {
            let want = (n - sent).min(u64::from(batch)) as u32;
            let mut progress = false;
            if want > 0 && self.ring.free_requests() >= want {
                let mut b = self.ring.reserve(want).map_err(hv_err)?;
                let base = sent;
                b.fill_with(|i| Req::new(base + u64::from(i)))
                    .map_err(hv_err)?;
                if b.publish_and_check_notify().map_err(hv_err)?.is_needed() {
                    ev.send(self.port).map_err(hv_err)?;
                }
                sent += u64::from(want);
                progress = true;
            }
            let got = self
                .ring
                .drain_responses(u32::MAX, |r| sum += r.id)
                .map_err(hv_err)?;
            recv += u64::from(got);
            if progress || got > 0 {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle < SPIN_POLLS {
                std::hint::spin_loop();
            } else if !self.ring.final_check_for_responses().map_err(hv_err)? {
                self.sleeps += 1;
                if !self.waiter.wait(Duration::ZERO, GUARD).map_err(hv_err)? {
                    return Err(io::Error::other("the backend process stopped answering"));
                }
            }
        }
        let elapsed = t.elapsed();
        if sum != n * n.saturating_sub(1) / 2 {
            return Err(io::Error::other("responses lost or duplicated"));
        }
        // The next run's ids start at 0 again: the backend only echoes.
        Ok(elapsed)
    }

    /// The daemon's socket (for diagnostics).
    pub fn socket(&self) -> PathBuf {
        self.hv.sock()
    }

    /// Whether the backend process is still alive.
    pub fn backend_alive(&mut self) -> bool {
        matches!(self.child.child.try_wait(), Ok(None))
    }
}

impl std::fmt::Debug for HostedRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostedRing")
            .field("port", &self.port)
            .field("sleeps", &self.sleeps)
            .finish_non_exhaustive()
    }
}

/// The backend process of [`HostedRing`].
fn ring_back() -> io::Result<()> {
    let sock = std::env::var("PVIO_SOCK").map_err(hv_err)?;
    let batch: u32 = std::env::var("PVIO_BATCH")
        .map_err(hv_err)?
        .parse()
        .map_err(hv_err)?;
    let d = Domain::connect_hosted(&sock, BACKEND, dom_config()).map_err(hv_err)?;
    say("ready");
    let mut line = String::new();
    io::stdin().read_line(&mut line)?;
    let v: Vec<u32> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(hv_err)?;
    let (rport, grefs) = v.split_first().ok_or_else(|| hv_err("bad line"))?;
    let grefs: Vec<GrantRef> = grefs.iter().map(|&g| GrantRef(g)).collect();
    let pages = d.map_pages(FRONTEND, &grefs).map_err(hv_err)?;
    let mut ring = BackRing::<_, Req, Rsp>::attach(pages).map_err(hv_err)?;
    let ev = d.events();
    let port = ev
        .bind_interdomain(FRONTEND, Port(*rport))
        .map_err(hv_err)?;
    let w = d.port_waiter(port).map_err(hv_err)?;
    let stop = stop_on_eof();
    say("bound");
    let mut idle = 0u32;
    while !stop.load(Ordering::Acquire) {
        let k = ring
            .answer_requests(batch, |r| Rsp::answer(&r))
            .map_err(hv_err)?;
        if k > 0 {
            if ring.publish_and_check_notify().map_err(hv_err)?.is_needed() {
                ev.send(port).map_err(hv_err)?;
            }
            idle = 0;
            continue;
        }
        idle += 1;
        if idle < SPIN_POLLS {
            std::hint::spin_loop();
        } else if !ring.final_check_for_requests().map_err(hv_err)? {
            // Wakes on an event, or every 100 ms to look at `stop`.
            let _ = w.wait(Duration::ZERO, Duration::from_millis(100));
        }
    }
    Ok(())
}

// ------------------------------------------------------------ socketpair

/// The same messages (64-byte requests, 16-byte responses, at most
/// [`SLOTS`] in flight) over a Unix datagram socketpair whose other end is
/// in a child process that answers each request.
pub struct Dgram {
    sock: UnixDatagram,
    _child: Kid,
    _dir: tempfile::TempDir,
}

impl Dgram {
    /// Creates the socketpair and hands one end to a new child process
    /// (`SCM_RIGHTS` over a Unix stream socket the child connects to).
    pub fn start() -> io::Result<Dgram> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("fd.sock");
        let listener = UnixListener::bind(&path)?;
        let child = Kid::spawn(
            "dgram-echo",
            &[("PVIO_FD_SOCK", path.to_string_lossy().into_owned())],
        )?;
        let (conn, _) = listener.accept()?;
        let (mine, theirs) = UnixDatagram::pair()?;
        send_fd(&conn, &theirs)?;
        drop(theirs);
        child.expect("ready")?;
        Ok(Dgram {
            sock: mine,
            _child: child,
            _dir: dir,
        })
    }

    /// `n` request/response round trips, at most `window` requests in
    /// flight; returns the elapsed time. Requests are sent without
    /// blocking (a full socket buffer makes the sender read responses
    /// first, so neither side can block on the other); responses are
    /// read with a blocking `recv`.
    pub fn run(&mut self, n: u64, window: u64) -> io::Result<Duration> {
        use nix::sys::socket::{MsgFlags, send};
        let t = Instant::now();
        let (mut sent, mut recv, mut sum) = (0u64, 0u64, 0u64);
        let mut rsp = [0u8; 16];
        while recv < n {
            while sent < n && sent - recv < window {
                let req = Req::new(sent);
                match send(
                    self.sock.as_raw_fd(),
                    bytemuck::bytes_of(&req),
                    MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(_) => sent += 1,
                    Err(nix::errno::Errno::EAGAIN) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            let got = self.sock.recv(&mut rsp)?;
            if got != rsp.len() {
                return Err(io::Error::other("short response"));
            }
            let r: Rsp = bytemuck::pod_read_unaligned(&rsp);
            sum += r.id;
            recv += 1;
        }
        let elapsed = t.elapsed();
        if sum != n * n.saturating_sub(1) / 2 {
            return Err(io::Error::other("responses lost or duplicated"));
        }
        Ok(elapsed)
    }
}

impl std::fmt::Debug for Dgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dgram").finish_non_exhaustive()
    }
}

/// Sends `fd` over `conn` with `SCM_RIGHTS`.
fn send_fd(conn: &UnixStream, fd: &impl AsFd) -> io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let raw = [fd.as_fd().as_raw_fd()];
    let iov = [io::IoSlice::new(b"f")];
    sendmsg::<()>(
        conn.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

/// The child of [`Dgram`]: receives its end of the socketpair, then
/// answers each 64-byte request with a 16-byte response until the parent
/// goes away.
fn dgram_echo() -> io::Result<()> {
    let path = std::env::var("PVIO_FD_SOCK").map_err(hv_err)?;
    let conn = UnixStream::connect(Path::new(&path))?;
    let mut b = [0u8; 1];
    let (_, mut fds) = pvio_shmem::recv_with_fds(conn.as_fd(), &mut b, 1)?;
    let fd = fds.pop().ok_or_else(|| hv_err("no fd received"))?;
    let sock = UnixDatagram::from(fd);
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let stop = stop_on_eof();
    say("ready");
    let mut req = [0u8; 64];
    while !stop.load(Ordering::Acquire) {
        match sock.recv(&mut req) {
            Ok(64) => {
                let r = Rsp::answer(&bytemuck::pod_read_unaligned(&req));
                sock.send(bytemuck::bytes_of(&r))?;
            }
            Ok(_) => return Err(hv_err("short request")),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The in-flight limit of both pipelines (one ring's worth).
pub const WINDOW: u64 = SLOTS as u64;

// ------------------------------------------------------------ iperf3

/// Two network namespaces joined through pvio in hosted mode, with the
/// `pvio` command: `pvio hv`, one `pvio netback --switch` process serving
/// two frontends, and two `pvio netfront --tap` processes, each bridging
/// its vif to a TAP moved into one namespace (the setup of the `pvio`
/// crate's hosted test); beside it, two namespaces joined by a plain veth
/// pair. [`NetPair::iperf3`] runs an iperf3 TCP test across either.
pub struct NetPair {
    // Processes before the namespaces they serve.
    procs: Vec<PvioProc>,
    ns: Vec<Netns>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for NetPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetPair").finish_non_exhaustive()
    }
}

/// A network namespace, deleted on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A `pvio` process with its log; SIGTERM then kill on drop.
struct PvioProc {
    child: Child,
    log: PathBuf,
}

impl Drop for PvioProc {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        reap(&mut self.child, Duration::from_secs(3));
    }
}

impl PvioProc {
    fn start(bin: &Path, dir: &Path, name: &str, args: &[&str], ready: &str) -> io::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(bin)
            .args(args)
            .env("PVIO_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let mut p = PvioProc { child, log };
        let start = Instant::now();
        loop {
            let text = p.log();
            if text.contains(ready) {
                return Ok(p);
            }
            if let Ok(Some(st)) = p.child.try_wait() {
                return Err(io::Error::other(format!(
                    "pvio {name} exited ({st}): {text}"
                )));
            }
            if start.elapsed() > GUARD {
                return Err(io::Error::other(format!(
                    "pvio {name}: no `{ready}`: {text}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn run(cmd: &str, args: &[&str]) -> io::Result<String> {
    let o = Command::new(cmd).args(args).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if o.status.success() {
        Ok(text)
    } else {
        Err(io::Error::other(format!("{cmd} {args:?}: {}", text.trim())))
    }
}

fn ip(args: &[&str]) -> io::Result<()> {
    run("ip", args).map(|_| ())
}

/// The `pvio` executable: `PVIO_BIN`, else `target/release/pvio` beside
/// this bench (built with `cargo build --release -p pvio` when missing).
pub fn pvio_bin() -> io::Result<PathBuf> {
    if let Ok(p) = std::env::var("PVIO_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<bench> -> target/release/pvio
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .ok_or_else(|| io::Error::other("no target directory"))?;
    let bin = target.join("release").join("pvio");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--release", "-q", "-p", "pvio", "--bin", "pvio"])
        .env("CARGO_TARGET_DIR", target)
        .status()?;
    if !st.success() || !bin.exists() {
        return Err(io::Error::other(
            "cannot build the pvio command (cargo build --release -p pvio)",
        ));
    }
    Ok(bin)
}

impl NetPair {
    /// Sets up both paths; an error names what is missing (iperf3, root,
    /// /dev/net/tun, ip).
    pub fn start() -> io::Result<NetPair> {
        run("iperf3", &["--version"]).map_err(|e| {
            io::Error::other(format!("iperf3 missing (apt-get install iperf3): {e}"))
        })?;
        if !Path::new("/dev/net/tun").exists() {
            return Err(io::Error::other("no /dev/net/tun"));
        }
        let bin = pvio_bin()?;
        let tag = std::process::id() % 100_000;
        let names: Vec<String> = ["pv1", "pv2", "ve1", "ve2"]
            .iter()
            .map(|n| format!("pvb{n}-{tag}"))
            .collect();
        let mut ns = Vec::new();
        for n in &names {
            ip(&["netns", "add", n])?;
            ns.push(Netns(n.clone()));
            ip(&["-n", n, "link", "set", "lo", "up"])?;
        }
        // The veth pair.
        let (va, vb) = (format!("pvbva-{tag}"), format!("pvbvb-{tag}"));
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
        for (dev, n, addr) in [
            (&va, &names[2], "10.97.1.1/24"),
            (&vb, &names[3], "10.97.1.2/24"),
        ] {
            ip(&["link", "set", dev, "netns", n])?;
            ip(&["-n", n, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", n, "link", "set", dev, "up"])?;
        }
        // pvio: daemon, netback switch, two netfront TAP bridges.
        let dir = tempfile::tempdir()?;
        let sock = dir.path().join("hv.sock").to_string_lossy().into_owned();
        let mut procs = vec![PvioProc::start(
            &bin,
            dir.path(),
            "hv",
            &["hv", "--socket", &sock],
            "pvio: hypervisor on",
        )?];
        procs.push(PvioProc::start(
            &bin,
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
            "ready; SIGINT/SIGTERM",
        )?);
        for (fe, n, addr) in [
            ("2", &names[0], "10.97.0.1/24"),
            ("3", &names[1], "10.97.0.2/24"),
        ] {
            let tap = format!("pvbt{fe}-{tag}");
            procs.push(PvioProc::start(
                &bin,
                dir.path(),
                &format!("netfront{fe}"),
                &[
                    "netfront",
                    "--hv",
                    &sock,
                    "--tap",
                    &tap,
                    "--frontend-id",
                    fe,
                    "--backend-id",
                    "1",
                ],
                "bridged to TAP",
            )?);
            ip(&["link", "set", &tap, "netns", n])?;
            ip(&["-n", n, "addr", "add", addr, "dev", &tap])?;
            ip(&["-n", n, "link", "set", &tap, "up"])?;
        }
        Ok(NetPair {
            procs,
            ns,
            _dir: dir,
        })
    }

    /// One iperf3 TCP test of `secs` seconds from the first namespace to
    /// the second, through pvio (`veth == false`) or the veth pair;
    /// returns the receiver's bits per second.
    pub fn iperf3(&self, veth: bool, secs: u32) -> io::Result<f64> {
        let (a, b, to) = if veth {
            (&self.ns[2].0, &self.ns[3].0, "10.97.1.2")
        } else {
            (&self.ns[0].0, &self.ns[1].0, "10.97.0.2")
        };
        let mut server = Command::new("ip")
            .args(["netns", "exec", b, "iperf3", "-s", "-1", "-B", to])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let result = (|| {
            let start = Instant::now();
            loop {
                let secs_s = secs.to_string();
                let r = run(
                    "ip",
                    &["netns", "exec", a, "iperf3", "-c", to, "-t", &secs_s, "-J"],
                );
                // Connection refused (the server not listening yet) comes
                // back as JSON with an "error" member.
                let r = r.and_then(|json| {
                    if json.contains("\"error\"") {
                        Err(io::Error::other(json))
                    } else {
                        Ok(json)
                    }
                });
                match r {
                    Ok(json) => return parse_bps(&json),
                    // The server may not be listening yet.
                    Err(_) if start.elapsed() < Duration::from_secs(5) => {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => {
                        let logs: Vec<String> = self.procs.iter().map(PvioProc::log).collect();
                        return Err(io::Error::other(format!("{e}; pvio logs: {logs:?}")));
                    }
                }
            }
        })();
        let _ = server.kill();
        let _ = server.wait();
        result
    }
}

/// `end.sum_received.bits_per_second` of iperf3's JSON output.
fn parse_bps(json: &str) -> io::Result<f64> {
    let bad = || io::Error::other(format!("unexpected iperf3 output: {json}"));
    let at = json.find("\"sum_received\"").ok_or_else(bad)?;
    let rest = &json[at..];
    let k = rest.find("\"bits_per_second\"").ok_or_else(bad)?;
    let v = rest[k + "\"bits_per_second\"".len()..]
        .trim_start_matches([':', ' ', '\t'])
        .split([',', '\n', '}'])
        .next()
        .ok_or_else(bad)?;
    v.trim().parse().map_err(|_| bad())
}
