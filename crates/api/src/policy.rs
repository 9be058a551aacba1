//! `weft policy …`: NetworkPolicy as weftd compiled and applied it. Plain
//! strings and numbers, so the shim and the CLI need not link the compiler.

use serde::{Deserialize, Serialize};

/// `GET /v1/policy`: `weft policy list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyList {
    /// Whether weftd enforces NetworkPolicy (`--policy`).
    pub enabled: bool,
    /// Why it does or does not, in words.
    pub reason: String,
    /// The pod, namespace and policy watches have listed once.
    pub synced: bool,
    pub rounds: u64,
    /// Map writes of the last round, and how long it took.
    pub last_ops: usize,
    pub last_micros: u64,
    /// The last round failed (identity store, a map write); retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub policies: Vec<PolicyInfo>,
    /// This node's pods held in the fail-closed state (`ns/name`).
    #[serde(default)]
    pub fail_closed: Vec<String>,
    /// Identities in use cluster-wide, and entries in this node's maps.
    pub identities: usize,
    pub ipcache_entries: usize,
    pub policy_entries: usize,
    /// The last round a change of the API view started: when weftd saw
    /// the change and when the maps held its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<PolicyChange>,
}

/// One change of the API view through a round (`weft bench policy
/// --scale` reads it). Times are microseconds since the Unix epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyChange {
    /// Counts the changes of the kinds policy reads (pods, namespaces,
    /// policies, nodes); the round compiled this one.
    pub generation: u64,
    /// The policy thread woke to the change.
    pub seen_unix_us: u64,
    /// The round's map writes were done.
    pub written_unix_us: u64,
    /// Of the round: the compile, and the plan and writes.
    pub compile_us: u64,
    pub write_us: u64,
    pub writes: usize,
    /// Endpoints (cluster-wide) the round compiled: those the change could
    /// affect, or all of them on a whole compile.
    #[serde(default)]
    pub recompiled: usize,
    /// Why the round compiled the whole cluster, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whole: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    pub namespace: String,
    pub name: String,
    /// Pods (`ns/name`, cluster-wide) the policy isolates, per direction.
    pub ingress: Vec<String>,
    pub egress: Vec<String>,
    /// Why the policy was compiled fail-closed (it isolates, opens nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// Annotated `weft.dev/audit` (itself or its namespace): would-be drops
    /// are reported as AUDIT, nothing is dropped.
    #[serde(default)]
    pub audit: bool,
}

/// `POST /v1/policy/show`: `weft policy show NS/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyShowRequest {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyShow {
    pub policy: PolicyInfo,
    /// Every pod the policy isolates, with the entries its rules decide.
    pub endpoints: Vec<ShownEndpoint>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownEndpoint {
    /// `ns/name`.
    pub pod: String,
    pub node: String,
    /// The policy isolating the pod per direction (the smallest name wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_isolated_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_isolated_by: Option<String>,
    pub entries: Vec<ShownEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownEntry {
    /// The policy map key: `identity N dir proto/port[/len]`.
    pub key: String,
    pub identity: u32,
    /// What the identity stands for.
    pub peer: String,
    /// The deciding rule: `rule N (ingress[N]) of ns/name`.
    pub allowed_by: String,
}

/// `POST /v1/policy/explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyExplainRequest {
    /// `ns/name` of the client pod.
    pub from: String,
    /// `ns/name` of the server pod.
    pub to: String,
    pub port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyExplain {
    pub allowed: bool,
    /// `allowed (...)` / `denied at ingress (...)`: the deciding policy and
    /// rule of each direction.
    pub summary: String,
    pub src: String,
    pub dst: String,
    pub egress: Option<ExplainStep>,
    pub ingress: Option<ExplainStep>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainStep {
    /// `ns/name` of the pod this end is judged at.
    pub pod: String,
    pub peer_identity: u32,
    pub peer: String,
    /// The policy map entry that allowed, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// `not isolated`, `allowed by …`, `denied by the default deny of …`.
    pub verdict: String,
}

/// `POST /v1/policy/preview`: `weft policy preview -f FILE`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPreviewRequest {
    /// Candidate `networking.k8s.io/v1` NetworkPolicy objects, as the API
    /// writes them (metadata.namespace filled in).
    pub policies: Vec<serde_json::Value>,
}

/// What the candidates would change about one node's recent flows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPreview {
    pub node: String,
    /// Distinct flows (source, destination, protocol, port) replayed from
    /// this node's flow ring.
    pub replayed: usize,
    /// Dropped with the candidates and not today.
    pub newly_dropped: Vec<PreviewFlow>,
    /// Dropped today, let through with the candidates.
    pub newly_allowed: Vec<PreviewFlow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewFlow {
    /// The latest recorded flow of its kind (its verdict is today's).
    pub flow: crate::Flow,
    /// How many recorded flows it stands for.
    pub count: usize,
    /// `FORWARDED`, `AUDIT` or `DROPPED`, without and with the candidates.
    pub before: String,
    pub after: String,
    /// The direction and the policy rule or default deny that decides
    /// with the candidates.
    pub decided_by: String,
}
