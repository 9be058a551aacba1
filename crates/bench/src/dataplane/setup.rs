//! The cases' plumbing: raw veth and VXLAN pairs beside the labs, the
//! two-node labs, and waiting until a case is ready to measure.

use super::*;

pub(super) fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Two namespaces joined by a veth pair `eth0`–`eth0`, 10.201.0.1/.2.
pub(super) fn raw_veth(
    prefix: &str,
    clean: &mut Cleanup,
) -> anyhow::Result<(PathBuf, PathBuf, IpAddr)> {
    let (a, b) = (format!("{prefix}-veth-a"), format!("{prefix}-veth-b"));
    for n in [&a, &b] {
        ip(&["netns", "add", n])?;
        clean.netns.push(n.clone());
        ip(&["-n", n, "link", "set", "lo", "up"])?;
    }
    ip(&[
        "link", "add", "eth0", "netns", &a, "type", "veth", "peer", "name", "eth0", "netns", &b,
    ])?;
    for (n, addr) in [(&a, "10.201.0.1/24"), (&b, "10.201.0.2/24")] {
        ip(&["-n", n, "addr", "add", addr, "dev", "eth0"])?;
        ip(&["-n", n, "link", "set", "eth0", "up"])?;
    }
    Ok((netns_path(&a), netns_path(&b), "10.201.0.2".parse()?))
}

/// Two namespaces joined by a veth underlay `ul0` (192.0.2.1/.2), each with
/// VXLAN device `vx0` (VNI 42, port 4789, no learning, MTU 1450) holding
/// 10.202.0.1/.2; a static FDB entry and a permanent neighbour for the peer,
/// as weft's overlay has.
/// Where a raw VXLAN pair's underlay runs.
pub(super) enum Underlay<'a> {
    /// One veth pair straight between the two namespaces.
    Direct,
    /// A veth from each namespace onto `br0` of this fabric netns: the same
    /// underlay path as the lab's nodes, so weft and the kernel cross the
    /// same bridge.
    Fabric(&'a Path),
}

/// Two namespaces with a VXLAN device each (static FDB and neighbour, no
/// learning) over `underlay`; returns (client, server, server's address).
pub(super) fn raw_vxlan(
    prefix: &str,
    tag: &str,
    underlay: Underlay,
    clean: &mut Cleanup,
) -> anyhow::Result<(PathBuf, PathBuf, IpAddr)> {
    let (a, b) = (format!("{prefix}-{tag}-a"), format!("{prefix}-{tag}-b"));
    for n in [&a, &b] {
        ip(&["netns", "add", n])?;
        clean.netns.push(n.clone());
        ip(&["-n", n, "link", "set", "lo", "up"])?;
    }
    // RFC 2544 addresses, above the lab's own (198.18.0.x)
    let (ul_a, ul_b) = ("198.19.255.201", "198.19.255.202");
    match underlay {
        Underlay::Direct => ip(&[
            "link", "add", "ul0", "netns", &a, "type", "veth", "peer", "name", "ul0", "netns", &b,
        ])?,
        Underlay::Fabric(fabric) => {
            let fab = fabric
                .file_name()
                .and_then(|f| f.to_str())
                .context("fabric netns path")?;
            for (n, port) in [(&a, "rawvx-a"), (&b, "rawvx-b")] {
                ip(&[
                    "-n", n, "link", "add", "ul0", "type", "veth", "peer", "name", port, "netns",
                    fab,
                ])?;
                ip(&["-n", fab, "link", "set", port, "master", "br0", "up"])?;
            }
        }
    }
    let sides = [
        (
            &a,
            ul_a,
            ul_b,
            "02:00:0a:ca:00:01",
            "02:00:0a:ca:00:02",
            "10.202.0.1",
            "10.202.0.2",
        ),
        (
            &b,
            ul_b,
            ul_a,
            "02:00:0a:ca:00:02",
            "02:00:0a:ca:00:01",
            "10.202.0.2",
            "10.202.0.1",
        ),
    ];
    for (n, ul, peer_ul, mac, peer_mac, inner, peer_inner) in sides {
        ip(&["-n", n, "addr", "add", &format!("{ul}/15"), "dev", "ul0"])?;
        ip(&["-n", n, "link", "set", "ul0", "up"])?;
        ip(&[
            "-n",
            n,
            "link",
            "add",
            "vx0",
            "address",
            mac,
            "mtu",
            "1450",
            "type",
            "vxlan",
            "id",
            "42",
            "local",
            ul,
            "dev",
            "ul0",
            "dstport",
            "4789",
            "nolearning",
        ])?;
        ip(&["-n", n, "link", "set", "vx0", "up"])?;
        ip(&["-n", n, "addr", "add", &format!("{inner}/24"), "dev", "vx0"])?;
        bridge(&[
            "-n",
            n,
            "fdb",
            "add",
            peer_mac,
            "dev",
            "vx0",
            "dst",
            peer_ul,
            "self",
            "permanent",
        ])?;
        ip(&[
            "-n",
            n,
            "neigh",
            "add",
            peer_inner,
            "lladdr",
            peer_mac,
            "dev",
            "vx0",
            "nud",
            "permanent",
        ])?;
    }
    Ok((netns_path(&a), netns_path(&b), "10.202.0.2".parse()?))
}

