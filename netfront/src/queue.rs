//! One queue: a TX ring and an RX ring with their event channel(s), the
//! shadow of every TX request, the RX buffers posted, and the checks on
//! every response (NF1, NF2, NF3).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pvio_abi::netif::{
    ExtraGso, ExtraInfo, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED,
    NETRXF_EXTRA_INFO, NETRXF_MORE_DATA, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED,
    NETTXF_EXTRA_INFO, NETTXF_MORE_DATA, RxRequest, RxResponse, TxRequest, TxResponse,
    XEN_NETIF_EXTRA_TYPE_GSO, XEN_NETIF_EXTRA_TYPE_MAX, XEN_NETIF_GSO_TYPE_TCPV4,
    XEN_NETIF_GSO_TYPE_TCPV6, XEN_NETIF_NR_SLOTS_MIN,
};
use pvio_abi::{DomId, GrantRef, PAGE_SIZE, Port};
use pvio_hv::{Domain, PortWaiter, Window};
use pvio_ring::FrontRing;
use pvio_shmem::{MemfdMem, SharedMem, Zeroable};

use crate::pool::{Buf, Pool};
use crate::{Gso, GsoKind, NetError, Packet, Stats};

type TxRing = FrontRing<Window<Arc<MemfdMem>>, TxRequest, TxResponse>;
type RxRing = FrontRing<Window<Arc<MemfdMem>>, RxRequest, RxResponse>;

/// Most data slots of one packet, either way (`XEN_NETIF_NR_SLOTS_MIN`).
pub(crate) const MAX_SLOTS: usize = XEN_NETIF_NR_SLOTS_MIN as usize;
/// Most extra-info slots the frontend accepts after one RX packet.
const MAX_RX_EXTRAS: usize = 4;

/// What a queue may do, as negotiated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mode {
    /// RX: the frontend advertised `feature-sg` (multi-slot RX is legal).
    pub rx_sg: bool,
    /// RX: the frontend advertised GSO (a GSO extra is legal).
    pub rx_gso: bool,
    /// Grants of data pages last the connection (trusted backend only).
    pub persistent: bool,
    /// Notify the backend when RX requests are posted.
    pub rx_notify: bool,
    /// RX requests are posted once this many slots are free.
    pub refill_batch: u32,
}

/// A TX request on the ring: the id it went with and its page.
#[derive(Debug)]
struct TxShadow {
    id: u16,
    buf: Buf,
}

/// What the next RX response is, within a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Extra { more_data: bool },
    Data,
}

/// An RX packet being assembled from its slots (the data stays in the
/// slots' pages, held in `Queue::rx_held`, until the last slot: then it is
/// copied once into a buffer of the exact size).
#[derive(Debug)]
struct Partial {
    len: usize,
    flags: u16,
    gso: Option<Gso>,
    data_slots: usize,
    extras: usize,
    dropped: bool,
    expect: Expect,
}

pub(crate) struct Queue {
    dom: Domain,
    backend: DomId,
    pub mode: Mode,
    tx: TxRing,
    rx: RxRing,
    /// Ring pages (TX, RX) and their grants.
    ring_frames: [u32; 2],
    pub ring_grefs: [Option<GrantRef>; 2],
    pub tx_port: Port,
    pub rx_port: Port,
    waiters: Vec<PortWaiter>,
    tx_shadow: Vec<Option<TxShadow>>,
    /// Generation of each TX id slot, in the id's top byte, so a response
    /// for an earlier use of a slot is caught.
    tx_gen: Vec<u8>,
    tx_free: Vec<u16>,
    /// Extra-info slots sent whose `NETIF_RSP_NULL` has not come yet.
    tx_extras: u64,
    /// TX pages with a persistent read-only grant, ready for reuse.
    tx_spare: Vec<Buf>,
    /// RX buffer posted at each ring slot (ring index modulo size).
    rx_bufs: Vec<Option<Buf>>,
    /// RX pages with a persistent writable grant, ready to be posted.
    rx_spare: Vec<Buf>,
    partial: Option<Partial>,
    /// Data slots of the packet being assembled: page, offset of the data
    /// in the domain's memory, length, and whether the page comes back
    /// (false: quarantined, NF4).
    rx_held: Vec<(Buf, usize, usize, bool)>,
    tx_pushed: bool,
    rsp_tx: Vec<TxResponse>,
    rsp_rx: Vec<RxResponse>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("tx_outstanding", &self.tx_outstanding())
            .field("tx_port", &self.tx_port)
            .field("rx_port", &self.rx_port)
            .finish()
    }
}

