//! Grant operations through the in-tree hypervisor: the GNT rows of
//! SECURITY.md, domain isolation, and lifecycle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtOrd};

use pvio_abi::grant::{
    GTF_ACCEPT_TRANSFER, GTF_PERMIT_ACCESS, GTF_PWT, GTF_READING, GTF_READONLY, GTF_SUB_PAGE,
    GTF_TRANSITIVE, GTF_WRITING,
};
use pvio_grant::{GrantError, MAX_PINS_PER_ENTRY};
use pvio_hv::{
    CopyDst, CopyOp, CopySrc, DomId, Domain, DomainConfig, GntStatus, GrantHandle, GrantRef,
    Hypervisor,
};
use pvio_shmem::{Ordering, SharedMem};

const A: DomId = DomId(1);
const B: DomId = DomId(2);
const C: DomId = DomId(3);

fn setup() -> (Hypervisor, Domain, Domain, Domain) {
    let hv = Hypervisor::new();
    let cfg = DomainConfig {
        pages: 64,
        ..DomainConfig::default()
    };
    let a = hv.create_domain(A, cfg).unwrap();
    let b = hv.create_domain(B, cfg).unwrap();
    let c = hv.create_domain(C, cfg).unwrap();
    (hv, a, b, c)
}

/// The flags of `gref` in `dom`'s grant table, read as the hypervisor does.
fn flags(dom: &Domain, gref: GrantRef) -> u16 {
    dom.grant_table_memory()
        .load_u16(gref.0 as usize * 8, Ordering::Acquire)
        .unwrap()
}

/// Writes a raw entry into `dom`'s own grant table (a domain may write its
/// table however it likes; the hypervisor must cope).
fn raw_entry(dom: &Domain, gref: u32, flags: u16, domid: DomId, frame: u32) {
    let t = dom.grant_table_memory();
    let off = gref as usize * 8;
    t.store_u16(off + 2, domid.0, Ordering::Relaxed).unwrap();
    t.store_u32(off + 4, frame, Ordering::Relaxed).unwrap();
    t.store_u16(off, flags, Ordering::Release).unwrap();
}

#[test]
fn map_write_read_unmap_and_end_access() {
    let (_hv, a, b, _c) = setup();
    let frame = a.alloc_frames(1).unwrap()[0];
    a.frame(frame)
        .unwrap()
        .write_bytes(0, b"hello from A")
        .unwrap();
    let gref = a.grant_access(B, frame, false).unwrap();
    assert!(gref.0 >= 8, "reserved entries are never handed out");
    {
        let m = b.map(A, gref).unwrap();
        let mut buf = [0u8; 12];
        m.read_bytes(0, &mut buf).unwrap();
        assert_eq!(&buf, b"hello from A");
        m.write_bytes(100, b"reply").unwrap();
        assert_eq!(
            flags(&a, gref),
            GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING
        );
        assert_eq!(
            a.end_access(gref),
            Err(GrantError::InUse(gref)),
            "G10: no end while mapped"
        );
        assert_eq!(b.live_mappings(), 1);
    } // dropped: unmapped
    assert_eq!(b.live_mappings(), 0);
    assert_eq!(flags(&a, gref), GTF_PERMIT_ACCESS);
    let mut buf = [0u8; 5];
    a.frame(frame).unwrap().read_bytes(100, &mut buf).unwrap();
    assert_eq!(&buf, b"reply");
    a.end_access(gref).unwrap();
    assert_eq!(flags(&a, gref), 0);
    assert_eq!(
        b.map(A, gref).unwrap_err(),
        GntStatus::GeneralError,
        "ended grants cannot be mapped"
    );
    assert_eq!(a.end_access(gref), Err(GrantError::NotGranted(gref)));
    // The reference is reused.
    assert_eq!(a.grant_access(B, frame, true).unwrap(), gref);
}