pub(super) fn bridge(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("bridge")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running bridge (iproute2)")?;
    if !out.status.success() {
        bail!(
            "bridge {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Builds a two-node lab (one etcd member) with `routing`, recorded in
/// `clean` before it is built so a half-built one goes too.
pub(super) fn two_node_lab(
    name: &str,
    bin_dir: &Path,
    routing: &str,
    weftd_args: &[&str],
    clean: &mut Cleanup,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Lab> {
    let mut spec = LabSpec::new(name, bin_dir);
    spec.weftd_args
        .extend(weftd_args.iter().map(|a| a.to_string()));
    spec.nodes = 2;
    spec.etcd_members = 1;
    spec.routing = routing.into();
    clean.labs.push(name.to_string());
    let lab = Lab::up(&spec, &mut |m| progress(&format!("  [{name}] {m}")))?;
    if !lab.shared_store {
        bail!("this weftd has no --store etcd: its nodes cannot route to each other");
    }
    Ok(lab)
}

/// Waits (at most 15 s) until every pod address on every node of `lab` is
/// on the fast path, or a node reports the kernel path; returns the mode.
pub(super) fn wait_forwarding(lab: &Lab) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut modes = Vec::new();
        for node in lab.nodes() {
            let r = weft_api::http::call(
                &node.socket,
                "GET",
                weft_api::paths::STATUS,
                b"",
                Duration::from_secs(5),
            )?;
            let s: weft_api::AgentStatus = serde_json::from_slice(&r.body)
                .with_context(|| format!("status of {}", node.name))?;
            let f = s.fastpath;
            let settled = f.mode != "ebpf" || (f.addresses > 0 && f.fast == f.addresses);
            modes.push((f.mode, settled));
        }
        if modes.iter().all(|(_, settled)| *settled) {
            let (mode, _) = modes.swap_remove(0);
            return Ok(mode);
        }
        if Instant::now() >= deadline {
            bail!(
                "pods of lab {} not all on the fast path within 15 s",
                lab.name
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(super) fn first_v4(ips: &[IpAddr]) -> anyhow::Result<IpAddr> {
    ips.iter()
        .copied()
        .find(IpAddr::is_ipv4)
        .context("pod has no IPv4 address")
}

/// Waits (at most 30 s) until a TCP round trip from `client` to `addr`
/// (a listener bound in `server`) works: a new node's routes to its peer
/// arrive through the store a moment after its first pod.
pub(super) fn wait_reachable(client: &Path, server: &Path, addr: IpAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match weft_lab::probe::tcp_check(client, server, addr, Duration::from_secs(1)) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("{addr} not reachable within 30 s")))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The MTU of `eth0` (or `vx0`) in `netns`.
pub(super) fn mtu_in(netns: &Path, dev: &str) -> u32 {
    let name = netns
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Command::new("ip")
        .args(["-n", &name, "-o", "link", "show", dev])
        .output()
        .ok()
        .and_then(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            let mut it = s.split_whitespace();
            it.find(|w| *w == "mtu")?;
            it.next()?.parse().ok()
        })
        .unwrap_or(0)
}
