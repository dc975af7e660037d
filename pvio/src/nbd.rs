//! A small NBD server (the `newstyle` fixed handshake of the NBD protocol,
//! simple replies only) over any [`BlockDevice`].
//!
//! Handshake: `NBD_OPT_EXPORT_NAME`, `NBD_OPT_GO`, `NBD_OPT_INFO` (with
//! `NBD_INFO_EXPORT` and, when asked for, `NBD_INFO_BLOCK_SIZE`),
//! `NBD_OPT_LIST` and `NBD_OPT_ABORT`; every other option is answered
//! `NBD_REP_ERR_UNSUP`. The export is reached by its name or by the empty
//! (default) name.
//!
//! Transmission: `NBD_CMD_READ`, `WRITE`, `FLUSH`, `TRIM` and `DISC`;
//! `NBD_FLAG_SEND_FLUSH`, and `NBD_FLAG_SEND_TRIM` when the device can
//! discard (`NBD_FLAG_READ_ONLY` for a read-only device). A request whose
//! range is outside the device, or whose offset or length is not a
//! multiple of the device's block size, or longer than [`MAX_IO`], is
//! answered `NBD_EINVAL` (writes to a read-only device `NBD_EPERM`, I/O
//! errors `NBD_EIO`). The connection is closed (never a panic) on a bad
//! request magic, a bad option magic, an option longer than
//! [`MAX_OPTION`], a write longer than [`MAX_IO`] (its payload cannot be
//! skipped safely), or a peer that goes away; each connection is a thread
//! and the device is shared behind a mutex.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// `NBDMAGIC`.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle magic and the magic of each option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// The magic of an option reply.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// The magic of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// The magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Handshake flag: fixed newstyle.
pub const NBD_FLAG_FIXED_NEWSTYLE: u16 = 1;
/// Handshake flag: no 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const NBD_FLAG_NO_ZEROES: u16 = 2;
/// Client flag: fixed newstyle.
pub const NBD_FLAG_C_FIXED_NEWSTYLE: u32 = 1;
/// Client flag: no zeroes.
pub const NBD_FLAG_C_NO_ZEROES: u32 = 2;

/// Transmission flag: the flags are valid.
pub const NBD_FLAG_HAS_FLAGS: u16 = 1;
/// Transmission flag: read-only export.
pub const NBD_FLAG_READ_ONLY: u16 = 2;
/// Transmission flag: `NBD_CMD_FLUSH` is supported.
pub const NBD_FLAG_SEND_FLUSH: u16 = 4;
/// Transmission flag: `NBD_CMD_TRIM` is supported.
pub const NBD_FLAG_SEND_TRIM: u16 = 32;

/// Option: select the export, old style (no reply header).
pub const NBD_OPT_EXPORT_NAME: u32 = 1;
/// Option: end the handshake.
pub const NBD_OPT_ABORT: u32 = 2;
/// Option: list the exports.
pub const NBD_OPT_LIST: u32 = 3;
/// Option: describe an export.
pub const NBD_OPT_INFO: u32 = 6;
/// Option: describe an export and start transmission.
pub const NBD_OPT_GO: u32 = 7;

/// Option reply: done.
pub const NBD_REP_ACK: u32 = 1;
/// Option reply: an export (for `NBD_OPT_LIST`).
pub const NBD_REP_SERVER: u32 = 2;
/// Option reply: information (for `NBD_OPT_INFO` / `NBD_OPT_GO`).
pub const NBD_REP_INFO: u32 = 3;
/// Option error: unsupported option.
pub const NBD_REP_ERR_UNSUP: u32 = (1 << 31) + 1;
/// Option error: invalid option data.
pub const NBD_REP_ERR_INVALID: u32 = (1 << 31) + 3;
/// Option error: unknown export.
pub const NBD_REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;

/// Information type: size and transmission flags.
pub const NBD_INFO_EXPORT: u16 = 0;
/// Information type: block size constraints.
pub const NBD_INFO_BLOCK_SIZE: u16 = 3;

