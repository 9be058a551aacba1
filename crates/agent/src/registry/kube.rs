//! The node registry from Node objects (`--store kubernetes`).
//!
//! A Node already says most of what a [`NodeRecord`] does: its name, its
//! underlay addresses (`status.addresses`, InternalIP) and whether its
//! kubelet is alive (see [`weft_k8s::store::nodes`]). What it lacks, weftd
//! adds as an annotation on its own Node ([`VTEP_MAC_ANNOTATION`], the
//! VXLAN device's MAC, for overlay routing); a node's blocks are in the
//! store's IPAMBlocks already. So the store holds no node records (no
//! `WeftNode` objects): the reconciler reads nodes from the Nodes, blocks
//! and borrowed addresses from the store, and gone-node collection counts
//! a Node whose heartbeat is not lost as live.
//!
//! The store keeps only a weftd's presence ([`weft_store::AGENTS_PREFIX`],
//! on a lease): `weft store migrate` refuses while a weftd runs, which a
//! Node (up with or without weftd) cannot say.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weft_k8s::store::nodes::{ClusterNode, VTEP_MAC_ANNOTATION};
use weft_k8s::store::KubeStore;
use weft_store::{Store, StoreResult, NODES_PREFIX};

use super::NodeRecord;

/// The Kubernetes API's nodes, as the registry uses them (a seam: tests
/// feed their own).
pub trait NodeApi: Send + Sync {
    /// Every Node, the whole set on each change (after the first listing).
    fn watch_nodes(&self) -> Receiver<Vec<ClusterNode>>;
    /// Sets (`Some`) or removes (`None`) annotations of a Node.
    fn annotate_node(&self, node: &str, a: BTreeMap<String, Option<String>>) -> StoreResult<()>;
}

impl NodeApi for KubeStore {
    fn watch_nodes(&self) -> Receiver<Vec<ClusterNode>> {
        KubeStore::watch_nodes(self)
    }
    fn annotate_node(&self, node: &str, a: BTreeMap<String, Option<String>>) -> StoreResult<()> {
        KubeStore::annotate_node(self, node, a)
    }
}

/// What weftd writes on its own Node: the VTEP MAC in overlay mode, and
/// none in native mode (a stale one removed).
pub fn own_annotations(vtep_mac: Option<String>) -> BTreeMap<String, Option<String>> {
    BTreeMap::from([(VTEP_MAC_ANNOTATION.to_string(), vtep_mac)])
}

/// A Node as a registration (pure), or why it cannot be routed to: no
/// InternalIP, or (in overlay mode) no usable VTEP MAC annotation.
pub fn node_record(n: &ClusterNode, overlay: bool) -> Result<NodeRecord, String> {
    let v4 = n.internal_ips.iter().find_map(|ip| match ip {
        IpAddr::V4(a) => Some(*a),
        IpAddr::V6(_) => None,
    });
    let v6 = n.internal_ips.iter().find_map(|ip| match ip {
        IpAddr::V6(a) => Some(*a),
        IpAddr::V4(_) => None,
    });
    if v4.is_none() && v6.is_none() {
        return Err("no InternalIP in its status.addresses".into());
    }
    let vtep_mac = n.annotations.get(VTEP_MAC_ANNOTATION).cloned();
    if overlay {
        match vtep_mac.as_deref() {
            None => {
                return Err(format!(
                    "no {VTEP_MAC_ANNOTATION} annotation (its weftd has not started yet, or is too old to write it)"
                ))
            }
            Some(m) if crate::endpoint::parse_mac(m).is_none() => {
                return Err(format!("{VTEP_MAC_ANNOTATION} {m:?} is not a MAC address"))
            }
            Some(_) => {}
        }
    }
    Ok(NodeRecord {
        name: n.name.clone(),
        underlay_v4: v4,
        underlay_v6: v6,
        vtep_mac,
        version: String::new(),
    })
}

/// The nodes that count as live for gone-node collection: shared with the
/// housekeeping thread; `None` until the first listing.
pub type LiveNodes = Arc<Mutex<Option<BTreeSet<String>>>>;

