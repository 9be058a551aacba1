//! The pod loop: watches the pods bound to this node and drives each through
//! start, status, termination and teardown ([`crate::podview::plan`] says
//! which). One task owns every pod, so steps of one pod never interleave;
//! the node's blocking work ([`Host`]) runs on tokio's blocking pool.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::mpsc;
use weft_lab::kubelet::KubePod;

use crate::host::{Host, PodApi};
use crate::node::now;
use crate::podview::{desired, plan, status_patch, Local, PodView, Running, Shown, Step};

/// How often every known pod is looked at again: retries a failed start or
/// status write without waiting for the pod to change.
const RESYNC: Duration = Duration::from_secs(5);

/// A pod this kubelet runs.
struct Entry {
    rec: KubePod,
    terminating: bool,
}

pub struct Kubelet<A, H> {
    api: A,
    host: Arc<H>,
    /// The node's addresses (the pods' hostIPs).
    host_ips: Vec<IpAddr>,
    running: HashMap<String, Entry>,
    /// Pods recorded by an earlier run, not yet matched with the API.
    adopted: HashMap<String, KubePod>,
    /// The last version of every pod seen, by UID.
    seen: HashMap<String, Pod>,
    /// UIDs listed since the watch's last `Init` (a relist in progress).
    relist: Option<HashSet<String>>,
    /// Status patches sent and not yet seen back, by UID: the pod's
    /// resourceVersion when sent and the status asked for. A resync before
    /// the watch brings the patched pod back sends nothing again: resending
    /// kept a 2-CPU machine's API server busy with 140 no-op patches a
    /// second at 1,000 pods, and the watch that would end them fell behind.
    sent: HashMap<String, (Option<String>, Shown)>,
    /// Pods whose grace period ended, by UID.
    grace_tx: mpsc::UnboundedSender<String>,
    grace_rx: mpsc::UnboundedReceiver<String>,
}

impl<A: PodApi, H: Host> Kubelet<A, H> {
    pub fn new(api: A, host: H, host_ips: Vec<IpAddr>) -> Kubelet<A, H> {
        let adopted: HashMap<String, KubePod> = host
            .recorded()
            .into_iter()
            .map(|r| (r.uid.clone(), r))
            .collect();
        if !adopted.is_empty() {
            tracing::info!(
                pods = adopted.len(),
                "found pods of an earlier run; re-adopting those the API still binds here"
            );
        }
        let (grace_tx, grace_rx) = mpsc::unbounded_channel();
        Kubelet {
            api,
            host: Arc::new(host),
            host_ips,
            running: HashMap::new(),
            adopted,
            seen: HashMap::new(),
            relist: None,
            sent: HashMap::new(),
            grace_tx,
            grace_rx,
        }
    }

