//! [`Store`]: the in-memory XenStore of the in-tree hypervisor, and
//! [`Conn`]: one domain's connection to it (spec/xenbus.md §6,
//! `docs/misc/xenstore.txt`).
//!
//! # Semantics (as xenstored)
//! * **Paths**: see [`crate::path`]. Relative paths resolve below
//!   `/local/domain/<caller>/`.
//! * **Permissions**: see [`crate::Perms`]. Reading needs read permission on
//!   the node itself (there is no traversal right); writing an existing
//!   node needs write permission on it; creating a node needs write
//!   permission on its nearest existing ancestor, and the new nodes inherit
//!   that ancestor's permissions with an unprivileged creator as owner (dom0
//!   keeps the inherited owner). A missing node is reported as `ENOENT`
//!   only if the caller has the right asked for on the nearest existing
//!   ancestor, else `EACCES`. Only the owner or dom0 may set permissions,
//!   and only dom0 may change the owner (`EPERM`).
//! * **Watches** fire once when registered (event path = the watched path
//!   as given), then for every write, mkdir, rm and set_perms at or below
//!   the watched path; a recursive removal also reports every removed node
//!   to the watches on exactly that node (xenstored's `delnode_sub`). An
//!   event is delivered only to domains that may read the changed node
//!   (before or after a permission change; for a removal, as it was), so a
//!   backend watching a readable frontend key learns of its removal even
//!   when the toolstack removes an ancestor the backend cannot read. Watches given as relative paths get relative event paths.
//!   `@introduceDomain` / `@releaseDomain` fire on
//!   [`Store::introduce_domain`] / [`Store::release_domain`] for dom0 and
//!   for domains dom0 granted read on those special nodes.
//!   Queues are bounded and coalescing: see [`Quota`] and the counters.
//! * **Transactions** are optimistic, with **per-node generations**. Every
//!   node carries a generation, stamped from one store-wide counter
//!   whenever the node changes (value, children or permissions). A
//!   transaction remembers the counter at its start and sees the live store
//!   through a private overlay of the nodes it wrote; at its first access
//!   to a node it records the node's generation (or that it was absent).
//!   Commit fails with `EAGAIN` if a node it read or wrote had changed
//!   after the start (generation above the start value at first access) or
//!   changed, appeared or vanished after that first access (the scheme of
//!   C xenstored since Xen 4.9). Otherwise the overlay is applied
//!   atomically and the transaction's watch events are fired, so every
//!   committed transaction behaves as if it ran alone at its start. A
//!   missing node is accessed through its ancestors (for the
//!   `ENOENT`/`EACCES` decision), so a node created after the start under
//!   a directory the transaction looked at also conflicts. Creating or
//!   removing a child changes the parent, so two transactions that add
//!   children to the same directory conflict. Events of a transaction are
//!   delivered only at commit; an aborted or failed one fires nothing.
//! * **Quotas** ([`Quota`], SECURITY.md C1/C2): pending events per
//!   connection and per watch (coalescing), watches and open transactions
//!   per connection, nodes per domain, value size, permission entries per
//!   node, nodes touched per transaction. Dom0 is exempt from the node
//!   quotas (node count, value size, permission entries, transaction nodes)
//!   only.
//!
//! # Locking
//! One mutex protects the tree, the connections' watches and transactions;
//! each connection's event queue has its own mutex and condition variable,
//! taken after the store mutex when events are fired, and alone by readers
//! ([`Conn::next_event`]), so a blocked reader never holds up the store.

mod events;
mod tree;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use pvio_abi::DomId;
use pvio_abi::xenbus::XENSTORE_PAYLOAD_MAX;

use crate::path::{
    INTRODUCE_DOMAIN, RELEASE_DOMAIN, WatchPath, canonicalize, canonicalize_watch, domain_path,
    is_at_or_below,
};
use crate::perms::{DOM0, Perm, Perms};
use crate::{QuotaKind, XsError};
use events::EventQueue;
use tree::{Change, Tree, TxState, View};

