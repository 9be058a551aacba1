//! network-policy-api v0.3.0 conformance: egress to inline CIDRs, and the
//! experimental channel (named ports, node peers). See cnp_conformance/mod.rs
//! for the world.
//!
//! The NodePeers tests select nodes by label (`kubernetes.io/os: linux`).
//! weft's identities know "a node" (this one or another), not node labels,
//! so a `nodes` peer with a selector is not supported: it fails closed (an
//! Accept rule naming it matches nothing, a Pass or Deny rule denies
//! everything) and `faults()` says why. Each NodePeers test is therefore run
//! twice: as published, asserting that fail-closed outcome, and with the
//! selector written `{}` (every node; every node of the suite's clusters is
//! linux, so the same nodes), asserting upstream's expectations.

mod cnp_conformance;

use cnp_conformance::*;
use ipnet::IpNet;
use weft_policy::{ClusterAction, ClusterPeer, ClusterPort, ClusterRule, LabelSelector};

/// Upstream's "allow-egress-to-specific-podIPs": an Accept of the /32s (or
/// /128s) of luna-lovegood-0 and cedric-diggory-0, put first.
fn allow_pod_addresses(w: &mut World, cnp: &str) {
    let nets = ["luna-lovegood-0", "cedric-diggory-0"]
        .map(|p| IpNet::from(w.find(p).ips[0]))
        .to_vec();
    let rule = ClusterRule {
        name: "allow-egress-to-specific-podIPs".into(),
        action: ClusterAction::Accept,
        peers: vec![ClusterPeer::Networks(nets)],
        protocols: vec![],
    };
    w.cnp(cnp).egress.insert(0, rule);
}

/// Rewrites a rule's protocols as one destinationNamedPort.
fn named_port(rule: &mut ClusterRule, name: &str) {
    rule.protocols = vec![ClusterPort::Named(name.into())];
}

/// Every `nodes` peer selects every node.
fn every_node(w: &mut World, cnp: &str) {
    for rule in &mut w.cnp(cnp).egress {
        for peer in &mut rule.peers {
            if let ClusterPeer::Nodes(sel) = peer {
                *sel = LabelSelector::all();
            }
        }
    }
}

/// CNPAdminTierEgressInlineCIDRPeers (conformance/tests/admin-network-policy-standard-egress-inline-cidr-rules.go)
#[test]
fn cnp_admin_tier_egress_inline_cidr_peers() {
    let mut w = World::new();
    w.apply("admin_tier/standard-egress-inline-cidr-rules");
    // Should support a 'deny-egress' rule policy for egress-cidr-peer
    w.poke("harry-potter-1 -> luna-lovegood-0 tcp/80", false);
    w.poke("harry-potter-1 -> luna-lovegood-0 udp/53", false);
    w.poke("harry-potter-1 -> luna-lovegood-0 sctp/9003", false);
    w.poke("harry-potter-1 -> cedric-diggory-0 tcp/80", false);
    w.poke("harry-potter-1 -> cedric-diggory-0 udp/53", false);
    w.poke("harry-potter-1 -> cedric-diggory-0 sctp/9003", false);
    w.poke("harry-potter-1 -> draco-malfoy-0 tcp/80", true);
    w.poke("harry-potter-1 -> draco-malfoy-0 udp/53", true);
    w.poke("harry-potter-1 -> draco-malfoy-0 sctp/9003", true);
    // The pods' namespace no longer matches the Accept: the Deny of
    // 0.0.0.0/0 and ::/0 catches them (networks cover pods too).
    w.set_namespace_labels(
        "slytherin",
        &[("conformance-house", "denied-namespace-label")],
    );
    w.poke("harry-potter-1 -> draco-malfoy-0 tcp/80", false);
    w.poke("harry-potter-1 -> draco-malfoy-0 udp/53", false);
    w.poke("harry-potter-1 -> draco-malfoy-0 sctp/9003", false);
    w.set_namespace_labels("slytherin", &[("conformance-house", "slytherin")]);
    w.poke("harry-potter-1 -> draco-malfoy-0 tcp/80", true);
    w.poke("harry-potter-1 -> draco-malfoy-0 udp/53", true);
    w.poke("harry-potter-1 -> draco-malfoy-0 sctp/9003", true);
    // Should support an 'allow-egress' rule policy for egress-cidr-peer
    allow_pod_addresses(&mut w, "inline-cidr-as-peers-example");
    for (server, want) in [
        ("luna-lovegood-0", true),
        ("cedric-diggory-0", true),
        ("luna-lovegood-1", false),
        ("cedric-diggory-1", false),
    ] {
        for port in ["tcp/80", "udp/53", "sctp/9003"] {
            w.poke(&format!("harry-potter-1 -> {server} {port}"), want);
        }
    }
}

