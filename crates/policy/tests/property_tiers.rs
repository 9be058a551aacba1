//! With ClusterNetworkPolicies in both tiers on top of NetworkPolicies, the
//! compiled maps read the way the program reads them (endpoint, ipcache
//! LPM, the policy LPM for the peer's identity and only on a miss for ANY,
//! the hit's action, else the isolation flag) give the same verdict and the
//! same deciding rule as the evaluator, over random clusters, policies and
//! flows. Seeded and bounded: a failure names its seed and replays exactly.

mod common;
mod gen;
mod gen_cnp;

use common::Rng;
use weft_policy::*;

/// Default bound; `WEFT_POLICY_SCENARIOS=n` runs more.
const SCENARIOS: u64 = 100;

struct Scenario {
    inventory: Inventory,
    policies: Vec<NetworkPolicy>,
    cluster: Vec<ClusterNetworkPolicy>,
}

fn scenario(seed: u64) -> Scenario {
    let mut rng = Rng(seed);
    let inventory = gen::inventory(&mut rng);
    let pods: Vec<Workload> = inventory
        .workloads
        .iter()
        .filter(|w| !w.host_network)
        .cloned()
        .collect();
    let policies = (0..rng.below(4))
        .map(|i| gen::policy(&mut rng, &pods, &format!("np{i}")))
        .collect();
    let cluster = (0..1 + rng.below(4))
        .map(|i| gen_cnp::cluster_policy(&mut rng, &format!("cnp{i}")))
        .collect();
    Scenario {
        inventory,
        policies,
        cluster,
    }
}

fn probe_ports(s: &Scenario) -> Vec<u16> {
    let mut v = gen::probe_ports(&s.policies);
    for c in &s.cluster {
        for r in c.ingress.iter().chain(&c.egress) {
            for p in &r.protocols {
                if let ClusterPort::Range { end, .. } = p {
                    v.extend([end.saturating_sub(1), *end, end.saturating_add(1)]);
                }
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

fn check_scenario(seed: u64, tally: &mut Tally) -> usize {
    let s = scenario(seed);
    let mut rng = Rng(seed ^ 0xF10F);
    let compiled = compile_all(
        &s.policies,
        &s.cluster,
        &s.inventory,
        &mut MemoryAllocator::new(),
    )
    .unwrap();
    let addrs = gen::addresses(&s.inventory);
    let ports = probe_ports(&s);
    let mut checked = 0;
    for &src in &addrs {
        for &dst in addrs.iter().filter(|d| d.is_ipv4() == src.is_ipv4()) {
            for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                for _ in 0..6 {
                    let flow = Flow {
                        src,
                        dst,
                        proto,
                        port: *rng.pick(&ports),
                    };
                    let by_maps = compiled.check(&flow);
                    let by_docs = evaluate_all(&s.policies, &s.cluster, &s.inventory, &flow);
                    if by_maps != by_docs {
                        panic!(
                            "seed {seed}: {flow:?}\n maps: {by_maps:?}\n docs: {by_docs:?}\n{}\nnetwork policies: {}\ncluster policies: {}\ninventory: {}",
                            compiled.explain(&flow),
                            serde_json::to_string_pretty(&s.policies).unwrap(),
                            serde_json::to_string_pretty(&s.cluster).unwrap(),
                            serde_json::to_string_pretty(&s.inventory).unwrap(),
                        );
                    }
                    tally.count(&by_maps);
                    checked += 1;
                }
            }
        }
    }
    tally.faults += compiled.rejected_cluster.len();
    checked
}

/// How often each kind of decision came up, so the agreement means
/// something.
#[derive(Default, Debug)]
struct Tally {
    cnp_accept: usize,
    cnp_deny: usize,
    admin: usize,
    baseline: usize,
    np_allow: usize,
    np_default_deny: usize,
    not_isolated: usize,
    faults: usize,
}

impl Tally {
    fn count(&mut self, v: &Verdict) {
        for d in [&v.egress, &v.ingress] {
            match d {
                DirectionVerdict::Allowed(AllowedBy::Cluster(r)) => {
                    self.cnp_accept += 1;
                    self.tier(r.tier);
                }
                DirectionVerdict::DeniedBy(r) => {
                    self.cnp_deny += 1;
                    self.tier(r.tier);
                }
                DirectionVerdict::Allowed(_) => self.np_allow += 1,
                DirectionVerdict::Denied(_) => self.np_default_deny += 1,
                DirectionVerdict::NotIsolated => self.not_isolated += 1,
                DirectionVerdict::NotApplicable => {}
            }
        }
    }

    fn tier(&mut self, t: Tier) {
        match t {
            Tier::Admin => self.admin += 1,
            Tier::Baseline => self.baseline += 1,
        }
    }
}

#[test]
fn compiled_tiers_agree_with_the_evaluator_on_random_clusters() {
    let scenarios = std::env::var("WEFT_POLICY_SCENARIOS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SCENARIOS);
    let mut tally = Tally::default();
    let mut flows = 0;
    for seed in 0..scenarios {
        flows += check_scenario(0x71E5_0000 + seed, &mut tally);
    }
    eprintln!("{flows} flows over {scenarios} scenarios agree: {tally:?}");
    assert!(flows > 50_000, "only {flows} flows checked");
    // The generator must reach every kind of decision, or the agreement
    // above proves little.
    for (what, n) in [
        ("ClusterNetworkPolicy accepts", tally.cnp_accept),
        ("ClusterNetworkPolicy denies", tally.cnp_deny),
        ("Admin decisions", tally.admin),
        ("Baseline decisions", tally.baseline),
        ("NetworkPolicy allows", tally.np_allow),
        ("NetworkPolicy default denies", tally.np_default_deny),
        ("undecided (default allow)", tally.not_isolated),
        ("fail-closed faults", tally.faults),
    ] {
        assert!(n > 20, "only {n} cases of {what}: {tally:?}");
    }
}

/// The entries an endpoint gets do not depend on the order of the
/// policies given (attribution is by precedence, not by input order).
#[test]
fn input_order_does_not_change_the_maps() {
    for seed in 0..30 {
        let s = scenario(0x0D3E_0000 + seed);
        let mut alloc = MemoryAllocator::new();
        let a = compile_all(&s.policies, &s.cluster, &s.inventory, &mut alloc).unwrap();
        let mut policies = s.policies.clone();
        let mut cluster = s.cluster.clone();
        policies.reverse();
        cluster.reverse();
        let b = compile_all(&policies, &cluster, &s.inventory, &mut alloc).unwrap();
        assert_eq!(a.endpoints, b.endpoints, "seed {seed}");
    }
}

/// One endpoint recompiled alone gets what the whole cluster gave it.
#[test]
fn one_endpoint_recompiles_alone_with_tiers() {
    for seed in 0..30 {
        let s = scenario(0xA10E_0000 + seed);
        let c = compile_all(
            &s.policies,
            &s.cluster,
            &s.inventory,
            &mut MemoryAllocator::new(),
        )
        .unwrap();
        for w in s.inventory.workloads.iter().filter(|w| !w.host_network) {
            let alone = compile_endpoint_all(&s.policies, &s.cluster, &c.identities, w);
            let ep = EndpointRef {
                namespace: w.namespace.clone(),
                name: w.name.clone(),
            };
            assert_eq!(alone, c.endpoints[&ep], "seed {seed} {ep:?}");
        }
    }
}
