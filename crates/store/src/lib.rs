//! The datastore seam of weft.
//!
//! Every piece of shared state (IPAM pools and blocks, endpoints, later the node
//! registry and policy identities) lives behind [`Store`]: revisioned keys with
//! get, list by prefix, create-if-absent, compare-and-swap on revision,
//! delete-if-revision, atomic multi-key transactions ([`Store::commit`]),
//! watch from a revision, and leases. The semantics are
//! etcd v3's, so the etcd backend maps onto it one to one; the embedded backend
//! ([`embedded::EmbeddedStore`]) gives the same semantics from one file on one
//! node. `conformance` (behind the feature of that name, which only tests
//! turn on) holds the behaviour every backend must show, as a test suite a
//! backend's tests call with a factory.

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod embedded;
pub mod etcd;

use std::sync::mpsc::Receiver;
use std::time::Duration;

/// A store-wide, strictly increasing revision. Every successful write bumps it
/// by one; 0 means "never written" / "absent".
pub type Revision = u64;

/// The largest value a backend must accept (1 MiB); larger values are
/// [`StoreError::Invalid`]. (etcd's default request limit is 1.5 MiB, so the
/// etcd backend can enforce the same bound.)
pub const MAX_VALUE_LEN: usize = 1 << 20;

/// The key rule every backend enforces: a key is not empty.
pub fn check_key(key: &str) -> StoreResult<()> {
    if key.is_empty() {
        return Err(StoreError::Invalid {
            reason: "empty key".into(),
        });
    }
    Ok(())
}

/// The value rule every backend enforces: at most [`MAX_VALUE_LEN`] bytes.
pub fn check_value(key: &str, value: &[u8]) -> StoreResult<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(StoreError::Invalid {
            reason: format!(
                "value of {key} is {} bytes, more than {MAX_VALUE_LEN}",
                value.len()
            ),
        });
    }
    Ok(())
}

/// Written by `weft store migrate` into the store it moved a cluster away
/// from (value: JSON `{"moved_to": "<backend>"}`): a weftd finding it
/// refuses to start on that store, so no allocation lands where nobody
/// reads any more.
pub const MIGRATION_FENCE_KEY: &str = "/weft/store/v1/fence";

/// Where nodes register (on a lease): a key here is a live weftd.
pub const NODES_PREFIX: &str = "/weft/cluster/v1/nodes/";

/// Where a weftd marks itself running (on a lease) when its node's facts
/// live elsewhere (`--store kubernetes`: the Node object): a key here is a
/// live weftd too, for `weft store migrate`.
pub const AGENTS_PREFIX: &str = "/weft/agents/v1/";

/// A lease id; keys attached to a lease vanish when the lease expires or is
/// revoked.
pub type LeaseId = u64;

/// One key with its value and the revisions that describe its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created this key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the last write to this key; the token for compare-and-swap.
    pub mod_revision: Revision,
    /// Lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

/// The outcome of a conditional write that lost: the key's current state
/// (`None` when it does not exist), so the caller can retry without a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub current: Option<KeyValue>,
}

/// One write of a transaction ([`Store::commit`]): the condition is part of
/// the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOp<'a> {
    /// Create-if-absent (the condition fails when the key exists).
    Create {
        key: &'a str,
        value: &'a [u8],
        lease: Option<LeaseId>,
    },
    /// Replace if the key's `mod_revision == expected` (the key keeps its
    /// lease; a missing key fails the condition).
    Update {
        key: &'a str,
        value: &'a [u8],
        expected: Revision,
    },
    /// Write the value whether or not the key exists (no condition: it never
    /// fails the transaction). A created key gets the commit's revision as its
    /// `create_revision`, a replaced one keeps its own. The key ends up with
    /// no lease: a lease the old key had is not kept (etcd's put without
    /// `lease`), so the key outlives it. For derived records that follow
    /// another key of the same commit, where that key's condition already
    /// guards the write.
    Put { key: &'a str, value: &'a [u8] },
    /// Delete if the key's `mod_revision == expected`. With `None` the delete
    /// is unconditional and a missing key is fine (nothing to delete).
    Delete {
        key: &'a str,
        expected: Option<Revision>,
    },
}

impl TxnOp<'_> {
    /// The key the op writes.
    pub fn key(&self) -> &str {
        match self {
            TxnOp::Create { key, .. }
            | TxnOp::Update { key, .. }
            | TxnOp::Put { key, .. }
            | TxnOp::Delete { key, .. } => key,
        }
    }
}

/// The outcome of a transaction that lost: the first op (by index into the
/// ops) whose condition failed, and that key's current state (`None` when it
/// does not exist), so the caller can retry without a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnConflict {
    pub index: usize,
    pub current: Option<KeyValue>,
}

/// A list result: the keys plus the store revision the list was read at, so a
/// watch can start exactly after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub kvs: Vec<KeyValue>,
    pub revision: Revision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// A change seen by a watch. For a delete, `kv.value` is empty and
