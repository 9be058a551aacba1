//! NetworkPolicy in weftd: the Kubernetes view compiled by `weft-policy`
//! and written into the data path's policy maps, on every change of the
//! view and of this node's endpoints, and before a pod's CNI ADD returns.
//!
//! - [`inputs`]: the view cut to the compiler's inputs (pure)
//! - [`reconcile`]: one round: compile, cut to this node, plan, write
//! - [`identities`]: identities agreed on cluster-wide through the store
//! - `views`: what `weft policy list / show / explain` answer
//! - [`preview`]: `weft policy preview`, the flow ring replayed with
//!   candidate policies

pub mod identities;
pub mod inputs;
pub mod matrix;
pub mod preview;
pub mod reconcile;
mod rule_book;
pub mod rule_ids;
mod views;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::endpoint::Endpoint;
use weft_k8s::{Kind, View};
use weft_policy::EndpointRef;
use weft_store::Store;

use crate::agent::Agent;
use crate::config::PolicyMode;
use inputs::Snapshot;
use reconcile::DynMaps;
use reconcile::{LocalEndpoint, Reconciler};
use weft_datapath::policy::PolicyMaps;

pub use views::{explain, list, show};

/// How long a CNI ADD waits for its pod to appear in the view (the kubelet
/// makes the sandbox after the pod exists, so normally it is already
/// there) before the pod is admitted fail-closed.
pub const ADMIT_WAIT: Duration = Duration::from_secs(2);
/// A round runs at least this often (endpoints gone, a failed round).
const TICK: Duration = Duration::from_secs(1);

/// The kinds a round reads (see [`snapshot`]): only their changes wake
/// the policy thread; Services and EndpointSlices never do.
pub const READS: [Kind; 5] = [
    Kind::Pod,
    Kind::Namespace,
    Kind::NetworkPolicy,
    Kind::ClusterNetworkPolicy,
    Kind::Node,
];

/// The agent's link to the reconciler: empty unless policy is enforced.
#[derive(Default)]
pub struct Link {
    running: OnceLock<Arc<Running>>,
    /// The cluster store identities are allocated in (set at build).
    store: OnceLock<Arc<dyn Store>>,
    opener: Mutex<Option<Opener>>,
    off: Mutex<String>,
    /// Where the rule id table is saved (set at build; none in tests).
    rule_ids_file: OnceLock<PathBuf>,
}

/// Opens the data path's policy maps (set at build, where the data path is
/// made; `Err` says why this kernel or configuration cannot).
pub type Opener = Box<dyn FnOnce() -> Result<Box<dyn PolicyMaps>, String> + Send>;

pub struct Running {
    view: View,
    rec: Mutex<Reconciler<DynMaps>>,
    reason: String,
    rule_ids: Mutex<rule_ids::Saver>,
    /// The last round a view change started (`weft policy list`).
    last_change: Mutex<Option<weft_api::PolicyChange>>,
    /// The view as the last round copied it (locked after `rec`).
    copied: Mutex<CopiedView>,
}

/// The last snapshot a round took and the generation of each kind in it:
/// the next round copies again only the kinds that changed. At 1,000
/// pods and 1,000 policies, copying and dropping the whole view was about
/// a fifth of a round's time after one policy changed.
#[derive(Default)]
struct CopiedView {
    generations: Option<[u64; READS.len()]>,
    snap: Snapshot,
}

impl CopiedView {
    /// Brings the copy up to `view` (`false`: the view has not listed
    /// every kind once yet). Each kind's generation is read before its
    /// contents, so a change in between is copied again next time.
    fn refresh(&mut self, view: &View) -> bool {
        if !synced(view) {
            self.generations = None;
            return false;
        }
        let now = READS.map(|k| view.generation_of(&[k]));
        let stale = |i: usize| self.generations.is_none_or(|g| g[i] != now[i]);
        for (i, kind) in READS.iter().enumerate() {
            if !stale(i) {
                continue;
            }
            match kind {
                Kind::Pod => self.snap.pods = view.pods(),
                Kind::Namespace => self.snap.namespaces = view.namespaces(),
                Kind::NetworkPolicy => self.snap.policies = view.policies(),
                Kind::ClusterNetworkPolicy => self.snap.cluster = view.cluster_policies(),
                Kind::Node => self.snap.node = view.node(),
                // not in READS
                Kind::Service | Kind::EndpointSlice => {}
            }
        }
        self.generations = Some(now);
        true
    }
}

