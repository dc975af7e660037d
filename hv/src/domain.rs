//! A domain: its memory, its grant table, and the handle drivers use.

use std::ffi::CString;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering as AtOrd};
use std::sync::{Arc, Mutex, MutexGuard};

use pvio_abi::{DomId, GrantRef, PAGE_SIZE};
use pvio_grant::{ActiveGrants, EndAccess, GrantError, GrantTable};
use pvio_shmem::{MemfdMem, Window};

use crate::grants::Maptrack;
use crate::hosted::remote::RemoteDomain;
use crate::{HvError, Inner};

/// The shape of a new domain.
#[derive(Debug, Clone, Copy)]
pub struct DomainConfig {
    /// Page frames of memory (4 KiB each).
    pub pages: usize,
    /// Grant table frames (512 v1 entries each; Xen's default limit is 64).
    pub grant_frames: usize,
    /// Most grants of other domains this domain may have mapped at once
    /// (Xen's maptrack limit).
    pub max_mappings: usize,
    /// Event channel ports (at most 4096, the 2-level ABI's limit).
    pub max_ports: u32,
}

impl Default for DomainConfig {
    fn default() -> Self {
        DomainConfig {
            pages: 256,
            grant_frames: 4,
            max_mappings: 4096,
            max_ports: 1024,
        }
    }
}

/// Counters of a domain's grant use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DomainStats {
    /// Successful maps of other domains' grants.
    pub maps: u64,
    /// Successful unmaps.
    pub unmaps: u64,
    /// Copy operations that succeeded.
    pub copies: u64,
    /// Bytes copied by those operations.
    pub copied_bytes: u64,
    /// Operations refused with a `GNTST_*` error.
    pub errors: u64,
}

/// Simple frame allocator over a domain's own memory (a guest's page
/// allocator, for drivers that need ring and buffer pages).
#[derive(Debug)]
pub(crate) struct Frames {
    free: Vec<u32>,
    /// `is_free[f]`: frame `f` is on `free` (catches double frees in O(1)).
    is_free: Vec<bool>,
}

pub(crate) struct DomainState {
    pub(crate) id: DomId,
    pub(crate) mem: Arc<MemfdMem>,
    pub(crate) nr_frames: u32,
    /// The table region, shared between the guest's granter code and the
    /// hypervisor's validation (as Xen's grant frames are).
    pub(crate) table_mem: Arc<MemfdMem>,
    granter: Mutex<GrantTable<Arc<MemfdMem>>>,
    /// The hypervisor's pins on this domain's grants.
    pub(crate) active: Mutex<ActiveGrants>,
    /// This domain's mappings of other domains' grants.
    pub(crate) maptrack: Mutex<Maptrack>,
    frames: Mutex<Frames>,
    pub(crate) stats: Mutex<DomainStats>,
    dead: AtomicBool,
    pub(crate) dispatch: Arc<crate::events::Dispatch>,
    /// Unique across the process's domains, ever: tells a destroyed
    /// domain from a later one with the same id (hosted mode's memory
    /// cache).
    pub(crate) inc: u64,
    /// Hosted mode: sets of this domain's own frames that stage the local
    /// buffers of grant copies (see `Domain::grant_copy`).
    pub(crate) staging: Mutex<Vec<Vec<u32>>>,
}

