//! Multi-node labs: several node namespaces, each with its own weftd, and a
//! real etcd cluster in the fabric. Only the lab's scaffolding is checked
//! here; pod traffic across nodes belongs to the agent's tests.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use weft_lab::{pid_alive, Lab, LabSpec};

/// GET `url` with curl from inside the fabric namespace (not through the
/// lab's own health check): the body, or None when it did not answer.
fn curl_in_fabric(lab: &Lab, url: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &netns_name(&lab.fabric_netns)])
        .args(["curl", "-sS", "--max-time", "2", url])
        .output()
        .expect("ip netns exec curl runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn etcd_healthy(lab: &Lab, endpoint: &str) -> bool {
    curl_in_fabric(lab, &format!("{endpoint}/health"))
        .is_some_and(|b| b.replace(' ', "").contains(r#""health":"true""#))
}

fn multinode(tag: &str, nodes: usize, etcd: usize) -> (LabGuard, Duration) {
    let mut spec = LabSpec::new(&lab_name(tag), &bin_dir());
    spec.nodes = nodes;
    spec.etcd_members = etcd;
    let mut lines = Vec::new();
    let start = Instant::now();
    let lab = Lab::up(&spec, &mut |l| lines.push(l.to_string())).expect("lab up");
    let took = start.elapsed();
    assert_eq!(
        lines.len(),
        spec.progress_steps(),
        "one progress line per step: {lines:#?}"
    );
    eprintln!("{nodes}-node lab with {etcd} etcd member(s) up in {took:?}");
    (LabGuard(lab), took)
}

/// Everything a lab owns: its processes' pids, namespaces and directory.
fn assert_all_gone(name: &str, pids: &[u32]) {
    for pid in pids {
        assert!(
            !pid_alive(*pid),
            "process {pid} of lab {name} survived down"
        );
    }
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{name}-")))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert!(!Lab::dir_of(name).exists(), "lab directory left");
}

fn check_nodes(lab: &Lab, n: usize) {
    let nodes = lab.nodes();
    // with etcd, a weftd that knows --store etcd gets the multi-node flags
    if !lab.etcd_endpoints().is_empty() {
        let pid = nodes[n - 1].weftd_pid.expect("weftd pid");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if lab.shared_store {
            let want = format!(
                "--store etcd --etcd-endpoints {}",
                lab.etcd_endpoints().join(",")
            );
            assert!(cmdline.contains(&want), "{cmdline}");
            assert!(cmdline.contains("--underlay-iface ul0"), "{cmdline}");
        } else {
            eprintln!(
                "NOTE: this weftd has no --store etcd yet; lab {} runs embedded stores",
                lab.name
            );
        }
    }
    assert_eq!(nodes.len(), n);
    // node 1 is what the single-node accessors describe
    assert_eq!(nodes[0].netns, lab.node_netns);
    assert_eq!(netns_name(&nodes[0].netns), lab.node_netns_name());
    assert_eq!(nodes[0].socket, lab.socket());
    assert_eq!(nodes[0].underlay_v4, lab.node_underlay_v4);
    assert_eq!(nodes[0].weftd_pid, lab.weftd_pid);
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(node.name, format!("{}-n{}", lab.name, i + 1));
        assert_eq!(node.underlay_v4.to_string(), format!("198.18.0.{}", 10 + i));
        assert_eq!(node.underlay_v6.to_string(), format!("2001:2::{}", 10 + i));
        assert!(node.weftd_alive(), "weftd of {} runs", node.name);
        let r = weft_api::http::call(
            &node.socket,
            "GET",
            weft_api::paths::STATUS,
            b"",
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("weftd of {} answers: {e:#}", node.name));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let addrs = ip_out(&["-n", &node.name, "addr", "show", "ul0"]);
        assert!(
            addrs.contains(&format!("{}/15", node.underlay_v4)),
            "{addrs}"
        );
        let routes = ip_out(&["-n", &node.name, "route", "show", "default"]);
        assert!(routes.contains("via 198.18.0.1"), "{routes}");
    }
    // the nodes share one L2: node 1 reaches every other node's underlay
    for node in &nodes[1..] {
        for ip in [node.underlay_v4, node.underlay_v6] {
            weft_lab::probe::tcp_check(&nodes[0].netns, &node.netns, ip, Duration::from_secs(3))
                .unwrap_or_else(|e| panic!("n1 to {} {ip}: {e:#}", node.name));
        }
    }
}

fn lab_pids(lab: &Lab) -> Vec<u32> {
    lab.nodes()
        .iter()
        .filter_map(|n| n.weftd_pid)
        .chain(lab.etcd_members().iter().filter_map(|m| m.pid))
        .collect()
}

#[test]
fn three_nodes_one_etcd_member_come_up_and_go_away_privileged() {
    if !root_or_skip("three_nodes_one_etcd_member_come_up_and_go_away_privileged") {
        return;
    }
    let (mut lab, _) = multinode("m1", 3, 1);
    check_nodes(&lab, 3);
    assert_eq!(lab.etcd_endpoints(), vec!["http://198.18.0.2:2379"]);
    assert!(etcd_healthy(&lab, "http://198.18.0.2:2379"));
    // etcd lives in the fabric only: the root namespace has no 198.18/15 at all
    assert!(!ip_out(&["-4", "addr", "show"]).contains("198.18."));

    // a pod on node 2 is recorded there and wired through node 2's weft-cni
    let p = lab.add_pod_on("b", 1).expect("pod on node 2");
    assert_eq!(p.node, 1);
    assert_eq!(lab.pods.last().map(|p| p.node), Some(1));
    assert_eq!(p.ips.len(), 2, "{:?}", p.ips);
    let n2 = lab.nodes()[1].clone();
    weft_lab::probe::tcp_check(&n2.netns, &p.netns, v4(&p.ips), Duration::from_secs(3))
        .expect("node 2 reaches its own pod");
    let reloaded = Lab::load(&lab.name).expect("lab.json");
    assert_eq!(reloaded.pods[0].node, 1);

    // the failure-test knobs: etcd down, then back with its data
    let pid = lab.etcd_members()[0].pid.expect("etcd pid");
    lab.stop_etcd_member(0).expect("stop etcd");
    assert!(!pid_alive(pid));
    assert!(lab.etcd_members()[0].pid.is_none());
    assert!(!etcd_healthy(&lab, "http://198.18.0.2:2379"));
    lab.start_etcd_member(0).expect("start etcd");
    assert!(etcd_healthy(&lab, "http://198.18.0.2:2379"));

    // one node's agent restarts alone
    let old = lab.nodes()[2].weftd_pid.expect("weftd of n3");
    lab.stop_weftd_on(2).expect("stop n3");
    assert!(!pid_alive(old));
    assert!(lab.nodes()[1].weftd_alive(), "n2 untouched");
    lab.start_weftd_on(2).expect("start n3");
    assert!(lab.nodes()[2].weftd_alive());

    let name = lab.name.clone();
    let pids = lab_pids(&lab);
    assert_eq!(pids.len(), 4, "3 weftd + 1 etcd: {pids:?}");
    let start = Instant::now();
    Lab::down(&name).expect("down");
    eprintln!("down took {:?}", start.elapsed());
    assert_all_gone(&name, &pids);
}

#[test]
fn three_nodes_three_etcd_members_survive_one_member_down_privileged() {
    if !root_or_skip("three_nodes_three_etcd_members_survive_one_member_down_privileged") {
        return;
    }
    let (mut lab, took) = multinode("m3", 3, 3);
    check_nodes(&lab, 3);
    let endpoints = lab.etcd_endpoints();
    assert_eq!(
        endpoints,
        vec![
            "http://198.18.0.2:2379",
            "http://198.18.0.3:2379",
            "http://198.18.0.4:2379"
        ]
    );
    for e in &endpoints {
        assert!(etcd_healthy(&lab, e), "{e} healthy");
    }
    // all three formed one cluster
    let out = Command::new("ip")
        .args(["netns", "exec", &netns_name(&lab.fabric_netns)])
        .args(["etcdctl", "--endpoints", &endpoints[0], "member", "list"])
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl runs");
    let members = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(members.lines().count(), 3, "{members}");
    for peer in ["198.18.0.2:2380", "198.18.0.3:2380", "198.18.0.4:2380"] {
        assert!(members.contains(peer), "{peer} in {members}");
    }
    assert!(took < Duration::from_secs(30), "up took {took:?}");

    // one member down: the other two keep a quorum
    lab.stop_etcd_member(1).expect("stop e2");
    assert!(!etcd_healthy(&lab, &endpoints[1]));
    assert!(eventually(Duration::from_secs(10), || etcd_healthy(
        &lab,
        &endpoints[0]
    )));
    lab.start_etcd_member(1).expect("start e2");
    for e in &endpoints {
        assert!(
            eventually(Duration::from_secs(10), || etcd_healthy(&lab, e)),
            "{e} healthy again"
        );
    }
    for node in lab.nodes() {
        assert!(node.weftd_alive(), "weftd of {} survived", node.name);
    }
    // exactly one member leads (down stops it last)
    assert!(
        eventually(Duration::from_secs(10), || (0..3)
            .filter(|&i| lab.etcd_member_leads(i))
            .count()
            == 1),
        "no single etcd leader"
    );

    let name = lab.name.clone();
    let pids = lab_pids(&lab);
    assert_eq!(pids.len(), 6, "3 weftd + 3 etcd: {pids:?}");
    let start = Instant::now();
    Lab::down(&name).expect("down");
    let took = start.elapsed();
    eprintln!("down took {took:?}");
    assert!(took < Duration::from_secs(5), "down took {took:?}");
    assert_all_gone(&name, &pids);
}

#[test]
fn multinode_lab_without_etcd_and_bad_specs_privileged() {
    if !root_or_skip("multinode_lab_without_etcd_and_bad_specs_privileged") {
        return;
    }
    // two nodes, embedded stores: no etcd process, no etcd address
    let (two, _) = multinode("m0", 2, 0);
    check_nodes(&two, 2);
    assert!(two.etcd_endpoints().is_empty());
    let fab = ip_out(&["-n", &netns_name(&two.fabric_netns), "addr", "show", "br0"]);
    assert!(!fab.contains("198.18.0.2/"), "{fab}");
    drop(two);

    for (nodes, etcd, routing) in [(0, 0, "overlay"), (2, 4, "overlay"), (2, 1, "bgp")] {
        let mut spec = LabSpec::new(&lab_name("bad"), &bin_dir());
        spec.nodes = nodes;
        spec.etcd_members = etcd;
        spec.routing = routing.into();
        let err = Lab::up(&spec, &mut |_| {}).expect_err("rejected");
        eprintln!("{err:#}");
        assert!(!Lab::dir_of(&spec.name).exists(), "nothing made");
    }
    // a pod may not take a node's or the fabric's namespace name
    let mut one = lab("m1n", |_| {});
    for bad in ["n1", "node", "fab"] {
        assert!(one.add_pod(bad).is_err(), "{bad} refused");
    }
}

#[test]
fn pid_check_never_signals_a_stranger_privileged() {
    if !root_or_skip("pid_check_never_signals_a_stranger_privileged") {
        return;
    }
    // a lab.json whose recorded pids belong to someone else: down leaves them alone
    let (lab, _) = multinode("mp", 2, 1);
    let mut stranger = Command::new("sleep").arg("30").spawn().expect("sleep");
    let raw = std::fs::read_to_string(Lab::dir_of(&lab.name).join("lab.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let real = lab_pids(&lab);
    v["nodes"][1]["weftd_pid"] = stranger.id().into();
    std::fs::write(
        Lab::dir_of(&lab.name).join("lab.json"),
        serde_json::to_vec(&v).unwrap(),
    )
    .unwrap();
    Lab::down(&lab.name).expect("down");
    assert!(pid_alive(stranger.id()), "a stranger was signalled");
    let _ = stranger.kill();
    let _ = stranger.wait();
    // the weftd whose pid was overwritten survives too: stop it by its pid here
    for pid in real {
        if pid_alive(pid) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            assert!(eventually(Duration::from_secs(5), || !pid_alive(pid)));
        }
    }
}
