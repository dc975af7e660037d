//! The daemon: one embedded hypervisor, one thread per domain connection.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering as AtOrd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use pvio_abi::grant::GntStatus;
use pvio_abi::{DomId, GrantHandle, GrantRef, PAGE_SIZE, Port};
use pvio_evtchn::PortState;
use pvio_shmem::{MemfdMem, Ordering, SharedMem};
use pvio_xenbus::wire::WireServer;

use super::remote::kick;
use super::wire::{self, Dec, Enc, op};
use super::{
    CTL_BITMAP, CTL_GEN, CTL_ORPHANS, STATE, chan_set_pending, ctl_len, mask_off, pend_off,
    put_ev_result,
};
use crate::domain::domain_lock;
use crate::grants::{CopyDst, CopyOp, CopySrc};
use crate::{Domain, DomainConfig, HvError, Hypervisor};

/// A connected domain.
struct DomRec {
    dom: Domain,
    evfd: OwnedFd,
    ctl: MemfdMem,
}

impl DomRec {
    /// Tells the domain's process that its set of channels changed.
    fn bump(&self) {
        let g = self.ctl.load_u32(CTL_GEN, Ordering::Acquire).unwrap_or(0);
        let _ = self
            .ctl
            .store_u32(CTL_GEN, g.wrapping_add(1), Ordering::Release);
        kick(self.evfd.as_fd());
    }

    /// Moves an event left pending on `port` by a closing channel into
    /// the orphan bitmap (the caller bumps, which kicks).
    fn orphan(&self, port: Port) {
        let word = CTL_BITMAP + (port.0 as usize / 32) * 4;
        if self
            .ctl
            .fetch_or_u32(word, 1 << (port.0 % 32), Ordering::SeqCst)
            .is_ok()
        {
            let _ = self.ctl.store_u32(CTL_ORPHANS, 1, Ordering::SeqCst);
        }
    }
}

/// One interdomain channel with a page: end 0 allocated the port, end 1
/// bound it.
struct Chan {
    mem: MemfdMem,
    ends: [(DomId, Port); 2],
}

#[derive(Default)]
struct Tables {
    doms: HashMap<u16, Arc<DomRec>>,
    chans: HashMap<(u16, u32), Arc<Chan>>,
}

struct Shared {
    hv: Hypervisor,
    stop: AtomicBool,
    /// Connected domains and their channels; every change of either is
    /// made under this lock (control path only).
    tables: Mutex<Tables>,
}

/// The hypervisor daemon (see the module docs of `hosted`).
pub struct Daemon {
    shared: Arc<Shared>,
    path: PathBuf,
    accept: Option<JoinHandle<()>>,
    /// The store on a socket of its own ([`Daemon::bind_store`]).
    xs: Option<WireServer>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("path", &self.path)
            .field("hv", &self.shared.hv)
            .finish()
    }
}

impl Daemon {
    /// Listens on `socket_path` (an existing socket file there is
    /// replaced) and serves domain processes on a background thread.
    pub fn serve(socket_path: impl AsRef<Path>) -> io::Result<Daemon> {
        Self::serve_with(socket_path, Hypervisor::new())
    }

    /// As [`Daemon::serve`], around an existing hypervisor (whose store
    /// the toolstack of this process uses).
    pub fn serve_with(socket_path: impl AsRef<Path>, hv: Hypervisor) -> io::Result<Daemon> {
        let path = socket_path.as_ref().to_path_buf();
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        let shared = Arc::new(Shared {
            hv,
            stop: AtomicBool::new(false),
            tables: Mutex::new(Tables::default()),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("pvio-hvd-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.stop.load(AtOrd::Acquire) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let s = s.clone();
                    let _ = std::thread::Builder::new()
                        .name("pvio-hvd-conn".into())
                        .spawn(move || serve_conn(&s, conn));
                }
            })?;
        Ok(Daemon {
            shared,
            path,
            accept: Some(accept),
            xs: None,
        })
    }

    /// Also serves the store on a Unix socket at `path` (an existing
    /// socket file there is replaced), with the xenstore wire protocol.
    /// Every connection on it is **dom0** (privileged), like xenstored's
    /// socket: the toolstack, or `XENSTORED_PATH=path xenstore-ls`. Keep
    /// the path as private as the daemon's socket. Replaces an earlier
    /// store socket.
    pub fn bind_store(&mut self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = path.as_ref();
        self.xs = None;
        if std::fs::symlink_metadata(path)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
        {
            std::fs::remove_file(path)?;
        }
        self.xs = Some(WireServer::bind(self.shared.hv.store().clone(), path)?);
        Ok(())
    }

