//! Service and backend IDs: deterministic from scratch, kept across churn,
//! restored after a restart from the maps the kernel kept, not reused at
//! once, never 0, and an error (not a wrap onto a live ID) when exhausted.

mod common;
use common::*;
use weft_lb::*;

const HTTP: &[(&str, Protocol, u16)] = &[("http", TCP, 80)];
const HTTP_EP: &[(&str, Protocol, u16)] = &[("http", TCP, 8080)];

/// `n` Services `ns/s<i>` on 10.96.0.<i> with two endpoints each.
fn world(range: std::ops::RangeInclusive<u8>) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut svcs = Vec::new();
    let mut slices = Vec::new();
    for i in range {
        let n = format!("ns/s{i:03}");
        svcs.push(service(&n, &[&format!("10.96.0.{i}")], HTTP));
        let eps = vec![
            ep(&format!("10.0.{i}.1"), "n"),
            ep(&format!("10.0.{i}.2"), "n"),
        ];
        slices.push(slice(&n, HTTP_EP, eps));
    }
    (svcs, slices)
}

fn sid(ids: &IdAllocator, addr: &str) -> ServiceId {
    let (a, p) = addr.split_once(':').unwrap();
    ids.service_id(&FrontendAddr {
        addr: ip(a),
        port: p.parse().unwrap(),
        proto: TCP,
    })
    .unwrap_or_else(|| panic!("no id for {addr}"))
}

fn run(ids: &mut IdAllocator, w: &(Vec<Service>, Vec<EndpointSlice>)) -> Desired {
    build(&w.0, &w.1, &config(Algorithm::Random), ids).unwrap()
}

