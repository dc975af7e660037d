//! XenBus device states and the XenStore wire protocol: message header,
//! message types, error names, and the shared-ring page.
//!
//! Follows spec/xenbus.md §1 and §6, `io/xenbus.h` and `io/xs_wire.h`.

use crate::types::Port;
use bytemuck::{Pod, Zeroable};
use core::fmt;

// ---------------------------------------------------------------------------
// XenbusState
// ---------------------------------------------------------------------------

/// `enum xenbus_state`: the value each side publishes, as a decimal string,
/// in the `state` key of its own directory.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum XenbusState {
    /// Key missing/unreadable; the other end is gone.
    #[default]
    Unknown = 0,
    /// Starting up.
    Initialising = 1,
    /// Early init done; waiting for peer information (or hotplug).
    InitWait = 2,
    /// Transport parameters published; waiting for the peer to connect.
    Initialised = 3,
    /// Operational.
    Connected = 4,
    /// Shutting down.
    Closing = 5,
    /// Closed.
    Closed = 6,
    /// Being reconfigured (PCI passthrough only).
    Reconfiguring = 7,
    /// Reconfiguration done.
    Reconfigured = 8,
}

impl XenbusState {
    /// All states, in value order.
    pub const ALL: [XenbusState; 9] = [
        XenbusState::Unknown,
        XenbusState::Initialising,
        XenbusState::InitWait,
        XenbusState::Initialised,
        XenbusState::Connected,
        XenbusState::Closing,
        XenbusState::Closed,
        XenbusState::Reconfiguring,
        XenbusState::Reconfigured,
    ];

    /// The value as written to xenstore: `"0"` ..= `"8"`.
    #[inline]
    pub const fn as_str(self) -> &'static str {
        match self {
            XenbusState::Unknown => "0",
            XenbusState::Initialising => "1",
            XenbusState::InitWait => "2",
            XenbusState::Initialised => "3",
            XenbusState::Connected => "4",
            XenbusState::Closing => "5",
            XenbusState::Closed => "6",
            XenbusState::Reconfiguring => "7",
            XenbusState::Reconfigured => "8",
        }
    }

    /// The C name without prefix (`"InitWait"`).
    #[inline]
    pub const fn name(self) -> &'static str {
        match self {
            XenbusState::Unknown => "Unknown",
            XenbusState::Initialising => "Initialising",
            XenbusState::InitWait => "InitWait",
            XenbusState::Initialised => "Initialised",
            XenbusState::Connected => "Connected",
            XenbusState::Closing => "Closing",
            XenbusState::Closed => "Closed",
            XenbusState::Reconfiguring => "Reconfiguring",
            XenbusState::Reconfigured => "Reconfigured",
        }
    }

    /// Parses a `state` value read from xenstore: ASCII decimal digits,
    /// optionally followed by one NUL (some writers include it). Leading
    /// zeros are accepted; signs, spaces, empty input and values outside
    /// 0..=8 give `None`.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let digits = match bytes {
            [rest @ .., 0] => rest,
            all => all,
        };
        if digits.is_empty() {
            return None;
        }
        let mut v: u32 = 0;
        for &b in digits {
            if !b.is_ascii_digit() {
                return None;
            }
            v = v.checked_mul(10)?.checked_add(u32::from(b - b'0'))?;
        }
        Self::try_from(v).ok()
    }
}

impl TryFrom<u32> for XenbusState {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        Self::ALL.get(v as usize).copied().ok_or(v)
    }
}

impl From<XenbusState> for u32 {
    #[inline]
    fn from(s: XenbusState) -> u32 {
        s as u32
    }
}

/// Formats the name (`Connected`); use [`XenbusState::as_str`] for the
/// xenstore value.
impl fmt::Display for XenbusState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// ---------------------------------------------------------------------------
// Message header and types
// ---------------------------------------------------------------------------

/// `xsd_sockmsg`: header of every XenStore message, 16 bytes, followed by
/// `len` payload bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct XsdSockmsg {
    /// `XS_*` message type (C `type`).
    pub type_: u32,
    /// **\[client\]** chosen id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id (0 = none).
    pub tx_id: u32,
    /// Payload length (at most [`XENSTORE_PAYLOAD_MAX`]).
    pub len: u32,
}

