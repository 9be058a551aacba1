//! network-policy-api v0.3.0 conformance across tiers and features: both directions at once, port ranges, pod selectors, priorities, inline CIDRs, the NetworkPolicy integration, and the experimental named ports and node peers. See cnp_conformance/mod.rs for the world.

mod cnp_conformance;

use cnp_conformance::*;
use weft_policy::ClusterAction;

/// CNPAdminTierGress (conformance/tests/admin-network-policy-standard-gress-rules.go)
#[test]
fn cnp_admin_tier_gress() {
    let mut w = World::new();
    w.apply("admin_tier/standard-gress-rules-combined");
    // Should support an 'allow-gress' policy across different protocols
    w.poke("harry-potter-0 -> luna-lovegood-0 tcp/80", true);
    w.poke("harry-potter-1 -> luna-lovegood-0 udp/53", true);
    w.poke("harry-potter-0 -> luna-lovegood-0 sctp/9003", true);
    w.poke("luna-lovegood-0 -> harry-potter-0 tcp/80", true);
    w.poke("luna-lovegood-1 -> harry-potter-0 udp/53", true);
    w.poke("luna-lovegood-1 -> harry-potter-0 sctp/9003", true);
    // Should support an 'allow-gress' policy across different protocols at the specified ports
    w.poke("harry-potter-0 -> cedric-diggory-1 tcp/8080", true);
    w.poke("harry-potter-1 -> cedric-diggory-1 tcp/80", false);
    w.poke("harry-potter-0 -> cedric-diggory-1 udp/5353", true);
    w.poke("harry-potter-1 -> cedric-diggory-1 udp/53", false);
    w.poke("harry-potter-0 -> cedric-diggory-1 sctp/9003", true);
    w.poke("harry-potter-1 -> cedric-diggory-1 sctp/9005", false);
    w.poke("cedric-diggory-0 -> harry-potter-1 tcp/80", true);
    w.poke("cedric-diggory-1 -> harry-potter-1 tcp/8080", false);
    w.poke("cedric-diggory-0 -> harry-potter-1 udp/5353", true);
    w.poke("cedric-diggory-1 -> harry-potter-1 udp/53", false);
    w.poke("cedric-diggory-0 -> harry-potter-1 sctp/9003", true);
    w.poke("cedric-diggory-1 -> harry-potter-1 sctp/9005", false);
    // Should support an 'deny-gress' policy across different protocols
    w.cnp("gress-rules").egress.swap(0, 1);
    w.cnp("gress-rules").ingress.swap(0, 1);
    w.poke("harry-potter-0 -> luna-lovegood-1 tcp/80", false);
    w.poke("harry-potter-1 -> luna-lovegood-1 udp/53", false);
    w.poke("harry-potter-0 -> luna-lovegood-1 sctp/9003", false);
    w.poke("luna-lovegood-0 -> harry-potter-1 tcp/80", false);
    w.poke("luna-lovegood-1 -> harry-potter-1 udp/53", false);
    w.poke("luna-lovegood-1 -> harry-potter-1 sctp/9003", false);
    // Should support a 'deny-gress' policy across different protocols at the specified ports
    w.poke("harry-potter-0 -> draco-malfoy-0 tcp/80", false);
    w.poke("harry-potter-1 -> draco-malfoy-0 tcp/8080", true);
    w.poke("harry-potter-0 -> draco-malfoy-0 udp/53", false);
    w.poke("harry-potter-1 -> draco-malfoy-0 udp/5353", true);
    w.poke("harry-potter-0 -> draco-malfoy-0 sctp/9003", false);
    w.poke("harry-potter-1 -> draco-malfoy-0 sctp/9005", true);
    w.poke("draco-malfoy-0 -> harry-potter-0 tcp/80", false);
    w.poke("draco-malfoy-1 -> harry-potter-0 tcp/8080", true);
    w.poke("draco-malfoy-0 -> harry-potter-0 udp/53", false);
    w.poke("draco-malfoy-1 -> harry-potter-0 udp/5353", true);
    w.poke("draco-malfoy-0 -> harry-potter-0 sctp/9003", false);
    w.poke("draco-malfoy-1 -> harry-potter-0 sctp/9005", true);
    // Should support an 'pass-gress' policy across different protocols
    w.cnp("gress-rules").egress.swap(0, 2);
    w.cnp("gress-rules").ingress.swap(0, 2);
    w.poke("harry-potter-0 -> luna-lovegood-0 tcp/80", true);
    w.poke("harry-potter-0 -> luna-lovegood-0 udp/5353", true);
    w.poke("harry-potter-0 -> luna-lovegood-0 sctp/9003", true);
    w.poke("luna-lovegood-0 -> harry-potter-0 tcp/80", true);
    w.poke("luna-lovegood-1 -> harry-potter-0 udp/53", true);
    w.poke("luna-lovegood-1 -> harry-potter-0 sctp/9003", true);
    // Should support a 'pass-gress' policy across different protocols at the specified ports
    w.cnp("gress-rules").egress.swap(3, 4);
    w.cnp("gress-rules").ingress.swap(3, 4);
    w.poke("harry-potter-0 -> draco-malfoy-0 tcp/80", true);
    w.poke("harry-potter-1 -> draco-malfoy-0 tcp/8080", true);
    w.poke("harry-potter-0 -> draco-malfoy-0 udp/53", true);
    w.poke("harry-potter-1 -> draco-malfoy-0 udp/5353", true);
    w.poke("harry-potter-0 -> draco-malfoy-0 sctp/9003", true);
    w.poke("harry-potter-1 -> draco-malfoy-0 sctp/9005", true);
    w.poke("draco-malfoy-0 -> harry-potter-0 tcp/80", true);
    w.poke("draco-malfoy-1 -> harry-potter-0 tcp/8080", true);
    w.poke("draco-malfoy-0 -> harry-potter-0 udp/53", true);
    w.poke("draco-malfoy-1 -> harry-potter-0 udp/5353", true);
    w.poke("draco-malfoy-0 -> harry-potter-0 sctp/9003", true);
    w.poke("draco-malfoy-1 -> harry-potter-0 sctp/9005", true);
}

