//! Several nodes on one store: group commit across threads, borrowing from
//! another node's block.

use super::*;

/// Writes per allocation of `threads` threads x `per` allocations on one
/// Ipam, after its first block is claimed.
fn writes_per_allocation(batching: bool, threads: usize, per: usize) -> f64 {
    let mut c = standard();
    c.batching = batching;
    let env = Env::new(c);
    let ipam = Arc::new(env.ipam);
    let w = env.store.writes();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let ipam = ipam.clone();
            std::thread::spawn(move || {
                (0..per)
                    .map(|i| ipam.allocate(&attrs(format!("{t}-{i}")), &v4()).unwrap()[0].addr)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all = HashSet::new();
    for t in workers {
        for a in t.join().unwrap() {
            assert!(all.insert(a), "{a} handed out twice");
        }
    }
    assert_eq!(all.len(), threads * per);
    assert_all_distinct(&ipam.allocations().unwrap(), threads * per);
    let handles: HashSet<String> = (0..threads)
        .flat_map(|t| (0..per).map(move |i| h(format!("{t}-{i}"))))
        .collect();
    let findings = ipam.check(&handles).unwrap();
    assert!(findings.is_clean(), "{findings:?}");
    (env.store.writes() - w) as f64 / (threads * per) as f64
}

#[test]
fn group_commit_batches_concurrent_allocations() {
    let off = writes_per_allocation(false, 16, 50);
    let on = writes_per_allocation(true, 16, 50);
    let single = writes_per_allocation(true, 1, 50);
    eprintln!(
        "16 threads x 50 allocations: {off:.3} writes per allocation with batching off, {on:.3} with batching on; 1 thread, batching on: {single:.3}"
    );
    assert_eq!(off, 1.0, "without batching every allocation is one commit");
    assert!(on <= 0.5, "batching on: {on} writes per allocation");
    assert_eq!(
        single, 1.0,
        "a lone caller is not delayed into a batch of one"
    );
}

#[test]
fn a_batch_with_a_lost_condition_is_replanned_whole() {
    // Two Ipams of one node on one store, each batching 8 threads: they keep
    // invalidating each other's batches; nothing is lost or doubled.
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    let c = cfg(vec![pool("10.0.0.0/20", 27)]);
    let ipams: Vec<Arc<Ipam>> = (0..2)
        .map(|_| Arc::new(Ipam::new(raw.clone(), c.clone(), clock.clone()).unwrap()))
        .collect();
    let workers: Vec<_> = (0..16)
        .map(|t| {
            let ipam = ipams[t % 2].clone();
            std::thread::spawn(move || {
                for i in 0..40 {
                    ipam.allocate(&attrs(format!("{t}-{i}")), &v4()).unwrap();
                }
            })
        })
        .collect();
    for t in workers {
        t.join().unwrap();
    }
    assert_all_distinct(&ipams[0].allocations().unwrap(), 16 * 40);
}

#[test]
fn borrowing_from_another_nodes_block() {
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    let a = node_env(&raw, &clock, borrow_cfg(), "node-a");
    let b = node_env(&raw, &clock, borrow_cfg(), "node-b");
    // node-a's block .0/29 holds .1-.7 (the pool's .0 is reserved).
    for i in 0..7 {
        a.alloc(format!("a{i}"), &v4()).unwrap();
    }
    assert_eq!(b.alloc("b0", &v4()).unwrap(), vec![ip("10.1.0.8")]);
    // node-a is full and at its limit: it borrows from node-b's block.
    let w = a.store.writes();
    let got = a.alloc("a7", &v4()).unwrap();
    assert_eq!(got, vec![ip("10.1.0.9")]);
    assert_eq!(a.store.writes() - w, 1, "a borrow is one commit");
    let raw_rec =
        BlockRecord::decode(&raw.get(&block_key(&net("10.1.0.8/29"))).unwrap().unwrap()).unwrap();
    assert_eq!(
        raw_rec.affinity.as_deref(),
        Some("node-b"),
        "the block stays node-b's"
    );
    assert_eq!(raw_rec.allocations[&1].node.as_deref(), Some("node-a"));
    // Idempotent, findable, no write.
    let w = a.store.writes();
    assert_eq!(a.alloc("a7", &v4()).unwrap(), got);
    assert_eq!(a.store.writes(), w);
    assert_eq!(a.ipam.find(&h("a7")), got);
    assert!(b.ipam.find(&h("a7")).is_empty(), "node-b does not hold it");
    // node-b's next address steps around the borrowed one.
    assert_eq!(b.alloc("b1", &v4()).unwrap(), vec![ip("10.1.0.10")]);
    // check: the borrowed address is node-a's, not node-b's.
    let a_live: HashSet<String> = (0..8).map(|i| h(format!("a{i}"))).collect();
    let b_live = live(&[&h("b0"), &h("b1")]);
    assert!(a.ipam.check(&a_live).unwrap().is_clean());
    assert!(b.ipam.check(&b_live).unwrap().is_clean());
    let leaks = b.ipam.check(&live(&[])).unwrap().leaked;
    assert_eq!(leaks.len(), 2, "node-b's leaks are its own two: {leaks:?}");
    // gc of node-b never frees node-a's borrowed address.
    clock.advance(Duration::from_secs(3600));
    let freed = b.ipam.gc(&b_live).unwrap();
    assert!(freed.is_empty(), "{freed:?}");
    // A restarted node-a (empty index, rebuilt from its first listing)
    // releases the borrowed address by handle.
    let a2 = node_env(&raw, &clock, borrow_cfg(), "node-a");
    assert_eq!(a2.ipam.find(&h("a7")), got);
    assert_eq!(a2.ipam.release(&h("a7")).unwrap(), got);
    assert!(a2.ipam.find(&h("a7")).is_empty());
    // The first node-a's cache still believes it holds it; a release there
    // finds nothing to free (the compare-and-swap brings the fresh record).
    assert!(a.ipam.release(&h("a7")).unwrap().is_empty());
    // Another Ipam of node-a borrowed since: release falls back to a scan.
    let a3 = node_env(&raw, &clock, borrow_cfg(), "node-a");
    let borrowed = a.alloc("a8", &v4()).unwrap();
    assert_eq!(borrowed.len(), 1);
    assert!(
        net("10.1.0.8/29").contains(&borrowed[0])
            || net("10.1.0.16/29").contains(&borrowed[0])
            || net("10.1.0.24/29").contains(&borrowed[0])
    );
    assert_eq!(a3.ipam.release(&h("a8")).unwrap(), borrowed);
}

#[test]
fn gc_frees_borrowed_leaks_of_this_node_only() {
    let (_raw, clock, a, b) = a_full_beside_b(borrow_cfg());
    let borrowed = a.alloc("a7", &v4()).unwrap();
    clock.advance(Duration::from_secs(120));
    let a_live: HashSet<String> = (0..7).map(|i| h(format!("a{i}"))).collect();
    let freed = a.ipam.gc(&a_live).unwrap();
    assert_eq!(freed.len(), 1);
    assert_eq!(freed[0].address, borrowed[0]);
    assert_eq!(freed[0].handle, h("a7"));
    assert_eq!(
        b.ipam.find(&h("b0")),
        vec![ip("10.1.0.8")],
        "node-b's own kept"
    );
}

#[test]
fn strict_affinity_never_borrows() {
    let mut c = borrow_cfg();
    c.strict_affinity = true;
    let (_raw, _clock, a, _b) = a_full_beside_b(c);
    let err = a.alloc("a7", &v4()).unwrap_err();
    assert!(
        matches!(
            err,
            IpamError::Exhausted {
                max_blocks: Some(1),
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn borrowing_when_the_pool_has_no_unclaimed_block() {
    // No block limit: the node borrows once every block is claimed.
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    let mut c = cfg(vec![pool("10.1.0.0/28", 29)]);
    c.strict_affinity = false;
    let a = node_env(&raw, &clock, c.clone(), "node-a");
    let b = node_env(&raw, &clock, c, "node-b");
    assert_eq!(b.alloc("b0", &v4()).unwrap(), vec![ip("10.1.0.1")]);
    for i in 0..7 {
        a.alloc(format!("a{i}"), &v4()).unwrap();
    }
    // .8/29 is node-a's (.15 is the pool's broadcast): 7 addresses; then
    // node-a borrows from node-b's .0/29.
    assert_eq!(a.alloc("a7", &v4()).unwrap(), vec![ip("10.1.0.2")]);
    // Everything full: Exhausted, nothing written.
    for i in 8..13 {
        a.alloc(format!("a{i}"), &v4()).unwrap();
    }
    let err = a.alloc("a13", &v4()).unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err:?}");
    assert_all_distinct(&a.ipam.allocations().unwrap(), 14);
}
