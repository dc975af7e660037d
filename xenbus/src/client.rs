//! [`XsClient`]: the store interface drivers program against, implemented
//! by [`Conn`] and by [`WireConn`] (the xenstore wire protocol), and
//! [`Client`], either of them; the
//! [`Txn`] handle and the retry loop [`with_transaction`]
//! (spec/xenbus.md §3 "in one transaction, retried on EAGAIN", §6.4).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use pvio_abi::DomId;

use crate::wire::WireConn;
use crate::{Conn, ConnStats, Perms, TxId, WatchEvent, XsError};

/// The operations of a XenStore connection, as a driver sees them
/// (`XS_*` requests of spec/xenbus.md §6.3). Every node operation takes an
/// optional transaction.
pub trait XsClient {
    /// The domain the connection speaks for.
    fn domid(&self) -> DomId;
    /// `XS_READ`.
    fn read_in(&self, tx: Option<TxId>, path: &str) -> Result<Vec<u8>, XsError>;
    /// `XS_WRITE` (creates missing parents).
    fn write_in(&self, tx: Option<TxId>, path: &str, value: &[u8]) -> Result<(), XsError>;
    /// `XS_MKDIR`.
    fn mkdir_in(&self, tx: Option<TxId>, path: &str) -> Result<(), XsError>;
    /// `XS_RM` (recursive).
    fn rm_in(&self, tx: Option<TxId>, path: &str) -> Result<(), XsError>;
    /// `XS_DIRECTORY` (sorted child names).
    fn directory_in(&self, tx: Option<TxId>, path: &str) -> Result<Vec<String>, XsError>;
    /// `XS_GET_PERMS`.
    fn get_perms_in(&self, tx: Option<TxId>, path: &str) -> Result<Perms, XsError>;
    /// `XS_SET_PERMS`.
    fn set_perms_in(&self, tx: Option<TxId>, path: &str, perms: &Perms) -> Result<(), XsError>;
    /// `XS_WATCH` (fires once at once).
    fn watch(&self, path: &str, token: &str) -> Result<(), XsError>;
    /// `XS_UNWATCH`.
    fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError>;
    /// `XS_TRANSACTION_START`.
    fn transaction_start(&self) -> Result<TxId, XsError>;
    /// `XS_TRANSACTION_END` (`EAGAIN` on conflict).
    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), XsError>;
    /// Waits up to `timeout` for any watch event.
    fn next_event(&self, timeout: Duration) -> Option<WatchEvent>;
    /// Waits up to `timeout` for a watch event with `token`, leaving others
    /// queued.
    fn next_event_for(&self, token: &str, timeout: Duration) -> Option<WatchEvent>;

    /// `XS_READ` outside a transaction.
    fn read(&self, path: &str) -> Result<Vec<u8>, XsError> {
        self.read_in(None, path)
    }
    /// `XS_WRITE` outside a transaction.
    fn write(&self, path: &str, value: &[u8]) -> Result<(), XsError> {
        self.write_in(None, path, value)
    }
    /// `XS_MKDIR` outside a transaction.
    fn mkdir(&self, path: &str) -> Result<(), XsError> {
        self.mkdir_in(None, path)
    }
    /// `XS_RM` outside a transaction.
    fn rm(&self, path: &str) -> Result<(), XsError> {
        self.rm_in(None, path)
    }
    /// `XS_DIRECTORY` outside a transaction.
    fn directory(&self, path: &str) -> Result<Vec<String>, XsError> {
        self.directory_in(None, path)
    }
}

