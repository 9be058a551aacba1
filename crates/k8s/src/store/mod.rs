//! `--store kubernetes`: weft's [`Store`] on the Kubernetes API.
//!
//! # Design: the store is one object
//!
//! Every key lives in one custom object, a `WeftStore` of the `weft.dev`
//! group (`kubectl get weftstores`), and every write (a single-key write, a
//! [`Store::commit`], a lease's keys deleted) is one compare-and-swap of
//! that object on its `resourceVersion`. The API server has no transaction
//! across objects, and weft commits across keys all the time: IPAM writes a
//! block with its route summary, a group commit writes up to 256
//! allocations across several blocks (a pod's IPv4 and IPv6 blocks, a block
//! claimed and the next allocation in it, borrowed addresses in other
//! nodes' blocks). With one object, all of that is atomic by construction:
//! the etcd semantics the IPAM code was written against (one revision per
//! commit, all or nothing, watches in revision order) hold as they are, and
//! the conformance suite proves them against a real API server.
//!
//! - revision: the object's `resourceVersion` (etcd's revision of the
//!   write); while the object does not exist, the revision of a listing
//!   of it (the API server's current one), so a watch from there sees it
//!   created;
//! - CAS, create-if-absent, delete-if-revision: conditions checked on the
//!   document read, the write made with that `resourceVersion` as
//!   precondition (409: someone wrote first, read again and re-check);
//! - watch: the API server's watch of the object from a `resourceVersion`,
//!   each version carrying the list of keys its commit changed; 410 Gone is
//!   [`WatchMessage::Compacted`](weft_store::WatchMessage) (the caller
//!   re-lists);
//! - leases: coordination.k8s.io Leases (`weft-<store>-<id>`, labelled
//!   `weft.dev/store`), renewed by `renewTime`; every client runs a reaper
//!   that deletes the keys of expired or deleted leases in one commit.
//!
//! The price: every commit rewrites the whole document and every watcher
//! receives it, and the document must fit etcd's request limit (1.5 MiB):
//! about 100 full /26 blocks of weft's records. That is a lab- and
//! small-cluster-sized store; splitting it (one object per block, with an
//! intent record for the commits that span blocks) is the next step.

mod api;
mod doc;
mod watch;

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use weft_store::{
    check_key, Conflict, LeaseId, Listing, Revision, Store, StoreError, StoreResult, TxnConflict,
    TxnOp, Watch,
};

use crate::runtime::{client_config, Source};
use api::{unavailable, Inner, Op};
pub use api::{GROUP, KIND, PLURAL, STORE_LABEL, VERSION};

/// Every how many reaper rounds one also reads the document (see
/// `Inner::reap`); the others list only the Leases.
const FULL_REAP_EVERY: u64 = 20;

/// Where the store lives.
#[derive(Debug, Clone)]
pub struct KubeStoreConfig {
    pub source: Source,
    /// The `WeftStore` object's name (one cluster may hold several stores).
    pub name: String,
    /// Where its Leases live.
    pub namespace: String,
    /// How often expired leases are looked for.
    pub reap_every: Duration,
    /// How long one call may take before it is `Unavailable`.
    pub timeout: Duration,
}

impl KubeStoreConfig {
    pub fn new(source: Source) -> KubeStoreConfig {
        KubeStoreConfig {
            source,
            name: "weft".into(),
            namespace: "weft-system".into(),
            reap_every: Duration::from_millis(500),
            timeout: Duration::from_secs(30),
        }
    }
}

