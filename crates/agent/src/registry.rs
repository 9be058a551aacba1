//! The node registry and the routes that follow it.
//!
//! Every weftd registers its node under `/weft/nodes/v1/<name>` on a lease it
//! keeps alive: the node's underlay addresses and VTEP MAC. The blocks a node
//! owns are already in the store (IPAM's block records carry their
//! affinity). A reconciler watches both and makes the kernel's routes to every
//! other node's blocks exactly what they say, through the data-path seam: a
//! node that stops renewing its lease disappears from everyone's routes when
//! the lease expires; a block claimed anywhere appears everywhere within the
//! watch latency.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use weft_datapath::{Datapath, PeerNode, RoutingMode};
use weft_store::{EventKind, Store, StoreError, WatchMessage};

/// Where nodes register.
pub const NODES_PREFIX: &str = "/weft/nodes/v1/";
/// Where IPAM keeps its blocks (and so who owns which block).
const BLOCKS_PREFIX: &str = "/weft/ipam/v1/blocks/";
/// The reconciler watches this prefix, which covers both.
const WATCH_PREFIX: &str = "/weft/";
/// Changes arriving within this window are applied in one sync.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// What a node publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    #[serde(default)]
    pub underlay_v4: Option<Ipv4Addr>,
    #[serde(default)]
    pub underlay_v6: Option<Ipv6Addr>,
    /// Lower-case colon-separated MAC of the node's VXLAN device, when it
    /// runs the overlay.
    #[serde(default)]
    pub vtep_mac: Option<String>,
    /// weft version, for `weft status` across a cluster.
    #[serde(default)]
    pub version: String,
}

/// The part of an IPAM block record the registry needs: who owns the block,
/// and which of its addresses other nodes borrowed.
#[derive(Debug, Deserialize)]
struct BlockOwner {
    cidr: IpNet,
    #[serde(default)]
    affinity: Option<String>,
    #[serde(default)]
    allocations: BTreeMap<u32, BorrowedBy>,
}

#[derive(Debug, Deserialize)]
struct BorrowedBy {
    /// Set only when a node other than the block's owner holds the address.
    #[serde(default)]
    node: Option<String>,
}

/// Address `ordinal` of `block`, as a host route (/32 or /128).
fn host_net(block: &IpNet, ordinal: u32) -> Option<IpNet> {
    match block {
        IpNet::V4(n) => {
            let a = u32::from(n.network()).checked_add(ordinal)?;
            Some(IpNet::from(std::net::IpAddr::V4(Ipv4Addr::from(a))))
        }
        IpNet::V6(n) => {
            let a = u128::from(n.network()).checked_add(u128::from(ordinal))?;
            Some(IpNet::from(std::net::IpAddr::V6(Ipv6Addr::from(a))))
        }
    }
}

/// What the reconciler knows: nodes by name, block owners by block, and
/// borrowed addresses (a host route each, to the borrowing node: more
/// specific than its block's route, so longest-prefix match sends traffic to
/// where the pod really is).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub nodes: BTreeMap<String, NodeRecord>,
    pub blocks: BTreeMap<IpNet, String>,
    pub borrowed: BTreeMap<IpNet, (IpNet, String)>,
}

impl ClusterView {
    /// Applies one stored key (a node or a block) or its deletion.
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        if let Some(name) = key.strip_prefix(NODES_PREFIX) {
            match value.and_then(|v| serde_json::from_slice::<NodeRecord>(v).ok()) {
                Some(rec) => {
                    self.nodes.insert(name.to_string(), rec);
                }
                None => {
                    self.nodes.remove(name);
                }
            }
        } else if let Some(escaped) = key.strip_prefix(BLOCKS_PREFIX) {
            // forget what this block said before, then take what it says now
            self.blocks.retain(|cidr, _| escape(cidr) != escaped);
            self.borrowed
                .retain(|_, (block, _)| escape(block) != escaped);
            let Some(rec) = value.and_then(|v| serde_json::from_slice::<BlockOwner>(v).ok()) else {
                return;
            };
            if let Some(owner) = rec.affinity {
                self.blocks.insert(rec.cidr, owner);
            }
            for (ordinal, a) in rec.allocations {
                if let (Some(node), Some(host)) = (a.node, host_net(&rec.cidr, ordinal)) {
                    self.borrowed.insert(host, (rec.cidr, node));
                }
            }
        }
    }

    /// The other nodes with their blocks, as the data path wants them. A
    /// block whose owner is not registered (gone, lease expired) is not
    /// routed: nobody would answer for it.
    pub fn peers(&self, me: &str) -> Vec<PeerNode> {
        self.nodes
            .values()
            .filter(|n| n.name != me)
            .map(|n| PeerNode {
                name: n.name.clone(),
                underlay_v4: n.underlay_v4,
                underlay_v6: n.underlay_v6,
                vtep_mac: n.vtep_mac.as_deref().and_then(crate::agent::parse_mac),
                blocks: self
                    .blocks
                    .iter()
                    .filter(|(_, owner)| **owner == n.name)
                    .map(|(cidr, _)| *cidr)
                    .chain(
                        self.borrowed
                            .iter()
                            .filter(|(_, (_, holder))| *holder == n.name)
                            .map(|(host, _)| *host),
                    )
                    .collect(),
            })
            .collect()
    }
}

