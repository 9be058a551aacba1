//! The control plane's command lines: etcd for the API server,
//! kube-apiserver, kube-controller-manager and kube-scheduler, all in the
//! lab's fabric namespace. Pure: built from a [`Layout`], unit-tested.

use std::path::{Path, PathBuf};

use super::pki::PkiFiles;
use super::{
    APISERVER_PORT, KUBE_ETCD_CLIENT, KUBE_ETCD_PEER, POD_CIDRS, SERVICE_ACCOUNT_ISSUER,
    SERVICE_CIDRS,
};

/// Where a lab cluster's files are.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `<lab dir>/kube`
    pub dir: PathBuf,
    /// The cluster's name (`weft-lab-<lab>`).
    pub cluster: String,
    /// The fabric's IPv4 lab address the API server binds.
    pub apiserver_address: String,
}

impl Layout {
    pub fn pki(&self) -> PkiFiles {
        PkiFiles {
            dir: self.dir.join("pki"),
        }
    }
    pub fn kubeconfig(&self, who: &str) -> PathBuf {
        self.dir.join(format!("{who}.kubeconfig"))
    }
    pub fn etcd_data(&self) -> PathBuf {
        self.dir.join("etcd")
    }
    pub fn log(&self, component: &str) -> PathBuf {
        self.dir.join(format!("{component}.log"))
    }
    pub fn server(&self) -> String {
        format!("https://{}:{APISERVER_PORT}", self.apiserver_address)
    }
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn flag(name: &str, value: impl AsRef<str>) -> String {
    format!("--{name}={}", value.as_ref())
}

/// etcd 3.6 for the API server alone, on the fabric's loopback: only the
/// API server (in the same namespace) reaches it. weft's own etcd members,
/// when the lab has them, are a separate cluster on 198.18.0.2+.
pub fn etcd_args(l: &Layout) -> Vec<String> {
    let client = format!("http://{KUBE_ETCD_CLIENT}");
    let peer = format!("http://{KUBE_ETCD_PEER}");
    vec![
        flag("name", "kube"),
        flag("data-dir", p(&l.etcd_data())),
        flag("listen-client-urls", &client),
        flag("advertise-client-urls", &client),
        flag("listen-peer-urls", &peer),
        flag("initial-advertise-peer-urls", &peer),
        flag("initial-cluster", format!("kube={peer}")),
        flag("initial-cluster-token", &l.cluster),
        flag("initial-cluster-state", "new"),
        flag("log-level", "warn"),
        flag("logger", "zap"),
        flag("log-outputs", "stderr"),
    ]
}

pub fn apiserver_args(l: &Layout) -> Vec<String> {
    let pki = l.pki();
    vec![
        flag("advertise-address", &l.apiserver_address),
        flag("bind-address", &l.apiserver_address),
        flag("secure-port", APISERVER_PORT.to_string()),
        flag("etcd-servers", format!("http://{KUBE_ETCD_CLIENT}")),
        flag("tls-cert-file", p(&pki.cert("apiserver"))),
        flag("tls-private-key-file", p(&pki.key("apiserver"))),
        flag("client-ca-file", p(&pki.ca())),
        flag(
            "kubelet-client-certificate",
            p(&pki.cert("apiserver-kubelet-client")),
        ),
        flag(
            "kubelet-client-key",
            p(&pki.key("apiserver-kubelet-client")),
        ),
        // node names are not in any DNS: reach kubelets by their underlay address
        flag("kubelet-preferred-address-types", "InternalIP"),
        flag("authorization-mode", "Node,RBAC"),
        flag("enable-admission-plugins", "NodeRestriction"),
        flag("service-account-issuer", SERVICE_ACCOUNT_ISSUER),
        flag("service-account-key-file", p(&pki.sa_pub())),
        flag("service-account-signing-key-file", p(&pki.sa_key())),
        flag("service-cluster-ip-range", SERVICE_CIDRS.join(",")),
        flag("allow-privileged", "true"),
        flag("profiling", "false"),
        // never fall back to writing self-signed certificates elsewhere
        flag("cert-dir", p(&l.dir.join("apiserver"))),
    ]
}

/// The flags the controller-manager and the scheduler share: their
/// kubeconfig for everything, serving TLS from the lab CA on the fabric's
/// loopback.
fn component_args(l: &Layout, who: &str, port: u16) -> Vec<String> {
    let pki = l.pki();
    let kubeconfig = p(&l.kubeconfig(who));
    vec![
        flag("kubeconfig", &kubeconfig),
        flag("authentication-kubeconfig", &kubeconfig),
        flag("authorization-kubeconfig", &kubeconfig),
        flag("bind-address", "127.0.0.1"),
        flag("secure-port", port.to_string()),
        flag("tls-cert-file", p(&pki.cert(&format!("{who}-serving")))),
        flag(
            "tls-private-key-file",
            p(&pki.key(&format!("{who}-serving"))),
        ),
        flag("client-ca-file", p(&pki.ca())),
        flag("leader-elect", "true"),
        flag("profiling", "false"),
    ]
}

pub fn controller_manager_args(l: &Layout) -> Vec<String> {
    let pki = l.pki();
    let mut args = component_args(l, "controller-manager", CONTROLLER_MANAGER_PORT);
    args.extend([
        // every controller on by default: Deployments, ReplicaSets,
        // EndpointSlices, namespaces, service accounts, node lifecycle, ...
        flag("controllers", "*"),
        // weft does IPAM: no node podCIDRs
        flag("allocate-node-cidrs", "false"),
        flag("cluster-name", &l.cluster),
        flag("service-cluster-ip-range", SERVICE_CIDRS.join(",")),
        flag("root-ca-file", p(&pki.ca())),
        flag("service-account-private-key-file", p(&pki.sa_key())),
        // each controller acts with its own service account (real RBAC)
        flag("use-service-account-credentials", "true"),
    ]);
    args
}

pub fn scheduler_args(l: &Layout) -> Vec<String> {
    component_args(l, "scheduler", SCHEDULER_PORT)
}

/// Where the controller-manager and the scheduler answer `/healthz`.
pub const CONTROLLER_MANAGER_PORT: u16 = 10257;
pub const SCHEDULER_PORT: u16 = 10259;

/// kube-proxy's pod CIDRs flag (weft's default pools).
pub fn cluster_cidrs() -> String {
    POD_CIDRS.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            dir: "/run/weft-lab/p/kube".into(),
            cluster: "weft-lab-p".into(),
            apiserver_address: "198.18.0.1".into(),
        }
    }

    #[test]
    fn the_api_server_binds_only_its_lab_address_with_node_authorization_and_rbac() {
        let a = apiserver_args(&layout()).join(" ");
        for want in [
            "--bind-address=198.18.0.1",
            "--advertise-address=198.18.0.1",
            "--secure-port=6443",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--etcd-servers=http://127.0.0.1:2379",
            "--service-cluster-ip-range=10.96.0.0/16,fd00:10:96::/112",
            "--service-account-signing-key-file=/run/weft-lab/p/kube/pki/sa.key",
            "--client-ca-file=/run/weft-lab/p/kube/pki/ca.crt",
        ] {
            assert!(a.contains(want), "{want} in {a}");
        }
        // every file it uses is inside the lab's directory
        for arg in apiserver_args(&layout()) {
            if let Some((_, v)) = arg.split_once('=') {
                if v.starts_with('/') {
                    assert!(v.starts_with("/run/weft-lab/p/"), "{arg}");
                }
            }
        }
    }

    #[test]
    fn etcd_listens_on_the_fabric_loopback_only() {
        let a = etcd_args(&layout()).join(" ");
        assert!(a.contains("--listen-client-urls=http://127.0.0.1:2379"));
        assert!(a.contains("--listen-peer-urls=http://127.0.0.1:2380"));
        assert!(a.contains("--data-dir=/run/weft-lab/p/kube/etcd"));
    }

    #[test]
    fn controllers_run_all_without_node_cidrs_under_their_own_accounts() {
        let a = controller_manager_args(&layout()).join(" ");
        for want in [
            "--controllers=*",
            "--allocate-node-cidrs=false",
            "--use-service-account-credentials=true",
            "--kubeconfig=/run/weft-lab/p/kube/controller-manager.kubeconfig",
            "--bind-address=127.0.0.1",
            "--leader-elect=true",
        ] {
            assert!(a.contains(want), "{want} in {a}");
        }
        let s = scheduler_args(&layout()).join(" ");
        assert!(s.contains("--kubeconfig=/run/weft-lab/p/kube/scheduler.kubeconfig"));
        assert!(s.contains("--tls-cert-file=/run/weft-lab/p/kube/pki/scheduler-serving.crt"));
    }
}
