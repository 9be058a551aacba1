//! A real Kubernetes control plane in a lab (`weft lab up --kubernetes`).
//!
//! In the fabric namespace: etcd 3.6 for the API server (on the fabric's
//! loopback), kube-apiserver on `https://198.18.0.1:6443`,
//! kube-controller-manager and kube-scheduler (on the fabric's loopback).
//! On every node, inside its namespace: kube-proxy, and whatever other node
//! agents are spawned through [`Lab::spawn_node_agent`] (the lab kubelet).
//! TLS from a lab CA, RBAC + Node authorization + NodeRestriction, and
//! service-account tokens signed with the lab's key. Files live under
//! `/run/weft-lab/<lab>/kube/`; nothing binds or is written outside the lab.
//!
//! The binaries come from `scripts/build-kube.sh` (one `kube` binary with a
//! symlink per command), cached in `/var/cache/weft/kube/<version>/bin`.

mod agent;
mod client;
mod control_plane;
mod kubeconfig;
mod pki;
mod processes;
mod proxy;
mod ready;
mod services;

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::lab::{pid_alive, stop_pid, Lab};
use control_plane::Layout;
pub use pki::{plan as pki_plan, CertSpec, PkiInputs};
pub use proxy::ProxyMode;
pub use services::{cgroup2_mount, ServiceProxy};

/// The Kubernetes release the lab runs (the default of scripts/build-kube.sh).
pub const KUBE_VERSION: &str = "v1.36.3";
/// The etcd the API server uses: the one built into the same binary.
pub const KUBE_ETCD_VERSION: &str = "3.6.8";
pub const APISERVER_PORT: u16 = 6443;
/// etcd for the API server, on the fabric namespace's loopback.
pub const KUBE_ETCD_CLIENT: &str = "127.0.0.1:2379";
pub const KUBE_ETCD_PEER: &str = "127.0.0.1:2380";
/// Service CIDRs, dual-stack (IPv4 primary).
pub const SERVICE_CIDRS: [&str; 2] = ["10.96.0.0/16", "fd00:10:96::/112"];
/// The pods' CIDRs: weftd's default pools.
pub const POD_CIDRS: [&str; 2] = ["10.244.0.0/16", "fd00:10:244::/56"];
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Env var naming the build cache (as scripts/build-kube.sh reads it).
pub const KUBE_CACHE_ENV: &str = "WEFT_KUBE_CACHE";
const KUBE_CACHE_DEFAULT: &str = "/var/cache/weft/kube";
/// How long `up` waits for the API server by default: it takes 10-60 s on
/// a 2-CPU machine that other work shares.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(240);
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Control-plane components in start order (`down` stops them in reverse).
pub const COMPONENTS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// What `weft lab up --kubernetes` asks for.
#[derive(Debug, Clone)]
pub struct KubeSpec {
    /// Where `kube-apiserver`, `kubectl`, ... are.
    pub bin_dir: PathBuf,
    pub proxy_mode: ProxyMode,
    /// Who load-balances Services: kube-proxy, or weftd (`--services on`,
    /// no kube-proxy, a cgroup per node).
    pub services: ServiceProxy,
    /// How long to wait for each component to become ready.
    pub ready_timeout: Duration,
    /// weftd keeps the cluster's state in the API server (`--store
    /// kubernetes`, weft's CRDs and store RBAC applied first) instead of
    /// each node's embedded store; no etcd of weft's own.
    pub store: bool,
}

impl Default for KubeSpec {
    fn default() -> Self {
        KubeSpec {
            bin_dir: default_kube_bin_dir(),
            proxy_mode: ProxyMode::default(),
            services: ServiceProxy::default(),
            ready_timeout: DEFAULT_READY_TIMEOUT,
            store: false,
        }
    }
}

