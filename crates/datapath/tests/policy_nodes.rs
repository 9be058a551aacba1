//! NetworkPolicy between two nodes (`wdm-<pid>-…` namespaces joined by a
//! veth underlay in 198.18.0.0/15, weft's VXLAN overlay between them), one
//! pod each, the programs loaded by each node's `LinuxDatapath` with policy
//! on, each node's maps written from one compiled state. With the fast path
//! (`weft_to_pod` judges the receiver before its redirect) and without it
//! (`weft_to_container` on the kernel path): the allowed port connects over
//! IPv4 and IPv6, the denied one does not, and the other way round the
//! receiver's isolation holds. Bounded; everything is deleted on drop.
//! Without root it skips.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{is_root, run, Ns};
use weft_datapath::bpf::PrivateBpffs;
use weft_datapath::netns::run_in;
use weft_datapath::policy::{PolicyEndpoint, PolicyMaps, PolicyMode};
use weft_datapath::seams::*;
use weft_datapath::{
    FastEndpoint, FastPathSetup, LinuxDatapath, NodeSetup, OverlaySetup, PeerNode, PodLink,
    RoutingMode,
};
use weft_policy::*;

const VXLAN: &str = "weft.vxlan";
const WAIT: Duration = Duration::from_millis(700);

struct Node {
    /// The node's netns (kept: dropping it deletes the namespace).
    _ns: Ns,
    pod: Ns,
    dp: LinuxDatapath,
    name: &'static str,
    underlay: IpAddr,
    pod_ips: Vec<IpAddr>,
    host_if: String,
    pod_mac: [u8; 6],
    block: Vec<ipnet::IpNet>,
}

fn pools() -> Vec<ipnet::IpNet> {
    vec![
        "10.244.0.0/16".parse().unwrap(),
        "fd00:10:244::/56".parse().unwrap(),
    ]
}

fn two_nodes(tag: &str, pins: &Path, mode: PolicyMode) -> (Node, Node) {
    let n1 = Ns::new(tag, "n1");
    let n2 = Ns::new(tag, "n2");
    run(
        "ip",
        &[
            "link", "add", "u0", "netns", &n1.name, "mtu", "1500", "type", "veth", "peer", "name",
            "u0", "netns", &n2.name, "mtu", "1500",
        ],
    );
    let mk = |ns: Ns, i: u8, name: &'static str, block: &str| {
        ns.ip(&["addr", "add", &format!("198.18.0.{i}/15"), "dev", "u0"]);
        ns.ip(&["link", "set", "u0", "up"]);
        let dp = ns
            .datapath()
            .with_bpf_pin_dir(Some(pins.join(name)))
            .with_policy(mode);
        dp.prepare_node(&NodeSetup {
            pools: pools(),
            nat_outgoing: false,
        })
        .unwrap();
        let pod = Ns::new(tag, &format!("p{i}"));
        let v4 = format!("10.244.0.{}", 64 * (i - 1) + 2);
        let v6 = format!("fd00:10:244::{:x}", 64 * (u16::from(i) - 1) + 2);
        let host_if = format!("{tag}{i}");
        let att = dp
            .attach(&PodLink {
                netns: pod.path(),
                ifname: "eth0".into(),
                host_ifname: host_if.clone(),
                mtu: 1400,
                ipv4: Some(v4.parse().unwrap()),
                ipv6: Some(v6.parse().unwrap()),
            })
            .unwrap();
        Node {
            _ns: ns,
            pod,
            dp,
            name,
            underlay: format!("198.18.0.{i}").parse().unwrap(),
            pod_ips: vec![v4.parse().unwrap(), v6.parse().unwrap()],
            host_if,
            pod_mac: att.pod_mac,
            block: vec![
                block.parse().unwrap(),
                format!("fd00:10:244::{:x}/122", 64 * (u16::from(i) - 1))
                    .parse()
                    .unwrap(),
            ],
        }
    };
    let a = mk(n1, 1, "node-1", "10.244.0.0/26");
    let b = mk(n2, 2, "node-2", "10.244.0.64/26");
    let overlay = |n: &Node| OverlaySetup {
        device: VXLAN.into(),
        vni: 4096,
        port: 4789,
        local_v4: match n.underlay {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        },
        local_v6: None,
        underlay_dev: Some("u0".into()),
        mtu: 0,
    };
    let peer = |n: &Node, mac| PeerNode {
        name: n.name.into(),
        underlay_v4: match n.underlay {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        },
        underlay_v6: None,
        vtep_mac: Some(mac),
        blocks: n.block.clone(),
    };
    let mac_a = a.dp.ensure_overlay(&overlay(&a)).unwrap();
    let mac_b = b.dp.ensure_overlay(&overlay(&b)).unwrap();
    a.dp.sync_peers(RoutingMode::Overlay, VXLAN, &[peer(&b, mac_b)])
        .unwrap();
    b.dp.sync_peers(RoutingMode::Overlay, VXLAN, &[peer(&a, mac_a)])
        .unwrap();
    (a, b)
}

