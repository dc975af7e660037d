//! Per-port waiting for drivers: a domain's single event-channel
//! [`Waiter`](pvio_evtchn::Waiter) is owned by a dispatcher thread that
//! hands each pending port to the thread waiting on it, so several drivers
//! (devices, queues) of one domain each wait on their own port.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{Thread, ThreadId};
use std::time::{Duration, Instant};

use pvio_abi::{DomId, Port};
use pvio_evtchn::{EventChannels, EvtchnError};

use crate::domain::domain_lock;
use crate::hosted::remote::RemoteDomain;

/// One port's mailbox.
#[derive(Debug, Default)]
struct Slot {
    pending: AtomicBool,
    gone: AtomicBool,
    thread: Mutex<Option<Thread>>,
}

impl Slot {
    fn wake(&self) {
        if let Some(t) = domain_lock(&self.thread).as_ref() {
            t.unpark();
        }
    }
}

/// The per-domain dispatcher.
#[derive(Debug, Default)]
pub(crate) struct Dispatch {
    slots: Mutex<HashMap<u32, Arc<Slot>>>,
    started: OnceLock<()>,
    /// The embedded dispatcher thread, joined when the hypervisor goes.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Dispatch {
    fn slot(&self, port: Port) -> Arc<Slot> {
        domain_lock(&self.slots).entry(port.0).or_default().clone()
    }

    /// Starts the dispatcher thread (once): it takes the domain's waiter and
    /// runs until the domain is removed.
    fn start(self: &Arc<Self>, evtchn: &EventChannels, dom: DomId) -> Result<(), EvtchnError> {
        if self.started.get().is_some() {
            return Ok(());
        }
        let mut waiter = evtchn.waiter(dom)?;
        if self.started.set(()).is_err() {
            return Ok(());
        }
        let me = self.clone();
        let t = std::thread::Builder::new()
            .name(format!("pvio-evtchn-dom{}", dom.0))
            .spawn(move || {
                while let Ok(pending) = waiter.wait(Duration::from_millis(200)) {
                    for port in pending.iter() {
                        me.deliver(port);
                    }
                }
                me.finish();
            })
            .map_err(|_| EvtchnError::Busy)?;
        *domain_lock(&self.thread) = Some(t);
        Ok(())
    }

    /// Waits for the embedded dispatcher thread to end (its domain's event
    /// channels must be gone, or it never does); not from that thread.
    pub(crate) fn join(&self) {
        let t = domain_lock(&self.thread).take();
        if let Some(t) = t
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
        }
    }

    /// Starts the dispatcher thread of a hosted domain (once).
    fn start_remote(self: &Arc<Self>, remote: &Arc<RemoteDomain>) -> Result<(), EvtchnError> {
        if self.started.set(()).is_err() {
            return Ok(());
        }
        let (me, r) = (self.clone(), remote.clone());
        std::thread::Builder::new()
            .name(format!("pvio-evtchn-dom{}", r.id.0))
            .spawn(move || r.run_dispatcher(me))
            .map_err(|_| EvtchnError::Busy)?;
        Ok(())
    }

    /// Hands an event on `port` to the thread waiting on it.
    pub(crate) fn deliver(&self, port: Port) {
        if let Some(s) = domain_lock(&self.slots).get(&port.0) {
            s.pending.store(true, Ordering::Release);
            s.wake();
        }
    }

    /// The domain is gone: every waiter fails from now on.
    pub(crate) fn finish(&self) {
        for s in domain_lock(&self.slots).values() {
            s.gone.store(true, Ordering::Release);
            s.wake();
        }
    }
}

/// Waits for events on one port of a domain (see the module docs).
///
/// In an embedded domain the port is made *direct* for the thread that
/// waits ([`EventChannels::set_direct`]): an event unparks that thread
/// itself, one wake-up instead of two (the dispatcher's, then the
/// thread's). The dispatcher still serves the domain's other ports, and
/// reports the domain's end.
#[derive(Debug)]
pub struct PortWaiter {
    slot: Arc<Slot>,
    port: Port,
    direct: Option<Direct>,
}

