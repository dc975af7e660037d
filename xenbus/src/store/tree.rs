//! The node tree, transaction overlays and the node operations.
//!
//! Nodes live in a flat map keyed by absolute path; each keeps its value,
//! permissions, the sorted names of its children and a **generation**: the
//! value of a store-wide counter when the node was last modified (value,
//! children or permissions). A [`View`] is the tree as one request sees it:
//! either the live tree, or the live tree under a transaction's overlay of
//! written nodes. Reading through a transaction records the generation of
//! every node it looks at (or that it was absent); commit checks them all
//! against the live tree (see [`super::Store`] for the scheme).
//!
//! The operations here check permissions and quotas completely before they
//! change anything, so a failed request leaves no partial state.

use std::collections::{BTreeMap, BTreeSet};

use pvio_abi::DomId;
use pvio_abi::xenbus::XENSTORE_PAYLOAD_MAX;

use crate::path::{basename, child, parent};
use crate::perms::{DOM0, Perms};
use crate::{Quota, QuotaKind, XsError};

/// One node.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) value: Vec<u8>,
    pub(crate) perms: Perms,
    /// Leaf names of the children, sorted.
    pub(crate) children: BTreeSet<String>,
    /// Store-wide generation of the last change (meaningless in overlays).
    pub(crate) generation: u64,
}

impl Node {
    fn new(value: Vec<u8>, perms: Perms) -> Node {
        Node {
            value,
            perms,
            children: BTreeSet::new(),
            generation: 0,
        }
    }
}

/// The live tree.
#[derive(Debug)]
pub(crate) struct Tree {
    pub(crate) nodes: BTreeMap<String, Node>,
    /// Last generation handed out.
    generation: u64,
    /// Nodes owned per domain (first permission entry).
    owned: BTreeMap<DomId, usize>,
}

impl Tree {
    /// A tree with `/`, `/local` and `/local/domain`, owned by dom0, no
    /// access for anyone else.
    pub(crate) fn new() -> Tree {
        let mut t = Tree {
            nodes: BTreeMap::new(),
            generation: 0,
            owned: BTreeMap::new(),
        };
        let perms = Perms::new(DOM0, crate::Perm::None);
        for (path, kid) in [
            ("/", Some("local")),
            ("/local", Some("domain")),
            ("/local/domain", None),
        ] {
            let mut node = Node::new(Vec::new(), perms.clone());
            node.children.extend(kid.map(str::to_owned));
            t.put(path.to_owned(), node);
        }
        t
    }

    /// The last generation handed out (a transaction's start point).
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// Nodes owned by `domid` in the live tree.
    pub(crate) fn owned(&self, domid: DomId) -> usize {
        self.owned.get(&domid).copied().unwrap_or(0)
    }

    fn account(&mut self, owner: DomId, delta: isize) {
        let n = self.owned.entry(owner).or_insert(0);
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            self.owned.remove(&owner);
        }
    }

    /// Inserts or replaces a node, stamping a fresh generation.
    pub(crate) fn put(&mut self, path: String, mut node: Node) {
        node.generation = self.next_generation();
        self.account(node.perms.owner(), 1);
        if let Some(old) = self.nodes.insert(path, node) {
            self.account(old.perms.owner(), -1);
        }
    }

    /// Removes a node.
    pub(crate) fn del(&mut self, path: &str) -> Option<Node> {
        let old = self.nodes.remove(path)?;
        self.account(old.perms.owner(), -1);
        Some(old)
    }

    /// Changes a node in place, stamping a fresh generation.
    fn modify(&mut self, path: &str, f: impl FnOnce(&mut Node)) {
        let generation = self.next_generation();
        let Some(node) = self.nodes.get_mut(path) else {
            return;
        };
        let before = node.perms.owner();
        f(node);
        node.generation = generation;
        let after = node.perms.owner();
        if before != after {
            self.account(before, -1);
            self.account(after, 1);
        }
    }

    /// Total number of nodes.
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// XSA-322: `domid` is gone; drop it from every permission list and
    /// give the nodes it owned to dom0 (so a new domain reusing the id
    /// inherits nothing).
    pub(crate) fn forget_domain(&mut self, domid: DomId) {
        let touched: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.perms.entries().iter().any(|e| e.domid == domid))
            .map(|(p, _)| p.clone())
            .collect();
        for path in touched {
            self.modify(&path, |n| {
                n.perms.forget(domid);
            });
        }
    }
}

