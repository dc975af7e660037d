//! Parsing and validating one request copied out of the ring
//! (`spec/blkif.md` §3; SECURITY.md BB1–BB7, BB9). Pure logic: the result is
//! a [`Plan`] in terms of grant references and disk sectors, or the status to
//! answer with.

use pvio_abi::GrantRef;
use pvio_abi::blkif::{
    BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT,
    BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR,
    Request, RequestSegment,
};

/// Segments per indirect descriptor page.
pub(crate) const SEGS_PER_INDIRECT_PAGE: usize = 512;

/// What the backend negotiated and the disk allows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) sectors: u64,
    pub(crate) readonly: bool,
    pub(crate) flush: bool,
    pub(crate) barrier: bool,
    pub(crate) discard: bool,
    pub(crate) max_indirect_segments: u32,
}

/// One data segment: a page and the 512-byte sectors of it to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seg {
    pub(crate) gref: GrantRef,
    pub(crate) first: u8,
    pub(crate) last: u8,
}

impl Seg {
    pub(crate) fn sectors(self) -> u64 {
        u64::from(self.last - self.first) + 1
    }
}

/// A validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Read or write `segs` at `sector`. `barrier`: ordered against all
    /// other writes and made durable; `flush`: made durable after.
    Rw {
        write: bool,
        sector: u64,
        segs: Vec<Seg>,
        barrier: bool,
        flush: bool,
    },
    /// Flush the disk cache (no data).
    Flush,
    /// Discard `sectors` sectors at `sector`.
    Discard { sector: u64, sectors: u64 },
}

/// The operation to echo in the response: the inner op for indirect
/// requests (as Linux blkback does, `spec/blkif.md` §2.5).
pub(crate) fn echo_op(req: &Request) -> u8 {
    if req.operation == BLKIF_OP_INDIRECT {
        req.nr_segments
    } else {
        req.operation
    }
}

fn check_segs(segs: &[RequestSegment]) -> Result<Vec<Seg>, i16> {
    segs.iter()
        .map(|s| {
            // BB3: first_sect <= last_sect <= 7.
            if s.first_sect > s.last_sect || s.last_sect > 7 {
                return Err(BLKIF_RSP_ERROR);
            }
            Ok(Seg {
                gref: s.gref,
                first: s.first_sect,
                last: s.last_sect,
            })
        })
        .collect()
}

fn check_range(lim: &Limits, sector: u64, sectors: u64) -> Result<(), i16> {
    // BB4/BB9: no wrap, nothing beyond the end of the disk.
    match sector.checked_add(sectors) {
        Some(end) if end <= lim.sectors => Ok(()),
        _ => Err(BLKIF_RSP_ERROR),
    }
}

fn rw(
    lim: &Limits,
    write: bool,
    sector: u64,
    segs: Vec<Seg>,
    barrier: bool,
    flush: bool,
) -> Result<Plan, i16> {
    if write && lim.readonly {
        return Err(BLKIF_RSP_ERROR); // BB5
    }
    let total: u64 = segs.iter().map(|s| s.sectors()).sum();
    check_range(lim, sector, total)?;
    // BB10: the same page twice in one request is refused.
    for (i, s) in segs.iter().enumerate() {
        if segs[..i].iter().any(|t| t.gref == s.gref) {
            return Err(BLKIF_RSP_ERROR);
        }
    }
    Ok(Plan::Rw {
        write,
        sector,
        segs,
        barrier,
        flush,
    })
}

/// Validates a direct (non-indirect) request.
pub(crate) fn plan(req: &Request, lim: &Limits) -> Result<Plan, i16> {
    let n = usize::from(req.nr_segments);
    match req.operation {
        BLKIF_OP_READ | BLKIF_OP_WRITE => {
            // BB1/BB2: 1..=11 segments.
            if n == 0 || n > BLKIF_MAX_SEGMENTS_PER_REQUEST {
                return Err(BLKIF_RSP_ERROR);
            }
            let segs = check_segs(&req.seg[..n])?;
            rw(
                lim,
                req.operation == BLKIF_OP_WRITE,
                req.sector_number,
                segs,
                false,
                false,
            )
        }
        BLKIF_OP_WRITE_BARRIER | BLKIF_OP_FLUSH_DISKCACHE => {
            let barrier = req.operation == BLKIF_OP_WRITE_BARRIER;
            if (barrier && !lim.barrier) || (!barrier && !lim.flush) {
                return Err(BLKIF_RSP_EOPNOTSUPP); // BB6: not advertised
            }
            if n > BLKIF_MAX_SEGMENTS_PER_REQUEST {
                return Err(BLKIF_RSP_ERROR);
            }
            if n == 0 {
                return Ok(Plan::Flush);
            }
            let segs = check_segs(&req.seg[..n])?;
            rw(lim, true, req.sector_number, segs, barrier, !barrier)
        }
        BLKIF_OP_DISCARD => {
            if !lim.discard {
                return Err(BLKIF_RSP_EOPNOTSUPP);
            }
            let d = req.to_discard();
            if d.flag != 0 {
                return Err(BLKIF_RSP_EOPNOTSUPP); // secure discard not offered
            }
            if lim.readonly {
                return Err(BLKIF_RSP_ERROR);
            }
            check_range(lim, d.sector_number, d.nr_sectors)?;
            Ok(Plan::Discard {
                sector: d.sector_number,
                sectors: d.nr_sectors,
            })
        }
        BLKIF_OP_INDIRECT => Err(BLKIF_RSP_ERROR), // handled by plan_indirect
        _ => Err(BLKIF_RSP_ERROR),                 // BB6: unknown op
    }
}

