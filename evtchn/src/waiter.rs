//! Delivery of a domain's events to its threads: [`Waiter`] (the guest's
//! upcall handler of spec/evtchn.md §3.3 plus blocking) and [`Pending`],
//! the set of ports one call took.
//!
//! The wake protocol and its orderings are described in `domain.rs`
//! (S0–S3 on the sender side, W1/W2 and T0/T1 here).

use crate::domain::{DomainSlot, SlotRef, word_bit};
use crate::error::EvtchnError;
use crate::port::PortState;
use crate::sync::{Ordering, ThreadId, current, dekker_fence, park};
use core::fmt;
use pvio_abi::{DomId, Port};
use std::time::{Duration, Instant};

use Ordering::{Acquire, Relaxed, SeqCst};

/// Words of the 2-level bitmaps (64 × 64 = 4096 ports).
const WORDS: usize = 64;

/// A set of ports taken from a domain's pending bitmap by one call of the
/// [`Waiter`], in port order. A fixed 2-level array (no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Bit `w` set = `words[w]` is non-zero.
    sel: u64,
    words: [u64; WORDS],
}

impl Default for Pending {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(|p| p.0)).finish()
    }
}

impl Pending {
    /// The empty set.
    pub const fn new() -> Self {
        Self {
            sel: 0,
            words: [0; WORDS],
        }
    }

    /// True if no port is in the set.
    pub const fn is_empty(&self) -> bool {
        self.sel == 0
    }

    /// Number of ports in the set.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// True if `port` is in the set.
    pub fn contains(&self, port: Port) -> bool {
        let (w, bit) = word_bit(port.0);
        self.words.get(w).is_some_and(|x| x & bit != 0)
    }

    /// The ports, in increasing order.
    pub fn iter(&self) -> PendingIter<'_> {
        PendingIter {
            words: &self.words,
            cursor: Cursor::new(self.sel),
        }
    }

    /// Adds the bits of word `w`; returns how many.
    pub(crate) fn add_word(&mut self, w: usize, bits: u64) -> u32 {
        match self.words.get_mut(w) {
            Some(x) if bits != 0 => {
                *x |= bits;
                self.sel |= 1 << w;
                bits.count_ones()
            }
            _ => 0,
        }
    }
}

/// Position in a [`Pending`] set.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    sel: u64,
    w: usize,
    cur: u64,
}

impl Cursor {
    const fn new(sel: u64) -> Self {
        Self { sel, w: 0, cur: 0 }
    }

    #[inline]
    fn next(&mut self, words: &[u64; WORDS]) -> Option<Port> {
        while self.cur == 0 {
            if self.sel == 0 {
                return None;
            }
            self.w = self.sel.trailing_zeros() as usize;
            self.sel &= self.sel - 1;
            self.cur = words.get(self.w).copied().unwrap_or(0);
        }
        let b = self.cur.trailing_zeros();
        self.cur &= self.cur - 1;
        Some(Port(self.w as u32 * 64 + b))
    }
}

/// Iterator over the ports of a borrowed [`Pending`].
#[derive(Clone, Debug)]
pub struct PendingIter<'a> {
    words: &'a [u64; WORDS],
    cursor: Cursor,
}

impl Iterator for PendingIter<'_> {
    type Item = Port;
    #[inline]
    fn next(&mut self) -> Option<Port> {
        self.cursor.next(self.words)
    }
}

impl<'a> IntoIterator for &'a Pending {
    type Item = Port;
    type IntoIter = PendingIter<'a>;
    fn into_iter(self) -> PendingIter<'a> {
        self.iter()
    }
}

/// Iterator over the ports of an owned [`Pending`].
#[derive(Clone, Debug)]
pub struct PendingIntoIter {
    set: Pending,
    cursor: Cursor,
}

impl Iterator for PendingIntoIter {
    type Item = Port;
    #[inline]
    fn next(&mut self) -> Option<Port> {
        self.cursor.next(&self.set.words)
    }
}

