//! The pod loop: watches the pods bound to this node and drives each through
//! start, status, termination and teardown ([`crate::podview::plan`] says
//! which). One task owns every pod, so steps of one pod never interleave;
//! the blocking parts (namespaces, CNI) run on tokio's blocking pool.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::mpsc;
use weft_lab::kubelet::{records, remove_record, save_record, KubePod};

use crate::agnhost::Servers;
use crate::node::now;
use crate::podview::{desired, plan, status_patch, Local, PodView, Running, Step};
use crate::sandbox::{self, NodeCfg};

/// How often every known pod is looked at again: retries a failed start or
/// status write without waiting for the pod to change.
const RESYNC: Duration = Duration::from_secs(5);

/// A pod this kubelet runs.
struct Entry {
    rec: KubePod,
    /// `None` while an adopted pod's servers are not (yet) back.
    servers: Option<Servers>,
    terminating: bool,
}

pub struct Kubelet {
    client: Client,
    node: NodeCfg,
    running: HashMap<String, Entry>,
    /// Pods recorded by an earlier run, not yet matched with the API.
    adopted: HashMap<String, KubePod>,
    /// The last version of every pod seen, by UID.
    seen: HashMap<String, Pod>,
    /// Pods whose grace period ended, by UID.
    grace_tx: mpsc::UnboundedSender<String>,
    grace_rx: mpsc::UnboundedReceiver<String>,
}

