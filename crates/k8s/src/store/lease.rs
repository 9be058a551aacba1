//! The store's leases as coordination.k8s.io Leases
//! (`weft-<store>-<hex id>`, labelled `weft.dev/store`), renewed by
//! `renewTime`, and the reaper every client runs: it deletes the keys of
//! expired or deleted leases, in one commit.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use weft_store::{LeaseId, StoreError, StoreResult};

use super::api::{status, unavailable, Inner, Op, STORE_LABEL};
use super::objects::leased;

/// How many times dropping a lease's keys starts again when a key changed
/// under it.
const DROP_ATTEMPTS: usize = 20;

pub struct Leases {
    store: String,
    api: Api<Lease>,
}

impl Leases {
    pub fn new(client: Client, store: &str, namespace: &str) -> Leases {
        Leases {
            store: store.to_string(),
            api: Api::namespaced(client, namespace),
        }
    }

    fn name(&self, id: LeaseId) -> String {
        format!("weft-{}-{id:x}", self.store)
    }

    pub async fn alive_id(&self, id: LeaseId) -> StoreResult<bool> {
        match self.api.get_opt(&self.name(id)).await {
            Ok(l) => Ok(l.as_ref().is_some_and(alive)),
            Err(e) => Err(unavailable("cannot read a lease", e)),
        }
    }

    pub async fn grant(&self, id: LeaseId, ttl: Duration) -> StoreResult<()> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name(id)),
                labels: Some([(STORE_LABEL.to_string(), self.store.clone())].into()),
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
        self.api
            .create(&PostParams::default(), &lease)
            .await
            .map(drop)
            .map_err(|e| unavailable("cannot create a lease", e))
    }

    pub async fn keep_alive(&self, id: LeaseId) -> StoreResult<()> {
        if !self.alive_id(id).await? {
            return Err(StoreError::LeaseNotFound { lease: id });
        }
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let patch = serde_json::json!({ "spec": { "renewTime": now } });
        match self
            .api
            .patch(
                &self.name(id),
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

    /// Deletes the Lease object; `LeaseNotFound` when there is none.
    pub async fn delete(&self, id: LeaseId) -> StoreResult<()> {
        match self
            .api
            .delete(&self.name(id), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(404) => Err(StoreError::LeaseNotFound { lease: id }),
            Err(e) => Err(unavailable("cannot delete a lease", e)),
        }
    }

    /// The store's Leases: the ids of live ones, and of expired ones (with
    /// their names, for [`Leases::forget`] once their keys are gone).
    async fn sweep(&self) -> StoreResult<(Vec<LeaseId>, Vec<(LeaseId, String)>)> {
        let lp = ListParams::default().labels(&format!("{STORE_LABEL}={}", self.store));
        let leases = self
            .api
            .list(&lp)
            .await
            .map_err(|e| unavailable("cannot list leases", e))?;
        let prefix = format!("weft-{}-", self.store);
        let (mut live, mut dead) = (Vec::new(), Vec::new());
        for l in &leases.items {
            let name = l.metadata.name.clone().unwrap_or_default();
            let Some(id) = name
                .strip_prefix(&prefix)
                .and_then(|hex| LeaseId::from_str_radix(hex, 16).ok())
            else {
                continue;
            };
            if alive(l) {
                live.push(id);
            } else {
                dead.push((id, name));
            }
        }
        Ok((live, dead))
    }

    /// Deletes expired Lease objects (after their keys: a reaper that dies
    /// in between finds them again).
    async fn forget(&self, names: &[String]) {
        let dp = DeleteParams::default();
        let deletes = names.iter().map(|n| self.api.delete(n, &dp));
        let _ = futures::future::join_all(deletes).await;
    }
}

impl Inner {
    pub async fn grant(&self, id: LeaseId, ttl: Duration) -> StoreResult<()> {
        self.leases.grant(id, ttl).await
    }

    pub async fn keep_alive(&self, id: LeaseId) -> StoreResult<()> {
        self.leases.keep_alive(id).await
    }

    pub async fn revoke(&self, id: LeaseId) -> StoreResult<()> {
        self.leases.delete(id).await?;
        self.drop_keys_of(&[id]).await
    }

    /// Deletes every key attached to one of `ids`, in one commit (each
    /// delete conditioned on the key's revision, so a key written anew
    /// meanwhile is looked at again).
    async fn drop_keys_of(&self, ids: &[LeaseId]) -> StoreResult<()> {
        for _ in 0..DROP_ATTEMPTS {
            let (entries, _) = self.snapshot("", true).await?;
            let by_lease = leased(&entries);
            let ops: Vec<Op> = ids
                .iter()
                .filter_map(|id| by_lease.get(id))
                .flatten()
                .map(|(k, m)| Op::Delete(k.clone(), Some(*m)))
                .collect();
            if ops.is_empty() {
                return Ok(());
            }
            if self.commit(ops).await?.is_ok() {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable {
            reason: "the keys of an ended lease kept changing; the reaper tries again".into(),
        })
    }

    /// Ends expired leases: deletes their Lease objects and, in one commit,
    /// their keys. Every client of the store runs it; the commits are
    /// idempotent. The usual round lists only the (small) Leases; a `full`
    /// one also lists the objects holding leased keys, for keys whose
    /// Lease vanished altogether (deleted by hand, or by a reaper that died
    /// before its commit).
    pub async fn reap(&self, full: bool) -> StoreResult<()> {
        // the keys before the Leases: a key's lease was granted before its
        // key was written, so it is in the list if it still exists
        let leased_keys = if full {
            Some(leased(&self.snapshot("", true).await?.0))
        } else {
            None
        };
        let (live, expired) = self.leases.sweep().await?;
        let mut dead: Vec<LeaseId> = expired.iter().map(|(id, _)| *id).collect();
        if let Some(leased_keys) = leased_keys {
            let vanished: Vec<LeaseId> = leased_keys
                .keys()
                .copied()
                .filter(|id| !live.contains(id) && !dead.contains(id))
                .collect();
            dead.extend(vanished);
        }
        if !dead.is_empty() {
            self.drop_keys_of(&dead).await?;
        }
        let names: Vec<String> = expired.into_iter().map(|(_, n)| n).collect();
        self.leases.forget(&names).await;
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
