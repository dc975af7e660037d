//! netfront: the Xen network frontend on the in-tree hypervisor
//! (`spec/netif.md`, `spec/xenbus.md`).
//!
//! [`Netfront::connect`] runs the frontend half of the vif handshake: it
//! waits for the backend's InitWait, reads its features, sets up per queue
//! a TX ring and an RX ring (one page each) with one event channel (or a
//! TX and an RX channel when both sides want split event channels), posts
//! RX buffers, writes the keys of netif.md §5.3 in one transaction, goes
//! Connected (netback connects when it sees that) and waits for the
//! backend's Connected. Every feature can be turned off in
//! [`NetfrontConfig`].
//!
//! Frames are [`Packet`]s of `bytes`: [`Netfront::send`] /
//! [`Netfront::send_batch`] copy each into granted pages (several slots
//! with scatter-gather, a GSO extra-info slot for GSO frames) on the queue
//! its flow hashes to ([`queue_for`]); [`Netfront::recv`] /
//! [`Netfront::recv_batch`] return received frames, assembled from their
//! slots; [`Netfront::wait`] sleeps until a frame arrives or TX room comes
//! back.
//!
//! Hostile backends (SECURITY.md NF1–NF6): a TX response whose id is not
//! an outstanding request (NF1), an RX response that passes its page
//! (NF2) or a bad `rsp_prod` (NF3) breaks the device for good
//! ([`NetError::Broken`]); a page the backend still holds when its grant
//! ends is quarantined, never reused (NF4); an untrusted backend (the
//! toolstack's `trusted` = 0, or [`NetfrontConfig::trusted`]) gets
//! per-use grants of pages holding nothing but the packet and zeros (NF5);
//! an event storm costs bounded work: after a run of spurious wakeups the
//! waiter backs off (NF6).

#![forbid(unsafe_code)]

mod flow;
#[cfg(feature = "smoltcp")]
mod phy;
mod pool;
mod queue;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pvio_abi::netif::{
    ExtraGso, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED, XEN_NETIF_GSO_TYPE_TCPV4,
    XEN_NETIF_GSO_TYPE_TCPV6, XEN_NETIF_MAX_TX_SIZE,
};
use pvio_abi::xenbus::XenbusState;
use pvio_abi::{DomId, PAGE_SIZE};
use pvio_hv::{Domain, PollWindow, poll_step};
use pvio_xenbus::XenbusError;
use pvio_xenbus::device::{read_opt, read_state, read_u32_or, switch_state, wait_for_state};
use pvio_xenbus::toolstack::DevicePaths;
use pvio_xenbus::with_transaction;

pub use flow::{complete_checksum, flow_hash, queue_for};
#[cfg(feature = "smoltcp")]
pub use phy::{NetfrontRxToken, NetfrontTxToken};

use pool::Pool;
use queue::{MAX_SLOTS, Mode, Queue};

/// Most queues a frontend sets up.
pub const MAX_QUEUES: u32 = 16;

/// What the frontend asks for (each feature can be turned off; the backend
/// may offer less).
#[derive(Debug, Clone, Copy)]
pub struct NetfrontConfig {
    /// Queues wanted (bounded by the backend's `multi-queue-max-queues`
    /// and [`MAX_QUEUES`]).
    pub queues: u32,
    /// Scatter-gather: multi-slot TX frames (if the backend has
    /// `feature-sg`) and multi-slot RX frames (advertised).
    pub sg: bool,
    /// TCPv4 segmentation offload, both ways (needs `sg`).
    pub gso_tcpv4: bool,
    /// TCPv6 segmentation offload, both ways (needs `sg`).
    pub gso_tcpv6: bool,
    /// Accept partial IPv4 checksums on RX (else `feature-no-csum-offload`).
    pub csum_offload: bool,
    /// IPv6 partial checksums both ways (if the backend offers them).
    pub ipv6_csum_offload: bool,
    /// Separate TX and RX event channels (if the backend offers them).
    pub split_event_channels: bool,
    /// Notify the backend when RX buffers are posted
    /// (`feature-rx-notify`); else the backend polls.
    pub rx_notify: bool,
    /// Whether the backend is trusted; `None` reads the toolstack's
    /// `trusted` key (absent: trusted). Untrusted: per-use grants, pages
    /// zeroed, nothing but the packet and zeros in a granted page (NF5).
    pub trusted: Option<bool>,
    /// RX requests are posted in batches of at least this many slots.
    pub rx_refill_batch: u32,
    /// Received frames held for the caller; past this the RX ring is not
    /// refilled (the backend drops), so memory stays bounded.
    pub rx_queue_cap: usize,
    /// Data pages the device may use.
    pub max_pages: usize,
    /// How long to wait for the backend during the handshake.
    pub timeout: Duration,
    /// How long [`Netfront::send`] waits for TX room.
    pub tx_timeout: Duration,
    /// How long closing waits for the backend to let go of the rings.
    pub close_timeout: Duration,
    /// How long a waiting caller polls the rings before sleeping, at least:
    /// the poll grows (up to 500 µs) while responses keep coming soon after
    /// the caller slept, and shrinks back to this when they do not (zero:
    /// never poll).
    pub spin: Duration,
}

