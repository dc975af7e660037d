//! The `pvio` command (see `pvio --help` and the crate's README section).

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pvio::Error;
use pvio::hosted;
use pvio::nbd::{Addr, Server};
use pvio_abi::DomId;
use pvio_blkback::{Blkback, BlkbackConfig};
use pvio_blkdisk::{FileOptions, UringDisk};
use pvio_blkfront::{Blkfront, BlkfrontConfig};
use pvio_netback::{Netback, NetbackConfig, Port, Switch, TapPort};
use pvio_netfront::{Netfront, NetfrontConfig};
use pvio_xenbus::toolstack::DevicePaths;

/// Xen-style split drivers on an in-tree hypervisor.
///
/// Logs go to stderr; set PVIO_LOG (or RUST_LOG), e.g. PVIO_LOG=debug.
#[derive(Debug, Parser)]
#[command(name = "pvio", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Everything in one process: a vbd and a vif pair between a backend
    /// and a frontend domain, a short verified workload, a table of figures.
    ///
    /// The vbd is a sparse temporary image in $TMPDIR (or --image); the
    /// frontend runs random 4 KiB writes and reads at QD32 and sequential
    /// 1 MiB reads, checking every block. Two vifs on netback's in-process
    /// switch exchange 64 B and 1500 B frames, every byte checked. With
    /// --tap the first vif is plugged into a TAP device instead and only
    /// sends frames (the TAP must be up for the kernel to take them);
    /// nothing is received or checked on that path.
    Demo(DemoArgs),
    /// A block frontend exporting its disk over NBD.
    ///
    /// With --hv SOCKET: this process is domain --frontend-id of the
    /// hypervisor daemon; it waits for the device (created by `pvio
    /// blkback`), connects and exports it on --nbd until SIGINT/SIGTERM.
    /// With --embedded: an in-process hypervisor, blkback on --image and
    /// blkfront, exported the same way.
    Blkfront(BlkfrontArgs),
    /// A network frontend bridged to a local TAP device (hosted mode).
    ///
    /// This process is domain --frontend-id of the daemon at --hv; it waits
    /// for the vif (created by `pvio netback`, which also gives it its MAC),
    /// connects, and bridges it to TAP device --tap (created if missing)
    /// until SIGINT/SIGTERM or the backend goes away.
    Netfront(NetfrontArgs),
    /// A block backend serving an image (hosted mode).
    ///
    /// This process is domain --backend-id of the daemon at --hv. Acting as
    /// the toolstack, it first creates the vbd (--frontend-id, --backend-id,
    /// --devid) in the store as dom0 through the daemon's store socket
    /// (--xenstore, default `<hv socket>.xs`), then serves it until
    /// SIGINT/SIGTERM.
    Blkback(BlkbackArgs),
    /// A network backend on a TAP device or a switch (hosted mode).
    ///
    /// This process is domain --backend-id of the daemon at --hv. Acting as
    /// the toolstack, it creates vif --devid for each --frontend-id as dom0
    /// through the daemon's store socket (--xenstore, default
    /// `<hv socket>.xs`), with a distinct MAC per frontend
    /// (02:70:<backend>:<frontend, 2 bytes>:<devid>), and serves them until
    /// SIGINT/SIGTERM: with --switch every vif on a port of one in-process
    /// switch (frontends reach each other), with --tap the one vif plugged
    /// into the TAP device.
    Netback(NetbackArgs),
    /// The hypervisor daemon (hosted mode).
    ///
    /// Domains are processes that connect to --socket (`pvio blkback`,
    /// `pvio blkfront --hv`, ...); a domain is destroyed when its process
    /// exits. The store is also served with the xenstore wire protocol on
    /// --xenstore (default `<socket>.xs`), where every connection is dom0:
    /// the backends' toolstack role, and e.g.
    /// `XENSTORED_PATH=<socket>.xs xenstore-ls /local`. Both sockets are as
    /// powerful as the daemon: keep them private. Runs until SIGINT/SIGTERM.
    Hv(HvArgs),
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Use this image (file or block device) instead of a temporary one;
    /// it is only read unless --allow-writes is given.
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,
    /// Let the demo overwrite blocks of --image (its first GiB).
    #[arg(long, requires = "image")]
    allow_writes: bool,
    /// Plug the vif into this TAP device (created if missing) instead of
    /// the in-process switch: frames are only sent.
    #[arg(long, value_name = "NAME")]
    tap: Option<String>,
    /// Size of the temporary image (K, M, G suffixes).
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    size: u64,
    /// Total time of the workloads, in seconds.
    #[arg(long, default_value_t = 3.0, value_name = "SECS")]
    duration: f64,
    /// Queues of the vbd and of each vif.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    queues: u32,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct BlkfrontArgs {
    /// Run the hypervisor and blkback in this process (on --image).
    #[arg(long, conflicts_with = "hv", requires = "image")]
    embedded: bool,
    /// The hosted hypervisor's socket.
    #[arg(long, value_name = "SOCKET")]
    hv: Option<PathBuf>,
    /// The image blkback serves (with --embedded).
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,
    /// Serve the image read-only.
    #[arg(long)]
    read_only: bool,
    /// Export the disk over NBD at unix:PATH or HOST:PORT.
    #[arg(long, value_name = "ADDR")]
    nbd: Addr,
    /// The NBD export name (the empty default name also works).
    #[arg(long, default_value = "pvio")]
    export: String,
    /// Queues of the vbd.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    queues: u32,
    /// With --hv: this domain's id.
    #[arg(
        long,
        default_value_t = 2,
        value_name = "N",
        conflicts_with = "embedded"
    )]
    frontend_id: u16,
    /// With --hv: the backend domain's id.
    #[arg(
        long,
        default_value_t = 1,
        value_name = "N",
        conflicts_with = "embedded"
    )]
    backend_id: u16,
    /// With --hv: the device id (virtual-device number).
    #[arg(
        long,
        default_value_t = 51712,
        value_name = "N",
        conflicts_with = "embedded"
    )]
    devid: u32,
    /// With --hv: how long to wait for the backend to create the device
    /// and to connect, in seconds.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    wait: f64,
}

