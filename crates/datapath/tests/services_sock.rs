//! The socket-level load balancer on real sockets: client processes in a
//! private cgroup v2 directory (the programs are attached there, never to
//! the machine's root cgroup) and in a client network namespace reach
//! ClusterIPs served by two backend namespaces. Without root they skip.

mod common;
#[path = "services/sockets.rs"]
mod sockets;
#[path = "services/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use common::*;
use sockets::{client_main, run_client, Cgroup, Outcome, Servers};
use support::*;
use weft_datapath::bpf::Loaded;
use weft_datapath::fastpath::FastPath;
use weft_datapath::flows::FlowSource;
use weft_datapath::services::{
    AffinityClient, ServiceProgramOptions, ServicePrograms, ServiceTable,
};
use weft_lb::{Algorithm, IdAllocator, Protocol, ServiceType, SessionAffinity};

/// Not a test: the client process `run_client` starts (does nothing when
/// run by the harness).
#[test]
fn client_helper() {
    if let Ok(spec) = std::env::var("WEFT_SVC_CLIENT") {
        client_main(&spec);
    }
}

const ECONNREFUSED: i32 = 111;

/// Client netns `cli` (10.250.1.1 towards b1, 10.250.2.1 towards b2) and
/// backend netns b1 (10.250.1.2) and b2 (10.250.2.2), each serving its name
/// on TCP 8080 and UDP 5353. Services (built by weft_lb, written through
/// ServiceMaps): web 10.96.0.10 (TCP 80, UDP 53, NodePort 30080) on both
/// backends; empty 10.96.0.11 without endpoints; sticky 10.96.0.12 with
/// ClientIP affinity; self 10.96.0.13 served by b1 alone. 10.250.1.1 is a
/// node address. The socket programs sit on a private cgroup.
struct Lab {
    // dropped in order: programs and cgroup first, servers, then namespaces
    progs: ServicePrograms,
    cg: Cgroup,
    _servers: Servers,
    cli: Ns,
    b1: Ns,
    _b2: Ns,
}

fn lab(test: &str, algorithm: Algorithm) -> Lab {
    lab_sharing(test, algorithm, None)
}

/// [`lab`] with the programs sharing `share`'s maps (weftd gives the fast
/// path's, so flow events go to its ring).
fn lab_sharing(test: &str, algorithm: Algorithm, share: Option<&Loaded>) -> Lab {
    let cli = Ns::new(test, "cli");
    let b1 = Ns::new(test, "b1");
    let b2 = Ns::new(test, "b2");
    for (i, b) in [(1, &b1), (2, &b2)] {
        let (v, e) = (format!("v{i}"), format!("e{i}"));
        cli.ip(&["link", "add", &v, "type", "veth", "peer", "name", &e]);
        cli.ip(&["link", "set", &e, "netns", &b.name]);
        cli.ip(&["addr", "add", &format!("10.250.{i}.1/24"), "dev", &v]);
        cli.ip(&["link", "set", &v, "up"]);
        b.ip(&["addr", "add", &format!("10.250.{i}.2/24"), "dev", &e]);
        b.ip(&["link", "set", &e, "up"]);
        b.ip(&["route", "add", "default", "via", &format!("10.250.{i}.1")]);
        cli.ip(&[
            "addr",
            "add",
            &format!("fd00:250:{i}::1/64"),
            "dev",
            &v,
            "nodad",
        ]);
        b.ip(&[
            "addr",
            "add",
            &format!("fd00:250:{i}::2/64"),
            "dev",
            &e,
            "nodad",
        ]);
    }
    let mut servers = Servers::new();
    for (b, a, name) in [(&b1, "10.250.1.2", "b1"), (&b2, "10.250.2.2", "b2")] {
        servers.tcp(&b.path(), format!("{a}:8080").parse().unwrap(), name);
        servers.udp(&b.path(), format!("{a}:5353").parse().unwrap(), name);
    }
    for (b, a, name) in [(&b1, "fd00:250:1::2", "b1"), (&b2, "fd00:250:2::2", "b2")] {
        servers.tcp(&b.path(), format!("[{a}]:8080").parse().unwrap(), name);
        servers.udp(&b.path(), format!("[{a}]:5353").parse().unwrap(), name);
    }

    let mut web = service(
        "web",
        ServiceType::NodePort,
        "10.96.0.10",
        &[(Protocol::TCP, 80, Some(30080)), (Protocol::UDP, 53, None)],
    );
    web.ports[1].name = "udp".into();
    let empty = service(
        "empty",
        ServiceType::ClusterIP,
        "10.96.0.11",
        &[(Protocol::TCP, 80, None), (Protocol::UDP, 53, None)],
    );
    let mut sticky = service(
        "sticky",
        ServiceType::ClusterIP,
        "10.96.0.12",
        &[(Protocol::TCP, 80, None)],
    );
    sticky.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 600,
    };
    let me = service(
        "self",
        ServiceType::ClusterIP,
        "10.96.0.13",
        &[(Protocol::TCP, 80, None)],
    );
    let mut web6 = service(
        "web6",
        ServiceType::ClusterIP,
        "fd00:96::10",
        &[(Protocol::TCP, 80, None), (Protocol::UDP, 53, None)],
    );
    web6.ports[1].name = "udp".into();
    let both = [("10.250.1.2", NODE), ("10.250.2.2", "node-b")];
    let both6 = [("fd00:250:1::2", NODE), ("fd00:250:2::2", "node-b")];
    let ports = [(Protocol::TCP, 8080), (Protocol::UDP, 5353)];
    let slices = [
        slice("web", &both, &ports),
        slice("sticky", &both, &ports),
        slice("self", &[("10.250.1.2", NODE)], &ports),
        slice("web6", &both6, &ports),
    ];
    let mut progs = ServicePrograms::load(&ServiceProgramOptions {
        pin_dir: None,
        share,
    })
    .unwrap();
    install(
        &progs,
        &[web, empty, sticky, me, web6],
        &slices,
        algorithm,
        &mut IdAllocator::default(),
    );
    progs.maps().set_node_addrs(&[ip("10.250.1.1")]).unwrap();
    let cg = Cgroup::new(test);
    progs.attach_cgroup(&cg.path).unwrap();
    Lab {
        progs,
        cg,
        _servers: servers,
        cli,
        b1,
        _b2: b2,
    }
}

