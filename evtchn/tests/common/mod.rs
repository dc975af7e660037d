//! Shared setup of the event-channel tests.
#![allow(dead_code)]

use pvio_evtchn::{DomId, EventChannels, MAX_PORTS, Port};
use std::time::Duration;

/// Backend domain.
pub const BE: DomId = DomId(0);
/// Frontend domain.
pub const FE: DomId = DomId(1);
/// Failure guard for blocking waits (never a speed assertion).
pub const GUARD: Duration = Duration::from_secs(5);

/// A registry with `BE` and `FE` and one interdomain channel between them,
/// set up the way split drivers do it: the frontend allocates an unbound
/// port for the backend, the backend binds it. Returns
/// `(registry, frontend port, backend port)`; the bind's own pending event
/// on the backend port has been consumed.
pub fn connected() -> (EventChannels, Port, Port) {
    let ec = EventChannels::new();
    ec.add_domain(BE, MAX_PORTS).unwrap();
    ec.add_domain(FE, MAX_PORTS).unwrap();
    let fp = ec.alloc_unbound(FE, BE).unwrap();
    let bp = ec.bind_interdomain(BE, FE, fp).unwrap();
    let mut w = ec.waiter(BE).unwrap();
    assert!(w.try_take().contains(bp), "bind marks the new port pending");
    (ec, fp, bp)
}
