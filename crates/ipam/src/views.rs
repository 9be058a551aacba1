//! What `weft ipam show` and `weft status` display, from one listing of the
//! store.

use crate::record::{pool_capacity, to_u128, BlockRecord, BLOCKS_PREFIX};
use crate::types::{AllocationInfo, BlockStats, IpamSnapshot, PoolStats};
use crate::{Ipam, IpamError};

impl Ipam {
    /// Pools, blocks and allocations of all nodes, from one fresh listing.
    /// An undecodable block is an error (`Corrupt`), not silently skipped.
    /// This node's journaled allocations are flushed first; other nodes'
    /// reach the store within their flush interval.
    pub fn snapshot(&self) -> Result<IpamSnapshot, IpamError> {
        self.flush()?;
        let now = self.clock.now_ms();
        let listing = self.store.list(BLOCKS_PREFIX)?;
        let mut recs = Vec::new();
        for kv in &listing.kvs {
            recs.push(BlockRecord::decode(kv)?);
        }
        recs.sort_by_key(|r| (r.family(), to_u128(r.cidr.network())));
        let mut snap = IpamSnapshot::default();
        for p in &self.cfg.pools {
            let mut s = PoolStats {
                cidr: p.cidr,
                block_prefix: p.block_prefix,
                blocks: 0,
                capacity: pool_capacity(p),
                allocated: 0,
                quarantined: 0,
            };
            for r in recs.iter().filter(|r| p.cidr.contains(&r.cidr)) {
                s.blocks += 1;
                s.allocated += r.allocations.len() as u64;
                s.quarantined += r.active_quarantine(now).count() as u64;
            }
            snap.pools.push(s);
        }
        for r in &recs {
            snap.blocks.push(BlockStats {
                cidr: r.cidr,
                affinity: r.affinity.clone(),
                allocated: r.allocations.len() as u64,
                quarantined: r.active_quarantine(now).count() as u64,
                capacity: r.capacity(),
            });
            for (&o, a) in &r.allocations {
                snap.allocations.push(AllocationInfo::new(r, o, a));
            }
        }
        Ok(snap)
    }

    /// Usage of each configured pool (fresh from the store).
    pub fn pools_usage(&self) -> Result<Vec<PoolStats>, IpamError> {
        Ok(self.snapshot()?.pools)
    }

    /// Every claimed block, of every node (fresh from the store).
    pub fn blocks(&self) -> Result<Vec<BlockStats>, IpamError> {
        Ok(self.snapshot()?.blocks)
    }

    /// Every allocation, of every node (fresh from the store).
    pub fn allocations(&self) -> Result<Vec<AllocationInfo>, IpamError> {
        Ok(self.snapshot()?.allocations)
    }
}
