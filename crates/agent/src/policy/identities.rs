//! Security identities agreed on by every node, through the cluster store
//! (the embedded store on one node, etcd in a cluster; the Kubernetes API
//! backend plugs in behind the same `Store` trait).
//!
//! Layout, all under `/weft/identities/v1/`:
//!
//! - `keys/<sha256 of the key's JSON>` -> `{"id": N, "key": <IdentityKey>}`
//! - `ids/<N>` -> the same record (the number is taken)
//! - `next` -> the next number to hand out
//!
//! A new identity is one transaction: create both records if absent and
//! move `next` on by compare-and-swap. Two nodes racing for one key: one
//! commit wins, the other conflicts on `keys/…` and reads the winner's
//! number. Racing for two keys: one conflicts on `next` and retries with
//! the next number. Numbers are never reused.
//!
//! Garbage collection ([`StoreAllocator::collect`], after a whole-cluster
//! compile): a record no compile uses is marked with the time
//! (`unused_since`), a marked one in use again is unmarked, and one marked
//! for the whole grace period is deleted, by compare-and-swap on the
//! revision that carried the mark. An allocator that finds a marked record
//! unmarks it (compare-and-swap too) before using its number, so a racing
//! delete and a revival cannot both succeed: whichever commits first wins
//! and the other retries (the allocator then makes a new number). The cache
//! forgets keys a pass found unused, so a released key is read again.
//!
//! Node-relative identities (`Host` and `RemoteNode` with a CIDR piece: a
//! node's own addresses inside a policy's ipBlock) are only in the compile
//! of the nodes whose addresses they cover (a node's view holds its own
//! Node object alone). Another node marking one would be undone by its node
//! on its next pass, and so on every 30 s for as long as both run; so a
//! node marks only those it used itself since it started, once it stops
//! using them, and leaves one alone for good when another node revives it.
//! Idle, a pass writes nothing. One whose node went for good before it
//! stopped using it stays (at most two per CIDR piece of the policies).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use weft_policy::{Collected, Identity, IdentityAllocator, IdentityKey, PolicyError, Subject};
use weft_store::{KeyValue, Store, TxnOp};

pub const PREFIX: &str = "/weft/identities/v1/";
/// Conflicts on `next` before giving up this round (each one means another
/// node allocated meanwhile: progress is being made).
const MAX_TRIES: usize = 64;
/// How long an identity stays unused before it is released (a pod
/// restarting with the same labels keeps its number meanwhile, and every
/// node's compile has long caught up with the API).
pub const GRACE: Duration = Duration::from_secs(300);