#[derive(Debug, Args)]
struct NetfrontArgs {
    /// The hosted hypervisor's socket.
    #[arg(long, value_name = "SOCKET")]
    hv: PathBuf,
    /// The TAP device to bridge the vif to (created if missing).
    #[arg(long, value_name = "NAME")]
    tap: String,
    /// This domain's id.
    #[arg(long, default_value_t = 2, value_name = "N")]
    frontend_id: u16,
    /// The backend domain's id.
    #[arg(long, default_value_t = 3, value_name = "N")]
    backend_id: u16,
    /// The vif's device id.
    #[arg(long, default_value_t = 0, value_name = "N")]
    devid: u32,
    /// How long to wait for the backend to create the vif and to connect,
    /// in seconds.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    wait: f64,
}

#[derive(Debug, Args)]
struct BlkbackArgs {
    /// The hosted hypervisor's socket.
    #[arg(long, value_name = "SOCKET")]
    hv: PathBuf,
    /// The daemon's store socket (default: <SOCKET>.xs).
    #[arg(long, value_name = "PATH")]
    xenstore: Option<PathBuf>,
    /// The image to serve.
    #[arg(long, value_name = "FILE")]
    image: PathBuf,
    /// Serve it read-only.
    #[arg(long)]
    read_only: bool,
    /// The frontend domain's id.
    #[arg(long, default_value_t = 2, value_name = "N")]
    frontend_id: u16,
    /// This domain's id.
    #[arg(long, default_value_t = 1, value_name = "N")]
    backend_id: u16,
    /// The device id (virtual-device number).
    #[arg(long, default_value_t = 51712, value_name = "N")]
    devid: u32,
    /// Most queues offered.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=16))]
    queues: u32,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "port")]
struct NetbackPort {
    /// Plug the vif into this TAP device.
    #[arg(long, value_name = "NAME", group = "port")]
    tap: Option<String>,
    /// Plug the vif into an in-process switch.
    #[arg(long, group = "port")]
    switch: bool,
}

#[derive(Debug, Args)]
struct NetbackArgs {
    /// The hosted hypervisor's socket.
    #[arg(long, value_name = "SOCKET")]
    hv: PathBuf,
    /// The daemon's store socket (default: <SOCKET>.xs).
    #[arg(long, value_name = "PATH")]
    xenstore: Option<PathBuf>,
    #[command(flatten)]
    port: NetbackPort,
    /// A frontend domain to serve a vif to (repeat for several frontends
    /// on --switch; one with --tap).
    #[arg(long = "frontend-id", value_name = "N", default_values_t = [2u16])]
    frontend_ids: Vec<u16>,
    /// This domain's id.
    #[arg(long, default_value_t = 3, value_name = "N")]
    backend_id: u16,
    /// The vifs' device id.
    #[arg(long, default_value_t = 0, value_name = "N")]
    devid: u32,
}

#[derive(Debug, Args)]
struct HvArgs {
    /// Where to listen for domain processes.
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Where to serve the store as dom0 (xenstore wire protocol); default
    /// <PATH>.xs.
    #[arg(long, value_name = "PATH")]
    xenstore: Option<PathBuf>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix in `{s}`")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("bad size `{s}`"))?;
    n.checked_mul(mul)
        .ok_or_else(|| format!("size `{s}` too large"))
}

