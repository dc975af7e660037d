//! [`WireServer`]: a [`Store`] served over Unix sockets with the xenstore
//! wire protocol, like xenstored's socket.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use pvio_abi::DomId;
use pvio_abi::xenbus::{
    XENSTORE_PAYLOAD_MAX, XS_DIRECTORY, XS_ERROR, XS_GET_DOMAIN_PATH, XS_GET_PERMS, XS_INTRODUCE,
    XS_IS_DOMAIN_INTRODUCED, XS_MKDIR, XS_READ, XS_RELEASE, XS_RESET_WATCHES, XS_RM, XS_SET_PERMS,
    XS_TRANSACTION_END, XS_TRANSACTION_START, XS_UNWATCH, XS_WATCH, XS_WATCH_EVENT, XS_WRITE,
};

use super::{Message, join_strings, read_message, split_strings, utf8};
use crate::path::domain_path;
use crate::perms::DOM0;
use crate::{Conn, Perms, Store, TxId, XsError};

/// How long a write to a client may block (the client reads nothing)
/// before the server closes that connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often an idle connection's event thread checks whether the
/// connection ended.
const EVENT_POLL: Duration = Duration::from_millis(200);

/// Open connections of a server, so that dropping it closes them.
#[derive(Debug, Default)]
struct Registry {
    next: u64,
    streams: BTreeMap<u64, UnixStream>,
    closed: bool,
}

