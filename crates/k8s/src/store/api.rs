//! The store's calls to the API server, async, on the store's own runtime:
//! the head (`WeftStore`) and the per-kind objects, commits by the intent
//! protocol of `mod.rs`, and consistent reads.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
    Preconditions, VersionMatch,
};
use kube::{Api, Client};
use tokio::sync::Mutex;
use weft_store::{LeaseId, Revision, StoreError, StoreResult, TxnConflict, TxnOp};

use super::doc::{validate, Doc, Entry};
use super::layout::{kinds_for, locate, Kind, KINDS};
use super::lease::Leases;
use super::objects::{apply_to, overlay, plan, Change, Head, Intent, Shard};

/// weft's API group and the head's kind.
pub const GROUP: &str = "weft.dev";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "WeftStore";
pub const PLURAL: &str = "weftstores";
/// The label that ties an object or a Lease to its store.
pub const STORE_LABEL: &str = "weft.dev/store";
/// On the objects holding a key attached to a lease (what the reaper lists).
pub const LEASED_LABEL: &str = "weft.dev/leased";
/// How many times a commit starts again after losing the race for the head
/// before it says the store is unavailable.
const MAX_ATTEMPTS: usize = 200;
/// A process forgets the objects it cached beyond this many.
const MAX_CACHED: usize = 4096;

/// One op of a commit, owned (it crosses to the runtime's thread).
#[derive(Debug, Clone)]
pub enum Op {
    Create(String, Vec<u8>, Option<LeaseId>),
    Update(String, Vec<u8>, Revision),
    Put(String, Vec<u8>),
    Delete(String, Option<Revision>),
}

impl Op {
    pub fn owned(op: &TxnOp<'_>) -> Op {
        match *op {
            TxnOp::Create { key, value, lease } => Op::Create(key.into(), value.into(), lease),
            TxnOp::Update {
                key,
                value,
                expected,
            } => Op::Update(key.into(), value.into(), expected),
            TxnOp::Put { key, value } => Op::Put(key.into(), value.into()),
            TxnOp::Delete { key, expected } => Op::Delete(key.into(), expected),
        }
    }

    pub fn txn(&self) -> TxnOp<'_> {
        match self {
            Op::Create(key, value, lease) => TxnOp::Create {
                key,
                value,
                lease: *lease,
            },
            Op::Update(key, value, expected) => TxnOp::Update {
                key,
                value,
                expected: *expected,
            },
            Op::Put(key, value) => TxnOp::Put { key, value },
            Op::Delete(key, expected) => TxnOp::Delete {
                key,
                expected: *expected,
            },
        }
    }
}

pub(crate) fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        reason: format!("{what}: {e}; check that the API server is up and weft's store CRDs are installed (kubectl apply -k deploy/kubernetes/crds/store)"),
    }
}

pub(crate) fn status(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

pub(crate) fn parse_rv(meta: &ObjectMeta) -> StoreResult<Revision> {
    meta.resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .ok_or_else(|| unavailable("a store object", "no numeric resourceVersion"))
}

fn corrupt(obj: &DynamicObject, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        path: obj.metadata.name.clone().unwrap_or_default(),
        reason: e.to_string(),
    }
}

/// The head as read: its intent (written at `rev`, when there is one).
pub(crate) fn parse_head(obj: &DynamicObject) -> StoreResult<(Head, Revision)> {
    let rev = parse_rv(&obj.metadata)?;
    let spec = obj.data.get("spec").cloned().unwrap_or_default();
    let head = serde_json::from_value(spec).map_err(|e| corrupt(obj, e))?;
    Ok((head, rev))
}

fn parse_shard(obj: &DynamicObject) -> StoreResult<(Shard, Revision)> {
    let rev = parse_rv(&obj.metadata)?;
    let spec = obj.data.get("spec").cloned().unwrap_or_default();
    let shard = serde_json::from_value(spec).map_err(|e| corrupt(obj, e))?;
    Ok((shard, rev))
}

/// The revision an object's state is as of: the commit that last wrote
/// it, or for an empty placeholder never written, its creation (etcd's
/// revision of it, later than every intent written before: a late applier
/// of such an intent leaves the placeholder alone).
fn as_of(shard: &Shard, resource_version: Revision) -> Revision {
    if shard.rev == 0 {
        resource_version
    } else {
        shard.rev
    }
}

