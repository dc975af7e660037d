//! Shared test drivers: a toolstack setup, a backend event loop built on
//! `BackendMachine`, and frontend steps of spec/xenbus.md §3–5.
//!
//! Timeouts here are failure guards only (a hung handshake fails the test
//! after `GUARD` instead of hanging); no test asserts on timing.
#![allow(dead_code)]

use std::time::Duration;

use pvio_abi::DomId;
use pvio_abi::xenbus::XenbusState;
use pvio_xenbus::device::{
    dev_fatal, read_bool_or, read_opt, read_state, read_u32, read_u32_max, read_u32_or,
    read_u32_range, read_u64, state_path, switch_state, wait_for_state,
};
use pvio_xenbus::toolstack::{DevicePaths, create_device};
use pvio_xenbus::{
    Action, BackendMachine, Conn, ConnectOn, Store, XenbusError, XsError, with_transaction,
};

/// Failure guard for every wait.
pub const GUARD: Duration = Duration::from_secs(5);

/// Frontend domain.
pub const FE: DomId = DomId(1);
/// Backend (driver) domain.
pub const BE: DomId = DomId(2);

/// Largest ring-page-order the test backend advertises.
pub const MAX_ORDER: u32 = 2;
/// Largest queue count the test backend advertises.
pub const MAX_QUEUES: u32 = 4;

/// A store with domains 1 and 2 introduced and one `vbd` between them
/// created by the toolstack.
pub fn setup() -> (Store, DevicePaths) {
    let store = Store::new();
    store.introduce_domain(FE).unwrap();
    store.introduce_domain(BE).unwrap();
    let dev = DevicePaths::new(FE, BE, "vbd", 51712);
    let dom0 = store.connect(DomId(0));
    create_device(
        &dom0,
        &dev,
        &[("virtual-device", "51712")],
        &[("mode", "w")],
    )
    .unwrap();
    (store, dev)
}

/// What the backend connected to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub order: u32,
    pub queues: u32,
    pub ring_refs: Vec<u32>,
    pub event_channel: u32,
}

/// Reads and validates the frontend's transport keys (blkif.md §4, §6.3;
/// SECURITY.md C3). Nothing is "mapped" unless all of them are valid.
pub fn read_transport(conn: &Conn, dev: &DevicePaths) -> Result<Connection, XenbusError> {
    let order_key = dev.frontend_key("ring-page-order");
    let order = match read_opt(conn, &order_key)? {
        None => 0,
        Some(_) => read_u32_max(conn, &order_key, MAX_ORDER)?,
    };
    let queues_key = dev.frontend_key("multi-queue-num-queues");
    let queues = match read_opt(conn, &queues_key)? {
        None => 1,
        Some(_) => read_u32_range(conn, &queues_key, 1, MAX_QUEUES)?,
    };
    let ring_refs = if order == 0 {
        vec![read_u32(conn, &dev.frontend_key("ring-ref"))?]
    } else {
        (0..1u32 << order)
            .map(|i| read_u32(conn, &dev.frontend_key(&format!("ring-ref{i}"))))
            .collect::<Result<_, _>>()?
    };
    let event_channel = read_u32(conn, &dev.frontend_key("event-channel"))?;
    Ok(Connection {
        order,
        queues,
        ring_refs,
        event_channel,
    })
}

/// What a backend loop did.
#[derive(Debug)]
pub struct BackendReport {
    pub machine: BackendMachine,
    /// Every successful connect, in order.
    pub connections: Vec<Connection>,
    /// Every refused connect.
    pub refused: Vec<XenbusError>,
    /// Connected rings now (must never exceed 1).
    pub max_simultaneous: u32,
}

