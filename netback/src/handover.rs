//! Who writes a queue's packets into its RX ring: whoever finds the ring
//! free (a thread delivering packets, or the RX thread), with a backlog for
//! the rest. The netif specifics (what fits, the grant copies, the limits)
//! are the caller's; this module is the locking protocol, generic so that
//! a loom model (below) checks it with a stand-in ring.
//!
//! The rules:
//!
//! * The ring is taken with `try_lock` by deliverers (they never wait for
//!   it) and with `lock` by the RX thread. Packets reach the ring only
//!   under its lock, from the backlog's head or, while the backlog is
//!   empty, straight from a deliverer: a queue's packets reach the ring in
//!   order. Lock order: the ring, then the backlog.
//! * A deliverer that finds the ring held queues its packets, then tries
//!   once more. Every holder looks at the backlog again after letting go
//!   (before it returns, or sleeps waiting for packets; the RX thread
//!   waiting for the frontend's buffers has the backlog's head in hand and
//!   needs no look), and writes what it finds if the ring is free. The backlog lock orders that look after the queueing: whoever
//!   held the ring at the second try lets go after the packets were queued,
//!   so it sees them. No packet is left queued with nobody to write it
//!   unless somebody was told so ([`Next::Kick`]).

#[cfg(not(feature = "loom"))]
use std::sync::{Mutex, MutexGuard, TryLockError};

#[cfg(feature = "loom")]
use loom::sync::{Mutex, MutexGuard};
#[cfg(feature = "loom")]
use std::sync::TryLockError;

/// The lock around a backlog, as [`Handover::deliver`]'s `holding` gets it.
pub(crate) type BacklogLock<B> = Mutex<B>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A backlog the protocol can ask whether it holds anything.
pub(crate) trait Queue {
    fn is_empty(&self) -> bool;
}

/// What a holder of the ring did, for [`Handover::deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Let go, and look at the backlog again.
    Look,
    /// Packets stay queued that this deliverer does not write (no buffers
    /// for the head, a budget spent, a packet left to the RX thread): the
    /// RX thread must be kicked.
    Kick,
    /// The ring is gone or broken (the vif is going): nothing to write.
    Stop,
}

/// One queue's ring (`None` once its RX thread has ended) and backlog.
#[derive(Debug)]
pub(crate) struct Handover<R, B> {
    ring: Mutex<Option<R>>,
    backlog: Mutex<B>,
}

impl<R, B: Queue> Handover<R, B> {
    pub(crate) fn new(ring: R, backlog: B) -> Self {
        Handover {
            ring: Mutex::new(Some(ring)),
            backlog: Mutex::new(backlog),
        }
    }

    /// The ring, waiting for it (the RX thread).
    pub(crate) fn ring(&self) -> MutexGuard<'_, Option<R>> {
        lock(&self.ring)
    }

    /// The backlog (after the ring, if both are held).
    pub(crate) fn backlog(&self) -> MutexGuard<'_, B> {
        lock(&self.backlog)
    }

    /// The backlog's lock, for code that takes it itself (with the ring).
    pub(crate) fn backlog_lock(&self) -> &BacklogLock<B> {
        &self.backlog
    }

    /// The deliverer's side. `own`: this caller's packets, in order.
    /// `queue` appends packets to the backlog (what does not fit is its to
    /// drop). `holding` runs with the ring held (`None` if it is gone):
    /// it must leave `own` empty — written (only while the backlog is
    /// empty), queued through the backlog it is given, or dropped — and may
    /// write from the backlog. Returns whether the RX thread must be kicked.
    pub(crate) fn deliver<T>(
        &self,
        mut own: Vec<T>,
        mut queue: impl FnMut(&mut B, Vec<T>),
        mut holding: impl FnMut(Option<&mut R>, &Mutex<B>, &mut Vec<T>) -> Next,
    ) -> bool {
        loop {
            let mut g = match self.ring.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                Err(TryLockError::WouldBlock) if !own.is_empty() => {
                    // Queue them, then try once more (the module's rules).
                    queue(&mut lock(&self.backlog), std::mem::take(&mut own));
                    continue;
                }
                Err(TryLockError::WouldBlock) => return false,
            };
            let next = holding(g.as_mut(), &self.backlog, &mut own);
            debug_assert!(own.is_empty());
            drop(g);
            match next {
                Next::Look => {}
                Next::Kick => return true,
                Next::Stop => return false,
            }
            // Packets queued while the ring was held are this thread's to
            // write (their deliverers found it taken).
            if lock(&self.backlog).is_empty() {
                return false;
            }
        }
    }
}

