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
use crate::record::to_u128;

mod allocate;
mod borrowing;
mod concurrency;
mod config;
mod costs;
mod gc_check;
mod local;
mod nodes;
mod property;
mod routes;
mod statics;

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

fn assert_all_distinct(allocs: &[AllocationInfo], expect: usize) {
    assert_eq!(allocs.len(), expect);
    let addrs: HashSet<IpAddr> = allocs.iter().map(|a| a.address).collect();
    assert_eq!(addrs.len(), expect, "an address was handed out twice");
    let handles: HashSet<&str> = allocs.iter().map(|a| a.handle.as_str()).collect();
    assert_eq!(handles.len(), expect, "a handle holds two addresses");
}

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
