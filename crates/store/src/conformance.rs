//! The behaviour every [`Store`] backend must show, as functions a backend's
//! tests call with a factory of fresh stores:
//!
//! ```no_run
//! use weft_store::{conformance, embedded::EmbeddedStore};
//! conformance::run_all(EmbeddedStore::in_memory);
//! ```
//!
//! Each check takes a store from the factory and works under a key prefix of
//! its own (`conformance/<check>/<unique>/`), so the suite also runs against a
//! shared backend (an etcd cluster) without interference. Checks panic on
//! failure, like `assert!`. Lease checks use 1 s TTLs; no check takes more
//! than a few seconds.
//!
//! Notable semantics (etcd v3's):
//!
//! * Prefixes are byte prefixes: `list("a/b")` returns `a/b`, `a/b/c` *and*
//!   `a/bc`. Callers that mean a directory end their prefix with `/`.
//! * Revisions are store-wide: every successful write (create, update, delete,
//!   each key deleted by a lease expiry or revoke) takes the next revision.
//! * A watch from revision `r` delivers every change with revision `> r`.
//! * A transaction ([`Store::commit`]) is all or nothing and takes exactly
//!   one revision, shared by every key it writes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{
    Conflict, Event, EventKind, KeyValue, Revision, Store, StoreError, TxnConflict, TxnOp, Watch,
    WatchMessage, MAX_VALUE_LEN,
};

/// How long a check waits for an event it expects.
const EVENT_WAIT: Duration = Duration::from_secs(5);
/// How long a check waits to be sure an event does not come.
const QUIET_WAIT: Duration = Duration::from_millis(200);
/// The TTL of the short leases the checks grant. (etcd raises TTLs below its
/// minimum, about 2 s with default timings; an etcd run may need a longer one.)
pub const TTL: Duration = Duration::from_secs(1);

/// Runs every check, each on a fresh store from `fresh`.
pub fn run_all<S: Store, F: Fn() -> S>(fresh: F) {
    for (name, check) in checks::<S, F>() {
        tracing::info!(check = name, "store conformance");
        check(&fresh);
    }
}

/// Every check by name, for backends that want to run them one by one.
#[allow(clippy::type_complexity)]
pub fn checks<S: Store, F: Fn() -> S>() -> Vec<(&'static str, fn(&F))> {
    vec![
        ("get_and_create", get_and_create::<S, F>),
        ("create_conflict", create_conflict::<S, F>),
        ("update_cas", update_cas::<S, F>),
        ("delete_semantics", delete_semantics::<S, F>),
        ("recreate_after_delete", recreate_after_delete::<S, F>),
        ("revisions_increase", revisions_increase::<S, F>),
        ("list_sorted_prefix", list_sorted_prefix::<S, F>),
        ("list_revision", list_revision::<S, F>),
        ("invalid_requests", invalid_requests::<S, F>),
        ("watch_replays_then_live", watch_replays_then_live::<S, F>),
        ("watch_prefix_only", watch_prefix_only::<S, F>),
        ("watch_sees_delete", watch_sees_delete::<S, F>),
        ("watch_from_listing", watch_from_listing::<S, F>),
        ("watch_concurrent_writes", watch_concurrent_writes::<S, F>),
        ("lease_attach", lease_attach::<S, F>),
        ("lease_expiry", lease_expiry::<S, F>),
        ("lease_keep_alive", lease_keep_alive::<S, F>),
        ("lease_revoke", lease_revoke::<S, F>),
        ("lease_unknown", lease_unknown::<S, F>),
        (
            "concurrent_cas_increments",
            concurrent_cas_increments::<S, F>,
        ),
        ("concurrent_create", concurrent_create::<S, F>),
        ("txn_all_or_nothing", txn_all_or_nothing::<S, F>),
        ("txn_one_revision", txn_one_revision::<S, F>),
        ("txn_conflict_index", txn_conflict_index::<S, F>),
        ("txn_mixed_ops", txn_mixed_ops::<S, F>),
        ("txn_invalid", txn_invalid::<S, F>),
        ("txn_watch_same_revision", txn_watch_same_revision::<S, F>),
        ("txn_put", txn_put::<S, F>),
        ("concurrent_txn_transfers", concurrent_txn_transfers::<S, F>),
    ]
}

/// A key prefix no other check (in this or another process) uses; ends in `/`.
pub fn unique_prefix(check: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "conformance/{check}/{}-{nanos}-{}/",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn must<T>(what: &str, r: crate::StoreResult<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error: {e}"),
    }
}

fn created<S: Store>(s: &S, key: &str, value: &[u8]) -> Revision {
    match must("create", s.create(key, value, None)) {
        Ok(rev) => rev,
        Err(c) => panic!("create {key}: unexpected conflict {c:?}"),
    }
}

fn get_some<S: Store>(s: &S, key: &str) -> KeyValue {
    must("get", s.get(key)).unwrap_or_else(|| panic!("get {key}: key is missing"))
}

/// The next event of a watch, failing on anything else or a timeout.
pub fn next_event(w: &Watch) -> Event {
    match w.rx.recv_timeout(EVENT_WAIT) {
        Ok(WatchMessage::Event(e)) => e,
        Ok(other) => panic!("watch: expected an event, got {other:?}"),
        Err(e) => panic!("watch: no event within {EVENT_WAIT:?}: {e}"),
    }
}

/// Fails if the watch delivers an event within a short while.
pub fn expect_quiet(w: &Watch) {
    match w.rx.recv_timeout(QUIET_WAIT) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("watch: expected no message, got {other:?}"),
    }
}

fn assert_put(e: &Event, key: &str, value: &[u8], rev: Revision) {
    assert_eq!(e.kind, EventKind::Put, "event {e:?}");
    assert_eq!(e.kv.key, key, "event {e:?}");
    assert_eq!(e.kv.value, value, "event {e:?}");
    assert_eq!(e.kv.mod_revision, rev, "event {e:?}");
}

