//! A straightforward evaluator read off the `networking.k8s.io/v1` field
//! docs, with no identities, maps or precomputation: the reference the
//! compiled state is tested against.
//!
//! Parameters are named by role. The *subject* is the pod a policy applies
//! to; the *peer* is the other end. For egress the subject is the source and
//! the peer the destination; for ingress it is the other way round, and a
//! named port always resolves on the destination (the subject for ingress,
//! the peer for egress).

use std::net::IpAddr;

use crate::model::{
    Direction, Flow, Inventory, NetworkPolicy, Peer, PolicyPort, PortRef, Protocol, Rule, Workload,
};
use crate::verdict::{AllowedBy, DirectionVerdict, RuleRef, Verdict};

/// What an address is, from the policies' point of view.
#[derive(Debug, Clone, Copy)]
pub enum End<'a> {
    /// A pod with its own network namespace.
    Pod(&'a Workload),
    /// A node's address (hostNetwork pods included), by node name.
    Node(&'a str),
    /// Anything else.
    World,
}

impl Inventory {
    /// Who owns `addr`: pods first, then nodes and hostNetwork pods.
    pub fn resolve(&self, addr: IpAddr) -> End<'_> {
        if let Some(w) = self
            .workloads
            .iter()
            .find(|w| !w.host_network && w.ips.contains(&addr))
        {
            return End::Pod(w);
        }
        if let Some(n) = self.nodes.iter().find(|n| n.ips.contains(&addr)) {
            return End::Node(&n.name);
        }
        if let Some(w) = self
            .workloads
            .iter()
            .find(|w| w.host_network && w.ips.contains(&addr))
        {
            return End::Node(&w.node);
        }
        End::World
    }
}

/// The verdict for one flow: egress at the source pod, ingress at the
/// destination pod.
pub fn evaluate(policies: &[NetworkPolicy], inventory: &Inventory, flow: &Flow) -> Verdict {
    let src = inventory.resolve(flow.src);
    let dst = inventory.resolve(flow.dst);
    let egress = match src {
        End::Pod(subject) => {
            evaluate_direction(policies, Direction::Egress, subject, dst, flow.dst, flow)
        }
        _ => DirectionVerdict::NotApplicable,
    };
    let ingress = match dst {
        End::Pod(subject) => {
            evaluate_direction(policies, Direction::Ingress, subject, src, flow.src, flow)
        }
        _ => DirectionVerdict::NotApplicable,
    };
    Verdict::new(egress, ingress)
}

/// "Traffic is allowed if there are no NetworkPolicies selecting the pod,
/// OR if the traffic source is the pod's local node (ingress), OR if the
/// traffic matches at least one rule across all of the NetworkPolicy
/// objects whose podSelector matches the pod."
pub fn evaluate_direction(
    policies: &[NetworkPolicy],
    dir: Direction,
    subject: &Workload,
    peer: End<'_>,
    peer_addr: IpAddr,
    flow: &Flow,
) -> DirectionVerdict {
    let selecting: Vec<&NetworkPolicy> = policies
        .iter()
        .filter(|p| p.namespace == subject.namespace && p.affects(dir) && selects(p, subject))
        .collect();
    let Some(isolating) = selecting.iter().map(|p| p.reference()).min() else {
        return DirectionVerdict::NotIsolated;
    };
    if dir == Direction::Ingress {
        if let End::Node(node) = peer {
            if node == subject.node {
                return DirectionVerdict::Allowed(AllowedBy::LocalNode);
            }
        }
    }
    let destination = match dir {
        Direction::Ingress => Some(subject),
        Direction::Egress => match peer {
            End::Pod(w) => Some(w),
            _ => None,
        },
    };
    let mut allowed: Option<AllowedBy> = None;
    for policy in selecting {
        // An invalid policy isolates and opens nothing (fail closed).
        if policy.validate().is_err() {
            continue;
        }
        for (index, rule) in policy.rules(dir).iter().enumerate() {
            if rule_matches(policy, rule, peer, peer_addr, destination, flow) {
                let by = AllowedBy::Rule(RuleRef {
                    policy: policy.reference(),
                    direction: dir,
                    index,
                });
                if allowed.as_ref().is_none_or(|a| by < *a) {
                    allowed = Some(by);
                }
            }
        }
    }
    match allowed {
        Some(by) => DirectionVerdict::Allowed(by),
        None => DirectionVerdict::Denied(isolating),
    }
}

/// Whether `policy` applies to `subject`. A policy whose podSelector is
/// invalid cannot say which pods it means: it is taken to select every pod
/// of its namespace, so it can only close.
fn selects(policy: &NetworkPolicy, subject: &Workload) -> bool {
    if subject.host_network {
        return false;
    }
    if policy.pod_selector.validate().is_err() {
        return true;
    }
    policy.pod_selector.matches(&subject.labels)
}

fn rule_matches(
    policy: &NetworkPolicy,
    rule: &Rule,
    peer: End<'_>,
    peer_addr: IpAddr,
    destination: Option<&Workload>,
    flow: &Flow,
) -> bool {
    let peers_ok = match &rule.peers {
        None => true,
        Some(list) if list.is_empty() => true,
        Some(list) => list
            .iter()
            .any(|p| peer_matches(policy, p, peer, peer_addr)),
    };
    let ports_ok = match &rule.ports {
        None => true,
        Some(list) if list.is_empty() => true,
        Some(list) => list
            .iter()
            .any(|p| port_matches(p, flow.proto, flow.port, destination)),
    };
    peers_ok && ports_ok
}

fn peer_matches(policy: &NetworkPolicy, peer: &Peer, end: End<'_>, addr: IpAddr) -> bool {
    if let Some(block) = &peer.ip_block {
        return block.contains(addr);
    }
    // Selectors name pods only: nodes and the world are reached by ipBlock.
    let End::Pod(pod) = end else { return false };
    let namespace_ok = match &peer.namespace_selector {
        None => pod.namespace == policy.namespace,
        Some(sel) => sel.matches(&pod.namespace_labels),
    };
    let pod_ok = match &peer.pod_selector {
        None => true,
        Some(sel) => sel.matches(&pod.labels),
    };
    namespace_ok && pod_ok
}

fn port_matches(
    port: &PolicyPort,
    proto: Protocol,
    number: u16,
    destination: Option<&Workload>,
) -> bool {
    if port.protocol() != proto {
        return false;
    }
    match (&port.port, port.end_port) {
        (None, _) => true,
        (Some(PortRef::Number(p)), None) => *p == number,
        (Some(PortRef::Number(p)), Some(end)) => (*p..=end).contains(&number),
        (Some(PortRef::Name(name)), _) => destination
            .and_then(|d| d.named_ports.get(name))
            .is_some_and(|&(n, pr)| n == number && pr == proto),
    }
}