impl Link {
    pub fn set_store(&self, store: Arc<dyn Store>) {
        let _ = self.store.set(store);
    }

    /// Saves the rule id table at `path` after every round that changed
    /// it (the opener loads it: see [`rule_ids::load`]).
    pub fn set_rule_ids_file(&self, path: PathBuf) {
        let _ = self.rule_ids_file.set(path);
    }

    pub fn set_opener(&self, opener: Opener) {
        *self.opener.lock().unwrap_or_else(|p| p.into_inner()) = Some(opener);
    }

    fn running(&self) -> Option<&Arc<Running>> {
        self.running.get()
    }

    fn off_reason(&self) -> String {
        self.off.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// CNI ADD's last step: the new endpoint's policy state goes into the
    /// maps before the ADD returns (its pod's compiled state, or the
    /// fail-closed one when the pod is not known within [`ADMIT_WAIT`]).
    pub fn admit(&self, agent: &Agent, ep: &Endpoint) -> Result<(), String> {
        let Some(run) = self.running() else {
            return Ok(());
        };
        let kubelet_pod =
            !ep.pod.namespace.is_empty() && !ep.pod.name.is_empty() && !ep.pod.uid.is_empty();
        if !kubelet_pod {
            return Ok(());
        }
        let deadline = Instant::now() + ADMIT_WAIT;
        let mut seen = run.view.generation_of(&[Kind::Pod]);
        while synced(&run.view)
            && run
                .view
                .pod(&ep.pod.namespace, &ep.pod.name)
                .is_none_or(|p| p.uid != ep.pod.uid)
        {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(pod = %format!("{}/{}", ep.pod.namespace, ep.pod.name),
                    "pod not in the API view after {ADMIT_WAIT:?}; admitting it fail-closed until it is");
                break;
            }
            seen =
                run.view
                    .wait_change_of(&[Kind::Pod], seen, left.min(Duration::from_millis(100)));
        }
        let pod = EndpointRef {
            namespace: ep.pod.namespace.clone(),
            name: ep.pod.name.clone(),
        };
        let mut rec = run.lock();
        let res = round(run, &mut rec, &local_endpoints(agent), Some(&pod));
        if !rec.holds(&pod) {
            return Err(format!(
                "the pod's network policy could not be written ({}); retry the ADD",
                res.err().unwrap_or_else(|| "not admitted".into())
            ));
        }
        drop(rec);
        // the maps hold the pod's state; the programs that read them must
        // be on its veth too before the ADD returns (the fast path's own
        // sync comes only every second)
        if agent.fastpath().is_active() {
            crate::fastpath::sync(agent).map_err(|e| {
                format!("the policy programs could not be attached to the pod's veth ({e}); retry the ADD")
            })?;
        }
        Ok(())
    }
}