fn assert_delete(e: &Event, key: &str, rev: Option<Revision>) {
    assert_eq!(e.kind, EventKind::Delete, "event {e:?}");
    assert_eq!(e.kv.key, key, "event {e:?}");
    assert!(e.kv.value.is_empty(), "delete event with a value: {e:?}");
    if let Some(rev) = rev {
        assert_eq!(e.kv.mod_revision, rev, "event {e:?}");
    }
}

/// get of a missing key is `None`; create returns the revision, and get then
/// shows the value with `create_revision == mod_revision == rev`, no lease.
pub fn get_and_create<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("get_and_create");
    let key = format!("{p}k");
    assert_eq!(must("get", s.get(&key)), None);
    let rev = created(&s, &key, b"v1");
    assert!(rev > 0, "revision 0 means absent");
    let kv = get_some(&s, &key);
    assert_eq!(
        kv,
        KeyValue {
            key: key.clone(),
            value: b"v1".to_vec(),
            create_revision: rev,
            mod_revision: rev,
            lease: None,
        }
    );
    // Empty values are values.
    let k2 = format!("{p}empty");
    created(&s, &k2, b"");
    assert_eq!(get_some(&s, &k2).value, b"");
    // The largest allowed value round-trips.
    let big = vec![0xa5u8; MAX_VALUE_LEN];
    let k3 = format!("{p}big");
    created(&s, &k3, &big);
    assert_eq!(get_some(&s, &k3).value, big);
}

/// Creating an existing key conflicts with the current kv and changes nothing.
pub fn create_conflict<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let key = format!("{}k", unique_prefix("create_conflict"));
    created(&s, &key, b"first");
    let before = get_some(&s, &key);
    match must("create", s.create(&key, b"second", None)) {
        Err(Conflict { current }) => assert_eq!(current, Some(before.clone())),
        Ok(rev) => panic!("second create of {key} succeeded at {rev}"),
    }
    assert_eq!(get_some(&s, &key), before);
}

/// update succeeds only on the current mod_revision; a stale one conflicts
/// with the current kv; a missing key conflicts with `None`.
pub fn update_cas<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("update_cas");
    let key = format!("{p}k");
    let r1 = created(&s, &key, b"v1");
    let r2 = match must("update", s.update(&key, b"v2", r1)) {
        Ok(r) => r,
        Err(c) => panic!("update at the current revision conflicted: {c:?}"),
    };
    assert!(r2 > r1);
    let kv = get_some(&s, &key);
    assert_eq!(kv.value, b"v2");
    assert_eq!(kv.create_revision, r1, "update must keep create_revision");
    assert_eq!(kv.mod_revision, r2);
    match must("update", s.update(&key, b"stale", r1)) {
        Err(Conflict { current }) => assert_eq!(current, Some(kv.clone())),
        Ok(r) => panic!("update at a stale revision succeeded at {r}"),
    }
    assert_eq!(get_some(&s, &key), kv);
    match must("update", s.update(&format!("{p}missing"), b"x", r2)) {
        Err(Conflict { current }) => assert_eq!(current, None),
        Ok(r) => panic!("update of a missing key succeeded at {r}"),
    }
    assert_eq!(must("get", s.get(&format!("{p}missing"))), None);
}

/// Unconditional delete of a missing key is `Ok(None)`; delete-if-revision
/// conflicts on a wrong revision (with the current kv) or a missing key
/// (with `None`), and succeeds on the right one, returning the delete's
/// revision.
pub fn delete_semantics<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("delete_semantics");
    let key = format!("{p}k");
    assert_eq!(
        must("delete", s.delete(&key, None)).expect("no conflict"),
        None
    );
    match must("delete", s.delete(&key, Some(1))) {
        Err(Conflict { current }) => assert_eq!(current, None),
        Ok(r) => panic!("conditional delete of a missing key succeeded: {r:?}"),
    }
    let r1 = created(&s, &key, b"v");
    let kv = get_some(&s, &key);
    match must("delete", s.delete(&key, Some(r1 + 1000))) {
        Err(Conflict { current }) => assert_eq!(current, Some(kv)),
        Ok(r) => panic!("delete at a wrong revision succeeded: {r:?}"),
    }
    let rd = match must("delete", s.delete(&key, Some(r1))) {
        Ok(Some(r)) => r,
        other => panic!("delete at the current revision: {other:?}"),
    };
    assert!(rd > r1);
    assert_eq!(must("get", s.get(&key)), None);
    // Unconditional delete of an existing key.
    let k2 = format!("{p}k2");
    let r2 = created(&s, &k2, b"v");
    match must("delete", s.delete(&k2, None)) {
        Ok(Some(r)) => assert!(r > r2),
        other => panic!("unconditional delete: {other:?}"),
    }
    assert_eq!(must("get", s.get(&k2)), None);
}

/// A key created again after a delete has a new create_revision.
pub fn recreate_after_delete<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let key = format!("{}k", unique_prefix("recreate_after_delete"));
    let r1 = created(&s, &key, b"a");
    let rd = must("delete", s.delete(&key, None))
        .expect("no conflict")
        .expect("deleted");
    let r2 = created(&s, &key, b"b");
    assert!(r2 > rd && rd > r1);
    let kv = get_some(&s, &key);
    assert_eq!((kv.create_revision, kv.mod_revision), (r2, r2));
}

/// Every successful write returns a revision greater than the previous one,
/// whatever key it touches; failed conditional writes do not show up.
pub fn revisions_increase<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("revisions_increase");
    let mut last = 0;
    let mut check = |rev: Revision| {
        assert!(rev > last, "revision {rev} after {last}");
        last = rev;
    };
    for i in 0..5 {
        let key = format!("{p}k{i}");
        let r = created(&s, &key, b"x");
        check(r);
        let _ = must("create", s.create(&key, b"y", None)).expect_err("conflict");
        let r = must("update", s.update(&key, b"z", r)).expect("no conflict");
        check(r);
    }
    let r = must("delete", s.delete(&format!("{p}k0"), None))
        .expect("no conflict")
        .expect("deleted");
    check(r);
    let r = created(&s, &format!("{p}again"), b"x");
    check(r);
}

