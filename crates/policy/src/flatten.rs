//! From every rule that covers a key to the one decision the entry carries.
//!
//! Rules give raw keys (identity or ANY, direction, protocol, port prefix),
//! each with the reasons of every rule producing it. The data path looks up
//! the peer's identity and, only on a miss, identity ANY, and acts on the
//! single longest-prefix hit. So each written entry must carry the decision
//! of the whole tier stack for every packet whose longest hit it is:
//!
//! - a key's rules are those of every raw key covering it, its own
//!   identity's and ANY's (port blocks nest or are disjoint, so a packet
//!   whose longest hit is K is matched by exactly the rules covering K);
//! - an ANY key strictly inside a key of identity I is copied to I (else
//!   I's shorter hit would hide it), unless the copy adds no rule to those
//!   of I's covering key or decides the same without naming a
//!   NetworkPolicy rule.
//!
//! A packet no key covers meets the endpoint's isolation flag: no rule
//! matched, so NetworkPolicy's default deny if isolated, else allow.

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::{ClusterAction, Tier};
use crate::identity::Identity;
use crate::mapkey::PolicyKey;
use crate::model::{Direction, PolicyRef};
use crate::verdict::AllowedBy;

pub(crate) type Raw = BTreeMap<PolicyKey, BTreeSet<AllowedBy>>;

/// The decision for traffic matched by exactly `reasons` (the tiers, in
/// their order). `isolated_by`: the NetworkPolicy isolating this direction.
pub(crate) fn decide<'a>(
    reasons: impl Iterator<Item = &'a AllowedBy>,
    direction: Direction,
    isolated_by: Option<&PolicyRef>,
) -> AllowedBy {
    let (mut admin, mut np, mut baseline) = (None, None, None);
    for by in reasons {
        let slot = match by {
            AllowedBy::Cluster(r) if r.tier == Tier::Admin => &mut admin,
            AllowedBy::Cluster(_) => &mut baseline,
            _ => &mut np,
        };
        if slot.as_ref().is_none_or(|s: &&AllowedBy| by < *s) {
            *slot = Some(by);
        }
    }
    let decides = |by: Option<&AllowedBy>| match by {
        Some(AllowedBy::Cluster(r)) if r.action == ClusterAction::Pass => None,
        other => other.cloned(),
    };
    if let Some(by) = decides(admin) {
        return by;
    }
    if let Some(p) = isolated_by {
        return np
            .cloned()
            .unwrap_or_else(|| AllowedBy::DefaultDeny(p.clone(), direction));
    }
    decides(baseline).unwrap_or(AllowedBy::NoDecision)
}

/// The keys covering `k` (itself included) for identity `id`.
fn covering(k: &PolicyKey, id: Identity) -> Vec<PolicyKey> {
    match k.proto {
        None => vec![PolicyKey::all_protocols(id, k.direction)],
        Some(proto) => PolicyKey::lookup_chain(id, k.direction, proto, k.port.port)
            .filter(|c| c.covers(&PolicyKey { identity: id, ..*k }))
            .collect(),
    }
}

fn reasons_at(raw: &Raw, k: PolicyKey) -> impl Iterator<Item = &AllowedBy> {
    let mut ids = vec![k.identity];
    if k.identity != Identity::ANY {
        ids.push(Identity::ANY);
    }
    ids.into_iter()
        .flat_map(move |id| covering(&k, id))
        .filter_map(move |c| raw.get(&c))
        .flatten()
}

/// The entries to write for one endpoint (both directions).
pub(crate) fn flatten(
    raw: &Raw,
    isolated_by: impl Fn(Direction) -> Option<PolicyRef>,
) -> BTreeMap<PolicyKey, AllowedBy> {
    let isolation = [
        isolated_by(Direction::Ingress),
        isolated_by(Direction::Egress),
    ];
    let iso = |d: Direction| isolation[d as usize].as_ref();
    let mut out: BTreeMap<PolicyKey, AllowedBy> = raw
        .keys()
        .map(|k| {
            (
                *k,
                decide(reasons_at(raw, *k), k.direction, iso(k.direction)),
            )
        })
        .collect();
    // Identities with keys of their own, per direction.
    let named: BTreeSet<(Direction, Identity)> = raw
        .keys()
        .filter(|k| k.identity != Identity::ANY)
        .map(|k| (k.direction, k.identity))
        .collect();
    let mut copies: Vec<PolicyKey> = raw
        .keys()
        .filter(|k| k.identity == Identity::ANY)
        .flat_map(|any| {
            named
                .range((any.direction, Identity(1))..=(any.direction, Identity(u32::MAX)))
                .map(|(_, id)| PolicyKey {
                    identity: *id,
                    ..*any
                })
                .collect::<Vec<_>>()
        })
        .filter(|k| !raw.contains_key(k))
        .collect();
    // Shortest first: a copy is compared with what its identity's lookup
    // would hit without it, which is then final.
    copies.sort_by_key(|k| (k.prefix_len(), *k));
    for k in copies {
        let Some(shorter) = covering(&k, k.identity)
            .into_iter()
            .find(|c| *c != k && out.contains_key(c))
        else {
            // Nothing of this identity covers it: the ANY lookup serves it.
            continue;
        };
        // A copy that adds no rule to what the covering entry matches
        // decides the same. (Comparing rules, not decisions, keeps the
        // written keys independent of rule order.)
        let mine: BTreeSet<&AllowedBy> = reasons_at(raw, k).collect();
        let theirs: BTreeSet<&AllowedBy> = reasons_at(raw, shorter).collect();
        if mine == theirs {
            continue;
        }
        let value = decide(mine.into_iter(), k.direction, iso(k.direction));
        // Nor is one needed that decides the same without naming a
        // NetworkPolicy rule (a rule's index, so whether two agree, depends
        // on rule order): the node exemption's copies all go this way.
        if out[&shorter] != value || matches!(value, AllowedBy::Rule(_)) {
            out.insert(k, value);
        }
    }
    out
}
