//! The public values IPAM hands out: requests, allocations, usage and
//! findings.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::handle;
use crate::record::{Allocation, BlockRecord};

/// Who an allocation is for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationAttrs {
    pub container_id: String,
    pub ifname: String,
    pub pod_namespace: String,
    pub pod_name: String,
}

impl AllocationAttrs {
    pub fn handle(&self) -> String {
        handle(&self.container_id, &self.ifname)
    }
}

/// What to allocate. A requested address implies its family is wanted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllocRequest {
    pub ipv4: bool,
    pub ipv6: bool,
    /// Static addresses, at most one per family.
    pub requested: Vec<IpAddr>,
}

/// An address held by a handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Allocated {
    pub addr: IpAddr,
    pub pool: IpNet,
    pub block: IpNet,
}

/// Usage of one configured pool (maps 1:1 to weft-api's `PoolUsage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    pub cidr: IpNet,
    pub block_prefix: u8,
    /// Blocks of the pool claimed by any node.
    pub blocks: usize,
    /// Addresses the pool can hand out (saturating at `u64::MAX`).
    pub capacity: u64,
    pub allocated: u64,
    pub quarantined: u64,
}

/// One claimed block (maps 1:1 to weft-api's `BlockView`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockStats {
    pub cidr: IpNet,
    pub affinity: Option<String>,
    pub allocated: u64,
    pub quarantined: u64,
    pub capacity: u64,
}

/// One address held (maps 1:1 to weft-api's `AllocationView`, with the pod
/// reference flattened).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AllocationInfo {
    pub address: IpAddr,
    pub block: IpNet,
    pub handle: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub container_id: String,
    pub ifname: String,
    /// Unix seconds.
    pub allocated_at: u64,
    /// The node holding the address when it is not the block's owner (it
    /// borrowed the address).
    pub borrowed_by: Option<String>,
}

impl AllocationInfo {
    pub(crate) fn new(rec: &BlockRecord, ordinal: u32, a: &Allocation) -> AllocationInfo {
        AllocationInfo {
            address: rec.addr(ordinal),
            block: rec.cidr,
            handle: a.handle.clone(),
            pod_namespace: a.pod_namespace.clone(),
            pod_name: a.pod_name.clone(),
            container_id: a.container_id.clone(),
            ifname: a.ifname.clone(),
            allocated_at: a.allocated_at_ms / 1000,
            borrowed_by: a.node.clone(),
        }
    }
}

/// Everything `weft ipam show` displays, from one listing of the store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpamSnapshot {
    pub pools: Vec<PoolStats>,
    pub blocks: Vec<BlockStats>,
    pub allocations: Vec<AllocationInfo>,
}

/// What [`Ipam::collect_node`] freed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeCollection {
    /// Addresses the gone node held, now in quarantine.
    pub freed: Vec<AllocationInfo>,
    /// Blocks that lost the gone node's affinity (deleted, or left
    /// unclaimed while they still hold others' addresses or quarantine).
    pub blocks: Vec<IpNet>,
}

/// What [`Ipam::check`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckFindings {
    /// Addresses of this node's blocks held by a handle that is not live.
    pub leaked: Vec<AllocationInfo>,
    /// Anything else that does not add up, in words.
    pub problems: Vec<String>,
}

impl CheckFindings {
    pub fn is_clean(&self) -> bool {
        self.leaked.is_empty() && self.problems.is_empty()
    }
}