/// list returns exactly the keys with the byte prefix, sorted by key.
pub fn list_sorted_prefix<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("list_sorted_prefix");
    for k in ["a/b/2", "a/c", "a/b/1", "a/bc", "a/b", "b/a", "a", "a/b/10"] {
        created(&s, &format!("{p}{k}"), k.as_bytes());
    }
    let keys = |prefix: &str| -> Vec<String> {
        must("list", s.list(&format!("{p}{prefix}")))
            .kvs
            .into_iter()
            .map(|kv| {
                assert_eq!(kv.value, &kv.key.as_bytes()[p.len()..]);
                kv.key[p.len()..].to_string()
            })
            .collect()
    };
    // Byte prefix, as etcd: "a/b" includes "a/bc".
    assert_eq!(keys("a/b"), ["a/b", "a/b/1", "a/b/10", "a/b/2", "a/bc"]);
    assert_eq!(keys("a/b/"), ["a/b/1", "a/b/10", "a/b/2"]);
    assert_eq!(
        keys(""),
        ["a", "a/b", "a/b/1", "a/b/10", "a/b/2", "a/bc", "a/c", "b/a"]
    );
    assert_eq!(keys("a/b/1"), ["a/b/1", "a/b/10"]);
    assert!(keys("zz").is_empty());
    assert!(keys("a/b/3").is_empty());
}

/// A listing's revision is at least every listed mod_revision and at least
/// the last write's revision (even when the prefix is empty).
pub fn list_revision<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("list_revision");
    let mut last = 0;
    for i in 0..4 {
        last = created(&s, &format!("{p}k{i}"), b"x");
    }
    let l = must("list", s.list(&p));
    assert_eq!(l.kvs.len(), 4);
    for kv in &l.kvs {
        assert!(l.revision >= kv.mod_revision, "{l:?}");
    }
    assert!(l.revision >= last);
    let rd = must("delete", s.delete(&format!("{p}k3"), None))
        .expect("no conflict")
        .expect("deleted");
    let l = must("list", s.list(&format!("{p}none/")));
    assert!(l.kvs.is_empty());
    assert!(
        l.revision >= rd,
        "listing at {} after delete at {rd}",
        l.revision
    );
}

fn assert_invalid<T: std::fmt::Debug>(what: &str, r: crate::StoreResult<T>) {
    match r {
        Err(StoreError::Invalid { .. }) => {}
        other => panic!("{what}: expected StoreError::Invalid, got {other:?}"),
    }
}

/// Empty keys and values over [`MAX_VALUE_LEN`] are [`StoreError::Invalid`].
pub fn invalid_requests<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("invalid_requests");
    let key = format!("{p}k");
    assert_invalid("create empty key", s.create("", b"x", None));
    assert_invalid("get empty key", s.get(""));
    assert_invalid("update empty key", s.update("", b"x", 1));
    assert_invalid("delete empty key", s.delete("", None));
    let huge = vec![0u8; MAX_VALUE_LEN + 1];
    assert_invalid("create huge value", s.create(&key, &huge, None));
    assert_eq!(must("get", s.get(&key)), None);
    let r = created(&s, &key, b"small");
    assert_invalid("update huge value", s.update(&key, &huge, r));
    assert_eq!(get_some(&s, &key).value, b"small");
}

/// A watch from an older revision first replays the history after it, in
/// order, then delivers live changes in order.
pub fn watch_replays_then_live<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("watch_replays_then_live");
    let start = must("list", s.list(&p)).revision;
    let r1 = created(&s, &format!("{p}a"), b"1");
    let r2 = must("update", s.update(&format!("{p}a"), b"2", r1)).expect("no conflict");
    let r3 = created(&s, &format!("{p}b"), b"3");
    let w = must("watch", s.watch(&p, start));
    assert_put(&next_event(&w), &format!("{p}a"), b"1", r1);
    assert_put(&next_event(&w), &format!("{p}a"), b"2", r2);
    assert_put(&next_event(&w), &format!("{p}b"), b"3", r3);
    // From the middle of the history.
    let w2 = must("watch", s.watch(&p, r2));
    assert_put(&next_event(&w2), &format!("{p}b"), b"3", r3);
    expect_quiet(&w2);
    // Live, in order, to both.
    let mut revs = Vec::new();
    for i in 0..20 {
        revs.push(created(&s, &format!("{p}live/{i:02}"), b"l"));
    }
    let rd = must("delete", s.delete(&format!("{p}a"), None))
        .expect("no conflict")
        .expect("deleted");
    for w in [&w, &w2] {
        for (i, rev) in revs.iter().enumerate() {
            assert_put(&next_event(w), &format!("{p}live/{i:02}"), b"l", *rev);
        }
        assert_delete(&next_event(w), &format!("{p}a"), Some(rd));
        expect_quiet(w);
    }
}

/// A watch on a prefix sees only keys with that (byte) prefix.
pub fn watch_prefix_only<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("watch_prefix_only");
    let start = must("list", s.list(&p)).revision;
    let w = must("watch", s.watch(&format!("{p}a/"), start));
    created(&s, &format!("{p}b/1"), b"x");
    created(&s, &format!("{p}a"), b"x");
    created(&s, &format!("{p}ab"), b"x");
    let r = created(&s, &format!("{p}a/1"), b"y");
    created(&s, &format!("{p}b/2"), b"x");
    assert_put(&next_event(&w), &format!("{p}a/1"), b"y", r);
    expect_quiet(&w);
    // Byte prefix: "a" matches "a", "ab", "a/1".
    let w = must("watch", s.watch(&format!("{p}a"), start));
    let keys: Vec<String> = (0..3).map(|_| next_event(&w).kv.key).collect();
    assert_eq!(keys, [format!("{p}a"), format!("{p}ab"), format!("{p}a/1")]);
    expect_quiet(&w);
}

/// A watch sees deletes as [`EventKind::Delete`] with the delete's revision
/// and an empty value.
pub fn watch_sees_delete<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("watch_sees_delete");
    let key = format!("{p}k");
    let r1 = created(&s, &key, b"v");
    let w = must("watch", s.watch(&p, r1));
    let rd = must("delete", s.delete(&key, Some(r1)))
        .expect("no conflict")
        .expect("deleted");
    assert_delete(&next_event(&w), &key, Some(rd));
    expect_quiet(&w);
}

