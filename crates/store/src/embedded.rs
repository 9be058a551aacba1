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

impl EmbeddedStore {
    /// Opens (creating if needed) the store logged at `path`, with default
    /// options. The parent directory must exist.
    pub fn open(path: &Path) -> StoreResult<Self> {
        Self::open_with(path, EmbeddedOptions::default())
    }

    /// A store with the same semantics that keeps nothing on disk (for tests).
    pub fn in_memory() -> Self {
        Self::in_memory_with(EmbeddedOptions::default())
    }

    /// [`EmbeddedStore::in_memory`] with explicit options.
    pub fn in_memory_with(opts: EmbeddedOptions) -> Self {
        Self::from_state(opts, None, State::new(None, 0, 1, BTreeMap::new()))
    }

    /// [`EmbeddedStore::open`] with explicit options.
    pub fn open_with(path: &Path, opts: EmbeddedOptions) -> StoreResult<Self> {
        let file = open_locked(path)?;
        let tmp = compact_tmp_path(path);
        match fs::remove_file(&tmp) {
            Ok(()) => tracing::warn!(path = %tmp.display(), "removed leftover compaction file"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&tmp, e)),
        }
        let mut data = Vec::new();
        (&file)
            .read_to_end(&mut data)
            .map_err(|e| io_error(path, e))?;

        if data.len() < LOG_MAGIC.len() {
            if !LOG_MAGIC.starts_with(&data) {
                return Err(corrupt(
                    path,
                    "not a weft store log (bad magic)".to_string(),
                ));
            }
            if !data.is_empty() {
                tracing::warn!(path = %path.display(), "store log has a torn header; starting empty");
            }
            file.set_len(0).map_err(|e| io_error(path, e))?;
            (&file)
                .seek(SeekFrom::Start(0))
                .map_err(|e| io_error(path, e))?;
            (&file)
                .write_all(LOG_MAGIC)
                .map_err(|e| io_error(path, e))?;
            file.sync_all().map_err(|e| io_error(path, e))?;
            data = LOG_MAGIC.to_vec();
        } else if &data[..LOG_MAGIC.len()] != LOG_MAGIC {
            return Err(corrupt(
                path,
                "not a weft store log (bad magic)".to_string(),
            ));
        }
        sync_dir(path).map_err(|e| io_error(path, e))?;

        let mut replay = Replay::default();
        let end = scan_records(&data, path, |rec| replay.apply(rec))?;
        if end < data.len() {
            tracing::warn!(
                path = %path.display(),
                offset = end,
                dropped_bytes = data.len() - end,
                "truncating torn tail of the store log (crash during a write)"
            );
            file.set_len(end as u64).map_err(|e| io_error(path, e))?;
            file.sync_all().map_err(|e| io_error(path, e))?;
        }
        (&file)
            .seek(SeekFrom::Start(end as u64))
            .map_err(|e| io_error(path, e))?;