/// The Node watch as the reconciler consumes it: the latest routable
/// records, the live set for collection, a warning once per node and
/// reason for a Node it cannot route to.
pub struct NodeFeed {
    rx: Receiver<Vec<ClusterNode>>,
    overlay: bool,
    nodes: Vec<ClusterNode>,
    records: BTreeMap<String, NodeRecord>,
    live: LiveNodes,
    warned: BTreeSet<(String, String)>,
    listed: bool,
}

impl NodeFeed {
    pub fn new(rx: Receiver<Vec<ClusterNode>>, overlay: bool) -> NodeFeed {
        NodeFeed {
            rx,
            overlay,
            nodes: Vec::new(),
            records: BTreeMap::new(),
            live: Arc::default(),
            warned: BTreeSet::new(),
            listed: false,
        }
    }

    /// The live set, for the housekeeping thread.
    pub fn live(&self) -> LiveNodes {
        self.live.clone()
    }

    /// The Nodes as last listed.
    pub fn nodes(&self) -> &[ClusterNode] {
        &self.nodes
    }

    /// The routable nodes as last listed.
    pub fn records(&self) -> &BTreeMap<String, NodeRecord> {
        &self.records
    }

    /// Waits up to `limit` for the first listing; false if none came.
    pub fn first(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.listed {
            match self
                .rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(nodes) => self.take(nodes),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return false
                }
            }
        }
        self.poll();
        true
    }

    /// Takes what arrived since the last call; true if anything did.
    pub fn poll(&mut self) -> bool {
        let mut last = None;
        while let Ok(nodes) = self.rx.try_recv() {
            last = Some(nodes);
        }
        match last {
            Some(nodes) => {
                self.take(nodes);
                true
            }
            None => false,
        }
    }

    fn take(&mut self, nodes: Vec<ClusterNode>) {
        self.listed = true;
        let mut records = BTreeMap::new();
        let mut live = BTreeSet::new();
        for n in &nodes {
            if n.heartbeat_lost {
                continue;
            }
            live.insert(n.name.clone());
            match node_record(n, self.overlay) {
                Ok(r) => {
                    records.insert(n.name.clone(), r);
                }
                Err(why) => {
                    if self.warned.insert((n.name.clone(), why.clone())) {
                        tracing::warn!(node = %n.name, "node not routed: {why}");
                    }
                }
            }
        }
        // a node fixed and broken again is warned about again
        self.warned.retain(|(name, _)| !records.contains_key(name));
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(live);
        self.records = records;
        self.nodes = nodes;
    }
}

/// Moves the node records of earlier versions (`WeftNode` objects) onto
/// the Nodes: a record's VTEP MAC becomes its Node's annotation when the
/// Node has none yet (its own weftd writes a current one), and the record
/// is deleted. Every weftd runs it at start; it is idempotent.
pub fn move_weftnodes(store: &dyn Store, api: &dyn NodeApi, nodes: &[ClusterNode]) {
    let old = match store.list(NODES_PREFIX) {
        Ok(l) => l.kvs,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list old node records (WeftNode) to move them; the next start tries again");
            return;
        }
    };
    for kv in old {
        let name = kv.key.trim_start_matches(NODES_PREFIX);
        let rec = serde_json::from_slice::<NodeRecord>(&kv.value).ok();
        let node = nodes.iter().find(|n| n.name == name);
        if let (Some(mac), Some(n)) = (rec.and_then(|r| r.vtep_mac), node) {
            if !n.annotations.contains_key(VTEP_MAC_ANNOTATION) {
                if let Err(e) = api.annotate_node(name, own_annotations(Some(mac))) {
                    tracing::warn!(node = name, error = %e, "cannot move its WeftNode's VTEP MAC onto the Node; its weftd writes it when it starts");
                }
            }
        }
        match store.delete(&kv.key, Some(kv.mod_revision)) {
            Ok(_) => tracing::info!(
                node = name,
                "moved the node's WeftNode record to its Node object"
            ),
            Err(e) => {
                tracing::warn!(node = name, error = %e, "cannot delete an old WeftNode record")
            }
        }
    }
}

#[cfg(test)]
mod tests;
