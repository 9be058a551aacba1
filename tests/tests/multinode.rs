//! A cluster of lab nodes on a real etcd: pods on different nodes talk over
//! the VXLAN overlay and over native routes, routes follow nodes that leave
//! and come back, and a weftd restart does not interrupt traffic.

mod common;

use std::time::{Duration, Instant};

use common::*;
use weft_lab::probe::tcp_check;

const T: Duration = Duration::from_secs(2);

fn cluster(tag: &str, routing: &str, extra: &[&str]) -> LabGuard {
    lab(tag, |s| {
        s.nodes = 3;
        s.etcd_members = 1;
        s.routing = routing.to_string();
        s.weftd_args.extend(extra.iter().map(|a| a.to_string()));
    })
}

/// Routes appear within the watch latency: retry a probe for a bounded time.
fn reaches(
    from: &std::path::Path,
    to: &std::path::Path,
    ip: std::net::IpAddr,
    within: Duration,
) -> bool {
    eventually(within, || tcp_check(from, to, ip, T).is_ok())
}

fn all_pairs(lab: &weft_lab::Lab, pods: &[weft_lab::Pod]) {
    for a in pods {
        for b in pods {
            if a.name == b.name {
                continue;
            }
            for ip in &b.ips {
                assert!(
                    reaches(&a.netns, &b.netns, *ip, Duration::from_secs(5)),
                    "{} (node {}) cannot reach {} (node {}) at {ip}",
                    a.name,
                    a.node,
                    b.name,
                    b.node
                );
            }
        }
        for n in lab.nodes() {
            assert!(
                reaches(&a.netns, &n.netns, n.underlay_v4, Duration::from_secs(5)),
                "{} to node {}",
                a.name,
                n.name
            );
        }
    }
}

fn link_mtu(netns: &std::path::Path, dev: &str) -> Option<u32> {
    let out = ip_out(&["-n", &netns_name(netns), "-o", "link", "show", dev]);
    out.split_whitespace()
        .skip_while(|w| *w != "mtu")
        .nth(1)?
        .parse()
        .ok()
}

fn three_pods(lab: &mut LabGuard) -> Vec<weft_lab::Pod> {
    (0..3)
        .map(|i| lab.add_pod_on(&format!("p{i}"), i).expect("add pod"))
        .collect()
}

#[test]
fn pods_on_different_nodes_talk_over_the_vxlan_overlay_privileged() {
    if !root_or_skip("pods_on_different_nodes_talk_over_the_vxlan_overlay_privileged") {
        return;
    }
    let mut lab = cluster("ovl", "overlay", &[]);
    let pods = three_pods(&mut lab);
    let mut seen = std::collections::HashSet::new();
    for p in &pods {
        assert_eq!(p.ips.len(), 2, "dual-stack: {p:?}");
        for ip in &p.ips {
            assert!(seen.insert(*ip), "{ip} handed out twice across the cluster");
        }
        // the overlay costs 50 bytes: pods and the VXLAN device get 1450
        assert_eq!(link_mtu(&p.netns, "eth0"), Some(1450), "pod {}", p.name);
        assert_eq!(
            link_mtu(&lab.node(p.node).unwrap().netns, "weft.vxlan"),
            Some(1450)
        );
    }
    all_pairs(&lab, &pods);
}

#[test]
fn pods_on_different_nodes_talk_over_native_routes_privileged() {
    if !root_or_skip("pods_on_different_nodes_talk_over_native_routes_privileged") {
        return;
    }
    let mut lab = cluster("nat", "native", &[]);
    let pods = three_pods(&mut lab);
    for p in &pods {
        assert_eq!(
            link_mtu(&p.netns, "eth0"),
            Some(1500),
            "no encapsulation, full MTU"
        );
        assert_eq!(
            link_mtu(&lab.node(p.node).unwrap().netns, "weft.vxlan"),
            None,
            "no overlay device"
        );
    }
    all_pairs(&lab, &pods);
    // the routes to other nodes' blocks go via their underlay addresses
    let n0 = netns_name(&lab.node(0).unwrap().netns);
    let routes = ip_out(&["-n", &n0, "route", "show", "proto", "201"]);
    assert!(
        routes.contains("via 198.18.0.11") && routes.contains("via 198.18.0.12"),
        "{routes}"
    );
}

