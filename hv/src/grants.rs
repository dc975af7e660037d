//! The grantee's grant operations: map, unmap and copy, each validated by
//! the hypervisor against the granter's grant table (`spec/grant.md` §4.4).

use std::fmt;
use std::sync::{Arc, MutexGuard};

use pvio_abi::grant::GntStatus;
use pvio_abi::{DomId, GrantHandle, GrantRef, PAGE_SIZE};
use pvio_grant::{ActiveGrants, PinKind};
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
#[derive(Debug, Clone, Copy)]
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
        if let Some(r) = &self.remote {
            return r.map(&[(granter, gref)], readonly)[0].map(|(h, _, _)| h);
        }
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
        if let Some(r) = &self.remote {
            return r
                .map(grants, readonly)
                .into_iter()
                .map(|x| x.map(|(h, _, _)| h))
                .collect();
        }
        grants
            .iter()
            .map(|&(d, g)| self.map_grant(d, g, readonly))
            .collect()
    }

    /// Unmaps `handle` (`GNTTABOP_unmap_grant_ref`). An unknown or already
    /// unmapped handle is `BadHandle` and changes nothing (G8).
    pub fn unmap_grant(&self, handle: GrantHandle) -> Result<(), GntStatus> {
        if let Some(r) = &self.remote {
            return r.unmap(&[handle])[0];
        }
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
        if let Some(r) = &self.remote {
            return r.live_mappings();
        }
        domain_lock(&self.st.maptrack).live()
    }

    /// The frame behind mapping `handle` and its granter's incarnation
    /// (hosted mode's daemon).
    pub(crate) fn mapping_info(&self, handle: GrantHandle) -> Result<(u32, u64), GntStatus> {
        let mt = domain_lock(&self.st.maptrack);
        let e = mt.get(handle.0).ok_or(GntStatus::BadHandle)?;
        Ok((e.frame, e.granter.inc))
    }

    /// The memory of granter `granter` (incarnation `inc`) if this domain
    /// has one of its grants mapped now, else `None` (hosted mode: the
    /// daemon hands a granter's memory only to its current mappers).
    pub(crate) fn mapped_granter_mem(&self, granter: DomId, inc: u64) -> Option<Arc<MemfdMem>> {
        let mt = domain_lock(&self.st.maptrack);
        mt.slots
            .iter()
            .flatten()
            .find(|e| e.granter.id == granter && e.granter.inc == inc)
            .map(|e| e.granter.mem.clone())
    }

    /// Hosted mode: maps a batch in one message and forms the windows on
    /// the granter's memory, mapped in this process. All or nothing.
    fn remote_map(
        &self,
        r: &crate::hosted::remote::RemoteDomain,
        granter: DomId,
        grefs: &[GrantRef],
        readonly: bool,
    ) -> Result<RemotePages, GntStatus> {
        let req: Vec<(DomId, GrantRef)> = grefs.iter().map(|&g| (granter, g)).collect();
        let res = r.map(&req, readonly);
        let ok: Vec<(GrantHandle, u32, u64)> = res.iter().filter_map(|x| x.ok()).collect();
        let first_err = res.iter().find_map(|x| x.err());
        let mem = match (first_err, ok.first()) {
            (None, Some(&(_, _, inc))) => r.granter_mem(granter, inc),
            (Some(e), _) => Err(e),
            (None, None) => Err(GntStatus::GeneralError),
        };
        let handles: Vec<GrantHandle> = ok.iter().map(|x| x.0).collect();
        match mem {
            Ok(m) => Ok((m, handles, ok.iter().map(|x| x.1).collect())),
            Err(e) => {
                if !handles.is_empty() {
                    let _ = r.unmap(&handles);
                }
                Err(e)
            }
        }
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
        if let Some(r) = &self.remote {
            let (mem, h, f) = self.remote_map(r, granter, &[gref], false)?;
            return Ok(Mapping {
                win: frame_window(mem, f[0]).ok_or(GntStatus::BadPage)?,
                handle: h[0],
                dom: self.clone(),
            });
        }
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
        if let Some(r) = &self.remote {
            let (mem, h, f) = self.remote_map(r, granter, &[gref], true)?;
            return Ok(ReadOnlyMapping {
                win: frame_window(mem, f[0]).ok_or(GntStatus::BadPage)?,
                handle: h[0],
                dom: self.clone(),
            });
        }
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
        if let Some(r) = &self.remote {
            let (mem, handles, frames) = self.remote_map(r, granter, grefs, false)?;
            return MappedPages::new(self.clone(), &mem, handles, &frames)
                .ok_or(GntStatus::BadPage);
        }
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
        MappedPages::new(self.clone(), &g.mem, handles, &frames).ok_or(GntStatus::BadPage)
    }

    /// Performs a batch of grant copies (`GNTTABOP_copy`), setting each
    /// operation's status. Each side is checked as Xen does: a grant must be
    /// granted to this domain (writable for a destination), offsets and
    /// length must stay inside the page (`BadCopyArg`), and at least one
    /// side must be a grant; a zero-length copy succeeds without validating
    /// anything (G13). Returns how many succeeded.
    ///
    /// The batch runs in passes — look up the granters, validate and pin
    /// every grant, copy, unpin — holding a granter's pin lock across a run
    /// of operations on that granter rather than twice per operation.
    pub fn grant_copy(&self, ops: &mut [CopyOp<'_>]) -> usize {
        if let Some(r) = &self.remote {
            return self.remote_copy(r, ops);
        }
        // Pass 0: the granters named in the batch (usually one).
        let mut granters: Vec<(DomId, Option<Arc<DomainState>>)> = Vec::new();
        let mut index = |d: DomId| match granters.iter().position(|(x, _)| *x == d) {
            Some(i) => i,
            None => {
                granters.push((d, self.hv.domain(d)));
                granters.len() - 1
            }
        };
        let named: Vec<[Option<usize>; 2]> = ops
            .iter()
            .map(|op| {
                let s = if let CopySrc::Gref { domid, .. } = op.src {
                    Some(index(domid))
                } else {
                    None
                };
                let d = if let CopyDst::Gref { domid, .. } = op.dst {
                    Some(index(domid))
                } else {
                    None
                };
                [s, d]
            })
            .collect();
        // Pass 1: validate and pin.
        let mut pins = Pins::new(&granters, self.st.id);
        let plan: Vec<Result<Option<(Side, Side)>, GntStatus>> = ops
            .iter()
            .zip(&named)
            .map(|(op, n)| self.plan_copy(op, *n, &mut pins))
            .collect();
        drop(pins);
        // Pass 2: copy.
        let (mut ok, mut bytes) = (0usize, 0u64);
        for (op, p) in ops.iter_mut().zip(&plan) {
            let len = op.len as usize;
            op.status = match p {
                Err(e) => *e,
                Ok(None) => GntStatus::Okay,
                Ok(Some((src, dst))) => {
                    let (s, d) = (self.side_mem(&granters, src), self.side_mem(&granters, dst));
                    let r = match (s, d, &op.src, &mut op.dst) {
                        (Some((sm, so)), Some((dm, doff)), _, _) => {
                            pvio_shmem::copy(sm, so, dm, doff, len)
                        }
                        (Some((sm, so)), None, _, CopyDst::Buf(b)) => {
                            sm.read_bytes(so, &mut b[..len])
                        }
                        (None, Some((dm, doff)), CopySrc::Buf(b), _) => {
                            dm.write_bytes(doff, &b[..len])
                        }
                        _ => Err(MemError::OutOfBounds {
                            offset: 0,
                            len,
                            size: 0,
                        }),
                    };
                    r.map_or_else(mem_status, |()| GntStatus::Okay)
                }
            };
            if op.status == GntStatus::Okay {
                ok += 1;
                bytes += u64::from(op.len);
            }
        }
        // Pass 3: unpin.
        let mut pins = Pins::new(&granters, self.st.id);
        for (src, dst) in plan.into_iter().flatten().flatten() {
            pins.unpin(src);
            pins.unpin(dst);
        }
        drop(pins);
        let mut st = domain_lock(&self.st.stats);
        st.copies += ok as u64;
        st.copied_bytes += bytes;
        st.errors += (ops.len() - ok) as u64;
        ok
    }

    /// Validates one copy and pins its grants; `Ok(None)` for a no-op.
    fn plan_copy(
        &self,
        op: &CopyOp<'_>,
        named: [Option<usize>; 2],
        pins: &mut Pins<'_>,
    ) -> Result<Option<(Side, Side)>, GntStatus> {
        self.live()?;
        let len = op.len as usize;
        if len == 0 {
            // Xen: a zero-length copy is a no-op success; nothing is
            // validated, not even the references (G13).
            return Ok(None);
        }
        if len > PAGE_SIZE {
            return Err(GntStatus::BadCopyArg);
        }
        let src = match (&op.src, named[0]) {
            (CopySrc::Gref { gref, offset, .. }, Some(g)) => {
                check_in_page(*offset, len)?;
                pins.pin(g, *gref, PinKind::Read, *offset)?
            }
            (CopySrc::Frame { frame, offset }, _) => {
                check_in_page(*offset, len)?;
                self.own_frame(*frame, *offset)?
            }
            (CopySrc::Buf(b), _) if b.len() >= len => Side::Buf,
            _ => return Err(GntStatus::BadCopyArg),
        };
        let dst = match (&op.dst, named[1]) {
            (CopyDst::Gref { gref, offset, .. }, Some(g)) => check_in_page(*offset, len)
                .and_then(|()| pins.pin(g, *gref, PinKind::Write, *offset)),
            (CopyDst::Frame { frame, offset }, _) => {
                check_in_page(*offset, len).and_then(|()| self.own_frame(*frame, *offset))
            }
            (CopyDst::Buf(b), _) if b.len() >= len => Ok(Side::Buf),
            _ => Err(GntStatus::BadCopyArg),
        };
        let dst = match dst {
            Ok(d) => d,
            Err(e) => {
                pins.unpin(src);
                return Err(e);
            }
        };
        if !matches!(src, Side::Pinned { .. }) && !matches!(dst, Side::Pinned { .. }) {
            // At least one side must be a grant: a local-to-local copy is not
            // a grant operation (gntdev refuses it too).
            return Err(GntStatus::BadCopyArg);
        }
        Ok(Some((src, dst)))
    }

    fn own_frame(&self, frame: u32, offset: u16) -> Result<Side, GntStatus> {
        if frame >= self.st.nr_frames {
            return Err(GntStatus::BadPage);
        }
        Ok(Side::Own {
            off: frame as usize * PAGE_SIZE + offset as usize,
        })
    }

    /// The memory and byte offset a planned side copies at.
    fn side_mem<'g>(
        &'g self,
        granters: &'g [(DomId, Option<Arc<DomainState>>)],
        side: &Side,
    ) -> Option<(&'g MemfdMem, usize)> {
        match *side {
            Side::Pinned { g, off, .. } => granters[g].1.as_deref().map(|st| (&*st.mem, off)),
            Side::Own { off } => Some((&self.st.mem, off)),
            Side::Buf => None,
        }
    }
}

