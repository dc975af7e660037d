//! One domain's event state: the port table, the 2-level pending and mask
//! bitmaps with their selector word (spec/evtchn.md §3.1–3.3), the waiter
//! signal and the counters.
//!
//! A `DomainSlot` belongs to a domain id for the life of the registry and
//! is reused when the id is added again (see `registry.rs`); a domain's
//! *incarnation* number (odd while the domain exists) tells the lives
//! apart.
//!
//! # Set-pending and wake (spec §3.2), with its orderings
//!
//! Sender side, [`DomainSlot::raise`] then [`DomainSlot::wake`]:
//!
//! * **S0** `pending[w].fetch_or(bit, SeqCst)`. If the bit was already set
//!   the send is coalesced and stops here: no lock, no further access. Its
//!   release half still publishes the sender's earlier writes to the
//!   handler, whose `fetch_and` (T1) is a later RMW on the same word.
//! * **S1** `mask[w].load(SeqCst)`: masked → the edge stays latched in the
//!   pending bit only (spec §3.2 step 3).
//! * **S2** `sel.fetch_or(1 << w, SeqCst)`: mark the word for the scan.
//! * **S3** `sleeping.load(SeqCst)`: only if a waiter sleeps, claim the
//!   wake with `sleeping.swap(false)` (so concurrent senders make one
//!   syscall, not one each) and `unpark` its thread.
//!
//! Waiter side ([`crate::Waiter`]): **W1** `sleeping.store(true, SeqCst)`,
//! then **W2** re-check with `SeqCst` loads (`sel != 0` for `wait`;
//! `pending & !mask` of the port for `wait_port`; the kick counter), and
//! park only if nothing is there. Pairs:
//!
//! * (S2 → S3) ∥ (W1 → W2 on `sel`) and (S0 → S3) ∥ (W1 → W2 on `pending`):
//!   Dekker pairs. In the single total order of `SeqCst` operations either
//!   S3 reads W1's `true` (the sender unparks) or W2 reads the sender's
//!   bit (the waiter does not sleep), so no event is lost. `park`/`unpark`
//!   keep a token, so an unpark that lands before the park is not lost
//!   either.
//! * (S0 → S1) ∥ (U0 → U1) of [`DomainSlot::unmask`]: a send racing an
//!   unmask. Either the sender sees the mask cleared, or the unmasker sees
//!   the pending bit, or both; the selector and the one pending bit
//!   deduplicate, so the edge is delivered exactly once (SECURITY.md E9).
//! * (K0 → S3) of [`DomainSlot::kick`] ∥ (W1 → W2 on `kick`): the same for
//!   state changes (close, reset, removal).
//!
//! Under loom each pair also gets a `SeqCst` fence (`sync::dekker_fence`).
//!
//! # Direct ports
//!
//! A port can have a thread of its own ([`DomainSlot::set_direct`]): a
//! driver thread that waits on that one port. A raise of a direct port
//! unparks that thread instead of the domain's waiter (one thread wake-up
//! instead of two: the waiter, then the thread it hands the port to), and
//! `take` leaves the port's bit for [`DomainSlot::take_port`]. Orderings:
//!
//! * (S0 → **D0** `direct.load(SeqCst)`) ∥ (**R0** `direct.fetch_or(SeqCst)`
//!   → the thread's `take_port`): a raise that missed the registration
//!   marks the selector and wakes the waiter (which no longer takes the
//!   bit), and the newly registered thread's first `take_port` sees the
//!   bit; `park`'s token keeps an `unpark` that lands before the `park`.
//! * (S0 → D0) ∥ (**C0** `direct.fetch_and(SeqCst)` → **C1**
//!   `pending.load(SeqCst)`) of [`DomainSlot::clear_direct`]: a raise that
//!   still saw the port direct unparks a thread that is going away; then
//!   C1 sees the bit and hands it to the domain's waiter (S2, S3). At worst
//!   both do, and the selector deduplicates.
//!
//! Taking events (spec §3.3), [`DomainSlot::take`]: **T0**
//! `sel.swap(0, Acquire)` (pairs with S2: the words it names show their
//! pending bits), then per word **T1** `pending[w].fetch_and(!cand,
//! Acquire)` with `cand = pending & !mask` (pairs with every S0 that
//! preceded it on the word: the handler sees what the senders wrote before
//! they sent).

