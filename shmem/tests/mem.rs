//! Behaviour of every real-memory backend through the `SharedMem` trait.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use pvio_shmem::{
    AccessKind, AccessLog, HeapMem, MemError, MemfdError, MemfdMem, Ordering, PAGE_SIZE, SharedMem,
    SharedMemExt, Window,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Rec {
    a: u64,
    b: u32,
    c: u16,
    d: u16,
}

fn exercise<M: SharedMem>(mem: &M) {
    let size = mem.size();
    assert!(size >= PAGE_SIZE);
    // Typed copies at every alignment the granule logic distinguishes.
    for off in [0usize, 8, 12, 14, 17, 64, size - 16] {
        let r = Rec {
            a: 0x1122_3344_5566_7788,
            b: 0xdead_beef,
            c: 0x1234,
            d: off as u16,
        };
        mem.write_obj(off, &r).unwrap();
        assert_eq!(mem.read_obj::<Rec>(off).unwrap(), r, "offset {off}");
    }
    // Bounds: an object that would end past the region is refused.
    assert_eq!(
        mem.read_obj::<Rec>(size - 8),
        Err(MemError::OutOfBounds {
            offset: size - 8,
            len: 16,
            size
        })
    );
    assert!(
        mem.write_obj(usize::MAX, &0u32).is_err(),
        "offset overflow must not wrap"
    );
    // Atomics: aligned only.
    mem.store_u32(4, 7, Ordering::Release).unwrap();
    assert_eq!(mem.load_u32(4, Ordering::Acquire).unwrap(), 7);
    assert_eq!(
        mem.load_u32(6, Ordering::Relaxed),
        Err(MemError::Misaligned {
            offset: 6,
            align: 4
        })
    );
    assert_eq!(
        mem.compare_exchange_u32(4, 7, 9, Ordering::SeqCst, Ordering::SeqCst)
            .unwrap(),
        Ok(7)
    );
    assert_eq!(
        mem.compare_exchange_u32(4, 7, 1, Ordering::SeqCst, Ordering::SeqCst)
            .unwrap(),
        Err(9)
    );
    mem.store_u16(2, 0x00f0, Ordering::Relaxed).unwrap();
    assert_eq!(
        mem.fetch_or_u16(2, 0x000f, Ordering::AcqRel).unwrap(),
        0x00f0
    );
    assert_eq!(
        mem.fetch_and_u16(2, 0x0003, Ordering::AcqRel).unwrap(),
        0x00ff
    );
    assert_eq!(mem.load_u16(2, Ordering::Relaxed).unwrap(), 0x0003);
    assert_eq!(
        mem.load_u32(4, Ordering::Relaxed).unwrap(),
        9,
        "u16 ops must not touch the next word"
    );
    mem.store_u64(8, u64::MAX, Ordering::Relaxed).unwrap();
    assert_eq!(
        mem.fetch_and_u64(8, 1, Ordering::Relaxed).unwrap(),
        u64::MAX
    );
    assert_eq!(mem.fetch_or_u64(8, 2, Ordering::Relaxed).unwrap(), 1);
    assert_eq!(mem.load_u64(8, Ordering::Relaxed).unwrap(), 3);
    assert!(mem.load_u64(size, Ordering::Relaxed).is_err());
    // Fill and slices.
    mem.fill(100, 50, 0xAA).unwrap();
    let mut buf = [0u8; 52];
    mem.read_bytes(99, &mut buf).unwrap();
    assert!(buf[1..51].iter().all(|&b| b == 0xAA));
    let vals = [1u32, 2, 3, 4];
    mem.write_slice(256, &vals).unwrap();
    let mut out = [0u32; 4];
    mem.read_slice(256, &mut out).unwrap();
    assert_eq!(out, vals);
    mem.fence(Ordering::SeqCst);
}