impl Lab {
    fn client(&self, spec: &str) -> Vec<Outcome> {
        run_client(&self.cli.path(), Some(&self.cg), spec)
    }
}

/// Server name -> count, and every peer seen.
fn tally(out: &[Outcome]) -> (BTreeMap<String, usize>, Vec<SocketAddr>, Vec<i32>) {
    let (mut names, mut peers, mut errs) = (BTreeMap::new(), Vec::new(), Vec::new());
    for o in out {
        match o {
            Outcome::Ok(p, n) => {
                *names.entry(n.clone()).or_insert(0) += 1;
                peers.push(*p);
            }
            Outcome::Err(e) => errs.push(*e),
        }
    }
    (names, peers, errs)
}

#[test]
fn socket_lb_tcp_reaches_both_backends_and_shows_the_cluster_ip_privileged() {
    need_root!("socket_lb_tcp_reaches_both_backends_and_shows_the_cluster_ip_privileged");
    for (tag, alg) in [
        ("socktcpr", Algorithm::Random),
        ("socktcpm", Algorithm::maglev()),
    ] {
        let lab = lab(tag, alg);
        let (names, peers, errs) = tally(&lab.client("tcp 10.96.0.10:80 40"));
        assert!(errs.is_empty(), "{tag}: {errs:?}");
        assert_eq!(peers.len(), 40);
        assert!(
            names.get("b1") >= Some(&3) && names.get("b2") >= Some(&3),
            "{tag}: {names:?}"
        );
        assert!(
            peers.iter().all(|p| *p == "10.96.0.10:80".parse().unwrap()),
            "{tag}: getpeername shows the Service: {peers:?}"
        );
        let st = lab.progs.maps().counters().unwrap();
        assert_eq!(st.sock_xlate, 40, "{tag}");
        let events = flow_events(&lab);
        assert_eq!(events.len(), 40, "{tag}: one translation event per connect");
        assert!(events
            .iter()
            .all(|e| e.verdict == weft_bpf_abi::VERDICT_TRANSLATED
                && e.point == weft_bpf_abi::POINT_SOCKET
                && e.dst[..4] == [10, 96, 0, 10]
                && u16::from_be(e.xlat_dport) == 8080));
        assert_eq!(st.sock_revnat, 40, "{tag}: one getpeername each");
    }
}

