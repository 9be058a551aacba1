//! Building, describing and tearing down a lab.

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::cmd::{cni_exec, ip, CniOutcome};
use crate::kube::{KubeCluster, KubeSpec};

// the methods of `Lab`, by concern
mod etcd;
mod lifecycle;
mod pods;
mod weftd;

/// Where every lab keeps its files.
pub const LAB_ROOT: &str = "/run/weft-lab";
const FABRIC_V4: &str = "198.18.0.1";
const FABRIC_V6: &str = "2001:2::1";
/// The network name pods of a lab join.
pub const NETWORK: &str = "weft-lab";
/// The most nodes a lab holds (underlay 198.18.0.10 ... .41).
pub const MAX_NODES: usize = 32;
/// The most etcd members a lab runs (198.18.0.2 ... .4).
pub const MAX_ETCD_MEMBERS: usize = 3;
/// etcd's client and peer ports.
pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;
/// Where the lab finds etcd (Debian's package).
pub const ETCD_BIN: &str = "/usr/bin/etcd";
/// How long `up` / `start_etcd_member` wait for etcd to report healthy.
const ETCD_HEALTH_WAIT: Duration = Duration::from_secs(15);

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Unique name; prefixes every namespace and the lab's directory.
    pub name: String,
    /// Directory holding weftd and weft-cni.
    pub bin_dir: PathBuf,
    /// MTU of the nodes' underlay links (pods inherit it).
    pub underlay_mtu: u32,
    /// Quarantine of released addresses, seconds.
    pub quarantine_seconds: u64,
    /// Extra flags for weftd (every node).
    pub weftd_args: Vec<String>,
    /// Nodes, each its own namespace and weftd (1 ..= [`MAX_NODES`]).
    pub nodes: usize,
    /// 0: every weftd keeps its embedded store; 1 ..= 3: a real etcd cluster
    /// in the fabric namespace that the weftds share.
    pub etcd_members: usize,
    /// How pod traffic crosses nodes: "overlay" or "native".
    pub routing: String,
    /// A Kubernetes control plane in the fabric and kube-proxy on every
    /// node (see [`crate::kube`]); None: weft alone.
    pub kubernetes: Option<KubeSpec>,
}

impl LabSpec {
    pub fn new(name: &str, bin_dir: &Path) -> LabSpec {
        LabSpec {
            name: name.to_string(),
            bin_dir: bin_dir.to_path_buf(),
            underlay_mtu: 1500,
            quarantine_seconds: 30,
            weftd_args: Vec::new(),
            nodes: 1,
            etcd_members: 0,
            routing: "overlay".to_string(),
            kubernetes: None,
        }
    }

    /// A lab as before multi-node: one node namespace `P-node`, weftd with
    /// its embedded store and exactly the flags it always had.
    pub fn is_classic(&self) -> bool {
        self.nodes == 1 && self.etcd_members == 0
    }

    /// How many lines `Lab::up` hands its `progress` callback.
    pub fn progress_steps(&self) -> usize {
        let etcd = if self.etcd_members > 0 {
            self.etcd_members + 1
        } else {
            0
        };
        let kube = if self.kubernetes.is_some() {
            crate::kube::progress_steps(self.nodes)
        } else {
            0
        };
        2 + self.nodes + etcd + 2 * self.nodes + kube
    }

