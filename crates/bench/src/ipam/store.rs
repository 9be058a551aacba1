//! The two shared stores a burst runs on: weft's own etcd cluster, or the
//! lab's Kubernetes API server (`--store kubernetes`, no etcd of weft's own).

use super::*;

use weft_lab::kube::{KubeSpec, DEFAULT_READY_TIMEOUT, KUBE_ETCD_CLIENT};

/// Where the weftds of a burst keep the cluster's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchStore {
    Etcd,
    Kubernetes,
}

impl BenchStore {
    pub fn parse(s: &str) -> anyhow::Result<BenchStore> {
        match s {
            "etcd" => Ok(BenchStore::Etcd),
            "kubernetes" => Ok(BenchStore::Kubernetes),
            other => bail!("--store {other:?}: use etcd or kubernetes"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BenchStore::Etcd => "etcd",
            BenchStore::Kubernetes => "kubernetes",
        }
    }

    /// One letter in lab names (they are at most 21 characters).
    pub(super) fn tag(self) -> &'static str {
        match self {
            BenchStore::Etcd => "e",
            BenchStore::Kubernetes => "k",
        }
    }

    /// Sets up `lab` for this store: etcd members, or a Kubernetes control
    /// plane whose API server is the store.
    pub(super) fn configure(self, lab: &mut LabSpec, etcd_members: usize) {
        match self {
            BenchStore::Etcd => lab.etcd_members = etcd_members,
            BenchStore::Kubernetes => {
                lab.etcd_members = 0;
                lab.kubernetes = Some(KubeSpec {
                    ready_timeout: DEFAULT_READY_TIMEOUT,
                    store: true,
                    ..KubeSpec::default()
                });
            }
        }
    }

    /// Whether the weftds of `lab` really share this store.
    pub(super) fn running(self, lab: &Lab) -> bool {
        match self {
            BenchStore::Etcd => lab.shared_store,
            BenchStore::Kubernetes => lab.kube().is_some() && lab.etcd_members().is_empty(),
        }
    }

    /// The revision of the etcd behind the store (weft's own, or the API
    /// server's): every write of anything adds one.
    pub(super) fn revision(self, lab: &Lab) -> anyhow::Result<i64> {
        match self {
            BenchStore::Etcd => etcd_revision(lab),
            BenchStore::Kubernetes => {
                let addr: SocketAddr = KUBE_ETCD_CLIENT.parse()?;
                revision_at(lab, addr)
            }
        }
    }

    /// The processes that are the store (etcd members, or kube-apiserver
    /// and its etcd) and, apart, the rest of a Kubernetes lab's processes
    /// (kubelets, kube-proxies, controller-manager, scheduler).
    pub(super) fn pids(self, lab: &Lab) -> StorePids {
        let mut p = StorePids::default();
        match self {
            BenchStore::Etcd => p.etcd = lab.etcd_members().iter().filter_map(|m| m.pid).collect(),
            BenchStore::Kubernetes => {
                for proc in lab.kube().map(|k| k.processes.as_slice()).unwrap_or(&[]) {
                    let Some(pid) = proc.pid else { continue };
                    match (proc.name.as_str(), proc.node) {
                        ("etcd", None) => p.etcd.push(pid),
                        ("kube-apiserver", None) => p.apiserver.push(pid),
                        _ => p.kube_others.push(pid),
                    }
                }
            }
        }
        p
    }
}

#[derive(Debug, Default)]
pub(super) struct StorePids {
    pub(super) etcd: Vec<u32>,
    pub(super) apiserver: Vec<u32>,
    pub(super) kube_others: Vec<u32>,
}