use crate::error::EvtchnError;
use crate::port::{PIN, PIN_LIMIT, PortState, pins, rebind};
use crate::sync::{
    Arc, AtomicBool, AtomicU32, AtomicU64, Mutex, Ordering, Thread, dekker_fence, lock, yield_now,
};
use crate::waiter::Pending;
use crossbeam_utils::CachePadded;
use pvio_abi::{DomId, Port};
use std::collections::HashMap;

use Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};

/// Word index and bit of a port in the 2-level bitmaps (spec §3.1).
#[inline]
pub(crate) const fn word_bit(port: u32) -> (usize, u64) {
    ((port / 64) as usize, 1 << (port % 64))
}

/// Per-domain counters, a snapshot of
/// [`EventChannels::counters`](crate::EventChannels::counters). Each is
/// written only by the domain's own threads (its senders and its waiter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counters {
    /// Successful `send`s from this domain's ports (including the ones
    /// dropped on unbound ports and the coalesced ones).
    pub sends: u64,
    /// Sends from this domain that found the remote port already pending
    /// (no new event, nobody woken).
    pub coalesced: u64,
    /// Events (ports) handed to this domain's [`Waiter`](crate::Waiter).
    pub deliveries: u64,
    /// Times this domain's waiter woke from a park and found nothing to
    /// take (a stale unpark, or an event another call took first).
    pub spurious_wakeups: u64,
}

/// The words the senders and the waiter both write, on one cache line.
#[derive(Debug)]
pub(crate) struct Signal {
    /// `evtchn_pending_sel`: bit `w` set = word `w` may hold unmasked
    /// pending ports.
    pub(crate) sel: AtomicU64,
    /// The waiter is (about to be) parked; see the module docs.
    pub(crate) sleeping: AtomicBool,
    /// Bumped by close/reset/removal of this domain's ports or of their
    /// peers, so that waiters re-check port states.
    pub(crate) kick: AtomicU64,
}

#[derive(Debug, Default)]
struct Stats {
    sends: AtomicU64,
    coalesced: AtomicU64,
    deliveries: AtomicU64,
    spurious: AtomicU64,
}

/// The event state of one domain id (see the module docs).
#[derive(Debug)]
pub(crate) struct DomainSlot {
    pub(crate) dom: DomId,
    /// Odd while the domain exists; +1 at `add_domain` and at
    /// `remove_domain`.
    incarnation: AtomicU64,
    /// Port limit of this incarnation (ports `0..max_ports`).
    max_ports: AtomicU32,
    /// Allocated ports (unbound or interdomain), published after the
    /// entries (SECURITY.md E7).
    active: AtomicU32,
    /// State word per port (`port.rs`); length = the registry's limit.
    ports: Box<[AtomicU64]>,
    /// `evtchn_pending`: one bit per port.
    pending: Box<[AtomicU64]>,
    /// `evtchn_mask`: one bit per port. Free and reserved ports are masked.
    mask: Box<[AtomicU64]>,
    pub(crate) signal: CachePadded<Signal>,
    stats: CachePadded<Stats>,
    /// The thread of the current waiter; locked only to register a new
    /// thread and by a sender that claimed a wake.
    thread: Mutex<Option<Thread>>,
    /// Incarnation that owns the waiter, 0 if none.
    waiter_owner: AtomicU64,
    /// Ports with a thread of their own (module docs, Direct ports).
    direct: Box<[AtomicU64]>,
    /// Their threads, with the token of the registration.
    direct_threads: Mutex<HashMap<u32, (Thread, u64)>>,
    /// Source of registration tokens.
    direct_tokens: AtomicU64,
}

/// A pinned port (see `registry.rs`, "Pins"): its binding cannot change
/// until the pin is dropped.
#[derive(Debug)]
pub(crate) struct Pin<'a> {
    word: &'a AtomicU64,
    /// The binding at the moment of pinning, stable while pinned.
    pub(crate) state: PortState,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        // Release: pairs with the Acquire load of `drain`, so a control
        // operation that waited for the pins sees everything this operation
        // did (e.g. a pending bit it set) and clears it afterwards.
        self.word.fetch_sub(PIN, Release);
    }
}

