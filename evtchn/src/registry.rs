//! The hypervisor-side registry of domains and their ports: the
//! `EVTCHNOP_*` operations of spec/evtchn.md §2.2 for interdomain channels.
//!
//! # Locking
//!
//! * **Control operations** (`add_domain`, `remove_domain`,
//!   `alloc_unbound`, `bind_interdomain`, `close`, `reset`) are rare and
//!   serialise on one registry mutex, which makes every multi-port update
//!   (both ends of a channel, a whole domain) atomic with respect to the
//!   others — in particular `reset` against `alloc_unbound` (SECURITY.md
//!   E6).
//! * **Data operations** (`send`, `mask`, `unmask`, `status`, the waiter)
//!   take no lock. The domain table is a two-level table of `OnceLock`s
//!   indexed by domain id whose slots live as long as the registry, so a
//!   lookup is two acquire loads and can never meet a freed domain.
//!
//! # Pins
//!
//! A data operation on a port *pins* it: one `fetch_add` on the port's state
//! word both counts the operation in flight and reads the binding
//! atomically (`port.rs`). A control operation that tears down an
//! interdomain binding or frees a port first rewrites the state words
//! (keeping the pin counts), then waits for the pin counts of **both ends**
//! to drain, and only then clears the freed port's pending bit and masks
//! it. Hence, as in Xen (whose `send` holds the channel's read lock), a
//! send is atomic with respect to `close`: it either happened before the
//! close (its event may still be taken) or sees the new state; it never
//! sets a pending bit on a port that is already free or re-allocated
//! (SECURITY.md E4). A pin never waits for anything, and control operations
//! never hold a pin, so draining always ends.
//!
//! # Peer gone (SECURITY.md E8)
//!
//! Closing one end of an interdomain channel returns the other end to
//! *unbound*, remembering the closer (spec §2.2); removing a domain closes
//! all its ports that way. `send` on an unbound port is silently dropped
//! (`Ok`, as in Xen) **while the remote domain exists**; once it has been
//! removed, `send` returns [`EvtchnError::Closed`]. (Xen returns 0 there
//! too; this registry reports the peer's exit instead.)

use crate::domain::{Counters, DomainSlot, SlotRef};
use crate::error::EvtchnError;
use crate::port::{PortState, PortStatus};
use crate::sync::{Arc, Mutex, OnceLock, lock};
use crate::waiter::Waiter;
use core::fmt;
use pvio_abi::evtchn::EVTCHN_2L_NR_CHANNELS;
use pvio_abi::types::DOMID_FIRST_RESERVED;
use pvio_abi::{DOMID_SELF, DomId, Port};

/// Ports per domain of the 2-level ABI (spec §3.1), the largest limit a
/// registry accepts.
pub const MAX_PORTS: u32 = EVTCHN_2L_NR_CHANNELS;

const CHUNK: usize = 256;
const CHUNKS: usize = (DOMID_FIRST_RESERVED.0 as usize).div_ceil(CHUNK);

type Chunk = Box<[OnceLock<SlotRef>]>;

struct Registry {
    /// Largest port limit of a domain; the size of every slot's tables.
    cap: u32,
    /// Serialises control operations (module docs).
    control: Mutex<()>,
    /// Domain id → slot, created on first `add_domain` of the id.
    table: Box<[OnceLock<Chunk>]>,
}

impl Registry {
    /// The slot of `dom`, live or not.
    #[inline]
    fn slot(&self, dom: DomId) -> Option<&SlotRef> {
        let i = usize::from(dom.0);
        self.table.get(i / CHUNK)?.get()?.get(i % CHUNK)?.get()
    }

    /// The slot of a live domain.
    #[inline]
    fn live(&self, dom: DomId) -> Result<&SlotRef, EvtchnError> {
        match self.slot(dom) {
            Some(s) if s.is_alive() => Ok(s),
            _ => Err(EvtchnError::NoSuchDomain(dom)),
        }
    }

