//! `pvio demo`: one process, the in-tree hypervisor, dom0, a backend
//! domain and a frontend domain. The frontend gets
//!
//! * a vbd on a disk image (by default a sparse temporary file in
//!   `$TMPDIR`, served by blkback with `UringDisk`), on which it runs random
//!   4 KiB writes and then random 4 KiB reads at queue depth 32, every read
//!   checked, and sequential 1 MiB reads at queue depth 8, every block
//!   checked: a block written by the demo must hold its pattern, any other
//!   block what the image file holds (read directly from the host);
//! * two vifs on netback's in-process [`Switch`]: vif 0 sends numbered
//!   frames of 64 and 1500 bytes to vif 1, which checks every byte (and
//!   counts the frames lost, reordered or corrupted). With `--tap NAME` vif
//!   0 is plugged into the TAP device instead and only sends (frames of a
//!   local experimental ethertype to a locally administered address, which
//!   the host kernel drops); nothing is received or checked.
//!
//! With `--image FILE` an existing image is used; it is opened read-only
//! and only read (random and sequential reads, checked against the file)
//! unless `--allow-writes` is given, when the random writes overwrite
//! blocks of its first GiB.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use pvio_blkback::BlkbackConfig;
use pvio_blkdisk::{FileOptions, UringDisk};
use pvio_blkfront::{BlkError, Blkfront, BlkfrontConfig, BlockIo, BlockOp};
use pvio_netback::{NetbackConfig, Port, Switch, TapPort};
use pvio_netfront::{Netfront, NetfrontConfig, Packet};

use crate::Error;
use crate::embedded::Embedded;

/// What the demo does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// An existing image instead of a temporary one.
    pub image: Option<PathBuf>,
    /// Write to the existing image.
    pub allow_writes: bool,
    /// Plug vif 0 into this TAP device instead of the switch.
    pub tap: Option<String>,
    /// Size of the temporary image in bytes.
    pub size: u64,
    /// Total time of the workloads.
    pub duration: Duration,
    /// Queues of the vbd and the vifs.
    pub queues: u32,
    /// Show progress bars (on a terminal).
    pub progress: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            image: None,
            allow_writes: false,
            tap: None,
            size: 64 << 20,
            duration: Duration::from_secs(3),
            queues: 1,
            progress: true,
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What ran.
    pub name: String,
    /// Operations (I/Os or frames received).
    pub ops: u64,
    /// Seconds it ran.
    pub secs: f64,
    /// Bytes moved.
    pub bytes: u64,
    /// Block row (IOPS, MiB/s) or network row (frames/s, Gbit/s).
    pub net: bool,
    /// The verification: `None` when nothing was checked, else the
    /// mismatches and what was checked.
    pub verify: Option<(u64, String)>,
}

/// The demo's figures.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One row per workload.
    pub rows: Vec<Row>,
    /// Notes printed under the table.
    pub notes: Vec<String>,
}

impl Report {
    /// Every check passed (and at least one thing was checked).
    pub fn verify_ok(&self) -> bool {
        let checked: Vec<_> = self.rows.iter().filter_map(|r| r.verify.as_ref()).collect();
        !checked.is_empty() && checked.iter().all(|(bad, _)| *bad == 0)
    }

    /// The table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<38} {:>10} {:>16} {:>14}  verify",
            "workload", "ops", "rate", "throughput"
        );
        let _ = writeln!(s, "{}", "-".repeat(96));
        for r in &self.rows {
            let secs = r.secs.max(1e-9);
            let (rate, tput) = if r.net {
                (
                    format!("{:.0} frames/s", r.ops as f64 / secs),
                    format!("{:.2} Gbit/s", r.bytes as f64 * 8.0 / secs / 1e9),
                )
            } else {
                (
                    format!("{:.0} IOPS", r.ops as f64 / secs),
                    format!("{:.1} MiB/s", r.bytes as f64 / secs / (1 << 20) as f64),
                )
            };
            let v = match &r.verify {
                None => "-".to_string(),
                Some((0, what)) => format!("OK ({what})"),
                Some((bad, what)) => format!("FAILED: {bad} bad ({what})"),
            };
            let _ = writeln!(
                s,
                "{:<38} {:>10} {:>16} {:>14}  {v}",
                r.name, r.ops, rate, tput
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        let _ = writeln!(
            s,
            "{}",
            if self.verify_ok() {
                "verify OK"
            } else {
                "verify FAILED"
            }
        );
        s
    }
}

