//! loom models of the ring protocol, on `LoomMem`: the same ring code that
//! runs on real pages, with every shared word a loom atomic.
//!
//! Run with:
//! `LOOM_MAX_PREEMPTIONS=2 cargo test -p pvio-ring --features loom --test loom --release`
//!
//! A "sleeping" side models an event channel as a latched doorbell (a loom
//! mutex + condvar around a pending flag, like the pending bit of a port).
//! If the ring's notification hold-off ever lost a wakeup, the sleeper would
//! block forever with the other thread finished, and loom reports the
//! deadlock. Data is checked on every message, so a slot read before its
//! publication (a stale value) or a slot reused before its response was
//! consumed fails an assertion.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};
use loom::sync::{Condvar, Mutex};
use loom::thread;
use pvio_ring::{BackRing, FrontRing};
use pvio_shmem::LoomMem;

/// A two-word message: a torn or stale read shows as `b != !a`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
struct Msg {
    a: u32,
    b: u32,
}

impl Msg {
    fn new(v: u32) -> Self {
        Msg { a: v, b: !v }
    }
    fn value(self) -> u32 {
        assert_eq!(self.b, !self.a, "torn or unpublished slot read: {self:?}");
        self.a
    }
}

/// An event channel port in miniature: `signal` latches a pending flag and
/// wakes the waiter; `wait` sleeps until the flag is set, then clears it.
struct Doorbell {
    pending: Mutex<bool>,
    cv: Condvar,
}

impl Doorbell {
    fn new() -> Arc<Self> {
        Arc::new(Doorbell {
            pending: Mutex::new(false),
            cv: Condvar::new(),
        })
    }
    fn signal(&self) {
        *self.pending.lock().unwrap() = true;
        self.cv.notify_one();
    }
    fn wait(&self) {
        let mut p = self.pending.lock().unwrap();
        while !*p {
            p = self.cv.wait(p).unwrap();
        }
        *p = false;
    }
}

type Front = FrontRing<Arc<LoomMem>, Msg, Msg>;
type Back = BackRing<Arc<LoomMem>, Msg, Msg>;

/// Bytes for a ring of `slots` 8-byte entries.
fn ring_bytes(slots: usize) -> usize {
    64 + slots * 8
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    b.check(f);
}

/// Requests only: the frontend publishes with push-and-check-notify, the
/// backend sleeps after its final check. No wakeup is lost and every
/// request arrives intact and in order.
#[test]
fn requests_hold_off_never_loses_a_wakeup() {
    model(|| {
        const N: u32 = 3;
        let mem = Arc::new(LoomMem::new(ring_bytes(4)));
        let mut front = Front::init_bytes(mem.clone(), ring_bytes(4)).unwrap();
        let mut back = Back::attach_bytes(mem.clone(), ring_bytes(4)).unwrap();
        let bell = Doorbell::new();

        let consumer = {
            let bell = bell.clone();
            thread::spawn(move || {
                let mut next = 0;
                loop {
                    while let Some(m) = back.next_request().unwrap() {
                        assert_eq!(m.value(), next, "requests arrive in order");
                        next += 1;
                    }
                    if next == N {
                        break;
                    }
                    if !back.final_check_for_requests().unwrap() {
                        bell.wait();
                    }
                }
            })
        };
        for v in 0..N {
            front.push_request(&Msg::new(v)).unwrap();
            if front.publish_and_check_notify().unwrap().is_needed() {
                bell.signal();
            }
        }
        consumer.join().unwrap();
    });
}

/// The full round trip on a 2-slot ring, with hold-off in both directions:
/// the frontend sleeps when it needs responses, the backend when it needs
/// requests. Slots are reused (4 messages through 2 slots): a slot reused
/// before its response was consumed, or read before publication, fails the
/// data checks; a lost wakeup deadlocks.
#[test]
fn round_trip_hold_off_both_directions() {
    model(|| {
        const N: u32 = 4;
        let bytes = ring_bytes(2);
        let mem = Arc::new(LoomMem::new(bytes));
        let mut front = Front::init_bytes(mem.clone(), bytes).unwrap();
        let mut back = Back::attach_bytes(mem.clone(), bytes).unwrap();
        assert_eq!(front.nr_ents(), 2);
        let to_back = Doorbell::new();
        let to_front = Doorbell::new();

        let backend = {
            let (to_back, to_front) = (to_back.clone(), to_front.clone());
            thread::spawn(move || {
                let mut next = 0;
                while next < N {
                    while let Some(m) = back.next_request().unwrap() {
                        assert_eq!(m.value(), next);
                        back.push_response(&Msg::new(next + 100)).unwrap();
                        next += 1;
                    }
                    if back.publish_and_check_notify().unwrap().is_needed() {
                        to_front.signal();
                    }
                    if next < N && !back.final_check_for_requests().unwrap() {
                        to_back.wait();
                    }
                }
            })
        };

        let (mut sent, mut done) = (0, 0);
        loop {
            while sent < N && !front.is_full() {
                front.push_request(&Msg::new(sent)).unwrap();
                sent += 1;
            }
            if front.publish_and_check_notify().unwrap().is_needed() {
                to_back.signal();
            }
            while let Some(r) = front.next_response().unwrap() {
                assert_eq!(r.value(), done + 100, "responses match requests in order");
                done += 1;
            }
            if done == N {
                break;
            }
            if sent < N && !front.is_full() {
                continue; // room to send more: no reason to sleep
            }
            if !front.final_check_for_responses().unwrap() {
                to_front.wait();
            }
        }
        backend.join().unwrap();
    });
}

/// The model has teeth: a consumer that sleeps without the final check
/// (without re-arming `req_event`) loses a wakeup, and loom finds it.
#[test]
#[should_panic]
fn sleeping_without_final_check_is_caught() {
    model(|| {
        let mem = Arc::new(LoomMem::new(ring_bytes(4)));
        let mut front = Front::init_bytes(mem.clone(), ring_bytes(4)).unwrap();
        let mut back = Back::attach_bytes(mem.clone(), ring_bytes(4)).unwrap();
        let bell = Doorbell::new();
        let consumer = {
            let bell = bell.clone();
            thread::spawn(move || {
                let mut got = 0;
                while got < 2 {
                    while back.next_request().unwrap().is_some() {
                        got += 1;
                    }
                    if got < 2 {
                        bell.wait(); // BUG: no final_check_for_requests()
                    }
                }
            })
        };
        for v in 0..2 {
            front.push_request(&Msg::new(v)).unwrap();
            if front.publish_and_check_notify().unwrap().is_needed() {
                bell.signal();
            }
        }
        consumer.join().unwrap();
    });
}
