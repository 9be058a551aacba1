//! Pools in the store, and the node's cache of block records: loading it,
//! keeping it in step after a lost compare-and-swap, and finding what a
//! handle holds.

use std::net::IpAddr;

use weft_store::{Conflict, KeyValue, Listing};

use crate::config::PoolConfig;
use crate::record::{pool_key, Allocation, BlockRecord, BLOCKS_PREFIX, POOLS_PREFIX};
use crate::state::{Cached, State};
use crate::types::Allocated;
use crate::{Family, Ipam, IpamError, MAX_ATTEMPTS};

pub(crate) fn decode_pool(kv: &KeyValue) -> Result<PoolConfig, IpamError> {
    let p: PoolConfig = serde_json::from_slice(&kv.value).map_err(|e| IpamError::Corrupt {
        key: kv.key.clone(),
        reason: format!("undecodable pool record: {e}"),
    })?;
    if pool_key(&p.cidr) != kv.key {
        return Err(IpamError::Corrupt {
            key: kv.key.clone(),
            reason: format!(
                "the record describes pool {} but sits under another key",
                p.cidr
            ),
        });
    }
    Ok(p)
}

pub(crate) fn check_same_pool(
    configured: &PoolConfig,
    stored: &PoolConfig,
) -> Result<(), IpamError> {
    if configured == stored {
        return Ok(());
    }
    Err(IpamError::InvalidConfig {
        reason: format!(
            "pool {} is defined in the store with /{} blocks but configured with /{}; configure /{} (the block size of a pool in use cannot change)",
            configured.cidr, stored.block_prefix, configured.block_prefix, stored.block_prefix
        ),
    })
}

impl Ipam {
    pub(crate) fn ensure_pools(&self) -> Result<(), IpamError> {
        let listing = self.store.list(POOLS_PREFIX)?;
        let mut stored = Vec::new();
        for kv in &listing.kvs {
            stored.push(decode_pool(kv)?);
        }
        for p in &self.cfg.pools {
            for s in &stored {
                if s.cidr == p.cidr {
                    check_same_pool(p, s)?;
                } else if s.cidr.contains(&p.cidr) || p.cidr.contains(&s.cidr) {
                    return Err(IpamError::InvalidConfig {
                        reason: format!(
                            "pool {} overlaps pool {} already defined in the store (key {}); configure the stored pool instead, or delete its key once it holds no blocks",
                            p.cidr,
                            s.cidr,
                            pool_key(&s.cidr)
                        ),
                    });
                }
            }
            if stored.iter().any(|s| s.cidr == p.cidr) {
                continue;
            }
            let key = pool_key(&p.cidr);
            let value = serde_json::to_vec(p).map_err(|e| IpamError::InvalidConfig {
                reason: format!("cannot encode pool {}: {e}", p.cidr),
            })?;
            for attempt in 0.. {
                match self.store.create(&key, &value, None)? {
                    Ok(_) => {
                        tracing::info!(pool = %p.cidr, block_prefix = p.block_prefix, "ipam pool created");
                        break;
                    }
                    Err(Conflict { current: Some(kv) }) => {
                        check_same_pool(p, &decode_pool(&kv)?)?;
                        break;
                    }
                    Err(Conflict { current: None }) if attempt < MAX_ATTEMPTS => continue,
                    Err(Conflict { current: None }) => {
                        return Err(IpamError::Contended {
                            key,
                            attempts: attempt,
                        })
                    }
                }
            }
        }
        Ok(())
    }

    /// Reloads this node's blocks (and what it knows of other nodes'
    /// blocks) from the store.
    pub fn refresh(&self) -> Result<(), IpamError> {
        let mut st = self.lock();
        self.refresh_locked(&mut st).map(drop)
    }

    pub(crate) fn refresh_locked(&self, st: &mut State) -> Result<Listing, IpamError> {
        let sent = self.clock.now_ms();
        let listing = self.store.list(BLOCKS_PREFIX)?;
        self.gate.store_answered(sent);
        self.load(st, &listing);
        Ok(listing)
    }

