//! The store's state under its lock: appending to the log, applying
//! writes, leases, watchers, compaction; and the durability bookkeeping
//! shared by every writer (`Inner`).

use super::*;

impl Inner {
    pub(super) fn state(&self) -> StoreResult<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| poisoned())
    }

    pub(super) fn failed_error(&self, kind: io::ErrorKind, msg: &str) -> StoreError {
        io_error(
            self.path.as_deref().unwrap_or(Path::new("<memory>")),
            io::Error::new(
                kind,
                format!("an earlier write failed ({msg}); reopen the store"),
            ),
        )
    }

    pub(super) fn check_failed(&self) -> StoreResult<()> {
        let s = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
        match &s.failed {
            Some((kind, msg)) => Err(self.failed_error(*kind, msg)),
            None => Ok(()),
        }
    }

    pub(super) fn fail(&self, e: &io::Error) {
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
    pub(super) fn wait_durable(&self, target: u64) -> StoreResult<()> {
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
    pub(super) fn publish_durable(&self) {
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

    pub(super) fn expire_leases(&self) -> StoreResult<()> {
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
    pub(super) fn new(
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

    pub(super) fn append(&mut self, inner: &Inner, frame: &[u8]) -> StoreResult<()> {
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

    pub(super) fn queue_event(&mut self, inner: &Inner, event: Event) {
        if self.log.is_some() {
            let seq = inner.appended.load(Ordering::Acquire);
            self.pending.push_back((seq, event));
        } else {
            self.deliver(event, inner.opts.history_limit);
        }
    }

    pub(super) fn publish(&mut self, synced: u64, history_limit: usize) {
        while self.pending.front().is_some_and(|(seq, _)| *seq <= synced) {
            if let Some((_, event)) = self.pending.pop_front() {
                self.deliver(event, history_limit);
            }
        }
    }

    pub(super) fn deliver(&mut self, event: Event, history_limit: usize) {
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
    pub(super) fn live_lease(&mut self, lease: LeaseId) -> StoreResult<&mut Lease> {
        match self.leases.get_mut(&lease) {
            Some(l) if l.deadline > Instant::now() => Ok(l),
            _ => Err(StoreError::LeaseNotFound { lease }),
        }
    }

    pub(super) fn put_locked(&mut self, inner: &Inner, kv: KeyValue) -> StoreResult<()> {
        self.append(inner, &encode_put(&kv))?;
        self.apply_put(inner, kv);
        Ok(())
    }

    pub(super) fn delete_locked(&mut self, inner: &Inner, key: &str) -> StoreResult<Revision> {
        let rev = self.revision + 1;
        self.append(inner, &encode_delete(key, rev))?;
        self.apply_delete(inner, key, rev);
        Ok(rev)
    }

    /// Logs a transaction's writes as one record, then applies them in
    /// order, all at `rev`. Nothing is applied when the append fails.
    pub(super) fn txn_locked(
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
    pub(super) fn apply_put(&mut self, inner: &Inner, kv: KeyValue) {
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
    pub(super) fn apply_delete(&mut self, inner: &Inner, key: &str, rev: Revision) {
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

    pub(super) fn revoke_locked(&mut self, inner: &Inner, id: LeaseId) -> StoreResult<()> {
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

    pub(super) fn maybe_compact(&mut self, inner: &Inner) {
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
    pub(super) fn compact(&mut self, inner: &Inner) -> StoreResult<()> {
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
