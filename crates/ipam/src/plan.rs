//! Planning one allocation: per family, an address from a block of this
//! node, a new block, or (without strict affinity) an address borrowed from
//! another node's block.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use weft_store::{Listing, Revision};

use crate::batch::Request;
use crate::config::PoolConfig;
use crate::record::{block_key, nth_block, to_u128, Allocation, BlockRecord, BLOCKS_PREFIX};
use crate::state::{Cached, Change, State};
use crate::types::Allocated;
use crate::{Family, Ipam, IpamError, MAX_ATTEMPTS};

/// How one family of an allocation is served.
pub(crate) enum Plan {
    /// This address, by this block write.
    Ready(Allocated, Box<Change>),
    /// The cache learned about blocks of this node: plan again.
    Retry,
}

/// The lowest block index of `pool` that is free or an unclaimed block with
/// room, skipping `taken`.
pub(crate) fn first_candidate(
    taken: &BTreeSet<u128>,
    pool: &PoolConfig,
    orphans: &HashMap<String, (BlockRecord, Revision)>,
    now: u64,
) -> Option<u128> {
    let mut i: u128 = 0;
    for &t in taken {
        if t > i {
            break;
        }
        if t == i {
            let key = block_key(&nth_block(pool, t));
            if orphans
                .get(&key)
                .is_some_and(|(rec, _)| rec.pick_free(now).is_some())
            {
                return Some(t);
            }
            i += 1;
        }
    }
    (i < pool.block_count()).then_some(i)
}

impl Ipam {
    /// Plans one allocation of a batch and stages its changes.
    pub(crate) fn plan_request(
        &self,
        st: &mut State,
        r: &Request,
        now: u64,
        listing: &mut Option<Listing>,
        pending: &mut BTreeMap<String, (Revision, bool)>,
    ) -> Result<Vec<Allocated>, IpamError> {
        let alloc = Allocation {
            handle: r.handle.clone(),
            container_id: r.attrs.container_id.clone(),
            ifname: r.attrs.ifname.clone(),
            pod_namespace: r.attrs.pod_namespace.clone(),
            pod_name: r.attrs.pod_name.clone(),
            allocated_at_ms: now,
            node: None,
        };
        let handle = &r.handle;
        let mut attempts = 0;
        loop {
            let held = self.held(st, handle);
            let mut out = Vec::new();
            let mut changes = Vec::new();
            let mut retry = false;
            for (family, want, requested) in r.wanted {
                if !want {
                    continue;
                }
                if let Some(h) = held.iter().find(|h| Family::of(&h.addr) == family) {
                    if let Some(r) = requested {
                        if r != h.addr {
                            return Err(IpamError::RequestRefused {
                                addr: r,
                                reason: format!(
                                    "handle {handle} already holds {}; release it first",
                                    h.addr
                                ),
                            });
                        }
                    }
                    out.push(*h);
                    continue;
                }
                let plan = match requested {
                    Some(addr) => self.plan_static(st, &alloc, addr, now)?,
                    None => self.plan_dynamic(st, &alloc, family, now, listing)?,
                };
                match plan {
                    Plan::Ready(a, change) => {
                        out.push(a);
                        changes.push(*change);
                    }
                    Plan::Retry => {
                        retry = true;
                        break;
                    }
                }
            }
            if !retry {
                for c in changes {
                    self.stage(st, c, pending);
                }
                return Ok(out);
            }
            attempts += 1;
            if attempts >= MAX_ATTEMPTS {
                return Err(IpamError::Contended {
                    key: BLOCKS_PREFIX.to_string(),
                    attempts,
                });
            }
        }
    }

    /// Plans a dynamic address of `family`: in a block of this node when one
    /// has room, else by claiming a block, else (without strict affinity) by
    /// borrowing from another node's block.
    pub(crate) fn plan_dynamic(
        &self,
        st: &mut State,
        alloc: &Allocation,
        family: Family,
        now: u64,
        listing: &mut Option<Listing>,
    ) -> Result<Plan, IpamError> {
        if self.pools_of(family).is_empty() {
            return Err(IpamError::NoPool { family });
        }
        let Some((key, ordinal)) = self.pick_dynamic(st, family, now) else {
            return match self.plan_claim(st, alloc, family, now, listing) {
                Err(e @ IpamError::Exhausted { .. }) if !self.cfg.strict_affinity => {
                    match self.plan_borrow(st, alloc, family, now)? {
                        Some(plan) => Ok(plan),
                        None => Err(e),
                    }
                }
                other => other,
            };
        };
        let cached = &st.blocks[&key];
        let rev = cached.rev;
        let mut rec = cached.rec.clone();
        rec.prune(now);
        rec.allocations.insert(ordinal, alloc.clone());
        rec.next = (ordinal + 1) % rec.size();
        let a = Allocated {
            addr: rec.addr(ordinal),
            pool: rec.pool,
            block: rec.cidr,
        };
        Ok(Plan::Ready(a, Box::new(Change::new(key, rec, rev, false)?)))
    }