/// `kv.mod_revision` is the revision of the delete (as in etcd,
/// `kv.create_revision` is 0 and `kv.lease` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// What a watch delivers: events in revision order, or the end of the watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMessage {
    Event(Event),
    /// The requested start revision is older than the backend keeps history
    /// for; the watcher must re-list and watch again from the listing's revision.
    Compacted {
        compact_revision: Revision,
    },
    /// The backend lost the watch (connection loss, shutdown); re-list and
    /// watch again.
    Closed {
        reason: String,
    },
}

/// A live watch. Dropping it cancels the watch.
pub struct Watch {
    pub rx: Receiver<WatchMessage>,
    /// Cancels the watch on drop; backends put their cancellation guard here.
    pub guard: Box<dyn Send>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or cannot serve now; callers may retry
    /// later (weft-cni maps this to CNI error 11).
    #[error("datastore unavailable: {reason}")]
    Unavailable { reason: String },
    /// The lease does not exist (never granted, expired or revoked).
    #[error("lease {lease} not found (expired or revoked)")]
    LeaseNotFound { lease: LeaseId },
    /// A key or value the backend refuses (empty key, too large).
    #[error("invalid request: {reason}")]
    Invalid { reason: String },
    /// The on-disk state cannot be read or written.
    #[error("datastore i/o on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The on-disk state is damaged in a way the backend cannot repair alone.
    #[error("datastore corrupt at {path}: {reason}")]
    Corrupt { path: String, reason: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The datastore contract. All methods are blocking and safe to call from many
/// threads at once; every write is durable when it returns `Ok`.
pub trait Store: Send + Sync {
    /// A short name for logs and status output ("embedded", "etcd").
    fn backend(&self) -> &'static str;

    /// The key's current state, or `None`.
    fn get(&self, key: &str) -> StoreResult<Option<KeyValue>>;

    /// Every key that starts with `prefix`, sorted by key. Prefixes are byte
    /// prefixes, as in etcd: `"a/b"` matches `"a/b/c"` and also `"a/bc"`; end
    /// the prefix with `/` to list a "directory". `""` lists every key.
    fn list(&self, prefix: &str) -> StoreResult<Listing>;

    /// Creates `key` only if it does not exist. `Ok(Ok(rev))` is the new
    /// key's revision; `Ok(Err(conflict))` carries the existing key.
    fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> StoreResult<Result<Revision, Conflict>>;

    /// Replaces `key`'s value only if its `mod_revision` is still `expected`.
    /// The key keeps its lease. A missing key is a conflict with `current: None`.
    fn update(
        &self,
        key: &str,
        value: &[u8],
        expected: Revision,
    ) -> StoreResult<Result<Revision, Conflict>>;

    /// Deletes `key` if its `mod_revision` is `expected` (or unconditionally
    /// with `None`). Deleting a missing key unconditionally is `Ok(Ok(None))`;
    /// otherwise `Ok(Ok(Some(rev)))` is the revision of the delete.
    fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> StoreResult<Result<Option<Revision>, Conflict>>;

    /// Applies every op of `ops` or none, atomically (etcd's `Txn`).
    ///
    /// `Ok(Ok(revision))` is the single store revision of the whole commit:
    /// every key written gets it as its `mod_revision` (and a created key as
    /// its `create_revision`), as one etcd txn is one revision. An
    /// unconditional delete of a missing key writes nothing; when nothing at
    /// all is written, the result is the current revision and the revision
    /// does not move. `Ok(Err(conflict))` names the first op whose condition
    /// failed and that key's current state; nothing is written then.
    ///
    /// Empty `ops`, the same key twice, and any key or value the single-key
    /// methods refuse are [`StoreError::Invalid`]; a create with an unknown
    /// lease is [`StoreError::LeaseNotFound`] (and writes nothing). Watchers
    /// see each written key as its own [`Event`], all with the commit's
    /// revision, in op order.
    fn commit(&self, ops: &[TxnOp<'_>]) -> StoreResult<Result<Revision, TxnConflict>>;

    /// Streams every change to keys under `prefix` (a byte prefix, as in
    /// [`Store::list`]) with a revision greater than `after`, in order, then
    /// live changes as they happen. Watching from a [`Listing::revision`] sees
    /// exactly the changes after the list. When `after` is older than the
    /// history the backend keeps, the watch delivers
    /// [`WatchMessage::Compacted`] and ends.
    fn watch(&self, prefix: &str, after: Revision) -> StoreResult<Watch>;

    /// Grants a lease that expires `ttl` after its grant or last keep-alive.
    fn grant_lease(&self, ttl: Duration) -> StoreResult<LeaseId>;

    /// Renews the lease for another full TTL.
    fn keep_alive(&self, lease: LeaseId) -> StoreResult<()>;

    /// Ends the lease now, deleting every key attached to it.
    fn revoke_lease(&self, lease: LeaseId) -> StoreResult<()>;
}
