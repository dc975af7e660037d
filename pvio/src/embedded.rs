//! The embedded setup: the in-tree hypervisor in this process, dom0 (the
//! toolstack), a backend (driver) domain and a frontend domain, and helpers
//! that create a vbd or a vif between them and connect both halves.

use std::sync::Arc;

use pvio_abi::DomId;
use pvio_blkback::{Blkback, BlkbackConfig};
use pvio_blkdisk::Disk;
use pvio_blkfront::{Blkfront, BlkfrontConfig};
use pvio_hv::{Domain, DomainConfig, Hypervisor};
use pvio_netback::{Netback, NetbackConfig, Port};
use pvio_netfront::{Netfront, NetfrontConfig};
use pvio_xenbus::toolstack::{DevicePaths, create_device};

use crate::Error;

/// The backend domain's id.
pub const BACKEND: DomId = DomId(1);
/// The frontend domain's id.
pub const FRONTEND: DomId = DomId(2);

/// The hypervisor and its three domains.
#[derive(Debug)]
pub struct Embedded {
    /// The hypervisor.
    pub hv: Hypervisor,
    /// Domain 0, the toolstack.
    pub dom0: Domain,
    /// The driver domain running the backends.
    pub be: Domain,
    /// The guest running the frontends.
    pub fe: Domain,
}

/// A domain large enough for a blkfront and two netfronts (memory is a
/// sparse memfd: pages cost nothing until touched).
fn domain_config() -> DomainConfig {
    DomainConfig {
        pages: 65_536,
        grant_frames: 64,
        max_mappings: 32_768,
        ..DomainConfig::default()
    }
}

impl Embedded {
    /// Starts the hypervisor and creates dom0, the backend and the frontend
    /// domain.
    pub fn new() -> Result<Embedded, Error> {
        let hv = Hypervisor::new();
        let dom0 = hv.create_domain(DomId(0), DomainConfig::default())?;
        let be = hv.create_domain(BACKEND, domain_config())?;
        let fe = hv.create_domain(FRONTEND, domain_config())?;
        Ok(Embedded { hv, dom0, be, fe })
    }

    /// Creates vbd `devid` on `disk`, serves it and connects the frontend.
    pub fn vbd(
        &self,
        devid: u32,
        disk: Arc<dyn Disk>,
        back: BlkbackConfig,
        front: BlkfrontConfig,
    ) -> Result<(Blkback, Blkfront), Error> {
        let dev = DevicePaths::new(self.fe.id(), self.be.id(), "vbd", devid);
        create_device(&self.dom0.store(), &dev, &[], &[])?;
        let bb = Blkback::serve(self.be.clone(), dev.clone(), disk, back);
        let bf = Blkfront::connect(self.fe.clone(), dev, front)?;
        Ok((bb, bf))
    }

    /// Creates vif `devid` with `mac` plugged into `port`, serves it and
    /// connects the frontend.
    pub fn vif(
        &self,
        devid: u32,
        mac: [u8; 6],
        port: Arc<dyn Port>,
        back: NetbackConfig,
        front: NetfrontConfig,
    ) -> Result<(Netback, Netfront), Error> {
        let dev = DevicePaths::new(self.fe.id(), self.be.id(), "vif", devid);
        let mac = mac_str(mac);
        let keys = [("mac", mac.as_str())];
        create_device(&self.dom0.store(), &dev, &keys, &keys)?;
        let nb = Netback::serve(self.be.clone(), dev.clone(), port, back);
        let nf = Netfront::connect(self.fe.clone(), dev, front)?;
        Ok((nb, nf))
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
