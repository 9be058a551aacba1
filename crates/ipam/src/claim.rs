//! Claiming a block for this node: a free block of a pool, or an unclaimed
//! one that still has room.

use std::collections::{BTreeSet, HashMap, HashSet};

use ipnet::IpNet;
use weft_store::{Listing, Revision};

use crate::plan::{first_candidate, Plan};
use crate::record::{
    block_index, block_key, nth_block, parse_block_key, Allocation, BlockRecord, BLOCKS_PREFIX,
};
use crate::state::{Cached, Change, State};
use crate::types::Allocated;
use crate::{Family, Ipam, IpamError};

impl Ipam {
    /// Plans the claim of the lowest free block of the family's pools, with
    /// `alloc` in it: a create of a new block key, or an update of a block
    /// nobody holds. Lists the blocks once per `listing` (which also
    /// refreshes what this node knows of other nodes' blocks, and of blocks
    /// of its own another writer claimed: the block limit counts those).
    pub(crate) fn plan_claim(
        &self,
        st: &mut State,
        alloc: &Allocation,
        family: Family,
        now: u64,
        listing: &mut Option<Listing>,
    ) -> Result<Plan, IpamError> {
        // Without borrowing, a node at its limit need not look further.
        if self.cfg.strict_affinity && self.at_block_limit(st, family) {
            return Err(self.exhausted(st, family, now, true));
        }
        let fresh = listing.is_none();
        if fresh {
            *listing = Some(self.store.list(BLOCKS_PREFIX)?);
        }
        let kvs = listing.as_ref().map_or(&[][..], |l| &l.kvs[..]);
        let mut learned = false;
        let mut present = HashSet::new();
        // Per pool: indexes of blocks that exist, and those among them that
        // have no affinity (claimable by update).
        let mut taken: HashMap<IpNet, BTreeSet<u128>> = HashMap::new();
        let mut orphans: HashMap<String, (BlockRecord, Revision)> = HashMap::new();
        let mark = |taken: &mut HashMap<IpNet, BTreeSet<u128>>, cidr: &IpNet| {
            if let Some(pool) = self.cfg.pools.iter().find(|p| p.cidr.contains(cidr)) {
                // A key of another block size (left by an older config) still
                // covers its addresses: every block it overlaps is taken.
                let first = block_index(pool, cidr);
                let span = 1u128 << pool.block_prefix.saturating_sub(cidr.prefix_len());
                taken
                    .entry(pool.cidr)
                    .or_default()
                    .extend(first..first + span.min(1 << 16));
            }
        };
        // Blocks staged by this batch are taken too (the listing predates them).
        for key in st.staged.keys() {
            if let Some(cidr) = parse_block_key(key) {
                mark(&mut taken, &cidr);
            }
        }
        for kv in kvs {
            present.insert(kv.key.clone());
            let Some(cidr) = parse_block_key(&kv.key) else {
                continue;
            };
            mark(&mut taken, &cidr);
            if st.staged.contains_key(&kv.key) {
                // planned on by this batch: the commit checks its revision
                continue;
            }
            match BlockRecord::decode(kv) {
                Ok(rec) => {
                    let newer = st.cached(&kv.key).is_none_or(|c| c.rev < kv.mod_revision);
                    let mine = self.is_mine(&rec);
                    if rec.affinity.is_none() {
                        orphans.insert(kv.key.clone(), (rec.clone(), kv.mod_revision));
                    }
                    if newer {
                        learned |= mine;
                        st.blocks.remove(&kv.key);
                        self.put(
                            st,
                            kv.key.clone(),
                            Cached {
                                rec,
                                rev: kv.mod_revision,
                            },
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "ipam block skipped while claiming"),
            }
        }
        if fresh {
            let staged = &st.staged;
            st.blocks
                .retain(|k, _| present.contains(k) || staged.contains_key(k));
            st.foreign
                .retain(|k, _| present.contains(k) || staged.contains_key(k));
        }
        if learned {
            return Ok(Plan::Retry);
        }
        if self.at_block_limit(st, family) {
            return Err(self.exhausted(st, family, now, true));
        }
        for pool in self.pools_of(family) {
            let mut taken = taken.remove(&pool.cidr).unwrap_or_default();
            while let Some(index) = first_candidate(&taken, pool, &orphans, now) {
                let cidr = nth_block(pool, index);
                let key = block_key(&cidr);
                let (mut rec, rev) = orphans
                    .remove(&key)
                    .unwrap_or_else(|| (BlockRecord::new(cidr, pool.cidr, None), 0));
                rec.affinity = Some(self.cfg.node.clone());
                rec.prune(now);
                let Some(ordinal) = rec.pick_free(now) else {
                    taken.insert(index);
                    continue;
                };
                rec.allocations.insert(ordinal, alloc.clone());
                rec.next = (ordinal + 1) % rec.size();
                let a = Allocated {
                    addr: rec.addr(ordinal),
                    pool: rec.pool,
                    block: rec.cidr,
                };
                return Ok(Plan::Ready(a, Box::new(Change::new(key, rec, rev, true)?)));
            }
        }
        Err(self.exhausted(st, family, now, false))
    }
}
