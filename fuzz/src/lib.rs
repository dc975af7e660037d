//! Structure-aware fuzz inputs and drivers for the pvio fuzz targets.
//!
//! Every target decodes its input as a header and a sequence of operations
//! (an enum deriving [`arbitrary::Arbitrary`]) and applies them to the real
//! code: the real rings on real memory, the real parsers through each
//! crate's `#[doc(hidden)] fuzz_api`, the real frontends against a hostile
//! backend on the embedded hypervisor. Invariants of SECURITY.md are checked
//! with `assert!` so that a violation is a crash.
//!
//! [`Enc`] writes inputs in `arbitrary`'s format, so the seed corpus is
//! written by unit tests (`tests/seeds.rs`) from readable operation lists.

use arbitrary::{Arbitrary, Unstructured};

pub mod blkback_request;
pub mod blkfront_responses;
pub mod grant_ops;
pub mod netback_tx;
pub mod netfront_responses;
pub mod ring_back;
pub mod xs_wire;

/// Most operations applied per input (bounds the work per execution).
pub const MAX_OPS: usize = 256;

/// Decodes a header `H` then operations `O` until the input is used up.
pub fn decode<'a, H: Arbitrary<'a>, O: Arbitrary<'a>>(data: &'a [u8]) -> Option<(H, Vec<O>)> {
    let mut u = Unstructured::new(data);
    let h = H::arbitrary(&mut u).ok()?;
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        match O::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    Some((h, ops))
}

/// Writes values in the byte format `arbitrary` decodes (little-endian
/// integers, `u8 & 1` booleans, enum variants from a `u32`).
#[derive(Debug, Default, Clone)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    /// An empty input.
    pub fn new() -> Self {
        Enc(Vec::new())
    }
    /// Variant `i` of an enum of `n` variants.
    pub fn variant(&mut self, i: u32, n: u32) -> &mut Self {
        assert!(i < n);
        let v = (u64::from(i) << 32).div_ceil(u64::from(n));
        self.u32(v as u32)
    }
    /// A `u8`.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    /// A `bool`.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }
    /// A `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// An `i16`.
    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Raw bytes (a `[u8; N]`).
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
    /// The input.
    pub fn done(&self) -> Vec<u8> {
        self.0.clone()
    }
}
