//! `FakePolicyMaps` (what agent tests assert on) decides as
//! `weft_policy::evaluate` does, rule ids included, over random clusters
//! written through the same translation the kernel seam uses; and an
//! update by `plan` leaves it where a `replace` with the new state would.
//! No kernel: runs everywhere. Seeded and bounded.

#[path = "../../policy/tests/common/mod.rs"]
mod common;
#[path = "../../policy/tests/gen/mod.rs"]
mod gen;

use std::collections::BTreeMap;
use std::net::IpAddr;

use common::Rng;
use weft_datapath::policy::{
    default_deny_reason, Decision, FakePolicyMaps, PolicyEndpoint, PolicyMaps,
};
use weft_policy::*;

const SCENARIOS: u64 = 150;
const NODE: &str = "node-1";

fn expected(v: &DirectionVerdict, dir: Direction, ids: &mut RuleIds) -> Option<Decision> {
    Some(match v {
        DirectionVerdict::NotApplicable => return None,
        DirectionVerdict::NotIsolated => Decision::Allowed(None),
        DirectionVerdict::Allowed(by) => Decision::Allowed(Some(ids.id(by))),
        DirectionVerdict::Denied(p) => Decision::Denied {
            rule: ids.id(&default_deny_reason(p, dir)),
            default: true,
            audit: false,
        },
        DirectionVerdict::DeniedBy(r) => Decision::Denied {
            rule: ids.id(&AllowedBy::Cluster(r.clone())),
            default: false,
            audit: false,
        },
    })
}

struct Scenario {
    inventory: Inventory,
    policies: Vec<NetworkPolicy>,
    compiled: Compiled,
    ids: BTreeMap<(String, String), PolicyEndpoint>,
}

fn scenario(rng: &mut Rng, alloc: &mut MemoryAllocator) -> Scenario {
    let inventory = gen::inventory(rng);
    let pods: Vec<Workload> = inventory
        .workloads
        .iter()
        .filter(|w| !w.host_network)
        .cloned()
        .collect();
    let policies: Vec<NetworkPolicy> = (0..1 + rng.below(4))
        .map(|i| gen::policy(rng, &pods, &format!("np{i}")))
        .collect();
    let compiled = compile(&policies, &inventory, alloc).unwrap();
    let ids = pods
        .iter()
        .filter(|w| w.node == NODE)
        .map(|w| {
            let key = (w.namespace.clone(), w.name.clone());
            // ids from the name, so two scenarios agree on them
            let id = 1 + w.name.trim_start_matches('p').parse::<u32>().unwrap();
            let ep = PolicyEndpoint {
                id,
                addresses: w.ips.clone(),
                audit: false,
            };
            (key, ep)
        })
        .collect();
    Scenario {
        inventory,
        policies,
        compiled,
        ids,
    }
}

#[test]
fn the_fake_decides_as_the_evaluator_on_random_clusters() {
    let mut flows = 0;
    for seed in 0..SCENARIOS {
        let seed = 0xFA4E_0000 + seed;
        let mut rng = Rng(seed);
        let s = scenario(&mut rng, &mut MemoryAllocator::new());
        let lookup = |e: &EndpointRef| s.ids.get(&(e.namespace.clone(), e.name.clone())).cloned();
        let mut fake = FakePolicyMaps::new(NODE, RuleIds::new());
        fake.replace(&s.compiled, &lookup).unwrap();
        let on_node = |a: IpAddr| {
            s.inventory
                .workloads
                .iter()
                .any(|w| w.node == NODE && !w.host_network && w.ips.contains(&a))
        };
        let addrs = gen::addresses(&s.inventory);
        let ports = gen::probe_ports(&s.policies);
        for &src in &addrs {
            for &dst in addrs.iter().filter(|d| d.is_ipv4() == src.is_ipv4()) {
                for _ in 0..4 {
                    let proto = *rng.pick(&[Protocol::Tcp, Protocol::Udp, Protocol::Sctp]);
                    let port = *rng.pick(&ports);
                    let flow = Flow {
                        src,
                        dst,
                        proto,
                        port,
                    };
                    let want = evaluate(&s.policies, &s.inventory, &flow);
                    let got = fake.judge(src, dst, proto.number(), port);
                    let mut ids = fake.rule_ids().clone();
                    let ctx = || format!("seed {seed:#x}: {flow:?}\nwant {want:?}\ngot {got:?}");
                    if on_node(src) {
                        let e = expected(&want.egress, Direction::Egress, &mut ids);
                        assert_eq!(Some(got.egress), e, "egress: {}", ctx());
                    }
                    if on_node(dst) {
                        let e = expected(&want.ingress, Direction::Ingress, &mut ids);
                        assert_eq!(Some(got.ingress), e, "ingress: {}", ctx());
                    }
                    flows += 1;
                }
            }
        }
    }
    assert!(flows > 20_000, "only {flows} flows");
}

