//! The Xen shared request/response ring (`xen/include/public/io/ring.h`),
//! generic over its request and response types, in safe code over
//! [`pvio_shmem::SharedMem`].
//!
//! One shared area holds a 64-byte header (`req_prod`, `req_event`,
//! `rsp_prod`, `rsp_event`, padding) and a power-of-two array of slots, each
//! the size of the C union of a request and a response. The frontend
//! ([`FrontRing`]) produces requests and consumes responses; the backend
//! ([`BackRing`]) consumes requests and produces responses into the slots of
//! the requests it has consumed. Both keep their own indices privately and
//! publish them explicitly, so a batch of any size costs one index store.
//!
//! # Against a hostile peer
//! * Every index the peer writes is read once into a local, checked with the
//!   overflow predicates of `spec/ring.md` §7 (made strict: an index that moves
//!   backwards is caught too), and a bad one puts the ring into a sticky
//!   [`Fault`]: every later call returns [`RingError::Broken`]. No loop is ever
//!   bounded by a peer's number beyond the ring size, and nothing panics.
//! * Every request or response is copied out of its slot once, by value
//!   ([`pvio_shmem::SharedMem::read_pod`]); there is no way to obtain a
//!   reference into the ring.
//! * The frontend never reads back a request slot: it completes requests
//!   from its own records (SECURITY.md R12).
//!
//! # Notification hold-off
//! [`FrontRing::publish_and_check_notify`] and
//! [`BackRing::publish_and_check_notify`] return a `#[must_use]` [`Notify`]
//! computed with the exact predicate of `ring.md` §6.3; the consumer re-arms
//! with [`FrontRing::final_check_for_responses`] /
//! [`BackRing::final_check_for_requests`] before it sleeps. The two
//! `fence(SeqCst)`s (one after publishing, one after re-arming) form a Dekker
//! handshake: either the producer sees the consumer's new event index and
//! notifies, or the consumer sees the new producer index and does not sleep.
//! The loom model in `tests/loom.rs` checks that no wakeup is lost.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use pvio_abi::blkif::{Request, Response};
//! use pvio_ring::{BackRing, FrontRing};
//! use pvio_shmem::MemfdMem;
//!
//! let mem = Arc::new(MemfdMem::new(c"vbd-ring", 4096)?); // one page: 32 slots
//! let mut front = FrontRing::<_, Request, Response>::init(mem.clone())?;
//! let mut back = BackRing::<_, Request, Response>::attach(mem)?;
//! assert_eq!(front.nr_ents(), 32);
//!
//! let mut batch = front.reserve(2)?;
//! batch.push(&Request { id: 1, ..Default::default() })?;
//! batch.push(&Request { id: 2, ..Default::default() })?;
//! assert!(batch.publish_and_check_notify()?.is_needed()); // first request: wake the backend
//!
//! let answered = back.answer_requests(u32::MAX, |req| Response { id: req.id, ..Default::default() })?;
//! assert_eq!(answered, 2);
//! let _ = back.publish_and_check_notify()?;
//! let mut done = Vec::new();
//! front.drain_responses(u32::MAX, |rsp| done.push(rsp.id))?;
//! assert_eq!(done, [1, 2]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![no_std]
#![forbid(unsafe_code)]

mod back;
mod front;
mod side;

use core::fmt;
use core::marker::PhantomData;

use pvio_shmem::{MemError, Pod, SharedMem};

pub use back::{BackRing, ResponseBatch};
pub use front::{FrontRing, RequestBatch};
pub use side::Batch;

/// Byte offsets of the shared header fields (`spec/ring.md` §2).
pub mod layout {
    /// `req_prod`: written by the frontend.
    pub const REQ_PROD: usize = 0;
    /// `req_event`: written by the backend.
    pub const REQ_EVENT: usize = 4;
    /// `rsp_prod`: written by the backend.
    pub const RSP_PROD: usize = 8;
    /// `rsp_event`: written by the frontend.
    pub const RSP_EVENT: usize = 12;
    /// `pvt` + `__pad`: zeroed at init, unused.
    pub const PAD: usize = 16;
    /// Size of the header; the slot array starts here.
    pub const HEADER: usize = 64;
    /// Largest ring Linux and Xen accept: 16 pages (order 4).
    pub const MAX_ORDER: u32 = 4;
}

const _: () =
    assert!(layout::REQ_PROD == core::mem::offset_of!(pvio_abi::ring::SringHeader, req_prod));
