use pvio_shmem::{Ordering, Pod, SharedMem};

use crate::side::{Batch, Consumer, Core, Producer};
use crate::{
    Fault, Geometry, Notify, RingError, RingStats, SetupError, check_mem, check_slots, layout,
};

/// Responses reserved by [`BackRing::reserve`]: fill with [`Batch::push`]
/// or [`Batch::fill_with`], then publish with one index store.
pub type ResponseBatch<'a, M, Req, Rsp> = Batch<'a, M, Req, Rsp, Rsp>;

/// The backend's end of a ring: consumes requests, produces responses into
/// the slots of requests it has consumed.
///
/// Private state (`spec/ring.md` §4): `rsp_prod_pvt` (next response slot)
/// and `req_cons` (next request to consume), plus the `rsp_prod` this side
/// last published and the last validated snapshot of the frontend's
/// `req_prod`.
#[derive(Debug)]
pub struct BackRing<M, Req, Rsp> {
    core: Core<M, Req, Rsp>,
    req: Consumer,
    rsp: Producer,
}

impl<M: SharedMem, Req: Pod, Rsp: Pod> BackRing<M, Req, Rsp> {
    /// Attaches to a ring the frontend initialised, spanning all of `mem`
    /// (1, 2, 4, 8 or 16 pages), the way Linux blkback does: both private
    /// indices start at `rsp_prod` (read once), and a ring whose
    /// `req_prod - rsp_prod` already exceeds the slot count is refused
    /// (SECURITY.md R4). On error `mem` is dropped (unmapped).
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
            core: Core::new(mem, geo),
            req: Consumer::new(rsp_prod, layout::REQ_PROD, layout::REQ_EVENT),
            rsp: Producer::new(rsp_prod, layout::RSP_PROD, layout::RSP_EVENT),
        })
    }

    /// Number of slots.
    #[inline]
    pub fn nr_ents(&self) -> u32 {
        self.core.geo.nr_ents
    }

    /// The private indices `(rsp_prod_pvt, req_cons)`.
    #[inline]
    pub fn indices(&self) -> (u32, u32) {
        (self.rsp.pvt, self.req.cons)
    }

    /// Requests consumed and not yet answered.
    #[inline]
    pub fn unanswered(&self) -> u32 {
        self.req.cons.wrapping_sub(self.rsp.pvt)
    }

    /// The fault that broke this ring, if any.
    #[inline]
    pub fn fault(&self) -> Option<Fault> {
        self.core.fault
    }

    /// Counters.
    #[inline]
    pub fn stats(&self) -> &RingStats {
        &self.core.stats
    }

    /// The shared memory.
    pub fn mem(&self) -> &M {
        &self.core.mem
    }

    /// Reads `req_prod` once and validates it: with `owed` requests consumed
    /// and unanswered, at most `nr_ents - owed` may lie between `req_cons`
    /// and `req_prod`. That is `rsp_prod_pvt <= req_cons <= req_prod <=
    /// rsp_prod_pvt + nr_ents` in wrapping order: the request-producer
    /// overflow check of `ring.md` §7 (R1), made strict so an index that
    /// moves backwards is caught too (R3). Returns the unconsumed requests.
    /// Consuming only these also keeps the request-consumer overflow
    /// predicate false: no slot with an unproduced response is ever read.
    pub fn unconsumed_requests(&mut self) -> Result<u32, RingError> {
        Self::refresh(&mut self.req, &mut self.core, self.rsp.pvt)
    }

    fn refresh(
        req: &mut Consumer,
        core: &mut Core<M, Req, Rsp>,
        rsp_prod_pvt: u32,
    ) -> Result<u32, RingError> {
        let req_cons = req.cons;
        let owed = req_cons.wrapping_sub(rsp_prod_pvt);
        let max = core.geo.nr_ents.saturating_sub(owed);
        req.refresh(core, max, |req_prod| Fault::RequestOverflow {
            req_prod,
            req_cons,
            rsp_prod_pvt,
        })
    }

    /// Up to `limit` requests to consume: from the last snapshot of
    /// `req_prod` if it holds that many, else from a fresh validated read.
    #[inline]
    fn available(&mut self, limit: u32) -> Result<u32, RingError> {
        self.core.check()?;
        if self.req.cached() >= limit {
            return Ok(limit);
        }
        Ok(self.unconsumed_requests()?.min(limit))
    }

    /// Copies the next request out of the ring, if one is visible.
    ///
    /// `req_prod` is re-read only when the last snapshot is used up, so a
    /// burst of requests costs one shared-index read.
    #[inline]
    pub fn next_request(&mut self) -> Result<Option<Req>, RingError> {
        let mut out = None;
        self.drain_requests(1, |r| out = Some(r))?;
        Ok(out)
    }

    /// Consumes up to `limit` visible requests, handing each to `f` by value,
    /// in order, with one bounds check per contiguous run of slots (bound the
    /// work per notification with `limit`: SECURITY.md R8). Returns how many
    /// were consumed.
    pub fn drain_requests(&mut self, limit: u32, mut f: impl FnMut(Req)) -> Result<u32, RingError> {
        let avail = self.available(limit)?;
        let entry = Geometry::<Req, Rsp>::ENTRY;
        for (off, n) in self.core.geo.runs(self.req.cons, avail) {
            if let Err(e) = self.core.mem.read_records::<Req>(off, entry, n, &mut f) {
                return Err(self.core.mem_fault(e));
            }
        }
        self.req.cons = self.req.cons.wrapping_add(avail);
        self.core.stats.consumed += u64::from(avail);
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
            for (off, n) in self.core.geo.runs(self.req.cons, avail) {
                if let Err(e) = self
                    .core
                    .mem
                    .update_records::<Req, Rsp>(off, entry, n, &mut f)
                {
                    return Err(self.core.mem_fault(e));
                }
            }
            self.req.cons = self.req.cons.wrapping_add(avail);
            self.rsp.pvt = self.rsp.pvt.wrapping_add(avail);
            self.core.stats.consumed += u64::from(avail);
            self.core.stats.produced += u64::from(avail);
        } else {
            // Older requests are still owed answers: answers go into their
            // slots, in order, one message at a time.
            for _ in 0..avail {
                if let Some(req) = self.next_request()? {
                    self.push_response(&f(req))?;
                }
            }
        }
        Ok(avail)
    }

    /// Writes `rsp` into the slot of the oldest unanswered request without
    /// publishing it. Fails with [`RingError::NoRequestToAnswer`] if every
    /// consumed request has been answered.
    #[inline]
    pub fn push_response(&mut self, rsp: &Rsp) -> Result<(), RingError> {
        let mut batch = self.reserve(1)?;
        batch.push(rsp)?;
        batch.commit();
        Ok(())
    }

    /// Reserves `n` response slots (at most the unanswered requests) for a
    /// batch published with one index store.
    pub fn reserve(&mut self, n: u32) -> Result<ResponseBatch<'_, M, Req, Rsp>, RingError> {
        self.core.check()?;
        if n > self.unanswered() {
            return Err(RingError::NoRequestToAnswer);
        }
        Ok(Batch {
            core: &mut self.core,
            prod: &mut self.rsp,
            reserved: n,
            filled: 0,
            exhausted: RingError::NoRequestToAnswer,
            _msg: core::marker::PhantomData,
        })
    }

    /// Publishes every pushed response (one `Release` store of `rsp_prod`).
    #[inline]
    pub fn publish(&mut self) -> Result<(), RingError> {
        self.rsp.publish(&mut self.core)
    }

    /// Publishes every pushed response and says whether the frontend must be
    /// notified (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`). The fence it makes
    /// pairs with the one in [`crate::FrontRing::final_check_for_responses`].
    pub fn publish_and_check_notify(&mut self) -> Result<Notify, RingError> {
        self.rsp.publish_and_check_notify(&mut self.core)
    }

    /// The final check before sleeping (`RING_FINAL_CHECK_FOR_REQUESTS`):
    /// returns true if requests are waiting; otherwise sets
    /// `req_event = req_cons + 1`, fences, and checks again.
    pub fn final_check_for_requests(&mut self) -> Result<bool, RingError> {
        self.final_check_for_requests_after(1)
    }

    /// Like [`BackRing::final_check_for_requests`], but asks to be woken only
    /// once `n` (at least 1) more requests are published, e.g. netback
    /// waiting for enough RX buffers for a packet. The fence it makes pairs
    /// with the one in [`crate::FrontRing::publish_and_check_notify`].
    pub fn final_check_for_requests_after(&mut self, n: u32) -> Result<bool, RingError> {
        let rsp_prod_pvt = self.rsp.pvt;
        self.req.final_check(&mut self.core, n, |req, core| {
            Self::refresh(req, core, rsp_prod_pvt)
        })
    }

    /// The final check of a backend that needs `n` requests at once (netback
    /// waiting for the RX buffers of a whole packet): true if at least `n`
    /// (at least 1) requests are unconsumed; otherwise sets `req_event =
    /// req_cons + n`, so the frontend notifies when it publishes the `n`-th
    /// (requests already waiting do not count as a reason to wake, unlike
    /// [`BackRing::final_check_for_requests_after`]), fences, and checks
    /// again. The fence pairs with the one in
    /// [`crate::FrontRing::publish_and_check_notify`].
    pub fn final_check_for_requests_at_least(&mut self, n: u32) -> Result<bool, RingError> {
        let rsp_prod_pvt = self.rsp.pvt;
        self.req
            .final_check_at_least(&mut self.core, n, |req, core| {
                Self::refresh(req, core, rsp_prod_pvt)
            })
    }
}
