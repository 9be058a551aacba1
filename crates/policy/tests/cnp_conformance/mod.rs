//! The world of network-policy-api's conformance suite (v0.3.0,
//! `conformance/base/manifests.yaml`), computed instead of probed: four
//! houses (namespaces `network-policy-conformance-<house>` labelled
//! `conformance-house: <house>`), two pods each (a StatefulSet:
//! `<name>-0`, `<name>-1`, labelled `conformance-house: <house>`, serving
//! TCP 80 (`web`) and 8080, UDP 53 (`dns`) and 5353, SCTP 9003 and 9005),
//! and the forbidden forrest, whose two `centaur` pods are hostNetwork (so
//! they are their nodes' addresses) and serve the suite's HostNetworkPorts
//! (`34000 + i` here). Each probe is judged by the compiled maps (the
//! program's identity-then-ANY lookup) and by the evaluator, which must
//! agree to the attribution, and must give upstream's expectation.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use weft_policy::*;

pub use weft_policy::Protocol::{Sctp, Tcp, Udp};

pub const HOUSES: [(&str, &str); 4] = [
    ("gryffindor", "harry-potter"),
    ("slytherin", "draco-malfoy"),
    ("hufflepuff", "cedric-diggory"),
    ("ravenclaw", "luna-lovegood"),
];

pub const NODES: [(&str, &str); 2] = [("node-1", "198.18.0.1"), ("node-2", "198.18.0.2")];

pub fn namespace(house: &str) -> String {
    format!("network-policy-conformance-{house}")
}

fn house_labels(house: &str) -> Labels {
    [("conformance-house".to_string(), house.to_string())].into()
}

fn namespace_labels(house: &str) -> Labels {
    let mut l = house_labels(house);
    l.insert("kubernetes.io/metadata.name".into(), namespace(house));
    l
}

pub struct World {
    pub inventory: Inventory,
    pub cluster: Vec<ClusterNetworkPolicy>,
    pub policies: Vec<NetworkPolicy>,
    pub probes: usize,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    pub fn new() -> World {
        let mut workloads = Vec::new();
        for (h, (house, name)) in HOUSES.iter().enumerate() {
            for (i, (node, _)) in NODES.iter().enumerate() {
                workloads.push(Workload {
                    namespace: namespace(house),
                    name: format!("{name}-{i}"),
                    // A StatefulSet's pods also carry their own name.
                    labels: {
                        let mut l = house_labels(house);
                        l.insert(
                            "statefulset.kubernetes.io/pod-name".into(),
                            format!("{name}-{i}"),
                        );
                        l
                    },
                    namespace_labels: namespace_labels(house),
                    ips: vec![format!("10.244.{h}.{}", 10 + i).parse().unwrap()],
                    named_ports: BTreeMap::from([
                        ("web".to_string(), (80, Protocol::Tcp)),
                        ("dns".to_string(), (53, Protocol::Udp)),
                    ]),
                    host_network: false,
                    node: node.to_string(),
                });
            }
        }
        for (i, (node, addr)) in NODES.iter().enumerate() {
            workloads.push(Workload {
                namespace: namespace("forbidden-forrest"),
                name: format!("centaur-{i}"),
                labels: house_labels("forbidden-forrest"),
                namespace_labels: namespace_labels("forbidden-forrest"),
                ips: vec![addr.parse().unwrap()],
                named_ports: BTreeMap::new(),
                host_network: true,
                node: node.to_string(),
            });
        }
        World {
            inventory: Inventory {
                workloads,
                nodes: NODES
                    .iter()
                    .map(|(n, a)| Node {
                        name: n.to_string(),
                        ips: vec![a.parse().unwrap()],
                    })
                    .collect(),
            },
            cluster: Vec::new(),
            policies: Vec::new(),
            probes: 0,
        }
    }

    /// Applies one of upstream's manifests (`tests/cnp_upstream/*.json`),
    /// which weft must read without a fault.
    pub fn apply(&mut self, manifest: &str) {
        let faults = self.apply_with_faults(manifest);
        assert!(faults.is_empty(), "{manifest}: {faults:?}");
    }