/// G1: a reference beyond the table.
#[test]
fn g1_ref_beyond_table() {
    let (_hv, a, b, _c) = setup();
    let nr = (a.grant_table_memory().size() / 8) as u32;
    for r in [nr, nr + 1, u32::MAX] {
        assert_eq!(
            b.map_grant(A, GrantRef(r), true).unwrap_err(),
            GntStatus::BadGntref
        );
        let mut buf = [0u8; 8];
        let mut op = [CopyOp::new(
            CopySrc::Gref {
                domid: A,
                gref: GrantRef(r),
                offset: 0,
            },
            CopyDst::Buf(&mut buf),
            8,
        )];
        b.grant_copy(&mut op);
        assert_eq!(op[0].status, GntStatus::BadGntref);
    }
    assert_eq!(
        a.end_access(GrantRef(u32::MAX)),
        Err(GrantError::BadRef(GrantRef(u32::MAX)))
    );
    assert_eq!(
        a.end_access(GrantRef(3)),
        Err(GrantError::BadRef(GrantRef(3))),
        "reserved"
    );
}

/// G2: entry types other than plain permit_access cannot be mapped.
#[test]
fn g2_entry_type_must_be_permit_access() {
    let (_hv, a, b, _c) = setup();
    let frame = a.alloc_frames(1).unwrap()[0];
    let cases = [
        (0u16, "invalid"),
        (GTF_ACCEPT_TRANSFER, "accept_transfer"),
        (GTF_TRANSITIVE, "transitive"),
        (GTF_PERMIT_ACCESS | GTF_SUB_PAGE, "sub-page"),
    ];
    for (i, (f, what)) in cases.into_iter().enumerate() {
        let gref = 100 + i as u32;
        raw_entry(&a, gref, f, B, frame);
        assert_eq!(
            b.map_grant(A, GrantRef(gref), true).unwrap_err(),
            GntStatus::GeneralError,
            "{what}"
        );
        assert_eq!(flags(&a, GrantRef(gref)), f, "{what}: flags untouched");
    }
    // The same entry as plain permit_access works.
    raw_entry(&a, 120, GTF_PERMIT_ACCESS, B, frame);
    let h = b.map_grant(A, GrantRef(120), true).unwrap();
    b.unmap_grant(h).unwrap();
}

/// G3: a writable map of a read-only grant fails, a writable copy into it
/// fails, and a read-only mapping has no write method (see the
/// `compile_fail` example on `ReadOnlyMapping`).
#[test]
fn g3_writable_map_of_readonly_grant() {
    let (_hv, a, b, _c) = setup();
    let frame = a.alloc_frames(1).unwrap()[0];
    a.frame(frame).unwrap().write_bytes(0, &[7u8; 16]).unwrap();
    let gref = a.grant_access(B, frame, true).unwrap();
    assert_eq!(
        b.map_grant(A, gref, false).unwrap_err(),
        GntStatus::GeneralError
    );
    assert_eq!(
        flags(&a, gref),
        GTF_PERMIT_ACCESS | GTF_READONLY,
        "nothing pinned"
    );
    let mut op = [CopyOp::new(
        CopySrc::Buf(&[1u8; 16]),
        CopyDst::Gref {
            domid: A,
            gref,
            offset: 0,
        },
        16,
    )];
    b.grant_copy(&mut op);
    assert_eq!(op[0].status, GntStatus::GeneralError);
    let ro = b.map_readonly(A, gref).unwrap();
    let mut buf = [0u8; 16];
    ro.read_bytes(0, &mut buf).unwrap();
    assert_eq!(buf, [7u8; 16]);
    assert_eq!(
        flags(&a, gref),
        GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING
    );
}

/// G4: mapping a grant made to another domain fails.
#[test]
fn g4_map_with_wrong_domid() {
    let (_hv, a, b, c) = setup();
    let frame = a.alloc_frames(1).unwrap()[0];
    let gref = a.grant_access(C, frame, false).unwrap();
    assert_eq!(
        b.map_grant(A, gref, true).unwrap_err(),
        GntStatus::GeneralError
    );
    assert_eq!(
        b.map_grant(DomId(77), gref, true).unwrap_err(),
        GntStatus::BadDomain
    );
    let h = c.map_grant(A, gref, true).unwrap();
    // A second grantee cannot piggyback on C's pin either.
    assert_eq!(
        b.map_grant(A, gref, true).unwrap_err(),
        GntStatus::GeneralError
    );
    c.unmap_grant(h).unwrap();
}

