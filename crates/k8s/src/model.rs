//! The domain types weftd sees: plain structs cut from the Kubernetes
//! objects, holding only the fields weft uses. No kube or k8s-openapi type
//! appears here, so the rest of weftd (and the policy and load-balancing
//! crates to come) never links the API's types.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU16;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub type Labels = BTreeMap<String, String>;

/// Which watch an object came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Node,
    Pod,
    Namespace,
    NetworkPolicy,
    Service,
    EndpointSlice,
    ClusterNetworkPolicy,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Node,
        Kind::Pod,
        Kind::Namespace,
        Kind::NetworkPolicy,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::ClusterNetworkPolicy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Node => "nodes",
            Kind::Pod => "pods",
            Kind::Namespace => "namespaces",
            Kind::NetworkPolicy => "networkpolicies",
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::ClusterNetworkPolicy => "clusternetworkpolicies",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An object's identity: namespace (empty for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjKey {
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ObjKey {
        ObjKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn cluster(name: impl Into<String>) -> ObjKey {
        ObjKey::new("", name)
    }
}

impl fmt::Display for ObjKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

/// A port given by number or by a container port's name (IntOrString).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    Number(NonZeroU16),
    Name(String),
}

/// This node, as the API describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub uid: String,
    pub labels: Labels,
    /// InternalIP and ExternalIP addresses, in the order the node reports them.
    pub addresses: Vec<IpAddr>,
    pub pod_cidrs: Vec<IpNet>,
    pub ready: bool,
}

/// A pod on this node, as the API describes it (see [`Workload`] for the
/// pod joined with its namespace's labels).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: Labels,
    pub ips: Vec<IpAddr>,
    pub named_ports: Vec<NamedPort>,
    pub host_network: bool,
    pub node: String,
    /// `status.phase` (Pending, Running, Succeeded, Failed, Unknown).
    pub phase: String,
    /// The pod has a deletion timestamp: it is shutting down.
    pub terminating: bool,
}

/// A container port that has a name, the target of named ports in
/// NetworkPolicies and Services.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NamedPort {
    pub name: String,
    pub port: NonZeroU16,
    pub protocol: Protocol,
}

/// A pod with its namespace's labels: what policy selects on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: Labels,
    /// `None` while weftd has not seen the namespace yet (its labels arrive
    /// later; the pod is attached all the same).
    pub namespace_labels: Option<Labels>,
    pub ips: Vec<IpAddr>,
    pub named_ports: Vec<NamedPort>,
    pub host_network: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: Labels,
    /// Annotated [`AUDIT_ANNOTATION`]` = "true"`: its NetworkPolicies are
    /// all in audit.
    #[serde(default)]
    pub audit: bool,
}

/// The annotation that puts a NetworkPolicy (or every policy of a
/// namespace) in audit: compiled and reported, never enforced.
pub const AUDIT_ANNOTATION: &str = "weft.dev/audit";

/// Whether `annotations` carry [`AUDIT_ANNOTATION`]` = "true"`.
pub fn audit_annotated(annotations: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    annotations
        .and_then(|a| a.get(AUDIT_ANNOTATION))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// A label selector as the API writes it. An empty selector selects
/// everything; a missing one (an `Option` that is `None` where it is used)
/// means what the field's documentation says, which is not always the same.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelSelector {
    pub match_labels: Labels,
    pub match_expressions: Vec<LabelRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelRequirement {
    pub key: String,
    pub operator: SelectorOp,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectorOp {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy every term (the API's AND of all terms).
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    SelectorOp::In => value.is_some_and(|v| r.values.contains(v)),
                    SelectorOp::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    SelectorOp::Exists => value.is_some(),
                    SelectorOp::DoesNotExist => value.is_none(),
                }
            })
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

/// A NetworkPolicy, kept close to the API's fields (`Option` wherever the
/// API distinguishes a missing field from an empty one) for the policy
/// compiler to interpret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPolicy {
    pub namespace: String,
    pub name: String,
    /// Pods of `namespace` the policy applies to; empty selects all of them.
    pub pod_selector: LabelSelector,
    /// As written; see [`NetPolicy::effective_policy_types`].
    pub policy_types: Option<Vec<PolicyType>>,
    pub ingress: Option<Vec<IngressRule>>,
    pub egress: Option<Vec<EgressRule>>,
    /// Annotated [`AUDIT_ANNOTATION`]` = "true"` itself.
    #[serde(default)]
    pub audit: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

impl NetPolicy {
    /// The API's default when `policyTypes` is not given: Ingress always,
    /// Egress when the policy has egress rules.
    pub fn effective_policy_types(&self) -> Vec<PolicyType> {
        match &self.policy_types {
            Some(t) => t.clone(),
            None => {
                let mut t = vec![PolicyType::Ingress];
                if self.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                    t.push(PolicyType::Egress);
                }
                t
            }
        }
    }
}

/// `from` / `ports` missing or empty both mean "any" in the API; kept as
/// written all the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressRule {
    pub from: Option<Vec<Peer>>,
    pub ports: Option<Vec<PolicyPort>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRule {
    pub to: Option<Vec<Peer>>,
    pub ports: Option<Vec<PolicyPort>>,
}

/// A NetworkPolicyPeer. `namespace_selector: None` means the policy's own
/// namespace, `Some(empty)` every namespace; `pod_selector: None` with a
/// namespace selector means every pod of those namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub pod_selector: Option<LabelSelector>,
    pub namespace_selector: Option<LabelSelector>,
    pub ip_block: Option<IpBlock>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpBlock {
    pub cidr: IpNet,
    pub except: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPort {
    /// TCP when the API object leaves it out.
    pub protocol: Protocol,
    /// `None`: every port of the protocol.
    pub port: Option<PortRef>,
    /// With a numeric `port`: the range port..=end_port.
    pub end_port: Option<NonZeroU16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// ClusterIP, NodePort, LoadBalancer or ExternalName.
    pub service_type: String,
    /// Empty for headless Services (`clusterIP: None`).
    pub cluster_ips: Vec<IpAddr>,
    pub external_ips: Vec<IpAddr>,
    pub load_balancer_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// `None`: the Service's endpoints are managed by someone else.
    pub selector: Option<Labels>,
    /// ClientIP affinity timeout in seconds, when affinity is on.
    pub session_affinity_seconds: Option<u32>,
    pub external_traffic_local: bool,
    pub internal_traffic_local: bool,
    pub publish_not_ready: bool,
    /// The Service's labels (`service.kubernetes.io/service-proxy-name`,
    /// `service.kubernetes.io/headless` decide who proxies it).
    #[serde(default)]
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    pub name: String,
    pub port: NonZeroU16,
    pub protocol: Protocol,
    /// `None`: the same number as `port`.
    pub target_port: Option<PortRef>,
    pub node_port: Option<NonZeroU16>,
}

/// One EndpointSlice, flattened to address × port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSliceInfo {
    pub namespace: String,
    pub name: String,
    /// The `kubernetes.io/service-name` label: the Service it belongs to.
    pub service: Option<String>,
    pub endpoints: Vec<Endpoint>,
    /// The slice's labels (the headless label, the managing controller).
    #[serde(default)]
    pub labels: Labels,
}

/// One backend of a Service port. Conditions the API leaves unset read as
/// its documentation says: ready and serving unknown = true, terminating
/// unknown = false.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: NonZeroU16,
    /// The Service port's name this backend serves ("" for an unnamed port).
    pub port_name: String,
    pub proto: Protocol,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node: Option<String>,
}
