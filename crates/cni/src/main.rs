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

mod logging;
mod run;
mod spool;

fn main() {
    std::process::exit(run::main_entry());
}
