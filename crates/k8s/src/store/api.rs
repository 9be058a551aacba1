//! The store's calls to the API server, async, on the store's own runtime:
//! read and compare-and-swap the `WeftStore` document, the leases as
//! coordination.k8s.io Leases, and the reaper that ends expired ones.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::{Api, Client};
use tokio::sync::Mutex;
use weft_store::{LeaseId, Revision, StoreError, StoreResult, TxnConflict, TxnOp};

use super::doc::{apply, validate, Doc};

/// weft's API group and the store's kind.
pub const GROUP: &str = "weft.dev";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "WeftStore";
pub const PLURAL: &str = "weftstores";
/// The label that ties a Lease to its store.
pub const STORE_LABEL: &str = "weft.dev/store";
/// How many times a commit re-reads after losing the race for the document
/// before it says the store is unavailable.
const MAX_ATTEMPTS: usize = 200;

/// One op of a commit, owned (it crosses to the runtime's thread).
#[derive(Debug, Clone)]
pub enum Op {
    Create(String, Vec<u8>, Option<LeaseId>),
    Update(String, Vec<u8>, Revision),
    Put(String, Vec<u8>),
    Delete(String, Option<Revision>),
}

impl Op {
    pub fn owned(op: &TxnOp<'_>) -> Op {
        match *op {
            TxnOp::Create { key, value, lease } => Op::Create(key.into(), value.into(), lease),
            TxnOp::Update {
                key,
                value,
                expected,
            } => Op::Update(key.into(), value.into(), expected),
            TxnOp::Put { key, value } => Op::Put(key.into(), value.into()),
            TxnOp::Delete { key, expected } => Op::Delete(key.into(), expected),
        }
    }

    fn txn(&self) -> TxnOp<'_> {
        match self {
            Op::Create(key, value, lease) => TxnOp::Create {
                key,
                value,
                lease: *lease,
            },
            Op::Update(key, value, expected) => TxnOp::Update {
                key,
                value,
                expected: *expected,
            },
            Op::Put(key, value) => TxnOp::Put { key, value },
            Op::Delete(key, expected) => TxnOp::Delete {
                key,
                expected: *expected,
            },
        }
    }
}

pub(crate) fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        reason: format!("{what}: {e}; check that the API server is up and weft's CRDs are installed (deploy/kubernetes/crds)"),
    }
}

fn status(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

pub(crate) fn parse_rv(meta: &ObjectMeta) -> StoreResult<Revision> {
    meta.resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .ok_or_else(|| unavailable("the store object", "no numeric resourceVersion"))
}

pub(crate) fn parse_doc(obj: &DynamicObject) -> StoreResult<(Doc, Revision)> {
    let rev = parse_rv(&obj.metadata)?;
    let spec = obj.data.get("spec").cloned().unwrap_or_default();
    let mut doc: Doc = if spec.is_null() {
        Doc::default()
    } else {
        serde_json::from_value(spec).map_err(|e| StoreError::Corrupt {
            path: format!("{PLURAL}/{}", obj.metadata.name.as_deref().unwrap_or("")),
            reason: e.to_string(),
        })?
    };
    doc.resolve(rev);
    Ok((doc, rev))
}

/// The store's state on the runtime's side.
pub struct Inner {
    pub(crate) name: String,
    pub(crate) stores: Api<DynamicObject>,
    leases: Api<Lease>,
    /// The document as this process last wrote or read it: a commit first
    /// tries on it (one request when nobody else wrote since) and re-reads
    /// on a lost race. Held across the write: one commit of this process at
    /// a time, so its own commits do not race each other.
    cache: Mutex<Option<(Doc, Revision)>>,
}

pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL)
}

impl Inner {
    pub fn new(client: Client, name: &str, namespace: &str) -> Inner {
        Inner {
            name: name.to_string(),
            stores: Api::all_with(client.clone(), &resource()),
            leases: Api::namespaced(client, namespace),
            cache: Mutex::new(None),
        }
    }

