use std::sync::mpsc;

use weft_datapath::{RecordingDatapath, RoutingMode};
use weft_store::embedded::EmbeddedStore;

use super::*;
use crate::registry::{start_reconciler, NODE_GONE_GRACE};

fn cnode(name: &str, ips: &[&str], mac: Option<&str>) -> ClusterNode {
    ClusterNode {
        name: name.into(),
        internal_ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
        annotations: mac
            .map(|m| BTreeMap::from([(VTEP_MAC_ANNOTATION.to_string(), m.to_string())]))
            .unwrap_or_default(),
        heartbeat_lost: false,
    }
}

#[test]
fn a_node_becomes_a_registration_with_its_internal_addresses_and_vtep_mac() {
    let n = cnode(
        "b",
        &["2001:2::12", "198.18.0.12", "198.18.0.99"],
        Some("02:00:00:00:00:0c"),
    );
    let r = node_record(&n, true).unwrap();
    assert_eq!(r.name, "b");
    assert_eq!(r.underlay_v4, Some("198.18.0.12".parse().unwrap()));
    assert_eq!(r.underlay_v6, Some("2001:2::12".parse().unwrap()));
    assert_eq!(r.vtep_mac.as_deref(), Some("02:00:00:00:00:0c"));
    // native routing needs no annotation
    let bare = cnode("c", &["198.18.0.13"], None);
    assert_eq!(
        node_record(&bare, false).unwrap().underlay_v4,
        Some("198.18.0.13".parse().unwrap())
    );
}

#[test]
fn a_node_missing_what_routing_needs_is_ignored_saying_what_is_missing() {
    let e = node_record(&cnode("c", &["198.18.0.13"], None), true).unwrap_err();
    assert!(e.contains(VTEP_MAC_ANNOTATION), "{e}");
    let e = node_record(&cnode("c", &["198.18.0.13"], Some("zz")), true).unwrap_err();
    assert!(e.contains("not a MAC"), "{e}");
    let e = node_record(&cnode("c", &[], Some("02:00:00:00:00:01")), true).unwrap_err();
    assert!(e.contains("InternalIP"), "{e}");

    // in the feed: not routed, but live (its addresses are not collected)
    let (tx, rx) = mpsc::channel();
    let mut feed = NodeFeed::new(rx, true);
    let mut lost = cnode("d", &["198.18.0.14"], Some("02:00:00:00:00:0e"));
    lost.heartbeat_lost = true;
    tx.send(vec![
        cnode("b", &["198.18.0.12"], Some("02:00:00:00:00:0c")),
        cnode("c", &["198.18.0.13"], None),
        lost,
    ])
    .unwrap();
    assert!(feed.first(Duration::from_secs(1)));
    assert_eq!(feed.records().keys().collect::<Vec<_>>(), ["b"]);
    let live = feed.live().lock().unwrap().clone().unwrap();
    assert_eq!(live.into_iter().collect::<Vec<_>>(), ["b", "c"]);
    assert_eq!(feed.warned.len(), 1, "{:?}", feed.warned);
    // the same again warns no more; nothing new arrived
    assert!(!feed.poll());
}

