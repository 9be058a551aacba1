//! Many threads and many `Ipam`s of one node at once: never one address
//! twice.

use super::*;

#[test]
fn concurrent_allocations_on_one_ipam() {
    // Batching off: the write count below is one commit per allocation (with
    // batching on, see `group_commit_batches_concurrent_allocations`).
    let mut c = standard();
    c.batching = false;
    let env = Env::new(c);
    let ipam = Arc::new(env.ipam);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let ipam = ipam.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for i in 0..50 {
                    let a = ipam.allocate(&attrs(format!("{t}-{i}")), &v4()).unwrap();
                    got.push(a[0].addr);
                }
                got
            })
        })
        .collect();
    let mut all = HashSet::new();
    for t in threads {
        for a in t.join().unwrap() {
            assert!(all.insert(a), "{a} handed out twice");
        }
    }
    assert_eq!(all.len(), 800);
    assert_all_distinct(&ipam.allocations().unwrap(), 800);
    assert_eq!(
        env.store.writes(),
        2 + 800,
        "two pools, then one write per allocation"
    );
    let handles: HashSet<String> = (0..16)
        .flat_map(|t| (0..50).map(move |i| h(format!("{t}-{i}"))))
        .collect();
    let findings = ipam.check(&handles).unwrap();
    assert!(findings.is_clean(), "{findings:?}");
}

#[test]
fn concurrent_allocations_on_four_ipams_of_one_node() {
    let raw = new_store();
    let store = Counting::new(raw.clone());
    let clock = Arc::new(ManualClock::new(T0));
    // Small blocks, so instances keep claiming and meeting each other's blocks.
    let c = cfg(vec![pool("10.0.0.0/16", 28), pool("fd00::/64", 124)]);
    let ipams: Vec<Arc<Ipam>> = (0..4)
        .map(|_| Arc::new(Ipam::new(store.clone(), c.clone(), clock.clone()).unwrap()))
        .collect();
    let threads: Vec<_> = ipams
        .iter()
        .enumerate()
        .map(|(t, ipam)| {
            let ipam = ipam.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    let got = ipam.allocate(&attrs(format!("{t}-{i}")), &dual()).unwrap();
                    assert_eq!(got.len(), 2);
                    if i % 10 == 9 {
                        assert_eq!(ipam.release(&h(format!("{t}-{}", i - 5))).unwrap().len(), 2);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let allocs = ipams[0].allocations().unwrap();
    let v4: Vec<AllocationInfo> = allocs
        .iter()
        .filter(|a| a.address.is_ipv4())
        .cloned()
        .collect();
    let v6: Vec<AllocationInfo> = allocs
        .iter()
        .filter(|a| a.address.is_ipv6())
        .cloned()
        .collect();
    assert_all_distinct(&v4, 4 * 90);
    assert_all_distinct(&v6, 4 * 90);
    let handles: HashSet<String> = (0..4)
        .flat_map(|t| {
            (0..100)
                .filter(|i| i % 10 != 4)
                .map(move |i| h(format!("{t}-{i}")))
        })
        .collect();
    let fresh = Ipam::new(raw, c, clock).unwrap();
    let findings = fresh.check(&handles).unwrap();
    assert!(findings.is_clean(), "{findings:?}");
    eprintln!(
        "four instances: {} writes, {} lost compare-and-swaps",
        store.writes(),
        store.conflicts.load(Ordering::SeqCst)
    );
}

#[test]
fn two_nodes_racing_get_distinct_blocks() {
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    let c = cfg(vec![pool("10.0.0.0/20", 28)]);
    let threads: Vec<_> = ["node-a", "node-b", "node-c"]
        .into_iter()
        .map(|node| {
            let mut c = c.clone();
            c.node = node.into();
            let ipam = Ipam::new(raw.clone(), c, clock.clone()).unwrap();
            std::thread::spawn(move || {
                for i in 0..60 {
                    ipam.allocate(&attrs(format!("{node}-{i}")), &v4()).unwrap();
                }
                ipam
            })
        })
        .collect();
    let ipams: Vec<Ipam> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_all_distinct(&ipams[0].allocations().unwrap(), 180);
    let blocks = ipams[0].blocks().unwrap();
    for b in &blocks {
        let node = b.affinity.clone().unwrap();
        let allocs = ipams[0].allocations().unwrap();
        assert!(
            allocs
                .iter()
                .filter(|a| a.block == b.cidr)
                .all(|a| a.handle.starts_with(&format!("c{node}"))),
            "block {} of {node} holds another node's address",
            b.cidr
        );
    }
}
