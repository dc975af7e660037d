//! The request/response pipelines that `benches/ring.rs` and the
//! `ring_pair` demo measure, with pvio's ring and with its peers.
//!
//! Every pipeline is the same workload: a frontend thread sends 64-byte
//! requests and consumes 16-byte responses; a backend thread answers each
//! request; at most one ring's worth ([`SLOTS`]) is in flight. `batch` is the
//! number of messages each side writes per publication (and reads per
//! poll). pvio does it on one shared Xen ring (both directions in the same
//! pages); the peers use two queues, one per direction.
//!
//! The block workloads (`benches/blk.rs`, the `blk_run` example) are in
//! [`blk`].

#![forbid(unsafe_code)]

pub mod blk;
pub mod hosted;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use crossbeam_queue::ArrayQueue;
use pvio_ring::{BackRing, FrontRing, entry_size, slots_for};
use pvio_shmem::MemfdMem;

/// Pages of the pvio ring: 4 pages (`ring-page-order` 2) of 64-byte slots.
pub const RING_PAGES: usize = 4;
/// Messages in flight at most, for pvio and for the peers alike.
pub const SLOTS: u32 = slots_for(RING_PAGES * 4096, entry_size::<Req, Rsp>());

/// A 64-byte request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct Req {
    /// Identifier echoed in the response.
    pub id: u64,
    /// Opaque payload.
    pub payload: [u64; 7],
}

impl Req {
    /// Request number `id`.
    #[inline]
    pub fn new(id: u64) -> Self {
        Req {
            id,
            payload: [id; 7],
        }
    }
}

/// A 16-byte response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct Rsp {
    /// The request's identifier.
    pub id: u64,
    /// Status.
    pub status: i64,
}

impl Rsp {
    /// The answer to `req`.
    #[inline]
    pub fn answer(req: &Req) -> Self {
        Rsp {
            id: req.id,
            status: (req.payload[6] & 1) as i64,
        }
    }
}

type Mem = Arc<MemfdMem>;

fn ring_pair() -> (FrontRing<Mem, Req, Rsp>, BackRing<Mem, Req, Rsp>) {
    let mem = Arc::new(MemfdMem::new(c"pvio-bench-ring", RING_PAGES * 4096).expect("memfd"));
    let front = FrontRing::init(mem.clone()).expect("ring init");
    let back = BackRing::attach(mem).expect("ring attach");
    (front, back)
}

/// Checks the pipeline's result: every response came back, in order.
fn check(n: u64, sum: u64) {
    assert_eq!(
        sum,
        n * n.saturating_sub(1) / 2,
        "responses lost or duplicated"
    );
}

/// What a polling side does when a poll found nothing: a few `pause`s, so a
/// spinning reader does not keep stealing the cache line the other side is
/// about to write.
#[inline]
fn idle_pause() {
    for _ in 0..IDLE_PAUSES {
        std::hint::spin_loop();
    }
}

/// `pause`s per empty poll.
const IDLE_PAUSES: u32 = 8;

/// Runs `n` request/response round trips through one pvio ring; returns the
/// frontend's elapsed time.
pub fn pvio(n: u64, batch: u32) -> Duration {
    let (mut front, mut back) = ring_pair();
    let start = Arc::new(Barrier::new(2));
    let backend = {
        let start = start.clone();
        thread::spawn(move || {
            start.wait();
            let mut done = 0u64;
            while done < n {
                let k = back
                    .answer_requests(batch, |req| Rsp::answer(&req))
                    .expect("backend ring");
                if k > 0 {
                    back.publish().expect("publish responses");
                    done += u64::from(k);
                } else {
                    idle_pause();
                }
            }
        })
    };
    start.wait();
    let t = Instant::now();
    let (mut sent, mut recv, mut sum) = (0u64, 0u64, 0u64);
    while recv < n {
        let want = (n - sent).min(u64::from(batch)) as u32;
        let mut progress = false;
        if want > 0 && front.free_requests() >= want {
            let mut b = front.reserve(want).expect("reserve");
            b.fill_with(|i| Req::new(sent + u64::from(i)))
                .expect("fill");
            b.publish().expect("publish requests");
            sent += u64::from(want);
            progress = true;
        }
        let got = front
            .drain_responses(batch, |rsp| sum += rsp.id)
            .expect("frontend ring");
        recv += u64::from(got);
        if !progress && got == 0 {
            idle_pause();
        }
    }
    let elapsed = t.elapsed();
    backend.join().expect("backend thread");
    check(n, sum);
    elapsed
}

