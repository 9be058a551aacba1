//! ClusterNetworkPolicy against the lab's real API server: weftd (with the
//! ServiceAccount of deploy/kubernetes) is ready while the CRD is absent,
//! the CRD of deploy/kubernetes/crds installs as published, and a policy
//! written through `policy.networking.k8s.io/v1alpha2` arrives in the
//! Kubernetes adapter's View as the policy crate reads upstream's manifest
//! (then changes, and goes). The adapter runs in this process, inside the
//! lab's node namespace (where weftd reaches the API server from).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use weft_api::{paths, AgentStatus, WatchStatus};
use weft_k8s::{Adapter, AdapterConfig, Kind, Source};
use weft_lab::Lab;
use weft_policy::{ApiClusterNetworkPolicy, ClusterNetworkPolicy};

const PATIENCE: Duration = Duration::from_secs(180);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn admin(lab: &Lab, args: &[&str], stdin: Option<&[u8]>) -> (bool, String) {
    let kc = lab.kube().unwrap().admin_kubeconfig.clone();
    let o = lab.kubectl_as(&kc, args, stdin).expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// weftd's own watch of ClusterNetworkPolicies, when it is ready.
fn weftd_cnp_watch(lab: &Lab) -> Option<WatchStatus> {
    let st: AgentStatus = api_get_at(&lab.nodes()[0].socket, paths::STATUS);
    let k = st.kubernetes?;
    if !k.ready {
        return None;
    }
    k.watches
        .into_iter()
        .find(|w| w.kind == Kind::ClusterNetworkPolicy.as_str())
}

/// Upstream's `ingress-tcp` conformance policy, written as v1alpha2.
fn ingress_tcp() -> Value {
    let path =
        repo().join("crates/policy/tests/cnp_upstream/admin_tier/standard-ingress-tcp-rules.json");
    let docs: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut doc = docs[0].clone();
    doc["apiVersion"] = "policy.networking.k8s.io/v1alpha2".into();
    doc
}

fn model(doc: &Value) -> ClusterNetworkPolicy {
    serde_json::from_value::<ApiClusterNetworkPolicy>(doc.clone())
        .unwrap()
        .to_model()
        .unwrap()
}

#[test]
fn cluster_network_policies_reach_the_adapter_privileged() {
    if !root_or_skip("cluster_network_policies_reach_the_adapter_privileged") {
        return;
    }
    let lab = kube::kube_lab("kc", PATIENCE, |_| {});
    let node = lab.nodes()[0].clone();

    // -- no CRD yet: weftd (its ServiceAccount may list the kind) is ready,
    // its ClusterNetworkPolicy watch synced and empty, with no error
    let w = within(PATIENCE, "weftd ready without the CRD", || {
        weftd_cnp_watch(&lab)
    });
    assert!(
        w.synced && w.healthy && w.objects == 0 && w.errors == 0,
        "{w:?}"
    );

    // -- the adapter in this process, as weftd runs it, still without CRD
    let cfg = AdapterConfig {
        source: Source::Kubeconfig(lab.kube().unwrap().admin_kubeconfig.clone()),
        node: node.name.clone(),
        max_backoff: Duration::from_millis(500),
        all_pods: false,
    };
    let adapter = weft_datapath::netns::run_in(&node.netns, move || Adapter::start(cfg))
        .expect("enter the node namespace")
        .expect("adapter starts");
    let view = adapter.view();
    within(PATIENCE, "the adapter lists every kind", || {
        view.status().ready().then_some(())
    });
    assert!(view.current(Kind::ClusterNetworkPolicy));
    assert!(view.cluster_policies().is_empty());

    // -- the CRD as published, then a policy through v1alpha2
    kube::install_cnp_crd(&lab);
    let doc = ingress_tcp();
    let want = model(&doc);
    let created = Instant::now();
    kube::kubectl(
        &lab,
        &["apply", "-f", "-"],
        Some(doc.to_string().as_bytes()),
    );
    let got = within(
        Duration::from_secs(60),
        "the policy in the adapter's view",
        || {
            view.cluster_policies()
                .into_iter()
                .find(|p| p.name == "ingress-tcp")
        },
    );
    eprintln!(
        "a ClusterNetworkPolicy reached the adapter {:?} after kubectl apply (the CRD installed after the watch began)",
        created.elapsed()
    );
    assert_eq!(
        got, want,
        "the View holds what the policy crate reads from the manifest"
    );
    assert!(got.faults().is_empty(), "{:?}", got.faults());
    // v1beta1 (the storage version) reads back the same object
    let (ok, beta) = admin(
        &lab,
        &[
            "get",
            "clusternetworkpolicies.v1beta1.policy.networking.k8s.io",
            "ingress-tcp",
            "-o",
            "json",
        ],
        None,
    );
    assert!(ok, "{beta}");
    assert_eq!(model(&serde_json::from_str(&beta).unwrap()), want);
    // weftd sees it too, with its ServiceAccount
    within(Duration::from_secs(30), "weftd counts the policy", || {
        weftd_cnp_watch(&lab).filter(|w| w.objects == 1)
    });

    // -- the CRD's validation holds: a priority past 1000 is refused
    let mut bad = doc.clone();
    bad["metadata"]["name"] = "too-high".into();
    bad["spec"]["priority"] = 5000.into();
    let (ok, out) = admin(
        &lab,
        &["apply", "-f", "-"],
        Some(bad.to_string().as_bytes()),
    );
    assert!(!ok && out.contains("priority"), "{out}");

    // -- a change, then the end
    kube::kubectl(
        &lab,
        &[
            "patch",
            "clusternetworkpolicy",
            "ingress-tcp",
            "--type=merge",
            "-p",
            r#"{"spec":{"priority":7}}"#,
        ],
        None,
    );
    within(
        Duration::from_secs(30),
        "the new priority in the view",
        || {
            view.cluster_policies()
                .into_iter()
                .find(|p| p.name == "ingress-tcp" && p.priority == 7)
        },
    );
    kube::kubectl(
        &lab,
        &["delete", "clusternetworkpolicy", "ingress-tcp"],
        None,
    );
    within(
        Duration::from_secs(30),
        "the policy gone from the view",
        || view.cluster_policies().is_empty().then_some(()),
    );
    let st = view.status();
    let cnp = st
        .kinds
        .iter()
        .find(|k| k.kind == Kind::ClusterNetworkPolicy)
        .unwrap();
    assert!(cnp.synced && cnp.healthy && cnp.skipped == 0, "{cnp:?}");
}
