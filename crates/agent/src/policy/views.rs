//! `weft policy list / show / explain`, answered from the reconciler's
//! compiled state (the whole cluster's) and what this node's maps hold.

use weft_api::{
    ExplainStep, PolicyExplain, PolicyExplainRequest, PolicyInfo, PolicyList, PolicyShow,
    PolicyShowRequest, ShownEndpoint, ShownEntry,
};
use weft_cni_spec::{codes, CniError};
use weft_policy::{AllowedBy, Compiled, DirectionVerdict, EndpointRef, PolicyRef, Protocol, Step};

use super::Link;

fn pod_name(e: &EndpointRef) -> String {
    format!("{}/{}", e.namespace, e.name)
}

fn not_found(msg: String) -> CniError {
    CniError::new(codes::INTERNAL, msg)
}

fn info(c: &Compiled, p: &PolicyRef) -> PolicyInfo {
    let s = c.policies.get(p).cloned().unwrap_or_default();
    PolicyInfo {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        ingress: s.ingress.iter().map(pod_name).collect(),
        egress: s.egress.iter().map(pod_name).collect(),
        rejected: c
            .rejected
            .iter()
            .find(|(r, _)| r == p)
            .map(|(_, why)| why.clone()),
        audit: s.audit,
    }
}

pub fn list(link: &Link) -> PolicyList {
    let Some(run) = link.running() else {
        return PolicyList {
            reason: link.off_reason(),
            ..PolicyList::default()
        };
    };
    let rec = run.lock();
    let full = rec.compiled();
    let applied = rec.applied();
    PolicyList {
        enabled: true,
        reason: run.reason.clone(),
        synced: super::synced(&run.view),
        rounds: rec.report.rounds,
        last_ops: rec.report.last_writes,
        last_micros: rec.report.last_micros,
        last_error: rec.report.last_error.clone(),
        policies: full.policies.keys().map(|p| info(full, p)).collect(),
        fail_closed: rec.report.fail_closed.iter().map(pod_name).collect(),
        identities: full.identities.len(),
        ipcache_entries: applied.ipcache.values().map(|c| c.len()).sum(),
        policy_entries: applied.endpoints.values().map(|e| e.entries.len()).sum(),
        last_change: run
            .last_change
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
    }
}

pub fn show(link: &Link, req: &PolicyShowRequest) -> Result<PolicyShow, CniError> {
    let run = link.running().ok_or_else(|| {
        not_found(format!(
            "NetworkPolicy is not enforced: {}",
            link.off_reason()
        ))
    })?;
    let rec = run.lock();
    let c = rec.compiled();
    let p = PolicyRef {
        namespace: req.namespace.clone(),
        name: req.name.clone(),
    };
    if !c.policies.contains_key(&p) {
        return Err(not_found(format!(
            "no NetworkPolicy {p} in weftd's view; see `weft policy list`"
        )));
    }
    let policy = info(c, &p);
    let mut pods: Vec<EndpointRef> = c.policies[&p]
        .ingress
        .iter()
        .chain(&c.policies[&p].egress)
        .cloned()
        .collect();
    pods.sort();
    pods.dedup();
    let endpoints = pods
        .iter()
        .filter_map(|ep| {
            let e = c.endpoints.get(ep)?;
            Some(ShownEndpoint {
                pod: pod_name(ep),
                node: c.nodes.get(ep).cloned().unwrap_or_default(),
                ingress_isolated_by: e.ingress_isolated_by.as_ref().map(|p| p.to_string()),
                egress_isolated_by: e.egress_isolated_by.as_ref().map(|p| p.to_string()),
                entries: e
                    .entries
                    .iter()
                    .filter(|(_, by)| matches!(by, AllowedBy::Rule(r) if r.policy == p))
                    .map(|(k, by)| ShownEntry {
                        key: k.to_string(),
                        identity: k.identity.0,
                        peer: c
                            .identities
                            .get(&k.identity)
                            .map_or_else(|| "any peer".to_string(), |key| key.to_string()),
                        allowed_by: by.to_string(),
                    })
                    .collect(),
            })
        })
        .collect();
    Ok(PolicyShow { policy, endpoints })
}

fn verdict(v: &DirectionVerdict) -> String {
    match v {
        DirectionVerdict::NotApplicable => "not a policy-managed pod".into(),
        DirectionVerdict::NotIsolated => "not isolated".into(),
        DirectionVerdict::Allowed(by) => format!("allowed by {by}"),
        DirectionVerdict::Denied(p) => format!("denied by the default deny of {p}"),
        DirectionVerdict::DeniedBy(r) => format!("denied by {r}"),
    }
}

fn step(s: &Step) -> ExplainStep {
    ExplainStep {
        pod: pod_name(&s.endpoint),
        peer_identity: s.peer_identity.0,
        peer: s
            .peer
            .as_ref()
            .map_or_else(|| "world".to_string(), |k| k.to_string()),
        entry: s.entry.as_ref().map(|k| k.to_string()),
        verdict: verdict(&s.verdict),
    }
}

fn endpoint_ref(s: &str) -> Result<EndpointRef, CniError> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => Ok(EndpointRef {
            namespace: ns.into(),
            name: name.into(),
        }),
        _ => Err(not_found(format!("{s:?} is not NAMESPACE/POD"))),
    }
}

pub fn explain(link: &Link, req: &PolicyExplainRequest) -> Result<PolicyExplain, CniError> {
    let run = link.running().ok_or_else(|| {
        not_found(format!(
            "NetworkPolicy is not enforced: {}",
            link.off_reason()
        ))
    })?;
    let (from, to) = (endpoint_ref(&req.from)?, endpoint_ref(&req.to)?);
    let proto = match req.protocol.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        other => {
            return Err(not_found(format!(
                "protocol {other:?}: say tcp, udp or sctp"
            )))
        }
    };
    let rec = run.lock();
    let e = rec
        .compiled()
        .explain_pods(&from, &to, proto, req.port)
        .ok_or_else(|| {
            not_found(format!(
                "{} or {} has no address in weftd's view (not running yet, hostNetwork, or no such pod)",
                req.from, req.to
            ))
        })?;
    Ok(PolicyExplain {
        allowed: e.verdict.allowed,
        summary: e.verdict.summary(),
        src: e.flow.src.to_string(),
        dst: e.flow.dst.to_string(),
        egress: e.egress.as_ref().map(step),
        ingress: e.ingress.as_ref().map(step),
    })
}
