//! The connection sequence of spec/xenbus.md §3 and the disconnections of
//! §4, with a frontend thread and a backend thread talking only through
//! the store (watches, transactions, `wait_for_state`).

mod common;

use std::thread;

use common::{
    BE, FE, GUARD, frontend_close, frontend_finish, frontend_publish, run_backend, setup,
};
use pvio_abi::DomId;
use pvio_abi::xenbus::XenbusState;
use pvio_xenbus::ConnectOn;
use pvio_xenbus::device::{read_otherend, read_state, switch_state, wait_for_state};
use pvio_xenbus::toolstack::{remove_device, unplug_device};

#[test]
fn blk_handshake_threads_reach_connected() {
    let (store, dev) = setup();
    let fe = store.connect(FE);
    let be = store.connect(BE);
    let dom0 = store.connect(DomId(0));
    thread::scope(|s| {
        let backend = s.spawn(|| run_backend(&be, &dev, ConnectOn::Initialised));
        let frontend = s.spawn(|| {
            // §2: each side finds its peer in its own directory.
            assert_eq!(
                read_otherend(&fe, &dev.frontend, "backend")?,
                (dev.backend.clone(), BE)
            );
            assert_eq!(
                read_otherend(&be, &dev.backend, "frontend")?,
                (dev.frontend.clone(), FE)
            );
            frontend_publish(&fe, &dev, 2, false)?;
            let sectors = frontend_finish(&fe, &dev)?;
            // Both sides are Connected now.
            assert_eq!(read_state(&fe, &dev.backend), XenbusState::Connected);
            assert_eq!(read_state(&fe, &dev.frontend), XenbusState::Connected);
            frontend_close(&fe, &dev)?;
            Ok::<_, pvio_xenbus::XenbusError>(sectors)
        });
        assert_eq!(frontend.join().unwrap().unwrap(), 2_097_152);
        // §4.2: the toolstack unplugs; the backend sees online = 0 with the
        // frontend Closed and removes the device.
        unplug_device(&dom0, &dev).unwrap();
        let report = backend.join().unwrap().unwrap();
        assert_eq!(report.connections.len(), 1);
        assert_eq!(report.connections[0].order, 2);
        assert_eq!(report.connections[0].ring_refs, [8, 9, 10, 11]);
        assert_eq!(report.connections[0].event_channel, 5);
        assert_eq!(
            (report.machine.connects(), report.machine.disconnects()),
            (1, 1)
        );
        assert!(report.refused.is_empty());
    });
    remove_device(&dom0, &dev).unwrap();
    assert!(dom0.read(&dev.frontend).is_err());
    assert!(dom0.read(&dev.backend).is_err());
}

#[test]
fn net_handshake_skips_initialised_and_reaches_connected() {
    let (store, dev) = setup();
    let fe = store.connect(FE);
    let be = store.connect(BE);
    let dom0 = store.connect(DomId(0));
    thread::scope(|s| {
        let backend = s.spawn(|| run_backend(&be, &dev, ConnectOn::Connected));
        // netfront: keys, then Initialising -> Connected directly; the
        // backend connects on Connected and then publishes Connected.
        frontend_publish(&fe, &dev, 0, true).unwrap();
        let b = wait_for_state(&fe, &dev.backend, GUARD, |s| s >= XenbusState::Connected).unwrap();
        assert_eq!(b, XenbusState::Connected);
        frontend_close(&fe, &dev).unwrap();
        unplug_device(&dom0, &dev).unwrap();
        let report = backend.join().unwrap().unwrap();
        assert_eq!(report.connections.len(), 1);
        assert_eq!(report.connections[0].ring_refs, [8]);
    });
}

