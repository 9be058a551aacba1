//! From one compiled state to the next: the map writes, in an order that
//! never drops traffic both states allow.
//!
//! Identities are stable (one allocator), so an entry means the same thing
//! before and after. The order:
//!
//! 1. policy entries added or changed, on every endpoint;
//! 2. isolation lifted (or only its attribution changed): lifting opens,
//!    which the new state wants anyway, and it must come before an address
//!    moves to an identity the old isolated state has no entry for;
//! 3. ipcache entries added or changed (an address moving to a new identity
//!    finds that identity's entries already in place);
//! 4. isolation imposed, now that the entries and identities it needs exist;
//! 5. ipcache entries removed;
//! 6. policy entries removed, then endpoints that are gone.
//!
//! Between steps a packet sees the union of old and new allows for the
//! identities it resolves to, so traffic allowed in both states passes
//! throughout (`tests/update_plan.rs`). The cost: while an update is being
//! written, an address still resolving to its old identity may meet an
//! entry the new state added for that identity (which still names other
//! addresses), so a flow both states deny can pass for that window; the
//! window never opens what neither state allows any identity of.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::compile::{Compiled, EndpointRef};
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
    let empty = Default::default();
    for (ep, n) in &new.endpoints {
        let o = old.endpoints.get(ep).unwrap_or(&empty);
        for (k, v) in &n.entries {
            if o.entries.get(k) != Some(v) {
                ops.push(MapOp::PolicyUpsert {
                    endpoint: ep.clone(),
                    key: *k,
                    value: v.clone(),
                });
            }
        }
    }
    let isolation = |imposed: bool| {
        let mut ops = Vec::new();
        for (ep, n) in &new.endpoints {
            let o = old.endpoints.get(ep);
            for dir in [Direction::Ingress, Direction::Egress] {
                let was = o.and_then(|o| o.isolated_by(dir));
                let now = n.isolated_by(dir);
                let write = o.is_none() || was != now;
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
    for (node, n) in &new.ipcache {
        let o = old.ipcache.get(node).unwrap_or(&no_cache);
        for (prefix, id) in n {
            if o.get(prefix) != Some(id) {
                ops.push(MapOp::IpcacheUpsert {
                    node: node.clone(),
                    prefix: *prefix,
                    identity: *id,
                });
            }
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
    for (ep, o) in &old.endpoints {
        match new.endpoints.get(ep) {
            Some(n) => {
                for k in o.entries.keys().filter(|k| !n.entries.contains_key(*k)) {
                    ops.push(MapOp::PolicyDelete {
                        endpoint: ep.clone(),
                        key: *k,
                    });
                }
            }
            None => ops.push(MapOp::EndpointGone {
                endpoint: ep.clone(),
            }),
        }
    }
    ops
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
