//! The ClusterNetworkPolicy object as the API server serves it
//! (`policy.networking.k8s.io/v1alpha2`, the same shape in v1beta1), and its
//! reading into [`crate::cluster`]'s types. The Kubernetes adapter decodes
//! the JSON into [`ApiClusterNetworkPolicy`]; tests read upstream's
//! manifests the same way.
//!
//! Fail closed, as the API asks: a peer with no field this reader knows (a
//! newer API's), more than one, or `domainNames` becomes
//! [`ClusterPeer::Unsupported`]; a protocol entry likewise becomes
//! [`ClusterPort::Unsupported`]; either makes its rule fail closed.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::cluster::{
    ClusterAction, ClusterNetworkPolicy, ClusterPeer, ClusterPort, ClusterRule, ClusterSubject,
    NamespacedPod, Tier,
};
use crate::model::Protocol;
use crate::selector::LabelSelector;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiClusterNetworkPolicy {
    pub metadata: ApiMeta,
    pub spec: ApiSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiMeta {
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiSpec {
    pub tier: String,
    pub priority: i64,
    pub subject: ApiSubject,
    #[serde(default)]
    pub ingress: Vec<ApiRule>,
    #[serde(default)]
    pub egress: Vec<ApiRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiSubject {
    #[serde(default)]
    pub namespaces: Option<LabelSelector>,
    #[serde(default)]
    pub pods: Option<NamespacedPod>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiRule {
    #[serde(default)]
    pub name: String,
    pub action: String,
    #[serde(default, alias = "to")]
    pub from: Vec<ApiPeer>,
    #[serde(default)]
    pub protocols: Vec<ApiProtocol>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiPeer {
    #[serde(default)]
    pub namespaces: Option<LabelSelector>,
    #[serde(default)]
    pub pods: Option<NamespacedPod>,
    #[serde(default)]
    pub nodes: Option<LabelSelector>,
    #[serde(default)]
    pub networks: Option<Vec<String>>,
    #[serde(default)]
    pub domain_names: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiProtocol {
    #[serde(default)]
    pub tcp: Option<ApiDestination>,
    #[serde(default)]
    pub udp: Option<ApiDestination>,
    #[serde(default)]
    pub sctp: Option<ApiDestination>,
    #[serde(default)]
    pub destination_named_port: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiDestination {
    #[serde(default)]
    pub destination_port: Option<ApiPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiPort {
    #[serde(default)]
    pub number: Option<i64>,
    #[serde(default)]
    pub range: Option<ApiRange>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiRange {
    pub start: i64,
    pub end: i64,
}

/// Why an object cannot be read at all (a policy whose tier or name is
/// unknown cannot be placed; the adapter reports and skips it). Everything
/// else reads fail-closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error(
        "clusternetworkpolicy {name}: tier {tier:?} is neither Admin nor Baseline; fix spec.tier"
    )]
    Tier { name: String, tier: String },
    #[error("clusternetworkpolicy without a name")]
    NoName,
}

impl ApiClusterNetworkPolicy {
    /// The policy in the crate's types. An out-of-range priority keeps the
    /// policy (validation then fails it closed: every rule denies or
    /// matches nothing); an unknown action reads as Deny (fail closed).
    pub fn to_model(&self) -> Result<ClusterNetworkPolicy, ApiError> {
        let name = self.metadata.name.clone();
        if name.is_empty() {
            return Err(ApiError::NoName);
        }
        let tier = match self.spec.tier.as_str() {
            "Admin" => Tier::Admin,
            "Baseline" => Tier::Baseline,
            other => {
                return Err(ApiError::Tier {
                    name,
                    tier: other.into(),
                })
            }
        };
        // Negative or huge: past 1000, which validation rejects.
        let priority = u32::try_from(self.spec.priority).unwrap_or(u32::MAX);
        let subject = match (&self.spec.subject.namespaces, &self.spec.subject.pods) {
            (Some(ns), None) => ClusterSubject::Namespaces(ns.clone()),
            (None, Some(p)) => ClusterSubject::Pods(p.clone()),
            // None or both: an invalid selector makes the subject every
            // pod, so the policy can only close.
            _ => ClusterSubject::Unsupported(
                "spec.subject must set exactly one of namespaces or pods".into(),
            ),
        };
        Ok(ClusterNetworkPolicy {
            name,
            tier,
            priority,
            subject,
            ingress: self.spec.ingress.iter().map(ApiRule::to_model).collect(),
            egress: self.spec.egress.iter().map(ApiRule::to_model).collect(),
        })
    }
}

impl ApiRule {
    fn to_model(&self) -> ClusterRule {
        let action = match self.action.as_str() {
            "Accept" => ClusterAction::Accept,
            "Pass" => ClusterAction::Pass,
            _ => ClusterAction::Deny,
        };
        let mut peers: Vec<ClusterPeer> = self.from.iter().map(ApiPeer::to_model).collect();
        if !matches!(self.action.as_str(), "Accept" | "Deny" | "Pass") {
            peers.push(ClusterPeer::Unsupported(format!(
                "action {:?} (read as Deny all)",
                self.action
            )));
        }
        ClusterRule {
            name: self.name.clone(),
            action,
            peers,
            protocols: self.protocols.iter().map(ApiProtocol::to_model).collect(),
        }
    }
}

impl ApiPeer {
    fn to_model(&self) -> ClusterPeer {
        let set = [
            self.namespaces.is_some(),
            self.pods.is_some(),
            self.nodes.is_some(),
            self.networks.is_some(),
            self.domain_names.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            return ClusterPeer::Unsupported(format!(
                "a peer must set exactly one field weft knows, this one sets {set}"
            ));
        }
        if let Some(s) = &self.namespaces {
            return ClusterPeer::Namespaces(s.clone());
        }
        if let Some(p) = &self.pods {
            return ClusterPeer::Pods(p.clone());
        }
        if let Some(s) = &self.nodes {
            return ClusterPeer::Nodes(s.clone());
        }
        if let Some(nets) = &self.networks {
            let parsed: Result<Vec<IpNet>, _> = nets.iter().map(|n| n.parse()).collect();
            return match parsed {
                Ok(nets) => ClusterPeer::Networks(nets),
                Err(_) => ClusterPeer::Unsupported(format!("networks {nets:?}: not all CIDRs")),
            };
        }
        ClusterPeer::Unsupported("domainNames (needs DNS-aware enforcement)".into())
    }
}

impl ApiProtocol {
    fn to_model(&self) -> ClusterPort {
        let by_proto = [
            (Protocol::Tcp, &self.tcp),
            (Protocol::Udp, &self.udp),
            (Protocol::Sctp, &self.sctp),
        ];
        let set = by_proto.iter().filter(|(_, d)| d.is_some()).count()
            + usize::from(self.destination_named_port.is_some());
        if set != 1 {
            return ClusterPort::Unsupported(format!(
                "a protocols item must set exactly one field weft knows, this one sets {set}"
            ));
        }
        if let Some(name) = &self.destination_named_port {
            return ClusterPort::Named(name.clone());
        }
        let (protocol, dest) = by_proto
            .into_iter()
            .find_map(|(p, d)| d.as_ref().map(|d| (p, d)))
            .expect("one is set");
        let port = |n: i64| u16::try_from(n).unwrap_or(0);
        match &dest.destination_port {
            Some(ApiPort {
                number: Some(n),
                range: None,
            }) => ClusterPort::Number {
                protocol,
                port: port(*n),
            },
            Some(ApiPort {
                number: None,
                range: Some(r),
            }) => ClusterPort::Range {
                protocol,
                start: port(r.start),
                end: port(r.end),
            },
            _ => ClusterPort::Unsupported(format!(
                "{protocol}: destinationPort needs exactly one of number or range"
            )),
        }
    }
}
