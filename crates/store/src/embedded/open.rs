//! Opening a store (replaying its log, or starting one), its accessors,
//! and the end of every read and write (durability, the reaper).

use super::*;

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

        let replay = replay_log(&data, path)?;
        let end = replay.end;
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

    pub(super) fn from_state(
        opts: EmbeddedOptions,
        path: Option<PathBuf>,
        mut state: State,
    ) -> Self {
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
    pub(super) fn drop_leased_keys(&self) -> StoreResult<()> {
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

    pub(super) fn ensure_reaper(&self) -> StoreResult<()> {
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
    pub(super) fn finish_write(&self, mut st: MutexGuard<'_, State>) -> StoreResult<()> {
        st.maybe_compact(&self.inner);
        let target = self.inner.appended.load(Ordering::Acquire);
        drop(st);
        self.inner.wait_durable(target)?;
        self.inner.publish_durable();
        Ok(())
    }

    /// Finishes a read: waits until everything it may have seen is durable.
    pub(super) fn finish_read(&self, st: MutexGuard<'_, State>) -> StoreResult<()> {
        let target = self.inner.appended.load(Ordering::Acquire);
        drop(st);
        self.inner.wait_durable(target)
    }
}
