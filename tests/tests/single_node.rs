//! One node, real kernel: pods wired by weft-cni + weftd in network namespaces
//! of a lab, driven exactly as a runtime drives a CNI plugin.

mod common;

use std::time::Duration;

use common::*;
use weft_lab::probe::tcp_check;

const T: Duration = Duration::from_secs(3);

#[test]
fn pods_reach_each_other_and_the_node_over_v4_and_v6_privileged() {
    if !root_or_skip("pods_reach_each_other_and_the_node_over_v4_and_v6_privileged") {
        return;
    }
    let mut lab = lab("talk", |s| s.underlay_mtu = 1400);
    let a = lab.add_pod("a").expect("add a");
    let b = lab.add_pod("b").expect("add b");
    assert_eq!(a.ips.len(), 2, "dual-stack: {:?}", a.ips);
    for (ip, what) in [(v4(&b.ips), "pod-to-pod v4"), (v6(&b.ips), "pod-to-pod v6")] {
        tcp_check(&a.netns, &b.netns, ip, T).unwrap_or_else(|e| panic!("{what}: {e:#}"));
    }
    for ip in [lab.node_underlay_v4, lab.node_underlay_v6] {
        tcp_check(&a.netns, &lab.node_netns, ip, T)
            .unwrap_or_else(|e| panic!("pod-to-node {ip}: {e:#}"));
    }
    for ip in [v4(&a.ips), v6(&a.ips)] {
        tcp_check(&lab.node_netns, &a.netns, ip, T)
            .unwrap_or_else(|e| panic!("node-to-pod {ip}: {e:#}"));
    }
    // the pod MTU follows the node's underlay (1400 here), no config needed
    let link = ip_out(&["-n", &netns_name(&a.netns), "link", "show", "eth0"]);
    assert!(link.contains("mtu 1400"), "{link}");
    // the pod holds exactly a /32 and a /128, default routes via the link-local gateway
    let addrs = ip_out(&["-n", &netns_name(&a.netns), "addr", "show", "eth0"]);
    assert!(addrs.contains(&format!("{}/32", v4(&a.ips))), "{addrs}");
    assert!(addrs.contains(&format!("{}/128", v6(&a.ips))), "{addrs}");
    let r4 = ip_out(&["-n", &netns_name(&a.netns), "route", "show", "default"]);
    assert!(r4.contains("via 169.254.1.1"), "{r4}");
    let r6 = ip_out(&[
        "-n",
        &netns_name(&a.netns),
        "-6",
        "route",
        "show",
        "default",
    ]);
    assert!(r6.contains("via fe80::1"), "{r6}");
}

#[test]
fn traffic_leaving_the_pool_is_masqueraded_privileged() {
    if !root_or_skip("traffic_leaving_the_pool_is_masqueraded_privileged") {
        return;
    }
    let mut lab = lab("nat", |_| {});
    let a = lab.add_pod("a").expect("add a");
    // the fabric is outside every pool: it must see the node's address, not the pod's
    let peer = weft_lab::probe::tcp_peer(&a.netns, &lab.fabric_netns, lab.fabric_v4, T)
        .expect("pod reaches the fabric");
    assert_eq!(peer, lab.node_underlay_v4, "source seen by the fabric");
    let peer6 = weft_lab::probe::tcp_peer(&a.netns, &lab.fabric_netns, lab.fabric_v6, T)
        .expect("pod reaches the fabric over v6");
    assert_eq!(peer6, lab.node_underlay_v6, "v6 source seen by the fabric");
    // pod to pod is never NATed
    let b = lab.add_pod("b").expect("add b");
    let seen = weft_lab::probe::tcp_peer(&a.netns, &b.netns, v4(&b.ips), T).expect("pod to pod");
    assert_eq!(seen, v4(&a.ips));
}

