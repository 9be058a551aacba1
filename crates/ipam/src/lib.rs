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
//! # Local allocations
//!
//! With a journal ([`Ipam::with_journal`]: weftd passes its own embedded
//! store, `endpoints.db`, when the store is a cluster's), an allocation
//! that only adds addresses to blocks of this node is not written to the
//! store: the batch's new allocations are put into the journal
//! (`/weft/ipam/local/v1/<block>/<ordinal>`, one fsync'ed commit per
//! batch) before `allocate` returns, and [`Ipam::flush`] (weftd: every
//! `--ipam-flush-ms`, 500) writes each block with them to the store, one
//! commit for all blocks, and trims the journal. Block claims, borrowing,
//! statics in unclaimed blocks, releases, gc and collection write the store
//! at once as before, and every store write of a block carries its
//! journaled allocations (the cache holds them), so they are flushed too.
//! The journal takes a batch only while the node's registration lease is
//! known alive with a margin and the store answered recently
//! ([`JournalGate`]: weftd reports the lease's renewals), and only after a
//! read of each block of the batch shows it at the revision the plan was
//! made on (one linearizable read per block per batch, no write): with the
//! store unreachable the read fails and so does the ADD, as a store write
//! would, and a block changed meanwhile (collected, borrowed from) goes the
//! store path, whose compare-and-swap sees it.
//! What this must not lose:
//!
//! - *No duplicates.* Only the block's node allocates in a block marked
//!   `"lo": true`: borrowers skip such blocks. The mark is set by the node's
//!   own store write of the block (a claim, or any synchronous allocation
//!   in it) and an allocation goes to the journal only when the block was
//!   marked at the revision the plan was made on; every store write is a
//!   compare-and-swap, so a borrower that raced the mark loses and replans.
//!   A block with no local allocation for `local_idle` (5 s) is unmarked
//!   by the next flush (one write), so borrowing still works in a cluster
//!   out of blocks, after that delay. With a block limit and borrowing
//!   (`max_blocks_per_node` without `strict_affinity`), where lending is
//!   the plan rather than a last resort, nothing is journaled at all. A journal entry is laid over the
//!   store's record at every load; it is dropped (never applied) when the
//!   store has the same handle there already (flushed), another handle, or
//!   the ordinal quarantined until after the entry was made (released).
//! - *Crash consistency.* An address is in the journal (fsync'ed) before
//!   the ADD that got it returns. A crash before the flush leaves it in the
//!   journal only: the next start lays the journal over the store and
//!   flushes before it serves, with the same handle (the pod keeps its
//!   address, ADD stays idempotent). A crash after the flush and before
//!   the trim leaves entries the store already has: dropped at the next
//!   start. Nobody else allocated in the block meanwhile (marked).
//! - *Views.* The store is exact once flushed: [`Ipam::snapshot`]
//!   (`weft ipam show`) and [`Ipam::check`] flush this node first, and
//!   another node's allocations are at most one flush interval behind.
//!   Route summaries never lag: a local allocation changes no route.
//! - *Leak GC* works on the cache, which holds the journaled allocations:
//!   it frees them like any other (the write carries the rest).
//! - *A dead node.* Its journal dies with it. [`Ipam::collect_node`] gives
//!   its marked blocks back as a whole: with the affinity gone, every free
//!   address of such a block goes into quarantine too, as if each had just
//!   been released, since the dead node may have handed out any of them,
//!   so none reaches a new pod before the quarantine ends.
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

mod batch;
mod cache;
mod check;
mod claim;
mod clock;
mod config;
mod error;
mod gate;
mod gc;
mod local;
mod plan;
mod record;
mod release;
mod state;
mod statics;
mod types;
mod views;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use weft_store::Store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    IpamConfig, PoolConfig, DEFAULT_GC_GRACE, DEFAULT_QUARANTINE, DEFAULT_V4_BLOCK_PREFIX,
    DEFAULT_V6_BLOCK_PREFIX,
};
pub use error::IpamError;
pub use gate::{GateState, JournalGate, CLOCK_SLOP};
pub use local::{journal_key, JOURNAL_PREFIX};
pub use record::{
    block_key, escape_cidr, parse_block_key, pool_key, reserved, route_key, Allocation,
    BlockRecord, RouteSummary, BLOCKS_PREFIX, IPAM_PREFIX, POOLS_PREFIX, ROUTES_PREFIX,
};
pub use types::{
    AllocRequest, Allocated, AllocationAttrs, AllocationInfo, BlockStats, CheckFindings,
    IpamSnapshot, NodeCollection, PoolStats,
};

use batch::Queue;
use state::State;

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

/// Block-based IPAM of one node. Cheap to share (`Arc<Ipam>`); every method
/// may be called from many threads.
pub struct Ipam {
    store: Arc<dyn Store>,
    /// The node's local journal of allocations in its own blocks (see
    /// "Local allocations"); `None`: every allocation goes to `store`.
    journal: Option<Arc<dyn Store>>,
    /// When the journal may take allocations (the node's lease, the
    /// store's last answer).
    gate: Arc<JournalGate>,
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
        Ipam::with_journal(store, cfg, clock, None)
    }

    /// [`Ipam::new`] with the node's local journal (an embedded store of
    /// this node only, fsync'ed per commit): allocations in the node's own
    /// blocks are recorded there and written to `store` by
    /// [`Ipam::flush`] (see "Local allocations"). What the journal holds
    /// from before (a crash between an allocation and its flush) is laid
    /// over the store's blocks and flushed before this returns.
    pub fn with_journal(
        store: Arc<dyn Store>,
        cfg: IpamConfig,
        clock: Arc<dyn Clock>,
        journal: Option<Arc<dyn Store>>,
    ) -> Result<Ipam, IpamError> {
        cfg.validate()?;
        let ipam = Ipam {
            store,
            journal,
            gate: Arc::new(JournalGate::new(cfg.flush_interval)),
            cfg,
            clock,
            state: Mutex::new(State::default()),
            queue: Mutex::new(Queue::default()),
            queue_cv: Condvar::new(),
            callers: AtomicUsize::new(0),
        };
        ipam.ensure_pools()?;
        ipam.load_journal(&mut ipam.lock())?;
        ipam.refresh()?;
        let recovered = ipam.flush()?;
        if recovered > 0 {
            tracing::info!(
                addresses = recovered,
                "wrote allocations of the ipam journal to the store (left by the previous run)"
            );
        }
        Ok(ipam)
    }

    /// This node's name (the affinity of its blocks).
    pub fn node(&self) -> &str {
        &self.cfg.node
    }

    pub fn config(&self) -> &IpamConfig {
        &self.cfg
    }

    /// The journal's gate, for whoever keeps the node's registration lease
    /// to report its renewals ([`JournalGate::lease_renewed`]). Until the
    /// first report nothing is journaled.
    pub fn journal_gate(&self) -> Arc<JournalGate> {
        self.gate.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The cache is only changed after successful writes, and every write
        // is a compare-and-swap, so a panic elsewhere cannot make it unsafe.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
