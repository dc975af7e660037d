//! The NBD server against an in-memory device, with a hand-written client:
//! the handshake (list, info, go, export name, abort, unknown options and
//! names), read/write/flush/trim, and hostile inputs (bad magics, huge
//! lengths, out-of-range and unaligned requests, garbage), after each of
//! which the server still serves new clients.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pvio::nbd::*;

const SIZE: usize = 1 << 20;

struct Running {
    _dir: tempfile::TempDir,
    sock: PathBuf,
    stop: Arc<AtomicBool>,
    dev: Arc<Mutex<MemDevice>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    fn start(dev: MemDevice) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("nbd.sock");
        let stop = Arc::new(AtomicBool::new(false));
        let server = Server::bind(&Addr::Unix(sock.clone()), "pvio", dev, stop.clone()).unwrap();
        let dev = server.device();
        let thread = Some(std::thread::spawn(move || server.run()));
        Running {
            _dir: dir,
            sock,
            stop,
            dev,
            thread,
        }
    }

    fn client(&self) -> Client {
        Client::connect(&self.sock)
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        self.thread.take().unwrap().join().unwrap().unwrap();
        assert!(!self.sock.exists(), "the socket file is removed");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Client {
    s: UnixStream,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes(b[..2].try_into().unwrap())
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}
fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

impl Client {
    fn connect(p: &Path) -> Client {
        let s = UnixStream::connect(p).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Client { s };
        let hello = c.read(18);
        assert_eq!(be64(&hello), NBD_MAGIC);
        assert_eq!(be64(&hello[8..]), IHAVEOPT);
        assert_eq!(
            be16(&hello[16..]),
            NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES
        );
        c
    }

    fn read(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0; n];
        self.s.read_exact(&mut b).unwrap();
        b
    }

    fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// A hostile client's write: the server may already have hung up on
    /// an earlier part of the garbage (EPIPE/ECONNRESET), which is the
    /// outcome the test wants; `closed` checks it.
    fn send_lossy(&mut self, b: &[u8]) {
        let _ = self.s.write_all(b);
    }

    /// The server closed the connection (EOF or reset).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 64];
        loop {
            match self.s.read(&mut b) {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue, // drain any reply sent before closing
            }
        }
    }

    fn flags(&mut self, f: u32) {
        self.send(&f.to_be_bytes());
    }

    fn option(&mut self, opt: u32, data: &[u8]) {
        let mut b = IHAVEOPT.to_be_bytes().to_vec();
        b.extend_from_slice(&opt.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.send(&b);
    }

    /// (option, reply type, data)
    fn option_reply(&mut self) -> (u32, u32, Vec<u8>) {
        let h = self.read(20);
        assert_eq!(be64(&h), REPLY_MAGIC);
        let len = be32(&h[16..]) as usize;
        (be32(&h[8..]), be32(&h[12..]), self.read(len))
    }

    fn info_request(name: &str, infos: &[u16]) -> Vec<u8> {
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&(infos.len() as u16).to_be_bytes());
        for i in infos {
            d.extend_from_slice(&i.to_be_bytes());
        }
        d
    }

    /// Fixed newstyle with no zeroes, then NBD_OPT_GO on `name`; returns
    /// (size, flags).
    fn go(p: &Path, name: &str) -> (Client, u64, u16) {
        let mut c = Client::connect(p);
        c.flags(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
        c.option(NBD_OPT_GO, &Client::info_request(name, &[]));
        let (opt, kind, d) = c.option_reply();
        assert_eq!((opt, kind), (NBD_OPT_GO, NBD_REP_INFO));
        assert_eq!(be16(&d), NBD_INFO_EXPORT);
        let (size, flags) = (be64(&d[2..]), be16(&d[10..]));
        assert_eq!(c.option_reply(), (NBD_OPT_GO, NBD_REP_ACK, vec![]));
        (c, size, flags)
    }

    fn request(&mut self, cmd: u16, flags: u16, handle: u64, offset: u64, len: u32) {
        let mut b = REQUEST_MAGIC.to_be_bytes().to_vec();
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&cmd.to_be_bytes());
        b.extend_from_slice(&handle.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        self.send(&b);
    }

    /// (error, handle)
    fn reply(&mut self) -> (u32, u64) {
        let h = self.read(16);
        assert_eq!(be32(&h), SIMPLE_REPLY_MAGIC);
        (be32(&h[4..]), be64(&h[8..]))
    }

    fn read_at(&mut self, handle: u64, offset: u64, len: u32) -> Result<Vec<u8>, u32> {
        self.request(NBD_CMD_READ, 0, handle, offset, len);
        let (err, h) = self.reply();
        assert_eq!(h, handle);
        if err != 0 {
            return Err(err);
        }
        Ok(self.read(len as usize))
    }

    fn write_at(&mut self, handle: u64, offset: u64, data: &[u8]) -> u32 {
        self.request(NBD_CMD_WRITE, 0, handle, offset, data.len() as u32);
        self.send(data);
        let (err, h) = self.reply();
        assert_eq!(h, handle);
        err
    }

    fn simple(&mut self, cmd: u16, handle: u64, offset: u64, len: u32) -> u32 {
        self.request(cmd, 0, handle, offset, len);
        let (err, h) = self.reply();
        assert_eq!(h, handle);
        err
    }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A healthy client still gets served.
fn still_serves(r: &Running) {
    let (mut c, size, _) = Client::go(&r.sock, "pvio");
    assert_eq!(size, SIZE as u64);
    c.read_at(1, 0, 512).unwrap();
    c.request(NBD_CMD_DISC, 0, 2, 0, 0);
    assert!(c.closed());
}

#[test]
fn handshake_options() {
    let r = Running::start(MemDevice::new(SIZE, 512));
    let mut c = r.client();
    c.flags(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);

    // LIST: one server reply with the name, then ACK.
    c.option(NBD_OPT_LIST, &[]);
    let (opt, kind, d) = c.option_reply();
    assert_eq!((opt, kind), (NBD_OPT_LIST, NBD_REP_SERVER));
    assert_eq!(be32(&d) as usize, 4);
    assert_eq!(&d[4..], b"pvio");
    assert_eq!(c.option_reply(), (NBD_OPT_LIST, NBD_REP_ACK, vec![]));
    // LIST with data is invalid.
    c.option(NBD_OPT_LIST, b"x");
    assert_eq!(c.option_reply().1, NBD_REP_ERR_INVALID);

    // INFO with the block size: export info, block size, ACK.
    c.option(
        NBD_OPT_INFO,
        &Client::info_request("pvio", &[NBD_INFO_BLOCK_SIZE]),
    );
    let (_, kind, d) = c.option_reply();
    assert_eq!(kind, NBD_REP_INFO);
    assert_eq!(be16(&d), NBD_INFO_EXPORT);
    assert_eq!(be64(&d[2..]), SIZE as u64);
    let flags = be16(&d[10..]);
    assert_eq!(
        flags,
        NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_TRIM
    );
    let (_, kind, d) = c.option_reply();
    assert_eq!(kind, NBD_REP_INFO);
    assert_eq!(be16(&d), NBD_INFO_BLOCK_SIZE);
    assert_eq!(
        (be32(&d[2..]), be32(&d[6..]), be32(&d[10..])),
        (512, 4096, MAX_IO)
    );
    assert_eq!(c.option_reply(), (NBD_OPT_INFO, NBD_REP_ACK, vec![]));

    // Unknown name, malformed request, unknown option: errors, go on.
    c.option(NBD_OPT_INFO, &Client::info_request("nope", &[]));
    assert_eq!(c.option_reply().1, NBD_REP_ERR_UNKNOWN);
    c.option(NBD_OPT_GO, &[0, 0, 0, 200, b'a']);
    assert_eq!(c.option_reply().1, NBD_REP_ERR_INVALID);
    c.option(NBD_OPT_GO, &[0xff, 0xff, 0xff, 0xff]);
    assert_eq!(c.option_reply().1, NBD_REP_ERR_INVALID);
    c.option(99, b"whatever");
    assert_eq!(
        c.option_reply(),
        (99, NBD_REP_ERR_UNSUP, b"unsupported option".to_vec())
    );
    c.option(5 /* STARTTLS */, &[]);
    assert_eq!(c.option_reply().1, NBD_REP_ERR_UNSUP);

    // ABORT: ACK, then the server closes.
    c.option(NBD_OPT_ABORT, &[]);
    assert_eq!(c.option_reply(), (NBD_OPT_ABORT, NBD_REP_ACK, vec![]));
    assert!(c.closed());

    // EXPORT_NAME (old-style answer), with the 124 zero bytes.
    let mut c = r.client();
    c.flags(NBD_FLAG_C_FIXED_NEWSTYLE);
    c.option(NBD_OPT_EXPORT_NAME, b"pvio");
    let d = c.read(8 + 2 + 124);
    assert_eq!(be64(&d), SIZE as u64);
    assert_eq!(be16(&d[8..]), flags);
    assert!(d[10..].iter().all(|&b| b == 0));
    assert_eq!(c.read_at(7, 0, 4096).unwrap(), vec![0; 4096]);

    // EXPORT_NAME of an unknown export: closed.
    let mut c = r.client();
    c.flags(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    c.option(NBD_OPT_EXPORT_NAME, b"other");
    assert!(c.closed());

    // GO on the default (empty) name.
    let (_c, size, _) = Client::go(&r.sock, "");
    assert_eq!(size, SIZE as u64);
    r.stop();
}

#[test]
fn read_write_flush_trim() {
    let r = Running::start(MemDevice::new(SIZE, 512));
    let (mut c, _, flags) = Client::go(&r.sock, "pvio");
    assert_ne!(flags & NBD_FLAG_SEND_TRIM, 0);
    let a = pattern(8192, 1);
    assert_eq!(c.write_at(1, 4096, &a), 0);
    assert_eq!(c.read_at(2, 4096, 8192).unwrap(), a);
    assert_eq!(c.read_at(3, 4096 + 512, 1024).unwrap(), &a[512..1536]);
    // The last block of the device.
    let z = pattern(512, 9);
    assert_eq!(c.write_at(4, SIZE as u64 - 512, &z), 0);
    assert_eq!(c.read_at(5, SIZE as u64 - 512, 512).unwrap(), z);
    // FUA write.
    c.request(NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 6, 0, 512);
    c.send(&z);
    assert_eq!(c.reply(), (0, 6));
    assert_eq!(c.simple(NBD_CMD_FLUSH, 7, 0, 0), 0);
    assert_eq!(r.dev.lock().unwrap().flushes, 2);
    // TRIM zeroes (this device does).
    assert_eq!(c.simple(NBD_CMD_TRIM, 8, 4096, 4096), 0);
    assert_eq!(c.read_at(9, 4096, 4096).unwrap(), vec![0; 4096]);
    assert_eq!(c.read_at(10, 8192, 4096).unwrap(), &a[4096..]);
    assert_eq!(&r.dev.lock().unwrap().data[8192..12288], &a[4096..]);
    // Zero-length requests are no-ops.
    assert_eq!(c.read_at(11, 0, 0).unwrap(), Vec::<u8>::new());
    assert_eq!(c.write_at(12, 0, &[]), 0);
    c.request(NBD_CMD_DISC, 0, 13, 0, 0);
    assert!(c.closed());
    r.stop();
}

#[test]
fn out_of_range_and_unaligned_requests_are_einval() {
    let r = Running::start(MemDevice::new(SIZE, 512));
    let (mut c, _, _) = Client::go(&r.sock, "pvio");
    let end = SIZE as u64;
    assert_eq!(c.read_at(1, end, 512), Err(NBD_EINVAL));
    assert_eq!(c.read_at(2, end - 512, 1024), Err(NBD_EINVAL));
    assert_eq!(c.read_at(3, u64::MAX - 511, 512), Err(NBD_EINVAL));
    assert_eq!(c.read_at(4, 100, 512), Err(NBD_EINVAL));
    assert_eq!(c.read_at(5, 0, 100), Err(NBD_EINVAL));
    // A huge read is refused without allocating it.
    assert_eq!(c.read_at(6, 0, u32::MAX), Err(NBD_EINVAL));
    assert_eq!(c.read_at(7, 0, MAX_IO + 512), Err(NBD_EINVAL));
    // Writes: the payload is consumed, then EINVAL.
    assert_eq!(c.write_at(8, end, &[1; 512]), NBD_EINVAL);
    assert_eq!(c.write_at(9, 3, &[1; 512]), NBD_EINVAL);
    assert_eq!(c.write_at(10, 0, &[1; 100]), NBD_EINVAL);
    assert_eq!(c.simple(NBD_CMD_TRIM, 11, end - 512, 1024), NBD_EINVAL);
    assert_eq!(c.simple(NBD_CMD_TRIM, 12, 1, 512), NBD_EINVAL);
    // Unknown commands.
    assert_eq!(c.simple(7, 13, 0, 0), NBD_EINVAL);
    assert_eq!(c.simple(0xffff, 14, 0, 0), NBD_EINVAL);
    // Nothing was written; the connection still works.
    assert!(r.dev.lock().unwrap().data.iter().all(|&b| b == 0));
    assert_eq!(c.read_at(15, 0, 512).unwrap(), vec![0; 512]);
    r.stop();
}

#[test]
fn read_only_device() {
    let mut dev = MemDevice::new(SIZE, 4096);
    dev.read_only = true;
    dev.data[..4096].copy_from_slice(&pattern(4096, 3));
    let r = Running::start(dev);
    let (mut c, _, flags) = Client::go(&r.sock, "pvio");
    assert_ne!(flags & NBD_FLAG_READ_ONLY, 0);
    assert_eq!(flags & NBD_FLAG_SEND_TRIM, 0);
    assert_eq!(c.write_at(1, 0, &[7; 4096]), NBD_EPERM);
    assert_ne!(c.simple(NBD_CMD_TRIM, 2, 0, 4096), 0);
    // 4096-byte blocks: 512-byte requests are unaligned.
    assert_eq!(c.read_at(3, 512, 512), Err(NBD_EINVAL));
    assert_eq!(c.read_at(4, 0, 4096).unwrap(), pattern(4096, 3));
    r.stop();
}

#[test]
fn hostile_clients_are_disconnected_and_the_server_goes_on() {
    let r = Running::start(MemDevice::new(SIZE, 512));

    // Unknown client flags.
    let mut c = r.client();
    c.flags(0xffff_0000);
    assert!(c.closed());
    still_serves(&r);

    // Bad option magic.
    let mut c = r.client();
    c.flags(NBD_FLAG_C_FIXED_NEWSTYLE);
    c.send_lossy(&[0x55; 16]);
    assert!(c.closed());
    still_serves(&r);

    // A huge option length.
    let mut c = r.client();
    c.flags(NBD_FLAG_C_FIXED_NEWSTYLE);
    let mut b = IHAVEOPT.to_be_bytes().to_vec();
    b.extend_from_slice(&NBD_OPT_GO.to_be_bytes());
    b.extend_from_slice(&u32::MAX.to_be_bytes());
    c.send_lossy(&b);
    assert!(c.closed());
    still_serves(&r);

    // Bad request magic.
    let (mut c, _, _) = Client::go(&r.sock, "pvio");
    c.send_lossy(&[0xde, 0xad, 0xbe, 0xef]);
    c.send_lossy(&[0; 24]);
    assert!(c.closed());
    still_serves(&r);

    // A huge write: EINVAL, then closed (its payload cannot be skipped).
    let (mut c, _, _) = Client::go(&r.sock, "pvio");
    c.request(NBD_CMD_WRITE, 0, 1, 0, u32::MAX);
    assert_eq!(c.reply(), (NBD_EINVAL, 1));
    assert!(c.closed());
    still_serves(&r);

    // Garbage after the handshake, and a client that vanishes mid-request.
    let (mut c, _, _) = Client::go(&r.sock, "pvio");
    let mut x = 0x1234_5678_9abc_def1u64;
    let junk: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    c.send_lossy(&junk);
    assert!(c.closed());
    let (mut c, _, _) = Client::go(&r.sock, "pvio");
    c.request(NBD_CMD_WRITE, 0, 1, 0, 4096);
    c.send_lossy(&[1; 100]);
    drop(c);
    // A client that goes away during the handshake.
    let c = r.client();
    drop(c);
    still_serves(&r);
    assert!(r.dev.lock().unwrap().data.iter().all(|&b| b == 0));
    r.stop();
}

#[test]
fn addresses_parse() {
    assert_eq!(
        "unix:/tmp/x.sock".parse::<Addr>(),
        Ok(Addr::Unix("/tmp/x.sock".into()))
    );
    assert_eq!(
        "127.0.0.1:10809".parse::<Addr>(),
        Ok(Addr::Tcp("127.0.0.1:10809".into()))
    );
    assert_eq!(
        "[::1]:10809".parse::<Addr>(),
        Ok(Addr::Tcp("[::1]:10809".into()))
    );
    assert!("unix:".parse::<Addr>().is_err());
    assert!("nonsense".parse::<Addr>().is_err());
    assert!("host:99999".parse::<Addr>().is_err());
}

#[test]
fn tcp_listener() {
    let stop = Arc::new(AtomicBool::new(false));
    let server = Server::bind(
        &Addr::Tcp("127.0.0.1:0".into()),
        "pvio",
        MemDevice::new(SIZE, 512),
        stop.clone(),
    )
    .unwrap();
    let addr = server.local_tcp_addr().unwrap();
    let t = std::thread::spawn(move || server.run());
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut hello = [0u8; 18];
    s.read_exact(&mut hello).unwrap();
    assert_eq!(be64(&hello), NBD_MAGIC);
    drop(s);
    stop.store(true, Ordering::Release);
    t.join().unwrap().unwrap();
}
