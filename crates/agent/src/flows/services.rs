//! Which Service a TRANSLATED flow was for: the frontend address the
//! program translated (a ClusterIP, an external or load-balancer address,
//! or one of the node's own addresses at a node port) back to the Service
//! and its port. Built from the Services the reconciler holds, without
//! their endpoints (a flow needs only the name).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use weft_api::ServiceRef;
use weft_lb::{Service, ServiceType};

use super::Decider;

/// (frontend address, port, IP protocol number): an unspecified address
/// stands for "any address of this node" (node ports).
pub type Key = (IpAddr, u16, u8);

/// Every frontend of `services`.
pub fn table(services: &[Service]) -> HashMap<Key, Arc<Decider>> {
    let mut t = HashMap::new();
    for s in services.iter().filter(|s| !s.headless) {
        for p in &s.ports {
            let r = Arc::new(Decider::Service(ServiceRef {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                port: p.port,
                port_name: p.name.clone(),
            }));
            let proto = p.protocol.number();
            let lb = if s.type_ == ServiceType::LoadBalancer {
                &s.load_balancer_ips[..]
            } else {
                &[]
            };
            for &ip in s.cluster_ips.iter().chain(&s.external_ips).chain(lb) {
                t.insert((ip, p.port, proto), r.clone());
            }
            let node_port = matches!(s.type_, ServiceType::NodePort | ServiceType::LoadBalancer);
            if let (true, Some(np)) = (node_port, p.node_port) {
                for any in [
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                ] {
                    t.insert((any, np, proto), r.clone());
                }
            }
        }
    }
    t
}

/// The Service of a translation to `dst:port`: its own frontend first,
/// else a node port (the destination was one of the node's addresses).
pub fn lookup(
    t: &HashMap<Key, Arc<Decider>>,
    dst: IpAddr,
    port: u16,
    proto: u8,
) -> Option<Arc<Decider>> {
    if let Some(r) = t.get(&(dst, port, proto)) {
        return Some(r.clone());
    }
    let any = match dst {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        },
    };
    t.get(&(any, port, proto)).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_lb::{Protocol, ServicePort};

    fn svc(name: &str, type_: ServiceType, ip: &str, port: u16, node_port: Option<u16>) -> Service {
        Service {
            namespace: "shop".into(),
            name: name.into(),
            type_,
            cluster_ips: vec![ip.parse().unwrap()],
            headless: false,
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::TCP,
                port,
                target_port: None,
                node_port,
            }],
            external_ips: vec!["203.0.113.7".parse().unwrap()],
            load_balancer_ips: Vec::new(),
            session_affinity: Default::default(),
            external_traffic_policy: Default::default(),
            internal_traffic_policy: Default::default(),
            publish_not_ready_addresses: false,
            labels: Default::default(),
        }
    }

    #[test]
    fn cluster_ips_external_ips_and_node_ports_name_their_service() {
        let t = table(&[
            svc("web", ServiceType::NodePort, "10.96.0.10", 80, Some(30080)),
            svc("db", ServiceType::ClusterIP, "10.96.0.11", 5432, None),
        ]);
        let get =
            |dst: &str, port: u16, proto: u8| match lookup(&t, dst.parse().unwrap(), port, proto)
                .as_deref()
            {
                Some(Decider::Service(r)) => Some(r.clone()),
                _ => None,
            };
        let name =
            |dst: &str, port: u16, proto: u8| get(dst, port, proto).map(|r| (r.name, r.port));
        assert_eq!(name("10.96.0.10", 80, 6), Some(("web".into(), 80)));
        assert_eq!(name("10.96.0.11", 5432, 6), Some(("db".into(), 5432)));
        assert_eq!(name("203.0.113.7", 80, 6), Some(("web".into(), 80)));
        // a node port on any node address: the Service's port behind it
        assert_eq!(name("198.18.0.10", 30080, 6), Some(("web".into(), 80)));
        assert_eq!(
            name("::ffff:198.18.0.10", 30080, 6),
            Some(("web".into(), 80))
        );
        assert_eq!(name("2001:db8::1", 30080, 6), Some(("web".into(), 80)));
        // the wrong protocol, an unknown port, a ClusterIP Service's port
        // on a node address
        assert_eq!(name("10.96.0.10", 80, 17), None);
        assert_eq!(name("10.96.0.10", 81, 6), None);
        assert_eq!(name("198.18.0.10", 5432, 6), None);
        let r = get("10.96.0.10", 80, 6).unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.port_name.as_str()),
            ("shop", "http")
        );
    }
}