/// The direct registration of an embedded domain's port.
#[derive(Debug)]
struct Direct {
    evtchn: EventChannels,
    dom: DomId,
    /// The registered thread and the registration's token.
    reg: Mutex<Option<(ThreadId, u64)>>,
}

impl Drop for PortWaiter {
    fn drop(&mut self) {
        if let Some(d) = &self.direct
            && let Some((_, token)) = domain_lock(&d.reg).take()
        {
            d.evtchn.clear_direct(d.dom, self.port, token);
        }
    }
}

impl PortWaiter {
    pub(crate) fn new(
        dispatch: &Arc<Dispatch>,
        evtchn: &EventChannels,
        dom: DomId,
        port: Port,
    ) -> Result<Self, EvtchnError> {
        let slot = dispatch.slot(port);
        dispatch.start(evtchn, dom)?;
        Ok(PortWaiter {
            slot,
            port,
            direct: Some(Direct {
                evtchn: evtchn.clone(),
                dom,
                reg: Mutex::new(None),
            }),
        })
    }

    pub(crate) fn new_remote(
        dispatch: &Arc<Dispatch>,
        remote: &Arc<RemoteDomain>,
        port: Port,
    ) -> Result<Self, EvtchnError> {
        let slot = dispatch.slot(port);
        dispatch.start_remote(remote)?;
        Ok(PortWaiter {
            slot,
            port,
            direct: None,
        })
    }

    /// The port.
    pub fn port(&self) -> Port {
        self.port
    }

    /// Makes the calling thread the one an event on this port unparks (as
    /// [`PortWaiter::wait`] does), so that it can sleep in
    /// [`std::thread::park_timeout`] for this port and for other wake-ups
    /// (its own `unpark`s) at once, then ask [`PortWaiter::try_take`] and
    /// [`PortWaiter::is_gone`] what came.
    pub fn register(&self) {
        let me = std::thread::current();
        if let Some(d) = &self.direct {
            let mut reg = domain_lock(&d.reg);
            if reg.is_none_or(|(t, _)| t != me.id()) {
                // A port that cannot be direct (closed meanwhile) keeps
                // the dispatcher's path.
                *reg = d
                    .evtchn
                    .set_direct(d.dom, self.port)
                    .ok()
                    .map(|k| (me.id(), k));
            }
        }
        *domain_lock(&self.slot.thread) = Some(me);
    }

    /// Whether the domain is gone (every wait fails from now on).
    pub fn is_gone(&self) -> bool {
        self.slot.gone.load(Ordering::Acquire)
    }

    /// Takes a pending event without blocking.
    pub fn try_take(&self) -> bool {
        // Both: an event may have come either way (before the port became
        // direct, or a dispatcher's stale view).
        let direct = self
            .direct
            .as_ref()
            .is_some_and(|d| d.evtchn.take_port(d.dom, self.port).unwrap_or(false));
        self.slot.pending.swap(false, Ordering::AcqRel) | direct
    }

    /// Waits up to `timeout` for an event on the port (first polling it for
    /// `spin`, which saves two thread wakeups when events come back to back).
    /// `Ok(true)`: an event arrived (taken); `Ok(false)`: timeout;
    /// `Err(NoSuchDomain)` once the domain is gone.
    pub fn wait(&self, spin: Duration, timeout: Duration) -> Result<bool, EvtchnError> {
        let start = Instant::now();
        self.register();
        loop {
            if self.try_take() {
                return Ok(true);
            }
            if self.slot.gone.load(Ordering::Acquire) {
                return Err(EvtchnError::NoSuchDomain(DomId(0)));
            }
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                return Ok(false);
            }
            if elapsed < spin {
                std::hint::spin_loop();
            } else {
                std::thread::park_timeout(timeout - elapsed);
            }
        }
    }
}

/// The first part of a poll spins without yielding.
const PURE_SPIN: Duration = Duration::from_micros(5);