#[test]
fn routes_follow_a_node_that_leaves_and_comes_back_privileged() {
    if !root_or_skip("routes_follow_a_node_that_leaves_and_comes_back_privileged") {
        return;
    }
    let mut lab = cluster("lv", "overlay", &["--node-lease-seconds=2"]);
    let a = lab.add_pod_on("a", 0).unwrap();
    let c = lab.add_pod_on("c", 2).unwrap();
    assert!(reaches(
        &a.netns,
        &c.netns,
        v4(&c.ips),
        Duration::from_secs(5)
    ));
    let n0 = netns_name(&lab.node(0).unwrap().netns);
    let block_of_c = format!("{}/", v4(&c.ips))
        .split('.')
        .take(3)
        .collect::<Vec<_>>()
        .join(".");
    let has_route_to_c =
        || ip_out(&["-n", &n0, "route", "show", "proto", "201"]).contains(&block_of_c);
    assert!(has_route_to_c());

    // node 3's agent stops: its lease runs out and every other node drops its routes
    lab.stop_weftd_on(2).unwrap();
    let t = Instant::now();
    assert!(
        eventually(Duration::from_secs(8), || !has_route_to_c()),
        "routes to the gone node stayed"
    );
    println!(
        "routes to a departed node were removed {:.1} s after its agent stopped (lease 2 s)",
        t.elapsed().as_secs_f64()
    );

    // it comes back: routes return within a second or two, traffic flows again
    lab.start_weftd_on(2).unwrap();
    let t = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), has_route_to_c),
        "routes did not come back"
    );
    println!(
        "routes to a returning node appeared {:.2} s after its agent was ready",
        t.elapsed().as_secs_f64()
    );
    assert!(reaches(
        &a.netns,
        &c.netns,
        v4(&c.ips),
        Duration::from_secs(5)
    ));
    assert!(reaches(
        &c.netns,
        &a.netns,
        v6(&a.ips),
        Duration::from_secs(5)
    ));
}

