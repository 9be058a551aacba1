//! Block-based IP address management over the weft [`Store`] trait.
//!
//! The model is Calico's, cluster-wide: many nodes (one `Ipam` each) share
//! one store. IP pools (IPv4 and IPv6) are cut into fixed-size blocks (by
//! default /26 and /122). A node claims a block by creating its key
//! (compare-and-swap create: whoever loses the race picks another block) and
//! hands out addresses from its own blocks; when they are full and it cannot
//! claim another (none left, or `max_blocks_per_node` reached), it borrows a
//! free address from another node's block unless `strict_affinity` is set.
//! Every address is attributed to a *handle* (container id + ifname, see
//! [`AllocationAttrs::handle`]) with the pod's namespace and name, so ADD is
//! idempotent, DEL releases by handle, and `weft ipam` can say who holds an
//! address.
//!
//! # Store layout
//!
//! All keys but the route summaries (last below) live under
//! `/weft/ipam/v1/`; CIDRs in keys have `/` written as `-`
//! (`10.0.0.0/26` -> `10.0.0.0-26`, `fd00::/122` -> `fd00::-122`).
//!
//! - `/weft/ipam/v1/pools/<cidr>`: a pool, JSON `{"cidr":"10.0.0.0/16",
//!   "block_prefix":26}` ([`PoolConfig`]). [`Ipam::new`] creates missing pools;
//!   a stored pool with another block size, or overlapping a configured pool
//!   without being equal to it, is a configuration error.
//! - `/weft/ipam/v1/blocks/<block cidr>`: a claimed block, JSON
//!   [`BlockRecord`]: `{"cidr", "pool", "affinity": node or null,
//!   "allocations": {"<ordinal>": {"h"?, "c"?, "i"?, "ns"?, "n"?, "t"?,
//!   "node"?}}, "quarantine": {"<ordinal>": <released until, ms since the
//!   epoch>}, "next": <next-fit cursor>, "emptied_at_ms"?}`. Ordinals are
//!   offsets from the block's first address. An allocation ([`Allocation`])
//!   is written compactly, since every write rewrites the whole block: `c`
//!   the container id, `i` the interface name, `ns` and `n` the pod's
//!   namespace and name, `t` when it was allocated (ms since the epoch), each
//!   left out when empty (zero), and `i` also when it is `eth0` (an empty
//!   interface name is written `"i":""`); `h` the handle, only when it is not
//!   `<c>/<i>` (otherwise derived from them). Records written by earlier
//!   versions, with the long names `handle`, `container_id`, `ifname`,
//!   `pod_namespace`, `pod_name` and `allocated_at_ms`, still decode; they are
//!   rewritten compactly by the next change of their block. `node` (long
//!   name kept: the agent's route reconciler reads it from the raw record) is
//!   present only on an address *borrowed* by another node than the block's
//!   (that node holds it: its release, gc and check cover it, the block's
//!   node leaves it alone). `emptied_at_ms` is when the last allocation left
//!   the block (the grace of [`Ipam::release_empty_blocks`] counts from it).
//!   Both fields are optional, so records written before them decode
//!   unchanged, and are omitted when absent. The top-level field names are
//!   read by the agent too (`cidr`, `affinity`, `allocations`): keep them.
//! - `/weft/cluster/v1/routes/<block cidr>`: the block's [`RouteSummary`],
//!   JSON `{"cidr", "affinity", "borrowed"?: {"<ordinal>": node}}`: all the
//!   route reconciler of every node needs, so it watches these small keys
//!   instead of the block records (~10 KB, rewritten on every allocation,
//!   which would fan out to every node). Written by the same commit as its
//!   block: an unconditional put when the block is created or its summary
//!   changes (claim, borrow, release of a borrowed address, loss of
//!   affinity), an unconditional delete when the block is deleted. Blocks
//!   written before summaries existed have none until their routing next
//!   changes; the reconciler lists the blocks too.
//!
//! # Costs
//!
//! One store write per allocation or release, however many families and
//! blocks it touches: every block change goes into one atomic
//! [`Store::commit`], each op conditioned on the block's `mod_revision` (an
//! `update`) or on its absence (a `create`); a route summary that changes
//! rides along in the same commit (one more op, not one more write). A
//! dual-stack allocation is thus one durable commit, not two, and it can
//! never leave half an allocation behind. A lost condition names the block and carries its fresh record,
//! so a retry needs no extra read. Claiming a block is a `create` of the
//! block key *with the first allocation already in it*, in the same commit
//! as the other family's change, so an allocation that claims a block is
//! still one write (plus one `list` to find a free block, shared by the
//! families). An idempotent repeat of ADD and a release of an unknown handle
//! write nothing and read nothing. [`Ipam::gc`] writes one commit per block
//! it frees addresses in, so its transactions stay small; so do
//! [`Ipam::release_empty_blocks`] (one conditional delete per block) and
//! [`Ipam::collect_node`]. Borrowing is one commit too (an update of the
//! other node's block on its revision), after the listing that found no
//! unclaimed block.
//!
//! # Group commit
//!
//! With `IpamConfig::batching` (the default), concurrent [`Ipam::allocate`]
//! calls of one `Ipam` queue up; the first becomes the leader, waits at most
//! `batch_window` for callers that have entered `allocate` but not queued
//! yet (never when it is alone), takes the queue, plans every allocation
//! against the cache (each seeing the ones before it), writes all their
//! block changes in ONE commit, retries the whole batch on a lost condition,
//! hands each caller its result (or its own error) and passes the lead to
//! the next queued caller. A burst of 16 threads costs well under 0.1 writes
//! per allocation instead of one (see the tests). Because a block is
//! one value rewritten on every allocation, blocks hold at most 4096
//! addresses (Calico's limit too): a full block record stays under the
//! store's 1 MiB value limit.
//!
//! # Cache
//!
//! `Ipam` keeps the blocks (key -> record, `mod_revision`) in memory, its
//! own and, apart, the other nodes' (where it borrows), loaded at
//! [`Ipam::new`], updated by every successful write and by the current value
//! every lost compare-and-swap returns, and reloaded by [`Ipam::refresh`],
//! [`Ipam::gc`], [`Ipam::check`], [`Ipam::release_empty_blocks`] and
//! whenever a new block must be claimed. A small index (handle -> other
//! nodes' blocks where it borrowed) lets release find borrowed addresses
//! without a listing; it is rebuilt from every listing, and a release of a
//! handle it does not know falls back to one listing when borrowing is on. A stale cache is never unsafe (every write is a
//! compare-and-swap on the revision the decision was made on); it can only
//! make idempotency and release miss a block another `Ipam` of the same node
//! wrote since — one `Ipam` per node is the intended deployment.
//!
//! Operations of one `Ipam` are serialized by a mutex held across the store
//! write, so threads of one agent never race each other's compare-and-swap;
//! concurrent allocations are merged into one write (group commit, above).
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
//! A block of this node that has been empty (no allocation, no quarantine in
//! force) for `block_release_grace` is given back by
//! [`Ipam::release_empty_blocks`], which the agent runs periodically. What a
//! node that left the cluster held is freed by [`Ipam::collect_node`] (or
//! [`Ipam::collect_gone_nodes`]) once the caller's node registry has missed
//! it for a grace: its addresses go to quarantine, its blocks lose their
//! affinity (and go, when empty).