/// CNPAdminTierPortRange (conformance/tests/admin-network-policy-standard-port-range-rules.go)
#[test]
fn cnp_admin_tier_port_range() {
    let mut w = World::new();
    w.apply("admin_tier/standard-port-range-rules-combined");
    // Should support egress port range rules across different protocols
    w.poke("harry-potter-0 -> luna-lovegood-0 tcp/80", true);
    w.poke("harry-potter-0 -> luna-lovegood-0 tcp/8080", true);
    w.poke("harry-potter-1 -> luna-lovegood-0 udp/53", false);
    w.poke("harry-potter-0 -> cedric-diggory-0 udp/53", true);
    w.poke("harry-potter-0 -> cedric-diggory-0 udp/5353", true);
    w.poke("harry-potter-1 -> cedric-diggory-0 tcp/80", false);
    w.poke("harry-potter-0 -> draco-malfoy-0 sctp/9003", true);
    w.poke("harry-potter-0 -> draco-malfoy-0 sctp/9005", true);
    w.poke("harry-potter-1 -> draco-malfoy-0 tcp/80", false);
    // Should support ingress port range rules across different protocols
    w.poke("luna-lovegood-0 -> harry-potter-0 tcp/80", true);
    w.poke("luna-lovegood-0 -> harry-potter-0 tcp/8080", true);
    w.poke("luna-lovegood-1 -> harry-potter-0 udp/53", false);
    w.poke("cedric-diggory-0 -> harry-potter-0 udp/53", true);
    w.poke("cedric-diggory-0 -> harry-potter-0 udp/5353", true);
    w.poke("cedric-diggory-1 -> harry-potter-0 tcp/80", false);
    w.poke("draco-malfoy-0 -> harry-potter-0 sctp/9003", true);
    w.poke("draco-malfoy-0 -> harry-potter-0 sctp/9005", true);
    w.poke("draco-malfoy-1 -> harry-potter-0 tcp/80", false);
}