static NEXT_INC: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DomainState {
    pub(crate) fn new(id: DomId, config: &DomainConfig) -> Result<Self, HvError> {
        if config.pages == 0 || config.pages > (1 << 20) {
            return Err(HvError::BadConfig("pages must be 1..=2^20"));
        }
        if config.grant_frames == 0 || config.grant_frames > 64 {
            return Err(HvError::BadConfig("grant_frames must be 1..=64"));
        }
        let name =
            |what: &str| CString::new(format!("pvio-dom{}-{what}", id.0)).unwrap_or_default();
        let mem = Arc::new(
            MemfdMem::new(&name("mem"), config.pages * PAGE_SIZE).map_err(HvError::Memory)?,
        );
        let table_mem = Arc::new(
            MemfdMem::new(&name("gnttab"), config.grant_frames * PAGE_SIZE)
                .map_err(HvError::Memory)?,
        );
        Self::from_parts(id, mem, table_mem, config)
    }

    /// A domain's state over existing memory and grant-table regions (a
    /// hosted domain's process, over the daemon's memfds).
    pub(crate) fn from_parts(
        id: DomId,
        mem: Arc<MemfdMem>,
        table_mem: Arc<MemfdMem>,
        config: &DomainConfig,
    ) -> Result<Self, HvError> {
        let granter = GrantTable::new(table_mem.clone()).map_err(HvError::Grant)?;
        let nr_frames = (mem.len() / PAGE_SIZE) as u32;
        Ok(DomainState {
            id,
            mem,
            nr_frames,
            table_mem,
            granter: Mutex::new(granter),
            active: Mutex::new(ActiveGrants::new()),
            maptrack: Mutex::new(Maptrack::new(config.max_mappings)),
            frames: Mutex::new(Frames {
                free: (0..nr_frames).rev().collect(),
                is_free: vec![true; nr_frames as usize],
            }),
            stats: Mutex::new(DomainStats::default()),
            dead: AtomicBool::new(false),
            dispatch: Arc::default(),
            inc: NEXT_INC.fetch_add(1, AtOrd::Relaxed),
            staging: Mutex::new(Vec::new()),
        })
    }

    /// Marks the domain dead; whether this call did (not an earlier one).
    pub(crate) fn kill(&self) -> bool {
        !self.dead.swap(true, AtOrd::AcqRel)
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(AtOrd::Acquire)
    }

    /// The window of frame `frame` of this domain's memory.
    pub(crate) fn frame_window(&self, frame: u32) -> Option<Window<Arc<MemfdMem>>> {
        if frame >= self.nr_frames {
            return None;
        }
        Window::new(self.mem.clone(), frame as usize * PAGE_SIZE, PAGE_SIZE).ok()
    }
}

/// A domain, as its own drivers see it: its memory, its grant table (as
/// granter), and the grant operations on other domains' grants (as grantee).
/// Cheap to clone; every clone is the same domain.
#[derive(Clone)]
pub struct Domain {
    /// Embedded: the hypervisor. Hosted: a hypervisor private to the
    /// process, unused (the store is the daemon's, over the wire).
    pub(crate) hv: Arc<Inner>,
    /// Guest-side state in both modes (memory, grant table, frame
    /// allocator, event dispatch); the hypervisor-side parts (pins,
    /// maptrack, counters) are used in embedded mode only.
    pub(crate) st: Arc<DomainState>,
    /// Hosted mode: the daemon connection, which does the hypervisor-side
    /// operations.
    pub(crate) remote: Option<Arc<RemoteDomain>>,
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Domain")
            .field("id", &self.st.id.0)
            .field("frames", &self.st.nr_frames)
            .finish()
    }
}

impl Domain {
    pub(crate) fn new(hv: Arc<Inner>, st: Arc<DomainState>) -> Self {
        Domain {
            hv,
            st,
            remote: None,
        }
    }

    pub(crate) fn new_remote(
        id: DomId,
        mem: MemfdMem,
        table: MemfdMem,
        config: DomainConfig,
        remote: Arc<RemoteDomain>,
    ) -> Result<Self, HvError> {
        let st = DomainState::from_parts(id, Arc::new(mem), Arc::new(table), &config)?;
        Ok(Domain {
            hv: Arc::new(Inner::detached()),
            st: Arc::new(st),
            remote: Some(remote),
        })
    }

