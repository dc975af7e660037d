//! Store semantics: paths, nodes, permissions, watches, transactions,
//! domain introduction and release (spec/xenbus.md §6, xenstore.txt).

use std::time::Duration;

use pvio_abi::DomId;
use pvio_xenbus::{
    Conn, Perm, Perms, QuotaKind, Store, TxId, WatchEvent, XsClient, XsError, with_transaction,
};

const GUARD: Duration = Duration::from_secs(5);
const D0: DomId = DomId(0);
const D1: DomId = DomId(1);
const D2: DomId = DomId(2);

fn store_with_domains() -> Store {
    let store = Store::new();
    store.introduce_domain(D1).unwrap();
    store.introduce_domain(D2).unwrap();
    store
}

/// All events pending now, without waiting.
fn drain(conn: &Conn) -> Vec<WatchEvent> {
    std::iter::from_fn(|| conn.try_next_event()).collect()
}

fn ev(path: &str, token: &str) -> WatchEvent {
    WatchEvent {
        path: path.into(),
        token: token.into(),
    }
}

#[test]
fn absolute_and_relative_paths() {
    let store = store_with_domains();
    let d1 = store.connect(D1);
    let dom0 = store.connect(D0);
    d1.write("data/x", b"1").unwrap();
    assert_eq!(dom0.read("/local/domain/1/data/x").unwrap(), b"1");
    assert_eq!(d1.read("/local/domain/1/data/x").unwrap(), b"1");
    assert_eq!(d1.read("data/x").unwrap(), b"1");
    // dom0's relative paths are below /local/domain/0.
    dom0.write("name", b"Domain-0").unwrap();
    assert_eq!(dom0.read("/local/domain/0/name").unwrap(), b"Domain-0");
    assert_eq!(d1.get_domain_path(D2), "/local/domain/2");
    for bad in ["", "/", "/a/", "a//b", "/a b", "/a.b", "@x", "/é"] {
        if bad == "/" {
            continue; // valid, but has a value only for dom0
        }
        assert_eq!(d1.write(bad, b"v"), Err(XsError::Invalid), "{bad:?}");
    }
    let long = format!("/{}", "a".repeat(3072));
    assert_eq!(dom0.write(&long, b""), Err(XsError::Invalid));
    assert_eq!(d1.write(&"a".repeat(2049), b""), Err(XsError::Invalid));
}

#[test]
fn write_creates_parents_and_directory_is_sorted() {
    let store = store_with_domains();
    let dom0 = store.connect(D0);
    dom0.write("/t/a/b/c", b"deep").unwrap();
    assert_eq!(dom0.read("/t/a").unwrap(), b"");
    assert_eq!(dom0.read("/t/a/b").unwrap(), b"");
    assert_eq!(dom0.read("/t/a/b/c").unwrap(), b"deep");
    for k in ["zeta", "alpha", "mid", "10", "2"] {
        dom0.write(&format!("/t/dir/{k}"), k.as_bytes()).unwrap();
    }
    assert_eq!(
        dom0.directory("/t/dir").unwrap(),
        ["10", "2", "alpha", "mid", "zeta"]
    );
    assert_eq!(dom0.directory("/t/a/b/c").unwrap(), Vec::<String>::new());
    assert_eq!(dom0.directory("/t/none"), Err(XsError::NotFound));
    // mkdir keeps an existing value; a new one is empty.
    dom0.mkdir("/t/a/b/c").unwrap();
    assert_eq!(dom0.read("/t/a/b/c").unwrap(), b"deep");
    dom0.mkdir("/t/m/n").unwrap();
    assert_eq!(dom0.read("/t/m/n").unwrap(), b"");
    // Values are bytes, NULs included.
    dom0.write("/t/bin", b"a\0b\xff").unwrap();
    assert_eq!(dom0.read("/t/bin").unwrap(), b"a\0b\xff");
}