impl IntoIterator for Pending {
    type Item = Port;
    type IntoIter = PendingIntoIter;
    fn into_iter(self) -> PendingIntoIter {
        PendingIntoIter {
            cursor: Cursor::new(self.sel),
            set: self,
        }
    }
}

/// Outcome of [`Waiter::wait_port`].
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortWait {
    /// The port had an event, which is now taken (its pending bit cleared).
    Fired,
    /// The timeout passed without an event.
    TimedOut,
}

/// Time left of a wait, computed lazily (no clock read when an event is
/// already there).
#[derive(Clone, Copy, Debug)]
enum Budget {
    NotStarted(Duration),
    Until(Instant),
    Forever,
}

impl Budget {
    /// `None`: expired; `Some(None)`: no limit; `Some(Some(d))`: `d` left.
    fn remaining(&mut self) -> Option<Option<Duration>> {
        if let Self::NotStarted(t) = *self {
            if t.is_zero() {
                return None;
            }
            *self = Instant::now()
                .checked_add(t)
                .map_or(Self::Forever, Self::Until);
            return Some(Some(t));
        }
        match *self {
            Self::Until(end) => {
                let left = end.saturating_duration_since(Instant::now());
                (!left.is_zero()).then_some(Some(left))
            }
            _ => Some(None),
        }
    }
}

/// The receiving side of one domain's event channels (from
/// [`EventChannels::waiter`](crate::EventChannels::waiter); one per
/// domain).
///
/// [`wait`](Self::wait) blocks until some unmasked port of the domain is
/// pending, then takes all of them at once (clearing their pending bits,
/// like the guest upcall handler of spec §3.3). Senders only touch the
/// waiter's state when they set a *new* pending bit on an unmasked port,
/// and only make a syscall (`unpark`) when the waiter sleeps.
///
/// The waiter may be moved between threads; the thread that last called a
/// blocking method is the one woken. Dropping it lets the domain create a
/// new one. Under the `loom` feature, timeouts are not modelled: a wait
/// ends only by an event, a state change or the domain's removal.
pub struct Waiter {
    slot: SlotRef,
    incarnation: u64,
    /// Kick count already reported by `wait`.
    seen_kick: u64,
    /// Thread registered with the slot (re-registered when it changes).
    thread: Option<ThreadId>,
    /// Polls of the wake condition before parking.
    spin: u32,
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter")
            .field("dom", &self.slot.dom)
            .field("spin", &self.spin)
            .finish_non_exhaustive()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.slot.release_waiter(self.incarnation);
    }
}

impl Waiter {
    pub(crate) fn new(slot: SlotRef, incarnation: u64) -> Self {
        let seen_kick = slot.signal.kick.load(Acquire);
        Self {
            slot,
            incarnation,
            seen_kick,
            thread: None,
            spin: 0,
        }
    }

    /// The domain whose events this waiter receives.
    pub fn domain(&self) -> DomId {
        self.slot.dom
    }

    /// Poll the wake condition up to `iterations` times (with a CPU spin
    /// hint) before parking. Default 0: park at once. Spinning trades CPU
    /// for wake latency when the peer answers within microseconds.
    pub fn set_spin(&mut self, iterations: u32) {
        self.spin = iterations;
    }

    /// Takes the pending-and-unmasked ports without blocking (possibly
    /// none; always none once the domain has been removed).
    #[must_use = "the taken events are gone from the pending bitmap"]
    pub fn try_take(&mut self) -> Pending {
        let mut p = Pending::new();
        if self.check_alive().is_ok() {
            self.slot.take(&mut p);
        }
        p
    }

    /// Blocks until some unmasked port of the domain is pending, then takes
    /// all of them (clearing their pending bits) and returns them; each
    /// event (0→1 edge of a pending bit) is returned exactly once.
    ///
    /// Returns an **empty** set when `timeout` passes, and also early when
    /// a port of the domain (or the peer of one) was closed or reset since
    /// the previous return, so that event loops re-check their ports.
    /// Errors: `NoSuchDomain` once the domain has been removed.
    pub fn wait(&mut self, timeout: Duration) -> Result<Pending, EvtchnError> {
        let mut budget = Budget::NotStarted(timeout);
        let mut parked = false;
        loop {
            self.check_alive()?;
            let mut p = Pending::new();
            if self.slot.take(&mut p) != 0 {
                return Ok(p);
            }
            let kick = self.slot.signal.kick.load(Acquire);
            if kick != self.seen_kick {
                self.seen_kick = kick;
                return Ok(p);
            }
            let Some(left) = budget.remaining() else {
                return Ok(p);
            };
            if parked {
                self.slot.count_spurious();
            }
            parked = self.sleep(left, kick, None);
        }
    }

