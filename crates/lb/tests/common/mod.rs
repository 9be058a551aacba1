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

/// A small deterministic generator (no dependency): a 64-bit LCG.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self, n: u32) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % u64::from(n)) as u32
    }
}

/// A random world: up to 6 Services of random types, policies, affinity
/// and ports, endpoints with random conditions and nodes.
pub fn random_world(r: &mut Rng) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut svcs = Vec::new();
    let mut slices = Vec::new();
    for i in 0..r.next(7) {
        let name = format!("ns/s{i}");
        let ports = [("a", TCP, 80u16), ("b", UDP, 53)];
        let nports = 1 + r.next(2) as usize;
        let (v4, v6) = (format!("10.96.0.{}", i + 1), format!("fd00::{}", i + 1));
        let families = 1 + r.next(2) as usize;
        let mut s = service(
            &name,
            &[v4.as_str(), v6.as_str()][..families],
            &ports[..nports],
        );
        s.type_ = [
            ServiceType::ClusterIP,
            ServiceType::NodePort,
            ServiceType::LoadBalancer,
        ][r.next(3) as usize];
        for (j, p) in s.ports.iter_mut().enumerate() {
            p.node_port = Some(30000 + (i as u16) * 10 + j as u16);
        }
        if r.next(3) == 0 {
            s.external_ips = vec![ip(&format!("198.51.100.{}", r.next(3) + 1))];
        }
        s.load_balancer_ips = vec![ip(&format!("203.0.113.{}", i + 1))];
        if r.next(2) == 0 {
            s.external_traffic_policy = TrafficPolicy::Local;
        }
        if r.next(3) == 0 {
            s.internal_traffic_policy = TrafficPolicy::Local;
        }
        if r.next(3) == 0 {
            s.session_affinity = SessionAffinity::ClientIp {
                timeout_seconds: 10 + r.next(100),
            };
        }
        for v6 in [false, true] {
            let mut eps = Vec::new();
            for e in 0..r.next(6) {
                let addr = if v6 {
                    format!("fd00:1::{}", r.next(12) + 1)
                } else {
                    format!("10.0.0.{}", r.next(12) + 1)
                };
                let node = if e % 2 == 0 { NODE } else { "node-b" };
                eps.push(match r.next(4) {
                    0 => draining(&addr, node),
                    1 => not_ready(&addr, node),
                    _ => ep(&addr, node),
                });
            }
            let mut sl = slice(
                &name,
                &[("a", TCP, 8080 + r.next(2) as u16), ("b", UDP, 5353)],
                eps,
            );
            sl.address_type = if v6 {
                AddressType::IPv6
            } else {
                AddressType::IPv4
            };
            slices.push(sl);
        }
        svcs.push(s);
    }
    (svcs, slices)
}
