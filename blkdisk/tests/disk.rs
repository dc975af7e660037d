//! `UringDisk`, `NullDisk` and `RawUring` against real files.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use pvio_blkdisk::{
    Completion, DirectIo, Disk, DiskError, DiskOp, DiskOpKind, DiskQueue, FileOptions, NullDisk,
    RawUring, SECTOR_SIZE, Seg, UringDisk,
};
use pvio_shmem::{AccessLog, HeapMem};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A file of `bytes` random bytes in `dir`; returns its path and contents.
fn image(dir: &Path, bytes: usize, rng: &mut Rng) -> (PathBuf, Vec<u8>) {
    let path = dir.join("disk.img");
    let data = rng.bytes(bytes);
    fs::write(&path, &data).unwrap();
    (path, data)
}

fn fs_name(dir: &Path) -> &'static str {
    match nix::sys::statfs::statfs(dir).map(|s| s.filesystem_type()) {
        Ok(nix::sys::statfs::EXT4_SUPER_MAGIC) => "ext4",
        Ok(nix::sys::statfs::TMPFS_MAGIC) => "tmpfs",
        Ok(nix::sys::statfs::BTRFS_SUPER_MAGIC) => "btrfs",
        Ok(nix::sys::statfs::XFS_SUPER_MAGIC) => "xfs",
        Ok(nix::sys::statfs::OVERLAYFS_SUPER_MAGIC) => "overlayfs",
        _ => "other",
    }
}

fn heap_seg(size: usize, offset: usize, len: usize) -> Seg {
    Seg {
        mem: Arc::new(HeapMem::new(size).unwrap()),
        offset,
        len,
    }
}

/// A segment of `len` bytes in one of the memory layouts a backend sees:
/// page-aligned plain memory (in place), plain memory at 512 into a page or
/// at an odd address (in place when buffered, bounced when the direct-I/O
/// memory alignment is not met), or memory without a raw view (bounced).
fn random_seg(rng: &mut Rng, len: usize) -> Seg {
    let pages = len.div_ceil(4096) + 1;
    match rng.range(0, 3) {
        0 => heap_seg(pages * 4096, 4096 * rng.range(0, 1) as usize, len),
        1 => heap_seg(pages * 4096, 512, len),
        2 => heap_seg(pages * 4096, 3, len),
        _ => Seg {
            mem: Arc::new(AccessLog::new(HeapMem::new(pages * 4096).unwrap())),
            offset: 512 * rng.range(0, 7) as usize,
            len,
        },
    }
}

fn seg_bytes(s: &Seg) -> Vec<u8> {
    let mut v = vec![0; s.len];
    s.mem.read_bytes(s.offset, &mut v).unwrap();
    v
}

fn op_bytes(op: &DiskOp) -> Vec<u8> {
    op.segs.iter().flat_map(seg_bytes).collect()
}

fn op(tag: u64, kind: DiskOpKind, sector: u64, segs: Vec<Seg>) -> DiskOp {
    DiskOp {
        tag,
        kind,
        sector,
        segs,
    }
}

/// Reaps until nothing is in flight.
fn drain(q: &mut dyn DiskQueue) -> Vec<Completion> {
    q.submit().unwrap();
    let mut out = Vec::new();
    while q.in_flight() > 0 {
        q.reap(q.in_flight(), &mut out).unwrap();
    }
    out
}

/// Runs one op to completion.
fn run(q: &mut dyn DiskQueue, op: DiskOp) -> Completion {
    q.push(op).unwrap();
    let mut c = drain(q);
    assert_eq!(c.len(), 1);
    c.pop().unwrap()
}

struct Pending {
    start: u64,
    end: u64,
    /// For a read: what it must return.
    expect: Option<Vec<u8>>,
}

