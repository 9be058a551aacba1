//! One endpoint's policy map entries.
//!
//! Every entry is an allow (the v1 API has no deny rules); a miss in an
//! isolated direction is the default deny. Each entry carries the smallest
//! reason ([`AllowedBy`]) among the rules that produce it *or any entry of
//! the same identity covering it*, so the single longest-prefix hit the
//! program gets already names the same rule the evaluator would.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::compile::EndpointPolicy;
use crate::identity::{Identity, IdentityKey, Subject};
use crate::mapkey::PolicyKey;
use crate::model::{Direction, NetworkPolicy, Peer, PolicyPort, PortRef, Protocol, Rule, Workload};
use crate::ports::{range_prefixes, PortPrefix};
use crate::verdict::{AllowedBy, RuleRef};

/// Which peers a rule names.
enum Peers {
    Any,
    Some(BTreeSet<Identity>),
}

/// What every endpoint's compilation shares: the policies by namespace and
/// the identities each rule's peers select (computed once per rule, the
/// way Cilium's selector cache serves every endpoint).
pub(crate) struct Context<'a> {
    policies: &'a [NetworkPolicy],
    valid: Vec<bool>,
    /// Whether each policy's podSelector is valid (checked once).
    selector_ok: Vec<bool>,
    by_namespace: HashMap<&'a str, Vec<usize>>,
    identities: &'a BTreeMap<Identity, IdentityKey>,
    peers: HashMap<(usize, Direction, usize), Peers>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        policies: &'a [NetworkPolicy],
        valid: Vec<bool>,
        identities: &'a BTreeMap<Identity, IdentityKey>,
    ) -> Self {
        let mut by_namespace: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, p) in policies.iter().enumerate() {
            by_namespace
                .entry(p.namespace.as_str())
                .or_default()
                .push(i);
        }
        Context {
            policies,
            valid,
            selector_ok: policies
                .iter()
                .map(|p| p.pod_selector.validate().is_ok())
                .collect(),
            by_namespace,
            identities,
            peers: HashMap::new(),
        }
    }

    /// The entries and isolation of one pod, and which policies select it
    /// in which direction.
    pub(crate) fn endpoint(
        &mut self,
        subject: &Workload,
    ) -> (EndpointPolicy, Vec<(usize, Direction)>) {
        let mut out = EndpointPolicy::default();
        let mut selected = Vec::new();
        if subject.host_network {
            return (out, selected);
        }
        let in_namespace = self
            .by_namespace
            .get(subject.namespace.as_str())
            .cloned()
            .unwrap_or_default();
        for dir in [Direction::Ingress, Direction::Egress] {
            let selecting: Vec<usize> = in_namespace
                .iter()
                .copied()
                .filter(|&i| {
                    let p = &self.policies[i];
                    // An invalid podSelector selects the whole namespace:
                    // such a policy can only close (see evaluate.rs).
                    p.affects(dir)
                        && (!self.selector_ok[i] || p.pod_selector.matches(&subject.labels))
                })
                .collect();
            let Some(first) = selecting
                .iter()
                .map(|&i| self.policies[i].reference())
                .min()
            else {
                continue;
            };
            match dir {
                Direction::Ingress => out.ingress_isolated_by = Some(first),
                Direction::Egress => out.egress_isolated_by = Some(first),
            }
            if dir == Direction::Ingress {
                for (id, key) in self.identities {
                    if key.subject == Subject::Host {
                        insert(
                            &mut out.entries,
                            PolicyKey::all_protocols(*id, dir),
                            AllowedBy::LocalNode,
                        );
                    }
                }
            }
            selected.extend(selecting.iter().map(|&i| (i, dir)));
            for i in selecting.into_iter().filter(|&i| self.valid[i]) {
                let policy = &self.policies[i];
                for (index, rule) in policy.rules(dir).iter().enumerate() {
                    let by = AllowedBy::Rule(RuleRef {
                        policy: policy.reference(),
                        direction: dir,
                        index,
                    });
                    let identities = self.identities;
                    let peers = self
                        .peers
                        .entry((i, dir, index))
                        .or_insert_with(|| select_peers(policy, rule, identities));
                    rule_entries(&mut out.entries, dir, rule, peers, identities, subject, &by);
                }
            }
        }
        fold_covering(&mut out.entries);
        (out, selected)
    }
}

