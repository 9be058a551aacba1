//! What changed among the Services and EndpointSlices since a reader last
//! asked: a feed per reader (the Service load balancer), so a round after
//! one slice change costs that Service's copy, not a copy of all of them.
//!
//! The index marks a Service key dirty in every feed when the Service or
//! one of its slices (by the `kubernetes.io/service-name` label, before and
//! after the change) is applied or deleted, and asks every feed for a full
//! copy when either kind is relisted (what a relist changed is not worth
//! tracking: relists are rare, and a full copy is the safe answer). A new
//! feed starts with a full copy. The sets are bounded by the number of
//! Services.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{Shared, Tables};
use crate::model::{EndpointSliceInfo, ObjKey, Service};

/// The Service a slice belongs to (`None`: the slice names none).
fn owner(s: &EndpointSliceInfo) -> Option<ObjKey> {
    s.service
        .as_ref()
        .map(|n| ObjKey::new(s.namespace.clone(), n.clone()))
}

#[derive(Debug, Default)]
struct FeedState {
    full: bool,
    dirty: BTreeSet<ObjKey>,
}

/// The index's side: the slices of each Service and each feed's dirty set.
#[derive(Debug, Default)]
pub(super) struct Tracking {
    by_service: BTreeMap<ObjKey, BTreeSet<ObjKey>>,
    feeds: BTreeMap<u64, FeedState>,
    next_feed: u64,
}

impl Tracking {
    fn mark(&mut self, key: &ObjKey) {
        for f in self.feeds.values_mut().filter(|f| !f.full) {
            f.dirty.insert(key.clone());
        }
    }

    /// Every feed copies everything next time (a relist).
    pub(super) fn all_changed(&mut self) {
        for f in self.feeds.values_mut() {
            f.full = true;
            f.dirty.clear();
        }
    }

    pub(super) fn service_changed(&mut self, key: &ObjKey) {
        self.mark(key);
    }

    /// Slice `key` went from `old` to `new` (either may be absent).
    pub(super) fn slice_changed(
        &mut self,
        key: &ObjKey,
        old: Option<&EndpointSliceInfo>,
        new: Option<&EndpointSliceInfo>,
    ) {
        let (was, is) = (old.and_then(owner), new.and_then(owner));
        if was != is {
            if let Some(w) = &was {
                if let Some(set) = self.by_service.get_mut(w) {
                    set.remove(key);
                    if set.is_empty() {
                        self.by_service.remove(w);
                    }
                }
            }
            if let Some(i) = &is {
                self.by_service
                    .entry(i.clone())
                    .or_default()
                    .insert(key.clone());
            }
        }
        for s in was
            .iter()
            .chain(is.iter().filter(|i| Some(*i) != was.as_ref()))
        {
            self.mark(s);
        }
    }

    /// The slices table was replaced whole.
    pub(super) fn slices_reset(&mut self, slices: &BTreeMap<ObjKey, EndpointSliceInfo>) {
        self.by_service.clear();
        for (k, s) in slices {
            if let Some(o) = owner(s) {
                self.by_service.entry(o).or_default().insert(k.clone());
            }
        }
        self.all_changed();
    }
}

/// One Service whose input changed: the Service as the index holds it now
/// (`None`: gone or not seen yet) and its slices now.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceInput {
    pub key: ObjKey,
    pub service: Option<Service>,
    pub slices: Vec<EndpointSliceInfo>,
}

/// What a feed hands out.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceChanges {
    /// Everything the index holds (the first take, after a relist, or when
    /// asked): every Service and every slice.
    Full {
        services: Vec<Service>,
        slices: Vec<EndpointSliceInfo>,
    },
    /// Only these Services changed since the last take (empty: nothing).
    Changed(Vec<ServiceInput>),
}

/// A reader's feed of Service changes; dropping it unregisters it.
pub struct ServiceFeed {
    shared: Arc<Shared>,
    id: u64,
}

impl ServiceFeed {
    pub(super) fn new(shared: Arc<Shared>) -> ServiceFeed {
        let id = {
            let mut inner = shared.lock();
            let t = &mut inner.tables.tracking;
            let id = t.next_feed;
            t.next_feed += 1;
            t.feeds.insert(
                id,
                FeedState {
                    full: true,
                    dirty: BTreeSet::new(),
                },
            );
            id
        };
        ServiceFeed { shared, id }
    }