    /// Control: the slot of `dom`, created if needed. `dom` is not
    /// reserved.
    fn slot_or_create(&self, dom: DomId) -> Option<&SlotRef> {
        let i = usize::from(dom.0);
        let chunk = self
            .table
            .get(i / CHUNK)?
            .get_or_init(|| (0..CHUNK).map(|_| OnceLock::new()).collect());
        Some(
            chunk
                .get(i % CHUNK)?
                .get_or_init(|| Arc::new(DomainSlot::new(dom, self.cap))),
        )
    }

    /// Control: close one port of `d` (spec §2.2 close; module docs, Pins).
    fn close_locked(&self, d: &DomainSlot, port: Port) -> Result<(), EvtchnError> {
        match d.state(port)? {
            PortState::Closed | PortState::Reserved => Err(EvtchnError::InvalidPort(port)),
            PortState::Unbound { .. } => {
                d.set_state(port.0, PortState::Closed);
                d.drain(port.0);
                d.retire(port.0);
                d.kick();
                Ok(())
            }
            PortState::Interdomain {
                remote_dom,
                remote_port,
            } => {
                d.set_state(port.0, PortState::Closed);
                // The binding implies the peer is live (removing it would
                // have unbound this port first).
                let peer = self.slot(remote_dom);
                if let Some(peer) = peer {
                    peer.set_state(remote_port.0, PortState::Unbound { remote_dom: d.dom });
                }
                // Senders on our port target the peer port; senders on the
                // peer port target ours, which is about to be cleared.
                d.drain(port.0);
                if let Some(peer) = peer {
                    peer.drain(remote_port.0);
                }
                d.retire(port.0);
                d.kick();
                if let Some(peer) = peer {
                    peer.kick();
                }
                Ok(())
            }
        }
    }

    /// Control: close every port of `d`.
    fn reset_locked(&self, d: &DomainSlot) {
        for p in 1..d.max_ports() {
            if d.state(Port(p)).is_ok_and(|s| s.is_in_use()) {
                let _ = self.close_locked(d, Port(p));
            }
        }
    }
}

/// `DOMID_SELF` as a remote domain means the calling domain (loopback).
#[inline]
fn resolve(dom: DomId, remote_dom: DomId) -> DomId {
    if remote_dom == DOMID_SELF {
        dom
    } else {
        remote_dom
    }
}

/// The event channels of the in-tree hypervisor: every domain's port table
/// and 2-level pending/mask state (spec/evtchn.md §1–3).
///
/// Cheap to clone (an `Arc`) and safe to share between threads. Domain ids
/// are explicit arguments (this is the hypervisor's view, with no calling
/// domain); `DOMID_SELF` is accepted only as a *remote* domain, meaning
/// the domain itself.
#[derive(Clone)]
pub struct EventChannels {
    inner: Arc<Registry>,
}

impl fmt::Debug for EventChannels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventChannels")
            .field("max_ports", &self.inner.cap)
            .finish_non_exhaustive()
    }
}

impl Default for EventChannels {
    fn default() -> Self {
        Self::new()
    }
}

impl EventChannels {
    /// A registry whose domains may have up to [`MAX_PORTS`] (4096) ports.
    pub fn new() -> Self {
        Self::build(MAX_PORTS)
    }

    /// A registry whose domains may have up to `cap` ports (`1..=4096`).
    /// Each domain id ever added costs about `9 × cap` bytes for the life
    /// of the registry (its tables are reused when the id comes back).
    pub fn with_max_ports(cap: u32) -> Result<Self, EvtchnError> {
        if cap == 0 || cap > MAX_PORTS {
            return Err(EvtchnError::InvalidArgument);
        }
        Ok(Self::build(cap))
    }

    fn build(cap: u32) -> Self {
        Self {
            inner: Arc::new(Registry {
                cap,
                control: Mutex::new(()),
                table: (0..CHUNKS).map(|_| OnceLock::new()).collect(),
            }),
        }
    }

    /// The largest port limit this registry accepts.
    pub fn port_limit(&self) -> u32 {
        self.inner.cap
    }

    // --- domains -----------------------------------------------------------

