//! The grantee's grant operations: map, unmap and copy, each validated by
//! the hypervisor against the granter's grant table (`spec/grant.md` §4.4).

use std::fmt;
use std::sync::Arc;

use pvio_abi::grant::GntStatus;
use pvio_abi::{DomId, GrantHandle, GrantRef, PAGE_SIZE};
use pvio_grant::PinKind;
use pvio_shmem::{MemError, MemfdMem, SharedMem, Window};

use crate::Inner;
use crate::domain::{Domain, DomainState, domain_lock};
use crate::pages::MappedPages;

/// One live mapping of another domain's grant.
pub(crate) struct MapEntry {
    granter: Arc<DomainState>,
    gref: u32,
    kind: PinKind,
    frame: u32,
}

/// A domain's mappings of other domains' grants (Xen's maptrack), indexed
/// by handle.
pub(crate) struct Maptrack {
    slots: Vec<Option<MapEntry>>,
    free: Vec<u32>,
    max: usize,
    live: usize,
}

impl Maptrack {
    pub(crate) fn new(max: usize) -> Self {
        Maptrack {
            slots: Vec::new(),
            free: Vec::new(),
            max,
            live: 0,
        }
    }

    fn insert(&mut self, e: MapEntry) -> Result<u32, GntStatus> {
        if self.live >= self.max {
            return Err(GntStatus::NoSpace);
        }
        let h = match self.free.pop() {
            Some(h) => {
                self.slots[h as usize] = Some(e);
                h
            }
            None => {
                self.slots.push(Some(e));
                (self.slots.len() - 1) as u32
            }
        };
        self.live += 1;
        Ok(h)
    }

    fn remove(&mut self, h: u32) -> Option<MapEntry> {
        let e = self.slots.get_mut(h as usize)?.take()?;
        self.free.push(h);
        self.live -= 1;
        Some(e)
    }

    fn get(&self, h: u32) -> Option<&MapEntry> {
        self.slots.get(h as usize)?.as_ref()
    }

    pub(crate) fn live(&self) -> usize {
        self.live
    }
}

/// Releases every mapping `st` holds (it is being destroyed), a chunk of
/// pins per lock hold so other domains' grant operations interleave (G12).
pub(crate) fn release_all_mappings(_hv: &Inner, st: &DomainState) {
    const CHUNK: usize = 64;
    loop {
        let batch: Vec<MapEntry> = {
            let mut mt = domain_lock(&st.maptrack);
            let handles: Vec<u32> = (0..mt.slots.len() as u32)
                .filter(|&h| mt.get(h).is_some())
                .take(CHUNK)
                .collect();
            handles.into_iter().filter_map(|h| mt.remove(h)).collect()
        };
        if batch.is_empty() {
            break;
        }
        for e in batch {
            let mut active = domain_lock(&e.granter.active);
            let _ = active.unpin(&*e.granter.table_mem, e.gref, e.kind);
        }
        std::thread::yield_now();
    }
    // Pins this domain's grants still carry belong to mappings other
    // domains hold; they stay valid (the memory lives while mapped).
}

/// A side of a [`CopyOp`] that is read.
#[derive(Debug)]
pub enum CopySrc<'a> {
    /// Bytes of another (or this) domain's granted frame.
    Gref {
        /// The granter.
        domid: DomId,
        /// The grant.
        gref: GrantRef,
        /// Byte offset in the frame.
        offset: u16,
    },
    /// Bytes of one of the caller's own frames.
    Frame {
        /// The frame.
        frame: u32,
        /// Byte offset in the frame.
        offset: u16,
    },
    /// A buffer of the calling process.
    Buf(&'a [u8]),
}

/// A side of a [`CopyOp`] that is written.
#[derive(Debug)]
pub enum CopyDst<'a> {
    /// Bytes of another (or this) domain's frame, granted writable.
    Gref {
        /// The granter.
        domid: DomId,
        /// The grant.
        gref: GrantRef,
        /// Byte offset in the frame.
        offset: u16,
    },
    /// Bytes of one of the caller's own frames.
    Frame {
        /// The frame.
        frame: u32,
        /// Byte offset in the frame.
        offset: u16,
    },
    /// A buffer of the calling process.
    Buf(&'a mut [u8]),
}

