//! [`XsError`]: the errors of store operations, one per xenstore errno name
//! (spec/xenbus.md §6.3, `xs_wire.h`'s `xsd_errors[]`), plus structured
//! quota errors.

use core::fmt;

use pvio_abi::xenbus::{XS_ERRORS, xs_error_errno};

/// Which quota a request ran into (SECURITY.md C1/C2; XSA-326, XSA-349).
///
/// The limits themselves live in [`crate::Quota`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QuotaKind {
    /// Nodes owned by one domain ([`crate::Quota::max_nodes_per_domain`]).
    Nodes,
    /// Size of one node's value ([`crate::Quota::max_value_size`]).
    ValueSize,
    /// Watches registered on one connection
    /// ([`crate::Quota::max_watches`]).
    Watches,
    /// Open transactions on one connection
    /// ([`crate::Quota::max_transactions`]).
    Transactions,
    /// Nodes touched by one transaction
    /// ([`crate::Quota::max_transaction_nodes`]).
    TransactionNodes,
    /// Permission entries on one node
    /// ([`crate::Quota::max_perms_per_node`]).
    Perms,
}

impl QuotaKind {
    /// Short name of the quota (`"watches"`), as in xenstored's quota table.
    pub const fn name(self) -> &'static str {
        match self {
            QuotaKind::Nodes => "nodes",
            QuotaKind::ValueSize => "entry-size",
            QuotaKind::Watches => "watches",
            QuotaKind::Transactions => "transactions",
            QuotaKind::TransactionNodes => "transaction-nodes",
            QuotaKind::Perms => "permissions",
        }
    }
}

impl fmt::Display for QuotaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed store operation.
///
/// Every variant maps to the errno name xenstored would put in its
/// `XS_ERROR` reply ([`XsError::errno_name`]); [`XsError::Quota`] says which
/// limit was hit and maps to `ENOSPC` (or `E2BIG` for watches, as
/// xenstored's `do_watch` does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum XsError {
    /// `EINVAL`: malformed path, value, token, permission list or argument.
    Invalid,
    /// `EACCES`: the caller lacks the permission (or may not learn whether
    /// the node exists).
    Access,
    /// `EEXIST`: already exists (duplicate watch, domain already
    /// introduced).
    Exists,
    /// `EISDIR`: is a directory (not produced by this store; kept for
    /// parsing replies of other servers).
    IsDir,
    /// `ENOENT`: no such node, watch or transaction.
    NotFound,
    /// `ENOMEM`.
    NoMemory,
    /// `ENOSPC`: out of space (not produced by this store except through
    /// [`XsError::Quota`]).
    NoSpace,
    /// `EIO`: the connection is closed (its domain was released).
    Io,
    /// `ENOTEMPTY` (not produced by this store; kept for parsing).
    NotEmpty,
    /// `ENOSYS`: operation not supported.
    NoSys,
    /// `EROFS`: read-only.
    ReadOnly,
    /// `EBUSY`.
    Busy,
    /// `EAGAIN`: the transaction conflicted with a concurrent change;
    /// retry it from the start.
    Again,
    /// `EISCONN`.
    IsConn,
    /// `E2BIG`: the request does not fit in `XENSTORE_PAYLOAD_MAX` bytes.
    TooBig,
    /// `EPERM`: operation not permitted (e.g. an unprivileged domain
    /// changing a node's owner).
    Perm,
    /// A quota was exceeded; `errno_name()` is `ENOSPC`, or `E2BIG` for
    /// [`QuotaKind::Watches`].
    Quota(QuotaKind),
}

