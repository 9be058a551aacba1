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

    /// Builds the lab: namespaces, underlay, etcd, one weftd per node.
    /// `progress` gets one line per step ([`LabSpec::progress_steps`] in all).
    pub fn up(spec: &LabSpec, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Lab> {
        spec.validate()?;
        if !nix_is_root() {
            bail!("a lab needs root (network namespaces); run it with sudo");
        }
        for bin in ["weftd", "weft-cni"] {
            if !spec.bin_dir.join(bin).exists() {
                bail!(
                    "{} not found in {}; build with `cargo build --release` first",
                    bin,
                    spec.bin_dir.display()
                );
            }
        }
        if spec.etcd_members > 0 && !Path::new(ETCD_BIN).exists() {
            bail!("{ETCD_BIN} not found; apt-get install etcd-server (make setup does)");
        }
        let dir = Lab::dir_of(&spec.name);
        if dir.join("lab.json").exists() {
            bail!(
                "lab {} exists already; `weft lab down --name {}` first",
                spec.name,
                spec.name
            );
        }
        fs::create_dir_all(&dir)?;
        let fab = format!("{}-fab", spec.name);
        let nodes: Vec<NodeInfo> = (0..spec.nodes)
            .map(|i| {
                let name = if spec.is_classic() {
                    format!("{}-node", spec.name)
                } else {
                    format!("{}-n{}", spec.name, i + 1)
                };
                let node_dir = if i == 0 {
                    dir.clone()
                } else {
                    dir.join(format!("n{}", i + 1))
                };
                let (underlay_v4, underlay_v6) = node_underlay(i);
                NodeInfo {
                    netns: netns_path(&name),
                    name,
                    socket: node_dir.join("weftd.sock"),
                    dir: node_dir,
                    underlay_v4,
                    underlay_v6,
                    weftd_pid: None,
                }
            })
            .collect();
        let etcd: Vec<EtcdMember> = (0..spec.etcd_members)
            .map(|i| EtcdMember {
                name: format!("e{}", i + 1),
                address: etcd_address(i),
                data_dir: dir.join("etcd").join(format!("e{}", i + 1)),
                log: dir.join("etcd").join(format!("e{}.log", i + 1)),
                pid: None,
            })
            .collect();
        let mut lab = Lab {
            name: spec.name.clone(),
            dir: dir.clone(),
            bin_dir: spec.bin_dir.clone(),
            fabric_netns: netns_path(&fab),
            node_netns: nodes[0].netns.clone(),
            node_underlay_v4: nodes[0].underlay_v4,
            node_underlay_v6: nodes[0].underlay_v6,
            fabric_v4: FABRIC_V4.parse()?,
            fabric_v6: FABRIC_V6.parse()?,
            weftd_pid: None,
            weftd_args: std::iter::once(format!(
                "--quarantine-seconds={}",
                spec.quarantine_seconds
            ))
            .chain(spec.weftd_args.iter().cloned())
            .collect(),
            pods: Vec::new(),
            nodes,
            etcd,
            routing: spec.routing.clone(),
            shared_store: false,
            pass_node_ip: false,
            kube: None,
        };
        lab.save()?;
        let built = (|| -> anyhow::Result<()> {
            let names: Vec<&str> = lab.nodes.iter().map(|n| n.name.as_str()).collect();
            progress(&format!(
                "creating namespaces {fab} and {}",
                names.join(", ")
            ));
            ip(&["netns", "add", &fab])?;
            for n in &names {
                ip(&["netns", "add", n])?;
            }
            progress(&format!(
                "wiring the underlay: bridge br0 in {fab} (198.18.0.0/15, 2001:2::/64){}",
                if lab.etcd.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", etcd addresses {}",
                        lab.etcd
                            .iter()
                            .map(|m| m.address.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ));
            let mtu = spec.underlay_mtu.to_string();
            ip(&[
                "-n", &fab, "link", "add", "br0", "mtu", &mtu, "type", "bridge",
            ])?;
            ip(&["-n", &fab, "link", "set", "lo", "up"])?;
            ip(&["-n", &fab, "link", "set", "br0", "up"])?;
            switch_only(&fab);
            ip(&[
                "-n",
                &fab,
                "addr",
                "add",
                &format!("{FABRIC_V4}/15"),
                "dev",
                "br0",
            ])?;
            ip(&[
                "-n",
                &fab,
                "addr",
                "add",
                &format!("{FABRIC_V6}/64"),
                "dev",
                "br0",
                "nodad",
            ])?;
            for m in &lab.etcd {
                ip(&[
                    "-n",
                    &fab,
                    "addr",
                    "add",
                    &format!("{}/15", m.address),
                    "dev",
                    "br0",
                ])?;
            }
            for (i, n) in lab.nodes.iter().enumerate() {
                progress(&format!(
                    "node {}: ul0 {}/15, {}/64, default routes via the fabric",
                    n.name, n.underlay_v4, n.underlay_v6
                ));
                wire_node(&fab, &n.name, i, &mtu, n.underlay_v4, n.underlay_v6)?;
            }
            // the API server starts while the weftds come up; finish() waits
            if let Some(k) = &spec.kubernetes {
                crate::kube::start(&mut lab, k, progress)?;
            }
            if !lab.etcd.is_empty() {
                let started = Instant::now();
                for i in 0..lab.etcd.len() {
                    progress(&format!(
                        "starting etcd member {} on {} (in {fab})",
                        lab.etcd[i].name,
                        lab.etcd[i].client_url()
                    ));
                    lab.spawn_etcd(i)?;
                }
                lab.wait_etcd_healthy(None)?;
                progress(&format!(
                    "etcd healthy: {} member(s) in {} ms",
                    lab.etcd.len(),
                    started.elapsed().as_millis()
                ));
                (lab.shared_store, lab.pass_node_ip) = weftd_multinode_flags(&lab.bin_dir);
                lab.save()?;
            }
            for i in 0..lab.nodes.len() {
                let note = if !lab.etcd.is_empty() && !lab.shared_store {
                    " (this weftd has no --store etcd yet: embedded store)"
                } else {
                    ""
                };
                progress(&format!("starting weftd in {}{note}", lab.nodes[i].name));
                lab.start_weftd_on(i)?;
                progress(&format!(
                    "weftd of {} ready on {} (pid {})",
                    lab.nodes[i].name,
                    lab.nodes[i].socket.display(),
                    lab.nodes[i].weftd_pid.unwrap_or_default()
                ));
            }
            if let Some(k) = &spec.kubernetes {
                crate::kube::finish(&mut lab, k, progress)?;
            }
            Ok(())
        })();
        if let Err(e) = built {
            let _ = Lab::down(&spec.name);
            return Err(e.context(format!(
                "building lab {}; everything it made was removed",
                spec.name
            )));
        }
        Ok(lab)
    }

    /// Starts node 1's weftd (see [`Lab::start_weftd_on`]).
    pub fn start_weftd(&mut self) -> anyhow::Result<()> {
        self.start_weftd_on(0)
    }

    /// Stops node 1's weftd (see [`Lab::stop_weftd_on`]).
    pub fn stop_weftd(&mut self) -> anyhow::Result<()> {
        self.stop_weftd_on(0)
    }

    /// The flags node `i`'s weftd runs with.
    fn weftd_command_args(&self, i: usize) -> Vec<String> {
        let n = &self.nodes[i];
        let mut args = vec![
            "--socket".to_string(),
            n.socket.to_string_lossy().into_owned(),
            "--state-dir".into(),
            n.state_dir().to_string_lossy().into_owned(),
            "--spool-dir".into(),
            n.spool_dir().to_string_lossy().into_owned(),
            "--node-name".into(),
            n.name.clone(),
        ];
        if self.shared_store && !self.etcd.is_empty() {
            args.extend([
                "--store".into(),
                "etcd".into(),
                "--etcd-endpoints".into(),
                self.etcd_endpoints().join(","),
                "--routing".into(),
                self.routing.clone(),
                "--underlay-iface".into(),
                "ul0".into(),
            ]);
            if self.pass_node_ip {
                args.extend([
                    "--node-ip".into(),
                    format!("{},{}", n.underlay_v4, n.underlay_v6),
                ]);
            }
        }
        args.extend(self.weftd_args.iter().cloned());
        args
    }

    /// Starts node `i`'s weftd with the lab's arguments and waits (at most
    /// 15 s) until its socket answers.
    pub fn start_weftd_on(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn_weftd_on(i)?;
        self.wait_weftd_on(i, Duration::from_secs(15))
    }

    /// Starts node `i`'s weftd and returns at once, its pid recorded (so
    /// `down` finds it even if it never answers).
    pub fn spawn_weftd_on(&mut self, i: usize) -> anyhow::Result<u32> {
        let node = self.node(i)?.clone();
        if node.weftd_alive() {
            bail!(
                "weftd of {} runs already (pid {})",
                node.name,
                node.weftd_pid.unwrap_or_default()
            );
        }
        fs::create_dir_all(&node.dir)?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(node.log_path())?;
        let mut cmd = Command::new(self.bin_dir.join("weftd"));
        cmd.args(self.weftd_command_args(i))
            // as deploy/weftd.service does: glibc's per-thread malloc arenas
            // would otherwise hold freed memory of every connection thread
            .env("MALLOC_ARENA_MAX", "2")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // its own process group: a Ctrl-C at the terminal that ran `weft lab up`
        // must not take the lab's agent down with it
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = weft_datapath::netns::spawn_in(&mut cmd, &node.netns)
            .with_context(|| format!("starting weftd in {}", node.name))?;
        let pid = child.id();
        self.set_weftd_pid(i, Some(pid));
        self.save()?;
        // reap it in the background if it exits while we are still here
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        Ok(pid)
    }

    /// Waits (at most `limit`) until node `i`'s weftd answers on its socket;
    /// fails at once if it exited.
    pub fn wait_weftd_on(&self, i: usize, limit: Duration) -> anyhow::Result<()> {
        let node = self.node(i)?;
        let pid = node
            .weftd_pid
            .with_context(|| format!("no weftd started on {}", node.name))?;
        let deadline = Instant::now() + limit;
        loop {
            let ok = weft_api::http::call(
                &node.socket,
                "GET",
                weft_api::paths::STATUS,
                b"",
                Duration::from_secs(2),
            )
            .map(|r| r.status == 200)
            .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if !pid_alive(pid) {
                bail!(
                    "weftd of {} exited at start; see {}",
                    node.name,
                    node.log_path().display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "weftd of {} did not answer on {} within {} s; see {}",
                    node.name,
                    node.socket.display(),
                    limit.as_secs(),
                    node.log_path().display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops node `i`'s weftd (SIGTERM, then SIGKILL after 5 s) and waits for
    /// it to exit. Pods keep their network: only the agent goes away.
    pub fn stop_weftd_on(&mut self, i: usize) -> anyhow::Result<()> {
        let marker = self.pid_marker();
        if let Some(pid) = self.node(i)?.weftd_pid {
            stop_pid(pid, "weftd", &marker);
        }
        self.set_weftd_pid(i, None);
        self.save()
    }

    fn set_weftd_pid(&mut self, i: usize, pid: Option<u32>) {
        self.nodes[i].weftd_pid = pid;
        if i == 0 {
            self.weftd_pid = pid;
        }
    }

    /// What the command line of every process of this lab contains (its
    /// directory): a pid reused by another process is never signalled.
    pub(crate) fn pid_marker(&self) -> String {
        format!("{}/", self.dir.display())
    }

    /// Starts etcd member `i` in the fabric namespace and records its pid.
    fn spawn_etcd(&mut self, i: usize) -> anyhow::Result<()> {
        let m = self.etcd[i].clone();
        fs::create_dir_all(m.data_dir.parent().unwrap_or(&self.dir))?;
        let cluster = self
            .etcd
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&m.log)?;
        let mut cmd = Command::new(ETCD_BIN);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--listen-client-urls")
            .arg(m.client_url())
            .arg("--advertise-client-urls")
            .arg(m.client_url())
            .arg("--listen-peer-urls")
            .arg(m.peer_url())
            .arg("--initial-advertise-peer-urls")
            .arg(m.peer_url())
            .arg("--initial-cluster")
            .arg(&cluster)
            .arg("--initial-cluster-token")
            .arg(format!("weft-lab-{}", self.name))
            // ignored once the data directory exists (a restarted member)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--logger")
            .arg("zap")
            .arg("--log-outputs")
            .arg("stderr")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = weft_datapath::netns::spawn_in(&mut cmd, &self.fabric_netns)
            .with_context(|| format!("starting etcd member {}", m.name))?;
        self.etcd[i].pid = Some(child.id());
        self.save()?;
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        Ok(())
    }

    /// Waits (at most 15 s) until every running member — or only `only` —
    /// answers `/health` with `"health":"true"`.
    fn wait_etcd_healthy(&self, only: Option<usize>) -> anyhow::Result<()> {
        let deadline = Instant::now() + ETCD_HEALTH_WAIT;
        let wanted: Vec<usize> = match only {
            Some(i) => vec![i],
            None => (0..self.etcd.len()).collect(),
        };
        loop {
            let mut pending = Vec::new();
            for &i in &wanted {
                let m = &self.etcd[i];
                if !m.alive() {
                    bail!("etcd member {} exited; see {}", m.name, m.log.display());
                }
                if !self.etcd_member_healthy(i) {
                    pending.push(m.name.clone());
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd member(s) {} not healthy within {} s; see {}",
                    pending.join(", "),
                    ETCD_HEALTH_WAIT.as_secs(),
                    self.dir.join("etcd").display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether etcd member `i` answers `GET /health` with `"health":"true"`,
    /// asked from inside the fabric namespace.
    pub fn etcd_member_healthy(&self, i: usize) -> bool {
        let Some(m) = self.etcd.get(i) else {
            return false;
        };
        let addr = SocketAddr::new(m.address, ETCD_CLIENT_PORT);
        let body = weft_datapath::netns::run_in(&self.fabric_netns, move || {
            http_get(addr, "/health", Duration::from_secs(1))
        });
        matches!(body, Ok(Ok(b)) if b.replace(' ', "").contains("\"health\":\"true\""))
    }

    /// Whether etcd member `i` is the cluster's leader now (its metrics say
    /// so); false when it does not answer within a second.
    pub fn etcd_member_leads(&self, i: usize) -> bool {
        let Some(m) = self.etcd.get(i) else {
            return false;
        };
        let addr = SocketAddr::new(m.address, ETCD_CLIENT_PORT);
        let body = weft_datapath::netns::run_in(&self.fabric_netns, move || {
            http_get(addr, "/metrics", Duration::from_secs(1))
        });
        matches!(body, Ok(Ok(b)) if b.lines().any(|l| l.trim() == "etcd_server_is_leader 1"))
    }

    /// Stops etcd member `i` (0-based; SIGTERM, then SIGKILL) for failure tests.
    pub fn stop_etcd_member(&mut self, i: usize) -> anyhow::Result<()> {
        let marker = self.pid_marker();
        let m = self
            .etcd
            .get_mut(i)
            .with_context(|| format!("no etcd member index {i}"))?;
        if let Some(pid) = m.pid.take() {
            stop_pid(pid, "etcd", &marker);
        }
        self.save()
    }

    /// Starts etcd member `i` again (same data directory) and waits until it
    /// reports healthy (at most 15 s; needs a quorum of members running).
    pub fn start_etcd_member(&mut self, i: usize) -> anyhow::Result<()> {
        let m = self
            .etcd
            .get(i)
            .with_context(|| format!("no etcd member index {i}"))?;
        if m.alive() {
            bail!(
                "etcd member {} runs already (pid {})",
                m.name,
                m.pid.unwrap_or_default()
            );
        }
        self.spawn_etcd(i)?;
        self.wait_etcd_healthy(Some(i))
    }

    /// Starts the given stopped members together and waits until every
    /// member is healthy: after all of them were down, none can be healthy
    /// alone (a member needs a quorum), so they must come back as a group.
    pub fn start_etcd_members(&mut self, which: &[usize]) -> anyhow::Result<()> {
        for &i in which {
            let m = self
                .etcd
                .get(i)
                .with_context(|| format!("no etcd member index {i}"))?;
            if !m.alive() {
                self.spawn_etcd(i)?;
            }
        }
        self.wait_etcd_healthy(None)
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

    /// The network configuration a runtime on node 1 would hand weft-cni.
    pub fn net_conf(&self, cni_version: &str) -> serde_json::Value {
        self.net_conf_on(0, cni_version)
    }

    /// The network configuration a runtime on node `i` would hand weft-cni.
    /// Panics when the lab has no node `i`.
    pub fn net_conf_on(&self, i: usize, cni_version: &str) -> serde_json::Value {
        let n = &self.nodes[i];
        serde_json::json!({
            "cniVersion": cni_version,
            "name": NETWORK,
            "type": "weft-cni",
            "agentSocket": n.socket,
            "spoolDir": n.spool_dir(),
        })
    }

    /// Runs one CNI verb of weft-cni on node 1 for `pod` as a runtime would.
    pub fn cni(
        &self,
        command: &str,
        container_id: &str,
        netns: &str,
        pod_name: &str,
        conf: &serde_json::Value,
    ) -> anyhow::Result<CniOutcome> {
        self.cni_on(0, command, container_id, netns, pod_name, conf)
    }

    /// Runs one CNI verb of weft-cni on node `i` (in its namespace).
    pub fn cni_on(
        &self,
        i: usize,
        command: &str,
        container_id: &str,
        netns: &str,
        pod_name: &str,
        conf: &serde_json::Value,
    ) -> anyhow::Result<CniOutcome> {
        cni_exec(
            &self.cni_plugin(),
            &self.bin_dir,
            &self.node(i)?.netns,
            command,
            container_id,
            netns,
            "eth0",
            &format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod_name}"),
            &serde_json::to_vec(conf)?,
        )
    }

    /// Creates a pod namespace on node 1 and ADDs it through weft-cni.
    pub fn add_pod(&mut self, name: &str) -> anyhow::Result<Pod> {
        self.add_pod_on(name, 0)
    }

    /// Creates a pod namespace and ADDs it through node `node`'s weft-cni.
    pub fn add_pod_on(&mut self, name: &str, node: usize) -> anyhow::Result<Pod> {
        check_pod_name(name)?;
        self.node(node)?;
        if self.pods.iter().any(|p| p.name == name) {
            bail!("pod {name} exists already in lab {}", self.name);
        }
        let ns = format!("{}-{name}", self.name);
        ip(&["netns", "add", &ns])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        let netns = netns_path(&ns);
        let container_id = format!("{}-{name}", self.name);
        let out = self.cni_on(
            node,
            "ADD",
            &container_id,
            &netns.to_string_lossy(),
            name,
            &self.net_conf_on(node, "1.0.0"),
        );
        let out = match out {
            Ok(o) if o.success => o,
            Ok(o) => {
                let _ = ip(&["netns", "del", &ns]);
                bail!(
                    "weft-cni ADD for pod {name} failed: {}{}",
                    o.stdout.trim(),
                    o.stderr.trim()
                );
            }
            Err(e) => {
                let _ = ip(&["netns", "del", &ns]);
                return Err(e);
            }
        };
        let result = out.json()?;
        let ips = result["ips"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|ip| ip["address"].as_str())
                    .filter_map(|s| s.split('/').next()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let pod = Pod {
            name: name.to_string(),
            netns,
            container_id,
            ips,
            node,
        };
        self.pods.push(pod.clone());
        self.save()?;
        Ok(pod)
    }

    /// DELs a pod through its node's weft-cni and removes its namespace.
    pub fn del_pod(&mut self, name: &str) -> anyhow::Result<()> {
        let Some(i) = self.pods.iter().position(|p| p.name == name) else {
            bail!("no pod {name} in lab {}", self.name);
        };
        let pod = self.pods[i].clone();
        let out = self.cni_on(
            pod.node,
            "DEL",
            &pod.container_id,
            &pod.netns.to_string_lossy(),
            name,
            &self.net_conf_on(pod.node, "1.0.0"),
        )?;
        if !out.success {
            bail!("weft-cni DEL for pod {name} failed: {}", out.stdout.trim());
        }
        let _ = ip(&["netns", "del", &format!("{}-{name}", self.name)]);
        self.pods.remove(i);
        self.save()
    }

    /// Removes everything of lab `name` that exists, going on past errors:
    /// every node's weftd and every etcd member (by their recorded pids),
    /// pod, node and fabric namespaces, the directory.
    pub fn down(name: &str) -> anyhow::Result<()> {
        check_name(name)?;
        let mut errors = Vec::new();
        if let Ok(lab) = Lab::load(name) {
            let marker = lab.pid_marker();
            // a Kubernetes cluster's node agents and control plane first
            crate::kube::stop_all(&lab, &marker);
            // the agents first (etcd's clients), in parallel
            let mut weftds: Vec<u32> = lab
                .nodes
                .iter()
                .filter_map(|n| n.weftd_pid)
                .chain(lab.weftd_pid)
                .collect();
            weftds.sort_unstable();
            weftds.dedup();
            std::thread::scope(|s| {
                for pid in weftds {
                    let marker = &marker;
                    s.spawn(move || stop_pid(pid, "weftd", marker));
                }
            });
            // then etcd, one member at a time, followers first: a leader told
            // to stop while a follower still runs tries to hand leadership
            // over, which can take seconds while the cluster is shrinking;
            // stopped last, it has nobody to hand it to
            let mut members: Vec<(bool, u32)> = (0..lab.etcd.len())
                .filter_map(|i| lab.etcd[i].pid.map(|pid| (lab.etcd_member_leads(i), pid)))
                .collect();
            members.sort_by_key(|(leader, _)| *leader);
            for (_, pid) in members {
                stop_pid(pid, "etcd", &marker);
            }
        }
        // every namespace carrying the lab's prefix, also those lab.json never recorded
        let prefix = format!("{name}-");
        if let Ok(rd) = fs::read_dir("/run/netns") {
            for e in rd.filter_map(Result::ok) {
                let ns = e.file_name().to_string_lossy().into_owned();
                if ns.starts_with(&prefix) {
                    if let Err(err) = ip(&["netns", "del", &ns]) {
                        errors.push(err.to_string());
                    }
                }
            }
        }
        let dir = Lab::dir_of(name);
        if dir.exists() {
            if let Err(e) = fs::remove_dir_all(&dir) {
                errors.push(format!("removing {}: {e}", dir.display()));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("lab {name} partly removed: {}", errors.join("; "))
        }
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
    // a zombie still has /proc/<pid>; look at its state
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// Ends a process this lab started, by its pid: TERM, then KILL after 5 s.
/// Only when its program is `binary` and its command line mentions `marker`
/// (the lab's directory): never a process that reused the pid.
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
    if !ours || !pid_alive(pid) {
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
            return;
        }
    }
}

impl Lab {
    /// Runs a plugin chain the way libcni runs a conflist: ADD goes through
    /// the plugins in order, each given the previous result as `prevResult`
    /// and the `runtimeConfig` of the capabilities it declares; DEL goes in
    /// reverse with the chain's final result. Returns the final ADD result
    /// (`Value::Null` for DEL). Plugins other than weft-cni come from
    /// `/usr/lib/cni` (the reference plugins).
    #[expect(
        clippy::too_many_arguments,
        reason = "mirrors the CNI call: verb, ids, netns, config, runtime config, cached result"
    )]
    pub fn run_chain(
        &self,
        command: &str,
        container_id: &str,
        netns: &str,
        pod_name: &str,
        conflist: &serde_json::Value,
        runtime_config: &serde_json::Value,
        prev_result: Option<&serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let plugins = conflist["plugins"]
            .as_array()
            .context("conflist has no plugins array")?;
        let order: Vec<&serde_json::Value> = if command == "DEL" {
            plugins.iter().rev().collect()
        } else {
            plugins.iter().collect()
        };
        let mut prev = prev_result.cloned();
        let cni_path = format!("{}:{}", self.bin_dir.display(), crate::REFERENCE_PLUGINS);
        for plugin in order {
            let mut conf = plugin.clone();
            conf["name"] = conflist["name"].clone();
            conf["cniVersion"] = conflist["cniVersion"].clone();
            if let Some(caps) = plugin["capabilities"].as_object() {
                let mut rc = serde_json::Map::new();
                for (cap, on) in caps {
                    if on == true {
                        if let Some(v) = runtime_config.get(cap) {
                            rc.insert(cap.clone(), v.clone());
                        }
                    }
                }
                if !rc.is_empty() {
                    conf["runtimeConfig"] = serde_json::Value::Object(rc);
                }
            }
            if let Some(p) = &prev {
                conf["prevResult"] = p.clone();
            }
            let kind = conf["type"]
                .as_str()
                .context("plugin without type")?
                .to_string();
            let binary = if kind == "weft-cni" {
                self.cni_plugin()
            } else {
                Path::new(crate::REFERENCE_PLUGINS).join(&kind)
            };
            let out = cni_exec(
                &binary,
                Path::new(&cni_path),
                &self.node_netns,
                command,
                container_id,
                netns,
                "eth0",
                &format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod_name}"),
                &serde_json::to_vec(&conf)?,
            )?;
            if !out.success {
                bail!(
                    "{kind} {command} failed: {}{}",
                    out.stdout.trim(),
                    out.stderr.trim()
                );
            }
            if command == "ADD" {
                prev = Some(out.json()?);
            }
        }
        Ok(if command == "ADD" {
            prev.unwrap_or_default()
        } else {
            serde_json::Value::Null
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab_of(spec: &LabSpec, shared_store: bool, pass_node_ip: bool) -> Lab {
        let dir = Lab::dir_of(&spec.name);
        let nodes: Vec<NodeInfo> = (0..spec.nodes)
            .map(|i| {
                let name = if spec.is_classic() {
                    format!("{}-node", spec.name)
                } else {
                    format!("{}-n{}", spec.name, i + 1)
                };
                let (underlay_v4, underlay_v6) = node_underlay(i);
                let d = if i == 0 {
                    dir.clone()
                } else {
                    dir.join(format!("n{}", i + 1))
                };
                NodeInfo {
                    netns: netns_path(&name),
                    name,
                    socket: d.join("weftd.sock"),
                    dir: d,
                    underlay_v4,
                    underlay_v6,
                    weftd_pid: None,
                }
            })
            .collect();
        Lab {
            name: spec.name.clone(),
            dir: dir.clone(),
            bin_dir: spec.bin_dir.clone(),
            fabric_netns: netns_path("x-fab"),
            node_netns: nodes[0].netns.clone(),
            node_underlay_v4: nodes[0].underlay_v4,
            node_underlay_v6: nodes[0].underlay_v6,
            fabric_v4: FABRIC_V4.parse().unwrap(),
            fabric_v6: FABRIC_V6.parse().unwrap(),
            weftd_pid: None,
            weftd_args: vec!["--quarantine-seconds=30".into()],
            pods: Vec::new(),
            nodes,
            etcd: (0..spec.etcd_members)
                .map(|i| EtcdMember {
                    name: format!("e{}", i + 1),
                    address: etcd_address(i),
                    data_dir: dir.join("etcd"),
                    log: dir.join("etcd.log"),
                    pid: None,
                })
                .collect(),
            routing: spec.routing.clone(),
            shared_store,
            pass_node_ip,
            kube: None,
        }
    }

    #[test]
    fn a_one_node_lab_runs_weftd_with_the_flags_it_always_had() {
        let spec = LabSpec::new("p", Path::new("/b"));
        assert!(spec.is_classic());
        let lab = lab_of(&spec, false, false);
        assert_eq!(
            lab.weftd_command_args(0).join(" "),
            "--socket /run/weft-lab/p/weftd.sock --state-dir /run/weft-lab/p/state \
             --spool-dir /run/weft-lab/p/spool --node-name p-node --quarantine-seconds=30"
        );
        assert_eq!(lab.node_netns_name(), "p-node");
        assert_eq!(spec.progress_steps(), 5);
    }

    #[test]
    fn nodes_of_an_etcd_lab_get_the_store_flags_when_weftd_knows_them() {
        let mut spec = LabSpec::new("p", Path::new("/b"));
        spec.nodes = 3;
        spec.etcd_members = 3;
        spec.routing = "native".into();
        spec.validate().unwrap();
        let lab = lab_of(&spec, true, true);
        assert_eq!(
            lab.weftd_command_args(1).join(" "),
            "--socket /run/weft-lab/p/n2/weftd.sock --state-dir /run/weft-lab/p/n2/state \
             --spool-dir /run/weft-lab/p/n2/spool --node-name p-n2 --store etcd \
             --etcd-endpoints http://198.18.0.2:2379,http://198.18.0.3:2379,http://198.18.0.4:2379 \
             --routing native --underlay-iface ul0 --node-ip 198.18.0.11,2001:2::11 \
             --quarantine-seconds=30"
        );
        // a weftd without those flags: the lab still comes up, embedded stores
        let old = lab_of(&spec, false, false);
        assert!(!old.weftd_command_args(1).contains(&"--store".to_string()));
        // no etcd, several nodes: no store flags either
        spec.etcd_members = 0;
        let plain = lab_of(&spec, true, true);
        assert!(!plain.weftd_command_args(2).contains(&"--store".to_string()));
        assert_eq!(plain.node_netns_name(), "p-n1");
        assert_eq!(spec.progress_steps(), 2 + 3 + 6);
    }

    #[test]
    fn pods_may_not_take_the_labs_own_names() {
        for bad in ["fab", "node", "n1", "n12"] {
            assert!(check_pod_name(bad).is_err(), "{bad}");
        }
        for ok in ["a", "pod-1", "n", "n1x", "nodes"] {
            assert!(check_pod_name(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn underlay_addresses_follow_the_node_index() {
        assert_eq!(
            node_underlay(0),
            (
                "198.18.0.10".parse().unwrap(),
                "2001:2::10".parse().unwrap()
            )
        );
        assert_eq!(
            node_underlay(31),
            (
                "198.18.0.41".parse().unwrap(),
                "2001:2::41".parse().unwrap()
            )
        );
        assert_eq!(etcd_address(2), "198.18.0.4".parse::<IpAddr>().unwrap());
    }
}
