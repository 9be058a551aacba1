//! The etcd v3 backend, on etcd's gRPC API through the `etcd-client` crate
//! (tonic, prost).
//!
//! [`Store`] is blocking and only the Kubernetes adapter of weftd is async,
//! so the store owns a small tokio runtime (one worker thread, `etcd-rt`):
//! each blocking call hands its future to the runtime and waits for the
//! answer on a channel (safe from any thread, also one that runs a runtime of
//! its own), and each watch is a task there feeding [`Watch`]'s channel.
//!
//! Every request tries the endpoints in turn, starting with the last one that
//! worked, each attempt bounded by [`EtcdOptions::request_timeout`], the whole
//! operation by [`EtcdOptions::deadline`]; when no endpoint answers in time
//! the result is [`StoreError::Unavailable`] naming the endpoints
//! (`cluster.rs`). Transactions are `txn.rs`, watches `watch.rs`.
//!
//! A request whose response is lost (connection reset after the request was
//! sent) is retried on another endpoint: a conditional write that did apply
//! then reports a conflict carrying its own write. Callers that care compare
//! the conflict's value with what they wrote.

mod cluster;
mod convert;
mod txn;
mod watch;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use etcd_client::{CompactionOptions, GetOptions};

use self::cluster::{CallError, Cluster, Member};
use self::convert::{definite, is_lease_not_found, owned_kv, prefix_range, rev, Endpoint};
use crate::{
    check_key, Conflict, KeyValue, LeaseId, Listing, Revision, Store, StoreError, StoreResult,
    TxnConflict, TxnOp, Watch,
};

/// Tuning of the etcd backend.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Bound on one attempt against one endpoint (connect, send, answer).
    pub request_timeout: Duration,
    /// Bound on a TCP connect to one endpoint.
    pub connect_timeout: Duration,
    /// Bound on a whole operation, over every endpoint and retry; past it the
    /// operation is [`StoreError::Unavailable`].
    pub deadline: Duration,
    /// How long a watch keeps trying to reconnect before it gives up with
    /// [`crate::WatchMessage::Closed`].
    pub watch_reconnect_for: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(500),
            deadline: Duration::from_secs(4),
            watch_reconnect_for: Duration::from_secs(30),
        }
    }
}

/// One member's view, from etcd's `Maintenance.Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberStatus {
    pub member_id: u64,
    /// The member id of the leader this member knows (0: none).
    pub leader: u64,
    pub revision: Revision,
}

/// The store's runtime, shut down without waiting when the store goes (a
/// runtime dropped the ordinary way would refuse inside another runtime).
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A [`Store`] on an etcd v3 cluster.
pub struct EtcdStore {
    cluster: Arc<Cluster>,
    handle: tokio::runtime::Handle,
    // Last: dropped after the clients that live on it.
    _rt: Runtime,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        reason: format!("{what}: {e}"),
    }
}

fn store_error(what: &str, e: CallError) -> StoreError {
    match e {
        CallError::Unavailable(e) => e,
        CallError::Definite { code, message } => definite(what, code, &message),
    }
}

/// weft's lease id as etcd's; one etcd cannot have is not found.
fn etcd_lease(lease: LeaseId) -> StoreResult<i64> {
    i64::try_from(lease).map_err(|_| StoreError::LeaseNotFound { lease })
}

impl EtcdStore {
    /// A store on the cluster behind `endpoints` (`http://host:port`). It
    /// checks that one endpoint answers within the deadline.
    pub fn connect(endpoints: &[String], opts: EtcdOptions) -> StoreResult<EtcdStore> {
        if endpoints.is_empty() {
            return Err(StoreError::Invalid {
                reason: "no etcd endpoint given".into(),
            });
        }
        let eps = endpoints
            .iter()
            .map(|e| Endpoint::parse(e).map_err(|reason| StoreError::Invalid { reason }))
            .collect::<StoreResult<Vec<_>>>()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd-rt")
            .enable_all()
            .build()
            .map_err(|e| unavailable("cannot start the etcd store's runtime", e))?;
        let handle = rt.handle().clone();
        let cluster = block(&handle, async move {
            Cluster::new(eps, opts)
                .await
                .map_err(|reason| StoreError::Invalid { reason })
        })?;
        let store = EtcdStore {
            cluster: Arc::new(cluster),
            handle,
            _rt: Runtime(Some(rt)),
        };
        store.status()?;
        Ok(store)
    }