        let file = Arc::new(file);
        let log = Log {
            path: path.to_path_buf(),
            file: file.clone(),
            len: end as u64,
            next_compact: 0,
        };
        let state = State::new(Some(log), replay.revision, replay.next_lease, replay.kvs);
        let store = Self::from_state(opts, Some(path.to_path_buf()), state);
        store
            .inner
            .sync
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .file = Some(file);
        store.drop_leased_keys()?;
        Ok(store)
    }

    fn from_state(opts: EmbeddedOptions, path: Option<PathBuf>, mut state: State) -> Self {
        state.live_bytes = LOG_MAGIC.len() as u64
            + META_FRAME_LEN
            + state.kvs.values().map(put_frame_len).sum::<u64>();
        EmbeddedStore {
            inner: Arc::new(Inner {
                opts,
                path,
                state: Mutex::new(state),
                sync: Mutex::new(SyncState {
                    synced: 0,
                    syncing: false,
                    file: None,
                    failed: None,
                }),
                sync_cv: Condvar::new(),
                appended: AtomicU64::new(0),
                fsyncs: AtomicU64::new(0),
            }),
            reaper: Mutex::new(None),
            shutdown: Arc::new(Shutdown::default()),
        }
    }

    /// Deletes the keys a previous run attached to leases (leases do not
    /// survive a restart). Runs before anyone can watch, so no history.
    fn drop_leased_keys(&self) -> StoreResult<()> {
        let mut st = self.inner.state()?;
        let leased: Vec<String> = st
            .kvs
            .values()
            .filter(|kv| kv.lease.is_some())
            .map(|kv| kv.key.clone())
            .collect();
        if leased.is_empty() {
            return Ok(());
        }
        tracing::info!(
            count = leased.len(),
            "deleting keys attached to leases of a previous run"
        );
        for key in &leased {
            st.delete_locked(&self.inner, key)?;
        }
        let target = self.inner.appended.load(Ordering::Acquire);
        drop(st);
        self.inner.wait_durable(target)?;
        let mut st = self.inner.state()?;
        st.pending.clear();
        st.hist_start = st.revision;
        Ok(())
    }

    /// How many fsyncs (`fdatasync` of the log, plus the syncs of compaction)
    /// this store has issued; shows group commit at work.
    pub fn fsync_count(&self) -> u64 {
        self.inner.fsyncs.load(Ordering::Relaxed)
    }

    /// The number of registered watchers (dropped watches are unregistered).
    pub fn watcher_count(&self) -> usize {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .subscribers
            .len()
    }

    /// The current store revision.
    pub fn revision(&self) -> Revision {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .revision
    }

    /// The log file, or `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The size of the log file in bytes (`None` in memory).
    pub fn log_len(&self) -> Option<u64> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .log
            .as_ref()
            .map(|l| l.len)
    }

    /// Rewrites the log as a snapshot of the live data now, whatever its size.
    /// A no-op in memory.
    pub fn compact(&self) -> StoreResult<()> {
        let mut st = self.inner.state()?;
        self.inner.check_failed()?;
        st.compact(&self.inner)
    }

    fn ensure_reaper(&self) -> StoreResult<()> {
        let mut reaper = self.reaper.lock().unwrap_or_else(PoisonError::into_inner);
        if reaper.is_some() {
            return Ok(());
        }
        let weak = Arc::downgrade(&self.inner);
        let shutdown = self.shutdown.clone();
        let interval = self.inner.opts.reap_interval;
        let handle = std::thread::Builder::new()
            .name("weft-store-leases".to_string())
            .spawn(move || reap_loop(weak, shutdown, interval))
            .map_err(|e| StoreError::Unavailable {
                reason: format!("cannot start the lease reaper thread: {e}"),
            })?;
        *reaper = Some(handle);
        Ok(())
    }

    /// Finishes a write: compacts if due, waits until durable, publishes.
    fn finish_write(&self, mut st: MutexGuard<'_, State>) -> StoreResult<()> {
        st.maybe_compact(&self.inner);
        let target = self.inner.appended.load(Ordering::Acquire);
        drop(st);
        self.inner.wait_durable(target)?;
        self.inner.publish_durable();
        Ok(())
    }

    /// Finishes a read: waits until everything it may have seen is durable.
    fn finish_read(&self, st: MutexGuard<'_, State>) -> StoreResult<()> {
        let target = self.inner.appended.load(Ordering::Acquire);
        drop(st);
        self.inner.wait_durable(target)
    }
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

impl Inner {
    fn state(&self) -> StoreResult<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| poisoned())
    }

    fn failed_error(&self, kind: io::ErrorKind, msg: &str) -> StoreError {
        io_error(
            self.path.as_deref().unwrap_or(Path::new("<memory>")),
            io::Error::new(
                kind,
                format!("an earlier write failed ({msg}); reopen the store"),
            ),
        )
    }

    fn check_failed(&self) -> StoreResult<()> {
        let s = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
        match &s.failed {
            Some((kind, msg)) => Err(self.failed_error(*kind, msg)),
            None => Ok(()),
        }
    }

    fn fail(&self, e: &io::Error) {
        let mut s = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
        if s.failed.is_none() {
            tracing::error!(error = %e, "store log write failed; refusing further writes");
            s.failed = Some((e.kind(), e.to_string()));
        }
        self.sync_cv.notify_all();
    }

    /// Blocks until every record with sequence number `<= target` is durable.
    /// Group commit: the first waiter that finds no sync running becomes the
    /// leader and syncs for all records appended so far; the others wait.
    fn wait_durable(&self, target: u64) -> StoreResult<()> {
        let mut s = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some((kind, msg)) = &s.failed {
                return Err(self.failed_error(*kind, msg));
            }
            if s.synced >= target {
                return Ok(());
            }
            if s.syncing {
                s = self.sync_cv.wait(s).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            let Some(file) = s.file.clone() else {
                return Ok(());
            };
            // Everything up to `upto` has been written to `file` (or to a
            // snapshot that replaced it, which is synced already).
            let upto = self.appended.load(Ordering::Acquire);
            s.syncing = true;
            drop(s);
            let result = file.sync_data();
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
            s = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
            s.syncing = false;
            match result {
                Ok(()) => s.synced = s.synced.max(upto),
                Err(e) => {
                    tracing::error!(error = %e, "fdatasync of the store log failed; refusing further writes");
                    s.failed = Some((e.kind(), e.to_string()));
                }
            }
            self.sync_cv.notify_all();
        }
    }

    /// Delivers the events that became durable to watchers and history.
    fn publish_durable(&self) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let synced = self
            .sync
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .synced;
        st.publish(synced, self.opts.history_limit);
    }

    fn expire_leases(&self) -> StoreResult<()> {
        let mut st = self.state()?;
        let now = Instant::now();
        let expired: Vec<LeaseId> = st
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        if expired.is_empty() {
            return Ok(());
        }
        self.check_failed()?;
        for id in expired {
            tracing::debug!(lease = id, "lease expired");
            st.revoke_locked(self, id)?;
        }
        let target = self.appended.load(Ordering::Acquire);
        drop(st);
        self.wait_durable(target)?;
        self.publish_durable();
        Ok(())
    }
}

