//! Recompiling only what a change can affect: the result is
//! [`compile_all`]'s for the same inputs, with the work of the endpoints
//! the change touches instead of the whole cluster's.
//!
//! An endpoint's entries depend on its own pod (labels, namespace labels,
//! named ports), the policies that select it, and the identities those
//! policies' peers name. So an update recompiles:
//! - every pod that changed (added, removed, any field);
//! - for every policy that changed (added, removed, any field), the pods
//!   its old or its new version selects;
//! - for every identity that appeared or went (a pod's labels, namespace
//!   labels, named ports or address changed), the pods of the policies
//!   with a peer naming it (and of those with an egress named port and any
//!   peer: they read every pod identity).
//!
//! Everything else of [`Compiled`] is cheap and redone or patched: the
//! identity catalogue, the ipcache entries of changed pods, addresses,
//! summaries. What the rules above cannot tell is compiled whole:
//! ClusterNetworkPolicy changes, a changed set of CIDR pieces (an ipBlock
//! added or removed moves pods between CIDR identities), changed nodes or
//! node addresses, and inputs with two pods of one name or one address.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::cluster::{ClusterNetworkPolicy, Effective};
use crate::compile::{
    cidr_pieces, compile_all, node_addresses, piece_of, pod_subject, Compiled, EndpointRef,
    PolicySummary,
};
use crate::entries::{select_peers, Context, Peers};
use crate::identity::{Identity, IdentityAllocator, IdentityKey, Subject};
use crate::model::{Direction, Inventory, NetworkPolicy, PolicyRef, PortRef, Workload};
use crate::peers::PeerIndex;
use crate::PolicyError;

/// How the last update was made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// Why the whole cluster was compiled; `None`: only `recompiled`.
    pub full: Option<&'static str>,
    /// Endpoints whose entries were compiled (every one on a full update).
    pub recompiled: usize,
}

/// The compiled state, kept up to date change by change.
#[derive(Default)]
pub struct Incremental {
    last: Option<Last>,
    compiled: Compiled,
    /// The endpoints whose compiled state the last update may have
    /// changed (recompiled, added or gone); `None` after a whole compile.
    touched: Option<BTreeSet<EndpointRef>>,
}

/// The inputs of the compiled state and what an update derives from them.
struct Last {
    policies: Vec<NetworkPolicy>,
    cluster: Vec<ClusterNetworkPolicy>,
    inventory: Inventory,
    pieces: BTreeSet<IpNet>,
    node_addrs: BTreeMap<String, BTreeSet<IpAddr>>,
    /// [`unambiguous`] of `inventory` and [`unique_names`] of the
    /// policies (the diff keys both by name).
    unambiguous: bool,
    /// Per endpoint: each address with its identity.
    pod_ids: BTreeMap<EndpointRef, Vec<(IpAddr, Identity)>>,
    /// Per endpoint: the policies selecting it (the summaries' rows).
    selected: BTreeMap<EndpointRef, Selection>,
}

#[derive(Debug, Clone, Default)]
struct Selection {
    policies: Vec<(PolicyRef, Direction)>,
    cluster: Vec<(String, Direction)>,
}

fn endpoint_of(w: &Workload) -> EndpointRef {
    EndpointRef {
        namespace: w.namespace.clone(),
        name: w.name.clone(),
    }
}

/// One pod per name and one pod per address (the compiled state keeps one
/// of each; which one the whole compile keeps is an order this does not
/// track).
fn unambiguous(inv: &Inventory) -> bool {
    let mut names = BTreeSet::new();
    let mut addrs = BTreeSet::new();
    inv.workloads.iter().all(|w| {
        names.insert((w.namespace.as_str(), w.name.as_str()))
            && (w.host_network || w.ips.iter().all(|a| addrs.insert(*a)))
    })
}

fn unique_names(policies: &[NetworkPolicy], cluster: &[ClusterNetworkPolicy]) -> bool {
    let mut refs = BTreeSet::new();
    let mut names = BTreeSet::new();
    policies
        .iter()
        .all(|p| refs.insert((p.namespace.as_str(), p.name.as_str())))
        && cluster.iter().all(|c| names.insert(c.name.as_str()))
}

