//! Random clusters and policies for the property and permutation tests:
//! small alphabets so selectors, CIDRs and ports collide often, every API
//! shape (None vs empty, every peer and port kind, invalid objects).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use weft_policy::*;

use crate::common::{ip, labels, Rng};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const NODES: [(&str, &str); 2] = [("node-1", "198.18.0.1"), ("node-2", "198.18.0.2")];
pub const EXTERNAL: [&str; 6] = [
    "192.0.2.1",
    "192.0.2.130",
    "203.0.113.5",
    "10.9.0.1",
    "2001:db8::1",
    "fd00:10:244:1::ff",
];
pub const CIDRS: [(&str, &[&str]); 12] = [
    ("fd00:10:244::/48", &["fd00:10:244:1::/64"]),
    ("::/0", &["fd00::/8"]),
    ("fd00:10:244:1::/64", &["fd00:10:244:1::8/126"]),
    ("10.244.0.0/16", &["10.244.1.0/24"]),
    ("10.244.0.0/24", &[]),
    ("10.244.1.0/24", &["10.244.1.8/29", "10.244.1.12/30"]),
    ("192.0.2.0/24", &["192.0.2.128/25"]),
    ("0.0.0.0/0", &["10.0.0.0/8"]),
    ("198.18.0.0/15", &[]),
    ("198.18.0.2/32", &[]),
    ("10.244.0.11/32", &[]),
    ("10.0.0.0/8", &["10.244.0.0/16"]),
];
pub const PORTS: [u16; 8] = [53, 80, 81, 443, 8080, 8081, 9090, 9091];

fn pick_str<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
    items[rng.below(items.len())]
}

pub fn selector(rng: &mut Rng, keys: &[&str], values: &[&str]) -> LabelSelector {
    let mut s = LabelSelector::all();
    for _ in 0..rng.below(3) {
        let key = pick_str(rng, keys);
        match rng.below(6) {
            0 | 1 => {
                s.match_labels
                    .insert(key.into(), pick_str(rng, values).into());
            }
            2 => {
                s = s.with(
                    key,
                    Operator::In,
                    &[pick_str(rng, values), pick_str(rng, values)],
                )
            }
            3 => s = s.with(key, Operator::NotIn, &[pick_str(rng, values)]),
            4 => s = s.with(key, Operator::Exists, &[]),
            _ => s = s.with(key, Operator::DoesNotExist, &[]),
        }
    }
    if rng.chance(3) {
        // Invalid: In without values. Policies holding it must fail closed.
        s = s.with(pick_str(rng, keys), Operator::In, &[]);
    }
    s
}

fn pod_selector(rng: &mut Rng) -> LabelSelector {
    selector(rng, &["app", "tier"], &["web", "db", "1", "2"])
}

fn ns_selector(rng: &mut Rng) -> LabelSelector {
    if rng.chance(40) {
        let ns = pick_str(rng, &NAMESPACES);
        return LabelSelector::labels([("kubernetes.io/metadata.name", ns)]);
    }
    selector(rng, &["team", "env"], &["a", "b", "prod"])
}

fn peer(rng: &mut Rng, pods: &[Workload]) -> Peer {
    match rng.below(4) {
        0 => Peer {
            pod_selector: Some(pod_selector(rng)),
            ..Default::default()
        },
        1 => Peer {
            namespace_selector: Some(ns_selector(rng)),
            ..Default::default()
        },
        2 => Peer {
            pod_selector: Some(pod_selector(rng)),
            namespace_selector: Some(ns_selector(rng)),
            ip_block: None,
        },
        _ => {
            let (cidr, except) = if rng.chance(25) && !pods.is_empty() {
                let p = rng.pick(pods);
                let a = *rng.pick(&p.ips);
                (
                    format!("{a}/{}", if a.is_ipv4() { 32 } else { 128 }),
                    Vec::new(),
                )
            } else {
                let (c, e) = CIDRS[rng.below(CIDRS.len())];
                (c.to_string(), e.iter().map(|s| s.to_string()).collect())
            };
            Peer {
                ip_block: Some(IpBlock {
                    cidr: cidr.parse().unwrap(),
                    except: except.iter().map(|e| e.parse().unwrap()).collect(),
                }),
                ..Default::default()
            }
        }
    }
}

fn policy_port(rng: &mut Rng) -> PolicyPort {
    let protocol = match rng.below(5) {
        0 | 1 => None,
        2 => Some(Protocol::Tcp),
        3 => Some(Protocol::Udp),
        _ => Some(Protocol::Sctp),
    };
    let lo = *rng.pick(&PORTS);
    let (port, end_port) = match rng.below(5) {
        0 => (None, None),
        1 | 2 => (Some(PortRef::Number(lo)), None),
        3 => (Some(PortRef::Number(lo)), Some(lo + rng.below(40) as u16)),
        _ => (
            Some(PortRef::Name(
                pick_str(rng, &["http", "dns", "metrics", "nope"]).into(),
            )),
            None,
        ),
    };
    let mut p = PolicyPort {
        protocol,
        port,
        end_port,
    };
    if rng.chance(2) {
        // Invalid: endPort below port.
        p = PolicyPort {
            protocol,
            port: Some(PortRef::Number(lo)),
            end_port: Some(lo - 1),
        };
    }
    p
}