/// a (node-1, app=a) takes nothing in; b (node-2, app=b) takes a in on
/// TCP 8080.
fn compiled(a: &Node, b: &Node) -> Compiled {
    let workload = |n: &Node, app: &str| Workload {
        namespace: "x".into(),
        name: app.into(),
        labels: [("app".to_string(), app.to_string())].into(),
        namespace_labels: [("kubernetes.io/metadata.name".to_string(), "x".to_string())].into(),
        ips: n.pod_ips.clone(),
        node: n.name.into(),
        ..Default::default()
    };
    let inventory = Inventory {
        workloads: vec![workload(a, "a"), workload(b, "b")],
        nodes: [a, b]
            .iter()
            .map(|n| weft_policy::Node {
                name: n.name.into(),
                ips: vec![n.underlay],
            })
            .collect(),
    };
    let b_in = NetworkPolicy {
        namespace: "x".into(),
        name: "b-in".into(),
        pod_selector: LabelSelector::labels([("app", "b")]),
        policy_types: Some(vec![Direction::Ingress]),
        ingress: Some(vec![Rule {
            peers: Some(vec![Peer {
                pod_selector: Some(LabelSelector::labels([("app", "a")])),
                ..Default::default()
            }]),
            ports: Some(vec![PolicyPort {
                protocol: None,
                port: Some(PortRef::Number(8080)),
                end_port: None,
            }]),
        }]),
        egress: None,
        audit: false,
    };
    let a_in = NetworkPolicy {
        namespace: "x".into(),
        name: "a-in".into(),
        pod_selector: LabelSelector::labels([("app", "a")]),
        policy_types: Some(vec![Direction::Ingress]),
        ingress: Some(vec![]),
        egress: None,
        audit: false,
    };
    compile(&[b_in, a_in], &inventory, &mut MemoryAllocator::new()).unwrap()
}

