//! The Kubernetes adapter's Services and EndpointSlices (`weft_k8s`'s
//! domain types) as the load balancer's input (`weft_lb::model`). Both sides
//! are plain structs; the only work is undoing the adapter's flattening of
//! a slice into address × port rows and spelling enums the other way.

use std::collections::BTreeMap;
use std::net::IpAddr;

use weft_k8s::{EndpointSliceInfo, PortRef, Protocol as K8sProtocol, Service as K8sService};
use weft_lb::{
    AddressType, Endpoint, EndpointConditions, EndpointPort, EndpointSlice, Protocol, Service,
    ServiceName, ServicePort, ServiceType, SessionAffinity, TargetPort, TrafficPolicy,
};

fn protocol(p: K8sProtocol) -> Protocol {
    match p {
        K8sProtocol::Tcp => Protocol::TCP,
        K8sProtocol::Udp => Protocol::UDP,
        K8sProtocol::Sctp => Protocol::SCTP,
    }
}

fn service_type(t: &str) -> ServiceType {
    match t {
        "NodePort" => ServiceType::NodePort,
        "LoadBalancer" => ServiceType::LoadBalancer,
        "ExternalName" => ServiceType::ExternalName,
        // the API defaults an unset type to ClusterIP
        _ => ServiceType::ClusterIP,
    }
}

fn policy(local: bool) -> TrafficPolicy {
    if local {
        TrafficPolicy::Local
    } else {
        TrafficPolicy::Cluster
    }
}

pub fn service(s: &K8sService) -> Service {
    Service {
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        type_: service_type(&s.service_type),
        cluster_ips: s.cluster_ips.clone(),
        // the adapter drops "None" from clusterIPs: none left is headless
        headless: s.cluster_ips.is_empty(),
        ports: s
            .ports
            .iter()
            .map(|p| ServicePort {
                name: p.name.clone(),
                protocol: protocol(p.protocol),
                port: p.port.get(),
                target_port: p.target_port.as_ref().map(|t| match t {
                    PortRef::Number(n) => TargetPort::Number(n.get()),
                    PortRef::Name(n) => TargetPort::Name(n.clone()),
                }),
                node_port: p.node_port.map(|n| n.get()),
            })
            .collect(),
        external_ips: s.external_ips.clone(),
        load_balancer_ips: s.load_balancer_ips.clone(),
        session_affinity: match s.session_affinity_seconds {
            Some(timeout_seconds) => SessionAffinity::ClientIp { timeout_seconds },
            None => SessionAffinity::None,
        },
        external_traffic_policy: policy(s.external_traffic_local),
        internal_traffic_policy: policy(s.internal_traffic_local),
        publish_not_ready_addresses: s.publish_not_ready,
        labels: s.labels.clone(),
    }
}

/// One slice back in the API's shape: its ports, and one endpoint per
/// address with the conditions the adapter resolved. A slice that names no
/// Service belongs to nobody the load balancer knows: `None`.
pub fn slice(s: &EndpointSliceInfo) -> Option<EndpointSlice> {
    let service = ServiceName {
        namespace: s.namespace.clone(),
        name: s.service.clone()?,
    };
    let mut ports: Vec<EndpointPort> = Vec::new();
    let mut endpoints: BTreeMap<IpAddr, Endpoint> = BTreeMap::new();
    for e in &s.endpoints {
        let port = EndpointPort {
            name: e.port_name.clone(),
            port: Some(e.port.get()),
            protocol: protocol(e.proto),
        };
        if !ports.contains(&port) {
            ports.push(port);
        }
        endpoints.entry(e.addr).or_insert_with(|| Endpoint {
            addresses: vec![e.addr],
            conditions: EndpointConditions {
                ready: Some(e.ready),
                serving: Some(e.serving),
                terminating: Some(e.terminating),
            },
            node_name: e.node.clone(),
            zone: None,
        });
    }
    // a slice holds one family; an empty one may say either
    let address_type = match endpoints.keys().next() {
        Some(IpAddr::V6(_)) => AddressType::IPv6,
        _ => AddressType::IPv4,
    };
    Some(EndpointSlice {
        service,
        address_type,
        endpoints: endpoints.into_values().collect(),
        ports,
        labels: s.labels.clone(),
    })
}

