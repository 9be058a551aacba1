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