/// An object as this process knows it: content and `resourceVersion`, or
/// absent.
type Known = Option<(Shard, Revision)>;
type ObjId = (Kind, String);

/// What a process remembers between its commits: the head revision it
/// last left without an intent, and the objects as of that revision. A
/// commit trusts it only through its head compare-and-swap: when anyone
/// committed since, that write fails and the cache is dropped.
///
/// A commit that writes nothing (a conflict, a no-op) trusts it only if
/// the head was still `head` at some moment after the commit was called:
/// `verified` is when a request that found (or made) the head at `head`
/// was sent. Commits of this process queue on the cache's lock, so one
/// such request answers for every commit that was already waiting: the
/// contenders that lost to a commit learn so without a read each.
struct Cache {
    head: Revision,
    objects: HashMap<ObjId, Known>,
    verified: Instant,
}

/// The store's state on the runtime's side.
pub struct Inner {
    pub(crate) name: String,
    pub(crate) heads: Api<DynamicObject>,
    kinds: BTreeMap<Kind, Api<DynamicObject>>,
    pub(crate) leases: Leases,
    /// Held across a commit: one commit of this process at a time, so its
    /// own commits do not race each other.
    cache: Mutex<Option<Cache>>,
}

pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL)
}

fn kind_resource(kind: Kind) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, kind.name()),
        kind.plural(),
    )
}

impl Inner {
    pub fn new(client: Client, name: &str, namespace: &str) -> Inner {
        let kinds = KINDS
            .iter()
            .map(|k| (*k, Api::all_with(client.clone(), &kind_resource(*k))))
            .collect();
        Inner {
            name: name.to_string(),
            heads: Api::all_with(client.clone(), &resource()),
            kinds,
            leases: Leases::new(client, name, namespace),
            cache: Mutex::new(None),
        }
    }

    fn api(&self, kind: Kind) -> &Api<DynamicObject> {
        &self.kinds[&kind]
    }

    /// The head and its revision, read from etcd through the API server (a
    /// GET without resourceVersion is a quorum read). A missing head is
    /// created (an empty store); a head of the single-object layout is
    /// moved into per-kind objects first.
    pub async fn read_head(&self) -> StoreResult<(Head, Revision)> {
        for _ in 0..MAX_ATTEMPTS {
            let obj = match self.heads.get_opt(&self.name).await {
                Ok(Some(obj)) => obj,
                Ok(None) => {
                    let mut obj = DynamicObject::new(&self.name, &resource());
                    obj.data = serde_json::json!({ "spec": Head::new(None) });
                    match self.heads.create(&PostParams::default(), &obj).await {
                        Ok(o) => return parse_head(&o),
                        Err(e) if status(&e) == Some(409) => continue,
                        Err(e) => return Err(unavailable("cannot create the store", e)),
                    }
                }
                Err(e) => return Err(unavailable("cannot read the store", e)),
            };
            let spec = obj.data.get("spec");
            if spec.is_some_and(|s| s.get("entries").is_some_and(|e| e.is_object())) {
                self.migrate(&obj).await?;
                continue;
            }
            return parse_head(&obj);
        }
        Err(unavailable("the store", "changed under every read"))
    }

    /// Moves a store of the single-object layout into per-kind objects: one
    /// intent with every key (revisions kept), written by compare-and-swap
    /// on the old document (a weftd of the old layout writing meanwhile
    /// makes it start again), then applied like any other.
    async fn migrate(&self, obj: &DynamicObject) -> StoreResult<()> {
        let rev = parse_rv(&obj.metadata)?;
        let spec = obj.data.get("spec").cloned().unwrap_or_default();
        let mut doc: Doc = serde_json::from_value(spec).map_err(|e| corrupt(obj, e))?;
        doc.resolve(rev);
        tracing::info!(store = %self.name, keys = doc.entries.len(), "moving the store from one object into per-kind objects");
        let changes: Vec<Change> = doc
            .entries
            .into_iter()
            .map(|(k, e)| Change { k, e: Some(e) })
            .collect();
        let mut known = HashMap::new();
        for c in &changes {
            known.insert(locate(&self.name, &c.k), None);
        }
        let intent = Intent {
            migration: true,
            changes,
        };
        if !self.placeholders(&intent, &mut known).await? {
            return Err(StoreError::Corrupt {
                path: format!("{PLURAL}/{}", self.name),
                reason: "per-kind objects with keys exist beside a single-object store; delete them (kubectl delete ipamblocks,ippools,weftnodes,securityidentities,weftrecords -l weft.dev/store=<name>) and start again".into(),
            });
        }
        if let Some(r) = self.write_head(Some(intent.clone()), rev).await? {
            self.finish(&intent, r, &mut known).await?;
        }
        Ok(())
    }

