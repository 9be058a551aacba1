use std::num::NonZeroU16;
use std::sync::{Arc, Mutex};

use weft_k8s as k8s;
use weft_policy::{MemoryAllocator, Protocol};

use super::*;
use crate::policy::seam::{ApplyError, FakePolicyMaps};

/// The fake behind a handle the test keeps.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<FakePolicyMaps>>);

impl PolicyMaps for Shared {
    fn apply(
        &mut self,
        ops: &[MapOp],
        ids: &dyn Fn(&EndpointRef) -> Option<PolicyEndpoint>,
    ) -> Result<(), ApplyError> {
        self.0.lock().unwrap().apply(ops, ids)
    }
}

fn pod(ns: &str, name: &str, node: &str, ip: &str) -> k8s::PodInfo {
    k8s::PodInfo {
        namespace: ns.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: [("pod".to_string(), name.to_string())].into(),
        ips: vec![ip.parse().unwrap()],
        named_ports: vec![k8s::NamedPort {
            name: "serve-80-tcp".into(),
            port: NonZeroU16::new(80).unwrap(),
            protocol: k8s::Protocol::Tcp,
        }],
        host_network: false,
        node: node.into(),
        phase: "Running".into(),
        terminating: false,
    }
}

fn deny_all_ingress(ns: &str) -> k8s::NetPolicy {
    k8s::NetPolicy {
        namespace: ns.into(),
        name: "deny".into(),
        pod_selector: k8s::LabelSelector::default(),
        policy_types: Some(vec![k8s::PolicyType::Ingress]),
        ingress: None,
        egress: None,
    }
}

fn local(ns: &str, name: &str, id: u32, ip: &str) -> LocalEndpoint {
    LocalEndpoint {
        pod: EndpointRef {
            namespace: ns.into(),
            name: name.into(),
        },
        uid: format!("uid-{name}"),
        id,
        host_ifname: format!("weft{id}"),
        ips: vec![ip.parse().unwrap()],
    }
}

fn setup() -> (Reconciler, Shared) {
    let maps = Shared::default();
    let r = Reconciler::new(
        "n1".into(),
        Box::new(maps.clone()),
        Box::new(MemoryAllocator::new()),
    );
    (r, maps)
}

fn ep(ns: &str, name: &str) -> EndpointRef {
    EndpointRef {
        namespace: ns.into(),
        name: name.into(),
    }
}

#[test]
fn this_nodes_endpoints_and_ipcache_are_written_under_their_ids() {
    let (mut r, maps) = setup();
    let snap = Snapshot {
        pods: vec![
            pod("x", "a", "n1", "10.0.0.1"),
            pod("x", "b", "n2", "10.0.1.1"),
        ],
        policies: vec![deny_all_ingress("x")],
        ..Snapshot::default()
    };
    let n = r
        .round(Some(&snap), &[local("x", "a", 7, "10.0.0.1")])
        .unwrap();
    assert!(n > 0);
    let written = maps.0.lock().unwrap().written.clone();
    assert!(written.iter().any(|(op, id)| matches!(op,
        MapOp::Isolation { endpoint, direction: Direction::Ingress, isolated_by: Some(p) }
            if endpoint.name == "a" && p.name == "deny")
        && *id == Some(7)));
    assert!(
        written.iter().all(|(op, _)| !matches!(op,
            MapOp::PolicyUpsert { endpoint, .. } | MapOp::Isolation { endpoint, .. } if endpoint.name == "b")),
        "x/b runs on another node: its maps are not ours"
    );
    assert!(written.iter().all(|(op, _)| match op {
        MapOp::IpcacheUpsert { node, .. } => node == "n1",
        _ => true,
    }));
    // both pods are in this node's ipcache (b as a peer)
    let cache = &r.applied().ipcache["n1"];
    assert_eq!(cache.len(), 2);
    // a second round with nothing new writes nothing
    assert_eq!(
        r.round(Some(&snap), &[local("x", "a", 7, "10.0.0.1")])
            .unwrap(),
        0
    );
    // explain answers from the whole compile
    let e = r
        .compiled()
        .explain_pods(&ep("x", "b"), &ep("x", "a"), Protocol::Tcp, 80)
        .unwrap();
    assert!(!e.verdict.allowed);
}

#[test]
fn an_unknown_kubelet_pod_is_fail_closed_until_a_round_knows_it() {
    let (mut r, _) = setup();
    let a = local("x", "a", 1, "10.0.0.1");
    // the watches have not listed yet
    r.round(None, std::slice::from_ref(&a)).unwrap();
    let p = &r.applied().endpoints[&a.pod];
    assert_eq!(p.ingress_isolated_by, Some(fail_closed_ref()));
    assert_eq!(p.egress_isolated_by, Some(fail_closed_ref()));
    assert_eq!(r.report.fail_closed, vec![a.pod.clone()]);
    // listed, but the pod is not there yet: still closed
    r.round(Some(&Snapshot::default()), std::slice::from_ref(&a))
        .unwrap();
    assert!(r.applied().endpoints[&a.pod].ingress_isolated_by.is_some());
    // the pod shows up, no policy selects it: open both ways
    let snap = Snapshot {
        pods: vec![pod("x", "a", "n1", "10.0.0.1")],
        ..Snapshot::default()
    };
    r.round(Some(&snap), std::slice::from_ref(&a)).unwrap();
    let p = &r.applied().endpoints[&a.pod];
    assert_eq!(p.ingress_isolated_by, None);
    assert_eq!(p.egress_isolated_by, None);
    assert!(r.report.fail_closed.is_empty());
    // endpoints of other runtimes (no pod UID) get no policy state
    let mut podman = local("", "c", 3, "10.0.0.3");
    podman.uid = String::new();
    r.round(Some(&snap), &[a.clone(), podman]).unwrap();
    assert_eq!(r.applied().endpoints.len(), 1);
}

