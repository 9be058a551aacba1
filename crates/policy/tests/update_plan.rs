//! Updating the maps from one compiled state to the next: the planned
//! writes, applied one at a time, end in the new state, and traffic both
//! states allow passes after every single write (no drop mid-update).

mod common;
mod gen;

use common::Rng;
use weft_policy::*;

fn mutate(rng: &mut Rng, policies: &[NetworkPolicy], inv: &mut Inventory) -> Vec<NetworkPolicy> {
    let pods: Vec<Workload> = inv
        .workloads
        .iter()
        .filter(|w| !w.host_network)
        .cloned()
        .collect();
    let mut next = policies.to_vec();
    match rng.below(4) {
        0 => {
            next = (0..1 + rng.below(4))
                .map(|i| gen::policy(rng, &pods, &format!("np{i}")))
                .collect()
        }
        1 => {
            if !next.is_empty() {
                next.remove(rng.below(next.len()));
            }
        }
        2 => next.push(gen::policy(rng, &pods, "added")),
        _ => {
            // A pod changes labels: its identity changes under every policy.
            let i = rng.below(inv.workloads.len());
            let w = &mut inv.workloads[i];
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
fn planned_writes_reach_the_new_state_without_dropping_what_both_allow() {
    let (mut total_ops, mut total_flows) = (0, 0);
    for seed in 0..40 {
        let mut rng = Rng(0x0FDA_7E00 + seed);
        let mut inv = gen::inventory(&mut rng);
        let pods: Vec<Workload> = inv
            .workloads
            .iter()
            .filter(|w| !w.host_network)
            .cloned()
            .collect();
        let old_policies: Vec<NetworkPolicy> = (0..1 + rng.below(4))
            .map(|i| gen::policy(&mut rng, &pods, &format!("np{i}")))
            .collect();
        let mut alloc = MemoryAllocator::new();
        let old = compile(&old_policies, &inv, &mut alloc).unwrap();
        let new_policies = mutate(&mut rng, &old_policies, &mut inv);
        let new = compile(&new_policies, &inv, &mut alloc).unwrap();

        let addrs = gen::addresses(&inv);
        let mut both = Vec::new();
        for _ in 0..600 {
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
                    "seed {seed}: {f:?} dropped after write {n} {op:?}"
                );
            }
        }
        assert_eq!(state.endpoints, new.endpoints, "seed {seed}");
        assert_eq!(state.ipcache, new.ipcache, "seed {seed}");
        assert!(plan(&new, &new).is_empty());
        total_ops += ops.len();
        total_flows += both.len();
    }
    assert!(
        total_ops > 200 && total_flows > 2000,
        "{total_ops} writes, {total_flows} flows: too little exercised"
    );
}

#[test]
fn writes_come_in_the_safe_order() {
    let mut rng = Rng(7);
    let inv = gen::inventory(&mut rng);
    let pods: Vec<Workload> = inv
        .workloads
        .iter()
        .filter(|w| !w.host_network)
        .cloned()
        .collect();
    let mut alloc = MemoryAllocator::new();
    let old = compile(&[], &inv, &mut alloc).unwrap();
    let policies: Vec<NetworkPolicy> = (0..4)
        .map(|i| gen::policy(&mut rng, &pods, &format!("np{i}")))
        .collect();
    let new = compile(&policies, &inv, &mut alloc).unwrap();
    // Upserts come first, except those of identities some address leaves
    // (its ipcache prefix maps elsewhere): they wait until the ipcache
    // has moved the address, and still come before isolation is imposed.
    let leaves = |old: &Compiled, new: &Compiled, id: Identity| {
        old.ipcache.iter().any(|(node, o)| {
            let n = &new.ipcache[node];
            o.iter().any(|(p, i)| *i == id && n.get(p) != Some(i))
                || n.keys()
                    .any(|p| !o.contains_key(p) && old.identity_of(node, p.network()) == id)
        })
    };
    let rank = |op: &MapOp, moved: bool| match op {
        MapOp::PolicyUpsert { .. } if moved => 2,
        MapOp::PolicyUpsert { .. } => 0,
        MapOp::Isolation {
            isolated_by: None, ..
        } => 1,
        MapOp::IpcacheUpsert { .. } => 2,
        MapOp::Isolation {
            isolated_by: Some(_),
            ..
        } => 3,
        MapOp::IpcacheDelete { .. } => 4,
        MapOp::PolicyDelete { .. } => 5,
        MapOp::EndpointGone { .. } => 6,
    };
    for (from, to) in [(&old, &new), (&new, &old)] {
        let ops = plan(from, to);
        let mut moved = false;
        let ranks: Vec<u8> = ops
            .iter()
            .map(|op| {
                moved |= matches!(op, MapOp::IpcacheUpsert { .. });
                if let (true, MapOp::PolicyUpsert { key, .. }) = (moved, op) {
                    assert!(leaves(from, to, key.identity), "{op:?} after the ipcache");
                }
                rank(op, moved)
            })
            .collect();
        assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
        assert!(!ops.is_empty());
    }
}