    /// Replaces the caches with the blocks of `listing`.
    pub(crate) fn load(&self, st: &mut State, listing: &Listing) {
        st.blocks.clear();
        st.foreign.clear();
        st.borrowed.clear();
        for kv in &listing.kvs {
            match BlockRecord::decode(kv) {
                Ok(rec) => self.put(
                    st,
                    kv.key.clone(),
                    Cached {
                        rec,
                        rev: kv.mod_revision,
                    },
                ),
                Err(e) => tracing::warn!(error = %e, "skipping an ipam block"),
            }
        }
        let journaled: Vec<String> = st.local.keys().cloned().collect();
        for key in journaled {
            self.overlay_local(st, &key);
        }
    }

    /// Caches a block under `key`: in this node's blocks or in the others'
    /// (indexing the addresses this node borrowed in it).
    pub(crate) fn put(&self, st: &mut State, key: String, c: Cached) {
        if self.is_mine(&c.rec) {
            st.foreign.remove(&key);
            st.blocks.insert(key, c);
        } else {
            st.blocks.remove(&key);
            for a in c.rec.allocations.values() {
                if a.node.as_deref() == Some(self.cfg.node.as_str()) {
                    st.borrowed
                        .entry(a.handle.clone())
                        .or_default()
                        .insert(key.clone());
                }
            }
            st.foreign.insert(key, c);
        }
    }

    pub(crate) fn is_mine(&self, rec: &BlockRecord) -> bool {
        rec.affinity.as_deref() == Some(self.cfg.node.as_str())
    }

    /// Whether this node holds allocation `a` of `rec` (its own block and not
    /// lent, or borrowed by this node).
    pub(crate) fn holds(&self, rec: &BlockRecord, a: &Allocation) -> bool {
        a.owner(rec) == Some(self.cfg.node.as_str())
    }

    /// The configured pool a block belongs to, if it fits the pool's geometry.
    pub(crate) fn pool_of_block(&self, rec: &BlockRecord) -> Option<usize> {
        self.cfg.pools.iter().position(|p| {
            p.cidr == rec.pool
                && p.block_prefix == rec.cidr.prefix_len()
                && p.cidr.contains(&rec.cidr)
        })
    }

    pub(crate) fn pools_of(&self, family: Family) -> Vec<&PoolConfig> {
        self.cfg
            .pools
            .iter()
            .filter(|p| p.family() == family)
            .collect()
    }

    /// Stores the outcome of a lost compare-and-swap in the cache.
    pub(crate) fn absorb(&self, st: &mut State, key: &str, current: Option<KeyValue>) {
        st.blocks.remove(key);
        st.foreign.remove(key);
        if let Some(kv) = current {
            match BlockRecord::decode(&kv) {
                Ok(rec) => self.put(
                    st,
                    key.to_string(),
                    Cached {
                        rec,
                        rev: kv.mod_revision,
                    },
                ),
                Err(e) => tracing::warn!(error = %e, "ipam block became undecodable"),
            }
        }
        self.overlay_local(st, key);
    }

    /// Keys of the cached blocks where `handle` may hold an address of this
    /// node: its own blocks and the blocks it borrowed from.
    pub(crate) fn handle_keys(&self, st: &State, handle: &str) -> Vec<String> {
        let mut keys: Vec<String> = st
            .blocks
            .iter()
            .filter(|(_, c)| {
                c.rec
                    .allocations
                    .values()
                    .any(|a| a.handle == handle && self.holds(&c.rec, a))
            })
            .map(|(k, _)| k.clone())
            .collect();
        if let Some(b) = st.borrowed.get(handle) {
            keys.extend(b.iter().filter(|k| st.foreign.contains_key(*k)).cloned());
        }
        keys
    }

    pub(crate) fn held(&self, st: &State, handle: &str) -> Vec<Allocated> {
        let mut out = Vec::new();
        for key in self.handle_keys(st, handle) {
            let Some(c) = st.cached(&key) else { continue };
            for (&o, a) in &c.rec.allocations {
                if a.handle == handle && self.holds(&c.rec, a) {
                    out.push(Allocated {
                        addr: c.rec.addr(o),
                        pool: c.rec.pool,
                        block: c.rec.cidr,
                    });
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The addresses `handle` holds for this node, in its own blocks or
    /// borrowed from other nodes' blocks (from the cache).
    pub fn find(&self, handle: &str) -> Vec<IpAddr> {
        let st = self.lock();
        self.held(&st, handle).into_iter().map(|a| a.addr).collect()
    }
}
