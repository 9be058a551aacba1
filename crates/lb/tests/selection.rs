//! Per-flow decisions the programs mirror: the slot a flow hash picks, the
//! Maglev lookup through the maps, and ClientIP session affinity holding,
//! expiring and letting go of a backend that left.

mod common;
use std::collections::BTreeMap;

use common::*;
use weft_lb::maps::ServiceKey;
use weft_lb::select::*;
use weft_lb::*;

const HTTP: &[(&str, Protocol, u16)] = &[("http", TCP, 80)];
const HTTP_EP: &[(&str, Protocol, u16)] = &[("http", TCP, 8080)];

fn web(algorithm: Algorithm, eps: &[&str]) -> (LbMaps, ServiceKey) {
    let mut s = service("ns/web", &["10.96.0.10"], HTTP);
    s.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 30,
    };
    let sl = slice("ns/web", HTTP_EP, eps.iter().map(|a| ep(a, "n")).collect());
    let d = build(&[s], &[sl], &config(algorithm), &mut IdAllocator::default()).unwrap();
    let master = *d.maps.services.keys().next().unwrap();
    (d.maps, master)
}

#[test]
fn random_slot_is_hash_mod_count_plus_one() {
    assert_eq!(random_slot(0, 3), Some(1));
    assert_eq!(random_slot(5, 3), Some(3));
    assert_eq!(random_slot(u32::MAX, 7), Some((u32::MAX % 7) as u16 + 1));
    assert_eq!(random_slot(9, 0), None);
}

#[test]
fn pick_spreads_flows_over_all_backends_either_way() {
    for algorithm in [Algorithm::Random, Algorithm::Maglev { m: 251 }] {
        let (maps, master) = web(algorithm, &["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        let mut seen: BTreeMap<BackendId, u32> = BTreeMap::new();
        for h in 0..3000u32 {
            let h = weft_lb::hash::hash64(1, &h.to_be_bytes()) as u32;
            *seen.entry(pick(&maps, &master, h).unwrap()).or_default() += 1;
        }
        assert_eq!(
            seen.keys().copied().collect::<Vec<_>>(),
            [1, 2, 3],
            "{algorithm:?}"
        );
        assert!(
            seen.values().all(|&n| (800..1200).contains(&n)),
            "{algorithm:?}: {seen:?}"
        );
    }
}

#[test]
fn pick_on_a_rejecting_frontend_finds_nothing() {
    for algorithm in [Algorithm::Random, Algorithm::maglev()] {
        let (maps, master) = web(algorithm, &[]);
        assert_eq!(pick(&maps, &master, 42), None);
    }
}

fn entry(backend_id: BackendId, last_seen: u64) -> Option<AffinityValue> {
    Some(AffinityValue {
        backend_id,
        last_seen,
    })
}

#[test]
fn affinity_holds_within_the_timeout_and_expires_after_it() {
    let usable = |id| id == 2;
    assert_eq!(
        affinity(entry(2, 100), 100, 30, usable),
        AffinityDecision::Reuse(2)
    );
    assert_eq!(
        affinity(entry(2, 100), 130, 30, usable),
        AffinityDecision::Reuse(2),
        "age == timeout still holds"
    );
    assert_eq!(
        affinity(entry(2, 100), 131, 30, usable),
        AffinityDecision::Select
    );
    assert_eq!(affinity(None, 100, 30, usable), AffinityDecision::Select);
}

#[test]
fn affinity_lets_go_of_a_backend_that_left_the_service() {
    let (maps, master) = web(Algorithm::Random, &["10.0.0.1", "10.0.0.2"]);
    let slots = slot_backends(&maps, &master);
    assert_eq!(slots, [1, 2]);
    let usable = |id| slots.contains(&id);
    assert_eq!(
        affinity(entry(2, 10), 20, 30, usable),
        AffinityDecision::Reuse(2)
    );

    // Scaled down: backend 2 is gone from the slots, the client re-selects.
    let mut ids = IdAllocator::restore(&maps);
    let sl = slice("ns/web", HTTP_EP, vec![ep("10.0.0.1", "n")]);
    let mut s = service("ns/web", &["10.96.0.10"], HTTP);
    s.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 30,
    };
    let d = build(&[s], &[sl], &config(Algorithm::Random), &mut ids).unwrap();
    let slots = slot_backends(&d.maps, &master);
    assert_eq!(slots, [1]);
    assert_eq!(
        affinity(entry(2, 10), 20, 30, |id| slots.contains(&id)),
        AffinityDecision::Select
    );
}

#[test]
fn affinity_survives_a_clock_that_went_backwards() {
    assert_eq!(
        affinity(entry(1, 500), 400, 30, |_| true),
        AffinityDecision::Reuse(1)
    );
}

#[test]
fn the_sweep_removes_expired_entries_and_those_of_services_without_affinity() {
    let key = |c: &str, s| AffinityKey {
        client: ip(c),
        service_id: s,
    };
    let entries = BTreeMap::from([
        (
            key("10.1.0.1", 1),
            AffinityValue {
                backend_id: 1,
                last_seen: 100,
            },
        ),
        (
            key("10.1.0.2", 1),
            AffinityValue {
                backend_id: 1,
                last_seen: 60,
            },
        ),
        (
            key("10.1.0.1", 2),
            AffinityValue {
                backend_id: 3,
                last_seen: 100,
            },
        ),
    ]);
    let timeouts = BTreeMap::from([(1, 30)]);
    assert_eq!(
        expired_affinity(&entries, &timeouts, 110),
        [key("10.1.0.1", 2), key("10.1.0.2", 1)]
    );
}
