//! Privileged tests of the real kernel path. Each test builds its own named
//! network namespaces (`wdp-<pid>-<test>-<role>`), constructs the data path
//! inside its node namespace and deletes everything on drop, also on failure.
//! Nothing here touches the root namespace. Without root they skip loudly.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{is_root, tcp_roundtrip, Ns};
use weft_datapath::netns::{run_in, spawn_in};
use weft_datapath::seams::*;
use weft_datapath::{DatapathError, NodeSetup, PodLink, GATEWAY_V4, HOST_VETH_MAC};

fn pod(ns: &Ns, host: &str, n: u8) -> PodLink {
    PodLink {
        netns: ns.path(),
        ifname: "eth0".into(),
        host_ifname: host.into(),
        mtu: 1400,
        ipv4: Some(Ipv4Addr::new(10, 244, 0, n)),
        ipv6: Some(Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, n as u16)),
    }
}

fn setup(nat: bool) -> NodeSetup {
    NodeSetup {
        pools: vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:10:244::/56".parse().unwrap(),
        ],
        nat_outgoing: nat,
    }
}

#[test]
fn attach_connectivity_privileged() {
    need_root!("attach_connectivity_privileged");
    let node = Ns::new("conn", "node");
    let pa = Ns::new("conn", "a");
    let pb = Ns::new("conn", "b");
    // no dummy driver on every kernel: a veth pair inside the node netns
    node.veth_pair("dummy0", "dummy0p", 1500);
    node.ip(&["addr", "add", "10.99.0.1/32", "dev", "dummy0"]);
    node.ip(&["addr", "add", "fd99::1/128", "dev", "dummy0", "nodad"]);
    let dp = node.datapath();
    dp.prepare_node(&setup(false)).unwrap();

    let a = pod(&pa, "wdpa", 2);
    let b = pod(&pb, "wdpb", 3);
    let att_a = dp.attach(&a).unwrap();
    let att_b = dp.attach(&b).unwrap();
    assert_ne!(att_a.pod_mac, att_b.pod_mac);
    assert_ne!(att_a.host_ifindex, att_b.host_ifindex);

    // what the kernel holds matches what attach reported
    let link = pa.ip(&["-o", "link", "show", "eth0"]);
    assert!(link.contains("mtu 1400"), "{link}");
    assert!(
        link.contains(&weft_datapath::format_mac(att_a.pod_mac)),
        "{link}"
    );
    let host = node.ip(&["-o", "link", "show", "wdpa"]);
    assert!(host.contains("ee:ee:ee:ee:ee:ee"), "{host}");
    assert!(
        host.contains(&format!("{}: wdpa@", att_a.host_ifindex)),
        "{host}"
    );
    assert!(dp.check(&a, att_a.pod_mac).unwrap().is_empty());
    assert!(dp.check(&b, att_b.pod_mac).unwrap().is_empty());

    // pod → pod over v4 and v6, pod → node
    tcp_roundtrip(
        &pb.path(),
        &pa.path(),
        "10.244.0.3:8080".parse().unwrap(),
        b"ping",
    )
    .unwrap();
    tcp_roundtrip(
        &pb.path(),
        &pa.path(),
        "[fd00:10:244::3]:8080".parse().unwrap(),
        b"ping",
    )
    .unwrap();
    tcp_roundtrip(
        &pa.path(),
        &pb.path(),
        "10.244.0.2:8081".parse().unwrap(),
        b"ping",
    )
    .unwrap();
    tcp_roundtrip(
        &node.path(),
        &pa.path(),
        "10.99.0.1:8082".parse().unwrap(),
        b"ping",
    )
    .unwrap();
    tcp_roundtrip(
        &node.path(),
        &pa.path(),
        "[fd99::1]:8082".parse().unwrap(),
        b"ping",
    )
    .unwrap();

    let mut links = dp.list_host_links("wdp").unwrap();
    links.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(links.len(), 2, "{links:?}");
    assert_eq!(links[0].name, "wdpa");
    assert_eq!(links[0].ifindex, att_a.host_ifindex);
    assert!(links[0].peer_netnsid.is_some(), "{links:?}");
    assert!(dp.list_host_links("other").unwrap().is_empty());

    // the data path works from any thread, not only the node-netns one
    let from_thread = std::thread::scope(|s| s.spawn(|| dp.list_host_links("wdp")).join().unwrap());
    assert_eq!(from_thread.unwrap().len(), 2);
}