const _: () =
    assert!(layout::REQ_EVENT == core::mem::offset_of!(pvio_abi::ring::SringHeader, req_event));
const _: () =
    assert!(layout::RSP_PROD == core::mem::offset_of!(pvio_abi::ring::SringHeader, rsp_prod));
const _: () =
    assert!(layout::RSP_EVENT == core::mem::offset_of!(pvio_abi::ring::SringHeader, rsp_event));
const _: () = assert!(layout::HEADER == core::mem::size_of::<pvio_abi::ring::SringHeader>());

/// The notification hold-off predicate of `ring.md` §6.3: after moving a
/// producer index from `old` to `new`, notify iff the consumer's event index
/// lies in `(old, new]`, in wrapping 32-bit arithmetic.
#[inline]
pub const fn need_notify(old: u32, new: u32, event: u32) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}

/// Number of slots of a ring of `bytes` bytes whose entries are
/// `entry_size` bytes: `round_down_pow2((bytes - 64) / entry_size)`, or 0.
#[inline]
pub const fn slots_for(bytes: usize, entry_size: usize) -> u32 {
    if entry_size == 0 || bytes <= layout::HEADER {
        return 0;
    }
    let n = (bytes - layout::HEADER) / entry_size;
    if n == 0 {
        return 0;
    }
    let n = if n > u32::MAX as usize {
        u32::MAX
    } else {
        n as u32
    };
    1 << (31 - n.leading_zeros())
}

/// Size of one slot: the size of the C union of `Req` and `Rsp` (the larger
/// size rounded up to the larger alignment).
#[inline]
pub const fn entry_size<Req, Rsp>() -> usize {
    let size = if size_of::<Req>() > size_of::<Rsp>() {
        size_of::<Req>()
    } else {
        size_of::<Rsp>()
    };
    let align = if align_of::<Req>() > align_of::<Rsp>() {
        align_of::<Req>()
    } else {
        align_of::<Rsp>()
    };
    size.div_ceil(align) * align
}

/// Whether to signal the peer's event channel now.
///
/// Returned by the publish-and-check operations; ignoring it loses wakeups.
#[must_use = "if the peer must be notified and is not, it may sleep forever"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notify(bool);

impl Notify {
    /// True if the peer asked to be woken at an index this publication crossed.
    #[inline]
    pub fn is_needed(self) -> bool {
        self.0
    }
}

/// How the peer broke the ring protocol. Once recorded it is sticky.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The frontend published a `req_prod` claiming more requests than the
    /// ring can hold, or one that moved backwards (request-producer overflow).
    RequestOverflow {
        /// The `req_prod` read from the ring.
        req_prod: u32,
        /// The backend's `req_cons`.
        req_cons: u32,
        /// The backend's `rsp_prod_pvt`.
        rsp_prod_pvt: u32,
    },
    /// The backend published a `rsp_prod` beyond the requests the frontend
    /// published, or one that moved backwards (response-producer overflow).
    ResponseOverflow {
        /// The `rsp_prod` read from the ring.
        rsp_prod: u32,
        /// The frontend's `rsp_cons`.
        rsp_cons: u32,
        /// The frontend's published `req_prod`.
        req_prod: u32,
    },
    /// The shared memory refused an access (a broken mapping).
    Memory(MemError),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Fault::RequestOverflow {
                req_prod,
                req_cons,
                rsp_prod_pvt,
            } => write!(
                f,
                "impossible request producer index {req_prod} (req_cons {req_cons}, rsp_prod_pvt {rsp_prod_pvt})"
            ),
            Fault::ResponseOverflow {
                rsp_prod,
                rsp_cons,
                req_prod,
            } => write!(
                f,
                "impossible response producer index {rsp_prod} (rsp_cons {rsp_cons}, req_prod {req_prod})"
            ),
            Fault::Memory(e) => write!(f, "ring memory: {e}"),
        }
    }
}

/// Why a ring operation did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// The peer broke the protocol; the ring is unusable until reconnected.
    Broken(Fault),
    /// No free slot (frontend: `nr_ents` requests outstanding), or a batch
    /// asked for more slots than are free.
    Full,
    /// The backend tried to respond with no consumed, unanswered request:
    /// the slot would hold a request it has not read.
    NoRequestToAnswer,
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::Broken(fault) => write!(f, "ring broken: {fault}"),
            RingError::Full => write!(f, "ring full"),
            RingError::NoRequestToAnswer => write!(f, "no consumed request left to answer"),
        }
    }
}

