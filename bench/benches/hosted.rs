//! Hosted mode (domains as processes, the hypervisor a daemon) against its
//! peers, in one run (issue 6):
//!
//! `cargo bench -p pvio-bench --bench hosted`
//!
//! * group `hosted/ring`, ids `pvio` and `socketpair`: request/response
//!   round trips per second (criterion's elements/s) between two
//!   processes, 64-byte requests and 16-byte responses, at most one
//!   ring's worth in flight: pvio's ring (granted by the frontend process,
//!   mapped by the backend process through the daemon, event channels on
//!   eventfds with the ring's notification hold-off; batches of 32)
//!   against a Unix datagram socketpair carrying the same messages;
//! * groups `hosted/blk/{null,tmpfs}/randread/qd{1,32}`, ids `embedded`
//!   and `hosted`: 4 KiB random-read IOPS through blkfront → blkback with
//!   every domain in this process, and with blkback in a backend process
//!   of its own (the frontend is then a hosted domain of the daemon);
//! * then an interleaved comparison (rounds of each side back to back,
//!   alternating which goes first; medians of per-round ratios) of the
//!   same pairs, plus iperf3 between two network namespaces through pvio
//!   (`pvio hv`, `pvio netback --switch`, two `pvio netfront --tap`)
//!   against a veth pair between two other namespaces, and the targets
//!   (reported, not asserted). This machine's vCPUs drift between host
//!   cores: quote these ratios, not absolute rates.
//!
//! `-- interleaved` runs only the comparison. Under `cargo test --benches`
//! every benchmark runs once and iperf3 is not run.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use pvio_bench::blk::{DiskSpec, Driver, Image, Rng, Rw, compare};
use pvio_bench::hosted::{Dgram, HostedRing, NetPair, WINDOW, child_main};

/// Requests per publication of the ring pipeline.
const BATCH: u32 = 32;
/// The null disk: 1 GiB of 512-byte sectors.
const NULL_SECTORS: u64 = 1 << 21;

/// Targets (issue 6).
const RING_OVER_SOCKETPAIR: f64 = 50.0;
const HOSTED_BLK_SHARE: f64 = 0.90;
const IPERF_SHARE: f64 = 0.25;

struct BlkPair {
    name: String,
    depth: usize,
    embedded: Driver,
    hosted: Driver,
}

fn blk_pairs(test_mode: bool) -> (Vec<BlkPair>, Option<Image>) {
    let mut out = Vec::new();
    let null = DiskSpec::Null(NULL_SECTORS);
    for depth in [1, 32] {
        out.push(BlkPair {
            name: format!("hosted/blk/null/randread/qd{depth}"),
            depth,
            embedded: Driver::connect(null.open().expect("null disk"), 1),
            hosted: Driver::connect_hosted(&null, 1).expect("hosted blk on the null disk"),
        });
    }
    let bytes = if test_mode { 16 << 20 } else { 128 << 20 };
    let img = match Image::create(Path::new("/dev/shm"), bytes) {
        Ok(img) => img,
        Err(e) => {
            println!("hosted/blk/tmpfs: skipped, no image under /dev/shm: {e}");
            return (out, None);
        }
    };
    let file = DiskSpec::File(img.path().to_path_buf());
    out.push(BlkPair {
        name: "hosted/blk/tmpfs/randread/qd32".into(),
        depth: 32,
        embedded: Driver::connect(file.open().expect("image"), 1),
        hosted: Driver::connect_hosted(&file, 1).expect("hosted blk on the image"),
    });
    (out, Some(img))
}

fn ring_benches(c: &mut Criterion, ring: &mut HostedRing, dgram: &mut Dgram) {
    let mut g = c.benchmark_group("hosted/ring");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_millis(1500));
    g.bench_function("pvio", |b| {
        b.iter_custom(|n| ring.run(n, BATCH).expect("hosted ring"))
    });
    g.bench_function("socketpair", |b| {
        b.iter_custom(|n| dgram.run(n, WINDOW).expect("socketpair"))
    });
    g.finish();
}