#[test]
fn concurrent_attach_privileged() {
    need_root!("concurrent_attach_privileged");
    let node = Ns::new("conc", "node");
    let pods: Vec<Ns> = (0..8).map(|i| Ns::new("conc", &format!("p{i}"))).collect();
    let dp = node.datapath();
    std::thread::scope(|s| {
        for (i, p) in pods.iter().enumerate() {
            let dp = &dp;
            s.spawn(move || {
                let l = pod(p, &format!("wdpc{i}"), 10 + i as u8);
                let a = dp.attach(&l).unwrap();
                assert!(dp.check(&l, a.pod_mac).unwrap().is_empty());
            });
        }
    });
    assert_eq!(dp.list_host_links("wdpc").unwrap().len(), 8);
    std::thread::scope(|s| {
        for i in 0..8 {
            let dp = &dp;
            s.spawn(move || dp.detach(&format!("wdpc{i}")).unwrap());
        }
    });
    assert!(dp.list_host_links("wdpc").unwrap().is_empty());
}

#[test]
fn underlay_mtu_privileged() {
    need_root!("underlay_mtu_privileged");
    let node = Ns::new("mtu", "node");
    let dp = node.datapath();
    assert!(matches!(
        dp.underlay_mtu(None),
        Err(DatapathError::NoDefaultRoute)
    ));
    node.veth_pair("uplink0", "uplink0p", 1400);
    node.ip(&["addr", "add", "198.18.0.2/24", "dev", "uplink0"]);
    node.ip(&[
        "route",
        "add",
        "default",
        "via",
        "198.18.0.1",
        "dev",
        "uplink0",
    ]);
    assert_eq!(
        dp.underlay_mtu(None).unwrap(),
        ("uplink0".to_string(), 1400)
    );
    assert_eq!(
        dp.underlay_mtu(Some("uplink0")).unwrap(),
        ("uplink0".to_string(), 1400)
    );
    assert!(matches!(
        dp.underlay_mtu(Some("nope0")),
        Err(DatapathError::LinkNotFound { .. })
    ));

    // IPv6 only
    let v6 = Ns::new("mtu", "v6");
    let dp6 = v6.datapath();
    v6.veth_pair("up6", "up6p", 9000);
    v6.ip(&["addr", "add", "2001:db8::2/64", "dev", "up6", "nodad"]);
    v6.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        "2001:db8::1",
        "dev",
        "up6",
    ]);
    assert_eq!(dp6.underlay_mtu(None).unwrap(), ("up6".to_string(), 9000));
}

#[test]
fn check_and_restore_privileged() {
    need_root!("check_and_restore_privileged");
    let node = Ns::new("chk", "node");
    let pa = Ns::new("chk", "a");
    let dp = node.datapath();
    let a = pod(&pa, "wdpk", 7);
    let att = dp.attach(&a).unwrap();
    assert_eq!(dp.check(&a, att.pod_mac).unwrap(), Vec::<String>::new());
    assert!(!dp.restore_host_side(&a, att.pod_mac).unwrap());

    node.ip(&["route", "del", "10.244.0.7/32", "dev", "wdpk"]);
    node.ip(&["neigh", "del", "fd00:10:244::7", "dev", "wdpk"]);
    let problems = dp.check(&a, att.pod_mac).unwrap();
    assert!(
        problems.contains(&"host route 10.244.0.7/32 via wdpk missing".to_string()),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("host neighbour fd00:10:244::7")),
        "{problems:?}"
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(dp.restore_host_side(&a, att.pod_mac).unwrap());
    assert!(dp.check(&a, att.pod_mac).unwrap().is_empty());
    assert!(!dp.restore_host_side(&a, att.pod_mac).unwrap());

    // pod-side problems are reported too
    pa.ip(&["route", "del", "default"]);
    let problems = dp.check(&a, att.pod_mac).unwrap();
    assert_eq!(
        problems,
        [format!(
            "default route via {GATEWAY_V4} dev eth0 missing in {}",
            pa.path().display()
        )]
    );
    // a wrong mac is a problem
    assert!(!dp.check(&a, [2, 0, 0, 0, 0, 1]).unwrap().is_empty());

    // host link gone
    dp.detach("wdpk").unwrap();
    let problems = dp.check(&a, att.pod_mac).unwrap();
    assert!(
        problems.contains(&"host interface wdpk missing".to_string()),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("interface eth0 missing")),
        "{problems:?}"
    );
    assert!(matches!(
        dp.restore_host_side(&a, att.pod_mac),
        Err(DatapathError::LinkNotFound { .. })
    ));

    // netns gone
    let gone = PodLink {
        netns: "/run/netns/wdp-does-not-exist".into(),
        ..a
    };
    let problems = dp.check(&gone, att.pod_mac).unwrap();
    assert!(problems[0].contains("does not exist"), "{problems:?}");
}

