//! The block workloads that `benches/blk.rs` and the `blk_run` example
//! measure: 4 KiB random reads or writes through blkfront → blkback on an
//! image file (or the null disk), and the same I/O done directly on the
//! same file by the host, with `pread`/`pwrite` (queue depth 1) or a raw
//! io_uring loop (any depth).
//!
//! Every function runs a given number of operations and returns the elapsed
//! time, so a caller can interleave the pvio and host runs and compare them
//! side by side.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvio_abi::DomId;
use pvio_blkback::{Blkback, BlkbackConfig};
use pvio_blkdisk::{Disk, FileOptions, NullDisk, RawUring, UringDisk};
use pvio_blkfront::{Blkfront, BlkfrontConfig, BlockDone, BlockIo, BlockOp};
use pvio_hv::{Domain, DomainConfig, Hypervisor};
use pvio_xenbus::toolstack::{DevicePaths, create_device};

/// Bytes per I/O.
pub const BLOCK: usize = 4096;

/// How long a driver waits for completions before giving up (a hang, not a
/// measurement).
const GUARD: Duration = Duration::from_secs(10);

/// A small deterministic generator (xorshift64*), so every run of a
/// workload visits the same offsets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next value.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A random block index below `blocks`.
    #[inline]
    pub fn block(&mut self, blocks: u64) -> u64 {
        self.next_u64() % blocks.max(1)
    }
}

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rw {
    /// 4 KiB random reads.
    Read,
    /// 4 KiB random writes.
    Write,
}

impl Rw {
    /// `randread` or `randwrite`.
    pub fn name(self) -> &'static str {
        match self {
            Rw::Read => "randread",
            Rw::Write => "randwrite",
        }
    }
}

/// An image file in a temporary directory, fully written once (so reads
/// hit allocated blocks), removed on drop.
#[derive(Debug)]
pub struct Image {
    _dir: tempfile::TempDir,
    path: PathBuf,
    blocks: u64,
}

impl Image {
    /// Creates a `bytes`-long image (a multiple of [`BLOCK`]) in a new
    /// temporary directory under `parent`: sparse first, then written in
    /// full and synced.
    pub fn create(parent: &Path, bytes: u64) -> io::Result<Image> {
        let dir = tempfile::Builder::new()
            .prefix("pvio-blk-bench")
            .tempdir_in(parent)?;
        let path = dir.path().join("disk.img");
        let mut f = File::create(&path)?;
        f.set_len(bytes)?;
        let mut chunk = vec![0u8; 1 << 20];
        let mut rng = Rng::new(7);
        for c in chunk.chunks_mut(8) {
            c.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
        Ok(Image {
            _dir: dir,
            path,
            blocks: bytes / BLOCK as u64,
        })
    }

    /// The image's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// 4 KiB blocks in the image.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }
}

/// Opens `image` as a [`UringDisk`] the default way (writable,
/// [`DirectIo::Auto`](pvio_blkdisk::DirectIo::Auto)).
pub fn uring_disk(image: &Image) -> UringDisk {
    UringDisk::open(image.path(), FileOptions::default()).expect("open the image as a UringDisk")
}

/// A disk a backend can open, in this process or in a backend process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskSpec {
    /// A [`NullDisk`] of this many sectors.
    Null(u64),
    /// A [`UringDisk`] on this image (opened as [`uring_disk`] does).
    File(PathBuf),
}

impl DiskSpec {
    /// Opens the disk.
    pub fn open(&self) -> io::Result<Arc<dyn Disk>> {
        Ok(match self {
            DiskSpec::Null(sectors) => Arc::new(NullDisk::new(*sectors)),
            DiskSpec::File(p) => Arc::new(
                UringDisk::open(p, FileOptions::default())
                    .map_err(|e| io::Error::other(e.to_string()))?,
            ),
        })
    }

    fn encode(&self) -> String {
        match self {
            DiskSpec::Null(n) => format!("null:{n}"),
            DiskSpec::File(p) => format!("file:{}", p.display()),
        }
    }

