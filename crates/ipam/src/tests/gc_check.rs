//! GC of leaked allocations, the consistency check, corrupt records.

use super::*;

#[test]
fn gc_respects_grace_and_never_frees_live_handles() {
    let env = Env::new(standard());
    env.alloc(1, &dual()).unwrap();
    env.alloc(2, &v4()).unwrap();
    env.alloc(3, &v4()).unwrap();
    let keep = live(&[&h(1)]);
    env.advance_ms(59_999);
    assert!(env.ipam.gc(&keep).unwrap().is_empty(), "inside the grace");
    env.advance_ms(1);
    env.alloc(4, &v4()).unwrap(); // an ADD in flight: allocated, endpoint not recorded yet
    let mut freed: Vec<String> = env
        .ipam
        .gc(&keep)
        .unwrap()
        .into_iter()
        .map(|a| a.handle)
        .collect();
    freed.sort();
    assert_eq!(freed, vec![h(2), h(3)]);
    assert_eq!(env.ipam.find(&h(1)).len(), 2, "live handle kept");
    assert_eq!(env.ipam.find(&h(4)).len(), 1, "young allocation kept");
    let usage = env.ipam.pools_usage().unwrap();
    assert_eq!(usage[0].quarantined, 2, "gc'd addresses are quarantined");
    assert!(env.ipam.gc(&keep).unwrap().is_empty());
    // Everything live: nothing is ever freed, however old.
    env.advance_ms(3_600_000);
    assert!(env.ipam.gc(&live(&[&h(1), &h(4)])).unwrap().is_empty());
}

#[test]
fn check_finds_leaks_and_problems() {
    let env = Env::new(standard());
    env.alloc(1, &v4()).unwrap();
    env.alloc(2, &dual()).unwrap();
    let findings = env.ipam.check(&live(&[&h(1)])).unwrap();
    assert!(findings.problems.is_empty(), "{:?}", findings.problems);
    let mut leaked: Vec<IpAddr> = findings.leaked.iter().map(|a| a.address).collect();
    leaked.sort();
    assert_eq!(leaked, vec![ip("10.244.0.2"), ip("fd00:10:244::1")]);
    assert!(findings
        .leaked
        .iter()
        .all(|a| a.pod_name == "pod-2" && a.allocated_at == T0 / 1000));
    assert!(env.ipam.check(&live(&[&h(1), &h(2)])).unwrap().is_clean());

    // Hand-made damage.
    let alloc = |handle: &str| Allocation {
        handle: handle.into(),
        container_id: "x".into(),
        ifname: "eth0".into(),
        pod_namespace: String::new(),
        pod_name: String::new(),
        allocated_at_ms: T0,
        node: None,
    };
    let mut rec = BlockRecord::new(
        net("10.244.1.0/26"),
        net("10.244.0.0/16"),
        Some("node-a".into()),
    );
    rec.allocations.insert(1, alloc("twice"));
    rec.allocations.insert(2, alloc("twice"));
    rec.allocations.insert(3, alloc("q"));
    rec.quarantine.insert(3, T0 + 1);
    rec.allocations.insert(64, alloc("outside"));
    let key = block_key(&rec.cidr);
    env.store
        .create(&key, &serde_json::to_vec(&rec).unwrap(), None)
        .unwrap()
        .unwrap();
    let stray = BlockRecord::new(
        net("172.16.0.0/26"),
        net("172.16.0.0/16"),
        Some("node-a".into()),
    );
    env.store
        .create(
            &block_key(&stray.cidr),
            &serde_json::to_vec(&stray).unwrap(),
            None,
        )
        .unwrap()
        .unwrap();
    let findings = env
        .ipam
        .check(&live(&[&h(1), &h(2), "twice", "q", "outside"]))
        .unwrap();
    let all = findings.problems.join("\n");
    for needle in [
        "handle twice holds 2 IPv4 addresses: 10.244.1.1, 10.244.1.2",
        "10.244.1.3 is both allocated (handle q) and quarantined",
        "ordinal 64 lies outside the block",
        "block 172.16.0.0/26 is not inside any configured pool",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in\n{all}");
    }
    assert_eq!(findings.problems.len(), 4, "{all}");
}

