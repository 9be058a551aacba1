//! Order never matters: permuting the policies, the peers of a rule or the
//! ports of a rule gives the identical compiled state; permuting the rules
//! of a policy gives the same map keys, isolation and deciding policies
//! (only the rule index of an attribution follows its rule).

mod common;
mod gen;

use std::collections::BTreeMap;

use common::Rng;
use weft_policy::*;

fn compiled(policies: &[NetworkPolicy], inv: &Inventory) -> Compiled {
    compile(policies, inv, &mut MemoryAllocator::new()).unwrap()
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

fn scenario(seed: u64) -> (Vec<NetworkPolicy>, Inventory) {
    let mut rng = Rng(seed);
    let inv = gen::inventory(&mut rng);
    let pods: Vec<Workload> = inv
        .workloads
        .iter()
        .filter(|w| !w.host_network)
        .cloned()
        .collect();
    let policies = (0..4)
        .map(|i| gen::policy(&mut rng, &pods, &format!("np{i}")))
        .collect();
    (policies, inv)
}

#[test]
fn every_order_of_policies_compiles_to_the_same_state() {
    for seed in 0..10 {
        let (policies, inv) = scenario(0xAB00 + seed);
        let reference = compiled(&policies, &inv);
        for perm in permutations(policies.len()) {
            let shuffled: Vec<_> = perm.iter().map(|&i| policies[i].clone()).collect();
            assert_eq!(
                compiled(&shuffled, &inv),
                reference,
                "seed {seed}, order {perm:?}"
            );
        }
    }
}

#[test]
fn every_order_of_peers_and_ports_compiles_to_the_same_state() {
    for seed in 0..20 {
        let (policies, inv) = scenario(0xCD00 + seed);
        let reference = compiled(&policies, &inv);
        let mut rng = Rng(seed);
        for _ in 0..30 {
            let mut shuffled = policies.clone();
            for p in &mut shuffled {
                for rules in [&mut p.ingress, &mut p.egress].into_iter().flatten() {
                    for r in rules.iter_mut() {
                        if let Some(peers) = &mut r.peers {
                            rng.shuffle(peers);
                        }
                        if let Some(ports) = &mut r.ports {
                            rng.shuffle(ports);
                        }
                    }
                }
            }
            assert_eq!(compiled(&shuffled, &inv), reference, "seed {seed}");
        }
    }
}

/// Key -> the policy (not the rule index) that allows it.
fn by_policy(c: &Compiled) -> BTreeMap<(EndpointRef, PolicyKey), Option<PolicyRef>> {
    c.endpoints
        .iter()
        .flat_map(|(ep, p)| {
            p.entries.iter().map(move |(k, by)| {
                let who = match by {
                    AllowedBy::Rule(RuleRef { policy, .. }) | AllowedBy::DefaultDeny(policy, _) => {
                        Some(policy.clone())
                    }
                    _ => None,
                };
                ((ep.clone(), *k), who)
            })
        })
        .collect()
}

#[test]
fn every_order_of_rules_keeps_keys_isolation_and_deciding_policy() {
    // Six rules in each direction of one policy: all 720 orders.
    let mut checked = 0;
    for seed in 0..6 {
        let mut rng = Rng(0xEF00 + seed);
        let inv = gen::inventory(&mut rng);
        let pods: Vec<Workload> = inv
            .workloads
            .iter()
            .filter(|w| !w.host_network)
            .cloned()
            .collect();
        let mut policy = gen::policy(&mut rng, &pods, "many-rules");
        policy.policy_types = Some(vec![Direction::Ingress, Direction::Egress]);
        policy.pod_selector = LabelSelector::all();
        let mut six = || {
            let mut v = Vec::new();
            while v.len() < 6 {
                v.extend(gen::rules(&mut rng, &pods, 3).unwrap_or_default());
            }
            v.truncate(6);
            v
        };
        policy.ingress = Some(six());
        policy.egress = Some(six());
        let reference = compiled(std::slice::from_ref(&policy), &inv);
        for perm in permutations(6) {
            let mut p = policy.clone();
            p.ingress = Some(
                perm.iter()
                    .map(|&i| policy.ingress.as_ref().unwrap()[i].clone())
                    .collect(),
            );
            p.egress = Some(
                perm.iter()
                    .rev()
                    .map(|&i| policy.egress.as_ref().unwrap()[i].clone())
                    .collect(),
            );
            let c = compiled(std::slice::from_ref(&p), &inv);
            assert_eq!(
                by_policy(&c),
                by_policy(&reference),
                "seed {seed}, order {perm:?}"
            );
            for (ep, e) in &c.endpoints {
                let r = &reference.endpoints[ep];
                assert_eq!(
                    (&e.ingress_isolated_by, &e.egress_isolated_by),
                    (&r.ingress_isolated_by, &r.egress_isolated_by)
                );
            }
            assert_eq!(c.ipcache, reference.ipcache);
            checked += 1;
        }
    }
    assert_eq!(checked, 6 * 720);
}