fn tx_extra(e: ExtraInfo) -> TxRequest {
    let mut r = TxRequest::zeroed();
    pvio_shmem::bytes_of_mut(&mut r)[..8].copy_from_slice(pvio_shmem::bytes_of(&e));
    r
}

fn rx_extra(r: &RxResponse) -> ExtraInfo {
    let mut e = ExtraInfo::zeroed();
    pvio_shmem::bytes_of_mut(&mut e).copy_from_slice(pvio_shmem::bytes_of(r));
    e
}

impl Queue {
    /// Allocates, initialises and grants the two ring pages, and allocates
    /// the event channel(s). On failure, what was set up is handed to
    /// `pool` to release.
    pub(crate) fn setup(
        dom: &Domain,
        backend: DomId,
        split: bool,
        mode: Mode,
        pool: &mut Pool,
    ) -> Result<Queue, NetError> {
        let frames = dom.alloc_frames(2).ok_or(NetError::NoMemory)?;
        let (ftx, frx) = (frames[0], frames[1]);
        let rings = dom
            .frame(ftx)
            .zip(dom.frame(frx))
            .ok_or(NetError::NoMemory)
            .and_then(|(wt, wr)| {
                let tx = TxRing::init(wt).map_err(|e| NetError::Grant(format!("ring: {e}")))?;
                let rx = RxRing::init(wr).map_err(|e| NetError::Grant(format!("ring: {e}")))?;
                Ok((tx, rx))
            });
        let (tx, rx) = match rings {
            Ok(r) => r,
            Err(e) => {
                dom.free_frames(&frames);
                return Err(e);
            }
        };
        let ntx = tx.nr_ents() as usize;
        let nrx = rx.nr_ents() as usize;
        let mut q = Queue {
            dom: dom.clone(),
            backend,
            mode,
            tx,
            rx,
            ring_frames: [ftx, frx],
            ring_grefs: [None, None],
            tx_port: Port(0),
            rx_port: Port(0),
            waiters: Vec::new(),
            tx_shadow: (0..ntx).map(|_| None).collect(),
            tx_gen: vec![0; ntx],
            tx_free: (0..ntx as u16).rev().collect(),
            tx_extras: 0,
            tx_spare: Vec::new(),
            rx_bufs: vec![None; nrx],
            rx_spare: Vec::new(),
            partial: None,
            rx_held: Vec::new(),
            tx_pushed: false,
            rsp_tx: Vec::new(),
            rsp_rx: Vec::new(),
        };
        if let Err(e) = q.setup_channels(split) {
            q.teardown(pool);
            return Err(e);
        }
        Ok(q)
    }

    fn setup_channels(&mut self, split: bool) -> Result<(), NetError> {
        let evt = |e: pvio_evtchn::EvtchnError| NetError::Grant(format!("event channel: {e}"));
        for i in 0..2 {
            self.ring_grefs[i] = Some(
                self.dom
                    .grant_access(self.backend, self.ring_frames[i], false)
                    .map_err(|e| NetError::Grant(e.to_string()))?,
            );
        }
        self.tx_port = self.dom.events().alloc_unbound(self.backend).map_err(evt)?;
        self.waiters
            .push(self.dom.port_waiter(self.tx_port).map_err(evt)?);
        self.rx_port = if split {
            let p = self.dom.events().alloc_unbound(self.backend).map_err(evt)?;
            self.waiters.push(self.dom.port_waiter(p).map_err(evt)?);
            p
        } else {
            self.tx_port
        };
        Ok(())
    }

    pub(crate) fn tx_outstanding(&self) -> usize {
        self.tx_shadow.len() - self.tx_free.len()
    }

    /// Room for a largest packet (all data slots plus one extra).
    pub(crate) fn tx_has_room_for_any(&self) -> bool {
        self.tx.free_requests() as usize > MAX_SLOTS && self.tx_free.len() >= MAX_SLOTS
    }