/// `ops` random reads and writes (and a few flushes) of random sector
/// ranges and segment layouts through a queue of `depth`, up to `depth` in
/// flight, checked against `model`, which the writes update. Ops in flight
/// together never overlap, so each read has one right answer.
fn workload(disk: &dyn Disk, model: &mut [u8], depth: u32, ops: u64, rng: &mut Rng) {
    let sectors = disk.info().sectors;
    assert_eq!(sectors * SECTOR_SIZE, model.len() as u64);
    let mut q = disk.queue(depth).unwrap();
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut done = Vec::new();
    let mut tag = 0;
    let check = |done: &mut Vec<Completion>, pending: &mut HashMap<u64, Pending>| {
        for c in done.drain(..) {
            if let Err(e) = &c.result {
                panic!("op {} {:?} failed: {e}", c.tag, c.op.kind);
            }
            let p = pending.remove(&c.tag).expect("unknown tag");
            if let Some(expect) = p.expect {
                assert!(
                    op_bytes(&c.op) == expect,
                    "read {} of bytes {}..{} returned wrong data",
                    c.tag,
                    p.start,
                    p.end
                );
            }
        }
    };
    while tag < ops {
        if q.room() == 0 || rng.chance(20) {
            q.submit().unwrap();
            let min = if q.room() == 0 {
                1
            } else {
                rng.range(0, q.in_flight() as u64) as usize
            };
            q.reap(min, &mut done).unwrap();
            check(&mut done, &mut pending);
            continue;
        }
        tag += 1;
        if rng.chance(3) {
            q.push(op(tag, DiskOpKind::Flush, 0, Vec::new())).unwrap();
            pending.insert(
                tag,
                Pending {
                    start: 0,
                    end: 0,
                    expect: None,
                },
            );
            continue;
        }
        let lens: Vec<usize> = (0..rng.range(1, 4))
            .map(|_| 512 * rng.range(1, 8) as usize)
            .collect();
        let bytes: u64 = lens.iter().map(|&l| l as u64).sum();
        let sector = rng.range(0, sectors - bytes / SECTOR_SIZE);
        let (start, end) = (sector * SECTOR_SIZE, sector * SECTOR_SIZE + bytes);
        if pending.values().any(|p| p.start < end && start < p.end) {
            tag -= 1;
            q.submit().unwrap();
            q.reap(1.min(q.in_flight()), &mut done).unwrap();
            check(&mut done, &mut pending);
            continue;
        }
        let segs: Vec<Seg> = lens.iter().map(|&l| random_seg(rng, l)).collect();
        let range = start as usize..end as usize;
        let (kind, expect) = if rng.chance(50) {
            let data = rng.bytes(bytes as usize);
            let mut at = 0;
            for s in &segs {
                s.mem.write_bytes(s.offset, &data[at..at + s.len]).unwrap();
                at += s.len;
            }
            model[range].copy_from_slice(&data);
            (DiskOpKind::Write, None)
        } else {
            for s in &segs {
                s.mem.fill(s.offset, s.len, 0xEE).unwrap();
            }
            (DiskOpKind::Read, Some(model[range].to_vec()))
        };
        q.push(op(tag, kind, sector, segs)).unwrap();
        pending.insert(tag, Pending { start, end, expect });
        if rng.chance(30) {
            q.submit().unwrap();
        }
    }
    done.extend(drain(&mut *q));
    check(&mut done, &mut pending);
    assert!(pending.is_empty());
    assert_eq!(q.room(), depth as usize);
}

/// The random workload at depths 1 and 32 on an image in a fresh directory
/// under `base`, then the file compared with the model through std::fs.
fn integrity(base: &str, direct: DirectIo, seed: u64) {
    let dir = tempfile::tempdir_in(base).unwrap();
    let mut rng = Rng::new(seed);
    let (path, mut model) = image(dir.path(), 2 << 20, &mut rng);
    for depth in [1, 32] {
        let disk = UringDisk::open(
            &path,
            FileOptions {
                readonly: false,
                direct,
            },
        )
        .unwrap();
        eprintln!(
            "{base} ({}): DirectIo::{direct:?} -> {}{}, {:?}",
            fs_name(dir.path()),
            if disk.direct() {
                "O_DIRECT"
            } else {
                "buffered"
            },
            if disk.inline() { ", inline" } else { "" },
            disk.info()
        );
        if fs_name(dir.path()) != "tmpfs" {
            assert!(!disk.inline(), "only memory filesystems go inline");
        }
        if direct == DirectIo::Never {
            assert!(!disk.direct());
        }
        workload(&disk, &mut model, depth, 400, &mut rng);
        drop(disk);
        assert!(fs::read(&path).unwrap() == model, "file differs from model");
    }
}