#[test]
fn detach_privileged() {
    need_root!("detach_privileged");
    let node = Ns::new("det", "node");
    let pa = Ns::new("det", "a");
    let dp = node.datapath();
    let a = pod(&pa, "wdpd", 4);
    dp.attach(&a).unwrap();
    assert!(pa.ip_ok(&["link", "show", "eth0"]));
    dp.detach("wdpd").unwrap();
    assert!(!node.ip_ok(&["link", "show", "wdpd"]));
    assert!(!pa.ip_ok(&["link", "show", "eth0"]));
    assert!(node.ip(&["route", "show"]).trim().is_empty());
    dp.detach("wdpd").unwrap();
    dp.detach("wdpnever").unwrap();
}

#[test]
fn attach_missing_netns_privileged() {
    need_root!("attach_missing_netns_privileged");
    let node = Ns::new("gone", "node");
    let dp = node.datapath();
    let mut a = pod(&node, "wdpg", 5);
    a.netns = PathBuf::from(format!(
        "/run/netns/wdp-{}-gone-missing",
        std::process::id()
    ));
    let e = dp.attach(&a).unwrap_err();
    assert!(matches!(e, DatapathError::NetnsGone { .. }), "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");
    let links = node.ip(&["-o", "link", "show"]);
    assert_eq!(links.lines().count(), 1, "{links}");
}

#[test]
fn attach_proc_pid_netns_privileged() {
    need_root!("attach_proc_pid_netns_privileged");
    let node = Ns::new("pid", "node");
    let pa = Ns::new("pid", "a");
    let dp = node.datapath();
    // a process holding the pod netns, addressed as /proc/<pid>/ns/net
    let mut holder = spawn_in(Command::new("sleep").arg("30"), &pa.path()).unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = holder.id();
    let _kill = Kill(&mut holder);
    let mut a = pod(&pa, "wdpp", 11);
    a.netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let att = dp.attach(&a).unwrap();
    assert!(pa.ip_ok(&["link", "show", "eth0"]));
    assert!(dp.check(&a, att.pod_mac).unwrap().is_empty());

    // a leftover plain file where a netns was mounted is a gone netns
    let stale = std::env::temp_dir().join(format!("wdp-{}-stale-netns", std::process::id()));
    std::fs::write(&stale, b"").unwrap();
    let mut b = pod(&pa, "wdpq", 12);
    b.netns = stale.clone();
    let e = dp.attach(&b).unwrap_err();
    let _ = std::fs::remove_file(&stale);
    assert!(matches!(e, DatapathError::NetnsGone { .. }), "{e}");
    assert!(!node.ip_ok(&["link", "show", "wdpq"]));
}

#[test]
fn attach_twice_replaces_privileged() {
    need_root!("attach_twice_replaces_privileged");
    let node = Ns::new("twice", "node");
    let pa = Ns::new("twice", "a");
    let dp = node.datapath();
    let a = pod(&pa, "wdpt", 6);
    let first = dp.attach(&a).unwrap();
    let second = dp.attach(&a).unwrap();
    assert_ne!(first.host_ifindex, second.host_ifindex);
    assert_eq!(dp.list_host_links("wdpt").unwrap().len(), 1);
    assert!(dp.check(&a, second.pod_mac).unwrap().is_empty());
    let eths = pa.ip(&["-o", "link", "show"]);
    assert_eq!(eths.lines().count(), 2, "{eths}"); // lo and eth0
}

