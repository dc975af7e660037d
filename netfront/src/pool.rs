//! The frontend's data pages and their grants.
//!
//! Every TX and RX byte goes through a page of the frontend domain's own
//! memory: the pool hands pages out LIFO, grows on demand (in chunks) up to
//! a cap, and ends grants. A grant the backend still holds when the
//! frontend ends it (a hostile or crashed peer) is never reused: its page
//! is quarantined until the hypervisor reports it released (NF4,
//! SECURITY.md G10). For an untrusted backend every page is zeroed before
//! it goes back to the free list, so a page granted later never shows stale
//! data (NF5).

use std::collections::HashMap;

use pvio_abi::{DomId, GrantRef, PAGE_SIZE};
use pvio_grant::EndAccess;
use pvio_hv::Domain;
use pvio_shmem::SharedMem;

use crate::NetError;

/// One data page and, while it is granted, its grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Buf {
    pub frame: u32,
    pub gref: Option<GrantRef>,
}

/// Pages of the frontend domain used for packet data.
#[derive(Debug)]
pub(crate) struct Pool {
    dom: Domain,
    /// Pages ready for use (LIFO), not granted.
    free: Vec<u32>,
    /// Pages the pool owns (free, in use, or quarantined).
    owned: usize,
    cap: usize,
    /// Grants whose end was deferred because the backend still used them:
    /// grant → frame, back to `free` once released ([`Pool::reclaim`]).
    deferred: HashMap<GrantRef, u32>,
    /// Zero pages when they come back (untrusted backend: NF5).
    pub zero: bool,
}

impl Pool {
    pub(crate) fn new(dom: Domain, cap: usize) -> Pool {
        Pool {
            dom,
            free: Vec::new(),
            owned: 0,
            cap,
            deferred: HashMap::new(),
            zero: false,
        }
    }

    /// One page (zeroed if it was ever used with an untrusted backend), or
    /// `None` when the pool is at its cap or the domain has no memory.
    pub(crate) fn take(&mut self) -> Option<u32> {
        if self.free.is_empty() {
            let _ = self.reclaim();
        }
        if self.free.is_empty() {
            let want = 64.min(self.cap.saturating_sub(self.owned));
            if want == 0 {
                return None;
            }
            let got = self.dom.alloc_frames(want)?;
            self.owned += got.len();
            self.free.extend(got);
        }
        self.free.pop()
    }

    /// Returns an ungranted page.
    pub(crate) fn give(&mut self, frame: u32) {
        if self.zero {
            self.zero_page(frame);
        }
        self.free.push(frame);
    }

    pub(crate) fn zero_page(&self, frame: u32) {
        let _ = self
            .dom
            .memory()
            .fill(frame as usize * PAGE_SIZE, PAGE_SIZE, 0);
    }

    /// Grants `frame` to `backend`.
    pub(crate) fn grant(
        &self,
        backend: DomId,
        frame: u32,
        readonly: bool,
    ) -> Result<GrantRef, NetError> {
        self.dom
            .grant_access(backend, frame, readonly)
            .map_err(|e| NetError::Grant(e.to_string()))
    }

    /// Ends the grant of `buf` (if any) and frees the page, or quarantines
    /// it when the backend still holds the grant. True if the page came
    /// back.
    pub(crate) fn release(&mut self, buf: Buf) -> bool {
        if let Some(g) = buf.gref
            && !self.end(g, buf.frame)
        {
            return false;
        }
        self.give(buf.frame);
        true
    }

    /// Ends one grant; false if it was deferred (the page is quarantined).
    pub(crate) fn end(&mut self, g: GrantRef, frame: u32) -> bool {
        match self.dom.end_access_deferred(g) {
            Ok(EndAccess::Ended) => true,
            Ok(EndAccess::Deferred) => {
                self.deferred.insert(g, frame);
                false
            }
            // The grant is already gone (domain teardown): nothing holds it.
            Err(_) => true,
        }
    }

    /// Takes over a page the pool did not hand out (a ring's), granted as
    /// `g`: freed to the domain, or quarantined in the pool while the
    /// backend still holds it.
    pub(crate) fn adopt(&mut self, frame: u32, g: Option<GrantRef>) {
        if let Some(g) = g
            && !self.end(g, frame)
        {
            self.owned += 1;
            return;
        }
        self.dom.free_frames(&[frame]);
    }

    /// Pages whose deferred grants the backend has since released go back
    /// to the free list. Returns how many.
    pub(crate) fn reclaim(&mut self) -> usize {
        if self.deferred.is_empty() {
            return 0;
        }
        let mut back = Vec::new();
        let _ = self.dom.poll_deferred(|g| back.push(g));
        let mut n = 0;
        for g in back {
            if let Some(f) = self.deferred.remove(&g) {
                self.give(f);
                n += 1;
            }
        }
        n
    }

    /// Pages whose grants a backend still holds after it should have let go.
    pub(crate) fn quarantined(&self) -> usize {
        self.deferred.len()
    }

    /// Frees every page not quarantined (the device is closing).
    pub(crate) fn free_all(&mut self) {
        let _ = self.reclaim();
        self.dom.free_frames(&self.free);
        self.owned -= self.free.len();
        self.free.clear();
    }
}
