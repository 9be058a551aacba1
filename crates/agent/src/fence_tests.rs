//! The migration fence against a weftd whose start straddles a whole
//! `weft store migrate`: it checked the store before the fence was written
//! and registers after the migration's last check.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use weft_datapath::RecordingDatapath;
use weft_store::embedded::EmbeddedStore;
use weft_store::{
    Conflict, KeyValue, LeaseId, Listing, Revision, Store, StoreResult, TxnConflict, TxnOp, Watch,
    MIGRATION_FENCE_KEY, NODES_PREFIX,
};

use crate::config::AgentConfig;

/// A store on which a migration finishes just before this weftd's
/// registration lands: the fence appears as the node key is created.
struct MigratedMeanwhile(EmbeddedStore);

impl Store for MigratedMeanwhile {
    fn backend(&self) -> &'static str {
        "etcd"
    }
    fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        self.0.get(key)
    }
    fn list(&self, prefix: &str) -> StoreResult<Listing> {
        self.0.list(prefix)
    }
    fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> StoreResult<Result<Revision, Conflict>> {
        if key.starts_with(NODES_PREFIX) {
            let fence = br#"{"moved_to":"kubernetes"}"#;
            self.0
                .commit(&[TxnOp::Put {
                    key: MIGRATION_FENCE_KEY,
                    value: fence,
                }])?
                .expect("an unconditional put");
        }
        self.0.create(key, value, lease)
    }
    fn update(
        &self,
        key: &str,
        value: &[u8],
        expected: Revision,
    ) -> StoreResult<Result<Revision, Conflict>> {
        self.0.update(key, value, expected)
    }
    fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> StoreResult<Result<Option<Revision>, Conflict>> {
        self.0.delete(key, expected)
    }
    fn commit(&self, ops: &[TxnOp<'_>]) -> StoreResult<Result<Revision, TxnConflict>> {
        self.0.commit(ops)
    }
    fn watch(&self, prefix: &str, after: Revision) -> StoreResult<Watch> {
        self.0.watch(prefix, after)
    }
    fn grant_lease(&self, ttl: Duration) -> StoreResult<LeaseId> {
        self.0.grant_lease(ttl)
    }
    fn keep_alive(&self, lease: LeaseId) -> StoreResult<()> {
        self.0.keep_alive(lease)
    }
    fn revoke_lease(&self, lease: LeaseId) -> StoreResult<()> {
        self.0.revoke_lease(lease)
    }
}

#[test]
fn a_weftd_registered_after_a_whole_migration_refuses_to_run() {
    let cfg = AgentConfig::parse_from([
        "weftd",
        "--node-name=n1",
        "--store=etcd",
        "--routing=native",
        "--node-ip=198.18.0.10",
        "--pool=10.10.0.0/16",
        "--spool-dir=/nonexistent-not-used",
        "--state-dir=/nonexistent-not-used",
    ]);
    let store = Arc::new(MigratedMeanwhile(EmbeddedStore::in_memory()));
    let err = crate::build_with(
        &cfg,
        store.clone(),
        Arc::new(EmbeddedStore::in_memory()),
        Arc::new(RecordingDatapath::new()),
    )
    .err()
    .expect("weftd refuses the fenced store");
    assert!(
        err.to_string().contains("migrated to kubernetes"),
        "{err:#}"
    );
    // nothing was allocated in the store the cluster left
    let blocks = store.list("/weft/ipam/v1/blocks/").unwrap();
    assert!(blocks.kvs.is_empty(), "{blocks:?}");
}

/// A store whose migration runs while this weftd's lease is lost: the
/// fence appears as the node re-registers (its second registration).
struct FencedOnReRegistration {
    inner: EmbeddedStore,
    registrations: std::sync::atomic::AtomicU32,
}

impl Store for FencedOnReRegistration {
    fn backend(&self) -> &'static str {
        "etcd"
    }
    fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        self.inner.get(key)
    }
    fn list(&self, prefix: &str) -> StoreResult<Listing> {
        self.inner.list(prefix)
    }
    fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> StoreResult<Result<Revision, Conflict>> {
        let n = self
            .registrations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if key.starts_with(NODES_PREFIX) && n == 1 {
            self.inner
                .commit(&[TxnOp::Put {
                    key: MIGRATION_FENCE_KEY,
                    value: br#"{"moved_to":"kubernetes"}"#,
                }])?
                .expect("an unconditional put");
        }
        self.inner.create(key, value, lease)
    }
    fn update(
        &self,
        key: &str,
        value: &[u8],
        expected: Revision,
    ) -> StoreResult<Result<Revision, Conflict>> {
        self.inner.update(key, value, expected)
    }
    fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> StoreResult<Result<Option<Revision>, Conflict>> {
        self.inner.delete(key, expected)
    }
    fn commit(&self, ops: &[TxnOp<'_>]) -> StoreResult<Result<Revision, TxnConflict>> {
        self.inner.commit(ops)
    }
    fn watch(&self, prefix: &str, after: Revision) -> StoreResult<Watch> {
        self.inner.watch(prefix, after)
    }
    fn grant_lease(&self, ttl: Duration) -> StoreResult<LeaseId> {
        self.inner.grant_lease(ttl)
    }
    fn keep_alive(&self, lease: LeaseId) -> StoreResult<()> {
        self.inner.keep_alive(lease)
    }
    fn revoke_lease(&self, lease: LeaseId) -> StoreResult<()> {
        self.inner.revoke_lease(lease)
    }
}

/// A weftd whose lease was lost re-registers; a migration that ran in the
/// meantime (it saw no registration, fenced, copied) is noticed right
/// after the re-registration, and the registration thread reports it and
/// stops renewing, so the caller stops writing to the store it left.
#[test]
fn a_re_registration_during_a_migration_finds_the_fence() {
    use crate::registry::{start_registration, NodeRecord, Registration};
    let store = Arc::new(FencedOnReRegistration {
        inner: EmbeddedStore::in_memory(),
        registrations: Default::default(),
    });
    let rec = NodeRecord {
        name: "n1".into(),
        underlay_v4: Some("198.18.0.10".parse().unwrap()),
        underlay_v6: None,
        vtep_mac: None,
        version: "t".into(),
    };
    let ttl = Duration::from_secs(2);
    let reg = start_registration(store.clone(), NODES_PREFIX, rec, ttl);
    assert_eq!(
        reg.recv_timeout(Duration::from_secs(5)).unwrap(),
        Registration::Live
    );
    // the lease is lost (weftd stalled past its TTL; the store ended it)
    let key = format!("{NODES_PREFIX}n1");
    let lease = store.get(&key).unwrap().unwrap().lease.unwrap();
    store.revoke_lease(lease).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match reg.recv_timeout(left).expect("the fence is reported") {
            Registration::Live => continue,
            Registration::Fenced(to) => {
                assert_eq!(to, "kubernetes");
                break;
            }
        }
    }
    // the thread ended: nothing renews the registration any more
    assert!(reg.recv_timeout(ttl).is_err());
    assert_eq!(
        store
            .registrations
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
}
