//! The cluster's nodes as the Node objects describe them, for weftd's node
//! registry on `--store kubernetes`: every Node's InternalIP addresses,
//! weft's annotations (what a Node does not carry of itself, e.g. the VTEP
//! MAC), and whether its kubelet's heartbeat was lost; and the patch by
//! which weftd writes its own node's annotations.
//!
//! Liveness is the Ready condition: the node lifecycle controller sets it
//! to `Unknown` when the kubelet stops renewing its Lease in
//! `kube-node-lease` (node-monitor-grace-period), so the Node carries what
//! the Lease says without every weftd watching every node's Lease, which
//! is renewed every 10 s (a cluster-wide event stream to every node for
//! nothing but a timestamp).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::mpsc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde_json::json;
use weft_store::{StoreError, StoreResult};

/// weft's annotations on a Node start with this.
pub const ANNOTATION_PREFIX: &str = "weft.dev/";
/// The MAC of the node's VXLAN device (overlay routing).
pub const VTEP_MAC_ANNOTATION: &str = "weft.dev/vtep-mac";
/// The field manager of weftd's patches of its Node.
pub const FIELD_MANAGER: &str = "weftd";

/// One Node, as the registry needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub name: String,
    /// `status.addresses` of type InternalIP, in the order the Node lists
    /// them (unparsable ones left out).
    pub internal_ips: Vec<IpAddr>,
    /// The `weft.dev/` annotations.
    pub annotations: BTreeMap<String, String>,
    /// The Ready condition is `Unknown`: the kubelet's heartbeat (its
    /// Lease) was lost. A NotReady node (kubelet up, e.g. its network not
    /// ready yet) is not lost: its pods may run.
    pub heartbeat_lost: bool,
}

/// The registry's view of `n` (pure).
pub fn cluster_node(n: &Node) -> ClusterNode {
    let status = n.status.as_ref();
    let internal_ips = status
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    let heartbeat_lost = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "Unknown");
    let annotations = n
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    ClusterNode {
        name: n.metadata.name.clone().unwrap_or_default(),
        internal_ips,
        annotations,
        heartbeat_lost,
    }
}

/// Watches every Node and sends the whole set whenever what the registry
/// needs of it changed (heartbeat-only status updates send nothing), the
/// first time after the first complete listing. Ends when `tx`'s receiver
/// is gone.
pub async fn watch(client: Client, tx: mpsc::Sender<Vec<ClusterNode>>) {
    let api: Api<Node> = Api::all(client);
    let events = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut events = std::pin::pin!(events);
    let mut nodes: BTreeMap<String, ClusterNode> = BTreeMap::new();
    let mut relist: Option<BTreeMap<String, ClusterNode>> = None;
    let mut listed = false;
    let mut sent: Option<Vec<ClusterNode>> = None;
    let mut failing = false;
    while let Some(ev) = events.next().await {
        match ev {
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot watch the cluster's Nodes (weftd needs list and watch on nodes, deploy/kubernetes/clusterrole.yaml); retrying");
                    failing = true;
                }
                continue;
            }
            Ok(Event::Init) => relist = Some(BTreeMap::new()),
            Ok(Event::InitApply(n)) => {
                let c = cluster_node(&n);
                relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(c.name.clone(), c);
            }
            Ok(Event::InitDone) => {
                nodes = relist.take().unwrap_or_default();
                listed = true;
            }
            Ok(Event::Apply(n)) => {
                let c = cluster_node(&n);
                nodes.insert(c.name.clone(), c);
            }
            Ok(Event::Delete(n)) => {
                nodes.remove(n.metadata.name.as_deref().unwrap_or_default());
            }
        }
        if failing {
            tracing::info!("watching the cluster's Nodes again");
            failing = false;
        }
        if !listed {
            continue;
        }
        let now: Vec<ClusterNode> = nodes.values().cloned().collect();
        if sent.as_ref() != Some(&now) {
            if tx.send(now.clone()).is_err() {
                return;
            }
            sent = Some(now);
        }
    }
}

/// Sets (`Some`) or removes (`None`) annotations of Node `node`, as field
/// manager [`FIELD_MANAGER`] (a merge patch: other annotations stay).
pub async fn annotate(
    client: Client,
    node: &str,
    annotations: &BTreeMap<String, Option<String>>,
) -> StoreResult<()> {
    let api: Api<Node> = Api::all(client);
    let patch = json!({"metadata": {"annotations": annotations}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    match api.patch(node, &params, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 403 => Err(StoreError::Invalid {
            reason: format!(
                "may not patch Node {node} ({}): weftd needs patch on nodes \
                 (apply deploy/kubernetes/clusterrole.yaml)",
                s.message
            ),
        }),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(StoreError::Unavailable {
            reason: format!(
                "no Node {node} yet (is the kubelet registered, and --node-name its name?)"
            ),
        }),
        Err(e) => Err(StoreError::Unavailable {
            reason: format!("patching Node {node}: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_node_gives_its_internal_addresses_weft_annotations_and_heartbeat() {
        let n = node(json!({"metadata": {"name": "n1", "annotations": {
                "weft.dev/vtep-mac": "02:00:00:00:00:01", "other/x": "y"}},
            "status": {"addresses": [
                {"type": "Hostname", "address": "n1"},
                {"type": "ExternalIP", "address": "203.0.113.1"},
                {"type": "InternalIP", "address": "198.18.0.10"},
                {"type": "InternalIP", "address": "2001:2::10"},
                {"type": "InternalIP", "address": "not-an-ip"}],
              "conditions": [{"type": "Ready", "status": "False"}]}}));
        let c = cluster_node(&n);
        assert_eq!(c.name, "n1");
        assert_eq!(
            c.internal_ips,
            vec![
                "198.18.0.10".parse::<IpAddr>().unwrap(),
                "2001:2::10".parse().unwrap()
            ]
        );
        assert_eq!(c.annotations.len(), 1);
        assert_eq!(c.annotations[VTEP_MAC_ANNOTATION], "02:00:00:00:00:01");
        assert!(!c.heartbeat_lost, "NotReady is not lost");
        let lost = node(json!({"metadata": {"name": "n2"},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}));
        let c = cluster_node(&lost);
        assert!(c.heartbeat_lost && c.internal_ips.is_empty() && c.annotations.is_empty());
    }
}