/// A transaction's private state.
#[derive(Debug, Default)]
pub(crate) struct TxState {
    /// Store generation when the transaction started.
    start: u64,
    /// A node it accessed had changed after `start`: commit must fail.
    stale: bool,
    /// Nodes written by the transaction (`None`: deleted).
    pub(crate) writes: BTreeMap<String, Option<Node>>,
    /// Generation of every node the transaction looked at, as first seen
    /// (`None`: absent).
    pub(crate) accessed: BTreeMap<String, Option<u64>>,
    /// Change in nodes owned per domain.
    pub(crate) owned_delta: BTreeMap<DomId, isize>,
    /// Watch events to fire at commit.
    pub(crate) changes: Vec<Change>,
}

impl TxState {
    /// A transaction starting now.
    pub(crate) fn new(tree: &Tree) -> TxState {
        TxState {
            start: tree.generation(),
            ..TxState::default()
        }
    }

    /// Records the first access to `path` (live generation, or absent).
    fn record(&mut self, path: &str, live: Option<&Node>) {
        let seen = live.map(|n| n.generation);
        if seen.is_some_and(|g| g > self.start) {
            // Changed after the transaction started: what it reads now is
            // not the snapshot it started from.
            self.stale = true;
        }
        self.accessed.entry(path.to_owned()).or_insert(seen);
    }

    /// Checks every accessed node against the live tree: `EAGAIN` if any
    /// changed after the transaction started (before its first access, or
    /// since).
    pub(crate) fn validate(&self, tree: &Tree) -> Result<(), XsError> {
        let stale = self.stale
            || self
                .accessed
                .iter()
                .any(|(path, seen)| tree.nodes.get(path).map(|n| n.generation) != *seen);
        if stale { Err(XsError::Again) } else { Ok(()) }
    }

    /// Applies the overlay to the live tree (after [`TxState::validate`]).
    pub(crate) fn apply(self, tree: &mut Tree) -> Vec<Change> {
        for (path, node) in self.writes {
            match node {
                Some(node) => tree.put(path, node),
                None => {
                    tree.del(&path);
                }
            }
        }
        self.changes
    }
}

/// A change to report to watches.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    /// The changed path (absolute, or `@...` for special events).
    pub(crate) path: String,
    /// Permissions deciding who may see the event.
    pub(crate) perms: Perms,
    /// Previous permissions (permission changes): readers under either
    /// list see the event.
    pub(crate) old_perms: Option<Perms>,
    /// Only watches on exactly `path` fire (the removal of a node below the
    /// root of a recursive `rm`); otherwise watches at or above `path`.
    pub(crate) exact: bool,
    /// A special event (`@introduceDomain`, `@releaseDomain`).
    pub(crate) special: bool,
}

impl Change {
    fn node(path: String, perms: Perms) -> Change {
        Change {
            path,
            perms,
            old_perms: None,
            exact: false,
            special: false,
        }
    }
}

/// The tree as one request sees it.
pub(crate) struct View<'a> {
    pub(crate) tree: &'a mut Tree,
    pub(crate) tx: Option<&'a mut TxState>,
}

