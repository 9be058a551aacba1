use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::*;
use crate::convert::Convert;
use crate::index::Index;
use crate::model::*;

fn pod(ns: &str, name: &str, l: &[(&str, &str)]) -> PodInfo {
    mk_pod(ns, name, l, &["10.244.0.5"]).convert().unwrap()
}

fn ns(name: &str, l: &[(&str, &str)]) -> NamespaceInfo {
    mk_ns(name, l).convert().unwrap()
}

#[test]
fn a_pod_before_its_namespace_is_a_workload_without_namespace_labels() {
    let idx = Index::new("https://api");
    let view = idx.view();
    idx.apply(pod("shop", "web-1", &[("app", "web")]));
    let w = view.workload("shop", "web-1").unwrap();
    assert_eq!(w.labels, labels(&[("app", "web")]));
    assert_eq!(w.namespace_labels, None);
    idx.apply(ns("shop", &[("team", "a")]));
    let w = view.workload("shop", "web-1").unwrap();
    assert_eq!(w.namespace_labels, Some(labels(&[("team", "a")])));
    assert_eq!(w.uid, "uid-web-1");
    assert_eq!(view.workloads().len(), 1);
    assert!(view.workload("shop", "nope").is_none());
}

#[test]
fn label_changes_are_changes_and_equal_updates_are_not() {
    let idx = Index::new("https://api");
    let view = idx.view();
    let g0 = view.generation();
    idx.apply(pod("shop", "web-1", &[("app", "web")]));
    let g1 = view.generation();
    assert!(g1 > g0);
    idx.apply(pod("shop", "web-1", &[("app", "web")]));
    assert_eq!(view.generation(), g1, "an equal update changes nothing");
    idx.apply(pod("shop", "web-1", &[("app", "web"), ("v", "2")]));
    assert!(view.generation() > g1);
    assert_eq!(
        view.workload("shop", "web-1")
            .unwrap()
            .labels
            .get("v")
            .map(String::as_str),
        Some("2")
    );
    let g2 = view.generation();
    idx.apply(ns("shop", &[("team", "b")]));
    assert!(
        view.generation() > g2,
        "namespace labels are part of the workload"
    );
}

#[test]
fn reset_forgets_what_was_not_listed_again_and_keeps_the_unreadable() {
    let idx = Index::new("https://api");
    let view = idx.view();
    idx.apply(pod("a", "stays", &[]));
    idx.apply(pod("a", "gone", &[]));
    idx.apply(pod("a", "unreadable-now", &[("old", "1")]));
    let keep: HashSet<ObjKey> = [ObjKey::new("a", "unreadable-now")].into();
    idx.reset(vec![pod("a", "stays", &[]), pod("a", "new", &[])], &keep);
    let mut names: Vec<String> = view.workloads().into_iter().map(|w| w.name).collect();
    names.sort();
    assert_eq!(names, ["new", "stays", "unreadable-now"]);
    assert_eq!(
        view.pod("a", "unreadable-now").unwrap().labels,
        labels(&[("old", "1")]),
        "what was held for an unreadable object stays"
    );
    // an unreadable object weft never held is not invented
    let keep: HashSet<ObjKey> = [ObjKey::new("a", "never")].into();
    idx.reset::<PodInfo>(vec![], &keep);
    assert!(view.workloads().is_empty());
}

#[test]
fn delete_of_unknown_is_fine_and_changes_nothing() {
    let idx = Index::new("https://api");
    let view = idx.view();
    let g = view.generation();
    idx.delete::<PodInfo>(&ObjKey::new("a", "never"));
    assert_eq!(view.generation(), g);
    idx.apply(pod("a", "p", &[]));
    idx.delete::<PodInfo>(&ObjKey::new("a", "p"));
    assert!(view.pod("a", "p").is_none());
}