/// Whether `p` selects `w` in some direction (an invalid podSelector
/// selects the whole namespace, as the compiler reads it).
fn selects(p: &NetworkPolicy, w: &Workload) -> bool {
    w.namespace == p.namespace
        && (p.pod_selector.validate().is_err() || p.pod_selector.matches(&w.labels))
}

impl Incremental {
    pub fn new() -> Self {
        Self::default()
    }

    /// The compiled state of the last successful update.
    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// The endpoints whose state the last update may have changed (the
    /// rest are as before it); `None` when it compiled everything. A
    /// consumer plans only these (`weftd`'s reconciler).
    pub fn touched(&self) -> Option<&BTreeSet<EndpointRef>> {
        self.touched.as_ref()
    }

    /// Brings the compiled state to these inputs: recompiles what the
    /// change since the last update can affect, or (with `full`, first,
    /// or when unsure) everything. On an error (only the allocator fails)
    /// the state is unchanged.
    pub fn update(
        &mut self,
        policies: &[NetworkPolicy],
        cluster: &[ClusterNetworkPolicy],
        inventory: &Inventory,
        allocator: &mut dyn IdentityAllocator,
        whole: bool,
    ) -> Result<Update, PolicyError> {
        let valid: Vec<bool> = policies.iter().map(|p| p.validate().is_ok()).collect();
        let pieces = cidr_pieces(policies, &valid, cluster);
        let node_addrs = node_addresses(inventory);
        let clear = unambiguous(inventory) && unique_names(policies, cluster);
        let why = match &self.last {
            _ if whole => Some("asked for"),
            None => Some("first"),
            Some(l) if l.cluster != cluster => Some("a ClusterNetworkPolicy changed"),
            Some(l) if l.pieces != pieces => Some("the CIDR pieces changed"),
            Some(l) if l.node_addrs != node_addrs => Some("nodes or node addresses changed"),
            Some(l) if !l.unambiguous || !clear => {
                Some("two pods or policies share a name, or two pods an address")
            }
            Some(_) => None,
        };
        let recompiled = match why {
            Some(_) => {
                let n = self
                    .compile_whole(policies, cluster, inventory, allocator, pieces, node_addrs)?;
                self.touched = None;
                n
            }
            None => {
                let (n, touched) =
                    self.changed(policies, cluster, inventory, allocator, valid, &pieces)?;
                self.touched = Some(touched);
                n
            }
        };
        if let Some(l) = &mut self.last {
            l.unambiguous = clear;
        }
        Ok(Update {
            full: why,
            recompiled,
        })
    }

    fn compile_whole(
        &mut self,
        policies: &[NetworkPolicy],
        cluster: &[ClusterNetworkPolicy],
        inventory: &Inventory,
        allocator: &mut dyn IdentityAllocator,
        pieces: BTreeSet<IpNet>,
        node_addrs: BTreeMap<String, BTreeSet<IpAddr>>,
    ) -> Result<usize, PolicyError> {
        let compiled = compile_all(policies, cluster, inventory, allocator)?;
        let mut pod_ids = BTreeMap::new();
        for w in inventory.workloads.iter().filter(|w| !w.host_network) {
            let cache = compiled.ipcache.get(&w.node);
            let ids = w
                .ips
                .iter()
                .filter_map(|a| Some((*a, *cache?.get(&IpNet::from(*a))?)))
                .collect();
            pod_ids.insert(endpoint_of(w), ids);
        }
        let mut selected: BTreeMap<EndpointRef, Selection> = BTreeMap::new();
        for (r, s) in &compiled.policies {
            for (dir, eps) in [
                (Direction::Ingress, &s.ingress),
                (Direction::Egress, &s.egress),
            ] {
                for ep in eps {
                    let sel = selected.entry(ep.clone()).or_default();
                    sel.policies.push((r.clone(), dir));
                }
            }
        }
        for (name, s) in &compiled.cluster_policies {
            for (dir, eps) in [
                (Direction::Ingress, &s.ingress),
                (Direction::Egress, &s.egress),
            ] {
                for ep in eps {
                    let sel = selected.entry(ep.clone()).or_default();
                    sel.cluster.push((name.clone(), dir));
                }
            }
        }
        let n = compiled.endpoints.len();
        self.compiled = compiled;
        self.last = Some(Last {
            policies: policies.to_vec(),
            cluster: cluster.to_vec(),
            inventory: inventory.clone(),
            pieces,
            node_addrs,
            unambiguous: false,
            pod_ids,
            selected,
        });
        Ok(n)
    }

