//! pvio: the command-line front door of the split drivers.
//!
//! * [`demo`]: the embedded demo (a vbd on a sparse image and a vif pair on
//!   netback's switch, with a short verified workload and a table).
//! * [`nbd`]: an NBD server over any [`nbd::BlockDevice`], implemented for
//!   [`pvio_blkfront::Blkfront`] (`pvio blkfront --nbd`).
//! * [`bridge`]: a netfront bridged to a TAP device (`pvio netfront --tap`).
//! * [`embedded`]: the in-process hypervisor with dom0, a backend and a
//!   frontend domain.
//! * [`hosted`]: helpers of the hosted commands (`pvio hv`, `pvio
//!   blkback`, ...): the daemon, domain processes, the toolstack role.
//! * [`shutdown`]: SIGINT/SIGTERM as a stop flag.

#![forbid(unsafe_code)]

pub mod bridge;
pub mod demo;
pub mod embedded;
pub mod hosted;
pub mod nbd;
pub mod shutdown;

/// The error type of the command line.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
