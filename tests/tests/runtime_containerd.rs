//! weft under a real runtime: containerd 1.6 driven by `ctr run --cni`.
//!
//! A private containerd (own config, root, state and socket; no CRI plugin)
//! runs in the lab's node namespace and a private mount namespace whose
//! /etc/cni/net.d, /opt/cni/bin (weft-cni) and /var/lib/cni are the test's
//! own. Two busybox containers from a hand-built OCI image get their network
//! from weft: what weft records must match what the containers see, TCP
//! works between them over IPv4 and IPv6, and stopping them (DEL, which
//! containerd sends with an empty CNI_NETNS) releases everything. Nothing is
//! left on the host afterwards.

mod common;
mod containerd_support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use containerd_support::{Containerd, CTR_NAMESPACE};

const PAGE: &str = "weft-under-containerd";

/// weft-cni alone, in a conflist (what ctr loads first from /etc/cni/net.d).
fn weft_only(lab: &weft_lab::Lab) -> serde_json::Value {
    let mut plugin = lab.net_conf("1.0.0");
    let version = plugin["cniVersion"].take();
    let name = plugin["name"].take();
    let obj = plugin.as_object_mut().unwrap();
    obj.remove("cniVersion");
    obj.remove("name");
    serde_json::json!({"cniVersion": version, "name": name, "plugins": [plugin]})
}

/// `ctr run` logs a failed DEL (or any other teardown error) and still
/// exits; its log must hold no error.
fn assert_run_log_clean(ctd: &Containerd, id: &str) {
    let log = ctd.run_log(id);
    assert!(
        !log.contains("level=error"),
        "ctr run {id} logged an error: {log}"
    );
}

/// The global addresses on eth0 (`ip addr show eth0` inside a container).
fn container_addrs(ip_addr: &str) -> BTreeSet<String> {
    ip_addr
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("inet") && l.contains("scope global"))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

fn container_mac(ip_addr: &str) -> Option<String> {
    ip_addr
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("link/ether "))
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_string)
}