/// list then watch from the listing's revision: nothing already listed is
/// delivered again, and every later change is.
pub fn watch_from_listing<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("watch_from_listing");
    for i in 0..3 {
        created(&s, &format!("{p}k{i}"), b"old");
    }
    let l = must("list", s.list(&p));
    assert_eq!(l.kvs.len(), 3);
    let w = must("watch", s.watch(&p, l.revision));
    expect_quiet(&w);
    let r = created(&s, &format!("{p}k3"), b"new");
    assert_put(&next_event(&w), &format!("{p}k3"), b"new", r);
    expect_quiet(&w);
}

/// While 4 threads write concurrently, a watch receives every change exactly
/// once, in strictly increasing revision order.
pub fn watch_concurrent_writes<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("watch_concurrent_writes");
    let w = must("watch", s.watch(&p, must("list", s.list(&p)).revision));
    let (threads, per) = (4, 25);
    let revs = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (s, p, revs) = (&s, &p, &revs);
            scope.spawn(move || {
                for i in 0..per {
                    let key = format!("{p}{t}/{i}");
                    let r = created(s, &key, b"x");
                    let r2 = must("update", s.update(&key, b"y", r)).expect("no conflict");
                    let mut revs = revs
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    revs.push(r);
                    revs.push(r2);
                }
            });
        }
    });
    let mut expected = revs
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    expected.sort_unstable();
    let got: Vec<Revision> = (0..expected.len())
        .map(|_| next_event(&w).kv.mod_revision)
        .collect();
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "watch events out of order: {got:?}"
    );
    assert_eq!(got, expected);
    expect_quiet(&w);
}

/// A key created with a lease reports it; update keeps it.
pub fn lease_attach<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let key = format!("{}k", unique_prefix("lease_attach"));
    let lease = must("grant", s.grant_lease(Duration::from_secs(30)));
    let r1 = must("create", s.create(&key, b"v", Some(lease))).expect("no conflict");
    assert_eq!(get_some(&s, &key).lease, Some(lease));
    must("update", s.update(&key, b"w", r1)).expect("no conflict");
    let kv = get_some(&s, &key);
    assert_eq!((kv.lease, kv.value.as_slice()), (Some(lease), &b"w"[..]));
    must("revoke", s.revoke_lease(lease));
    assert_eq!(must("get", s.get(&key)), None);
}

fn wait_deleted<S: Store>(s: &S, w: &Watch, keys: &[String], deadline: Instant) {
    let mut left: Vec<String> = keys.to_vec();
    while !left.is_empty() {
        let now = Instant::now();
        assert!(
            now < deadline,
            "keys {left:?} not deleted by lease expiry in time"
        );
        match w.rx.recv_timeout(deadline - now) {
            Ok(WatchMessage::Event(e)) => {
                assert_eq!(e.kind, EventKind::Delete, "unexpected event {e:?}");
                left.retain(|k| *k != e.kv.key);
            }
            Ok(other) => panic!("watch: unexpected {other:?}"),
            Err(_) => panic!("keys {left:?} not deleted by lease expiry within the ttl + 1 s"),
        }
    }
    for k in keys {
        assert_eq!(must("get", s.get(k)), None, "{k} still there after expiry");
    }
}

/// When a lease expires, its keys are deleted (with Delete events) within
/// ttl + 1 s, keys without the lease stay, and the lease is gone.
pub fn lease_expiry<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("lease_expiry");
    let lease = must("grant", s.grant_lease(TTL));
    let granted = Instant::now();
    let keys = [format!("{p}a"), format!("{p}b")];
    for k in &keys {
        must("create", s.create(k, b"v", Some(lease))).expect("no conflict");
    }
    let stay = format!("{p}stay");
    created(&s, &stay, b"v");
    let w = must("watch", s.watch(&p, must("list", s.list(&p)).revision));
    wait_deleted(&s, &w, &keys, granted + TTL + Duration::from_secs(1));
    assert!(
        granted.elapsed() >= TTL - Duration::from_millis(50),
        "lease expired early"
    );
    assert!(must("get", s.get(&stay)).is_some());
    match s.keep_alive(lease) {
        Err(StoreError::LeaseNotFound { lease: l }) => assert_eq!(l, lease),
        other => panic!("keep_alive of an expired lease: {other:?}"),
    }
}

/// keep_alive renews the lease for a full ttl; once renewals stop, it expires.
pub fn lease_keep_alive<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("lease_keep_alive");
    let key = format!("{p}k");
    let lease = must("grant", s.grant_lease(TTL));
    must("create", s.create(&key, b"v", Some(lease))).expect("no conflict");
    let until = Instant::now() + TTL * 2;
    while Instant::now() < until {
        must("keep_alive", s.keep_alive(lease));
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        must("get", s.get(&key)).is_some(),
        "key of a kept-alive lease vanished"
    );
    must("keep_alive", s.keep_alive(lease));
    let renewed = Instant::now();
    let w = must("watch", s.watch(&p, must("list", s.list(&p)).revision));
    wait_deleted(&s, &w, &[key], renewed + TTL + Duration::from_secs(1));
}

/// revoke deletes the lease's keys at once (each a Delete event); the lease
/// is then unknown.
pub fn lease_revoke<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("lease_revoke");
    let lease = must("grant", s.grant_lease(Duration::from_secs(30)));
    let keys = [format!("{p}a"), format!("{p}b"), format!("{p}c")];
    for k in &keys {
        must("create", s.create(k, b"v", Some(lease))).expect("no conflict");
    }
    let other = must("grant", s.grant_lease(Duration::from_secs(30)));
    let kept = format!("{p}other");
    must("create", s.create(&kept, b"v", Some(other))).expect("no conflict");
    let w = must("watch", s.watch(&p, must("list", s.list(&p)).revision));
    must("revoke", s.revoke_lease(lease));
    for k in &keys {
        assert_eq!(must("get", s.get(k)), None, "{k} survived revoke");
    }
    let mut deleted: Vec<String> = (0..keys.len())
        .map(|_| next_event(&w))
        .map(|e| {
            assert_delete(&e, &e.kv.key, None);
            e.kv.key
        })
        .collect();
    deleted.sort();
    assert_eq!(deleted, keys);
    expect_quiet(&w);
    assert!(must("get", s.get(&kept)).is_some());
    assert!(matches!(
        s.revoke_lease(lease),
        Err(StoreError::LeaseNotFound { .. })
    ));
    assert!(matches!(
        s.keep_alive(lease),
        Err(StoreError::LeaseNotFound { .. })
    ));
    must("revoke", s.revoke_lease(other));
}

