//! `weft bench dataplane`: pod-to-pod throughput and latency through weft,
//! side by side with the kernel's own limit, in one run.
//!
//! Five cases, each a client namespace and a server namespace:
//! 1. raw veth: two namespaces joined by one plain veth pair;
//! 2. weft same-node: two pods on one lab node;
//! 3. raw VXLAN: two namespaces, each with a VXLAN device (static FDB and
//!    neighbour, no learning) over a veth underlay joining them;
//! 4. weft overlay: pods on two nodes of a lab with routing "overlay";
//! 5. weft native: pods on two nodes of a lab with routing "native";
//! 6. raw VXLAN, fab: as 3, but the underlay crosses the overlay lab's
//!    fabric bridge like the lab nodes' traffic does; the overlay target is
//!    set against this one, so weft is not charged for the lab's switch;
//! 7. and 8. weft same-node and overlay again, in a lab whose agents run
//!    with `--fastpath off`: the kernel path alone, for the eBPF path's gain.
//!
//! The weft cases start once every pod of their lab is on the eBPF fast
//! path (or the agent reports the kernel path), so no measured flow began
//! before its pods turned fast; each case records how it was forwarded.
//!
//! Per case and round: iperf3 throughput with 1 and 4 streams, and the
//! latency of small TCP request/response round trips over one connection,
//! timed in-process. Rounds interleave the cases (in a rotating order), so a
//! shared machine's drift hits every case alike; the report gives medians
//! and min–max over rounds, and per-round paired ratios weft / kernel.
//!
//! Every namespace the bench makes starts with the run's name; all of them,
//! both labs and the iperf3 servers (ended by their pids) are removed at the
//! end, also on error. Traffic only flows between these namespaces.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use weft_datapath::netns::{run_in, spawn_in};

use weft_lab::{ip, Lab, LabSpec};

use crate::chart::{Bar, Chart, Panel, BLUE, GREY, LIGHT_BLUE};
use crate::report::Machine;

/// The TCP port iperf3 servers listen on (each in its own namespace).
const IPERF_PORT: u16 = 5201;

#[derive(Debug, Clone)]
pub struct DataplaneSpec {
    /// Prefix of every namespace and lab the run makes (keep it short: lab
    /// names are at most 24 characters with their suffix).
    pub name: String,
    pub bin_dir: PathBuf,
    /// Rounds; each runs every case once.
    pub rounds: usize,
    /// iperf3 `-t`, seconds per throughput test.
    pub seconds: u32,
    /// One-byte request/response round trips per latency test.
    pub echoes: usize,
}