    fn decode(s: &str) -> io::Result<DiskSpec> {
        let bad = || io::Error::other(format!("bad disk spec {s:?}"));
        match s.split_once(':') {
            Some(("null", n)) => Ok(DiskSpec::Null(n.parse().map_err(|_| bad())?)),
            Some(("file", p)) => Ok(DiskSpec::File(p.into())),
            _ => Err(bad()),
        }
    }
}

/// The device id of the benchmarks' vbd.
const DEVID: u32 = 51712;

/// A connected blkfront → blkback device: three domains on one in-tree
/// hypervisor (the toolstack's, the frontend's and the backend's), or, in
/// hosted mode ([`Driver::connect_hosted`]), the backend domain in a
/// process of its own.
pub struct Driver {
    // Field order is drop order: the frontend closes first (the backend
    // answers its Closing), then the backend stops, then the domains go,
    // then the daemon.
    front: Blkfront,
    back: Option<Blkback>,
    _fe: Domain,
    _be: Option<Domain>,
    _backend_process: Option<crate::hosted::Kid>,
    _dom0: Domain,
    _hv: Option<Hypervisor>,
    _daemon: Option<crate::hosted::HvDaemon>,
    blocks: u64,
    /// Buffers handed back by completions, reused by the next submissions.
    bufs: Vec<Vec<u8>>,
    done: Vec<BlockDone>,
    /// A QD1 read or write buffer.
    one: Vec<u8>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("front", &self.front)
            .field("blocks", &self.blocks)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// Serves `disk` with blkback and connects blkfront to it, with up to
    /// `queues` queues (both sides' defaults otherwise).
    pub fn connect(disk: Arc<dyn Disk>, queues: u32) -> Driver {
        Driver::connect_with(
            disk,
            BlkfrontConfig {
                queues,
                ..BlkfrontConfig::default()
            },
            BlkbackConfig {
                max_queues: queues,
                ..BlkbackConfig::default()
            },
        )
    }

    /// Serves `disk` with blkback configured by `back` and connects blkfront
    /// configured by `front` to it.
    pub fn connect_with(disk: Arc<dyn Disk>, front: BlkfrontConfig, back: BlkbackConfig) -> Driver {
        let blocks = disk.info().sectors * 512 / BLOCK as u64;
        let hv = Hypervisor::new();
        let dc = DomainConfig {
            pages: 16384,
            ..DomainConfig::default()
        };
        let dom0 = hv.create_domain(DomId(0), dc).expect("dom0");
        let fe = hv.create_domain(DomId(1), dc).expect("frontend domain");
        let be = hv.create_domain(DomId(2), dc).expect("backend domain");
        let dev = DevicePaths::new(fe.id(), be.id(), "vbd", DEVID);
        create_device(&dom0.store(), &dev, &[], &[]).expect("create the vbd");
        let queues = front.queues.min(back.max_queues).max(1);
        let back = Blkback::serve(be.clone(), dev.clone(), disk, back);
        let front = Blkfront::connect(fe.clone(), dev, front).expect("blkfront connect");
        assert_eq!(front.info().queues, queues, "queues negotiated");
        assert!(
            front.info().sector_size as usize <= BLOCK,
            "4 KiB I/O must be sector-aligned"
        );
        Driver {
            front,
            back: Some(back),
            _fe: fe,
            _be: Some(be),
            _backend_process: None,
            _dom0: dom0,
            _hv: Some(hv),
            _daemon: None,
            blocks,
            bufs: Vec::new(),
            done: Vec::new(),
            one: vec![0x5a; BLOCK],
        }
    }