    /// A page for TX data, granted read-only.
    fn tx_buf(&mut self, pool: &mut Pool) -> Result<Option<Buf>, NetError> {
        if self.mode.persistent
            && let Some(b) = self.tx_spare.pop()
        {
            return Ok(Some(b));
        }
        let Some(frame) = pool.take() else {
            return Ok(None);
        };
        match pool.grant(self.backend, frame, true) {
            Ok(g) => Ok(Some(Buf {
                frame,
                gref: Some(g),
            })),
            Err(e) => {
                pool.give(frame);
                Err(e)
            }
        }
    }

    /// A TX page goes back after its response.
    fn tx_done(&mut self, buf: Buf, pool: &mut Pool) {
        if self.mode.persistent {
            self.tx_spare.push(buf);
        } else {
            pool.release(buf);
        }
    }

    /// Puts one packet on the TX ring (not yet published). `Ok(false)`: no
    /// room now (ring slots, ids or pages): try again after completions.
    pub(crate) fn push_packet(
        &mut self,
        data: &[u8],
        flags: u16,
        gso: Option<ExtraGso>,
        pool: &mut Pool,
        stats: &mut Stats,
    ) -> Result<bool, NetError> {
        let nslots = data.len().div_ceil(PAGE_SIZE).max(1);
        let need = nslots + usize::from(gso.is_some());
        if (self.tx.free_requests() as usize) < need || self.tx_free.len() < nslots {
            return Ok(false);
        }
        if nslots > MAX_SLOTS {
            return Err(NetError::TooLarge(data.len()));
        }
        // No allocation per packet: the pages on the stack, the chunks
        // computed where needed.
        let mut bufs = [Buf {
            frame: 0,
            gref: None,
        }; MAX_SLOTS];
        let chunk = |i: usize| {
            &data[(i * PAGE_SIZE).min(data.len())..((i + 1) * PAGE_SIZE).min(data.len())]
        };
        for i in 0..nslots {
            match self.tx_buf(pool) {
                Ok(Some(b)) => bufs[i] = b,
                other => {
                    for b in &bufs[..i] {
                        self.tx_done(*b, pool);
                    }
                    return other.map(|_| false);
                }
            }
        }
        let bufs = &bufs[..nslots];
        let mem = self.dom.memory();
        for (i, buf) in bufs.iter().enumerate() {
            let chunk = chunk(i);
            let at = buf.frame as usize * PAGE_SIZE;
            let w = mem.write_bytes(at, chunk).and_then(|()| {
                if !self.mode.persistent && chunk.len() < PAGE_SIZE {
                    // The backend sees the whole page: nothing past the
                    // packet but zeros (NF5).
                    mem.fill(at + chunk.len(), PAGE_SIZE - chunk.len(), 0)
                } else {
                    Ok(())
                }
            });
            if let Err(e) = w {
                for b in bufs {
                    self.tx_done(*b, pool);
                }
                return Err(NetError::Grant(e.to_string()));
            }
        }
        let last = nslots - 1;
        for (i, &buf) in bufs.iter().enumerate() {
            let chunk = chunk(i);
            let Some(slot) = self.tx_free.pop() else {
                // Checked above; unreachable.
                self.tx_done(buf, pool);
                continue;
            };
            let s = usize::from(slot);
            self.tx_gen[s] = self.tx_gen[s].wrapping_add(1);
            let id = (u16::from(self.tx_gen[s]) << 8) | slot;
            let mut f = if i < last { NETTXF_MORE_DATA } else { 0 };
            let size = if i == 0 {
                f |= flags & (NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED);
                if gso.is_some() {
                    f |= NETTXF_EXTRA_INFO;
                }
                data.len() as u16
            } else {
                chunk.len() as u16
            };
            let req = TxRequest {
                gref: buf.gref.unwrap_or(GrantRef(0)),
                offset: 0,
                flags: f,
                id,
                size,
            };
            self.tx
                .push_request(&req)
                .map_err(|e| NetError::Broken(e.to_string()))?;
            self.tx_shadow[s] = Some(TxShadow { id, buf });
            if i == 0
                && let Some(g) = gso
            {
                self.tx
                    .push_request(&tx_extra(ExtraInfo::gso(g)))
                    .map_err(|e| NetError::Broken(e.to_string()))?;
                self.tx_extras += 1;
            }
        }
        self.tx_pushed = true;
        stats.tx_packets += 1;
        stats.tx_bytes += data.len() as u64;
        stats.tx_slots += nslots as u64;
        Ok(true)
    }

