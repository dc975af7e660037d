//! Event channels: `EVTCHNOP_*` hypercall arguments, VIRQs, the 2-level ABI
//! (`shared_info` / `vcpu_info`) and the FIFO ABI control block.
//!
//! Follows spec/evtchn.md §1–4, `event_channel.h` and `xen.h`
//! (`arch-x86/xen*.h` for the x86_64 arch parts). The Linux
//! `/dev/xen/evtchn` structures (evtchn.md §5) are in
//! [`crate::linux::evtchn_dev`].

use crate::types::{DomId, Port, XenPfn};
use bytemuck::{Pod, Zeroable};

pub mod xen_errno;

pub use crate::types::{HYPERVISOR_EVENT_CHANNEL_OP, HYPERVISOR_EVENT_CHANNEL_OP_COMPAT};

// ---------------------------------------------------------------------------
// Commands and status values
// ---------------------------------------------------------------------------

/// Bind to an unbound port of another domain ([`BindInterdomain`]).
pub const EVTCHNOP_BIND_INTERDOMAIN: u32 = 0;
/// Bind a virtual IRQ ([`BindVirq`]).
pub const EVTCHNOP_BIND_VIRQ: u32 = 1;
/// Bind a physical IRQ ([`BindPirq`]).
pub const EVTCHNOP_BIND_PIRQ: u32 = 2;
/// Close a port ([`Close`]).
pub const EVTCHNOP_CLOSE: u32 = 3;
/// Signal a port ([`Send`]).
pub const EVTCHNOP_SEND: u32 = 4;
/// Query a port ([`Status`]).
pub const EVTCHNOP_STATUS: u32 = 5;
/// Allocate an unbound port for a remote domain ([`AllocUnbound`]).
pub const EVTCHNOP_ALLOC_UNBOUND: u32 = 6;
/// Bind an intra-domain IPI port ([`BindIpi`]).
pub const EVTCHNOP_BIND_IPI: u32 = 7;
/// Change a port's notify vCPU ([`BindVcpu`]).
pub const EVTCHNOP_BIND_VCPU: u32 = 8;
/// Unmask a port and re-deliver if pending ([`Unmask`]).
pub const EVTCHNOP_UNMASK: u32 = 9;
/// Close all ports of a domain ([`Reset`]).
pub const EVTCHNOP_RESET: u32 = 10;
/// FIFO ABI: register a control block ([`InitControl`]).
pub const EVTCHNOP_INIT_CONTROL: u32 = 11;
/// FIFO ABI: add an event-array page ([`ExpandArray`]).
pub const EVTCHNOP_EXPAND_ARRAY: u32 = 12;
/// FIFO ABI: set a port's priority ([`SetPriority`]).
pub const EVTCHNOP_SET_PRIORITY: u32 = 13;

/// `EVTCHNSTAT_closed`: not in use (also port 0 / reserved ports).
pub const EVTCHNSTAT_CLOSED: u32 = 0;
/// `EVTCHNSTAT_unbound`: waiting for a specific remote domain to bind.
pub const EVTCHNSTAT_UNBOUND: u32 = 1;
/// `EVTCHNSTAT_interdomain`: connected to a remote (domain, port).
pub const EVTCHNSTAT_INTERDOMAIN: u32 = 2;
/// `EVTCHNSTAT_pirq`: bound to a physical IRQ.
pub const EVTCHNSTAT_PIRQ: u32 = 3;
/// `EVTCHNSTAT_virq`: bound to a virtual IRQ.
pub const EVTCHNSTAT_VIRQ: u32 = 4;
/// `EVTCHNSTAT_ipi`: bound to a vCPU for IPIs.
pub const EVTCHNSTAT_IPI: u32 = 5;

/// `BIND_PIRQ__WILL_SHARE`: [`BindPirq::flags`] bit.
pub const BIND_PIRQ_WILL_SHARE: u32 = 1;

// ---------------------------------------------------------------------------
// VIRQs (xen.h)
// ---------------------------------------------------------------------------