#[test]
fn integrity_ext4_auto() {
    integrity("/tmp", DirectIo::Auto, 1);
}

#[test]
fn integrity_ext4_buffered() {
    integrity("/tmp", DirectIo::Never, 2);
}

#[test]
fn integrity_tmpfs_auto() {
    integrity("/dev/shm", DirectIo::Auto, 3);
}

#[test]
fn integrity_tmpfs_buffered() {
    integrity("/dev/shm", DirectIo::Never, 4);
}

/// A loop device with 4096-byte sectors, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(file: &Path) -> Option<Loop> {
        let out = Command::new("losetup")
            .args(["--sector-size", "4096", "--find", "--show"])
            .arg(file)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("losetup: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        Some(Loop(String::from_utf8(out.stdout).ok()?.trim().to_owned()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// On a device whose direct-I/O alignment is 4096, ops at 512-byte
/// granularity cannot go direct: they take the buffered descriptor, and the
/// data still matches (the aligned ones stay direct).
#[test]
fn integrity_4k_sector_device_misaligned_ops_go_buffered() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let mut rng = Rng::new(5);
    let (backing, mut model) = image(dir.path(), 2 << 20, &mut rng);
    let Some(dev) = Loop::attach(&backing) else {
        eprintln!("SKIPPED: no loop device with 4096-byte sectors");
        return;
    };
    for depth in [1, 32] {
        let disk = UringDisk::open(&dev.0, FileOptions::default()).unwrap();
        eprintln!("{} (4096-byte sectors): {:?}", dev.0, disk.info());
        assert!(disk.direct());
        assert_eq!(disk.info().sector_size, 4096);
        workload(&disk, &mut model, depth, 400, &mut rng);
        drop(disk);
        assert!(
            fs::read(&dev.0).unwrap() == model,
            "device differs from model"
        );
    }
}

#[test]
fn direct_always_and_never() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (path, _) = image(dir.path(), 64 << 10, &mut Rng::new(6));
    let always = FileOptions {
        readonly: false,
        direct: DirectIo::Always,
    };
    match UringDisk::open(&path, always) {
        Ok(d) => assert!(d.direct()),
        Err(e) => eprintln!("O_DIRECT refused on /tmp: {e}"),
    }
    let never = FileOptions {
        readonly: false,
        direct: DirectIo::Never,
    };
    assert!(!UringDisk::open(&path, never).unwrap().direct());
}

#[test]
fn info_describes_the_image() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (path, _) = image(dir.path(), 1 << 20, &mut Rng::new(7));
    for direct in [DirectIo::Auto, DirectIo::Never] {
        let disk = UringDisk::open(
            &path,
            FileOptions {
                readonly: true,
                direct,
            },
        )
        .unwrap();
        let info = disk.info();
        assert_eq!(info.sectors, 2048);
        assert!(info.sector_size >= 512 && info.sector_size.is_power_of_two());
        if !disk.direct() {
            assert_eq!(info.sector_size, 512);
        }
        assert!(info.physical_sector_size >= info.sector_size);
        assert!(info.physical_sector_size <= 4096);
        assert!(info.readonly && info.flush && info.discard);
        assert!(info.discard_granularity >= info.sector_size);
    }
}

fn open_rw(path: &Path) -> UringDisk {
    UringDisk::open(path, FileOptions::default()).unwrap()
}

#[test]
fn flush_completes_ok() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (path, _) = image(dir.path(), 64 << 10, &mut Rng::new(8));
    let disk = open_rw(&path);
    let mut q = disk.queue(4).unwrap();
    let w = heap_seg(4096, 0, 4096);
    q.push(op(1, DiskOpKind::Write, 8, vec![w])).unwrap();
    q.push(op(2, DiskOpKind::Flush, 0, Vec::new())).unwrap();
    let c = drain(&mut *q);
    assert_eq!(c.len(), 2);
    for c in c {
        c.result.unwrap();
    }
}

