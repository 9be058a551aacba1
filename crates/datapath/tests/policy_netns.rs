//! NetworkPolicy on real veths: two pods on one node (`wdn-<pid>-…`
//! namespaces), the programs loaded by `LinuxDatapath` with policy on, the
//! maps written through `KernelPolicyMaps` over a private bpffs. With the
//! fast path forwarding and with it off (policy alone): an allowed TCP
//! connect works, a denied one fails, a policy change that removes the
//! allow stops the established connection's next packets and new connects,
//! and a reload of the programs (a weftd restart) keeps enforcing at every
//! step. Every connect and read is bounded; everything made is deleted on
//! drop, also on failure. Without root it skips.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;
use weft_datapath::seams::*;

use common::{is_root, Ns};
use weft_datapath::bpf::PrivateBpffs;
use weft_datapath::netns::run_in;
use weft_datapath::policy::{PolicyEndpoint, PolicyMaps, PolicyMode};
use weft_datapath::{FastEndpoint, FastPathSetup, NodeSetup, PodLink};
use weft_policy::*;

const NODE: &str = "node-1";
const A: &str = "10.244.0.2";
const B: &str = "10.244.0.3";
const WAIT: Duration = Duration::from_millis(700);

fn pod_link(ns: &Ns, host: &str, addr: &str) -> PodLink {
    PodLink {
        netns: ns.path(),
        ifname: "eth0".into(),
        host_ifname: host.into(),
        mtu: 1400,
        ipv4: Some(addr.parse().unwrap()),
        ipv6: None,
    }
}

fn workload(name: &str, addr: &str) -> Workload {
    let labels: Labels = [("app".to_string(), name.to_string())].into();
    Workload {
        namespace: "x".into(),
        name: name.into(),
        labels,
        namespace_labels: [("kubernetes.io/metadata.name".to_string(), "x".to_string())].into(),
        ips: vec![addr.parse().unwrap()],
        node: NODE.into(),
        ..Default::default()
    }
}

/// b takes a in on TCP 8080 (when `allow`), nothing else.
fn state(allow: bool, alloc: &mut MemoryAllocator) -> Compiled {
    let inventory = Inventory {
        workloads: vec![workload("a", A), workload("b", B)],
        nodes: vec![Node {
            name: NODE.into(),
            ips: vec!["10.99.0.1".parse().unwrap()],
        }],
    };
    let rules = allow.then(|| Rule {
        peers: Some(vec![Peer {
            pod_selector: Some(LabelSelector::labels([("app", "a")])),
            ..Default::default()
        }]),
        ports: Some(vec![PolicyPort {
            protocol: None,
            port: Some(PortRef::Number(8080)),
            end_port: None,
        }]),
    });
    let policy = NetworkPolicy {
        namespace: "x".into(),
        name: "b-in".into(),
        pod_selector: LabelSelector::labels([("app", "b")]),
        policy_types: Some(vec![Direction::Ingress]),
        ingress: Some(rules.into_iter().collect()),
        egress: None,
        audit: false,
    };
    compile(&[policy], &inventory, alloc).unwrap()
}

fn lookup(e: &EndpointRef) -> Option<PolicyEndpoint> {
    let (id, addr) = match e.name.as_str() {
        "a" => (1, A),
        "b" => (2, B),
        _ => return None,
    };
    Some(PolicyEndpoint {
        id,
        addresses: vec![addr.parse().unwrap()],
        audit: false,
    })
}

