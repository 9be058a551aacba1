//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of
//! `M` slots per frontend, each holding a backend; a flow's hash picks the
//! slot. When a backend goes, mostly its own slots change hands, so flows
//! on other backends keep theirs, also on another node building the same
//! table.
//!
//! - `M` is prime (so every skip walks all slots); [`DEFAULT_M`] = 16381
//!   like cilium's default, 251 in tests. It should exceed the backends
//!   many times over (Maglev suggests 100x) for even shares.
//! - Each backend's preference list is `(offset + j * skip) mod M`, offset
//!   and skip from two independently seeded hashes of its [`backend_key`]
//!   (address, port, protocol), never node-local IDs, and in key order, so
//!   every node builds the same table. The list is computed as the table
//!   fills, not stored: a permutation buffer would cost backends x M words.
//! - Weights: each backend gets exactly its share of `M` (largest
//!   remainder, ties in key order) and claims slots at a pace proportional
//!   to its weight; with equal weights this is the paper's round robin.
//!   Weight 0 takes no slot (drained).
//!
//! [`backend_key`]: crate::hash::backend_key

use crate::error::LbError;
use crate::hash::hash64;

pub const DEFAULT_M: u32 = 16_381;
const SEED_OFFSET: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
const SEED_SKIP: u64 = 0x6d61_676c_6576_736b; // "maglevsk"

/// One backend as the table builder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaglevBackend {
    /// The node-independent key, [`crate::hash::backend_key`].
    pub key: Vec<u8>,
    pub weight: u32,
    /// What the table holds for it (the node's backend ID).
    pub id: u32,
}

pub fn is_prime(m: u32) -> bool {
    if m < 2 {
        return false;
    }
    let mut d = 2u32;
    while u64::from(d) * u64::from(d) <= u64::from(m) {
        if m.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// The table: `m` backend IDs, every slot filled. Empty when no backend has
/// a weight (the frontend then has nothing to forward to).
pub fn build_table(backends: &[MaglevBackend], m: u32) -> Result<Vec<u32>, LbError> {
    if !is_prime(m) || m < 3 {
        return Err(LbError::MaglevSize { m });
    }
    let mut bs: Vec<&MaglevBackend> = backends.iter().filter(|b| b.weight > 0).collect();
    bs.sort_by(|a, b| a.key.cmp(&b.key));
    if let Some(w) = bs.windows(2).find(|w| w[0].key == w[1].key) {
        return Err(LbError::MaglevDuplicate { id: w[1].id });
    }
    if bs.len() > m as usize {
        return Err(LbError::MaglevTooManyBackends {
            m,
            backends: bs.len(),
        });
    }
    if bs.is_empty() {
        return Ok(Vec::new());
    }
    let targets = shares(&bs, m);
    let mm = u64::from(m);
    let offset: Vec<u64> = bs
        .iter()
        .map(|b| hash64(SEED_OFFSET, &b.key) % mm)
        .collect();
    let skip: Vec<u64> = bs
        .iter()
        .map(|b| hash64(SEED_SKIP, &b.key) % (mm - 1) + 1)
        .collect();
    let max_w = u64::from(bs.iter().map(|b| b.weight).max().unwrap_or(1));

    let mut table: Vec<Option<u32>> = vec![None; m as usize];
    let mut next = vec![0u64; bs.len()];
    let mut claimed = vec![0u64; bs.len()];
    let mut filled = 0u64;
    let mut round = 0u64;
    'fill: loop {
        for i in 0..bs.len() {
            // A backend of weight w takes its k-th slot in round
            // ceil(k * max_w / w): the heaviest claim every round.
            if claimed[i] >= targets[i] || claimed[i] * max_w > round * u64::from(bs[i].weight) {
                continue;
            }
            loop {
                let c = ((offset[i] + next[i] * skip[i]) % mm) as usize;
                next[i] += 1;
                if table[c].is_none() {
                    table[c] = Some(bs[i].id);
                    claimed[i] += 1;
                    filled += 1;
                    break;
                }
            }
            if filled == mm {
                break 'fill;
            }
        }
        round += 1;
    }
    Ok(table.into_iter().map(|s| s.unwrap_or_default()).collect())
}

/// Each backend's exact slot count: `m * w / W` rounded down, the slots
/// left over going to the largest remainders (ties to the first in order).
fn shares(bs: &[&MaglevBackend], m: u32) -> Vec<u64> {
    let total: u64 = bs.iter().map(|b| u64::from(b.weight)).sum();
    let mm = u64::from(m);
    let mut out: Vec<u64> = bs
        .iter()
        .map(|b| mm * u64::from(b.weight) / total)
        .collect();
    let mut rest: Vec<(u64, usize)> = bs
        .iter()
        .enumerate()
        .map(|(i, b)| (mm * u64::from(b.weight) % total, i))
        .collect();
    rest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let left = mm - out.iter().sum::<u64>();
    for &(_, i) in rest.iter().take(left as usize) {
        out[i] += 1;
    }
    out
}

/// The backend a flow hash maps to, `None` for an empty table.
pub fn lookup(table: &[u32], flow_hash: u32) -> Option<u32> {
    if table.is_empty() {
        return None;
    }
    table.get(flow_hash as usize % table.len()).copied()
}