/// One grant copy (`GNTTABOP_copy`): `len` bytes from `src` to `dst`, with
/// its own status after [`Domain::grant_copy`].
#[derive(Debug)]
pub struct CopyOp<'a> {
    /// Where the bytes come from.
    pub src: CopySrc<'a>,
    /// Where they go.
    pub dst: CopyDst<'a>,
    /// How many (at most a page).
    pub len: u16,
    /// Set by the copy: `Okay` or the first error.
    pub status: GntStatus,
}

impl<'a> CopyOp<'a> {
    /// An operation, status `Okay` until performed.
    pub fn new(src: CopySrc<'a>, dst: CopyDst<'a>, len: u16) -> Self {
        CopyOp {
            src,
            dst,
            len,
            status: GntStatus::Okay,
        }
    }
}

/// A resolved frame side of a copy: the window, and the pin to drop.
struct Side {
    win: Window<Arc<MemfdMem>>,
    offset: usize,
    pin: Option<(Arc<DomainState>, u32, PinKind)>,
}

impl Side {
    fn release(self) {
        if let Some((granter, gref, kind)) = self.pin {
            let _ = domain_lock(&granter.active).unpin(&*granter.table_mem, gref, kind);
        }
    }
}

fn mem_status(_: MemError) -> GntStatus {
    GntStatus::GeneralError
}

impl Domain {
    fn live(&self) -> Result<(), GntStatus> {
        if self.st.is_dead() {
            Err(GntStatus::BadDomain)
        } else {
            Ok(())
        }
    }

    fn granter_state(&self, granter: DomId) -> Result<Arc<DomainState>, GntStatus> {
        self.hv.domain(granter).ok_or(GntStatus::BadDomain)
    }

    /// Pins `gref` of `granter` for this domain and returns the frame window.
    fn pin(
        &self,
        granter: &Arc<DomainState>,
        gref: u32,
        kind: PinKind,
    ) -> Result<(u32, Window<Arc<MemfdMem>>), GntStatus> {
        let frame =
            domain_lock(&granter.active).pin(&*granter.table_mem, gref, self.st.id, kind)?;
        match granter.frame_window(frame) {
            Some(w) => Ok((frame, w)),
            None => {
                let _ = domain_lock(&granter.active).unpin(&*granter.table_mem, gref, kind);
                Err(GntStatus::BadPage)
            }
        }
    }

    fn count(&self, ok: bool) {
        let mut s = domain_lock(&self.st.stats);
        if !ok {
            s.errors += 1;
        }
    }

    /// Maps grant `gref` of domain `granter` (`GNTTABOP_map_grant_ref`),
    /// read-only or writable; returns the handle that unmaps it. Fails with
    /// Xen's status: `BadDomain`, `BadGntref` (out of range), `GeneralError`
    /// (not granted to this domain, wrong type, writable map of a read-only
    /// grant, or a granter flipping its flags: G2–G5), `NoSpace` (this
    /// domain's mapping limit, or the entry's pin limit: G6), `BadPage`.
    pub fn map_grant(
        &self,
        granter: DomId,
        gref: GrantRef,
        readonly: bool,
    ) -> Result<GrantHandle, GntStatus> {
        let r = self.map_grant_inner(granter, gref, readonly);
        self.count(r.is_ok());
        r
    }