/// Every Service and its slices, keyed by Service (slices of a Service
/// not (yet) seen are kept under its name: the Service may come next).
pub fn inputs(
    services: &[K8sService],
    slices: &[EndpointSliceInfo],
) -> BTreeMap<ServiceName, (Option<Service>, Vec<EndpointSlice>)> {
    let mut out: BTreeMap<ServiceName, (Option<Service>, Vec<EndpointSlice>)> = BTreeMap::new();
    for s in services {
        let s = service(s);
        let name = s.id();
        out.entry(name).or_default().0 = Some(s);
    }
    for s in slices.iter().filter_map(slice) {
        out.entry(s.service.clone()).or_default().1.push(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use weft_k8s::{Endpoint as K8sEndpoint, ServicePort as K8sPort};

    use super::*;

    fn nz(n: u16) -> NonZeroU16 {
        NonZeroU16::new(n).unwrap()
    }

    fn k8s_service() -> K8sService {
        K8sService {
            namespace: "ns".into(),
            name: "web".into(),
            service_type: "NodePort".into(),
            cluster_ips: vec!["10.96.0.10".parse().unwrap()],
            external_ips: vec![],
            load_balancer_ips: vec![],
            ports: vec![K8sPort {
                name: "http".into(),
                port: nz(80),
                protocol: K8sProtocol::Tcp,
                target_port: Some(PortRef::Name("web".into())),
                node_port: Some(nz(30080)),
            }],
            selector: None,
            session_affinity_seconds: Some(5),
            external_traffic_local: true,
            internal_traffic_local: false,
            publish_not_ready: true,
            labels: [(
                "service.kubernetes.io/service-proxy-name".to_string(),
                "x".to_string(),
            )]
            .into(),
        }
    }

    fn ep(addr: &str, port: u16, name: &str, ready: bool) -> K8sEndpoint {
        K8sEndpoint {
            addr: addr.parse().unwrap(),
            port: nz(port),
            port_name: name.into(),
            proto: K8sProtocol::Tcp,
            ready,
            serving: ready,
            terminating: !ready,
            node: Some("n1".into()),
        }
    }

    #[test]
    fn a_service_keeps_every_field_the_load_balancer_reads() {
        let s = service(&k8s_service());
        assert_eq!(s.type_, ServiceType::NodePort);
        assert!(!s.headless);
        assert_eq!(s.ports[0].node_port, Some(30080));
        assert_eq!(s.ports[0].target_port, Some(TargetPort::Name("web".into())));
        assert_eq!(
            s.session_affinity,
            SessionAffinity::ClientIp { timeout_seconds: 5 }
        );
        assert_eq!(s.external_traffic_policy, TrafficPolicy::Local);
        assert_eq!(s.internal_traffic_policy, TrafficPolicy::Cluster);
        assert!(s.publish_not_ready_addresses);
        assert_eq!(s.labels.len(), 1);
    }

    #[test]
    fn a_service_without_cluster_ips_is_headless() {
        let mut k = k8s_service();
        k.cluster_ips.clear();
        k.service_type = String::new();
        let s = service(&k);
        assert!(s.headless);
        assert_eq!(s.type_, ServiceType::ClusterIP);
    }

    #[test]
    fn a_flattened_slice_is_regrouped_by_address_with_its_ports() {
        let info = EndpointSliceInfo {
            namespace: "ns".into(),
            name: "web-abc".into(),
            service: Some("web".into()),
            endpoints: vec![
                ep("10.244.0.5", 8080, "http", true),
                ep("10.244.0.5", 9090, "metrics", true),
                ep("10.244.0.6", 8080, "http", false),
                ep("10.244.0.6", 9090, "metrics", false),
            ],
            labels: Default::default(),
        };
        let s = slice(&info).unwrap();
        assert_eq!(
            s.service,
            ServiceName {
                namespace: "ns".into(),
                name: "web".into()
            }
        );
        assert_eq!(s.address_type, AddressType::IPv4);
        assert_eq!(s.ports.len(), 2);
        assert_eq!(s.endpoints.len(), 2);
        assert_eq!(s.endpoints[1].conditions.terminating, Some(true));
        assert_eq!(s.endpoints[0].node_name.as_deref(), Some("n1"));
    }

    #[test]
    fn a_slice_without_a_service_label_is_nobodys() {
        let info = EndpointSliceInfo {
            namespace: "ns".into(),
            name: "orphan".into(),
            service: None,
            endpoints: vec![],
            labels: Default::default(),
        };
        assert!(slice(&info).is_none());
    }

    #[test]
    fn inputs_group_slices_under_their_service_even_before_it_is_seen() {
        let info = EndpointSliceInfo {
            namespace: "ns".into(),
            name: "other-1".into(),
            service: Some("other".into()),
            endpoints: vec![ep("fd00::5", 80, "", true)],
            labels: Default::default(),
        };
        let all = inputs(&[k8s_service()], &[info]);
        assert_eq!(all.len(), 2);
        let other = &all[&ServiceName {
            namespace: "ns".into(),
            name: "other".into(),
        }];
        assert!(other.0.is_none());
        assert_eq!(other.1[0].address_type, AddressType::IPv6);
    }
}