    /// Applies a manifest and returns its ClusterNetworkPolicies' faults.
    pub fn apply_with_faults(&mut self, manifest: &str) -> Vec<String> {
        let mut faults = Vec::new();
        let path = format!(
            "{}/tests/cnp_upstream/{manifest}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let docs: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        for doc in docs {
            match doc["kind"].as_str() {
                Some("ClusterNetworkPolicy") => {
                    let api: ApiClusterNetworkPolicy = serde_json::from_value(doc).unwrap();
                    let cnp = api.to_model().unwrap();
                    faults.extend(cnp.faults());
                    self.cluster.retain(|c| c.name != cnp.name);
                    self.cluster.push(cnp);
                }
                Some("NetworkPolicy") => {
                    let mut flat = doc["spec"].clone();
                    flat["namespace"] = doc["metadata"]["namespace"].clone();
                    flat["name"] = doc["metadata"]["name"].clone();
                    // `podSelector: null` reads as {} (all pods), as the
                    // API server takes it.
                    if flat["podSelector"].is_null() {
                        flat["podSelector"] = serde_json::json!({});
                    }
                    let np: NetworkPolicy = serde_json::from_value(flat).unwrap();
                    np.validate().unwrap();
                    self.policies
                        .retain(|p| !(p.namespace == np.namespace && p.name == np.name));
                    self.policies.push(np);
                }
                other => panic!("{manifest}: unexpected kind {other:?}"),
            }
        }
        faults
    }

    /// A ClusterNetworkPolicy to mutate (upstream's Patch).
    pub fn cnp(&mut self, name: &str) -> &mut ClusterNetworkPolicy {
        self.cluster
            .iter_mut()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no clusternetworkpolicy {name}"))
    }

    pub fn delete_cnp(&mut self, name: &str) {
        self.cluster.retain(|c| c.name != name);
    }

    pub fn pod(&mut self, pod: &str) -> &mut Workload {
        let (house, name) = pod.split_once('/').unwrap();
        let ns = namespace(house);
        self.inventory
            .workloads
            .iter_mut()
            .find(|w| w.namespace == ns && w.name == name)
            .unwrap_or_else(|| panic!("no pod {pod}"))
    }

    pub fn ip(&mut self, pod: &str) -> IpAddr {
        self.pod(pod).ips[0]
    }

    /// Upstream's PatchNamespace with new labels (kubernetes.io/metadata.name
    /// stays: the API server keeps it).
    pub fn set_namespace_labels(&mut self, house: &str, labels: &[(&str, &str)]) {
        let ns = namespace(house);
        for w in self
            .inventory
            .workloads
            .iter_mut()
            .filter(|w| w.namespace == ns)
        {
            w.namespace_labels = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            w.namespace_labels
                .insert("kubernetes.io/metadata.name".into(), ns.clone());
        }
    }

    /// The pod of that name ("harry-potter-0": names are unique).
    pub fn find(&mut self, pod: &str) -> &mut Workload {
        self.inventory
            .workloads
            .iter_mut()
            .find(|w| w.name == pod)
            .unwrap_or_else(|| panic!("no pod {pod}"))
    }

    /// PokeServer: `"client -> server proto/port"`, by pod names.
    pub fn poke(&mut self, probe: &str, want: bool) {
        let (client, rest) = probe.split_once(" -> ").expect("client -> server");
        let (server, port) = rest.split_once(' ').expect("server proto/port");
        let dst = self.find(server).ips[0];
        self.poke_ip(client, dst, port, want);
    }

    /// PokeServer to an address: `port` is "tcp/80".
    pub fn poke_ip(&mut self, client: &str, dst: IpAddr, port: &str, want: bool) {
        let (proto, port) = port.split_once('/').expect("proto/port");
        let proto = match proto {
            "tcp" => Tcp,
            "udp" => Udp,
            "sctp" => Sctp,
            other => panic!("protocol {other}"),
        };
        let port: u16 = port.parse().expect("a port number");
        let src = self.find(client).ips[0];
        let flow = Flow {
            src,
            dst,
            proto,
            port,
        };
        let compiled = compile_all(
            &self.policies,
            &self.cluster,
            &self.inventory,
            &mut MemoryAllocator::new(),
        )
        .unwrap();
        let by_maps = compiled.check(&flow);
        let by_docs = evaluate_all(&self.policies, &self.cluster, &self.inventory, &flow);
        assert_eq!(
            by_maps,
            by_docs,
            "maps and evaluator disagree on {client} -> {dst} {proto}/{port}\n{}",
            compiled.explain(&flow)
        );
        assert_eq!(
            by_maps.allowed,
            want,
            "{client} -> {dst} {proto}/{port}: {}",
            by_maps.summary()
        );
        self.probes += 1;
    }
}