/// G5: a granter flipping its flags in a tight loop while others map gets
/// bounded retries and errors, never a livelock.
#[test]
fn g5_flag_flipper_does_not_livelock() {
    let (_hv, a, b, _c) = setup();
    let frame = a.alloc_frames(1).unwrap()[0];
    let gref = a.grant_access(B, frame, true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (a, stop) = (a.clone(), stop.clone());
        std::thread::spawn(move || {
            let t = a.grant_table_memory();
            let off = gref.0 as usize * 8;
            while !stop.load(AtOrd::Relaxed) {
                let _ = t.fetch_or_u16(off, GTF_PWT, Ordering::AcqRel);
                let _ = t.fetch_and_u16(off, !GTF_PWT, Ordering::AcqRel);
            }
        })
    };
    let (mut ok, mut err) = (0, 0);
    for _ in 0..20_000 {
        match b.map_grant(A, gref, true) {
            Ok(h) => {
                ok += 1;
                b.unmap_grant(h).unwrap();
            }
            Err(e) => {
                assert_eq!(e, GntStatus::GeneralError);
                err += 1;
            }
        }
    }
    stop.store(true, AtOrd::Relaxed);
    flipper.join().unwrap();
    eprintln!("G5: {ok} maps succeeded, {err} gave up after bounded retries");
    assert_eq!(ok + err, 20_000);
    assert_eq!(
        flags(&a, gref) & (GTF_READING | GTF_WRITING),
        0,
        "no pin leaked"
    );
}

/// G6: mapping one reference many times stops with an error at the pin
/// limit; nothing wraps; everything unmaps.
#[test]
fn g6_many_maps_of_one_ref() {
    let hv = Hypervisor::new();
    let a = hv.create_domain(A, DomainConfig::default()).unwrap();
    let b = hv
        .create_domain(
            B,
            DomainConfig {
                max_mappings: 100_000,
                ..DomainConfig::default()
            },
        )
        .unwrap();
    let frame = a.alloc_frames(1).unwrap()[0];
    let gref = a.grant_access(B, frame, true).unwrap();
    let mut handles = vec![];
    let err = loop {
        match b.map_grant(A, gref, true) {
            Ok(h) => handles.push(h),
            Err(e) => break e,
        }
        assert!(
            handles.len() <= MAX_PINS_PER_ENTRY as usize,
            "the limit holds"
        );
    };
    assert_eq!(err, GntStatus::NoSpace);
    assert_eq!(handles.len(), MAX_PINS_PER_ENTRY as usize);
    for h in handles {
        b.unmap_grant(h).unwrap();
    }
    assert_eq!(flags(&a, gref), GTF_PERMIT_ACCESS | GTF_READONLY);
    a.end_access(gref).unwrap();
    // The grantee's own mapping limit (maptrack) holds too.
    let small = hv
        .create_domain(
            C,
            DomainConfig {
                max_mappings: 3,
                ..DomainConfig::default()
            },
        )
        .unwrap();
    let g2 = a.grant_access(C, frame, true).unwrap();
    let hs: Vec<_> = (0..3)
        .map(|_| small.map_grant(A, g2, true).unwrap())
        .collect();
    assert_eq!(
        small.map_grant(A, g2, true).unwrap_err(),
        GntStatus::NoSpace
    );
    for h in hs {
        small.unmap_grant(h).unwrap();
    }
}

