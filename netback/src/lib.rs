//! netback: the Xen network backend on the in-tree hypervisor
//! (`spec/netif.md`, `spec/xenbus.md`).
//!
//! [`Netback::serve`] takes a backend [`Domain`], a vif's store paths, the
//! [`Port`] the vif is plugged into (a [`TapPort`], a [`SwitchPort`] of an
//! in-process [`Switch`], or anything implementing the trait) and a
//! [`NetbackConfig`], and runs the device: it publishes its features
//! (`feature-sg`, `feature-gso-tcpv4/6`, `feature-ipv6-csum-offload`,
//! `feature-rx-copy`, `feature-multicast-control`,
//! `feature-split-event-channels`, `multi-queue-max-queues`; each can be
//! turned off) and waits in InitWait. When the frontend is Connected it
//! reads and bounds its keys (C3: `request-rx-copy` must be 1, the queue
//! count within the maximum, every ring reference and event channel
//! present), maps each queue's TX and RX ring, binds the event channel(s),
//! starts the queues' threads (see the `queue` module) and goes Connected;
//! the port then delivers packets for the guest to the vif. When the
//! frontend closes, goes back to Initialising or vanishes, everything is
//! stopped and unmapped, and the device waits for a reconnect (C4).
//!
//! Frontend faults follow SECURITY.md: per-packet errors are answered with
//! error responses (NB1, NB5, NB6, NB11, NB16); a fatal fault (NB2–NB4,
//! NB9, NB10, a broken ring) disables this vif only: carrier off, its
//! threads stop, [`Stats::broken`] is set and the reason is written to the
//! backend's `error` key; the frontend must reconnect.
//!
//! Slot limits (SECURITY.md): a TX packet of up to 18 data slots is
//! accepted, 19 is dropped with errors, 20 or more is fatal.
//!
//! Not done: the control ring (hash configuration), XDP headroom, the
//! hotplug-status wait, dynamic multicast control.

#![deny(unsafe_code)]

mod credit;
mod handover;
mod packet;
mod queue;
mod switch;
mod sys;
mod tap;
mod tx;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pvio_abi::xenbus::XenbusState;
use pvio_abi::{GrantRef, Port as EvtPort};
use pvio_hv::Domain;
use pvio_xenbus::device::{read_bool_or, read_state, read_u32, read_u32_or, switch_state};
use pvio_xenbus::toolstack::DevicePaths;
use pvio_xenbus::{Action, BackendMachine, ConnectOn, with_transaction};

pub use credit::parse_rate;
pub use packet::{Gso, GsoKind, Offloads, Packet, PacketSink, Port};
pub use switch::{Switch, SwitchPort, SwitchStats};
pub use tap::{TapConfig, TapPort, open_raw_tap};
pub use tx::{FATAL_TX_SLOTS, MAX_TX_SLOTS};

use queue::{FrontFeatures, RxFill, RxQueue, RxRing, RxWorker, Shared, TxRing, TxWorker};

/// Largest frame netback passes (a 64 KiB GSO packet plus headers).
pub const MAX_FRAME: usize = 65_535 + 14 + 4;

/// What the backend offers (each feature can be turned off).
#[derive(Debug, Clone, Copy)]
pub struct NetbackConfig {
    /// Offer multi-slot TX packets (`feature-sg`).
    pub sg: bool,
    /// Offer TCPv4 GSO (`feature-gso-tcpv4`).
    pub gso_tcpv4: bool,
    /// Offer TCPv6 GSO (`feature-gso-tcpv6`).
    pub gso_tcpv6: bool,
    /// Offer partial IPv6 checksums (`feature-ipv6-csum-offload`).
    pub ipv6_csum_offload: bool,
    /// Offer multicast filtering (`feature-multicast-control`).
    pub multicast_control: bool,
    /// Most multicast addresses per vif (NB11: 64).
    pub max_mcast: usize,
    /// Offer split event channels (`feature-split-event-channels`).
    pub split_event_channels: bool,
    /// Most queues (`multi-queue-max-queues`; 1 = single queue).
    pub max_queues: u32,
    /// Honour the backend's `rate` key (credit scheduler, NB12).
    pub rate_limit: bool,
    /// Packets queued per RX queue before dropping (NB13).
    pub rx_queue_len: usize,
    /// Bytes of frame queued per RX queue before dropping (NB13; Linux
    /// bounds its RX queue by bytes too): small frames queue up to
    /// `rx_queue_len`, large ones up to this (4 MiB: 64 GSO frames of
    /// 64 KiB; a frontend that does not read holds no more than that).
    pub rx_queue_bytes: usize,
    /// How long the head packet may wait for RX buffers before the
    /// carrier goes off (NB13, NB14; Linux: 60 s).
    pub rx_stall_timeout: Duration,
}

