//! Many threads at once: compare-and-swap counters, racing creates, and
//! transactions moving tokens between two keys.

use super::*;

/// The number of increments per thread in [`concurrent_cas_increments`].
pub const INCREMENTS_PER_THREAD: u64 = 25;

/// 8 threads each add 1 to one counter [`INCREMENTS_PER_THREAD`] times by
/// read + compare-and-swap with retry: no update is lost.
pub fn concurrent_cas_increments<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let key = format!("{}counter", unique_prefix("concurrent_cas_increments"));
    created(&s, &key, b"0");
    let threads = 8;
    let conflicts = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for _ in 0..INCREMENTS_PER_THREAD {
                    let mut kv = get_some(&s, &key);
                    loop {
                        // Widen the read-to-CAS window so threads interleave
                        // even on a fast backend.
                        std::thread::yield_now();
                        let n: u64 = std::str::from_utf8(&kv.value)
                            .expect("utf-8")
                            .parse()
                            .expect("number");
                        let next = (n + 1).to_string();
                        match must("update", s.update(&key, next.as_bytes(), kv.mod_revision)) {
                            Ok(_) => break,
                            Err(Conflict { current }) => {
                                conflicts.fetch_add(1, Ordering::Relaxed);
                                kv = current.expect("counter vanished");
                            }
                        }
                    }
                }
            });
        }
    });
    let total = threads * INCREMENTS_PER_THREAD;
    assert_eq!(
        get_some(&s, &key).value,
        total.to_string().as_bytes(),
        "lost updates ({} conflicts retried)",
        conflicts.load(Ordering::Relaxed)
    );
}

/// 8 threads create the same key at once: exactly one wins, the others get a
/// conflict carrying the winner's kv.
pub fn concurrent_create<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("concurrent_create");
    for round in 0..5 {
        let key = format!("{p}k{round}");
        let threads = 8;
        let barrier = Barrier::new(threads);
        let results = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for t in 0..threads {
                let (s, key, barrier, results) = (&s, &key, &barrier, &results);
                scope.spawn(move || {
                    barrier.wait();
                    let r = must("create", s.create(key, t.to_string().as_bytes(), None));
                    results
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((t, r));
                });
            }
        });
        let results = results
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let winners: Vec<_> = results.iter().filter(|(_, r)| r.is_ok()).collect();
        assert_eq!(winners.len(), 1, "winners: {winners:?}");
        let (winner, rev) = (winners[0].0, *winners[0].1.as_ref().expect("ok"));
        let kv = get_some(&s, &key);
        assert_eq!(kv.value, winner.to_string().as_bytes());
        assert_eq!(kv.mod_revision, rev);
        for (_, r) in &results {
            if let Err(c) = r {
                assert_eq!(c.current.as_ref(), Some(&kv));
            }
        }
    }
}

/// The number of moves per thread in [`concurrent_txn_transfers`].
pub const TRANSFERS_PER_THREAD: u64 = 25;

fn counter(kv: &KeyValue) -> u64 {
    std::str::from_utf8(&kv.value)
        .expect("utf-8")
        .parse()
        .expect("number")
}

/// 8 threads each move [`TRANSFERS_PER_THREAD`] tokens from one key to
/// another, both keys in one compare-and-swap transaction retried with the
/// conflict's current value: no token is lost or duplicated, and a reader
/// listing both keys meanwhile always sees the full count.
pub fn concurrent_txn_transfers<S: Store, F: Fn() -> S>(fresh: &F) {
    let s = fresh();
    let p = unique_prefix("concurrent_txn_transfers");
    let (from, to) = (format!("{p}from"), format!("{p}to"));
    let threads = 8;
    let total = threads * TRANSFERS_PER_THREAD;
    let total_s = total.to_string();
    committed(
        &s,
        &[
            TxnOp::Create {
                key: &from,
                value: total_s.as_bytes(),
                lease: None,
            },
            TxnOp::Create {
                key: &to,
                value: b"0",
                lease: None,
            },
        ],
    );
    let conflicts = AtomicU64::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let listings = AtomicU64::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| loop {
            // check first, then look at `done`: at least one listing always
            // runs, however the scheduler orders the threads
            let finished = done.load(Ordering::Acquire);
            {
                let l = must("list", s.list(&p));
                assert_eq!(l.kvs.len(), 2, "{l:?}");
                let sum: u64 = l.kvs.iter().map(counter).sum();
                assert_eq!(sum, total, "a listing saw half a transaction: {l:?}");
                assert_eq!(
                    l.kvs[0].mod_revision, l.kvs[1].mod_revision,
                    "both keys are always written together: {l:?}"
                );
                listings.fetch_add(1, Ordering::Relaxed);
                std::thread::yield_now();
            }
            if finished {
                break;
            }
        });
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    for _ in 0..TRANSFERS_PER_THREAD {
                        let mut kvs = [get_some(&s, &from), get_some(&s, &to)];
                        loop {
                            std::thread::yield_now();
                            let next =
                                [counter(&kvs[0]) - 1, counter(&kvs[1]) + 1].map(|n| n.to_string());
                            let ops = [0, 1].map(|i| TxnOp::Update {
                                key: &kvs[i].key,
                                value: next[i].as_bytes(),
                                expected: kvs[i].mod_revision,
                            });
                            match must("commit", s.commit(&ops)) {
                                Ok(_) => break,
                                Err(TxnConflict { index, current }) => {
                                    conflicts.fetch_add(1, Ordering::Relaxed);
                                    kvs[index] = current.expect("counter vanished");
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            if let Err(panic) = w.join() {
                done.store(true, Ordering::Release);
                std::panic::resume_unwind(panic);
            }
        }
        done.store(true, Ordering::Release);
    });
    let (f, t) = (get_some(&s, &from), get_some(&s, &to));
    assert_eq!(
        (counter(&f), counter(&t)),
        (0, total),
        "lost or duplicated transfers ({} conflicts retried)",
        conflicts.load(Ordering::Relaxed)
    );
    assert_eq!(f.mod_revision, t.mod_revision);
    assert!(listings.load(Ordering::Relaxed) > 0);
}
