//! The lease reaper thread ends when its store is dropped. Its own test binary,
//! so no other test's stores run threads of the same name.

use std::time::{Duration, Instant};

use weft_store::embedded::{EmbeddedOptions, EmbeddedStore};
use weft_store::Store;

const TICK: Duration = Duration::from_secs(30);

fn reaper_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end().starts_with("weft-store-leas"))
        .count()
}

/// Waits for the count to settle: a new thread names itself only after
/// `spawn` returns, and an ended one leaves `/proc` a moment after join (a
/// moment that, on a loaded 2-CPU machine, can be long: 10 s is a safety net).
fn settles_at(expected: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
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
    // a reaper tick far longer than any scheduling delay: a drop that
    // waited for one would take 30 s, one that wakes the reaper takes a
    // thread switch (under 500 ms was the bound with the 100 ms default
    // tick, which a loaded machine's scheduler alone could miss)
    let s = EmbeddedStore::in_memory_with(EmbeddedOptions {
        reap_interval: TICK,
        ..EmbeddedOptions::default()
    });
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
        started.elapsed() < TICK / 3,
        "drop waited for a reaper tick: {:?}",
        started.elapsed()
    );
    assert!(settles_at(0), "reaper thread outlived its store");
}
