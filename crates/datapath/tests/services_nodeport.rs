//! The NodePort programs on real devices: a client namespace outside the
//! node reaches a NodePort over TCP, served by a pod of the node (Local:
//! the pod sees the client's address) or by a backend behind another
//! device (Cluster: source-NATed to the node, the reply reversed), and an
//! established connection survives a reload of the programs with pinned
//! maps (a weftd restart). Without root they skip.

mod common;
#[path = "services/sockets.rs"]
mod sockets;
#[path = "services/support.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use sockets::Servers;
use support::*;
use weft_datapath::bpf::{PinOutcome, PrivateBpffs};
use weft_datapath::netns::run_in;
use weft_datapath::services::{ServiceProgramOptions, ServicePrograms, ServiceTable};
use weft_lb::{Algorithm, IdAllocator, Protocol, ServiceType, TrafficPolicy};

fn ifindex(ns: &Ns, dev: &str) -> u32 {
    let out = ns.ip(&["-o", "link", "show", dev]);
    out.split(':').next().unwrap().trim().parse().unwrap()
}

/// out (198.18.5.2) -- ext0 (198.18.5.1) [node] hv1 (ee:..:ee) -- pod
/// (10.244.0.5); [node] ul0 (198.18.6.1) -- rpod (198.18.6.2, 10.244.1.7
/// on lo): another node's pod behind the underlay.
struct Lab {
    _servers: Servers,
    out: Ns,
    node: Ns,
    _pod: Ns,
    _rpod: Ns,
}

fn lab(test: &str) -> Lab {
    let out = Ns::new(test, "out");
    let node = Ns::new(test, "node");
    let pod = Ns::new(test, "pod");
    let rpod = Ns::new(test, "rpod");
    let link = |a: &Ns, an: &str, b: &Ns, bn: &str| {
        a.ip(&["link", "add", an, "type", "veth", "peer", "name", bn]);
        a.ip(&["link", "set", bn, "netns", &b.name]);
        a.ip(&["link", "set", an, "up"]);
        b.ip(&["link", "set", bn, "up"]);
    };
    link(&out, "o0", &node, "ext0");
    out.ip(&["addr", "add", "198.18.5.2/24", "dev", "o0"]);
    node.ip(&["addr", "add", "198.18.5.1/24", "dev", "ext0"]);

    link(&node, "hv1", &pod, "p0");
    node.ip(&["link", "set", "hv1", "address", "ee:ee:ee:ee:ee:ee"]);
    pod.ip(&["link", "set", "p0", "address", "02:00:00:00:00:05"]);
    pod.ip(&["addr", "add", "10.244.0.5/32", "dev", "p0"]);
    pod.ip(&["route", "add", "169.254.1.1", "dev", "p0"]);
    pod.ip(&["route", "add", "default", "via", "169.254.1.1", "dev", "p0"]);
    pod.ip(&[
        "neigh",
        "add",
        "169.254.1.1",
        "lladdr",
        "ee:ee:ee:ee:ee:ee",
        "dev",
        "p0",
        "nud",
        "permanent",
    ]);
    node.ip(&["route", "add", "10.244.0.5/32", "dev", "hv1"]);
    node.ip(&[
        "neigh",
        "add",
        "10.244.0.5",
        "lladdr",
        "02:00:00:00:00:05",
        "dev",
        "hv1",
        "nud",
        "permanent",
    ]);

    link(&node, "ul0", &rpod, "r0");
    node.ip(&["addr", "add", "198.18.6.1/24", "dev", "ul0"]);
    rpod.ip(&["addr", "add", "198.18.6.2/24", "dev", "r0"]);
    rpod.ip(&["addr", "add", "10.244.1.7/32", "dev", "lo"]);
    rpod.ip(&["route", "add", "default", "via", "198.18.6.1"]);
    node.ip(&["route", "add", "10.244.1.0/24", "via", "198.18.6.2"]);
    run(
        "ip",
        &[
            "netns",
            "exec",
            &node.name,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ],
    );

    let mut servers = Servers::new();
    servers.tcp_echo(&pod.path(), "10.244.0.5:8080".parse().unwrap(), "pod");
    servers.tcp_echo(&rpod.path(), "10.244.1.7:8080".parse().unwrap(), "rpod");
    Lab {
        _servers: servers,
        out,
        node,
        _pod: pod,
        _rpod: rpod,
    }
}

fn services() -> (Vec<weft_lb::Service>, Vec<weft_lb::EndpointSlice>) {
    let mut local = service(
        "local",
        ServiceType::NodePort,
        "10.96.0.30",
        &[(Protocol::TCP, 80, Some(30080))],
    );
    local.external_traffic_policy = TrafficPolicy::Local;
    let cluster = service(
        "cluster",
        ServiceType::NodePort,
        "10.96.0.31",
        &[(Protocol::TCP, 80, Some(30081))],
    );
    let none = service(
        "none",
        ServiceType::NodePort,
        "10.96.0.32",
        &[
            (Protocol::TCP, 80, Some(30082)),
            (Protocol::UDP, 80, Some(30082)),
        ],
    );
    let port = [(Protocol::TCP, 8080)];
    (
        vec![local, cluster, none],
        vec![
            slice("local", &[("10.244.0.5", NODE)], &port),
            slice("cluster", &[("10.244.1.7", "node-b")], &port),
        ],
    )
}

