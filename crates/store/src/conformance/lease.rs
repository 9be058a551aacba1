//! Leases: attach, expiry, keep-alive, revoke, unknown leases.

use super::*;

/// A key created with a lease reports it; update keeps it.
pub fn lease_attach<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let key = format!("{}k", unique_prefix("lease_attach"));
    let lease = must("grant", s.grant_lease(Duration::from_secs(30)));
    let r1 = must("create", s.create(&key, b"v", Some(lease))).expect("no conflict");
    assert_eq!(get_some(&s, &key).lease, Some(lease));
    must("update", s.update(&key, b"w", r1)).expect("no conflict");
    let kv = get_some(&s, &key);
    assert_eq!((kv.lease, kv.value.as_slice()), (Some(lease), &b"w"[..]));
    must("revoke", s.revoke_lease(lease));
    assert_eq!(must("get", s.get(&key)), None);
}

fn wait_deleted<S: Store>(s: &S, w: &Watch, keys: &[String], deadline: Instant) {
    let mut left: Vec<String> = keys.to_vec();
    while !left.is_empty() {
        let now = Instant::now();
        assert!(
            now < deadline,
            "keys {left:?} not deleted by lease expiry in time"
        );
        match w.rx.recv_timeout(deadline - now) {
            Ok(WatchMessage::Event(e)) => {
                assert_eq!(e.kind, EventKind::Delete, "unexpected event {e:?}");
                left.retain(|k| *k != e.kv.key);
            }
            Ok(other) => panic!("watch: unexpected {other:?}"),
            Err(_) => panic!("keys {left:?} not deleted by lease expiry within the ttl + 1 s"),
        }
    }
    for k in keys {
        assert_eq!(must("get", s.get(k)), None, "{k} still there after expiry");
    }
}

/// When a lease expires, its keys are deleted (with Delete events) within
/// ttl + 1 s, keys without the lease stay, and the lease is gone.
pub fn lease_expiry<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("lease_expiry");
    let lease = must("grant", s.grant_lease(TTL));
    let granted = Instant::now();
    let keys = [format!("{p}a"), format!("{p}b")];
    for k in &keys {
        must("create", s.create(k, b"v", Some(lease))).expect("no conflict");
    }
    let stay = format!("{p}stay");
    created(&s, &stay, b"v");
    let w = must("watch", s.watch(&p, must("list", s.list(&p)).revision));
    wait_deleted(&s, &w, &keys, granted + TTL + Duration::from_secs(1));
    assert!(
        granted.elapsed() >= TTL - Duration::from_millis(50),
        "lease expired early"
    );
    assert!(must("get", s.get(&stay)).is_some());
    match s.keep_alive(lease) {
        Err(StoreError::LeaseNotFound { lease: l }) => assert_eq!(l, lease),
        other => panic!("keep_alive of an expired lease: {other:?}"),
    }
}

/// keep_alive renews the lease for a full ttl; once renewals stop, it expires.
pub fn lease_keep_alive<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("lease_keep_alive");
    let key = format!("{p}k");
    let lease = must("grant", s.grant_lease(TTL));
    must("create", s.create(&key, b"v", Some(lease))).expect("no conflict");
    let until = Instant::now() + TTL * 2;
    while Instant::now() < until {
        must("keep_alive", s.keep_alive(lease));
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        must("get", s.get(&key)).is_some(),
        "key of a kept-alive lease vanished"
    );
    must("keep_alive", s.keep_alive(lease));
    let renewed = Instant::now();
    let w = must("watch", s.watch(&p, must("list", s.list(&p)).revision));
    wait_deleted(&s, &w, &[key], renewed + TTL + Duration::from_secs(1));
}

/// revoke deletes the lease's keys at once (each a Delete event); the lease
/// is then unknown.
pub fn lease_revoke<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("lease_revoke");
    let lease = must("grant", s.grant_lease(Duration::from_secs(30)));
    let keys = [format!("{p}a"), format!("{p}b"), format!("{p}c")];
    for k in &keys {
        must("create", s.create(k, b"v", Some(lease))).expect("no conflict");
    }
    let other = must("grant", s.grant_lease(Duration::from_secs(30)));
    let kept = format!("{p}other");
    must("create", s.create(&kept, b"v", Some(other))).expect("no conflict");
    let w = must("watch", s.watch(&p, must("list", s.list(&p)).revision));
    must("revoke", s.revoke_lease(lease));
    for k in &keys {
        assert_eq!(must("get", s.get(k)), None, "{k} survived revoke");
    }
    let mut deleted: Vec<String> = (0..keys.len())
        .map(|_| next_event(&w))
        .map(|e| {
            assert_delete(&e, &e.kv.key, None);
            e.kv.key
        })
        .collect();
    deleted.sort();
    assert_eq!(deleted, keys);
    expect_quiet(&w);
    assert!(must("get", s.get(&kept)).is_some());
    assert!(matches!(
        s.revoke_lease(lease),
        Err(StoreError::LeaseNotFound { .. })
    ));
    assert!(matches!(
        s.keep_alive(lease),
        Err(StoreError::LeaseNotFound { .. })
    ));
    must("revoke", s.revoke_lease(other));
}

/// Attaching a key to a revoked (unknown) lease is
/// [`StoreError::LeaseNotFound`] and creates nothing.
pub fn lease_unknown<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let key = format!("{}k", unique_prefix("lease_unknown"));
    let lease = must("grant", s.grant_lease(TTL));
    must("revoke", s.revoke_lease(lease));
    match s.create(&key, b"v", Some(lease)) {
        Err(StoreError::LeaseNotFound { lease: l }) => assert_eq!(l, lease),
        other => panic!("create with an unknown lease: {other:?}"),
    }
    assert_eq!(must("get", s.get(&key)), None);
    match s.keep_alive(lease) {
        Err(StoreError::LeaseNotFound { .. }) => {}
        other => panic!("keep_alive of an unknown lease: {other:?}"),
    }
}