    fn map_grant_inner(
        &self,
        granter: DomId,
        gref: GrantRef,
        readonly: bool,
    ) -> Result<GrantHandle, GntStatus> {
        self.live()?;
        let g = self.granter_state(granter)?;
        {
            let mt = domain_lock(&self.st.maptrack);
            if mt.live() >= mt.max {
                return Err(GntStatus::NoSpace);
            }
        }
        let kind = if readonly {
            PinKind::Read
        } else {
            PinKind::Write
        };
        let (frame, _) = self.pin(&g, gref.0, kind)?;
        let entry = MapEntry {
            granter: g.clone(),
            gref: gref.0,
            kind,
            frame,
        };
        match domain_lock(&self.st.maptrack).insert(entry) {
            Ok(h) => {
                domain_lock(&self.st.stats).maps += 1;
                Ok(GrantHandle(h))
            }
            Err(e) => {
                let _ = domain_lock(&g.active).unpin(&*g.table_mem, gref.0, kind);
                Err(e)
            }
        }
    }

    /// Maps a batch of grants; each gets its own status, and the successes
    /// stay mapped (and unmappable) whatever the others did (G7).
    pub fn map_grants(
        &self,
        grants: &[(DomId, GrantRef)],
        readonly: bool,
    ) -> Vec<Result<GrantHandle, GntStatus>> {
        grants
            .iter()
            .map(|&(d, g)| self.map_grant(d, g, readonly))
            .collect()
    }

    /// Unmaps `handle` (`GNTTABOP_unmap_grant_ref`). An unknown or already
    /// unmapped handle is `BadHandle` and changes nothing (G8).
    pub fn unmap_grant(&self, handle: GrantHandle) -> Result<(), GntStatus> {
        let e = domain_lock(&self.st.maptrack)
            .remove(handle.0)
            .ok_or(GntStatus::BadHandle);
        let r = e.map(|e| {
            let _ = domain_lock(&e.granter.active).unpin(&*e.granter.table_mem, e.gref, e.kind);
            domain_lock(&self.st.stats).unmaps += 1;
        });
        self.count(r.is_ok());
        r
    }

    /// Mappings this domain holds.
    pub fn live_mappings(&self) -> usize {
        domain_lock(&self.st.maptrack).live()
    }

    /// The frame behind a writable mapping `handle`.
    fn mapped_window(
        &self,
        handle: GrantHandle,
    ) -> Result<(Window<Arc<MemfdMem>>, PinKind), GntStatus> {
        let mt = domain_lock(&self.st.maptrack);
        let e = mt.get(handle.0).ok_or(GntStatus::BadHandle)?;
        let w = e.granter.frame_window(e.frame).ok_or(GntStatus::BadPage)?;
        Ok((w, e.kind))
    }

    /// Maps `gref` of `granter` writable, as a region that unmaps itself
    /// when dropped.
    pub fn map(&self, granter: DomId, gref: GrantRef) -> Result<Mapping, GntStatus> {
        let handle = self.map_grant(granter, gref, false)?;
        let (win, _) = self.mapped_window(handle)?;
        Ok(Mapping {
            win,
            handle,
            dom: self.clone(),
        })
    }

    /// Maps `gref` of `granter` read-only: the mapping offers no way to
    /// write (G3, at the type level).
    pub fn map_readonly(
        &self,
        granter: DomId,
        gref: GrantRef,
    ) -> Result<ReadOnlyMapping, GntStatus> {
        let handle = self.map_grant(granter, gref, true)?;
        let (win, _) = self.mapped_window(handle)?;
        Ok(ReadOnlyMapping {
            win,
            handle,
            dom: self.clone(),
        })
    }

    /// Maps the grants `grefs` of `granter` writable as one region of
    /// `grefs.len()` pages in that order (a multi-page ring: `spec/ring.md`
    /// §9). All or nothing: on any failure the pages mapped so far are
    /// unmapped and the first error is returned.
    pub fn map_pages(&self, granter: DomId, grefs: &[GrantRef]) -> Result<MappedPages, GntStatus> {
        let mut handles = Vec::with_capacity(grefs.len());
        let mut frames = Vec::with_capacity(grefs.len());
        for &g in grefs {
            match self.map_grant(granter, g, false).and_then(|h| {
                let f = domain_lock(&self.st.maptrack)
                    .get(h.0)
                    .map(|e| e.frame)
                    .ok_or(GntStatus::BadHandle)?;
                Ok((h, f))
            }) {
                Ok((h, f)) => {
                    handles.push(h);
                    frames.push(f);
                }
                Err(e) => {
                    for h in handles {
                        let _ = self.unmap_grant(h);
                    }
                    return Err(e);
                }
            }
        }
        let g = self.granter_state(granter)?;
        MappedPages::new(self.clone(), &g, handles, &frames).ok_or(GntStatus::BadPage)
    }