fn escape(cidr: &IpNet) -> String {
    cidr.to_string().replace('/', "-")
}

/// Registers `rec` under a lease of `ttl` and keeps it alive until the
/// process ends. A lost lease (the store was away longer than the TTL) is
/// replaced by a new registration.
pub fn start_registration(store: Arc<dyn Store>, rec: NodeRecord, ttl: Duration) {
    std::thread::Builder::new()
        .name("registry".into())
        .spawn(move || {
            let key = format!("{NODES_PREFIX}{}", rec.name);
            let value = serde_json::to_vec(&rec).expect("node record serialises");
            let mut lease = None;
            loop {
                let step = match lease {
                    Some(id) => store.keep_alive(id).map(|()| id),
                    None => register(&*store, &key, &value, ttl),
                };
                match step {
                    Ok(id) => lease = Some(id),
                    Err(StoreError::LeaseNotFound { .. }) => {
                        tracing::warn!(node = %rec.name, "node lease lost; registering again");
                        lease = None;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew the node registration; retrying")
                    }
                }
                std::thread::sleep(ttl / 3);
            }
        })
        .expect("spawn registry thread");
}

fn register(store: &dyn Store, key: &str, value: &[u8], ttl: Duration) -> Result<u64, StoreError> {
    let lease = store.grant_lease(ttl)?;
    // a record left by this node's previous run is replaced (same name)
    let _ = store.delete(key, None)?;
    match store.create(key, value, Some(lease))? {
        Ok(_) => {
            tracing::info!(key, ttl_s = ttl.as_secs(), "node registered");
            Ok(lease)
        }
        Err(_) => Err(StoreError::Unavailable {
            reason: format!("{key} was registered by someone else at the same moment"),
        }),
    }
}

