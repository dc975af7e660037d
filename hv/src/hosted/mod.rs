//! Hosted mode: the hypervisor as a daemon on a Unix socket, each domain a
//! separate process, running the same driver code as embedded mode.
//!
//! * [`Daemon::serve`] owns an embedded [`Hypervisor`](crate::Hypervisor)
//!   and accepts connections; one connection is one domain process.
//! * [`Domain::connect_hosted`](crate::Domain::connect_hosted) registers the
//!   calling process as a domain and returns a [`Domain`](crate::Domain)
//!   whose methods work remotely.
//!
//! # What lives where
//! Guest-side state lives in the domain process: its memory (the daemon's
//! memfd of that domain, received with `SCM_RIGHTS` and mapped), its frame
//! allocator, its grant table (the granter logic runs on the shared
//! grant-table memfd; the daemon validates maps and copies against the same
//! memory with the compare-exchange protocol of `spec/grant.md` §2.2), and
//! its event waiting. Hypervisor-side state lives in the daemon: pins,
//! maptrack, port routing, and the store (below).
//!
//! # Protocol (`wire.rs`)
//! Length-prefixed little-endian messages, strictly request then reply, fds
//! by `SCM_RIGHTS`. `REGISTER` (id, config, the process's eventfd) answers
//! with the domain's memory, grant-table and control-page memfds. `MAP`
//! and `UNMAP` carry a batch of grants each (a multi-page ring is one
//! message); `MAP` answers each with status, handle, frame and the
//! granter's incarnation, and `GET_MEM` returns the granter's memory memfd
//! only while the caller has one of that granter's grants mapped (the
//! client caches it while any mapping of it is alive). `COPY` carries a
//! batch of grant copies (with the data of buffer sources) and is done by
//! the daemon, which maps every domain. The event-channel control
//! operations (`EV_*`) go to the daemon; `send` does not (below).
//!
//! # Event channels: the fast path
//! When a port is bound, the daemon creates a one-page *channel page*
//! (sealed memfd) holding, for each end, a pending and a mask word, plus a
//! state word (0 while connected). Each end's process gets the page and
//! the *peer's* eventfd (`EV_SYNC`; a domain learns that its set of
//! channels changed from a generation counter in its control page, bumped
//! by the daemon, which also writes the domain's eventfd). `send` is a
//! `fetch_or` of the peer's pending word, and an eventfd write only if the
//! word was 0 and the peer's end is unmasked: a coalesced event costs no
//! system call and the daemon never sees a send. A per-process dispatcher
//! thread polls the process's eventfd and hands pending ports to their
//! [`PortWaiter`](crate::PortWaiter)s.
//!
//! A channel can be bound, sent on and closed between two refreshes of the
//! receiver's table (the sender's last response and then its close): the
//! daemon's close moves an event still pending at the surviving end into
//! that domain's control page (an orphan bitmap the dispatcher drains), so
//! the event reaches the port as it would under Xen. Table refreshes are
//! serialised and installed in the order the daemon answered them.
//!
//! # What memory a domain process can reach
//! Its own memory and grant table; the one-page channel pages of its own
//! event channels and the eventfds of its channels' peers; and the whole
//! memory memfd of every domain that has granted it a page it has mapped,
//! from its first successful map of that granter's grant until its last
//! mapping of that granter is unmapped (the fd is then closed and the
//! mapping dropped; the daemon gives it out again only against a new live
//! mapping). It never receives another domain's grant table, nor the
//! memory of a domain that granted it nothing it mapped; a grant copy is
//! done by the daemon and hands it nothing. A mapped granter's other
//! frames are *reachable* by a hostile process (it holds the fd) but not
//! through the [`Domain`](crate::Domain) API, which only ever forms
//! windows on validated frames. Finer granularity (memory split into
//! several memfds, only the chunks holding mapped frames sent) is future
//! work.
//!
//! Domain death (connection EOF: the process exited or was killed) destroys
//! the domain in the daemon's hypervisor exactly as an embedded destroy
//! does (SECURITY.md L1); its channels are marked closed and their peers
//! woken.
//!
//! # The store
//! The daemon's hypervisor store is the one store of the system. Each
//! [`Domain::store`](crate::Domain::store) call of a hosted domain sends
//! `STORE_CONN`; the daemon creates a socket pair, serves one end with the
//! xenstore wire protocol as that domain (its permissions, its
//! `/local/domain/<id>` for relative paths) and returns the other end,
//! which the process wraps in a [`WireConn`](pvio_xenbus::wire::WireConn).
//! A domain process therefore never speaks for another domain in the
//! store. [`Daemon::bind_store`] also serves the store on a socket path of
//! its own, as dom0 (the toolstack, `xenstore-ls`). When a domain's
//! process disconnects, the daemon destroys the domain, which removes its
//! store nodes and watches like an embedded destroy; its store connections
//! end with the process.
//!
//! Not yet: channels between a hosted domain and one created directly in
//! the daemon's hypervisor.