impl State {
    fn new(
        log: Option<Log>,
        revision: Revision,
        next_lease: LeaseId,
        kvs: BTreeMap<String, KeyValue>,
    ) -> Self {
        State {
            kvs,
            revision,
            leases: HashMap::new(),
            next_lease,
            log,
            live_bytes: 0,
            pending: VecDeque::new(),
            history: VecDeque::new(),
            hist_start: revision,
            subscribers: Vec::new(),
            next_sub: 0,
        }
    }

    fn append(&mut self, inner: &Inner, frame: &[u8]) -> StoreResult<()> {
        if let Some(log) = &mut self.log {
            if let Err(e) = (&*log.file).write_all(frame) {
                inner.fail(&e);
                return Err(io_error(&log.path, e));
            }
            log.len += frame.len() as u64;
            inner.appended.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    fn queue_event(&mut self, inner: &Inner, event: Event) {
        if self.log.is_some() {
            let seq = inner.appended.load(Ordering::Acquire);
            self.pending.push_back((seq, event));
        } else {
            self.deliver(event, inner.opts.history_limit);
        }
    }

    fn publish(&mut self, synced: u64, history_limit: usize) {
        while self.pending.front().is_some_and(|(seq, _)| *seq <= synced) {
            if let Some((_, event)) = self.pending.pop_front() {
                self.deliver(event, history_limit);
            }
        }
    }

    fn deliver(&mut self, event: Event, history_limit: usize) {
        let rev = event.kv.mod_revision;
        self.subscribers.retain(|s| {
            if rev > s.after && event.kv.key.starts_with(&s.prefix) {
                s.tx.send(WatchMessage::Event(event.clone())).is_ok()
            } else {
                true
            }
        });
        self.history.push_back(event);
        while self.history.len() > history_limit {
            if let Some(old) = self.history.pop_front() {
                self.hist_start = old.kv.mod_revision;
            }
        }
    }

    /// Checks that `lease` exists and has not expired.
    fn live_lease(&mut self, lease: LeaseId) -> StoreResult<&mut Lease> {
        match self.leases.get_mut(&lease) {
            Some(l) if l.deadline > Instant::now() => Ok(l),
            _ => Err(StoreError::LeaseNotFound { lease }),
        }
    }

    fn put_locked(&mut self, inner: &Inner, kv: KeyValue) -> StoreResult<()> {
        self.append(inner, &encode_put(&kv))?;
        self.apply_put(inner, kv);
        Ok(())
    }

    fn delete_locked(&mut self, inner: &Inner, key: &str) -> StoreResult<Revision> {
        let rev = self.revision + 1;
        self.append(inner, &encode_delete(key, rev))?;
        self.apply_delete(inner, key, rev);
        Ok(rev)
    }

    /// Logs a transaction's writes as one record, then applies them in
    /// order, all at `rev`. Nothing is applied when the append fails.
    fn txn_locked(
        &mut self,
        inner: &Inner,
        rev: Revision,
        writes: Vec<TxnWrite>,
    ) -> StoreResult<()> {
        self.append(inner, &encode_txn(rev, &writes))?;
        for w in writes {
            match w {
                TxnWrite::Put(kv) => self.apply_put(inner, kv),
                TxnWrite::Delete(key) => self.apply_delete(inner, &key, rev),
            }
        }
        Ok(())
    }

    /// Applies a logged put to the state and queues its event.
    fn apply_put(&mut self, inner: &Inner, kv: KeyValue) {
        if let Some(old) = self.kvs.get(&kv.key) {
            self.live_bytes -= put_frame_len(old);
        }
        self.live_bytes += put_frame_len(&kv);
        if let Some(lease) = kv.lease.and_then(|l| self.leases.get_mut(&l)) {
            lease.keys.insert(kv.key.clone());
        }
        self.revision = kv.mod_revision;
        self.queue_event(
            inner,
            Event {
                kind: EventKind::Put,
                kv: kv.clone(),
            },
        );
        self.kvs.insert(kv.key.clone(), kv);
    }

    /// Applies a logged delete at `rev` to the state and queues its event.
    fn apply_delete(&mut self, inner: &Inner, key: &str, rev: Revision) {
        if let Some(old) = self.kvs.remove(key) {
            self.live_bytes -= put_frame_len(&old);
            if let Some(lease) = old.lease.and_then(|l| self.leases.get_mut(&l)) {
                lease.keys.remove(key);
            }
        }
        self.revision = rev;
        self.queue_event(
            inner,
            Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: key.to_string(),
                    value: Vec::new(),
                    create_revision: 0,
                    mod_revision: rev,
                    lease: None,
                },
            },
        );
    }

