//! blkfront against blkback on an io_uring image file: data integrity with
//! every feature on and with each one off, flush and discard, the backend
//! restart replay (BF3), disconnects with I/O in flight (BB11, BB12).

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{GUARD, GateDisk, Rng, domains};
use pvio_blkback::BlkbackConfig;
use pvio_blkdisk::{Disk, FileOptions, MemDisk, UringDisk};
use pvio_blkfront::{BlkError, Blkfront, BlkfrontConfig, BlockDone, BlockIo, BlockOp};

const SECTORS: u64 = 16 * 1024; // 8 MiB

fn image(dir: &Path, sectors: u64) -> PathBuf {
    let path = dir.join("disk.img");
    let f = File::create(&path).unwrap();
    f.set_len(sectors * 512).unwrap();
    path
}

fn file_bytes(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    File::open(path).unwrap().read_to_end(&mut v).unwrap();
    v
}

/// Random writes of random sizes and alignment through `f`, many in flight,
/// interleaved with reads checked against the model, flushes and discards.
fn workload(f: &mut Blkfront, model: &mut [u8], seed: u64, ops: usize) {
    let mut rng = Rng(seed);
    let sectors = model.len() as u64 / 512;
    let info = f.info();
    let mut out: Vec<BlockDone> = Vec::new();
    let mut pending_reads: HashMap<u64, (u64, usize)> = HashMap::new();
    let mut pending_writes: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut tag = 0u64;
    for i in 0..ops {
        // Up to 1 MiB: big enough for indirect requests and splitting.
        let len_sectors = match rng.below(4) {
            0 => 1 + rng.below(8),
            1 => 8 * (1 + rng.below(4)),
            2 => 1 + rng.below(300),
            _ => 1 + rng.below(2048),
        };
        let sector = rng.below(sectors - len_sectors);
        let len = len_sectors as usize * 512;
        tag += 1;
        if rng.below(3) == 0 {
            // A read, checked when it completes; only while no write to the
            // device is in flight, so the model is exact.
            drain(f, &mut out, model, &mut pending_reads);
            pending_reads.insert(tag, (sector, len));
            f.submit(BlockIo {
                tag,
                op: BlockOp::Read,
                sector,
                data: vec![0xee; len],
            })
            .unwrap();
            drain(f, &mut out, model, &mut pending_reads);
        } else {
            // Overlapping writes in flight may land in either order (a block
            // device does not order them): wait for those first.
            let end = sector + len_sectors;
            if pending_writes.values().any(|&(s, e)| s < end && sector < e) {
                drain(f, &mut out, model, &mut pending_reads);
                pending_writes.clear();
            }
            pending_writes.insert(tag, (sector, end));
            let mut data = vec![0; len];
            rng.fill(&mut data);
            let at = sector as usize * 512;
            model[at..at + len].copy_from_slice(&data);
            f.submit(BlockIo {
                tag,
                op: BlockOp::Write,
                sector,
                data,
            })
            .unwrap();
        }
        if i % 50 == 49 {
            drain(f, &mut out, model, &mut pending_reads);
            f.flush().unwrap();
        }
        if i % 97 == 96 && info.discard {
            drain(f, &mut out, model, &mut pending_reads);
            let n = 8 * (1 + rng.below(64));
            let s = rng.below(sectors - n) & !7;
            f.discard(s, n).unwrap();
            let at = s as usize * 512;
            model[at..at + n as usize * 512].fill(0);
        }
        if f.in_flight() >= 32 {
            f.wait(1, GUARD, &mut out);
            for d in &out {
                pending_writes.remove(&d.tag);
            }
            check(&mut out, model, &mut pending_reads);
        }
        if f.in_flight() == 0 {
            pending_writes.clear();
        }
    }
    drain(f, &mut out, model, &mut pending_reads);
    f.flush().unwrap();
}

