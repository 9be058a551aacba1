//! One reconcile round: the view's pods, namespaces and policies compiled,
//! cut to this node (its ipcache, its endpoints), planned against what the
//! maps hold and written through the seam. Only what the maps took counts
//! as applied; the next round plans the rest again.
//!
//! Endpoints are this node's CNI endpoints, named by their pod. An endpoint
//! made by a kubelet (the runtime passed the pod's namespace, name and UID)
//! whose pod the compiler does not know gets the fail-closed state: isolated
//! both ways, only its own node let in (what the spec always allows), until
//! a round that knows the pod replaces it. Endpoints of other runtimes
//! (podman, cnitool, `weft lab pod add`) are no pod an API policy could
//! select, and get no policy state.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use weft_datapath::policy::{PolicyEndpoint, PolicyMaps};
use weft_datapath::DatapathError;
use weft_policy::{
    plan, AllowedBy, Compiled, Direction, EndpointPolicy, EndpointRef, Identity, IdentityAllocator,
    Incremental, PolicyKey, PolicyRef, RuleIds,
};

use super::inputs::{inputs, Snapshot};

/// The isolating "policy" of the fail-closed state (its empty namespace
/// cannot be a real policy's).
pub fn fail_closed_ref() -> PolicyRef {
    PolicyRef {
        namespace: String::new(),
        name: "fail-closed: pod not known to weftd yet".into(),
    }
}

/// Whether `ep` is compiled in audit (see `weft_policy::audit`).
fn audited(state: &Compiled, ep: &EndpointRef) -> bool {
    state.endpoints.get(ep).is_some_and(|e| e.audit)
}

/// A CNI endpoint of this node, for the maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEndpoint {
    pub pod: EndpointRef,
    /// The pod's UID as the runtime passed it ("" when it did not).
    pub uid: String,
    pub id: u32,
    pub ips: Vec<IpAddr>,
}

impl LocalEndpoint {
    /// `audit` from the compiled state (an endpoint only audited
    /// policies select).
    fn maps(&self, audit: bool) -> PolicyEndpoint {
        PolicyEndpoint {
            id: self.id,
            addresses: self.ips.clone(),
            audit,
        }
    }

    /// Made by a kubelet: a pod the API will show.
    fn made_by_kubelet(&self) -> bool {
        !self.pod.namespace.is_empty() && !self.pod.name.is_empty() && !self.uid.is_empty()
    }
}

/// What the last rounds did, for `weft policy list` and the logs.
#[derive(Debug, Clone, Default)]
pub struct RoundReport {
    pub rounds: u64,
    pub last_writes: usize,
    pub last_micros: u64,
    /// Of `last_micros`: the compile (the rest is the cut to this node,
    /// the plan and the map writes).
    pub last_compile_micros: u64,
    /// Endpoints the last round compiled (all of them on a whole compile).
    pub last_recompiled: usize,
    /// Endpoints the last round planned map writes for: only those the
    /// incremental compile touched, or every local one (the full path).
    pub last_planned: usize,
    /// Why the last round compiled the whole cluster; `None`: only the
    /// endpoints its change could affect.
    pub last_whole: Option<&'static str>,
    /// Periodic whole compiles that found the incremental state differing
    /// (a bug: logged, and the whole compile's state is used).
    pub drifts: u64,
    /// The last round's error (allocation or a map write), if it failed.
    pub last_error: Option<String>,
    pub fail_closed: Vec<EndpointRef>,
}

/// The seam behind a box (weftd's) is a seam too.
pub struct DynMaps(pub Box<dyn PolicyMaps>);

impl PolicyMaps for DynMaps {
    fn apply(
        &mut self,
        ops: &[weft_policy::MapOp],
        endpoints: weft_datapath::policy::EndpointLookup<'_>,
    ) -> Result<usize, DatapathError> {
        self.0.apply(ops, endpoints)
    }
    fn replace(
        &mut self,
        state: &Compiled,
        endpoints: weft_datapath::policy::EndpointLookup<'_>,
    ) -> Result<usize, DatapathError> {
        self.0.replace(state, endpoints)
    }
    fn write_endpoint(
        &mut self,
        state: &Compiled,
        endpoint: &EndpointRef,
        ep: &PolicyEndpoint,
    ) -> Result<usize, DatapathError> {
        self.0.write_endpoint(state, endpoint, ep)
    }
    fn rule_hits(&self) -> Result<BTreeMap<u32, u64>, DatapathError> {
        self.0.rule_hits()
    }
    fn rule_ids(&self) -> &RuleIds {
        self.0.rule_ids()
    }
}

