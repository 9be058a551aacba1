//! IPAM tests: no kernel, no sleeping (a [`ManualClock`] drives time).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use weft_store::embedded::EmbeddedStore;
use weft_store::{
    Conflict, KeyValue, LeaseId, Listing, Revision, Store, StoreError, StoreResult, TxnConflict,
    TxnOp, Watch,
};

use super::*;

mod routes;

const T0: u64 = 1_700_000_000_000;

/// Counts the calls that reach the wrapped store, and can make it fail.
struct Counting {
    inner: Arc<dyn Store>,
    writes: AtomicU64,
    /// Ops of every commit, and those on route summaries.
    ops: AtomicU64,
    route_ops: AtomicU64,
    reads: AtomicU64,
    conflicts: AtomicU64,
    down: AtomicBool,
}

impl Counting {
    fn new(inner: Arc<dyn Store>) -> Arc<Counting> {
        Arc::new(Counting {
            inner,
            writes: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            route_ops: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            down: AtomicBool::new(false),
        })
    }

    fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// (commits and single-key writes, commit ops, route summary ops)
    fn write_counts(&self) -> (u64, u64, u64) {
        (
            self.writes(),
            self.ops.load(Ordering::SeqCst),
            self.route_ops.load(Ordering::SeqCst),
        )
    }

    fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    fn up(&self) -> StoreResult<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                reason: "test says the store is down".into(),
            });
        }
        Ok(())
    }

    fn write<T, C>(&self, r: StoreResult<Result<T, C>>) -> StoreResult<Result<T, C>> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        if matches!(r, Ok(Err(_))) {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
}

impl Store for Counting {
    fn backend(&self) -> &'static str {
        "counting"
    }
    fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        self.up()?;
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key)
    }
    fn list(&self, prefix: &str) -> StoreResult<Listing> {
        self.up()?;
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix)
    }
    fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> StoreResult<Result<Revision, Conflict>> {
        self.up()?;
        self.write(self.inner.create(key, value, lease))
    }
    fn update(
        &self,
        key: &str,
        value: &[u8],
        expected: Revision,
    ) -> StoreResult<Result<Revision, Conflict>> {
        self.up()?;
        self.write(self.inner.update(key, value, expected))
    }
    fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> StoreResult<Result<Option<Revision>, Conflict>> {
        self.up()?;
        self.write(self.inner.delete(key, expected))
    }
    fn commit(&self, ops: &[TxnOp<'_>]) -> StoreResult<Result<Revision, TxnConflict>> {
        self.up()?;
        let routes = ops.iter().filter(|op| op.key().starts_with(ROUTES_PREFIX));
        self.route_ops
            .fetch_add(routes.count() as u64, Ordering::SeqCst);
        self.ops.fetch_add(ops.len() as u64, Ordering::SeqCst);
        self.write(self.inner.commit(ops))
    }
    fn watch(&self, prefix: &str, after: Revision) -> StoreResult<Watch> {
        self.inner.watch(prefix, after)
    }
    fn grant_lease(&self, ttl: Duration) -> StoreResult<LeaseId> {
        self.inner.grant_lease(ttl)
    }
    fn keep_alive(&self, lease: LeaseId) -> StoreResult<()> {
        self.inner.keep_alive(lease)
    }
    fn revoke_lease(&self, lease: LeaseId) -> StoreResult<()> {
        self.inner.revoke_lease(lease)
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pool(cidr: &str, block_prefix: u8) -> PoolConfig {
    PoolConfig::with_block_prefix(net(cidr), block_prefix)
}

fn attrs(name: impl fmt::Display) -> AllocationAttrs {
    AllocationAttrs {
        container_id: format!("c{name}"),
        ifname: "eth0".into(),
        pod_namespace: "default".into(),
        pod_name: format!("pod-{name}"),
    }
}

fn v4() -> AllocRequest {
    AllocRequest {
        ipv4: true,
        ..AllocRequest::default()
    }
}

fn v6() -> AllocRequest {
    AllocRequest {
        ipv6: true,
        ..AllocRequest::default()
    }
}

fn dual() -> AllocRequest {
    AllocRequest {
        ipv4: true,
        ipv6: true,
        requested: vec![],
    }
}

fn fixed(addr: &str) -> AllocRequest {
    AllocRequest {
        requested: vec![ip(addr)],
        ..AllocRequest::default()
    }
}

fn new_store() -> Arc<dyn Store> {
    Arc::new(EmbeddedStore::in_memory())
}

struct Env {
    store: Arc<Counting>,
    clock: Arc<ManualClock>,
    ipam: Ipam,
}

impl Env {
    fn new(cfg: IpamConfig) -> Env {
        Env::on(new_store(), cfg)
    }

    fn on(raw: Arc<dyn Store>, cfg: IpamConfig) -> Env {
        let store = Counting::new(raw);
        let clock = Arc::new(ManualClock::new(T0));
        let ipam = Ipam::new(store.clone(), cfg, clock.clone()).unwrap();
        Env { store, clock, ipam }
    }

    fn alloc(&self, name: impl fmt::Display, req: &AllocRequest) -> Result<Vec<IpAddr>, IpamError> {
        Ok(self
            .ipam
            .allocate(&attrs(name), req)?
            .into_iter()
            .map(|a| a.addr)
            .collect())
    }

    fn advance_ms(&self, ms: u64) {
        self.clock.advance(Duration::from_millis(ms));
    }
}

fn cfg(pools: Vec<PoolConfig>) -> IpamConfig {
    IpamConfig::new("node-a", pools)
}

fn standard() -> IpamConfig {
    cfg(vec![
        pool("10.244.0.0/16", 26),
        pool("fd00:10:244::/56", 122),
    ])
}

fn live(handles: &[&str]) -> HashSet<String> {
    handles.iter().map(|h| h.to_string()).collect()
}

fn h(name: impl fmt::Display) -> String {
    attrs(name).handle()
}

// ---------------------------------------------------------------- config

#[test]
fn pool_defaults_and_validation() {
    assert_eq!(PoolConfig::new(net("10.0.0.0/16")).block_prefix, 26);
    assert_eq!(PoolConfig::new(net("fd00::/48")).block_prefix, 122);
    // A pool smaller than a default block is one block.
    assert_eq!(PoolConfig::new(net("10.0.0.0/28")).block_prefix, 28);
    assert!(PoolConfig::new(net("10.0.0.0/16")).validate().is_ok());

    for (p, needle) in [
        (pool("10.0.0.1/16", 26), "host bits"),
        (pool("10.0.0.0/16", 12), "must lie between"),
        (pool("10.0.0.0/16", 33), "must lie between"),
        (pool("10.0.0.0/16", 31), "4 to 4096"),
        (pool("10.0.0.0/8", 19), "4 to 4096"),
        (pool("fd00::/64", 127), "4 to 4096"),
        (pool("fd00::/64", 100), "4 to 4096"),
    ] {
        let err = p.validate().unwrap_err();
        assert!(matches!(err, IpamError::InvalidConfig { .. }), "{err:?}");
        assert!(err.to_string().contains(needle), "{err} lacks {needle}");
    }
    assert!(pool("10.0.0.0/8", 20).validate().is_ok());
    assert!(pool("10.0.0.0/30", 30).validate().is_ok());

    let mut c = cfg(vec![pool("10.0.0.0/16", 26), pool("10.0.128.0/20", 26)]);
    assert!(c.validate().unwrap_err().to_string().contains("overlap"));
    c.pools = vec![];
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("add at least one pool"));
    let mut c = standard();
    c.max_blocks_per_node = Some(0);
    assert!(c.validate().is_err());
    let mut c = standard();
    c.node.clear();
    assert!(c.validate().is_err());

    let c = IpamConfig::new("n", vec![]);
    assert_eq!(c.quarantine, Duration::from_secs(30));
    assert_eq!(c.gc_grace, Duration::from_secs(60));
    assert!(c.strict_affinity);
    assert_eq!(c.max_blocks_per_node, None);
}

#[test]
fn keys_escape_cidrs() {
    assert_eq!(
        pool_key(&net("10.0.0.0/16")),
        "/weft/ipam/v1/pools/10.0.0.0-16"
    );
    assert_eq!(
        block_key(&net("fd00::/122")),
        "/weft/ipam/v1/blocks/fd00::-122"
    );
    assert_eq!(
        parse_block_key("/weft/ipam/v1/blocks/fd00::-122"),
        Some(net("fd00::/122"))
    );
    assert_eq!(
        parse_block_key("/weft/ipam/v1/blocks/10.1.2.0-26"),
        Some(net("10.1.2.0/26"))
    );
    assert_eq!(parse_block_key("/weft/ipam/v1/blocks/garbage"), None);
    assert_eq!(parse_block_key("/other/10.1.2.0-26"), None);
}

#[test]
fn new_creates_pools_and_accepts_the_same_definition_again() {
    let raw = new_store();
    let a = Env::on(raw.clone(), standard());
    let kv = raw.get(&pool_key(&net("10.244.0.0/16"))).unwrap().unwrap();
    let stored: PoolConfig = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(stored, pool("10.244.0.0/16", 26));
    let writes = a.store.writes();
    // A second Ipam (a restart) with the same pools writes nothing.
    let b = Env::on(raw.clone(), standard());
    assert_eq!(b.store.writes(), 0);
    assert_eq!(a.store.writes(), writes);
}

#[test]
fn new_with_a_conflicting_pool_definition_errors() {
    let raw = new_store();
    Env::on(raw.clone(), standard());
    let clock = Arc::new(ManualClock::new(T0));

    let other = cfg(vec![pool("10.244.0.0/16", 24)]);
    let err = Ipam::new(raw.clone(), other, clock.clone()).unwrap_err();
    assert!(matches!(err, IpamError::InvalidConfig { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("/26 blocks") && msg.contains("configure /26"),
        "{msg}"
    );

    let overlapping = cfg(vec![pool("10.244.0.0/20", 26)]);
    let err = Ipam::new(raw.clone(), overlapping, clock.clone()).unwrap_err();
    assert!(
        err.to_string().contains("overlaps pool 10.244.0.0/16"),
        "{err}"
    );

    // A disjoint extra pool is fine.
    let more = cfg(vec![pool("10.244.0.0/16", 26), pool("10.245.0.0/16", 26)]);
    Ipam::new(raw.clone(), more, clock.clone()).unwrap();

    // Garbage under a pool key is Corrupt, not a panic.
    raw.create(&pool_key(&net("10.9.0.0/16")), b"{not json", None)
        .unwrap()
        .unwrap();
    let err = Ipam::new(raw, standard(), clock).unwrap_err();
    assert!(matches!(err, IpamError::Corrupt { .. }), "{err:?}");
}

// ---------------------------------------------------------------- allocate

#[test]
fn allocate_is_idempotent() {
    let env = Env::new(standard());
    let first = env.ipam.allocate(&attrs(1), &v4()).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].addr, ip("10.244.0.1"), "the pool's .0 is skipped");
    assert_eq!(first[0].pool, net("10.244.0.0/16"));
    assert_eq!(first[0].block, net("10.244.0.0/26"));
    let (w, r) = (env.store.writes(), env.store.reads());
    let again = env.ipam.allocate(&attrs(1), &v4()).unwrap();
    assert_eq!(again, first);
    assert_eq!(
        (env.store.writes(), env.store.reads()),
        (w, r),
        "a repeat costs nothing"
    );
    // Asking for more later adds only the missing family.
    let both = env.ipam.allocate(&attrs(1), &dual()).unwrap();
    assert_eq!(both[0], first[0]);
    assert!(both[1].addr.is_ipv6());
    assert_eq!(env.ipam.find(&h(1)).len(), 2);
    // Asking for a static address other than the held one is refused.
    let err = env.alloc(1, &fixed("10.244.0.9")).unwrap_err();
    assert!(
        err.to_string().contains("already holds 10.244.0.1"),
        "{err}"
    );
    // ... the same one is fine.
    assert_eq!(
        env.alloc(1, &fixed("10.244.0.1")).unwrap(),
        vec![ip("10.244.0.1")]
    );
}

#[test]
fn allocate_dual_stack() {
    let env = Env::new(standard());
    let got = env.ipam.allocate(&attrs(1), &dual()).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].addr, ip("10.244.0.1"));
    assert_eq!(got[1].addr, ip("fd00:10:244::1"));
    assert_eq!(got[1].block, net("fd00:10:244::/122"));
    let got2 = env.alloc(2, &dual()).unwrap();
    assert_eq!(got2, vec![ip("10.244.0.2"), ip("fd00:10:244::2")]);
    let v6only = env.alloc(3, &v6()).unwrap();
    assert_eq!(v6only, vec![ip("fd00:10:244::3")]);
    let mut found = env.ipam.find(&h(1));
    found.sort();
    assert_eq!(found, vec![got[0].addr, got[1].addr]);
}