#[test]
fn cross_node_traffic_keeps_flowing_while_weftd_restarts_privileged() {
    if !root_or_skip("cross_node_traffic_keeps_flowing_while_weftd_restarts_privileged") {
        return;
    }
    let mut lab = cluster("rs", "overlay", &[]);
    let a = lab.add_pod_on("a", 0).unwrap();
    let b = lab.add_pod_on("b", 1).unwrap();
    assert!(reaches(
        &a.netns,
        &b.netns,
        v4(&b.ips),
        Duration::from_secs(5)
    ));
    // a stream of round trips, bounded in count and time, while node 1's agent restarts
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (gap, rounds) = std::thread::scope(|s| {
        let prober = s.spawn(|| {
            let mut last_ok = Instant::now();
            let mut longest = Duration::ZERO;
            let mut rounds = 0u32;
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && Instant::now() < deadline
                && rounds < 5000
            {
                rounds += 1;
                if tcp_check(&a.netns, &b.netns, v4(&b.ips), Duration::from_millis(500)).is_ok() {
                    longest = longest.max(last_ok.elapsed());
                    last_ok = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (longest.max(last_ok.elapsed()), rounds)
        });
        std::thread::sleep(Duration::from_millis(500));
        lab.stop_weftd_on(0).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        lab.start_weftd_on(0).unwrap();
        std::thread::sleep(Duration::from_millis(700));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        prober.join().unwrap()
    });
    println!("longest gap between successful cross-node round trips during a weftd restart: {:.0} ms ({rounds} probes)", gap.as_secs_f64() * 1e3);
    assert!(
        gap < Duration::from_millis(500),
        "traffic stopped for {gap:?} while weftd restarted"
    );
}

#[test]
fn etcd_outage_add_fails_fast_del_is_spooled_and_both_recover_privileged() {
    if !root_or_skip("etcd_outage_add_fails_fast_del_is_spooled_and_both_recover_privileged") {
        return;
    }
    let mut lab = lab("eo", |s| {
        s.nodes = 2;
        s.etcd_members = 3;
    });
    let a = lab.add_pod_on("a", 0).unwrap();
    let b = lab.add_pod_on("b", 1).unwrap();

    // one member of three down: the cluster has a quorum, allocations go on
    lab.stop_etcd_member(0).unwrap();
    let c = lab
        .add_pod_on("c", 0)
        .expect("ADD with one etcd member down");
    assert!(reaches(
        &c.netns,
        &b.netns,
        v4(&b.ips),
        Duration::from_secs(5)
    ));

    // every member down
    lab.stop_etcd_member(1).unwrap();
    lab.stop_etcd_member(2).unwrap();
    let ns = format!("{}-late", lab.name);
    weft_lab::ip(&["netns", "add", &ns]).unwrap();
    let conf0 = lab.net_conf_on(0, "1.0.0");
    let t = Instant::now();
    let add = lab
        .cni_on(
            0,
            "ADD",
            "late",
            &format!("/run/netns/{ns}"),
            "late",
            &conf0,
        )
        .unwrap();
    let took = t.elapsed();
    assert!(!add.success, "ADD without a datastore: {add:?}");
    assert_eq!(add.json().unwrap()["code"], 11, "{}", add.stdout);
    assert!(
        took < Duration::from_secs(10),
        "ADD took {took:?} to give up"
    );
    println!(
        "ADD with every etcd member down failed with code 11 after {:.2} s",
        took.as_secs_f64()
    );
    // the pods already there keep their network
    assert!(reaches(
        &a.netns,
        &b.netns,
        v4(&b.ips),
        Duration::from_secs(3)
    ));
    // DEL of b: weftd cannot release now; weft-cni spools it and reports success
    let conf1 = lab.net_conf_on(1, "1.0.0");
    let del = lab
        .cni_on(
            1,
            "DEL",
            &b.container_id,
            &b.netns.to_string_lossy(),
            "b",
            &conf1,
        )
        .unwrap();
    assert!(del.success, "DEL with every etcd member down: {del:?}");
    let spool = lab.node(1).unwrap().spool_dir();
    assert_eq!(
        std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0),
        1,
        "DEL spooled in {}",
        spool.display()
    );

    // etcd returns: the spooled DEL goes through, ADD works, nothing leaked
    lab.start_etcd_members(&[0, 1, 2]).unwrap();
    let node1 = lab.node(1).unwrap().socket.clone();
    let ipam_of = |socket: &std::path::Path| -> weft_api::IpamView {
        api_get_at(socket, weft_api::paths::IPAM)
    };
    assert!(
        eventually(Duration::from_secs(20), || !ipam_of(&node1)
            .allocations
            .iter()
            .any(|x| b.ips.contains(&x.address))),
        "b's addresses were never released after etcd came back"
    );
    // the replay releases the addresses, then removes the spool file: the
    // test may look in between, so it waits for the removal too
    assert!(
        eventually(Duration::from_secs(5), || std::fs::read_dir(&spool)
            .map(|d| d.count())
            .unwrap_or(0)
            == 0),
        "spool not drained in {}",
        spool.display()
    );
    assert!(
        eventually(Duration::from_secs(10), || lab
            .cni_on(
                0,
                "ADD",
                "late",
                &format!("/run/netns/{ns}"),
                "late",
                &conf0
            )
            .map(|o| o.success)
            .unwrap_or(false)),
        "ADD never worked again"
    );
    for i in 0..2 {
        assert_ipam_clean(&lab, i);
    }
}

#[test]
fn under_pool_pressure_nodes_borrow_and_no_address_is_given_twice_privileged() {
    if !root_or_skip("under_pool_pressure_nodes_borrow_and_no_address_is_given_twice_privileged") {
        return;
    }
    // a /27 in /29 blocks (4 blocks of 8), one block per node: node 1 must borrow
    let mut lab = cluster(
        "bw",
        "overlay",
        &[
            "--pool=10.250.0.0/27",
            "--pool=fd00:99::/123",
            "--block-prefix-v4=29",
            "--block-prefix-v6=125",
            "--max-blocks-per-node=1",
        ],
    );
    let b = lab.add_pod_on("b", 1).unwrap();
    let c = lab.add_pod_on("c", 2).unwrap();
    let mut pods = vec![b.clone(), c.clone()];
    for i in 0..10 {
        pods.push(
            lab.add_pod_on(&format!("a{i}"), 0)
                .expect("node 1 allocates, borrowing when its block is full"),
        );
    }
    // every address of the cluster, from every node's own view, is distinct
    let mut seen = std::collections::HashMap::new();
    for p in &pods {
        for ip in &p.ips {
            if let Some(other) = seen.insert(*ip, p.name.clone()) {
                panic!("{ip} given to both {other} and {}", p.name);
            }
        }
    }
    // node 1's pods beyond its one block live in other nodes' blocks, and
    // the IPAM view (`weft ipam show`) says so address by address
    let view = ipam(&lab);
    let borrower = lab.node(0).unwrap().name.clone();
    let owner_of = |ip: std::net::IpAddr| {
        view.blocks
            .iter()
            .find(|b| b.cidr.contains(&ip))
            .and_then(|b| b.affinity.clone())
    };
    let borrowed: Vec<_> = pods[2..]
        .iter()
        .filter(|p| owner_of(v4(&p.ips)).as_deref() != Some(borrower.as_str()))
        .collect();
    assert!(!borrowed.is_empty(), "node 1 never borrowed: {pods:?}");
    for a in &view.allocations {
        let lent = owner_of(a.address).as_deref() != Some(borrower.as_str())
            && pods[2..].iter().any(|p| p.ips.contains(&a.address));
        let want = lent.then_some(borrower.as_str());
        assert_eq!(a.borrowed_by.as_deref(), want, "{a:?}");
    }
    // a borrowed pod is reachable from the node whose block it lives in and from the third
    for p in &borrowed {
        for from in [&b, &c] {
            assert!(
                reaches(&from.netns, &p.netns, v4(&p.ips), Duration::from_secs(5)),
                "{} -> borrowed {}",
                from.name,
                p.name
            );
        }
    }
    for i in 0..3 {
        assert_ipam_clean(&lab, i);
    }
}

#[test]
fn weftd_started_while_etcd_is_down_waits_for_it_privileged() {
    if !root_or_skip("weftd_started_while_etcd_is_down_waits_for_it_privileged") {
        return;
    }
    let mut lab = lab("ew", |s| {
        s.nodes = 1;
        s.etcd_members = 1;
    });
    let a = lab.add_pod_on("a", 0).unwrap();

    // the node reboots while etcd is away: weftd must wait, not exit
    lab.stop_weftd_on(0).unwrap();
    lab.stop_etcd_member(0).unwrap();
    let pid = lab.spawn_weftd_on(0).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(weft_lab::pid_alive(pid), "weftd exited without etcd");

    // meanwhile the runtime gets "try again later" for ADD, DEL is spooled
    let ns = format!("{}-late", lab.name);
    weft_lab::ip(&["netns", "add", &ns]).unwrap();
    let conf = lab.net_conf_on(0, "1.0.0");
    let late = format!("/run/netns/{ns}");
    let add = lab.cni_on(0, "ADD", "late", &late, "late", &conf).unwrap();
    assert!(!add.success, "{add:?}");
    assert_eq!(add.json().unwrap()["code"], 11, "{}", add.stdout);
    let del = lab
        .cni_on(
            0,
            "DEL",
            &a.container_id,
            &a.netns.to_string_lossy(),
            "a",
            &conf,
        )
        .unwrap();
    assert!(del.success, "DEL while weftd waits: {del:?}");

    // etcd returns: weftd finishes starting, replays the DEL, serves ADD
    lab.start_etcd_member(0).unwrap();
    lab.wait_weftd_on(0, Duration::from_secs(30))
        .expect("weftd ready once etcd is back");
    let add = lab.cni_on(0, "ADD", "late", &late, "late", &conf).unwrap();
    assert!(add.success, "ADD after etcd came back: {add:?}");
    assert!(
        eventually(Duration::from_secs(10), || !ipam(&lab)
            .allocations
            .iter()
            .any(|x| a.ips.contains(&x.address))),
        "the DEL spooled while weftd waited was never replayed"
    );
    assert_ipam_clean(&lab, 0);
    let _ = weft_lab::ip(&["netns", "del", &ns]);
}

#[test]
fn weftd_killed_between_a_journaled_add_and_its_flush_loses_and_duplicates_nothing_privileged() {
    if !root_or_skip(
        "weftd_killed_between_a_journaled_add_and_its_flush_loses_and_duplicates_nothing_privileged",
    ) {
        return;
    }
    // a flush every 40 s, so the ADDs below stay in node 0's journal until
    // the kill; the lease long enough for the journal's gate to stay open
    // (open while the lease has more than a flush interval + 1 s to run)
    let mut lab = lab("jk", |s| {
        s.nodes = 2;
        s.etcd_members = 1;
        s.weftd_args
            .extend(["--ipam-flush-ms=40000", "--node-lease-seconds=200"].map(String::from));
    });
    let node1 = lab.node(1).unwrap().socket.clone();
    // node 1's view is the store's (node 0's journal is not in it)
    let in_store = |pod: &weft_lab::Pod| -> Vec<std::net::IpAddr> {
        let view: weft_api::IpamView = api_get_at(&node1, weft_api::paths::IPAM);
        view.allocations
            .iter()
            .filter(|a| a.container_id == pod.container_id)
            .map(|a| a.address)
            .collect()
    };
    // the first ADD claims node 0's blocks (a store write), the next two
    // only take addresses in them: journaled
    let a = lab.add_pod_on("a", 0).unwrap();
    let b = lab.add_pod_on("b", 0).unwrap();
    let c = lab.add_pod_on("c", 0).unwrap();
    assert_eq!(in_store(&a).len(), 2, "a's claim is in the store");
    let pid = lab.node(0).unwrap().weftd_pid.expect("node 0's weftd runs");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(
        eventually(Duration::from_secs(5), || !weft_lab::pid_alive(pid)),
        "weftd {pid} survived SIGKILL"
    );
    // the kill came before the flush: b and c were only in the journal
    assert!(in_store(&b).is_empty(), "b flushed before the kill");
    assert!(in_store(&c).is_empty(), "c flushed before the kill");

    // weftd starts again: it lays the journal over the store and flushes
    // before it serves
    lab.stop_weftd_on(0).unwrap(); // forgets the dead pid
    lab.start_weftd_on(0).unwrap();
    for p in [&b, &c] {
        let mut got = in_store(p);
        got.sort();
        let mut want = p.ips.clone();
        want.sort();
        assert_eq!(got, want, "{} keeps its addresses in the store", p.name);
    }
    // a new pod gets other addresses, and no address is held twice
    let d = lab.add_pod_on("d", 0).unwrap();
    let before: Vec<_> = [&a, &b, &c].iter().flat_map(|p| p.ips.clone()).collect();
    assert!(d.ips.iter().all(|ip| !before.contains(ip)), "{d:?}");
    let view: weft_api::IpamView = api_get_at(&lab.node(0).unwrap().socket, weft_api::paths::IPAM);
    let mut seen = std::collections::HashMap::new();
    for al in &view.allocations {
        if let Some(other) = seen.insert(al.address, al.container_id.clone()) {
            panic!("{} held by {other} and {}", al.address, al.container_id);
        }
    }
    assert_eq!(seen.len(), 8, "4 dual-stack pods: {:?}", view.allocations);
    for p in [&a, &b, &c, &d] {
        for ip in &p.ips {
            assert_eq!(seen.get(ip), Some(&p.container_id), "{ip} of {}", p.name);
        }
    }
    for i in 0..2 {
        assert_ipam_clean(&lab, i);
    }
}
