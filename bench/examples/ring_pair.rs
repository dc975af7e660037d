//! The demo: a frontend and a backend thread exchange requests and
//! responses over one Xen ring in a sealed memfd, and it prints the
//! throughput, with and without event-channel-style sleeping.
//!
//! `cargo run --release -p pvio-bench --example ring_pair [requests]`

use std::process::ExitCode;

use pvio_bench::{RING_PAGES, SLOTS, pvio, pvio_sleeping};

fn main() -> ExitCode {
    let n: u64 = match std::env::args().nth(1).map(|s| s.parse()) {
        None => 2_000_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: ring_pair [requests]   (a positive number; default 2000000)");
            return ExitCode::from(2);
        }
    };
    println!(
        "pvio ring pair: {n} round trips of 64-byte requests / 16-byte responses \
         over a {RING_PAGES}-page ring ({SLOTS} slots), frontend and backend on two threads"
    );
    for batch in [1u32, 32] {
        let d = pvio(n, batch);
        println!(
            "  polling,  batch {batch:>2}: {:>7.2} M round trips/s ({:.0} ns each)",
            n as f64 / d.as_secs_f64() / 1e6,
            d.as_nanos() as f64 / n as f64
        );
    }
    for batch in [1u32, 32] {
        let r = pvio_sleeping(n, batch);
        println!(
            "  sleeping, batch {batch:>2}: {:>7.2} M round trips/s, {:.1} wakeups per million \
             ({} backend sleeps, {} frontend sleeps, {} notifications)",
            n as f64 / r.elapsed.as_secs_f64() / 1e6,
            r.wakeups_per_million(),
            r.backend_sleeps,
            r.frontend_sleeps,
            r.signals
        );
    }
    ExitCode::SUCCESS
}