#[test]
fn discard_zeroes_the_range_and_keeps_the_size() {
    for base in ["/tmp", "/dev/shm"] {
        let dir = tempfile::tempdir_in(base).unwrap();
        let (path, mut model) = image(dir.path(), 256 << 10, &mut Rng::new(9));
        let disk = open_rw(&path);
        let mut q = disk.queue(4).unwrap();
        // One whole-block range and one ragged one.
        for (sector, sectors) in [(16, 64), (3, 5)] {
            let c = run(
                &mut *q,
                op(1, DiskOpKind::Discard { sectors }, sector, Vec::new()),
            );
            c.result.unwrap();
            let r = (sector * 512) as usize..((sector + sectors) * 512) as usize;
            model[r].fill(0);
            let seg = heap_seg(64 * 512, 0, (sectors * 512) as usize);
            seg.mem.fill(0, seg.len, 0xEE).unwrap();
            let c = run(&mut *q, op(2, DiskOpKind::Read, sector, vec![seg.clone()]));
            c.result.unwrap();
            assert!(
                seg_bytes(&seg).iter().all(|&b| b == 0),
                "{base}: not zeroed"
            );
        }
        drop(q);
        assert_eq!(fs::metadata(&path).unwrap().len(), 256 << 10);
        assert!(fs::read(&path).unwrap() == model, "{base}: file differs");
    }
}

#[test]
fn out_of_range_ops_complete_with_invalid() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (path, _) = image(dir.path(), 64 << 10, &mut Rng::new(10));
    let disk = open_rw(&path);
    let mut q = disk.queue(8).unwrap();
    let end = disk.info().sectors;
    let bad = [
        op(1, DiskOpKind::Read, end, vec![heap_seg(4096, 0, 512)]),
        op(2, DiskOpKind::Write, end - 1, vec![heap_seg(4096, 0, 1024)]),
        op(3, DiskOpKind::Discard { sectors: 2 }, end - 1, Vec::new()),
        op(4, DiskOpKind::Read, u64::MAX, vec![heap_seg(4096, 0, 512)]),
        op(5, DiskOpKind::Read, 0, vec![heap_seg(4096, 0, 100)]),
    ];
    for o in bad {
        q.push(o).unwrap();
    }
    assert_eq!(q.in_flight(), 5);
    assert_eq!(q.room(), 3);
    let c = drain(&mut *q);
    assert_eq!(c.len(), 5);
    for c in c {
        assert!(
            matches!(c.result, Err(DiskError::Invalid(_))),
            "op {}: {:?}",
            c.tag,
            c.result
        );
    }
    assert_eq!(q.room(), 8);
}

#[test]
fn readonly_disk_reads_but_refuses_writes_and_discards() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (path, data) = image(dir.path(), 64 << 10, &mut Rng::new(11));
    let disk = UringDisk::open(
        &path,
        FileOptions {
            readonly: true,
            direct: DirectIo::Auto,
        },
    )
    .unwrap();
    assert!(disk.info().readonly);
    let mut q = disk.queue(4).unwrap();
    let c = run(
        &mut *q,
        op(1, DiskOpKind::Write, 0, vec![heap_seg(4096, 0, 4096)]),
    );
    assert!(matches!(c.result, Err(DiskError::ReadOnly)));
    let c = run(
        &mut *q,
        op(2, DiskOpKind::Discard { sectors: 8 }, 0, Vec::new()),
    );
    assert!(matches!(c.result, Err(DiskError::ReadOnly)));
    let seg = heap_seg(4096, 0, 4096);
    let c = run(&mut *q, op(3, DiskOpKind::Read, 2, vec![seg.clone()]));
    c.result.unwrap();
    assert!(seg_bytes(&seg) == data[1024..1024 + 4096]);
    drop(q);
    assert!(fs::read(&path).unwrap() == data);
}