/// A small deterministic generator (xorshift64*).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The pattern of generation `gen` of 4 KiB block `block`.
fn fill(buf: &mut [u8], block: u64, generation: u32) {
    let mut r = Rng((block << 32 | u64::from(generation)) ^ 0x9e37_79b9_7f4a_7c15 | 1);
    for c in buf.chunks_mut(8) {
        let v = r.next().to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
}

const BLOCK: usize = 4096;
const SEQ: usize = 1 << 20;
const QD: usize = 32;
const SEQ_QD: usize = 8;
/// Random I/O stays in the first GiB (the model is 4 bytes per block).
const REGION: u64 = 1 << 30;

fn bar(show: bool, what: &str, d: Duration) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(d.as_millis() as u64);
    if let Ok(style) = ProgressStyle::with_template("{msg:<38} [{bar:30}] {elapsed_precise}")
        .map(|s| s.progress_chars("=> "))
    {
        pb.set_style(style);
    }
    pb.set_message(what.to_string());
    pb
}

/// Runs the demo and returns its figures.
pub fn run(opts: &DemoOptions) -> Result<Report, Error> {
    let mut report = Report::default();
    let emb = Embedded::new()?;
    tracing::info!("hypervisor up: dom0, backend dom1, frontend dom2");

    // ------------------------------------------------------------ the vbd
    let (_tmp, path, writable, temp) = match &opts.image {
        Some(p) => (None, p.clone(), opts.allow_writes, false),
        None => {
            let t = tempfile::Builder::new()
                .prefix("pvio-demo-")
                .suffix(".img")
                .tempfile()?;
            let size = opts.size.max(1 << 20) / BLOCK as u64 * BLOCK as u64;
            t.as_file().set_len(size)?;
            let p = t.path().to_path_buf();
            (Some(t), p, true, true)
        }
    };
    let disk = UringDisk::open(
        &path,
        FileOptions {
            readonly: !writable,
            ..FileOptions::default()
        },
    )?;
    let host = File::open(&path)?;
    let (bb, mut bf) = emb.vbd(
        51712,
        Arc::new(disk),
        BlkbackConfig {
            max_queues: opts.queues.max(1),
            ..BlkbackConfig::default()
        },
        BlkfrontConfig {
            queues: opts.queues.max(1),
            ..BlkfrontConfig::default()
        },
    )?;
    let info = bf.info();
    tracing::info!(?info, "vbd connected");
    report.notes.push(format!(
        "vbd: {} ({} MiB{}), {} queue(s), persistent grants {}, indirect segments {}",
        if temp {
            "temporary sparse image".to_string()
        } else {
            path.display().to_string()
        },
        (info.sectors * 512) >> 20,
        if writable { "" } else { ", read-only" },
        info.queues,
        if info.persistent { "on" } else { "off" },
        info.max_indirect_segments,
    ));

    let d = opts.duration;
    let mut blk = BlockRun {
        bf: &mut bf,
        host: &host,
        model: vec![0; ((info.sectors * 512).min(REGION) / BLOCK as u64) as usize],
        next_gen: 1,
        rng: Rng(0x005e_ed0f_b10c),
        progress: opts.progress,
    };
    if blk.model.is_empty() {
        return Err("the image is smaller than 4 KiB".into());
    }
    if writable {
        report.rows.push(blk.random(true, d.mul_f64(0.2))?);
        report.rows.push(blk.random(false, d.mul_f64(0.2))?);
    } else {
        report.rows.push(blk.random(false, d.mul_f64(0.4))?);
    }
    report.rows.push(blk.sequential(d.mul_f64(0.2))?);
    bf.close();
    bb.stop();

    // ----------------------------------------------------------- the vifs
    let mac_a = [0x02, 0x70, 0x76, 0x69, 0x6f, 0x00];
    let mac_b = [0x02, 0x70, 0x76, 0x69, 0x6f, 0x01];
    let nfc = NetfrontConfig {
        queues: opts.queues.max(1),
        ..NetfrontConfig::default()
    };
    let nbc = NetbackConfig {
        max_queues: opts.queues.max(1),
        ..NetbackConfig::default()
    };
    if let Some(tap_name) = &opts.tap {
        let tap = Arc::new(TapPort::open(tap_name)?);
        let (nb, nf) = emb.vif(0, mac_a, tap.clone() as Arc<dyn Port>, nbc, nfc)?;
        report.notes.push(format!(
            "vif0 on TAP {}: frames only sent (to {}, ethertype 0x88b5), not received or checked",
            tap.name(),
            crate::embedded::mac_str(TAP_DST)
        ));
        let mut nf = nf;
        for (size, share) in [(64, 0.2), (1500, 0.2)] {
            report.rows.push(send_only(
                &mut nf,
                mac_a,
                size,
                d.mul_f64(share),
                opts.progress,
            )?);
        }
        let st = nb.stats();
        report.notes.push(format!(
            "TAP: netback passed {} frames, {} dropped by the port (is {} up?)",
            st.tx_packets,
            st.tx_port_dropped,
            tap.name()
        ));
        nf.close();
        nb.stop();
    } else {
        let switch = Switch::new();
        let (nb_a, nf_a) = emb.vif(0, mac_a, Arc::new(switch.port()), nbc, nfc)?;
        let (nb_b, nf_b) = emb.vif(1, mac_b, Arc::new(switch.port()), nbc, nfc)?;
        let (mut nf_a, mut nf_b) = (nf_a, nf_b);
        for (size, share) in [(64, 0.2), (1500, 0.2)] {
            report.rows.push(exchange(
                &mut nf_a,
                &mut nf_b,
                size,
                d.mul_f64(share),
                opts.progress,
            )?);
        }
        nf_a.close();
        nf_b.close();
        nb_a.stop();
        nb_b.stop();
    }
    Ok(report)
}