/// CNPAdminTierPodSelector (conformance/tests/admin-network-policy-standard-pod-selector-rules.go)
#[test]
fn cnp_admin_tier_pod_selector() {
    let mut w = World::new();
    w.apply("admin_tier/standard-pod-selector-rules");
    // Should support pod selectors in egress peers
    w.poke("harry-potter-0 -> luna-lovegood-0 tcp/8080", false);
    w.poke("harry-potter-0 -> luna-lovegood-0 tcp/80", true);
    w.poke("harry-potter-1 -> luna-lovegood-1 tcp/80", false);
    // Should support pod selectors in ingress peers
    w.poke("draco-malfoy-1 -> harry-potter-1 tcp/80", false);
    w.poke("draco-malfoy-0 -> harry-potter-0 tcp/80", true);
    w.pod("hufflepuff/cedric-diggory-0")
        .labels
        .insert("conformance-role".into(), "blocked".into());
    w.poke("cedric-diggory-0 -> harry-potter-0 tcp/80", false);
    w.poke("cedric-diggory-1 -> harry-potter-0 tcp/80", true);
    w.pod("hufflepuff/cedric-diggory-0")
        .labels
        .remove("conformance-role");
    w.poke("cedric-diggory-0 -> harry-potter-0 tcp/80", true);
    w.pod("hufflepuff/cedric-diggory-1")
        .labels
        .insert("conformance-role".into(), "blocked".into());
    w.poke("cedric-diggory-1 -> harry-potter-0 tcp/80", false);
    // Should support pod selectors in the subject
    w.poke("draco-malfoy-0 -> luna-lovegood-1 tcp/80", true);
    w.pod("ravenclaw/luna-lovegood-0")
        .labels
        .insert("conformance-role".into(), "restricted".into());
    w.poke("luna-lovegood-0 -> draco-malfoy-0 tcp/80", false);
    w.poke("luna-lovegood-1 -> draco-malfoy-0 tcp/80", true);
    w.pod("ravenclaw/luna-lovegood-0")
        .labels
        .remove("conformance-role");
    w.poke("luna-lovegood-0 -> draco-malfoy-0 tcp/80", true);
    w.pod("ravenclaw/luna-lovegood-1")
        .labels
        .insert("conformance-role".into(), "restricted".into());
    w.poke("luna-lovegood-1 -> draco-malfoy-0 tcp/80", false);
}

/// CNPBaselineTierGress (conformance/tests/baseline-admin-network-policy-standard-gress-rules.go)
#[test]
fn cnp_baseline_tier_gress() {
    let mut w = World::new();
    w.apply("baseline_tier/standard-gress-rules-combined");
    // Should support an 'allow-gress' policy across different protocols
    w.poke("harry-potter-0 -> luna-lovegood-0 tcp/80", true);
    w.poke("harry-potter-1 -> luna-lovegood-0 udp/53", true);
    w.poke("harry-potter-0 -> luna-lovegood-0 sctp/9003", true);
    w.poke("luna-lovegood-0 -> harry-potter-0 tcp/80", true);
    w.poke("luna-lovegood-1 -> harry-potter-0 udp/53", true);
    w.poke("luna-lovegood-1 -> harry-potter-0 sctp/9003", true);
    // Should support an 'allow-gress' policy across different protocols at the specified ports
    w.poke("harry-potter-0 -> cedric-diggory-1 tcp/8080", true);
    w.poke("harry-potter-1 -> cedric-diggory-1 tcp/80", false);
    w.poke("harry-potter-0 -> cedric-diggory-1 udp/5353", true);
    w.poke("harry-potter-1 -> cedric-diggory-1 udp/53", false);
    w.poke("harry-potter-0 -> cedric-diggory-1 sctp/9003", true);
    w.poke("harry-potter-1 -> cedric-diggory-1 sctp/9005", false);
    w.poke("cedric-diggory-0 -> harry-potter-1 tcp/80", true);
    w.poke("cedric-diggory-1 -> harry-potter-1 tcp/8080", false);
    w.poke("cedric-diggory-0 -> harry-potter-1 udp/5353", true);
    w.poke("cedric-diggory-1 -> harry-potter-1 udp/53", false);
    w.poke("cedric-diggory-0 -> harry-potter-1 sctp/9003", true);
    w.poke("cedric-diggory-1 -> harry-potter-1 sctp/9005", false);
    // Should support an 'deny-gress' policy across different protocols
    w.cnp("default").egress.swap(0, 1);
    w.cnp("default").ingress.swap(0, 1);
    w.poke("harry-potter-0 -> luna-lovegood-1 tcp/80", false);
    w.poke("harry-potter-1 -> luna-lovegood-1 udp/53", false);
    w.poke("harry-potter-0 -> luna-lovegood-1 sctp/9003", false);
    w.poke("luna-lovegood-0 -> harry-potter-1 tcp/80", false);
    w.poke("luna-lovegood-1 -> harry-potter-1 udp/53", false);
    w.poke("luna-lovegood-1 -> harry-potter-1 sctp/9003", false);
    // Should support a 'deny-gress' policy across different protocols at the specified ports
    w.poke("harry-potter-0 -> draco-malfoy-0 tcp/80", false);
    w.poke("harry-potter-1 -> draco-malfoy-0 tcp/8080", true);
    w.poke("harry-potter-0 -> draco-malfoy-0 udp/53", false);
    w.poke("harry-potter-1 -> draco-malfoy-0 udp/5353", true);
    w.poke("harry-potter-0 -> draco-malfoy-0 sctp/9003", false);
    w.poke("harry-potter-1 -> draco-malfoy-0 sctp/9005", true);
    w.poke("draco-malfoy-0 -> harry-potter-0 tcp/80", false);
    w.poke("draco-malfoy-1 -> harry-potter-0 tcp/8080", true);
    w.poke("draco-malfoy-0 -> harry-potter-0 udp/53", false);
    w.poke("draco-malfoy-1 -> harry-potter-0 udp/5353", true);
    w.poke("draco-malfoy-0 -> harry-potter-0 sctp/9003", false);
    w.poke("draco-malfoy-1 -> harry-potter-0 sctp/9005", true);
}