    /// The document and its revision, read from etcd through the API server
    /// (a GET without resourceVersion is a quorum read). While the object
    /// does not exist, the store is empty at the revision of a listing of
    /// it: a watch from there sees the object's creation.
    pub async fn read(&self) -> StoreResult<(Doc, Revision)> {
        match self.stores.get_opt(&self.name).await {
            Ok(Some(obj)) => return parse_doc(&obj),
            Ok(None) => {}
            Err(e) => return Err(unavailable("cannot read the store", e)),
        }
        let lp = ListParams::default().fields(&format!("metadata.name={}", self.name));
        let list = self
            .stores
            .list(&lp)
            .await
            .map_err(|e| unavailable("cannot list the store", e))?;
        if let Some(obj) = list.items.first() {
            return parse_doc(obj);
        }
        let rev = list
            .metadata
            .resource_version
            .as_deref()
            .and_then(|rv| rv.parse().ok())
            .ok_or_else(|| unavailable("the store listing", "no numeric resourceVersion"))?;
        let doc = Doc {
            absent: true,
            ..Doc::default()
        };
        Ok((doc, rev))
    }

    /// Writes `doc` if the object is still at `rev` (or still absent).
    /// `None` when someone wrote first.
    async fn write(&self, doc: &Doc, rev: Revision) -> StoreResult<Option<Revision>> {
        let mut obj = DynamicObject::new(&self.name, &resource());
        obj.data = serde_json::json!({ "spec": doc });
        let pp = PostParams::default();
        let res = if doc.absent {
            self.stores.create(&pp, &obj).await
        } else {
            obj.metadata.resource_version = Some(rev.to_string());
            self.stores.replace(&self.name, &pp, &obj).await
        };
        match res {
            Ok(o) => parse_rv(&o.metadata).map(Some),
            Err(e) if status(&e) == Some(409) => Ok(None),
            Err(e) if matches!(status(&e), Some(413) | Some(422)) || e.to_string().contains("too large") => {
                Err(StoreError::Invalid {
                    reason: format!("the API server refused the store's document ({e}); it holds every key in one object, which must stay under etcd's request limit"),
                })
            }
            Err(e) => Err(unavailable("cannot write the store", e)),
        }
    }

    /// One atomic commit of the ops `plan` makes from the current document
    /// (a compare-and-swap of the whole document, retried while others win).
    pub async fn commit_with(
        &self,
        mut plan: impl FnMut(&Doc) -> Vec<Op>,
    ) -> StoreResult<Result<Revision, TxnConflict>> {
        let mut cache = self.cache.lock().await;
        let (mut doc, mut rev, mut fresh) = match cache.take() {
            Some((d, r)) => (d, r, false),
            None => {
                let (d, r) = self.read().await?;
                (d, r, true)
            }
        };
        for _ in 0..MAX_ATTEMPTS {
            let ops = plan(&doc);
            if ops.is_empty() {
                if fresh {
                    *cache = Some((doc, rev));
                    return Ok(Ok(rev));
                }
            } else {
                let txn: Vec<TxnOp<'_>> = ops.iter().map(Op::txn).collect();
                validate(&txn)?;
                match apply(&doc, &txn) {
                    // a cached document may be stale: only a fresh one
                    // decides a conflict or a no-op
                    Err(conflict) if fresh => {
                        *cache = Some((doc, rev));
                        return Ok(Err(conflict));
                    }
                    Ok(None) if fresh => {
                        *cache = Some((doc, rev));
                        return Ok(Ok(rev));
                    }
                    Ok(Some(mut next)) => {
                        if let Some(new_rev) = self.write(&next, rev).await? {
                            next.resolve(new_rev);
                            next.absent = false;
                            *cache = Some((next, new_rev));
                            return Ok(Ok(new_rev));
                        }
                    }
                    _ => {}
                }
            }
            (doc, rev) = self.read().await?;
            fresh = true;
        }
        Err(StoreError::Unavailable {
            reason: format!(
                "the store's document changed under {MAX_ATTEMPTS} commits in a row; retry"
            ),
        })
    }

    pub async fn commit(&self, ops: Vec<Op>) -> StoreResult<Result<Revision, TxnConflict>> {
        validate(&ops.iter().map(Op::txn).collect::<Vec<_>>())?;
        for op in &ops {
            if let Op::Create(_, _, Some(lease)) = op {
                if !self.lease_alive(*lease).await? {
                    return Err(StoreError::LeaseNotFound { lease: *lease });
                }
            }
        }
        self.commit_with(|_| ops.clone()).await
    }

    fn lease_name(&self, id: LeaseId) -> String {
        format!("weft-{}-{id:x}", self.name)
    }

