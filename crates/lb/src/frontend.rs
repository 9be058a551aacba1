//! Services + EndpointSlices -> frontends: every address and port a Service
//! answers on, with the backends each may use.
//!
//! A Service yields, per port and per address family it has:
//! - a ClusterIP frontend (`internalTrafficPolicy` applies);
//! - a NodePort frontend on the family's unspecified address, meaning "any
//!   address of this node" (the program looks there when the destination is
//!   one of the node's own), for types NodePort and LoadBalancer;
//! - a frontend per `externalIPs` entry, and per load-balancer ingress IP
//!   for type LoadBalancer.
//!
//! NodePort, external and load-balancer frontends obey
//! `externalTrafficPolicy`. With `Local` they get two scopes, like cilium's
//! `lb4_key.scope`: `External` (traffic that entered the node from outside)
//! uses this node's endpoints only, `Internal` (pods and the node itself)
//! uses all of them, which is what kube-proxy does for in-cluster clients
//! of an external address.
//!
//! Left alone: `ExternalName` and headless Services, Services (and slices)
//! labelled headless, Services whose `service-proxy-name` label does not
//! name this proxy.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::endpoints::{candidates, select, BackendAddr, BackendState, Verdict};
use crate::model::{
    EndpointSlice, Protocol, Service, ServiceName, ServiceType, SessionAffinity, TrafficPolicy,
    LABEL_HEADLESS, LABEL_SERVICE_PROXY_NAME,
};

/// Where a frontend listens: the map key without scope and slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct FrontendAddr {
    pub addr: IpAddr,
    pub port: u16,
    pub proto: Protocol,
}

impl std::fmt::Display for FrontendAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        BackendAddr {
            addr: self.addr,
            port: self.port,
            proto: self.proto,
        }
        .fmt(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Scope {
    /// Traffic from outside the node; the only scope most frontends have.
    External = 0,
    /// Traffic from this node's pods or the node itself, for frontends
    /// whose two views differ (`externalTrafficPolicy: Local`).
    Internal = 1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum FrontendKind {
    ClusterIp = 1,
    NodePort = 2,
    ExternalIp = 3,
    LoadBalancer = 4,
}

/// One frontend scope and the backends it may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Frontend {
    pub service: ServiceName,
    /// The Service port's name (empty when unnamed).
    pub port_name: String,
    pub addr: FrontendAddr,
    pub scope: Scope,
    pub kind: FrontendKind,
    /// Another scope of the same address exists (the program must pick).
    pub two_scopes: bool,
    /// Restricted to this node's endpoints by a `Local` traffic policy.
    pub local_only: bool,
    pub affinity_timeout: Option<u32>,
    /// In backend-address order (the order of the slots).
    pub backends: Vec<(BackendAddr, BackendState)>,
    pub verdict: Verdict,
}

/// The node-wide settings the frontends depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// This node's name, matched against `Endpoint::node_name`.
    pub node_name: String,
    /// This proxy's `service-proxy-name`; `None` manages only Services
    /// without the label (kube-proxy's behaviour).
    pub proxy_name: Option<String>,
}

/// Why a Service (or one of its frontends) got no entries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Skipped {
    ExternalName(ServiceName),
    Headless(ServiceName),
    OtherProxy(ServiceName),
    /// Two Services claim one address and port; the first by name keeps it.
    Conflict {
        addr: FrontendAddr,
        kept: ServiceName,
        dropped: ServiceName,
    },
}