impl Default for NetbackConfig {
    fn default() -> Self {
        NetbackConfig {
            sg: true,
            gso_tcpv4: true,
            gso_tcpv6: true,
            ipv6_csum_offload: true,
            multicast_control: true,
            max_mcast: 64,
            split_event_channels: true,
            max_queues: 4,
            rate_limit: true,
            rx_queue_len: 8192,
            rx_queue_bytes: 4 << 20,
            rx_stall_timeout: Duration::from_secs(60),
        }
    }
}

/// Counters of a vif.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets from the guest handed to the port.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// TX data slots answered with an error.
    pub tx_errors: u64,
    /// TX packets dropped (errors).
    pub tx_dropped: u64,
    /// TX packets the port refused.
    pub tx_port_dropped: u64,
    /// Times the credit scheduler held TX back.
    pub credit_waits: u64,
    /// Packets written to the guest.
    pub rx_packets: u64,
    /// Of these, packets the delivering thread wrote itself (the backlog
    /// was empty and the ring free), without handing them to the RX thread.
    pub rx_direct: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Packets for the guest dropped (queue full, carrier off, unfit).
    pub rx_dropped: u64,
    /// Multicast packets filtered out.
    pub rx_filtered: u64,
    /// RX grant copies that failed.
    pub rx_copy_errors: u64,
    /// RX stalls detected (carrier turned off).
    pub rx_stalls: u64,
    /// Fatal frontend faults (vif disabled).
    pub fatal: u64,
    /// The current connection was disabled by a fatal fault.
    pub broken: bool,
    /// Link state.
    pub carrier: bool,
    /// Successful connections.
    pub connects: u64,
    /// Disconnections.
    pub disconnects: u64,
    /// Connection attempts refused (C3).
    pub refused: u64,
    /// Malformed configuration values ignored (e.g. `rate`).
    pub warnings: u64,
    /// Queues of the current connection.
    pub queues: u32,
    /// The current connection uses split event channels.
    pub split: bool,
}

/// Shared counters (atomics: updated from every queue thread).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    tx_errors: AtomicU64,
    tx_dropped: AtomicU64,
    tx_port_dropped: AtomicU64,
    credit_waits: AtomicU64,
    rx_packets: AtomicU64,
    rx_direct: AtomicU64,
    rx_bytes: AtomicU64,
    rx_dropped: AtomicU64,
    rx_filtered: AtomicU64,
    rx_copy_errors: AtomicU64,
    rx_stalls: AtomicU64,
    fatal: AtomicU64,
    connects: AtomicU64,
    disconnects: AtomicU64,
    refused: AtomicU64,
    warnings: AtomicU64,
    queues: AtomicU64,
    broken: AtomicBool,
    carrier: AtomicBool,
    split: AtomicBool,
}

