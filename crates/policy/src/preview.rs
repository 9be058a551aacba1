//! Impact preview: recorded flows replayed through the current policies
//! and through the current policies plus candidates, to list what the
//! candidates would newly drop (or newly let through) before anyone applies
//! them.
//!
//! A candidate replaces the policy of the same namespace/name (an update)
//! or joins them; it is judged as enforced whatever its annotation says
//! (the question is what applying it would drop). Both sides use
//! [`evaluate_audit`], so a flow today reported AUDIT is not "dropped
//! before".

use std::collections::BTreeSet;

use crate::audit::{evaluate_audit, Audited, Outcome};
use crate::cluster::ClusterNetworkPolicy;
use crate::model::{Flow, Inventory, NetworkPolicy, PolicyRef};
use crate::verdict::{AllowedBy, DirectionVerdict};

/// How one recorded flow fares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Index into the flows given.
    pub index: usize,
    pub before: Audited,
    pub after: Audited,
}

impl Change {
    /// Dropped with the candidates, not without.
    pub fn newly_dropped(&self) -> bool {
        self.after.outcome == Outcome::Dropped && self.before.outcome != Outcome::Dropped
    }

    /// What decides the flow with the candidates: the denying direction's
    /// default deny or deny rule, else the allowing rule; in words.
    pub fn decided_by(&self) -> String {
        let v = &self.after.verdict;
        let dirs = [("egress", &v.egress), ("ingress", &v.ingress)];
        let pick = if self.newly_dropped() {
            dirs.iter().find(|(_, d)| !d.allows())
        } else {
            dirs.iter()
                .find(|(_, d)| matches!(d, DirectionVerdict::Allowed(AllowedBy::Rule(_))))
        };
        match pick {
            Some((dir, d)) => format!("{dir}: {}", describe(d)),
            None => "no policy".into(),
        }
    }
}

fn describe(d: &DirectionVerdict) -> String {
    match d {
        DirectionVerdict::Denied(p) => format!("{p} default deny"),
        DirectionVerdict::Allowed(by) => by.to_string(),
        other => format!("{other:?}"),
    }
}

/// The current policies with `candidates` applied (same name: replaced).
pub fn with_candidates(
    current: &[NetworkPolicy],
    candidates: &[NetworkPolicy],
) -> Vec<NetworkPolicy> {
    let names: BTreeSet<PolicyRef> = candidates.iter().map(|c| c.reference()).collect();
    let mut out: Vec<NetworkPolicy> = current
        .iter()
        .filter(|p| !names.contains(&p.reference()))
        .cloned()
        .collect();
    out.extend(candidates.iter().cloned().map(|mut c| {
        c.audit = false;
        c
    }));
    out
}

/// Every flow whose outcome the candidates change, in the flows' order.
pub fn replay(
    current: &[NetworkPolicy],
    cluster: &[ClusterNetworkPolicy],
    inventory: &Inventory,
    candidates: &[NetworkPolicy],
    flows: &[Flow],
) -> Vec<Change> {
    let after_policies = with_candidates(current, candidates);
    flows
        .iter()
        .enumerate()
        .filter_map(|(index, f)| {
            let before = evaluate_audit(current, cluster, inventory, f);
            let after = evaluate_audit(&after_policies, cluster, inventory, f);
            (before.outcome != after.outcome).then_some(Change {
                index,
                before,
                after,
            })
        })
        .collect()
}
