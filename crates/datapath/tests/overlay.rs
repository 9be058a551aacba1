//! Privileged tests of routing between nodes. Each test builds two "node"
//! namespaces (`wdo-<pid>-<test>-<role>`, see common/mod.rs) joined by a veth pair that plays
//! the underlay (198.18.0.0/15 and 2001:2::/64, MTU 1500), a LinuxDatapath
//! inside each node and one pod per node; traffic only flows between these
//! namespaces. Every namespace is deleted on drop, also on failure. Without
//! root the tests skip loudly.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{is_root, run, tcp_roundtrip, Ns};
use weft_datapath::netlink::RTPROT_WEFT;
use weft_datapath::routing::vtep_link_local;
use weft_datapath::seams::*;
use weft_datapath::{
    DatapathError, LinuxDatapath, NodeSetup, OverlaySetup, PeerNode, PodLink, RoutingMode,
    SyncReport,
};

const VXLAN: &str = "weft.vxlan";

/// One node: its netns, data path, underlay addresses, block and pod.
struct Node {
    ns: Ns,
    pod: Ns,
    dp: LinuxDatapath,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    pod_v4: Ipv4Addr,
    pod_v6: Ipv6Addr,
    blocks: Vec<ipnet::IpNet>,
}

impl Node {
    fn peer(&self, vtep_mac: Option<[u8; 6]>) -> PeerNode {
        PeerNode {
            name: self.ns.name.clone(),
            underlay_v4: Some(self.v4),
            underlay_v6: Some(self.v6),
            vtep_mac,
            blocks: self.blocks.clone(),
        }
    }

    fn overlay(&self) -> OverlaySetup {
        OverlaySetup {
            device: VXLAN.into(),
            vni: 4096,
            port: 4789,
            local_v4: Some(self.v4),
            local_v6: Some(self.v6),
            underlay_dev: Some("u0".into()),
            mtu: 0,
        }
    }

    /// weft's routes in this node, `ip route` style, both families.
    fn weft_routes(&self) -> String {
        let proto = RTPROT_WEFT.to_string();
        self.ns.ip(&["-4", "route", "show", "proto", &proto])
            + &self.ns.ip(&["-6", "route", "show", "proto", &proto])
    }
}

/// Two nodes joined by a veth underlay, each with a pod attached.
fn two_nodes(test: &str, pod_mtu: u32) -> (Node, Node) {
    let n1 = Ns::new(test, "n1");
    let n2 = Ns::new(test, "n2");
    run(
        "ip",
        &[
            "link", "add", "u0", "netns", &n1.name, "mtu", "1500", "type", "veth", "peer", "name",
            "u0", "netns", &n2.name, "mtu", "1500",
        ],
    );
    let mk = |ns: Ns, i: u8, block4: &str, block6: &str, pod_off: u8| {
        ns.ip(&["addr", "add", &format!("198.18.0.{i}/15"), "dev", "u0"]);
        ns.ip(&[
            "addr",
            "add",
            &format!("2001:2::{i}/64"),
            "dev",
            "u0",
            "nodad",
        ]);
        ns.ip(&["link", "set", "u0", "up"]);
        let dp = ns.datapath();
        dp.prepare_node(&NodeSetup::default()).unwrap();
        let pod = Ns::new(test, &format!("p{i}"));
        let pod_v4 = Ipv4Addr::new(10, 244, 0, pod_off + 2);
        let pod_v6 = Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, pod_off as u16 + 2);
        dp.attach(&PodLink {
            netns: pod.path(),
            ifname: "eth0".into(),
            host_ifname: format!("wdo{i}"),
            mtu: pod_mtu,
            ipv4: Some(pod_v4),
            ipv6: Some(pod_v6),
        })
        .unwrap();
        Node {
            ns,
            pod,
            dp,
            v4: Ipv4Addr::new(198, 18, 0, i),
            v6: Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, i as u16),
            pod_v4,
            pod_v6,
            blocks: vec![block4.parse().unwrap(), block6.parse().unwrap()],
        }
    };
    let a = mk(n1, 1, "10.244.0.0/26", "fd00:10:244::/122", 0);
    let b = mk(n2, 2, "10.244.0.64/26", "fd00:10:244::40/122", 64);
    // a fresh link answers neighbour solicitations only once its link-local
    // address has passed duplicate address detection
    let t = Instant::now();
    while [&a, &b].iter().any(|n| {
        n.ns.ip(&["-6", "addr", "show", "dev", "u0", "tentative"])
            .contains("inet6")
    }) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "DAD on u0 did not end"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (a, b)
}