/// Command: read.
pub const NBD_CMD_READ: u16 = 0;
/// Command: write.
pub const NBD_CMD_WRITE: u16 = 1;
/// Command: disconnect.
pub const NBD_CMD_DISC: u16 = 2;
/// Command: flush.
pub const NBD_CMD_FLUSH: u16 = 3;
/// Command: trim (discard).
pub const NBD_CMD_TRIM: u16 = 4;
/// Command flag: force unit access.
pub const NBD_CMD_FLAG_FUA: u16 = 1;

/// Error: operation not permitted (write to a read-only export).
pub const NBD_EPERM: u32 = 1;
/// Error: I/O error.
pub const NBD_EIO: u32 = 5;
/// Error: invalid request.
pub const NBD_EINVAL: u32 = 22;
/// Error: not supported.
pub const NBD_ENOTSUP: u32 = 95;

/// Largest read or write accepted (and the advertised maximum block size).
pub const MAX_IO: u32 = 32 << 20;
/// Largest option payload accepted during the handshake.
pub const MAX_OPTION: u32 = 64 << 10;

/// A block device an NBD server exports. Offsets and lengths are bytes;
/// the server only calls the I/O methods with ranges inside the device,
/// aligned to [`BlockDevice::block_size`].
pub trait BlockDevice: Send {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Logical block size in bytes (a power of two, at least 512).
    fn block_size(&self) -> u32;
    /// Writes and trims are refused.
    fn read_only(&self) -> bool;
    /// Trim (discard) is supported.
    fn can_trim(&self) -> bool;
    /// Reads `buf.len()` bytes at `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `data` at `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> io::Result<()>;
    /// Discards `len` bytes at `offset` (advisory).
    fn trim(&mut self, offset: u64, len: u64) -> io::Result<()>;
}

/// A device in memory (for tests and examples).
#[derive(Debug, Clone)]
pub struct MemDevice {
    /// The contents.
    pub data: Vec<u8>,
    /// The block size.
    pub block_size: u32,
    /// Refuse writes.
    pub read_only: bool,
    /// Flushes done.
    pub flushes: u64,
}

impl MemDevice {
    /// A zeroed device of `size` bytes with `block_size`-byte blocks.
    pub fn new(size: usize, block_size: u32) -> MemDevice {
        MemDevice {
            data: vec![0; size],
            block_size,
            read_only: false,
            flushes: 0,
        }
    }

    fn range(&self, offset: u64, len: usize) -> io::Result<std::ops::Range<usize>> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        match start.checked_add(len) {
            Some(end) if end <= self.data.len() => Ok(start..end),
            _ => Err(io::ErrorKind::InvalidInput.into()),
        }
    }
}

impl BlockDevice for MemDevice {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn block_size(&self) -> u32 {
        self.block_size
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn can_trim(&self) -> bool {
        true
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let r = self.range(offset, buf.len())?;
        buf.copy_from_slice(&self.data[r]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.read_only {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        let r = self.range(offset, data.len())?;
        self.data[r].copy_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flushes += 1;
        Ok(())
    }
    fn trim(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if self.read_only {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        let r = self.range(offset, len)?;
        self.data[r].fill(0);
        Ok(())
    }
}

/// Where the server listens: `unix:PATH` or `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// A Unix socket path.
    Unix(PathBuf),
    /// A TCP address (`HOST:PORT`).
    Tcp(String),
}

impl FromStr for Addr {
    type Err = String;
    fn from_str(s: &str) -> Result<Addr, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            return Ok(Addr::Unix(p.into()));
        }
        match s.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(Addr::Tcp(s.into())),
            _ => Err(format!("`{s}` is neither unix:PATH nor HOST:PORT")),
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
            Addr::Tcp(a) => f.write_str(a),
        }
    }
}

enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

/// A byte stream to a client.
trait Conn: Read + Write + Send {
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()>;
}

impl Conn for UnixStream {
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)
    }
}

impl Conn for TcpStream {
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        let _ = self.set_nodelay(true);
        self.set_read_timeout(t)
    }
}

/// How often blocked accepts and reads look at the stop flag.
const TICK: Duration = Duration::from_millis(100);
/// Most clients served at once.
const MAX_CLIENTS: usize = 64;

