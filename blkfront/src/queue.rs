//! One connection's rings: building requests from parts of the caller's
//! I/O, the shadow of every request on a ring, and checking each response
//! against it (BF1, BF2).

use std::sync::Arc;
use std::time::Duration;

use pvio_abi::blkif::{
    BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD,
    BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE,
    BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_OKAY, Request, RequestDiscard,
    RequestIndirect, RequestSegment, Response, SEGS_PER_INDIRECT_FRAME,
};
use pvio_abi::{DomId, GrantRef, PAGE_SIZE, Port};
use pvio_hv::{Domain, PortWaiter, Window};
use pvio_ring::FrontRing;
use pvio_shmem::{MemfdMem, SharedMem};

use crate::pool::Pool;
use crate::{BlkError, Stats};

type Ring = FrontRing<Window<Arc<MemfdMem>>, Request, Response>;

/// What a ring request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PartKind {
    Read,
    Write,
    Flush,
    Barrier,
    Discard(u64),
}

/// One ring request's worth of a caller's I/O: `len` bytes at `off` of op
/// `op`'s buffer, at `sector`. This is the shadow's durable half: after a
/// reconnect it is encoded again on the new ring (BF3).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Part {
    pub op: usize,
    pub queue: usize,
    pub kind: PartKind,
    pub sector: u64,
    pub off: usize,
    pub len: usize,
    /// Sent before, on a ring that went away.
    pub replay: bool,
}

/// A request on a ring: its part, the id it was sent with, the operation a
/// response must echo, and the pages and per-request grants it holds.
#[derive(Debug)]
pub(crate) struct Shadow {
    pub part: Part,
    id: u64,
    echo: u8,
    pub frames: Vec<u32>,
    pub temp: Vec<(GrantRef, u32)>,
}

pub(crate) enum PushError {
    /// No room on the ring or in the page pool now: try again after
    /// completions.
    Full(Part),
    /// The part cannot be sent.
    Failed(Part, BlkError),
}

struct Queue {
    ring: Ring,
    frames: Vec<u32>,
    grefs: Vec<GrantRef>,
    port: Port,
    waiter: Option<PortWaiter>,
    shadow: Vec<Option<Shadow>>,
    /// Generation of each shadow slot, in the top half of the ids sent, so a
    /// response for a slot's earlier use is caught.
    gens: Vec<u32>,
    free_ids: Vec<u32>,
    pushed: bool,
}

impl Queue {
    fn outstanding(&self) -> usize {
        self.shadow.len() - self.free_ids.len()
    }
}

/// The rings of one connection to a backend.
pub(crate) struct Connection {
    dom: Domain,
    backend: DomId,
    queues: Vec<Queue>,
    pub persistent: bool,
    /// Segments per indirect request (0: none).
    pub indirect: u32,
    handle: u16,
    rsps: Vec<Response>,
}

impl Connection {
    /// Allocates, initialises and grants `queues` rings of 2^`order` pages
    /// and an unbound event channel for each.
    pub(crate) fn setup(
        dom: &Domain,
        backend: DomId,
        queues: u32,
        order: u32,
        handle: u16,
    ) -> Result<Connection, BlkError> {
        let mut conn = Connection {
            dom: dom.clone(),
            backend,
            queues: Vec::new(),
            persistent: false,
            indirect: 0,
            handle,
            rsps: Vec::new(),
        };
        let n = 1u32 << order;
        for _ in 0..queues {
            let first = dom.alloc_contiguous(n as usize).ok_or(BlkError::NoMemory)?;
            let frames: Vec<u32> = (first..first + n).collect();
            let Some(region) = dom.frames(first, n) else {
                dom.free_frames(&frames);
                return Err(BlkError::NoMemory);
            };
            let ring = match Ring::init(region) {
                Ok(r) => r,
                Err(e) => {
                    dom.free_frames(&frames);
                    return Err(BlkError::Broken(format!("ring setup: {e}")));
                }
            };
            let q = Queue {
                shadow: (0..ring.nr_ents()).map(|_| None).collect(),
                gens: vec![0; ring.nr_ents() as usize],
                free_ids: (0..ring.nr_ents()).rev().collect(),
                ring,
                frames,
                grefs: Vec::new(),
                port: Port(0),
                waiter: None,
                pushed: false,
            };
            let grants: Result<Vec<GrantRef>, _> = q
                .frames
                .iter()
                .map(|&f| dom.grant_access(backend, f, false))
                .collect();
            // Pushed first so teardown releases whatever was set up.
            conn.queues.push(q);
            let q = conn.queues.last_mut().ok_or(BlkError::NoMemory)?;
            q.grefs = grants.map_err(|e| BlkError::Grant(e.to_string()))?;
            q.port = dom
                .events()
                .alloc_unbound(backend)
                .map_err(|e| BlkError::Grant(format!("event channel: {e}")))?;
            q.waiter = Some(
                dom.port_waiter(q.port)
                    .map_err(|e| BlkError::Grant(format!("event channel: {e}")))?,
            );
        }
        Ok(conn)
    }

