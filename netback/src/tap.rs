//! A TAP device as a vif's [`Port`]: frames go to and from the host kernel
//! with a `virtio_net_hdr`, so checksum offload and TCP GSO pass through
//! in both directions (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`,
//! `TUNSETOFFLOAD` with `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`).
//!
//! A reader thread polls the device and delivers each frame to the
//! attached [`PacketSink`]; frames read while nothing is attached are
//! dropped. The file stays valid if the netdev is moved to another network
//! namespace.

use std::fmt;
use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::{Bytes, BytesMut};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::packet::{self, Gso, GsoKind, Packet, PacketSink, Port};
use crate::sys;

const VNET_HDR_LEN: usize = 10;
const F_NEEDS_CSUM: u8 = 1;
const F_DATA_VALID: u8 = 2;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;

/// How to open a TAP device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapConfig {
    /// Interface name (created if it does not exist).
    pub name: String,
    /// Keep the device after the file closes (`TUNSETPERSIST`).
    pub persistent: bool,
}

/// The offloads every TAP is opened with: checksum, TSO over IPv4 and IPv6.
const OFFLOADS: libc::c_ulong = sys::TUN_F_CSUM | sys::TUN_F_TSO4 | sys::TUN_F_TSO6;

/// Opens (or creates) TAP device `name` exactly as [`TapPort`] opens its
/// own (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, a 10-byte virtio-net
/// header, checksum and TSO offloads), as a plain file with no reader
/// thread: for baselines and tools that write frames themselves.
pub fn open_raw_tap(name: &str) -> io::Result<File> {
    sys::open_tap(name, VNET_HDR_LEN as i32, OFFLOADS, false).map(|(file, _)| file)
}

type SinkSlot = Arc<Mutex<Option<Arc<dyn PacketSink>>>>;

/// A TAP device (see the module docs). Dropping it stops the reader and
/// closes the device (which disappears unless persistent).
pub struct TapPort {
    /// Batched writes (`None` where io_uring is not available: one
    /// `writev` per frame). Before `file`, which it writes to.
    ring: Mutex<Option<sys::TapRing>>,
    file: Arc<File>,
    name: String,
    sink: SinkSlot,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    /// Frames read and dropped (unparsable header, nothing attached, or
    /// refused by the sink).
    pub(crate) rx_dropped: Arc<AtomicU64>,
    tx_errors: AtomicU64,
}

impl fmt::Debug for TapPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TapPort").field("name", &self.name).finish()
    }
}

impl TapPort {
    /// Opens (or creates) TAP device `name`, not persistent.
    pub fn open(name: &str) -> io::Result<TapPort> {
        TapPort::open_with(&TapConfig {
            name: name.into(),
            persistent: false,
        })
    }

