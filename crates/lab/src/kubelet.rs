//! The lab kubelet seen from the lab: where each node's kubelet keeps its
//! pods, the CNI configuration it reads, and starting and stopping it.
//!
//! The kubelet is the lab's own stand-in (`weft-lab-kubelet`): a real
//! kubelet needs a container runtime with images, which the lab does not
//! have. Per node it registers the Node, runs each bound pod's network
//! namespace through weft-cni as containerd's CRI does, serves the pod's
//! container ports, and writes pod status.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::lab::{Lab, NodeInfo, NETWORK};

/// The kubelet's program name.
pub const KUBELET_BIN: &str = "weft-lab-kubelet";

/// One pod a node's kubelet runs, as it records it (one JSON file per pod):
/// what it needs to re-adopt the pod after a restart, and what `weft lab
/// exec` / `probe` need to find the pod's namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubePod {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub host_network: bool,
    /// The pod's namespace (hostNetwork: the node's).
    pub netns: PathBuf,
    /// The sandbox ID CNI knows the pod by (CNI_CONTAINERID).
    pub sandbox_id: String,
    /// IPv4 first.
    pub ips: Vec<IpAddr>,
    /// The conflist's final ADD result, handed back to DEL.
    #[serde(default)]
    pub cni_result: serde_json::Value,
    /// RFC 3339: when the sandbox came up.
    pub started_at: String,
}

/// Where node `node`'s kubelet keeps its state.
pub fn state_dir(node: &NodeInfo) -> PathBuf {
    node.dir.join("kubelet")
}

/// Where a kubelet with state in `state_dir` records its pods.
pub fn pods_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("pods")
}

/// The per-node CNI configuration directory (a node's `/etc/cni/net.d`;
/// the host's own is not touched).
pub fn cni_conf_dir(node: &NodeInfo) -> PathBuf {
    node.dir.join("cni").join("net.d")
}

/// Every pod recorded in `state_dir` (unreadable records are skipped).
pub fn records(state_dir: &Path) -> Vec<KubePod> {
    let mut pods: Vec<KubePod> = fs::read_dir(pods_dir(state_dir))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .filter_map(|e| serde_json::from_slice(&fs::read(e.path()).ok()?).ok())
                .collect()
        })
        .unwrap_or_default();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    pods
}

/// Records `pod` (atomically: a crash leaves the old record or the new one).
pub fn save_record(state_dir: &Path, pod: &KubePod) -> anyhow::Result<()> {
    let dir = pods_dir(state_dir);
    fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!("{}.tmp", pod.uid));
    fs::write(&tmp, serde_json::to_vec_pretty(pod)?)?;
    fs::rename(&tmp, dir.join(format!("{}.json", pod.uid)))?;
    Ok(())
}

pub fn remove_record(state_dir: &Path, uid: &str) {
    let _ = fs::remove_file(pods_dir(state_dir).join(format!("{uid}.json")));
}

/// The name of a pod's network namespace: the lab's prefix (so `weft lab
/// down` removes it), the pod's name and a piece of its UID (pod names
/// repeat across namespaces and over time).
pub fn netns_name(prefix: &str, pod: &str, uid: &str) -> String {
    let short: String = pod.chars().take(40).collect();
    let tag: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    format!("{prefix}-{short}-{tag}")
}

/// The sandbox ID of a pod: stable for its UID (so a restarted kubelet
/// finds what it gave CNI), 64 hex digits like containerd's.
pub fn sandbox_id(uid: &str) -> String {
    let hex: String = uid.chars().filter(char::is_ascii_hexdigit).collect();
    format!("{hex:0<64}").chars().take(64).collect()
}

/// Finds pod `namespace/name` on any node of `lab`.
pub fn find_pod(lab: &Lab, namespace: &str, name: &str) -> anyhow::Result<(NodeInfo, KubePod)> {
    for node in lab.nodes() {
        if let Some(p) = records(&state_dir(&node))
            .into_iter()
            .find(|p| p.namespace == namespace && p.name == name)
        {
            return Ok((node, p));
        }
    }
    bail!(
        "no pod {namespace}/{name} runs in lab {}; `weft lab kubectl --name {} -- get pods -A -o wide` lists them",
        lab.name,
        lab.name
    )
}

/// The node `spec` names: its full name (`lab-n2`) or the short one (`n2`).
pub fn find_node(lab: &Lab, spec: &str) -> anyhow::Result<NodeInfo> {
    let full = format!("{}-{spec}", lab.name);
    lab.nodes()
        .into_iter()
        .find(|n| n.name == spec || n.name == full)
        .with_context(|| {
            let names: Vec<String> = lab.nodes().into_iter().map(|n| n.name).collect();
            format!(
                "lab {} has no node {spec}; it has {}",
                lab.name,
                names.join(", ")
            )
        })
}

/// The network namespace `spec` names: `NS/POD` (a pod of the lab
/// cluster), `node:NODE`, or the name of a pod `weft lab pod add` made.
pub fn netns_of(lab: &Lab, spec: &str) -> anyhow::Result<PathBuf> {
    if let Some(node) = spec.strip_prefix("node:") {
        return Ok(find_node(lab, node)?.netns);
    }
    if let Some((ns, pod)) = spec.split_once('/') {
        return Ok(find_pod(lab, ns, pod)?.1.netns);
    }
    lab.pods
        .iter()
        .find(|p| p.name == spec)
        .map(|p| p.netns.clone())
        .with_context(|| format!("{spec:?}: name a pod as NAMESPACE/POD, a node as node:NODE"))
}

