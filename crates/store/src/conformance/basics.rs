//! Single-key reads and writes, revisions, listings, refused requests.

use super::*;

/// get of a missing key is `None`; create returns the revision, and get then
/// shows the value with `create_revision == mod_revision == rev`, no lease.
pub fn get_and_create<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("get_and_create");
    let key = format!("{p}k");
    assert_eq!(must("get", s.get(&key)), None);
    let rev = created(&s, &key, b"v1");
    assert!(rev > 0, "revision 0 means absent");
    let kv = get_some(&s, &key);
    assert_eq!(
        kv,
        KeyValue {
            key: key.clone(),
            value: b"v1".to_vec(),
            create_revision: rev,
            mod_revision: rev,
            lease: None,
        }
    );
    // Empty values are values.
    let k2 = format!("{p}empty");
    created(&s, &k2, b"");
    assert_eq!(get_some(&s, &k2).value, b"");
    // The largest allowed value round-trips.
    let big = vec![0xa5u8; MAX_VALUE_LEN];
    let k3 = format!("{p}big");
    created(&s, &k3, &big);
    assert_eq!(get_some(&s, &k3).value, big);
}

/// Creating an existing key conflicts with the current kv and changes nothing.
pub fn create_conflict<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let key = format!("{}k", unique_prefix("create_conflict"));
    created(&s, &key, b"first");
    let before = get_some(&s, &key);
    match must("create", s.create(&key, b"second", None)) {
        Err(Conflict { current }) => assert_eq!(current, Some(before.clone())),
        Ok(rev) => panic!("second create of {key} succeeded at {rev}"),
    }
    assert_eq!(get_some(&s, &key), before);
}

/// update succeeds only on the current mod_revision; a stale one conflicts
/// with the current kv; a missing key conflicts with `None`.
pub fn update_cas<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("update_cas");
    let key = format!("{p}k");
    let r1 = created(&s, &key, b"v1");
    let r2 = match must("update", s.update(&key, b"v2", r1)) {
        Ok(r) => r,
        Err(c) => panic!("update at the current revision conflicted: {c:?}"),
    };
    assert!(r2 > r1);
    let kv = get_some(&s, &key);
    assert_eq!(kv.value, b"v2");
    assert_eq!(kv.create_revision, r1, "update must keep create_revision");
    assert_eq!(kv.mod_revision, r2);
    match must("update", s.update(&key, b"stale", r1)) {
        Err(Conflict { current }) => assert_eq!(current, Some(kv.clone())),
        Ok(r) => panic!("update at a stale revision succeeded at {r}"),
    }
    assert_eq!(get_some(&s, &key), kv);
    match must("update", s.update(&format!("{p}missing"), b"x", r2)) {
        Err(Conflict { current }) => assert_eq!(current, None),
        Ok(r) => panic!("update of a missing key succeeded at {r}"),
    }
    assert_eq!(must("get", s.get(&format!("{p}missing"))), None);
}

/// Unconditional delete of a missing key is `Ok(None)`; delete-if-revision
/// conflicts on a wrong revision (with the current kv) or a missing key
/// (with `None`), and succeeds on the right one, returning the delete's
/// revision.
pub fn delete_semantics<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("delete_semantics");
    let key = format!("{p}k");
    assert_eq!(
        must("delete", s.delete(&key, None)).expect("no conflict"),
        None
    );
    match must("delete", s.delete(&key, Some(1))) {
        Err(Conflict { current }) => assert_eq!(current, None),
        Ok(r) => panic!("conditional delete of a missing key succeeded: {r:?}"),
    }
    let r1 = created(&s, &key, b"v");
    let kv = get_some(&s, &key);
    match must("delete", s.delete(&key, Some(r1 + 1000))) {
        Err(Conflict { current }) => assert_eq!(current, Some(kv)),
        Ok(r) => panic!("delete at a wrong revision succeeded: {r:?}"),
    }
    let rd = match must("delete", s.delete(&key, Some(r1))) {
        Ok(Some(r)) => r,
        other => panic!("delete at the current revision: {other:?}"),
    };
    assert!(rd > r1);
    assert_eq!(must("get", s.get(&key)), None);
    // Unconditional delete of an existing key.
    let k2 = format!("{p}k2");
    let r2 = created(&s, &k2, b"v");
    match must("delete", s.delete(&k2, None)) {
        Ok(Some(r)) => assert!(r > r2),
        other => panic!("unconditional delete: {other:?}"),
    }
    assert_eq!(must("get", s.get(&k2)), None);
}