struct BlockRun<'a> {
    bf: &'a mut Blkfront,
    host: &'a File,
    /// Generation written to each 4 KiB block of the region (0: not
    /// written by the demo).
    model: Vec<u32>,
    next_gen: u32,
    rng: Rng,
    progress: bool,
}

fn io_err(e: BlkError) -> Error {
    format!("block I/O: {e}").into()
}

impl BlockRun<'_> {
    /// Checks `data` read at byte `offset`; returns the mismatching 4 KiB
    /// blocks.
    fn check(&self, offset: u64, data: &[u8]) -> Result<u64, Error> {
        let mut bad = 0;
        let mut want = vec![0u8; BLOCK];
        for (i, got) in data.chunks(BLOCK).enumerate() {
            let off = offset + (i * BLOCK) as u64;
            let b = off / BLOCK as u64;
            match self.model.get(b as usize) {
                Some(&g) if g > 0 => fill(&mut want[..got.len()], b, g),
                _ => self.host.read_exact_at(&mut want[..got.len()], off)?,
            }
            if want[..got.len()] != *got {
                bad += 1;
            }
        }
        Ok(bad)
    }

    /// Random 4 KiB writes (`write`) or reads at QD32 for `d`.
    fn random(&mut self, write: bool, d: Duration) -> Result<Row, Error> {
        let name = if write {
            "block random 4 KiB write, QD32"
        } else {
            "block random 4 KiB read, QD32"
        };
        let pb = bar(self.progress, name, d);
        let blocks = self.model.len() as u64;
        // Reads go to written blocks when there are some.
        let written: Vec<u64> = (0..blocks)
            .filter(|&b| self.model[b as usize] > 0)
            .collect();
        let mut in_flight: HashMap<u64, (u64, u32)> = HashMap::new();
        let mut busy: HashSet<u64> = HashSet::new();
        let mut spare: Vec<Vec<u8>> = (0..QD).map(|_| vec![0u8; BLOCK]).collect();
        let (mut ops, mut bad, mut tag) = (0u64, 0u64, 0u64);
        let mut done = Vec::new();
        let start = Instant::now();
        loop {
            let running = start.elapsed() < d;
            while running && in_flight.len() < QD.min(blocks as usize) {
                let b = loop {
                    let b = if !write && !written.is_empty() {
                        written[self.rng.below(written.len() as u64) as usize]
                    } else {
                        self.rng.below(blocks)
                    };
                    if !busy.contains(&b) {
                        break b;
                    }
                };
                let mut data = spare.pop().unwrap_or_else(|| vec![0u8; BLOCK]);
                let generation = if write {
                    let g = self.next_gen;
                    self.next_gen = self.next_gen.wrapping_add(1).max(1);
                    fill(&mut data, b, g);
                    g
                } else {
                    0
                };
                tag += 1;
                let io = BlockIo {
                    tag,
                    op: if write { BlockOp::Write } else { BlockOp::Read },
                    sector: b * (BLOCK as u64 / 512),
                    data,
                };
                self.bf.submit(io).map_err(|(e, _)| io_err(e))?;
                in_flight.insert(tag, (b, generation));
                busy.insert(b);
            }
            if in_flight.is_empty() {
                break;
            }
            done.clear();
            self.bf.wait(1, Duration::from_secs(30), &mut done);
            if done.is_empty() {
                return Err("block I/O: no completion within 30 s".into());
            }
            for c in done.drain(..) {
                let Some((b, g)) = in_flight.remove(&c.tag) else {
                    continue;
                };
                busy.remove(&b);
                c.result.map_err(io_err)?;
                if write {
                    self.model[b as usize] = g;
                } else {
                    bad += self.check(b * BLOCK as u64, &c.data)?;
                }
                ops += 1;
                spare.push(c.data);
            }
            pb.set_position(start.elapsed().as_millis() as u64);
        }
        let secs = start.elapsed().as_secs_f64();
        pb.finish_and_clear();
        Ok(Row {
            name: name.into(),
            ops,
            secs,
            bytes: ops * BLOCK as u64,
            net: false,
            verify: (!write).then(|| (bad, format!("{ops} blocks checked"))),
        })
    }

    /// Sequential 1 MiB reads at QD8 for `d` (wrapping at the end).
    fn sequential(&mut self, d: Duration) -> Result<Row, Error> {
        let name = "block sequential 1 MiB read, QD8";
        let pb = bar(self.progress, name, d);
        let size = self.bf.info().sectors * 512;
        let mut next = 0u64;
        let mut in_flight: HashMap<u64, u64> = HashMap::new();
        let (mut ops, mut bytes, mut bad, mut checked, mut tag) = (0u64, 0u64, 0u64, 0u64, 0u64);
        let mut spare: Vec<Vec<u8>> = Vec::new();
        let mut done = Vec::new();
        let start = Instant::now();
        loop {
            let running = start.elapsed() < d;
            while running && in_flight.len() < SEQ_QD {
                if next >= size {
                    next = 0;
                }
                let len = (size - next).min(SEQ as u64) as usize;
                let mut data = spare.pop().unwrap_or_default();
                data.resize(len, 0);
                tag += 1;
                self.bf
                    .submit(BlockIo {
                        tag,
                        op: BlockOp::Read,
                        sector: next / 512,
                        data,
                    })
                    .map_err(|(e, _)| io_err(e))?;
                in_flight.insert(tag, next);
                next += len as u64;
            }
            if in_flight.is_empty() {
                break;
            }
            done.clear();
            self.bf.wait(1, Duration::from_secs(30), &mut done);
            if done.is_empty() {
                return Err("block I/O: no completion within 30 s".into());
            }
            for c in done.drain(..) {
                let Some(off) = in_flight.remove(&c.tag) else {
                    continue;
                };
                c.result.map_err(io_err)?;
                bad += self.check(off, &c.data)?;
                checked += c.data.len().div_ceil(BLOCK) as u64;
                ops += 1;
                bytes += c.data.len() as u64;
                spare.push(c.data);
            }
            pb.set_position(start.elapsed().as_millis() as u64);
        }
        let secs = start.elapsed().as_secs_f64();
        pb.finish_and_clear();
        Ok(Row {
            name: name.into(),
            ops,
            secs,
            bytes,
            net: false,
            verify: Some((bad, format!("{checked} blocks checked"))),
        })
    }
}

