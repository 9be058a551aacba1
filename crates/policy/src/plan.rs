//! From one compiled state to the next: the map writes, in an order that
//! never drops traffic both states allow.
//!
//! Identities are stable (one allocator), so an entry means the same thing
//! before and after. Entries decide (ClusterNetworkPolicy entries may
//! deny), so every step keeps each packet at its old decision or its new
//! one, never a mix. The order:
//!
//! 1. policy entries added or changed on every endpoint, the peers' own
//!    identities before ANY (read only on their miss), each longest prefix
//!    first (a shorter new entry never decides for a longer one not yet
//!    written); before them, *pins*: where ANY changes, an identity that
//!    addresses leave gets its old decisions written as its own entries,
//!    one that addresses arrive at its new ones; the changes of identities
//!    addresses leave wait (step 3);
//! 2. isolation lifted (or only its attribution changed): lifting opens,
//!    which the new state wants anyway, and it must come before an address
//!    moves to an identity the old isolated state has no entry for;
//! 3. ipcache entries added or changed, each after the identity its
//!    addresses go to took its new decisions and before the one they leave
//!    does: those identities' changes are written as soon as nothing is
//!    left to move off them;
//! 4. isolation imposed, now that the entries and identities it needs exist;
//! 5. ipcache entries removed;
//! 6. policy entries removed (pins included), shortest prefix first (what a
//!    gone entry covered falls to new entries only), then endpoints that
//!    are gone.
//!
//! So traffic allowed in both states passes throughout
//! (`tests/update_plan.rs`, `tests/update_plan_tiers.rs`). The cost: while
//! an update is being written, a packet may meet its new decision early or
//! its old one late, so a flow only one state allows can pass for that
//! window; and when two
//! addresses trade identities in one update (a cycle), one side meets the
//! other's new decisions until the ipcache has moved it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::compile::{Compiled, EndpointPolicy, EndpointRef};
use crate::identity::Identity;
use crate::mapkey::PolicyKey;
use crate::model::{Direction, PolicyRef};
use crate::verdict::AllowedBy;

/// One write to one map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOp {
    PolicyUpsert {
        endpoint: EndpointRef,
        key: PolicyKey,
        value: AllowedBy,
    },
    IpcacheUpsert {
        node: String,
        prefix: IpNet,
        identity: Identity,
    },
    Isolation {
        endpoint: EndpointRef,
        direction: Direction,
        isolated_by: Option<PolicyRef>,
    },
    IpcacheDelete {
        node: String,
        prefix: IpNet,
    },
    PolicyDelete {
        endpoint: EndpointRef,
        key: PolicyKey,
    },
    EndpointGone {
        endpoint: EndpointRef,
    },
}

