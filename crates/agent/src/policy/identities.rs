//! Security identities agreed on by every node, through the cluster store
//! (the embedded store on one node, etcd in a cluster; the Kubernetes API
//! backend plugs in behind the same `Store` trait).
//!
//! Layout, all under `/weft/identities/v1/`:
//!
//! - `keys/<sha256 of the key's JSON>` -> `{"id": N, "key": <IdentityKey>}`
//! - `ids/<N>` -> the same record (the number is taken)
//! - `next` -> the next number to hand out
//!
//! A new identity is one transaction: create both records if absent and
//! move `next` on by compare-and-swap. Two nodes racing for one key: one
//! commit wins, the other conflicts on `keys/…` and reads the winner's
//! number. Racing for two keys: one conflicts on `next` and retries with
//! the next number. Numbers are never reused (identities are not collected
//! yet: a few bytes per distinct label set, see ARCHITECTURE.md).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weft_policy::{Identity, IdentityAllocator, IdentityKey, PolicyError};
use weft_store::{Store, TxnOp};

pub const PREFIX: &str = "/weft/identities/v1/";
/// Conflicts on `next` before giving up this round (each one means another
/// node allocated meanwhile: progress is being made).
const MAX_TRIES: usize = 64;

#[derive(Serialize, Deserialize)]
struct Record {
    id: u32,
    key: IdentityKey,
}

/// The store-backed allocator with a cache of what it has seen (a key's
/// number never changes, so the cache is never stale).
pub struct StoreAllocator {
    store: Arc<dyn Store>,
    cache: BTreeMap<IdentityKey, Identity>,
}

