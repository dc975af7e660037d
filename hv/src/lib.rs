//! The in-tree hypervisor (embedded mode): every domain lives in this
//! process, each with its own memory, grant table, event channels and store
//! connection, and a [`Domain`] handle through which a driver reaches them.
//!
//! # Trust model
//! The hypervisor is trusted; domains are not, and neither trusts the other.
//! A domain's memory is a sealed memfd of page frames. A [`Domain`] handle
//! gives full access to its own frames and **no** way to name another
//! domain's memory except through the grant operations, which the hypervisor
//! validates against the granter's grant table: the reference must be in
//! range, the entry exactly `permit_access` for the caller, writable for a
//! writable use, and the frame inside the granter's memory; the in-use flags
//! are set with the compare-exchange of `spec/grant.md` §2.2 so a granter
//! cannot end access while a mapping or copy is live. A read-only mapping is
//! a different type with no write methods.
//!
//! Destroying a domain releases everything it holds (its mappings of other
//! domains' grants, with their in-use flags) and everything others hold on
//! it stays memory-safe: mappings keep the granter's memory alive, and later
//! unmaps of them succeed quietly.

#![forbid(unsafe_code)]

mod domain;
mod events;
mod grants;
pub mod hosted;
mod pages;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

pub use domain::{Domain, DomainConfig, DomainEvents, DomainStats};
pub use events::{PollWindow, PortWaiter, poll_step};
pub use grants::{CopyDst, CopyOp, CopySrc, Mapping, ReadOnlyMapping};
pub use pages::MappedPages;
pub use pvio_abi::grant::GntStatus;
pub use pvio_abi::{DomId, GrantHandle, GrantRef, PAGE_SIZE};
pub use pvio_evtchn::{EventChannels, EvtchnError, Pending, PortWait, Waiter};
pub use pvio_grant::GrantError;
pub use pvio_shmem::Window;
pub use pvio_xenbus::{Conn, Store, XsError};

use domain::DomainState;

/// Why a hypervisor operation on domains failed.
#[derive(Debug)]
pub enum HvError {
    /// The domain id is taken.
    DomainExists(DomId),
    /// No such domain (never created, or destroyed).
    NoSuchDomain(DomId),
    /// The configuration is unusable (zero pages, too many, ...).
    BadConfig(&'static str),
    /// Creating the domain's memory failed.
    Memory(pvio_shmem::MemfdError),
    /// Setting up the domain's grant table failed.
    Grant(GrantError),
    /// Setting up the domain's event channels failed.
    Evtchn(EvtchnError),
    /// Introducing the domain to the store failed.
    Store(XsError),
    /// Hosted mode: talking to the daemon failed, or it refused.
    Hosted(std::io::Error),
}

impl fmt::Display for HvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HvError::DomainExists(d) => write!(f, "domain {} already exists", d.0),
            HvError::NoSuchDomain(d) => write!(f, "no domain {}", d.0),
            HvError::BadConfig(why) => write!(f, "bad domain configuration: {why}"),
            HvError::Memory(e) => write!(f, "domain memory: {e}"),
            HvError::Grant(e) => write!(f, "domain grant table: {e}"),
            HvError::Evtchn(e) => write!(f, "domain event channels: {e}"),
            HvError::Store(e) => write!(f, "domain store entry: {e}"),
            HvError::Hosted(e) => write!(f, "hypervisor daemon: {e}"),
        }
    }
}

impl std::error::Error for HvError {}

pub(crate) struct Inner {
    domains: RwLock<BTreeMap<u16, Arc<DomainState>>>,
    pub(crate) evtchn: EventChannels,
    pub(crate) store: Store,
}

impl Drop for Inner {
    /// The last handle on the hypervisor (and on each of its domains) is
    /// gone: every domain's event channels end, so the threads waiting on
    /// them (port-waiter dispatchers) see their domain gone and exit
    /// instead of polling forever with the domain's tables alive.
    fn drop(&mut self) {
        let doms = std::mem::take(self.domains.get_mut().unwrap_or_else(|e| e.into_inner()));
        for (id, st) in &doms {
            let _ = st.kill();
            let _ = self.evtchn.remove_domain(DomId(*id));
        }
        // Their dispatchers now see the domains gone; none outlives the
        // hypervisor (a thread still exiting after its owner returned
        // looks like a leak to LeakSanitizer, and is one to a long-lived
        // process creating hypervisors).
        for st in doms.values() {
            st.dispatch.join();
        }
    }
}

