//! `/dev/xen/evtchn`: user-space event channels.
//!
//! Follows spec/evtchn.md §5 and Linux `include/uapi/xen/evtchn.h`. Bind
//! ioctls return the new local port as the ioctl result. `read` yields
//! fired ports as `u32`s (each is masked until written back with `write`).

use super::ioc_none;
use crate::types::DomId;
use bytemuck::{Pod, Zeroable};

/// `ioctl_evtchn_bind_virq`, 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IoctlEvtchnBindVirq {
    /// **\[in\]** `VIRQ_*` (bound on vCPU 0).
    pub virq: u32,
}

/// `ioctl_evtchn_bind_interdomain`, 8 bytes (backend use).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IoctlEvtchnBindInterdomain {
    /// **\[in\]** Remote domain.
    pub remote_domain: u32,
    /// **\[in\]** Remote unbound port.
    pub remote_port: u32,
}

/// `ioctl_evtchn_bind_unbound_port`, 4 bytes (frontend use).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IoctlEvtchnBindUnboundPort {
    /// **\[in\]** Domain allowed to bind.
    pub remote_domain: u32,
}

/// `ioctl_evtchn_unbind`, 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IoctlEvtchnUnbind {
    /// **\[in\]** Local port bound via this fd.
    pub port: u32,
}

/// `ioctl_evtchn_notify`, 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IoctlEvtchnNotify {
    /// **\[in\]** Local port bound via this fd.
    pub port: u32,
}

/// `ioctl_evtchn_restrict_domid`, 2 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IoctlEvtchnRestrictDomid {
    /// **\[in\]** The only domain this fd may bind with afterwards.
    pub domid: DomId,
}

/// `ioctl_evtchn_bind_static`, 4 bytes (newer kernels only).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IoctlEvtchnBindStatic {
    /// **\[in\]** Statically allocated port.
    pub port: u32,
}

/// `IOCTL_EVTCHN_BIND_VIRQ`.
pub const IOCTL_EVTCHN_BIND_VIRQ: u32 = 0x0004_4500;
/// `IOCTL_EVTCHN_BIND_INTERDOMAIN`.
pub const IOCTL_EVTCHN_BIND_INTERDOMAIN: u32 = 0x0008_4501;
/// `IOCTL_EVTCHN_BIND_UNBOUND_PORT`.
pub const IOCTL_EVTCHN_BIND_UNBOUND_PORT: u32 = 0x0004_4502;
/// `IOCTL_EVTCHN_UNBIND`.
pub const IOCTL_EVTCHN_UNBIND: u32 = 0x0004_4503;
/// `IOCTL_EVTCHN_NOTIFY`.
pub const IOCTL_EVTCHN_NOTIFY: u32 = 0x0004_4504;
/// `IOCTL_EVTCHN_RESET`: empty the fd's queue and clear its overflow error.
pub const IOCTL_EVTCHN_RESET: u32 = 0x0000_4505;
/// `IOCTL_EVTCHN_RESTRICT_DOMID`.
pub const IOCTL_EVTCHN_RESTRICT_DOMID: u32 = 0x0002_4506;
/// `IOCTL_EVTCHN_BIND_STATIC` (newer kernels only).
pub const IOCTL_EVTCHN_BIND_STATIC: u32 = 0x0004_4507;

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<IoctlEvtchnBindVirq>() == 4);
    assert!(size_of::<IoctlEvtchnBindInterdomain>() == 8);
    assert!(core::mem::offset_of!(IoctlEvtchnBindInterdomain, remote_port) == 4);
    assert!(size_of::<IoctlEvtchnBindUnboundPort>() == 4);
    assert!(size_of::<IoctlEvtchnUnbind>() == 4);
    assert!(size_of::<IoctlEvtchnNotify>() == 4);
    assert!(size_of::<IoctlEvtchnRestrictDomid>() == 2);
    assert!(size_of::<IoctlEvtchnBindStatic>() == 4);
    assert!(IOCTL_EVTCHN_BIND_VIRQ == ioc_none(b'E', 0, size_of::<IoctlEvtchnBindVirq>()));
    assert!(
        IOCTL_EVTCHN_BIND_INTERDOMAIN == ioc_none(b'E', 1, size_of::<IoctlEvtchnBindInterdomain>())
    );
    assert!(
        IOCTL_EVTCHN_BIND_UNBOUND_PORT
            == ioc_none(b'E', 2, size_of::<IoctlEvtchnBindUnboundPort>())
    );
    assert!(IOCTL_EVTCHN_UNBIND == ioc_none(b'E', 3, size_of::<IoctlEvtchnUnbind>()));
    assert!(IOCTL_EVTCHN_NOTIFY == ioc_none(b'E', 4, size_of::<IoctlEvtchnNotify>()));
    assert!(IOCTL_EVTCHN_RESET == ioc_none(b'E', 5, 0));
    assert!(
        IOCTL_EVTCHN_RESTRICT_DOMID == ioc_none(b'E', 6, size_of::<IoctlEvtchnRestrictDomid>())
    );
    assert!(IOCTL_EVTCHN_BIND_STATIC == ioc_none(b'E', 7, size_of::<IoctlEvtchnBindStatic>()));
};
