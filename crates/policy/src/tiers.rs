//! The evaluator's tiers, read off the ClusterNetworkPolicy API docs:
//! Admin, then NetworkPolicy, then Baseline, then Kubernetes' default allow.
//!
//! "If Admin tier has made a final decision (Accept or Deny) on a
//! connection, then no further evaluation is done." "v1.NetworkPolicy always
//! makes a final decision for selected pods. Further evaluation only happens
//! for Pods not selected by a v1.NetworkPolicy." Within a tier, policies by
//! priority (lower first; equal priorities by name, weft's choice where the
//! API leaves it open), rules in the order written; the first rule that
//! matches decides, and a Pass hands the connection to the next tier.

use std::net::IpAddr;

use crate::cluster::{ClusterAction, ClusterNetworkPolicy, Effective, Tier};
use crate::evaluate::{evaluate_direction, End};
use crate::model::{Direction, Flow, Inventory, NetworkPolicy, Workload};
use crate::verdict::{AllowedBy, ClusterRuleRef, DirectionVerdict, Verdict};

/// What one tier says about a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TierOutcome {
    /// An Accept or Deny rule matched.
    Decided(ClusterRuleRef),
    /// A Pass rule matched first.
    Pass,
    NoMatch,
}

/// The verdict for one flow under NetworkPolicies and
/// ClusterNetworkPolicies: egress at the source pod, ingress at the
/// destination pod.
pub fn evaluate_all(
    policies: &[NetworkPolicy],
    cluster: &[ClusterNetworkPolicy],
    inventory: &Inventory,
    flow: &Flow,
) -> Verdict {
    let src = inventory.resolve(flow.src);
    let dst = inventory.resolve(flow.dst);
    let at = |dir, subject: End<'_>, peer, peer_addr| match subject {
        End::Pod(w) => evaluate_tiers(policies, cluster, dir, w, peer, peer_addr, flow),
        _ => DirectionVerdict::NotApplicable,
    };
    Verdict::new(
        at(Direction::Egress, src, dst, flow.dst),
        at(Direction::Ingress, dst, src, flow.src),
    )
}

/// One direction at one pod, through every tier.
pub fn evaluate_tiers(
    policies: &[NetworkPolicy],
    cluster: &[ClusterNetworkPolicy],
    dir: Direction,
    subject: &Workload,
    peer: End<'_>,
    peer_addr: IpAddr,
    flow: &Flow,
) -> DirectionVerdict {
    let decided = |r: ClusterRuleRef| AllowedBy::Cluster(r).verdict();
    let tier = |t| evaluate_tier(cluster, t, dir, subject, peer, peer_addr, flow);
    if let TierOutcome::Decided(r) = tier(Tier::Admin) {
        return decided(r);
    }
    match evaluate_direction(policies, dir, subject, peer, peer_addr, flow) {
        DirectionVerdict::NotIsolated => match tier(Tier::Baseline) {
            TierOutcome::Decided(r) => decided(r),
            TierOutcome::Pass | TierOutcome::NoMatch => DirectionVerdict::NotIsolated,
        },
        v => v,
    }
}

/// The first matching rule of the tier's policies selecting `subject`.
pub fn evaluate_tier(
    cluster: &[ClusterNetworkPolicy],
    tier: Tier,
    dir: Direction,
    subject: &Workload,
    peer: End<'_>,
    peer_addr: IpAddr,
    flow: &Flow,
) -> TierOutcome {
    let mut selecting: Vec<&ClusterNetworkPolicy> = cluster
        .iter()
        .filter(|c| c.tier == tier && c.selects(subject))
        .collect();
    selecting.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
    // A named port resolves on the destination.
    let destination = match (dir, peer) {
        (Direction::Ingress, _) => Some(subject),
        (Direction::Egress, End::Pod(w)) => Some(w),
        (Direction::Egress, _) => None,
    };
    for c in selecting {
        for index in 0..c.rules(dir).len() {
            let action = match c.effective(dir, index) {
                Effective::Nothing => continue,
                Effective::DenyAll => ClusterAction::Deny,
                Effective::Rule(rule) => {
                    let peer_ok = rule.peers.iter().any(|p| p.matches(peer, peer_addr));
                    let port_ok = rule.protocols.is_empty()
                        || rule
                            .protocols
                            .iter()
                            .any(|p| p.matches(flow.proto, flow.port, destination));
                    if !(peer_ok && port_ok) {
                        continue;
                    }
                    rule.action
                }
            };
            if action == ClusterAction::Pass {
                return TierOutcome::Pass;
            }
            return TierOutcome::Decided(ClusterRuleRef {
                tier,
                priority: c.priority,
                name: c.name.clone(),
                direction: dir,
                index,
                action,
            });
        }
    }
    TierOutcome::NoMatch
}