mod clock;
mod config;
mod error;
mod record;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
    block_key, escape_cidr, parse_block_key, pool_key, reserved, route_key, Allocation,
    BlockRecord, RouteSummary, BLOCKS_PREFIX, IPAM_PREFIX, POOLS_PREFIX, ROUTES_PREFIX,
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
    /// The node holding the address when it is not the block's owner (it
    /// borrowed the address).
    pub borrowed_by: Option<String>,
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

#[derive(Debug, Clone)]
struct Cached {
    rec: BlockRecord,
    rev: Revision,
}

#[derive(Debug, Default)]
struct State {
    /// This node's blocks, by key.
    blocks: BTreeMap<String, Cached>,
    /// Other nodes' blocks (and unclaimed ones) as last seen: where this node
    /// borrows from and where its borrowed addresses live.
    foreign: BTreeMap<String, Cached>,
    /// Handle -> keys of other nodes' blocks where it (may) hold a borrowed
    /// address of this node. Rebuilt from every full listing; an entry may
    /// be stale (harmless: the block is checked).
    borrowed: HashMap<String, BTreeSet<String>>,
    /// Keys changed in memory by the batch being planned, with what the
    /// caches held before (restored when the commit does not happen).
    staged: HashMap<String, (Option<Cached>, Option<Cached>)>,
    /// Node -> when this `Ipam` first saw it gone (for `collect_node`).
    gone_since: HashMap<String, u64>,
    /// Block key -> when this `Ipam` first saw it empty, for blocks without
    /// an `emptied_at_ms` of their own.
    empty_seen: HashMap<String, u64>,
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

