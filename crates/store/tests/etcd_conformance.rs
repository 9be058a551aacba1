//! The etcd backend against real etcd processes: the whole conformance suite
//! on a single member and on a 3-member cluster, then member loss, total
//! outage and recovery, a watch across a leader kill, and compaction.

mod etcd_harness;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_harness::Cluster;
use weft_store::conformance::{self, expect_quiet, next_event, unique_prefix};
use weft_store::etcd::{EtcdOptions, EtcdStore};
use weft_store::{EventKind, Store, StoreError, WatchMessage};

/// Checks run at once against one cluster (they use disjoint prefixes).
const PARALLEL: usize = 4;

/// Checks that assert the store-wide revision does not move, so they run
/// alone, after the others.
const ALONE: &[&str] = &["txn_all_or_nothing", "txn_put"];

fn store(endpoints: &[String]) -> EtcdStore {
    EtcdStore::connect(endpoints, EtcdOptions::default()).expect("connect to etcd")
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// Every check of `conformance::checks()` against `cluster`, a few at a
/// time; reports every failing check by name.
fn run_suite(cluster: &Cluster) {
    type F<'a> = Box<dyn Fn() -> EtcdStore + Sync + 'a>;
    let endpoints = cluster.endpoints();
    let fresh: F<'_> = Box::new(|| store(&endpoints));
    let (alone, together): (Vec<_>, Vec<_>) = conformance::checks::<EtcdStore, F<'_>>()
        .into_iter()
        .partition(|(name, _)| ALONE.contains(name));
    let failures = Mutex::new(Vec::new());
    let started = Instant::now();
    for (batch, threads) in [(together, PARALLEL), (alone, 1)] {
        run_batch(batch, threads, &fresh, &failures);
    }
    let failures = failures.into_inner().unwrap();
    eprintln!("suite: {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "failed checks:\n{}",
        failures.join("\n")
    );
}

#[allow(clippy::type_complexity)]
fn run_batch<F: Fn() -> EtcdStore + Sync>(
    checks: Vec<(&'static str, fn(&F))>,
    threads: usize,
    fresh: &F,
    failures: &Mutex<Vec<String>>,
) {
    let queue = Mutex::new(checks.into_iter());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let next = queue.lock().unwrap().next();
                let Some((name, check)) = next else { break };
                let t = Instant::now();
                let r = catch_unwind(AssertUnwindSafe(|| check(fresh)));
                eprintln!(
                    "{name}: {:?} {}",
                    t.elapsed(),
                    if r.is_ok() { "ok" } else { "FAILED" }
                );
                if let Err(p) = r {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{name}: {}", panic_message(&*p)));
                }
            });
        }
    });
}

#[test]
fn conformance_single_member() {
    let cluster = Cluster::start("single", 1);
    run_suite(&cluster);
}

#[test]
fn conformance_three_members() {
    let cluster = Cluster::start("three", 3);
    run_suite(&cluster);
}

fn put(s: &EtcdStore, key: &str, value: &[u8]) -> u64 {
    s.create(key, value, None)
        .expect("create")
        .expect("no conflict")
}

