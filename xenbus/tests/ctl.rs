//! SECURITY.md "CTL — handshake and store": C1–C4.
//!
//! Timeouts are failure guards only; nothing here asserts on timing.

mod common;

use std::thread;

use common::{
    BE, FE, GUARD, MAX_ORDER, frontend_close, frontend_finish, frontend_publish, run_backend, setup,
};
use pvio_abi::DomId;
use pvio_abi::xenbus::XenbusState;
use pvio_xenbus::device::{
    read_otherend, read_state, read_u32_max, read_u32_or, read_u32_range, state_path, switch_state,
    wait_for_state,
};
use pvio_xenbus::toolstack::unplug_device;
use pvio_xenbus::{
    Action, BackendMachine, ConnectOn, Quota, QuotaKind, Store, WatchEvent, XenbusError, XsError,
    with_transaction,
};

// ---------------------------------------------------------------------------
// C1: a peer writes a watched key 10^6 times
// ---------------------------------------------------------------------------

#[test]
fn c1_watch_flood_is_capped() {
    let (store, dev) = setup();
    let fe = store.connect(FE); // watches and reads nothing during the flood
    let be = store.connect(BE); // the flooding peer
    let state = state_path(&dev.backend);
    fe.watch(&state, "backend-state").unwrap();
    let cap = store.quota().max_pending_events;
    const WRITES: u32 = 1_000_000;
    for i in 0..WRITES {
        let s = XenbusState::ALL[(i % 9) as usize];
        be.write(&state, s.as_str().as_bytes()).unwrap();
        if i % 65_536 == 0 {
            assert!(fe.pending_events() <= cap);
        }
    }
    let st = fe.stats();
    // Every write after the first is identical to the pending event: the
    // queue holds one event, whatever the peer does.
    assert_eq!(st.pending_events, 1);
    assert_eq!(st.events_queued, 1);
    assert_eq!(st.events_coalesced, u64::from(WRITES));
    // The last state is still observable: one event, then a re-read.
    assert_eq!(fe.next_event(GUARD).unwrap().path, state);
    assert_eq!(fe.try_next_event(), None);
    assert_eq!(
        read_state(&fe, &dev.backend),
        XenbusState::ALL[((WRITES - 1) % 9) as usize]
    );
}

#[test]
fn c1_watch_flood_over_many_keys_turns_into_one_rescan() {
    let (store, dev) = setup();
    let fe = store.connect(FE);
    let be = store.connect(BE);
    fe.watch(&dev.backend, "backend-dir").unwrap();
    let per_watch = store.quota().max_pending_events_per_watch;
    const KEYS: u32 = 600;
    const WRITES: u32 = 200_000;
    for i in 0..WRITES {
        let key = dev.backend_key(&format!("k{}", i % KEYS));
        be.write(&key, i.to_string().as_bytes()).unwrap();
    }
    let st = fe.stats();
    assert!(st.queued_events <= per_watch, "{st:?}");
    assert!(
        st.pending_events <= per_watch + 1,
        "queued events plus one marker: {st:?}"
    );
    assert!(st.events_dropped > 0);
    assert_eq!(
        st.events_queued + st.events_coalesced + st.events_dropped,
        u64::from(WRITES) + 1,
        "every event accounted for (+1: registration)"
    );
    // The marker comes first and names the watched path: re-read it all.
    let first = fe.next_event(GUARD).unwrap();
    assert_eq!(
        first,
        WatchEvent {
            path: dev.backend.clone(),
            token: "backend-dir".into()
        }
    );
    let mut rest = 0;
    while fe.try_next_event().is_some() {
        rest += 1;
    }
    assert!(rest <= per_watch);
    for k in 0..KEYS {
        let last = (WRITES - KEYS..WRITES)
            .rev()
            .find(|i| i % KEYS == k)
            .unwrap();
        assert_eq!(
            fe.read(&dev.backend_key(&format!("k{k}"))).unwrap(),
            last.to_string().as_bytes()
        );
    }
}

// ---------------------------------------------------------------------------
// C2: a client never reads replies or watch events
// ---------------------------------------------------------------------------