#[test]
fn rm_is_recursive() {
    let store = store_with_domains();
    let dom0 = store.connect(D0);
    dom0.write("/t/a/b/c", b"1").unwrap();
    dom0.write("/t/a/d", b"2").unwrap();
    dom0.write("/t/keep", b"3").unwrap();
    let before = store.stats().nodes;
    dom0.rm("/t/a").unwrap();
    assert_eq!(store.stats().nodes, before - 4);
    assert_eq!(dom0.read("/t/a/b/c"), Err(XsError::NotFound));
    assert_eq!(dom0.directory("/t").unwrap(), ["keep"]);
    // Removing a missing node is fine if its parent exists...
    dom0.rm("/t/a").unwrap();
    // ...but not if the parent is missing too.
    assert_eq!(dom0.rm("/t/a/b"), Err(XsError::NotFound));
    assert_eq!(dom0.rm("/"), Err(XsError::Invalid));
}

#[test]
fn domains_cannot_touch_each_others_nodes() {
    let store = store_with_domains();
    let dom0 = store.connect(D0);
    let d1 = store.connect(D1);
    let d2 = store.connect(D2);
    d1.write("secret", b"s").unwrap();
    assert_eq!(d2.read("/local/domain/1/secret"), Err(XsError::Access));
    assert_eq!(
        d2.write("/local/domain/1/secret", b"x"),
        Err(XsError::Access)
    );
    assert_eq!(d2.write("/local/domain/1/new", b"x"), Err(XsError::Access));
    assert_eq!(d2.rm("/local/domain/1/secret"), Err(XsError::Access));
    assert_eq!(d2.directory("/local/domain/1"), Err(XsError::Access));
    assert_eq!(d2.get_perms("/local/domain/1/secret"), Err(XsError::Access));
    // A missing node under an unreadable one is EACCES, not ENOENT: no
    // information leaks about what exists there.
    assert_eq!(
        d2.read("/local/domain/1/nothing/here"),
        Err(XsError::Access)
    );
    assert_eq!(
        d1.read("/local/domain/1/nothing/here"),
        Err(XsError::NotFound)
    );
    // Nor may a domain write outside its home.
    assert_eq!(d1.write("/tool/x", b"1"), Err(XsError::Access));
    assert_eq!(d1.write("/local/domain/x", b"1"), Err(XsError::Access));
    // Dom0 reads and writes everything.
    assert_eq!(dom0.read("/local/domain/1/secret").unwrap(), b"s");
    dom0.write("/local/domain/1/secret", b"t").unwrap();
    assert_eq!(d1.read("secret").unwrap(), b"t");
}