impl DomainSlot {
    /// A dead slot with room for `cap` ports: every port free and masked,
    /// port 0 reserved.
    pub(crate) fn new(dom: DomId, cap: u32) -> Self {
        let words = cap.div_ceil(64) as usize;
        Self {
            dom,
            incarnation: AtomicU64::new(0),
            max_ports: AtomicU32::new(0),
            active: AtomicU32::new(0),
            ports: (0..cap)
                .map(|p| {
                    let s = if p == 0 {
                        PortState::Reserved
                    } else {
                        PortState::Closed
                    };
                    AtomicU64::new(s.encode())
                })
                .collect(),
            pending: (0..words).map(|_| AtomicU64::new(0)).collect(),
            mask: (0..words).map(|_| AtomicU64::new(u64::MAX)).collect(),
            signal: CachePadded::new(Signal {
                sel: AtomicU64::new(0),
                sleeping: AtomicBool::new(false),
                kick: AtomicU64::new(0),
            }),
            stats: CachePadded::new(Stats::default()),
            thread: Mutex::new(None),
            waiter_owner: AtomicU64::new(0),
            direct: (0..words).map(|_| AtomicU64::new(0)).collect(),
            direct_threads: Mutex::new(HashMap::new()),
            direct_tokens: AtomicU64::new(0),
        }
    }

    // --- life -----------------------------------------------------------

    /// Current incarnation (odd: the domain exists).
    #[inline]
    pub(crate) fn incarnation(&self) -> u64 {
        // Acquire: pairs with the Release of `revive`, so the new
        // incarnation's port limit and counters are visible.
        self.incarnation.load(Acquire)
    }

    #[inline]
    pub(crate) fn is_alive(&self) -> bool {
        self.incarnation() & 1 == 1
    }

    /// Control: start a new incarnation with `max_ports` ports. All ports
    /// are free (the previous incarnation was reset when it was removed).
    pub(crate) fn revive(&self, max_ports: u32) {
        self.max_ports.store(max_ports, Relaxed);
        self.active.store(0, Relaxed);
        for c in [
            &self.stats.sends,
            &self.stats.coalesced,
            &self.stats.deliveries,
            &self.stats.spurious,
        ] {
            c.store(0, Relaxed);
        }
        // Release: publishes the stores above to `incarnation()` readers.
        self.incarnation.fetch_add(1, Release);
    }

    /// Control: end the incarnation (after its ports were closed) and wake
    /// its waiter, which then reports `NoSuchDomain`.
    pub(crate) fn kill(&self) {
        self.incarnation.fetch_add(1, SeqCst);
        self.kick();
        // Direct threads of the dead incarnation: woken (they find the
        // domain gone) and forgotten.
        let threads = std::mem::take(&mut *lock(&self.direct_threads));
        for d in self.direct.iter() {
            d.store(0, SeqCst);
        }
        for (t, _) in threads.values() {
            t.unpark();
        }
    }

    /// Port limit of the current incarnation.
    #[inline]
    pub(crate) fn max_ports(&self) -> u32 {
        self.max_ports.load(Relaxed)
    }

    // --- port table -------------------------------------------------------

    /// The state word of a port below the limit (port 0 included).
    #[inline]
    fn word(&self, port: Port) -> Result<&AtomicU64, EvtchnError> {
        if port.0 >= self.max_ports() {
            return Err(EvtchnError::InvalidPort(port));
        }
        self.ports
            .get(port.0 as usize)
            .ok_or(EvtchnError::InvalidPort(port))
    }

    /// Current state of a port (port 0: `Reserved`).
    #[inline]
    pub(crate) fn state(&self, port: Port) -> Result<PortState, EvtchnError> {
        // Acquire: pairs with P1 of `publish` / `set_state` (E7): a reader
        // that sees a binding also sees the entry's initialised bits.
        Ok(PortState::decode(self.word(port)?.load(Acquire)))
    }