    fn validate(&self) -> anyhow::Result<()> {
        check_name(&self.name)?;
        if !(1..=MAX_NODES).contains(&self.nodes) {
            bail!("a lab has 1 to {MAX_NODES} nodes, not {}", self.nodes);
        }
        if self.etcd_members > MAX_ETCD_MEMBERS {
            bail!(
                "a lab runs 0 to {MAX_ETCD_MEMBERS} etcd members (1 or 3 make sense), not {}",
                self.etcd_members
            );
        }
        if self.routing != "overlay" && self.routing != "native" {
            bail!("routing {:?}: use \"overlay\" or \"native\"", self.routing);
        }
        if let Some(k) = &self.kubernetes {
            k.check()?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pod {
    pub name: String,
    pub netns: PathBuf,
    pub container_id: String,
    pub ips: Vec<IpAddr>,
    /// Index (0-based) of the node the pod runs on, in [`Lab::nodes`].
    #[serde(default)]
    pub node: usize,
}

/// One node of a lab: a namespace with underlay `ul0` and its own weftd.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node name weftd runs under; also the namespace's name.
    pub name: String,
    pub netns: PathBuf,
    pub socket: PathBuf,
    /// Holds this node's `state/`, `spool/` and `weftd.log` (node 1: the
    /// lab directory itself, so `weft --lab P` finds its socket).
    pub dir: PathBuf,
    pub underlay_v4: IpAddr,
    pub underlay_v6: IpAddr,
    pub weftd_pid: Option<u32>,
}

impl NodeInfo {
    pub fn spool_dir(&self) -> PathBuf {
        self.dir.join("spool")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("weftd.log")
    }

    /// Whether this node's weftd process runs.
    pub fn weftd_alive(&self) -> bool {
        self.weftd_pid.is_some_and(pid_alive)
    }
}

/// One etcd member, running inside the fabric namespace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EtcdMember {
    /// Member name, `e1` ...
    pub name: String,
    pub address: IpAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub pid: Option<u32>,
}

impl EtcdMember {
    pub fn client_url(&self) -> String {
        format!("http://{}:{ETCD_CLIENT_PORT}", self.address)
    }

    pub fn peer_url(&self) -> String {
        format!("http://{}:{ETCD_PEER_PORT}", self.address)
    }

    pub fn alive(&self) -> bool {
        self.pid.is_some_and(pid_alive)
    }
}

/// A lab on disk (`lab.json`) and in the kernel.
///
/// The `node_*` and `weftd_pid` fields describe node 1 (index 0), as they
/// did when a lab had only one node; [`Lab::nodes`] lists every node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lab {
    pub name: String,
    pub dir: PathBuf,
    pub bin_dir: PathBuf,
    pub fabric_netns: PathBuf,
    pub node_netns: PathBuf,
    pub node_underlay_v4: IpAddr,
    pub node_underlay_v6: IpAddr,
    pub fabric_v4: IpAddr,
    pub fabric_v6: IpAddr,
    pub weftd_pid: Option<u32>,
    pub weftd_args: Vec<String>,
    pub pods: Vec<Pod>,
    /// Every node, node 1 first (labs written before multi-node: empty,
    /// filled in from the fields above on load).
    #[serde(default)]
    nodes: Vec<NodeInfo>,
    #[serde(default)]
    etcd: Vec<EtcdMember>,
    /// "overlay" or "native".
    #[serde(default = "default_routing")]
    pub routing: String,
    /// Whether the weftds run against etcd (`--store etcd ...`); false: each
    /// keeps its embedded store.
    #[serde(default)]
    pub shared_store: bool,
    /// Whether the weftds also get `--node-ip <v4>,<v6>` (with etcd).
    #[serde(default)]
    pass_node_ip: bool,
    /// Whether the weftds keep cluster state in the API server (`--store
    /// kubernetes`): each also gets `--node-ip`.
    #[serde(default)]
    pub(crate) kube_store: bool,
    /// The Kubernetes cluster of a `--kubernetes` lab.
    #[serde(default)]
    pub(crate) kube: Option<KubeCluster>,
}

fn default_routing() -> String {
    "overlay".into()
}

fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 24
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if !ok {
        bail!("lab or pod name {name:?}: use 1-24 letters, digits or '-', starting with a letter or digit");
    }
    Ok(())
}

/// Pod names that would collide with the lab's own namespaces.
fn check_pod_name(name: &str) -> anyhow::Result<()> {
    check_name(name)?;
    let node_like = name
        .strip_prefix('n')
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    if name == "fab" || name == "node" || node_like {
        bail!("pod name {name:?} is taken by the lab's own namespaces (fab, node, n1, n2, ...)");
    }
    Ok(())
}

