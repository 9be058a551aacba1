//! The eBPF fast path in real namespaces: it carries pod traffic on one node
//! and across nodes, keeps NATed flows and shaped pods on the kernel path,
//! and goes away (or comes back, replacing the old programs) with the agent's
//! `--fastpath` switch.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use weft_api::{paths, AgentStatus, FastPathStatus};
use weft_datapath::bpf::{tcx_programs, TcxDirection};
use weft_datapath::netns::run_in;
use weft_lab::Lab;

const T: Duration = Duration::from_secs(5);

fn status_at(socket: &Path) -> FastPathStatus {
    api_get_at::<AgentStatus>(socket, paths::STATUS).fastpath
}

fn counter(s: &FastPathStatus, name: &str) -> u64 {
    *s.counters
        .get(name)
        .unwrap_or_else(|| panic!("no counter {name}: {s:?}"))
}

/// Waits until `want` pod addresses of the node behind `socket` are fast.
fn wait_fast(socket: &Path, want: usize) -> FastPathStatus {
    let mut last = status_at(socket);
    let ok = eventually(Duration::from_secs(10), || {
        last = status_at(socket);
        last.fast >= want
    });
    assert!(ok, "fast path never got {want} fast addresses: {last:?}");
    last
}

/// The weft programs attached with tcx in `netns`: (device, program).
/// Debian 12's bpftool predates tcx, so weft's own loader answers.
fn attached_programs(netns: &Path) -> Vec<(String, String)> {
    let links: serde_json::Value =
        serde_json::from_str(&ip_out(&["-n", &netns_name(netns), "-j", "link", "show"]))
            .expect("ip -j link");
    let devs: Vec<(u32, String)> = links
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            (
                l["ifindex"].as_u64().unwrap() as u32,
                l["ifname"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut progs: Vec<(String, String)> = run_in(netns, move || {
        let mut out = Vec::new();
        for (ifindex, dev) in devs {
            for (_, name) in tcx_programs(ifindex, TcxDirection::Ingress).expect("tcx query") {
                if name.starts_with("weft_") {
                    out.push((dev.clone(), name));
                }
            }
        }
        out
    })
    .expect("enter the netns");
    progs.sort();
    progs
}

#[test]
fn fast_path_carries_same_node_pod_traffic_privileged() {
    if !root_or_skip("fast_path_carries_same_node_pod_traffic_privileged") {
        return;
    }
    let mut lab = lab("fps", |_| {});
    let a = lab.add_pod("a").unwrap();
    let b = lab.add_pod("b").unwrap();
    let before = wait_fast(&lab.socket(), 4);
    assert_eq!(before.mode, "ebpf", "{before:?}");
    assert!(before.shaped.is_empty(), "{before:?}");

    for (ip_a, ip_b) in [(v4(&a.ips), v4(&b.ips)), (v6(&a.ips), v6(&b.ips))] {
        weft_lab::probe::tcp_check(&a.netns, &b.netns, ip_b, T).expect("a → b");
        weft_lab::probe::tcp_check(&b.netns, &a.netns, ip_a, T).expect("b → a");
    }
    // the node still reaches its pods (kernel path) and they it
    weft_lab::probe::tcp_check(&lab.node_netns, &a.netns, v4(&a.ips), T).expect("node → a");

    let after = status_at(&lab.socket());
    // 4 connections, each at least SYN, ACK + data, FIN in both directions
    assert!(
        counter(&after, "local") >= counter(&before, "local") + 16,
        "pod-to-pod traffic did not take the fast path: {before:?} → {after:?}"
    );

    // one program per pod veth, none elsewhere on a single node
    let progs = attached_programs(&lab.node_netns);
    assert_eq!(progs.len(), 2, "{progs:?}");
    assert!(progs
        .iter()
        .all(|(dev, name)| dev.starts_with("weft") && name == "weft_from_pod"));
}

#[test]
fn natted_flows_and_shaped_pods_stay_on_the_kernel_path_privileged() {
    if !root_or_skip("natted_flows_and_shaped_pods_stay_on_the_kernel_path_privileged") {
        return;
    }
    let mut lab = lab("fpn", |_| {});
    let client = lab.add_pod("client").unwrap();
    // through the reference plugins: web gets a host port, slow gets shaping
    let web = ChainPod::add(
        &lab,
        "web",
        serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        serde_json::json!({"portMappings": [{"hostPort": 18090, "containerPort": 80, "protocol": "tcp"}]}),
    );
    // 8 Mbit/s each way, 64 KiB bursts
    let slow = ChainPod::add(
        &lab,
        "slow",
        serde_json::json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
        serde_json::json!({"bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 65_536,
            "egressRate": 8_000_000, "egressBurst": 65_536}}),
    );

    // client's and web's addresses turn fast; the shaped pod's never do
    let st = wait_fast(&lab.socket(), 4);
    std::thread::sleep(Duration::from_secs(2));
    let st2 = status_at(&lab.socket());
    assert_eq!(
        st2.fast, 4,
        "the shaped pod must not be fast: {st:?} {st2:?}"
    );
    assert_eq!(st2.shaped, vec![slow.host_if.clone()], "{st2:?}");

    // the host port from another pod on the node: DNAT to web, whose replies
    // conntrack must un-NAT, so they stay on the kernel path
    let listener = weft_lab::probe::listen_on(&web.netns, SocketAddr::new(web.ip, 80)).unwrap();
    let before = status_at(&lab.socket());
    weft_lab::probe::tcp_roundtrip_to(
        &client.netns,
        &listener,
        SocketAddr::new(lab.node_underlay_v4, 18090),
        T,
    )
    .expect("client → node:18090 → web:80 and back");
    drop(listener);
    let after = status_at(&lab.socket());
    assert!(
        counter(&after, "pass_tracked") > counter(&before, "pass_tracked"),
        "web's NATed replies were not recognised: {before:?} → {after:?}"
    );
    // and a plain flow between the same two pods is fast
    weft_lab::probe::tcp_check(&client.netns, &web.netns, web.ip, T).expect("client → web");
    let plain = status_at(&lab.socket());
    assert!(
        counter(&plain, "local") > counter(&after, "local"),
        "{plain:?}"
    );

    // shaping holds between pods: 256 KiB at 8 Mbit/s takes about 0.2 s past
    // the burst; unshaped, it takes a few milliseconds
    let elapsed = blast(&client.netns, &slow.netns, slow.ip, 256 * 1024);
    assert!(
        elapsed >= Duration::from_millis(150),
        "256 KiB into the shaped pod took {elapsed:?}: shaping was bypassed"
    );
    let end = status_at(&lab.socket());
    assert_eq!(
        counter(&end, "local"),
        counter(&plain, "local"),
        "nothing to or from the shaped pod may take the fast path: {plain:?} → {end:?}"
    );
    assert!(
        counter(&end, "pass_slow_endpoint") > counter(&plain, "pass_slow_endpoint"),
        "{end:?}"
    );

    web.del(&lab);
    slow.del(&lab);
}

/// A pod added through weft-cni and one reference plugin, as libcni would.
struct ChainPod {
    _ns: NetnsGuard,
    netns: PathBuf,
    name: String,
    conflist: serde_json::Value,
    rc: serde_json::Value,
    result: serde_json::Value,
    ip: IpAddr,
    host_if: String,
}

impl ChainPod {
    fn add(lab: &Lab, name: &str, plugin: serde_json::Value, rc: serde_json::Value) -> ChainPod {
        let ns_name = format!("{}-{name}", lab.name);
        weft_lab::ip(&["netns", "add", &ns_name]).unwrap();
        let guard = NetnsGuard(ns_name.clone());
        weft_lab::ip(&["-n", &ns_name, "link", "set", "lo", "up"]).unwrap();
        let netns = PathBuf::from(format!("/run/netns/{ns_name}"));
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "weft-chain",
            "plugins": [
                {"type": "weft-cni", "agentSocket": lab.socket(), "spoolDir": lab.spool_dir()},
                plugin
            ]
        });
        let ns = netns.to_str().unwrap();
        let result = lab
            .run_chain("ADD", name, ns, name, &conflist, &rc, None)
            .expect("chain ADD");
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.parse().ok())
            .expect("an IPv4 address");
        let host_if = result["interfaces"][0]["name"]
            .as_str()
            .unwrap()
            .to_string();
        ChainPod {
            _ns: guard,
            netns,
            name: name.into(),
            conflist,
            rc,
            result,
            ip,
            host_if,
        }
    }

    fn del(&self, lab: &Lab) {
        let ns = self.netns.to_str().unwrap();
        lab.run_chain(
            "DEL",
            &self.name,
            ns,
            &self.name,
            &self.conflist,
            &self.rc,
            Some(&self.result),
        )
        .expect("chain DEL");
    }
}

