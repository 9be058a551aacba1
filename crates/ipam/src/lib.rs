//! Block-based IP address management over the weft [`Store`] trait.
//!
//! The model is Calico's, simplified to one node for now: IP pools (IPv4 and
//! IPv6) are cut into fixed-size blocks (by default /26 and /122). A node
//! claims a block by creating its key (compare-and-swap create: whoever loses
//! the race picks another block) and hands out addresses from its own blocks.
//! Every address is attributed to a *handle* (container id + ifname, see
//! [`AllocationAttrs::handle`]) with the pod's namespace and name, so ADD is
//! idempotent, DEL releases by handle, and `weft ipam` can say who holds an
//! address.
//!
//! # Store layout
//!
//! All keys live under `/weft/ipam/v1/`; CIDRs in keys have `/` written as `-`
//! (`10.0.0.0/26` -> `10.0.0.0-26`, `fd00::/122` -> `fd00::-122`).
//!
//! - `/weft/ipam/v1/pools/<cidr>`: a pool, JSON `{"cidr":"10.0.0.0/16",
//!   "block_prefix":26}` ([`PoolConfig`]). [`Ipam::new`] creates missing pools;
//!   a stored pool with another block size, or overlapping a configured pool
//!   without being equal to it, is a configuration error.
//! - `/weft/ipam/v1/blocks/<block cidr>`: a claimed block, JSON
//!   [`BlockRecord`]: `{"cidr", "pool", "affinity": node or null,
//!   "allocations": {"<ordinal>": {"handle", "container_id", "ifname",
//!   "pod_namespace", "pod_name", "allocated_at_ms"}}, "quarantine":
//!   {"<ordinal>": <released until, ms since the epoch>}, "next": <next-fit
//!   cursor>}`. Ordinals are offsets from the block's first address.
//!
//! # Costs
//!
//! One store write per allocation or release, however many families and
//! blocks it touches: every block change goes into one atomic
//! [`Store::commit`], each op conditioned on the block's `mod_revision` (an
//! `update`) or on its absence (a `create`). A dual-stack allocation is thus
//! one durable commit, not two, and it can never leave half an allocation
//! behind. A lost condition names the block and carries its fresh record,
//! so a retry needs no extra read. Claiming a block is a `create` of the
//! block key *with the first allocation already in it*, in the same commit
//! as the other family's change, so an allocation that claims a block is
//! still one write (plus one `list` to find a free block, shared by the
//! families). An idempotent repeat of ADD and a release of an unknown handle
//! write nothing and read nothing. [`Ipam::gc`] writes one commit per block
//! it frees addresses in, so its transactions stay small. Because a block is
//! one value rewritten on every allocation, blocks hold at most 4096
//! addresses (Calico's limit too): a full block record stays under the
//! store's 1 MiB value limit.
//!
//! # Cache
//!
//! `Ipam` keeps this node's blocks (key -> record, `mod_revision`) in memory,
//! loaded at [`Ipam::new`], updated by every successful write and by the
//! current value every lost compare-and-swap returns, and reloaded by
//! [`Ipam::refresh`], [`Ipam::gc`] and [`Ipam::check`], and whenever a new
//! block must be claimed. A stale cache is never unsafe (every write is a
//! compare-and-swap on the revision the decision was made on); it can only
//! make idempotency and release miss a block another `Ipam` of the same node
//! wrote since — one `Ipam` per node is the intended deployment.
//!
//! Operations of one `Ipam` are serialized by a mutex held across the store
//! write, so threads of one agent never race each other's compare-and-swap.
//! That mutex is also where batching concurrent allocations into one write
//! per block (group commit) plugs in: requests queued behind it can be merged
//! into the next block update.
//!
//! # Addresses
//!
//! In the routed /32 (/128) model every address of a block is usable, so
//! blocks have no network or broadcast address of their own. The pool's very
//! first address, and the last address of an IPv4 pool, are never handed out
//! anyway, so no tool mistakes a pod for a network or broadcast address.
//!
//! Within a block the free address is found *next fit*: the search starts
//! after the last address handed out in that block and wraps. This pushes
//! the reuse of an address as far into the future as the block allows, well
//! beyond the quarantine when the block is not nearly full, which keeps
//! stale state elsewhere (conntrack, neighbour caches of other nodes, logs)
//! from meeting a new owner. Blocks are filled in order (lowest pool, lowest
//! block first) so the node's footprint stays compact.
//!
//! A released address rests in quarantine until `now + quarantine` and is not
//! handed out before; expired quarantine entries are dropped whenever the
//! block is written anyway, never with a write of their own. One exception:
//! the handle that released it may ask for it back (a static request) while
//! this `Ipam` remembers that release (in memory; `podman network reload`
//! is a DEL and an ADD of the same container asking for its old addresses).
//!
//! Empty blocks stay claimed by the node; giving them back after a grace
//! period comes with multi-node support, as does borrowing addresses from
//! other nodes' blocks when affinity is not strict.

