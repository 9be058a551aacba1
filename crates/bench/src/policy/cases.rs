//! The cases: a node with a client and a server pod, by enforcer.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Enforcer {
    None,
    Weft,
    Iptables(&'static str),
    NftSets,
}

/// One measured pair and what enforces policy between them.
pub(super) struct Case {
    pub(super) label: &'static str,
    /// Index of the no-policy case its ratios are against.
    pub(super) baseline: Option<usize>,
    pub(super) enforcer: Enforcer,
    pub(super) node: Option<String>,
    pub(super) client: PathBuf,
    pub(super) server: PathBuf,
    pub(super) host_c: String,
    pub(super) host_s: String,
    pub(super) maps: Option<KernelPolicyMaps>,
    pub(super) map_ids: BTreeSet<u32>,
    /// What the last install did, for the progress line.
    pub(super) note: String,
    // kept alive: its programs and maps
    pub(super) _dp: Option<LinuxDatapath>,
}

/// What the run made: iperf3 servers and namespaces, removed on drop.
#[derive(Default)]
pub(super) struct Cleanup {
    pub(super) netns: Vec<String>,
    pub(super) servers: Vec<Child>,
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

pub(super) fn add_netns(name: &str, clean: &mut Cleanup) -> anyhow::Result<PathBuf> {
    netns_into(name, &mut clean.netns)
}

/// A network namespace `name` with its loopback up, listed in `made` (for
/// removal) once it exists.
fn netns_into(name: &str, made: &mut Vec<String>) -> anyhow::Result<PathBuf> {
    ip(&["netns", "add", name])?;
    made.push(name.to_string());
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    Ok(PathBuf::from("/run/netns").join(name))
}

pub(super) fn raw_veth(prefix: &str, clean: &mut Cleanup) -> anyhow::Result<Case> {
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

/// What every weft case of the benches starts from: a node namespace with
/// its own address, client and server pod namespaces, and weft's datapath
/// (as `build` sets it up) holding both pods, attached as `{host}{tag}c`
/// and `{host}{tag}s`. The namespaces it made are in `netns` (for the
/// caller's cleanup), also when it fails; no program is loaded.
pub(crate) struct PodPair {
    pub(crate) node_name: String,
    pub(crate) client: PathBuf,
    pub(crate) server: PathBuf,
    pub(crate) host_c: String,
    pub(crate) host_s: String,
    pub(crate) pools: Vec<ipnet::IpNet>,
    pub(crate) eps: Vec<FastEndpoint>,
    pub(crate) dp: LinuxDatapath,
}

pub(crate) fn pod_pair(
    prefix: &str,
    tag: &str,
    host: &str,
    build: impl FnOnce(LinuxDatapath) -> LinuxDatapath,
    netns: &mut Vec<String>,
) -> anyhow::Result<PodPair> {
    let node_name = format!("{prefix}-{tag}-n");
    let node = netns_into(&node_name, netns)?;
    let client = netns_into(&format!("{prefix}-{tag}-c"), netns)?;
    let server = netns_into(&format!("{prefix}-{tag}-s"), netns)?;
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
    let dp = build(
        run_in(&node, LinuxDatapath::new)
            .map_err(|e| anyhow::anyhow!("entering {node_name}: {e}"))??,
    );
    let pools = vec!["10.244.0.0/16".parse()?];
    dp.prepare_node(&NodeSetup {
        pools: pools.clone(),
        nat_outgoing: false,
    })?;
    let (host_c, host_s) = (format!("{host}{tag}c"), format!("{host}{tag}s"));
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
    Ok(PodPair {
        node_name,
        client,
        server,
        host_c,
        host_s,
        pools,
        eps,
        dp,
    })
}

/// A node namespace with client and server pods attached by weft; with
/// `mode`, weft's programs loaded (and for an enforcing mode, its maps).
pub(super) fn weft_node(
    prefix: &str,
    tag: &str,
    label: &'static str,
    enforcer: Enforcer,
    mode: Option<PolicyMode>,
    clean: &mut Cleanup,
) -> anyhow::Result<Case> {
    // Calico's interface names, so its layout's `-o cali+` matches
    let p = pod_pair(
        prefix,
        tag,
        "cali",
        |dp| dp.with_policy(mode.unwrap_or_default()),
        &mut clean.netns,
    )?;
    let dp = p.dp;
    let mut maps = None;
    let mut map_ids = BTreeSet::new();
    if let Some(mode) = mode {
        let before = map_fds()?;
        dp.fastpath_start(&FastPathSetup {
            pools: p.pools,
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
        let report = dp.fastpath_sync(&p.eps)?;
        if report.attached != 2 {
            bail!("{label}: weft's programs attached to {report:?}, not both pods");
        }
    }
    Ok(Case {
        label,
        baseline: None,
        enforcer,
        node: Some(p.node_name),
        client: p.client,
        server: p.server,
        host_c: p.host_c,
        host_s: p.host_s,
        maps,
        map_ids,
        note: String::new(),
        _dp: Some(dp),
    })
}

pub(super) fn workload(name: &str, addr: Ipv4Addr) -> Workload {
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
pub(super) fn decoy(i: usize) -> (Ipv4Addr, u16) {
    let a = u32::from(Ipv4Addr::new(100, 64, 0, 1)) + i as u32;
    (Ipv4Addr::from(a), 8000 + (i % 1000) as u16)
}

pub(super) fn tcp_ports(ports: &[u16]) -> Option<Vec<PolicyPort>> {
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
pub(super) fn network_policies(n: usize) -> Vec<NetworkPolicy> {
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
        audit: false,
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

pub(super) fn policies(n: usize) -> anyhow::Result<Compiled> {
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

pub(super) fn lookup(e: &EndpointRef) -> Option<PolicyEndpoint> {
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