impl core::error::Error for RingError {}

/// Why a ring could not be set up or attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupError {
    /// The area is not 1, 2, 4, 8 or 16 pages (for [`FrontRing::init`] and
    /// [`BackRing::attach`]) or too small to hold the header and one slot.
    BadSize {
        /// Size offered.
        bytes: usize,
    },
    /// The indices of a live ring are already inconsistent (SECURITY.md R4).
    Inconsistent {
        /// `req_prod` read from the ring.
        req_prod: u32,
        /// `rsp_prod` read from the ring.
        rsp_prod: u32,
    },
    /// The shared memory refused an access.
    Memory(MemError),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SetupError::BadSize { bytes } => write!(f, "bad ring size of {bytes} bytes"),
            SetupError::Inconsistent { req_prod, rsp_prod } => write!(
                f,
                "live ring has inconsistent indices (req_prod {req_prod}, rsp_prod {rsp_prod})"
            ),
            SetupError::Memory(e) => write!(f, "ring memory: {e}"),
        }
    }
}

impl core::error::Error for SetupError {}

impl From<MemError> for SetupError {
    fn from(e: MemError) -> Self {
        SetupError::Memory(e)
    }
}

/// Counters every ring keeps, so a benchmark can say where the time goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Messages written into slots (requests for a front ring, responses for
    /// a back ring).
    pub produced: u64,
    /// Producer index stores (one per published batch).
    pub publishes: u64,
    /// Publications after which the peer had to be notified.
    pub notifies: u64,
    /// Publications whose notification the hold-off suppressed.
    pub suppressed: u64,
    /// Messages copied out of slots.
    pub consumed: u64,
    /// Reads of the peer's producer index.
    pub index_reads: u64,
}

/// Geometry shared by both ends: slot count and entry size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry<Req, Rsp> {
    nr_ents: u32,
    _types: PhantomData<fn() -> (Req, Rsp)>,
}

impl<Req: Pod, Rsp: Pod> Geometry<Req, Rsp> {
    const ENTRY: usize = entry_size::<Req, Rsp>();

    /// Geometry of a ring spanning exactly `bytes`, which must be
    /// `4096 << order` for order 0..=4.
    fn pages(bytes: usize) -> Result<Self, SetupError> {
        let pages = bytes / pvio_shmem::PAGE_SIZE;
        let ok = bytes.is_multiple_of(pvio_shmem::PAGE_SIZE)
            && pages.is_power_of_two()
            && pages <= 1 << layout::MAX_ORDER;
        if !ok {
            return Err(SetupError::BadSize { bytes });
        }
        Self::bytes(bytes)
    }

    /// Geometry of a ring spanning `bytes` (any size holding one slot).
    fn bytes(bytes: usize) -> Result<Self, SetupError> {
        match slots_for(bytes, Self::ENTRY) {
            0 => Err(SetupError::BadSize { bytes }),
            nr_ents => Ok(Geometry {
                nr_ents,
                _types: PhantomData,
            }),
        }
    }

    #[inline]
    fn slot(&self, idx: u32) -> usize {
        layout::HEADER + (idx & (self.nr_ents - 1)) as usize * Self::ENTRY
    }
}

impl<Req: Pod, Rsp: Pod> Geometry<Req, Rsp> {
    /// The slots of `n` (at most `nr_ents`) messages from index `from`, as at
    /// most two contiguous runs `(offset of the first slot, count)`.
    #[inline]
    fn runs(&self, from: u32, n: u32) -> [(usize, usize); 2] {
        let n = n.min(self.nr_ents);
        let first = from & (self.nr_ents - 1);
        let run1 = n.min(self.nr_ents - first);
        [
            (self.slot(from), run1 as usize),
            (layout::HEADER, (n - run1) as usize),
        ]
    }
}

/// Checks that the slots of `mem` are aligned for both message types (a
/// window at an odd offset would make every slot access fail later).
fn check_slots<M: SharedMem, Req: Pod, Rsp: Pod>(mem: &M) -> Result<(), SetupError> {
    mem.read_pod::<Req>(layout::HEADER)?;
    mem.read_pod::<Rsp>(layout::HEADER)?;
    Ok(())
}

/// Checks that `mem` can hold `bytes` of ring.
fn check_mem<M: SharedMem>(mem: &M, bytes: usize) -> Result<(), SetupError> {
    if bytes > mem.size() {
        return Err(SetupError::BadSize { bytes });
    }
    Ok(())
}