impl Inner {
    /// A hypervisor with no domains, behind a hosted domain.
    pub(crate) fn detached() -> Self {
        Inner {
            domains: RwLock::new(BTreeMap::new()),
            evtchn: EventChannels::new(),
            store: Store::new(),
        }
    }

    /// The live domain `id`, if any.
    pub(crate) fn domain(&self, id: DomId) -> Option<Arc<DomainState>> {
        self.domains
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id.0)
            .cloned()
    }
}

/// The hypervisor: creates and destroys domains.
#[derive(Clone)]
pub struct Hypervisor {
    inner: Arc<Inner>,
}

impl fmt::Debug for Hypervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<u16> = self
            .inner
            .domains
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        f.debug_struct("Hypervisor").field("domains", &ids).finish()
    }
}

impl Default for Hypervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Hypervisor {
    /// A hypervisor with no domains.
    pub fn new() -> Self {
        Hypervisor {
            inner: Arc::new(Inner {
                domains: RwLock::new(BTreeMap::new()),
                evtchn: EventChannels::new(),
                store: Store::new(),
            }),
        }
    }

    /// Creates domain `id` with `config`.
    pub fn create_domain(&self, id: DomId, config: DomainConfig) -> Result<Domain, HvError> {
        if id.0 >= pvio_abi::types::DOMID_FIRST_RESERVED.0 {
            return Err(HvError::BadConfig("domain id in the reserved range"));
        }
        let mut domains = self
            .inner
            .domains
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if domains.contains_key(&id.0) {
            return Err(HvError::DomainExists(id));
        }
        let st = Arc::new(DomainState::new(id, &config)?);
        self.inner
            .evtchn
            .add_domain(id, config.max_ports)
            .map_err(HvError::Evtchn)?;
        // Domain 0 is the store's privileged toolstack domain, known to it
        // from the start; every other domain is introduced.
        if id.0 != 0
            && let Err(e) = self.inner.store.introduce_domain(id)
        {
            let _ = self.inner.evtchn.remove_domain(id);
            return Err(HvError::Store(e));
        }
        domains.insert(id.0, st.clone());
        Ok(Domain::new(self.inner.clone(), st))
    }

    /// A handle to live domain `id`.
    pub fn domain(&self, id: DomId) -> Result<Domain, HvError> {
        let st = self.inner.domain(id).ok_or(HvError::NoSuchDomain(id))?;
        Ok(Domain::new(self.inner.clone(), st))
    }

    /// The store (the toolstack connects to it as domain 0, which is
    /// privileged).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The event channel registry (the hypervisor's view of every port).
    pub fn event_channels(&self) -> &EventChannels {
        &self.inner.evtchn
    }

    /// Ids of the live domains.
    pub fn domains(&self) -> Vec<DomId> {
        self.inner
            .domains
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .map(|&d| DomId(d))
            .collect()
    }

    /// Destroys domain `id`: it disappears from the hypervisor at once (every
    /// later operation naming it fails), then everything it holds is
    /// released: its mappings and copies of other domains' grants (their
    /// in-use flags cleared, in chunks so other domains' operations keep
    /// running in between: G12). Its memory lives on only as long as other
    /// domains' mappings of it do.
    pub fn destroy_domain(&self, id: DomId) -> Result<(), HvError> {
        let st = self
            .inner
            .domains
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id.0)
            .cloned()
            .ok_or(HvError::NoSuchDomain(id))?;
        if !st.kill() {
            // Another destroy is under way.
            return Err(HvError::NoSuchDomain(id));
        }
        // Its ports close (peers' ports go back to unbound, and their sends
        // then fail with `Closed`), its store connections, watches and
        // /local/domain/<id> go, then its grant mappings are released.
        let _ = self.inner.evtchn.remove_domain(id);
        if id.0 != 0 {
            let _ = self.inner.store.release_domain(id);
        }
        grants::release_all_mappings(&self.inner, &st);
        // Only now is the id free: a toolstack that sees the domain gone
        // (and recreates its devices) never has them removed by a cleanup
        // still running.
        self.inner
            .domains
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id.0);
        Ok(())
    }
}