/// The [`Store`] on the Kubernetes API. Its own thread runs a
/// single-threaded tokio runtime; the blocking methods hand it their
/// request and wait.
pub struct KubeStore {
    inner: Arc<Inner>,
    handle: tokio::runtime::Handle,
    timeout: Duration,
    /// Ends the runtime thread (and the reaper, and watches) on drop.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl KubeStore {
    /// Builds the client and starts the store's thread; does not wait for
    /// the API server.
    pub fn connect(cfg: KubeStoreConfig) -> StoreResult<KubeStore> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (tx, rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let c = cfg.clone();
        std::thread::Builder::new()
            .name("k8s-store".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(unavailable("cannot start the store runtime", e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let client = match client_config(&c.source)
                        .await
                        .and_then(crate::timing::client)
                    {
                        Ok(cl) => cl,
                        Err(e) => {
                            let _ = tx.send(Err(StoreError::Unavailable {
                                reason: e.to_string(),
                            }));
                            return;
                        }
                    };
                    let inner = Arc::new(Inner::new(client, &c.name, &c.namespace));
                    let _ = tx.send(Ok((inner.clone(), tokio::runtime::Handle::current())));
                    let reaper = async {
                        for round in 1u64.. {
                            tokio::time::sleep(c.reap_every).await;
                            if let Err(e) = inner.reap(round % FULL_REAP_EVERY == 0).await {
                                tracing::debug!(error = %e, "store lease reaper");
                            }
                        }
                    };
                    tokio::select! {
                        _ = reaper => {}
                        _ = stopped => {}
                    }
                });
            })
            .map_err(|e| unavailable("cannot start the store thread", e))?;
        let (inner, handle) = rx
            .recv()
            .map_err(|_| unavailable("the store thread", "ended at start"))??;
        Ok(KubeStore {
            inner,
            handle,
            timeout: cfg.timeout,
            _stop: stop,
        })
    }

    /// Runs `f` on the store's runtime and waits for it.
    fn call<T, Fut>(&self, f: impl FnOnce(Arc<Inner>) -> Fut) -> StoreResult<T>
    where
        T: Send + 'static,
        Fut: std::future::Future<Output = StoreResult<T>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let fut = f(self.inner.clone());
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv_timeout(self.timeout)
            .map_err(|_| StoreError::Unavailable {
                reason: format!(
                    "the Kubernetes API did not answer within {:?}",
                    self.timeout
                ),
            })?
    }

    /// Ends expired leases now (deletes their keys), as the reaper does
    /// every [`KubeStoreConfig::reap_every`]: for a short-lived client that
    /// must not see a stopped weftd's registration as live.
    pub fn reap_now(&self) -> StoreResult<()> {
        self.call(|inner| async move { inner.reap(true).await })
    }

    fn commit_owned(&self, ops: Vec<Op>) -> StoreResult<Result<Revision, TxnConflict>> {
        self.call(|inner| async move { inner.commit(ops).await })
    }
}

fn single(r: Result<Revision, TxnConflict>) -> Result<Revision, Conflict> {
    r.map_err(|c| Conflict { current: c.current })
}

impl Store for KubeStore {
    fn backend(&self) -> &'static str {
        "kubernetes"
    }

    fn get(&self, key: &str) -> StoreResult<Option<weft_store::KeyValue>> {
        check_key(key)?;
        let key = key.to_string();
        self.call(|inner| async move { Ok(inner.read().await?.0.kv(&key)) })
    }

    fn list(&self, prefix: &str) -> StoreResult<Listing> {
        let prefix = prefix.to_string();
        self.call(|inner| async move {
            let (doc, revision) = inner.read().await?;
            Ok(Listing {
                kvs: doc.list(&prefix),
                revision,
            })
        })
    }

    fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> StoreResult<Result<Revision, Conflict>> {
        let op = TxnOp::Create { key, value, lease };
        self.commit_owned(vec![Op::owned(&op)]).map(single)
    }

    fn update(
        &self,
        key: &str,
        value: &[u8],
        expected: Revision,
    ) -> StoreResult<Result<Revision, Conflict>> {
        let op = TxnOp::Update {
            key,
            value,
            expected,
        };
        self.commit_owned(vec![Op::owned(&op)]).map(single)
    }

    fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> StoreResult<Result<Option<Revision>, Conflict>> {
        check_key(key)?;
        let (key, exp) = (key.to_string(), expected);
        let res = self.call(|inner| async move {
            let mut existed = false;
            let r = inner
                .commit_with(|doc| {
                    existed = doc.entries.contains_key(&key);
                    vec![Op::Delete(key.clone(), exp)]
                })
                .await?;
            Ok((r, existed))
        })?;
        Ok(match res {
            (Ok(rev), true) => Ok(Some(rev)),
            (Ok(_), false) => Ok(None),
            (Err(c), _) => Err(Conflict { current: c.current }),
        })
    }

    fn commit(&self, ops: &[TxnOp<'_>]) -> StoreResult<Result<Revision, TxnConflict>> {
        self.commit_owned(ops.iter().map(Op::owned).collect())
    }

    fn watch(&self, prefix: &str, after: Revision) -> StoreResult<Watch> {
        let (tx, rx) = mpsc::channel();
        let task = self.handle.spawn(watch::run(
            self.inner.clone(),
            prefix.to_string(),
            after,
            tx,
        ));
        Ok(Watch {
            rx,
            guard: Box::new(AbortOnDrop(task.abort_handle())),
        })
    }

    fn grant_lease(&self, ttl: Duration) -> StoreResult<LeaseId> {
        let id = random_id();
        self.call(move |inner| async move { inner.grant(id, ttl).await })?;
        Ok(id)
    }

    fn keep_alive(&self, lease: LeaseId) -> StoreResult<()> {
        self.call(move |inner| async move { inner.keep_alive(lease).await })
    }

    fn revoke_lease(&self, lease: LeaseId) -> StoreResult<()> {
        self.call(move |inner| async move { inner.revoke(lease).await })
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A lease id no other client picks: random, below 2^53 (it is a JSON
/// number in the document).
fn random_id() -> LeaseId {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() & ((1 << 53) - 1)).max(1)
}