    fn resolve_src(&self, src: &CopySrc<'_>, len: usize) -> Result<Option<Side>, GntStatus> {
        match *src {
            CopySrc::Gref {
                domid,
                gref,
                offset,
            } => {
                check_in_page(offset, len)?;
                let g = self.granter_state(domid)?;
                let (_, win) = self.pin(&g, gref.0, PinKind::Read)?;
                Ok(Some(Side {
                    win,
                    offset: offset as usize,
                    pin: Some((g, gref.0, PinKind::Read)),
                }))
            }
            CopySrc::Frame { frame, offset } => {
                check_in_page(offset, len)?;
                let win = self.st.frame_window(frame).ok_or(GntStatus::BadPage)?;
                Ok(Some(Side {
                    win,
                    offset: offset as usize,
                    pin: None,
                }))
            }
            CopySrc::Buf(b) => {
                if b.len() < len {
                    return Err(GntStatus::BadCopyArg);
                }
                Ok(None)
            }
        }
    }

    fn resolve_dst(&self, dst: &CopyDst<'_>, len: usize) -> Result<Option<Side>, GntStatus> {
        match *dst {
            CopyDst::Gref {
                domid,
                gref,
                offset,
            } => {
                check_in_page(offset, len)?;
                let g = self.granter_state(domid)?;
                let (_, win) = self.pin(&g, gref.0, PinKind::Write)?;
                Ok(Some(Side {
                    win,
                    offset: offset as usize,
                    pin: Some((g, gref.0, PinKind::Write)),
                }))
            }
            CopyDst::Frame { frame, offset } => {
                check_in_page(offset, len)?;
                let win = self.st.frame_window(frame).ok_or(GntStatus::BadPage)?;
                Ok(Some(Side {
                    win,
                    offset: offset as usize,
                    pin: None,
                }))
            }
            CopyDst::Buf(ref b) => {
                if b.len() < len {
                    return Err(GntStatus::BadCopyArg);
                }
                Ok(None)
            }
        }
    }

    fn copy_one(&self, op: &mut CopyOp<'_>) -> Result<(), GntStatus> {
        self.live()?;
        let len = op.len as usize;
        if len == 0 {
            // Xen: a zero-length copy is a no-op success; nothing is
            // validated, not even the references (G13).
            return Ok(());
        }
        if len > PAGE_SIZE {
            return Err(GntStatus::BadCopyArg);
        }
        let src = self.resolve_src(&op.src, len)?;
        let dst = match self.resolve_dst(&op.dst, len) {
            Ok(d) => d,
            Err(e) => {
                if let Some(s) = src {
                    s.release();
                }
                return Err(e);
            }
        };
        let local_only = src.as_ref().is_none_or(|s| s.pin.is_none())
            && dst.as_ref().is_none_or(|d| d.pin.is_none());
        if local_only {
            // At least one side must be a grant: a local-to-local copy is not
            // a grant operation (gntdev refuses it too).
            for side in [src, dst].into_iter().flatten() {
                side.release();
            }
            return Err(GntStatus::BadCopyArg);
        }
        let r = match (&src, &dst, &op.src, &mut op.dst) {
            (Some(s), Some(d), _, _) => pvio_shmem::copy(&s.win, s.offset, &d.win, d.offset, len),
            (Some(s), None, _, CopyDst::Buf(b)) => s.win.read_bytes(s.offset, &mut b[..len]),
            (None, Some(d), CopySrc::Buf(b), _) => d.win.write_bytes(d.offset, &b[..len]),
            _ => Err(MemError::OutOfBounds {
                offset: 0,
                len,
                size: 0,
            }),
        };
        for side in [src, dst].into_iter().flatten() {
            side.release();
        }
        r.map_err(mem_status)
    }

