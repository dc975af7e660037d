//! The store over the xenstore wire protocol: the codec, `WireServer` and
//! `WireConn` (every operation, watches, transactions), the driver helpers
//! through `Client::Wire`, malformed input, and Debian's xenstore-utils
//! against a `WireServer` socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use pvio_abi::DomId;
use pvio_abi::xenbus::{
    XENSTORE_PAYLOAD_MAX, XS_ERROR, XS_READ, XS_WATCH, XS_WATCH_EVENT, XS_WRITE, XenbusState,
};
use pvio_xenbus::device::{read_state, switch_state, wait_for_state};
use pvio_xenbus::toolstack::{DevicePaths, create_device};
use pvio_xenbus::wire::{
    HEADER_SIZE, Message, WireError, decode, join_strings, read_message, split_strings,
};
use pvio_xenbus::{
    Client, Perm, Perms, Store, WatchEvent, WireConn, WireServer, XsClient, XsError,
    with_transaction,
};

/// Upper bound for waits that should succeed (never asserted as a time).
const GUARD: Duration = Duration::from_secs(10);
const D0: DomId = DomId(0);
const D1: DomId = DomId(1);

fn sock_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("pvio-xs-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn server(name: &str) -> (Store, WireServer) {
    let store = Store::new();
    store.introduce_domain(D1).unwrap();
    let server = WireServer::bind(store.clone(), sock_path(name)).unwrap();
    (store, server)
}

/// A wire connection served as `domid` over a socketpair.
fn guest(server: &WireServer, domid: DomId) -> WireConn {
    let (a, b) = UnixStream::pair().unwrap();
    server.serve_stream(a, domid).unwrap();
    WireConn::new(b, domid).unwrap()
}

fn ev(path: &str, token: &str) -> WatchEvent {
    WatchEvent {
        path: path.into(),
        token: token.into(),
    }
}

/// Sends one raw message and reads the reply (skipping watch events).
fn raw_request(s: &mut UnixStream, bytes: &[u8]) -> Option<Message> {
    s.write_all(bytes).ok()?;
    loop {
        let m = read_message(s).ok()??;
        if m.ty != XS_WATCH_EVENT {
            return Some(m);
        }
    }
}

fn raw(ty: u32, req_id: u32, payload: &[u8]) -> Vec<u8> {
    Message::new(ty, req_id, 0, payload.to_vec())
        .encode()
        .unwrap()
}

fn header(ty: u32, req_id: u32, tx_id: u32, len: u32) -> Vec<u8> {
    [ty, req_id, tx_id, len]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect()
}

fn error_name(m: &Message) -> &[u8] {
    assert_eq!(m.ty, XS_ERROR, "expected an error reply, got {m:?}");
    &m.payload
}

// ------------------------------------------------------------------ codec

#[test]
fn codec_round_trips() {
    let msgs = [
        Message::new(XS_READ, 7, 0, b"/a/b\0".to_vec()),
        Message::new(XS_WRITE, 8, 3, b"/a\0value with \0 nul".to_vec()),
        Message::new(XS_WATCH_EVENT, 0, 0, Vec::new()),
        Message::new(0xFFFF, u32::MAX, u32::MAX, vec![0xAB; XENSTORE_PAYLOAD_MAX]),
    ];
    let mut stream = Vec::new();
    for m in &msgs {
        let bytes = m.encode().unwrap();
        assert_eq!(bytes.len(), HEADER_SIZE + m.payload.len());
        let (back, used) = decode(&bytes).unwrap().unwrap();
        assert_eq!((&back, used), (m, bytes.len()));
        stream.extend_from_slice(&bytes);
    }
    let mut r = stream.as_slice();
    for m in &msgs {
        assert_eq!(read_message(&mut r).unwrap().as_ref(), Some(m));
    }
    assert!(
        read_message(&mut r).unwrap().is_none(),
        "clean end of stream"
    );

    assert_eq!(
        split_strings(b"a\0bc\0\0").unwrap(),
        [&b"a"[..], b"bc", b""]
    );
    assert!(split_strings(b"").unwrap().is_empty());
    assert_eq!(join_strings(&["x", "yz"]), b"x\0yz\0");
}

