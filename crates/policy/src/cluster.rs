//! ClusterNetworkPolicy (`policy.networking.k8s.io/v1alpha2`, from
//! sigs.k8s.io/network-policy-api v0.3.0) in the crate's own types, close to
//! the API's fields, with its validation and its fail-closed reading.
//!
//! The tiers, as the API defines them: Admin rules (lower `priority` first,
//! then rule order) before NetworkPolicy; Accept allows and Deny denies with
//! no further evaluation, Pass skips to the NetworkPolicy tier. NetworkPolicy
//! decides for every pod it isolates. The Baseline tier applies only to
//! traffic no NetworkPolicy isolates; a Pass there (or no match) leaves
//! Kubernetes' default allow. See `evaluate.rs` and `tiers.rs`.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::model::{valid_port_name, Direction, Protocol, Workload};
use crate::selector::LabelSelector;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Tier {
    Admin,
    Baseline,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Admin => "Admin",
            Tier::Baseline => "Baseline",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ClusterAction {
    Accept,
    Deny,
    Pass,
}

impl fmt::Display for ClusterAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClusterAction::Accept => "Accept",
            ClusterAction::Deny => "Deny",
            ClusterAction::Pass => "Pass",
        })
    }
}

/// A ClusterNetworkPolicy (cluster-scoped: a name, no namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNetworkPolicy {
    pub name: String,
    pub tier: Tier,
    /// 0..=1000; lower first within the tier.
    pub priority: u32,
    pub subject: ClusterSubject,
    /// In order of precedence. No rule: the policy does not affect ingress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<ClusterRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<ClusterRule>,
}

/// `spec.subject`: exactly one of the two (the API's MaxProperties=1).
/// hostNetwork pods are never selected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClusterSubject {
    /// Every pod of the namespaces whose labels match.
    Namespaces(LabelSelector),
    Pods(NamespacedPod),
    /// Neither or both set (a newer API?): selects every pod, so the
    /// policy can only close.
    Unsupported(String),
}

/// `pods`: namespaceSelector AND podSelector (`{}` = all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedPod {
    #[serde(default)]
    pub namespace_selector: LabelSelector,
    pub pod_selector: LabelSelector,
}

/// An ingress (`from`) or egress (`to`) rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRule {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub action: ClusterAction,
    /// At least one (the API's MinItems=1); any may match.
    #[serde(alias = "from", alias = "to")]
    pub peers: Vec<ClusterPeer>,
    /// Empty: every protocol and port (ICMP included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<ClusterPort>,
}

/// A peer: exactly one field of the API's peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClusterPeer {
    /// Every pod (not hostNetwork) of the matching namespaces.
    Namespaces(LabelSelector),
    Pods(NamespacedPod),
    /// Egress only: the addresses of the matching nodes (hostNetwork pods
    /// are their node). weft's identities know "a node", not node labels,
    /// so only `{}` (every node) compiles; anything else fails closed.
    Nodes(LabelSelector),
    /// Egress only: CIDRs (masked), matching every address in them, pods
    /// and nodes included.
    Networks(Vec<IpNet>),
    /// A peer the compiler cannot express (`domainNames`, a field of a
    /// newer API, no field at all), with what it was. Fails closed.
    Unsupported(String),
}

/// A `protocols` item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClusterPort {
    /// `tcp|udp|sctp: {destinationPort: {number}}`.
    Number { protocol: Protocol, port: u16 },
    /// `... destinationPort: {range: {start, end}}` (inclusive).
    Range {
        protocol: Protocol,
        start: u16,
        end: u16,
    },
    /// `destinationNamedPort`: the container port of that name on the
    /// destination pod, with its own protocol.
    Named(String),
    /// An item this reader cannot express; fails its rule closed.
    Unsupported(String),
}