#[test]
fn owners_set_perms_and_acl_entries_are_honoured() {
    let store = store_with_domains();
    let dom0 = store.connect(D0);
    let d1 = store.connect(D1);
    let d2 = store.connect(D2);
    d1.write("shared/ro", b"r").unwrap();
    d1.write("shared/rw", b"w").unwrap();
    // New nodes inherit the parent's list with the creator as owner.
    assert_eq!(
        d1.get_perms("shared/ro").unwrap(),
        Perms::new(D1, Perm::None)
    );

    d1.set_perms(
        "shared/ro",
        &Perms::new(D1, Perm::None).with(D2, Perm::Read),
    )
    .unwrap();
    d1.set_perms(
        "shared/rw",
        &Perms::new(D1, Perm::None).with(D2, Perm::Both),
    )
    .unwrap();
    assert_eq!(d2.read("/local/domain/1/shared/ro").unwrap(), b"r");
    assert_eq!(
        d2.write("/local/domain/1/shared/ro", b"x"),
        Err(XsError::Access)
    );
    d2.write("/local/domain/1/shared/rw", b"by-2").unwrap();
    assert_eq!(d1.read("shared/rw").unwrap(), b"by-2");
    // The ACL is on the node only: the parent stays closed.
    assert_eq!(d2.directory("/local/domain/1/shared"), Err(XsError::Access));

    // A child created by domain 2 under the writable node is owned by 2
    // and inherits the rest of the list.
    d2.write("/local/domain/1/shared/rw/child", b"c").unwrap();
    let p = dom0.get_perms("/local/domain/1/shared/rw/child").unwrap();
    assert_eq!(p.owner(), D2);
    assert_eq!(p.to_strings(), ["n2", "b2"]);
    // Domain 1 is neither its owner nor listed: the default (none) applies
    // even though the node sits in domain 1's home.
    assert_eq!(d1.read("shared/rw/child"), Err(XsError::Access));
    assert_eq!(d1.get_perms("shared/rw/child"), Err(XsError::Access));

    // Only the owner (or dom0) may set permissions; an unprivileged owner
    // may not give a node away.
    assert_eq!(
        d2.set_perms("/local/domain/1/shared/rw", &Perms::new(D1, Perm::Both)),
        Err(XsError::Access)
    );
    assert_eq!(
        d1.set_perms("shared/ro", &Perms::new(D2, Perm::None)),
        Err(XsError::Perm)
    );
    dom0.set_perms("/local/domain/1/shared/ro", &Perms::new(D2, Perm::None))
        .unwrap();
    assert_eq!(d2.read("/local/domain/1/shared/ro").unwrap(), b"r");
    assert_eq!(d1.read("shared/ro"), Err(XsError::Access));

    // Default permission for everyone else.
    d1.set_perms("shared/rw", &Perms::new(D1, Perm::Read))
        .unwrap();
    let d3 = store.connect(DomId(3));
    assert_eq!(d3.read("/local/domain/1/shared/rw").unwrap(), b"by-2");
    assert_eq!(
        d3.write("/local/domain/1/shared/rw", b"x"),
        Err(XsError::Access)
    );

    // Dom0-created nodes keep the inherited owner.
    dom0.write("/local/domain/1/from-tools", b"1").unwrap();
    assert_eq!(d1.get_perms("from-tools").unwrap().owner(), D1);
}

#[test]
fn perms_quota_and_parsing() {
    let store = store_with_domains();
    let d1 = store.connect(D1);
    d1.write("n", b"").unwrap();
    let mut p = Perms::new(D1, Perm::None);
    for i in 2..8 {
        p = p.with(DomId(i), Perm::Read);
    }
    assert_eq!(d1.set_perms("n", &p), Err(XsError::Quota(QuotaKind::Perms)));
    assert_eq!(
        Perms::parse(&["b1", "r2"]).unwrap(),
        Perms::new(D1, Perm::Both).with(D2, Perm::Read)
    );
}

#[test]
fn value_size_limits() {
    let store = store_with_domains();
    let dom0 = store.connect(D0);
    let d1 = store.connect(D1);
    assert_eq!(
        d1.write("v", &[b'x'; 2049]),
        Err(XsError::Quota(QuotaKind::ValueSize))
    );
    d1.write("v", &[b'x'; 2048]).unwrap();
    dom0.write("/t/v", &[b'x'; 4000]).unwrap();
    assert_eq!(dom0.write("/t/v", &[b'x'; 4097]), Err(XsError::TooBig));
    assert_eq!(XsError::Quota(QuotaKind::ValueSize).errno_name(), "ENOSPC");
}