    fn revoke_locked(&mut self, inner: &Inner, id: LeaseId) -> StoreResult<()> {
        let Some(lease) = self.leases.remove(&id) else {
            return Err(StoreError::LeaseNotFound { lease: id });
        };
        for key in &lease.keys {
            if self.kvs.get(key).is_some_and(|kv| kv.lease == Some(id)) {
                self.delete_locked(inner, key)?;
            }
        }
        Ok(())
    }

    fn maybe_compact(&mut self, inner: &Inner) {
        let Some(log) = &self.log else {
            return;
        };
        if log.len < inner.opts.compact_min_bytes
            || log.len < log.next_compact
            || log.len < inner.opts.compact_ratio.saturating_mul(self.live_bytes)
        {
            return;
        }
        if let Err(e) = self.compact(inner) {
            tracing::warn!(error = %e, "store log compaction failed; will retry later");
            if let Some(log) = &mut self.log {
                log.next_compact = log.len + inner.opts.compact_min_bytes;
            }
        }
    }

    /// Rewrites the log as a snapshot. Runs under the state lock, so the
    /// snapshot holds every appended record; after the rename, all of them
    /// are durable.
    fn compact(&mut self, inner: &Inner) -> StoreResult<()> {
        let Some(log) = &self.log else {
            return Ok(());
        };
        let path = log.path.clone();
        let tmp = compact_tmp_path(&path);
        let build = || -> io::Result<(File, u64)> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .mode(LOG_MODE)
                .open(&tmp)?;
            // Lock before the rename, so the path is never unlocked.
            file.try_lock().map_err(|e| match e {
                TryLockError::Error(e) => e,
                TryLockError::WouldBlock => io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "compaction file is locked by another process",
                ),
            })?;
            let mut w = BufWriter::with_capacity(1 << 16, &file);
            w.write_all(LOG_MAGIC)?;
            let mut len = LOG_MAGIC.len() as u64;
            let meta = encode_meta(self.revision, self.next_lease);
            w.write_all(&meta)?;
            len += meta.len() as u64;
            for kv in self.kvs.values() {
                let frame = encode_put(kv);
                w.write_all(&frame)?;
                len += frame.len() as u64;
            }
            w.flush()?;
            drop(w);
            file.sync_all()?;
            inner.fsyncs.fetch_add(1, Ordering::Relaxed);
            Ok((file, len))
        };
        let (file, len) = match build() {
            Ok(v) => v,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(io_error(&tmp, e));
            }
        };
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_error(&path, e));
        }
        if let Err(e) = sync_dir(&path) {
            // The rename may or may not survive a crash; both files are
            // complete, but records not yet synced in the old one may be lost.
            inner.fail(&e);
            return Err(io_error(&path, e));
        }
        inner.fsyncs.fetch_add(1, Ordering::Relaxed);
        let old_len = log.len;
        let file = Arc::new(file);
        if let Some(log) = &mut self.log {
            log.file = file.clone();
            log.len = len;
            log.next_compact = 0;
        }
        {
            let mut s = inner.sync.lock().unwrap_or_else(PoisonError::into_inner);
            s.file = Some(file);
            s.synced = s.synced.max(inner.appended.load(Ordering::Acquire));
            inner.sync_cv.notify_all();
        }
        tracing::info!(path = %path.display(), old_len, new_len = len, "compacted store log");
        Ok(())
    }
}

impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        validate_key(key)?;
        let st = self.inner.state()?;
        let kv = st.kvs.get(key).cloned();
        self.finish_read(st)?;
        Ok(kv)
    }

    fn list(&self, prefix: &str) -> StoreResult<Listing> {
        let st = self.inner.state()?;
        let kvs: Vec<KeyValue> = st
            .kvs
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        let revision = st.revision;
        self.finish_read(st)?;
        Ok(Listing { kvs, revision })
    }

    fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> StoreResult<Result<Revision, Conflict>> {
        validate_key(key)?;
        check_value(key, value)?;
        let mut st = self.inner.state()?;
        self.inner.check_failed()?;
        if let Some(current) = st.kvs.get(key) {
            let conflict = Conflict {
                current: Some(current.clone()),
            };
            self.finish_read(st)?;
            return Ok(Err(conflict));
        }
        if let Some(lease) = lease {
            st.live_lease(lease)?;
        }
        let rev = st.revision + 1;
        let kv = KeyValue {
            key: key.to_string(),
            value: value.to_vec(),
            create_revision: rev,
            mod_revision: rev,
            lease,
        };
        st.put_locked(&self.inner, kv)?;
        self.finish_write(st)?;
        Ok(Ok(rev))
    }

    fn update(
        &self,
        key: &str,
        value: &[u8],
        expected: Revision,
    ) -> StoreResult<Result<Revision, Conflict>> {
        validate_key(key)?;
        check_value(key, value)?;
        let mut st = self.inner.state()?;
        self.inner.check_failed()?;
        let current = st.kvs.get(key);
        let Some(current) = current.filter(|kv| kv.mod_revision == expected) else {
            let conflict = Conflict {
                current: current.cloned(),
            };
            self.finish_read(st)?;
            return Ok(Err(conflict));
        };
        let rev = st.revision + 1;
        let kv = KeyValue {
            key: key.to_string(),
            value: value.to_vec(),
            create_revision: current.create_revision,
            mod_revision: rev,
            lease: current.lease,
        };
        st.put_locked(&self.inner, kv)?;
        self.finish_write(st)?;
        Ok(Ok(rev))
    }

    fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> StoreResult<Result<Option<Revision>, Conflict>> {
        validate_key(key)?;
        let mut st = self.inner.state()?;
        self.inner.check_failed()?;
        let current = st.kvs.get(key);
        match (current, expected) {
            (None, None) => {
                self.finish_read(st)?;
                return Ok(Ok(None));
            }
            (Some(kv), Some(rev)) if kv.mod_revision == rev => {}
            (Some(_), None) => {}
            (current, Some(_)) => {
                let conflict = Conflict {
                    current: current.cloned(),
                };
                self.finish_read(st)?;
                return Ok(Err(conflict));
            }
        }
        let rev = st.delete_locked(&self.inner, key)?;
        self.finish_write(st)?;
        Ok(Ok(Some(rev)))
    }

    fn commit(&self, ops: &[TxnOp<'_>]) -> StoreResult<Result<Revision, TxnConflict>> {
        validate_txn(ops)?;
        let mut st = self.inner.state()?;
        self.inner.check_failed()?;
        for (index, op) in ops.iter().enumerate() {
            let current = st.kvs.get(op.key());
            let holds = match *op {
                TxnOp::Create { .. } => current.is_none(),
                TxnOp::Update { expected, .. }
                | TxnOp::Delete {
                    expected: Some(expected),
                    ..
                } => current.is_some_and(|kv| kv.mod_revision == expected),
                TxnOp::Put { .. } | TxnOp::Delete { expected: None, .. } => true,
            };
            if !holds {
                let conflict = TxnConflict {
                    index,
                    current: current.cloned(),
                };
                self.finish_read(st)?;
                return Ok(Err(conflict));
            }
        }
        for op in ops {
            if let TxnOp::Create {
                lease: Some(lease), ..
            } = *op
            {
                st.live_lease(lease)?;
            }
        }
        let rev = st.revision + 1;
        let mut writes = Vec::with_capacity(ops.len());
        for op in ops {
            match *op {
                TxnOp::Create { key, value, lease } => writes.push(TxnWrite::Put(KeyValue {
                    key: key.to_string(),
                    value: value.to_vec(),
                    create_revision: rev,
                    mod_revision: rev,
                    lease,
                })),
                TxnOp::Update { key, value, .. } => {
                    let (create_revision, lease) = st
                        .kvs
                        .get(key)
                        .map(|kv| (kv.create_revision, kv.lease))
                        .unwrap_or((rev, None));
                    writes.push(TxnWrite::Put(KeyValue {
                        key: key.to_string(),
                        value: value.to_vec(),
                        create_revision,
                        mod_revision: rev,
                        lease,
                    }));
                }
                TxnOp::Put { key, value } => {
                    // No lease: an old key's lease is not kept (as etcd).
                    let create_revision = st.kvs.get(key).map_or(rev, |kv| kv.create_revision);
                    writes.push(TxnWrite::Put(KeyValue {
                        key: key.to_string(),
                        value: value.to_vec(),
                        create_revision,
                        mod_revision: rev,
                        lease: None,
                    }));
                }
                TxnOp::Delete { key, .. } => {
                    if st.kvs.contains_key(key) {
                        writes.push(TxnWrite::Delete(key.to_string()));
                    }
                }
            }
        }
        if writes.is_empty() {
            // Only unconditional deletes of missing keys: nothing to write.
            let current = st.revision;
            self.finish_read(st)?;
            return Ok(Ok(current));
        }
        st.txn_locked(&self.inner, rev, writes)?;
        self.finish_write(st)?;
        Ok(Ok(rev))
    }

    fn watch(&self, prefix: &str, after: Revision) -> StoreResult<Watch> {
        let (tx, rx) = channel();
        let mut st = self.inner.state()?;
        if after < st.hist_start {
            let _ = tx.send(WatchMessage::Compacted {
                compact_revision: st.hist_start,
            });
            return Ok(Watch {
                rx,
                guard: Box::new(()),
            });
        }
        for event in &st.history {
            if event.kv.mod_revision > after && event.kv.key.starts_with(prefix) {
                let _ = tx.send(WatchMessage::Event(event.clone()));
            }
        }
        let id = st.next_sub;
        st.next_sub += 1;
        st.subscribers.push(Subscriber {
            id,
            prefix: prefix.to_string(),
            after,
            tx,
        });
        Ok(Watch {
            rx,
            guard: Box::new(WatchGuard {
                inner: Arc::downgrade(&self.inner),
                id,
            }),
        })
    }

    fn grant_lease(&self, ttl: Duration) -> StoreResult<LeaseId> {
        if ttl.is_zero() {
            return Err(StoreError::Invalid {
                reason: "lease ttl must be positive".to_string(),
            });
        }
        self.ensure_reaper()?;
        let mut st = self.inner.state()?;
        self.inner.check_failed()?;
        let id = st.next_lease;
        st.append(&self.inner, &encode_lease(id))?;
        st.next_lease += 1;
        st.leases.insert(
            id,
            Lease {
                ttl,
                deadline: Instant::now() + ttl,
                keys: BTreeSet::new(),
            },
        );
        self.finish_write(st)?;
        Ok(id)
    }

    fn keep_alive(&self, lease: LeaseId) -> StoreResult<()> {
        let mut st = self.inner.state()?;
        let l = st.live_lease(lease)?;
        l.deadline = Instant::now() + l.ttl;
        Ok(())
    }

    fn revoke_lease(&self, lease: LeaseId) -> StoreResult<()> {
        let mut st = self.inner.state()?;
        self.inner.check_failed()?;
        st.live_lease(lease)?;
        st.revoke_locked(&self.inner, lease)?;
        self.finish_write(st)
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

// ---------------------------------------------------------------------------
// Records

enum Record {
    Put(KeyValue),
    Delete {
        key: String,
        revision: Revision,
    },
    Lease {
        id: LeaseId,
    },
    Meta {
        revision: Revision,
        next_lease: LeaseId,
    },
    Txn {
        revision: Revision,
        writes: Vec<TxnWrite>,
    },
}

/// One write inside a txn record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TxnWrite {
    /// The key's new state (its `mod_revision` is the txn's revision).
    Put(KeyValue),
    Delete(String),
}

struct Replay {
    kvs: BTreeMap<String, KeyValue>,
    revision: Revision,
    next_lease: LeaseId,
}

impl Default for Replay {
    fn default() -> Self {
        Replay {
            kvs: BTreeMap::new(),
            revision: 0,
            // Lease ids start at 1: 0 encodes "no lease" in put records.
            next_lease: 1,
        }
    }
}

impl Replay {
    fn put(&mut self, kv: KeyValue) {
        self.revision = self.revision.max(kv.mod_revision);
        if let Some(l) = kv.lease {
            self.next_lease = self.next_lease.max(l + 1);
        }
        self.kvs.insert(kv.key.clone(), kv);
    }

    fn delete(&mut self, key: &str, revision: Revision) {
        self.revision = self.revision.max(revision);
        self.kvs.remove(key);
    }

    fn apply(&mut self, rec: Record) {
        match rec {
            Record::Put(kv) => self.put(kv),
            Record::Delete { key, revision } => self.delete(&key, revision),
            Record::Txn { revision, writes } => {
                for w in writes {
                    match w {
                        TxnWrite::Put(kv) => self.put(kv),
                        TxnWrite::Delete(key) => self.delete(&key, revision),
                    }
                }
                self.revision = self.revision.max(revision);
            }
            Record::Lease { id } => self.next_lease = self.next_lease.max(id + 1),
            Record::Meta {
                revision,
                next_lease,
            } => {
                self.revision = self.revision.max(revision);
                self.next_lease = self.next_lease.max(next_lease).max(1);
            }
        }
    }
}

/// CRC-32 (IEEE 802.3, the one of zlib and gzip). crc32fast uses the CPU's
/// carry-less multiply where it has one: every record of every write is
/// checksummed, and a full block record is ~18 KB.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

fn put_frame_len(kv: &KeyValue) -> u64 {
    (FRAME_HEADER + 1 + 24 + 4 + kv.key.len() + 4 + kv.value.len()) as u64
}

fn new_frame(payload_len: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(FRAME_HEADER + payload_len);
    buf.resize(FRAME_HEADER, 0);
    buf
}

fn seal_frame(mut buf: Vec<u8>) -> Vec<u8> {
    let len = (buf.len() - FRAME_HEADER) as u32;
    let crc = crc32(&buf[FRAME_HEADER..]);
    buf[0..4].copy_from_slice(&len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc32(&len.to_le_bytes()).to_le_bytes());
    buf[8..12].copy_from_slice(&crc.to_le_bytes());
    buf
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
    buf.extend_from_slice(b);
}

fn encode_put(kv: &KeyValue) -> Vec<u8> {
    let mut buf = new_frame(put_frame_len(kv) as usize - FRAME_HEADER);
    buf.push(OP_PUT);
    buf.extend_from_slice(&kv.mod_revision.to_le_bytes());
    buf.extend_from_slice(&kv.create_revision.to_le_bytes());
    buf.extend_from_slice(&kv.lease.unwrap_or(0).to_le_bytes());
    put_bytes(&mut buf, kv.key.as_bytes());
    put_bytes(&mut buf, &kv.value);
    seal_frame(buf)
}

fn encode_delete(key: &str, revision: Revision) -> Vec<u8> {
    let mut buf = new_frame(1 + 8 + 4 + key.len());
    buf.push(OP_DELETE);
    buf.extend_from_slice(&revision.to_le_bytes());
    put_bytes(&mut buf, key.as_bytes());
    seal_frame(buf)
}

fn txn_frame_len(writes: &[TxnWrite]) -> usize {
    let body: usize = writes
        .iter()
        .map(|w| match w {
            TxnWrite::Put(kv) => 1 + 8 + 8 + 4 + kv.key.len() + 4 + kv.value.len(),
            TxnWrite::Delete(key) => 1 + 4 + key.len(),
        })
        .sum();
    FRAME_HEADER + 1 + 8 + 4 + body
}

fn encode_txn(revision: Revision, writes: &[TxnWrite]) -> Vec<u8> {
    let mut buf = new_frame(txn_frame_len(writes) - FRAME_HEADER);
    buf.push(OP_TXN);
    buf.extend_from_slice(&revision.to_le_bytes());
    buf.extend_from_slice(&(writes.len() as u32).to_le_bytes());
    for w in writes {
        match w {
            TxnWrite::Put(kv) => {
                buf.push(TXN_PUT);
                buf.extend_from_slice(&kv.create_revision.to_le_bytes());
                buf.extend_from_slice(&kv.lease.unwrap_or(0).to_le_bytes());
                put_bytes(&mut buf, kv.key.as_bytes());
                put_bytes(&mut buf, &kv.value);
            }
            TxnWrite::Delete(key) => {
                buf.push(TXN_DELETE);
                put_bytes(&mut buf, key.as_bytes());
            }
        }
    }
    seal_frame(buf)
}

fn encode_lease(id: LeaseId) -> Vec<u8> {
    let mut buf = new_frame(9);
    buf.push(OP_LEASE);
    buf.extend_from_slice(&id.to_le_bytes());
    seal_frame(buf)
}

fn encode_meta(revision: Revision, next_lease: LeaseId) -> Vec<u8> {
    let mut buf = new_frame(17);
    buf.push(OP_META);
    buf.extend_from_slice(&revision.to_le_bytes());
    buf.extend_from_slice(&next_lease.to_le_bytes());
    seal_frame(buf)
}

struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        std::str::from_utf8(self.bytes()?).ok().map(str::to_string)
    }
}

