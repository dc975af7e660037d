//! Back-off against a peer that notifies without giving work
//! (SECURITY.md E3; the lesson of XSA-332/391: an event storm must not
//! cost the receiver unbounded CPU).
//!
//! The event loop of a driver reports after each wakeup whether the event
//! led to real work (e.g. new ring requests). After `threshold`
//! consecutive empty wakeups the guard backs off: it sleeps before the
//! next wait, starting at `initial` and doubling up to `cap`, and the
//! first wakeup with work resets it. While it sleeps, further sends find
//! the port pending and coalesce, so a flood of N sends costs the receiver
//! about `elapsed / cap` wakeups instead of up to N.

use std::time::Duration;

/// Counts spurious wakeups of an event loop and backs off when they
/// persist (module docs).
///
/// ```
/// # use pvio_evtchn::SpuriousGuard;
/// # use std::time::Duration;
/// let mut g = SpuriousGuard::with_limits(2, Duration::from_micros(50), Duration::from_micros(200));
/// assert_eq!(g.record(false), None); // 1st empty wakeup
/// assert_eq!(g.record(false), Some(Duration::from_micros(50))); // back off
/// assert_eq!(g.record(false), Some(Duration::from_micros(100)));
/// assert_eq!(g.record(false), Some(Duration::from_micros(200)));
/// assert_eq!(g.record(false), Some(Duration::from_micros(200))); // capped
/// assert_eq!(g.record(true), None); // work: reset
/// assert_eq!(g.spurious(), 5);
/// ```
#[derive(Clone, Debug)]
pub struct SpuriousGuard {
    threshold: u32,
    initial: Duration,
    cap: Duration,
    /// Consecutive empty wakeups.
    run: u32,
    /// Current back-off (zero: not backing off).
    delay: Duration,
    spurious: u64,
    backoffs: u64,
}

impl Default for SpuriousGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl SpuriousGuard {
    /// Default number of consecutive empty wakeups tolerated.
    pub const DEFAULT_THRESHOLD: u32 = 32;
    /// Default first back-off.
    pub const DEFAULT_INITIAL: Duration = Duration::from_micros(50);
    /// Default back-off cap.
    pub const DEFAULT_CAP: Duration = Duration::from_millis(10);

    /// A guard with the default limits (32 wakeups, 50 µs doubling to
    /// 10 ms).
    pub const fn new() -> Self {
        Self::with_limits(
            Self::DEFAULT_THRESHOLD,
            Self::DEFAULT_INITIAL,
            Self::DEFAULT_CAP,
        )
    }

    /// A guard that backs off after `threshold` consecutive empty wakeups
    /// (at least 1), sleeping `initial` first and doubling up to `cap`
    /// (`initial` is raised to 1 µs and `cap` to `initial` if smaller).
    pub const fn with_limits(threshold: u32, initial: Duration, cap: Duration) -> Self {
        let threshold = if threshold == 0 { 1 } else { threshold };
        let initial = if initial.is_zero() {
            Duration::from_micros(1)
        } else {
            initial
        };
        let cap = if cap.as_nanos() < initial.as_nanos() {
            initial
        } else {
            cap
        };
        Self {
            threshold,
            initial,
            cap,
            run: 0,
            delay: Duration::ZERO,
            spurious: 0,
            backoffs: 0,
        }
    }

    /// Records one wakeup; `found_work` says whether it led to real work.
    /// Returns how long to back off before waiting again, if at all. Does
    /// not sleep (see [`after_wakeup`](Self::after_wakeup)).
    pub fn record(&mut self, found_work: bool) -> Option<Duration> {
        if found_work {
            self.run = 0;
            self.delay = Duration::ZERO;
            return None;
        }
        self.spurious += 1;
        self.run = self.run.saturating_add(1);
        if self.run < self.threshold {
            return None;
        }
        self.delay = if self.delay.is_zero() {
            self.initial
        } else {
            self.delay.saturating_mul(2).min(self.cap)
        };
        self.backoffs += 1;
        Some(self.delay)
    }

    /// [`record`](Self::record), then sleeps the back-off if there is one.
    pub fn after_wakeup(&mut self, found_work: bool) {
        if let Some(d) = self.record(found_work) {
            std::thread::sleep(d);
        }
    }

    /// Wakeups reported without work, in total.
    pub fn spurious(&self) -> u64 {
        self.spurious
    }

    /// Back-off sleeps requested, in total.
    pub fn backoffs(&self) -> u64 {
        self.backoffs
    }

    /// The current back-off (zero when not backing off).
    pub fn current_delay(&self) -> Duration {
        self.delay
    }

    /// True while consecutive empty wakeups have reached the threshold.
    pub fn is_backing_off(&self) -> bool {
        !self.delay.is_zero()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut g =
            SpuriousGuard::with_limits(3, Duration::from_millis(1), Duration::from_millis(5));
        assert_eq!(g.record(false), None);
        assert_eq!(g.record(false), None);
        let d: Vec<_> = (0..5)
            .map(|_| g.record(false).unwrap().as_millis())
            .collect();
        assert_eq!(d, [1, 2, 4, 5, 5]);
        assert!(g.is_backing_off());
        assert_eq!(g.record(true), None);
        assert!(!g.is_backing_off());
        assert_eq!(g.record(false), None);
        assert_eq!((g.spurious(), g.backoffs()), (8, 5));
    }

    #[test]
    fn limits_are_sanitised() {
        let mut g = SpuriousGuard::with_limits(0, Duration::ZERO, Duration::ZERO);
        assert_eq!(g.record(false), Some(Duration::from_micros(1)));
        assert_eq!(g.record(false), Some(Duration::from_micros(1)));
    }
}