/// The writes that turn `old` into `new`, in a safe order (see above).
pub fn plan(old: &Compiled, new: &Compiled) -> Vec<MapOp> {
    let mut ops = Vec::new();
    let empty = EndpointPolicy::default();
    let (leaving, arriving) = moving_identities(old, new);
    let mut deferred: BTreeMap<Identity, Vec<MapOp>> = BTreeMap::new();
    let mut pins: BTreeMap<&EndpointRef, BTreeSet<PolicyKey>> = BTreeMap::new();
    for (ep, n) in &new.endpoints {
        let o = old.endpoints.get(ep).unwrap_or(&empty);
        // An identity some address leaves keeps its old decisions until the
        // ipcache has moved the address: its ANY-covered regions get pinned
        // to the old decision before ANY changes, its own changes wait.
        let mut pinned: BTreeMap<PolicyKey, AllowedBy> = BTreeMap::new();
        // Only where ANY changes: an ANY entry that changes, appears or
        // goes, and every ANY entry inside one (a pin decides for all it
        // covers, so what lies inside it must be pinned too).
        let changed: Vec<&PolicyKey> = o
            .entries
            .keys()
            .chain(n.entries.keys())
            .filter(|k| k.identity == Identity::ANY && o.entries.get(*k) != n.entries.get(*k))
            .collect();
        let any_keys: BTreeSet<&PolicyKey> = o
            .entries
            .keys()
            .chain(n.entries.keys())
            .filter(|k| k.identity == Identity::ANY && changed.iter().any(|c| c.covers(k)))
            .collect();
        for id in &leaving {
            for any in &any_keys {
                let pin = PolicyKey {
                    identity: *id,
                    ..**any
                };
                if !o.entries.contains_key(&pin) {
                    pinned.insert(pin, decision_at(o, &pin));
                }
            }
        }
        // An identity addresses arrive at meets the old ANY entries (gone
        // only at the end) once they are there: pin it to its new
        // decisions over them.
        for id in arriving.difference(&leaving) {
            for any in any_keys.iter().filter(|k| o.entries.contains_key(**k)) {
                let pin = PolicyKey {
                    identity: *id,
                    ..**any
                };
                if !n.entries.contains_key(&pin) && !o.entries.contains_key(&pin) {
                    pinned.insert(pin, decision_at(n, &pin));
                }
            }
        }
        let mut pinned: Vec<(PolicyKey, AllowedBy)> = pinned.into_iter().collect();
        pinned.sort_by_key(|(k, _)| longest_first(k));
        pins.entry(ep)
            .or_default()
            .extend(pinned.iter().map(|(k, _)| *k));
        let mut upserts: Vec<(PolicyKey, AllowedBy)> = n
            .entries
            .iter()
            .filter(|(k, v)| o.entries.get(*k) != Some(*v))
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        // Entries decide (allow or deny), so a shorter one written before
        // the longer ones inside it would decide for them meanwhile: write
        // the peers' own identities before ANY (read only on their miss),
        // each longest first. A packet then always meets either its old
        // decision or its new one.
        upserts.sort_by_key(|(k, _)| longest_first(k));
        let (later, now): (Vec<_>, Vec<_>) = upserts
            .into_iter()
            .partition(|(k, _)| leaving.contains(&k.identity));
        let upsert = |(key, value): (PolicyKey, AllowedBy)| MapOp::PolicyUpsert {
            endpoint: ep.clone(),
            key,
            value,
        };
        ops.extend(pinned.into_iter().map(upsert));
        ops.extend(now.into_iter().map(upsert));
        for (k, v) in later {
            deferred.entry(k.identity).or_default().push(upsert((k, v)));
        }
    }
    let isolation = |imposed: bool| {
        let mut ops = Vec::new();
        for (ep, n) in &new.endpoints {
            let o = old.endpoints.get(ep);
            for dir in [Direction::Ingress, Direction::Egress] {
                let was = o.and_then(|o| o.isolated_by(dir));
                let now = n.isolated_by(dir);
                // the audit flag travels with the endpoint's state
                let write = o.is_none() || was != now || o.is_some_and(|o| o.audit != n.audit);
                if write && imposed == (was.is_none() && now.is_some()) {
                    ops.push(MapOp::Isolation {
                        endpoint: ep.clone(),
                        direction: dir,
                        isolated_by: now.cloned(),
                    });
                }
            }
        }
        ops
    };
    ops.extend(isolation(false));
    let no_cache = Default::default();
    // Each ipcache write moves addresses from one identity to another: it
    // goes after its destination took its new decisions and before its
    // source does. Identities that addresses only arrive at are already
    // done; the others go as soon as nothing is left to move off them.
    let mut moves: Vec<(Identity, MapOp)> = Vec::new();
    for (node, n) in &new.ipcache {
        let o = old.ipcache.get(node).unwrap_or(&no_cache);
        for (prefix, id) in n {
            if o.get(prefix) != Some(id) {
                let from = o
                    .get(prefix)
                    .copied()
                    .unwrap_or_else(|| old.identity_of(node, prefix.network()));
                let to = *id;
                moves.push((
                    from,
                    MapOp::IpcacheUpsert {
                        node: node.clone(),
                        prefix: *prefix,
                        identity: to,
                    },
                ));
            }
        }
    }
    while !moves.is_empty() || !deferred.is_empty() {
        let ready = |op: &MapOp| match op {
            MapOp::IpcacheUpsert { identity, .. } => !deferred.contains_key(identity),
            _ => true,
        };
        let (go, wait): (Vec<_>, Vec<_>) = moves.into_iter().partition(|(_, op)| ready(op));
        let progressed = !go.is_empty();
        ops.extend(go.into_iter().map(|(_, op)| op));
        moves = wait;
        let free = deferred
            .keys()
            .copied()
            .find(|id| !moves.iter().any(|(from, _)| from == id));
        match free {
            Some(id) => ops.extend(deferred.remove(&id).unwrap_or_default()),
            // A cycle (two addresses trading identities in one update):
            // one side meets the other's new decisions for the window.
            None if !progressed => {
                if let Some(id) = deferred.keys().next().copied() {
                    ops.extend(deferred.remove(&id).unwrap_or_default());
                } else {
                    ops.extend(moves.drain(..).map(|(_, op)| op));
                }
            }
            None => {}
        }
    }
    ops.extend(isolation(true));
    for (node, o) in &old.ipcache {
        let n = new.ipcache.get(node).unwrap_or(&no_cache);
        for prefix in o.keys().filter(|p| !n.contains_key(*p)) {
            ops.push(MapOp::IpcacheDelete {
                node: node.clone(),
                prefix: *prefix,
            });
        }
    }
    for (ep, n) in &new.endpoints {
        let o = old.endpoints.get(ep).unwrap_or(&empty);
        // Shortest first: a longer old entry still decides for what it
        // covers until it goes, and what a gone entry covered falls to new
        // entries only.
        let mut gone: Vec<PolicyKey> = o
            .entries
            .keys()
            .chain(pins.get(ep).into_iter().flatten())
            .filter(|k| !n.entries.contains_key(*k))
            .copied()
            .collect();
        gone.sort_by_key(|k| (k.prefix_len(), *k));
        gone.dedup();
        ops.extend(gone.into_iter().map(|key| MapOp::PolicyDelete {
            endpoint: ep.clone(),
            key,
        }));
    }
    for ep in old.endpoints.keys() {
        if !new.endpoints.contains_key(ep) {
            ops.push(MapOp::EndpointGone {
                endpoint: ep.clone(),
            });
        }
    }
    ops
}