/// An NBD server exporting one device (see the module docs).
pub struct Server<D: BlockDevice> {
    dev: Arc<Mutex<D>>,
    name: String,
    listener: Listener,
    stop: Arc<AtomicBool>,
}

impl<D: BlockDevice> fmt::Debug for Server<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("name", &self.name).finish()
    }
}

impl<D: BlockDevice + 'static> Server<D> {
    /// Binds `addr` (a stale Unix socket file at the path is replaced; any
    /// other file there is an error) to export `dev` as `name`. The server
    /// stops when `stop` is set.
    pub fn bind(addr: &Addr, name: &str, dev: D, stop: Arc<AtomicBool>) -> io::Result<Self> {
        let listener = match addr {
            Addr::Unix(p) => {
                if let Ok(m) = std::fs::symlink_metadata(p) {
                    if m.file_type().is_socket() {
                        std::fs::remove_file(p)?;
                    } else {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!("{} exists and is not a socket", p.display()),
                        ));
                    }
                }
                let l = UnixListener::bind(p)?;
                l.set_nonblocking(true)?;
                Listener::Unix(l, p.clone())
            }
            Addr::Tcp(a) => {
                let l = TcpListener::bind(a.as_str())?;
                l.set_nonblocking(true)?;
                Listener::Tcp(l)
            }
        };
        Ok(Server {
            dev: Arc::new(Mutex::new(dev)),
            name: name.into(),
            listener,
            stop,
        })
    }

    /// The TCP address actually bound (for port 0), if TCP.
    pub fn local_tcp_addr(&self) -> Option<std::net::SocketAddr> {
        match &self.listener {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }

    /// The shared device.
    pub fn device(&self) -> Arc<Mutex<D>> {
        self.dev.clone()
    }

    /// Serves clients (one thread each) until the stop flag is set, then
    /// waits for the client threads (each notices the flag within a tick)
    /// and removes the Unix socket file.
    pub fn run(self) -> io::Result<()> {
        let live = Arc::new(AtomicUsize::new(0));
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        let mut next = 0u64;
        while !self.stop.load(Ordering::Acquire) {
            let accepted: io::Result<Box<dyn Conn>> = match &self.listener {
                Listener::Unix(l, _) => l.accept().map(|(s, _)| Box::new(s) as Box<dyn Conn>),
                Listener::Tcp(l) => l.accept().map(|(s, _)| Box::new(s) as Box<dyn Conn>),
            };
            let conn = match accepted {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    std::thread::sleep(TICK);
                    continue;
                }
            };
            threads.retain(|t| !t.is_finished());
            if live.load(Ordering::Acquire) >= MAX_CLIENTS {
                tracing::warn!("too many NBD clients; refusing one");
                continue;
            }
            next += 1;
            let id = next;
            let (dev, name, stop, live) = (
                self.dev.clone(),
                self.name.clone(),
                self.stop.clone(),
                live.clone(),
            );
            live.fetch_add(1, Ordering::AcqRel);
            let t = std::thread::Builder::new()
                .name(format!("nbd-{id}"))
                .spawn(move || {
                    tracing::info!(client = id, "NBD client connected");
                    match serve_client(conn, &dev, &name, &stop) {
                        Ok(()) => tracing::info!(client = id, "NBD client done"),
                        Err(e) => tracing::info!(client = id, "NBD client closed: {e}"),
                    }
                    live.fetch_sub(1, Ordering::AcqRel);
                })?;
            threads.push(t);
        }
        for t in threads {
            let _ = t.join();
        }
        if let Listener::Unix(_, p) = &self.listener {
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }
}

/// A stream that retries reads that time out (each tick it checks the stop
/// flag), so partial reads are never lost.
struct Io<'a> {
    conn: Box<dyn Conn>,
    stop: &'a AtomicBool,
}

