//! Readiness of a lab cluster: the API server's `/readyz`, the controllers'
//! leader leases, kube-proxy's `/livez`; waits that say what they wait for.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{log_tail, proxy, KubeProcess, APISERVER_PORT};
use crate::lab::Lab;

/// A minimal HTTP/1.0 GET; returns the status code and body.
fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

impl Lab {
    /// Whether `/readyz` of the API server says ok (asked as admin).
    pub fn apiserver_ready(&self) -> bool {
        self.kubectl(&["get", "--raw=/readyz", "--request-timeout=5s"])
            .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "ok")
    }

    /// Whether anything accepts connections on the API server's port (cheap,
    /// no process started).
    fn apiserver_port_open(&self) -> bool {
        let addr = SocketAddr::new(self.fabric_v4, APISERVER_PORT);
        weft_datapath::netns::run_in(&self.fabric_netns, move || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
        })
        .unwrap_or(false)
    }

    /// Waits (at most `limit`) until the API server is ready, with a note to
    /// `progress` every 10 s; fails at once if it or its etcd exited.
    pub fn wait_apiserver_ready(
        &self,
        limit: Duration,
        progress: &mut dyn FnMut(&str),
    ) -> anyhow::Result<()> {
        let kube = self.kube_required()?;
        let started = Instant::now();
        let mut next_note = Duration::from_secs(10);
        loop {
            for name in ["etcd", "kube-apiserver"] {
                let p = kube
                    .process(name, None)
                    .with_context(|| format!("{name} was never started"))?;
                if !p.alive() {
                    bail!(
                        "{name} exited at start; its log {} ends:\n{}",
                        p.log.display(),
                        log_tail(&p.log, 8)
                    );
                }
            }
            if self.apiserver_port_open() && self.apiserver_ready() {
                return Ok(());
            }
            let waited = started.elapsed();
            if waited > limit {
                // the tail now: a failed `up` removes the lab, logs and all
                let log = kube.dir.join("kube-apiserver.log");
                bail!(
                    "kube-apiserver not ready within {} s; {} ends:\n{}",
                    limit.as_secs(),
                    log.display(),
                    log_tail(&log, 8)
                );
            }
            if waited >= next_note {
                progress(&format!(
                    "  still waiting for kube-apiserver ({} s; it takes 10-60 s on a busy 2-CPU machine)",
                    waited.as_secs()
                ));
                next_note += Duration::from_secs(10);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The holder of leader lease `name` in kube-system, if any.
    pub fn leader_of(&self, name: &str) -> Option<String> {
        let o = self
            .kubectl(&[
                "-n",
                "kube-system",
                "get",
                "lease",
                name,
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ])
            .ok()?;
        let holder = String::from_utf8_lossy(&o.stdout).trim().to_string();
        (o.status.success() && !holder.is_empty()).then_some(holder)
    }

    /// What kube-proxy on node `i` answers on `/livez` (status code): 200
    /// once it has programmed its rules. (`/healthz` also wants the Node
    /// object to exist, which only a kubelet makes.)
    pub fn kube_proxy_health(&self, i: usize) -> Option<u16> {
        self.kube_proxy_get(i, "/livez")
    }

    /// GET `path` from kube-proxy's health server on node `i` (status code).
    pub fn kube_proxy_get(&self, i: usize, path: &str) -> Option<u16> {
        let node = self.node(i).ok()?;
        let addr = SocketAddr::new(node.underlay_v4, proxy::HEALTHZ_PORT);
        let path = path.to_string();
        weft_datapath::netns::run_in(&node.netns, move || {
            http_get(addr, &path, Duration::from_secs(2))
        })
        .ok()?
        .ok()
        .map(|(code, _)| code)
    }

    /// Waits until the controller-manager and the scheduler hold their
    /// leader leases and kube-proxy answers healthy on every node.
    pub(super) fn wait_control_plane(
        &self,
        limit: Duration,
        progress: &mut dyn FnMut(&str),
    ) -> anyhow::Result<()> {
        let kube = self.kube_required()?;
        let started = Instant::now();
        let mut next_note = Duration::from_secs(10);
        loop {
            for p in &kube.processes {
                if !p.alive() {
                    bail!(
                        "{}{} exited at start; its log {} ends:\n{}",
                        p.name,
                        p.node
                            .map(|i| format!(" on node {}", i + 1))
                            .unwrap_or_default(),
                        p.log.display(),
                        log_tail(&p.log, 8)
                    );
                }
            }
            let mut pending: Vec<(String, &KubeProcess)> = Vec::new();
            for c in ["kube-controller-manager", "kube-scheduler"] {
                if self.leader_of(c).is_none() {
                    let p = kube.process(c, None).context("not started")?;
                    pending.push((format!("{c} lease"), p));
                }
            }
            let proxies = if kube.services == super::ServiceProxy::KubeProxy {
                self.nodes().len()
            } else {
                0
            };
            for i in 0..proxies {
                if self.kube_proxy_health(i) != Some(200) {
                    let p = kube.process("kube-proxy", Some(i)).context("not started")?;
                    pending.push((format!("kube-proxy on node {}", i + 1), p));
                }
            }
            let names: Vec<&str> = pending.iter().map(|(n, _)| n.as_str()).collect();
            if pending.is_empty() {
                return Ok(());
            }
            let waited = started.elapsed();
            if waited > limit {
                // the tails now: a failed `up` removes the lab, logs and all
                let tails: Vec<String> = pending
                    .iter()
                    .map(|(_, p)| format!("{} ends:\n{}", p.log.display(), log_tail(&p.log, 5)))
                    .collect();
                bail!(
                    "not ready within {} s: {}\n{}",
                    limit.as_secs(),
                    names.join(", "),
                    tails.join("\n")
                );
            }
            if waited >= next_note {
                progress(&format!(
                    "  still waiting ({} s) for {}",
                    waited.as_secs(),
                    names.join(", ")
                ));
                next_note += Duration::from_secs(10);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