impl Default for NetfrontConfig {
    fn default() -> Self {
        NetfrontConfig {
            queues: 1,
            sg: true,
            gso_tcpv4: true,
            gso_tcpv6: true,
            csum_offload: true,
            ipv6_csum_offload: true,
            split_event_channels: true,
            rx_notify: true,
            trusted: None,
            rx_refill_batch: 32,
            rx_queue_cap: 1024,
            max_pages: 4096,
            timeout: Duration::from_secs(10),
            tx_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            spin: Duration::from_micros(20),
        }
    }
}

/// The connection as negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetInfo {
    /// The interface's MAC (the toolstack's `mac`, or a locally
    /// administered default).
    pub mac: [u8; 6],
    /// The MTU (the toolstack's `mtu`, default 1500).
    pub mtu: u16,
    /// Queues in use.
    pub queues: u32,
    /// TX frames may span several slots.
    pub sg: bool,
    /// TCPv4 GSO frames may be sent.
    pub gso_tcpv4: bool,
    /// TCPv6 GSO frames may be sent.
    pub gso_tcpv6: bool,
    /// Partial IPv6 checksums may be sent (else completed in software).
    pub ipv6_csum_offload: bool,
    /// Split TX/RX event channels.
    pub split_event_channels: bool,
    /// The frontend notifies the backend of posted RX buffers.
    pub rx_notify: bool,
    /// The backend is trusted.
    pub trusted: bool,
}

/// GSO type of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GsoKind {
    /// TCP over IPv4.
    TcpV4,
    /// TCP over IPv6.
    TcpV6,
}

/// Segmentation offload of a frame larger than the MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gso {
    /// The protocol.
    pub kind: GsoKind,
    /// Payload bytes per segment (MSS), non-zero.
    pub size: u16,
}

/// One Ethernet frame and its offload metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Packet {
    /// The frame, from the Ethernet header on (no FCS).
    pub data: Bytes,
    /// The TCP/UDP checksum is partial (to be completed by the receiver or
    /// offloaded).
    pub csum_blank: bool,
    /// The data was already validated against its checksum.
    pub data_validated: bool,
    /// Segmentation offload.
    pub gso: Option<Gso>,
}

impl Packet {
    /// A plain frame (complete checksums, no GSO).
    pub fn new(data: impl Into<Bytes>) -> Packet {
        Packet {
            data: data.into(),
            ..Packet::default()
        }
    }
}

/// Why an operation or the device failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetError {
    /// The frame is malformed (nothing was sent).
    Invalid(&'static str),
    /// The frame needs more than the negotiated slots (or 64 KiB).
    TooLarge(usize),
    /// The backend does not support what the frame asks for.
    Unsupported(&'static str),
    /// No room on the ring now (try again after [`Netfront::wait`]).
    Full,
    /// [`Netfront::send`] found no room within the TX timeout.
    Timeout,
    /// The backend broke the protocol; the device is closed.
    Broken(String),
    /// No backend connected, or it went away.
    Disconnected(String),
    /// The frontend domain has no memory or grant references left.
    NoMemory,
    /// A grant or event channel operation failed.
    Grant(String),
    /// The store failed or holds a bad value.
    Store(XenbusError),
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Invalid(why) => write!(f, "invalid frame: {why}"),
            NetError::TooLarge(n) => write!(f, "frame of {n} bytes is too large"),
            NetError::Unsupported(why) => write!(f, "not supported by the backend: {why}"),
            NetError::Full => write!(f, "no room on the ring"),
            NetError::Timeout => write!(f, "no room on the ring in time"),
            NetError::Broken(why) => write!(f, "backend broke the protocol: {why}"),
            NetError::Disconnected(why) => write!(f, "no backend: {why}"),
            NetError::NoMemory => write!(f, "out of frontend memory or grant references"),
            NetError::Grant(e) => write!(f, "grant: {e}"),
            NetError::Store(e) => write!(f, "store: {e}"),
        }
    }
}

