//! Behaviour specific to the embedded backend: persistence, crash recovery,
//! compaction, locking, group commit, watch bookkeeping.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::TempDir;
use weft_store::embedded::{EmbeddedOptions, EmbeddedStore, LOG_MAGIC};
use weft_store::{EventKind, Store, StoreError, TxnOp, WatchMessage};

fn open(path: &Path) -> EmbeddedStore {
    EmbeddedStore::open(path).expect("open store")
}

fn create(s: &EmbeddedStore, key: &str, value: &[u8]) -> u64 {
    s.create(key, value, None)
        .expect("create")
        .expect("no conflict")
}

/// Every key as (key, value, create_revision, mod_revision), and the revision.
type Snapshot = (Vec<(String, Vec<u8>, u64, u64)>, u64);

fn snapshot(s: &EmbeddedStore) -> Snapshot {
    let l = s.list("").expect("list");
    (
        l.kvs
            .into_iter()
            .map(|kv| (kv.key, kv.value, kv.create_revision, kv.mod_revision))
            .collect(),
        l.revision,
    )
}

#[test]
fn reopen_keeps_data_and_revision() {
    let dir = TempDir::new("reopen");
    let path = dir.file("store.log");
    let before = {
        let s = open(&path);
        let r = create(&s, "a", b"1");
        create(&s, "b", b"2");
        s.update("a", b"3", r)
            .expect("update")
            .expect("no conflict");
        create(&s, "c", b"");
        s.delete("b", None).expect("delete").expect("no conflict");
        snapshot(&s)
    };
    assert_eq!(before.1, 5);
    let s = open(&path);
    assert_eq!(snapshot(&s), before);
    assert_eq!(s.revision(), 5);
    assert_eq!(create(&s, "d", b"4"), 6);
    // History does not survive a reopen.
    let w = s.watch("", 2).expect("watch");
    assert_eq!(
        w.rx.recv_timeout(Duration::from_secs(1)),
        Ok(WatchMessage::Compacted {
            compact_revision: 5
        })
    );
    let w = s.watch("", 5).expect("watch");
    match w.rx.recv_timeout(Duration::from_secs(1)) {
        Ok(WatchMessage::Event(e)) => assert_eq!((e.kv.key.as_str(), e.kv.mod_revision), ("d", 6)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn reopen_drops_leased_keys_and_never_reuses_lease_ids() {
    let dir = TempDir::new("leases");
    let path = dir.file("store.log");
    let old_lease = {
        let s = open(&path);
        let lease = s.grant_lease(Duration::from_secs(60)).expect("grant");
        s.create("leased", b"x", Some(lease))
            .expect("create")
            .expect("no conflict");
        create(&s, "plain", b"y");
        // A granted lease with no keys must not be reused either.
        s.grant_lease(Duration::from_secs(60)).expect("grant")
    };
    let s = open(&path);
    assert_eq!(s.get("leased").expect("get"), None);
    assert!(s.get("plain").expect("get").is_some());
    assert_eq!(s.revision(), 3, "the delete of the leased key is a write");
    let lease = s.grant_lease(Duration::from_secs(60)).expect("grant");
    assert!(
        lease > old_lease,
        "lease id {lease} reused (old {old_lease})"
    );
    assert!(matches!(
        s.keep_alive(old_lease),
        Err(StoreError::LeaseNotFound { .. })
    ));
    drop(s);
    let s = open(&path);
    assert_eq!(s.revision(), 3);
    assert!(s.grant_lease(Duration::from_secs(1)).expect("grant") > lease);
}

#[test]
fn torn_tail_is_truncated() {
    let dir = TempDir::new("torn");
    let path = dir.file("store.log");
    let good_len = {
        let s = open(&path);
        create(&s, "a", b"1");
        create(&s, "b", b"2");
        s.log_len().expect("on disk")
    };
    // A crash mid-append: half a record, then garbage.
    for tail in [
        &[0x2a, 0, 0, 0, 0x11, 0x22][..],
        &[0u8; 100][..],
        &[0xff; 7][..],
    ] {
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(tail).expect("write");
        drop(f);
        let s = open(&path);
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), good_len);
        assert_eq!(s.get("b").expect("get").expect("b").value, b"2");
        assert_eq!(s.revision(), 2);
    }
    // The store keeps working after the truncation.
    let s = open(&path);
    assert_eq!(create(&s, "c", b"3"), 3);
    drop(s);
    assert_eq!(open(&path).revision(), 3);
}

#[test]
fn torn_header_of_a_new_log_starts_empty() {
    let dir = TempDir::new("torn-header");
    let path = dir.file("store.log");
    std::fs::write(&path, &LOG_MAGIC[..3]).expect("write");
    let s = open(&path);
    assert_eq!(s.revision(), 0);
    create(&s, "a", b"1");
    drop(s);
    assert_eq!(open(&path).revision(), 1);
    std::fs::write(&path, b"not a log at all").expect("write");
    match EmbeddedStore::open(&path) {
        Err(StoreError::Corrupt { reason, .. }) => assert!(reason.contains("magic"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn corrupt_middle_record_is_an_error() {
    let dir = TempDir::new("corrupt");
    let path = dir.file("store.log");
    let first_end = {
        let s = open(&path);
        create(&s, "a", b"first value");
        let first_end = s.log_len().expect("on disk");
        create(&s, "b", b"second");
        create(&s, "c", b"third");
        first_end
    };
    let original = std::fs::read(&path).expect("read");
    let header = LOG_MAGIC.len();
    // A flipped bit in the payload, in the crc, in the length of the first
    // record, and in the second record.
    for offset in [
        first_end as usize - 3,
        header + 8,
        header,
        header + 1,
        first_end as usize + 20,
    ] {
        let mut damaged = original.clone();
        damaged[offset] ^= 0x10;
        std::fs::write(&path, &damaged).expect("write");
        match EmbeddedStore::open(&path) {
            Err(e @ StoreError::Corrupt { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&path.display().to_string()), "{msg}");
            }
            other => panic!("damage at {offset}: expected Corrupt, got {other:?}"),
        }
    }
    // Damage in the last record is a torn tail, not corruption.
    let mut damaged = original.clone();
    let last = damaged.len() - 2;
    damaged[last] ^= 0x10;
    std::fs::write(&path, &damaged).expect("write");
    let s = open(&path);
    assert_eq!(s.revision(), 2);
    assert!(s.get("c").expect("get").is_none());
}

#[test]
fn crash_at_every_byte_of_the_last_record() {
    let dir = TempDir::new("crash");
    let path = dir.file("store.log");
    let (before_last, full) = {
        let s = open(&path);
        let lease = s.grant_lease(Duration::from_secs(60)).expect("grant");
        let r = create(&s, "k1", b"one");
        s.update("k1", b"uno", r).expect("update").expect("ok");
        create(&s, "k2", &[7u8; 300]);
        s.delete("k2", None).expect("delete").expect("ok");
        create(&s, "k3", b"three");
        s.revoke_lease(lease).expect("revoke");
        let before_last = s.log_len().expect("on disk");
        create(&s, "last", b"the last record");
        (before_last, std::fs::read(&path).expect("read"))
    };
    let expect_earlier = |s: &EmbeddedStore| {
        assert_eq!(s.get("k1").expect("get").expect("k1").value, b"uno");
        assert_eq!(s.get("k2").expect("get"), None);
        assert_eq!(s.get("k3").expect("get").expect("k3").value, b"three");
    };
    for cut in before_last as usize..full.len() {
        std::fs::write(&path, &full[..cut]).expect("write");
        let s =
            EmbeddedStore::open(&path).unwrap_or_else(|e| panic!("open after a cut at {cut}: {e}"));
        expect_earlier(&s);
        assert_eq!(s.get("last").expect("get"), None, "cut at {cut}");
        assert_eq!(s.revision(), 5, "cut at {cut}");
        // Writing after the recovery appends to a clean log.
        assert_eq!(create(&s, "after", b"x"), 6);
        drop(s);
        let s = open(&path);
        expect_earlier(&s);
        assert_eq!(s.get("after").expect("get").expect("after").mod_revision, 6);
    }
    std::fs::write(&path, &full).expect("write");
    let s = open(&path);
    expect_earlier(&s);
    assert_eq!(s.get("last").expect("get").expect("last").mod_revision, 6);
}

/// The txn the tests below write: an update of `k1`, a delete of `k2`, and
/// creates of `n1` and `n2` (one of them leased to `lease`).
fn commit_txn(s: &EmbeddedStore, lease: Option<u64>) -> u64 {
    let k1 = s.get("k1").expect("get").expect("k1");
    let k2 = s.get("k2").expect("get").expect("k2");
    s.commit(&[
        TxnOp::Update {
            key: "k1",
            value: b"k1 by txn",
            expected: k1.mod_revision,
        },
        TxnOp::Delete {
            key: "k2",
            expected: Some(k2.mod_revision),
        },
        TxnOp::Create {
            key: "n1",
            value: &[9u8; 200],
            lease: None,
        },
        TxnOp::Create {
            key: "n2",
            value: b"new two",
            lease,
        },
    ])
    .expect("commit")
    .expect("no conflict")
}

#[test]
fn txn_survives_reopen_with_one_revision() {
    let dir = TempDir::new("txn-reopen");
    let path = dir.file("store.log");
    let (rev, before) = {
        let s = open(&path);
        create(&s, "k1", b"one");
        create(&s, "k2", b"two");
        let before_len = s.log_len().expect("on disk");
        let fsyncs = s.fsync_count();
        let rev = commit_txn(&s, None);
        assert_eq!(rev, 3);
        assert_eq!(s.revision(), 3);
        assert_eq!(s.fsync_count() - fsyncs, 1, "one commit, one fsync");
        assert!(s.log_len().expect("on disk") > before_len);
        (rev, snapshot(&s))
    };
    let s = open(&path);
    assert_eq!(snapshot(&s), before);
    let n1 = s.get("n1").expect("get").expect("n1");
    assert_eq!((n1.create_revision, n1.mod_revision), (rev, rev));
    let k1 = s.get("k1").expect("get").expect("k1");
    assert_eq!((k1.create_revision, k1.mod_revision), (1, rev));
    assert_eq!(s.get("k2").expect("get"), None);
    assert_eq!(create(&s, "after", b"x"), rev + 1);
    // The same after a compaction rewrote the log as plain puts.
    s.compact().expect("compact");
    let before = snapshot(&s);
    drop(s);
    assert_eq!(snapshot(&open(&path)), before);
}

#[test]
fn txn_with_a_lease_of_a_previous_run_is_dropped_on_reopen() {
    let dir = TempDir::new("txn-lease");
    let path = dir.file("store.log");
    let lease = {
        let s = open(&path);
        create(&s, "k1", b"one");
        create(&s, "k2", b"two");
        let lease = s.grant_lease(Duration::from_secs(60)).expect("grant");
        commit_txn(&s, Some(lease));
        assert_eq!(s.get("n2").expect("get").expect("n2").lease, Some(lease));
        lease
    };
    let s = open(&path);
    assert_eq!(
        s.get("n2").expect("get"),
        None,
        "leased key of the txn kept"
    );
    assert!(s.get("n1").expect("get").is_some());
    assert!(s.grant_lease(Duration::from_secs(1)).expect("grant") > lease);
}

#[test]
fn torn_txn_frame_is_dropped_whole() {
    let dir = TempDir::new("txn-torn");
    let path = dir.file("store.log");
    let (before_txn, full, rev) = {
        let s = open(&path);
        create(&s, "k1", b"one");
        create(&s, "k2", &[7u8; 100]);
        let before_txn = s.log_len().expect("on disk");
        let rev = commit_txn(&s, None);
        (before_txn, std::fs::read(&path).expect("read"), rev)
    };
    assert!(
        full.len() as u64 > before_txn + 300,
        "one frame for the txn"
    );
    let none_of_it = |s: &EmbeddedStore, cut: usize| {
        assert_eq!(s.revision(), rev - 1, "cut at {cut}");
        assert_eq!(
            s.get("k1").expect("get").expect("k1").value,
            b"one",
            "cut at {cut}"
        );
        assert!(s.get("k2").expect("get").is_some(), "cut at {cut}");
        assert_eq!(s.get("n1").expect("get"), None, "cut at {cut}");
        assert_eq!(s.get("n2").expect("get"), None, "cut at {cut}");
    };
    for cut in before_txn as usize..full.len() {
        std::fs::write(&path, &full[..cut]).expect("write");
        let s =
            EmbeddedStore::open(&path).unwrap_or_else(|e| panic!("open after a cut at {cut}: {e}"));
        none_of_it(&s, cut);
        assert_eq!(
            std::fs::metadata(&path).expect("stat").len(),
            before_txn,
            "cut at {cut}: torn frame not truncated"
        );
        drop(s);
        // The recovered log stays recovered.
        none_of_it(&open(&path), cut);
    }
    // A flipped bit anywhere in the frame of the last txn: also none of it.
    for offset in (before_txn as usize..full.len()).step_by(7) {
        let mut damaged = full.clone();
        damaged[offset] ^= 0x04;
        std::fs::write(&path, &damaged).expect("write");
        none_of_it(&open(&path), offset);
    }
    std::fs::write(&path, &full).expect("write");
    let s = open(&path);
    assert_eq!(s.revision(), rev);
    for key in ["k1", "n1", "n2"] {
        assert_eq!(
            s.get(key).expect("get").expect(key).mod_revision,
            rev,
            "{key}"
        );
    }
    assert_eq!(s.get("k2").expect("get"), None);
}

#[test]
fn damaged_txn_frame_before_a_valid_record_is_corrupt() {
    let dir = TempDir::new("txn-corrupt");
    let path = dir.file("store.log");
    let (before_txn, after_txn) = {
        let s = open(&path);
        create(&s, "k1", b"one");
        create(&s, "k2", b"two");
        let before_txn = s.log_len().expect("on disk");
        commit_txn(&s, None);
        let after_txn = s.log_len().expect("on disk");
        create(&s, "later", b"x");
        (before_txn, after_txn)
    };
    let mut damaged = std::fs::read(&path).expect("read");
    damaged[(before_txn + after_txn) as usize / 2] ^= 0x01;
    std::fs::write(&path, &damaged).expect("write");
    assert!(matches!(
        EmbeddedStore::open(&path),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn concurrent_commits_share_fsyncs() {
    let dir = TempDir::new("txn-group");
    let s = open(&dir.file("store.log"));
    let base = s.fsync_count();
    let (threads, commits) = (16, 20);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let s = &s;
            scope.spawn(move || {
                for i in 0..commits {
                    let (a, b) = (format!("t{t}/{i}/a"), format!("t{t}/{i}/b"));
                    let rev = s
                        .commit(&[
                            TxnOp::Create {
                                key: &a,
                                value: b"x",
                                lease: None,
                            },
                            TxnOp::Create {
                                key: &b,
                                value: b"y",
                                lease: None,
                            },
                        ])
                        .expect("commit")
                        .expect("no conflict");
                    let kv = s.get(&b).expect("get").expect("b");
                    assert_eq!(kv.mod_revision, rev);
                }
            });
        }
    });
    let total = (threads * commits) as u64;
    assert_eq!(s.revision(), total, "one revision per commit");
    assert_eq!(s.list("").expect("list").kvs.len() as u64, 2 * total);
    let fsyncs = s.fsync_count() - base;
    assert!(
        fsyncs < total,
        "{fsyncs} fsyncs for {total} concurrent commits: no group commit"
    );
}

#[test]
fn compaction_keeps_data() {
    let dir = TempDir::new("compact");
    let path = dir.file("store.log");
    let opts = EmbeddedOptions {
        compact_min_bytes: 16 << 10,
        ..EmbeddedOptions::default()
    };
    let before = {
        let s = EmbeddedStore::open_with(&path, opts.clone()).expect("open");
        let value = vec![b'v'; 200];
        for k in 0..10 {
            create(&s, &format!("key/{k}"), &value);
        }
        create(&s, "gone", b"x");
        s.delete("gone", None).expect("delete").expect("ok");
        // ~250 bytes per write: 2000 writes make ~500 KiB of log without
        // compaction; the live data is ~2.5 KiB.
        for i in 0..2000 {
            let key = format!("key/{}", i % 10);
            let kv = s.get(&key).expect("get").expect("present");
            let mut v = value.clone();
            v[0] = (i % 256) as u8;
            s.update(&key, &v, kv.mod_revision)
                .expect("update")
                .expect("ok");
        }
        let len = s.log_len().expect("on disk");
        assert!(len < 64 << 10, "log not compacted: {len} bytes");
        snapshot(&s)
    };
    assert_eq!(before.1, 2012);
    let s = EmbeddedStore::open_with(&path, opts).expect("reopen");
    assert_eq!(snapshot(&s), before);
    assert_eq!(create(&s, "new", b"n"), 2013);
    // An explicit compaction, then a reopen.
    s.compact().expect("compact");
    let len = s.log_len().expect("on disk");
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), len);
    drop(s);
    let s = open(&path);
    assert_eq!(s.revision(), 2013);
    assert_eq!(s.list("key/").expect("list").kvs.len(), 10);
    assert!(!dir.path().join("store.log.compact").exists());
}

#[test]
fn second_open_fails_clearly() {
    let dir = TempDir::new("lock");
    let path = dir.file("store.log");
    let s = open(&path);
    create(&s, "a", b"1");
    let expect_locked = || match EmbeddedStore::open(&path) {
        Err(e @ StoreError::Unavailable { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("another process"), "{msg}");
        }
        other => panic!("second open: {other:?}"),
    };
    expect_locked();
    // Still locked after compaction renamed a new file over the log.
    s.compact().expect("compact");
    expect_locked();
    drop(s);
    let s = open(&path);
    assert_eq!(s.revision(), 1);
}

#[test]
fn group_commit_shares_fsyncs() {
    let dir = TempDir::new("group");
    let s = open(&dir.file("store.log"));
    let base = s.fsync_count();
    let (threads, writes) = (16, 20);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let s = &s;
            scope.spawn(move || {
                for i in 0..writes {
                    create(s, &format!("t{t}/{i}"), b"x");
                }
            });
        }
    });
    let fsyncs = s.fsync_count() - base;
    let total = (threads * writes) as u64;
    assert_eq!(s.revision(), total);
    assert!(
        fsyncs < total,
        "{fsyncs} fsyncs for {total} concurrent writes: no group commit"
    );
    // A lone writer needs one fsync per write.
    let before = s.fsync_count();
    create(&s, "single", b"x");
    assert_eq!(s.fsync_count() - before, 1);
}

