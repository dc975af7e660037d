//! XenBus for pvio: the XenStore of the in-tree hypervisor and the
//! driver-side helpers of the XenbusState handshake.
//!
//! | Module / item | Follows |
//! |---|---|
//! | [`store`]: [`Store`], [`Conn`], [`Quota`] | spec/xenbus.md §6.2–6.4, `docs/misc/xenstore.txt`, xenstored's permission, watch and quota rules |
//! | [`path`] | spec/xenbus.md §6.2 (path syntax and limits) |
//! | [`perms`]: [`Perms`] | `docs/misc/xenstore.txt` (permissions), xenstored `perm_for_conn` |
//! | [`XsError`] | spec/xenbus.md §6.3 (error names) |
//! | [`XsClient`], [`Txn`], [`with_transaction`] | spec/xenbus.md §3 (grouped writes), §6.4 (transactions) |
//! | [`device`] | spec/xenbus.md §1, §3–5; blkif.md §6, netif.md §5 (typed keys); SECURITY.md C3 |
//! | [`backend`]: [`BackendMachine`] | spec/xenbus.md §3–5; SECURITY.md C4 |
//! | [`toolstack`] | spec/xenbus.md §2, §4.2 |
//! | [`wire`]: [`WireServer`], [`WireConn`], [`Client`] | spec/xenbus.md §6.2–6.4 (`xs_wire.h` framing), xenstored's socket |
//!
//! # Against hostile domains (SECURITY.md CTL)
//! * C1/C2: every per-domain resource in the store is bounded by a
//!   [`Quota`]: queued watch events per connection and per watch (identical
//!   pending events are coalesced, and a watch over its cap gets one
//!   "re-read everything" marker instead, so memory stays bounded and no
//!   change goes unnoticed), watches, open transactions, nodes, value size.
//!   A flooding or never-reading domain hits its own limits with clear
//!   errors ([`XsError::Quota`]); other connections are unaffected.
//! * C3: the typed readers of [`device`] parse strictly and refuse values
//!   above protocol maxima.
//! * C4: [`BackendMachine`] is idempotent and always acts on the current
//!   frontend state; [`device::wait_for_state`] re-reads after every event.
//!
//! # Example: a handshake step
//! ```
//! use std::time::Duration;
//! use pvio_abi::{DomId, xenbus::XenbusState};
//! use pvio_xenbus::device::{read_state, switch_state, wait_for_state};
//! use pvio_xenbus::toolstack::{DevicePaths, create_device};
//! use pvio_xenbus::Store;
//!
//! let store = Store::new();
//! store.introduce_domain(DomId(1))?;
//! let dev = DevicePaths::new(DomId(1), DomId(0), "vif", 0);
//! let dom0 = store.connect(DomId(0));
//! create_device(&dom0, &dev, &[], &[])?;
//!
//! let guest = store.connect(DomId(1));
//! switch_state(&dom0, &dev.backend, XenbusState::InitWait)?;
//! let seen = wait_for_state(&guest, &dev.backend, Duration::from_secs(5), |s| {
//!     s >= XenbusState::InitWait
//! })?;
//! assert_eq!(seen, XenbusState::InitWait);
//! assert_eq!(read_state(&guest, &dev.frontend), XenbusState::Initialising);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
mod client;
pub mod device;
mod error;
pub mod path;
pub mod perms;
pub mod store;
pub mod toolstack;
pub mod wire;

pub use backend::{Action, BackendMachine, ConnectOn, Step};
pub use client::{Client, TRANSACTION_ATTEMPTS, Txn, XsClient, XsRead, with_transaction};
pub use device::XenbusError;
pub use error::{QuotaKind, XsError};
pub use perms::{DOM0, Perm, PermEntry, Perms};
pub use store::{Conn, ConnStats, Quota, Store, StoreStats, TxId, WatchEvent};
pub use wire::{WireConn, WireServer};
