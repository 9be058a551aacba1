//! The cases, in the order they run; each function is named after the
//! upstream e2e case(s) it ports (see the table in the test files).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use weft_lab::probe::{Outcome, Transport};

use super::{within, Cluster, PROGRAMMED, WAIT};

/// Who load-balances: the checks differ only where the two are allowed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    KubeProxy,
    Weft,
}

pub const CLIENT: &str = "svc/client";
const CLIENT2: &str = "svc/client2";

/// The pods most cases share: web-0..2 (one per node, `app=web`,
/// `idx=N`), a client on node 0 and another on node 2.
pub fn setup(c: &Cluster) {
    for i in 0..3 {
        c.run_pod(
            &format!("web-{i}"),
            json!({"app": "web", "idx": i.to_string()}),
            Some(i),
        );
    }
    c.run_pod("client", json!({"role": "client"}), Some(0));
    c.run_pod("client2", json!({"role": "client"}), Some(2));
    c.wait_ready(&["web-0", "web-1", "web-2", "client", "client2"]);
}

pub fn node(c: &Cluster, i: usize) -> String {
    format!("node:{}", c.nodes[i])
}

/// service.go "should serve a basic endpoint from pods", "should serve
/// multiport endpoints from pods"; networking.go Granular Checks
/// "should function for pod-Service: http/udp", "for node-Service:
/// http/udp"; a named targetPort resolved per pod.
pub fn basic_and_multiport_from_pods_and_nodes(c: &Cluster) {
    c.case("ClusterIP over TCP and UDP from pods and nodes, two named ports");
    c.service("web", json!({"app": "web"}), json!({}));
    let cip = c.cluster_ip("web");
    let all = ["web-0", "web-1", "web-2"];
    c.wait_backends(CLIENT, &cip, 80, "tcp", &all);
    c.wait_backends(CLIENT, &cip, 81, "udp", &all);
    c.wait_backends(&node(c, 1), &cip, 80, "tcp", &all);
    c.wait_backends(&node(c, 1), &cip, 81, "udp", &all);
    // the backend sees the client pod itself: no SNAT inside the cluster
    let seen = c.ask(CLIENT, &cip, 80, "tcp", "clientip").unwrap();
    let client_ip = c.pod_ip("client");
    assert!(
        seen.starts_with(&format!("{client_ip}:")),
        "clientip {seen} from {client_ip}"
    );
}

/// service.go "should be able to create a functioning NodePort service";
/// networking.go "should function for node-Service" over the node port,
/// "should support basic nodePort: udp functionality"; the NodePort from
/// the fabric (a client in no node's cgroup, from another lab host), with
/// `externalTrafficPolicy: Cluster`.
pub fn nodeport_from_the_fabric(c: &Cluster) {
    c.case("NodePort from another lab host and from a pod");
    c.service("web-np", json!({"app": "web"}), json!({"type": "NodePort"}));
    let np = c.node_port("web-np", "tcp");
    let np_udp = c.node_port("web-np", "udp");
    let n0 = c.node_ip(0);
    within(WAIT, "NodePort answers from the fabric", || {
        match c.ask_outside(2, SocketAddr::new(n0, np), Transport::Tcp, "hostname") {
            Outcome::Connected { reply: Some(r) } if r.starts_with("web-") => Some(()),
            _ => None,
        }
    });
    within(WAIT, "UDP NodePort answers from the fabric", || {
        match c.ask_outside(2, SocketAddr::new(n0, np_udp), Transport::Udp, "hostname") {
            Outcome::Connected { reply: Some(r) } if r.starts_with("web-") => Some(()),
            _ => None,
        }
    });
    let r = c
        .ask(CLIENT2, &n0.to_string(), np, "tcp", "hostname")
        .unwrap();
    assert!(r.starts_with("web-"), "{r}");
}

/// service.go "should be rejected when no endpoints exist" (TCP refused,
/// UDP answered with ICMP port unreachable).
pub fn rejected_without_endpoints(c: &Cluster) {
    c.case("no endpoints: refused");
    c.service("nobody", json!({"app": "nobody"}), json!({}));
    let cip = c.cluster_ip("nobody");
    c.wait_outcome(CLIENT, &cip, 80, "tcp", "refused");
    c.wait_outcome(CLIENT, &cip, 81, "udp", "refused");
    c.wait_outcome(&node(c, 1), &cip, 80, "tcp", "refused");
}

