//! blkback: the Xen block backend on the in-tree hypervisor
//! (`spec/blkif.md`, `spec/xenbus.md`).
//!
//! [`Blkback::serve`] takes a backend [`Domain`], a device's store paths and
//! a [`Disk`], and runs the device: it publishes its features and waits in
//! InitWait; when the frontend is Initialised (or Connected) it reads and
//! bounds the frontend's keys (ring order, queue count, ring references,
//! event channels: C3), maps each queue's ring (multi-page, R4 checked at
//! attach), binds its event channel, publishes the disk's properties in one
//! transaction and goes Connected, with one worker thread per queue. When
//! the frontend closes (or goes back to Initialising, or vanishes) it stops
//! the workers, which first finish every request in flight (BB11), and
//! releases every mapping and bounce frame; it then follows the frontend
//! back to InitWait for a reconnect (C4, BB12).
//!
//! Requests are copied out of the ring once and validated
//! ([`request`](crate) module: BB1–BB7, BB9, BB10); data goes straight
//! between the disk and the frontend's pages: persistent grants are mapped
//! once and kept (least recently used evicted over the cap); otherwise reads
//! map the page writable for the request and writes grant-copy into a bounce
//! frame (the frontend grants write buffers read-only).

#![forbid(unsafe_code)]

mod request;
mod worker;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pvio_abi::blkif::VDISK_READONLY;
use pvio_abi::xenbus::XenbusState;
use pvio_abi::{DomId, GrantRef, Port};
use pvio_blkdisk::Disk;
use pvio_hv::Domain;
use pvio_ring::BackRing;
use pvio_xenbus::device::{
    read_state, read_u32, read_u32_max, read_u32_or, switch_state, wait_for_state,
};
use pvio_xenbus::toolstack::DevicePaths;
use pvio_xenbus::{Action, BackendMachine, ConnectOn, with_transaction};

use worker::Worker;

/// What the backend offers (each feature can be turned off).
#[derive(Debug, Clone, Copy)]
pub struct BlkbackConfig {
    /// Largest ring order accepted (`max-ring-page-order`, at most 4).
    pub max_ring_page_order: u32,
    /// Most queues (`multi-queue-max-queues`).
    pub max_queues: u32,
    /// Indirect segments per request (`feature-max-indirect-segments`; 0 =
    /// no indirect requests).
    pub max_indirect_segments: u32,
    /// Offer persistent grants.
    pub persistent: bool,
    /// Persistent mappings kept per queue (least recently used evicted).
    pub max_persistent_grants: usize,
    /// Offer `BLKIF_OP_FLUSH_DISKCACHE` (if the disk can flush).
    pub flush: bool,
    /// Offer `BLKIF_OP_WRITE_BARRIER` (if the disk can flush).
    pub barrier: bool,
    /// Offer `BLKIF_OP_DISCARD` (if the disk can discard).
    pub discard: bool,
    /// Disk queue depth per worker.
    pub queue_depth: u32,
}

impl Default for BlkbackConfig {
    fn default() -> Self {
        BlkbackConfig {
            max_ring_page_order: 4,
            max_queues: 4,
            max_indirect_segments: 256,
            persistent: true,
            max_persistent_grants: 1056,
            flush: true,
            barrier: true,
            discard: true,
            queue_depth: 64,
        }
    }
}

/// Counters of a backend device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests answered.
    pub requests: u64,
    /// Requests answered with an error status.
    pub errors: u64,
    /// Successful connections.
    pub connects: u64,
    /// Disconnections.
    pub disconnects: u64,
    /// Persistent mappings currently held (all queues).
    pub persistent_grants: u64,
    /// Persistent mappings evicted.
    pub persistent_evictions: u64,
    /// Connection attempts refused (bad frontend keys: C3).
    pub refused: u64,
}

/// Shared counters.
#[derive(Debug, Default)]
pub(crate) struct StatsCell(Mutex<Stats>);

impl StatsCell {
    pub(crate) fn update(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }
    fn get(&self) -> Stats {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a connection attempt was refused.
#[derive(Debug)]
pub struct ConnectError(String);

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

fn refuse(what: impl fmt::Display) -> ConnectError {
    ConnectError(what.to_string())
}

/// A running backend device (see the crate docs). Dropping it stops it.
pub struct Blkback {
    stop: Arc<AtomicBool>,
    stats: Arc<StatsCell>,
    control: Option<JoinHandle<()>>,
}

impl fmt::Debug for Blkback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blkback")
            .field("stats", &self.stats.get())
            .finish()
    }
}

