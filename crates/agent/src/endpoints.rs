//! This node's endpoints (pod interfaces), persisted in the node-local store so
//! a restarted weftd knows every pod it wired and can reconcile the kernel
//! against them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use weft_api::{Attachment, EndpointInfo};
use weft_store::{Store, StoreError};

const PREFIX: &str = "/weft/endpoints/v1/";

fn key(a: &Attachment) -> String {
    format!("{PREFIX}{}/{}", a.container_id, a.ifname)
}

/// The endpoint table: an in-memory copy of what the store holds, written
/// through on every change.
pub struct Endpoints {
    store: Arc<dyn Store>,
    cache: Mutex<BTreeMap<Attachment, EndpointInfo>>,
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
        let mut cache = BTreeMap::new();
        let mut bad = Vec::new();
        for kv in listing.kvs {
            match serde_json::from_slice::<EndpointInfo>(&kv.value) {
                Ok(ep) => {
                    cache.insert(ep.attachment.clone(), ep);
                }
                Err(e) => bad.push(EndpointError::Corrupt {
                    key: kv.key,
                    reason: e.to_string(),
                }),
            }
        }
        Ok((
            Endpoints {
                store,
                cache: Mutex::new(cache),
            },
            bad,
        ))
    }

    pub fn get(&self, a: &Attachment) -> Option<EndpointInfo> {
        self.lock().get(a).cloned()
    }

    pub fn list(&self) -> Vec<EndpointInfo> {
        self.lock().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records `ep` durably (replacing any record of the same attachment).
    pub fn put(&self, ep: EndpointInfo) -> Result<(), EndpointError> {
        let k = key(&ep.attachment);
        let value = serde_json::to_vec(&ep).expect("endpoint serialises");
        loop {
            let current = self.store.get(&k)?;
            let outcome = match current {
                None => self.store.create(&k, &value, None)?.map(|_| ()),
                Some(kv) => self.store.update(&k, &value, kv.mod_revision)?.map(|_| ()),
            };
            if outcome.is_ok() {
                break;
            }
        }
        self.lock().insert(ep.attachment.clone(), ep);
        Ok(())
    }

    /// Forgets the endpoint durably; absent is fine.
    pub fn remove(&self, a: &Attachment) -> Result<Option<EndpointInfo>, EndpointError> {
        let _ = self.store.delete(&key(a), None)?;
        Ok(self.lock().remove(a))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Attachment, EndpointInfo>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}