/// weftd loads the Service programs sharing the fast path's maps: a
/// ClusterIP connect is reported TRANSLATED (the Service's address and
/// port, the backend's) in the ring `weft observe` reads, the fast path's.
#[test]
fn socket_lb_translations_reach_the_fast_paths_flow_ring_privileged() {
    need_root!("socket_lb_translations_reach_the_fast_paths_flow_ring_privileged");
    let fp = FastPath::load(&["10.250.0.0/16".parse().unwrap()], 0, None).unwrap();
    let lab = lab_sharing("sockflow", Algorithm::Random, Some(fp.shared_maps()));
    let (names, _, errs) = tally(&lab.client("tcp 10.96.0.10:80 6"));
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(names.values().sum::<usize>(), 6);
    let mut source = fp.flow_source().unwrap().expect("the fast path has a ring");
    let mut events = Vec::new();
    source.drain(1000, &mut events).unwrap();
    let translated: Vec<_> = events
        .iter()
        .filter(|e| e.verdict == weft_bpf_abi::VERDICT_TRANSLATED)
        .collect();
    assert_eq!(translated.len(), 6, "one event per connect: {events:?}");
    for e in translated {
        assert_eq!(e.point, weft_bpf_abi::POINT_SOCKET);
        assert_eq!(
            (&e.dst[..4], u16::from_be(e.dport)),
            (&[10, 96, 0, 10][..], 80),
            "the Service"
        );
        let backend = (e.xlat_dst[..4].to_vec(), u16::from_be(e.xlat_dport));
        assert!(
            backend == (vec![10, 250, 1, 2], 8080) || backend == (vec![10, 250, 2, 2], 8080),
            "the backend: {backend:?}"
        );
    }
    assert!(
        flow_events(&lab).is_empty(),
        "the Service programs' ring is the fast path's, drained above"
    );
}

#[test]
fn socket_lb_udp_replies_come_from_the_cluster_ip_privileged() {
    need_root!("socket_lb_udp_replies_come_from_the_cluster_ip_privileged");
    let lab = lab("sockudp", Algorithm::Random);
    let (names, peers, errs) = tally(&lab.client("udp 10.96.0.10:53 30"));
    assert!(errs.is_empty(), "{errs:?}");
    assert!(
        names.get("b1") >= Some(&3) && names.get("b2") >= Some(&3),
        "{names:?}"
    );
    assert!(
        peers.iter().all(|p| *p == "10.96.0.10:53".parse().unwrap()),
        "recvmsg shows the ClusterIP as the source: {peers:?}"
    );
}

#[test]
fn socket_lb_refuses_a_service_without_endpoints_privileged() {
    need_root!("socket_lb_refuses_a_service_without_endpoints_privileged");
    let lab = lab("socknone", Algorithm::Random);
    assert_eq!(
        lab.client("tcp 10.96.0.11:80 3"),
        vec![Outcome::Err(ECONNREFUSED); 3]
    );
    assert_eq!(
        lab.client("udp 10.96.0.11:53 2"),
        vec![Outcome::Err(ECONNREFUSED); 2]
    );
    assert_eq!(lab.progs.maps().counters().unwrap().sock_reject, 5);
}

/// internalTrafficPolicy Local, endpoints only elsewhere: not refused (a
/// kube-proxy client is dropped and times out) but left untranslated, for
/// the node's egress program to drop (`services_run.rs`); here the client
/// netns has no route to the ClusterIP, so its connect fails on that.
#[test]
fn socket_lb_leaves_a_service_without_a_local_endpoint_untranslated_privileged() {
    need_root!("socket_lb_leaves_a_service_without_a_local_endpoint_untranslated_privileged");
    let cli = Ns::new("sockitp", "cli");
    let mut far = service(
        "far",
        ServiceType::ClusterIP,
        "10.96.0.20",
        &[(Protocol::TCP, 80, None)],
    );
    far.internal_traffic_policy = weft_lb::TrafficPolicy::Local;
    let progs = ServicePrograms::load(&ServiceProgramOptions::default()).unwrap();
    install(
        &progs,
        &[far],
        &[slice(
            "far",
            &[("10.250.2.2", "node-b")],
            &[(Protocol::TCP, 8080)],
        )],
        Algorithm::Random,
        &mut IdAllocator::default(),
    );
    let cg = Cgroup::new("sockitp");
    let mut progs = progs;
    progs.attach_cgroup(&cg.path).unwrap();
    let out = run_client(&cli.path(), Some(&cg), "tcp 10.96.0.20:80 2");
    const ENETUNREACH: i32 = 101;
    assert_eq!(out, vec![Outcome::Err(ENETUNREACH); 2], "sent as asked");
    let st = progs.maps().counters().unwrap();
    assert_eq!((st.sock_drop, st.sock_reject, st.sock_xlate), (2, 0, 0));
    let events: Vec<_> = {
        let map = progs.map("weft_flows").unwrap();
        let mut ring = weft_datapath::bpf::RingBuf::new(map).unwrap();
        let mut out = Vec::new();
        ring.drain(100, |b| {
            out.extend(weft_datapath::bpf::from_bytes::<weft_bpf_abi::FlowEvent>(b));
        });
        out
    };
    assert!(
        events
            .iter()
            .all(|e| e.verdict == weft_bpf_abi::VERDICT_DROPPED
                && u32::from(e.drop_reason) == weft_bpf_abi::DROP_NO_BACKEND),
        "{events:?}"
    );
    progs.detach().unwrap();
}

