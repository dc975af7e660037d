//! Port states (spec/evtchn.md §1) and the packed per-port state word.
//!
//! Each port of a domain is one `AtomicU64`:
//!
//! | Bits | Field |
//! |---|---|
//! | 0–23 | pin count: operations in flight on the port ([`PIN`]) |
//! | 24–25 | kind: free, unbound, interdomain, reserved |
//! | 32–47 | remote domain (unbound, interdomain) |
//! | 48–63 | remote port (interdomain) |
//!
//! Packing the binding and the pin count into one word lets a sender pin
//! the port and read its binding in a single `fetch_add`; control
//! operations replace the binding with a CAS that keeps the pin count (see
//! `registry.rs`, "Pins").

use pvio_abi::evtchn::{EVTCHNSTAT_CLOSED, EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_UNBOUND, Status};
use pvio_abi::{DomId, Port};

/// One pin (the unit of the pin-count field).
pub(crate) const PIN: u64 = 1;
const PIN_MASK: u64 = (1 << 24) - 1;
/// Refuse new pins beyond this many (never reached in practice; keeps the
/// count from carrying into the kind bits).
pub(crate) const PIN_LIMIT: u64 = PIN_MASK / 2;

const KIND_SHIFT: u32 = 24;
const KIND_MASK: u64 = 0b11 << KIND_SHIFT;
const KIND_FREE: u64 = 0;
const KIND_UNBOUND: u64 = 1;
const KIND_INTERDOMAIN: u64 = 2;
const KIND_RESERVED: u64 = 3;
const DOM_SHIFT: u32 = 32;
const PORT_SHIFT: u32 = 48;

/// The state of a port (spec/evtchn.md §1). `pirq`, `virq` and `ipi` ports
/// are not implemented by this hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortState {
    /// Free: not in use (`EVTCHNSTAT_closed`).
    Closed,
    /// Port 0, which is never handed out (`EVTCHNSTAT_closed`).
    Reserved,
    /// Allocated and waiting for `remote_dom` to bind
    /// (`EVTCHNSTAT_unbound`). Also the state a port returns to when its
    /// interdomain peer closes, with `remote_dom` the closer.
    Unbound {
        /// The only domain allowed to bind.
        remote_dom: DomId,
    },
    /// Connected to `(remote_dom, remote_port)` (`EVTCHNSTAT_interdomain`).
    Interdomain {
        /// Peer domain.
        remote_dom: DomId,
        /// Peer port (in `remote_dom`).
        remote_port: Port,
    },
}

impl PortState {
    /// The `EVTCHNSTAT_*` value `EVTCHNOP_status` reports for this state.
    pub const fn evtchnstat(&self) -> u32 {
        match self {
            Self::Closed | Self::Reserved => EVTCHNSTAT_CLOSED,
            Self::Unbound { .. } => EVTCHNSTAT_UNBOUND,
            Self::Interdomain { .. } => EVTCHNSTAT_INTERDOMAIN,
        }
    }

    /// True for ports that are allocated (unbound or interdomain).
    pub const fn is_in_use(&self) -> bool {
        matches!(self, Self::Unbound { .. } | Self::Interdomain { .. })
    }

    /// The binding bits of the state word (pin count zero).
    pub(crate) const fn encode(self) -> u64 {
        match self {
            Self::Closed => KIND_FREE << KIND_SHIFT,
            Self::Reserved => KIND_RESERVED << KIND_SHIFT,
            Self::Unbound { remote_dom } => {
                (KIND_UNBOUND << KIND_SHIFT) | ((remote_dom.0 as u64) << DOM_SHIFT)
            }
            Self::Interdomain {
                remote_dom,
                remote_port,
            } => {
                // Ports are below MAX_PORTS (4096), so 16 bits hold them.
                (KIND_INTERDOMAIN << KIND_SHIFT)
                    | ((remote_dom.0 as u64) << DOM_SHIFT)
                    | (((remote_port.0 & 0xFFFF) as u64) << PORT_SHIFT)
            }
        }
    }

    /// Decodes the binding bits of a state word (ignores the pin count).
    pub(crate) const fn decode(word: u64) -> Self {
        let remote_dom = DomId((word >> DOM_SHIFT) as u16);
        match (word & KIND_MASK) >> KIND_SHIFT {
            KIND_UNBOUND => Self::Unbound { remote_dom },
            KIND_INTERDOMAIN => Self::Interdomain {
                remote_dom,
                remote_port: Port((word >> PORT_SHIFT) as u32),
            },
            KIND_RESERVED => Self::Reserved,
            _ => Self::Closed,
        }
    }
}

/// Pin count of a state word.
#[inline]
pub(crate) const fn pins(word: u64) -> u64 {
    word & PIN_MASK
}

/// `word` with its binding replaced by `state`, keeping the pin count.
#[inline]
pub(crate) const fn rebind(word: u64, state: PortState) -> u64 {
    pins(word) | state.encode()
}

/// What [`EventChannels::status`](crate::EventChannels::status) reports for
/// a port: `EVTCHNOP_status` plus the port's 2-level pending and mask bits.
///
/// A snapshot: the fields are read one after the other, not atomically
/// together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortStatus {
    /// State of the port.
    pub state: PortState,
    /// Notify vCPU: always 0 (this hypervisor has one waiter per domain).
    pub vcpu: u32,
    /// The port's pending bit (an event not yet taken by the waiter).
    pub pending: bool,
    /// The port's mask bit. Free and reserved ports are always masked.
    pub masked: bool,
}

impl PortStatus {
    /// The `evtchn_status` structure `EVTCHNOP_status` would return for
    /// `(dom, port)`.
    pub fn to_abi(&self, dom: DomId, port: Port) -> Status {
        let u = match self.state {
            PortState::Closed | PortState::Reserved => [0, 0],
            PortState::Unbound { remote_dom } => [remote_dom.0 as u32, 0],
            PortState::Interdomain {
                remote_dom,
                remote_port,
            } => [remote_dom.0 as u32, remote_port.0],
        };
        Status {
            dom,
            port,
            status: self.state.evtchnstat(),
            vcpu: self.vcpu,
            u,
            ..Status::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_roundtrip() {
        for s in [
            PortState::Closed,
            PortState::Reserved,
            PortState::Unbound {
                remote_dom: DomId(0x7FEF),
            },
            PortState::Interdomain {
                remote_dom: DomId(3),
                remote_port: Port(4095),
            },
        ] {
            let w = s.encode() + 5 * PIN;
            assert_eq!(PortState::decode(w), s);
            assert_eq!(pins(w), 5);
            assert_eq!(
                PortState::decode(rebind(w, PortState::Closed)),
                PortState::Closed
            );
            assert_eq!(pins(rebind(w, PortState::Closed)), 5);
        }
        assert_eq!(PortState::Closed.encode(), 0);
    }
}
