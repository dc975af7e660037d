//! The domain process's side of hosted mode: a [`RemoteDomain`] behind a
//! [`Domain`](crate::Domain) whose hypervisor is the daemon.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering as AtOrd};
use std::sync::{Arc, Mutex, RwLock, Weak};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use pvio_abi::grant::GntStatus;
use pvio_abi::{DomId, GrantHandle, GrantRef, PAGE_SIZE, Port};
use pvio_evtchn::{EvtchnError, PortState, PortStatus};
use pvio_shmem::{MemfdMem, Ordering, SharedMem};

use super::wire::{self, Dec, Enc, op};
use super::{
    CTL_BITMAP, CTL_GEN, CTL_ORPHANS, STATE, chan_set_pending, gnt_status, mask_off, pend_off,
};
use crate::domain::{DomainStats, domain_lock};
use crate::events::Dispatch;
use crate::grants::{CopyDst, CopyOp, CopySrc};

/// A map's handle, frame and granter incarnation, or its status.
pub(crate) type MapResult = Result<(GrantHandle, u32, u64), GntStatus>;

/// One event channel of this domain, known locally for the fast path.
#[derive(Debug)]
pub(crate) struct LocalChan {
    side: usize,
    mem: MemfdMem,
    peer_evfd: OwnedFd,
}

/// The client end of a daemon connection (module docs of `hosted`).
#[derive(Debug)]
pub(crate) struct RemoteDomain {
    pub(crate) id: DomId,
    sock: Mutex<UnixStream>,
    dead: AtomicBool,
    evfd: OwnedFd,
    ctl: MemfdMem,
    chans: RwLock<HashMap<u32, Arc<LocalChan>>>,
    /// Held across a channel-table refresh (request, reply and install) and
    /// a local close, so tables are installed in the order the daemon
    /// produced them: an older reply installed over a newer one would hide
    /// a channel from the dispatcher until the next change (a lost wakeup).
    sync_lock: Mutex<()>,
    mems: Mutex<HashMap<(u16, u64), Weak<MemfdMem>>>,
}

fn io_gnt(_: io::Error) -> GntStatus {
    GntStatus::GeneralError
}

fn io_ev(_: io::Error) -> EvtchnError {
    EvtchnError::Closed(Port(0))
}

/// Writes 1 to an eventfd (wakes its reader).
pub(crate) fn kick(fd: BorrowedFd<'_>) {
    let _ = nix::unistd::write(fd, &1u64.to_ne_bytes());
}

/// Empties an eventfd (non-blocking).
fn drain(fd: BorrowedFd<'_>) {
    let mut b = [0u8; 8];
    let _ = nix::unistd::read(fd, &mut b);
}