/// `XS_CONTROL` (alias `XS_DEBUG`).
pub const XS_CONTROL: u32 = 0;
/// `XS_DEBUG`: old name of [`XS_CONTROL`].
pub const XS_DEBUG: u32 = XS_CONTROL;
/// `XS_DIRECTORY`: list children.
pub const XS_DIRECTORY: u32 = 1;
/// `XS_READ`: read a value.
pub const XS_READ: u32 = 2;
/// `XS_GET_PERMS`: read permissions.
pub const XS_GET_PERMS: u32 = 3;
/// `XS_WATCH`: register a watch.
pub const XS_WATCH: u32 = 4;
/// `XS_UNWATCH`: remove a watch.
pub const XS_UNWATCH: u32 = 5;
/// `XS_TRANSACTION_START`.
pub const XS_TRANSACTION_START: u32 = 6;
/// `XS_TRANSACTION_END` (`T` commit / `F` abort).
pub const XS_TRANSACTION_END: u32 = 7;
/// `XS_INTRODUCE` (dom0 only).
pub const XS_INTRODUCE: u32 = 8;
/// `XS_RELEASE` (dom0 only).
pub const XS_RELEASE: u32 = 9;
/// `XS_GET_DOMAIN_PATH`.
pub const XS_GET_DOMAIN_PATH: u32 = 10;
/// `XS_WRITE`: write a value (creates missing parents).
pub const XS_WRITE: u32 = 11;
/// `XS_MKDIR`.
pub const XS_MKDIR: u32 = 12;
/// `XS_RM` (recursive).
pub const XS_RM: u32 = 13;
/// `XS_SET_PERMS`.
pub const XS_SET_PERMS: u32 = 14;
/// `XS_WATCH_EVENT` (server to client only).
pub const XS_WATCH_EVENT: u32 = 15;
/// `XS_ERROR` (server to client only; payload = errno name).
pub const XS_ERROR: u32 = 16;
/// `XS_IS_DOMAIN_INTRODUCED`.
pub const XS_IS_DOMAIN_INTRODUCED: u32 = 17;
/// `XS_RESUME`.
pub const XS_RESUME: u32 = 18;
/// `XS_SET_TARGET`.
pub const XS_SET_TARGET: u32 = 19;
/// `XS_RESET_WATCHES` (20 was the removed `XS_RESTRICT`).
pub const XS_RESET_WATCHES: u32 = 21;
/// `XS_DIRECTORY_PART`.
pub const XS_DIRECTORY_PART: u32 = 22;
/// `XS_GET_FEATURE` (optional; added to the headers after Xen 4.17).
pub const XS_GET_FEATURE: u32 = 23;
/// `XS_SET_FEATURE` (optional; added after Xen 4.17).
pub const XS_SET_FEATURE: u32 = 24;
/// `XS_GET_QUOTA` (optional; added after Xen 4.17).
pub const XS_GET_QUOTA: u32 = 25;
/// `XS_SET_QUOTA` (optional; added after Xen 4.17).
pub const XS_SET_QUOTA: u32 = 26;
/// `XS_INVALID`: guaranteed never to be a valid type.
pub const XS_INVALID: u32 = 0xFFFF;

/// `XS_WATCH_PATH`: index of the path in a watch event payload.
pub const XS_WATCH_PATH: u32 = 0;
/// `XS_WATCH_TOKEN`: index of the token in a watch event payload.
pub const XS_WATCH_TOKEN: u32 = 1;