impl std::error::Error for NetError {}

impl From<XenbusError> for NetError {
    fn from(e: XenbusError) -> Self {
        NetError::Store(e)
    }
}

impl From<pvio_xenbus::XsError> for NetError {
    fn from(e: pvio_xenbus::XsError) -> Self {
        NetError::Store(XenbusError::Xs(e))
    }
}

/// What [`Netfront::wait`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ready {
    /// Received frames are waiting.
    pub rx: bool,
    /// A send found no room earlier and every queue has room again.
    pub tx: bool,
}

/// Counters of a frontend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames put on TX rings.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// TX data slots used.
    pub tx_slots: u64,
    /// TX slots the backend answered with an error.
    pub tx_errors: u64,
    /// Frames received.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// RX frames dropped (error status, or empty).
    pub rx_errors: u64,
    /// RX buffers posted.
    pub rx_posted: u64,
    /// Notifications sent to the backend.
    pub notifies: u64,
    /// Times a waiting caller went round its loop (NF6: bounded under an
    /// event storm).
    pub wait_loops: u64,
    /// Events taken from the event channels.
    pub events: u64,
    /// Events that brought no response.
    pub spurious_events: u64,
    /// Back-off sleeps during an event storm.
    pub backoffs: u64,
}

/// Longest poll of a waiting caller (see [`NetfrontConfig::spin`]).
const MAX_SPIN: Duration = Duration::from_micros(500);
/// How often a waiting frontend re-reads the backend's state.
const STATE_CHECK: Duration = Duration::from_millis(10);
/// Consecutive spurious events after which the waiter backs off (NF6).
const STORM_THRESHOLD: u32 = 32;
/// The first and the longest back-off sleep.
const BACKOFF_MIN: Duration = Duration::from_micros(50);
const BACKOFF_MAX: Duration = Duration::from_millis(2);

/// A connected network frontend (see the crate docs). Dropping it closes
/// the device.
pub struct Netfront {
    dom: Domain,
    dev: DevicePaths,
    cfg: NetfrontConfig,
    xs: pvio_xenbus::Client,
    queues: Vec<Queue>,
    pool: Pool,
    info: NetInfo,
    rx_ready: VecDeque<Packet>,
    broken: Option<String>,
    down: Option<String>,
    closed: bool,
    last_state_check: Instant,
    tx_blocked: bool,
    spurious: u32,
    backoff: Duration,
    /// The poll before sleeping (adapted; see `wait_once`).
    poll: PollWindow,
    stats: Stats,
    waker: Waker,
}

/// Wakes a thread blocked in [`Netfront::wait`] from another thread, for a
/// caller that also has other work to wait for (a TAP device's frames,
/// say): that `wait` then returns at once. Cheap to call per frame: only
/// the first wake after the waiter last looked costs an `unpark`.
#[derive(Clone, Debug, Default)]
pub struct Waker(std::sync::Arc<WakeState>);

#[derive(Debug, Default)]
struct WakeState {
    woken: std::sync::atomic::AtomicBool,
    waiter: std::sync::Mutex<Option<std::thread::Thread>>,
}

impl Waker {
    /// Makes the current or next [`Netfront::wait`] return.
    pub fn wake(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        if !self.0.woken.swap(true, SeqCst)
            && let Some(t) = self
                .0
                .waiter
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
        {
            t.unpark();
        }
    }