    /// Each queue's ring grants and event channel, for the store keys.
    pub(crate) fn keys(&self) -> Vec<(Vec<GrantRef>, Port)> {
        self.queues
            .iter()
            .map(|q| (q.grefs.clone(), q.port))
            .collect()
    }

    /// Requests on the rings.
    pub(crate) fn outstanding(&self) -> usize {
        self.queues.iter().map(Queue::outstanding).sum()
    }

    /// Encodes `part` (whose slice of the caller's buffer is `data`) and puts
    /// it on its queue's ring (not yet published).
    pub(crate) fn push(
        &mut self,
        part: Part,
        data: &[u8],
        pool: &mut Pool,
        stats: &mut Stats,
    ) -> Result<(), PushError> {
        let nq = self.queues.len();
        let outstanding = self.outstanding();
        let q = &mut self.queues[part.queue % nq];
        if q.ring.is_full() || q.free_ids.is_empty() {
            return Err(PushError::Full(part));
        }
        let (nsegs, nind) = match part.kind {
            PartKind::Read | PartKind::Write => {
                let nsegs = part.len.div_ceil(PAGE_SIZE);
                let nind = if nsegs > BLKIF_MAX_SEGMENTS_PER_REQUEST {
                    nsegs.div_ceil(SEGS_PER_INDIRECT_FRAME)
                } else {
                    0
                };
                (nsegs, nind)
            }
            _ => (0, 0),
        };
        if nind > BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST
            || (nind > 0 && nsegs > self.indirect as usize)
        {
            return Err(PushError::Failed(
                part,
                BlkError::Invalid("request larger than the negotiated segments"),
            ));
        }
        let Some(frames) = pool.take(nsegs + nind) else {
            if outstanding == 0 {
                // Nothing will free pages: the pool is exhausted for good
                // (pages quarantined by a backend that keeps them).
                return Err(PushError::Failed(part, BlkError::NoMemory));
            }
            return Err(PushError::Full(part));
        };
        let mut temp = Vec::new();
        let req = match self.encode(&part, data, &frames, nsegs, pool, &mut temp) {
            Ok(r) => r,
            Err(e) => {
                pool.release(&frames, &mut temp);
                return Err(PushError::Failed(part, e));
            }
        };
        let q = &mut self.queues[part.queue % nq];
        let Some(slot) = q.free_ids.pop() else {
            pool.release(&frames, &mut temp);
            return Err(PushError::Full(part));
        };
        let s = slot as usize;
        q.gens[s] = q.gens[s].wrapping_add(1);
        let id = (u64::from(q.gens[s]) << 32) | u64::from(slot);
        let mut req = req;
        req.id = id;
        let echo = match part.kind {
            PartKind::Read => BLKIF_OP_READ,
            PartKind::Write => BLKIF_OP_WRITE,
            PartKind::Flush => BLKIF_OP_FLUSH_DISKCACHE,
            PartKind::Barrier => BLKIF_OP_WRITE_BARRIER,
            PartKind::Discard(_) => BLKIF_OP_DISCARD,
        };
        if let Err(e) = q.ring.push_request(&req) {
            q.free_ids.push(slot);
            pool.release(&frames, &mut temp);
            return Err(PushError::Failed(part, BlkError::Broken(e.to_string())));
        }
        q.pushed = true;
        stats.requests += 1;
        if part.replay {
            stats.replayed += 1;
        }
        if nind > 0 {
            stats.indirect += 1;
        }
        q.shadow[s] = Some(Shadow {
            part,
            id,
            echo,
            frames,
            temp,
        });
        Ok(())
    }