    /// Blocks until `port` is pending and unmasked, and takes only that
    /// event (other ports' events stay pending for [`wait`](Self::wait)).
    /// For a thread that serves a single port: events of other ports also
    /// wake it, and count as spurious wakeups.
    ///
    /// Errors: `InvalidPort` if the port is not allocated or gets closed
    /// (or reset) meanwhile; `Closed` if it was interdomain and its peer
    /// closed it or exited; `NoSuchDomain` once the domain is removed.
    pub fn wait_port(&mut self, port: Port, timeout: Duration) -> Result<PortWait, EvtchnError> {
        self.check_alive()?;
        let was_interdomain = match self.slot.state(port)? {
            PortState::Interdomain { .. } => true,
            PortState::Unbound { .. } => false,
            PortState::Closed | PortState::Reserved => return Err(EvtchnError::InvalidPort(port)),
        };
        let mut budget = Budget::NotStarted(timeout);
        let mut parked = false;
        loop {
            // Read the kick count before the state: a close that the state
            // check below misses bumps it later, and the sleep's W2 (or the
            // closer's S3) notices.
            let kick = self.slot.signal.kick.load(Acquire);
            self.check_alive()?;
            if self.slot.take_port(port.0) {
                return Ok(PortWait::Fired);
            }
            match self.slot.state(port)? {
                PortState::Closed | PortState::Reserved => {
                    return Err(EvtchnError::InvalidPort(port));
                }
                PortState::Unbound { .. } if was_interdomain => {
                    return Err(EvtchnError::Closed(port));
                }
                _ => {}
            }
            let Some(left) = budget.remaining() else {
                return Ok(PortWait::TimedOut);
            };
            if parked {
                self.slot.count_spurious();
            }
            parked = self.sleep(left, kick, Some(port.0));
        }
    }

    fn check_alive(&self) -> Result<(), EvtchnError> {
        if self.slot.incarnation() == self.incarnation {
            Ok(())
        } else {
            Err(EvtchnError::NoSuchDomain(self.slot.dom))
        }
    }

    /// Parks until woken, unless the wake condition already holds: the
    /// waiter half (W1, W2) of the protocol in `domain.rs`. `port`: the
    /// condition of `wait_port`, else that of `wait`. `kick`: the kick count
    /// the caller has already accounted for. Returns true if it parked.
    fn sleep(&mut self, timeout: Option<Duration>, kick: u64, port: Option<u32>) -> bool {
        let ready = |s: &DomainSlot| match port {
            None => s.ready_any(),
            Some(p) => s.ready_port(p),
        };
        for _ in 0..self.spin {
            if ready(&self.slot) {
                return false;
            }
            core::hint::spin_loop();
        }
        let me = current();
        if self.thread != Some(me.id()) {
            self.thread = Some(me.id());
            self.slot.register_thread(me);
        }
        let s = &*self.slot;
        // W1, SeqCst: pairs with S3 (`DomainSlot::wake`) of senders, unmask
        // and kick: either they see `true` and unpark us, or W2 sees their
        // write.
        s.signal.sleeping.store(true, SeqCst);
        dekker_fence();
        // W2 (SeqCst loads inside `ready` and here).
        if ready(s) || s.signal.kick.load(SeqCst) != kick || s.incarnation() != self.incarnation {
            s.signal.sleeping.store(false, Relaxed);
            return false;
        }
        park(timeout);
        // Relaxed: only an optimisation hint for senders from here on (a
        // sender that still sees `true` makes one extra unpark).
        s.signal.sleeping.store(false, Relaxed);
        true
    }
}
