//! One queue's worker: consume requests, map their data, drive the disk,
//! answer (`spec/blkif.md` §3).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pvio_abi::blkif::{BLKIF_RSP_ERROR, BLKIF_RSP_OKAY, Request, RequestSegment, Response};
use pvio_abi::{DomId, GrantRef, Port};
use pvio_blkdisk::{Completion, DiskOp, DiskOpKind, DiskQueue};
use pvio_hv::{Domain, MappedPages, Mapping, PollWindow, PortWaiter, poll_step};
use pvio_ring::BackRing;

use crate::StatsCell;
use crate::request::{self, Limits, Plan, SEGS_PER_INDIRECT_PAGE};

/// Longest wait for a disk completion before the ring is looked at again.
const DISK_WAIT: Duration = Duration::from_micros(20);

/// Requests taken per poll (bounded work per notification: R8).
const MAX_PER_POLL: u32 = 64;

/// The worker's polls before it sleeps ([`PollWindow`]), one for an idle
/// worker waiting for requests and one for a worker whose requests are all
/// on the disk: a completion interrupt taken on another CPU than the one
/// the sleeping worker last ran on must wake that (halted) CPU, which costs
/// a VM 15–20 µs, a quarter of an SSD's 4 KiB read; a polling worker gets
/// the completion at its next system call instead.
const POLL_BASE: Duration = Duration::from_micros(50);
const POLL_MAX: Duration = Duration::from_micros(500);

pub(crate) type Ring = BackRing<MappedPages, Request, Response>;

/// Persistent grants of one queue: mapped once, kept, evicted least recently
/// used first when over the cap (`spec/blkif.md` §5; BB10).
struct Persistent {
    map: HashMap<u32, (Arc<Mapping>, u64)>,
    cap: usize,
    tick: u64,
}