/// CNPBaselineTierEgressInlineCIDRPeers (conformance/tests/baseline-admin-network-policy-standard-egress-inline-cidr-rules.go)
#[test]
fn cnp_baseline_tier_egress_inline_cidr_peers() {
    let mut w = World::new();
    w.apply("baseline_tier/standard-egress-inline-cidr-rules");
    // Should support a 'deny-egress' rule policy for egress-cidr-peer
    w.poke("harry-potter-1 -> luna-lovegood-0 tcp/80", false);
    w.poke("harry-potter-1 -> luna-lovegood-0 udp/53", false);
    w.poke("harry-potter-1 -> luna-lovegood-0 sctp/9003", false);
    w.poke("harry-potter-1 -> cedric-diggory-0 tcp/80", false);
    w.poke("harry-potter-1 -> cedric-diggory-0 udp/53", false);
    w.poke("harry-potter-1 -> cedric-diggory-0 sctp/9003", false);
    w.poke("harry-potter-1 -> draco-malfoy-0 tcp/80", true);
    w.poke("harry-potter-1 -> draco-malfoy-0 udp/53", true);
    w.poke("harry-potter-1 -> draco-malfoy-0 sctp/9003", true);
    // The pods' namespace no longer matches the Accept: the Deny of
    // 0.0.0.0/0 and ::/0 catches them (networks cover pods too).
    w.set_namespace_labels(
        "slytherin",
        &[("conformance-house", "denied-namespace-label")],
    );
    w.poke("harry-potter-1 -> draco-malfoy-0 tcp/80", false);
    w.poke("harry-potter-1 -> draco-malfoy-0 udp/53", false);
    w.poke("harry-potter-1 -> draco-malfoy-0 sctp/9003", false);
    w.set_namespace_labels("slytherin", &[("conformance-house", "slytherin")]);
    w.poke("harry-potter-1 -> draco-malfoy-0 tcp/80", true);
    w.poke("harry-potter-1 -> draco-malfoy-0 udp/53", true);
    w.poke("harry-potter-1 -> draco-malfoy-0 sctp/9003", true);
    // Should support an 'allow-egress' rule policy for egress-cidr-peer
    allow_pod_addresses(&mut w, "default");
    for (server, want) in [
        ("luna-lovegood-0", true),
        ("cedric-diggory-0", true),
        ("luna-lovegood-1", false),
        ("cedric-diggory-1", false),
    ] {
        for port in ["tcp/80", "udp/53", "sctp/9003"] {
            w.poke(&format!("harry-potter-1 -> {server} {port}"), want);
        }
    }
}

/// CNPAdminTierEgressNamedPort (conformance/tests/admin-network-policy-experimental-egress-rules.go)
#[test]
fn cnp_admin_tier_egress_named_port() {
    let mut w = World::new();
    w.apply("admin_tier/standard-egress-tcp-rules");
    // Should support an 'allow-egress' policy for named port
    named_port(&mut w.cnp("egress-tcp").egress[5], "web");
    w.poke("harry-potter-0 -> cedric-diggory-1 tcp/80", true);
    w.poke("harry-potter-1 -> cedric-diggory-1 tcp/8080", false);
}

/// CNPAdminTierIngressNamedPort (conformance/tests/admin-network-policy-experimental-ingress-rules.go)
#[test]
fn cnp_admin_tier_ingress_named_port() {
    let mut w = World::new();
    w.apply("admin_tier/standard-ingress-udp-rules");
    // Should support an 'allow-ingress' policy for named port
    named_port(&mut w.cnp("ingress-udp").ingress[5], "dns");
    w.poke("harry-potter-0 -> cedric-diggory-1 udp/53", true);
    w.poke("harry-potter-1 -> cedric-diggory-1 udp/5353", false);
}

/// CNPBaselineTierEgressNamedPort (conformance/tests/baseline-admin-network-policy-experimental-egress-rules.go)
#[test]
fn cnp_baseline_tier_egress_named_port() {
    let mut w = World::new();
    w.apply("baseline_tier/standard-egress-udp-rules");
    // Should support an 'allow-egress' policy for named port
    named_port(&mut w.cnp("default").egress[3], "dns");
    w.poke("cedric-diggory-0 -> harry-potter-1 udp/53", true);
    w.poke("cedric-diggory-1 -> harry-potter-1 udp/5353", false);
}