/// Attaching a key to a revoked (unknown) lease is
/// [`StoreError::LeaseNotFound`] and creates nothing.
pub fn lease_unknown<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let key = format!("{}k", unique_prefix("lease_unknown"));
    let lease = must("grant", s.grant_lease(TTL));
    must("revoke", s.revoke_lease(lease));
    match s.create(&key, b"v", Some(lease)) {
        Err(StoreError::LeaseNotFound { lease: l }) => assert_eq!(l, lease),
        other => panic!("create with an unknown lease: {other:?}"),
    }
    assert_eq!(must("get", s.get(&key)), None);
    match s.keep_alive(lease) {
        Err(StoreError::LeaseNotFound { .. }) => {}
        other => panic!("keep_alive of an unknown lease: {other:?}"),
    }
}

/// The number of increments per thread in [`concurrent_cas_increments`].
pub const INCREMENTS_PER_THREAD: u64 = 25;

/// 8 threads each add 1 to one counter [`INCREMENTS_PER_THREAD`] times by
/// read + compare-and-swap with retry: no update is lost.
pub fn concurrent_cas_increments<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let key = format!("{}counter", unique_prefix("concurrent_cas_increments"));
    created(&s, &key, b"0");
    let threads = 8;
    let conflicts = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for _ in 0..INCREMENTS_PER_THREAD {
                    let mut kv = get_some(&s, &key);
                    loop {
                        // Widen the read-to-CAS window so threads interleave
                        // even on a fast backend.
                        std::thread::yield_now();
                        let n: u64 = std::str::from_utf8(&kv.value)
                            .expect("utf-8")
                            .parse()
                            .expect("number");
                        let next = (n + 1).to_string();
                        match must("update", s.update(&key, next.as_bytes(), kv.mod_revision)) {
                            Ok(_) => break,
                            Err(Conflict { current }) => {
                                conflicts.fetch_add(1, Ordering::Relaxed);
                                kv = current.expect("counter vanished");
                            }
                        }
                    }
                }
            });
        }
    });
    let total = threads * INCREMENTS_PER_THREAD;
    assert_eq!(
        get_some(&s, &key).value,
        total.to_string().as_bytes(),
        "lost updates ({} conflicts retried)",
        conflicts.load(Ordering::Relaxed)
    );
}

/// 8 threads create the same key at once: exactly one wins, the others get a
/// conflict carrying the winner's kv.
pub fn concurrent_create<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("concurrent_create");
    for round in 0..5 {
        let key = format!("{p}k{round}");
        let threads = 8;
        let barrier = Barrier::new(threads);
        let results = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for t in 0..threads {
                let (s, key, barrier, results) = (&s, &key, &barrier, &results);
                scope.spawn(move || {
                    barrier.wait();
                    let r = must("create", s.create(key, t.to_string().as_bytes(), None));
                    results
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((t, r));
                });
            }
        });
        let results = results
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let winners: Vec<_> = results.iter().filter(|(_, r)| r.is_ok()).collect();
        assert_eq!(winners.len(), 1, "winners: {winners:?}");
        let (winner, rev) = (winners[0].0, *winners[0].1.as_ref().expect("ok"));
        let kv = get_some(&s, &key);
        assert_eq!(kv.value, winner.to_string().as_bytes());
        assert_eq!(kv.mod_revision, rev);
        for (_, r) in &results {
            if let Err(c) = r {
                assert_eq!(c.current.as_ref(), Some(&kv));
            }
        }
    }
}

