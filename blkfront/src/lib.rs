//! blkfront: the Xen block frontend on the in-tree hypervisor
//! (`spec/blkif.md`, `spec/xenbus.md`).
//!
//! [`Blkfront::connect`] runs the frontend half of the vbd handshake: it
//! reads the backend's features, sets up one ring (of up to 16 pages) and
//! event channel per queue, writes the transport keys in one transaction,
//! goes Initialised, waits for the backend to connect, reads and bounds the
//! disk's properties and goes Connected. Every feature can be turned off in
//! [`BlkfrontConfig`].
//!
//! I/O is submitted as [`BlockIo`]s of any size the device accepts (a
//! multiple of its logical sector size, aligned to it): [`Blkfront::submit`]
//! splits each into ring requests (direct with up to 11 segments, or
//! indirect up to the negotiated segment count) and keeps a private shadow
//! of every request on the ring; [`Blkfront::poll`] and [`Blkfront::wait`]
//! return [`BlockDone`]s. Blocking calls ([`Blkfront::read_at`],
//! [`Blkfront::write_at`], [`Blkfront::flush`], [`Blkfront::discard`]) sit
//! on top.
//!
//! Data is copied between the caller's buffers and pages of the frontend
//! domain's memory, which are granted to the backend: once per connection
//! with persistent grants, per request otherwise (read-only for writes).
//!
//! Hostile backends: a response whose id is not in flight or whose
//! operation does not match (BF1), or a bad `rsp_prod` (BF2), breaks the
//! device: every pending I/O fails with [`BlkError::Broken`] and the
//! frontend closes. An untrusted backend ([`BlkfrontConfig::trusted`] or
//! the toolstack's `trusted` key = 0) gets no persistent grants and only
//! zeroed pages (BF4). When the backend goes away and a new one connects,
//! every request still in flight is replayed from its shadow and completes
//! exactly once (BF3).

#![forbid(unsafe_code)]

mod pool;
mod queue;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use pvio_abi::blkif::{BLKIF_MAX_SEGMENTS_PER_REQUEST, MAX_RING_PAGE_ORDER, VDISK_READONLY};
use pvio_abi::xenbus::XenbusState;
use pvio_hv::{Domain, PollWindow};
use pvio_xenbus::XenbusError;
use pvio_xenbus::device::{read_state, read_u32_or, read_u64, switch_state, wait_for_state};
use pvio_xenbus::toolstack::DevicePaths;
use pvio_xenbus::with_transaction;

use pool::Pool;
use queue::{Connection, Part, PartKind, Shadow};

/// Bytes per protocol sector.
pub const SECTOR_SIZE: u64 = 512;

/// What the frontend asks for (each feature can be turned off; the backend
/// may offer less).
#[derive(Debug, Clone, Copy)]
pub struct BlkfrontConfig {
    /// Ring pages per queue, as a power of two (at most 4: 16 pages).
    pub ring_page_order: u32,
    /// Queues (rings with their event channel and backend worker).
    pub queues: u32,
    /// Use persistent grants if the backend offers them.
    pub persistent: bool,
    /// Most segments per indirect request (0: no indirect requests).
    pub max_indirect_segments: u32,
    /// Use the backend's cache flush.
    pub flush: bool,
    /// Use write barriers for flushes when the backend has no cache flush.
    pub barrier: bool,
    /// Use discard.
    pub discard: bool,
    /// Whether the backend is trusted; `None` reads the toolstack's
    /// `trusted` key (absent: trusted). Untrusted: no persistent grants and
    /// every page zeroed before it is granted (BF4).
    pub trusted: Option<bool>,
    /// Data pages per device (the pool of granted pages; at least enough
    /// for one largest request).
    pub max_pages: usize,
    /// How long to wait for the backend during a handshake or a reconnect.
    pub timeout: Duration,
    /// How long a blocking call waits for its I/O.
    pub io_timeout: Duration,
    /// How long a waiting caller polls the rings before sleeping on the
    /// event channel.
    pub spin: Duration,
}

impl Default for BlkfrontConfig {
    fn default() -> Self {
        BlkfrontConfig {
            ring_page_order: 2,
            queues: 1,
            persistent: true,
            max_indirect_segments: 256,
            flush: true,
            barrier: true,
            discard: true,
            trusted: None,
            max_pages: 4096,
            timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(60),
            spin: Duration::from_micros(50),
        }
    }
}