/// Limits that keep one domain from exhausting the store or another domain
/// (SECURITY.md C1, C2; XSA-326, XSA-349). Defaults follow xenstored where
/// it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Nodes a domain may own (xenstored `quota_nb_entry_per_domain`:
    /// 1000). Dom0 is exempt. Error: `ENOSPC`.
    pub max_nodes_per_domain: usize,
    /// Largest value an unprivileged domain may write (xenstored
    /// `quota_max_entry_size`: 2048). Values above
    /// `XENSTORE_PAYLOAD_MAX` (4096) are refused for everyone with
    /// `E2BIG`. Error: `ENOSPC`.
    pub max_value_size: usize,
    /// Watches per connection (xenstored `quota_nb_watch_per_domain`: 128).
    /// Error: `E2BIG`.
    pub max_watches: usize,
    /// Open transactions per connection (xenstored
    /// `quota_max_transaction`: 10). Error: `ENOSPC`.
    pub max_transactions: usize,
    /// Nodes one transaction may touch (xenstored `quota_trans_nodes`:
    /// 1024); checked before each operation. Dom0 is exempt. Error:
    /// `ENOSPC`.
    pub max_transaction_nodes: usize,
    /// Permission entries an unprivileged domain may set on a node
    /// (xenstored `quota_nb_perms_per_node`: 5). Error: `ENOSPC`.
    pub max_perms_per_node: usize,
    /// Queued watch events per connection (1024); beyond it events turn
    /// into one rescan marker per watch (see [`Conn::next_event`]).
    pub max_pending_events: usize,
    /// Queued watch events per watch (256), likewise.
    pub max_pending_events_per_watch: usize,
}

impl Quota {
    /// The defaults (see each field).
    pub const DEFAULT: Quota = Quota {
        max_nodes_per_domain: 1000,
        max_value_size: 2048,
        max_watches: 128,
        max_transactions: 10,
        max_transaction_nodes: 1024,
        max_perms_per_node: 5,
        max_pending_events: 1024,
        max_pending_events_per_watch: 256,
    };
}

impl Default for Quota {
    fn default() -> Quota {
        Quota::DEFAULT
    }
}

/// A transaction id, local to the connection that started it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(u32);

impl TxId {
    /// The wire value (never 0, which means "no transaction").
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Wraps a wire value; `None` for 0.
    pub const fn from_raw(raw: u32) -> Option<TxId> {
        if raw == 0 { None } else { Some(TxId(raw)) }
    }
}

/// Formats the decimal wire value.
impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One watch event (`XS_WATCH_EVENT`): something changed at or below
/// `path`. It carries no value: always re-read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WatchEvent {
    /// The changed path (relative if the watch was registered relative).
    pub path: String,
    /// The token given at registration.
    pub token: String,
}

/// Store-wide counters (monotonic except `nodes` and `connections`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Requests handled (all kinds).
    pub ops: u64,
    /// Read requests (read, directory, get_perms).
    pub reads: u64,
    /// Modifying requests (write, mkdir, rm, set_perms).
    pub writes: u64,
    /// Transactions started.
    pub transactions_started: u64,
    /// Transactions committed.
    pub transactions_committed: u64,
    /// Transactions aborted by their owner or by a failed commit check.
    pub transactions_aborted: u64,
    /// Commits refused with `EAGAIN`.
    pub transaction_conflicts: u64,
    /// Watch events queued.
    pub events_queued: u64,
    /// Watch events coalesced with a pending one.
    pub events_coalesced: u64,
    /// Watch events dropped at a cap (replaced by a rescan marker).
    pub events_dropped: u64,
    /// Watch events delivered to readers.
    pub events_delivered: u64,
    /// Nodes in the store now.
    pub nodes: usize,
    /// Open connections now.
    pub connections: usize,
}

/// Counters of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnStats {
    /// Requests made on this connection.
    pub ops: u64,
    /// Watches registered now.
    pub watches: usize,
    /// Transactions open now.
    pub transactions: usize,
    /// Events pending now (queued events plus rescan markers); at most
    /// `max_pending_events` plus one per watch.
    pub pending_events: usize,
    /// Queued events now (at most `max_pending_events`).
    pub queued_events: usize,
    /// Events queued so far.
    pub events_queued: u64,
    /// Events coalesced so far.
    pub events_coalesced: u64,
    /// Events dropped at a cap so far (each covered by a rescan marker).
    pub events_dropped: u64,
    /// Events delivered so far.
    pub events_delivered: u64,
}

/// Store-wide atomic counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    ops: AtomicU64,
    reads: AtomicU64,
    writes: AtomicU64,
    tx_started: AtomicU64,
    tx_committed: AtomicU64,
    tx_aborted: AtomicU64,
    tx_conflicts: AtomicU64,
    pub(crate) events_queued: AtomicU64,
    pub(crate) events_coalesced: AtomicU64,
    pub(crate) events_dropped: AtomicU64,
    pub(crate) events_delivered: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// A registered watch.
