//! The index: what the watches have seen, as domain types, behind one lock.
//! Watches write through [`Index`] with kubert's `apply` / `delete` /
//! `reset` (after a relist, what was not listed again is gone); the rest of
//! weftd reads through [`View`] from plain threads, and may block on
//! [`View::wait_change`] to learn that something changed.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::*;

#[path = "service_feed.rs"]
mod service_feed;
pub use service_feed::{ServiceChanges, ServiceFeed, ServiceInput};

/// A domain type with a table in the index.
pub trait Indexed: Clone + PartialEq + Send + 'static {
    const KIND: Kind;
    fn key(&self) -> ObjKey;
    fn table(t: &mut Tables) -> &mut BTreeMap<ObjKey, Self>;
    /// `key` changed: `old` is what the table held before (the table holds
    /// the new value, or nothing after a delete). Keeps the Service feeds.
    fn track(_t: &mut Tables, _key: &ObjKey, _old: Option<Self>) {}
    /// The table was replaced by a full list.
    fn track_reset(_t: &mut Tables) {}
}

macro_rules! indexed {
    ($ty:ty, $kind:expr, $field:ident, cluster) => {
        impl Indexed for $ty {
            const KIND: Kind = $kind;
            fn key(&self) -> ObjKey {
                ObjKey::cluster(self.name.clone())
            }
            fn table(t: &mut Tables) -> &mut BTreeMap<ObjKey, Self> {
                &mut t.$field
            }
        }
    };
    ($ty:ty, $kind:expr, $field:ident) => {
        impl Indexed for $ty {
            const KIND: Kind = $kind;
            fn key(&self) -> ObjKey {
                ObjKey::new(self.namespace.clone(), self.name.clone())
            }
            fn table(t: &mut Tables) -> &mut BTreeMap<ObjKey, Self> {
                &mut t.$field
            }
        }
    };
}

indexed!(NodeInfo, Kind::Node, nodes, cluster);
indexed!(PodInfo, Kind::Pod, pods);
indexed!(NamespaceInfo, Kind::Namespace, namespaces, cluster);
indexed!(NetPolicy, Kind::NetworkPolicy, policies);

impl Indexed for Service {
    const KIND: Kind = Kind::Service;
    fn key(&self) -> ObjKey {
        ObjKey::new(self.namespace.clone(), self.name.clone())
    }
    fn table(t: &mut Tables) -> &mut BTreeMap<ObjKey, Self> {
        &mut t.services
    }
    fn track(t: &mut Tables, key: &ObjKey, _old: Option<Self>) {
        t.tracking.service_changed(key);
    }
    fn track_reset(t: &mut Tables) {
        t.tracking.all_changed();
    }
}

impl Indexed for EndpointSliceInfo {
    const KIND: Kind = Kind::EndpointSlice;
    fn key(&self) -> ObjKey {
        ObjKey::new(self.namespace.clone(), self.name.clone())
    }
    fn table(t: &mut Tables) -> &mut BTreeMap<ObjKey, Self> {
        &mut t.slices
    }
    fn track(t: &mut Tables, key: &ObjKey, old: Option<Self>) {
        t.tracking
            .slice_changed(key, old.as_ref(), t.slices.get(key));
    }
    fn track_reset(t: &mut Tables) {
        t.tracking.slices_reset(&t.slices);
    }
}
indexed!(
    weft_policy::ClusterNetworkPolicy,
    Kind::ClusterNetworkPolicy,
    cluster_policies,
    cluster
);

#[derive(Debug, Default)]
pub struct Tables {
    nodes: BTreeMap<ObjKey, NodeInfo>,
    pods: BTreeMap<ObjKey, PodInfo>,
    namespaces: BTreeMap<ObjKey, NamespaceInfo>,
    policies: BTreeMap<ObjKey, NetPolicy>,
    services: BTreeMap<ObjKey, Service>,
    slices: BTreeMap<ObjKey, EndpointSliceInfo>,
    cluster_policies: BTreeMap<ObjKey, weft_policy::ClusterNetworkPolicy>,
    tracking: service_feed::Tracking,
}

