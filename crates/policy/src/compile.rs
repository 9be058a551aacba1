//! NetworkPolicies + pods + nodes -> identities, per-node ipcaches and
//! per-endpoint policy map entries (the entries themselves: entries.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::cluster::{ClusterNetworkPolicy, ClusterPeer};
use crate::entries::Context;
use crate::identity::{Identity, IdentityAllocator, IdentityKey, Subject};
use crate::mapkey::PolicyKey;
use crate::model::{Direction, Inventory, NetworkPolicy, PolicyRef, Workload};
use crate::verdict::AllowedBy;
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
    #[serde(with = "pairs")]
    pub entries: BTreeMap<PolicyKey, AllowedBy>,
    /// Compiled from audited policies only: would-be drops pass and are
    /// reported as AUDIT (see [`crate::audit`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub audit: bool,
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
    #[serde(with = "pairs")]
    pub nodes: BTreeMap<EndpointRef, String>,
    #[serde(with = "pairs")]
    pub endpoints: BTreeMap<EndpointRef, EndpointPolicy>,
    /// Policies compiled fail-closed (they isolate, open nothing), and why.
    pub rejected: Vec<(PolicyRef, String)>,
    /// Every policy with the endpoints it isolates (`weft policy list`).
    #[serde(with = "pairs")]
    pub policies: BTreeMap<PolicyRef, PolicySummary>,
    /// Every ClusterNetworkPolicy by name with the endpoints it applies to
    /// in each direction it has rules for (Baseline ones only where no
    /// NetworkPolicy isolates).
    #[serde(default)]
    pub cluster_policies: BTreeMap<String, PolicySummary>,
    /// ClusterNetworkPolicy faults (each part fails closed: an Accept rule
    /// matches nothing, a Deny or Pass rule denies everything), and why.
    #[serde(default)]
    pub rejected_cluster: Vec<(String, String)>,
}

/// Maps whose keys are structs travel as lists of pairs: JSON object keys
/// must be strings (`weft policy show -o json`, an agent's saved state).
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        m: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

/// The endpoints a policy selects, per direction it isolates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySummary {
    pub ingress: Vec<EndpointRef>,
    pub egress: Vec<EndpointRef>,
    /// In audit (NetworkPolicies only): the endpoints above are those it
    /// audits.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub audit: bool,
}

impl PolicySummary {
    fn push(&mut self, dir: Direction, ep: &EndpointRef) {
        match dir {
            Direction::Ingress => self.ingress.push(ep.clone()),
            Direction::Egress => self.egress.push(ep.clone()),
        }
    }
}

/// Compiles the whole cluster's NetworkPolicies. Only the allocator can
/// fail.
pub fn compile(
    policies: &[NetworkPolicy],
    inventory: &Inventory,
    allocator: &mut dyn IdentityAllocator,
) -> Result<Compiled, PolicyError> {
    compile_all(policies, &[], inventory, allocator)
}