/// One side of a planned copy.
enum Side {
    /// A pinned grant: granter index in the batch, reference, kind, and byte
    /// offset in the granter's memory.
    Pinned {
        g: usize,
        gref: u32,
        kind: PinKind,
        off: usize,
    },
    /// One of the caller's frames, by byte offset in its memory.
    Own { off: usize },
    /// The caller's buffer.
    Buf,
}

/// Pins (or unpins) grants for a batch, holding the pin lock of one granter
/// across a run of operations on it (never two locks at once).
struct Pins<'a> {
    granters: &'a [(DomId, Option<Arc<DomainState>>)],
    grantee: DomId,
    held: Option<(usize, MutexGuard<'a, ActiveGrants>)>,
}

impl<'a> Pins<'a> {
    fn new(granters: &'a [(DomId, Option<Arc<DomainState>>)], grantee: DomId) -> Self {
        Pins {
            granters,
            grantee,
            held: None,
        }
    }

    /// The granter's state and its locked pins.
    fn lock(&mut self, g: usize) -> Result<(&'a DomainState, &mut ActiveGrants), GntStatus> {
        let st = self.granters[g].1.as_deref().ok_or(GntStatus::BadDomain)?;
        if self.held.as_ref().is_none_or(|(i, _)| *i != g) {
            self.held = None;
            self.held = Some((g, domain_lock(&st.active)));
        }
        let guard = &mut self.held.as_mut().ok_or(GntStatus::GeneralError)?.1;
        Ok((st, &mut **guard))
    }