fn drain(
    f: &mut Blkfront,
    out: &mut Vec<BlockDone>,
    model: &[u8],
    reads: &mut HashMap<u64, (u64, usize)>,
) {
    let deadline = Instant::now() + GUARD;
    while f.in_flight() > 0 {
        assert!(Instant::now() < deadline, "I/O did not complete");
        f.wait(f.in_flight(), GUARD, out);
        check(out, model, reads);
    }
}

fn check(out: &mut Vec<BlockDone>, model: &[u8], reads: &mut HashMap<u64, (u64, usize)>) {
    for d in out.drain(..) {
        assert_eq!(d.result, Ok(()), "I/O {} failed", d.tag);
        if let Some((sector, len)) = reads.remove(&d.tag) {
            let at = sector as usize * 512;
            assert!(
                d.data == model[at..at + len],
                "read {} returned wrong data",
                d.tag
            );
        }
    }
}

fn integrity(cfg_be: BlkbackConfig, cfg_fe: BlkfrontConfig, trusted: &str, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), SECTORS);
    let disk = UringDisk::open(&path, FileOptions::default()).unwrap();
    let mut fx = domains(&[("trusted", trusted)]);
    fx.serve(Arc::new(disk), cfg_be);
    let mut f = fx.front(cfg_fe);
    let mut model = vec![0u8; (SECTORS * 512) as usize];
    workload(&mut f, &mut model, 0x1234_5678 ^ what.len() as u64, 400);
    // Reads through the frontend see the model...
    let mut back = vec![0u8; 1 << 20];
    for chunk in 0..(SECTORS * 512) as usize / back.len() {
        f.read_at((chunk * back.len() / 512) as u64, &mut back)
            .unwrap();
        assert!(
            back == model[chunk * back.len()..(chunk + 1) * back.len()],
            "{what}: read-back differs in MiB {chunk}"
        );
    }
    let info = f.info();
    let stats = f.stats();
    f.close();
    // ... and so does the image file.
    fx.back.take().unwrap().stop();
    assert!(
        file_bytes(&path) == model,
        "{what}: image file differs from the model"
    );
    eprintln!("{what}: {info:?} {stats:?}");
}

#[test]
fn integrity_every_feature_on() {
    integrity(
        BlkbackConfig::default(),
        BlkfrontConfig {
            ring_page_order: 4,
            queues: 2,
            ..BlkfrontConfig::default()
        },
        "1",
        "all features",
    );
}

#[test]
fn integrity_without_persistent_grants() {
    integrity(
        BlkbackConfig::default(),
        BlkfrontConfig {
            persistent: false,
            ..BlkfrontConfig::default()
        },
        "1",
        "no persistent grants",
    );
}

#[test]
fn integrity_without_indirect_requests() {
    integrity(
        BlkbackConfig::default(),
        BlkfrontConfig {
            max_indirect_segments: 0,
            ..BlkfrontConfig::default()
        },
        "1",
        "no indirect",
    );
}

#[test]
fn integrity_single_page_ring_single_queue() {
    integrity(
        BlkbackConfig::default(),
        BlkfrontConfig {
            ring_page_order: 0,
            queues: 1,
            ..BlkfrontConfig::default()
        },
        "1",
        "one-page ring",
    );
}

#[test]
fn integrity_without_flush_discard_barrier() {
    integrity(
        BlkbackConfig::default(),
        BlkfrontConfig {
            flush: false,
            barrier: false,
            discard: false,
            ..BlkfrontConfig::default()
        },
        "1",
        "no flush/barrier/discard (frontend)",
    );
}

#[test]
fn integrity_barrier_instead_of_flush() {
    integrity(
        BlkbackConfig {
            flush: false,
            ..BlkbackConfig::default()
        },
        BlkfrontConfig::default(),
        "1",
        "barrier for flush",
    );
}

