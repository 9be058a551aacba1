//! One Service at a time: after every random event the incrementally kept
//! maps equal a full build's (up to ID numbering), the returned ops take
//! the previous maps there through consistent states only, and no live key
//! changes ID.

mod common;
use std::collections::{BTreeMap, BTreeSet};

use common::*;
use weft_lb::maps::ServiceKey;
use weft_lb::*;

/// The maps with IDs replaced by what they stand for.
fn normalize(m: &LbMaps) -> BTreeSet<String> {
    let be = |id: &BackendId| {
        m.backends
            .get(id)
            .map_or("missing".into(), |b| b.addr().to_string())
    };
    let mut out = BTreeSet::new();
    let mut master_of: BTreeMap<(ServiceId, Scope), ServiceKey> = BTreeMap::new();
    for (k, v) in &m.services {
        if k.slot == 0 {
            master_of.insert((v.rev_nat_id, k.scope), *k);
            let rev = m.rev_nat.get(&v.rev_nat_id).map(|r| (r.addr, r.port));
            out.insert(format!(
                "M {k:?} count={} flags={} kind={:?} aff={} rev={rev:?}",
                v.count, v.flags, v.kind, v.affinity_timeout
            ));
        } else {
            out.insert(format!("S {k:?} -> {}", be(&v.backend_id)));
        }
    }
    for (k, t) in &m.maglev {
        let owner = master_of.get(&(k.service_id, k.scope));
        let t: Vec<String> = t.iter().map(be).collect();
        out.insert(format!("T {owner:?} {t:?}"));
    }
    for b in m.backends.values() {
        out.insert(format!("B {} {:?}", b.addr(), b.state));
    }
    out.insert(format!("R {}", m.rev_nat.len()));
    out
}

fn pick_service(r: &mut Rng, i: u32) -> (Option<Service>, Vec<EndpointSlice>) {
    let (svcs, slices) = random_world(r);
    let n = name(&format!("ns/s{i}"));
    let svc = svcs.into_iter().find(|s| s.id() == n);
    let slices = slices.into_iter().filter(|s| s.service == n).collect();
    (svc, slices)
}

#[test]
fn random_events_match_a_full_build_and_keep_ids() {
    let mut r = Rng(0x1c4e);
    for algorithm in [Algorithm::Random, Algorithm::Maglev { m: 31 }] {
        let cfg = config(algorithm);
        let mut state = LbState::new(cfg.clone(), IdAllocator::default());
        let mut services: BTreeMap<ServiceName, Service> = BTreeMap::new();
        let mut slices: BTreeMap<ServiceName, Vec<EndpointSlice>> = BTreeMap::new();
        let (mut incremental, mut total_ops) = (0, 0);
        for event in 0..400 {
            let i = r.next(6);
            let n = name(&format!("ns/s{i}"));
            let (svc, sl) = pick_service(&mut r, i);
            let before = state.maps().clone();
            let ops = state.update(&n, svc.clone(), sl.clone()).unwrap();
            total_ops += ops.len();
            match svc {
                Some(s) => services.insert(n.clone(), s),
                None => services.remove(&n),
            };
            slices.insert(n, sl);

            let mut mirror = before.clone();
            for op in &ops {
                mirror.apply(op);
                let errs = mirror.consistency_errors();
                assert!(errs.is_empty(), "event {event}: after {op:?}: {errs:?}");
            }
            assert_eq!(
                &mirror,
                state.maps(),
                "event {event}: ops do not lead to the state"
            );

            let all: Vec<Service> = services.values().cloned().collect();
            let all_slices: Vec<EndpointSlice> = slices.values().flatten().cloned().collect();
            let full = build(&all, &all_slices, &cfg, &mut IdAllocator::default()).unwrap();
            assert_eq!(
                normalize(state.maps()),
                normalize(&full.maps),
                "event {event}"
            );

            for (k, v) in before.services.iter().filter(|(k, _)| k.slot == 0) {
                if let Some(now) = state.maps().services.get(k) {
                    assert_eq!(
                        now.rev_nat_id, v.rev_nat_id,
                        "event {event}: {k:?} changed ID"
                    );
                }
            }
            for (id, b) in &before.backends {
                if let Some(now) = state.ids().backend_id(&b.addr()) {
                    assert_eq!(now, *id, "event {event}: backend {} changed ID", b.addr());
                }
            }
            if ops.len() < before.services.len() {
                incremental += 1;
            }
        }
        assert!(
            incremental > 100 && total_ops > 1000,
            "{algorithm:?}: {incremental} small updates, {total_ops} ops"
        );
    }
}

#[test]
fn reset_equals_build_and_a_repeated_update_does_nothing() {
    let (svcs, slices) = random_world(&mut Rng(11));
    let cfg = config(Algorithm::maglev());
    let mut state = LbState::new(cfg.clone(), IdAllocator::default());
    let ops = state.reset(&svcs, &slices).unwrap();
    let full = build(&svcs, &slices, &cfg, &mut IdAllocator::default()).unwrap();
    assert_eq!(state.maps(), &full.maps);
    assert_eq!(ops, diff(&full.maps, &LbMaps::default()));
    for s in &svcs {
        let mine: Vec<EndpointSlice> = slices
            .iter()
            .filter(|x| x.service == s.id())
            .cloned()
            .collect();
        assert!(state
            .update(&s.id(), Some(s.clone()), mine)
            .unwrap()
            .is_empty());
    }
}

#[test]
fn a_failed_update_changes_nothing() {
    let cfg = config(Algorithm::Random);
    let mut state = LbState::new(cfg, IdAllocator::with_limits(1, 100));
    let http = &[("http", TCP, 80)];
    state
        .update(
            &name("ns/a"),
            Some(service("ns/a", &["10.96.0.1"], http)),
            vec![],
        )
        .unwrap();
    let before = state.maps().clone();
    let err = state.update(
        &name("ns/b"),
        Some(service("ns/b", &["10.96.0.2"], http)),
        vec![],
    );
    assert_eq!(err, Err(LbError::ServiceIdsExhausted { max: 1 }));
    assert_eq!(state.maps(), &before);
    // ns/a still updates fine: the failed input was not kept.
    let sl = slice("ns/a", &[("http", TCP, 8080)], vec![ep("10.0.0.1", "n")]);
    assert!(!state
        .update(
            &name("ns/a"),
            Some(service("ns/a", &["10.96.0.1"], http)),
            vec![sl]
        )
        .unwrap()
        .is_empty());
}