#[test]
fn attach_single_family_privileged() {
    need_root!("attach_single_family_privileged");
    let node = Ns::new("fam", "node");
    let p6 = Ns::new("fam", "v6");
    let pb = Ns::new("fam", "b");
    let dp = node.datapath();
    dp.prepare_node(&setup(false)).unwrap();
    let a = PodLink {
        ipv4: None,
        ..pod(&p6, "wdp6", 13)
    };
    let b = PodLink {
        ipv4: None,
        mtu: 0,
        ..pod(&pb, "wdp4", 14)
    };
    let att_a = dp.attach(&a).unwrap();
    let att_b = dp.attach(&b).unwrap();
    assert!(dp.check(&a, att_a.pod_mac).unwrap().is_empty());
    assert!(dp.check(&b, att_b.pod_mac).unwrap().is_empty());
    assert!(pb.ip(&["-o", "link", "show", "eth0"]).contains("mtu 1500"));
    assert!(!p6.ip(&["-4", "route", "show"]).contains("169.254"));
    tcp_roundtrip(
        &pb.path(),
        &p6.path(),
        "[fd00:10:244::e]:8080".parse().unwrap(),
        b"ping",
    )
    .unwrap();
    let c = PodLink {
        ipv6: None,
        ..pod(&pb, "wdp4", 14)
    };
    let att_c = dp.attach(&c).unwrap();
    assert!(dp.check(&c, att_c.pod_mac).unwrap().is_empty());
    assert!(!pb.ip(&["-6", "route", "show"]).contains("fe80::1"));
}

