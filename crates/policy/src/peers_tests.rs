//! The peer index against a plain scan of every identity, and the guard
//! that compile work grows linearly (work counted, not timed).

#[path = "../tests/scale_gen/mod.rs"]
mod scale_gen;

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::{ClusterPeer, NamespacedPod};
use crate::identity::{Identity, IdentityKey, Subject};
use crate::model::{NetworkPolicy, Peer};
use crate::peers::{work, PeerIndex};
use crate::selector::LabelSelector;
use crate::{compile, Direction, Inventory, MemoryAllocator};

/// The definition the index must agree with: does `peer` of `policy` name
/// the addresses of `key`?
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

fn catalogue(policies: &[NetworkPolicy], inv: &Inventory) -> BTreeMap<Identity, IdentityKey> {
    compile(policies, inv, &mut MemoryAllocator::new())
        .unwrap()
        .identities
}

#[test]
fn the_index_selects_what_a_scan_of_every_identity_selects() {
    let (mut policies, inv) = scale_gen::cluster(120, 400);
    policies.extend(scale_gen::decoys(30).0);
    // peers of every shape: no selectors, both, an ipBlock around pods
    let everyone = Peer {
        namespace_selector: Some(LabelSelector::default()),
        ..Default::default()
    };
    let own_namespace = Peer::default();
    let pods_net = Peer {
        ip_block: Some(crate::IpBlock {
            cidr: "10.244.0.0/16".parse().unwrap(),
            except: vec!["10.244.1.0/24".parse().unwrap()],
        }),
        ..Default::default()
    };
    let ids = catalogue(&policies, &inv);
    let index = PeerIndex::new(&ids);
    let mut checked = 0;
    for policy in &policies {
        for rule in policy.rules(Direction::Ingress) {
            let peers = rule.peers.iter().flatten();
            for peer in peers.chain([&everyone, &own_namespace, &pods_net]) {
                let mut got = BTreeSet::new();
                index.network_peer(policy, peer, &mut got);
                let want: BTreeSet<Identity> = ids
                    .iter()
                    .filter(|(_, k)| peer_selects(policy, peer, k))
                    .map(|(id, _)| *id)
                    .collect();
                assert_eq!(
                    got, want,
                    "{}/{} peer {peer:?}",
                    policy.namespace, policy.name
                );
                checked += usize::from(!want.is_empty());
            }
        }
    }
    assert!(checked > 300, "too few peers selected anything: {checked}");
    let cluster_peers = [
        ClusterPeer::Namespaces(LabelSelector::labels([("team", "t-ns3")])),
        ClusterPeer::Pods(NamespacedPod {
            namespace_selector: LabelSelector::default(),
            pod_selector: LabelSelector::labels([("app", "a7")]),
        }),
        ClusterPeer::Nodes(LabelSelector::default()),
        ClusterPeer::Networks(vec!["100.64.0.0/27".parse().unwrap()]),
        ClusterPeer::Unsupported("domainNames".into()),
    ];
    for peer in &cluster_peers {
        let mut got = BTreeSet::new();
        index.cluster_peer(peer, &mut got);
        let want: BTreeSet<Identity> = ids
            .iter()
            .filter(|(_, k)| peer.selects_identity(k))
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(got, want, "{peer:?}");
    }
}

fn work_of((policies, inv): (Vec<NetworkPolicy>, Inventory)) -> u64 {
    work::take();
    compile(&policies, &inv, &mut MemoryAllocator::new()).unwrap();
    work::take()
}

/// Ten times the policies (or pods) must cost at most about ten times the
/// work: the quadratic scan this replaced gave 100x.
#[test]
fn compile_work_grows_linearly_with_policies_and_pods() {
    let cases = [
        (
            "ipBlock policies",
            work_of(scale_gen::decoys(300)),
            work_of(scale_gen::decoys(3000)),
        ),
        (
            "selector policies",
            work_of(scale_gen::cluster(200, 200)),
            work_of(scale_gen::cluster(2000, 200)),
        ),
        (
            "pods",
            work_of(scale_gen::cluster(200, 200)),
            work_of(scale_gen::cluster(200, 2000)),
        ),
    ];
    for (what, small, large) in cases {
        assert!(small > 0, "{what}: no work counted");
        let ratio = large as f64 / small as f64;
        assert!(
            ratio < 13.0,
            "{what}: 10x the input took {ratio:.1}x the work ({small} -> {large})"
        );
    }
}