/// G7: a batch of 8 maps whose 5th is invalid: per-op status, the others
/// mapped and unmappable.
#[test]
fn g7_batch_with_one_bad_map() {
    let (_hv, a, b, _c) = setup();
    let frames = a.alloc_frames(8).unwrap();
    let mut grefs: Vec<(DomId, GrantRef)> = frames
        .iter()
        .map(|&f| (A, a.grant_access(B, f, false).unwrap()))
        .collect();
    grefs[4].1 = GrantRef(9999);
    let res = b.map_grants(&grefs, false);
    for (i, r) in res.iter().enumerate() {
        if i == 4 {
            assert_eq!(*r, Err(GntStatus::BadGntref));
        } else {
            assert!(r.is_ok(), "op {i}");
        }
    }
    assert_eq!(b.live_mappings(), 7);
    for r in res.into_iter().flatten() {
        b.unmap_grant(r).unwrap();
    }
    for (i, (_, g)) in grefs.iter().enumerate() {
        if i != 4 {
            a.end_access(*g).unwrap();
        }
    }
}

/// G8: double unmap, and unmap of a handle never mapped: BadHandle, counts
/// unchanged.
#[test]
fn g8_double_unmap_and_bogus_handle() {
    let (_hv, a, b, _c) = setup();
    let frame = a.alloc_frames(1).unwrap()[0];
    let gref = a.grant_access(B, frame, true).unwrap();
    let h1 = b.map_grant(A, gref, true).unwrap();
    let h2 = b.map_grant(A, gref, true).unwrap();
    b.unmap_grant(h1).unwrap();
    assert_eq!(b.unmap_grant(h1), Err(GntStatus::BadHandle));
    assert_eq!(b.unmap_grant(GrantHandle(12345)), Err(GntStatus::BadHandle));
    assert_eq!(b.live_mappings(), 1);
    assert_eq!(
        flags(&a, gref) & GTF_READING,
        GTF_READING,
        "h2 still pins it"
    );
    b.unmap_grant(h2).unwrap();
    assert_eq!(flags(&a, gref) & GTF_READING, 0);
}

/// G9: read-only and writable mappings of one reference, unmapped
/// separately: the reading/writing flags are right at every step.
#[test]
fn g9_mixed_mappings_flags() {
    let (_hv, a, b, _c) = setup();
    let frame = a.alloc_frames(1).unwrap()[0];
    let gref = a.grant_access(B, frame, false).unwrap();
    let ro = b.map_grant(A, gref, true).unwrap();
    assert_eq!(flags(&a, gref), GTF_PERMIT_ACCESS | GTF_READING);
    let rw = b.map_grant(A, gref, false).unwrap();
    assert_eq!(
        flags(&a, gref),
        GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING
    );
    b.unmap_grant(rw).unwrap();
    assert_eq!(
        flags(&a, gref),
        GTF_PERMIT_ACCESS | GTF_READING,
        "writing clears with the last writer"
    );
    let rw2 = b.map_grant(A, gref, false).unwrap();
    b.unmap_grant(ro).unwrap();
    assert_eq!(
        flags(&a, gref),
        GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING,
        "a writer remains"
    );
    b.unmap_grant(rw2).unwrap();
    assert_eq!(flags(&a, gref), GTF_PERMIT_ACCESS);
}

