//! Ring throughput: pvio's Xen ring against rtrb and crossbeam, in one run.
//!
//! `cargo bench -p pvio-bench --bench ring`
//!
//! * group `ring`: request/response round trips per second across two
//!   threads (64-byte requests, 16-byte responses, at most one ring's worth in
//!   flight), ids `pvio/<batch>`, `rtrb/<batch>`, `crossbeam/<batch>` for
//!   batch sizes 1 and 32;
//! * group `ring_sleep`: the pvio pipeline with event-channel-style sleeping,
//!   printing wakeups per million requests;
//! * then an interleaved comparison (pvio, rtrb, crossbeam, pvio, rtrb, ...
//!   in short rounds) that prints the median of the per-round ratios. This
//!   machine's cores drift, so ratios measured side by side are the figures
//!   to quote, not absolute rates.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use pvio_bench::{SLOTS, SleepReport, crossbeam, median, pvio, pvio_sleeping, rtrb};

const BATCHES: [u32; 2] = [1, 32];

fn ring(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));
    for batch in BATCHES {
        g.bench_with_input(BenchmarkId::new("pvio", batch), &batch, |b, &batch| {
            b.iter_custom(|iters| pvio(iters, batch))
        });
        g.bench_with_input(BenchmarkId::new("rtrb", batch), &batch, |b, &batch| {
            b.iter_custom(|iters| rtrb(iters, batch))
        });
        g.bench_with_input(BenchmarkId::new("crossbeam", batch), &batch, |b, &batch| {
            b.iter_custom(|iters| crossbeam(iters, batch))
        });
    }
    g.finish();
}

fn ring_sleep(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_sleep");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));
    for batch in BATCHES {
        let totals = Mutex::new((0u64, 0u64, 0u64, 0u64));
        g.bench_with_input(BenchmarkId::new("pvio", batch), &batch, |b, &batch| {
            b.iter_custom(|iters| {
                let r: SleepReport = pvio_sleeping(iters, batch);
                let mut t = totals.lock().unwrap();
                t.0 += r.requests;
                t.1 += r.backend_sleeps;
                t.2 += r.frontend_sleeps;
                t.3 += r.signals;
                r.elapsed
            })
        });
        let (reqs, bs, fs, sig) = *totals.lock().unwrap();
        if reqs > 0 {
            println!(
                "ring_sleep/pvio/{batch}: {:.1} wakeups per million requests \
                 (backend {bs}, frontend {fs}, {sig} notifications, {reqs} requests)",
                (bs + fs) as f64 * 1e6 / reqs as f64
            );
        }
    }
    g.finish();
}

/// Rounds of pvio, rtrb, crossbeam back to back, so the three see the same
/// machine; prints median rates and the median of per-round ratios.
fn interleaved() {
    const ROUNDS: usize = 9;
    println!("\ninterleaved comparison ({ROUNDS} rounds, ring of {SLOTS} slots):");
    for batch in BATCHES {
        let n: u64 = if batch == 1 { 300_000 } else { 2_000_000 };
        let rate = |d: Duration| n as f64 / d.as_secs_f64() / 1e6;
        let (mut p, mut r, mut c) = (vec![], vec![], vec![]);
        let (mut pr, mut pc) = (vec![], vec![]);
        let t = Instant::now();
        for _ in 0..ROUNDS {
            let a = rate(pvio(n, batch));
            let b = rate(rtrb(n, batch));
            let d = rate(crossbeam(n, batch));
            pr.push(a / b);
            pc.push(a / d);
            p.push(a);
            r.push(b);
            c.push(d);
        }
        println!(
            "  batch {batch:>2}: pvio {:.2} M/s, rtrb {:.2} M/s, crossbeam {:.2} M/s (medians); \
             pvio/rtrb {:.2}x, pvio/crossbeam {:.2}x (median of per-round ratios) [{:.1}s]",
            median(&mut p),
            median(&mut r),
            median(&mut c),
            median(&mut pr),
            median(&mut pc),
            t.elapsed().as_secs_f64()
        );
    }
    let mut w = vec![];
    let mut rates = vec![];
    for _ in 0..ROUNDS {
        let r = pvio_sleeping(1_000_000, 32);
        w.push(r.wakeups_per_million());
        rates.push(r.requests as f64 / r.elapsed.as_secs_f64() / 1e6);
    }
    println!(
        "  sleeping, batch 32: {:.2} M/s, {:.1} wakeups per million requests (medians)",
        median(&mut rates),
        median(&mut w)
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    ring(&mut c);
    ring_sleep(&mut c);
    c.final_summary();
    if pvio_bench::wants_interleaved() {
        interleaved();
    }
}