mod clock;
mod config;
mod error;
mod record;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use weft_store::{Conflict, KeyValue, Listing, Revision, Store, StoreError, TxnConflict, TxnOp};

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    IpamConfig, PoolConfig, DEFAULT_GC_GRACE, DEFAULT_QUARANTINE, DEFAULT_V4_BLOCK_PREFIX,
    DEFAULT_V6_BLOCK_PREFIX,
};
pub use error::IpamError;
pub use record::{
    block_key, escape_cidr, parse_block_key, pool_key, reserved, Allocation, BlockRecord,
    BLOCKS_PREFIX, IPAM_PREFIX, POOLS_PREFIX,
};

use record::{block_index, block_of, nth_block, pool_capacity, to_u128};

/// How many lost compare-and-swaps one operation tolerates before giving up.
const MAX_ATTEMPTS: u32 = 1000;

/// IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn of_net(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// The handle of an attachment: `<container_id>/<ifname>`. Neither a CNI
/// container id nor a Linux interface name can contain `/`, so the handle is
/// unambiguous.
pub fn handle(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}

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
}

impl AllocationInfo {
    fn new(rec: &BlockRecord, ordinal: u32, a: &Allocation) -> AllocationInfo {
        AllocationInfo {
            address: rec.addr(ordinal),
            block: rec.cidr,
            handle: a.handle.clone(),
            pod_namespace: a.pod_namespace.clone(),
            pod_name: a.pod_name.clone(),
            container_id: a.container_id.clone(),
            ifname: a.ifname.clone(),
            allocated_at: a.allocated_at_ms / 1000,
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

#[derive(Debug, Clone)]
struct Cached {
    rec: BlockRecord,
    rev: Revision,
}

#[derive(Debug, Default)]
struct State {
    /// This node's blocks, by key.
    blocks: BTreeMap<String, Cached>,
    /// Handle -> the addresses it released into quarantine and until when,
    /// while that quarantine lasts (in memory only). Lets the same handle
    /// take them back: `podman network reload` is a DEL followed at once by
    /// an ADD of the same container asking for its old addresses.
    released: HashMap<String, Vec<(IpAddr, u64)>>,
}

impl State {
    /// Whether `handle` itself put `addr` in the quarantine that lasts
    /// until `until` (nobody held the address since).
    fn released_by(&self, handle: &str, addr: IpAddr, until: u64) -> bool {
        self.released
            .get(handle)
            .is_some_and(|r| r.contains(&(addr, until)))
    }
}

/// One block write an operation needs: the block's new record and the
/// revision it was computed from (0: the key does not exist, create it).
struct Change {
    key: String,
    rec: BlockRecord,
    rev: Revision,
    value: Vec<u8>,
    /// The write claims a block that was free (worth a log line).
    claims: bool,
}

impl Change {
    fn new(
        key: String,
        rec: BlockRecord,
        rev: Revision,
        claims: bool,
    ) -> Result<Change, IpamError> {
        let value = rec.encode(&key)?;
        Ok(Change {
            key,
            rec,
            rev,
            value,
            claims,
        })
    }

    fn op(&self) -> TxnOp<'_> {
        if self.rev == 0 {
            TxnOp::Create {
                key: &self.key,
                value: &self.value,
                lease: None,
            }
        } else {
            TxnOp::Update {
                key: &self.key,
                value: &self.value,
                expected: self.rev,
            }
        }
    }
}

/// How one family of an allocation is served.
enum Plan {
    /// This address, by this block write.
    Ready(Allocated, Box<Change>),
    /// The cache learned about blocks of this node: plan again.
    Retry,
}

/// Block-based IPAM of one node. Cheap to share (`Arc<Ipam>`); every method
/// may be called from many threads.
pub struct Ipam {
    store: Arc<dyn Store>,
    cfg: IpamConfig,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl fmt::Debug for Ipam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ipam")
            .field("backend", &self.store.backend())
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Ipam {
    /// Validates `cfg`, makes sure the store holds the same pools (creating
    /// missing ones) and loads this node's blocks.
    pub fn new(
        store: Arc<dyn Store>,
        cfg: IpamConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Ipam, IpamError> {
        cfg.validate()?;
        let ipam = Ipam {
            store,
            cfg,
            clock,
            state: Mutex::new(State::default()),
        };
        ipam.ensure_pools()?;
        ipam.refresh()?;
        Ok(ipam)
    }

    /// This node's name (the affinity of its blocks).
    pub fn node(&self) -> &str {
        &self.cfg.node
    }

    pub fn config(&self) -> &IpamConfig {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The cache is only changed after successful writes, and every write
        // is a compare-and-swap, so a panic elsewhere cannot make it unsafe.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ensure_pools(&self) -> Result<(), IpamError> {
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

    /// Reloads this node's blocks from the store.
    pub fn refresh(&self) -> Result<(), IpamError> {
        let mut st = self.lock();
        self.refresh_locked(&mut st).map(drop)
    }

    fn refresh_locked(&self, st: &mut State) -> Result<Listing, IpamError> {
        let listing = self.store.list(BLOCKS_PREFIX)?;
        self.load(st, &listing);
        Ok(listing)
    }

    /// Replaces the cache with this node's blocks of `listing`.
    fn load(&self, st: &mut State, listing: &Listing) {
        let mut blocks = BTreeMap::new();
        for kv in &listing.kvs {
            match BlockRecord::decode(kv) {
                Ok(rec) if self.is_mine(&rec) => {
                    blocks.insert(
                        kv.key.clone(),
                        Cached {
                            rec,
                            rev: kv.mod_revision,
                        },
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "skipping an ipam block"),
            }
        }
        st.blocks = blocks;
    }

    fn is_mine(&self, rec: &BlockRecord) -> bool {
        rec.affinity.as_deref() == Some(self.cfg.node.as_str())
    }

    /// The configured pool a block belongs to, if it fits the pool's geometry.
    fn pool_of_block(&self, rec: &BlockRecord) -> Option<usize> {
        self.cfg.pools.iter().position(|p| {
            p.cidr == rec.pool
                && p.block_prefix == rec.cidr.prefix_len()
                && p.cidr.contains(&rec.cidr)
        })
    }

    fn pools_of(&self, family: Family) -> Vec<&PoolConfig> {
        self.cfg
            .pools
            .iter()
            .filter(|p| p.family() == family)
            .collect()
    }

    /// Stores the outcome of a lost compare-and-swap in the cache.
    fn absorb(&self, st: &mut State, key: &str, current: Option<KeyValue>) {
        st.blocks.remove(key);
        if let Some(kv) = current {
            match BlockRecord::decode(&kv) {
                Ok(rec) if self.is_mine(&rec) => {
                    st.blocks.insert(
                        key.to_string(),
                        Cached {
                            rec,
                            rev: kv.mod_revision,
                        },
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "ipam block became undecodable"),
            }
        }
    }

    fn held(&self, st: &State, handle: &str) -> Vec<Allocated> {
        let mut out = Vec::new();
        for c in st.blocks.values() {
            for (&o, a) in &c.rec.allocations {
                if a.handle == handle {
                    out.push(Allocated {
                        addr: c.rec.addr(o),
                        pool: c.rec.pool,
                        block: c.rec.cidr,
                    });
                }
            }
        }
        out.sort();
        out
    }

    /// The addresses `handle` holds in this node's blocks (from the cache).
    pub fn find(&self, handle: &str) -> Vec<IpAddr> {
        let st = self.lock();
        self.held(&st, handle).into_iter().map(|a| a.addr).collect()
    }

    /// Allocates what `req` asks for to `attrs.handle()`, IPv4 first.
    ///
    /// Idempotent: a family the handle already holds an address of is
    /// answered with that address, without a write. Every block change the
    /// allocation needs (an address in a block of the node, or a block claim
    /// with the address already in it) goes into one atomic store commit:
    /// when any family cannot be served, nothing is allocated and the error
    /// is returned; a lost condition retries the whole allocation against
    /// the fresh record the conflict carries.
    pub fn allocate(
        &self,
        attrs: &AllocationAttrs,
        req: &AllocRequest,
    ) -> Result<Vec<Allocated>, IpamError> {
        if attrs.container_id.is_empty() || attrs.ifname.is_empty() {
            return Err(IpamError::InvalidRequest {
                reason: "the container id and the interface name must not be empty".into(),
            });
        }
        let mut static_v4 = None;
        let mut static_v6 = None;
        for &a in &req.requested {
            let slot = match Family::of(&a) {
                Family::V4 => &mut static_v4,
                Family::V6 => &mut static_v6,
            };
            if let Some(prev) = slot.replace(a) {
                return Err(IpamError::InvalidRequest {
                    reason: format!(
                        "{prev} and {a} are both {}; ask for at most one address per family",
                        Family::of(&a)
                    ),
                });
            }
        }
        let wanted = [
            (Family::V4, req.ipv4 || static_v4.is_some(), static_v4),
            (Family::V6, req.ipv6 || static_v6.is_some(), static_v6),
        ];
        if !wanted.iter().any(|w| w.1) {
            return Err(IpamError::InvalidRequest {
                reason: "nothing to allocate: ask for IPv4, IPv6 or a static address".into(),
            });
        }
        let handle = attrs.handle();
        let mut st = self.lock();
        let now = self.clock.now_ms();
        let alloc = Allocation {
            handle: handle.clone(),
            container_id: attrs.container_id.clone(),
            ifname: attrs.ifname.clone(),
            pod_namespace: attrs.pod_namespace.clone(),
            pod_name: attrs.pod_name.clone(),
            allocated_at_ms: now,
        };
        let mut attempts = 0;
        // The block listing the claims of one attempt share (a lost commit
        // makes it stale).
        let mut listing = None;
        loop {
            let held = self.held(&st, &handle);
            let mut out = Vec::new();
            let mut changes = Vec::new();
            let mut retry = false;
            for (family, want, requested) in wanted {
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
                    Some(addr) => self.plan_static(&st, &alloc, addr, now)?,
                    None => self.plan_dynamic(&mut st, &alloc, family, now, &mut listing)?,
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
            let key = if retry {
                BLOCKS_PREFIX.to_string()
            } else if changes.is_empty() {
                return Ok(out);
            } else {
                match self.write(&mut st, changes)? {
                    Ok(()) => return Ok(out),
                    Err(key) => {
                        listing = None;
                        key
                    }
                }
            };
            attempts += 1;
            if attempts >= MAX_ATTEMPTS {
                return Err(IpamError::Contended { key, attempts });
            }
        }
    }

    /// Writes `changes` in one atomic commit. On success the cache takes the
    /// new records; when a condition failed, the cache takes the current
    /// state of that key, and `Ok(Err(key))` names it.
    fn write(&self, st: &mut State, changes: Vec<Change>) -> Result<Result<(), String>, IpamError> {
        let ops: Vec<TxnOp<'_>> = changes.iter().map(Change::op).collect();
        let res = self.store.commit(&ops)?;
        drop(ops);
        match res {
            Ok(rev) => {
                for c in changes {
                    if c.claims {
                        tracing::info!(block = %c.rec.cidr, node = %self.cfg.node, "ipam block claimed");
                    }
                    st.blocks.insert(c.key, Cached { rec: c.rec, rev });
                }
                Ok(Ok(()))
            }
            Err(TxnConflict { index, current }) => {
                let Some(key) = changes.get(index).map(|c| c.key.clone()) else {
                    return Err(IpamError::Store(StoreError::Invalid {
                        reason: format!(
                            "the store reported a conflict on op {index} of a transaction of {} ops",
                            changes.len()
                        ),
                    }));
                };
                self.absorb(st, &key, current);
                Ok(Err(key))
            }
        }
    }

    /// Plans a dynamic address of `family`: in a block of this node when one
    /// has room, else by claiming a block.
    fn plan_dynamic(
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
            return self.plan_claim(st, alloc, family, now, listing);
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

    /// The free ordinal to use in this node's blocks: blocks in pool order
    /// and address order, next fit inside the block.
    fn pick_dynamic(&self, st: &State, family: Family, now: u64) -> Option<(String, u32)> {
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

    fn node_blocks(&self, st: &State, family: Family) -> usize {
        st.blocks
            .values()
            .filter(|c| c.rec.family() == family && self.pool_of_block(&c.rec).is_some())
            .count()
    }

    fn at_block_limit(&self, st: &State, family: Family) -> bool {
        self.cfg
            .max_blocks_per_node
            .is_some_and(|max| self.node_blocks(st, family) >= max as usize)
    }

    /// Plans the claim of the lowest free block of the family's pools, with
    /// `alloc` in it: a create of a new block key, or an update of a block
    /// nobody holds. Lists the blocks once per `listing`.
    fn plan_claim(
        &self,
        st: &mut State,
        alloc: &Allocation,
        family: Family,
        now: u64,
        listing: &mut Option<Listing>,
    ) -> Result<Plan, IpamError> {
        if self.at_block_limit(st, family) {
            return Err(self.exhausted(st, family, now, true));
        }
        if listing.is_none() {
            *listing = Some(self.store.list(BLOCKS_PREFIX)?);
        }
        let kvs = listing.as_ref().map_or(&[][..], |l| &l.kvs[..]);
        let mut learned = false;
        let mut present = HashSet::new();
        // Per pool: indexes of blocks that exist, and those among them that
        // have no affinity (claimable by update).
        let mut taken: HashMap<IpNet, BTreeSet<u128>> = HashMap::new();
        let mut orphans: HashMap<String, (BlockRecord, Revision)> = HashMap::new();
        for kv in kvs {
            present.insert(kv.key.clone());
            let Some(cidr) = parse_block_key(&kv.key) else {
                continue;
            };
            if let Some(pool) = self.cfg.pools.iter().find(|p| p.cidr.contains(&cidr)) {
                // A key of another block size (left by an older config) still
                // covers its addresses: every block it overlaps is taken.
                let first = block_index(pool, &cidr);
                let span = 1u128 << pool.block_prefix.saturating_sub(cidr.prefix_len());
                taken
                    .entry(pool.cidr)
                    .or_default()
                    .extend(first..first + span.min(1 << 16));
            }
            match BlockRecord::decode(kv) {
                Ok(rec) if self.is_mine(&rec) => {
                    let newer = st
                        .blocks
                        .get(&kv.key)
                        .is_none_or(|c| c.rev < kv.mod_revision);
                    if newer {
                        learned = true;
                        st.blocks.insert(
                            kv.key.clone(),
                            Cached {
                                rec,
                                rev: kv.mod_revision,
                            },
                        );
                    }
                }
                Ok(rec) if rec.affinity.is_none() => {
                    orphans.insert(kv.key.clone(), (rec, kv.mod_revision));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "ipam block skipped while claiming"),
            }
        }
        st.blocks.retain(|k, _| present.contains(k));
        if learned {
            return Ok(Plan::Retry);
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

    fn exhausted(&self, st: &State, family: Family, now: u64, limit: bool) -> IpamError {
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

    /// Plans the static address `addr`, in a block of this node or in a
    /// block it claims by the same write.
    fn plan_static(
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

    /// Removes the allocations of the cached blocks `keys` that `pick`
    /// selects, all blocks in one atomic commit (retried on conflict against
    /// the fresh record), putting them in quarantine until
    /// `quarantine_until` when given.
    fn free_in_blocks(
        &self,
        st: &mut State,
        keys: &[String],
        quarantine_until: Option<u64>,
        pick: impl Fn(&BlockRecord, u32, &Allocation) -> bool,
    ) -> Result<Vec<AllocationInfo>, IpamError> {
        let now = self.clock.now_ms();
        let mut attempts = 0;
        loop {
            let mut changes = Vec::new();
            let mut freed = Vec::new();
            for key in keys {
                let Some(cached) = st.blocks.get(key) else {
                    continue;
                };
                let mut rec = cached.rec.clone();
                let ordinals: Vec<u32> = rec
                    .allocations
                    .iter()
                    .filter(|(&o, a)| pick(&rec, o, a))
                    .map(|(&o, _)| o)
                    .collect();
                if ordinals.is_empty() {
                    continue;
                }
                rec.prune(now);
                for o in ordinals {
                    if let Some(a) = rec.allocations.remove(&o) {
                        freed.push(AllocationInfo::new(&rec, o, &a));
                    }
                    if let Some(until) = quarantine_until {
                        rec.quarantine.insert(o, until);
                    }
                }
                changes.push(Change::new(key.clone(), rec, cached.rev, false)?);
            }
            if changes.is_empty() {
                return Ok(Vec::new());
            }
            match self.write(st, changes)? {
                Ok(()) => return Ok(freed),
                Err(key) => {
                    attempts += 1;
                    if attempts >= MAX_ATTEMPTS {
                        return Err(IpamError::Contended { key, attempts });
                    }
                }
            }
        }
    }

    /// Releases every address `handle` holds in this node's blocks; each
    /// rests in quarantine until now + `quarantine`. Releasing a handle that
    /// holds nothing is a no-op (no store access). Returns what was released.
    pub fn release(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        let until = self.clock.now_ms().saturating_add(ms(self.cfg.quarantine));
        self.release_handle(handle, Some(until))
    }

    /// Like [`Ipam::release`] but without quarantine: for an ADD that failed
    /// after [`Ipam::allocate`] and before the addresses reached a pod. Only
    /// call it when this ADD allocated them (not when `allocate` merely
    /// returned what an earlier, successful ADD holds), or a live pod's
    /// address could be handed out again at once.
    pub fn rollback(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        self.release_handle(handle, None)
    }

    fn release_handle(&self, handle: &str, until: Option<u64>) -> Result<Vec<IpAddr>, IpamError> {
        let mut st = self.lock();
        let keys: Vec<String> = st
            .blocks
            .iter()
            .filter(|(_, c)| c.rec.allocations.values().any(|a| a.handle == handle))
            .map(|(k, _)| k.clone())
            .collect();
        let freed = self.free_in_blocks(&mut st, &keys, until, |_, _, a| a.handle == handle)?;
        let mut out: Vec<IpAddr> = freed.into_iter().map(|f| f.address).collect();
        out.sort();
        if let Some(until) = until.filter(|_| !out.is_empty()) {
            let now = self.clock.now_ms();
            st.released.retain(|_, r| r.iter().any(|&(_, u)| u > now));
            st.released.insert(
                handle.to_string(),
                out.iter().map(|&a| (a, until)).collect(),
            );
        }
        Ok(out)
    }

    /// Frees (with quarantine) the allocations of this node's blocks whose
    /// handle is not in `live` and that are at least `gc_grace` old: an ADD
    /// in flight has allocated but not yet recorded its endpoint, the grace
    /// protects it. Never frees a live handle. Reloads the cache first.
    pub fn gc(&self, live: &HashSet<String>) -> Result<Vec<AllocationInfo>, IpamError> {
        let mut st = self.lock();
        self.refresh_locked(&mut st)?;
        let now = self.clock.now_ms();
        let grace = ms(self.cfg.gc_grace);
        let until = now.saturating_add(ms(self.cfg.quarantine));
        let keys: Vec<String> = st.blocks.keys().cloned().collect();
        let mut out = Vec::new();
        // One commit per block: a gc may touch every block of the node, and
        // one transaction of them all could outgrow a backend's request limit.
        for key in keys {
            let freed = self.free_in_blocks(&mut st, &[key], Some(until), |_, _, a| {
                !live.contains(&a.handle) && now.saturating_sub(a.allocated_at_ms) >= grace
            })?;
            for f in &freed {
                tracing::info!(address = %f.address, handle = %f.handle, "ipam gc freed a leaked address");
            }
            out.extend(freed);
        }
        Ok(out)
    }

    /// Compares the store with the node's `live` handles without changing
    /// anything: allocations of this node's blocks not live (any age) are
    /// leaks; inconsistencies anywhere in the IPAM keys are problems.
    pub fn check(&self, live: &HashSet<String>) -> Result<CheckFindings, IpamError> {
        let mut st = self.lock();
        let listing = self.refresh_locked(&mut st)?;
        drop(st);
        let mut findings = CheckFindings::default();
        let mut by_handle: BTreeMap<(String, Family), Vec<IpAddr>> = BTreeMap::new();
        for kv in &listing.kvs {
            let rec = match BlockRecord::decode(kv) {
                Ok(rec) => rec,
                Err(e) => {
                    findings.problems.push(e.to_string());
                    continue;
                }
            };
            match self.cfg.pools.iter().find(|p| p.cidr.contains(&rec.cidr)) {
                None => findings.problems.push(format!(
                    "block {} is not inside any configured pool",
                    rec.cidr
                )),
                Some(p) if p.block_prefix != rec.cidr.prefix_len() || p.cidr != rec.pool => {
                    findings.problems.push(format!(
                        "block {} does not match pool {} (/{} blocks)",
                        rec.cidr, p.cidr, p.block_prefix
                    ))
                }
                Some(_) => {}
            }
            let mine = self.is_mine(&rec);
            for (&o, a) in &rec.allocations {
                if o >= rec.size() {
                    findings.problems.push(format!(
                        "block {}: allocation of handle {} at ordinal {o} lies outside the block",
                        rec.cidr, a.handle
                    ));
                    continue;
                }
                let addr = rec.addr(o);
                if !rec.usable(o) {
                    findings.problems.push(format!(
                        "block {}: {addr} is allocated to handle {} but is a reserved address of pool {}",
                        rec.cidr, a.handle, rec.pool
                    ));
                }
                if rec.quarantine.contains_key(&o) {
                    findings.problems.push(format!(
                        "block {}: {addr} is both allocated (handle {}) and quarantined",
                        rec.cidr, a.handle
                    ));
                }
                by_handle
                    .entry((a.handle.clone(), Family::of(&addr)))
                    .or_default()
                    .push(addr);
                if mine && !live.contains(&a.handle) {
                    findings.leaked.push(AllocationInfo::new(&rec, o, a));
                }
            }
        }
        for ((handle, family), addrs) in by_handle {
            if addrs.len() > 1 {
                let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                findings.problems.push(format!(
                    "handle {handle} holds {} {family} addresses: {}",
                    addrs.len(),
                    list.join(", ")
                ));
            }
        }
        Ok(findings)
    }

    /// Pools, blocks and allocations of all nodes, from one fresh listing.
    /// An undecodable block is an error (`Corrupt`), not silently skipped.
    pub fn snapshot(&self) -> Result<IpamSnapshot, IpamError> {
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

/// The lowest block index of `pool` that is free or an unclaimed block with
/// room, skipping `taken`.
fn first_candidate(
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

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn decode_pool(kv: &KeyValue) -> Result<PoolConfig, IpamError> {
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

fn check_same_pool(configured: &PoolConfig, stored: &PoolConfig) -> Result<(), IpamError> {
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