/// The endpoints' states without their revisions: two seams reach the same
/// state by different batches, so with different revisions (what matters of
/// them, that every batch bumps them, is the translator's unit test).
fn states(maps: &FakePolicyMaps) -> BTreeMap<weft_bpf_abi::EpKey, weft_bpf_abi::PolicyEp> {
    let mut out = maps.endpoints.clone();
    for s in out.values_mut() {
        s.revision = 0;
    }
    out
}

/// An update through `plan` + `apply` ends with exactly the entries a
/// `replace` with the new state writes.
#[test]
fn updates_by_plan_equal_a_replace() {
    let mut alloc = MemoryAllocator::new();
    for seed in 0..SCENARIOS {
        let mut rng = Rng(0x09DA_0000 + seed);
        let old = scenario(&mut rng, &mut alloc);
        // the same pods, other policies
        let pods: Vec<Workload> = old
            .inventory
            .workloads
            .iter()
            .filter(|w| !w.host_network)
            .cloned()
            .collect();
        let policies: Vec<NetworkPolicy> = (0..rng.below(4))
            .map(|i| gen::policy(&mut rng, &pods, &format!("np{i}")))
            .collect();
        let new = compile(&policies, &old.inventory, &mut alloc).unwrap();
        let lookup = |e: &EndpointRef| old.ids.get(&(e.namespace.clone(), e.name.clone())).cloned();
        let mut updated = FakePolicyMaps::new(NODE, RuleIds::new());
        updated.replace(&old.compiled, &lookup).unwrap();
        updated.apply(&plan(&old.compiled, &new), &lookup).unwrap();
        // the same rule ids, so the values compare
        let mut fresh = FakePolicyMaps::new(NODE, updated.rule_ids().clone());
        fresh.replace(&new, &lookup).unwrap();
        assert_eq!(updated.policy, fresh.policy, "seed {seed}");
        assert_eq!(updated.ipcache, fresh.ipcache, "seed {seed}");
        assert_eq!(states(&updated), states(&fresh), "seed {seed}");
    }
}

/// A pod whose ops were skipped (it did not resolve yet: its CNI ADD is in
/// flight) is brought in whole by `write_endpoint`, ending where a
/// `replace` that knew it from the start would.
#[test]
fn a_late_endpoint_is_written_whole() {
    let mut alloc = MemoryAllocator::new();
    let mut late_ones = 0;
    for seed in 0..SCENARIOS {
        let mut rng = Rng(0x1A7E_0000 + seed);
        let s = scenario(&mut rng, &mut alloc);
        let Some((late, ep)) = s.ids.iter().next() else {
            continue;
        };
        let late_ref = EndpointRef {
            namespace: late.0.clone(),
            name: late.1.clone(),
        };
        let all = |e: &EndpointRef| s.ids.get(&(e.namespace.clone(), e.name.clone())).cloned();
        let without = |e: &EndpointRef| if *e == late_ref { None } else { all(e) };
        let mut maps = FakePolicyMaps::new(NODE, RuleIds::new());
        maps.apply(&plan(&Compiled::default(), &s.compiled), &without)
            .unwrap();
        maps.write_endpoint(&s.compiled, &late_ref, ep).unwrap();
        let mut fresh = FakePolicyMaps::new(NODE, maps.rule_ids().clone());
        fresh.replace(&s.compiled, &all).unwrap();
        assert_eq!(maps.policy, fresh.policy, "seed {seed}");
        assert_eq!(states(&maps), states(&fresh), "seed {seed}");
        late_ones += 1;
    }
    assert!(late_ones > SCENARIOS / 2);
}