fn committed<S: Store>(s: &S, ops: &[TxnOp<'_>]) -> Revision {
    match must("commit", s.commit(ops)) {
        Ok(rev) => rev,
        Err(c) => panic!("commit {ops:?}: unexpected conflict {c:?}"),
    }
}

fn txn_conflict<S: Store>(s: &S, ops: &[TxnOp<'_>]) -> TxnConflict {
    match must("commit", s.commit(ops)) {
        Err(c) => c,
        Ok(rev) => panic!("commit {ops:?}: expected a conflict, committed at {rev}"),
    }
}

/// A transaction whose condition fails anywhere writes nothing: not the ops
/// before the failing one, not the ones after it, and the store revision
/// does not move.
pub fn txn_all_or_nothing<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("txn_all_or_nothing");
    let (a, b, c, d) = (
        format!("{p}a"),
        format!("{p}b"),
        format!("{p}c"),
        format!("{p}d"),
    );
    let ra = created(&s, &a, b"a1");
    let rb = created(&s, &b, b"b1");
    created(&s, &d, b"d1");
    let before = must("list", s.list(&p));
    // The failing op in the middle, at the end, and first.
    let stale = [
        vec![
            TxnOp::Update {
                key: &a,
                value: b"a2",
                expected: ra,
            },
            TxnOp::Update {
                key: &b,
                value: b"b2",
                expected: rb + 1000,
            },
            TxnOp::Create {
                key: &c,
                value: b"c1",
                lease: None,
            },
        ],
        vec![
            TxnOp::Create {
                key: &c,
                value: b"c1",
                lease: None,
            },
            TxnOp::Delete {
                key: &d,
                expected: None,
            },
            TxnOp::Create {
                key: &a,
                value: b"again",
                lease: None,
            },
        ],
        vec![
            TxnOp::Delete {
                key: &c,
                expected: Some(1),
            },
            TxnOp::Update {
                key: &a,
                value: b"a2",
                expected: ra,
            },
        ],
    ];
    for ops in &stale {
        txn_conflict(&s, ops);
        let after = must("list", s.list(&p));
        assert_eq!(after.kvs, before.kvs, "a failed commit wrote something");
        assert_eq!(
            after.revision, before.revision,
            "a failed commit moved the revision"
        );
    }
    // The same ops with the right conditions go through.
    let r = committed(
        &s,
        &[
            TxnOp::Update {
                key: &a,
                value: b"a2",
                expected: ra,
            },
            TxnOp::Update {
                key: &b,
                value: b"b2",
                expected: rb,
            },
            TxnOp::Create {
                key: &c,
                value: b"c1",
                lease: None,
            },
        ],
    );
    assert!(r > before.revision);
    assert_eq!(get_some(&s, &a).value, b"a2");
    assert_eq!(get_some(&s, &b).value, b"b2");
    assert_eq!(get_some(&s, &c).value, b"c1");
}

/// Every key a transaction writes gets the commit's one revision; the
/// revision is above every earlier one and below every later one.
pub fn txn_one_revision<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("txn_one_revision");
    let keys: Vec<String> = (0..5).map(|i| format!("{p}k{i}")).collect();
    let r0 = created(&s, &keys[0], b"old");
    let ops: Vec<TxnOp<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            if i == 0 {
                TxnOp::Update {
                    key: k,
                    value: b"new",
                    expected: r0,
                }
            } else {
                TxnOp::Create {
                    key: k,
                    value: b"new",
                    lease: None,
                }
            }
        })
        .collect();
    let r = committed(&s, &ops);
    assert!(r > r0, "commit at {r} after a write at {r0}");
    for (i, k) in keys.iter().enumerate() {
        let kv = get_some(&s, k);
        assert_eq!(kv.value, b"new");
        assert_eq!(kv.mod_revision, r, "{k}");
        let create = if i == 0 { r0 } else { r };
        assert_eq!(kv.create_revision, create, "{k}");
    }
    let l = must("list", s.list(&p));
    assert!(l.revision >= r);
    // The next write takes a later revision, one commit or one key.
    let r2 = committed(
        &s,
        &[TxnOp::Delete {
            key: &keys[4],
            expected: Some(r),
        }],
    );
    assert!(r2 > r);
    let r3 = created(&s, &format!("{p}after"), b"x");
    assert!(r3 > r2);
    // A commit that deletes only missing keys writes nothing: it returns a
    // revision no later than the store's, and the next write still moves on.
    let r4 = committed(
        &s,
        &[TxnOp::Delete {
            key: &format!("{p}missing"),
            expected: None,
        }],
    );
    assert!(r4 >= r3, "{r4} before the last write {r3}");
    let r5 = created(&s, &format!("{p}last"), b"x");
    assert!(r5 > r4);
}

/// A conflict names the first op whose condition failed (even when later ones
/// fail too) and carries that key's current state, for every kind of op.
pub fn txn_conflict_index<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("txn_conflict_index");
    let (a, b, missing) = (format!("{p}a"), format!("{p}b"), format!("{p}missing"));
    let ra = created(&s, &a, b"a");
    created(&s, &b, b"b");
    let kv_a = get_some(&s, &a);
    let kv_b = get_some(&s, &b);
    let ok_update = TxnOp::Update {
        key: &a,
        value: b"x",
        expected: ra,
    };
    let cases: Vec<(Vec<TxnOp<'_>>, usize, Option<KeyValue>)> = vec![
        // create of an existing key
        (
            vec![
                ok_update,
                TxnOp::Create {
                    key: &b,
                    value: b"x",
                    lease: None,
                },
            ],
            1,
            Some(kv_b.clone()),
        ),
        // update of a missing key
        (
            vec![TxnOp::Update {
                key: &missing,
                value: b"x",
                expected: 1,
            }],
            0,
            None,
        ),
        // update at a stale revision
        (
            vec![
                TxnOp::Delete {
                    key: &missing,
                    expected: None,
                },
                ok_update,
                TxnOp::Update {
                    key: &b,
                    value: b"x",
                    expected: kv_b.mod_revision + 1000,
                },
            ],
            2,
            Some(kv_b.clone()),
        ),
        // conditional delete of a missing key
        (
            vec![
                ok_update,
                TxnOp::Delete {
                    key: &missing,
                    expected: Some(1),
                },
            ],
            1,
            None,
        ),
        // conditional delete at a wrong revision
        (
            vec![TxnOp::Delete {
                key: &a,
                expected: Some(ra + 1000),
            }],
            0,
            Some(kv_a.clone()),
        ),
        // two failing ops: the first is reported
        (
            vec![
                TxnOp::Create {
                    key: &missing,
                    value: b"x",
                    lease: None,
                },
                TxnOp::Create {
                    key: &a,
                    value: b"x",
                    lease: None,
                },
                TxnOp::Update {
                    key: &b,
                    value: b"x",
                    expected: kv_b.mod_revision + 1000,
                },
            ],
            1,
            Some(kv_a.clone()),
        ),
    ];
    for (ops, index, current) in cases {
        let c = txn_conflict(&s, &ops);
        assert_eq!(c, TxnConflict { index, current }, "ops {ops:?}");
    }
    assert_eq!(get_some(&s, &a), kv_a);
    assert_eq!(get_some(&s, &b), kv_b);
    assert_eq!(must("get", s.get(&missing)), None);
}

