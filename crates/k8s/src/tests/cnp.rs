//! The ClusterNetworkPolicy watch: objects decoded guarded and read fail
//! closed into the policy crate's type, and a cluster without the CRD seen
//! as one with none.

use kube::core::Status;
use kube::runtime::watcher::{self, Event};
use weft_policy::{ClusterAction, ClusterPeer, ClusterSubject, Tier};

use crate::cnp::{absent_is_empty, ClusterNetworkPolicyObject};
use crate::guarded::Guarded;
use crate::index::Index;
use crate::model::Kind;
use crate::watch::drive;

type Ev = Result<Event<Guarded<ClusterNetworkPolicyObject>>, watcher::Error>;

const INGRESS_TCP: &str = r#"{
  "apiVersion": "policy.networking.k8s.io/v1alpha2",
  "kind": "ClusterNetworkPolicy",
  "metadata": {"name": "ingress-tcp", "resourceVersion": "7"},
  "spec": {
    "tier": "Admin",
    "priority": 3,
    "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "gryffindor"}}},
    "ingress": [
      {"name": "allow-from-ravenclaw", "action": "Accept",
       "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "ravenclaw"}}}]},
      {"name": "deny-from-slytherin-at-80", "action": "Deny",
       "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "slytherin"}}}],
       "protocols": [{"tcp": {"destinationPort": {"number": 80}}}]},
      {"name": "a-newer-peer", "action": "Pass", "from": [{"somethingNew": {}}]}
    ]
  },
  "status": {"conditions": []}
}"#;

fn object(json: &str) -> Guarded<ClusterNetworkPolicyObject> {
    serde_json::from_str(json).unwrap()
}

fn not_found() -> watcher::Error {
    watcher::Error::InitialListFailed(kube::Error::Api(
        Status::failure(
            "the server could not find the requested resource",
            "NotFound",
        )
        .with_code(404)
        .boxed(),
    ))
}

fn run(events: Vec<Ev>) -> Index {
    let idx = Index::new("https://api");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let events = absent_is_empty(idx.clone(), futures::stream::iter(events));
    rt.block_on(drive::<ClusterNetworkPolicyObject, _>(idx.clone(), events));
    idx
}

fn cnp_status(idx: &Index) -> crate::KindStatus {
    idx.view()
        .status()
        .kinds
        .into_iter()
        .find(|k| k.kind == Kind::ClusterNetworkPolicy)
        .unwrap()
}

#[test]
fn a_listed_policy_lands_in_the_view_read_fail_closed() {
    let idx = run(vec![
        Ok(Event::Init),
        Ok(Event::InitApply(object(INGRESS_TCP))),
        Ok(Event::InitDone),
    ]);
    let all = idx.view().cluster_policies();
    assert_eq!(all.len(), 1);
    let p = &all[0];
    assert_eq!(
        (p.name.as_str(), p.tier, p.priority),
        ("ingress-tcp", Tier::Admin, 3)
    );
    assert!(matches!(p.subject, ClusterSubject::Namespaces(_)));
    assert_eq!(p.ingress.len(), 3);
    assert_eq!(p.ingress[1].action, ClusterAction::Deny);
    // A peer of a newer API: kept, and its Pass rule reads as Deny all.
    assert!(matches!(p.ingress[2].peers[0], ClusterPeer::Unsupported(_)));
    assert_eq!(p.faults().len(), 1, "{:?}", p.faults());
    let st = cnp_status(&idx);
    assert!(st.synced && st.healthy && st.objects == 1, "{st:?}");
}

#[test]
fn an_unreadable_policy_is_skipped_and_the_rest_flows() {
    let bad = r#"{"metadata": {"name": "bad"}, "spec": {"tier": "Admin", "priority": "high"}}"#;
    let unknown_tier = INGRESS_TCP
        .replace("\"Admin\"", "\"Platform\"")
        .replace("ingress-tcp", "other-tier");
    let idx = run(vec![
        Ok(Event::Init),
        Ok(Event::InitApply(object(bad))),
        Ok(Event::InitApply(object(&unknown_tier))),
        Ok(Event::InitApply(object(INGRESS_TCP))),
        Ok(Event::InitDone),
    ]);
    let names: Vec<String> = idx
        .view()
        .cluster_policies()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["ingress-tcp"]);
    assert_eq!(cnp_status(&idx).skipped, 2);
}

#[test]
fn without_the_crd_the_kind_is_synced_and_empty_and_picked_up_later() {
    let idx = Index::new("https://api");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let absent: Vec<Ev> = vec![Err(not_found()), Err(not_found())];
    let events = absent_is_empty(idx.clone(), futures::stream::iter(absent));
    rt.block_on(drive::<ClusterNetworkPolicyObject, _>(idx.clone(), events));
    let st = cnp_status(&idx);
    assert!(st.synced && st.healthy, "{st:?}");
    assert_eq!((st.errors, st.objects), (0, 0));
    assert!(idx.view().current(Kind::ClusterNetworkPolicy));
    // Installed later: the retried list finds the policy.
    let later: Vec<Ev> = vec![
        Ok(Event::Init),
        Ok(Event::InitApply(object(INGRESS_TCP))),
        Ok(Event::InitDone),
        Ok(Event::Delete(object(INGRESS_TCP))),
    ];
    let g = idx.view().generation();
    let events = absent_is_empty(idx.clone(), futures::stream::iter(later));
    rt.block_on(drive::<ClusterNetworkPolicyObject, _>(idx.clone(), events));
    assert!(idx.view().generation() > g);
    assert!(idx.view().cluster_policies().is_empty(), "deleted again");
}

#[test]
fn other_errors_stay_errors() {
    let forbidden = watcher::Error::InitialListFailed(kube::Error::Api(
        Status::failure("forbidden", "Forbidden")
            .with_code(403)
            .boxed(),
    ));
    let idx = run(vec![Err(forbidden)]);
    let st = cnp_status(&idx);
    assert!(!st.synced && !st.healthy && st.errors == 1, "{st:?}");
}