impl View<'_> {
    /// The node at `path`, recording the access in a transaction.
    fn get(&mut self, path: &str) -> Option<&Node> {
        let Some(tx) = self.tx.as_deref_mut() else {
            return self.tree.nodes.get(path);
        };
        if tx.writes.contains_key(path) {
            return tx.writes.get(path).and_then(Option::as_ref);
        }
        let live = self.tree.nodes.get(path);
        if !tx.accessed.contains_key(path) {
            tx.record(path, live);
        }
        live
    }

    /// Nodes owned by `domid` as this view sees it.
    fn owned(&self, domid: DomId) -> usize {
        let live = self.tree.owned(domid);
        match self.tx.as_deref() {
            None => live,
            Some(tx) => {
                live.saturating_add_signed(tx.owned_delta.get(&domid).copied().unwrap_or(0))
            }
        }
    }

    /// Makes sure a transaction has its own copy of `path` (if the node
    /// exists) and returns the overlay slot.
    fn tx_slot<'t>(tree: &Tree, tx: &'t mut TxState, path: &str) -> &'t mut Option<Node> {
        if !tx.writes.contains_key(path) {
            let live = tree.nodes.get(path);
            if !tx.accessed.contains_key(path) {
                tx.record(path, live);
            }
            tx.writes.insert(path.to_owned(), live.cloned());
        }
        tx.writes.entry(path.to_owned()).or_insert(None)
    }

    /// Inserts a node that does not exist in this view.
    fn insert(&mut self, path: String, node: Node) {
        match self.tx.as_deref_mut() {
            None => self.tree.put(path, node),
            Some(tx) => {
                *tx.owned_delta.entry(node.perms.owner()).or_insert(0) += 1;
                let slot = Self::tx_slot(self.tree, tx, &path);
                *slot = Some(node);
            }
        }
    }

    /// Changes an existing node.
    fn modify(&mut self, path: &str, f: impl FnOnce(&mut Node)) {
        match self.tx.as_deref_mut() {
            None => self.tree.modify(path, f),
            Some(tx) => {
                let slot = Self::tx_slot(self.tree, tx, path);
                let Some(node) = slot.as_mut() else { return };
                let before = node.perms.owner();
                f(node);
                let after = node.perms.owner();
                if before != after {
                    *tx.owned_delta.entry(before).or_insert(0) -= 1;
                    *tx.owned_delta.entry(after).or_insert(0) += 1;
                }
            }
        }
    }

    /// Deletes a node (not its children).
    fn delete(&mut self, path: &str) {
        match self.tx.as_deref_mut() {
            None => {
                self.tree.del(path);
            }
            Some(tx) => {
                let slot = Self::tx_slot(self.tree, tx, path);
                if let Some(old) = slot.take() {
                    *tx.owned_delta.entry(old.perms.owner()).or_insert(0) -= 1;
                }
            }
        }
    }

    /// The error for a missing node (`errno_from_parents`): `ENOENT` only
    /// if the nearest existing ancestor would grant the right asked for,
    /// else `EACCES`, so that a domain learns nothing about nodes it may
    /// not see.
    fn missing_error(&mut self, caller: DomId, path: &str, write: bool) -> XsError {
        let mut p = path;
        while p != "/" {
            p = parent(p);
            if let Some(n) = self.get(p) {
                let ok = if write {
                    n.perms.can_write(caller)
                } else {
                    n.perms.can_read(caller)
                };
                return if ok {
                    XsError::NotFound
                } else {
                    XsError::Access
                };
            }
        }
        XsError::Access
    }

    /// Looks up `path` for reading, with xenstored's errors.
    fn readable(&mut self, caller: DomId, path: &str) -> Result<&Node, XsError> {
        match self.get(path) {
            Some(n) if n.perms.can_read(caller) => {}
            Some(_) => return Err(XsError::Access),
            None => return Err(self.missing_error(caller, path, false)),
        }
        self.get(path).ok_or(XsError::NotFound)
    }

    /// `XS_READ`.
    pub(crate) fn read(&mut self, caller: DomId, path: &str) -> Result<Vec<u8>, XsError> {
        Ok(self.readable(caller, path)?.value.clone())
    }

    /// `XS_DIRECTORY`: child names, sorted.
    pub(crate) fn directory(&mut self, caller: DomId, path: &str) -> Result<Vec<String>, XsError> {
        Ok(self
            .readable(caller, path)?
            .children
            .iter()
            .cloned()
            .collect())
    }

    /// `XS_GET_PERMS`.
    pub(crate) fn get_perms(&mut self, caller: DomId, path: &str) -> Result<Perms, XsError> {
        Ok(self.readable(caller, path)?.perms.clone())
    }

    /// `XS_WRITE`: sets the value, creating the node and missing parents.
    pub(crate) fn write(
        &mut self,
        caller: DomId,
        quota: &Quota,
        path: &str,
        value: &[u8],
    ) -> Result<Change, XsError> {
        check_value(caller, quota, value)?;
        match self.get(path) {
            Some(n) if n.perms.can_write(caller) => {
                let perms = n.perms.clone();
                self.modify(path, |n| n.value = value.to_vec());
                Ok(Change::node(path.to_owned(), perms))
            }
            Some(_) => Err(XsError::Access),
            None => self.create(caller, quota, path, value),
        }
    }

    /// `XS_MKDIR`: creates the node (and parents) if missing; `None` if it
    /// existed (nothing changes, nothing fires).
    pub(crate) fn mkdir(
        &mut self,
        caller: DomId,
        quota: &Quota,
        path: &str,
    ) -> Result<Option<Change>, XsError> {
        match self.get(path) {
            Some(n) if n.perms.can_write(caller) => Ok(None),
            Some(_) => Err(XsError::Access),
            None => self.create(caller, quota, path, &[]).map(Some),
        }
    }

    /// Creates `path` and its missing parents (`construct_node`).
    ///
    /// Needs write permission on the nearest existing ancestor. New nodes
    /// inherit that ancestor's permissions; an unprivileged creator becomes
    /// their owner, dom0 keeps the inherited owner (as xenstored does).
    fn create(
        &mut self,
        caller: DomId,
        quota: &Quota,
        path: &str,
        value: &[u8],
    ) -> Result<Change, XsError> {
        let mut missing = vec![path.to_owned()];
        let mut ancestor = parent(path);
        while self.get(ancestor).is_none() {
            missing.push(ancestor.to_owned());
            ancestor = parent(ancestor);
        }
        let Some(anc) = self.get(ancestor) else {
            return Err(XsError::Access); // the root always exists
        };
        if !anc.perms.can_write(caller) {
            return Err(XsError::Access);
        }
        let owner = if caller == DOM0 {
            anc.perms.owner()
        } else {
            caller
        };
        let perms = anc.perms.with_owner(owner);
        if caller != DOM0 && self.owned(owner) + missing.len() > quota.max_nodes_per_domain {
            return Err(XsError::Quota(QuotaKind::Nodes));
        }
        let mut above = ancestor.to_owned();
        for p in missing.into_iter().rev() {
            let name = basename(&p).to_owned();
            self.modify(&above, |n| {
                n.children.insert(name);
            });
            let v = if p == path {
                value.to_vec()
            } else {
                Vec::new()
            };
            self.insert(p.clone(), Node::new(v, perms.clone()));
            above = p;
        }
        Ok(Change::node(path.to_owned(), perms))
    }

    /// `XS_RM`: removes `path` and everything below. Reports, as
    /// xenstored's `delnode_sub` does, one exact change per removed node
    /// below `path` (deepest first; each visible to the readers of that
    /// node, so a watcher of a readable node learns of its removal even if
    /// an unreadable ancestor was removed) and last the change of `path`
    /// itself. Nothing if `path` did not exist but its parent does.
    pub(crate) fn rm(&mut self, caller: DomId, path: &str) -> Result<Vec<Change>, XsError> {
        let perms = match self.get(path) {
            Some(n) if n.perms.can_write(caller) => n.perms.clone(),
            Some(_) => return Err(XsError::Access),
            None => {
                let err = self.missing_error(caller, path, true);
                if err == XsError::NotFound && self.get(parent(path)).is_some() {
                    return Ok(Vec::new());
                }
                return Err(err);
            }
        };
        if path == "/" {
            return Err(XsError::Invalid);
        }
        // Depth-first, parents before children; reversed below.
        let mut removed = Vec::new();
        let mut stack = vec![path.to_owned()];
        while let Some(p) = stack.pop() {
            let Some(node) = self.get(&p) else { continue };
            stack.extend(node.children.iter().map(|k| child(&p, k)));
            if p != path {
                removed.push(Change {
                    exact: true,
                    ..Change::node(p.clone(), node.perms.clone())
                });
            }
            self.delete(&p);
        }
        let name = basename(path).to_owned();
        self.modify(parent(path), |n| {
            n.children.remove(&name);
        });
        removed.reverse();
        removed.push(Change::node(path.to_owned(), perms));
        Ok(removed)
    }

    /// `XS_SET_PERMS`: only the owner or dom0; an unprivileged owner may
    /// not give the node away (`EPERM`).
    pub(crate) fn set_perms(
        &mut self,
        caller: DomId,
        quota: &Quota,
        path: &str,
        perms: &Perms,
    ) -> Result<Change, XsError> {
        if caller != DOM0 && perms.entries().len() > quota.max_perms_per_node {
            return Err(XsError::Quota(QuotaKind::Perms));
        }
        let old = match self.get(path) {
            Some(n) if n.perms.is_owner_or_privileged(caller) => n.perms.clone(),
            Some(_) => return Err(XsError::Access),
            None => return Err(self.missing_error(caller, path, true)),
        };
        if caller != DOM0 && perms.owner() != old.owner() {
            return Err(XsError::Perm);
        }
        let new = perms.clone();
        self.modify(path, |n| n.perms = new);
        Ok(Change {
            old_perms: Some(old),
            ..Change::node(path.to_owned(), perms.clone())
        })
    }
}

/// Checks a value against the payload limit (everyone) and the entry-size
/// quota (unprivileged callers).
fn check_value(caller: DomId, quota: &Quota, value: &[u8]) -> Result<(), XsError> {
    if value.len() > XENSTORE_PAYLOAD_MAX {
        return Err(XsError::TooBig);
    }
    if caller != DOM0 && value.len() > quota.max_value_size {
        return Err(XsError::Quota(QuotaKind::ValueSize));
    }
    Ok(())
}