    /// Publishes the TX requests pushed and notifies the backend if needed.
    pub(crate) fn publish_tx(&mut self, stats: &mut Stats) -> Result<(), NetError> {
        if !self.tx_pushed {
            return Ok(());
        }
        self.tx_pushed = false;
        let n = self
            .tx
            .publish_and_check_notify()
            .map_err(|e| NetError::Broken(format!("tx ring: {e}")))?;
        if n.is_needed() {
            stats.notifies += 1;
            let _ = self.dom.events().send(self.tx_port);
        }
        Ok(())
    }

    /// Consumes every TX response: each frees the slot of an outstanding
    /// request whose id it echoes exactly (NF1); a `NETIF_RSP_NULL` answers
    /// an extra-info slot. Returns how many responses were consumed.
    pub(crate) fn reap_tx(&mut self, pool: &mut Pool, stats: &mut Stats) -> Result<usize, String> {
        self.rsp_tx.clear();
        let rsps = &mut self.rsp_tx;
        self.tx
            .drain_responses(u32::MAX, |r| rsps.push(r))
            .map_err(|e| format!("tx ring: {e}"))?;
        let n = self.rsp_tx.len();
        let rsps = std::mem::take(&mut self.rsp_tx);
        let mut result = Ok(n);
        for r in &rsps {
            if r.status == NETIF_RSP_NULL {
                if self.tx_extras == 0 {
                    result =
                        Err("tx response NETIF_RSP_NULL with no extra slot outstanding".into());
                    break;
                }
                self.tx_extras -= 1;
                continue;
            }
            let slot = usize::from(r.id & 0xff);
            let ok = matches!(self.tx_shadow.get(slot), Some(Some(s)) if s.id == r.id);
            if !ok {
                result = Err(format!(
                    "tx response id {:#06x} is not an outstanding request",
                    r.id
                ));
                break;
            }
            let Some(s) = self.tx_shadow[slot].take() else {
                continue;
            };
            self.tx_free.push(slot as u16);
            self.tx_done(s.buf, pool);
            if r.status != NETIF_RSP_OKAY {
                stats.tx_errors += 1;
            }
        }
        self.rsp_tx = rsps;
        result
    }

    /// A page for an RX request, granted writable.
    fn rx_buf(&mut self, pool: &mut Pool) -> Result<Option<Buf>, NetError> {
        if let Some(b) = self.rx_spare.pop() {
            return Ok(Some(b));
        }
        let Some(frame) = pool.take() else {
            return Ok(None);
        };
        match pool.grant(self.backend, frame, false) {
            Ok(g) => Ok(Some(Buf {
                frame,
                gref: Some(g),
            })),
            Err(e) => {
                pool.give(frame);
                Err(e)
            }
        }
    }

    /// An RX buffer is done with (its data copied out, or it held an extra).
    fn rx_done(&mut self, buf: Buf, pool: &mut Pool) {
        if self.mode.persistent {
            self.rx_spare.push(buf);
        } else {
            pool.release(buf);
        }
    }

    /// Posts RX requests once at least the refill batch of slots is free
    /// (or `force`: any free slot). Returns how many were posted.
    pub(crate) fn refill(
        &mut self,
        pool: &mut Pool,
        force: bool,
        stats: &mut Stats,
    ) -> Result<usize, NetError> {
        let free = self.rx.free_requests();
        if free == 0 || (!force && free < self.mode.refill_batch) {
            return Ok(0);
        }
        let mask = self.rx_bufs.len() - 1;
        let mut posted = 0;
        for _ in 0..free {
            let Some(buf) = self.rx_buf(pool)? else {
                break;
            };
            let (idx, _) = self.rx.indices();
            let slot = idx as usize & mask;
            if let Some(old) = self.rx_bufs[slot].replace(buf) {
                // Cannot happen (every consumed slot is released); never
                // leak a page if it does.
                self.rx_done(old, pool);
            }
            let req = RxRequest {
                id: slot as u16,
                pad: 0,
                gref: buf.gref.unwrap_or(GrantRef(0)),
            };
            self.rx
                .push_request(&req)
                .map_err(|e| NetError::Broken(format!("rx ring: {e}")))?;
            posted += 1;
        }
        if posted == 0 {
            return Ok(0);
        }
        stats.rx_posted += posted as u64;
        if self.mode.rx_notify {
            let n = self
                .rx
                .publish_and_check_notify()
                .map_err(|e| NetError::Broken(format!("rx ring: {e}")))?;
            if n.is_needed() {
                stats.notifies += 1;
                let _ = self.dom.events().send(self.rx_port);
            }
        } else {
            self.rx
                .publish()
                .map_err(|e| NetError::Broken(format!("rx ring: {e}")))?;
        }
        Ok(posted)
    }

