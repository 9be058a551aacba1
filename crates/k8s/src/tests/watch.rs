//! The watch driver fed scripted watcher events, as kube's reflector tests do.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};

use super::*;
use crate::guarded::Guarded;
use crate::index::Index;
use crate::model::*;
use crate::watch::{drive, WatchBackoff};

type Ev = Result<Event<Guarded<Pod>>, watcher::Error>;

fn good(name: &str, l: &[(&str, &str)]) -> Guarded<Pod> {
    Guarded::Ok(mk_pod("a", name, l, &["10.244.0.9"]))
}

fn unreadable(name: &str) -> Guarded<Pod> {
    Guarded::Bad {
        metadata: Box::new(ObjectMeta {
            namespace: Some("a".into()),
            name: Some(name.into()),
            ..Default::default()
        }),
        error: "invalid type: string, expected a sequence".into(),
    }
}

fn run(events: Vec<Ev>) -> Index {
    let idx = Index::new("https://api");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(drive::<Pod, _>(idx.clone(), futures::stream::iter(events)));
    idx
}

fn pods_status(idx: &Index) -> crate::KindStatus {
    idx.view()
        .status()
        .kinds
        .into_iter()
        .find(|k| k.kind == Kind::Pod)
        .unwrap()
}

#[test]
fn a_list_with_an_unreadable_object_still_lands() {
    let idx = run(vec![
        Ok(Event::Init),
        Ok(Event::InitApply(good("p1", &[]))),
        Ok(Event::InitApply(unreadable("p2"))),
        Ok(Event::InitApply(good("p3", &[]))),
        Ok(Event::InitDone),
    ]);
    let view = idx.view();
    assert!(view.pod("a", "p1").is_some() && view.pod("a", "p3").is_some());
    assert!(view.pod("a", "p2").is_none());
    let st = pods_status(&idx);
    assert_eq!(
        (st.synced, st.healthy, st.skipped, st.lists),
        (true, true, 1, 1)
    );
}

#[test]
fn an_object_that_converts_badly_is_skipped_too() {
    let mut p = mk_pod("a", "bad-ip", &[], &["not-an-ip"]);
    p.metadata.uid = Some("u".into());
    let idx = run(vec![
        Ok(Event::Init),
        Ok(Event::InitApply(Guarded::Ok(p))),
        Ok(Event::InitApply(good("p1", &[]))),
        Ok(Event::InitDone),
    ]);
    assert_eq!(idx.view().workloads().len(), 1);
    assert_eq!(pods_status(&idx).skipped, 1);
}

#[test]
fn errors_never_end_the_watch() {
    let mut events: Vec<Ev> = (0..5)
        .map(|_| Err(watcher::Error::NoResourceVersion))
        .collect();
    events.extend([
        Ok(Event::Init),
        Ok(Event::InitApply(good("p1", &[]))),
        Err(watcher::Error::NoResourceVersion),
        Ok(Event::InitApply(good("p2", &[]))),
        Ok(Event::InitDone),
        Ok(Event::Apply(good("p3", &[]))),
    ]);
    let idx = run(events);
    assert_eq!(idx.view().workloads().len(), 3);
    let st = pods_status(&idx);
    assert_eq!(st.errors, 6);
    assert!(
        st.healthy,
        "events after the errors make the watch healthy again"
    );
}

#[test]
fn an_api_server_restart_relist_catches_up_with_what_changed_meanwhile() {
    let idx = run(vec![
        Ok(Event::Init),
        Ok(Event::InitApply(good("web", &[("v", "1")]))),
        Ok(Event::InitApply(good("deleted-while-away", &[]))),
        Ok(Event::InitDone),
        // the API server goes away: the watch fails, backs off, relists
        Err(watcher::Error::NoResourceVersion),
        Err(watcher::Error::NoResourceVersion),
        Ok(Event::Init),
        Ok(Event::InitApply(good("web", &[("v", "2")]))),
        Ok(Event::InitApply(good("added-while-away", &[]))),
        Ok(Event::InitDone),
    ]);
    let view = idx.view();
    assert_eq!(view.pod("a", "web").unwrap().labels, labels(&[("v", "2")]));
    assert!(view.pod("a", "deleted-while-away").is_none());
    assert!(view.pod("a", "added-while-away").is_some());
    assert_eq!(pods_status(&idx).lists, 2);
}

#[test]
fn the_old_table_serves_until_the_relist_is_complete() {
    // a relist that never finishes (the stream ends mid-list) leaves the
    // last complete state, never a half list
    let idx = run(vec![
        Ok(Event::Init),
        Ok(Event::InitApply(good("p1", &[]))),
        Ok(Event::InitApply(good("p2", &[]))),
        Ok(Event::InitDone),
        Ok(Event::Init),
        Ok(Event::InitApply(good("p1", &[]))),
    ]);
    assert_eq!(idx.view().workloads().len(), 2);
}

#[test]
fn updates_and_deletes() {
    let idx = run(vec![
        Ok(Event::Init),
        Ok(Event::InitApply(good("p1", &[("v", "1")]))),
        Ok(Event::InitDone),
        Ok(Event::Apply(good("p1", &[("v", "2")]))),
        // an unreadable update keeps what was held
        Ok(Event::Apply(unreadable("p1"))),
        Ok(Event::Apply(good("p2", &[]))),
        Ok(Event::Delete(good("p2", &[]))),
        // a delete needs only the key, even of an unreadable object
        Ok(Event::Apply(good("p3", &[]))),
        Ok(Event::Delete(unreadable("p3"))),
    ]);
    let view = idx.view();
    assert_eq!(view.pod("a", "p1").unwrap().labels, labels(&[("v", "2")]));
    assert!(view.pod("a", "p2").is_none() && view.pod("a", "p3").is_none());
}

#[test]
fn backoff_doubles_to_its_cap_and_resets() {
    let mut b = WatchBackoff::new(Duration::from_secs(2));
    let got: Vec<u64> = (0..6)
        .map(|_| b.next().unwrap().as_millis() as u64)
        .collect();
    assert_eq!(got, [250, 500, 1000, 2000, 2000, 2000]);
    b.reset();
    assert_eq!(b.next(), Some(Duration::from_millis(250)));
}