    /// Runs `f` against the members (with failover) on the runtime and
    /// waits for the outcome.
    fn call<T, F, Fut>(&self, f: F) -> StoreResult<Result<T, CallError>>
    where
        T: Send + 'static,
        F: Fn(Member) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let cluster = self.cluster.clone();
        block(&self.handle, async move { Ok(cluster.call(f).await) })
    }

    /// [`Self::call`] with every failure turned into the store's error.
    fn op<T, F, Fut>(&self, what: &str, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(Member) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        self.call(f)?.map_err(|e| store_error(what, e))
    }

    /// The status of whichever member answered.
    pub fn status(&self) -> StoreResult<MemberStatus> {
        let s = self.op(
            "status",
            |mut m| async move { m.maintenance.status().await },
        )?;
        let header = s.header();
        Ok(MemberStatus {
            member_id: header.map_or(0, |h| h.member_id()),
            leader: s.leader(),
            revision: header.map_or(0, |h| rev(h.revision())),
        })
    }

    /// Compacts the history up to `revision` (watches from before it then see
    /// [`crate::WatchMessage::Compacted`]).
    pub fn compact(&self, revision: Revision) -> StoreResult<()> {
        let r = convert::etcd_rev(revision);
        self.op("compact", move |mut m| async move {
            let physical = CompactionOptions::new().with_physical();
            m.kv.compact(r, Some(physical)).await
        })?;
        Ok(())
    }

    /// Watch tasks running now (each ends when its [`Watch`] is dropped, it
    /// is compacted, or it gives up): for tests and diagnostics.
    pub fn live_watches(&self) -> usize {
        self.cluster.live_watches.load(Ordering::Acquire)
    }

    fn range(&self, key: Vec<u8>, range_end: Option<Vec<u8>>) -> StoreResult<Listing> {
        let mut r = self.op("range", move |mut m| {
            let key = key.clone();
            let opts = range_end
                .clone()
                .map(|end| GetOptions::new().with_range(end));
            async move { m.kv.get(key, opts).await }
        })?;
        let revision = r.header().map_or(0, |h| rev(h.revision()));
        Ok(Listing {
            kvs: r.take_kvs().into_iter().map(owned_kv).collect(),
            revision,
        })
    }

    /// Runs `ops` as one etcd txn.
    fn txn(&self, ops: &[TxnOp<'_>]) -> StoreResult<txn::Outcome> {
        txn::check(ops)?;
        let req = txn::build(ops);
        let resp = self.call(move |mut m| {
            let req = req.clone();
            async move { m.kv.txn(req).await }
        })?;
        match resp {
            Ok(resp) => txn::decode(ops, &resp),
            Err(CallError::Definite { code, message }) if is_lease_not_found(code, &message) => {
                Err(self.missing_lease(ops))
            }
            Err(e) => Err(store_error("txn", e)),
        }
    }

    /// The lease error of a txn etcd refused for an unknown lease: the first
    /// of its leases etcd does not know.
    fn missing_lease(&self, ops: &[TxnOp<'_>]) -> StoreError {
        let leases = txn::leases(ops);
        let lease = leases
            .iter()
            .copied()
            .find(|&l| !matches!(self.lease_ttl(l), Ok(Some(_))))
            .or(leases.first().copied())
            .unwrap_or(0);
        StoreError::LeaseNotFound { lease }
    }

    /// The remaining TTL of a lease, `None` when etcd does not know it.
    fn lease_ttl(&self, lease: LeaseId) -> StoreResult<Option<i64>> {
        let id = etcd_lease(lease)?;
        match self.call(move |mut m| async move { m.lease.time_to_live(id, None).await })? {
            Ok(r) => Ok((r.ttl() >= 0).then_some(r.ttl())),
            Err(CallError::Definite { code, message }) if is_lease_not_found(code, &message) => {
                Ok(None)
            }
            Err(e) => Err(store_error("lease time-to-live", e)),
        }
    }

    /// A lease call whose "not found" is [`StoreError::LeaseNotFound`].
    fn lease_op<T, F, Fut>(&self, what: &str, lease: LeaseId, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(Member, i64) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let id = etcd_lease(lease)?;
        match self.call(move |m| f(m, id))? {
            Ok(v) => Ok(v),
            Err(CallError::Definite { code, message }) if is_lease_not_found(code, &message) => {
                Err(StoreError::LeaseNotFound { lease })
            }
            Err(e) => Err(store_error(what, e)),
        }
    }
}

/// Runs `fut` on the runtime behind `handle` and waits for it. Spawning
/// and waiting on a channel (rather than `block_on`) works from any thread,
/// including one inside another runtime.
fn block<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    fut: impl Future<Output = StoreResult<T>> + Send + 'static,
) -> StoreResult<T> {
    let (tx, rx) = mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| unavailable("the etcd store's runtime", "stopped; restart weft"))?
}

