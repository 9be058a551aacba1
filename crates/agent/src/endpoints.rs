//! This node's endpoints (pod interfaces), persisted in the node-local store so
//! a restarted weftd knows every pod it wired and can reconcile the kernel
//! against them.
//!
//! A DEL first marks the endpoint *deleting* in its record (durably), and
//! only then gives anything up; the record is forgotten last, once the
//! interface is gone. So a record exists for as long as the pod's interface
//! or its addresses might, and a weftd killed half-way through a DEL finds
//! the marked record at start and finishes the DEL (see `reconcile`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use weft_api::Attachment;
use weft_store::{Store, StoreError};

use crate::endpoint::Endpoint;

const PREFIX: &str = "/weft/endpoints/v1/";

fn key(a: &Attachment) -> String {
    format!("{PREFIX}{}/{}", a.container_id, a.ifname)
}

/// The stored form: the endpoint, whether a DEL has begun on it, and its
/// numeric id. Records written before `deleting` existed read as live;
/// records written before `id` existed get one at load.
#[derive(Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    ep: Endpoint,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    deleting: bool,
    /// The endpoint's number (what the policy maps are keyed by): given at
    /// the first ADD, kept until the record is forgotten, never 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<u32>,
}

#[derive(Default)]
struct Tables {
    /// Endpoints in service: what views, CHECK and reconciliation see.
    live: BTreeMap<Attachment, Endpoint>,
    /// Endpoints whose DEL has begun and not yet finished.
    deleting: BTreeMap<Attachment, Endpoint>,
    /// Every endpoint's id, live or being deleted.
    ids: BTreeMap<Attachment, u32>,
}

impl Tables {
    /// The next id: above every id in use (ids are not reused while
    /// weftd runs; after a restart only the live ones are kept).
    fn next_id(&self) -> u32 {
        self.ids.values().max().map_or(1, |m| m.saturating_add(1))
    }
}

/// The endpoint table: an in-memory copy of what the store holds, written
/// through on every change.
pub struct Endpoints {
    store: Arc<dyn Store>,
    tables: Mutex<Tables>,
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("endpoint record {key} is unreadable ({reason}); remove it with the store tools or restore from backup")]
    Corrupt { key: String, reason: String },
}

impl Endpoints {
    /// Loads every endpoint from the store. Unreadable records are reported
    /// and skipped, not fatal: one bad record must not keep the node down.
    pub fn load(store: Arc<dyn Store>) -> Result<(Endpoints, Vec<EndpointError>), StoreError> {
        let listing = store.list(PREFIX)?;
        let mut tables = Tables::default();
        let mut bad = Vec::new();
        let mut without_id = Vec::new();
        for kv in listing.kvs {
            match serde_json::from_slice::<Record>(&kv.value) {
                Ok(r) => {
                    match r.id {
                        Some(id) => {
                            tables.ids.insert(r.ep.attachment.clone(), id);
                        }
                        None => without_id.push(r.ep.attachment.clone()),
                    }
                    if r.deleting {
                        tables.deleting.insert(r.ep.attachment.clone(), r.ep);
                    } else {
                        tables.live.insert(r.ep.attachment.clone(), r.ep);
                    }
                }
                Err(e) => bad.push(EndpointError::Corrupt {
                    key: kv.key,
                    reason: e.to_string(),
                }),
            }
        }
        for a in &without_id {
            let id = tables.next_id();
            tables.ids.insert(a.clone(), id);
        }
        let eps = Endpoints {
            store,
            tables: Mutex::new(tables),
        };
        // older records get their id written now, so it survives restarts
        for a in without_id {
            let (ep, deleting) = {
                let t = eps.lock();
                match (t.live.get(&a), t.deleting.get(&a)) {
                    (Some(ep), _) => (ep.clone(), false),
                    (None, Some(ep)) => (ep.clone(), true),
                    (None, None) => continue,
                }
            };
            let id = eps.id_of(&a);
            if let Err(e) = eps.write(&Record { ep, deleting, id }) {
                bad.push(e);
            }
        }
        Ok((eps, bad))
    }

    /// The endpoint's numeric id (live or being deleted).
    pub fn id_of(&self, a: &Attachment) -> Option<u32> {
        self.lock().ids.get(a).copied()
    }

    /// The live endpoint of `a` (not one being deleted).
    pub fn get(&self, a: &Attachment) -> Option<Endpoint> {
        self.lock().live.get(a).cloned()
    }

    /// Every live endpoint.
    pub fn list(&self) -> Vec<Endpoint> {
        self.lock().live.values().cloned().collect()
    }

    /// `f` of every live endpoint and its id, under one lock and without
    /// copying the records (the policy thread reads this every round).
    pub fn map_live<T>(&self, mut f: impl FnMut(&Endpoint, Option<u32>) -> Option<T>) -> Vec<T> {
        let t = self.lock();
        t.live
            .iter()
            .filter_map(|(a, e)| f(e, t.ids.get(a).copied()))
            .collect()
    }

