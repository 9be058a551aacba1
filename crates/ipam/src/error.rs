//! [`IpamError`]: what can go wrong, with the fields a caller needs to act on
//! it and messages that say what to do next.

use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;
use weft_store::StoreError;

use crate::Family;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// The datastore failed; `StoreError::Unavailable` means "try again later"
    /// (weft-cni maps it to CNI error 11).
    #[error(transparent)]
    Store(#[from] StoreError),

    /// No free, non-quarantined address of `family` is left for this node in
    /// any pool of that family.
    #[error("{}", exhausted_message(*.family, .pool, .other_pools, *.quarantined, *.next_free_in_ms, *.node_blocks, *.max_blocks))]
    Exhausted {
        family: Family,
        /// The first configured pool of the family.
        pool: IpNet,
        /// The family's other configured pools, all tried as well.
        other_pools: Vec<IpNet>,
        /// Addresses of this node's blocks resting in quarantine right now.
        quarantined: u64,
        /// When the first of them becomes allocatable again, from now.
        next_free_in_ms: Option<u64>,
        /// Blocks of this family the node holds.
        node_blocks: usize,
        /// `Some` when the node may not claim another block because it holds
        /// `max_blocks_per_node` of them already.
        max_blocks: Option<u32>,
    },

    /// A requested (static) address cannot be given.
    #[error("address {addr} refused: {reason}")]
    RequestRefused { addr: IpAddr, reason: String },

    /// The request asks for a family no pool serves.
    #[error("no {family} pool is configured: add an {family} pool to the ipam config or do not ask for {family}")]
    NoPool { family: Family },

    /// The request itself does not make sense.
    #[error("invalid ipam request: {reason}")]
    InvalidRequest { reason: String },

    /// The configuration is unusable, or disagrees with the pools already in
    /// the store.
    #[error("invalid ipam config: {reason}")]
    InvalidConfig { reason: String },

    /// A record in the store cannot be decoded or does not add up. weft never
    /// overwrites such a key.
    #[error(
        "ipam record {key} is corrupt: {reason}; repair or delete the key, weft leaves it alone"
    )]
    Corrupt { key: String, reason: String },

    /// Other writers kept changing `key` between our read and our write.
    #[error("gave up writing {key} after {attempts} conflicting writes by others; retry")]
    Contended { key: String, attempts: u32 },
}

impl IpamError {
    /// Whether the same request may succeed if retried later without any
    /// change (CNI error 11, "try again later"): the store is unavailable,
    /// other writers kept winning, or the only free addresses are still in
    /// quarantine.
    pub fn is_temporary(&self) -> bool {
        match self {
            IpamError::Store(StoreError::Unavailable { .. }) | IpamError::Contended { .. } => true,
            IpamError::Exhausted {
                quarantined,
                next_free_in_ms,
                ..
            } => *quarantined > 0 && next_free_in_ms.is_some(),
            _ => false,
        }
    }
}

fn secs_ceil(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

fn exhausted_message(
    family: Family,
    pool: &IpNet,
    other_pools: &[IpNet],
    quarantined: u64,
    next_free_in_ms: Option<u64>,
    node_blocks: usize,
    max_blocks: Option<u32>,
) -> String {
    let mut m = format!("no free {family} address for this node in pool {pool}");
    for p in other_pools {
        let _ = write!(m, ", {p}");
    }
    if let Some(max) = max_blocks {
        let _ = write!(
            m,
            ": the node holds {node_blocks} {family} blocks, its limit (max_blocks_per_node {max}), and they are full"
        );
    } else {
        let _ = write!(
            m,
            ": the node's {node_blocks} {family} blocks are full and no unclaimed block is left"
        );
    }
    let retry = match next_free_in_ms {
        Some(ms) if quarantined > 0 => {
            let secs = secs_ceil(ms);
            let _ = write!(
                m,
                "; {quarantined} released addresses are in quarantine, the first frees in {secs}s"
            );
            format!(" or retry in {secs}s")
        }
        _ => {
            m.push_str("; no address is in quarantine");
            String::new()
        }
    };
    if max_blocks.is_some() && retry.is_empty() {
        m.push_str("; raise max_blocks_per_node or add a pool");
    } else if max_blocks.is_some() {
        let _ = write!(m, "; raise max_blocks_per_node, add a pool{retry}");
    } else {
        let _ = write!(m, "; add a pool{retry}");
    }
    m
}