/// How a rule reads after validation: the API's fail-closed rule for a peer
/// it cannot understand, applied to every invalid part ("For Accept rules,
/// fail closed means: treat the rule as matching no traffic. For Deny and
/// Pass rules, treat the rule as a Deny all rule").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effective<'a> {
    Rule(&'a ClusterRule),
    /// Denies every peer, protocol and port.
    DenyAll,
    /// Matches nothing.
    Nothing,
}

impl ClusterNetworkPolicy {
    pub fn rules(&self, dir: Direction) -> &[ClusterRule] {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// Policy-wide faults: every rule of such a policy fails closed, and a
    /// bad subject selects every pod (it can then only close).
    pub fn policy_fault(&self) -> Option<String> {
        if self.priority > 1000 {
            return Some(format!("priority {} is above 1000", self.priority));
        }
        self.subject_fault()
    }

    fn subject_fault(&self) -> Option<String> {
        let r = match &self.subject {
            ClusterSubject::Namespaces(s) => s.validate(),
            ClusterSubject::Pods(p) => p
                .namespace_selector
                .validate()
                .and_then(|_| p.pod_selector.validate()),
            ClusterSubject::Unsupported(what) => return Some(format!("subject: {what}")),
        };
        r.err().map(|e| format!("subject: {e}"))
    }

    /// Whether the policy applies to `w` (never to hostNetwork pods).
    pub fn selects(&self, w: &Workload) -> bool {
        if w.host_network {
            return false;
        }
        if self.subject_fault().is_some() {
            return true;
        }
        match &self.subject {
            ClusterSubject::Namespaces(s) => s.matches(&w.namespace_labels),
            ClusterSubject::Pods(p) => p.matches(w),
            ClusterSubject::Unsupported(_) => true,
        }
    }

    /// What is wrong with rule `index` of `dir`, if anything.
    pub fn rule_fault(&self, dir: Direction, index: usize) -> Option<String> {
        if let Some(f) = self.policy_fault() {
            return Some(f);
        }
        let rule = &self.rules(dir)[index];
        let at = |m: String| Some(format!("{dir}[{index}]: {m}"));
        if rule.peers.is_empty() {
            return at("a rule needs at least one peer".into());
        }
        for peer in &rule.peers {
            if let Some(m) = peer.fault(dir) {
                return at(m);
            }
        }
        for port in &rule.protocols {
            if let Some(m) = port.fault() {
                return at(m);
            }
        }
        None
    }

    /// Rule `index` of `dir` as evaluation and compilation read it.
    pub fn effective(&self, dir: Direction, index: usize) -> Effective<'_> {
        let rule = &self.rules(dir)[index];
        match (self.rule_fault(dir, index), rule.action) {
            (None, _) => Effective::Rule(rule),
            (Some(_), ClusterAction::Accept) => Effective::Nothing,
            (Some(_), ClusterAction::Deny | ClusterAction::Pass) => Effective::DenyAll,
        }
    }

    /// Every fault, one line each (`Compiled::rejected_cluster`).
    pub fn faults(&self) -> Vec<String> {
        if let Some(f) = self.policy_fault() {
            return vec![f];
        }
        [Direction::Ingress, Direction::Egress]
            .into_iter()
            .flat_map(|d| (0..self.rules(d).len()).filter_map(move |i| self.rule_fault(d, i)))
            .collect()
    }
}

impl NamespacedPod {
    pub fn matches(&self, w: &Workload) -> bool {
        !w.host_network
            && self.namespace_selector.matches(&w.namespace_labels)
            && self.pod_selector.matches(&w.labels)
    }
}