/// The address `spec` names: an IP address, `NS/POD` (its first address,
/// IPv4 first), `node:NODE` (its underlay IPv4), or a `weft lab pod add` pod.
pub fn address_of(lab: &Lab, spec: &str) -> anyhow::Result<IpAddr> {
    if let Ok(ip) = spec.parse::<IpAddr>() {
        return Ok(ip);
    }
    if let Some(node) = spec.strip_prefix("node:") {
        return Ok(find_node(lab, node)?.underlay_v4);
    }
    let ips = if let Some((ns, pod)) = spec.split_once('/') {
        find_pod(lab, ns, pod)?.1.ips
    } else {
        lab.pods
            .iter()
            .find(|p| p.name == spec)
            .map(|p| p.ips.clone())
            .with_context(|| format!("{spec:?}: give an address, NAMESPACE/POD, or node:NODE"))?
    };
    ips.first()
        .copied()
        .with_context(|| format!("{spec} has no address yet"))
}

/// The conflist node `i`'s kubelet reads: weft-cni alone, talking to that
/// node's weftd.
pub fn write_cni_conf(lab: &Lab, i: usize) -> anyhow::Result<PathBuf> {
    let node = lab.node(i)?;
    let dir = cni_conf_dir(node);
    fs::create_dir_all(&dir)?;
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [{
            "type": "weft-cni",
            "agentSocket": node.socket,
            "spoolDir": node.spool_dir(),
        }],
    });
    let path = dir.join("10-weft.conflist");
    let tmp = dir.join(".10-weft.conflist.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(&conf)?)?;
    fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The flags node `i`'s kubelet runs with.
pub fn kubelet_args(lab: &Lab, i: usize, kubeconfig: &Path) -> anyhow::Result<Vec<String>> {
    let node = lab.node(i)?;
    let s = |p: &Path| p.to_string_lossy().into_owned();
    Ok(vec![
        "--kubeconfig".into(),
        s(kubeconfig),
        "--node-name".into(),
        node.name.clone(),
        "--node-ip".into(),
        format!("{},{}", node.underlay_v4, node.underlay_v6),
        "--node-netns".into(),
        s(&node.netns),
        "--netns-prefix".into(),
        lab.name.clone(),
        "--state-dir".into(),
        s(&state_dir(node)),
        "--cni-conf-dir".into(),
        s(&cni_conf_dir(node)),
        "--cni-bin-dir".into(),
        format!("{}:{}", lab.bin_dir.display(), crate::REFERENCE_PLUGINS),
    ])
}

/// The command that runs node `i`'s kubelet (its conflist written first).
/// Spawned inside the node's namespace after its weftd, as a node agent of
/// the lab cluster (`lab down` stops it); its arguments name the lab's
/// directory, which `down` checks before signalling its pid.
pub fn kubelet_command(lab: &Lab, i: usize, kubeconfig: &Path) -> anyhow::Result<Command> {
    let bin = lab.bin_dir.join(KUBELET_BIN);
    if !bin.exists() {
        bail!(
            "{} not found; build it with `cargo build --bins` (or --release) first",
            bin.display()
        );
    }
    write_cni_conf(lab, i)?;
    let mut cmd = Command::new(bin);
    cmd.args(kubelet_args(lab, i, kubeconfig)?)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env(
            "RUST_LOG",
            std::env::var("WEFT_KUBELET_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null());
    Ok(cmd)
}

impl Lab {
    /// Starts node `i`'s kubelet as a node agent of the lab cluster (its
    /// pid recorded in lab.json, its log `kubelet.log` in the node's
    /// directory, stopped by `lab down` or `stop_node_agent(i, "kubelet")`).
    pub fn start_kubelet(&mut self, i: usize) -> anyhow::Result<u32> {
        let kubeconfig = self
            .kube()
            .with_context(|| format!("lab {} runs no Kubernetes", self.name))?
            .node_kubeconfig(i)?
            .to_path_buf();
        let mut cmd = kubelet_command(self, i, &kubeconfig)?;
        self.spawn_node_agent(i, "kubelet", &mut cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_namespaces_carry_the_lab_prefix_and_a_piece_of_the_uid() {
        let n = netns_name("wtk1x1", "web-5d8f-abcde", "0f1e2d3c-aaaa-bbbb");
        assert_eq!(n, "wtk1x1-web-5d8f-abcde-0f1e2d3c");
        let long = "p".repeat(200);
        assert!(netns_name("lab", &long, "u").len() < 60);
    }

    #[test]
    fn sandbox_ids_are_64_hex_digits_stable_per_uid() {
        let a = sandbox_id("0f1e2d3c-aaaa-bbbb-cccc-0123456789ab");
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, sandbox_id("0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"));
        assert_ne!(a, sandbox_id("1f1e2d3c-aaaa-bbbb-cccc-0123456789ab"));
    }

    #[test]
    fn records_round_trip_through_the_state_dir() {
        let dir = std::env::temp_dir().join(format!("weft-kubelet-rec-{}", std::process::id()));
        let pod = KubePod {
            uid: "u-1".into(),
            namespace: "demo".into(),
            name: "web-1".into(),
            host_network: false,
            netns: "/run/netns/x".into(),
            sandbox_id: sandbox_id("u-1"),
            ips: vec!["10.0.0.1".parse().unwrap()],
            cni_result: serde_json::json!({"ips": []}),
            started_at: "2026-12-03T10:00:00Z".into(),
        };
        save_record(&dir, &pod).unwrap();
        let back = records(&dir);
        remove_record(&dir, "u-1");
        let after = records(&dir);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(back, vec![pod]);
        assert!(after.is_empty());
    }
}