    /// The ring request for `part` (id left 0), its data copied into
    /// `frames` (data pages first, then indirect descriptor pages).
    fn encode(
        &self,
        part: &Part,
        data: &[u8],
        frames: &[u32],
        nsegs: usize,
        pool: &mut Pool,
        temp: &mut Vec<(GrantRef, u32)>,
    ) -> Result<Request, BlkError> {
        let mem = self.dom.memory();
        let base = Request {
            handle: self.handle,
            sector_number: part.sector,
            ..Default::default()
        };
        let (write, op) = match part.kind {
            PartKind::Read => (false, BLKIF_OP_READ),
            PartKind::Write => (true, BLKIF_OP_WRITE),
            PartKind::Flush => {
                return Ok(Request {
                    operation: BLKIF_OP_FLUSH_DISKCACHE,
                    ..base
                });
            }
            PartKind::Barrier => {
                return Ok(Request {
                    operation: BLKIF_OP_WRITE_BARRIER,
                    ..base
                });
            }
            PartKind::Discard(sectors) => {
                return Ok(Request::from(RequestDiscard {
                    operation: BLKIF_OP_DISCARD,
                    handle: self.handle,
                    sector_number: part.sector,
                    nr_sectors: sectors,
                    ..Default::default()
                }));
            }
        };
        let mut segs = Vec::with_capacity(nsegs);
        for (i, &frame) in frames[..nsegs].iter().enumerate() {
            let at = frame as usize * PAGE_SIZE;
            let chunk = &data[i * PAGE_SIZE..((i + 1) * PAGE_SIZE).min(data.len())];
            if write {
                mem.write_bytes(at, chunk)
                    .map_err(|e| BlkError::Grant(e.to_string()))?;
                if pool.zero && chunk.len() < PAGE_SIZE {
                    // The backend sees the whole page: nothing stale (BF4).
                    let _ = mem.fill(at + chunk.len(), PAGE_SIZE - chunk.len(), 0);
                }
            }
            let gref = pool.grant(self.backend, frame, write, self.persistent, temp)?;
            segs.push(RequestSegment {
                gref,
                first_sect: 0,
                last_sect: (chunk.len() / 512 - 1) as u8,
                ..Default::default()
            });
        }
        if nsegs <= BLKIF_MAX_SEGMENTS_PER_REQUEST {
            let mut req = Request {
                operation: op,
                nr_segments: nsegs as u8,
                ..base
            };
            req.seg[..nsegs].copy_from_slice(&segs);
            return Ok(req);
        }
        let mut ind = RequestIndirect {
            operation: BLKIF_OP_INDIRECT,
            indirect_op: op,
            nr_segments: nsegs as u16,
            sector_number: part.sector,
            handle: self.handle,
            ..Default::default()
        };
        for (i, (&frame, chunk)) in frames[nsegs..]
            .iter()
            .zip(segs.chunks(SEGS_PER_INDIRECT_FRAME))
            .enumerate()
        {
            let at = frame as usize * PAGE_SIZE;
            let bytes = pvio_shmem::bytes_of_slice(chunk);
            mem.write_bytes(at, bytes)
                .map_err(|e| BlkError::Grant(e.to_string()))?;
            if pool.zero && bytes.len() < PAGE_SIZE {
                let _ = mem.fill(at + bytes.len(), PAGE_SIZE - bytes.len(), 0);
            }
            ind.indirect_grefs[i] = pool.grant(self.backend, frame, true, self.persistent, temp)?;
        }
        Ok(Request::from(ind))
    }

    /// Publishes what was pushed and notifies the backend where needed.
    pub(crate) fn publish(&mut self, stats: &mut Stats) -> Result<(), String> {
        for q in &mut self.queues {
            if !q.pushed {
                continue;
            }
            q.pushed = false;
            let notify = q
                .ring
                .publish_and_check_notify()
                .map_err(|e| e.to_string())?;
            if notify.is_needed() {
                stats.notifies += 1;
                let _ = self.dom.events().send(q.port);
            }
        }
        Ok(())
    }

