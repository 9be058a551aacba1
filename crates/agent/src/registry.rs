//! The node registry and the routes that follow it.
//!
//! Every weftd registers its node under `/weft/cluster/v1/nodes/<name>` on a
//! lease it keeps alive: the node's underlay addresses and VTEP MAC. Who owns
//! which block, and which addresses of a block another node borrowed, is in
//! IPAM's records. A reconciler follows both and makes the kernel's routes to
//! every other node's blocks exactly what they say, through the data-path
//! seam: a node that stops renewing its lease disappears from everyone's
//! routes when the lease expires; a block claimed anywhere appears everywhere
//! within the watch latency.
//!
//! # What is watched, and why
//!
//! Only `/weft/cluster/v1/`: the node registrations and IPAM's route
//! summaries (`/weft/cluster/v1/routes/<block>`, [`RouteSummary`]: a block's
//! owner and borrowed addresses, written in the block's own commit only when
//! they change). Not the block records: those are ~10 KB each and rewritten
//! on every allocation, so watching them sent every allocation anywhere to
//! every node, costing each weftd and etcd CPU per pod started in the
//! cluster, for nothing routing needed.
//!
//! On every (re)list the reconciler first lists the block records (the
//! authority, and the only source for blocks written before summaries
//! existed), then lists `/weft/cluster/v1/` and applies it over them (a
//! summary replaces what the block record said), then watches
//! `/weft/cluster/v1/` from the *block* listing's revision: the events
//! between the two listings are replayed over the second one and end in the
//! same state, and a block deleted in between (its summary deleted in the
//! same commit) is not left routed.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use weft_datapath::{Datapath, PeerNode, RoutingMode};
use weft_ipam::{escape_cidr, RouteSummary, BLOCKS_PREFIX, ROUTES_PREFIX};
use weft_store::{EventKind, Store, StoreError, WatchMessage};

pub mod kube;

/// Where nodes register.
pub use weft_store::NODES_PREFIX;
/// The reconciler watches this prefix: the nodes and IPAM's route
/// summaries ([`ROUTES_PREFIX`]), small keys written only when routes change.
const WATCH_PREFIX: &str = "/weft/cluster/v1/";
/// Changes arriving within this window are applied in one sync.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// A node that leaves the view keeps its routes this long first: a weftd
/// restarting re-registers by deleting its old record and creating a new
/// one, and two writes can lie further apart than [`DEBOUNCE`] on a busy
/// store (seen: 600 ms at load 30), which cut its pods off in between. A
/// node that really died is noticed only at its lease's expiry anyway.
const NODE_GONE_GRACE: Duration = Duration::from_secs(2);

/// How long to wait before syncing a change of the peers from `before` to
/// `after`: longer when a node left, so that a re-registration undoes it.
fn sync_delay(before: &[PeerNode], after: &[PeerNode]) -> Duration {
    let left = before
        .iter()
        .any(|b| !after.iter().any(|a| a.name == b.name));
    if left {
        NODE_GONE_GRACE
    } else {
        DEBOUNCE
    }
}

/// What a node publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    #[serde(default)]
    pub underlay_v4: Option<Ipv4Addr>,
    #[serde(default)]
    pub underlay_v6: Option<Ipv6Addr>,
    /// Lower-case colon-separated MAC of the node's VXLAN device, when it
    /// runs the overlay.
    #[serde(default)]
    pub vtep_mac: Option<String>,
    /// weft version, for `weft status` across a cluster.
    #[serde(default)]
    pub version: String,
}

/// The part of an IPAM block record the registry needs (read on a relist
/// only): who owns the block, and which of its addresses other nodes
/// borrowed.
#[derive(Debug, Deserialize)]
struct BlockOwner {
    cidr: IpNet,
    #[serde(default)]
    affinity: Option<String>,
    #[serde(default)]
    allocations: BTreeMap<u32, BorrowedBy>,
}

#[derive(Debug, Deserialize)]
struct BorrowedBy {
    /// Set only when a node other than the block's owner holds the address.
    #[serde(default)]
    node: Option<String>,
}

impl From<BlockOwner> for RouteSummary {
    fn from(b: BlockOwner) -> RouteSummary {
        RouteSummary {
            cidr: b.cidr,
            affinity: b.affinity,
            borrowed: b
                .allocations
                .into_iter()
                .filter_map(|(o, a)| Some((o, a.node?)))
                .collect(),
        }
    }
}

