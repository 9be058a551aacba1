//! Waiting for the datastore at start.
//!
//! A node that boots while etcd is away (a cluster-wide restart, a network
//! partition) waits for it instead of exiting: until weftd serves, weft-cni
//! answers ADD with CNI error 11 (try again later) and spools DEL, exactly
//! as while weftd is down, and systemd need not restart-loop it.

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

#[cfg(test)]
mod tests {
    use super::*;

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