impl Persistent {
    fn get(
        &mut self,
        dom: &Domain,
        fe: DomId,
        gref: GrantRef,
        stats: &StatsCell,
    ) -> Option<Arc<Mapping>> {
        self.tick += 1;
        if let Some((m, used)) = self.map.get_mut(&gref.0) {
            *used = self.tick;
            return Some(m.clone());
        }
        if self.map.len() >= self.cap {
            // Evict the least recently used mapping no request is using.
            let victim = self
                .map
                .iter()
                .filter(|(_, (m, _))| Arc::strong_count(m) == 1)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(g, _)| *g);
            match victim {
                Some(g) => {
                    self.map.remove(&g);
                    stats.update(|s| s.persistent_evictions += 1);
                }
                None => return None, // all in use: map this one per request
            }
        }
        let m = Arc::new(dom.map(fe, gref).ok()?);
        self.map.insert(gref.0, (m.clone(), self.tick));
        Some(m)
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// A request being served: what to answer, and what it holds.
struct InFlight {
    id: u64,
    op: u8,
    /// A flush to issue after the write completes (flush-with-data).
    then_flush: bool,
    /// Per-request mappings and bounce frames, released on completion.
    _maps: Vec<Arc<Mapping>>,
    bounce: Vec<u32>,
}

pub(crate) struct Worker {
    pub(crate) dom: Domain,
    pub(crate) fe: DomId,
    pub(crate) ring: Ring,
    pub(crate) port: Port,
    pub(crate) waiter: PortWaiter,
    pub(crate) disk: Box<dyn DiskQueue>,
    pub(crate) lim: Limits,
    pub(crate) persistent: bool,
    pub(crate) max_persistent: usize,
    /// This connection is closing.
    pub(crate) stop: Arc<AtomicBool>,
    /// The whole backend is stopping ([`crate::Blkback::request_stop`]):
    /// seen at once, not when the control thread next looks.
    pub(crate) backend_stop: Arc<AtomicBool>,
    pub(crate) stats: Arc<StatsCell>,
}

impl Worker {
    /// Runs until told to stop (then finishes what is in flight) or the
    /// ring breaks. Returns the ring's fault, if any.
    pub(crate) fn run(mut self) -> Option<String> {
        let mut pers = Persistent {
            map: HashMap::new(),
            cap: self.max_persistent,
            tick: 0,
        };
        let mut inflight: Vec<Option<InFlight>> = Vec::new();
        let mut free_slots: Vec<usize> = Vec::new();
        let mut done = Vec::new();
        let mut reqs = Vec::new();
        let mut idle_since: Option<Instant> = None;
        let mut idle_poll = PollWindow::new(POLL_BASE, POLL_MAX);
        // Since when every request taken is on the disk, and whether the
        // disk poll of that wait has run out.
        let mut disk_since: Option<(Instant, bool)> = None;
        let mut disk_poll = PollWindow::new(POLL_BASE, POLL_MAX);
        let mut barrier_pending = false;
        let mut fault = None;
        loop {
            let live = inflight.iter().filter(|x| x.is_some()).count();
            // Completions first: answer them.
            let _ = self.disk.reap(0, &mut done);
            let mut answered = self.complete(&mut done, &mut inflight, &mut free_slots);
            if answered > 0
                && let Some((since, slept)) = disk_since.take()
                && slept
            {
                disk_poll.slept(since.elapsed(), true);
            }
            // A destroyed backend domain takes no new requests: its threads
            // only finish what the disk holds (a real one would be gone;
            // what it took now could only fail, its grants being unmapped,
            // instead of being replayed on the next backend: BF3).
            let stopping = self.stop.load(Ordering::Acquire)
                || self.backend_stop.load(Ordering::Acquire)
                || self.dom.is_destroyed();
            if (stopping || fault.is_some()) && live == 0 && answered == 0 {
                break;
            }
            // New requests, unless stopping, broken, or a barrier drains.
            let mut took = 0;
            let taking = !stopping && fault.is_none();
            if taking && !(barrier_pending && live > 0) {
                barrier_pending = false;
                let room = (self.disk.room() as u32).min(MAX_PER_POLL);
                reqs.clear();
                match self.ring.drain_requests(room, |r| reqs.push(r)) {
                    Ok(n) => took = n,
                    Err(e) => fault = Some(e.to_string()),
                }
                for r in reqs.drain(..) {
                    match self.start(&r, &mut pers, &mut inflight, &mut free_slots) {
                        Ok(barrier) => barrier_pending |= barrier,
                        Err(status) => {
                            self.respond(r.id, request::echo_op(&r), status);
                            answered += 1;
                        }
                    }
                }
                if took > 0
                    && let Err(e) = self.disk.submit()
                {
                    fault = Some(e.to_string());
                }
            }
            if answered > 0 {
                match self.ring.publish_and_check_notify() {
                    Ok(n) if n.is_needed() => {
                        let _ = self.dom.events().send(self.port);
                    }
                    Ok(_) => {}
                    Err(e) => fault = Some(e.to_string()),
                }
            }
            if took > 0 || answered > 0 {
                idle_since = None;
                disk_since = None;
                continue;
            }
            let live = inflight.iter().filter(|x| x.is_some()).count();
            if live > 0 {
                // The disk has work: poll for a completion (or a new request)
                // for the window, then wait for one, but not so long that new
                // requests sit on the ring meanwhile (the frontend does not
                // notify a worker that is not asleep).
                let (since, slept) = *disk_since.get_or_insert_with(|| (Instant::now(), false));
                if !slept {
                    // Requests behind a barrier wait for the disk anyway.
                    let watch_ring = taking && !barrier_pending;
                    if self.poll_disk(since, disk_poll.window(), watch_ring, &mut done) {
                        continue;
                    }
                    disk_since = Some((since, true));
                }
                let _ = self.disk.reap_timeout(1, DISK_WAIT, &mut done);
                continue;
            }
            // Idle: poll a little, then re-arm and sleep.
            let since = *idle_since.get_or_insert_with(Instant::now);
            if idle_poll.step(since.elapsed()) {
                continue;
            }
            match self.ring.final_check_for_requests() {
                Ok(true) => {}
                Ok(false) => {
                    let woke = self.waiter.wait(Duration::ZERO, Duration::from_millis(20));
                    idle_poll.slept(since.elapsed(), woke == Ok(true));
                }
                Err(e) => fault = Some(e.to_string()),
            }
            idle_since = None;
        }
        self.stats.update(|s| {
            s.persistent_grants = s.persistent_grants.saturating_sub(pers.len() as u64)
        });
        // Dropping `pers`, the ring and every mapping releases the grants.
        fault
    }

