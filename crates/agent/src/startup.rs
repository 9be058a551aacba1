//! Start-up chores: waiting for the datastore, and the state directory's
//! permissions.
//!
//! A node that boots while etcd is away (a cluster-wide restart, a network
//! partition) waits for it instead of exiting: until weftd serves, weft-cni
//! answers ADD with CNI error 11 (try again later) and spools DEL, exactly
//! as while weftd is down, and systemd need not restart-loop it.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

/// The longest wait between two attempts.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// Runs `attempt` until it succeeds or fails for good: an error for which
/// `temporary` is true is logged (saying what weftd waits for) and retried
/// after `first_wait`, doubling up to [`MAX_WAIT`]; any other error returns.
pub fn until_available<T, E: std::fmt::Display>(
    what: &str,
    first_wait: Duration,
    temporary: impl Fn(&E) -> bool,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let mut wait = first_wait;
    let mut failures = 0u32;
    loop {
        match attempt() {
            Ok(v) => {
                if failures > 0 {
                    tracing::info!(what, failures, "datastore reachable again; going on");
                }
                return Ok(v);
            }
            Err(e) if temporary(&e) => {
                failures += 1;
                tracing::warn!(what, error = %e, retry_in_ms = wait.as_millis() as u64,
                    "datastore unavailable; weftd waits for it (weft-cni answers ADD with 11 and spools DEL meanwhile)");
                std::thread::sleep(wait);
                wait = (wait * 2).min(MAX_WAIT);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Mode of weftd's state and spool directories: the endpoint and IPAM
/// stores name every pod and its addresses, spooled DELs every container.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in them.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and its parents) if missing, and makes it [`DIR_MODE`],
/// saying so in the log when it was more open.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    tighten(dir, DIR_MODE)
}

/// Makes the state directory, the spool directory (when it exists) and
/// every file directly in them private ([`DIR_MODE`], [`FILE_MODE`]),
/// logging each fix. Goes on past errors, logging them: a file weftd cannot
/// chmod is no reason to keep the node's pods unserved.
pub fn private_files(state_dir: &Path, spool_dir: &Path) {
    for dir in [state_dir, spool_dir] {
        if !dir.is_dir() {
            continue;
        }
        if let Err(e) = tighten(dir, DIR_MODE) {
            tracing::error!(path = %dir.display(), error = %e, "cannot make the directory private (chmod 0700 it)");
        }
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // never follow a link out of the directory; leave subdirectories
            // (the spool may live inside the state directory) to their turn
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            if is_file {
                if let Err(e) = tighten(&path, FILE_MODE) {
                    tracing::error!(path = %path.display(), error = %e, "cannot make the file private (chmod 0600 it)");
                }
            }
        }
    }
}

/// Sets `path`'s permission bits to `mode` if they differ, with a log line.
fn tighten(path: &Path, mode: u32) -> io::Result<()> {
    let was = fs::metadata(path)?.permissions().mode() & 0o7777;
    if was != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        tracing::warn!(path = %path.display(), was = %format!("{was:04o}"), now = %format!("{mode:04o}"),
            "weft state was readable by others; made it private");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_and_spool_are_made_private() {
        let base = std::env::temp_dir().join(format!("weft-startup-perm-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let state = base.join("state");
        let spool = state.join("spool");
        fs::create_dir_all(&spool).unwrap();
        for d in [&base, &state, &spool] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        for f in [
            state.join("endpoints.db"),
            state.join("ipam.db"),
            spool.join("c-eth0.json"),
        ] {
            fs::write(&f, b"x").unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        }
        private_dir(&state).unwrap();
        private_files(&state, &spool);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&spool), 0o700);
        assert_eq!(mode(&state.join("endpoints.db")), 0o600);
        assert_eq!(mode(&state.join("ipam.db")), 0o600);
        assert_eq!(mode(&spool.join("c-eth0.json")), 0o600);
        assert_eq!(mode(&base), 0o755, "parents are not weft's to change");
        // a fresh directory is made private from the start
        let fresh = base.join("fresh/state");
        private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn retries_temporary_errors_and_returns_others() {
        let mut calls = 0;
        let r: Result<u32, String> = until_available(
            "test",
            Duration::from_millis(1),
            |e: &String| e == "away",
            || {
                calls += 1;
                if calls < 4 {
                    Err("away".to_string())
                } else {
                    Ok(calls)
                }
            },
        );
        assert_eq!(r, Ok(4));

        let mut calls = 0;
        let r: Result<u32, String> = until_available(
            "test",
            Duration::from_millis(1),
            |e: &String| e == "away",
            || {
                calls += 1;
                Err("broken".to_string())
            },
        );
        assert_eq!(r, Err("broken".to_string()));
        assert_eq!(calls, 1, "a lasting error is not retried");
    }
}