/// pod1 → pod2 and pod2 → pod1, over IPv4 and IPv6.
fn pods_talk(a: &Node, b: &Node, port: u16) -> Result<(), String> {
    // more than one underlay MTU, so the overlay MTU is exercised
    let big = vec![0x5a; 64 * 1024];
    tcp_roundtrip(
        &b.pod.path(),
        &a.pod.path(),
        SocketAddr::new(b.pod_v4.into(), port),
        &big,
    )?;
    tcp_roundtrip(
        &b.pod.path(),
        &a.pod.path(),
        SocketAddr::new(b.pod_v6.into(), port + 1),
        &big,
    )?;
    tcp_roundtrip(
        &a.pod.path(),
        &b.pod.path(),
        SocketAddr::new(a.pod_v4.into(), port + 2),
        &big,
    )?;
    tcp_roundtrip(
        &a.pod.path(),
        &b.pod.path(),
        SocketAddr::new(a.pod_v6.into(), port + 3),
        &big,
    )
}

#[test]
fn overlay_routing_privileged() {
    need_root!("overlay_routing_privileged");
    let (a, b) = two_nodes("ovl", 1450);

    // the device: MTU from the 1500 underlay, no learning, idempotent
    let mac_a = a.dp.ensure_overlay(&a.overlay()).unwrap();
    let mac_b = b.dp.ensure_overlay(&b.overlay()).unwrap();
    assert_ne!(mac_a, mac_b);
    let before = a.ns.ip(&["-d", "-o", "link", "show", VXLAN]);
    for want in [
        "mtu 1450",
        "vxlan id 4096",
        "local 198.18.0.1",
        "dev u0",
        "dstport 4789",
        "nolearning",
        &weft_datapath::format_mac(mac_a),
    ] {
        assert!(before.contains(want), "{want:?} not in {before}");
    }
    assert!(before.contains("UP"), "{before}");
    let vx = &before[before.find("vxlan id").unwrap()..];
    assert!(
        !vx.contains(" group ") && !vx.contains(" remote "),
        "{before}"
    );
    assert_eq!(a.dp.ensure_overlay(&a.overlay()).unwrap(), mac_a);
    assert_eq!(a.ns.ip(&["-d", "-o", "link", "show", VXLAN]), before);
    // fixed in place: MTU and down
    a.ns.ip(&["link", "set", VXLAN, "mtu", "1300", "down"]);
    assert_eq!(a.dp.ensure_overlay(&a.overlay()).unwrap(), mac_a);
    assert_eq!(a.ns.ip(&["-d", "-o", "link", "show", VXLAN]), before);
    // an explicit MTU is honoured; another VNI replaces the device
    let mut other = a.overlay();
    other.mtu = 1400;
    other.vni = 4097;
    a.dp.ensure_overlay(&other).unwrap();
    let changed = a.ns.ip(&["-d", "-o", "link", "show", VXLAN]);
    assert!(
        changed.contains("mtu 1400") && changed.contains("vxlan id 4097"),
        "{changed}"
    );
    let mac_a = a.dp.ensure_overlay(&a.overlay()).unwrap();

    // no routes yet: pods cannot talk
    assert!(pods_talk(&a, &b, 7000).is_err());

    let ra =
        a.dp.sync_peers(RoutingMode::Overlay, VXLAN, &[b.peer(Some(mac_b))])
            .unwrap();
    let rb =
        b.dp.sync_peers(RoutingMode::Overlay, VXLAN, &[a.peer(Some(mac_a))])
            .unwrap();
    // 2 routes + 2 neighbours (v4 underlay, v6 link-local) + 1 fdb entry
    assert_eq!(
        ra,
        SyncReport {
            added: 5,
            removed: 0
        }
    );
    assert_eq!(rb, ra);
    let routes = a.weft_routes();
    let ll_b = vtep_link_local(mac_b).to_string();
    assert!(
        routes.contains("10.244.0.64/26 via 198.18.0.2 dev weft.vxlan")
            && routes.contains("onlink"),
        "{routes}"
    );
    assert!(
        routes.contains(&format!("fd00:10:244::40/122 via {ll_b} dev weft.vxlan")),
        "{routes}"
    );
    let fdb = a.ns.bridge(&["fdb", "show", "dev", VXLAN]);
    assert!(
        fdb.contains(&format!(
            "{} dst 198.18.0.2 self permanent",
            weft_datapath::format_mac(mac_b)
        )),
        "{fdb}"
    );
    assert_eq!(fdb.lines().count(), 1, "{fdb}");
    let neigh = a.ns.ip(&["neigh", "show", "dev", VXLAN]);
    assert!(neigh.contains("198.18.0.2 lladdr"), "{neigh}");
    assert!(neigh.contains(&ll_b), "{neigh}");

    // idempotent
    for _ in 0..2 {
        assert_eq!(
            a.dp.sync_peers(RoutingMode::Overlay, VXLAN, &[b.peer(Some(mac_b))])
                .unwrap(),
            SyncReport::default()
        );
    }

    // pods talk, through the VXLAN device
    // (pod1 sends 2 × 64 KiB; GSO counts a super-packet once)
    let tx0 = a.ns.tx(VXLAN);
    pods_talk(&a, &b, 7010).unwrap();
    let tx1 = a.ns.tx(VXLAN);
    assert!(
        tx1.0 >= tx0.0 + 2 * 64 * 1024 && tx1.1 > tx0.1 + 8,
        "vxlan tx (bytes, packets) {tx0:?} → {tx1:?}"
    );
    println!("overlay: vxlan tx (bytes, packets) {tx0:?} → {tx1:?}");

    // an IPv4-only underlay still carries IPv6 pods (link-local next hop)
    let mut b4 = b.peer(Some(mac_b));
    b4.underlay_v6 = None;
    assert_eq!(
        a.dp.sync_peers(RoutingMode::Overlay, VXLAN, &[b4]).unwrap(),
        SyncReport::default()
    );
    // a peer without a VTEP MAC cannot be served: nothing changes
    let e =
        a.dp.sync_peers(RoutingMode::Overlay, VXLAN, &[b.peer(None)])
            .unwrap_err();
    assert!(matches!(e, DatapathError::InvalidPeer { .. }), "{e}");
    assert_eq!(a.weft_routes(), routes);

    // a new VTEP MAC moves the FDB entry and the neighbours
    let new_mac = [0x02, 0, 0, 0, 0, 0x99];
    let r =
        a.dp.sync_peers(RoutingMode::Overlay, VXLAN, &[b.peer(Some(new_mac))])
            .unwrap();
    // out and in: the v4 neighbour, the v6 route and its link-local
    // neighbour, the fdb entry
    assert_eq!(
        r,
        SyncReport {
            added: 4,
            removed: 4
        },
        "{}",
        a.weft_routes()
    );
    a.dp.sync_peers(RoutingMode::Overlay, VXLAN, &[b.peer(Some(mac_b))])
        .unwrap();

    // all gone with no peers: routes, FDB, neighbours; traffic stops
    let r = a.dp.sync_peers(RoutingMode::Overlay, VXLAN, &[]).unwrap();
    assert_eq!(
        r,
        SyncReport {
            added: 0,
            removed: 5
        }
    );
    assert_eq!(a.weft_routes(), "");
    assert_eq!(a.ns.bridge(&["fdb", "show", "dev", VXLAN]), "");
    assert!(!a
        .ns
        .ip(&["neigh", "show", "dev", VXLAN])
        .contains("PERMANENT"));
    assert!(pods_talk(&a, &b, 7020).is_err());
    assert_eq!(
        a.dp.sync_peers(RoutingMode::Overlay, VXLAN, &[]).unwrap(),
        SyncReport::default()
    );
    // and back
    a.dp.sync_peers(RoutingMode::Overlay, VXLAN, &[b.peer(Some(mac_b))])
        .unwrap();
    pods_talk(&a, &b, 7030).unwrap();

    // overlay without the device is a clear error
    b.ns.ip(&["link", "del", VXLAN]);
    let e =
        b.dp.sync_peers(RoutingMode::Overlay, VXLAN, &[a.peer(Some(mac_a))])
            .unwrap_err();
    assert!(matches!(e, DatapathError::LinkNotFound { .. }), "{e}");
}