/// service.go "should have session affinity work for service with type
/// clusterIP", "should have session affinity timeout work for service with
/// type clusterIP"; networking.go "should function for client IP based
/// session affinity: http/udp".
pub fn session_affinity_holds_then_expires(c: &Cluster, proxy: Proxy) {
    c.case("ClientIP affinity holds, then expires after timeoutSeconds");
    let timeout = 3;
    c.service(
        "sticky",
        json!({"app": "web"}),
        json!({"sessionAffinity": "ClientIP",
               "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": timeout}}}),
    );
    let cip = c.cluster_ip("sticky");
    within(WAIT, "sticky answers", || {
        c.ask(CLIENT, &cip, 80, "tcp", "hostname").ok()
    });
    for proto_port in [("tcp", 80), ("udp", 81)] {
        let (proto, port) = proto_port;
        let seen = c.backends_seen(CLIENT, &cip, port, proto, 10);
        assert_eq!(
            seen.len(),
            1,
            "{proto}: one backend while the affinity holds: {seen:?}"
        );
    }
    let first = c.ask(CLIENT, &cip, 80, "tcp", "hostname").unwrap();
    if proxy == Proxy::Weft {
        // weft services shows the client's affinity entry on its node
        let v = c.weft_services(0);
        let entries = v["affinity"].as_array().map_or(0, Vec::len);
        assert!(entries >= 1, "affinity entries listed: {}", v["affinity"]);
    }
    let mut moved = false;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_secs(timeout + 1));
        if c.ask(CLIENT, &cip, 80, "tcp", "hostname").unwrap() != first {
            moved = true;
            break;
        }
    }
    assert!(
        moved,
        "after {timeout} s idle the affinity expires and another backend may be picked"
    );
}

/// service.go "should be able to switch session affinity for service with
/// type clusterIP": None spreads, ClientIP then pins the client to one
/// backend, None again spreads.
pub fn session_affinity_switched_on_and_off(c: &Cluster) {
    c.case("session affinity switched on and off");
    let all = ["web-0", "web-1", "web-2"];
    let spec = |affinity: &str| json!({"sessionAffinity": affinity});
    c.service("switch", json!({"app": "web"}), spec("None"));
    let cip = c.cluster_ip("switch");
    c.wait_backends(CLIENT, &cip, 80, "tcp", &all);
    c.service("switch", json!({"app": "web"}), spec("ClientIP"));
    within(PROGRAMMED, "ClientIP affinity pins the client", || {
        let seen = c.backends_seen(CLIENT, &cip, 80, "tcp", 10);
        (seen.len() == 1 && seen.keys().all(|k| k.starts_with("web-"))).then_some(())
    });
    c.service("switch", json!({"app": "web"}), spec("None"));
    c.wait_backends(CLIENT, &cip, 80, "tcp", &all);
}

/// service.go "should have session affinity work for NodePort service":
/// a client on the fabric keeps one backend through the node port
/// (`externalTrafficPolicy: Cluster`, so the backends are on every node).
pub fn nodeport_session_affinity(c: &Cluster) {
    c.case("NodePort with ClientIP affinity from the fabric");
    c.service(
        "sticky-np",
        json!({"app": "web"}),
        json!({"type": "NodePort", "sessionAffinity": "ClientIP"}),
    );
    let np = c.node_port("sticky-np", "tcp");
    let to = SocketAddr::new(c.node_ip(0), np);
    let ask = || match c.ask_outside(2, to, Transport::Tcp, "hostname") {
        Outcome::Connected { reply: Some(r) } if r.starts_with("web-") => Some(r),
        _ => None,
    };
    let first = within(WAIT, "the sticky NodePort answers from the fabric", ask);
    for _ in 0..10 {
        let r = within(WAIT, "the sticky NodePort answers", ask);
        assert_eq!(
            r, first,
            "ClientIP affinity keeps the fabric client on one backend"
        );
    }
}

