//! Event channels of the in-tree hypervisor (spec/evtchn.md).
//!
//! An event channel connects a port of one domain to a port of another;
//! a send sets the remote port's *pending* bit, and sends before the
//! receiver takes the bit coalesce into one event, like an edge-triggered
//! interrupt. This crate implements the hypervisor side for interdomain
//! channels, in-process:
//!
//! | Item | Follows |
//! |---|---|
//! | [`EventChannels`]: domains, port tables, `alloc_unbound`, `bind_interdomain`, `send`, `close`, `status`, `mask`, `unmask`, `reset` | §1 (states), §2.2 (semantics, errors) |
//! | per-domain pending / mask bitmaps and selector word | §3.1–3.3 (2-level ABI) |
//! | [`Waiter`], [`Pending`]: a domain's threads block and take events | §3.3 (upcall handler) |
//! | [`SpuriousGuard`]: back-off against notification storms | SECURITY.md E3 |
//! | [`EvtchnError`] with Xen errno values | §2, `xen/errno.h` |
//!
//! Not implemented: `pirq`, `virq`, `ipi` ports, notify vCPUs other than 0,
//! and the FIFO ABI (§4).
//!
//! # Cost of a send
//!
//! `send` takes no lock: a lookup of both domains (acquire loads), a pin of
//! the sending port (one `fetch_add`, released by one `fetch_sub`; see
//! `registry.rs`), and the 2-level set-pending of §3.2: one `fetch_or` on
//! the pending word. If the port was already pending the send stops there
//! (coalesced). Otherwise it checks the mask, marks the selector, and reads
//! the waiter's `sleeping` flag; only if the waiter sleeps does it lock the
//! waiter's thread handle and `unpark` it — one wake per *new* event, none
//! per coalesced send, none when the waiter is busy. The orderings are
//! explained once, with their pairs, in `domain.rs`.
//!
//! # Security (SECURITY.md, EVT rows)
//!
//! * E1: sends on port 0, out-of-range, free or closed ports return
//!   [`EvtchnError::InvalidPort`]; nothing panics on guest-chosen numbers.
//! * E2: allocation stops with [`EvtchnError::NoSpace`]; a failed bind
//!   leaves no half-initialised port.
//! * E3: [`SpuriousGuard`].
//! * E4: a close waits for the operations in flight on both ends (pins), so
//!   no event lands on a freed or re-allocated port (loom model).
//! * E6: `reset` and `alloc_unbound` are serialised; the port range of a
//!   domain never shrinks while it exists.
//! * E7: a port entry is initialised before its state word is published
//!   (release), and the active-port count after the entry (loom model).
//! * E8: after the peer domain exits, `send` returns
//!   [`EvtchnError::Closed`].
//! * E9: a send to a masked port latches the pending bit; `unmask` delivers
//!   it exactly once.
//!
//! # Loom
//!
//! The cargo feature `loom` switches the crate-private `sync` shim to loom;
//! `tests/loom.rs` holds the models:
//! `LOOM_MAX_PREEMPTIONS=3 cargo test -p pvio-evtchn --features loom --test loom --release`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod domain;
mod error;
mod port;
mod registry;
mod spurious;
mod sync;
mod waiter;

pub use domain::Counters;
pub use error::EvtchnError;
pub use port::{PortState, PortStatus};
pub use pvio_abi::{DomId, Port};
pub use registry::{EventChannels, MAX_PORTS};
pub use spurious::SpuriousGuard;
pub use waiter::{Pending, PendingIntoIter, PendingIter, PortWait, Waiter};