#[test]
fn status_follows_lists_and_errors() {
    let idx = Index::new("https://api:6443");
    let view = idx.view();
    let st = view.status();
    assert_eq!(st.server, "https://api:6443");
    assert_eq!(st.kinds.len(), 7);
    assert!(!st.ready());
    assert!(!view.current(Kind::Pod));
    for k in Kind::ALL {
        match k {
            Kind::Node => idx.reset::<NodeInfo>(vec![], &HashSet::new()),
            Kind::Pod => idx.reset(vec![pod("a", "p", &[])], &HashSet::new()),
            Kind::Namespace => idx.reset::<NamespaceInfo>(vec![], &HashSet::new()),
            Kind::NetworkPolicy => idx.reset::<NetPolicy>(vec![], &HashSet::new()),
            Kind::Service => idx.reset::<Service>(vec![], &HashSet::new()),
            Kind::EndpointSlice => idx.reset::<EndpointSliceInfo>(vec![], &HashSet::new()),
            Kind::ClusterNetworkPolicy => {
                idx.reset::<weft_policy::ClusterNetworkPolicy>(vec![], &HashSet::new())
            }
        }
    }
    assert!(view.status().ready());
    idx.error(Kind::Pod, "connection refused".into());
    let st = view.status();
    assert!(!st.ready());
    assert!(
        !view.current(Kind::Pod),
        "after an error the table is memory, not the present"
    );
    let pods = st.kinds.iter().find(|k| k.kind == Kind::Pod).unwrap();
    assert_eq!(
        (pods.synced, pods.healthy, pods.errors, pods.objects),
        (true, false, 1, 1)
    );
    assert_eq!(pods.last_error.as_deref(), Some("connection refused"));
    idx.apply(pod("a", "q", &[]));
    assert!(view.current(Kind::Pod));
}

#[test]
fn services_and_their_endpoints_from_several_slices() {
    let idx = Index::new("https://api");
    let view = idx.view();
    idx.apply(mk_service("shop", "web", "10.96.0.10").convert().unwrap());
    idx.apply(
        mk_slice("shop", "web-a", "web", &[("10.244.0.5", None, None, None)])
            .convert()
            .unwrap(),
    );
    // during a handover one address may sit in two slices
    idx.apply(
        mk_slice(
            "shop",
            "web-b",
            "web",
            &[
                ("10.244.0.5", None, None, None),
                ("10.244.1.5", Some(false), Some(true), Some(true)),
            ],
        )
        .convert()
        .unwrap(),
    );
    idx.apply(
        mk_slice("other", "web-c", "web", &[("10.244.2.5", None, None, None)])
            .convert()
            .unwrap(),
    );
    let eps = view.endpoints("shop", "web");
    let addrs: Vec<String> = eps.iter().map(|e| e.addr.to_string()).collect();
    assert_eq!(addrs, ["10.244.0.5", "10.244.1.5"]);
    assert!(eps[1].terminating && eps[1].serving && !eps[1].ready);
    assert_eq!(view.services().len(), 1);
    idx.delete::<EndpointSliceInfo>(&ObjKey::new("shop", "web-b"));
    assert_eq!(view.endpoints("shop", "web").len(), 1);
}

#[test]
fn wait_change_wakes_a_reader_thread() {
    let idx = Index::new("https://api");
    let view = idx.view();
    let seen = view.generation();
    let reader = std::thread::spawn(move || {
        let t = Instant::now();
        let g = view.wait_change(seen, Duration::from_secs(10));
        (g, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(50));
    idx.apply(pod("a", "p", &[]));
    let (g, waited) = reader.join().unwrap();
    assert!(g > seen);
    assert!(
        waited < Duration::from_secs(5),
        "woken by the change, not the timeout"
    );
    // nothing changes: the timeout ends the wait
    let view = idx.view();
    let t = Instant::now();
    assert_eq!(view.wait_change(g, Duration::from_millis(30)), g);
    assert!(t.elapsed() >= Duration::from_millis(30));
}

/// The policy thread reads pods, namespaces and policies: a Service
/// change must not wake it (nor move the count it compares).
#[test]
fn a_readers_kinds_move_only_with_those_kinds() {
    let idx = Index::new("https://api");
    let view = idx.view();
    let kinds = [Kind::Pod, Kind::Namespace, Kind::NetworkPolicy];
    let g0 = view.generation_of(&kinds);
    let svc: Service = mk_service("a", "web", "10.96.0.10").convert().unwrap();
    idx.apply(svc);
    assert!(view.generation() > 0, "the Service is a change of the view");
    assert_eq!(view.generation_of(&kinds), g0, "but not of these kinds");
    let t = Instant::now();
    assert_eq!(
        view.wait_change_of(&kinds, g0, Duration::from_millis(30)),
        g0
    );
    assert!(t.elapsed() >= Duration::from_millis(30), "not woken");
    idx.apply(ns("a", &[("team", "x")]));
    let g1 = view.generation_of(&kinds);
    assert!(g1 > g0);
    assert_eq!(view.wait_change_of(&kinds, g0, Duration::from_secs(5)), g1);
}
