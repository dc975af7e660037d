//! One connection's queues: the shared vif state (the [`PacketSink`] the
//! port delivers to), and per queue a TX thread and an RX thread.
//!
//! TX thread: copies every visible request out of the TX ring once, parses
//! the packets ([`crate::tx`]), grant-copies their data (one batch per
//! round) into `BytesMut` buffers, answers each consumed slot, publishes,
//! and hands the packets to the port, within the credit of the `rate` key.
//!
//! RX: packets go to a bounded backlog per queue, and whoever finds the
//! queue's RX ring free writes from it ([`Shared::hand_over`], under the
//! locking protocol of [`crate::handover`], which a loom model checks): a
//! thread delivering packets (another vif's TX thread, the TAP reader)
//! writes small ones into the frontend's posted buffers itself, with no
//! hand-off to the RX thread. The RX thread writes what deliverers leave: it waits until the
//! frontend has posted enough RX requests for the head packet, fills the
//! slots with grant copies (one batch per round) and writes each response
//! (or GSO extra) into the slot of the request it consumed (NB18). A head
//! packet that waits longer than the stall timeout turns the carrier off
//! (queue purged, later packets dropped and counted) until the frontend
//! posts enough buffers again (NB13, NB14).
//!
//! Events: with one event channel the TX thread owns the port and passes
//! every event on to the RX thread ([`Kick::kick_event`]); with split
//! channels the RX port's waiter unparks the RX thread itself. Deliverers
//! kick the RX thread ([`Kick::kick`]) only for what they leave in the
//! backlog, and not while it waits for the frontend's buffers: those kicks
//! would only wake it to find the ring still empty.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pvio_abi::netif::{
    ExtraGso, ExtraInfo, NETIF_RSP_ERROR, NETIF_RSP_OKAY, NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED,
    NETRXF_EXTRA_INFO, NETRXF_MORE_DATA, RxRequest, RxResponse, TxRequest, TxResponse,
    XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6,
};
use pvio_abi::{DomId, Port as EvtPort};
use pvio_hv::{CopyDst, CopyOp, CopySrc, Domain, GntStatus, MappedPages, PollWindow, PortWaiter};
use pvio_ring::BackRing;

use crate::credit::Credit;
use crate::handover::{BacklogLock, Handover, Next, Queue, lock_backlog};
use crate::packet::{self, GsoKind, Offloads, Packet, PacketSink, Port};
use crate::tx::{self, Kind, TxLimits, TxPacket};
use crate::{Counters, MAX_FRAME};

pub(crate) type TxRing = BackRing<MappedPages, TxRequest, TxResponse>;
pub(crate) type RxRing = BackRing<MappedPages, RxRequest, RxResponse>;

/// Packets per round (bounded work per wakeup: R8).
const BATCH: usize = 64;
/// How long an idle TX or RX thread polls before it sleeps: a
/// [`PollWindow`] between these. Without adapting, under a load that keeps
/// both vCPUs busy, the RX thread and the frontend's reader fell into a
/// ping-pong of sleeps and wake-ups and delivered a fifth of what they
/// deliver polling.
const POLL_BASE: Duration = Duration::from_micros(50);
const POLL_MAX: Duration = Duration::from_micros(500);
/// Packets up to this size are written into a frontend's buffers by the
/// thread that delivers them ([`Shared::hand_over`]); larger ones go to the
/// RX thread. For a small packet the hand-off (queue, wake-up, a thread
/// switch) costs more than its copy; a large packet's copy is the work, and
/// in the RX thread it runs beside the sender's next copy out of its guest
/// where there is a CPU for it, and does not hold up the delivering vif's
/// own TX. (On this 2-vCPU machine, with four busy threads, 64 KiB GSO
/// measured the same either way within its swing.)
const DIRECT_MAX: usize = 2048;
/// Packets up to this size share one buffer allocation per TX batch.
const BUF_CHUNK: usize = 16 * 1024;
/// Longest sleep (to notice `stop`).
const MAX_SLEEP: Duration = Duration::from_millis(20);
const PAGE: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wake-ups of the RX thread, which sleeps for packets (from the port) or
/// for buffers (the frontend's events).
///
/// A kick costs an `unpark` only while the thread sleeps for what the kick
/// brings: packets delivered to a busy RX thread, or to one waiting for
/// buffers, just set a flag. No kick is lost: the kicker stores its flag
/// then reads `sleeping`, the thread stores `sleeping` then reads the
/// flags (all `SeqCst`), so one of them sees the other; `park`'s token
/// keeps an `unpark` that lands before the `park`.
#[derive(Debug, Default)]
pub(crate) struct Kick {
    packets: AtomicBool,
    event: AtomicBool,
    /// What the thread sleeps for: [`Kick::AWAKE`], [`Kick::FOR_ANY`] or
    /// [`Kick::FOR_EVENT`].
    sleeping: AtomicU8,
    thread: OnceLock<Thread>,
}