fn conflict(c: TxnConflict) -> Conflict {
    Conflict { current: c.current }
}

impl Store for EtcdStore {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        check_key(key)?;
        Ok(self
            .range(key.as_bytes().to_vec(), None)?
            .kvs
            .into_iter()
            .next())
    }

    fn list(&self, prefix: &str) -> StoreResult<Listing> {
        let (key, end) = prefix_range(prefix);
        self.range(key, Some(end))
    }

    fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> StoreResult<Result<Revision, Conflict>> {
        Ok(self
            .txn(&[TxnOp::Create { key, value, lease }])?
            .map(|(rev, _)| rev)
            .map_err(conflict))
    }

    fn update(
        &self,
        key: &str,
        value: &[u8],
        expected: Revision,
    ) -> StoreResult<Result<Revision, Conflict>> {
        Ok(self
            .txn(&[TxnOp::Update {
                key,
                value,
                expected,
            }])?
            .map(|(rev, _)| rev)
            .map_err(conflict))
    }

    fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> StoreResult<Result<Option<Revision>, Conflict>> {
        Ok(self
            .txn(&[TxnOp::Delete { key, expected }])?
            .map(|(rev, deleted)| (deleted > 0).then_some(rev))
            .map_err(conflict))
    }

    fn commit(&self, ops: &[TxnOp<'_>]) -> StoreResult<Result<Revision, TxnConflict>> {
        Ok(self.txn(ops)?.map(|(rev, _)| rev))
    }

    fn watch(&self, prefix: &str, after: Revision) -> StoreResult<Watch> {
        let (tx, rx) = mpsc::channel();
        let watcher = watch::Watcher::new(self.cluster.clone(), prefix, after, tx);
        // The first stream is opened here, so an unreachable cluster is an
        // error of `watch` itself and the watch is in place when it returns.
        let (watcher, stream) = block(&self.handle, async move {
            let stream = watcher.open().await?;
            Ok((watcher, stream))
        })?;
        let guard = watcher.spawn(&self.handle, stream);
        Ok(Watch {
            rx,
            guard: Box::new(guard),
        })
    }

    fn grant_lease(&self, ttl: Duration) -> StoreResult<LeaseId> {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let secs = i64::try_from(secs.max(1)).unwrap_or(i64::MAX);
        let r = self.op("lease grant", move |mut m| async move {
            m.lease.grant(secs, None).await
        })?;
        if r.id() <= 0 {
            return Err(unavailable(
                "lease grant",
                "etcd answered without a lease id",
            ));
        }
        Ok(rev(r.id()))
    }

    fn keep_alive(&self, lease: LeaseId) -> StoreResult<()> {
        // One renewal: the keep-alive stream's first answer (etcd-client
        // reports a TTL of 0, an unknown lease, as "lease not found").
        self.lease_op("lease keep-alive", lease, |mut m, id| async move {
            m.lease.keep_alive(id).await.map(drop)
        })
    }

    fn revoke_lease(&self, lease: LeaseId) -> StoreResult<()> {
        self.lease_op("lease revoke", lease, |mut m, id| async move {
            m.lease.revoke(id).await.map(drop)
        })
    }
}