#[test]
fn bad_requests_are_refused() {
    let env = Env::new(standard());
    let err = env.alloc(1, &AllocRequest::default()).unwrap_err();
    assert!(matches!(err, IpamError::InvalidRequest { .. }));
    let two = AllocRequest {
        requested: vec![ip("10.244.0.5"), ip("10.244.0.6")],
        ..AllocRequest::default()
    };
    assert!(matches!(
        env.alloc(1, &two).unwrap_err(),
        IpamError::InvalidRequest { .. }
    ));
    let mut a = attrs(1);
    a.container_id.clear();
    assert!(matches!(
        env.ipam.allocate(&a, &v4()).unwrap_err(),
        IpamError::InvalidRequest { .. }
    ));

    let v4only = Env::new(cfg(vec![pool("10.0.0.0/24", 26)]));
    let err = v4only.alloc(1, &dual()).unwrap_err();
    assert!(
        matches!(err, IpamError::NoPool { family: Family::V6 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("add an IPv6 pool"), "{err}");
    assert!(
        v4only.ipam.find(&h(1)).is_empty(),
        "the IPv4 part was not kept"
    );
}

#[test]
fn release_by_handle() {
    let env = Env::new(standard());
    let a = env.alloc(1, &dual()).unwrap();
    let b = env.alloc(2, &dual()).unwrap();
    let w = env.store.writes();
    let mut released = env.ipam.release(&h(1)).unwrap();
    released.sort();
    assert_eq!(released, a);
    assert_eq!(env.store.writes() - w, 1, "one commit for both blocks");
    assert!(env.ipam.find(&h(1)).is_empty());
    assert_eq!(env.ipam.find(&h(2)), b);
    let all = env.ipam.allocations().unwrap();
    assert_eq!(all.len(), 2);
    assert!(all
        .iter()
        .all(|x| x.handle == h(2) && x.pod_name == "pod-2"));
    // Released addresses are quarantined.
    let usage = env.ipam.pools_usage().unwrap();
    assert!(
        usage.iter().all(|p| p.quarantined == 1 && p.allocated == 1),
        "{usage:?}"
    );
}

#[test]
fn release_of_an_unknown_handle_is_a_noop() {
    let env = Env::new(standard());
    env.alloc(1, &v4()).unwrap();
    let (w, r) = (env.store.writes(), env.store.reads());
    assert_eq!(env.ipam.release("nope/eth0").unwrap(), Vec::<IpAddr>::new());
    assert_eq!(env.ipam.release(&h(1)).unwrap().len(), 1);
    assert_eq!(
        env.ipam.release(&h(1)).unwrap(),
        Vec::<IpAddr>::new(),
        "twice is fine"
    );
    assert_eq!(env.store.writes() - w, 1);
    assert_eq!(env.store.reads(), r, "release reads nothing");
}

/// Interop (podman 4, `podman network reload`): DEL then, at once, ADD of
/// the same container asking for the addresses it had. The handle that put
/// an address in quarantine may take it back; anyone else is still refused,
/// and so is the handle once someone else held the address in between.
#[test]
fn the_releasing_handle_may_take_its_quarantined_address_back() {
    let env = Env::new(cfg(vec![pool("10.9.0.0/24", 26), pool("fd00:9::/64", 122)]));
    let had = env.alloc("a", &dual()).unwrap();
    env.advance_ms(1_000);
    env.ipam.release(&h("a")).unwrap();
    let back = AllocRequest {
        ipv4: true,
        ipv6: true,
        requested: had.clone(),
    };
    let err = env.alloc("b", &back).unwrap_err();
    assert!(err.to_string().contains("quarantine"), "{err}");
    assert_eq!(
        env.alloc("a", &back).unwrap(),
        had,
        "same handle, same addresses"
    );
    // no longer quarantined (it is allocated again): the books are consistent
    assert!(env
        .ipam
        .check(&live(&[&h("a")]))
        .unwrap()
        .problems
        .is_empty());

    // released again, then handed to b after the quarantine: a may not
    // reclaim it from a later quarantine b started
    env.ipam.release(&h("a")).unwrap();
    env.advance_ms(DEFAULT_QUARANTINE.as_millis() as u64);
    assert_eq!(
        env.alloc("b", &fixed("10.9.0.1")).unwrap(),
        vec![ip("10.9.0.1")]
    );
    env.ipam.release(&h("b")).unwrap();
    let err = env.alloc("a", &fixed("10.9.0.1")).unwrap_err();
    assert!(err.to_string().contains("quarantine"), "{err}");
}

#[test]
fn quarantine_is_honoured_exactly() {
    // A /30 pool with one /30 block: .0 and .3 are reserved, .1 and .2 usable.
    let env = Env::new(cfg(vec![pool("10.9.0.0/30", 30)]));
    assert_eq!(env.alloc("a", &v4()).unwrap(), vec![ip("10.9.0.1")]);
    assert_eq!(env.alloc("b", &v4()).unwrap(), vec![ip("10.9.0.2")]);
    env.advance_ms(5_000);
    let released_at = env.clock.now_ms();
    env.ipam.release(&h("a")).unwrap();

    let err = env.alloc("c", &v4()).unwrap_err();
    match &err {
        IpamError::Exhausted {
            family,
            pool,
            quarantined,
            next_free_in_ms,
            ..
        } => {
            assert_eq!(*family, Family::V4);
            assert_eq!(*pool, net("10.9.0.0/30"));
            assert_eq!(*quarantined, 1);
            assert_eq!(*next_free_in_ms, Some(30_000));
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("1 released addresses are in quarantine, the first frees in 30s"),
        "{msg}"
    );
    assert!(msg.contains("add a pool or retry in 30s"), "{msg}");
    assert!(err.is_temporary(), "retrying later helps");
    // A static request for it is refused too, naming the quarantine.
    let err = env.alloc("c", &fixed("10.9.0.1")).unwrap_err();
    assert!(
        err.to_string().contains("quarantine for another 30s"),
        "{err}"
    );

    env.clock.set(released_at + 30_000 - 1);
    assert!(matches!(
        env.alloc("c", &v4()),
        Err(IpamError::Exhausted { .. })
    ));
    env.clock.set(released_at + 30_000);
    assert_eq!(env.alloc("c", &v4()).unwrap(), vec![ip("10.9.0.1")]);
    // The expired entry was pruned by that very write.
    let kv = env
        .store
        .get(&block_key(&net("10.9.0.0/30")))
        .unwrap()
        .unwrap();
    let rec = BlockRecord::decode(&kv).unwrap();
    assert!(rec.quarantine.is_empty(), "{rec:?}");
}

#[test]
fn next_fit_delays_reuse_beyond_quarantine() {
    let mut c = cfg(vec![pool("10.0.0.0/24", 26)]);
    c.quarantine = Duration::ZERO;
    let env = Env::new(c);
    let a = env.alloc(1, &v4()).unwrap();
    env.ipam.release(&h(1)).unwrap();
    // With no quarantine at all, the next address is still a different one.
    let b = env.alloc(2, &v4()).unwrap();
    assert_ne!(a, b);
    assert_eq!(b, vec![ip("10.0.0.2")]);
}

#[test]
fn exhaustion_of_a_tiny_pool_is_explained() {
    // /29 in /30 blocks: 8 addresses, minus .0 and .7 of the pool.
    let env = Env::new(cfg(vec![pool("10.9.0.0/29", 30)]));
    let mut got = Vec::new();
    for i in 0..6 {
        got.extend(env.alloc(i, &v4()).unwrap());
    }
    got.sort();
    let want: Vec<IpAddr> = (1..=6).map(|i| ip(&format!("10.9.0.{i}"))).collect();
    assert_eq!(got, want);
    let err = env.alloc(6, &v4()).unwrap_err();
    assert!(!err.is_temporary(), "nothing will free by itself");
    match &err {
        IpamError::Exhausted {
            pool,
            quarantined,
            next_free_in_ms,
            node_blocks,
            max_blocks,
            ..
        } => {
            assert_eq!(*pool, net("10.9.0.0/29"));
            assert_eq!(*quarantined, 0);
            assert_eq!(*next_free_in_ms, None);
            assert_eq!(*node_blocks, 2);
            assert_eq!(*max_blocks, None);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "no free IPv4 address for this node in pool 10.9.0.0/29: the node's 2 IPv4 blocks are full and no unclaimed block is left; no address is in quarantine; add a pool"
    );
    let usage = env.ipam.pools_usage().unwrap();
    assert_eq!(
        usage,
        vec![PoolStats {
            cidr: net("10.9.0.0/29"),
            block_prefix: 30,
            blocks: 2,
            capacity: 6,
            allocated: 6,
            quarantined: 0,
        }]
    );
    let blocks = env.ipam.blocks().unwrap();
    assert_eq!(blocks.len(), 2);
    assert!(blocks.iter().all(|b| b.capacity == 3 && b.allocated == 3));
    assert!(blocks
        .iter()
        .all(|b| b.affinity.as_deref() == Some("node-a")));
}

#[test]
fn a_second_pool_is_used_when_the_first_is_full() {
    let env = Env::new(cfg(vec![pool("10.9.0.0/30", 30), pool("10.8.0.0/30", 30)]));
    let mut got = Vec::new();
    for i in 0..4 {
        got.extend(env.alloc(i, &v4()).unwrap());
    }
    assert_eq!(
        got,
        ["10.9.0.1", "10.9.0.2", "10.8.0.1", "10.8.0.2"].map(ip)
    );
    let err = env.alloc(9, &v4()).unwrap_err();
    assert!(
        err.to_string().contains("pool 10.9.0.0/30, 10.8.0.0/30"),
        "{err}"
    );
}

#[test]
fn max_blocks_per_node_is_respected() {
    let mut c = cfg(vec![pool("10.0.0.0/24", 30)]);
    c.max_blocks_per_node = Some(2);
    let env = Env::new(c);
    // Block .0/30 holds .1-.3 (the pool's .0 is reserved), block .4/30 holds 4.
    for i in 0..7 {
        env.alloc(i, &v4()).unwrap();
    }
    let err = env.alloc(7, &v4()).unwrap_err();
    assert!(
        matches!(
            err,
            IpamError::Exhausted {
                max_blocks: Some(2),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "no free IPv4 address for this node in pool 10.0.0.0/24: the node holds 2 IPv4 blocks, its limit (max_blocks_per_node 2), and they are full; no address is in quarantine; raise max_blocks_per_node or add a pool"
    );
    let err = env.alloc(7, &fixed("10.0.0.100")).unwrap_err();
    assert!(err.to_string().contains("max_blocks_per_node"), "{err}");
    assert_eq!(env.ipam.blocks().unwrap().len(), 2);
}

#[test]
fn v4_is_rolled_back_when_v6_is_exhausted() {
    // fd00::/126 is one block of 4 with ::0 reserved: 3 addresses.
    let env = Env::new(cfg(vec![pool("10.0.0.0/24", 26), pool("fd00::/126", 126)]));
    for i in 0..3 {
        env.alloc(i, &v6()).unwrap();
    }
    let w = env.store.writes();
    let err = env.alloc("x", &dual()).unwrap_err();
    assert!(
        matches!(
            err,
            IpamError::Exhausted {
                family: Family::V6,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        env.store.writes() - w,
        0,
        "nothing written: the v4 change never left the planned commit"
    );
    assert!(env.ipam.find(&h("x")).is_empty());
    let usage = env.ipam.pools_usage().unwrap();
    assert_eq!(usage[0].allocated, 0);
    assert_eq!(
        usage[0].quarantined, 0,
        "a rolled back address is not quarantined"
    );
    assert!(env.ipam.check(&live(&[])).unwrap().problems.is_empty());
}

// ---------------------------------------------------------------- static

#[test]
fn static_addresses() {
    let env = Env::new(standard());
    // ok, and it claims its block in the same single write
    let (w, r) = (env.store.writes(), env.store.reads());
    let got = env.ipam.allocate(&attrs(1), &fixed("10.244.7.9")).unwrap();
    assert_eq!(got[0].addr, ip("10.244.7.9"));
    assert_eq!(got[0].block, net("10.244.7.0/26"));
    assert_eq!(env.store.writes() - w, 1);
    assert_eq!(env.store.reads() - r, 1, "one get of the block");
    // A dynamic v6 along with a static v4.
    let req = AllocRequest {
        ipv4: true,
        ipv6: true,
        requested: vec![ip("10.244.7.10")],
    };
    let got = env.alloc(2, &req).unwrap();
    assert_eq!(got[0], ip("10.244.7.10"));
    assert!(got[1].is_ipv6());
    // The static claim made .7.0/26 one of ours: dynamic allocation uses the
    // node's blocks before it claims another one (and .7.0 is an ordinary
    // address: only the pool's first and last are reserved).
    assert_eq!(env.alloc(3, &v4()).unwrap(), vec![ip("10.244.7.0")]);

    // taken
    let err = env.alloc(4, &fixed("10.244.7.9")).unwrap_err();
    assert!(matches!(err, IpamError::RequestRefused { .. }));
    assert!(
        err.to_string()
            .contains("pod default/pod-1 (handle c1/eth0)"),
        "{err}"
    );
    // quarantined
    env.ipam.release(&h(1)).unwrap();
    let err = env.alloc(4, &fixed("10.244.7.9")).unwrap_err();
    assert!(err.to_string().contains("quarantine"), "{err}");
    env.advance_ms(30_000);
    assert_eq!(
        env.alloc(4, &fixed("10.244.7.9")).unwrap(),
        vec![ip("10.244.7.9")]
    );
    // outside every pool
    let err = env.alloc(5, &fixed("192.168.1.1")).unwrap_err();
    assert!(matches!(err, IpamError::RequestRefused { .. }));
    assert!(
        err.to_string()
            .contains("not inside any pool (10.244.0.0/16, fd00:10:244::/56)"),
        "{err}"
    );
    // reserved addresses of the pool
    for a in ["10.244.0.0", "10.244.255.255", "fd00:10:244::"] {
        let err = env.alloc(5, &fixed(a)).unwrap_err();
        assert!(err.to_string().contains("never hands out"), "{a}: {err}");
    }
    // v6 static
    assert_eq!(
        env.alloc(6, &fixed("fd00:10:244:1::42")).unwrap(),
        vec![ip("fd00:10:244:1::42")]
    );
    assert!(env
        .ipam
        .check(&live(&[&h(2), &h(3), &h(4), &h(6)]))
        .unwrap()
        .is_clean());
}

#[test]
fn static_address_in_another_nodes_block_is_refused() {
    let raw = new_store();
    let a = Env::on(raw.clone(), standard());
    let mut cb = standard();
    cb.node = "node-b".into();
    let b = Env::on(raw, cb);
    assert_eq!(a.alloc(1, &v4()).unwrap(), vec![ip("10.244.0.1")]);
    // node-b claims the next block, not node-a's.
    assert_eq!(b.alloc("b1", &v4()).unwrap(), vec![ip("10.244.0.64")]);
    let err = b.alloc("b2", &fixed("10.244.0.5")).unwrap_err();
    assert!(err.to_string().contains("belongs to node node-a"), "{err}");
    let err = a.alloc(2, &fixed("10.244.0.70")).unwrap_err();
    assert!(err.to_string().contains("belongs to node node-b"), "{err}");
    // Each node's check only calls its own allocations leaked.
    let ca = a.ipam.check(&live(&[])).unwrap();
    assert_eq!(ca.leaked.len(), 1);
    assert_eq!(ca.leaked[0].address, ip("10.244.0.1"));
    assert!(ca.problems.is_empty(), "{:?}", ca.problems);
}

// ---------------------------------------------------------------- costs

#[test]
fn store_writes_per_operation() {
    let env = Env::new(standard());
    let (w, r) = (env.store.writes(), env.store.reads());
    env.alloc(0, &v4()).unwrap();
    assert_eq!(
        env.store.writes() - w,
        1,
        "claiming a block is one create with the allocation in it"
    );
    assert_eq!(
        env.store.reads() - r,
        1,
        "plus one list to find a free block"
    );
    for i in 1..63 {
        let (w, r) = (env.store.writes(), env.store.reads());
        env.alloc(i, &v4()).unwrap();
        assert_eq!(
            env.store.writes() - w,
            1,
            "steady state: one write per allocation"
        );
        assert_eq!(env.store.reads() - r, 0, "and no read");
    }
    // The first block (63 usable addresses) is full: the next claims another.
    let (w, r) = (env.store.writes(), env.store.reads());
    assert_eq!(env.alloc(63, &v4()).unwrap(), vec![ip("10.244.0.64")]);
    assert_eq!((env.store.writes() - w, env.store.reads() - r), (1, 1));
    for i in 0..10 {
        let w = env.store.writes();
        env.ipam.release(&h(i)).unwrap();
        assert_eq!(env.store.writes() - w, 1, "one write per release");
    }
    // Dual stack: the first one claims a v6 block and uses the v4 block in
    // the same commit; from then on, one commit for both families.
    let (w, r) = (env.store.writes(), env.store.reads());
    env.alloc(100, &dual()).unwrap();
    assert_eq!((env.store.writes() - w, env.store.reads() - r), (1, 1));
    for i in 101..110 {
        let (w, r) = (env.store.writes(), env.store.reads());
        env.alloc(i, &dual()).unwrap();
        assert_eq!(
            (env.store.writes() - w, env.store.reads() - r),
            (1, 0),
            "dual stack: one write for both families, and no read"
        );
    }
    for i in 100..110 {
        let w = env.store.writes();
        assert_eq!(env.ipam.release(&h(i)).unwrap().len(), 2);
        assert_eq!(env.store.writes() - w, 1, "dual stack release: one write");
    }
    // A first dual-stack allocation claims a block of each family: one list,
    // one commit.
    let fresh = Env::new(standard());
    let (w, r) = (fresh.store.writes(), fresh.store.reads());
    assert_eq!(
        fresh.alloc(1, &dual()).unwrap(),
        vec![ip("10.244.0.1"), ip("fd00:10:244::1")]
    );
    assert_eq!((fresh.store.writes() - w, fresh.store.reads() - r), (1, 1));
    assert_eq!(fresh.ipam.blocks().unwrap().len(), 2);
}

#[test]
fn a_lost_condition_retries_the_whole_dual_stack_commit() {
    let raw = new_store();
    let a = Env::on(raw.clone(), standard());
    let b = Env::on(raw, standard());
    assert_eq!(
        a.alloc(1, &dual()).unwrap(),
        vec![ip("10.244.0.1"), ip("fd00:10:244::1")]
    );
    // b (a second instance of the node) learns the blocks and takes the next
    // IPv6 address: a's cached v6 block is stale now, its v4 block is not.
    b.ipam.refresh().unwrap();
    assert_eq!(b.alloc(2, &v6()).unwrap(), vec![ip("fd00:10:244::2")]);
    let (w, r) = (a.store.writes(), a.store.reads());
    let conflicts = a.store.conflicts.load(Ordering::SeqCst);
    assert_eq!(
        a.alloc(3, &dual()).unwrap(),
        vec![ip("10.244.0.2"), ip("fd00:10:244::3")],
        "the v4 address of the lost commit was not taken, the v6 one moved on"
    );
    assert_eq!(a.store.conflicts.load(Ordering::SeqCst) - conflicts, 1);
    assert_eq!(
        (a.store.writes() - w, a.store.reads() - r),
        (2, 0),
        "the lost commit and its retry, with the record the conflict carried"
    );
    let addrs: HashSet<IpAddr> = a
        .ipam
        .allocations()
        .unwrap()
        .into_iter()
        .map(|x| x.address)
        .collect();
    assert_eq!(addrs.len(), 5, "{addrs:?}");
    // The same for a release: b changes the v4 block under a.
    assert_eq!(b.alloc(4, &v4()).unwrap(), vec![ip("10.244.0.3")]);
    let w = a.store.writes();
    assert_eq!(
        a.ipam.release(&h(3)).unwrap(),
        vec![ip("10.244.0.2"), ip("fd00:10:244::3")]
    );
    assert_eq!(a.store.writes() - w, 2);
    let held: HashSet<String> = a
        .ipam
        .allocations()
        .unwrap()
        .into_iter()
        .map(|x| x.handle)
        .collect();
    assert_eq!(held, live(&[&h(1), &h(2), &h(4)]));
}

#[test]
fn store_unavailable_is_reported_as_store_error() {
    let env = Env::new(standard());
    env.alloc(1, &v4()).unwrap();
    env.store.down.store(true, Ordering::SeqCst);
    let err = env.alloc(2, &v4()).unwrap_err();
    assert!(err.is_temporary());
    assert!(
        matches!(err, IpamError::Store(StoreError::Unavailable { .. })),
        "{err:?}"
    );
    assert!(matches!(
        env.ipam.release(&h(1)),
        Err(IpamError::Store(StoreError::Unavailable { .. }))
    ));
    // The cache stayed coherent: once the store is back, all is well.
    env.store.down.store(false, Ordering::SeqCst);
    assert_eq!(env.ipam.release(&h(1)).unwrap(), vec![ip("10.244.0.1")]);
    assert_eq!(env.alloc(2, &v4()).unwrap(), vec![ip("10.244.0.2")]);
}

#[test]
fn restart_sees_existing_allocations() {
    let raw = new_store();
    let a = Env::on(raw.clone(), standard());
    let got = a.alloc(1, &dual()).unwrap();
    drop(a);
    let b = Env::on(raw, standard());
    let w = b.store.writes();
    assert_eq!(
        b.alloc(1, &dual()).unwrap(),
        got,
        "idempotent across a restart"
    );
    assert_eq!(b.store.writes(), w);
    assert_eq!(b.ipam.release(&h(1)).unwrap().len(), 2);
    assert_eq!(
        b.alloc(2, &v4()).unwrap(),
        vec![ip("10.244.0.2")],
        "the cursor survived too"
    );
}

// ---------------------------------------------------------------- concurrency

fn assert_all_distinct(allocs: &[AllocationInfo], expect: usize) {
    assert_eq!(allocs.len(), expect);
    let addrs: HashSet<IpAddr> = allocs.iter().map(|a| a.address).collect();
    assert_eq!(addrs.len(), expect, "an address was handed out twice");
    let handles: HashSet<&str> = allocs.iter().map(|a| a.handle.as_str()).collect();
    assert_eq!(handles.len(), expect, "a handle holds two addresses");
}

#[test]
fn concurrent_allocations_on_one_ipam() {
    // Batching off: the write count below is one commit per allocation (with
    // batching on, see `group_commit_batches_concurrent_allocations`).
    let mut c = standard();
    c.batching = false;
    let env = Env::new(c);
    let ipam = Arc::new(env.ipam);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let ipam = ipam.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for i in 0..50 {
                    let a = ipam.allocate(&attrs(format!("{t}-{i}")), &v4()).unwrap();
                    got.push(a[0].addr);
                }
                got
            })
        })
        .collect();
    let mut all = HashSet::new();
    for t in threads {
        for a in t.join().unwrap() {
            assert!(all.insert(a), "{a} handed out twice");
        }
    }
    assert_eq!(all.len(), 800);
    assert_all_distinct(&ipam.allocations().unwrap(), 800);
    assert_eq!(
        env.store.writes(),
        2 + 800,
        "two pools, then one write per allocation"
    );
    let handles: HashSet<String> = (0..16)
        .flat_map(|t| (0..50).map(move |i| h(format!("{t}-{i}"))))
        .collect();
    let findings = ipam.check(&handles).unwrap();
    assert!(findings.is_clean(), "{findings:?}");
}

#[test]
fn concurrent_allocations_on_four_ipams_of_one_node() {
    let raw = new_store();
    let store = Counting::new(raw.clone());
    let clock = Arc::new(ManualClock::new(T0));
    // Small blocks, so instances keep claiming and meeting each other's blocks.
    let c = cfg(vec![pool("10.0.0.0/16", 28), pool("fd00::/64", 124)]);
    let ipams: Vec<Arc<Ipam>> = (0..4)
        .map(|_| Arc::new(Ipam::new(store.clone(), c.clone(), clock.clone()).unwrap()))
        .collect();
    let threads: Vec<_> = ipams
        .iter()
        .enumerate()
        .map(|(t, ipam)| {
            let ipam = ipam.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    let got = ipam.allocate(&attrs(format!("{t}-{i}")), &dual()).unwrap();
                    assert_eq!(got.len(), 2);
                    if i % 10 == 9 {
                        assert_eq!(ipam.release(&h(format!("{t}-{}", i - 5))).unwrap().len(), 2);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let allocs = ipams[0].allocations().unwrap();
    let v4: Vec<AllocationInfo> = allocs
        .iter()
        .filter(|a| a.address.is_ipv4())
        .cloned()
        .collect();
    let v6: Vec<AllocationInfo> = allocs
        .iter()
        .filter(|a| a.address.is_ipv6())
        .cloned()
        .collect();
    assert_all_distinct(&v4, 4 * 90);
    assert_all_distinct(&v6, 4 * 90);
    let handles: HashSet<String> = (0..4)
        .flat_map(|t| {
            (0..100)
                .filter(|i| i % 10 != 4)
                .map(move |i| h(format!("{t}-{i}")))
        })
        .collect();
    let fresh = Ipam::new(raw, c, clock).unwrap();
    let findings = fresh.check(&handles).unwrap();
    assert!(findings.is_clean(), "{findings:?}");
    eprintln!(
        "four instances: {} writes, {} lost compare-and-swaps",
        store.writes(),
        store.conflicts.load(Ordering::SeqCst)
    );
}

#[test]
fn two_nodes_racing_get_distinct_blocks() {
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    let c = cfg(vec![pool("10.0.0.0/20", 28)]);
    let threads: Vec<_> = ["node-a", "node-b", "node-c"]
        .into_iter()
        .map(|node| {
            let mut c = c.clone();
            c.node = node.into();
            let ipam = Ipam::new(raw.clone(), c, clock.clone()).unwrap();
            std::thread::spawn(move || {
                for i in 0..60 {
                    ipam.allocate(&attrs(format!("{node}-{i}")), &v4()).unwrap();
                }
                ipam
            })
        })
        .collect();
    let ipams: Vec<Ipam> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_all_distinct(&ipams[0].allocations().unwrap(), 180);
    let blocks = ipams[0].blocks().unwrap();
    for b in &blocks {
        let node = b.affinity.clone().unwrap();
        let allocs = ipams[0].allocations().unwrap();
        assert!(
            allocs
                .iter()
                .filter(|a| a.block == b.cidr)
                .all(|a| a.handle.starts_with(&format!("c{node}"))),
            "block {} of {node} holds another node's address",
            b.cidr
        );
    }
}

// ---------------------------------------------------------------- gc, check

#[test]
fn gc_respects_grace_and_never_frees_live_handles() {
    let env = Env::new(standard());
    env.alloc(1, &dual()).unwrap();
    env.alloc(2, &v4()).unwrap();
    env.alloc(3, &v4()).unwrap();
    let keep = live(&[&h(1)]);
    env.advance_ms(59_999);
    assert!(env.ipam.gc(&keep).unwrap().is_empty(), "inside the grace");
    env.advance_ms(1);
    env.alloc(4, &v4()).unwrap(); // an ADD in flight: allocated, endpoint not recorded yet
    let mut freed: Vec<String> = env
        .ipam
        .gc(&keep)
        .unwrap()
        .into_iter()
        .map(|a| a.handle)
        .collect();
    freed.sort();
    assert_eq!(freed, vec![h(2), h(3)]);
    assert_eq!(env.ipam.find(&h(1)).len(), 2, "live handle kept");
    assert_eq!(env.ipam.find(&h(4)).len(), 1, "young allocation kept");
    let usage = env.ipam.pools_usage().unwrap();
    assert_eq!(usage[0].quarantined, 2, "gc'd addresses are quarantined");
    assert!(env.ipam.gc(&keep).unwrap().is_empty());
    // Everything live: nothing is ever freed, however old.
    env.advance_ms(3_600_000);
    assert!(env.ipam.gc(&live(&[&h(1), &h(4)])).unwrap().is_empty());
}

#[test]
fn check_finds_leaks_and_problems() {
    let env = Env::new(standard());
    env.alloc(1, &v4()).unwrap();
    env.alloc(2, &dual()).unwrap();
    let findings = env.ipam.check(&live(&[&h(1)])).unwrap();
    assert!(findings.problems.is_empty(), "{:?}", findings.problems);
    let mut leaked: Vec<IpAddr> = findings.leaked.iter().map(|a| a.address).collect();
    leaked.sort();
    assert_eq!(leaked, vec![ip("10.244.0.2"), ip("fd00:10:244::1")]);
    assert!(findings
        .leaked
        .iter()
        .all(|a| a.pod_name == "pod-2" && a.allocated_at == T0 / 1000));
    assert!(env.ipam.check(&live(&[&h(1), &h(2)])).unwrap().is_clean());

    // Hand-made damage.
    let alloc = |handle: &str| Allocation {
        handle: handle.into(),
        container_id: "x".into(),
        ifname: "eth0".into(),
        pod_namespace: String::new(),
        pod_name: String::new(),
        allocated_at_ms: T0,
        node: None,
    };
    let mut rec = BlockRecord::new(
        net("10.244.1.0/26"),
        net("10.244.0.0/16"),
        Some("node-a".into()),
    );
    rec.allocations.insert(1, alloc("twice"));
    rec.allocations.insert(2, alloc("twice"));
    rec.allocations.insert(3, alloc("q"));
    rec.quarantine.insert(3, T0 + 1);
    rec.allocations.insert(64, alloc("outside"));
    let key = block_key(&rec.cidr);
    env.store
        .create(&key, &serde_json::to_vec(&rec).unwrap(), None)
        .unwrap()
        .unwrap();
    let stray = BlockRecord::new(
        net("172.16.0.0/26"),
        net("172.16.0.0/16"),
        Some("node-a".into()),
    );
    env.store
        .create(
            &block_key(&stray.cidr),
            &serde_json::to_vec(&stray).unwrap(),
            None,
        )
        .unwrap()
        .unwrap();
    let findings = env
        .ipam
        .check(&live(&[&h(1), &h(2), "twice", "q", "outside"]))
        .unwrap();
    let all = findings.problems.join("\n");
    for needle in [
        "handle twice holds 2 IPv4 addresses: 10.244.1.1, 10.244.1.2",
        "10.244.1.3 is both allocated (handle q) and quarantined",
        "ordinal 64 lies outside the block",
        "block 172.16.0.0/26 is not inside any configured pool",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in\n{all}");
    }
    assert_eq!(findings.problems.len(), 4, "{all}");
}

#[test]
fn corrupt_block_json_gives_corrupt_not_panic() {
    let raw = new_store();
    // Garbage where the pool's first block would go.
    raw.create(&block_key(&net("10.244.0.0/26")), b"\x00garbage", None)
        .unwrap()
        .unwrap();
    let env = Env::on(raw.clone(), standard());
    // Dynamic allocation steps around it and never overwrites it.
    assert_eq!(env.alloc(1, &v4()).unwrap(), vec![ip("10.244.0.64")]);
    assert_eq!(
        raw.get(&block_key(&net("10.244.0.0/26")))
            .unwrap()
            .unwrap()
            .value,
        b"\x00garbage"
    );
    // A static address inside it: Corrupt.
    let err = env.alloc(2, &fixed("10.244.0.5")).unwrap_err();
    match &err {
        IpamError::Corrupt { key, .. } => assert_eq!(key, "/weft/ipam/v1/blocks/10.244.0.0-26"),
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().contains("repair or delete the key"),
        "{err}"
    );
    // Views refuse to paper over it; check reports it.
    assert!(matches!(env.ipam.blocks(), Err(IpamError::Corrupt { .. })));
    assert!(matches!(
        env.ipam.pools_usage(),
        Err(IpamError::Corrupt { .. })
    ));
    let findings = env.ipam.check(&live(&[&h(1)])).unwrap();
    assert_eq!(findings.problems.len(), 1);
    assert!(
        findings.problems[0].contains("undecodable"),
        "{:?}",
        findings.problems
    );
    // Well-formed JSON that does not add up is Corrupt too.
    let mut rec = BlockRecord::new(net("10.244.5.0/26"), net("10.244.0.0/16"), None);
    let key = block_key(&net("10.244.6.0/26"));
    raw.create(&key, &serde_json::to_vec(&rec).unwrap(), None)
        .unwrap()
        .unwrap();
    let err = env.alloc(3, &fixed("10.244.6.1")).unwrap_err();
    assert!(matches!(err, IpamError::Corrupt { .. }), "{err:?}");
    rec.cidr = net("10.244.7.0/20");
    let kv = KeyValue {
        key: block_key(&rec.cidr),
        value: serde_json::to_vec(&rec).unwrap(),
        create_revision: 1,
        mod_revision: 1,
        lease: None,
    };
    assert!(matches!(
        BlockRecord::decode(&kv),
        Err(IpamError::Corrupt { .. })
    ));
}

#[test]
fn orphan_blocks_are_claimed_and_other_block_sizes_respected() {
    let raw = new_store();
    // A block nobody owns (affinity null), and a /27 key left by an older
    // config that overlaps the /26 at .128.
    let mut orphan = BlockRecord::new(net("10.0.0.0/26"), net("10.0.0.0/24"), None);
    orphan.allocations.insert(
        5,
        Allocation {
            handle: "old/eth0".into(),
            container_id: "old".into(),
            ifname: "eth0".into(),
            pod_namespace: String::new(),
            pod_name: String::new(),
            allocated_at_ms: T0,
            node: None,
        },
    );
    raw.create(
        &block_key(&orphan.cidr),
        &serde_json::to_vec(&orphan).unwrap(),
        None,
    )
    .unwrap()
    .unwrap();
    raw.create(&block_key(&net("10.0.0.160/27")), b"{}", None)
        .unwrap()
        .unwrap();
    let mut c = cfg(vec![pool("10.0.0.0/24", 26)]);
    c.quarantine = Duration::ZERO;
    let env = Env::on(raw, c);
    let mut got = Vec::new();
    // .0/26: 62 (the pool's .0 and the orphan's .5 are out), .64/26: 64,
    // .128/26: covered by the /27 key, .192/26: 63 (the pool's .255 is out).
    for i in 0..(62 + 64 + 63) {
        got.extend(env.alloc(i, &v4()).unwrap());
    }
    assert_eq!(got[0], ip("10.0.0.1"), "the orphan block was claimed");
    assert!(!got.contains(&ip("10.0.0.5")), "its allocation was kept");
    assert!(got.iter().all(|a| !net("10.0.0.128/26").contains(a)));
    let err = env.alloc("last", &v4()).unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err:?}");
}

// ---------------------------------------------------------------- property

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Model {
    held: BTreeMap<String, Vec<IpAddr>>,
    quarantine: HashMap<IpAddr, u64>,
}

impl Model {
    fn holder(&self, a: IpAddr) -> Option<&String> {
        self.held
            .iter()
            .find(|(_, v)| v.contains(&a))
            .map(|(k, _)| k)
    }

    fn quarantined(&self, a: IpAddr, now: u64) -> bool {
        self.quarantine.get(&a).is_some_and(|&u| u > now)
    }

    fn free(&self, usable: &[IpAddr], now: u64) -> usize {
        usable
            .iter()
            .filter(|&&a| self.holder(a).is_none() && !self.quarantined(a, now))
            .count()
    }
}

#[test]
fn random_operations_never_hand_out_an_address_twice() {
    let v4_pool = pool("10.1.0.0/27", 29);
    let v6_pool = pool("fd00::/123", 126);
    let mut c = cfg(vec![v4_pool.clone(), v6_pool.clone()]);
    c.quarantine = Duration::from_secs(30);
    let env = Env::new(c);
    let usable = |p: &PoolConfig| -> Vec<IpAddr> {
        let fam = p.family();
        let base = to_u128(p.cidr.network());
        (0..1u128 << (p.cidr.max_prefix_len() - p.cidr.prefix_len()))
            .map(|i| record::from_u128(fam, base + i))
            .filter(|&a| !reserved(&p.cidr, a))
            .collect()
    };
    let usable4 = usable(&v4_pool);
    let usable6 = usable(&v6_pool);
    assert_eq!((usable4.len(), usable6.len()), (30, 31));

    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut model = Model::default();
    let mut next_id = 0u64;
    let mut stats = BTreeMap::<&str, u64>::new();
    for step in 0..10_000 {
        let now = env.clock.now_ms();
        let roll = rng.below(100);
        let w0 = env.store.writes();
        match roll {
            0..=39 => {
                let req = match rng.below(3) {
                    0 => v4(),
                    1 => v6(),
                    _ => dual(),
                };
                next_id += 1;
                let name = format!("p{next_id}");
                let free4 = model.free(&usable4, now);
                let free6 = model.free(&usable6, now);
                let res = env.alloc(&name, &req);
                if req.ipv4 && free4 == 0 {
                    assert!(
                        matches!(
                            res,
                            Err(IpamError::Exhausted {
                                family: Family::V4,
                                ..
                            })
                        ),
                        "{step}: {res:?}"
                    );
                    *stats.entry("exhausted v4").or_default() += 1;
                } else if req.ipv6 && free6 == 0 {
                    assert!(
                        matches!(
                            res,
                            Err(IpamError::Exhausted {
                                family: Family::V6,
                                ..
                            })
                        ),
                        "{step}: {res:?}"
                    );
                    if req.ipv4 {
                        assert_eq!(env.store.writes(), w0, "nothing of it written");
                        *stats.entry("rolled back").or_default() += 1;
                    } else {
                        *stats.entry("exhausted v6").or_default() += 1;
                    }
                } else {
                    let got = res.unwrap_or_else(|e| panic!("{step}: {e}"));
                    assert_eq!(got.len(), usize::from(req.ipv4) + usize::from(req.ipv6));
                    assert_eq!(env.store.writes() - w0, 1, "one commit per allocation");
                    for &a in &got {
                        assert!(model.holder(a).is_none(), "{step}: {a} handed out twice");
                        assert!(
                            !model.quarantined(a, now),
                            "{step}: {a} handed out in quarantine"
                        );
                    }
                    model.held.insert(h(&name), got);
                    *stats.entry("allocated").or_default() += 1;
                }
            }
            40..=64 => {
                if model.held.is_empty() {
                    continue;
                }
                let i = rng.below(model.held.len() as u64) as usize;
                let handle = model.held.keys().nth(i).unwrap().clone();
                let mut want = model.held.remove(&handle).unwrap();
                want.sort();
                let got = env.ipam.release(&handle).unwrap();
                assert_eq!(got, want, "{step}");
                assert_eq!(env.store.writes() - w0, 1, "one commit per release");
                for a in want {
                    model.quarantine.insert(a, now + 30_000);
                }
                *stats.entry("released").or_default() += 1;
            }
            65..=69 => {
                assert!(env
                    .ipam
                    .release(&format!("ghost{step}/eth0"))
                    .unwrap()
                    .is_empty());
                assert_eq!(env.store.writes(), w0);
            }
            70..=77 => {
                if model.held.is_empty() {
                    continue;
                }
                let i = rng.below(model.held.len() as u64) as usize;
                let (handle, addrs) = model.held.iter().nth(i).unwrap();
                let name = handle.trim_start_matches('c').trim_end_matches("/eth0");
                let req = AllocRequest {
                    ipv4: addrs.iter().any(|a| a.is_ipv4()),
                    ipv6: addrs.iter().any(|a| a.is_ipv6()),
                    requested: vec![],
                };
                assert_eq!(
                    &env.alloc(name, &req).unwrap(),
                    addrs,
                    "{step}: not idempotent"
                );
                assert_eq!(env.store.writes(), w0);
            }
            78..=89 => env.advance_ms(rng.below(15_000)),
            90..=94 => {
                let list = if rng.below(2) == 0 {
                    &usable4
                } else {
                    &usable6
                };
                let a = list[rng.below(list.len() as u64) as usize];
                next_id += 1;
                let name = format!("s{next_id}");
                let res = env.alloc(
                    &name,
                    &AllocRequest {
                        requested: vec![a],
                        ..AllocRequest::default()
                    },
                );
                if let Some(holder) = model.holder(a) {
                    let err = res.unwrap_err();
                    assert!(err.to_string().contains(holder.as_str()), "{step}: {err}");
                    *stats.entry("static taken").or_default() += 1;
                } else if model.quarantined(a, now) {
                    let err = res.unwrap_err();
                    assert!(err.to_string().contains("quarantine"), "{step}: {err}");
                    *stats.entry("static quarantined").or_default() += 1;
                } else {
                    assert_eq!(res.unwrap(), vec![a], "{step}");
                    model.held.insert(h(&name), vec![a]);
                    *stats.entry("static ok").or_default() += 1;
                }
            }
            _ => {
                let handles: HashSet<String> = model.held.keys().cloned().collect();
                assert!(
                    env.ipam.gc(&handles).unwrap().is_empty(),
                    "{step}: gc freed a live handle"
                );
                assert_eq!(env.store.writes(), w0);
            }
        }

        // Invariants against the model after every operation.
        let now = env.clock.now_ms();
        let snap = env.ipam.snapshot().unwrap();
        let mut seen = HashMap::new();
        for a in &snap.allocations {
            assert!(
                seen.insert(a.address, a.handle.clone()).is_none(),
                "{step}: {} twice",
                a.address
            );
        }
        let mut want = HashMap::new();
        for (handle, addrs) in &model.held {
            for a in addrs {
                want.insert(*a, handle.clone());
            }
        }
        assert_eq!(seen, want, "{step}: store and model disagree");
        let q_model = |fam: fn(&IpAddr) -> bool| {
            model
                .quarantine
                .iter()
                .filter(|(a, &u)| fam(a) && u > now)
                .count() as u64
        };
        assert_eq!(
            snap.pools[0].allocated,
            want.keys().filter(|a| a.is_ipv4()).count() as u64
        );
        assert_eq!(
            snap.pools[0].quarantined,
            q_model(IpAddr::is_ipv4),
            "{step}"
        );
        assert_eq!(
            snap.pools[1].quarantined,
            q_model(IpAddr::is_ipv6),
            "{step}"
        );
        for (handle, addrs) in &model.held {
            let mut found = env.ipam.find(handle);
            found.sort();
            let mut addrs = addrs.clone();
            addrs.sort();
            assert_eq!(found, addrs, "{step}");
        }
        if step % 500 == 0 {
            let handles: HashSet<String> = model.held.keys().cloned().collect();
            let findings = env.ipam.check(&handles).unwrap();
            assert!(findings.is_clean(), "{step}: {findings:?}");
            routes::assert_routes_match(&*env.store.inner);
        }
    }
    eprintln!("{stats:?}");
    for what in [
        "allocated",
        "released",
        "exhausted v4",
        "exhausted v6",
        "rolled back",
        "static ok",
        "static taken",
        "static quarantined",
    ] {
        assert!(
            stats.get(what).copied().unwrap_or(0) > 0,
            "the run never hit {what}: {stats:?}"
        );
    }
}

#[test]
fn clocks() {
    let now = SystemClock.now_ms();
    assert!(now > T0, "the wall clock is after 2023");
    let c = ManualClock::new(5);
    c.advance(Duration::from_secs(2));
    assert_eq!(c.now_ms(), 2005);
    c.set(7);
    assert_eq!(c.now_ms(), 7);
}

#[test]
fn rollback_releases_without_quarantine() {
    // One /30 block: .1 and .2 usable.
    let env = Env::new(cfg(vec![pool("10.9.0.0/30", 30)]));
    env.alloc(1, &v4()).unwrap();
    env.alloc(2, &v4()).unwrap();
    let w = env.store.writes();
    assert_eq!(env.ipam.rollback(&h(2)).unwrap(), vec![ip("10.9.0.2")]);
    assert_eq!(env.store.writes() - w, 1);
    assert!(env.ipam.rollback(&h(2)).unwrap().is_empty());
    assert_eq!(env.ipam.pools_usage().unwrap()[0].quarantined, 0);
    // Free again at once.
    assert_eq!(env.alloc(3, &v4()).unwrap(), vec![ip("10.9.0.2")]);
}

// ---------------------------------------------------------------- cluster-wide

/// Node `node` on the shared store `raw` (with its own counting wrapper).
fn node_env(raw: &Arc<dyn Store>, clock: &Arc<ManualClock>, mut c: IpamConfig, node: &str) -> Env {
    c.node = node.into();
    let store = Counting::new(raw.clone());
    let ipam = Ipam::new(store.clone(), c, clock.clone()).unwrap();
    Env {
        store,
        clock: clock.clone(),
        ipam,
    }
}

/// Writes per allocation of `threads` threads x `per` allocations on one
/// Ipam, after its first block is claimed.
fn writes_per_allocation(batching: bool, threads: usize, per: usize) -> f64 {
    let mut c = standard();
    c.batching = batching;
    let env = Env::new(c);
    let ipam = Arc::new(env.ipam);
    let w = env.store.writes();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let ipam = ipam.clone();
            std::thread::spawn(move || {
                (0..per)
                    .map(|i| ipam.allocate(&attrs(format!("{t}-{i}")), &v4()).unwrap()[0].addr)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all = HashSet::new();
    for t in workers {
        for a in t.join().unwrap() {
            assert!(all.insert(a), "{a} handed out twice");
        }
    }
    assert_eq!(all.len(), threads * per);
    assert_all_distinct(&ipam.allocations().unwrap(), threads * per);
    let handles: HashSet<String> = (0..threads)
        .flat_map(|t| (0..per).map(move |i| h(format!("{t}-{i}"))))
        .collect();
    let findings = ipam.check(&handles).unwrap();
    assert!(findings.is_clean(), "{findings:?}");
    (env.store.writes() - w) as f64 / (threads * per) as f64
}

#[test]
fn group_commit_batches_concurrent_allocations() {
    let off = writes_per_allocation(false, 16, 50);
    let on = writes_per_allocation(true, 16, 50);
    let single = writes_per_allocation(true, 1, 50);
    eprintln!(
        "16 threads x 50 allocations: {off:.3} writes per allocation with batching off, {on:.3} with batching on; 1 thread, batching on: {single:.3}"
    );
    assert_eq!(off, 1.0, "without batching every allocation is one commit");
    assert!(on <= 0.5, "batching on: {on} writes per allocation");
    assert_eq!(
        single, 1.0,
        "a lone caller is not delayed into a batch of one"
    );
}

#[test]
fn a_batch_with_a_lost_condition_is_replanned_whole() {
    // Two Ipams of one node on one store, each batching 8 threads: they keep
    // invalidating each other's batches; nothing is lost or doubled.
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    let c = cfg(vec![pool("10.0.0.0/20", 27)]);
    let ipams: Vec<Arc<Ipam>> = (0..2)
        .map(|_| Arc::new(Ipam::new(raw.clone(), c.clone(), clock.clone()).unwrap()))
        .collect();
    let workers: Vec<_> = (0..16)
        .map(|t| {
            let ipam = ipams[t % 2].clone();
            std::thread::spawn(move || {
                for i in 0..40 {
                    ipam.allocate(&attrs(format!("{t}-{i}")), &v4()).unwrap();
                }
            })
        })
        .collect();
    for t in workers {
        t.join().unwrap();
    }
    assert_all_distinct(&ipams[0].allocations().unwrap(), 16 * 40);
}

/// Two nodes on one store: node-a fills its one block (a0..a6) and node-b
/// claims its own with b0, so node-a's next address must be borrowed.
fn a_full_beside_b(c: IpamConfig) -> (Arc<dyn Store>, Arc<ManualClock>, Env, Env) {
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    let a = node_env(&raw, &clock, c.clone(), "node-a");
    let b = node_env(&raw, &clock, c, "node-b");
    for i in 0..7 {
        a.alloc(format!("a{i}"), &v4()).unwrap();
    }
    b.alloc("b0", &v4()).unwrap();
    (raw, clock, a, b)
}

fn borrow_cfg() -> IpamConfig {
    // Blocks of 8 in a pool of 4 blocks; one block per node.
    let mut c = cfg(vec![pool("10.1.0.0/27", 29)]);
    c.strict_affinity = false;
    c.max_blocks_per_node = Some(1);
    c
}

#[test]
fn borrowing_from_another_nodes_block() {
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    let a = node_env(&raw, &clock, borrow_cfg(), "node-a");
    let b = node_env(&raw, &clock, borrow_cfg(), "node-b");
    // node-a's block .0/29 holds .1-.7 (the pool's .0 is reserved).
    for i in 0..7 {
        a.alloc(format!("a{i}"), &v4()).unwrap();
    }
    assert_eq!(b.alloc("b0", &v4()).unwrap(), vec![ip("10.1.0.8")]);
    // node-a is full and at its limit: it borrows from node-b's block.
    let w = a.store.writes();
    let got = a.alloc("a7", &v4()).unwrap();
    assert_eq!(got, vec![ip("10.1.0.9")]);
    assert_eq!(a.store.writes() - w, 1, "a borrow is one commit");
    let raw_rec =
        BlockRecord::decode(&raw.get(&block_key(&net("10.1.0.8/29"))).unwrap().unwrap()).unwrap();
    assert_eq!(
        raw_rec.affinity.as_deref(),
        Some("node-b"),
        "the block stays node-b's"
    );
    assert_eq!(raw_rec.allocations[&1].node.as_deref(), Some("node-a"));
    // Idempotent, findable, no write.
    let w = a.store.writes();
    assert_eq!(a.alloc("a7", &v4()).unwrap(), got);
    assert_eq!(a.store.writes(), w);
    assert_eq!(a.ipam.find(&h("a7")), got);
    assert!(b.ipam.find(&h("a7")).is_empty(), "node-b does not hold it");
    // node-b's next address steps around the borrowed one.
    assert_eq!(b.alloc("b1", &v4()).unwrap(), vec![ip("10.1.0.10")]);
    // check: the borrowed address is node-a's, not node-b's.
    let a_live: HashSet<String> = (0..8).map(|i| h(format!("a{i}"))).collect();
    let b_live = live(&[&h("b0"), &h("b1")]);
    assert!(a.ipam.check(&a_live).unwrap().is_clean());
    assert!(b.ipam.check(&b_live).unwrap().is_clean());
    let leaks = b.ipam.check(&live(&[])).unwrap().leaked;
    assert_eq!(leaks.len(), 2, "node-b's leaks are its own two: {leaks:?}");
    // gc of node-b never frees node-a's borrowed address.
    clock.advance(Duration::from_secs(3600));
    let freed = b.ipam.gc(&b_live).unwrap();
    assert!(freed.is_empty(), "{freed:?}");
    // A restarted node-a (empty index, rebuilt from its first listing)
    // releases the borrowed address by handle.
    let a2 = node_env(&raw, &clock, borrow_cfg(), "node-a");
    assert_eq!(a2.ipam.find(&h("a7")), got);
    assert_eq!(a2.ipam.release(&h("a7")).unwrap(), got);
    assert!(a2.ipam.find(&h("a7")).is_empty());
    // The first node-a's cache still believes it holds it; a release there
    // finds nothing to free (the compare-and-swap brings the fresh record).
    assert!(a.ipam.release(&h("a7")).unwrap().is_empty());
    // Another Ipam of node-a borrowed since: release falls back to a scan.
    let a3 = node_env(&raw, &clock, borrow_cfg(), "node-a");
    let borrowed = a.alloc("a8", &v4()).unwrap();
    assert_eq!(borrowed.len(), 1);
    assert!(
        net("10.1.0.8/29").contains(&borrowed[0])
            || net("10.1.0.16/29").contains(&borrowed[0])
            || net("10.1.0.24/29").contains(&borrowed[0])
    );
    assert_eq!(a3.ipam.release(&h("a8")).unwrap(), borrowed);
}

#[test]
fn gc_frees_borrowed_leaks_of_this_node_only() {
    let (_raw, clock, a, b) = a_full_beside_b(borrow_cfg());
    let borrowed = a.alloc("a7", &v4()).unwrap();
    clock.advance(Duration::from_secs(120));
    let a_live: HashSet<String> = (0..7).map(|i| h(format!("a{i}"))).collect();
    let freed = a.ipam.gc(&a_live).unwrap();
    assert_eq!(freed.len(), 1);
    assert_eq!(freed[0].address, borrowed[0]);
    assert_eq!(freed[0].handle, h("a7"));
    assert_eq!(
        b.ipam.find(&h("b0")),
        vec![ip("10.1.0.8")],
        "node-b's own kept"
    );
}

#[test]
fn strict_affinity_never_borrows() {
    let mut c = borrow_cfg();
    c.strict_affinity = true;
    let (_raw, _clock, a, _b) = a_full_beside_b(c);
    let err = a.alloc("a7", &v4()).unwrap_err();
    assert!(
        matches!(
            err,
            IpamError::Exhausted {
                max_blocks: Some(1),
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn borrowing_when_the_pool_has_no_unclaimed_block() {
    // No block limit: the node borrows once every block is claimed.
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    let mut c = cfg(vec![pool("10.1.0.0/28", 29)]);
    c.strict_affinity = false;
    let a = node_env(&raw, &clock, c.clone(), "node-a");
    let b = node_env(&raw, &clock, c, "node-b");
    assert_eq!(b.alloc("b0", &v4()).unwrap(), vec![ip("10.1.0.1")]);
    for i in 0..7 {
        a.alloc(format!("a{i}"), &v4()).unwrap();
    }
    // .8/29 is node-a's (.15 is the pool's broadcast): 7 addresses; then
    // node-a borrows from node-b's .0/29.
    assert_eq!(a.alloc("a7", &v4()).unwrap(), vec![ip("10.1.0.2")]);
    // Everything full: Exhausted, nothing written.
    for i in 8..13 {
        a.alloc(format!("a{i}"), &v4()).unwrap();
    }
    let err = a.alloc("a13", &v4()).unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err:?}");
    assert_all_distinct(&a.ipam.allocations().unwrap(), 14);
}

#[test]
fn empty_blocks_are_given_back_after_the_grace() {
    let mut c = cfg(vec![pool("10.2.0.0/24", 28)]);
    c.quarantine = Duration::from_secs(30);
    c.block_release_grace = Duration::from_secs(300);
    let env = Env::new(c);
    for i in 0..20 {
        env.alloc(i, &v4()).unwrap();
    }
    assert_eq!(env.ipam.blocks().unwrap().len(), 2);
    // Empty the second block (.16/28: handles 15..20).
    for i in 15..20 {
        env.ipam.release(&h(i)).unwrap();
    }
    assert!(
        env.ipam.release_empty_blocks().unwrap().is_empty(),
        "quarantine in force"
    );
    env.advance_ms(30_000 + 299_999);
    assert!(
        env.ipam.release_empty_blocks().unwrap().is_empty(),
        "inside the grace"
    );
    env.advance_ms(1);
    let w = env.store.writes();
    assert_eq!(
        env.ipam.release_empty_blocks().unwrap(),
        vec![net("10.2.0.16/28")]
    );
    assert_eq!(env.store.writes() - w, 1, "one delete");
    assert_eq!(
        env.ipam.blocks().unwrap().len(),
        1,
        "the block with allocations stays"
    );
    // Empty for a long time, but never with an allocation in it: the first
    // block keeps its 15 addresses.
    env.advance_ms(3_600_000);
    assert!(env.ipam.release_empty_blocks().unwrap().is_empty());
    assert_eq!(env.ipam.allocations().unwrap().len(), 15);
    // The given-back block can be claimed again (by anyone).
    assert!(net("10.2.0.16/28").contains(&env.alloc(99, &fixed("10.2.0.20")).unwrap()[0]));
}

#[test]
fn a_block_with_a_borrowed_address_is_not_given_back() {
    let (_raw, clock, a, b) = a_full_beside_b(borrow_cfg());
    a.alloc("a7", &v4()).unwrap(); // borrowed from node-b's block
    b.ipam.release(&h("b0")).unwrap();
    clock.advance(Duration::from_secs(3600));
    assert!(b.ipam.release_empty_blocks().unwrap().is_empty());
    // Once node-a gives the address back, the block empties and, after the
    // grace, goes.
    a.ipam.release(&h("a7")).unwrap();
    clock.advance(Duration::from_secs(30));
    assert!(
        b.ipam.release_empty_blocks().unwrap().is_empty(),
        "grace restarts"
    );
    clock.advance(Duration::from_secs(300));
    assert_eq!(
        b.ipam.release_empty_blocks().unwrap(),
        vec![net("10.1.0.8/29")]
    );
}

#[test]
fn a_gone_nodes_leaks_are_collected_after_the_grace() {
    let (raw, clock, a, b) = a_full_beside_b(borrow_cfg());
    b.alloc("b1", &v4()).unwrap();
    a.alloc("a7", &v4()).unwrap(); // node-a borrows in node-b's block
                                   // node-b borrows in node-c's block.
    let cnode = node_env(&raw, &clock, borrow_cfg(), "node-c");
    cnode.alloc("c0", &v4()).unwrap();
    for i in 2..7 {
        b.alloc(format!("b{i}"), &v4()).unwrap();
    }
    let b_borrowed = b.alloc("b7", &v4()).unwrap();
    assert!(
        net("10.1.0.16/29").contains(&b_borrowed[0]),
        "{b_borrowed:?}"
    );
    let grace = Duration::from_secs(600);
    let all_live: HashSet<String> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // A live node is never collected.
    assert_eq!(
        a.ipam.collect_node("node-b", &all_live, grace).unwrap(),
        NodeCollection::default()
    );
    assert_eq!(
        a.ipam.collect_node("node-a", &live(&[]), grace).unwrap(),
        NodeCollection::default(),
        "never itself"
    );
    let live_nodes: HashSet<String> = ["node-a", "node-c"].iter().map(|s| s.to_string()).collect();
    // First sight of node-b gone starts the grace.
    assert_eq!(
        a.ipam.collect_node("node-b", &live_nodes, grace).unwrap(),
        NodeCollection::default()
    );
    clock.advance(Duration::from_secs(599));
    assert_eq!(
        a.ipam.collect_node("node-b", &live_nodes, grace).unwrap(),
        NodeCollection::default()
    );
    clock.advance(Duration::from_secs(1));
    let got = a.ipam.collect_gone_nodes(&live_nodes, grace).unwrap();
    let mut freed: Vec<String> = got.freed.iter().map(|f| f.handle.clone()).collect();
    freed.sort();
    let mut want: Vec<String> = (0..8).map(|i| h(format!("b{i}"))).collect();
    want.sort();
    assert_eq!(freed, want, "node-b's own and its borrowed address");
    assert_eq!(got.blocks, vec![net("10.1.0.8/29")]);
    // node-a's borrowed address in node-b's former block is untouched, the
    // block is unclaimed now, node-c's own address kept.
    assert_eq!(a.ipam.find(&h("a7")), vec![ip("10.1.0.10")]);
    assert_eq!(cnode.ipam.find(&h("c0")).len(), 1);
    let rec =
        BlockRecord::decode(&raw.get(&block_key(&net("10.1.0.8/29"))).unwrap().unwrap()).unwrap();
    assert_eq!(rec.affinity, None);
    assert_eq!(rec.allocations.len(), 1);
    let a_live: HashSet<String> = (0..8).map(|i| h(format!("a{i}"))).collect();
    assert!(a.ipam.check(&a_live).unwrap().is_clean());
    assert!(cnode.ipam.check(&live(&[&h("c0")])).unwrap().is_clean());
    // Nothing more to do.
    let again = a.ipam.collect_gone_nodes(&live_nodes, grace).unwrap();
    assert_eq!(again, NodeCollection::default());
}

#[test]
fn an_empty_block_of_a_gone_node_is_deleted() {
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    let mut c = cfg(vec![pool("10.3.0.0/24", 28)]);
    c.quarantine = Duration::ZERO;
    let a = node_env(&raw, &clock, c.clone(), "node-a");
    let b = node_env(&raw, &clock, c, "node-b");
    a.alloc("a0", &v4()).unwrap();
    b.alloc("b0", &v4()).unwrap();
    let live_nodes = live(&["node-a"]);
    let grace = Duration::from_secs(60);
    a.ipam.collect_node("node-b", &live_nodes, grace).unwrap();
    clock.advance(grace);
    let got = a.ipam.collect_node("node-b", &live_nodes, grace).unwrap();
    assert_eq!(got.freed.len(), 1);
    assert_eq!(got.blocks, vec![net("10.3.0.16/28")]);
    assert!(raw.get(&block_key(&net("10.3.0.16/28"))).unwrap().is_none());
    assert_eq!(a.ipam.blocks().unwrap().len(), 1);
}

#[test]
fn four_nodes_with_eight_threads_each_share_one_store() {
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    // 8 blocks of 256. node-2 and node-3 claim three blocks each up front
    // (one static address in each); node-0 and node-1 may hold one block
    // and must borrow the rest of their 400 addresses from the others.
    let mut c = cfg(vec![pool("10.8.0.0/21", 24)]);
    c.strict_affinity = false;
    let nodes: Vec<Arc<Ipam>> = (0..4)
        .map(|n| {
            let mut c = c.clone();
            c.node = format!("node-{n}");
            if n < 2 {
                c.max_blocks_per_node = Some(1);
            }
            Arc::new(Ipam::new(raw.clone(), c, clock.clone()).unwrap())
        })
        .collect();
    for (n, blocks) in [(2, [2, 3, 4]), (3, [5, 6, 7])] {
        for b in blocks {
            nodes[n]
                .allocate(&attrs(format!("pre-{b}")), &fixed(&format!("10.8.{b}.10")))
                .unwrap();
        }
    }
    let seen = Arc::new(std::sync::Mutex::new(HashMap::<IpAddr, String>::new()));
    let workers: Vec<_> = (0..4)
        .flat_map(|n| (0..8).map(move |t| (n, t)))
        .map(|(n, t)| {
            let ipam = nodes[n].clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let name = format!("n{n}-{t}-{i}");
                    let got = ipam.allocate(&attrs(&name), &v4()).unwrap();
                    assert_eq!(got.len(), 1);
                    let prev = seen.lock().unwrap().insert(got[0].addr, h(&name));
                    assert!(
                        prev.is_none(),
                        "{} handed out twice ({prev:?})",
                        got[0].addr
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4 * 8 * 50);
    let snap = nodes[0].snapshot().unwrap();
    assert_all_distinct(&snap.allocations, 4 * 8 * 50 + 6);
    // No lost allocation: every address handed out is in the store, held by
    // the handle it was handed to.
    let stored: HashMap<IpAddr, String> = snap
        .allocations
        .iter()
        .map(|a| (a.address, a.handle.clone()))
        .collect();
    for (addr, handle) in seen.iter() {
        assert_eq!(stored.get(addr), Some(handle), "{addr} lost");
    }
    // Borrowing happened, and each node's check is clean.
    let affinity: HashMap<IpNet, String> = snap
        .blocks
        .iter()
        .map(|b| (b.cidr, b.affinity.clone().unwrap_or_default()))
        .collect();
    let borrowed = snap
        .allocations
        .iter()
        .filter(|a| {
            !a.handle
                .starts_with(&format!("c{}", affinity[&a.block].replace("node-", "n")))
                && !a.handle.starts_with("cpre")
        })
        .count();
    assert!(borrowed >= 2 * (400 - 256), "only {borrowed} borrowed");
    for (n, ipam) in nodes.iter().enumerate() {
        let mut handles: HashSet<String> = (0..8)
            .flat_map(|t| (0..50).map(move |i| h(format!("n{n}-{t}-{i}"))))
            .collect();
        if n == 2 {
            handles.extend([2, 3, 4].map(|b| h(format!("pre-{b}"))));
        }
        if n == 3 {
            handles.extend([5, 6, 7].map(|b| h(format!("pre-{b}"))));
        }
        let findings = ipam.check(&handles).unwrap();
        assert!(findings.is_clean(), "node-{n}: {findings:?}");
        for hd in handles.iter().take(20) {
            assert_eq!(ipam.find(hd).len(), 1, "node-{n} finds {hd}");
        }
    }
    routes::assert_routes_match(&*raw);
    eprintln!("four nodes x 8 threads x 50: {borrowed} borrowed addresses");
}
