//! Which identities a rule's peers name, found through an index built once
//! per compilation instead of by testing every identity against every rule
//! (that made compiling N ipBlock policies cost N x N: 10 s at 10k in a
//! release build).
//!
//! - ipBlocks and networks: identities by their CIDR piece, in address
//!   order, so the pieces inside a cidr are one range of the map (pieces
//!   are normalized: a piece inside the cidr has its network address in
//!   the cidr's range and a prefix at least as long).
//! - pod selectors: pod identities by namespace, then by namespace labels,
//!   so a namespace selector is matched once per namespace and a peer of
//!   the policy's own namespace reads only that namespace's pods.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::cluster::ClusterPeer;
use crate::identity::{Identity, IdentityKey, Subject};
use crate::model::{NetworkPolicy, Peer};
use crate::selector::{LabelSelector, Labels};

type Members<'a> = Vec<(Identity, &'a Labels)>;

/// The identities in use, indexed for peer selection.
pub(crate) struct PeerIndex<'a> {
    by_piece: BTreeMap<IpNet, Vec<Identity>>,
    /// namespace -> namespace labels -> (identity, pod labels).
    pods: BTreeMap<&'a str, BTreeMap<&'a Labels, Members<'a>>>,
    /// [`Subject::Host`] identities (the node exemption's peers).
    pub(crate) hosts: Vec<Identity>,
    /// Host and remote-node identities.
    nodes: Vec<Identity>,
}

impl<'a> PeerIndex<'a> {
    pub(crate) fn new(identities: &'a BTreeMap<Identity, IdentityKey>) -> Self {
        let mut index = PeerIndex {
            by_piece: BTreeMap::new(),
            pods: BTreeMap::new(),
            hosts: Vec::new(),
            nodes: Vec::new(),
        };
        for (id, key) in identities {
            if let Some(piece) = key.cidr {
                index.by_piece.entry(piece).or_default().push(*id);
            }
            match &key.subject {
                Subject::Pod {
                    namespace,
                    labels,
                    namespace_labels,
                    ..
                } => index
                    .pods
                    .entry(namespace.as_str())
                    .or_default()
                    .entry(namespace_labels)
                    .or_default()
                    .push((*id, labels)),
                Subject::Host => {
                    index.hosts.push(*id);
                    index.nodes.push(*id);
                }
                Subject::RemoteNode => index.nodes.push(*id),
                Subject::World => {}
            }
        }
        index
    }

    /// The identities a NetworkPolicy peer of `policy` names.
    pub(crate) fn network_peer(
        &self,
        policy: &NetworkPolicy,
        peer: &Peer,
        out: &mut BTreeSet<Identity>,
    ) {
        if let Some(block) = &peer.ip_block {
            self.pieces(&[block.cidr], &block.except, out);
            return;
        }
        let namespaces = match &peer.namespace_selector {
            None => NamespaceFilter::Named(&policy.namespace),
            Some(sel) => NamespaceFilter::Selector(sel),
        };
        self.pods_where(namespaces, peer.pod_selector.as_ref(), out);
    }

    /// The identities a ClusterNetworkPolicy peer names.
    pub(crate) fn cluster_peer(&self, peer: &ClusterPeer, out: &mut BTreeSet<Identity>) {
        match peer {
            ClusterPeer::Namespaces(s) => self.pods_where(NamespaceFilter::Selector(s), None, out),
            ClusterPeer::Pods(p) => self.pods_where(
                NamespaceFilter::Selector(&p.namespace_selector),
                Some(&p.pod_selector),
                out,
            ),
            ClusterPeer::Nodes(s) if s.is_empty() => out.extend(&self.nodes),
            ClusterPeer::Nodes(_) => {}
            ClusterPeer::Networks(nets) => self.pieces(nets, &[], out),
            ClusterPeer::Unsupported(_) => {}
        }
    }

    /// Identities whose piece lies inside one of `nets` and none of
    /// `except`.
    fn pieces(&self, nets: &[IpNet], except: &[IpNet], out: &mut BTreeSet<Identity>) {
        for net in nets {
            let (lo, hi) = match net {
                IpNet::V4(n) => (
                    IpNet::new(IpAddr::V4(n.network()), 0),
                    IpNet::new(IpAddr::V4(n.broadcast()), 32),
                ),
                IpNet::V6(n) => (
                    IpNet::new(IpAddr::V6(n.network()), 0),
                    IpNet::new(IpAddr::V6(n.broadcast()), 128),
                ),
            };
            let (Ok(lo), Ok(hi)) = (lo, hi) else { continue };
            for (piece, ids) in self.by_piece.range(lo..=hi) {
                work::tick(1);
                if net.contains(piece) && !except.iter().any(|e| e.contains(piece)) {
                    out.extend(ids);
                }
            }
        }
    }

    fn pods_where(
        &self,
        namespaces: NamespaceFilter,
        pods: Option<&LabelSelector>,
        out: &mut BTreeSet<Identity>,
    ) {
        let mut take = |groups: &BTreeMap<&Labels, Members>, selector: Option<&LabelSelector>| {
            for (ns_labels, members) in groups {
                work::tick(1);
                if selector.is_some_and(|s| !s.matches(ns_labels)) {
                    continue;
                }
                work::tick(members.len());
                out.extend(
                    members
                        .iter()
                        .filter(|(_, l)| pods.is_none_or(|s| s.matches(l)))
                        .map(|(id, _)| *id),
                );
            }
        };
        match namespaces {
            NamespaceFilter::Named(ns) => {
                if let Some(groups) = self.pods.get(ns) {
                    take(groups, None);
                }
            }
            NamespaceFilter::Selector(sel) => {
                for groups in self.pods.values() {
                    take(groups, Some(sel));
                }
            }
        }
    }
}

enum NamespaceFilter<'s> {
    Named(&'s str),
    Selector(&'s LabelSelector),
}

/// Counts the candidates the compiler examines, so a unit test can guard
/// the growth of compile work without timing anything.
#[cfg(test)]
pub(crate) mod work {
    use std::cell::Cell;

    thread_local!(static WORK: Cell<u64> = const { Cell::new(0) });

    pub(crate) fn tick(n: usize) {
        WORK.with(|w| w.set(w.get() + n as u64));
    }

    pub(crate) fn take() -> u64 {
        WORK.with(|w| w.replace(0))
    }
}

#[cfg(not(test))]
pub(crate) mod work {
    #[inline(always)]
    pub(crate) fn tick(_: usize) {}
}