    async fn lease_alive(&self, id: LeaseId) -> StoreResult<bool> {
        match self.leases.get_opt(&self.lease_name(id)).await {
            Ok(l) => Ok(l.as_ref().is_some_and(alive)),
            Err(e) => Err(unavailable("cannot read a lease", e)),
        }
    }

    pub async fn grant(&self, id: LeaseId, ttl: Duration) -> StoreResult<()> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.lease_name(id)),
                labels: Some([(STORE_LABEL.to_string(), self.name.clone())].into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(hostname()),
                lease_duration_seconds: Some(ttl.as_secs_f64().ceil().max(1.0) as i32),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                ..Default::default()
            }),
        };
        self.leases
            .create(&PostParams::default(), &lease)
            .await
            .map(drop)
            .map_err(|e| unavailable("cannot create a lease", e))
    }

    pub async fn keep_alive(&self, id: LeaseId) -> StoreResult<()> {
        if !self.lease_alive(id).await? {
            return Err(StoreError::LeaseNotFound { lease: id });
        }
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let patch = serde_json::json!({ "spec": { "renewTime": now } });
        match self
            .leases
            .patch(
                &self.lease_name(id),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(404) => Err(StoreError::LeaseNotFound { lease: id }),
            Err(e) => Err(unavailable("cannot renew a lease", e)),
        }
    }

    pub async fn revoke(&self, id: LeaseId) -> StoreResult<()> {
        match self
            .leases
            .delete(&self.lease_name(id), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(e) if status(&e) == Some(404) => {
                return Err(StoreError::LeaseNotFound { lease: id })
            }
            Err(e) => return Err(unavailable("cannot delete a lease", e)),
        }
        self.drop_keys_of(&[id]).await
    }

    /// Deletes every key attached to one of `ids`, in one commit.
    async fn drop_keys_of(&self, ids: &[LeaseId]) -> StoreResult<()> {
        self.commit_with(|doc| {
            doc.entries
                .iter()
                .filter(|(_, e)| e.l.is_some_and(|l| ids.contains(&l)))
                .map(|(k, _)| Op::Delete(k.clone(), None))
                .collect()
        })
        .await
        .map(drop)
    }

    /// Ends expired leases: deletes their Lease objects and, in one commit,
    /// their keys. Every client of the store runs it; the commits are
    /// idempotent. The usual round lists only the (small) Leases; a `full`
    /// one also reads the document for keys whose Lease vanished
    /// altogether (deleted by hand, or by a reaper that died before its
    /// commit).
    pub async fn reap(&self, full: bool) -> StoreResult<()> {
        // the document before the Leases: a key's lease was granted before
        // its key was written, so it is in the list if it still exists
        let leased = if full {
            Some(self.read().await?.0.leased())
        } else {
            None
        };
        let lp = ListParams::default().labels(&format!("{STORE_LABEL}={}", self.name));
        let leases = self
            .leases
            .list(&lp)
            .await
            .map_err(|e| unavailable("cannot list leases", e))?;
        let prefix = format!("weft-{}-", self.name);
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for l in &leases.items {
            let name = l.metadata.name.clone().unwrap_or_default();
            let id = name
                .strip_prefix(&prefix)
                .and_then(|hex| LeaseId::from_str_radix(hex, 16).ok());
            if alive(l) {
                live.push(name);
            } else {
                let _ = self.leases.delete(&name, &DeleteParams::default()).await;
                dead.extend(id);
            }
        }
        if let Some(leased) = leased {
            let vanished: Vec<LeaseId> = leased
                .keys()
                .copied()
                .filter(|id| !live.contains(&self.lease_name(*id)) && !dead.contains(id))
                .collect();
            dead.extend(vanished);
        }
        if !dead.is_empty() {
            self.drop_keys_of(&dead).await?;
        }
        Ok(())
    }
}

/// A lease is alive until its duration has passed since its last renewal
/// (by this host's clock: hosts' clocks must agree within a fraction of
/// the TTL, as for Kubernetes' own node leases).
fn alive(l: &Lease) -> bool {
    let Some(spec) = &l.spec else { return false };
    let (Some(renew), Some(secs)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return false;
    };
    let end = renew.0.as_millisecond() + i64::from(secs) * 1000;
    k8s_openapi::jiff::Timestamp::now().as_millisecond() < end
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