    /// Performs a batch of grant copies (`GNTTABOP_copy`), setting each
    /// operation's status. Each side is checked as Xen does: a grant must be
    /// granted to this domain (writable for a destination), offsets and
    /// length must stay inside the page (`BadCopyArg`), a zero-length copy
    /// succeeds without validating anything (G13). Returns how many
    /// succeeded.
    pub fn grant_copy(&self, ops: &mut [CopyOp<'_>]) -> usize {
        let mut ok = 0;
        let mut bytes = 0u64;
        for op in ops.iter_mut() {
            op.status = match self.copy_one(op) {
                Ok(()) => {
                    ok += 1;
                    bytes += u64::from(op.len);
                    GntStatus::Okay
                }
                Err(e) => e,
            };
        }
        let mut s = domain_lock(&self.st.stats);
        s.copies += ok as u64;
        s.copied_bytes += bytes;
        s.errors += (ops.len() - ok) as u64;
        ok
    }
}

fn check_in_page(offset: u16, len: usize) -> Result<(), GntStatus> {
    if offset as usize + len > PAGE_SIZE {
        Err(GntStatus::BadCopyArg)
    } else {
        Ok(())
    }
}

/// A writable mapping of another domain's granted frame: a one-page
/// [`SharedMem`] region. Dropping it unmaps the grant.
pub struct Mapping {
    win: Window<Arc<MemfdMem>>,
    handle: GrantHandle,
    dom: Domain,
}

impl Mapping {
    /// The handle (for [`Domain::unmap_grant`]-level bookkeeping).
    pub fn handle(&self) -> GrantHandle {
        self.handle
    }
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("handle", &self.handle.0)
            .finish()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let _ = self.dom.unmap_grant(self.handle);
    }
}

pvio_shmem::delegate_shared_mem!(Mapping => win);

/// A read-only mapping of another domain's granted frame: it can be read,
/// never written (there is no write method; SECURITY.md G3 at the type
/// level). Dropping it unmaps the grant.
///
/// ```compile_fail
/// # fn f(ro: &pvio_hv::ReadOnlyMapping) {
/// use pvio_shmem::SharedMem;
/// ro.write_bytes(0, b"no"); // a read-only mapping is not a SharedMem
/// # }
/// ```
pub struct ReadOnlyMapping {
    win: Window<Arc<MemfdMem>>,
    handle: GrantHandle,
    dom: Domain,
}

impl fmt::Debug for ReadOnlyMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadOnlyMapping")
            .field("handle", &self.handle.0)
            .finish()
    }
}

impl ReadOnlyMapping {
    /// The handle.
    pub fn handle(&self) -> GrantHandle {
        self.handle
    }

    /// Size in bytes (one page).
    pub fn size(&self) -> usize {
        self.win.size()
    }

    /// Copies bytes out (each read once).
    pub fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<(), MemError> {
        self.win.read_bytes(offset, dst)
    }

    /// Copies a `T` out at an offset aligned for it.
    pub fn read_pod<T: pvio_shmem::Pod>(&self, offset: usize) -> Result<T, MemError> {
        self.win.read_pod(offset)
    }

    /// Copies `n` records of a stride out (see [`SharedMem::read_records`]).
    pub fn read_records<T: pvio_shmem::Pod>(
        &self,
        offset: usize,
        stride: usize,
        n: usize,
        f: impl FnMut(T),
    ) -> Result<(), MemError> {
        self.win.read_records(offset, stride, n, f)
    }

    /// Copies `len` bytes from this mapping into a writable region.
    pub fn copy_to<D: SharedMem>(
        &self,
        offset: usize,
        dst: &D,
        dst_offset: usize,
        len: usize,
    ) -> Result<(), MemError> {
        pvio_shmem::copy(&self.win, offset, dst, dst_offset, len)
    }
}

impl Drop for ReadOnlyMapping {
    fn drop(&mut self) {
        let _ = self.dom.unmap_grant(self.handle);
    }
}