#[test]
fn watch_fires_immediately_then_for_changes_at_or_below() {
    let store = store_with_domains();
    let d1 = store.connect(D1);
    d1.watch("/local/domain/1/dev", "tok").unwrap();
    assert_eq!(d1.next_event(GUARD), Some(ev("/local/domain/1/dev", "tok")));
    assert_eq!(d1.try_next_event(), None);

    d1.write("dev/a/state", b"1").unwrap();
    d1.write("device", b"not below").unwrap(); // sibling with a common prefix
    d1.write("dev", b"itself").unwrap();
    d1.mkdir("dev/b").unwrap();
    d1.mkdir("dev/b").unwrap(); // exists: no event
    d1.set_perms("dev/b", &Perms::new(D1, Perm::Read)).unwrap();
    d1.rm("dev/a").unwrap();
    // The set_perms event on dev/b coalesced with the pending mkdir event.
    assert_eq!(d1.stats().events_coalesced, 1);
    assert_eq!(
        drain(&d1),
        [
            ev("/local/domain/1/dev/a/state", "tok"),
            ev("/local/domain/1/dev", "tok"),
            ev("/local/domain/1/dev/b", "tok"),
            ev("/local/domain/1/dev/a", "tok"),
        ]
    );
    // A second write of the same path while the first is pending is
    // coalesced; distinct paths are not.
    d1.write("dev/x", b"1").unwrap();
    d1.write("dev/x", b"2").unwrap();
    assert_eq!(drain(&d1), [ev("/local/domain/1/dev/x", "tok")]);
    assert_eq!(d1.stats().events_coalesced, 2);

    d1.unwatch("/local/domain/1/dev", "tok").unwrap();
    d1.write("dev/x", b"3").unwrap();
    assert_eq!(drain(&d1), []);
    assert_eq!(
        d1.unwatch("/local/domain/1/dev", "tok"),
        Err(XsError::NotFound)
    );
}

#[test]
fn relative_watches_report_relative_paths() {
    let store = store_with_domains();
    let d1 = store.connect(D1);
    d1.watch("dev", "rel").unwrap();
    d1.watch("/local/domain/1/dev", "abs").unwrap();
    d1.write("dev/k", b"v").unwrap();
    let mut got = drain(&d1);
    got.sort_by(|a, b| a.token.cmp(&b.token));
    assert_eq!(
        got,
        [
            ev("/local/domain/1/dev", "abs"),
            ev("/local/domain/1/dev/k", "abs"),
            ev("dev", "rel"),
            ev("dev/k", "rel"),
        ]
    );
    // Duplicate (path, token) is refused; the same path with another token
    // is another watch; relative and absolute spellings are the same path.
    assert_eq!(d1.watch("dev", "rel"), Err(XsError::Exists));
    assert_eq!(d1.watch("/local/domain/1/dev", "rel"), Err(XsError::Exists));
    assert_eq!(d1.watch("dev", "bad\0token"), Err(XsError::Invalid));
}

#[test]
fn removing_a_parent_fires_watches_below_with_their_own_path() {
    let store = store_with_domains();
    let d1 = store.connect(D1);
    d1.write("dev/vif/0/state", b"4").unwrap();
    d1.watch("dev/vif/0/state", "s").unwrap();
    assert_eq!(d1.next_event(GUARD), Some(ev("dev/vif/0/state", "s")));
    d1.rm("dev").unwrap();
    assert_eq!(drain(&d1), [ev("dev/vif/0/state", "s")]);
}

#[test]
fn removing_an_unreadable_ancestor_still_reports_readable_nodes() {
    let store = store_with_domains();
    let dom0 = store.connect(D0);
    let d2 = store.connect(D2);
    // A frontend directory readable by domain 2 under domain 1's home.
    let dir = "/local/domain/1/device/vif/0";
    dom0.write(&format!("{dir}/state"), b"4").unwrap();
    dom0.set_perms(dir, &Perms::new(D1, Perm::None).with(D2, Perm::Read))
        .unwrap();
    dom0.set_perms(
        &format!("{dir}/state"),
        &Perms::new(D1, Perm::None).with(D2, Perm::Read),
    )
    .unwrap();
    d2.watch(&format!("{dir}/state"), "fe").unwrap();
    d2.watch("/local/domain/1/device", "parent").unwrap(); // exists, not readable
    assert_eq!(drain(&d2).len(), 2, "registration events");
    // The toolstack removes an ancestor domain 2 cannot read.
    dom0.rm("/local/domain/1/device").unwrap();
    assert_eq!(drain(&d2), [ev(&format!("{dir}/state"), "fe")]);
}

