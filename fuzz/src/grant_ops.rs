//! `grant_ops`: grant map, unmap, copy and end-access sequences on the
//! embedded hypervisor (`pvio_hv`), the granter writing its own table at
//! will (SECURITY.md G1–G4, G6–G9, G13, G15). A map that succeeds must be of
//! a permit-access entry for the mapper, writable only if the entry is; the
//! live mapping count must equal the handles held; unmap of anything not
//! held fails; zero-length copies succeed without looking at the ref; at
//! the end everything is released.

use arbitrary::Arbitrary;
use pvio_abi::grant::{GTF_PERMIT_ACCESS, GTF_READONLY, GTF_SUB_PAGE, GTF_TYPE_MASK};
use pvio_hv::{
    CopyDst, CopyOp, CopySrc, DomId, Domain, DomainConfig, GntStatus, GrantHandle, GrantRef,
    Hypervisor,
};
use pvio_shmem::{Ordering, SharedMem};

use crate::Enc;

const A: DomId = DomId(1);
const B: DomId = DomId(2);
const C: DomId = DomId(3);
const FRAMES: u32 = 8;
const MAX_MAPPINGS: usize = 24;

/// A grant reference: one handed out earlier (`pick`) or any value
/// (`0xffff` is `u32::MAX`).
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ref {
    pub pick: bool,
    pub v: u16,
}

/// One end of a copy.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Gref { r: Ref, offset: u16 },
    Frame { frame: u8, offset: u16 },
    Buf { len: u16 },
}

/// One step. `who` picks the grantee (B or C) or, for raw table writes, the
/// domid written.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A grants `frame % 10` to `who`.
    Grant { who: u8, frame: u8, readonly: bool },
    /// A writes an entry of its table by hand.
    Raw {
        r: Ref,
        flags: u16,
        who: u8,
        frame: u32,
    },
    /// `who` maps a ref of A.
    Map { who: u8, r: Ref, readonly: bool },
    /// `who` maps `n % 9` refs of A in one batch.
    MapBatch {
        who: u8,
        refs: [Ref; 8],
        n: u8,
        readonly: bool,
    },
    /// `who` unmaps a handle it holds (`held`) or any value.
    Unmap { who: u8, held: bool, h: u32 },
    /// B copies.
    Copy { src: End, dst: End, len: u16 },
    /// A ends access.
    End(Ref),
    /// A asks whether a ref is in use.
    InUse(Ref),
}

/// Number of [`Op`] variants.
pub const OPS: u32 = 8;

struct World {
    _hv: Hypervisor,
    a: Domain,
    grantees: [Domain; 2],
    /// Handles each grantee holds, with the ref each maps.
    held: [Vec<(GrantHandle, GrantRef)>; 2],
    grefs: Vec<GrantRef>,
    /// Entries A wrote by hand (their in-use bits are A's own doing).
    scribbled: Vec<u32>,
}

impl World {
    fn gref(&self, r: Ref) -> GrantRef {
        if r.pick && !self.grefs.is_empty() {
            return self.grefs[usize::from(r.v) % self.grefs.len()];
        }
        GrantRef(if r.v == 0xffff {
            u32::MAX
        } else {
            u32::from(r.v)
        })
    }

    /// A's table entry as the hypervisor would read it: flags, domid.
    fn entry(&self, gref: GrantRef) -> Option<(u16, u16)> {
        let t = self.a.grant_table_memory();
        let off = (gref.0 as usize).checked_mul(8)?;
        let flags = t.load_u16(off, Ordering::Acquire).ok()?;
        let dom = t.load_u16(off + 2, Ordering::Acquire).ok()?;
        Some((flags, dom))
    }

    /// Whether a grantee holds a mapping of `gref`. An entry already
    /// pinned is served from its active entry, as in Xen: the granter
    /// rewriting its type, domid, readonly or in-use bits meanwhile changes
    /// nothing for further maps (and A's own table cannot tell: A may have
    /// cleared the in-use bits by hand). The flags are checked on first
    /// pins only.
    fn pinned(&self, gref: GrantRef) -> bool {
        self.held.iter().flatten().any(|&(_, g)| g == gref)
    }

    fn map(&mut self, who: usize, gref: GrantRef, readonly: bool) -> Result<(), GntStatus> {
        let before = self.entry(gref);
        let pinned = self.pinned(gref);
        let r = self.grantees[who].map_grant(A, gref, readonly);
        if let Ok(h) = r {
            let (flags, dom) = before.expect("G1: mapped a ref beyond the table");
            let (now, _) = self.entry(gref).expect("entry");
            if !pinned {
                assert_eq!(flags & GTF_TYPE_MASK, GTF_PERMIT_ACCESS, "G2");
                assert_eq!(flags & GTF_SUB_PAGE, 0, "G2: sub-page");
                assert!(readonly || now & GTF_READONLY == 0, "G3");
                assert_eq!(dom, self.grantees[who].id().0, "G4: wrong domid");
            }
            self.held[who].push((h, gref));
        }
        r.map(|_| ())
    }