#[test]
fn codec_refuses_malformed_input() {
    // Short header / short payload: more bytes needed, or truncated at EOF.
    assert!(decode(&[1, 2, 3]).unwrap().is_none());
    let partial = &raw(XS_READ, 1, b"/abc\0")[..HEADER_SIZE + 2];
    assert!(decode(partial).unwrap().is_none());
    assert!(matches!(
        read_message(&mut &partial[..]),
        Err(WireError::Truncated)
    ));
    assert!(matches!(
        read_message(&mut &[1u8, 0, 0][..]),
        Err(WireError::Truncated)
    ));
    // len > 4096 refused from the header alone (nothing allocated).
    for len in [XENSTORE_PAYLOAD_MAX as u32 + 1, u32::MAX] {
        let h = header(XS_READ, 1, 0, len);
        assert!(matches!(decode(&h), Err(WireError::TooLong(l)) if l == len));
        assert!(matches!(
            read_message(&mut h.as_slice()),
            Err(WireError::TooLong(_))
        ));
    }
    // Payload above the limit cannot be encoded; strings must end in NUL.
    let big = Message::new(XS_WRITE, 1, 0, vec![b'a'; XENSTORE_PAYLOAD_MAX + 1]);
    assert_eq!(big.encode(), Err(XsError::TooBig));
    assert_eq!(split_strings(b"no-nul"), Err(XsError::Invalid));
    // Arbitrary bytes never panic the decoder.
    let mut seed = 0x1234_5678u32;
    for _ in 0..2000 {
        let len = (seed % 64) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        let _ = decode(&bytes);
        let _ = read_message(&mut bytes.as_slice());
        let _ = split_strings(&bytes);
    }
}

// ----------------------------------------------------------------- server

#[test]
fn server_answers_malformed_requests_with_errors() {
    let (_store, server) = server("malformed");
    let mut s = UnixStream::connect(server.path()).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();

    let cases: [(Vec<u8>, &[u8]); 8] = [
        (raw(999, 1, b"/x\0"), b"ENOSYS\0"),             // unknown type
        (raw(XS_ERROR, 2, b"EIO\0"), b"ENOSYS\0"),       // client-only type
        (raw(XS_READ, 3, b"/missing-nul"), b"EINVAL\0"), // missing NUL
        (raw(XS_READ, 4, b"/a\0/b\0"), b"EINVAL\0"),     // two args
        (raw(XS_READ, 5, b"/\xff\xfe\0"), b"EINVAL\0"),  // not UTF-8
        (raw(XS_WRITE, 6, b"/no-separator"), b"EINVAL\0"),
        (raw(XS_WATCH, 7, b"/only-path\0"), b"EINVAL\0"),
        (raw(XS_READ, 8, b"/nothing/here\0"), b"ENOENT\0"),
    ];
    for (req, want) in cases {
        let reply = raw_request(&mut s, &req).expect("a reply");
        assert_eq!(error_name(&reply), want);
        assert_eq!(
            reply.req_id,
            u32::from_ne_bytes(req[4..8].try_into().unwrap())
        );
    }
    // A transaction id nobody started.
    let mut m = Message::new(XS_READ, 9, 77, b"/local\0".to_vec());
    let reply = raw_request(&mut s, &m.encode().unwrap()).unwrap();
    assert_eq!(error_name(&reply), b"ENOENT\0");
    // A large value (dom0 has no value-size quota).
    m = Message::new(XS_WRITE, 10, 0, [&b"/big\0"[..], &[b'v'; 4000]].concat());
    let reply = raw_request(&mut s, &m.encode().unwrap()).unwrap();
    assert_eq!(reply.payload, b"OK\0");

    // Many messages in a row: every one answered, in order.
    const N: u32 = 20_000;
    let small = Message::new(XS_WRITE, 0, 0, b"/small\0v".to_vec());
    assert_eq!(
        raw_request(&mut s, &small.encode().unwrap())
            .unwrap()
            .payload,
        b"OK\0"
    );
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        for i in 0..N {
            w.write_all(&raw(XS_READ, i, b"/small\0")).unwrap();
        }
        w
    });
    for i in 0..N {
        let r = read_message(&mut s).unwrap().unwrap();
        assert_eq!(
            (r.ty, r.req_id, r.payload.as_slice()),
            (XS_READ, i, &b"v"[..])
        );
    }
    let mut w = writer.join().unwrap();

    // An oversized length closes that connection (nothing read beyond the
    // header); other connections go on.
    w.write_all(&header(XS_WRITE, 1, 0, u32::MAX)).unwrap();
    let mut rest = Vec::new();
    let n = s.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0, "connection closed without a reply");
    let other = WireConn::connect(server.path()).unwrap();
    assert_eq!(other.read("/big").unwrap().len(), 4000);

    // A truncated message at EOF ends its connection quietly.
    let mut t = UnixStream::connect(server.path()).unwrap();
    t.write_all(&header(XS_READ, 1, 0, 10)[..9]).unwrap();
    drop(t);
    let deadline = Instant::now() + GUARD;
    while server.connections() > 1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.connections(), 1, "only `other` is left");
}

