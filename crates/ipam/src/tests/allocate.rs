//! Dynamic allocation and release: idempotence, dual stack, quarantine,
//! next fit, exhaustion, rollback.

use super::*;

#[test]
fn allocate_is_idempotent() {
    let env = Env::new(standard());
    let first = env.ipam.allocate(&attrs(1), &v4()).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].addr, ip("10.244.0.1"), "the pool's .0 is skipped");
    assert_eq!(first[0].pool, net("10.244.0.0/16"));
    assert_eq!(first[0].block, net("10.244.0.0/26"));
    let (w, r) = (env.store.writes(), env.store.reads());
    let again = env.ipam.allocate(&attrs(1), &v4()).unwrap();
    assert_eq!(again, first);
    assert_eq!(
        (env.store.writes(), env.store.reads()),
        (w, r),
        "a repeat costs nothing"
    );
    // Asking for more later adds only the missing family.
    let both = env.ipam.allocate(&attrs(1), &dual()).unwrap();
    assert_eq!(both[0], first[0]);
    assert!(both[1].addr.is_ipv6());
    assert_eq!(env.ipam.find(&h(1)).len(), 2);
    // Asking for a static address other than the held one is refused.
    let err = env.alloc(1, &fixed("10.244.0.9")).unwrap_err();
    assert!(
        err.to_string().contains("already holds 10.244.0.1"),
        "{err}"
    );
    // ... the same one is fine.
    assert_eq!(
        env.alloc(1, &fixed("10.244.0.1")).unwrap(),
        vec![ip("10.244.0.1")]
    );
}

#[test]
fn allocate_dual_stack() {
    let env = Env::new(standard());
    let got = env.ipam.allocate(&attrs(1), &dual()).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].addr, ip("10.244.0.1"));
    assert_eq!(got[1].addr, ip("fd00:10:244::1"));
    assert_eq!(got[1].block, net("fd00:10:244::/122"));
    let got2 = env.alloc(2, &dual()).unwrap();
    assert_eq!(got2, vec![ip("10.244.0.2"), ip("fd00:10:244::2")]);
    let v6only = env.alloc(3, &v6()).unwrap();
    assert_eq!(v6only, vec![ip("fd00:10:244::3")]);
    let mut found = env.ipam.find(&h(1));
    found.sort();
    assert_eq!(found, vec![got[0].addr, got[1].addr]);
}