    /// Hosted mode: registers this process as domain `id` with the
    /// hypervisor daemon listening on `socket_path`
    /// ([`Daemon`](crate::hosted::Daemon)) and returns the domain, whose
    /// methods then act through the daemon. The domain lives as long as
    /// this process keeps the connection: when the process exits (or is
    /// killed) the daemon destroys it.
    pub fn connect_hosted(
        socket_path: impl AsRef<std::path::Path>,
        id: DomId,
        config: DomainConfig,
    ) -> Result<Domain, HvError> {
        crate::hosted::connect(socket_path.as_ref(), id, config)
    }

    /// Whether this domain is hosted (its hypervisor is a daemon).
    pub fn is_hosted(&self) -> bool {
        self.remote.is_some()
    }

    /// This domain's id.
    pub fn id(&self) -> DomId {
        self.st.id
    }

    /// Whether the domain has been destroyed (every operation then fails).
    pub fn is_destroyed(&self) -> bool {
        self.st.is_dead() || self.remote.as_ref().is_some_and(|r| r.is_dead())
    }

    /// Number of page frames of this domain's memory.
    pub fn nr_frames(&self) -> u32 {
        self.st.nr_frames
    }

    /// This domain's whole memory (frame `n` at byte offset `n * 4096`).
    pub fn memory(&self) -> &Arc<MemfdMem> {
        &self.st.mem
    }

    /// Frame `frame` of this domain's own memory, as a one-page region.
    pub fn frame(&self, frame: u32) -> Option<Window<Arc<MemfdMem>>> {
        self.st.frame_window(frame)
    }

    /// `n` consecutive frames of this domain's memory starting at `first`,
    /// as one region (a multi-page ring, for instance).
    pub fn frames(&self, first: u32, n: u32) -> Option<Window<Arc<MemfdMem>>> {
        let end = first.checked_add(n)?;
        if n == 0 || end > self.st.nr_frames {
            return None;
        }
        Window::new(
            self.st.mem.clone(),
            first as usize * PAGE_SIZE,
            n as usize * PAGE_SIZE,
        )
        .ok()
    }

    /// Allocates `n` frames, consecutive when possible (lowest first),
    /// zeroed. `None` when memory is exhausted.
    pub fn alloc_frames(&self, n: usize) -> Option<Vec<u32>> {
        let mut frames = domain_lock(&self.st.frames);
        if n == 0 || n > frames.free.len() {
            return None;
        }
        let at = frames.free.len() - n;
        let mut got: Vec<u32> = frames.free.split_off(at);
        got.reverse();
        for &f in &got {
            frames.is_free[f as usize] = false;
        }
        drop(frames);
        self.zero_frames(&got);
        Some(got)
    }

    /// Allocates `n` consecutive frames (a multi-page ring), zeroed: the
    /// first of them, or `None` when no run of `n` free frames exists.
    pub fn alloc_contiguous(&self, n: usize) -> Option<u32> {
        let mut frames = domain_lock(&self.st.frames);
        if n == 0 || n > frames.free.len() {
            return None;
        }
        let mut run = 0;
        let mut first = None;
        for f in 0..frames.is_free.len() {
            run = if frames.is_free[f] { run + 1 } else { 0 };
            if run == n {
                first = Some(f + 1 - n);
                break;
            }
        }
        let first = first? as u32;
        let range = first..first + n as u32;
        for f in range.clone() {
            frames.is_free[f as usize] = false;
        }
        frames.free.retain(|f| !range.contains(f));
        drop(frames);
        self.zero_frames(&range.collect::<Vec<_>>());
        Some(first)
    }

    fn zero_frames(&self, frames: &[u32]) {
        for &f in frames {
            if let Some(w) = self.st.frame_window(f) {
                let _ = pvio_shmem::SharedMem::fill(&w, 0, PAGE_SIZE, 0);
            }
        }
    }

    /// Returns frames to the allocator. Never free a frame that is still
    /// granted and in use by another domain ([`Domain::end_access`] said so).
    pub fn free_frames(&self, frames: &[u32]) {
        let mut alloc = domain_lock(&self.st.frames);
        for &f in frames {
            if f < self.st.nr_frames && !alloc.is_free[f as usize] {
                alloc.is_free[f as usize] = true;
                alloc.free.push(f);
            }
        }
    }