/// service.go "should have session affinity timeout work for NodePort
/// service": the fabric client keeps one backend while it keeps coming,
/// and after `timeoutSeconds` idle another may be picked.
pub fn nodeport_session_affinity_timeout(c: &Cluster) {
    c.case("NodePort ClientIP affinity expires after timeoutSeconds");
    let timeout = 3;
    c.service(
        "sticky-np-t",
        json!({"app": "web"}),
        json!({"type": "NodePort", "sessionAffinity": "ClientIP",
               "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": timeout}}}),
    );
    let np = c.node_port("sticky-np-t", "tcp");
    let to = SocketAddr::new(c.node_ip(0), np);
    let ask = || match c.ask_outside(2, to, Transport::Tcp, "hostname") {
        Outcome::Connected { reply: Some(r) } if r.starts_with("web-") => Some(r),
        _ => None,
    };
    let first = within(WAIT, "the sticky NodePort answers from the fabric", ask);
    for _ in 0..5 {
        let r = within(WAIT, "the sticky NodePort answers", ask);
        assert_eq!(r, first, "the affinity holds while the client comes back");
    }
    let mut moved = false;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_secs(timeout + 1));
        if within(WAIT, "the sticky NodePort answers", ask) != first {
            moved = true;
            break;
        }
    }
    assert!(
        moved,
        "after {timeout} s idle the affinity expires and another backend may be picked"
    );
}

/// A hand-written EndpointSlice of selector-less Service `svc`: each
/// `(pod, node index, ready, serving, terminating)`. The lab kubelet
/// cannot keep a terminating pod serving (it stops the pod's server when
/// the pod is deleted), so the fallback cases state the conditions
/// directly, as the EndpointSlice controller would for a pod in its grace
/// period.
pub fn slice_of(c: &Cluster, svc: &str, eps: &[(&str, usize, bool, bool, bool)]) -> Value {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|&(pod, node, ready, serving, terminating)| {
            json!({"addresses": [c.pod_ip(pod)], "nodeName": c.nodes[node],
                   "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
        })
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{svc}-hand"), "namespace": super::NS,
            "labels": {"kubernetes.io/service-name": svc,
                       "endpointslice.kubernetes.io/managed-by": "weft-tests"}},
        "addressType": "IPv4",
        "ports": [{"name": "tcp", "port": 8080, "protocol": "TCP"},
                  {"name": "udp", "port": 8081, "protocol": "UDP"}],
        "endpoints": endpoints})
}

/// service.go "should fallback to terminating endpoints when there are no
/// ready endpoints with internalTrafficPolicy=Cluster" and "… with
/// internalTrafficPolicy=Local" (KEP-1669): with no ready endpoint in the
/// client's scope, serving terminating ones take the traffic; once a ready
/// one is there, only it does. The slices are written by hand (see
/// [`slice_of`]).
pub fn fallback_to_terminating_endpoints(c: &Cluster) {
    c.case("fallback to serving terminating endpoints (ITP Cluster and Local)");
    let selectorless = |name: &str, itp: &str| {
        c.service(name, Value::Null, json!({"internalTrafficPolicy": itp}));
        c.cluster_ip(name)
    };
    // Cluster: web-1 terminating but serving is the only candidate
    let cip = selectorless("fallback", "Cluster");
    c.apply(&slice_of(c, "fallback", &[("web-1", 1, false, true, true)]));
    c.wait_backends(CLIENT, &cip, 80, "tcp", &["web-1"]);
    c.wait_backends(CLIENT, &cip, 81, "udp", &["web-1"]);
    // a ready endpoint appears: the terminating one is left
    c.apply(&slice_of(
        c,
        "fallback",
        &[
            ("web-1", 1, false, true, true),
            ("web-2", 2, true, true, false),
        ],
    ));
    c.wait_backends(CLIENT, &cip, 80, "tcp", &["web-2"]);
    // Local: node 0's only endpoint (web-0) terminates while web-1 on node
    // 1 is ready; the client on node 0 falls back to web-0, not to web-1
    let cip = selectorless("fallback-local", "Local");
    c.apply(&slice_of(
        c,
        "fallback-local",
        &[
            ("web-0", 0, false, true, true),
            ("web-1", 1, true, true, false),
        ],
    ));
    c.wait_backends(CLIENT, &cip, 80, "tcp", &["web-0"]);
    c.wait_backends(&node(c, 1), &cip, 80, "tcp", &["web-1"]);
}