    /// Opens a TAP device as `cfg` says.
    pub fn open_with(cfg: &TapConfig) -> io::Result<TapPort> {
        let (file, name) = sys::open_tap(&cfg.name, VNET_HDR_LEN as i32, OFFLOADS, cfg.persistent)?;
        let file = Arc::new(file);
        let sink: SinkSlot = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let rx_dropped = Arc::new(AtomicU64::new(0));
        let reader = {
            let (file, sink, stop, dropped) =
                (file.clone(), sink.clone(), stop.clone(), rx_dropped.clone());
            std::thread::Builder::new()
                .name(format!("tap-{name}"))
                .spawn(move || read_loop(&file, &sink, &stop, &dropped))?
        };
        Ok(TapPort {
            ring: Mutex::new(sys::TapRing::new(&file).ok()),
            file,
            name,
            sink,
            stop,
            reader: Some(reader),
            rx_dropped,
            tx_errors: AtomicU64::new(0),
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Clears the persistent flag, so the device goes when this port does.
    pub fn unpersist(&self) -> io::Result<()> {
        sys::unpersist(&self.file)
    }

    /// Frames read from the device and dropped.
    pub fn rx_dropped(&self) -> u64 {
        self.rx_dropped.load(Ordering::Relaxed)
    }

    /// Frames that could not be written to the device.
    pub fn tx_errors(&self) -> u64 {
        self.tx_errors.load(Ordering::Relaxed)
    }
}

impl Drop for TapPort {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The `virtio_net_hdr` of an outgoing packet, and the frame (with the
/// pseudo-header sum written into a partial checksum).
fn encode(pkt: &Packet) -> Option<([u8; VNET_HDR_LEN], Bytes)> {
    let mut h = [0u8; VNET_HDR_LEN];
    if !(pkt.csum_blank || pkt.gso.is_some()) {
        if pkt.data_validated {
            h[0] = F_DATA_VALID;
        }
        return Some((h, pkt.data.clone()));
    }
    let (start, off) = packet::csum_location(&pkt.data)?;
    let mut d = BytesMut::from(&pkt.data[..]);
    if !packet::set_partial_csum(&mut d) {
        return None;
    }
    h[0] = F_NEEDS_CSUM;
    h[6..8].copy_from_slice(&(start as u16).to_ne_bytes());
    h[8..10].copy_from_slice(&(off as u16).to_ne_bytes());
    if let Some(g) = pkt.gso {
        let doff = usize::from(*d.get(start + 12)? >> 4) * 4;
        h[1] = match g.kind {
            GsoKind::TcpV4 => GSO_TCPV4,
            GsoKind::TcpV6 => GSO_TCPV6,
        };
        h[2..4].copy_from_slice(&((start + doff) as u16).to_ne_bytes());
        h[4..6].copy_from_slice(&g.size.to_ne_bytes());
    }
    Some((h, d.freeze()))
}

/// A frame read from the device.
fn decode(buf: &[u8]) -> Option<Packet> {
    let h = buf.get(..VNET_HDR_LEN)?;
    let data = &buf[VNET_HDR_LEN..];
    let gso_size = u16::from_ne_bytes([h[4], h[5]]);
    let gso = match h[1] & !GSO_ECN {
        GSO_NONE => None,
        GSO_TCPV4 => Some(Gso {
            kind: GsoKind::TcpV4,
            size: gso_size,
        }),
        GSO_TCPV6 => Some(Gso {
            kind: GsoKind::TcpV6,
            size: gso_size,
        }),
        _ => return None, // UDP fragmentation offload was not enabled
    };
    if gso.is_some_and(|g| g.size == 0) {
        return None;
    }
    let csum_blank = h[0] & F_NEEDS_CSUM != 0 || gso.is_some();
    Some(Packet {
        data: Bytes::copy_from_slice(data),
        csum_blank,
        data_validated: csum_blank || h[0] & F_DATA_VALID != 0,
        gso,
    })
}

fn read_loop(file: &File, sink: &SinkSlot, stop: &AtomicBool, dropped: &AtomicU64) {
    let mut buf = vec![0u8; VNET_HDR_LEN + 65_536 + 64];
    let mut f = file;
    while !stop.load(Ordering::Acquire) {
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
        let n = match f.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => break,
        };
        let target = sink.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let delivered = match (decode(&buf[..n]), target) {
            (Some(p), Some(s)) => s.deliver(p),
            _ => false,
        };
        if !delivered {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl TapPort {
    fn tx_error(&self, n: usize) {
        self.tx_errors.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Writes encoded frames, through the ring if there is one (retired on
    /// its own error, never seen: the frames are then lost), else one
    /// `writev` each; returns how many failed.
    fn write_frames(
        &self,
        ring: &mut Option<sys::TapRing>,
        frames: Vec<([u8; VNET_HDR_LEN], Bytes)>,
    ) -> usize {
        let Some(r) = ring.as_mut() else {
            return frames.iter().filter(|(h, d)| !self.write_one(h, d)).count();
        };
        let n = frames.len();
        let failed = match r.write_batch(frames) {
            Ok(bad) => bad,
            Err(_) => {
                *ring = None;
                n
            }
        };
        self.tx_error(failed);
        failed
    }

    /// Writes one encoded frame with `writev`.
    fn write_one(&self, h: &[u8], data: &[u8]) -> bool {
        let mut f = &*self.file;
        let ok = matches!(
            f.write_vectored(&[IoSlice::new(h), IoSlice::new(data)]),
            Ok(n) if n == h.len() + data.len()
        );
        if !ok {
            self.tx_error(1);
        }
        ok
    }
}

impl Port for TapPort {
    fn transmit(&self, pkt: Packet) -> bool {
        let Some((h, data)) = encode(&pkt) else {
            self.tx_error(1);
            return false;
        };
        self.write_one(&h, &data)
    }

    /// Up to 64 frames per system call (io_uring; `sys::TapRing::DEPTH`);
    /// one `writev` each without it.
    fn transmit_batch(&self, pkts: &mut Vec<Packet>) -> usize {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let mut refused = 0;
        let mut frames = Vec::new();
        for p in pkts.drain(..) {
            match encode(&p) {
                Some(f) => frames.push(f),
                None => {
                    self.tx_error(1);
                    refused += 1;
                }
            }
            if frames.len() == sys::TapRing::DEPTH {
                refused += self.write_frames(&mut ring, std::mem::take(&mut frames));
            }
        }
        if !frames.is_empty() {
            refused += self.write_frames(&mut ring, frames);
        }
        refused
    }

    fn attach(&self, sink: Option<Arc<dyn PacketSink>>) {
        *self.sink.lock().unwrap_or_else(|e| e.into_inner()) = sink;
    }
}