#[test]
fn native_routing_privileged() {
    need_root!("native_routing_privileged");
    let (a, b) = two_nodes("nat", 1500);
    assert!(pods_talk(&a, &b, 7100).is_err());
    let ra =
        a.dp.sync_peers(RoutingMode::Native, VXLAN, &[b.peer(None)])
            .unwrap();
    let rb =
        b.dp.sync_peers(RoutingMode::Native, VXLAN, &[a.peer(None)])
            .unwrap();
    assert_eq!(
        ra,
        SyncReport {
            added: 2,
            removed: 0
        }
    );
    assert_eq!(rb, ra);
    let routes = a.weft_routes();
    assert!(
        routes.contains("10.244.0.64/26 via 198.18.0.2 dev u0"),
        "{routes}"
    );
    assert!(
        routes.contains("fd00:10:244::40/122 via 2001:2::2 dev u0"),
        "{routes}"
    );
    assert_eq!(
        a.dp.sync_peers(RoutingMode::Native, VXLAN, &[b.peer(None)])
            .unwrap(),
        SyncReport::default()
    );
    pods_talk(&a, &b, 7110).unwrap();
    assert!(a
        .ns
        .ip(&["link", "show"])
        .lines()
        .all(|l| !l.contains("vxlan")));

    // a new underlay address is a changed next hop
    let mut moved = b.peer(None);
    moved.underlay_v4 = Some(Ipv4Addr::new(198, 19, 0, 2));
    assert_eq!(
        a.dp.sync_peers(RoutingMode::Native, VXLAN, &[moved])
            .unwrap(),
        SyncReport {
            added: 1,
            removed: 1
        }
    );
    assert!(a.weft_routes().contains("10.244.0.64/26 via 198.19.0.2"));
    a.dp.sync_peers(RoutingMode::Native, VXLAN, &[b.peer(None)])
        .unwrap();

    // a peer without an IPv6 underlay address cannot carry its IPv6 block
    let mut v4only = b.peer(None);
    v4only.underlay_v6 = None;
    let e =
        a.dp.sync_peers(RoutingMode::Native, VXLAN, &[v4only])
            .unwrap_err();
    assert!(matches!(e, DatapathError::InvalidPeer { .. }), "{e}");
    println!("expected failure: {e}");

    assert_eq!(
        a.dp.sync_peers(RoutingMode::Native, VXLAN, &[]).unwrap(),
        SyncReport {
            added: 0,
            removed: 2
        }
    );
    assert_eq!(a.weft_routes(), "");
    assert!(pods_talk(&a, &b, 7120).is_err());
}

