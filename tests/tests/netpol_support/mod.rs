//! The upstream NetworkPolicy cases (`crates/netpol-cases`) driven against
//! a lab cluster: pods created through the API server and served by the lab
//! kubelet, policies applied with kubectl, every cell probed over the
//! network from inside the client pod's namespace.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use weft_lab::probe::{Outcome, Transport};
use weft_lab::Lab;
use weft_netpol_cases::{Driver, Reach};
use weft_policy::{NetworkPolicy, Peer, PolicyPort, PortRef, Protocol, Rule};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];
/// What every pod serves, as upstream's agnhost containers do.
pub const PORTS: [u16; 2] = [80, 81];
/// One probe's wait: a denied TCP connect or UDP request costs this much.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a matrix may take to converge after a change (upstream polls
/// too: enforcement follows the API server asynchronously).
pub const CONVERGE: Duration = Duration::from_secs(20);

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    }
}

/// A weft_policy NetworkPolicy as the API's manifest.
pub fn manifest(p: &NetworkPolicy) -> Value {
    fn selector(s: &weft_policy::LabelSelector) -> Value {
        serde_json::to_value(s).expect("selector serialises")
    }
    fn peer(x: &Peer) -> Value {
        let mut v = json!({});
        if let Some(s) = &x.pod_selector {
            v["podSelector"] = selector(s);
        }
        if let Some(s) = &x.namespace_selector {
            v["namespaceSelector"] = selector(s);
        }
        if let Some(b) = &x.ip_block {
            v["ipBlock"] = json!({"cidr": b.cidr.to_string(),
                "except": b.except.iter().map(|e| e.to_string()).collect::<Vec<_>>()});
        }
        v
    }
    fn port(x: &PolicyPort) -> Value {
        let mut v = json!({});
        if let Some(p) = x.protocol {
            v["protocol"] = json!(proto_name(p));
        }
        match &x.port {
            Some(PortRef::Number(n)) => v["port"] = json!(n),
            Some(PortRef::Name(s)) => v["port"] = json!(s),
            None => {}
        }
        if let Some(e) = x.end_port {
            v["endPort"] = json!(e);
        }
        v
    }
    fn rule(r: &Rule, peers_field: &str) -> Value {
        let mut v = json!({});
        if let Some(peers) = &r.peers {
            v[peers_field] = Value::Array(peers.iter().map(peer).collect());
        }
        if let Some(ports) = &r.ports {
            v["ports"] = Value::Array(ports.iter().map(port).collect());
        }
        v
    }
    let mut spec = json!({"podSelector": selector(&p.pod_selector)});
    if let Some(t) = &p.policy_types {
        spec["policyTypes"] = json!(t
            .iter()
            .map(|d| match d {
                weft_policy::Direction::Ingress => "Ingress",
                weft_policy::Direction::Egress => "Egress",
            })
            .collect::<Vec<_>>());
    }
    if let Some(rules) = &p.ingress {
        spec["ingress"] = Value::Array(rules.iter().map(|r| rule(r, "from")).collect());
    }
    if let Some(rules) = &p.egress {
        spec["egress"] = Value::Array(rules.iter().map(|r| rule(r, "to")).collect());
    }
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": p.namespace, "name": p.name}, "spec": spec})
}

/// The pods of the suite's world, every port named `serve-<port>-<proto>`.
pub fn pod_manifest(ns: &str, name: &str) -> Value {
    let mut ports = Vec::new();
    for p in PORTS {
        for proto in ["tcp", "udp"] {
            ports.push(
                json!({"name": format!("serve-{p}-{proto}"), "containerPort": p,
                "protocol": proto.to_ascii_uppercase()}),
            );
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"pod": name}},
        "spec": {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "weft.test/agnhost", "ports": ports}]}})
}

pub use crate::common::kube::{apply, kubectl};

/// The world made once: namespaces x, y, z and pods a, b, c in each,
/// Running with their addresses; each case resets labels and policies.
pub struct LabDriver<'a> {
    pub lab: &'a Lab,
    /// "x/a" -> (address, network namespace).
    pub pods: BTreeMap<String, (IpAddr, PathBuf)>,
    case_pods: Vec<String>,
    /// Labels a case added, taken off at the next start.
    pod_labels: Vec<(String, String)>,
    ns_labels: Vec<(String, String)>,
    /// The policies the API holds (`ns/name`).
    policies: Vec<String>,
    /// From `kubectl apply` returning to every weftd having compiled the
    /// policy, per create.
    pub compile_lag: Vec<Duration>,
}

