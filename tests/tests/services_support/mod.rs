//! The Service cases shared by `services_kube_proxy.rs` (the real
//! kube-proxy: a check of the harness itself) and `services_weft.rs`
//! (weftd `--services on`): one 3-node lab cluster per file, the cases run
//! in sequence, each named after the upstream e2e case it ports. Clients
//! are `weft lab probe` / `weft lab traffic` processes, which enter the
//! cgroup of the node they probe from (where weft's socket-level programs
//! see them); "outside" clients (the fabric's view of a NodePort) are this
//! test process itself, in no lab cgroup. Every address probed is inside
//! the lab.

#![allow(dead_code)]

pub mod cases;
pub mod cases_external;
pub mod cases_lb;
pub mod cases_nodeport;
pub mod cases_terminating;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use weft_lab::probe::{Outcome, Transport};
use weft_lab::traffic::TrafficReport;

use crate::common::{bin_dir, LabGuard};

pub const NS: &str = "svc";
/// How long a pod may take from creation to Ready, and a Service change to
/// show in the data path (kube-proxy syncs at most once a second).
pub const WAIT: Duration = Duration::from_secs(60);
pub const PROGRAMMED: Duration = Duration::from_secs(20);

pub struct Cluster {
    pub lab: LabGuard,
    pub nodes: Vec<String>,
    started: Instant,
}

/// [`crate::common::within`], every 200 ms (most polls here run kubectl
/// or a probe process).
pub fn within<T>(limit: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    crate::common::within_every(Duration::from_millis(200), limit, what, f)
}

impl Cluster {
    pub fn new(lab: LabGuard) -> Cluster {
        let nodes = lab.nodes().into_iter().map(|n| n.name).collect();
        let c = Cluster {
            lab,
            nodes,
            started: Instant::now(),
        };
        c.kubectl(&["create", "namespace", NS]);
        crate::common::kube::wait_default_service_account(&c.lab, NS);
        c
    }

    /// Marks a case's start on stderr, with the time spent so far.
    pub fn case(&self, name: &str) {
        eprintln!("[{:6.1} s] {name}", self.started.elapsed().as_secs_f64());
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        crate::common::kube::kubectl(&self.lab, args, None)
    }

    pub fn apply(&self, manifest: &Value) {
        crate::common::kube::apply(&self.lab, manifest);
    }