    /// Replaces the head at `rev` with one holding `intent` (or none);
    /// `None` when someone wrote it first.
    async fn write_head(
        &self,
        intent: Option<Intent>,
        rev: Revision,
    ) -> StoreResult<Option<Revision>> {
        let mut obj = DynamicObject::new(&self.name, &resource());
        obj.data = serde_json::json!({ "spec": Head::new(intent) });
        obj.metadata.resource_version = Some(rev.to_string());
        match self.heads.replace(&self.name, &PostParams::default(), &obj).await {
            Ok(o) => parse_rv(&o.metadata).map(Some),
            Err(e) if matches!(status(&e), Some(409) | Some(404)) => Ok(None),
            Err(e) if matches!(status(&e), Some(413) | Some(422)) || e.to_string().contains("too large") => {
                Err(StoreError::Invalid {
                    reason: format!("the API server refused the store's commit ({e}); one commit must stay under etcd's request limit"),
                })
            }
            Err(e) => Err(unavailable("cannot write the store", e)),
        }
    }

    async fn get_object(&self, id: &ObjId) -> StoreResult<Known> {
        match self.api(id.0).get_opt(&id.1).await {
            Ok(Some(o)) => parse_shard(&o).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(unavailable("cannot read a store object", e)),
        }
    }

    fn object(&self, id: &ObjId, shard: &Shard) -> DynamicObject {
        let mut obj = DynamicObject::new(&id.1, &kind_resource(id.0));
        let mut labels = BTreeMap::from([(STORE_LABEL.to_string(), self.name.clone())]);
        if shard.leased() {
            labels.insert(LEASED_LABEL.into(), "true".into());
        }
        obj.metadata.labels = Some(labels);
        obj.data = serde_json::json!({ "spec": shard });
        obj
    }

    /// Creates an empty object (`rev` 0: as of its creation, see
    /// [`as_of`]) for every object the intent writes that `known` says is
    /// absent, so that applying never creates one (see `mod.rs`). `false`
    /// when one turned out to hold keys: the picture is stale.
    async fn placeholders(
        &self,
        intent: &Intent,
        known: &mut HashMap<ObjId, Known>,
    ) -> StoreResult<bool> {
        let mut ids: Vec<ObjId> = intent
            .changes
            .iter()
            .map(|c| locate(&self.name, &c.k))
            .collect();
        ids.sort();
        ids.dedup();
        for id in ids {
            if !matches!(known.get(&id), Some(None)) {
                continue;
            }
            let shard = Shard::default();
            let now = match self
                .api(id.0)
                .create(&PostParams::default(), &self.object(&id, &shard))
                .await
            {
                Ok(o) => parse_shard(&o)?,
                Err(e) if status(&e) == Some(409) => match self.get_object(&id).await? {
                    Some(s) => s,
                    None => return Ok(false),
                },
                Err(e) => return Err(unavailable("cannot create a store object", e)),
            };
            if !now.0.entries.is_empty() {
                return Ok(false);
            }
            known.insert(id, Some(now));
        }
        Ok(true)
    }

    /// Creates object `id` empty, as [`Inner::placeholders`] would: the
    /// new object, or `None` when it exists already.
    async fn try_placeholder(&self, id: &ObjId) -> StoreResult<Option<(Shard, Revision)>> {
        let empty = self.object(id, &Shard::default());
        match self.api(id.0).create(&PostParams::default(), &empty).await {
            Ok(o) => parse_shard(&o).map(Some),
            Err(e) if status(&e) == Some(409) => Ok(None),
            Err(e) => Err(unavailable("cannot create a store object", e)),
        }
    }

