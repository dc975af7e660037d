//! Hosted mode from the command line: `pvio hv` runs the hypervisor
//! daemon; every other hosted command is one domain process connected to
//! it.
//!
//! # Who creates devices (the toolstack role)
//! The **backend** commands do: before serving, `pvio blkback` and
//! `pvio netback` create the device's two store directories (frontend and
//! backend, for `--frontend-id`, `--backend-id`, `--devid`) as dom0,
//! through the daemon's store socket (`pvio hv --xenstore`, by default
//! `<hv socket>.xs`). Frontend commands wait until their device exists,
//! so the processes may start in any order; start the backend before the
//! frontend gives up (`--wait`).
//!
//! Each process is one domain: ids must be distinct between processes
//! (a domain's id is free again once its process exits).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pvio_abi::DomId;
use pvio_hv::hosted::Daemon;
use pvio_hv::{Domain, DomainConfig};
use pvio_xenbus::toolstack::{DevicePaths, create_device};
use pvio_xenbus::wire::WireConn;

use crate::Error;

/// The store socket of a daemon whose domain socket is `hv`, unless told
/// otherwise: `<hv>.xs`.
pub fn default_store_path(hv: &Path) -> PathBuf {
    let mut s = hv.as_os_str().to_os_string();
    s.push(".xs");
    PathBuf::from(s)
}

/// A domain large enough for any one driver (memory is a sparse memfd:
/// pages cost nothing until touched).
pub fn domain_config() -> DomainConfig {
    DomainConfig {
        pages: 65_536,
        grant_frames: 64,
        max_mappings: 32_768,
        ..DomainConfig::default()
    }
}

/// How often the commands look at their stop flag.
const TICK: Duration = Duration::from_millis(50);

/// Runs the daemon on `socket` with the store on `xenstore` until `stop`.
pub fn run_daemon(socket: &Path, xenstore: &Path, stop: &AtomicBool) -> Result<(), Error> {
    let mut d = Daemon::serve(socket)?;
    d.bind_store(xenstore)?;
    eprintln!(
        "pvio: hypervisor on {} (store as dom0 on {}); SIGINT/SIGTERM stops",
        socket.display(),
        xenstore.display()
    );
    let mut seen = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let now = d.connected();
        if now != seen {
            for id in now.iter().filter(|i| !seen.contains(i)) {
                tracing::info!(domain = id.0, "domain connected");
            }
            for id in seen.iter().filter(|i| !now.contains(i)) {
                tracing::info!(domain = id.0, "domain gone (destroyed)");
            }
            seen = now;
        }
        std::thread::sleep(TICK);
    }
    drop(d);
    eprintln!("pvio: stopped");
    Ok(())
}

/// Registers this process as domain `id` with the daemon at `hv`.
pub fn connect(hv: &Path, id: DomId) -> Result<Domain, Error> {
    Domain::connect_hosted(hv, id, domain_config())
        .map_err(|e| format!("domain {} on {}: {e}", id.0, hv.display()).into())
}

/// The toolstack's connection: dom0 on the daemon's store socket.
pub fn toolstack(xenstore: &Path) -> Result<WireConn, Error> {
    WireConn::connect(xenstore).map_err(|e| {
        format!(
            "the store socket {} (pvio hv --xenstore): {e}",
            xenstore.display()
        )
        .into()
    })
}

/// Creates device `dev` (both directories), with `keys` in both.
pub fn create(ts: &WireConn, dev: &DevicePaths, keys: &[(&str, &str)]) -> Result<(), Error> {
    create_device(ts, dev, keys, keys).map_err(|e| format!("creating {}: {e}", dev.frontend).into())
}

/// Waits until the toolstack created `dev` (its frontend directory names
/// the backend, whose directory exists), up to `timeout` or `stop`.
pub fn wait_for_device(
    dom: &Domain,
    dev: &DevicePaths,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<(), Error> {
    let st = dom.store();
    let start = Instant::now();
    let mut said = false;
    loop {
        if st.read(&dev.frontend_key("backend")).is_ok()
            && st.read(&dev.backend_key("state")).is_ok()
        {
            return Ok(());
        }
        if stop.load(Ordering::Acquire) {
            return Err("stopped".into());
        }
        if start.elapsed() >= timeout {
            return Err(format!(
                "no device {} after {:?}: start the backend (pvio blkback/netback --hv), \
                 which creates it",
                dev.frontend, timeout
            )
            .into());
        }
        if !said {
            said = true;
            eprintln!("pvio: waiting for the backend to create {}", dev.frontend);
        }
        std::thread::sleep(TICK);
    }
}

/// Sleeps until `stop` is set or the domain dies (the daemon went away).
pub fn wait_stop(dom: &Domain, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        if dom.is_destroyed() {
            tracing::warn!("the hypervisor daemon went away");
            return;
        }
        std::thread::sleep(TICK);
    }
}

/// The MAC the toolstack gives the vif of frontend `fe` on backend `be`
/// (locally administered, unicast, distinct per (backend, frontend, devid)).
pub fn vif_mac(be: DomId, fe: DomId, devid: u32) -> [u8; 6] {
    let [fh, fl] = fe.0.to_be_bytes();
    [0x02, 0x70, be.0 as u8, fh, fl, devid as u8]
}