#[test]
fn del_removes_interface_routes_and_address_and_repeats_cleanly_privileged() {
    if !root_or_skip("del_removes_interface_routes_and_address_and_repeats_cleanly_privileged") {
        return;
    }
    let mut lab = lab("del", |_| {});
    let a = lab.add_pod("a").expect("add a");
    let ep = endpoints(&lab).into_iter().next().expect("one endpoint");
    let node = netns_name(&lab.node_netns);
    let pod_ns = netns_name(&a.netns);
    assert!(ip_out(&["-n", &node, "link", "show", &ep.host_ifname]).contains(&ep.host_ifname));
    let conf = lab.net_conf("1.0.0");
    let netns = a.netns.to_string_lossy().to_string();
    let del = lab.cni("DEL", &a.container_id, &netns, "a", &conf).unwrap();
    assert!(del.success, "{del:?}");
    assert!(
        del.stdout.trim().is_empty(),
        "DEL prints nothing: {:?}",
        del.stdout
    );
    // weft's own state is clean the moment DEL returns
    assert!(endpoints(&lab).is_empty());
    assert!(ipam(&lab).allocations.is_empty(), "address released");
    // the kernel side follows within the deferred teardown
    assert!(eventually(Duration::from_secs(5), || !ip_out(&[
        "-n", &node, "link", "show"
    ])
    .contains(&ep.host_ifname)));
    assert!(!ip_out(&["-n", &pod_ns, "link", "show"]).contains("eth0"));
    let routes =
        ip_out(&["-n", &node, "route", "show"]) + &ip_out(&["-n", &node, "-6", "route", "show"]);
    for ip in &a.ips {
        assert!(
            !routes.contains(&ip.to_string()),
            "route to {ip} left: {routes}"
        );
    }
    // repeated DEL, and DEL with an empty CNI_NETNS (containerd), both succeed
    let again = lab.cni("DEL", &a.container_id, &netns, "a", &conf).unwrap();
    assert!(again.success, "{again:?}");
    let empty = lab.cni("DEL", &a.container_id, "", "a", &conf).unwrap();
    assert!(empty.success, "{empty:?}");
    let never = lab.cni("DEL", "never-added", "", "x", &conf).unwrap();
    assert!(never.success, "{never:?}");
}

#[test]
fn add_is_idempotent_and_check_detects_a_removed_route_privileged() {
    if !root_or_skip("add_is_idempotent_and_check_detects_a_removed_route_privileged") {
        return;
    }
    let mut lab = lab("chk", |_| {});
    let a = lab.add_pod("a").expect("add a");
    let conf = lab.net_conf("1.0.0");
    let netns = a.netns.to_string_lossy().to_string();
    let again = lab.cni("ADD", &a.container_id, &netns, "a", &conf).unwrap();
    assert!(again.success, "{again:?}");
    let ips: Vec<String> = again.json().unwrap()["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        ips,
        a.ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "same addresses"
    );
    assert_eq!(endpoints(&lab).len(), 1);

    let mut check_conf = conf.clone();
    check_conf["prevResult"] = again.json().unwrap();
    let ok = lab
        .cni("CHECK", &a.container_id, &netns, "a", &check_conf)
        .unwrap();
    assert!(ok.success, "CHECK of a healthy pod: {ok:?}");

    let node = netns_name(&lab.node_netns);
    common::ip_out(&["-n", &node, "route", "del", &format!("{}/32", v4(&a.ips))]);
    let bad = lab
        .cni("CHECK", &a.container_id, &netns, "a", &check_conf)
        .unwrap();
    assert!(
        !bad.success,
        "CHECK must fail after the route went: {bad:?}"
    );
    let err = bad.json().unwrap();
    assert_eq!(err["code"], 103, "{err}");
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains(&v4(&a.ips).to_string()),
        "{err}"
    );
}

