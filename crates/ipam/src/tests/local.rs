//! Local allocations: a node's allocations in its own blocks go to its
//! journal first and reach the store with the next flush. Nothing is lost
//! or handed out twice across a crash at any point, the views are exact
//! once flushed, leak GC and gone-node collection still work.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::*;

/// A directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weft-ipam-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// The journal in this directory: a file-backed embedded store, as
    /// weftd keeps it (fsync'ed per commit), opened afresh.
    fn journal(&self) -> Arc<dyn Store> {
        Arc::new(EmbeddedStore::open(&self.0.join("endpoints.db")).unwrap())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A journal whose deletes fail: a crash after a flush reached the store
/// but before the journal was trimmed.
struct NoDeletes(Arc<dyn Store>);

impl Store for NoDeletes {
    fn backend(&self) -> &'static str {
        "no-deletes"
    }
    fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        self.0.get(key)
    }
    fn list(&self, prefix: &str) -> StoreResult<Listing> {
        self.0.list(prefix)
    }
    fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> StoreResult<Result<Revision, Conflict>> {
        self.0.create(key, value, lease)
    }
    fn update(
        &self,
        key: &str,
        value: &[u8],
        expected: Revision,
    ) -> StoreResult<Result<Revision, Conflict>> {
        self.0.update(key, value, expected)
    }
    fn delete(
        &self,
        _key: &str,
        _expected: Option<Revision>,
    ) -> StoreResult<Result<Option<Revision>, Conflict>> {
        Err(StoreError::Unavailable {
            reason: "crashed".into(),
        })
    }
    fn commit(&self, ops: &[TxnOp<'_>]) -> StoreResult<Result<Revision, TxnConflict>> {
        if ops.iter().any(|op| matches!(op, TxnOp::Delete { .. })) {
            return Err(StoreError::Unavailable {
                reason: "crashed".into(),
            });
        }
        self.0.commit(ops)
    }
    fn watch(&self, prefix: &str, after: Revision) -> StoreResult<Watch> {
        self.0.watch(prefix, after)
    }
    fn grant_lease(&self, ttl: Duration) -> StoreResult<LeaseId> {
        self.0.grant_lease(ttl)
    }
    fn keep_alive(&self, lease: LeaseId) -> StoreResult<()> {
        self.0.keep_alive(lease)
    }
    fn revoke_lease(&self, lease: LeaseId) -> StoreResult<()> {
        self.0.revoke_lease(lease)
    }
}

/// A node lease that outlives every test's clock advances (the journal's
/// gate is tested with short ones below).
const LONG_LEASE: Duration = Duration::from_secs(24 * 3600);

/// Node `node` on the shared store `raw`, with `journal`, its registration
/// lease renewed now (for [`LONG_LEASE`]).
fn journaled(
    raw: &Arc<dyn Store>,
    clock: &Arc<ManualClock>,
    mut c: IpamConfig,
    node: &str,
    journal: Arc<dyn Store>,
) -> Env {
    c.node = node.into();
    let store = Counting::new(raw.clone());
    let ipam = Ipam::with_journal(store.clone(), c, clock.clone(), Some(journal)).unwrap();
    ipam.journal_gate()
        .lease_renewed(clock.now_ms(), LONG_LEASE);
    Env {
        store,
        clock: clock.clone(),
        ipam,
    }
}

/// `expect` allocations, no address twice (dual-stack: a handle holds two).
fn assert_distinct_addresses(allocs: &[AllocationInfo], expect: usize) {
    assert_eq!(allocs.len(), expect);
    let addrs: HashSet<IpAddr> = allocs.iter().map(|a| a.address).collect();
    assert_eq!(addrs.len(), expect, "an address was handed out twice");
}

fn journal_len(j: &Arc<dyn Store>) -> usize {
    j.list(JOURNAL_PREFIX).unwrap().kvs.len()
}