    /// Pins a guest-usable port (`1..max_ports`) and returns its binding.
    #[inline]
    pub(crate) fn pin(&self, port: Port) -> Result<Pin<'_>, EvtchnError> {
        if port.0 == 0 {
            return Err(EvtchnError::InvalidPort(port));
        }
        let word = self.word(port)?;
        // Acquire: pairs with P1 (Release) of the control operation that
        // wrote this binding, so the remote port it names is initialised.
        let old = word.fetch_add(PIN, Acquire);
        let pin = Pin {
            word,
            state: PortState::decode(old),
        };
        if pins(old) >= PIN_LIMIT {
            return Err(EvtchnError::Busy);
        }
        Ok(pin)
    }

    /// Control: lowest free port in `1..max_ports`.
    pub(crate) fn find_free(&self) -> Option<u32> {
        let limit = self.max_ports().min(self.ports.len() as u32);
        // Relaxed: the kind bits change only under the control lock, which
        // the caller holds.
        (1..limit).find(|&p| {
            self.ports
                .get(p as usize)
                .is_some_and(|w| PortState::decode(w.load(Relaxed)) == PortState::Closed)
        })
    }

    /// Control: initialise the free port `port` and publish it as `state`
    /// (SECURITY.md E7: the entry is complete before anyone can see it).
    pub(crate) fn publish(&self, port: u32, state: PortState) {
        let (w, bit) = word_bit(port);
        // A new port starts not pending and unmasked. Relaxed: nobody can
        // touch these bits of a free port (operations on it are refused,
        // and no binding names it); P1 publishes them.
        if let (Some(p), Some(m)) = (self.pending.get(w), self.mask.get(w)) {
            p.fetch_and(!bit, Relaxed);
            m.fetch_and(!bit, Relaxed);
        }
        self.set_state(port, state);
        // P2, Release, after the entry: a reader that sees the count
        // (`active_ports`, Acquire) sees the entry.
        self.active.fetch_add(1, Release);
    }

    /// Control: replace the binding of `port`, keeping its pin count.
    pub(crate) fn set_state(&self, port: u32, state: PortState) {
        if let Some(word) = self.ports.get(port as usize) {
            // P1, Release: pairs with the Acquire of `pin` and `state`.
            let _ = word.fetch_update(Release, Relaxed, |old| Some(rebind(old, state)));
        }
    }

    /// Control: wait until no operation pins `port` (they are short and
    /// never block on the control lock, so this ends).
    pub(crate) fn drain(&self, port: u32) {
        if let Some(word) = self.ports.get(port as usize) {
            // Acquire: pairs with the Release of `Pin::drop`.
            while pins(word.load(Acquire)) != 0 {
                yield_now();
            }
        }
    }

    /// Control: the last step of freeing a drained port: clear its pending
    /// bit (spec §2.2 close) and mask it, then drop it from the count.
    pub(crate) fn retire(&self, port: u32) {
        let (w, bit) = word_bit(port);
        if let (Some(p), Some(m)) = (self.pending.get(w), self.mask.get(w)) {
            m.fetch_or(bit, Relaxed);
            p.fetch_and(!bit, Relaxed);
        }
        // A reused port number starts without a thread of its own.
        if lock(&self.direct_threads).remove(&port).is_some()
            && let Some(d) = self.direct.get(w)
        {
            d.fetch_and(!bit, SeqCst);
        }
        self.active.fetch_sub(1, Release);
    }

    /// Allocated ports (`Acquire`: pairs with P2).
    pub(crate) fn active(&self) -> u32 {
        self.active.load(Acquire)
    }

    // --- 2-level bitmaps ----------------------------------------------------

    /// Set-pending (spec §3.2). Returns true if the send was coalesced.
    #[inline]
    pub(crate) fn raise(&self, port: u32) -> bool {
        let (w, bit) = word_bit(port);
        let (Some(pending), Some(mask)) = (self.pending.get(w), self.mask.get(w)) else {
            return false;
        };
        // S0 (module docs).
        if pending.fetch_or(bit, SeqCst) & bit != 0 {
            return true;
        }
        dekker_fence();
        // S1: pairs with U0 of `unmask`.
        if mask.load(SeqCst) & bit != 0 {
            return false;
        }
        self.deliver(port);
        false
    }

    /// Delivers a newly pending, unmasked port: to its own thread (D0:
    /// module docs, Direct ports) or to the domain's waiter (S2, S3).
    fn deliver(&self, port: u32) {
        let (w, bit) = word_bit(port);
        if self
            .direct
            .get(w)
            .is_some_and(|d| d.load(SeqCst) & bit != 0)
        {
            if let Some((t, _)) = lock(&self.direct_threads).get(&port) {
                t.unpark();
            }
            return;
        }
        // S2: pairs with W2 / T0.
        self.signal.sel.fetch_or(1 << w, SeqCst);
        self.wake();
    }

    /// Gives `port` a thread of its own, `t` (replacing any other): its
    /// events unpark `t` and are taken with [`DomainSlot::take_port`].
    /// Returns the registration's token for [`DomainSlot::clear_direct`].
    pub(crate) fn set_direct(&self, port: u32, t: Thread) -> u64 {
        let (w, bit) = word_bit(port);
        let token = self.direct_tokens.fetch_add(1, Relaxed) + 1;
        lock(&self.direct_threads).insert(port, (t, token));
        if let Some(d) = self.direct.get(w) {
            // R0: pairs with D0; the thread's next `take_port` (SeqCst
            // loads) is the other half.
            d.fetch_or(bit, SeqCst);
        }
        dekker_fence();
        token
    }

    /// Ends registration `token` of `port` (a later one stays): its events
    /// go to the domain's waiter again, starting with one still pending.
    pub(crate) fn clear_direct(&self, port: u32, token: u64) {
        let (w, bit) = word_bit(port);
        {
            let mut g = lock(&self.direct_threads);
            if g.get(&port).is_none_or(|(_, t)| *t != token) {
                return;
            }
            g.remove(&port);
            if let Some(d) = self.direct.get(w) {
                // C0: pairs with D0.
                d.fetch_and(!bit, SeqCst);
            }
        }
        dekker_fence();
        // C1: an event the direct thread did not take.
        if self.ready_port(port) {
            self.deliver(port);
        }
    }

    /// S3: unparks the waiter if it sleeps (module docs).
    #[inline]
    pub(crate) fn wake(&self) {
        dekker_fence();
        let sleeping = &self.signal.sleeping;
        if sleeping.load(SeqCst)
            && sleeping.swap(false, SeqCst)
            && let Some(t) = lock(&self.thread).as_ref()
        {
            t.unpark();
        }
    }

    /// K0: tells the waiter that port states changed, and wakes it.
    pub(crate) fn kick(&self) {
        self.signal.kick.fetch_add(1, SeqCst);
        self.wake();
    }

    /// Masks a port (the caller pinned it).
    pub(crate) fn set_mask(&self, port: u32) {
        let (w, bit) = word_bit(port);
        if let Some(m) = self.mask.get(w) {
            m.fetch_or(bit, SeqCst);
        }
    }

    /// `EVTCHNOP_unmask` (spec §3.3): clear the mask and, if the port is
    /// pending, deliver it now (the caller pinned the port).
    pub(crate) fn unmask(&self, port: u32) {
        let (w, bit) = word_bit(port);
        let (Some(pending), Some(mask)) = (self.pending.get(w), self.mask.get(w)) else {
            return;
        };
        // U0: pairs with S1.
        if mask.fetch_and(!bit, SeqCst) & bit == 0 {
            return; // was not masked: nothing latched behind the mask
        }
        dekker_fence();
        // U1: pairs with S0.
        if pending.load(SeqCst) & bit == 0 {
            return;
        }
        self.deliver(port);
    }

    /// The port's pending bit.
    pub(crate) fn is_pending(&self, port: u32) -> bool {
        let (w, bit) = word_bit(port);
        self.pending
            .get(w)
            .is_some_and(|p| p.load(Relaxed) & bit != 0)
    }

    /// The port's mask bit.
    pub(crate) fn is_masked(&self, port: u32) -> bool {
        let (w, bit) = word_bit(port);
        self.mask.get(w).is_some_and(|m| m.load(Relaxed) & bit != 0)
    }

    /// W2 of `wait`: some word is selected.
    #[inline]
    pub(crate) fn ready_any(&self) -> bool {
        self.signal.sel.load(SeqCst) != 0
    }

    /// W2 of `wait_port`: the port is pending and unmasked.
    #[inline]
    pub(crate) fn ready_port(&self, port: u32) -> bool {
        let (w, bit) = word_bit(port);
        match (self.pending.get(w), self.mask.get(w)) {
            (Some(p), Some(m)) => p.load(SeqCst) & !m.load(SeqCst) & bit != 0,
            _ => false,
        }
    }

    /// The guest upcall handler of spec §3.3: swap the selector with 0 and
    /// take (clear) the pending-and-unmasked ports of the selected words.
    /// Returns the number of ports taken.
    pub(crate) fn take(&self, out: &mut Pending) -> u32 {
        // T0: pairs with S2.
        let mut sel = self.signal.sel.swap(0, Acquire);
        let mut n = 0;
        while sel != 0 {
            let w = sel.trailing_zeros() as usize;
            sel &= sel - 1;
            let (Some(p), Some(m)) = (self.pending.get(w), self.mask.get(w)) else {
                continue;
            };
            // Direct ports' bits are their threads' (a stale view only
            // delivers one here instead, still exactly once).
            let direct = self.direct.get(w).map_or(0, |d| d.load(Relaxed));
            let cand = p.load(Relaxed) & !m.load(Relaxed) & !direct;
            if cand == 0 {
                continue;
            }
            // T1: pairs with S0. Only bits still set are ours (a close may
            // have cleared one meanwhile).
            let got = p.fetch_and(!cand, Acquire) & cand;
            n += out.add_word(w, got);
        }
        if n != 0 {
            self.stats.deliveries.fetch_add(u64::from(n), Relaxed);
        }
        n
    }

    /// Takes one port if it is pending and unmasked (`wait_port`). Leaves
    /// the selector alone, so other ports' events stay for `take`.
    pub(crate) fn take_port(&self, port: u32) -> bool {
        let (w, bit) = word_bit(port);
        let (Some(p), Some(m)) = (self.pending.get(w), self.mask.get(w)) else {
            return false;
        };
        // SeqCst: after R0 of `set_direct`, this must see a raise that
        // missed the registration (module docs, Direct ports).
        if m.load(SeqCst) & bit != 0 || p.load(SeqCst) & bit == 0 {
            return false;
        }
        // T1 for one bit.
        let got = p.fetch_and(!bit, Acquire) & bit != 0;
        if got {
            self.stats.deliveries.fetch_add(1, Relaxed);
        }
        got
    }

    // --- waiter registration and counters -----------------------------------

    /// Makes incarnation `inc` the owner of the domain's waiter.
    pub(crate) fn claim_waiter(&self, inc: u64) -> bool {
        self.waiter_owner
            .fetch_update(AcqRel, Acquire, |o| (o != inc).then_some(inc))
            .is_ok()
    }

    /// Gives the waiter up (if `inc` still owns it).
    pub(crate) fn release_waiter(&self, inc: u64) {
        if self
            .waiter_owner
            .compare_exchange(inc, 0, AcqRel, Relaxed)
            .is_ok()
        {
            *lock(&self.thread) = None;
        }
    }

    /// Registers the thread that `wake` unparks.
    pub(crate) fn register_thread(&self, t: Thread) {
        *lock(&self.thread) = Some(t);
    }

    pub(crate) fn count_send(&self, coalesced: bool) {
        self.stats.sends.fetch_add(1, Relaxed);
        if coalesced {
            self.stats.coalesced.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn count_spurious(&self) {
        self.stats.spurious.fetch_add(1, Relaxed);
    }

    pub(crate) fn counters(&self) -> Counters {
        Counters {
            sends: self.stats.sends.load(Relaxed),
            coalesced: self.stats.coalesced.load(Relaxed),
            deliveries: self.stats.deliveries.load(Relaxed),
            spurious_wakeups: self.stats.spurious.load(Relaxed),
        }
    }
}

/// `Arc` of a slot, as the registry and the waiter hold it.
pub(crate) type SlotRef = Arc<DomainSlot>;
