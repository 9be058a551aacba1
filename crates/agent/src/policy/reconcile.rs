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
use std::time::Instant;

use weft_policy::{
    compile, plan, AllowedBy, Compiled, Direction, EndpointPolicy, EndpointRef, Identity,
    IdentityAllocator, MapOp, PolicyKey, PolicyRef,
};

use super::inputs::{inputs, Snapshot};
use super::seam::{PolicyEndpoint, PolicyMaps};

/// The isolating "policy" of the fail-closed state (its empty namespace
/// cannot be a real policy's).
pub fn fail_closed_ref() -> PolicyRef {
    PolicyRef {
        namespace: String::new(),
        name: "fail-closed: pod not known to weftd yet".into(),
    }
}

/// A CNI endpoint of this node, for the maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEndpoint {
    pub pod: EndpointRef,
    /// The pod's UID as the runtime passed it ("" when it did not).
    pub uid: String,
    pub id: u32,
    pub host_ifname: String,
    pub ips: Vec<IpAddr>,
}

impl LocalEndpoint {
    fn maps(&self) -> PolicyEndpoint {
        PolicyEndpoint {
            id: self.id,
            host_ifname: self.host_ifname.clone(),
            ips: self.ips.clone(),
        }
    }

    /// Made by a kubelet: a pod the API will show.
    fn from_kubelet(&self) -> bool {
        !self.pod.namespace.is_empty() && !self.pod.name.is_empty() && !self.uid.is_empty()
    }
}

/// What the last rounds did, for `weft policy list` and the logs.
#[derive(Debug, Clone, Default)]
pub struct RoundReport {
    pub rounds: u64,
    pub last_ops: usize,
    pub last_micros: u64,
    /// The last round's error (allocation or a map write), if it failed.
    pub last_error: Option<String>,
    pub fail_closed: Vec<EndpointRef>,
}

pub struct Reconciler {
    node: String,
    maps: Box<dyn PolicyMaps>,
    alloc: Box<dyn IdentityAllocator + Send>,
    /// What the maps hold (this node's endpoints and ipcache).
    applied: Compiled,
    /// The ids the endpoints of `applied` were written under.
    written_as: BTreeMap<EndpointRef, PolicyEndpoint>,
    /// The last whole-cluster compile (`explain`, `show`, `list`).
    full: Compiled,
    pub report: RoundReport,
}

impl Reconciler {
    pub fn new(
        node: String,
        maps: Box<dyn PolicyMaps>,
        alloc: Box<dyn IdentityAllocator + Send>,
    ) -> Reconciler {
        Reconciler {
            node,
            maps,
            alloc,
            applied: Compiled::default(),
            written_as: BTreeMap::new(),
            full: Compiled::default(),
            report: RoundReport::default(),
        }
    }

    pub fn applied(&self) -> &Compiled {
        &self.applied
    }

    pub fn compiled(&self) -> &Compiled {
        &self.full
    }

    /// Whether `pod`'s state is in the maps (compiled or fail-closed).
    pub fn holds(&self, pod: &EndpointRef) -> bool {
        self.applied.endpoints.contains_key(pod)
    }