    /// Adds domain `dom` with ports `0..max_ports` (port 0 reserved).
    ///
    /// Errors: `InvalidArgument` for a reserved id or `max_ports` outside
    /// `1..=`[`port_limit`](Self::port_limit); `DomainExists`.
    pub fn add_domain(&self, dom: DomId, max_ports: u32) -> Result<(), EvtchnError> {
        if dom.is_reserved() || max_ports == 0 || max_ports > self.inner.cap {
            return Err(EvtchnError::InvalidArgument);
        }
        let _g = lock(&self.inner.control);
        let slot = self
            .inner
            .slot_or_create(dom)
            .ok_or(EvtchnError::InvalidArgument)?;
        if slot.is_alive() {
            return Err(EvtchnError::DomainExists(dom));
        }
        slot.revive(max_ports);
        Ok(())
    }

    /// Removes domain `dom`: closes all its ports (peers' ports bound to it
    /// become unbound, and their later sends fail with `Closed`), and wakes
    /// its waiter, which then returns `NoSuchDomain`.
    pub fn remove_domain(&self, dom: DomId) -> Result<(), EvtchnError> {
        let _g = lock(&self.inner.control);
        let d = self.inner.live(dom)?;
        self.inner.reset_locked(d);
        d.kill();
        Ok(())
    }

    /// True if `dom` exists.
    pub fn has_domain(&self, dom: DomId) -> bool {
        self.inner.live(dom).is_ok()
    }

    // --- control operations (spec §2.2) -----------------------------------------

    /// `EVTCHNOP_alloc_unbound`: a new port of `dom` in state *unbound*,
    /// which only `remote_dom` may bind (`DOMID_SELF`: `dom` itself). The
    /// lowest free port is used; it starts not pending and unmasked.
    ///
    /// Errors: `NoSuchDomain` (either domain; unlike Xen, the remote must
    /// exist), `NoSpace` (SECURITY.md E2).
    pub fn alloc_unbound(&self, dom: DomId, remote_dom: DomId) -> Result<Port, EvtchnError> {
        let _g = lock(&self.inner.control);
        let d = self.inner.live(dom)?;
        let remote_dom = resolve(dom, remote_dom);
        self.inner.live(remote_dom)?;
        let port = d.find_free().ok_or(EvtchnError::NoSpace)?;
        d.publish(port, PortState::Unbound { remote_dom });
        Ok(Port(port))
    }

    /// `EVTCHNOP_bind_interdomain`: binds a new port of `dom` to
    /// `(remote_dom, remote_port)`, which must be *unbound* for `dom`. Both
    /// ends become *interdomain*, and the new local port is marked pending
    /// once, as Xen does (receivers must tolerate that first event).
    ///
    /// Errors: `NoSuchDomain`, `InvalidPort` (remote port out of range),
    /// `NotBindable` (remote port not unbound for `dom`), `NoSpace` (the
    /// remote port then stays unbound).
    pub fn bind_interdomain(
        &self,
        dom: DomId,
        remote_dom: DomId,
        remote_port: Port,
    ) -> Result<Port, EvtchnError> {
        let _g = lock(&self.inner.control);
        let d = self.inner.live(dom)?;
        let remote_dom = resolve(dom, remote_dom);
        let r = self.inner.live(remote_dom)?;
        match r.state(remote_port)? {
            PortState::Unbound {
                remote_dom: allowed,
            } if allowed == dom => {}
            _ => {
                return Err(EvtchnError::NotBindable {
                    remote_dom,
                    remote_port,
                });
            }
        }
        let port = d.find_free().ok_or(EvtchnError::NoSpace)?;
        // The local end is complete before the remote end names it, so a
        // sender on the remote port that sees the binding finds an
        // initialised port (P1 of each `publish`/`set_state`).
        d.publish(
            port,
            PortState::Interdomain {
                remote_dom,
                remote_port,
            },
        );
        r.set_state(
            remote_port.0,
            PortState::Interdomain {
                remote_dom: dom,
                remote_port: Port(port),
            },
        );
        d.raise(port);
        Ok(Port(port))
    }