#[test]
fn heap_mem_behaves() {
    let mem = HeapMem::pages(2).unwrap();
    assert_eq!(mem.size(), 2 * PAGE_SIZE);
    assert!(
        mem.to_vec().unwrap().iter().all(|&b| b == 0),
        "heap pages start zeroed"
    );
    exercise(&mem);
    assert!(HeapMem::new(0).is_none());
}

#[test]
fn memfd_mem_behaves() {
    let mem = MemfdMem::new(c"pvio-test", 3 * PAGE_SIZE).unwrap();
    assert_eq!(mem.size(), 3 * PAGE_SIZE);
    exercise(&mem);
    assert!(matches!(
        MemfdMem::new(c"zero", 0),
        Err(MemfdError::ZeroLength)
    ));
}

#[test]
fn memfd_two_mappings_share_pages() {
    let a = MemfdMem::new(c"pvio-share", PAGE_SIZE).unwrap();
    let b = MemfdMem::from_fd(a.fd().try_clone_to_owned().unwrap()).unwrap();
    assert_eq!(b.size(), PAGE_SIZE);
    a.store_u32(64, 0xfeed, Ordering::Release).unwrap();
    assert_eq!(b.load_u32(64, Ordering::Acquire).unwrap(), 0xfeed);
    b.write_obj(128, &[7u8; 16]).unwrap();
    assert_eq!(a.read_obj::<[u8; 16]>(128).unwrap(), [7u8; 16]);
}