/// A key created again after a delete has a new create_revision.
pub fn recreate_after_delete<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let key = format!("{}k", unique_prefix("recreate_after_delete"));
    let r1 = created(&s, &key, b"a");
    let rd = must("delete", s.delete(&key, None))
        .expect("no conflict")
        .expect("deleted");
    let r2 = created(&s, &key, b"b");
    assert!(r2 > rd && rd > r1);
    let kv = get_some(&s, &key);
    assert_eq!((kv.create_revision, kv.mod_revision), (r2, r2));
}

/// Every successful write returns a revision greater than the previous one,
/// whatever key it touches; failed conditional writes do not show up.
pub fn revisions_increase<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("revisions_increase");
    let mut last = 0;
    let mut check = |rev: Revision| {
        assert!(rev > last, "revision {rev} after {last}");
        last = rev;
    };
    for i in 0..5 {
        let key = format!("{p}k{i}");
        let r = created(&s, &key, b"x");
        check(r);
        let _ = must("create", s.create(&key, b"y", None)).expect_err("conflict");
        let r = must("update", s.update(&key, b"z", r)).expect("no conflict");
        check(r);
    }
    let r = must("delete", s.delete(&format!("{p}k0"), None))
        .expect("no conflict")
        .expect("deleted");
    check(r);
    let r = created(&s, &format!("{p}again"), b"x");
    check(r);
}

/// list returns exactly the keys with the byte prefix, sorted by key.
pub fn list_sorted_prefix<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("list_sorted_prefix");
    for k in ["a/b/2", "a/c", "a/b/1", "a/bc", "a/b", "b/a", "a", "a/b/10"] {
        created(&s, &format!("{p}{k}"), k.as_bytes());
    }
    let keys = |prefix: &str| -> Vec<String> {
        must("list", s.list(&format!("{p}{prefix}")))
            .kvs
            .into_iter()
            .map(|kv| {
                assert_eq!(kv.value, &kv.key.as_bytes()[p.len()..]);
                kv.key[p.len()..].to_string()
            })
            .collect()
    };
    // Byte prefix, as etcd: "a/b" includes "a/bc".
    assert_eq!(keys("a/b"), ["a/b", "a/b/1", "a/b/10", "a/b/2", "a/bc"]);
    assert_eq!(keys("a/b/"), ["a/b/1", "a/b/10", "a/b/2"]);
    assert_eq!(
        keys(""),
        ["a", "a/b", "a/b/1", "a/b/10", "a/b/2", "a/bc", "a/c", "b/a"]
    );
    assert_eq!(keys("a/b/1"), ["a/b/1", "a/b/10"]);
    assert!(keys("zz").is_empty());
    assert!(keys("a/b/3").is_empty());
}

/// A listing's revision is at least every listed mod_revision and at least
/// the last write's revision (even when the prefix is empty).
pub fn list_revision<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("list_revision");
    let mut last = 0;
    for i in 0..4 {
        last = created(&s, &format!("{p}k{i}"), b"x");
    }
    let l = must("list", s.list(&p));
    assert_eq!(l.kvs.len(), 4);
    for kv in &l.kvs {
        assert!(l.revision >= kv.mod_revision, "{l:?}");
    }
    assert!(l.revision >= last);
    let rd = must("delete", s.delete(&format!("{p}k3"), None))
        .expect("no conflict")
        .expect("deleted");
    let l = must("list", s.list(&format!("{p}none/")));
    assert!(l.kvs.is_empty());
    assert!(
        l.revision >= rd,
        "listing at {} after delete at {rd}",
        l.revision
    );
}

pub(crate) fn assert_invalid<T: std::fmt::Debug>(what: &str, r: crate::StoreResult<T>) {
    match r {
        Err(StoreError::Invalid { .. }) => {}
        other => panic!("{what}: expected StoreError::Invalid, got {other:?}"),
    }
}

/// Empty keys and values over [`MAX_VALUE_LEN`] are [`StoreError::Invalid`].
pub fn invalid_requests<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("invalid_requests");
    let key = format!("{p}k");
    assert_invalid("create empty key", s.create("", b"x", None));
    assert_invalid("get empty key", s.get(""));
    assert_invalid("update empty key", s.update("", b"x", 1));
    assert_invalid("delete empty key", s.delete("", None));
    let huge = vec![0u8; MAX_VALUE_LEN + 1];
    assert_invalid("create huge value", s.create(&key, &huge, None));
    assert_eq!(must("get", s.get(&key)), None);
    let r = created(&s, &key, b"small");
    assert_invalid("update huge value", s.update(&key, &huge, r));
    assert_eq!(get_some(&s, &key).value, b"small");
}
