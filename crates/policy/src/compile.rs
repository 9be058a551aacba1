//! NetworkPolicies + pods + nodes -> identities, per-node ipcaches and
//! per-endpoint policy map entries.
//!
//! Every entry is an allow (the v1 API has no deny rules); a miss in an
//! isolated direction is the default deny. Each entry carries the smallest
//! reason ([`AllowedBy`]) among the rules that produce it *or any entry of
//! the same identity covering it*, so the single longest-prefix hit the
//! program gets already names the same rule the evaluator would.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::identity::{Identity, IdentityAllocator, IdentityKey, Subject};
use crate::mapkey::PolicyKey;
use crate::model::{
    Direction, Inventory, NetworkPolicy, Peer, PolicyPort, PolicyRef, PortRef, Workload,
};
use crate::ports::{range_prefixes, PortPrefix};
use crate::verdict::{AllowedBy, RuleRef};
use crate::PolicyError;

/// `namespace/name` of a pod that has a policy map.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointRef {
    pub namespace: String,
    pub name: String,
}

/// One endpoint's policy map plus its isolation state (a flag per direction
/// in the endpoint's own map entry: not isolated = no lookup).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPolicy {
    /// The smallest policy isolating the endpoint for ingress, if any.
    pub ingress_isolated_by: Option<PolicyRef>,
    pub egress_isolated_by: Option<PolicyRef>,
    pub entries: BTreeMap<PolicyKey, AllowedBy>,
}

impl EndpointPolicy {
    pub fn isolated_by(&self, dir: Direction) -> Option<&PolicyRef> {
        match dir {
            Direction::Ingress => self.ingress_isolated_by.as_ref(),
            Direction::Egress => self.egress_isolated_by.as_ref(),
        }
    }
}

/// Everything the data path needs, for every node and endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compiled {
    /// Every identity in use, with what it stands for.
    pub identities: BTreeMap<Identity, IdentityKey>,
    /// Per node: prefix -> identity (a miss is [`Identity::WORLD`]).
    pub ipcache: BTreeMap<String, BTreeMap<IpNet, Identity>>,
    /// Pod address -> endpoint (the data path's endpoint map).
    pub addresses: BTreeMap<IpAddr, EndpointRef>,
    /// Endpoint -> the node it runs on.
    pub nodes: BTreeMap<EndpointRef, String>,
    pub endpoints: BTreeMap<EndpointRef, EndpointPolicy>,
    /// Policies compiled fail-closed (they isolate, open nothing), and why.
    pub rejected: Vec<(PolicyRef, String)>,
}

/// Compiles the whole cluster. Only the allocator can fail.
pub fn compile(
    policies: &[NetworkPolicy],
    inventory: &Inventory,
    allocator: &mut dyn IdentityAllocator,
) -> Result<Compiled, PolicyError> {
    let mut out = Compiled::default();
    let mut valid = Vec::with_capacity(policies.len());
    for p in policies {
        let check = p.validate();
        if let Err(e) = &check {
            out.rejected.push((p.reference(), e.to_string()));
        }
        valid.push(check.is_ok());
    }
    out.rejected.sort();
    let pieces = cidr_pieces(policies, &valid);

    // Reserved identities are always in the catalogue: the node exemption
    // needs HOST even on a node whose addresses are not known yet.
    for key in [Subject::Host, Subject::World, Subject::RemoteNode] {
        let key = IdentityKey {
            subject: key,
            cidr: None,
        };
        out.identities.insert(allocator.allocate(&key)?, key);
    }
    let node_addrs = node_addresses(inventory);
    for node in node_addrs.keys() {
        let mut cache = BTreeMap::new();
        for piece in &pieces {
            let key = IdentityKey {
                subject: Subject::World,
                cidr: Some(*piece),
            };
            cache.insert(*piece, intern(&mut out, allocator, key)?);
        }
        for (other, addrs) in &node_addrs {
            let subject = if other == node {
                Subject::Host
            } else {
                Subject::RemoteNode
            };
            for a in addrs {
                let key = IdentityKey {
                    subject: subject.clone(),
                    cidr: piece_of(&pieces, *a),
                };
                cache.insert(IpNet::from(*a), intern(&mut out, allocator, key)?);
            }
        }
        for w in inventory.workloads.iter().filter(|w| !w.host_network) {
            for a in &w.ips {
                let key = IdentityKey {
                    subject: pod_subject(w),
                    cidr: piece_of(&pieces, *a),
                };
                cache.insert(IpNet::from(*a), intern(&mut out, allocator, key)?);
            }
        }
        out.ipcache.insert(node.clone(), cache);
    }

    for w in inventory.workloads.iter().filter(|w| !w.host_network) {
        let ep = EndpointRef {
            namespace: w.namespace.clone(),
            name: w.name.clone(),
        };
        for a in &w.ips {
            out.addresses.insert(*a, ep.clone());
        }
        out.nodes.insert(ep.clone(), w.node.clone());
        let policy = endpoint_entries(policies, &valid, &out.identities, w);
        out.endpoints.insert(ep, policy);
    }
    Ok(out)
}

