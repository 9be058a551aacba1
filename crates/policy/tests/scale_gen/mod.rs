//! Inventories and policies at scale, for the compile-time guard and
//! measurement (`tests/scale.rs`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use weft_policy::*;

fn tcp(port: u16) -> Option<Vec<PolicyPort>> {
    Some(vec![PolicyPort {
        protocol: None,
        port: Some(PortRef::Number(port)),
        end_port: None,
    }])
}

fn ingress(ns: &str, name: String, select: &str, peer: Peer, port: u16) -> NetworkPolicy {
    NetworkPolicy {
        namespace: ns.into(),
        name,
        pod_selector: LabelSelector::labels([("app", select)]),
        policy_types: Some(vec![Direction::Ingress]),
        ingress: Some(vec![Rule {
            peers: Some(vec![peer]),
            ports: tcp(port),
        }]),
        egress: None,
        audit: false,
    }
}

fn workload(ns: &str, name: String, app: String, addr: IpAddr, node: &str) -> Workload {
    Workload {
        namespace: ns.into(),
        name,
        labels: [("app".to_string(), app)].into(),
        namespace_labels: [
            ("kubernetes.io/metadata.name".to_string(), ns.to_string()),
            ("team".to_string(), format!("t-{ns}")),
        ]
        .into(),
        ips: vec![addr],
        named_ports: BTreeMap::new(),
        host_network: false,
        node: node.into(),
    }
}

/// `weft bench policy`'s layout: `n` policies selecting one server, each
/// letting one /32 of 100.64/10 in on one port, then the client's.
pub fn decoys(n: usize) -> (Vec<NetworkPolicy>, Inventory) {
    let mut policies: Vec<NetworkPolicy> = (0..n)
        .map(|i| {
            let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 1)) + i as u32);
            let peer = Peer {
                ip_block: Some(IpBlock {
                    cidr: ipnet::Ipv4Net::new(addr, 32).unwrap().into(),
                    except: vec![],
                }),
                ..Default::default()
            };
            ingress(
                "bench",
                format!("p{i:05}"),
                "server",
                peer,
                8000 + (i % 1000) as u16,
            )
        })
        .collect();
    let client = Peer {
        pod_selector: Some(LabelSelector::labels([("app", "client")])),
        ..Default::default()
    };
    policies.push(ingress("bench", "zz".into(), "server", client, 5301));
    let inventory = Inventory {
        workloads: vec![
            workload(
                "bench",
                "client".into(),
                "client".into(),
                "10.244.0.2".parse().unwrap(),
                "node",
            ),
            workload(
                "bench",
                "server".into(),
                "server".into(),
                "10.244.0.3".parse().unwrap(),
                "node",
            ),
        ],
        nodes: vec![Node {
            name: "node".into(),
            ips: vec!["10.99.0.1".parse().unwrap()],
        }],
    };
    (policies, inventory)
}

/// A cluster: `pods` pods over 10 namespaces and 4 nodes, 50 apps per
/// namespace; `n` policies, each selecting one app and letting in another
/// app of its namespace, every fourth one also an app of any namespace of
/// a team, every tenth one a /24 with an except.
pub fn cluster(n: usize, pods: usize) -> (Vec<NetworkPolicy>, Inventory) {
    let ns = |i: usize| format!("ns{}", i % 10);
    let workloads = (0..pods)
        .map(|i| {
            let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 2)) + i as u32);
            let node = format!("node{}", i % 4);
            workload(
                &ns(i),
                format!("pod{i}"),
                format!("a{}", (i / 10) % 50),
                addr.into(),
                &node,
            )
        })
        .collect();
    let nodes = (0..4)
        .map(|i| Node {
            name: format!("node{i}"),
            ips: vec![IpAddr::V4(Ipv4Addr::new(10, 99, 0, i + 1))],
        })
        .collect();
    let policies = (0..n)
        .map(|j| {
            let select = format!("a{}", j % 50);
            let from = format!("a{}", (j + 1) % 50);
            let mut peer = Peer {
                pod_selector: Some(LabelSelector::labels([("app", from.as_str())])),
                ..Default::default()
            };
            if j % 4 == 0 {
                let team = format!("t-{}", ns(j + 3));
                peer.namespace_selector = Some(LabelSelector::labels([("team", team.as_str())]));
            }
            if j % 10 == 0 {
                let net = Ipv4Addr::new(192, 168, (j / 10 % 250) as u8, 0);
                peer = Peer {
                    ip_block: Some(IpBlock {
                        cidr: ipnet::Ipv4Net::new(net, 24).unwrap().into(),
                        except: vec![ipnet::Ipv4Net::new(net, 28).unwrap().into()],
                    }),
                    ..Default::default()
                };
            }
            ingress(
                &ns(j),
                format!("p{j:05}"),
                &select,
                peer,
                80 + (j % 100) as u16,
            )
        })
        .collect();
    (policies, Inventory { workloads, nodes })
}
