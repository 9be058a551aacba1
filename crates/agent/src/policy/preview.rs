//! `weft policy preview`: this node's flow ring replayed through the
//! current policies with and without candidates (the replay itself is
//! `weft_policy::preview`, pure).

use std::collections::BTreeMap;
use std::net::IpAddr;

use weft_api::{Flow, PolicyPreview, PolicyPreviewRequest, PreviewFlow, Verdict};
use weft_cni_spec::{codes, CniError};
use weft_k8s as k8s;
use weft_policy::{preview, Outcome, Protocol};

use super::inputs::{inputs, policy, Snapshot};
use super::Link;

fn refused(msg: String) -> CniError {
    CniError::new(codes::INTERNAL, msg)
}

fn outcome_name(o: Outcome) -> String {
    match o {
        Outcome::Forwarded => "FORWARDED",
        Outcome::Audit => "AUDIT",
        Outcome::Dropped => "DROPPED",
    }
    .into()
}

fn proto(s: &str) -> Option<Protocol> {
    match s.to_ascii_uppercase().as_str() {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

/// The policy decision a recorded flow stands for, if it is one: a
/// connection's first packet or a drop, with addresses and a protocol the
/// policies speak of.
fn replayable(f: &Flow) -> Option<weft_policy::Flow> {
    let judged = matches!(
        f.verdict,
        Verdict::Forwarded | Verdict::Dropped | Verdict::Audit
    );
    if !judged || f.kind != "DECISION" {
        return None;
    }
    Some(weft_policy::Flow {
        src: f.source.ip?,
        dst: f.destination.ip?,
        proto: proto(&f.protocol)?,
        port: f.destination.port,
    })
}

/// The replay of `recorded` (oldest first) through `snap`'s policies with
/// and without `candidates`; each distinct flow once, as its latest record.
pub fn replay(
    snap: &Snapshot,
    node: &str,
    candidates: &[k8s::NetPolicy],
    recorded: &[Flow],
) -> PolicyPreview {
    let mut distinct: BTreeMap<(IpAddr, IpAddr, Protocol, u16), (usize, usize)> = BTreeMap::new();
    for (i, f) in recorded.iter().enumerate() {
        if let Some(p) = replayable(f) {
            let e = distinct
                .entry((p.src, p.dst, p.proto, p.port))
                .or_insert((i, 0));
            *e = (i, e.1 + 1);
        }
    }
    let mut order: Vec<(usize, usize)> = distinct.into_values().collect();
    order.sort();
    let flows: Vec<weft_policy::Flow> = order
        .iter()
        .filter_map(|(i, _)| replayable(&recorded[*i]))
        .collect();
    let (current, inventory) = inputs(snap, node, &BTreeMap::new());
    let candidates: Vec<_> = candidates.iter().map(policy).collect();
    let changes = preview::replay(&current, &snap.cluster, &inventory, &candidates, &flows);
    let mut out = PolicyPreview {
        node: node.into(),
        replayed: flows.len(),
        ..PolicyPreview::default()
    };
    for c in changes {
        let (i, count) = order[c.index];
        let shown = PreviewFlow {
            flow: recorded[i].clone(),
            count,
            before: outcome_name(c.before.outcome),
            after: outcome_name(c.after.outcome),
            decided_by: c.decided_by(),
        };
        if c.newly_dropped() {
            out.newly_dropped.push(shown);
        } else if c.before.outcome == Outcome::Dropped {
            out.newly_allowed.push(shown);
        }
    }
    out
}

/// The API request: the candidates converted as the watches convert, the
/// view's policies, this node's ring.
pub fn serve(
    link: &Link,
    flows: &crate::flows::Link,
    req: &PolicyPreviewRequest,
) -> Result<PolicyPreview, CniError> {
    let Some(run) = link.running() else {
        return Err(refused(format!(
            "policy is off on this node ({}); start weftd with --policy on",
            link.off_reason()
        )));
    };
    let Some(snap) = super::snapshot(&run.view) else {
        return Err(refused(
            "the pod, namespace and policy watches have not listed yet; retry in a moment".into(),
        ));
    };
    let Some(hub) = flows.hub() else {
        return Err(refused(
            "this weftd keeps no flows (flow events off); nothing to replay".into(),
        ));
    };
    let candidates = req
        .policies
        .iter()
        .map(|v| k8s::convert::network_policy_from_json(v.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| refused(format!("candidate NetworkPolicy: {e}; fix the file")))?;
    let node = hub.node().to_string();
    let recorded: Vec<Flow> = hub
        .snapshot()
        .0
        .iter()
        .map(|s| crate::flows::decode::render(s, &node))
        .collect();
    Ok(replay(&snap, &node, &candidates, &recorded))
}

#[cfg(test)]
#[path = "preview_tests.rs"]
mod tests;
