//! Route summaries: written in the block's own commit exactly when what
//! routing needs of the block changes, never for the ordinary allocation or
//! release in a node's own block (that write would fan out to every node).

use super::*;

/// The summaries in the store, by block.
fn summaries(raw: &dyn Store) -> BTreeMap<IpNet, RouteSummary> {
    let listing = raw.list(ROUTES_PREFIX).unwrap();
    listing
        .kvs
        .iter()
        .map(|kv| {
            let s = RouteSummary::decode(&kv.value).unwrap();
            assert_eq!(kv.key, route_key(&s.cidr), "summary under its key");
            (s.cidr, s)
        })
        .collect()
}

fn summary(raw: &dyn Store, cidr: &str) -> Option<RouteSummary> {
    summaries(raw).remove(&net(cidr))
}

fn routes(cidr: &str, affinity: Option<&str>, borrowed: &[(u32, &str)]) -> RouteSummary {
    RouteSummary {
        cidr: net(cidr),
        affinity: affinity.map(str::to_string),
        borrowed: borrowed.iter().map(|&(o, n)| (o, n.to_string())).collect(),
    }
}

/// Every block has a summary saying what the block says; no summary
/// outlives its block.
pub(super) fn assert_routes_match(raw: &dyn Store) {
    let blocks: BTreeMap<IpNet, RouteSummary> = raw
        .list(BLOCKS_PREFIX)
        .unwrap()
        .kvs
        .iter()
        .map(|kv| {
            let rec = BlockRecord::decode(kv).unwrap();
            (rec.cidr, rec.route_summary())
        })
        .collect();
    assert_eq!(summaries(raw), blocks);
}

/// (commits, ops, route summary ops) of `env` since `before`.
fn since(env: &Env, before: (u64, u64, u64)) -> (u64, u64, u64) {
    let now = env.store.write_counts();
    (now.0 - before.0, now.1 - before.1, now.2 - before.2)
}

#[test]
fn summaries_follow_claims_borrows_and_releases() {
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    let mut c = borrow_cfg();
    c.block_release_grace = Duration::from_secs(300);
    let a = node_env(&raw, &clock, c.clone(), "node-a");
    let b = node_env(&raw, &clock, c, "node-b");
    let (a_block, b_block) = ("10.1.0.0/29", "10.1.0.8/29");

    // A claim: one commit, the block and its summary.
    let w = a.store.write_counts();
    a.alloc("a0", &v4()).unwrap();
    assert_eq!(since(&a, w), (1, 2, 1), "claim: block + summary");
    assert_eq!(
        summary(&*raw, a_block),
        Some(routes(a_block, Some("node-a"), &[]))
    );
    // Allocations in one's own block leave the summary alone.
    let w = a.store.write_counts();
    for i in 1..7 {
        a.alloc(format!("a{i}"), &v4()).unwrap();
    }
    assert_eq!(since(&a, w), (6, 6, 0), "own-block allocations");
    let w = b.store.write_counts();
    b.alloc("b0", &v4()).unwrap();
    assert_eq!(since(&b, w), (1, 2, 1));
    assert_routes_match(&*raw);

    // node-a is full and at its limit: it borrows .9 in node-b's block.
    let w = a.store.write_counts();
    assert_eq!(a.alloc("a7", &v4()).unwrap(), vec![ip("10.1.0.9")]);
    assert_eq!(since(&a, w), (1, 2, 1), "borrow: block + summary");
    let lent = routes(b_block, Some("node-b"), &[(1, "node-a")]);
    assert_eq!(summary(&*raw, b_block), Some(lent.clone()));

    // node-b allocates and releases around it; node-a releases in its own
    // block: no summary writes. (node-b first learns of the borrow, or its
    // first commit would lose its condition and count twice.)
    b.ipam.refresh().unwrap();
    let (wa, wb) = (a.store.write_counts(), b.store.write_counts());
    b.alloc("b1", &v4()).unwrap();
    b.ipam.release(&h("b1")).unwrap();
    a.ipam.release(&h("a3")).unwrap();
    assert_eq!(since(&b, wb), (2, 2, 0), "own-block allocation and release");
    assert_eq!(since(&a, wa), (1, 1, 0), "own-block release");
    assert_eq!(summary(&*raw, b_block), Some(lent));
    assert_routes_match(&*raw);

    // The borrowed address released: its host route goes.
    a.ipam.refresh().unwrap(); // node-a learns of node-b's writes first
    let w = a.store.write_counts();
    assert_eq!(a.ipam.release(&h("a7")).unwrap(), vec![ip("10.1.0.9")]);
    assert_eq!(since(&a, w), (1, 2, 1), "borrowed release: block + summary");
    assert_eq!(
        summary(&*raw, b_block),
        Some(routes(b_block, Some("node-b"), &[]))
    );

    // node-b's block emptied and given back: the summary goes with it.
    b.ipam.release(&h("b0")).unwrap();
    clock.advance(Duration::from_secs(30 + 300));
    let w = b.store.write_counts();
    assert_eq!(b.ipam.release_empty_blocks().unwrap(), vec![net(b_block)]);
    assert_eq!(since(&b, w), (1, 2, 1), "block delete + summary delete");
    assert_eq!(summary(&*raw, b_block), None);
    assert_routes_match(&*raw);
}

