//! Shared by the Service tests: Services and EndpointSlices as the
//! Kubernetes adapter hands them to weft_lb, built into maps and written
//! into the kernel through the seam weftd uses (ServiceMaps + reconcile).

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::collections::BTreeMap;
use std::net::IpAddr;

use weft_datapath::services::{ServicePrograms, ServiceTable};
use weft_lb::*;

pub const NODE: &str = "node-a";

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// A Service `default/<name>` of `type_` on `cluster_ip` with one port
/// (named after its protocol) per `(protocol, port, node port)`.
pub fn service(
    name: &str,
    type_: ServiceType,
    cluster_ip: &str,
    ports: &[(Protocol, u16, Option<u16>)],
) -> Service {
    Service {
        namespace: "default".into(),
        name: name.into(),
        type_,
        cluster_ips: vec![ip(cluster_ip)],
        headless: false,
        ports: ports
            .iter()
            .map(|&(protocol, port, node_port)| ServicePort {
                name: format!("{protocol:?}").to_lowercase(),
                protocol,
                port,
                target_port: None,
                node_port,
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

/// The slice of Service `name`: ready endpoints `(address, node)` serving
/// each `(protocol, target port)`.
pub fn slice(name: &str, eps: &[(&str, &str)], ports: &[(Protocol, u16)]) -> EndpointSlice {
    let v6 = eps.first().is_some_and(|e| e.0.contains(':'));
    EndpointSlice {
        service: ServiceName {
            namespace: "default".into(),
            name: name.into(),
        },
        address_type: if v6 {
            AddressType::IPv6
        } else {
            AddressType::IPv4
        },
        endpoints: eps
            .iter()
            .map(|&(a, node)| Endpoint {
                addresses: vec![ip(a)],
                conditions: EndpointConditions::default(),
                node_name: Some(node.into()),
                zone: None,
            })
            .collect(),
        ports: ports
            .iter()
            .map(|&(protocol, port)| EndpointPort {
                name: format!("{protocol:?}").to_lowercase(),
                port: Some(port),
                protocol,
            })
            .collect(),
        labels: BTreeMap::new(),
    }
}

pub fn config(algorithm: Algorithm) -> Config {
    Config {
        node: NodeView {
            node_name: NODE.into(),
            proxy_name: None,
        },
        algorithm,
    }
}

/// Builds the maps for `services` and `slices` (IDs kept in `ids`) and
/// brings the kernel's maps to them with weft_lb::reconcile, from what the
/// kernel holds now. Returns the desired maps.
pub fn install(
    p: &ServicePrograms,
    services: &[Service],
    slices: &[EndpointSlice],
    algorithm: Algorithm,
    ids: &mut IdAllocator,
) -> LbMaps {
    let desired = build(services, slices, &config(algorithm), ids).expect("build");
    let mut maps = p.maps();
    let mut current = maps.read_back().expect("read back");
    let round = reconcile(&desired.maps, &mut current, &mut maps);
    assert!(round.is_clean(), "failed writes: {:?}", round.failed);
    assert_eq!(maps.read_back().unwrap(), desired.maps);
    desired.maps
}