impl XsClient for Conn {
    fn domid(&self) -> DomId {
        Conn::domid(self)
    }
    fn read_in(&self, tx: Option<TxId>, path: &str) -> Result<Vec<u8>, XsError> {
        Conn::read_in(self, tx, path)
    }
    fn write_in(&self, tx: Option<TxId>, path: &str, value: &[u8]) -> Result<(), XsError> {
        Conn::write_in(self, tx, path, value)
    }
    fn mkdir_in(&self, tx: Option<TxId>, path: &str) -> Result<(), XsError> {
        Conn::mkdir_in(self, tx, path)
    }
    fn rm_in(&self, tx: Option<TxId>, path: &str) -> Result<(), XsError> {
        Conn::rm_in(self, tx, path)
    }
    fn directory_in(&self, tx: Option<TxId>, path: &str) -> Result<Vec<String>, XsError> {
        Conn::directory_in(self, tx, path)
    }
    fn get_perms_in(&self, tx: Option<TxId>, path: &str) -> Result<Perms, XsError> {
        Conn::get_perms_in(self, tx, path)
    }
    fn set_perms_in(&self, tx: Option<TxId>, path: &str, perms: &Perms) -> Result<(), XsError> {
        Conn::set_perms_in(self, tx, path, perms)
    }
    fn watch(&self, path: &str, token: &str) -> Result<(), XsError> {
        Conn::watch(self, path, token)
    }
    fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError> {
        Conn::unwatch(self, path, token)
    }
    fn transaction_start(&self) -> Result<TxId, XsError> {
        Conn::transaction_start(self)
    }
    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), XsError> {
        Conn::transaction_end(self, tx, commit)
    }
    fn next_event(&self, timeout: Duration) -> Option<WatchEvent> {
        Conn::next_event(self, timeout)
    }
    fn next_event_for(&self, token: &str, timeout: Duration) -> Option<WatchEvent> {
        Conn::next_event_for(self, token, timeout)
    }
}

macro_rules! forward_client {
    ($($ty:ty),*) => {$(
        impl<T: XsClient + ?Sized> XsClient for $ty {
            fn domid(&self) -> DomId {
                (**self).domid()
            }
            fn read_in(&self, tx: Option<TxId>, path: &str) -> Result<Vec<u8>, XsError> {
                (**self).read_in(tx, path)
            }
            fn write_in(&self, tx: Option<TxId>, path: &str, value: &[u8]) -> Result<(), XsError> {
                (**self).write_in(tx, path, value)
            }
            fn mkdir_in(&self, tx: Option<TxId>, path: &str) -> Result<(), XsError> {
                (**self).mkdir_in(tx, path)
            }
            fn rm_in(&self, tx: Option<TxId>, path: &str) -> Result<(), XsError> {
                (**self).rm_in(tx, path)
            }
            fn directory_in(&self, tx: Option<TxId>, path: &str) -> Result<Vec<String>, XsError> {
                (**self).directory_in(tx, path)
            }
            fn get_perms_in(&self, tx: Option<TxId>, path: &str) -> Result<Perms, XsError> {
                (**self).get_perms_in(tx, path)
            }
            fn set_perms_in(&self, tx: Option<TxId>, path: &str, perms: &Perms) -> Result<(), XsError> {
                (**self).set_perms_in(tx, path, perms)
            }
            fn watch(&self, path: &str, token: &str) -> Result<(), XsError> {
                (**self).watch(path, token)
            }
            fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError> {
                (**self).unwatch(path, token)
            }
            fn transaction_start(&self) -> Result<TxId, XsError> {
                (**self).transaction_start()
            }
            fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), XsError> {
                (**self).transaction_end(tx, commit)
            }
            fn next_event(&self, timeout: Duration) -> Option<WatchEvent> {
                (**self).next_event(timeout)
            }
            fn next_event_for(&self, token: &str, timeout: Duration) -> Option<WatchEvent> {
                (**self).next_event_for(token, timeout)
            }
        }
    )*};
}

forward_client!(&T, Arc<T>, Box<T>);

/// Read access, outside or inside a transaction: what the typed readers of
/// [`crate::device`] need. Implemented by every [`XsClient`] (outside any
/// transaction) and by [`Txn`].
pub trait XsRead {
    /// Reads the value at `path`.
    fn xs_read(&self, path: &str) -> Result<Vec<u8>, XsError>;
}

impl<X: XsClient + ?Sized> XsRead for X {
    fn xs_read(&self, path: &str) -> Result<Vec<u8>, XsError> {
        self.read_in(None, path)
    }
}

/// An open transaction on a client: the node operations with the
/// transaction id filled in. Handed to the body of [`with_transaction`].
pub struct Txn<'a, X: XsClient + ?Sized> {
    client: &'a X,
    id: TxId,
}