#[derive(Debug)]
struct Watch {
    id: u64,
    path: WatchPath,
    token: String,
    /// The rescan event: the path as given, and the token.
    marker: WatchEvent,
}

/// Store-side state of one connection.
#[derive(Debug)]
struct ConnState {
    domid: DomId,
    /// `/local/domain/<domid>/`, stripped from events of relative watches.
    home: String,
    queue: Arc<EventQueue>,
    watches: Vec<Watch>,
    txs: BTreeMap<u32, TxState>,
    next_tx: u32,
    closed: bool,
    ops: u64,
}

impl ConnState {
    fn close(&mut self) {
        self.closed = true;
        self.watches.clear();
        self.txs.clear();
        self.queue.close();
    }
}

#[derive(Debug)]
struct Inner {
    tree: Tree,
    conns: BTreeMap<u64, ConnState>,
    next_conn: u64,
    next_watch: u64,
    introduced: BTreeSet<DomId>,
    /// Permissions of the special watch nodes (`@introduceDomain`,
    /// `@releaseDomain`); dom0-only until dom0 grants more.
    special: BTreeMap<&'static str, Perms>,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    quota: Quota,
    counters: Counters,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock; recover from poisoning
        // anyway rather than propagate a panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Delivers `change` to every matching watch of every open connection.
fn fire(conns: &BTreeMap<u64, ConnState>, change: &Change, shared: &Shared) {
    for cs in conns.values() {
        if cs.closed || cs.watches.is_empty() {
            continue;
        }
        let visible = cs.domid == DOM0
            || change.perms.can_read(cs.domid)
            || change
                .old_perms
                .as_ref()
                .is_some_and(|p| p.can_read(cs.domid));
        if !visible {
            continue;
        }
        for w in &cs.watches {
            let epath = match &w.path {
                WatchPath::Special(s) => {
                    (change.special && change.path == *s).then_some(s.as_str())
                }
                WatchPath::Node { .. } if change.special => None,
                WatchPath::Node { abs, relative } => {
                    let hit = if change.exact {
                        (change.path == *abs).then_some(change.path.as_str())
                    } else {
                        is_at_or_below(&change.path, abs).then_some(change.path.as_str())
                    };
                    match hit {
                        Some(p) if *relative => Some(p.strip_prefix(cs.home.as_str()).unwrap_or(p)),
                        other => other,
                    }
                }
            };
            if let Some(epath) = epath {
                cs.queue.push(
                    w.id,
                    epath,
                    &w.token,
                    &w.marker,
                    &shared.quota,
                    &shared.counters,
                );
            }
        }
    }
}

/// The in-memory XenStore: a tree of nodes with permissions, watches,
/// transactions and quotas, shared by every domain of the in-tree
/// hypervisor. Cheap to clone (an `Arc` inside); all clones are the same
/// store. See the [module documentation](crate::store) for the semantics.
///
/// ```
/// use std::time::Duration;
/// use pvio_abi::DomId;
/// use pvio_xenbus::{Perm, Perms, Store};
///
/// let store = Store::new();
/// store.introduce_domain(DomId(1))?;
/// let dom0 = store.connect(DomId(0));
/// let guest = store.connect(DomId(1));
///
/// guest.write("data/greeting", b"hello")?; // relative to /local/domain/1
/// assert_eq!(dom0.read("/local/domain/1/data/greeting")?, b"hello");
///
/// dom0.write("/tool/secret", b"42")?;
/// assert!(guest.read("/tool/secret").is_err()); // EACCES
///
/// guest.watch("data", "tok")?;
/// assert_eq!(guest.next_event(Duration::from_secs(5)).unwrap().path, "data"); // fires once at once
/// # Ok::<(), pvio_xenbus::XsError>(())
/// ```
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = self.stats();
        f.debug_struct("Store")
            .field("nodes", &stats.nodes)
            .field("connections", &stats.connections)
            .finish_non_exhaustive()
    }
}

impl Default for Store {
    fn default() -> Store {
        Store::new()
    }
}

impl Store {
    /// An empty store (`/`, `/local`, `/local/domain`, owned by dom0) with
    /// the default [`Quota`].
    pub fn new() -> Store {
        Store::with_quota(Quota::DEFAULT)
    }