/// Every allocation in the store, by address: its handle.
fn stored(raw: &Arc<dyn Store>) -> BTreeMap<IpAddr, String> {
    let mut out = BTreeMap::new();
    for kv in raw.list(BLOCKS_PREFIX).unwrap().kvs {
        let rec = BlockRecord::decode(&kv).unwrap();
        for (&o, a) in &rec.allocations {
            assert!(out.insert(rec.addr(o), a.handle.clone()).is_none());
        }
    }
    out
}

#[test]
fn allocations_in_own_blocks_wait_in_the_journal_and_reach_the_store_in_one_flush() {
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    let j: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let a = journaled(&raw, &clock, standard(), "node-a", j.clone());
    let w = a.store.writes();
    a.alloc(0, &dual()).unwrap();
    assert_eq!(
        a.store.writes() - w,
        1,
        "the claims: one commit, in the store"
    );
    assert_eq!(journal_len(&j), 0);
    let mut mine = BTreeMap::new();
    for i in 1..40 {
        for addr in a.alloc(i, &dual()).unwrap() {
            assert!(mine.insert(addr, h(i)).is_none(), "{addr} twice");
        }
    }
    assert_eq!(a.store.writes() - w, 1, "39 pods, no store write");
    assert_eq!(journal_len(&j), 78, "each address journaled");
    // idempotent from the journal's view
    assert_eq!(a.ipam.find(&h(7)).len(), 2);
    // another node's listing does not show them yet
    assert_eq!(stored(&raw).len(), 2);
    assert_eq!(a.ipam.flush().unwrap(), 78);
    assert_eq!(a.store.writes() - w, 2, "one flush, one commit");
    assert_eq!(journal_len(&j), 0, "flushed entries leave the journal");
    assert_eq!(a.ipam.flush().unwrap(), 0);
    assert_eq!(a.store.writes() - w, 2, "nothing to flush, no write");
    let all = stored(&raw);
    assert_eq!(all.len(), 80);
    for (addr, handle) in &mine {
        assert_eq!(&all[addr], handle);
    }
    // `ipam show` of another node sees every address once flushed
    let b = journaled(
        &raw,
        &clock,
        standard(),
        "node-b",
        Arc::new(EmbeddedStore::in_memory()),
    );
    assert_distinct_addresses(&b.ipam.allocations().unwrap(), 80);
}

#[test]
fn a_crash_between_the_journal_and_the_flush_loses_nothing_and_duplicates_nothing() {
    let dir = TempDir::new("crash");
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    let mut before = BTreeMap::new();
    {
        let a = journaled(&raw, &clock, standard(), "node-a", dir.journal());
        for i in 0..30 {
            for addr in a.alloc(i, &dual()).unwrap() {
                before.insert(addr, h(i));
            }
        }
        assert_eq!(stored(&raw).len(), 2, "only the claims reached the store");
        // killed here: nothing more is written (no flush, no drop hook)
    }
    // meanwhile another node allocates in its own blocks
    let b = node_env(&raw, &clock, standard(), "node-b");
    let theirs: Vec<IpAddr> = (100..110)
        .flat_map(|i| b.alloc(i, &dual()).unwrap())
        .collect();
    // weftd starts again on the same journal file
    let a = journaled(&raw, &clock, standard(), "node-a", dir.journal());
    let all = stored(&raw);
    for (addr, handle) in &before {
        assert_eq!(all.get(addr), Some(handle), "{addr} lost");
    }
    assert_eq!(all.len(), 60 + 20, "every address once");
    // the pods keep their addresses (ADD is idempotent), and new ones get
    // other addresses
    for i in 0..30 {
        let again: BTreeSet<IpAddr> = a.alloc(i, &dual()).unwrap().into_iter().collect();
        let had: BTreeSet<IpAddr> = before
            .iter()
            .filter(|(_, hd)| **hd == h(i))
            .map(|(ad, _)| *ad)
            .collect();
        assert_eq!(again, had);
    }
    for addr in a.alloc(30, &dual()).unwrap() {
        assert!(!before.contains_key(&addr) && !theirs.contains(&addr));
    }
    a.ipam.flush().unwrap();
    assert_distinct_addresses(&b.ipam.allocations().unwrap(), 31 * 2 + 20);
}

