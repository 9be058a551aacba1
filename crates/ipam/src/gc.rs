//! Collection: leaked allocations of this node, empty blocks after their
//! grace, and the addresses and blocks of nodes that are gone.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use ipnet::IpNet;

use crate::record::{to_u128, Allocation, BlockRecord, BLOCKS_PREFIX};
use crate::state::Change;
use crate::types::{AllocationInfo, NodeCollection};
use crate::{ms, Family, Ipam, IpamError, MAX_ATTEMPTS};

impl Ipam {
    /// Frees (with quarantine) the allocations this node holds, in its own
    /// blocks or borrowed in other nodes' blocks, whose handle is not in
    /// `live` and that are at least `gc_grace` old: an ADD in flight has
    /// allocated but not yet recorded its endpoint, the grace protects it.
    /// Never frees a live handle, nor an address another node borrowed from
    /// this node's blocks. Reloads the cache first.
    pub fn gc(&self, live: &HashSet<String>) -> Result<Vec<AllocationInfo>, IpamError> {
        let mut st = self.lock();
        self.refresh_locked(&mut st)?;
        let now = self.clock.now_ms();
        let grace = ms(self.cfg.gc_grace);
        let until = now.saturating_add(ms(self.cfg.quarantine));
        let keys: Vec<String> = st
            .blocks
            .iter()
            .chain(st.foreign.iter())
            .filter(|(_, c)| c.rec.allocations.values().any(|a| self.holds(&c.rec, a)))
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        // One commit per block: a gc may touch every block of the node, and
        // one transaction of them all could outgrow a backend's request limit.
        for key in keys {
            let freed = self.free_in_blocks(&mut st, &[key], Some(until), |rec, _, a| {
                self.holds(rec, a)
                    && !live.contains(&a.handle)
                    && now.saturating_sub(a.allocated_at_ms) >= grace
            })?;
            for f in &freed {
                tracing::info!(address = %f.address, handle = %f.handle, "ipam gc freed a leaked address");
            }
            out.extend(freed);
        }
        Ok(out)
    }