#[test]
fn c2_client_never_reads_events_quota() {
    let store = Store::new();
    let q = *store.quota();
    for d in 1..=2 {
        store.introduce_domain(DomId(d)).unwrap();
    }
    let dom0 = store.connect(DomId(0));
    let lazy = store.connect(DomId(1));
    let bystander = store.connect(DomId(2));
    bystander.watch("mine", "b").unwrap();

    // Watches: capped, with E2BIG as xenstored.
    let mut watches = 0;
    let err = loop {
        match lazy.watch(&format!("w{watches}"), "t") {
            Ok(()) => watches += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err, XsError::Quota(QuotaKind::Watches));
    assert_eq!(err.errno_name(), "E2BIG");
    assert_eq!(watches, q.max_watches);

    // Transactions: capped, ENOSPC.
    let mut txs = Vec::new();
    let err = loop {
        match lazy.transaction_start() {
            Ok(tx) => txs.push(tx),
            Err(e) => break e,
        }
    };
    assert_eq!(err, XsError::Quota(QuotaKind::Transactions));
    assert_eq!(err.errno_name(), "ENOSPC");
    assert_eq!(txs.len(), q.max_transactions);

    // Nodes: capped, ENOSPC; a failed request changes nothing.
    let mut nodes = 0;
    let err = loop {
        match lazy.write(&format!("n/{nodes}"), b"x") {
            Ok(()) => nodes += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err, XsError::Quota(QuotaKind::Nodes));
    assert_eq!(store.nodes_owned(DomId(1)), q.max_nodes_per_domain);
    assert_eq!(
        lazy.write("x/y/z", b""),
        Err(XsError::Quota(QuotaKind::Nodes))
    );
    assert_eq!(lazy.read("x"), Err(XsError::NotFound));

    // Events: dom0 changes many distinct keys under every watch while the
    // lazy client reads nothing; its queue stays bounded.
    for i in 0..watches {
        for j in 0..20 {
            dom0.write(&format!("/local/domain/1/w{i}/k{j}"), b"1")
                .unwrap();
        }
        // Meanwhile the bystander works normally.
        bystander.write("mine", i.to_string().as_bytes()).unwrap();
        assert_eq!(bystander.next_event(GUARD).unwrap().token, "b");
    }
    let st = lazy.stats();
    assert!(st.queued_events <= q.max_pending_events, "{st:?}");
    assert!(
        st.pending_events <= q.max_pending_events + watches,
        "{st:?}"
    );
    assert!(st.events_dropped > 0);

    // The bystander is unaffected by the lazy client's quotas.
    let tx = bystander.transaction_start().unwrap();
    bystander.write_in(Some(tx), "other", b"1").unwrap();
    bystander.transaction_end(tx, true).unwrap();
    bystander.watch("other", "o").unwrap();
    assert_eq!(bystander.next_event(GUARD).unwrap().path, "other");
    assert_eq!(bystander.stats().pending_events, 0);

    // Freeing resources makes room again.
    lazy.transaction_end(txs[0], false).unwrap();
    lazy.transaction_start().unwrap();
    lazy.unwatch("w0", "t").unwrap();
    lazy.watch("again", "t").unwrap();
}

#[test]
fn c2_small_quotas_are_configurable() {
    let quota = Quota {
        max_pending_events: 8,
        max_pending_events_per_watch: 4,
        ..Quota::DEFAULT
    };
    let store = Store::with_quota(quota);
    let dom0 = store.connect(DomId(0));
    let watcher = store.connect(DomId(0));
    watcher.watch("/a", "a").unwrap();
    watcher.watch("/b", "b").unwrap();
    watcher.watch("/c", "c").unwrap();
    for i in 0..100 {
        for w in ["/a", "/b", "/c"] {
            dom0.write(&format!("{w}/{i}"), b"").unwrap();
        }
    }
    let st = watcher.stats();
    assert!(st.queued_events <= 8, "{st:?}");
    assert_eq!(
        st.pending_events,
        st.queued_events + 3,
        "one marker per watch: {st:?}"
    );
    let mut tokens: Vec<String> = std::iter::from_fn(|| watcher.try_next_event())
        .map(|e| e.token)
        .collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens, ["a", "b", "c"], "no watch starved");

    // A transaction may touch only so many nodes (its overlay is bounded).
    let store = Store::with_quota(Quota {
        max_transaction_nodes: 8,
        ..Quota::DEFAULT
    });
    store.introduce_domain(DomId(1)).unwrap();
    let d1 = store.connect(DomId(1));
    for i in 0..20 {
        d1.write(&format!("k{i}"), b"v").unwrap();
    }
    let tx = d1.transaction_start().unwrap();
    let err = (0..20)
        .map(|i| d1.read_in(Some(tx), &format!("k{i}")))
        .find_map(Result::err)
        .unwrap();
    assert_eq!(err, XsError::Quota(QuotaKind::TransactionNodes));
    d1.transaction_end(tx, false).unwrap();
    // Dom0 is exempt from node quotas.
    let dom0 = store.connect(DomId(0));
    let tx = dom0.transaction_start().unwrap();
    for i in 0..20 {
        dom0.read_in(Some(tx), &format!("/local/domain/1/k{i}"))
            .unwrap();
    }
    dom0.transaction_end(tx, true).unwrap();
}

// ---------------------------------------------------------------------------
// C3: ring-page-order or queue count above max; missing ring-refs
// ---------------------------------------------------------------------------

#[test]
fn c3_read_u32_max_refuses_values_above_max_and_missing_keys() {
    let (store, dev) = setup();
    let fe = store.connect(FE);
    let be = store.connect(BE);
    let order = dev.frontend_key("ring-page-order");
    let queues = dev.frontend_key("multi-queue-num-queues");

    fe.write(&order, b"4").unwrap();
    assert_eq!(read_u32_max(&be, &order, 4), Ok(4));
    fe.write(&order, b"5").unwrap();
    assert_eq!(
        read_u32_max(&be, &order, 4),
        Err(XenbusError::OutOfRange {
            path: order.clone(),
            value: 5,
            min: 0,
            max: 4
        })
    );
    fe.write(&order, b"4294967296").unwrap();
    assert!(matches!(
        read_u32_max(&be, &order, 4),
        Err(XenbusError::OutOfRange {
            value: 4_294_967_296,
            ..
        })
    ));
    for bad in [
        &b""[..],
        b"-1",
        b"+1",
        b" 4",
        b"4 ",
        b"0x4",
        b"4\n",
        b"99999999999999999999",
    ] {
        fe.write(&order, bad).unwrap();
        assert!(
            matches!(
                read_u32_max(&be, &order, 4),
                Err(XenbusError::Malformed { .. })
            ),
            "{bad:?}"
        );
        // A present but malformed key is an error even where absence has a
        // default.
        assert!(read_u32_or(&be, &order, 0).is_err());
    }
    fe.rm(&order).unwrap();
    assert_eq!(
        read_u32_max(&be, &order, 4),
        Err(XenbusError::Missing {
            path: order.clone()
        })
    );
    assert_eq!(read_u32_or(&be, &order, 0), Ok(0));

    for (value, ok) in [("0", false), ("1", true), ("4", true), ("5", false)] {
        fe.write(&queues, value.as_bytes()).unwrap();
        assert_eq!(read_u32_range(&be, &queues, 1, 4).is_ok(), ok, "{value}");
    }
    // Peer lookups refuse bad paths and reserved domain ids.
    fe.write(&dev.frontend_key("backend"), b"local/domain/2")
        .unwrap();
    assert!(matches!(
        read_otherend(&fe, &dev.frontend, "backend"),
        Err(XenbusError::Malformed { .. })
    ));
    fe.write(&dev.frontend_key("backend"), dev.backend.as_bytes())
        .unwrap();
    fe.write(&dev.frontend_key("backend-id"), b"32752").unwrap(); // DOMID_SELF
    assert!(matches!(
        read_otherend(&fe, &dev.frontend, "backend"),
        Err(XenbusError::OutOfRange { .. })
    ));

    // A key the backend may not read is an access error, not a default.
    fe.write("private", b"1").unwrap();
    assert_eq!(
        read_u32_or(&be, "/local/domain/1/private", 0),
        Err(XenbusError::Xs(XsError::Access))
    );
}

#[test]
fn c3_bad_transport_keys_refuse_connect() {
    type Corrupt = fn(&pvio_xenbus::Conn, &pvio_xenbus::toolstack::DevicePaths);
    let cases: [(&str, Corrupt); 3] = [
        ("ring-page-order above max", |fe, dev| {
            fe.write(
                &dev.frontend_key("ring-page-order"),
                (MAX_ORDER + 1).to_string().as_bytes(),
            )
            .unwrap();
        }),
        ("queue count above max", |fe, dev| {
            fe.write(&dev.frontend_key("multi-queue-num-queues"), b"9")
                .unwrap();
        }),
        ("missing ring-ref", |fe, dev| {
            fe.rm(&dev.frontend_key("ring-ref")).unwrap();
        }),
    ];
    for (name, corrupt) in cases {
        let (store, dev) = setup();
        let fe = store.connect(FE);
        let be = store.connect(BE);
        let dom0 = store.connect(DomId(0));
        thread::scope(|s| {
            let backend = s.spawn(|| run_backend(&be, &dev, ConnectOn::Initialised));
            wait_for_state(&fe, &dev.backend, GUARD, |s| s == XenbusState::InitWait).unwrap();
            with_transaction(&fe, |tx| -> Result<(), XsError> {
                tx.write(&dev.frontend_key("ring-ref"), b"8")?;
                tx.write(&dev.frontend_key("event-channel"), b"5")
            })
            .unwrap();
            corrupt(&fe, &dev);
            switch_state(&fe, &dev.frontend, XenbusState::Initialised).unwrap();
            // The backend refuses: error state (Closing), nothing mapped.
            let b =
                wait_for_state(&fe, &dev.backend, GUARD, |s| s >= XenbusState::Connected).unwrap();
            assert_eq!(b, XenbusState::Closing, "{name}");
            // Repeating the request does not make it try again.
            switch_state(&fe, &dev.frontend, XenbusState::Connected).unwrap();
            switch_state(&fe, &dev.frontend, XenbusState::Closed).unwrap();
            unplug_device(&dom0, &dev).unwrap();
            let report = backend.join().unwrap().unwrap();
            assert!(report.connections.is_empty(), "{name}");
            assert_eq!(report.max_simultaneous, 0, "{name}");
            assert_eq!(report.refused.len(), 1, "{name}: {:?}", report.refused);
            assert_eq!(report.machine.connects(), 1, "{name}");
            // The reason is published where the toolstack looks for it.
            let err_key = "/local/domain/2/error/backend/vbd/1/51712/error";
            let msg = String::from_utf8(dom0.read(err_key).unwrap()).unwrap();
            assert!(msg.contains(&dev.frontend), "{name}: {msg}");
        });
    }
}

// ---------------------------------------------------------------------------
// C4: Connected -> Initialising -> Connected quickly; repeated Connected
// ---------------------------------------------------------------------------

#[test]
fn c4_machine_sequences() {
    use XenbusState as S;
    let run = |connect_on, seq: &[S]| {
        let mut m = BackendMachine::new(connect_on);
        let actions: Vec<Action> = seq.iter().map(|&s| m.on_frontend(s, true).action).collect();
        (actions, m)
    };
    // Repeated Connected: one connect.
    let (a, m) = run(
        ConnectOn::Initialised,
        &[S::Initialising, S::Connected, S::Connected, S::Connected],
    );
    assert_eq!(
        a,
        [
            Action::Nothing,
            Action::Connect,
            Action::Nothing,
            Action::Nothing
        ]
    );
    assert_eq!(m.state(), S::Connected);
    // Connected -> Initialising -> Connected: disconnect once, reconnect once.
    let (a, m) = run(
        ConnectOn::Connected,
        &[S::Connected, S::Initialising, S::Connected],
    );
    assert_eq!(a, [Action::Connect, Action::Disconnect, Action::Connect]);
    assert_eq!((m.connects(), m.disconnects()), (2, 1));
    // Skipped states: Initialising -> Connected (no Initialised) connects;
    // Initialised then Connected (coalesced or not) connects once.
    let (a, _) = run(ConnectOn::Initialised, &[S::Initialising, S::Connected]);
    assert_eq!(a, [Action::Nothing, Action::Connect]);
    let (a, _) = run(ConnectOn::Initialised, &[S::Initialised, S::Connected]);
    assert_eq!(a, [Action::Connect, Action::Nothing]);
    // Connected straight to Closed: disconnect exactly once.
    let (a, m) = run(
        ConnectOn::Connected,
        &[S::Connected, S::Closed, S::Closed, S::Unknown],
    );
    assert_eq!(
        a,
        [
            Action::Connect,
            Action::Disconnect,
            Action::Nothing,
            Action::Nothing
        ]
    );
    assert_eq!(m.state(), S::Closed);
    // Every state in every order: never connect twice in a row or
    // disconnect while disconnected.
    for first in S::ALL {
        for second in S::ALL {
            for third in S::ALL {
                let mut m = BackendMachine::new(ConnectOn::Initialised);
                let mut connected = false;
                for s in [first, second, third, second, first] {
                    match m.on_frontend(s, true).action {
                        Action::Connect => {
                            assert!(!connected);
                            connected = true;
                        }
                        Action::Disconnect => {
                            assert!(connected);
                            connected = false;
                        }
                        Action::Nothing => {}
                    }
                    assert_eq!(connected, m.is_connected());
                }
            }
        }
    }
}

#[test]
fn c4_connected_initialising_connected_is_idempotent() {
    let (store, dev) = setup();
    let fe = store.connect(FE);
    let be = store.connect(BE);
    let dom0 = store.connect(DomId(0));
    thread::scope(|s| {
        let backend = s.spawn(|| run_backend(&be, &dev, ConnectOn::Initialised));
        frontend_publish(&fe, &dev, 1, false).unwrap();
        frontend_finish(&fe, &dev).unwrap();
        // Re-initialise quickly: Initialising, and as soon as the backend
        // has reacted, Connected again with the same keys.
        switch_state(&fe, &dev.frontend, XenbusState::Initialising).unwrap();
        wait_for_state(&fe, &dev.backend, GUARD, |s| s == XenbusState::InitWait).unwrap();
        switch_state(&fe, &dev.frontend, XenbusState::Connected).unwrap();
        let b = wait_for_state(&fe, &dev.backend, GUARD, |s| s == XenbusState::Connected).unwrap();
        assert_eq!(b, XenbusState::Connected);
        frontend_close(&fe, &dev).unwrap();
        unplug_device(&dom0, &dev).unwrap();
        let report = backend.join().unwrap().unwrap();
        // Connect, disconnect (Initialising), connect, disconnect (close).
        assert_eq!(
            (report.machine.connects(), report.machine.disconnects()),
            (2, 2)
        );
        assert_eq!(report.connections.len(), 2);
        assert_eq!(report.max_simultaneous, 1);
    });
}

#[test]
fn c4_repeated_connected_connects_once() {
    let (store, dev) = setup();
    let fe = store.connect(FE);
    let be = store.connect(BE);
    let dom0 = store.connect(DomId(0));
    thread::scope(|s| {
        let backend = s.spawn(|| run_backend(&be, &dev, ConnectOn::Initialised));
        frontend_publish(&fe, &dev, 0, false).unwrap();
        frontend_finish(&fe, &dev).unwrap();
        // A hostile frontend rewrites Connected (every write fires a watch).
        let state = state_path(&dev.frontend);
        for _ in 0..1000 {
            fe.write(&state, XenbusState::Connected.as_str().as_bytes())
                .unwrap();
        }
        frontend_close(&fe, &dev).unwrap();
        unplug_device(&dom0, &dev).unwrap();
        let report = backend.join().unwrap().unwrap();
        assert_eq!(
            (report.machine.connects(), report.machine.disconnects()),
            (1, 1)
        );
    });
}

#[test]
fn c4_quick_flapping_never_double_connects() {
    let (store, dev) = setup();
    let fe = store.connect(FE);
    let be = store.connect(BE);
    let dom0 = store.connect(DomId(0));
    thread::scope(|s| {
        let backend = s.spawn(|| run_backend(&be, &dev, ConnectOn::Initialised));
        frontend_publish(&fe, &dev, 0, false).unwrap();
        frontend_finish(&fe, &dev).unwrap();
        // Flap without waiting for the backend: it sees some subset of
        // these states (coalesced, skipped), in order.
        let state = state_path(&dev.frontend);
        for _ in 0..200 {
            fe.write(&state, XenbusState::Initialising.as_str().as_bytes())
                .unwrap();
            fe.write(&state, XenbusState::Connected.as_str().as_bytes())
                .unwrap();
        }
        frontend_close(&fe, &dev).unwrap();
        unplug_device(&dom0, &dev).unwrap();
        let report = backend.join().unwrap().unwrap();
        let m = &report.machine;
        assert!(m.connects() >= 1);
        assert_eq!(
            m.connects(),
            m.disconnects(),
            "every connect undone by the close"
        );
        assert_eq!(report.max_simultaneous, 1, "never connected twice at once");
    });
}

#[test]
fn c4_backend_sees_skipped_states_with_wait_for_state() {
    let (store, dev) = setup();
    let fe = store.connect(FE);
    let be = store.connect(BE);
    thread::scope(|s| {
        let backend = s.spawn(|| {
            let mut m = BackendMachine::new(ConnectOn::Initialised);
            let first = read_state(&be, &dev.frontend);
            assert_eq!(
                m.on_frontend(first, true).publish,
                Some(XenbusState::InitWait)
            );
            switch_state(&be, &dev.backend, XenbusState::InitWait).unwrap();
            // Wait for "ready to connect"; the frontend never writes
            // Initialised, and even if it did the event could be coalesced.
            let fe_state = wait_for_state(&be, &dev.frontend, GUARD, |s| {
                s == XenbusState::Initialised || s == XenbusState::Connected
            })
            .unwrap();
            let step = m.on_frontend(fe_state, true);
            assert_eq!(step.action, Action::Connect);
            switch_state(&be, &dev.backend, XenbusState::Connected).unwrap();
            // Seeing the same current state again changes nothing.
            assert_eq!(
                m.on_frontend(read_state(&be, &dev.frontend), true).action,
                Action::Nothing
            );
            (fe_state, m.connects())
        });
        wait_for_state(&fe, &dev.backend, GUARD, |s| s == XenbusState::InitWait).unwrap();
        // Initialising -> Connected directly (netfront style).
        switch_state(&fe, &dev.frontend, XenbusState::Connected).unwrap();
        let (seen, connects) = backend.join().unwrap();
        assert_eq!(seen, XenbusState::Connected);
        assert_eq!(connects, 1);
        assert_eq!(
            wait_for_state(&fe, &dev.backend, GUARD, |s| s == XenbusState::Connected).unwrap(),
            XenbusState::Connected
        );
    });
}

#[test]
fn c4_wait_for_state_returns_current_value_not_history() {
    let (store, dev) = setup();
    let fe = store.connect(FE);
    let be = store.connect(BE);
    // The backend races through several states before anyone looks.
    for s in [
        XenbusState::InitWait,
        XenbusState::Connected,
        XenbusState::Closing,
    ] {
        switch_state(&be, &dev.backend, s).unwrap();
    }
    // A waiter for "at least InitWait" gets the current state, Closing.
    let got = wait_for_state(&fe, &dev.backend, GUARD, |s| s >= XenbusState::InitWait).unwrap();
    assert_eq!(got, XenbusState::Closing);
    // A waiter for a state that is gone times out with the last state read
    // (a short guard keeps the test quick; no timing is asserted).
    let err = wait_for_state(
        &fe,
        &dev.backend,
        std::time::Duration::from_millis(20),
        |s| s == XenbusState::Connected,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        XenbusError::Timeout {
            last: XenbusState::Closing,
            ..
        }
    ));
    // Its watch is gone and other watches' events were left alone.
    fe.watch("mine", "keep").unwrap();
    let got = wait_for_state(&fe, &dev.backend, GUARD, |_| true).unwrap();
    assert_eq!(got, XenbusState::Closing);
    assert_eq!(fe.next_event(GUARD).unwrap().token, "keep");
    assert_eq!(fe.stats().watches, 1);
    // switch_state to the current state writes nothing and fires nothing.
    fe.watch(&state_path(&dev.backend), "be").unwrap();
    assert_eq!(fe.next_event(GUARD).unwrap().token, "be");
    assert_eq!(
        switch_state(&be, &dev.backend, XenbusState::Closing),
        Ok(false)
    );
    assert_eq!(fe.try_next_event(), None);
    assert_eq!(
        switch_state(&be, &dev.backend, XenbusState::Closed),
        Ok(true)
    );
    assert_eq!(fe.try_next_event().unwrap().token, "be");
    // A released domain's waits fail instead of spinning.
    store.release_domain(FE).unwrap();
    assert!(matches!(
        wait_for_state(&fe, &dev.backend, GUARD, |_| false),
        Err(XenbusError::Xs(XsError::Io))
    ));
}