#[test]
fn bad_requests_are_refused() {
    let env = Env::new(standard());
    let err = env.alloc(1, &AllocRequest::default()).unwrap_err();
    assert!(matches!(err, IpamError::InvalidRequest { .. }));
    let two = AllocRequest {
        requested: vec![ip("10.244.0.5"), ip("10.244.0.6")],
        ..AllocRequest::default()
    };
    assert!(matches!(
        env.alloc(1, &two).unwrap_err(),
        IpamError::InvalidRequest { .. }
    ));
    let mut a = attrs(1);
    a.container_id.clear();
    assert!(matches!(
        env.ipam.allocate(&a, &v4()).unwrap_err(),
        IpamError::InvalidRequest { .. }
    ));

    let v4only = Env::new(cfg(vec![pool("10.0.0.0/24", 26)]));
    let err = v4only.alloc(1, &dual()).unwrap_err();
    assert!(
        matches!(err, IpamError::NoPool { family: Family::V6 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("add an IPv6 pool"), "{err}");
    assert!(
        v4only.ipam.find(&h(1)).is_empty(),
        "the IPv4 part was not kept"
    );
}

#[test]
fn release_by_handle() {
    let env = Env::new(standard());
    let a = env.alloc(1, &dual()).unwrap();
    let b = env.alloc(2, &dual()).unwrap();
    let w = env.store.writes();
    let mut released = env.ipam.release(&h(1)).unwrap();
    released.sort();
    assert_eq!(released, a);
    assert_eq!(env.store.writes() - w, 1, "one commit for both blocks");
    assert!(env.ipam.find(&h(1)).is_empty());
    assert_eq!(env.ipam.find(&h(2)), b);
    let all = env.ipam.allocations().unwrap();
    assert_eq!(all.len(), 2);
    assert!(all
        .iter()
        .all(|x| x.handle == h(2) && x.pod_name == "pod-2"));
    // Released addresses are quarantined.
    let usage = env.ipam.pools_usage().unwrap();
    assert!(
        usage.iter().all(|p| p.quarantined == 1 && p.allocated == 1),
        "{usage:?}"
    );
}

#[test]
fn release_of_an_unknown_handle_is_a_noop() {
    let env = Env::new(standard());
    env.alloc(1, &v4()).unwrap();
    let (w, r) = (env.store.writes(), env.store.reads());
    assert_eq!(env.ipam.release("nope/eth0").unwrap(), Vec::<IpAddr>::new());
    assert_eq!(env.ipam.release(&h(1)).unwrap().len(), 1);
    assert_eq!(
        env.ipam.release(&h(1)).unwrap(),
        Vec::<IpAddr>::new(),
        "twice is fine"
    );
    assert_eq!(env.store.writes() - w, 1);
    assert_eq!(env.store.reads(), r, "release reads nothing");
}

/// Interop (podman 4, `podman network reload`): DEL then, at once, ADD of
/// the same container asking for the addresses it had. The handle that put
/// an address in quarantine may take it back; anyone else is still refused,
/// and so is the handle once someone else held the address in between.
#[test]
fn the_releasing_handle_may_take_its_quarantined_address_back() {
    let env = Env::new(cfg(vec![pool("10.9.0.0/24", 26), pool("fd00:9::/64", 122)]));
    let had = env.alloc("a", &dual()).unwrap();
    env.advance_ms(1_000);
    env.ipam.release(&h("a")).unwrap();
    let back = AllocRequest {
        ipv4: true,
        ipv6: true,
        requested: had.clone(),
    };
    let err = env.alloc("b", &back).unwrap_err();
    assert!(err.to_string().contains("quarantine"), "{err}");
    assert_eq!(
        env.alloc("a", &back).unwrap(),
        had,
        "same handle, same addresses"
    );
    // no longer quarantined (it is allocated again): the books are consistent
    assert!(env
        .ipam
        .check(&live(&[&h("a")]))
        .unwrap()
        .problems
        .is_empty());

    // released again, then handed to b after the quarantine: a may not
    // reclaim it from a later quarantine b started
    env.ipam.release(&h("a")).unwrap();
    env.advance_ms(DEFAULT_QUARANTINE.as_millis() as u64);
    assert_eq!(
        env.alloc("b", &fixed("10.9.0.1")).unwrap(),
        vec![ip("10.9.0.1")]
    );
    env.ipam.release(&h("b")).unwrap();
    let err = env.alloc("a", &fixed("10.9.0.1")).unwrap_err();
    assert!(err.to_string().contains("quarantine"), "{err}");
}

#[test]
fn quarantine_is_honoured_exactly() {
    // A /30 pool with one /30 block: .0 and .3 are reserved, .1 and .2 usable.
    let env = Env::new(cfg(vec![pool("10.9.0.0/30", 30)]));
    assert_eq!(env.alloc("a", &v4()).unwrap(), vec![ip("10.9.0.1")]);
    assert_eq!(env.alloc("b", &v4()).unwrap(), vec![ip("10.9.0.2")]);
    env.advance_ms(5_000);
    let released_at = env.clock.now_ms();
    env.ipam.release(&h("a")).unwrap();

    let err = env.alloc("c", &v4()).unwrap_err();
    match &err {
        IpamError::Exhausted {
            family,
            pool,
            quarantined,
            next_free_in_ms,
            ..
        } => {
            assert_eq!(*family, Family::V4);
            assert_eq!(*pool, net("10.9.0.0/30"));
            assert_eq!(*quarantined, 1);
            assert_eq!(*next_free_in_ms, Some(30_000));
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("1 released addresses are in quarantine, the first frees in 30s"),
        "{msg}"
    );
    assert!(msg.contains("add a pool or retry in 30s"), "{msg}");
    assert!(err.is_temporary(), "retrying later helps");
    // A static request for it is refused too, naming the quarantine.
    let err = env.alloc("c", &fixed("10.9.0.1")).unwrap_err();
    assert!(
        err.to_string().contains("quarantine for another 30s"),
        "{err}"
    );

    env.clock.set(released_at + 30_000 - 1);
    assert!(matches!(
        env.alloc("c", &v4()),
        Err(IpamError::Exhausted { .. })
    ));
    env.clock.set(released_at + 30_000);
    assert_eq!(env.alloc("c", &v4()).unwrap(), vec![ip("10.9.0.1")]);
    // The expired entry was pruned by that very write.
    let kv = env
        .store
        .get(&block_key(&net("10.9.0.0/30")))
        .unwrap()
        .unwrap();
    let rec = BlockRecord::decode(&kv).unwrap();
    assert!(rec.quarantine.is_empty(), "{rec:?}");
}

#[test]
fn next_fit_delays_reuse_beyond_quarantine() {
    let mut c = cfg(vec![pool("10.0.0.0/24", 26)]);
    c.quarantine = Duration::ZERO;
    let env = Env::new(c);
    let a = env.alloc(1, &v4()).unwrap();
    env.ipam.release(&h(1)).unwrap();
    // With no quarantine at all, the next address is still a different one.
    let b = env.alloc(2, &v4()).unwrap();
    assert_ne!(a, b);
    assert_eq!(b, vec![ip("10.0.0.2")]);
}

#[test]
fn exhaustion_of_a_tiny_pool_is_explained() {
    // /29 in /30 blocks: 8 addresses, minus .0 and .7 of the pool.
    let env = Env::new(cfg(vec![pool("10.9.0.0/29", 30)]));
    let mut got = Vec::new();
    for i in 0..6 {
        got.extend(env.alloc(i, &v4()).unwrap());
    }
    got.sort();
    let want: Vec<IpAddr> = (1..=6).map(|i| ip(&format!("10.9.0.{i}"))).collect();
    assert_eq!(got, want);
    let err = env.alloc(6, &v4()).unwrap_err();
    assert!(!err.is_temporary(), "nothing will free by itself");
    match &err {
        IpamError::Exhausted {
            pool,
            quarantined,
            next_free_in_ms,
            node_blocks,
            max_blocks,
            ..
        } => {
            assert_eq!(*pool, net("10.9.0.0/29"));
            assert_eq!(*quarantined, 0);
            assert_eq!(*next_free_in_ms, None);
            assert_eq!(*node_blocks, 2);
            assert_eq!(*max_blocks, None);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "no free IPv4 address for this node in pool 10.9.0.0/29: the node's 2 IPv4 blocks are full and no unclaimed block is left; no address is in quarantine; add a pool"
    );
    let usage = env.ipam.pools_usage().unwrap();
    assert_eq!(
        usage,
        vec![PoolStats {
            cidr: net("10.9.0.0/29"),
            block_prefix: 30,
            blocks: 2,
            capacity: 6,
            allocated: 6,
            quarantined: 0,
        }]
    );
    let blocks = env.ipam.blocks().unwrap();
    assert_eq!(blocks.len(), 2);
    assert!(blocks.iter().all(|b| b.capacity == 3 && b.allocated == 3));
    assert!(blocks
        .iter()
        .all(|b| b.affinity.as_deref() == Some("node-a")));
}

#[test]
fn a_second_pool_is_used_when_the_first_is_full() {
    let env = Env::new(cfg(vec![pool("10.9.0.0/30", 30), pool("10.8.0.0/30", 30)]));
    let mut got = Vec::new();
    for i in 0..4 {
        got.extend(env.alloc(i, &v4()).unwrap());
    }
    assert_eq!(
        got,
        ["10.9.0.1", "10.9.0.2", "10.8.0.1", "10.8.0.2"].map(ip)
    );
    let err = env.alloc(9, &v4()).unwrap_err();
    assert!(
        err.to_string().contains("pool 10.9.0.0/30, 10.8.0.0/30"),
        "{err}"
    );
}

#[test]
fn max_blocks_per_node_is_respected() {
    let mut c = cfg(vec![pool("10.0.0.0/24", 30)]);
    c.max_blocks_per_node = Some(2);
    let env = Env::new(c);
    // Block .0/30 holds .1-.3 (the pool's .0 is reserved), block .4/30 holds 4.
    for i in 0..7 {
        env.alloc(i, &v4()).unwrap();
    }
    let err = env.alloc(7, &v4()).unwrap_err();
    assert!(
        matches!(
            err,
            IpamError::Exhausted {
                max_blocks: Some(2),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "no free IPv4 address for this node in pool 10.0.0.0/24: the node holds 2 IPv4 blocks, its limit (max_blocks_per_node 2), and they are full; no address is in quarantine; raise max_blocks_per_node or add a pool"
    );
    let err = env.alloc(7, &fixed("10.0.0.100")).unwrap_err();
    assert!(err.to_string().contains("max_blocks_per_node"), "{err}");
    assert_eq!(env.ipam.blocks().unwrap().len(), 2);
}

#[test]
fn v4_is_rolled_back_when_v6_is_exhausted() {
    // fd00::/126 is one block of 4 with ::0 reserved: 3 addresses.
    let env = Env::new(cfg(vec![pool("10.0.0.0/24", 26), pool("fd00::/126", 126)]));
    for i in 0..3 {
        env.alloc(i, &v6()).unwrap();
    }
    let w = env.store.writes();
    let err = env.alloc("x", &dual()).unwrap_err();
    assert!(
        matches!(
            err,
            IpamError::Exhausted {
                family: Family::V6,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        env.store.writes() - w,
        0,
        "nothing written: the v4 change never left the planned commit"
    );
    assert!(env.ipam.find(&h("x")).is_empty());
    let usage = env.ipam.pools_usage().unwrap();
    assert_eq!(usage[0].allocated, 0);
    assert_eq!(
        usage[0].quarantined, 0,
        "a rolled back address is not quarantined"
    );
    assert!(env.ipam.check(&live(&[])).unwrap().problems.is_empty());
}

#[test]
fn rollback_releases_without_quarantine() {
    // One /30 block: .1 and .2 usable.
    let env = Env::new(cfg(vec![pool("10.9.0.0/30", 30)]));
    env.alloc(1, &v4()).unwrap();
    env.alloc(2, &v4()).unwrap();
    let w = env.store.writes();
    assert_eq!(env.ipam.rollback(&h(2)).unwrap(), vec![ip("10.9.0.2")]);
    assert_eq!(env.store.writes() - w, 1);
    assert!(env.ipam.rollback(&h(2)).unwrap().is_empty());
    assert_eq!(env.ipam.pools_usage().unwrap()[0].quarantined, 0);
    // Free again at once.
    assert_eq!(env.alloc(3, &v4()).unwrap(), vec![ip("10.9.0.2")]);
}
