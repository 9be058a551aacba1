//! A [`Store`] that times every request into the metrics
//! (`weft_store_request_duration_seconds{backend,op}`), around the one weftd
//! opens for IPAM. Watches are long-lived and not timed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_store::{
    Conflict, KeyValue, LeaseId, Listing, Revision, Store, StoreResult, TxnConflict, TxnOp, Watch,
};

pub struct TimedStore {
    inner: Arc<dyn Store>,
}

impl TimedStore {
    pub fn wrap(inner: Arc<dyn Store>) -> Arc<dyn Store> {
        Arc::new(TimedStore { inner })
    }

    fn timed<T>(&self, op: &'static str, f: impl FnOnce(&dyn Store) -> T) -> T {
        let start = Instant::now();
        let r = f(self.inner.as_ref());
        super::telemetry().observe_store(self.inner.backend(), op, start.elapsed());
        r
    }
}

impl Store for TimedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        self.timed("get", |s| s.get(key))
    }

    fn list(&self, prefix: &str) -> StoreResult<Listing> {
        self.timed("list", |s| s.list(prefix))
    }

    fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> StoreResult<Result<Revision, Conflict>> {
        self.timed("create", |s| s.create(key, value, lease))
    }

    fn update(
        &self,
        key: &str,
        value: &[u8],
        expected: Revision,
    ) -> StoreResult<Result<Revision, Conflict>> {
        self.timed("update", |s| s.update(key, value, expected))
    }

    fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> StoreResult<Result<Option<Revision>, Conflict>> {
        self.timed("delete", |s| s.delete(key, expected))
    }

    fn commit(&self, ops: &[TxnOp<'_>]) -> StoreResult<Result<Revision, TxnConflict>> {
        self.timed("commit", |s| s.commit(ops))
    }

    fn watch(&self, prefix: &str, after: Revision) -> StoreResult<Watch> {
        self.inner.watch(prefix, after)
    }

    fn grant_lease(&self, ttl: Duration) -> StoreResult<LeaseId> {
        self.timed("grant_lease", |s| s.grant_lease(ttl))
    }

    fn keep_alive(&self, lease: LeaseId) -> StoreResult<()> {
        self.timed("keep_alive", |s| s.keep_alive(lease))
    }

    fn revoke_lease(&self, lease: LeaseId) -> StoreResult<()> {
        self.timed("revoke_lease", |s| s.revoke_lease(lease))
    }
}
