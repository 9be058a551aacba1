//! The adapter's own thread: a single-threaded tokio runtime running the six
//! watches into the index. Nothing else in weftd is async; the rest reads
//! the [`View`].

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Config};

use crate::convert::Convert;
use crate::guarded::Guarded;
use crate::index::{Index, Indexed, View};
use crate::watch::{drive, WatchBackoff};

/// Where the API server and the credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A kubeconfig file (its current context).
    Kubeconfig(PathBuf),
    /// The pod's service account (KUBERNETES_SERVICE_HOST/PORT and the
    /// mounted token and CA).
    InCluster,
    /// kube's inference: $KUBECONFIG, ~/.kube/config, then in-cluster.
    Infer,
}

#[derive(Debug, Clone)]
pub struct AdapterConfig {
    pub source: Source,
    /// This node's name as the API knows it: pods are watched with
    /// `spec.nodeName=<node>`.
    pub node: String,
    /// The longest pause between retries of a failed watch.
    pub max_backoff: Duration,
    /// Watch every pod of the cluster, not only this node's: NetworkPolicy
    /// needs every pod's labels and addresses (peers' identities, the
    /// ipcache). The pod table then holds other nodes' pods too.
    pub all_pods: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("cannot read kubeconfig {path}: {reason}; pass a readable file with --kubeconfig")]
    Kubeconfig { path: String, reason: String },
    #[error("no Kubernetes client configuration ({0}); pass --kubeconfig or run in a pod with a service account")]
    Config(String),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(String),
    #[error("cannot start the Kubernetes adapter thread: {0}")]
    Thread(String),
    #[error("the Kubernetes API did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the Kubernetes API answered with an error: {0}")]
    Api(String),
}

/// The running adapter: its view and a way to ask the API directly.
pub struct Adapter {
    view: View,
    handle: tokio::runtime::Handle,
    client: Client,
}

/// The answer to "is this pod still on this node?", straight from the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodPresence {
    /// The pod exists with this UID and is bound to this node.
    Here,
    /// No such pod, a pod of that name with another UID, or one bound
    /// elsewhere: the pod weft attached is gone from this node.
    Gone,
}

pub(crate) async fn client_config(source: &Source) -> Result<Config, K8sError> {
    let mut cfg = match source {
        Source::Kubeconfig(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| K8sError::Kubeconfig {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| K8sError::Kubeconfig {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?
        }
        Source::InCluster => Config::incluster().map_err(|e| K8sError::Config(e.to_string()))?,
        Source::Infer => Config::infer()
            .await
            .map_err(|e| K8sError::Config(e.to_string()))?,
    };
    // an API server that is down answers connects at once; one behind a
    // partition should not hold a retry for kube's default 30 s
    cfg.connect_timeout = Some(Duration::from_secs(5));
    Ok(cfg)
}

impl Adapter {
    /// Starts the adapter thread and its watches. Returns once the client is
    /// configured (a bad kubeconfig is an error here); it does not wait for
    /// the API server, which may be away: the watches retry until it answers.
    pub fn start(cfg: AdapterConfig) -> Result<Adapter, K8sError> {
        // kube's rustls feature leaves the choice of crypto to the binary
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("k8s".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(K8sError::Thread(e.to_string())));
                        return;
                    }
                };
                rt.block_on(async move {
                    let client = match client_config(&cfg.source).await.and_then(|c| {
                        let server = c.cluster_url.to_string();
                        crate::timing::client(c).map(|cl| (cl, server))
                    }) {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let (client, server) = client;
                    let index = Index::new(server);
                    let _ = tx.send(Ok((
                        index.view(),
                        tokio::runtime::Handle::current(),
                        client.clone(),
                    )));
                    run_watches(client, index, &cfg).await;
                });
            })
            .map_err(|e| K8sError::Thread(e.to_string()))?;
        let (view, handle, client) = rx
            .recv()
            .map_err(|_| K8sError::Thread("the adapter thread ended at start".into()))??;
        Ok(Adapter {
            view,
            handle,
            client,
        })
    }

    pub fn view(&self) -> View {
        self.view.clone()
    }

    /// Asks the API server whether the pod `namespace/name` (with `uid`,
    /// when known) is still on `node`. Used before cleaning up after a pod
    /// whose DEL never came: the watch's memory alone is not enough.
    pub fn pod_presence(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        node: &str,
        timeout: Duration,
    ) -> Result<PodPresence, K8sError> {
        let api: Api<Guarded<Pod>> = Api::namespaced(self.client.clone(), namespace);
        let name = name.to_string();
        let (tx, rx) = mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(api.get_opt(&name).await);
        });
        let got = rx
            .recv_timeout(timeout)
            .map_err(|_| K8sError::Timeout(timeout))?
            .map_err(|e| K8sError::Api(e.to_string()))?;
        Ok(match got {
            None => PodPresence::Gone,
            Some(pod) => {
                let meta: &ObjectMeta = k8s_openapi::Metadata::metadata(&pod);
                let uid_differs = !uid.is_empty() && meta.uid.as_deref().is_some_and(|u| u != uid);
                let elsewhere = match &pod {
                    Guarded::Ok(p) => p
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_deref())
                        .is_some_and(|n| n != node),
                    // unreadable: say nothing beyond what metadata proves
                    Guarded::Bad { .. } => false,
                };
                if uid_differs || elsewhere {
                    PodPresence::Gone
                } else {
                    PodPresence::Here
                }
            }
        })
    }
}

fn spawn_watch<K>(client: &Client, index: &Index, cfg: watcher::Config, backoff: WatchBackoff)
where
    K: Convert
        + k8s_openapi::Resource
        + k8s_openapi::Metadata<Ty = ObjectMeta>
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::Out: Indexed,
{
    let api: Api<Guarded<K>> = Api::all(client.clone());
    let events = watcher(api, cfg).backoff(backoff);
    tokio::spawn(drive::<K, _>(index.clone(), events));
}

async fn run_watches(client: Client, index: Index, cfg: &AdapterConfig) {
    let b = || WatchBackoff::new(cfg.max_backoff);
    let all = watcher::Config::default;
    spawn_watch::<Node>(
        &client,
        &index,
        all().fields(&format!("metadata.name={}", cfg.node)),
        b(),
    );
    let pods = if cfg.all_pods {
        all()
    } else {
        all().fields(&format!("spec.nodeName={}", cfg.node))
    };
    spawn_watch::<Pod>(&client, &index, pods, b());
    spawn_watch::<Namespace>(&client, &index, all(), b());
    spawn_watch::<NetworkPolicy>(&client, &index, all(), b());
    spawn_watch::<Service>(&client, &index, all(), b());
    spawn_watch::<EndpointSlice>(&client, &index, all(), b());
    crate::cnp::spawn(&client, &index, b());
    // the watches run until the process ends
    std::future::pending::<()>().await;
}