fn blk_benches(c: &mut Criterion, pairs: &mut [BlkPair]) {
    for p in pairs.iter_mut() {
        let mut g = c.benchmark_group(&p.name);
        g.throughput(Throughput::Elements(1));
        g.sample_size(10);
        g.warm_up_time(Duration::from_millis(300));
        g.measurement_time(Duration::from_millis(1500));
        let depth = p.depth;
        let mut rng = Rng::new(1);
        g.bench_function("embedded", |b| {
            b.iter_custom(|n| p.embedded.run(Rw::Read, depth, n, &mut rng))
        });
        let mut rng = Rng::new(1);
        g.bench_function("hosted", |b| {
            b.iter_custom(|n| p.hosted.run(Rw::Read, depth, n, &mut rng))
        });
        g.finish();
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn interleaved(ring: &mut HostedRing, dgram: &mut Dgram, pairs: &mut [BlkPair], smoke: bool) {
    let rounds = if smoke { 1 } else { 9 };
    let chunk = Duration::from_millis(if smoke { 2 } else { 100 });
    let mut verdicts = Vec::new();
    println!(
        "\ninterleaved comparison ({rounds} rounds of ~{} ms per side; medians; \
         ratios are medians of per-round ratios):",
        chunk.as_millis()
    );
    let started = Instant::now();
    let cmp = compare(
        rounds,
        chunk,
        |n, _| ring.run(n, BATCH).expect("hosted ring"),
        |n, _| dgram.run(n, WINDOW).expect("socketpair"),
    );
    println!(
        "  hosted/ring          pvio {:>11.0} msg/s, socketpair {:>9.0} msg/s; pvio/socketpair {:.1}x \
         (frontend slept {} times) [{:.1}s]",
        cmp.a,
        cmp.b,
        cmp.ratio,
        ring.sleeps,
        started.elapsed().as_secs_f64()
    );
    verdicts.push(format!(
        "  hosted/ring: pvio/socketpair {:.1}x (target >= {RING_OVER_SOCKETPAIR}x): {}",
        cmp.ratio,
        verdict(cmp.ratio >= RING_OVER_SOCKETPAIR)
    ));
    for p in pairs.iter_mut() {
        let started = Instant::now();
        let depth = p.depth;
        let (e, h) = (&mut p.embedded, &mut p.hosted);
        let cmp = compare(
            rounds,
            chunk,
            |n, rng| h.run(Rw::Read, depth, n, rng),
            |n, rng| e.run(Rw::Read, depth, n, rng),
        );
        println!(
            "  {:<32} hosted {:>8.0} IOPS, embedded {:>8.0} IOPS; hosted/embedded {:.2}x [{:.1}s]",
            p.name,
            cmp.a,
            cmp.b,
            cmp.ratio,
            started.elapsed().as_secs_f64()
        );
        verdicts.push(format!(
            "  {}: hosted/embedded {:.2}x (target >= {HOSTED_BLK_SHARE:.2}x): {}",
            p.name,
            cmp.ratio,
            verdict(cmp.ratio >= HOSTED_BLK_SHARE)
        ));
    }
    if !smoke {
        match NetPair::start() {
            Err(e) => println!("  hosted/net/iperf3: skipped: {e}"),
            Ok(net) => {
                let started = Instant::now();
                let (mut pv, mut ve, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
                for round in 0..3 {
                    let run = |veth| net.iperf3(veth, 3).expect("iperf3");
                    let (p, v) = if round % 2 == 0 {
                        let p = run(false);
                        (p, run(true))
                    } else {
                        let v = run(true);
                        (run(false), v)
                    };
                    pv.push(p);
                    ve.push(v);
                    ratio.push(p / v);
                }
                let r = median(&mut ratio);
                println!(
                    "  hosted/net/iperf3     pvio {:>6.2} Gbit/s, veth {:>6.2} Gbit/s; pvio/veth {r:.2}x \
                     (3 rounds of 3 s per side) [{:.1}s]",
                    median(&mut pv) / 1e9,
                    median(&mut ve) / 1e9,
                    started.elapsed().as_secs_f64()
                );
                verdicts.push(format!(
                    "  hosted/net/iperf3: pvio/veth {r:.2}x (target >= {IPERF_SHARE:.2}x): {}",
                    verdict(r >= IPERF_SHARE)
                ));
            }
        }
    }
    println!("targets (reported, not asserted):");
    for v in verdicts {
        println!("{v}");
    }
}

fn main() {
    if child_main() {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let has = |f: &str| args.iter().any(|a| a == f);
    let test_mode = has("--test") || !has("--bench");
    let mut c = Criterion::default().configure_from_args();
    let mut ring = HostedRing::start(BATCH).expect("hosted ring");
    let mut dgram = Dgram::start().expect("socketpair");
    let (mut pairs, _img) = blk_pairs(test_mode);
    ring_benches(&mut c, &mut ring, &mut dgram);
    blk_benches(&mut c, &mut pairs);
    c.final_summary();
    if pvio_bench::wants_interleaved() || has("--test") {
        interleaved(&mut ring, &mut dgram, &mut pairs, test_mode);
    }
}
