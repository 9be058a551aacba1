//! The compiled maps, read the way the program will read them (endpoint
//! map, ipcache LPM, policy LPM for the peer's identity and for ANY), give
//! the same verdict — allowed or not, and the same deciding rule or default
//! deny — as the evaluator, over random clusters, policies and flows.
//! Seeded and bounded: a failure names its seed and replays exactly.

mod common;
mod gen;

use common::Rng;
use weft_policy::*;

/// Default bound; `WEFT_POLICY_SCENARIOS=n` runs more (a longer soak).
const SCENARIOS: u64 = 120;

fn check_scenario(seed: u64) -> usize {
    let mut rng = Rng(seed);
    let inventory = gen::inventory(&mut rng);
    let pods: Vec<Workload> = inventory
        .workloads
        .iter()
        .filter(|w| !w.host_network)
        .cloned()
        .collect();
    let policies: Vec<NetworkPolicy> = (0..1 + rng.below(4))
        .map(|i| gen::policy(&mut rng, &pods, &format!("np{i}")))
        .collect();
    let mut alloc = MemoryAllocator::new();
    let compiled = compile(&policies, &inventory, &mut alloc).unwrap();
    let addrs = gen::addresses(&inventory);
    let ports = gen::probe_ports(&policies);
    let mut checked = 0;
    for &src in &addrs {
        // A packet never mixes families.
        for &dst in addrs.iter().filter(|d| d.is_ipv4() == src.is_ipv4()) {
            for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                // A sample of the probe ports per pair keeps the run short
                // while every port is still hit across pairs.
                for _ in 0..10 {
                    let port = *rng.pick(&ports);
                    let flow = Flow {
                        src,
                        dst,
                        proto,
                        port,
                    };
                    let by_maps = compiled.check(&flow);
                    let by_docs = evaluate(&policies, &inventory, &flow);
                    if by_maps != by_docs {
                        panic!(
                            "seed {seed}: {flow:?}\n maps: {by_maps:?}\n docs: {by_docs:?}\n{}\npolicies: {}\ninventory: {}",
                            compiled.explain(&flow),
                            serde_json::to_string_pretty(&policies).unwrap(),
                            serde_json::to_string_pretty(&inventory).unwrap(),
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    checked
}

#[test]
fn compiled_maps_agree_with_the_evaluator_on_random_clusters() {
    let mut flows = 0;
    let scenarios = std::env::var("WEFT_POLICY_SCENARIOS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SCENARIOS);
    for seed in 0..scenarios {
        flows += check_scenario(0x5EED_0000 + seed);
    }
    // Bounded, and big enough to mean something.
    assert!(flows > 100_000, "only {flows} flows checked");
}

/// The generator must reach the shapes the property is about, or the
/// agreement above proves little.
#[test]
fn the_generator_covers_every_shape() {
    let (mut allowed, mut denied, mut not_isolated, mut by_rule, mut by_node, mut rejected) =
        (0, 0, 0, 0, 0, 0);
    let (mut named, mut ranges, mut blocks, mut hostnet) = (0, 0, 0, 0);
    for seed in 0..60 {
        let mut rng = Rng(0x5EED_0000 + seed);
        let inventory = gen::inventory(&mut rng);
        hostnet += inventory
            .workloads
            .iter()
            .filter(|w| w.host_network)
            .count();
        let pods: Vec<Workload> = inventory
            .workloads
            .iter()
            .filter(|w| !w.host_network)
            .cloned()
            .collect();
        let policies: Vec<NetworkPolicy> = (0..1 + rng.below(4))
            .map(|i| gen::policy(&mut rng, &pods, &format!("np{i}")))
            .collect();
        for p in &policies {
            for r in p
                .rules(Direction::Ingress)
                .iter()
                .chain(p.rules(Direction::Egress))
            {
                for port in r.ports.iter().flatten() {
                    named += matches!(port.port, Some(PortRef::Name(_))) as usize;
                    ranges += port.end_port.is_some() as usize;
                }
                blocks += r
                    .peers
                    .iter()
                    .flatten()
                    .filter(|p| p.ip_block.is_some())
                    .count();
            }
        }
        let compiled = compile(&policies, &inventory, &mut MemoryAllocator::new()).unwrap();
        rejected += compiled.rejected.len();
        let addrs = gen::addresses(&inventory);
        for &src in &addrs {
            for &dst in &addrs {
                let v = compiled.check(&Flow {
                    src,
                    dst,
                    proto: Protocol::Tcp,
                    port: 80,
                });
                if v.allowed {
                    allowed += 1
                } else {
                    denied += 1
                }
                for d in [&v.egress, &v.ingress] {
                    match d {
                        DirectionVerdict::NotIsolated => not_isolated += 1,
                        DirectionVerdict::Allowed(AllowedBy::Rule(_)) => by_rule += 1,
                        DirectionVerdict::Allowed(AllowedBy::LocalNode) => by_node += 1,
                        _ => {}
                    }
                }
            }
        }
    }
    for (what, n) in [
        ("allowed", allowed),
        ("denied", denied),
        ("not isolated", not_isolated),
        ("allowed by a rule", by_rule),
        ("allowed from the local node", by_node),
        ("rejected policies", rejected),
        ("named ports", named),
        ("port ranges", ranges),
        ("ipBlocks", blocks),
        ("hostNetwork pods", hostnet),
    ] {
        assert!(n > 5, "the generator produced only {n} cases of {what}");
    }
}