    /// The same device in hosted mode: the hypervisor daemon in this
    /// process (with dom0, the toolstack, which creates the vbd), blkback
    /// serving `disk` in a backend process of its own (this executable
    /// re-run in the `blkback` role: the bench's `main` must call
    /// [`crate::hosted::child_main`] first), and blkfront in this process
    /// as a hosted domain with its own daemon connection. The frontend
    /// and backend configurations are the defaults, with `queues` queues.
    pub fn connect_hosted(disk: &DiskSpec, queues: u32) -> io::Result<Driver> {
        use crate::hosted::{BACKEND, FRONTEND, HvDaemon, Kid};
        let info = disk.open()?.info();
        let blocks = info.sectors * 512 / BLOCK as u64;
        let hv = Hypervisor::new();
        let dom0 = hv
            .create_domain(DomId(0), DomainConfig::default())
            .map_err(|e| io::Error::other(e.to_string()))?;
        let daemon = HvDaemon::start(Some(hv))?;
        let dev = DevicePaths::new(FRONTEND, BACKEND, "vbd", DEVID);
        create_device(&dom0.store(), &dev, &[], &[])
            .map_err(|e| io::Error::other(e.to_string()))?;
        let sock = daemon.sock().to_string_lossy().into_owned();
        let child = Kid::spawn(
            "blkback",
            &[
                ("PVIO_SOCK", sock.clone()),
                ("PVIO_DISK", disk.encode()),
                ("PVIO_QUEUES", queues.to_string()),
            ],
        )?;
        child.expect("ready")?;
        let dc = DomainConfig {
            pages: 16384,
            ..DomainConfig::default()
        };
        let fe = Domain::connect_hosted(&sock, FRONTEND, dc)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let cfg = BlkfrontConfig {
            queues,
            ..BlkfrontConfig::default()
        };
        let front =
            Blkfront::connect(fe.clone(), dev, cfg).map_err(|e| io::Error::other(e.to_string()))?;
        if front.info().queues != queues.max(1) {
            return Err(io::Error::other("queues not negotiated"));
        }
        Ok(Driver {
            front,
            back: None,
            _fe: fe,
            _be: None,
            _backend_process: Some(child),
            _dom0: dom0,
            _hv: None,
            _daemon: Some(daemon),
            blocks,
            bufs: Vec::new(),
            done: Vec::new(),
            one: vec![0x5a; BLOCK],
        })
    }

    /// The frontend.
    pub fn front(&self) -> &Blkfront {
        &self.front
    }

    /// The backend (`None` in hosted mode: it is in another process).
    pub fn back(&self) -> Option<&Blkback> {
        self.back.as_ref()
    }

    /// `ops` 4 KiB random reads or writes (offsets from `rng`) keeping
    /// `depth` in flight: the blocking `read_at`/`write_at` at depth 1,
    /// `submit` + `wait` otherwise. Returns the elapsed time.
    pub fn run(&mut self, rw: Rw, depth: usize, ops: u64, rng: &mut Rng) -> Duration {
        if depth <= 1 {
            return self.run_sync(rw, ops, rng);
        }
        let op = match rw {
            Rw::Read => BlockOp::Read,
            Rw::Write => BlockOp::Write,
        };
        let depth = depth as u64;
        let (mut sent, mut got) = (0u64, 0u64);
        let t = Instant::now();
        while got < ops {
            while sent < ops && sent - got < depth {
                let data = self.bufs.pop().unwrap_or_else(|| vec![0x5a; BLOCK]);
                let io = BlockIo {
                    tag: sent,
                    op,
                    sector: rng.block(self.blocks) * (BLOCK as u64 / 512),
                    data,
                };
                if let Err((e, _)) = self.front.submit(io) {
                    panic!("blkfront submit: {e}");
                }
                sent += 1;
            }
            let n = self.front.wait(1, GUARD, &mut self.done);
            assert!(n > 0, "no completion within {GUARD:?}");
            for d in self.done.drain(..) {
                if let Err(e) = d.result {
                    panic!("blkfront I/O {}: {e}", d.tag);
                }
                self.bufs.push(d.data);
                got += 1;
            }
        }
        t.elapsed()
    }

    fn run_sync(&mut self, rw: Rw, ops: u64, rng: &mut Rng) -> Duration {
        let t = Instant::now();
        for _ in 0..ops {
            let sector = rng.block(self.blocks) * (BLOCK as u64 / 512);
            let r = match rw {
                Rw::Read => self.front.read_at(sector, &mut self.one),
                Rw::Write => self.front.write_at(sector, &self.one),
            };
            if let Err(e) = r {
                panic!("blkfront {}: {e}", rw.name());
            }
        }
        t.elapsed()
    }
}

