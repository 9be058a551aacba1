//! `weft services`: the reconciler's state as the API's [`ServicesView`].

use std::collections::BTreeMap;

use weft_api::{BackendView, FrontendView, ReconcileView, ServicesView};
use weft_lb::maps::{flags, ServiceKey};
use weft_lb::{
    BackendState, EndpointSlice, FrontendKind, LbMaps, NodeView, Scope, Service, Skipped, Verdict,
};

use super::reconciler::Reconciler;

fn kind(k: FrontendKind) -> &'static str {
    match k {
        FrontendKind::ClusterIp => "ClusterIP",
        FrontendKind::NodePort => "NodePort",
        FrontendKind::ExternalIp => "ExternalIP",
        FrontendKind::LoadBalancer => "LoadBalancer",
    }
}

fn scope(s: Scope) -> &'static str {
    match s {
        Scope::External => "ext",
        Scope::Internal => "int",
    }
}

fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Forward => "forward",
        Verdict::Reject => "reject",
        Verdict::Drop => "drop",
    }
}

fn flag_names(f: u16) -> Vec<String> {
    [
        (flags::TWO_SCOPES, "two-scopes"),
        (flags::LOCAL_ONLY, "local"),
        (flags::AFFINITY, "affinity"),
        (flags::MAGLEV, "maglev"),
        (flags::REJECT, "reject"),
        (flags::DROP, "drop"),
        (flags::TERMINATING, "terminating"),
    ]
    .iter()
    .filter(|(b, _)| f & b != 0)
    .map(|(_, n)| n.to_string())
    .collect()
}

fn skipped(s: &Skipped) -> String {
    match s {
        Skipped::ExternalName(n) => format!("{n}: ExternalName"),
        Skipped::Headless(n) => format!("{n}: headless"),
        Skipped::OtherProxy(n) => format!("{n}: service-proxy-name names another proxy"),
        Skipped::Conflict {
            addr,
            kept,
            dropped,
        } => format!("{dropped}: {addr} is held by {kept}"),
    }
}

/// Sizes of the four maps.
pub fn map_sizes(m: &LbMaps) -> BTreeMap<String, usize> {
    BTreeMap::from([
        ("service".to_string(), m.services.len()),
        ("backend".to_string(), m.backends.len()),
        ("rev_nat".to_string(), m.rev_nat.len()),
        ("maglev".to_string(), m.maglev.len()),
    ])
}

/// The view of `r` (affinity and counters are the kernel's, added by the
/// caller).
pub fn services_view(r: &Reconciler, node: &NodeView) -> ServicesView {
    let services: Vec<Service> = r.inputs().values().filter_map(|i| i.0.clone()).collect();
    let slices: Vec<EndpointSlice> = r
        .inputs()
        .values()
        .flat_map(|i| i.1.iter().cloned())
        .collect();
    let (fes, skip) = weft_lb::frontend::frontends(&services, &slices, node);
    let frontends = fes
        .iter()
        .map(|fe| {
            let key = ServiceKey {
                addr: fe.addr.addr,
                port: fe.addr.port,
                proto: fe.addr.proto,
                scope: fe.scope,
                slot: 0,
            };
            let want = r.maps().services.get(&key);
            FrontendView {
                service: fe.service.to_string(),
                port_name: fe.port_name.clone(),
                address: fe.addr.to_string(),
                kind: kind(fe.kind).into(),
                scope: scope(fe.scope).into(),
                id: r.ids().service_id(&fe.addr),
                verdict: verdict(fe.verdict).into(),
                flags: want.map(|m| flag_names(m.flags)).unwrap_or_default(),
                affinity_timeout_seconds: fe.affinity_timeout,
                backends: fe
                    .backends
                    .iter()
                    .map(|(b, st)| BackendView {
                        id: r.ids().backend_id(b),
                        address: b.to_string(),
                        state: match st {
                            BackendState::Active => "active",
                            BackendState::Terminating => "terminating",
                        }
                        .into(),
                    })
                    .collect(),
                programmed: want.is_some() && r.current().services.get(&key) == want,
            }
        })
        .collect();
    let p = r.progress();
    ServicesView {
        mode: "on".into(),
        synced: r.synced(),
        converged: r.converged(),
        frontends,
        skipped: skip.iter().map(skipped).collect(),
        reconcile: ReconcileView {
            rounds: p.rounds,
            ops_applied: p.ops_applied,
            ops_failed: p.ops_failed,
            pending: p.pending,
            last_error: p.last_error.clone(),
            refused: p
                .refused
                .iter()
                .map(|(n, e)| (n.to_string(), e.clone()))
                .collect(),
        },
        maps: map_sizes(r.current()),
        affinity: Vec::new(),
        counters: BTreeMap::new(),
    }
}