/// Loads, fills and attaches the programs to ext0 and ul0 in the node netns.
fn programs(lab: &Lab, pin: Option<&std::path::Path>, ids: &mut IdAllocator) -> ServicePrograms {
    let mut p = ServicePrograms::load(&ServiceProgramOptions {
        pin_dir: pin,
        share: None,
    })
    .unwrap();
    let (svcs, slices) = services();
    install(&p, &svcs, &slices, Algorithm::Random, ids);
    p.maps()
        .set_node_addrs(&[ip("198.18.5.1"), ip("198.18.6.1")])
        .unwrap();
    let devs = [ifindex(&lab.node, "ext0"), ifindex(&lab.node, "ul0")];
    run_in(&lab.node.path(), || {
        for d in devs {
            p.attach_device(d).unwrap();
        }
    })
    .unwrap();
    p
}

/// Connects from `out` and returns the stream and the server's greeting
/// (its name and the peer it saw).
fn connect(lab: &Lab, to: &str) -> (TcpStream, BufReader<TcpStream>, String) {
    let to: SocketAddr = to.parse().unwrap();
    let s = run_in(&lab.out.path(), || {
        TcpStream::connect_timeout(&to, Duration::from_secs(3))
    })
    .unwrap()
    .unwrap_or_else(|e| panic!("connect {to}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut hello = String::new();
    r.read_line(&mut hello).unwrap();
    (s, r, hello.trim().to_string())
}

fn echo(s: &mut TcpStream, r: &mut BufReader<TcpStream>, line: &str) -> String {
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut got = String::new();
    r.read_line(&mut got).unwrap();
    got.trim().to_string()
}

#[test]
fn nodeport_tcp_from_outside_local_and_cluster_privileged() {
    need_root!("nodeport_tcp_from_outside_local_and_cluster_privileged");
    let lab = lab("npe2e");
    let p = programs(&lab, None, &mut IdAllocator::default());

    let (mut s, mut r, hello) = connect(&lab, "198.18.5.1:30080");
    let (name, peer) = hello.split_once(' ').unwrap();
    assert_eq!(name, "pod");
    assert!(
        peer.starts_with("198.18.5.2:"),
        "Local: the pod sees the client: {hello}"
    );
    assert_eq!(echo(&mut s, &mut r, "one"), "one");
    assert_eq!(
        s.peer_addr().unwrap(),
        "198.18.5.1:30080".parse().unwrap(),
        "the client talks to the NodePort all along"
    );

    let (mut s, mut r, hello) = connect(&lab, "198.18.5.1:30081");
    let (name, peer) = hello.split_once(' ').unwrap();
    assert_eq!(name, "rpod");
    assert!(
        peer.starts_with("198.18.6.1:"),
        "Cluster: source-NATed to the node: {hello}"
    );
    for i in 0..20 {
        assert_eq!(
            echo(&mut s, &mut r, &format!("line {i}")),
            format!("line {i}")
        );
    }
    let st = p.maps().counters().unwrap();
    assert_eq!((st.np_new, st.np_snat), (2, 1), "{st:?}");
    assert!(st.np_fwd > 10 && st.np_revnat > 10, "{st:?}");
}

#[test]
fn nodeport_connection_survives_a_program_reload_with_pinned_maps_privileged() {
    need_root!("nodeport_connection_survives_a_program_reload_with_pinned_maps_privileged");
    let lab = lab("nprestart");
    let bpffs = PrivateBpffs::mount("nprestart").unwrap();
    let mut ids = IdAllocator::default();
    let first = programs(&lab, Some(bpffs.path()), &mut ids);
    let (mut s, mut r, hello) = connect(&lab, "198.18.5.1:30081");
    assert!(hello.starts_with("rpod 198.18.6.1:"), "{hello}");
    assert_eq!(echo(&mut s, &mut r, "before"), "before");

    // a restart: the service maps are read back (IDs kept), new programs
    // take the hooks over, the old ones go
    let back = first.maps().read_back().unwrap();
    let mut restored = IdAllocator::restore(&back);
    let second = programs(&lab, Some(bpffs.path()), &mut restored);
    assert!(second
        .pinned()
        .iter()
        .any(|(n, o)| n == "weft_lb_nat" && *o == PinOutcome::Reused));
    drop(first);
    assert_eq!(
        second.maps().read_back().unwrap(),
        back,
        "same entries, same IDs"
    );
    for i in 0..10 {
        assert_eq!(
            echo(&mut s, &mut r, &format!("after {i}")),
            format!("after {i}")
        );
    }
    let progs = run_in(&lab.node.path(), || {
        weft_datapath::bpf::tcx_programs(
            ifindex(&lab.node, "ext0"),
            weft_datapath::bpf::TcxDirection::Ingress,
        )
    })
    .unwrap()
    .unwrap();
    assert_eq!(progs.len(), 1, "the old program left the hook: {progs:?}");
    // the new programs serve a new connection too
    let (_s, _r, hello) = connect(&lab, "198.18.5.1:30080");
    assert!(hello.starts_with("pod 198.18.5.2:"), "{hello}");
}

#[test]
fn nodeport_without_endpoints_refuses_tcp_and_udp_from_outside_privileged() {
    need_root!("nodeport_without_endpoints_refuses_tcp_and_udp_from_outside_privileged");
    let lab = lab("npreject");
    let _p = programs(&lab, None, &mut IdAllocator::default());
    let to: SocketAddr = "198.18.5.1:30082".parse().unwrap();
    let tcp = run_in(&lab.out.path(), || {
        TcpStream::connect_timeout(&to, Duration::from_secs(3)).map(|_| ())
    })
    .unwrap();
    assert_eq!(
        tcp.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused,
        "as kube-proxy's REJECT: refused, not timed out"
    );
    let udp = run_in(&lab.out.path(), || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect(to).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send(b"q").unwrap();
        s.recv(&mut [0u8; 8]).map(|_| ())
    })
    .unwrap();
    assert_eq!(
        udp.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
}