#[test]
fn push_beyond_depth_is_queue_full() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (path, _) = image(dir.path(), 64 << 10, &mut Rng::new(12));
    let disk = open_rw(&path);
    let mut q = disk.queue(4).unwrap();
    for tag in 0..4 {
        assert_eq!(q.room(), 4 - tag as usize);
        let segs = vec![heap_seg(4096, 0, 4096)];
        q.push(op(tag, DiskOpKind::Read, tag * 8, segs)).unwrap();
    }
    // An invalid op counts against the depth too.
    assert_eq!(q.room(), 0);
    let (e, back) = q
        .push(op(
            9,
            DiskOpKind::Read,
            1 << 40,
            vec![heap_seg(4096, 0, 512)],
        ))
        .unwrap_err();
    assert!(matches!(e, DiskError::QueueFull));
    assert_eq!(back.tag, 9);
    assert_eq!(q.in_flight(), 4);
    q.submit().unwrap();
    assert_eq!(q.room(), 0);
    let mut out = Vec::new();
    while q.in_flight() > 0 {
        q.reap(1, &mut out).unwrap();
    }
    assert_eq!(out.len(), 4);
    assert!(out.iter().all(|c| c.result.is_ok()));
    assert_eq!(q.room(), 4);
    // Invalid ops completed at push also hold their place until reaped.
    let mut q = disk.queue(1).unwrap();
    q.push(op(
        1,
        DiskOpKind::Read,
        1 << 40,
        vec![heap_seg(4096, 0, 512)],
    ))
    .unwrap();
    assert!(matches!(
        q.push(op(2, DiskOpKind::Flush, 0, Vec::new())),
        Err((DiskError::QueueFull, _))
    ));
    assert_eq!(drain(&mut *q).len(), 1);
}

#[test]
fn dropping_a_queue_with_ops_in_flight_completes_them_first() {
    for base in ["/tmp", "/dev/shm"] {
        let dir = tempfile::tempdir_in(base).unwrap();
        let (path, _) = image(dir.path(), 8 << 20, &mut Rng::new(13));
        let disk = open_rw(&path);
        let mem: Arc<HeapMem> = Arc::new(HeapMem::new(64 << 10).unwrap());
        let opaque = Arc::new(AccessLog::new(HeapMem::new(64 << 10).unwrap()));
        let mut q = disk.queue(32).unwrap();
        for tag in 0..32u64 {
            let seg = if tag % 4 == 3 {
                Seg {
                    mem: opaque.clone(),
                    offset: 0,
                    len: 64 << 10,
                }
            } else {
                Seg {
                    mem: mem.clone(),
                    offset: 0,
                    len: 64 << 10,
                }
            };
            let kind = if tag % 2 == 0 {
                DiskOpKind::Write
            } else {
                DiskOpKind::Read
            };
            q.push(op(tag, kind, tag * 128, vec![seg])).unwrap();
        }
        q.submit().unwrap();
        assert!(q.in_flight() == 32);
        drop(q);
        assert_eq!(Arc::strong_count(&mem), 1, "{base}: segments leaked");
        assert_eq!(Arc::strong_count(&opaque), 1, "{base}: segments leaked");
        // The queue's pushed-but-not-submitted ops are released too.
        let mut q = disk.queue(4).unwrap();
        let seg = Seg {
            mem: mem.clone(),
            offset: 0,
            len: 4096,
        };
        q.push(op(1, DiskOpKind::Write, 0, vec![seg])).unwrap();
        drop(q);
        assert_eq!(Arc::strong_count(&mem), 1);
    }
}

#[test]
fn open_rejects_a_size_not_a_multiple_of_512() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let path = dir.path().join("odd.img");
    fs::write(&path, vec![0u8; 4096 + 100]).unwrap();
    let e = UringDisk::open(&path, FileOptions::default()).unwrap_err();
    assert!(matches!(e, DiskError::Invalid(_)), "{e}");
    assert!(e.to_string().contains("512"), "{e}");
}

#[test]
fn open_rejects_an_empty_file() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let path = dir.path().join("empty.img");
    File::create(&path).unwrap();
    let e = UringDisk::open(&path, FileOptions::default()).unwrap_err();
    assert!(matches!(e, DiskError::Invalid(_)), "{e}");
}