struct Connection {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Option<String>>>,
}

impl Connection {
    /// Stops the workers; each finishes its in-flight requests first (BB11)
    /// and drops its mappings when it returns.
    fn close(self) {
        self.stop.store(true, Ordering::Release);
        for w in self.workers {
            let _ = w.join();
        }
    }
}

impl Blkback {
    /// Serves the device `dev` from backend domain `dom` with `disk`.
    pub fn serve(dom: Domain, dev: DevicePaths, disk: Arc<dyn Disk>, cfg: BlkbackConfig) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(StatsCell::default());
        let control = {
            let (stop, stats) = (stop.clone(), stats.clone());
            std::thread::Builder::new()
                .name(format!("blkback-{}-{}", dev.frontend_id.0, dev.devid))
                .spawn(move || control(dom, dev, disk, cfg, stop, stats))
                .ok()
        };
        Blkback {
            stop,
            stats,
            control,
        }
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats.get()
    }

    /// Asks the backend to stop without waiting: from now on it takes no
    /// new requests off its rings and finishes those at the disk;
    /// [`Blkback::stop`] (or dropping it) then waits for the disconnect.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Stops serving: disconnects (finishing in-flight I/O) and returns.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(c) = self.control.take() {
            let _ = c.join();
        }
    }
}