/// The descriptor pages an indirect request needs, after checking its
/// header (BB2): `indirect_op` read or write, 1..=max segments.
pub(crate) fn indirect_pages(
    req: &Request,
    lim: &Limits,
) -> Result<(bool, usize, Vec<GrantRef>), i16> {
    let ind = req.to_indirect();
    let write = match ind.indirect_op {
        BLKIF_OP_READ => false,
        BLKIF_OP_WRITE => true,
        _ => return Err(BLKIF_RSP_ERROR),
    };
    if lim.max_indirect_segments == 0 {
        return Err(BLKIF_RSP_EOPNOTSUPP);
    }
    let n = usize::from(ind.nr_segments);
    if n == 0 || n > lim.max_indirect_segments as usize {
        return Err(BLKIF_RSP_ERROR);
    }
    let pages = n.div_ceil(SEGS_PER_INDIRECT_PAGE);
    if pages > ind.indirect_grefs.len() {
        return Err(BLKIF_RSP_ERROR);
    }
    Ok((write, n, ind.indirect_grefs[..pages].to_vec()))
}

/// Validates an indirect request whose `segs` were copied out of its
/// descriptor pages once (BB7: only this copy is used).
pub(crate) fn plan_indirect(
    req: &Request,
    lim: &Limits,
    write: bool,
    segs: &[RequestSegment],
) -> Result<Plan, i16> {
    let segs = check_segs(segs)?;
    rw(
        lim,
        write,
        req.to_indirect().sector_number,
        segs,
        false,
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvio_abi::blkif::{BLKIF_OP_RESERVED_1, RequestDiscard};

    fn lim() -> Limits {
        Limits {
            sectors: 1000,
            readonly: false,
            flush: true,
            barrier: true,
            discard: true,
            max_indirect_segments: 64,
        }
    }

    fn req(op: u8, n: u8, sector: u64) -> Request {
        let mut r = Request {
            operation: op,
            nr_segments: n,
            id: 7,
            sector_number: sector,
            ..Default::default()
        };
        for (i, s) in r.seg.iter_mut().enumerate() {
            *s = RequestSegment {
                gref: GrantRef(100 + i as u32),
                first_sect: 0,
                last_sect: 7,
                ..Default::default()
            };
        }
        r
    }

    #[test]
    fn good_requests() {
        assert_eq!(
            plan(&req(BLKIF_OP_READ, 2, 0), &lim()),
            Ok(Plan::Rw {
                write: false,
                sector: 0,
                segs: vec![
                    Seg {
                        gref: GrantRef(100),
                        first: 0,
                        last: 7
                    },
                    Seg {
                        gref: GrantRef(101),
                        first: 0,
                        last: 7
                    }
                ],
                barrier: false,
                flush: false
            })
        );
        assert_eq!(
            plan(&req(BLKIF_OP_FLUSH_DISKCACHE, 0, 0), &lim()),
            Ok(Plan::Flush)
        );
        // Exactly up to the end of the disk.
        assert!(plan(&req(BLKIF_OP_WRITE, 11, 1000 - 88), &lim()).is_ok());
    }

    #[test]
    fn bb1_bb2_segment_counts() {
        assert_eq!(
            plan(&req(BLKIF_OP_READ, 0, 0), &lim()),
            Err(BLKIF_RSP_ERROR)
        );
        assert_eq!(
            plan(&req(BLKIF_OP_WRITE, 12, 0), &lim()),
            Err(BLKIF_RSP_ERROR)
        );
        assert_eq!(
            plan(&req(BLKIF_OP_WRITE, 255, 0), &lim()),
            Err(BLKIF_RSP_ERROR)
        );
    }

    #[test]
    fn bb3_bad_sector_bounds() {
        let mut r = req(BLKIF_OP_READ, 1, 0);
        r.seg[0].first_sect = 5;
        r.seg[0].last_sect = 4;
        assert_eq!(plan(&r, &lim()), Err(BLKIF_RSP_ERROR));
        r.seg[0].first_sect = 0;
        r.seg[0].last_sect = 8;
        assert_eq!(plan(&r, &lim()), Err(BLKIF_RSP_ERROR));
    }

    #[test]
    fn bb4_range_wraps_or_beyond_end() {
        assert_eq!(
            plan(&req(BLKIF_OP_READ, 1, u64::MAX - 3), &lim()),
            Err(BLKIF_RSP_ERROR)
        );
        assert_eq!(
            plan(&req(BLKIF_OP_READ, 1, 993), &lim()),
            Err(BLKIF_RSP_ERROR)
        );
    }

    #[test]
    fn bb5_write_to_readonly() {
        let ro = Limits {
            readonly: true,
            ..lim()
        };
        assert_eq!(plan(&req(BLKIF_OP_WRITE, 1, 0), &ro), Err(BLKIF_RSP_ERROR));
        assert!(plan(&req(BLKIF_OP_READ, 1, 0), &ro).is_ok());
        let d = RequestDiscard {
            operation: BLKIF_OP_DISCARD,
            nr_sectors: 8,
            ..Default::default()
        };
        assert_eq!(plan(&Request::from(d), &ro), Err(BLKIF_RSP_ERROR));
    }

    #[test]
    fn bb6_unknown_and_unadvertised_ops() {
        assert_eq!(
            plan(&req(BLKIF_OP_RESERVED_1, 1, 0), &lim()),
            Err(BLKIF_RSP_ERROR)
        );
        assert_eq!(plan(&req(200, 1, 0), &lim()), Err(BLKIF_RSP_ERROR));
        let none = Limits {
            flush: false,
            barrier: false,
            discard: false,
            max_indirect_segments: 0,
            ..lim()
        };
        assert_eq!(
            plan(&req(BLKIF_OP_FLUSH_DISKCACHE, 0, 0), &none),
            Err(BLKIF_RSP_EOPNOTSUPP)
        );
        assert_eq!(
            plan(&req(BLKIF_OP_WRITE_BARRIER, 1, 0), &none),
            Err(BLKIF_RSP_EOPNOTSUPP)
        );
        let d = RequestDiscard {
            operation: BLKIF_OP_DISCARD,
            nr_sectors: 8,
            ..Default::default()
        };
        assert_eq!(plan(&Request::from(d), &none), Err(BLKIF_RSP_EOPNOTSUPP));
    }

    #[test]
    fn bb9_discard_ranges() {
        let d = RequestDiscard {
            operation: BLKIF_OP_DISCARD,
            sector_number: 10,
            nr_sectors: u64::MAX,
            ..Default::default()
        };
        assert_eq!(plan(&Request::from(d), &lim()), Err(BLKIF_RSP_ERROR));
        let d = RequestDiscard {
            operation: BLKIF_OP_DISCARD,
            sector_number: 10,
            nr_sectors: 990,
            ..Default::default()
        };
        assert_eq!(
            plan(&Request::from(d), &lim()),
            Ok(Plan::Discard {
                sector: 10,
                sectors: 990
            })
        );
        let d = RequestDiscard {
            operation: BLKIF_OP_DISCARD,
            flag: 1,
            nr_sectors: 1,
            ..Default::default()
        };
        assert_eq!(
            plan(&Request::from(d), &lim()),
            Err(BLKIF_RSP_EOPNOTSUPP),
            "secure discard not offered"
        );
    }

    #[test]
    fn bb10_same_gref_twice() {
        let mut r = req(BLKIF_OP_READ, 2, 0);
        r.seg[1].gref = r.seg[0].gref;
        assert_eq!(plan(&r, &lim()), Err(BLKIF_RSP_ERROR));
    }

    #[test]
    fn bb2_indirect_counts() {
        let mut ind = pvio_abi::blkif::RequestIndirect {
            operation: BLKIF_OP_INDIRECT,
            indirect_op: BLKIF_OP_READ,
            nr_segments: 65,
            ..Default::default()
        };
        assert_eq!(
            indirect_pages(&Request::from(ind), &lim()).unwrap_err(),
            BLKIF_RSP_ERROR,
            "above the advertised max"
        );
        ind.nr_segments = 0;
        assert_eq!(
            indirect_pages(&Request::from(ind), &lim()).unwrap_err(),
            BLKIF_RSP_ERROR
        );
        ind.nr_segments = 64;
        ind.indirect_op = BLKIF_OP_DISCARD;
        assert_eq!(
            indirect_pages(&Request::from(ind), &lim()).unwrap_err(),
            BLKIF_RSP_ERROR
        );
        ind.indirect_op = BLKIF_OP_WRITE;
        let (write, n, pages) = indirect_pages(&Request::from(ind), &lim()).unwrap();
        assert!(write);
        assert_eq!((n, pages.len()), (64, 1));
        assert_eq!(
            echo_op(&Request::from(ind)),
            BLKIF_OP_WRITE,
            "indirect echoes the inner op"
        );
    }
}