/// CNPBaselineTierPortRange (conformance/tests/baseline-admin-network-policy-standard-port-range-rules.go)
#[test]
fn cnp_baseline_tier_port_range() {
    let mut w = World::new();
    w.apply("baseline_tier/standard-port-range-rules-combined");
    // Should support egress port range rules across different protocols
    w.poke("harry-potter-0 -> luna-lovegood-0 tcp/80", true);
    w.poke("harry-potter-0 -> luna-lovegood-0 tcp/8080", true);
    w.poke("harry-potter-1 -> luna-lovegood-0 udp/53", false);
    w.poke("harry-potter-0 -> cedric-diggory-0 udp/53", true);
    w.poke("harry-potter-0 -> cedric-diggory-0 udp/5353", true);
    w.poke("harry-potter-1 -> cedric-diggory-0 tcp/80", false);
    w.poke("harry-potter-0 -> draco-malfoy-0 sctp/9003", true);
    w.poke("harry-potter-0 -> draco-malfoy-0 sctp/9005", true);
    w.poke("harry-potter-1 -> draco-malfoy-0 tcp/80", false);
    // Should support ingress port range rules across different protocols
    w.poke("luna-lovegood-0 -> harry-potter-0 tcp/80", true);
    w.poke("luna-lovegood-0 -> harry-potter-0 tcp/8080", true);
    w.poke("luna-lovegood-1 -> harry-potter-0 udp/53", false);
    w.poke("cedric-diggory-0 -> harry-potter-0 udp/53", true);
    w.poke("cedric-diggory-0 -> harry-potter-0 udp/5353", true);
    w.poke("cedric-diggory-1 -> harry-potter-0 tcp/80", false);
    w.poke("draco-malfoy-0 -> harry-potter-0 sctp/9003", true);
    w.poke("draco-malfoy-0 -> harry-potter-0 sctp/9005", true);
    w.poke("draco-malfoy-1 -> harry-potter-0 tcp/80", false);
}