/// An address outside every lab host's and pod's (in the lab's own
/// 198.18.0.0/15: a packet that escaped translation stays in the lab).
const EXTERNAL_IP: &str = "198.19.250.10";

/// service.go "should be possible to connect to a service via ExternalIP
/// when the external IP is not assigned to a node": pods and the node reach
/// the Service on its `externalIPs` address, over TCP and UDP.
pub fn external_ip_not_assigned_to_a_node(c: &Cluster) {
    c.case("a Service's externalIP not assigned to any node");
    c.service(
        "ext",
        json!({"app": "web"}),
        json!({"externalIPs": [EXTERNAL_IP]}),
    );
    let all = ["web-0", "web-1", "web-2"];
    c.wait_backends(CLIENT, EXTERNAL_IP, 80, "tcp", &all);
    c.wait_backends(CLIENT2, EXTERNAL_IP, 81, "udp", &all);
    c.wait_backends(&node(c, 1), EXTERNAL_IP, 80, "tcp", &all);
}

/// service.go "should respect internalTrafficPolicy=Local Pod to Pod".
pub fn internal_traffic_policy_local(c: &Cluster) {
    c.case("internalTrafficPolicy: Local");
    c.service(
        "itp",
        json!({"app": "web"}),
        json!({"internalTrafficPolicy": "Local"}),
    );
    let cip = c.cluster_ip("itp");
    c.wait_backends(CLIENT, &cip, 80, "tcp", &["web-0"]);
    c.wait_backends(CLIENT2, &cip, 80, "tcp", &["web-2"]);
    c.service(
        "itp-0",
        json!({"idx": "0"}),
        json!({"internalTrafficPolicy": "Local"}),
    );
    let cip0 = c.cluster_ip("itp-0");
    c.wait_backends(CLIENT, &cip0, 80, "tcp", &["web-0"]);
    // node 2 has no local endpoint: kube-proxy drops (its "has no local
    // endpoints" DROP rule), so a client there times out rather than being
    // refused; upstream asks only that it fails, weft matches kube-proxy
    c.wait_outcome(CLIENT2, &cip0, 80, "tcp", "timed out");
    c.wait_outcome(&node(c, 2), &cip0, 80, "tcp", "timed out");
}

/// loadbalancer.go's ESIPP "should work for type=NodePort" (the source
/// address kept, only nodes with an endpoint answer).
pub fn external_traffic_policy_local(c: &Cluster) {
    c.case("externalTrafficPolicy: Local keeps the source, answers only where an endpoint is");
    c.service(
        "etp",
        json!({"idx": "0"}),
        json!({"type": "NodePort", "externalTrafficPolicy": "Local"}),
    );
    let np = c.node_port("etp", "tcp");
    let (n0, n1, n2) = (c.node_ip(0), c.node_ip(1), c.node_ip(2));
    let seen = within(WAIT, "etp answers on node 0", || {
        match c.ask_outside(2, SocketAddr::new(n0, np), Transport::Tcp, "clientip") {
            Outcome::Connected { reply: Some(r) } => Some(r),
            _ => None,
        }
    });
    assert!(
        seen.starts_with(&format!("{n2}:")),
        "source kept: {seen} from {n2}"
    );
    let out = c.ask_outside(2, SocketAddr::new(n1, np), Transport::Tcp, "hostname");
    assert!(!out.connected(), "node 1 has no endpoint of etp: {out:?}");
}

/// service.go "should be able to create a functioning NodePort service"
/// reaching a node without an endpoint (`externalTrafficPolicy: Cluster`:
/// the node forwards to another node's pod, source-NATed to itself).
pub fn nodeport_cluster_policy_through_another_node(c: &Cluster) {
    c.case("NodePort with externalTrafficPolicy: Cluster through a node without an endpoint");
    let n1 = c.node_ip(1);
    c.service("ecp", json!({"idx": "0"}), json!({"type": "NodePort"}));
    let np = c.node_port("ecp", "tcp");
    within(
        WAIT,
        "ecp answers on node 1 (endpoint on node 0)",
        || match c.ask_outside(2, SocketAddr::new(n1, np), Transport::Tcp, "hostname") {
            Outcome::Connected { reply: Some(r) } if r == "web-0" => Some(()),
            _ => None,
        },
    );
}