    /// Whether a wake is pending (the waiter's side, without taking it).
    fn is_woken(&self) -> bool {
        self.0.woken.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes a wake (the waiter's side).
    fn take(&self) -> bool {
        self.0
            .woken
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// Records the waiting thread, if anyone else holds this waker (no lock
    /// otherwise: `wait` is on the hot path).
    fn register(&self) {
        if std::sync::Arc::strong_count(&self.0) == 1 {
            return;
        }
        let mut w = self.0.waiter.lock().unwrap_or_else(|e| e.into_inner());
        if w.as_ref().map(std::thread::Thread::id) != Some(std::thread::current().id()) {
            *w = Some(std::thread::current());
        }
    }
}

impl fmt::Debug for Netfront {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netfront")
            .field("dev", &self.dev.frontend)
            .field("info", &self.info)
            .field("broken", &self.broken)
            .field("down", &self.down)
            .finish()
    }
}

fn parse_mac(v: &[u8]) -> Option<[u8; 6]> {
    let s = std::str::from_utf8(v).ok()?.trim_end_matches('\0');
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// A locally administered unicast MAC derived from the device.
fn default_mac(fe: DomId, devid: u32) -> [u8; 6] {
    let d = fe.0.to_be_bytes();
    let v = (devid as u16).to_be_bytes();
    [0x02, 0x00, d[0], d[1], v[0], v[1]]
}

impl Netfront {
    /// Connects vif `dev` from frontend domain `dom` (the toolstack has
    /// created it) and returns once the backend is Connected.
    pub fn connect(dom: Domain, dev: DevicePaths, cfg: NetfrontConfig) -> Result<Self, NetError> {
        let xs = dom.store();
        let pool = Pool::new(dom.clone(), cfg.max_pages.max(4 * MAX_SLOTS));
        let info = NetInfo {
            mac: default_mac(dev.frontend_id, dev.devid),
            mtu: 1500,
            queues: 1,
            sg: false,
            gso_tcpv4: false,
            gso_tcpv6: false,
            ipv6_csum_offload: false,
            split_event_channels: false,
            rx_notify: false,
            trusted: true,
        };
        let mut me = Netfront {
            dom,
            dev,
            cfg,
            xs,
            queues: Vec::new(),
            pool,
            info,
            rx_ready: VecDeque::new(),
            broken: None,
            down: None,
            closed: false,
            last_state_check: Instant::now(),
            tx_blocked: false,
            spurious: 0,
            backoff: BACKOFF_MIN,
            poll: PollWindow::new(cfg.spin, MAX_SPIN),
            stats: Stats::default(),
            waker: Waker::default(),
        };
        if let Err(e) = me.handshake() {
            // Tell the backend this frontend gave up.
            let _ = switch_state(&me.xs, &me.dev.frontend, XenbusState::Closing);
            me.closed = true;
            me.pool.free_all();
            return Err(e);
        }
        Ok(me)
    }

    /// The connection as negotiated.
    pub fn info(&self) -> NetInfo {
        self.info
    }

    /// The interface's MAC.
    pub fn mac(&self) -> [u8; 6] {
        self.info.mac
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

    /// Why the device is broken, if it is (NF1–NF3).
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// Pages whose grants a backend still holds after it should have let go
    /// (never reused until it does: NF4).
    pub fn quarantined_pages(&self) -> usize {
        self.pool.quarantined()
    }

    /// TX requests on the rings, not yet answered.
    pub fn tx_in_flight(&self) -> usize {
        self.queues.iter().map(Queue::tx_outstanding).sum()
    }

    /// Frames received and not yet taken.
    pub fn rx_pending(&self) -> usize {
        self.rx_ready.len()
    }

    fn usable(&self) -> Result<(), NetError> {
        if let Some(why) = &self.broken {
            return Err(NetError::Broken(why.clone()));
        }
        if let Some(why) = &self.down {
            return Err(NetError::Disconnected(why.clone()));
        }
        Ok(())
    }

    /// Queues `pkt` for transmission without waiting: on
    /// [`NetError::Full`] (or any error) the frame comes back.
    pub fn try_send(&mut self, pkt: Packet) -> Result<(), (NetError, Packet)> {
        match self.push(&pkt) {
            Ok(true) => {}
            Ok(false) => {
                self.tx_blocked = true;
                let _ = self.publish();
                return Err((NetError::Full, pkt));
            }
            Err(e) => return Err((e, pkt)),
        }
        self.publish().map_err(|e| (e, pkt))
    }

    /// Sends `pkt`, waiting up to [`NetfrontConfig::tx_timeout`] for room.
    pub fn send(&mut self, pkt: Packet) -> Result<(), NetError> {
        self.send_batch([pkt]).map(drop)
    }

    /// Sends every frame of `pkts` in order, publishing each ring once per
    /// batch (or whenever it fills), waiting up to
    /// [`NetfrontConfig::tx_timeout`] for room each time. Stops at the
    /// first frame that fails (the earlier ones are sent). Returns how many
    /// were sent.
    pub fn send_batch(
        &mut self,
        pkts: impl IntoIterator<Item = Packet>,
    ) -> Result<usize, NetError> {
        let mut sent = 0;
        for pkt in pkts {
            let start = Instant::now();
            loop {
                match self.push(&pkt) {
                    Ok(true) => break,
                    Ok(false) => {
                        self.tx_blocked = true;
                        self.publish()?;
                        if start.elapsed() >= self.cfg.tx_timeout {
                            return Err(NetError::Timeout);
                        }
                        // A full TX ring has a ring's worth of work queued:
                        // no hurry, so no adapted (longer) poll that would
                        // take the CPU from the threads that drain it.
                        self.wait_once(start, self.cfg.tx_timeout, false);
                        // `wait_once` only looks at the rings when an
                        // event came; a backend that went away sends none,
                        // so check its state here (as `wait` does) to
                        // report Disconnected rather than a Timeout.
                        self.process();
                        self.usable()?;
                    }
                    Err(e) => {
                        let _ = self.publish();
                        return Err(e);
                    }
                }
            }
            sent += 1;
        }
        self.publish()?;
        Ok(sent)
    }

    /// The next received frame, if any (without waiting).
    pub fn recv(&mut self) -> Option<Packet> {
        if self.rx_ready.is_empty() {
            self.process();
        }
        let p = self.rx_ready.pop_front();
        if p.is_some() {
            self.refill_if_room();
        }
        p
    }

    /// Moves up to `max` received frames to `out` (without waiting);
    /// returns how many.
    pub fn recv_batch(&mut self, out: &mut Vec<Packet>, max: usize) -> usize {
        self.process();
        let n = max.min(self.rx_ready.len());
        out.extend(self.rx_ready.drain(..n));
        if n > 0 {
            self.refill_if_room();
        }
        n
    }

    /// Waits up to `timeout` until a frame is received or, after a send
    /// found no room, every queue has room again, or a [`Waker`] of the
    /// device is woken. An error if the device is broken or the backend
    /// went away.
    pub fn wait(&mut self, timeout: Duration) -> Result<Ready, NetError> {
        let start = Instant::now();
        self.waker.register();
        loop {
            self.process();
            self.usable()?;
            let r = self.readiness();
            if r.rx || r.tx || start.elapsed() >= timeout || self.waker.take() {
                return Ok(r);
            }
            self.wait_once(start, timeout, true);
        }
    }

    /// A handle that makes [`Netfront::wait`] return from another thread.
    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Closes the device: disconnects from the backend (waiting up to
    /// [`NetfrontConfig::close_timeout`] for it to let go of the rings) and
    /// releases every grant and page (quarantining what it still holds).
    pub fn close(mut self) {
        self.shutdown();
    }

    // ------------------------------------------------------------ internals

    fn readiness(&self) -> Ready {
        Ready {
            rx: !self.rx_ready.is_empty(),
            tx: self.tx_blocked && self.queues.iter().all(Queue::tx_has_room_for_any),
        }
    }

    /// Checks a frame against what was negotiated and puts it on its
    /// queue's ring (not yet published). `Ok(false)`: no room now.
    fn push(&mut self, pkt: &Packet) -> Result<bool, NetError> {
        self.usable()?;
        let len = pkt.data.len();
        if len < 14 {
            return Err(NetError::Invalid("shorter than an Ethernet header"));
        }
        if len > XEN_NETIF_MAX_TX_SIZE as usize {
            return Err(NetError::TooLarge(len));
        }
        let slots = len.div_ceil(PAGE_SIZE);
        if slots > 1 && !self.info.sg {
            return Err(NetError::TooLarge(len));
        }
        let mut flags = 0;
        if pkt.data_validated {
            flags |= NETTXF_DATA_VALIDATED;
        }
        let mut owned: Option<Vec<u8>> = None;
        let gso = match pkt.gso {
            Some(g) => {
                if g.size == 0 {
                    return Err(NetError::Invalid("GSO size 0"));
                }
                let (ok, t) = match g.kind {
                    GsoKind::TcpV4 => (self.info.gso_tcpv4, XEN_NETIF_GSO_TYPE_TCPV4),
                    GsoKind::TcpV6 => (self.info.gso_tcpv6, XEN_NETIF_GSO_TYPE_TCPV6),
                };
                if !ok {
                    return Err(NetError::Unsupported("GSO of this type"));
                }
                // GSO frames go with a partial checksum (netif.md §2).
                flags |= NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED;
                Some(ExtraGso {
                    size: g.size,
                    type_: t,
                    pad: 0,
                    features: 0,
                })
            }
            None => {
                if pkt.csum_blank {
                    if flow::is_ipv6(&pkt.data) && !self.info.ipv6_csum_offload {
                        // The backend cannot complete it: do it here.
                        let mut v = pkt.data.to_vec();
                        complete_checksum(&mut v);
                        owned = Some(v);
                        flags |= NETTXF_DATA_VALIDATED;
                    } else {
                        flags |= NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED;
                    }
                }
                None
            }
        };
        let data: &[u8] = owned.as_deref().unwrap_or(&pkt.data);
        let qi = queue_for(data, self.queues.len());
        let Some(q) = self.queues.get_mut(qi) else {
            return Err(NetError::Disconnected("not connected".into()));
        };
        let mut pushed = q.push_packet(data, flags, gso, &mut self.pool, &mut self.stats)?;
        if !pushed {
            // Collect completions, then try once more.
            if let Err(why) = q.reap_tx(&mut self.pool, &mut self.stats) {
                self.fail(why.clone());
                return Err(NetError::Broken(why));
            }
            pushed = q.push_packet(data, flags, gso, &mut self.pool, &mut self.stats)?;
        }
        if pushed {
            self.tx_blocked = false;
        }
        Ok(pushed)
    }

    fn publish(&mut self) -> Result<(), NetError> {
        let mut err = None;
        for q in &mut self.queues {
            if let Err(e) = q.publish_tx(&mut self.stats) {
                err = Some(e);
            }
        }
        if let Some(e) = err {
            self.fail(e.to_string());
            return Err(e);
        }
        Ok(())
    }

    fn refill_if_room(&mut self) {
        if self.rx_ready.len() >= self.cfg.rx_queue_cap {
            return;
        }
        let mut err = None;
        for q in &mut self.queues {
            if let Err(e) = q.refill(&mut self.pool, false, &mut self.stats) {
                err = Some(e.to_string());
            }
        }
        if let Some(why) = err {
            self.fail(why);
        }
    }

    /// Consumes every response on every ring, refills RX, checks the
    /// backend's state now and then. Returns how many responses were
    /// consumed.
    fn process(&mut self) -> usize {
        if self.broken.is_some() || self.queues.is_empty() {
            return 0;
        }
        if self.pool.quarantined() > 0 {
            self.pool.reclaim();
        }
        let mut work = 0;
        let mut err = None;
        for (qi, q) in self.queues.iter_mut().enumerate() {
            let r = q.reap_tx(&mut self.pool, &mut self.stats).and_then(|n| {
                q.reap_rx(&mut self.pool, &mut self.rx_ready, &mut self.stats)
                    .map(|m| n + m)
            });
            match r {
                Ok(n) => work += n,
                Err(why) => {
                    err = Some(format!("queue {qi}: {why}"));
                    break;
                }
            }
        }
        if let Some(why) = err {
            self.fail(why);
            return work;
        }
        if work > 0 {
            // Responses came: the events meanwhile were no storm, even those
            // whose responses a poll had already taken (NF6 counts only
            // events that bring nothing; left counting, they put a busy
            // device into back-off sleeps for good).
            self.spurious = 0;
            self.backoff = BACKOFF_MIN;
        }
        self.refill_if_room();
        if self.last_state_check.elapsed() >= STATE_CHECK {
            self.last_state_check = Instant::now();
            let s = read_state(&self.xs, &self.dev.backend);
            if s != XenbusState::Connected && self.down.is_none() {
                self.down = Some(format!("backend left Connected ({s:?})"));
            }
        }
        work
    }

    /// One round of waiting: spin on the rings, then sleep on the event
    /// channels (or back off during an event storm: NF6). `adapt`: poll for
    /// the adapted window (and adapt it), not just `cfg.spin`.
    fn wait_once(&mut self, start: Instant, timeout: Duration, adapt: bool) {
        self.stats.wait_loops += 1;
        let left = timeout.saturating_sub(start.elapsed());
        if self.spurious >= STORM_THRESHOLD {
            // An event storm: events are coalesced while we sleep, so the
            // work per unit of time is bounded whatever the peer does.
            self.stats.backoffs += 1;
            std::thread::sleep(self.backoff.min(left));
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
        // Poll the rings for the spin time: a few microseconds of pure
        // spinning, then yielding between checks, so that a backend or event
        // thread sharing this CPU can run (a pure spin starves it: with two
        // vCPUs and netback's threads, spinning halved the throughput).
        let t0 = Instant::now();
        let window = if adapt {
            self.poll.window()
        } else {
            self.cfg.spin
        };
        loop {
            if self.queues.iter_mut().any(Queue::has_responses) || self.waker.is_woken() {
                return;
            }
            if !poll_step(t0.elapsed(), window) {
                break;
            }
        }
        let mut event = false;
        let mut ready = false;
        for q in &mut self.queues {
            if q.arm(&mut event) {
                ready = true;
            }
        }
        if event {
            self.stats.events += 1;
        }
        if ready {
            // Whether the event brought work is known after the next
            // `process`.
            let work = self.process();
            self.note_work(event, work);
            return;
        }
        if self.queues.is_empty() {
            std::thread::sleep(left.min(STATE_CHECK));
            return;
        }
        let parked = Instant::now();
        std::thread::park_timeout(left.min(STATE_CHECK));
        if !adapt {
            return;
        }
        // Responses that came soon after we slept mean a longer poll would
        // have saved the thread wake-ups of an event; otherwise poll less.
        let work = self.queues.iter_mut().any(Queue::has_responses);
        self.poll.slept(parked.elapsed(), work);
    }

    fn note_work(&mut self, event: bool, work: usize) {
        if work > 0 {
            self.spurious = 0;
            self.backoff = BACKOFF_MIN;
        } else if event {
            self.spurious = self.spurious.saturating_add(1);
            self.stats.spurious_events += 1;
        }
    }

    /// The backend broke the protocol: close for good (NF1–NF3).
    fn fail(&mut self, why: String) {
        if self.broken.is_some() {
            return;
        }
        self.broken = Some(why.clone());
        let _ = pvio_xenbus::device::dev_fatal(&self.xs, &self.dev.frontend, &why);
        self.rx_ready.clear();
        self.teardown();
        let _ = switch_state(&self.xs, &self.dev.frontend, XenbusState::Closing);
    }

    fn teardown(&mut self) {
        for q in self.queues.drain(..) {
            q.teardown(&mut self.pool);
        }
    }

    /// The frontend half of the handshake (netif.md §5): from Initialising
    /// to Connected. On failure nothing stays set up.
    fn handshake(&mut self) -> Result<(), NetError> {
        let xs = self.dom.store();
        let dev = self.dev.clone();
        let fe = &dev.frontend;
        let be = &dev.backend;
        if read_state(&xs, fe) != XenbusState::Initialising {
            switch_state(&xs, fe, XenbusState::Initialising)?;
        }
        wait_for_state(&xs, be, self.cfg.timeout, |s| s == XenbusState::InitWait)
            .map_err(|e| NetError::Disconnected(format!("waiting for the backend: {e}")))?;
        let flag = |k: &str| -> Result<bool, NetError> {
            Ok(read_u32_or(&xs, &dev.backend_key(k), 0)? == 1)
        };
        if !flag("feature-rx-copy")? {
            return Err(NetError::Unsupported(
                "the backend has no feature-rx-copy (copying receive path)",
            ));
        }
        let cfg = self.cfg;
        let sg = cfg.sg && flag("feature-sg")?;
        let gso_tcpv4 = sg && cfg.gso_tcpv4 && flag("feature-gso-tcpv4")?;
        let gso_tcpv6 = sg && cfg.gso_tcpv6 && flag("feature-gso-tcpv6")?;
        let ipv6_csum = cfg.ipv6_csum_offload && flag("feature-ipv6-csum-offload")?;
        let split = cfg.split_event_channels && flag("feature-split-event-channels")?;
        let max_queues = read_opt(&xs, &dev.backend_key("multi-queue-max-queues"))?;
        let multi_queue = max_queues.is_some();
        let max_queues = read_u32_or(&xs, &dev.backend_key("multi-queue-max-queues"), 1)?;
        let queues = cfg.queues.clamp(1, MAX_QUEUES).min(max_queues.max(1));
        let trusted = match cfg.trusted {
            Some(t) => t,
            None => read_u32_or(&xs, &dev.frontend_key("trusted"), 1)? != 0,
        };
        let mac = match read_opt(&xs, &dev.frontend_key("mac"))? {
            Some(v) => parse_mac(&v).ok_or(NetError::Store(XenbusError::Malformed {
                path: dev.frontend_key("mac"),
                value: String::from_utf8_lossy(&v).into_owned(),
            }))?,
            None => default_mac(dev.frontend_id, dev.devid),
        };
        let mtu = read_u32_or(&xs, &dev.frontend_key("mtu"), 1500)?.clamp(68, 65535) as u16;
        self.pool.zero = !trusted;
        let mode = Mode {
            rx_sg: cfg.sg,
            rx_gso: cfg.sg && (cfg.gso_tcpv4 || cfg.gso_tcpv6),
            persistent: trusted,
            rx_notify: cfg.rx_notify,
            refill_batch: cfg.rx_refill_batch.clamp(1, 256),
        };
        let mut qs: Vec<Queue> = Vec::new();
        let setup = (|| -> Result<(), NetError> {
            for _ in 0..queues {
                qs.push(Queue::setup(
                    &self.dom,
                    dev.backend_id,
                    split,
                    mode,
                    &mut self.pool,
                )?);
            }
            for q in &mut qs {
                q.refill(&mut self.pool, true, &mut self.stats)?;
            }
            Ok(())
        })();
        let written = setup.and_then(|()| {
            with_transaction(&xs, |tx| -> Result<(), pvio_xenbus::XsError> {
                // Keys of an earlier connection must not linger.
                for k in [
                    "tx-ring-ref",
                    "rx-ring-ref",
                    "event-channel",
                    "event-channel-tx",
                    "event-channel-rx",
                    "multi-queue-num-queues",
                ] {
                    let _ = tx.rm(&dev.frontend_key(k));
                }
                for i in 0..MAX_QUEUES {
                    let _ = tx.rm(&dev.frontend_key(&format!("queue-{i}")));
                }
                let w = |k: &str, v: String| tx.write(&dev.frontend_key(k), v.as_bytes());
                if queues > 1 || multi_queue {
                    w("multi-queue-num-queues", queues.to_string())?;
                }
                for (qi, q) in qs.iter().enumerate() {
                    let dir = if queues > 1 {
                        format!("queue-{qi}/")
                    } else {
                        String::new()
                    };
                    let g = |i: usize| q.ring_grefs[i].map_or(0, |g| g.0);
                    w(&format!("{dir}tx-ring-ref"), g(0).to_string())?;
                    w(&format!("{dir}rx-ring-ref"), g(1).to_string())?;
                    if split {
                        w(&format!("{dir}event-channel-tx"), q.tx_port.0.to_string())?;
                        w(&format!("{dir}event-channel-rx"), q.rx_port.0.to_string())?;
                    } else {
                        w(&format!("{dir}event-channel"), q.tx_port.0.to_string())?;
                    }
                }
                let b = |on: bool| u8::from(on).to_string();
                w("request-rx-copy", "1".into())?;
                w("feature-rx-notify", b(cfg.rx_notify))?;
                w("feature-sg", b(cfg.sg))?;
                w("feature-gso-tcpv4", b(cfg.sg && cfg.gso_tcpv4))?;
                w("feature-gso-tcpv6", b(cfg.sg && cfg.gso_tcpv6))?;
                w("feature-no-csum-offload", b(!cfg.csum_offload))?;
                w("feature-ipv6-csum-offload", b(cfg.ipv6_csum_offload))?;
                Ok(())
            })
            .map_err(NetError::from)
        });
        let connected = written.and_then(|()| {
            switch_state(&xs, fe, XenbusState::Connected)?;
            let s = wait_for_state(&xs, be, self.cfg.timeout, |s| {
                matches!(
                    s,
                    XenbusState::Connected | XenbusState::Closing | XenbusState::Closed
                )
            })
            .map_err(|e| NetError::Disconnected(format!("waiting for the backend: {e}")))?;
            if s != XenbusState::Connected {
                let why = xs.read(&dev.backend_key("error")).unwrap_or_default();
                return Err(NetError::Disconnected(format!(
                    "backend went {s:?} instead of connecting: {}",
                    String::from_utf8_lossy(&why)
                )));
            }
            Ok(())
        });
        if let Err(e) = connected {
            for q in qs {
                q.teardown(&mut self.pool);
            }
            let _ = switch_state(&xs, fe, XenbusState::Closing);
            return Err(e);
        }
        self.queues = qs;
        self.info = NetInfo {
            mac,
            mtu,
            queues,
            sg,
            gso_tcpv4,
            gso_tcpv6,
            ipv6_csum_offload: ipv6_csum,
            split_event_channels: split,
            rx_notify: cfg.rx_notify,
            trusted,
        };
        self.last_state_check = Instant::now();
        Ok(())
    }

    fn shutdown(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let healthy = self.broken.is_none() && self.down.is_none() && !self.queues.is_empty();
        let xs = self.dom.store();
        let _ = switch_state(&xs, &self.dev.frontend, XenbusState::Closing);
        if healthy && !self.dom.is_destroyed() {
            let _ = wait_for_state(&xs, &self.dev.backend, self.cfg.close_timeout, |s| {
                !matches!(s, XenbusState::Connected | XenbusState::Initialised)
            });
        }
        self.teardown();
        let _ = switch_state(&xs, &self.dev.frontend, XenbusState::Closed);
        self.pool.free_all();
        self.broken.get_or_insert_with(|| "closed".into());
    }
}

impl Drop for Netfront {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac(b"00:16:3e:0a:bB:ff"),
            Some([0, 0x16, 0x3e, 0x0a, 0xbb, 0xff])
        );
        for bad in [
            &b""[..],
            b"00:16:3e:0a:bb",
            b"00:16:3e:0a:bb:ff:00",
            b"0:16:3e:0a:bb:ff",
            b"zz:16:3e:0a:bb:ff",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
        let m = default_mac(DomId(7), 3);
        assert_eq!(m[0] & 0x03, 0x02, "locally administered unicast");
    }
}
