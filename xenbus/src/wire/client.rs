//! [`WireConn`]: an [`XsClient`] over a xenstore wire-protocol stream.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::{self, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use pvio_abi::DomId;
use pvio_abi::xenbus::{
    XENSTORE_PAYLOAD_MAX, XS_DIRECTORY, XS_ERROR, XS_GET_DOMAIN_PATH, XS_GET_PERMS,
    XS_IS_DOMAIN_INTRODUCED, XS_MKDIR, XS_READ, XS_RESET_WATCHES, XS_RM, XS_SET_PERMS,
    XS_TRANSACTION_END, XS_TRANSACTION_START, XS_UNWATCH, XS_WATCH, XS_WATCH_EVENT, XS_WRITE,
};

use super::{HEADER_SIZE, Message, join_strings, read_message, split_strings, utf8};
use crate::perms::DOM0;
use crate::{Perms, TxId, WatchEvent, XsClient, XsError};

/// Watch events a [`WireConn`] keeps queued at most (identical pending
/// events are coalesced first; a well-behaved server sends far fewer, as
/// its own queue is capped). Beyond it new events are dropped.
pub const MAX_QUEUED_EVENTS: usize = 4096;

#[derive(Debug, Default)]
struct State {
    next_req: u32,
    /// Requests in flight, and their reply once it arrived.
    pending: BTreeMap<u32, Option<Message>>,
    events: VecDeque<WatchEvent>,
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    cond: Condvar,
    writer: Mutex<UnixStream>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close(&self) {
        self.state().closed = true;
        self.cond.notify_all();
    }
}

/// A connection to a xenstore server ([`super::WireServer`], or xenstored)
/// over a Unix stream: implements [`XsClient`], so drivers use it exactly as
/// they use a local [`crate::Conn`].
///
/// Requests from several threads may be in flight at once; a reader thread
/// routes each reply to its caller by `req_id` and queues watch events for
/// [`WireConn::next_event`] / [`WireConn::next_event_for`]. Once the stream
/// breaks every request fails with `EIO` and no more events arrive.
/// Dropping the connection closes the stream (the server then drops its
/// watches and transactions).
pub struct WireConn {
    shared: Arc<Shared>,
    domid: DomId,
    reader: Option<JoinHandle<()>>,
}

impl fmt::Debug for WireConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WireConn")
            .field("domid", &self.domid)
            .finish_non_exhaustive()
    }
}

impl Drop for WireConn {
    fn drop(&mut self) {
        let _ = self
            .shared
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
    }
}

impl WireConn {
    /// Connects to the server socket at `path` (a privileged socket: the
    /// connection speaks for dom0).
    pub fn connect(path: impl AsRef<Path>) -> io::Result<WireConn> {
        WireConn::new(UnixStream::connect(path)?, DOM0)
    }

