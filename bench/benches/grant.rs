//! Grant operations through the in-tree hypervisor.
//!
//! `cargo bench -p pvio-bench --bench grant`
//!
//! * group `grant_map`: map + unmap pairs of one grant (a writable map of
//!   another domain's frame, validated and pinned, then unmapped);
//! * group `grant_copy`: 4 KiB grant copies from another domain's granted
//!   frames into the caller's own frames, in batches of 1 and 32, against a
//!   plain `copy_from_slice` of 4 KiB between page-aligned pages of plain
//!   memory, and the hypervisor's raw frame-to-frame copy without the grant
//!   checks (`pvio_shmem::copy`), all in one run;
//! * then an interleaved comparison in rounds that prints the copy
//!   throughput ratios (grant copy / memcpy).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use pvio_bench::median;
use pvio_hv::{CopyDst, CopyOp, CopySrc, DomId, Domain, DomainConfig, GrantRef, Hypervisor};

const A: DomId = DomId(1);
const B: DomId = DomId(2);
const PAGES: usize = 32;

struct Setup {
    _hv: Hypervisor,
    a: Domain,
    b: Domain,
    src_frames: Vec<u32>,
    grefs: Vec<GrantRef>,
    dst_frames: Vec<u32>,
}

fn setup() -> Setup {
    let hv = Hypervisor::new();
    let a = hv
        .create_domain(
            A,
            DomainConfig {
                pages: 64,
                ..DomainConfig::default()
            },
        )
        .unwrap();
    let b = hv
        .create_domain(
            B,
            DomainConfig {
                pages: 64,
                ..DomainConfig::default()
            },
        )
        .unwrap();
    let src_frames = a.alloc_frames(PAGES).unwrap();
    for &f in &src_frames {
        pvio_shmem::SharedMem::fill(&a.frame(f).unwrap(), 0, 4096, f as u8).unwrap();
    }
    let grefs = src_frames
        .iter()
        .map(|&f| a.grant_access(B, f, true).unwrap())
        .collect();
    let dst_frames = b.alloc_frames(PAGES).unwrap();
    Setup {
        _hv: hv,
        a,
        b,
        src_frames,
        grefs,
        dst_frames,
    }
}

/// `n` grant copies of 4 KiB in batches of `batch`; returns elapsed time.
fn grant_copies(s: &Setup, n: u64, batch: usize) -> Duration {
    let t = Instant::now();
    let mut done = 0u64;
    let mut i = 0usize;
    while done < n {
        let k = batch.min((n - done) as usize);
        let mut ops: Vec<CopyOp<'_>> = (0..k)
            .map(|j| {
                let p = (i + j) % PAGES;
                CopyOp::new(
                    CopySrc::Gref {
                        domid: A,
                        gref: s.grefs[p],
                        offset: 0,
                    },
                    CopyDst::Frame {
                        frame: s.dst_frames[p],
                        offset: 0,
                    },
                    4096,
                )
            })
            .collect();
        let ok = s.b.grant_copy(&mut ops);
        assert_eq!(
            ok,
            k,
            "grant copy failed: {:?}",
            ops.iter().map(|o| o.status).collect::<Vec<_>>()
        );
        i += k;
        done += k as u64;
    }
    t.elapsed()
}

/// A page-aligned page of plain memory, so the memcpy baseline copies
/// between pages laid out like the frames (a heap buffer at an arbitrary
/// offset can hit the 4 KiB-aliasing penalty and understate memcpy 10x).
#[repr(C, align(4096))]
#[derive(Clone)]
struct Page([u8; 4096]);

/// `n` plain 4 KiB memcpys between two sets of `PAGES` pages.
fn memcpys(src: &[Page], dst: &mut [Page], n: u64) -> Duration {
    let t = Instant::now();
    for i in 0..n as usize {
        let p = i % PAGES;
        dst[p].0.copy_from_slice(&src[p].0);
        black_box(&mut dst[p]);
    }
    t.elapsed()
}