/// service.go "should allow pods to hairpin back to themselves through
/// services"; networking.go "should function for endpoint-Service".
pub fn hairpin(c: &Cluster) {
    c.case("hairpin: a pod reaches itself through its Service");
    c.service("hairpin", json!({"idx": "1"}), json!({}));
    let cip = c.cluster_ip("hairpin");
    c.wait_backends("svc/web-1", &cip, 80, "tcp", &["web-1"]);
    c.wait_backends("svc/web-1", &cip, 81, "udp", &["web-1"]);
}

/// service.go "should create endpoints for unready pods"
/// (publishNotReadyAddresses), and its converse: an unready pod is no
/// backend of a Service that does not publish it.
pub fn publish_not_ready_addresses(c: &Cluster) {
    c.case("publishNotReadyAddresses");
    c.apply(&c.pod(
        "unready",
        json!({"app": "unready"}),
        Some(1),
        json!({"readinessGates": [{"conditionType": "weft.test/never"}]}),
    ));
    within(WAIT, "unready Running", || {
        let p = c.get(&["pod", "unready"]);
        (p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string()).then_some(())
    });
    c.service(
        "pnr",
        json!({"app": "unready"}),
        json!({"publishNotReadyAddresses": true}),
    );
    c.service("pnr-off", json!({"app": "unready"}), json!({}));
    let (on, off) = (c.cluster_ip("pnr"), c.cluster_ip("pnr-off"));
    c.wait_backends(CLIENT, &on, 80, "tcp", &["unready"]);
    c.wait_outcome(CLIENT, &off, 80, "tcp", "refused");
}

/// service.go "should implement service.kubernetes.io/service-proxy-name"
/// (a Service labelled for another proxy is left alone, and served once
/// the label goes) and a headless Service (clusterIP: None) left alone.
/// (The `service.kubernetes.io/headless` label on a Service that has a
/// ClusterIP reaches kube-proxy only through its slices, and the
/// EndpointSlice controller strips it there: kube-proxy 1.36 serves such a
/// Service, weft does not; no shared case.)
pub fn headless_and_service_proxy_name(c: &Cluster, proxy: Proxy) {
    c.case("service-proxy-name label and headless Services are left alone");
    {
        let (name, label) = ("other-proxy", "service.kubernetes.io/service-proxy-name");
        c.apply(&json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": super::NS, "labels": {label: "foo-bar"}},
            "spec": {"selector": {"app": "web"},
                     "ports": [{"name": "tcp", "port": 80, "targetPort": "http"}]}}));
        let cip = c.cluster_ip(name);
        // give a proxy time to (wrongly) program it
        std::thread::sleep(Duration::from_secs(2));
        let r = c.ask(CLIENT, &cip, 80, "tcp", "hostname");
        assert!(r.is_err(), "{name} ({label}) is not served: {r:?}");
        c.kubectl(&[
            "label",
            "service",
            "-n",
            super::NS,
            name,
            &format!("{label}-"),
        ]);
        c.wait_backends(CLIENT, &cip, 80, "tcp", &["web-0", "web-1", "web-2"]);
    }
    c.service(
        "headless",
        json!({"app": "web"}),
        json!({"clusterIP": "None"}),
    );
    let s = c.get(&["service", "headless"]);
    assert_eq!(s["spec"]["clusterIP"], "None");
    if proxy == Proxy::Weft {
        within(
            WAIT,
            "weftd lists the headless Service as left alone",
            || {
                let v = c.weft_services(0);
                v["skipped"]
                    .as_array()?
                    .iter()
                    .any(|s| s.as_str() == Some("svc/headless: headless"))
                    .then_some(())
            },
        );
    }
}

