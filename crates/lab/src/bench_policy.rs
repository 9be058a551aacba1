//! `weft bench policy`: the cost of NetworkPolicy on pod-to-pod traffic,
//! weft's eBPF programs side by side with the usual kernel alternatives, in
//! one run (issue 12, "Performance, side by side in one run").
//!
//! Every case is a node namespace with two pods, client and server, attached
//! by weft's own `LinuxDatapath` (no agent, no store), except raw veth:
//! 1. raw veth: two namespaces joined by one veth pair (the kernel floor);
//! 2. no policy, kernel path: weft's pods, forwarded by the node's routing;
//! 3. no policy, fast path: weft's eBPF redirects, policy off;
//! 4. weft eBPF: fast path with policy (`PolicyMode::Enforce`): the N
//!    policies compiled by `weft_policy::compile`, written by
//!    `KernelPolicyMaps`;
//! 5. weft eBPF, kpath: the same programs judging, the kernel forwarding
//!    (`PolicyMode::EnforceOnly`);
//! 6. and 7. iptables-legacy and iptables-nft: the rules laid out as
//!    Calico's iptables data plane does (see [`calico_rules`]);
//! 8. nftables with sets: one set of allowed (address, port) tuples.
//!
//! For every N in the rule counts, each policy case gets N policies
//! selecting the server, each allowing one peer address (in 100.64/10, no
//! pod) on one port, and last the one allowing the client on the measured
//! ports. Per N and round every case runs once, in a rotating order: iperf3
//! single stream, one-byte TCP round trips over one connection (RR), and
//! new connections each carrying one round trip (CRR: where a rule walk that
//! conntrack skips for established flows shows). Ratios are per round,
//! paired, against the matching no-policy case (fast path for weft eBPF,
//! kernel path for the rest).
//!
//! Every namespace starts with the run's name and goes at the end, with the
//! iperf3 servers (ended by pid), also on error. Traffic only flows between
//! these namespaces.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use weft_datapath::netns::{run_in, spawn_in};
use weft_datapath::policy::{KernelPolicyMaps, PolicyEndpoint, PolicyMaps, PolicyMode};
use weft_datapath::{Datapath, FastEndpoint, FastPathSetup, LinuxDatapath, NodeSetup, PodLink};
use weft_policy::{
    compile, Compiled, Direction, EndpointRef, Inventory, IpBlock, LabelSelector, Labels,
    MemoryAllocator, NetworkPolicy, Node, Peer, PolicyPort, PortRef, Rule, RuleIds, Workload,
};

use crate::bench::Machine;
use crate::bench_dataplane::{iperf, pin_cpu, pin_this_thread, Spread};
use crate::cmd::ip;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 3);
const NODE_IP: &str = "10.99.0.1";
const NODE: &str = "node";
const NS: &str = "bench";
/// The measured ports on the server: iperf3, round trips, new connections.
const IPERF_PORT: u16 = 5201;
const RR_PORT: u16 = 5301;
const CRR_PORT: u16 = 5302;
const PORTS: [u16; 3] = [IPERF_PORT, RR_PORT, CRR_PORT];
/// The byte that ends the echo server (the client sends 7s).
const STOP: u8 = 0xff;