/// Locks a backlog handed to [`Handover::deliver`]'s `holding`.
pub(crate) fn lock_backlog<B>(m: &Mutex<B>) -> MutexGuard<'_, B> {
    lock(m)
}

#[cfg(all(test, feature = "loom"))]
mod loom_model {
    //! `cargo test -p pvio-netback --features loom --release --lib handover`
    use std::collections::VecDeque;

    use loom::sync::Arc;

    use super::*;

    impl Queue for VecDeque<u32> {
        fn is_empty(&self) -> bool {
            VecDeque::is_empty(self)
        }
    }

    type H = Handover<Vec<u32>, VecDeque<u32>>;

    /// A deliverer as netback's: its own packets straight to the ring
    /// while nothing is queued, else queued; then everything queued.
    fn deliver(h: &H, own: Vec<u32>) -> bool {
        h.deliver(
            own,
            |b, items| b.extend(items),
            |ring, backlog, own| {
                let ring = ring.expect("ring");
                let mut b = lock_backlog(backlog);
                if b.is_empty() {
                    ring.append(own);
                } else {
                    b.extend(own.drain(..));
                }
                ring.extend(b.drain(..));
                Next::Look
            },
        )
    }

    /// Each sender's packets, in the order sent, and nothing else.
    fn check(written: &[u32], senders: &[&[u32]]) {
        for s in senders {
            let got: Vec<u32> = written.iter().copied().filter(|x| s.contains(x)).collect();
            assert_eq!(&got, s);
        }
        assert_eq!(
            written.len(),
            senders.iter().map(|s| s.len()).sum::<usize>()
        );
    }

    /// Two deliverers, no RX thread: once both have returned without a
    /// kick, every packet is on the ring, each sender's in order. (The
    /// first version queued after a failed `try_lock` without trying
    /// again: a holder that had already looked at the backlog left the
    /// packets there.)
    #[test]
    fn deliverers_strand_nothing() {
        loom::model(|| {
            let h: Arc<H> = Arc::new(Handover::new(Vec::new(), VecDeque::new()));
            let t = {
                let h = h.clone();
                loom::thread::spawn(move || deliver(&h, vec![1, 2]))
            };
            let k2 = deliver(&h, vec![3]);
            let k1 = t.join().unwrap();
            assert!(!k1 && !k2, "nothing is left to the RX thread here");
            assert!(h.backlog().is_empty(), "a packet was left queued");
            check(h.ring().as_ref().unwrap(), &[&[1, 2], &[3]]);
        });
    }

    /// A deliverer and the RX thread (which takes the ring with `lock` and,
    /// like `RxWorker::serve`, looks at the backlog after letting go): the
    /// deliverer may find the ring held by it, and nothing is stranded.
    #[test]
    fn deliverer_and_rx_thread_strand_nothing() {
        loom::model(|| {
            let h: Arc<H> = Arc::new(Handover::new(Vec::new(), VecDeque::new()));
            h.backlog().push_back(1);
            let rx = {
                let h = h.clone();
                loom::thread::spawn(move || {
                    loop {
                        if h.backlog().is_empty() {
                            break; // the look before sleeping
                        }
                        let mut g = h.ring();
                        let ring = g.as_mut().unwrap();
                        ring.extend(h.backlog().drain(..));
                    }
                })
            };
            let kick = deliver(&h, vec![2, 3]);
            rx.join().unwrap();
            assert!(!kick);
            assert!(h.backlog().is_empty(), "a packet was left queued");
            check(h.ring().as_ref().unwrap(), &[&[1, 2, 3]]);
        });
    }
}
