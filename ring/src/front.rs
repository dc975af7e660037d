use pvio_shmem::{Ordering, Pod, SharedMem};

use crate::{
    Fault, Geometry, Notify, RingError, RingStats, SetupError, check_mem, check_slots, layout,
    need_notify, prefetch_slots,
};

/// The frontend's end of a ring: produces requests, consumes responses.
///
/// Private state (`spec/ring.md` §4): `req_prod_pvt` (next request slot),
/// `rsp_cons` (next response to consume), plus a copy of the `req_prod` this
/// side last published and the last validated snapshot of the backend's
/// `rsp_prod`. The frontend never trusts the shared copies of its own
/// indices: a backend could rewrite them.
#[derive(Debug)]
pub struct FrontRing<M, Req, Rsp> {
    mem: M,
    geo: Geometry<Req, Rsp>,
    req_prod_pvt: u32,
    req_prod: u32,
    rsp_cons: u32,
    rsp_prod: u32,
    fault: Option<Fault>,
    stats: RingStats,
}

impl<M: SharedMem, Req: Pod, Rsp: Pod> FrontRing<M, Req, Rsp> {
    /// Initialises a fresh shared ring spanning all of `mem`, which must be
    /// 1, 2, 4, 8 or 16 pages: `req_prod = rsp_prod = 0`,
    /// `req_event = rsp_event = 1` (notify on the first message), padding
    /// zeroed. Slots are left as they are (allocate zeroed pages).
    pub fn init(mem: M) -> Result<Self, SetupError> {
        let geo = Geometry::pages(mem.size())?;
        Self::init_geo(mem, geo)
    }

    /// Like [`FrontRing::init`] for a ring of any size of at least one slot
    /// spanning the first `bytes` of `mem` (small rings for model checking,
    /// or protocols that are not page-sized).
    pub fn init_bytes(mem: M, bytes: usize) -> Result<Self, SetupError> {
        check_mem(&mem, bytes)?;
        let geo = Geometry::bytes(bytes)?;
        Self::init_geo(mem, geo)
    }

    fn init_geo(mem: M, geo: Geometry<Req, Rsp>) -> Result<Self, SetupError> {
        check_slots::<M, Req, Rsp>(&mem)?;
        mem.store_u32(layout::REQ_PROD, 0, Ordering::Relaxed)?;
        mem.store_u32(layout::RSP_PROD, 0, Ordering::Relaxed)?;
        mem.store_u32(layout::REQ_EVENT, 1, Ordering::Relaxed)?;
        mem.store_u32(layout::RSP_EVENT, 1, Ordering::Relaxed)?;
        mem.fill(layout::PAD, layout::HEADER - layout::PAD, 0)?;
        // Publish the header before the ring is handed to the peer (the
        // hand-over itself, e.g. a grant plus a store write, orders it too).
        mem.fence(Ordering::Release);
        Ok(Self::with_indices(mem, geo, 0))
    }

    /// Re-attaches to a live ring whose indices are at `start` (Xen's
    /// `FRONT_RING_ATTACH`): `req_prod_pvt = rsp_cons = start`. The shared
    /// header is not touched.
    pub fn attach(mem: M, start: u32) -> Result<Self, SetupError> {
        let geo = Geometry::pages(mem.size())?;
        check_slots::<M, Req, Rsp>(&mem)?;
        Ok(Self::with_indices(mem, geo, start))
    }

    fn with_indices(mem: M, geo: Geometry<Req, Rsp>, start: u32) -> Self {
        FrontRing {
            mem,
            geo,
            req_prod_pvt: start,
            req_prod: start,
            rsp_cons: start,
            rsp_prod: start,
            fault: None,
            stats: RingStats::default(),
        }
    }

    /// Number of slots.
    #[inline]
    pub fn nr_ents(&self) -> u32 {
        self.geo.nr_ents
    }