#[test]
fn no_events_for_unreadable_nodes() {
    let store = store_with_domains();
    let d1 = store.connect(D1);
    let d2 = store.connect(D2);
    d2.write("private/key", b"0").unwrap();
    d1.watch("/local/domain/2", "spy").unwrap();
    assert_eq!(d1.next_event(GUARD), Some(ev("/local/domain/2", "spy")));
    for i in 0..10 {
        d2.write("private/key", i.to_string().as_bytes()).unwrap();
    }
    d2.rm("private").unwrap();
    assert_eq!(drain(&d1), [], "events for nodes domain 1 may not read");
    assert_eq!(d1.stats().events_queued, 1, "only the registration event");

    // Granting read makes later changes visible (including the permission
    // change itself).
    d2.write("public", b"0").unwrap();
    d2.set_perms("public", &Perms::new(D2, Perm::None).with(D1, Perm::Read))
        .unwrap();
    d2.write("public", b"1").unwrap();
    assert_eq!(drain(&d1), [ev("/local/domain/2/public", "spy")]);
    // Revoking is reported once (readable before), then nothing.
    d2.set_perms("public", &Perms::new(D2, Perm::None)).unwrap();
    assert_eq!(drain(&d1), [ev("/local/domain/2/public", "spy")]);
    d2.write("public", b"2").unwrap();
    assert_eq!(drain(&d1), []);
}

#[test]
fn next_event_for_leaves_other_tokens_queued() {
    let store = store_with_domains();
    let d1 = store.connect(D1);
    d1.watch("a", "ta").unwrap();
    d1.watch("b", "tb").unwrap();
    assert_eq!(d1.next_event_for("tb", GUARD), Some(ev("b", "tb")));
    assert_eq!(d1.next_event_for("tb", Duration::ZERO), None);
    assert_eq!(d1.next_event(GUARD), Some(ev("a", "ta")));
}

#[test]
fn transaction_commit_and_abort() {
    let store = store_with_domains();
    let d1 = store.connect(D1);
    let d2 = store.connect(D2);
    d1.write("cfg/a", b"old").unwrap();
    d1.write("cfg/b", b"keep").unwrap();
    d1.set_perms("cfg/a", &Perms::new(D1, Perm::None).with(D2, Perm::Read))
        .unwrap();

    let tx = d1.transaction_start().unwrap();
    d1.write_in(Some(tx), "cfg/a", b"new").unwrap();
    d1.write_in(Some(tx), "cfg/c/d", b"made").unwrap();
    d1.rm_in(Some(tx), "cfg/b").unwrap();
    // Inside: own changes visible. Outside: nothing yet.
    assert_eq!(d1.read_in(Some(tx), "cfg/a").unwrap(), b"new");
    assert_eq!(d1.directory_in(Some(tx), "cfg").unwrap(), ["a", "c"]);
    assert_eq!(d1.read_in(Some(tx), "cfg/b"), Err(XsError::NotFound));
    assert_eq!(d1.read("cfg/a").unwrap(), b"old");
    assert_eq!(d2.read("/local/domain/1/cfg/a").unwrap(), b"old");
    assert_eq!(d1.directory("cfg").unwrap(), ["a", "b"]);
    d1.transaction_end(tx, true).unwrap();
    assert_eq!(d1.read("cfg/a").unwrap(), b"new");
    assert_eq!(d1.read("cfg/c/d").unwrap(), b"made");
    assert_eq!(d1.directory("cfg").unwrap(), ["a", "c"]);
    // Permissions of a modified node survive the commit.
    assert_eq!(d2.read("/local/domain/1/cfg/a").unwrap(), b"new");

    let tx = d1.transaction_start().unwrap();
    d1.write_in(Some(tx), "cfg/a", b"discarded").unwrap();
    d1.transaction_end(tx, false).unwrap();
    assert_eq!(d1.read("cfg/a").unwrap(), b"new");
    // An ended transaction is gone; ids are per connection.
    assert_eq!(d1.transaction_end(tx, true), Err(XsError::NotFound));
    let tx = d1.transaction_start().unwrap();
    assert_eq!(
        d2.read_in(Some(tx), "/local/domain/1/cfg/a"),
        Err(XsError::NotFound)
    );
    assert_eq!(d2.transaction_end(tx, true), Err(XsError::NotFound));
    d1.transaction_end(tx, false).unwrap();
    assert_eq!(TxId::from_raw(0), None);

    let stats = store.stats();
    assert_eq!(stats.transactions_committed, 1);
    assert_eq!(stats.transactions_aborted, 2);
}