#[test]
fn toolstack_unplug_closes_both_sides() {
    let (store, dev) = setup();
    let fe = store.connect(FE);
    let be = store.connect(BE);
    let dom0 = store.connect(DomId(0));
    thread::scope(|s| {
        let backend = s.spawn(|| run_backend(&be, &dev, ConnectOn::Initialised));
        frontend_publish(&fe, &dev, 1, false).unwrap();
        frontend_finish(&fe, &dev).unwrap();
        // §4.2 step 1: online = 0 and backend Closing in one transaction.
        unplug_device(&dom0, &dev).unwrap();
        // Step 2: the frontend sees backend Closing and closes.
        let b = wait_for_state(&fe, &dev.backend, GUARD, |s| s >= XenbusState::Closing).unwrap();
        assert!(b >= XenbusState::Closing);
        switch_state(&fe, &dev.frontend, XenbusState::Closed).unwrap();
        // Step 3: the backend disconnects, goes Closed and removes itself.
        let report = backend.join().unwrap().unwrap();
        assert_eq!(report.machine.state(), XenbusState::Closed);
        assert_eq!(
            (report.machine.connects(), report.machine.disconnects()),
            (1, 1)
        );
        // Step 4: the toolstack sees backend Closed and removes the dirs.
        let b = wait_for_state(&dom0, &dev.backend, GUARD, |s| s == XenbusState::Closed).unwrap();
        assert_eq!(b, XenbusState::Closed);
        remove_device(&dom0, &dev).unwrap();
    });
}

#[test]
fn frontend_reset_sequence_reconnects() {
    // §5: a restarting frontend finds the backend Connected and walks
    // Closing / Closed / Initialising, waiting for the backend each time.
    let (store, dev) = setup();
    let fe = store.connect(FE);
    let be = store.connect(BE);
    let dom0 = store.connect(DomId(0));
    thread::scope(|s| {
        let backend = s.spawn(|| run_backend(&be, &dev, ConnectOn::Initialised));
        frontend_publish(&fe, &dev, 0, false).unwrap();
        frontend_finish(&fe, &dev).unwrap();

        switch_state(&fe, &dev.frontend, XenbusState::Closing).unwrap();
        wait_for_state(&fe, &dev.backend, GUARD, |s| s == XenbusState::Closing).unwrap();
        switch_state(&fe, &dev.frontend, XenbusState::Closed).unwrap();
        wait_for_state(&fe, &dev.backend, GUARD, |s| s == XenbusState::Closed).unwrap();
        switch_state(&fe, &dev.frontend, XenbusState::Initialising).unwrap();
        frontend_publish(&fe, &dev, 2, false).unwrap();
        frontend_finish(&fe, &dev).unwrap();

        frontend_close(&fe, &dev).unwrap();
        unplug_device(&dom0, &dev).unwrap();
        let report = backend.join().unwrap().unwrap();
        assert_eq!(report.connections.len(), 2);
        assert_eq!(report.connections[1].order, 2);
        assert_eq!(report.max_simultaneous, 1);
    });
}

#[test]
fn frontend_gone_makes_backend_remove_device() {
    // §4.2 last paragraph: frontend state Unknown (directory removed).
    let (store, dev) = setup();
    let fe = store.connect(FE);
    let be = store.connect(BE);
    let dom0 = store.connect(DomId(0));
    thread::scope(|s| {
        let backend = s.spawn(|| run_backend(&be, &dev, ConnectOn::Initialised));
        frontend_publish(&fe, &dev, 0, false).unwrap();
        frontend_finish(&fe, &dev).unwrap();
        dom0.rm(&dev.frontend).unwrap();
        let report = backend.join().unwrap().unwrap();
        assert_eq!(report.machine.state(), XenbusState::Closed);
        assert!(!report.machine.is_connected());
    });
    // The frontend cannot recreate its removed directory by switching state.
    assert_eq!(
        switch_state(&fe, &dev.frontend, XenbusState::Closed),
        Err(pvio_xenbus::XsError::NotFound)
    );
    assert!(fe.read(&dev.frontend).is_err());
}