/// A known XenStore message type (`enum xsd_sockmsg_type`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum XsType {
    /// [`XS_CONTROL`].
    Control = XS_CONTROL,
    /// [`XS_DIRECTORY`].
    Directory = XS_DIRECTORY,
    /// [`XS_READ`].
    Read = XS_READ,
    /// [`XS_GET_PERMS`].
    GetPerms = XS_GET_PERMS,
    /// [`XS_WATCH`].
    Watch = XS_WATCH,
    /// [`XS_UNWATCH`].
    Unwatch = XS_UNWATCH,
    /// [`XS_TRANSACTION_START`].
    TransactionStart = XS_TRANSACTION_START,
    /// [`XS_TRANSACTION_END`].
    TransactionEnd = XS_TRANSACTION_END,
    /// [`XS_INTRODUCE`].
    Introduce = XS_INTRODUCE,
    /// [`XS_RELEASE`].
    Release = XS_RELEASE,
    /// [`XS_GET_DOMAIN_PATH`].
    GetDomainPath = XS_GET_DOMAIN_PATH,
    /// [`XS_WRITE`].
    Write = XS_WRITE,
    /// [`XS_MKDIR`].
    Mkdir = XS_MKDIR,
    /// [`XS_RM`].
    Rm = XS_RM,
    /// [`XS_SET_PERMS`].
    SetPerms = XS_SET_PERMS,
    /// [`XS_WATCH_EVENT`].
    WatchEvent = XS_WATCH_EVENT,
    /// [`XS_ERROR`].
    Error = XS_ERROR,
    /// [`XS_IS_DOMAIN_INTRODUCED`].
    IsDomainIntroduced = XS_IS_DOMAIN_INTRODUCED,
    /// [`XS_RESUME`].
    Resume = XS_RESUME,
    /// [`XS_SET_TARGET`].
    SetTarget = XS_SET_TARGET,
    /// [`XS_RESET_WATCHES`].
    ResetWatches = XS_RESET_WATCHES,
    /// [`XS_DIRECTORY_PART`].
    DirectoryPart = XS_DIRECTORY_PART,
    /// [`XS_GET_FEATURE`].
    GetFeature = XS_GET_FEATURE,
    /// [`XS_SET_FEATURE`].
    SetFeature = XS_SET_FEATURE,
    /// [`XS_GET_QUOTA`].
    GetQuota = XS_GET_QUOTA,
    /// [`XS_SET_QUOTA`].
    SetQuota = XS_SET_QUOTA,
    /// [`XS_INVALID`].
    Invalid = XS_INVALID,
}

impl TryFrom<u32> for XsType {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        use XsType::*;
        Ok(match v {
            XS_CONTROL => Control,
            XS_DIRECTORY => Directory,
            XS_READ => Read,
            XS_GET_PERMS => GetPerms,
            XS_WATCH => Watch,
            XS_UNWATCH => Unwatch,
            XS_TRANSACTION_START => TransactionStart,
            XS_TRANSACTION_END => TransactionEnd,
            XS_INTRODUCE => Introduce,
            XS_RELEASE => Release,
            XS_GET_DOMAIN_PATH => GetDomainPath,
            XS_WRITE => Write,
            XS_MKDIR => Mkdir,
            XS_RM => Rm,
            XS_SET_PERMS => SetPerms,
            XS_WATCH_EVENT => WatchEvent,
            XS_ERROR => Error,
            XS_IS_DOMAIN_INTRODUCED => IsDomainIntroduced,
            XS_RESUME => Resume,
            XS_SET_TARGET => SetTarget,
            XS_RESET_WATCHES => ResetWatches,
            XS_DIRECTORY_PART => DirectoryPart,
            XS_GET_FEATURE => GetFeature,
            XS_SET_FEATURE => SetFeature,
            XS_GET_QUOTA => GetQuota,
            XS_SET_QUOTA => SetQuota,
            XS_INVALID => Invalid,
            other => return Err(other),
        })
    }
}

impl From<XsType> for u32 {
    #[inline]
    fn from(t: XsType) -> u32 {
        t as u32
    }
}

// ---------------------------------------------------------------------------
// Limits and error names
// ---------------------------------------------------------------------------

/// `XENSTORE_PAYLOAD_MAX`: largest payload; exceeding it kills the
/// connection.
pub const XENSTORE_PAYLOAD_MAX: usize = 4096;
/// `XENSTORE_ABS_PATH_MAX`: longest absolute path.
pub const XENSTORE_ABS_PATH_MAX: usize = 3072;
/// `XENSTORE_REL_PATH_MAX`: longest relative path.
pub const XENSTORE_REL_PATH_MAX: usize = 2048;

/// Errno names xenstored returns in `XS_ERROR` payloads (NUL-terminated on
/// the wire), with their Linux errno values, in the order of `xs_wire.h`'s
/// `xsd_errors[]`.
pub const XS_ERRORS: &[(&str, i32)] = &[
    ("EINVAL", 22),
    ("EACCES", 13),
    ("EEXIST", 17),
    ("EISDIR", 21),
    ("ENOENT", 2),
    ("ENOMEM", 12),
    ("ENOSPC", 28),
    ("EIO", 5),
    ("ENOTEMPTY", 39),
    ("ENOSYS", 38),
    ("EROFS", 30),
    ("EBUSY", 16),
    ("EAGAIN", 11),
    ("EISCONN", 106),
    ("E2BIG", 7),
    ("EPERM", 1),
];