impl Kick {
    const AWAKE: u8 = 0;
    const FOR_ANY: u8 = 1;
    const FOR_EVENT: u8 = 2;

    /// Makes the calling thread the one kicks wake (once, before it waits).
    pub(crate) fn register(&self) {
        let _ = self.thread.set(std::thread::current());
    }

    /// Packets were queued: wakes the thread if it sleeps for them.
    pub(crate) fn kick(&self) {
        if self.packets.swap(true, Ordering::SeqCst) {
            return; // not consumed yet: the thread will see it
        }
        if self.sleeping.load(Ordering::SeqCst) == Self::FOR_ANY {
            self.unpark();
        }
    }

    /// An event from the frontend, or a state change (stop, carrier):
    /// wakes the thread whatever it sleeps for.
    pub(crate) fn kick_event(&self) {
        if self.event.swap(true, Ordering::SeqCst) {
            return;
        }
        if self.sleeping.load(Ordering::SeqCst) != Self::AWAKE {
            self.unpark();
        }
    }

    fn unpark(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// Sleeps up to `timeout` unless kicked since the last wait (or
    /// unparked otherwise); consumes the kicks.
    pub(crate) fn wait(&self, timeout: Duration) {
        self.sleep(Self::FOR_ANY, timeout);
    }

    /// Like [`Kick::wait`], but only events wake it (packets are no reason
    /// to look again while the frontend has no buffers for them).
    pub(crate) fn wait_event(&self, timeout: Duration) {
        self.sleep(Self::FOR_EVENT, timeout);
    }

    fn sleep(&self, mode: u8, timeout: Duration) {
        let kicked = |k: &Self| {
            k.event.load(Ordering::SeqCst)
                || (mode == Self::FOR_ANY && k.packets.load(Ordering::SeqCst))
        };
        if !kicked(self) {
            self.sleeping.store(mode, Ordering::SeqCst);
            if !kicked(self) {
                std::thread::park_timeout(timeout);
            }
            self.sleeping.store(Self::AWAKE, Ordering::SeqCst);
        }
        // The caller looks at the queue and the ring after this: what the
        // kicks announced is found there.
        self.event.store(false, Ordering::SeqCst);
        if mode == Self::FOR_ANY {
            self.packets.store(false, Ordering::SeqCst);
        }
    }
}

/// One queue's RX side: the RX ring and the backlog under the hand-over
/// protocol ([`crate::handover`]: whoever finds the ring free writes; the RX
/// thread or a thread delivering packets, [`Shared::hand_over`]), and the
/// RX thread's kick.
#[derive(Debug)]
pub(crate) struct RxQueue {
    rx: Handover<RxFill, Backlog>,
    pub(crate) kick: Kick,
}

impl RxQueue {
    pub(crate) fn new(fill: RxFill) -> Self {
        RxQueue {
            rx: Handover::new(fill, Backlog::default()),
            kick: Kick::default(),
        }
    }
}

/// What filling a queue's RX ring takes.
pub(crate) struct RxFill {
    pub dom: Domain,
    pub fe: DomId,
    pub ring: RxRing,
    pub port: EvtPort,
    /// Packets written to the ring so far (by any thread).
    pub written: u64,
}

impl std::fmt::Debug for RxFill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RxFill")
            .field("fe", &self.fe)
            .field("port", &self.port)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

/// Packets waiting for the RX thread, and the bytes of frame they hold
/// (bounded both ways: [`Shared::rx_queue_len`], [`Shared::rx_queue_bytes`]).
#[derive(Debug, Default)]
struct Backlog {
    pkts: VecDeque<Packet>,
    bytes: usize,
}

impl Queue for Backlog {
    fn is_empty(&self) -> bool {
        self.pkts.is_empty()
    }
}

impl Backlog {
    fn push(&mut self, p: Packet) {
        self.bytes += p.data.len();
        self.pkts.push_back(p);
    }

    fn pop(&mut self) -> Option<Packet> {
        let p = self.pkts.pop_front()?;
        self.bytes -= p.data.len();
        Some(p)
    }

    /// Drops everything; returns how many packets.
    fn clear(&mut self) -> usize {
        let n = self.pkts.len();
        self.pkts.clear();
        self.bytes = 0;
        n
    }
}

/// What the frontend accepts on RX.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrontFeatures {
    pub offloads: Offloads,
    pub rx_notify: bool,
    pub mcast_filter: bool,
}

