//! `LoomMem` behaves like real memory under loom.
//!
//! `cargo test -p pvio-shmem --features loom --test loom_mem --release`

use std::sync::Arc;

use pvio_shmem::{LoomMem, MemError, Ordering, SharedMem, SharedMemExt};

/// Release/Acquire publication through the region: a reader that sees the
/// flag sees the data written before it.
#[test]
fn message_passing() {
    loom::model(|| {
        let mem = Arc::new(LoomMem::new(16));
        let writer = {
            let mem = mem.clone();
            loom::thread::spawn(move || {
                mem.write_obj(8, &[1u32, 2u32]).unwrap();
                mem.store_u32(0, 1, Ordering::Release).unwrap();
            })
        };
        if mem.load_u32(0, Ordering::Acquire).unwrap() == 1 {
            assert_eq!(mem.read_obj::<[u32; 2]>(8).unwrap(), [1, 2]);
        }
        writer.join().unwrap();
    });
}

/// Without the Release/Acquire pair, loom finds the stale read: the model
/// is not vacuous.
#[test]
#[should_panic]
fn relaxed_publication_is_caught() {
    loom::model(|| {
        let mem = Arc::new(LoomMem::new(16));
        let writer = {
            let mem = mem.clone();
            loom::thread::spawn(move || {
                mem.write_obj(8, &7u32).unwrap();
                mem.store_u32(0, 1, Ordering::Relaxed).unwrap();
            })
        };
        if mem.load_u32(0, Ordering::Relaxed).unwrap() == 1 {
            assert_eq!(mem.read_obj::<u32>(8).unwrap(), 7);
        }
        writer.join().unwrap();
    });
}

/// Concurrent u16 updates of the two halves of one word never clobber each
/// other, and compare-exchange sees only its own half.
#[test]
fn halfword_atomics_are_independent() {
    loom::model(|| {
        let mem = Arc::new(LoomMem::new(8));
        let t = {
            let mem = mem.clone();
            loom::thread::spawn(move || {
                mem.store_u16(2, 0xbeef, Ordering::Release).unwrap();
            })
        };
        assert_eq!(
            mem.compare_exchange_u16(0, 0, 0x1234, Ordering::AcqRel, Ordering::Acquire)
                .unwrap(),
            Ok(0)
        );
        mem.fetch_or_u16(0, 0x8000, Ordering::AcqRel).unwrap();
        t.join().unwrap();
        assert_eq!(mem.load_u16(0, Ordering::Acquire).unwrap(), 0x9234);
        assert_eq!(mem.load_u16(2, Ordering::Acquire).unwrap(), 0xbeef);
    });
}

#[test]
fn errors_instead_of_panics() {
    loom::model(|| {
        let mem = LoomMem::new(10);
        assert!(matches!(
            mem.load_u32(8, Ordering::Relaxed),
            Err(MemError::OutOfBounds { .. })
        ));
        assert!(matches!(
            mem.load_u16(1, Ordering::Relaxed),
            Err(MemError::Misaligned { .. })
        ));
        assert!(matches!(
            mem.compare_exchange_u64(0, 0, 1, Ordering::SeqCst, Ordering::SeqCst),
            Err(MemError::Unsupported { .. })
        ));
        mem.write_bytes(1, &[1, 2, 3, 4, 5]).unwrap();
        let mut b = [0u8; 7];
        mem.read_bytes(0, &mut b).unwrap();
        assert_eq!(b, [0, 1, 2, 3, 4, 5, 0]);
        mem.fill(0, 10, 9).unwrap();
        assert_eq!(mem.read_obj::<[u8; 10]>(0).unwrap(), [9; 10]);
    });
}
