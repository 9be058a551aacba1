//! The upstream e2e suite's world (kubernetes/kubernetes
//! test/e2e/network/netpol): namespaces x, y, z, pods named a, b, c labelled
//! `pod=<name>`, namespaces labelled `ns=<name>` and
//! `kubernetes.io/metadata.name=<name>`, each pod serving the case's ports
//! and protocols with container ports named `serve-<port>-<proto>`, and the
//! suite's `Reachability` truth tables. Here the matrix is computed, not
//! probed: each cell by the compiled maps and by the evaluator.

use std::collections::BTreeMap;

use weft_policy::*;

use super::{ip, labels, namespace_labels, Checked};

pub struct Case {
    pub pods: Vec<String>,
    pub policies: Vec<NetworkPolicy>,
    pub inventory: Inventory,
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

impl Case {
    /// `pods` as upstream's `initializeResources` names them ("x/a", ...).
    pub fn new(pods: &[&str], protocols: &[Protocol], ports: &[u16]) -> Case {
        let mut inventory = Inventory {
            nodes: vec![
                super::node("node-1", "198.18.0.1"),
                super::node("node-2", "198.18.0.2"),
            ],
            workloads: Vec::new(),
        };
        for (i, p) in pods.iter().enumerate() {
            let (ns, name) = p.split_once('/').unwrap();
            let ns_index = ["x", "y", "z"].iter().position(|n| *n == ns).unwrap();
            let pod_index = ["a", "b", "c"].iter().position(|n| *n == name).unwrap();
            let mut named_ports = BTreeMap::new();
            for port in ports {
                for proto in protocols {
                    named_ports.insert(
                        format!("serve-{port}-{}", proto_name(*proto)),
                        (*port, *proto),
                    );
                }
            }
            inventory.workloads.push(Workload {
                namespace: ns.into(),
                name: name.into(),
                labels: labels(&[("pod", name)]),
                namespace_labels: namespace_labels(ns),
                ips: vec![ip(&format!("10.244.{ns_index}.{}", pod_index + 10))],
                named_ports,
                host_network: false,
                // Spread over two nodes so both the local and the remote
                // ipcache are exercised.
                node: format!("node-{}", 1 + i % 2),
            });
        }
        Case {
            pods: pods.iter().map(|p| p.to_string()).collect(),
            policies: Vec::new(),
            inventory,
        }
    }

    /// CreatePolicy / UpdatePolicy: a policy of the same namespace and name
    /// is replaced.
    pub fn create(&mut self, policy: NetworkPolicy) {
        self.policies
            .retain(|p| !(p.namespace == policy.namespace && p.name == policy.name));
        self.policies.push(policy);
    }

    pub fn delete_all(&mut self) {
        self.policies.clear();
    }

    fn workload(&mut self, pod: &str) -> &mut Workload {
        let (ns, name) = pod.split_once('/').unwrap();
        self.inventory
            .workloads
            .iter_mut()
            .find(|w| w.namespace == ns && w.name == name)
            .unwrap()
    }

    pub fn add_pod_labels(&mut self, pod: &str, pairs: &[(&str, &str)]) {
        self.workload(pod).labels.extend(labels(pairs));
    }

    pub fn add_namespace_label(&mut self, ns: &str, key: &str, value: &str) {
        for w in self
            .inventory
            .workloads
            .iter_mut()
            .filter(|w| w.namespace == ns)
        {
            w.namespace_labels.insert(key.into(), value.into());
        }
    }

    pub fn pod_ip(&self, pod: &str) -> String {
        let (ns, name) = pod.split_once('/').unwrap();
        let w = self
            .inventory
            .workloads
            .iter()
            .find(|w| w.namespace == ns && w.name == name)
            .unwrap();
        w.ips[0].to_string()
    }

    pub fn reachability(&self) -> Reach {
        Reach {
            expected: self
                .pods
                .iter()
                .flat_map(|f| {
                    self.pods
                        .iter()
                        .map(move |t| ((f.clone(), t.clone()), true))
                })
                .collect(),
            pods: self.pods.clone(),
        }
    }

    /// ValidateOrFail: the whole matrix, loopback ignored as upstream does
    /// (kubernetes#95879), every cell computed both ways.
    pub fn validate(&self, port: u16, proto: Protocol, want: &Reach) {
        let checked = Checked::new(&self.policies, &self.inventory);
        let mut got = BTreeMap::new();
        for from in &self.pods {
            for to in &self.pods {
                let flow = Flow {
                    src: ip(&self.pod_ip(from)),
                    dst: ip(&self.pod_ip(to)),
                    proto,
                    port,
                };
                got.insert((from.clone(), to.clone()), checked.verdict(&flow).allowed);
            }
        }
        let wrong: Vec<_> = got
            .iter()
            .filter(|((f, t), v)| f != t && want.expected[&(f.clone(), t.clone())] != **v)
            .collect();
        assert!(
            wrong.is_empty(),
            "{}/{port}: {} cells differ from upstream's table\nexpected:\n{}got:\n{}",
            proto_name(proto),
            wrong.len(),
            render(&self.pods, &want.expected),
            render(&self.pods, &got)
        );
    }
}

fn render(pods: &[String], m: &BTreeMap<(String, String), bool>) -> String {
    let mut s = format!("{:6}", "");
    for t in pods {
        s.push_str(&format!("{t:>5}"));
    }
    s.push('\n');
    for f in pods {
        s.push_str(&format!("{f:6}"));
        for t in pods {
            s.push_str(if m[&(f.clone(), t.clone())] {
                "    ."
            } else {
                "    X"
            });
        }
        s.push('\n');
    }
    s
}

/// Upstream's Reachability: a default-true matrix narrowed by expectations.
/// Patterns: "" any pod, "x" any pod of namespace x, "x/a" one pod.
pub struct Reach {
    pods: Vec<String>,
    expected: BTreeMap<(String, String), bool>,
}

fn matches(pattern: &str, pod: &str) -> bool {
    pattern.is_empty() || pattern == pod || pod.split_once('/').unwrap().0 == pattern
}

impl Reach {
    pub fn expect_peer(&mut self, from: &str, to: &str, v: bool) {
        for ((f, t), cell) in self.expected.iter_mut() {
            if matches(from, f) && matches(to, t) {
                *cell = v;
            }
        }
    }

    pub fn expect(&mut self, from: &str, to: &str, v: bool) {
        assert!(self.pods.iter().any(|p| p == from) && self.pods.iter().any(|p| p == to));
        self.expected.insert((from.into(), to.into()), v);
    }

    pub fn expect_all_ingress(&mut self, pod: &str, v: bool) {
        self.expect_peer("", pod, v);
    }

    pub fn expect_all_egress(&mut self, pod: &str, v: bool) {
        self.expect_peer(pod, "", v);
    }
}