#[derive(Debug, Clone)]
pub struct PolicyBenchSpec {
    /// Prefix of every namespace the run makes (at most 16 characters).
    pub name: String,
    /// Rule counts, each measured in turn (0 = the allowing rule alone).
    pub rules: Vec<usize>,
    /// Rounds per rule count; each runs every case once.
    pub rounds: usize,
    /// iperf3 `-t`, seconds per throughput test.
    pub seconds: u32,
    /// One-byte round trips per RR test.
    pub echoes: usize,
    /// New connections per CRR test.
    pub connects: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyCaseResult {
    pub case: String,
    pub rules: usize,
    pub gbps: Spread,
    pub rr_p50_us: Spread,
    pub rr_p99_us: Spread,
    pub crr_p50_us: Spread,
    /// Seconds to install the N rules (compile + map writes, or the
    /// restore); 0 for the no-policy cases.
    pub install_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyRatio {
    pub case: String,
    pub baseline: String,
    pub rules: usize,
    pub rr_p50: Spread,
    pub rr_p99: Spread,
    pub crr_p50: Spread,
    pub gbps: Spread,
}

/// weft's BPF map memory at one rule count, as the kernel accounts it
/// (`memlock` of /proc/self/fdinfo, summed over the weft eBPF case's maps).
#[derive(Debug, Clone, Serialize)]
pub struct MapMemory {
    pub rules: usize,
    pub memlock_bytes: u64,
    /// Growth over the smallest rule count, per added rule.
    pub bytes_per_rule: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyReport {
    #[serde(flatten)]
    pub machine: Machine,
    pub rounds: usize,
    pub seconds: u32,
    pub echoes: usize,
    pub connects: usize,
    pub pinned_cpu: usize,
    pub cases: Vec<PolicyCaseResult>,
    pub ratios: Vec<PolicyRatio>,
    pub map_memory: Vec<MapMemory>,
    /// Goal of issue 12: weft eBPF at the largest N within this of no
    /// policy (fast path) on RR p50, and whether the median met it.
    pub goal_rr_p50: f64,
    pub goal_met: Option<bool>,
    /// Why the kube-network-policies row is absent: it runs as a pod agent
    /// queueing new connections with nftables `queue`, which this kernel
    /// may lack (see [`nft_queue_support`]).
    pub kube_network_policies: String,
    pub wall_seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enforcer {
    None,
    Weft,
    Iptables(&'static str),
    NftSets,
}

/// One measured pair and what enforces policy between them.
struct Case {
    label: &'static str,
    /// Index of the no-policy case its ratios are against.
    baseline: Option<usize>,
    enforcer: Enforcer,
    node: Option<String>,
    client: PathBuf,
    server: PathBuf,
    host_c: String,
    host_s: String,
    maps: Option<KernelPolicyMaps>,
    map_ids: BTreeSet<u32>,
    /// What the last install did, for the progress line.
    note: String,
    // kept alive: its programs and maps
    _dp: Option<LinuxDatapath>,
}

/// What the run made: iperf3 servers and namespaces, removed on drop.
#[derive(Default)]
struct Cleanup {
    netns: Vec<String>,
    servers: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.netns {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

fn add_netns(name: &str, clean: &mut Cleanup) -> anyhow::Result<PathBuf> {
    ip(&["netns", "add", name])?;
    clean.netns.push(name.to_string());
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    Ok(PathBuf::from("/run/netns").join(name))
}

fn raw_veth(prefix: &str, clean: &mut Cleanup) -> anyhow::Result<Case> {
    let (a, b) = (format!("{prefix}-raw-c"), format!("{prefix}-raw-s"));
    let client = add_netns(&a, clean)?;
    let server = add_netns(&b, clean)?;
    ip(&[
        "link", "add", "eth0", "netns", &a, "type", "veth", "peer", "name", "eth0", "netns", &b,
    ])?;
    for (n, addr) in [(&a, CLIENT), (&b, SERVER)] {
        ip(&["-n", n, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        ip(&["-n", n, "link", "set", "eth0", "up"])?;
    }
    Ok(Case {
        label: "raw veth",
        baseline: None,
        enforcer: Enforcer::None,
        node: None,
        client,
        server,
        host_c: String::new(),
        host_s: String::new(),
        maps: None,
        map_ids: BTreeSet::new(),
        note: String::new(),
        _dp: None,
    })
}

/// A node namespace with client and server pods attached by weft; with
/// `mode`, weft's programs loaded (and for an enforcing mode, its maps).
fn weft_node(
    prefix: &str,
    tag: &str,
    label: &'static str,
    enforcer: Enforcer,
    mode: Option<PolicyMode>,
    clean: &mut Cleanup,
) -> anyhow::Result<Case> {
    let node_name = format!("{prefix}-{tag}-n");
    let node = add_netns(&node_name, clean)?;
    let client = add_netns(&format!("{prefix}-{tag}-c"), clean)?;
    let server = add_netns(&format!("{prefix}-{tag}-s"), clean)?;
    // the node's own address (a veth pair standing in for a dummy device)
    ip(&[
        "-n", &node_name, "link", "add", "dummy0", "type", "veth", "peer", "name", "dummy0p",
    ])?;
    for d in ["dummy0", "dummy0p"] {
        ip(&["-n", &node_name, "link", "set", d, "up"])?;
    }
    ip(&[
        "-n",
        &node_name,
        "addr",
        "add",
        &format!("{NODE_IP}/32"),
        "dev",
        "dummy0",
    ])?;
    let dp = run_in(&node, LinuxDatapath::new)
        .map_err(|e| anyhow::anyhow!("entering {node_name}: {e}"))??
        .with_policy(mode.unwrap_or_default());
    let pools = vec!["10.244.0.0/16".parse()?];
    dp.prepare_node(&NodeSetup {
        pools: pools.clone(),
        nat_outgoing: false,
    })?;
    // Calico's interface names, so its layout's `-o cali+` matches
    let (host_c, host_s) = (format!("cali{tag}c"), format!("cali{tag}s"));
    let mut eps = Vec::new();
    for (host, pod, addr) in [(&host_c, &client, CLIENT), (&host_s, &server, SERVER)] {
        let att = dp.attach(&PodLink {
            netns: pod.clone(),
            ifname: "eth0".into(),
            host_ifname: host.clone(),
            mtu: 1500,
            ipv4: Some(addr),
            ipv6: None,
        })?;
        eps.push(FastEndpoint {
            host_ifname: host.clone(),
            pod_mac: att.pod_mac,
            ips: vec![IpAddr::V4(addr)],
            settled: true,
        });
    }
    let mut maps = None;
    let mut map_ids = BTreeSet::new();
    if let Some(mode) = mode {
        let before = map_fds()?;
        dp.fastpath_start(&FastPathSetup {
            pools,
            remote_device: None,
        })?;
        map_ids = map_fds()?
            .into_iter()
            .filter(|m| !before.iter().any(|b| b.id == m.id))
            .map(|m| m.id)
            .collect();
        if mode.enforces() {
            let mut m = dp
                .policy_maps(NODE, RuleIds::new())?
                .context("no policy maps after fastpath_start")?;
            m.replace(&policies(0)?, &lookup)?;
            maps = Some(m);
        }
        let report = dp.fastpath_sync(&eps)?;
        if report.attached != 2 {
            bail!("{label}: weft's programs attached to {report:?}, not both pods");
        }
    }
    Ok(Case {
        label,
        baseline: None,
        enforcer,
        node: Some(node_name),
        client,
        server,
        host_c,
        host_s,
        maps,
        map_ids,
        note: String::new(),
        _dp: Some(dp),
    })
}

fn workload(name: &str, addr: Ipv4Addr) -> Workload {
    Workload {
        namespace: NS.into(),
        name: name.into(),
        labels: Labels::from([("app".to_string(), name.to_string())]),
        namespace_labels: Labels::from([(
            "kubernetes.io/metadata.name".to_string(),
            NS.to_string(),
        )]),
        ips: vec![IpAddr::V4(addr)],
        node: NODE.into(),
        ..Default::default()
    }
}

/// The i-th peer that never sends: 100.64.0.0/10 (shared address space),
/// never a pod of the bench.
fn decoy(i: usize) -> (Ipv4Addr, u16) {
    let a = u32::from(Ipv4Addr::new(100, 64, 0, 1)) + i as u32;
    (Ipv4Addr::from(a), 8000 + (i % 1000) as u16)
}

fn tcp_ports(ports: &[u16]) -> Option<Vec<PolicyPort>> {
    Some(
        ports
            .iter()
            .map(|p| PolicyPort {
                protocol: None,
                port: Some(PortRef::Number(*p)),
                end_port: None,
            })
            .collect(),
    )
}

/// N policies selecting the server, each letting one decoy in on one port,
/// then the one letting the client in on the measured ports.
fn network_policies(n: usize) -> Vec<NetworkPolicy> {
    let policy = |name: String, peer: Peer, ports: &[u16]| NetworkPolicy {
        namespace: NS.into(),
        name,
        pod_selector: LabelSelector::labels([("app", "server")]),
        policy_types: Some(vec![Direction::Ingress]),
        ingress: Some(vec![Rule {
            peers: Some(vec![peer]),
            ports: tcp_ports(ports),
        }]),
        egress: None,
    };
    let mut out: Vec<NetworkPolicy> = (0..n)
        .map(|i| {
            let (addr, port) = decoy(i);
            let block = IpBlock {
                cidr: ipnet::Ipv4Net::new(addr, 32).expect("/32").into(),
                except: vec![],
            };
            let peer = Peer {
                ip_block: Some(block),
                ..Default::default()
            };
            policy(format!("p{i:05}"), peer, &[port])
        })
        .collect();
    let client = Peer {
        pod_selector: Some(LabelSelector::labels([("app", "client")])),
        ..Default::default()
    };
    out.push(policy("zz-allow-client".into(), client, &PORTS));
    out
}

fn policies(n: usize) -> anyhow::Result<Compiled> {
    let inventory = Inventory {
        workloads: vec![workload("client", CLIENT), workload("server", SERVER)],
        nodes: vec![Node {
            name: NODE.into(),
            ips: vec![NODE_IP.parse()?],
        }],
    };
    Ok(compile(
        &network_policies(n),
        &inventory,
        &mut MemoryAllocator::new(),
    )?)
}

fn lookup(e: &EndpointRef) -> Option<PolicyEndpoint> {
    let (id, addr) = match e.name.as_str() {
        "client" => (1, CLIENT),
        "server" => (2, SERVER),
        _ => return None,
    };
    Some(PolicyEndpoint {
        id,
        addresses: vec![IpAddr::V4(addr)],
        audit: false,
    })
}

/// The filter table Calico's iptables data plane (felix) renders for these
/// two workloads, ipset-free: `cali-FORWARD` from FORWARD clears the mark
/// bits and dispatches by interface (`cali-from-wl-dispatch`,
/// `cali-to-wl-dispatch`, goto per endpoint); each endpoint chain accepts
/// conntrack RELATED,ESTABLISHED first and drops INVALID, clears the accept
/// mark, then jumps to each policy chain `cali-pi-<policy>` in order while
/// no policy has passed the packet (mark 0x20000 clear), returning as soon
/// as one set the accept mark 0x10000, and drops at the end ("Drop if no
/// policies passed packet"). A policy chain has one rule per peer (felix
/// would match an ipset of the selector's members) setting the accept mark,
/// then returns on it. The client's endpoint has no policy: its profile
/// accepts. Packets that come back with the accept mark are accepted at
/// the end of `cali-FORWARD`.
pub fn calico_rules(n: usize, host_c: &str, host_s: &str) -> String {
    let mut s =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    let chains = [
        "cali-FORWARD".to_string(),
        "cali-from-wl-dispatch".into(),
        "cali-to-wl-dispatch".into(),
        format!("cali-fw-{host_c}"),
        format!("cali-fw-{host_s}"),
        format!("cali-tw-{host_c}"),
        format!("cali-tw-{host_s}"),
        "cali-pri-kns.bench".into(),
    ];
    for c in &chains {
        s.push_str(&format!(":{c} - [0:0]\n"));
    }
    let names: Vec<String> = (0..=n)
        .map(|i| {
            if i < n {
                format!("cali-pi-_p{i:05}")
            } else {
                "cali-pi-_zz-allow-client".into()
            }
        })
        .collect();
    for c in &names {
        s.push_str(&format!(":{c} - [0:0]\n"));
    }
    s.push_str(
        "-A FORWARD -m comment --comment \"cali:wUHhoiAYhphO9Mso\" -j cali-FORWARD\n\
         -A cali-FORWARD -j MARK --set-xmark 0x0/0xe0000\n\
         -A cali-FORWARD -i cali+ -j cali-from-wl-dispatch\n\
         -A cali-FORWARD -o cali+ -j cali-to-wl-dispatch\n\
         -A cali-FORWARD -m mark --mark 0x10000/0x10000 -m comment --comment \"Policy explicitly accepted packet.\" -j ACCEPT\n\
         -A cali-pri-kns.bench -j MARK --set-xmark 0x10000/0x10000\n\
         -A cali-pri-kns.bench -m mark --mark 0x10000/0x10000 -j RETURN\n",
    );
    for (dispatch, dir, flag) in [
        ("cali-from-wl-dispatch", "fw", "-i"),
        ("cali-to-wl-dispatch", "tw", "-o"),
    ] {
        for h in [host_c, host_s] {
            s.push_str(&format!("-A {dispatch} {flag} {h} -g cali-{dir}-{h}\n"));
        }
        s.push_str(&format!(
            "-A {dispatch} -m comment --comment \"Unknown interface\" -j DROP\n"
        ));
    }
    let head = |chain: &str| {
        format!(
            "-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             -A {chain} -m conntrack --ctstate INVALID -j DROP\n\
             -A {chain} -j MARK --set-xmark 0x0/0x10000\n"
        )
    };
    // endpoints without policy: the namespace profile accepts
    for chain in [
        format!("cali-fw-{host_c}"),
        format!("cali-fw-{host_s}"),
        format!("cali-tw-{host_c}"),
    ] {
        s.push_str(&head(&chain));
        s.push_str(&format!(
            "-A {chain} -j cali-pri-kns.bench\n-A {chain} -m mark --mark 0x10000/0x10000 -j RETURN\n-A {chain} -j DROP\n"
        ));
    }
    let tw = format!("cali-tw-{host_s}");
    s.push_str(&head(&tw));
    s.push_str(&format!(
        "-A {tw} -m comment --comment \"Start of policies\" -j MARK --set-xmark 0x0/0x20000\n"
    ));
    for c in &names {
        s.push_str(&format!(
            "-A {tw} -m mark --mark 0x0/0x20000 -j {c}\n-A {tw} -m mark --mark 0x10000/0x10000 -j RETURN\n"
        ));
    }
    s.push_str(&format!(
        "-A {tw} -m mark --mark 0x0/0x20000 -m comment --comment \"Drop if no policies passed packet\" -j DROP\n"
    ));
    for (i, c) in names.iter().enumerate() {
        let (peer, ports) = if i < n {
            let (a, p) = decoy(i);
            (a, p.to_string())
        } else {
            (CLIENT, PORTS.map(|p| p.to_string()).join(","))
        };
        s.push_str(&format!(
            "-A {c} -p tcp -s {peer}/32 -m multiport --dports {ports} -j MARK --set-xmark 0x10000/0x10000\n\
             -A {c} -m mark --mark 0x10000/0x10000 -j RETURN\n"
        ));
    }
    s.push_str("COMMIT\n");
    s
}

/// nftables with one set: conntrack first, then every packet to the server
/// looks its (source, port) up in a hash set, whatever its size.
pub fn nft_set_rules(n: usize, host_s: &str) -> String {
    let mut elems: Vec<String> = (0..n)
        .map(|i| {
            let (a, p) = decoy(i);
            format!("{a} . {p}")
        })
        .collect();
    elems.extend(PORTS.iter().map(|p| format!("{CLIENT} . {p}")));
    format!(
        "table inet weftbench {{}}\ndelete table inet weftbench\n\
         table inet weftbench {{\n\
         \tset allowed {{ type ipv4_addr . inet_service; elements = {{ {} }} }}\n\
         \tchain forward {{ type filter hook forward priority filter; policy accept;\n\
         \t\tct state established,related accept\n\t\tct state invalid drop\n\
         \t\toifname \"{host_s}\" jump to_server\n\t}}\n\
         \tchain to_server {{ ip saddr . tcp dport @allowed accept\n\t\tdrop\n\t}}\n}}\n",
        elems.join(", ")
    )
}

/// Feeds `input` to `prog` run inside netns `ns`.
fn feed(ns: &str, prog: &str, args: &[&str], input: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, prog])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {prog} (apt-get install iptables nftables)"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{prog} in {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Installs `n` rules for `case`; returns the seconds it took.
fn install(case: &mut Case, n: usize) -> anyhow::Result<f64> {
    let t = Instant::now();
    let node = case.node.clone().unwrap_or_default();
    match case.enforcer {
        Enforcer::None => return Ok(0.0),
        Enforcer::Weft => {
            let state = policies(n)?;
            let compiled = t.elapsed().as_secs_f64();
            let writes = case
                .maps
                .as_mut()
                .context("weft case without maps")?
                .replace(&state, &lookup)?;
            case.note = format!(
                "compile {compiled:.2} s, {writes} map writes {:.2} s",
                t.elapsed().as_secs_f64() - compiled
            );
        }
        Enforcer::Iptables(bin) => feed(
            &node,
            &format!("{bin}-restore"),
            &[],
            &calico_rules(n, &case.host_c, &case.host_s),
        )?,
        Enforcer::NftSets => feed(&node, "nft", &["-f", "-"], &nft_set_rules(n, &case.host_s))?,
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Proves the rules are live: the allowed port answers, and for a case
/// that enforces, a port no rule allows does not (a listener is there).
fn check_enforced(case: &Case) -> anyhow::Result<()> {
    let t = Duration::from_millis(500);
    let server = IpAddr::V4(SERVER);
    let allowed = crate::probe::listen_on(&case.server, SocketAddr::new(server, CRR_PORT))?;
    crate::probe::tcp_roundtrip(&case.client, &allowed, Duration::from_secs(3))
        .context("the allowed port does not answer")?;
    drop(allowed);
    let other = crate::probe::tcp_check(&case.client, &case.server, server, t);
    match (case.enforcer, other) {
        (Enforcer::None, Err(e)) => Err(e.context("a port without policy does not answer")),
        (Enforcer::None, Ok(())) | (_, Err(_)) => Ok(()),
        (_, Ok(())) => bail!("a port no rule allows answers: the rules are not enforced"),
    }
}

/// Whether nftables can queue packets to userspace in `case`'s node (the
/// `queue` expression, CONFIG_NFT_QUEUE): kube-network-policies v0.8.0
/// judges every new connection that way, and without it its nftables sync
/// fails ("netlink receive: no such file or directory") and nothing is
/// enforced. The probe table is removed again.
fn nft_queue_support(case: &Case) -> anyhow::Result<()> {
    let node = case.node.clone().unwrap_or_default();
    let probe = "table inet weftqprobe {\n chain f {\n  type filter hook forward priority 10; policy accept;\n  ip saddr 192.0.2.1 queue num 100 bypass\n }\n}\n";
    let r = feed(&node, "nft", &["-f", "-"], probe);
    let _ = feed(&node, "nft", &["-f", "-"], "delete table inet weftqprobe\n");
    r.context("nftables has no `queue` (kernel without CONFIG_NFT_QUEUE)")
}

/// A BPF map this process holds a descriptor of.
struct MapFd {
    id: u32,
    memlock: u64,
}

/// The BPF maps among this process's descriptors (/proc/self/fdinfo).
fn map_fds() -> anyhow::Result<Vec<MapFd>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/fdinfo")? {
        let Ok(text) = std::fs::read_to_string(e?.path()) else {
            continue;
        };
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(memlock)) = (field("map_id:"), field("memlock:")) {
            if !out.iter().any(|m: &MapFd| m.id == id as u32) {
                out.push(MapFd {
                    id: id as u32,
                    memlock,
                });
            }
        }
    }
    Ok(out)
}

fn memlock_of(ids: &BTreeSet<u32>) -> anyhow::Result<u64> {
    Ok(map_fds()?
        .iter()
        .filter(|m| ids.contains(&m.id))
        .map(|m| m.memlock)
        .sum())
}

/// Starts `iperf3 -s` on the server's port in `netns`, waits until it
/// listens (at most 5 s).
fn start_iperf(netns: &Path, clean: &mut Cleanup) -> anyhow::Result<()> {
    let mut cmd = Command::new("iperf3");
    cmd.args([
        "-s",
        "-B",
        &SERVER.to_string(),
        "-p",
        &IPERF_PORT.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let child = spawn_in(&mut cmd, netns).context("starting iperf3 -s (apt-get install iperf3)")?;
    let pid = child.id();
    clean.servers.push(child);
    let port = format!(":{IPERF_PORT:04X}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tcp = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
        if tcp.lines().skip(1).any(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            c.len() > 3 && c[1].ends_with(&port) && c[3] == "0A"
        }) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("iperf3 -s in {} not listening within 5 s", netns.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Round trips from `client` to the server's `port`: `rr` one-byte echoes
/// over one connection (after 200 unmeasured) and `crr` new connections
/// each carrying one echo. Returns (RR p50, RR p99, CRR p50) in us.
fn round_trips(
    client: &Path,
    server: &Path,
    rr: usize,
    crr: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    const WARMUP: usize = 200;
    let to = SocketAddr::new(IpAddr::V4(SERVER), RR_PORT);
    let to_crr = SocketAddr::new(IpAddr::V4(SERVER), CRR_PORT);
    let listeners = [
        crate::probe::listen_on(server, to)?,
        crate::probe::listen_on(server, to_crr)?,
    ];
    let cpu = pin_cpu();
    // blocking accepts: a polling server would spin on the CPU the client
    // is pinned to. A connection whose first byte is STOP ends it (sent from
    // the server's own namespace when the client gave up).
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        pin_this_thread(cpu);
        for (i, l) in listeners.iter().enumerate() {
            let conns = if i == 0 { 1 } else { crr };
            for _ in 0..conns {
                let (mut s, _) = l.accept()?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut b = [0u8; 1];
                let n = if i == 0 { rr + WARMUP } else { 1 };
                for _ in 0..n {
                    s.read_exact(&mut b)?;
                    if b[0] == STOP {
                        return Ok(());
                    }
                    s.write_all(&b)?;
                }
            }
        }
        Ok(())
    });
    let measured = run_in(
        client,
        move || -> std::io::Result<(Vec<Duration>, Vec<Duration>)> {
            pin_this_thread(cpu);
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut b = [7u8; 1];
            let mut one = Vec::with_capacity(rr);
            for i in 0..rr + WARMUP {
                let t = Instant::now();
                s.write_all(&b)?;
                s.read_exact(&mut b)?;
                if i >= WARMUP {
                    one.push(t.elapsed());
                }
            }
            drop(s);
            let mut new = Vec::with_capacity(crr);
            for _ in 0..crr {
                let t = Instant::now();
                let mut s = TcpStream::connect_timeout(&to_crr, Duration::from_secs(2))?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(&b)?;
                s.read_exact(&mut b)?;
                new.push(t.elapsed());
            }
            Ok((one, new))
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"));
    if measured.as_ref().map_or(true, |m| m.is_err()) {
        for to in [to, to_crr] {
            let _ = run_in(server, move || -> std::io::Result<()> {
                TcpStream::connect_timeout(&to, Duration::from_secs(1))?.write_all(&[STOP])
            });
        }
    }
    let measured = measured?;
    let served = echo
        .join()
        .map_err(|_| anyhow::anyhow!("echo thread panicked"))?;
    let (mut one, mut new) = measured.context("round trips")?;
    served.context("echo server")?;
    let q = |s: &mut Vec<Duration>, p: f64| {
        s.sort();
        s.get(((s.len() as f64 - 1.0) * p).round() as usize)
            .map(|d| d.as_secs_f64() * 1e6)
            .unwrap_or(f64::NAN)
    };
    Ok((q(&mut one, 0.5), q(&mut one, 0.99), q(&mut new, 0.5)))
}

/// Runs the whole benchmark; everything it made is removed when it returns.
pub fn run(spec: &PolicyBenchSpec, progress: &mut dyn FnMut(&str)) -> anyhow::Result<PolicyReport> {
    let started = Instant::now();
    if spec.name.len() > 16 {
        bail!("run name {:?} too long (at most 16 characters)", spec.name);
    }
    for tool in ["iperf3", "iptables-legacy", "iptables-nft", "nft"] {
        if Command::new(tool).arg("--version").output().is_err() {
            bail!("{tool} not found; apt-get install iperf3 iptables nftables");
        }
    }
    let mut clean = Cleanup::default();
    let p = &spec.name;
    progress("setting up 8 cases: raw veth, 7 nodes with a client and a server pod each");
    let mut cases = vec![
        raw_veth(p, &mut clean)?,
        weft_node(p, "k0", "none, kpath", Enforcer::None, None, &mut clean)?,
        weft_node(
            p,
            "f0",
            "none, fast",
            Enforcer::None,
            Some(PolicyMode::Off),
            &mut clean,
        )?,
        weft_node(
            p,
            "wf",
            "weft eBPF",
            Enforcer::Weft,
            Some(PolicyMode::Enforce),
            &mut clean,
        )?,
        weft_node(
            p,
            "wk",
            "weft eBPF, kpath",
            Enforcer::Weft,
            Some(PolicyMode::EnforceOnly),
            &mut clean,
        )?,
        weft_node(
            p,
            "il",
            "iptables-legacy",
            Enforcer::Iptables("iptables-legacy"),
            None,
            &mut clean,
        )?,
        weft_node(
            p,
            "in",
            "iptables-nft",
            Enforcer::Iptables("iptables-nft"),
            None,
            &mut clean,
        )?,
        weft_node(
            p,
            "ns",
            "nftables sets",
            Enforcer::NftSets,
            None,
            &mut clean,
        )?,
    ];
    for (i, c) in cases.iter_mut().enumerate() {
        c.baseline = match (i, c.enforcer) {
            (_, Enforcer::None) => None,
            (3, _) => Some(2),
            _ => Some(1),
        };
    }
    for c in &cases {
        start_iperf(&c.server, &mut clean).with_context(|| c.label.to_string())?;
    }

    let rounds = spec.rounds.max(1);
    let mut results = Vec::new();
    let mut ratios = Vec::new();
    let mut map_memory: Vec<MapMemory> = Vec::new();
    let weft_ids = cases[3].map_ids.clone();
    for &n in &spec.rules {
        progress(&format!("{n} rules: installing them in every policy case"));
        let mut installs = vec![0.0; cases.len()];
        for (i, c) in cases.iter_mut().enumerate() {
            installs[i] = install(c, n).with_context(|| format!("{} with {n} rules", c.label))?;
            check_enforced(c).with_context(|| format!("{} with {n} rules", c.label))?;
            if c.enforcer != Enforcer::None {
                progress(&format!(
                    "  {:<17} {:.2} s {}",
                    c.label, installs[i], c.note
                ));
            }
        }
        let memlock = memlock_of(&weft_ids)?;
        let base = map_memory
            .first()
            .map(|m: &MapMemory| (m.rules, m.memlock_bytes));
        map_memory.push(MapMemory {
            rules: n,
            memlock_bytes: memlock,
            bytes_per_rule: base
                .filter(|(r, _)| n > *r)
                .map(|(r, b)| (memlock as f64 - b as f64) / (n - r) as f64),
        });
        let k = cases.len();
        let mut m: Vec<[Vec<f64>; 4]> = (0..k).map(|_| Default::default()).collect();
        for round in 0..rounds {
            for j in 0..k {
                let i = (j + round) % k;
                let c = &cases[i];
                let g = iperf(&c.client, IpAddr::V4(SERVER), 1, spec.seconds)
                    .with_context(|| format!("{} with {n} rules", c.label))?;
                let (p50, p99, crr) = round_trips(&c.client, &c.server, spec.echoes, spec.connects)
                    .with_context(|| format!("{} with {n} rules", c.label))?;
                progress(&format!(
                    "{n:>5} rules, round {}/{rounds} {:<17} {g:6.2} Gbit/s  rr p50 {p50:6.1} us  p99 {p99:6.1} us  crr p50 {crr:6.1} us",
                    round + 1,
                    c.label
                ));
                for (v, x) in m[i].iter_mut().zip([g, p50, p99, crr]) {
                    v.push(x);
                }
            }
        }
        for (i, c) in cases.iter().enumerate() {
            results.push(PolicyCaseResult {
                case: c.label.into(),
                rules: n,
                gbps: Spread::of(&m[i][0]),
                rr_p50_us: Spread::of(&m[i][1]),
                rr_p99_us: Spread::of(&m[i][2]),
                crr_p50_us: Spread::of(&m[i][3]),
                install_s: installs[i],
            });
            if let Some(b) = c.baseline {
                let r = |x: usize| {
                    let v: Vec<f64> = m[i][x].iter().zip(&m[b][x]).map(|(a, b)| a / b).collect();
                    Spread::of(&v)
                };
                ratios.push(PolicyRatio {
                    case: c.label.into(),
                    baseline: cases[b].label.into(),
                    rules: n,
                    gbps: r(0),
                    rr_p50: r(1),
                    rr_p99: r(2),
                    crr_p50: r(3),
                });
            }
        }
    }
    let goal = 1.05;
    let max_n = spec.rules.iter().copied().max();
    let goal_met = ratios
        .iter()
        .find(|r| r.case == "weft eBPF" && Some(r.rules) == max_n)
        .map(|r| r.rr_p50.median <= goal);
    let kube_network_policies = match nft_queue_support(&cases[7]) {
        Ok(()) => "not run by this bench yet: see scripts/build-kube-network-policies.sh".into(),
        Err(e) => format!("cannot enforce on this kernel: {e:#}"),
    };
    progress(&format!("kube-network-policies: {kube_network_policies}"));
    progress("removing the namespaces and iperf3 servers");
    drop(cases);
    drop(clean);
    Ok(PolicyReport {
        machine: Machine::now(),
        rounds,
        seconds: spec.seconds,
        echoes: spec.echoes,
        connects: spec.connects,
        pinned_cpu: pin_cpu(),
        cases: results,
        ratios,
        map_memory,
        goal_rr_p50: goal,
        goal_met,
        kube_network_policies,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

/// The report as tables: per rule count, the cases; then the ratios and
/// weft's map memory.
pub fn render_table(r: &PolicyReport) -> String {
    let cell = |s: &Spread, p: usize| format!("{:.p$} ({:.p$}-{:.p$})", s.median, s.min, s.max);
    let mut out = format!(
        "weft bench policy: {} rounds, iperf3 -t {} s, {} round trips, {} new connections ({} CPUs, kernel {}, {:.0} s)\n\n",
        r.rounds, r.seconds, r.echoes, r.connects, r.machine.cpus, r.machine.kernel, r.wall_seconds
    );
    out.push_str(&format!(
        "{:>6} {:<17} {:>20} {:>20} {:>22} {:>22} {:>9}\n",
        "RULES", "CASE", "1 STREAM Gbit/s", "RR p50 us", "RR p99 us", "CRR p50 us", "INSTALL s"
    ));
    for c in &r.cases {
        out.push_str(&format!(
            "{:>6} {:<17} {:>20} {:>20} {:>22} {:>22} {:>9.2}\n",
            c.rules,
            c.case,
            cell(&c.gbps, 2),
            cell(&c.rr_p50_us, 1),
            cell(&c.rr_p99_us, 1),
            cell(&c.crr_p50_us, 1),
            c.install_s
        ));
    }
    out.push_str(&format!(
        "\n(median over rounds, min-max in brackets; client and server pinned to CPU {})\n\n",
        r.pinned_cpu
    ));
    out.push_str(&format!(
        "{:>6} {:<17} {:<12} {:>20} {:>20} {:>20} {:>20}\n",
        "RULES", "RATIO (paired)", "AGAINST", "RR p50", "RR p99", "CRR p50", "Gbit/s"
    ));
    for x in &r.ratios {
        out.push_str(&format!(
            "{:>6} {:<17} {:<12} {:>20} {:>20} {:>20} {:>20}\n",
            x.rules,
            x.case,
            x.baseline,
            cell(&x.rr_p50, 3),
            cell(&x.rr_p99, 3),
            cell(&x.crr_p50, 3),
            cell(&x.gbps, 3)
        ));
    }
    out.push_str(&format!(
        "\ngoal: weft eBPF at the largest rule count within {:.2}x of no policy (fast path) on RR p50: {}\n\n",
        r.goal_rr_p50,
        match r.goal_met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "-",
        }
    ));
    out.push_str(&format!(
        "kube-network-policies: {}\n\n",
        r.kube_network_policies
    ));
    out.push_str("weft BPF map memory (kernel memlock of the weft eBPF case's maps)\n");
    for m in &r.map_memory {
        out.push_str(&format!(
            "{:>6} rules {:>12} bytes{}\n",
            m.rules,
            m.memlock_bytes,
            m.bytes_per_rule
                .map(|b| format!("  {b:.0} bytes per added rule"))
                .unwrap_or_default()
        ));
    }
    out
}

/// One panel per metric: per rule count, a bar per case at the median with
/// a min-max whisker, as one SVG.
pub fn render_svg(r: &PolicyReport) -> String {
    type Metric = fn(&PolicyCaseResult) -> &Spread;
    let panels: [(&str, Metric); 3] = [
        ("TCP 1-byte round trip p50 (us, lower is better)", |c| {
            &c.rr_p50_us
        }),
        (
            "new connection + round trip p50 (us, lower is better)",
            |c| &c.crr_p50_us,
        ),
        ("iperf3, 1 stream (Gbit/s, higher is better)", |c| &c.gbps),
    ];
    let colors = [
        "#9a9a9a", "#c8c8c8", "#8fb8d8", "#2a7ab0", "#5aa0c8", "#d9822b", "#e8b04a", "#5aa05a",
    ];
    let mut names: Vec<&str> = Vec::new();
    for c in &r.cases {
        if !names.contains(&c.case.as_str()) {
            names.push(&c.case);
        }
    }
    let (w, bar_h, left) = (1000.0, 12.0, 190.0);
    let rows = r.cases.len() as f64;
    let groups = (r.cases.len() / names.len().max(1)) as f64;
    let panel_h = 30.0 + rows * (bar_h + 2.0) + groups * 8.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="14" font-weight="bold">weft bench policy: {} rounds, iperf3 -t {} s, {} round trips, {} new connections ({} CPUs, kernel {})</text><text x="10" y="38" fill="dimgray">per rule count N (the allowing rule last), a bar per case at the median over rounds, whiskers min-max</text>"#,
        panel_h * panels.len() as f64 + 60.0,
        r.rounds,
        r.seconds,
        r.echoes,
        r.connects,
        r.machine.cpus,
        r.machine.kernel
    );
    for (p, (title, metric)) in panels.iter().enumerate() {
        let top = 56.0 + p as f64 * panel_h;
        svg.push_str(&format!(
            r#"<text x="10" y="{}" font-weight="bold">{title}</text>"#,
            top + 12.0
        ));
        let max = r
            .cases
            .iter()
            .map(|c| metric(c).max)
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max)
            .max(1e-9);
        let scale = (w - left - 90.0) / max;
        let mut y = top + 20.0;
        let mut last_n = None;
        for c in &r.cases {
            if last_n != Some(c.rules) {
                y += 8.0;
                last_n = Some(c.rules);
            }
            let s = metric(c);
            let color = names
                .iter()
                .position(|n| *n == c.case)
                .map(|i| colors[i % colors.len()])
                .unwrap_or("black");
            let len = if s.median.is_finite() {
                s.median * scale
            } else {
                0.0
            };
            let (lo, hi) = (s.min * scale + left, s.max * scale + left);
            svg.push_str(&format!(
                r#"<text x="10" y="{ty:.1}">N={} {}</text><rect x="{left}" y="{y:.1}" width="{len:.1}" height="{bar_h}" fill="{color}"/><line x1="{lo:.1}" x2="{hi:.1}" y1="{m:.1}" y2="{m:.1}" stroke="black"/><text x="{tx:.1}" y="{ty:.1}">{:.1}</text>"#,
                c.rules,
                c.case,
                s.median,
                ty = y + 10.0,
                m = y + bar_h / 2.0,
                tx = hi.max(left + len) + 4.0,
            ));
            y += bar_h + 2.0;
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowing_policy_comes_last_and_every_decoy_is_outside_the_pods() {
        let p = network_policies(3);
        assert_eq!(p.len(), 4);
        assert_eq!(p[3].name, "zz-allow-client");
        for i in 0..1000 {
            let (a, _) = decoy(i);
            assert!(a.octets()[0] == 100 && a.octets()[1] & 0xc0 == 64, "{a}");
        }
    }

    #[test]
    fn weft_compiles_one_entry_per_decoy_and_the_client() {
        let small = policies(0).unwrap();
        let big = policies(100).unwrap();
        assert!(small.rejected.is_empty() && big.rejected.is_empty());
        let entries = |c: &Compiled| format!("{c:?}").matches("PolicyKey").count();
        assert!(entries(&big) > entries(&small), "more rules, more entries");
    }

    #[test]
    fn calico_layout_walks_every_policy_chain_in_order_after_conntrack() {
        let r = calico_rules(2, "calic", "calis");
        let tw: Vec<&str> = r
            .lines()
            .filter(|l| l.starts_with("-A cali-tw-calis "))
            .collect();
        assert!(tw[0].contains("RELATED,ESTABLISHED -j ACCEPT"), "{tw:?}");
        let jumps: Vec<&str> = tw
            .iter()
            .filter_map(|l| l.split(" -j ").nth(1))
            .filter(|t| t.starts_with("cali-pi-"))
            .collect();
        assert_eq!(
            jumps,
            [
                "cali-pi-_p00000",
                "cali-pi-_p00001",
                "cali-pi-_zz-allow-client"
            ]
        );
        assert!(tw.last().unwrap().contains("-j DROP"));
        assert!(r.contains("-A cali-pi-_zz-allow-client -p tcp -s 10.244.0.2/32 -m multiport --dports 5201,5301,5302"));
        assert!(r.trim_end().ends_with("COMMIT"));
    }

    #[test]
    fn nft_set_holds_every_peer_and_port() {
        let r = nft_set_rules(2, "calis");
        assert!(r.contains("100.64.0.1 . 8000, 100.64.0.2 . 8001, 10.244.0.2 . 5201"));
        assert!(r.contains("oifname \"calis\" jump to_server"));
    }
}