type SharedRegistry = Arc<Mutex<Registry>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves a [`Store`] with the xenstore wire protocol: on a listening Unix
/// socket (every connection acts as dom0, like xenstored's socket), and on
/// already-connected streams as any domain ([`WireServer::serve_stream`]).
///
/// Each connection gets its own store [`Conn`] (its watches and
/// transactions end with the connection), a thread handling its requests
/// one at a time, and a thread delivering its watch events while it is
/// idle. Dropping the server stops accepting, removes the socket file and
/// closes every connection.
///
/// ```no_run
/// use pvio_abi::DomId;
/// use pvio_xenbus::{Store, XsClient};
/// use pvio_xenbus::wire::{WireConn, WireServer};
///
/// let store = Store::new();
/// let server = WireServer::bind(store.clone(), "/tmp/pvio-xenstore.sock")?;
/// let dom0 = WireConn::connect(server.path())?;
/// dom0.write("/tool/x", b"1")?;
/// assert_eq!(store.connect(DomId(0)).read("/tool/x")?, b"1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct WireServer {
    store: Store,
    path: PathBuf,
    registry: SharedRegistry,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl fmt::Debug for WireServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WireServer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl WireServer {
    /// Listens on a new Unix socket at `path` (which must not exist) and
    /// serves every connection on it as dom0.
    pub fn bind(store: Store, path: impl AsRef<Path>) -> io::Result<WireServer> {
        let path = path.as_ref().to_path_buf();
        let listener = UnixListener::bind(&path)?;
        let registry = SharedRegistry::default();
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (store, registry, stop) = (store.clone(), registry.clone(), stop.clone());
            thread::Builder::new()
                .name("xs-wire-accept".into())
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        // A failed accept or connection setup affects only
                        // that connection.
                        if let Ok(stream) = stream {
                            let _ = serve(&store, &registry, stream, DOM0, false);
                        }
                    }
                })?
        };
        Ok(WireServer {
            store,
            path,
            registry,
            stop,
            acceptor: Some(acceptor),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store served.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves an already-connected stream (e.g. one end of a socketpair
    /// handed to a domain process) as `domid`; returns once its threads
    /// are started. The connection is closed when the server is dropped.
    pub fn serve_stream(&self, stream: UnixStream, domid: DomId) -> io::Result<()> {
        serve(&self.store, &self.registry, stream, domid, false)
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        lock(&self.registry).streams.len()
    }
}

impl Drop for WireServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the acceptor; if that fails (socket file gone) it is left
        // blocked rather than joined.
        if UnixStream::connect(&self.path).is_ok()
            && let Some(t) = self.acceptor.take()
        {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
        let mut reg = lock(&self.registry);
        reg.closed = true;
        for s in std::mem::take(&mut reg.streams).into_values() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Serves `stream` as `domid` on `store` without a [`WireServer`]: for a
/// process that hands out connections itself. The connection lives until
/// the peer closes it (or breaks the protocol).
pub fn serve_stream(store: &Store, stream: UnixStream, domid: DomId) -> io::Result<()> {
    serve(store, &SharedRegistry::default(), stream, domid, false)
}

/// [`serve_stream`] on the calling thread: returns once the peer closed
/// the connection (or broke the protocol) and every thread serving it has
/// ended.
pub fn serve_stream_blocking(store: &Store, stream: UnixStream, domid: DomId) -> io::Result<()> {
    serve(store, &SharedRegistry::default(), stream, domid, true)
}

fn serve(
    store: &Store,
    registry: &SharedRegistry,
    stream: UnixStream,
    domid: DomId,
    blocking: bool,
) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let reader = stream.try_clone()?;
    let handle = stream.try_clone()?;
    let id = {
        let mut reg = lock(registry);
        if reg.closed {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return Err(io::Error::new(io::ErrorKind::NotConnected, "server closed"));
        }
        let id = reg.next;
        reg.next += 1;
        reg.streams.insert(id, handle);
        id
    };
    let conn = Arc::new(store.connect(domid));
    let writer = Arc::new(Mutex::new(stream));
    let done = Arc::new(AtomicBool::new(false));
    let events = {
        let (conn, writer, done) = (conn.clone(), writer.clone(), done.clone());
        thread::Builder::new()
            .name(format!("xs-wire-ev{domid}"))
            .spawn(move || event_loop(&conn, &writer, &done))
    };
    let events = match events {
        Ok(t) => t,
        Err(e) => {
            lock(registry).streams.remove(&id);
            return Err(e);
        }
    };
    let store2 = store.clone();
    let registry2 = registry.clone();
    let done2 = done.clone();
    let run = move || {
        request_loop(&store2, &conn, reader, &writer);
        done.store(true, Ordering::Release);
        // Wakes the event thread now rather than at its next poll.
        conn.close_events();
        let _ = lock(&writer).shutdown(std::net::Shutdown::Both);
        let _ = events.join();
        lock(&registry2).streams.remove(&id);
        drop(conn);
    };
    if blocking {
        run();
        return Ok(());
    }
    let spawned = thread::Builder::new()
        .name(format!("xs-wire-rq{domid}"))
        .spawn(run);
    if let Err(e) = spawned {
        // The event thread ends at its next poll.
        done2.store(true, Ordering::Release);
        lock(registry).streams.remove(&id);
        return Err(e);
    }
    Ok(())
}

/// Writes one message; on failure (including the write timeout) closes the
/// connection.
fn send(writer: &Mutex<UnixStream>, msg: &Message) -> bool {
    let Ok(bytes) = msg.encode() else {
        return true; // not representable: skipped (see event_loop)
    };
    let mut w = lock(writer);
    if w.write_all(&bytes).is_err() {
        let _ = w.shutdown(std::net::Shutdown::Both);
        return false;
    }
    true
}

fn request_loop(store: &Store, conn: &Conn, reader: UnixStream, writer: &Mutex<UnixStream>) {
    let mut reader = BufReader::with_capacity(HEADER_BUF, reader);
    // Any framing error (oversized length, truncated message, read error)
    // ends the connection, as in xenstored.
    while let Ok(Some(msg)) = read_message(&mut reader) {
        // The reply is written under the writer lock taken before the
        // operation, so the initial event of a WATCH follows its reply.
        let mut w = lock(writer);
        let reply = handle(store, conn, &msg);
        let Ok(bytes) = reply.encode() else {
            // Cannot happen: oversized replies become E2BIG in `handle`.
            break;
        };
        if w.write_all(&bytes).is_err() {
            let _ = w.shutdown(std::net::Shutdown::Both);
            break;
        }
    }
}

/// Buffer of the request reader: one full message.
const HEADER_BUF: usize = super::HEADER_SIZE + XENSTORE_PAYLOAD_MAX;

fn event_loop(conn: &Conn, writer: &Mutex<UnixStream>, done: &AtomicBool) {
    while !done.load(Ordering::Acquire) {
        let Some(ev) = conn.next_event(EVENT_POLL) else {
            if conn.is_closed() {
                // The domain was released: end the connection.
                let _ = lock(writer).shutdown(std::net::Shutdown::Both);
                return;
            }
            continue;
        };
        // An event whose path and token do not fit in one message cannot
        // be sent; `send` skips it.
        let msg = Message::new(XS_WATCH_EVENT, 0, 0, join_strings(&[ev.path, ev.token]));
        if !send(writer, &msg) {
            return;
        }
    }
}

const OK: &[u8] = b"OK\0";

/// Handles one request and builds its reply (same type, req_id and tx_id;
/// `XS_ERROR` with the errno name on failure).
pub(crate) fn handle(store: &Store, conn: &Conn, msg: &Message) -> Message {
    let result = dispatch(store, conn, msg).and_then(|payload| {
        if payload.len() > XENSTORE_PAYLOAD_MAX {
            Err(XsError::TooBig)
        } else {
            Ok(payload)
        }
    });
    match result {
        Ok(payload) => Message::new(msg.ty, msg.req_id, msg.tx_id, payload),
        Err(e) => Message::new(
            XS_ERROR,
            msg.req_id,
            msg.tx_id,
            join_strings(&[e.errno_name()]),
        ),
    }
}

/// Exactly one string argument.
fn one_arg(payload: &[u8]) -> Result<&str, XsError> {
    match split_strings(payload)?.as_slice() {
        [one] => utf8(one),
        _ => Err(XsError::Invalid),
    }
}

fn parse_domid(s: &str) -> Result<DomId, XsError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(XsError::Invalid);
    }
    s.parse::<u16>().map(DomId).map_err(|_| XsError::Invalid)
}

