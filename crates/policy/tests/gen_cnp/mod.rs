//! Random ClusterNetworkPolicies for the tier tests: small alphabets so
//! selectors, networks and ports collide, every peer, port and action, and
//! the faults that must fail closed.
#![allow(dead_code)]

use ipnet::IpNet;
use weft_policy::*;

use crate::common::Rng;
use crate::gen;

fn pick<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
    items[rng.below(items.len())]
}

fn namespaces_selector(rng: &mut Rng) -> LabelSelector {
    if rng.chance(40) {
        let ns = pick(rng, &gen::NAMESPACES);
        return LabelSelector::labels([("kubernetes.io/metadata.name", ns)]);
    }
    gen::selector(rng, &["team", "env"], &["a", "b", "prod"])
}

fn pods_selector(rng: &mut Rng) -> LabelSelector {
    gen::selector(rng, &["app", "tier"], &["web", "db", "1", "2"])
}

fn namespaced_pod(rng: &mut Rng) -> NamespacedPod {
    NamespacedPod {
        namespace_selector: if rng.chance(30) {
            LabelSelector::all()
        } else {
            namespaces_selector(rng)
        },
        pod_selector: pods_selector(rng),
    }
}

const NETWORKS: [&str; 8] = [
    "0.0.0.0/0",
    "::/0",
    "10.244.0.0/16",
    "10.244.1.0/24",
    "192.0.2.0/24",
    "198.18.0.0/15",
    "fd00:10:244::/48",
    "10.244.0.11/32",
];

fn peer(rng: &mut Rng, dir: Direction) -> ClusterPeer {
    let egress = dir == Direction::Egress;
    match rng.below(if egress { 10 } else { 6 }) {
        0..=2 => ClusterPeer::Namespaces(namespaces_selector(rng)),
        3..=4 => ClusterPeer::Pods(namespaced_pod(rng)),
        // Rare faults: an unknown peer, or an egress-only peer in ingress.
        5 if rng.chance(30) => ClusterPeer::Unsupported("test".into()),
        5 => ClusterPeer::Networks(vec![pick(rng, &NETWORKS).parse().unwrap()]),
        6 => ClusterPeer::Nodes(if rng.chance(85) {
            LabelSelector::all()
        } else {
            LabelSelector::labels([("kubernetes.io/os", "linux")])
        }),
        _ => ClusterPeer::Networks(
            (0..1 + rng.below(2))
                .map(|_| pick(rng, &NETWORKS).parse::<IpNet>().unwrap())
                .collect(),
        ),
    }
}

fn port(rng: &mut Rng) -> ClusterPort {
    let protocol = *rng.pick(&[Protocol::Tcp, Protocol::Tcp, Protocol::Udp, Protocol::Sctp]);
    let lo = *rng.pick(&gen::PORTS);
    match rng.below(10) {
        0..=4 => ClusterPort::Number { protocol, port: lo },
        5..=6 => ClusterPort::Range {
            protocol,
            start: lo,
            end: lo + 1 + rng.below(40) as u16,
        },
        7..=8 => ClusterPort::Named(pick(rng, &["http", "dns", "metrics", "nope"]).into()),
        // A fault: an empty range.
        _ => ClusterPort::Range {
            protocol,
            start: lo,
            end: lo,
        },
    }
}

fn rules(rng: &mut Rng, dir: Direction) -> Vec<ClusterRule> {
    if rng.chance(25) {
        return Vec::new();
    }
    (0..1 + rng.below(4))
        .map(|i| ClusterRule {
            name: format!("r{i}"),
            action: *rng.pick(&[
                ClusterAction::Accept,
                ClusterAction::Deny,
                ClusterAction::Pass,
            ]),
            peers: (0..1 + rng.below(3)).map(|_| peer(rng, dir)).collect(),
            protocols: if rng.chance(40) {
                Vec::new()
            } else {
                (0..1 + rng.below(3)).map(|_| port(rng)).collect()
            },
        })
        .collect()
}

pub fn cluster_policy(rng: &mut Rng, name: &str) -> ClusterNetworkPolicy {
    ClusterNetworkPolicy {
        name: name.into(),
        tier: if rng.chance(50) {
            Tier::Admin
        } else {
            Tier::Baseline
        },
        // Few values: equal priorities happen (ties broken by name).
        priority: *rng.pick(&[0, 5, 5, 10, 1000, 1001]),
        subject: match rng.below(10) {
            0..=4 => ClusterSubject::Namespaces(if rng.chance(30) {
                LabelSelector::all()
            } else {
                namespaces_selector(rng)
            }),
            5..=8 => ClusterSubject::Pods(namespaced_pod(rng)),
            _ => ClusterSubject::Unsupported("test".into()),
        },
        ingress: rules(rng, Direction::Ingress),
        egress: rules(rng, Direction::Egress),
    }
}
