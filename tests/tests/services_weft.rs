//! Services through the API server with weft's own load balancing: weftd
//! `--services on` on every node, no kube-proxy, the socket-level programs
//! on each node's lab cgroup (where its pods' servers and the probe clients
//! run) and NodePort translation on its underlay device. The same cases as
//! `services_kube_proxy.rs` (the harness checked against the real
//! kube-proxy), in `services_support::cases`.
//!
//! Upstream cases (kubernetes/kubernetes test/e2e/network) and where they are:
//!
//! | upstream case | here |
//! |---|---|
//! | service.go "should serve a basic endpoint from pods" | `basic_and_multiport_from_pods_and_nodes` |
//! | service.go "should serve multiport endpoints from pods" | `basic_and_multiport_from_pods_and_nodes` (TCP and UDP ports, named targetPorts) |
//! | networking.go Granular "should function for pod-Service: http, udp" | `basic_and_multiport_from_pods_and_nodes` |
//! | networking.go Granular "should function for node-Service: http, udp" | `basic_and_multiport_from_pods_and_nodes` (from `node:`), `nodeport_from_the_fabric` |
//! | networking.go Granular "should function for endpoint-Service: http, udp" | `hairpin` |
//! | service.go "should allow pods to hairpin back to themselves through services" | `hairpin` |
//! | service.go "should be able to create a functioning NodePort service" | `nodeport_from_the_fabric` |
//! | networking.go Granular "should support basic nodePort: udp functionality" | `nodeport_from_the_fabric` |
//! | service.go "should be rejected when no endpoints exist" | `rejected_without_endpoints` (TCP refused, UDP ICMP unreachable) |
//! | service.go "should be rejected for evicted pods (no endpoints exist)" | same mechanism as the above (no ready endpoint); not ported separately: the lab kubelet does not evict |
//! | service.go "should have session affinity work for service with type clusterIP" | `session_affinity_holds_then_expires` |
//! | service.go "should have session affinity timeout work for service with type clusterIP" | `session_affinity_holds_then_expires` (timeoutSeconds 3) |
//! | networking.go Granular "should function for client IP based session affinity: http, udp" | `session_affinity_holds_then_expires` |
//! | service.go "should have session affinity work for NodePort service" | `nodeport_session_affinity` (a client on the fabric) |
//! | service.go "should have session affinity timeout work for NodePort service" | `nodeport_session_affinity_timeout` (a client on the fabric, timeoutSeconds 3) |
//! | service.go "should be able to switch session affinity for NodePort service" | `nodeport_session_affinity_switched` (`services_support/cases_nodeport.rs`: a client on the fabric) |
//! | service.go "should be able to switch session affinity for service with type clusterIP" | `session_affinity_switched_on_and_off` |
//! | service.go "should respect internalTrafficPolicy=Local Pod to Pod" | `internal_traffic_policy_local` |
//! | service.go "… internalTrafficPolicy=Local Pod (hostNetwork: true) to Pod", "Pod and Node, to Pod (hostNetwork: true)" | not ported: the node's own clients are covered from `node:`; hostNetwork pods add nothing here |
//! | loadbalancer.go ESIPP "should work for type=NodePort" (externalTrafficPolicy Local: source kept, only nodes with endpoints answer) | `external_traffic_policy_local` |
//! | service.go NodePort with externalTrafficPolicy Cluster from a node without an endpoint | `nodeport_cluster_policy_through_another_node` |
//! | service.go "should create endpoints for unready pods" (publishNotReadyAddresses) | `publish_not_ready_addresses` |
//! | service.go "should be able to connect to terminating and unready endpoints if PublishNotReadyAddresses is true" / "should not … if false" | `publish_not_ready_addresses` covers unready; terminating and unready: `terminating_and_unready_endpoints` (`services_support/cases_terminating.rs`, slices written by hand with the conditions the controller gives such a pod, as the fallback cases do) |
//! | service.go "should fallback to terminating endpoints when there are no ready endpoints with internalTrafficPolicy=Cluster", "should fallback to local terminating endpoints when there are no ready endpoints with internalTrafficPolicy=Local" | `fallback_to_terminating_endpoints`: the lab kubelet cannot keep a deleted pod serving, so a selector-less Service gets a hand-written EndpointSlice with the conditions (ready false, serving true, terminating true) the controller would write during the grace period |
//! | the same "… with externalTrafficPolicy=Cluster", "should fallback to local terminating endpoints … with externalTrafficPolicy=Local" | `fallback_to_terminating_endpoints_external` (`services_support/cases_external.rs`): the same hand-written slices through a NodePort from the fabric |
//! | service.go "should implement service.kubernetes.io/service-proxy-name" | `headless_and_service_proxy_name` |
//! | service.go "should implement service.kubernetes.io/headless" | not shared: on a Service with a ClusterIP the label reaches kube-proxy only through its slices and the EndpointSlice controller strips it there, so kube-proxy 1.36 serves such a Service; weft leaves it alone. Headless (clusterIP: None) Services: `headless_and_service_proxy_name` |
//! | service.go "should be updated after adding or deleting ports" | `ports_added_and_deleted` |
//! | service.go "should be able to up and down services", "should work after the service has been recreated" | covered by the per-case creation and the reconciler's per-Service updates; not ported separately |
//! | dualstack.go "should function for pod-Service" over IPv6 | `ipv6_cluster_ip` |
//! | networking.go Granular "should update endpoints: http, udp"; the scale under load | `endpoints_scaled_under_load` |
//! | conntrack.go "should be able to preserve UDP traffic when server pod cycles for a ClusterIP service" | `udp_across_a_backend_restart` (one source port, a socket per datagram, as upstream's client); the stricter `udp_connected_socket_across_a_backend_restart` (one connected socket: with weft, weftd aborts it when its backend leaves and the client connects it again) |
//! | conntrack.go "… for a NodePort service", "… when initial unready endpoints get ready" | not ported (time budget) |
//! | conntrack.go "proxy implementation should not be vulnerable to the invalid conntrack state bug", "should drop INVALID conntrack entries" | do not apply to socket-level LB (no per-packet NAT for pod and node clients); not ported |
//! | service.go "should work after restarting kube-proxy"; the weftd restart under traffic | `weftd_restart_under_traffic` (0 broken connections, gap measured) |
//! | service.go "should work after restarting apiserver" | not ported here (`kube_agent.rs` covers weftd's watches across an API server restart) |
//! | service.go "should prevent NodePort collisions", "should check NodePort out-of-range", "should release NodePorts on delete", type changes (ExternalName ↔ ClusterIP/NodePort), "should find a service from listing all namespaces", "should complete a service status lifecycle", "should delete a collection of services", "should test the lifecycle of an Endpoint" | do not apply: API server validation and allocation, no data path |
//! | endpointslice.go (API server Endpoints/EndpointSlices, controller behaviour, API operations) | do not apply: the EndpointSlice controller's work; "a Service with multiple ports / endpoint IPs in multiple EndpointSlices" is covered by `crates/lb`'s slice merging |
//! | service.go "should be possible to connect to a service via ExternalIP when the external IP is not assigned to a node" | `external_ip_not_assigned_to_a_node` (from pods and the node, TCP and UDP; the address is in the lab's 198.18.0.0/15) |
//! | loadbalancer.go (a cloud provider provisions the balancer: "should be able to change the type and ports of a TCP service", "should handle load balancer cleanup finalizer", …) | do not apply: no cloud provider here. What the node does for a balancer's traffic is `load_balancer_ingress_ip` (`services_support/cases_lb.rs`): the test writes `status.loadBalancer.ingress` as a cloud controller would, and the ingress IP answers from pods, a node and, routed to node 0, from outside |
//! | networking.go Granular "should be able to handle large requests", "sctp" | do not apply: the lab pods answer lines; the kernel here has no SCTP |
//!
//! A connected UDP socket keeps the backend its connect() was translated
//! to; when that backend leaves, weftd aborts the socket (SOCK_DESTROY, see
//! ARCHITECTURE.md "weftd's Service reconciler") and the client's connect
//! again reaches the new one, where kube-proxy flushes conntrack.
//!
//! Runtime: one lab cluster up (~15 s) and the cases (~115 s).

