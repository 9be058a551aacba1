//! The replay over recorded flow events as the ring holds them, through a
//! view with one enforced and one audited policy.

use std::num::NonZeroU16;

use weft_bpf_abi::{
    FlowEvent, AF_INET, DIR_INGRESS, FLOW_KIND_DECISION, POINT_TO_POD, VERDICT_AUDIT,
    VERDICT_DROPPED, VERDICT_FORWARDED,
};

use super::*;
use crate::flows::decode::render;
use crate::flows::Stored;

fn v4(s: &str) -> [u8; 16] {
    let ip: std::net::Ipv4Addr = s.parse().unwrap();
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&ip.octets());
    b
}

/// A recorded flow, rendered the way the API serves it.
fn recorded(src: &str, dst: &str, dport: u16, verdict: u8) -> Flow {
    let ev = FlowEvent {
        src: v4(src),
        dst: v4(dst),
        family: AF_INET,
        proto: 6,
        verdict,
        kind: FLOW_KIND_DECISION,
        sport: 40000u16.to_be(),
        dport: dport.to_be(),
        point: POINT_TO_POD,
        direction: DIR_INGRESS,
        ..Default::default()
    };
    let s = Stored {
        ev,
        wall_ns: 1,
        src: None,
        dst: None,
        policy: None,
    };
    render(&s, "n1")
}

fn pod(ns: &str, name: &str, app: &str, ip: &str) -> k8s::PodInfo {
    k8s::PodInfo {
        namespace: ns.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: [("app".to_string(), app.to_string())].into(),
        ips: vec![ip.parse().unwrap()],
        named_ports: vec![k8s::NamedPort {
            name: "http".into(),
            port: NonZeroU16::new(80).unwrap(),
            protocol: k8s::Protocol::Tcp,
        }],
        host_network: false,
        node: "n1".into(),
        phase: "Running".into(),
        terminating: false,
    }
}

fn deny_ingress(ns: &str, name: &str, app: &str, audit: bool) -> k8s::NetPolicy {
    k8s::NetPolicy {
        namespace: ns.into(),
        name: name.into(),
        pod_selector: k8s::LabelSelector {
            match_labels: [("app".to_string(), app.to_string())].into(),
            ..Default::default()
        },
        policy_types: Some(vec![k8s::PolicyType::Ingress]),
        ingress: None,
        egress: None,
        audit,
    }
}

#[test]
fn the_ring_replayed_lists_new_drops_and_new_allows_once_each() {
    let snap = Snapshot {
        pods: vec![
            pod("x", "web", "web", "10.0.0.1"),
            pod("x", "db", "db", "10.0.0.2"),
            pod("x", "cache", "cache", "10.0.0.3"),
        ],
        // cache closed (enforced), db audited
        policies: vec![
            deny_ingress("x", "cache-closed", "cache", false),
            deny_ingress("x", "db-audit", "db", true),
        ],
        ..Snapshot::default()
    };
    let ring = vec![
        recorded("10.0.0.1", "10.0.0.2", 5432, VERDICT_AUDIT),
        recorded("10.0.0.1", "10.0.0.2", 5432, VERDICT_AUDIT),
        recorded("10.0.0.2", "10.0.0.1", 80, VERDICT_FORWARDED),
        recorded("10.0.0.1", "10.0.0.3", 6379, VERDICT_DROPPED),
    ];
    // enforce db's deny-all, and replace cache-closed with one letting web in
    let mut open_cache = deny_ingress("x", "cache-closed", "cache", false);
    open_cache.ingress = Some(vec![k8s::IngressRule {
        from: Some(vec![k8s::Peer {
            pod_selector: Some(k8s::LabelSelector {
                match_labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            namespace_selector: None,
            ip_block: None,
        }]),
        ports: None,
    }]);
    let db = deny_ingress("x", "db-audit", "db", false);
    let p = replay(&snap, "n1", &[db, open_cache], &ring);
    assert_eq!(p.replayed, 3, "distinct flows");
    assert_eq!(p.newly_dropped.len(), 1, "{p:#?}");
    let d = &p.newly_dropped[0];
    assert_eq!(
        (d.count, d.before.as_str(), d.after.as_str()),
        (2, "AUDIT", "DROPPED")
    );
    assert_eq!(d.flow.destination.port, 5432);
    assert_eq!(d.decided_by, "ingress: x/db-audit default deny");
    assert_eq!(p.newly_allowed.len(), 1);
    let a = &p.newly_allowed[0];
    assert_eq!(a.flow.destination.port, 6379);
    assert!(
        a.decided_by.contains("x/cache-closed"),
        "the allowing rule: {}",
        a.decided_by
    );
}