/// The errno of an `XS_ERROR` payload (with or without its trailing NUL),
/// or `None` for an unknown name.
pub fn xs_error_errno(name: &[u8]) -> Option<i32> {
    let name = match name {
        [rest @ .., 0] => rest,
        all => all,
    };
    XS_ERRORS
        .iter()
        .find(|(n, _)| n.as_bytes() == name)
        .map(|&(_, e)| e)
}

/// The name xenstored uses for `errno`, if it is one of [`XS_ERRORS`].
pub fn xs_error_name(errno: i32) -> Option<&'static str> {
    XS_ERRORS
        .iter()
        .find(|&&(_, e)| e == errno)
        .map(|&(n, _)| n)
}

// ---------------------------------------------------------------------------
// Shared ring page
// ---------------------------------------------------------------------------

/// `XENSTORE_RING_SIZE`: bytes of each byte ring.
pub const XENSTORE_RING_SIZE: usize = 1024;

/// `MASK_XENSTORE_IDX`: byte position of free-running index `idx`.
#[inline]
pub const fn mask_xenstore_idx(idx: u32) -> usize {
    idx as usize & (XENSTORE_RING_SIZE - 1)
}

/// `XENSTORE_SERVER_FEATURE_RECONNECTION`: the ring can be reconnected.
pub const XENSTORE_SERVER_FEATURE_RECONNECTION: u32 = 1;
/// `XENSTORE_SERVER_FEATURE_ERROR`: the `error` field is present.
pub const XENSTORE_SERVER_FEATURE_ERROR: u32 = 2;
/// `XENSTORE_SERVER_FEATURE_WATCHDEPTH`: `XS_WATCH` takes a depth (after
/// Xen 4.17).
pub const XENSTORE_SERVER_FEATURE_WATCHDEPTH: u32 = 4;
/// `XENSTORE_SERVER_FEATURE_DOMID_ANY`: `DOMID_ANY` in permissions (after
/// Xen 4.17).
pub const XENSTORE_SERVER_FEATURE_DOMID_ANY: u32 = 8;

/// `XENSTORE_CONNECTED`: steady state of `connection`.
pub const XENSTORE_CONNECTED: u32 = 0;
/// `XENSTORE_RECONNECT`: reconnect in progress.
pub const XENSTORE_RECONNECT: u32 = 1;

/// `XENSTORE_ERROR_NONE`.
pub const XENSTORE_ERROR_NONE: u32 = 0;
/// `XENSTORE_ERROR_COMM`: communication problem.
pub const XENSTORE_ERROR_COMM: u32 = 1;
/// `XENSTORE_ERROR_RINGIDX`: invalid ring index.
pub const XENSTORE_ERROR_RINGIDX: u32 = 2;
/// `XENSTORE_ERROR_PROTO`: protocol violation (payload too long).
pub const XENSTORE_ERROR_PROTO: u32 = 3;

/// Size of `xenstore_domain_interface` in Xen 4.17 headers (e.g. Debian
/// 12's libxen-dev), which end after `error` and lack `evtchn_port`.
pub const XENSTORE_DOMAIN_INTERFACE_SIZE_XEN_4_17: usize = 2076;

/// `xenstore_domain_interface`: the xenstore ring page, 2080 bytes.
///
/// Indices are free-running byte counters; byte `x` of a stream is at
/// [`mask_xenstore_idx`]`(x)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct XenstoreDomainInterface {
    /// **\[guest\]** Requests to xenstored.
    pub req: [u8; XENSTORE_RING_SIZE],
    /// **\[xenstored\]** Replies and watch events.
    pub rsp: [u8; XENSTORE_RING_SIZE],
    /// **\[xenstored\]** Request consumer index.
    pub req_cons: u32,
    /// **\[guest\]** Request producer index.
    pub req_prod: u32,
    /// **\[guest\]** Response consumer index.
    pub rsp_cons: u32,
    /// **\[xenstored\]** Response producer index.
    pub rsp_prod: u32,
    /// **\[xenstored\]** `XENSTORE_SERVER_FEATURE_*`.
    pub server_features: u32,
    /// **\[guest, xenstored\]** `XENSTORE_CONNECTED` / `XENSTORE_RECONNECT`.
    pub connection: u32,
    /// **\[xenstored\]** `XENSTORE_ERROR_*`.
    pub error: u32,
    /// **\[xen\]** Event channel for xenstored to signal (dom0less /
    /// Hyperlaunch domains); 0 = unused. Not in Xen 4.17 headers.
    pub evtchn_port: Port,
}

