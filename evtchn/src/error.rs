//! Errors of the event-channel operations and their Xen errno values
//! (spec/evtchn.md §2.2).

use core::fmt;
use pvio_abi::evtchn::xen_errno;
use pvio_abi::{DomId, Port};

/// Why an event-channel operation failed.
///
/// Each variant maps to the Xen errno that `EVTCHNOP_*` would return
/// ([`errno`](Self::errno)); the variants keep the ids involved so that a
/// person can diagnose the failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EvtchnError {
    /// No live domain with this id (`-ESRCH`).
    NoSuchDomain(DomId),
    /// `add_domain` of a domain that is already live (`-EEXIST`).
    DomainExists(DomId),
    /// A reserved domain id (`>= DOMID_FIRST_RESERVED`) where a real domain
    /// is needed, or a port limit outside `1..=` the registry's limit
    /// (`-EINVAL`).
    InvalidArgument,
    /// The port is 0 (reserved), not below the domain's port limit, or not
    /// in use — closed, or closed while a thread waited on it (`-EINVAL`;
    /// SECURITY.md E1).
    InvalidPort(Port),
    /// `bind_interdomain`: the remote port is not *unbound* for the binding
    /// domain (`-EINVAL`).
    NotBindable {
        /// The domain named as remote.
        remote_dom: DomId,
        /// The port named as remote.
        remote_port: Port,
    },
    /// No free port left in the domain (`-ENOSPC`; SECURITY.md E2).
    NoSpace,
    /// The channel's peer is gone: a `send` on an unbound port whose remote
    /// domain no longer exists, or a [`Waiter::wait_port`] whose port was
    /// interdomain and lost its peer end (`-ESRCH`; SECURITY.md E8).
    ///
    /// [`Waiter::wait_port`]: crate::Waiter::wait_port
    Closed(Port),
    /// The domain already has a [`Waiter`](crate::Waiter), or a port is
    /// pinned by an absurd number of concurrent operations (`-EBUSY`).
    Busy,
}

impl EvtchnError {
    /// The Xen errno (positive; the hypercall returns it negated).
    pub const fn errno(&self) -> i32 {
        match self {
            Self::NoSuchDomain(_) | Self::Closed(_) => xen_errno::ESRCH,
            Self::DomainExists(_) => xen_errno::EEXIST,
            Self::InvalidArgument | Self::InvalidPort(_) | Self::NotBindable { .. } => {
                xen_errno::EINVAL
            }
            Self::NoSpace => xen_errno::ENOSPC,
            Self::Busy => xen_errno::EBUSY,
        }
    }
}

impl fmt::Display for EvtchnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchDomain(d) => write!(f, "no such domain {d}"),
            Self::DomainExists(d) => write!(f, "domain {d} already exists"),
            Self::InvalidArgument => f.write_str("invalid domain id or port limit"),
            Self::InvalidPort(p) => write!(f, "port {p} is reserved, out of range or not in use"),
            Self::NotBindable {
                remote_dom,
                remote_port,
            } => write!(
                f,
                "port {remote_port} of domain {remote_dom} is not unbound for this domain"
            ),
            Self::NoSpace => f.write_str("no free event-channel port"),
            Self::Closed(p) => write!(f, "the peer of port {p} is gone"),
            Self::Busy => f.write_str("busy"),
        }
    }
}

impl std::error::Error for EvtchnError {}