fn intern(
    out: &mut Compiled,
    allocator: &mut dyn IdentityAllocator,
    key: IdentityKey,
) -> Result<Identity, PolicyError> {
    let id = allocator.allocate(&key)?;
    out.identities.entry(id).or_insert(key);
    Ok(id)
}

pub(crate) fn pod_subject(w: &Workload) -> Subject {
    Subject::Pod {
        namespace: w.namespace.clone(),
        labels: w.labels.clone(),
        namespace_labels: w.namespace_labels.clone(),
        named_ports: w.named_ports.clone(),
    }
}

/// Node name -> its addresses (hostNetwork pods' addresses count as their
/// node's), for every node known from the nodes or the workloads.
fn node_addresses(inv: &Inventory) -> BTreeMap<String, BTreeSet<IpAddr>> {
    let mut m: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
    for n in &inv.nodes {
        m.entry(n.name.clone())
            .or_default()
            .extend(n.ips.iter().copied());
    }
    for w in &inv.workloads {
        let e = m.entry(w.node.clone()).or_default();
        if w.host_network {
            e.extend(w.ips.iter().copied());
        }
    }
    m
}

/// Every prefix any valid ipBlock names (cidr or except), normalized. An
/// address's piece is the longest of them containing it; an ipBlock then
/// holds exactly the pieces inside its cidr and inside none of its excepts.
fn cidr_pieces(policies: &[NetworkPolicy], valid: &[bool]) -> BTreeSet<IpNet> {
    let mut out = BTreeSet::new();
    for (p, _) in policies.iter().zip(valid).filter(|(_, ok)| **ok) {
        for dir in [Direction::Ingress, Direction::Egress] {
            for rule in p.rules(dir) {
                for block in rule
                    .peers
                    .iter()
                    .flatten()
                    .filter_map(|peer| peer.ip_block.as_ref())
                {
                    out.insert(block.cidr.trunc());
                    out.extend(block.except.iter().map(|e| e.trunc()));
                }
            }
        }
    }
    out
}

pub(crate) fn piece_of(pieces: &BTreeSet<IpNet>, addr: IpAddr) -> Option<IpNet> {
    pieces
        .iter()
        .filter(|p| p.contains(&addr))
        .max_by_key(|p| p.prefix_len())
        .copied()
}

/// Which peers a rule names.
enum Peers {
    Any,
    Some(BTreeSet<Identity>),
}

/// The map entries of one endpoint, given every identity in use (the
/// catalogue a [`Compiled`] holds). For recompiling one pod after its
/// labels or the policies of its namespace changed.
pub fn compile_endpoint(
    policies: &[NetworkPolicy],
    identities: &BTreeMap<Identity, IdentityKey>,
    subject: &Workload,
) -> EndpointPolicy {
    let valid: Vec<bool> = policies.iter().map(|p| p.validate().is_ok()).collect();
    endpoint_entries(policies, &valid, identities, subject)
}

