//! Xen errno values (`xen/errno.h`) used by the event-channel and other
//! hypercalls, which return them negated (spec/evtchn.md §2).
//!
//! They coincide with the Linux values for these names.

/// Operation not permitted.
pub const EPERM: i32 = 1;
/// No such file or directory (e.g. bad vCPU).
pub const ENOENT: i32 = 2;
/// No such process (e.g. no such domain).
pub const ESRCH: i32 = 3;
/// Try again.
pub const EAGAIN: i32 = 11;
/// Out of memory.
pub const ENOMEM: i32 = 12;
/// Permission denied.
pub const EACCES: i32 = 13;
/// Bad address.
pub const EFAULT: i32 = 14;
/// Device or resource busy.
pub const EBUSY: i32 = 16;
/// Already exists (e.g. VIRQ already bound).
pub const EEXIST: i32 = 17;
/// Invalid argument.
pub const EINVAL: i32 = 22;
/// No space left (e.g. no free port).
pub const ENOSPC: i32 = 28;
/// Function not implemented (unknown command).
pub const ENOSYS: i32 = 38;
/// Operation not supported.
pub const EOPNOTSUPP: i32 = 95;