/// The connected device, as negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// Logical block size: every I/O is a multiple of it, aligned to it.
    pub sector_size: u32,
    /// Physical block size.
    pub physical_sector_size: u32,
    /// The backend refuses writes.
    pub readonly: bool,
    /// `BLKIF_OP_FLUSH_DISKCACHE` is used for flushes.
    pub flush: bool,
    /// `BLKIF_OP_WRITE_BARRIER` is used for flushes (no cache flush).
    pub barrier: bool,
    /// Discard is available.
    pub discard: bool,
    /// Discard granularity in bytes.
    pub discard_granularity: u32,
    /// Persistent grants are in use.
    pub persistent: bool,
    /// Segments per indirect request (0: none).
    pub max_indirect_segments: u32,
    /// Ring pages per queue, as a power of two.
    pub ring_page_order: u32,
    /// Queues.
    pub queues: u32,
    /// The backend is trusted.
    pub trusted: bool,
}

/// Why an I/O or the device failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlkError {
    /// The request is malformed (size, alignment, range): nothing was sent.
    Invalid(&'static str),
    /// A write or discard on a read-only device.
    ReadOnly,
    /// The backend does not support the operation.
    Unsupported,
    /// The backend answered with an error.
    Io,
    /// The backend broke the protocol; the device is closed.
    Broken(String),
    /// No backend connected in time.
    Disconnected(String),
    /// A blocking call's I/O did not complete within
    /// [`BlkfrontConfig::io_timeout`] (it may still complete; its result is
    /// dropped).
    Timeout,
    /// The frontend domain has no memory or grant references left.
    NoMemory,
    /// A grant operation failed.
    Grant(String),
    /// The store failed or holds a bad value.
    Store(XenbusError),
}

impl fmt::Display for BlkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlkError::Invalid(why) => write!(f, "invalid block request: {why}"),
            BlkError::ReadOnly => write!(f, "device is read-only"),
            BlkError::Unsupported => write!(f, "operation not supported by the backend"),
            BlkError::Io => write!(f, "the backend reported an I/O error"),
            BlkError::Broken(why) => write!(f, "backend broke the protocol: {why}"),
            BlkError::Disconnected(why) => write!(f, "no backend: {why}"),
            BlkError::Timeout => write!(f, "the I/O did not complete in time"),
            BlkError::NoMemory => write!(f, "out of frontend memory or grant references"),
            BlkError::Grant(e) => write!(f, "grant: {e}"),
            BlkError::Store(e) => write!(f, "store: {e}"),
        }
    }
}

impl std::error::Error for BlkError {}

impl From<XenbusError> for BlkError {
    fn from(e: XenbusError) -> Self {
        BlkError::Store(e)
    }
}

impl From<pvio_xenbus::XsError> for BlkError {
    fn from(e: pvio_xenbus::XsError) -> Self {
        BlkError::Store(XenbusError::Xs(e))
    }
}

/// What an I/O does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockOp {
    /// Read `data.len()` bytes into `data`.
    Read,
    /// Write `data`.
    Write,
    /// Make every write completed before it durable.
    Flush,
    /// Discard `sectors` 512-byte sectors.
    Discard {
        /// Sectors to discard.
        sectors: u64,
    },
}

/// One I/O: `op` at 512-byte `sector`. `tag` comes back in its
/// [`BlockDone`], with `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockIo {
    /// The caller's identifier.
    pub tag: u64,
    /// What to do.
    pub op: BlockOp,
    /// First 512-byte sector.
    pub sector: u64,
    /// The buffer: read into, written from (empty for flush and discard).
    pub data: Vec<u8>,
}

/// A finished I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDone {
    /// The I/O's tag.
    pub tag: u64,
    /// Its outcome.
    pub result: Result<(), BlkError>,
    /// Its buffer (holding the data read, for a successful read).
    pub data: Vec<u8>,
}

/// Counters of a frontend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// I/Os completed.
    pub completed: u64,
    /// Ring requests sent (including replays).
    pub requests: u64,
    /// Ring requests sent again after a reconnect (BF3).
    pub replayed: u64,
    /// Indirect requests sent.
    pub indirect: u64,
    /// Connections made (the first and every reconnect).
    pub connects: u64,
    /// Notifications sent to the backend.
    pub notifies: u64,
}

/// An I/O the caller submitted, until every part of it completed.
#[derive(Debug)]
struct UserOp {
    tag: u64,
    mode: Mode,
    data: Vec<u8>,
    parts_left: usize,
    error: Option<BlkError>,
}

/// Who waits for an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Returned by `poll`/`wait`.
    Async,
    /// A blocking call waits for it.
    Sync,
    /// A blocking call gave up on it: dropped when it completes.
    Abandoned,
}

/// Longest adaptive poll window.
const MAX_SPIN: Duration = Duration::from_millis(1);

/// How often an idle or waiting frontend re-reads the backend's state.
const STATE_CHECK: Duration = Duration::from_millis(10);