impl Counters {
    pub(crate) fn add(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self) -> Stats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            tx_packets: g(&self.tx_packets),
            tx_bytes: g(&self.tx_bytes),
            tx_errors: g(&self.tx_errors),
            tx_dropped: g(&self.tx_dropped),
            tx_port_dropped: g(&self.tx_port_dropped),
            credit_waits: g(&self.credit_waits),
            rx_packets: g(&self.rx_packets),
            rx_direct: g(&self.rx_direct),
            rx_bytes: g(&self.rx_bytes),
            rx_dropped: g(&self.rx_dropped),
            rx_filtered: g(&self.rx_filtered),
            rx_copy_errors: g(&self.rx_copy_errors),
            rx_stalls: g(&self.rx_stalls),
            fatal: g(&self.fatal),
            broken: self.broken.load(Ordering::Acquire),
            carrier: self.carrier.load(Ordering::Acquire),
            connects: g(&self.connects),
            disconnects: g(&self.disconnects),
            refused: g(&self.refused),
            warnings: g(&self.warnings),
            queues: g(&self.queues) as u32,
            split: self.split.load(Ordering::Acquire),
        }
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

/// A running vif backend (see the crate docs). Dropping it stops it.
pub struct Netback {
    stop: Arc<AtomicBool>,
    stats: Arc<Counters>,
    control: Option<JoinHandle<()>>,
}

impl fmt::Debug for Netback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netback")
            .field("stats", &self.stats.get())
            .finish()
    }
}

struct Connection {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    port: Arc<dyn Port>,
    ports: BoundPorts,
}

/// Event channels bound for a connection; closed when dropped.
struct BoundPorts {
    dom: Domain,
    ports: Vec<EvtPort>,
}

impl Drop for BoundPorts {
    fn drop(&mut self) {
        for p in self.ports.drain(..) {
            let _ = self.dom.events().close(p);
        }
    }
}

impl Connection {
    fn close(self) {
        self.port.attach(None);
        self.shared.stop.store(true, Ordering::Release);
        self.shared.carrier.store(false, Ordering::Release);
        for q in &self.shared.queues {
            q.kick.kick_event();
        }
        for t in self.threads {
            let _ = t.join();
        }
        self.shared.stats.carrier.store(false, Ordering::Release);
        // The workers dropped the rings (unmapped); now the event channels.
        drop(self.ports);
    }
}

impl Netback {
    /// Serves vif `dev` from backend domain `dom`, plugged into `port`.
    pub fn serve(dom: Domain, dev: DevicePaths, port: Arc<dyn Port>, cfg: NetbackConfig) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Counters::default());
        let control = {
            let (stop, stats) = (stop.clone(), stats.clone());
            std::thread::Builder::new()
                .name(format!("netback-{}-{}", dev.frontend_id.0, dev.devid))
                .spawn(move || control(dom, dev, port, cfg, stop, stats))
                .ok()
        };
        Netback {
            stop,
            stats,
            control,
        }
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats.get()
    }

    /// Stops serving: disconnects and returns.
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