#[test]
fn integrity_backend_offers_nothing() {
    integrity(
        BlkbackConfig {
            max_ring_page_order: 0,
            max_queues: 1,
            max_indirect_segments: 0,
            persistent: false,
            flush: false,
            barrier: false,
            discard: false,
            ..BlkbackConfig::default()
        },
        BlkfrontConfig {
            ring_page_order: 4,
            queues: 4,
            ..BlkfrontConfig::default()
        },
        "1",
        "backend offers nothing",
    );
}

#[test]
fn integrity_untrusted_backend() {
    integrity(
        BlkbackConfig::default(),
        BlkfrontConfig::default(),
        "0",
        "untrusted backend",
    );
}

#[test]
fn negotiation_follows_both_sides() {
    let mut fx = domains(&[]);
    fx.serve(
        Arc::new(MemDisk::new(SECTORS, false)),
        BlkbackConfig {
            max_ring_page_order: 2,
            max_queues: 2,
            max_indirect_segments: 64,
            ..BlkbackConfig::default()
        },
    );
    let f = fx.front(BlkfrontConfig {
        ring_page_order: 4,
        queues: 3,
        max_indirect_segments: 128,
        ..BlkfrontConfig::default()
    });
    let i = f.info();
    assert_eq!(
        (i.ring_page_order, i.queues, i.max_indirect_segments),
        (2, 2, 64)
    );
    assert!(i.persistent && i.flush && i.discard && i.trusted && !i.readonly);
    assert_eq!(i.sectors, SECTORS);
    let xs = fx.dom0.store();
    let k = |k: &str| String::from_utf8(xs.read(&fx.dev.frontend_key(k)).unwrap()).unwrap();
    assert_eq!(k("multi-queue-num-queues"), "2");
    assert_eq!(k("ring-page-order"), "2");
    assert_eq!(k("protocol"), "x86_64-abi");
    assert_eq!(k("feature-persistent"), "1");
    assert!(xs.read(&fx.dev.frontend_key("queue-1/ring-ref3")).is_ok());
    assert!(
        xs.read(&fx.dev.frontend_key("queue-1/event-channel"))
            .is_ok()
    );
    f.close();
}

#[test]
fn bad_requests_are_refused_before_the_ring() {
    let mut fx = domains(&[]);
    fx.serve(
        Arc::new(MemDisk::new(SECTORS, true)),
        BlkbackConfig {
            discard: false,
            ..BlkbackConfig::default()
        },
    );
    let mut f = fx.front(BlkfrontConfig::default());
    assert!(f.info().readonly);
    assert_eq!(f.write_at(0, &[0; 512]), Err(BlkError::ReadOnly));
    assert_eq!(f.discard(0, 8), Err(BlkError::Unsupported));
    let mut buf = vec![0; 100];
    assert!(matches!(f.read_at(0, &mut buf), Err(BlkError::Invalid(_))));
    let mut buf = vec![0; 1024];
    assert!(matches!(
        f.read_at(SECTORS - 1, &mut buf),
        Err(BlkError::Invalid(_))
    ));
    assert!(matches!(
        f.read_at(u64::MAX, &mut buf),
        Err(BlkError::Invalid(_))
    ));
    assert!(matches!(f.read_at(0, &mut []), Err(BlkError::Invalid(_))));
    f.read_at(SECTORS - 2, &mut buf).unwrap();
    assert_eq!(
        f.stats().requests,
        1,
        "only the valid read reached the ring"
    );
    f.close();
}

#[test]
fn backend_errors_come_back_per_request() {
    // The backend refuses a discard it does not offer with EOPNOTSUPP; the
    // device keeps working.
    let mut fx = domains(&[]);
    fx.serve(
        Arc::new(MemDisk::new(SECTORS, false)),
        BlkbackConfig::default(),
    );
    let mut f = fx.front(BlkfrontConfig::default());
    f.write_at(8, &[7; 4096]).unwrap();
    let mut buf = vec![0; 4096];
    f.read_at(8, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 7));
    f.close();
}