/// The local experimental ethertype of the demo's frames.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
/// Where frames sent to a TAP go (locally administered, nobody).
const TAP_DST: [u8; 6] = [0x02, 0x70, 0x76, 0x69, 0x6f, 0xfe];
/// Frames the sender may be ahead of the receiver (below what the
/// receiver's rings and netback's queue hold, so the switch drops none).
const WINDOW: u64 = 192;
/// Frames per send batch.
const SEND_BATCH: usize = 32;

/// Random bytes the frames' payloads are cut from.
fn payload_pool() -> Arc<Vec<u8>> {
    let mut v = vec![0u8; 8192];
    fill(&mut v, u64::MAX >> 8, 7);
    Arc::new(v)
}

/// Frame `seq` of `size` bytes: dst, src, ethertype, the sequence number,
/// then bytes of the pool at an offset that depends on `seq`.
fn frame(pool: &[u8], dst: [u8; 6], src: [u8; 6], seq: u64, size: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&dst);
    out.extend_from_slice(&src);
    out.extend_from_slice(&ETHERTYPE);
    out.extend_from_slice(&seq.to_be_bytes());
    let off = (seq.wrapping_mul(7919) % 4096) as usize;
    let rest = size - out.len();
    out.extend_from_slice(&pool[off..off + rest]);
}