    /// This domain's event channels: every operation acts on its own ports.
    pub fn events(&self) -> DomainEvents {
        DomainEvents {
            evtchn: self.hv.evtchn.clone(),
            dom: self.st.id,
            remote: self.remote.clone(),
        }
    }

    /// A waiter for events on one of this domain's ports, for drivers that
    /// each wait on their own port. The first call starts the domain's
    /// event dispatcher thread, which owns the domain's
    /// [`pvio_evtchn::Waiter`]: use either port waiters or that waiter.
    pub fn port_waiter(
        &self,
        port: pvio_abi::Port,
    ) -> Result<crate::PortWaiter, pvio_evtchn::EvtchnError> {
        if let Some(r) = &self.remote {
            return crate::PortWaiter::new_remote(&self.st.dispatch, r, port);
        }
        crate::PortWaiter::new(&self.st.dispatch, &self.hv.evtchn, self.st.id, port)
    }

    /// A new connection to the store as this domain (relative paths resolve
    /// under `/local/domain/<id>`; permissions are this domain's).
    ///
    /// Hosted: a [`Client::Wire`](pvio_xenbus::Client::Wire) on a socket
    /// the daemon serves as this domain on its store (one new connection
    /// per call, asked of the daemon). If the daemon is gone, a connection
    /// that fails every request with `EIO`.
    pub fn store(&self) -> pvio_xenbus::Client {
        let Some(r) = &self.remote else {
            return pvio_xenbus::Client::Local(self.hv.store.connect(self.st.id));
        };
        let stream = r.store_conn().or_else(|_| {
            // A closed connection: every request fails (EIO).
            let (a, _b) = std::os::unix::net::UnixStream::pair()?;
            Ok::<_, std::io::Error>(a)
        });
        match stream.and_then(|s| pvio_xenbus::wire::WireConn::new(s, self.st.id)) {
            Ok(c) => pvio_xenbus::Client::Wire(c),
            // Out of fds or threads: the process-private store, empty.
            Err(_) => pvio_xenbus::Client::Local(self.hv.store.connect(self.st.id)),
        }
    }

    /// Counters of this domain's grant operations.
    pub fn stats(&self) -> DomainStats {
        if let Some(r) = &self.remote {
            return r.stats();
        }
        *domain_lock(&self.st.stats)
    }

    // ------------------------------------------------------------ granter

    fn granter(&self) -> Result<MutexGuard<'_, GrantTable<Arc<MemfdMem>>>, GrantError> {
        if self.is_destroyed() {
            return Err(GrantError::NoFreeRefs);
        }
        Ok(domain_lock(&self.st.granter))
    }

    /// Grants frame `frame` of this domain to `to`, read-only or writable.
    pub fn grant_access(
        &self,
        to: DomId,
        frame: u32,
        readonly: bool,
    ) -> Result<GrantRef, GrantError> {
        if frame >= self.st.nr_frames {
            return Err(GrantError::BadRef(GrantRef(frame)));
        }
        self.granter()?.grant_access(to, frame, readonly)
    }

    /// Ends access to `gref`; fails with [`GrantError::InUse`] while the
    /// grantee still uses it, in which case the frame must not be reused.
    pub fn end_access(&self, gref: GrantRef) -> Result<(), GrantError> {
        self.granter()?.end_access(gref)
    }

    /// Ends access to `gref`, or defers it while in use (see
    /// [`Domain::poll_deferred`]).
    pub fn end_access_deferred(&self, gref: GrantRef) -> Result<EndAccess, GrantError> {
        self.granter()?.end_access_deferred(gref)
    }

    /// Retries deferred ends; `released` gets each grant whose frame may now
    /// be reused.
    pub fn poll_deferred(&self, released: impl FnMut(GrantRef)) -> Result<usize, GrantError> {
        self.granter()?.poll_deferred(released)
    }

    /// Whether another domain currently has `gref` mapped or in a copy.
    pub fn grant_in_use(&self, gref: GrantRef) -> Result<bool, GrantError> {
        self.granter()?.is_in_use(gref)
    }

    /// This domain's grant table region (shared with the hypervisor). A
    /// domain can write it — it is the domain's own memory — which is why
    /// the hypervisor validates every entry with compare-exchange.
    pub fn grant_table_memory(&self) -> &Arc<MemfdMem> {
        &self.st.table_mem
    }

    /// Free grant references.
    pub fn free_grant_refs(&self) -> usize {
        domain_lock(&self.st.granter).free_refs()
    }
}