#[test]
fn transaction_conflict_is_eagain_and_retry_succeeds() {
    let store = store_with_domains();
    let d1 = store.connect(D1);
    let dom0 = store.connect(D0);
    d1.write("counter", b"0").unwrap();

    // Read-set conflict: the transaction read a node someone else changed.
    let tx = d1.transaction_start().unwrap();
    let v = d1.read_in(Some(tx), "counter").unwrap();
    assert_eq!(v, b"0");
    dom0.write("/local/domain/1/counter", b"5").unwrap();
    d1.write_in(Some(tx), "counter", b"1").unwrap();
    assert_eq!(d1.transaction_end(tx, true), Err(XsError::Again));
    assert_eq!(d1.read("counter").unwrap(), b"5", "nothing applied");

    // A node the transaction only checked for absence appeared meanwhile.
    let tx = d1.transaction_start().unwrap();
    assert_eq!(d1.read_in(Some(tx), "flag"), Err(XsError::NotFound));
    d1.write("flag", b"1").unwrap();
    d1.write_in(Some(tx), "other", b"x").unwrap();
    assert_eq!(d1.transaction_end(tx, true), Err(XsError::Again));

    // A node changed after the start, before the transaction first looked
    // at it: the transaction would mix old and new state, so it fails.
    let tx = d1.transaction_start().unwrap();
    dom0.write("/local/domain/1/counter", b"6").unwrap();
    assert_eq!(d1.read_in(Some(tx), "counter").unwrap(), b"6");
    d1.write_in(Some(tx), "counter", b"7").unwrap();
    assert_eq!(d1.transaction_end(tx, true), Err(XsError::Again));
    assert_eq!(d1.read("counter").unwrap(), b"6");

    // Unrelated concurrent changes do not conflict.
    let tx = d1.transaction_start().unwrap();
    d1.read_in(Some(tx), "counter").unwrap();
    dom0.write("/tool/unrelated", b"1").unwrap();
    d1.transaction_end(tx, true).unwrap();

    // with_transaction retries: the first attempt is disturbed.
    let mut attempts = 0;
    with_transaction(&d1, |tx| -> Result<(), XsError> {
        attempts += 1;
        let n: u32 = String::from_utf8(tx.read("counter")?)
            .unwrap()
            .parse()
            .unwrap();
        if attempts == 1 {
            dom0.write("/local/domain/1/counter", b"10").unwrap();
        }
        tx.write("counter", (n + 1).to_string().as_bytes())
    })
    .unwrap();
    assert_eq!(attempts, 2);
    assert_eq!(d1.read("counter").unwrap(), b"11");
    assert_eq!(store.stats().transaction_conflicts, 4);

    // A body error aborts the transaction and is returned as is.
    let r: Result<(), XsError> = with_transaction(&d1, |tx| {
        tx.write("counter", b"junk")?;
        Err(XsError::Invalid)
    });
    assert_eq!(r, Err(XsError::Invalid));
    assert_eq!(d1.read("counter").unwrap(), b"11");
    assert_eq!(d1.stats().transactions, 0);

    // A body that always conflicts gives up with EAGAIN.
    let r: Result<(), XsError> = with_transaction(&d1, |tx| {
        tx.read("counter")?;
        dom0.write("/local/domain/1/counter", b"0").unwrap();
        Ok(())
    });
    assert_eq!(r, Err(XsError::Again));
}

