//! Updates with ClusterNetworkPolicies: the planned writes, applied one at
//! a time, end in the new state, and traffic both states allow passes after
//! every single write, now that entries can deny (a shorter new Deny must
//! not decide for a longer new Allow not yet written). Each update changes
//! the policies or relabels a pod, as the agent's updates do; see plan.rs
//! for the window when one update does both.

mod common;
mod gen;
mod gen_cnp;

use common::Rng;
use weft_policy::*;

struct State {
    policies: Vec<NetworkPolicy>,
    cluster: Vec<ClusterNetworkPolicy>,
    inventory: Inventory,
}

fn mutate(rng: &mut Rng, s: &State) -> State {
    let pods: Vec<Workload> = s
        .inventory
        .workloads
        .iter()
        .filter(|w| !w.host_network)
        .cloned()
        .collect();
    let mut next = State {
        policies: s.policies.clone(),
        cluster: s.cluster.clone(),
        inventory: s.inventory.clone(),
    };
    match rng.below(6) {
        0 => {
            next.cluster = (0..1 + rng.below(4))
                .map(|i| gen_cnp::cluster_policy(rng, &format!("cnp{i}")))
                .collect()
        }
        1 if !next.cluster.is_empty() => {
            next.cluster.remove(rng.below(next.cluster.len()));
        }
        2 => {
            let i = rng.below(next.cluster.len().max(1));
            if let Some(c) = next.cluster.get_mut(i) {
                // A priority or an action changes: precedence flips.
                c.priority = *rng.pick(&[0, 5, 10]);
                for r in c.ingress.iter_mut().chain(c.egress.iter_mut()) {
                    if rng.chance(50) {
                        r.action = *rng.pick(&[
                            ClusterAction::Accept,
                            ClusterAction::Deny,
                            ClusterAction::Pass,
                        ]);
                    }
                }
            }
        }
        3 => next.policies.push(gen::policy(rng, &pods, "added")),
        4 if !next.policies.is_empty() => {
            next.policies.remove(rng.below(next.policies.len()));
        }
        _ => {
            let i = rng.below(next.inventory.workloads.len());
            let w = &mut next.inventory.workloads[i];
            let app = if w.labels.get("app").map(String::as_str) == Some("web") {
                "db"
            } else {
                "web"
            };
            w.labels.insert("app".into(), app.into());
        }
    }
    next
}

#[test]
fn planned_writes_with_tiers_never_drop_what_both_states_allow() {
    let (mut total_ops, mut total_flows) = (0, 0);
    for seed in 0..60 {
        let mut rng = Rng(0x7D1E_0000 + seed);
        let inventory = gen::inventory(&mut rng);
        let pods: Vec<Workload> = inventory
            .workloads
            .iter()
            .filter(|w| !w.host_network)
            .cloned()
            .collect();
        let old_state = State {
            policies: (0..rng.below(3))
                .map(|i| gen::policy(&mut rng, &pods, &format!("np{i}")))
                .collect(),
            cluster: (0..1 + rng.below(3))
                .map(|i| gen_cnp::cluster_policy(&mut rng, &format!("cnp{i}")))
                .collect(),
            inventory,
        };
        let new_state = mutate(&mut rng, &old_state);
        let mut alloc = MemoryAllocator::new();
        let compile_state = |s: &State, alloc: &mut MemoryAllocator| {
            compile_all(&s.policies, &s.cluster, &s.inventory, alloc).unwrap()
        };
        let old = compile_state(&old_state, &mut alloc);
        let new = compile_state(&new_state, &mut alloc);
        let addrs = gen::addresses(&new_state.inventory);
        let mut both = Vec::new();
        for _ in 0..800 {
            let f = Flow {
                src: *rng.pick(&addrs),
                dst: *rng.pick(&addrs),
                proto: *rng.pick(&[Protocol::Tcp, Protocol::Udp]),
                port: *rng.pick(&gen::PORTS),
            };
            if old.check(&f).allowed && new.check(&f).allowed {
                both.push(f);
            }
        }
        let ops = plan(&old, &new);
        let mut state = old.clone();
        for (n, op) in ops.iter().enumerate() {
            apply(&mut state, std::slice::from_ref(op));
            for f in &both {
                assert!(
                    state.check(f).allowed,
                    "seed {seed}: {f:?} dropped after write {n} {op:?}\n{}\nold: {}\nnew: {}",
                    state.explain(f),
                    old.explain(f),
                    new.explain(f)
                );
            }
        }
        assert_eq!(state.endpoints, new.endpoints, "seed {seed}");
        assert_eq!(state.ipcache, new.ipcache, "seed {seed}");
        total_ops += ops.len();
        total_flows += both.len();
    }
    assert!(
        total_ops > 300 && total_flows > 3000,
        "{total_ops} writes, {total_flows} flows: too little exercised"
    );
}

/// The case the ordering exists for: a new Deny of every port with a new
/// Accept of one port inside it. Written shortest first, the Deny would
/// drop the port both states allow until the Accept lands.
#[test]
fn a_new_deny_around_a_new_accept_is_written_after_it() {
    let mut rng = Rng(3);
    let inventory = gen::inventory(&mut rng);
    let subject = inventory
        .workloads
        .iter()
        .find(|w| !w.host_network)
        .unwrap()
        .clone();
    let guard = ClusterNetworkPolicy {
        name: "guard".into(),
        tier: Tier::Admin,
        priority: 1,
        subject: ClusterSubject::Pods(NamespacedPod {
            namespace_selector: LabelSelector::labels([(
                "kubernetes.io/metadata.name",
                subject.namespace.as_str(),
            )]),
            pod_selector: LabelSelector::all(),
        }),
        ingress: vec![
            ClusterRule {
                name: "web".into(),
                action: ClusterAction::Accept,
                peers: vec![ClusterPeer::Networks(vec!["0.0.0.0/0".parse().unwrap()])],
                protocols: vec![ClusterPort::Number {
                    protocol: Protocol::Tcp,
                    port: 80,
                }],
            },
            ClusterRule {
                name: "rest".into(),
                action: ClusterAction::Deny,
                peers: vec![ClusterPeer::Networks(vec!["0.0.0.0/0".parse().unwrap()])],
                protocols: vec![],
            },
        ],
        egress: vec![],
    };
    let mut alloc = MemoryAllocator::new();
    let old = compile_all(&[], &[], &inventory, &mut alloc).unwrap();
    let new = compile_all(&[], &[guard], &inventory, &mut alloc).unwrap();
    let ep = EndpointRef {
        namespace: subject.namespace.clone(),
        name: subject.name.clone(),
    };
    let keys: Vec<PolicyKey> = plan(&old, &new)
        .into_iter()
        .filter_map(|op| match op {
            MapOp::PolicyUpsert { endpoint, key, .. } if endpoint == ep => Some(key),
            _ => None,
        })
        .collect();
    assert!(!keys.is_empty());
    for w in keys.windows(2) {
        assert!(
            (
                w[0].identity == Identity::ANY,
                std::cmp::Reverse(w[0].prefix_len())
            ) <= (
                w[1].identity == Identity::ANY,
                std::cmp::Reverse(w[1].prefix_len())
            ),
            "{} before {}",
            w[0],
            w[1]
        );
    }
}
