//! Real etcd processes for tests: members on loopback with free ports, data
//! under a unique temp dir, killed (by PID) and removed on drop, also when
//! the test panics.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use weft_store::etcd::{EtcdOptions, EtcdStore};

/// The etcd binary (Debian's etcd-server); `WEFT_ETCD_BIN` overrides it.
pub fn etcd_bin() -> String {
    std::env::var("WEFT_ETCD_BIN").unwrap_or_else(|_| "/usr/bin/etcd".into())
}

/// Short timings so elections and lease expiry fit test budgets (the lease
/// minimum TTL is 1.5 × election timeout, here 0.75 s, so 1 s TTLs hold).
const HEARTBEAT_MS: u32 = 50;
const ELECTION_MS: u32 = 500;
const START_TIMEOUT: Duration = Duration::from_secs(15);

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

pub struct Cluster {
    dir: PathBuf,
    token: String,
    members: Vec<Member>,
}

/// `n` distinct free loopback ports, all held while picking.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

impl Cluster {
    /// Starts `n` members and waits until every one knows a leader.
    pub fn start(name: &str, n: usize) -> Cluster {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let unique = format!(
            "{name}-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("weft-etcd-test-{unique}"));
        std::fs::create_dir_all(&dir).expect("create etcd test dir");
        let ports = free_ports(2 * n);
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let mut c = Cluster {
            dir,
            token: unique,
            members,
        };
        for i in 0..n {
            c.spawn(i);
        }
        c.wait_ready(START_TIMEOUT);
        c
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.endpoint(i)).collect()
    }

    fn spawn(&mut self, i: usize) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        let m = &self.members[i];
        let log = std::fs::File::create(self.dir.join(format!("{}.log", m.name)))
            .expect("create etcd log");
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new(etcd_bin())
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.join(&m.name))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", &HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ELECTION_MS.to_string()])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", etcd_bin()));
        self.members[i].child = Some(child);
    }

    /// A store on member `i` alone, with short timeouts (for probing).
    fn probe(&self, i: usize) -> Option<EtcdStore> {
        EtcdStore::connect(
            &[self.endpoint(i)],
            EtcdOptions {
                request_timeout: Duration::from_millis(300),
                connect_timeout: Duration::from_millis(100),
                deadline: Duration::from_millis(300),
                ..EtcdOptions::default()
            },
        )
        .ok()
    }

    /// Waits until every running member knows a leader.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for i in 0..self.len() {
            if self.members[i].child.is_none() {
                continue;
            }
            loop {
                if let Some(Ok(s)) = self.probe(i).map(|p| p.status()) {
                    if s.leader != 0 {
                        break;
                    }
                }
                if let Some(Ok(Some(status))) = self.members[i].child.as_mut().map(Child::try_wait)
                {
                    panic!("etcd member {i} exited with {status}: {}", self.log_tail(i));
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {i} not ready within {timeout:?}: {}",
                    self.log_tail(i)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn log_tail(&self, i: usize) -> String {
        let log = std::fs::read(self.dir.join(format!("{}.log", self.members[i].name)))
            .unwrap_or_default();
        let start = log.len().saturating_sub(2000);
        String::from_utf8_lossy(&log[start..]).into_owned()
    }

    /// The index of the member every running member names as leader.
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let statuses: Vec<_> = (0..self.len())
                .filter(|&i| self.members[i].child.is_some())
                .filter_map(|i| self.probe(i).and_then(|p| p.status().ok()).map(|s| (i, s)))
                .collect();
            if let Some((i, _)) = statuses
                .iter()
                .find(|(_, s)| s.leader != 0 && s.leader == s.member_id)
            {
                return *i;
            }
            assert!(Instant::now() < deadline, "no etcd leader: {statuses:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs member `i` (by PID) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data dir.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} still runs");
        self.spawn(i);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
