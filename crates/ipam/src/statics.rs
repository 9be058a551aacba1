//! Static addresses (CNI `ips`): the block that holds the address asked for,
//! claimed when free, and the address taken if nobody holds it.

use std::net::IpAddr;

use crate::plan::Plan;
use crate::record::{block_key, block_of, reserved, Allocation, BlockRecord};
use crate::state::{Change, State};
use crate::types::Allocated;
use crate::{Ipam, IpamError};

impl Ipam {
    /// Plans the static address `addr`, in a block of this node or in a
    /// block it claims by the same write.
    pub(crate) fn plan_static(
        &self,
        st: &State,
        alloc: &Allocation,
        addr: IpAddr,
        now: u64,
    ) -> Result<Plan, IpamError> {
        let refuse = |reason: String| IpamError::RequestRefused { addr, reason };
        let Some(pool) = self.cfg.pools.iter().find(|p| p.cidr.contains(&addr)) else {
            let pools: Vec<String> = self.cfg.pools.iter().map(|p| p.cidr.to_string()).collect();
            return Err(refuse(format!(
                "it is not inside any pool ({}); ask for an address of a pool or add a pool",
                pools.join(", ")
            )));
        };
        if reserved(&pool.cidr, addr) {
            return Err(refuse(format!(
                "it is the first or last address of pool {}, which weft never hands out; ask for another",
                pool.cidr
            )));
        }
        let cidr = block_of(pool, addr);
        let key = block_key(&cidr);
        let (mut rec, rev, claims) = match st.blocks.get(&key) {
            Some(c) => (c.rec.clone(), c.rev, false),
            None => match self.store.get(&key)? {
                None => {
                    if self.at_block_limit(st, pool.family()) {
                        return Err(refuse(format!(
                            "its block {cidr} is unclaimed and this node already holds max_blocks_per_node ({}) {} blocks; raise the limit or ask for an address in the node's blocks",
                            self.cfg.max_blocks_per_node.unwrap_or_default(),
                            pool.family()
                        )));
                    }
                    (BlockRecord::new(cidr, pool.cidr, None), 0, true)
                }
                Some(kv) => {
                    let rec = BlockRecord::decode(&kv)?;
                    match &rec.affinity {
                        Some(n) if *n == self.cfg.node => {}
                        Some(n) => {
                            return Err(refuse(format!(
                                "its block {cidr} belongs to node {n}; borrowing from another node's block is not supported yet, ask for an address in a block of this node"
                            )))
                        }
                        None if self.at_block_limit(st, pool.family()) => {
                            return Err(refuse(format!(
                                "its block {cidr} is unclaimed and this node already holds max_blocks_per_node ({}) {} blocks; raise the limit",
                                self.cfg.max_blocks_per_node.unwrap_or_default(),
                                pool.family()
                            )))
                        }
                        None => {}
                    }
                    let claims = rec.affinity.is_none();
                    (rec, kv.mod_revision, claims)
                }
            },
        };
        let Some(ordinal) = rec.ordinal(addr) else {
            return Err(IpamError::Corrupt {
                key,
                reason: format!("block record {} does not contain {addr}", rec.cidr),
            });
        };
        if let Some(holder) = rec.allocations.get(&ordinal) {
            return Err(refuse(format!(
                "it is already allocated to {}",
                holder.holder()
            )));
        }
        if let Some(&until) = rec.quarantine.get(&ordinal).filter(|&&u| u > now) {
            // the quarantine keeps an address from a *new* owner; the handle
            // that released it may have it back (same container, same ifname)
            if st.released_by(&alloc.handle, addr, until) {
                rec.quarantine.remove(&ordinal);
            } else {
                return Err(refuse(format!(
                "it was released recently and rests in quarantine for another {}s; retry then or ask for another address",
                (until - now).div_ceil(1000)
            )));
            }
        }
        rec.affinity = Some(self.cfg.node.clone());
        rec.prune(now);
        rec.allocations.insert(ordinal, alloc.clone());
        let a = Allocated {
            addr,
            pool: rec.pool,
            block: rec.cidr,
        };
        Ok(Plan::Ready(
            a,
            Box::new(Change::new(key, rec, rev, claims)?),
        ))
    }
}
