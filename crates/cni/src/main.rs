//! weft-cni: the CNI plugin binary. It is deliberately thin: it validates
//! the CNI environment and network config, forwards the verb to weftd over
//! its unix socket (one blocking HTTP/1.1 request, no async runtime), and
//! prints the answer in the config's CNI version.
//!
//! Contract with the runtime:
//!
//! * stdout carries exactly one thing: the ADD result, the VERSION reply,
//!   or a CNI error object (exit 1). Nothing else is ever written there.
//! * logs go only to the config's `logFile`, when set.
//! * a panic still yields a code-199 CNI error on stdout.
//!
//! Per verb: VERSION is answered locally. ADD, DEL, CHECK, GC and STATUS go
//! to weftd (`weft_api::paths::CNI_*`). When weftd cannot be reached, ADD,
//! CHECK and GC fail with code 11 (try again later), STATUS with code 50
//! (not available), and DEL is written to the spool directory for weftd to
//! replay at start (see [`spool`]) and reported as done.

// Every CNI call execs this binary, so its start-up is latency the runtime
// waits on. `no_main` skips std's runtime start (which, among other things,
// reads /proc/self/maps to place a guard page under the main thread's stack):
// ~0.1 ms of a ~1 ms exec. std still works in full: glibc hands std the
// arguments and environment, panics unwind to `run::main_entry`'s catch.
// The one cost: SIGPIPE keeps its default action, so a runtime that closes
// our stdout early ends us instead of failing our write, which it would
// ignore either way.
#![cfg_attr(not(test), no_main)]

mod logging;
mod run;
mod spool;

#[cfg(not(test))]
#[expect(
    unsafe_code,
    reason = "exporting the C `main` symbol is how no_main binaries start"
)]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: i32, _argv: *const *const u8) -> i32 {
    run::main_entry()
}

/// In unit-test builds the harness brings its own entry point and replaces
/// this one; it keeps the shim's code reachable there as in the real binary.
#[cfg(test)]
fn main() {
    std::process::exit(run::main_entry());
}