#[derive(Serialize, Deserialize)]
struct Record {
    id: u32,
    key: IdentityKey,
    /// Seconds since the epoch when a collection pass first found it
    /// unused (`None`: in use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unused_since: Option<u64>,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The store-backed allocator with a cache of what it has seen (a key's
/// number never changes, so the cache is never stale).
pub struct StoreAllocator {
    store: Arc<dyn Store>,
    cache: BTreeMap<IdentityKey, Identity>,
    grace: Duration,
    /// Node-relative keys this node used since it started (see the module
    /// doc: the only ones of their kind it may mark), and whether it has
    /// marked each since.
    used_here: BTreeMap<IdentityKey, bool>,
}

/// A key only the nodes whose addresses it covers compile.
fn node_relative(key: &IdentityKey) -> bool {
    matches!(key.subject, Subject::Host | Subject::RemoteNode) && key.cidr.is_some()
}

fn digest(key: &IdentityKey) -> Result<String, PolicyError> {
    let json = serde_json::to_vec(key).map_err(|e| PolicyError::Allocator(e.to_string()))?;
    let d = ring::digest::digest(&ring::digest::SHA256, &json);
    Ok(d.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

fn store_err(e: impl std::fmt::Display) -> PolicyError {
    PolicyError::Allocator(format!("identity store: {e}"))
}

impl StoreAllocator {
    pub fn new(store: Arc<dyn Store>) -> StoreAllocator {
        StoreAllocator {
            store,
            cache: BTreeMap::new(),
            grace: GRACE,
            used_here: BTreeMap::new(),
        }
    }

    /// With another grace period (tests).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Identities in the cache (allocated or looked up by this node).
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    fn decode(&self, value: &[u8], key: &IdentityKey) -> Result<Record, PolicyError> {
        let r: Record = serde_json::from_slice(value).map_err(|e| {
            store_err(format!(
                "unreadable identity record ({e}); remove {PREFIX} keys/… for it"
            ))
        })?;
        if &r.key != key {
            return Err(store_err(format!(
                "identity {} is recorded for another key ({}) than {key} (a hash collision?)",
                r.id, r.key
            )));
        }
        Ok(r)
    }

    /// The number of an existing record, unmarked first if a collection
    /// pass marked it (`None`: the record changed or went meanwhile, read
    /// again).
    fn take(&self, kv: &KeyValue, key: &IdentityKey) -> Result<Option<Identity>, PolicyError> {
        let mut r = self.decode(&kv.value, key)?;
        if r.unused_since.is_none() {
            return Ok(Some(Identity(r.id)));
        }
        r.unused_since = None;
        let bytes = serde_json::to_vec(&r).map_err(store_err)?;
        Ok(self
            .store
            .update(&kv.key, &bytes, kv.mod_revision)
            .map_err(store_err)?
            .ok()
            .map(|_| Identity(r.id)))
    }

    fn lookup_or_create(&self, key: &IdentityKey) -> Result<Identity, PolicyError> {
        let at = format!("{PREFIX}keys/{}", digest(key)?);
        let next_key = format!("{PREFIX}next");
        for _ in 0..MAX_TRIES {
            if let Some(kv) = self.store.get(&at).map_err(store_err)? {
                match self.take(&kv, key)? {
                    Some(id) => return Ok(id),
                    None => continue,
                }
            }
            let next = self.store.get(&next_key).map_err(store_err)?;
            let (n, expected) = match &next {
                Some(kv) => {
                    let n: u32 = std::str::from_utf8(&kv.value)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .ok_or_else(|| store_err(format!("{next_key} is not a number")))?;
                    (n.max(Identity::FIRST_ALLOCATED), Some(kv.mod_revision))
                }
                None => (Identity::FIRST_ALLOCATED, None),
            };
            let after = n
                .checked_add(1)
                .ok_or_else(|| store_err("identity space exhausted"))?;
            let record = serde_json::to_vec(&Record {
                id: n,
                key: key.clone(),
                unused_since: None,
            })
            .map_err(store_err)?;
            let after = after.to_string();
            let id_key = format!("{PREFIX}ids/{n}");
            let counter = match expected {
                Some(rev) => TxnOp::Update {
                    key: &next_key,
                    value: after.as_bytes(),
                    expected: rev,
                },
                None => TxnOp::Create {
                    key: &next_key,
                    value: after.as_bytes(),
                    lease: None,
                },
            };
            let ops = [
                TxnOp::Create {
                    key: &at,
                    value: &record,
                    lease: None,
                },
                TxnOp::Create {
                    key: &id_key,
                    value: &record,
                    lease: None,
                },
                counter,
            ];
            match self.store.commit(&ops).map_err(store_err)? {
                Ok(_) => return Ok(Identity(n)),
                // someone else gave this key its number: take theirs
                Err(c) if c.index == 0 => {
                    if let Some(kv) = c.current {
                        if let Some(id) = self.take(&kv, key)? {
                            return Ok(id);
                        }
                    }
                }
                // the number or the counter moved: another node allocated
                Err(_) => {}
            }
        }
        Err(store_err(format!(
            "gave up after {MAX_TRIES} conflicting allocations; retrying next round"
        )))
    }
}

impl IdentityAllocator for StoreAllocator {
    fn allocate(&mut self, key: &IdentityKey) -> Result<Identity, PolicyError> {
        if let Some(id) = key.reserved() {
            return Ok(id);
        }
        if let Some(id) = self.cache.get(key) {
            return Ok(*id);
        }
        let id = self.lookup_or_create(key)?;
        self.cache.insert(key.clone(), id);
        Ok(id)
    }

    fn collect(
        &mut self,
        in_use: &BTreeMap<Identity, IdentityKey>,
        now: SystemTime,
    ) -> Result<Collected, PolicyError> {
        // a key this pass finds unused is read from the store next time
        self.cache.retain(|k, id| in_use.get(id) == Some(k));
        for k in in_use.values().filter(|k| node_relative(k)) {
            self.used_here.insert(k.clone(), false);
        }
        let listing = self
            .store
            .list(&format!("{PREFIX}keys/"))
            .map_err(store_err)?;
        let mut done = Collected::default();
        for kv in &listing.kvs {
            let Ok(mut r) = serde_json::from_slice::<Record>(&kv.value) else {
                tracing::warn!(key = %kv.key, "unreadable identity record left alone; remove it if nothing uses it");
                continue;
            };
            let used = in_use.get(&Identity(r.id)) == Some(&r.key);
            if !used && node_relative(&r.key) {
                match self.used_here.get(&r.key) {
                    // another node's: its node judges it
                    None => continue,
                    // marked by this node, revived since: another's now
                    Some(true) if r.unused_since.is_none() => {
                        self.used_here.remove(&r.key);
                        continue;
                    }
                    Some(_) => {}
                }
            }
            match (used, r.unused_since) {
                (true, None) => {}
                (true, Some(_)) | (false, None) => {
                    r.unused_since = (!used).then(|| secs(now));
                    let bytes = serde_json::to_vec(&r).map_err(store_err)?;
                    // a conflict: another node or allocator got there first
                    if self
                        .store
                        .update(&kv.key, &bytes, kv.mod_revision)
                        .map_err(store_err)?
                        .is_ok()
                    {
                        if used {
                            done.revived += 1;
                        } else {
                            done.marked += 1;
                            if let Some(m) = self.used_here.get_mut(&r.key) {
                                *m = true;
                            }
                        }
                    }
                }
                (false, Some(since)) => {
                    if secs(now).saturating_sub(since) < self.grace.as_secs() {
                        continue;
                    }
                    if self.release(kv, r.id)? {
                        done.released += 1;
                        self.used_here.remove(&r.key);
                    }
                }
            }
        }
        Ok(done)
    }
}

impl StoreAllocator {
    /// Deletes the record `kv` (and its number's) if it still carries the
    /// revision the pass saw marked: an allocator that unmarked it since
    /// makes the delete fail.
    fn release(&self, kv: &KeyValue, id: u32) -> Result<bool, PolicyError> {
        let id_key = format!("{PREFIX}ids/{id}");
        let ops = [
            TxnOp::Delete {
                key: &kv.key,
                expected: Some(kv.mod_revision),
            },
            TxnOp::Delete {
                key: &id_key,
                expected: None,
            },
        ];
        Ok(self.store.commit(&ops).map_err(store_err)?.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use weft_policy::Subject;
    use weft_store::embedded::EmbeddedStore;

    fn pod(app: &str) -> IdentityKey {
        IdentityKey {
            subject: Subject::Pod {
                namespace: "x".into(),
                labels: [("app".to_string(), app.to_string())].into(),
                namespace_labels: BTreeMap::new(),
                named_ports: BTreeMap::new(),
            },
            cidr: None,
        }
    }

    #[test]
    fn same_key_same_number_across_allocators_and_restarts() {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
        let mut a = StoreAllocator::new(store.clone());
        let web = a.allocate(&pod("web")).unwrap();
        let db = a.allocate(&pod("db")).unwrap();
        assert_eq!(web, Identity(Identity::FIRST_ALLOCATED));
        assert_eq!(db, Identity(Identity::FIRST_ALLOCATED + 1));
        // another node (or this one restarted) with an empty cache
        let mut b = StoreAllocator::new(store);
        assert_eq!(b.allocate(&pod("db")).unwrap(), db);
        assert_eq!(b.allocate(&pod("web")).unwrap(), web);
        let key = IdentityKey {
            subject: Subject::World,
            cidr: None,
        };
        assert_eq!(b.allocate(&key).unwrap(), Identity::WORLD);
    }

    /// Two allocators on one store, racing over overlapping keys from
    /// threads: every key gets one number everywhere, and no number is
    /// given to two keys.
    #[test]
    fn racing_allocators_agree_and_never_share_a_number() {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
        let keys: Vec<IdentityKey> = (0..40).map(|i| pod(&format!("app{i}"))).collect();
        let run = |order: Vec<usize>| {
            let store = store.clone();
            let keys = keys.clone();
            std::thread::spawn(move || {
                let mut a = StoreAllocator::new(store);
                order
                    .into_iter()
                    .map(|i| (i, a.allocate(&keys[i]).unwrap()))
                    .collect::<BTreeMap<usize, Identity>>()
            })
        };
        let forward = run((0..40).collect());
        let backward = run((0..40).rev().collect());
        let interleaved = run((0..40).map(|i| (i * 7) % 40).collect());
        let a = forward.join().unwrap();
        let b = backward.join().unwrap();
        let c = interleaved.join().unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        let numbers: BTreeSet<Identity> = a.values().copied().collect();
        assert_eq!(numbers.len(), 40, "one number per key");
        assert!(numbers.iter().all(|n| n.0 >= Identity::FIRST_ALLOCATED));
    }

    #[test]
    fn a_record_for_another_key_is_an_error_not_a_silent_alias() {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
        let mut a = StoreAllocator::new(store.clone());
        a.allocate(&pod("web")).unwrap();
        // forge a collision: web's slot now claims to be db's
        let at = format!("{PREFIX}keys/{}", digest(&pod("db")).unwrap());
        let forged = serde_json::to_vec(&Record {
            id: 999,
            key: pod("web"),
            unused_since: None,
        })
        .unwrap();
        store.create(&at, &forged, None).unwrap().unwrap();
        let err = StoreAllocator::new(store).allocate(&pod("db")).unwrap_err();
        assert!(err.to_string().contains("another key"), "{err}");
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn records(store: &dyn Store) -> BTreeMap<u32, IdentityKey> {
        store
            .list(&format!("{PREFIX}keys/"))
            .unwrap()
            .kvs
            .iter()
            .map(|kv| {
                let r: Record = serde_json::from_slice(&kv.value).unwrap();
                (r.id, r.key)
            })
            .collect()
    }

    #[test]
    fn an_unused_identity_goes_after_the_grace_period_and_its_number_never_returns() {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
        let mut a = StoreAllocator::new(store.clone()).with_grace(Duration::from_secs(60));
        let web = a.allocate(&pod("web")).unwrap();
        let db = a.allocate(&pod("db")).unwrap();
        let in_use: BTreeMap<Identity, IdentityKey> = [(web, pod("web"))].into();
        let c = a.collect(&in_use, at(0)).unwrap();
        assert_eq!((c.marked, c.released), (1, 0));
        // within the grace period: still there, and a returning pod keeps
        // its number
        assert_eq!(a.collect(&in_use, at(59)).unwrap().released, 0);
        assert_eq!(records(&*store).get(&db.0), Some(&pod("db")));
        let mut b = StoreAllocator::new(store.clone()).with_grace(Duration::from_secs(60));
        assert_eq!(
            b.allocate(&pod("db")).unwrap(),
            db,
            "revived by its allocator"
        );
        let both: BTreeMap<Identity, IdentityKey> = [(web, pod("web")), (db, pod("db"))].into();
        assert_eq!(a.collect(&both, at(120)).unwrap(), Collected::default());
        // unused again: marked, then gone after the whole grace period
        assert_eq!(a.collect(&in_use, at(200)).unwrap().marked, 1);
        assert_eq!(a.collect(&in_use, at(259)).unwrap().released, 0);
        assert_eq!(a.collect(&in_use, at(260)).unwrap().released, 1);
        assert_eq!(records(&*store), [(web.0, pod("web"))].into());
        assert!(store
            .get(&format!("{PREFIX}ids/{}", db.0))
            .unwrap()
            .is_none());
        // the pass forgot it in its cache too: a new pod with those labels
        // gets a new number, on every node
        let again = a.allocate(&pod("db")).unwrap();
        assert!(again.0 > db.0 && again.0 > web.0, "{again} after {db}");
        assert_eq!(
            StoreAllocator::new(store).allocate(&pod("db")).unwrap(),
            again
        );
    }

    #[test]
    fn a_release_racing_a_revival_loses_to_it() {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
        let mut gc = StoreAllocator::new(store.clone()).with_grace(Duration::ZERO);
        let web = gc.allocate(&pod("web")).unwrap();
        gc.collect(&BTreeMap::new(), at(0)).unwrap();
        // the pass has read the marked record ...
        let seen = store
            .get(&format!("{PREFIX}keys/{}", digest(&pod("web")).unwrap()))
            .unwrap()
            .unwrap();
        // ... another node's allocator takes the number meanwhile ...
        let mut other = StoreAllocator::new(store.clone());
        assert_eq!(other.allocate(&pod("web")).unwrap(), web);
        // ... so the release, conditional on the marked revision, fails
        assert!(!gc.release(&seen, web.0).unwrap());
        assert_eq!(records(&*store).get(&web.0), Some(&pod("web")));
        // the other way round: released first, the revival retries and
        // makes a new number
        gc.collect(&BTreeMap::new(), at(1)).unwrap();
        let marked = store
            .get(&format!("{PREFIX}keys/{}", digest(&pod("web")).unwrap()))
            .unwrap()
            .unwrap();
        assert!(gc.release(&marked, web.0).unwrap());
        assert!(other.take(&marked, &pod("web")).unwrap().is_none());
        let fresh = StoreAllocator::new(store).allocate(&pod("web")).unwrap();
        assert!(fresh.0 > web.0);
    }

    /// Two allocators and one collector on one store (any backend: the
    /// store conformance style), racing: the collector sees the keys in
    /// use change under it and releases with no grace to speak of.
    /// Never does a number name two keys, a key in use lose its record,
    /// or two allocators disagree.
    pub(crate) fn two_allocators_and_a_collector(store: Arc<dyn Store>) {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Mutex;
        let keys: Vec<IdentityKey> = (0..16).map(|i| pod(&format!("app{i}"))).collect();
        // what the cluster's pods use right now (the collector's view)
        let used: Arc<Mutex<BTreeMap<IdentityKey, usize>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let collector = {
            let (store, used, stop) = (store.clone(), used.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut gc = StoreAllocator::new(store.clone()).with_grace(Duration::from_secs(2));
                let (mut total, mut t) = (Collected::default(), 0);
                // after the nodes stop: a few passes with nothing in use.
                // Bounded in time, not passes: a cap of 5000 passes ran out
                // before starved node threads finished (nothing marked)
                let deadline = std::time::Instant::now() + Duration::from_secs(120);
                let mut after = 0;
                while after < 4 && std::time::Instant::now() < deadline {
                    if stop.load(Ordering::SeqCst) {
                        after += 1;
                    }
                    // in use: the records of the keys pods use
                    let in_use: BTreeMap<Identity, IdentityKey> = {
                        let used = used.lock().unwrap();
                        records(&*store)
                            .into_iter()
                            .filter(|(_, k)| used.contains_key(k))
                            .map(|(n, k)| (Identity(n), k))
                            .collect()
                    };
                    let c = gc.collect(&in_use, at(t)).unwrap();
                    total.marked += c.marked;
                    total.revived += c.revived;
                    total.released += c.released;
                    t += 1;
                }
                total
            })
        };
        let node = |seed: usize| {
            let (store, used, keys) = (store.clone(), used.clone(), keys.clone());
            std::thread::spawn(move || {
                let mut seen: Vec<(IdentityKey, Identity)> = Vec::new();
                for round in 0..30 {
                    // a fresh cache each round (a node's own pass would
                    // empty it of what it stopped using)
                    let mut a = StoreAllocator::new(store.clone());
                    let mine: Vec<&IdentityKey> = keys
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !(i + round + seed).is_multiple_of(3))
                        .map(|(_, k)| k)
                        .collect();
                    // the pods exist (the view has them) before the compile
                    {
                        let mut u = used.lock().unwrap();
                        for k in &mine {
                            *u.entry((*k).clone()).or_default() += 1;
                        }
                    }
                    for k in &mine {
                        let id = a.allocate(k).unwrap();
                        seen.push(((*k).clone(), id));
                    }
                    // while in use, every record is there with its number
                    let recs = records(&*store);
                    for k in &mine {
                        let id = a.allocate(k).unwrap();
                        assert_eq!(recs.get(&id.0), Some(*k), "{k} lost {id} while in use");
                    }
                    let mut u = used.lock().unwrap();
                    for k in &mine {
                        let n = u.get_mut(*k).unwrap();
                        *n -= 1;
                        if *n == 0 {
                            u.remove(*k);
                        }
                    }
                }
                seen
            })
        };
        let (n1, n2) = (node(0), node(1));
        let mut seen = n1.join().unwrap();
        seen.extend(n2.join().unwrap());
        stop.store(true, Ordering::SeqCst);
        let total = collector.join().unwrap();
        let mut owner: BTreeMap<Identity, IdentityKey> = BTreeMap::new();
        for (k, id) in seen {
            let o = owner.entry(id).or_insert_with(|| k.clone());
            assert_eq!(*o, k, "number {id} given to two keys");
        }
        let (mut x, mut y) = (
            StoreAllocator::new(store.clone()),
            StoreAllocator::new(store),
        );
        for k in &keys {
            assert_eq!(x.allocate(k).unwrap(), y.allocate(k).unwrap());
        }
        assert!(total.marked > 0 && total.released > 0, "{total:?}");
    }

    /// A node's own addresses in a policy's CIDR piece: `Host`/`RemoteNode`
    /// keys only that node's compile has (each node's view holds only its
    /// own Node object).
    fn node_relative(subject: Subject, piece: &str) -> IdentityKey {
        IdentityKey {
            subject,
            cidr: Some(piece.parse().unwrap()),
        }
    }

    fn revision(store: &dyn Store) -> u64 {
        store.list(PREFIX).unwrap().revision
    }

    /// Three idle nodes collecting every 30 s for ten minutes: the pods'
    /// identities every node uses, and per node the node-relative ones of
    /// its own addresses (in three different CIDR pieces), which the other
    /// two nodes' compiles lack. Idle, nothing is written: a node leaves a
    /// node-relative identity it never used to the nodes that do (before,
    /// the others marked it every pass and its node revived it: 240 writes
    /// in these ten minutes, 24 a minute).
    /// The node that stops using one still releases it after the grace.
    #[test]
    fn idle_nodes_write_nothing_and_leave_each_others_node_identities_alone() {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
        let pieces = ["198.18.0.0/24", "198.18.1.0/24", "198.18.2.0/24"];
        let mut nodes: Vec<(StoreAllocator, BTreeMap<Identity, IdentityKey>)> = pieces
            .iter()
            .map(|piece| {
                let mut a = StoreAllocator::new(store.clone());
                let mut in_use = BTreeMap::new();
                for k in [
                    pod("web"),
                    pod("db"),
                    node_relative(Subject::Host, piece),
                    node_relative(Subject::RemoteNode, piece),
                ] {
                    in_use.insert(a.allocate(&k).unwrap(), k);
                }
                (a, in_use)
            })
            .collect();
        let before = revision(&*store);
        for pass in 0..20 {
            for (a, in_use) in &mut nodes {
                a.collect(in_use, at(1_000 + pass * 30)).unwrap();
            }
        }
        let writes = revision(&*store) - before;
        assert_eq!(writes, 0, "store writes in 10 idle minutes of 3 nodes");
        assert_eq!(records(&*store).len(), 2 + 2 * pieces.len());

        // node 0 stops using its Host identity: it marks it, the grace
        // passes, it goes (the others never touch it)
        let host0 = node_relative(Subject::Host, pieces[0]);
        nodes[0].1.retain(|_, k| *k != host0);
        for pass in 0..15 {
            for (a, in_use) in &mut nodes {
                a.collect(in_use, at(2_000 + pass * 30)).unwrap();
            }
        }
        let left = records(&*store);
        assert!(!left.values().any(|k| *k == host0), "{left:?}");
        assert_eq!(left.len(), 1 + 2 * pieces.len());
    }

    #[test]
    fn two_allocators_and_a_collector_on_the_embedded_store() {
        two_allocators_and_a_collector(Arc::new(EmbeddedStore::in_memory()));
    }
}