/// A listener in `server` on `port` of B.
fn listen(server: &Path, port: u16) -> TcpListener {
    let addr = SocketAddr::new(B.parse().unwrap(), port);
    let l = run_in(server, move || TcpListener::bind(addr))
        .unwrap()
        .unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

/// Connects from `client` to B:`port` within [`WAIT`]; with a connection,
/// the listener's side of it.
fn connect(client: &Path, l: &TcpListener, port: u16) -> Option<(TcpStream, TcpStream)> {
    let addr = SocketAddr::new(B.parse().unwrap(), port);
    let c = run_in(client, move || TcpStream::connect_timeout(&addr, WAIT))
        .unwrap()
        .ok()?;
    for _ in 0..70 {
        if let Ok((s, _)) = l.accept() {
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            return Some((c, s));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Whether `byte` written on `c` arrives on `s` within [`WAIT`].
fn arrives(c: &mut TcpStream, s: &mut TcpStream, byte: u8) -> bool {
    c.write_all(&[byte]).unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).is_ok() && b[0] == byte
}

/// The allowed port connects and the denied one does not.
fn assert_enforced(a: &Ns, allowed: &TcpListener, denied: &TcpListener, when: &str) {
    let (mut c, mut s) = connect(&a.path(), allowed, 8080)
        .unwrap_or_else(|| panic!("{when}: a -> b:8080 must connect"));
    assert!(arrives(&mut c, &mut s, 1), "{when}: data on 8080");
    assert!(
        connect(&a.path(), denied, 8081).is_none(),
        "{when}: a -> b:8081 must be denied"
    );
}

fn scenario(mode: PolicyMode, tag: &str) {
    let node = Ns::new(tag, "node");
    let pa = Ns::new(tag, "a");
    let pb = Ns::new(tag, "b");
    let fs = PrivateBpffs::mount(tag).unwrap();
    let pins = fs.path().join("weftd");
    node.veth_pair("dummy0", "dummy0p", 1500);
    node.ip(&["addr", "add", "10.99.0.1/32", "dev", "dummy0"]);
    let datapath = |mode| {
        node.datapath()
            .with_bpf_pin_dir(Some(pins.clone()))
            .with_policy(mode)
    };
    let dp = datapath(mode);
    dp.prepare_node(&NodeSetup {
        pools: vec!["10.244.0.0/16".parse().unwrap()],
        nat_outgoing: false,
    })
    .unwrap();
    let host_a = format!("{tag}a");
    let host_b = format!("{tag}b");
    let att_a = dp.attach(&pod_link(&pa, &host_a, A)).unwrap();
    let att_b = dp.attach(&pod_link(&pb, &host_b, B)).unwrap();
    let endpoints = [
        FastEndpoint {
            host_ifname: host_a.clone(),
            pod_mac: att_a.pod_mac,
            ips: vec![IpAddr::V4(A.parse::<Ipv4Addr>().unwrap())],
            settled: true,
        },
        FastEndpoint {
            host_ifname: host_b.clone(),
            pod_mac: att_b.pod_mac,
            ips: vec![IpAddr::V4(B.parse::<Ipv4Addr>().unwrap())],
            settled: true,
        },
    ];
    let setup = FastPathSetup {
        pools: vec!["10.244.0.0/16".parse().unwrap()],
        remote_device: None,
    };
    let mut alloc = MemoryAllocator::new();
    let allowing = state(true, &mut alloc);
    let denying = state(false, &mut alloc);

    // the maps before the programs (as weftd fills them before CNI ADD
    // returns), then the programs on the veths
    let mut maps = dp.policy_maps(NODE, RuleIds::new()).unwrap().unwrap();
    maps.replace(&allowing, &lookup).unwrap();
    dp.fastpath_start(&setup).unwrap();
    let report = dp.fastpath_sync(&endpoints).unwrap();
    assert_eq!(report.attached, 2, "{report:?}");
    let l8080 = listen(&pb.path(), 8080);
    let l8081 = listen(&pb.path(), 8081);
    assert_enforced(&pa, &l8080, &l8081, "first load");
    let stats = dp.fastpath_stats().unwrap().unwrap();
    if mode.forwards() {
        assert!(stats.local > 0, "the fast path carried a -> b: {stats:?}");
    } else {
        assert_eq!(stats.local, 0, "policy alone forwards nothing: {stats:?}");
    }

    // the allow goes away mid-connection: the next packets stop
    let (mut c, mut s) = connect(&pa.path(), &l8080, 8080).expect("allowed");
    assert!(arrives(&mut c, &mut s, 2));
    maps.apply(&plan(&allowing, &denying), &lookup).unwrap();
    assert!(
        !arrives(&mut c, &mut s, 3),
        "the established flow is stopped"
    );
    assert!(connect(&pa.path(), &l8080, 8080).is_none(), "new ones too");
    maps.apply(&plan(&denying, &allowing), &lookup).unwrap();
    drop((c, s));

    // a weftd restart: fresh programs load (the old ones still on the
    // hooks), replace them, then the new agent rewrites the maps
    drop(maps);
    let dp2 = datapath(mode);
    dp2.fastpath_start(&setup).unwrap();
    assert_enforced(&pa, &l8080, &l8081, "new programs loaded, old attached");
    dp2.fastpath_sync(&endpoints).unwrap();
    assert_enforced(&pa, &l8080, &l8081, "new programs attached, old maps");
    drop(dp);
    let mut maps = dp2.policy_maps(NODE, RuleIds::new()).unwrap().unwrap();
    maps.replace(&allowing, &lookup).unwrap();
    assert_enforced(&pa, &l8080, &l8081, "maps rewritten by the new agent");
    drop((maps, dp2));
    weft_datapath::bpf::pin::remove_dir(&pins).unwrap();
}

#[test]
fn policy_with_the_fast_path_privileged() {
    need_root!("policy_with_the_fast_path_privileged");
    scenario(PolicyMode::Enforce, "fwd");
}

#[test]
fn policy_without_the_fast_path_privileged() {
    need_root!("policy_without_the_fast_path_privileged");
    scenario(PolicyMode::EnforceOnly, "pol");
}