/// `n` raw frame-to-frame copies (the copy a grant copy does, without the
/// hypervisor's checks and pins).
fn raw_copies(s: &Setup, n: u64) -> Duration {
    let srcs: Vec<_> = s
        .src_frames
        .iter()
        .map(|&f| s.a.frame(f).unwrap())
        .collect();
    let dsts: Vec<_> = s
        .dst_frames
        .iter()
        .map(|&f| s.b.frame(f).unwrap())
        .collect();
    let t = Instant::now();
    for i in 0..n as usize {
        let p = i % PAGES;
        pvio_shmem::copy(&srcs[p], 0, &dsts[p], 0, 4096).unwrap();
    }
    t.elapsed()
}

fn grant_map(c: &mut Criterion) {
    let s = setup();
    let gref = s.a.grant_access(B, s.src_frames[0], false).unwrap();
    let mut g = c.benchmark_group("grant_map");
    g.throughput(Throughput::Elements(1));
    g.bench_function("map_unmap", |bch| {
        bch.iter(|| {
            let h = s.b.map_grant(A, gref, false).unwrap();
            s.b.unmap_grant(black_box(h)).unwrap();
        })
    });
    g.bench_function("map_unmap_raii", |bch| {
        bch.iter(|| {
            let m = s.b.map(A, gref).unwrap();
            black_box(&m);
        })
    });
    g.finish();
}

fn grant_copy(c: &mut Criterion) {
    let s = setup();
    let src = vec![Page([7u8; 4096]); PAGES];
    let mut dst = vec![Page([0u8; 4096]); PAGES];
    let mut g = c.benchmark_group("grant_copy");
    g.throughput(Throughput::Bytes(4096));
    for batch in [1usize, 32] {
        g.bench_with_input(
            BenchmarkId::new("grant_copy", batch),
            &batch,
            |bch, &batch| bch.iter_custom(|n| grant_copies(&s, n, batch)),
        );
    }
    g.bench_function("memcpy", |bch| {
        bch.iter_custom(|n| memcpys(&src, &mut dst, n))
    });
    g.bench_function("raw_frame_copy", |bch| {
        bch.iter_custom(|n| raw_copies(&s, n))
    });
    g.finish();
}

fn interleaved() {
    const ROUNDS: usize = 9;
    const N: u64 = 20_000;
    let s = setup();
    let src = vec![Page([7u8; 4096]); PAGES];
    let mut dst = vec![Page([0u8; 4096]); PAGES];
    let gbps = |d: Duration| N as f64 * 4096.0 / d.as_secs_f64() / 1e9;
    let (mut g1, mut g32, mut m, mut r) = (vec![], vec![], vec![], vec![]);
    let (mut q1, mut q32) = (vec![], vec![]);
    for _ in 0..ROUNDS {
        let a = gbps(grant_copies(&s, N, 1));
        let b = gbps(grant_copies(&s, N, 32));
        let c = gbps(memcpys(&src, &mut dst, N));
        let d = gbps(raw_copies(&s, N));
        q1.push(a / c);
        q32.push(b / c);
        g1.push(a);
        g32.push(b);
        m.push(c);
        r.push(d);
    }
    // Map + unmap pairs per second, same rounds style.
    let gref = s.a.grant_access(B, s.src_frames[0], false).unwrap();
    let mut pairs = vec![];
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..100_000 {
            let h = s.b.map_grant(A, gref, false).unwrap();
            s.b.unmap_grant(h).unwrap();
        }
        pairs.push(100_000.0 / t.elapsed().as_secs_f64() / 1e6);
    }
    println!("\ninterleaved comparison ({ROUNDS} rounds, 4 KiB copies over {PAGES} pages):");
    println!(
        "  grant copy batch 1: {:.2} GB/s, batch 32: {:.2} GB/s; memcpy {:.2} GB/s; raw frame copy {:.2} GB/s (medians)",
        median(&mut g1),
        median(&mut g32),
        median(&mut m),
        median(&mut r)
    );
    println!(
        "  grant copy / memcpy: batch 1 {:.2}x, batch 32 {:.2}x (median of per-round ratios)",
        median(&mut q1),
        median(&mut q32)
    );
    println!("  map+unmap: {:.2} M pairs/s (median)", median(&mut pairs));
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    grant_map(&mut c);
    grant_copy(&mut c);
    c.final_summary();
    if pvio_bench::wants_interleaved() {
        interleaved();
    }
}
