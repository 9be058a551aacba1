//! Kubernetes objects cut to weft's domain types. A conversion that fails
//! names the field; the watch logs the object and skips it (one bad object
//! must never stall a watch).

use std::net::IpAddr;
use std::num::NonZeroU16;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::networking::v1 as networking;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::*;

/// Why an object could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConvertError {
    pub field: String,
    pub reason: String,
}

fn bad(field: &str, reason: impl Into<String>) -> ConvertError {
    ConvertError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// A Kubernetes object weft watches, and what it becomes.
pub trait Convert {
    type Out;
    const KIND: Kind;
    fn convert(&self) -> Result<Self::Out, ConvertError>;
}

fn name_of(m: &meta::ObjectMeta) -> Result<String, ConvertError> {
    m.name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("metadata.name", "missing"))
}

fn namespace_of(m: &meta::ObjectMeta) -> Result<String, ConvertError> {
    m.namespace
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("metadata.namespace", "missing"))
}

fn ip(field: &str, s: &str) -> Result<IpAddr, ConvertError> {
    s.parse()
        .map_err(|_| bad(field, format!("{s:?} is not an IP address")))
}

fn port(field: &str, p: i32) -> Result<NonZeroU16, ConvertError> {
    u16::try_from(p)
        .ok()
        .and_then(NonZeroU16::new)
        .ok_or_else(|| bad(field, format!("{p} is not a port (1-65535)")))
}

fn protocol(field: &str, p: Option<&str>) -> Result<Protocol, ConvertError> {
    match p.unwrap_or("TCP") {
        "TCP" => Ok(Protocol::Tcp),
        "UDP" => Ok(Protocol::Udp),
        "SCTP" => Ok(Protocol::Sctp),
        other => Err(bad(field, format!("unknown protocol {other:?}"))),
    }
}

fn port_ref(field: &str, p: &IntOrString) -> Result<PortRef, ConvertError> {
    match p {
        IntOrString::Int(n) => port(field, *n).map(PortRef::Number),
        IntOrString::String(s) => match s.parse::<i32>() {
            // "8080" in a string is a number (the API accepts both spellings)
            Ok(n) => port(field, n).map(PortRef::Number),
            Err(_) if !s.is_empty() => Ok(PortRef::Name(s.clone())),
            Err(_) => Err(bad(field, "empty port name")),
        },
    }
}

impl Convert for core::Node {
    type Out = NodeInfo;
    const KIND: Kind = Kind::Node;

    fn convert(&self) -> Result<NodeInfo, ConvertError> {
        let status = self.status.as_ref();
        let mut addresses = Vec::new();
        for a in status
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
        {
            if a.type_ == "InternalIP" || a.type_ == "ExternalIP" {
                addresses.push(ip("status.addresses", &a.address)?);
            }
        }
        let spec = self.spec.as_ref();
        let mut pod_cidrs = Vec::new();
        for c in spec
            .and_then(|s| s.pod_cidrs.as_ref())
            .into_iter()
            .flatten()
        {
            pod_cidrs.push(
                c.parse()
                    .map_err(|_| bad("spec.podCIDRs", format!("{c:?} is not a CIDR")))?,
            );
        }
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        Ok(NodeInfo {
            name: name_of(&self.metadata)?,
            uid: self.metadata.uid.clone().unwrap_or_default(),
            labels: self.metadata.labels.clone().unwrap_or_default(),
            addresses,
            pod_cidrs,
            ready,
        })
    }
}

impl Convert for core::Pod {
    type Out = PodInfo;
    const KIND: Kind = Kind::Pod;

    fn convert(&self) -> Result<PodInfo, ConvertError> {
        let spec = self.spec.as_ref();
        let status = self.status.as_ref();
        let mut ips = Vec::new();
        for p in status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
        {
            ips.push(ip("status.podIPs", &p.ip)?);
        }
        if ips.is_empty() {
            if let Some(p) = status.and_then(|s| s.pod_ip.as_deref()) {
                ips.push(ip("status.podIP", p)?);
            }
        }
        let mut named_ports = Vec::new();
        for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
            for p in c.ports.iter().flatten() {
                if let Some(name) = p.name.as_ref().filter(|n| !n.is_empty()) {
                    named_ports.push(NamedPort {
                        name: name.clone(),
                        port: port("spec.containers.ports.containerPort", p.container_port)?,
                        protocol: protocol(
                            "spec.containers.ports.protocol",
                            p.protocol.as_deref(),
                        )?,
                    });
                }
            }
        }
        named_ports.sort();
        Ok(PodInfo {
            namespace: namespace_of(&self.metadata)?,
            name: name_of(&self.metadata)?,
            uid: self.metadata.uid.clone().unwrap_or_default(),
            labels: self.metadata.labels.clone().unwrap_or_default(),
            ips,
            named_ports,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
            terminating: self.metadata.deletion_timestamp.is_some(),
        })
    }
}