/// Per-vCPU: timebase update / timeout.
pub const VIRQ_TIMER: u32 = 0;
/// Per-vCPU: dump debug info.
pub const VIRQ_DEBUG: u32 = 1;
/// Global (dom0): emergency console input.
pub const VIRQ_CONSOLE: u32 = 2;
/// Global (dom0): exceptional event for some domain.
pub const VIRQ_DOM_EXC: u32 = 3;
/// Global (dom0): trace buffer has records.
pub const VIRQ_TBUF: u32 = 4;
/// Global (dom0): a domain paused for debugging.
pub const VIRQ_DEBUGGER: u32 = 6;
/// Per-vCPU: XenOprofile sample available.
pub const VIRQ_XENOPROF: u32 = 7;
/// Global (dom0): console ring input.
pub const VIRQ_CON_RING: u32 = 8;
/// Global (dom0): physical CPU state changed.
pub const VIRQ_PCPU_STATE: u32 = 9;
/// Global (dom0): memory event.
pub const VIRQ_MEM_EVENT: u32 = 10;
/// Global: Argo message notification.
pub const VIRQ_ARGO: u32 = 11;
/// Global (dom0): hypervisor low on heap memory.
pub const VIRQ_ENOMEM: u32 = 12;
/// Per-vCPU: PMU interrupt.
pub const VIRQ_XENPMU: u32 = 13;
/// Architecture-specific VIRQ 0.
pub const VIRQ_ARCH_0: u32 = 16;
/// Architecture-specific VIRQ 1.
pub const VIRQ_ARCH_1: u32 = 17;
/// Architecture-specific VIRQ 2.
pub const VIRQ_ARCH_2: u32 = 18;
/// Architecture-specific VIRQ 3.
pub const VIRQ_ARCH_3: u32 = 19;
/// Architecture-specific VIRQ 4.
pub const VIRQ_ARCH_4: u32 = 20;
/// Architecture-specific VIRQ 5.
pub const VIRQ_ARCH_5: u32 = 21;
/// Architecture-specific VIRQ 6.
pub const VIRQ_ARCH_6: u32 = 22;
/// Architecture-specific VIRQ 7.
pub const VIRQ_ARCH_7: u32 = 23;
/// Number of VIRQs.
pub const NR_VIRQS: u32 = 24;

// ---------------------------------------------------------------------------
// EVTCHNOP_* argument structures (identical on x86_64 and i386)
// ---------------------------------------------------------------------------

/// `evtchn_alloc_unbound` (`EVTCHNOP_alloc_unbound`), 8 bytes. What a
/// frontend does; the port is then published in xenstore.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AllocUnbound {
    /// **\[in\]** Domain to allocate in (`DOMID_SELF` unless privileged).
    pub dom: DomId,
    /// **\[in\]** The only domain allowed to bind.
    pub remote_dom: DomId,
    /// **\[out\]** New port.
    pub port: Port,
}

/// `evtchn_bind_interdomain` (`EVTCHNOP_bind_interdomain`), 12 bytes. What a
/// backend does; the new local port is marked pending once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BindInterdomain {
    /// **\[in\]** Remote domain.
    pub remote_dom: DomId,
    /// Padding.
    pub _pad0: [u8; 2],
    /// **\[in\]** Remote unbound port allocated for the caller.
    pub remote_port: Port,
    /// **\[out\]** New local port.
    pub local_port: Port,
}

/// `evtchn_bind_virq` (`EVTCHNOP_bind_virq`), 12 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BindVirq {
    /// **\[in\]** `VIRQ_*`.
    pub virq: u32,
    /// **\[in\]** vCPU (0 for global VIRQs).
    pub vcpu: u32,
    /// **\[out\]** New port.
    pub port: Port,
}

/// `evtchn_bind_pirq` (`EVTCHNOP_bind_pirq`, privileged), 12 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BindPirq {
    /// **\[in\]** Physical IRQ.
    pub pirq: u32,
    /// **\[in\]** `BIND_PIRQ__*`.
    pub flags: u32,
    /// **\[out\]** New port.
    pub port: Port,
}

/// `evtchn_bind_ipi` (`EVTCHNOP_bind_ipi`), 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BindIpi {
    /// **\[in\]** vCPU to notify.
    pub vcpu: u32,
    /// **\[out\]** New port.
    pub port: Port,
}

/// `evtchn_close` (`EVTCHNOP_close`), 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Close {
    /// **\[in\]** Local port.
    pub port: Port,
}