    /// Consumes every RX response, assembling packets into `out`. Each
    /// response is taken as a copy; the buffer is the one posted at the
    /// same ring index (netif.md §3). A data slot whose `offset + status`
    /// passes the page, an unknown extra, or a multi-slot or GSO packet the
    /// frontend did not advertise breaks the device (NF2). Returns how many
    /// responses were consumed.
    pub(crate) fn reap_rx(
        &mut self,
        pool: &mut Pool,
        out: &mut std::collections::VecDeque<Packet>,
        stats: &mut Stats,
    ) -> Result<usize, String> {
        self.rsp_rx.clear();
        let (_, start) = self.rx.indices();
        let rsps = &mut self.rsp_rx;
        self.rx
            .drain_responses(u32::MAX, |r| rsps.push(r))
            .map_err(|e| format!("rx ring: {e}"))?;
        let rsps = std::mem::take(&mut self.rsp_rx);
        let mask = self.rx_bufs.len() - 1;
        let mut result = Ok(rsps.len());
        for (i, r) in rsps.iter().enumerate() {
            let slot = start.wrapping_add(i as u32) as usize & mask;
            let Some(buf) = self.rx_bufs[slot].take() else {
                result = Err(format!("rx response at slot {slot} with no buffer posted"));
                break;
            };
            let step = self.rx_slot(r, buf, pool, out, stats);
            if let Err(why) = step {
                result = Err(why);
                break;
            }
        }
        self.rsp_rx = rsps;
        result
    }

    fn rx_slot(
        &mut self,
        r: &RxResponse,
        buf: Buf,
        pool: &mut Pool,
        out: &mut std::collections::VecDeque<Packet>,
        stats: &mut Stats,
    ) -> Result<(), String> {
        let mut p = self.partial.take().unwrap_or(Partial {
            len: 0,
            flags: 0,
            gso: None,
            data_slots: 0,
            extras: 0,
            dropped: false,
            expect: Expect::Data,
        });
        let first = p.data_slots == 0 && p.extras == 0;
        match p.expect {
            Expect::Extra { more_data } => {
                self.rx_done(buf, pool);
                let e = rx_extra(r);
                p.extras += 1;
                if e.type_ == 0 || e.type_ >= XEN_NETIF_EXTRA_TYPE_MAX {
                    return Err(format!("rx extra-info of unknown type {}", e.type_));
                }
                if p.extras > MAX_RX_EXTRAS {
                    return Err("too many rx extra-info slots".into());
                }
                if e.type_ == XEN_NETIF_EXTRA_TYPE_GSO {
                    let g = e.as_gso();
                    let kind = match g.type_ {
                        XEN_NETIF_GSO_TYPE_TCPV4 => GsoKind::TcpV4,
                        XEN_NETIF_GSO_TYPE_TCPV6 => GsoKind::TcpV6,
                        t => return Err(format!("rx GSO extra of unknown type {t}")),
                    };
                    if g.size == 0 {
                        return Err("rx GSO extra with size 0".into());
                    }
                    if !self.mode.rx_gso {
                        return Err("rx GSO extra though GSO was not advertised".into());
                    }
                    p.gso = Some(Gso { kind, size: g.size });
                }
                p.expect = if e.has_more() {
                    Expect::Extra { more_data }
                } else if more_data {
                    Expect::Data
                } else {
                    return self.finish(p, pool, out, stats);
                };
                self.partial = Some(p);
                Ok(())
            }
            Expect::Data => {
                // Untrusted: the backend loses the page before it is read.
                let (buf, kept) = if self.mode.persistent {
                    (buf, true)
                } else {
                    let kept = match buf.gref {
                        Some(g) => pool.end(g, buf.frame),
                        None => true,
                    };
                    (Buf { gref: None, ..buf }, kept)
                };
                let status = r.status;
                let offset = usize::from(r.offset);
                if status >= 0 && offset + status as usize > PAGE_SIZE {
                    if kept {
                        self.rx_done(buf, pool);
                    }
                    return Err(format!(
                        "rx response offset {offset} + status {status} passes the page"
                    ));
                }
                if status < 0 {
                    p.dropped = true;
                }
                if !p.dropped && status > 0 {
                    let at = buf.frame as usize * PAGE_SIZE + offset;
                    let len = status as usize;
                    p.len += len;
                    self.rx_held.push((buf, at, len, kept));
                } else if kept {
                    self.rx_done(buf, pool);
                }
                p.data_slots += 1;
                let max = if self.mode.rx_sg { MAX_SLOTS } else { 1 };
                if p.data_slots > max {
                    return Err(format!("rx packet of more than {max} slots"));
                }
                if first {
                    p.flags = r.flags;
                }
                let more = r.flags & NETRXF_MORE_DATA != 0;
                if first && r.flags & NETRXF_EXTRA_INFO != 0 {
                    p.expect = Expect::Extra { more_data: more };
                    self.partial = Some(p);
                    return Ok(());
                }
                if more {
                    p.expect = Expect::Data;
                    self.partial = Some(p);
                    return Ok(());
                }
                self.finish(p, pool, out, stats)
            }
        }
    }