#[test]
fn mode_switch_privileged() {
    need_root!("mode_switch_privileged");
    let (a, b) = two_nodes("sw", 1450);
    let mac_a = a.dp.ensure_overlay(&a.overlay()).unwrap();
    let mac_b = b.dp.ensure_overlay(&b.overlay()).unwrap();
    a.dp.sync_peers(RoutingMode::Overlay, VXLAN, &[b.peer(Some(mac_b))])
        .unwrap();
    b.dp.sync_peers(RoutingMode::Overlay, VXLAN, &[a.peer(Some(mac_a))])
        .unwrap();
    pods_talk(&a, &b, 7200).unwrap();
    // overlay → native: the overlay routes, neighbours and FDB go
    let r =
        a.dp.sync_peers(RoutingMode::Native, VXLAN, &[b.peer(None)])
            .unwrap();
    assert_eq!(
        r,
        SyncReport {
            added: 2,
            removed: 5
        }
    );
    b.dp.sync_peers(RoutingMode::Native, VXLAN, &[a.peer(None)])
        .unwrap();
    assert_eq!(a.ns.bridge(&["fdb", "show", "dev", VXLAN]), "");
    let tx0 = a.ns.tx(VXLAN);
    pods_talk(&a, &b, 7210).unwrap();
    assert_eq!(a.ns.tx(VXLAN), tx0, "native traffic avoids vxlan");
}