#[test]
fn corrupt_block_json_gives_corrupt_not_panic() {
    let raw = new_store();
    // Garbage where the pool's first block would go.
    raw.create(&block_key(&net("10.244.0.0/26")), b"\x00garbage", None)
        .unwrap()
        .unwrap();
    let env = Env::on(raw.clone(), standard());
    // Dynamic allocation steps around it and never overwrites it.
    assert_eq!(env.alloc(1, &v4()).unwrap(), vec![ip("10.244.0.64")]);
    assert_eq!(
        raw.get(&block_key(&net("10.244.0.0/26")))
            .unwrap()
            .unwrap()
            .value,
        b"\x00garbage"
    );
    // A static address inside it: Corrupt.
    let err = env.alloc(2, &fixed("10.244.0.5")).unwrap_err();
    match &err {
        IpamError::Corrupt { key, .. } => assert_eq!(key, "/weft/ipam/v1/blocks/10.244.0.0-26"),
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().contains("repair or delete the key"),
        "{err}"
    );
    // Views refuse to paper over it; check reports it.
    assert!(matches!(env.ipam.blocks(), Err(IpamError::Corrupt { .. })));
    assert!(matches!(
        env.ipam.pools_usage(),
        Err(IpamError::Corrupt { .. })
    ));
    let findings = env.ipam.check(&live(&[&h(1)])).unwrap();
    assert_eq!(findings.problems.len(), 1);
    assert!(
        findings.problems[0].contains("undecodable"),
        "{:?}",
        findings.problems
    );
    // Well-formed JSON that does not add up is Corrupt too.
    let mut rec = BlockRecord::new(net("10.244.5.0/26"), net("10.244.0.0/16"), None);
    let key = block_key(&net("10.244.6.0/26"));
    raw.create(&key, &serde_json::to_vec(&rec).unwrap(), None)
        .unwrap()
        .unwrap();
    let err = env.alloc(3, &fixed("10.244.6.1")).unwrap_err();
    assert!(matches!(err, IpamError::Corrupt { .. }), "{err:?}");
    rec.cidr = net("10.244.7.0/20");
    let kv = KeyValue {
        key: block_key(&rec.cidr),
        value: serde_json::to_vec(&rec).unwrap(),
        create_revision: 1,
        mod_revision: 1,
        lease: None,
    };
    assert!(matches!(
        BlockRecord::decode(&kv),
        Err(IpamError::Corrupt { .. })
    ));
}

#[test]
fn orphan_blocks_are_claimed_and_other_block_sizes_respected() {
    let raw = new_store();
    // A block nobody owns (affinity null), and a /27 key left by an older
    // config that overlaps the /26 at .128.
    let mut orphan = BlockRecord::new(net("10.0.0.0/26"), net("10.0.0.0/24"), None);
    orphan.allocations.insert(
        5,
        Allocation {
            handle: "old/eth0".into(),
            container_id: "old".into(),
            ifname: "eth0".into(),
            pod_namespace: String::new(),
            pod_name: String::new(),
            allocated_at_ms: T0,
            node: None,
        },
    );
    raw.create(
        &block_key(&orphan.cidr),
        &serde_json::to_vec(&orphan).unwrap(),
        None,
    )
    .unwrap()
    .unwrap();
    raw.create(&block_key(&net("10.0.0.160/27")), b"{}", None)
        .unwrap()
        .unwrap();
    let mut c = cfg(vec![pool("10.0.0.0/24", 26)]);
    c.quarantine = Duration::ZERO;
    let env = Env::on(raw, c);
    let mut got = Vec::new();
    // .0/26: 62 (the pool's .0 and the orphan's .5 are out), .64/26: 64,
    // .128/26: covered by the /27 key, .192/26: 63 (the pool's .255 is out).
    for i in 0..(62 + 64 + 63) {
        got.extend(env.alloc(i, &v4()).unwrap());
    }
    assert_eq!(got[0], ip("10.0.0.1"), "the orphan block was claimed");
    assert!(!got.contains(&ip("10.0.0.5")), "its allocation was kept");
    assert!(got.iter().all(|a| !net("10.0.0.128/26").contains(a)));
    let err = env.alloc("last", &v4()).unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err:?}");
}

/// Spotted while writing the `ipam_records` fuzz target (whose harness
/// crashed on it; the input is in its corpus): a block record from the
/// store with an allocation at an ordinal outside the block, at the top of
/// the IPv6 space, made computing its address overflow (a panic with
/// overflow checks). Such a record still decodes, so that `check` can say
/// what is wrong with it; nothing panics on it.
#[test]
fn an_ordinal_outside_a_block_at_the_top_of_the_space_never_panics() {
    let pool_cidr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120";
    let env = Env::new(cfg(vec![pool(pool_cidr, 122)]));
    let top = net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffc0/122");
    let mut rec = BlockRecord::new(top, net(pool_cidr), Some("node-a".into()));
    let alloc = |c: &str| Allocation {
        handle: format!("{c}/eth0"),
        container_id: c.into(),
        ifname: "eth0".into(),
        pod_namespace: String::new(),
        pod_name: String::new(),
        allocated_at_ms: T0,
        node: None,
    };
    rec.allocations.insert(63, alloc("last"));
    rec.allocations.insert(u32::MAX, alloc("far"));
    rec.quarantine.insert(u32::MAX - 1, T0 + 1);
    assert_eq!(rec.addr(63), ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
    let _ = rec.addr(u32::MAX);
    env.store
        .create(&block_key(&top), &serde_json::to_vec(&rec).unwrap(), None)
        .unwrap()
        .unwrap();
    env.ipam.refresh().unwrap();
    assert_eq!(env.ipam.allocations().unwrap().len(), 2);
    let _ = env.ipam.find("far/eth0");
    let findings = env.ipam.check(&live(&["last/eth0", "far/eth0"])).unwrap();
    let all = findings.problems.join("\n");
    assert!(
        all.contains(&format!("at ordinal {} lies outside the block", u32::MAX)),
        "{all}"
    );
}