    /// An empty store with the given limits.
    pub fn with_quota(quota: Quota) -> Store {
        let special = [INTRODUCE_DOMAIN, RELEASE_DOMAIN]
            .into_iter()
            .map(|p| (p, Perms::new(DOM0, Perm::None)))
            .collect();
        let inner = Inner {
            tree: Tree::new(),
            conns: BTreeMap::new(),
            next_conn: 1,
            next_watch: 1,
            introduced: BTreeSet::new(),
            special,
        };
        Store {
            shared: Arc::new(Shared {
                inner: Mutex::new(inner),
                quota,
                counters: Counters::default(),
            }),
        }
    }

    /// The limits of this store.
    pub fn quota(&self) -> &Quota {
        &self.shared.quota
    }

    /// Opens a connection for `domid`, with its own watches, event queue and
    /// transactions. The hypervisor gives each domain one (or one per
    /// driver); per-connection quotas apply to each. Domain 0 is
    /// privileged. Dropping the [`Conn`] removes its watches and
    /// transactions.
    pub fn connect(&self, domid: DomId) -> Conn {
        let queue = Arc::new(EventQueue::default());
        let mut inner = self.shared.lock();
        let id = inner.next_conn;
        inner.next_conn += 1;
        inner.conns.insert(
            id,
            ConnState {
                domid,
                home: format!("{}/", domain_path(domid)),
                queue: queue.clone(),
                watches: Vec::new(),
                txs: BTreeMap::new(),
                next_tx: 1,
                closed: false,
                ops: 0,
            },
        );
        Conn {
            shared: self.shared.clone(),
            id,
            domid,
            queue,
        }
    }

    /// `XS_INTRODUCE`: the hypervisor announces a new domain. Creates
    /// `/local/domain/<domid>` owned by it (no access for others; dom0 has
    /// every right anyway) and fires `@introduceDomain`. If the toolstack
    /// already created that directory, it is left as it is.
    ///
    /// `EINVAL` for dom0 and reserved ids, `EEXIST` if already introduced.
    pub fn introduce_domain(&self, domid: DomId) -> Result<(), XsError> {
        if domid == DOM0 || domid.is_reserved() {
            return Err(XsError::Invalid);
        }
        let mut guard = self.shared.lock();
        let inner = &mut *guard;
        if !inner.introduced.insert(domid) {
            return Err(XsError::Exists);
        }
        let path = domain_path(domid);
        let quota = &self.shared.quota;
        let mut view = View {
            tree: &mut inner.tree,
            tx: None,
        };
        let made = view.mkdir(DOM0, quota, &path)?;
        let owned = match made {
            Some(_) => Some(view.set_perms(DOM0, quota, &path, &Perms::new(domid, Perm::None))?),
            None => None,
        };
        for change in made.iter().chain(owned.iter()) {
            fire(&inner.conns, change, &self.shared);
        }
        self.fire_special(inner, INTRODUCE_DOMAIN);
        Ok(())
    }

    /// `XS_RELEASE`: the domain is gone. Closes its connections (their
    /// watches, transactions and pending events are dropped; later requests
    /// fail with `EIO`), removes `/local/domain/<domid>` (firing watches),
    /// drops the domain from every permission list and gives the nodes it
    /// owned elsewhere to dom0 (XSA-322, so a new domain reusing the id
    /// inherits nothing), and fires `@releaseDomain`.
    ///
    /// `ENOENT` if the domain was not introduced.
    pub fn release_domain(&self, domid: DomId) -> Result<(), XsError> {
        let mut guard = self.shared.lock();
        let inner = &mut *guard;
        if !inner.introduced.remove(&domid) {
            return Err(XsError::NotFound);
        }
        for cs in inner.conns.values_mut().filter(|cs| cs.domid == domid) {
            cs.close();
        }
        let path = domain_path(domid);
        let removed = View {
            tree: &mut inner.tree,
            tx: None,
        }
        .rm(DOM0, &path);
        for change in removed.iter().flatten() {
            fire(&inner.conns, change, &self.shared);
        }
        inner.tree.forget_domain(domid);
        for perms in inner.special.values_mut() {
            perms.forget(domid);
        }
        self.fire_special(inner, RELEASE_DOMAIN);
        Ok(())
    }

    fn fire_special(&self, inner: &Inner, name: &'static str) {
        let perms = inner
            .special
            .get(name)
            .cloned()
            .unwrap_or_else(|| Perms::new(DOM0, Perm::None));
        let change = Change {
            path: name.to_owned(),
            perms,
            old_perms: None,
            exact: false,
            special: true,
        };
        fire(&inner.conns, &change, &self.shared);
    }