#[test]
fn pruning_spares_foreign_routes_privileged() {
    need_root!("pruning_spares_foreign_routes_privileged");
    let (a, b) = two_nodes("prune", 1500);
    // routes weft did not make: another prefix, the same prefix with another
    // metric, another protocol, and a permanent neighbour on the underlay
    a.ns.ip(&["route", "add", "10.250.0.0/24", "via", "198.18.0.2"]);
    a.ns.ip(&[
        "route",
        "add",
        "10.244.0.64/26",
        "via",
        "198.18.0.2",
        "metric",
        "500",
    ]);
    a.ns.ip(&[
        "route",
        "add",
        "10.251.0.0/24",
        "via",
        "198.18.0.2",
        "proto",
        "200",
    ]);
    a.ns.ip(&[
        "-6",
        "route",
        "add",
        "fd00:99::/64",
        "via",
        "2001:2::2",
        "proto",
        "static",
    ]);
    a.ns.ip(&[
        "neigh",
        "add",
        "198.18.0.77",
        "lladdr",
        "02:00:00:00:00:77",
        "dev",
        "u0",
        "nud",
        "permanent",
    ]);
    let foreign = |ns: &Ns| {
        let mut v = ns.ip(&["-4", "route", "show"]) + &ns.ip(&["-6", "route", "show"]);
        v = v
            .lines()
            .filter(|l| !l.contains(&format!("proto {RTPROT_WEFT}")))
            .collect::<Vec<_>>()
            .join("\n");
        v + &ns.ip(&["neigh", "show", "nud", "permanent"])
    };
    let before = foreign(&a.ns);
    a.dp.sync_peers(RoutingMode::Native, VXLAN, &[b.peer(None)])
        .unwrap();
    assert_eq!(a.weft_routes().lines().count(), 2, "{}", a.weft_routes());
    assert_eq!(foreign(&a.ns), before);
    a.dp.sync_peers(RoutingMode::Native, VXLAN, &[]).unwrap();
    assert_eq!(a.weft_routes(), "");
    assert_eq!(foreign(&a.ns), before);

    // a foreign route of exactly a wanted prefix and metric is not replaced:
    // the sync says so, and does the rest
    a.ns.ip(&["route", "add", "10.244.0.64/26", "via", "198.18.0.2"]);
    let before = foreign(&a.ns);
    let e =
        a.dp.sync_peers(RoutingMode::Native, VXLAN, &[b.peer(None)])
            .unwrap_err();
    assert_eq!(e.errno(), Some(libc::EEXIST), "{e}");
    println!("expected failure: {e}");
    assert_eq!(foreign(&a.ns), before);
    assert!(
        a.weft_routes().contains("fd00:10:244::40/122"),
        "{}",
        a.weft_routes()
    );
    a.dp.sync_peers(RoutingMode::Native, VXLAN, &[]).unwrap();
    assert_eq!(foreign(&a.ns), before);
    assert_eq!(a.weft_routes(), "");
}