    /// The changes since the last take, and forgets them; `full` asks for
    /// everything whatever changed (a reader's start over, a periodic check).
    pub fn take(&self, full: bool) -> ServiceChanges {
        let mut inner = self.shared.lock();
        let t: &mut Tables = &mut inner.tables;
        let state = t
            .tracking
            .feeds
            .get_mut(&self.id)
            .expect("a feed is registered while it lives");
        let was_full = std::mem::take(&mut state.full);
        let dirty = std::mem::take(&mut state.dirty);
        if full || was_full {
            return ServiceChanges::Full {
                services: t.services.values().cloned().collect(),
                slices: t.slices.values().cloned().collect(),
            };
        }
        ServiceChanges::Changed(
            dirty
                .into_iter()
                .map(|key| ServiceInput {
                    service: t.services.get(&key).cloned(),
                    slices: t
                        .tracking
                        .by_service
                        .get(&key)
                        .into_iter()
                        .flatten()
                        .filter_map(|s| t.slices.get(s).cloned())
                        .collect(),
                    key,
                })
                .collect(),
        )
    }
}

impl Drop for ServiceFeed {
    fn drop(&mut self) {
        self.shared.lock().tables.tracking.feeds.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::index::Index;

    fn svc(name: &str) -> Service {
        Service {
            namespace: "ns".into(),
            name: name.into(),
            service_type: "ClusterIP".into(),
            cluster_ips: vec!["10.96.0.1".parse().unwrap()],
            external_ips: vec![],
            load_balancer_ips: vec![],
            ports: vec![],
            selector: None,
            session_affinity_seconds: None,
            external_traffic_local: false,
            internal_traffic_local: false,
            publish_not_ready: false,
            labels: Default::default(),
        }
    }

    fn slice(name: &str, service: Option<&str>) -> EndpointSliceInfo {
        EndpointSliceInfo {
            namespace: "ns".into(),
            name: name.into(),
            service: service.map(String::from),
            endpoints: vec![],
            labels: Default::default(),
        }
    }

    fn changed(c: ServiceChanges) -> Vec<(String, bool, Vec<String>)> {
        let ServiceChanges::Changed(list) = c else {
            panic!("expected changed Services, got a full copy");
        };
        list.into_iter()
            .map(|i| {
                (
                    i.key.name,
                    i.service.is_some(),
                    i.slices.into_iter().map(|s| s.name).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn a_feed_starts_full_then_hands_out_only_what_changed() {
        let index = Index::new("t");
        let feed = index.view().service_feed();
        index.reset(vec![svc("a"), svc("b")], &HashSet::new());
        index.reset(vec![slice("a-1", Some("a"))], &HashSet::new());
        let ServiceChanges::Full { services, slices } = feed.take(false) else {
            panic!("first take is full");
        };
        assert_eq!((services.len(), slices.len()), (2, 1));
        assert_eq!(changed(feed.take(false)), vec![]);
        index.apply(slice("a-2", Some("a")));
        // an update equal to what is held is no change
        index.apply(svc("b"));
        assert_eq!(
            changed(feed.take(false)),
            vec![("a".into(), true, vec!["a-1".into(), "a-2".into()])]
        );
        index.delete::<Service>(&ObjKey::new("ns", "b"));
        assert_eq!(changed(feed.take(false)), vec![("b".into(), false, vec![])]);
        assert!(matches!(feed.take(true), ServiceChanges::Full { .. }));
    }

    #[test]
    fn a_slice_that_changes_service_marks_both_and_one_without_none() {
        let index = Index::new("t");
        let feed = index.view().service_feed();
        index.reset(vec![svc("a"), svc("b")], &HashSet::new());
        index.reset(vec![slice("x", Some("a"))], &HashSet::new());
        feed.take(false);
        index.apply(slice("x", Some("b")));
        assert_eq!(
            changed(feed.take(false)),
            vec![
                ("a".into(), true, vec![]),
                ("b".into(), true, vec!["x".into()])
            ]
        );
        index.apply(slice("x", None));
        assert_eq!(changed(feed.take(false)), vec![("b".into(), true, vec![])]);
        index.apply(slice("orphan", None));
        assert_eq!(changed(feed.take(false)), vec![]);
    }

    #[test]
    fn feeds_are_independent_and_a_dropped_one_is_forgotten() {
        let index = Index::new("t");
        let one = index.view().service_feed();
        let two = index.view().service_feed();
        index.reset(vec![svc("a")], &HashSet::new());
        index.reset(Vec::<EndpointSliceInfo>::new(), &HashSet::new());
        one.take(false);
        two.take(false);
        index.apply(slice("a-1", Some("a")));
        assert_eq!(changed(one.take(false)).len(), 1);
        assert_eq!(changed(two.take(false)).len(), 1);
        drop(two);
        index.apply(slice("a-2", Some("a")));
        assert_eq!(index.0.lock().tables.tracking.feeds.len(), 1);
        // a relist: every feed copies everything once
        index.reset(vec![svc("a")], &HashSet::new());
        assert!(matches!(one.take(false), ServiceChanges::Full { .. }));
        assert_eq!(changed(one.take(false)), vec![]);
    }
}
