//! Which UDP sockets the reconciler has aborted, on which change, and where
//! (against the fake kernel, which records each `abort_udp` call).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use weft_lb::{
    AddressType, Algorithm, Config, Endpoint, EndpointConditions, EndpointPort, EndpointSlice,
    NodeView, Protocol, Service, ServiceName, ServicePort, ServiceType, SessionAffinity,
    TrafficPolicy,
};

use super::reconciler::{FakeKernel, Inputs, Reconciler};
use super::stale;

fn config() -> Config {
    Config {
        node: NodeView {
            node_name: "n1".into(),
            proxy_name: None,
        },
        algorithm: Algorithm::Random,
    }
}

fn svc(name: &str, ip: &str, proto: Protocol) -> Service {
    Service {
        namespace: "ns".into(),
        name: name.into(),
        type_: ServiceType::ClusterIP,
        cluster_ips: vec![ip.parse().unwrap()],
        headless: false,
        ports: vec![ServicePort {
            name: "dns".into(),
            protocol: proto,
            port: 53,
            target_port: None,
            node_port: None,
        }],
        external_ips: vec![],
        load_balancer_ips: vec![],
        session_affinity: SessionAffinity::None,
        external_traffic_policy: TrafficPolicy::Cluster,
        internal_traffic_policy: TrafficPolicy::Cluster,
        publish_not_ready_addresses: false,
        labels: Default::default(),
    }
}

/// An endpoint: address and whether it is ready (not ready: not serving,
/// not terminating either, so it leaves the frontend).
fn slice(name: &str, proto: Protocol, eps: &[(&str, bool)]) -> EndpointSlice {
    EndpointSlice {
        service: ServiceName {
            namespace: "ns".into(),
            name: name.into(),
        },
        address_type: AddressType::IPv4,
        endpoints: eps
            .iter()
            .map(|(a, ready)| Endpoint {
                addresses: vec![a.parse::<IpAddr>().unwrap()],
                conditions: EndpointConditions {
                    ready: Some(*ready),
                    serving: Some(*ready),
                    terminating: Some(false),
                },
                node_name: Some("n1".into()),
                zone: None,
            })
            .collect(),
        ports: vec![EndpointPort {
            name: "dns".into(),
            port: Some(5353),
            protocol: proto,
        }],
        labels: Default::default(),
    }
}

fn input(i: &mut Inputs, name: &str, ip: &str, proto: Protocol, eps: &[(&str, bool)]) {
    let s = svc(name, ip, proto);
    i.insert(s.id(), (Some(s), vec![slice(name, proto, eps)]));
}

fn peer(a: &str) -> SocketAddr {
    SocketAddr::new(a.parse().unwrap(), 5353)
}

fn set(a: &[&str]) -> BTreeSet<SocketAddr> {
    a.iter().map(|x| peer(x)).collect()
}

/// A reconciler synced to `i` on `k`, with nothing left to abort.
fn synced(i: &Inputs, k: &mut FakeKernel) -> Reconciler {
    let mut r = Reconciler::restore(config(), k.maps.clone());
    r.sync(i.clone(), k);
    assert!(r.converged());
    assert!(r.take_left_udp().is_empty(), "the first round adds only");
    r
}

#[test]
fn a_removed_udp_backend_is_left_once() {
    let mut k = FakeKernel::default();
    let mut i = Inputs::new();
    input(
        &mut i,
        "dns",
        "10.96.0.10",
        Protocol::UDP,
        &[("10.244.0.5", true), ("10.244.0.6", true)],
    );
    let mut r = synced(&i, &mut k);
    input(
        &mut i,
        "dns",
        "10.96.0.10",
        Protocol::UDP,
        &[("10.244.0.6", true)],
    );
    r.sync(i.clone(), &mut k);
    assert_eq!(r.take_left_udp(), set(&["10.244.0.5"]));
    r.sync(i.clone(), &mut k);
    assert!(r.take_left_udp().is_empty(), "taken once");
}

#[test]
fn a_udp_backend_no_longer_ready_is_left() {
    let mut k = FakeKernel::default();
    let mut i = Inputs::new();
    input(
        &mut i,
        "dns",
        "10.96.0.10",
        Protocol::UDP,
        &[("10.244.0.5", true), ("10.244.0.6", true)],
    );
    let mut r = synced(&i, &mut k);
    input(
        &mut i,
        "dns",
        "10.96.0.10",
        Protocol::UDP,
        &[("10.244.0.5", true), ("10.244.0.6", false)],
    );
    r.sync(i.clone(), &mut k);
    assert_eq!(r.take_left_udp(), set(&["10.244.0.6"]));
}

