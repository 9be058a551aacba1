//! Watches: replay from a revision, prefixes, deletes, concurrent writers.

use super::*;

/// A watch from an older revision first replays the history after it, in
/// order, then delivers live changes in order.
pub fn watch_replays_then_live<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("watch_replays_then_live");
    let start = must("list", s.list(&p)).revision;
    let r1 = created(&s, &format!("{p}a"), b"1");
    let r2 = must("update", s.update(&format!("{p}a"), b"2", r1)).expect("no conflict");
    let r3 = created(&s, &format!("{p}b"), b"3");
    let w = must("watch", s.watch(&p, start));
    assert_put(&next_event(&w), &format!("{p}a"), b"1", r1);
    assert_put(&next_event(&w), &format!("{p}a"), b"2", r2);
    assert_put(&next_event(&w), &format!("{p}b"), b"3", r3);
    // From the middle of the history.
    let w2 = must("watch", s.watch(&p, r2));
    assert_put(&next_event(&w2), &format!("{p}b"), b"3", r3);
    expect_quiet(&w2);
    // Live, in order, to both.
    let mut revs = Vec::new();
    for i in 0..20 {
        revs.push(created(&s, &format!("{p}live/{i:02}"), b"l"));
    }
    let rd = must("delete", s.delete(&format!("{p}a"), None))
        .expect("no conflict")
        .expect("deleted");
    for w in [&w, &w2] {
        for (i, rev) in revs.iter().enumerate() {
            assert_put(&next_event(w), &format!("{p}live/{i:02}"), b"l", *rev);
        }
        assert_delete(&next_event(w), &format!("{p}a"), Some(rd));
        expect_quiet(w);
    }
}

/// A watch on a prefix sees only keys with that (byte) prefix.
pub fn watch_prefix_only<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("watch_prefix_only");
    let start = must("list", s.list(&p)).revision;
    let w = must("watch", s.watch(&format!("{p}a/"), start));
    created(&s, &format!("{p}b/1"), b"x");
    created(&s, &format!("{p}a"), b"x");
    created(&s, &format!("{p}ab"), b"x");
    let r = created(&s, &format!("{p}a/1"), b"y");
    created(&s, &format!("{p}b/2"), b"x");
    assert_put(&next_event(&w), &format!("{p}a/1"), b"y", r);
    expect_quiet(&w);
    // Byte prefix: "a" matches "a", "ab", "a/1".
    let w = must("watch", s.watch(&format!("{p}a"), start));
    let keys: Vec<String> = (0..3).map(|_| next_event(&w).kv.key).collect();
    assert_eq!(keys, [format!("{p}a"), format!("{p}ab"), format!("{p}a/1")]);
    expect_quiet(&w);
}

/// A watch sees deletes as [`EventKind::Delete`] with the delete's revision
/// and an empty value.
pub fn watch_sees_delete<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("watch_sees_delete");
    let key = format!("{p}k");
    let r1 = created(&s, &key, b"v");
    let w = must("watch", s.watch(&p, r1));
    let rd = must("delete", s.delete(&key, Some(r1)))
        .expect("no conflict")
        .expect("deleted");
    assert_delete(&next_event(&w), &key, Some(rd));
    expect_quiet(&w);
}

/// list then watch from the listing's revision: nothing already listed is
/// delivered again, and every later change is.
pub fn watch_from_listing<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("watch_from_listing");
    for i in 0..3 {
        created(&s, &format!("{p}k{i}"), b"old");
    }
    let l = must("list", s.list(&p));
    assert_eq!(l.kvs.len(), 3);
    let w = must("watch", s.watch(&p, l.revision));
    expect_quiet(&w);
    let r = created(&s, &format!("{p}k3"), b"new");
    assert_put(&next_event(&w), &format!("{p}k3"), b"new", r);
    expect_quiet(&w);
}

/// While 4 threads write concurrently, a watch receives every change exactly
/// once, in strictly increasing revision order.
pub fn watch_concurrent_writes<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("watch_concurrent_writes");
    let w = must("watch", s.watch(&p, must("list", s.list(&p)).revision));
    let (threads, per) = (4, 25);
    let revs = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (s, p, revs) = (&s, &p, &revs);
            scope.spawn(move || {
                for i in 0..per {
                    let key = format!("{p}{t}/{i}");
                    let r = created(s, &key, b"x");
                    let r2 = must("update", s.update(&key, b"y", r)).expect("no conflict");
                    let mut revs = revs
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    revs.push(r);
                    revs.push(r2);
                }
            });
        }
    });
    let mut expected = revs
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    expected.sort_unstable();
    let got: Vec<Revision> = (0..expected.len())
        .map(|_| next_event(&w).kv.mod_revision)
        .collect();
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "watch events out of order: {got:?}"
    );
    assert_eq!(got, expected);
    expect_quiet(&w);
}