/// The host doing the same I/O directly on the image: `pread`/`pwrite` on
/// one aligned buffer, or a raw io_uring loop.
pub struct Host {
    file: File,
    blocks: u64,
    /// 8 KiB, of which the 4 KiB starting at `at` are page-aligned (what
    /// `O_DIRECT` needs), found with safe code only.
    buf: Vec<u8>,
    at: usize,
    uring: Option<(usize, RawUring)>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("file", &self.file)
            .field("blocks", &self.blocks)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// Opens `image` read-write, with `O_DIRECT` if `direct` (pass what
    /// the [`UringDisk`] chose: [`UringDisk::direct`]).
    pub fn open(image: &Image, direct: bool) -> io::Result<Host> {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        let file = o.open(image.path())?;
        let buf = vec![0x5au8; 2 * BLOCK];
        let at = buf.as_ptr().align_offset(BLOCK);
        assert!(at < BLOCK, "no aligned block in the buffer");
        Ok(Host {
            file,
            blocks: image.blocks(),
            buf,
            at,
            uring: None,
        })
    }

    /// `ops` 4 KiB random `pread`s or `pwrite`s, one at a time.
    pub fn sync(&mut self, rw: Rw, ops: u64, rng: &mut Rng) -> Duration {
        let buf = &mut self.buf[self.at..self.at + BLOCK];
        let t = Instant::now();
        for _ in 0..ops {
            let off = rng.block(self.blocks) * BLOCK as u64;
            match rw {
                Rw::Read => self.file.read_exact_at(buf, off),
                Rw::Write => self.file.write_all_at(buf, off),
            }
            .expect("host pread/pwrite");
        }
        t.elapsed()
    }

    /// `ops` 4 KiB random reads or writes through a raw io_uring keeping
    /// `depth` in flight.
    pub fn uring(&mut self, rw: Rw, depth: usize, ops: u64, rng: &mut Rng) -> Duration {
        if self.uring.as_ref().map(|(d, _)| *d) != Some(depth) {
            let ring = RawUring::new(depth as u32, BLOCK).expect("io_uring");
            self.uring = Some((depth, ring));
        }
        let Some((_, ring)) = self.uring.as_mut() else {
            unreachable!("set above")
        };
        let blocks = self.blocks;
        let t = Instant::now();
        ring.run(&self.file, rw == Rw::Write, ops, || {
            rng.block(blocks) * BLOCK as u64
        })
        .expect("host io_uring");
        t.elapsed()
    }

    /// The host's direct method at `depth`: `pread`/`pwrite` at 1, io_uring
    /// above.
    pub fn run(&mut self, rw: Rw, depth: usize, ops: u64, rng: &mut Rng) -> Duration {
        if depth <= 1 {
            self.sync(rw, ops, rng)
        } else {
            self.uring(rw, depth, ops, rng)
        }
    }
}

/// The operation count whose run takes about `target` by `run`, found by
/// doubling from `start` until a run takes at least a tenth of `target`.
pub fn calibrate(target: Duration, start: u64, mut run: impl FnMut(u64) -> Duration) -> u64 {
    let mut n = start.max(1);
    loop {
        let d = run(n);
        if d >= target / 10 || n >= 1 << 24 {
            let per = d.as_secs_f64() / n as f64;
            return ((target.as_secs_f64() / per.max(1e-9)) as u64).max(start.max(1));
        }
        n *= 2;
    }
}

/// What [`compare`] measured: medians over its rounds.
#[derive(Debug, Clone, Copy)]
pub struct Comparison {
    /// Operations per second of `a`.
    pub a: f64,
    /// Operations per second of `b`.
    pub b: f64,
    /// Median of the per-round ratios `a`/`b` of operations per second.
    pub ratio: f64,
    /// Median of the per-round differences of mean latency `a` − `b`, in
    /// µs (the added latency at queue depth 1, where the mean latency is
    /// the inverse of the rate).
    pub added_us: f64,
}

