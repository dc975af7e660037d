//! Shared test types: a 64-byte request and a 16-byte response, the shapes
//! the benchmarks use too.
#![allow(dead_code)]

use bytemuck::{Pod, Zeroable};

/// A 64-byte request whose `check` word is `!id`, so a torn or forged copy
/// can be told from a good one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct Req {
    pub id: u64,
    pub check: u64,
    pub payload: [u64; 6],
}

impl Req {
    pub fn new(id: u64) -> Self {
        Req {
            id,
            check: !id,
            payload: [id.wrapping_mul(0x9e37_79b9_7f4a_7c15); 6],
        }
    }
    pub fn is_valid(&self) -> bool {
        self.check == !self.id
    }
}

/// A 16-byte response with explicit, zeroed padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct Rsp {
    pub id: u64,
    pub status: i16,
    pub _pad: [u8; 6],
}

impl Rsp {
    pub fn ok(id: u64) -> Self {
        Rsp {
            id,
            status: 0,
            _pad: [0; 6],
        }
    }
}

/// A tiny deterministic PRNG (xorshift64*), so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