/// The vif of one connection, shared by its threads and its port.
#[derive(Debug)]
pub(crate) struct Shared {
    pub queues: Vec<Arc<RxQueue>>,
    pub rx_queue_len: usize,
    pub rx_queue_bytes: usize,
    pub fe: FrontFeatures,
    pub max_mcast: usize,
    pub mcast: Mutex<Vec<[u8; 6]>>,
    pub broken: AtomicBool,
    pub fault: Mutex<Option<String>>,
    pub carrier: AtomicBool,
    /// Serialises carrier changes with [`Shared::disable`].
    pub link: Mutex<()>,
    pub stop: AtomicBool,
    pub stats: Arc<Counters>,
}

impl Shared {
    /// A fatal frontend fault: this vif stops (carrier off, Broken); other
    /// vifs are unaffected.
    pub(crate) fn disable(&self, why: String) {
        // Carrier first: whoever sees `broken` sees the carrier off; the
        // link lock orders this against a concurrent carrier-on.
        let link = lock(&self.link);
        self.carrier.store(false, Ordering::Release);
        self.stats.carrier.store(false, Ordering::Release);
        if !self.broken.swap(true, Ordering::AcqRel) {
            self.stats.add(&self.stats.fatal, 1);
            self.stats.broken.store(true, Ordering::Release);
            *lock(&self.fault) = Some(why);
        }
        drop(link);
        for q in &self.queues {
            let n = q.rx.backlog().clear();
            self.stats.add(&self.stats.rx_dropped, n as u64);
            q.kick.kick_event();
        }
    }

    fn set_carrier(&self, up: bool) {
        let _link = lock(&self.link);
        if up && self.is_broken() {
            return; // a disabled vif stays down
        }
        self.carrier.store(up, Ordering::Release);
        self.stats.carrier.store(up, Ordering::Release);
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Largest frame the frontend takes without GSO.
    fn max_len(&self) -> usize {
        if self.fe.offloads.sg { MAX_FRAME } else { PAGE }
    }
}

impl Shared {
    /// Whether the vif takes packets at all now.
    fn accepting(&self) -> bool {
        !self.is_broken()
            && self.carrier.load(Ordering::Acquire)
            && !self.stop.load(Ordering::Acquire)
    }

    /// The queue a packet goes to and the packets it becomes for this
    /// frontend, or `None` if it is dropped or filtered (counted).
    fn admit(&self, pkt: Packet) -> Option<(usize, packet::Adapted)> {
        let st = &self.stats;
        if pkt.data.len() < packet::ETH_HLEN {
            st.add(&st.rx_dropped, 1);
            return None;
        }
        if self.fe.mcast_filter
            && let Some(d) = pkt.dst_mac()
            && d[0] & 1 == 1
            && d != [0xFF; 6]
            && !lock(&self.mcast).contains(&d)
        {
            st.add(&st.rx_filtered, 1);
            return None;
        }
        let qi = match self.queues.len() {
            1 => 0,
            n => (packet::flow_hash(&pkt.data) as usize) % n,
        };
        let pkts = packet::adapt(pkt, &self.fe.offloads, self.max_len());
        if pkts.is_empty() {
            st.add(&st.rx_dropped, 1);
            return None;
        }
        Some((qi, pkts))
    }

