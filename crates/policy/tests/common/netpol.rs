//! The upstream e2e suite's world (kubernetes/kubernetes
//! test/e2e/network/netpol): namespaces x, y, z, pods named a, b, c labelled
//! `pod=<name>`, namespaces labelled `ns=<name>` and
//! `kubernetes.io/metadata.name=<name>`, each pod serving the case's ports
//! and protocols with container ports named `serve-<port>-<proto>`. The
//! cases and their `Reachability` tables live in `crates/netpol-cases`;
//! here the matrix is computed, not probed: each cell by the compiled maps
//! and by the evaluator.

use std::collections::BTreeMap;

use weft_netpol_cases::{Driver, Reach};
use weft_policy::*;

use super::{ip, labels, namespace_labels, Checked};

#[derive(Default)]
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

    fn workload(&mut self, pod: &str) -> &mut Workload {
        let (ns, name) = pod.split_once('/').unwrap();
        self.inventory
            .workloads
            .iter_mut()
            .find(|w| w.namespace == ns && w.name == name)
            .unwrap()
    }
}

impl Driver for Case {
    fn start(&mut self, pods: &[&str], protocols: &[Protocol], ports: &[u16]) {
        *self = Case::new(pods, protocols, ports);
    }

    /// CreatePolicy / UpdatePolicy: a policy of the same namespace and name
    /// is replaced.
    fn create(&mut self, policy: NetworkPolicy) {
        self.policies
            .retain(|p| !(p.namespace == policy.namespace && p.name == policy.name));
        self.policies.push(policy);
    }

    fn delete_all(&mut self) {
        self.policies.clear();
    }

    fn add_pod_labels(&mut self, pod: &str, pairs: &[(&str, &str)]) {
        self.workload(pod).labels.extend(labels(pairs));
    }

    fn add_namespace_label(&mut self, ns: &str, key: &str, value: &str) {
        for w in self
            .inventory
            .workloads
            .iter_mut()
            .filter(|w| w.namespace == ns)
        {
            w.namespace_labels.insert(key.into(), value.into());
        }
    }

    fn pod_ip(&self, pod: &str) -> String {
        let (ns, name) = pod.split_once('/').unwrap();
        let w = self
            .inventory
            .workloads
            .iter()
            .find(|w| w.namespace == ns && w.name == name)
            .unwrap();
        w.ips[0].to_string()
    }

    fn reachability(&self) -> Reach {
        Reach::all_allowed(&self.pods)
    }

    /// ValidateOrFail: the whole matrix, loopback ignored as upstream does
    /// (kubernetes#95879), every cell computed both ways.
    fn validate(&self, port: u16, proto: Protocol, want: &Reach) {
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
        let wrong = want.wrong(&got);
        assert!(
            wrong.is_empty(),
            "{}/{port}: {} cells differ from upstream's table\nexpected:\n{}got:\n{}",
            proto_name(proto),
            wrong.len(),
            Reach::render(&self.pods, &want.expected),
            Reach::render(&self.pods, &got)
        );
    }
}