#[test]
fn before_the_first_list_known_state_is_left_alone() {
    let (mut r, maps) = setup();
    let a = local("x", "a", 1, "10.0.0.1");
    let snap = Snapshot {
        pods: vec![pod("x", "a", "n1", "10.0.0.1")],
        policies: vec![deny_all_ingress("x")],
        ..Snapshot::default()
    };
    r.round(Some(&snap), std::slice::from_ref(&a)).unwrap();
    let before = r.applied().clone();
    let n = maps.0.lock().unwrap().written.len();
    let b = local("x", "b", 2, "10.0.0.2");
    r.round(None, &[a.clone(), b.clone()]).unwrap();
    assert_eq!(r.applied().endpoints[&a.pod], before.endpoints[&a.pod]);
    assert!(r.applied().endpoints[&b.pod].ingress_isolated_by == Some(fail_closed_ref()));
    let written = maps.0.lock().unwrap().written[n..].to_vec();
    assert!(written.iter().all(|(_, id)| *id == Some(2)), "{written:?}");
}

#[test]
fn a_failed_write_keeps_only_what_went_in_and_the_next_round_finishes() {
    let (mut r, maps) = setup();
    let a = local("x", "a", 1, "10.0.0.1");
    let snap = Snapshot {
        pods: vec![
            pod("x", "a", "n1", "10.0.0.1"),
            pod("x", "b", "n2", "10.0.1.1"),
        ],
        policies: vec![deny_all_ingress("x")],
        ..Snapshot::default()
    };
    maps.0.lock().unwrap().fail_at = Some(2);
    let err = r.round(Some(&snap), std::slice::from_ref(&a)).unwrap_err();
    assert!(err.contains("injected"), "{err}");
    assert_eq!(r.report.last_error.as_deref(), Some(err.as_str()));
    let partial = r.applied().clone();
    maps.0.lock().unwrap().fail_at = None;
    let n = r.round(Some(&snap), std::slice::from_ref(&a)).unwrap();
    assert!(n > 0);
    assert_ne!(&partial, r.applied());
    assert!(r.report.last_error.is_none());
    // everything the compile wants is in now
    assert_eq!(r.round(Some(&snap), std::slice::from_ref(&a)).unwrap(), 0);
    assert!(r.holds(&a.pod));
}

#[test]
fn an_invalid_policy_isolates_and_is_reported() {
    let (mut r, _) = setup();
    let mut bad = deny_all_ingress("x");
    bad.name = "bad".into();
    bad.policy_types = Some(vec![k8s::PolicyType::Ingress]);
    bad.ingress = Some(vec![k8s::IngressRule {
        from: Some(vec![k8s::Peer {
            pod_selector: None,
            namespace_selector: None,
            ip_block: Some(k8s::IpBlock {
                cidr: "10.0.0.0/24".parse().unwrap(),
                except: vec!["10.9.0.0/24".parse().unwrap()],
            }),
        }]),
        ports: None,
    }]);
    let snap = Snapshot {
        pods: vec![pod("x", "a", "n1", "10.0.0.1")],
        policies: vec![bad],
        ..Snapshot::default()
    };
    let a = local("x", "a", 1, "10.0.0.1");
    r.round(Some(&snap), std::slice::from_ref(&a)).unwrap();
    assert_eq!(r.compiled().rejected.len(), 1);
    let p = &r.applied().endpoints[&a.pod];
    assert_eq!(
        p.ingress_isolated_by.as_ref().map(|p| p.name.as_str()),
        Some("bad")
    );
    assert!(
        p.entries.values().all(|v| *v == AllowedBy::LocalNode),
        "opens nothing but the node"
    );
}

#[test]
fn a_pod_remade_under_its_name_is_rewritten_under_its_new_id() {
    let (mut r, maps) = setup();
    let snap = Snapshot {
        pods: vec![pod("x", "a", "n1", "10.0.0.1")],
        policies: vec![deny_all_ingress("x")],
        ..Snapshot::default()
    };
    r.round(Some(&snap), &[local("x", "a", 1, "10.0.0.1")])
        .unwrap();
    let n = maps.0.lock().unwrap().written.len();
    r.round(Some(&snap), &[local("x", "a", 2, "10.0.0.1")])
        .unwrap();
    let written = maps.0.lock().unwrap().written[n..].to_vec();
    assert!(
        matches!(written[0], (MapOp::EndpointGone { .. }, Some(1))),
        "{written:?}"
    );
    assert!(written[1..]
        .iter()
        .any(|(op, id)| matches!(op, MapOp::Isolation { .. }) && *id == Some(2)));
    // the DEL of the last endpoint removes its state under its id
    r.round(Some(&snap), &[]).unwrap();
    let last = maps.0.lock().unwrap().written.last().cloned().unwrap();
    assert!(
        matches!(last, (MapOp::EndpointGone { .. }, Some(2))),
        "{last:?}"
    );
    assert!(r.applied().endpoints.is_empty());
}
