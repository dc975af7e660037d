//! What the toolstack (dom0) writes around a device's life (spec/xenbus.md
//! §2 and §4.2; blkif.md §6.1, netif.md §5.1), as libxl does: the two
//! device directories with their permissions, and the unplug request.

use pvio_abi::DomId;
use pvio_abi::xenbus::XenbusState;

use crate::device::state_path;
use crate::path::domain_path;
use crate::{Perm, Perms, XsClient, XsError, with_transaction};

/// The two directories of one device.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DevicePaths {
    /// The frontend (guest) domain.
    pub frontend_id: DomId,
    /// The backend (driver) domain.
    pub backend_id: DomId,
    /// Device type: `"vif"`, `"vbd"`, ...
    pub kind: String,
    /// Device id (`devid`, e.g. the `virtual-device` number of a vbd).
    pub devid: u32,
    /// `/local/domain/<fe>/device/<kind>/<devid>`.
    pub frontend: String,
    /// `/local/domain/<be>/backend/<kind>/<fe>/<devid>`.
    pub backend: String,
}

impl DevicePaths {
    /// The paths of device `kind`/`devid` between `frontend_id` and
    /// `backend_id`.
    pub fn new(frontend_id: DomId, backend_id: DomId, kind: &str, devid: u32) -> DevicePaths {
        DevicePaths {
            frontend_id,
            backend_id,
            kind: kind.to_owned(),
            devid,
            frontend: format!("{}/device/{kind}/{devid}", domain_path(frontend_id)),
            backend: format!(
                "{}/backend/{kind}/{frontend_id}/{devid}",
                domain_path(backend_id)
            ),
        }
    }

    /// `<frontend>/<key>`.
    pub fn frontend_key(&self, key: &str) -> String {
        format!("{}/{key}", self.frontend)
    }

    /// `<backend>/<key>`.
    pub fn backend_key(&self, key: &str) -> String {
        format!("{}/{key}", self.backend)
    }
}

/// Creates both directories in one transaction (§2): the frontend directory
/// owned by the frontend and readable by the backend, the backend directory
/// owned by the backend and readable by the frontend, with `backend`,
/// `backend-id`, `state` = 1 (and `extra_frontend` keys) in the first and
/// `frontend`, `frontend-id`, `online` = 1, `state` = 1 (and `extra_backend`
/// keys) in the second. `toolstack` must be privileged (dom0).
pub fn create_device<X: XsClient + ?Sized>(
    toolstack: &X,
    dev: &DevicePaths,
    extra_frontend: &[(&str, &str)],
    extra_backend: &[(&str, &str)],
) -> Result<(), XsError> {
    let fe_id = dev.frontend_id.to_string();
    let be_id = dev.backend_id.to_string();
    let init = XenbusState::Initialising.as_str();
    let fe_keys = [
        ("backend", dev.backend.as_str()),
        ("backend-id", &be_id),
        ("state", init),
    ];
    let be_keys = [
        ("frontend", dev.frontend.as_str()),
        ("frontend-id", &fe_id),
        ("online", "1"),
        ("state", init),
    ];
    with_transaction(toolstack, |tx| {
        for (dir, owner, reader, keys, extra) in [
            (
                &dev.frontend,
                dev.frontend_id,
                dev.backend_id,
                &fe_keys[..],
                extra_frontend,
            ),
            (
                &dev.backend,
                dev.backend_id,
                dev.frontend_id,
                &be_keys[..],
                extra_backend,
            ),
        ] {
            tx.mkdir(dir)?;
            tx.set_perms(dir, &Perms::new(owner, Perm::None).with(reader, Perm::Read))?;
            for (k, v) in keys.iter().chain(extra) {
                tx.write(&format!("{dir}/{k}"), v.as_bytes())?;
            }
        }
        Ok(())
    })
}

/// Asks for the device to go away (§4.2 step 1, libxl): in one transaction,
/// backend `online` = 0 and, unless the backend is already Closed, backend
/// `state` = Closing. The drivers then close (§4.2 steps 2–3); the
/// toolstack waits for backend Closed and calls [`remove_device`].
pub fn unplug_device<X: XsClient + ?Sized>(
    toolstack: &X,
    dev: &DevicePaths,
) -> Result<(), XsError> {
    let state = state_path(&dev.backend);
    with_transaction(toolstack, |tx| {
        tx.write(&dev.backend_key("online"), b"0")?;
        let closed = tx
            .read(&state)
            .is_ok_and(|v| XenbusState::parse(&v) == Some(XenbusState::Closed));
        if !closed {
            tx.write(&state, XenbusState::Closing.as_str().as_bytes())?;
        }
        Ok(())
    })
}

/// Removes both directories (§4.2 step 4), in one transaction.
pub fn remove_device<X: XsClient + ?Sized>(
    toolstack: &X,
    dev: &DevicePaths,
) -> Result<(), XsError> {
    with_transaction(toolstack, |tx| {
        tx.rm(&dev.frontend)?;
        tx.rm(&dev.backend)
    })
}
