//! The frontend's data pages and their grants.
//!
//! Every byte of I/O goes through pages of the frontend domain's own memory
//! (the caller's buffers are not domain memory): the pool hands them out
//! LIFO (a small hot set is reused, as spec/blkif.md §5 recommends), grows
//! on demand up to a cap, and tracks the grants on them. With persistent
//! grants a page is granted writable once per connection and stays
//! granted; otherwise each use grants it (read-only for data the backend
//! only reads) and ends the grant after the response. A grant the backend
//! still holds when it should not (a hostile or crashed peer) is never
//! reused: its page is quarantined until the hypervisor reports it released
//! (SECURITY.md G10).

use std::collections::HashMap;

use pvio_abi::{DomId, GrantRef, PAGE_SIZE};
use pvio_grant::EndAccess;
use pvio_hv::Domain;
use pvio_shmem::SharedMem;

use crate::BlkError;

/// Pages of the frontend domain used for data and indirect descriptors.
#[derive(Debug)]
pub(crate) struct Pool {
    dom: Domain,
    /// Pages ready for use (LIFO).
    free: Vec<u32>,
    /// Pages the pool owns (free, in use, or quarantined).
    owned: usize,
    cap: usize,
    /// Persistent grants of this connection: frame → grant (writable).
    persistent: HashMap<u32, GrantRef>,
    /// Grants whose end was deferred because the backend still used them:
    /// grant → frame, released to `free` by [`Pool::reclaim`].
    deferred: HashMap<GrantRef, u32>,
    /// Zero pages before granting and after use (untrusted backend: BF4).
    pub zero: bool,
}

impl Pool {
    pub(crate) fn new(dom: Domain, cap: usize) -> Pool {
        Pool {
            dom,
            free: Vec::new(),
            owned: 0,
            cap,
            persistent: HashMap::new(),
            deferred: HashMap::new(),
            zero: false,
        }
    }

    /// `n` pages, or `None` when the pool is at its cap (wait for
    /// completions) or the domain is out of memory.
    pub(crate) fn take(&mut self, n: usize) -> Option<Vec<u32>> {
        if self.free.len() < n {
            let _ = self.reclaim();
        }
        if self.free.len() < n {
            // (Reclaimed pages may already cover `n`.)
            let want = (n - self.free.len()).max(16.min(self.cap.saturating_sub(self.owned)));
            if self.owned + want > self.cap {
                return None;
            }
            let got = self.dom.alloc_frames(want)?;
            self.owned += got.len();
            self.free.extend(got);
            if self.free.len() < n {
                return None;
            }
        }
        Some(self.free.split_off(self.free.len() - n))
    }

    /// Returns pages after use (zeroed first for an untrusted backend).
    pub(crate) fn give(&mut self, frames: &[u32]) {
        for &f in frames {
            if self.zero {
                self.zero_page(f);
            }
            self.free.push(f);
        }
    }

    pub(crate) fn zero_page(&self, frame: u32) {
        let _ = self
            .dom
            .memory()
            .fill(frame as usize * PAGE_SIZE, PAGE_SIZE, 0);
    }

    /// The grant of `frame` for this request: the page's persistent grant
    /// (made on first use), or a fresh one recorded in `temp`.
    pub(crate) fn grant(
        &mut self,
        backend: DomId,
        frame: u32,
        readonly: bool,
        persistent: bool,
        temp: &mut Vec<(GrantRef, u32)>,
    ) -> Result<GrantRef, BlkError> {
        if persistent {
            if let Some(&g) = self.persistent.get(&frame) {
                return Ok(g);
            }
            let g = self
                .dom
                .grant_access(backend, frame, false)
                .map_err(|e| BlkError::Grant(e.to_string()))?;
            self.persistent.insert(frame, g);
            return Ok(g);
        }
        let g = self
            .dom
            .grant_access(backend, frame, readonly)
            .map_err(|e| BlkError::Grant(e.to_string()))?;
        temp.push((g, frame));
        Ok(g)
    }

