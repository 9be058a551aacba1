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

mod basics;
mod concurrency;
mod lease;
mod txn;
mod watch;

pub use basics::*;
pub use concurrency::*;
pub use lease::*;
pub use txn::*;
pub use watch::*;

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

pub(crate) fn must<T>(what: &str, r: crate::StoreResult<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error: {e}"),
    }
}

pub(crate) fn created<S: Store>(s: &S, key: &str, value: &[u8]) -> Revision {
    match must("create", s.create(key, value, None)) {
        Ok(rev) => rev,
        Err(c) => panic!("create {key}: unexpected conflict {c:?}"),
    }
}

pub(crate) fn get_some<S: Store>(s: &S, key: &str) -> KeyValue {
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

pub(crate) fn assert_put(e: &Event, key: &str, value: &[u8], rev: Revision) {
    assert_eq!(e.kind, EventKind::Put, "event {e:?}");
    assert_eq!(e.kv.key, key, "event {e:?}");
    assert_eq!(e.kv.value, value, "event {e:?}");
    assert_eq!(e.kv.mod_revision, rev, "event {e:?}");
}

pub(crate) fn assert_delete(e: &Event, key: &str, rev: Option<Revision>) {
    assert_eq!(e.kind, EventKind::Delete, "event {e:?}");
    assert_eq!(e.kv.key, key, "event {e:?}");
    assert!(e.kv.value.is_empty(), "delete event with a value: {e:?}");
    if let Some(rev) = rev {
        assert_eq!(e.kv.mod_revision, rev, "event {e:?}");
    }
}

pub(crate) fn committed<S: Store>(s: &S, ops: &[TxnOp<'_>]) -> Revision {
    match must("commit", s.commit(ops)) {
        Ok(rev) => rev,
        Err(c) => panic!("commit {ops:?}: unexpected conflict {c:?}"),
    }
}

pub(crate) fn txn_conflict<S: Store>(s: &S, ops: &[TxnOp<'_>]) -> TxnConflict {
    match must("commit", s.commit(ops)) {
        Err(c) => c,
        Ok(rev) => panic!("commit {ops:?}: expected a conflict, committed at {rev}"),
    }
}