/// Sends `bytes` from `from` to a listener on `ip` in `to`; returns how long
/// the receiver took to get them all.
fn blast(from: &Path, to: &Path, ip: IpAddr, bytes: usize) -> Duration {
    let listener = weft_lab::probe::listen_in(to, ip).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut stream = run_in(from, move || TcpStream::connect_timeout(&addr, T))
        .unwrap()
        .expect("connect");
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![7u8; 16 * 1024];
        for _ in 0..bytes / chunk.len() {
            stream.write_all(&chunk).unwrap();
        }
    });
    let t0 = Instant::now();
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while got < bytes {
        let n = conn.read(&mut buf).expect("read within 20 s");
        assert!(n > 0, "sender closed early");
        got += n;
    }
    let elapsed = t0.elapsed();
    writer.join().unwrap();
    elapsed
}

struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = weft_lab::ip(&["netns", "del", &self.0]);
    }
}

#[test]
fn fast_path_follows_the_agent_switch_privileged() {
    if !root_or_skip("fast_path_follows_the_agent_switch_privileged") {
        return;
    }
    let mut lab = lab("fpo", |_| {});
    let a = lab.add_pod("a").unwrap();
    let b = lab.add_pod("b").unwrap();
    wait_fast(&lab.socket(), 4);
    let first = attached_programs(&lab.node_netns);
    assert_eq!(first.len(), 2, "{first:?}");

    // off: the programs go, the kernel path carries the traffic
    restart_with(&mut lab, &["--fastpath", "off"]);
    let st = status_at(&lab.socket());
    assert_eq!(st.mode, "kernel", "{st:?}");
    assert!(st.counters.is_empty(), "{st:?}");
    assert!(attached_programs(&lab.node_netns).is_empty());
    weft_lab::probe::tcp_check(&a.netns, &b.netns, v4(&b.ips), T).expect("a → b, kernel path");

    // back on: new programs, one per hook, the pods fast at once (settled)
    restart_with(&mut lab, &["--fastpath", "on"]);
    let st = status_at(&lab.socket());
    assert_eq!((st.mode.as_str(), st.fast), ("ebpf", 4), "{st:?}");
    assert_eq!(attached_programs(&lab.node_netns), first);

    // a restart replaces the programs in place: still one per hook, and
    // traffic flows through the new ones
    restart_with(&mut lab, &["--fastpath", "on"]);
    assert_eq!(attached_programs(&lab.node_netns), first);
    weft_lab::probe::tcp_check(&a.netns, &b.netns, v6(&b.ips), T).expect("a → b");
    assert!(counter(&status_at(&lab.socket()), "local") > 0);
}