/// `evtchn_send` (`EVTCHNOP_send`), 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Send {
    /// **\[in\]** Local port.
    pub port: Port,
}

/// `evtchn_unmask` (`EVTCHNOP_unmask`), 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Unmask {
    /// **\[in\]** Local port.
    pub port: Port,
}

/// `evtchn_status` (`EVTCHNOP_status`), 24 bytes.
///
/// The C union `u` is kept as two raw words; read it with the accessor that
/// matches `status`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Status {
    /// **\[in\]** Domain (`DOMID_SELF` unless privileged).
    pub dom: DomId,
    /// Padding.
    pub _pad0: [u8; 2],
    /// **\[in\]** Port.
    pub port: Port,
    /// **\[out\]** `EVTCHNSTAT_*`.
    pub status: u32,
    /// **\[out\]** Notify vCPU.
    pub vcpu: u32,
    /// **\[out\]** Raw union: `unbound.dom` / `interdomain.dom` (low 16 bits
    /// of word 0), `interdomain.port` (word 1), `pirq` / `virq` (word 0).
    pub u: [u32; 2],
}

impl Status {
    /// `u.unbound.dom` (valid for `EVTCHNSTAT_unbound`).
    #[inline]
    pub const fn unbound_dom(&self) -> DomId {
        DomId(self.u[0] as u16)
    }
    /// `(u.interdomain.dom, u.interdomain.port)` (valid for
    /// `EVTCHNSTAT_interdomain`).
    #[inline]
    pub const fn interdomain(&self) -> (DomId, Port) {
        (DomId(self.u[0] as u16), Port(self.u[1]))
    }
    /// `u.pirq` (valid for `EVTCHNSTAT_pirq`).
    #[inline]
    pub const fn pirq(&self) -> u32 {
        self.u[0]
    }
    /// `u.virq` (valid for `EVTCHNSTAT_virq`).
    #[inline]
    pub const fn virq(&self) -> u32 {
        self.u[0]
    }
}

/// `evtchn_bind_vcpu` (`EVTCHNOP_bind_vcpu`), 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BindVcpu {
    /// **\[in\]** Port.
    pub port: Port,
    /// **\[in\]** New notify vCPU.
    pub vcpu: u32,
}

/// `evtchn_reset` (`EVTCHNOP_reset`), 2 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Reset {
    /// **\[in\]** Domain (`DOMID_SELF` unless privileged).
    pub dom: DomId,
}

/// `evtchn_init_control` (`EVTCHNOP_init_control`, FIFO), 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct InitControl {
    /// **\[in\]** Frame holding the control block.
    pub control_gfn: u64,
    /// **\[in\]** 8-byte aligned offset of the block in that frame.
    pub offset: u32,
    /// **\[in\]** vCPU.
    pub vcpu: u32,
    /// **\[out\]** `EVTCHN_FIFO_LINK_BITS`.
    pub link_bits: u8,
    /// Padding (C `_pad[7]`).
    pub _pad: [u8; 7],
}

/// `evtchn_expand_array` (`EVTCHNOP_expand_array`, FIFO), 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ExpandArray {
    /// **\[in\]** Frame of the next event-array page.
    pub array_gfn: u64,
}

/// `evtchn_set_priority` (`EVTCHNOP_set_priority`, FIFO), 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SetPriority {
    /// **\[in\]** Port.
    pub port: Port,
    /// **\[in\]** 0 (highest) ..= 15 (lowest).
    pub priority: u32,
}

/// `evtchn_op`: argument of the compat hypercall
/// [`HYPERVISOR_EVENT_CHANNEL_OP_COMPAT`], 28 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EvtchnOp {
    /// **\[in\]** `EVTCHNOP_*` (only 0..=9 fit this wrapper).
    pub cmd: u32,
    /// **\[in/out\]** Raw union of the argument structures (largest:
    /// [`Status`], 24 bytes); fill with `bytemuck::bytes_of`.
    pub u: [u32; 6],
}

// ---------------------------------------------------------------------------
// 2-level ABI: shared_info / vcpu_info (x86_64)
// ---------------------------------------------------------------------------

