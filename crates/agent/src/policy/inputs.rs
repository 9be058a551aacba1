//! The Kubernetes adapter's view cut to the policy compiler's inputs: every
//! pod of the cluster with its labels, its namespace's labels and its named
//! ports, this node, and the NetworkPolicies as the API wrote them. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use weft_k8s as k8s;
use weft_policy as p;

/// What one reconcile round reads from the view.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub pods: Vec<k8s::PodInfo>,
    pub namespaces: Vec<k8s::NamespaceInfo>,
    pub policies: Vec<k8s::NetPolicy>,
    /// ClusterNetworkPolicies (Admin and Baseline tiers), as the adapter keeps them.
    pub cluster: Vec<weft_policy::ClusterNetworkPolicy>,
    /// This node (the only Node weftd watches).
    pub node: Option<k8s::NodeInfo>,
}

fn selector(s: &k8s::LabelSelector) -> p::LabelSelector {
    p::LabelSelector {
        match_labels: s.match_labels.clone(),
        match_expressions: s
            .match_expressions
            .iter()
            .map(|r| p::Requirement {
                key: r.key.clone(),
                operator: match r.operator {
                    k8s::SelectorOp::In => p::Operator::In,
                    k8s::SelectorOp::NotIn => p::Operator::NotIn,
                    k8s::SelectorOp::Exists => p::Operator::Exists,
                    k8s::SelectorOp::DoesNotExist => p::Operator::DoesNotExist,
                },
                values: r.values.clone(),
            })
            .collect(),
    }
}

fn protocol(pr: k8s::Protocol) -> p::Protocol {
    match pr {
        k8s::Protocol::Tcp => p::Protocol::Tcp,
        k8s::Protocol::Udp => p::Protocol::Udp,
        k8s::Protocol::Sctp => p::Protocol::Sctp,
    }
}

fn peer(x: &k8s::Peer) -> p::Peer {
    p::Peer {
        pod_selector: x.pod_selector.as_ref().map(selector),
        namespace_selector: x.namespace_selector.as_ref().map(selector),
        ip_block: x.ip_block.as_ref().map(|b| p::IpBlock {
            cidr: b.cidr,
            except: b.except.clone(),
        }),
    }
}

fn port(x: &k8s::PolicyPort) -> p::PolicyPort {
    p::PolicyPort {
        protocol: Some(protocol(x.protocol)),
        port: x.port.as_ref().map(|r| match r {
            k8s::PortRef::Number(n) => p::PortRef::Number(n.get()),
            k8s::PortRef::Name(s) => p::PortRef::Name(s.clone()),
        }),
        end_port: x.end_port.map(|e| e.get()),
    }
}

fn rule(peers: &Option<Vec<k8s::Peer>>, ports: &Option<Vec<k8s::PolicyPort>>) -> p::Rule {
    p::Rule {
        peers: peers.as_ref().map(|v| v.iter().map(peer).collect()),
        ports: ports.as_ref().map(|v| v.iter().map(port).collect()),
    }
}

pub fn policy(np: &k8s::NetPolicy) -> p::NetworkPolicy {
    p::NetworkPolicy {
        namespace: np.namespace.clone(),
        name: np.name.clone(),
        pod_selector: selector(&np.pod_selector),
        policy_types: np.policy_types.as_ref().map(|t| {
            t.iter()
                .map(|t| match t {
                    k8s::PolicyType::Ingress => p::Direction::Ingress,
                    k8s::PolicyType::Egress => p::Direction::Egress,
                })
                .collect()
        }),
        ingress: np
            .ingress
            .as_ref()
            .map(|v| v.iter().map(|r| rule(&r.from, &r.ports)).collect()),
        egress: np
            .egress
            .as_ref()
            .map(|v| v.iter().map(|r| rule(&r.to, &r.ports)).collect()),
        audit: np.audit,
    }
}

