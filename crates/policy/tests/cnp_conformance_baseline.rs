//! network-policy-api v0.3.0 conformance, Baseline tier, one protocol at a time: the upstream tests ported as truth tables (same names, same subtests in order, each PokeServer a probe, each Patch a mutation of the policy). See cnp_conformance/mod.rs for the world.

mod cnp_conformance;

use cnp_conformance::*;

/// CNPBaselineTierIngressTCP (conformance/tests/baseline-admin-network-policy-standard-ingress-tcp-rules.go)
#[test]
fn cnp_baseline_tier_ingress_tcp() {
    let mut w = World::new();
    w.apply("baseline_tier/standard-ingress-tcp-rules");
    // Should support an 'allow-ingress' policy for TCP protocol; ensure rule ordering is respected
    w.poke("luna-lovegood-0 -> harry-potter-0 tcp/80", true);
    w.poke("luna-lovegood-1 -> harry-potter-0 tcp/8080", true);
    // Should support an 'allow-ingress' policy for TCP protocol at the specified port
    w.poke("cedric-diggory-0 -> harry-potter-1 tcp/80", true);
    w.poke("cedric-diggory-1 -> harry-potter-1 tcp/8080", false);
    // Should not affect egress traffic when only ingress rules are specified
    w.poke("harry-potter-0 -> luna-lovegood-0 tcp/80", true);
    w.poke("harry-potter-1 -> draco-malfoy-0 tcp/80", true);
    // Should support an 'deny-ingress' policy for TCP protocol; ensure rule ordering is respected
    w.cnp("default").ingress.swap(0, 1);
    w.poke("luna-lovegood-0 -> harry-potter-1 tcp/80", false);
    w.poke("luna-lovegood-1 -> harry-potter-1 tcp/8080", false);
    // Should support a 'deny-ingress' policy for TCP protocol at the specified port
    w.poke("draco-malfoy-0 -> harry-potter-0 tcp/80", false);
    w.poke("draco-malfoy-1 -> harry-potter-0 tcp/8080", true);
}

/// CNPBaselineTierIngressUDP (conformance/tests/baseline-admin-network-policy-standard-ingress-udp-rules.go)
#[test]
fn cnp_baseline_tier_ingress_udp() {
    let mut w = World::new();
    w.apply("baseline_tier/standard-ingress-udp-rules");
    // Should support an 'allow-ingress' policy for UDP protocol; ensure rule ordering is respected
    w.poke("luna-lovegood-0 -> cedric-diggory-0 udp/53", true);
    w.poke("luna-lovegood-1 -> cedric-diggory-0 udp/5353", true);
    // Should support an 'allow-ingress' policy for UDP protocol at the specified port
    w.poke("harry-potter-0 -> cedric-diggory-1 udp/53", true);
    w.poke("harry-potter-1 -> cedric-diggory-1 udp/5353", false);
    // Should support an 'deny-ingress' policy for UDP protocol; ensure rule ordering is respected
    w.cnp("default").ingress.swap(0, 1);
    w.poke("luna-lovegood-0 -> cedric-diggory-1 udp/53", false);
    w.poke("luna-lovegood-1 -> cedric-diggory-1 udp/5353", false);
    // Should support a 'deny-ingress' policy for UDP protocol at the specified port
    w.poke("draco-malfoy-0 -> cedric-diggory-0 udp/5353", false);
    w.poke("draco-malfoy-1 -> cedric-diggory-0 udp/53", true);
}

/// CNPBaselineTierIngressSCTP (conformance/tests/baseline-admin-network-policy-standard-ingress-sctp-rules.go)
#[test]
fn cnp_baseline_tier_ingress_sctp() {
    let mut w = World::new();
    w.apply("baseline_tier/standard-ingress-sctp-rules");
    // Should support an 'allow-ingress' policy for SCTP protocol; ensure rule ordering is respected
    w.poke("harry-potter-0 -> luna-lovegood-0 sctp/9003", true);
    w.poke("harry-potter-1 -> luna-lovegood-0 sctp/9005", true);
    // Should support an 'allow-ingress' policy for SCTP protocol at the specified port
    w.poke("cedric-diggory-0 -> luna-lovegood-1 sctp/9003", true);
    w.poke("cedric-diggory-1 -> luna-lovegood-1 sctp/9005", false);
    // Should support an 'deny-ingress' policy for SCTP protocol; ensure rule ordering is respected
    w.cnp("default").ingress.swap(0, 1);
    w.poke("harry-potter-0 -> luna-lovegood-1 sctp/9003", false);
    w.poke("harry-potter-1 -> luna-lovegood-1 sctp/9005", false);
    // Should support a 'deny-ingress' policy for SCTP protocol at the specified port
    w.poke("draco-malfoy-0 -> luna-lovegood-0 sctp/9003", false);
    w.poke("draco-malfoy-1 -> luna-lovegood-0 sctp/9005", true);
}