#[test]
fn open_rejects_a_missing_path() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let e = UringDisk::open(dir.path().join("nope.img"), FileOptions::default()).unwrap_err();
    assert!(
        matches!(&e, DiskError::Io(io) if io.kind() == std::io::ErrorKind::NotFound),
        "{e}"
    );
}

#[test]
fn open_rejects_a_directory() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let ro = FileOptions {
        readonly: true,
        direct: DirectIo::Never,
    };
    assert!(UringDisk::open(dir.path(), ro).is_err());
}

#[test]
fn null_disk_completes_valid_ops_and_fails_invalid_ones() {
    let disk = NullDisk::new(100);
    assert_eq!(disk.info().sectors, 100);
    let mut q = disk.queue(8).unwrap();
    q.push(op(1, DiskOpKind::Read, 0, vec![heap_seg(4096, 0, 4096)]))
        .unwrap();
    q.push(op(2, DiskOpKind::Write, 92, vec![heap_seg(4096, 0, 4096)]))
        .unwrap();
    q.push(op(3, DiskOpKind::Flush, 0, Vec::new())).unwrap();
    q.push(op(4, DiskOpKind::Discard { sectors: 10 }, 91, Vec::new()))
        .unwrap();
    q.push(op(5, DiskOpKind::Read, 99, vec![heap_seg(4096, 0, 1024)]))
        .unwrap();
    q.push(op(6, DiskOpKind::Write, 0, vec![heap_seg(4096, 0, 10)]))
        .unwrap();
    let mut c = drain(&mut *q);
    c.sort_by_key(|c| c.tag);
    let ok: Vec<bool> = c.iter().map(|c| c.result.is_ok()).collect();
    assert_eq!(ok, [true, true, true, false, false, false]);
    assert!(
        c[3..]
            .iter()
            .all(|c| matches!(c.result, Err(DiskError::Invalid(_))))
    );
}

#[test]
fn null_disk_respects_depth() {
    let disk = NullDisk::new(100);
    let mut q = disk.queue(2).unwrap();
    q.push(op(1, DiskOpKind::Flush, 0, Vec::new())).unwrap();
    q.push(op(2, DiskOpKind::Flush, 0, Vec::new())).unwrap();
    assert_eq!(q.room(), 0);
    let (e, back) = q.push(op(3, DiskOpKind::Flush, 0, Vec::new())).unwrap_err();
    assert!(matches!(e, DiskError::QueueFull));
    assert_eq!(back.tag, 3);
    q.submit().unwrap();
    assert_eq!(q.room(), 0);
    assert_eq!(drain(&mut *q).len(), 2);
    assert_eq!(q.room(), 2);
}

/// RawUring's buffers start zeroed and it has no way to fill them: writing
/// through it zeroes exactly the blocks it was given, and reading checks
/// every block transferred in full.
#[test]
fn raw_uring_writes_and_reads_whole_blocks() {
    for direct in [false, true] {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let (path, mut model) = image(dir.path(), 1 << 20, &mut Rng::new(14));
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags_direct(direct)
            .open(&path)
            .unwrap();
        let mut raw = RawUring::new(8, 4096).unwrap();
        // Every third block, out of order.
        let blocks: Vec<u64> = (0..256).filter(|b| b % 3 == 0).rev().collect();
        let mut it = blocks.iter();
        raw.run(&file, true, blocks.len() as u64, || {
            it.next().unwrap() * 4096
        })
        .unwrap();
        for b in &blocks {
            let at = (*b * 4096) as usize;
            model[at..at + 4096].fill(0);
        }
        assert!(
            fs::read(&path).unwrap() == model,
            "direct={direct}: file differs"
        );
        let mut n = 0;
        raw.run(&file, false, 256, || {
            n += 1;
            (n - 1) * 4096
        })
        .unwrap();
        // A block past the end is a short read: an error.
        assert!(raw.run(&file, false, 1, || 1 << 20).is_err());
    }
}

trait DirectFlag {
    fn custom_flags_direct(&mut self, direct: bool) -> &mut Self;
}

impl DirectFlag for fs::OpenOptions {
    fn custom_flags_direct(&mut self, direct: bool) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(if direct { libc::O_DIRECT } else { 0 })
    }
}