fn endpoint_entries(
    policies: &[NetworkPolicy],
    valid: &[bool],
    identities: &BTreeMap<Identity, IdentityKey>,
    subject: &Workload,
) -> EndpointPolicy {
    let mut out = EndpointPolicy::default();
    if subject.host_network {
        return out;
    }
    for dir in [Direction::Ingress, Direction::Egress] {
        let selecting: Vec<usize> = (0..policies.len())
            .filter(|&i| {
                let p = &policies[i];
                p.namespace == subject.namespace
                    && p.affects(dir)
                    // An invalid podSelector selects the whole namespace:
                    // such a policy can only close (see evaluate.rs).
                    && (p.pod_selector.validate().is_err() || p.pod_selector.matches(&subject.labels))
            })
            .collect();
        let Some(first) = selecting.iter().map(|&i| policies[i].reference()).min() else {
            continue;
        };
        match dir {
            Direction::Ingress => out.ingress_isolated_by = Some(first),
            Direction::Egress => out.egress_isolated_by = Some(first),
        }
        if dir == Direction::Ingress {
            for (id, key) in identities {
                if key.subject == Subject::Host {
                    insert(
                        &mut out.entries,
                        PolicyKey::all_protocols(*id, dir),
                        AllowedBy::LocalNode,
                    );
                }
            }
        }
        for &i in selecting.iter().filter(|&&i| valid[i]) {
            let policy = &policies[i];
            for (index, rule) in policy.rules(dir).iter().enumerate() {
                let by = AllowedBy::Rule(RuleRef {
                    policy: policy.reference(),
                    direction: dir,
                    index,
                });
                let peers = match rule.peers.as_deref() {
                    None | Some([]) => Peers::Any,
                    Some(list) => Peers::Some(
                        identities
                            .iter()
                            .filter(|(_, key)| {
                                list.iter().any(|peer| peer_selects(policy, peer, key))
                            })
                            .map(|(id, _)| *id)
                            .collect(),
                    ),
                };
                let ports: &[PolicyPort] = rule.ports.as_deref().unwrap_or(&[]);
                if ports.is_empty() {
                    for id in peer_ids(&peers) {
                        insert(
                            &mut out.entries,
                            PolicyKey::all_protocols(id, dir),
                            by.clone(),
                        );
                    }
                    continue;
                }
                for port in ports {
                    let proto = port.protocol().number();
                    let key = |identity, port| PolicyKey {
                        identity,
                        direction: dir,
                        proto: Some(proto),
                        port,
                    };
                    match (&port.port, port.end_port) {
                        (None, _) => {
                            for id in peer_ids(&peers) {
                                insert(&mut out.entries, key(id, PortPrefix::ANY), by.clone());
                            }
                        }
                        (Some(PortRef::Number(lo)), end) => {
                            for block in range_prefixes(*lo, end.unwrap_or(*lo)) {
                                for id in peer_ids(&peers) {
                                    insert(&mut out.entries, key(id, block), by.clone());
                                }
                            }
                        }
                        (Some(PortRef::Name(name)), _) => {
                            let resolve = |ports: &BTreeMap<String, (u16, crate::Protocol)>| {
                                ports
                                    .get(name)
                                    .filter(|(_, p)| *p == port.protocol())
                                    .map(|(n, _)| *n)
                            };
                            match dir {
                                // The destination is the subject: one number.
                                Direction::Ingress => {
                                    if let Some(n) = resolve(&subject.named_ports) {
                                        for id in peer_ids(&peers) {
                                            insert(
                                                &mut out.entries,
                                                key(id, PortPrefix::exact(n)),
                                                by.clone(),
                                            );
                                        }
                                    }
                                }
                                // The destination is the peer: its identity
                                // carries its named ports. Only pods have any,
                                // so "any peer" becomes every pod identity.
                                Direction::Egress => {
                                    for (id, ik) in identities {
                                        let Subject::Pod { named_ports, .. } = &ik.subject else {
                                            continue;
                                        };
                                        let named = match &peers {
                                            Peers::Any => true,
                                            Peers::Some(set) => set.contains(id),
                                        };
                                        if let (true, Some(n)) = (named, resolve(named_ports)) {
                                            insert(
                                                &mut out.entries,
                                                key(*id, PortPrefix::exact(n)),
                                                by.clone(),
                                            );
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    fold_covering(&mut out.entries);
    out
}

fn peer_ids(peers: &Peers) -> Vec<Identity> {
    match peers {
        Peers::Any => vec![Identity::ANY],
        Peers::Some(set) => set.iter().copied().collect(),
    }
}

fn insert(entries: &mut BTreeMap<PolicyKey, AllowedBy>, key: PolicyKey, by: AllowedBy) {
    entries
        .entry(key)
        .and_modify(|cur| {
            if by < *cur {
                *cur = by.clone();
            }
        })
        .or_insert(by);
}

/// Whether a peer of `policy` names the addresses of identity `key`.
fn peer_selects(policy: &NetworkPolicy, peer: &Peer, key: &IdentityKey) -> bool {
    if let Some(block) = &peer.ip_block {
        // The piece is the longest named prefix around the address, so it
        // lies inside the cidr (outside every except) iff the address does.
        return key.cidr.is_some_and(|piece| {
            block.cidr.contains(&piece) && !block.except.iter().any(|e| e.contains(&piece))
        });
    }
    let Subject::Pod {
        namespace,
        labels,
        namespace_labels,
        ..
    } = &key.subject
    else {
        return false;
    };
    let namespace_ok = match &peer.namespace_selector {
        None => *namespace == policy.namespace,
        Some(sel) => sel.matches(namespace_labels),
    };
    namespace_ok
        && peer
            .pod_selector
            .as_ref()
            .is_none_or(|sel| sel.matches(labels))
}

/// Give every entry the smallest reason among the entries of its identity
/// that cover it, so one LPM hit is enough for attribution.
fn fold_covering(entries: &mut BTreeMap<PolicyKey, AllowedBy>) {
    let mut by_identity: BTreeMap<(Identity, Direction), Vec<(PolicyKey, AllowedBy)>> =
        BTreeMap::new();
    for (k, v) in entries.iter() {
        by_identity
            .entry((k.identity, k.direction))
            .or_default()
            .push((*k, v.clone()));
    }
    for group in by_identity.values() {
        for (k, _) in group {
            let best = group
                .iter()
                .filter(|(c, _)| c.covers(k))
                .map(|(_, v)| v)
                .min()
                .expect("an entry covers itself");
            entries.insert(*k, best.clone());
        }
    }
}