    /// `EVTCHNOP_close`: frees a port of `dom`. If it was interdomain, the
    /// remote end goes back to *unbound* with `dom` as its remote domain.
    /// The freed port's pending bit is cleared and it is masked; operations
    /// in flight on either end finish first (module docs, Pins). Both
    /// domains' waiters are woken so that threads waiting on these ports
    /// can notice.
    ///
    /// Errors: `NoSuchDomain`, `InvalidPort` (port 0, out of range, free).
    pub fn close(&self, dom: DomId, port: Port) -> Result<(), EvtchnError> {
        let _g = lock(&self.inner.control);
        let d = self.inner.live(dom)?;
        self.inner.close_locked(d, port)
    }

    /// `EVTCHNOP_reset`: closes all ports of `dom`, atomically with respect
    /// to the other control operations (so never `-EAGAIN`).
    pub fn reset(&self, dom: DomId) -> Result<(), EvtchnError> {
        let _g = lock(&self.inner.control);
        let d = self.inner.live(dom)?;
        self.inner.reset_locked(d);
        Ok(())
    }

    // --- data operations (lock-free) ---------------------------------------------

    /// `EVTCHNOP_send` from `(dom, port)`.
    ///
    /// * interdomain: sets the remote port pending (spec §3.2). If it was
    ///   already pending the send is coalesced: one atomic RMW, nobody is
    ///   woken. Otherwise, unless the remote port is masked, the remote
    ///   domain's waiter is unparked if — and only if — it sleeps.
    /// * unbound: dropped, `Ok` (Xen) — unless the remote domain no longer
    ///   exists: `Closed` (SECURITY.md E8).
    /// * port 0, out of range, or free: `InvalidPort` (SECURITY.md E1).
    ///
    /// Takes no lock.
    #[inline]
    pub fn send(&self, dom: DomId, port: Port) -> Result<(), EvtchnError> {
        let d = self.inner.live(dom)?;
        let pin = d.pin(port)?;
        match pin.state {
            PortState::Interdomain {
                remote_dom,
                remote_port,
            } => {
                // The pin keeps the peer live and bound (module docs, Pins).
                let Some(r) = self.inner.slot(remote_dom) else {
                    return Err(EvtchnError::Closed(port));
                };
                let coalesced = r.raise(remote_port.0);
                d.count_send(coalesced);
                Ok(())
            }
            PortState::Unbound { remote_dom } => {
                if self.inner.live(remote_dom).is_ok() {
                    d.count_send(false);
                    Ok(())
                } else {
                    Err(EvtchnError::Closed(port))
                }
            }
            PortState::Closed | PortState::Reserved => Err(EvtchnError::InvalidPort(port)),
        }
    }

    /// `EVTCHNOP_status` of `(dom, port)`, with the port's pending and mask
    /// bits. A free port reports `Closed`, port 0 `Reserved`.
    ///
    /// Errors: `NoSuchDomain`, `InvalidPort` (out of range).
    pub fn status(&self, dom: DomId, port: Port) -> Result<PortStatus, EvtchnError> {
        let d = self.inner.live(dom)?;
        let state = d.state(port)?;
        Ok(PortStatus {
            state,
            vcpu: 0,
            pending: d.is_pending(port.0),
            masked: d.is_masked(port.0),
        })
    }

    /// Masks an allocated port: later sends only set its pending bit
    /// (spec §3.2 step 3).
    ///
    /// Errors: `NoSuchDomain`, `InvalidPort` (port 0, out of range, free).
    pub fn mask(&self, dom: DomId, port: Port) -> Result<(), EvtchnError> {
        let d = self.inner.live(dom)?;
        let pin = d.pin(port)?;
        if !pin.state.is_in_use() {
            return Err(EvtchnError::InvalidPort(port));
        }
        d.set_mask(port.0);
        Ok(())
    }