fn restart_with(lab: &mut Lab, args: &[&str]) {
    lab.stop_weftd().unwrap();
    lab.weftd_args
        .retain(|a| !a.starts_with("--fastpath") && a != "off" && a != "on");
    lab.weftd_args.extend(args.iter().map(|s| s.to_string()));
    lab.start_weftd().unwrap();
}

#[test]
fn fast_path_carries_cross_node_traffic_privileged() {
    if !root_or_skip("fast_path_carries_cross_node_traffic_privileged") {
        return;
    }
    for routing in ["overlay", "native"] {
        let mut lab = lab("fpx", |s| {
            s.nodes = 2;
            s.etcd_members = 1;
            s.routing = routing.into();
        });
        let a = lab.add_pod_on("a", 0).unwrap();
        let b = lab.add_pod_on("b", 1).unwrap();
        let sockets: Vec<PathBuf> = lab.nodes().iter().map(|n| n.socket.clone()).collect();
        let before: Vec<FastPathStatus> = sockets.iter().map(|s| wait_fast(s, 2)).collect();
        for (ip_a, ip_b) in [(v4(&a.ips), v4(&b.ips)), (v6(&a.ips), v6(&b.ips))] {
            weft_lab::probe::tcp_check(&a.netns, &b.netns, ip_b, T)
                .unwrap_or_else(|e| panic!("{routing}: a → b: {e:#}"));
            weft_lab::probe::tcp_check(&b.netns, &a.netns, ip_a, T)
                .unwrap_or_else(|e| panic!("{routing}: b → a: {e:#}"));
        }
        for (i, s) in sockets.iter().enumerate() {
            let after = status_at(s);
            assert!(
                counter(&after, "remote") >= counter(&before[i], "remote") + 8,
                "{routing}: node {i} sent nothing towards the other node on the fast path: {after:?}"
            );
            assert!(
                counter(&after, "local") >= counter(&before[i], "local") + 8,
                "{routing}: node {i} delivered nothing from the other node on the fast path: {after:?}"
            );
        }
        // the remote device carries weft_to_pod
        let progs = attached_programs(&lab.node(0).unwrap().netns);
        assert!(
            progs.iter().any(|(_, n)| n == "weft_to_pod"),
            "{routing}: {progs:?}"
        );
    }
}