    /// True between [`Store::introduce_domain`] and
    /// [`Store::release_domain`] (`XS_IS_DOMAIN_INTRODUCED`; dom0 always).
    pub fn is_introduced(&self, domid: DomId) -> bool {
        domid == DOM0 || self.shared.lock().introduced.contains(&domid)
    }

    /// Nodes owned by `domid` (what its node quota counts).
    pub fn nodes_owned(&self, domid: DomId) -> usize {
        self.shared.lock().tree.owned(domid)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> StoreStats {
        let (nodes, connections) = {
            let inner = self.shared.lock();
            (inner.tree.len(), inner.conns.len())
        };
        let c = &self.shared.counters;
        StoreStats {
            ops: Counters::get(&c.ops),
            reads: Counters::get(&c.reads),
            writes: Counters::get(&c.writes),
            transactions_started: Counters::get(&c.tx_started),
            transactions_committed: Counters::get(&c.tx_committed),
            transactions_aborted: Counters::get(&c.tx_aborted),
            transaction_conflicts: Counters::get(&c.tx_conflicts),
            events_queued: Counters::get(&c.events_queued),
            events_coalesced: Counters::get(&c.events_coalesced),
            events_dropped: Counters::get(&c.events_dropped),
            events_delivered: Counters::get(&c.events_delivered),
            nodes,
            connections,
        }
    }
}

/// The kind of a request, for the counters.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Read,
    Write,
}

/// One domain's connection to the [`Store`]: what a driver holds.
///
/// All methods take `&self` and the type is `Send + Sync`, so threads of one
/// driver may share it (e.g. in an `Arc`). Events are queued per connection
/// and read with [`Conn::next_event`]; helpers that wait for one watch use
/// [`Conn::next_event_for`] with a token of their own and leave the other
/// events queued.
pub struct Conn {
    shared: Arc<Shared>,
    id: u64,
    domid: DomId,
    queue: Arc<EventQueue>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("domid", &self.domid)
            .finish_non_exhaustive()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        if let Some(mut cs) = inner.conns.remove(&self.id) {
            cs.close();
        }
    }
}

impl Conn {
    /// The domain this connection speaks for.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// `XS_GET_DOMAIN_PATH`: `/local/domain/<domid>`.
    pub fn get_domain_path(&self, domid: DomId) -> String {
        domain_path(domid)
    }

    /// Ends this connection's watch events: waiting readers wake, queued
    /// and later events are dropped (for a server whose client is gone).
    pub fn close_events(&self) {
        self.queue.close();
    }