impl Io<'_> {
    fn read_exact(&mut self, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.conn.read(buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => buf = &mut buf[n..],
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if self.stop.load(Ordering::Acquire) {
                        return Err(io::Error::other("server stopping"));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn u16(&mut self) -> io::Result<u16> {
        let mut b = [0; 2];
        self.read_exact(&mut b)?;
        Ok(u16::from_be_bytes(b))
    }

    fn u32(&mut self) -> io::Result<u32> {
        let mut b = [0; 4];
        self.read_exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> io::Result<u64> {
        let mut b = [0; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        self.conn.write_all(b)
    }

    fn option_reply(&mut self, opt: u32, kind: u32, data: &[u8]) -> io::Result<()> {
        let mut b = Vec::with_capacity(20 + data.len());
        b.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
        b.extend_from_slice(&opt.to_be_bytes());
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.conn.write_all(&b)?;
        self.conn.flush()
    }

    fn simple_reply(&mut self, error: u32, handle: u64, data: &[u8]) -> io::Result<()> {
        let mut b = Vec::with_capacity(16 + data.len());
        b.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
        b.extend_from_slice(&error.to_be_bytes());
        b.extend_from_slice(&handle.to_be_bytes());
        b.extend_from_slice(data);
        self.conn.write_all(&b)?;
        self.conn.flush()
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// What the export looks like.
#[derive(Debug, Clone, Copy)]
struct Export {
    size: u64,
    block: u32,
    flags: u16,
}

fn export_of<D: BlockDevice>(dev: &Mutex<D>) -> Export {
    let d = dev.lock().unwrap_or_else(|e| e.into_inner());
    let mut flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH;
    if d.read_only() {
        flags |= NBD_FLAG_READ_ONLY;
    } else if d.can_trim() {
        flags |= NBD_FLAG_SEND_TRIM;
    }
    Export {
        size: d.size(),
        block: d.block_size().max(512),
        flags,
    }
}

fn serve_client<D: BlockDevice>(
    conn: Box<dyn Conn>,
    dev: &Mutex<D>,
    name: &str,
    stop: &AtomicBool,
) -> io::Result<()> {
    conn.set_timeout(Some(TICK))?;
    let mut io = Io { conn, stop };
    let export = export_of(dev);
    if !handshake(&mut io, name, export)? {
        return Ok(());
    }
    transmission(&mut io, dev, export)
}

/// The option haggling; `Ok(true)` when transmission starts.
fn handshake(io: &mut Io<'_>, name: &str, export: Export) -> io::Result<bool> {
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&NBD_MAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES).to_be_bytes());
    io.write_all(&hello)?;
    let cflags = io.u32()?;
    if cflags & !(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES) != 0 {
        return Err(bad("unknown client flags"));
    }
    let no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES != 0;
    let known = |n: &[u8]| n.is_empty() || n == name.as_bytes();
    loop {
        if io.u64()? != IHAVEOPT {
            return Err(bad("bad option magic"));
        }
        let opt = io.u32()?;
        let len = io.u32()?;
        if len > MAX_OPTION {
            return Err(bad("option too long"));
        }
        let mut data = vec![0u8; len as usize];
        io.read_exact(&mut data)?;
        match opt {
            NBD_OPT_EXPORT_NAME => {
                if !known(&data) {
                    return Err(bad("unknown export name"));
                }
                let mut b = Vec::with_capacity(134);
                b.extend_from_slice(&export.size.to_be_bytes());
                b.extend_from_slice(&export.flags.to_be_bytes());
                if !no_zeroes {
                    b.extend_from_slice(&[0; 124]);
                }
                io.write_all(&b)?;
                return Ok(true);
            }
            NBD_OPT_ABORT => {
                let _ = io.option_reply(opt, NBD_REP_ACK, &[]);
                return Ok(false);
            }
            NBD_OPT_LIST => {
                if !data.is_empty() {
                    io.option_reply(opt, NBD_REP_ERR_INVALID, b"NBD_OPT_LIST takes no data")?;
                    continue;
                }
                let mut b = Vec::with_capacity(4 + name.len());
                b.extend_from_slice(&(name.len() as u32).to_be_bytes());
                b.extend_from_slice(name.as_bytes());
                io.option_reply(opt, NBD_REP_SERVER, &b)?;
                io.option_reply(opt, NBD_REP_ACK, &[])?;
            }
            NBD_OPT_INFO | NBD_OPT_GO => {
                let Some((req_name, infos)) = parse_info_request(&data) else {
                    io.option_reply(opt, NBD_REP_ERR_INVALID, b"malformed request")?;
                    continue;
                };
                if !known(req_name) {
                    io.option_reply(opt, NBD_REP_ERR_UNKNOWN, b"no such export")?;
                    continue;
                }
                let mut b = Vec::with_capacity(12);
                b.extend_from_slice(&NBD_INFO_EXPORT.to_be_bytes());
                b.extend_from_slice(&export.size.to_be_bytes());
                b.extend_from_slice(&export.flags.to_be_bytes());
                io.option_reply(opt, NBD_REP_INFO, &b)?;
                if infos.contains(&NBD_INFO_BLOCK_SIZE) {
                    let mut b = Vec::with_capacity(14);
                    b.extend_from_slice(&NBD_INFO_BLOCK_SIZE.to_be_bytes());
                    b.extend_from_slice(&export.block.to_be_bytes());
                    b.extend_from_slice(&export.block.max(4096).to_be_bytes());
                    b.extend_from_slice(&MAX_IO.to_be_bytes());
                    io.option_reply(opt, NBD_REP_INFO, &b)?;
                }
                io.option_reply(opt, NBD_REP_ACK, &[])?;
                if opt == NBD_OPT_GO {
                    return Ok(true);
                }
            }
            _ => io.option_reply(opt, NBD_REP_ERR_UNSUP, b"unsupported option")?,
        }
    }
}

/// The name and the information types of an `NBD_OPT_INFO`/`GO` payload.
fn parse_info_request(d: &[u8]) -> Option<(&[u8], Vec<u16>)> {
    let nlen = u32::from_be_bytes(d.get(..4)?.try_into().ok()?) as usize;
    let name = d.get(4..4usize.checked_add(nlen)?)?;
    let rest = &d[4 + nlen..];
    let n = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
    let list = rest.get(2..)?;
    if list.len() != n * 2 {
        return None;
    }
    Some((
        name,
        list.chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect(),
    ))
}

fn errno(e: &io::Error) -> u32 {
    match e.kind() {
        io::ErrorKind::InvalidInput => NBD_EINVAL,
        io::ErrorKind::PermissionDenied => NBD_EPERM,
        io::ErrorKind::Unsupported => NBD_ENOTSUP,
        _ => NBD_EIO,
    }
}

/// Checks a read/write/trim range: inside the device, block-aligned.
fn range_ok(export: Export, offset: u64, len: u32) -> bool {
    let b = u64::from(export.block);
    offset.is_multiple_of(b)
        && u64::from(len).is_multiple_of(b)
        && offset
            .checked_add(u64::from(len))
            .is_some_and(|end| end <= export.size)
}

fn transmission<D: BlockDevice>(io: &mut Io<'_>, dev: &Mutex<D>, export: Export) -> io::Result<()> {
    let lock = || dev.lock().unwrap_or_else(|e| e.into_inner());
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let magic = match io.u32() {
            Ok(m) => m,
            // A client may just close instead of sending NBD_CMD_DISC.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        if magic != REQUEST_MAGIC {
            return Err(bad("bad request magic"));
        }
        let flags = io.u16()?;
        let cmd = io.u16()?;
        let handle = io.u64()?;
        let offset = io.u64()?;
        let len = io.u32()?;
        match cmd {
            NBD_CMD_READ => {
                if len > MAX_IO || !range_ok(export, offset, len) {
                    io.simple_reply(NBD_EINVAL, handle, &[])?;
                    continue;
                }
                buf.resize(len as usize, 0);
                let r = if len == 0 {
                    Ok(())
                } else {
                    lock().read_at(offset, &mut buf)
                };
                match r {
                    Ok(()) => io.simple_reply(0, handle, &buf)?,
                    Err(e) => io.simple_reply(errno(&e), handle, &[])?,
                }
            }
            NBD_CMD_WRITE => {
                if len > MAX_IO {
                    // The payload cannot be skipped safely: refuse and close.
                    let _ = io.simple_reply(NBD_EINVAL, handle, &[]);
                    return Err(bad("write longer than the maximum"));
                }
                buf.resize(len as usize, 0);
                io.read_exact(&mut buf)?;
                let r = if export.flags & NBD_FLAG_READ_ONLY != 0 {
                    Err(io::ErrorKind::PermissionDenied.into())
                } else if !range_ok(export, offset, len) {
                    Err(io::ErrorKind::InvalidInput.into())
                } else if len == 0 {
                    Ok(())
                } else {
                    let mut d = lock();
                    d.write_at(offset, &buf).and_then(|()| {
                        if flags & NBD_CMD_FLAG_FUA != 0 {
                            d.flush()
                        } else {
                            Ok(())
                        }
                    })
                };
                io.simple_reply(r.err().map_or(0, |e| errno(&e)), handle, &[])?;
            }
            NBD_CMD_FLUSH => {
                let r = lock().flush();
                io.simple_reply(r.err().map_or(0, |e| errno(&e)), handle, &[])?;
            }
            NBD_CMD_TRIM => {
                let r = if export.flags & NBD_FLAG_READ_ONLY != 0 {
                    Err(io::ErrorKind::PermissionDenied.into())
                } else if export.flags & NBD_FLAG_SEND_TRIM == 0 {
                    Err(io::ErrorKind::Unsupported.into())
                } else if !range_ok(export, offset, len) {
                    Err(io::ErrorKind::InvalidInput.into())
                } else if len == 0 {
                    Ok(())
                } else {
                    lock().trim(offset, u64::from(len))
                };
                io.simple_reply(r.err().map_or(0, |e| errno(&e)), handle, &[])?;
            }
            NBD_CMD_DISC => return Ok(()),
            _ => io.simple_reply(NBD_EINVAL, handle, &[])?,
        }
    }
}

/// Removes a Unix socket path if it is a socket (used by callers that
/// clean up after a server that did not return).
pub fn remove_socket(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

/// Bytes per blkfront I/O issued for one NBD request.
const BLK_CHUNK: usize = 1 << 20;

fn blk_err(e: pvio_blkfront::BlkError) -> io::Error {
    use pvio_blkfront::BlkError;
    let kind = match &e {
        BlkError::Invalid(_) => io::ErrorKind::InvalidInput,
        BlkError::ReadOnly => io::ErrorKind::PermissionDenied,
        BlkError::Unsupported => io::ErrorKind::Unsupported,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

/// The frontend exported as is: bytes to 512-byte sectors, I/O in chunks
/// of at most 1 MiB; a trim is shrunk to whole discard-granularity units
/// (it is advisory).
impl BlockDevice for pvio_blkfront::Blkfront {
    fn size(&self) -> u64 {
        self.info().sectors * pvio_blkfront::SECTOR_SIZE
    }
    fn block_size(&self) -> u32 {
        self.info().sector_size.max(512)
    }
    fn read_only(&self) -> bool {
        self.info().readonly
    }
    fn can_trim(&self) -> bool {
        self.info().discard
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut off = offset;
        for c in buf.chunks_mut(BLK_CHUNK) {
            pvio_blkfront::Blkfront::read_at(self, off / 512, c).map_err(blk_err)?;
            off += c.len() as u64;
        }
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut off = offset;
        for c in data.chunks(BLK_CHUNK) {
            pvio_blkfront::Blkfront::write_at(self, off / 512, c).map_err(blk_err)?;
            off += c.len() as u64;
        }
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        match pvio_blkfront::Blkfront::flush(self) {
            // A device without a cache has nothing to flush.
            Err(pvio_blkfront::BlkError::Unsupported) => Ok(()),
            r => r.map_err(blk_err),
        }
    }
    fn trim(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let g = u64::from(self.info().discard_granularity.max(self.block_size()));
        let start = offset.div_ceil(g) * g;
        let end = (offset + len) / g * g;
        if end <= start {
            return Ok(());
        }
        pvio_blkfront::Blkfront::discard(self, start / 512, (end - start) / 512).map_err(blk_err)
    }
}
