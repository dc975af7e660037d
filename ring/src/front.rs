use pvio_shmem::{Ordering, Pod, SharedMem};

use crate::side::{Batch, Consumer, Core, Producer};
use crate::{
    Fault, Geometry, Notify, RingError, RingStats, SetupError, check_mem, check_slots, layout,
};

/// Requests reserved by [`FrontRing::reserve`]: fill with
/// [`Batch::push`] or [`Batch::fill_with`], then publish with one index
/// store.
pub type RequestBatch<'a, M, Req, Rsp> = Batch<'a, M, Req, Rsp, Req>;

/// The frontend's end of a ring: produces requests, consumes responses.
///
/// Private state (`spec/ring.md` §4): `req_prod_pvt` (next request slot) and
/// `rsp_cons` (next response to consume), plus the `req_prod` this side last
/// published and the last validated snapshot of the backend's `rsp_prod`.
/// The frontend never trusts the shared copies of its own indices: a backend
/// could rewrite them.
#[derive(Debug)]
pub struct FrontRing<M, Req, Rsp> {
    core: Core<M, Req, Rsp>,
    req: Producer,
    rsp: Consumer,
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
            core: Core::new(mem, geo),
            req: Producer::new(start, layout::REQ_PROD, layout::REQ_EVENT),
            rsp: Consumer::new(start, layout::RSP_PROD, layout::RSP_EVENT),
        }
    }

    /// Number of slots.
    #[inline]
    pub fn nr_ents(&self) -> u32 {
        self.core.geo.nr_ents
    }

    /// Requests pushed (published or not) whose responses are not yet
    /// consumed.
    #[inline]
    pub fn outstanding(&self) -> u32 {
        self.req.pvt.wrapping_sub(self.rsp.cons)
    }

    /// Slots free for new requests: `nr_ents - (req_prod_pvt - rsp_cons)`.
    #[inline]
    pub fn free_requests(&self) -> u32 {
        self.nr_ents() - self.outstanding()
    }

    /// Whether every slot holds an outstanding request.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// The private indices `(req_prod_pvt, rsp_cons)`.
    #[inline]
    pub fn indices(&self) -> (u32, u32) {
        (self.req.pvt, self.rsp.cons)
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

    /// Writes `req` into the next free slot without publishing it.
    #[inline]
    pub fn push_request(&mut self, req: &Req) -> Result<(), RingError> {
        let mut batch = self.reserve(1)?;
        batch.push(req)?;
        batch.commit();
        Ok(())
    }

    /// Reserves `n` free slots for a batch: fill it with [`Batch::push`] or
    /// [`Batch::fill_with`], then publish it with one index store.
    pub fn reserve(&mut self, n: u32) -> Result<RequestBatch<'_, M, Req, Rsp>, RingError> {
        self.core.check()?;
        if n > self.free_requests() {
            return Err(RingError::Full);
        }
        Ok(Batch {
            core: &mut self.core,
            prod: &mut self.req,
            reserved: n,
            filled: 0,
            exhausted: RingError::Full,
            _msg: core::marker::PhantomData,
        })
    }

    /// Publishes every pushed request (one `Release` store of `req_prod`).
    #[inline]
    pub fn publish(&mut self) -> Result<(), RingError> {
        self.req.publish(&mut self.core)
    }

    /// Publishes every pushed request and says whether the backend must be
    /// notified (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`). The fence it makes
    /// pairs with the one in [`crate::BackRing::final_check_for_requests`].
    pub fn publish_and_check_notify(&mut self) -> Result<Notify, RingError> {
        self.req.publish_and_check_notify(&mut self.core)
    }

    /// Reads `rsp_prod` once and validates it: it must lie between `rsp_cons`
    /// and the `req_prod` this side published (a backend cannot answer
    /// requests it was never given; SECURITY.md R11). Returns the number of
    /// unconsumed responses.
    fn refresh(
        rsp: &mut Consumer,
        core: &mut Core<M, Req, Rsp>,
        req_prod: u32,
    ) -> Result<u32, RingError> {
        let rsp_cons = rsp.cons;
        rsp.refresh(core, req_prod.wrapping_sub(rsp_cons), |rsp_prod| {
            Fault::ResponseOverflow {
                rsp_prod,
                rsp_cons,
                req_prod,
            }
        })
    }

    /// Unconsumed responses (`RING_HAS_UNCONSUMED_RESPONSES`), re-reading
    /// and validating `rsp_prod`.
    pub fn unconsumed_responses(&mut self) -> Result<u32, RingError> {
        Self::refresh(&mut self.rsp, &mut self.core, self.req.published)
    }

    /// Up to `limit` responses to consume: from the last snapshot of
    /// `rsp_prod` if it holds that many, else from a fresh validated read.
    #[inline]
    fn available(&mut self, limit: u32) -> Result<u32, RingError> {
        self.core.check()?;
        if self.rsp.cached() >= limit {
            return Ok(limit);
        }
        Ok(self.unconsumed_responses()?.min(limit))
    }

    /// Copies the next response out of the ring, if one is visible.
    ///
    /// `rsp_prod` is re-read only when the last snapshot is used up, so a
    /// burst of responses costs one shared-index read.
    #[inline]
    pub fn next_response(&mut self) -> Result<Option<Rsp>, RingError> {
        let mut out = None;
        self.drain_responses(1, |r| out = Some(r))?;
        Ok(out)
    }

    /// Consumes up to `limit` visible responses, handing each to `f` by
    /// value, in order, with one bounds check per contiguous run of slots.
    /// Returns how many were consumed.
    pub fn drain_responses(
        &mut self,
        limit: u32,
        mut f: impl FnMut(Rsp),
    ) -> Result<u32, RingError> {
        let avail = self.available(limit)?;
        let entry = Geometry::<Req, Rsp>::ENTRY;
        for (off, n) in self.core.geo.runs(self.rsp.cons, avail) {
            if let Err(e) = self.core.mem.read_records::<Rsp>(off, entry, n, &mut f) {
                return Err(self.core.mem_fault(e));
            }
        }
        self.rsp.cons = self.rsp.cons.wrapping_add(avail);
        self.core.stats.consumed += u64::from(avail);
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
    /// capped at the outstanding requests so the wakeup always comes. The
    /// fence it makes pairs with the one in
    /// [`crate::BackRing::publish_and_check_notify`].
    pub fn final_check_for_responses_after(&mut self, n: u32) -> Result<bool, RingError> {
        let req_prod = self.req.published;
        let n = n.clamp(1, req_prod.wrapping_sub(self.rsp.cons).max(1));
        self.rsp.final_check(&mut self.core, n, |rsp, core| {
            Self::refresh(rsp, core, req_prod)
        })
    }
}