    fn pin(
        &mut self,
        g: usize,
        gref: GrantRef,
        kind: PinKind,
        offset: u16,
    ) -> Result<Side, GntStatus> {
        let grantee = self.grantee;
        let (st, active) = self.lock(g)?;
        let frame = active.pin(&*st.table_mem, gref.0, grantee, kind)?;
        if frame >= st.nr_frames {
            let _ = active.unpin(&*st.table_mem, gref.0, kind);
            return Err(GntStatus::BadPage);
        }
        Ok(Side::Pinned {
            g,
            gref: gref.0,
            kind,
            off: frame as usize * PAGE_SIZE + offset as usize,
        })
    }

    fn unpin(&mut self, side: Side) {
        if let Side::Pinned { g, gref, kind, .. } = side
            && let Ok((st, active)) = self.lock(g)
        {
            let _ = active.unpin(&*st.table_mem, gref, kind);
        }
    }
}

/// A hosted mapping: the granter's memory, the handles and the frames.
type RemotePages = (Arc<MemfdMem>, Vec<GrantHandle>, Vec<u32>);

/// The one-page window of frame `f` of `mem`.
fn frame_window(mem: Arc<MemfdMem>, f: u32) -> Option<Window<Arc<MemfdMem>>> {
    let off = (f as usize).checked_mul(PAGE_SIZE)?;
    Window::new(mem, off, PAGE_SIZE).ok()
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

/// Frames in one staging set of a hosted domain's grant copies.
const STAGE_FRAMES: usize = 64;

/// Whether a buffer end of `buf` bytes in an op of `len` bytes is staged
/// (one frame holds it; a shorter buffer fails as it would unstaged).
fn stages(len: u16, buf: usize) -> bool {
    usize::from(len) <= PAGE_SIZE && buf >= usize::from(len)
}

impl Domain {
    /// Hosted grant copy. The daemon does the copy, and it reaches this
    /// domain's own memory but not the process's private buffers: a local
    /// buffer end ([`CopySrc::Buf`], [`CopyDst::Buf`]) of up to a page is
    /// staged in a frame of this domain's memory (written before the call,
    /// read after it) and named as a [`CopySrc::Frame`] or
    /// [`CopyDst::Frame`], so the socket carries descriptors, not data.
    /// Statuses are those of the same ops on the buffers (a staged buffer
    /// shorter than the length is not staged, and fails as it would).
    /// Without a free staging set (the domain's memory is full), the data
    /// travels in the message.
    fn remote_copy(
        &self,
        r: &crate::hosted::remote::RemoteDomain,
        ops: &mut [CopyOp<'_>],
    ) -> usize {
        let stageable = |o: &CopyOp<'_>| {
            matches!(o.src, CopySrc::Buf(b) if stages(o.len, b.len()))
                || matches!(&o.dst, CopyDst::Buf(b) if stages(o.len, b.len()))
        };
        if !ops.iter().any(stageable) {
            return r.copy(ops);
        }
        let Some(set) = self.take_staging() else {
            return r.copy(ops);
        };
        let mut done = 0;
        // At most two staged ends per op.
        for chunk in ops.chunks_mut((set.len() / 2).max(1)) {
            done += self.remote_copy_staged(r, chunk, &set);
        }
        domain_lock(&self.st.staging).push(set);
        done
    }

    fn take_staging(&self) -> Option<Vec<u32>> {
        if let Some(s) = domain_lock(&self.st.staging).pop() {
            return Some(s);
        }
        [STAGE_FRAMES, 8]
            .into_iter()
            .find_map(|n| self.alloc_frames(n))
    }

    fn remote_copy_staged(
        &self,
        r: &crate::hosted::remote::RemoteDomain,
        ops: &mut [CopyOp<'_>],
        set: &[u32],
    ) -> usize {
        let mut frames = set.iter().copied();
        // The ops as sent: a staged end becomes a frame; an unstaged
        // destination is moved here and moved back after the call.
        let mut staged_dst: Vec<Option<u32>> = Vec::with_capacity(ops.len());
        let mut wire: Vec<CopyOp<'_>> = Vec::with_capacity(ops.len());
        for o in ops.iter_mut() {
            let len = usize::from(o.len);
            let src = match o.src {
                CopySrc::Buf(b) if stages(o.len, b.len()) => frames
                    .next()
                    .filter(|&f| {
                        self.frame(f)
                            .is_some_and(|w| w.write_bytes(0, &b[..len]).is_ok())
                    })
                    .map_or(o.src, |frame| CopySrc::Frame { frame, offset: 0 }),
                src => src,
            };
            let df = match &o.dst {
                CopyDst::Buf(b) if stages(o.len, b.len()) => frames.next(),
                _ => None,
            };
            let dst = match df {
                Some(frame) => CopyDst::Frame { frame, offset: 0 },
                None => std::mem::replace(
                    &mut o.dst,
                    CopyDst::Frame {
                        frame: 0,
                        offset: 0,
                    },
                ),
            };
            staged_dst.push(df);
            wire.push(CopyOp::new(src, dst, o.len));
        }
        r.copy(&mut wire);
        for ((o, w), df) in ops.iter_mut().zip(wire).zip(staged_dst) {
            o.status = w.status;
            let Some(frame) = df else {
                o.dst = w.dst;
                continue;
            };
            if let CopyDst::Buf(b) = &mut o.dst
                && o.status == GntStatus::Okay
            {
                let len = usize::from(o.len);
                let read = self
                    .frame(frame)
                    .is_some_and(|win| win.read_bytes(0, &mut b[..len]).is_ok());
                if !read {
                    o.status = GntStatus::GeneralError;
                }
            }
        }
        ops.iter().filter(|o| o.status == GntStatus::Okay).count()
    }
}