#[test]
fn a_crash_after_the_flush_before_the_journal_is_trimmed_changes_nothing() {
    let dir = TempDir::new("trim");
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    {
        let j: Arc<dyn Store> = Arc::new(NoDeletes(dir.journal()));
        let a = journaled(&raw, &clock, standard(), "node-a", j.clone());
        for i in 0..10 {
            a.alloc(i, &v4()).unwrap();
        }
        // the flush reaches the store; trimming the journal fails (crash)
        assert_eq!(a.ipam.flush().unwrap(), 9);
        assert_eq!(journal_len(&j), 9);
        // one of them is released (a DEL) before the crash: in quarantine
        a.ipam.release(&h(3)).unwrap();
    }
    let snapshot = stored(&raw);
    assert_eq!(snapshot.len(), 9);
    let j = dir.journal();
    let a = journaled(&raw, &clock, standard(), "node-a", j.clone());
    assert_eq!(stored(&raw), snapshot, "the journal brought nothing back");
    assert!(
        a.ipam.find(&h(3)).is_empty(),
        "a released address stays released"
    );
    assert_eq!(journal_len(&j), 9, "trimmed with the next journal write");
    a.alloc(10, &v4()).unwrap();
    assert_eq!(journal_len(&j), 1);
}

#[test]
fn nobody_borrows_from_a_block_whose_node_keeps_a_journal_until_it_is_idle() {
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    // two blocks of 8, no block limit: node-a borrows once the pool is out
    // of blocks
    let mut c = cfg(vec![pool("10.1.0.0/28", 29)]);
    c.strict_affinity = false;
    c.local_idle = Duration::from_secs(30);
    let a = node_env(&raw, &clock, c.clone(), "node-a");
    let b = journaled(
        &raw,
        &clock,
        c,
        "node-b",
        Arc::new(EmbeddedStore::in_memory()),
    );
    for i in 0..7 {
        a.alloc(format!("a{i}"), &v4()).unwrap();
    }
    b.alloc("b0", &v4()).unwrap();
    b.alloc("b1", &v4()).unwrap(); // journaled: the store shows .. one
    let err = a.alloc("a7", &v4()).unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
    // flushed but recently used: still closed
    b.ipam.flush().unwrap();
    assert!(a.alloc("a7", &v4()).is_err());
    // idle for local_idle: the next flush opens it (one write)
    clock.advance(Duration::from_secs(30));
    let w = b.store.writes();
    b.ipam.flush().unwrap();
    assert_eq!(b.store.writes() - w, 1);
    let lent = a.alloc("a7", &v4()).unwrap()[0];
    assert!(net("10.1.0.8/29").contains(&lent));
    // node-b allocates again: written to the store at once (the block is
    // open), which marks it again; distinct from the lent address
    let again = b.alloc("b2", &v4()).unwrap()[0];
    assert_ne!(again, lent);
    assert_eq!(stored(&raw).len(), 11);
    assert_all_distinct(&a.ipam.allocations().unwrap(), 11);
}

#[test]
fn with_a_block_limit_and_borrowing_nothing_is_journaled() {
    // lending is how such a cluster runs: no block is ever closed to it
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    let j: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let b = journaled(&raw, &clock, borrow_cfg(), "node-b", j.clone());
    let w = b.store.writes();
    for i in 0..3 {
        b.alloc(i, &v4()).unwrap();
    }
    assert_eq!(b.store.writes() - w, 3);
    assert_eq!(journal_len(&j), 0);
    assert!(raw
        .list(BLOCKS_PREFIX)
        .unwrap()
        .kvs
        .iter()
        .all(|kv| !BlockRecord::decode(kv).unwrap().local));
}

