//! Test-only fault points: named steps at which weftd can be made to stop,
//! so a test can `kill -9` it at exactly that point (a crash half-way
//! through a DEL, say) and check what the next start makes of it.
//!
//! Inert unless weftd was started with `--fault-point NAME` (a hidden flag):
//! then the thread that reaches the point named logs
//! `fault point NAME reached` and blocks forever while holding whatever it
//! holds (the container's lock, among others); the test waits for that line
//! and sends SIGKILL. Points: `del-marked` (the endpoint is marked deleting,
//! nothing given up yet), `del-released` (its addresses are released, the
//! interface not yet torn down, the record not yet forgotten).

use std::sync::OnceLock;

static ARMED: OnceLock<String> = OnceLock::new();

/// Arms the fault point `name` (once, at start).
pub fn arm(name: &str) {
    if ARMED.set(name.to_string()).is_ok() {
        tracing::warn!(
            point = name,
            "fault point armed (--fault-point is for tests only): weftd stops when it gets there"
        );
    }
}

/// A step of weftd that a test may stop it at; a no-op unless armed.
pub fn point(name: &str) {
    if ARMED.get().is_some_and(|armed| armed == name) {
        tracing::error!(
            point = name,
            "fault point {name} reached; this thread stops here until weftd is killed"
        );
        loop {
            std::thread::park();
        }
    }
}