#[test]
fn transaction_events_fire_only_at_commit() {
    let store = store_with_domains();
    let d1 = store.connect(D1);
    let dom0 = store.connect(D0);
    dom0.watch("/local/domain/1", "w").unwrap();
    assert_eq!(dom0.next_event(GUARD), Some(ev("/local/domain/1", "w")));

    let tx = d1.transaction_start().unwrap();
    d1.write_in(Some(tx), "a", b"1").unwrap();
    d1.write_in(Some(tx), "b", b"2").unwrap();
    assert_eq!(drain(&dom0), []);
    d1.transaction_end(tx, true).unwrap();
    assert_eq!(
        drain(&dom0),
        [ev("/local/domain/1/a", "w"), ev("/local/domain/1/b", "w")]
    );

    let tx = d1.transaction_start().unwrap();
    d1.write_in(Some(tx), "a", b"x").unwrap();
    d1.transaction_end(tx, false).unwrap();
    assert_eq!(drain(&dom0), [], "an aborted transaction fires nothing");

    let tx = d1.transaction_start().unwrap();
    d1.read_in(Some(tx), "a").unwrap();
    d1.write_in(Some(tx), "b", b"y").unwrap();
    dom0.write("/local/domain/1/a", b"z").unwrap();
    assert_eq!(d1.transaction_end(tx, true), Err(XsError::Again));
    assert_eq!(
        drain(&dom0),
        [ev("/local/domain/1/a", "w")],
        "a failed commit fires nothing"
    );
}