/// Address `ordinal` of `block`, as a host route (/32 or /128).
fn host_net(block: &IpNet, ordinal: u32) -> Option<IpNet> {
    match block {
        IpNet::V4(n) => {
            let a = u32::from(n.network()).checked_add(ordinal)?;
            Some(IpNet::from(std::net::IpAddr::V4(Ipv4Addr::from(a))))
        }
        IpNet::V6(n) => {
            let a = u128::from(n.network()).checked_add(u128::from(ordinal))?;
            Some(IpNet::from(std::net::IpAddr::V6(Ipv6Addr::from(a))))
        }
    }
}

/// What the reconciler knows: nodes by name, block owners by block, and
/// borrowed addresses (a host route each, to the borrowing node: more
/// specific than its block's route, so longest-prefix match sends traffic to
/// where the pod really is).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub nodes: BTreeMap<String, NodeRecord>,
    pub blocks: BTreeMap<IpNet, String>,
    pub borrowed: BTreeMap<IpNet, (IpNet, String)>,
}

impl ClusterView {
    /// Applies one stored key (a node, a route summary or a block record)
    /// or its deletion. A summary and a block record of the same block
    /// replace each other: whichever comes last says what the block routes.
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        if let Some(name) = key.strip_prefix(NODES_PREFIX) {
            match value.and_then(|v| serde_json::from_slice::<NodeRecord>(v).ok()) {
                Some(rec) => {
                    self.nodes.insert(name.to_string(), rec);
                }
                None => {
                    self.nodes.remove(name);
                }
            }
        } else if let Some(escaped) = key.strip_prefix(ROUTES_PREFIX) {
            self.forget(escaped);
            if let Some(s) = value.and_then(|v| RouteSummary::decode(v).ok()) {
                self.learn(s);
            }
        } else if let Some(escaped) = key.strip_prefix(BLOCKS_PREFIX) {
            self.forget(escaped);
            if let Some(b) = value.and_then(|v| serde_json::from_slice::<BlockOwner>(v).ok()) {
                self.learn(b.into());
            }
        }
    }

    /// Drops what the view knew of the block whose key ends in `escaped`.
    fn forget(&mut self, escaped: &str) {
        self.blocks.retain(|cidr, _| escape_cidr(cidr) != escaped);
        self.borrowed
            .retain(|_, (block, _)| escape_cidr(block) != escaped);
    }

    fn learn(&mut self, s: RouteSummary) {
        if let Some(owner) = s.affinity {
            self.blocks.insert(s.cidr, owner);
        }
        for (ordinal, node) in s.borrowed {
            if let Some(host) = host_net(&s.cidr, ordinal) {
                self.borrowed.insert(host, (s.cidr, node));
            }
        }
    }

    /// The other nodes with their blocks, as the data path wants them. A
    /// block whose owner is not registered (gone, lease expired) is not
    /// routed: nobody would answer for it.
    pub fn peers(&self, me: &str) -> Vec<PeerNode> {
        self.nodes
            .values()
            .filter(|n| n.name != me)
            .map(|n| PeerNode {
                name: n.name.clone(),
                underlay_v4: n.underlay_v4,
                underlay_v6: n.underlay_v6,
                vtep_mac: n.vtep_mac.as_deref().and_then(crate::endpoint::parse_mac),
                blocks: self
                    .blocks
                    .iter()
                    .filter(|(_, owner)| **owner == n.name)
                    .map(|(cidr, _)| *cidr)
                    .chain(
                        self.borrowed
                            .iter()
                            .filter(|(_, (_, holder))| *holder == n.name)
                            .map(|(host, _)| *host),
                    )
                    .collect(),
            })
            .collect()
    }
}

/// What the registration thread reports: every renewal, or that the store
/// was found fenced by `weft store migrate` after a (re-)registration, when
/// the thread stops renewing and ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    Live,
    /// The store was moved to this one: this weftd must stop writing.
    Fenced(String),
}

