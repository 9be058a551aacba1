//! Random operations against a model: never an address handed out twice.

use super::*;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Model {
    held: BTreeMap<String, Vec<IpAddr>>,
    quarantine: HashMap<IpAddr, u64>,
}

impl Model {
    fn holder(&self, a: IpAddr) -> Option<&String> {
        self.held
            .iter()
            .find(|(_, v)| v.contains(&a))
            .map(|(k, _)| k)
    }

    fn quarantined(&self, a: IpAddr, now: u64) -> bool {
        self.quarantine.get(&a).is_some_and(|&u| u > now)
    }

    fn free(&self, usable: &[IpAddr], now: u64) -> usize {
        usable
            .iter()
            .filter(|&&a| self.holder(a).is_none() && !self.quarantined(a, now))
            .count()
    }
}

#[test]
fn random_operations_never_hand_out_an_address_twice() {
    let v4_pool = pool("10.1.0.0/27", 29);
    let v6_pool = pool("fd00::/123", 126);
    let mut c = cfg(vec![v4_pool.clone(), v6_pool.clone()]);
    c.quarantine = Duration::from_secs(30);
    let env = Env::new(c);
    let usable = |p: &PoolConfig| -> Vec<IpAddr> {
        let fam = p.family();
        let base = to_u128(p.cidr.network());
        (0..1u128 << (p.cidr.max_prefix_len() - p.cidr.prefix_len()))
            .map(|i| record::from_u128(fam, base + i))
            .filter(|&a| !reserved(&p.cidr, a))
            .collect()
    };
    let usable4 = usable(&v4_pool);
    let usable6 = usable(&v6_pool);
    assert_eq!((usable4.len(), usable6.len()), (30, 31));

    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut model = Model::default();
    let mut next_id = 0u64;
    let mut stats = BTreeMap::<&str, u64>::new();
    for step in 0..10_000 {
        let now = env.clock.now_ms();
        let roll = rng.below(100);
        let w0 = env.store.writes();
        match roll {
            0..=39 => {
                let req = match rng.below(3) {
                    0 => v4(),
                    1 => v6(),
                    _ => dual(),
                };
                next_id += 1;
                let name = format!("p{next_id}");
                let free4 = model.free(&usable4, now);
                let free6 = model.free(&usable6, now);
                let res = env.alloc(&name, &req);
                if req.ipv4 && free4 == 0 {
                    assert!(
                        matches!(
                            res,
                            Err(IpamError::Exhausted {
                                family: Family::V4,
                                ..
                            })
                        ),
                        "{step}: {res:?}"
                    );
                    *stats.entry("exhausted v4").or_default() += 1;
                } else if req.ipv6 && free6 == 0 {
                    assert!(
                        matches!(
                            res,
                            Err(IpamError::Exhausted {
                                family: Family::V6,
                                ..
                            })
                        ),
                        "{step}: {res:?}"
                    );
                    if req.ipv4 {
                        assert_eq!(env.store.writes(), w0, "nothing of it written");
                        *stats.entry("rolled back").or_default() += 1;
                    } else {
                        *stats.entry("exhausted v6").or_default() += 1;
                    }
                } else {
                    let got = res.unwrap_or_else(|e| panic!("{step}: {e}"));
                    assert_eq!(got.len(), usize::from(req.ipv4) + usize::from(req.ipv6));
                    assert_eq!(env.store.writes() - w0, 1, "one commit per allocation");
                    for &a in &got {
                        assert!(model.holder(a).is_none(), "{step}: {a} handed out twice");
                        assert!(
                            !model.quarantined(a, now),
                            "{step}: {a} handed out in quarantine"
                        );
                    }
                    model.held.insert(h(&name), got);
                    *stats.entry("allocated").or_default() += 1;
                }
            }
            40..=64 => {
                if model.held.is_empty() {
                    continue;
                }
                let i = rng.below(model.held.len() as u64) as usize;
                let handle = model.held.keys().nth(i).unwrap().clone();
                let mut want = model.held.remove(&handle).unwrap();
                want.sort();
                let got = env.ipam.release(&handle).unwrap();
                assert_eq!(got, want, "{step}");
                assert_eq!(env.store.writes() - w0, 1, "one commit per release");
                for a in want {
                    model.quarantine.insert(a, now + 30_000);
                }
                *stats.entry("released").or_default() += 1;
            }
            65..=69 => {
                assert!(env
                    .ipam
                    .release(&format!("ghost{step}/eth0"))
                    .unwrap()
                    .is_empty());
                assert_eq!(env.store.writes(), w0);
            }
            70..=77 => {
                if model.held.is_empty() {
                    continue;
                }
                let i = rng.below(model.held.len() as u64) as usize;
                let (handle, addrs) = model.held.iter().nth(i).unwrap();
                let name = handle.trim_start_matches('c').trim_end_matches("/eth0");
                let req = AllocRequest {
                    ipv4: addrs.iter().any(|a| a.is_ipv4()),
                    ipv6: addrs.iter().any(|a| a.is_ipv6()),
                    requested: vec![],
                };
                assert_eq!(
                    &env.alloc(name, &req).unwrap(),
                    addrs,
                    "{step}: not idempotent"
                );
                assert_eq!(env.store.writes(), w0);
            }
            78..=89 => env.advance_ms(rng.below(15_000)),
            90..=94 => {
                let list = if rng.below(2) == 0 {
                    &usable4
                } else {
                    &usable6
                };
                let a = list[rng.below(list.len() as u64) as usize];
                next_id += 1;
                let name = format!("s{next_id}");
                let res = env.alloc(
                    &name,
                    &AllocRequest {
                        requested: vec![a],
                        ..AllocRequest::default()
                    },
                );
                if let Some(holder) = model.holder(a) {
                    let err = res.unwrap_err();
                    assert!(err.to_string().contains(holder.as_str()), "{step}: {err}");
                    *stats.entry("static taken").or_default() += 1;
                } else if model.quarantined(a, now) {
                    let err = res.unwrap_err();
                    assert!(err.to_string().contains("quarantine"), "{step}: {err}");
                    *stats.entry("static quarantined").or_default() += 1;
                } else {
                    assert_eq!(res.unwrap(), vec![a], "{step}");
                    model.held.insert(h(&name), vec![a]);
                    *stats.entry("static ok").or_default() += 1;
                }
            }
            _ => {
                let handles: HashSet<String> = model.held.keys().cloned().collect();
                assert!(
                    env.ipam.gc(&handles).unwrap().is_empty(),
                    "{step}: gc freed a live handle"
                );
                assert_eq!(env.store.writes(), w0);
            }
        }

        // Invariants against the model after every operation.
        let now = env.clock.now_ms();
        let snap = env.ipam.snapshot().unwrap();
        let mut seen = HashMap::new();
        for a in &snap.allocations {
            assert!(
                seen.insert(a.address, a.handle.clone()).is_none(),
                "{step}: {} twice",
                a.address
            );
        }
        let mut want = HashMap::new();
        for (handle, addrs) in &model.held {
            for a in addrs {
                want.insert(*a, handle.clone());
            }
        }
        assert_eq!(seen, want, "{step}: store and model disagree");
        let q_model = |fam: fn(&IpAddr) -> bool| {
            model
                .quarantine
                .iter()
                .filter(|(a, &u)| fam(a) && u > now)
                .count() as u64
        };
        assert_eq!(
            snap.pools[0].allocated,
            want.keys().filter(|a| a.is_ipv4()).count() as u64
        );
        assert_eq!(
            snap.pools[0].quarantined,
            q_model(IpAddr::is_ipv4),
            "{step}"
        );
        assert_eq!(
            snap.pools[1].quarantined,
            q_model(IpAddr::is_ipv6),
            "{step}"
        );
        for (handle, addrs) in &model.held {
            let mut found = env.ipam.find(handle);
            found.sort();
            let mut addrs = addrs.clone();
            addrs.sort();
            assert_eq!(found, addrs, "{step}");
        }
        if step % 500 == 0 {
            let handles: HashSet<String> = model.held.keys().cloned().collect();
            let findings = env.ipam.check(&handles).unwrap();
            assert!(findings.is_clean(), "{step}: {findings:?}");
            routes::assert_routes_match(&*env.store.inner);
        }
    }
    eprintln!("{stats:?}");
    for what in [
        "allocated",
        "released",
        "exhausted v4",
        "exhausted v6",
        "rolled back",
        "static ok",
        "static taken",
        "static quarantined",
    ] {
        assert!(
            stats.get(what).copied().unwrap_or(0) > 0,
            "the run never hit {what}: {stats:?}"
        );
    }
}