/// Whether `client` connects to `addr` within [`WAIT`] and a byte
/// crosses each way.
fn talks(server: &Path, client: &Path, addr: SocketAddr) -> bool {
    let l = run_in(server, move || TcpListener::bind(addr))
        .unwrap()
        .unwrap();
    let Ok(Ok(mut c)) = run_in(client, move || TcpStream::connect_timeout(&addr, WAIT)) else {
        return false;
    };
    l.set_nonblocking(true).unwrap();
    let t = Instant::now();
    let mut s = loop {
        if let Ok((s, _)) = l.accept() {
            break s;
        }
        if t.elapsed() > WAIT {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 1];
    c.write_all(b"1").is_ok()
        && s.read_exact(&mut buf).is_ok()
        && s.write_all(b"2").is_ok()
        && c.read_exact(&mut buf).is_ok()
        && buf == *b"2"
}

fn scenario(mode: PolicyMode, tag: &str) {
    let fs = PrivateBpffs::mount(tag).unwrap();
    let (a, b) = two_nodes(tag, fs.path(), mode);
    let state = compiled(&a, &b);
    for n in [&a, &b] {
        let app = if n.name == "node-1" { "a" } else { "b" };
        let ep = PolicyEndpoint {
            id: 1,
            addresses: n.pod_ips.clone(),
            audit: false,
        };
        let lookup = |e: &EndpointRef| (e.name == app).then(|| ep.clone());
        let mut maps = n.dp.policy_maps(n.name, RuleIds::new()).unwrap().unwrap();
        maps.replace(&state, &lookup).unwrap();
        n.dp.fastpath_start(&FastPathSetup {
            pools: pools(),
            remote_device: Some(VXLAN.into()),
        })
        .unwrap();
        n.dp.fastpath_sync(&[FastEndpoint {
            host_ifname: n.host_if.clone(),
            pod_mac: n.pod_mac,
            ips: n.pod_ips.clone(),
            settled: true,
        }])
        .unwrap();
    }
    for (ip_a, ip_b) in a.pod_ips.iter().zip(&b.pod_ips) {
        assert!(
            talks(&b.pod.path(), &a.pod.path(), SocketAddr::new(*ip_b, 8080)),
            "a -> b:8080 ({ip_b}) is allowed"
        );
        assert!(
            !talks(&b.pod.path(), &a.pod.path(), SocketAddr::new(*ip_b, 8081)),
            "a -> b:8081 ({ip_b}) is denied"
        );
        assert!(
            !talks(&a.pod.path(), &b.pod.path(), SocketAddr::new(*ip_a, 8080)),
            "b -> a ({ip_a}) is denied: a takes nothing in"
        );
    }
    let (sa, sb) = (
        a.dp.fastpath_stats().unwrap().unwrap(),
        b.dp.fastpath_stats().unwrap().unwrap(),
    );
    if mode.forwards() {
        assert!(sa.remote > 0 && sb.local > 0, "{sa:?} {sb:?}");
    } else {
        assert!(sa.remote == 0 && sb.local == 0, "{sa:?} {sb:?}");
    }
    if mode.forwards() {
        // node-2's weftd restarts with the fast path off, policy on: its
        // weft_to_pod leaves the VXLAN device, enforcement stays
        let dp2 = b
            ._ns
            .datapath()
            .with_bpf_pin_dir(Some(fs.path().join(b.name)))
            .with_policy(PolicyMode::EnforceOnly);
        dp2.fastpath_start(&FastPathSetup {
            pools: pools(),
            remote_device: Some(VXLAN.into()),
        })
        .unwrap();
        dp2.fastpath_sync(&[FastEndpoint {
            host_ifname: b.host_if.clone(),
            pod_mac: b.pod_mac,
            ips: b.pod_ips.clone(),
            settled: true,
        }])
        .unwrap();
        let link = b._ns.ip(&["-o", "link", "show", VXLAN]);
        let ifindex: u32 = link.split(':').next().unwrap().trim().parse().unwrap();
        let on_vxlan = run_in(&b._ns.path(), move || {
            weft_datapath::bpf::tcx_programs(ifindex, weft_datapath::bpf::TcxDirection::Ingress)
        })
        .unwrap()
        .unwrap();
        assert!(on_vxlan.is_empty(), "{on_vxlan:?}");
        let (ip_a, ip_b) = (a.pod_ips[0], b.pod_ips[0]);
        assert!(talks(
            &b.pod.path(),
            &a.pod.path(),
            SocketAddr::new(ip_b, 8080)
        ));
        assert!(!talks(
            &b.pod.path(),
            &a.pod.path(),
            SocketAddr::new(ip_b, 8081)
        ));
        assert!(!talks(
            &a.pod.path(),
            &b.pod.path(),
            SocketAddr::new(ip_a, 8080)
        ));
    }
    drop((a, b));
    weft_datapath::bpf::pin::remove_dir(&fs.path().join("node-1")).unwrap();
    weft_datapath::bpf::pin::remove_dir(&fs.path().join("node-2")).unwrap();
}

#[test]
fn policy_across_nodes_with_the_fast_path_privileged() {
    need_root!("policy_across_nodes_with_the_fast_path_privileged");
    scenario(PolicyMode::Enforce, "xf");
}

#[test]
fn policy_across_nodes_without_the_fast_path_privileged() {
    need_root!("policy_across_nodes_without_the_fast_path_privileged");
    scenario(PolicyMode::EnforceOnly, "xk");
}