mod daemon;
pub(crate) mod remote;
mod wire;

use std::io;

use pvio_abi::grant::GntStatus;
use pvio_abi::{DomId, Port};
use pvio_evtchn::EvtchnError;

pub use daemon::Daemon;
pub(crate) use daemon::connect;
pub(crate) use wire::op as wire_op;

/// Byte offsets in a channel page.
pub(crate) const fn pend_off(side: usize) -> usize {
    side * 8
}
pub(crate) const fn mask_off(side: usize) -> usize {
    side * 8 + 4
}
/// 0: connected; 1: closed by an end; 2: an end's domain is gone.
pub(crate) const STATE: usize = 16;

/// Sets the pending word of end `peer` of a channel page; true when the
/// peer must be woken (its eventfd written): the word was clear and that
/// end is unmasked. The `SeqCst` fetch_or, then the load of the mask, pair
/// with an unmask's clear of the mask, then load of pending: one of the
/// two sees the other's write, so no event is lost to a racing unmask.
pub(crate) fn chan_set_pending(page: &pvio_shmem::MemfdMem, peer: usize) -> bool {
    use pvio_shmem::{Ordering, SharedMem};
    page.fetch_or_u32(pend_off(peer), 1, Ordering::SeqCst) == Ok(0)
        && page.load_u32(mask_off(peer), Ordering::SeqCst) == Ok(0)
}

/// Byte offsets in a domain's control page (written by the daemon only):
/// the generation of its channel set, a summary word that is nonzero
/// while the orphan bitmap holds a bit, and the orphan bitmap (one bit
/// per port, `u32` words): an event that was pending on a port when its
/// channel closed, moved there by the daemon so it is still delivered
/// (the channel page it was set in is gone with the channel).
pub(crate) const CTL_GEN: usize = 0;
pub(crate) const CTL_ORPHANS: usize = 8;
pub(crate) const CTL_BITMAP: usize = 64;

/// The size of a control page for `max_ports` ports.
pub(crate) fn ctl_len(max_ports: u32) -> usize {
    (CTL_BITMAP + (max_ports as usize).div_ceil(32) * 4).next_multiple_of(pvio_abi::PAGE_SIZE)
}

pub(crate) fn gnt_status(v: i16) -> GntStatus {
    GntStatus::try_from(v).unwrap_or(GntStatus::GeneralError)
}

pub(crate) fn put_ev_result(e: &mut wire::Enc, r: Result<(), EvtchnError>) {
    let (k, d, p) = match r {
        Ok(()) => (0, 0, 0),
        Err(EvtchnError::NoSuchDomain(d)) => (1, d.0, 0),
        Err(EvtchnError::DomainExists(d)) => (2, d.0, 0),
        Err(EvtchnError::InvalidArgument) => (3, 0, 0),
        Err(EvtchnError::InvalidPort(p)) => (4, 0, p.0),
        Err(EvtchnError::NotBindable {
            remote_dom,
            remote_port,
        }) => (5, remote_dom.0, remote_port.0),
        Err(EvtchnError::NoSpace) => (6, 0, 0),
        Err(EvtchnError::Closed(p)) => (7, 0, p.0),
        Err(_) => (8, 0, 0),
    };
    e.u8(k).u16(d).u32(p);
}

pub(crate) fn get_ev_result(d: &mut wire::Dec) -> io::Result<Result<(), EvtchnError>> {
    let (k, dom, p) = (d.u8()?, DomId(d.u16()?), Port(d.u32()?));
    Ok(match k {
        0 => Ok(()),
        1 => Err(EvtchnError::NoSuchDomain(dom)),
        2 => Err(EvtchnError::DomainExists(dom)),
        3 => Err(EvtchnError::InvalidArgument),
        4 => Err(EvtchnError::InvalidPort(p)),
        5 => Err(EvtchnError::NotBindable {
            remote_dom: dom,
            remote_port: p,
        }),
        6 => Err(EvtchnError::NoSpace),
        7 => Err(EvtchnError::Closed(p)),
        _ => Err(EvtchnError::Busy),
    })
}