    /// Applies the intent written at `rev` to every object it changes
    /// (idempotent: any client may, any number of times), then clears it
    /// from the head. `known` holds what the caller knows of the objects
    /// and takes what was written. The head's revision after the clear, or
    /// `None` when someone else moved the head on.
    async fn finish(
        &self,
        intent: &Intent,
        rev: Revision,
        known: &mut HashMap<ObjId, Known>,
    ) -> StoreResult<Option<Revision>> {
        let mut by_object: BTreeMap<ObjId, Vec<&Change>> = BTreeMap::new();
        for c in &intent.changes {
            by_object
                .entry(locate(&self.name, &c.k))
                .or_default()
                .push(c);
        }
        for (id, changes) in by_object {
            let mut cur = match known.remove(&id) {
                Some(k) => k,
                None => self.get_object(&id).await?,
            };
            let end = loop {
                // absent: an applier emptied and deleted it already
                let Some((shard, orv)) = cur else { break None };
                if as_of(&shard, orv) >= rev {
                    break Some((shard, orv));
                }
                let next = apply_to(id.0, &shard, &changes, rev);
                let api = self.api(id.0);
                let res = if next.entries.is_empty() {
                    let dp = DeleteParams {
                        preconditions: Some(Preconditions {
                            resource_version: Some(orv.to_string()),
                            uid: None,
                        }),
                        ..DeleteParams::default()
                    };
                    api.delete(&id.1, &dp).await.map(|_| None)
                } else {
                    let mut obj = self.object(&id, &next);
                    obj.metadata.resource_version = Some(orv.to_string());
                    api.replace(&id.1, &PostParams::default(), &obj)
                        .await
                        .map(|o| Some((next, parse_rv(&o.metadata).unwrap_or(0))))
                };
                match res {
                    Ok(done) => break done,
                    Err(e) if matches!(status(&e), Some(409) | Some(404)) => {
                        cur = self.get_object(&id).await?;
                    }
                    Err(e) if matches!(status(&e), Some(413) | Some(422)) => {
                        return Err(StoreError::Invalid {
                            reason: format!("the API server refused a store object ({e})"),
                        })
                    }
                    Err(e) => return Err(unavailable("cannot write a store object", e)),
                }
            };
            known.insert(id, end);
        }
        self.write_head(None, rev).await
    }

    /// The head at a revision with no intent pending (finishing one left
    /// by another client, or by one that died), with nothing cached.
    async fn settled(&self) -> StoreResult<Cache> {
        for _ in 0..MAX_ATTEMPTS {
            let sent = Instant::now();
            let (head, rev) = self.read_head().await?;
            let Some(intent) = head.intent else {
                return Ok(Cache {
                    head: rev,
                    objects: HashMap::new(),
                    verified: sent,
                });
            };
            let mut known = HashMap::new();
            let sent = Instant::now();
            if let Some(r) = self.finish(&intent, rev, &mut known).await? {
                return Ok(Cache {
                    head: r,
                    objects: known,
                    verified: sent,
                });
            }
        }
        Err(unavailable("the store", "changed under every read"))
    }

