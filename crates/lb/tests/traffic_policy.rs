//! externalTrafficPolicy and internalTrafficPolicy: which node's endpoints
//! each frontend scope may use, the Drop/Reject split kube-proxy makes, and
//! the KEP-1669 fallback inside a `Local` scope.

mod common;
use common::*;
use weft_lb::maps::flags;
use weft_lb::*;

const HTTP: &[(&str, Protocol, u16)] = &[("http", TCP, 80)];
const HTTP_EP: &[(&str, Protocol, u16)] = &[("http", TCP, 8080)];

fn node_port(etp: TrafficPolicy, itp: TrafficPolicy) -> Service {
    let mut s = service("ns/web", &["10.96.0.10"], HTTP);
    s.type_ = ServiceType::LoadBalancer;
    s.ports[0].node_port = Some(30080);
    s.load_balancer_ips = vec![ip("203.0.113.10")];
    s.external_traffic_policy = etp;
    s.internal_traffic_policy = itp;
    s
}

fn master(d: &Desired, addr: &str, scope: Scope) -> weft_lb::maps::ServiceValue {
    *d.maps
        .services
        .iter()
        .find(|(k, _)| k.slot == 0 && k.scope == scope && k.frontend().to_string() == addr)
        .unwrap_or_else(|| panic!("no master {addr} {scope:?}"))
        .1
}

#[test]
fn external_policy_cluster_uses_every_endpoint_in_one_scope() {
    let sl = slice(
        "ns/web",
        HTTP_EP,
        vec![ep("10.0.0.1", NODE), ep("10.0.0.2", "node-b")],
    );
    let d = desired(
        &[node_port(TrafficPolicy::Cluster, TrafficPolicy::Cluster)],
        &[sl],
    );
    assert!(d
        .frontends
        .iter()
        .all(|f| f.scope == Scope::External && !f.two_scopes));
    assert!(d.frontends.iter().all(|f| f.backends.len() == 2));
}

#[test]
fn external_policy_local_splits_node_port_and_lb_into_two_scopes() {
    let sl = slice(
        "ns/web",
        HTTP_EP,
        vec![ep("10.0.0.1", NODE), ep("10.0.0.2", "node-b")],
    );
    let d = desired(
        &[node_port(TrafficPolicy::Local, TrafficPolicy::Cluster)],
        &[sl],
    );
    for addr in ["0.0.0.0:30080/TCP", "203.0.113.10:80/TCP"] {
        let ext = fe(&d, addr, Scope::External);
        assert_eq!(
            backends(ext),
            ["10.0.0.1:8080/TCP"],
            "{addr}: from outside, this node's only"
        );
        assert!(ext.two_scopes && ext.local_only);
        let int = fe(&d, addr, Scope::Internal);
        assert_eq!(
            backends(int),
            ["10.0.0.1:8080/TCP", "10.0.0.2:8080/TCP"],
            "{addr}: from pods, all"
        );
        assert!(int.two_scopes && !int.local_only);
        let m = master(&d, addr, Scope::External);
        assert_eq!(
            m.flags & (flags::TWO_SCOPES | flags::LOCAL_ONLY),
            flags::TWO_SCOPES | flags::LOCAL_ONLY
        );
        // Both scopes reverse-NAT to the same address: one service ID.
        assert_eq!(m.rev_nat_id, master(&d, addr, Scope::Internal).rev_nat_id);
    }
    // The ClusterIP is not external: one scope, all endpoints.
    let cip = fe(&d, "10.96.0.10:80/TCP", Scope::External);
    assert_eq!(cip.backends.len(), 2);
    assert!(!cip.two_scopes);
}

#[test]
fn external_policy_local_without_local_endpoint_drops_but_rejects_without_any() {
    let sl = slice("ns/web", HTTP_EP, vec![ep("10.0.0.2", "node-b")]);
    let d = desired(
        &[node_port(TrafficPolicy::Local, TrafficPolicy::Cluster)],
        &[sl],
    );
    assert_eq!(
        fe(&d, "0.0.0.0:30080/TCP", Scope::External).verdict,
        Verdict::Drop
    );
    assert_ne!(
        master(&d, "0.0.0.0:30080/TCP", Scope::External).flags & flags::DROP,
        0
    );
    assert_eq!(
        fe(&d, "0.0.0.0:30080/TCP", Scope::Internal).verdict,
        Verdict::Forward
    );

    let d = desired(
        &[node_port(TrafficPolicy::Local, TrafficPolicy::Cluster)],
        &[],
    );
    for f in &d.frontends {
        assert_eq!(f.verdict, Verdict::Reject, "{f:?}");
    }
}