impl Running {
    fn lock(&self) -> MutexGuard<'_, Reconciler<DynMaps>> {
        self.rec.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The pod, namespace and policy watches have listed once: the view is the
/// cluster's, not an empty start.
fn synced(view: &View) -> bool {
    [Kind::Pod, Kind::Namespace, Kind::NetworkPolicy]
        .into_iter()
        .all(|k| view.synced(k))
}

fn snapshot(view: &View) -> Option<Snapshot> {
    synced(view).then(|| Snapshot {
        pods: view.pods(),
        namespaces: view.namespaces(),
        policies: view.policies(),
        cluster: view.cluster_policies(),
        node: view.node(),
    })
}

/// This node's live endpoints with their ids.
fn local_endpoints(agent: &Agent) -> Vec<LocalEndpoint> {
    agent.endpoints().map_live(|e, id| {
        Some(LocalEndpoint {
            id: id?,
            pod: EndpointRef {
                namespace: e.pod.namespace.clone(),
                name: e.pod.name.clone(),
            },
            uid: e.pod.uid.clone(),
            ips: e.ips.iter().map(|n| n.addr()).collect(),
        })
    })
}

fn round(
    run: &Running,
    rec: &mut Reconciler<DynMaps>,
    local: &[LocalEndpoint],
    admitting: Option<&EndpointRef>,
) -> Result<usize, String> {
    let mut copied = run.copied.lock().unwrap_or_else(|p| p.into_inner());
    let snap = copied.refresh(&run.view).then_some(&copied.snap);
    let res = rec.round(snap, local, admitting);
    // the ids the maps now carry, for the next weftd (also after a failed
    // round: some writes may have gone through)
    run.rule_ids
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .save(rec.maps().rule_ids());
    match &res {
        Ok(n) if *n > 0 => tracing::debug!(writes = n, "policy maps updated"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "policy round failed; retrying"),
    }
    res
}

/// Whether `--policy` turns enforcement on, given whether the Kubernetes
/// adapter runs; `Err` is `on` refusing.
pub fn decide(mode: PolicyMode, adapter: bool) -> Result<Option<String>, String> {
    match (mode, adapter) {
        (PolicyMode::Off, _) => Ok(None),
        (_, true) => Ok(Some(format!("--policy {}", mode.as_str()))),
        (PolicyMode::On, false) => {
            Err("--policy on needs the Kubernetes adapter (--kubeconfig, or run in a pod)".into())
        }
        (PolicyMode::Auto, false) => Ok(None),
    }
}

/// Starts enforcement (or records why not), after the Kubernetes adapter.
/// The maps come from the opener set at build; with `auto` a kernel that
/// cannot load the programs leaves policy off with a warning, with `on`
/// weftd refuses to start.
pub fn start(mode: PolicyMode, agent: &Arc<Agent>) -> anyhow::Result<()> {
    let link = agent.policy();
    let opener = link.opener.lock().unwrap_or_else(|p| p.into_inner()).take();
    let maps = || match opener {
        Some(open) => open(),
        None => Err("this weftd was built without a data path for policy".to_string()),
    };
    let set_off = |why: String| {
        *link.off.lock().unwrap_or_else(|p| p.into_inner()) = why;
    };
    let view = agent.kubernetes().view();
    let reason = match decide(mode, view.is_some()) {
        Ok(Some(r)) => r,
        Ok(None) => {
            set_off(match mode {
                PolicyMode::Off => "--policy off".into(),
                _ => "no Kubernetes adapter: nothing to enforce".into(),
            });
            return Ok(());
        }
        Err(e) => anyhow::bail!(e),
    };
    let view = view.expect("decided with an adapter");
    let maps = match maps() {
        Ok(m) => m,
        Err(e) if mode == PolicyMode::On => {
            anyhow::bail!("--policy on: the policy maps cannot be opened: {e}")
        }
        Err(e) => {
            tracing::warn!(error = %e, "NetworkPolicy not enforced: the policy maps cannot be opened (--policy off silences this)");
            set_off(format!("unavailable: {e}"));
            return Ok(());
        }
    };
    let Some(store) = link.store.get().cloned() else {
        anyhow::bail!("no identity store set before the policy start");
    };
    let rec = Reconciler::new(
        agent.facts().node.clone(),
        DynMaps(maps),
        Box::new(identities::StoreAllocator::new(store)),
    );
    let run = Arc::new(Running {
        view,
        rec: Mutex::new(rec),
        reason,
        rule_ids: Mutex::new(rule_ids::Saver::new(link.rule_ids_file.get().cloned())),
        last_change: Mutex::new(None),
        copied: Mutex::new(CopiedView::default()),
    });
    let _ = link.running.set(run.clone());
    // flow events and metrics name the rule behind the programs' rule ids
    agent
        .flows()
        .set_rule_book(Arc::new(rule_book::Rules(run.clone())));
    let agent = agent.clone();
    std::thread::Builder::new()
        .name("policy".into())
        .spawn(move || reconcile_loop(&run, &agent))?;
    tracing::info!("NetworkPolicy enforcement on");
    Ok(())
}

/// Rounds on every change of the kinds it [`READS`], and each [`TICK`]
/// when this node's endpoints changed or the last round failed.
fn reconcile_loop(run: &Running, agent: &Agent) {
    let mut seen = run.view.generation_of(&READS);
    let mut last_local: Option<Vec<(EndpointRef, u32)>> = None;
    let mut force = true;
    loop {
        let now = run.view.wait_change_of(&READS, seen, TICK);
        let view_changed = now != seen;
        let (seen_at, woke) = (SystemTime::now(), Instant::now());
        // read under the lock: an ADD admitted meanwhile is in the list the
        // round works from, so the round cannot undo its admission
        let mut rec = run.lock();
        let endpoints = local_endpoints(agent);
        let local: Vec<(EndpointRef, u32)> =
            endpoints.iter().map(|l| (l.pod.clone(), l.id)).collect();
        let changed =
            view_changed || last_local.as_ref() != Some(&local) || force || rec.collection_due();
        seen = now;
        if !changed || !synced(&run.view) {
            continue;
        }
        last_local = Some(local);
        let res = round(run, &mut rec, &endpoints, None);
        force = res.is_err();
        if let (true, Ok(writes)) = (view_changed, res) {
            let took = woke.elapsed();
            crate::metrics::telemetry().observe_policy_update(took);
            let compile_us = rec.report.last_compile_micros;
            *run.last_change.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(weft_api::PolicyChange {
                    generation: now,
                    seen_unix_us: unix_us(seen_at),
                    written_unix_us: unix_us(seen_at + took),
                    compile_us,
                    write_us: rec.report.last_micros.saturating_sub(compile_us),
                    writes,
                    recompiled: rec.report.last_recompiled,
                    whole: rec.report.last_whole.map(str::to_string),
                });
        }
    }
}

fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_needs_the_adapter_and_on_insists() {
        assert_eq!(decide(PolicyMode::Off, true), Ok(None));
        assert!(decide(PolicyMode::Auto, true).unwrap().is_some());
        assert_eq!(decide(PolicyMode::Auto, false), Ok(None));
        assert!(decide(PolicyMode::On, true).unwrap().is_some());
        let err = decide(PolicyMode::On, false).unwrap_err();
        assert!(err.contains("--kubeconfig"), "{err}");
    }