    /// Ends the per-request grants in `temp` and returns `frames` to the
    /// pool; a page whose grant the
    /// backend still holds is quarantined instead.
    pub(crate) fn release(&mut self, frames: &[u32], temp: &mut Vec<(GrantRef, u32)>) {
        let mut busy: Vec<u32> = Vec::new();
        for (g, f) in temp.drain(..) {
            if !self.end(g, f) {
                busy.push(f);
            }
        }
        for &f in frames {
            if !busy.contains(&f) {
                if self.zero {
                    self.zero_page(f);
                }
                self.free.push(f);
            }
        }
    }

    /// Ends one grant; false if it was deferred (the page is quarantined).
    fn end(&mut self, g: GrantRef, frame: u32) -> bool {
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

    /// Takes over pages the pool did not hand out (a ring's): ends their
    /// grants in `temp` and frees them to the domain, or quarantines those
    /// the backend still holds (they join the pool once released).
    pub(crate) fn adopt(&mut self, frames: &[u32], temp: &mut Vec<(GrantRef, u32)>) {
        let mut busy = Vec::new();
        for (g, f) in temp.drain(..) {
            if !self.end(g, f) {
                self.owned += 1;
                busy.push(f);
            }
        }
        let free: Vec<u32> = frames
            .iter()
            .copied()
            .filter(|f| !busy.contains(f))
            .collect();
        self.dom.free_frames(&free);
    }

    /// Ends every persistent grant (at disconnect); pages still held by the
    /// backend are quarantined and leave the free list.
    pub(crate) fn end_persistent(&mut self) {
        let grants: Vec<(u32, GrantRef)> = self.persistent.drain().collect();
        for (f, g) in grants {
            if !self.end(g, f) {
                self.free.retain(|&x| x != f);
            }
        }
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
                self.give(&[f]);
                n += 1;
            }
        }
        n
    }

    /// Pages whose grants are still held by a backend that should have let
    /// go.
    pub(crate) fn quarantined(&self) -> usize {
        self.deferred.len()
    }

    /// Persistent grants of this connection.
    pub(crate) fn persistent_grants(&self) -> usize {
        self.persistent.len()
    }

    /// Frees every page not quarantined (the device is closing). Persistent
    /// grants must have been ended.
    pub(crate) fn free_all(&mut self) {
        let _ = self.reclaim();
        self.dom.free_frames(&self.free);
        self.owned -= self.free.len();
        self.free.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvio_hv::{DomainConfig, Hypervisor};

    /// Pages a backend held past the end of their request come back through
    /// `reclaim` inside `take`; when they alone cover the request, `take`
    /// serves them (it computed `n - free` after the reclaim and underflowed:
    /// a panic in debug builds, seen in the hosted L2 test under load).
    #[test]
    fn take_served_by_reclaimed_pages() {
        let hv = Hypervisor::new();
        let fe = hv.create_domain(DomId(1), DomainConfig::default()).unwrap();
        let be = hv.create_domain(DomId(2), DomainConfig::default()).unwrap();
        let mut pool = Pool::new(fe.clone(), 8);
        let frames = pool.take(8).unwrap();
        let mut temp = Vec::new();
        let grefs: Vec<GrantRef> = frames
            .iter()
            .map(|&f| pool.grant(be.id(), f, false, false, &mut temp).unwrap())
            .collect();
        // The backend still maps all eight when the request ends.
        let maps: Vec<_> = grefs.iter().map(|&g| be.map(fe.id(), g).unwrap()).collect();
        pool.release(&frames, &mut temp);
        assert_eq!(pool.quarantined(), 8);
        assert!(pool.take(1).is_none(), "at the cap, nothing free");
        drop(maps);
        // All eight come back in `take`'s reclaim; five of them serve it.
        let got = pool.take(5).expect("served from reclaimed pages");
        assert_eq!(got.len(), 5);
        assert_eq!(pool.quarantined(), 0);
    }
}