/// service.go "should be updated after adding or deleting ports".
pub fn ports_added_and_deleted(c: &Cluster) {
    c.case("ports added to and deleted from a Service");
    c.apply(&json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "ports", "namespace": super::NS},
        "spec": {"selector": {"idx": "2"},
                 "ports": [{"name": "a", "port": 80, "targetPort": "http"}]}}));
    let cip = c.cluster_ip("ports");
    c.wait_backends(CLIENT, &cip, 80, "tcp", &["web-2"]);
    c.apply(&json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "ports", "namespace": super::NS},
        "spec": {"selector": {"idx": "2"},
                 "ports": [{"name": "b", "port": 82, "targetPort": 8080}]}}));
    c.wait_backends(CLIENT, &cip, 82, "tcp", &["web-2"]);
    within(WAIT, "port 80 gone", || {
        c.ask(CLIENT, &cip, 80, "tcp", "hostname")
            .is_err()
            .then_some(())
    });
}

/// The IPv6 twin (dualstack.go "should be able to reach pod on ipv4 and
/// ipv6 ip" through a Service: "should function for pod-Service" over an
/// IPv6 ClusterIP).
pub fn ipv6_cluster_ip(c: &Cluster) {
    c.case("an IPv6 ClusterIP");
    c.service(
        "web6",
        json!({"app": "web"}),
        json!({"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6"]}),
    );
    let cip = c.cluster_ip("web6");
    assert!(cip.contains(':'), "{cip}");
    c.wait_backends(CLIENT, &cip, 80, "tcp", &["web-0", "web-1", "web-2"]);
    c.wait_backends(CLIENT, &cip, 81, "udp", &["web-0", "web-1", "web-2"]);
}

/// networking.go "should update endpoints: http", the issue's "endpoints
/// scaled up and down under load": steady traffic while a backend is added
/// and another deleted; no new connection fails, the new backend takes
/// traffic.
pub fn endpoints_scaled_under_load(c: &Cluster) {
    c.case("endpoints scaled up and down under load");
    c.run_pod("load-0", json!({"app": "load"}), Some(1));
    c.run_pod("load-1", json!({"app": "load"}), Some(2));
    c.wait_ready(&["load-0", "load-1"]);
    c.service("load", json!({"app": "load"}), json!({}));
    let cip = c.cluster_ip("load");
    c.wait_backends(CLIENT, &cip, 80, "tcp", &["load-0", "load-1"]);
    // 14 s at most; done sooner once load-2 answered and load-0 is out
    let until = ["--until-answered", "load-2", "--until-released"];
    let t = c.traffic_with(CLIENT, &cip, 80, "tcp", 14.0, 3, &until);
    std::thread::sleep(Duration::from_secs(2));
    c.run_pod("load-2", json!({"app": "load"}), Some(0));
    c.wait_ready(&["load-2"]);
    std::thread::sleep(Duration::from_secs(3));
    let leaving = c.pod_ip("load-0");
    c.delete(&["pod", "load-0"]);
    // the traffic goes on through load-0's way out: until no EndpointSlice
    // lists it any more, then the proxies' sync of that (kube-proxy's at
    // most a second) and a second more
    let r = t.report_when(Duration::from_secs(2), || !c.slices_list("load", &leaving));
    eprintln!("    {r:?}");
    assert!(
        r.failures.is_empty(),
        "no new connection failed: {:?}",
        r.failures
    );
    assert!(
        r.answers.contains_key("load-2"),
        "the new backend took traffic: {:?}",
        r.answers
    );
    assert!(r.max_gap_ms < 1500, "longest gap {} ms", r.max_gap_ms);
}

/// conntrack.go "should be able to preserve UDP traffic when server pod
/// cycles for a ClusterIP service": one UDP flow (one source port, a new
/// socket per datagram, as upstream's `nc -u -p PORT` loop) keeps sending
/// while its only backend is replaced; it reaches the new one (kube-proxy
/// must not leave a stale conntrack entry behind).
pub fn udp_across_a_backend_restart(c: &Cluster) {
    udp_cycle(c, "cycle", Some(23456));
}

/// The stricter form: one connected UDP socket for the whole run (a DNS
/// client that keeps its socket). kube-proxy moves it (conntrack flushed);
/// weft's socket LB translated its connect() once, so weftd aborts it when
/// its backend leaves and the client connects the same socket again (as a
/// resolver reopens); either way its answers must come from the new pod.
pub fn udp_connected_socket_across_a_backend_restart(c: &Cluster) {
    udp_cycle(c, "cyclesock", None);
}