/// G10: the granter ends access while the grantee maps concurrently: either
/// the end succeeds (and every later map fails) or it fails while mapped.
#[test]
fn g10_end_access_races_map() {
    let (_hv, a, b, _c) = setup();
    let frame = a.alloc_frames(1).unwrap()[0];
    for round in 0..300 {
        let gref = a.grant_access(B, frame, false).unwrap();
        let ended = Arc::new(AtomicBool::new(false));
        let mapper = {
            let (b, ended) = (b.clone(), ended.clone());
            std::thread::spawn(move || {
                let mut maps = 0;
                loop {
                    let was_ended = ended.load(AtOrd::SeqCst);
                    match b.map_grant(A, gref, false) {
                        Ok(h) => {
                            assert!(!was_ended, "round {round}: mapped after a successful end");
                            maps += 1;
                            b.unmap_grant(h).unwrap();
                        }
                        Err(e) => {
                            assert_eq!(e, GntStatus::GeneralError);
                            if was_ended {
                                return maps;
                            }
                        }
                    }
                }
            })
        };
        loop {
            match a.end_access(gref) {
                Ok(()) => {
                    ended.store(true, AtOrd::SeqCst);
                    break;
                }
                Err(GrantError::InUse(_)) => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        mapper.join().unwrap();
        assert_eq!(flags(&a, gref), 0);
    }
}

/// G12: a grantee that dies holding many mappings has them all released;
/// a bystander keeps working meanwhile.
#[test]
fn g12_grantee_death_releases_everything() {
    let (hv, a, b, c) = setup();
    let frames = a.alloc_frames(32).unwrap();
    let grefs: Vec<GrantRef> = frames
        .iter()
        .map(|&f| a.grant_access(B, f, false).unwrap())
        .collect();
    for &g in &grefs {
        for _ in 0..20 {
            b.map_grant(A, g, false).unwrap();
        }
    }
    assert_eq!(b.live_mappings(), 32 * 20);
    let bystander_frame = a.alloc_frames(1).unwrap()[0];
    let bg = a.grant_access(C, bystander_frame, false).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let bystander = {
        let (c, stop) = (c.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(AtOrd::Relaxed) || n == 0 {
                let h = c.map_grant(A, bg, false).unwrap();
                c.unmap_grant(h).unwrap();
                n += 1;
            }
            n
        })
    };
    hv.destroy_domain(B).unwrap();
    stop.store(true, AtOrd::Relaxed);
    assert!(bystander.join().unwrap() > 0);
    assert!(b.is_destroyed());
    assert_eq!(
        b.map_grant(A, grefs[0], false).unwrap_err(),
        GntStatus::BadDomain
    );
    for &g in &grefs {
        assert_eq!(flags(&a, g), GTF_PERMIT_ACCESS, "pins released");
        a.end_access(g).unwrap();
    }
    assert!(hv.domain(B).is_err());
    assert_eq!(hv.domains(), vec![A, C]);
}

/// The granter dying while another domain maps its frame: the mapping stays
/// valid memory, and unmapping it later is fine.
#[test]
fn granter_death_keeps_mappings_memory_safe() {
    let (hv, a, b, _c) = setup();
    let frame = a.alloc_frames(1).unwrap()[0];
    a.frame(frame)
        .unwrap()
        .write_bytes(0, b"still here")
        .unwrap();
    let gref = a.grant_access(B, frame, false).unwrap();
    let m = b.map(A, gref).unwrap();
    hv.destroy_domain(A).unwrap();
    let mut buf = [0u8; 10];
    m.read_bytes(0, &mut buf).unwrap();
    assert_eq!(&buf, b"still here");
    drop(m);
    assert_eq!(b.live_mappings(), 0);
    assert_eq!(
        b.map_grant(A, gref, false).unwrap_err(),
        GntStatus::BadDomain
    );
}

/// G13: a zero-length copy with a garbage reference succeeds as a no-op.
#[test]
fn g13_zero_length_copy_is_a_noop() {
    let (_hv, _a, b, _c) = setup();
    let mut buf = [9u8; 4];
    let mut ops = [CopyOp::new(
        CopySrc::Gref {
            domid: DomId(999),
            gref: GrantRef(u32::MAX),
            offset: 4095,
        },
        CopyDst::Buf(&mut buf),
        0,
    )];
    assert_eq!(b.grant_copy(&mut ops), 1);
    assert_eq!(ops[0].status, GntStatus::Okay);
    assert_eq!(buf, [9u8; 4]);
}

/// G15: offsets and lengths near the limits are checked in the right units.
#[test]
fn g15_copy_bounds_near_limits() {
    let (_hv, a, b, _c) = setup();
    let frame = a.alloc_frames(1).unwrap()[0];
    let gref = a.grant_access(B, frame, false).unwrap();
    let mine = b.alloc_frames(1).unwrap()[0];
    let cases: [(u16, u16, u16, GntStatus); 5] = [
        (4095, 0, 1, GntStatus::Okay),
        (4095, 0, 2, GntStatus::BadCopyArg),
        (0, 4095, 2, GntStatus::BadCopyArg),
        (u16::MAX, 0, 1, GntStatus::BadCopyArg),
        (0, 0, u16::MAX, GntStatus::BadCopyArg),
    ];
    for (soff, doff, len, want) in cases {
        let mut ops = [CopyOp::new(
            CopySrc::Gref {
                domid: A,
                gref,
                offset: soff,
            },
            CopyDst::Frame {
                frame: mine,
                offset: doff,
            },
            len,
        )];
        b.grant_copy(&mut ops);
        assert_eq!(
            ops[0].status, want,
            "src off {soff} dst off {doff} len {len}"
        );
    }
    assert_eq!(
        flags(&a, gref),
        GTF_PERMIT_ACCESS,
        "failed copies leave no pin"
    );
    // A local buffer shorter than len.
    let mut small = [0u8; 4];
    let mut ops = [CopyOp::new(
        CopySrc::Gref {
            domid: A,
            gref,
            offset: 0,
        },
        CopyDst::Buf(&mut small),
        5,
    )];
    b.grant_copy(&mut ops);
    assert_eq!(ops[0].status, GntStatus::BadCopyArg);
}

#[test]
fn grant_copy_all_directions() {
    let (_hv, a, b, _c) = setup();
    let frames = a.alloc_frames(2).unwrap();
    let src_g = a.grant_access(B, frames[0], true).unwrap();
    let dst_g = a.grant_access(B, frames[1], false).unwrap();
    a.frame(frames[0])
        .unwrap()
        .write_bytes(0, &[0xAB; 4096])
        .unwrap();
    let mine = b.alloc_frames(1).unwrap()[0];
    let mut out = vec![0u8; 100];
    let data = vec![0x5Cu8; 200];
    let mut ops = [
        // gref -> local buffer
        CopyOp::new(
            CopySrc::Gref {
                domid: A,
                gref: src_g,
                offset: 10,
            },
            CopyDst::Buf(&mut out),
            100,
        ),
        // local buffer -> gref
        CopyOp::new(
            CopySrc::Buf(&data),
            CopyDst::Gref {
                domid: A,
                gref: dst_g,
                offset: 4096 - 200,
            },
            200,
        ),
        // gref -> own frame
        CopyOp::new(
            CopySrc::Gref {
                domid: A,
                gref: src_g,
                offset: 0,
            },
            CopyDst::Frame {
                frame: mine,
                offset: 0,
            },
            4096,
        ),
        // own frame -> gref
        CopyOp::new(
            CopySrc::Frame {
                frame: mine,
                offset: 0,
            },
            CopyDst::Gref {
                domid: A,
                gref: dst_g,
                offset: 0,
            },
            16,
        ),
        // gref -> gref
        CopyOp::new(
            CopySrc::Gref {
                domid: A,
                gref: src_g,
                offset: 0,
            },
            CopyDst::Gref {
                domid: A,
                gref: dst_g,
                offset: 100,
            },
            50,
        ),
        // local -> local is not a grant operation
        CopyOp::new(
            CopySrc::Frame {
                frame: mine,
                offset: 0,
            },
            CopyDst::Frame {
                frame: mine,
                offset: 8,
            },
            8,
        ),
    ];
    assert_eq!(b.grant_copy(&mut ops), 5);
    assert_eq!(ops[5].status, GntStatus::BadCopyArg);
    let _ = ops;
    assert!(out.iter().all(|&x| x == 0xAB));
    let mut page = vec![0u8; 4096];
    a.frame(frames[1])
        .unwrap()
        .read_bytes(0, &mut page)
        .unwrap();
    assert!(page[..16].iter().all(|&x| x == 0xAB));
    assert!(page[100..150].iter().all(|&x| x == 0xAB));
    assert!(page[4096 - 200..].iter().all(|&x| x == 0x5C));
    b.frame(mine).unwrap().read_bytes(0, &mut page).unwrap();
    assert!(page.iter().all(|&x| x == 0xAB));
    assert_eq!(flags(&a, src_g), GTF_PERMIT_ACCESS | GTF_READONLY);
    assert_eq!(flags(&a, dst_g), GTF_PERMIT_ACCESS);
    assert_eq!(b.stats().copies, 5);
}

/// Isolation: a domain reaches another's frame only through a grant made to
/// it, by no API otherwise.
#[test]
fn isolation_no_access_without_a_grant() {
    let (_hv, a, b, c) = setup();
    let frame = a.alloc_frames(1).unwrap()[0];
    a.frame(frame).unwrap().write_bytes(0, b"secret").unwrap();
    let to_c = a.grant_access(C, frame, false).unwrap();
    // Every reference of A's table: none is granted to B.
    let nr = (a.grant_table_memory().size() / 8) as u32;
    for r in 0..nr {
        assert!(b.map_grant(A, GrantRef(r), true).is_err(), "ref {r}");
        let mut buf = [0u8; 6];
        let mut ops = [CopyOp::new(
            CopySrc::Gref {
                domid: A,
                gref: GrantRef(r),
                offset: 0,
            },
            CopyDst::Buf(&mut buf),
            6,
        )];
        b.grant_copy(&mut ops);
        assert_ne!(ops[0].status, GntStatus::Okay, "ref {r}");
        assert_eq!(buf, [0u8; 6]);
    }
    // Frame sides only name the caller's own frames.
    assert!(b.frame(b.nr_frames()).is_none());
    let mut buf = [0u8; 6];
    let mut ops = [CopyOp::new(
        CopySrc::Frame {
            frame: b.nr_frames(),
            offset: 0,
        },
        CopyDst::Gref {
            domid: C,
            gref: GrantRef(8),
            offset: 0,
        },
        6,
    )];
    b.grant_copy(&mut ops);
    assert_ne!(ops[0].status, GntStatus::Okay);
    // C, the intended grantee, can.
    let m = c.map_readonly(A, to_c).unwrap();
    m.read_bytes(0, &mut buf).unwrap();
    assert_eq!(&buf, b"secret");
    // Granting a frame outside the granter's memory is refused up front.
    assert!(a.grant_access(B, a.nr_frames(), true).is_err());
    // A hostile granter pointing an entry at a frame beyond its memory gets
    // BadPage, not someone else's memory.
    raw_entry(&a, 500, GTF_PERMIT_ACCESS, B, 1_000_000);
    assert_eq!(
        b.map_grant(A, GrantRef(500), true).unwrap_err(),
        GntStatus::BadPage
    );
    assert_eq!(
        flags(&a, GrantRef(500)),
        GTF_PERMIT_ACCESS,
        "no pin left behind"
    );
}

/// Deferred end access (XSA-396 policy): a grant in use is kept, and its
/// frame reported reusable only once released.
#[test]
fn deferred_end_access() {
    let (_hv, a, b, _c) = setup();
    let frame = a.alloc_frames(1).unwrap()[0];
    let gref = a.grant_access(B, frame, false).unwrap();
    let m = b.map(A, gref).unwrap();
    assert_eq!(
        a.end_access_deferred(gref).unwrap(),
        pvio_grant::EndAccess::Deferred
    );
    let mut released = vec![];
    assert_eq!(a.poll_deferred(|g| released.push(g)).unwrap(), 0);
    drop(m);
    assert_eq!(a.poll_deferred(|g| released.push(g)).unwrap(), 1);
    assert_eq!(released, vec![gref]);
}

/// A 4-page ring in A's memory, granted to B and mapped as one region: the
/// ring runs over it in both directions.
#[test]
fn multi_page_ring_over_mapped_grants() {
    use pvio_abi::blkif::{Request, Response};
    use pvio_ring::{BackRing, FrontRing};
    let (_hv, a, b, _c) = setup();
    let frames = a.alloc_frames(4).unwrap();
    let ring_mem = a.frames(frames[0], 4).unwrap();
    let mut front = FrontRing::<_, Request, Response>::init(ring_mem).unwrap();
    let grefs: Vec<GrantRef> = frames
        .iter()
        .map(|&f| a.grant_access(B, f, false).unwrap())
        .collect();
    let pages = b.map_pages(A, &grefs).unwrap();
    assert!(pages.is_contiguous());
    let mut back = BackRing::<_, Request, Response>::attach(pages).unwrap();
    assert_eq!(front.nr_ents(), 128);
    for round in 0..10u64 {
        let mut batch = front.reserve(100).unwrap();
        batch
            .fill_with(|i| Request {
                id: round * 1000 + u64::from(i),
                ..Default::default()
            })
            .unwrap();
        batch.publish().unwrap();
        assert_eq!(
            back.answer_requests(u32::MAX, |r| Response {
                id: r.id,
                ..Default::default()
            })
            .unwrap(),
            100
        );
        back.publish().unwrap();
        let mut n = 0;
        front
            .drain_responses(u32::MAX, |r| {
                assert_eq!(r.id, round * 1000 + n);
                n += 1;
            })
            .unwrap();
        assert_eq!(n, 100);
    }
    drop(back);
    for g in grefs {
        a.end_access(g).unwrap();
    }
    // Scattered frames map too (one window per page).
    let scattered = [frames[3], frames[0]];
    let grefs: Vec<GrantRef> = scattered
        .iter()
        .map(|&f| a.grant_access(B, f, false).unwrap())
        .collect();
    let pages = b.map_pages(A, &grefs).unwrap();
    assert!(!pages.is_contiguous());
    pages
        .write_bytes(4090, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
        .unwrap();
    let mut tail = [0u8; 6];
    a.frame(frames[3])
        .unwrap()
        .read_bytes(4090, &mut tail)
        .unwrap();
    assert_eq!(tail, [1, 2, 3, 4, 5, 6]);
    let mut head = [0u8; 6];
    a.frame(frames[0])
        .unwrap()
        .read_bytes(0, &mut head)
        .unwrap();
    assert_eq!(head, [7, 8, 9, 10, 11, 12]);
    pages.store_u32(4096, 0xfeed, Ordering::Release).unwrap();
    assert_eq!(pages.load_u32(4096, Ordering::Acquire).unwrap(), 0xfeed);
    // A map_pages with one bad grant maps nothing.
    let bad = [grefs[0], GrantRef(9999)];
    drop(pages);
    assert_eq!(b.map_pages(A, &bad).unwrap_err(), GntStatus::BadGntref);
    assert_eq!(b.live_mappings(), 0);
}

#[test]
fn domain_lifecycle_errors() {
    let hv = Hypervisor::new();
    let a = hv.create_domain(A, DomainConfig::default()).unwrap();
    assert!(
        hv.create_domain(A, DomainConfig::default()).is_err(),
        "duplicate id"
    );
    assert!(
        hv.create_domain(DomId(0x7FF0), DomainConfig::default())
            .is_err(),
        "reserved id"
    );
    assert!(
        hv.create_domain(
            DomId(9),
            DomainConfig {
                pages: 0,
                ..DomainConfig::default()
            }
        )
        .is_err()
    );
    assert!(
        hv.create_domain(
            DomId(9),
            DomainConfig {
                grant_frames: 65,
                ..DomainConfig::default()
            }
        )
        .is_err()
    );
    assert_eq!(hv.domain(A).unwrap().id(), A);
    hv.destroy_domain(A).unwrap();
    assert!(hv.destroy_domain(A).is_err());
    assert!(a.is_destroyed());
    assert!(a.grant_access(B, 0, true).is_err());
    // All frames can be allocated, then no more.
    let d = hv
        .create_domain(
            DomId(5),
            DomainConfig {
                pages: 8,
                ..DomainConfig::default()
            },
        )
        .unwrap();
    let f = d.alloc_frames(8).unwrap();
    assert_eq!(f, (0..8).collect::<Vec<_>>());
    assert!(d.alloc_frames(1).is_none());
    d.free_frames(&f[2..4]);
    assert_eq!(d.alloc_frames(2).unwrap().len(), 2);
}
