//! Steady, bounded traffic from one namespace to one address (`weft lab
//! traffic`): new connections at a fixed pace, each sending a line and
//! reading the answer, plus a few long-lived connections that exchange a
//! line every round. It reports what a Service test or benchmark needs:
//! how many exchanges worked and how the others failed, which backends
//! answered (a lab pod answers `hostname` with its name), connect and
//! round-trip latencies, the longest gap without a working new connection,
//! and how many long-lived connections broke.
//!
//! One thread in the namespace does everything in turn; every wait is
//! bounded by the timeout and the whole run by its duration. A run may end
//! sooner once the conditions its caller waits for hold ([`Until`]): a test
//! whose traffic did what it watches for is done, one whose traffic did not
//! still runs to the full duration.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::probe::{classify, Transport};

#[derive(Debug, Clone)]
pub struct TrafficSpec {
    pub to: SocketAddr,
    pub transport: Transport,
    /// How long to run (at most 10 minutes).
    pub duration: Duration,
    /// Pause between new connections.
    pub interval: Duration,
    /// Long-lived connections (TCP) or sockets (UDP), each used every round.
    pub persistent: usize,
    /// The line sent on every exchange.
    pub line: String,
    /// Bound of every connect, send and read.
    pub timeout: Duration,
    /// UDP only: the long-lived flows are one source port each (this one,
    /// then the next ones), a new socket per exchange, as upstream's
    /// `nc -u -p PORT` loop: the flow (5-tuple) lives on, the socket does
    /// not. `None`: each long-lived flow is one connected socket.
    pub source_port: Option<u16>,
    /// End before `duration` once these hold.
    pub until: Until,
}

/// When a run may end before its duration: after a round in which every
/// condition set holds (none set: the whole duration). Each is monotone:
/// once it holds, more traffic cannot undo it, so a report ended early
/// passes a check of these exactly as the full run's would.
#[derive(Debug, Clone, Default)]
pub struct Until {
    /// Every one of these answers seen (backends that took traffic).
    pub answered: Vec<String>,
    /// At least this many working new connections.
    pub ok: u64,
    /// At least this many changes of backend on long-lived flows.
    pub switched: u64,
    /// Set from outside once the caller's own event is over (`weft lab
    /// traffic --until-released`: its stdin closed), so a run can cover an
    /// event the traffic cannot see (a restart, a deletion) and end after.
    pub released: Option<Arc<AtomicBool>>,
}

