//! `--store kubernetes`: weft's [`Store`] on the Kubernetes API.
//!
//! # Design: one object per key group, a head to commit through
//!
//! The keys live in objects of weft's API group, one per key group and a
//! kind per part of the layout ([`layout`]): `IPPool` (a pool),
//! `IPAMBlock` (a block's record and its route summary), `WeftNode` (a
//! node's registration), `SecurityIdentity` and `WeftRecord` (any other
//! key), each labelled `weft.dev/store=<store>`, so no object grows with
//! the cluster and `kubectl get ipamblocks` shows CIDR, node and use.
//!
//! The API server has no transaction across objects, and weft commits
//! across them all the time (a pod's IPv4 and IPv6 blocks, a group commit
//! over several blocks, borrowed addresses in other nodes' blocks). So
//! every commit goes through one small object, the store's head (a
//! `WeftStore`), as an **intent**:
//!
//! 1. read the head at revision `H` with no intent in it (finishing one
//!    that is there first, see 4), and the objects the ops touch; check
//!    the ops' conditions on them;
//! 2. create an empty placeholder for every object the commit writes that
//!    does not exist yet;
//! 3. write the intent (every changed key's new entry, or its deletion)
//!    into the head by compare-and-swap on `H`. This write *is* the
//!    commit: its `resourceVersion` `R` is the commit's revision; losing
//!    the race means someone committed since `H`, and all starts again;
//! 4. apply the intent to each object (compare-and-swap on the object; its
//!    `spec.rev` becomes `R`; an object left empty is deleted), then clear
//!    the intent from the head (compare-and-swap on `R`).
//!
//! Why it is atomic without cross-object transactions: the head is written
//! only by compare-and-swap, so intents are totally ordered, and a new one
//! is written only on a head without one, i.e. after the previous intent
//! was applied everywhere. Anyone who finds an intent in the head applies
//! it (a crashed committer's too) before committing; applying is
//! idempotent (an object is written only while its `spec.rev` is older
//! than the intent; a placeholder counts as of its creation) and never
//! creates an object (placeholders exist first), so a late applier can
//! neither undo a newer commit nor bring back an object a newer commit
//! deleted. A crash anywhere leaves either no intent (nothing happened, or
//! all did) or one that the next reader or writer completes: there is no
//! roll-back, an intent in the head is decided.
//!
//! - revision: etcd's revision (every `resourceVersion` of weft's objects
//!   comes from the API server's one etcd): a commit's is its intent's;
//! - reads: a list reads the head at `H`, then the kinds at exactly
//!   `resourceVersion` `H` (every earlier commit applied, no later one) and
//!   lays the head's intent over them: a snapshot at `H`. A get reads the
//!   head, then the key's object;
//! - watch: the API server's watch of the head from a `resourceVersion`:
//!   each intent is one commit's events, in order; 410 Gone is
//!   [`WatchMessage::Compacted`](weft_store::WatchMessage);
//! - leases: coordination.k8s.io Leases (`weft-<store>-<id>`, labelled
//!   `weft.dev/store`), renewed by `renewTime`; every client runs a reaper
//!   that deletes the keys of expired or deleted leases in one commit;
//! - a store of the single-object layout (every key in the `WeftStore`)
//!   is moved into per-kind objects by the first client of this version
//!   that reads it: one intent with every key, revisions kept, written by
//!   compare-and-swap on the old document.
//!
//! The price: a commit is three writes or more (intent, objects, clear)
//! instead of one; a process caches the head revision and the objects it
//! last wrote, so an uncontended commit reads nothing first.

mod api;
mod doc;
pub mod layout;
mod lease;
pub mod nodes;
mod objects;
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
pub use api::{GROUP, KIND, LEASED_LABEL, PLURAL, STORE_LABEL, VERSION};

/// Every how many reaper rounds one also reads the document (see
/// `Inner::reap`); the others list only the Leases.
const FULL_REAP_EVERY: u64 = 20;

/// Where the store lives.
#[derive(Debug, Clone)]
pub struct KubeStoreConfig {
    pub source: Source,
    /// The store's name: its `WeftStore` head's, and the prefix of its
    /// objects' (one cluster may hold several stores).
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
    /// The API client (the node registry's Node watch and patch).
    client: kube::Client,
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
                    let inner = Arc::new(Inner::new(client.clone(), &c.name, &c.namespace));
                    let _ = tx.send(Ok((
                        inner.clone(),
                        client,
                        tokio::runtime::Handle::current(),
                    )));
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
        let (inner, client, handle) = rx
            .recv()
            .map_err(|_| unavailable("the store thread", "ended at start"))??;
        Ok(KubeStore {
            inner,
            client,
            handle,
            timeout: cfg.timeout,
            _stop: stop,
        })
    }

    /// The store's name (its head's, and its objects' prefix).
    pub fn name(&self) -> &str {
        &self.inner.name
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

    /// The cluster's Nodes, the whole set on every change that matters to
    /// the node registry (see [`nodes::watch`]), until the receiver is
    /// dropped.
    pub fn watch_nodes(&self) -> mpsc::Receiver<Vec<nodes::ClusterNode>> {
        let (tx, rx) = mpsc::channel();
        self.handle.spawn(nodes::watch(self.client.clone(), tx));
        rx
    }

    /// Sets or removes `weft.dev/` annotations of Node `node` (see
    /// [`nodes::annotate`]).
    pub fn annotate_node(
        &self,
        node: &str,
        annotations: std::collections::BTreeMap<String, Option<String>>,
    ) -> StoreResult<()> {
        let (client, node) = (self.client.clone(), node.to_string());
        self.call(|_| async move { nodes::annotate(client, &node, &annotations).await })
    }

    fn commit_owned(&self, ops: Vec<Op>) -> StoreResult<Result<Revision, TxnConflict>> {
        self.call(|inner| async move { Ok(inner.commit(ops).await?.map(|(rev, _)| rev)) })
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
        self.call(|inner| async move { Ok(inner.get(&key).await?.map(|e| objects::kv(&key, &e))) })
    }

    fn list(&self, prefix: &str) -> StoreResult<Listing> {
        let prefix = prefix.to_string();
        self.call(|inner| async move {
            let (entries, revision) = inner.snapshot(&prefix, false).await?;
            Ok(Listing {
                kvs: entries.iter().map(|(k, e)| objects::kv(k, e)).collect(),
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
        let op = Op::Delete(key.to_string(), expected);
        let res = self.call(|inner| async move { inner.commit(vec![op]).await })?;
        Ok(match res {
            Ok((rev, existed)) if existed[0] => Ok(Some(rev)),
            Ok(_) => Ok(None),
            Err(c) => Err(Conflict { current: c.current }),
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
