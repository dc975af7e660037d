//! Event channel send → wake latency between two threads, against an
//! eventfd ping-pong and a futex ping-pong (std's `park`/`unpark`, which is
//! a futex wait/wake on Linux), all in one run.
//!
//! `cargo bench -p pvio-bench --bench evtchn`
//!
//! Each measures round trips: thread A signals B and sleeps until B signals
//! back. Half a round trip is the send → wake latency. No side spins before
//! sleeping, so every hop is a real sleep and wake.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use nix::sys::eventfd::{EfdFlags, EventFd};
use pvio_abi::DomId;
use pvio_bench::median;
use pvio_evtchn::{EventChannels, PortWait};

const GUARD: Duration = Duration::from_secs(10);

/// `n` round trips over an interdomain event channel between two domains.
fn evtchn_pingpong(n: u64) -> Duration {
    let ev = EventChannels::new();
    let (a, b) = (DomId(1), DomId(2));
    ev.add_domain(a, 64).unwrap();
    ev.add_domain(b, 64).unwrap();
    let pa = ev.alloc_unbound(a, b).unwrap();
    let pb = ev.bind_interdomain(b, a, pa).unwrap();
    let mut wa = ev.waiter(a).unwrap();
    let mut wb = ev.waiter(b).unwrap();
    // bind_interdomain marks the new port pending once (as Xen does).
    let _ = wb.try_take();
    let start = Arc::new(Barrier::new(2));
    let peer = {
        let (ev, start) = (ev.clone(), start.clone());
        thread::spawn(move || {
            start.wait();
            for _ in 0..n {
                assert_eq!(wb.wait_port(pb, GUARD).unwrap(), PortWait::Fired);
                ev.send(b, pb).unwrap();
            }
        })
    };
    start.wait();
    let t = Instant::now();
    for _ in 0..n {
        ev.send(a, pa).unwrap();
        assert_eq!(wa.wait_port(pa, GUARD).unwrap(), PortWait::Fired);
    }
    let d = t.elapsed();
    peer.join().unwrap();
    d
}

/// `n` round trips over two eventfds (blocking reads).
fn eventfd_pingpong(n: u64) -> Duration {
    let to_b = Arc::new(EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC).unwrap());
    let to_a = Arc::new(EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC).unwrap());
    let start = Arc::new(Barrier::new(2));
    let peer = {
        let (to_a, to_b, start) = (to_a.clone(), to_b.clone(), start.clone());
        thread::spawn(move || {
            start.wait();
            for _ in 0..n {
                to_b.read().unwrap();
                to_a.write(1).unwrap();
            }
        })
    };
    start.wait();
    let t = Instant::now();
    for _ in 0..n {
        to_b.write(1).unwrap();
        to_a.read().unwrap();
    }
    let d = t.elapsed();
    peer.join().unwrap();
    d
}

/// A one-bit doorbell on a futex: std's park/unpark.
struct Bell {
    flag: AtomicBool,
    thread: Thread,
}

impl Bell {
    fn ring(&self) {
        self.flag.store(true, Ordering::Release);
        self.thread.unpark();
    }
    fn wait(&self) {
        while !self.flag.swap(false, Ordering::Acquire) {
            thread::park();
        }
    }
}

/// `n` round trips over two futex doorbells.
fn futex_pingpong(n: u64) -> Duration {
    let start = Arc::new(Barrier::new(2));
    let me = Arc::new(Bell {
        flag: AtomicBool::new(false),
        thread: thread::current(),
    });
    let (tx, rx) = std::sync::mpsc::channel::<Arc<Bell>>();
    let peer = {
        let (me, start) = (me.clone(), start.clone());
        thread::spawn(move || {
            let mine = Arc::new(Bell {
                flag: AtomicBool::new(false),
                thread: thread::current(),
            });
            tx.send(mine.clone()).unwrap();
            start.wait();
            for _ in 0..n {
                mine.wait();
                me.ring();
            }
        })
    };
    let other = rx.recv().unwrap();
    start.wait();
    let t = Instant::now();
    for _ in 0..n {
        other.ring();
        me.wait();
    }
    let d = t.elapsed();
    peer.join().unwrap();
    d
}

fn latency(c: &mut Criterion) {
    let mut g = c.benchmark_group("evtchn");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(4));
    g.bench_function("pvio_round_trip", |b| b.iter_custom(evtchn_pingpong));
    g.bench_function("eventfd_round_trip", |b| b.iter_custom(eventfd_pingpong));
    g.bench_function("futex_round_trip", |b| b.iter_custom(futex_pingpong));
    g.finish();
}

fn interleaved() {
    const ROUNDS: usize = 11;
    const N: u64 = 20_000;
    let us = |d: Duration| d.as_secs_f64() * 1e6 / N as f64 / 2.0;
    let (mut p, mut e, mut f, mut pf, mut pe) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        let a = us(evtchn_pingpong(N));
        let b = us(eventfd_pingpong(N));
        let c = us(futex_pingpong(N));
        pf.push(a / c);
        pe.push(a / b);
        p.push(a);
        e.push(b);
        f.push(c);
    }
    println!(
        "\ninterleaved comparison ({ROUNDS} rounds of {N} round trips; send -> wake latency = half a round trip):"
    );
    println!(
        "  pvio evtchn {:.2} us, eventfd {:.2} us, futex {:.2} us (medians)",
        median(&mut p),
        median(&mut e),
        median(&mut f)
    );
    println!(
        "  pvio / futex {:.2}x, pvio / eventfd {:.2}x (median of per-round ratios)",
        median(&mut pf),
        median(&mut pe)
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    latency(&mut c);
    c.final_summary();
    if pvio_bench::wants_interleaved() {
        interleaved();
    }
}