impl<X: XsClient + ?Sized> fmt::Debug for Txn<'_, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Txn")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<X: XsClient + ?Sized> XsRead for Txn<'_, X> {
    fn xs_read(&self, path: &str) -> Result<Vec<u8>, XsError> {
        self.read(path)
    }
}

impl<'a, X: XsClient + ?Sized> Txn<'a, X> {
    /// Wraps a transaction started with [`XsClient::transaction_start`];
    /// ending it stays the caller's job.
    pub fn new(client: &'a X, id: TxId) -> Txn<'a, X> {
        Txn { client, id }
    }

    /// The transaction id.
    pub fn id(&self) -> TxId {
        self.id
    }

    /// The client the transaction runs on.
    pub fn client(&self) -> &'a X {
        self.client
    }

    /// `XS_READ` in the transaction.
    pub fn read(&self, path: &str) -> Result<Vec<u8>, XsError> {
        self.client.read_in(Some(self.id), path)
    }

    /// `XS_WRITE` in the transaction.
    pub fn write(&self, path: &str, value: &[u8]) -> Result<(), XsError> {
        self.client.write_in(Some(self.id), path, value)
    }

    /// `XS_MKDIR` in the transaction.
    pub fn mkdir(&self, path: &str) -> Result<(), XsError> {
        self.client.mkdir_in(Some(self.id), path)
    }

    /// `XS_RM` in the transaction.
    pub fn rm(&self, path: &str) -> Result<(), XsError> {
        self.client.rm_in(Some(self.id), path)
    }

    /// `XS_DIRECTORY` in the transaction.
    pub fn directory(&self, path: &str) -> Result<Vec<String>, XsError> {
        self.client.directory_in(Some(self.id), path)
    }

    /// `XS_GET_PERMS` in the transaction.
    pub fn get_perms(&self, path: &str) -> Result<Perms, XsError> {
        self.client.get_perms_in(Some(self.id), path)
    }

    /// `XS_SET_PERMS` in the transaction.
    pub fn set_perms(&self, path: &str, perms: &Perms) -> Result<(), XsError> {
        self.client.set_perms_in(Some(self.id), path, perms)
    }
}

/// How many times [`with_transaction`] runs its body before giving up with
/// `EAGAIN`.
pub const TRANSACTION_ATTEMPTS: u32 = 16;

