//! weftd as a Kubernetes node agent. The adapter (crate weft-k8s) runs its
//! watches on its own thread; this module decides whether to start it, joins
//! its view with the endpoint table (every endpoint's pod, with its labels
//! and its namespace's labels, live), and cleans up after pods the API says
//! are gone from this node when their DEL never came.
//!
//! Nothing here is on the CNI path: ADD and DEL never wait for the API, so
//! an API server that is down leaves pods attached and their network alone.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use weft_api::{Attachment, DelRequest, EndpointView, KubernetesStatus, PodMeta, WatchStatus};
use weft_k8s::{Adapter, AdapterConfig, Kind, PodPresence, Source, View};

use crate::agent::{unix_now, Agent};
use crate::config::{AgentConfig, KubernetesMode};
use crate::endpoint::Endpoint;

/// The service account token a pod gets; its presence (with
/// KUBERNETES_SERVICE_HOST) is what `--kubernetes auto` takes for "in a pod".
const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// The longest pause between retries of a failed watch: a restarted API
/// server is caught up with within this much.
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// How long the clean-up asks the API before it gives up for this round.
const PRESENCE_TIMEOUT: Duration = Duration::from_secs(5);

/// The agent's link to the adapter: empty until (and unless) it starts.
#[derive(Default)]
pub struct Link {
    inner: OnceLock<Connected>,
}

struct Connected {
    adapter: Adapter,
    collected: AtomicU64,
}

impl Link {
    pub fn view(&self) -> Option<View> {
        self.inner.get().map(|c| c.adapter.view())
    }

    pub fn status(&self) -> Option<KubernetesStatus> {
        let c = self.inner.get()?;
        let st = c.adapter.view().status();
        Some(KubernetesStatus {
            server: st.server.clone(),
            ready: st.ready(),
            watches: st
                .kinds
                .into_iter()
                .map(|k| WatchStatus {
                    kind: k.kind.to_string(),
                    synced: k.synced,
                    healthy: k.healthy,
                    objects: k.objects,
                    errors: k.errors,
                    skipped: k.skipped,
                    last_error: k.last_error,
                })
                .collect(),
            pods_collected: c.collected.load(Ordering::Relaxed),
        })
    }

    /// For the readiness probe: why weftd is not a ready Kubernetes agent.
    pub fn not_ready(&self) -> Option<String> {
        let st = self.status()?;
        if st.ready {
            return None;
        }
        // watches that fail alike (the API server is away) are named together
        let mut by_error: Vec<(String, Vec<String>)> = Vec::new();
        for w in st.watches.iter().filter(|w| !(w.synced && w.healthy)) {
            let why = w
                .last_error
                .clone()
                .unwrap_or_else(|| "not listed yet".into());
            match by_error.iter_mut().find(|(e, _)| *e == why) {
                Some((_, kinds)) => kinds.push(w.kind.clone()),
                None => by_error.push((why, vec![w.kind.clone()])),
            }
        }
        let waiting: Vec<String> = by_error
            .iter()
            .map(|(why, kinds)| format!("{}: {why}", kinds.join(", ")))
            .collect();
        Some(format!(
            "waiting for the Kubernetes API at {}: {}",
            st.server,
            waiting.join("; ")
        ))
    }
}

/// Where the adapter's client configuration comes from, or `None` when
/// weftd runs without Kubernetes.
pub fn source(cfg: &AgentConfig) -> Option<Source> {
    let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && Path::new(SERVICE_ACCOUNT_TOKEN).exists();
    match (cfg.kubernetes, &cfg.kubeconfig) {
        (KubernetesMode::Off, _) => None,
        (_, Some(path)) => Some(Source::Kubeconfig(path.clone())),
        (_, None) if in_pod => Some(Source::InCluster),
        (KubernetesMode::On, None) => Some(Source::Infer),
        (KubernetesMode::Auto, None) => None,
    }
}

/// Where `--store kubernetes` finds the API server: the adapter's source,
/// or, with the adapter off, the same inference as kubectl's.
pub fn store_source(cfg: &AgentConfig) -> Source {
    match (&cfg.kubeconfig, source(cfg)) {
        (Some(path), _) => Source::Kubeconfig(path.clone()),
        (None, Some(s)) => s,
        (None, None) => Source::Infer,
    }
}

/// Starts the adapter and the clean-up of pods gone without a DEL. Returns
/// at once: the API server may be away, and the watches wait for it.
pub fn start(cfg: &AgentConfig, agent: &Arc<Agent>) -> anyhow::Result<()> {
    let Some(source) = source(cfg) else {
        tracing::info!("no Kubernetes API configured (--kubeconfig, or run in a pod); endpoints carry no labels");
        return Ok(());
    };
    let node = agent.facts().node.clone();
    let adapter = Adapter::start(AdapterConfig {
        source: source.clone(),
        node: node.clone(),
        max_backoff: MAX_BACKOFF,
        // NetworkPolicy needs every pod (peers' identities, the ipcache)
        all_pods: cfg.policy != crate::config::PolicyMode::Off,
    })
    .context("starting the Kubernetes adapter")?;
    tracing::info!(source = ?source, %node, "Kubernetes adapter started; watching this node's pods, namespaces, network policies, services and endpoint slices");
    let _ = agent.kubernetes().inner.set(Connected {
        adapter,
        collected: AtomicU64::new(0),
    });
    let grace = Duration::from_secs(cfg.pod_gone_grace_seconds);
    let agent = agent.clone();
    std::thread::Builder::new()
        .name("k8s-gc".into())
        .spawn(move || collect_gone_pods(&agent, grace))
        .context("spawning the pod clean-up thread")?;
    Ok(())
}