/// Identity garbage collection runs after a whole-cluster compile at most
/// this often (the allocator's grace period decides when an identity goes).
pub const GC_INTERVAL: Duration = Duration::from_secs(30);

/// The whole cluster is compiled at start and at least this often (a
/// safety net under the incremental compile: each such round first
/// updates incrementally and compares).
pub const WHOLE_INTERVAL: Duration = Duration::from_secs(60);

pub struct Reconciler<M: PolicyMaps> {
    node: String,
    maps: M,
    alloc: Box<dyn IdentityAllocator + Send>,
    /// When identities were last collected.
    last_gc: Option<Instant>,
    /// What the maps hold (this node's endpoints and ipcache), when
    /// `in_step`.
    applied: Compiled,
    /// The maps are known to hold `applied`. Not at start (pinned maps hold
    /// an earlier agent's state) and not after a failed write (the seam
    /// does not say how far it got): the next round then replaces the
    /// maps' whole content instead of writing a plan.
    in_step: bool,
    /// The endpoint id each pod of `applied` was written under: a pod
    /// re-made under its name (a StatefulSet's) has a new one, which no
    /// plan shows (the compiled state is the same), so it is rewritten.
    written_as: BTreeMap<EndpointRef, u32>,
    /// This node's endpoints as the last round with a snapshot that wrote
    /// the maps saw them: while they are the same, a round plans only the
    /// endpoints the incremental compile touched ([`Self::scoped_view`]).
    seen_local: Option<BTreeMap<EndpointRef, LocalEndpoint>>,
    /// The compiled cluster (`explain`, `show`, `list`), kept up to date
    /// change by change.
    compiler: Incremental,
    /// When the whole cluster was last compiled.
    last_whole: Option<Instant>,
    pub report: RoundReport,
    /// The address this node sends from towards a pod address (a seam for
    /// tests; see [`source_towards`]).
    pub source_towards: fn(IpAddr) -> Option<IpAddr>,
}

