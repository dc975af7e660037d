use pvio_shmem::{Ordering, Pod, SharedMem};

use crate::{
    Fault, Geometry, Notify, RingError, RingStats, SetupError, check_mem, check_slots, layout,
    need_notify, prefetch_slots,
};

/// The backend's end of a ring: consumes requests, produces responses into
/// the slots of requests it has consumed.
///
/// Private state (`spec/ring.md` §4): `rsp_prod_pvt` (next response slot),
/// `req_cons` (next request to consume), plus the `rsp_prod` this side last
/// published and the last validated snapshot of the frontend's `req_prod`.
#[derive(Debug)]
pub struct BackRing<M, Req, Rsp> {
    mem: M,
    geo: Geometry<Req, Rsp>,
    rsp_prod_pvt: u32,
    rsp_prod: u32,
    req_cons: u32,
    req_prod: u32,
    fault: Option<Fault>,
    stats: RingStats,
}

impl<M: SharedMem, Req: Pod, Rsp: Pod> BackRing<M, Req, Rsp> {
    /// Attaches to a ring the frontend initialised, spanning all of `mem`
    /// (1, 2, 4, 8 or 16 pages), the way Linux blkback does: both private
    /// indices start at `rsp_prod` (read once), and a ring whose
    /// `req_prod - rsp_prod` already exceeds the slot count is refused
    /// (SECURITY.md R4). The caller then drops (unmaps) `mem`.
    pub fn attach(mem: M) -> Result<Self, SetupError> {
        let geo = Geometry::pages(mem.size())?;
        Self::attach_geo(mem, geo)
    }

    /// Like [`BackRing::attach`] for a ring spanning the first `bytes` of
    /// `mem` (any size holding at least one slot).
    pub fn attach_bytes(mem: M, bytes: usize) -> Result<Self, SetupError> {
        check_mem(&mem, bytes)?;
        let geo = Geometry::bytes(bytes)?;
        Self::attach_geo(mem, geo)
    }

    fn attach_geo(mem: M, geo: Geometry<Req, Rsp>) -> Result<Self, SetupError> {
        check_slots::<M, Req, Rsp>(&mem)?;
        let rsp_prod = mem.load_u32(layout::RSP_PROD, Ordering::Acquire)?;
        let req_prod = mem.load_u32(layout::REQ_PROD, Ordering::Acquire)?;
        if req_prod.wrapping_sub(rsp_prod) > geo.nr_ents {
            return Err(SetupError::Inconsistent { req_prod, rsp_prod });
        }
        Ok(BackRing {
            mem,
            geo,
            rsp_prod_pvt: rsp_prod,
            rsp_prod,
            req_cons: rsp_prod,
            req_prod: rsp_prod,
            fault: None,
            stats: RingStats::default(),
        })
    }

    /// Number of slots.
    #[inline]
    pub fn nr_ents(&self) -> u32 {
        self.geo.nr_ents
    }

    /// The private indices `(rsp_prod_pvt, req_cons)`.
    #[inline]
    pub fn indices(&self) -> (u32, u32) {
        (self.rsp_prod_pvt, self.req_cons)
    }

    /// Requests consumed and not yet answered.
    #[inline]
    pub fn unanswered(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
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
        let cached = self.req_prod.wrapping_sub(self.req_cons);
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

    /// Reads `req_prod` once and validates it against the private indices:
    /// `rsp_prod_pvt <= req_cons <= req_prod <= rsp_prod_pvt + nr_ents` in
    /// wrapping order. That is the request-producer overflow check of
    /// `ring.md` §7 (R1), made strict so an index moving backwards is caught
    /// too (R3). Returns the number of unconsumed requests.
    fn refresh(&mut self) -> Result<u32, RingError> {
        self.check()?;
        let prod = match self.mem.load_u32(layout::REQ_PROD, Ordering::Acquire) {
            Ok(v) => v,
            Err(e) => return Err(self.broken(Fault::Memory(e))),
        };
        self.stats.index_reads += 1;
        let total = prod.wrapping_sub(self.rsp_prod_pvt);
        let owed = self.req_cons.wrapping_sub(self.rsp_prod_pvt);
        if total > self.geo.nr_ents || total < owed {
            return Err(self.broken(Fault::RequestOverflow {
                req_prod: prod,
                req_cons: self.req_cons,
                rsp_prod_pvt: self.rsp_prod_pvt,
            }));
        }
        // Prefetch only the slots this snapshot newly revealed.
        let fresh = prod.wrapping_sub(self.req_prod).min(total - owed);
        self.prefetch(prod.wrapping_sub(fresh), fresh);
        self.req_prod = prod;
        // With the checks above this equals the spec's
        // min(req_prod - req_cons, nr_ents - (req_cons - rsp_prod_pvt)).
        Ok(total - owed)
    }

    /// Prefetches the slots of `n` messages from index `from` (at most the
    /// ring; in at most two contiguous runs).
    #[inline]
    fn prefetch(&self, from: u32, n: u32) {
        prefetch_slots(&self.mem, &self.geo, from, n);
    }

    /// Unconsumed requests (`RING_HAS_UNCONSUMED_REQUESTS`), re-reading and
    /// validating `req_prod`.
    pub fn unconsumed_requests(&mut self) -> Result<u32, RingError> {
        self.refresh()
    }

    /// Whether consuming request `cons` would overwrite a slot whose response
    /// is not produced yet (the request-consumer overflow predicate).
    #[inline]
    fn consumer_overflow(&self) -> bool {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt) >= self.geo.nr_ents
    }