/// Runs `body` in a transaction and commits it, starting over (a new
/// transaction, `body` run again) when the commit fails with `EAGAIN`, at
/// most [`TRANSACTION_ATTEMPTS`] times; then returns `EAGAIN`.
///
/// If `body` fails, the transaction is aborted and its error returned. Any
/// other store error ends the loop. `body` may run several times, so it must
/// not have effects outside the transaction that a retry would repeat
/// wrongly.
///
/// ```
/// use pvio_abi::DomId;
/// use pvio_xenbus::{Store, XsError, with_transaction};
///
/// let store = Store::new();
/// let dom0 = store.connect(DomId(0));
/// with_transaction(&dom0, |tx| -> Result<(), XsError> {
///     tx.write("/tool/a", b"1")?;
///     tx.write("/tool/b", b"2")
/// })?;
/// assert_eq!(dom0.read("/tool/b")?, b"2");
/// # Ok::<(), XsError>(())
/// ```
pub fn with_transaction<X, T, E, F>(client: &X, mut body: F) -> Result<T, E>
where
    X: XsClient + ?Sized,
    E: From<XsError>,
    F: FnMut(&Txn<'_, X>) -> Result<T, E>,
{
    for _ in 0..TRANSACTION_ATTEMPTS {
        let id = client.transaction_start()?;
        let txn = Txn::new(client, id);
        let value = match body(&txn) {
            Ok(value) => value,
            Err(e) => {
                // The body's error is the one to report; an abort failure
                // (e.g. connection closed) adds nothing.
                let _ = client.transaction_end(id, false);
                return Err(e);
            }
        };
        match client.transaction_end(id, true) {
            Ok(()) => return Ok(value),
            Err(XsError::Again) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(XsError::Again.into())
}

/// A store connection of either kind: [`Conn`] in the hypervisor's process
/// (embedded mode) or [`WireConn`] over the xenstore wire protocol (hosted
/// mode). What `Domain::store()` hands to drivers; it has the inherent
/// methods of [`Conn`] that drivers call, and implements [`XsClient`].
#[derive(Debug)]
pub enum Client {
    /// A connection to a [`crate::Store`] in this process.
    Local(Conn),
    /// A connection over a Unix stream.
    Wire(WireConn),
}

impl From<Conn> for Client {
    fn from(c: Conn) -> Client {
        Client::Local(c)
    }
}

impl From<WireConn> for Client {
    fn from(c: WireConn) -> Client {
        Client::Wire(c)
    }
}

macro_rules! either {
    ($self:expr, $c:ident => $e:expr) => {
        match $self {
            Client::Local($c) => $e,
            Client::Wire($c) => $e,
        }
    };
}

impl Client {
    /// The domain the connection speaks for.
    pub fn domid(&self) -> DomId {
        either!(self, c => c.domid())
    }

    /// The local connection, if this is one.
    pub fn as_local(&self) -> Option<&Conn> {
        match self {
            Client::Local(c) => Some(c),
            Client::Wire(_) => None,
        }
    }

    /// The wire connection, if this is one.
    pub fn as_wire(&self) -> Option<&WireConn> {
        match self {
            Client::Wire(c) => Some(c),
            Client::Local(_) => None,
        }
    }

    /// `XS_GET_DOMAIN_PATH`: `/local/domain/<domid>`.
    pub fn get_domain_path(&self, domid: DomId) -> String {
        crate::path::domain_path(domid)
    }

    /// True once the connection was closed (domain released, or stream
    /// broken): every request then fails with `EIO`.
    pub fn is_closed(&self) -> bool {
        either!(self, c => c.is_closed())
    }

    /// `XS_READ`.
    pub fn read(&self, path: &str) -> Result<Vec<u8>, XsError> {
        self.read_in(None, path)
    }
    /// `XS_READ`, optionally inside a transaction.
    pub fn read_in(&self, tx: Option<TxId>, path: &str) -> Result<Vec<u8>, XsError> {
        either!(self, c => c.read_in(tx, path))
    }
    /// `XS_WRITE` (creates missing parents).
    pub fn write(&self, path: &str, value: &[u8]) -> Result<(), XsError> {
        self.write_in(None, path, value)
    }
    /// `XS_WRITE`, optionally inside a transaction.
    pub fn write_in(&self, tx: Option<TxId>, path: &str, value: &[u8]) -> Result<(), XsError> {
        either!(self, c => c.write_in(tx, path, value))
    }
    /// `XS_MKDIR`.
    pub fn mkdir(&self, path: &str) -> Result<(), XsError> {
        self.mkdir_in(None, path)
    }
    /// `XS_MKDIR`, optionally inside a transaction.
    pub fn mkdir_in(&self, tx: Option<TxId>, path: &str) -> Result<(), XsError> {
        either!(self, c => c.mkdir_in(tx, path))
    }
    /// `XS_RM` (recursive).
    pub fn rm(&self, path: &str) -> Result<(), XsError> {
        self.rm_in(None, path)
    }
    /// `XS_RM`, optionally inside a transaction.
    pub fn rm_in(&self, tx: Option<TxId>, path: &str) -> Result<(), XsError> {
        either!(self, c => c.rm_in(tx, path))
    }
    /// `XS_DIRECTORY`.
    pub fn directory(&self, path: &str) -> Result<Vec<String>, XsError> {
        self.directory_in(None, path)
    }
    /// `XS_DIRECTORY`, optionally inside a transaction.
    pub fn directory_in(&self, tx: Option<TxId>, path: &str) -> Result<Vec<String>, XsError> {
        either!(self, c => c.directory_in(tx, path))
    }
    /// `XS_GET_PERMS`.
    pub fn get_perms(&self, path: &str) -> Result<Perms, XsError> {
        self.get_perms_in(None, path)
    }
    /// `XS_GET_PERMS`, optionally inside a transaction.
    pub fn get_perms_in(&self, tx: Option<TxId>, path: &str) -> Result<Perms, XsError> {
        either!(self, c => c.get_perms_in(tx, path))
    }
    /// `XS_SET_PERMS`.
    pub fn set_perms(&self, path: &str, perms: &Perms) -> Result<(), XsError> {
        self.set_perms_in(None, path, perms)
    }
    /// `XS_SET_PERMS`, optionally inside a transaction.
    pub fn set_perms_in(&self, tx: Option<TxId>, path: &str, perms: &Perms) -> Result<(), XsError> {
        either!(self, c => c.set_perms_in(tx, path, perms))
    }
    /// `XS_WATCH` (fires once at once).
    pub fn watch(&self, path: &str, token: &str) -> Result<(), XsError> {
        either!(self, c => c.watch(path, token))
    }
    /// `XS_UNWATCH`.
    pub fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError> {
        either!(self, c => c.unwatch(path, token))
    }
    /// `XS_RESET_WATCHES`: drops every watch and open transaction.
    pub fn reset_watches(&self) -> Result<(), XsError> {
        either!(self, c => c.reset_watches())
    }
    /// `XS_TRANSACTION_START`.
    pub fn transaction_start(&self) -> Result<TxId, XsError> {
        either!(self, c => c.transaction_start())
    }
    /// `XS_TRANSACTION_END` (`EAGAIN` on conflict).
    pub fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), XsError> {
        either!(self, c => c.transaction_end(tx, commit))
    }
    /// Waits up to `timeout` for the next watch event.
    pub fn next_event(&self, timeout: Duration) -> Option<WatchEvent> {
        either!(self, c => c.next_event(timeout))
    }
    /// The next watch event, if one is pending.
    pub fn try_next_event(&self) -> Option<WatchEvent> {
        either!(self, c => c.try_next_event())
    }
    /// Waits up to `timeout` for a watch event with `token`, leaving others
    /// queued.
    pub fn next_event_for(&self, token: &str, timeout: Duration) -> Option<WatchEvent> {
        either!(self, c => c.next_event_for(token, timeout))
    }
    /// Events pending on this side of the connection.
    pub fn pending_events(&self) -> usize {
        either!(self, c => c.pending_events())
    }
    /// The counters of a local connection (`None` for a wire one: the
    /// server keeps those).
    pub fn stats(&self) -> Option<ConnStats> {
        self.as_local().map(Conn::stats)
    }
}

impl XsClient for Client {
    fn domid(&self) -> DomId {
        Client::domid(self)
    }
    fn read_in(&self, tx: Option<TxId>, path: &str) -> Result<Vec<u8>, XsError> {
        Client::read_in(self, tx, path)
    }
    fn write_in(&self, tx: Option<TxId>, path: &str, value: &[u8]) -> Result<(), XsError> {
        Client::write_in(self, tx, path, value)
    }
    fn mkdir_in(&self, tx: Option<TxId>, path: &str) -> Result<(), XsError> {
        Client::mkdir_in(self, tx, path)
    }
    fn rm_in(&self, tx: Option<TxId>, path: &str) -> Result<(), XsError> {
        Client::rm_in(self, tx, path)
    }
    fn directory_in(&self, tx: Option<TxId>, path: &str) -> Result<Vec<String>, XsError> {
        Client::directory_in(self, tx, path)
    }
    fn get_perms_in(&self, tx: Option<TxId>, path: &str) -> Result<Perms, XsError> {
        Client::get_perms_in(self, tx, path)
    }
    fn set_perms_in(&self, tx: Option<TxId>, path: &str, perms: &Perms) -> Result<(), XsError> {
        Client::set_perms_in(self, tx, path, perms)
    }
    fn watch(&self, path: &str, token: &str) -> Result<(), XsError> {
        Client::watch(self, path, token)
    }
    fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError> {
        Client::unwatch(self, path, token)
    }
    fn transaction_start(&self) -> Result<TxId, XsError> {
        Client::transaction_start(self)
    }
    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), XsError> {
        Client::transaction_end(self, tx, commit)
    }
    fn next_event(&self, timeout: Duration) -> Option<WatchEvent> {
        Client::next_event(self, timeout)
    }
    fn next_event_for(&self, token: &str, timeout: Duration) -> Option<WatchEvent> {
        Client::next_event_for(self, token, timeout)
    }
}
