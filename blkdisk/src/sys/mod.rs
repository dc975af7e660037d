//! The only module of this crate with `unsafe`: handing memory to the kernel.
//!
//! # The memory-lifetime rule
//!
//! An io_uring submission carries raw addresses (a buffer, an iovec array)
//! that the kernel reads or writes **after** the push returns, until the
//! operation's completion is posted. Rust cannot see that use, so this
//! module upholds it by ownership:
//!
//! * every address placed in a submission is computed here, from a region
//!   that the submission's slot owns (the [`DiskOp`](crate::DiskOp)'s `Arc`
//!   segments, or a boxed bounce buffer), via
//!   [`RawView::addr`](pvio_shmem::RawView::addr), which bounds-checks it;
//! * the slot, and so those regions and the iovec array, stays in the ring
//!   until the operation's completion is reaped; only then is it handed
//!   back;
//! * dropping a ring with operations in flight first waits for all their
//!   completions; if the kernel stops answering, the slots are leaked rather
//!   than freed.
//!
//! Shared memory is never turned into a Rust reference here: the addresses
//! only go to the kernel.

#![allow(unsafe_code)]

pub mod baseline;
mod ring;
mod stat;

pub(crate) use ring::{Align, Finished, Rejected, Ring};
pub(crate) use stat::{dio_align, nowait_unsupported};