    #[inline]
    fn take(&mut self) -> Result<Req, RingError> {
        let off = self.geo.slot(self.req_cons);
        match self.mem.read_pod::<Req>(off) {
            Ok(v) => {
                self.req_cons = self.req_cons.wrapping_add(1);
                Ok(v)
            }
            Err(e) => Err(self.broken(Fault::Memory(e))),
        }
    }

    /// Copies the next request out of the ring, if one is visible.
    ///
    /// `req_prod` is re-read only when the last snapshot is exhausted, so a
    /// burst of requests costs one shared-index read.
    #[inline]
    pub fn next_request(&mut self) -> Result<Option<Req>, RingError> {
        self.check()?;
        if self.req_cons == self.req_prod && self.refresh()? == 0 {
            return Ok(None);
        }
        if self.consumer_overflow() {
            return Ok(None);
        }
        let req = self.take()?;
        self.stats.consumed += 1;
        Ok(Some(req))
    }

    /// Consumes up to `limit` visible requests, handing each to `f` by value
    /// (bound the work per notification: SECURITY.md R8). Returns how many
    /// were consumed.
    pub fn drain_requests(&mut self, limit: u32, mut f: impl FnMut(Req)) -> Result<u32, RingError> {
        let avail = self.available(limit)?;
        let entry = Geometry::<Req, Rsp>::ENTRY;
        for (off, n) in self.geo.runs(self.req_cons, avail) {
            if let Err(e) = self.mem.read_records::<Req>(off, entry, n, &mut f) {
                return Err(self.broken(Fault::Memory(e)));
            }
        }
        self.req_cons = self.req_cons.wrapping_add(avail);
        self.stats.consumed += u64::from(avail);
        Ok(avail)
    }

    /// The synchronous backend's loop in one call: for up to `limit` visible
    /// requests, copies each out once, hands it to `f`, and writes `f`'s
    /// response into the next response slot (without publishing). One
    /// producer-index read for the whole batch. Returns how many were
    /// answered.
    pub fn answer_requests(
        &mut self,
        limit: u32,
        mut f: impl FnMut(Req) -> Rsp,
    ) -> Result<u32, RingError> {
        let avail = self.available(limit)?;
        if self.unanswered() == 0 {
            // Nothing owed: each response goes into its own request's slot,
            // so read and answer in place, one bounds check per run.
            let entry = Geometry::<Req, Rsp>::ENTRY;
            for (off, n) in self.geo.runs(self.req_cons, avail) {
                if let Err(e) = self.mem.update_records::<Req, Rsp>(off, entry, n, &mut f) {
                    return Err(self.broken(Fault::Memory(e)));
                }
            }
            self.req_cons = self.req_cons.wrapping_add(avail);
            self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(avail);
        } else {
            for _ in 0..avail {
                let req = self.take()?;
                let rsp = f(req);
                let off = self.geo.slot(self.rsp_prod_pvt);
                if let Err(e) = self.mem.write_pod(off, &rsp) {
                    return Err(self.broken(Fault::Memory(e)));
                }
                self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
            }
        }
        self.stats.consumed += u64::from(avail);
        self.stats.produced += u64::from(avail);
        Ok(avail)
    }

    /// Writes `rsp` into the slot of the oldest unanswered request without
    /// publishing it. Fails with [`RingError::NoRequestToAnswer`] if every
    /// consumed request has been answered.
    #[inline]
    pub fn push_response(&mut self, rsp: &Rsp) -> Result<(), RingError> {
        self.check()?;
        if self.unanswered() == 0 {
            return Err(RingError::NoRequestToAnswer);
        }
        let off = self.geo.slot(self.rsp_prod_pvt);
        if let Err(e) = self.mem.write_pod(off, rsp) {
            return Err(self.broken(Fault::Memory(e)));
        }
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        self.stats.produced += 1;
        Ok(())
    }

