//! Transactions ([`Store::commit`]): all or nothing, one revision, conflicts,
//! mixed ops, refused commits, what watchers see, unconditional puts.

use super::*;

/// A transaction whose condition fails anywhere writes nothing: not the ops
/// before the failing one, not the ones after it, and the store revision
/// does not move.
pub fn txn_all_or_nothing<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("txn_all_or_nothing");
    let (a, b, c, d) = (
        format!("{p}a"),
        format!("{p}b"),
        format!("{p}c"),
        format!("{p}d"),
    );
    let ra = created(&s, &a, b"a1");
    let rb = created(&s, &b, b"b1");
    created(&s, &d, b"d1");
    let before = must("list", s.list(&p));
    // The failing op in the middle, at the end, and first.
    let stale = [
        vec![
            TxnOp::Update {
                key: &a,
                value: b"a2",
                expected: ra,
            },
            TxnOp::Update {
                key: &b,
                value: b"b2",
                expected: rb + 1000,
            },
            TxnOp::Create {
                key: &c,
                value: b"c1",
                lease: None,
            },
        ],
        vec![
            TxnOp::Create {
                key: &c,
                value: b"c1",
                lease: None,
            },
            TxnOp::Delete {
                key: &d,
                expected: None,
            },
            TxnOp::Create {
                key: &a,
                value: b"again",
                lease: None,
            },
        ],
        vec![
            TxnOp::Delete {
                key: &c,
                expected: Some(1),
            },
            TxnOp::Update {
                key: &a,
                value: b"a2",
                expected: ra,
            },
        ],
    ];
    for ops in &stale {
        txn_conflict(&s, ops);
        let after = must("list", s.list(&p));
        assert_eq!(after.kvs, before.kvs, "a failed commit wrote something");
        assert_eq!(
            after.revision, before.revision,
            "a failed commit moved the revision"
        );
    }
    // The same ops with the right conditions go through.
    let r = committed(
        &s,
        &[
            TxnOp::Update {
                key: &a,
                value: b"a2",
                expected: ra,
            },
            TxnOp::Update {
                key: &b,
                value: b"b2",
                expected: rb,
            },
            TxnOp::Create {
                key: &c,
                value: b"c1",
                lease: None,
            },
        ],
    );
    assert!(r > before.revision);
    assert_eq!(get_some(&s, &a).value, b"a2");
    assert_eq!(get_some(&s, &b).value, b"b2");
    assert_eq!(get_some(&s, &c).value, b"c1");
}

/// Every key a transaction writes gets the commit's one revision; the
/// revision is above every earlier one and below every later one.
pub fn txn_one_revision<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("txn_one_revision");
    let keys: Vec<String> = (0..5).map(|i| format!("{p}k{i}")).collect();
    let r0 = created(&s, &keys[0], b"old");
    let ops: Vec<TxnOp<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            if i == 0 {
                TxnOp::Update {
                    key: k,
                    value: b"new",
                    expected: r0,
                }
            } else {
                TxnOp::Create {
                    key: k,
                    value: b"new",
                    lease: None,
                }
            }
        })
        .collect();
    let r = committed(&s, &ops);
    assert!(r > r0, "commit at {r} after a write at {r0}");
    for (i, k) in keys.iter().enumerate() {
        let kv = get_some(&s, k);
        assert_eq!(kv.value, b"new");
        assert_eq!(kv.mod_revision, r, "{k}");
        let create = if i == 0 { r0 } else { r };
        assert_eq!(kv.create_revision, create, "{k}");
    }
    let l = must("list", s.list(&p));
    assert!(l.revision >= r);
    // The next write takes a later revision, one commit or one key.
    let r2 = committed(
        &s,
        &[TxnOp::Delete {
            key: &keys[4],
            expected: Some(r),
        }],
    );
    assert!(r2 > r);
    let r3 = created(&s, &format!("{p}after"), b"x");
    assert!(r3 > r2);
    // A commit that deletes only missing keys writes nothing: it returns a
    // revision no later than the store's, and the next write still moves on.
    let r4 = committed(
        &s,
        &[TxnOp::Delete {
            key: &format!("{p}missing"),
            expected: None,
        }],
    );
    assert!(r4 >= r3, "{r4} before the last write {r3}");
    let r5 = created(&s, &format!("{p}last"), b"x");
    assert!(r5 > r4);
}