/// `weft endpoints`: every endpoint with its pod's live metadata.
pub fn endpoint_views(agent: &Agent) -> Vec<EndpointView> {
    annotate(agent.endpoints().list(), agent.kubernetes().view().as_ref())
}

/// Joins endpoints with what the API says of their pods. A pod the API
/// does not show (yet), or shows with another UID, gets no metadata.
pub fn annotate(eps: Vec<Endpoint>, view: Option<&View>) -> Vec<EndpointView> {
    eps.iter()
        .map(|ep| {
            let mut endpoint = ep.info();
            let w = view
                .filter(|_| !endpoint.pod.namespace.is_empty() && !endpoint.pod.name.is_empty())
                .and_then(|v| v.workload(&endpoint.pod.namespace, &endpoint.pod.name))
                .filter(|w| same_pod(&endpoint.pod.uid, &w.uid));
            let kubernetes = w.map(|w| {
                if endpoint.pod.uid.is_empty() {
                    endpoint.pod.uid = w.uid.clone();
                }
                PodMeta {
                    uid: w.uid,
                    labels: w.labels,
                    namespace_labels: w.namespace_labels,
                }
            });
            EndpointView {
                endpoint,
                kubernetes,
            }
        })
        .collect()
}

/// UIDs that are not both known are taken to agree (a runtime may not pass
/// K8S_POD_UID).
fn same_pod(ours: &str, api: &str) -> bool {
    ours.is_empty() || api.is_empty() || ours == api
}

/// Endpoints whose pod has been missing from the API's pods on this node
/// for the grace period. Only endpoints a kubelet made are judged: the
/// runtime passed the pod's namespace, name and UID (containerd's and
/// CRI-O's CRI do; podman passes a name only, `ctr` and cnitool nothing, and
/// the lab's own `weft lab pod add` pods no UID: none of them is a pod the
/// API could vouch for). Only while the pod watch is current, and never an
/// endpoint younger than the grace period.
#[derive(Default)]
pub struct GoneTracker {
    missing_since: HashMap<Attachment, Instant>,
}

impl GoneTracker {
    pub fn candidates(
        &mut self,
        eps: &[Endpoint],
        api_uid: impl Fn(&str, &str) -> Option<String>,
        now: Instant,
        now_unix: u64,
        grace: Duration,
    ) -> Vec<Endpoint> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for ep in eps {
            if ep.pod.namespace.is_empty() || ep.pod.name.is_empty() || ep.pod.uid.is_empty() {
                continue;
            }
            seen.insert(ep.attachment.clone());
            let present =
                api_uid(&ep.pod.namespace, &ep.pod.name).is_some_and(|u| same_pod(&ep.pod.uid, &u));
            if present {
                self.missing_since.remove(&ep.attachment);
                continue;
            }
            let since = *self
                .missing_since
                .entry(ep.attachment.clone())
                .or_insert(now);
            let old_enough = now_unix.saturating_sub(ep.created_at) >= grace.as_secs();
            if now.duration_since(since) >= grace && old_enough {
                out.push(ep.clone());
            }
        }
        self.missing_since.retain(|a, _| seen.contains(a));
        out
    }

    /// The pod watch is not current: absences seen so far prove nothing.
    pub fn forget(&mut self) {
        self.missing_since.clear();
    }

    /// The API showed the pod after all: its absence starts over.
    pub fn present(&mut self, a: &Attachment) {
        self.missing_since.remove(a);
    }
}

fn collect_gone_pods(agent: &Agent, grace: Duration) {
    let Some(conn) = agent.kubernetes().inner.get() else {
        return;
    };
    let view = conn.adapter.view();
    let node = agent.facts().node.clone();
    let mut tracker = GoneTracker::default();
    let mut seen = view.generation();
    loop {
        // wake on every change, and at least once a second for the clock
        seen = view.wait_change(seen, Duration::from_secs(1));
        if !view.current(Kind::Pod) {
            tracker.forget();
            continue;
        }
        let eps = agent.endpoints().list();
        let lookup = |ns: &str, name: &str| view.pod(ns, name).map(|p| p.uid);
        for ep in tracker.candidates(&eps, lookup, Instant::now(), unix_now(), grace) {
            let pod = format!("{}/{}", ep.pod.namespace, ep.pod.name);
            // the watch's memory is not proof enough to tear a pod down:
            // ask the API itself
            match conn.adapter.pod_presence(
                &ep.pod.namespace,
                &ep.pod.name,
                &ep.pod.uid,
                &node,
                PRESENCE_TIMEOUT,
            ) {
                Ok(PodPresence::Gone) => {
                    let del = DelRequest {
                        attachment: ep.attachment.clone(),
                        netns: ep.netns.clone(),
                        network: ep.network.clone(),
                    };
                    match agent.del(&del) {
                        Ok(()) => {
                            conn.collected.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(%pod, container = %ep.attachment.container_id,
                                "cleaned up after a pod the API says is gone from this node (its DEL never came)");
                        }
                        Err(e) => {
                            tracing::warn!(%pod, error = %e.msg, "cannot clean up after a gone pod; retrying")
                        }
                    }
                }
                Ok(PodPresence::Here) => {
                    tracing::debug!(%pod, "the API still has the pod; the watch lags");
                    tracker.present(&ep.attachment);
                }
                Err(e) => {
                    tracing::debug!(%pod, error = %e, "cannot ask the API about a pod; will retry")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
