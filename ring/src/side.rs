//! What both ends share. A ring carries two directions; each end produces
//! into one ([`Producer`]) and consumes from the other ([`Consumer`]). The
//! frontend is `Producer` of requests + `Consumer` of responses, the backend
//! the reverse, so the publish/notify and snapshot/final-check logic is
//! written once here.

use pvio_shmem::{MemError, Ordering, Pod, SharedMem};

use crate::{Fault, Geometry, Notify, RingError, RingStats, need_notify};

/// Memory, geometry, the sticky fault and the counters of one end.
#[derive(Debug)]
pub(crate) struct Core<M, Req, Rsp> {
    pub(crate) mem: M,
    pub(crate) geo: Geometry<Req, Rsp>,
    pub(crate) fault: Option<Fault>,
    pub(crate) stats: RingStats,
}

impl<M: SharedMem, Req: Pod, Rsp: Pod> Core<M, Req, Rsp> {
    pub(crate) fn new(mem: M, geo: Geometry<Req, Rsp>) -> Self {
        Core {
            mem,
            geo,
            fault: None,
            stats: RingStats::default(),
        }
    }

    #[inline]
    pub(crate) fn check(&self) -> Result<(), RingError> {
        match self.fault {
            Some(f) => Err(RingError::Broken(f)),
            None => Ok(()),
        }
    }

    /// Records `f` (the first fault sticks) and returns the error to report.
    #[cold]
    pub(crate) fn broken(&mut self, f: Fault) -> RingError {
        let f = *self.fault.get_or_insert(f);
        RingError::Broken(f)
    }

    #[cold]
    pub(crate) fn mem_fault(&mut self, e: MemError) -> RingError {
        self.broken(Fault::Memory(e))
    }
}

/// One direction, seen by the end that produces into it: the private
/// producer index, the value this end last published (never re-read from
/// the ring, where the peer could rewrite it), and where the shared
/// producer and event indices live.
#[derive(Debug)]
pub(crate) struct Producer {
    pub(crate) pvt: u32,
    pub(crate) published: u32,
    pub(crate) prod_off: usize,
    pub(crate) event_off: usize,
}

impl Producer {
    pub(crate) fn new(start: u32, prod_off: usize, event_off: usize) -> Self {
        Producer {
            pvt: start,
            published: start,
            prod_off,
            event_off,
        }
    }

    /// One `Release` store of the producer index: the slot contents become
    /// visible before the index (`ring.md` §6.2).
    #[inline]
    pub(crate) fn publish<M: SharedMem, Req: Pod, Rsp: Pod>(
        &mut self,
        core: &mut Core<M, Req, Rsp>,
    ) -> Result<(), RingError> {
        core.check()?;
        if self.pvt != self.published {
            self.store(core)?;
        }
        Ok(())
    }

    #[inline]
    fn store<M: SharedMem, Req: Pod, Rsp: Pod>(
        &mut self,
        core: &mut Core<M, Req, Rsp>,
    ) -> Result<(), RingError> {
        if let Err(e) = core
            .mem
            .store_u32(self.prod_off, self.pvt, Ordering::Release)
        {
            return Err(core.mem_fault(e));
        }
        self.published = self.pvt;
        core.stats.publishes += 1;
        Ok(())
    }

    /// Publishes, then decides whether to notify (`ring.md` §6.3).
    ///
    /// The `fence(SeqCst)` between the producer-index store and the
    /// event-index load pairs with the one in [`Consumer::final_check`]
    /// between the peer's event-index store and its producer-index load: at
    /// least one side sees the other's store, so the consumer either sees
    /// the new messages or is notified.
    pub(crate) fn publish_and_check_notify<M: SharedMem, Req: Pod, Rsp: Pod>(
        &mut self,
        core: &mut Core<M, Req, Rsp>,
    ) -> Result<Notify, RingError> {
        core.check()?;
        let (old, new) = (self.published, self.pvt);
        if old == new {
            return Ok(Notify(false));
        }
        self.store(core)?;
        core.mem.fence(Ordering::SeqCst);
        let event = match core.mem.load_u32(self.event_off, Ordering::Relaxed) {
            Ok(v) => v,
            Err(e) => return Err(core.mem_fault(e)),
        };
        let notify = need_notify(old, new, event);
        if notify {
            core.stats.notifies += 1;
        } else {
            core.stats.suppressed += 1;
        }
        Ok(Notify(notify))
    }
}