/// BF3: the backend stops with requests on the ring it never took; a new
/// backend connects; every request completes exactly once, with the data
/// on disk.
#[test]
fn bf3_backend_restart_replays_in_flight_requests_exactly_once() {
    let mem = MemDisk::new(SECTORS, false);
    let gate = GateDisk::new(Arc::new(mem.clone()));
    let mut fx = domains(&[]);
    let be_cfg = BlkbackConfig {
        queue_depth: 4,
        ..BlkbackConfig::default()
    };
    fx.serve(Arc::new(gate.clone()), be_cfg);
    let mut f = fx.front(BlkfrontConfig::default());
    let n = 40u64;
    for tag in 0..n {
        f.submit(BlockIo {
            tag,
            op: BlockOp::Write,
            sector: tag * 16,
            data: vec![tag as u8 + 1; 8192],
        })
        .unwrap();
    }
    // The backend holds 4 writes at the disk; the rest wait on the ring.
    std::thread::sleep(Duration::from_millis(50));
    let back = fx.back.take().unwrap();
    // Stopping before the gate opens (not in the stopper thread, which a
    // loaded machine may run late): the old backend takes nothing more.
    back.request_stop();
    let stopper = std::thread::spawn(move || back.stop());
    std::thread::sleep(Duration::from_millis(50));
    gate.open(); // the old backend finishes what it took (BB11), then goes.
    stopper.join().unwrap();
    // A new backend for the same device.
    fx.serve(Arc::new(mem.clone()), be_cfg);
    let mut seen = HashMap::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + GUARD;
    while seen.len() < n as usize {
        assert!(
            Instant::now() < deadline,
            "replayed requests did not complete"
        );
        f.wait(1, Duration::from_millis(100), &mut out);
        for d in out.drain(..) {
            assert_eq!(d.result, Ok(()), "write {} failed", d.tag);
            *seen.entry(d.tag).or_insert(0) += 1;
        }
    }
    assert!(
        seen.values().all(|&c| c == 1),
        "each completes exactly once"
    );
    assert_eq!(f.in_flight(), 0);
    let stats = f.stats();
    assert!(stats.replayed > 0, "something was replayed: {stats:?}");
    assert_eq!(stats.connects, 2);
    let contents = mem.contents();
    for tag in 0..n {
        let at = (tag * 16 * 512) as usize;
        assert!(contents[at..at + 8192].iter().all(|&b| b == tag as u8 + 1));
    }
    // Still usable.
    f.write_at(0, &[9; 512]).unwrap();
    f.close();
}

/// BB11 through blkfront: the frontend closes while I/O is at the disk; the
/// backend finishes it, then releases every mapping.
#[test]
fn bb11_close_with_io_in_flight_releases_everything() {
    let mem = MemDisk::new(SECTORS, false);
    let gate = GateDisk::new(Arc::new(mem.clone()));
    let mut fx = domains(&[]);
    fx.serve(Arc::new(gate.clone()), BlkbackConfig::default());
    let mut f = fx.front(BlkfrontConfig::default());
    for tag in 0..8u64 {
        f.submit(BlockIo {
            tag,
            op: BlockOp::Write,
            sector: tag * 8,
            data: vec![3; 4096],
        })
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(30));
    assert!(fx.be.live_mappings() > 0);
    let g = gate.clone();
    let opener = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        g.open();
    });
    f.close(); // waits for the I/O, then disconnects
    opener.join().unwrap();
    let deadline = Instant::now() + GUARD;
    while fx.be.live_mappings() > 0 {
        assert!(Instant::now() < deadline, "backend kept mappings");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(mem.contents()[..8 * 8 * 512].iter().all(|&b| b == 3));
}

