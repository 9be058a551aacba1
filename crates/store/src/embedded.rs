//! The embedded backend: a single-node, file-backed store with etcd v3
//! semantics and no server.
//!
//! # Design
//!
//! The whole key space lives in memory (a `BTreeMap`); every committed write is
//! also appended to a log file and `fdatasync`ed before the call returns. On
//! open the log is replayed. Concurrent writers share fsyncs (group commit):
//! each writer appends its record (one per write call; a whole transaction
//! is one record) under the state mutex, then waits until the
//! log is synced past its record; whichever waiter finds no sync in flight
//! becomes the leader and syncs for everyone whose record is already in the
//! file.
//!
//! Reads never return a write that is not yet durable: a read that could see a
//! write still waiting for its fsync waits for that fsync too. Watchers only
//! receive events once they are durable, in revision order.
//!
//! # On-disk format
//!
//! The log starts with the 8-byte magic [`LOG_MAGIC`], followed by records:
//!
//! ```text
//! len: u32 LE | len_crc: u32 LE = crc32(len bytes) | crc: u32 LE = crc32(payload) | payload: len bytes
//! ```
//!
//! `payload` starts with an op byte; integers are little endian, strings and
//! byte strings are `u32` length + bytes:
//!
//! * `1` put: `mod_revision u64, create_revision u64, lease u64 (0 = none), key, value`
//! * `2` delete: `revision u64, key`
//! * `3` lease granted: `id u64` (so lease ids never repeat after a reopen)
//! * `4` meta: `revision u64, next_lease u64` (first record of a compacted log)
//! * `5` txn: `revision u64, count u32`, then `count` writes, each a kind
//!   byte and its fields: `1` put: `create_revision u64, lease u64 (0 = none),
//!   key, value` (its `mod_revision` is the txn's `revision`); `2` delete:
//!   `key`. One [`Store::commit`] is one txn record, so the checksum of the
//!   frame covers the whole transaction: a torn txn frame at the tail is
//!   dropped as a whole, never applied in part. Replay applies the writes in
//!   order.
//!
//! When the first damaged record of the log is followed by no valid record, it
//! is a torn tail (a crash mid-append): it is truncated away with a warning.
//! A damaged record followed by a valid one is [`StoreError::Corrupt`].
//!
//! When the log grows past [`EmbeddedOptions::compact_ratio`] times the size of
//! the live data (and past [`EmbeddedOptions::compact_min_bytes`]), it is
//! rewritten as a snapshot (meta record + one put per live key) into
//! `<path>.compact`, fsynced, renamed over the log, and the directory fsynced.
//!
//! The log file is held under an exclusive `flock`, so a second process (or a
//! second open in the same process) fails with [`StoreError::Unavailable`].
//!
//! # Leases
//!
//! Leases live in memory only. On open, every key that was attached to a lease
//! is deleted (each a normal, logged delete): a restarted single-node agent
//! re-registers its leased keys. Lease ids are persisted, so they never repeat.
//!
//! # Watch history
//!
//! The last [`EmbeddedOptions::history_limit`] events are kept in memory. A
//! watch from a revision older than that (or older than the open of the store:
//! history does not survive a reopen) receives [`WatchMessage::Compacted`] with
//! the oldest revision it may watch after.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{
    check_key, check_value, Conflict, Event, EventKind, KeyValue, LeaseId, Listing, Revision,
    Store, StoreError, StoreResult, TxnConflict, TxnOp, Watch, WatchMessage,
};

// by concern: the log's records, opening, the locked state, the trait
mod codec;
mod open;
mod ops;
mod state;

use codec::*;
pub use codec::{crc32, replay_log, Replay};

/// The first 8 bytes of every embedded store log.
pub const LOG_MAGIC: &[u8; 8] = b"WEFTKV01";

const FRAME_HEADER: usize = 12;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_LEASE: u8 = 3;
const OP_META: u8 = 4;
const OP_TXN: u8 = 5;
/// Kinds of the writes inside a txn record.
const TXN_PUT: u8 = 1;
const TXN_DELETE: u8 = 2;
/// Size of the meta record a snapshot starts with.
const META_FRAME_LEN: u64 = (FRAME_HEADER + 1 + 8 + 8) as u64;

/// Tuning knobs of [`EmbeddedStore`]; [`Default`] is what weftd uses.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// How many events the watch history keeps (default 10 000).
    pub history_limit: usize,
    /// The log is never compacted below this size (default 1 MiB).
    pub compact_min_bytes: u64,
    /// The log is compacted when it exceeds this many times the live data
    /// (default 4).
    pub compact_ratio: u64,
    /// How often the lease reaper looks for expired leases (default 100 ms).
    pub reap_interval: Duration,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            history_limit: 10_000,
            compact_min_bytes: 1 << 20,
            compact_ratio: 4,
            reap_interval: Duration::from_millis(100),
        }
    }
}

/// The embedded backend; see the [module docs](self).
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    reaper: Mutex<Option<JoinHandle<()>>>,
    shutdown: Arc<Shutdown>,
}

#[derive(Default)]
struct Shutdown {
    stop: Mutex<bool>,
    cv: Condvar,
}

struct Inner {
    opts: EmbeddedOptions,
    /// `None` for [`EmbeddedStore::in_memory`].
    path: Option<PathBuf>,
    state: Mutex<State>,
    sync: Mutex<SyncState>,
    sync_cv: Condvar,
    /// Number of records appended to the log so far (a sequence number, not
    /// an offset, so it survives compaction). Only changed under `state`.
    appended: AtomicU64,
    fsyncs: AtomicU64,
}

