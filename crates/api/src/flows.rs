//! Flows as `weft observe` and the streaming API show them: one decision of
//! the programs (or a connection's end), with both peers resolved to pods
//! where weftd knows them. The JSON field names are an interface (golden-
//! tested in weftd): add fields, never rename them.
//!
//! The filter is here, beside the type it reads, so weftd (which filters
//! before it sends) and the CLI (which merges nodes) agree on its meaning:
//! values of one flag are alternatives, different flags must all hold
//! (`hubble observe`'s rules).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What the programs decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    Forwarded,
    Dropped,
    /// Would be dropped; audit mode let it pass.
    Audit,
    /// A Service address turned into a backend's.
    Translated,
    /// A code this weft does not know (a newer program).
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Forwarded => "FORWARDED",
            Verdict::Dropped => "DROPPED",
            Verdict::Audit => "AUDIT",
            Verdict::Translated => "TRANSLATED",
            Verdict::Unknown => "UNKNOWN",
        }
    }

    /// Case-insensitive, as users type it.
    pub fn parse(s: &str) -> Option<Verdict> {
        [
            Verdict::Forwarded,
            Verdict::Dropped,
            Verdict::Audit,
            Verdict::Translated,
        ]
        .into_iter()
        .find(|v| v.as_str().eq_ignore_ascii_case(s))
    }
}

/// One side of a flow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub ip: Option<IpAddr>,
    /// 0 for protocols without ports.
    pub port: u16,
    /// The pod holding `ip`, when weftd knows it (pods of this node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The policy rule that decided, when the policy compiler named one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    /// Empty for cluster-scoped policies.
    #[serde(default)]
    pub namespace: String,
    pub name: String,
    /// The rule within the policy, as the compiler names it (e.g. `ingress[0]`).
    #[serde(default)]
    pub rule: String,
}

/// The Service a translation was for (TRANSLATED flows).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    /// The Service's port (behind a NodePort: the port the node port
    /// stands for, not the node port itself).
    pub port: u16,
    /// The port's name, when it has one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub port_name: String,
}

/// One flow event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// RFC 3339, UTC, nanoseconds.
    pub time: String,
    /// The same instant, nanoseconds since the Unix epoch (for sorting).
    pub time_unix_nano: u64,
    pub node: String,
    pub verdict: Verdict,
    /// `POLICY_DENIED`, `POLICY_DEFAULT`, `NO_BACKEND`, `SPOOFED`, when
    /// DROPPED or AUDIT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<String>,
    /// `DECISION` (a drop, or a connection's first packet) or `END`.
    pub kind: String,
    /// 4 or 6.
    pub ip_version: u8,
    /// `TCP`, `UDP`, `ICMP`, `ICMPv6`, `SCTP`, or the number.
    pub protocol: String,
    pub source: Peer,
    pub destination: Peer,
    /// The TCP flags set (`SYN`, `ACK`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_flags: Vec<String>,
    /// `INGRESS` (the destination's policy decided), `EGRESS` (the
    /// source's) or `NONE`.
    pub traffic_direction: String,
    /// Where the program stood: `FROM_POD`, `TO_POD`, `SOCKET`, `NODEPORT`.
    pub observation_point: String,
    pub ifindex: u32,
    /// The policy compiler's rule id; 0 when no rule decided.
    #[serde(default)]
    pub rule_id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRef>,
    /// TRANSLATED: the backend the Service address became.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translated_to: Option<Peer>,
    /// TRANSLATED: the Service whose address (ClusterIP, node port,
    /// external or load-balancer address) it was, when weftd knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRef>,
    /// END: the connection's; else 1 and this packet's length.
    pub packets: u64,
    pub bytes: u64,
}

/// Which flows a query wants. Empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<Verdict>,
    /// Either side in one of these namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Either side is this pod: `name` (any namespace, or the one of
    /// `namespaces`) or `namespace/name`; a trailing `*` is a prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_pods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_pods: Vec<String>,
    /// Either side carries this label: `key=value` or `key` (any value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_labels: Vec<String>,
    /// Either side's port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Case-insensitive: `tcp`, `udp`, `icmp`, …
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<String>,
}

/// The body of a flows request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowQuery {
    #[serde(default)]
    pub filter: FlowFilter,
    /// Only flows at or after this instant (ns since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_unix_nano: Option<u64>,
    /// Of the stored flows that match, only the last this many (all when
    /// `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<usize>,
    /// Keep the reply open and send new flows as they come.
    #[serde(default)]
    pub follow: bool,
}

/// One line of a flows reply (newline-delimited JSON). Blank lines are
/// keep-alives: skip them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowLine {
    Flow(Box<Flow>),
    /// Flows this observer missed: it read slower than they came and the
    /// node's buffer moved past them.
    Lost(LostFlows),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostFlows {
    pub node: String,
    pub flows: u64,
}

fn pod_matches(pattern: &str, p: &Peer, namespaces: &[String]) -> bool {
    let Some(pod) = p.pod.as_deref() else {
        return false;
    };
    let ns = p.namespace.as_deref().unwrap_or_default();
    let (want_ns, want_pod) = match pattern.split_once('/') {
        Some((n, name)) => (Some(n), name),
        None => (None, pattern),
    };
    if let Some(n) = want_ns {
        if n != ns {
            return false;
        }
    } else if !namespaces.is_empty() && !namespaces.iter().any(|n| n == ns) {
        return false;
    }
    match want_pod.strip_suffix('*') {
        Some(prefix) => pod.starts_with(prefix),
        None => pod == want_pod,
    }
}

fn label_matches(pattern: &str, p: &Peer) -> bool {
    match pattern.split_once('=') {
        Some((k, v)) => p.labels.get(k).is_some_and(|have| have == v),
        None => p.labels.contains_key(pattern),
    }
}

/// Whether some value of `wanted` holds (true when there are none).
fn any<T>(wanted: &[T], f: impl Fn(&T) -> bool) -> bool {
    wanted.is_empty() || wanted.iter().any(f)
}

impl FlowFilter {
    pub fn matches(&self, f: &Flow) -> bool {
        let (s, d) = (&f.source, &f.destination);
        let ns = &self.namespaces;
        let in_ns = |p: &Peer, n: &String| p.namespace.as_ref() == Some(n);
        any(&self.verdicts, |v| *v == f.verdict)
            && any(ns, |n| in_ns(s, n) || in_ns(d, n))
            && any(&self.pods, |p| {
                pod_matches(p, s, ns) || pod_matches(p, d, ns)
            })
            && any(&self.from_pods, |p| pod_matches(p, s, ns))
            && any(&self.to_pods, |p| pod_matches(p, d, ns))
            && any(&self.labels, |l| label_matches(l, s) || label_matches(l, d))
            && any(&self.from_labels, |l| label_matches(l, s))
            && any(&self.to_labels, |l| label_matches(l, d))
            && any(&self.ports, |p| s.port == *p || d.port == *p)
            && any(&self.protocols, |p| p.eq_ignore_ascii_case(&f.protocol))
    }
}

#[cfg(test)]
#[path = "flows_tests.rs"]
mod tests;
