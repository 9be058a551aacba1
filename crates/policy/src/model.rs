//! The inputs, close to the fields of `networking.k8s.io/v1` NetworkPolicy
//! and of the pods, namespaces and nodes they talk about. The Kubernetes
//! adapter converts into these; nothing here knows about the API client.
//!
//! `None` and `Some(vec![])` are kept apart on purpose: the API gives
//! `ingress: []` / `ingress: null` (no rule: nothing allowed) a different
//! meaning from a rule whose `from: []` / `from: null` (all sources) — see
//! the field docs below and `tests/semantics_*.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::selector::{LabelSelector, Labels};
use crate::PolicyError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    /// The IP protocol number, as the map key carries it.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

/// A `policyTypes` item, and the direction of a map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Direction {
    Ingress,
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicy {
    pub namespace: String,
    pub name: String,
    /// Selects the pods of `namespace` the policy applies to; `{}` = all.
    pub pod_selector: LabelSelector,
    /// Absent or empty: Ingress always, Egress iff `egress` has at least one
    /// rule (the API server's SetDefaults_NetworkPolicy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<Direction>>,
    /// Ingress rules; `None` and `Some([])` both mean "no rule": a selected
    /// pod isolated for ingress by this policy gets nothing from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<Rule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<Rule>>,
    /// Annotated `weft.dev/audit: "true"` (itself or its namespace):
    /// compiled and evaluated, never enforced (see [`crate::audit`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub audit: bool,
}

/// An ingress rule (`from`) or egress rule (`to`): the traffic must match
/// both `peers` and `ports`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// `from` / `to`. The API: "If this field is empty or missing, this rule
    /// matches all sources (traffic not restricted by source)" — `None` and
    /// `Some([])` both mean every peer, the world included.
    #[serde(
        default,
        alias = "from",
        alias = "to",
        skip_serializing_if = "Option::is_none"
    )]
    pub peers: Option<Vec<Peer>>,
    /// "If this field is empty or missing, this rule matches all ports" —
    /// and all protocols.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PolicyPort>>,
}

/// A `NetworkPolicyPeer`: `ipBlock` alone, or selectors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    /// Absent: all pods (of the namespaces chosen below). `{}`: the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Absent: the policy's own namespace. `{}`: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpBlock {
    pub cidr: IpNet,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<IpNet>,
}

impl IpBlock {
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.cidr.contains(&addr) && !self.except.iter().any(|e| e.contains(&addr))
    }
}

/// A `NetworkPolicyPort`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPort {
    /// Absent: TCP (the API's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Absent: every port of the protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortRef>,
    /// With a numbered `port`: the inclusive range `port..=end_port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
}

impl PolicyPort {
    pub fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or(Protocol::Tcp)
    }
}

/// `port`: an IntOrString.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    Number(u16),
    /// A container port name, resolved on the destination pod.
    Name(String),
}

/// A pod (or, with `host_network`, a process of the node).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// The namespace's labels (the API server sets
    /// `kubernetes.io/metadata.name`; the adapter passes them through).
    pub namespace_labels: Labels,
    pub ips: Vec<IpAddr>,
    /// Container port name -> (number, protocol).
    #[serde(default)]
    pub named_ports: BTreeMap<String, (u16, Protocol)>,
    /// Policies never select these, and as peers they are their node.
    #[serde(default)]
    pub host_network: bool,
    /// The node the pod runs on: traffic from it is always let in.
    pub node: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub ips: Vec<IpAddr>,
}

/// Everything a verdict depends on besides the policies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub workloads: Vec<Workload>,
    pub nodes: Vec<Node>,
}

/// One packet's worth of question: may `src` open `proto`/`port` on `dst`?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Protocol,
    pub port: u16,
}

/// `namespace/name` of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl NetworkPolicy {
    pub fn reference(&self) -> PolicyRef {
        PolicyRef {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// Which directions the policy isolates its pods in (policyTypes with
    /// the API server's defaulting).
    pub fn affects(&self, dir: Direction) -> bool {
        match &self.policy_types {
            Some(types) if !types.is_empty() => types.contains(&dir),
            _ => match dir {
                Direction::Ingress => true,
                Direction::Egress => self.egress.as_ref().is_some_and(|e| !e.is_empty()),
            },
        }
    }

    pub fn rules(&self, dir: Direction) -> &[Rule] {
        let rules = match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        };
        rules.as_deref().unwrap_or(&[])
    }

    /// The API server's validation (ValidateNetworkPolicySpec) of what the
    /// semantics depend on. The API server rejects such objects; a compiler
    /// that meets one anyway (version skew, a bad conversion) fails closed.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let at = |e: PolicyError| PolicyError::Invalid {
            policy: self.reference().to_string(),
            reason: e.to_string(),
        };
        self.pod_selector.validate().map_err(at)?;
        for dir in [Direction::Ingress, Direction::Egress] {
            for rule in self.rules(dir) {
                for peer in rule.peers.iter().flatten() {
                    peer.validate().map_err(at)?;
                }
                for port in rule.ports.iter().flatten() {
                    port.validate().map_err(at)?;
                }
            }
        }
        Ok(())
    }
}

impl Peer {
    fn validate(&self) -> Result<(), PolicyError> {
        let bad = |m: &str| Err(PolicyError::Peer(m.to_string()));
        match (&self.ip_block, &self.pod_selector, &self.namespace_selector) {
            (None, None, None) => {
                return bad("a peer must set podSelector, namespaceSelector or ipBlock")
            }
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return bad("ipBlock cannot be combined with podSelector or namespaceSelector")
            }
            _ => {}
        }
        if let Some(s) = &self.pod_selector {
            s.validate()?;
        }
        if let Some(s) = &self.namespace_selector {
            s.validate()?;
        }
        if let Some(b) = &self.ip_block {
            for e in &b.except {
                // The API: an except must be strictly inside the cidr.
                if !(b.cidr.contains(e) && e.prefix_len() > b.cidr.prefix_len()) {
                    return Err(PolicyError::Peer(format!(
                        "except {e} is not strictly inside cidr {}",
                        b.cidr
                    )));
                }
            }
        }
        Ok(())
    }
}

impl PolicyPort {
    fn validate(&self) -> Result<(), PolicyError> {
        let bad = |m: String| Err(PolicyError::Port(m));
        match (&self.port, self.end_port) {
            (Some(PortRef::Number(0)), _) => return bad("port 0 is not a port".into()),
            (Some(PortRef::Name(n)), _) if !valid_port_name(n) => {
                return bad(format!("{n:?} is not a valid port name (IANA_SVC_NAME)"))
            }
            (Some(PortRef::Name(_)), Some(_)) => return bad("endPort needs a numbered port".into()),
            (None, Some(_)) => return bad("endPort needs a port".into()),
            (Some(PortRef::Number(p)), Some(e)) if e < *p => {
                return bad(format!("endPort {e} is below port {p}"))
            }
            _ => {}
        }
        Ok(())
    }
}

/// IANA_SVC_NAME: 1-15 of [a-z0-9-], at least one letter, no hyphen at
/// either end and no two in a row.
pub fn valid_port_name(n: &str) -> bool {
    (1..=15).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && n.bytes().any(|b| b.is_ascii_lowercase())
        && !n.starts_with('-')
        && !n.ends_with('-')
        && !n.contains("--")
}