fn list<T>(rng: &mut Rng, max: usize, mut item: impl FnMut(&mut Rng) -> T) -> Option<Vec<T>> {
    match rng.below(6) {
        0 => None,
        1 => Some(Vec::new()),
        _ => Some((0..1 + rng.below(max)).map(|_| item(rng)).collect()),
    }
}

pub fn rules(rng: &mut Rng, pods: &[Workload], max: usize) -> Option<Vec<Rule>> {
    list(rng, max, |rng| Rule {
        peers: list(rng, 3, |rng| peer(rng, pods)),
        ports: list(rng, 3, policy_port),
    })
}

pub fn policy(rng: &mut Rng, pods: &[Workload], name: &str) -> NetworkPolicy {
    let policy_types = match rng.below(6) {
        0 | 1 => None,
        2 => Some(vec![]),
        3 => Some(vec![Direction::Ingress]),
        4 => Some(vec![Direction::Egress]),
        _ => Some(vec![Direction::Ingress, Direction::Egress]),
    };
    NetworkPolicy {
        namespace: pick_str(rng, &NAMESPACES).into(),
        name: name.into(),
        pod_selector: if rng.chance(30) {
            LabelSelector::all()
        } else {
            pod_selector(rng)
        },
        policy_types,
        ingress: rules(rng, pods, 3),
        egress: rules(rng, pods, 3),
        audit: false,
    }
}

pub fn inventory(rng: &mut Rng) -> Inventory {
    let mut ns_labels: BTreeMap<&str, Labels> = BTreeMap::new();
    for ns in NAMESPACES {
        let mut l = labels(&[("kubernetes.io/metadata.name", ns)]);
        if rng.chance(60) {
            l.insert("team".into(), pick_str(rng, &["a", "b"]).into());
        }
        if rng.chance(40) {
            l.insert("env".into(), "prod".into());
        }
        ns_labels.insert(ns, l);
    }
    let mut workloads = Vec::new();
    for i in 0..3 + rng.below(6) {
        let ns = pick_str(rng, &NAMESPACES);
        let (node, node_ip) = NODES[rng.below(2)];
        let mut l = Labels::new();
        if rng.chance(80) {
            l.insert("app".into(), pick_str(rng, &["web", "db"]).into());
        }
        if rng.chance(50) {
            l.insert("tier".into(), pick_str(rng, &["1", "2"]).into());
        }
        let mut named_ports = BTreeMap::new();
        if rng.chance(70) {
            named_ports.insert(
                "http".to_string(),
                (*rng.pick(&[80u16, 8080]), Protocol::Tcp),
            );
        }
        if rng.chance(50) {
            named_ports.insert(
                "dns".to_string(),
                (53, *rng.pick(&[Protocol::Udp, Protocol::Tcp])),
            );
        }
        if rng.chance(40) {
            named_ports.insert(
                "metrics".to_string(),
                (*rng.pick(&[9090u16, 9091]), Protocol::Tcp),
            );
        }
        let host_network = rng.chance(10);
        let addr: IpAddr = if host_network {
            ip(node_ip)
        } else {
            // Pods fill 10.244.0.x and 10.244.1.x, so the CIDR table's
            // pieces and excepts land on some of them.
            ip(&format!("10.244.{}.{}", i % 2, 8 + i))
        };
        let mut ips = vec![addr];
        if !host_network && rng.chance(30) {
            // Dual stack: the v6 address lands in the v6 pieces above.
            ips.push(ip(&format!("fd00:10:244:{}::{}", i % 2, 8 + i)));
        }
        workloads.push(Workload {
            namespace: ns.into(),
            name: format!("p{i}"),
            labels: l,
            namespace_labels: ns_labels[ns].clone(),
            ips,
            named_ports,
            host_network,
            node: node.into(),
        });
    }
    Inventory {
        workloads,
        nodes: NODES
            .iter()
            .map(|(n, a)| Node {
                name: n.to_string(),
                ips: vec![ip(a)],
            })
            .collect(),
    }
}

/// Every address a flow may use: pods, nodes, outsiders.
pub fn addresses(inv: &Inventory) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = inv
        .workloads
        .iter()
        .flat_map(|w| w.ips.iter().copied())
        .collect();
    v.extend(NODES.iter().map(|(_, a)| ip(a)));
    v.extend(EXTERNAL.iter().map(|a| ip(a)));
    v.sort();
    v.dedup();
    v
}

/// Ports worth probing: the table's, their neighbours, and range ends.
pub fn probe_ports(policies: &[NetworkPolicy]) -> Vec<u16> {
    let mut v: Vec<u16> = PORTS.iter().flat_map(|p| [p - 1, *p, p + 1]).collect();
    for p in policies {
        for r in p
            .rules(Direction::Ingress)
            .iter()
            .chain(p.rules(Direction::Egress))
        {
            for port in r.ports.iter().flatten() {
                if let (Some(PortRef::Number(_)), Some(e)) = (&port.port, port.end_port) {
                    v.extend([e.saturating_sub(1), e, e.saturating_add(1)]);
                }
            }
        }
    }
    v.sort();
    v.dedup();
    v
}