/// The compiler's inputs. `local_ips` gives this node's pods the addresses
/// weftd gave them when the API does not show them yet (a pod's status
/// follows its ADD): the ipcache knows a local pod from its first packet.
pub fn inputs(
    snap: &Snapshot,
    this_node: &str,
    local_ips: &BTreeMap<(String, String), Vec<IpAddr>>,
) -> (Vec<p::NetworkPolicy>, p::Inventory) {
    let ns_labels: BTreeMap<&str, &k8s::Labels> = snap
        .namespaces
        .iter()
        .map(|n| (n.name.as_str(), &n.labels))
        .collect();
    let workloads = snap
        .pods
        .iter()
        // finished pods hold no address any more (it may be another pod's)
        .filter(|pod| !matches!(pod.phase.as_str(), "Succeeded" | "Failed"))
        .map(|pod| {
            let mut ips = pod.ips.clone();
            if ips.is_empty() && pod.node == this_node {
                if let Some(l) = local_ips.get(&(pod.namespace.clone(), pod.name.clone())) {
                    ips = l.clone();
                }
            }
            p::Workload {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                labels: pod.labels.clone(),
                // a namespace not seen yet has no labels: selectors on them
                // match nothing until it is (closing, not opening)
                namespace_labels: ns_labels
                    .get(pod.namespace.as_str())
                    .map(|l| (*l).clone())
                    .unwrap_or_default(),
                ips,
                named_ports: pod
                    .named_ports
                    .iter()
                    .map(|np| (np.name.clone(), (np.port.get(), protocol(np.protocol))))
                    .collect(),
                host_network: pod.host_network,
                node: pod.node.clone(),
            }
        })
        .collect();
    let nodes = snap
        .node
        .iter()
        .map(|n| p::Node {
            name: n.name.clone(),
            ips: n.addresses.clone(),
        })
        .collect();
    let audited: BTreeSet<&str> = snap
        .namespaces
        .iter()
        .filter(|n| n.audit)
        .map(|n| n.name.as_str())
        .collect();
    let mut policies: Vec<p::NetworkPolicy> = snap
        .policies
        .iter()
        .map(|np| {
            let mut p = policy(np);
            // a namespace in audit puts every policy of it in audit
            p.audit |= audited.contains(np.namespace.as_str());
            p
        })
        .collect();
    policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    (policies, p::Inventory { workloads, nodes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU16;

    fn pod(ns: &str, name: &str, node: &str, ips: &[&str]) -> k8s::PodInfo {
        k8s::PodInfo {
            namespace: ns.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            labels: [("app".to_string(), name.to_string())].into(),
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            named_ports: vec![k8s::NamedPort {
                name: "http".into(),
                port: NonZeroU16::new(8080).unwrap(),
                protocol: k8s::Protocol::Tcp,
            }],
            host_network: false,
            node: node.into(),
            phase: "Running".into(),
            terminating: false,
        }
    }

    #[test]
    fn pods_get_namespace_labels_named_ports_and_local_addresses() {
        let mut done = pod("x", "done", "n1", &["10.0.0.9"]);
        done.phase = "Succeeded".into();
        let snap = Snapshot {
            pods: vec![
                pod("x", "web", "n1", &[]),
                pod("x", "far", "n2", &[]),
                pod("y", "db", "n2", &["10.0.1.2"]),
                done,
            ],
            namespaces: vec![k8s::NamespaceInfo {
                name: "x".into(),
                labels: [("team".to_string(), "a".to_string())].into(),
                audit: false,
            }],
            policies: vec![],
            cluster: vec![],
            node: None,
        };
        let local = [(
            ("x".to_string(), "web".to_string()),
            vec!["10.0.0.5".parse().unwrap()],
        )]
        .into();
        let (_, inv) = inputs(&snap, "n1", &local);
        assert_eq!(inv.workloads.len(), 3, "finished pods are left out");
        let web = &inv.workloads[0];
        assert_eq!(web.ips, vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            web.namespace_labels.get("team").map(String::as_str),
            Some("a")
        );
        assert_eq!(web.named_ports["http"], (8080, p::Protocol::Tcp));
        assert!(
            inv.workloads[1].ips.is_empty(),
            "only this node's pods borrow local addresses"
        );
        assert!(
            inv.workloads[2].namespace_labels.is_empty(),
            "namespace not seen yet"
        );
    }

    #[test]
    fn policies_keep_none_and_empty_apart() {
        let np = k8s::NetPolicy {
            namespace: "x".into(),
            name: "p".into(),
            pod_selector: k8s::LabelSelector::default(),
            policy_types: None,
            ingress: Some(vec![
                k8s::IngressRule {
                    from: None,
                    ports: Some(vec![k8s::PolicyPort {
                        protocol: k8s::Protocol::Udp,
                        port: Some(k8s::PortRef::Name("dns".into())),
                        end_port: None,
                    }]),
                },
                k8s::IngressRule {
                    from: Some(vec![]),
                    ports: None,
                },
            ]),
            egress: Some(vec![]),
            audit: false,
        };
        let got = policy(&np);
        let rules = got.ingress.unwrap();
        assert_eq!(rules[0].peers, None);
        assert_eq!(
            rules[0].ports.as_ref().unwrap()[0].port,
            Some(p::PortRef::Name("dns".into()))
        );
        assert_eq!(rules[1].peers, Some(vec![]));
        assert_eq!(got.egress, Some(vec![]));
        assert_eq!(got.policy_types, None);
    }
}