/// `XEN_LEGACY_MAX_VCPUS`: `vcpu_info` slots in [`SharedInfo`] (x86).
pub const XEN_LEGACY_MAX_VCPUS: usize = 32;
/// Bits per `xen_ulong_t` word of the 2-level bitmaps (x86_64).
pub const EVTCHN_2L_BITS_PER_WORD: u32 = 64;
/// `EVTCHN_2L_NR_CHANNELS`: ports of the 2-level ABI (x86_64).
pub const EVTCHN_2L_NR_CHANNELS: u32 = EVTCHN_2L_BITS_PER_WORD * EVTCHN_2L_BITS_PER_WORD;
/// `EVTCHN_2L_NR_CHANNELS` for 32-bit guests (i386).
pub const EVTCHN_2L_NR_CHANNELS_X86_32: u32 = 32 * 32;
/// `XEN_PVCLOCK_TSC_STABLE_BIT`: [`VcpuTimeInfo::flags`] bit.
pub const XEN_PVCLOCK_TSC_STABLE_BIT: u8 = 1 << 0;
/// `XEN_PVCLOCK_GUEST_STOPPED`: [`VcpuTimeInfo::flags`] bit.
pub const XEN_PVCLOCK_GUEST_STOPPED: u8 = 1 << 1;

/// 2-level ABI: (word index, bit mask) of `port` in `evtchn_pending` /
/// `evtchn_mask`; the word index is also the selector bit.
#[inline]
pub const fn evtchn_2l_word_bit(port: Port) -> (usize, u64) {
    (
        (port.0 / EVTCHN_2L_BITS_PER_WORD) as usize,
        1u64 << (port.0 % EVTCHN_2L_BITS_PER_WORD),
    )
}

/// `vcpu_time_info`, 32 bytes. **\[xen\]** writes it under a version
/// seqlock (odd `version` = update in progress).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct VcpuTimeInfo {
    /// Seqlock version.
    pub version: u32,
    /// Padding (C `pad0`).
    pub pad0: u32,
    /// TSC at the last update.
    pub tsc_timestamp: u64,
    /// Nanoseconds since boot at the last update.
    pub system_time: u64,
    /// TSC-to-ns multiplier (32.32 fixed point).
    pub tsc_to_system_mul: u32,
    /// TSC shift.
    pub tsc_shift: i8,
    /// `XEN_PVCLOCK_*`.
    pub flags: u8,
    /// Padding (C `pad1`).
    pub pad1: [u8; 2],
}

/// `arch_vcpu_info` (x86_64), 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ArchVcpuInfo {
    /// **\[xen\]** Fault address (PV).
    pub cr2: u64,
    /// Padding (C `pad`).
    pub pad: u64,
}

/// `vcpu_info`, 64 bytes: per-vCPU upcall state (2-level ABI).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct VcpuInfo {
    /// **\[xen\]** set / **\[guest\]** cleared: an upcall is pending.
    pub evtchn_upcall_pending: u8,
    /// **\[guest\]** PV "interrupts disabled" flag.
    pub evtchn_upcall_mask: u8,
    /// Padding.
    pub _pad0: [u8; 6],
    /// **\[xen\]** set / **\[guest\]** cleared: one bit per non-empty
    /// `evtchn_pending` word.
    pub evtchn_pending_sel: u64,
    /// Architecture part.
    pub arch: ArchVcpuInfo,
    /// **\[xen\]** Time info.
    pub time: VcpuTimeInfo,
}

/// `arch_shared_info` (x86_64), 48 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ArchSharedInfo {
    /// **\[guest\]** Highest PFN (PV).
    pub max_pfn: u64,
    /// **\[guest\]** Frame list of the p2m frame list (PV).
    pub pfn_to_mfn_frame_list_list: XenPfn,
    /// **\[xen\]** NMI reason bits.
    pub nmi_reason: u64,
    /// **\[guest\]** cr3 of the p2m address space (PV).
    pub p2m_cr3: u64,
    /// **\[guest\]** Virtual address of the p2m list (PV).
    pub p2m_vaddr: u64,
    /// **\[guest\]** Generation count of the p2m mapping (PV).
    pub p2m_generation: u64,
}