impl Until {
    fn holds(&self, r: &TrafficReport) -> bool {
        let set = !self.answered.is_empty()
            || self.ok > 0
            || self.switched > 0
            || self.released.is_some();
        set && self.answered.iter().all(|a| r.answers.contains_key(a))
            && r.ok >= self.ok
            && r.persistent_switched >= self.switched
            && self
                .released
                .as_ref()
                .is_none_or(|f| f.load(Ordering::SeqCst))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficReport {
    /// New connections tried, and those whose exchange worked.
    pub attempts: u64,
    pub ok: u64,
    /// Failed attempts by outcome (`refused`, `timed out`, `reset`, ...).
    pub failures: BTreeMap<String, u64>,
    /// Answers by text (backend names for `hostname`).
    pub answers: BTreeMap<String, u64>,
    /// Connect (TCP) and exchange latencies of new connections, µs.
    pub connect_us_p50: u64,
    pub connect_us_p99: u64,
    pub exchange_us_p50: u64,
    /// Round trips on long-lived connections, µs.
    pub rr_us_p50: u64,
    /// The longest time between two working new connections (from the
    /// start, to the end), ms.
    pub max_gap_ms: u64,
    /// Long-lived connections opened, and exchanges on them that failed (a
    /// TCP connection is reopened after one; a UDP socket is kept).
    pub persistent_opened: u64,
    pub persistent_broken: u64,
    /// Answers on long-lived connections that changed backend mid-life.
    pub persistent_switched: u64,
    pub seconds: f64,
    /// The run ended before its duration: its [`Until`] held.
    #[serde(default)]
    pub until_met: bool,
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

enum Conn {
    Tcp(BufReader<TcpStream>),
    Udp(UdpSocket),
}

impl Conn {
    /// A UDP socket from `port`, connected to the target.
    fn udp_from(spec: &TrafficSpec, port: u16) -> std::io::Result<Conn> {
        let ip: std::net::IpAddr = if spec.to.is_ipv4() {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        let s = UdpSocket::bind(SocketAddr::new(ip, port))?;
        s.connect(spec.to)?;
        s.set_read_timeout(Some(spec.timeout))?;
        Ok(Conn::Udp(s))
    }

    fn open(spec: &TrafficSpec) -> std::io::Result<Conn> {
        match spec.transport {
            Transport::Tcp => {
                let s = TcpStream::connect_timeout(&spec.to, spec.timeout)?;
                s.set_read_timeout(Some(spec.timeout))?;
                s.set_write_timeout(Some(spec.timeout))?;
                s.set_nodelay(true)?;
                Ok(Conn::Tcp(BufReader::new(s)))
            }
            Transport::Udp => {
                let bind: SocketAddr = if spec.to.is_ipv4() {
                    "0.0.0.0:0".parse().expect("address")
                } else {
                    "[::]:0".parse().expect("address")
                };
                let s = UdpSocket::bind(bind)?;
                s.connect(spec.to)?;
                s.set_read_timeout(Some(spec.timeout))?;
                Ok(Conn::Udp(s))
            }
        }
    }

    fn exchange(&mut self, line: &str) -> std::io::Result<String> {
        match self {
            Conn::Tcp(r) => {
                r.get_mut().write_all(format!("{line}\n").as_bytes())?;
                let mut out = String::new();
                if r.read_line(&mut out)? == 0 {
                    return Err(std::io::ErrorKind::ConnectionReset.into());
                }
                Ok(out.trim_end().to_string())
            }
            Conn::Udp(s) => {
                s.send(line.as_bytes())?;
                let mut buf = [0u8; 512];
                let n = s.recv(&mut buf)?;
                Ok(String::from_utf8_lossy(&buf[..n]).trim_end().to_string())
            }
        }
    }
}

/// The error of a connected UDP socket that was aborted (`SOCK_DESTROY`):
/// ECONNABORTED once, then "destination address required" (disconnected).
fn aborted(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::ConnectionAborted
        || e.raw_os_error() == Some(libc::EDESTADDRREQ)
}

struct Persistent {
    conn: Option<Conn>,
    last_answer: Option<String>,
}

/// A flag for [`Until::released`] set once this process's stdin gives a
/// line or ends: the caller (a test holding the pipe) closes it when its
/// event is over. A caller that dies closes it too; the duration still
/// bounds the run.
pub fn released_by_stdin() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        set.store(true, Ordering::SeqCst);
    });
    flag
}

/// Runs the traffic from inside `from` (the calling process should already
/// be in the cgroup the source belongs to).
pub fn run(from: &Path, spec: &TrafficSpec) -> anyhow::Result<TrafficReport> {
    let spec = spec.clone();
    weft_datapath::netns::run_in(from, move || run_here(&spec)).map_err(|e| anyhow::anyhow!("{e}"))
}

/// [`run`] in the current namespace.
pub fn run_here(spec: &TrafficSpec) -> TrafficReport {
    let duration = spec.duration.min(Duration::from_secs(600));
    let start = Instant::now();
    let mut r = TrafficReport::default();
    let (mut connect_us, mut exchange_us, mut rr_us) = (Vec::new(), Vec::new(), Vec::new());
    let mut last_ok = start;
    let mut persistent: Vec<Persistent> = (0..spec.persistent)
        .map(|_| Persistent {
            conn: None,
            last_answer: None,
        })
        .collect();
    while start.elapsed() < duration {
        let round = Instant::now();
        r.attempts += 1;
        let t = Instant::now();
        let outcome = Conn::open(spec).and_then(|mut c| {
            connect_us.push(t.elapsed().as_micros() as u64);
            let t2 = Instant::now();
            let a = c.exchange(&spec.line)?;
            exchange_us.push(t2.elapsed().as_micros() as u64);
            Ok(a)
        });
        match outcome {
            Ok(answer) => {
                r.ok += 1;
                let now = Instant::now();
                r.max_gap_ms = r
                    .max_gap_ms
                    .max(now.duration_since(last_ok).as_millis() as u64);
                last_ok = now;
                *r.answers.entry(answer).or_default() += 1;
            }
            Err(e) => *r.failures.entry(classify(&e).describe()).or_default() += 1,
        }
        for (i, p) in persistent.iter_mut().enumerate() {
            if let (Some(port), Transport::Udp) = (spec.source_port, spec.transport) {
                // one flow, a fresh socket per exchange
                let t = Instant::now();
                let res = Conn::udp_from(spec, port.saturating_add(i as u16))
                    .and_then(|mut c| c.exchange(&spec.line));
                match res {
                    Ok(a) => {
                        rr_us.push(t.elapsed().as_micros() as u64);
                        if p.last_answer.as_ref().is_some_and(|l| *l != a) {
                            r.persistent_switched += 1;
                        }
                        p.last_answer = Some(a);
                    }
                    Err(_) => r.persistent_broken += 1,
                }
                continue;
            }
            if p.conn.is_none() {
                if let Ok(c) = Conn::open(spec) {
                    r.persistent_opened += 1;
                    p.conn = Some(c);
                    p.last_answer = None;
                }
                continue;
            }
            let t = Instant::now();
            let res = p.conn.as_mut().map(|c| c.exchange(&spec.line));
            match res {
                Some(Ok(a)) => {
                    rr_us.push(t.elapsed().as_micros() as u64);
                    if p.last_answer.as_ref().is_some_and(|l| *l != a) {
                        r.persistent_switched += 1;
                    }
                    p.last_answer = Some(a);
                }
                Some(Err(e)) if aborted(&e) => {
                    // a load balancer aborted the socket (its backend left):
                    // the owner connects it again, as a resolver reopens,
                    // and the flow goes on (a change of backend counts)
                    r.persistent_broken += 1;
                    if let Some(Conn::Udp(s)) = p.conn.as_ref() {
                        let _ = s.connect(spec.to);
                    }
                }
                _ => {
                    r.persistent_broken += 1;
                    // a UDP flow keeps its socket (its source port) across
                    // misses: whether it recovers is the point
                    if spec.transport == Transport::Tcp {
                        p.conn = None;
                    }
                }
            }
        }
        if spec.until.holds(&r) {
            r.until_met = true;
            break;
        }
        if let Some(rest) = spec.interval.checked_sub(round.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    r.max_gap_ms = r
        .max_gap_ms
        .max(Instant::now().duration_since(last_ok).as_millis() as u64);
    r.connect_us_p50 = pct(&mut connect_us, 0.5);
    r.connect_us_p99 = pct(&mut connect_us, 0.99);
    r.exchange_us_p50 = pct(&mut exchange_us, 0.5);
    r.rr_us_p50 = pct(&mut rr_us, 0.5);
    r.seconds = start.elapsed().as_secs_f64();
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn percentiles_pick_by_rank() {
        let mut v = vec![5, 1, 3, 2, 4];
        assert_eq!(pct(&mut v, 0.5), 3);
        assert_eq!(pct(&mut v, 0.99), 5);
        assert_eq!(pct(&mut [], 0.5), 0);
    }

    #[test]
    fn loopback_traffic_counts_answers_and_refusals() {
        let to = answering(64);
        let spec = TrafficSpec {
            to,
            transport: Transport::Tcp,
            duration: Duration::from_millis(300),
            interval: Duration::from_millis(20),
            persistent: 2,
            line: "hostname".into(),
            timeout: Duration::from_secs(1),
            source_port: None,
            until: Until::default(),
        };
        let r = run_here(&spec);
        assert!(r.ok > 3, "{r:?}");
        assert_eq!(r.ok, r.attempts);
        assert_eq!(r.answers.keys().collect::<Vec<_>>(), vec!["pod-a"]);
        assert_eq!(r.persistent_opened, 2);
        assert_eq!(r.persistent_broken, 0);
        assert!(r.max_gap_ms < 250);

        // a port nobody listens on: every attempt refused
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let r = run_here(&TrafficSpec {
            to: free,
            persistent: 0,
            duration: Duration::from_millis(100),
            ..spec
        });
        assert_eq!(r.ok, 0);
        assert_eq!(r.failures.get("refused").copied(), Some(r.attempts));
    }

    /// A loopback server answering `pod-a` to every line, for `n` connections.
    fn answering(n: usize) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().take(n).flatten() {
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s);
                    let mut line = String::new();
                    while r.read_line(&mut line).unwrap_or(0) > 0 {
                        let _ = r.get_mut().write_all(b"pod-a\n");
                        line.clear();
                    }
                });
            }
        });
        to
    }

    fn spec_to(to: SocketAddr, duration: Duration, until: Until) -> TrafficSpec {
        TrafficSpec {
            to,
            transport: Transport::Tcp,
            duration,
            interval: Duration::from_millis(10),
            persistent: 0,
            line: "hostname".into(),
            timeout: Duration::from_secs(1),
            source_port: None,
            until,
        }
    }

    #[test]
    fn a_run_ends_once_its_conditions_hold_and_not_before() {
        let to = answering(64);
        let until = Until {
            answered: vec!["pod-a".into()],
            ok: 5,
            ..Until::default()
        };
        let r = run_here(&spec_to(to, Duration::from_secs(30), until));
        assert!(r.until_met, "{r:?}");
        assert_eq!(r.ok, 5, "the round the conditions first held was the last");
        assert!(r.seconds < 5.0, "{r:?}");

        // an answer that never comes: the whole duration, not met
        let until = Until {
            answered: vec!["pod-a".into(), "pod-b".into()],
            ..Until::default()
        };
        let r = run_here(&spec_to(to, Duration::from_millis(300), until));
        assert!(!r.until_met, "{r:?}");
        assert!(r.seconds >= 0.3, "{r:?}");
    }

    #[test]
    fn a_released_run_ends_only_after_its_release() {
        let to = answering(64);
        let released = Arc::new(AtomicBool::new(false));
        let until = Until {
            ok: 1,
            released: Some(released.clone()),
            ..Until::default()
        };
        let spec = spec_to(to, Duration::from_secs(30), until);
        let run = std::thread::spawn(move || run_here(&spec));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!run.is_finished(), "ended before its release");
        released.store(true, Ordering::SeqCst);
        let r = run.join().unwrap();
        assert!(r.until_met, "{r:?}");
        assert!(r.seconds >= 0.3 && r.seconds < 5.0, "{r:?}");
    }
}
