//! Blocks given back after their grace, gone nodes collected, four nodes
//! sharing one store.

use super::*;

#[test]
fn empty_blocks_are_given_back_after_the_grace() {
    let mut c = cfg(vec![pool("10.2.0.0/24", 28)]);
    c.quarantine = Duration::from_secs(30);
    c.block_release_grace = Duration::from_secs(300);
    let env = Env::new(c);
    for i in 0..20 {
        env.alloc(i, &v4()).unwrap();
    }
    assert_eq!(env.ipam.blocks().unwrap().len(), 2);
    // Empty the second block (.16/28: handles 15..20).
    for i in 15..20 {
        env.ipam.release(&h(i)).unwrap();
    }
    assert!(
        env.ipam.release_empty_blocks().unwrap().is_empty(),
        "quarantine in force"
    );
    env.advance_ms(30_000 + 299_999);
    assert!(
        env.ipam.release_empty_blocks().unwrap().is_empty(),
        "inside the grace"
    );
    env.advance_ms(1);
    let w = env.store.writes();
    assert_eq!(
        env.ipam.release_empty_blocks().unwrap(),
        vec![net("10.2.0.16/28")]
    );
    assert_eq!(env.store.writes() - w, 1, "one delete");
    assert_eq!(
        env.ipam.blocks().unwrap().len(),
        1,
        "the block with allocations stays"
    );
    // Empty for a long time, but never with an allocation in it: the first
    // block keeps its 15 addresses.
    env.advance_ms(3_600_000);
    assert!(env.ipam.release_empty_blocks().unwrap().is_empty());
    assert_eq!(env.ipam.allocations().unwrap().len(), 15);
    // The given-back block can be claimed again (by anyone).
    assert!(net("10.2.0.16/28").contains(&env.alloc(99, &fixed("10.2.0.20")).unwrap()[0]));
}

#[test]
fn a_block_with_a_borrowed_address_is_not_given_back() {
    let (_raw, clock, a, b) = a_full_beside_b(borrow_cfg());
    a.alloc("a7", &v4()).unwrap(); // borrowed from node-b's block
    b.ipam.release(&h("b0")).unwrap();
    clock.advance(Duration::from_secs(3600));
    assert!(b.ipam.release_empty_blocks().unwrap().is_empty());
    // Once node-a gives the address back, the block empties and, after the
    // grace, goes.
    a.ipam.release(&h("a7")).unwrap();
    clock.advance(Duration::from_secs(30));
    assert!(
        b.ipam.release_empty_blocks().unwrap().is_empty(),
        "grace restarts"
    );
    clock.advance(Duration::from_secs(300));
    assert_eq!(
        b.ipam.release_empty_blocks().unwrap(),
        vec![net("10.1.0.8/29")]
    );
}

#[test]
fn a_gone_nodes_leaks_are_collected_after_the_grace() {
    let (raw, clock, a, b) = a_full_beside_b(borrow_cfg());
    b.alloc("b1", &v4()).unwrap();
    a.alloc("a7", &v4()).unwrap(); // node-a borrows in node-b's block
                                   // node-b borrows in node-c's block.
    let cnode = node_env(&raw, &clock, borrow_cfg(), "node-c");
    cnode.alloc("c0", &v4()).unwrap();
    for i in 2..7 {
        b.alloc(format!("b{i}"), &v4()).unwrap();
    }
    let b_borrowed = b.alloc("b7", &v4()).unwrap();
    assert!(
        net("10.1.0.16/29").contains(&b_borrowed[0]),
        "{b_borrowed:?}"
    );
    let grace = Duration::from_secs(600);
    let all_live: HashSet<String> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // A live node is never collected.
    assert_eq!(
        a.ipam.collect_node("node-b", &all_live, grace).unwrap(),
        NodeCollection::default()
    );
    assert_eq!(
        a.ipam.collect_node("node-a", &live(&[]), grace).unwrap(),
        NodeCollection::default(),
        "never itself"
    );
    let live_nodes: HashSet<String> = ["node-a", "node-c"].iter().map(|s| s.to_string()).collect();
    // First sight of node-b gone starts the grace.
    assert_eq!(
        a.ipam.collect_node("node-b", &live_nodes, grace).unwrap(),
        NodeCollection::default()
    );
    clock.advance(Duration::from_secs(599));
    assert_eq!(
        a.ipam.collect_node("node-b", &live_nodes, grace).unwrap(),
        NodeCollection::default()
    );
    clock.advance(Duration::from_secs(1));
    let got = a.ipam.collect_gone_nodes(&live_nodes, grace).unwrap();
    let mut freed: Vec<String> = got.freed.iter().map(|f| f.handle.clone()).collect();
    freed.sort();
    let mut want: Vec<String> = (0..8).map(|i| h(format!("b{i}"))).collect();
    want.sort();
    assert_eq!(freed, want, "node-b's own and its borrowed address");
    assert_eq!(got.blocks, vec![net("10.1.0.8/29")]);
    // node-a's borrowed address in node-b's former block is untouched, the
    // block is unclaimed now, node-c's own address kept.
    assert_eq!(a.ipam.find(&h("a7")), vec![ip("10.1.0.10")]);
    assert_eq!(cnode.ipam.find(&h("c0")).len(), 1);
    let rec =
        BlockRecord::decode(&raw.get(&block_key(&net("10.1.0.8/29"))).unwrap().unwrap()).unwrap();
    assert_eq!(rec.affinity, None);
    assert_eq!(rec.allocations.len(), 1);
    let a_live: HashSet<String> = (0..8).map(|i| h(format!("a{i}"))).collect();
    assert!(a.ipam.check(&a_live).unwrap().is_clean());
    assert!(cnode.ipam.check(&live(&[&h("c0")])).unwrap().is_clean());
    // Nothing more to do.
    let again = a.ipam.collect_gone_nodes(&live_nodes, grace).unwrap();
    assert_eq!(again, NodeCollection::default());
}