fn digest(key: &IdentityKey) -> Result<String, PolicyError> {
    let json = serde_json::to_vec(key).map_err(|e| PolicyError::Allocator(e.to_string()))?;
    let d = ring::digest::digest(&ring::digest::SHA256, &json);
    Ok(d.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

fn store_err(e: impl std::fmt::Display) -> PolicyError {
    PolicyError::Allocator(format!("identity store: {e}"))
}

impl StoreAllocator {
    pub fn new(store: Arc<dyn Store>) -> StoreAllocator {
        StoreAllocator {
            store,
            cache: BTreeMap::new(),
        }
    }

    /// Identities in the cache (allocated or looked up by this node).
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    fn decode(&self, value: &[u8], key: &IdentityKey) -> Result<Identity, PolicyError> {
        let r: Record = serde_json::from_slice(value).map_err(|e| {
            store_err(format!(
                "unreadable identity record ({e}); remove {PREFIX} keys/… for it"
            ))
        })?;
        if &r.key != key {
            return Err(store_err(format!(
                "identity {} is recorded for another key ({}) than {key} (a hash collision?)",
                r.id, r.key
            )));
        }
        Ok(Identity(r.id))
    }

    fn lookup_or_create(&self, key: &IdentityKey) -> Result<Identity, PolicyError> {
        let at = format!("{PREFIX}keys/{}", digest(key)?);
        let next_key = format!("{PREFIX}next");
        for _ in 0..MAX_TRIES {
            if let Some(kv) = self.store.get(&at).map_err(store_err)? {
                return self.decode(&kv.value, key);
            }
            let next = self.store.get(&next_key).map_err(store_err)?;
            let (n, expected) = match &next {
                Some(kv) => {
                    let n: u32 = std::str::from_utf8(&kv.value)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .ok_or_else(|| store_err(format!("{next_key} is not a number")))?;
                    (n.max(Identity::FIRST_ALLOCATED), Some(kv.mod_revision))
                }
                None => (Identity::FIRST_ALLOCATED, None),
            };
            let after = n
                .checked_add(1)
                .ok_or_else(|| store_err("identity space exhausted"))?;
            let record = serde_json::to_vec(&Record {
                id: n,
                key: key.clone(),
            })
            .map_err(store_err)?;
            let after = after.to_string();
            let id_key = format!("{PREFIX}ids/{n}");
            let counter = match expected {
                Some(rev) => TxnOp::Update {
                    key: &next_key,
                    value: after.as_bytes(),
                    expected: rev,
                },
                None => TxnOp::Create {
                    key: &next_key,
                    value: after.as_bytes(),
                    lease: None,
                },
            };
            let ops = [
                TxnOp::Create {
                    key: &at,
                    value: &record,
                    lease: None,
                },
                TxnOp::Create {
                    key: &id_key,
                    value: &record,
                    lease: None,
                },
                counter,
            ];
            match self.store.commit(&ops).map_err(store_err)? {
                Ok(_) => return Ok(Identity(n)),
                // someone else gave this key its number: take theirs
                Err(c) if c.index == 0 => {
                    if let Some(kv) = c.current {
                        return self.decode(&kv.value, key);
                    }
                }
                // the number or the counter moved: another node allocated
                Err(_) => {}
            }
        }
        Err(store_err(format!(
            "gave up after {MAX_TRIES} conflicting allocations; retrying next round"
        )))
    }
}

impl IdentityAllocator for StoreAllocator {
    fn allocate(&mut self, key: &IdentityKey) -> Result<Identity, PolicyError> {
        if let Some(id) = key.reserved() {
            return Ok(id);
        }
        if let Some(id) = self.cache.get(key) {
            return Ok(*id);
        }
        let id = self.lookup_or_create(key)?;
        self.cache.insert(key.clone(), id);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use weft_policy::Subject;
    use weft_store::embedded::EmbeddedStore;

    fn pod(app: &str) -> IdentityKey {
        IdentityKey {
            subject: Subject::Pod {
                namespace: "x".into(),
                labels: [("app".to_string(), app.to_string())].into(),
                namespace_labels: BTreeMap::new(),
                named_ports: BTreeMap::new(),
            },
            cidr: None,
        }
    }

    #[test]
    fn same_key_same_number_across_allocators_and_restarts() {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
        let mut a = StoreAllocator::new(store.clone());
        let web = a.allocate(&pod("web")).unwrap();
        let db = a.allocate(&pod("db")).unwrap();
        assert_eq!(web, Identity(Identity::FIRST_ALLOCATED));
        assert_eq!(db, Identity(Identity::FIRST_ALLOCATED + 1));
        // another node (or this one restarted) with an empty cache
        let mut b = StoreAllocator::new(store);
        assert_eq!(b.allocate(&pod("db")).unwrap(), db);
        assert_eq!(b.allocate(&pod("web")).unwrap(), web);
        let key = IdentityKey {
            subject: Subject::World,
            cidr: None,
        };
        assert_eq!(b.allocate(&key).unwrap(), Identity::WORLD);
    }

    /// Two allocators on one store, racing over overlapping keys from
    /// threads: every key gets one number everywhere, and no number is
    /// given to two keys.
    #[test]
    fn racing_allocators_agree_and_never_share_a_number() {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
        let keys: Vec<IdentityKey> = (0..40).map(|i| pod(&format!("app{i}"))).collect();
        let run = |order: Vec<usize>| {
            let store = store.clone();
            let keys = keys.clone();
            std::thread::spawn(move || {
                let mut a = StoreAllocator::new(store);
                order
                    .into_iter()
                    .map(|i| (i, a.allocate(&keys[i]).unwrap()))
                    .collect::<BTreeMap<usize, Identity>>()
            })
        };
        let forward = run((0..40).collect());
        let backward = run((0..40).rev().collect());
        let interleaved = run((0..40).map(|i| (i * 7) % 40).collect());
        let a = forward.join().unwrap();
        let b = backward.join().unwrap();
        let c = interleaved.join().unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        let numbers: BTreeSet<Identity> = a.values().copied().collect();
        assert_eq!(numbers.len(), 40, "one number per key");
        assert!(numbers.iter().all(|n| n.0 >= Identity::FIRST_ALLOCATED));
    }

    #[test]
    fn a_record_for_another_key_is_an_error_not_a_silent_alias() {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
        let mut a = StoreAllocator::new(store.clone());
        a.allocate(&pod("web")).unwrap();
        // forge a collision: web's slot now claims to be db's
        let at = format!("{PREFIX}keys/{}", digest(&pod("db")).unwrap());
        let forged = serde_json::to_vec(&Record {
            id: 999,
            key: pod("web"),
        })
        .unwrap();
        store.create(&at, &forged, None).unwrap().unwrap();
        let err = StoreAllocator::new(store).allocate(&pod("db")).unwrap_err();
        assert!(err.to_string().contains("another key"), "{err}");
    }
}
