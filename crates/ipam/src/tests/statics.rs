//! Static addresses (CNI `ips`).

use super::*;

#[test]
fn static_addresses() {
    let env = Env::new(standard());
    // ok, and it claims its block in the same single write
    let (w, r) = (env.store.writes(), env.store.reads());
    let got = env.ipam.allocate(&attrs(1), &fixed("10.244.7.9")).unwrap();
    assert_eq!(got[0].addr, ip("10.244.7.9"));
    assert_eq!(got[0].block, net("10.244.7.0/26"));
    assert_eq!(env.store.writes() - w, 1);
    assert_eq!(env.store.reads() - r, 1, "one get of the block");
    // A dynamic v6 along with a static v4.
    let req = AllocRequest {
        ipv4: true,
        ipv6: true,
        requested: vec![ip("10.244.7.10")],
    };
    let got = env.alloc(2, &req).unwrap();
    assert_eq!(got[0], ip("10.244.7.10"));
    assert!(got[1].is_ipv6());
    // The static claim made .7.0/26 one of ours: dynamic allocation uses the
    // node's blocks before it claims another one (and .7.0 is an ordinary
    // address: only the pool's first and last are reserved).
    assert_eq!(env.alloc(3, &v4()).unwrap(), vec![ip("10.244.7.0")]);

    // taken
    let err = env.alloc(4, &fixed("10.244.7.9")).unwrap_err();
    assert!(matches!(err, IpamError::RequestRefused { .. }));
    assert!(
        err.to_string()
            .contains("pod default/pod-1 (handle c1/eth0)"),
        "{err}"
    );
    // quarantined
    env.ipam.release(&h(1)).unwrap();
    let err = env.alloc(4, &fixed("10.244.7.9")).unwrap_err();
    assert!(err.to_string().contains("quarantine"), "{err}");
    env.advance_ms(30_000);
    assert_eq!(
        env.alloc(4, &fixed("10.244.7.9")).unwrap(),
        vec![ip("10.244.7.9")]
    );
    // outside every pool
    let err = env.alloc(5, &fixed("192.168.1.1")).unwrap_err();
    assert!(matches!(err, IpamError::RequestRefused { .. }));
    assert!(
        err.to_string()
            .contains("not inside any pool (10.244.0.0/16, fd00:10:244::/56)"),
        "{err}"
    );
    // reserved addresses of the pool
    for a in ["10.244.0.0", "10.244.255.255", "fd00:10:244::"] {
        let err = env.alloc(5, &fixed(a)).unwrap_err();
        assert!(err.to_string().contains("never hands out"), "{a}: {err}");
    }
    // v6 static
    assert_eq!(
        env.alloc(6, &fixed("fd00:10:244:1::42")).unwrap(),
        vec![ip("fd00:10:244:1::42")]
    );
    assert!(env
        .ipam
        .check(&live(&[&h(2), &h(3), &h(4), &h(6)]))
        .unwrap()
        .is_clean());
}

#[test]
fn static_address_in_another_nodes_block_is_refused() {
    let raw = new_store();
    let a = Env::on(raw.clone(), standard());
    let mut cb = standard();
    cb.node = "node-b".into();
    let b = Env::on(raw, cb);
    assert_eq!(a.alloc(1, &v4()).unwrap(), vec![ip("10.244.0.1")]);
    // node-b claims the next block, not node-a's.
    assert_eq!(b.alloc("b1", &v4()).unwrap(), vec![ip("10.244.0.64")]);
    let err = b.alloc("b2", &fixed("10.244.0.5")).unwrap_err();
    assert!(err.to_string().contains("belongs to node node-a"), "{err}");
    let err = a.alloc(2, &fixed("10.244.0.70")).unwrap_err();
    assert!(err.to_string().contains("belongs to node node-b"), "{err}");
    // Each node's check only calls its own allocations leaked.
    let ca = a.ipam.check(&live(&[])).unwrap();
    assert_eq!(ca.leaked.len(), 1);
    assert_eq!(ca.leaked[0].address, ip("10.244.0.1"));
    assert!(ca.problems.is_empty(), "{:?}", ca.problems);
}