    /// Uses an already-connected stream on which the server treats this
    /// side as `domid` (relative paths resolve under
    /// `/local/domain/<domid>`).
    pub fn new(stream: UnixStream, domid: DomId) -> io::Result<WireConn> {
        let reader = stream.try_clone()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_req: 1,
                ..State::default()
            }),
            cond: Condvar::new(),
            writer: Mutex::new(stream),
        });
        let thread = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("xs-client{domid}"))
                .spawn(move || read_loop(&shared, reader))?
        };
        Ok(WireConn {
            shared,
            domid,
            reader: Some(thread),
        })
    }

    /// True once the stream broke or the server closed it.
    pub fn is_closed(&self) -> bool {
        self.shared.state().closed
    }

    /// Sends a request and waits for its reply; `XS_ERROR` replies become
    /// the error they name (`EINVAL` for an unknown name), a broken stream
    /// or a reply of another type `EIO`.
    pub fn request(&self, ty: u32, tx: Option<TxId>, payload: Vec<u8>) -> Result<Vec<u8>, XsError> {
        if payload.len() > XENSTORE_PAYLOAD_MAX {
            return Err(XsError::TooBig);
        }
        let req_id = {
            let mut st = self.shared.state();
            if st.closed {
                return Err(XsError::Io);
            }
            let mut id = st.next_req;
            while st.pending.contains_key(&id) {
                id = id.wrapping_add(1);
            }
            st.next_req = id.wrapping_add(1);
            st.pending.insert(id, None);
            id
        };
        let msg = Message::new(ty, req_id, tx.map_or(0, TxId::get), payload);
        let sent = msg.encode().and_then(|bytes| {
            let mut w = self
                .shared
                .writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            w.write_all(&bytes).map_err(|_| XsError::Io)
        });
        let mut st = self.shared.state();
        if let Err(e) = sent {
            st.pending.remove(&req_id);
            return Err(e);
        }
        let reply = loop {
            if let Some(Some(_)) = st.pending.get(&req_id) {
                break st.pending.remove(&req_id).flatten();
            }
            if st.closed {
                st.pending.remove(&req_id);
                return Err(XsError::Io);
            }
            st = self
                .shared
                .cond
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        };
        let Some(reply) = reply else {
            return Err(XsError::Io);
        };
        match reply.ty {
            XS_ERROR => Err(XsError::from_errno_name(&reply.payload).unwrap_or(XsError::Invalid)),
            t if t == ty => Ok(reply.payload),
            _ => Err(XsError::Io),
        }
    }

    fn request_ok(&self, ty: u32, tx: Option<TxId>, payload: Vec<u8>) -> Result<(), XsError> {
        self.request(ty, tx, payload).map(drop)
    }

    /// `XS_READ`.
    pub fn read_in(&self, tx: Option<TxId>, path: &str) -> Result<Vec<u8>, XsError> {
        self.request(XS_READ, tx, join_strings(&[path]))
    }

    /// `XS_WRITE`.
    pub fn write_in(&self, tx: Option<TxId>, path: &str, value: &[u8]) -> Result<(), XsError> {
        let mut payload = join_strings(&[path]);
        payload.extend_from_slice(value);
        self.request_ok(XS_WRITE, tx, payload)
    }

    /// `XS_MKDIR`.
    pub fn mkdir_in(&self, tx: Option<TxId>, path: &str) -> Result<(), XsError> {
        self.request_ok(XS_MKDIR, tx, join_strings(&[path]))
    }

    /// `XS_RM`.
    pub fn rm_in(&self, tx: Option<TxId>, path: &str) -> Result<(), XsError> {
        self.request_ok(XS_RM, tx, join_strings(&[path]))
    }

    /// `XS_DIRECTORY`.
    pub fn directory_in(&self, tx: Option<TxId>, path: &str) -> Result<Vec<String>, XsError> {
        let reply = self.request(XS_DIRECTORY, tx, join_strings(&[path]))?;
        split_strings(&reply)?
            .into_iter()
            .map(|s| utf8(s).map(str::to_owned))
            .collect()
    }

    /// `XS_GET_PERMS`.
    pub fn get_perms_in(&self, tx: Option<TxId>, path: &str) -> Result<Perms, XsError> {
        let reply = self.request(XS_GET_PERMS, tx, join_strings(&[path]))?;
        let strings = split_strings(&reply)?
            .into_iter()
            .map(utf8)
            .collect::<Result<Vec<_>, _>>()?;
        Perms::parse(&strings)
    }

    /// `XS_SET_PERMS`.
    pub fn set_perms_in(&self, tx: Option<TxId>, path: &str, perms: &Perms) -> Result<(), XsError> {
        let mut strings = vec![path.to_owned()];
        strings.extend(perms.to_strings());
        self.request_ok(XS_SET_PERMS, tx, join_strings(&strings))
    }

    /// `XS_GET_PERMS` outside a transaction.
    pub fn get_perms(&self, path: &str) -> Result<Perms, XsError> {
        self.get_perms_in(None, path)
    }

    /// `XS_SET_PERMS` outside a transaction.
    pub fn set_perms(&self, path: &str, perms: &Perms) -> Result<(), XsError> {
        self.set_perms_in(None, path, perms)
    }

    /// `XS_WATCH` (the server fires it once at once).
    pub fn watch(&self, path: &str, token: &str) -> Result<(), XsError> {
        self.request_ok(XS_WATCH, None, join_strings(&[path, token]))
    }

    /// `XS_UNWATCH`; also drops this watch's events still queued here.
    pub fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError> {
        self.request_ok(XS_UNWATCH, None, join_strings(&[path, token]))?;
        // A queued event does not say which watch it came from: drop those
        // with this token at or below the path.
        let below = |p: &str| {
            p == path
                || p.strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('/') || path.ends_with('/'))
        };
        let mut st = self.shared.state();
        st.events.retain(|e| !(e.token == token && below(&e.path)));
        Ok(())
    }

    /// `XS_RESET_WATCHES`: drops every watch and transaction of this
    /// connection on the server, and the events queued here.
    pub fn reset_watches(&self) -> Result<(), XsError> {
        self.request_ok(XS_RESET_WATCHES, None, Vec::new())?;
        self.shared.state().events.clear();
        Ok(())
    }

    /// `XS_TRANSACTION_START`.
    pub fn transaction_start(&self) -> Result<TxId, XsError> {
        let reply = self.request(XS_TRANSACTION_START, None, vec![0])?;
        match split_strings(&reply)?.as_slice() {
            [id] => utf8(id)?
                .parse::<u32>()
                .ok()
                .and_then(TxId::from_raw)
                .ok_or(XsError::Invalid),
            _ => Err(XsError::Invalid),
        }
    }

    /// `XS_TRANSACTION_END` (`EAGAIN` on conflict).
    pub fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), XsError> {
        let arg: &[u8] = if commit { b"T\0" } else { b"F\0" };
        self.request_ok(XS_TRANSACTION_END, Some(tx), arg.to_vec())
    }

    /// `XS_GET_DOMAIN_PATH`.
    pub fn get_domain_path(&self, domid: DomId) -> Result<String, XsError> {
        let reply = self.request(XS_GET_DOMAIN_PATH, None, join_strings(&[domid.to_string()]))?;
        match split_strings(&reply)?.as_slice() {
            [p] => utf8(p).map(str::to_owned),
            _ => Err(XsError::Invalid),
        }
    }

    /// `XS_IS_DOMAIN_INTRODUCED`.
    pub fn is_domain_introduced(&self, domid: DomId) -> Result<bool, XsError> {
        let reply = self.request(
            XS_IS_DOMAIN_INTRODUCED,
            None,
            join_strings(&[domid.to_string()]),
        )?;
        match reply.as_slice() {
            b"T\0" | b"T" => Ok(true),
            b"F\0" | b"F" => Ok(false),
            _ => Err(XsError::Invalid),
        }
    }

    fn next_matching(
        &self,
        timeout: Duration,
        want: impl Fn(&WatchEvent) -> bool,
    ) -> Option<WatchEvent> {
        let deadline = Instant::now().checked_add(timeout);
        let mut st = self.shared.state();
        loop {
            if let Some(i) = st.events.iter().position(&want) {
                return st.events.remove(i);
            }
            if st.closed {
                return None;
            }
            let left = match deadline {
                Some(d) => d.checked_duration_since(Instant::now())?,
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                return None;
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits up to `timeout` for the next watch event; `None` on timeout or
    /// once the connection is closed and nothing is queued.
    pub fn next_event(&self, timeout: Duration) -> Option<WatchEvent> {
        self.next_matching(timeout, |_| true)
    }

    /// Like [`WireConn::next_event`], but only events with `token`; the
    /// others stay queued.
    pub fn next_event_for(&self, token: &str, timeout: Duration) -> Option<WatchEvent> {
        self.next_matching(timeout, |e| e.token == token)
    }

    /// The next queued watch event, without waiting.
    pub fn try_next_event(&self) -> Option<WatchEvent> {
        self.shared.state().events.pop_front()
    }

    /// Watch events queued here now.
    pub fn pending_events(&self) -> usize {
        self.shared.state().events.len()
    }
}

fn read_loop(shared: &Shared, stream: UnixStream) {
    let mut reader = BufReader::with_capacity(HEADER_SIZE + XENSTORE_PAYLOAD_MAX, stream);
    // Any framing error ends the connection.
    while let Ok(Some(msg)) = read_message(&mut reader) {
        let mut st = shared.state();
        if msg.ty == XS_WATCH_EVENT {
            let Ok(strings) = split_strings(&msg.payload) else {
                continue;
            };
            // Xen 4.17+ servers may append more fields; path and token
            // come first.
            let (Some(path), Some(token)) = (strings.first(), strings.get(1)) else {
                continue;
            };
            let (Ok(path), Ok(token)) = (utf8(path), utf8(token)) else {
                continue;
            };
            let ev = WatchEvent {
                path: path.to_owned(),
                token: token.to_owned(),
            };
            if !st.events.contains(&ev) && st.events.len() < MAX_QUEUED_EVENTS {
                st.events.push_back(ev);
            }
        } else if let Some(slot @ None) = st.pending.get_mut(&msg.req_id) {
            *slot = Some(msg);
        } else {
            // A reply nobody waits for: ignored.
            continue;
        }
        drop(st);
        shared.cond.notify_all();
    }
    shared.close();
}

impl XsClient for WireConn {
    fn domid(&self) -> DomId {
        self.domid
    }
    fn read_in(&self, tx: Option<TxId>, path: &str) -> Result<Vec<u8>, XsError> {
        WireConn::read_in(self, tx, path)
    }
    fn write_in(&self, tx: Option<TxId>, path: &str, value: &[u8]) -> Result<(), XsError> {
        WireConn::write_in(self, tx, path, value)
    }
    fn mkdir_in(&self, tx: Option<TxId>, path: &str) -> Result<(), XsError> {
        WireConn::mkdir_in(self, tx, path)
    }
    fn rm_in(&self, tx: Option<TxId>, path: &str) -> Result<(), XsError> {
        WireConn::rm_in(self, tx, path)
    }
    fn directory_in(&self, tx: Option<TxId>, path: &str) -> Result<Vec<String>, XsError> {
        WireConn::directory_in(self, tx, path)
    }
    fn get_perms_in(&self, tx: Option<TxId>, path: &str) -> Result<Perms, XsError> {
        WireConn::get_perms_in(self, tx, path)
    }
    fn set_perms_in(&self, tx: Option<TxId>, path: &str, perms: &Perms) -> Result<(), XsError> {
        WireConn::set_perms_in(self, tx, path, perms)
    }
    fn watch(&self, path: &str, token: &str) -> Result<(), XsError> {
        WireConn::watch(self, path, token)
    }
    fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError> {
        WireConn::unwatch(self, path, token)
    }
    fn transaction_start(&self) -> Result<TxId, XsError> {
        WireConn::transaction_start(self)
    }
    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), XsError> {
        WireConn::transaction_end(self, tx, commit)
    }
    fn next_event(&self, timeout: Duration) -> Option<WatchEvent> {
        WireConn::next_event(self, timeout)
    }
    fn next_event_for(&self, token: &str, timeout: Duration) -> Option<WatchEvent> {
        WireConn::next_event_for(self, token, timeout)
    }
}