impl ClusterPeer {
    fn fault(&self, dir: Direction) -> Option<String> {
        let sel = |s: &LabelSelector| s.validate().err().map(|e| e.to_string());
        match self {
            ClusterPeer::Namespaces(s) => sel(s),
            ClusterPeer::Pods(p) => sel(&p.namespace_selector).or_else(|| sel(&p.pod_selector)),
            ClusterPeer::Nodes(_) | ClusterPeer::Networks(_) if dir == Direction::Ingress => {
                Some("nodes and networks peers exist only in egress rules".into())
            }
            ClusterPeer::Nodes(s) if !s.is_empty() => Some(
                "a nodes peer with a selector is not supported (weft's identities know \
                 \"a node\", not node labels); use nodes: {} or networks"
                    .into(),
            ),
            ClusterPeer::Nodes(_) => None,
            ClusterPeer::Networks(nets) if nets.is_empty() => {
                Some("networks needs at least one CIDR".into())
            }
            ClusterPeer::Networks(nets) => nets
                .iter()
                .find(|n| n.trunc() != **n)
                .map(|n| format!("network {n} has host bits set (write {})", n.trunc())),
            ClusterPeer::Unsupported(what) => Some(format!("unsupported peer: {what}")),
        }
    }

    /// Whether the peer names the address `addr` owned by `end` (the
    /// evaluator's reading; the compiler reads identities).
    pub fn matches(&self, end: crate::evaluate::End<'_>, addr: IpAddr) -> bool {
        use crate::evaluate::End;
        match self {
            ClusterPeer::Namespaces(s) => {
                matches!(end, End::Pod(w) if s.matches(&w.namespace_labels))
            }
            ClusterPeer::Pods(p) => matches!(end, End::Pod(w) if p.matches(w)),
            ClusterPeer::Nodes(s) => matches!(end, End::Node(_)) && s.is_empty(),
            ClusterPeer::Networks(nets) => nets.iter().any(|n| n.contains(&addr)),
            ClusterPeer::Unsupported(_) => false,
        }
    }
}

impl ClusterPort {
    fn fault(&self) -> Option<String> {
        match self {
            ClusterPort::Number { port: 0, .. } => Some("port 0 is not a port".into()),
            ClusterPort::Range { start, end, .. } if *start == 0 || start >= end => Some(format!(
                "range {start}-{end}: start must be at least 1 and below end"
            )),
            ClusterPort::Named(n) if !valid_port_name(n) => {
                Some(format!("{n:?} is not a valid port name (IANA_SVC_NAME)"))
            }
            _ => None,
        }
    }

    /// Whether `proto`/`port` to `destination` matches (a named port needs
    /// a destination pod that has it).
    pub fn matches(&self, proto: Protocol, port: u16, destination: Option<&Workload>) -> bool {
        match self {
            ClusterPort::Number { protocol, port: p } => *protocol == proto && *p == port,
            ClusterPort::Range {
                protocol,
                start,
                end,
            } => *protocol == proto && (*start..=*end).contains(&port),
            ClusterPort::Named(name) => destination
                .and_then(|d| d.named_ports.get(name))
                .is_some_and(|&(n, p)| n == port && p == proto),
            ClusterPort::Unsupported(_) => false,
        }
    }
}

impl ClusterPeer {
    /// Whether the peer names the addresses of identity `key` (the
    /// compiler's reading: pods by their labels, nodes as host or remote
    /// node, networks by the CIDR piece, as `ipBlock` is read).
    #[cfg(test)]
    pub(crate) fn selects_identity(&self, key: &crate::identity::IdentityKey) -> bool {
        use crate::identity::Subject;
        match (self, &key.subject) {
            (
                ClusterPeer::Namespaces(s),
                Subject::Pod {
                    namespace_labels, ..
                },
            ) => s.matches(namespace_labels),
            (
                ClusterPeer::Pods(p),
                Subject::Pod {
                    labels,
                    namespace_labels,
                    ..
                },
            ) => p.namespace_selector.matches(namespace_labels) && p.pod_selector.matches(labels),
            (ClusterPeer::Nodes(s), Subject::Host | Subject::RemoteNode) => s.is_empty(),
            // The piece is the longest named prefix around the address, so
            // it lies inside a network iff the address does.
            (ClusterPeer::Networks(nets), _) => key
                .cidr
                .is_some_and(|piece| nets.iter().any(|n| n.contains(&piece))),
            _ => false,
        }
    }
}
