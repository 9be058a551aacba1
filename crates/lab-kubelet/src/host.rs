//! The two seams of the pod loop and their real sides: [`Host`] (the node:
//! sandboxes, servers, records; blocking) and [`PodApi`] (the pod writes the
//! kubelet makes to the API server). The loop's tests put fakes in both.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use serde_json::Value;
use weft_lab::kubelet::{records, remove_record, save_record, KubePod};

use crate::agnhost::Servers;
use crate::podview::PodView;
use crate::sandbox::{self, NodeCfg};

/// What the pod loop does on the node. Blocking: called on tokio's
/// blocking pool.
pub trait Host: Send + Sync + 'static {
    /// Creates the pod's sandbox, starts its servers and records it; on
    /// failure leaves nothing behind.
    fn start(&self, pod: &PodView, started_at: &str) -> anyhow::Result<KubePod>;
    /// Serves a pod an earlier run started; `false` when its namespace is
    /// gone (the caller then starts it over).
    fn resume(&self, rec: &KubePod, pod: &PodView) -> bool;
    /// Stops the servers, tears the sandbox down, forgets the record.
    fn stop(&self, rec: &KubePod) -> anyhow::Result<()>;
    /// The pods an earlier run recorded.
    fn recorded(&self) -> Vec<KubePod>;
}

/// The writes to pods the kubelet makes.
#[allow(async_fn_in_trait, reason = "used generically, never as dyn")]
pub trait PodApi {
    /// A strategic-merge patch of `pods/status`.
    async fn patch_status(&self, namespace: &str, name: &str, patch: Value) -> anyhow::Result<()>;
    /// Deletes the object for good (grace 0), only if it is still `uid`.
    async fn delete(&self, namespace: &str, name: &str, uid: &str) -> anyhow::Result<()>;
}

/// The real node: namespaces and CNI ([`sandbox`]), agnhost servers, pod
/// records in the state directory.
pub struct NodeHost {
    pub node: NodeCfg,
    servers: Mutex<HashMap<String, Servers>>,
}

impl NodeHost {
    pub fn new(node: NodeCfg) -> NodeHost {
        NodeHost {
            node,
            servers: Mutex::new(HashMap::new()),
        }
    }

    fn keep(&self, uid: &str, s: Servers) {
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.to_string(), s);
    }
}

impl Host for NodeHost {
    fn start(&self, pod: &PodView, started_at: &str) -> anyhow::Result<KubePod> {
        let rec = sandbox::create(&self.node, pod, started_at)?;
        let served = save_record(&self.node.state_dir, &rec)
            .and_then(|()| Servers::start(Some(&rec.netns), &pod.name, &pod.ports));
        match served {
            Ok(s) => {
                self.keep(&rec.uid, s);
                Ok(rec)
            }
            Err(e) => {
                let _ = sandbox::destroy(&self.node, &rec);
                remove_record(&self.node.state_dir, &rec.uid);
                Err(e)
            }
        }
    }

    fn resume(&self, rec: &KubePod, pod: &PodView) -> bool {
        if !rec.netns.exists() {
            let _ = sandbox::destroy(&self.node, rec);
            remove_record(&self.node.state_dir, &rec.uid);
            return false;
        }
        match Servers::start(Some(&rec.netns), &pod.name, &pod.ports) {
            Ok(s) => self.keep(&rec.uid, s),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "re-adopted pod serves nothing"),
        }
        true
    }

    fn stop(&self, rec: &KubePod) -> anyhow::Result<()> {
        let servers = self
            .servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&rec.uid);
        if let Some(mut s) = servers {
            s.stop();
        }
        let r = sandbox::destroy(&self.node, rec);
        remove_record(&self.node.state_dir, &rec.uid);
        r
    }

    fn recorded(&self) -> Vec<KubePod> {
        records(&self.node.state_dir)
    }
}

/// The real API server.
pub struct KubeApi(pub Client);

impl PodApi for KubeApi {
    async fn patch_status(&self, namespace: &str, name: &str, patch: Value) -> anyhow::Result<()> {
        let api: Api<Pod> = Api::namespaced(self.0.clone(), namespace);
        api.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await?;
        Ok(())
    }

    async fn delete(&self, namespace: &str, name: &str, uid: &str) -> anyhow::Result<()> {
        let api: Api<Pod> = Api::namespaced(self.0.clone(), namespace);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => Ok(()),
            // gone already, or a new pod took the name: nothing of ours to delete
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