    /// The incremental update (the module's doc says what it recompiles).
    fn changed(
        &mut self,
        policies: &[NetworkPolicy],
        cluster: &[ClusterNetworkPolicy],
        inventory: &Inventory,
        allocator: &mut dyn IdentityAllocator,
        valid: Vec<bool>,
        pieces: &BTreeSet<IpNet>,
    ) -> Result<(usize, BTreeSet<EndpointRef>), PolicyError> {
        let last = self
            .last
            .as_mut()
            .expect("an incremental update follows a full one");
        fn key(w: &Workload) -> (&str, &str) {
            (&w.namespace, &w.name)
        }
        let old_w: HashMap<(&str, &str), &Workload> = last
            .inventory
            .workloads
            .iter()
            .map(|w| (key(w), w))
            .collect();
        let new_w: HashMap<(&str, &str), &Workload> =
            inventory.workloads.iter().map(|w| (key(w), w)).collect();
        // endpoints (not hostNetwork) that changed, in either version
        fn pod<'w>(w: Option<&&'w Workload>) -> Option<&'w Workload> {
            w.copied().filter(|w| !w.host_network)
        }
        let mut changed: BTreeMap<EndpointRef, (Option<&Workload>, Option<&Workload>)> =
            BTreeMap::new();
        for k in old_w.keys().chain(new_w.keys()) {
            let (o, n) = (pod(old_w.get(k)), pod(new_w.get(k)));
            if o != n {
                let ep = EndpointRef {
                    namespace: k.0.to_string(),
                    name: k.1.to_string(),
                };
                changed.insert(ep, (o, n));
            }
        }

        // The fallible part first: identities of changed pods.
        let mut new_ids: BTreeMap<EndpointRef, Vec<(IpAddr, Identity)>> = BTreeMap::new();
        let mut fresh: BTreeMap<Identity, IdentityKey> = BTreeMap::new();
        for (ep, (_, n)) in &changed {
            let Some(w) = n else { continue };
            let subject = pod_subject(w);
            let mut ids = Vec::new();
            for a in &w.ips {
                let key = IdentityKey {
                    subject: subject.clone(),
                    cidr: piece_of(pieces, *a),
                };
                let id = allocator.allocate(&key)?;
                fresh.entry(id).or_insert(key);
                ids.push((*a, id));
            }
            new_ids.insert(ep.clone(), ids);
        }

        // Nothing fails from here: the state is patched in place.
        let old_pod_ids = std::mem::take(&mut last.pod_ids);
        let mut pod_ids = old_pod_ids.clone();
        for ep in changed.keys() {
            pod_ids.remove(ep);
        }
        pod_ids.extend(new_ids.clone());
        let in_use: BTreeSet<Identity> = pod_ids.values().flatten().map(|(_, id)| *id).collect();
        let out = &mut self.compiled;
        let mut delta: BTreeMap<Identity, IdentityKey> = BTreeMap::new();
        out.identities.retain(|id, k| {
            let keep = !matches!(k.subject, Subject::Pod { .. }) || in_use.contains(id);
            if !keep {
                delta.insert(*id, k.clone());
            }
            keep
        });
        for (id, k) in fresh {
            if in_use.contains(&id) && !out.identities.contains_key(&id) {
                out.identities.insert(id, k.clone());
                delta.insert(id, k);
            }
        }

        // Which endpoints to recompile.
        let mut by_ns: HashMap<&str, Vec<&Workload>> = HashMap::new();
        for w in inventory.workloads.iter().filter(|w| !w.host_network) {
            by_ns.entry(w.namespace.as_str()).or_default().push(w);
        }
        let mut redo: BTreeSet<EndpointRef> = changed
            .iter()
            .filter(|(_, (_, n))| n.is_some())
            .map(|(ep, _)| ep.clone())
            .collect();
        let take_selected = |p: &NetworkPolicy, redo: &mut BTreeSet<EndpointRef>| {
            for w in by_ns.get(p.namespace.as_str()).into_iter().flatten() {
                if selects(p, w) {
                    redo.insert(endpoint_of(w));
                }
            }
        };
        let old_p: HashMap<(&str, &str), &NetworkPolicy> = last
            .policies
            .iter()
            .map(|p| ((p.namespace.as_str(), p.name.as_str()), p))
            .collect();
        let new_p: HashMap<(&str, &str), &NetworkPolicy> = policies
            .iter()
            .map(|p| ((p.namespace.as_str(), p.name.as_str()), p))
            .collect();
        for r in old_p.keys().chain(new_p.keys()) {
            let (o, n) = (old_p.get(r), new_p.get(r));
            if o != n {
                for p in o.into_iter().chain(n) {
                    take_selected(p, &mut redo);
                }
            }
        }
        if !delta.is_empty() {
            let index = PeerIndex::new(&delta);
            for (p, _) in policies.iter().zip(&valid).filter(|(_, ok)| **ok) {
                if names_any(p, &index) {
                    take_selected(p, &mut redo);
                }
            }
            for c in cluster.iter().filter(|c| cluster_names_any(c, &index)) {
                for ws in by_ns.values() {
                    for w in ws.iter().filter(|w| c.selects(w)) {
                        redo.insert(endpoint_of(w));
                    }
                }
            }
        }

        // The addresses and ipcache entries of changed pods.
        let under = Underneath::new(&out.identities, pieces, &last.node_addrs);
        for (ep, (o, _)) in &changed {
            if o.is_some() {
                for (a, _) in old_pod_ids.get(ep).into_iter().flatten() {
                    if out.addresses.get(a) == Some(ep) {
                        out.addresses.remove(a);
                    }
                    under.restore(*a, &mut out.ipcache);
                }
                out.nodes.remove(ep);
                out.endpoints.remove(ep);
                last.selected.remove(ep);
            }
        }
        for (ep, (_, n)) in &changed {
            let Some(w) = n else { continue };
            for (a, id) in new_ids.get(ep).into_iter().flatten() {
                out.addresses.insert(*a, ep.clone());
                for cache in out.ipcache.values_mut() {
                    cache.insert(IpNet::from(*a), *id);
                }
            }
            out.nodes.insert(ep.clone(), w.node.clone());
        }

        // The endpoints.
        let recompiled = redo.len();
        let mut touched: BTreeSet<EndpointRef> = changed.keys().cloned().collect();
        touched.extend(redo.iter().cloned());
        if !redo.is_empty() {
            let mut ctx = Context::new(policies, cluster, valid, &out.identities);
            let mut done = BTreeMap::new();
            for ep in &redo {
                let w = new_w[&(ep.namespace.as_str(), ep.name.as_str())];
                let (policy, sel) = ctx.endpoint(w);
                let selection = Selection {
                    policies: sel
                        .policies
                        .iter()
                        .map(|(i, d)| (policies[*i].reference(), *d))
                        .collect(),
                    cluster: sel
                        .cluster
                        .iter()
                        .map(|(i, d)| (cluster[*i].name.clone(), *d))
                        .collect(),
                };
                done.insert(ep.clone(), (policy, selection));
            }
            for (ep, (policy, selection)) in done {
                out.endpoints.insert(ep.clone(), policy);
                last.selected.insert(ep, selection);
            }
        }

        // What is redone whole: cheap, and simpler exact than patched.
        out.rejected = policies
            .iter()
            .filter_map(|p| p.validate().err().map(|e| (p.reference(), e.to_string())))
            .collect();
        out.rejected.sort();
        out.policies = policies
            .iter()
            .map(|p| {
                let s = PolicySummary {
                    audit: p.audit,
                    ..PolicySummary::default()
                };
                (p.reference(), s)
            })
            .collect();
        out.cluster_policies = cluster
            .iter()
            .map(|c| (c.name.clone(), PolicySummary::default()))
            .collect();
        // in endpoint order: every list comes out sorted
        for (ep, sel) in &last.selected {
            for (r, dir) in &sel.policies {
                if let Some(s) = out.policies.get_mut(r) {
                    push(s, *dir, ep);
                }
            }
            for (name, dir) in &sel.cluster {
                if let Some(s) = out.cluster_policies.get_mut(name) {
                    push(s, *dir, ep);
                }
            }
        }

        last.pod_ids = pod_ids;
        last.policies = policies.to_vec();
        last.inventory = inventory.clone();
        Ok((recompiled, touched))
    }
}