#[test]
fn sync_timing_privileged() {
    need_root!("sync_timing_privileged");
    let node = Ns::new("time", "n1");
    let far = Ns::new("time", "n2");
    run(
        "ip",
        &[
            "link", "add", "u0", "netns", &node.name, "type", "veth", "peer", "name", "u0",
            "netns", &far.name,
        ],
    );
    node.ip(&["addr", "add", "198.18.0.1/15", "dev", "u0"]);
    node.ip(&["addr", "add", "2001:2::1/64", "dev", "u0", "nodad"]);
    node.ip(&["link", "set", "u0", "up"]);
    let dp = node.datapath();
    let setup = OverlaySetup {
        device: VXLAN.into(),
        vni: 4096,
        port: 4789,
        local_v4: Some(Ipv4Addr::new(198, 18, 0, 1)),
        local_v6: None,
        underlay_dev: None,
        mtu: 1450,
    };
    dp.ensure_overlay(&setup).unwrap();
    let peers = |dual: bool| -> Vec<PeerNode> {
        (0..100u16)
            .map(|i| {
                let mut blocks = vec![ipnet::IpNet::new(
                    Ipv4Addr::new(10, 245, (i >> 2) as u8, ((i & 3) * 64) as u8).into(),
                    26,
                )
                .unwrap()];
                if dual {
                    blocks.push(
                        ipnet::IpNet::new(
                            Ipv6Addr::new(0xfd00, 0x10, 0x245, 0, 0, 0, i, 0).into(),
                            112,
                        )
                        .unwrap(),
                    );
                }
                PeerNode {
                    name: format!("node{i}"),
                    underlay_v4: Some(Ipv4Addr::new(198, 19, (i >> 8) as u8, i as u8)),
                    underlay_v6: Some(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 1, i)),
                    vtep_mac: Some([0x02, 0x57, 0, 0, (i >> 8) as u8, i as u8]),
                    blocks,
                }
            })
            .collect()
    };
    let time = |mode, p: &[PeerNode]| {
        let t = Instant::now();
        let r = dp.sync_peers(mode, VXLAN, p).unwrap();
        (t.elapsed(), r)
    };
    let mut lines = Vec::new();
    for (mode, dual) in [
        (RoutingMode::Overlay, false),
        (RoutingMode::Overlay, true),
        (RoutingMode::Native, false),
        (RoutingMode::Native, true),
    ] {
        let p = peers(dual);
        let (t_add, r_add) = time(mode, &p);
        let (t_noop, r_noop) = time(mode, &p);
        let (t_del, r_del) = time(mode, &[]);
        assert_eq!(r_noop, SyncReport::default());
        assert_eq!(r_add.added, r_del.removed);
        assert_eq!(node.weft_routes_count(), 0);
        lines.push(format!(
            "{mode:?} 100 peers x {} block(s): add {t_add:?} ({} objects), no-op {t_noop:?}, remove-all {t_del:?}",
            if dual { 2 } else { 1 },
            r_add.added
        ));
    }
    for l in lines {
        println!("timing: {l}");
    }
}

impl Ns {
    fn weft_routes_count(&self) -> usize {
        let proto = RTPROT_WEFT.to_string();
        (self.ip(&["-4", "route", "show", "proto", &proto])
            + &self.ip(&["-6", "route", "show", "proto", &proto]))
            .lines()
            .count()
    }
}

#[test]
fn overlay_ipv6_underlay_privileged() {
    need_root!("overlay_ipv6_underlay_privileged");
    let (a, b) = two_nodes("ovl6", 1430);
    let v6_tunnel = |n: &Node| OverlaySetup {
        local_v4: None,
        ..n.overlay()
    };
    let mac_a = a.dp.ensure_overlay(&v6_tunnel(&a)).unwrap();
    let mac_b = b.dp.ensure_overlay(&v6_tunnel(&b)).unwrap();
    let link = a.ns.ip(&["-d", "-o", "link", "show", VXLAN]);
    assert!(
        link.contains("mtu 1430") && link.contains("local 2001:2::1"),
        "{link}"
    );
    a.dp.sync_peers(RoutingMode::Overlay, VXLAN, &[b.peer(Some(mac_b))])
        .unwrap();
    b.dp.sync_peers(RoutingMode::Overlay, VXLAN, &[a.peer(Some(mac_a))])
        .unwrap();
    let fdb = a.ns.bridge(&["fdb", "show", "dev", VXLAN]);
    assert!(fdb.contains("dst 2001:2::2 self permanent"), "{fdb}");
    let tx0 = a.ns.tx(VXLAN);
    pods_talk(&a, &b, 7300).unwrap();
    assert!(a.ns.tx(VXLAN).0 >= tx0.0 + 2 * 64 * 1024);
    // the tunnel's family needs the peer's address of that family
    let mut v4only = b.peer(Some(mac_b));
    v4only.underlay_v6 = None;
    let e =
        a.dp.sync_peers(RoutingMode::Overlay, VXLAN, &[v4only])
            .unwrap_err();
    assert!(e.to_string().contains("no IPv6 underlay address"), "{e}");
}