impl RemoteDomain {
    pub(crate) fn new(id: DomId, sock: UnixStream, evfd: OwnedFd, ctl: MemfdMem) -> Self {
        RemoteDomain {
            id,
            sock: Mutex::new(sock),
            dead: AtomicBool::new(false),
            evfd,
            ctl,
            chans: RwLock::new(HashMap::new()),
            sync_lock: Mutex::new(()),
            mems: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(AtOrd::Acquire)
    }

    /// One request/reply exchange with the daemon. Any transport failure
    /// marks the domain dead (the daemon destroyed it on our EOF, or died).
    fn call(&self, mut req: Enc, fds: &[BorrowedFd<'_>]) -> io::Result<(Dec, Vec<OwnedFd>)> {
        if self.is_dead() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let sock = domain_lock(&self.sock);
        let r = wire::send(&sock, &mut req, fds).and_then(|()| {
            wire::recv(&sock)?.ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
        });
        match r {
            Ok((d, f)) if d.op() == op::REPLY => Ok((d, f)),
            Ok(_) => {
                self.dead.store(true, AtOrd::Release);
                Err(io::ErrorKind::InvalidData.into())
            }
            Err(e) => {
                self.dead.store(true, AtOrd::Release);
                Err(e)
            }
        }
    }

    // ------------------------------------------------------------ grants

    /// Maps a batch; each result is the handle, the frame and the
    /// granter's incarnation.
    pub(crate) fn map(&self, grants: &[(DomId, GrantRef)], readonly: bool) -> Vec<MapResult> {
        let mut req = Enc::new(op::MAP);
        req.u8(readonly as u8).u32(grants.len() as u32);
        for (d, g) in grants {
            req.u16(d.0).u32(g.0);
        }
        let parse = |mut d: Dec| -> io::Result<Vec<MapResult>> {
            let n = d.count(18)?;
            (0..n)
                .map(|_| {
                    let st = d.i16()?;
                    let (h, f, inc) = (d.u32()?, d.u32()?, d.u64()?);
                    Ok(if st == 0 {
                        Ok((GrantHandle(h), f, inc))
                    } else {
                        Err(gnt_status(st))
                    })
                })
                .collect()
        };
        match self.call(req, &[]).and_then(|(d, _)| parse(d)) {
            Ok(v) if v.len() == grants.len() => v,
            _ => grants
                .iter()
                .map(|_| Err(GntStatus::GeneralError))
                .collect(),
        }
    }

    pub(crate) fn unmap(&self, handles: &[GrantHandle]) -> Vec<Result<(), GntStatus>> {
        let mut req = Enc::new(op::UNMAP);
        req.u32(handles.len() as u32);
        for h in handles {
            req.u32(h.0);
        }
        let parse = |mut d: Dec| -> io::Result<Vec<Result<(), GntStatus>>> {
            let n = d.count(2)?;
            (0..n)
                .map(|_| {
                    let st = d.i16()?;
                    Ok(if st == 0 { Ok(()) } else { Err(gnt_status(st)) })
                })
                .collect()
        };
        match self.call(req, &[]).and_then(|(d, _)| parse(d)) {
            Ok(v) if v.len() == handles.len() => v,
            _ => handles
                .iter()
                .map(|_| Err(GntStatus::GeneralError))
                .collect(),
        }
    }

    /// The memory of `granter` (incarnation `inc`), mapped here: from the
    /// cache while any mapping of it is alive here, else asked of the
    /// daemon, which hands it out only while this domain has one of that
    /// granter's grants mapped.
    pub(crate) fn granter_mem(&self, granter: DomId, inc: u64) -> Result<Arc<MemfdMem>, GntStatus> {
        let mut cache = domain_lock(&self.mems);
        if let Some(m) = cache.get(&(granter.0, inc)).and_then(Weak::upgrade) {
            return Ok(m);
        }
        let mut req = Enc::new(op::GET_MEM);
        req.u16(granter.0).u64(inc);
        let (mut d, mut fds) = self.call(req, &[]).map_err(io_gnt)?;
        let st = d.i16().map_err(io_gnt)?;
        if st != 0 {
            return Err(gnt_status(st));
        }
        let fd = fds.pop().ok_or(GntStatus::GeneralError)?;
        let mem = Arc::new(MemfdMem::from_fd(fd).map_err(|_| GntStatus::BadPage)?);
        cache.retain(|_, w| w.strong_count() > 0);
        cache.insert((granter.0, inc), Arc::downgrade(&mem));
        Ok(mem)
    }

    /// A grant copy batch, done by the daemon.
    pub(crate) fn copy(&self, ops: &mut [CopyOp<'_>]) -> usize {
        let mut req = Enc::new(op::COPY);
        req.u32(ops.len() as u32);
        for o in ops.iter() {
            let len = o.len as usize;
            match &o.src {
                CopySrc::Gref {
                    domid,
                    gref,
                    offset,
                } => req.u8(0).u16(domid.0).u32(gref.0).u16(*offset),
                CopySrc::Frame { frame, offset } => req.u8(1).u16(0).u32(*frame).u16(*offset),
                CopySrc::Buf(b) => {
                    let n = b.len().min(len);
                    req.u8(2).u16(0).u32(n as u32).u16(0).bytes(&b[..n])
                }
            };
            match &o.dst {
                CopyDst::Gref {
                    domid,
                    gref,
                    offset,
                } => req.u8(0).u16(domid.0).u32(gref.0).u16(*offset),
                CopyDst::Frame { frame, offset } => req.u8(1).u16(0).u32(*frame).u16(*offset),
                CopyDst::Buf(b) => req.u8(2).u16(0).u32(b.len().min(len) as u32).u16(0),
            };
            req.u16(o.len);
        }
        let r = self.call(req, &[]).and_then(|(mut d, _)| {
            let n = d.count(2)?;
            if n != ops.len() {
                return Err(io::ErrorKind::InvalidData.into());
            }
            let mut ok = 0;
            for o in ops.iter_mut() {
                o.status = gnt_status(d.i16()?);
                if o.status == GntStatus::Okay {
                    ok += 1;
                    if let CopyDst::Buf(b) = &mut o.dst {
                        let len = (o.len as usize).min(b.len());
                        b[..len].copy_from_slice(d.bytes(len)?);
                    }
                }
            }
            Ok(ok)
        });
        r.unwrap_or_else(|_| {
            for o in ops.iter_mut() {
                o.status = GntStatus::GeneralError;
            }
            0
        })
    }

    /// A new store connection as this domain, served by the daemon.
    pub(crate) fn store_conn(&self) -> io::Result<UnixStream> {
        let (mut d, mut fds) = self.call(Enc::new(op::STORE_CONN), &[])?;
        if d.i16()? != 0 || fds.len() != 1 {
            return Err(io::ErrorKind::InvalidData.into());
        }
        let fd = fds.pop().ok_or(io::ErrorKind::InvalidData)?;
        Ok(UnixStream::from(fd))
    }

    pub(crate) fn live_mappings(&self) -> usize {
        self.call(Enc::new(op::LIVE_MAPPINGS), &[])
            .and_then(|(mut d, _)| d.u64())
            .map_or(0, |n| n as usize)
    }

    pub(crate) fn stats(&self) -> DomainStats {
        self.call(Enc::new(op::STATS), &[])
            .and_then(|(mut d, _)| {
                Ok(DomainStats {
                    maps: d.u64()?,
                    unmaps: d.u64()?,
                    copies: d.u64()?,
                    copied_bytes: d.u64()?,
                    errors: d.u64()?,
                })
            })
            .unwrap_or_default()
    }

    // ------------------------------------------------------------ events

    fn ev_call(&self, req: Enc) -> Result<Dec, EvtchnError> {
        let (mut d, _) = self.call(req, &[]).map_err(io_ev)?;
        super::get_ev_result(&mut d).map_err(io_ev)??;
        Ok(d)
    }

    pub(crate) fn alloc_unbound(&self, remote: DomId) -> Result<Port, EvtchnError> {
        let mut req = Enc::new(op::EV_ALLOC_UNBOUND);
        req.u16(remote.0);
        let p = self.ev_call(req)?.u32().map_err(io_ev)?;
        Ok(Port(p))
    }

    pub(crate) fn bind(&self, remote: DomId, rport: Port) -> Result<Port, EvtchnError> {
        let mut req = Enc::new(op::EV_BIND);
        req.u16(remote.0).u32(rport.0);
        let p = self.ev_call(req)?.u32().map_err(io_ev)?;
        // Learn the new channel now (sends may follow at once), and let the
        // dispatcher see the bind-time pending bit.
        let _ = self.sync();
        kick(self.evfd.as_fd());
        Ok(Port(p))
    }

    pub(crate) fn port_op(&self, code: u8, port: Port) -> Result<(), EvtchnError> {
        let mut req = Enc::new(code);
        req.u32(port.0);
        let _order = (code == op::EV_CLOSE).then(|| domain_lock(&self.sync_lock));
        self.ev_call(req)?;
        if code == op::EV_CLOSE {
            self.chans
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&port.0);
        }
        Ok(())
    }

    pub(crate) fn status(&self, port: Port) -> Result<PortStatus, EvtchnError> {
        let mut req = Enc::new(op::EV_STATUS);
        req.u32(port.0);
        let mut d = self.ev_call(req)?;
        let r = (|| -> io::Result<PortStatus> {
            let (kind, dom, rport) = (d.u8()?, d.u16()?, d.u32()?);
            let state = match kind {
                1 => PortState::Reserved,
                2 => PortState::Unbound {
                    remote_dom: DomId(dom),
                },
                3 => PortState::Interdomain {
                    remote_dom: DomId(dom),
                    remote_port: Port(rport),
                },
                _ => PortState::Closed,
            };
            Ok(PortStatus {
                state,
                vcpu: 0,
                pending: d.u8()? != 0,
                masked: d.u8()? != 0,
            })
        })();
        r.map_err(io_ev)
    }

    /// `send`: the fast path sets the peer's pending bit in the channel
    /// page and writes the peer's eventfd only if the bit was newly set and
    /// the peer's end is not masked. No daemon round trip, and no system
    /// call at all for a coalesced event (ordering: `chan_set_pending`).
    #[inline]
    pub(crate) fn send(&self, port: Port) -> Result<(), EvtchnError> {
        for attempt in 0..2 {
            let chan = self
                .chans
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&port.0)
                .cloned();
            match chan {
                Some(c) if c.mem.load_u32(STATE, Ordering::Acquire).unwrap_or(1) == 0 => {
                    if chan_set_pending(&c.mem, 1 - c.side) {
                        kick(c.peer_evfd.as_fd());
                    }
                    return Ok(());
                }
                Some(_) => break,
                None if attempt == 0 => {
                    // Bound by the peer since our last sync?
                    if self.sync().is_err() {
                        break;
                    }
                }
                None => break,
            }
        }
        // Not a live channel: the daemon answers as the hypervisor would
        // (unbound: dropped; peer domain gone: Closed; free: InvalidPort).
        let mut req = Enc::new(op::EV_SEND);
        req.u32(port.0);
        self.ev_call(req).map(|_| ())
    }

    /// Refreshes the table of this domain's channels from the daemon.
    pub(crate) fn sync(&self) -> io::Result<()> {
        let _order = domain_lock(&self.sync_lock);
        let (mut d, fds) = self.call(Enc::new(op::EV_SYNC), &[])?;
        let n = d.count(5)?;
        if fds.len() != 2 * n {
            return Err(io::ErrorKind::InvalidData.into());
        }
        let mut fds = fds.into_iter();
        let mut table = HashMap::new();
        for _ in 0..n {
            let (port, side) = (d.u32()?, d.u8()? as usize & 1);
            let (Some(mfd), Some(efd)) = (fds.next(), fds.next()) else {
                return Err(io::ErrorKind::InvalidData.into());
            };
            let mem = MemfdMem::from_fd(mfd).map_err(io::Error::other)?;
            if mem.len() < PAGE_SIZE {
                return Err(io::ErrorKind::InvalidData.into());
            }
            table.insert(
                port,
                Arc::new(LocalChan {
                    side,
                    mem,
                    peer_evfd: efd,
                }),
            );
        }
        *self.chans.write().unwrap_or_else(|e| e.into_inner()) = table;
        Ok(())
    }

    /// The dispatcher thread's loop: wait on this domain's eventfd, resync
    /// the channel table when the daemon says it changed, and hand each
    /// newly pending, unmasked port to its [`PortWaiter`](crate::PortWaiter).
    pub(crate) fn run_dispatcher(self: Arc<Self>, d: Arc<Dispatch>) {
        let mut seen = u32::MAX;
        loop {
            // Drain before scanning: a send after our scan finds its bit
            // clear, writes the eventfd, and the next poll returns.
            drain(self.evfd.as_fd());
            let generation = self.ctl.load_u32(CTL_GEN, Ordering::Acquire).unwrap_or(0);
            if generation != seen {
                seen = generation;
                let _ = self.sync();
            }
            let chans: Vec<(u32, Arc<LocalChan>)> = self
                .chans
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(p, c)| (*p, c.clone()))
                .collect();
            // Events the daemon moved off closed channels.
            if self.ctl.fetch_and_u32(CTL_ORPHANS, 0, Ordering::SeqCst) != Ok(0) {
                let words = self.ctl.size().saturating_sub(CTL_BITMAP) / 4;
                for w in 0..words {
                    let mut bits = self
                        .ctl
                        .fetch_and_u32(CTL_BITMAP + 4 * w, 0, Ordering::SeqCst)
                        .unwrap_or(0);
                    while bits != 0 {
                        let b = bits.trailing_zeros();
                        bits &= bits - 1;
                        d.deliver(Port(w as u32 * 32 + b));
                    }
                }
            }
            for (port, c) in chans {
                if c.mem.load_u32(mask_off(c.side), Ordering::SeqCst) == Ok(0)
                    && c.mem.fetch_and_u32(pend_off(c.side), 0, Ordering::SeqCst) == Ok(1)
                {
                    d.deliver(Port(port));
                }
            }
            if self.is_dead() {
                break;
            }
            let mut pfd = [PollFd::new(self.evfd.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut pfd, PollTimeout::from(200u16));
            if self.daemon_gone() {
                break;
            }
        }
        d.finish();
    }

    /// Whether the daemon closed our connection (checked without taking
    /// the request lock's turn: a zero-byte non-blocking peek).
    fn daemon_gone(&self) -> bool {
        if self.is_dead() {
            return true;
        }
        let Ok(sock) = self.sock.try_lock() else {
            return false;
        };
        let mut pfd = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        let gone = matches!(poll(&mut pfd, PollTimeout::ZERO), Ok(1))
            && pfd[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLIN));
        if gone {
            self.dead.store(true, AtOrd::Release);
        }
        gone
    }
}
