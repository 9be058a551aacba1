//! `weft bench dataplane --flows`: what flow events cost, side by side in
//! one run (issue 14, "Overhead").
//!
//! 1. Overhead: two nodes, each a node namespace with a client and a server
//!    pod attached by weft's `LinuxDatapath`, the fast path on with policy
//!    enforced (a policy letting the client in, so every connection's first
//!    packet and its end are reported), weftd's flow reader
//!    ([`weft_agent::flows::spawn_reader`]) draining each node's ring into a
//!    4096-flow buffer. One node's programs report flow events (`weftd
//!    --flows on`, the default), the other's do not (`--flows off`). Per
//!    round, in a rotating order: iperf3 one stream, one-byte TCP round trips
//!    over one connection (RR) and new connections each carrying one round
//!    trip (CRR: two events per connection). Ratios on / off per round.
//! 2. The ring's sustained rate ([`ring`]): the policy program dropping
//!    distinct flows under BPF_PROG_TEST_RUN at rising rates, weftd's reader
//!    draining, until the kernel counts a lost event.
//! 3. weftd's RSS with its flow buffer full ([`ring::rss`]): a real weftd in
//!    a lab.
//!
//! Every namespace starts with the run's name and goes at the end, with the
//! iperf3 servers (ended by pid) and the lab, also on error.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use weft_agent::flows::{spawn_reader, Hub, SourceProvider};
use weft_datapath::flows::FlowSource;
use weft_datapath::policy::{PolicyEndpoint, PolicyMaps, PolicyMode};
use weft_datapath::seams::*;
use weft_datapath::{FastPathSetup, LinuxDatapath};
use weft_policy::{
    compile, Compiled, Direction, EndpointRef, Inventory, LabelSelector, Labels, MemoryAllocator,
    NetworkPolicy, Node, Peer, Rule, RuleIds, Workload,
};

use super::*;
use crate::policy::{pod_pair, PodPair};

pub mod ring;

pub(super) const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 2);
pub(super) const SERVER: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 3);
const NODE_IP: &str = "10.99.0.1";
pub(super) const NODE: &str = "node";
const NS: &str = "bench";