/// With one member of three SIGKILLed, reads and writes go on; with all
/// three gone, an operation is Unavailable within 5 s; restarted, the
/// cluster serves again with the data intact.
#[test]
fn member_loss_outage_and_recovery() {
    let mut cluster = Cluster::start("outage", 3);
    let s = store(&cluster.endpoints());
    let p = unique_prefix("outage");
    let r1 = put(&s, &format!("{p}before"), b"1");
    // Kill the member the store talks to first (member 0 worked last).
    cluster.kill(0);
    let r2 = put(&s, &format!("{p}one-down"), b"2");
    assert!(r2 > r1);
    assert_eq!(
        s.get(&format!("{p}before")).expect("get").unwrap().value,
        b"1"
    );
    assert_eq!(s.list(&p).expect("list").kvs.len(), 2);
    // All down: bounded failure.
    cluster.kill(1);
    cluster.kill(2);
    let t = Instant::now();
    match s.get(&format!("{p}before")) {
        Err(StoreError::Unavailable { reason }) => {
            assert!(reason.contains(&cluster.endpoint(2)), "{reason}");
        }
        other => panic!("get with etcd down: {other:?}"),
    }
    let took = t.elapsed();
    assert!(took <= Duration::from_secs(5), "Unavailable after {took:?}");
    let t = Instant::now();
    assert!(matches!(
        s.create(&format!("{p}down"), b"x", None),
        Err(StoreError::Unavailable { .. })
    ));
    assert!(t.elapsed() <= Duration::from_secs(5));
    // Back up: the same store serves again.
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.wait_ready(Duration::from_secs(15));
    let deadline = Instant::now() + Duration::from_secs(15);
    let r3 = loop {
        match s.create(&format!("{p}after"), b"3", None) {
            Ok(Ok(r)) => break r,
            other => {
                assert!(Instant::now() < deadline, "no recovery: {other:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert!(r3 > r2);
    let keys: Vec<String> = s
        .list(&p)
        .expect("list")
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(
        keys,
        [
            format!("{p}after"),
            format!("{p}before"),
            format!("{p}one-down")
        ]
    );
}

/// A watch connected to the leader survives the leader's SIGKILL: every
/// event written after the kill arrives, none twice.
#[test]
fn watch_survives_leader_kill() {
    let mut cluster = Cluster::start("leader", 3);
    let leader = cluster.leader();
    // The leader first, so the watch stream is held by the leader.
    let mut eps = vec![cluster.endpoint(leader)];
    eps.extend((0..3).filter(|&i| i != leader).map(|i| cluster.endpoint(i)));
    let s = store(&eps);
    let p = unique_prefix("leader_kill");
    let start = s.list(&p).expect("list").revision;
    let w = s.watch(&p, start).expect("watch");
    let mut revs = Vec::new();
    for i in 0..5 {
        revs.push(put(&s, &format!("{p}k{i}"), b"before"));
    }
    for (i, r) in revs.iter().enumerate() {
        let e = next_event(&w);
        assert_eq!((e.kv.key, e.kv.mod_revision), (format!("{p}k{i}"), *r));
    }
    cluster.kill(leader);
    let mut after = Vec::new();
    for i in 5..10 {
        after.push(put(&s, &format!("{p}k{i}"), b"after"));
    }
    let rd = s
        .delete(&format!("{p}k0"), None)
        .expect("delete")
        .expect("no conflict")
        .expect("deleted");
    for (i, r) in after.iter().enumerate() {
        let e = next_event(&w);
        assert_eq!(e.kind, EventKind::Put);
        assert_eq!(
            (e.kv.key, e.kv.mod_revision),
            (format!("{p}k{}", i + 5), *r)
        );
    }
    let e = next_event(&w);
    assert_eq!((e.kind, e.kv.mod_revision), (EventKind::Delete, rd));
    expect_quiet(&w);
}

/// Compacting past a watch's start revision ends it with Compacted; a watch
/// from after the compaction still works.
#[test]
fn compaction_ends_old_watch() {
    let cluster = Cluster::start("compact", 1);
    let s = store(&cluster.endpoints());
    let p = unique_prefix("compact");
    let r1 = put(&s, &format!("{p}a"), b"1");
    let r2 = s
        .update(&format!("{p}a"), b"2", r1)
        .expect("update")
        .expect("no conflict");
    let r3 = put(&s, &format!("{p}b"), b"3");
    s.compact(r3).expect("compact");
    let w = s.watch(&p, r1 - 1).expect("watch");
    match w.rx.recv_timeout(Duration::from_secs(5)) {
        Ok(WatchMessage::Compacted { compact_revision }) => assert_eq!(compact_revision, r3),
        other => panic!("watch from before the compaction: {other:?}"),
    }
    let w = s.watch(&p, r3).expect("watch");
    let r4 = s
        .update(&format!("{p}a"), b"4", r2)
        .expect("update")
        .expect("no conflict");
    let e = next_event(&w);
    assert_eq!((e.kv.value, e.kv.mod_revision), (b"4".to_vec(), r4));
}

/// A watch whose cluster stays unreachable longer than
/// `watch_reconnect_for` ends with Closed.
#[test]
fn watch_gives_up_with_closed() {
    let mut cluster = Cluster::start("closed", 1);
    let opts = EtcdOptions {
        deadline: Duration::from_millis(500),
        watch_reconnect_for: Duration::from_secs(1),
        ..EtcdOptions::default()
    };
    let s = EtcdStore::connect(&cluster.endpoints(), opts).expect("connect");
    let p = unique_prefix("closed");
    let w = s.watch(&p, 0).expect("watch");
    cluster.kill(0);
    let t = Instant::now();
    match w.rx.recv_timeout(Duration::from_secs(5)) {
        Ok(WatchMessage::Closed { reason }) => {
            assert!(reason.contains(&cluster.endpoint(0)), "{reason}")
        }
        other => panic!("watch of a dead cluster: {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

/// Endpoints with nothing listening: connect is Unavailable, naming them,
/// within the deadline.
#[test]
fn nothing_listening_is_unavailable() {
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let eps: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let t = Instant::now();
    match EtcdStore::connect(&eps, EtcdOptions::default()) {
        Err(StoreError::Unavailable { reason }) => {
            assert!(
                reason.contains(&eps[0]) && reason.contains(&eps[1]),
                "{reason}"
            );
        }
        Ok(_) => panic!("connected to nothing"),
        Err(e) => panic!("unexpected {e}"),
    }
    assert!(t.elapsed() <= Duration::from_secs(5), "{:?}", t.elapsed());
}