    /// `EVTCHNOP_unmask`: unmasks an allocated port and, if it is pending,
    /// delivers it now — exactly once however many sends were latched
    /// (spec §3.3; SECURITY.md E9).
    ///
    /// Errors: `NoSuchDomain`, `InvalidPort` (port 0, out of range, free).
    pub fn unmask(&self, dom: DomId, port: Port) -> Result<(), EvtchnError> {
        let d = self.inner.live(dom)?;
        let pin = d.pin(port)?;
        if !pin.state.is_in_use() {
            return Err(EvtchnError::InvalidPort(port));
        }
        d.unmask(port.0);
        Ok(())
    }

    /// Number of allocated (unbound or interdomain) ports of `dom`. The
    /// count is published after the port entries (SECURITY.md E7): whoever
    /// reads it also sees the entries it counts.
    pub fn active_ports(&self, dom: DomId) -> Result<u32, EvtchnError> {
        Ok(self.inner.live(dom)?.active())
    }

    /// The port limit of `dom` (ports `0..max_ports`).
    pub fn max_ports(&self, dom: DomId) -> Result<u32, EvtchnError> {
        Ok(self.inner.live(dom)?.max_ports())
    }

    /// A snapshot of `dom`'s counters (reset when the domain is added).
    pub fn counters(&self, dom: DomId) -> Result<Counters, EvtchnError> {
        Ok(self.inner.live(dom)?.counters())
    }

    /// Gives `dom`'s `port` the calling thread as its own: from now on an
    /// event on the port unparks this thread (not the domain's
    /// [`Waiter`], which no longer takes the port's events), and the thread
    /// takes it with [`EventChannels::take_port`] — one thread wake-up per
    /// event instead of two for a dispatcher that hands ports to driver
    /// threads. A later registration of the port replaces this one; so does
    /// closing the port. Returns the registration's token for
    /// [`EventChannels::clear_direct`].
    ///
    /// Errors: `NoSuchDomain`, `InvalidPort` (port 0 or out of range).
    pub fn set_direct(&self, dom: DomId, port: Port) -> Result<u64, EvtchnError> {
        Ok(self
            .guest_port(dom, port)?
            .set_direct(port.0, crate::sync::current()))
    }

    /// Ends registration `token` of [`EventChannels::set_direct`] (if it is
    /// still the port's): the port's events, one still pending included, go
    /// to the domain's [`Waiter`] again.
    pub fn clear_direct(&self, dom: DomId, port: Port, token: u64) {
        if let Ok(d) = self.inner.live(dom) {
            d.clear_direct(port.0, token);
        }
    }

    /// Takes (clears) an event of `dom`'s `port` if it is pending and
    /// unmasked, without blocking: how the thread of a direct port
    /// ([`EventChannels::set_direct`]) receives its events.
    ///
    /// Errors: `NoSuchDomain`, `InvalidPort` (port 0 or out of range).
    pub fn take_port(&self, dom: DomId, port: Port) -> Result<bool, EvtchnError> {
        Ok(self.guest_port(dom, port)?.take_port(port.0))
    }

    /// The live slot of `dom`, if `port` is one of its guest-usable ports
    /// (`1..max_ports`).
    fn guest_port(&self, dom: DomId, port: Port) -> Result<&SlotRef, EvtchnError> {
        let d = self.inner.live(dom)?;
        if port.0 == 0 || port.0 >= d.max_ports() {
            return Err(EvtchnError::InvalidPort(port));
        }
        Ok(d)
    }

    /// The waiter through which `dom`'s threads receive its events.
    ///
    /// There is **one waiter per domain** (the domain has one notify vCPU,
    /// and one selector word); it may move between threads. A second call
    /// while the first waiter exists returns `Busy`; dropping the waiter
    /// frees the place.
    pub fn waiter(&self, dom: DomId) -> Result<Waiter, EvtchnError> {
        let d = self.inner.live(dom)?;
        let inc = d.incarnation();
        if inc & 1 == 0 {
            return Err(EvtchnError::NoSuchDomain(dom));
        }
        if !d.claim_waiter(inc) {
            return Err(EvtchnError::Busy);
        }
        Ok(Waiter::new(Arc::clone(d), inc))
    }
}