#[derive(Debug, Clone)]
pub struct FlowsSpec {
    /// Prefix of every namespace and lab the run makes (at most 16).
    pub name: String,
    pub bin_dir: PathBuf,
    pub rounds: usize,
    /// iperf3 `-t`.
    pub seconds: u32,
    /// Round trips per RR test.
    pub echoes: usize,
    /// New connections per CRR test.
    pub connects: usize,
    /// Event rates (per second) the ring is driven at, in turn.
    pub rates: Vec<u64>,
    /// Seconds per rate.
    pub rate_seconds: f64,
    /// Both nodes with events off (an A/A run): the comparison's own noise
    /// on this machine, without the ring and RSS parts.
    pub control: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlowsCase {
    pub case: String,
    pub gbps: Spread,
    pub rr_p50_us: Spread,
    pub rr_p99_us: Spread,
    pub crr_p50_us: Spread,
    /// Flow events weftd's reader took from this node's ring over the run.
    pub events_read: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlowsReport {
    #[serde(flatten)]
    pub machine: Machine,
    /// /proc/loadavg when the measurements began and ended.
    pub load_before: String,
    pub load_after: String,
    pub rounds: usize,
    pub seconds: u32,
    pub echoes: usize,
    pub connects: usize,
    pub pinned_cpu: usize,
    pub cases: Vec<FlowsCase>,
    /// Events on / events off, per round: throughput, RR p50, RR p99, CRR p50.
    pub ratios: Vec<Ratio>,
    pub ring: ring::RingReport,
    pub rss: Option<ring::RssReport>,
    pub wall_seconds: f64,
}

/// One node of the overhead part, with the reader draining its ring.
struct FlowNode {
    label: &'static str,
    client: PathBuf,
    server: PathBuf,
    hub: Arc<Hub>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
    // kept alive: its programs and maps
    _dp: Arc<LinuxDatapath>,
}

impl Drop for FlowNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub(super) fn workload(name: &str, addr: Ipv4Addr) -> Workload {
    Workload {
        namespace: NS.into(),
        name: name.into(),
        labels: Labels::from([("app".to_string(), name.to_string())]),
        namespace_labels: Labels::from([(
            "kubernetes.io/metadata.name".to_string(),
            NS.to_string(),
        )]),
        ips: vec![IpAddr::V4(addr)],
        node: NODE.into(),
        ..Default::default()
    }
}

/// The server isolated for ingress; `allow_client` lets the client in on
/// every port (else nothing is allowed: every flow to it is a drop).
pub(super) fn compiled(allow_client: bool) -> anyhow::Result<Compiled> {
    let peers = allow_client.then(|| {
        vec![Peer {
            pod_selector: Some(LabelSelector::labels([("app", "client")])),
            ..Default::default()
        }]
    });
    let policy = NetworkPolicy {
        namespace: NS.into(),
        name: if allow_client {
            "allow-client"
        } else {
            "deny-all"
        }
        .into(),
        pod_selector: LabelSelector::labels([("app", "server")]),
        policy_types: Some(vec![Direction::Ingress]),
        ingress: Some(
            peers
                .map(|p| {
                    vec![Rule {
                        peers: Some(p),
                        ports: None,
                    }]
                })
                .unwrap_or_default(),
        ),
        egress: None,
        audit: false,
    };
    let inventory = Inventory {
        workloads: vec![workload("client", CLIENT), workload("server", SERVER)],
        nodes: vec![Node {
            name: NODE.into(),
            ips: vec![NODE_IP.parse()?],
        }],
    };
    Ok(compile(&[policy], &inventory, &mut MemoryAllocator::new())?)
}

pub(super) fn lookup(e: &EndpointRef) -> Option<PolicyEndpoint> {
    let (id, addr) = match e.name.as_str() {
        "client" => (1, CLIENT),
        "server" => (2, SERVER),
        _ => return None,
    };
    Some(PolicyEndpoint {
        id,
        addresses: vec![IpAddr::V4(addr)],
        audit: false,
    })
}

/// weftd's reader over `dp`'s ring into a fresh 4096-flow buffer.
fn start_reader(
    dp: &Arc<LinuxDatapath>,
) -> (Arc<Hub>, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let hub = Hub::new(NODE, weft_agent::flows::DEFAULT_CAPACITY);
    let stop = Arc::new(AtomicBool::new(false));
    let dp = dp.clone();
    let provider: SourceProvider = Box::new(move || {
        dp.flow_source()
            .ok()
            .flatten()
            .map(|s| Box::new(s) as Box<dyn FlowSource>)
    });
    let resolve = Box::new(HashMap::new());
    let reader = spawn_reader(
        hub.clone(),
        provider,
        resolve,
        Arc::new(OnceLock::new()),
        stop.clone(),
    );
    (hub, stop, reader)
}

/// A node namespace with a client and a server pod, the fast path with
/// policy enforced, flow events on or off, and the reader draining.
fn flow_node(
    prefix: &str,
    tag: &str,
    label: &'static str,
    events: bool,
    clean: &mut Cleanup,
) -> anyhow::Result<FlowNode> {
    let PodPair {
        client,
        server,
        pools,
        eps,
        dp,
        ..
    } = pod_pair(
        prefix,
        tag,
        "wf",
        |dp| dp.with_policy(PolicyMode::Enforce).with_flow_events(events),
        &mut clean.netns,
    )?;
    dp.fastpath_start(&FastPathSetup {
        pools,
        remote_device: None,
    })?;
    let mut maps = dp
        .policy_maps(NODE, RuleIds::new())?
        .context("no policy maps after fastpath_start")?;
    maps.replace(&compiled(true)?, &lookup)?;
    let report = dp.fastpath_sync(&eps)?;
    if report.attached != 2 {
        bail!("{label}: weft's programs attached to {report:?}, not both pods");
    }
    let dp = Arc::new(dp);
    let (hub, stop, reader) = start_reader(&dp);
    Ok(FlowNode {
        label,
        client,
        server,
        hub,
        stop,
        reader: Some(reader),
        _dp: dp,
    })
}

/// `n` new connections from `client` to a listener in `server`, each
/// carrying one one-byte round trip: the median in microseconds.
fn crr(client: &Path, server: &Path, n: usize) -> anyhow::Result<f64> {
    let listener = weft_lab::probe::listen_in(server, IpAddr::V4(SERVER))?;
    let to: SocketAddr = listener.local_addr()?;
    let cpu = pin_cpu();
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        pin_this_thread(cpu);
        for _ in 0..n {
            let (mut s, _) = listener.accept()?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b)?;
            if b[0] == 0xff {
                return Ok(());
            }
            s.write_all(&b)?;
        }
        Ok(())
    });
    let measured = run_in(client, move || -> std::io::Result<Vec<Duration>> {
        pin_this_thread(cpu);
        let mut out = Vec::with_capacity(n);
        let mut b = [7u8; 1];
        for _ in 0..n {
            let t = Instant::now();
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(&b)?;
            s.read_exact(&mut b)?;
            out.push(t.elapsed());
        }
        Ok(out)
    })
    .map_err(|e| anyhow::anyhow!("{e}"));
    if measured.as_ref().map_or(true, |m| m.is_err()) {
        // unblock the echo thread's accept from the server's side
        let _ = run_in(server, move || -> std::io::Result<()> {
            TcpStream::connect_timeout(&to, Duration::from_secs(1))?.write_all(&[0xff])
        });
    }
    let measured = measured?;
    let served = echo
        .join()
        .map_err(|_| anyhow::anyhow!("echo thread panicked"))?;
    let mut samples = measured.context("new connections")?;
    served.context("echo server")?;
    samples.sort();
    samples
        .get(samples.len() / 2)
        .map(|d| d.as_secs_f64() * 1e6)
        .context("no connections measured")
}