#[test]
fn hundred_concurrent_adds_get_distinct_addresses_privileged() {
    if !root_or_skip("hundred_concurrent_adds_get_distinct_addresses_privileged") {
        return;
    }
    let lab = lab("par", |_| {});
    let n = 100;
    let names: Vec<String> = (0..n).map(|i| format!("{}-p{i}", lab.name)).collect();
    for ns in &names {
        weft_lab::ip(&["netns", "add", ns]).unwrap();
    }
    let conf = lab.net_conf("1.0.0");
    let results = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let out = lab
                    .cni(
                        "ADD",
                        &format!("c{i}"),
                        &format!("/run/netns/{}", names[i]),
                        &format!("p{i}"),
                        &conf,
                    )
                    .unwrap();
                results.lock().unwrap().push(out);
            });
        }
    });
    let results = results.into_inner().unwrap();
    let mut seen = std::collections::HashSet::new();
    for out in &results {
        assert!(out.success, "{out:?}");
        for ip in out.json().unwrap()["ips"].as_array().unwrap() {
            assert!(
                seen.insert(ip["address"].as_str().unwrap().to_string()),
                "duplicate {ip}"
            );
        }
    }
    assert_eq!(seen.len(), 2 * n, "one v4 and one v6 each");
    assert_eq!(endpoints(&lab).len(), n);
    let check: weft_api::IpamCheckReport = api_get(&lab, weft_api::paths::IPAM_CHECK);
    assert!(check.is_clean(), "{check:?}");
}

#[test]
fn weftd_restart_keeps_pods_connected_and_restores_routes_privileged() {
    if !root_or_skip("weftd_restart_keeps_pods_connected_and_restores_routes_privileged") {
        return;
    }
    let mut lab = lab("rst", |_| {});
    let a = lab.add_pod("a").expect("add a");
    let b = lab.add_pod("b").expect("add b");
    let before = endpoints(&lab);
    lab.stop_weftd().unwrap();
    // the agent is gone, the pods keep talking: the data path is the kernel's
    tcp_check(&a.netns, &b.netns, v4(&b.ips), T).expect("pods talk while weftd is down");
    // damage the node while the agent is away: a host route disappears
    let node = netns_name(&lab.node_netns);
    ip_out(&["-n", &node, "route", "del", &format!("{}/32", v4(&b.ips))]);
    lab.start_weftd().unwrap();
    assert_eq!(endpoints(&lab), before, "endpoints survive the restart");
    tcp_check(&a.netns, &b.netns, v4(&b.ips), T).expect("the route was restored at start");
    tcp_check(&a.netns, &b.netns, v6(&b.ips), T).expect("v6 still fine");
    let check: weft_api::IpamCheckReport = api_get(&lab, weft_api::paths::IPAM_CHECK);
    assert!(check.is_clean(), "{check:?}");
    // the restarted agent is the one `down` stops (no agent outlives its lab)
    let pid = lab.weftd_pid.expect("weftd running");
    weft_lab::Lab::down(&lab.name).unwrap();
    assert!(!weft_lab::pid_alive(pid), "weftd {pid} outlived its lab");
}