    pub fn get(&self, args: &[&str]) -> Value {
        let mut a = vec!["get", "-n", NS];
        a.extend_from_slice(args);
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&a)).expect("kubectl prints JSON")
    }

    /// A pod serving `hostname`/`clientip` on 8080/TCP (`http`) and
    /// 8081/UDP (`udp`), on `node` (index) when given.
    pub fn pod(&self, name: &str, labels: Value, node: Option<usize>, extra: Value) -> Value {
        let mut spec = json!({
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": "weft.test/agnhost",
                "ports": [{"name": "http", "containerPort": 8080},
                          {"name": "udp", "containerPort": 8081, "protocol": "UDP"}]}],
        });
        if let Some(i) = node {
            spec["nodeName"] = json!(self.nodes[i]);
        }
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            spec[k] = v;
        }
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": labels}, "spec": spec})
    }

    pub fn run_pod(&self, name: &str, labels: Value, node: Option<usize>) {
        self.apply(&self.pod(name, labels, node, json!({})));
    }

    pub fn wait_ready(&self, names: &[&str]) {
        for n in names {
            within(WAIT, &format!("pod {n} Ready"), || {
                let p = self.get(&["pod", n]);
                ready(&p).then_some(())
            });
        }
    }

    pub fn pod_ip(&self, name: &str) -> String {
        self.get(&["pod", name])["status"]["podIP"]
            .as_str()
            .expect("pod has an address")
            .to_string()
    }

    /// A Service selecting `selector`, TCP 80 -> `http` and UDP 81 -> `udp`
    /// (named target ports), with `extra` merged into its spec.
    pub fn service(&self, name: &str, selector: Value, extra: Value) {
        let mut spec = json!({
            "selector": selector,
            "ports": [
                {"name": "tcp", "port": 80, "targetPort": "http", "protocol": "TCP"},
                {"name": "udp", "port": 81, "targetPort": "udp", "protocol": "UDP"},
            ],
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            spec[k] = v;
        }
        self.apply(&json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}));
    }

    pub fn cluster_ip(&self, svc: &str) -> String {
        within(WAIT, "ClusterIP assigned", || {
            self.get(&["service", svc])["spec"]["clusterIP"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        })
    }

    pub fn node_port(&self, svc: &str, port_name: &str) -> u16 {
        let s = self.get(&["service", svc]);
        s["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == port_name)
            .and_then(|p| p["nodePort"].as_u64())
            .expect("a node port") as u16
    }

    pub fn node_ip(&self, i: usize) -> IpAddr {
        self.lab.nodes()[i].underlay_v4
    }

    /// `weft lab probe` from `from` (`NS/POD` or `node:NODE`) sending `line`:
    /// the reply, or the CLI's reason.
    pub fn ask(
        &self,
        from: &str,
        to: &str,
        port: u16,
        proto: &str,
        line: &str,
    ) -> Result<String, String> {
        let o = Command::new(bin_dir().join("weft"))
            .args([
                "lab",
                "probe",
                "--name",
                &self.lab.name,
                "--from",
                from,
                "--to",
                to,
            ])
            .args([
                "--port",
                &port.to_string(),
                "--protocol",
                proto,
                "--timeout-ms",
                "1500",
            ])
            .args(["--send", line, "--print-reply"])
            .output()
            .expect("weft runs");
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
        }
    }

    /// Which backends answer `hostname` over `tries` new connections (a
    /// failed one counts as `error: <why>`). One `weft lab probe --count`
    /// makes them all, one after the other, as [`Cluster::ask`] would, but
    /// without a process start for each (~0.15 s apiece on a loaded
    /// machine, most of these cases' time).
    pub fn backends_seen(
        &self,
        from: &str,
        to: &str,
        port: u16,
        proto: &str,
        tries: usize,
    ) -> BTreeMap<String, usize> {
        let o = Command::new(bin_dir().join("weft"))
            .args(["-o", "json", "lab", "probe", "--name", &self.lab.name])
            .args(["--from", from, "--to", to, "--port", &port.to_string()])
            .args(["--protocol", proto, "--timeout-ms", "1500"])
            .args(["--send", "hostname", "--count", &tries.to_string()])
            .output()
            .expect("weft runs");
        let mut seen = BTreeMap::new();
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let v: Value = serde_json::from_str(line).expect("a JSON line per connection");
            let who = if v["connected"] == true {
                v["reply"].as_str().unwrap_or_default().trim().to_string()
            } else {
                let (to, outcome) = (v["to"].as_str(), v["outcome"].as_str());
                format!(
                    "error: {proto} {from} -> {}: {}",
                    to.unwrap_or_default(),
                    outcome.unwrap_or_default()
                )
            };
            *seen.entry(who).or_default() += 1;
        }
        // tries the CLI could not make at all (it failed before them)
        let made: usize = seen.values().sum();
        if made < tries {
            let why = String::from_utf8_lossy(&o.stderr).trim().to_string();
            *seen.entry(format!("error: {why}")).or_default() += tries - made;
        }
        seen
    }

    /// Waits until new connections from `from` reach exactly `want` (all of
    /// them seen over a few tries, nothing else).
    pub fn wait_backends(&self, from: &str, to: &str, port: u16, proto: &str, want: &[&str]) {
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        let tries = want.len() * 6;
        let mut last = BTreeMap::new();
        let deadline = Instant::now() + PROGRAMMED;
        while Instant::now() < deadline {
            last = self.backends_seen(from, to, port, proto, tries);
            let got: BTreeSet<String> = last.keys().cloned().collect();
            if got == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!("{proto} {from} -> {to}:{port}: want backends {want:?}, saw {last:?}");
    }

    /// Waits until a probe from `from` ends as `outcome` ("refused", "timed out").
    pub fn wait_outcome(&self, from: &str, to: &str, port: u16, proto: &str, outcome: &str) {
        within(
            PROGRAMMED,
            &format!("{proto} {from} -> {to}:{port} {outcome}"),
            || match self.ask(from, to, port, proto, "hostname") {
                Err(e) if e.ends_with(outcome) => Some(()),
                _ => None,
            },
        );
    }

    /// A probe from this test process, inside node `from`'s namespace but
    /// in no lab cgroup: what a host on the fabric sends (weft's
    /// socket-level programs do not see it, its packets arrive at the
    /// target node from outside).
    pub fn ask_outside(
        &self,
        from: usize,
        to: SocketAddr,
        proto: Transport,
        line: &str,
    ) -> Outcome {
        let ns = self.lab.nodes()[from].netns.clone();
        weft_lab::probe::probe(&ns, to, proto, Duration::from_millis(1500), Some(line))
            .expect("probe runs")
    }

    /// `weft lab traffic` in the background.
    pub fn traffic(
        &self,
        from: &str,
        to: &str,
        port: u16,
        proto: &str,
        seconds: f64,
        persistent: usize,
    ) -> Traffic {
        self.traffic_with(from, to, port, proto, seconds, persistent, &[])
    }

    /// [`Cluster::traffic`] with more `weft lab traffic` flags. Its stdin
    /// is a pipe that [`Traffic::report`] closes: with `--until-released`
    /// the run ends only after the case asks for the report (and its other
    /// `--until-*` conditions hold), at `seconds` at the latest.
    #[expect(
        clippy::too_many_arguments,
        reason = "the traffic's flags, spelled out"
    )]
    pub fn traffic_with(
        &self,
        from: &str,
        to: &str,
        port: u16,
        proto: &str,
        seconds: f64,
        persistent: usize,
        extra: &[&str],
    ) -> Traffic {
        let child = Command::new(bin_dir().join("weft"))
            .args([
                "lab",
                "traffic",
                "--name",
                &self.lab.name,
                "--from",
                from,
                "--to",
                to,
            ])
            .args(["--port", &port.to_string(), "--protocol", proto])
            .args(["--seconds", &seconds.to_string(), "--interval-ms", "50"])
            .args([
                "--persistent",
                &persistent.to_string(),
                "--timeout-ms",
                "1000",
                "-o",
                "json",
            ])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weft runs");
        Traffic {
            child: Some(child),
            ends: Instant::now() + Duration::from_secs_f64(seconds),
        }
    }

    pub fn delete(&self, what: &[&str]) {
        let mut a = vec!["delete", "-n", NS, "--wait=false"];
        a.extend_from_slice(what);
        self.kubectl(&a);
    }

    /// Whether an EndpointSlice of Service `svc` still lists address `ip`.
    pub fn slices_list(&self, svc: &str, ip: &str) -> bool {
        let label = format!("kubernetes.io/service-name={svc}");
        let v = self.get(&["endpointslices", "-l", &label]);
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
            .flat_map(|e| e["addresses"].as_array().into_iter().flatten())
            .any(|a| a.as_str() == Some(ip))
    }

    /// weftd's `weft services -o json` on node `i`.
    pub fn weft_services(&self, i: usize) -> Value {
        let socket = self.lab.nodes()[i].socket.clone();
        crate::common::api_get_at(&socket, weft_api::paths::SERVICES)
    }
}

pub struct Traffic {
    child: Option<Child>,
    /// When the run ends at the latest (its `seconds`).
    ends: Instant,
}

impl Traffic {
    /// [`Traffic::report`] once `done` holds (polled every 200 ms) and
    /// `settle` more has passed, or the run's `seconds` are up, whichever
    /// comes first: how a `--until-released` run covers an event its
    /// traffic cannot see and ends soon after. Never fails on `done`: the
    /// report is what a case checks, this only says when the run may end.
    pub fn report_when(self, settle: Duration, mut done: impl FnMut() -> bool) -> TrafficReport {
        while Instant::now() < self.ends && !done() {
            std::thread::sleep(Duration::from_millis(200));
        }
        let left = self.ends.saturating_duration_since(Instant::now());
        std::thread::sleep(settle.min(left));
        self.report()
    }

    pub fn report(mut self) -> TrafficReport {
        let child = self.child.take().expect("running");
        let o = child.wait_with_output().expect("traffic ends");
        assert!(
            o.status.success(),
            "weft lab traffic: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).expect("a traffic report")
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn condition(obj: &Value, kind: &str) -> Option<String> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

pub fn ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running" && condition(pod, "Ready").as_deref() == Some("True")
}