/// Runs the three parts; everything made is removed when it returns.
pub fn run(spec: &FlowsSpec, progress: &mut dyn FnMut(&str)) -> anyhow::Result<FlowsReport> {
    let started = Instant::now();
    if spec.name.len() > 16 {
        bail!("run name {:?} too long (at most 16 characters)", spec.name);
    }
    if Command::new("iperf3").arg("--version").output().is_err() {
        bail!("iperf3 not found; apt-get install iperf3");
    }
    let mut clean = Cleanup::default();
    let p = &spec.name;
    let (first, events) = if spec.control {
        progress("control: two nodes, each a client and a server pod, policy on, flow events off on both");
        ("events off (A)", false)
    } else {
        progress("two nodes, each a client and a server pod, policy on: flow events on, and off");
        ("flow events on", true)
    };
    let nodes = [
        flow_node(p, "on", first, events, &mut clean)?,
        flow_node(p, "of", "flow events off", false, &mut clean)?,
    ];
    for n in &nodes {
        wait_reachable(&n.client, &n.server, IpAddr::V4(SERVER))
            .with_context(|| n.label.to_string())?;
        start_iperf_server(&n.server, IpAddr::V4(SERVER), &mut clean)?;
    }
    let read_before: Vec<u64> = nodes.iter().map(|n| read_so_far(&n.hub)).collect();
    let load_before = loadavg();
    let rounds = spec.rounds.max(1);
    let mut m: Vec<[Vec<f64>; 4]> = vec![Default::default(), Default::default()];
    for round in 0..rounds {
        for j in 0..2 {
            let i = (j + round) % 2;
            let n = &nodes[i];
            let g = iperf(&n.client, IpAddr::V4(SERVER), 1, spec.seconds)
                .with_context(|| n.label.to_string())?;
            let (p50, p99) = rtt(&n.client, &n.server, IpAddr::V4(SERVER), spec.echoes)
                .with_context(|| n.label.to_string())?;
            let c =
                crr(&n.client, &n.server, spec.connects).with_context(|| n.label.to_string())?;
            progress(&format!(
                "round {}/{rounds} {:<16} {g:6.2} Gbit/s  rr p50 {p50:6.1} us  p99 {p99:6.1} us  crr p50 {c:6.1} us",
                round + 1,
                n.label
            ));
            for (v, x) in m[i].iter_mut().zip([g, p50, p99, c]) {
                v.push(x);
            }
        }
    }
    let load_after = loadavg();
    // the reader's last drain
    std::thread::sleep(Duration::from_millis(500));
    let cases: Vec<FlowsCase> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| FlowsCase {
            case: n.label.into(),
            gbps: Spread::of(&m[i][0]),
            rr_p50_us: Spread::of(&m[i][1]),
            rr_p99_us: Spread::of(&m[i][2]),
            crr_p50_us: Spread::of(&m[i][3]),
            events_read: read_so_far(&n.hub) - read_before[i],
        })
        .collect();
    if events && cases[0].events_read == 0 {
        bail!("the node with flow events on reported none: the comparison would mean nothing");
    }
    if cases[1].events_read != 0 || (!events && cases[0].events_read != 0) {
        bail!(
            "the node with flow events off reported {}: --flows off does not hold",
            cases[1].events_read
        );
    }
    let mut ratios = Vec::new();
    for (x, metric, higher) in [
        (0, "throughput, 1 stream", true),
        (1, "rtt p50", false),
        (2, "rtt p99", false),
        (3, "crr p50", false),
    ] {
        let per_round: Vec<f64> = m[0][x].iter().zip(&m[1][x]).map(|(a, b)| a / b).collect();
        let ratio = Spread::of(&per_round);
        // goal: within 1.02x
        let target = if higher { 1.0 / 1.02 } else { 1.02 };
        let met = if higher {
            ratio.median >= target
        } else {
            ratio.median <= target
        };
        ratios.push(Ratio {
            name: if events {
                "flow events on / off"
            } else {
                "control: events off / off"
            }
            .into(),
            metric: metric.into(),
            ratio,
            target: Some(target),
            higher_is_better: higher,
            met: Some(met),
        });
    }
    drop(nodes);
    let (ring, rss) = if spec.control {
        (ring::RingReport::default(), None)
    } else {
        progress("the ring's sustained rate: the policy program dropping distinct flows");
        let ring = ring::rate(spec, progress)?;
        progress("weftd's RSS with its flow buffer full (a one-node lab)");
        let rss = match ring::rss(spec, &mut clean, progress) {
            Ok(r) => Some(r),
            Err(e) => {
                progress(&format!("weftd RSS not measured: {e:#}"));
                None
            }
        };
        (ring, rss)
    };
    progress("removing the namespaces, the lab and the iperf3 servers");
    drop(clean);
    Ok(FlowsReport {
        machine: Machine::now(),
        load_before,
        load_after,
        rounds,
        seconds: spec.seconds,
        echoes: spec.echoes,
        connects: spec.connects,
        pinned_cpu: pin_cpu(),
        cases,
        ratios,
        ring,
        rss,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Flows the reader has pushed into `hub` so far.
pub(super) fn read_so_far(hub: &Hub) -> u64 {
    hub.stats().by_verdict.iter().sum()
}

/// The report as a table.
pub fn render_table(r: &FlowsReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "flow events on vs off, {} rounds (median [min-max]), load {} -> {}",
        r.rounds, r.load_before, r.load_after
    );
    let f = |x: &Spread| format!("{:.2} [{:.2}-{:.2}]", x.median, x.min, x.max);
    let _ = writeln!(
        s,
        "{:<16} {:>22} {:>22} {:>22} {:>22} {:>8}",
        "case", "Gbit/s", "rr p50 us", "rr p99 us", "crr p50 us", "events"
    );
    for c in &r.cases {
        let _ = writeln!(
            s,
            "{:<16} {:>22} {:>22} {:>22} {:>22} {:>8}",
            c.case,
            f(&c.gbps),
            f(&c.rr_p50_us),
            f(&c.rr_p99_us),
            f(&c.crr_p50_us),
            c.events_read
        );
    }
    for x in &r.ratios {
        let _ = writeln!(
            s,
            "on / off {:<22} {:.3} [{:.3}-{:.3}] goal {} {:.3}: {}",
            x.metric,
            x.ratio.median,
            x.ratio.min,
            x.ratio.max,
            if x.higher_is_better { ">=" } else { "<=" },
            x.target.unwrap_or(f64::NAN),
            if x.met == Some(true) {
                "met"
            } else {
                "not met"
            }
        );
    }
    if !r.ring.steps.is_empty() {
        s.push_str(&ring::render(&r.ring, r.rss.as_ref()));
    }
    s
}