/// SECURITY.md L3: a sealed memfd cannot be shrunk under a mapping, and an
/// unsealed fd from a peer is refused.
#[test]
fn l3_memfd_sealed_against_shrink() {
    let a = MemfdMem::new(c"pvio-seal", PAGE_SIZE).unwrap();
    let fd = a.fd().try_clone_to_owned().unwrap();
    let err = nix::unistd::ftruncate(&fd, 0).unwrap_err();
    assert_eq!(
        err,
        nix::errno::Errno::EPERM,
        "shrinking a sealed memfd must fail"
    );
    assert!(
        nix::unistd::ftruncate(&fd, 2 * PAGE_SIZE as i64).is_err(),
        "growing too"
    );

    let unsealed: OwnedFd =
        nix::sys::memfd::memfd_create(c"pvio-unsealed", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .unwrap();
    nix::unistd::ftruncate(&unsealed, PAGE_SIZE as i64).unwrap();
    assert!(matches!(
        MemfdMem::from_fd(unsealed),
        Err(MemfdError::NotSealed { .. })
    ));
}

#[test]
fn window_is_bounds_checked_against_itself() {
    let mem = Arc::new(HeapMem::pages(1).unwrap());
    let w = Window::new(mem.clone(), 1024, 512).unwrap();
    assert_eq!(w.size(), 512);
    w.store_u32(0, 5, Ordering::Relaxed).unwrap();
    assert_eq!(mem.load_u32(1024, Ordering::Relaxed).unwrap(), 5);
    assert!(w.read_obj::<u64>(508).is_err(), "crossing the window's end");
    assert!(w.store_u32(512, 1, Ordering::Relaxed).is_err());
    assert!(
        Window::new(mem.clone(), 4000, 200).is_err(),
        "window past the parent"
    );
    assert!(Window::new(mem, usize::MAX, 2).is_err());
}

#[test]
fn access_log_records_in_order() {
    let log = AccessLog::new(HeapMem::pages(1).unwrap());
    log.write_obj(64, &7u64).unwrap();
    let _ = log.load_u32(0, Ordering::Acquire).unwrap();
    let _: u64 = log.read_obj(64).unwrap();
    let got: Vec<_> = log
        .take()
        .into_iter()
        .map(|a| (a.kind, a.offset, a.len))
        .collect();
    assert_eq!(
        got,
        vec![
            (AccessKind::Write, 64, 8),
            (AccessKind::Load, 0, 4),
            (AccessKind::Read, 64, 8)
        ]
    );
    assert!(log.take().is_empty());
}

/// Many threads hammering one word with read-modify-writes lose no update.
#[test]
fn concurrent_rmw_on_heap_is_atomic() {
    let mem = Arc::new(HeapMem::pages(1).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let mem = mem.clone();
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    mem.fetch_or_u64(0, 1 << t, Ordering::AcqRel).unwrap();
                    mem.fetch_and_u64(0, !(1 << t), Ordering::AcqRel).unwrap();
                    loop {
                        let cur = mem.load_u32(8, Ordering::Relaxed).unwrap();
                        if mem
                            .compare_exchange_u32(
                                8,
                                cur,
                                cur + 1,
                                Ordering::AcqRel,
                                Ordering::Relaxed,
                            )
                            .unwrap()
                            .is_ok()
                        {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(mem.load_u32(8, Ordering::Relaxed).unwrap(), 40_000);
    assert_eq!(mem.load_u64(0, Ordering::Relaxed).unwrap(), 0);
}

/// Typed copies at offsets misaligned for the type take the byte path and
/// give the same bytes; prefetch hints never fault, even out of range.
#[test]
fn misaligned_typed_copies_and_prefetch() {
    let mem = HeapMem::pages(1).unwrap();
    for off in [1usize, 3, 4, 6, 12] {
        let r = Rec {
            a: off as u64 * 3,
            b: 7,
            c: 8,
            d: 9,
        };
        mem.write_obj(off, &r).unwrap();
        assert_eq!(mem.read_obj::<Rec>(off).unwrap(), r);
        let mut raw = [0u8; 16];
        mem.read_bytes(off, &mut raw).unwrap();
        assert_eq!(&raw, bytemuck::bytes_of(&r));
    }
    mem.prefetch(0, 4096, false);
    mem.prefetch(0, 4096, true);
    mem.prefetch(4000, usize::MAX, true);
    mem.prefetch(usize::MAX, 10, false);
}

#[test]
fn read_pod_is_strict_read_obj_is_not() {
    let mem = HeapMem::pages(1).unwrap();
    mem.write_obj(12, &0xabcdu64).unwrap();
    assert_eq!(
        mem.read_pod::<u64>(12),
        Err(MemError::Misaligned {
            offset: 12,
            align: 8
        })
    );
    assert_eq!(
        mem.write_pod(12, &1u64),
        Err(MemError::Misaligned {
            offset: 12,
            align: 8
        })
    );
    assert_eq!(mem.read_obj::<u64>(12).unwrap(), 0xabcd);
    assert_eq!(mem.read_pod::<u32>(12).unwrap(), 0xabcd);
    // A window's read_pod checks alignment within the window, then copies
    // through the parent's byte path, whatever the parent offset.
    let w = Window::new(&mem, 4, 64).unwrap();
    w.write_pod(8, &0x1122_3344_5566_7788u64).unwrap();
    assert_eq!(mem.read_obj::<u64>(12).unwrap(), 0x1122_3344_5566_7788);
    assert_eq!(w.read_pod::<u64>(8).unwrap(), 0x1122_3344_5566_7788);
    assert!(w.read_pod::<u64>(4).is_err());
}

/// Strided record access: one check for the batch, same results as single
/// accesses, and a batch reaching past the end is refused before anything
/// is touched.
#[test]
fn records_read_write_update() {
    fn check<M: SharedMem>(mem: &M) {
        mem.write_records::<u64>(64, 24, 10, |i| i as u64 * 3)
            .unwrap();
        let mut got = vec![];
        mem.read_records::<u64>(64, 24, 10, |v| got.push(v))
            .unwrap();
        assert_eq!(got, (0..10).map(|i| i * 3).collect::<Vec<u64>>());
        assert_eq!(mem.read_pod::<u64>(64 + 24 * 9).unwrap(), 27);
        mem.update_records::<u64, u32>(64, 24, 10, |v| (v + 1) as u32)
            .unwrap();
        assert_eq!(mem.read_pod::<u32>(64 + 24 * 2).unwrap(), 7);
        assert_eq!(
            mem.read_pod::<u32>(64 + 24 * 2 + 4).unwrap(),
            0,
            "upper half of the old u64 untouched: it was 0"
        );
        // Past the end: refused, nothing written.
        mem.write_pod(4096 - 16, &5u64).unwrap();
        assert!(mem.write_records::<u64>(4096 - 16, 8, 3, |_| 99).is_err());
        assert_eq!(mem.read_pod::<u64>(4096 - 16).unwrap(), 5);
        assert!(
            mem.read_records::<u64>(0, usize::MAX, 3, |_| ()).is_err(),
            "stride overflow"
        );
        assert!(
            mem.read_records::<u64>(4, 8, 2, |_| ()).is_err(),
            "misaligned start"
        );
        assert!(
            mem.read_records::<u64>(0, 12, 2, |_| ()).is_err(),
            "misaligned stride"
        );
        mem.read_records::<u64>(usize::MAX, 8, 0, |_| panic!("n = 0 visits nothing"))
            .ok();
    }
    check(&HeapMem::pages(1).unwrap());
    check(&MemfdMem::new(c"records", 4096).unwrap());
    check(&Window::new(HeapMem::pages(1).unwrap(), 0, 4096).unwrap());
}

/// Bulk byte copies (the `rep movsb` path for ≥ 256 bytes) and `copy`
/// between regions, windows, recorders and overlapping ranges.
#[test]
fn bulk_copies_and_copy_between_regions() {
    let a = HeapMem::pages(2).unwrap();
    let b = MemfdMem::new(c"copy-dst", 2 * PAGE_SIZE).unwrap();
    let pattern: Vec<u8> = (0..PAGE_SIZE).map(|i| (i * 7 + 3) as u8).collect();
    a.write_bytes(100, &pattern).unwrap();
    let mut back = vec![0u8; PAGE_SIZE];
    a.read_bytes(100, &mut back).unwrap();
    assert_eq!(back, pattern);
    // Region to region, plain memory on both sides.
    pvio_shmem::copy(&a, 100, &b, 4096, PAGE_SIZE).unwrap();
    b.read_bytes(4096, &mut back).unwrap();
    assert_eq!(back, pattern);
    // Through windows (narrowed raw views) and a recorder (bounce path).
    let wa = Window::new(&a, 64, 4096 + 36).unwrap();
    let log = AccessLog::new(&b);
    pvio_shmem::copy(&wa, 36, &log, 10, 1000).unwrap();
    let mut part = vec![0u8; 1000];
    b.read_bytes(10, &mut part).unwrap();
    assert_eq!(part, pattern[..1000]);
    assert!(
        log.take().iter().all(|x| x.kind == AccessKind::Write),
        "recorder saw the writes"
    );
    // Bounds are checked on both sides before anything is copied.
    assert!(pvio_shmem::copy(&a, 2 * PAGE_SIZE - 10, &b, 0, 11).is_err());
    assert!(pvio_shmem::copy(&wa, 0, &b, 0, 4096 + 37).is_err());
    assert!(pvio_shmem::copy(&a, 0, &b, usize::MAX, 1).is_err());
    // Overlapping ranges of one region: same result as memmove.
    a.write_bytes(0, &pattern).unwrap();
    pvio_shmem::copy(&a, 0, &a, 300, 2000).unwrap();
    let mut moved = vec![0u8; 2000];
    a.read_bytes(300, &mut moved).unwrap();
    assert_eq!(moved, pattern[..2000]);
    // fill of a whole page.
    b.fill(0, PAGE_SIZE, 0x5a).unwrap();
    b.read_bytes(0, &mut back).unwrap();
    assert!(back.iter().all(|&x| x == 0x5a));
}
