//! A pod's sandbox: its network namespace, attached through the node's CNI
//! configuration exactly as containerd's CRI attaches one (same CNI_ARGS,
//! same ADD / DEL order, the cached result handed to DEL). Blocking: the
//! async loop runs these on tokio's blocking pool.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use weft_lab::conflist::{cri_args, load_conflist, run_conflist, ListCall};
use weft_lab::kubelet::{netns_name, sandbox_id, KubePod};

use crate::podview::PodView;

/// What this kubelet knows of its node.
#[derive(Debug, Clone)]
pub struct NodeCfg {
    pub name: String,
    /// The node's own addresses (its underlay), IPv4 first.
    pub ips: Vec<IpAddr>,
    /// The node's namespace: CNI plugins run there, hostNetwork pods serve there.
    pub netns: PathBuf,
    /// Prefix of every pod namespace (the lab's name).
    pub netns_prefix: String,
    pub state_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub cni_path: Vec<PathBuf>,
}

const IFNAME: &str = "eth0";

/// Creates `pod`'s sandbox: hostNetwork pods get the node's namespace and
/// addresses; others a fresh namespace and weft's addresses through CNI ADD.
/// On failure nothing is left behind.
pub fn create(node: &NodeCfg, pod: &PodView, started_at: &str) -> anyhow::Result<KubePod> {
    let mut rec = KubePod {
        uid: pod.uid.clone(),
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        host_network: pod.host_network,
        netns: node.netns.clone(),
        sandbox_id: sandbox_id(&pod.uid),
        ips: node.ips.clone(),
        cni_result: serde_json::Value::Null,
        started_at: started_at.to_string(),
    };
    if pod.host_network {
        return Ok(rec);
    }
    let ns = netns_name(&node.netns_prefix, &pod.name, &pod.uid);
    rec.netns = Path::new("/run/netns").join(&ns);
    if rec.netns.exists() {
        // left by a kubelet that died between creating it and recording the
        // pod: start over (weft's ADD is idempotent for the same sandbox)
        let _ = weft_lab::ip(&["netns", "del", &ns]);
    }
    weft_lab::ip(&["netns", "add", &ns])?;
    let attached = (|| -> anyhow::Result<serde_json::Value> {
        weft_lab::ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        cni(node, &rec, "ADD", None)
    })();
    match attached {
        Ok(result) => {
            rec.ips = result_ips(&result);
            rec.cni_result = result;
            Ok(rec)
        }
        Err(e) => {
            // as the CRI does after a failed ADD: DEL, then drop the namespace
            let _ = cni(node, &rec, "DEL", None);
            let _ = weft_lab::ip(&["netns", "del", &ns]);
            Err(e.context(format!("attaching pod {}/{}", pod.namespace, pod.name)))
        }
    }
}

/// Tears a pod's sandbox down: CNI DEL (with the cached result), then the
/// namespace. hostNetwork pods have nothing to tear down.
pub fn destroy(node: &NodeCfg, rec: &KubePod) -> anyhow::Result<()> {
    if rec.host_network {
        return Ok(());
    }
    let prev = (!rec.cni_result.is_null()).then_some(&rec.cni_result);
    let del = cni(node, rec, "DEL", prev);
    if let Some(ns) = rec.netns.file_name().and_then(|n| n.to_str()) {
        if rec.netns.exists() {
            weft_lab::ip(&["netns", "del", ns])?;
        }
    }
    del.map(|_| ())
}

fn cni(
    node: &NodeCfg,
    rec: &KubePod,
    command: &str,
    prev: Option<&serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let list = load_conflist(&node.cni_conf_dir)?;
    // a namespace already gone is passed as "" (as containerd does on DEL)
    let netns = if rec.netns.exists() {
        rec.netns.to_string_lossy().into_owned()
    } else {
        String::new()
    };
    let args = cri_args(&rec.namespace, &rec.name, &rec.sandbox_id, &rec.uid);
    let runtime_config = serde_json::json!({});
    run_conflist(
        &list,
        &node.cni_path,
        &node.netns,
        &ListCall {
            command,
            container_id: &rec.sandbox_id,
            netns: &netns,
            ifname: IFNAME,
            args: &args,
            runtime_config: &runtime_config,
            prev_result: prev,
        },
    )
    .with_context(|| format!("CNI {command} of {}/{}", rec.namespace, rec.name))
}

/// The addresses of a CNI result, IPv4 first.
pub fn result_ips(result: &serde_json::Value) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = result["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|ip| ip["address"].as_str())
                .filter_map(|s| s.split('/').next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    ips.sort_by_key(|ip| ip.is_ipv6());
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_addresses_come_ipv4_first_without_prefix() {
        let r = serde_json::json!({"ips": [
            {"address": "fd00:1::5/64"}, {"address": "10.22.0.5/24"}]});
        assert_eq!(
            result_ips(&r),
            vec![
                "10.22.0.5".parse::<IpAddr>().unwrap(),
                "fd00:1::5".parse().unwrap()
            ]
        );
        assert!(result_ips(&serde_json::Value::Null).is_empty());
    }
}