impl Convert for core::Namespace {
    type Out = NamespaceInfo;
    const KIND: Kind = Kind::Namespace;

    fn convert(&self) -> Result<NamespaceInfo, ConvertError> {
        Ok(NamespaceInfo {
            name: name_of(&self.metadata)?,
            labels: self.metadata.labels.clone().unwrap_or_default(),
            audit: audit_annotated(self.metadata.annotations.as_ref()),
        })
    }
}

fn selector(field: &str, s: &meta::LabelSelector) -> Result<LabelSelector, ConvertError> {
    let mut match_expressions = Vec::new();
    for r in s.match_expressions.iter().flatten() {
        let operator = match r.operator.as_str() {
            "In" => SelectorOp::In,
            "NotIn" => SelectorOp::NotIn,
            "Exists" => SelectorOp::Exists,
            "DoesNotExist" => SelectorOp::DoesNotExist,
            other => return Err(bad(field, format!("unknown operator {other:?}"))),
        };
        match_expressions.push(LabelRequirement {
            key: r.key.clone(),
            operator,
            values: r.values.clone().unwrap_or_default(),
        });
    }
    Ok(LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions,
    })
}

fn opt_selector(
    field: &str,
    s: Option<&meta::LabelSelector>,
) -> Result<Option<LabelSelector>, ConvertError> {
    s.map(|s| selector(field, s)).transpose()
}

fn peers(
    field: &str,
    ps: Option<&Vec<networking::NetworkPolicyPeer>>,
) -> Result<Option<Vec<Peer>>, ConvertError> {
    ps.map(|ps| {
        ps.iter()
            .map(|p| {
                let ip_block = p
                    .ip_block
                    .as_ref()
                    .map(|b| -> Result<IpBlock, ConvertError> {
                        let cidr = |c: &str| {
                            c.parse().map_err(|_| {
                                bad(&format!("{field}.ipBlock"), format!("{c:?} is not a CIDR"))
                            })
                        };
                        Ok(IpBlock {
                            cidr: cidr(&b.cidr)?,
                            except: b
                                .except
                                .iter()
                                .flatten()
                                .map(|c| cidr(c))
                                .collect::<Result<_, _>>()?,
                        })
                    })
                    .transpose()?;
                Ok(Peer {
                    pod_selector: opt_selector(field, p.pod_selector.as_ref())?,
                    namespace_selector: opt_selector(field, p.namespace_selector.as_ref())?,
                    ip_block,
                })
            })
            .collect()
    })
    .transpose()
}

fn policy_ports(
    field: &str,
    ps: Option<&Vec<networking::NetworkPolicyPort>>,
) -> Result<Option<Vec<PolicyPort>>, ConvertError> {
    ps.map(|ps| {
        ps.iter()
            .map(|p| {
                Ok(PolicyPort {
                    protocol: protocol(field, p.protocol.as_deref())?,
                    port: p.port.as_ref().map(|x| port_ref(field, x)).transpose()?,
                    end_port: p.end_port.map(|e| port(field, e)).transpose()?,
                })
            })
            .collect()
    })
    .transpose()
}

impl Convert for networking::NetworkPolicy {
    type Out = NetPolicy;
    const KIND: Kind = Kind::NetworkPolicy;