    /// Gives back the blocks of this node that have been empty (no
    /// allocation, no quarantine in force) for at least
    /// `block_release_grace`: each is deleted if it is still at the revision
    /// this decision was made on (a block with any allocation is never
    /// deleted). The agent calls it periodically. Reloads the cache first;
    /// one commit per block given back. Returns the blocks given back.
    pub fn release_empty_blocks(&self) -> Result<Vec<IpNet>, IpamError> {
        let mut st = self.lock();
        self.refresh_locked(&mut st)?;
        let now = self.clock.now_ms();
        let grace = ms(self.cfg.block_release_grace);
        let empty: HashSet<String> = st
            .blocks
            .iter()
            .filter(|(_, c)| c.rec.allocations.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        st.empty_seen.retain(|k, _| empty.contains(k));
        let mut out = Vec::new();
        for key in empty {
            let seen = *st.empty_seen.entry(key.clone()).or_insert(now);
            let Some(c) = st.blocks.get(&key) else {
                continue;
            };
            if c.rec.active_quarantine(now).next().is_some() {
                continue;
            }
            let last_quarantine = c.rec.quarantine.values().copied().max().unwrap_or(0);
            let idle_since = c.rec.emptied_at_ms.unwrap_or(seen).max(last_quarantine);
            if now.saturating_sub(idle_since) < grace {
                continue;
            }
            let cidr = c.rec.cidr;
            let change = Change::delete(key.clone(), c.rec.clone(), c.rev);
            // A lost condition means the block changed (an address was
            // handed out or borrowed): it is not empty any more, keep it.
            if self.write(&mut st, vec![change])?.is_ok() {
                out.push(cidr);
            }
        }
        out.sort_by_key(|c| (Family::of_net(c), to_u128(c.network())));
        Ok(out)
    }

    /// Collects what a node that is gone left behind: when `node` is not in
    /// `live_nodes` (the node registry, as the caller sees it) and this
    /// `Ipam` has seen it gone for at least `grace` (the first call starts
    /// the clock), every allocation `node` holds (in its blocks or borrowed
    /// elsewhere) that is at least `grace` old is freed into quarantine, and
    /// its blocks lose their affinity (an empty block without quarantine is
    /// deleted; others become unclaimed, to be claimed by any node). Never
    /// touches an allocation of a live node, nor anything of this node.
    /// One commit per block changed.
    pub fn collect_node(
        &self,
        node: &str,
        live_nodes: &HashSet<String>,
        grace: Duration,
    ) -> Result<NodeCollection, IpamError> {
        let mut st = self.lock();
        let now = self.clock.now_ms();
        if node == self.cfg.node || live_nodes.contains(node) {
            st.gone_since.remove(node);
            return Ok(NodeCollection::default());
        }
        let since = *st.gone_since.entry(node.to_string()).or_insert(now);
        let grace = ms(grace);
        if now.saturating_sub(since) < grace {
            return Ok(NodeCollection::default());
        }
        let listing = self.refresh_locked(&mut st)?;
        let until = now.saturating_add(ms(self.cfg.quarantine));
        let owned = |rec: &BlockRecord, a: &Allocation| {
            a.owner(rec) == Some(node) && now.saturating_sub(a.allocated_at_ms) >= grace
        };
        let mut out = NodeCollection::default();
        for kv in &listing.kvs {
            let mut attempts = 0;
            while let Some(c) = st.cached(&kv.key) {
                let (mut rec, rev) = (c.rec.clone(), c.rev);
                let ordinals: Vec<u32> = rec
                    .allocations
                    .iter()
                    .filter(|(_, a)| owned(&rec, a))
                    .map(|(&o, _)| o)
                    .collect();
                let affine = rec.affinity.as_deref() == Some(node);
                if ordinals.is_empty() && !affine {
                    break;
                }
                rec.prune(now);
                let mut freed = Vec::new();
                for o in ordinals {
                    if let Some(a) = rec.allocations.remove(&o) {
                        freed.push(AllocationInfo::new(&rec, o, &a));
                    }
                    rec.quarantine.insert(o, until);
                }
                let mut released = None;
                if affine {
                    // Allocations of the gone node younger than the grace
                    // keep the block as it is until a later call.
                    if rec
                        .allocations
                        .values()
                        .any(|a| a.owner(&rec) == Some(node))
                    {
                        if freed.is_empty() {
                            break;
                        }
                    } else {
                        rec.affinity = None;
                        released = Some(rec.cidr);
                        if rec.local {
                            // The gone node may have handed out addresses it
                            // had only in its local journal: the block goes
                            // back as a whole, every free address of it in
                            // quarantine as if each had just been released.
                            rec.local = false;
                            for o in 0..rec.size() {
                                if rec.usable(o) && !rec.allocations.contains_key(&o) {
                                    rec.quarantine.insert(o, until);
                                }
                            }
                        }
                    }
                }
                if rec.allocations.is_empty() {
                    rec.emptied_at_ms = Some(now);
                }
                let delete = rec.affinity.is_none()
                    && rec.allocations.is_empty()
                    && rec.active_quarantine(now).next().is_none();
                let change = if delete {
                    Change::delete(kv.key.clone(), rec, rev)
                } else {
                    Change::new(kv.key.clone(), rec, rev, false)?
                };
                match self.write(&mut st, vec![change])? {
                    Ok(()) => {
                        for f in &freed {
                            tracing::info!(address = %f.address, handle = %f.handle, node, "ipam freed an address of a gone node");
                        }
                        out.freed.extend(freed);
                        out.blocks.extend(released);
                        break;
                    }
                    Err(key) => {
                        attempts += 1;
                        if attempts >= MAX_ATTEMPTS {
                            return Err(IpamError::Contended { key, attempts });
                        }
                    }
                }
            }
        }
        if out.freed.is_empty() && out.blocks.is_empty() {
            // nothing (more) of the node: forget it
            st.gone_since.remove(node);
        }
        Ok(out)
    }

    /// [`Ipam::collect_node`] for every node the IPAM keys mention (block
    /// affinities and borrowers) that is not in `live_nodes`.
    pub fn collect_gone_nodes(
        &self,
        live_nodes: &HashSet<String>,
        grace: Duration,
    ) -> Result<NodeCollection, IpamError> {
        let listing = self.store.list(BLOCKS_PREFIX)?;
        let mut nodes = BTreeSet::new();
        for kv in &listing.kvs {
            let Ok(rec) = BlockRecord::decode(kv) else {
                continue;
            };
            nodes.extend(rec.affinity.clone());
            nodes.extend(rec.allocations.values().filter_map(|a| a.node.clone()));
        }
        let mut out = NodeCollection::default();
        for n in nodes {
            if n == self.cfg.node || live_nodes.contains(&n) {
                continue;
            }
            let c = self.collect_node(&n, live_nodes, grace)?;
            out.freed.extend(c.freed);
            out.blocks.extend(c.blocks);
        }
        Ok(out)
    }
}