#[test]
fn del_while_weftd_is_down_is_spooled_and_the_address_returns_after_quarantine_privileged() {
    if !root_or_skip(
        "del_while_weftd_is_down_is_spooled_and_the_address_returns_after_quarantine_privileged",
    ) {
        return;
    }
    let mut lab = lab("spl", |s| s.quarantine_seconds = 3);
    let a = lab.add_pod("a").expect("add a");
    let conf = lab.net_conf("1.0.0");
    let netns = a.netns.to_string_lossy().to_string();
    lab.stop_weftd().unwrap();

    // ADD with the agent away: code 11 naming the socket
    weft_lab::ip(&["netns", "add", &format!("{}-b", lab.name)]).unwrap();
    let add = lab
        .cni(
            "ADD",
            "cb",
            &format!("/run/netns/{}-b", lab.name),
            "b",
            &conf,
        )
        .unwrap();
    assert!(!add.success);
    let err = add.json().unwrap();
    assert_eq!(err["code"], 11, "{err}");
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains(&lab.socket().display().to_string()),
        "{err}"
    );

    // DEL with the agent away: spooled, success
    let del = lab.cni("DEL", &a.container_id, &netns, "a", &conf).unwrap();
    assert!(del.success, "{del:?}");
    let spooled: Vec<_> = std::fs::read_dir(lab.spool_dir()).unwrap().collect();
    assert_eq!(spooled.len(), 1, "one spooled DEL");

    lab.start_weftd().unwrap();
    let status: weft_api::AgentStatus = api_get(&lab, weft_api::paths::STATUS);
    assert_eq!(status.spool_replayed, 1);
    assert!(endpoints(&lab).is_empty());
    assert!(
        ipam(&lab).allocations.is_empty(),
        "address released by the replay"
    );
    assert_eq!(
        std::fs::read_dir(lab.spool_dir()).unwrap().count(),
        0,
        "spool emptied"
    );

    // the address rests in quarantine, then can be had again
    let addr = v4(&a.ips);
    let mut want = conf.clone();
    want["runtimeConfig"] = serde_json::json!({"ips": [format!("{addr}/32")]});
    let early = lab
        .cni(
            "ADD",
            "cc",
            &format!("/run/netns/{}-b", lab.name),
            "c",
            &want,
        )
        .unwrap();
    assert!(!early.success, "quarantined address handed out: {early:?}");
    assert_eq!(early.json().unwrap()["code"], 101);
    assert!(
        eventually(Duration::from_secs(8), || {
            lab.cni(
                "ADD",
                "cc",
                &format!("/run/netns/{}-b", lab.name),
                "c",
                &want,
            )
            .map(|o| o.success)
            .unwrap_or(false)
        }),
        "address came back after quarantine"
    );
}

#[test]
fn bad_input_is_a_clear_cni_error_and_changes_nothing_privileged() {
    if !root_or_skip("bad_input_is_a_clear_cni_error_and_changes_nothing_privileged") {
        return;
    }
    let lab = lab("bad", |_| {});
    weft_lab::ip(&["netns", "add", &format!("{}-x", lab.name)]).unwrap();
    let netns = format!("/run/netns/{}-x", lab.name);
    let node = netns_name(&lab.node_netns);
    let links_before = ip_out(&["-n", &node, "-o", "link", "show"]);
    let good = serde_json::to_vec(&lab.net_conf("1.0.0")).unwrap();
    let huge = {
        let mut c = lab.net_conf("1.0.0");
        c["padding"] = serde_json::Value::String("x".repeat(2 << 20));
        serde_json::to_vec(&c).unwrap()
    };
    let cases: Vec<(&str, Vec<u8>, &str, u64)> = vec![
        ("malformed json", b"{\"cniVersion\": ".to_vec(), "eth0", 6),
        (
            "wrong types",
            br#"{"cniVersion":"1.0.0","name":7,"type":"weft-cni"}"#.to_vec(),
            "eth0",
            7,
        ),
        (
            "unknown version",
            br#"{"cniVersion":"0.2.0","name":"n","type":"weft-cni"}"#.to_vec(),
            "eth0",
            1,
        ),
        ("oversized", huge, "eth0", 7),
        ("hostile ifname", good.clone(), "../../etc", 4),
        ("long ifname", good.clone(), "a234567890123456", 4),
        ("ifname with space", good.clone(), "eth 0", 4),
    ];
    for (what, conf, ifname, code) in cases {
        let out = weft_lab::cni_exec(
            &lab.cni_plugin(),
            &lab.bin_dir,
            &lab.node_netns,
            "ADD",
            "cbad",
            &netns,
            ifname,
            "",
            &conf,
        )
        .unwrap();
        assert!(!out.success, "{what}: accepted");
        let err: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{what}: stdout not a JSON error ({e}): {:?}", out.stdout));
        assert_eq!(err["code"], code, "{what}: {err}");
        assert!(
            !err["msg"].as_str().unwrap_or_default().is_empty(),
            "{what}: {err}"
        );
        assert!(!out.stderr.contains("panicked"), "{what}: {}", out.stderr);
    }
    assert!(endpoints(&lab).is_empty(), "nothing recorded");
    assert!(ipam(&lab).allocations.is_empty(), "nothing allocated");
    assert_eq!(
        ip_out(&["-n", &node, "-o", "link", "show"]).lines().count(),
        links_before.lines().count(),
        "no link made"
    );
}