/// Median and spread of one metric over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Spread {
    pub fn of(samples: &[f64]) -> Spread {
        let mut s: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
        s.sort_by(f64::total_cmp);
        let median = match s.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => s[n / 2],
            n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        };
        Spread {
            median,
            min: s.first().copied().unwrap_or(f64::NAN),
            max: s.last().copied().unwrap_or(f64::NAN),
            samples: samples.to_vec(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub case: String,
    /// What the client and the server are, and the path between them.
    pub path: String,
    /// The client's interface MTU.
    pub mtu: u32,
    /// How weft forwarded it: "ebpf" or "kernel" (the agent's report); "-"
    /// for the kernel-only baselines.
    pub forwarding: String,
    pub gbps_1: Spread,
    pub gbps_4: Spread,
    pub rtt_p50_us: Spread,
    pub rtt_p99_us: Spread,
}

/// weft / kernel for one metric: per-round paired ratios.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub name: String,
    pub metric: String,
    pub ratio: Spread,
    /// The target, as a bound on the median ratio (throughput: at least,
    /// latency: at most); None when the issue sets none.
    pub target: Option<f64>,
    pub higher_is_better: bool,
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DataplaneReport {
    /// When and where it ran.
    #[serde(flatten)]
    pub machine: Machine,
    pub rounds: usize,
    pub seconds: u32,
    pub echoes: usize,
    /// The CPU that client and server of the 1-stream tests and of the round
    /// trips are pinned to (4-stream tests are not pinned).
    pub pinned_cpu: usize,
    pub cases: Vec<CaseResult>,
    pub ratios: Vec<Ratio>,
    pub wall_seconds: f64,
}

/// One measured pair: a client and a server namespace, the server's address.
struct Case {
    label: &'static str,
    path: &'static str,
    forwarding: String,
    client: PathBuf,
    server: PathBuf,
    addr: IpAddr,
}

/// Everything the run made that must go: namespaces, labs, iperf3 servers.
/// Dropped on every way out of [`run`].
#[derive(Default)]
struct Cleanup {
    netns: Vec<String>,
    labs: Vec<String>,
    servers: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.servers {
            // by pid: Child::kill signals exactly this child
            let _ = c.kill();
            let _ = c.wait();
        }
        for l in &self.labs {
            let _ = Lab::down(l);
        }
        for n in &self.netns {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Two namespaces joined by a veth pair `eth0`–`eth0`, 10.201.0.1/.2.
fn raw_veth(prefix: &str, clean: &mut Cleanup) -> anyhow::Result<(PathBuf, PathBuf, IpAddr)> {
    let (a, b) = (format!("{prefix}-veth-a"), format!("{prefix}-veth-b"));
    for n in [&a, &b] {
        ip(&["netns", "add", n])?;
        clean.netns.push(n.clone());
        ip(&["-n", n, "link", "set", "lo", "up"])?;
    }
    ip(&[
        "link", "add", "eth0", "netns", &a, "type", "veth", "peer", "name", "eth0", "netns", &b,
    ])?;
    for (n, addr) in [(&a, "10.201.0.1/24"), (&b, "10.201.0.2/24")] {
        ip(&["-n", n, "addr", "add", addr, "dev", "eth0"])?;
        ip(&["-n", n, "link", "set", "eth0", "up"])?;
    }
    Ok((netns_path(&a), netns_path(&b), "10.201.0.2".parse()?))
}

/// Two namespaces joined by a veth underlay `ul0` (192.0.2.1/.2), each with
/// VXLAN device `vx0` (VNI 42, port 4789, no learning, MTU 1450) holding
/// 10.202.0.1/.2; a static FDB entry and a permanent neighbour for the peer,
/// as weft's overlay has.
/// Where a raw VXLAN pair's underlay runs.
enum Underlay<'a> {
    /// One veth pair straight between the two namespaces.
    Direct,
    /// A veth from each namespace onto `br0` of this fabric netns: the same
    /// underlay path as the lab's nodes, so weft and the kernel cross the
    /// same bridge.
    Fabric(&'a Path),
}

/// Two namespaces with a VXLAN device each (static FDB and neighbour, no
/// learning) over `underlay`; returns (client, server, server's address).
fn raw_vxlan(
    prefix: &str,
    tag: &str,
    underlay: Underlay,
    clean: &mut Cleanup,
) -> anyhow::Result<(PathBuf, PathBuf, IpAddr)> {
    let (a, b) = (format!("{prefix}-{tag}-a"), format!("{prefix}-{tag}-b"));
    for n in [&a, &b] {
        ip(&["netns", "add", n])?;
        clean.netns.push(n.clone());
        ip(&["-n", n, "link", "set", "lo", "up"])?;
    }
    // RFC 2544 addresses, above the lab's own (198.18.0.x)
    let (ul_a, ul_b) = ("198.19.255.201", "198.19.255.202");
    match underlay {
        Underlay::Direct => ip(&[
            "link", "add", "ul0", "netns", &a, "type", "veth", "peer", "name", "ul0", "netns", &b,
        ])?,
        Underlay::Fabric(fabric) => {
            let fab = fabric
                .file_name()
                .and_then(|f| f.to_str())
                .context("fabric netns path")?;
            for (n, port) in [(&a, "rawvx-a"), (&b, "rawvx-b")] {
                ip(&[
                    "-n", n, "link", "add", "ul0", "type", "veth", "peer", "name", port, "netns",
                    fab,
                ])?;
                ip(&["-n", fab, "link", "set", port, "master", "br0", "up"])?;
            }
        }
    }
    let sides = [
        (
            &a,
            ul_a,
            ul_b,
            "02:00:0a:ca:00:01",
            "02:00:0a:ca:00:02",
            "10.202.0.1",
            "10.202.0.2",
        ),
        (
            &b,
            ul_b,
            ul_a,
            "02:00:0a:ca:00:02",
            "02:00:0a:ca:00:01",
            "10.202.0.2",
            "10.202.0.1",
        ),
    ];
    for (n, ul, peer_ul, mac, peer_mac, inner, peer_inner) in sides {
        ip(&["-n", n, "addr", "add", &format!("{ul}/15"), "dev", "ul0"])?;
        ip(&["-n", n, "link", "set", "ul0", "up"])?;
        ip(&[
            "-n",
            n,
            "link",
            "add",
            "vx0",
            "address",
            mac,
            "mtu",
            "1450",
            "type",
            "vxlan",
            "id",
            "42",
            "local",
            ul,
            "dev",
            "ul0",
            "dstport",
            "4789",
            "nolearning",
        ])?;
        ip(&["-n", n, "link", "set", "vx0", "up"])?;
        ip(&["-n", n, "addr", "add", &format!("{inner}/24"), "dev", "vx0"])?;
        bridge(&[
            "-n",
            n,
            "fdb",
            "add",
            peer_mac,
            "dev",
            "vx0",
            "dst",
            peer_ul,
            "self",
            "permanent",
        ])?;
        ip(&[
            "-n",
            n,
            "neigh",
            "add",
            peer_inner,
            "lladdr",
            peer_mac,
            "dev",
            "vx0",
            "nud",
            "permanent",
        ])?;
    }
    Ok((netns_path(&a), netns_path(&b), "10.202.0.2".parse()?))
}

fn bridge(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("bridge")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running bridge (iproute2)")?;
    if !out.status.success() {
        bail!(
            "bridge {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Builds a two-node lab (one etcd member) with `routing`, recorded in
/// `clean` before it is built so a half-built one goes too.
fn two_node_lab(
    name: &str,
    bin_dir: &Path,
    routing: &str,
    weftd_args: &[&str],
    clean: &mut Cleanup,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Lab> {
    let mut spec = LabSpec::new(name, bin_dir);
    spec.weftd_args
        .extend(weftd_args.iter().map(|a| a.to_string()));
    spec.nodes = 2;
    spec.etcd_members = 1;
    spec.routing = routing.into();
    clean.labs.push(name.to_string());
    let lab = Lab::up(&spec, &mut |m| progress(&format!("  [{name}] {m}")))?;
    if !lab.shared_store {
        bail!("this weftd has no --store etcd: its nodes cannot route to each other");
    }
    Ok(lab)
}

/// Waits (at most 15 s) until every pod address on every node of `lab` is
/// on the fast path, or a node reports the kernel path; returns the mode.
fn wait_forwarding(lab: &Lab) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut modes = Vec::new();
        for node in lab.nodes() {
            let r = weft_api::http::call(
                &node.socket,
                "GET",
                weft_api::paths::STATUS,
                b"",
                Duration::from_secs(5),
            )?;
            let s: weft_api::AgentStatus = serde_json::from_slice(&r.body)
                .with_context(|| format!("status of {}", node.name))?;
            let f = s.fastpath;
            let settled = f.mode != "ebpf" || (f.addresses > 0 && f.fast == f.addresses);
            modes.push((f.mode, settled));
        }
        if modes.iter().all(|(_, settled)| *settled) {
            let (mode, _) = modes.swap_remove(0);
            return Ok(mode);
        }
        if Instant::now() >= deadline {
            bail!(
                "pods of lab {} not all on the fast path within 15 s",
                lab.name
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn first_v4(ips: &[IpAddr]) -> anyhow::Result<IpAddr> {
    ips.iter()
        .copied()
        .find(IpAddr::is_ipv4)
        .context("pod has no IPv4 address")
}

/// Waits (at most 30 s) until a TCP round trip from `client` to `addr`
/// (a listener bound in `server`) works: a new node's routes to its peer
/// arrive through the store a moment after its first pod.
fn wait_reachable(client: &Path, server: &Path, addr: IpAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match weft_lab::probe::tcp_check(client, server, addr, Duration::from_secs(1)) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("{addr} not reachable within 30 s")))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The MTU of `eth0` (or `vx0`) in `netns`.
fn mtu_in(netns: &Path, dev: &str) -> u32 {
    let name = netns
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Command::new("ip")
        .args(["-n", &name, "-o", "link", "show", dev])
        .output()
        .ok()
        .and_then(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            let mut it = s.split_whitespace();
            it.find(|w| *w == "mtu")?;
            it.next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// Starts `iperf3 -s` bound to `addr` inside `netns` and waits (at most 5 s)
/// until it listens.
fn start_iperf_server(netns: &Path, addr: IpAddr, clean: &mut Cleanup) -> anyhow::Result<()> {
    let mut cmd = Command::new("iperf3");
    cmd.args(["-s", "-B", &addr.to_string(), "-p", &IPERF_PORT.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = spawn_in(&mut cmd, netns).context("starting iperf3 -s (apt-get install iperf3)")?;
    let pid = child.id();
    clean.servers.push(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    // /proc/<pid>/net/tcp lists the sockets of the server's own namespace
    let port = format!(":{IPERF_PORT:04X} ");
    loop {
        let listening = ["tcp", "tcp6"].iter().any(|f| {
            std::fs::read_to_string(format!("/proc/{pid}/net/{f}"))
                .map(|t| {
                    t.lines().skip(1).any(|l| {
                        let cols: Vec<&str> = l.split_whitespace().collect();
                        cols.len() > 3
                            && format!("{} ", cols[1]).ends_with(&port)
                            && cols[3] == "0A"
                    })
                })
                .unwrap_or(false)
        });
        if listening {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("iperf3 -s in {} not listening within 5 s", netns.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One iperf3 test (see [`iperf_once`]); a server still closing the previous
/// test answers "busy" for a moment: retried, at most 10 times.
fn iperf(client: &Path, addr: IpAddr, streams: usize, seconds: u32) -> anyhow::Result<f64> {
    let mut tries = 0;
    loop {
        match iperf_once(client, addr, streams, seconds) {
            Err(e) if tries < 10 && format!("{e:#}").contains("busy") => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(300));
            }
            r => return r,
        }
    }
}

/// One iperf3 test from `client` to `addr` with `streams` streams: the
/// receiver's throughput in Gbit/s. Bounded by `timeout`.
fn iperf_once(client: &Path, addr: IpAddr, streams: usize, seconds: u32) -> anyhow::Result<f64> {
    let limit = (seconds + 15).to_string();
    let cpu = pin_cpu();
    let affinity = format!("{cpu},{cpu}");
    let mut cmd = Command::new("timeout");
    cmd.args([
        "-k",
        "2",
        &limit,
        "iperf3",
        "-c",
        &addr.to_string(),
        "-p",
        &IPERF_PORT.to_string(),
        "-t",
        &seconds.to_string(),
        "-P",
        &streams.to_string(),
        "-J",
    ])
    // one stream: client and server on one CPU (see pin_cpu); four streams
    // are left to the scheduler, to use every CPU
    .args(if streams == 1 {
        vec!["-A", affinity.as_str()]
    } else {
        vec![]
    })
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let out = spawn_in(&mut cmd, client)
        .context("starting iperf3 -c")?
        .wait_with_output()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 -c {addr} -P {streams} printed no JSON (exit {}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    if let Some(e) = json["error"].as_str() {
        bail!("iperf3 -c {addr} -P {streams}: {e}");
    }
    let bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 JSON without end.sum_received.bits_per_second")?;
    Ok(bps / 1e9)
}

/// The CPU the 1-stream tests and the round trips are pinned to: client and
/// server on one CPU (the last), so neither waits on a cross-CPU wake-up
/// whose cost depends on where the scheduler happened to put them. On a
/// shared 2-CPU machine, unpinned runs of the same case are bimodal.
fn pin_cpu() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .saturating_sub(1)
}

/// Pins the calling thread to `cpu` with `taskset -p` on its thread id
/// (this crate has no unsafe code for sched_setaffinity); false when it
/// could not.
fn pin_this_thread(cpu: usize) -> bool {
    let Ok(me) = std::fs::read_link("/proc/thread-self") else {
        return false;
    };
    let Some(tid) = me.file_name().map(|t| t.to_string_lossy().into_owned()) else {
        return false;
    };
    Command::new("taskset")
        .args(["-p", "-c", &cpu.to_string(), &tid])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `n` one-byte request/response round trips over one TCP connection from
/// `client` to a listener in `server` on `addr` (after 200 unmeasured ones):
/// (p50, p99) in microseconds.
fn rtt(client: &Path, server: &Path, addr: IpAddr, n: usize) -> anyhow::Result<(f64, f64)> {
    const WARMUP: usize = 200;
    let listener: TcpListener = weft_lab::probe::listen_in(server, addr)?;
    let to = listener.local_addr()?;
    let total = n + WARMUP;
    let deadline = Instant::now() + Duration::from_secs(10);
    let cpu = pin_cpu();
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        pin_this_thread(cpu);
        listener.set_nonblocking(true)?;
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "nobody connected",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e),
            }
        };
        s.set_nonblocking(false)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut b = [0u8; 1];
        for _ in 0..total {
            s.read_exact(&mut b)?;
            s.write_all(&b)?;
        }
        Ok(())
    });
    let client_side = run_in(client, move || -> std::io::Result<Vec<Duration>> {
        pin_this_thread(cpu);
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut samples = Vec::with_capacity(n);
        let mut b = [7u8; 1];
        for i in 0..total {
            let t = Instant::now();
            s.write_all(&b)?;
            s.read_exact(&mut b)?;
            if i >= WARMUP {
                samples.push(t.elapsed());
            }
        }
        Ok(samples)
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let served = echo
        .join()
        .map_err(|_| anyhow::anyhow!("echo thread panicked"))?;
    let mut samples = client_side.with_context(|| format!("round trips to {to}"))?;
    served.with_context(|| format!("echo on {to}"))?;
    samples.sort();
    let q = |p: f64| {
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[i].as_secs_f64() * 1e6
    };
    if samples.is_empty() {
        bail!("no round trips measured");
    }
    Ok((q(0.5), q(0.99)))
}

/// Runs the whole benchmark; everything it made is removed when it returns.
pub fn run(
    spec: &DataplaneSpec,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<DataplaneReport> {
    let started = Instant::now();
    if Command::new("iperf3").arg("--version").output().is_err() {
        bail!("iperf3 not found; apt-get install iperf3");
    }
    if spec.name.len() > 20 {
        bail!("run name {:?} too long (at most 20 characters)", spec.name);
    }
    let mut clean = Cleanup::default();
    let prefix = &spec.name;

    progress("raw veth: two namespaces, one veth pair");
    let (va, vb, vaddr) = raw_veth(prefix, &mut clean)?;
    progress("raw VXLAN: two namespaces, VXLAN over a veth underlay, static FDB");
    let (xa, xb, xaddr) = raw_vxlan(prefix, "vx", Underlay::Direct, &mut clean)?;

    progress("lab with routing overlay: 2 nodes, 1 etcd member");
    let mut overlay = two_node_lab(
        &format!("{prefix}-o"),
        &spec.bin_dir,
        "overlay",
        &[],
        &mut clean,
        progress,
    )?;
    progress("lab with routing native: 2 nodes, 1 etcd member");
    let mut native = two_node_lab(
        &format!("{prefix}-n"),
        &spec.bin_dir,
        "native",
        &[],
        &mut clean,
        progress,
    )?;
    progress("lab with routing overlay and --fastpath off: 2 nodes, 1 etcd member");
    let mut kernel = two_node_lab(
        &format!("{prefix}-k"),
        &spec.bin_dir,
        "overlay",
        &["--fastpath", "off"],
        &mut clean,
        progress,
    )?;
    progress("raw VXLAN over the overlay lab's fabric bridge (the nodes' underlay path)");
    let (fa, fb, faddr) = raw_vxlan(
        prefix,
        "fx",
        Underlay::Fabric(&overlay.fabric_netns),
        &mut clean,
    )?;
    progress("pods: two on node 1 of the overlay labs, one on node 2 of each lab");
    let sa = overlay.add_pod_on("sa", 0)?;
    let sb = overlay.add_pod_on("sb", 0)?;
    let xo = overlay.add_pod_on("xo", 1)?;
    let na = native.add_pod_on("na", 0)?;
    let nb = native.add_pod_on("nb", 1)?;
    let ka = kernel.add_pod_on("ka", 0)?;
    let kb = kernel.add_pod_on("kb", 0)?;
    let kx = kernel.add_pod_on("kx", 1)?;
    progress("waiting until the pods are on the eBPF fast path");
    let fwd_overlay = wait_forwarding(&overlay)?;
    let fwd_native = wait_forwarding(&native)?;
    let fwd_kernel = wait_forwarding(&kernel)?;
    let raw = || "-".to_string();

    let cases = vec![
        Case {
            label: "raw veth",
            path: "netns -> veth -> netns",
            forwarding: raw(),
            client: va,
            server: vb,
            addr: vaddr,
        },
        Case {
            label: "weft same-node",
            path: "pod -> veth -> node -> veth -> pod",
            forwarding: fwd_overlay.clone(),
            client: sa.netns.clone(),
            server: sb.netns.clone(),
            addr: first_v4(&sb.ips)?,
        },
        Case {
            label: "raw VXLAN",
            path: "netns vxlan -> veth underlay -> vxlan netns",
            forwarding: raw(),
            client: xa,
            server: xb,
            addr: xaddr,
        },
        Case {
            label: "weft overlay",
            path: "pod -> veth -> node vxlan -> fabric bridge -> node vxlan -> veth -> pod",
            forwarding: fwd_overlay.clone(),
            client: sa.netns.clone(),
            server: xo.netns.clone(),
            addr: first_v4(&xo.ips)?,
        },
        Case {
            label: "weft native",
            path: "pod -> veth -> node -> fabric bridge -> node -> veth -> pod",
            forwarding: fwd_native,
            client: na.netns.clone(),
            server: nb.netns.clone(),
            addr: first_v4(&nb.ips)?,
        },
        Case {
            label: "raw VXLAN, fab",
            path: "netns vxlan -> veth -> fabric bridge -> veth -> vxlan netns",
            forwarding: raw(),
            client: fa,
            server: fb,
            addr: faddr,
        },
        Case {
            label: "same-node kpath",
            path: "as weft same-node, --fastpath off",
            forwarding: fwd_kernel.clone(),
            client: ka.netns.clone(),
            server: kb.netns.clone(),
            addr: first_v4(&kb.ips)?,
        },
        Case {
            label: "overlay kpath",
            path: "as weft overlay, --fastpath off",
            forwarding: fwd_kernel,
            client: ka.netns.clone(),
            server: kx.netns.clone(),
            addr: first_v4(&kx.ips)?,
        },
    ];
    for c in &cases {
        progress(&format!(
            "{}: waiting until {} answers, starting iperf3 -s there",
            c.label, c.addr
        ));
        wait_reachable(&c.client, &c.server, c.addr)
            .with_context(|| format!("case {}", c.label))?;
        start_iperf_server(&c.server, c.addr, &mut clean)?;
    }
    let mtus: Vec<u32> = cases
        .iter()
        .map(|c| {
            let dev = if c.label.starts_with("raw VXLAN") {
                "vx0"
            } else {
                "eth0"
            };
            mtu_in(&c.client, dev)
        })
        .collect();

    let n = cases.len();
    let rounds = spec.rounds.max(1);
    let mut g1 = vec![Vec::new(); n];
    let mut g4 = vec![Vec::new(); n];
    let mut p50 = vec![Vec::new(); n];
    let mut p99 = vec![Vec::new(); n];
    for round in 0..rounds {
        for k in 0..n {
            let i = (k + round) % n;
            let c = &cases[i];
            let one = iperf(&c.client, c.addr, 1, spec.seconds)
                .with_context(|| format!("case {}", c.label))?;
            let four = iperf(&c.client, c.addr, 4, spec.seconds)
                .with_context(|| format!("case {}", c.label))?;
            let (l50, l99) = rtt(&c.client, &c.server, c.addr, spec.echoes)
                .with_context(|| format!("case {}", c.label))?;
            progress(&format!(
                "round {}/{rounds} {:<15} 1 stream {:6.2} Gbit/s  4 streams {:6.2} Gbit/s  rtt p50 {:6.1} us  p99 {:6.1} us",
                round + 1,
                c.label,
                one,
                four,
                l50,
                l99
            ));
            g1[i].push(one);
            g4[i].push(four);
            p50[i].push(l50);
            p99[i].push(l99);
        }
    }

    let results: Vec<CaseResult> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| CaseResult {
            case: c.label.to_string(),
            path: c.path.to_string(),
            mtu: mtus[i],
            forwarding: c.forwarding.clone(),
            gbps_1: Spread::of(&g1[i]),
            gbps_4: Spread::of(&g4[i]),
            rtt_p50_us: Spread::of(&p50[i]),
            rtt_p99_us: Spread::of(&p99[i]),
        })
        .collect();
    let mut ratios = Vec::new();
    // (name, weft case, kernel case, target)
    let pairs = [
        ("weft same-node / raw veth", 1, 0, Some(0.05)),
        ("weft overlay / raw VXLAN, fabric", 3, 5, Some(0.05)),
        ("weft overlay / raw VXLAN, direct", 3, 2, None),
        ("weft native / raw veth", 4, 0, None),
        ("same-node kernel path / raw veth", 6, 0, None),
        ("overlay kernel path / raw VXLAN, fab", 7, 5, None),
    ];
    for (name, w, k, tol) in pairs {
        let metrics: [(&str, &Vec<Vec<f64>>, bool); 4] = [
            ("throughput, 1 stream", &g1, true),
            ("throughput, 4 streams", &g4, true),
            ("rtt p50", &p50, false),
            ("rtt p99", &p99, false),
        ];
        for (metric, data, higher) in metrics {
            let per_round: Vec<f64> = data[w].iter().zip(&data[k]).map(|(a, b)| a / b).collect();
            let ratio = Spread::of(&per_round);
            let target: Option<f64> = tol.map(|t: f64| if higher { 1.0 - t } else { 1.0 + t });
            let met = target.map(|t| {
                if higher {
                    ratio.median >= t
                } else {
                    ratio.median <= t
                }
            });
            ratios.push(Ratio {
                name: name.to_string(),
                metric: metric.to_string(),
                ratio,
                target,
                higher_is_better: higher,
                met,
            });
        }
    }
    progress("removing the labs, namespaces and iperf3 servers");
    drop(clean);
    Ok(DataplaneReport {
        machine: Machine::now(),
        rounds,
        seconds: spec.seconds,
        echoes: spec.echoes,
        pinned_cpu: pin_cpu(),
        cases: results,
        ratios,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

/// The report as two tables: the cases, then the ratios against the targets.
pub fn render_table(r: &DataplaneReport) -> String {
    let mut out = format!(
        "weft bench dataplane: {} rounds, iperf3 -t {} s, {} one-byte TCP round trips ({} CPUs, kernel {}, {:.0} s)\n\n",
        r.rounds, r.seconds, r.echoes, r.machine.cpus, r.machine.kernel, r.wall_seconds
    );
    out.push_str(&format!(
        "{:<15} {:>6} {:>5} {:>22} {:>22} {:>20} {:>20}\n",
        "CASE", "PATH", "MTU", "1 STREAM Gbit/s", "4 STREAMS Gbit/s", "RTT p50 us", "RTT p99 us"
    ));
    let cell = |s: &Spread, prec: usize| {
        format!("{:.p$} ({:.p$}-{:.p$})", s.median, s.min, s.max, p = prec)
    };
    for c in &r.cases {
        out.push_str(&format!(
            "{:<15} {:>6} {:>5} {:>22} {:>22} {:>20} {:>20}\n",
            c.case,
            c.forwarding,
            c.mtu,
            cell(&c.gbps_1, 2),
            cell(&c.gbps_4, 2),
            cell(&c.rtt_p50_us, 1),
            cell(&c.rtt_p99_us, 1),
        ));
    }
    out.push_str(&format!(
        "\n(median over rounds, min-max in brackets; 1 stream and round trips: client and server pinned to CPU {}, 4 streams unpinned)\n\n",
        r.pinned_cpu
    ));
    out.push_str(&format!(
        "{:<34} {:<22} {:>20} {:>9} {:>6}\n",
        "RATIO (per-round, paired)", "METRIC", "MEDIAN (MIN-MAX)", "TARGET", "MET"
    ));
    for x in &r.ratios {
        out.push_str(&format!(
            "{:<34} {:<22} {:>20} {:>9} {:>6}\n",
            x.name,
            x.metric,
            cell(&x.ratio, 3),
            x.target
                .map(|t| format!("{}{t:.2}", if x.higher_is_better { ">=" } else { "<=" }))
                .unwrap_or_else(|| "-".into()),
            match x.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            }
        ));
    }
    out
}

/// Four panels (1 and 4 streams, rtt p50 and p99), bars at the median
/// with a min–max whisker.
pub fn chart(r: &DataplaneReport) -> Chart {
    type Metric = fn(&CaseResult) -> &Spread;
    let panels: [(&str, Metric, &str); 4] = [
        (
            "iperf3, 1 stream (Gbit/s, higher is better)",
            |c| &c.gbps_1,
            "",
        ),
        (
            "iperf3, 4 streams (Gbit/s, higher is better)",
            |c| &c.gbps_4,
            "",
        ),
        (
            "TCP 1-byte round trip, p50 (us, lower is better)",
            |c| &c.rtt_p50_us,
            " us",
        ),
        (
            "TCP 1-byte round trip, p99 (us, lower is better)",
            |c| &c.rtt_p99_us,
            " us",
        ),
    ];
    let color = |case: &str| {
        if case.starts_with("raw") {
            GREY
        } else if case.contains("kpath") {
            LIGHT_BLUE
        } else {
            BLUE
        }
    };
    Chart {
        title: format!(
            "weft bench dataplane: {} rounds, iperf3 -t {} s, {} round trips ({} CPUs, kernel {})",
            r.rounds, r.seconds, r.echoes, r.machine.cpus, r.machine.kernel
        ),
        note: "bars: median over rounds; whiskers: min-max; grey: the kernel alone, blue: through weft, light blue: weft with --fastpath off".into(),
        width: 840,
        panels: panels
            .iter()
            .map(|(title, metric, unit)| Panel {
                title: title.to_string(),
                unit: unit.to_string(),
                bars: r
                    .cases
                    .iter()
                    .map(|c| {
                        let s = metric(c);
                        Bar {
                            label: c.case.clone(),
                            value: s.median,
                            range: Some((s.min, s.max)),
                            color: color(&c.case),
                        }
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// [`chart`] as SVG.
pub fn render_svg(r: &DataplaneReport) -> String {
    chart(r).render_svg()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_median_and_the_range() {
        let s = Spread::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Spread::of(&[4.0, 1.0, 2.0, 3.0]);
        assert_eq!(s.median, 2.5);
        assert!(Spread::of(&[]).median.is_nan());
    }
}