    /// Polls the disk's completions, and (if `watch_ring`) the ring for
    /// requests the disk has room for, until `window` after `since`. True
    /// if something came (completions are in `done`; a ring fault counts,
    /// for the caller to find).
    fn poll_disk(
        &mut self,
        since: Instant,
        window: Duration,
        watch_ring: bool,
        done: &mut Vec<Completion>,
    ) -> bool {
        // Each step's yield also lets the kernel post a completion.
        while poll_step(since.elapsed(), window) {
            if matches!(self.disk.reap(0, done), Ok(n) if n > 0) {
                return true;
            }
            if watch_ring && self.disk.room() > 0 && self.ring.unconsumed_requests() != Ok(0) {
                return true;
            }
        }
        false
    }

    fn respond(&mut self, id: u64, op: u8, status: i16) {
        // BB13: the response carries id, operation and status; its padding
        // is zero (explicit fields of the Pod type).
        let rsp = Response {
            id,
            operation: op,
            status,
            ..Default::default()
        };
        let _ = self.ring.push_response(&rsp);
        self.stats.update(|s| {
            s.requests += 1;
            if status != BLKIF_RSP_OKAY {
                s.errors += 1;
            }
        });
    }

    fn complete(
        &mut self,
        done: &mut Vec<Completion>,
        inflight: &mut [Option<InFlight>],
        free: &mut Vec<usize>,
    ) -> u32 {
        let mut answered = 0;
        for c in done.drain(..) {
            let slot = c.tag as usize;
            let Some(Some(f)) = inflight
                .get(slot)
                .map(|x| x.as_ref().map(|f| (f.then_flush, f.id, f.op)))
            else {
                continue;
            };
            let (then_flush, id, op) = f;
            if then_flush && c.result.is_ok() {
                // Flush-with-data: the write is done, now the flush.
                if let Some(Some(x)) = inflight.get_mut(slot) {
                    x.then_flush = false;
                }
                let flush = DiskOp {
                    tag: c.tag,
                    kind: DiskOpKind::Flush,
                    sector: 0,
                    segs: Vec::new(),
                };
                if self.disk.push(flush).is_ok() && self.disk.submit().is_ok() {
                    continue;
                }
            }
            let status = if c.result.is_ok() {
                BLKIF_RSP_OKAY
            } else {
                BLKIF_RSP_ERROR
            };
            if let Some(x) = inflight.get_mut(slot).and_then(Option::take) {
                self.dom.free_frames(&x.bounce);
            }
            free.push(slot);
            self.respond(id, op, status);
            answered += 1;
        }
        answered
    }

    /// Maps a request's data and queues its disk operation. `Ok(barrier)`.
    fn start(
        &mut self,
        req: &Request,
        pers: &mut Persistent,
        inflight: &mut Vec<Option<InFlight>>,
        free: &mut Vec<usize>,
    ) -> Result<bool, i16> {
        let plan = if req.operation == pvio_abi::blkif::BLKIF_OP_INDIRECT {
            let (write, n, pages) = request::indirect_pages(req, &self.lim)?;
            let segs = self.read_indirect(&pages, n)?;
            request::plan_indirect(req, &self.lim, write, &segs)?
        } else {
            request::plan(req, &self.lim)?
        };
        let slot = free.pop().unwrap_or_else(|| {
            inflight.push(None);
            inflight.len() - 1
        });
        let mut f = InFlight {
            id: req.id,
            op: request::echo_op(req),
            then_flush: false,
            _maps: Vec::new(),
            bounce: Vec::new(),
        };
        let (op, barrier) = match plan {
            Plan::Flush => (
                DiskOp {
                    tag: slot as u64,
                    kind: DiskOpKind::Flush,
                    sector: 0,
                    segs: Vec::new(),
                },
                false,
            ),
            Plan::Discard { sector, sectors } => (
                DiskOp {
                    tag: slot as u64,
                    kind: DiskOpKind::Discard { sectors },
                    sector,
                    segs: Vec::new(),
                },
                false,
            ),
            Plan::Rw {
                write,
                sector,
                segs,
                barrier,
                flush,
            } => {
                let mut dsegs = Vec::with_capacity(segs.len());
                for s in &segs {
                    match self.data_seg(s, write, pers, &mut f) {
                        Ok(seg) => dsegs.push(seg),
                        Err(e) => {
                            // BB8: a revoked grant fails the request; what was
                            // mapped so far is dropped with `f`.
                            self.dom.free_frames(&f.bounce);
                            free.push(slot);
                            return Err(e);
                        }
                    }
                }
                f.then_flush = flush || barrier;
                let kind = if write {
                    DiskOpKind::Write
                } else {
                    DiskOpKind::Read
                };
                (
                    DiskOp {
                        tag: slot as u64,
                        kind,
                        sector,
                        segs: dsegs,
                    },
                    barrier,
                )
            }
        };
        inflight[slot] = Some(f);
        if let Err((e, op)) = self.disk.push(op) {
            let _ = e;
            if let Some(x) = inflight[slot].take() {
                self.dom.free_frames(&x.bounce);
            }
            free.push(slot);
            drop(op);
            return Err(BLKIF_RSP_ERROR);
        }
        Ok(barrier)
    }