/// A frontend domain destroyed with I/O in flight: the backend finishes,
/// releases every mapping, and serves again (BB12 / G12).
#[test]
fn frontend_destroyed_mid_io_backend_releases_everything() {
    let mem = MemDisk::new(SECTORS, false);
    let gate = GateDisk::new(Arc::new(mem.clone()));
    let mut fx = domains(&[]);
    fx.serve(Arc::new(gate.clone()), BlkbackConfig::default());
    let mut f = fx.front(BlkfrontConfig::default());
    for tag in 0..8u64 {
        f.submit(BlockIo {
            tag,
            op: BlockOp::Read,
            sector: tag * 8,
            data: vec![0; 4096],
        })
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(30));
    fx.hv.destroy_domain(fx.fe.id()).unwrap();
    gate.open();
    drop(f);
    let deadline = Instant::now() + GUARD;
    while fx.be.live_mappings() > 0 {
        assert!(Instant::now() < deadline, "backend kept mappings");
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = fx.back.as_ref().unwrap().stats();
    assert_eq!(stats.persistent_grants, 0);
}

#[test]
fn image_file_on_tmpfs_too() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let path = image(dir.path(), 4096);
    let disk = UringDisk::open(&path, FileOptions::default()).unwrap();
    let mut fx = domains(&[]);
    fx.serve(Arc::new(disk) as Arc<dyn Disk>, BlkbackConfig::default());
    let mut f = fx.front(BlkfrontConfig::default());
    let mut model = vec![0u8; 4096 * 512];
    workload(&mut f, &mut model, 99, 150);
    f.close();
    fx.back.take().unwrap().stop();
    assert!(file_bytes(&path) == model);
}

/// BF3, crash variant: the backend domain is destroyed with I/O at its disk
/// and requests on the ring; the toolstack brings up a new backend domain
/// (same id) and device; every request completes exactly once.
#[test]
fn bf3_backend_domain_destroyed_mid_io_replays_exactly_once() {
    let mem = MemDisk::new(SECTORS, false);
    let gate = GateDisk::new(Arc::new(mem.clone()));
    let mut fx = domains(&[]);
    let be_cfg = BlkbackConfig {
        queue_depth: 4,
        ..BlkbackConfig::default()
    };
    fx.serve(Arc::new(gate.clone()), be_cfg);
    let mut f = fx.front(BlkfrontConfig::default());
    let n = 24u64;
    for tag in 0..n {
        f.submit(BlockIo {
            tag,
            op: BlockOp::Write,
            sector: tag * 16,
            data: vec![tag as u8 + 1; 4096],
        })
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    let be_id = fx.be.id();
    fx.hv.destroy_domain(be_id).unwrap();
    // The dead backend's threads finish what its disk held, then end (in
    // the embedded hypervisor a destroyed domain's threads are the
    // driver's own; the real ones would simply stop).
    gate.open();
    fx.back.take().unwrap().stop();
    // The toolstack's new backend domain and device.
    fx.be = fx
        .hv
        .create_domain(
            be_id,
            pvio_hv::DomainConfig {
                pages: 16384,
                ..pvio_hv::DomainConfig::default()
            },
        )
        .unwrap();
    pvio_xenbus::toolstack::create_device(&fx.dom0.store(), &fx.dev, &[], &[]).unwrap();
    fx.serve(Arc::new(mem.clone()), be_cfg);
    let mut seen = HashMap::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + GUARD;
    while seen.len() < n as usize {
        assert!(
            Instant::now() < deadline,
            "requests did not complete: {:?}",
            f.stats()
        );
        f.wait(1, Duration::from_millis(100), &mut out);
        for d in out.drain(..) {
            assert_eq!(d.result, Ok(()), "write {} failed", d.tag);
            *seen.entry(d.tag).or_insert(0) += 1;
        }
    }
    assert!(
        seen.values().all(|&c| c == 1),
        "each completes exactly once"
    );
    let contents = mem.contents();
    for tag in 0..n {
        let at = (tag * 16 * 512) as usize;
        assert!(contents[at..at + 4096].iter().all(|&b| b == tag as u8 + 1));
    }
    assert_eq!(f.stats().connects, 2);
    f.write_at(0, &[9; 512]).unwrap();
    f.close();
}