impl Default for XenstoreDomainInterface {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<XsdSockmsg>() == 16);
    assert!(offset_of!(XsdSockmsg, req_id) == 4);
    assert!(offset_of!(XsdSockmsg, tx_id) == 8);
    assert!(offset_of!(XsdSockmsg, len) == 12);
    assert!(size_of::<XenstoreDomainInterface>() == 2080);
    assert!(offset_of!(XenstoreDomainInterface, rsp) == 1024);
    assert!(offset_of!(XenstoreDomainInterface, req_cons) == 2048);
    assert!(offset_of!(XenstoreDomainInterface, req_prod) == 2052);
    assert!(offset_of!(XenstoreDomainInterface, rsp_cons) == 2056);
    assert!(offset_of!(XenstoreDomainInterface, rsp_prod) == 2060);
    assert!(offset_of!(XenstoreDomainInterface, server_features) == 2064);
    assert!(offset_of!(XenstoreDomainInterface, connection) == 2068);
    assert!(offset_of!(XenstoreDomainInterface, error) == 2072);
    assert!(offset_of!(XenstoreDomainInterface, evtchn_port) == 2076);
    assert!(
        offset_of!(XenstoreDomainInterface, evtchn_port) == XENSTORE_DOMAIN_INTERFACE_SIZE_XEN_4_17
    );
    assert!(size_of::<XenstoreDomainInterface>() <= crate::types::PAGE_SIZE);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_parse() {
        assert_eq!(XenbusState::parse(b"4"), Some(XenbusState::Connected));
        assert_eq!(XenbusState::parse(b"4\0"), Some(XenbusState::Connected));
        assert_eq!(XenbusState::parse(b"0"), Some(XenbusState::Unknown));
        assert_eq!(XenbusState::parse(b"08"), Some(XenbusState::Reconfigured));
        assert_eq!(XenbusState::parse(b"9"), None);
        assert_eq!(XenbusState::parse(b""), None);
        assert_eq!(XenbusState::parse(b"\0"), None);
        assert_eq!(XenbusState::parse(b" 4"), None);
        assert_eq!(XenbusState::parse(b"4 "), None);
        assert_eq!(XenbusState::parse(b"-1"), None);
        assert_eq!(XenbusState::parse(b"+4"), None);
        assert_eq!(XenbusState::parse(b"4\0\0"), None);
        assert_eq!(XenbusState::parse(b"99999999999999999999"), None);
        for s in XenbusState::ALL {
            assert_eq!(XenbusState::parse(s.as_str().as_bytes()), Some(s));
            assert_eq!(XenbusState::try_from(s as u32), Ok(s));
        }
        assert_eq!(XenbusState::try_from(9), Err(9));
        assert_eq!(XenbusState::InitWait.name(), "InitWait");
    }

    #[test]
    fn xs_types() {
        for v in 0..=26u32 {
            match XsType::try_from(v) {
                Ok(t) => assert_eq!(u32::from(t), v),
                Err(e) => assert_eq!((v, e), (20, 20), "only the removed XS_RESTRICT is invalid"),
            }
        }
        assert_eq!(XsType::try_from(XS_INVALID), Ok(XsType::Invalid));
        assert_eq!(XsType::try_from(27), Err(27));
        assert_eq!(XsType::try_from(XS_WATCH_EVENT), Ok(XsType::WatchEvent));
    }

    #[test]
    fn xs_errors() {
        assert_eq!(xs_error_errno(b"ENOENT\0"), Some(2));
        assert_eq!(xs_error_errno(b"EAGAIN"), Some(11));
        assert_eq!(xs_error_errno(b"EWHAT"), None);
        assert_eq!(xs_error_name(106), Some("EISCONN"));
        assert_eq!(xs_error_name(4), None);
        assert_eq!(mask_xenstore_idx(1025), 1);
    }
}