fn node_underlay(index: usize) -> (IpAddr, IpAddr) {
    let v4 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10 + index as u8));
    // 2001:2::10, 2001:2::11, ... (the same digits as the v4 host part)
    let v6 = format!("2001:2::{}", 10 + index)
        .parse()
        .expect("a valid IPv6 address");
    (v4, v6)
}

fn etcd_address(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2 + index as u8))
}

/// Which multi-node flags this weftd knows: (`--store etcd` and
/// `--etcd-endpoints`, `--node-ip`).
fn weftd_multinode_flags(bin_dir: &Path) -> (bool, bool) {
    let help = Command::new(bin_dir.join("weftd"))
        .arg("--help")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    (
        help.contains("--etcd-endpoints") && help.contains("--store"),
        help.contains("--node-ip"),
    )
}

impl Lab {
    pub fn dir_of(name: &str) -> PathBuf {
        Path::new(LAB_ROOT).join(name)
    }

    /// Node 1's namespace name, for `ip -n`.
    pub fn node_netns_name(&self) -> String {
        self.nodes[0].name.clone()
    }

    /// Node 1's weftd socket.
    pub fn socket(&self) -> PathBuf {
        self.nodes[0].socket.clone()
    }

    /// Node 1's spool directory.
    pub fn spool_dir(&self) -> PathBuf {
        self.nodes[0].spool_dir()
    }

    /// Node 1's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.nodes[0].state_dir()
    }

    /// Node 1's weftd log.
    pub fn log_path(&self) -> PathBuf {
        self.nodes[0].log_path()
    }

    pub fn cni_plugin(&self) -> PathBuf {
        self.bin_dir.join("weft-cni")
    }

    /// Every node, node 1 (index 0) first.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes.clone()
    }

    /// Node `i` (0-based).
    pub fn node(&self, i: usize) -> anyhow::Result<&NodeInfo> {
        self.nodes
            .get(i)
            .with_context(|| format!("lab {} has no node index {i}", self.name))
    }

    /// Every etcd member (empty with the embedded store).
    pub fn etcd_members(&self) -> Vec<EtcdMember> {
        self.etcd.clone()
    }

    /// The etcd client URLs, `http://198.18.0.2:2379`, ...
    pub fn etcd_endpoints(&self) -> Vec<String> {
        self.etcd.iter().map(EtcdMember::client_url).collect()
    }

    pub fn load(name: &str) -> anyhow::Result<Lab> {
        check_name(name)?;
        let path = Lab::dir_of(name).join("lab.json");
        let bytes = fs::read(&path)
            .with_context(|| format!("no lab named {name} ({} missing)", path.display()))?;
        let mut lab: Lab = serde_json::from_slice(&bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        if lab.nodes.is_empty() {
            // written before labs had several nodes
            lab.nodes.push(NodeInfo {
                name: format!("{}-node", lab.name),
                netns: lab.node_netns.clone(),
                socket: lab.dir.join("weftd.sock"),
                dir: lab.dir.clone(),
                underlay_v4: lab.node_underlay_v4,
                underlay_v6: lab.node_underlay_v6,
                weftd_pid: lab.weftd_pid,
            });
        }
        Ok(lab)
    }

    /// Every lab on this machine.
    pub fn list() -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(LAB_ROOT)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.path().join("lab.json").exists())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    pub fn save(&self) -> anyhow::Result<()> {
        let tmp = self.dir.join("lab.json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        fs::rename(&tmp, self.dir.join("lab.json"))?;
        Ok(())
    }
}