fn main() -> ExitCode {
    let filter = std::env::var("PVIO_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    match run(cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pvio: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> Result<ExitCode, Error> {
    match cmd {
        Cmd::Demo(a) => demo(a),
        Cmd::Blkfront(a) => blkfront(a),
        Cmd::Netfront(a) => netfront(a),
        Cmd::Blkback(a) => blkback(a),
        Cmd::Netback(a) => netback(a),
        Cmd::Hv(a) => hv(a),
    }
}

fn demo(a: DemoArgs) -> Result<ExitCode, Error> {
    if !(a.duration.is_finite() && a.duration > 0.0 && a.duration <= 86_400.0) {
        return Err("--duration must be a positive number of seconds".into());
    }
    let opts = pvio::demo::DemoOptions {
        image: a.image,
        allow_writes: a.allow_writes,
        tap: a.tap,
        size: a.size,
        duration: Duration::from_secs_f64(a.duration),
        queues: a.queues,
        progress: !a.quiet,
    };
    let report = pvio::demo::run(&opts)?;
    print!("{}", report.table());
    Ok(if report.verify_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn secs(what: &str, v: f64) -> Result<Duration, Error> {
    if v.is_finite() && v > 0.0 && v <= 86_400.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("{what} must be a positive number of seconds").into())
    }
}

fn blkfront(a: BlkfrontArgs) -> Result<ExitCode, Error> {
    let stop = pvio::shutdown::on_signals()?;
    let front = BlkfrontConfig {
        queues: a.queues,
        ..BlkfrontConfig::default()
    };
    if let Some(hv) = &a.hv {
        let wait = secs("--wait", a.wait)?;
        let dom = hosted::connect(hv, DomId(a.frontend_id))?;
        let dev = DevicePaths::new(dom.id(), DomId(a.backend_id), "vbd", a.devid);
        hosted::wait_for_device(&dom, &dev, wait, &stop)?;
        let bf = Blkfront::connect(
            dom,
            dev.clone(),
            BlkfrontConfig {
                timeout: wait,
                ..front
            },
        )?;
        let what = format!("vbd {} of domain {}", a.devid, a.frontend_id);
        export_nbd(bf, &a.nbd, &a.export, stop, &what)?;
        eprintln!("pvio: stopped");
        return Ok(ExitCode::SUCCESS);
    }
    if !a.embedded {
        return Err("pvio blkfront needs --hv SOCKET or --embedded".into());
    }
    let image = a.image.ok_or("--embedded needs --image FILE")?;
    let emb = pvio::embedded::Embedded::new()?;
    let disk = UringDisk::open(
        &image,
        FileOptions {
            readonly: a.read_only,
            ..FileOptions::default()
        },
    )?;
    let (bb, bf) = emb.vbd(
        51712,
        Arc::new(disk),
        BlkbackConfig {
            max_queues: a.queues,
            ..BlkbackConfig::default()
        },
        front,
    )?;
    export_nbd(bf, &a.nbd, &a.export, stop, &image.display().to_string())?;
    bb.stop();
    eprintln!("pvio: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Exports `bf` over NBD until `stop`, then flushes and closes it.
fn export_nbd(
    bf: Blkfront,
    nbd: &Addr,
    export: &str,
    stop: Arc<AtomicBool>,
    what: &str,
) -> Result<(), Error> {
    let info = bf.info();
    tracing::info!(?info, "vbd connected");
    let server = Server::bind(nbd, export, bf, stop.clone())?;
    let shown = match server.local_tcp_addr() {
        Some(s) => s.to_string(),
        None => nbd.to_string(),
    };
    eprintln!(
        "pvio: exporting {what} ({} bytes{}) over NBD at {shown} (export `{export}`); \
         SIGINT/SIGTERM stops",
        info.sectors * 512,
        if info.readonly { ", read-only" } else { "" },
    );
    let dev = server.device();
    server.run()?;
    debug_assert!(stop.load(Ordering::Acquire));
    // Clean shutdown: flush, close the frontend.
    let bf = match Arc::try_unwrap(dev) {
        Ok(m) => Some(m.into_inner().unwrap_or_else(|e| e.into_inner())),
        Err(_) => None,
    };
    if let Some(mut bf) = bf {
        if !bf.info().readonly
            && let Err(e) = bf.flush()
        {
            tracing::warn!("final flush: {e}");
        }
        bf.close();
    }
    Ok(())
}

fn store_path(hv: &std::path::Path, xenstore: Option<PathBuf>) -> PathBuf {
    xenstore.unwrap_or_else(|| hosted::default_store_path(hv))
}

fn hv(a: HvArgs) -> Result<ExitCode, Error> {
    let stop = pvio::shutdown::on_signals()?;
    let xs = store_path(&a.socket, a.xenstore);
    hosted::run_daemon(&a.socket, &xs, &stop)?;
    Ok(ExitCode::SUCCESS)
}

fn blkback(a: BlkbackArgs) -> Result<ExitCode, Error> {
    let stop = pvio::shutdown::on_signals()?;
    let disk = UringDisk::open(
        &a.image,
        FileOptions {
            readonly: a.read_only,
            ..FileOptions::default()
        },
    )
    .map_err(|e| format!("{}: {e}", a.image.display()))?;
    let ts = hosted::toolstack(&store_path(&a.hv, a.xenstore))?;
    let dom = hosted::connect(&a.hv, DomId(a.backend_id))?;
    let dev = DevicePaths::new(DomId(a.frontend_id), dom.id(), "vbd", a.devid);
    hosted::create(&ts, &dev, &[])?;
    let bb = Blkback::serve(
        dom.clone(),
        dev.clone(),
        Arc::new(disk),
        BlkbackConfig {
            max_queues: a.queues,
            ..BlkbackConfig::default()
        },
    );
    eprintln!(
        "pvio: serving {}{} as vbd {} of domain {} (backend domain {}); SIGINT/SIGTERM stops",
        a.image.display(),
        if a.read_only { " read-only" } else { "" },
        a.devid,
        a.frontend_id,
        a.backend_id
    );
    hosted::wait_stop(&dom, &stop);
    bb.stop();
    eprintln!("pvio: stopped");
    Ok(ExitCode::SUCCESS)
}

fn netback(a: NetbackArgs) -> Result<ExitCode, Error> {
    let stop = pvio::shutdown::on_signals()?;
    let mut fes = a.frontend_ids.clone();
    fes.dedup();
    if a.port.tap.is_some() && fes.len() != 1 {
        return Err("--tap serves one frontend (use --switch for several)".into());
    }
    let ts = hosted::toolstack(&store_path(&a.hv, a.xenstore))?;
    let dom = hosted::connect(&a.hv, DomId(a.backend_id))?;
    let switch = Switch::new();
    let tap = match &a.port.tap {
        Some(name) => Some(Arc::new(
            TapPort::open(name).map_err(|e| format!("TAP {name}: {e}"))?,
        )),
        None => None,
    };
    let mut served = Vec::new();
    for &fe in &fes {
        let fe = DomId(fe);
        let dev = DevicePaths::new(fe, dom.id(), "vif", a.devid);
        let mac = pvio::embedded::mac_str(hosted::vif_mac(dom.id(), fe, a.devid));
        hosted::create(&ts, &dev, &[("mac", mac.as_str())])?;
        let port: Arc<dyn Port> = match &tap {
            Some(t) => t.clone(),
            None => Arc::new(switch.port()),
        };
        served.push(Netback::serve(
            dom.clone(),
            dev,
            port,
            NetbackConfig::default(),
        ));
        eprintln!(
            "pvio: serving vif {} of domain {} (mac {mac}) on {}",
            a.devid,
            fe.0,
            match &a.port.tap {
                Some(t) => format!("TAP {t}"),
                None => "the switch".into(),
            }
        );
    }
    eprintln!(
        "pvio: backend domain {} ready; SIGINT/SIGTERM stops",
        a.backend_id
    );
    hosted::wait_stop(&dom, &stop);
    for nb in served {
        nb.stop();
    }
    eprintln!("pvio: stopped");
    Ok(ExitCode::SUCCESS)
}

fn netfront(a: NetfrontArgs) -> Result<ExitCode, Error> {
    let stop = pvio::shutdown::on_signals()?;
    let wait = secs("--wait", a.wait)?;
    // The TAP first: it exists as soon as the process runs (a caller may
    // then move it to a namespace; the open file stays valid).
    let tap = TapPort::open(&a.tap).map_err(|e| format!("TAP {}: {e}", a.tap))?;
    let dom = hosted::connect(&a.hv, DomId(a.frontend_id))?;
    let dev = DevicePaths::new(dom.id(), DomId(a.backend_id), "vif", a.devid);
    hosted::wait_for_device(&dom, &dev, wait, &stop)?;
    let mut nf = Netfront::connect(
        dom,
        dev,
        NetfrontConfig {
            timeout: wait,
            ..NetfrontConfig::default()
        },
    )?;
    eprintln!(
        "pvio: vif {} of domain {} (mac {}) bridged to TAP {}; SIGINT/SIGTERM stops",
        a.devid,
        a.frontend_id,
        pvio::embedded::mac_str(nf.mac()),
        tap.name()
    );
    let r = pvio::bridge::bridge(&mut nf, &tap, &stop);
    match &r {
        Ok(st) => tracing::info!(?st, "bridge stopped"),
        Err(e) => eprintln!("pvio: the vif failed: {e}"),
    }
    nf.close();
    eprintln!("pvio: stopped");
    Ok(if r.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