/// vif 0 sends numbered frames of `size` bytes to vif 1 for `d`; vif 1
/// receives and checks them.
fn exchange(
    a: &mut Netfront,
    b: &mut Netfront,
    size: usize,
    d: Duration,
    progress: bool,
) -> Result<Row, Error> {
    let name = format!("net {size} B frames, vif0 -> switch -> vif1");
    let pb = bar(progress, &name, d);
    let (mac_a, mac_b) = (a.mac(), b.mac());
    let pool = payload_pool();
    let received = AtomicU64::new(0);
    let sent_total = AtomicU64::new(0);
    let sender_done = AtomicBool::new(false);
    let start = Instant::now();
    let (sent, rx) = std::thread::scope(|s| {
        let sender = s.spawn(|| -> Result<u64, Error> {
            let r = (|| {
                let mut seq = 0u64;
                let mut buf = Vec::with_capacity(size);
                let mut batch = Vec::with_capacity(SEND_BATCH);
                while start.elapsed() < d {
                    let room = WINDOW.saturating_sub(seq - received.load(Ordering::Acquire));
                    if room == 0 {
                        std::thread::yield_now();
                        continue;
                    }
                    batch.clear();
                    for _ in 0..room.min(SEND_BATCH as u64) {
                        frame(&pool, mac_b, mac_a, seq, size, &mut buf);
                        batch.push(Packet::new(Bytes::copy_from_slice(&buf)));
                        seq += 1;
                    }
                    a.send_batch(batch.drain(..))?;
                    sent_total.store(seq, Ordering::Release);
                }
                Ok(seq)
            })();
            sender_done.store(true, Ordering::Release);
            r
        });
        let rx = receive(
            b,
            &pool,
            (mac_a, mac_b),
            size,
            (&received, &sent_total, &sender_done),
            start,
            &pb,
        );
        (sender.join(), rx)
    });
    let sent = sent.map_err(|_| "the sender panicked")??;
    let (got, bad, lost_or_late, secs) = rx?;
    pb.finish_and_clear();
    let missing = sent.saturating_sub(got);
    Ok(Row {
        name,
        ops: got,
        secs,
        bytes: got * size as u64,
        net: true,
        verify: Some((
            bad + lost_or_late,
            format!("{got}/{sent} frames checked, {missing} lost"),
        )),
    })
}