/// Plugs node `index` (namespace `node`) into the fabric bridge: veth
/// The fabric stands for a physical switch: when the host has br_netfilter
/// loaded (container runtimes load it), frames bridged on `br0` would pass
/// through the fabric netns' iptables hooks, a cost no real underlay has.
/// Best effort: without br_netfilter there is nothing to switch off.
fn switch_only(fab: &str) {
    let _ = Command::new("ip")
        .args(["netns", "exec", fab, "sysctl", "-q", "-e", "-w"])
        .args([
            "net.bridge.bridge-nf-call-iptables=0",
            "net.bridge.bridge-nf-call-ip6tables=0",
            "net.bridge.bridge-nf-call-arptables=0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `ul0` in the node, `node<index>` on `br0`, addresses, default routes.
fn wire_node(
    fab: &str,
    node: &str,
    index: usize,
    mtu: &str,
    v4: IpAddr,
    v6: IpAddr,
) -> anyhow::Result<()> {
    let port = format!("node{index}");
    ip(&[
        "link", "add", "ul0", "netns", node, "mtu", mtu, "type", "veth", "peer", "name", &port,
        "netns", fab, "mtu", mtu,
    ])?;
    ip(&["-n", fab, "link", "set", &port, "master", "br0", "up"])?;
    ip(&["-n", node, "link", "set", "lo", "up"])?;
    ip(&["-n", node, "link", "set", "ul0", "up"])?;
    ip(&["-n", node, "addr", "add", &format!("{v4}/15"), "dev", "ul0"])?;
    ip(&[
        "-n",
        node,
        "addr",
        "add",
        &format!("{v6}/64"),
        "dev",
        "ul0",
        "nodad",
    ])?;
    ip(&["-n", node, "route", "add", "default", "via", FABRIC_V4])?;
    ip(&[
        "-n", node, "-6", "route", "add", "default", "via", FABRIC_V6,
    ])?;
    Ok(())
}

/// A minimal HTTP/1.0 GET; returns the body.
fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let code = head.split(' ').nth(1);
    if !head.starts_with("HTTP/1.") || code != Some("200") {
        return Err(std::io::Error::other(format!(
            "GET {path}: {}",
            head.lines().next().unwrap_or_default()
        )));
    }
    Ok(body.to_string())
}

fn nix_is_root() -> bool {
    // SAFETY-free: getuid via /proc to keep this crate free of unsafe
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|v| v.split_whitespace().next() == Some("0"))
            })
        })
        .unwrap_or(false)
}

/// Whether `pid` runs (a zombie waiting to be reaped does not count).
pub fn pid_alive(pid: u32) -> bool {
    // a zombie still has /proc/<pid>; look at its state. A thread-group
    // leader that exited is a zombie while its other threads still run (and
    // hold its files, e.g. weftd's store lock): alive until they are gone.
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    let zombie = field("State:").starts_with('Z');
    let threads: u32 = field("Threads:").parse().unwrap_or(1);
    !zombie || threads > 1
}

/// Ends a process this lab started, by its pid: TERM, then KILL after 5 s.
/// Only when its program is `binary` and its command line mentions `marker`
/// (the lab's directory): never a process that reused the pid. Returns once
/// the process is reaped (at most 5 s after it ended): a thread group's
/// leader shows as a zombie while its other threads still run and hold its
/// files, the store's lock among them, so a restart right after a stop that
/// returned at "zombie" could find the lock still taken.
pub(crate) fn stop_pid(pid: u32, binary: &str, marker: &str) {
    let ours = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let mut args = c.split(|b| *b == 0);
            let program_ok = args.next().is_some_and(|argv0| {
                Path::new(&*String::from_utf8_lossy(argv0))
                    .file_name()
                    .is_some_and(|f| f == binary)
            });
            program_ok && args.any(|a| String::from_utf8_lossy(a).contains(marker))
        })
        .unwrap_or(false);
    let start = start_time(pid);
    if !ours || !pid_alive(pid) || start.is_none() {
        return;
    }
    for (signal, patience) in [
        ("-TERM", Duration::from_secs(5)),
        ("-KILL", Duration::from_secs(2)),
    ] {
        let _ = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status();
        let deadline = Instant::now() + patience;
        while pid_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !pid_alive(pid) {
            break;
        }
    }
    // until reaped (or the pid belongs to another process): whoever started
    // it reaps it (the lab's reaper thread, or init once that process ended)
    let deadline = Instant::now() + Duration::from_secs(5);
    while start_time(pid) == start && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// When `pid` started (clock ticks since boot, field 22 of its stat): tells
/// a process from a later one that reused its pid. `None` when there is none.
fn start_time(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // after the comm: state is field 0 of the rest, starttime field 19
    s.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests;