    fn check(&self) {
        for (d, h) in self.grantees.iter().zip(&self.held) {
            assert_eq!(d.live_mappings(), h.len(), "live mappings vs handles");
            assert!(h.len() <= MAX_MAPPINGS, "G6: beyond the tracking limit");
        }
    }
}

pub fn run(data: &[u8]) {
    let Some(((), ops)) = crate::decode::<(), Op>(data) else {
        return;
    };
    let hv = Hypervisor::new();
    let cfg = DomainConfig {
        pages: FRAMES as usize,
        grant_frames: 1,
        max_mappings: MAX_MAPPINGS,
        max_ports: 8,
    };
    let a = hv.create_domain(A, cfg).expect("domain A");
    let b = hv.create_domain(B, cfg).expect("domain B");
    let c = hv.create_domain(C, cfg).expect("domain C");
    let mut w = World {
        _hv: hv,
        a,
        grantees: [b, c],
        held: [Vec::new(), Vec::new()],
        grefs: Vec::new(),
        scribbled: Vec::new(),
    };
    for op in ops {
        match op {
            Op::Grant {
                who,
                frame,
                readonly,
            } => {
                let to = w.grantees[usize::from(who % 2)].id();
                if let Ok(g) = w.a.grant_access(to, u32::from(frame % 10), readonly) {
                    assert!(u32::from(frame % 10) < FRAMES);
                    w.grefs.push(g);
                }
            }
            Op::Raw {
                r,
                flags,
                who,
                frame,
            } => {
                let gref = w.gref(r);
                w.scribbled.push(gref.0);
                let t = w.a.grant_table_memory();
                if let Some(off) = (gref.0 as usize).checked_mul(8)
                    && off + 8 <= t.size()
                {
                    t.store_u16(off + 2, u16::from(who % 4), Ordering::Relaxed)
                        .unwrap();
                    t.store_u32(off + 4, frame, Ordering::Relaxed).unwrap();
                    t.store_u16(off, flags, Ordering::Release).unwrap();
                }
            }
            Op::Map { who, r, readonly } => {
                let gref = w.gref(r);
                let _ = w.map(usize::from(who % 2), gref, readonly);
            }
            Op::MapBatch {
                who,
                refs,
                n,
                readonly,
            } => {
                let who = usize::from(who % 2);
                let grefs: Vec<(DomId, GrantRef)> = refs[..usize::from(n % 9)]
                    .iter()
                    .map(|&r| (A, w.gref(r)))
                    .collect();
                let before: Vec<_> = grefs.iter().map(|&(_, g)| w.entry(g)).collect();
                let res = w.grantees[who].map_grants(&grefs, readonly);
                assert_eq!(res.len(), grefs.len(), "G7: a status per op");
                // In order: an earlier op of the batch may pin a later one's ref.
                for ((r, e), &(_, g)) in res.into_iter().zip(before).zip(&grefs) {
                    if let Ok(h) = r {
                        let (flags, dom) = e.expect("G1");
                        if !w.pinned(g) {
                            assert_eq!(flags & GTF_TYPE_MASK, GTF_PERMIT_ACCESS, "G2");
                            assert_eq!(dom, w.grantees[who].id().0, "G4");
                        }
                        w.held[who].push((h, g));
                    }
                }
            }
            Op::Unmap { who, held, h } => {
                let who = usize::from(who % 2);
                let list = &mut w.held[who];
                let handle = if held && !list.is_empty() {
                    list[h as usize % list.len()].0
                } else {
                    GrantHandle(h)
                };
                let r = w.grantees[who].unmap_grant(handle);
                match list.iter().position(|&(x, _)| x == handle) {
                    Some(i) => {
                        assert!(r.is_ok(), "unmap of a held handle: {r:?}");
                        list.swap_remove(i);
                    }
                    None => assert!(r.is_err(), "G8: unmap of a handle not held"),
                }
            }
            Op::Copy { src, dst, len } => {
                let sbuf = vec![
                    0x5a_u8;
                    match src {
                        End::Buf { len } => usize::from(len % 5000),
                        _ => 0,
                    }
                ];
                let mut dbuf = vec![
                    0_u8;
                    match dst {
                        End::Buf { len } => usize::from(len % 5000),
                        _ => 0,
                    }
                ];
                let s = match src {
                    End::Gref { r, offset } => CopySrc::Gref {
                        domid: A,
                        gref: w.gref(r),
                        offset,
                    },
                    End::Frame { frame, offset } => CopySrc::Frame {
                        frame: u32::from(frame % 10),
                        offset,
                    },
                    End::Buf { .. } => CopySrc::Buf(&sbuf),
                };
                let d = match dst {
                    End::Gref { r, offset } => CopyDst::Gref {
                        domid: A,
                        gref: w.gref(r),
                        offset,
                    },
                    End::Frame { frame, offset } => CopyDst::Frame {
                        frame: u32::from(frame % 10),
                        offset,
                    },
                    End::Buf { .. } => CopyDst::Buf(&mut dbuf),
                };
                let len = len % 4200;
                let mut ops = [CopyOp::new(s, d, len)];
                w.grantees[0].grant_copy(&mut ops);
                if len == 0 {
                    assert_eq!(ops[0].status, GntStatus::Okay, "G13");
                }
            }
            Op::End(r) => {
                let gref = w.gref(r);
                let _ = w.a.end_access(gref);
            }
            Op::InUse(r) => {
                let gref = w.gref(r);
                let _ = w.a.grant_in_use(gref);
            }
        }
        w.check();
    }
    // Teardown: every mapping released, nothing left in use.
    for (d, held) in w.grantees.iter().zip(&mut w.held) {
        for (h, _) in held.drain(..) {
            d.unmap_grant(h).expect("unmap at teardown");
        }
        assert_eq!(d.live_mappings(), 0, "mappings leaked");
    }
    for &g in w.grefs.iter().filter(|g| !w.scribbled.contains(&g.0)) {
        assert_ne!(w.a.grant_in_use(g), Ok(true), "ref {g:?} still in use");
    }
}