#[test]
fn introduce_and_release_domain() {
    let store = Store::new();
    store.introduce_domain(DomId(6)).unwrap();
    let dom0 = store.connect(D0);
    dom0.watch("@introduceDomain", "intro").unwrap();
    dom0.watch("@releaseDomain", "release").unwrap();
    dom0.watch("/local/domain/5", "home").unwrap();
    drain(&dom0);

    store.introduce_domain(DomId(5)).unwrap();
    assert!(store.is_introduced(DomId(5)));
    assert_eq!(store.introduce_domain(DomId(5)), Err(XsError::Exists));
    assert_eq!(store.introduce_domain(D0), Err(XsError::Invalid));
    assert_eq!(store.introduce_domain(DomId(0x7FF0)), Err(XsError::Invalid));
    let got = drain(&dom0);
    assert!(got.contains(&ev("@introduceDomain", "intro")));
    assert!(got.contains(&ev("/local/domain/5", "home")));
    assert_eq!(
        dom0.get_perms("/local/domain/5").unwrap(),
        Perms::new(DomId(5), Perm::None)
    );

    let d5 = store.connect(DomId(5));
    let d6 = store.connect(DomId(6));
    d5.write("device/vif/0/state", b"1").unwrap();
    d5.watch("device", "mine").unwrap();
    let tx = d5.transaction_start().unwrap();
    // Domain 5 was allowed somewhere else; XSA-322: that must not survive.
    dom0.write("/tool/shared", b"").unwrap();
    dom0.set_perms(
        "/tool/shared",
        &Perms::new(DomId(5), Perm::None).with(D1, Perm::Read),
    )
    .unwrap();
    dom0.write("/tool/acl", b"").unwrap();
    dom0.set_perms(
        "/tool/acl",
        &Perms::new(D0, Perm::None).with(DomId(5), Perm::Both),
    )
    .unwrap();
    drain(&dom0);

    store.release_domain(DomId(5)).unwrap();
    assert!(!store.is_introduced(DomId(5)));
    assert_eq!(store.release_domain(DomId(5)), Err(XsError::NotFound));
    let got = drain(&dom0);
    assert!(got.contains(&ev("@releaseDomain", "release")));
    assert!(got.contains(&ev("/local/domain/5", "home")));
    assert_eq!(dom0.read("/local/domain/5"), Err(XsError::NotFound));
    // The released domain's connection is closed: watches, transactions
    // and pending events are gone; requests fail with EIO.
    assert!(d5.is_closed());
    assert_eq!(d5.read("device"), Err(XsError::Io));
    assert_eq!(d5.transaction_end(tx, true), Err(XsError::Io));
    assert_eq!(d5.next_event(Duration::ZERO), None);
    assert_eq!(d5.pending_events(), 0);
    // Permissions naming domain 5 are gone.
    assert_eq!(
        dom0.get_perms("/tool/shared").unwrap().to_strings(),
        ["n0", "r1"]
    );
    assert_eq!(dom0.get_perms("/tool/acl").unwrap().to_strings(), ["n0"]);
    assert_eq!(store.nodes_owned(DomId(5)), 0);
    // Other domains are unaffected.
    d6.write("x", b"1").unwrap();

    // A new domain 5 starts from scratch.
    store.introduce_domain(DomId(5)).unwrap();
    let d5 = store.connect(DomId(5));
    assert_eq!(
        d5.directory("/local/domain/5").unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(d5.write("/tool/acl", b"x"), Err(XsError::Access));
}

#[test]
fn special_watches_need_permission() {
    let store = Store::new();
    let dom0 = store.connect(D0);
    let d1 = store.connect(D1);
    let d2 = store.connect(D2);
    d1.watch("@releaseDomain", "r").unwrap();
    d2.watch("@releaseDomain", "r").unwrap();
    assert_eq!(d1.next_event(GUARD), Some(ev("@releaseDomain", "r")));
    assert_eq!(d2.next_event(GUARD), Some(ev("@releaseDomain", "r")));
    assert_eq!(d1.get_perms("@releaseDomain"), Err(XsError::Access));
    assert_eq!(
        d1.set_perms("@releaseDomain", &Perms::new(D1, Perm::Read)),
        Err(XsError::Access)
    );
    dom0.set_perms(
        "@releaseDomain",
        &Perms::new(D0, Perm::None).with(D2, Perm::Read),
    )
    .unwrap();
    assert_eq!(
        d2.get_perms("@releaseDomain").unwrap().to_strings(),
        ["n0", "r2"]
    );
    store.introduce_domain(DomId(7)).unwrap();
    store.release_domain(DomId(7)).unwrap();
    assert_eq!(d1.try_next_event(), None);
    assert_eq!(d2.try_next_event(), Some(ev("@releaseDomain", "r")));
    assert_eq!(dom0.get_perms("@nonsense"), Err(XsError::Invalid));
}

#[test]
fn dropping_a_connection_removes_its_watches_and_transactions() {
    let store = store_with_domains();
    let dom0 = store.connect(D0);
    let d1 = store.connect(D1);
    d1.watch("x", "t").unwrap();
    d1.transaction_start().unwrap();
    assert_eq!(store.stats().connections, 2);
    drop(d1);
    assert_eq!(store.stats().connections, 1);
    dom0.write("/local/domain/1/x", b"1").unwrap();
    assert_eq!(
        store.stats().events_queued,
        1,
        "only the registration event ever queued"
    );
    // reset_watches drops watches and transactions of a live connection.
    let d1 = store.connect(D1);
    d1.watch("x", "t").unwrap();
    let tx = d1.transaction_start().unwrap();
    d1.reset_watches().unwrap();
    assert_eq!(d1.pending_events(), 0);
    assert_eq!(d1.transaction_end(tx, true), Err(XsError::NotFound));
    d1.write("x", b"2").unwrap();
    assert_eq!(d1.try_next_event(), None);
}

#[test]
fn counters_count() {
    let store = store_with_domains();
    let d1 = store.connect(D1);
    let before = store.stats();
    d1.write("a", b"1").unwrap();
    d1.read("a").unwrap();
    d1.directory("/local/domain/1").unwrap();
    let _ = d1.read("/tool");
    let after = store.stats();
    assert_eq!(after.ops - before.ops, 4);
    assert_eq!(after.writes - before.writes, 1);
    assert_eq!(after.reads - before.reads, 3);
    assert_eq!(d1.stats().ops, 4);
    // The trait view of the same connection.
    let c: &dyn XsClient = &d1;
    assert_eq!(c.domid(), D1);
    assert_eq!(c.read("a").unwrap(), b"1");
}