impl Tables {
    fn len(&self, kind: Kind) -> usize {
        match kind {
            Kind::Node => self.nodes.len(),
            Kind::Pod => self.pods.len(),
            Kind::Namespace => self.namespaces.len(),
            Kind::NetworkPolicy => self.policies.len(),
            Kind::Service => self.services.len(),
            Kind::EndpointSlice => self.slices.len(),
            Kind::ClusterNetworkPolicy => self.cluster_policies.len(),
        }
    }
}

/// How one watch is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindStatus {
    pub kind: Kind,
    /// A full list has been applied at least once.
    pub synced: bool,
    /// The last thing the watch did succeeded.
    pub healthy: bool,
    pub objects: usize,
    /// Full lists so far (the first one included).
    pub lists: u64,
    pub errors: u64,
    /// Objects skipped because they could not be read.
    pub skipped: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterStatus {
    /// The API server's URL.
    pub server: String,
    pub kinds: Vec<KindStatus>,
}

impl AdapterStatus {
    /// Every watch has listed once and is healthy now.
    pub fn ready(&self) -> bool {
        self.kinds.iter().all(|k| k.synced && k.healthy)
    }
}

struct Inner {
    tables: Tables,
    status: BTreeMap<Kind, KindStatus>,
    generation: u64,
    /// Per kind: counts that kind's changes (readers that read only some
    /// kinds wake only for those, see [`View::generation_of`]).
    kind_generation: BTreeMap<Kind, u64>,
    server: String,
    /// Whether the "waiting for the API server" line was logged and not yet
    /// answered by a "watching" line.
    waiting_logged: bool,
}

struct Shared {
    inner: Mutex<Inner>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writing side (the watches; tests).
#[derive(Clone)]
pub struct Index(Arc<Shared>);

/// The reading side, for plain threads.
#[derive(Clone)]
pub struct View(Arc<Shared>);

impl Index {
    pub fn new(server: impl Into<String>) -> Index {
        let status = Kind::ALL
            .iter()
            .map(|k| {
                (
                    *k,
                    KindStatus {
                        kind: *k,
                        synced: false,
                        healthy: false,
                        objects: 0,
                        lists: 0,
                        errors: 0,
                        skipped: 0,
                        last_error: None,
                    },
                )
            })
            .collect();
        Index(Arc::new(Shared {
            inner: Mutex::new(Inner {
                tables: Tables::default(),
                status,
                generation: 0,
                kind_generation: BTreeMap::new(),
                server: server.into(),
                waiting_logged: false,
            }),
            changed: Condvar::new(),
        }))
    }

    pub fn view(&self) -> View {
        View(self.0.clone())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock()
    }

    fn changed(&self, inner: &mut Inner, kind: Kind) {
        inner.generation += 1;
        *inner.kind_generation.entry(kind).or_default() += 1;
        self.0.changed.notify_all();
    }

    /// An object was added or changed. An update equal to what is held
    /// (resyncs, status churn in fields weft does not keep) changes nothing.
    pub fn apply<T: Indexed>(&self, obj: T) {
        let mut inner = self.lock();
        let key = obj.key();
        let tables = &mut inner.tables;
        let table = T::table(tables);
        let changed = table.get(&key) != Some(&obj);
        if changed {
            let old = table.insert(key.clone(), obj);
            T::track(tables, &key, old);
        }
        healthy(&mut inner, T::KIND);
        if changed {
            self.changed(&mut inner, T::KIND);
        }
    }

    pub fn delete<T: Indexed>(&self, key: &ObjKey) {
        let mut inner = self.lock();
        let old = T::table(&mut inner.tables).remove(key);
        let changed = old.is_some();
        if changed {
            T::track(&mut inner.tables, key, old);
        }
        healthy(&mut inner, T::KIND);
        if changed {
            self.changed(&mut inner, T::KIND);
        }
    }