    /// Endpoints whose DEL began and has not finished (the interface may
    /// still exist, the addresses may still be held).
    pub fn deleting(&self) -> Vec<Endpoint> {
        self.lock().deleting.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records `ep` durably as live (replacing any record of the same
    /// attachment, also one being deleted).
    pub fn put(&self, ep: Endpoint) -> Result<(), EndpointError> {
        let id = {
            let mut t = self.lock();
            match t.ids.get(&ep.attachment) {
                Some(id) => *id,
                None => {
                    // taken now, so two ADDs at once never share one
                    let id = t.next_id();
                    t.ids.insert(ep.attachment.clone(), id);
                    id
                }
            }
        };
        self.write(&Record {
            ep: ep.clone(),
            deleting: false,
            id: Some(id),
        })?;
        let mut t = self.lock();
        t.deleting.remove(&ep.attachment);
        t.live.insert(ep.attachment.clone(), ep);
        Ok(())
    }

    /// Marks the endpoint of `a` deleting, durably, and takes it out of
    /// service; returns it. An endpoint already being deleted is returned
    /// as it is (a DEL repeated after a failure goes on where it stopped);
    /// `None` when there is neither.
    pub fn begin_delete(&self, a: &Attachment) -> Result<Option<Endpoint>, EndpointError> {
        let (live, deleting) = {
            let t = self.lock();
            (t.live.get(a).cloned(), t.deleting.get(a).cloned())
        };
        let Some(ep) = live else {
            return Ok(deleting);
        };
        let id = self.id_of(a);
        self.write(&Record {
            ep: ep.clone(),
            deleting: true,
            id,
        })?;
        let mut t = self.lock();
        t.live.remove(a);
        t.deleting.insert(a.clone(), ep.clone());
        Ok(Some(ep))
    }

    /// Forgets the endpoint durably, live or being deleted; absent is fine.
    pub fn remove(&self, a: &Attachment) -> Result<Option<Endpoint>, EndpointError> {
        let _ = self.store.delete(&key(a), None)?;
        let mut t = self.lock();
        let deleting = t.deleting.remove(a);
        t.ids.remove(a);
        Ok(t.live.remove(a).or(deleting))
    }

    fn write(&self, r: &Record) -> Result<(), EndpointError> {
        let k = key(&r.ep.attachment);
        let value = serde_json::to_vec(r).expect("endpoint serialises");
        loop {
            let current = self.store.get(&k)?;
            let outcome = match current {
                None => self.store.create(&k, &value, None)?.map(|_| ()),
                Some(kv) => self.store.update(&k, &value, kv.mod_revision)?.map(|_| ()),
            };
            if outcome.is_ok() {
                return Ok(());
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::PodRef;
    use weft_store::embedded::EmbeddedStore;

    fn ep(cid: &str) -> Endpoint {
        Endpoint {
            attachment: Attachment {
                container_id: cid.into(),
                ifname: "eth0".into(),
            },
            pod: PodRef::default(),
            network: "n".into(),
            netns: "/run/netns/x".into(),
            host_ifname: format!("weft{cid}"),
            mac: [0x0a, 0x58, 0, 0, 0, 1],
            mtu: 1500,
            ips: vec!["10.0.0.1/32".parse().unwrap()],
            created_at: 1,
        }
    }

    #[test]
    fn a_begun_delete_survives_a_reload_and_hides_the_endpoint() {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
        let (eps, _) = Endpoints::load(store.clone()).unwrap();
        eps.put(ep("a")).unwrap();
        eps.put(ep("b")).unwrap();
        let a = ep("a").attachment;
        assert_eq!(eps.begin_delete(&a).unwrap(), Some(ep("a")));
        assert!(eps.get(&a).is_none(), "out of service at once");
        assert_eq!(eps.len(), 1);
        // repeated: goes on with the same endpoint
        assert_eq!(eps.begin_delete(&a).unwrap(), Some(ep("a")));

        let (again, bad) = Endpoints::load(store.clone()).unwrap();
        assert!(bad.is_empty());
        assert_eq!(again.deleting(), vec![ep("a")]);
        assert_eq!(again.list(), vec![ep("b")]);
        assert_eq!(again.remove(&a).unwrap(), Some(ep("a")));
        assert!(again.deleting().is_empty());
        let (third, _) = Endpoints::load(store).unwrap();
        assert!(third.deleting().is_empty());
        assert_eq!(third.len(), 1);
    }

    #[test]
    fn records_without_the_marker_load_as_live() {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
        let old = serde_json::to_vec(&ep("a")).unwrap();
        store
            .create(&key(&ep("a").attachment), &old, None)
            .unwrap()
            .unwrap();
        let (eps, bad) = Endpoints::load(store).unwrap();
        assert!(bad.is_empty());
        assert_eq!(eps.list(), vec![ep("a")]);
        assert!(eps.deleting().is_empty());
    }

    #[test]
    fn ids_are_unique_kept_across_reloads_and_given_to_old_records() {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
        let old = serde_json::to_vec(&ep("old")).unwrap();
        store
            .create(&key(&ep("old").attachment), &old, None)
            .unwrap()
            .unwrap();
        let (eps, _) = Endpoints::load(store.clone()).unwrap();
        let old_id = eps
            .id_of(&ep("old").attachment)
            .expect("an old record gets an id");
        eps.put(ep("a")).unwrap();
        eps.put(ep("b")).unwrap();
        let a = eps.id_of(&ep("a").attachment).unwrap();
        let b = eps.id_of(&ep("b").attachment).unwrap();
        assert!(old_id != a && a != b && old_id != b && a > 0);
        // a repeated ADD of the same attachment keeps its id
        eps.put(ep("a")).unwrap();
        assert_eq!(eps.id_of(&ep("a").attachment), Some(a));
        eps.begin_delete(&ep("b").attachment).unwrap();
        assert_eq!(
            eps.id_of(&ep("b").attachment),
            Some(b),
            "kept while deleting"
        );
        let (again, _) = Endpoints::load(store).unwrap();
        assert_eq!(again.id_of(&ep("old").attachment), Some(old_id));
        assert_eq!(again.id_of(&ep("a").attachment), Some(a));
        assert_eq!(again.id_of(&ep("b").attachment), Some(b));
        again.remove(&ep("b").attachment).unwrap();
        assert_eq!(again.id_of(&ep("b").attachment), None);
    }
}
