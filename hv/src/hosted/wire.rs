//! The daemon protocol's framing and encoding.
//!
//! A message is `len: u32` (little-endian, the length of what follows),
//! then `op: u8`, then the op's fields, little-endian, in the order the
//! encoder wrote them. File descriptors travel with `SCM_RIGHTS` on the
//! `sendmsg` that carries the message's first byte. Requests and replies
//! strictly alternate on a connection (one request in flight), so neither
//! side needs to match them up.

use std::io::{self, IoSlice, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

/// Largest message either side accepts (a batch of 512 page copies with
/// their data fits).
pub(crate) const MAX_MSG: usize = 4 << 20;
/// Most fds one message carries.
pub(crate) const MAX_FDS: usize = 64;

/// Request and reply codes.
pub(crate) mod op {
    pub const REGISTER: u8 = 1;
    pub const MAP: u8 = 2;
    pub const UNMAP: u8 = 3;
    pub const GET_MEM: u8 = 4;
    pub const COPY: u8 = 5;
    pub const LIVE_MAPPINGS: u8 = 6;
    pub const STATS: u8 = 7;
    /// A new store connection: the reply carries one end of a socket
    /// pair whose other end the daemon serves as the domain (xenstore wire
    /// protocol).
    pub const STORE_CONN: u8 = 8;
    pub const EV_ALLOC_UNBOUND: u8 = 10;
    pub const EV_BIND: u8 = 11;
    pub const EV_CLOSE: u8 = 12;
    pub const EV_MASK: u8 = 13;
    pub const EV_UNMASK: u8 = 14;
    pub const EV_STATUS: u8 = 15;
    pub const EV_SEND: u8 = 16;
    pub const EV_SYNC: u8 = 17;
    pub const REPLY: u8 = 0x80;
}

/// A message being built.
#[derive(Debug, Default)]
pub(crate) struct Enc(pub(crate) Vec<u8>);

impl Enc {
    pub(crate) fn new(op: u8) -> Self {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&[0, 0, 0, 0, op]);
        Enc(v)
    }
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn i16(&mut self, v: i16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn finish(&mut self) -> io::Result<&[u8]> {
        let len = u32::try_from(self.0.len() - 4)
            .ok()
            .filter(|&l| l as usize <= MAX_MSG)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
        self.0[..4].copy_from_slice(&len.to_le_bytes());
        Ok(&self.0)
    }
}

/// A received message being parsed; every getter fails cleanly on a short
/// message (the peer is not trusted).
#[derive(Debug)]
pub(crate) struct Dec {
    buf: Vec<u8>,
    at: usize,
}

fn short() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "short message")
}

impl Dec {
    pub(crate) fn op(&self) -> u8 {
        self.buf.first().copied().unwrap_or(0)
    }
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        let end = self.at.checked_add(n).ok_or_else(short)?;
        let s = self.buf.get(self.at..end).ok_or_else(short)?;
        self.at = end;
        Ok(s)
    }
    pub(crate) fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> io::Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub(crate) fn i16(&mut self) -> io::Result<i16> {
        Ok(self.u16()? as i16)
    }
    pub(crate) fn u32(&mut self) -> io::Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from(self.u32()?) | (u64::from(self.u32()?) << 32))
    }
    pub(crate) fn bytes(&mut self, n: usize) -> io::Result<&[u8]> {
        self.take(n)
    }
    /// A count the peer sent, refused if `count * min_size` bytes cannot
    /// follow (bounds every loop over peer-chosen counts).
    pub(crate) fn count(&mut self, min_size: usize) -> io::Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size.max(1)) > self.buf.len() - self.at {
            return Err(short());
        }
        Ok(n)
    }
}

/// Sends `msg` with `fds` attached.
pub(crate) fn send(sock: &UnixStream, msg: &mut Enc, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let bytes = msg.finish()?;
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut done = 0;
    while done < bytes.len() {
        let iov = [IoSlice::new(&bytes[done..])];
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if done == 0 && !raw.is_empty() {
            &cmsg
        } else {
            &[]
        };
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Receives one message and the fds sent with it. `Ok(None)` at a clean
/// end of stream.
pub(crate) fn recv(sock: &UnixStream) -> io::Result<Option<(Dec, Vec<OwnedFd>)>> {
    let mut hdr = [0u8; 4];
    let mut got = 0;
    let mut fds = Vec::new();
    while got < 4 {
        let (n, more) = pvio_shmem::recv_with_fds(sock.as_fd(), &mut hdr[got..], MAX_FDS)?;
        fds.extend(more);
        if n == 0 {
            return if got == 0 && fds.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += n;
    }
    let len = u32::from_le_bytes(hdr) as usize;
    if len == 0 || len > MAX_MSG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad message length",
        ));
    }
    let mut buf = vec![0u8; len];
    (&*sock).read_exact(&mut buf)?;
    Ok(Some((Dec { buf, at: 1 }, fds)))
}