fn longest_first(k: &PolicyKey) -> (bool, std::cmp::Reverse<u32>, PolicyKey) {
    (
        k.identity == Identity::ANY,
        std::cmp::Reverse(k.prefix_len()),
        *k,
    )
}

/// Identities some address stops resolving to on some node (its prefix
/// maps elsewhere or is gone, or a new longer prefix takes part of an old
/// one or of the world), and the identities such addresses go to.
fn moving_identities(old: &Compiled, new: &Compiled) -> (BTreeSet<Identity>, BTreeSet<Identity>) {
    let (mut leaving, mut arriving) = (BTreeSet::new(), BTreeSet::new());
    let none = BTreeMap::new();
    for (node, o) in &old.ipcache {
        let n = new.ipcache.get(node).unwrap_or(&none);
        for (prefix, id) in o {
            if n.get(prefix) != Some(id) {
                leaving.insert(*id);
                arriving.insert(new.identity_of(node, prefix.network()));
            }
        }
        for (prefix, id) in n.iter().filter(|(p, _)| !o.contains_key(*p)) {
            leaving.insert(old.identity_of(node, prefix.network()));
            arriving.insert(*id);
        }
    }
    (leaving, arriving)
}

/// What `policy` decides for the packets whose longest match would be
/// `key` if it were written: the program's lookup of those maps.
fn decision_at(policy: &EndpointPolicy, key: &PolicyKey) -> AllowedBy {
    let hit = |id: Identity| {
        let probe = PolicyKey {
            identity: id,
            ..*key
        };
        match probe.proto {
            None => policy
                .entries
                .get(&PolicyKey::all_protocols(id, key.direction)),
            Some(proto) => PolicyKey::lookup_chain(id, key.direction, proto, key.port.port)
                .filter(|c| c.covers(&probe))
                .find_map(|c| policy.entries.get(&c)),
        }
    };
    hit(key.identity)
        .or_else(|| hit(Identity::ANY))
        .cloned()
        .unwrap_or_else(|| match policy.isolated_by(key.direction) {
            Some(p) => AllowedBy::DefaultDeny(p.clone(), key.direction),
            None => AllowedBy::NoDecision,
        })
}

/// Applies writes to a compiled state the way the maps would take them
/// (for tests and for an agent's shadow copy of what it wrote).
pub fn apply(state: &mut Compiled, ops: &[MapOp]) {
    for op in ops {
        match op {
            MapOp::PolicyUpsert {
                endpoint,
                key,
                value,
            } => {
                state
                    .endpoints
                    .entry(endpoint.clone())
                    .or_default()
                    .entries
                    .insert(*key, value.clone());
            }
            MapOp::IpcacheUpsert {
                node,
                prefix,
                identity,
            } => {
                state
                    .ipcache
                    .entry(node.clone())
                    .or_default()
                    .insert(*prefix, *identity);
            }
            MapOp::Isolation {
                endpoint,
                direction,
                isolated_by,
            } => {
                let e = state.endpoints.entry(endpoint.clone()).or_default();
                match direction {
                    Direction::Ingress => e.ingress_isolated_by = isolated_by.clone(),
                    Direction::Egress => e.egress_isolated_by = isolated_by.clone(),
                }
            }
            MapOp::IpcacheDelete { node, prefix } => {
                if let Some(c) = state.ipcache.get_mut(node) {
                    c.remove(prefix);
                }
            }
            MapOp::PolicyDelete { endpoint, key } => {
                if let Some(e) = state.endpoints.get_mut(endpoint) {
                    e.entries.remove(key);
                }
            }
            MapOp::EndpointGone { endpoint } => {
                state.endpoints.remove(endpoint);
                let gone: Vec<IpAddr> = state
                    .addresses
                    .iter()
                    .filter(|(_, e)| *e == endpoint)
                    .map(|(a, _)| *a)
                    .collect();
                for a in gone {
                    state.addresses.remove(&a);
                }
                state.nodes.remove(endpoint);
            }
        }
    }
}