/// Where `weft store migrate` moved the cluster, if it moved it away from
/// `store` (its fence).
pub fn fence(store: &dyn Store) -> Result<Option<String>, StoreError> {
    Ok(store.get(weft_store::MIGRATION_FENCE_KEY)?.map(|kv| {
        serde_json::from_slice::<serde_json::Value>(&kv.value)
            .ok()
            .and_then(|v| v["moved_to"].as_str().map(String::from))
            .unwrap_or_else(|| "another store".into())
    }))
}

/// Registers `rec` under `prefix` on a lease of `ttl` and keeps it alive
/// until the process ends. A lost lease (the store was away longer than
/// the TTL) is replaced by a new registration.
///
/// Every registration, the first and each one after a lost lease, is
/// checked against the migration fence once it is in the store: `weft
/// store migrate` refuses while a registration exists and fences before
/// its last checks, so either the migration sees this one and fails, or
/// this check sees the fence. A fenced store ends the thread with
/// [`Registration::Fenced`] (the lease then expires); the caller must stop
/// writing.
pub fn start_registration(
    store: Arc<dyn Store>,
    prefix: &'static str,
    rec: NodeRecord,
    ttl: Duration,
) -> std::sync::mpsc::Receiver<Registration> {
    start_registration_observed(store, prefix, rec, ttl, Box::new(|_| {}))
}

/// [`start_registration`], calling `renewed(sent_at_ms)` after every
/// successful grant or renewal of the lease with the wall-clock time (ms
/// since the epoch, as [`weft_ipam::SystemClock`]) its request was sent:
/// the lease lives at least until then + TTL (the IPAM journal's gate).
pub fn start_registration_observed(
    store: Arc<dyn Store>,
    prefix: &'static str,
    rec: NodeRecord,
    ttl: Duration,
    renewed: Box<dyn Fn(u64) + Send>,
) -> std::sync::mpsc::Receiver<Registration> {
    use weft_ipam::Clock;
    let (registered, first) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("registry".into())
        .spawn(move || {
            let key = format!("{prefix}{}", rec.name);
            let value = serde_json::to_vec(&rec).expect("node record serialises");
            let mut lease = None;
            // a registration made but not yet checked against the fence
            let mut unchecked = false;
            loop {
                let sent = weft_ipam::SystemClock.now_ms();
                let step = match lease {
                    Some(id) => store.keep_alive(id).map(|()| id),
                    None => register(&*store, &key, &value, ttl).inspect(|_| unchecked = true),
                };
                match step {
                    Ok(id) => {
                        lease = Some(id);
                        if !unchecked {
                            renewed(sent);
                        }
                        if unchecked {
                            match fence(&*store) {
                                Ok(Some(to)) => {
                                    tracing::error!(node = %rec.name, moved_to = %to, "the store was migrated while this node registered; stopping");
                                    let _ = registered.send(Registration::Fenced(to));
                                    return;
                                }
                                Ok(None) => {
                                    unchecked = false;
                                    // not before: a fenced store takes no
                                    // journaled allocation
                                    renewed(sent);
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "cannot check the store's migration fence; retrying");
                                    std::thread::sleep(ttl / 3);
                                    continue;
                                }
                            }
                        }
                        let _ = registered.send(Registration::Live);
                    }
                    Err(StoreError::LeaseNotFound { .. }) => {
                        tracing::warn!(node = %rec.name, "node lease lost; registering again");
                        lease = None;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew the node registration; retrying")
                    }
                }
                std::thread::sleep(ttl / 3);
            }
        })
        .expect("spawn registry thread");
    first
}

fn register(store: &dyn Store, key: &str, value: &[u8], ttl: Duration) -> Result<u64, StoreError> {
    let lease = store.grant_lease(ttl)?;
    // a record left by this node's previous run is replaced (same name)
    let _ = store.delete(key, None)?;
    match store.create(key, value, Some(lease))? {
        Ok(_) => {
            tracing::info!(key, ttl_s = ttl.as_secs(), "node registered");
            Ok(lease)
        }
        Err(_) => Err(StoreError::Unavailable {
            reason: format!("{key} was registered by someone else at the same moment"),
        }),
    }
}