/// `$WEFT_KUBE_CACHE` (default /var/cache/weft/kube) `/<version>/bin`.
pub fn default_kube_bin_dir() -> PathBuf {
    let cache = std::env::var_os(KUBE_CACHE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(KUBE_CACHE_DEFAULT));
    cache.join(KUBE_VERSION).join("bin")
}

impl KubeSpec {
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        for c in ["kube-apiserver", "kubectl", "etcd", "kube-proxy"] {
            if !self.bin_dir.join(c).exists() {
                bail!(
                    "{c} not found in {}: build the Kubernetes control plane with \
                     scripts/build-kube.sh (make setup runs it; ~21 min once, then cached), \
                     or leave Kubernetes out (--no-kubernetes)",
                    self.bin_dir.display()
                );
            }
        }
        Ok(())
    }
}

/// How many lines [`start`] and [`finish`] hand `progress` for `nodes` nodes
/// (notes while waiting start with a space and are not steps).
pub fn progress_steps(nodes: usize) -> usize {
    6 + nodes
}

/// One process of the lab cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KubeProcess {
    /// A component (`kube-apiserver`, ...) or a node agent's name
    /// (`kube-proxy`, `kubelet`, ...).
    pub name: String,
    /// The node (index) a node agent runs on; None: the fabric namespace.
    pub node: Option<usize>,
    /// The program's file name: `down` signals a pid only while it still
    /// runs this program with the lab's directory in its command line.
    pub program: String,
    pub pid: Option<u32>,
    pub log: PathBuf,
}

impl KubeProcess {
    pub fn alive(&self) -> bool {
        self.pid.is_some_and(pid_alive)
    }
}

/// A lab's Kubernetes cluster, as recorded in lab.json.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KubeCluster {
    pub version: String,
    pub bin_dir: PathBuf,
    /// `/run/weft-lab/<lab>/kube`
    pub dir: PathBuf,
    /// `https://198.18.0.1:6443` (reachable inside the lab's namespaces)
    pub server: String,
    /// The lab CA (PEM).
    pub ca: PathBuf,
    /// `system:masters`.
    pub admin_kubeconfig: PathBuf,
    /// One per node (by index): `system:node:<node>` in `system:nodes`,
    /// for that node's kubelet.
    pub node_kubeconfigs: Vec<PathBuf>,
    /// `system:kube-proxy`.
    pub proxy_kubeconfig: PathBuf,
    pub proxy_mode: ProxyMode,
    /// Who load-balances Services.
    #[serde(default)]
    pub services: ServiceProxy,
    /// With `services: weft`: the lab's cgroup v2 directory, one
    /// subdirectory per node (see `services.rs`).
    #[serde(default)]
    pub cgroup_dir: Option<PathBuf>,
    /// With `services: weft`: the lab's bpffs, where weftds pin their maps.
    #[serde(default)]
    pub bpffs: Option<PathBuf>,
    pub service_cidrs: Vec<String>,
    pub pod_cidrs: Vec<String>,
    pub processes: Vec<KubeProcess>,
    cluster: String,
    apiserver_address: String,
}

impl KubeCluster {
    fn layout(&self) -> Layout {
        Layout {
            dir: self.dir.clone(),
            cluster: self.cluster.clone(),
            apiserver_address: self.apiserver_address.clone(),
        }
    }

    /// The process named `name` (on node `node`, None: the control plane).
    pub fn process(&self, name: &str, node: Option<usize>) -> Option<&KubeProcess> {
        self.processes
            .iter()
            .find(|p| p.name == name && p.node == node)
    }

    /// A node's kubeconfig (its kubelet's identity).
    pub fn node_kubeconfig(&self, i: usize) -> anyhow::Result<&Path> {
        self.node_kubeconfigs
            .get(i)
            .map(PathBuf::as_path)
            .with_context(|| format!("no node index {i} in this lab cluster"))
    }

    /// The directory of `kubectl` and the other commands.
    pub fn kubectl_bin(&self) -> PathBuf {
        self.bin_dir.join("kubectl")
    }
}