/// A connected block frontend (see the crate docs). Dropping it closes the
/// device (after the I/O in flight completes).
pub struct Blkfront {
    dom: Domain,
    dev: DevicePaths,
    cfg: BlkfrontConfig,
    xs: pvio_xenbus::Client,
    conn: Option<Connection>,
    info: DeviceInfo,
    pool: Pool,
    ops: Vec<Option<UserOp>>,
    free_ops: Vec<usize>,
    live_ops: usize,
    /// Parts not on a ring yet (new, or to replay after a reconnect).
    backlog: VecDeque<Part>,
    ready: Vec<BlockDone>,
    sync_done: Option<BlockDone>,
    broken: Option<String>,
    last_state_check: Instant,
    /// When the backend went away (while not connected).
    down_since: Option<Instant>,
    next_queue: usize,
    /// How long a waiting caller polls before sleeping (adaptive, from
    /// `cfg.spin` up to [`MAX_SPIN`]).
    poll: PollWindow,
    stats: Stats,
}

impl fmt::Debug for Blkfront {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blkfront")
            .field("dev", &self.dev.frontend)
            .field("info", &self.info)
            .field("in_flight", &self.live_ops)
            .field("broken", &self.broken)
            .finish()
    }
}

impl Blkfront {
    /// Connects the device `dev` from frontend domain `dom` (the toolstack
    /// has created it) and returns once the backend is Connected.
    pub fn connect(dom: Domain, dev: DevicePaths, cfg: BlkfrontConfig) -> Result<Self, BlkError> {
        let xs = dom.store();
        let cfg = BlkfrontConfig {
            ring_page_order: cfg
                .ring_page_order
                .min(pvio_abi::blkif::MAX_RING_PAGE_ORDER),
            queues: cfg.queues.max(1),
            max_indirect_segments: cfg.max_indirect_segments.min(
                (pvio_abi::blkif::BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST
                    * pvio_abi::blkif::SEGS_PER_INDIRECT_FRAME) as u32,
            ),
            ..cfg
        };
        // One largest request must always fit in the pool.
        let min_pages = (cfg.max_indirect_segments as usize).max(11)
            + pvio_abi::blkif::BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST;
        let pool = Pool::new(dom.clone(), cfg.max_pages.max(min_pages));
        let mut me = Blkfront {
            dom,
            dev,
            cfg,
            xs,
            conn: None,
            info: DeviceInfo {
                sectors: 0,
                sector_size: 512,
                physical_sector_size: 512,
                readonly: true,
                flush: false,
                barrier: false,
                discard: false,
                discard_granularity: 512,
                persistent: false,
                max_indirect_segments: 0,
                ring_page_order: 0,
                queues: 1,
                trusted: false,
            },
            pool,
            ops: Vec::new(),
            free_ops: Vec::new(),
            live_ops: 0,
            backlog: VecDeque::new(),
            ready: Vec::new(),
            sync_done: None,
            broken: None,
            last_state_check: Instant::now(),
            down_since: None,
            next_queue: 0,
            poll: PollWindow::new(cfg.spin, MAX_SPIN),
            stats: Stats::default(),
        };
        me.handshake()?;
        Ok(me)
    }

    /// The device as negotiated (it may change across a reconnect).
    pub fn info(&self) -> DeviceInfo {
        self.info
    }

    /// The frontend domain.
    pub fn domain(&self) -> &Domain {
        &self.dom
    }