    /// A cached block of this node or of another.
    fn cached(&self, key: &str) -> Option<&Cached> {
        self.blocks.get(key).or_else(|| self.foreign.get(key))
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
    /// Delete the block (if still at `rev`) instead of writing `rec`.
    delete: bool,
}

impl Change {
    fn new(
        key: String,
        rec: BlockRecord,
        rev: Revision,
        claims: bool,
    ) -> Result<Change, IpamError> {
        let mut rec = rec;
        if !rec.allocations.is_empty() {
            rec.emptied_at_ms = None;
        }
        let value = rec.encode(&key)?;
        Ok(Change {
            key,
            rec,
            rev,
            value,
            claims,
            delete: false,
        })
    }

    fn delete(key: String, rec: BlockRecord, rev: Revision) -> Change {
        Change {
            key,
            rec,
            rev,
            value: Vec::new(),
            claims: false,
            delete: true,
        }
    }

    fn op(&self) -> TxnOp<'_> {
        if self.delete {
            TxnOp::Delete {
                key: &self.key,
                expected: Some(self.rev),
            }
        } else if self.rev == 0 {
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

/// The route summary write a block change needs (key, new value or `None`
/// to delete), or `None` when routing sees no change: the usual allocation
/// or release in a node's own block. The cache still holds the record the
/// change was computed from (staged batches are unstaged before the write);
/// only a cached record at exactly the change's revision is trusted to be
/// what the summary in the store describes.
fn route_change(st: &State, c: &Change) -> Option<(String, Option<Vec<u8>>)> {
    let key = route_key(&c.rec.cidr);
    if c.delete {
        return Some((key, None));
    }
    let unchanged = c.rev != 0
        && st
            .cached(&c.key)
            .is_some_and(|old| old.rev == c.rev && old.rec.same_routes(&c.rec));
    (!unchanged).then(|| (key, Some(c.rec.route_summary().encode())))
}

/// Most allocations one batch plans and commits together.
const MAX_BATCH: usize = 256;

/// A validated allocation request, waiting in a batch.
struct Request {
    attrs: AllocationAttrs,
    handle: String,
    /// Per family: wanted, and the static address asked for.
    wanted: [(Family, bool, Option<IpAddr>); 2],
}

/// Checks an allocation request and puts it in the shape a batch plans.
fn prepare(attrs: &AllocationAttrs, req: &AllocRequest) -> Result<Request, IpamError> {
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
    Ok(Request {
        attrs: attrs.clone(),
        handle: attrs.handle(),
        wanted,
    })
}

/// Where a batched caller's result arrives.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    cv: Condvar,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
enum SlotState {
    #[default]
    Waiting,
    /// The caller is the batch leader now.
    Lead,
    Done(Result<Vec<Allocated>, IpamError>),
}

/// The allocations waiting for the next batch.
#[derive(Default)]
struct Queue {
    pending: Vec<(Request, Arc<Slot>)>,
    /// A caller is leading (or about to lead) a batch.
    leader: bool,
}

/// One error of a batch, for each of its callers.
fn dup_error(e: &IpamError) -> IpamError {
    match e {
        IpamError::Store(s) => IpamError::Store(match s {
            StoreError::Unavailable { reason } => StoreError::Unavailable {
                reason: reason.clone(),
            },
            StoreError::LeaseNotFound { lease } => StoreError::LeaseNotFound { lease: *lease },
            StoreError::Invalid { reason } => StoreError::Invalid {
                reason: reason.clone(),
            },
            StoreError::Corrupt { path, reason } => StoreError::Corrupt {
                path: path.clone(),
                reason: reason.clone(),
            },
            StoreError::Io { path, source } => StoreError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
        }),
        IpamError::Corrupt { key, reason } => IpamError::Corrupt {
            key: key.clone(),
            reason: reason.clone(),
        },
        IpamError::Contended { key, attempts } => IpamError::Contended {
            key: key.clone(),
            attempts: *attempts,
        },
        other => IpamError::InvalidRequest {
            reason: other.to_string(),
        },
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
    queue: Mutex<Queue>,
    queue_cv: Condvar,
    /// Threads inside a batched `allocate` whose result is not delivered yet.
    callers: AtomicUsize,
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
            queue: Mutex::new(Queue::default()),
            queue_cv: Condvar::new(),
            callers: AtomicUsize::new(0),
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

    /// Reloads this node's blocks (and what it knows of other nodes'
    /// blocks) from the store.
    pub fn refresh(&self) -> Result<(), IpamError> {
        let mut st = self.lock();
        self.refresh_locked(&mut st).map(drop)
    }

    fn refresh_locked(&self, st: &mut State) -> Result<Listing, IpamError> {
        let listing = self.store.list(BLOCKS_PREFIX)?;
        self.load(st, &listing);
        Ok(listing)
    }

    /// Replaces the caches with the blocks of `listing`.
    fn load(&self, st: &mut State, listing: &Listing) {
        st.blocks.clear();
        st.foreign.clear();
        st.borrowed.clear();
        for kv in &listing.kvs {
            match BlockRecord::decode(kv) {
                Ok(rec) => self.put(
                    st,
                    kv.key.clone(),
                    Cached {
                        rec,
                        rev: kv.mod_revision,
                    },
                ),
                Err(e) => tracing::warn!(error = %e, "skipping an ipam block"),
            }
        }
    }

    /// Caches a block under `key`: in this node's blocks or in the others'
    /// (indexing the addresses this node borrowed in it).
    fn put(&self, st: &mut State, key: String, c: Cached) {
        if self.is_mine(&c.rec) {
            st.foreign.remove(&key);
            st.blocks.insert(key, c);
        } else {
            st.blocks.remove(&key);
            for a in c.rec.allocations.values() {
                if a.node.as_deref() == Some(self.cfg.node.as_str()) {
                    st.borrowed
                        .entry(a.handle.clone())
                        .or_default()
                        .insert(key.clone());
                }
            }
            st.foreign.insert(key, c);
        }
    }

    fn is_mine(&self, rec: &BlockRecord) -> bool {
        rec.affinity.as_deref() == Some(self.cfg.node.as_str())
    }

    /// Whether this node holds allocation `a` of `rec` (its own block and not
    /// lent, or borrowed by this node).
    fn holds(&self, rec: &BlockRecord, a: &Allocation) -> bool {
        a.owner(rec) == Some(self.cfg.node.as_str())
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
        st.foreign.remove(key);
        if let Some(kv) = current {
            match BlockRecord::decode(&kv) {
                Ok(rec) => self.put(
                    st,
                    key.to_string(),
                    Cached {
                        rec,
                        rev: kv.mod_revision,
                    },
                ),
                Err(e) => tracing::warn!(error = %e, "ipam block became undecodable"),
            }
        }
    }

    /// Keys of the cached blocks where `handle` may hold an address of this
    /// node: its own blocks and the blocks it borrowed from.
    fn handle_keys(&self, st: &State, handle: &str) -> Vec<String> {
        let mut keys: Vec<String> = st
            .blocks
            .iter()
            .filter(|(_, c)| {
                c.rec
                    .allocations
                    .values()
                    .any(|a| a.handle == handle && self.holds(&c.rec, a))
            })
            .map(|(k, _)| k.clone())
            .collect();
        if let Some(b) = st.borrowed.get(handle) {
            keys.extend(b.iter().filter(|k| st.foreign.contains_key(*k)).cloned());
        }
        keys
    }

    fn held(&self, st: &State, handle: &str) -> Vec<Allocated> {
        let mut out = Vec::new();
        for key in self.handle_keys(st, handle) {
            let Some(c) = st.cached(&key) else { continue };
            for (&o, a) in &c.rec.allocations {
                if a.handle == handle && self.holds(&c.rec, a) {
                    out.push(Allocated {
                        addr: c.rec.addr(o),
                        pool: c.rec.pool,
                        block: c.rec.cidr,
                    });
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The addresses `handle` holds for this node, in its own blocks or
    /// borrowed from other nodes' blocks (from the cache).
    pub fn find(&self, handle: &str) -> Vec<IpAddr> {
        let st = self.lock();
        self.held(&st, handle).into_iter().map(|a| a.addr).collect()
    }

    /// Allocates what `req` asks for to `attrs.handle()`, IPv4 first.
    ///
    /// Idempotent: a family the handle already holds an address of is
    /// answered with that address, without a write. Every block change the
    /// allocation needs (an address in a block of the node, a block claim
    /// with the address already in it, or an address borrowed from another
    /// node's block) goes into one atomic store commit: when any family
    /// cannot be served, nothing is allocated and the error is returned; a
    /// lost condition retries the whole allocation against the fresh record
    /// the conflict carries.
    ///
    /// With `batching` (the default), concurrent calls are planned together
    /// by one of them (the leader) and written in one commit (group commit).
    pub fn allocate(
        &self,
        attrs: &AllocationAttrs,
        req: &AllocRequest,
    ) -> Result<Vec<Allocated>, IpamError> {
        let r = prepare(attrs, req)?;
        if !self.cfg.batching {
            let mut st = self.lock();
            let mut out = self.run_batch(&mut st, std::slice::from_ref(&r));
            return out.pop().unwrap_or_else(|| {
                Err(IpamError::InvalidRequest {
                    reason: "empty batch".into(),
                })
            });
        }
        self.callers.fetch_add(1, Ordering::SeqCst);
        let slot = Arc::new(Slot::default());
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.pending.push((r, slot.clone()));
            if !q.leader {
                q.leader = true;
                *slot.lock() = SlotState::Lead;
            }
            self.queue_cv.notify_all();
        }
        loop {
            let mut s = slot.lock();
            while matches!(*s, SlotState::Waiting) {
                s = slot.cv.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            match std::mem::replace(&mut *s, SlotState::Waiting) {
                SlotState::Done(res) => return res,
                SlotState::Lead => {
                    drop(s);
                    self.lead();
                }
                SlotState::Waiting => {}
            }
        }
    }

    /// Runs one batch as its leader: waits (at most `batch_window`) for
    /// callers that are about to queue, takes the queue, plans and commits
    /// it, hands out the results and passes the lead on (or ends it when the
    /// queue is empty).
    fn lead(&self) {
        let deadline = Instant::now() + self.cfg.batch_window;
        let batch = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let now = Instant::now();
                if q.pending.len() >= MAX_BATCH
                    || q.pending.len() >= self.callers.load(Ordering::SeqCst)
                    || now >= deadline
                {
                    break;
                }
                q = self
                    .queue_cv
                    .wait_timeout(q, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            let n = q.pending.len().min(MAX_BATCH);
            q.pending.drain(..n).collect::<Vec<_>>()
        };
        let (reqs, slots): (Vec<Request>, Vec<Arc<Slot>>) = batch.into_iter().unzip();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut st = self.lock();
            // A panic must not leave staged changes in the cache.
            let res = self.run_batch(&mut st, &reqs);
            self.unstage(&mut st, true);
            res
        }));
        let (results, panic) = match run {
            Ok(r) => (r, None),
            Err(p) => {
                let mut st = self.lock();
                self.unstage(&mut st, true);
                let e = IpamError::InvalidRequest {
                    reason: "the ipam batch leader panicked; retry".into(),
                };
                (reqs.iter().map(|_| Err(dup_error(&e))).collect(), Some(p))
            }
        };
        for (slot, res) in slots.iter().zip(results) {
            self.callers.fetch_sub(1, Ordering::SeqCst);
            *slot.lock() = SlotState::Done(res);
            slot.cv.notify_all();
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        match q.pending.first() {
            None => q.leader = false,
            Some((_, next)) => {
                *next.lock() = SlotState::Lead;
                next.cv.notify_all();
            }
        }
        drop(q);
        if let Some(p) = panic {
            std::panic::resume_unwind(p);
        }
    }

    /// Plans every request of `reqs` against the cache (each sees the ones
    /// before it) and writes all their block changes in one commit; a lost
    /// condition replans the whole batch against the fresh record.
    fn run_batch(
        &self,
        st: &mut State,
        reqs: &[Request],
    ) -> Vec<Result<Vec<Allocated>, IpamError>> {
        let now = self.clock.now_ms();
        let mut attempts = 0;
        // The block listing the claims of one attempt share (a lost commit
        // makes it stale).
        let mut listing = None;
        loop {
            let mut pending: BTreeMap<String, (Revision, bool)> = BTreeMap::new();
            let mut results = Vec::with_capacity(reqs.len());
            for r in reqs {
                results.push(self.plan_request(st, r, now, &mut listing, &mut pending));
            }
            if pending.is_empty() {
                self.unstage(st, false);
                return results;
            }
            let mut changes = Vec::with_capacity(pending.len());
            let mut failed = None;
            for (key, (rev, claims)) in pending {
                let Some(c) = st.cached(&key) else { continue };
                match Change::new(key, c.rec.clone(), rev, claims) {
                    Ok(c) => changes.push(c),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            self.unstage(st, true);
            if let Some(e) = failed {
                return reqs.iter().map(|_| Err(dup_error(&e))).collect();
            }
            let key = match self.write(st, changes) {
                Err(e) => return reqs.iter().map(|_| Err(dup_error(&e))).collect(),
                Ok(Ok(())) => return results,
                Ok(Err(key)) => key,
            };
            listing = None;
            attempts += 1;
            if attempts >= MAX_ATTEMPTS {
                return reqs
                    .iter()
                    .map(|_| {
                        Err(IpamError::Contended {
                            key: key.clone(),
                            attempts,
                        })
                    })
                    .collect();
            }
        }
    }

    /// Puts a planned block change into the cache (remembering what was
    /// there) so the next request of the batch plans on top of it.
    fn stage(
        &self,
        st: &mut State,
        change: Change,
        pending: &mut BTreeMap<String, (Revision, bool)>,
    ) {
        if !st.staged.contains_key(&change.key) {
            let before = (
                st.blocks.get(&change.key).cloned(),
                st.foreign.get(&change.key).cloned(),
            );
            st.staged.insert(change.key.clone(), before);
        }
        let e = pending
            .entry(change.key.clone())
            .or_insert((change.rev, false));
        e.1 |= change.claims;
        self.put(
            st,
            change.key,
            Cached {
                rec: change.rec,
                rev: change.rev,
            },
        );
    }

    /// Ends staging: restores what the cache held before (`restore`; the
    /// changes are written by `write` which caches them again on success).
    fn unstage(&self, st: &mut State, restore: bool) {
        for (key, (mine, other)) in std::mem::take(&mut st.staged) {
            if !restore {
                continue;
            }
            st.blocks.remove(&key);
            st.foreign.remove(&key);
            if let Some(c) = mine {
                st.blocks.insert(key.clone(), c);
            }
            if let Some(c) = other {
                st.foreign.insert(key, c);
            }
        }
    }

    /// Plans one allocation of a batch and stages its changes.
    fn plan_request(
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

    /// Writes `changes` in one atomic commit. On success the cache takes the
    /// new records; when a condition failed, the cache takes the current
    /// state of that key, and `Ok(Err(key))` names it.
    ///
    /// The route summaries of the blocks whose routing changes go into the
    /// same commit (after the block ops: they have no condition, so a
    /// conflict index always names a block).
    fn write(&self, st: &mut State, changes: Vec<Change>) -> Result<Result<(), String>, IpamError> {
        let routes: Vec<(String, Option<Vec<u8>>)> =
            changes.iter().filter_map(|c| route_change(st, c)).collect();
        let ops: Vec<TxnOp<'_>> = changes
            .iter()
            .map(Change::op)
            .chain(routes.iter().map(|(key, value)| match value {
                Some(value) => TxnOp::Put { key, value },
                None => TxnOp::Delete {
                    key,
                    expected: None,
                },
            }))
            .collect();
        let res = self.store.commit(&ops)?;
        drop(ops);
        match res {
            Ok(rev) => {
                for c in changes {
                    if c.delete {
                        tracing::info!(block = %c.rec.cidr, "ipam block given back");
                        st.blocks.remove(&c.key);
                        st.foreign.remove(&c.key);
                        st.empty_seen.remove(&c.key);
                        continue;
                    }
                    if c.claims {
                        tracing::info!(block = %c.rec.cidr, node = %self.cfg.node, "ipam block claimed");
                    }
                    self.put(st, c.key, Cached { rec: c.rec, rev });
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
    /// has room, else by claiming a block, else (without strict affinity) by
    /// borrowing from another node's block.
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
    fn plan_borrow(
        &self,
        st: &State,
        alloc: &Allocation,
        family: Family,
        now: u64,
    ) -> Result<Option<Plan>, IpamError> {
        let mut blocks: Vec<(usize, u128, &String, &Cached)> = st
            .foreign
            .iter()
            .filter(|(_, c)| c.rec.family() == family && c.rec.affinity.is_some())
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
    /// nobody holds. Lists the blocks once per `listing` (which also
    /// refreshes what this node knows of other nodes' blocks, and of blocks
    /// of its own another writer claimed: the block limit counts those).
    fn plan_claim(
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
                let Some(cached) = st.cached(key) else {
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
                if rec.allocations.is_empty() {
                    rec.emptied_at_ms = Some(now);
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

    /// Releases every address `handle` holds for this node (in its own
    /// blocks or borrowed); each rests in quarantine until now +
    /// `quarantine`. Releasing a handle that holds nothing is a no-op (no
    /// store access with strict affinity; without it, one listing to look
    /// for addresses another `Ipam` of this node borrowed). Returns what
    /// was released.
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
        let mut keys = self.handle_keys(&st, handle);
        if keys.is_empty() && !self.cfg.strict_affinity {
            // Not in the index: another Ipam of this node may have borrowed
            // for it since our last listing.
            self.refresh_locked(&mut st)?;
            keys = self.handle_keys(&st, handle);
        }
        let freed = self.free_in_blocks(&mut st, &keys, until, |rec, _, a| {
            a.handle == handle && self.holds(rec, a)
        })?;
        st.borrowed.remove(handle);
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

    /// Compares the store with the node's `live` handles without changing
    /// anything: allocations this node holds (in its blocks, or borrowed)
    /// not live (any age) are leaks; inconsistencies anywhere in the IPAM keys are problems.
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
                if self.holds(&rec, a) && !live.contains(&a.handle) {
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