fn push(s: &mut PolicySummary, dir: Direction, ep: &EndpointRef) {
    match dir {
        Direction::Ingress => s.ingress.push(ep.clone()),
        Direction::Egress => s.egress.push(ep.clone()),
    }
}

/// Whether a rule of `p` names an identity of `index` (or reads every pod
/// identity: an egress named port towards any peer).
fn names_any(p: &NetworkPolicy, index: &PeerIndex) -> bool {
    [Direction::Ingress, Direction::Egress]
        .into_iter()
        .any(|dir| {
            p.rules(dir)
                .iter()
                .any(|rule| match select_peers(p, rule, index) {
                    Peers::Some(ids) => !ids.is_empty(),
                    Peers::Any => {
                        dir == Direction::Egress
                            && rule
                                .ports
                                .iter()
                                .flatten()
                                .any(|port| matches!(port.port, Some(PortRef::Name(_))))
                    }
                })
        })
}

fn cluster_names_any(c: &ClusterNetworkPolicy, index: &PeerIndex) -> bool {
    [Direction::Ingress, Direction::Egress]
        .into_iter()
        .any(|dir| {
            (0..c.rules(dir).len()).any(|i| match c.effective(dir, i) {
                Effective::Rule(rule) => {
                    let mut ids = BTreeSet::new();
                    for p in &rule.peers {
                        index.cluster_peer(p, &mut ids);
                    }
                    !ids.is_empty()
                }
                Effective::DenyAll | Effective::Nothing => false,
            })
        })
}