    /// Slots free for new requests: `nr_ents - (req_prod_pvt - rsp_cons)`.
    #[inline]
    pub fn free_requests(&self) -> u32 {
        self.geo.nr_ents - self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Whether every slot holds an outstanding request.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// Requests published or pushed whose responses are not yet consumed.
    #[inline]
    pub fn outstanding(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// The private indices `(req_prod_pvt, rsp_cons)`.
    #[inline]
    pub fn indices(&self) -> (u32, u32) {
        (self.req_prod_pvt, self.rsp_cons)
    }

    /// The fault that broke this ring, if any.
    #[inline]
    pub fn fault(&self) -> Option<Fault> {
        self.fault
    }

    /// Counters.
    #[inline]
    pub fn stats(&self) -> &RingStats {
        &self.stats
    }

    /// The shared memory.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    /// Up to `limit` messages to consume: from the last snapshot of the
    /// peer's producer index if it holds that many, else from a fresh
    /// (validated) read of it.
    #[inline]
    fn available(&mut self, limit: u32) -> Result<u32, RingError> {
        self.check()?;
        let cached = self.rsp_prod.wrapping_sub(self.rsp_cons);
        if cached >= limit {
            return Ok(limit);
        }
        Ok(self.refresh()?.min(limit))
    }

    #[inline]
    fn check(&self) -> Result<(), RingError> {
        match self.fault {
            Some(f) => Err(RingError::Broken(f)),
            None => Ok(()),
        }
    }

    #[cold]
    fn broken(&mut self, f: Fault) -> RingError {
        self.fault = Some(f);
        RingError::Broken(f)
    }

    /// Writes `req` into the next free slot without publishing it.
    #[inline]
    pub fn push_request(&mut self, req: &Req) -> Result<(), RingError> {
        self.check()?;
        if self.is_full() {
            return Err(RingError::Full);
        }
        let off = self.geo.slot(self.req_prod_pvt);
        if let Err(e) = self.mem.write_pod(off, req) {
            return Err(self.broken(Fault::Memory(e)));
        }
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        self.stats.produced += 1;
        Ok(())
    }

    /// Reserves `n` free slots for a batch: fill it with
    /// [`RequestBatch::push`], then publish it with one index store.
    pub fn reserve(&mut self, n: u32) -> Result<RequestBatch<'_, M, Req, Rsp>, RingError> {
        self.check()?;
        if n > self.free_requests() {
            return Err(RingError::Full);
        }
        let start = self.req_prod_pvt;
        Ok(RequestBatch {
            ring: self,
            start,
            reserved: n,
            filled: 0,
        })
    }

    /// Publishes every pushed request (one `Release` store of `req_prod`:
    /// the slot contents become visible before the index, `ring.md` §6.2).
    #[inline]
    pub fn publish(&mut self) -> Result<(), RingError> {
        self.check()?;
        if self.req_prod_pvt != self.req_prod {
            self.store_req_prod()?;
        }
        Ok(())
    }

    #[inline]
    fn store_req_prod(&mut self) -> Result<(), RingError> {
        if let Err(e) = self
            .mem
            .store_u32(layout::REQ_PROD, self.req_prod_pvt, Ordering::Release)
        {
            return Err(self.broken(Fault::Memory(e)));
        }
        self.req_prod = self.req_prod_pvt;
        self.stats.publishes += 1;
        Ok(())
    }

    /// Publishes every pushed request and says whether the backend must be
    /// notified (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`).
    ///
    /// The `fence(SeqCst)` between the `req_prod` store and the `req_event`
    /// load pairs with the fence in [`crate::BackRing::final_check_for_requests`]
    /// between its `req_event` store and its `req_prod` load: at least one side
    /// sees the other's store, so the backend either sees the new requests
    /// or is notified.
    pub fn publish_and_check_notify(&mut self) -> Result<Notify, RingError> {
        self.check()?;
        let old = self.req_prod;
        let new = self.req_prod_pvt;
        if old == new {
            return Ok(Notify(false));
        }
        self.store_req_prod()?;
        self.mem.fence(Ordering::SeqCst);
        let event = match self.mem.load_u32(layout::REQ_EVENT, Ordering::Relaxed) {
            Ok(v) => v,
            Err(e) => return Err(self.broken(Fault::Memory(e))),
        };
        let notify = need_notify(old, new, event);
        if notify {
            self.stats.notifies += 1;
        } else {
            self.stats.suppressed += 1;
        }
        Ok(Notify(notify))
    }

    /// Reads `rsp_prod` once and validates it: it must lie between `rsp_cons`
    /// and the `req_prod` this side published (a backend cannot answer
    /// requests it was never given). Returns the number of unconsumed
    /// responses.
    fn refresh(&mut self) -> Result<u32, RingError> {
        self.check()?;
        let prod = match self.mem.load_u32(layout::RSP_PROD, Ordering::Acquire) {
            Ok(v) => v,
            Err(e) => return Err(self.broken(Fault::Memory(e))),
        };
        self.stats.index_reads += 1;
        let avail = prod.wrapping_sub(self.rsp_cons);
        if avail > self.req_prod.wrapping_sub(self.rsp_cons) {
            return Err(self.broken(Fault::ResponseOverflow {
                rsp_prod: prod,
                rsp_cons: self.rsp_cons,
                req_prod: self.req_prod,
            }));
        }
        // Prefetch only the slots this snapshot newly revealed.
        let fresh = prod.wrapping_sub(self.rsp_prod).min(avail);
        prefetch_slots(&self.mem, &self.geo, prod.wrapping_sub(fresh), fresh);
        self.rsp_prod = prod;
        Ok(avail)
    }

    /// Unconsumed responses (`RING_HAS_UNCONSUMED_RESPONSES`), re-reading
    /// and validating `rsp_prod` (SECURITY.md R11).
    pub fn unconsumed_responses(&mut self) -> Result<u32, RingError> {
        self.refresh()
    }

    /// Copies the next response out of the ring, if one is visible.
    ///
    /// `rsp_prod` is re-read only when the last snapshot is exhausted, so a
    /// burst of responses costs one shared-index read.
    #[inline]
    pub fn next_response(&mut self) -> Result<Option<Rsp>, RingError> {
        self.check()?;
        if self.rsp_cons == self.rsp_prod && self.refresh()? == 0 {
            return Ok(None);
        }
        let off = self.geo.slot(self.rsp_cons);
        let rsp = match self.mem.read_pod::<Rsp>(off) {
            Ok(v) => v,
            Err(e) => return Err(self.broken(Fault::Memory(e))),
        };
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        self.stats.consumed += 1;
        Ok(Some(rsp))
    }

    /// Consumes up to `limit` visible responses, handing each to `f` by value.
    /// Returns how many were consumed.
    pub fn drain_responses(
        &mut self,
        limit: u32,
        mut f: impl FnMut(Rsp),
    ) -> Result<u32, RingError> {
        let avail = self.available(limit)?;
        let entry = Geometry::<Req, Rsp>::ENTRY;
        for (off, n) in self.geo.runs(self.rsp_cons, avail) {
            if let Err(e) = self.mem.read_records::<Rsp>(off, entry, n, &mut f) {
                return Err(self.broken(Fault::Memory(e)));
            }
        }
        self.rsp_cons = self.rsp_cons.wrapping_add(avail);
        self.stats.consumed += u64::from(avail);
        Ok(avail)
    }

    /// The final check before sleeping (`RING_FINAL_CHECK_FOR_RESPONSES`):
    /// returns true if responses are waiting; otherwise sets
    /// `rsp_event = rsp_cons + 1`, fences, and checks again.
    pub fn final_check_for_responses(&mut self) -> Result<bool, RingError> {
        self.final_check_for_responses_after(1)
    }

    /// Like [`FrontRing::final_check_for_responses`], but asks to be woken
    /// only once `n` more responses are published (netfront's batching),
    /// capped at the number of outstanding requests so the wakeup always
    /// comes.
    ///
    /// The `fence(SeqCst)` after the `rsp_event` store pairs with the fence in
    /// [`crate::BackRing::publish_and_check_notify`].
    pub fn final_check_for_responses_after(&mut self, n: u32) -> Result<bool, RingError> {
        if self.refresh()? > 0 {
            return Ok(true);
        }
        let n = n.clamp(1, self.req_prod.wrapping_sub(self.rsp_cons).max(1));
        let event = self.rsp_cons.wrapping_add(n);
        if let Err(e) = self
            .mem
            .store_u32(layout::RSP_EVENT, event, Ordering::Relaxed)
        {
            return Err(self.broken(Fault::Memory(e)));
        }
        self.mem.fence(Ordering::SeqCst);
        Ok(self.refresh()? > 0)
    }
}

/// Slots reserved by [`FrontRing::reserve`]. Requests pushed into it stay
/// private until [`RequestBatch::publish`] (or
/// [`RequestBatch::publish_and_check_notify`]) stores `req_prod` once;
/// dropping the batch unpublished discards them.
#[derive(Debug)]
pub struct RequestBatch<'a, M: SharedMem, Req: Pod, Rsp: Pod> {
    ring: &'a mut FrontRing<M, Req, Rsp>,
    start: u32,
    reserved: u32,
    filled: u32,
}