/// CNPBaselineTierPodSelector (conformance/tests/baseline-admin-network-policy-standard-pod-selector-rules.go)
#[test]
fn cnp_baseline_tier_pod_selector() {
    let mut w = World::new();
    w.apply("baseline_tier/standard-pod-selector-rules");
    // Should support pod selectors in egress peers
    w.poke("harry-potter-0 -> luna-lovegood-0 tcp/8080", false);
    w.poke("harry-potter-0 -> luna-lovegood-0 tcp/80", true);
    w.poke("harry-potter-1 -> luna-lovegood-1 tcp/80", false);
    // Should support pod selectors in ingress peers
    w.poke("draco-malfoy-1 -> harry-potter-1 tcp/80", false);
    w.poke("draco-malfoy-0 -> harry-potter-0 tcp/80", true);
    w.pod("hufflepuff/cedric-diggory-0")
        .labels
        .insert("conformance-role".into(), "blocked".into());
    w.poke("cedric-diggory-0 -> harry-potter-0 tcp/80", false);
    w.poke("cedric-diggory-1 -> harry-potter-0 tcp/80", true);
    w.pod("hufflepuff/cedric-diggory-0")
        .labels
        .remove("conformance-role");
    w.poke("cedric-diggory-0 -> harry-potter-0 tcp/80", true);
    w.pod("hufflepuff/cedric-diggory-1")
        .labels
        .insert("conformance-role".into(), "blocked".into());
    w.poke("cedric-diggory-1 -> harry-potter-0 tcp/80", false);
    // Should support pod selectors in the subject
    w.poke("draco-malfoy-0 -> luna-lovegood-1 tcp/80", true);
    w.pod("ravenclaw/luna-lovegood-0")
        .labels
        .insert("conformance-role".into(), "restricted".into());
    w.poke("luna-lovegood-0 -> draco-malfoy-0 tcp/80", false);
    w.poke("luna-lovegood-1 -> draco-malfoy-0 tcp/80", true);
    w.pod("ravenclaw/luna-lovegood-0")
        .labels
        .remove("conformance-role");
    w.poke("luna-lovegood-0 -> draco-malfoy-0 tcp/80", true);
    w.pod("ravenclaw/luna-lovegood-1")
        .labels
        .insert("conformance-role".into(), "restricted".into());
    w.poke("luna-lovegood-1 -> draco-malfoy-0 tcp/80", false);
}

/// CNPAdminTierPriorityField (conformance/tests/admin-network-policy-standard-priority.go)
#[test]
fn cnp_admin_tier_priority_field() {
    let mut w = World::new();
    w.apply("admin_tier/standard-priority-field");
    // Should Deny traffic from slytherin to gryffindor respecting admin CNP
    w.poke("draco-malfoy-0 -> harry-potter-0 tcp/80", false);
    w.poke("draco-malfoy-1 -> harry-potter-0 tcp/8080", false);
    // Should Deny traffic to slytherin from gryffindor respecting admin CNP
    w.poke("harry-potter-0 -> draco-malfoy-0 tcp/80", false);
    w.poke("harry-potter-1 -> draco-malfoy-0 tcp/8080", false);
    // Should respect admin CNP priority field; thus passing both ingress and egress traffic over to baseline CNP
    w.cnp("old-priority-60-new-priority-40-example").priority = 40;
    w.poke("draco-malfoy-0 -> harry-potter-0 tcp/80", true);
    w.poke("draco-malfoy-1 -> harry-potter-0 tcp/8080", true);
    w.poke("harry-potter-0 -> draco-malfoy-0 tcp/80", true);
    w.poke("harry-potter-1 -> draco-malfoy-0 tcp/8080", true);
}

/// CNPAdminTierSamePriority (conformance/tests/admin-network-policy-standard-same-priority.go)
#[test]
fn cnp_admin_tier_same_priority() {
    let mut w = World::new();
    w.apply("admin_tier/standard-same-priority");
    // Should deny traffic in both directions for each same-priority policy
    w.poke("draco-malfoy-0 -> harry-potter-0 tcp/80", false);
    w.poke("harry-potter-0 -> draco-malfoy-0 tcp/80", false);
    w.poke("cedric-diggory-0 -> harry-potter-0 tcp/80", false);
    w.poke("harry-potter-1 -> cedric-diggory-0 tcp/80", false);
    w.poke("draco-malfoy-1 -> cedric-diggory-0 tcp/8080", false);
    w.poke("cedric-diggory-1 -> draco-malfoy-0 tcp/8080", false);
    // Should not apply one same-priority policy's rules to another policy's subject
    w.poke("draco-malfoy-0 -> harry-potter-0 tcp/8080", true);
    w.poke("harry-potter-0 -> draco-malfoy-0 tcp/8080", true);
    w.poke("draco-malfoy-1 -> cedric-diggory-0 tcp/80", true);
    w.poke("cedric-diggory-0 -> draco-malfoy-0 tcp/80", true);
    // Should not affect traffic matching no same-priority policy
    w.poke("luna-lovegood-0 -> harry-potter-0 tcp/80", true);
    w.poke("harry-potter-1 -> luna-lovegood-0 tcp/80", true);
}

