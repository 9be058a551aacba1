//! One endpoint's policy map entries.
//!
//! Every rule that applies to the endpoint gives raw keys with its reason:
//! Admin and Baseline ClusterNetworkPolicy rules (Accept, Deny, Pass), the
//! allows of the NetworkPolicies isolating it, the node exemption.
//! `flatten.rs` then gives each key the one decision of the tier stack for
//! the traffic it is the longest match of, so the single hit the program
//! gets already carries the action and names the same rule as the
//! evaluator.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::audit;
use crate::cluster::{ClusterAction, ClusterNetworkPolicy, ClusterPort, Effective, Tier};
use crate::compile::EndpointPolicy;
use crate::flatten::{flatten, Raw};
use crate::identity::{Identity, IdentityKey, Subject};
use crate::mapkey::PolicyKey;
use crate::model::{Direction, NetworkPolicy, PortRef, Protocol, Rule, Workload};
use crate::peers::PeerIndex;
use crate::ports::{range_prefixes, PortPrefix};
use crate::verdict::{AllowedBy, ClusterRuleRef, RuleRef};

/// Which peers a rule names.
pub(crate) enum Peers {
    Any,
    Some(BTreeSet<Identity>),
}

/// What a rule matches besides the peer, in map terms.
enum PortSpec {
    /// Every protocol and port.
    All,
    /// Every port of one protocol.
    Proto(u8),
    /// A block of ports of one protocol.
    Block(u8, PortPrefix),
    /// A container port name on the destination; `None`: the protocol the
    /// container port has.
    Named(String, Option<Protocol>),
}

/// Which policy a cached peer set belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Owner {
    Net(usize),
    Cluster(usize),
}

/// What every endpoint's compilation shares: the policies by namespace and
/// the identities each rule's peers select (computed once per rule, the
/// way Cilium's selector cache serves every endpoint).
pub(crate) struct Context<'a> {
    policies: &'a [NetworkPolicy],
    cluster: &'a [ClusterNetworkPolicy],
    valid: Vec<bool>,
    /// Whether each policy's podSelector is valid (checked once).
    selector_ok: Vec<bool>,
    by_namespace: HashMap<&'a str, Vec<usize>>,
    identities: &'a BTreeMap<Identity, IdentityKey>,
    index: PeerIndex<'a>,
    peers: HashMap<(Owner, Direction, usize), Peers>,
}

