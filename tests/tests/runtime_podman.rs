//! weft under a real runtime: podman 4 with its CNI backend drives weft-cni
//! (chained with the reference portmap) inside a lab's node namespace, with
//! a private configuration, storage and CNI config dir (see podman_support).

mod common;
mod podman_support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use podman_support::{fetch_from, nat_rules, require_podman, Podman, PAGE};

/// What podman says about one container on the weft network.
struct Seen {
    id: String,
    sandbox: String,
    v4: IpAddr,
    v6: IpAddr,
    mac: String,
}

fn seen(p: &Podman, name: &str) -> Seen {
    let info = p.inspect(name);
    let net = &info["NetworkSettings"]["Networks"][podman_support::NETWORK];
    let ip = |field: &str| -> IpAddr {
        net[field]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{name}: {field} in podman inspect: {net}"))
    };
    Seen {
        id: info["Id"].as_str().expect("Id").to_string(),
        sandbox: info["NetworkSettings"]["SandboxKey"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        v4: ip("IPAddress"),
        v6: ip("GlobalIPv6Address"),
        mac: net["MacAddress"].as_str().unwrap_or_default().to_string(),
    }
}

/// podman's view of `name` equals weft's endpoint of it and the kernel's eth0.
fn agrees_with_weft(lab: &LabGuard, p: &Podman, name: &str) -> Seen {
    let s = seen(p, name);
    let eps = endpoints(lab);
    let ep = eps
        .iter()
        .find(|e| e.attachment.container_id == s.id)
        .unwrap_or_else(|| panic!("weft has no endpoint for {name} ({}): {eps:#?}", s.id));
    assert_eq!(ep.attachment.ifname, "eth0");
    assert_eq!(ep.network, podman_support::NETWORK);
    assert_eq!(ep.pod.name, name, "K8S_POD_NAME podman passed");
    assert_eq!(ep.netns, s.sandbox, "CNI_NETNS is podman's SandboxKey");
    assert!(s.sandbox.starts_with("/run/netns/netns-"), "{}", s.sandbox);
    let ips: Vec<IpAddr> = ep.ips.iter().map(|n| n.addr()).collect();
    assert_eq!(ips, vec![s.v4, s.v6], "weft's addresses vs podman inspect");
    assert!(
        ep.mac.eq_ignore_ascii_case(&s.mac),
        "MAC of eth0: weft {} podman {}",
        ep.mac,
        s.mac
    );
    // and the kernel inside the container says the same
    let link = p.podman(&["exec", name, "busybox", "ip", "addr", "show", "eth0"]);
    for want in [
        format!("{}/32", s.v4),
        format!("{}/128", s.v6),
        s.mac.to_lowercase(),
    ] {
        assert!(link.contains(&want), "{name} eth0 lacks {want}: {link}");
    }
    s
}

fn url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("http://{a}:{port}/index.html"),
        IpAddr::V6(a) => format!("http://[{a}]:{port}/index.html"),
    }
}

/// Everything of the containers `gone` is released: weft, the kernel,
/// podman's netns files, conmon, libcni's cache.
fn released(lab: &LabGuard, p: &Podman, gone: &[&Seen]) {
    let eps = endpoints(lab);
    for s in gone {
        assert!(
            !eps.iter().any(|e| e.attachment.container_id == s.id),
            "endpoint of {} left: {eps:#?}",
            s.id
        );
    }
    let allocs = ipam(lab).allocations;
    for s in gone {
        for a in &allocs {
            assert!(
                a.container_id != s.id && a.address != s.v4 && a.address != s.v6,
                "address of {} still allocated: {a:?}",
                s.id
            );
        }
        assert!(
            !std::path::Path::new(&s.sandbox).exists(),
            "podman's netns {} left",
            s.sandbox
        );
    }
    assert!(
        eventually(Duration::from_secs(10), || p.processes().is_empty()),
        "conmon/podman processes left: {:#?}",
        p.processes()
    );
    assert!(
        p.cni_cache().is_empty(),
        "libcni cache: {:?}",
        p.cni_cache()
    );
    let node = netns_name(&lab.node_netns);
    for s in gone {
        let routes = ip_out(&["-n", &node, "route", "show"]);
        assert!(!routes.contains(&s.v4.to_string()), "route left: {routes}");
    }
    assert!(
        eventually(Duration::from_secs(5), || !ip_out(&[
            "-n", &node, "link", "show"
        ])
        .contains("weft")),
        "host veths left: {}",
        ip_out(&["-n", &node, "link", "show"])
    );
}