impl Drop for Netback {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The control thread: features, the state machine, connect/disconnect.
fn control(
    dom: Domain,
    dev: DevicePaths,
    port: Arc<dyn Port>,
    cfg: NetbackConfig,
    stop: Arc<AtomicBool>,
    stats: Arc<Counters>,
) {
    let xs = dom.store();
    let b = |on: bool| if on { "1" } else { "0" };
    let features = [
        ("feature-sg", b(cfg.sg)),
        ("feature-gso-tcpv4", b(cfg.gso_tcpv4)),
        ("feature-gso-tcpv6", b(cfg.gso_tcpv6)),
        ("feature-ipv6-csum-offload", b(cfg.ipv6_csum_offload)),
        ("feature-rx-copy", "1"),
        ("feature-rx-flip", "0"),
        ("feature-multicast-control", b(cfg.multicast_control)),
        ("feature-split-event-channels", b(cfg.split_event_channels)),
    ];
    let maxq = cfg.max_queues.max(1).to_string();
    let r = with_transaction(&xs, |tx| -> Result<(), pvio_xenbus::XsError> {
        for (k, v) in &features {
            tx.write(&dev.backend_key(k), v.as_bytes())?;
        }
        tx.write(&dev.backend_key("multi-queue-max-queues"), maxq.as_bytes())
    });
    if r.is_err() {
        return;
    }
    let _ = switch_state(&xs, &dev.backend, XenbusState::InitWait);
    let mut machine = BackendMachine::new(ConnectOn::Connected);
    let mut conn: Option<Connection> = None;
    let mut reported = false;
    while !stop.load(Ordering::Acquire) {
        let last = read_state(&xs, &dev.frontend);
        let _ = pvio_xenbus::device::wait_for_state(
            &xs,
            &dev.frontend,
            Duration::from_millis(100),
            |s| s != last,
        );
        if let Some(c) = &conn
            && c.shared.is_broken()
            && !reported
        {
            reported = true;
            c.port.attach(None);
            let why = c
                .shared
                .fault
                .lock()
                .map(|g| g.clone().unwrap_or_default())
                .unwrap_or_default();
            let _ = xs.write(&dev.backend_key("error"), why.as_bytes());
        }
        let fe_state = read_state(&xs, &dev.frontend);
        let online = read_u32_or(&xs, &dev.backend_key("online"), 1).unwrap_or(1) != 0;
        let step = machine.on_frontend(fe_state, online);
        match step.action {
            Action::Nothing => {}
            Action::Disconnect => {
                if let Some(c) = conn.take() {
                    c.close();
                    stats.add(&stats.disconnects, 1);
                }
            }
            Action::Connect => match connect(&dom, &xs, &dev, &port, &cfg, &stats) {
                Ok(c) => {
                    reported = false;
                    stats.broken.store(false, Ordering::Release);
                    conn = Some(c);
                    stats.add(&stats.connects, 1);
                }
                Err(e) => {
                    stats.add(&stats.refused, 1);
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
    }
    if let Some(c) = conn.take() {
        c.close();
        stats.add(&stats.disconnects, 1);
    }
    let _ = switch_state(&xs, &dev.backend, XenbusState::Closed);
}

/// One queue's rings and ports, before its threads start.
struct QueueRes {
    tx: TxRing,
    rx: RxRing,
    tx_port: EvtPort,
    rx_port: EvtPort,
    split: bool,
}

/// Reads and bounds the frontend's keys, maps the rings, binds the event
/// channels, starts the queue threads.
fn connect(
    dom: &Domain,
    xs: &pvio_xenbus::Client,
    dev: &DevicePaths,
    port: &Arc<dyn Port>,
    cfg: &NetbackConfig,
    stats: &Arc<Counters>,
) -> Result<Connection, ConnectError> {
    let fe = dev.frontend_id;
    let key = |k: &str| dev.frontend_key(k);
    let flag = |k: &str, d: bool| read_bool_or(xs, &key(k), d).map_err(refuse);
    if !flag("request-rx-copy", false)? {
        return Err(refuse("request-rx-copy is not 1"));
    }
    let max_q = cfg.max_queues.max(1);
    let queues = read_u32_or(xs, &key("multi-queue-num-queues"), 1).map_err(refuse)?;
    if queues == 0 || queues > max_q {
        return Err(refuse(format!(
            "multi-queue-num-queues {queues} not in 1..={max_q}"
        )));
    }
    let fe_sg = flag("feature-sg", false)?;
    let offloads = Offloads {
        csum_v4: !flag("feature-no-csum-offload", false)?,
        csum_v6: flag("feature-ipv6-csum-offload", false)?,
        gso_v4: flag("feature-gso-tcpv4", false)?,
        gso_v6: flag("feature-gso-tcpv6", false)?,
        sg: fe_sg,
    };
    let fe_feat = FrontFeatures {
        offloads,
        rx_notify: flag("feature-rx-notify", false)?,
        mcast_filter: cfg.multicast_control && flag("request-multicast-control", false)?,
    };
    let rate = if cfg.rate_limit {
        match xs.read(&dev.backend_key("rate")) {
            Ok(v) => match credit::parse_rate(&v) {
                Some(r) => Some(r),
                None => {
                    // NB12: malformed → unlimited, with a warning.
                    stats.add(&stats.warnings, 1);
                    eprintln!(
                        "netback {}: malformed rate {:?}: unlimited",
                        dev.backend,
                        String::from_utf8_lossy(&v)
                    );
                    None
                }
            },
            Err(_) => None,
        }
    } else {
        None
    };
    // Every queue's resources before any thread starts: a bad queue refuses
    // the whole connection and what was mapped is dropped (C3).
    let mut res = Vec::new();
    let mut bound = BoundPorts {
        dom: dom.clone(),
        ports: Vec::new(),
    };
    for q in 0..queues {
        let dir = if queues == 1 {
            String::new()
        } else {
            format!("queue-{q}/")
        };
        let k = |n: &str| key(&format!("{dir}{n}"));
        let tx_ref = GrantRef(read_u32(xs, &k("tx-ring-ref")).map_err(refuse)?);
        let rx_ref = GrantRef(read_u32(xs, &k("rx-ring-ref")).map_err(refuse)?);
        let split_keys = xs.read(&k("event-channel-tx")).is_ok();
        let (tx_evt, rx_evt, split) = if split_keys {
            if !cfg.split_event_channels {
                return Err(refuse("split event channels not offered"));
            }
            (
                read_u32(xs, &k("event-channel-tx")).map_err(refuse)?,
                read_u32(xs, &k("event-channel-rx")).map_err(refuse)?,
                true,
            )
        } else {
            let p = read_u32(xs, &k("event-channel")).map_err(refuse)?;
            (p, p, false)
        };
        let map = |g: GrantRef, what: &str| {
            dom.map_pages(fe, &[g])
                .map_err(|e| refuse(format!("{dir}{what} map: {e}")))
        };
        let tx = TxRing::attach(map(tx_ref, "tx-ring-ref")?)
            .map_err(|e| refuse(format!("{dir}tx ring attach: {e}")))?;
        let rx = RxRing::attach(map(rx_ref, "rx-ring-ref")?)
            .map_err(|e| refuse(format!("{dir}rx ring attach: {e}")))?;
        let ev = dom.events();
        let tx_port = ev
            .bind_interdomain(fe, EvtPort(tx_evt))
            .map_err(|e| refuse(format!("{dir}event channel: {e}")))?;
        bound.ports.push(tx_port);
        let rx_port = if split {
            let p = ev
                .bind_interdomain(fe, EvtPort(rx_evt))
                .map_err(|e| refuse(format!("{dir}event-channel-rx: {e}")))?;
            bound.ports.push(p);
            p
        } else {
            tx_port
        };
        res.push(QueueRes {
            tx,
            rx,
            tx_port,
            rx_port,
            split,
        });
    }
    let split_any = res.iter().any(|r| r.split);
    let mut rx_queues = Vec::with_capacity(res.len());
    let mut tx_side = Vec::with_capacity(res.len());
    for r in res {
        rx_queues.push(Arc::new(RxQueue::new(RxFill {
            dom: dom.clone(),
            fe,
            ring: r.rx,
            port: r.rx_port,
            written: 0,
        })));
        tx_side.push((r.tx, r.tx_port, r.rx_port, r.split));
    }
    let shared = Arc::new(Shared {
        queues: rx_queues,
        rx_queue_len: cfg.rx_queue_len.max(1),
        rx_queue_bytes: cfg.rx_queue_bytes,
        fe: fe_feat,
        max_mcast: cfg.max_mcast,
        mcast: Mutex::new(Vec::new()),
        broken: AtomicBool::new(false),
        fault: Mutex::new(None),
        carrier: AtomicBool::new(true),
        link: Mutex::new(()),
        stop: AtomicBool::new(false),
        stats: stats.clone(),
    });
    let lim = tx::TxLimits {
        sg: cfg.sg,
        gso_v4: cfg.gso_tcpv4,
        gso_v6: cfg.gso_tcpv6,
    };
    let mut threads = Vec::new();
    let mut failure = None;
    for (q, (tx_ring, tx_port, rx_port, split)) in tx_side.into_iter().enumerate() {
        let rxq = shared.queues[q].clone();
        let waiters = dom.port_waiter(tx_port).and_then(|w| {
            if split {
                dom.port_waiter(rx_port).map(|x| (w, Some(x)))
            } else {
                Ok((w, None))
            }
        });
        let (tx_waiter, rx_waiter) = match waiters {
            Ok(w) => w,
            Err(e) => {
                failure = Some(refuse(format!("event channel: {e}")));
                break;
            }
        };
        let txw = TxWorker {
            dom: dom.clone(),
            fe,
            ring: tx_ring,
            port: tx_port,
            waiter: tx_waiter,
            forward: if split { None } else { Some(rxq.clone()) },
            shared: shared.clone(),
            netport: port.clone(),
            credit: credit::Credit::new(rate),
            lim,
        };
        let rxw = RxWorker {
            q: rxq.clone(),
            waiter: rx_waiter,
            shared: shared.clone(),
            stall_timeout: cfg.rx_stall_timeout,
        };
        let name = |what: &str| format!("netback-{}-{}-q{q}-{what}", fe.0, dev.devid);
        let spawned = std::thread::Builder::new()
            .name(name("tx"))
            .spawn(move || txw.run())
            .and_then(|t| {
                threads.push(t);
                std::thread::Builder::new()
                    .name(name("rx"))
                    .spawn(move || rxw.run())
            })
            .map(|t| threads.push(t));
        if let Err(e) = spawned {
            failure = Some(refuse(format!("thread: {e}")));
            break;
        }
    }
    let conn = Connection {
        shared: shared.clone(),
        threads,
        port: port.clone(),
        ports: bound,
    };
    if let Some(e) = failure {
        conn.close();
        return Err(e);
    }
    stats.queues.store(u64::from(queues), Ordering::Relaxed);
    stats.split.store(split_any, Ordering::Release);
    stats.carrier.store(true, Ordering::Release);
    port.attach(Some(shared as Arc<dyn PacketSink>));
    Ok(conn)
}

/// Entry points for the fuzz targets in `fuzz/` (not a stable API): thin
/// calls into the real, crate-private parsers.
#[doc(hidden)]
pub mod fuzz_api {
    use pvio_abi::netif::TxRequest;

    use crate::tx::{self, Kind, TxLimits};

    /// One fragment of a parsed packet: grant, offset, length.
    pub type Frag = (pvio_abi::GrantRef, u16, u16);

    /// What [`parse_tx_ring`] made of one packet.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Parsed {
        /// Slots consumed (= responses).
        pub slots: usize,
        /// Responses that answer data slots, with their status.
        pub data_statuses: Vec<i16>,
        /// Fragments to copy (empty unless the packet is passed on).
        pub frags: Vec<Frag>,
        /// Packet length announced by the first slot.
        pub len: usize,
        /// Passed on (true) or dropped / a multicast update (false).
        pub pass: bool,
    }

    /// Splits `reqs` (the slots drained from the TX ring) into packets with
    /// the TX worker's own parser, as `TxWorker::run` does; `Err` is the
    /// fatal fault that disables the vif.
    pub fn parse_tx_ring(
        reqs: &[TxRequest],
        sg: bool,
        gso_v4: bool,
        gso_v6: bool,
    ) -> Result<Vec<Parsed>, String> {
        let lim = TxLimits { sg, gso_v4, gso_v6 };
        let mut out = Vec::new();
        let mut at = 0;
        while at < reqs.len() {
            let p = tx::parse(&reqs[at..], &lim)?;
            at += p.rsps.len();
            out.push(Parsed {
                slots: p.rsps.len(),
                data_statuses: p
                    .rsps
                    .iter()
                    .zip(&p.data)
                    .filter(|(_, d)| **d)
                    .map(|(r, _)| r.status)
                    .collect(),
                frags: p.frags.iter().map(|f| (f.gref, f.offset, f.len)).collect(),
                len: p.len,
                pass: p.kind == Kind::Data,
            });
        }
        Ok(out)
    }
}
