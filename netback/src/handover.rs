//! Who writes a queue's packets into its RX ring: whoever finds the ring
//! free (a thread delivering packets, or the RX thread), with a backlog for
//! the rest. The netif specifics (what fits, the grant copies, the limits)
//! are the caller's; this module is the locking protocol, generic so that
//! a loom model (below) checks it with a stand-in ring.
//!
//! The rules (Linux's qdisc run has the same shape):
//!
//! * A deliverer queues its packets, then tries to take the ring with
//!   `try_lock` (it never waits for it); the RX thread takes it with
//!   `lock`. Packets reach the ring only from the backlog's head, under the
//!   ring's lock, so a queue's packets reach the ring in order. Lock
//!   order: the ring, then the backlog.
//! * Every holder looks at the backlog again after letting go (before it
//!   returns, or sleeps waiting for packets; the RX thread waiting for the
//!   frontend's buffers has the backlog's head in hand and needs no look),
//!   and writes what it finds if the ring is free. The backlog lock orders
//!   that look after the queueing: a deliverer whose `try_lock` failed
//!   queued before it, so the holder at that moment lets go after the
//!   packets were queued and sees them. No packet is left queued with
//!   nobody to write it unless somebody was told so ([`Next::Kick`]).

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

    /// The deliverer's side: `queue` adds this caller's packets to the
    /// backlog (what does not fit is its to drop), then `holding` runs each
    /// time the ring is taken (`None` if it is gone) and writes from the
    /// backlog. Returns whether the RX thread must be kicked.
    pub(crate) fn deliver(
        &self,
        queue: impl FnOnce(&mut B),
        mut holding: impl FnMut(Option<&mut R>, &Mutex<B>) -> Next,
    ) -> bool {
        queue(&mut lock(&self.backlog));
        loop {
            let mut g = match self.ring.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                // The holder looks at the backlog after letting go.
                Err(TryLockError::WouldBlock) => return false,
            };
            let next = holding(g.as_mut(), &self.backlog);
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
    use loom::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    impl Queue for VecDeque<u32> {
        fn is_empty(&self) -> bool {
            VecDeque::is_empty(self)
        }
    }

    /// The stand-in ring: what was written, in order. Writing is a
    /// visible step (the grant copies and the response, after the backlog
    /// is let go and before the ring is), so other threads can run there.
    #[derive(Default)]
    struct Ring {
        written: Vec<u32>,
        published: AtomicUsize,
    }

    impl Ring {
        fn write(&mut self, batch: Vec<u32>) {
            self.published.fetch_add(batch.len(), Ordering::SeqCst);
            self.written.extend(batch);
        }
    }

    type H = Handover<Ring, VecDeque<u32>>;

    /// A deliverer as netback's: queue, then write everything queued.
    fn deliver(h: &H, own: Vec<u32>) -> bool {
        h.deliver(
            |b| b.extend(own),
            |ring, backlog| {
                let batch: Vec<u32> = lock_backlog(backlog).drain(..).collect();
                ring.expect("ring").write(batch);
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
    /// kick, every packet is on the ring, each sender's in order. (A
    /// version that wrote its own packets first and queued them only after
    /// a failed `try_lock`, without trying again, failed here: a holder
    /// that had already looked at the backlog left them there.)
    #[test]
    fn deliverers_strand_nothing() {
        loom::model(|| {
            let h: Arc<H> = Arc::new(Handover::new(Ring::default(), VecDeque::new()));
            let t = {
                let h = h.clone();
                loom::thread::spawn(move || deliver(&h, vec![1, 2]))
            };
            let k2 = deliver(&h, vec![3]);
            let k1 = t.join().unwrap();
            assert!(!k1 && !k2, "nothing is left to the RX thread here");
            assert!(h.backlog().is_empty(), "a packet was left queued");
            check(&h.ring().as_ref().unwrap().written, &[&[1, 2], &[3]]);
        });
    }

    /// A deliverer and the RX thread (which takes the ring with `lock` and,
    /// like `RxWorker::serve`, looks at the backlog after letting go): the
    /// deliverer may find the ring held by it, and nothing is stranded.
    #[test]
    fn deliverer_and_rx_thread_strand_nothing() {
        loom::model(|| {
            let h: Arc<H> = Arc::new(Handover::new(Ring::default(), VecDeque::new()));
            h.backlog().push_back(1);
            let rx = {
                let h = h.clone();
                loom::thread::spawn(move || {
                    loop {
                        if h.backlog().is_empty() {
                            break; // the look before sleeping
                        }
                        let mut g = h.ring();
                        let batch: Vec<u32> = h.backlog().drain(..).collect();
                        g.as_mut().unwrap().write(batch);
                    }
                })
            };
            let kick = deliver(&h, vec![2, 3]);
            rx.join().unwrap();
            assert!(!kick);
            assert!(h.backlog().is_empty(), "a packet was left queued");
            check(&h.ring().as_ref().unwrap().written, &[&[1, 2, 3]]);
        });
    }
}