/// What a node's ipcache holds at a pod address once the pod is gone:
/// what the whole compile puts under pods (a node address, else a /32
/// CIDR piece, else nothing).
struct Underneath<'a> {
    by_key: HashMap<&'a IdentityKey, Identity>,
    pieces: &'a BTreeSet<IpNet>,
    node_addrs: &'a BTreeMap<String, BTreeSet<IpAddr>>,
}

impl<'a> Underneath<'a> {
    fn new(
        identities: &'a BTreeMap<Identity, IdentityKey>,
        pieces: &'a BTreeSet<IpNet>,
        node_addrs: &'a BTreeMap<String, BTreeSet<IpAddr>>,
    ) -> Self {
        Underneath {
            by_key: identities
                .iter()
                .filter(|(_, k)| !matches!(k.subject, Subject::Pod { .. }))
                .map(|(id, k)| (k, *id))
                .collect(),
            pieces,
            node_addrs,
        }
    }

    /// Puts back, in every node's cache, what is under pod address `a`.
    fn restore(&self, a: IpAddr, caches: &mut BTreeMap<String, BTreeMap<IpNet, Identity>>) {
        let net = IpNet::from(a);
        // the whole compile writes node addresses in node order: the last
        // node holding the address wins
        let owner = self
            .node_addrs
            .iter()
            .filter(|(_, addrs)| addrs.contains(&a))
            .map(|(n, _)| n)
            .next_back();
        let id = |subject| {
            let key = IdentityKey {
                subject,
                cidr: piece_of(self.pieces, a),
            };
            self.by_key.get(&key).copied()
        };
        let (own, other, piece) = match owner {
            Some(_) => (id(Subject::Host), id(Subject::RemoteNode), None),
            None if self.pieces.contains(&net) => (None, None, id(Subject::World)),
            None => (None, None, None),
        };
        for (node, cache) in caches.iter_mut() {
            let under = match owner {
                Some(n) if n == node => own,
                Some(_) => other,
                None => piece,
            };
            match under {
                Some(id) => cache.insert(net, id),
                None => cache.remove(&net),
            };
        }
    }
}