    /// The store socket's path, if [`Daemon::bind_store`] was called.
    pub fn store_path(&self) -> Option<&Path> {
        self.xs.as_ref().map(WireServer::path)
    }

    /// The hypervisor the daemon runs (its store is the toolstack's).
    pub fn hypervisor(&self) -> &Hypervisor {
        &self.shared.hv
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ids of the domains connected now.
    pub fn connected(&self) -> Vec<DomId> {
        let mut v: Vec<DomId> = domain_lock(&self.shared.tables)
            .doms
            .keys()
            .map(|&d| DomId(d))
            .collect();
        v.sort();
        v
    }
}

impl Drop for Daemon {
    /// Stops accepting (connections already served keep running until
    /// their process disconnects) and removes the socket file.
    fn drop(&mut self) {
        self.xs = None;
        self.shared.stop.store(true, AtOrd::Release);
        // Wake the acceptor; if that fails (the socket file is gone) it is
        // left blocked rather than joined.
        if UnixStream::connect(&self.path).is_ok()
            && let Some(t) = self.accept.take()
        {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn memfd(name: &str, len: usize) -> io::Result<MemfdMem> {
    let name = CString::new(name).unwrap_or_default();
    MemfdMem::new(&name, len).map_err(io::Error::other)
}

fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

/// Registration, then requests until end of stream, then the domain's
/// destruction (SECURITY.md L1).
fn serve_conn(s: &Arc<Shared>, conn: UnixStream) {
    let Ok(Some((mut req, mut fds))) = wire::recv(&conn) else {
        return;
    };
    let rec = match register(s, &mut req, &mut fds) {
        Ok(rec) => rec,
        Err(e) => {
            let mut r = Enc::new(op::REPLY);
            let msg = e.to_string();
            r.u8(1).u32(msg.len() as u32).bytes(msg.as_bytes());
            let _ = wire::send(&conn, &mut r, &[]);
            return;
        }
    };
    let id = rec.dom.id();
    {
        let mut r = Enc::new(op::REPLY);
        r.u8(0).u16(id.0);
        let st = &rec.dom.st;
        let fds = [st.mem.fd(), st.table_mem.fd(), rec.ctl.fd()];
        if wire::send(&conn, &mut r, &fds).is_ok() {
            while let Ok(Some((req, _fds))) = wire::recv(&conn) {
                let (mut reply, out) = match handle(s, &rec, req) {
                    Ok(x) => x,
                    Err(_) => break, // malformed request: drop the domain
                };
                let borrowed: Vec<BorrowedFd<'_>> = out.iter().map(|f| f.as_fd()).collect();
                if wire::send(&conn, &mut reply, &borrowed).is_err() {
                    break;
                }
            }
        }
    }
    // The process is gone (or misbehaved): its channels close, their peers
    // are told, and the domain is destroyed like an embedded one.
    {
        let mut t = domain_lock(&s.tables);
        let mine: Vec<(u16, u32)> = t.chans.keys().filter(|k| k.0 == id.0).copied().collect();
        for k in mine {
            if let Some(c) = t.chans.remove(&k) {
                close_chan(&mut t, &c, 2, id);
            }
        }
        t.doms.remove(&id.0);
    }
    let _ = s.hv.destroy_domain(id);
}

fn register(s: &Shared, req: &mut Dec, fds: &mut Vec<OwnedFd>) -> io::Result<Arc<DomRec>> {
    if req.op() != op::REGISTER {
        return Err(io::Error::other("expected REGISTER"));
    }
    let id = DomId(req.u16()?);
    let config = DomainConfig {
        pages: req.u64()? as usize,
        grant_frames: req.u32()? as usize,
        max_mappings: req.u32()? as usize,
        max_ports: req.u32()?,
    };
    let evfd = fds
        .pop()
        .ok_or_else(|| io::Error::other("REGISTER without an eventfd"))?;
    let ctl = memfd(&format!("pvio-dom{}-ctl", id.0), ctl_len(config.max_ports))?;
    let dom =
        s.hv.create_domain(id, config)
            .map_err(|e: HvError| io::Error::other(e.to_string()))?;
    let rec = Arc::new(DomRec { dom, evfd, ctl });
    domain_lock(&s.tables).doms.insert(id.0, rec.clone());
    Ok(rec)
}

/// Marks a channel closed (`state`) by domain `by`, removes both ends and
/// tells both domains. An event still pending at the other end moves to
/// that domain's orphan bitmap: its process may not have learnt of the
/// channel yet (bound, sent to and closed between two of its refreshes),
/// and the port keeps the event as a Xen port does. The bit is taken with
/// a fetch_and, so either the process's dispatcher or this move delivers
/// it, never both.
fn close_chan(t: &mut Tables, c: &Chan, state: u32, by: DomId) {
    let _ = c.mem.store_u32(STATE, state, Ordering::SeqCst);
    for (side, (d, p)) in c.ends.into_iter().enumerate() {
        t.chans.remove(&(d.0, p.0));
        if let Some(r) = t.doms.get(&d.0) {
            if d != by && c.mem.fetch_and_u32(pend_off(side), 0, Ordering::SeqCst) == Ok(1) {
                r.orphan(p);
            }
            r.bump();
        }
    }
}

type Reply = (Enc, Vec<OwnedFd>);

fn handle(s: &Shared, rec: &DomRec, mut req: Dec) -> io::Result<Reply> {
    let dom = &rec.dom;
    let mut r = Enc::new(op::REPLY);
    let mut fds = Vec::new();
    match req.op() {
        op::MAP => {
            let readonly = req.u8()? != 0;
            let n = req.count(6)?;
            r.u32(n as u32);
            for _ in 0..n {
                let (d, g) = (DomId(req.u16()?), GrantRef(req.u32()?));
                match dom
                    .map_grant(d, g, readonly)
                    .and_then(|h| dom.mapping_info(h).map(|(f, inc)| (h, f, inc)))
                {
                    Ok((h, f, inc)) => r.i16(0).u32(h.0).u32(f).u64(inc),
                    Err(e) => r.i16(e.as_i16()).u32(0).u32(0).u64(0),
                };
            }
        }
        op::UNMAP => {
            let n = req.count(4)?;
            r.u32(n as u32);
            for _ in 0..n {
                let st = dom.unmap_grant(GrantHandle(req.u32()?));
                r.i16(st.err().map_or(0, GntStatus::as_i16));
            }
        }
        op::GET_MEM => {
            let (d, inc) = (DomId(req.u16()?), req.u64()?);
            match dom.mapped_granter_mem(d, inc) {
                Some(m) => {
                    fds.push(dup(m.fd())?);
                    r.i16(0);
                }
                None => {
                    r.i16(GntStatus::PermissionDenied.as_i16());
                }
            }
        }
        op::COPY => copy(dom, &mut req, &mut r)?,
        op::STORE_CONN => {
            let (mine, theirs) = UnixStream::pair()?;
            pvio_xenbus::wire::serve_stream(s.hv.store(), mine, dom.id())?;
            fds.push(OwnedFd::from(theirs));
            r.i16(0);
        }
        op::LIVE_MAPPINGS => {
            r.u64(dom.live_mappings() as u64);
        }
        op::STATS => {
            let st = dom.stats();
            r.u64(st.maps)
                .u64(st.unmaps)
                .u64(st.copies)
                .u64(st.copied_bytes)
                .u64(st.errors);
        }
        op::EV_ALLOC_UNBOUND => {
            let remote = DomId(req.u16()?);
            let res = dom.events().alloc_unbound(remote);
            put_ev_result(&mut r, res.map(|_| ()));
            r.u32(res.map_or(0, |p| p.0));
        }
        op::EV_BIND => {
            let (rd, rp) = (DomId(req.u16()?), Port(req.u32()?));
            let mut t = domain_lock(&s.tables);
            let res = dom.events().bind_interdomain(rd, rp);
            if let Ok(lp) = res
                && t.doms.contains_key(&rd.0)
            {
                let mem = memfd(
                    &format!("pvio-evtchn-{}.{}-{}.{}", rd.0, rp.0, dom.id().0, lp.0),
                    PAGE_SIZE,
                )?;
                // Xen marks the binder's new port pending once.
                let _ = mem.store_u32(pend_off(1), 1, Ordering::Release);
                let c = Arc::new(Chan {
                    mem,
                    ends: [(rd, rp), (dom.id(), lp)],
                });
                t.chans.insert((rd.0, rp.0), c.clone());
                t.chans.insert((dom.id().0, lp.0), c);
                for d in [rd, dom.id()] {
                    if let Some(x) = t.doms.get(&d.0) {
                        x.bump();
                    }
                }
            }
            put_ev_result(&mut r, res.map(|_| ()));
            r.u32(res.map_or(0, |p| p.0));
        }
        op::EV_CLOSE => {
            let p = Port(req.u32()?);
            let mut t = domain_lock(&s.tables);
            let res = dom.events().close(p);
            if res.is_ok()
                && let Some(c) = t.chans.remove(&(dom.id().0, p.0))
            {
                close_chan(&mut t, &c, 1, dom.id());
            }
            put_ev_result(&mut r, res);
        }
        op::EV_MASK | op::EV_UNMASK => {
            let p = Port(req.u32()?);
            let unmask = req.op() == op::EV_UNMASK;
            let res = if unmask {
                dom.events().unmask(p)
            } else {
                dom.events().mask(p)
            };
            if res.is_ok()
                && let Some(c) = domain_lock(&s.tables).chans.get(&(dom.id().0, p.0))
            {
                let side = usize::from(c.ends[1] == (dom.id(), p));
                let _ = c
                    .mem
                    .store_u32(mask_off(side), u32::from(!unmask), Ordering::SeqCst);
                // Pairs with the sender's fetch_or-then-mask-load (remote.rs).
                if unmask && c.mem.load_u32(pend_off(side), Ordering::SeqCst) == Ok(1) {
                    kick(rec.evfd.as_fd());
                }
            }
            put_ev_result(&mut r, res);
        }
        op::EV_STATUS => {
            let p = Port(req.u32()?);
            match dom.events().status(p) {
                Ok(mut st) => {
                    if let Some(c) = domain_lock(&s.tables).chans.get(&(dom.id().0, p.0)) {
                        let side = usize::from(c.ends[1] == (dom.id(), p));
                        st.pending = c.mem.load_u32(pend_off(side), Ordering::Acquire) == Ok(1);
                        st.masked = c.mem.load_u32(mask_off(side), Ordering::Acquire) == Ok(1);
                    }
                    put_ev_result(&mut r, Ok(()));
                    let (k, d, rp) = match st.state {
                        PortState::Closed => (0, 0, 0),
                        PortState::Reserved => (1, 0, 0),
                        PortState::Unbound { remote_dom } => (2, remote_dom.0, 0),
                        PortState::Interdomain {
                            remote_dom,
                            remote_port,
                        } => (3, remote_dom.0, remote_port.0),
                    };
                    r.u8(k)
                        .u16(d)
                        .u32(rp)
                        .u8(st.pending as u8)
                        .u8(st.masked as u8);
                }
                Err(e) => put_ev_result(&mut r, Err(e)),
            }
        }
        op::EV_SEND => {
            let p = Port(req.u32()?);
            // A channel the caller has not learnt yet (its table is being
            // refreshed): deliver through the channel page as the fast
            // path would, never into the embedded table no process reads.
            let t = domain_lock(&s.tables);
            match t.chans.get(&(dom.id().0, p.0)) {
                Some(c) if c.mem.load_u32(STATE, Ordering::Acquire) == Ok(0) => {
                    let peer = usize::from(c.ends[0] == (dom.id(), p));
                    if chan_set_pending(&c.mem, peer)
                        && let Some(x) = t.doms.get(&c.ends[peer].0.0)
                    {
                        kick(x.evfd.as_fd());
                    }
                    put_ev_result(&mut r, Ok(()));
                }
                _ => put_ev_result(&mut r, dom.events().send(p)),
            }
        }
        op::EV_SYNC => {
            let t = domain_lock(&s.tables);
            let mine: Vec<(u32, &Arc<Chan>)> = t
                .chans
                .iter()
                .filter(|(k, _)| k.0 == dom.id().0)
                .map(|(k, c)| (k.1, c))
                .take(wire::MAX_FDS / 2)
                .collect();
            let mut n = 0u32;
            let mut body = Enc::default();
            for (port, c) in mine {
                let side = usize::from(c.ends[1] == (dom.id(), Port(port)));
                let Some(peer) = t.doms.get(&c.ends[1 - side].0.0) else {
                    continue;
                };
                fds.push(dup(c.mem.fd())?);
                fds.push(dup(peer.evfd.as_fd())?);
                body.u32(port).u8(side as u8);
                n += 1;
            }
            r.u32(n).bytes(&body.0);
        }
        _ => return Err(io::ErrorKind::InvalidData.into()),
    }
    Ok((r, fds))
}

/// One side of a copy as received.
enum WireSide {
    Gref(DomId, GrantRef, u16),
    Frame(u32, u16),
    Buf(usize),
}

fn side(req: &mut Dec) -> io::Result<(WireSide, Vec<u8>)> {
    let (k, d, v, off) = (req.u8()?, req.u16()?, req.u32()?, req.u16()?);
    Ok(match k {
        0 => (WireSide::Gref(DomId(d), GrantRef(v), off), Vec::new()),
        1 => (WireSide::Frame(v, off), Vec::new()),
        _ => (WireSide::Buf((v as usize).min(PAGE_SIZE)), Vec::new()),
    })
}

/// A grant copy batch on behalf of `dom`.
fn copy(dom: &Domain, req: &mut Dec, r: &mut Enc) -> io::Result<()> {
    let n = req.count(20)?;
    let mut parsed = Vec::with_capacity(n);
    for _ in 0..n {
        let (src, mut sbuf) = side(req)?;
        if let WireSide::Buf(len) = src {
            sbuf = req.bytes(len)?.to_vec();
        }
        let (dst, _) = side(req)?;
        let dbuf = match dst {
            WireSide::Buf(len) => vec![0u8; len],
            _ => Vec::new(),
        };
        let len = req.u16()?;
        parsed.push((src, sbuf, dst, dbuf, len));
    }
    let mut ops: Vec<CopyOp<'_>> = parsed
        .iter_mut()
        .map(|(src, sbuf, dst, dbuf, len)| {
            let src = match *src {
                WireSide::Gref(domid, gref, offset) => CopySrc::Gref {
                    domid,
                    gref,
                    offset,
                },
                WireSide::Frame(frame, offset) => CopySrc::Frame { frame, offset },
                WireSide::Buf(_) => CopySrc::Buf(sbuf),
            };
            let dst = match *dst {
                WireSide::Gref(domid, gref, offset) => CopyDst::Gref {
                    domid,
                    gref,
                    offset,
                },
                WireSide::Frame(frame, offset) => CopyDst::Frame { frame, offset },
                WireSide::Buf(_) => CopyDst::Buf(dbuf),
            };
            CopyOp::new(src, dst, *len)
        })
        .collect();
    dom.grant_copy(&mut ops);
    r.u32(n as u32);
    for o in &ops {
        r.i16(o.status.as_i16());
        if o.status == GntStatus::Okay
            && let CopyDst::Buf(b) = &o.dst
        {
            r.bytes(&b[..(o.len as usize).min(b.len())]);
        }
    }
    Ok(())
}

/// Registers this process as domain `id` with the daemon at `path`: the
/// body of [`Domain::connect_hosted`].
pub(crate) fn connect(path: &Path, id: DomId, config: DomainConfig) -> Result<Domain, HvError> {
    let io = HvError::Hosted;
    let sock = UnixStream::connect(path).map_err(io)?;
    let evfd = nix::sys::eventfd::EventFd::from_flags(
        nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
    )
    .map_err(|e| HvError::Hosted(e.into()))?;
    let evfd = OwnedFd::from(evfd);
    let mut req = Enc::new(op::REGISTER);
    req.u16(id.0)
        .u64(config.pages as u64)
        .u32(config.grant_frames as u32)
        .u32(config.max_mappings as u32)
        .u32(config.max_ports);
    wire::send(&sock, &mut req, &[evfd.as_fd()]).map_err(io)?;
    let (mut d, fds) = wire::recv(&sock)
        .map_err(io)?
        .ok_or_else(|| HvError::Hosted(io::ErrorKind::UnexpectedEof.into()))?;
    let bad = || HvError::Hosted(io::ErrorKind::InvalidData.into());
    if d.u8().map_err(io)? != 0 {
        let n = d.u32().map_err(io)? as usize;
        let msg = String::from_utf8_lossy(d.bytes(n).map_err(io)?).into_owned();
        if msg.contains("already exists") {
            return Err(HvError::DomainExists(id));
        }
        return Err(HvError::Hosted(io::Error::other(msg)));
    }
    if DomId(d.u16().map_err(io)?) != id || fds.len() != 3 {
        return Err(bad());
    }
    let mut fds = fds.into_iter();
    let mut next = || {
        fds.next()
            .ok_or_else(bad)
            .and_then(|f| MemfdMem::from_fd(f).map_err(HvError::Memory))
    };
    let (mem, table, ctl) = (next()?, next()?, next()?);
    let remote = super::remote::RemoteDomain::new(id, sock, evfd, ctl);
    Domain::new_remote(id, mem, table, config, Arc::new(remote))
}