/// Runs `a` and `b` in `rounds` interleaved rounds (alternating which goes
/// first), each run sized to take about `chunk`, each round with the same
/// seed for both; `a` and `b` run the given number of operations with the
/// given generator and return the elapsed time.
pub fn compare(
    rounds: usize,
    chunk: Duration,
    mut a: impl FnMut(u64, &mut Rng) -> Duration,
    mut b: impl FnMut(u64, &mut Rng) -> Duration,
) -> Comparison {
    let na = calibrate(chunk, 32, |n| a(n, &mut Rng::new(99)));
    let nb = calibrate(chunk, 32, |n| b(n, &mut Rng::new(99)));
    let (mut ra, mut rb, mut ratio, mut added) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds.max(1) {
        let seed = round as u64 + 1;
        let mut run_a = || na as f64 / a(na, &mut Rng::new(seed)).as_secs_f64();
        let mut run_b = || nb as f64 / b(nb, &mut Rng::new(seed)).as_secs_f64();
        let (x, y) = if round % 2 == 0 {
            let x = run_a();
            (x, run_b())
        } else {
            let y = run_b();
            (run_a(), y)
        };
        ra.push(x);
        rb.push(y);
        ratio.push(x / y);
        added.push((1.0 / x - 1.0 / y) * 1e6);
    }
    Comparison {
        a: crate::median(&mut ra),
        b: crate::median(&mut rb),
        ratio: crate::median(&mut ratio),
        added_us: crate::median(&mut added),
    }
}

/// The backend process of [`Driver::connect_hosted`]: blkback serving the
/// disk of `PVIO_DISK` as the backend domain, until standard input ends.
pub(crate) fn hosted_blkback_child() -> io::Result<()> {
    use crate::hosted::{BACKEND, FRONTEND, say};
    let var = |k: &str| std::env::var(k).map_err(|e| io::Error::other(format!("{k}: {e}")));
    let disk = DiskSpec::decode(&var("PVIO_DISK")?)?.open()?;
    let queues: u32 = var("PVIO_QUEUES")?.parse().map_err(io::Error::other)?;
    let dc = DomainConfig {
        pages: 16384,
        ..DomainConfig::default()
    };
    let d = Domain::connect_hosted(var("PVIO_SOCK")?, BACKEND, dc)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let dev = DevicePaths::new(FRONTEND, BACKEND, "vbd", DEVID);
    let cfg = BlkbackConfig {
        max_queues: queues,
        ..BlkbackConfig::default()
    };
    let b = Blkback::serve(d, dev, disk, cfg);
    say("ready");
    let mut sink = Vec::new();
    let _ = io::Read::read_to_end(&mut io::stdin(), &mut sink);
    b.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvio_blkdisk::NullDisk;

    #[test]
    fn pvio_and_host_run_every_workload() {
        let img = Image::create(&std::env::temp_dir(), 4 << 20).unwrap();
        let disk = uring_disk(&img);
        let direct = disk.direct();
        let mut drv = Driver::connect(Arc::new(disk), 1);
        let mut host = Host::open(&img, direct).unwrap();
        for rw in [Rw::Read, Rw::Write] {
            for depth in [1, 32] {
                drv.run(rw, depth, 100, &mut Rng::new(1));
                host.run(rw, depth, 100, &mut Rng::new(1));
            }
        }
        assert_eq!(drv.front().stats().completed, 400);
        drop(drv);
        for queues in [1, 2] {
            let mut null = Driver::connect(Arc::new(NullDisk::new(1 << 20)), queues);
            null.run(Rw::Read, 32, 1000, &mut Rng::new(3));
        }
    }

    #[test]
    fn calibrate_scales_to_the_target() {
        let n = calibrate(Duration::from_millis(100), 8, Duration::from_micros);
        assert!((90_000..=110_000).contains(&n), "{n}");
    }
}