    /// The device's store paths.
    pub fn paths(&self) -> &DevicePaths {
        &self.dev
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// I/Os submitted and not yet returned by [`Blkfront::poll`] or
    /// [`Blkfront::wait`].
    pub fn in_flight(&self) -> usize {
        self.live_ops + self.ready.len()
    }

    /// Why the device is broken, if it is (BF1, BF2).
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// Pages whose grants a backend still holds after it should have let go
    /// (they are never reused until it does).
    pub fn quarantined_pages(&self) -> usize {
        self.pool.quarantined()
    }

    /// Persistent grants currently made to the backend.
    pub fn persistent_grants(&self) -> usize {
        self.pool.persistent_grants()
    }

    /// Queues `io`. It is checked at once (an invalid I/O comes back as an
    /// error and is not queued) and starts as soon as the ring and the page
    /// pool have room; its completion comes from [`Blkfront::poll`] or
    /// [`Blkfront::wait`]. Any number of I/Os may be queued.
    pub fn submit(&mut self, io: BlockIo) -> Result<(), (BlkError, BlockIo)> {
        if let Some(why) = &self.broken {
            return Err((BlkError::Broken(why.clone()), io));
        }
        if let Err(e) = self.check(&io) {
            return Err((e, io));
        }
        self.queue_op(io, Mode::Async);
        self.kick();
        Ok(())
    }

    /// Moves finished I/Os to `out` without waiting; returns how many.
    pub fn poll(&mut self, out: &mut Vec<BlockDone>) -> usize {
        self.process();
        let n = self.ready.len();
        out.append(&mut self.ready);
        n
    }

    /// Moves finished I/Os to `out`, waiting up to `timeout` until at least
    /// `min` are available (or none is in flight). Returns how many were
    /// moved.
    pub fn wait(&mut self, min: usize, timeout: Duration, out: &mut Vec<BlockDone>) -> usize {
        let start = Instant::now();
        loop {
            self.process();
            if self.ready.len() >= min || self.live_ops == 0 || start.elapsed() >= timeout {
                let n = self.ready.len();
                out.append(&mut self.ready);
                return n;
            }
            self.sleep(start, timeout);
        }
    }

    /// Reads `buf.len()` bytes at 512-byte `sector` (blocking).
    pub fn read_at(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlkError> {
        let data = self.call(BlockOp::Read, sector, vec![0; buf.len()])?;
        buf.copy_from_slice(&data);
        Ok(())
    }

    /// Writes `data` at 512-byte `sector` (blocking).
    pub fn write_at(&mut self, sector: u64, data: &[u8]) -> Result<(), BlkError> {
        self.call(BlockOp::Write, sector, data.to_vec()).map(drop)
    }

    /// Makes every completed write durable (blocking). Without a cache flush
    /// or barrier from the backend, writes are durable on completion and
    /// this returns at once.
    pub fn flush(&mut self) -> Result<(), BlkError> {
        self.call(BlockOp::Flush, 0, Vec::new()).map(drop)
    }

    /// Discards `sectors` 512-byte sectors at `sector` (blocking).
    pub fn discard(&mut self, sector: u64, sectors: u64) -> Result<(), BlkError> {
        self.call(BlockOp::Discard { sectors }, sector, Vec::new())
            .map(drop)
    }

    /// Closes the device: waits (up to the configured timeout) for the I/O
    /// in flight, disconnects from the backend, and releases every grant and
    /// page.
    pub fn close(mut self) {
        self.shutdown();
    }

    // ------------------------------------------------------------ internals

    fn call(&mut self, op: BlockOp, sector: u64, data: Vec<u8>) -> Result<Vec<u8>, BlkError> {
        if let Some(why) = &self.broken {
            return Err(BlkError::Broken(why.clone()));
        }
        let io = BlockIo {
            tag: 0,
            op,
            sector,
            data,
        };
        self.check(&io)?;
        self.sync_done = None;
        let idx = self.queue_op(io, Mode::Sync);
        self.kick();
        let start = Instant::now();
        loop {
            self.process();
            if let Some(d) = self.sync_done.take() {
                return d.result.map(|()| d.data);
            }
            if start.elapsed() >= self.cfg.io_timeout {
                // Still in flight: its completion is dropped when it comes.
                if let Some(Some(op)) = self.ops.get_mut(idx) {
                    op.mode = Mode::Abandoned;
                }
                return Err(BlkError::Timeout);
            }
            self.sleep(start, self.cfg.io_timeout);
        }
    }

    /// Checks an I/O against the device.
    fn check(&self, io: &BlockIo) -> Result<(), BlkError> {
        let ss = u64::from(self.info.sector_size.max(512));
        let per = ss / SECTOR_SIZE;
        let sectors = match io.op {
            BlockOp::Read | BlockOp::Write => {
                let len = io.data.len() as u64;
                if len == 0 {
                    return Err(BlkError::Invalid("empty read or write"));
                }
                if !len.is_multiple_of(ss) {
                    return Err(BlkError::Invalid(
                        "length is not a multiple of the sector size",
                    ));
                }
                len / SECTOR_SIZE
            }
            BlockOp::Flush => return Ok(()),
            BlockOp::Discard { sectors } => {
                if !self.info.discard {
                    return Err(BlkError::Unsupported);
                }
                if sectors == 0 || !sectors.is_multiple_of(per) {
                    return Err(BlkError::Invalid(
                        "discard length is not a multiple of the sector size",
                    ));
                }
                sectors
            }
        };
        if !io.sector.is_multiple_of(per) {
            return Err(BlkError::Invalid("sector not aligned to the sector size"));
        }
        if matches!(io.op, BlockOp::Write | BlockOp::Discard { .. }) && self.info.readonly {
            return Err(BlkError::ReadOnly);
        }
        match io.sector.checked_add(sectors) {
            Some(end) if end <= self.info.sectors => Ok(()),
            _ => Err(BlkError::Invalid("range beyond the end of the device")),
        }
    }

    /// Records the op and splits it into parts on the backlog.
    fn queue_op(&mut self, io: BlockIo, mode: Mode) -> usize {
        let queue = self.next_queue;
        self.next_queue = self.next_queue.wrapping_add(1);
        let idx = match self.free_ops.pop() {
            Some(i) => i,
            None => {
                self.ops.push(None);
                self.ops.len() - 1
            }
        };
        let mut parts = 0;
        match io.op {
            BlockOp::Read | BlockOp::Write => {
                let max = self.max_part_bytes();
                let kind = if io.op == BlockOp::Read {
                    PartKind::Read
                } else {
                    PartKind::Write
                };
                let mut off = 0;
                while off < io.data.len() {
                    let len = max.min(io.data.len() - off);
                    self.backlog.push_back(Part {
                        op: idx,
                        queue,
                        kind,
                        sector: io.sector + (off as u64) / SECTOR_SIZE,
                        off,
                        len,
                        replay: false,
                    });
                    off += len;
                    parts += 1;
                }
            }
            BlockOp::Flush => {
                let kind = if self.info.flush {
                    Some(PartKind::Flush)
                } else if self.info.barrier {
                    Some(PartKind::Barrier)
                } else {
                    None
                };
                if let Some(kind) = kind {
                    self.backlog.push_back(Part {
                        op: idx,
                        queue,
                        kind,
                        sector: 0,
                        off: 0,
                        len: 0,
                        replay: false,
                    });
                    parts = 1;
                }
            }
            BlockOp::Discard { sectors } => {
                self.backlog.push_back(Part {
                    op: idx,
                    queue,
                    kind: PartKind::Discard(sectors),
                    sector: io.sector,
                    off: 0,
                    len: 0,
                    replay: false,
                });
                parts = 1;
            }
        }
        self.ops[idx] = Some(UserOp {
            tag: io.tag,
            mode,
            data: io.data,
            parts_left: parts,
            error: None,
        });
        self.live_ops += 1;
        if parts == 0 {
            // A flush with nothing to flush: done at once.
            self.finish_op(idx);
        }
        idx
    }

    /// Bytes of data one ring request carries at most.
    fn max_part_bytes(&self) -> usize {
        let segs = if self.info.max_indirect_segments > 11 {
            self.info.max_indirect_segments as usize
        } else {
            pvio_abi::blkif::BLKIF_MAX_SEGMENTS_PER_REQUEST
        };
        segs * pvio_abi::PAGE_SIZE
    }

    /// One part of op `idx` finished with `result`.
    fn part_done(&mut self, idx: usize, result: Result<(), BlkError>) {
        let Some(Some(op)) = self.ops.get_mut(idx) else {
            return;
        };
        if let Err(e) = result
            && op.error.is_none()
        {
            op.error = Some(e);
        }
        op.parts_left = op.parts_left.saturating_sub(1);
        if op.parts_left == 0 {
            self.finish_op(idx);
        }
    }

    fn finish_op(&mut self, idx: usize) {
        let Some(op) = self.ops.get_mut(idx).and_then(Option::take) else {
            return;
        };
        self.free_ops.push(idx);
        self.live_ops -= 1;
        self.stats.completed += 1;
        let done = BlockDone {
            tag: op.tag,
            result: op.error.map_or(Ok(()), Err),
            data: op.data,
        };
        match op.mode {
            Mode::Async => self.ready.push(done),
            Mode::Sync => self.sync_done = Some(done),
            Mode::Abandoned => {}
        }
    }

    /// Fails every op (the device broke or no backend came back).
    fn fail_all(&mut self, e: BlkError) {
        self.backlog.clear();
        if let Some(c) = self.conn.as_mut() {
            let shadows = c.take_all_shadows();
            for s in shadows {
                self.release_shadow(s);
            }
        }
        for idx in 0..self.ops.len() {
            if let Some(Some(op)) = self.ops.get_mut(idx) {
                op.error.get_or_insert_with(|| e.clone());
                self.finish_op(idx);
            }
        }
    }

    fn release_shadow(&mut self, mut s: Shadow) {
        self.pool.release(&s.frames, &mut s.temp);
    }

    /// Answers what the backend answered, refills the rings, watches the
    /// backend's state.
    fn process(&mut self) {
        if self.conn.is_some() {
            self.reap();
            self.kick();
        }
        if self.broken.is_none() && self.last_state_check.elapsed() >= STATE_CHECK {
            self.last_state_check = Instant::now();
            if self.dom.is_destroyed() {
                // Nothing of this domain works any more.
                self.broken = Some("the frontend domain was destroyed".into());
                self.fail_all(BlkError::Disconnected(
                    "the frontend domain was destroyed".into(),
                ));
                self.conn = None;
                return;
            }
            self.check_backend();
        }
    }

    /// Consumes every response on every ring.
    fn reap(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let mut finished: Vec<(Shadow, Result<(), BlkError>)> = Vec::new();
        let r = conn.reap(&mut finished);
        for (s, result) in finished {
            self.complete_part(s, result);
        }
        self.conn = Some(conn);
        if let Err(why) = r {
            self.fail(why);
        }
    }

    fn complete_part(&mut self, mut s: Shadow, result: Result<(), BlkError>) {
        if result.is_ok()
            && s.part.kind == PartKind::Read
            && let Some(Some(op)) = self.ops.get_mut(s.part.op)
        {
            let dst = &mut op.data[s.part.off..s.part.off + s.part.len];
            let mem = self.dom.memory();
            for (i, chunk) in dst.chunks_mut(pvio_abi::PAGE_SIZE).enumerate() {
                let at = s.frames[i] as usize * pvio_abi::PAGE_SIZE;
                let _ = pvio_shmem::SharedMem::read_bytes(&**mem, at, chunk);
            }
        }
        self.pool.release(&s.frames, &mut s.temp);
        self.part_done(s.part.op, result);
    }

    /// Puts backlog parts on the rings while there is room.
    fn kick(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        while let Some(part) = self.backlog.pop_front() {
            let data = match self.ops.get(part.op) {
                Some(Some(op)) => &op.data[part.off..part.off + part.len],
                _ => continue,
            };
            match conn.push(part, data, &mut self.pool, &mut self.stats) {
                Ok(()) => {}
                Err(queue::PushError::Full(part)) => {
                    self.backlog.push_front(part);
                    break;
                }
                Err(queue::PushError::Failed(part, e)) => {
                    self.part_done(part.op, Err(e));
                }
            }
        }
        let r = conn.publish(&mut self.stats);
        self.conn = Some(conn);
        if let Err(why) = r {
            self.fail(why);
        }
    }

    /// The backend broke the protocol: fail everything, close (BF1, BF2).
    fn fail(&mut self, why: String) {
        if self.broken.is_some() {
            return;
        }
        self.broken = Some(why.clone());
        let _ = pvio_xenbus::device::dev_fatal(&self.xs, &self.dev.frontend, &why);
        self.fail_all(BlkError::Broken(why));
        self.teardown();
        let _ = switch_state(&self.xs, &self.dev.frontend, XenbusState::Closing);
    }

    /// Sleeps until an event, a state check is due, or `timeout` after
    /// `start`, spinning on the rings first.
    fn sleep(&mut self, start: Instant, timeout: Duration) {
        let Some(conn) = self.conn.as_mut() else {
            // Not connected (waiting for a backend): check again soon.
            std::thread::sleep(Duration::from_millis(1));
            if self.broken.is_none() {
                self.last_state_check = Instant::now() - STATE_CHECK;
            }
            return;
        };
        // Poll the rings for the spin window: a few microseconds of pure
        // spinning, then yielding between checks so a backend or event
        // thread sharing this CPU can run (a pure spin starves it).
        let t0 = Instant::now();
        loop {
            if conn.has_responses() {
                return;
            }
            if !self.poll.step(t0.elapsed()) {
                break;
            }
        }
        if conn.arm() {
            return;
        }
        let left = timeout.saturating_sub(start.elapsed());
        let parked = Instant::now();
        conn.park(left.min(STATE_CHECK));
        // Answers that came soon after we slept mean polling longer would
        // have saved the wakeups; otherwise poll less.
        self.poll.slept(parked.elapsed(), conn.has_responses());
    }

    /// Reacts to the backend leaving Connected: reconnect and replay (BF3).
    fn check_backend(&mut self) {
        let state = read_state(&self.xs, &self.dev.backend);
        if self.conn.is_some() && state == XenbusState::Connected {
            return;
        }
        if self.conn.is_some() {
            self.disconnect_for_recovery();
        }
        // Not connected: (re)connect if the backend is ready.
        if matches!(
            read_state(&self.xs, &self.dev.backend),
            XenbusState::InitWait | XenbusState::Initialised | XenbusState::Connected
        ) {
            if let Err(e) = self.handshake() {
                self.reconnect_failed(e);
            }
        } else if let Some(since) = self.down_since
            && since.elapsed() >= self.cfg.timeout
            && self.live_ops > 0
        {
            self.reconnect_failed(BlkError::Disconnected(format!(
                "backend state {state:?} for {:?}",
                self.cfg.timeout
            )));
        }
    }

    /// The backend left Connected: take back everything on the rings (after
    /// consuming the responses it did send) to replay it on the next
    /// connection, release the rings and grants, and go back to
    /// Initialising so the next backend waits for fresh keys (BF3).
    fn disconnect_for_recovery(&mut self) {
        self.reap();
        if self.broken.is_some() {
            return;
        }
        if let Some(c) = self.conn.as_mut() {
            let shadows = c.take_all_shadows();
            for mut s in shadows.into_iter().rev() {
                self.pool.release(&s.frames, &mut s.temp);
                s.part.replay = true;
                self.backlog.push_front(s.part);
            }
        }
        self.teardown();
        self.down_since = Some(Instant::now());
        let _ = switch_state(&self.xs, &self.dev.frontend, XenbusState::Initialising);
    }

    /// No backend came back in time: fail what is pending (each op exactly
    /// once), stay ready to connect when one appears.
    fn reconnect_failed(&mut self, e: BlkError) {
        let e = match e {
            e @ BlkError::Disconnected(_) => e,
            other => BlkError::Disconnected(other.to_string()),
        };
        self.fail_all(e);
        self.down_since = Some(Instant::now());
    }

    /// Releases the rings, event channels and persistent grants.
    fn teardown(&mut self) {
        if let Some(c) = self.conn.take() {
            c.teardown(&mut self.pool);
        }
        self.pool.end_persistent();
    }

    /// The frontend half of the handshake (spec/blkif.md §6): from
    /// Initialising to Connected. On failure nothing stays set up.
    fn handshake(&mut self) -> Result<(), BlkError> {
        let xs = self.dom.store();
        let dev = self.dev.clone();
        let fe = &dev.frontend;
        let be = &dev.backend;
        if read_state(&xs, fe) != XenbusState::Initialising {
            switch_state(&xs, fe, XenbusState::Initialising)?;
        }
        let state = wait_for_state(&xs, be, self.cfg.timeout, |s| s == XenbusState::InitWait)
            .map_err(|e| BlkError::Disconnected(format!("waiting for the backend: {e}")))?;
        debug_assert_eq!(state, XenbusState::InitWait);
        let bkey = |k: &str| dev.backend_key(k);
        let u32_or = |k: &str, d: u32| read_u32_or(&xs, &bkey(k), d);
        // C3 (backend side): every number bounded before use.
        let max_order = u32_or("max-ring-page-order", 0)?.min(MAX_RING_PAGE_ORDER);
        let max_queues = u32_or("multi-queue-max-queues", 1)?.clamp(1, 64);
        let be_persistent = u32_or("feature-persistent", 0)? == 1;
        let trusted = match self.cfg.trusted {
            Some(t) => t,
            None => read_u32_or(&xs, &dev.frontend_key("trusted"), 1)? != 0,
        };
        let order = self.cfg.ring_page_order.min(max_order);
        let queues = self.cfg.queues.min(max_queues);
        let persistent = self.cfg.persistent && be_persistent && trusted;
        let handle = (dev.devid & 0xffff) as u16;
        let mut conn = Connection::setup(&self.dom, dev.backend_id, queues, order, handle)?;
        let keys = conn.keys();
        let written = with_transaction(&xs, |tx| -> Result<(), pvio_xenbus::XsError> {
            // Keys of an earlier connection must not linger.
            for k in [
                "ring-ref",
                "ring-page-order",
                "num-ring-pages",
                "multi-queue-num-queues",
                "event-channel",
            ] {
                let _ = tx.rm(&dev.frontend_key(k));
            }
            for i in 0..16 {
                let _ = tx.rm(&dev.frontend_key(&format!("ring-ref{i}")));
            }
            for i in 0..64 {
                let _ = tx.rm(&dev.frontend_key(&format!("queue-{i}")));
            }
            let w = |k: &str, v: String| tx.write(&dev.frontend_key(k), v.as_bytes());
            if order > 0 {
                w("ring-page-order", order.to_string())?;
                w("num-ring-pages", (1u32 << order).to_string())?;
            }
            if queues > 1 {
                w("multi-queue-num-queues", queues.to_string())?;
            }
            for (qi, (grefs, port)) in keys.iter().enumerate() {
                let dir = if queues > 1 {
                    format!("queue-{qi}/")
                } else {
                    String::new()
                };
                if order == 0 {
                    w(&format!("{dir}ring-ref"), grefs[0].0.to_string())?;
                } else {
                    for (i, g) in grefs.iter().enumerate() {
                        w(&format!("{dir}ring-ref{i}"), g.0.to_string())?;
                    }
                }
                w(&format!("{dir}event-channel"), port.0.to_string())?;
            }
            w("protocol", "x86_64-abi".into())?;
            // Nodes that outlive a connection (`state`) keep the permissions
            // they were created with; a backend domain recreated with the
            // same id lost its entry there, so they follow the directory's,
            // which the toolstack sets.
            let perms = tx.get_perms(&dev.frontend)?;
            tx.set_perms(&format!("{}/state", dev.frontend), &perms)?;
            w("feature-persistent", u8::from(persistent).to_string())?;
            Ok(())
        });
        let connected = written.map_err(BlkError::from).and_then(|()| {
            switch_state(&xs, fe, XenbusState::Initialised)?;
            let s = wait_for_state(&xs, be, self.cfg.timeout, |s| {
                matches!(
                    s,
                    XenbusState::Connected | XenbusState::Closing | XenbusState::Closed
                )
            })
            .map_err(|e| BlkError::Disconnected(format!("waiting for the backend: {e}")))?;
            if s != XenbusState::Connected {
                let why = xs.read(&dev.backend_key("error")).unwrap_or_default();
                return Err(BlkError::Disconnected(format!(
                    "backend went {s:?} instead of connecting: {}",
                    String::from_utf8_lossy(&why)
                )));
            }
            self.read_properties(queues, order, persistent, trusted)
        });
        let info = match connected {
            Ok(info) => info,
            Err(e) => {
                conn.teardown(&mut self.pool);
                let _ = switch_state(&xs, fe, XenbusState::Closing);
                return Err(e);
            }
        };
        conn.persistent = info.persistent;
        conn.indirect = info.max_indirect_segments;
        self.pool.zero = !trusted;
        self.info = info;
        switch_state(&xs, fe, XenbusState::Connected)?;
        self.conn = Some(conn);
        self.down_since = None;
        self.stats.connects += 1;
        // Replay (BF3): the backlog holds what the last backend left.
        self.kick();
        Ok(())
    }

    /// Reads and bounds the Connected backend's disk properties.
    fn read_properties(
        &self,
        queues: u32,
        order: u32,
        persistent: bool,
        trusted: bool,
    ) -> Result<DeviceInfo, BlkError> {
        let xs = &self.xs;
        let key = |k: &str| self.dev.backend_key(k);
        let flag = |k: &str| -> Result<bool, BlkError> { Ok(read_u32_or(xs, &key(k), 0)? == 1) };
        let sectors = read_u64(xs, &key("sectors"))?;
        let sector_size = read_u32_or(xs, &key("sector-size"), 512)?;
        if !(512..=65536).contains(&sector_size) || !sector_size.is_power_of_two() {
            return Err(BlkError::Broken(format!(
                "backend sector-size {sector_size} is not a power of two in 512..=65536"
            )));
        }
        let physical = read_u32_or(xs, &key("physical-sector-size"), sector_size)?;
        let physical = if physical.is_power_of_two() && physical >= sector_size {
            physical
        } else {
            sector_size
        };
        let info_bits = read_u32_or(xs, &key("info"), 0)?;
        let be_indirect = read_u32_or(xs, &key("feature-max-indirect-segments"), 0)?;
        let indirect = self.cfg.max_indirect_segments.min(be_indirect);
        let indirect = if indirect > BLKIF_MAX_SEGMENTS_PER_REQUEST as u32 {
            indirect
        } else {
            0
        };
        let discard = self.cfg.discard && flag("feature-discard")?;
        let granularity = read_u32_or(xs, &key("discard-granularity"), sector_size)?;
        Ok(DeviceInfo {
            sectors,
            sector_size,
            physical_sector_size: physical,
            readonly: info_bits & VDISK_READONLY != 0,
            flush: self.cfg.flush && flag("feature-flush-cache")?,
            barrier: self.cfg.barrier && flag("feature-barrier")?,
            discard,
            discard_granularity: granularity.max(512),
            persistent: persistent && flag("feature-persistent")?,
            max_indirect_segments: indirect,
            ring_page_order: order,
            queues,
            trusted,
        })
    }

    fn shutdown(&mut self) {
        if self.broken.is_none() && self.conn.is_some() && !self.dom.is_destroyed() {
            let mut out = Vec::new();
            let start = Instant::now();
            while self.live_ops > 0 && start.elapsed() < self.cfg.timeout {
                self.wait(self.live_ops, self.cfg.timeout, &mut out);
            }
        }
        let healthy = self.broken.is_none() && self.conn.is_some();
        self.fail_all(BlkError::Disconnected("device closed".into()));
        let xs = self.dom.store();
        let _ = switch_state(&xs, &self.dev.frontend, XenbusState::Closing);
        // Give a working backend the time to let go of the rings (a broken
        // one's grants are quarantined if it does not).
        if healthy {
            let _ = wait_for_state(
                &xs,
                &self.dev.backend,
                self.cfg.timeout.min(Duration::from_secs(5)),
                |s| !matches!(s, XenbusState::Connected | XenbusState::Initialised),
            );
        }
        self.teardown();
        let _ = switch_state(&xs, &self.dev.frontend, XenbusState::Closed);
        self.pool.free_all();
        self.broken.get_or_insert_with(|| "closed".into());
    }
}

impl Drop for Blkfront {
    fn drop(&mut self) {
        if self.broken.as_deref() != Some("closed") {
            self.shutdown();
        }
    }
}