/// `shared_info` (x86_64), 3136 bytes at the start of the shared-info page.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct SharedInfo {
    /// Legacy per-vCPU areas.
    pub vcpu_info: [VcpuInfo; XEN_LEGACY_MAX_VCPUS],
    /// **\[xen\]** set / **\[guest\]** cleared: pending bit per port.
    pub evtchn_pending: [u64; 64],
    /// **\[guest\]**: mask bit per port (Xen only reads it).
    pub evtchn_mask: [u64; 64],
    /// **\[xen\]** Wallclock seqlock version.
    pub wc_version: u32,
    /// **\[xen\]** Wallclock seconds (low 32 bits).
    pub wc_sec: u32,
    /// **\[xen\]** Wallclock nanoseconds.
    pub wc_nsec: u32,
    /// **\[xen\]** Wallclock seconds (high 32 bits).
    pub wc_sec_hi: u32,
    /// Architecture part.
    pub arch: ArchSharedInfo,
}

impl Default for SharedInfo {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

// ---------------------------------------------------------------------------
// FIFO ABI
// ---------------------------------------------------------------------------

/// `event_word_t`: one FIFO event word per port.
pub type EventWord = u32;
/// Highest priority.
pub const EVTCHN_FIFO_PRIORITY_MAX: u32 = 0;
/// Default priority.
pub const EVTCHN_FIFO_PRIORITY_DEFAULT: u32 = 7;
/// Lowest priority.
pub const EVTCHN_FIFO_PRIORITY_MIN: u32 = 15;
/// Number of priority queues.
pub const EVTCHN_FIFO_MAX_QUEUES: usize = EVTCHN_FIFO_PRIORITY_MIN as usize + 1;
/// Bit number: event pending.
pub const EVTCHN_FIFO_PENDING: u32 = 31;
/// Bit number: event masked.
pub const EVTCHN_FIFO_MASKED: u32 = 30;
/// Bit number: event on a queue.
pub const EVTCHN_FIFO_LINKED: u32 = 29;
/// Bit number: Xen is updating LINK; do not clear MASKED meanwhile.
pub const EVTCHN_FIFO_BUSY: u32 = 28;
/// Width of the LINK field (bits 0..17).
pub const EVTCHN_FIFO_LINK_BITS: u32 = 17;
/// Mask of the LINK field.
pub const EVTCHN_FIFO_LINK_MASK: u32 = (1 << EVTCHN_FIFO_LINK_BITS) - 1;
/// Ports of the FIFO ABI.
pub const EVTCHN_FIFO_NR_CHANNELS: u32 = 1 << EVTCHN_FIFO_LINK_BITS;
/// Event words per 4 KiB event-array page.
pub const EVTCHN_FIFO_EVENT_WORDS_PER_PAGE: usize = 1024;
/// Maximum event-array pages (Xen limit; not in the headers).
pub const EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES: usize = 128;

/// `evtchn_fifo_control_block`, 72 bytes (per vCPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FifoControlBlock {
    /// **\[xen\]** set / **\[guest\]** cleared: bitmap of non-empty queues.
    pub ready: u32,
    /// Reserved.
    pub _rsvd: u32,
    /// **\[xen, guest\]** Head port of each priority queue (0 = empty).
    pub head: [u32; EVTCHN_FIFO_MAX_QUEUES],
}

