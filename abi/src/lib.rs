//! Xen public ABI for split drivers, byte for byte.
//!
//! This crate defines the wire structures and constants shared between Xen
//! frontends, backends, the hypervisor and the Linux user-space devices
//! (`/dev/xen/gntdev`, `/dev/xen/gntalloc`, `/dev/xen/evtchn`). It contains
//! no logic beyond small, panic-free helpers: every structure is a
//! `#[repr(C)]` plain-old-data type deriving [`bytemuck::Pod`], with all
//! padding spelled out as named fields so that writing a structure never
//! writes uninitialised bytes.
//!
//! Layouts are those of x86_64 (which Arm shares for every ring structure);
//! the i386 block-device layouts live in [`blkif::x86_32`]. Every size and
//! offset is checked at compile time, and `tests/xen_headers.rs` compares all
//! of them, and every constant, with the real Xen and Linux C headers.
//!
//! | Module | Follows |
//! |---|---|
//! | [`types`] | spec/README.md (conventions), `xen.h` |
//! | [`ring`] | spec/ring.md, `io/ring.h` |
//! | [`grant`] | spec/grant.md §1–4, `grant_table.h` |
//! | [`evtchn`] | spec/evtchn.md §1–4, `event_channel.h`, `xen.h` |
//! | [`netif`] | spec/netif.md, `io/netif.h` |
//! | [`blkif`] | spec/blkif.md, `io/blkif.h` |
//! | [`xenbus`] | spec/xenbus.md, `io/xenbus.h`, `io/xs_wire.h` |
//! | [`linux`] | spec/grant.md §5, spec/evtchn.md §5, Linux UAPI `xen/*.h` |
//!
//! Who writes a field is tagged as in Xen's `grant_table.h`:
//! **\[frontend\]**, **\[backend\]**, **\[guest\]**, **\[xen\]**, or
//! **\[in\]**/**\[out\]** for hypercall and ioctl arguments.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod blkif;
pub mod evtchn;
pub mod grant;
pub mod linux;
pub mod netif;
pub mod ring;
pub mod types;
pub mod xenbus;

pub use types::{DOMID_SELF, DomId, GrantHandle, GrantRef, PAGE_SHIFT, PAGE_SIZE, Port};

// Every multi-byte integer on the wire is little-endian; the structures here
// use native integers, so the crate only supports little-endian targets.
const _: () = assert!(cfg!(target_endian = "little"));
