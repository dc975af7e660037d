//! The `pvio` command (see `pvio --help` and the crate's README section).

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pvio::Error;
use pvio::nbd::{Addr, Server};
use pvio_blkback::BlkbackConfig;
use pvio_blkdisk::{FileOptions, UringDisk};
use pvio_blkfront::BlkfrontConfig;

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
    /// Today only --embedded works: an in-process hypervisor, blkback on
    /// --image and blkfront, exported on --nbd until SIGINT/SIGTERM.
    Blkfront(BlkfrontArgs),
    /// A network frontend bridged to a local TAP device (needs hosted mode).
    Netfront(NetfrontArgs),
    /// A block backend serving an image to a hosted hypervisor (needs hosted mode).
    Blkback(BlkbackArgs),
    /// A network backend on a TAP device or a switch (needs hosted mode).
    Netback(NetbackArgs),
    /// The hypervisor daemon (needs hosted mode).
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
}

#[derive(Debug, Args)]
struct NetfrontArgs {
    /// The hosted hypervisor's socket.
    #[arg(long, value_name = "SOCKET")]
    hv: PathBuf,
    /// The TAP device to bridge the vif to.
    #[arg(long, value_name = "NAME")]
    tap: String,
}

#[derive(Debug, Args)]
struct BlkbackArgs {
    /// The hosted hypervisor's socket.
    #[arg(long, value_name = "SOCKET")]
    hv: PathBuf,
    /// The image to serve.
    #[arg(long, value_name = "FILE")]
    image: PathBuf,
    /// Serve it read-only.
    #[arg(long)]
    read_only: bool,
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
    #[command(flatten)]
    port: NetbackPort,
}

#[derive(Debug, Args)]
struct HvArgs {
    /// Where to listen.
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
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

/// The error of every command that needs the hypervisor daemon.
fn hosted_not_available(what: &str) -> Error {
    format!(
        "{what}: hosted mode not available yet (the hypervisor daemon, `pvio hv`, is being \
         written); use the embedded forms meanwhile: `pvio demo`, \
         `pvio blkfront --embedded --image FILE --nbd ADDR`"
    )
    .into()
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
        Cmd::Netfront(_) => Err(hosted_not_available("pvio netfront --hv")),
        Cmd::Blkback(_) => Err(hosted_not_available("pvio blkback")),
        Cmd::Netback(_) => Err(hosted_not_available("pvio netback")),
        Cmd::Hv(_) => Err(hosted_not_available("pvio hv")),
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

fn blkfront(a: BlkfrontArgs) -> Result<ExitCode, Error> {
    if a.hv.is_some() {
        return Err(hosted_not_available("pvio blkfront --hv"));
    }
    if !a.embedded {
        return Err(
            "pvio blkfront needs --embedded (or --hv SOCKET once hosted mode lands)".into(),
        );
    }
    let image = a.image.ok_or("--embedded needs --image FILE")?;
    let stop = pvio::shutdown::on_signals()?;
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
        BlkfrontConfig {
            queues: a.queues,
            ..BlkfrontConfig::default()
        },
    )?;
    let info = bf.info();
    tracing::info!(?info, "vbd connected");
    let server = Server::bind(&a.nbd, &a.export, bf, stop.clone())?;
    let shown = match server.local_tcp_addr() {
        Some(s) => s.to_string(),
        None => a.nbd.to_string(),
    };
    eprintln!(
        "pvio: exporting {} ({} bytes{}) over NBD at {shown} (export `{}`); SIGINT/SIGTERM stops",
        image.display(),
        info.sectors * 512,
        if info.readonly { ", read-only" } else { "" },
        a.export
    );
    let dev = server.device();
    server.run()?;
    debug_assert!(stop.load(Ordering::Acquire));
    // Clean shutdown: flush, close the frontend, stop the backend.
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
    bb.stop();
    eprintln!("pvio: stopped");
    Ok(ExitCode::SUCCESS)
}