/// Keeps this node's routes to every other node's blocks in line with the
/// store, until the process ends; the nodes from the store's registrations,
/// or from `nodes` (the Node objects) when given.
pub fn start_reconciler(
    store: Arc<dyn Store>,
    datapath: Arc<dyn Datapath>,
    me: String,
    mode: RoutingMode,
    device: String,
    mut nodes: Option<kube::NodeFeed>,
) {
    std::thread::Builder::new()
        .name("routes".into())
        .spawn(move || loop {
            if let Err(e) =
                reconcile_until_lost(&*store, &*datapath, &me, mode, &device, &mut nodes)
            {
                tracing::warn!(error = %e, "route reconciler lost the store; re-listing in 1 s");
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .expect("spawn route reconciler");
}

/// How often the reconciler looks at the Node feed (next to the store's
/// watch, which it waits on).
const FEED_POLL: Duration = Duration::from_millis(100);

/// Applies a stored key to the view; node keys only when the nodes come
/// from the store.
fn apply_stored(view: &mut ClusterView, key: &str, value: Option<&[u8]>, from_store: bool) {
    if from_store || !key.starts_with(NODES_PREFIX) {
        view.apply(key, value);
    }
}

/// Lists, syncs, then follows the watch until it ends (compaction, lost
/// connection); the caller starts over with a fresh list.
fn reconcile_until_lost(
    store: &dyn Store,
    datapath: &dyn Datapath,
    me: &str,
    mode: RoutingMode,
    device: &str,
    feed: &mut Option<kube::NodeFeed>,
) -> Result<(), StoreError> {
    let from_store = feed.is_none();
    // Blocks first, then nodes and summaries over them; the watch replays
    // what changed since the block listing (see the module docs).
    let blocks = store.list(BLOCKS_PREFIX)?;
    let cluster = store.list(WATCH_PREFIX)?;
    let mut view = ClusterView::default();
    for kv in blocks.kvs.iter().chain(&cluster.kvs) {
        apply_stored(&mut view, &kv.key, Some(&kv.value), from_store);
    }
    if let Some(f) = feed.as_mut() {
        f.poll();
        view.nodes = f.records().clone();
    }
    sync(datapath, me, mode, device, &view);
    let watch = store.watch(WATCH_PREFIX, blocks.revision)?;
    let mut sync_at: Option<Instant> = None;
    let idle = if from_store {
        Duration::from_secs(3600)
    } else {
        FEED_POLL
    };
    // the peers as of the last change seen (not necessarily synced yet)
    let mut seen = view.peers(me);
    loop {
        let wait = match sync_at {
            Some(t) => t.saturating_duration_since(Instant::now()).min(idle),
            None => idle,
        };
        let mut changed = false;
        match watch.rx.recv_timeout(wait) {
            Ok(WatchMessage::Event(ev)) => {
                let value = (ev.kind == EventKind::Put).then_some(ev.kv.value.as_slice());
                apply_stored(&mut view, &ev.kv.key, value, from_store);
                changed = true;
            }
            Ok(WatchMessage::Compacted { compact_revision }) => {
                return Err(StoreError::Unavailable {
                    reason: format!("watch compacted at {compact_revision}"),
                })
            }
            Ok(WatchMessage::Closed { reason }) => return Err(StoreError::Unavailable { reason }),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(StoreError::Unavailable {
                    reason: "watch ended".into(),
                })
            }
        }
        if let Some(f) = feed.as_mut() {
            if f.poll() {
                view.nodes = f.records().clone();
                changed = true;
            }
        }
        if changed {
            let after = view.peers(me);
            if after != seen {
                // the earliest of the pending deadlines: the sync then
                // takes the whole view as it is at that moment
                let at = Instant::now() + sync_delay(&seen, &after);
                sync_at = Some(sync_at.map_or(at, |t| t.min(at)));
                seen = after;
            }
        }
        if sync_at.is_some_and(|t| Instant::now() >= t) {
            sync_at = None;
            sync(datapath, me, mode, device, &view);
        }
    }
}

fn sync(datapath: &dyn Datapath, me: &str, mode: RoutingMode, device: &str, view: &ClusterView) {
    let peers = view.peers(me);
    match datapath.sync_peers(mode, device, &peers) {
        Ok(r) => tracing::info!(
            peers = peers.len(),
            added = r.added,
            removed = r.removed,
            "routes to other nodes synced"
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot sync routes to other nodes; will retry on the next change")
        }
    }
}

#[cfg(test)]
mod tests;