/// Which policies select one endpoint, per direction.
#[derive(Default)]
pub(crate) struct Selected {
    pub(crate) policies: Vec<(usize, Direction)>,
    pub(crate) cluster: Vec<(usize, Direction)>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        policies: &'a [NetworkPolicy],
        cluster: &'a [ClusterNetworkPolicy],
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
            cluster,
            valid,
            selector_ok: policies
                .iter()
                .map(|p| p.pod_selector.validate().is_ok())
                .collect(),
            by_namespace,
            identities,
            index: PeerIndex::new(identities),
            peers: HashMap::new(),
        }
    }

    /// The entries and isolation of one pod, and which policies select it
    /// in which direction.
    pub(crate) fn endpoint(&mut self, subject: &Workload) -> (EndpointPolicy, Selected) {
        let mut out = EndpointPolicy::default();
        let mut selected = Selected::default();
        if subject.host_network {
            return (out, selected);
        }
        let mut raw = Raw::new();
        // The namespace's policies that select the subject in some
        // direction, each selector matched once. An invalid podSelector
        // selects the whole namespace: such a policy can only close (see
        // evaluate.rs).
        let selecting_any: Vec<usize> = self
            .by_namespace
            .get(subject.namespace.as_str())
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| {
                let p = &self.policies[i];
                [Direction::Ingress, Direction::Egress]
                    .into_iter()
                    .any(|d| p.affects(d))
                    && (!self.selector_ok[i] || p.pod_selector.matches(&subject.labels))
            })
            .collect();
        let cluster: Vec<usize> = (0..self.cluster.len())
            .filter(|&i| self.cluster[i].selects(subject))
            .collect();
        // Audit is per endpoint (one flag in the programs): see audit.rs.
        let selecting_any = {
            let enforced = selecting_any.iter().any(|&i| !self.policies[i].audit)
                || cluster
                    .iter()
                    .any(|&c| audit::cluster_applies(&self.cluster[c]));
            if !enforced {
                out.audit = selecting_any.iter().any(|&i| self.policies[i].audit);
            }
            audit::effective(selecting_any, enforced, |i| self.policies[i].audit)
        };
        for dir in [Direction::Ingress, Direction::Egress] {
            let selecting: Vec<usize> = selecting_any
                .iter()
                .copied()
                .filter(|&i| self.policies[i].affects(dir))
                .collect();
            let isolated_by = selecting
                .iter()
                .map(|&i| self.policies[i].reference())
                .min();
            for &c in &cluster {
                let policy = &self.cluster[c];
                if policy.rules(dir).is_empty()
                    || (policy.tier == Tier::Baseline && isolated_by.is_some())
                {
                    // No rule in this direction, or a Baseline rule under a
                    // NetworkPolicy that decides everything.
                    continue;
                }
                selected.cluster.push((c, dir));
                self.cluster_entries(&mut raw, c, dir, subject);
            }
            let Some(first) = isolated_by else { continue };
            match dir {
                Direction::Ingress => out.ingress_isolated_by = Some(first),
                Direction::Egress => out.egress_isolated_by = Some(first),
            }
            if dir == Direction::Ingress {
                for id in &self.index.hosts {
                    add(
                        &mut raw,
                        PolicyKey::all_protocols(*id, dir),
                        AllowedBy::LocalNode,
                    );
                }
            }
            selected
                .policies
                .extend(selecting.iter().map(|&i| (i, dir)));
            let policies = self.policies;
            for i in selecting.into_iter().filter(|&i| self.valid[i]) {
                let policy = &policies[i];
                for (index, rule) in policy.rules(dir).iter().enumerate() {
                    let by = AllowedBy::Rule(RuleRef {
                        policy: policy.reference(),
                        direction: dir,
                        index,
                    });
                    let identities = self.identities;
                    let peer_index = &self.index;
                    let peers = self
                        .peers
                        .entry((Owner::Net(i), dir, index))
                        .or_insert_with(|| select_peers(policy, rule, peer_index));
                    let specs = np_ports(rule);
                    emit(&mut raw, dir, peers, &specs, identities, subject, &by);
                }
            }
        }
        out.entries = flatten(&raw, |d| out.isolated_by(d).cloned());
        (out, selected)
    }

    fn cluster_entries(&mut self, raw: &mut Raw, c: usize, dir: Direction, subject: &Workload) {
        let cluster = self.cluster;
        let policy = &cluster[c];
        let identities = self.identities;
        for index in 0..policy.rules(dir).len() {
            let reason = |action| {
                AllowedBy::Cluster(ClusterRuleRef {
                    tier: policy.tier,
                    priority: policy.priority,
                    name: policy.name.clone(),
                    direction: dir,
                    index,
                    action,
                })
            };
            match policy.effective(dir, index) {
                Effective::Nothing => {}
                Effective::DenyAll => emit(
                    raw,
                    dir,
                    &Peers::Any,
                    &[PortSpec::All],
                    identities,
                    subject,
                    &reason(ClusterAction::Deny),
                ),
                Effective::Rule(rule) => {
                    let peer_index = &self.index;
                    let peers = self
                        .peers
                        .entry((Owner::Cluster(c), dir, index))
                        .or_insert_with(|| {
                            let mut ids = BTreeSet::new();
                            for p in &rule.peers {
                                peer_index.cluster_peer(p, &mut ids);
                            }
                            Peers::Some(ids)
                        });
                    let specs = cluster_ports(&rule.protocols);
                    let by = reason(rule.action);
                    emit(raw, dir, peers, &specs, identities, subject, &by);
                }
            }
        }
    }
}