    fn convert(&self) -> Result<NetPolicy, ConvertError> {
        let spec = self.spec.clone().unwrap_or_default();
        let policy_types = spec
            .policy_types
            .as_ref()
            .map(|ts| {
                ts.iter()
                    .map(|t| match t.as_str() {
                        "Ingress" => Ok(PolicyType::Ingress),
                        "Egress" => Ok(PolicyType::Egress),
                        other => Err(bad(
                            "spec.policyTypes",
                            format!("unknown policy type {other:?}"),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let ingress = spec
            .ingress
            .as_ref()
            .map(|rs| {
                rs.iter()
                    .map(|r| {
                        Ok(IngressRule {
                            from: peers("spec.ingress.from", r.from.as_ref())?,
                            ports: policy_ports("spec.ingress.ports", r.ports.as_ref())?,
                        })
                    })
                    .collect::<Result<Vec<_>, ConvertError>>()
            })
            .transpose()?;
        let egress = spec
            .egress
            .as_ref()
            .map(|rs| {
                rs.iter()
                    .map(|r| {
                        Ok(EgressRule {
                            to: peers("spec.egress.to", r.to.as_ref())?,
                            ports: policy_ports("spec.egress.ports", r.ports.as_ref())?,
                        })
                    })
                    .collect::<Result<Vec<_>, ConvertError>>()
            })
            .transpose()?;
        Ok(NetPolicy {
            namespace: namespace_of(&self.metadata)?,
            name: name_of(&self.metadata)?,
            pod_selector: opt_selector("spec.podSelector", spec.pod_selector.as_ref())?
                .unwrap_or_default(),
            policy_types,
            ingress,
            egress,
            audit: audit_annotated(self.metadata.annotations.as_ref()),
        })
    }
}

fn ips(field: &str, v: Option<&Vec<String>>) -> Result<Vec<IpAddr>, ConvertError> {
    v.into_iter().flatten().map(|s| ip(field, s)).collect()
}

impl Convert for core::Service {
    type Out = Service;
    const KIND: Kind = Kind::Service;

    fn convert(&self) -> Result<Service, ConvertError> {
        let spec = self.spec.clone().unwrap_or_default();
        let mut cluster_ips = match (&spec.cluster_ips, &spec.cluster_ip) {
            (Some(v), _) if !v.is_empty() => v.clone(),
            (_, Some(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        // headless: "None" (and "" before allocation) are not addresses
        cluster_ips.retain(|s| !s.is_empty() && s != "None");
        let mut ports = Vec::new();
        for p in spec.ports.iter().flatten() {
            ports.push(ServicePort {
                name: p.name.clone().unwrap_or_default(),
                port: port("spec.ports.port", p.port)?,
                protocol: protocol("spec.ports.protocol", p.protocol.as_deref())?,
                target_port: p
                    .target_port
                    .as_ref()
                    .map(|t| port_ref("spec.ports.targetPort", t))
                    .transpose()?,
                node_port: p
                    .node_port
                    .filter(|n| *n != 0)
                    .map(|n| port("spec.ports.nodePort", n))
                    .transpose()?,
            });
        }
        let lb_ips = self
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref())
            .map(|s| ip("status.loadBalancer.ingress.ip", s))
            .collect::<Result<_, _>>()?;
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                // the API's default: three hours
                .unwrap_or(10_800)
        });
        Ok(Service {
            namespace: namespace_of(&self.metadata)?,
            name: name_of(&self.metadata)?,
            service_type: spec.type_.clone().unwrap_or_else(|| "ClusterIP".into()),
            cluster_ips: cluster_ips
                .iter()
                .map(|s| ip("spec.clusterIPs", s))
                .collect::<Result<_, _>>()?,
            external_ips: ips("spec.externalIPs", spec.external_ips.as_ref())?,
            load_balancer_ips: lb_ips,
            ports,
            selector: spec.selector.clone(),
            session_affinity_seconds: affinity,
            external_traffic_local: spec.external_traffic_policy.as_deref() == Some("Local"),
            internal_traffic_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
            labels: self.metadata.labels.clone().unwrap_or_default(),
        })
    }
}

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

impl Convert for discovery::EndpointSlice {
    type Out = EndpointSliceInfo;
    const KIND: Kind = Kind::EndpointSlice;

    fn convert(&self) -> Result<EndpointSliceInfo, ConvertError> {
        let namespace = namespace_of(&self.metadata)?;
        let name = name_of(&self.metadata)?;
        let service = self
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL).cloned());
        let mut endpoints = Vec::new();
        // FQDN slices name hosts, not addresses: nothing for a data path
        if self.address_type == "IPv4" || self.address_type == "IPv6" {
            let mut ports = Vec::new();
            for p in self.ports.iter().flatten() {
                // a port-less slice "allows all ports", which only headless
                // Services without ports use: no backend to program
                if let Some(n) = p.port {
                    ports.push((
                        p.name.clone().unwrap_or_default(),
                        port("ports.port", n)?,
                        protocol("ports.protocol", p.protocol.as_deref())?,
                    ));
                }
            }
            for e in self.endpoints.iter().flatten() {
                let c = e.conditions.clone().unwrap_or_default();
                let ready = c.ready.unwrap_or(true);
                let serving = c.serving.unwrap_or(ready);
                let terminating = c.terminating.unwrap_or(false);
                for a in &e.addresses {
                    let addr = ip("endpoints.addresses", a)?;
                    for (port_name, port, proto) in &ports {
                        endpoints.push(Endpoint {
                            addr,
                            port: *port,
                            port_name: port_name.clone(),
                            proto: *proto,
                            ready,
                            serving,
                            terminating,
                            node: e.node_name.clone(),
                        });
                    }
                }
            }
        }
        endpoints.sort();
        Ok(EndpointSliceInfo {
            namespace,
            name,
            service,
            endpoints,
            labels: self.metadata.labels.clone().unwrap_or_default(),
        })
    }
}

/// A NetworkPolicy object as JSON (`weft policy preview -f`), converted
/// like the watched ones.
pub fn network_policy_from_json(v: serde_json::Value) -> Result<NetPolicy, ConvertError> {
    let np: networking::NetworkPolicy =
        serde_json::from_value(v).map_err(|e| bad("NetworkPolicy", e.to_string()))?;
    np.convert()
}