#[test]
fn interface_exists_privileged() {
    need_root!("interface_exists_privileged");
    let node = Ns::new("exists", "node");
    let pa = Ns::new("exists", "a");
    pa.veth_pair("eth0", "other0", 1500);
    let dp = node.datapath();
    let a = pod(&pa, "wdpe", 8);
    let e = dp.attach(&a).unwrap_err();
    assert!(matches!(e, DatapathError::InterfaceExists { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!("interface eth0 already exists in {}", pa.path().display())
    );
    assert!(!node.ip_ok(&["link", "show", "wdpe"]));
    assert!(dp.list_host_links("").unwrap().is_empty());
}

#[test]
fn failed_attach_leaves_nothing_privileged() {
    need_root!("failed_attach_leaves_nothing_privileged");
    let node = Ns::new("undo", "node");
    let pa = Ns::new("undo", "a");
    let dp = node.datapath();
    // MTU below IPv6's minimum: the veth is created, the v6 routes fail
    let mut a = pod(&pa, "wdpu", 9);
    a.mtu = 1000;
    let e = dp.attach(&a).unwrap_err();
    assert!(matches!(e, DatapathError::Netlink { .. }), "{e}");
    println!("expected failure: {e}");
    assert!(!node.ip_ok(&["link", "show", "wdpu"]));
    assert!(!pa.ip_ok(&["link", "show", "eth0"]));
}

#[test]
fn invalid_names_privileged() {
    need_root!("invalid_names_privileged");
    let node = Ns::new("names", "node");
    let pa = Ns::new("names", "a");
    let dp = node.datapath();
    let a = pod(&pa, "wdp-much-too-long-name", 9);
    assert!(matches!(
        dp.attach(&a),
        Err(DatapathError::InvalidName { .. })
    ));
}

#[test]
fn nat_privileged() {
    need_root!("nat_privileged");
    let node = Ns::new("nat", "node");
    let dp = node.datapath();
    dp.prepare_node(&setup(true)).unwrap();
    let (ok, first) = node.exec("nft", &["list", "table", "inet", "weft-nat"]);
    assert!(ok, "{first}");
    assert!(first.contains("masquerade"), "{first}");
    assert!(first.contains("10.244.0.0/16"), "{first}");
    assert!(first.contains("fd00:10:244::/56"), "{first}");
    dp.prepare_node(&setup(true)).unwrap();
    let (ok, second) = node.exec("nft", &["list", "table", "inet", "weft-nat"]);
    assert!(ok);
    assert_eq!(first, second);
    for f in [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ] {
        let (ok, v) = node.exec("cat", &[f]);
        assert!(ok && v.trim() == "1", "{f}: {v}");
    }
    dp.prepare_node(&setup(false)).unwrap();
    let (ok, out) = node.exec("nft", &["list", "table", "inet", "weft-nat"]);
    assert!(!ok, "{out}");
    dp.prepare_node(&setup(false)).unwrap();
}

#[test]
fn run_in_and_spawn_in_privileged() {
    need_root!("run_in_and_spawn_in_privileged");
    let ns = Ns::new("runin", "x");
    ns.veth_pair("marker0", "marker0p", 1500);
    let seen = run_in(&ns.path(), || {
        std::fs::read_to_string("/proc/thread-self/net/dev").unwrap()
    })
    .unwrap();
    assert!(seen.contains("marker0"), "{seen}");
    let (ok, out) = ns.exec("ip", &["-o", "link", "show"]);
    assert!(ok && out.contains("marker0"), "{out}");
    // the calling thread stayed where it was
    let here = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
    assert!(!here.contains("marker0"));
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn timing_privileged() {
    need_root!("timing_privileged");
    let node = Ns::new("time", "node");
    let pa = Ns::new("time", "a");
    let dp = node.datapath();
    let a = pod(&pa, "wdptime", 20);
    let (mut att, mut det) = (Vec::new(), Vec::new());
    for _ in 0..50 {
        let t = Instant::now();
        dp.attach(&a).unwrap();
        att.push(t.elapsed());
        let t = Instant::now();
        dp.detach("wdptime").unwrap();
        det.push(t.elapsed());
    }
    let v4only = PodLink {
        ipv6: None,
        ..a.clone()
    };
    let mut att4 = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        dp.attach(&v4only).unwrap();
        att4.push(t.elapsed());
        dp.detach("wdptime").unwrap();
    }
    println!(
        "timing over 50 iterations: attach median {:?} (min {:?}, max {:?}), detach median {:?} (min {:?}, max {:?}); v4-only attach median {:?}",
        median(att.clone()),
        att.iter().min().unwrap(),
        att.iter().max().unwrap(),
        median(det.clone()),
        det.iter().min().unwrap(),
        det.iter().max().unwrap(),
        median(att4),
    );
    let _ = (HOST_VETH_MAC, IpAddr::V4(GATEWAY_V4));
}

#[test]
fn create_then_configure_equals_attach_privileged() {
    need_root!("create_then_configure_equals_attach_privileged");
    let node = Ns::new("split", "node");
    let pa = Ns::new("split", "a");
    let pb = Ns::new("split", "b");
    let dp = node.datapath();
    dp.prepare_node(&setup(false)).unwrap();
    let a = pod(&pa, "wdpsa", 2);
    let b = pod(&pb, "wdpsb", 3);
    // the first half needs no addresses: they are ignored if given
    let created = dp.create_link(&a).unwrap();
    assert!(!pa.ip(&["-o", "addr", "show", "eth0"]).contains("10.244"));
    let configured = dp.configure_link(&a).unwrap();
    assert_eq!(created, configured, "same pair, same answer");
    assert!(dp.check(&a, configured.pod_mac).unwrap().is_empty());
    dp.attach(&b).unwrap();
    tcp_roundtrip(
        &pb.path(),
        &pa.path(),
        "10.244.0.3:8090".parse().unwrap(),
        b"ping",
    )
    .unwrap();
    tcp_roundtrip(
        &pa.path(),
        &pb.path(),
        "[fd00:10:244::2]:8091".parse().unwrap(),
        b"ping",
    )
    .unwrap();
}

#[test]
fn failed_configure_removes_the_pair_privileged() {
    need_root!("failed_configure_removes_the_pair_privileged");
    let node = Ns::new("cfail", "node");
    let pa = Ns::new("cfail", "a");
    let dp = node.datapath();
    // MTU below IPv6's minimum: creating works, configuring the v6 routes fails
    let mut a = pod(&pa, "wdpcf", 9);
    a.mtu = 1000;
    dp.create_link(&a).unwrap();
    assert!(node.ip_ok(&["link", "show", "wdpcf"]));
    let e = dp.configure_link(&a).unwrap_err();
    assert!(matches!(e, DatapathError::Netlink { .. }), "{e}");
    assert!(!node.ip_ok(&["link", "show", "wdpcf"]), "pair removed");
    assert!(!pa.ip_ok(&["link", "show", "eth0"]), "pod end removed");
    // configuring a pair that was never made is a clear error
    let e = dp.configure_link(&pod(&pa, "wdpnone", 4)).unwrap_err();
    println!("expected failure: {e}");
}
