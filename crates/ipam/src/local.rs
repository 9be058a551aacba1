//! Local allocations: a node's allocations in its own blocks recorded in
//! its local journal (durable before `allocate` returns) and written to the
//! shared store later, in one commit per flush. See the crate docs, "Local
//! allocations", for what this keeps and why.

use std::collections::BTreeMap;
use weft_store::{Revision, StoreError, TxnOp};

use crate::gate::GateState;
use crate::record::BLOCKS_PREFIX;
use crate::state::{Change, State};
use crate::{ms, Ipam, IpamError, MAX_ATTEMPTS};

/// The journal's keys: `<prefix><escaped block cidr>/<ordinal>`, each an
/// [`Allocation`] as JSON (the store's compact form, `node` never set).
pub const JOURNAL_PREFIX: &str = "/weft/ipam/local/v1/";

/// The journal key of `ordinal` in the block stored under `block_key`.
pub fn journal_key(block_key: &str, ordinal: u32) -> String {
    let block = block_key.strip_prefix(BLOCKS_PREFIX).unwrap_or(block_key);
    format!("{JOURNAL_PREFIX}{block}/{ordinal}")
}

/// The block key and ordinal a journal key names.
fn parse_journal_key(key: &str) -> Option<(String, u32)> {
    let (block, ordinal) = key.strip_prefix(JOURNAL_PREFIX)?.rsplit_once('/')?;
    Some((format!("{BLOCKS_PREFIX}{block}"), ordinal.parse().ok()?))
}

fn journal_error(e: serde_json::Error) -> IpamError {
    IpamError::Store(StoreError::Invalid {
        reason: format!("cannot encode a journal entry: {e}"),
    })
}