/// A node's own traffic to a pod on another node (kubelet probes, hostNetwork
/// pods) goes through conntrack on both nodes: were the SYN delivered by the
/// fast path past the receiving node's conntrack, the pod's reply would look
/// like a new flow from a pod to outside the pools and be masqueraded, and
/// the client, seeing it come from the node's address, would reset it.
#[test]
fn a_node_reaches_pods_on_other_nodes_with_the_fast_path_on_privileged() {
    if !root_or_skip("a_node_reaches_pods_on_other_nodes_with_the_fast_path_on_privileged") {
        return;
    }
    for routing in ["overlay", "native"] {
        let mut lab = lab("fph", |s| {
            s.nodes = 2;
            s.etcd_members = 1;
            s.routing = routing.into();
        });
        let a = lab.add_pod_on("a", 0).unwrap();
        let b = lab.add_pod_on("b", 1).unwrap();
        let node0 = lab.node(0).unwrap().netns.clone();
        let sockets: Vec<PathBuf> = lab.nodes().iter().map(|n| n.socket.clone()).collect();
        for s in &sockets {
            wait_fast(s, 2);
        }
        for ip_b in [v4(&b.ips), v6(&b.ips)] {
            // the pod sees the node's own address (no NAT on the way in),
            // and the connection carries data both ways after the handshake
            let seen = weft_lab::probe::tcp_peer(&node0, &b.netns, ip_b, T)
                .unwrap_or_else(|e| panic!("{routing}: node 0 → b {ip_b}: {e:#}"));
            assert!(
                !b.ips.contains(&seen) && !a.ips.contains(&seen),
                "{routing}: b saw {seen}, not node 0's address"
            );
            let took = blast(&node0, &b.netns, ip_b, 1 << 20);
            assert!(took < Duration::from_secs(20), "{routing}: {took:?}");
        }
        // and pods keep the fast path between nodes
        let before = status_at(&sockets[1]);
        weft_lab::probe::tcp_check(&a.netns, &b.netns, v4(&b.ips), T)
            .unwrap_or_else(|e| panic!("{routing}: a → b: {e:#}"));
        assert!(
            counter(&status_at(&sockets[1]), "local") > counter(&before, "local"),
            "{routing}: pod traffic from the other node left the fast path"
        );
    }
}