/// The backend driver: publishes its features, then acts on the frontend's
/// current state after every watch event until the device is removed
/// (frontend Closed with `online` = 0, or frontend gone).
pub fn run_backend(
    conn: &Conn,
    dev: &DevicePaths,
    connect_on: ConnectOn,
) -> Result<BackendReport, XenbusError> {
    with_transaction(conn, |tx| -> Result<(), XsError> {
        tx.write(
            &dev.backend_key("max-ring-page-order"),
            MAX_ORDER.to_string().as_bytes(),
        )?;
        tx.write(
            &dev.backend_key("multi-queue-max-queues"),
            MAX_QUEUES.to_string().as_bytes(),
        )?;
        tx.write(&dev.backend_key("feature-persistent"), b"1")
    })?;
    conn.watch(&state_path(&dev.frontend), "frontend-state")?;
    conn.watch(&dev.backend_key("online"), "online")?;
    let mut report = BackendReport {
        machine: BackendMachine::new(connect_on),
        connections: Vec::new(),
        refused: Vec::new(),
        max_simultaneous: 0,
    };
    let mut mapped = 0u32;
    loop {
        let frontend = read_state(conn, &dev.frontend);
        let online = read_bool_or(conn, &dev.backend_key("online"), false)?;
        let step = report.machine.on_frontend(frontend, online);
        let mut publish = step.publish;
        match step.action {
            Action::Connect => match read_transport(conn, dev) {
                Ok(c) => {
                    mapped += 1;
                    report.max_simultaneous = report.max_simultaneous.max(mapped);
                    with_transaction(conn, |tx| -> Result<(), XsError> {
                        tx.write(&dev.backend_key("sectors"), b"2097152")?;
                        tx.write(&dev.backend_key("sector-size"), b"512")?;
                        tx.write(&dev.backend_key("info"), b"0")
                    })?;
                    report.connections.push(c);
                }
                Err(e) => {
                    // C3: refuse with an error state; nothing was mapped.
                    dev_fatal(conn, &dev.backend, &e.to_string())?;
                    report.refused.push(e);
                    publish = report.machine.connect_failed().publish;
                }
            },
            Action::Disconnect => mapped -= 1,
            Action::Nothing => {}
        }
        if let Some(state) = publish {
            switch_state(conn, &dev.backend, state)?;
        }
        if step.remove {
            assert_eq!(mapped, 0, "removed while connected");
            return Ok(report);
        }
        if conn.next_event(GUARD).is_none() {
            return Err(XenbusError::Timeout {
                path: state_path(&dev.frontend),
                last: frontend,
            });
        }
    }
}

/// Frontend §3 step 2 (blkif): waits for backend InitWait, publishes the
/// transport keys in one transaction, then → Initialised (or, `net_style`,
/// straight to Connected as netfront does).
pub fn frontend_publish(
    conn: &Conn,
    dev: &DevicePaths,
    order: u32,
    net_style: bool,
) -> Result<(), XenbusError> {
    let be = wait_for_state(conn, &dev.backend, GUARD, |s| s == XenbusState::InitWait)?;
    assert_eq!(be, XenbusState::InitWait);
    let max = read_u32_or(conn, &dev.backend_key("max-ring-page-order"), 0)?;
    let order = order.min(max);
    with_transaction(conn, |tx| -> Result<(), XsError> {
        if order == 0 {
            tx.write(&dev.frontend_key("ring-ref"), b"8")?;
        } else {
            tx.write(
                &dev.frontend_key("ring-page-order"),
                order.to_string().as_bytes(),
            )?;
            for i in 0..1u32 << order {
                tx.write(
                    &dev.frontend_key(&format!("ring-ref{i}")),
                    (8 + i).to_string().as_bytes(),
                )?;
            }
        }
        tx.write(&dev.frontend_key("event-channel"), b"5")?;
        tx.write(&dev.frontend_key("protocol"), b"x86_64-abi")
    })?;
    let next = if net_style {
        XenbusState::Connected
    } else {
        XenbusState::Initialised
    };
    switch_state(conn, &dev.frontend, next)?;
    Ok(())
}

/// Frontend §3 step 4: waits for backend Connected, reads the device
/// properties, → Connected. Returns the sector count.
pub fn frontend_finish(conn: &Conn, dev: &DevicePaths) -> Result<u64, XenbusError> {
    let be = wait_for_state(conn, &dev.backend, GUARD, |s| s >= XenbusState::Connected)?;
    assert_eq!(be, XenbusState::Connected, "backend refused to connect");
    let sectors = read_u64(conn, &dev.backend_key("sectors"))?;
    switch_state(conn, &dev.frontend, XenbusState::Connected)?;
    Ok(sectors)
}

/// Frontend-initiated close (§4.1).
pub fn frontend_close(conn: &Conn, dev: &DevicePaths) -> Result<(), XenbusError> {
    switch_state(conn, &dev.frontend, XenbusState::Closing)?;
    wait_for_state(conn, &dev.backend, GUARD, |s| s >= XenbusState::Closing)?;
    switch_state(conn, &dev.frontend, XenbusState::Closed)?;
    let be = wait_for_state(conn, &dev.backend, GUARD, |s| s == XenbusState::Closed)?;
    assert_eq!(be, XenbusState::Closed);
    Ok(())
}