#[test]
fn leak_gc_frees_journaled_allocations_too() {
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    let j: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let mut c = standard();
    c.gc_grace = Duration::from_secs(60);
    let a = journaled(&raw, &clock, c, "node-a", j.clone());
    for i in 0..5 {
        a.alloc(i, &v4()).unwrap();
    }
    assert_eq!(journal_len(&j), 4);
    // handle 4's pod never became an endpoint
    let findings = a.ipam.check(&live(&[&h(0), &h(1), &h(2), &h(3)])).unwrap();
    assert_eq!(findings.leaked.len(), 1, "{findings:?}");
    clock.advance(Duration::from_secs(60));
    let freed = a.ipam.gc(&live(&[&h(0), &h(1), &h(2), &h(3)])).unwrap();
    assert_eq!(freed.len(), 1);
    assert_eq!(freed[0].handle, h(4));
    assert_eq!(journal_len(&j), 0);
    assert_eq!(stored(&raw).len(), 4);
}

#[test]
fn a_gone_node_s_block_goes_back_whole_with_its_free_addresses_in_quarantine() {
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    let mut c = cfg(vec![pool("10.3.0.0/24", 28)]);
    c.quarantine = Duration::from_secs(30);
    {
        let b = journaled(
            &raw,
            &clock,
            c.clone(),
            "node-b",
            Arc::new(EmbeddedStore::in_memory()),
        );
        for i in 0..5 {
            b.alloc(i, &v4()).unwrap();
        }
        // node-b dies with 4 allocations only in its journal
    }
    assert_eq!(stored(&raw).len(), 1);
    let a = node_env(&raw, &clock, c, "node-a");
    let grace = Duration::from_secs(300);
    a.ipam.collect_node("node-b", &live(&[]), grace).unwrap();
    clock.advance(grace);
    let got = a.ipam.collect_node("node-b", &live(&[]), grace).unwrap();
    assert_eq!(got.freed.len(), 1, "what the store showed");
    assert_eq!(got.blocks, vec![net("10.3.0.0/28")]);
    let block = &a.ipam.blocks().unwrap()[0];
    assert_eq!(block.affinity, None);
    assert_eq!(block.allocated, 0);
    assert_eq!(
        block.quarantined, block.capacity,
        "every address of the block rests, the journaled ones among them"
    );
    // nobody gets one of them before the quarantine ends
    let err = a.alloc(0, &fixed("10.3.0.2")).unwrap_err();
    assert!(matches!(err, IpamError::RequestRefused { .. }), "{err}");
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        a.alloc(0, &fixed("10.3.0.2")).unwrap(),
        vec![ip("10.3.0.2")]
    );
}

#[test]
fn without_a_journal_every_allocation_is_a_store_write() {
    let env = Env::new(standard());
    let w = env.store.writes();
    for i in 0..5 {
        env.alloc(i, &v4()).unwrap();
    }
    assert_eq!(env.store.writes() - w, 5);
    assert_eq!(env.ipam.flush().unwrap(), 0);
    let raw = env.store.inner.clone();
    assert!(raw
        .list(BLOCKS_PREFIX)
        .unwrap()
        .kvs
        .iter()
        .all(|kv| !BlockRecord::decode(kv).unwrap().local));
}

/// A journaled node whose lease was renewed at T0 for 10 s (flush interval
/// 500 ms: the gate closes 1.5 s before the deadline, and 1 s after the
/// store's last answer), with one allocation in the store (the claim) and
/// one in the journal.
fn short_lease() -> (Env, Arc<dyn Store>) {
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    let j: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let mut c = standard();
    c.node = "node-a".into();
    let store = Counting::new(raw);
    let ipam = Ipam::with_journal(store.clone(), c, clock.clone(), Some(j.clone())).unwrap();
    ipam.journal_gate()
        .lease_renewed(T0, Duration::from_secs(10));
    let a = Env { store, clock, ipam };
    assert_eq!(a.ipam.config().flush_interval, Duration::from_millis(500));
    a.alloc(0, &v4()).unwrap();
    a.alloc(1, &v4()).unwrap();
    assert_eq!(journal_len(&j), 1, "healthy: journaled");
    (a, j)
}

#[test]
fn without_a_lease_renewal_reported_nothing_is_journaled() {
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    let j: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let store = Counting::new(raw.clone());
    let ipam = Ipam::with_journal(store.clone(), standard(), clock, Some(j.clone())).unwrap();
    let w = store.writes();
    for i in 0..3 {
        ipam.allocate(&attrs(i), &v4()).unwrap();
    }
    assert_eq!(store.writes() - w, 3, "each a store write");
    assert_eq!(journal_len(&j), 0);
}