#[test]
fn socket_lb_client_ip_affinity_holds_privileged() {
    need_root!("socket_lb_client_ip_affinity_holds_privileged");
    let lab = lab("sockaff", Algorithm::Random);
    let (names, _, errs) = tally(&lab.client("tcp 10.96.0.12:80 25"));
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(
        names.len(),
        1,
        "every connect of the client on one backend: {names:?}"
    );
    let aff = lab.progs.maps().affinity().unwrap();
    assert_eq!(aff.len(), 1, "{aff:?}");
    assert!(matches!(aff[0].client, AffinityClient::Netns(_)));
    // a second run from the same netns keeps the backend
    let (again, _, _) = tally(&lab.client("tcp 10.96.0.12:80 5"));
    assert_eq!(
        again.keys().collect::<Vec<_>>(),
        names.keys().collect::<Vec<_>>()
    );
}

#[test]
fn socket_lb_hairpin_and_node_port_from_the_node_privileged() {
    need_root!("socket_lb_hairpin_and_node_port_from_the_node_privileged");
    let lab = lab("sockhair", Algorithm::Random);
    // b1's own Service sends b1 to itself
    let out = run_client(&lab.b1.path(), Some(&lab.cg), "tcp 10.96.0.13:80 3");
    assert_eq!(
        out,
        vec![Outcome::Ok("10.96.0.13:80".parse().unwrap(), "b1".into()); 3]
    );
    // the NodePort on one of the node's own addresses
    let (names, peers, errs) = tally(&lab.client("tcp 10.250.1.1:30080 20"));
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(names.values().sum::<usize>(), 20, "{names:?}");
    assert!(peers
        .iter()
        .all(|p| *p == "10.250.1.1:30080".parse().unwrap()));
}

#[test]
fn socket_lb_leaves_processes_outside_its_cgroup_alone_privileged() {
    need_root!("socket_lb_leaves_processes_outside_its_cgroup_alone_privileged");
    let lab = lab("sockout", Algorithm::Random);
    // no route to the ClusterIP in the client netns: untranslated, it fails
    let out = run_client(&lab.cli.path(), None, "tcp 10.96.0.10:80 1");
    assert!(matches!(out[..], [Outcome::Err(_)]), "{out:?}");
    assert_eq!(lab.progs.maps().counters().unwrap().sock_xlate, 0);
}

/// The events in the programs' ring buffer (weft_flows).
fn flow_events(lab: &Lab) -> Vec<weft_bpf_abi::FlowEvent> {
    let map = lab.progs.map("weft_flows").unwrap();
    let mut ring = weft_datapath::bpf::RingBuf::new(map).unwrap();
    let mut out = Vec::new();
    ring.drain(1000, |b| {
        out.extend(weft_datapath::bpf::from_bytes::<weft_bpf_abi::FlowEvent>(b));
    });
    out
}

#[test]
fn socket_lb_ipv6_tcp_and_udp_privileged() {
    need_root!("socket_lb_ipv6_tcp_and_udp_privileged");
    let lab = lab("sock6", Algorithm::maglev());
    for (spec, fe) in [
        ("tcp [fd00:96::10]:80 30", "[fd00:96::10]:80"),
        ("udp [fd00:96::10]:53 30", "[fd00:96::10]:53"),
    ] {
        let (names, peers, errs) = tally(&lab.client(spec));
        assert!(errs.is_empty(), "{spec}: {errs:?}");
        assert!(
            names.get("b1") >= Some(&3) && names.get("b2") >= Some(&3),
            "{spec}: {names:?}"
        );
        let fe: SocketAddr = fe.parse().unwrap();
        assert!(peers.iter().all(|p| *p == fe), "{spec}: {peers:?}");
    }
}