/// Waits until `ctr run` of `id` has ADDed (weft knows the endpoint) and the
/// task runs; returns the endpoint and the task's host pid.
fn wait_started(
    lab: &weft_lab::Lab,
    ctd: &mut Containerd,
    id: &str,
) -> (weft_api::EndpointInfo, u32) {
    let cni_id = format!("{CTR_NAMESPACE}-{id}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(end) = ctd.run_ended(id) {
            panic!("{end}\n{}", ctd.diagnostics());
        }
        let ep = endpoints(lab)
            .into_iter()
            .find(|e| e.attachment.container_id == cni_id);
        if let Some(ep) = ep {
            // the endpoint of this task, not one an earlier run left behind
            // (a new task exists before its ADD has replaced that record)
            if let Some(pid) = ctd.running_task_pid(id).expect("ctr task ls") {
                if ep.netns == format!("/proc/{pid}/ns/net") {
                    return (ep, pid);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "container {id} not up with a weft endpoint within 15 s\n{}",
            ctd.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What weft recorded for a container equals what the container sees.
fn assert_agree(ctd: &mut Containerd, id: &str, ep: &weft_api::EndpointInfo, task_pid: u32) {
    assert_eq!(ep.attachment.ifname, "eth0", "{ep:?}");
    // ctr hands libcni `<namespace>-<id>` and the task's netns by /proc path
    assert_eq!(ep.attachment.container_id, format!("{CTR_NAMESPACE}-{id}"));
    assert_eq!(ep.netns, format!("/proc/{task_pid}/ns/net"), "{ep:?}");
    let (ok, seen) = ctd
        .exec(id, &["ip", "addr", "show", "eth0"])
        .expect("ctr task exec");
    assert!(ok, "ip addr in {id}: {seen}");
    let weft: BTreeSet<String> = ep.ips.iter().map(ToString::to_string).collect();
    assert_eq!(ep.ips.len(), 2, "dual-stack endpoint: {ep:?}");
    assert_eq!(
        container_addrs(&seen),
        weft,
        "addresses in {id} vs weft:\n{seen}"
    );
    assert_eq!(
        container_mac(&seen).as_deref(),
        Some(ep.mac.as_str()),
        "{seen}"
    );
    let (ok, routes) = ctd
        .exec(id, &["ip", "route", "show", "default"])
        .expect("exec");
    assert!(
        ok && routes.contains("via 169.254.1.1"),
        "default route in {id}: {routes}"
    );
}

/// An HTTP GET from inside container `from` to `addr:8080`, retried while
/// the server may still be starting; returns the body's last line.
fn http_get(ctd: &mut Containerd, from: &str, addr: IpAddr) -> String {
    let script = format!(r#"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 {addr} 8080"#);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out) = ctd.exec(from, &["sh", "-c", &script]).expect("exec nc");
        if ok && out.contains("200 OK") {
            return out.lines().last().unwrap_or_default().trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "GET http://{addr}:8080/ from {from}: {out}\n{}",
            ctd.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn containerd_ctr_run_cni_add_traffic_and_del_privileged() {
    if !root_or_skip("containerd_ctr_run_cni_add_traffic_and_del_privileged") {
        return;
    }
    containerd_support::require_tools();
    let started = Instant::now();
    let lab = lab("ctr", |_| {});
    let mut ctd = Containerd::start(&lab, &weft_only(&lab), &[]).expect("private containerd");
    let tar = containerd_support::build_busybox_image(&ctd.dir, PAGE).expect("OCI image");
    let imported = ctd.import(&tar).expect("ctr images import");
    assert!(imported.contains(containerd_support::IMAGE), "{imported}");
    eprintln!("containerd up, image imported: {:?}", started.elapsed());

    let srv = format!("{}-srv", lab.name);
    let cli = format!("{}-cli", lab.name);
    ctd.run(&srv, &["httpd", "-f", "-p", "8080", "-h", "/www"])
        .expect("ctr run server");
    let (srv_ep, srv_pid) = wait_started(&lab, &mut ctd, &srv);
    ctd.run(&cli, &["sleep", "120"]).expect("ctr run client");
    let (cli_ep, cli_pid) = wait_started(&lab, &mut ctd, &cli);
    eprintln!("both containers up: {:?}", started.elapsed());

    assert_agree(&mut ctd, &srv, &srv_ep, srv_pid);
    assert_agree(&mut ctd, &cli, &cli_ep, cli_pid);
    let all: Vec<IpAddr> = srv_ep
        .ips
        .iter()
        .chain(&cli_ep.ips)
        .map(|n| n.addr())
        .collect();
    assert_eq!(
        all.iter().collect::<BTreeSet<_>>().len(),
        4,
        "distinct addresses: {all:?}"
    );
    let held: BTreeSet<IpAddr> = ipam(&lab).allocations.iter().map(|a| a.address).collect();
    assert!(all.iter().all(|a| held.contains(a)), "{held:?} vs {all:?}");

    // what ctr sent on ADD: the task's netns by /proc path, and (ctr, unlike
    // the CRI plugin) no CNI_ARGS at all, so no pod identity
    let adds: Vec<_> = ctd
        .cni_calls()
        .into_iter()
        .filter(|c| c.command == "ADD")
        .collect();
    eprintln!("ADDs as weft-cni saw them: {adds:?}");
    assert_eq!(adds.len(), 2, "{adds:?}");
    for (c, pid) in adds.iter().zip([srv_pid, cli_pid]) {
        assert_eq!(c.netns, format!("/proc/{pid}/ns/net"), "{c:?}");
        assert_eq!(c.ifname, "eth0", "{c:?}");
    }

    // TCP from the client container to the server container's weft addresses
    let srv_ips: Vec<IpAddr> = srv_ep.ips.iter().map(|n| n.addr()).collect();
    for addr in [v4(&srv_ips), v6(&srv_ips)] {
        assert_eq!(http_get(&mut ctd, &cli, addr), PAGE, "via {addr}");
    }
    eprintln!("traffic checked: {:?}", started.elapsed());

    // stopping the containers sends DEL (empty CNI_NETNS) and releases all
    for id in [&srv, &cli] {
        ctd.stop(id, Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("stopping {id}: {e:#}\n{}", ctd.diagnostics()));
    }
    for id in [&srv, &cli] {
        assert_run_log_clean(&ctd, id);
    }
    let dels: Vec<_> = ctd
        .cni_calls()
        .into_iter()
        .filter(|c| c.command == "DEL")
        .collect();
    eprintln!("DELs as weft-cni saw them: {dels:?}");
    assert_eq!(dels.len(), 2, "one DEL per container: {dels:?}");
    for c in &dels {
        assert_eq!(c.netns, "", "containerd's DEL carries no netns: {c:?}");
        assert!(
            [&srv, &cli]
                .iter()
                .any(|id| c.container_id == format!("{CTR_NAMESPACE}-{id}")),
            "{c:?}"
        );
    }
    // `ctr run` returns only after DEL: weft's state is clean at once
    let eps = endpoints(&lab);
    assert!(eps.is_empty(), "endpoints after DEL: {eps:?}");
    let held: BTreeSet<IpAddr> = ipam(&lab).allocations.iter().map(|a| a.address).collect();
    assert!(
        all.iter().all(|a| !held.contains(a)),
        "addresses still allocated after DEL: {held:?}"
    );
    let node = netns_name(&lab.node_netns);
    for host_if in [&srv_ep.host_ifname, &cli_ep.host_ifname] {
        assert!(
            eventually(Duration::from_secs(5), || !ip_out(&[
                "-n", &node, "link", "show"
            ])
            .contains(host_if.as_str())),
            "{host_if} still in the node namespace"
        );
    }
    let cache = ctd.cached_results();
    assert!(
        cache.iter().all(|n| !n.contains(&lab.name)),
        "libcni result cache not cleared: {cache:?}"
    );
    let containers = ctd.ctr_ok(&["containers", "ls", "-q"]).expect("ctr c ls");
    assert!(
        containers.trim().is_empty(),
        "--rm left containers: {containers}"
    );

    // the private containerd goes away without a trace
    let mnt_dir = ctd.dir.clone();
    let left = ctd.shutdown();
    assert!(left.is_empty(), "left behind: {left:#?}");
    let findmnt = std::process::Command::new("findmnt")
        .args(["-rn"])
        .output()
        .expect("findmnt");
    let findmnt = String::from_utf8_lossy(&findmnt.stdout);
    assert!(
        !findmnt.contains(&*mnt_dir.to_string_lossy()) && !findmnt.contains("weft-ctr-shadow"),
        "{findmnt}"
    );
    assert!(!mnt_dir.exists());
    eprintln!("done in {:?}", started.elapsed());
}

/// The conflist `weft install` ships (weft-cni, then the reference portmap)
/// under ctr: ADD and DEL run through the whole chain.
#[test]
fn containerd_runs_the_shipped_conflist_chain_privileged() {
    if !root_or_skip("containerd_runs_the_shipped_conflist_chain_privileged") {
        return;
    }
    containerd_support::require_tools();
    let started = Instant::now();
    let lab = lab("ctc", |_| {});
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/10-weft.conflist");
    let mut conflist: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shipped).expect("deploy/10-weft.conflist"))
            .expect("shipped conflist parses");
    assert_eq!(conflist["plugins"][0]["type"], "weft-cni", "{conflist}");
    let weft = &mut conflist["plugins"][0];
    weft["agentSocket"] = lab.socket().to_string_lossy().into();
    weft["spoolDir"] = lab.spool_dir().to_string_lossy().into();
    let chained: Vec<String> = conflist["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["type"].as_str())
        .filter(|t| *t != "weft-cni")
        .map(str::to_string)
        .collect();
    let chained: Vec<&str> = chained.iter().map(String::as_str).collect();
    let mut ctd = Containerd::start(&lab, &conflist, &chained).expect("private containerd");
    let tar = containerd_support::build_busybox_image(&ctd.dir, PAGE).expect("OCI image");
    ctd.import(&tar).expect("ctr images import");

    let web = format!("{}-web", lab.name);
    ctd.run(&web, &["httpd", "-f", "-p", "8080", "-h", "/www"])
        .expect("ctr run");
    let (ep, pid) = wait_started(&lab, &mut ctd, &web);
    assert_eq!(ep.network, conflist["name"], "{ep:?}");
    assert_agree(&mut ctd, &web, &ep, pid);
    // the page is served on the container's own weft address
    let ips: Vec<IpAddr> = ep.ips.iter().map(|n| n.addr()).collect();
    assert_eq!(http_get(&mut ctd, &web, v4(&ips)), PAGE);

    ctd.stop(&web, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("stopping {web}: {e:#}\n{}", ctd.diagnostics()));
    assert_run_log_clean(&ctd, &web);
    let eps = endpoints(&lab);
    assert!(eps.is_empty(), "endpoints after DEL: {eps:?}");
    let held: BTreeSet<IpAddr> = ipam(&lab).allocations.iter().map(|a| a.address).collect();
    assert!(ips.iter().all(|a| !held.contains(a)), "{held:?}");
    let left = ctd.shutdown();
    assert!(left.is_empty(), "left behind: {left:#?}");
    eprintln!("done in {:?}", started.elapsed());
}

/// Two containerd habits weft must absorb: DEL while weftd is away (weft-cni
/// spools it; weftd replays it at start, with the empty CNI_NETNS ctr sent),
/// and `ctr run -d`, which never sends DEL at all (weftd forgets the
/// endpoint at its next start, when /proc/<pid>/ns/net is gone). The
/// container that stayed keeps its address and network across the restart.
#[test]
fn containerd_del_while_weftd_is_down_and_detached_runs_are_reclaimed_privileged() {
    if !root_or_skip(
        "containerd_del_while_weftd_is_down_and_detached_runs_are_reclaimed_privileged",
    ) {
        return;
    }
    containerd_support::require_tools();
    let started = Instant::now();
    let mut lab = lab("ctw", |_| {});
    let mut ctd = Containerd::start(&lab, &weft_only(&lab), &[]).expect("private containerd");
    let tar = containerd_support::build_busybox_image(&ctd.dir, PAGE).expect("OCI image");
    ctd.import(&tar).expect("ctr images import");

    let web = format!("{}-web", lab.name);
    let gone = format!("{}-gone", lab.name);
    let det = format!("{}-det", lab.name);
    ctd.run(&web, &["httpd", "-f", "-p", "8080", "-h", "/www"])
        .expect("ctr run web");
    let (web_ep, web_pid) = wait_started(&lab, &mut ctd, &web);
    ctd.run(&gone, &["sleep", "120"]).expect("ctr run gone");
    let (gone_ep, _) = wait_started(&lab, &mut ctd, &gone);
    ctd.run_detached(&det, &["sleep", "120"])
        .expect("ctr run -d det");
    let (det_ep, _) = wait_started(&lab, &mut ctd, &det);

    lab.stop_weftd().expect("stop weftd");
    // DEL with weftd down: weft-cni spools it and reports success to ctr
    ctd.stop(&gone, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("stopping {gone}: {e:#}\n{}", ctd.diagnostics()));
    assert_run_log_clean(&ctd, &gone);
    let spooled = std::fs::read_dir(lab.spool_dir())
        .map(|rd| rd.count())
        .unwrap_or(0);
    assert_eq!(spooled, 1, "the DEL is spooled\n{}", ctd.diagnostics());
    // the detached container goes without any DEL
    ctd.kill_and_remove(&det).expect("kill and remove det");
    let det_cni = format!("{CTR_NAMESPACE}-{det}");
    assert!(
        !ctd.cni_calls()
            .iter()
            .any(|c| c.command == "DEL" && c.container_id == det_cni),
        "ctr sent a DEL for a detached run after all: {:?}",
        ctd.cni_calls()
    );

    lab.start_weftd().expect("restart weftd");
    let status: weft_api::AgentStatus = api_get(&lab, weft_api::paths::STATUS);
    assert_eq!(status.spool_replayed, 1, "{status:?}");
    let eps = endpoints(&lab);
    assert_eq!(eps.len(), 1, "only {web} is left: {eps:?}");
    assert_eq!(eps[0], web_ep, "{web} kept its endpoint across the restart");
    let held: BTreeSet<IpAddr> = ipam(&lab).allocations.iter().map(|a| a.address).collect();
    let web_ips: BTreeSet<IpAddr> = web_ep.ips.iter().map(|n| n.addr()).collect();
    assert_eq!(
        held, web_ips,
        "{gone} and {det} released their addresses ({gone_ep:?}, {det_ep:?})"
    );
    assert_agree(&mut ctd, &web, &web_ep, web_pid);

    // a new container after the restart reaches the one that stayed
    let cli = format!("{}-cli", lab.name);
    ctd.run(&cli, &["sleep", "120"]).expect("ctr run cli");
    wait_started(&lab, &mut ctd, &cli);
    let web_v: Vec<IpAddr> = web_ips.iter().copied().collect();
    for addr in [v4(&web_v), v6(&web_v)] {
        assert_eq!(http_get(&mut ctd, &cli, addr), PAGE, "via {addr}");
    }

    // `ctr run -d` again while weftd runs, then the same name once more:
    // weft's record of the first run (never DELed) names a netns that is
    // gone, so the new ADD replaces it instead of refusing the container
    ctd.run_detached(&det, &["sleep", "120"])
        .expect("ctr run -d det again");
    let (first, _) = wait_started(&lab, &mut ctd, &det);
    ctd.kill_and_remove(&det).expect("kill and remove det");
    ctd.run(&det, &["sleep", "120"])
        .expect("ctr run det, same name");
    let (second, second_pid) = wait_started(&lab, &mut ctd, &det);
    assert_ne!(first.netns, second.netns);
    assert_agree(&mut ctd, &det, &second, second_pid);
    let held: BTreeSet<IpAddr> = ipam(&lab).allocations.iter().map(|a| a.address).collect();
    for ip in &first.ips {
        assert!(
            second.ips.contains(ip) || !held.contains(&ip.addr()),
            "the first run's {ip} leaked: {held:?}"
        );
    }

    for id in [&web, &cli, &det] {
        ctd.stop(id, Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("stopping {id}: {e:#}\n{}", ctd.diagnostics()));
        assert_run_log_clean(&ctd, id);
    }
    assert!(endpoints(&lab).is_empty());
    assert!(ipam(&lab).allocations.is_empty());
    let left = ctd.shutdown();
    assert!(left.is_empty(), "left behind: {left:#?}");
    eprintln!("done in {:?}", started.elapsed());
}
