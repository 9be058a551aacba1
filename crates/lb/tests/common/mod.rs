//! Builders shared by the test files: Services and EndpointSlices with the
//! API's defaults, tweaked field by field in each test.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::collections::BTreeMap;
use std::net::IpAddr;

use weft_lb::*;

pub const NODE: &str = "node-a";

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

pub fn name(ns_name: &str) -> ServiceName {
    let (namespace, name) = ns_name.split_once('/').expect("ns/name");
    ServiceName {
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// A ClusterIP Service `ns/name` on `ips` with `ports` (name, protocol, port).
pub fn service(ns_name: &str, ips: &[&str], ports: &[(&str, Protocol, u16)]) -> Service {
    let n = name(ns_name);
    Service {
        namespace: n.namespace,
        name: n.name,
        type_: ServiceType::ClusterIP,
        cluster_ips: ips.iter().map(|s| ip(s)).collect(),
        headless: false,
        ports: ports
            .iter()
            .map(|&(name, protocol, port)| ServicePort {
                name: name.into(),
                protocol,
                port,
                target_port: None,
                node_port: None,
            })
            .collect(),
        external_ips: vec![],
        load_balancer_ips: vec![],
        session_affinity: SessionAffinity::None,
        external_traffic_policy: TrafficPolicy::Cluster,
        internal_traffic_policy: TrafficPolicy::Cluster,
        publish_not_ready_addresses: false,
        labels: BTreeMap::new(),
    }
}

/// A ready endpoint on `node`.
pub fn ep(addr: &str, node: &str) -> Endpoint {
    Endpoint {
        addresses: vec![ip(addr)],
        conditions: EndpointConditions::default(),
        node_name: Some(node.into()),
        zone: None,
    }
}

pub fn cond(
    e: Endpoint,
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
) -> Endpoint {
    Endpoint {
        conditions: EndpointConditions {
            ready,
            serving,
            terminating,
        },
        ..e
    }
}

/// A kubelet-style terminating endpoint still passing its readiness probe.
pub fn draining(addr: &str, node: &str) -> Endpoint {
    cond(ep(addr, node), Some(false), Some(true), Some(true))
}

/// Not ready and not terminating (a pod starting up).
pub fn not_ready(addr: &str, node: &str) -> Endpoint {
    cond(ep(addr, node), Some(false), Some(false), Some(false))
}

/// A slice of `ns/name` with `ports` (name, protocol, port); the family is
/// taken from the first endpoint (IPv4 when empty).
pub fn slice(
    ns_name: &str,
    ports: &[(&str, Protocol, u16)],
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    let v6 = endpoints.first().is_some_and(|e| e.addresses[0].is_ipv6());
    EndpointSlice {
        service: name(ns_name),
        address_type: if v6 {
            AddressType::IPv6
        } else {
            AddressType::IPv4
        },
        endpoints,
        ports: ports
            .iter()
            .map(|&(name, protocol, port)| EndpointPort {
                name: name.into(),
                port: Some(port),
                protocol,
            })
            .collect(),
        labels: BTreeMap::new(),
    }
}

pub fn node() -> NodeView {
    NodeView {
        node_name: NODE.into(),
        proxy_name: None,
    }
}

pub fn config(algorithm: Algorithm) -> Config {
    Config {
        node: node(),
        algorithm,
    }
}

/// Desired state from scratch (fresh IDs), random selection.
pub fn desired(services: &[Service], slices: &[EndpointSlice]) -> Desired {
    build(
        services,
        slices,
        &config(Algorithm::Random),
        &mut IdAllocator::default(),
    )
    .expect("build")
}

/// The frontend of `addr` (`"10.96.0.1:80/TCP"`) in `scope`.
pub fn fe<'a>(d: &'a Desired, addr: &str, scope: Scope) -> &'a Frontend {
    d.frontends
        .iter()
        .find(|f| f.addr.to_string() == addr && f.scope == scope)
        .unwrap_or_else(|| panic!("no frontend {addr} {scope:?} in\n{}", dump_desired(d)))
}

/// Backend addresses of a frontend as strings, in slot order.
pub fn backends(f: &Frontend) -> Vec<String> {
    f.backends.iter().map(|(b, _)| b.to_string()).collect()
}

pub const TCP: Protocol = Protocol::TCP;
pub const UDP: Protocol = Protocol::UDP;
pub const SCTP: Protocol = Protocol::SCTP;
