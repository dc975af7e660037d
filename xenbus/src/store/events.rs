//! Per-connection watch event queues, bounded and coalescing
//! (SECURITY.md C1/C2; XSA-349, XSA-326).
//!
//! Admission of an event `(path, token)` for watch `w`:
//! 1. if an identical event of `w` is already pending (special `@` events
//!    excepted, as in xenstored's `send_event`), or `w` already has a
//!    pending *rescan marker*, the event is **coalesced** (it adds no
//!    information: the watcher re-reads anyway);
//! 2. else if `w` has `max_pending_events_per_watch` events pending, or
//!    the connection has `max_pending_events`, the event is **dropped** and
//!    `w` gets a rescan marker instead: one event whose path is the watched
//!    path itself, meaning "something at or below changed, re-read it all";
//! 3. else it is queued.
//!
//! So a connection holds at most `max_pending_events` queued events plus
//! one marker per watch, whatever its peers do, and no change is ever lost
//! without a marker covering it. Markers are delivered before queued
//! events, so a busy queue cannot starve them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::Counters;
use crate::{Quota, WatchEvent};

/// A queued event and the watch it belongs to.
#[derive(Debug)]
struct Queued {
    watch: u64,
    event: WatchEvent,
}

/// Pending events of one watch.
#[derive(Debug, Default)]
struct PerWatch {
    count: usize,
    /// Paths of pending events that take part in coalescing.
    paths: BTreeSet<String>,
}

/// Event counters of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct QueueStats {
    pub(crate) queued: u64,
    pub(crate) coalesced: u64,
    pub(crate) dropped: u64,
    pub(crate) delivered: u64,
}

#[derive(Debug, Default)]
struct QueueState {
    events: VecDeque<Queued>,
    per_watch: BTreeMap<u64, PerWatch>,
    /// Rescan markers by watch id.
    markers: BTreeMap<u64, WatchEvent>,
    closed: bool,
    stats: QueueStats,
}

impl QueueState {
    fn forget_queued(&mut self, q: &Queued) {
        if let Some(pw) = self.per_watch.get_mut(&q.watch) {
            pw.count = pw.count.saturating_sub(1);
            pw.paths.remove(&q.event.path);
        }
        // The event says "re-read the watched path": it covers a marker.
        if self.markers.get(&q.watch).is_some_and(|m| *m == q.event) {
            self.markers.remove(&q.watch);
        }
    }

    /// Takes the first marker, else the first queued event, whose token
    /// satisfies `want`.
    fn take(&mut self, want: impl Fn(&str) -> bool) -> Option<WatchEvent> {
        let marker = self
            .markers
            .iter()
            .find(|(_, ev)| want(&ev.token))
            .map(|(&id, _)| id);
        if let Some(id) = marker {
            let ev = self.markers.remove(&id)?;
            self.stats.delivered += 1;
            return Some(ev);
        }
        let pos = self.events.iter().position(|q| want(&q.event.token))?;
        let q = self.events.remove(pos)?;
        self.forget_queued(&q);
        self.stats.delivered += 1;
        Some(q.event)
    }
}

/// The event queue of one connection: a mutex-protected queue and a
/// condition variable for blocking readers.
#[derive(Debug, Default)]
pub(crate) struct EventQueue {
    state: Mutex<QueueState>,
    cv: Condvar,
}

impl EventQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Nothing panics while holding the lock; recover from poisoning
        // anyway rather than propagate a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Offers the event `(path, token)` of watch `watch` (see the module
    /// doc). `marker` is the watch's rescan event.
    pub(crate) fn push(
        &self,
        watch: u64,
        path: &str,
        token: &str,
        marker: &WatchEvent,
        quota: &Quota,
        counters: &Counters,
    ) {
        // Special events (`@...`) are not coalesced, as in xenstored.
        let coalesce = !path.starts_with('@');
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.closed {
            return;
        }
        let total = st.events.len();
        let pw = st.per_watch.entry(watch).or_default();
        let duplicate = coalesce && pw.paths.contains(path);
        if duplicate || st.markers.contains_key(&watch) {
            st.stats.coalesced += 1;
            Counters::bump(&counters.events_coalesced);
            return;
        }
        if pw.count >= quota.max_pending_events_per_watch || total >= quota.max_pending_events {
            st.markers.insert(watch, marker.clone());
            st.stats.dropped += 1;
            Counters::bump(&counters.events_dropped);
            self.cv.notify_all();
            return;
        }
        pw.count += 1;
        if coalesce {
            pw.paths.insert(path.to_owned());
        }
        let event = WatchEvent {
            path: path.to_owned(),
            token: token.to_owned(),
        };
        st.events.push_back(Queued { watch, event });
        st.stats.queued += 1;
        Counters::bump(&counters.events_queued);
        self.cv.notify_all();
    }

    /// Removes everything pending for `watch` (on unwatch).
    pub(crate) fn purge_watch(&self, watch: u64) {
        let mut st = self.lock();
        st.events.retain(|q| q.watch != watch);
        st.per_watch.remove(&watch);
        st.markers.remove(&watch);
    }

    /// Drops everything and wakes all readers; later pushes are ignored.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.events.clear();
        st.per_watch.clear();
        st.markers.clear();
        self.cv.notify_all();
    }

    /// Takes the next event whose token satisfies `want`, waiting up to
    /// `timeout` (`None` waits without limit). Returns `None` on timeout
    /// or when the queue is closed.
    pub(crate) fn next(
        &self,
        timeout: Option<Duration>,
        want: impl Fn(&str) -> bool,
        counters: &Counters,
    ) -> Option<WatchEvent> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut st = self.lock();
        loop {
            if let Some(ev) = st.take(&want) {
                Counters::bump(&counters.events_delivered);
                return Some(ev);
            }
            if st.closed {
                return None;
            }
            st = match (timeout, deadline) {
                (Some(_), Some(deadline)) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return None;
                    }
                    self.cv
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                // No timeout, or one too large to represent: wait forever.
                _ => self.cv.wait(st).unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    /// Events pending (queued events plus rescan markers).
    pub(crate) fn pending(&self) -> usize {
        let st = self.lock();
        st.events.len() + st.markers.len()
    }

    /// Queued events only (at most `max_pending_events`).
    pub(crate) fn queued(&self) -> usize {
        self.lock().events.len()
    }

    /// Counters.
    pub(crate) fn stats(&self) -> QueueStats {
        self.lock().stats
    }

    /// True once closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }
}
