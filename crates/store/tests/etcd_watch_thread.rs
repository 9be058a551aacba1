//! Dropping an etcd watch ends its task promptly (each watch is a task on
//! the store's runtime), whether its stream is connected or it is retrying
//! a cluster that went away.

mod etcd_harness;

use std::time::{Duration, Instant};

use etcd_harness::Cluster;
use weft_store::etcd::{EtcdOptions, EtcdStore};
use weft_store::Store;

fn settles_at(s: &EtcdStore, expected: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if s.live_watches() == expected {
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
    assert_eq!(s.live_watches(), 0);
    let w1 = s.watch("watch-thread/", 0).expect("watch");
    let w2 = s.watch("watch-thread/", 0).expect("watch");
    assert!(settles_at(&s, 2, Duration::from_secs(2)));
    // A connected watch: its task ends at once (its stream goes with it).
    drop(w1);
    assert!(
        settles_at(&s, 1, Duration::from_secs(1)),
        "watch task outlived its watch"
    );
    // A watch whose cluster is gone, retrying: it ends within a poll.
    cluster.kill(0);
    std::thread::sleep(Duration::from_millis(300));
    drop(w2);
    assert!(
        settles_at(&s, 0, Duration::from_secs(1)),
        "retrying watch task outlived its watch"
    );
}