/// The same pipeline on two `rtrb` queues (requests, responses), with the
/// same in-flight limit and chunked (batched) writes and reads.
pub fn rtrb(n: u64, batch: u32) -> Duration {
    let cap = SLOTS as usize;
    let (mut req_p, mut req_c) = rtrb::RingBuffer::<Req>::new(cap);
    let (mut rsp_p, mut rsp_c) = rtrb::RingBuffer::<Rsp>::new(cap);
    let batch = batch as usize;
    let start = Arc::new(Barrier::new(2));
    let backend = {
        let start = start.clone();
        thread::spawn(move || {
            start.wait();
            let mut done = 0u64;
            while done < n {
                let k = req_c.slots().min(batch);
                if k == 0 {
                    idle_pause();
                    continue;
                }
                let chunk = req_c.read_chunk(k).expect("read chunk");
                let (a, b) = chunk.as_slices();
                let w = rsp_p.write_chunk_uninit(k).expect("response room");
                w.fill_from_iter(a.iter().chain(b).map(Rsp::answer));
                chunk.commit_all();
                done += k as u64;
            }
        })
    };
    start.wait();
    let t = Instant::now();
    let (mut sent, mut recv, mut sum) = (0u64, 0u64, 0u64);
    while recv < n {
        let want = (n - sent).min(batch as u64) as usize;
        let mut progress = false;
        if want > 0 && (sent - recv) as usize + want <= cap && req_p.slots() >= want {
            let chunk = req_p.write_chunk_uninit(want).expect("request room");
            chunk.fill_from_iter((sent..sent + want as u64).map(Req::new));
            sent += want as u64;
            progress = true;
        }
        let k = rsp_c.slots().min(batch);
        if k > 0 {
            let chunk = rsp_c.read_chunk(k).expect("read chunk");
            let (a, b) = chunk.as_slices();
            sum += a.iter().chain(b).map(|r| r.id).sum::<u64>();
            chunk.commit_all();
            recv += k as u64;
            progress = true;
        }
        if !progress {
            idle_pause();
        }
    }
    let elapsed = t.elapsed();
    backend.join().expect("backend thread");
    check(n, sum);
    elapsed
}

/// The same pipeline on two `crossbeam_queue::ArrayQueue`s (which have no
/// batch API: `batch` only sets how many each side handles per round).
pub fn crossbeam(n: u64, batch: u32) -> Duration {
    let cap = SLOTS as usize;
    let reqs = Arc::new(ArrayQueue::<Req>::new(cap));
    let rsps = Arc::new(ArrayQueue::<Rsp>::new(cap));
    let start = Arc::new(Barrier::new(2));
    let backend = {
        let (reqs, rsps, start) = (reqs.clone(), rsps.clone(), start.clone());
        thread::spawn(move || {
            start.wait();
            let mut done = 0u64;
            while done < n {
                let mut k = 0;
                while k < batch {
                    match reqs.pop() {
                        Some(req) => {
                            rsps.push(Rsp::answer(&req)).expect("response room");
                            k += 1;
                        }
                        None => break,
                    }
                }
                if k == 0 {
                    idle_pause();
                }
                done += u64::from(k);
            }
        })
    };
    start.wait();
    let t = Instant::now();
    let (mut sent, mut recv, mut sum) = (0u64, 0u64, 0u64);
    while recv < n {
        let want = (n - sent).min(u64::from(batch));
        let mut progress = false;
        if want > 0 && sent - recv + want <= cap as u64 {
            for _ in 0..want {
                reqs.push(Req::new(sent)).expect("request room");
                sent += 1;
            }
            progress = true;
        }
        for _ in 0..batch {
            match rsps.pop() {
                Some(rsp) => {
                    sum += rsp.id;
                    recv += 1;
                    progress = true;
                }
                None => break,
            }
        }
        if !progress {
            idle_pause();
        }
    }
    let elapsed = t.elapsed();
    backend.join().expect("backend thread");
    check(n, sum);
    elapsed
}

/// An event channel port in miniature: a latched pending flag, and a thread
/// that parks (a futex wait) until it is set. Signalling a port that is
/// already pending wakes nobody, as in Xen's 2-level ABI.
#[derive(Debug, Default)]
pub struct Doorbell {
    pending: AtomicBool,
    waiter: OnceLock<Thread>,
    sleeps: AtomicU64,
    signals: AtomicU64,
}

impl Doorbell {
    /// Registers the calling thread as the one that waits on this doorbell.
    pub fn register(&self) {
        let _ = self.waiter.set(thread::current());
    }

    /// Sets the pending flag; wakes the waiter if it was not already set.
    pub fn signal(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.signals.fetch_add(1, Ordering::Relaxed);
            if let Some(t) = self.waiter.get() {
                t.unpark();
            }
        }
    }

    /// Waits until the flag is set, then clears it. Returns at once (no
    /// sleep counted) if it was already set.
    pub fn wait(&self) {
        if self.pending.swap(false, Ordering::AcqRel) {
            return;
        }
        self.sleeps.fetch_add(1, Ordering::Relaxed);
        while !self.pending.swap(false, Ordering::AcqRel) {
            thread::park();
        }
    }

    /// Times a waiter actually went to sleep.
    pub fn sleeps(&self) -> u64 {
        self.sleeps.load(Ordering::Relaxed)
    }

    /// Signals that set the flag (the others were coalesced).
    pub fn signals(&self) -> u64 {
        self.signals.load(Ordering::Relaxed)
    }
}

