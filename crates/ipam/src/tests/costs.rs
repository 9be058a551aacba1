//! What each operation costs in store writes, and how it behaves when the
//! store loses a condition or is away.

use super::*;

#[test]
fn store_writes_per_operation() {
    let env = Env::new(standard());
    let (w, r) = (env.store.writes(), env.store.reads());
    env.alloc(0, &v4()).unwrap();
    assert_eq!(
        env.store.writes() - w,
        1,
        "claiming a block is one create with the allocation in it"
    );
    assert_eq!(
        env.store.reads() - r,
        1,
        "plus one list to find a free block"
    );
    for i in 1..63 {
        let (w, r) = (env.store.writes(), env.store.reads());
        env.alloc(i, &v4()).unwrap();
        assert_eq!(
            env.store.writes() - w,
            1,
            "steady state: one write per allocation"
        );
        assert_eq!(env.store.reads() - r, 0, "and no read");
    }
    // The first block (63 usable addresses) is full: the next claims another.
    let (w, r) = (env.store.writes(), env.store.reads());
    assert_eq!(env.alloc(63, &v4()).unwrap(), vec![ip("10.244.0.64")]);
    assert_eq!((env.store.writes() - w, env.store.reads() - r), (1, 1));
    for i in 0..10 {
        let w = env.store.writes();
        env.ipam.release(&h(i)).unwrap();
        assert_eq!(env.store.writes() - w, 1, "one write per release");
    }
    // Dual stack: the first one claims a v6 block and uses the v4 block in
    // the same commit; from then on, one commit for both families.
    let (w, r) = (env.store.writes(), env.store.reads());
    env.alloc(100, &dual()).unwrap();
    assert_eq!((env.store.writes() - w, env.store.reads() - r), (1, 1));
    for i in 101..110 {
        let (w, r) = (env.store.writes(), env.store.reads());
        env.alloc(i, &dual()).unwrap();
        assert_eq!(
            (env.store.writes() - w, env.store.reads() - r),
            (1, 0),
            "dual stack: one write for both families, and no read"
        );
    }
    for i in 100..110 {
        let w = env.store.writes();
        assert_eq!(env.ipam.release(&h(i)).unwrap().len(), 2);
        assert_eq!(env.store.writes() - w, 1, "dual stack release: one write");
    }
    // A first dual-stack allocation claims a block of each family: one list,
    // one commit.
    let fresh = Env::new(standard());
    let (w, r) = (fresh.store.writes(), fresh.store.reads());
    assert_eq!(
        fresh.alloc(1, &dual()).unwrap(),
        vec![ip("10.244.0.1"), ip("fd00:10:244::1")]
    );
    assert_eq!((fresh.store.writes() - w, fresh.store.reads() - r), (1, 1));
    assert_eq!(fresh.ipam.blocks().unwrap().len(), 2);
}

#[test]
fn a_lost_condition_retries_the_whole_dual_stack_commit() {
    let raw = new_store();
    let a = Env::on(raw.clone(), standard());
    let b = Env::on(raw, standard());
    assert_eq!(
        a.alloc(1, &dual()).unwrap(),
        vec![ip("10.244.0.1"), ip("fd00:10:244::1")]
    );
    // b (a second instance of the node) learns the blocks and takes the next
    // IPv6 address: a's cached v6 block is stale now, its v4 block is not.
    b.ipam.refresh().unwrap();
    assert_eq!(b.alloc(2, &v6()).unwrap(), vec![ip("fd00:10:244::2")]);
    let (w, r) = (a.store.writes(), a.store.reads());
    let conflicts = a.store.conflicts.load(Ordering::SeqCst);
    assert_eq!(
        a.alloc(3, &dual()).unwrap(),
        vec![ip("10.244.0.2"), ip("fd00:10:244::3")],
        "the v4 address of the lost commit was not taken, the v6 one moved on"
    );
    assert_eq!(a.store.conflicts.load(Ordering::SeqCst) - conflicts, 1);
    assert_eq!(
        (a.store.writes() - w, a.store.reads() - r),
        (2, 0),
        "the lost commit and its retry, with the record the conflict carried"
    );
    let addrs: HashSet<IpAddr> = a
        .ipam
        .allocations()
        .unwrap()
        .into_iter()
        .map(|x| x.address)
        .collect();
    assert_eq!(addrs.len(), 5, "{addrs:?}");
    // The same for a release: b changes the v4 block under a.
    assert_eq!(b.alloc(4, &v4()).unwrap(), vec![ip("10.244.0.3")]);
    let w = a.store.writes();
    assert_eq!(
        a.ipam.release(&h(3)).unwrap(),
        vec![ip("10.244.0.2"), ip("fd00:10:244::3")]
    );
    assert_eq!(a.store.writes() - w, 2);
    let held: HashSet<String> = a
        .ipam
        .allocations()
        .unwrap()
        .into_iter()
        .map(|x| x.handle)
        .collect();
    assert_eq!(held, live(&[&h(1), &h(2), &h(4)]));
}

#[test]
fn store_unavailable_is_reported_as_store_error() {
    let env = Env::new(standard());
    env.alloc(1, &v4()).unwrap();
    env.store.down.store(true, Ordering::SeqCst);
    let err = env.alloc(2, &v4()).unwrap_err();
    assert!(err.is_temporary());
    assert!(
        matches!(err, IpamError::Store(StoreError::Unavailable { .. })),
        "{err:?}"
    );
    assert!(matches!(
        env.ipam.release(&h(1)),
        Err(IpamError::Store(StoreError::Unavailable { .. }))
    ));
    // The cache stayed coherent: once the store is back, all is well.
    env.store.down.store(false, Ordering::SeqCst);
    assert_eq!(env.ipam.release(&h(1)).unwrap(), vec![ip("10.244.0.1")]);
    assert_eq!(env.alloc(2, &v4()).unwrap(), vec![ip("10.244.0.2")]);
}

#[test]
fn restart_sees_existing_allocations() {
    let raw = new_store();
    let a = Env::on(raw.clone(), standard());
    let got = a.alloc(1, &dual()).unwrap();
    drop(a);
    let b = Env::on(raw, standard());
    let w = b.store.writes();
    assert_eq!(
        b.alloc(1, &dual()).unwrap(),
        got,
        "idempotent across a restart"
    );
    assert_eq!(b.store.writes(), w);
    assert_eq!(b.ipam.release(&h(1)).unwrap().len(), 2);
    assert_eq!(
        b.alloc(2, &v4()).unwrap(),
        vec![ip("10.244.0.2")],
        "the cursor survived too"
    );
}
