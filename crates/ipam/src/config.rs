//! Pools and the node's IPAM settings, with their validation.

use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{Family, IpamError};

/// Smallest block: 4 addresses (2 host bits).
/// Default [`IpamConfig::flush_interval`].
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// Default [`IpamConfig::local_idle`].
pub const DEFAULT_LOCAL_IDLE: Duration = Duration::from_secs(5);
pub const MIN_BLOCK_HOST_BITS: u8 = 2;
/// Largest block: 4096 addresses (12 host bits, Calico's limit too). A block
/// is one store value rewritten on every allocation: a full block of 4096
/// allocations (~250 bytes each) just fits the store's 1 MiB value limit.
pub const MAX_BLOCK_HOST_BITS: u8 = 12;
pub const DEFAULT_V4_BLOCK_PREFIX: u8 = 26;
pub const DEFAULT_V6_BLOCK_PREFIX: u8 = 122;
pub const DEFAULT_QUARANTINE: Duration = Duration::from_secs(30);
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(60);
pub const DEFAULT_BLOCK_RELEASE_GRACE: Duration = Duration::from_secs(300);
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_millis(1);

/// An IP pool cut into blocks of `block_prefix`. This is also the JSON stored
/// under the pool's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    pub cidr: IpNet,
    pub block_prefix: u8,
}

impl PoolConfig {
    /// A pool with the default block size (/26 for IPv4, /122 for IPv6; a
    /// pool smaller than that is a single block).
    pub fn new(cidr: IpNet) -> PoolConfig {
        let default = match Family::of_net(&cidr) {
            Family::V4 => DEFAULT_V4_BLOCK_PREFIX,
            Family::V6 => DEFAULT_V6_BLOCK_PREFIX,
        };
        PoolConfig {
            cidr,
            block_prefix: default.max(cidr.prefix_len()),
        }
    }

    pub fn with_block_prefix(cidr: IpNet, block_prefix: u8) -> PoolConfig {
        PoolConfig { cidr, block_prefix }
    }

    pub fn family(&self) -> Family {
        Family::of_net(&self.cidr)
    }

    /// Number of blocks the pool is cut into.
    pub(crate) fn block_count(&self) -> u128 {
        1u128 << (self.block_prefix - self.cidr.prefix_len())
    }

    pub fn validate(&self) -> Result<(), IpamError> {
        let bad = |reason: String| Err(IpamError::InvalidConfig { reason });
        let max = self.cidr.max_prefix_len();
        if self.cidr.trunc() != self.cidr {
            return bad(format!(
                "pool {} has host bits set; write it as {}",
                self.cidr,
                self.cidr.trunc()
            ));
        }
        if self.block_prefix > max || self.block_prefix < self.cidr.prefix_len() {
            return bad(format!(
                "pool {}: block prefix /{} must lie between the pool's /{} and /{max}",
                self.cidr,
                self.block_prefix,
                self.cidr.prefix_len()
            ));
        }
        let host_bits = max - self.block_prefix;
        if !(MIN_BLOCK_HOST_BITS..=MAX_BLOCK_HOST_BITS).contains(&host_bits) {
            return bad(format!(
                "pool {}: blocks of /{} hold {} addresses; a block must hold 4 to 4096 (/{} to /{})",
                self.cidr,
                self.block_prefix,
                1u128 << host_bits,
                max - MAX_BLOCK_HOST_BITS,
                max - MIN_BLOCK_HOST_BITS
            ));
        }
        Ok(())
    }
}

/// The node's IPAM settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConfig {
    /// This node's name: the affinity of the blocks it claims.
    pub node: String,
    pub pools: Vec<PoolConfig>,
    /// How long a released address rests before it can be handed out again.
    pub quarantine: Duration,
    /// How old an allocation without a live handle must be before GC frees it.
    pub gc_grace: Duration,
    /// Only allocate from this node's own blocks. With `false`, when the
    /// node's blocks are full and it cannot claim another block (none left,
    /// or `max_blocks_per_node` reached), it borrows a free address from a
    /// block of another node.
    pub strict_affinity: bool,
    /// Most blocks of one IP family the node may claim (Calico's
    /// maxBlocksPerHost, counted per family as Calico does); `None` = no limit.
    pub max_blocks_per_node: Option<u32>,
    /// How long a block of this node must have been empty (no allocation,
    /// no quarantine in force) before [`crate::Ipam::release_empty_blocks`]
    /// gives it back.
    pub block_release_grace: Duration,
    /// Group commit: concurrent `allocate` calls of one `Ipam` are planned
    /// together and written in one store commit. `false` writes each
    /// allocation on its own (for comparison).
    pub batching: bool,
    /// How long a batch leader waits for allocations other threads have
    /// started but not yet queued (only while there are such threads).
    pub batch_window: Duration,
    /// With a local journal ([`crate::Ipam::with_journal`]): how often the
    /// journal's allocations are written to the store (the longest a
    /// listing of the store lags behind this node's allocations).
    pub flush_interval: Duration,
    /// With a local journal: how long a block of this node must see no
    /// local allocation before it is opened to borrowing again (its `lo`
    /// mark cleared, one write).
    pub local_idle: Duration,
}

impl IpamConfig {
    /// Defaults: quarantine 30 s, GC grace 60 s, strict affinity, no block
    /// limit, empty blocks given back after 5 min, batching on (window 1 ms).
    pub fn new(node: impl Into<String>, pools: Vec<PoolConfig>) -> IpamConfig {
        IpamConfig {
            node: node.into(),
            pools,
            quarantine: DEFAULT_QUARANTINE,
            gc_grace: DEFAULT_GC_GRACE,
            strict_affinity: true,
            max_blocks_per_node: None,
            block_release_grace: DEFAULT_BLOCK_RELEASE_GRACE,
            batching: true,
            batch_window: DEFAULT_BATCH_WINDOW,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            local_idle: DEFAULT_LOCAL_IDLE,
        }
    }

    pub fn validate(&self) -> Result<(), IpamError> {
        let bad = |reason: String| Err(IpamError::InvalidConfig { reason });
        if self.node.is_empty() {
            return bad("the node name is empty; set the node name".into());
        }
        if self.pools.is_empty() {
            return bad("no ip pool is configured; add at least one pool".into());
        }
        for p in &self.pools {
            p.validate()?;
        }
        for (i, a) in self.pools.iter().enumerate() {
            for b in &self.pools[i + 1..] {
                if a.cidr.contains(&b.cidr) || b.cidr.contains(&a.cidr) {
                    return bad(format!(
                        "pools {} and {} overlap; keep only one of them",
                        a.cidr, b.cidr
                    ));
                }
            }
        }
        if self.max_blocks_per_node == Some(0) {
            return bad(
                "max_blocks_per_node is 0, so no address could ever be allocated; raise it or leave it unset".into(),
            );
        }
        Ok(())
    }
}
