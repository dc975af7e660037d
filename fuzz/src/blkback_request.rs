//! `blkback_request`: the blkback request parser and validator
//! (`blkback/src/request.rs` through `pvio_blkback::fuzz_api`), direct and
//! indirect (SECURITY.md BB1–BB7, BB9, BB10). Whatever a plan says must be
//! safe to do: sectors on the disk, segments inside their pages, no write to
//! a read-only disk, no page twice, no more segments than allowed.

use arbitrary::Arbitrary;
use pvio_abi::GrantRef;
use pvio_abi::blkif::{
    BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD, BLKIF_OP_INDIRECT, Request, RequestDiscard,
    RequestIndirect, RequestSegment,
};
use pvio_blkback::fuzz_api::{
    FuzzLimits, FuzzPlan, SEGS_PER_INDIRECT_PAGE, echo_op, indirect_pages, plan, plan_indirect,
};

use crate::Enc;

/// The disk and what was negotiated.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Disk size: `sectors_log2 % 64` bits.
    pub sectors_log2: u8,
    pub readonly: bool,
    pub flush: bool,
    pub barrier: bool,
    pub discard: bool,
    /// `feature-max-indirect-segments`, 0..=4095.
    pub max_indirect: u16,
}

/// One request as the frontend wrote it.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Req {
    /// A direct request: `op % 8`, the 11 segment slots.
    Direct {
        op: u8,
        nr_segments: u8,
        sector: u64,
        segs: [(u8, u8, u8); 11],
    },
    /// An indirect request; its descriptor pages hold `nr_segments`
    /// segments built from `pattern` (gref `base + i * stride`).
    Indirect {
        indirect_op: u8,
        nr_segments: u16,
        sector: u64,
        pages: [u32; 8],
        base: u32,
        stride: u8,
        pattern: [(u8, u8); 4],
    },
    /// A discard.
    Discard {
        flag: u8,
        sector: u64,
        nr_sectors: u64,
    },
    /// Anything.
    Raw([u8; 112]),
}

/// Number of [`Req`] variants.
pub const REQS: u32 = 4;

/// A ring slot holding `bytes` (zero-padded to a request's size).
fn to_req(bytes: &[u8]) -> Request {
    let mut b = [0u8; size_of::<Request>()];
    let n = bytes.len().min(b.len());
    b[..n].copy_from_slice(&bytes[..n]);
    bytemuck::pod_read_unaligned(&b)
}

fn request(r: &Req) -> (Request, Vec<RequestSegment>) {
    match r {
        Req::Direct {
            op,
            nr_segments,
            sector,
            segs,
        } => {
            let mut req = Request {
                operation: op % 8,
                nr_segments: *nr_segments,
                id: 0x1234,
                sector_number: *sector,
                ..Default::default()
            };
            for (s, &(g, f, l)) in req.seg.iter_mut().zip(segs) {
                *s = RequestSegment {
                    gref: GrantRef(u32::from(g)),
                    first_sect: f,
                    last_sect: l,
                    _pad0: [0; 2],
                };
            }
            (req, Vec::new())
        }
        Req::Indirect {
            indirect_op,
            nr_segments,
            sector,
            pages,
            base,
            stride,
            pattern,
        } => {
            let ind = RequestIndirect {
                operation: BLKIF_OP_INDIRECT,
                indirect_op: *indirect_op,
                nr_segments: *nr_segments,
                id: 0x5678,
                sector_number: *sector,
                indirect_grefs: pages.map(GrantRef),
                ..Default::default()
            };
            let n = usize::from(*nr_segments).min(8 * SEGS_PER_INDIRECT_PAGE);
            let segs = (0..n)
                .map(|i| {
                    let (f, l) = pattern[i % pattern.len()];
                    RequestSegment {
                        gref: GrantRef(base.wrapping_add(i as u32 * u32::from(*stride))),
                        first_sect: f,
                        last_sect: l,
                        _pad0: [0; 2],
                    }
                })
                .collect();
            (to_req(bytemuck::bytes_of(&ind)), segs)
        }
        Req::Discard {
            flag,
            sector,
            nr_sectors,
        } => {
            let d = RequestDiscard {
                operation: BLKIF_OP_DISCARD,
                flag: *flag,
                id: 9,
                sector_number: *sector,
                nr_sectors: *nr_sectors,
                ..Default::default()
            };
            (to_req(bytemuck::bytes_of(&d)), Vec::new())
        }
        Req::Raw(b) => (to_req(b), Vec::new()),
    }
}

fn check(p: &FuzzPlan, l: &FuzzLimits, max_segs: usize) {
    match p {
        FuzzPlan::Rw {
            write,
            sector,
            segs,
        } => {
            assert!(!(*write && l.readonly), "BB5: write to a read-only disk");
            assert!(!segs.is_empty() && segs.len() <= max_segs, "BB1/BB2");
            let mut total = 0u64;
            for (i, &(g, f, last)) in segs.iter().enumerate() {
                assert!(f <= last && last <= 7, "BB3: {f}..{last}");
                assert!(segs[..i].iter().all(|s| s.0 != g), "BB10: page twice");
                total += u64::from(last - f) + 1;
            }
            let end = sector.checked_add(total).expect("BB4: wraps");
            assert!(end <= l.sectors, "BB4: beyond the disk");
        }
        FuzzPlan::Flush => assert!(l.flush || l.barrier),
        FuzzPlan::Discard { sector, sectors } => {
            assert!(l.discard && !l.readonly, "BB9");
            let end = sector.checked_add(*sectors).expect("BB9: wraps");
            assert!(end <= l.sectors, "BB9: beyond the disk");
        }
    }
}