/// Sockets listening on TCP `port` in the node namespace (`ss`).
fn listeners(p: &Podman, port: u16) -> String {
    let out = p
        .in_node("ss", &["-Hltnp", &format!("sport = :{port}")])
        .output()
        .expect("ss runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes podman's storage and everything under its directory, then checks
/// that nothing is left: no mount (overlay, shm), no conmon, no netns, no
/// cgroup, no libcni cache file, no directory.
fn finish(mut p: Podman) {
    let left = p.shutdown();
    assert!(left.is_empty(), "left behind by podman: {left:#?}");
}

#[test]
fn podman_runs_containers_on_weft_with_port_mapping_privileged() {
    if !root_or_skip("podman_runs_containers_on_weft_with_port_mapping_privileged") {
        return;
    }
    require_podman();
    let started = Instant::now();
    let lab = lab("pdm", |_| {});
    let portmap = serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}});
    let p = Podman::new(&lab, &[portmap]);
    p.import_busybox();

    // 1-2: two containers, addresses from weft, podman and weft agree
    p.run_detached("a", &[], &["busybox", "sleep", "300"]);
    p.run_detached(
        "b",
        &["-p", "18081:8080"],
        &["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"],
    );
    let a = agrees_with_weft(&lab, &p, "a");
    let b = agrees_with_weft(&lab, &p, "b");
    assert_ne!(a.v4, b.v4);
    assert!(ipam(&lab)
        .allocations
        .iter()
        .any(|al| al.container_id == b.id && al.pod.name == "b"));

    // 3: TCP from a to b over both families (busybox wget -T segfaults: timeout instead)
    for ip in [b.v4, b.v6] {
        let got = p.podman(&[
            "exec",
            "a",
            "busybox",
            "timeout",
            "10",
            "busybox",
            "wget",
            "-q",
            "-O-",
            &url(ip, 8080),
        ]);
        assert_eq!(got, PAGE, "a -> b {ip}");
    }

    // 4: -p through weft-cni -> portmap: the node's address, from the node and from the fabric
    let nat = nat_rules(&lab.node_netns);
    assert!(
        nat.contains(&format!("--to-destination {}:8080", b.v4)),
        "portmap DNAT: {nat}"
    );
    // podman reserves the host port itself: conmon listens on it in the node namespace
    assert!(
        listeners(&p, 18081).contains("conmon"),
        "{}",
        listeners(&p, 18081)
    );
    let node_port = url(lab.node_underlay_v4, 18081);
    for from in [&lab.node_netns, &lab.fabric_netns] {
        let got = fetch_from(from, &node_port).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, PAGE, "{node_port} from {}", from.display());
    }

    // 5: rm -f: weft releases everything, podman and portmap leave nothing
    p.podman(&["rm", "-f", "-t", "0", "a", "b"]);
    released(&lab, &p, &[&a, &b]);
    assert!(ipam(&lab).allocations.is_empty(), "{:?}", ipam(&lab));
    assert!(endpoints(&lab).is_empty());
    let nat = nat_rules(&lab.node_netns);
    assert!(!nat.contains("18081"), "port mapping left: {nat}");
    assert!(
        listeners(&p, 18081).trim().is_empty(),
        "{}",
        listeners(&p, 18081)
    );
    assert!(!p.cni_log().contains(" error "), "{}", p.cni_log());
    finish(p);
    eprintln!("podman scenario took {:?}", started.elapsed());
}

#[test]
fn podman_static_ip_network_reload_and_self_exit_privileged() {
    if !root_or_skip("podman_static_ip_network_reload_and_self_exit_privileged") {
        return;
    }
    require_podman();
    let started = Instant::now();
    let lab = lab("pdr", |_| {});
    let p = Podman::new(&lab, &[]);
    p.import_busybox();

    // `--ip` alone arrives as CNI_ARGS IP=...; `--ip` + `--ip6` as runtimeConfig.ips
    p.run_detached(
        "s",
        &["--ip", "10.244.0.50"],
        &["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"],
    );
    let s = agrees_with_weft(&lab, &p, "s");
    assert_eq!(
        s.v4,
        "10.244.0.50".parse::<IpAddr>().unwrap(),
        "--ip honoured"
    );
    p.run_detached(
        "d",
        &["--ip", "10.244.0.60", "--ip6", "fd00:10:244::60"],
        &["busybox", "sleep", "300"],
    );
    let d = agrees_with_weft(&lab, &p, "d");
    assert_eq!(d.v4, "10.244.0.60".parse::<IpAddr>().unwrap());
    assert_eq!(d.v6, "fd00:10:244::60".parse::<IpAddr>().unwrap());

    // `podman network reload` is DEL then ADD asking for the addresses the
    // container had: it keeps them, and traffic to it flows again
    p.podman(&["network", "reload", "s"]);
    let again = agrees_with_weft(&lab, &p, "s");
    assert_eq!(
        (again.v4, again.v6),
        (s.v4, s.v6),
        "reload keeps the addresses"
    );
    for ip in [again.v4, again.v6] {
        let got = p.podman(&[
            "exec",
            "d",
            "busybox",
            "timeout",
            "10",
            "busybox",
            "wget",
            "-q",
            "-O-",
            &url(ip, 8080),
        ]);
        assert_eq!(got, PAGE, "d -> s {ip} after reload");
    }

    // a container that exits on its own: conmon's exit command (`podman
    // container cleanup`, which gets CONTAINERS_CONF from podman) DELs it
    let e = p.run_detached("e", &[], &["busybox", "sleep", "1"]);
    assert!(
        eventually(Duration::from_secs(15), || p.inspect("e")["State"]
            ["Status"]
            == "exited"
            && !endpoints(&lab)
                .iter()
                .any(|ep| ep.attachment.container_id == e)),
        "exit of e not cleaned up: {:?}",
        endpoints(&lab)
    );
    assert!(!ipam(&lab).allocations.iter().any(|a| a.container_id == e));

    p.podman(&["rm", "-f", "-t", "0", "s", "d", "e"]);
    released(&lab, &p, &[&again, &d]);
    assert!(ipam(&lab).allocations.is_empty(), "{:?}", ipam(&lab));
    finish(p);
    eprintln!("podman reload scenario took {:?}", started.elapsed());
}
