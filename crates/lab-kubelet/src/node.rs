//! The Node object and its heartbeat: registration with the node's underlay
//! addresses and capacity, a Lease in `kube-node-lease` renewed every
//! [`HEARTBEAT`], and the Ready condition kept fresh, so the node lifecycle
//! controller never sees the node as gone and never taints it.
//!
//! The Lease is the kubelet's own: named after the node in
//! `kube-node-lease`, `holderIdentity` the node, `leaseDurationSeconds`
//! 40, renewed every 10 s, owned by the Node. weftd on `--store kubernetes`
//! reads node liveness from the Ready condition, which the node lifecycle
//! controller turns `Unknown` when this Lease goes unrenewed, so a stopped
//! stand-in is a lost node as a stopped kubelet is.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};

use crate::sandbox::NodeCfg;

/// How often the Lease is renewed and the Ready condition refreshed (the
/// real kubelet's lease renew interval).
pub const HEARTBEAT: Duration = Duration::from_secs(10);
const LEASE_SECONDS: i32 = 40;
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Pods a node takes (the real kubelet's default `maxPods`).
const MAX_PODS: &str = "110";

/// RFC 3339 to the second, as the API writes `Time`.
pub fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The Node this kubelet registers (status included, as the kubelet does).
pub fn node_object(cfg: &NodeCfg, since: &str, memory_kib: u64, cpus: usize) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": cfg.name,
            "labels": {
                "kubernetes.io/hostname": cfg.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            },
        },
        "spec": {},
        "status": node_status(cfg, since, &now(), memory_kib, cpus)["status"],
    })
}

/// The Node status: addresses (the underlay), capacity, conditions with
/// Ready True and a fresh heartbeat.
pub fn node_status(
    cfg: &NodeCfg,
    since: &str,
    heartbeat: &str,
    memory_kib: u64,
    cpus: usize,
) -> Value {
    let mut addresses: Vec<Value> = cfg
        .ips
        .iter()
        .map(|ip| json!({"type": "InternalIP", "address": ip.to_string()}))
        .collect();
    addresses.push(json!({"type": "Hostname", "address": cfg.name}));
    let resources = json!({
        "cpu": cpus.to_string(),
        "memory": format!("{memory_kib}Ki"),
        "pods": MAX_PODS,
        "ephemeral-storage": "10Gi",
    });
    let cond = |t: &str, status: &str, reason: &str, message: &str| {
        json!({"type": t, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": heartbeat, "lastTransitionTime": since})
    };
    json!({"status": {
        "addresses": addresses,
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "the lab kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "the lab kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "the lab kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "weft's lab kubelet is posting ready status"),
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": kernel_version(),
            "osImage": "weft lab", "containerRuntimeVersion": "weft-lab://0.1",
            "kubeletVersion": "v1.36.3-weft-lab", "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": "amd64",
        },
    }})
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// MemTotal of this machine, KiB (the lab's nodes share it).
pub fn memory_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(1024 * 1024)
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Registers the Node (or takes over the one that exists, as a restarted
/// kubelet does) and writes its status; returns the Node's UID. Retries
/// until the API server answers.
pub async fn register(client: &Client, cfg: &NodeCfg, since: &str) -> String {
    let nodes: Api<Node> = Api::all(client.clone());
    let (mem, cpus) = (
        memory_kib(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    let mut said = false;
    loop {
        let body: Node = serde_json::from_value(node_object(cfg, since, mem, cpus))
            .expect("the node object is a Node");
        let created = match nodes.create(&PostParams::default(), &body).await {
            Ok(n) => Ok(n),
            Err(e) if is_code(&e, 409) => nodes.get(&cfg.name).await,
            Err(e) => Err(e),
        };
        let done = match created {
            Ok(n) => heartbeat_status(client, cfg, since).await.map(|_| n),
            Err(e) => Err(e),
        };
        match done {
            Ok(n) => {
                tracing::info!(node = %cfg.name, "node registered");
                return n.metadata.uid.unwrap_or_default();
            }
            Err(e) => {
                if !said {
                    tracing::warn!(error = %e, "registering the node failed; retrying every second until the API server answers");
                    said = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Refreshes the Node's status (the Ready heartbeat).
pub async fn heartbeat_status(client: &Client, cfg: &NodeCfg, since: &str) -> kube::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let status = node_status(cfg, since, &now(), memory_kib(), cpus);
    // a merge patch, not a strategic one: addresses merge by `type` there,
    // which garbles an IPv4 and an IPv6 InternalIP
    nodes
        .patch_status(&cfg.name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .map(|_| ())
}

/// Renews (or creates) the node's Lease.
pub async fn renew_lease(client: &Client, cfg: &NodeCfg, node_uid: &str) -> kube::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let renew = MicroTime(Timestamp::now());
    let patch = json!({"spec": {"renewTime": renew, "holderIdentity": cfg.name,
                                "leaseDurationSeconds": LEASE_SECONDS}});
    match leases
        .patch(&cfg.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_code(&e, 404) => {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {
                    "name": cfg.name,
                    "namespace": LEASE_NAMESPACE,
                    // as the kubelet does: the lease goes when the node goes
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                        "name": cfg.name, "uid": node_uid}],
                },
                "spec": patch["spec"],
            }))
            .expect("the lease object is a Lease");
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Renews the Lease and refreshes Ready every [`HEARTBEAT`], forever;
/// failures are logged (once per outage) and retried on the next beat.
pub async fn heartbeat(client: Client, cfg: NodeCfg, node_uid: String, since: String) {
    let mut beat = tokio::time::interval(HEARTBEAT);
    let mut failing = false;
    loop {
        beat.tick().await;
        let r = async {
            renew_lease(&client, &cfg, &node_uid).await?;
            heartbeat_status(&client, &cfg, &since).await
        }
        .await;
        match (r, failing) {
            (Err(e), false) => {
                tracing::warn!(error = %e, "node heartbeat failed; retrying every {} s", HEARTBEAT.as_secs());
                failing = true;
            }
            (Ok(()), true) => {
                tracing::info!("node heartbeat back");
                failing = false;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NodeCfg {
        NodeCfg {
            name: "lab-n1".into(),
            ips: vec![
                "198.18.0.10".parse().unwrap(),
                "2001:2::10".parse().unwrap(),
            ],
            netns: "/run/netns/lab-n1".into(),
            netns_prefix: "lab".into(),
            state_dir: "/tmp/x".into(),
            cni_conf_dir: "/tmp/y".into(),
            cni_path: vec![],
        }
    }

    #[test]
    fn the_node_shows_its_underlay_addresses_capacity_and_ready() {
        let n: Node =
            serde_json::from_value(node_object(&cfg(), "2026-12-03T10:00:00Z", 2048, 2)).unwrap();
        let st = n.status.unwrap();
        let addrs: Vec<(String, String)> = st
            .addresses
            .unwrap()
            .into_iter()
            .map(|a| (a.type_, a.address))
            .collect();
        assert_eq!(
            addrs,
            vec![
                ("InternalIP".into(), "198.18.0.10".into()),
                ("InternalIP".into(), "2001:2::10".into()),
                ("Hostname".into(), "lab-n1".into())
            ]
        );
        let cap = st.capacity.unwrap();
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(cap["memory"].0, "2048Ki");
        let ready = st
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(
            n.metadata.labels.unwrap()["kubernetes.io/hostname"],
            "lab-n1"
        );
    }
}