fn dispatch(store: &Store, conn: &Conn, msg: &Message) -> Result<Vec<u8>, XsError> {
    let tx = TxId::from_raw(msg.tx_id);
    let p = msg.payload.as_slice();
    match msg.ty {
        XS_READ => conn.read_in(tx, one_arg(p)?),
        XS_WRITE => {
            let nul = p.iter().position(|&b| b == 0).ok_or(XsError::Invalid)?;
            let path = utf8(&p[..nul])?;
            conn.write_in(tx, path, &p[nul + 1..]).map(|()| OK.to_vec())
        }
        XS_MKDIR => conn.mkdir_in(tx, one_arg(p)?).map(|()| OK.to_vec()),
        XS_RM => conn.rm_in(tx, one_arg(p)?).map(|()| OK.to_vec()),
        XS_DIRECTORY => conn
            .directory_in(tx, one_arg(p)?)
            .map(|names| join_strings(&names)),
        XS_GET_PERMS => conn
            .get_perms_in(tx, one_arg(p)?)
            .map(|perms| join_strings(&perms.to_strings())),
        XS_SET_PERMS => {
            let args = split_strings(p)?;
            let (path, perms) = args.split_first().ok_or(XsError::Invalid)?;
            let perms = perms
                .iter()
                .map(|s| utf8(s))
                .collect::<Result<Vec<_>, _>>()?;
            let perms = Perms::parse(&perms)?;
            conn.set_perms_in(tx, utf8(path)?, &perms)
                .map(|()| OK.to_vec())
        }
        XS_WATCH | XS_UNWATCH => {
            // xenstored accepts an optional third argument (watch depth)
            // only when it advertises the feature; this server does not.
            let args = split_strings(p)?;
            let [path, token] = args.as_slice() else {
                return Err(XsError::Invalid);
            };
            let (path, token) = (utf8(path)?, utf8(token)?);
            if msg.ty == XS_WATCH {
                conn.watch(path, token)?;
            } else {
                conn.unwatch(path, token)?;
            }
            Ok(OK.to_vec())
        }
        XS_TRANSACTION_START => {
            if tx.is_some() {
                return Err(XsError::Busy);
            }
            if !(p.is_empty() || p == b"\0") {
                return Err(XsError::Invalid);
            }
            let id = conn.transaction_start()?;
            Ok(join_strings(&[id.to_string()]))
        }
        XS_TRANSACTION_END => {
            let tx = tx.ok_or(XsError::NotFound)?;
            let commit = match one_arg(p)? {
                "T" => true,
                "F" => false,
                _ => return Err(XsError::Invalid),
            };
            conn.transaction_end(tx, commit).map(|()| OK.to_vec())
        }
        XS_GET_DOMAIN_PATH => {
            let domid = parse_domid(one_arg(p)?)?;
            Ok(join_strings(&[domain_path(domid)]))
        }
        XS_IS_DOMAIN_INTRODUCED => {
            let domid = parse_domid(one_arg(p)?)?;
            Ok(if store.is_introduced(domid) {
                b"T\0".to_vec()
            } else {
                b"F\0".to_vec()
            })
        }
        XS_RESET_WATCHES => conn.reset_watches().map(|()| OK.to_vec()),
        XS_INTRODUCE | XS_RELEASE => {
            if conn.domid() != DOM0 {
                return Err(XsError::Access);
            }
            let args = split_strings(p)?;
            let domid = parse_domid(utf8(args.first().ok_or(XsError::Invalid)?)?)?;
            if msg.ty == XS_INTRODUCE {
                // `domid\0gfn\0evtchn\0`: the ring arguments have no
                // meaning here.
                if args.len() != 3 {
                    return Err(XsError::Invalid);
                }
                store.introduce_domain(domid)?;
            } else {
                if args.len() != 1 {
                    return Err(XsError::Invalid);
                }
                store.release_domain(domid)?;
            }
            Ok(OK.to_vec())
        }
        // XS_CONTROL, XS_RESUME, XS_SET_TARGET, XS_DIRECTORY_PART (clients
        // fall back to it only after E2BIG, and libxenstore turns its ENOSYS
        // back into E2BIG), the feature and quota calls, client-only and
        // unknown types.
        _ => Err(XsError::NoSys),
    }
}