#[test]
fn an_empty_block_of_a_gone_node_is_deleted() {
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    let mut c = cfg(vec![pool("10.3.0.0/24", 28)]);
    c.quarantine = Duration::ZERO;
    let a = node_env(&raw, &clock, c.clone(), "node-a");
    let b = node_env(&raw, &clock, c, "node-b");
    a.alloc("a0", &v4()).unwrap();
    b.alloc("b0", &v4()).unwrap();
    let live_nodes = live(&["node-a"]);
    let grace = Duration::from_secs(60);
    a.ipam.collect_node("node-b", &live_nodes, grace).unwrap();
    clock.advance(grace);
    let got = a.ipam.collect_node("node-b", &live_nodes, grace).unwrap();
    assert_eq!(got.freed.len(), 1);
    assert_eq!(got.blocks, vec![net("10.3.0.16/28")]);
    assert!(raw.get(&block_key(&net("10.3.0.16/28"))).unwrap().is_none());
    assert_eq!(a.ipam.blocks().unwrap().len(), 1);
}

#[test]
fn four_nodes_with_eight_threads_each_share_one_store() {
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    // 8 blocks of 256. node-2 and node-3 claim three blocks each up front
    // (one static address in each); node-0 and node-1 may hold one block
    // and must borrow the rest of their 400 addresses from the others.
    let mut c = cfg(vec![pool("10.8.0.0/21", 24)]);
    c.strict_affinity = false;
    let nodes: Vec<Arc<Ipam>> = (0..4)
        .map(|n| {
            let mut c = c.clone();
            c.node = format!("node-{n}");
            if n < 2 {
                c.max_blocks_per_node = Some(1);
            }
            Arc::new(Ipam::new(raw.clone(), c, clock.clone()).unwrap())
        })
        .collect();
    for (n, blocks) in [(2, [2, 3, 4]), (3, [5, 6, 7])] {
        for b in blocks {
            nodes[n]
                .allocate(&attrs(format!("pre-{b}")), &fixed(&format!("10.8.{b}.10")))
                .unwrap();
        }
    }
    let seen = Arc::new(std::sync::Mutex::new(HashMap::<IpAddr, String>::new()));
    let workers: Vec<_> = (0..4)
        .flat_map(|n| (0..8).map(move |t| (n, t)))
        .map(|(n, t)| {
            let ipam = nodes[n].clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let name = format!("n{n}-{t}-{i}");
                    let got = ipam.allocate(&attrs(&name), &v4()).unwrap();
                    assert_eq!(got.len(), 1);
                    let prev = seen.lock().unwrap().insert(got[0].addr, h(&name));
                    assert!(
                        prev.is_none(),
                        "{} handed out twice ({prev:?})",
                        got[0].addr
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4 * 8 * 50);
    let snap = nodes[0].snapshot().unwrap();
    assert_all_distinct(&snap.allocations, 4 * 8 * 50 + 6);
    // No lost allocation: every address handed out is in the store, held by
    // the handle it was handed to.
    let stored: HashMap<IpAddr, String> = snap
        .allocations
        .iter()
        .map(|a| (a.address, a.handle.clone()))
        .collect();
    for (addr, handle) in seen.iter() {
        assert_eq!(stored.get(addr), Some(handle), "{addr} lost");
    }
    // Borrowing happened, and each node's check is clean.
    let affinity: HashMap<IpNet, String> = snap
        .blocks
        .iter()
        .map(|b| (b.cidr, b.affinity.clone().unwrap_or_default()))
        .collect();
    let borrowed = snap
        .allocations
        .iter()
        .filter(|a| {
            !a.handle
                .starts_with(&format!("c{}", affinity[&a.block].replace("node-", "n")))
                && !a.handle.starts_with("cpre")
        })
        .count();
    assert!(borrowed >= 2 * (400 - 256), "only {borrowed} borrowed");
    for (n, ipam) in nodes.iter().enumerate() {
        let mut handles: HashSet<String> = (0..8)
            .flat_map(|t| (0..50).map(move |i| h(format!("n{n}-{t}-{i}"))))
            .collect();
        if n == 2 {
            handles.extend([2, 3, 4].map(|b| h(format!("pre-{b}"))));
        }
        if n == 3 {
            handles.extend([5, 6, 7].map(|b| h(format!("pre-{b}"))));
        }
        let findings = ipam.check(&handles).unwrap();
        assert!(findings.is_clean(), "node-{n}: {findings:?}");
        for hd in handles.iter().take(20) {
            assert_eq!(ipam.find(hd).len(), 1, "node-{n} finds {hd}");
        }
    }
    routes::assert_routes_match(&*raw);
    eprintln!("four nodes x 8 threads x 50: {borrowed} borrowed addresses");
}
