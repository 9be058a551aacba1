//! Which endpoints of a Service a frontend may send new connections to.
//!
//! The rules are kube-proxy's (`pkg/proxy/topology.go` CategorizeEndpoints,
//! `endpointslicecache.go`), so a cluster behaves the same whichever of the
//! two proxies it runs:
//! - cluster-wide: the ready endpoints; when there are none, the endpoints
//!   that are serving *and* terminating (KEP-1669: a rolling update or a
//!   scale-down to zero keeps answering while the old pods drain);
//! - node-local (`externalTrafficPolicy`/`internalTrafficPolicy: Local`):
//!   the ready endpoints on this node, else this node's serving+terminating;
//! - with `publishNotReadyAddresses` every endpoint counts as ready, as the
//!   EndpointSlice controller itself marks them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::model::{AddressType, EndpointSlice, Protocol, Service, ServicePort, LABEL_HEADLESS};

/// A backend as every node names it: address, port and protocol. Maglev
/// tables are built from this, never from node-local IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct BackendAddr {
    pub addr: IpAddr,
    pub port: u16,
    pub proto: Protocol,
}

impl std::fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}/{:?}", self.port, self.proto),
            IpAddr::V6(a) => write!(f, "[{a}]:{}/{:?}", self.port, self.proto),
        }
    }
}

/// Why a backend is in a frontend's set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum BackendState {
    /// Ready (or published although not ready).
    Active,
    /// Serving but terminating, used only because nothing in scope is ready.
    Terminating,
}

/// One endpoint address of a Service port, its conditions resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub backend: BackendAddr,
    pub ready: bool,
    /// Serving and terminating: the KEP-1669 fallback.
    pub draining: bool,
    pub local: bool,
}

/// The endpoints of `svc`'s `port` in one address family, one per backend
/// address. The backend port comes from the slice's port named after the
/// Service port (that is how a named `targetPort` resolves per pod: pods
/// with different numbers land in different slices). A slice without that
/// port, or with an unset number, contributes nothing.
pub fn candidates(
    svc: &Service,
    port: &ServicePort,
    v4: bool,
    slices: &[&EndpointSlice],
    node_name: &str,
) -> Vec<Candidate> {
    let mut by_addr: BTreeMap<BackendAddr, Candidate> = BTreeMap::new();
    for slice in slices {
        let family_ok = match slice.address_type {
            AddressType::IPv4 => v4,
            AddressType::IPv6 => !v4,
            AddressType::FQDN => false,
        };
        if !family_ok || slice.labels.contains_key(LABEL_HEADLESS) {
            continue;
        }
        let Some(backend_port) = slice
            .ports
            .iter()
            .find(|p| p.name == port.name && p.protocol == port.protocol)
            .and_then(|p| p.port)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let c = &ep.conditions;
            let ready = svc.publish_not_ready_addresses || (c.is_ready() && !c.is_terminating());
            let draining = c.is_serving() && c.is_terminating();
            let local = ep.node_name.as_deref() == Some(node_name);
            for &addr in &ep.addresses {
                if addr.is_ipv4() != v4 {
                    continue;
                }
                let backend = BackendAddr {
                    addr,
                    port: backend_port,
                    proto: port.protocol,
                };
                let new = Candidate {
                    backend,
                    ready,
                    draining,
                    local,
                };
                // The same address in two slices (a slice being replaced):
                // keep the more usable view of it.
                by_addr
                    .entry(backend)
                    .and_modify(|old| {
                        old.ready |= new.ready;
                        old.draining |= new.draining;
                        old.local |= new.local;
                    })
                    .or_insert(new);
            }
        }
    }
    by_addr.into_values().collect()
}

/// What a frontend does with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Verdict {
    /// Pick one of the backends.
    Forward,
    /// The Service has no usable endpoint anywhere: refuse (TCP RST / ICMP
    /// port unreachable), as kube-proxy's REJECT does.
    Reject,
    /// Endpoints exist, but none this frontend may use (a `Local` policy on
    /// a node without one): drop, as kube-proxy does.
    Drop,
}

/// The backends one frontend scope may use, in backend-address order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub backends: Vec<(BackendAddr, BackendState)>,
    pub verdict: Verdict,
}

/// kube-proxy's categorisation for one scope: `local_only` for a `Local`
/// traffic policy.
pub fn select(cands: &[Candidate], local_only: bool) -> Selection {
    let in_scope = |c: &&Candidate| !local_only || c.local;
    let mut backends: Vec<_> = cands
        .iter()
        .filter(in_scope)
        .filter(|c| c.ready)
        .map(|c| (c.backend, BackendState::Active))
        .collect();
    if backends.is_empty() {
        backends = cands
            .iter()
            .filter(in_scope)
            .filter(|c| c.draining)
            .map(|c| (c.backend, BackendState::Terminating))
            .collect();
    }
    let any = cands.iter().any(|c| c.ready || c.draining);
    let verdict = if !backends.is_empty() {
        Verdict::Forward
    } else if any {
        Verdict::Drop
    } else {
        Verdict::Reject
    };
    Selection { backends, verdict }
}
