//! Audit mode: NetworkPolicies annotated `weft.dev/audit: "true"` (or all
//! of a namespace so annotated) are compiled and evaluated but never
//! enforced. Their would-be drops pass and are reported as AUDIT.
//!
//! What "in audit" means, precisely. The programs carry one audit flag per
//! endpoint (`weft_policy_eps`), so audit is decided per pod:
//!
//! - a pod that some *enforced* policy selects (a NetworkPolicy without the
//!   annotation, in either direction, or any ClusterNetworkPolicy with rules
//!   for it) is **enforced**: audited policies are left out of its
//!   compilation altogether. NetworkPolicies only ever add allows, so an
//!   audited policy next to an enforced one could only open more, never
//!   deny more: leaving it out keeps enforcement exactly what it was.
//! - a pod that only audited NetworkPolicies select is **in audit**: its
//!   map is compiled from them as if they were enforced, and the endpoint
//!   gets the audit flag. A flow they would deny is AUDIT, not DROPPED.
//!
//! So a flow that only an audited policy would deny is AUDIT; one that an
//! enforced policy denies is DROPPED. The one case this cannot express: an
//! enforced policy isolating a pod for ingress only while an audited one
//! would isolate its egress — the pod is enforced, and the audited egress
//! is not reported (`weft policy list` still shows what the policy selects).
//! [`evaluate_audit`] is the reference the compiler is tested against.

use serde::{Deserialize, Serialize};

use crate::cluster::ClusterNetworkPolicy;
use crate::evaluate::End;
use crate::model::{Direction, Flow, Inventory, NetworkPolicy, Workload};
use crate::tiers::evaluate_tiers;
use crate::verdict::{DirectionVerdict, Verdict};

/// What the programs do with a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    Forwarded,
    /// Denied only at endpoints in audit: passed and reported.
    Audit,
    Dropped,
}

/// A flow's verdict with audit applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audited {
    /// The verdict of the policies each end is compiled from.
    pub verdict: Verdict,
    pub outcome: Outcome,
}

/// Whether a ClusterNetworkPolicy counts as enforced at a pod it selects:
/// whenever it has a rule in some direction.
pub(crate) fn cluster_applies(c: &ClusterNetworkPolicy) -> bool {
    !c.rules(Direction::Ingress).is_empty() || !c.rules(Direction::Egress).is_empty()
}

/// The policies (indices) an endpoint is compiled from: with an enforced
/// one selecting it, the enforced ones; else all (the audited ones).
pub(crate) fn effective(
    selecting_namespace: Vec<usize>,
    enforced: bool,
    audited: impl Fn(usize) -> bool,
) -> Vec<usize> {
    if enforced {
        selecting_namespace
            .into_iter()
            .filter(|&i| !audited(i))
            .collect()
    } else {
        selecting_namespace
    }
}

/// Whether `p` selects `w` in some direction (an invalid podSelector
/// selects the whole namespace, as in the compiler).
fn selects(p: &NetworkPolicy, w: &Workload) -> bool {
    !w.host_network
        && p.namespace == w.namespace
        && (p.affects(Direction::Ingress) || p.affects(Direction::Egress))
        && (p.pod_selector.validate().is_err() || p.pod_selector.matches(&w.labels))
}

/// The NetworkPolicies `w` is judged by, and whether it is in audit.
pub fn for_endpoint(
    policies: &[NetworkPolicy],
    cluster: &[ClusterNetworkPolicy],
    w: &Workload,
) -> (Vec<NetworkPolicy>, bool) {
    let enforced = policies.iter().any(|p| !p.audit && selects(p, w))
        || cluster.iter().any(|c| c.selects(w) && cluster_applies(c));
    if enforced {
        (
            policies.iter().filter(|p| !p.audit).cloned().collect(),
            false,
        )
    } else {
        let audit = policies.iter().any(|p| p.audit && selects(p, w));
        (policies.to_vec(), audit)
    }
}

/// The reference: each end judged by the policies it is compiled from; a
/// deny at an end in audit is AUDIT, anywhere else DROPPED.
pub fn evaluate_audit(
    policies: &[NetworkPolicy],
    cluster: &[ClusterNetworkPolicy],
    inventory: &Inventory,
    flow: &Flow,
) -> Audited {
    let src = inventory.resolve(flow.src);
    let dst = inventory.resolve(flow.dst);
    let at = |dir, subject: End<'_>, peer, peer_addr| match subject {
        End::Pod(w) => {
            let (effective, audit) = for_endpoint(policies, cluster, w);
            let v = evaluate_tiers(&effective, cluster, dir, w, peer, peer_addr, flow);
            (v, audit)
        }
        _ => (DirectionVerdict::NotApplicable, false),
    };
    let (egress, egress_audit) = at(Direction::Egress, src, dst, flow.dst);
    let (ingress, ingress_audit) = at(Direction::Ingress, dst, src, flow.src);
    let denied_at = |v: &DirectionVerdict, audit: bool| (!v.allows()).then_some(audit);
    let outcome = outcome(&[
        denied_at(&egress, egress_audit),
        denied_at(&ingress, ingress_audit),
    ]);
    Audited {
        verdict: Verdict::new(egress, ingress),
        outcome,
    }
}

impl crate::compile::Compiled {
    /// What the data path does with `flow`: [`Compiled::check`] with each
    /// end's audit flag.
    pub fn check_audit(&self, flow: &Flow) -> Audited {
        let verdict = self.check(flow);
        let audit_at = |addr| {
            self.addresses
                .get(&addr)
                .and_then(|ep| self.endpoints.get(ep))
                .is_some_and(|e| e.audit)
        };
        let outcome = outcome(&[
            (!verdict.egress.allows()).then(|| audit_at(flow.src)),
            (!verdict.ingress.allows()).then(|| audit_at(flow.dst)),
        ]);
        Audited { verdict, outcome }
    }
}

/// Some(in audit) per denying end.
fn outcome(denials: &[Option<bool>]) -> Outcome {
    if denials.contains(&Some(false)) {
        Outcome::Dropped
    } else if denials.contains(&Some(true)) {
        Outcome::Audit
    } else {
        Outcome::Forwarded
    }
}