#[test]
fn cni_gc_collects_attachments_the_runtime_no_longer_lists_privileged() {
    if !root_or_skip("cni_gc_collects_attachments_the_runtime_no_longer_lists_privileged") {
        return;
    }
    let mut lab = lab("gc", |s| {
        s.weftd_args.push("--gc-attachment-grace-seconds=1".into())
    });
    let keep = lab.add_pod("keep").expect("add keep");
    let gone = lab.add_pod("gone").expect("add gone");
    let mut conf = lab.net_conf("1.1.0");
    conf["cni.dev/valid-attachments"] =
        serde_json::json!([{"containerID": keep.container_id, "ifname": "eth0"}]);
    // within the grace period nothing is collected: the runtime's list may
    // predate an ADD that just finished
    let out = lab.cni("GC", "", "", "", &conf).unwrap();
    assert!(out.success, "{out:?}");
    assert_eq!(endpoints(&lab).len(), 2, "a fresh attachment was collected");
    // past it (created_at has whole seconds: > 1 s is sure after 2.1 s)
    std::thread::sleep(Duration::from_millis(2100));
    let out = lab.cni("GC", "", "", "", &conf).unwrap();
    assert!(out.success, "{out:?}");
    let eps = endpoints(&lab);
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].attachment.container_id, keep.container_id);
    let held: Vec<_> = ipam(&lab).allocations.iter().map(|a| a.address).collect();
    for ip in &gone.ips {
        assert!(!held.contains(ip), "{ip} of the collected pod still held");
    }
    // the live pod keeps working
    tcp_check(&lab.node_netns, &keep.netns, v4(&keep.ips), T).expect("kept pod reachable");
    // STATUS (CNI 1.1) says weftd is ready
    let status = lab
        .cni("STATUS", "", "", "", &lab.net_conf("1.1.0"))
        .unwrap();
    assert!(status.success, "{status:?}");
}

#[test]
fn orphan_veths_are_removed_when_weftd_starts_privileged() {
    if !root_or_skip("orphan_veths_are_removed_when_weftd_starts_privileged") {
        return;
    }
    let mut lab = lab("orph", |_| {});
    let a = lab.add_pod("a").expect("add a");
    lab.stop_weftd().unwrap();
    // a veth of weft's shape that no endpoint owns (a crash between link and record)
    let node = netns_name(&lab.node_netns);
    weft_lab::ip(&[
        "-n",
        &node,
        "link",
        "add",
        "weft0123456789a",
        "type",
        "veth",
        "peer",
        "name",
        "orphanpeer",
    ])
    .unwrap();
    // and a foreign veth weft must never touch
    weft_lab::ip(&[
        "-n", &node, "link", "add", "notweft0", "type", "veth", "peer", "name", "notweft1",
    ])
    .unwrap();
    lab.start_weftd().unwrap();
    let links = ip_out(&["-n", &node, "-o", "link", "show"]);
    assert!(!links.contains("weft0123456789a"), "orphan left: {links}");
    assert!(links.contains("notweft0"), "foreign link removed: {links}");
    let ep = endpoints(&lab)
        .into_iter()
        .next()
        .expect("live endpoint kept");
    assert!(
        links.contains(&ep.host_ifname),
        "live pod's veth removed: {links}"
    );
    tcp_check(&lab.node_netns, &a.netns, v4(&a.ips), T).expect("live pod reachable");
}