fn udp_cycle(c: &Cluster, app: &str, source_port: Option<u16>) {
    c.case(&format!(
        "UDP flow across a backend restart ({})",
        if source_port.is_some() {
            "one source port"
        } else {
            "one connected socket"
        }
    ));
    let (a, b) = (format!("{app}-a"), format!("{app}-b"));
    c.run_pod(&a, json!({"app": app}), Some(1));
    c.wait_ready(&[&a]);
    c.service(app, json!({"app": app}), json!({}));
    let cip = c.cluster_ip(app);
    c.wait_backends(CLIENT, &cip, 81, "udp", &[&a]);
    let port = source_port.map(|p| p.to_string());
    // 20 s at most; done once what the case checks happened (both
    // conditions only ever turn true)
    let mut extra = vec!["--until-answered", b.as_str(), "--until-switched", "1"];
    if let Some(p) = &port {
        extra.extend(["--source-port", p]);
    }
    let t = c.traffic_with(CLIENT, &cip, 81, "udp", 20.0, 1, &extra);
    std::thread::sleep(Duration::from_secs(2));
    c.delete(&["pod", &a]);
    c.run_pod(&b, json!({"app": app}), Some(2));
    c.wait_ready(&[&b]);
    let r = t.report();
    eprintln!("    {r:?}");
    assert!(r.answers.contains_key(&b), "{:?}", r.answers);
    assert!(
        r.persistent_switched >= 1,
        "the long-lived UDP flow reached the new backend: {r:?}"
    );
}

/// The "a weftd restart under steady traffic": 0 broken
/// connections, the gap measured (with kube-proxy too: weft's fast path
/// must stay correct under kube-proxy's NAT through a restart).
pub fn weftd_restart_under_traffic(c: &mut Cluster, proxy: Proxy) {
    c.case("weftd restart under steady traffic");
    let cip = c.cluster_ip("web");
    // weft: every service and backend ID is the same after the restart
    // (taken back from the pinned maps)
    let ids = |c: &Cluster| -> Vec<(String, Value)> {
        let v = c.weft_services(0);
        v["frontends"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                let backends: Vec<Value> = f["backends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| json!([b["address"], b["id"]]))
                    .collect();
                (
                    f["address"].as_str().unwrap_or("").to_string(),
                    json!([f["id"], backends]),
                )
            })
            .collect()
    };
    let before = (proxy == Proxy::Weft).then(|| ids(c));
    // 10 s at most; done sooner once weftd is back and settled, and the
    // traffic has the working connections the case asks for
    let until = ["--until-ok", "51", "--until-released"];
    let t = c.traffic_with(CLIENT, &cip, 80, "tcp", 10.0, 4, &until);
    std::thread::sleep(Duration::from_secs(3));
    c.lab.stop_weftd_on(0).expect("stop weftd");
    c.lab.start_weftd_on(0).expect("start weftd");
    // the traffic goes on through weftd's way back: until its watches have
    // listed again (and, running the Services, it has converged), and two
    // seconds more
    let r = t.report_when(Duration::from_secs(2), || {
        let socket = c.lab.nodes()[0].socket.clone();
        let st: Value = crate::common::api_get_at(&socket, weft_api::paths::STATUS);
        st["kubernetes"]["ready"] == true
            && (proxy != Proxy::Weft || c.weft_services(0)["converged"] == true)
    });
    eprintln!("    {r:?}");
    eprintln!(
        "    weftd restart: longest gap between working new connections {} ms, {} long-lived broken",
        r.max_gap_ms, r.persistent_broken
    );
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(r.persistent_broken, 0, "no long-lived connection broke");
    if let Some(before) = before {
        let after = within(WAIT, "weft services converged after the restart", || {
            let v = c.weft_services(0);
            (v["converged"] == true).then(|| ids(c))
        });
        assert_eq!(before, after, "IDs kept across the restart");
    }
    assert!(r.ok > 50);
}