impl XsError {
    /// The xenstore error string for this error (`"ENOENT"`), one of
    /// [`pvio_abi::xenbus::XS_ERRORS`].
    pub const fn errno_name(self) -> &'static str {
        match self {
            XsError::Invalid => "EINVAL",
            XsError::Access => "EACCES",
            XsError::Exists => "EEXIST",
            XsError::IsDir => "EISDIR",
            XsError::NotFound => "ENOENT",
            XsError::NoMemory => "ENOMEM",
            XsError::NoSpace => "ENOSPC",
            XsError::Io => "EIO",
            XsError::NotEmpty => "ENOTEMPTY",
            XsError::NoSys => "ENOSYS",
            XsError::ReadOnly => "EROFS",
            XsError::Busy => "EBUSY",
            XsError::Again => "EAGAIN",
            XsError::IsConn => "EISCONN",
            XsError::TooBig => "E2BIG",
            XsError::Perm => "EPERM",
            XsError::Quota(QuotaKind::Watches) => "E2BIG",
            XsError::Quota(_) => "ENOSPC",
        }
    }

    /// The Linux errno value of [`XsError::errno_name`].
    pub fn errno(self) -> i32 {
        // Every name above is in XS_ERRORS (checked by a unit test).
        xs_error_errno(self.errno_name().as_bytes()).unwrap_or(22)
    }

    /// Parses an `XS_ERROR` payload (with or without its trailing NUL);
    /// `None` for a name not in [`pvio_abi::xenbus::XS_ERRORS`].
    pub fn from_errno_name(name: &[u8]) -> Option<XsError> {
        let name = match name {
            [rest @ .., 0] => rest,
            all => all,
        };
        const PLAIN: [XsError; 16] = [
            XsError::Invalid,
            XsError::Access,
            XsError::Exists,
            XsError::IsDir,
            XsError::NotFound,
            XsError::NoMemory,
            XsError::NoSpace,
            XsError::Io,
            XsError::NotEmpty,
            XsError::NoSys,
            XsError::ReadOnly,
            XsError::Busy,
            XsError::Again,
            XsError::IsConn,
            XsError::TooBig,
            XsError::Perm,
        ];
        PLAIN
            .into_iter()
            .find(|e| e.errno_name().as_bytes() == name)
    }

    /// True for [`XsError::Again`]: the transaction must be retried.
    pub const fn is_again(self) -> bool {
        matches!(self, XsError::Again)
    }
}

impl fmt::Display for XsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            XsError::Invalid => "invalid argument",
            XsError::Access => "permission denied",
            XsError::Exists => "already exists",
            XsError::IsDir => "is a directory",
            XsError::NotFound => "no such node, watch or transaction",
            XsError::NoMemory => "out of memory",
            XsError::NoSpace => "no space left",
            XsError::Io => "connection closed",
            XsError::NotEmpty => "not empty",
            XsError::NoSys => "not supported",
            XsError::ReadOnly => "read-only",
            XsError::Busy => "busy",
            XsError::Again => "transaction conflict, retry",
            XsError::IsConn => "already connected",
            XsError::TooBig => "request too large",
            XsError::Perm => "operation not permitted",
            XsError::Quota(kind) => {
                return write!(f, "{kind} quota exceeded ({})", self.errno_name());
            }
        };
        write!(f, "{what} ({})", self.errno_name())
    }
}

impl std::error::Error for XsError {}

// The table this module mirrors has one plain variant per name.
const _: () = assert!(XS_ERRORS.len() == 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        for &(name, errno) in XS_ERRORS {
            let e = XsError::from_errno_name(name.as_bytes()).expect(name);
            assert_eq!(e.errno_name(), name);
            assert_eq!(e.errno(), errno);
        }
        assert_eq!(XsError::from_errno_name(b"EAGAIN\0"), Some(XsError::Again));
        assert_eq!(XsError::from_errno_name(b"EQUOTA"), None);
        assert_eq!(XsError::Quota(QuotaKind::Watches).errno_name(), "E2BIG");
        assert_eq!(XsError::Quota(QuotaKind::Nodes).errno_name(), "ENOSPC");
        assert_eq!(XsError::Quota(QuotaKind::Nodes).errno(), 28);
        assert_eq!(
            XsError::Quota(QuotaKind::Transactions).to_string(),
            "transactions quota exceeded (ENOSPC)"
        );
        assert_eq!(
            XsError::NotFound.to_string(),
            "no such node, watch or transaction (ENOENT)"
        );
    }
}
