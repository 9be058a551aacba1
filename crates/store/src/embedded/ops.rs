//! The `Store` trait over the state: reads, writes, transactions, leases,
//! watches.

use super::*;

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