    /// The memory of one data segment: a persistent mapping, a per-request
    /// writable mapping (reads: the disk writes straight into the
    /// frontend's page), or a bounce frame filled by grant copy (writes of a
    /// page the frontend granted read-only).
    fn data_seg(
        &mut self,
        s: &request::Seg,
        write: bool,
        pers: &mut Persistent,
        f: &mut InFlight,
    ) -> Result<pvio_blkdisk::Seg, i16> {
        let offset = usize::from(s.first) * 512;
        let len = s.sectors() as usize * 512;
        if self.persistent
            && let Some(m) = pers.get(&self.dom, self.fe, s.gref, &self.stats)
        {
            self.stats
                .update(|st| st.persistent_grants = pers.len() as u64);
            return Ok(pvio_blkdisk::Seg {
                mem: m,
                offset,
                len,
            });
        }
        if !write {
            let m = Arc::new(self.dom.map(self.fe, s.gref).map_err(|_| BLKIF_RSP_ERROR)?);
            f._maps.push(m.clone());
            return Ok(pvio_blkdisk::Seg {
                mem: m,
                offset,
                len,
            });
        }
        let frame = self.dom.alloc_frames(1).ok_or(BLKIF_RSP_ERROR)?[0];
        f.bounce.push(frame);
        let mut op = [pvio_hv::CopyOp::new(
            pvio_hv::CopySrc::Gref {
                domid: self.fe,
                gref: s.gref,
                offset: offset as u16,
            },
            pvio_hv::CopyDst::Frame {
                frame,
                offset: offset as u16,
            },
            len as u16,
        )];
        if self.dom.grant_copy(&mut op) != 1 {
            return Err(BLKIF_RSP_ERROR);
        }
        let win = self.dom.frame(frame).ok_or(BLKIF_RSP_ERROR)?;
        Ok(pvio_blkdisk::Seg {
            mem: Arc::new(win),
            offset,
            len,
        })
    }

    /// Maps the descriptor pages read-only and copies the `n` segments out
    /// of them once (BB7: later rewrites by the frontend change nothing).
    fn read_indirect(&self, pages: &[GrantRef], n: usize) -> Result<Vec<RequestSegment>, i16> {
        let mut segs = vec![RequestSegment::default(); n];
        for (i, &g) in pages.iter().enumerate() {
            let m = self
                .dom
                .map_readonly(self.fe, g)
                .map_err(|_| BLKIF_RSP_ERROR)?;
            let from = i * SEGS_PER_INDIRECT_PAGE;
            let to = (from + SEGS_PER_INDIRECT_PAGE).min(n);
            let mut k = 0;
            m.read_records::<RequestSegment>(0, 8, to - from, |s| {
                segs[from + k] = s;
                k += 1;
            })
            .map_err(|_| BLKIF_RSP_ERROR)?;
        }
        Ok(segs)
    }
}