    /// A full list: `objs` is everything there is, except the objects in
    /// `keep`, which were listed but could not be read (what the index held
    /// for them stays). Everything else the table held is gone.
    pub fn reset<T: Indexed>(&self, objs: Vec<T>, keep: &HashSet<ObjKey>) {
        let mut inner = self.lock();
        let table = T::table(&mut inner.tables);
        let mut fresh: BTreeMap<ObjKey, T> = objs.into_iter().map(|o| (o.key(), o)).collect();
        for k in keep {
            if let Some(old) = table.get(k) {
                fresh.entry(k.clone()).or_insert_with(|| old.clone());
            }
        }
        let changed = *table != fresh;
        *table = fresh;
        // a relist may stand for changes no event told of: readers of the
        // Service feeds copy everything once
        T::track_reset(&mut inner.tables);
        let st = inner
            .status
            .get_mut(&T::KIND)
            .expect("every kind has a status");
        st.synced = true;
        st.lists += 1;
        healthy(&mut inner, T::KIND);
        if changed {
            self.changed(&mut inner, T::KIND);
        }
    }

    /// An object that could not be read was skipped.
    pub fn skipped(&self, kind: Kind, key: &ObjKey, error: &str) {
        tracing::warn!(%kind, object = %key, error, "skipping a Kubernetes object weft cannot read; the watch goes on");
        let mut inner = self.lock();
        inner
            .status
            .get_mut(&kind)
            .expect("every kind has a status")
            .skipped += 1;
    }

    /// The watch failed; it retries with backoff.
    pub fn error(&self, kind: Kind, error: String) {
        let mut inner = self.lock();
        let server = inner.server.clone();
        let first_wait = !inner.waiting_logged;
        let st = inner
            .status
            .get_mut(&kind)
            .expect("every kind has a status");
        let new = st.healthy || st.last_error.as_deref() != Some(error.as_str());
        st.healthy = false;
        st.errors += 1;
        st.last_error = Some(error.clone());
        if first_wait {
            inner.waiting_logged = true;
            tracing::warn!(%server, %kind, %error,
                "waiting for the Kubernetes API server (retrying with backoff); CNI is served meanwhile and pods keep their network");
        } else if new {
            tracing::warn!(%server, %kind, %error, "watch failed; retrying with backoff");
        } else {
            tracing::debug!(%server, %kind, %error, "watch failed again");
        }
        drop(inner);
        // readers that report status (readiness) wake up too
        self.0.changed.notify_all();
    }
}

fn healthy(inner: &mut Inner, kind: Kind) {
    let st = inner
        .status
        .get_mut(&kind)
        .expect("every kind has a status");
    if st.healthy {
        return;
    }
    st.healthy = true;
    let all = inner.status.values().all(|s| s.synced && s.healthy);
    if all {
        let t = &inner.tables;
        tracing::info!(server = %inner.server, pods = t.pods.len(), namespaces = t.namespaces.len(),
            networkpolicies = t.policies.len(), services = t.services.len(),
            endpointslices = t.slices.len(), "watching the Kubernetes API server");
        inner.waiting_logged = false;
    }
}

fn kinds_generation(inner: &Inner, kinds: &[Kind]) -> u64 {
    kinds
        .iter()
        .map(|k| inner.kind_generation.get(k).copied().unwrap_or(0))
        .sum()
}

impl View {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock()
    }

    /// Counts changes; compare with an earlier value to learn whether
    /// anything changed since.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Blocks until the generation differs from `seen` or `timeout` passes;
    /// returns the generation then.
    pub fn wait_change(&self, seen: u64, timeout: Duration) -> u64 {
        let inner = self.lock();
        let (inner, _) = self
            .0
            .changed
            .wait_timeout_while(inner, timeout, |i| i.generation == seen)
            .unwrap_or_else(|p| p.into_inner());
        inner.generation
    }

    /// Counts the changes of `kinds` only (a sum of per-kind counts: it
    /// moves exactly when one of them changes).
    pub fn generation_of(&self, kinds: &[Kind]) -> u64 {
        kinds_generation(&self.lock(), kinds)
    }

    /// [`wait_change`](Self::wait_change) for `kinds` only: a change of
    /// any other kind (a Service, an EndpointSlice) does not wake the
    /// reader. Returns [`generation_of`](Self::generation_of) then.
    pub fn wait_change_of(&self, kinds: &[Kind], seen: u64, timeout: Duration) -> u64 {
        let inner = self.lock();
        let (inner, _) = self
            .0
            .changed
            .wait_timeout_while(inner, timeout, |i| kinds_generation(i, kinds) == seen)
            .unwrap_or_else(|p| p.into_inner());
        kinds_generation(&inner, kinds)
    }