fn select_peers(
    policy: &NetworkPolicy,
    rule: &Rule,
    identities: &BTreeMap<Identity, IdentityKey>,
) -> Peers {
    match rule.peers.as_deref() {
        None | Some([]) => Peers::Any,
        Some(list) => Peers::Some(
            identities
                .iter()
                .filter(|(_, key)| list.iter().any(|peer| peer_selects(policy, peer, key)))
                .map(|(id, _)| *id)
                .collect(),
        ),
    }
}

/// The entries one rule gives one endpoint.
fn rule_entries(
    entries: &mut BTreeMap<PolicyKey, AllowedBy>,
    dir: Direction,
    rule: &Rule,
    peers: &Peers,
    identities: &BTreeMap<Identity, IdentityKey>,
    subject: &Workload,
    by: &AllowedBy,
) {
    let ports: &[PolicyPort] = rule.ports.as_deref().unwrap_or(&[]);
    if ports.is_empty() {
        for id in peer_ids(peers) {
            insert(entries, PolicyKey::all_protocols(id, dir), by.clone());
        }
        return;
    }
    for port in ports {
        let proto = port.protocol();
        let key = |identity, port| PolicyKey {
            identity,
            direction: dir,
            proto: Some(proto.number()),
            port,
        };
        match (&port.port, port.end_port) {
            (None, _) => {
                for id in peer_ids(peers) {
                    insert(entries, key(id, PortPrefix::ANY), by.clone());
                }
            }
            (Some(PortRef::Number(lo)), end) => {
                for block in range_prefixes(*lo, end.unwrap_or(*lo)) {
                    for id in peer_ids(peers) {
                        insert(entries, key(id, block), by.clone());
                    }
                }
            }
            (Some(PortRef::Name(name)), _) => {
                let resolve = |ports: &BTreeMap<String, (u16, Protocol)>| {
                    ports
                        .get(name)
                        .filter(|(_, p)| *p == proto)
                        .map(|(n, _)| *n)
                };
                match dir {
                    // The destination is the subject: one number.
                    Direction::Ingress => {
                        if let Some(n) = resolve(&subject.named_ports) {
                            for id in peer_ids(peers) {
                                insert(entries, key(id, PortPrefix::exact(n)), by.clone());
                            }
                        }
                    }
                    // The destination is the peer: its identity carries its
                    // named ports. Only pods have any, so "any peer" becomes
                    // every pod identity.
                    Direction::Egress => {
                        for (id, ik) in identities {
                            let Subject::Pod { named_ports, .. } = &ik.subject else {
                                continue;
                            };
                            let named = match peers {
                                Peers::Any => true,
                                Peers::Some(set) => set.contains(id),
                            };
                            if let (true, Some(n)) = (named, resolve(named_ports)) {
                                insert(entries, key(*id, PortPrefix::exact(n)), by.clone());
                            }
                        }
                    }
                }
            }
        }
    }
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
/// that cover it, so one LPM hit is enough for attribution. The entries
/// covering a key are at most its 17 shorter port prefixes and the
/// all-protocols key, so this is linear in the entries.
fn fold_covering(entries: &mut BTreeMap<PolicyKey, AllowedBy>) {
    let folded: Vec<(PolicyKey, AllowedBy)> = entries
        .iter()
        .filter_map(|(k, by)| {
            let proto = k.proto?;
            let best = PolicyKey::lookup_chain(k.identity, k.direction, proto, k.port.port)
                .filter(|c| c.covers(k))
                .filter_map(|c| entries.get(&c))
                .min()
                .expect("an entry covers itself");
            (best != by).then(|| (*k, best.clone()))
        })
        .collect();
    entries.extend(folded);
}