/// Receives until the sender is done and everything it sent arrived (or
/// nothing more came for a second). Returns (frames, corrupted,
/// out of order, seconds from `start` to the last frame).
fn receive(
    b: &mut Netfront,
    pool: &[u8],
    (mac_a, mac_b): ([u8; 6], [u8; 6]),
    size: usize,
    (received, sent, sender_done): (&AtomicU64, &AtomicU64, &AtomicBool),
    start: Instant,
    pb: &ProgressBar,
) -> Result<(u64, u64, u64, f64), Error> {
    let (mut got, mut bad, mut disorder, mut expect) = (0u64, 0u64, 0u64, 0u64);
    let mut want = Vec::with_capacity(size);
    let mut rx = Vec::with_capacity(256);
    let mut last = Instant::now();
    let mut secs = 0.0;
    loop {
        rx.clear();
        if b.recv_batch(&mut rx, 256) == 0 {
            if sender_done.load(Ordering::Acquire)
                && (got >= sent.load(Ordering::Acquire) || last.elapsed() > Duration::from_secs(1))
            {
                break;
            }
            b.wait(Duration::from_millis(5))?;
            continue;
        }
        for p in rx.drain(..) {
            let d = &p.data;
            if d.len() < 22 || d[12..14] != ETHERTYPE {
                continue; // not ours
            }
            let seq = u64::from_be_bytes(d[14..22].try_into().unwrap_or_default());
            frame(pool, mac_b, mac_a, seq, size, &mut want);
            if *d != want[..] {
                bad += 1;
            }
            if seq != expect {
                disorder += 1;
            }
            expect = seq + 1;
            got += 1;
        }
        received.store(got, Ordering::Release);
        last = Instant::now();
        secs = start.elapsed().as_secs_f64();
        pb.set_position(start.elapsed().as_millis() as u64);
    }
    Ok((got, bad, disorder, secs))
}

/// vif 0 (on a TAP) only sends frames of `size` bytes for `d`.
fn send_only(
    a: &mut Netfront,
    mac_a: [u8; 6],
    size: usize,
    d: Duration,
    progress: bool,
) -> Result<Row, Error> {
    let name = format!("net {size} B frames, vif0 -> TAP (send)");
    let pb = bar(progress, &name, d);
    let pool = payload_pool();
    let mut buf = Vec::with_capacity(size);
    let mut seq = 0u64;
    let mut rx = Vec::new();
    let start = Instant::now();
    while start.elapsed() < d {
        let mut batch = Vec::with_capacity(SEND_BATCH);
        for _ in 0..SEND_BATCH {
            frame(&pool, TAP_DST, mac_a, seq, size, &mut buf);
            batch.push(Packet::new(Bytes::copy_from_slice(&buf)));
            seq += 1;
        }
        a.send_batch(batch)?;
        // Whatever the host sends us is dropped.
        rx.clear();
        a.recv_batch(&mut rx, 256);
        pb.set_position(start.elapsed().as_millis() as u64);
    }
    let secs = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    Ok(Row {
        name,
        ops: seq,
        secs,
        bytes: seq * size as u64,
        net: true,
        verify: None,
    })
}