#[test]
fn dropped_watch_unregisters() {
    let s = EmbeddedStore::in_memory();
    let w1 = s.watch("a/", 0).expect("watch");
    let w2 = s.watch("", 0).expect("watch");
    assert_eq!(s.watcher_count(), 2);
    drop(w1);
    assert_eq!(s.watcher_count(), 1);
    create(&s, "a/x", b"1");
    assert!(matches!(w2.rx.try_recv(), Ok(WatchMessage::Event(_))));
    drop(w2);
    assert_eq!(s.watcher_count(), 0);
    // A watch whose receiver is gone but guard is alive is pruned on the
    // next event.
    let w3 = s.watch("", 0).expect("watch");
    let guard = w3.guard;
    drop(w3.rx);
    create(&s, "a/y", b"2");
    assert_eq!(s.watcher_count(), 0);
    drop(guard);
}

#[test]
fn store_drop_closes_watches() {
    let s = EmbeddedStore::in_memory();
    let w = s.watch("", 0).expect("watch");
    drop(s);
    assert!(matches!(
        w.rx.recv_timeout(Duration::from_secs(1)),
        Ok(WatchMessage::Closed { .. })
    ));
    drop(w);
}

#[test]
fn watch_older_than_history_is_compacted() {
    let s = EmbeddedStore::in_memory_with(EmbeddedOptions {
        history_limit: 5,
        ..EmbeddedOptions::default()
    });
    for i in 0..10 {
        create(&s, &format!("k{i}"), b"x");
    }
    let w = s.watch("", 2).expect("watch");
    assert_eq!(
        w.rx.try_recv(),
        Ok(WatchMessage::Compacted {
            compact_revision: 5
        })
    );
    let w = s.watch("", 5).expect("watch");
    let revs: Vec<u64> = (0..5)
        .map(|_| match w.rx.try_recv() {
            Ok(WatchMessage::Event(e)) => {
                assert_eq!(e.kind, EventKind::Put);
                e.kv.mod_revision
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(revs, [6, 7, 8, 9, 10]);
    // Watching from the future is fine.
    let w = s.watch("", 12).expect("watch");
    create(&s, "k10", b"x");
    create(&s, "k11", b"x");
    create(&s, "k12", b"x");
    match w.rx.try_recv() {
        Ok(WatchMessage::Event(e)) => assert_eq!(e.kv.mod_revision, 13),
        other => panic!("{other:?}"),
    }
}

#[test]
fn zero_ttl_is_invalid() {
    let s = EmbeddedStore::in_memory();
    assert!(matches!(
        s.grant_lease(Duration::ZERO),
        Err(StoreError::Invalid { .. })
    ));
}

#[test]
fn run_all_in_memory() {
    weft_store::conformance::run_all(EmbeddedStore::in_memory);
}

#[test]
fn concurrent_writes_during_compaction() {
    let dir = TempDir::new("compact-race");
    let path = dir.file("store.log");
    let opts = EmbeddedOptions {
        compact_min_bytes: 8 << 10,
        ..EmbeddedOptions::default()
    };
    let s = EmbeddedStore::open_with(&path, opts.clone()).expect("open");
    let w = s.watch("", 0).expect("watch");
    let (threads, per) = (8, 150);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let s = &s;
            scope.spawn(move || {
                let key = format!("k/{t}");
                let mut rev = create(s, &key, &[b'0'; 100]);
                for i in 1..per {
                    let v = vec![b'0' + (i % 10) as u8; 100];
                    rev = s.update(&key, &v, rev).expect("update").expect("ok");
                }
            });
        }
    });
    let total = (threads * per) as u64;
    assert_eq!(s.revision(), total);
    let mut last = 0;
    for _ in 0..total {
        match w.rx.recv_timeout(Duration::from_secs(5)) {
            Ok(WatchMessage::Event(e)) => {
                assert_eq!(e.kv.mod_revision, last + 1, "events out of order");
                last = e.kv.mod_revision;
            }
            other => panic!("{other:?}"),
        }
    }
    let len = s.log_len().expect("on disk");
    assert!(len < 64 << 10, "log not compacted: {len} bytes");
    let before = snapshot(&s);
    drop(w);
    drop(s);
    let s = EmbeddedStore::open_with(&path, opts).expect("reopen");
    assert_eq!(snapshot(&s), before);
    assert_eq!(s.revision(), total);
}

/// The log names every pod and its addresses: only its owner may read it,
/// also after a compaction replaced it.
#[test]
fn the_log_is_private_and_stays_so_after_compaction() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("private");
    let path = dir.path().join("store.db");
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    let s = open(&path);
    assert_eq!(mode(&path), 0o600);
    s.create("k", b"v", None).expect("create").expect("created");
    s.compact().expect("compact");
    assert_eq!(mode(&path), 0o600, "after compaction");
}