    /// Consumes every response, checking each against its shadow: a
    /// response for no request in flight, or echoing the wrong operation,
    /// is a protocol violation (BF1); so is a bad `rsp_prod` (BF2).
    /// Finished requests go to `out` even when an error is returned.
    pub(crate) fn reap(
        &mut self,
        out: &mut Vec<(Shadow, Result<(), BlkError>)>,
    ) -> Result<(), String> {
        for (qi, q) in self.queues.iter_mut().enumerate() {
            if q.outstanding() == 0 {
                // Nothing may arrive; a response now is caught below.
                match q.ring.unconsumed_responses() {
                    Ok(0) => continue,
                    Ok(_) => {}
                    Err(e) => return Err(format!("queue {qi}: {e}")),
                }
            }
            self.rsps.clear();
            let rsps = &mut self.rsps;
            q.ring
                .drain_responses(u32::MAX, |r| rsps.push(r))
                .map_err(|e| format!("queue {qi}: {e}"))?;
            for r in self.rsps.drain(..) {
                let slot = (r.id & 0xffff_ffff) as usize;
                let ok = matches!(q.shadow.get(slot), Some(Some(s)) if s.id == r.id);
                if !ok {
                    return Err(format!(
                        "queue {qi}: response id {:#x} is not in flight",
                        r.id
                    ));
                }
                let Some(s) = q.shadow[slot].take() else {
                    continue;
                };
                let indirect_echo = r.operation == BLKIF_OP_INDIRECT
                    && matches!(s.part.kind, PartKind::Read | PartKind::Write);
                if r.operation != s.echo && !indirect_echo {
                    let why = format!(
                        "queue {qi}: response {:#x} echoes operation {} for {}",
                        r.id, r.operation, s.echo
                    );
                    q.shadow[slot] = Some(s);
                    return Err(why);
                }
                q.free_ids.push(slot as u32);
                let result = match r.status {
                    BLKIF_RSP_OKAY => Ok(()),
                    BLKIF_RSP_EOPNOTSUPP => Err(BlkError::Unsupported),
                    _ => Err(BlkError::Io),
                };
                out.push((s, result));
            }
        }
        Ok(())
    }

    /// Whether a response waits on some ring (or a ring is broken).
    pub(crate) fn has_responses(&mut self) -> bool {
        self.queues
            .iter_mut()
            .any(|q| q.ring.unconsumed_responses() != Ok(0))
    }

    /// Before sleeping: re-arms every ring with requests out for a
    /// notification and registers this thread with every port. True if
    /// something arrived meanwhile (do not sleep).
    pub(crate) fn arm(&mut self) -> bool {
        let mut ready = false;
        for q in &mut self.queues {
            if let Some(w) = &q.waiter
                && w.wait(Duration::ZERO, Duration::ZERO).unwrap_or(true)
            {
                ready = true;
            }
            if q.outstanding() > 0 && q.ring.final_check_for_responses().unwrap_or(true) {
                ready = true;
            }
        }
        ready
    }

    /// Sleeps until an event on any queue's port (registered by
    /// [`Connection::arm`]) or `timeout`.
    pub(crate) fn park(&self, timeout: Duration) {
        std::thread::park_timeout(timeout);
    }

    /// Every request still on the rings, in ring order per queue.
    pub(crate) fn take_all_shadows(&mut self) -> Vec<Shadow> {
        let mut out = Vec::new();
        for q in &mut self.queues {
            let mut v: Vec<Shadow> = q.shadow.iter_mut().filter_map(Option::take).collect();
            v.sort_by_key(|s| s.id);
            out.extend(v);
            q.free_ids = (0..q.shadow.len() as u32).rev().collect();
        }
        out
    }

    /// Closes the event channels and ends the ring grants; a ring page the
    /// backend still maps goes to the pool's quarantine, never to reuse.
    pub(crate) fn teardown(mut self, pool: &mut Pool) {
        for q in self.queues.drain(..) {
            drop(q.waiter);
            if q.port != Port(0) {
                let _ = self.dom.events().close(q.port);
            }
            let mut temp: Vec<(GrantRef, u32)> = q
                .grefs
                .iter()
                .copied()
                .zip(q.frames.iter().copied())
                .collect();
            drop(q.ring);
            pool.adopt(&q.frames, &mut temp);
        }
    }
}