    /// Appends packets to a backlog (dropping, and counting, what does
    /// not fit); returns how many were dropped. Wakes nobody.
    fn enqueue(&self, b: &mut Backlog, pkts: impl IntoIterator<Item = Packet>) -> usize {
        let mut dropped = 0;
        for p in pkts {
            if b.pkts.len() >= self.rx_queue_len
                || b.bytes + p.data.len() > self.rx_queue_bytes.max(p.data.len())
            {
                dropped += 1;
            } else {
                b.push(p);
            }
        }
        if dropped > 0 {
            self.stats.add(&self.stats.rx_dropped, dropped as u64);
        }
        dropped
    }
}

impl Shared {
    /// Hands packets for queue `qi` on, in order, under the hand-over
    /// protocol ([`crate::handover`]): queued, then, if the ring is free,
    /// written by this thread (the RX thread is neither woken nor switched
    /// to) from the backlog's head while the packets are small (up to
    /// [`DIRECT_MAX`]): its own, and what other threads queued while it held
    /// the ring, up to [`BATCH`] of theirs. The
    /// RX thread is kicked for what deliverers leave: a large packet, a head
    /// packet waiting for buffers, or a backlog longer than the budget.
    /// Returns how many were dropped.
    ///
    /// A deliverer never waits for the ring, and a hostile frontend's ring
    /// costs its own vif only (a fault disables it; the work is bounded by
    /// the ring's size and the budget).
    fn hand_over(&self, qi: usize, pkts: Vec<Packet>) -> usize {
        let q = &self.queues[qi];
        let st = &self.stats;
        let mut dropped = 0;
        let mut budget = pkts.len() + BATCH;
        let kick = q.rx.deliver(
            |b| dropped = self.enqueue(b, pkts),
            |ring, backlog| {
                let Some(f) = ring else {
                    // The RX thread has ended: the vif is going.
                    let n = lock_backlog(backlog).clear();
                    st.add(&st.rx_dropped, n as u64);
                    return Next::Stop;
                };
                if budget == 0 {
                    return Next::Kick;
                }
                match self.fill_from_backlog(backlog, f, budget, DIRECT_MAX) {
                    Backlogged::Filled(n) => {
                        st.add(&st.rx_direct, n as u64);
                        budget = budget.saturating_sub(n);
                        Next::Look
                    }
                    Backlogged::Empty => Next::Look,
                    Backlogged::Short { .. } | Backlogged::Over => Next::Kick,
                    Backlogged::Broken => Next::Stop,
                }
            },
        );
        if kick {
            q.kick.kick();
        }
        dropped
    }

    /// Writes packets from a queue's backlog into its ring `f` (held by
    /// the caller): those that fit in the posted buffers, at most `max`,
    /// up to the first longer than `max_len` ([`Backlogged::Over`] if that
    /// one is the head).
    fn fill_from_backlog(
        &self,
        backlog: &BacklogLock<Backlog>,
        f: &mut RxFill,
        max: usize,
        max_len: usize,
    ) -> Backlogged {
        let avail = match f.ring.unconsumed_requests() {
            Ok(n) => n,
            Err(e) => {
                self.disable(format!("RX ring: {e}"));
                return Backlogged::Broken;
            }
        };
        let mut batch = Vec::new();
        let mut short = None;
        let mut long = false;
        {
            let mut b = lock_backlog(backlog);
            let mut used = 0;
            while batch.len() < max {
                let Some(p) = b.pkts.front() else { break };
                if p.data.len() > max_len {
                    long = true;
                    break;
                }
                let n = rx_slots(p);
                if used + n > avail {
                    short = Some(used + n - avail);
                    break;
                }
                used += n;
                batch.extend(b.pop());
            }
        }
        if !batch.is_empty() {
            f.fill(self, &batch);
            return Backlogged::Filled(batch.len());
        }
        if long {
            return Backlogged::Over;
        }
        match short {
            Some(more) => Backlogged::Short {
                avail,
                more,
                written: f.written,
            },
            None => Backlogged::Empty,
        }
    }
}

impl PacketSink for Shared {
    fn deliver(&self, pkt: Packet) -> bool {
        if !self.accepting() {
            self.stats.add(&self.stats.rx_dropped, 1);
            return false;
        }
        let Some((qi, pkts)) = self.admit(pkt) else {
            return false;
        };
        self.hand_over(qi, pkts.into_iter().collect()) == 0
    }