impl Ipam {
    /// Reads the journal into `st.local` (at start, before the first
    /// listing of the store, which lays them over the blocks).
    pub(crate) fn load_journal(&self, st: &mut State) -> Result<(), IpamError> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        for kv in journal.list(JOURNAL_PREFIX)?.kvs {
            let parsed = parse_journal_key(&kv.key)
                .and_then(|(b, o)| Some((b, o, serde_json::from_slice(&kv.value).ok()?)));
            match parsed {
                Some((block, ordinal, a)) => {
                    st.local.entry(block).or_default().insert(ordinal, a);
                }
                None => {
                    tracing::warn!(key = %kv.key, "dropping an undecodable ipam journal entry");
                    st.journal_garbage.push(kv.key);
                }
            }
        }
        Ok(())
    }

    /// Lays this node's journaled allocations of block `key` over the
    /// record just cached from the store. An allocation the store has
    /// already (same ordinal, same handle) was flushed: it leaves the
    /// journal. One whose ordinal the store shows released after it was
    /// made (quarantined until after the allocation was made), or
    /// held by another handle, or in a block that is not this node's any
    /// more (collected as a gone node's), is dropped with a log line: the
    /// store's word wins.
    pub(crate) fn overlay_local(&self, st: &mut State, key: &str) {
        let Some(local) = st.local.remove(key) else {
            return;
        };
        let Some(c) = st.blocks.get_mut(key) else {
            tracing::error!(block = %key, addresses = local.len(),
                "this node's block was taken from it (collected as a gone node's) while it held unflushed allocations in it; they are dropped");
            st.journal_garbage
                .extend(local.keys().map(|&o| crate::local::journal_key(key, o)));
            return;
        };
        let mut kept = BTreeMap::new();
        for (o, a) in local {
            let gone = match c.rec.allocations.get(&o) {
                Some(b) if b.handle == a.handle => true,
                Some(b) => {
                    // a journal entry left by a crash after its flush, whose
                    // address was released and handed out again since
                    tracing::warn!(address = %c.rec.addr(o), journal = %a.handle, store = %b.handle,
                        "the store holds another handle where the ipam journal has one; the store's wins");
                    true
                }
                None => c
                    .rec
                    .quarantine
                    .get(&o)
                    .is_some_and(|&until| until > a.allocated_at_ms),
            };
            if gone {
                st.journal_garbage.push(journal_key(key, o));
                continue;
            }
            c.rec.quarantine.remove(&o);
            c.rec.allocations.insert(o, a.clone());
            c.rec.emptied_at_ms = None;
            kept.insert(o, a);
        }
        if !kept.is_empty() {
            st.local.insert(key.to_string(), kept);
        }
    }

    /// Writes a planned batch to the journal instead of the store when every
    /// change it makes is a new allocation in a block of this node that is
    /// marked `lo` in the store at the revision the plan was made on (no
    /// claim, no borrow, no routing change), the gate is open (the node's
    /// lease alive with a margin, the store answering) and a read of each
    /// block shows the store still at that revision. Returns whether it
    /// did; on `true` the staged records stay cached as they are. A failed
    /// read fails the batch as the store write would have.
    pub(crate) fn commit_local(
        &self,
        st: &mut State,
        pending: &BTreeMap<String, (Revision, bool)>,
    ) -> Result<bool, IpamError> {
        let Some(journal) = self.journal.as_ref().filter(|_| self.journaling()) else {
            return Ok(false);
        };
        let gate = self.gate.state(self.clock.now_ms());
        if gate != GateState::Open {
            tracing::debug!(?gate, "ipam journal closed; the batch goes to the store");
            return Ok(false);
        }
        let mut new = Vec::new();
        for (key, &(rev, claims)) in pending {
            let (Some((Some(before), None)), Some(after)) =
                (st.staged.get(key), st.blocks.get(key))
            else {
                return Ok(false);
            };
            if claims
                || rev == 0
                || before.rev != rev
                || !before.rec.local
                || !before.rec.same_routes(&after.rec)
                || before
                    .rec
                    .allocations
                    .iter()
                    .any(|(o, a)| after.rec.allocations.get(o) != Some(a))
            {
                return Ok(false);
            }
            for (&o, a) in &after.rec.allocations {
                if !before.rec.allocations.contains_key(&o) {
                    new.push((key.clone(), o, a.clone()));
                }
            }
        }
        if !self.still_at_planned_revisions(pending)? {
            return Ok(false);
        }
        let values = new
            .iter()
            .map(|(k, o, a)| {
                Ok((
                    journal_key(k, *o),
                    serde_json::to_vec(a).map_err(journal_error)?,
                ))
            })
            .collect::<Result<Vec<_>, IpamError>>()?;
        let garbage = std::mem::take(&mut st.journal_garbage);
        let ops: Vec<TxnOp<'_>> = values
            .iter()
            .map(|(key, value)| TxnOp::Put { key, value })
            .chain(garbage.iter().map(|key| TxnOp::Delete {
                key,
                expected: None,
            }))
            .collect();
        if let Err(e) = journal.commit(&ops) {
            st.journal_garbage = garbage;
            return Err(e.into());
        }
        let now = self.clock.now_ms();
        for (key, o, a) in new {
            st.local_last.insert(key.clone(), now);
            st.local.entry(key).or_default().insert(o, a);
        }
        Ok(true)
    }

    /// Whether the store shows every block of `pending` at the revision
    /// the batch was planned on: the store is there now (an ADD while it
    /// is unreachable fails, however recently it answered), and no other
    /// node changed the block (a gone node's collection, a borrow racing
    /// the mark). One linearizable read per block.
    fn still_at_planned_revisions(
        &self,
        pending: &BTreeMap<String, (Revision, bool)>,
    ) -> Result<bool, IpamError> {
        for (key, &(rev, _)) in pending {
            let sent = self.clock.now_ms();
            let current = self.store.get(key)?;
            self.gate.store_answered(sent);
            if current.is_none_or(|kv| kv.mod_revision != rev) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether new allocations may go to the journal: with one, unless
    /// this node lends and borrows addresses with a block limit
    /// (`max_blocks_per_node` without `strict_affinity`), where other nodes
    /// borrowing from its blocks is the expected way to run, not a last
    /// resort: marked blocks would shut them out.
    pub(crate) fn journaling(&self) -> bool {
        self.journal.is_some()
            && (self.cfg.strict_affinity || self.cfg.max_blocks_per_node.is_none())
    }

    /// After a successful store write of blocks `keys` (whose records held
    /// every journaled allocation of theirs): they leave the journal.
    pub(crate) fn forget_local(&self, st: &mut State, keys: &[String]) {
        let Some(journal) = &self.journal else {
            return;
        };
        for key in keys {
            if let Some(local) = st.local.remove(key) {
                st.journal_garbage
                    .extend(local.keys().map(|&o| journal_key(key, o)));
            }
        }
        if st.journal_garbage.is_empty() {
            return;
        }
        let garbage = std::mem::take(&mut st.journal_garbage);
        let ops: Vec<TxnOp<'_>> = garbage
            .iter()
            .map(|key| TxnOp::Delete {
                key,
                expected: None,
            })
            .collect();
        // A failed delete only leaves entries the store has already; the
        // next start drops them (same handle) or the next write retries.
        if let Err(e) = journal.commit(&ops) {
            tracing::warn!(error = %e, "cannot trim the ipam journal; trying again with its next write");
            st.journal_garbage = garbage;
        }
    }

    /// Writes every journaled allocation of this node to the store (one
    /// commit for all its blocks, retried on a lost condition against the
    /// fresh records, the journal laid over them again), and clears the `lo`
    /// mark of blocks idle for `local_idle`. Returns how many allocations
    /// it wrote. Without a journal, or with nothing to write, it writes
    /// nothing.
    pub fn flush(&self) -> Result<usize, IpamError> {
        if self.journal.is_none() {
            return Ok(0);
        }
        let mut st = self.lock();
        let mut attempts = 0;
        loop {
            let now = self.clock.now_ms();
            let idle = ms(self.cfg.local_idle);
            // a block seen marked for the first time (since the start)
            // counts as used now
            let unseen: Vec<String> = st
                .blocks
                .iter()
                .filter(|(k, c)| c.rec.local && !st.local_last.contains_key(*k))
                .map(|(k, _)| k.clone())
                .collect();
            for k in unseen {
                st.local_last.insert(k, now);
            }
            let mut changes = Vec::new();
            let mut count = 0;
            for (key, c) in &st.blocks {
                let pending = st.local.get(key).map_or(0, BTreeMap::len);
                let last = st.local_last.get(key).copied();
                let stale = c.rec.local && last.is_some_and(|t| now.saturating_sub(t) >= idle);
                if pending == 0 && !stale {
                    continue;
                }
                let mut rec = c.rec.clone();
                // a block idle for long enough is opened to borrowing again
                rec.local = !(stale && pending == 0);
                count += pending;
                changes.push(Change::new(key.clone(), rec, c.rev, false)?);
            }
            if changes.is_empty() {
                return Ok(0);
            }
            for c in &changes {
                if !c.rec.local {
                    st.local_last.remove(&c.key);
                }
            }
            match self.write(&mut st, changes)? {
                Ok(()) => return Ok(count),
                Err(key) => {
                    attempts += 1;
                    if attempts >= MAX_ATTEMPTS {
                        return Err(IpamError::Contended { key, attempts });
                    }
                }
            }
        }
    }
}
