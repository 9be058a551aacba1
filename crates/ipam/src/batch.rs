//! `allocate` and group commit: concurrent allocations queue up, one caller
//! leads the batch, plans every request against the cache and writes all
//! their block changes in one store commit.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use weft_store::{Revision, StoreError, TxnConflict, TxnOp};

use crate::state::{route_change, Cached, Change, State};
use crate::types::{AllocRequest, Allocated, AllocationAttrs};
use crate::{Family, Ipam, IpamError, MAX_ATTEMPTS};

/// Most allocations one batch plans and commits together.
pub(crate) const MAX_BATCH: usize = 256;

/// A validated allocation request, waiting in a batch.
pub(crate) struct Request {
    pub(crate) attrs: AllocationAttrs,
    pub(crate) handle: String,
    /// Per family: wanted, and the static address asked for.
    pub(crate) wanted: [(Family, bool, Option<IpAddr>); 2],
}

/// Checks an allocation request and puts it in the shape a batch plans.
pub(crate) fn prepare(attrs: &AllocationAttrs, req: &AllocRequest) -> Result<Request, IpamError> {
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
pub(crate) struct Slot {
    pub(crate) state: Mutex<SlotState>,
    pub(crate) cv: Condvar,
}

impl Slot {
    pub(crate) fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
pub(crate) enum SlotState {
    #[default]
    Waiting,
    /// The caller is the batch leader now.
    Lead,
    Done(Result<Vec<Allocated>, IpamError>),
}

/// The allocations waiting for the next batch.
#[derive(Default)]
pub(crate) struct Queue {
    pub(crate) pending: Vec<(Request, Arc<Slot>)>,
    /// A caller is leading (or about to lead) a batch.
    pub(crate) leader: bool,
}

/// One error of a batch, for each of its callers.
pub(crate) fn dup_error(e: &IpamError) -> IpamError {
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

impl Ipam {
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
    pub(crate) fn lead(&self) {
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
    pub(crate) fn run_batch(
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
            match self.commit_local(st, &pending) {
                Ok(true) => {
                    self.unstage(st, false);
                    return results;
                }
                Ok(false) => {}
                Err(e) => {
                    self.unstage(st, true);
                    return reqs.iter().map(|_| Err(dup_error(&e))).collect();
                }
            }
            let mut changes = Vec::with_capacity(pending.len());
            let mut failed = None;
            for (key, (rev, claims)) in pending {
                let Some(c) = st.cached(&key) else { continue };
                let mut rec = c.rec.clone();
                // with a journal, the node's own blocks take the mark that
                // lets its next allocations in them go to the journal
                rec.local |= self.journaling() && self.is_mine(&rec);
                match Change::new(key, rec, rev, claims) {
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
    pub(crate) fn stage(
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
    pub(crate) fn unstage(&self, st: &mut State, restore: bool) {
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

    /// Writes `changes` in one atomic commit. On success the cache takes the
    /// new records; when a condition failed, the cache takes the current
    /// state of that key, and `Ok(Err(key))` names it.
    ///
    /// The route summaries of the blocks whose routing changes go into the
    /// same commit (after the block ops: they have no condition, so a
    /// conflict index always names a block).
    pub(crate) fn write(
        &self,
        st: &mut State,
        changes: Vec<Change>,
    ) -> Result<Result<(), String>, IpamError> {
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
        let sent = self.clock.now_ms();
        let res = self.store.commit(&ops)?;
        self.gate.store_answered(sent);
        drop(ops);
        match res {
            Ok(rev) => {
                // every record written held all its journaled allocations
                // (written from the cache, which holds them)
                let written: Vec<String> = changes
                    .iter()
                    .filter(|c| st.local.contains_key(&c.key))
                    .map(|c| c.key.clone())
                    .collect();
                self.forget_local(st, &written);
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
}