impl<'a> LabDriver<'a> {
    pub fn new(lab: &'a Lab, limit: Duration) -> LabDriver<'a> {
        for ns in NAMESPACES {
            apply(
                lab,
                &json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": ns, "labels": {"ns": ns}}}),
            );
        }
        for ns in NAMESPACES {
            crate::common::kube::wait_default_service_account(lab, ns);
        }
        for ns in NAMESPACES {
            for p in PODS {
                apply(lab, &pod_manifest(ns, p));
            }
        }
        let deadline = Instant::now() + limit;
        let pods = loop {
            let mut got = BTreeMap::new();
            for ns in NAMESPACES {
                let v: Value = serde_json::from_str(&kubectl(
                    lab,
                    &["get", "pods", "-n", ns, "-o", "json"],
                    None,
                ))
                .expect("json");
                for p in v["items"].as_array().into_iter().flatten() {
                    let ready = p["status"]["phase"] == "Running";
                    let ip = p["status"]["podIP"].as_str().and_then(|s| s.parse().ok());
                    let name = p["metadata"]["name"].as_str().unwrap_or_default();
                    if let (true, Some(ip)) = (ready, ip) {
                        if let Ok(netns) = weft_lab::kubelet::netns_of(lab, &format!("{ns}/{name}"))
                        {
                            got.insert(format!("{ns}/{name}"), (ip, netns));
                        }
                    }
                }
            }
            if got.len() == 9 {
                break got;
            }
            assert!(
                Instant::now() < deadline,
                "9 pods Running: only {:?}",
                got.keys()
            );
            std::thread::sleep(Duration::from_millis(300));
        };
        LabDriver {
            lab,
            pods,
            case_pods: Vec::new(),
            pod_labels: Vec::new(),
            ns_labels: Vec::new(),
            policies: Vec::new(),
            compile_lag: Vec::new(),
        }
    }

    /// Waits until the weftd of every node has compiled exactly the
    /// policies named `want` (a barrier: a matrix probed before would judge
    /// the previous state).
    pub fn wait_compiled(&self, want: &[String]) {
        let deadline = Instant::now() + CONVERGE;
        for n in self.lab.nodes() {
            loop {
                let l: weft_api::PolicyList =
                    crate::common::api_get_at(&n.socket, weft_api::paths::POLICY);
                let have: Vec<String> = l
                    .policies
                    .iter()
                    .map(|p| format!("{}/{}", p.namespace, p.name))
                    .collect();
                if want.iter().all(|w| have.contains(w)) && have.len() == want.len() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{}: weftd compiled {have:?}, the API has {want:?}",
                    n.name
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Probes every cell once, in parallel: `true` where the probe got its
    /// answer.
    pub fn matrix(&self, port: u16, proto: Protocol) -> BTreeMap<(String, String), bool> {
        let transport = match proto {
            Protocol::Udp => Transport::Udp,
            _ => Transport::Tcp,
        };
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .case_pods
                .iter()
                .flat_map(|f| self.case_pods.iter().map(move |t| (f, t)))
                .filter(|(f, t)| f != t)
                .map(|(f, t)| {
                    let (from_ns, to_ip) = (&self.pods[f].1, self.pods[t].0);
                    s.spawn(move || {
                        let out = weft_lab::probe::probe(
                            from_ns,
                            SocketAddr::new(to_ip, port),
                            transport,
                            PROBE_TIMEOUT,
                            Some("hostname"),
                        );
                        let name = t.split_once('/').map(|(_, n)| n).unwrap_or_default();
                        let ok = matches!(out, Ok(Outcome::Connected { reply: Some(ref r) }) if r == name);
                        ((f.clone(), t.clone()), ok)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("probe thread"))
                .collect()
        })
    }

    /// Back to no policy and the suite's labels. One kubectl run per
    /// object touched, not per label (each run costs a few hundred ms of a
    /// loaded machine's CPU, and a case resets first).
    fn reset(&mut self) {
        kubectl(
            self.lab,
            &[
                "delete",
                "networkpolicy",
                "--all",
                "--all-namespaces",
                "--wait=true",
            ],
            None,
        );
        let mut pods: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (pod, key) in std::mem::take(&mut self.pod_labels) {
            pods.entry(pod).or_default().push(format!("{key}-"));
        }
        for (pod, keys) in pods {
            let (ns, name) = pod.split_once('/').unwrap();
            let mut args = vec!["label", "pod", "-n", ns, name];
            args.extend(dedup(&keys));
            kubectl(self.lab, &args, None);
        }
        let mut nss: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (ns, key) in std::mem::take(&mut self.ns_labels) {
            nss.entry(ns).or_default().push(format!("{key}-"));
        }
        for (ns, keys) in nss {
            let mut args = vec!["label", "namespace", ns.as_str()];
            args.extend(dedup(&keys));
            kubectl(self.lab, &args, None);
        }
        self.policies.clear();
        self.wait_compiled(&[]);
    }
}

/// `keys` once each, in order (a case may set one label twice).
fn dedup(keys: &[String]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for k in keys {
        if !out.contains(&k.as_str()) {
            out.push(k);
        }
    }
    out
}

impl Driver for LabDriver<'_> {
    fn start(&mut self, pods: &[&str], _protocols: &[Protocol], _ports: &[u16]) {
        self.reset();
        self.case_pods = pods.iter().map(|p| p.to_string()).collect();
    }

    fn create(&mut self, policy: NetworkPolicy) {
        apply(self.lab, &manifest(&policy));
        let name = format!("{}/{}", policy.namespace, policy.name);
        let t = Instant::now();
        if self.policies.contains(&name) {
            // an update: its name is compiled already (validate polls)
            return;
        }
        self.policies.push(name);
        self.wait_compiled(&self.policies);
        self.compile_lag.push(t.elapsed());
    }

    fn delete_all(&mut self) {
        kubectl(
            self.lab,
            &["delete", "networkpolicy", "--all", "--all-namespaces"],
            None,
        );
        self.policies.clear();
        self.wait_compiled(&[]);
    }

    fn add_pod_labels(&mut self, pod: &str, labels: &[(&str, &str)]) {
        let (ns, name) = pod.split_once('/').unwrap();
        let mut args = vec!["label", "pod", "--overwrite", "-n", ns, name];
        let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        args.extend(pairs.iter().map(String::as_str));
        kubectl(self.lab, &args, None);
        for (k, _) in labels {
            // `pod` is the suite's own label: it stays
            if *k != "pod" {
                self.pod_labels.push((pod.to_string(), k.to_string()));
            }
        }
    }

    fn add_namespace_label(&mut self, ns: &str, key: &str, value: &str) {
        kubectl(
            self.lab,
            &[
                "label",
                "namespace",
                "--overwrite",
                ns,
                &format!("{key}={value}"),
            ],
            None,
        );
        self.ns_labels.push((ns.to_string(), key.to_string()));
    }

    fn pod_ip(&self, pod: &str) -> String {
        self.pods[pod].0.to_string()
    }

    fn reachability(&self) -> Reach {
        Reach::all_allowed(&self.case_pods)
    }

    /// Probes until the matrix matches or [`CONVERGE`] passes (enforcement
    /// follows the API server asynchronously); panics with both matrices.
    fn validate(&self, port: u16, proto: Protocol, want: &Reach) {
        if proto == Protocol::Sctp {
            // no SCTP in this kernel: the SCTP cells cannot be probed; the
            // case's TCP and UDP checks prove SCTP-only rules open nothing else
            eprintln!("  sctp/{port}: not probed (no SCTP in this kernel)");
            return;
        }
        let deadline = Instant::now() + CONVERGE;
        loop {
            let got = self.matrix(port, proto);
            let wrong = want.wrong(&got);
            if wrong.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{proto:?}/{port}: {} cells differ from upstream's table after {CONVERGE:?}: {wrong:?}\nexpected:\n{}got:\n{}",
                wrong.len(),
                Reach::render(&self.case_pods, &want.expected),
                Reach::render(&self.case_pods, &got)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