// ---------------------------------------------------------------------------
// Compile-time layout checks (spec/evtchn.md §2.1, §3.1, §4)
// ---------------------------------------------------------------------------

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<AllocUnbound>() == 8);
    assert!(offset_of!(AllocUnbound, remote_dom) == 2);
    assert!(offset_of!(AllocUnbound, port) == 4);
    assert!(size_of::<BindInterdomain>() == 12);
    assert!(offset_of!(BindInterdomain, remote_port) == 4);
    assert!(offset_of!(BindInterdomain, local_port) == 8);
    assert!(size_of::<BindVirq>() == 12);
    assert!(offset_of!(BindVirq, vcpu) == 4);
    assert!(offset_of!(BindVirq, port) == 8);
    assert!(size_of::<BindPirq>() == 12);
    assert!(offset_of!(BindPirq, flags) == 4);
    assert!(offset_of!(BindPirq, port) == 8);
    assert!(size_of::<BindIpi>() == 8);
    assert!(offset_of!(BindIpi, port) == 4);
    assert!(size_of::<Close>() == 4);
    assert!(size_of::<Send>() == 4);
    assert!(size_of::<Unmask>() == 4);
    assert!(size_of::<Status>() == 24);
    assert!(offset_of!(Status, port) == 4);
    assert!(offset_of!(Status, status) == 8);
    assert!(offset_of!(Status, vcpu) == 12);
    assert!(offset_of!(Status, u) == 16);
    assert!(size_of::<BindVcpu>() == 8);
    assert!(offset_of!(BindVcpu, vcpu) == 4);
    assert!(size_of::<Reset>() == 2);
    assert!(size_of::<InitControl>() == 24);
    assert!(offset_of!(InitControl, offset) == 8);
    assert!(offset_of!(InitControl, vcpu) == 12);
    assert!(offset_of!(InitControl, link_bits) == 16);
    assert!(offset_of!(InitControl, _pad) == 17);
    assert!(size_of::<ExpandArray>() == 8);
    assert!(size_of::<SetPriority>() == 8);
    assert!(offset_of!(SetPriority, priority) == 4);
    assert!(size_of::<EvtchnOp>() == 28);
    assert!(offset_of!(EvtchnOp, u) == 4);

    assert!(size_of::<VcpuTimeInfo>() == 32);
    assert!(offset_of!(VcpuTimeInfo, tsc_timestamp) == 8);
    assert!(offset_of!(VcpuTimeInfo, system_time) == 16);
    assert!(offset_of!(VcpuTimeInfo, tsc_to_system_mul) == 24);
    assert!(offset_of!(VcpuTimeInfo, tsc_shift) == 28);
    assert!(offset_of!(VcpuTimeInfo, flags) == 29);
    assert!(offset_of!(VcpuTimeInfo, pad1) == 30);
    assert!(size_of::<ArchVcpuInfo>() == 16);
    assert!(size_of::<VcpuInfo>() == 64);
    assert!(offset_of!(VcpuInfo, evtchn_upcall_pending) == 0);
    assert!(offset_of!(VcpuInfo, evtchn_upcall_mask) == 1);
    assert!(offset_of!(VcpuInfo, evtchn_pending_sel) == 8);
    assert!(offset_of!(VcpuInfo, arch) == 16);
    assert!(offset_of!(VcpuInfo, time) == 32);
    assert!(size_of::<ArchSharedInfo>() == 48);
    assert!(size_of::<SharedInfo>() == 3136);
    assert!(offset_of!(SharedInfo, evtchn_pending) == 2048);
    assert!(offset_of!(SharedInfo, evtchn_mask) == 2560);
    assert!(offset_of!(SharedInfo, wc_version) == 3072);
    assert!(offset_of!(SharedInfo, wc_sec) == 3076);
    assert!(offset_of!(SharedInfo, wc_nsec) == 3080);
    assert!(offset_of!(SharedInfo, wc_sec_hi) == 3084);
    assert!(offset_of!(SharedInfo, arch) == 3088);
    assert!(EVTCHN_2L_NR_CHANNELS == 4096);
    assert!(EVTCHN_2L_NR_CHANNELS_X86_32 == 1024);
    assert!(EVTCHN_2L_NR_CHANNELS as usize == core::mem::size_of::<[u64; 64]>() * 8);

    assert!(size_of::<FifoControlBlock>() == 72);
    assert!(offset_of!(FifoControlBlock, head) == 8);
    assert!(EVTCHN_FIFO_NR_CHANNELS == 131072);
    assert!(EVTCHN_FIFO_EVENT_WORDS_PER_PAGE * size_of::<EventWord>() == crate::types::PAGE_SIZE);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_accessors() {
        let s = Status {
            status: EVTCHNSTAT_INTERDOMAIN,
            u: [0x0000_0005, 42],
            ..Default::default()
        };
        assert_eq!(s.interdomain(), (DomId(5), Port(42)));
        assert_eq!(s.unbound_dom(), DomId(5));
        assert_eq!(s.virq(), 5);
        assert_eq!(s.pirq(), 5);
    }

    #[test]
    fn two_level_bits() {
        assert_eq!(evtchn_2l_word_bit(Port(0)), (0, 1));
        assert_eq!(evtchn_2l_word_bit(Port(65)), (1, 2));
        assert_eq!(evtchn_2l_word_bit(Port(4095)), (63, 1 << 63));
    }
}