    /// Reserves `n` response slots (at most the unanswered requests) for a
    /// batch published with one index store.
    pub fn reserve(&mut self, n: u32) -> Result<ResponseBatch<'_, M, Req, Rsp>, RingError> {
        self.check()?;
        if n > self.unanswered() {
            return Err(RingError::NoRequestToAnswer);
        }
        let start = self.rsp_prod_pvt;
        Ok(ResponseBatch {
            ring: self,
            start,
            reserved: n,
            filled: 0,
        })
    }

    /// Publishes every pushed response (one `Release` store of `rsp_prod`).
    #[inline]
    pub fn publish(&mut self) -> Result<(), RingError> {
        self.check()?;
        if self.rsp_prod_pvt != self.rsp_prod {
            self.store_rsp_prod()?;
        }
        Ok(())
    }

    #[inline]
    fn store_rsp_prod(&mut self) -> Result<(), RingError> {
        if let Err(e) = self
            .mem
            .store_u32(layout::RSP_PROD, self.rsp_prod_pvt, Ordering::Release)
        {
            return Err(self.broken(Fault::Memory(e)));
        }
        self.rsp_prod = self.rsp_prod_pvt;
        self.stats.publishes += 1;
        Ok(())
    }

    /// Publishes every pushed response and says whether the frontend must be
    /// notified (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`).
    ///
    /// The `fence(SeqCst)` between the `rsp_prod` store and the `rsp_event`
    /// load pairs with the one in
    /// [`crate::FrontRing::final_check_for_responses`].
    pub fn publish_and_check_notify(&mut self) -> Result<Notify, RingError> {
        self.check()?;
        let old = self.rsp_prod;
        let new = self.rsp_prod_pvt;
        if old == new {
            return Ok(Notify(false));
        }
        self.store_rsp_prod()?;
        self.mem.fence(Ordering::SeqCst);
        let event = match self.mem.load_u32(layout::RSP_EVENT, Ordering::Relaxed) {
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

    /// The final check before sleeping (`RING_FINAL_CHECK_FOR_REQUESTS`):
    /// returns true if requests are waiting; otherwise sets
    /// `req_event = req_cons + 1`, fences, and checks again.
    pub fn final_check_for_requests(&mut self) -> Result<bool, RingError> {
        self.final_check_for_requests_after(1)
    }

    /// Like [`BackRing::final_check_for_requests`], but asks to be woken only
    /// once `n` (at least 1) more requests are published, e.g. netback
    /// waiting for enough RX buffers for a packet.
    ///
    /// The `fence(SeqCst)` after the `req_event` store pairs with the one in
    /// [`crate::FrontRing::publish_and_check_notify`].
    pub fn final_check_for_requests_after(&mut self, n: u32) -> Result<bool, RingError> {
        if self.refresh()? > 0 {
            return Ok(true);
        }
        let event = self.req_cons.wrapping_add(n.max(1));
        if let Err(e) = self
            .mem
            .store_u32(layout::REQ_EVENT, event, Ordering::Relaxed)
        {
            return Err(self.broken(Fault::Memory(e)));
        }
        self.mem.fence(Ordering::SeqCst);
        Ok(self.refresh()? > 0)
    }
}

/// Response slots reserved by [`BackRing::reserve`], published with one index
/// store; dropping it unpublished discards what was pushed.
#[derive(Debug)]
pub struct ResponseBatch<'a, M: SharedMem, Req: Pod, Rsp: Pod> {
    ring: &'a mut BackRing<M, Req, Rsp>,
    start: u32,
    reserved: u32,
    filled: u32,
}

impl<M: SharedMem, Req: Pod, Rsp: Pod> ResponseBatch<'_, M, Req, Rsp> {
    /// Writes the next response of the batch into its slot.
    #[inline]
    pub fn push(&mut self, rsp: &Rsp) -> Result<(), RingError> {
        if self.filled == self.reserved {
            return Err(RingError::NoRequestToAnswer);
        }
        let off = self.ring.geo.slot(self.start.wrapping_add(self.filled));
        if let Err(e) = self.ring.mem.write_pod(off, rsp) {
            return Err(self.ring.broken(Fault::Memory(e)));
        }
        self.filled += 1;
        Ok(())
    }

    /// Slots reserved and not yet filled.
    #[inline]
    pub fn remaining(&self) -> u32 {
        self.reserved - self.filled
    }

    /// Responses filled so far.
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
        self.ring.rsp_prod_pvt = self.start.wrapping_add(self.filled);
        self.ring.stats.produced += u64::from(self.filled);
    }

    /// Makes the filled responses part of the ring's private producer index
    /// without publishing them: a later `publish` (or
    /// `publish_and_check_notify`) of the ring publishes them together with
    /// anything pushed since.
    pub fn commit(mut self) {
        self.advance();
    }

    /// Publishes the filled responses with one index store.
    pub fn publish(mut self) -> Result<(), RingError> {
        self.advance();
        self.ring.publish()
    }

    /// Publishes the filled responses with one index store and says whether
    /// the frontend must be notified.
    pub fn publish_and_check_notify(mut self) -> Result<Notify, RingError> {
        self.advance();
        self.ring.publish_and_check_notify()
    }
}
