//! Ctrl-C or SIGTERM in the middle of a benchmark: remove what the run made
//! (labs, namespaces and the processes in them) before exiting. Without this
//! the default action ends the process before any `Drop` guard runs, and a
//! bench stopped by hand left its weftds, etcds and iperf3s running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

static PREFIXES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static INSTALLED: OnceLock<()> = OnceLock::new();
static CLEANING: AtomicBool = AtomicBool::new(false);

/// Never returns once an interrupt's clean-up has begun: that thread exits
/// the process when done, and the run's own errors meanwhile are only the
/// clean-up pulling things from under it.
pub fn hold_while_cleaning() {
    while CLEANING.load(Ordering::SeqCst) {
        std::thread::park();
    }
}

/// `name`, registered so that everything named `name-…` is removed if this
/// process is interrupted: how a benchmark names its labs.
pub fn removed_on_interrupt(name: String) -> anyhow::Result<String> {
    remove_on_interrupt(&name)?;
    Ok(name)
}

/// Removes everything named `prefix-…` if this process is interrupted.
/// Installs the handler on first use; a second signal during the clean-up
/// exits at once.
pub fn remove_on_interrupt(prefix: &str) -> anyhow::Result<()> {
    lock().push(prefix.to_string());
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let _ = INSTALLED.set(());
    std::thread::spawn(move || {
        let mut cleaning = false;
        for signal in signals.forever() {
            if cleaning {
                // a second Ctrl-C means "now": stop waiting for the clean-up
                std::process::exit(128 + signal);
            }
            cleaning = true;
            CLEANING.store(true, Ordering::SeqCst);
            std::thread::spawn(move || {
                let prefixes = lock().clone();
                eprintln!(
                    "weft: interrupted; removing what this run made ({}-*); Ctrl-C again to quit at once",
                    prefixes.join("-*, ")
                );
                for prefix in &prefixes {
                    for err in weft_lab::sweep::remove_all_with_prefix(prefix) {
                        eprintln!("weft: {err}");
                    }
                }
                std::process::exit(128 + signal);
            });
        }
    });
    Ok(())
}

fn lock() -> std::sync::MutexGuard<'static, Vec<String>> {
    PREFIXES.lock().unwrap_or_else(|e| e.into_inner())
}