impl Drop for Blkback {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The control thread: features, the state machine, connect/disconnect.
fn control(
    dom: Domain,
    dev: DevicePaths,
    disk: Arc<dyn Disk>,
    cfg: BlkbackConfig,
    stop: Arc<AtomicBool>,
    stats: Arc<StatsCell>,
) {
    let xs = dom.store();
    let info = disk.info();
    let order = cfg.max_ring_page_order.min(4);
    let features = [
        ("max-ring-page-order", order.to_string()),
        ("max-ring-pages", (1u32 << order).to_string()),
        ("multi-queue-max-queues", cfg.max_queues.max(1).to_string()),
        (
            "feature-max-indirect-segments",
            cfg.max_indirect_segments.to_string(),
        ),
        ("feature-persistent", u8::from(cfg.persistent).to_string()),
    ];
    let r = with_transaction(&xs, |tx| -> Result<(), pvio_xenbus::XsError> {
        for (k, v) in &features {
            if *k == "feature-max-indirect-segments" && cfg.max_indirect_segments == 0 {
                continue; // absent = no indirect support (spec/blkif.md §6.2)
            }
            tx.write(&dev.backend_key(k), v.as_bytes())?;
        }
        Ok(())
    });
    if r.is_err() {
        return;
    }
    let _ = switch_state(&xs, &dev.backend, XenbusState::InitWait);
    let mut machine = BackendMachine::new(ConnectOn::Initialised);
    let mut conn: Option<Connection> = None;
    while !stop.load(Ordering::Acquire) {
        // Wait (bounded, to notice `stop`) for a state change.
        // (Any state change ends the wait; a timeout just re-checks.)
        let last = read_state(&xs, &dev.frontend);
        let _ = wait_for_state(&xs, &dev.frontend, Duration::from_millis(100), |s| {
            s != last
        });
        let fe_state = read_state(&xs, &dev.frontend);
        let online = read_u32_or(&xs, &dev.backend_key("online"), 1).unwrap_or(1) != 0;
        let step = machine.on_frontend(fe_state, online);
        if std::env::var_os("PVIO_BLKBACK_TRACE").is_some() {
            eprintln!("blkback: frontend {fe_state:?} -> {step:?}");
        }
        match step.action {
            Action::Nothing => {}
            Action::Disconnect => {
                if let Some(c) = conn.take() {
                    c.close();
                    stats.update(|s| s.disconnects += 1);
                }
            }
            Action::Connect => match connect(&dom, &xs, &dev, &disk, &cfg, &stats, &stop) {
                Ok(c) => {
                    conn = Some(c);
                    stats.update(|s| s.connects += 1);
                }
                Err(e) => {
                    stats.update(|s| s.refused += 1);
                    let _ = xs.write(&dev.backend_key("error"), e.to_string().as_bytes());
                    let failed = machine.connect_failed();
                    if let Some(st) = failed.publish {
                        let _ = switch_state(&xs, &dev.backend, st);
                    }
                    continue;
                }
            },
        }
        if let Some(st) = step.publish {
            let _ = switch_state(&xs, &dev.backend, st);
        }
        if step.remove {
            break;
        }
        let _ = info;
    }
    if let Some(c) = conn.take() {
        c.close();
        stats.update(|s| s.disconnects += 1);
    }
    let _ = switch_state(&xs, &dev.backend, XenbusState::Closed);
}

/// Reads and bounds the frontend's transport keys, maps the rings, binds
/// the event channels, publishes the disk's properties, starts the workers.
fn connect(
    dom: &Domain,
    xs: &pvio_xenbus::Client,
    dev: &DevicePaths,
    disk: &Arc<dyn Disk>,
    cfg: &BlkbackConfig,
    stats: &Arc<StatsCell>,
    backend_stop: &Arc<AtomicBool>,
) -> Result<Connection, ConnectError> {
    let fe = dev.frontend_id;
    let key = |k: &str| dev.frontend_key(k);
    // C3: bounded numbers, present keys.
    let queues = match xs.read(&key("multi-queue-num-queues")) {
        Ok(_) => read_u32_max(xs, &key("multi-queue-num-queues"), cfg.max_queues.max(1))
            .map_err(refuse)?,
        Err(_) => 1,
    };
    if queues == 0 {
        return Err(refuse("multi-queue-num-queues is 0"));
    }
    let order = match xs.read(&key("ring-page-order")) {
        Ok(_) => read_u32_max(xs, &key("ring-page-order"), cfg.max_ring_page_order.min(4))
            .map_err(refuse)?,
        Err(_) => 0,
    };
    if let Ok(p) = xs.read(&key("protocol"))
        && p != b"x86_64-abi"
    {
        return Err(refuse(format!(
            "unsupported ring protocol {:?}",
            String::from_utf8_lossy(&p)
        )));
    }
    let persistent =
        cfg.persistent && read_u32_or(xs, &key("feature-persistent"), 0).unwrap_or(0) == 1;
    let info = disk.info();
    let lim = request::Limits {
        sectors: info.sectors,
        readonly: info.readonly,
        flush: cfg.flush && info.flush,
        barrier: cfg.barrier && info.flush,
        discard: cfg.discard && info.discard,
        max_indirect_segments: cfg.max_indirect_segments,
    };
    // Everything for every queue, before any worker starts: a bad queue
    // refuses the whole connection and what was mapped is dropped.
    let mut rings = Vec::new();
    for q in 0..queues {
        let dir = if queues == 1 {
            String::new()
        } else {
            format!("queue-{q}/")
        };
        let grefs: Vec<GrantRef> = if order == 0 {
            vec![GrantRef(
                read_u32(xs, &key(&format!("{dir}ring-ref"))).map_err(refuse)?,
            )]
        } else {
            (0..1u32 << order)
                .map(|i| {
                    read_u32(xs, &key(&format!("{dir}ring-ref{i}")))
                        .map(GrantRef)
                        .map_err(refuse)
                })
                .collect::<Result<_, _>>()?
        };
        let evtchn = Port(read_u32(xs, &key(&format!("{dir}event-channel"))).map_err(refuse)?);
        let pages = dom
            .map_pages(fe, &grefs)
            .map_err(|e| refuse(format!("ring map: {e}")))?;
        let ring = BackRing::attach(pages).map_err(|e| refuse(format!("ring attach: {e}")))?;
        let port = dom
            .events()
            .bind_interdomain(fe, evtchn)
            .map_err(|e| refuse(format!("event channel: {e}")))?;
        let waiter = dom
            .port_waiter(port)
            .map_err(|e| refuse(format!("event channel: {e}")))?;
        let dq = disk
            .queue(cfg.queue_depth)
            .map_err(|e| refuse(format!("disk queue: {e}")))?;
        rings.push((ring, port, waiter, dq));
    }
    let props = [
        ("sectors", info.sectors.to_string()),
        (
            "info",
            if info.readonly {
                VDISK_READONLY.to_string()
            } else {
                "0".into()
            },
        ),
        (
            "mode",
            if info.readonly {
                "r".into()
            } else {
                "w".into()
            },
        ),
        ("sector-size", info.sector_size.to_string()),
        (
            "physical-sector-size",
            info.physical_sector_size.to_string(),
        ),
        ("feature-flush-cache", u8::from(lim.flush).to_string()),
        ("feature-barrier", u8::from(lim.barrier).to_string()),
        ("feature-discard", u8::from(lim.discard).to_string()),
        (
            "discard-granularity",
            info.discard_granularity.max(512).to_string(),
        ),
        ("discard-alignment", "0".into()),
        ("discard-secure", "0".into()),
        ("feature-persistent", u8::from(persistent).to_string()),
    ];
    with_transaction(xs, |tx| -> Result<(), pvio_xenbus::XsError> {
        for (k, v) in &props {
            tx.write(&dev.backend_key(k), v.as_bytes())?;
        }
        Ok(())
    })
    .map_err(refuse)?;
    let stop = Arc::new(AtomicBool::new(false));
    let workers = rings
        .into_iter()
        .enumerate()
        .map(|(q, (ring, port, waiter, disk))| {
            let w = Worker {
                dom: dom.clone(),
                fe,
                ring,
                port,
                waiter,
                disk,
                lim,
                persistent,
                max_persistent: cfg.max_persistent_grants,
                stop: stop.clone(),
                backend_stop: backend_stop.clone(),
                stats: stats.clone(),
            };
            std::thread::Builder::new()
                .name(format!("blkback-{}-q{q}", fe.0))
                .spawn(move || w.run())
                .map_err(|e| refuse(format!("worker thread: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Connection { stop, workers })
}

/// The backend domain's view of a frontend id (for logs and tests).
pub fn frontend_of(dev: &DevicePaths) -> DomId {
    dev.frontend_id
}

/// Entry points for the fuzz targets in `fuzz/` (not a stable API): thin
/// calls into the real, crate-private request parser.
#[doc(hidden)]
pub mod fuzz_api {
    use pvio_abi::blkif::{Request, RequestSegment};

    use crate::request::{self, Limits, Plan};

    /// What the disk and the negotiation allow.
    #[derive(Debug, Clone, Copy)]
    pub struct FuzzLimits {
        /// Disk size in sectors.
        pub sectors: u64,
        /// Read-only disk.
        pub readonly: bool,
        /// `feature-flush-cache` advertised.
        pub flush: bool,
        /// `feature-barrier` advertised.
        pub barrier: bool,
        /// `feature-discard` advertised.
        pub discard: bool,
        /// `feature-max-indirect-segments` (0: none).
        pub max_indirect_segments: u32,
    }

    /// A validated request, flattened.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum FuzzPlan {
        /// Read or write: sector, `(gref, first, last)` per segment.
        Rw {
            /// A write.
            write: bool,
            /// First sector.
            sector: u64,
            /// Segments.
            segs: Vec<(u32, u8, u8)>,
        },
        /// Cache flush.
        Flush,
        /// Discard.
        Discard {
            /// First sector.
            sector: u64,
            /// Sector count.
            sectors: u64,
        },
    }

    fn lim(l: &FuzzLimits) -> Limits {
        Limits {
            sectors: l.sectors,
            readonly: l.readonly,
            flush: l.flush,
            barrier: l.barrier,
            discard: l.discard,
            max_indirect_segments: l.max_indirect_segments,
        }
    }

    fn flat(p: Plan) -> FuzzPlan {
        match p {
            Plan::Rw {
                write,
                sector,
                segs,
                ..
            } => FuzzPlan::Rw {
                write,
                sector,
                segs: segs.iter().map(|s| (s.gref.0, s.first, s.last)).collect(),
            },
            Plan::Flush => FuzzPlan::Flush,
            Plan::Discard { sector, sectors } => FuzzPlan::Discard { sector, sectors },
        }
    }

    /// The operation echoed in the response.
    pub fn echo_op(req: &Request) -> u8 {
        request::echo_op(req)
    }

    /// Validates a direct request (`request::plan`).
    pub fn plan(req: &Request, l: &FuzzLimits) -> Result<FuzzPlan, i16> {
        request::plan(req, &lim(l)).map(flat)
    }

    /// Checks an indirect request's header (`request::indirect_pages`):
    /// write, segment count, descriptor page grefs.
    pub fn indirect_pages(req: &Request, l: &FuzzLimits) -> Result<(bool, usize, Vec<u32>), i16> {
        request::indirect_pages(req, &lim(l))
            .map(|(w, n, pages)| (w, n, pages.iter().map(|g| g.0).collect()))
    }

    /// Validates an indirect request's segments, copied once out of its
    /// descriptor pages (`request::plan_indirect`).
    pub fn plan_indirect(
        req: &Request,
        l: &FuzzLimits,
        write: bool,
        segs: &[RequestSegment],
    ) -> Result<FuzzPlan, i16> {
        request::plan_indirect(req, &lim(l), write, segs).map(flat)
    }

    /// Segments per indirect descriptor page.
    pub const SEGS_PER_INDIRECT_PAGE: usize = request::SEGS_PER_INDIRECT_PAGE;
}
