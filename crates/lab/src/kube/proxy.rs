//! The real kube-proxy on each lab node, inside the node's namespace, so
//! Services work from the start (until weft's own Service load balancing
//! replaces it).

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::control_plane::cluster_cidrs;

/// Which kube-proxy backend programs the node's Services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    #[default]
    Nftables,
    Iptables,
}

impl fmt::Display for ProxyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyMode::Nftables => "nftables",
            ProxyMode::Iptables => "iptables",
        })
    }
}

impl FromStr for ProxyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "nftables" => Ok(ProxyMode::Nftables),
            "iptables" => Ok(ProxyMode::Iptables),
            other => Err(format!(
                "kube-proxy mode {other:?}: use \"nftables\" or \"iptables\""
            )),
        }
    }
}

/// Where kube-proxy answers `/healthz` on a node.
pub const HEALTHZ_PORT: u16 = 10256;
const METRICS_PORT: u16 = 10249;

/// kube-proxy's flags on node `node_name` with underlay address `v4`.
pub fn args(node_name: &str, v4: IpAddr, kubeconfig: &Path, mode: ProxyMode) -> Vec<String> {
    let mut a = vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--hostname-override={node_name}"),
        format!("--proxy-mode={mode}"),
        format!("--bind-address={v4}"),
        format!("--healthz-bind-address={v4}:{HEALTHZ_PORT}"),
        format!("--metrics-bind-address={v4}:{METRICS_PORT}"),
        format!("--cluster-cidr={}", cluster_cidrs()),
        "--detect-local-mode=ClusterCIDR".into(),
        // NodePorts on the underlay only (the lab's addresses)
        "--nodeport-addresses=198.18.0.0/15,2001:2::/64".into(),
        // nf_conntrack_max is global to the host: leave it, and the
        // per-namespace timeouts, as they are
        "--conntrack-max-per-core=0".into(),
        "--conntrack-min=0".into(),
        "--conntrack-tcp-timeout-established=0s".into(),
        "--conntrack-tcp-timeout-close-wait=0s".into(),
        // a lab process must not make itself the OOM killer's last choice
        "--oom-score-adj=0".into(),
        "--profiling=false".into(),
    ];
    if mode == ProxyMode::Iptables {
        // no route_localnet sysctl: NodePorts are not served on 127.0.0.1
        a.push("--iptables-localhost-nodeports=false".into());
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_proxy_binds_the_node_and_leaves_global_sysctls_alone() {
        let a = args(
            "p-n2",
            "198.18.0.11".parse().unwrap(),
            Path::new("/run/weft-lab/p/kube/kube-proxy.kubeconfig"),
            ProxyMode::Nftables,
        )
        .join(" ");
        for want in [
            "--hostname-override=p-n2",
            "--proxy-mode=nftables",
            "--bind-address=198.18.0.11",
            "--healthz-bind-address=198.18.0.11:10256",
            "--conntrack-max-per-core=0",
            "--cluster-cidr=10.244.0.0/16,fd00:10:244::/56",
            "--kubeconfig=/run/weft-lab/p/kube/kube-proxy.kubeconfig",
        ] {
            assert!(a.contains(want), "{want} in {a}");
        }
        assert!(!a.contains("localhost-nodeports"));
        let i = args(
            "p-n1",
            "198.18.0.10".parse().unwrap(),
            Path::new("/k"),
            ProxyMode::Iptables,
        );
        assert!(i.contains(&"--proxy-mode=iptables".to_string()));
        assert!(i.contains(&"--iptables-localhost-nodeports=false".to_string()));
    }

    #[test]
    fn modes_parse_and_print() {
        assert_eq!("iptables".parse::<ProxyMode>(), Ok(ProxyMode::Iptables));
        assert_eq!(ProxyMode::default().to_string(), "nftables");
        assert!("ipvs".parse::<ProxyMode>().is_err());
    }
}