    pub fn status(&self) -> AdapterStatus {
        let inner = self.lock();
        AdapterStatus {
            server: inner.server.clone(),
            kinds: inner
                .status
                .values()
                .map(|s| KindStatus {
                    objects: inner.tables.len(s.kind),
                    ..s.clone()
                })
                .collect(),
        }
    }

    /// Whether `kind`'s watch has listed once and is healthy now: its table
    /// is the API's present, not a memory of the past.
    pub fn current(&self, kind: Kind) -> bool {
        let inner = self.lock();
        let s = &inner.status[&kind];
        s.synced && s.healthy
    }

    pub fn node(&self) -> Option<NodeInfo> {
        self.lock().tables.nodes.values().next().cloned()
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodInfo> {
        self.lock()
            .tables
            .pods
            .get(&ObjKey::new(namespace, name))
            .cloned()
    }

    pub fn namespace(&self, name: &str) -> Option<NamespaceInfo> {
        self.lock()
            .tables
            .namespaces
            .get(&ObjKey::cluster(name))
            .cloned()
    }

    /// The pod joined with its namespace's labels (`None` until seen).
    pub fn workload(&self, namespace: &str, name: &str) -> Option<Workload> {
        let inner = self.lock();
        let pod = inner.tables.pods.get(&ObjKey::new(namespace, name))?;
        Some(workload_of(&inner.tables, pod))
    }

    pub fn workloads(&self) -> Vec<Workload> {
        let inner = self.lock();
        inner
            .tables
            .pods
            .values()
            .map(|p| workload_of(&inner.tables, p))
            .collect()
    }

    /// Every pod the pod watch holds (this node's, or the cluster's with
    /// `AdapterConfig::all_pods`).
    pub fn pods(&self) -> Vec<PodInfo> {
        self.lock().tables.pods.values().cloned().collect()
    }

    pub fn namespaces(&self) -> Vec<NamespaceInfo> {
        self.lock().tables.namespaces.values().cloned().collect()
    }

    /// Whether `kind`'s watch has listed at least once (its table may be
    /// a memory now, but not an empty start).
    pub fn synced(&self, kind: Kind) -> bool {
        self.lock().status[&kind].synced
    }

    pub fn policies(&self) -> Vec<NetPolicy> {
        self.lock().tables.policies.values().cloned().collect()
    }

    /// Every ClusterNetworkPolicy, by name.
    pub fn cluster_policies(&self) -> Vec<weft_policy::ClusterNetworkPolicy> {
        self.lock()
            .tables
            .cluster_policies
            .values()
            .cloned()
            .collect()
    }

    /// A feed of what changed among the Services and their slices (see
    /// [`ServiceFeed`]); its first take is everything.
    pub fn service_feed(&self) -> ServiceFeed {
        ServiceFeed::new(self.0.clone())
    }

    pub fn services(&self) -> Vec<Service> {
        self.lock().tables.services.values().cloned().collect()
    }

    /// Every EndpointSlice with its labels (the Service load balancer reads
    /// slices whole: headless labels, one slice's ports per backend).
    pub fn endpoint_slices(&self) -> Vec<EndpointSliceInfo> {
        self.lock().tables.slices.values().cloned().collect()
    }

    /// Every backend of a Service, from all its EndpointSlices (an address
    /// in two slices, as during a slice handover, counts once).
    pub fn endpoints(&self, namespace: &str, service: &str) -> Vec<Endpoint> {
        let inner = self.lock();
        let mut out: Vec<Endpoint> = inner
            .tables
            .slices
            .values()
            .filter(|s| s.namespace == namespace && s.service.as_deref() == Some(service))
            .flat_map(|s| s.endpoints.iter().cloned())
            .collect();
        out.sort();
        out.dedup_by(|a, b| (a.addr, a.port, a.proto) == (b.addr, b.port, b.proto));
        out
    }
}

fn workload_of(t: &Tables, pod: &PodInfo) -> Workload {
    Workload {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone(),
        labels: pod.labels.clone(),
        namespace_labels: t
            .namespaces
            .get(&ObjKey::cluster(pod.namespace.clone()))
            .map(|n| n.labels.clone()),
        ips: pod.ips.clone(),
        named_ports: pod.named_ports.clone(),
        host_network: pod.host_network,
    }
}