/// Keeps this node's routes to every other node's blocks in line with the
/// store, until the process ends.
pub fn start_reconciler(
    store: Arc<dyn Store>,
    datapath: Arc<dyn Datapath>,
    me: String,
    mode: RoutingMode,
    device: String,
) {
    std::thread::Builder::new()
        .name("routes".into())
        .spawn(move || loop {
            if let Err(e) = reconcile_until_lost(&*store, &*datapath, &me, mode, &device) {
                tracing::warn!(error = %e, "route reconciler lost the store; re-listing in 1 s");
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .expect("spawn route reconciler");
}

/// Lists, syncs, then follows the watch until it ends (compaction, lost
/// connection); the caller starts over with a fresh list.
fn reconcile_until_lost(
    store: &dyn Store,
    datapath: &dyn Datapath,
    me: &str,
    mode: RoutingMode,
    device: &str,
) -> Result<(), StoreError> {
    let listing = store.list(WATCH_PREFIX)?;
    let mut view = ClusterView::default();
    for kv in &listing.kvs {
        view.apply(&kv.key, Some(&kv.value));
    }
    sync(datapath, me, mode, device, &view);
    let watch = store.watch(WATCH_PREFIX, listing.revision)?;
    let mut dirty_since: Option<Instant> = None;
    loop {
        let wait = match dirty_since {
            Some(t) => DEBOUNCE.saturating_sub(t.elapsed()),
            None => Duration::from_secs(3600),
        };
        match watch.rx.recv_timeout(wait) {
            Ok(WatchMessage::Event(ev)) => {
                let value = (ev.kind == EventKind::Put).then_some(ev.kv.value.as_slice());
                let before = view.peers(me);
                view.apply(&ev.kv.key, value);
                if view.peers(me) != before {
                    dirty_since.get_or_insert_with(Instant::now);
                }
            }
            Ok(WatchMessage::Compacted { compact_revision }) => {
                return Err(StoreError::Unavailable {
                    reason: format!("watch compacted at {compact_revision}"),
                })
            }
            Ok(WatchMessage::Closed { reason }) => return Err(StoreError::Unavailable { reason }),
            Err(RecvTimeoutError::Timeout) => {
                if dirty_since.take().is_some() {
                    sync(datapath, me, mode, device, &view);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(StoreError::Unavailable {
                    reason: "watch ended".into(),
                })
            }
        }
    }
}

fn sync(datapath: &dyn Datapath, me: &str, mode: RoutingMode, device: &str, view: &ClusterView) {
    let peers = view.peers(me);
    match datapath.sync_peers(mode, device, &peers) {
        Ok(r) => tracing::info!(
            peers = peers.len(),
            added = r.added,
            removed = r.removed,
            "routes to other nodes synced"
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot sync routes to other nodes; will retry on the next change")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn block(cidr: &str, owner: Option<&str>) -> (String, Vec<u8>) {
        let c: IpNet = cidr.parse().unwrap();
        (
            format!("{BLOCKS_PREFIX}{}", escape(&c)),
            serde_json::to_vec(&serde_json::json!({"cidr": cidr, "pool": "10.244.0.0/16", "affinity": owner, "allocations": {}})).unwrap(),
        )
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
        let key = format!("{BLOCKS_PREFIX}10.244.0.64-26");
        let rec = serde_json::json!({"cidr": "10.244.0.64/26", "pool": "10.244.0.0/16", "affinity": "b",
            "allocations": {"1": {"handle": "x/eth0"}, "5": {"handle": "y/eth0", "node": "c"}}});
        v.apply(&key, Some(&serde_json::to_vec(&rec).unwrap()));
        let peers = v.peers("a");
        let of = |n: &str| peers.iter().find(|p| p.name == n).unwrap().blocks.clone();
        assert_eq!(of("b"), vec!["10.244.0.64/26".parse::<IpNet>().unwrap()]);
        assert_eq!(
            of("c"),
            vec!["10.244.0.69/32".parse::<IpNet>().unwrap()],
            "host route to the borrower"
        );
        // b itself routes the borrowed address to c as well
        assert!(v
            .peers("b")
            .iter()
            .any(|p| p.name == "c" && p.blocks.contains(&"10.244.0.69/32".parse().unwrap())));
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
    fn garbage_in_the_store_never_panics_and_is_ignored() {
        let mut v = ClusterView::default();
        v.apply(&format!("{NODES_PREFIX}x"), Some(b"{not json"));
        v.apply(&format!("{BLOCKS_PREFIX}junk"), Some(b"[]"));
        v.apply("/weft/ipam/v1/pools/10.244.0.0-16", Some(b"{}"));
        assert!(v.nodes.is_empty() && v.blocks.is_empty());
    }

    #[test]
    fn registration_and_the_reconciler_follow_the_store() {
        use weft_datapath::{Op, RecordingDatapath};
        use weft_store::embedded::EmbeddedStore;
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
        let dp = RecordingDatapath::new();
        start_reconciler(
            store.clone(),
            Arc::new(dp.clone()),
            "a".into(),
            RoutingMode::Overlay,
            "weft.vxlan".into(),
        );
        start_registration(
            store.clone(),
            NodeRecord {
                name: "b".into(),
                underlay_v4: Some(Ipv4Addr::new(198, 18, 0, 12)),
                underlay_v6: None,
                vtep_mac: None,
                version: "t".into(),
            },
            Duration::from_secs(2),
        );
        let (k, val) = block("10.244.0.64/26", Some("b"));
        store.create(&k, &val, None).unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let synced_b = dp
                .calls_of(Op::SyncPeers)
                .iter()
                .any(|c| format!("{c:?}").contains("10.244.0.64/26"));
            if synced_b {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "b's block never reached the data path: {:?}",
                dp.calls()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