/// Routes follow the Nodes: a Node's blocks are routed to its InternalIP,
/// and a deleted Node's routes go after the grace, not before.
#[test]
fn a_deleted_node_loses_its_routes_after_the_grace() {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let v = serde_json::json!({"cidr": "10.244.0.64/26", "pool": "10.244.0.0/16",
        "affinity": "b", "allocations": {}});
    let key = weft_ipam::block_key(&"10.244.0.64/26".parse().unwrap());
    store
        .create(&key, &serde_json::to_vec(&v).unwrap(), None)
        .unwrap()
        .unwrap();
    // a node record in the store counts for nothing when Nodes are read
    let stale = serde_json::to_vec(&NodeRecord {
        name: "b".into(),
        underlay_v4: Some("198.18.0.77".parse().unwrap()),
        underlay_v6: None,
        vtep_mac: None,
        version: "old".into(),
    })
    .unwrap();
    store
        .create(&format!("{NODES_PREFIX}b"), &stale, None)
        .unwrap()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let b = cnode("b", &["198.18.0.12"], None);
    tx.send(vec![cnode("a", &["198.18.0.11"], None), b.clone()])
        .unwrap();
    let mut feed = NodeFeed::new(rx, false);
    assert!(feed.first(Duration::from_secs(1)));
    let dp = RecordingDatapath::new();
    start_reconciler(
        store,
        Arc::new(dp.clone()),
        "a".into(),
        RoutingMode::Native,
        "weft.vxlan".into(),
        Some(feed),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let routes = dp.peer_routes();
        if let Some(r) = routes.get(&"10.244.0.64/26".parse().unwrap()) {
            assert_eq!(r.peer, "b");
            // to the Node's address, not the stale record's
            let calls = format!("{:?}", dp.calls());
            assert!(calls.contains("198.18.0.12"), "{calls}");
            assert!(!calls.contains("198.18.0.77"), "{calls}");
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", dp.calls());
        std::thread::sleep(Duration::from_millis(20));
    }
    // b's Node is deleted: its route stays through the grace, then goes
    tx.send(vec![cnode("a", &["198.18.0.11"], None)]).unwrap();
    let gone = Instant::now();
    while gone.elapsed() < NODE_GONE_GRACE - Duration::from_millis(300) {
        assert_eq!(dp.peer_routes().len(), 1, "{:?}", dp.calls());
        std::thread::sleep(Duration::from_millis(20));
    }
    while !dp.peer_routes().is_empty() {
        assert!(
            gone.elapsed() < NODE_GONE_GRACE + Duration::from_secs(3),
            "{:?}",
            dp.calls()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Node's name and the annotations patched onto it.
type Patched = (String, BTreeMap<String, Option<String>>);

/// The Node API as a test sees it: annotations recorded.
#[derive(Default)]
struct FakeApi {
    patched: Mutex<Vec<Patched>>,
}

impl NodeApi for FakeApi {
    fn watch_nodes(&self) -> Receiver<Vec<ClusterNode>> {
        mpsc::channel().1
    }
    fn annotate_node(&self, node: &str, a: BTreeMap<String, Option<String>>) -> StoreResult<()> {
        self.patched.lock().unwrap().push((node.into(), a));
        Ok(())
    }
}

#[test]
fn old_weftnode_records_move_onto_their_nodes_and_are_deleted() {
    let store = EmbeddedStore::in_memory();
    for (name, mac) in [("b", "02:00:00:00:00:0b"), ("c", "02:00:00:00:00:0c")] {
        let rec = NodeRecord {
            name: name.into(),
            underlay_v4: Some("198.18.0.12".parse().unwrap()),
            underlay_v6: None,
            vtep_mac: Some(mac.into()),
            version: "old".into(),
        };
        let lease = store.grant_lease(Duration::from_secs(60)).unwrap();
        store
            .create(
                &format!("{NODES_PREFIX}{name}"),
                &serde_json::to_vec(&rec).unwrap(),
                Some(lease),
            )
            .unwrap()
            .unwrap();
    }
    let api = FakeApi::default();
    // b's Node has no annotation yet; c's weftd already wrote a current one
    let nodes = [
        cnode("b", &["198.18.0.12"], None),
        cnode("c", &["198.18.0.13"], Some("02:00:00:00:00:ff")),
    ];
    move_weftnodes(&store, &api, &nodes);
    let patched = api.patched.lock().unwrap().clone();
    assert_eq!(
        patched,
        [(
            "b".to_string(),
            own_annotations(Some("02:00:00:00:00:0b".into()))
        )]
    );
    assert!(store.list(NODES_PREFIX).unwrap().kvs.is_empty());
    // idempotent
    move_weftnodes(&store, &api, &nodes);
    assert_eq!(api.patched.lock().unwrap().len(), 1);
}
