use super::*;
use weft_ipam::{block_key, route_key};

fn node(name: &str, last: u8) -> Vec<u8> {
    serde_json::to_vec(&NodeRecord {
        name: name.into(),
        underlay_v4: Some(Ipv4Addr::new(198, 18, 0, last)),
        underlay_v6: None,
        vtep_mac: Some(format!("02:00:00:00:00:{last:02x}")),
        version: "t".into(),
    })
    .unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// A block record as IPAM writes it (the fields the registry reads).
fn block(cidr: &str, owner: Option<&str>) -> (String, Vec<u8>) {
    (
        block_key(&net(cidr)),
        serde_json::to_vec(&serde_json::json!({"cidr": cidr, "pool": "10.244.0.0/16", "affinity": owner, "allocations": {}})).unwrap(),
    )
}

/// A route summary: key and value.
fn summary(cidr: &str, owner: Option<&str>, borrowed: &[(u32, &str)]) -> (String, Vec<u8>) {
    let s = RouteSummary {
        cidr: net(cidr),
        affinity: owner.map(str::to_string),
        borrowed: borrowed.iter().map(|&(o, n)| (o, n.to_string())).collect(),
    };
    (route_key(&s.cidr), s.encode())
}

/// The routes `me` would have: peer -> its blocks and host routes.
fn routes_of(v: &ClusterView, me: &str) -> BTreeMap<String, Vec<IpNet>> {
    v.peers(me)
        .into_iter()
        .map(|p| (p.name, p.blocks))
        .collect()
}

#[test]
fn the_watched_prefix_covers_nodes_and_summaries_but_not_blocks() {
    assert!(NODES_PREFIX.starts_with(WATCH_PREFIX));
    assert!(ROUTES_PREFIX.starts_with(WATCH_PREFIX));
    assert!(!BLOCKS_PREFIX.starts_with(WATCH_PREFIX));
}

#[test]
fn peers_are_the_other_registered_nodes_with_their_blocks() {
    let mut v = ClusterView::default();
    v.apply(&format!("{NODES_PREFIX}a"), Some(&node("a", 11)));
    v.apply(&format!("{NODES_PREFIX}b"), Some(&node("b", 12)));
    for (cidr, owner) in [
        ("10.244.0.0/26", "a"),
        ("10.244.0.64/26", "b"),
        ("10.244.0.128/26", "b"),
        ("10.244.0.192/26", "gone"),
    ] {
        let (k, val) = block(cidr, Some(owner));
        v.apply(&k, Some(&val));
    }
    let peers = v.peers("a");
    assert_eq!(peers.len(), 1, "only b: a is me, 'gone' is not registered");
    assert_eq!(peers[0].name, "b");
    assert_eq!(peers[0].blocks.len(), 2);
    assert_eq!(peers[0].vtep_mac, Some([2, 0, 0, 0, 0, 12]));
    // b's lease expires: its node key is deleted, its routes go
    v.apply(&format!("{NODES_PREFIX}b"), None);
    assert!(v.peers("a").is_empty());
    // a block deleted (given back) leaves the view
    let (k, _) = block("10.244.0.0/26", None);
    v.apply(&k, None);
    assert!(!v.blocks.keys().any(|c| c.to_string() == "10.244.0.0/26"));
}

#[test]
fn a_borrowed_address_is_routed_to_the_node_that_holds_it() {
    let mut v = ClusterView::default();
    for (name, last) in [("a", 11), ("b", 12), ("c", 13)] {
        v.apply(&format!("{NODES_PREFIX}{name}"), Some(&node(name, last)));
    }
    // b's block, with ordinal 5 borrowed by c
    let key = block_key(&net("10.244.0.64/26"));
    let rec = serde_json::json!({"cidr": "10.244.0.64/26", "pool": "10.244.0.0/16", "affinity": "b",
        "allocations": {"1": {"handle": "x/eth0"}, "5": {"handle": "y/eth0", "node": "c"}}});
    v.apply(&key, Some(&serde_json::to_vec(&rec).unwrap()));
    let peers = v.peers("a");
    let of = |n: &str| peers.iter().find(|p| p.name == n).unwrap().blocks.clone();
    assert_eq!(of("b"), vec![net("10.244.0.64/26")]);
    assert_eq!(
        of("c"),
        vec![net("10.244.0.69/32")],
        "host route to the borrower"
    );
    // b itself routes the borrowed address to c as well
    assert!(v
        .peers("b")
        .iter()
        .any(|p| p.name == "c" && p.blocks.contains(&net("10.244.0.69/32"))));
    // released: the host route goes
    let rec = serde_json::json!({"cidr": "10.244.0.64/26", "pool": "10.244.0.0/16", "affinity": "b",
        "allocations": {"1": {"handle": "x/eth0"}}});
    v.apply(&key, Some(&serde_json::to_vec(&rec).unwrap()));
    assert!(v
        .peers("a")
        .iter()
        .find(|p| p.name == "c")
        .unwrap()
        .blocks
        .is_empty());
}

#[test]
fn summary_events_replace_what_the_block_record_said() {
    let mut v = ClusterView::default();
    for (name, last) in [("a", 11), ("b", 12), ("c", 13)] {
        v.apply(&format!("{NODES_PREFIX}{name}"), Some(&node(name, last)));
    }
    // The initial listing: b's block record with .69 borrowed by c.
    let rec = serde_json::json!({"cidr": "10.244.0.64/26", "pool": "10.244.0.0/16", "affinity": "b",
        "allocations": {"5": {"node": "c"}}});
    v.apply(
        &block_key(&net("10.244.0.64/26")),
        Some(&serde_json::to_vec(&rec).unwrap()),
    );
    assert_eq!(routes_of(&v, "a")["c"], vec![net("10.244.0.69/32")]);
    // Its summary now says .69 was released and .70 borrowed by a.
    let (k, val) = summary("10.244.0.64/26", Some("b"), &[(6, "a")]);
    v.apply(&k, Some(&val));
    assert!(
        routes_of(&v, "a")["c"].is_empty(),
        "the old host route goes"
    );
    assert_eq!(
        routes_of(&v, "c")["a"],
        vec![net("10.244.0.70/32")],
        "the new one is there"
    );
    assert_eq!(routes_of(&v, "a")["b"], vec![net("10.244.0.64/26")]);
    // A block known only from its summary (claimed after the listing).
    let (k2, val) = summary("10.244.1.0/26", Some("c"), &[]);
    v.apply(&k2, Some(&val));
    assert_eq!(routes_of(&v, "a")["c"], vec![net("10.244.1.0/26")]);
    // The block lost its affinity (its node went): only the borrowed
    // address is routed.
    let (_, val) = summary("10.244.0.64/26", None, &[(6, "a")]);
    v.apply(&k, Some(&val));
    assert!(routes_of(&v, "a")["b"].is_empty());
    assert_eq!(routes_of(&v, "c")["a"], vec![net("10.244.0.70/32")]);
    // Summaries deleted (blocks given back or collected): no route left.
    v.apply(&k, None);
    v.apply(&k2, None);
    assert!(v.blocks.is_empty() && v.borrowed.is_empty(), "{v:?}");
}

#[test]
fn garbage_in_the_store_never_panics_and_is_ignored() {
    let mut v = ClusterView::default();
    v.apply(&format!("{NODES_PREFIX}x"), Some(b"{not json"));
    v.apply(&format!("{BLOCKS_PREFIX}junk"), Some(b"[]"));
    v.apply(&format!("{ROUTES_PREFIX}junk"), Some(b"[]"));
    v.apply(&format!("{ROUTES_PREFIX}10.244.0.0-26"), Some(b"{}"));
    v.apply("/weft/ipam/v1/pools/10.244.0.0-16", Some(b"{}"));
    v.apply("/weft/cluster/v1/other/x", Some(b"{}"));
    assert!(v.nodes.is_empty() && v.blocks.is_empty() && v.borrowed.is_empty());
}

/// Waits until the recording data path's routes are `want` (block ->
/// peer).
fn wait_routes(dp: &weft_datapath::RecordingDatapath, want: &[(&str, &str)]) {
    let want: BTreeMap<IpNet, String> = want.iter().map(|&(c, p)| (net(c), p.into())).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got: BTreeMap<IpNet, String> = dp
            .peer_routes()
            .into_iter()
            .map(|(c, r)| (c, r.peer))
            .collect();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "routes {got:?}, want {want:?}: {:?}",
            dp.calls()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn registration_and_the_reconciler_follow_the_store() {
    use weft_datapath::RecordingDatapath;
    use weft_ipam::{AllocRequest, AllocationAttrs, Ipam, IpamConfig, PoolConfig, SystemClock};
    use weft_store::embedded::EmbeddedStore;
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    // A block written before route summaries existed: only its record.
    let (k, val) = block("10.244.0.64/26", Some("b"));
    store.create(&k, &val, None).unwrap().unwrap();
    let dp = RecordingDatapath::new();
    start_reconciler(
        store.clone(),
        Arc::new(dp.clone()),
        "a".into(),
        RoutingMode::Native,
        "weft.vxlan".into(),
        None,
    );
    start_registration(
        store.clone(),
        NODES_PREFIX,
        NodeRecord {
            name: "b".into(),
            underlay_v4: Some(Ipv4Addr::new(198, 18, 0, 12)),
            underlay_v6: None,
            vtep_mac: None,
            version: "t".into(),
        },
        Duration::from_secs(2),
    );
    wait_routes(&dp, &[("10.244.0.64/26", "b")]);
    // b's IPAM claims a block: its summary reaches a's routes.
    let pools = vec![PoolConfig::with_block_prefix(net("10.245.0.0/24"), 26)];
    let ipam = Ipam::new(
        store.clone(),
        IpamConfig::new("b", pools),
        Arc::new(SystemClock),
    )
    .unwrap();
    let attrs = AllocationAttrs {
        container_id: "c1".into(),
        ifname: "eth0".into(),
        pod_namespace: "default".into(),
        pod_name: "p1".into(),
    };
    let req = AllocRequest {
        ipv4: true,
        ..AllocRequest::default()
    };
    ipam.allocate(&attrs, &req).unwrap();
    wait_routes(&dp, &[("10.244.0.64/26", "b"), ("10.245.0.0/26", "b")]);
    // b's registration goes: all its routes go.
    store
        .delete(&format!("{NODES_PREFIX}b"), None)
        .unwrap()
        .unwrap();
    wait_routes(&dp, &[]);
}

/// A store that runs `hook` once, just before the first listing of
/// `/weft/cluster/v1/`: a write landing between the reconciler's two lists.
struct Racy {
    inner: Arc<dyn Store>,
    hook: std::sync::Mutex<Option<Hook>>,
}

type Hook = Box<dyn FnOnce(&dyn Store) + Send>;

impl Store for Racy {
    fn backend(&self) -> &'static str {
        "racy"
    }
    fn get(&self, key: &str) -> weft_store::StoreResult<Option<weft_store::KeyValue>> {
        self.inner.get(key)
    }
    fn list(&self, prefix: &str) -> weft_store::StoreResult<weft_store::Listing> {
        if prefix == WATCH_PREFIX {
            if let Some(hook) = self.hook.lock().unwrap().take() {
                hook(&*self.inner);
            }
        }
        self.inner.list(prefix)
    }
    fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<u64>,
    ) -> weft_store::StoreResult<Result<u64, weft_store::Conflict>> {
        self.inner.create(key, value, lease)
    }
    fn update(
        &self,
        key: &str,
        value: &[u8],
        expected: u64,
    ) -> weft_store::StoreResult<Result<u64, weft_store::Conflict>> {
        self.inner.update(key, value, expected)
    }
    fn delete(
        &self,
        key: &str,
        expected: Option<u64>,
    ) -> weft_store::StoreResult<Result<Option<u64>, weft_store::Conflict>> {
        self.inner.delete(key, expected)
    }
    fn commit(
        &self,
        ops: &[TxnOp<'_>],
    ) -> weft_store::StoreResult<Result<u64, weft_store::TxnConflict>> {
        self.inner.commit(ops)
    }
    fn watch(&self, prefix: &str, after: u64) -> weft_store::StoreResult<weft_store::Watch> {
        self.inner.watch(prefix, after)
    }
    fn grant_lease(&self, ttl: Duration) -> weft_store::StoreResult<u64> {
        self.inner.grant_lease(ttl)
    }
    fn keep_alive(&self, lease: u64) -> weft_store::StoreResult<()> {
        self.inner.keep_alive(lease)
    }
    fn revoke_lease(&self, lease: u64) -> weft_store::StoreResult<()> {
        self.inner.revoke_lease(lease)
    }
}

use weft_store::TxnOp;

/// Writes a block record and its summary in one commit, as IPAM does.
fn claim(store: &dyn Store, cidr: &str, owner: &str) {
    let (bk, bv) = block(cidr, Some(owner));
    let (sk, sv) = summary(cidr, Some(owner), &[]);
    let ops = [
        TxnOp::Create {
            key: &bk,
            value: &bv,
            lease: None,
        },
        TxnOp::Put {
            key: &sk,
            value: &sv,
        },
    ];
    store.commit(&ops).unwrap().unwrap();
}

#[test]
fn a_block_deleted_between_the_two_listings_is_not_routed() {
    use weft_datapath::RecordingDatapath;
    use weft_store::embedded::EmbeddedStore;
    let inner: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    inner
        .create(&format!("{NODES_PREFIX}b"), &node("b", 12), None)
        .unwrap()
        .unwrap();
    claim(&*inner, "10.244.0.64/26", "b");
    // Given back after the block listing, before the cluster listing.
    let hook = |s: &dyn Store| {
        let ops = [
            TxnOp::Delete {
                key: &block_key(&net("10.244.0.64/26")),
                expected: None,
            },
            TxnOp::Delete {
                key: &route_key(&net("10.244.0.64/26")),
                expected: None,
            },
        ];
        s.commit(&ops).unwrap().unwrap();
    };
    let store = Arc::new(Racy {
        inner: inner.clone(),
        hook: std::sync::Mutex::new(Some(Box::new(hook))),
    });
    let dp = RecordingDatapath::new();
    start_reconciler(
        store,
        Arc::new(dp.clone()),
        "a".into(),
        RoutingMode::Native,
        "weft.vxlan".into(),
        None,
    );
    // A later claim: once it is routed, the deleted block must not be.
    std::thread::sleep(Duration::from_millis(100));
    claim(&*inner, "10.244.1.0/26", "b");
    wait_routes(&dp, &[("10.244.1.0/26", "b")]);
}

#[test]
fn a_node_leaving_waits_out_a_grace_but_other_changes_do_not() {
    let peer = |name: &str| PeerNode {
        name: name.into(),
        underlay_v4: None,
        underlay_v6: None,
        vtep_mac: None,
        blocks: Vec::new(),
    };
    let (a, b) = (peer("a"), peer("b"));
    let (only_a, only_b, both) = (vec![a.clone()], vec![b.clone()], vec![a, b]);
    assert_eq!(sync_delay(&only_a, &both), DEBOUNCE);
    assert_eq!(sync_delay(&both, &only_a), NODE_GONE_GRACE);
    assert_eq!(sync_delay(&only_b, &only_a), NODE_GONE_GRACE);
}

/// A restarting weftd re-registers by delete then create; its routes on the
/// other nodes must survive the gap between the two writes (600 ms here, as
/// seen on a loaded etcd).
#[test]
fn a_node_re_registering_keeps_its_routes_throughout() {
    use weft_datapath::RecordingDatapath;
    use weft_store::embedded::EmbeddedStore;
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let (k, val) = block("10.244.0.64/26", Some("b"));
    store.create(&k, &val, None).unwrap().unwrap();
    let key = format!("{NODES_PREFIX}b");
    store.create(&key, &node("b", 12), None).unwrap().unwrap();
    let dp = RecordingDatapath::new();
    start_reconciler(
        store.clone(),
        Arc::new(dp.clone()),
        "a".into(),
        RoutingMode::Native,
        "weft.vxlan".into(),
        None,
    );
    wait_routes(&dp, &[("10.244.0.64/26", "b")]);
    store.delete(&key, None).unwrap().unwrap();
    let back = Instant::now() + Duration::from_millis(600);
    let watch_until = Instant::now() + NODE_GONE_GRACE + Duration::from_millis(500);
    let mut recreated = false;
    while Instant::now() < watch_until {
        if !recreated && Instant::now() >= back {
            store.create(&key, &node("b", 12), None).unwrap().unwrap();
            recreated = true;
        }
        assert_eq!(
            dp.peer_routes().len(),
            1,
            "b's route went while it re-registered: {:?}",
            dp.calls()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