impl Kubelet {
    pub fn new(client: Client, node: NodeCfg) -> Kubelet {
        let adopted: HashMap<String, KubePod> = records(&node.state_dir)
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
            client,
            node,
            running: HashMap::new(),
            adopted,
            seen: HashMap::new(),
            grace_tx,
            grace_rx,
        }
    }

    /// Runs until the process is told to stop. Watch errors are retried
    /// with backoff (every watcher error is retryable); a relist forgets
    /// pods that are no longer bound here.
    pub async fn run(mut self) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node.name));
        let mut stream = watcher(pods, cfg).default_backoff().boxed();
        let mut resync = tokio::time::interval(RESYNC);
        let mut relist: Option<HashSet<String>> = None;
        loop {
            tokio::select! {
                ev = stream.next() => match ev {
                    Some(Ok(Event::Init)) => relist = Some(HashSet::new()),
                    Some(Ok(Event::InitApply(p))) => {
                        if let (Some(r), Some(uid)) = (relist.as_mut(), p.metadata.uid.clone()) {
                            r.insert(uid);
                        }
                        self.on_pod(p).await;
                    }
                    Some(Ok(Event::InitDone)) => {
                        let listed = relist.take().unwrap_or_default();
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
                    Some(Ok(Event::Apply(p))) => self.on_pod(p).await,
                    Some(Ok(Event::Delete(p))) => {
                        if let Some(uid) = p.metadata.uid {
                            self.gone(&uid).await;
                        }
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                    None => return,
                },
                Some(uid) = self.grace_rx.recv() => self.grace_over(&uid).await,
                _ = resync.tick() => {
                    let all: Vec<Pod> = self.seen.values().cloned().collect();
                    for p in all {
                        self.on_pod(p).await;
                    }
                }
            }
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
            Step::DeleteObject => {
                // stays in `seen`: a failed delete is retried on resync
                self.delete_object(&view.namespace, &view.name, &view.uid)
                    .await;
            }
        }
    }

    /// Brings back a pod an earlier run started: its namespace still holds
    /// its address, so only the servers restart. A namespace that vanished
    /// means starting over.
    async fn adopt(&mut self, rec: KubePod, view: &PodView) {
        if !rec.netns.exists() {
            let node = self.node.clone();
            let r = rec.clone();
            let _ = tokio::task::spawn_blocking(move || sandbox::destroy(&node, &r)).await;
            remove_record(&self.node.state_dir, &rec.uid);
            return;
        }
        let servers = Servers::start(Some(&rec.netns), &view.name, &view.ports);
        if let Err(e) = &servers {
            tracing::warn!(error = %format!("{e:#}"), "re-adopted pod serves nothing");
        }
        tracing::info!(pod = %format!("{}/{}", rec.namespace, rec.name), "re-adopted");
        self.running.insert(
            rec.uid.clone(),
            Entry {
                rec,
                servers: servers.ok(),
                terminating: false,
            },
        );
    }

    /// Creates the sandbox and the servers; false when that failed (it is
    /// retried on the next resync).
    async fn start(&mut self, view: &PodView) -> bool {
        let (node, v, t) = (self.node.clone(), view.clone(), now());
        let created = tokio::task::spawn_blocking(move || -> anyhow::Result<(KubePod, Servers)> {
            let rec = sandbox::create(&node, &v, &t)?;
            save_record(&node.state_dir, &rec)?;
            match Servers::start(Some(&rec.netns), &v.name, &v.ports) {
                Ok(s) => Ok((rec, s)),
                Err(e) => {
                    let _ = sandbox::destroy(&node, &rec);
                    remove_record(&node.state_dir, &rec.uid);
                    Err(e)
                }
            }
        })
        .await;
        match created {
            Ok(Ok((rec, servers))) => {
                tracing::info!(pod = %format!("{}/{}", rec.namespace, rec.name), ips = ?rec.ips, netns = %rec.netns.display(), "pod started");
                self.running.insert(
                    rec.uid.clone(),
                    Entry {
                        rec,
                        servers: Some(servers),
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
            host_ips: &self.node.ips,
            container_id: &e.rec.sandbox_id,
            started_at: &e.rec.started_at,
            terminating: e.terminating,
        };
        let want = desired(view, &run);
        if want == view.shown {
            return;
        }
        let patch = status_patch(view, &want, &run, &now());
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &view.namespace);
        if let Err(err) = api
            .patch_status(
                &view.name,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
        {
            tracing::warn!(pod = %format!("{}/{}", view.namespace, view.name), error = %err, "writing pod status failed; retrying");
        }
    }

    /// The grace period of a terminating pod ended: tear it down, then
    /// delete the object for good (grace 0), as the kubelet does.
    async fn grace_over(&mut self, uid: &str) {
        let Some(e) = self.running.remove(uid) else {
            return;
        };
        let (ns, name) = (e.rec.namespace.clone(), e.rec.name.clone());
        self.teardown(e).await;
        self.delete_object(&ns, &name, uid).await;
    }

    /// The API no longer binds the pod here: tear down what is left.
    async fn gone(&mut self, uid: &str) {
        self.seen.remove(uid);
        if let Some(e) = self.running.remove(uid) {
            self.teardown(e).await;
        }
        if let Some(rec) = self.adopted.remove(uid) {
            self.teardown(Entry {
                rec,
                servers: None,
                terminating: true,
            })
            .await;
        }
    }

    async fn teardown(&mut self, mut e: Entry) {
        let node = self.node.clone();
        let done = tokio::task::spawn_blocking(move || {
            if let Some(mut s) = e.servers.take() {
                s.stop();
            }
            let r = sandbox::destroy(&node, &e.rec);
            remove_record(&node.state_dir, &e.rec.uid);
            (e.rec, r)
        })
        .await;
        match done {
            Ok((rec, Ok(()))) => {
                tracing::info!(pod = %format!("{}/{}", rec.namespace, rec.name), "pod torn down")
            }
            Ok((rec, Err(err))) => {
                tracing::warn!(pod = %format!("{}/{}", rec.namespace, rec.name), error = %format!("{err:#}"), "tearing the pod down failed")
            }
            Err(err) => tracing::warn!(error = %err, "teardown task failed"),
        }
    }

    async fn delete_object(&self, namespace: &str, name: &str, uid: &str) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(err) => {
                tracing::warn!(pod = %format!("{namespace}/{name}"), error = %err, "deleting the pod object failed")
            }
        }
    }
}