#[test]
fn from_scratch_ids_follow_key_order_and_repeat() {
    let w = world(1..=5);
    let mut ids = IdAllocator::default();
    let d = run(&mut ids, &w);
    for i in 1..=5u16 {
        assert_eq!(sid(&ids, &format!("10.96.0.{i}:80")), i);
    }
    assert_eq!(
        d.maps.backends.keys().copied().collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert!(!d.maps.backends.contains_key(&0) && !d.maps.rev_nat.contains_key(&0));
    let mut reversed = (w.0.clone(), w.1.clone());
    reversed.0.reverse();
    reversed.1.reverse();
    assert_eq!(run(&mut IdAllocator::default(), &reversed), d);
}

#[test]
fn ids_stay_put_while_other_services_come_and_go() {
    let mut ids = IdAllocator::default();
    run(&mut ids, &world(1..=5));
    let before: Vec<ServiceId> = (2..=5)
        .map(|i| sid(&ids, &format!("10.96.0.{i}:80")))
        .collect();

    // ns/s001 goes, ns/s006 and ns/s007 come.
    run(&mut ids, &world(2..=7));
    let after: Vec<ServiceId> = (2..=5)
        .map(|i| sid(&ids, &format!("10.96.0.{i}:80")))
        .collect();
    assert_eq!(before, after);
    // New keys do not take the ID just released (conntrack may still hold it).
    assert_eq!(sid(&ids, "10.96.0.6:80"), 6);
    assert_eq!(sid(&ids, "10.96.0.7:80"), 7);
    assert_eq!(
        ids.service_id(&FrontendAddr {
            addr: ip("10.96.0.1"),
            port: 80,
            proto: TCP
        }),
        None
    );
}

#[test]
fn a_restarted_agent_restores_every_id_from_the_maps() {
    let mut ids = IdAllocator::default();
    run(&mut ids, &world(1..=5));
    let kernel = run(&mut ids, &world(3..=9)).maps; // churned: IDs no longer in key order

    // Restart: only the maps survived.
    let mut restored = IdAllocator::restore(&kernel);
    let again = run(&mut restored, &world(3..=9));
    assert!(
        diff(&again.maps, &kernel).is_empty(),
        "a restart must not rewrite the maps"
    );
    assert_eq!(restored, ids);

    // Deriving from scratch instead would renumber live services.
    let fresh = run(&mut IdAllocator::default(), &world(3..=9));
    assert!(!diff(&fresh.maps, &kernel).is_empty());
}

#[test]
fn restored_allocator_continues_after_the_highest_id() {
    let mut ids = IdAllocator::default();
    run(&mut ids, &world(1..=5));
    let kernel = run(&mut ids, &world(4..=5)).maps;
    let mut restored = IdAllocator::restore(&kernel);
    run(&mut restored, &world(4..=6));
    assert_eq!(
        sid(&restored, "10.96.0.6:80"),
        6,
        "not 1, which old flows may still carry"
    );
}

#[test]
fn a_backend_shared_by_two_services_has_one_id() {
    let a = service("ns/a", &["10.96.0.1"], HTTP);
    let b = service("ns/b", &["10.96.0.2"], HTTP);
    let sa = slice("ns/a", HTTP_EP, vec![ep("10.0.0.1", "n")]);
    let sb = slice("ns/b", HTTP_EP, vec![ep("10.0.0.1", "n")]);
    let d = desired(&[a, b], &[sa, sb]);
    assert_eq!(d.maps.backends.len(), 1);
    let slots: Vec<_> = d
        .maps
        .services
        .iter()
        .filter(|(k, _)| k.slot == 1)
        .map(|(_, v)| v.backend_id)
        .collect();
    assert_eq!(slots, [1, 1]);
}

#[test]
fn exhausted_ids_are_an_error() {
    let mut ids = IdAllocator::with_limits(4, 100);
    let err = build(&world(1..=5).0, &[], &config(Algorithm::Random), &mut ids).unwrap_err();
    assert_eq!(err, LbError::ServiceIdsExhausted { max: 4 });
    assert!(err.to_string().contains("remove unused Services"));

    let mut ids = IdAllocator::with_limits(100, 3);
    let w = world(1..=2);
    let err = build(&w.0, &w.1, &config(Algorithm::Random), &mut ids).unwrap_err();
    assert_eq!(err, LbError::BackendIdsExhausted { max: 3 });
}

#[test]
fn ids_wrap_past_the_limit_onto_free_ones_only() {
    let mut ids = IdAllocator::with_limits(4, 100);
    run(&mut ids, &world(1..=4));
    run(&mut ids, &world(2..=4)); // 1 released
    run(&mut ids, &world(2..=5));
    assert_eq!(
        sid(&ids, "10.96.0.5:80"),
        1,
        "the only free ID, found by wrapping"
    );
    for i in 2..=4 {
        assert_eq!(sid(&ids, &format!("10.96.0.{i}:80")), i as u16);
    }
}

#[test]
fn corrupt_entries_are_not_restored() {
    let mut ids = IdAllocator::default();
    let mut kernel = run(&mut ids, &world(1..=2)).maps;
    // A backend entry with ID 0, and a second master claiming ID 1.
    let b = *kernel.backends.get(&1).unwrap();
    kernel
        .backends
        .insert(0, weft_lb::maps::BackendValue { port: 9999, ..b });
    let (k, v) = kernel
        .services
        .iter()
        .find(|(k, _)| k.slot == 0)
        .map(|(k, v)| (*k, *v))
        .unwrap();
    let mut dup = k;
    dup.addr = ip("10.96.0.200");
    kernel.services.insert(dup, v);
    let mut restored = IdAllocator::restore(&kernel);
    let d = run(&mut restored, &world(1..=2));
    assert!(!d.maps.backends.contains_key(&0));
    let sids: std::collections::BTreeSet<_> = d.maps.rev_nat.keys().collect();
    assert_eq!(sids.len(), 2);
}

#[test]
fn more_backends_than_a_count_holds_is_an_error() {
    let s = service("ns/big", &["10.96.0.1"], HTTP);
    let eps = (0..=u32::from(u16::MAX))
        .map(|i| {
            let [_, b, c, d] = i.to_be_bytes();
            ep(&format!("10.{b}.{c}.{d}"), "n")
        })
        .collect();
    let err = build(
        &[s],
        &[slice("ns/big", HTTP_EP, eps)],
        &config(Algorithm::Random),
        &mut IdAllocator::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            LbError::TooManyBackends {
                backends: 65536,
                ..
            }
        ),
        "{err}"
    );
}