#[test]
fn socket_lb_ipv4_mapped_destinations_of_ipv6_sockets_privileged() {
    need_root!("socket_lb_ipv4_mapped_destinations_of_ipv6_sockets_privileged");
    let lab = lab("sockmap", Algorithm::Random);
    for (spec, fe) in [
        ("tcp [::ffff:10.96.0.10]:80 20", "[::ffff:10.96.0.10]:80"),
        ("udp [::ffff:10.96.0.10]:53 20", "[::ffff:10.96.0.10]:53"),
    ] {
        let (names, peers, errs) = tally(&lab.client(spec));
        assert!(errs.is_empty(), "{spec}: {errs:?}");
        assert_eq!(names.values().sum::<usize>(), 20, "{spec}: {names:?}");
        assert!(names.len() == 2, "{spec}: both backends: {names:?}");
        let fe: SocketAddr = fe.parse().unwrap();
        assert!(peers.iter().all(|p| *p == fe), "{spec}: {peers:?}");
    }
    assert_eq!(
        lab.client("tcp [::ffff:10.96.0.11]:80 1"),
        vec![Outcome::Err(ECONNREFUSED)]
    );
}

#[test]
fn socket_lb_connect_cost_privileged() {
    need_root!("socket_lb_connect_cost_privileged");
    let lab = lab("sockcost", Algorithm::maglev());
    let median = |spec: &str| {
        let mut t: Vec<u64> = lab
            .client(spec)
            .iter()
            .map(|o| match o {
                Outcome::Ok(_, ns) => ns.parse().unwrap(),
                Outcome::Err(e) => panic!("{spec}: errno {e}"),
            })
            .collect();
        t.sort();
        t[t.len() / 2]
    };
    // interleaved rounds, the median of each
    let (mut via, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        via.push(median("tcptime 10.96.0.10:80 300"));
        direct.push(median("tcptime 10.250.1.2:8080 300"));
    }
    via.sort();
    direct.sort();
    println!(
        "connect p50: {} ns to the ClusterIP (socket LB, Maglev), {} ns to a backend directly",
        via[1], direct[1]
    );
}

#[test]
fn udp_sockets_connected_to_a_removed_backend_are_aborted_privileged() {
    need_root!("udp_sockets_connected_to_a_removed_backend_are_aborted_privileged");
    use std::net::UdpSocket;
    use std::time::Duration;
    use weft_datapath::netns::run_in;
    use weft_datapath::services::sockdiag::destroy_udp_to_in;
    let lab = lab("sockstale", Algorithm::Random);
    let (b1, b2): (SocketAddr, SocketAddr) = (
        "10.250.1.2:5353".parse().unwrap(),
        "10.250.2.2:5353".parse().unwrap(),
    );
    // long-lived connected sockets in the client netns, as a resolver keeps
    let connected = |to: SocketAddr| {
        run_in(&lab.cli.path(), move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.connect(to).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s
        })
        .unwrap()
    };
    let ask = |s: &UdpSocket| -> Result<String, i32> {
        let mut buf = [0u8; 16];
        s.send(b"hi").map_err(|e| e.raw_os_error().unwrap_or(-1))?;
        let n = s
            .recv(&mut buf)
            .map_err(|e| e.raw_os_error().unwrap_or(-1))?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let (to_b1, to_b2) = (connected(b1), connected(b2));
    assert_eq!(ask(&to_b1), Ok("b1".into()));
    assert_eq!(ask(&to_b2), Ok("b2".into()));
    // b1 left its Service: its sockets are aborted, the others kept
    assert_eq!(destroy_udp_to_in(&lab.cli.path(), &[b1]).unwrap(), 1);
    let e = ask(&to_b1).unwrap_err();
    assert!(
        e == libc::ECONNABORTED || e == libc::EDESTADDRREQ,
        "errno {e}"
    );
    assert_eq!(ask(&to_b2), Ok("b2".into()));
    assert_eq!(destroy_udp_to_in(&lab.cli.path(), &[b1]).unwrap(), 0);
}