/// CNPAdminTierIntegration (conformance/tests/admin-network-policy-standard-integration.go)
#[test]
fn cnp_admin_tier_integration() {
    let mut w = World::new();
    w.apply("api_integration/standard-anp-np-banp");
    // Should Deny traffic from slytherin to gryffindor respecting admin CNP
    w.poke("draco-malfoy-0 -> harry-potter-0 tcp/80", false);
    w.poke("draco-malfoy-1 -> harry-potter-0 tcp/8080", false);
    // Should Deny traffic to slytherin from gryffindor respecting admin CNP
    w.poke("harry-potter-0 -> draco-malfoy-0 tcp/80", false);
    w.poke("harry-potter-1 -> draco-malfoy-0 tcp/8080", false);
    // Should support a 'pass-ingress' policy for admin CNP and respect the match for network policy
    w.cnp("pass-example").ingress[0].action = ClusterAction::Pass;
    w.poke("draco-malfoy-0 -> harry-potter-0 tcp/80", true);
    w.poke("draco-malfoy-1 -> harry-potter-0 tcp/8080", true);
    // Should support a 'pass-egress' policy for admin CNP and respect the match for network policy
    w.cnp("pass-example").egress[0].action = ClusterAction::Pass;
    w.poke("harry-potter-0 -> draco-malfoy-0 tcp/80", true);
    w.poke("harry-potter-1 -> draco-malfoy-0 tcp/8080", true);
    // Should support a 'pass-ingress' policy for admin CNP and respect the match for baseline cluster network policy
    w.policies
        .retain(|p| p.name != "allow-gress-from-to-slytherin-to-gryffindor");
    w.poke("draco-malfoy-0 -> harry-potter-0 tcp/80", false);
    w.poke("draco-malfoy-1 -> harry-potter-0 tcp/8080", false);
    // Should support a 'pass-egress' policy for admin CNP and respect the match for baseline cluster network policy
    w.poke("harry-potter-0 -> draco-malfoy-0 tcp/80", false);
    w.poke("harry-potter-1 -> draco-malfoy-0 tcp/8080", false);
}

/// CNPBaselineTierSamePriority (conformance/tests/baseline-admin-network-policy-standard-same-priority.go)
#[test]
fn cnp_baseline_tier_same_priority() {
    let mut w = World::new();
    w.apply("baseline_tier/standard-same-priority");
    // Should deny traffic in both directions for each same-priority policy
    w.poke("draco-malfoy-0 -> harry-potter-1 tcp/80", false);
    w.poke("harry-potter-0 -> draco-malfoy-1 tcp/80", false);
    w.poke("cedric-diggory-0 -> harry-potter-1 tcp/80", false);
    w.poke("harry-potter-1 -> cedric-diggory-1 tcp/80", false);
    w.poke("draco-malfoy-1 -> cedric-diggory-1 tcp/8080", false);
    w.poke("cedric-diggory-1 -> draco-malfoy-1 tcp/8080", false);
    // Should not apply one same-priority policy's rules to another policy's subject
    w.poke("draco-malfoy-0 -> harry-potter-1 tcp/8080", true);
    w.poke("harry-potter-0 -> draco-malfoy-1 tcp/8080", true);
    w.poke("draco-malfoy-1 -> cedric-diggory-1 tcp/80", true);
    w.poke("cedric-diggory-0 -> draco-malfoy-1 tcp/80", true);
    // Should not affect traffic matching no same-priority policy
    w.poke("luna-lovegood-0 -> harry-potter-1 tcp/80", true);
    w.poke("harry-potter-0 -> luna-lovegood-1 tcp/80", true);
}