fn np_ports(rule: &Rule) -> Vec<PortSpec> {
    let ports = rule.ports.as_deref().unwrap_or(&[]);
    if ports.is_empty() {
        return vec![PortSpec::All];
    }
    let mut out = Vec::new();
    for port in ports {
        let proto = port.protocol();
        match (&port.port, port.end_port) {
            (None, _) => out.push(PortSpec::Proto(proto.number())),
            (Some(PortRef::Number(lo)), end) => out.extend(
                range_prefixes(*lo, end.unwrap_or(*lo))
                    .into_iter()
                    .map(|b| PortSpec::Block(proto.number(), b)),
            ),
            (Some(PortRef::Name(name)), _) => out.push(PortSpec::Named(name.clone(), Some(proto))),
        }
    }
    out
}

fn cluster_ports(ports: &[ClusterPort]) -> Vec<PortSpec> {
    if ports.is_empty() {
        return vec![PortSpec::All];
    }
    let mut out = Vec::new();
    for port in ports {
        match port {
            ClusterPort::Number { protocol, port } => {
                out.push(PortSpec::Block(protocol.number(), PortPrefix::exact(*port)))
            }
            ClusterPort::Range {
                protocol,
                start,
                end,
            } => out.extend(
                range_prefixes(*start, *end)
                    .into_iter()
                    .map(|b| PortSpec::Block(protocol.number(), b)),
            ),
            ClusterPort::Named(name) => out.push(PortSpec::Named(name.clone(), None)),
            // Such a rule is never read as written (it fails closed).
            ClusterPort::Unsupported(_) => {}
        }
    }
    out
}

pub(crate) fn select_peers(policy: &NetworkPolicy, rule: &Rule, index: &PeerIndex) -> Peers {
    match rule.peers.as_deref() {
        None | Some([]) => Peers::Any,
        Some(list) => {
            let mut ids = BTreeSet::new();
            for peer in list {
                index.network_peer(policy, peer, &mut ids);
            }
            Peers::Some(ids)
        }
    }
}

/// The raw keys one rule gives one endpoint.
fn emit(
    raw: &mut Raw,
    dir: Direction,
    peers: &Peers,
    specs: &[PortSpec],
    identities: &BTreeMap<Identity, IdentityKey>,
    subject: &Workload,
    by: &AllowedBy,
) {
    let key = |identity, proto, port| PolicyKey {
        identity,
        direction: dir,
        proto: Some(proto),
        port,
    };
    for spec in specs {
        match spec {
            PortSpec::All => {
                for id in peer_ids(peers) {
                    add(raw, PolicyKey::all_protocols(id, dir), by.clone());
                }
            }
            PortSpec::Proto(p) => {
                for id in peer_ids(peers) {
                    add(raw, key(id, *p, PortPrefix::ANY), by.clone());
                }
            }
            PortSpec::Block(p, block) => {
                for id in peer_ids(peers) {
                    add(raw, key(id, *p, *block), by.clone());
                }
            }
            PortSpec::Named(name, proto) => {
                let resolve = |ports: &BTreeMap<String, (u16, Protocol)>| {
                    ports
                        .get(name)
                        .filter(|(_, p)| proto.is_none_or(|want| *p == want))
                        .copied()
                };
                match dir {
                    // The destination is the subject: one number.
                    Direction::Ingress => {
                        if let Some((n, p)) = resolve(&subject.named_ports) {
                            for id in peer_ids(peers) {
                                add(raw, key(id, p.number(), PortPrefix::exact(n)), by.clone());
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
                            if let (true, Some((n, p))) = (named, resolve(named_ports)) {
                                add(raw, key(*id, p.number(), PortPrefix::exact(n)), by.clone());
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

fn add(raw: &mut Raw, key: PolicyKey, by: AllowedBy) {
    raw.entry(key).or_default().insert(by);
}