    /// Runs until the watch ends (never, in practice). Watch errors are
    /// retried with backoff (every watcher error is retryable).
    pub async fn run(mut self, client: Client, node_name: String) {
        let pods: Api<Pod> = Api::all(client);
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
        let mut stream = watcher(pods, cfg).default_backoff().boxed();
        let mut resync = tokio::time::interval(RESYNC);
        // a resync that took longer than RESYNC is not followed at once by
        // another: the watch's events come first
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                ev = stream.next() => match ev {
                    Some(Ok(ev)) => self.handle(ev).await,
                    Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                    None => return,
                },
                Some(uid) = self.grace_rx.recv() => self.grace_over(&uid).await,
                _ = resync.tick() => self.resync().await,
            }
        }
    }

    /// One watch event. A relist (`Init` ... `InitDone`) forgets the pods
    /// it did not list: the API no longer binds them here.
    async fn handle(&mut self, ev: Event<Pod>) {
        match ev {
            Event::Init => self.relist = Some(HashSet::new()),
            Event::InitApply(p) => {
                if let (Some(r), Some(uid)) = (self.relist.as_mut(), p.metadata.uid.clone()) {
                    r.insert(uid);
                }
                self.on_pod(p).await;
            }
            Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                let stale: Vec<String> = self
                    .running
                    .keys()
                    .chain(self.adopted.keys())
                    .filter(|u| !listed.contains(*u))
                    .cloned()
                    .collect();
                for uid in stale {
                    self.gone(&uid).await;
                }
            }
            Event::Apply(p) => self.on_pod(p).await,
            Event::Delete(p) => {
                if let Some(uid) = p.metadata.uid {
                    self.gone(&uid).await;
                }
            }
        }
    }

    async fn resync(&mut self) {
        let all: Vec<Pod> = self.seen.values().cloned().collect();
        for p in all {
            self.on_pod(p).await;
        }
    }

    async fn on_pod(&mut self, pod: Pod) {
        let Some(view) = PodView::of(&pod) else {
            return;
        };
        self.seen.insert(view.uid.clone(), pod);
        if let Some(rec) = self.adopted.remove(&view.uid) {
            self.adopt(rec, &view).await;
        }
        let local = match self.running.get(&view.uid) {
            None => Local::Absent,
            Some(e) if e.terminating => Local::Terminating,
            Some(_) => Local::Running,
        };
        match plan(&view, local) {
            Step::Start => {
                if self.start(&view).await {
                    self.write_status(&view).await;
                }
            }
            Step::Status => self.write_status(&view).await,
            Step::Terminate { grace_seconds } => {
                if let Some(e) = self.running.get_mut(&view.uid) {
                    e.terminating = true;
                }
                tracing::info!(pod = %format!("{}/{}", view.namespace, view.name), grace_seconds, "terminating: not ready, serving until the grace period ends");
                self.write_status(&view).await;
                let (tx, uid) = (self.grace_tx.clone(), view.uid.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(grace_seconds.max(0) as u64)).await;
                    let _ = tx.send(uid);
                });
            }
            // stays in `seen`: a failed delete is retried on resync
            Step::DeleteObject => {
                self.delete_object(&view.namespace, &view.name, &view.uid)
                    .await
            }
        }
    }

    /// Brings back a pod an earlier run started: its namespace still holds
    /// its address, so only the servers restart. A namespace that vanished
    /// means starting over.
    async fn adopt(&mut self, rec: KubePod, view: &PodView) {
        let (host, r, v) = (self.host.clone(), rec.clone(), view.clone());
        let resumed = tokio::task::spawn_blocking(move || host.resume(&r, &v))
            .await
            .unwrap_or(false);
        if resumed {
            tracing::info!(pod = %format!("{}/{}", rec.namespace, rec.name), "re-adopted");
            self.running.insert(
                rec.uid.clone(),
                Entry {
                    rec,
                    terminating: false,
                },
            );
        }
    }

    /// Creates the sandbox and the servers; false when that failed (it is
    /// retried on the next resync).
    async fn start(&mut self, view: &PodView) -> bool {
        let (host, v, t) = (self.host.clone(), view.clone(), now());
        match tokio::task::spawn_blocking(move || host.start(&v, &t)).await {
            Ok(Ok(rec)) => {
                tracing::info!(pod = %format!("{}/{}", rec.namespace, rec.name), ips = ?rec.ips, netns = %rec.netns.display(), "pod started");
                self.running.insert(
                    rec.uid.clone(),
                    Entry {
                        rec,
                        terminating: false,
                    },
                );
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(pod = %format!("{}/{}", view.namespace, view.name), error = %format!("{e:#}"), "starting the pod failed; retrying in {} s", RESYNC.as_secs());
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "start task failed");
                false
            }
        }
    }

    async fn write_status(&mut self, view: &PodView) {
        let Some(e) = self.running.get(&view.uid) else {
            return;
        };
        let run = Running {
            ips: &e.rec.ips,
            host_ips: &self.host_ips,
            container_id: &e.rec.sandbox_id,
            started_at: &e.rec.started_at,
            terminating: e.terminating,
        };
        let want = desired(view, &run);
        if want == view.shown {
            self.sent.remove(&view.uid);
            return;
        }
        let version = self
            .seen
            .get(&view.uid)
            .and_then(|p| p.metadata.resource_version.clone());
        let asked = (version, want);
        if self.sent.get(&view.uid) == Some(&asked) {
            return;
        }
        let patch = status_patch(view, &asked.1, &run, &now());
        match self
            .api
            .patch_status(&view.namespace, &view.name, patch)
            .await
        {
            Ok(()) => {
                self.sent.insert(view.uid.clone(), asked);
            }
            Err(err) => {
                self.sent.remove(&view.uid);
                tracing::warn!(pod = %format!("{}/{}", view.namespace, view.name), error = %format!("{err:#}"), "writing pod status failed; retrying");
            }
        }
    }

    /// The grace period of a terminating pod ended: tear it down, then
    /// delete the object for good (grace 0), as the kubelet does.
    async fn grace_over(&mut self, uid: &str) {
        let Some(e) = self.running.remove(uid) else {
            return;
        };
        let (ns, name) = (e.rec.namespace.clone(), e.rec.name.clone());
        self.teardown(e.rec).await;
        self.delete_object(&ns, &name, uid).await;
    }

    /// The API no longer binds the pod here: tear down what is left.
    async fn gone(&mut self, uid: &str) {
        self.seen.remove(uid);
        self.sent.remove(uid);
        if let Some(e) = self.running.remove(uid) {
            self.teardown(e.rec).await;
        }
        if let Some(rec) = self.adopted.remove(uid) {
            self.teardown(rec).await;
        }
    }

    async fn teardown(&mut self, rec: KubePod) {
        let host = self.host.clone();
        let pod = format!("{}/{}", rec.namespace, rec.name);
        match tokio::task::spawn_blocking(move || host.stop(&rec)).await {
            Ok(Ok(())) => tracing::info!(pod = %pod, "pod torn down"),
            Ok(Err(err)) => {
                tracing::warn!(pod = %pod, error = %format!("{err:#}"), "tearing the pod down failed")
            }
            Err(err) => tracing::warn!(error = %err, "teardown task failed"),
        }
    }

    async fn delete_object(&self, namespace: &str, name: &str, uid: &str) {
        if let Err(err) = self.api.delete(namespace, name, uid).await {
            tracing::warn!(pod = %format!("{namespace}/{name}"), error = %format!("{err:#}"), "deleting the pod object failed; retrying");
        }
    }
}

#[cfg(test)]
#[path = "pods_tests.rs"]
mod tests;