fn decode(payload: &[u8]) -> Option<Record> {
    let mut c = Cursor { b: payload };
    let rec = match c.u8()? {
        OP_PUT => {
            let mod_revision = c.u64()?;
            let create_revision = c.u64()?;
            let lease = c.u64()?;
            let key = c.string()?;
            let value = c.bytes()?.to_vec();
            Record::Put(KeyValue {
                key,
                value,
                create_revision,
                mod_revision,
                lease: (lease != 0).then_some(lease),
            })
        }
        OP_DELETE => {
            let revision = c.u64()?;
            let key = c.string()?;
            Record::Delete { key, revision }
        }
        OP_LEASE => Record::Lease { id: c.u64()? },
        OP_META => Record::Meta {
            revision: c.u64()?,
            next_lease: c.u64()?,
        },
        OP_TXN => {
            let revision = c.u64()?;
            let count = c.u32()? as usize;
            // Every write takes at least 5 bytes: never trust `count` for
            // an allocation beyond what the payload can hold.
            let mut writes = Vec::with_capacity(count.min(c.b.len() / 5));
            for _ in 0..count {
                let w = match c.u8()? {
                    TXN_PUT => {
                        let create_revision = c.u64()?;
                        let lease = c.u64()?;
                        let key = c.string()?;
                        let value = c.bytes()?.to_vec();
                        TxnWrite::Put(KeyValue {
                            key,
                            value,
                            create_revision,
                            mod_revision: revision,
                            lease: (lease != 0).then_some(lease),
                        })
                    }
                    TXN_DELETE => TxnWrite::Delete(c.string()?),
                    _ => return None,
                };
                writes.push(w);
            }
            Record::Txn { revision, writes }
        }
        _ => return None,
    };
    c.b.is_empty().then_some(rec)
}