/// A conflict names the first op whose condition failed (even when later ones
/// fail too) and carries that key's current state, for every kind of op.
pub fn txn_conflict_index<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("txn_conflict_index");
    let (a, b, missing) = (format!("{p}a"), format!("{p}b"), format!("{p}missing"));
    let ra = created(&s, &a, b"a");
    created(&s, &b, b"b");
    let kv_a = get_some(&s, &a);
    let kv_b = get_some(&s, &b);
    let ok_update = TxnOp::Update {
        key: &a,
        value: b"x",
        expected: ra,
    };
    let cases: Vec<(Vec<TxnOp<'_>>, usize, Option<KeyValue>)> = vec![
        // create of an existing key
        (
            vec![
                ok_update,
                TxnOp::Create {
                    key: &b,
                    value: b"x",
                    lease: None,
                },
            ],
            1,
            Some(kv_b.clone()),
        ),
        // update of a missing key
        (
            vec![TxnOp::Update {
                key: &missing,
                value: b"x",
                expected: 1,
            }],
            0,
            None,
        ),
        // update at a stale revision
        (
            vec![
                TxnOp::Delete {
                    key: &missing,
                    expected: None,
                },
                ok_update,
                TxnOp::Update {
                    key: &b,
                    value: b"x",
                    expected: kv_b.mod_revision + 1000,
                },
            ],
            2,
            Some(kv_b.clone()),
        ),
        // conditional delete of a missing key
        (
            vec![
                ok_update,
                TxnOp::Delete {
                    key: &missing,
                    expected: Some(1),
                },
            ],
            1,
            None,
        ),
        // conditional delete at a wrong revision
        (
            vec![TxnOp::Delete {
                key: &a,
                expected: Some(ra + 1000),
            }],
            0,
            Some(kv_a.clone()),
        ),
        // two failing ops: the first is reported
        (
            vec![
                TxnOp::Create {
                    key: &missing,
                    value: b"x",
                    lease: None,
                },
                TxnOp::Create {
                    key: &a,
                    value: b"x",
                    lease: None,
                },
                TxnOp::Update {
                    key: &b,
                    value: b"x",
                    expected: kv_b.mod_revision + 1000,
                },
            ],
            1,
            Some(kv_a.clone()),
        ),
    ];
    for (ops, index, current) in cases {
        let c = txn_conflict(&s, &ops);
        assert_eq!(c, TxnConflict { index, current }, "ops {ops:?}");
    }
    assert_eq!(get_some(&s, &a), kv_a);
    assert_eq!(get_some(&s, &b), kv_b);
    assert_eq!(must("get", s.get(&missing)), None);
}

/// Create, update, conditional and unconditional deletes in one commit:
/// update keeps create_revision and lease, a create attaches its lease, an
/// unconditional delete of a missing key is fine.
pub fn txn_mixed_ops<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("txn_mixed_ops");
    let [new, upd, del_if, del_any, missing, leased] =
        ["new", "upd", "del_if", "del_any", "missing", "leased"].map(|k| format!("{p}{k}"));
    let lease = must("grant", s.grant_lease(Duration::from_secs(30)));
    let r_upd = must("create", s.create(&upd, b"u1", Some(lease))).expect("no conflict");
    let r_del = created(&s, &del_if, b"d");
    created(&s, &del_any, b"d");
    let r = committed(
        &s,
        &[
            TxnOp::Create {
                key: &new,
                value: b"n",
                lease: None,
            },
            TxnOp::Update {
                key: &upd,
                value: b"u2",
                expected: r_upd,
            },
            TxnOp::Delete {
                key: &del_if,
                expected: Some(r_del),
            },
            TxnOp::Delete {
                key: &del_any,
                expected: None,
            },
            TxnOp::Delete {
                key: &missing,
                expected: None,
            },
            TxnOp::Create {
                key: &leased,
                value: b"l",
                lease: Some(lease),
            },
        ],
    );
    assert_eq!(
        get_some(&s, &new),
        KeyValue {
            key: new.clone(),
            value: b"n".to_vec(),
            create_revision: r,
            mod_revision: r,
            lease: None,
        }
    );
    assert_eq!(
        get_some(&s, &upd),
        KeyValue {
            key: upd.clone(),
            value: b"u2".to_vec(),
            create_revision: r_upd,
            mod_revision: r,
            lease: Some(lease),
        }
    );
    assert_eq!(must("get", s.get(&del_if)), None);
    assert_eq!(must("get", s.get(&del_any)), None);
    assert_eq!(must("get", s.get(&missing)), None);
    assert_eq!(get_some(&s, &leased).lease, Some(lease));
    let keys: Vec<String> = must("list", s.list(&p))
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, [leased.clone(), new.clone(), upd.clone()]);
    // Both leased keys (the updated and the created one) go with the lease.
    must("revoke", s.revoke_lease(lease));
    assert_eq!(must("get", s.get(&upd)), None);
    assert_eq!(must("get", s.get(&leased)), None);
    assert!(must("get", s.get(&new)).is_some());
}

