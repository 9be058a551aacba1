//! Dropping an etcd watch ends its thread promptly. Its own test binary, so
//! no other test's watches run threads of the same name.

mod etcd_harness;

use std::time::{Duration, Instant};

use etcd_harness::Cluster;
use weft_store::etcd::{EtcdOptions, EtcdStore};
use weft_store::Store;

fn watch_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == "etcd-watch")
        .count()
}

fn settles_at(expected: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if watch_threads() == expected {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn watch_thread_ends_on_drop() {
    let mut cluster = Cluster::start("watch-thread", 1);
    let s = EtcdStore::connect(&cluster.endpoints(), EtcdOptions::default()).expect("connect");
    assert_eq!(watch_threads(), 0);
    let w1 = s.watch("watch-thread/", 0).expect("watch");
    let w2 = s.watch("watch-thread/", 0).expect("watch");
    assert!(settles_at(2, Duration::from_secs(2)));
    // A connected watch: the thread ends at once (its socket is shut down).
    drop(w1);
    assert!(
        settles_at(1, Duration::from_secs(1)),
        "watch thread outlived its watch"
    );
    // A watch whose cluster is gone, retrying: it ends within a poll.
    cluster.kill(0);
    std::thread::sleep(Duration::from_millis(300));
    drop(w2);
    assert!(
        settles_at(0, Duration::from_secs(1)),
        "retrying watch thread outlived its watch"
    );
}