/// Create, update, conditional and unconditional deletes in one commit:
/// update keeps create_revision and lease, a create attaches its lease, an
/// unconditional delete of a missing key is fine.
pub fn txn_mixed_ops<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("txn_mixed_ops");
    let [new, upd, del_if, del_any, missing, leased] =
        ["new", "upd", "del_if", "del_any", "missing", "leased"].map(|k| format!("{p}{k}"));
    let lease = must("grant", s.grant_lease(Duration::from_secs(30)));
    let r_upd = must("create", s.create(&upd, b"u1", Some(lease))).expect("no conflict");
    let r_del = created(&s, &del_if, b"d");
    created(&s, &del_any, b"d");
    let r = committed(
        &s,
        &[
            TxnOp::Create {
                key: &new,
                value: b"n",
                lease: None,
            },
            TxnOp::Update {
                key: &upd,
                value: b"u2",
                expected: r_upd,
            },
            TxnOp::Delete {
                key: &del_if,
                expected: Some(r_del),
            },
            TxnOp::Delete {
                key: &del_any,
                expected: None,
            },
            TxnOp::Delete {
                key: &missing,
                expected: None,
            },
            TxnOp::Create {
                key: &leased,
                value: b"l",
                lease: Some(lease),
            },
        ],
    );
    assert_eq!(
        get_some(&s, &new),
        KeyValue {
            key: new.clone(),
            value: b"n".to_vec(),
            create_revision: r,
            mod_revision: r,
            lease: None,
        }
    );
    assert_eq!(
        get_some(&s, &upd),
        KeyValue {
            key: upd.clone(),
            value: b"u2".to_vec(),
            create_revision: r_upd,
            mod_revision: r,
            lease: Some(lease),
        }
    );
    assert_eq!(must("get", s.get(&del_if)), None);
    assert_eq!(must("get", s.get(&del_any)), None);
    assert_eq!(must("get", s.get(&missing)), None);
    assert_eq!(get_some(&s, &leased).lease, Some(lease));
    let keys: Vec<String> = must("list", s.list(&p))
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, [leased.clone(), new.clone(), upd.clone()]);
    // Both leased keys (the updated and the created one) go with the lease.
    must("revoke", s.revoke_lease(lease));
    assert_eq!(must("get", s.get(&upd)), None);
    assert_eq!(must("get", s.get(&leased)), None);
    assert!(must("get", s.get(&new)).is_some());
}

/// Empty transactions, the same key twice, bad keys and values are
/// [`StoreError::Invalid`]; an unknown lease is [`StoreError::LeaseNotFound`];
/// none of them writes anything.
pub fn txn_invalid<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("txn_invalid");
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    let ra = created(&s, &a, b"a");
    let before = must("list", s.list(&p));
    assert_invalid("empty commit", s.commit(&[]));
    assert_invalid(
        "the same key twice",
        s.commit(&[
            TxnOp::Update {
                key: &a,
                value: b"x",
                expected: ra,
            },
            TxnOp::Create {
                key: &b,
                value: b"x",
                lease: None,
            },
            TxnOp::Delete {
                key: &a,
                expected: None,
            },
        ]),
    );
    assert_invalid(
        "empty key",
        s.commit(&[
            TxnOp::Create {
                key: &b,
                value: b"x",
                lease: None,
            },
            TxnOp::Delete {
                key: "",
                expected: None,
            },
        ]),
    );
    let huge = vec![0u8; MAX_VALUE_LEN + 1];
    assert_invalid(
        "huge value",
        s.commit(&[
            TxnOp::Create {
                key: &b,
                value: b"x",
                lease: None,
            },
            TxnOp::Update {
                key: &a,
                value: &huge,
                expected: ra,
            },
        ]),
    );
    let lease = must("grant", s.grant_lease(TTL));
    must("revoke", s.revoke_lease(lease));
    match s.commit(&[
        TxnOp::Update {
            key: &a,
            value: b"x",
            expected: ra,
        },
        TxnOp::Create {
            key: &b,
            value: b"x",
            lease: Some(lease),
        },
    ]) {
        Err(StoreError::LeaseNotFound { lease: l }) => assert_eq!(l, lease),
        other => panic!("commit with an unknown lease: {other:?}"),
    }
    let after = must("list", s.list(&p));
    assert_eq!(after.kvs, before.kvs, "a refused commit wrote something");
}

/// A watch sees every key a transaction writes as its own event, all with
/// the commit's revision, in op order; a failed commit shows nothing.
pub fn txn_watch_same_revision<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("txn_watch_same_revision");
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|k| format!("{p}{k}"));
    let rb = created(&s, &b, b"b1");
    let rc = created(&s, &c, b"c1");
    let start = must("list", s.list(&p)).revision;
    let w = must("watch", s.watch(&p, start));
    txn_conflict(
        &s,
        &[
            TxnOp::Create {
                key: &d,
                value: b"d",
                lease: None,
            },
            TxnOp::Update {
                key: &b,
                value: b"x",
                expected: rb + 1000,
            },
        ],
    );
    // Op order, not key order: d first.
    let r = committed(
        &s,
        &[
            TxnOp::Create {
                key: &d,
                value: b"d1",
                lease: None,
            },
            TxnOp::Update {
                key: &b,
                value: b"b2",
                expected: rb,
            },
            TxnOp::Delete {
                key: &c,
                expected: Some(rc),
            },
            TxnOp::Create {
                key: &a,
                value: b"a1",
                lease: None,
            },
        ],
    );
    assert_put(&next_event(&w), &d, b"d1", r);
    assert_put(&next_event(&w), &b, b"b2", r);
    assert_delete(&next_event(&w), &c, Some(r));
    assert_put(&next_event(&w), &a, b"a1", r);
    expect_quiet(&w);
    // A watch started in the middle of history replays the same.
    let w = must("watch", s.watch(&p, start));
    let got: Vec<(String, Revision)> = (0..4)
        .map(|_| {
            let e = next_event(&w);
            (e.kv.key, e.kv.mod_revision)
        })
        .collect();
    assert_eq!(got, [(d, r), (b, r), (c, r), (a.clone(), r)]);
    expect_quiet(&w);
    // Watching from the commit's revision sees none of it.
    let w = must("watch", s.watch(&p, r));
    expect_quiet(&w);
    let r2 = must("update", s.update(&a, b"a2", r)).expect("no conflict");
    assert_put(&next_event(&w), &a, b"a2", r2);
}