    /// One atomic commit: `Ok((revision, existed))`, `existed` saying for
    /// each op whether its key existed.
    pub async fn commit(
        &self,
        ops: Vec<Op>,
    ) -> StoreResult<Result<(Revision, Vec<bool>), TxnConflict>> {
        let txn: Vec<TxnOp<'_>> = ops.iter().map(Op::txn).collect();
        validate(&txn)?;
        for op in &ops {
            if let Op::Create(_, _, Some(lease)) = op {
                if !self.leases.alive_id(*lease).await? {
                    return Err(StoreError::LeaseNotFound { lease: *lease });
                }
            }
        }
        let called = Instant::now();
        let mut guard = self.cache.lock().await;
        for _ in 0..MAX_ATTEMPTS {
            let mut cache = match guard.take() {
                Some(c) => c,
                None => self.settled().await?,
            };
            let mut current = BTreeMap::new();
            let mut fetched = false;
            for op in &txn {
                let id = locate(&self.name, op.key());
                if !cache.objects.contains_key(&id) {
                    // a lone create (it cannot conflict where the object
                    // does not exist) makes its placeholder at once,
                    // saving the read's round trip when it is new
                    let made = match &txn[..] {
                        [TxnOp::Create { .. }] => self.try_placeholder(&id).await?,
                        _ => None,
                    };
                    let k = match made {
                        Some(made) => Some(made),
                        None => self.get_object(&id).await?,
                    };
                    cache.objects.insert(id.clone(), k);
                    fetched = true;
                }
                if let Some(Some((shard, _))) = cache.objects.get(&id) {
                    if let Some(e) = shard.entries.get(op.key()) {
                        current.insert(op.key().to_string(), e.clone());
                    }
                }
            }
            // the cache may be stale: only the head unchanged since this
            // commit was called (and the objects read) makes a conflict or
            // a no-op the answer
            let plan = match plan(&current, &txn) {
                Err(conflict) => {
                    if self.still(&mut cache, called, fetched).await? {
                        *guard = Some(cache);
                        return Ok(Err(conflict));
                    }
                    continue;
                }
                Ok(p) if p.changes.is_empty() => {
                    if self.still(&mut cache, called, fetched).await? {
                        let rev = cache.head;
                        *guard = Some(cache);
                        return Ok(Ok((rev, p.existed)));
                    }
                    continue;
                }
                Ok(p) => p,
            };
            let intent = Intent {
                migration: false,
                changes: plan.changes,
            };
            if !self.placeholders(&intent, &mut cache.objects).await? {
                continue;
            }
            let Some(rev) = self.write_head(Some(intent.clone()), cache.head).await? else {
                continue;
            };
            // decided: from here on the commit stands, whoever applies it
            let mut objects = std::mem::take(&mut cache.objects);
            let sent = Instant::now();
            if let Some(head) = self.finish(&intent, rev, &mut objects).await? {
                if objects.len() <= MAX_CACHED {
                    *guard = Some(Cache {
                        head,
                        objects,
                        verified: sent,
                    });
                }
            }
            return Ok(Ok((rev, plan.existed)));
        }
        Err(StoreError::Unavailable {
            reason: format!(
                "the store's head changed under {MAX_ATTEMPTS} commits in a row; retry"
            ),
        })
    }

    /// Whether the cache held at some moment after `called`: known when a
    /// request sent since found the head at the cache's revision and no
    /// object was read since (`fetched`), else asked (one head read).
    async fn still(&self, cache: &mut Cache, called: Instant, fetched: bool) -> StoreResult<bool> {
        if !fetched && cache.verified >= called {
            return Ok(true);
        }
        let sent = Instant::now();
        if self.read_head().await?.1 != cache.head {
            return Ok(false);
        }
        cache.verified = sent;
        Ok(true)
    }

    /// One key now: from the head's pending intent when it has the key,
    /// else from the key's object.
    pub async fn get(&self, key: &str) -> StoreResult<Option<Entry>> {
        let (head, rev) = self.read_head().await?;
        if let Some(c) = head
            .intent
            .as_ref()
            .and_then(|i| i.changes.iter().find(|c| c.k == key))
        {
            return Ok(c.e.as_ref().map(|e| super::objects::resolved(e, rev)));
        }
        let id = locate(&self.name, key);
        Ok(self
            .get_object(&id)
            .await?
            .and_then(|(s, _)| s.entries.get(key).cloned()))
    }

    /// Every key under `prefix` at one revision: the objects as etcd held
    /// them at the head's revision (a list at exactly that
    /// resourceVersion: every earlier commit applied, none later) with the
    /// head's intent laid over. `leased_only`: only objects with a leased key.
    pub async fn snapshot(
        &self,
        prefix: &str,
        leased_only: bool,
    ) -> StoreResult<(BTreeMap<String, Entry>, Revision)> {
        let (head, rev) = self.read_head().await?;
        let mut labels = format!("{STORE_LABEL}={}", self.name);
        if leased_only {
            labels.push_str(&format!(",{LEASED_LABEL}=true"));
        }
        let lp = ListParams::default()
            .labels(&labels)
            .at(&rev.to_string())
            .matching(VersionMatch::Exact);
        // the kinds at once: one round trip, not one per kind
        let lists = futures::future::try_join_all(
            kinds_for(prefix)
                .into_iter()
                .map(|kind| self.api(kind).list(&lp)),
        )
        .await
        .map_err(|e| unavailable("cannot list the store's objects", e))?;
        let mut entries = BTreeMap::new();
        for obj in lists.iter().flat_map(|l| &l.items) {
            let (shard, _) = parse_shard(obj)?;
            entries.extend(
                shard
                    .entries
                    .into_iter()
                    .filter(|(k, _)| k.starts_with(prefix)),
            );
        }
        if let Some(intent) = &head.intent {
            overlay(&mut entries, intent, rev);
            entries.retain(|k, _| k.starts_with(prefix));
        }
        Ok((entries, rev))
    }
}