    fn finish(
        &mut self,
        p: Partial,
        pool: &mut Pool,
        out: &mut std::collections::VecDeque<Packet>,
        stats: &mut Stats,
    ) -> Result<(), String> {
        // One copy out of the slots' pages, into a buffer of the exact size.
        let mut data = Vec::new();
        let mut dropped = p.dropped;
        if !dropped {
            data.reserve_exact(p.len);
        }
        let mem = self.dom.memory().clone();
        for (buf, at, len, kept) in std::mem::take(&mut self.rx_held) {
            if !dropped {
                let old = data.len();
                data.resize(old + len, 0);
                dropped = mem.read_bytes(at, &mut data[old..]).is_err();
            }
            if kept {
                self.rx_done(buf, pool);
            }
        }
        if dropped || data.is_empty() {
            stats.rx_errors += 1;
            return Ok(());
        }
        stats.rx_packets += 1;
        stats.rx_bytes += data.len() as u64;
        out.push_back(Packet {
            data: Bytes::from(data),
            csum_blank: p.flags & NETRXF_CSUM_BLANK != 0,
            data_validated: p.flags & NETRXF_DATA_VALIDATED != 0,
            gso: p.gso,
        });
        Ok(())
    }

    /// Whether a response waits on either ring (or a ring is broken).
    pub(crate) fn has_responses(&mut self) -> bool {
        self.rx.unconsumed_responses() != Ok(0) || self.tx.unconsumed_responses() != Ok(0)
    }

    /// Before sleeping: registers this thread with the ports (taking a
    /// pending event) and re-arms both rings. True if something arrived
    /// meanwhile (do not sleep); `event` tells whether an event was taken.
    pub(crate) fn arm(&mut self, event: &mut bool) -> bool {
        let mut ready = false;
        for w in &self.waiters {
            if w.wait(Duration::ZERO, Duration::ZERO).unwrap_or(true) {
                *event = true;
                ready = true;
            }
        }
        if self.rx.final_check_for_responses().unwrap_or(true) {
            ready = true;
        }
        if self.tx_outstanding() > 0 && self.tx.final_check_for_responses().unwrap_or(true) {
            ready = true;
        }
        ready
    }

    /// Closes the event channels, ends every grant (quarantining pages the
    /// backend still holds) and gives the pages back.
    pub(crate) fn teardown(mut self, pool: &mut Pool) {
        self.waiters.clear();
        let ev = self.dom.events();
        if self.tx_port != Port(0) {
            let _ = ev.close(self.tx_port);
        }
        if self.rx_port != Port(0) && self.rx_port != self.tx_port {
            let _ = ev.close(self.rx_port);
        }
        for s in std::mem::take(&mut self.tx_shadow).into_iter().flatten() {
            pool.release(s.buf);
        }
        for b in self.tx_spare.drain(..) {
            pool.release(b);
        }
        for b in std::mem::take(&mut self.rx_bufs).into_iter().flatten() {
            pool.release(b);
        }
        for b in self.rx_spare.drain(..) {
            pool.release(b);
        }
        for (b, _, _, kept) in self.rx_held.drain(..) {
            if kept {
                pool.release(b);
            }
        }
        for i in 0..2 {
            pool.adopt(self.ring_frames[i], self.ring_grefs[i]);
        }
    }
}