    /// A round. `snap` is `None` while the watches have not listed once:
    /// then nothing known is touched (the maps keep enforcing what they
    /// hold) and only endpoints new to the maps get the fail-closed state.
    /// Returns the number of map writes.
    pub fn round(
        &mut self,
        snap: Option<&Snapshot>,
        local: &[LocalEndpoint],
    ) -> Result<usize, String> {
        let started = Instant::now();
        let local = dedupe(local, snap);
        let want = match snap {
            Some(snap) => {
                let ips = local
                    .values()
                    .map(|l| ((l.pod.namespace.clone(), l.pod.name.clone()), l.ips.clone()))
                    .collect();
                let (policies, inventory) = inputs(snap, &self.node, &ips);
                let full = match compile(&policies, &inventory, self.alloc.as_mut()) {
                    Ok(c) => c,
                    Err(e) => return self.failed(started, 0, e.to_string()),
                };
                for (p, why) in full
                    .rejected
                    .iter()
                    .filter(|r| !self.full.rejected.contains(r))
                {
                    tracing::warn!(policy = %p, reason = %why,
                        "NetworkPolicy compiled fail-closed: it isolates the pods it selects and allows nothing until it is fixed");
                }
                let want = self.local_view(&full, &local);
                self.full = full;
                want
            }
            None => {
                let mut want = self.applied.clone();
                for l in local
                    .values()
                    .filter(|l| !self.applied.endpoints.contains_key(&l.pod))
                {
                    if l.from_kubelet() {
                        want.endpoints.insert(l.pod.clone(), fail_closed());
                        want.nodes.insert(l.pod.clone(), self.node.clone());
                    }
                }
                // endpoints gone from this node are gone from the maps too
                want.endpoints.retain(|ep, _| local.contains_key(ep));
                want
            }
        };
        let mut writes = 0;
        // an endpoint whose pod name now belongs to another endpoint (a pod
        // re-made under its old name) is removed under its old id first
        let moved: Vec<EndpointRef> = self
            .written_as
            .iter()
            .filter(|(ep, old)| local.get(*ep).is_some_and(|l| l.id != old.id))
            .map(|(ep, _)| ep.clone())
            .collect();
        if !moved.is_empty() {
            let ops: Vec<MapOp> = moved
                .iter()
                .map(|ep| MapOp::EndpointGone {
                    endpoint: ep.clone(),
                })
                .collect();
            let old = self.written_as.clone();
            let res = self.maps.apply(&ops, &|ep| old.get(ep).cloned());
            let done = res.as_ref().map_or_else(|e| e.done, |_| ops.len());
            weft_policy::apply(&mut self.applied, &ops[..done]);
            for ep in &moved[..done] {
                self.written_as.remove(ep);
            }
            writes += done;
            if let Err(e) = res {
                return self.failed(started, writes, e.to_string());
            }
        }
        let ops = plan(&self.applied, &want);
        let known = self.written_as.clone();
        let ids = |ep: &EndpointRef| {
            local
                .get(ep)
                .map(LocalEndpoint::maps)
                .or_else(|| known.get(ep).cloned())
        };
        let res = self.maps.apply(&ops, &ids);
        let done = res.as_ref().map_or_else(|e| e.done, |_| ops.len());
        weft_policy::apply(&mut self.applied, &ops[..done]);
        writes += done;
        // the identities the entries name travel with them (for `show`)
        self.applied.identities = want.identities.clone();
        self.written_as
            .retain(|ep, _| self.applied.endpoints.contains_key(ep));
        for ep in self.applied.endpoints.keys() {
            if let Some(l) = local.get(ep) {
                self.written_as.insert(ep.clone(), l.maps());
            }
        }
        self.report.fail_closed = self
            .applied
            .endpoints
            .iter()
            .filter(|(_, p)| p.ingress_isolated_by == Some(fail_closed_ref()))
            .map(|(ep, _)| ep.clone())
            .collect();
        if let Err(e) = res {
            return self.failed(started, writes, e.to_string());
        }
        self.report.rounds += 1;
        self.report.last_ops = writes;
        self.report.last_micros = started.elapsed().as_micros() as u64;
        self.report.last_error = None;
        Ok(writes)
    }

    fn failed(&mut self, started: Instant, writes: usize, error: String) -> Result<usize, String> {
        self.report.rounds += 1;
        self.report.last_ops = writes;
        self.report.last_micros = started.elapsed().as_micros() as u64;
        self.report.last_error = Some(error.clone());
        Err(error)
    }

    /// The compiled state as this node's maps hold it: its ipcache and its
    /// endpoints (the compiled ones, and fail-closed ones for kubelet pods
    /// the compiler does not know).
    fn local_view(
        &self,
        full: &Compiled,
        local: &BTreeMap<EndpointRef, LocalEndpoint>,
    ) -> Compiled {
        let mut want = Compiled {
            identities: full.identities.clone(),
            rejected: full.rejected.clone(),
            policies: full.policies.clone(),
            ..Compiled::default()
        };
        if let Some(cache) = full.ipcache.get(&self.node) {
            want.ipcache.insert(self.node.clone(), cache.clone());
        }
        for (ep, l) in local {
            let here = full.nodes.get(ep).is_some_and(|n| *n == self.node);
            let policy = match full.endpoints.get(ep) {
                Some(p) if here => p.clone(),
                _ if l.from_kubelet() => fail_closed(),
                _ => continue,
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