pub(crate) use lock as domain_lock;

/// A domain's event channel operations (`EVTCHNOP_*` with `dom = self`).
#[derive(Clone, Debug)]
pub struct DomainEvents {
    evtchn: pvio_evtchn::EventChannels,
    dom: DomId,
    remote: Option<Arc<RemoteDomain>>,
}

impl DomainEvents {
    /// A new unbound port that `remote` may bind (a frontend's first step).
    pub fn alloc_unbound(&self, remote: DomId) -> Result<pvio_abi::Port, pvio_evtchn::EvtchnError> {
        if let Some(r) = &self.remote {
            return r.alloc_unbound(remote);
        }
        self.evtchn.alloc_unbound(self.dom, remote)
    }

    /// Binds `remote`'s unbound port `remote_port` to a new local port (a
    /// backend's step).
    pub fn bind_interdomain(
        &self,
        remote: DomId,
        remote_port: pvio_abi::Port,
    ) -> Result<pvio_abi::Port, pvio_evtchn::EvtchnError> {
        if let Some(r) = &self.remote {
            return r.bind(remote, remote_port);
        }
        self.evtchn.bind_interdomain(self.dom, remote, remote_port)
    }

    /// Signals the peer of `port`.
    #[inline]
    pub fn send(&self, port: pvio_abi::Port) -> Result<(), pvio_evtchn::EvtchnError> {
        if let Some(r) = &self.remote {
            return r.send(port);
        }
        self.evtchn.send(self.dom, port)
    }

    /// Closes `port`.
    pub fn close(&self, port: pvio_abi::Port) -> Result<(), pvio_evtchn::EvtchnError> {
        if let Some(r) = &self.remote {
            return r.port_op(crate::hosted::wire_op::EV_CLOSE, port);
        }
        self.evtchn.close(self.dom, port)
    }

    /// Masks `port`.
    pub fn mask(&self, port: pvio_abi::Port) -> Result<(), pvio_evtchn::EvtchnError> {
        if let Some(r) = &self.remote {
            return r.port_op(crate::hosted::wire_op::EV_MASK, port);
        }
        self.evtchn.mask(self.dom, port)
    }

    /// Unmasks `port`, delivering a pending event once.
    pub fn unmask(&self, port: pvio_abi::Port) -> Result<(), pvio_evtchn::EvtchnError> {
        if let Some(r) = &self.remote {
            return r.port_op(crate::hosted::wire_op::EV_UNMASK, port);
        }
        self.evtchn.unmask(self.dom, port)
    }

    /// The state of `port`.
    pub fn status(
        &self,
        port: pvio_abi::Port,
    ) -> Result<pvio_evtchn::PortStatus, pvio_evtchn::EvtchnError> {
        if let Some(r) = &self.remote {
            return r.status(port);
        }
        self.evtchn.status(self.dom, port)
    }

    /// The domain's waiter (one per domain). A hosted domain has none
    /// (`Busy`): its process's dispatcher waits, use port waiters.
    pub fn waiter(&self) -> Result<pvio_evtchn::Waiter, pvio_evtchn::EvtchnError> {
        if self.remote.is_some() {
            // The process's dispatcher owns event waiting (port waiters).
            return Err(pvio_evtchn::EvtchnError::Busy);
        }
        self.evtchn.waiter(self.dom)
    }
}