#[test]
fn the_only_udp_backend_replaced_leaves_and_a_deleted_service_too() {
    let mut k = FakeKernel::default();
    let mut i = Inputs::new();
    input(
        &mut i,
        "dns",
        "10.96.0.10",
        Protocol::UDP,
        &[("10.244.0.5", true)],
    );
    let mut r = synced(&i, &mut k);
    input(
        &mut i,
        "dns",
        "10.96.0.10",
        Protocol::UDP,
        &[("10.244.0.9", true)],
    );
    r.sync(i.clone(), &mut k);
    assert_eq!(r.take_left_udp(), set(&["10.244.0.5"]));
    i.clear();
    r.sync(i.clone(), &mut k);
    assert_eq!(r.take_left_udp(), set(&["10.244.0.9"]));
    assert!(k.maps.services.is_empty());
}

#[test]
fn tcp_backends_leaving_abort_nothing() {
    let mut k = FakeKernel::default();
    let mut i = Inputs::new();
    input(
        &mut i,
        "web",
        "10.96.0.11",
        Protocol::TCP,
        &[("10.244.0.5", true), ("10.244.0.6", true)],
    );
    let mut r = synced(&i, &mut k);
    input(
        &mut i,
        "web",
        "10.96.0.11",
        Protocol::TCP,
        &[("10.244.0.6", true)],
    );
    r.sync(i.clone(), &mut k);
    assert!(r.take_left_udp().is_empty());
}

#[test]
fn backends_that_only_move_between_slots_or_stay_elsewhere_are_kept() {
    let mut k = FakeKernel::default();
    let mut i = Inputs::new();
    let three = [
        ("10.244.0.5", true),
        ("10.244.0.6", true),
        ("10.244.0.7", true),
    ];
    input(&mut i, "dns", "10.96.0.10", Protocol::UDP, &three);
    input(
        &mut i,
        "dns2",
        "10.96.0.12",
        Protocol::UDP,
        &[("10.244.0.5", true)],
    );
    let mut r = synced(&i, &mut k);
    // the first backend goes from "dns": the others shift slots, and .5
    // is still chosen through "dns2" (the pod is alive)
    input(&mut i, "dns", "10.96.0.10", Protocol::UDP, &three[1..]);
    let before = k.writes;
    r.sync(i.clone(), &mut k);
    assert!(k.writes > before, "the slots were rewritten");
    assert!(r.take_left_udp().is_empty());
    // a new backend added: nothing leaves
    input(
        &mut i,
        "dns",
        "10.96.0.10",
        Protocol::UDP,
        &[three[1], three[2], ("10.244.0.8", true)],
    );
    r.sync(i.clone(), &mut k);
    assert!(r.take_left_udp().is_empty());
}

#[test]
fn a_backend_removed_while_weftd_was_away_is_left_at_the_first_round() {
    let mut k = FakeKernel::default();
    let mut i = Inputs::new();
    input(
        &mut i,
        "dns",
        "10.96.0.10",
        Protocol::UDP,
        &[("10.244.0.5", true), ("10.244.0.6", true)],
    );
    synced(&i, &mut k);
    // a restart: the kernel's maps are read back, the API moved on
    input(
        &mut i,
        "dns",
        "10.96.0.10",
        Protocol::UDP,
        &[("10.244.0.6", true)],
    );
    let mut r = Reconciler::restore(config(), k.maps.clone());
    r.sync(i.clone(), &mut k);
    assert_eq!(r.take_left_udp(), set(&["10.244.0.5"]));
}

#[test]
fn a_backend_is_left_only_once_the_kernel_stops_selecting_it() {
    let mut k = FakeKernel::default();
    let mut i = Inputs::new();
    input(
        &mut i,
        "dns",
        "10.96.0.10",
        Protocol::UDP,
        &[("10.244.0.5", true), ("10.244.0.6", true)],
    );
    let mut r = synced(&i, &mut k);
    input(
        &mut i,
        "dns",
        "10.96.0.10",
        Protocol::UDP,
        &[("10.244.0.6", true)],
    );
    k.fail_after = Some(0);
    r.sync(i.clone(), &mut k);
    assert!(
        r.take_left_udp().is_empty(),
        "nothing written, still selected"
    );
    k.fail_after = None;
    r.sync(i.clone(), &mut k);
    assert!(r.converged());
    assert_eq!(r.take_left_udp(), set(&["10.244.0.5"]));
}

#[test]
fn sockets_are_aborted_in_weftds_netns_and_each_pods_once() {
    let mut k = FakeKernel::default();
    let pods = ["/run/netns/a", "/run/netns/b", "/run/netns/a"].map(PathBuf::from);
    let ns = stale::namespaces(pods);
    assert_eq!(
        ns,
        vec![
            None,
            Some("/run/netns/a".into()),
            Some("/run/netns/b".into())
        ]
    );
    assert_eq!(stale::abort(&mut k, &ns, &BTreeSet::new()), (0, vec![]));
    assert!(k.aborted.is_empty(), "nothing left, nothing asked");
    stale::abort(&mut k, &ns, &set(&["10.244.0.5"]));
    let want: Vec<(Option<PathBuf>, Vec<SocketAddr>)> = ns
        .iter()
        .map(|n| (n.clone(), vec![peer("10.244.0.5")]))
        .collect();
    assert_eq!(k.aborted, want);
}