    /// One hand-over (one ring hold, at most one wake-up) per queue for
    /// the whole batch.
    fn deliver_batch(&self, pkts: &mut Vec<Packet>) -> usize {
        if !self.accepting() {
            let n = pkts.len();
            pkts.clear();
            self.stats.add(&self.stats.rx_dropped, n as u64);
            return n;
        }
        let mut dropped = 0;
        let mut per_queue: Vec<Vec<Packet>> = vec![Vec::new(); self.queues.len()];
        for p in pkts.drain(..) {
            match self.admit(p) {
                Some((qi, a)) => per_queue[qi].extend(a),
                None => dropped += 1,
            }
        }
        for (qi, run) in per_queue.into_iter().enumerate() {
            if !run.is_empty() {
                dropped += self.hand_over(qi, run);
            }
        }
        dropped
    }
}

/// Parameters of a TX thread.
pub(crate) struct TxWorker {
    pub dom: Domain,
    pub fe: DomId,
    pub ring: TxRing,
    pub port: EvtPort,
    pub waiter: PortWaiter,
    /// With one event channel: the RX thread to pass events on to.
    pub forward: Option<Arc<RxQueue>>,
    pub shared: Arc<Shared>,
    pub netport: Arc<dyn Port>,
    pub credit: Credit,
    pub lim: TxLimits,
}

impl TxWorker {
    pub(crate) fn run(mut self) {
        let mut pending: VecDeque<TxPacket> = VecDeque::new();
        let mut reqs: Vec<TxRequest> = Vec::new();
        let mut idle_since: Option<Instant> = None;
        let mut window = PollWindow::new(POLL_BASE, POLL_MAX);
        let mut credit_wait: Option<Duration> = None;
        while !self.shared.stop.load(Ordering::Acquire) && !self.shared.is_broken() {
            if self.waiter.try_take()
                && let Some(q) = &self.forward
            {
                q.kick.kick_event();
            }
            // New requests, once everything parsed before is done.
            let mut took = 0;
            if pending.is_empty() {
                match self.ring.unconsumed_requests() {
                    Ok(0) => {}
                    Ok(n) => {
                        reqs.clear();
                        if let Err(e) = self.ring.drain_requests(n, |r| reqs.push(r)) {
                            self.shared.disable(format!("TX ring: {e}"));
                            break;
                        }
                        took = reqs.len();
                        let mut at = 0;
                        while at < reqs.len() {
                            match tx::parse(&reqs[at..], &self.lim) {
                                Ok(p) => {
                                    at += p.rsps.len();
                                    pending.push_back(p);
                                }
                                Err(why) => {
                                    self.shared.disable(why);
                                    return;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        self.shared.disable(format!("TX ring: {e}"));
                        break;
                    }
                }
            }
            // Packets within the credit, in ring order.
            let mut batch = Vec::new();
            credit_wait = None;
            while batch.len() < BATCH {
                let Some(p) = pending.front() else { break };
                if p.kind == Kind::Data
                    && let Err(wait) = self.credit.take(p.len)
                {
                    self.shared.stats.add(&self.shared.stats.credit_waits, 1);
                    credit_wait = Some(wait);
                    break;
                }
                batch.extend(pending.pop_front());
            }
            if !batch.is_empty() {
                self.process(batch);
                idle_since = None;
                continue;
            }
            if took > 0 {
                continue;
            }
            if let Some(w) = credit_wait {
                let _ = self.waiter.wait(Duration::ZERO, w.min(MAX_SLEEP));
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            if window.step(since.elapsed()) {
                continue;
            }
            idle_since = None;
            match self.ring.final_check_for_requests() {
                Ok(true) => {}
                Ok(false) => match self.waiter.wait(Duration::ZERO, MAX_SLEEP) {
                    Ok(event) => {
                        if event && let Some(q) = &self.forward {
                            q.kick.kick_event();
                        }
                        let work = self.ring.unconsumed_requests().is_ok_and(|n| n > 0);
                        window.slept(since.elapsed(), work);
                    }
                    Err(_) => break, // the frontend domain is gone
                },
                Err(e) => {
                    self.shared.disable(format!("TX ring: {e}"));
                    break;
                }
            }
        }
        let _ = credit_wait;
    }

    /// Copies, answers and forwards one batch.
    fn process(&mut self, mut batch: Vec<TxPacket>) {
        let st = self.shared.stats.clone();
        // Multicast updates and data buffers.
        let mut bufs: Vec<Option<BytesMut>> = Vec::with_capacity(batch.len());
        // Small packets share one allocation of at most BUF_CHUNK bytes
        // (each packet keeps its chunk alive).
        let mut chunk = BytesMut::new();
        let mut left: usize = batch
            .iter()
            .filter(|p| p.kind == Kind::Data)
            .map(|p| p.len)
            .sum();
        for p in &mut batch {
            match p.kind {
                Kind::Data => {
                    if p.len > chunk.len() {
                        chunk = BytesMut::zeroed(p.len.max(left.min(BUF_CHUNK)));
                    }
                    left -= p.len;
                    bufs.push(Some(chunk.split_to(p.len)));
                    continue;
                }
                Kind::Mcast(add, addr) => {
                    let mut m = lock(&self.shared.mcast);
                    let ok = if add {
                        m.contains(&addr) || {
                            let room = m.len() < self.shared.max_mcast;
                            if room {
                                m.push(addr);
                            }
                            room
                        }
                    } else {
                        m.retain(|a| *a != addr);
                        true
                    };
                    if !ok {
                        p.fail(NETIF_RSP_ERROR); // NB11
                    }
                }
                Kind::Drop(_) => {}
            }
            bufs.push(None);
        }
        // One grant-copy batch for every fragment of every packet.
        let mut owner = Vec::new();
        let statuses: Vec<GntStatus> = {
            let mut ops = Vec::new();
            for (i, (p, b)) in batch.iter().zip(bufs.iter_mut()).enumerate() {
                let Some(b) = b else { continue };
                let mut rest: &mut [u8] = &mut b[..];
                for f in &p.frags {
                    let (dst, tail) = std::mem::take(&mut rest).split_at_mut(usize::from(f.len));
                    rest = tail;
                    ops.push(CopyOp::new(
                        CopySrc::Gref {
                            domid: self.fe,
                            gref: f.gref,
                            offset: f.offset,
                        },
                        CopyDst::Buf(dst),
                        f.len,
                    ));
                    owner.push(i);
                }
            }
            if !ops.is_empty() {
                self.dom.grant_copy(&mut ops);
            }
            ops.iter().map(|o| o.status).collect()
        };
        for (i, s) in owner.iter().zip(&statuses) {
            if *s != GntStatus::Okay && bufs[*i].is_some() {
                // NB16: a failed fragment fails the whole packet.
                bufs[*i] = None;
                batch[*i].fail(NETIF_RSP_ERROR);
                batch[*i].kind = Kind::Drop(NETIF_RSP_ERROR);
            }
        }
        // Answer every consumed slot, in ring order.
        let mut errors = 0u64;
        for p in &batch {
            for (r, d) in p.rsps.iter().zip(&p.data) {
                if *d && r.status != NETIF_RSP_OKAY {
                    errors += 1;
                }
                if let Err(e) = self.ring.push_response(r) {
                    self.shared.disable(format!("TX ring: {e}"));
                    return;
                }
            }
        }
        st.add(&st.tx_errors, errors);
        match self.ring.publish_and_check_notify() {
            Ok(n) if n.is_needed() => {
                let _ = self.dom.events().send(self.port);
            }
            Ok(_) => {}
            Err(e) => {
                self.shared.disable(format!("TX ring: {e}"));
                return;
            }
        }
        // Hand the packets on, in one batch.
        let offl = self.netport.offloads();
        let (mut packets, mut bytes, mut dropped) = (0, 0, 0);
        let mut out = Vec::with_capacity(batch.len());
        for (p, b) in batch.iter().zip(bufs) {
            match (p.kind, b) {
                (Kind::Data, Some(b)) => {
                    packets += 1;
                    bytes += p.len as u64;
                    let pkt = Packet {
                        data: b.freeze(),
                        csum_blank: p.csum_blank,
                        data_validated: p.data_validated || p.csum_blank,
                        gso: p.gso,
                    };
                    out.extend(packet::adapt(pkt, &offl, usize::MAX));
                }
                (Kind::Data | Kind::Drop(_), _) => dropped += 1,
                (Kind::Mcast(..), _) => {}
            }
        }
        st.add(&st.tx_packets, packets);
        st.add(&st.tx_bytes, bytes);
        st.add(&st.tx_dropped, dropped);
        let refused = self.netport.transmit_batch(&mut out);
        st.add(&st.tx_port_dropped, refused as u64);
    }
}

/// Parameters of an RX thread.
pub(crate) struct RxWorker {
    pub q: Arc<RxQueue>,
    /// With split event channels: the RX port's waiter (its events unpark
    /// this thread directly).
    pub waiter: Option<PortWaiter>,
    pub shared: Arc<Shared>,
    pub stall_timeout: Duration,
}

/// RX slots a packet needs: its data pages, plus the GSO extra.
fn rx_slots(p: &Packet) -> u32 {
    (p.data.len().div_ceil(PAGE).max(1) + usize::from(p.gso.is_some())) as u32
}

/// What a look at a queue's backlog found.
enum Backlogged {
    /// Nothing queued.
    Empty,
    /// This many packets were written to the ring.
    Filled(usize),
    /// The head packet needs `more` slots than the `avail` posted; the
    /// ring's [`RxFill::written`] count then.
    Short { avail: u32, more: u32, written: u64 },
    /// Packets are queued, but the caller's budget is spent, or the head
    /// is longer than it writes.
    Over,
    /// The ring is broken (the vif is disabled), or gone.
    Broken,
}

impl RxWorker {
    /// Slots the largest packet can need (the carrier comes back once the
    /// frontend posts that many).
    fn max_slots(&self) -> u32 {
        if self.shared.fe.offloads.sg {
            (MAX_FRAME.div_ceil(PAGE) + 1) as u32
        } else {
            2
        }
    }

    /// Runs `f` on the ring (`None` once it is gone).
    fn with_ring<T>(&self, f: impl FnOnce(&mut RxFill) -> T) -> Option<T> {
        self.q.rx.ring().as_mut().map(f)
    }

    pub(crate) fn run(self) {
        self.serve();
        // Unmap the ring now, not when the last holder of the vif goes.
        *self.q.rx.ring() = None;
    }

    fn serve(&self) {
        let sleep = if self.shared.fe.rx_notify {
            MAX_SLEEP
        } else {
            Duration::from_millis(1) // the frontend never notifies: poll
        };
        self.q.kick.register();
        if let Some(w) = &self.waiter {
            w.register();
        }
        // Since when the head packet waits for buffers, and the ring's
        // written count then (a deliverer's progress restarts the clock).
        let mut stalled_since: Option<(Instant, u64)> = None;
        let mut idle_since: Option<Instant> = None;
        let mut window = PollWindow::new(POLL_BASE, POLL_MAX);
        while !self.shared.stop.load(Ordering::Acquire) && !self.shared.is_broken() {
            if let Some(w) = &self.waiter {
                // Consumed here; what the event announced is on the ring.
                let _ = w.try_take();
            }
            if !self.shared.carrier.load(Ordering::Acquire) {
                // Stalled: back up once the frontend can take any packet.
                let need = self.max_slots();
                let up = self.with_ring(|f| {
                    let need = need.min(f.ring.nr_ents());
                    match f.ring.unconsumed_requests() {
                        Ok(avail) if avail >= need => Ok(true),
                        Ok(_) => f.ring.final_check_for_requests_at_least(need),
                        Err(e) => Err(e),
                    }
                });
                match up {
                    Some(Ok(true)) => {
                        self.shared.set_carrier(true);
                        stalled_since = None;
                    }
                    Some(Ok(false)) => self.q.kick.wait_event(sleep),
                    Some(Err(e)) => self.shared.disable(format!("RX ring: {e}")),
                    None => break,
                }
                continue;
            }
            let (avail, more, written) = match self.drain_backlog() {
                Backlogged::Filled(_) => {
                    stalled_since = None;
                    idle_since = None;
                    continue;
                }
                Backlogged::Broken => break,
                Backlogged::Short {
                    avail,
                    more,
                    written,
                } => (avail, more, written),
                Backlogged::Empty | Backlogged::Over => {
                    stalled_since = None;
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if window.step(since.elapsed()) {
                        continue;
                    }
                    // A deliverer that found the ring held by this thread
                    // left its packets to it without a kick: look once more
                    // now that it is let go.
                    if !self.q.rx.backlog().is_empty() {
                        continue;
                    }
                    idle_since = None;
                    self.q.kick.wait(sleep);
                    window.slept(since.elapsed(), !self.q.rx.backlog().is_empty());
                    continue;
                }
            };
            // NB13/NB14: the head packet waits for buffers.
            idle_since = None;
            let since = match stalled_since {
                Some((t, w)) if w == written => t,
                _ => stalled_since.insert((Instant::now(), written)).0,
            };
            let waited = since.elapsed();
            if waited >= self.stall_timeout {
                self.stall();
                continue;
            }
            if window.step(waited) {
                // The frontend reposts as it reads: look again soon.
                continue;
            }
            // Woken when the frontend publishes the last buffer the head
            // packet needs (the ones already posted are no reason to look
            // again: that would spin).
            match self.with_ring(|f| f.ring.final_check_for_requests_at_least(avail + more)) {
                Some(Ok(true)) => continue,
                Some(Ok(false)) => {}
                Some(Err(e)) => {
                    self.shared.disable(format!("RX ring: {e}"));
                    break;
                }
                None => break,
            }
            let left = self.stall_timeout.saturating_sub(since.elapsed());
            self.q
                .kick
                .wait_event(sleep.min(left).max(Duration::from_micros(100)));
            let posted = self
                .with_ring(|f| {
                    f.ring
                        .unconsumed_requests()
                        .is_ok_and(|a| a >= avail + more)
                })
                .unwrap_or(false);
            window.slept(since.elapsed(), posted);
        }
    }

    /// Fills the ring from the backlog, at most a batch.
    fn drain_backlog(&self) -> Backlogged {
        if self.q.rx.backlog().is_empty() {
            return Backlogged::Empty; // without taking the ring from a deliverer
        }
        let mut g = self.q.rx.ring();
        match g.as_mut() {
            Some(f) => {
                self.shared
                    .fill_from_backlog(self.q.rx.backlog_lock(), f, BATCH, usize::MAX)
            }
            None => Backlogged::Broken,
        }
    }

    /// Carrier off: drop the backlog; new packets are dropped until the
    /// frontend posts buffers again.
    fn stall(&self) {
        let st = &self.shared.stats;
        st.add(&st.rx_stalls, 1);
        self.shared.set_carrier(false);
        for q in &self.shared.queues {
            let n = q.rx.backlog().clear();
            st.add(&st.rx_dropped, n as u64);
        }
    }
}

impl RxFill {
    /// Writes `batch` into the posted buffers: one grant-copy batch, then
    /// every response in its request's slot.
    fn fill(&mut self, shared: &Shared, batch: &[Packet]) {
        let st = &shared.stats;
        let mut rsps: Vec<RxResponse> = Vec::new();
        // (index in rsps, op) pairs.
        let mut copy_of: Vec<usize> = Vec::new();
        let mut reqs: Vec<RxRequest> = Vec::new();
        let statuses: Vec<GntStatus> = {
            let mut ops = Vec::new();
            for p in batch {
                let n = rx_slots(p);
                reqs.clear();
                match self.ring.drain_requests(n, |r| reqs.push(r)) {
                    Ok(k) if k == n => {}
                    Ok(_) => {
                        shared.disable("RX requests vanished after they were counted".into());
                        return;
                    }
                    Err(e) => {
                        shared.disable(format!("RX ring: {e}"));
                        return;
                    }
                }
                let mut flags = 0;
                if p.csum_blank {
                    flags |= NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED;
                } else if p.data_validated {
                    flags |= NETRXF_DATA_VALIDATED;
                }
                let n_chunks = p.data.len().div_ceil(PAGE);
                let mut r = reqs.iter();
                for (k, c) in p.data.chunks(PAGE).enumerate() {
                    let Some(req) = r.next() else { break };
                    let mut f = if k == 0 { flags } else { 0 };
                    if k + 1 < n_chunks {
                        f |= NETRXF_MORE_DATA;
                    }
                    if k == 0 && p.gso.is_some() {
                        f |= NETRXF_EXTRA_INFO;
                    }
                    copy_of.push(rsps.len());
                    rsps.push(RxResponse {
                        id: req.id,
                        offset: 0,
                        flags: f,
                        status: c.len() as i16,
                    });
                    ops.push(CopyOp::new(
                        CopySrc::Buf(c),
                        CopyDst::Gref {
                            domid: self.fe,
                            gref: req.gref,
                            offset: 0,
                        },
                        c.len() as u16,
                    ));
                    if k == 0
                        && let Some(g) = p.gso
                    {
                        // The extra goes in the next slot; that request's
                        // buffer stays unused (the frontend re-posts it).
                        let _ = r.next();
                        let e = ExtraInfo::gso(ExtraGso {
                            size: g.size,
                            type_: match g.kind {
                                GsoKind::TcpV4 => XEN_NETIF_GSO_TYPE_TCPV4,
                                GsoKind::TcpV6 => XEN_NETIF_GSO_TYPE_TCPV6,
                            },
                            pad: 0,
                            features: 0,
                        });
                        rsps.push(bytemuck::cast(e));
                    }
                }
            }
            self.dom.grant_copy(&mut ops);
            let bytes: usize = batch.iter().map(|p| p.data.len()).sum();
            st.add(&st.rx_packets, batch.len() as u64);
            st.add(&st.rx_bytes, bytes as u64);
            self.written += batch.len() as u64;
            ops.iter().map(|o| o.status).collect()
        };
        for (at, s) in copy_of.iter().zip(&statuses) {
            if *s != GntStatus::Okay {
                rsps[*at].status = s.as_i16().min(-1);
                st.add(&st.rx_copy_errors, 1);
            }
        }
        for r in &rsps {
            if let Err(e) = self.ring.push_response(r) {
                shared.disable(format!("RX ring: {e}"));
                return;
            }
        }
        match self.ring.publish_and_check_notify() {
            Ok(n) if n.is_needed() => {
                let _ = self.dom.events().send(self.port);
            }
            Ok(_) => {}
            Err(e) => shared.disable(format!("RX ring: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread waiting for the frontend's buffers is not woken by packets
    /// (only by an event); one waiting for packets is woken by either; a
    /// kick that lands before the wait is not lost. Timeouts are failure
    /// guards (long), never expected.
    #[test]
    fn kick_wakes_only_for_what_the_thread_waits_for() {
        const LONG: Duration = Duration::from_secs(10);
        let k = Arc::new(Kick::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let t = {
            let k = k.clone();
            std::thread::spawn(move || {
                k.register();
                tx.send(()).unwrap();
                let t0 = Instant::now();
                k.wait_event(LONG);
                k.wait(LONG);
                t0.elapsed()
            })
        };
        rx.recv().unwrap();
        // Let the thread reach its event wait, then kick it with packets
        // only: it must sleep on.
        std::thread::sleep(Duration::from_millis(50));
        k.kick();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!t.is_finished());
        k.kick_event();
        // The packet kick is still pending: the next `wait` returns at once.
        let total = t.join().unwrap();
        assert!(total < LONG, "{total:?}");
    }
}