/// The length of the valid frame at `off`, if there is one.
fn valid_frame(data: &[u8], off: usize) -> Option<usize> {
    let header = data.get(off..off + FRAME_HEADER)?;
    let len_bytes: [u8; 4] = header[0..4].try_into().ok()?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    let len_crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if len == 0 || crc32(&len_bytes) != len_crc {
        return None;
    }
    let crc = u32::from_le_bytes(header[8..12].try_into().ok()?);
    let payload = data.get(off + FRAME_HEADER..(off + FRAME_HEADER).checked_add(len)?)?;
    (crc32(payload) == crc).then_some(FRAME_HEADER + len)
}

/// Replays the records of `data` (which starts with the magic) into `apply`
/// and returns where the valid log ends. A damaged record followed by any
/// valid record is corruption; one followed by nothing valid is a torn tail.
fn scan_records(data: &[u8], path: &Path, mut apply: impl FnMut(Record)) -> StoreResult<usize> {
    let mut off = LOG_MAGIC.len();
    while off < data.len() {
        let Some(n) = valid_frame(data, off) else {
            if let Some(next) = (off + 1..data.len()).find(|&q| valid_frame(data, q).is_some()) {
                return Err(corrupt(
                    path,
                    format!("damaged record at offset {off} followed by a valid record at offset {next}"),
                ));
            }
            return Ok(off);
        };
        let Some(rec) = decode(&data[off + FRAME_HEADER..off + n]) else {
            return Err(corrupt(
                path,
                format!("undecodable record at offset {off} (checksum ok)"),
            ));
        };
        apply(rec);
        off += n;
    }
    Ok(off)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn frames_roundtrip() {
        let kv = KeyValue {
            key: "a/b".to_string(),
            value: b"hello".to_vec(),
            create_revision: 3,
            mod_revision: 7,
            lease: Some(9),
        };
        let frame = encode_put(&kv);
        assert_eq!(frame.len() as u64, put_frame_len(&kv));
        assert_eq!(valid_frame(&frame, 0), Some(frame.len()));
        match decode(&frame[FRAME_HEADER..]) {
            Some(Record::Put(got)) => assert_eq!(got, kv),
            _ => panic!("put did not roundtrip"),
        }
        assert_eq!(encode_meta(1, 2).len() as u64, META_FRAME_LEN);
        let writes = vec![
            TxnWrite::Put(KeyValue {
                mod_revision: 11,
                ..kv.clone()
            }),
            TxnWrite::Delete("gone".to_string()),
            TxnWrite::Put(KeyValue {
                key: "c".to_string(),
                value: Vec::new(),
                create_revision: 11,
                mod_revision: 11,
                lease: None,
            }),
        ];
        let frame = encode_txn(11, &writes);
        assert_eq!(frame.len(), txn_frame_len(&writes));
        assert_eq!(valid_frame(&frame, 0), Some(frame.len()));
        match decode(&frame[FRAME_HEADER..]) {
            Some(Record::Txn {
                revision,
                writes: got,
            }) => {
                assert_eq!(revision, 11);
                assert_eq!(got, writes);
            }
            _ => panic!("txn did not roundtrip"),
        }
        // A count larger than the writes present does not decode.
        let mut payload = frame[FRAME_HEADER..].to_vec();
        payload[9..13].copy_from_slice(&4u32.to_le_bytes());
        assert!(decode(&payload).is_none());
        let frame = encode_delete("k", 5);
        assert!(matches!(
            decode(&frame[FRAME_HEADER..]),
            Some(Record::Delete { ref key, revision: 5 }) if key == "k"
        ));
    }
}