    /// Plans borrowing a free address of `family` from another node's block
    /// (as last listed: `plan_claim` always lists before it fails for lack
    /// of blocks): blocks in pool order and address order, next fit inside.
    pub(crate) fn plan_borrow(
        &self,
        st: &State,
        alloc: &Allocation,
        family: Family,
        now: u64,
    ) -> Result<Option<Plan>, IpamError> {
        let mut blocks: Vec<(usize, u128, &String, &Cached)> = st
            .foreign
            .iter()
            // a block whose node keeps a local journal may have allocations
            // the store does not show yet: never borrow from it
            .filter(|(_, c)| c.rec.family() == family && c.rec.affinity.is_some() && !c.rec.local)
            .filter_map(|(k, c)| {
                let pool = self.pool_of_block(&c.rec)?;
                Some((pool, to_u128(c.rec.cidr.network()), k, c))
            })
            .collect();
        blocks.sort_by_key(|b| (b.0, b.1));
        let Some((key, c, ordinal)) = blocks
            .into_iter()
            .find_map(|(_, _, k, c)| c.rec.pick_free(now).map(|o| (k, c, o)))
        else {
            return Ok(None);
        };
        let mut rec = c.rec.clone();
        rec.prune(now);
        let mut alloc = alloc.clone();
        alloc.node = Some(self.cfg.node.clone());
        rec.allocations.insert(ordinal, alloc);
        rec.next = (ordinal + 1) % rec.size();
        let a = Allocated {
            addr: rec.addr(ordinal),
            pool: rec.pool,
            block: rec.cidr,
        };
        tracing::debug!(address = %a.addr, block = %rec.cidr, owner = ?rec.affinity, "ipam borrows an address");
        Ok(Some(Plan::Ready(
            a,
            Box::new(Change::new(key.clone(), rec, c.rev, false)?),
        )))
    }

    /// The free ordinal to use in this node's blocks: blocks in pool order
    /// and address order, next fit inside the block.
    pub(crate) fn pick_dynamic(
        &self,
        st: &State,
        family: Family,
        now: u64,
    ) -> Option<(String, u32)> {
        let mut blocks: Vec<(usize, u128, &String, &BlockRecord)> = st
            .blocks
            .iter()
            .filter(|(_, c)| c.rec.family() == family)
            .filter_map(|(k, c)| {
                let pool = self.pool_of_block(&c.rec)?;
                Some((pool, to_u128(c.rec.cidr.network()), k, &c.rec))
            })
            .collect();
        blocks.sort_by_key(|b| (b.0, b.1));
        blocks
            .into_iter()
            .find_map(|(_, _, k, rec)| rec.pick_free(now).map(|o| (k.clone(), o)))
    }

    pub(crate) fn node_blocks(&self, st: &State, family: Family) -> usize {
        st.blocks
            .values()
            .filter(|c| c.rec.family() == family && self.pool_of_block(&c.rec).is_some())
            .count()
    }

    pub(crate) fn at_block_limit(&self, st: &State, family: Family) -> bool {
        self.cfg
            .max_blocks_per_node
            .is_some_and(|max| self.node_blocks(st, family) >= max as usize)
    }

    pub(crate) fn exhausted(&self, st: &State, family: Family, now: u64, limit: bool) -> IpamError {
        let pools = self.pools_of(family);
        let mut quarantined = 0;
        let mut first: Option<u64> = None;
        for c in st.blocks.values().filter(|c| c.rec.family() == family) {
            for (_, until) in c.rec.active_quarantine(now) {
                quarantined += 1;
                first = Some(first.map_or(until, |f| f.min(until)));
            }
        }
        IpamError::Exhausted {
            family,
            pool: pools[0].cidr,
            other_pools: pools[1..].iter().map(|p| p.cidr).collect(),
            quarantined,
            next_free_in_ms: first.map(|f| f - now),
            node_blocks: self.node_blocks(st, family),
            max_blocks: if limit {
                self.cfg.max_blocks_per_node
            } else {
                None
            },
        }
    }
}
