//! The programs agree with `weft_policy::evaluate` on random clusters:
//! random pods, labels, namespaces and policies (the policy crate's own
//! generator) are compiled with `weft_policy::compile`, written through
//! `KernelPolicyMaps`, and random flows are run through the programs with
//! BPF_PROG_TEST_RUN: `weft_from_pod` for the source's egress,
//! `weft_to_container` for the destination's ingress (policy alone, so
//! nothing is forwarded). Each verdict, and the rule id of each decision's
//! flow event, must be the evaluator's. Seeded and bounded; a failure names
//! its seed. Without root it skips.

#[path = "../../policy/tests/common/mod.rs"]
mod common;
#[path = "../../policy/tests/gen/mod.rs"]
mod gen;
#[path = "policy_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;

use common::Rng;
use support::*;
use weft_bpf_abi::{
    FlowEvent, DIR_EGRESS, DIR_INGRESS, TCX_DROP, TCX_NEXT, VERDICT_DROPPED, VERDICT_FORWARDED,
};
use weft_datapath::fastpath::{FROM_POD, TO_CONTAINER};
use weft_datapath::policy::{default_deny_reason, PolicyEndpoint, PolicyMaps, PolicyMode};
use weft_policy::*;

/// Default bound; `WEFT_POLICY_DP_SCENARIOS=n` runs more.
const SCENARIOS: u64 = 120;
/// Flows probed per scenario.
const FLOWS: usize = 150;
const NODE: &str = "node-1";

/// What one direction must come out as: passes, and the event's rule.
fn expected(v: &DirectionVerdict, dir: Direction, ids: &mut RuleIds) -> (bool, Option<(u8, u32)>) {
    match v {
        DirectionVerdict::NotApplicable | DirectionVerdict::NotIsolated => (true, None),
        DirectionVerdict::Allowed(by) => (true, Some((VERDICT_FORWARDED, ids.id(by)))),
        DirectionVerdict::Denied(p) => (
            false,
            Some((VERDICT_DROPPED, ids.id(&default_deny_reason(p, dir)))),
        ),
        DirectionVerdict::DeniedBy(r) => (
            false,
            Some((VERDICT_DROPPED, ids.id(&AllowedBy::Cluster(r.clone())))),
        ),
    }
}

fn got(retval: i32, evs: &[FlowEvent], dir: u8) -> (bool, Option<(u8, u32)>) {
    assert!(retval == TCX_NEXT || retval == TCX_DROP, "retval {retval}");
    let mut of = evs.iter().filter(|e| e.direction == dir);
    let ev = of.next().map(|e| (e.verdict, e.rule_id));
    assert!(of.next().is_none(), "two events of one direction: {evs:?}");
    (retval == TCX_NEXT, ev)
}

#[test]
fn programs_agree_with_the_evaluator_on_random_clusters_privileged() {
    need_root!("policy_random");
    let scenarios = std::env::var("WEFT_POLICY_DP_SCENARIOS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SCENARIOS);
    let mut rig = Rig::with_mode(NODE, &[], PolicyMode::EnforceOnly);
    let mut sport: u16 = 1024;
    let (mut checked, mut denied, mut allowed_by_rule) = (0, 0, 0);
    for seed in 0..scenarios {
        let seed = 0xD47A_0000 + seed;
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
        let compiled = compile(&policies, &inventory, &mut MemoryAllocator::new()).unwrap();
        // endpoint ids: node-1's pods by position
        let ids: BTreeMap<(String, String), PolicyEndpoint> = pods
            .iter()
            .filter(|w| w.node == NODE)
            .enumerate()
            .map(|(i, w)| {
                (
                    (w.namespace.clone(), w.name.clone()),
                    PolicyEndpoint {
                        id: 1 + i as u32,
                        addresses: w.ips.clone(),
                        audit: false,
                    },
                )
            })
            .collect();
        let lookup = |e: &EndpointRef| ids.get(&(e.namespace.clone(), e.name.clone())).cloned();
        rig.maps.replace(&compiled, &lookup).unwrap();
        let on_node = |a: IpAddr| {
            inventory
                .workloads
                .iter()
                .any(|w| w.node == NODE && !w.host_network && w.ips.contains(&a))
        };

        let addrs = gen::addresses(&inventory);
        let ports = gen::probe_ports(&policies);
        for _ in 0..FLOWS {
            let src = *rng.pick(&addrs);
            let same: Vec<IpAddr> = addrs
                .iter()
                .copied()
                .filter(|d| d.is_ipv4() == src.is_ipv4())
                .collect();
            let dst = *rng.pick(&same);
            let proto = *rng.pick(&[Protocol::Tcp, Protocol::Udp, Protocol::Sctp]);
            let port = *rng.pick(&ports);
            let flow = Flow {
                src,
                dst,
                proto,
                port,
            };
            let want = evaluate(&policies, &inventory, &flow);
            // every probe a connection's first packet, its own tuple (the
            // drop reports are rate-limited per tuple)
            rig.maps.flush_conntrack().unwrap();
            sport = sport.checked_add(1).unwrap_or(1024);
            let mut p = Pkt::new("0.0.0.0", "0.0.0.0", proto.number(), sport, port);
            (p.src, p.dst) = (src, dst);
            let mut ruleids = rig.maps.rule_ids().clone();
            let context = || {
                format!(
                    "seed {seed:#x}: {flow:?}\n want: {want:?}\n{}\npolicies: {policies:?}\ninventory: {inventory:?}",
                    compiled.explain(&flow)
                )
            };
            if on_node(src) {
                let r = rig.run(FROM_POD, &p, 0);
                let evs = rig.events();
                let exp = expected(&want.egress, Direction::Egress, &mut ruleids);
                assert_eq!(got(r, &evs, DIR_EGRESS), exp, "egress: {}", context());
                checked += 1;
            }
            if on_node(dst) {
                // a tuple of its own: an egress drop of this one would
                // hold back the report of its ingress drop (one per flow)
                sport = sport.checked_add(1).unwrap_or(1024);
                p.sport = sport;
                let r = rig.run(TO_CONTAINER, &p, 0);
                let evs = rig.events();
                let exp = expected(&want.ingress, Direction::Ingress, &mut ruleids);
                assert_eq!(got(r, &evs, DIR_INGRESS), exp, "ingress: {}", context());
                checked += 1;
                match exp {
                    (false, _) => denied += 1,
                    (true, Some(_)) => allowed_by_rule += 1,
                    _ => {}
                }
            }
        }
    }
    // bounded, and reaching the cases that matter
    println!("{checked} decisions: {denied} ingress denied, {allowed_by_rule} allowed by a rule");
    assert!(checked > 1000, "only {checked} decisions");
    assert!(denied > 50 && allowed_by_rule > 50);
}