    /// True once the connection was closed by [`Store::release_domain`]
    /// (every request then fails with `EIO`) or [`Conn::close_events`].
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Runs one node operation on the live tree or inside `tx`; fires (or,
    /// in a transaction, records) the change it reports.
    fn run<T, C: IntoIterator<Item = Change>>(
        &self,
        kind: OpKind,
        tx: Option<TxId>,
        op: impl FnOnce(&mut View<'_>, DomId, &Quota) -> Result<(T, C), XsError>,
    ) -> Result<T, XsError> {
        let shared = &*self.shared;
        Counters::bump(&shared.counters.ops);
        Counters::bump(match kind {
            OpKind::Read => &shared.counters.reads,
            OpKind::Write => &shared.counters.writes,
        });
        let mut guard = shared.lock();
        let inner = &mut *guard;
        let cs = match inner.conns.get_mut(&self.id) {
            Some(cs) if !cs.closed => cs,
            _ => return Err(XsError::Io),
        };
        cs.ops += 1;
        let quota = &shared.quota;
        let Some(tx) = tx else {
            let mut view = View {
                tree: &mut inner.tree,
                tx: None,
            };
            let (out, changes) = op(&mut view, self.domid, quota)?;
            for change in changes {
                fire(&inner.conns, &change, shared);
            }
            return Ok(out);
        };
        let state = cs.txs.get_mut(&tx.0).ok_or(XsError::NotFound)?;
        if self.domid != DOM0 && state.accessed.len() >= quota.max_transaction_nodes {
            return Err(XsError::Quota(QuotaKind::TransactionNodes));
        }
        let mut view = View {
            tree: &mut inner.tree,
            tx: Some(&mut *state),
        };
        let (out, changes) = op(&mut view, self.domid, quota)?;
        state.changes.extend(changes);
        Ok(out)
    }

    /// `XS_READ` of `path` (absolute, or relative to the domain's home).
    pub fn read(&self, path: &str) -> Result<Vec<u8>, XsError> {
        self.read_in(None, path)
    }

    /// `XS_READ`, optionally inside a transaction.
    pub fn read_in(&self, tx: Option<TxId>, path: &str) -> Result<Vec<u8>, XsError> {
        let path = canonicalize(self.domid, path)?;
        self.run(OpKind::Read, tx, |v, me, _| Ok((v.read(me, &path)?, None)))
    }

    /// `XS_WRITE`: sets the value, creating the node and any missing
    /// parents (with empty values). Always fires watches, even if the value
    /// is unchanged.
    pub fn write(&self, path: &str, value: &[u8]) -> Result<(), XsError> {
        self.write_in(None, path, value)
    }

    /// `XS_WRITE`, optionally inside a transaction.
    pub fn write_in(&self, tx: Option<TxId>, path: &str, value: &[u8]) -> Result<(), XsError> {
        let path = canonicalize(self.domid, path)?;
        self.run(OpKind::Write, tx, |v, me, q| {
            Ok(((), Some(v.write(me, q, &path, value)?)))
        })
    }

    /// `XS_MKDIR`: makes sure `path` exists (creating parents); an existing
    /// node is left alone and fires nothing.
    pub fn mkdir(&self, path: &str) -> Result<(), XsError> {
        self.mkdir_in(None, path)
    }

    /// `XS_MKDIR`, optionally inside a transaction.
    pub fn mkdir_in(&self, tx: Option<TxId>, path: &str) -> Result<(), XsError> {
        let path = canonicalize(self.domid, path)?;
        self.run(OpKind::Write, tx, |v, me, q| {
            Ok(((), v.mkdir(me, q, &path)?))
        })
    }

    /// `XS_RM`: removes `path` and everything below it. Not an error if
    /// `path` does not exist but its parent does; `EINVAL` for `/`.
    pub fn rm(&self, path: &str) -> Result<(), XsError> {
        self.rm_in(None, path)
    }

    /// `XS_RM`, optionally inside a transaction.
    pub fn rm_in(&self, tx: Option<TxId>, path: &str) -> Result<(), XsError> {
        let path = canonicalize(self.domid, path)?;
        self.run(OpKind::Write, tx, |v, me, _| Ok(((), v.rm(me, &path)?)))
    }

    /// `XS_DIRECTORY`: the names of the children of `path`, sorted.
    pub fn directory(&self, path: &str) -> Result<Vec<String>, XsError> {
        self.directory_in(None, path)
    }

    /// `XS_DIRECTORY`, optionally inside a transaction.
    pub fn directory_in(&self, tx: Option<TxId>, path: &str) -> Result<Vec<String>, XsError> {
        let path = canonicalize(self.domid, path)?;
        self.run(OpKind::Read, tx, |v, me, _| {
            Ok((v.directory(me, &path)?, None))
        })
    }

    /// `XS_GET_PERMS` of a node, or of a special node (`@releaseDomain`,
    /// `@introduceDomain`; transactions do not apply to those).
    pub fn get_perms(&self, path: &str) -> Result<Perms, XsError> {
        self.get_perms_in(None, path)
    }

    /// `XS_GET_PERMS`, optionally inside a transaction.
    pub fn get_perms_in(&self, tx: Option<TxId>, path: &str) -> Result<Perms, XsError> {
        if path.starts_with('@') {
            return self.special_perms(path, None);
        }
        let path = canonicalize(self.domid, path)?;
        self.run(OpKind::Read, tx, |v, me, _| {
            Ok((v.get_perms(me, &path)?, None))
        })
    }

    /// `XS_SET_PERMS`: replaces the permission list of a node (owner or dom0
    /// only; only dom0 may change the owner), or of a special node (dom0
    /// only).
    pub fn set_perms(&self, path: &str, perms: &Perms) -> Result<(), XsError> {
        self.set_perms_in(None, path, perms)
    }

    /// `XS_SET_PERMS`, optionally inside a transaction.
    pub fn set_perms_in(&self, tx: Option<TxId>, path: &str, perms: &Perms) -> Result<(), XsError> {
        if path.starts_with('@') {
            return self.special_perms(path, Some(perms)).map(drop);
        }
        let path = canonicalize(self.domid, path)?;
        self.run(OpKind::Write, tx, |v, me, q| {
            Ok(((), Some(v.set_perms(me, q, &path, perms)?)))
        })
    }

    /// Gets (and with `set`, replaces) the permissions of a special node.
    fn special_perms(&self, path: &str, set: Option<&Perms>) -> Result<Perms, XsError> {
        let kind = if set.is_some() {
            OpKind::Write
        } else {
            OpKind::Read
        };
        let name = [INTRODUCE_DOMAIN, RELEASE_DOMAIN]
            .into_iter()
            .find(|s| *s == path)
            .ok_or(XsError::Invalid)?;
        let domid = self.domid;
        let mut guard = self.shared.lock();
        let inner = &mut *guard;
        match inner.conns.get_mut(&self.id) {
            Some(cs) if !cs.closed => cs.ops += 1,
            _ => return Err(XsError::Io),
        }
        Counters::bump(&self.shared.counters.ops);
        Counters::bump(match kind {
            OpKind::Write => &self.shared.counters.writes,
            OpKind::Read => &self.shared.counters.reads,
        });
        let entry = inner
            .special
            .entry(name)
            .or_insert_with(|| Perms::new(DOM0, Perm::None));
        match set {
            None if entry.can_read(domid) => Ok(entry.clone()),
            Some(p) if domid == DOM0 => {
                *entry = p.clone();
                Ok(p.clone())
            }
            _ => Err(XsError::Access),
        }
    }

    /// `XS_WATCH`: registers a watch on `path` (a node path, absolute or
    /// relative, or a special `@` path) with `token`. Fires once at once
    /// with the path as given. `EEXIST` for a duplicate (path, token);
    /// `E2BIG` at [`Quota::max_watches`].
    pub fn watch(&self, path: &str, token: &str) -> Result<(), XsError> {
        let wp = canonicalize_watch(self.domid, path)?;
        check_token(path, token)?;
        let shared = &*self.shared;
        Counters::bump(&shared.counters.ops);
        let mut guard = shared.lock();
        let inner = &mut *guard;
        let id = inner.next_watch;
        let cs = match inner.conns.get_mut(&self.id) {
            Some(cs) if !cs.closed => cs,
            _ => return Err(XsError::Io),
        };
        cs.ops += 1;
        if cs
            .watches
            .iter()
            .any(|w| w.path.same_target(&wp) && w.token == token)
        {
            return Err(XsError::Exists);
        }
        if cs.watches.len() >= shared.quota.max_watches {
            return Err(XsError::Quota(QuotaKind::Watches));
        }
        let marker = WatchEvent {
            path: path.to_owned(),
            token: token.to_owned(),
        };
        cs.queue
            .push(id, path, token, &marker, &shared.quota, &shared.counters);
        cs.watches.push(Watch {
            id,
            path: wp,
            token: token.to_owned(),
            marker,
        });
        inner.next_watch += 1;
        Ok(())
    }

    /// `XS_UNWATCH`: removes the watch registered with this (path, token)
    /// and its pending events. `ENOENT` if there is none.
    pub fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError> {
        let wp = canonicalize_watch(self.domid, path)?;
        Counters::bump(&self.shared.counters.ops);
        let mut inner = self.shared.lock();
        let cs = match inner.conns.get_mut(&self.id) {
            Some(cs) if !cs.closed => cs,
            _ => return Err(XsError::Io),
        };
        cs.ops += 1;
        let pos = cs
            .watches
            .iter()
            .position(|w| w.path.same_target(&wp) && w.token == token)
            .ok_or(XsError::NotFound)?;
        let w = cs.watches.remove(pos);
        cs.queue.purge_watch(w.id);
        Ok(())
    }

    /// `XS_RESET_WATCHES`: drops every watch (and pending event) and every
    /// open transaction of this connection.
    pub fn reset_watches(&self) -> Result<(), XsError> {
        Counters::bump(&self.shared.counters.ops);
        let mut inner = self.shared.lock();
        let cs = match inner.conns.get_mut(&self.id) {
            Some(cs) if !cs.closed => cs,
            _ => return Err(XsError::Io),
        };
        cs.ops += 1;
        for w in cs.watches.drain(..) {
            cs.queue.purge_watch(w.id);
        }
        let aborted = cs.txs.len() as u64;
        cs.txs.clear();
        self.shared
            .counters
            .tx_aborted
            .fetch_add(aborted, Ordering::Relaxed);
        Ok(())
    }

    /// `XS_TRANSACTION_START`. `ENOSPC` at [`Quota::max_transactions`].
    pub fn transaction_start(&self) -> Result<TxId, XsError> {
        let shared = &*self.shared;
        Counters::bump(&shared.counters.ops);
        let mut guard = shared.lock();
        let inner = &mut *guard;
        let cs = match inner.conns.get_mut(&self.id) {
            Some(cs) if !cs.closed => cs,
            _ => return Err(XsError::Io),
        };
        cs.ops += 1;
        if cs.txs.len() >= shared.quota.max_transactions {
            return Err(XsError::Quota(QuotaKind::Transactions));
        }
        let mut id = cs.next_tx;
        while id == 0 || cs.txs.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        cs.next_tx = id.wrapping_add(1);
        cs.txs.insert(id, TxState::new(&inner.tree));
        Counters::bump(&shared.counters.tx_started);
        Ok(TxId(id))
    }

    /// `XS_TRANSACTION_END`: commits (`commit = true`) or aborts `tx`.
    ///
    /// A commit fails with `EAGAIN` if any node the transaction read or
    /// wrote changed since (the transaction is then gone: retry it from the
    /// start, see [`crate::with_transaction`]), or with `ENOSPC` if applying
    /// it would exceed the node quota. `ENOENT` for an unknown id.
    pub fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), XsError> {
        let shared = &*self.shared;
        let counters = &shared.counters;
        Counters::bump(&counters.ops);
        let mut guard = shared.lock();
        let inner = &mut *guard;
        let cs = match inner.conns.get_mut(&self.id) {
            Some(cs) if !cs.closed => cs,
            _ => return Err(XsError::Io),
        };
        cs.ops += 1;
        let state = cs.txs.remove(&tx.0).ok_or(XsError::NotFound)?;
        if !commit {
            Counters::bump(&counters.tx_aborted);
            return Ok(());
        }
        if let Err(e) = state.validate(&inner.tree) {
            Counters::bump(&counters.tx_conflicts);
            Counters::bump(&counters.tx_aborted);
            return Err(e);
        }
        if self.domid != DOM0 {
            let over = state.owned_delta.iter().any(|(&owner, &delta)| {
                delta > 0
                    && inner.tree.owned(owner).saturating_add_signed(delta)
                        > shared.quota.max_nodes_per_domain
            });
            if over {
                Counters::bump(&counters.tx_aborted);
                return Err(XsError::Quota(QuotaKind::Nodes));
            }
        }
        let changes = state.apply(&mut inner.tree);
        for change in &changes {
            fire(&inner.conns, change, shared);
        }
        Counters::bump(&counters.tx_committed);
        Ok(())
    }

    /// Waits up to `timeout` for the next watch event. `None` on timeout or
    /// once the connection is closed.
    ///
    /// Events carry no values and may be coalesced or spurious; after an
    /// overflow a watch reports one event for its own path, meaning
    /// "re-read everything below". Always re-read.
    pub fn next_event(&self, timeout: Duration) -> Option<WatchEvent> {
        self.queue
            .next(Some(timeout), |_| true, &self.shared.counters)
    }

    /// The next watch event, if one is pending.
    pub fn try_next_event(&self) -> Option<WatchEvent> {
        self.queue
            .next(Some(Duration::ZERO), |_| true, &self.shared.counters)
    }

    /// Like [`Conn::next_event`], but takes only events with `token` and
    /// leaves the others queued (for helpers that wait on a watch of their
    /// own while the driver has others).
    pub fn next_event_for(&self, token: &str, timeout: Duration) -> Option<WatchEvent> {
        self.queue
            .next(Some(timeout), |t| t == token, &self.shared.counters)
    }

    /// Events pending (queued plus rescan markers).
    pub fn pending_events(&self) -> usize {
        self.queue.pending()
    }

    /// A snapshot of this connection's counters.
    pub fn stats(&self) -> ConnStats {
        let (ops, watches, transactions) = {
            let inner = self.shared.lock();
            inner
                .conns
                .get(&self.id)
                .map_or((0, 0, 0), |cs| (cs.ops, cs.watches.len(), cs.txs.len()))
        };
        let q = self.queue.stats();
        ConnStats {
            ops,
            watches,
            transactions,
            pending_events: self.queue.pending(),
            queued_events: self.queue.queued(),
            events_queued: q.queued,
            events_coalesced: q.coalesced,
            events_dropped: q.dropped,
            events_delivered: q.delivered,
        }
    }
}

/// Checks a watch token: no NUL, and `path\0token\0` fits in one message.
fn check_token(path: &str, token: &str) -> Result<(), XsError> {
    if token.contains('\0') {
        return Err(XsError::Invalid);
    }
    if path.len() + token.len() + 2 > XENSTORE_PAYLOAD_MAX {
        return Err(XsError::TooBig);
    }
    Ok(())
}