/// One step of a driver thread's poll before it sleeps, which began
/// `polled` ago: false once it has polled for `window`; otherwise a few
/// microseconds of pure spinning, then a yield per step (the peer, or a
/// thread that must wake it, may share this CPU and must not queue behind
/// the poller; a yield is also a system call, on whose way back io_uring
/// posts completions).
#[inline]
pub fn poll_step(polled: Duration, window: Duration) -> bool {
    if polled >= window {
        return false;
    }
    if polled < PURE_SPIN {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
    true
}

/// How long a driver thread polls before it sleeps, adapted like KVM's halt
/// polling. A wait that, after the poll missed, still ended with what it
/// waited for within `max` means a longer poll would have caught it without
/// the thread wake-ups of an event (each a scheduler slice on a busy vCPU):
/// the window doubles, up to `max`. Otherwise events come too rarely for
/// polling to pay: the window halves, down to `base`.
///
/// A fixed window is bistable where wake-ups cost tens of µs (small or
/// overcommitted VMs): once one side sleeps, the other's next message comes
/// later than the window, so both sleep and every message pays the
/// wake-ups.
#[derive(Debug, Clone, Copy)]
pub struct PollWindow {
    window: Duration,
    base: Duration,
    max: Duration,
}

impl PollWindow {
    /// A window starting at `base`, adapted between `base` and `max` (a
    /// zero `base` never polls).
    pub fn new(base: Duration, max: Duration) -> Self {
        PollWindow {
            window: base,
            base,
            max: max.max(base),
        }
    }

    /// The current window.
    #[inline]
    pub fn window(&self) -> Duration {
        self.window
    }

    /// [`poll_step`] with the current window.
    #[inline]
    pub fn step(&self, polled: Duration) -> bool {
        poll_step(polled, self.window)
    }

    /// The thread polled for the whole window, slept, and woke `waited`
    /// after it began to wait, with what it waited for
    /// (`woke_with_work`) or not: adapt the window.
    pub fn slept(&mut self, waited: Duration, woke_with_work: bool) {
        self.window = if woke_with_work && waited <= self.max {
            (self.window * 2).min(self.max)
        } else {
            (self.window / 2).max(self.base)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_window_grows_on_short_waits_and_shrinks_on_long_ones() {
        const BASE: Duration = Duration::from_micros(50);
        const MAX: Duration = Duration::from_micros(500);
        let mut p = PollWindow::new(BASE, MAX);
        assert_eq!(p.window(), BASE);
        // Woken with work soon after going idle: poll longer next time.
        p.slept(Duration::from_micros(80), true);
        assert_eq!(p.window(), BASE * 2);
        for _ in 0..10 {
            p.slept(Duration::from_micros(300), true);
        }
        assert_eq!(p.window(), MAX);
        // A timeout, or work long after: back towards the base.
        p.slept(Duration::from_millis(20), false);
        assert_eq!(p.window(), MAX / 2);
        p.slept(Duration::from_millis(2), true);
        assert_eq!(p.window(), MAX / 4);
        for _ in 0..10 {
            p.slept(Duration::from_millis(20), false);
        }
        assert_eq!(p.window(), BASE);
        // Work, but long after the thread went idle, shrinks it too.
        let mut q = PollWindow::new(BASE, MAX);
        for _ in 0..10 {
            q.slept(Duration::from_micros(300), true);
        }
        assert_eq!(q.window(), MAX);
        for _ in 0..10 {
            q.slept(Duration::from_millis(2), true);
        }
        assert_eq!(q.window(), BASE);
        // A zero base never polls; a base over the maximum stays.
        let mut z = PollWindow::new(Duration::ZERO, MAX);
        z.slept(Duration::from_micros(10), true);
        assert_eq!(z.window(), Duration::ZERO);
        let mut b = PollWindow::new(MAX * 2, MAX);
        b.slept(Duration::from_micros(10), true);
        assert_eq!(b.window(), MAX * 2);
    }

    #[test]
    fn poll_step_ends_with_the_window() {
        assert!(!poll_step(
            Duration::from_micros(50),
            Duration::from_micros(50)
        ));
        assert!(poll_step(Duration::ZERO, Duration::from_micros(50)));
        assert!(poll_step(
            Duration::from_micros(20),
            Duration::from_micros(50)
        ));
    }
}