#[test]
fn near_the_lease_deadline_an_add_goes_to_the_store_until_the_lease_is_renewed() {
    let (a, j) = short_lease();
    // 1.5 s before the deadline (T0 + 10 s), the store answering
    a.clock.set(T0 + 8_500);
    a.ipam.refresh().unwrap();
    assert!(matches!(
        a.ipam.journal_gate().state(a.clock.now_ms()),
        GateState::LeaseEnding { .. }
    ));
    let w = a.store.writes();
    let addr = a.alloc(2, &v4()).unwrap()[0];
    assert_eq!(a.store.writes() - w, 1, "a store write");
    assert_eq!(journal_len(&j), 0, "which carried the journaled one too");
    let all = stored(&a.store.inner);
    assert_eq!(all.len(), 3);
    assert_eq!(all[&addr], h(2));
    // renewed: journaled again
    a.ipam
        .journal_gate()
        .lease_renewed(a.clock.now_ms(), Duration::from_secs(10));
    a.alloc(3, &v4()).unwrap();
    assert_eq!(a.store.writes() - w, 1);
    assert_eq!(journal_len(&j), 1);
}

#[test]
fn with_the_store_silent_an_add_goes_to_the_store_and_fails_while_it_is_down() {
    let (a, j) = short_lease();
    // no store answer for more than two flush intervals, the store down
    a.advance_ms(1_001);
    assert!(matches!(
        a.ipam.journal_gate().state(a.clock.now_ms()),
        GateState::StoreSilent { .. }
    ));
    a.store.down.store(true, Ordering::SeqCst);
    let err = a.alloc(2, &v4()).unwrap_err();
    assert!(err.is_temporary(), "{err}");
    assert_eq!(journal_len(&j), 1, "nothing journaled");
    // back: the first ADD is a store write (an answer), the next journaled
    a.store.down.store(false, Ordering::SeqCst);
    let w = a.store.writes();
    a.alloc(2, &v4()).unwrap();
    assert_eq!(a.store.writes() - w, 1);
    assert_eq!(journal_len(&j), 0);
    a.alloc(3, &v4()).unwrap();
    assert_eq!(a.store.writes() - w, 1);
    assert_eq!(journal_len(&j), 1);
    assert_distinct_addresses(&a.ipam.allocations().unwrap(), 4);
}

#[test]
fn a_store_gone_since_its_last_answer_fails_the_add_though_the_gate_is_open() {
    // the multinode outage test's case: every etcd member stopped a moment
    // after the store last answered
    let (a, j) = short_lease();
    assert_eq!(
        a.ipam.journal_gate().state(a.clock.now_ms()),
        GateState::Open
    );
    a.store.down.store(true, Ordering::SeqCst);
    let err = a.alloc(2, &v4()).unwrap_err();
    assert!(
        matches!(err, IpamError::Store(StoreError::Unavailable { .. })),
        "{err}"
    );
    assert_eq!(journal_len(&j), 1, "nothing journaled");
}

#[test]
fn a_block_changed_in_the_store_since_the_plan_goes_the_store_path() {
    let (a, j) = short_lease();
    // another writer touches the block (same record, a new revision)
    let kv = a.store.inner.list(BLOCKS_PREFIX).unwrap().kvs[0].clone();
    a.store
        .inner
        .update(&kv.key, &kv.value, kv.mod_revision)
        .unwrap()
        .unwrap();
    let w = a.store.writes();
    a.alloc(2, &v4()).unwrap();
    assert!(
        a.store.writes() > w,
        "went to the store (and lost the race)"
    );
    a.ipam.flush().unwrap();
    assert_eq!(journal_len(&j), 0);
    let all = stored(&a.store.inner);
    assert_eq!(all.len(), 3);
    assert_distinct_addresses(&a.ipam.allocations().unwrap(), 3);
}