/// One direction, seen by the end that consumes from it: the private
/// consumer index, the last validated snapshot of the peer's producer
/// index, and where the shared producer and event indices live.
#[derive(Debug)]
pub(crate) struct Consumer {
    pub(crate) cons: u32,
    pub(crate) snapshot: u32,
    pub(crate) prod_off: usize,
    pub(crate) event_off: usize,
}

impl Consumer {
    pub(crate) fn new(start: u32, prod_off: usize, event_off: usize) -> Self {
        Consumer {
            cons: start,
            snapshot: start,
            prod_off,
            event_off,
        }
    }

    /// Reads the peer's producer index once and validates it: at most `max`
    /// messages may lie between `cons` and it (an index behind `cons` wraps
    /// to a huge distance and fails too). A bad one breaks the ring with the
    /// fault `bad` builds. Prefetches, for ownership, the slots the new
    /// snapshot reveals. Returns the unconsumed count.
    #[inline]
    pub(crate) fn refresh<M: SharedMem, Req: Pod, Rsp: Pod>(
        &mut self,
        core: &mut Core<M, Req, Rsp>,
        max: u32,
        bad: impl FnOnce(u32) -> Fault,
    ) -> Result<u32, RingError> {
        core.check()?;
        let prod = match core.mem.load_u32(self.prod_off, Ordering::Acquire) {
            Ok(v) => v,
            Err(e) => return Err(core.mem_fault(e)),
        };
        core.stats.index_reads += 1;
        let avail = prod.wrapping_sub(self.cons);
        if avail > max {
            return Err(core.broken(bad(prod)));
        }
        let fresh = prod.wrapping_sub(self.snapshot).min(avail);
        prefetch_slots(core, prod.wrapping_sub(fresh), fresh);
        self.snapshot = prod;
        Ok(avail)
    }

    /// Messages in the last snapshot not yet consumed.
    #[inline]
    pub(crate) fn cached(&self) -> u32 {
        self.snapshot.wrapping_sub(self.cons)
    }

    /// The final check before sleeping (`ring.md` §6.5), asking to be woken
    /// once `n` (at least 1) more messages are published. `refresh` is the
    /// caller's validated read of the producer index.
    ///
    /// The `fence(SeqCst)` after the event-index store pairs with the one in
    /// [`Producer::publish_and_check_notify`].
    pub(crate) fn final_check<M: SharedMem, Req: Pod, Rsp: Pod>(
        &mut self,
        core: &mut Core<M, Req, Rsp>,
        n: u32,
        mut refresh: impl FnMut(&mut Self, &mut Core<M, Req, Rsp>) -> Result<u32, RingError>,
    ) -> Result<bool, RingError> {
        if refresh(self, core)? > 0 {
            return Ok(true);
        }
        let event = self.cons.wrapping_add(n.max(1));
        if let Err(e) = core.mem.store_u32(self.event_off, event, Ordering::Relaxed) {
            return Err(core.mem_fault(e));
        }
        core.mem.fence(Ordering::SeqCst);
        Ok(refresh(self, core)? > 0)
    }

    /// Like [`Consumer::final_check`], for a consumer that needs `n`
    /// messages at once: true only once at least `n` (at least 1) are
    /// unconsumed; otherwise asks to be woken when the `n`-th is published
    /// (`event = cons + n`, whatever is already there), fences, and checks
    /// again.
    pub(crate) fn final_check_at_least<M: SharedMem, Req: Pod, Rsp: Pod>(
        &mut self,
        core: &mut Core<M, Req, Rsp>,
        n: u32,
        mut refresh: impl FnMut(&mut Self, &mut Core<M, Req, Rsp>) -> Result<u32, RingError>,
    ) -> Result<bool, RingError> {
        let n = n.max(1);
        if refresh(self, core)? >= n {
            return Ok(true);
        }
        let event = self.cons.wrapping_add(n);
        if let Err(e) = core.mem.store_u32(self.event_off, event, Ordering::Relaxed) {
            return Err(core.mem_fault(e));
        }
        core.mem.fence(Ordering::SeqCst);
        Ok(refresh(self, core)? >= n)
    }
}