#[test]
fn wire_conn_does_every_operation() {
    let (store, server) = server("ops");
    let dom0 = WireConn::connect(server.path()).unwrap();
    let d1 = guest(&server, D1);
    assert_eq!((dom0.domid(), d1.domid()), (D0, D1));

    // Nodes.
    dom0.write("/tool/a", b"1").unwrap();
    dom0.mkdir("/tool/dir").unwrap();
    assert_eq!(dom0.read("/tool/a").unwrap(), b"1");
    assert_eq!(dom0.read("/tool/dir").unwrap(), b"");
    assert_eq!(dom0.directory("/tool").unwrap(), ["a", "dir"]);
    assert_eq!(dom0.directory("/tool/dir").unwrap(), Vec::<String>::new());
    dom0.rm("/tool/dir").unwrap();
    assert_eq!(dom0.read("/tool/dir"), Err(XsError::NotFound));
    assert_eq!(dom0.directory("/nope"), Err(XsError::NotFound));
    dom0.write("/tool/empty", b"").unwrap();
    assert_eq!(dom0.read("/tool/empty").unwrap(), b"");
    let binary = [0u8, 1, 2, 255, 0];
    dom0.write("/tool/bin", &binary).unwrap();
    assert_eq!(dom0.read("/tool/bin").unwrap(), binary);

    // Relative paths and permissions as domain 1.
    d1.write("data/x", b"guest").unwrap();
    assert_eq!(dom0.read("/local/domain/1/data/x").unwrap(), b"guest");
    assert_eq!(d1.read("/tool/a"), Err(XsError::Access));
    assert_eq!(d1.write("/tool/b", b"x"), Err(XsError::Access));
    let perms = Perms::new(D0, Perm::None).with(D1, Perm::Read);
    dom0.set_perms("/tool/a", &perms).unwrap();
    assert_eq!(dom0.get_perms("/tool/a").unwrap(), perms);
    assert_eq!(
        dom0.get_perms("/tool/a").unwrap().to_strings(),
        ["n0", "r1"]
    );
    assert_eq!(d1.read("/tool/a").unwrap(), b"1");
    assert_eq!(
        d1.set_perms("/tool/a", &Perms::new(D1, Perm::Both)),
        Err(XsError::Access)
    );
    assert_eq!(d1.get_perms("data/x").unwrap().owner(), D1);
    assert_eq!(dom0.get_domain_path(D1).unwrap(), "/local/domain/1");
    assert!(dom0.is_domain_introduced(D1).unwrap());
    assert!(!dom0.is_domain_introduced(DomId(9)).unwrap());
    // Store quotas apply through the wire (value size for domain 1).
    let too_big = vec![b'x'; store.quota().max_value_size + 1];
    assert!(matches!(
        d1.write("data/big", &too_big),
        Err(XsError::NoSpace)
    ));
    assert_eq!(
        dom0.write("/tool/huge", &[b'x'; XENSTORE_PAYLOAD_MAX]),
        Err(XsError::TooBig)
    );

    // Watches: the initial event, then changes, delivered while idle.
    d1.watch("data", "tok").unwrap();
    assert_eq!(d1.next_event(GUARD), Some(ev("data", "tok")));
    assert_eq!(d1.watch("data", "tok"), Err(XsError::Exists));
    let waiter = thread::spawn(move || {
        let got = d1.next_event(GUARD);
        (d1, got)
    });
    thread::sleep(Duration::from_millis(50));
    dom0.write("/local/domain/1/data/y", b"2").unwrap();
    let (d1, got) = waiter.join().unwrap();
    assert_eq!(got, Some(ev("data/y", "tok")));
    dom0.watch("/tool", "t0").unwrap();
    dom0.watch("@releaseDomain", "rel").unwrap();
    assert_eq!(
        dom0.next_event_for("rel", GUARD),
        Some(ev("@releaseDomain", "rel"))
    );
    assert_eq!(dom0.next_event_for("t0", GUARD), Some(ev("/tool", "t0")));
    d1.unwatch("data", "tok").unwrap();
    assert_eq!(d1.unwatch("data", "tok"), Err(XsError::NotFound));
    dom0.write("/local/domain/1/data/z", b"3").unwrap();
    dom0.write("/tool/c", b"3").unwrap();
    assert_eq!(dom0.next_event(GUARD), Some(ev("/tool/c", "t0")));
    assert_eq!(d1.next_event(Duration::from_millis(100)), None);
    dom0.reset_watches().unwrap();
    dom0.write("/tool/d", b"4").unwrap();
    assert_eq!(dom0.next_event(Duration::from_millis(100)), None);

    // Transactions: commit, abort, conflict (EAGAIN), the retry loop.
    let tx = dom0.transaction_start().unwrap();
    dom0.write_in(Some(tx), "/tool/t1", b"a").unwrap();
    assert_eq!(dom0.read_in(Some(tx), "/tool/t1").unwrap(), b"a");
    assert_eq!(dom0.read("/tool/t1"), Err(XsError::NotFound));
    dom0.transaction_end(tx, true).unwrap();
    assert_eq!(dom0.read("/tool/t1").unwrap(), b"a");
    let tx = dom0.transaction_start().unwrap();
    dom0.write_in(Some(tx), "/tool/t2", b"b").unwrap();
    dom0.transaction_end(tx, false).unwrap();
    assert_eq!(dom0.read("/tool/t2"), Err(XsError::NotFound));
    assert_eq!(dom0.transaction_end(tx, true), Err(XsError::NotFound));

    let other = WireConn::connect(server.path()).unwrap();
    let tx = dom0.transaction_start().unwrap();
    assert_eq!(dom0.read_in(Some(tx), "/tool/t1").unwrap(), b"a");
    dom0.write_in(Some(tx), "/tool/t3", b"x").unwrap();
    other.write("/tool/t1", b"changed").unwrap();
    assert_eq!(dom0.transaction_end(tx, true), Err(XsError::Again));
    assert_eq!(dom0.read("/tool/t3"), Err(XsError::NotFound));

    let mut runs = 0;
    with_transaction(&dom0, |t| -> Result<(), XsError> {
        runs += 1;
        let v = t.read("/tool/t1")?;
        if runs == 1 {
            other.write("/tool/t1", b"again").unwrap();
        }
        t.write("/tool/t4", &v)
    })
    .unwrap();
    assert_eq!(runs, 2, "the conflicting first run was retried");
    assert_eq!(dom0.read("/tool/t4").unwrap(), b"again");

    // The store sees the same state as the wire clients.
    let local = store.connect(D0);
    assert_eq!(local.read("/tool/t4").unwrap(), b"again");

    // Releasing the domain closes its connection: EIO, no more events.
    store.release_domain(D1).unwrap();
    let deadline = Instant::now() + GUARD;
    while !d1.is_closed() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(d1.read("data/x"), Err(XsError::Io));
}