/// Compiles NetworkPolicies and ClusterNetworkPolicies (the Admin and
/// Baseline tiers) into one set of maps.
pub fn compile_all(
    policies: &[NetworkPolicy],
    cluster: &[ClusterNetworkPolicy],
    inventory: &Inventory,
    allocator: &mut dyn IdentityAllocator,
) -> Result<Compiled, PolicyError> {
    let mut out = Compiled::default();
    for c in cluster {
        for fault in c.faults() {
            out.rejected_cluster.push((c.name.clone(), fault));
        }
    }
    out.rejected_cluster.sort();
    let valid: Vec<bool> = policies
        .iter()
        .map(|p| match p.validate() {
            Ok(()) => true,
            Err(e) => {
                out.rejected.push((p.reference(), e.to_string()));
                false
            }
        })
        .collect();
    out.rejected.sort();
    let pieces = cidr_pieces(policies, &valid, cluster);

    // Reserved identities are always in the catalogue: the node exemption
    // needs HOST even on a node whose addresses are not known yet.
    for subject in [Subject::Host, Subject::World, Subject::RemoteNode] {
        let key = IdentityKey {
            subject,
            cidr: None,
        };
        out.identities.insert(allocator.allocate(&key)?, key);
    }
    // Identities that do not depend on the node looking: pieces and pods.
    let mut shared = BTreeMap::new();
    for piece in &pieces {
        let key = IdentityKey {
            subject: Subject::World,
            cidr: Some(*piece),
        };
        shared.insert(*piece, intern(&mut out, allocator, key)?);
    }
    for w in inventory.workloads.iter().filter(|w| !w.host_network) {
        let subject = pod_subject(w);
        for a in &w.ips {
            let key = IdentityKey {
                subject: subject.clone(),
                cidr: piece_of(&pieces, *a),
            };
            shared.insert(IpNet::from(*a), intern(&mut out, allocator, key)?);
        }
    }
    // Node addresses are "host" to their own node, "remote node" to others.
    let node_addrs = node_addresses(inventory);
    let mut as_seen: BTreeMap<(bool, IpAddr), Identity> = BTreeMap::new();
    for addrs in node_addrs.values() {
        for a in addrs {
            for own in [true, false] {
                let subject = if own {
                    Subject::Host
                } else {
                    Subject::RemoteNode
                };
                let key = IdentityKey {
                    subject,
                    cidr: piece_of(&pieces, *a),
                };
                as_seen.insert((own, *a), intern(&mut out, allocator, key)?);
            }
        }
    }
    for node in node_addrs.keys() {
        // Pieces, then node addresses, then pods: whoever owns an address
        // overrides a /32 piece, and a pod wins over a node as in
        // `Inventory::resolve`.
        let mut cache: BTreeMap<IpNet, Identity> = pieces.iter().map(|p| (*p, shared[p])).collect();
        for (other, addrs) in &node_addrs {
            for a in addrs {
                cache.insert(IpNet::from(*a), as_seen[&(other == node, *a)]);
            }
        }
        for w in inventory.workloads.iter().filter(|w| !w.host_network) {
            for a in &w.ips {
                let net = IpNet::from(*a);
                cache.insert(net, shared[&net]);
            }
        }
        out.ipcache.insert(node.clone(), cache);
    }

    let mut ctx = Context::new(policies, cluster, valid, &out.identities);
    let mut endpoints = BTreeMap::new();
    for w in inventory.workloads.iter().filter(|w| !w.host_network) {
        let ep = EndpointRef {
            namespace: w.namespace.clone(),
            name: w.name.clone(),
        };
        for a in &w.ips {
            out.addresses.insert(*a, ep.clone());
        }
        out.nodes.insert(ep.clone(), w.node.clone());
        let (policy, selected) = ctx.endpoint(w);
        for (i, dir) in selected.policies {
            let summary = out.policies.entry(policies[i].reference()).or_default();
            summary.push(dir, &ep);
        }
        for (i, dir) in selected.cluster {
            let summary = out
                .cluster_policies
                .entry(cluster[i].name.clone())
                .or_default();
            summary.push(dir, &ep);
        }
        endpoints.insert(ep, policy);
    }
    for p in policies {
        out.policies.entry(p.reference()).or_default().audit = p.audit;
    }
    for c in cluster {
        out.cluster_policies.entry(c.name.clone()).or_default();
    }
    for s in out
        .policies
        .values_mut()
        .chain(out.cluster_policies.values_mut())
    {
        s.ingress.sort();
        s.egress.sort();
    }
    out.endpoints = endpoints;
    Ok(out)
}

/// The map entries of one endpoint, given every identity in use (the
/// catalogue a [`Compiled`] holds). For recompiling one pod after its
/// labels or the policies of its namespace changed.
pub fn compile_endpoint(
    policies: &[NetworkPolicy],
    identities: &BTreeMap<Identity, IdentityKey>,
    subject: &Workload,
) -> EndpointPolicy {
    compile_endpoint_all(policies, &[], identities, subject)
}

/// [`compile_endpoint`] with ClusterNetworkPolicies.
pub fn compile_endpoint_all(
    policies: &[NetworkPolicy],
    cluster: &[ClusterNetworkPolicy],
    identities: &BTreeMap<Identity, IdentityKey>,
    subject: &Workload,
) -> EndpointPolicy {
    let valid = policies.iter().map(|p| p.validate().is_ok()).collect();
    Context::new(policies, cluster, valid, identities)
        .endpoint(subject)
        .0
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
pub(crate) fn node_addresses(inv: &Inventory) -> BTreeMap<String, BTreeSet<IpAddr>> {
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

/// Every prefix any valid ipBlock names (cidr or except), and every
/// ClusterNetworkPolicy network, normalized. An address's piece is the
/// longest of them containing it; an ipBlock then holds exactly the pieces
/// inside its cidr and inside none of its excepts, a network those inside
/// it.
pub(crate) fn cidr_pieces(
    policies: &[NetworkPolicy],
    valid: &[bool],
    cluster: &[ClusterNetworkPolicy],
) -> BTreeSet<IpNet> {
    let mut out = BTreeSet::new();
    for c in cluster {
        for rule in c.ingress.iter().chain(&c.egress) {
            for peer in &rule.peers {
                if let ClusterPeer::Networks(nets) = peer {
                    out.extend(nets.iter().map(|n| n.trunc()));
                }
            }
        }
    }
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

/// The longest piece containing `addr`: one lookup per prefix length,
/// longest first (scanning every piece made N pods x N pieces).
pub(crate) fn piece_of(pieces: &BTreeSet<IpNet>, addr: IpAddr) -> Option<IpNet> {
    let longest = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    (0..=longest).rev().find_map(|len| {
        crate::peers::work::tick(1);
        let net = IpNet::new(addr, len).ok()?.trunc();
        pieces.contains(&net).then_some(net)
    })
}