/// The address this node sends from towards `dst`: a UDP socket's connect
/// routes without sending anything.
pub fn source_towards(dst: IpAddr) -> Option<IpAddr> {
    let any = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect((dst, 9)).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

impl<M: PolicyMaps> Reconciler<M> {
    pub fn new(node: String, maps: M, alloc: Box<dyn IdentityAllocator + Send>) -> Self {
        Reconciler {
            node,
            maps,
            alloc,
            last_gc: None,
            applied: Compiled::default(),
            in_step: false,
            written_as: BTreeMap::new(),
            seen_local: None,
            compiler: Incremental::new(),
            last_whole: None,
            report: RoundReport::default(),
            source_towards,
        }
    }

    pub fn maps(&self) -> &M {
        &self.maps
    }

    pub fn applied(&self) -> &Compiled {
        &self.applied
    }

    pub fn compiled(&self) -> &Compiled {
        self.compiler.compiled()
    }

    /// Releases identities the last whole-cluster compile did not use
    /// (see `identities.rs`), at most every [`GC_INTERVAL`]. A failure is
    /// logged: the next pass retries, and nothing is released meanwhile.
    fn collect_identities(&mut self) {
        if self.last_gc.is_some_and(|t| t.elapsed() < GC_INTERVAL) {
            return;
        }
        self.last_gc = Some(Instant::now());
        match self
            .alloc
            .collect(&self.compiler.compiled().identities, SystemTime::now())
        {
            Ok(c) if c != Default::default() => tracing::info!(
                marked = c.marked,
                revived = c.revived,
                released = c.released,
                "identities collected"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "identity collection failed; retrying later"),
        }
    }

    /// Whether a collection pass is due (the loop runs a round for it when
    /// nothing else changes).
    pub fn collection_due(&self) -> bool {
        self.last_gc.is_none_or(|t| t.elapsed() >= GC_INTERVAL)
    }

    /// Whether `pod`'s state is in the maps (compiled or fail-closed).
    pub fn holds(&self, pod: &EndpointRef) -> bool {
        self.applied.endpoints.contains_key(pod)
    }

    /// A round. `snap` is `None` while the watches have not listed once:
    /// then nothing known is touched (pinned maps keep enforcing what they
    /// hold; pods older than this weftd keep what they have) and only the
    /// pod being admitted gets the fail-closed state. Returns the number of
    /// map writes.
    pub fn round(
        &mut self,
        snap: Option<&Snapshot>,
        local: &[LocalEndpoint],
        admitting: Option<&EndpointRef>,
    ) -> Result<usize, String> {
        let started = Instant::now();
        let local = dedupe(local, snap);
        let res = match snap {
            Some(snap) => {
                let ips = local
                    .values()
                    .map(|l| ((l.pod.namespace.clone(), l.pod.name.clone()), l.ips.clone()))
                    .collect();
                let (policies, inventory) = inputs(snap, &self.node, &ips);
                let was_rejected = self.compiler.compiled().rejected.clone();
                if let Err(e) = self.compile(&policies, &snap.cluster, &inventory) {
                    return self.finish(started, Err(e.to_string()));
                }
                self.report.last_compile_micros = started.elapsed().as_micros() as u64;
                let full = self.compiler.compiled();
                for (p, why) in full.rejected.iter().filter(|r| !was_rejected.contains(r)) {
                    tracing::warn!(policy = %p, reason = %why,
                        "NetworkPolicy compiled fail-closed: it isolates the pods it selects and allows nothing until it is fixed");
                }
                let scoped = self.scoped_view(full, &local);
                let want = match scoped {
                    Some(_) => None,
                    None => Some(self.local_view(full, &local)),
                };
                // not on a CNI ADD's path: a pass reads every record
                if admitting.is_none() {
                    self.collect_identities();
                }
                match (scoped, want) {
                    (Some((old, new)), _) => {
                        let lookup =
                            |ep: &EndpointRef| local.get(ep).map(|l| l.maps(audited(&new, ep)));
                        let ops = plan(&old, &new);
                        self.report.last_planned = new.endpoints.len();
                        match self.maps.apply(&ops, &lookup) {
                            Ok(n) => {
                                let mut want = std::mem::take(&mut self.applied);
                                want.endpoints.extend(new.endpoints);
                                Ok((n, want))
                            }
                            Err(e) => Err(e),
                        }
                    }
                    (None, Some(want)) => {
                        let lookup =
                            |ep: &EndpointRef| local.get(ep).map(|l| l.maps(audited(&want, ep)));
                        self.report.last_planned = want.endpoints.len();
                        let res = if self.in_step {
                            let ops = plan(&self.applied, &want);
                            self.maps.apply(&ops, &lookup)
                        } else {
                            self.maps.replace(&want, &lookup)
                        };
                        res.map(|n| (n, want))
                    }
                    (None, None) => unreachable!("one of the two views is made"),
                }
            }
            None => {
                // only what is new: the fail-closed state of pods the maps
                // do not hold; everything else stays as the maps have it
                let mut want = self.applied.clone();
                want.endpoints.retain(|ep, _| local.contains_key(ep));
                let new = admitting.and_then(|a| local.get(a)).filter(|l| {
                    l.made_by_kubelet() && !self.applied.endpoints.contains_key(&l.pod)
                });
                if let Some(l) = new {
                    want.endpoints.insert(l.pod.clone(), fail_closed());
                    want.nodes.insert(l.pod.clone(), self.node.clone());
                    // the node exemption needs the node's own address in
                    // the ipcache: the one it sends to the pod from
                    let cache = want.ipcache.entry(self.node.clone()).or_default();
                    for a in &l.ips {
                        if let Some(src) = (self.source_towards)(*a) {
                            cache
                                .entry(ipnet::IpNet::from(src))
                                .or_insert(Identity::HOST);
                        }
                    }
                }
                let ops = plan(&self.applied, &want);
                let lookup = |ep: &EndpointRef| local.get(ep).map(|l| l.maps(audited(&want, ep)));
                self.maps.apply(&ops, &lookup).map(|n| (n, want))
            }
        };
        let res = match res {
            Ok((mut n, want)) => {
                if snap.is_some() {
                    self.in_step = true;
                }
                self.applied = want;
                let mut rewrite = Ok(());
                for (ep, l) in &local {
                    let was = self.written_as.get(ep).copied();
                    if self.applied.endpoints.contains_key(ep) && was.is_some_and(|w| w != l.id) {
                        match self.maps.write_endpoint(
                            &self.applied,
                            ep,
                            &l.maps(audited(&self.applied, ep)),
                        ) {
                            Ok(w) => n += w,
                            Err(e) => rewrite = Err(e),
                        }
                    }
                }
                self.written_as = local
                    .iter()
                    .filter(|(ep, _)| self.applied.endpoints.contains_key(*ep))
                    .map(|(ep, l)| (ep.clone(), l.id))
                    .collect();
                self.seen_local = snap.is_some().then_some(local);
                match rewrite {
                    Ok(()) => Ok(n),
                    Err(e) => {
                        self.in_step = false;
                        Err(format!("writing the policy maps: {e}"))
                    }
                }
            }
            Err(e) => {
                self.in_step = false;
                self.seen_local = None;
                Err(format!("writing the policy maps: {e}"))
            }
        };
        self.finish(started, res)
    }

    /// Brings the compiled cluster to these inputs: incrementally, or
    /// whole at start and every [`WHOLE_INTERVAL`], when the incremental
    /// state is first updated and compared with the whole compile's.
    fn compile(
        &mut self,
        policies: &[weft_policy::NetworkPolicy],
        cluster: &[weft_policy::ClusterNetworkPolicy],
        inventory: &weft_policy::Inventory,
    ) -> Result<(), weft_policy::PolicyError> {
        let due = self
            .last_whole
            .is_none_or(|t| t.elapsed() >= WHOLE_INTERVAL);
        let mut update =
            self.compiler
                .update(policies, cluster, inventory, self.alloc.as_mut(), false)?;
        if due && update.full.is_none() {
            let incremental = self.compiler.compiled().clone();
            update =
                self.compiler
                    .update(policies, cluster, inventory, self.alloc.as_mut(), true)?;
            if &incremental != self.compiler.compiled() {
                self.report.drifts += 1;
                tracing::warn!(
                    "the incremental policy compile differed from the whole one; the whole one is used (please report this)"
                );
            }
        }
        if update.full.is_some() {
            self.last_whole = Some(Instant::now());
        }
        self.report.last_recompiled = update.recompiled;
        self.report.last_whole = update.full;
        Ok(())
    }

    fn finish(&mut self, started: Instant, res: Result<usize, String>) -> Result<usize, String> {
        self.report.rounds += 1;
        self.report.last_writes = *res.as_ref().unwrap_or(&0);
        self.report.last_micros = started.elapsed().as_micros() as u64;
        self.report.last_error = res.as_ref().err().cloned();
        self.report.fail_closed = self
            .applied
            .endpoints
            .iter()
            .filter(|(_, p)| p.ingress_isolated_by == Some(fail_closed_ref()))
            .map(|(ep, _)| ep.clone())
            .collect();
        res
    }

    /// The local view's change since `applied` when only the endpoints
    /// the incremental compile touched can differ: those endpoints as the
    /// maps hold them and as they are now (nothing else in either, so the
    /// plan reads only them). `None` asks for the full path: after a whole
    /// compile (at start and every [`WHOLE_INTERVAL`]), when the maps are
    /// not known to hold `applied`, when this node's endpoints or its
    /// ipcache changed (identities moving change every endpoint's plan),
    /// or when an endpoint appears in or leaves the view.
    fn scoped_view(
        &self,
        full: &Compiled,
        local: &BTreeMap<EndpointRef, LocalEndpoint>,
    ) -> Option<(Compiled, Compiled)> {
        let touched = self.compiler.touched()?;
        if !self.in_step
            || self.seen_local.as_ref() != Some(local)
            || full.ipcache.get(&self.node) != self.applied.ipcache.get(&self.node)
        {
            return None;
        }
        let (mut old, mut new) = (Compiled::default(), Compiled::default());
        for (ep, l) in touched.iter().filter_map(|ep| Some((ep, local.get(ep)?))) {
            match (
                self.applied.endpoints.get(ep),
                self.local_policy(full, ep, l),
            ) {
                (Some(o), Some(n)) => {
                    old.endpoints.insert(ep.clone(), o.clone());
                    new.endpoints.insert(ep.clone(), n);
                }
                (None, None) => {}
                _ => return None,
            }
        }
        Some((old, new))
    }

    /// What the maps hold for local endpoint `ep` (see [`Self::local_view`]);
    /// `None`: no policy state.
    fn local_policy(
        &self,
        full: &Compiled,
        ep: &EndpointRef,
        l: &LocalEndpoint,
    ) -> Option<EndpointPolicy> {
        let here = full.nodes.get(ep).is_some_and(|n| *n == self.node);
        match full.endpoints.get(ep) {
            Some(p) if here => Some(p.clone()),
            _ if l.made_by_kubelet() => Some(fail_closed()),
            _ => None,
        }
    }

    /// The compiled state as this node's maps hold it: its ipcache and its
    /// endpoints (the compiled ones, and fail-closed ones for kubelet pods
    /// the compiler does not know), with their addresses; nothing else
    /// (identities, summaries) is in the maps or read by the plan.
    fn local_view(
        &self,
        full: &Compiled,
        local: &BTreeMap<EndpointRef, LocalEndpoint>,
    ) -> Compiled {
        // only what the maps hold: the plan reads nothing else
        let mut want = Compiled::default();
        if let Some(cache) = full.ipcache.get(&self.node) {
            want.ipcache.insert(self.node.clone(), cache.clone());
        }
        for (ep, l) in local {
            let Some(policy) = self.local_policy(full, ep, l) else {
                continue;
            };
            for a in &l.ips {
                want.addresses.insert(*a, ep.clone());
            }
            want.nodes.insert(ep.clone(), self.node.clone());
            want.endpoints.insert(ep.clone(), policy);
        }
        want
    }
}

/// Isolated both ways; only the pod's own node is let in.
fn fail_closed() -> EndpointPolicy {
    let mut p = EndpointPolicy {
        ingress_isolated_by: Some(fail_closed_ref()),
        egress_isolated_by: Some(fail_closed_ref()),
        entries: BTreeMap::new(),
        audit: false,
    };
    p.entries.insert(
        PolicyKey::all_protocols(Identity::HOST, Direction::Ingress),
        AllowedBy::LocalNode,
    );
    p
}

/// One endpoint per pod name: when two hold one name (a pod re-made while
/// the old sandbox lingers), the one whose UID the API shows, else the
/// newest (highest id).
fn dedupe(
    local: &[LocalEndpoint],
    snap: Option<&Snapshot>,
) -> BTreeMap<EndpointRef, LocalEndpoint> {
    let api_uid = |ep: &EndpointRef| {
        snap.and_then(|s| {
            s.pods
                .iter()
                .find(|p| p.namespace == ep.namespace && p.name == ep.name)
                .map(|p| p.uid.clone())
        })
    };
    let mut out: BTreeMap<EndpointRef, LocalEndpoint> = BTreeMap::new();
    for l in local
        .iter()
        .filter(|l| !l.pod.namespace.is_empty() && !l.pod.name.is_empty())
    {
        let better = match out.get(&l.pod) {
            None => true,
            Some(have) => {
                let uid = api_uid(&l.pod);
                let (mine, theirs) = (
                    uid.as_deref() == Some(l.uid.as_str()),
                    uid.as_deref() == Some(have.uid.as_str()),
                );
                mine && !theirs || (mine == theirs && l.id > have.id)
            }
        };
        if better {
            out.insert(l.pod.clone(), l.clone());
        }
    }
    out
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