mod common;
mod services_support;

use common::*;
use services_support::cases::{self, Proxy};
use services_support::Cluster;
use weft_lab::kube::{KubeSpec, ServiceProxy};
use weft_lab::{Lab, LabSpec};

fn weft_lab() -> Cluster {
    let mut spec = LabSpec::new(&lab_name("swf"), &bin_dir());
    spec.nodes = 3;
    spec.etcd_members = 1;
    spec.kubernetes = Some(KubeSpec {
        services: ServiceProxy::Weft,
        ..KubeSpec::default()
    });
    Cluster::new(LabGuard(Lab::up(&spec, &mut |_| {}).expect("lab up")))
}

#[test]
fn services_through_weft_pass_the_upstream_cases_privileged() {
    if !root_or_skip("services_through_weft_pass_the_upstream_cases_privileged") {
        return;
    }
    let mut c = weft_lab();
    let name = c.lab.name.clone();
    cases::run_all(&mut c, Proxy::Weft);
    let listed = c.weft_services(0);
    eprintln!(
        "weft services on node 1: {} frontends, counters {}",
        listed["frontends"].as_array().map_or(0, |f| f.len()),
        listed["counters"]
    );
    // the Service programs share the fast path's flow ring: their
    // translations reach `weft observe` (a ClusterIP turned into a pod)
    let o = std::process::Command::new(bin_dir().join("weft"))
        .args(["--lab", &name, "-o", "json", "observe"])
        .args(["--verdict", "TRANSLATED", "--last", "500"])
        .output()
        .expect("weft observe runs");
    let flows: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let socket_lb = flows
        .iter()
        .filter(|f| f["observation_point"] == "SOCKET")
        .filter(|f| {
            let ip = |v: &serde_json::Value| v["ip"].as_str().unwrap_or("").to_string();
            ip(&f["destination"]).starts_with("10.96.")
                && ip(&f["translated_to"]).starts_with("10.244.")
        })
        .count();
    // and name the Service they were for (namespace/name and port)
    let named = flows
        .iter()
        .filter(|f| {
            f["destination"]["ip"]
                .as_str()
                .unwrap_or("")
                .starts_with("10.96.")
        })
        .filter(|f| {
            !f["service"]["name"].as_str().unwrap_or("").is_empty()
                && f["service"]["port"].as_u64().unwrap_or(0) > 0
        })
        .count();
    // a NodePort translation (the underlay program, a client on the
    // fabric: the last cases are the NodePort fallbacks) names the Service
    // by its own port (80), not the node port it arrived on
    let nodeport_named: Vec<&serde_json::Value> = flows
        .iter()
        .filter(|f| f["observation_point"] == "NODEPORT")
        .filter(|f| {
            !f["service"]["name"].as_str().unwrap_or("").is_empty()
                && f["service"]["port"].as_u64() == Some(80)
                && f["destination"]["port"].as_u64() != Some(80)
        })
        .collect();
    eprintln!(
        "weft observe: {} TRANSLATED flows, {socket_lb} ClusterIP -> pod at the socket, {named} naming their Service, {} NodePort ones naming it",
        flows.len(),
        nodeport_named.len()
    );
    assert!(named > 0, "no translation names its Service: {flows:#?}");
    assert!(
        !nodeport_named.is_empty(),
        "no NodePort translation names its Service by the Service's port: {flows:#?}"
    );
    assert!(
        socket_lb > 0,
        "Service translations in weft observe: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    drop(c);
    // the lab's cgroups are gone with it
    let cg = weft_lab::kube::cgroup2_mount()
        .expect("cgroup2")
        .join(format!("weft-lab-{name}"));
    assert!(!cg.exists(), "{} removed", cg.display());
}