/// CNPBaselineTierIngressNamedPort (conformance/tests/baseline-admin-network-policy-experimental-ingress-rules.go)
#[test]
fn cnp_baseline_tier_ingress_named_port() {
    let mut w = World::new();
    w.apply("baseline_tier/standard-ingress-tcp-rules");
    // Should support an 'allow-ingress' policy for named port
    named_port(&mut w.cnp("default").ingress[3], "web");
    w.poke("cedric-diggory-0 -> harry-potter-1 tcp/80", true);
    w.poke("cedric-diggory-1 -> harry-potter-1 tcp/8080", false);
}

/// CNPAdminTierEgressNodePeers (conformance/tests/admin-network-policy-experimental-egress-rules.go),
/// with `nodes: {}` for the published `nodes: {matchLabels: {kubernetes.io/os: linux}}`.
#[test]
fn cnp_admin_tier_egress_node_peers() {
    let mut w = World::new();
    w.apply_with_faults("admin_tier/experimental-egress-selector-rules");
    every_node(&mut w, "node-and-cidr-as-peers-example");
    assert!(w.cnp("node-and-cidr-as-peers-example").faults().is_empty());
    // Should support an 'allow-egress' rule policy for egress-node-peer
    w.poke("harry-potter-1 -> centaur-1 tcp/34000", true);
    // Should support a 'pass-egress' rule policy for egress-node-peer
    w.poke("harry-potter-1 -> centaur-1 udp/34002", true);
    // Should support a 'deny-egress' rule policy for egress-node-peer
    w.poke("harry-potter-1 -> centaur-1 tcp/34001", false);
    w.poke("harry-potter-1 -> centaur-1 udp/34004", false);
    w.poke("harry-potter-1 -> centaur-1 sctp/34006", false);
}

/// The same, as published: the node selector is refused and fails closed.
#[test]
fn cnp_admin_tier_egress_node_peers_as_published_fails_closed() {
    let mut w = World::new();
    let faults = w.apply_with_faults("admin_tier/experimental-egress-selector-rules");
    assert_eq!(faults.len(), 3, "{faults:?}");
    assert!(faults[0].contains("node labels"), "{faults:?}");
    // Rule 0 (Accept) matches nothing; rule 1 (Pass) denies everything.
    for port in ["tcp/34000", "udp/34002", "tcp/34001", "sctp/34006"] {
        w.poke(&format!("harry-potter-1 -> centaur-1 {port}"), false);
    }
    w.poke("harry-potter-1 -> draco-malfoy-0 tcp/80", false);
    // Only the subject is closed.
    w.poke("draco-malfoy-0 -> centaur-1 tcp/34000", true);
}

/// CNPBaselineTierEgressNodePeers (conformance/tests/baseline-admin-network-policy-experimental-egress-rules.go),
/// with `nodes: {}` for the published `nodes: {matchLabels: {kubernetes.io/os: linux}}`.
#[test]
fn cnp_baseline_tier_egress_node_peers() {
    let mut w = World::new();
    w.apply_with_faults("baseline_tier/experimental-egress-selector-rules");
    every_node(&mut w, "default");
    assert!(w.cnp("default").faults().is_empty());
    // Should support an 'allow-egress' rule policy for egress-node-peer
    w.poke("harry-potter-0 -> centaur-1 tcp/34000", true);
    w.poke("harry-potter-1 -> centaur-1 tcp/34001", true);
    // Should support a 'deny-egress' rule policy for egress-node-peer
    w.poke("harry-potter-1 -> centaur-1 udp/34004", false);
    w.poke("harry-potter-1 -> centaur-1 sctp/34006", false);
}

/// The same, as published: the node selector is refused and fails closed.
#[test]
fn cnp_baseline_tier_egress_node_peers_as_published_fails_closed() {
    let mut w = World::new();
    let faults = w.apply_with_faults("baseline_tier/experimental-egress-selector-rules");
    assert_eq!(faults.len(), 2, "{faults:?}");
    // Rule 0 (Accept) matches nothing, rule 1 (Deny) denies everything.
    w.poke("harry-potter-0 -> centaur-1 tcp/34000", false);
    w.poke("harry-potter-1 -> luna-lovegood-0 tcp/80", false);
}