/// Every frontend of every Service this proxy manages, sorted by (address,
/// scope), plus what it skipped. Pure and order-independent: the same
/// Services and slices in any order give the same result.
pub fn frontends(
    services: &[Service],
    slices: &[EndpointSlice],
    node: &NodeView,
) -> (Vec<Frontend>, Vec<Skipped>) {
    let mut by_service: BTreeMap<ServiceName, Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        by_service.entry(s.service.clone()).or_default().push(s);
    }
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by_key(|s| s.id());

    let mut out: BTreeMap<(FrontendAddr, Scope), Frontend> = BTreeMap::new();
    // Who holds each address: the scopes of one address all belong to the
    // Service that claimed it first.
    let mut owner: BTreeMap<FrontendAddr, ServiceName> = BTreeMap::new();
    let mut skipped = Vec::new();
    for svc in sorted {
        if let Some(reason) = ignored(svc, node) {
            skipped.push(reason);
            continue;
        }
        let slices = by_service.get(&svc.id()).map(Vec::as_slice).unwrap_or(&[]);
        let mine = service_frontends(svc, slices, &node.node_name);
        let taken: Vec<FrontendAddr> = mine
            .iter()
            .filter(|fe| owner.get(&fe.addr).is_some_and(|o| *o != fe.service))
            .map(|fe| fe.addr)
            .collect();
        for fe in mine {
            if taken.contains(&fe.addr) {
                skipped.push(Skipped::Conflict {
                    addr: fe.addr,
                    kept: owner[&fe.addr].clone(),
                    dropped: fe.service,
                });
                continue;
            }
            owner.insert(fe.addr, fe.service.clone());
            // Two ports of one Service with the same number and protocol
            // are refused by the API; keep the first anyway.
            out.entry((fe.addr, fe.scope)).or_insert(fe);
        }
    }
    skipped.sort();
    skipped.dedup();
    (out.into_values().collect(), skipped)
}

pub(crate) fn ignored(svc: &Service, node: &NodeView) -> Option<Skipped> {
    if svc.type_ == ServiceType::ExternalName {
        return Some(Skipped::ExternalName(svc.id()));
    }
    if svc.headless || svc.cluster_ips.is_empty() || svc.labels.contains_key(LABEL_HEADLESS) {
        return Some(Skipped::Headless(svc.id()));
    }
    if svc.labels.get(LABEL_SERVICE_PROXY_NAME) != node.proxy_name.as_ref() {
        return Some(Skipped::OtherProxy(svc.id()));
    }
    None
}

pub(crate) fn service_frontends(
    svc: &Service,
    slices: &[&EndpointSlice],
    node_name: &str,
) -> Vec<Frontend> {
    let affinity_timeout = match svc.session_affinity {
        SessionAffinity::None => None,
        SessionAffinity::ClientIp { timeout_seconds } => Some(timeout_seconds),
    };
    let etp_local = svc.external_traffic_policy == TrafficPolicy::Local;
    let itp_local = svc.internal_traffic_policy == TrafficPolicy::Local;
    let mut out = Vec::new();
    for port in &svc.ports {
        for &cip in &svc.cluster_ips {
            let v4 = cip.is_ipv4();
            let cands = candidates(svc, port, v4, slices, node_name);
            let mut push = |addr: IpAddr, p: u16, kind, scope, two_scopes, local_only| {
                let sel = select(&cands, local_only);
                out.push(Frontend {
                    service: svc.id(),
                    port_name: port.name.clone(),
                    addr: FrontendAddr {
                        addr,
                        port: p,
                        proto: port.protocol,
                    },
                    scope,
                    kind,
                    two_scopes,
                    local_only,
                    affinity_timeout,
                    backends: sel.backends,
                    verdict: sel.verdict,
                });
            };
            push(
                cip,
                port.port,
                FrontendKind::ClusterIp,
                Scope::External,
                false,
                itp_local,
            );

            let mut external: Vec<(IpAddr, u16, FrontendKind)> = Vec::new();
            let has_node_port =
                matches!(svc.type_, ServiceType::NodePort | ServiceType::LoadBalancer);
            if let (true, Some(np)) = (has_node_port, port.node_port) {
                let any = if v4 {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                } else {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                };
                external.push((any, np, FrontendKind::NodePort));
            }
            for &ip in svc.external_ips.iter().filter(|ip| ip.is_ipv4() == v4) {
                external.push((ip, port.port, FrontendKind::ExternalIp));
            }
            if svc.type_ == ServiceType::LoadBalancer {
                for &ip in svc.load_balancer_ips.iter().filter(|ip| ip.is_ipv4() == v4) {
                    external.push((ip, port.port, FrontendKind::LoadBalancer));
                }
            }
            for (addr, p, kind) in external {
                push(addr, p, kind, Scope::External, etp_local, etp_local);
                if etp_local {
                    push(addr, p, kind, Scope::Internal, true, false);
                }
            }
        }
    }
    out
}