/// Prefetches, for ownership, the slots of `n` messages from index `from`:
/// each end overwrites the slots it reads (the backend with responses, the
/// frontend later with new requests), so each slot then crosses between the
/// cores once per use rather than once plus an ownership upgrade.
#[inline]
pub(crate) fn prefetch_slots<M: SharedMem, Req: Pod, Rsp: Pod>(
    core: &Core<M, Req, Rsp>,
    from: u32,
    n: u32,
) {
    let entry = Geometry::<Req, Rsp>::ENTRY;
    for (off, k) in core.geo.runs(from, n) {
        if k > 0 {
            core.mem.prefetch(off, k * entry, true);
        }
    }
}

/// Slots reserved for a batch of messages `T` (requests for a frontend,
/// responses for a backend), filled in place and published with one index
/// store. Dropping a batch unpublished discards what was written into it.
#[derive(Debug)]
pub struct Batch<'a, M, Req, Rsp, T> {
    pub(crate) core: &'a mut Core<M, Req, Rsp>,
    pub(crate) prod: &'a mut Producer,
    pub(crate) reserved: u32,
    pub(crate) filled: u32,
    /// What `push` beyond the reservation returns.
    pub(crate) exhausted: RingError,
    pub(crate) _msg: core::marker::PhantomData<fn(T)>,
}

impl<M: SharedMem, Req: Pod, Rsp: Pod, T: Pod> Batch<'_, M, Req, Rsp, T> {
    /// Writes the next message of the batch into its slot.
    #[inline]
    pub fn push(&mut self, msg: &T) -> Result<(), RingError> {
        if self.filled == self.reserved {
            return Err(self.exhausted);
        }
        let off = self.core.geo.slot(self.prod.pvt.wrapping_add(self.filled));
        if let Err(e) = self.core.mem.write_pod(off, msg) {
            return Err(self.core.mem_fault(e));
        }
        self.filled += 1;
        Ok(())
    }

    /// Fills every remaining reserved slot with `f(i)`, `i` counting from 0
    /// within this call, with one bounds check per contiguous run. Returns
    /// how many were filled.
    pub fn fill_with(&mut self, mut f: impl FnMut(u32) -> T) -> Result<u32, RingError> {
        let n = self.remaining();
        let first = self.prod.pvt.wrapping_add(self.filled);
        let entry = Geometry::<Req, Rsp>::ENTRY;
        let mut done = 0u32;
        for (off, k) in self.core.geo.runs(first, n) {
            let base = done;
            if let Err(e) = self
                .core
                .mem
                .write_records::<T>(off, entry, k, |i| f(base + i as u32))
            {
                return Err(self.core.mem_fault(e));
            }
            done += k as u32;
        }
        self.filled += n;
        Ok(n)
    }

    /// Slots reserved and not yet filled.
    #[inline]
    pub fn remaining(&self) -> u32 {
        self.reserved - self.filled
    }

    /// Messages filled so far.
    #[inline]
    pub fn len(&self) -> u32 {
        self.filled
    }

    /// Whether nothing has been filled.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    fn advance(&mut self) {
        self.prod.pvt = self.prod.pvt.wrapping_add(self.filled);
        self.core.stats.produced += u64::from(self.filled);
        self.filled = 0;
        self.reserved = 0;
    }

    /// Makes the filled messages part of the private producer index without
    /// publishing them: the ring's next `publish` (or
    /// `publish_and_check_notify`) publishes them together with anything
    /// pushed since.
    pub fn commit(mut self) {
        self.advance();
    }

    /// Publishes the filled messages with one index store.
    pub fn publish(mut self) -> Result<(), RingError> {
        self.advance();
        self.prod.publish(self.core)
    }

    /// Publishes the filled messages with one index store and says whether
    /// the peer must be notified.
    pub fn publish_and_check_notify(mut self) -> Result<Notify, RingError> {
        self.advance();
        self.prod.publish_and_check_notify(self.core)
    }
}