#[test]
fn internal_policy_local_restricts_the_cluster_ip_only() {
    let sl = slice(
        "ns/web",
        HTTP_EP,
        vec![ep("10.0.0.1", NODE), ep("10.0.0.2", "node-b")],
    );
    let d = desired(
        &[node_port(TrafficPolicy::Cluster, TrafficPolicy::Local)],
        &[sl],
    );
    let cip = fe(&d, "10.96.0.10:80/TCP", Scope::External);
    assert_eq!(backends(cip), ["10.0.0.1:8080/TCP"]);
    assert!(cip.local_only && !cip.two_scopes);
    assert_eq!(
        fe(&d, "0.0.0.0:30080/TCP", Scope::External).backends.len(),
        2
    );
}

#[test]
fn internal_policy_local_without_local_endpoint_drops() {
    let sl = slice("ns/web", HTTP_EP, vec![ep("10.0.0.2", "node-b")]);
    let d = desired(
        &[node_port(TrafficPolicy::Cluster, TrafficPolicy::Local)],
        &[sl],
    );
    assert_eq!(
        fe(&d, "10.96.0.10:80/TCP", Scope::External).verdict,
        Verdict::Drop
    );
}

#[test]
fn local_scope_falls_back_to_local_serving_terminating_endpoints() {
    // Ready endpoints elsewhere do not help a Local scope; this node's
    // draining one does (kube-proxy's hasLocalServingTerminatingEndpoints).
    let sl = slice(
        "ns/web",
        HTTP_EP,
        vec![
            draining("10.0.0.1", NODE),
            ep("10.0.0.2", "node-b"),
            draining("10.0.0.3", "node-b"),
        ],
    );
    let d = desired(
        &[node_port(TrafficPolicy::Local, TrafficPolicy::Local)],
        &[sl],
    );
    let ext = fe(&d, "0.0.0.0:30080/TCP", Scope::External);
    assert_eq!(backends(ext), ["10.0.0.1:8080/TCP"]);
    assert_eq!(ext.backends[0].1, BackendState::Terminating);
    assert_ne!(
        master(&d, "0.0.0.0:30080/TCP", Scope::External).flags & flags::TERMINATING,
        0
    );
    // Cluster-wide scopes have a ready endpoint: no fallback there.
    assert_eq!(
        backends(fe(&d, "0.0.0.0:30080/TCP", Scope::Internal)),
        ["10.0.0.2:8080/TCP"]
    );
    let cip = fe(&d, "10.96.0.10:80/TCP", Scope::External);
    assert_eq!(
        backends(cip),
        ["10.0.0.1:8080/TCP"],
        "iTP Local: the local draining one"
    );
}

#[test]
fn a_ready_local_endpoint_wins_over_a_local_draining_one() {
    let sl = slice(
        "ns/web",
        HTTP_EP,
        vec![draining("10.0.0.1", NODE), ep("10.0.0.4", NODE)],
    );
    let d = desired(
        &[node_port(TrafficPolicy::Local, TrafficPolicy::Cluster)],
        &[sl],
    );
    assert_eq!(
        backends(fe(&d, "0.0.0.0:30080/TCP", Scope::External)),
        ["10.0.0.4:8080/TCP"]
    );
}

#[test]
fn endpoint_without_node_name_is_never_local() {
    let mut e = ep("10.0.0.1", NODE);
    e.node_name = None;
    let d = desired(
        &[node_port(TrafficPolicy::Local, TrafficPolicy::Cluster)],
        &[slice("ns/web", HTTP_EP, vec![e])],
    );
    assert_eq!(
        fe(&d, "0.0.0.0:30080/TCP", Scope::External).verdict,
        Verdict::Drop
    );
}