/// Empty transactions, the same key twice, bad keys and values are
/// [`StoreError::Invalid`]; an unknown lease is [`StoreError::LeaseNotFound`];
/// none of them writes anything.
pub fn txn_invalid<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("txn_invalid");
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    let ra = created(&s, &a, b"a");
    let before = must("list", s.list(&p));
    assert_invalid("empty commit", s.commit(&[]));
    assert_invalid(
        "the same key twice",
        s.commit(&[
            TxnOp::Update {
                key: &a,
                value: b"x",
                expected: ra,
            },
            TxnOp::Create {
                key: &b,
                value: b"x",
                lease: None,
            },
            TxnOp::Delete {
                key: &a,
                expected: None,
            },
        ]),
    );
    assert_invalid(
        "empty key",
        s.commit(&[
            TxnOp::Create {
                key: &b,
                value: b"x",
                lease: None,
            },
            TxnOp::Delete {
                key: "",
                expected: None,
            },
        ]),
    );
    let huge = vec![0u8; MAX_VALUE_LEN + 1];
    assert_invalid(
        "huge value",
        s.commit(&[
            TxnOp::Create {
                key: &b,
                value: b"x",
                lease: None,
            },
            TxnOp::Update {
                key: &a,
                value: &huge,
                expected: ra,
            },
        ]),
    );
    let lease = must("grant", s.grant_lease(TTL));
    must("revoke", s.revoke_lease(lease));
    match s.commit(&[
        TxnOp::Update {
            key: &a,
            value: b"x",
            expected: ra,
        },
        TxnOp::Create {
            key: &b,
            value: b"x",
            lease: Some(lease),
        },
    ]) {
        Err(StoreError::LeaseNotFound { lease: l }) => assert_eq!(l, lease),
        other => panic!("commit with an unknown lease: {other:?}"),
    }
    let after = must("list", s.list(&p));
    assert_eq!(after.kvs, before.kvs, "a refused commit wrote something");
}

/// A watch sees every key a transaction writes as its own event, all with
/// the commit's revision, in op order; a failed commit shows nothing.
pub fn txn_watch_same_revision<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("txn_watch_same_revision");
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|k| format!("{p}{k}"));
    let rb = created(&s, &b, b"b1");
    let rc = created(&s, &c, b"c1");
    let start = must("list", s.list(&p)).revision;
    let w = must("watch", s.watch(&p, start));
    txn_conflict(
        &s,
        &[
            TxnOp::Create {
                key: &d,
                value: b"d",
                lease: None,
            },
            TxnOp::Update {
                key: &b,
                value: b"x",
                expected: rb + 1000,
            },
        ],
    );
    // Op order, not key order: d first.
    let r = committed(
        &s,
        &[
            TxnOp::Create {
                key: &d,
                value: b"d1",
                lease: None,
            },
            TxnOp::Update {
                key: &b,
                value: b"b2",
                expected: rb,
            },
            TxnOp::Delete {
                key: &c,
                expected: Some(rc),
            },
            TxnOp::Create {
                key: &a,
                value: b"a1",
                lease: None,
            },
        ],
    );
    assert_put(&next_event(&w), &d, b"d1", r);
    assert_put(&next_event(&w), &b, b"b2", r);
    assert_delete(&next_event(&w), &c, Some(r));
    assert_put(&next_event(&w), &a, b"a1", r);
    expect_quiet(&w);
    // A watch started in the middle of history replays the same.
    let w = must("watch", s.watch(&p, start));
    let got: Vec<(String, Revision)> = (0..4)
        .map(|_| {
            let e = next_event(&w);
            (e.kv.key, e.kv.mod_revision)
        })
        .collect();
    assert_eq!(got, [(d, r), (b, r), (c, r), (a.clone(), r)]);
    expect_quiet(&w);
    // Watching from the commit's revision sees none of it.
    let w = must("watch", s.watch(&p, r));
    expect_quiet(&w);
    let r2 = must("update", s.update(&a, b"a2", r)).expect("no conflict");
    assert_put(&next_event(&w), &a, b"a2", r2);
}

