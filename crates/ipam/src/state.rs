//! The in-memory side of an `Ipam`: the cache of block records (this node's
//! and the others'), and one block write as a commit plans it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use weft_store::{Revision, TxnOp};

use crate::record::{route_key, BlockRecord};
use crate::IpamError;

#[derive(Debug, Clone)]
pub(crate) struct Cached {
    pub(crate) rec: BlockRecord,
    pub(crate) rev: Revision,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// This node's blocks, by key.
    pub(crate) blocks: BTreeMap<String, Cached>,
    /// Other nodes' blocks (and unclaimed ones) as last seen: where this node
    /// borrows from and where its borrowed addresses live.
    pub(crate) foreign: BTreeMap<String, Cached>,
    /// Handle -> keys of other nodes' blocks where it (may) hold a borrowed
    /// address of this node. Rebuilt from every full listing; an entry may
    /// be stale (harmless: the block is checked).
    pub(crate) borrowed: HashMap<String, BTreeSet<String>>,
    /// Keys changed in memory by the batch being planned, with what the
    /// caches held before (restored when the commit does not happen).
    pub(crate) staged: HashMap<String, (Option<Cached>, Option<Cached>)>,
    /// Node -> when this `Ipam` first saw it gone (for `collect_node`).
    pub(crate) gone_since: HashMap<String, u64>,
    /// Block key -> when this `Ipam` first saw it empty, for blocks without
    /// an `emptied_at_ms` of their own.
    pub(crate) empty_seen: HashMap<String, u64>,
    /// Handle -> the addresses it released into quarantine and until when,
    /// while that quarantine lasts (in memory only). Lets the same handle
    /// take them back: `podman network reload` is a DEL followed at once by
    /// an ADD of the same container asking for its old addresses.
    pub(crate) released: HashMap<String, Vec<(IpAddr, u64)>>,
    /// Block key -> allocations of this node in that (own) block that are
    /// in the local journal but not yet in the store ("Local allocations"
    /// in the crate docs). The cached record holds them too.
    pub(crate) local: BTreeMap<String, BTreeMap<u32, crate::record::Allocation>>,
    /// Block key -> when this node last allocated in it locally.
    pub(crate) local_last: HashMap<String, u64>,
    /// Journal keys whose allocations the store has now (or never will):
    /// deleted with the next journal write.
    pub(crate) journal_garbage: Vec<String>,
}

impl State {
    /// Whether `handle` itself put `addr` in the quarantine that lasts
    /// until `until` (nobody held the address since).
    pub(crate) fn released_by(&self, handle: &str, addr: IpAddr, until: u64) -> bool {
        self.released
            .get(handle)
            .is_some_and(|r| r.contains(&(addr, until)))
    }

    /// A cached block of this node or of another.
    pub(crate) fn cached(&self, key: &str) -> Option<&Cached> {
        self.blocks.get(key).or_else(|| self.foreign.get(key))
    }
}

/// One block write an operation needs: the block's new record and the
/// revision it was computed from (0: the key does not exist, create it).
pub(crate) struct Change {
    pub(crate) key: String,
    pub(crate) rec: BlockRecord,
    pub(crate) rev: Revision,
    pub(crate) value: Vec<u8>,
    /// The write claims a block that was free (worth a log line).
    pub(crate) claims: bool,
    /// Delete the block (if still at `rev`) instead of writing `rec`.
    pub(crate) delete: bool,
}

impl Change {
    pub(crate) fn new(
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

    pub(crate) fn delete(key: String, rec: BlockRecord, rev: Revision) -> Change {
        Change {
            key,
            rec,
            rev,
            value: Vec::new(),
            claims: false,
            delete: true,
        }
    }

    pub(crate) fn op(&self) -> TxnOp<'_> {
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
pub(crate) fn route_change(st: &State, c: &Change) -> Option<(String, Option<Vec<u8>>)> {
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