/// An unconditional [`TxnOp::Put`]: it never fails a commit, yet writes
/// nothing (and the revision does not move) when another op's condition
/// fails; in a commit that succeeds it creates an absent key, replaces a
/// present one (keeping its `create_revision`, dropping its lease) at the
/// commit's revision, and watchers see it like any other write.
pub fn txn_put<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("txn_put");
    let [guard, absent, present, leased] =
        ["guard", "absent", "present", "leased"].map(|k| format!("{p}{k}"));
    let rg = created(&s, &guard, b"g1");
    let rp = created(&s, &present, b"p1");
    let lease = must("grant", s.grant_lease(Duration::from_secs(30)));
    let rl = must("create", s.create(&leased, b"l1", Some(lease))).expect("no conflict");
    let before = must("list", s.list(&p));
    let puts = |suffix: &'static [u8; 2]| {
        [
            TxnOp::Put {
                key: &absent,
                value: suffix,
            },
            TxnOp::Put {
                key: &present,
                value: suffix,
            },
            TxnOp::Put {
                key: &leased,
                value: suffix,
            },
        ]
    };
    // The guard's condition fails, before or after the puts: nothing written.
    let stale = TxnOp::Update {
        key: &guard,
        value: b"g2",
        expected: rg + 1000,
    };
    for ops in [
        [&[stale][..], &puts(b"x1")[..]].concat(),
        [&puts(b"x1")[..], &[stale][..]].concat(),
    ] {
        let c = txn_conflict(&s, &ops);
        assert_eq!(c.current.map(|kv| kv.key), Some(guard.clone()));
        let after = must("list", s.list(&p));
        assert_eq!(after.kvs, before.kvs, "a failed commit wrote a put");
        assert_eq!(
            after.revision, before.revision,
            "a failed commit moved the revision"
        );
    }
    // The guard holds: every put is written at the commit's revision.
    let w = must("watch", s.watch(&p, before.revision));
    let ok = TxnOp::Update {
        key: &guard,
        value: b"g2",
        expected: rg,
    };
    let r = committed(&s, &[&[ok][..], &puts(b"v2")[..]].concat());
    assert!(
        r > before.revision,
        "commit at {r} after {}",
        before.revision
    );
    let expect = |key: &str, create_revision| KeyValue {
        key: key.to_string(),
        value: b"v2".to_vec(),
        create_revision,
        mod_revision: r,
        lease: None,
    };
    assert_eq!(get_some(&s, &absent), expect(&absent, r), "created");
    assert_eq!(get_some(&s, &present), expect(&present, rp), "replaced");
    assert_eq!(get_some(&s, &leased), expect(&leased, rl), "lease dropped");
    assert_put(&next_event(&w), &guard, b"g2", r);
    for k in [&absent, &present, &leased] {
        assert_put(&next_event(&w), k, b"v2", r);
    }
    expect_quiet(&w);
    // The lease no longer holds the key it had.
    must("revoke", s.revoke_lease(lease));
    assert_eq!(get_some(&s, &leased).value, b"v2");
    // A put alone is a commit of its own, at a later revision.
    let r2 = committed(
        &s,
        &[TxnOp::Put {
            key: &present,
            value: b"v3",
        }],
    );
    assert!(r2 > r, "{r2} after {r}");
    let kv = get_some(&s, &present);
    assert_eq!(
        (kv.value, kv.create_revision, kv.mod_revision),
        (b"v3".to_vec(), rp, r2)
    );
    // A too large put value is refused like any other.
    let huge = vec![0u8; MAX_VALUE_LEN + 1];
    assert_invalid(
        "huge put",
        s.commit(&[TxnOp::Put {
            key: &absent,
            value: &huge,
        }]),
    );
}

/// The number of moves per thread in [`concurrent_txn_transfers`].
pub const TRANSFERS_PER_THREAD: u64 = 25;

fn counter(kv: &KeyValue) -> u64 {
    std::str::from_utf8(&kv.value)
        .expect("utf-8")
        .parse()
        .expect("number")
}

/// 8 threads each move [`TRANSFERS_PER_THREAD`] tokens from one key to
/// another, both keys in one compare-and-swap transaction retried with the
/// conflict's current value: no token is lost or duplicated, and a reader
/// listing both keys meanwhile always sees the full count.
pub fn concurrent_txn_transfers<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("concurrent_txn_transfers");
    let (from, to) = (format!("{p}from"), format!("{p}to"));
    let threads = 8;
    let total = threads * TRANSFERS_PER_THREAD;
    let total_s = total.to_string();
    committed(
        &s,
        &[
            TxnOp::Create {
                key: &from,
                value: total_s.as_bytes(),
                lease: None,
            },
            TxnOp::Create {
                key: &to,
                value: b"0",
                lease: None,
            },
        ],
    );
    let conflicts = AtomicU64::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let listings = AtomicU64::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| loop {
            // check first, then look at `done`: at least one listing always
            // runs, however the scheduler orders the threads
            let finished = done.load(Ordering::Acquire);
            {
                let l = must("list", s.list(&p));
                assert_eq!(l.kvs.len(), 2, "{l:?}");
                let sum: u64 = l.kvs.iter().map(counter).sum();
                assert_eq!(sum, total, "a listing saw half a transaction: {l:?}");
                assert_eq!(
                    l.kvs[0].mod_revision, l.kvs[1].mod_revision,
                    "both keys are always written together: {l:?}"
                );
                listings.fetch_add(1, Ordering::Relaxed);
                std::thread::yield_now();
            }
            if finished {
                break;
            }
        });
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    for _ in 0..TRANSFERS_PER_THREAD {
                        let mut kvs = [get_some(&s, &from), get_some(&s, &to)];
                        loop {
                            std::thread::yield_now();
                            let next =
                                [counter(&kvs[0]) - 1, counter(&kvs[1]) + 1].map(|n| n.to_string());
                            let ops = [0, 1].map(|i| TxnOp::Update {
                                key: &kvs[i].key,
                                value: next[i].as_bytes(),
                                expected: kvs[i].mod_revision,
                            });
                            match must("commit", s.commit(&ops)) {
                                Ok(_) => break,
                                Err(TxnConflict { index, current }) => {
                                    conflicts.fetch_add(1, Ordering::Relaxed);
                                    kvs[index] = current.expect("counter vanished");
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            if let Err(panic) = w.join() {
                done.store(true, Ordering::Release);
                std::panic::resume_unwind(panic);
            }
        }
        done.store(true, Ordering::Release);
    });
    let (f, t) = (get_some(&s, &from), get_some(&s, &to));
    assert_eq!(
        (counter(&f), counter(&t)),
        (0, total),
        "lost or duplicated transfers ({} conflicts retried)",
        conflicts.load(Ordering::Relaxed)
    );
    assert_eq!(f.mod_revision, t.mod_revision);
    assert!(listings.load(Ordering::Relaxed) > 0);
}