fn r(pick: bool, v: u16) -> (bool, u16) {
    (pick, v)
}

fn enc_ref(e: &mut Enc, (pick, v): (bool, u16)) {
    e.bool(pick).u16(v);
}

/// Seeds: grant, map (rw and ro), batch with a bad 5th entry (G7),
/// copy with a garbage ref and length 0 (G13), double unmap (G8), a raw
/// entry with the wrong domid (G4) or sub-page (G2), many maps (G6).
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let grant = |e: &mut Enc, who: u8, frame: u8, ro: bool| {
        e.variant(0, OPS).u8(who).u8(frame).bool(ro);
    };
    let map = |e: &mut Enc, who: u8, rf: (bool, u16), ro: bool| {
        e.variant(2, OPS).u8(who);
        enc_ref(e, rf);
        e.bool(ro);
    };
    let unmap = |e: &mut Enc, who: u8, held: bool, h: u32| {
        e.variant(4, OPS).u8(who).bool(held).u32(h);
    };
    let mut out = Vec::new();
    let mut e = Enc::new();
    grant(&mut e, 0, 1, false);
    grant(&mut e, 0, 2, true);
    map(&mut e, 0, r(true, 0), false);
    map(&mut e, 0, r(true, 1), false); // G3
    map(&mut e, 0, r(true, 1), true);
    map(&mut e, 1, r(true, 0), false); // wrong grantee
    e.variant(6, OPS);
    enc_ref(&mut e, r(true, 0)); // G10: end while mapped
    unmap(&mut e, 0, true, 0);
    unmap(&mut e, 0, false, 0); // G8
    e.variant(7, OPS);
    enc_ref(&mut e, r(true, 0));
    out.push(("map_unmap", e.done()));
    let mut e = Enc::new();
    for f in 0..8 {
        grant(&mut e, 0, f, f % 2 == 0);
    }
    e.variant(3, OPS).u8(0);
    for i in 0..8u16 {
        enc_ref(&mut e, if i == 4 { r(false, 0xffff) } else { r(true, i) });
    }
    e.u8(8).bool(true); // G7
    for _ in 0..30 {
        map(&mut e, 0, r(true, 0), true); // G6
    }
    out.push(("batch_many", e.done()));
    let mut e = Enc::new();
    grant(&mut e, 0, 3, false);
    e.variant(5, OPS).variant(0, 3);
    enc_ref(&mut e, r(false, 0xffff));
    e.u16(0).variant(2, 3).u16(64).u16(0); // G13
    e.variant(5, OPS).variant(0, 3);
    enc_ref(&mut e, r(true, 0));
    e.u16(4000).variant(2, 3).u16(200).u16(200); // beyond the page
    e.variant(5, OPS).variant(2, 3).u16(100).variant(0, 3);
    enc_ref(&mut e, r(true, 0));
    e.u16(10).u16(100);
    e.variant(1, OPS);
    enc_ref(&mut e, r(false, 20));
    e.u16(GTF_PERMIT_ACCESS).u8(3).u32(1); // G4: for C
    map(&mut e, 0, r(false, 20), true);
    e.variant(1, OPS);
    enc_ref(&mut e, r(false, 21));
    e.u16(GTF_PERMIT_ACCESS | GTF_SUB_PAGE).u8(2).u32(1); // G2
    map(&mut e, 0, r(false, 21), true);
    out.push(("copy_raw", e.done()));
    out
}