#[test]
fn a_gone_nodes_blocks_lose_or_delete_their_summary() {
    let (raw, clock, a, _b) = a_full_beside_b(borrow_cfg());
    a.alloc("a7", &v4()).unwrap(); // borrowed in node-b's block
    let c = node_env(&raw, &clock, borrow_cfg(), "node-c");
    c.alloc("c0", &v4()).unwrap();
    // node-b goes: its block loses its affinity but keeps node-a's address.
    let grace = Duration::from_secs(60);
    let live_nodes = live(&["node-a", "node-c"]);
    a.ipam.collect_node("node-b", &live_nodes, grace).unwrap();
    clock.advance(grace);
    a.ipam.collect_node("node-b", &live_nodes, grace).unwrap();
    assert_eq!(
        summary(&*raw, "10.1.0.8/29"),
        Some(routes("10.1.0.8/29", None, &[(1, "node-a")]))
    );
    assert_routes_match(&*raw);

    // node-c goes with nothing borrowed: block and summary are deleted.
    let mut cfg = cfg(vec![pool("10.3.0.0/24", 28)]);
    cfg.quarantine = Duration::ZERO;
    let raw = new_store();
    let a = node_env(&raw, &clock, cfg.clone(), "node-a");
    let c = node_env(&raw, &clock, cfg, "node-c");
    a.alloc("a0", &v4()).unwrap();
    c.alloc("c0", &v4()).unwrap();
    assert!(summary(&*raw, "10.3.0.16/28").is_some());
    let live_nodes = live(&["node-a"]);
    a.ipam.collect_node("node-c", &live_nodes, grace).unwrap();
    clock.advance(grace);
    let w = a.store.write_counts();
    let got = a.ipam.collect_node("node-c", &live_nodes, grace).unwrap();
    assert_eq!(got.blocks, vec![net("10.3.0.16/28")]);
    assert_eq!(since(&a, w), (1, 2, 1), "block delete + summary delete");
    assert_eq!(summary(&*raw, "10.3.0.16/28"), None);
    assert_routes_match(&*raw);
}

#[test]
fn a_dual_stack_claim_writes_both_summaries_in_its_one_commit() {
    let env = Env::new(standard());
    let w = env.store.write_counts();
    env.alloc(0, &dual()).unwrap();
    assert_eq!(since(&env, w), (1, 4, 2));
    let w = env.store.write_counts();
    for i in 1..20 {
        env.alloc(i, &dual()).unwrap();
        env.ipam.release(&h(i)).unwrap();
    }
    assert_eq!(
        since(&env, w),
        (38, 76, 0),
        "two blocks per commit, no summary"
    );
    assert_routes_match(&*env.store.inner);
}

#[test]
fn a_summary_round_trips_and_is_small() {
    let r = routes(
        "10.1.0.8/29",
        Some("node-b"),
        &[(1, "node-a"), (5, "node-c")],
    );
    let bytes = r.encode();
    assert_eq!(
        std::str::from_utf8(&bytes).unwrap(),
        r#"{"cidr":"10.1.0.8/29","affinity":"node-b","borrowed":{"1":"node-a","5":"node-c"}}"#
    );
    assert_eq!(RouteSummary::decode(&bytes).unwrap(), r);
    // No borrowed address: the field is left out, and decodes back empty.
    let r = routes("fd00::/122", None, &[]);
    let bytes = r.encode();
    assert_eq!(
        std::str::from_utf8(&bytes).unwrap(),
        r#"{"cidr":"fd00::/122","affinity":null}"#
    );
    assert_eq!(RouteSummary::decode(&bytes).unwrap(), r);
    assert_eq!(
        route_key(&net("fd00::/122")),
        "/weft/cluster/v1/routes/fd00::-122"
    );
    assert!(RouteSummary::decode(b"[]").is_err());
}

#[test]
fn concurrent_borrowing_keeps_every_summary_in_step() {
    // Three nodes of one block each (of four /28s), four, two and one
    // threads: node-0 must borrow, batches race; whatever commits, the
    // summaries agree with the blocks.
    let raw = new_store();
    let clock = Arc::new(ManualClock::new(T0));
    let mut c = cfg(vec![pool("10.6.0.0/26", 28)]);
    c.strict_affinity = false;
    c.max_blocks_per_node = Some(1);
    c.quarantine = Duration::ZERO;
    let nodes: Vec<Arc<Ipam>> = (0..3)
        .map(|n| {
            let mut c = c.clone();
            c.node = format!("node-{n}");
            Arc::new(Ipam::new(raw.clone(), c, clock.clone()).unwrap())
        })
        .collect();
    // Each claims its block first: only claimed blocks are lent.
    for (n, ipam) in nodes.iter().enumerate() {
        ipam.allocate(&attrs(format!("pre-{n}")), &v4()).unwrap();
    }
    // 7 allocations per thread, 2 released: 3 + 20 + 10 + 5 held of 47.
    let workers: Vec<_> = [(0, 4), (1, 2), (2, 1)]
        .into_iter()
        .flat_map(|(n, threads)| (0..threads).map(move |t| (n, t)))
        .map(|(n, t)| {
            let ipam = nodes[n].clone();
            std::thread::spawn(move || {
                for i in 0..7 {
                    let a = attrs(format!("n{n}-{t}-{i}"));
                    ipam.allocate(&a, &v4()).unwrap();
                    if i % 4 == 0 {
                        ipam.release(&a.handle()).unwrap();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let borrowed: usize = summaries(&*raw).values().map(|s| s.borrowed.len()).sum();
    assert!(borrowed > 0, "nobody borrowed");
    assert_routes_match(&*raw);
}
