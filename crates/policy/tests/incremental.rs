//! `Incremental` equals the whole compile after every step of random
//! sequences of changes (policies, pods, labels, namespaces, addresses,
//! named ports, audit, ClusterNetworkPolicies), and recompiles only the
//! endpoints a change can affect. Seeded and bounded: a failure names its
//! seed and step and replays exactly.

mod common;
mod gen;
mod gen_cnp;

use std::collections::BTreeMap;

use common::{ip, labels, Rng};
use weft_policy::*;

/// Default bound; `WEFT_POLICY_SCENARIOS=n` runs more.
const SCENARIOS: u64 = 120;
const STEPS: usize = 30;

fn scenarios() -> u64 {
    std::env::var("WEFT_POLICY_SCENARIOS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SCENARIOS)
}

struct World {
    policies: Vec<NetworkPolicy>,
    cluster: Vec<ClusterNetworkPolicy>,
    inventory: Inventory,
    next: usize,
}

fn pods(inv: &Inventory) -> Vec<Workload> {
    inv.workloads
        .iter()
        .filter(|w| !w.host_network)
        .cloned()
        .collect()
}

/// Most policies name no ipBlock: a change to them leaves the CIDR pieces
/// as they are, and so takes the incremental path.
fn policy(rng: &mut Rng, inv: &Inventory, name: &str) -> NetworkPolicy {
    let mut p = gen::policy(rng, &pods(inv), name);
    if rng.chance(80) {
        for rules in [&mut p.ingress, &mut p.egress].into_iter().flatten() {
            for r in rules.iter_mut() {
                if let Some(peers) = &mut r.peers {
                    peers.retain(|peer| peer.ip_block.is_none());
                }
            }
        }
    }
    p
}

fn app_labels(rng: &mut Rng) -> Labels {
    let mut l = Labels::new();
    if rng.chance(80) {
        l.insert("app".into(), rng.pick(&["web", "db"]).to_string());
    }
    if rng.chance(50) {
        l.insert("tier".into(), rng.pick(&["1", "2"]).to_string());
    }
    l
}

/// One random change; returns what it was (for the failure message).
fn change(rng: &mut Rng, w: &mut World) -> String {
    let n_pods = w.inventory.workloads.len();
    match rng.below(15) {
        0 | 1 if !w.policies.is_empty() => {
            let i = rng.below(w.policies.len());
            let (name, ns) = (w.policies[i].name.clone(), w.policies[i].namespace.clone());
            let mut p = policy(rng, &w.inventory, &name);
            p.namespace = ns;
            w.policies[i] = p;
            format!("policy {name} rewritten")
        }
        2 => {
            w.next += 1;
            let p = policy(rng, &w.inventory, &format!("np-new{}", w.next));
            w.policies.push(p);
            "policy added".into()
        }
        3 if !w.policies.is_empty() => {
            let i = rng.below(w.policies.len());
            w.policies.remove(i).name + " removed"
        }
        4 if !w.policies.is_empty() => {
            let i = rng.below(w.policies.len());
            w.policies[i].audit ^= true;
            "audit toggled".into()
        }
        5 | 6 if n_pods > 0 => {
            let i = rng.below(n_pods);
            w.inventory.workloads[i].labels = app_labels(rng);
            format!("labels of {}", w.inventory.workloads[i].name)
        }
        7 => {
            let ns = *rng.pick(&gen::NAMESPACES);
            let mut l = labels(&[("kubernetes.io/metadata.name", ns)]);
            if rng.chance(60) {
                l.insert("team".into(), rng.pick(&["a", "b"]).to_string());
            }
            if rng.chance(40) {
                l.insert("env".into(), "prod".into());
            }
            for p in w
                .inventory
                .workloads
                .iter_mut()
                .filter(|p| p.namespace == ns)
            {
                p.namespace_labels = l.clone();
            }
            format!("namespace {ns} relabelled")
        }
        8 => {
            w.next += 1;
            let ns = *rng.pick(&gen::NAMESPACES);
            let (node, _) = *rng.pick(&gen::NODES);
            let same_ns = w
                .inventory
                .workloads
                .iter()
                .find(|p| p.namespace == ns)
                .map(|p| p.namespace_labels.clone())
                .unwrap_or_else(|| labels(&[("kubernetes.io/metadata.name", ns)]));
            // sometimes an address another pod holds or held
            let other = rng.below(n_pods.max(1));
            let taken = w.inventory.workloads.get(other).and_then(|p| p.ips.first());
            let addr = if let (true, Some(a)) = (rng.chance(15), taken) {
                *a
            } else {
                ip(&format!("10.244.{}.{}", w.next % 2, 100 + w.next % 150))
            };
            let mut named_ports = BTreeMap::new();
            if rng.chance(60) {
                named_ports.insert(
                    "http".to_string(),
                    (*rng.pick(&[80u16, 8080]), Protocol::Tcp),
                );
            }
            w.inventory.workloads.push(Workload {
                namespace: ns.into(),
                name: format!("new{}", w.next),
                labels: app_labels(rng),
                namespace_labels: same_ns,
                ips: vec![addr],
                named_ports,
                host_network: false,
                node: node.into(),
            });
            "pod added".into()
        }
        9 if n_pods > 0 => {
            let i = rng.below(n_pods);
            w.inventory.workloads.remove(i).name + " removed"
        }
        10 if n_pods > 0 => {
            let i = rng.below(n_pods);
            let p = &mut w.inventory.workloads[i];
            if p.named_ports.remove("http").is_none() {
                p.named_ports.insert(
                    "http".into(),
                    (*rng.pick(&[80u16, 8080, 81]), Protocol::Tcp),
                );
            }
            format!("named ports of {}", p.name)
        }
        11 if n_pods > 0 => {
            let i = rng.below(n_pods);
            let p = &mut w.inventory.workloads[i];
            if !p.host_network {
                w.next += 1;
                p.ips = vec![ip(&format!("10.244.{}.{}", w.next % 2, 100 + w.next % 150))];
            }
            format!("address of {}", p.name)
        }
        13 if w.policies.len() > 1 && rng.chance(20) => {
            // two policies of one name (the API never has them; the diff
            // keys by name, so it must notice before and after)
            let (a, b) = (rng.below(w.policies.len()), rng.below(w.policies.len()));
            w.policies[a].name = w.policies[b].name.clone();
            w.policies[a].namespace = w.policies[b].namespace.clone();
            "two policies of one name".into()
        }
        12 if rng.chance(30) => {
            if w.cluster.is_empty() || rng.chance(50) {
                w.next += 1;
                w.cluster
                    .push(gen_cnp::cluster_policy(rng, &format!("cnp{}", w.next)));
                "cluster policy added".into()
            } else {
                w.cluster.pop();
                "cluster policy removed".into()
            }
        }
        _ => "nothing".into(),
    }
}

#[test]
fn incremental_equals_the_whole_compile_over_random_changes() {
    let (mut steps, mut partial, mut saved) = (0, 0, 0usize);
    for seed in 0..scenarios() {
        let mut rng = Rng(seed);
        let inventory = gen::inventory(&mut rng);
        let p = pods(&inventory);
        let policies = (0..1 + rng.below(5))
            .map(|i| policy(&mut rng, &inventory, &format!("np{i}")))
            .collect();
        let cluster = if rng.chance(30) {
            vec![gen_cnp::cluster_policy(&mut rng, "cnp0")]
        } else {
            Vec::new()
        };
        drop(p);
        let mut w = World {
            policies,
            cluster,
            inventory,
            next: 0,
        };
        let mut alloc = MemoryAllocator::new();
        let mut inc = Incremental::new();
        let mut history = Vec::new();
        for step in 0..STEPS {
            if step > 0 {
                history.push(change(&mut rng, &mut w));
            }
            let up = inc
                .update(&w.policies, &w.cluster, &w.inventory, &mut alloc, false)
                .unwrap();
            let mut fresh = alloc.clone();
            let whole = compile_all(&w.policies, &w.cluster, &w.inventory, &mut fresh).unwrap();
            assert_eq!(
                fresh.len(),
                alloc.len(),
                "seed {seed} step {step}: the whole compile allocated what the update did not"
            );
            if inc.compiled() != &whole {
                for (ep, e) in &whole.endpoints {
                    assert_eq!(
                        inc.compiled().endpoints.get(ep),
                        Some(e),
                        "seed {seed} step {step} endpoint {ep:?} after {history:?} ({up:?})"
                    );
                }
                assert_eq!(
                    inc.compiled().ipcache,
                    whole.ipcache,
                    "seed {seed} step {step} ipcache after {history:?}"
                );
                assert_eq!(
                    inc.compiled().policies,
                    whole.policies,
                    "seed {seed} step {step} summaries after {history:?}"
                );
                panic!("seed {seed} step {step}: differs after {history:?} ({up:?})");
            }
            steps += 1;
            if up.full.is_none() {
                partial += 1;
                saved += whole.endpoints.len() - up.recompiled;
            }
        }
    }
    // the incremental path is the one exercised, and it saves work
    assert!(
        partial * 2 > steps,
        "only {partial} of {steps} steps incremental"
    );
    assert!(
        saved > steps,
        "only {saved} endpoint compiles saved in {steps} steps"
    );
}

/// 1,000 policies over 1,000 pods in 50 namespaces, each policy selecting
/// one pod and letting in its namespace's `role=client` pods.
fn thousand() -> (Vec<NetworkPolicy>, Inventory) {
    let mut workloads = Vec::new();
    let mut policies = Vec::new();
    for i in 0..1000usize {
        let ns = format!("ns{}", i % 50);
        let role = if i % 10 == 0 { "client" } else { "server" };
        workloads.push(Workload {
            namespace: ns.clone(),
            name: format!("pod{i}"),
            labels: labels(&[("app", &format!("a{i}")), ("role", role)]),
            namespace_labels: labels(&[("kubernetes.io/metadata.name", &ns)]),
            ips: vec![ip(&format!(
                "10.{}.{}.{}",
                100 + i / 65536,
                (i / 256) % 256,
                i % 256
            ))],
            named_ports: BTreeMap::new(),
            host_network: false,
            node: format!("node-{}", i % 4),
        });
        policies.push(NetworkPolicy {
            namespace: ns,
            name: format!("allow-a{i}"),
            pod_selector: LabelSelector::labels([("app", format!("a{i}").as_str())]),
            policy_types: None,
            ingress: Some(vec![Rule {
                peers: Some(vec![Peer {
                    pod_selector: Some(LabelSelector::labels([("role", "client")])),
                    ..Default::default()
                }]),
                ports: Some(vec![PolicyPort {
                    protocol: Some(Protocol::Tcp),
                    port: Some(PortRef::Number(80)),
                    end_port: None,
                }]),
            }]),
            egress: None,
            audit: false,
        });
    }
    (
        policies,
        Inventory {
            workloads,
            nodes: Vec::new(),
        },
    )
}

#[test]
fn one_policy_change_among_a_thousand_recompiles_only_its_endpoints() {
    let (mut policies, mut inv) = thousand();
    let mut alloc = MemoryAllocator::new();
    let mut inc = Incremental::new();
    let first = inc.update(&policies, &[], &inv, &mut alloc, false).unwrap();
    assert_eq!(first.full, Some("first"));
    assert_eq!(first.recompiled, 1000);

    // a port changes: the one pod it selects
    policies[7].ingress.as_mut().unwrap()[0]
        .ports
        .as_mut()
        .unwrap()[0]
        .port = Some(PortRef::Number(8080));
    let up = inc.update(&policies, &[], &inv, &mut alloc, false).unwrap();
    assert_eq!(
        up,
        Update {
            full: None,
            recompiled: 1
        }
    );

    // the selector moves to another pod: the one it selected and the one
    // it selects now
    policies[7].pod_selector = LabelSelector::labels([("app", "a57")]);
    let up = inc.update(&policies, &[], &inv, &mut alloc, false).unwrap();
    assert_eq!(
        up,
        Update {
            full: None,
            recompiled: 2
        }
    );

    // a policy goes: its pod
    policies.remove(500);
    let up = inc.update(&policies, &[], &inv, &mut alloc, false).unwrap();
    assert_eq!(
        up,
        Update {
            full: None,
            recompiled: 1
        }
    );

    // a server pod becomes a client: itself, and the pods of its
    // namespace's policies, whose peers now name it (ns13: 20 pods)
    inv.workloads[13].labels = labels(&[("app", "a13"), ("role", "client")]);
    let up = inc.update(&policies, &[], &inv, &mut alloc, false).unwrap();
    assert_eq!(
        up,
        Update {
            full: None,
            recompiled: 20
        }
    );

    // nothing changed: nothing compiled
    let up = inc.update(&policies, &[], &inv, &mut alloc, false).unwrap();
    assert_eq!(
        up,
        Update {
            full: None,
            recompiled: 0
        }
    );

    let whole = compile_all(&policies, &[], &inv, &mut alloc.clone()).unwrap();
    assert!(
        inc.compiled() == &whole,
        "the result is the whole compile's"
    );
}

#[test]
fn an_update_names_the_endpoints_it_touched_and_leaves_the_rest() {
    let (mut policies, inv) = thousand();
    let mut alloc = MemoryAllocator::new();
    let mut inc = Incremental::new();
    inc.update(&policies, &[], &inv, &mut alloc, false).unwrap();
    assert_eq!(inc.touched(), None, "a whole compile touches everything");
    let before = inc.compiled().clone();

    policies[7].ingress.as_mut().unwrap()[0]
        .ports
        .as_mut()
        .unwrap()[0]
        .port = Some(PortRef::Number(8080));
    inc.update(&policies, &[], &inv, &mut alloc, false).unwrap();
    let touched = inc.touched().expect("an incremental update").clone();
    let pod7 = EndpointRef {
        namespace: "ns7".into(),
        name: "pod7".into(),
    };
    assert_eq!(touched, [pod7.clone()].into());
    let untouched = |c: &Compiled| -> BTreeMap<EndpointRef, EndpointPolicy> {
        c.endpoints
            .iter()
            .filter(|(ep, _)| !touched.contains(*ep))
            .map(|(ep, p)| (ep.clone(), p.clone()))
            .collect()
    };
    assert!(untouched(&before) == untouched(inc.compiled()));

    inc.update(&policies, &[], &inv, &mut alloc, true).unwrap();
    assert_eq!(inc.touched(), None);
}
