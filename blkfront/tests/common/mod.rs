//! Shared fixtures: domains, a vbd device, blkback on a disk, and disk
//! wrappers that hold I/O back.

#![allow(dead_code)]

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use pvio_abi::DomId;
use pvio_blkback::{Blkback, BlkbackConfig};
use pvio_blkdisk::{Completion, Disk, DiskError, DiskInfo, DiskOp, DiskQueue};
use pvio_blkfront::{Blkfront, BlkfrontConfig};
use pvio_hv::{Domain, DomainConfig, Hypervisor};
use pvio_xenbus::toolstack::{DevicePaths, create_device};

pub const GUARD: Duration = Duration::from_secs(10);

pub struct Fixture {
    pub hv: Hypervisor,
    pub dom0: Domain,
    pub fe: Domain,
    pub be: Domain,
    pub dev: DevicePaths,
    pub back: Option<Blkback>,
}

/// Three domains and a vbd between the frontend (1) and backend (2), with
/// `frontend_keys` for the toolstack's frontend directory.
pub fn domains(frontend_keys: &[(&str, &str)]) -> Fixture {
    let hv = Hypervisor::new();
    let dc = DomainConfig {
        pages: 16384,
        ..DomainConfig::default()
    };
    let dom0 = hv.create_domain(DomId(0), dc).unwrap();
    let fe = hv.create_domain(DomId(1), dc).unwrap();
    let be = hv.create_domain(DomId(2), dc).unwrap();
    let dev = DevicePaths::new(fe.id(), be.id(), "vbd", 51712);
    create_device(&dom0.store(), &dev, frontend_keys, &[]).unwrap();
    Fixture {
        hv,
        dom0,
        fe,
        be,
        dev,
        back: None,
    }
}

impl Fixture {
    pub fn serve(&mut self, disk: Arc<dyn Disk>, cfg: BlkbackConfig) {
        self.back = Some(Blkback::serve(self.be.clone(), self.dev.clone(), disk, cfg));
    }

    pub fn front(&self, cfg: BlkfrontConfig) -> Blkfront {
        Blkfront::connect(self.fe.clone(), self.dev.clone(), cfg).unwrap()
    }
}

/// A disk whose operations wait until the gate opens (they are taken by
/// the backend, so in flight, but not finished).
#[derive(Clone)]
pub struct GateDisk {
    pub inner: Arc<dyn Disk>,
    pub gate: Arc<(Mutex<bool>, Condvar)>,
}

impl GateDisk {
    pub fn new(inner: Arc<dyn Disk>) -> Self {
        GateDisk {
            inner,
            gate: Arc::new((Mutex::new(false), Condvar::new())),
        }
    }
    pub fn open(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

impl Disk for GateDisk {
    fn info(&self) -> DiskInfo {
        self.inner.info()
    }
    fn queue(&self, depth: u32) -> Result<Box<dyn DiskQueue>, DiskError> {
        Ok(Box::new(GateQueue {
            inner: self.inner.queue(depth)?,
            gate: self.gate.clone(),
            held: 0,
        }))
    }
}

struct GateQueue {
    inner: Box<dyn DiskQueue>,
    gate: Arc<(Mutex<bool>, Condvar)>,
    held: usize,
}

impl GateQueue {
    fn is_open(&self) -> bool {
        *self.gate.0.lock().unwrap()
    }
}

impl DiskQueue for GateQueue {
    fn push(&mut self, op: DiskOp) -> Result<(), (DiskError, DiskOp)> {
        self.inner.push(op)?;
        self.held += 1;
        Ok(())
    }
    fn submit(&mut self) -> Result<usize, DiskError> {
        if self.is_open() && self.held > 0 {
            self.held = 0;
            return self.inner.submit();
        }
        Ok(0)
    }
    fn reap(&mut self, min: usize, out: &mut Vec<Completion>) -> Result<usize, DiskError> {
        if !self.is_open() {
            if min > 0 {
                let g = self.gate.0.lock().unwrap();
                let _ = self
                    .gate
                    .1
                    .wait_timeout(g, Duration::from_millis(5))
                    .unwrap();
            }
            if !self.is_open() {
                return Ok(0);
            }
        }
        if self.held > 0 {
            self.held = 0;
            self.inner.submit()?;
        }
        self.inner.reap(min, out)
    }
    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }
    fn room(&self) -> usize {
        self.inner.room()
    }
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}