/// An unconditional [`TxnOp::Put`]: it never fails a commit, yet writes
/// nothing (and the revision does not move) when another op's condition
/// fails; in a commit that succeeds it creates an absent key, replaces a
/// present one (keeping its `create_revision`, dropping its lease) at the
/// commit's revision, and watchers see it like any other write.
pub fn txn_put<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("txn_put");
    let [guard, absent, present, leased] =
        ["guard", "absent", "present", "leased"].map(|k| format!("{p}{k}"));
    let rg = created(&s, &guard, b"g1");
    let rp = created(&s, &present, b"p1");
    let lease = must("grant", s.grant_lease(Duration::from_secs(30)));
    let rl = must("create", s.create(&leased, b"l1", Some(lease))).expect("no conflict");
    let before = must("list", s.list(&p));
    let puts = |suffix: &'static [u8; 2]| {
        [
            TxnOp::Put {
                key: &absent,
                value: suffix,
            },
            TxnOp::Put {
                key: &present,
                value: suffix,
            },
            TxnOp::Put {
                key: &leased,
                value: suffix,
            },
        ]
    };
    // The guard's condition fails, before or after the puts: nothing written.
    let stale = TxnOp::Update {
        key: &guard,
        value: b"g2",
        expected: rg + 1000,
    };
    for ops in [
        [&[stale][..], &puts(b"x1")[..]].concat(),
        [&puts(b"x1")[..], &[stale][..]].concat(),
    ] {
        let c = txn_conflict(&s, &ops);
        assert_eq!(c.current.map(|kv| kv.key), Some(guard.clone()));
        let after = must("list", s.list(&p));
        assert_eq!(after.kvs, before.kvs, "a failed commit wrote a put");
        assert_eq!(
            after.revision, before.revision,
            "a failed commit moved the revision"
        );
    }
    // The guard holds: every put is written at the commit's revision.
    let w = must("watch", s.watch(&p, before.revision));
    let ok = TxnOp::Update {
        key: &guard,
        value: b"g2",
        expected: rg,
    };
    let r = committed(&s, &[&[ok][..], &puts(b"v2")[..]].concat());
    assert!(
        r > before.revision,
        "commit at {r} after {}",
        before.revision
    );
    let expect = |key: &str, create_revision| KeyValue {
        key: key.to_string(),
        value: b"v2".to_vec(),
        create_revision,
        mod_revision: r,
        lease: None,
    };
    assert_eq!(get_some(&s, &absent), expect(&absent, r), "created");
    assert_eq!(get_some(&s, &present), expect(&present, rp), "replaced");
    assert_eq!(get_some(&s, &leased), expect(&leased, rl), "lease dropped");
    assert_put(&next_event(&w), &guard, b"g2", r);
    for k in [&absent, &present, &leased] {
        assert_put(&next_event(&w), k, b"v2", r);
    }
    expect_quiet(&w);
    // The lease no longer holds the key it had.
    must("revoke", s.revoke_lease(lease));
    assert_eq!(get_some(&s, &leased).value, b"v2");
    // A put alone is a commit of its own, at a later revision.
    let r2 = committed(
        &s,
        &[TxnOp::Put {
            key: &present,
            value: b"v3",
        }],
    );
    assert!(r2 > r, "{r2} after {r}");
    let kv = get_some(&s, &present);
    assert_eq!(
        (kv.value, kv.create_revision, kv.mod_revision),
        (b"v3".to_vec(), rp, r2)
    );
    // A too large put value is refused like any other.
    let huge = vec![0u8; MAX_VALUE_LEN + 1];
    assert_invalid(
        "huge put",
        s.commit(&[TxnOp::Put {
            key: &absent,
            value: &huge,
        }]),
    );
}
