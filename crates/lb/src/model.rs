//! The crate's input: Services and EndpointSlices, close to the Kubernetes
//! API (`core/v1` Service, `discovery/v1` EndpointSlice) but without kube-rs.
//! The Kubernetes adapter converts API objects into these; tests and JSON
//! fixtures build them directly. Field names deserialize in the API's
//! camelCase so a fixture reads like the object it stands for.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Label that hands a Service to another proxy (kube-proxy and cilium both
/// leave such Services alone unless the value names them).
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Label the EndpointSlice controller puts on the slices of a headless
/// Service; kube-proxy skips labelled objects.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// The API's default for `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10_800;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ServiceType {
    ClusterIP,
    NodePort,
    LoadBalancer,
    ExternalName,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Protocol {
    #[default]
    TCP,
    UDP,
    SCTP,
}

impl Protocol {
    /// The IP protocol number, what the data path keys on.
    pub fn number(self) -> u8 {
        match self {
            Protocol::TCP => 6,
            Protocol::UDP => 17,
            Protocol::SCTP => 132,
        }
    }
}

/// `targetPort`: a number, or the name of a container port that each backend
/// pod resolves on its own (the EndpointSlice controller does that and writes
/// the number into the slice's port named after the Service port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Empty for the single unnamed port a Service may have.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub protocol: Protocol,
    pub port: u16,
    #[serde(default)]
    pub target_port: Option<TargetPort>,
    #[serde(default)]
    pub node_port: Option<u16>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

/// In JSON: `"None"` or `{"ClientIP": {"timeoutSeconds": 60}}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all_fields = "camelCase")]
pub enum SessionAffinity {
    #[default]
    None,
    /// `ClientIP` with `sessionAffinityConfig.clientIP.timeoutSeconds`
    /// (the API defaults it to 10800 and caps it at 86400).
    #[serde(rename = "ClientIP")]
    ClientIp { timeout_seconds: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type")]
    pub type_: ServiceType,
    /// `spec.clusterIPs`, one per family (dual-stack); empty when headless.
    #[serde(default, rename = "clusterIPs")]
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.clusterIP: None`.
    #[serde(default)]
    pub headless: bool,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    #[serde(default, rename = "externalIPs")]
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip`.
    #[serde(default, rename = "loadBalancerIPs")]
    pub load_balancer_ips: Vec<IpAddr>,
    #[serde(default)]
    pub session_affinity: SessionAffinity,
    #[serde(default)]
    pub external_traffic_policy: TrafficPolicy,
    #[serde(default)]
    pub internal_traffic_policy: TrafficPolicy,
    #[serde(default)]
    pub publish_not_ready_addresses: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Service {
    /// `namespace/name`, how Services are named in dumps and errors.
    pub fn id(&self) -> ServiceName {
        ServiceName {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddressType {
    IPv4,
    IPv6,
    /// Not load-balanced by anyone; slices of this type are ignored.
    FQDN,
}

/// `discovery/v1` EndpointConditions. Each is `None` when the API object
/// leaves it unset; [`EndpointConditions::is_ready`] and friends apply the
/// API's rules for that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointConditions {
    #[serde(default)]
    pub ready: Option<bool>,
    #[serde(default)]
    pub serving: Option<bool>,
    #[serde(default)]
    pub terminating: Option<bool>,
}

impl EndpointConditions {
    /// "consumers should interpret an unknown state as ready".
    pub fn is_ready(&self) -> bool {
        self.ready.unwrap_or(true)
    }
    /// "If nil, consumers should defer to the ready condition."
    pub fn is_serving(&self) -> bool {
        self.serving.unwrap_or_else(|| self.is_ready())
    }
    /// "Consumers should interpret this unknown state to mean that the
    /// endpoint is not terminating."
    pub fn is_terminating(&self) -> bool {
        self.terminating.unwrap_or(false)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub addresses: Vec<IpAddr>,
    #[serde(default)]
    pub conditions: EndpointConditions,
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPort {
    /// Named after the Service port it serves (empty for an unnamed one).
    #[serde(default)]
    pub name: String,
    /// `None` means "all ports" in the API; nothing load-balances that.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    /// The Service it belongs to (`kubernetes.io/service-name` and the
    /// slice's namespace).
    pub service: ServiceName,
    pub address_type: AddressType,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}
