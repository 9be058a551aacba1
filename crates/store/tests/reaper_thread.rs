//! The lease reaper thread ends when its store is dropped. Its own test binary,
//! so no other test's stores run threads of the same name.

use std::time::{Duration, Instant};

use weft_store::embedded::EmbeddedStore;
use weft_store::Store;

fn reaper_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end().starts_with("weft-store-leas"))
        .count()
}

/// Waits (briefly) for the count to settle: a new thread names itself only
/// after `spawn` returns, and an ended one leaves `/proc` a moment after join.
fn settles_at(expected: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if reaper_threads() == expected {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn reaper_thread_ends_with_the_store() {
    assert_eq!(reaper_threads(), 0);
    let s = EmbeddedStore::in_memory();
    assert_eq!(reaper_threads(), 0, "no thread before the first lease");
    let lease = s.grant_lease(Duration::from_secs(10)).expect("grant");
    s.keep_alive(lease).expect("keep alive");
    assert!(settles_at(1));
    s.grant_lease(Duration::from_secs(10)).expect("grant");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(reaper_threads(), 1, "one reaper per store");
    let started = Instant::now();
    drop(s);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "drop waited for a reaper tick"
    );
    assert!(settles_at(0), "reaper thread outlived its store");
}