/// Every case, in order; `WEFT_SVC_CASES=a,b` runs only the cases named
/// (to work on one without the rest).
pub fn run_all(c: &mut Cluster, proxy: Proxy) {
    let only = std::env::var("WEFT_SVC_CASES").unwrap_or_default();
    let only: Vec<&str> = only.split(',').filter(|s| !s.is_empty()).collect();
    run_some(c, proxy, |n| only.is_empty() || only.contains(&n));
}

/// The cases `pick` names, in order. A failing case does not stop the
/// others (each uses its own Services); the test fails at the end naming
/// every case that failed.
pub fn run_some(c: &mut Cluster, proxy: Proxy, pick: impl Fn(&str) -> bool) {
    setup(c);
    type Case = Box<dyn Fn(&mut Cluster)>;
    let cases: Vec<(&str, Case)> = vec![
        (
            "basic_and_multiport_from_pods_and_nodes",
            Box::new(|c| basic_and_multiport_from_pods_and_nodes(c)),
        ),
        (
            "nodeport_from_the_fabric",
            Box::new(|c| nodeport_from_the_fabric(c)),
        ),
        (
            "rejected_without_endpoints",
            Box::new(|c| rejected_without_endpoints(c)),
        ),
        (
            "internal_traffic_policy_local",
            Box::new(|c| internal_traffic_policy_local(c)),
        ),
        (
            "external_traffic_policy_local",
            Box::new(|c| external_traffic_policy_local(c)),
        ),
        (
            "nodeport_cluster_policy_through_another_node",
            Box::new(|c| nodeport_cluster_policy_through_another_node(c)),
        ),
        ("hairpin", Box::new(|c| hairpin(c))),
        (
            "publish_not_ready_addresses",
            Box::new(|c| publish_not_ready_addresses(c)),
        ),
        (
            "headless_and_service_proxy_name",
            Box::new(move |c| headless_and_service_proxy_name(c, proxy)),
        ),
        (
            "ports_added_and_deleted",
            Box::new(|c| ports_added_and_deleted(c)),
        ),
        ("ipv6_cluster_ip", Box::new(|c| ipv6_cluster_ip(c))),
        (
            "session_affinity_holds_then_expires",
            Box::new(move |c| session_affinity_holds_then_expires(c, proxy)),
        ),
        (
            "session_affinity_switched_on_and_off",
            Box::new(|c| session_affinity_switched_on_and_off(c)),
        ),
        (
            "nodeport_session_affinity",
            Box::new(|c| nodeport_session_affinity(c)),
        ),
        (
            "nodeport_session_affinity_timeout",
            Box::new(|c| nodeport_session_affinity_timeout(c)),
        ),
        (
            "external_ip_not_assigned_to_a_node",
            Box::new(|c| external_ip_not_assigned_to_a_node(c)),
        ),
        (
            "fallback_to_terminating_endpoints",
            Box::new(|c| fallback_to_terminating_endpoints(c)),
        ),
        (
            "endpoints_scaled_under_load",
            Box::new(|c| endpoints_scaled_under_load(c)),
        ),
        (
            "udp_across_a_backend_restart",
            Box::new(|c| udp_across_a_backend_restart(c)),
        ),
        (
            "udp_connected_socket_across_a_backend_restart",
            Box::new(|c| udp_connected_socket_across_a_backend_restart(c)),
        ),
        (
            "weftd_restart_under_traffic",
            Box::new(move |c| weftd_restart_under_traffic(c, proxy)),
        ),
        (
            "fallback_to_terminating_endpoints_external",
            Box::new(|c| super::cases_external::fallback_to_terminating_endpoints_external(c)),
        ),
        (
            "load_balancer_ingress_ip",
            Box::new(|c| super::cases_lb::load_balancer_ingress_ip(c)),
        ),
        (
            "terminating_and_unready_endpoints",
            Box::new(|c| super::cases_terminating::terminating_and_unready_endpoints(c)),
        ),
        (
            "nodeport_session_affinity_switched",
            Box::new(|c| super::cases_nodeport::nodeport_session_affinity_switched(c)),
        ),
    ];
    let mut failed = Vec::new();
    for (name, case) in cases.iter().filter(|(n, _)| pick(n)) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(c)));
        if r.is_err() {
            failed.push(*name);
        }
    }
    c.case("done");
    assert!(failed.is_empty(), "cases failed ({proxy:?}): {failed:?}");
}