pub fn run(data: &[u8]) {
    let Some((h, reqs)) = crate::decode::<Header, Req>(data) else {
        return;
    };
    let lim = FuzzLimits {
        sectors: 1u64
            .checked_shl(u32::from(h.sectors_log2 % 64))
            .unwrap_or(0),
        readonly: h.readonly,
        flush: h.flush,
        barrier: h.barrier,
        discard: h.discard,
        max_indirect_segments: u32::from(h.max_indirect % 4096),
    };
    for r in &reqs {
        let (req, segs) = request(r);
        let _ = echo_op(&req);
        if req.operation == BLKIF_OP_INDIRECT {
            let Ok((write, n, pages)) = indirect_pages(&req, &lim) else {
                continue;
            };
            assert!(n >= 1 && n <= lim.max_indirect_segments as usize, "BB2");
            assert_eq!(pages.len(), n.div_ceil(SEGS_PER_INDIRECT_PAGE));
            // The worker reads exactly `n` segments out of the pages once.
            let mut got = segs.clone();
            got.resize(n, RequestSegment::default());
            if let Ok(p) = plan_indirect(&req, &lim, write, &got) {
                check(&p, &lim, n);
                let FuzzPlan::Rw { write: w, .. } = p else {
                    panic!("indirect plan {p:?}");
                };
                assert_eq!(w, write);
            }
        } else if let Ok(p) = plan(&req, &lim) {
            check(&p, &lim, BLKIF_MAX_SEGMENTS_PER_REQUEST);
        }
    }
}

/// Seeds: a read and a write, BB1/BB3/BB4/BB10 cases, an indirect read of
/// 600 segments and one above the maximum, discards.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let hdr = |e: &mut Enc, ro: bool| {
        e.u8(20).bool(ro).bool(true).bool(true).bool(true).u16(1024);
    };
    let direct = |e: &mut Enc, op: u8, n: u8, sector: u64, segs: &[(u8, u8, u8)]| {
        e.variant(0, REQS).u8(op).u8(n).u64(sector);
        for i in 0..11 {
            let (g, f, l) = segs.get(i).copied().unwrap_or((0, 0, 0));
            e.u8(g).u8(f).u8(l);
        }
    };
    let indirect = |e: &mut Enc, op: u8, n: u16, sector: u64| {
        e.variant(1, REQS).u8(op).u16(n).u64(sector);
        for p in 0..8 {
            e.u32(100 + p);
        }
        e.u32(1000).u8(1);
        for (f, l) in [(0, 7), (0, 0), (3, 4), (7, 7)] {
            e.u8(f).u8(l);
        }
    };
    let mut out = Vec::new();
    let mut e = Enc::new();
    hdr(&mut e, false);
    direct(&mut e, 0, 2, 8, &[(8, 0, 7), (9, 0, 3)]);
    direct(&mut e, 1, 1, 0, &[(8, 1, 1)]);
    direct(&mut e, 3, 0, 0, &[]);
    direct(&mut e, 2, 1, 16, &[(10, 0, 7)]);
    out.push(("rw", e.done()));
    let mut e = Enc::new();
    hdr(&mut e, true);
    direct(&mut e, 0, 0, 0, &[]); // BB1
    direct(&mut e, 0, 12, 0, &[]); // BB2
    direct(&mut e, 0, 1, 0, &[(8, 5, 4)]); // BB3
    direct(&mut e, 0, 1, 0, &[(8, 0, 8)]); // BB3
    direct(&mut e, 0, 1, u64::MAX - 3, &[(8, 0, 7)]); // BB4
    direct(&mut e, 1, 1, 0, &[(8, 0, 7)]); // BB5
    direct(&mut e, 7, 1, 0, &[(8, 0, 7)]); // BB6
    direct(&mut e, 0, 2, 0, &[(8, 0, 7), (8, 0, 7)]); // BB10
    out.push(("bb_errors", e.done()));
    let mut e = Enc::new();
    hdr(&mut e, false);
    indirect(&mut e, 0, 600, 64);
    indirect(&mut e, 1, 1025, 0); // BB2
    indirect(&mut e, 5, 4, 0);
    out.push(("indirect", e.done()));
    let mut e = Enc::new();
    hdr(&mut e, false);
    for (flag, sector, n) in [(0u8, 0u64, 8u64), (0, 5, u64::MAX), (1, 0, 1)] {
        e.variant(2, REQS).u8(flag).u64(sector).u64(n); // BB9
    }
    out.push(("discard", e.done()));
    out
}