/// Opens (appending) a process's log, root-only.
fn open_log(path: &Path) -> anyhow::Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Spawns `cmd` in `netns`, output to `log`, in its own process group (a
/// Ctrl-C at the terminal of `weft lab up` must not reach it), and reaps it
/// in the background while this process lives.
fn spawn_logged(cmd: &mut Command, netns: &Path, log: &Path) -> anyhow::Result<u32> {
    let out = open_log(log)?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    std::os::unix::process::CommandExt::process_group(cmd, 0);
    let child = weft_datapath::netns::spawn_in(cmd, netns)
        .with_context(|| format!("starting {}", cmd.get_program().to_string_lossy()))?;
    let pid = child.id();
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    Ok(pid)
}

/// The last lines of a log, for an error message.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Certificates, kubeconfigs, etcd and kube-apiserver; returns without
/// waiting for the API server (the weftds start meanwhile, [`finish`] waits).
pub(crate) fn start(
    lab: &mut Lab,
    spec: &KubeSpec,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    let layout = Layout {
        dir: lab.dir.join("kube"),
        cluster: format!("weft-lab-{}", lab.name),
        apiserver_address: lab.fabric_v4.to_string(),
    };
    let nodes = lab.nodes();
    let inputs = PkiInputs {
        lab: lab.name.clone(),
        apiserver_addresses: vec![lab.fabric_v4, lab.fabric_v6],
        service_ips: SERVICE_CIDRS
            .iter()
            .map(|c| first_address(c))
            .collect::<anyhow::Result<_>>()?,
        nodes: nodes
            .iter()
            .map(|n| (n.name.clone(), vec![n.underlay_v4, n.underlay_v6]))
            .collect(),
    };
    let count = pki::plan(&inputs).len();
    progress(&format!(
        "kubernetes: lab CA, {count} certificates, service-account key and kubeconfigs in {}",
        layout.dir.display()
    ));
    fs::create_dir_all(&layout.dir)?;
    let files = pki::generate(&inputs, &layout.pki().dir)?;
    let ca_pem = fs::read_to_string(files.ca())?;
    let write_kubeconfig = |who: &str, stem: &str, user: &str| -> anyhow::Result<PathBuf> {
        let path = layout.kubeconfig(who);
        let text = kubeconfig::render(
            &layout.cluster,
            &layout.server(),
            &ca_pem,
            user,
            &fs::read_to_string(files.cert(stem))?,
            &fs::read_to_string(files.key(stem))?,
        );
        pki::write_private(&path, &text)?;
        Ok(path)
    };
    let admin = write_kubeconfig("admin", "admin", "weft-lab-admin")?;
    write_kubeconfig(
        "controller-manager",
        "controller-manager",
        "system:kube-controller-manager",
    )?;
    write_kubeconfig("scheduler", "scheduler", "system:kube-scheduler")?;
    let proxy = write_kubeconfig("kube-proxy", "kube-proxy", "system:kube-proxy")?;
    let node_kubeconfigs = nodes
        .iter()
        .map(|n| {
            write_kubeconfig(
                &format!("node-{}", n.name),
                &format!("node-{}", n.name),
                &format!("system:node:{}", n.name),
            )
        })
        .collect::<anyhow::Result<_>>()?;
    lab.kube = Some(KubeCluster {
        version: KUBE_VERSION.into(),
        bin_dir: spec.bin_dir.clone(),
        dir: layout.dir.clone(),
        server: layout.server(),
        ca: files.ca(),
        admin_kubeconfig: admin,
        node_kubeconfigs,
        proxy_kubeconfig: proxy,
        proxy_mode: spec.proxy_mode,
        services: spec.services,
        cgroup_dir: None,
        bpffs: None,
        service_cidrs: SERVICE_CIDRS.map(String::from).to_vec(),
        pod_cidrs: POD_CIDRS.map(String::from).to_vec(),
        processes: Vec::new(),
        cluster: layout.cluster.clone(),
        apiserver_address: layout.apiserver_address.clone(),
    });
    if spec.services == ServiceProxy::Weft {
        let dir = services::create(lab)?;
        if let Some(k) = lab.kube.as_mut() {
            k.cgroup_dir = Some(dir);
        }
        lab.save()?;
        let bpffs = services::mount_bpffs(lab)?;
        if let Some(k) = lab.kube.as_mut() {
            k.bpffs = Some(bpffs);
        }
    }
    lab.save()?;
    progress(&format!(
        "kubernetes: starting etcd {KUBE_ETCD_VERSION} (API server's store, {KUBE_ETCD_CLIENT}) \
         and kube-apiserver {KUBE_VERSION} on {} in {}",
        layout.server(),
        lab.fabric_netns.display()
    ));
    lab.start_component("etcd")?;
    lab.start_component("kube-apiserver")?;
    Ok(())
}

/// Waits for the API server, then starts the controller-manager, the
/// scheduler and every node's agents, and waits until they work.
pub(crate) fn finish(
    lab: &mut Lab,
    spec: &KubeSpec,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    let started = Instant::now();
    lab.wait_apiserver_ready(spec.ready_timeout, progress)?;
    progress(&format!(
        "kubernetes: kube-apiserver ready ({:.1} s waited)",
        started.elapsed().as_secs_f64()
    ));
    progress("kubernetes: starting kube-controller-manager and kube-scheduler");
    lab.start_component("kube-controller-manager")?;
    lab.start_component("kube-scheduler")?;
    spawn_node_agents(lab, progress)?;
    lab.wait_control_plane(spec.ready_timeout, progress)?;
    if spec.store {
        lab.use_kubernetes_store()?;
    }
    let kubeconfig = lab.connect_weftd_to_kubernetes()?;
    progress(&format!(
        "kubernetes: weftd on every node watches the API as weft-system/weft ({}){}",
        kubeconfig.display(),
        if spec.store {
            ", its store in the API server (--store kubernetes)"
        } else {
            ""
        }
    ));
    let kube = lab.kube.as_ref().context("no cluster")?;
    let services = match kube.services {
        ServiceProxy::KubeProxy => "kube-proxy healthy on every node",
        ServiceProxy::Weft => "Services load-balanced by weftd (--services on)",
    };
    progress(&format!(
        "kubernetes: controller-manager and scheduler hold their leases, {services}; \
         KUBECONFIG={}",
        kube.admin_kubeconfig.display()
    ));
    Ok(())
}

/// Every node's agents, one progress line per node. The lab kubelet joins
/// here through [`Lab::spawn_node_agent`], before kube-proxy: kube-proxy
/// waits (up to 30 s) for its Node object, which the kubelet registers.
fn spawn_node_agents(lab: &mut Lab, progress: &mut dyn FnMut(&str)) -> anyhow::Result<()> {
    let mode = lab.kube.as_ref().context("no cluster")?.proxy_mode;
    for (i, n) in lab.nodes().iter().enumerate() {
        let kubelet = lab.start_kubelet(i)?;
        if let Some(cg) = lab.node_cgroup(i) {
            // its pods' servers run in the node's cgroup, as containers would
            services::join(&cg, kubelet)?;
            progress(&format!(
                "node agents on {}: weft-lab-kubelet (pid {kubelet}, cgroup {}); Services by weftd, no kube-proxy",
                n.name,
                cg.display()
            ));
            continue;
        }
        let pid = lab.start_kube_proxy(i, mode)?;
        progress(&format!(
            "node agents on {}: weft-lab-kubelet (pid {kubelet}), kube-proxy ({mode}, pid {pid})",
            n.name
        ));
    }
    Ok(())
}

/// Stops every process of the lab cluster (node agents, then the control
/// plane in reverse start order), going on past errors.
pub(crate) fn stop_all(lab: &Lab, marker: &str) {
    let Some(kube) = &lab.kube else { return };
    for group in stop_order(&kube.processes) {
        std::thread::scope(|s| {
            for p in group {
                if let Some(pid) = p.pid {
                    s.spawn(move || stop_pid(pid, &p.program, marker));
                }
            }
        });
    }
    if let Some(dir) = &kube.cgroup_dir {
        if let Err(e) = services::remove(dir) {
            eprintln!("weft lab down: {e:#}");
        }
    }
    if let Some(dir) = &kube.bpffs {
        if let Err(e) = services::unmount_bpffs(dir) {
            eprintln!("weft lab down: {e:#}");
        }
    }
}

/// The groups `down` stops one after the other (each group in parallel):
/// the node agents (the API server's clients), the controllers, the API
/// server, its etcd. Every recorded process is in exactly one group.
fn stop_order(processes: &[KubeProcess]) -> Vec<Vec<&KubeProcess>> {
    let rank = |p: &KubeProcess| match (p.node, p.name.as_str()) {
        (Some(_), _) => 0,
        (None, "kube-apiserver") => 2,
        (None, "etcd") => 3,
        (None, _) => 1,
    };
    (0..4)
        .map(|r| processes.iter().filter(|p| rank(p) == r).collect())
        .collect()
}

/// The first address of a CIDR (the `kubernetes` Service's ClusterIP).
fn first_address(cidr: &str) -> anyhow::Result<IpAddr> {
    // network + 1, as the API server picks it (for IPv6 too, where ipnet's
    // hosts() would start at the network address itself)
    let net: ipnet::IpNet = cidr.parse().with_context(|| format!("cidr {cidr}"))?;
    Ok(match net.network() {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) + 1).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) + 1).into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubernetes_service_takes_the_first_address_of_each_service_cidr() {
        assert_eq!(
            first_address(SERVICE_CIDRS[0]).unwrap(),
            "10.96.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            first_address(SERVICE_CIDRS[1]).unwrap(),
            "fd00:10:96::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn the_pinned_version_is_the_one_the_build_script_builds() {
        let script = include_str!("../../../../scripts/build-kube.sh");
        assert!(
            script.contains(&format!("version=${{WEFT_KUBE_VERSION:-{KUBE_VERSION}}}")),
            "scripts/build-kube.sh builds another version than {KUBE_VERSION}"
        );
        assert!(default_kube_bin_dir().ends_with(format!("{KUBE_VERSION}/bin")));
    }

    #[test]
    fn down_stops_node_agents_then_controllers_then_the_api_server_then_etcd() {
        let p = |name: &str, node: Option<usize>| KubeProcess {
            name: name.into(),
            node,
            program: name.into(),
            pid: Some(1),
            log: PathBuf::new(),
        };
        let procs: Vec<KubeProcess> = vec![
            p("etcd", None),
            p("kube-apiserver", None),
            p("kube-controller-manager", None),
            p("kube-scheduler", None),
            p("kube-proxy", Some(0)),
            p("kubelet", Some(1)),
        ];
        let names: Vec<Vec<&str>> = stop_order(&procs)
            .iter()
            .map(|g| g.iter().map(|p| p.name.as_str()).collect())
            .collect();
        assert_eq!(
            names,
            vec![
                vec!["kube-proxy", "kubelet"],
                vec!["kube-controller-manager", "kube-scheduler"],
                vec!["kube-apiserver"],
                vec!["etcd"],
            ]
        );
    }

    #[test]
    fn a_missing_control_plane_build_says_how_to_get_it() {
        let spec = KubeSpec {
            bin_dir: "/nonexistent".into(),
            ..KubeSpec::default()
        };
        let e = spec.check().unwrap_err().to_string();
        assert!(e.contains("scripts/build-kube.sh"), "{e}");
    }
}