#[test]
fn many_threads_share_one_wire_conn() {
    let (_store, server) = server("threads");
    let conn = std::sync::Arc::new(WireConn::connect(server.path()).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let conn = conn.clone();
            thread::spawn(move || {
                for i in 0..200 {
                    let path = format!("/tool/t{t}/k{i}");
                    conn.write(&path, path.as_bytes()).unwrap();
                    assert_eq!(conn.read(&path).unwrap(), path.as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(conn.directory("/tool").unwrap().len(), 8);
}

#[test]
fn driver_helpers_work_through_client_wire() {
    let (_store, server) = server("helpers");
    let dom0 = Client::Wire(WireConn::connect(server.path()).unwrap());
    let front = Client::Wire(guest(&server, D1));
    let dev = DevicePaths::new(D1, D0, "vif", 0);
    create_device(&dom0, &dev, &[("mac", "00:16:3e:00:00:01")], &[]).unwrap();
    assert_eq!(read_state(&front, &dev.frontend), XenbusState::Initialising);
    assert_eq!(
        front.read(&dev.frontend_key("mac")).unwrap(),
        b"00:16:3e:00:00:01"
    );

    let waiter = thread::spawn(move || {
        let seen = wait_for_state(&front, &dev.backend, GUARD, |s| s >= XenbusState::InitWait);
        (front, seen)
    });
    let dev = DevicePaths::new(D1, D0, "vif", 0);
    switch_state(&dom0, &dev.backend, XenbusState::InitWait).unwrap();
    let (front, seen) = waiter.join().unwrap();
    assert_eq!(seen.unwrap(), XenbusState::InitWait);
    switch_state(&front, &dev.frontend, XenbusState::Connected).unwrap();
    assert_eq!(read_state(&dom0, &dev.frontend), XenbusState::Connected);
    assert_eq!(front.domid(), D1);
    assert!(front.as_wire().is_some() && front.stats().is_none());
}

// ---------------------------------------------------------- xenstore-utils

/// Runs `tool args` against `sock` (libxenstore's `xs_daemon_socket()`
/// takes the path from `XENSTORED_PATH`).
fn xs_tool(sock: &std::path::Path, tool: &str, args: &[&str]) -> std::process::Output {
    Command::new(tool)
        .args(args)
        .env("XENSTORED_PATH", sock)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

fn have_tool(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn debian_xenstore_utils_against_wire_server() {
    let tools = [
        "xenstore-write",
        "xenstore-read",
        "xenstore-ls",
        "xenstore-rm",
        "xenstore-watch",
    ];
    if let Some(missing) = tools.iter().find(|t| !have_tool(t)) {
        let why = format!("{missing} not installed (apt-get install xenstore-utils)");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        println!("SKIPPED: {why}");
        return;
    }
    let (store, server) = server("utils");
    let sock = server.path().to_path_buf();
    let dom0 = store.connect(D0);

    let out = xs_tool(
        &sock,
        "xenstore-write",
        &["/tool/pvio/a", "hello", "/tool/pvio/b/c", "42"],
    );
    assert!(out.status.success(), "xenstore-write: {out:?}");
    assert_eq!(dom0.read("/tool/pvio/a").unwrap(), b"hello");
    assert_eq!(dom0.read("/tool/pvio/b/c").unwrap(), b"42");

    let out = xs_tool(&sock, "xenstore-read", &["/tool/pvio/a", "/tool/pvio/b/c"]);
    assert!(out.status.success(), "xenstore-read: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n42\n");
    let out = xs_tool(&sock, "xenstore-read", &["/tool/pvio/missing"]);
    assert!(!out.status.success(), "reading a missing node fails");

    let out = xs_tool(&sock, "xenstore-ls", &["/tool/pvio"]);
    assert!(out.status.success(), "xenstore-ls: {out:?}");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("a = \"hello\""), "{listing}");
    assert!(listing.contains("c = \"42\""), "{listing}");
    let out = xs_tool(&sock, "xenstore-ls", &["-p", "/tool/pvio"]);
    assert!(out.status.success(), "xenstore-ls -p: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("n0"),
        "{out:?}"
    );

    let out = xs_tool(&sock, "xenstore-rm", &["/tool/pvio/b"]);
    assert!(out.status.success(), "xenstore-rm: {out:?}");
    assert_eq!(dom0.read("/tool/pvio/b/c"), Err(XsError::NotFound));

    // xenstore-watch prints the initial event, then one per change.
    let mut child = Command::new("xenstore-watch")
        .arg("/tool/pvio")
        .env("XENSTORED_PATH", &sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok);
    dom0.write("/tool/pvio/new", b"1").unwrap();
    let mut seen = vec![first.clone()];
    // The change may be reported after repeated (spurious) events.
    for _ in 0..5 {
        let line = lines.next().and_then(Result::ok);
        let done = line.as_deref() == Some("/tool/pvio/new") || line.is_none();
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(first.as_deref(), Some("/tool/pvio"), "{seen:?}");
    assert!(
        seen.iter().any(|l| l.as_deref() == Some("/tool/pvio/new")),
        "{seen:?}"
    );
}

/// SECURITY.md C1/C2 over the wire: a client that watches and never reads
/// blocks only its own connection; the store's per-connection caps bound
/// what is queued for it, and everyone else goes on.
#[test]
fn never_reading_client_is_bounded() {
    let (store, server) = server("noread");
    let mut lazy = UnixStream::connect(server.path()).unwrap();
    lazy.set_read_timeout(Some(GUARD)).unwrap();
    let reply = raw_request(&mut lazy, &raw(XS_WATCH, 1, b"/tool\0lazy\0")).unwrap();
    assert_eq!(reply.payload, b"OK\0");
    let writer = WireConn::connect(server.path()).unwrap();
    let local = store.connect(D0);
    for i in 0..30_000 {
        local.write(&format!("/tool/k{i}"), b"x").unwrap();
    }
    writer.write("/tool/last", b"y").unwrap();
    assert_eq!(writer.read("/tool/last").unwrap(), b"y");
    let stats = store.stats();
    assert!(stats.events_dropped > 0, "{stats:?}");
    drop(lazy);
}