impl<M: SharedMem, Req: Pod, Rsp: Pod> RequestBatch<'_, M, Req, Rsp> {
    /// Writes the next request of the batch into its slot.
    #[inline]
    pub fn push(&mut self, req: &Req) -> Result<(), RingError> {
        if self.filled == self.reserved {
            return Err(RingError::Full);
        }
        let off = self.ring.geo.slot(self.start.wrapping_add(self.filled));
        if let Err(e) = self.ring.mem.write_pod(off, req) {
            return Err(self.ring.broken(Fault::Memory(e)));
        }
        self.filled += 1;
        Ok(())
    }

    /// Fills every remaining reserved slot with `f(i)`, `i` counting from 0
    /// within this call, in at most two bounds checks (the batch's contiguous
    /// runs). Returns how many were filled.
    pub fn fill_with(&mut self, mut f: impl FnMut(u32) -> Req) -> Result<u32, RingError> {
        let n = self.remaining();
        let first = self.start.wrapping_add(self.filled);
        let entry = Geometry::<Req, Rsp>::ENTRY;
        let mut done = 0u32;
        for (off, k) in self.ring.geo.runs(first, n) {
            let base = done;
            let r = self
                .ring
                .mem
                .write_records::<Req>(off, entry, k, |i| f(base + i as u32));
            if let Err(e) = r {
                return Err(self.ring.broken(Fault::Memory(e)));
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

    /// Requests filled so far.
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
        self.ring.req_prod_pvt = self.start.wrapping_add(self.filled);
        self.ring.stats.produced += u64::from(self.filled);
    }

    /// Makes the filled requests part of the ring's private producer index
    /// without publishing them: a later `publish` (or
    /// `publish_and_check_notify`) of the ring publishes them together with
    /// anything pushed since.
    pub fn commit(mut self) {
        self.advance();
    }

    /// Publishes the filled requests with one index store.
    pub fn publish(mut self) -> Result<(), RingError> {
        self.advance();
        self.ring.publish()
    }

    /// Publishes the filled requests with one index store and says whether
    /// the backend must be notified.
    pub fn publish_and_check_notify(mut self) -> Result<Notify, RingError> {
        self.advance();
        self.ring.publish_and_check_notify()
    }
}