/// What a sleeping pipeline run measured.
#[derive(Debug, Clone, Copy)]
pub struct SleepReport {
    /// Frontend elapsed time.
    pub elapsed: Duration,
    /// Round trips.
    pub requests: u64,
    /// Times the backend slept waiting for requests.
    pub backend_sleeps: u64,
    /// Times the frontend slept waiting for responses.
    pub frontend_sleeps: u64,
    /// Notifications sent (event channel sends that were not coalesced).
    pub signals: u64,
}

impl SleepReport {
    /// Wakeups (both sides) per million requests.
    pub fn wakeups_per_million(&self) -> f64 {
        (self.backend_sleeps + self.frontend_sleeps) as f64 * 1e6 / self.requests.max(1) as f64
    }
}

/// How long a side polls an idle ring before it re-arms and sleeps.
pub const POLL_BEFORE_SLEEP: Duration = Duration::from_micros(50);

/// The pvio pipeline with event-channel-style sleeping in both directions:
/// each side polls an idle ring for up to [`POLL_BEFORE_SLEEP`], then makes
/// the ring's final check (re-arming the event index) and parks until
/// notified. The producer notifies only when `publish_and_check_notify`
/// says so. A full frontend asks to be woken when half its outstanding
/// requests are answered, as Linux netfront does.
pub fn pvio_sleeping(n: u64, batch: u32) -> SleepReport {
    let (mut front, mut back) = ring_pair();
    let to_back = Arc::new(Doorbell::default());
    let to_front = Arc::new(Doorbell::default());
    to_front.register();
    let start = Arc::new(Barrier::new(2));
    let backend = {
        let (to_back, to_front, start) = (to_back.clone(), to_front.clone(), start.clone());
        thread::spawn(move || {
            to_back.register();
            start.wait();
            let mut done = 0u64;
            let mut idle_since: Option<Instant> = None;
            while done < n {
                let mut k = 0;
                while k < batch {
                    match back.next_request().expect("backend ring") {
                        Some(req) => {
                            back.push_response(&Rsp::answer(&req)).expect("respond");
                            k += 1;
                        }
                        None => break,
                    }
                }
                if k > 0 {
                    if back
                        .publish_and_check_notify()
                        .expect("publish")
                        .is_needed()
                    {
                        to_front.signal();
                    }
                    done += u64::from(k);
                    idle_since = None;
                    continue;
                }
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() < POLL_BEFORE_SLEEP {
                    std::hint::spin_loop();
                    continue;
                }
                if !back.final_check_for_requests().expect("final check") {
                    to_back.wait();
                }
                idle_since = None;
            }
        })
    };
    start.wait();
    let t = Instant::now();
    let (mut sent, mut recv, mut sum) = (0u64, 0u64, 0u64);
    let mut idle_since: Option<Instant> = None;
    while recv < n {
        let want = (n - sent).min(u64::from(batch)) as u32;
        let mut progress = false;
        if want > 0 && front.free_requests() >= want {
            let mut b = front.reserve(want).expect("reserve");
            for _ in 0..want {
                b.push(&Req::new(sent)).expect("push");
                sent += 1;
            }
            if b.publish_and_check_notify().expect("publish").is_needed() {
                to_back.signal();
            }
            progress = true;
        }
        while let Some(rsp) = front.next_response().expect("frontend ring") {
            sum += rsp.id;
            recv += 1;
            progress = true;
        }
        if progress || recv == n {
            idle_since = None;
            continue;
        }
        let since = *idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() < POLL_BEFORE_SLEEP {
            std::hint::spin_loop();
            continue;
        }
        let half = front.outstanding() / 2;
        if !front
            .final_check_for_responses_after(half)
            .expect("final check")
        {
            to_front.wait();
        }
        idle_since = None;
    }
    let elapsed = t.elapsed();
    backend.join().expect("backend thread");
    check(n, sum);
    SleepReport {
        elapsed,
        requests: n,
        backend_sleeps: to_back.sleeps(),
        frontend_sleeps: to_front.sleeps(),
        signals: to_back.signals() + to_front.signals(),
    }
}

/// Median of `v` (sorts it).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Whether a bench binary should run its interleaved comparison: only under
/// `cargo bench` (not `cargo test --benches`), and unless a name filter on
/// the command line excludes it (`-- interleaved` runs only it).
pub fn wants_interleaved() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let bench_mode = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list");
    let filtered = args
        .iter()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"interleaved".contains(a.as_str()));
    bench_mode && !filtered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pipeline_completes_and_checks_its_data() {
        assert_eq!(SLOTS, 128);
        for batch in [1, 7, 32] {
            pvio(10_000, batch);
            rtrb(10_000, batch);
            crossbeam(10_000, batch);
            let r = pvio_sleeping(10_000, batch);
            assert_eq!(r.requests, 10_000);
        }
    }
}