/// CNPBaselineTierEgressTCP (conformance/tests/baseline-admin-network-policy-standard-egress-tcp-rules.go)
#[test]
fn cnp_baseline_tier_egress_tcp() {
    let mut w = World::new();
    w.apply("baseline_tier/standard-egress-tcp-rules");
    // Should support an 'allow-egress' policy for TCP protocol; ensure rule ordering is respected
    w.poke("harry-potter-0 -> luna-lovegood-0 tcp/80", true);
    w.poke("harry-potter-1 -> luna-lovegood-0 tcp/8080", true);
    // Should support an 'allow-egress' policy for TCP protocol at the specified port
    w.poke("harry-potter-0 -> cedric-diggory-1 tcp/8080", true);
    w.poke("harry-potter-1 -> cedric-diggory-1 tcp/80", false);
    // Should not affect ingress traffic when only egress rules are specified
    w.poke("luna-lovegood-0 -> harry-potter-0 tcp/80", true);
    w.poke("draco-malfoy-0 -> harry-potter-1 tcp/80", true);
    // Should support an 'deny-egress' policy for TCP protocol; ensure rule ordering is respected
    w.cnp("default").egress.swap(0, 1);
    w.poke("harry-potter-0 -> luna-lovegood-1 tcp/80", false);
    w.poke("harry-potter-1 -> luna-lovegood-1 tcp/8080", false);
    // Should support a 'deny-egress' policy for TCP protocol at the specified port
    w.poke("harry-potter-0 -> draco-malfoy-0 tcp/80", false);
    w.poke("harry-potter-1 -> draco-malfoy-0 tcp/8080", true);
}

/// CNPBaselineTierEgressUDP (conformance/tests/baseline-admin-network-policy-standard-egress-udp-rules.go)
#[test]
fn cnp_baseline_tier_egress_udp() {
    let mut w = World::new();
    w.apply("baseline_tier/standard-egress-udp-rules");
    // Should support an 'allow-egress' policy for UDP protocol; ensure rule ordering is respected
    w.poke("cedric-diggory-0 -> luna-lovegood-0 udp/53", true);
    w.poke("cedric-diggory-1 -> luna-lovegood-0 udp/5353", true);
    // Should support an 'allow-egress' policy for UDP protocol at the specified port
    w.poke("cedric-diggory-0 -> harry-potter-1 udp/53", true);
    w.poke("cedric-diggory-1 -> harry-potter-1 udp/5353", false);
    // Should support an 'deny-egress' policy for UDP protocol; ensure rule ordering is respected
    w.cnp("default").egress.swap(0, 1);
    w.poke("cedric-diggory-0 -> luna-lovegood-1 udp/53", false);
    w.poke("cedric-diggory-1 -> luna-lovegood-1 udp/5353", false);
    // Should support a 'deny-egress' policy for UDP protocol at the specified port
    w.poke("cedric-diggory-0 -> draco-malfoy-0 udp/5353", false);
    w.poke("cedric-diggory-1 -> draco-malfoy-0 udp/53", true);
}

/// CNPBaselineTierEgressSCTP (conformance/tests/baseline-admin-network-policy-standard-egress-sctp-rules.go)
#[test]
fn cnp_baseline_tier_egress_sctp() {
    let mut w = World::new();
    w.apply("baseline_tier/standard-egress-sctp-rules");
    // Should support an 'allow-egress' policy for SCTP protocol; ensure rule ordering is respected
    w.poke("luna-lovegood-0 -> harry-potter-0 sctp/9003", true);
    w.poke("luna-lovegood-1 -> harry-potter-0 sctp/9005", true);
    // Should support an 'allow-egress' policy for SCTP protocol at the specified port
    w.poke("luna-lovegood-0 -> cedric-diggory-1 sctp/9003", true);
    w.poke("luna-lovegood-1 -> cedric-diggory-1 sctp/9005", false);
    // Should support an 'deny-egress' policy for SCTP protocol; ensure rule ordering is respected
    w.cnp("default").egress.swap(0, 1);
    w.poke("luna-lovegood-0 -> harry-potter-1 sctp/9003", false);
    w.poke("luna-lovegood-1 -> harry-potter-1 sctp/9005", false);
    // Should support a 'deny-egress' policy for SCTP protocol at the specified port
    w.poke("luna-lovegood-0 -> draco-malfoy-0 sctp/9003", false);
    w.poke("luna-lovegood-1 -> draco-malfoy-0 sctp/9005", true);
}
