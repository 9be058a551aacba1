//! The probe of `weft bench policy --scale`: from inside the client pod's
//! network namespace, a new TCP connection to the server every ~1 ms, each
//! outcome kept with its start time, until stopped.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// A connect this slow counts as refused: a dropped SYN is never answered,
/// while an allowed one is answered in well under a millisecond.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(3);
/// The probes' cadence when they succeed.
pub const PROBE_EVERY: Duration = Duration::from_millis(1);
/// Probes in a row with the new verdict that make a flip (one slow
/// allowed connect under load is not a flip to denied).
pub const IN_A_ROW: usize = 3;
/// At most this many samples are kept (about ten minutes of probing).
const MAX_SAMPLES: usize = 600_000;

/// (start, µs since the Unix epoch; connected)
pub type Sample = (u64, bool);

pub struct Prober {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    pub fn start(netns: PathBuf, server: SocketAddr) -> anyhow::Result<Prober> {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (st, sa) = (stop.clone(), samples.clone());
        let thread = std::thread::Builder::new()
            .name("scale-probe".into())
            .spawn(move || {
                let res = weft_datapath::netns::run_in(&netns, || probe_loop(&st, &sa, server));
                if let Err(e) = res {
                    eprintln!("the probe could not enter {}: {e}", netns.display());
                }
            })?;
        Ok(Prober {
            stop,
            samples,
            thread: Some(thread),
        })
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The latest probe connected.
    pub fn last_ok(&self) -> bool {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last()
            .is_some_and(|s| s.1)
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.halt();
    }
}

fn probe_loop(stop: &AtomicBool, samples: &Mutex<Vec<Sample>>, server: SocketAddr) {
    while !stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let ok = TcpStream::connect_timeout(&server, PROBE_TIMEOUT).is_ok();
        {
            let mut v = samples.lock().unwrap_or_else(|p| p.into_inner());
            if v.len() >= MAX_SAMPLES {
                return;
            }
            v.push((at, ok));
        }
        if let Some(rest) = PROBE_EVERY.checked_sub(began.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

/// When the verdict became `want` after `sent`: the start of the first of
/// [`IN_A_ROW`] probes in a row, all started after `sent`, with it.
pub fn flip_after(samples: &[Sample], sent: u64, want: bool) -> Option<u64> {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.0 >= sent).collect();
    after
        .windows(IN_A_ROW)
        .find(|w| w.iter().all(|s| s.1 == want))
        .map(|w| w[0].0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flip_is_three_in_a_row_after_the_change() {
        let s: Vec<Sample> = vec![
            (10, true),
            (20, false), // before the change: not counted
            (30, false),
            (40, true), // one slow connect is not a flip
            (50, false),
            (60, false),
            (70, false),
            (80, false),
        ];
        assert_eq!(flip_after(&s, 25, false), Some(50));
        assert_eq!(flip_after(&s, 25, true), None);
        assert_eq!(flip_after(&s, 0, true), None);
        assert_eq!(flip_after(&s[..6], 25, false), None);
    }
}