    fn pod(name: &str) -> weft_k8s::model::PodInfo {
        weft_k8s::model::PodInfo {
            namespace: "x".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            labels: [("app".to_string(), name.to_string())].into(),
            ips: vec!["10.0.0.1".parse().unwrap()],
            named_ports: vec![],
            host_network: false,
            node: "n1".into(),
            phase: "Running".into(),
            terminating: false,
        }
    }

    fn deny_all(name: &str) -> weft_k8s::model::NetPolicy {
        weft_k8s::model::NetPolicy {
            namespace: "x".into(),
            name: name.into(),
            pod_selector: Default::default(),
            policy_types: Some(vec![weft_k8s::model::PolicyType::Ingress]),
            ingress: None,
            egress: None,
            audit: false,
        }
    }

    #[test]
    fn the_copied_view_copies_again_only_the_kinds_that_changed() {
        use std::collections::HashSet;
        let idx = weft_k8s::index::Index::new("https://api");
        let view = idx.view();
        let mut copied = CopiedView::default();
        assert!(!copied.refresh(&view), "not listed yet: no snapshot");
        idx.reset(vec![pod("a")], &HashSet::new());
        idx.reset(
            Vec::<weft_k8s::model::NamespaceInfo>::new(),
            &HashSet::new(),
        );
        idx.reset(vec![deny_all("p1")], &HashSet::new());
        assert!(copied.refresh(&view));
        assert_eq!(copied.snap.pods.len(), 1);
        assert_eq!(copied.snap.policies.len(), 1);
        let pods_at = copied.snap.pods.as_ptr();

        // a policy changes: the policies are copied again, the pods are not
        idx.apply(deny_all("p2"));
        assert!(copied.refresh(&view));
        assert_eq!(copied.snap.policies.len(), 2);
        assert_eq!(copied.snap.pods.as_ptr(), pods_at, "pods kept, not copied");

        // a pod changes: now they are
        idx.apply(pod("b"));
        assert!(copied.refresh(&view));
        let names: Vec<&str> = copied.snap.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        // nothing changed: the same copy
        let (pods_at, policies_at) = (copied.snap.pods.as_ptr(), copied.snap.policies.as_ptr());
        assert!(copied.refresh(&view));
        assert_eq!(copied.snap.pods.as_ptr(), pods_at);
        assert_eq!(copied.snap.policies.as_ptr(), policies_at);
    }
}