struct SyncState {
    /// Every record with a sequence number `<= synced` is durable.
    synced: u64,
    /// A leader is syncing right now.
    syncing: bool,
    file: Option<Arc<File>>,
    /// A failed write or fsync: the store refuses further work (the state of
    /// the file is unknown; reopening replays what did reach the disk).
    failed: Option<(io::ErrorKind, String)>,
}

struct Log {
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    /// No compaction is tried below this size (backoff after a failure).
    next_compact: u64,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

struct Subscriber {
    id: u64,
    prefix: String,
    after: Revision,
    tx: Sender<WatchMessage>,
}

struct State {
    kvs: BTreeMap<String, KeyValue>,
    revision: Revision,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    log: Option<Log>,
    /// Bytes a snapshot of the live data would take.
    live_bytes: u64,
    /// Events written but not yet durable, with their record's sequence number.
    pending: VecDeque<(u64, Event)>,
    /// Published events with revisions in `(hist_start, revision]`.
    history: VecDeque<Event>,
    hist_start: Revision,
    subscribers: Vec<Subscriber>,
    next_sub: u64,
}

fn io_error(path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn poisoned() -> StoreError {
    StoreError::Unavailable {
        reason: "embedded store state poisoned by a panicking thread".to_string(),
    }
}

fn validate_key(key: &str) -> StoreResult<()> {
    check_key(key)?;
    // the record format stores key lengths in 32 bits
    if key.len() > u32::MAX as usize / 2 {
        return Err(StoreError::Invalid {
            reason: format!("key of {} bytes is too long", key.len()),
        });
    }
    Ok(())
}

fn validate_txn(ops: &[TxnOp<'_>]) -> StoreResult<()> {
    if ops.is_empty() {
        return Err(StoreError::Invalid {
            reason: "empty transaction".to_string(),
        });
    }
    let mut keys = BTreeSet::new();
    // An upper bound of the txn record's payload (every op as a put).
    let mut size: u64 = 1 + 8 + 4;
    for op in ops {
        let key = op.key();
        validate_key(key)?;
        let value_len = match op {
            TxnOp::Create { value, .. }
            | TxnOp::Update { value, .. }
            | TxnOp::Put { value, .. } => {
                check_value(key, value)?;
                value.len()
            }
            TxnOp::Delete { .. } => 0,
        };
        if !keys.insert(key) {
            return Err(StoreError::Invalid {
                reason: format!("key {key} appears twice in one transaction"),
            });
        }
        size += (1 + 8 + 8 + 4 + key.len() + 4 + value_len) as u64;
    }
    if size > u64::from(u32::MAX) {
        return Err(StoreError::Invalid {
            reason: format!("transaction of about {size} bytes is too large"),
        });
    }
    Ok(())
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        *self
            .shutdown
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.shutdown.cv.notify_all();
        let handle = self
            .reaper
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        let mut st = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for sub in st.subscribers.drain(..) {
            let _ = sub.tx.send(WatchMessage::Closed {
                reason: "store closed".to_string(),
            });
        }
    }
}

fn reap_loop(inner: Weak<Inner>, shutdown: Arc<Shutdown>, interval: Duration) {
    loop {
        {
            let stop = shutdown.stop.lock().unwrap_or_else(PoisonError::into_inner);
            let (stop, _) = shutdown
                .cv
                .wait_timeout_while(stop, interval, |stop| !*stop)
                .unwrap_or_else(PoisonError::into_inner);
            if *stop {
                return;
            }
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if let Err(e) = inner.expire_leases() {
            tracing::warn!(error = %e, "expiring leases failed");
        }
    }
}

/// Unregisters a watcher when its [`Watch`] is dropped.
struct WatchGuard {
    inner: Weak<Inner>,
    id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            let mut st = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.subscribers.retain(|s| s.id != self.id);
        }
    }
}

// ---------------------------------------------------------------------------
// Files

fn corrupt(path: &Path, reason: String) -> StoreError {
    StoreError::Corrupt {
        path: path.display().to_string(),
        reason,
    }
}

fn compact_tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".compact");
    PathBuf::from(s)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Opens and exclusively locks the log, making sure the locked file is still
/// the one at `path` (a compaction may rename a new file over it).
/// Mode of a new log file (and of its compacted replacement): it names
/// every pod and its addresses, so only its owner reads it.
const LOG_MODE: u32 = 0o600;

fn open_locked(path: &Path) -> StoreResult<File> {
    for _ in 0..16 {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(LOG_MODE)
            .open(path)
            .map_err(|e| io_error(path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Unavailable {
                    reason: format!(
                        "{} is locked by another process (another weftd has this store open)",
                        path.display()
                    ),
                })
            }
            Err(TryLockError::Error(e)) => return Err(io_error(path, e)),
        }
        let locked = file.metadata().map_err(|e| io_error(path, e))?;
        match fs::metadata(path) {
            Ok(now) if now.dev() == locked.dev() && now.ino() == locked.ino() => return Ok(file),
            _ => continue,
        }
    }
    Err(StoreError::Unavailable {
        reason: format!("{} keeps being replaced while opening it", path.display()),
    })
}

#[cfg(test)]
mod tests;
