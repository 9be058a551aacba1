//! `weft bench ipam`: cluster IPAM under a burst. P pods spread over N lab
//! nodes that share one etcd, every ADD in flight at once (C per node, as C
//! runtimes' workers would), once with weftd's group commit of concurrent
//! allocations and once without, each in a fresh lab so both start from the
//! same empty store.
//!
//! Per mode it reports the burst's wall time and pods/s, how many etcd
//! writes (revisions) the burst made per pod, ADD latency as the runtime
//! sees it, weftd's resident memory per node with the pods attached, where
//! the machine's CPU went during the burst, and proof that no address was
//! handed out twice: every address of every ADD result is distinct, and the
//! IPAM view of every node agrees with the results address by address.
//!
//! Pod namespaces are made before the clock starts and removed after it
//! stops; the DELs and the teardown are not part of any figure.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use weft_lab::{ip, Lab, LabSpec, ETCD_CLIENT_PORT};

use crate::chart::{Bar, Chart, Panel, BLUE, LIGHT_GREY};
use crate::report::{proc_cpu, rss_bytes, Machine, Stats};

mod check;
mod probe;
mod render;
mod workers;

use check::*;
pub use probe::etcd_revision;
use probe::*;
pub use render::{chart, render_svg, render_table};
use workers::*;

/// Namespaces made (and removed) at once around the burst: enough to keep
/// it short, few enough not to flood the kernel's namespace locks.
const NETNS_WORKERS: usize = 8;
/// Busy share of the machine under which it counts as quiet before a burst.
const QUIET: f64 = 0.15;
/// How long a burst waits for a quiet machine before it goes anyway.
const QUIET_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct IpamBenchSpec {
    /// Prefix of the two labs' names (`<name>on`, `<name>off`); at most 21
    /// characters.
    pub name: String,
    pub bin_dir: PathBuf,
    /// Pods in the burst, spread round-robin over the nodes.
    pub pods: usize,
    pub nodes: usize,
    pub etcd_members: usize,
    /// ADDs in flight at once on each node.
    pub concurrency: usize,
    /// The modes to run, in order: `true` is group commit on.
    pub modes: Vec<bool>,
    /// Run weftd with `--log info,weft_agent=debug` and summarise its
    /// per-ADD stage timings (the log costs a little throughput).
    pub stage_timings: bool,
}

/// Where weftd spent each ADD, from its debug log (`add timing`).
#[derive(Debug, Clone, Serialize)]
pub struct StageTimings {
    /// Making the veth pair (overlapped with `ipam`).
    pub create: Stats,
    /// `Ipam::allocate`: queueing for the batch, planning, the etcd commit.
    pub ipam: Stats,
    /// Both of the above, wall time.
    pub stage1: Stats,
    /// Addresses, routes and the endpoint record.
    pub stage2: Stats,
}

#[derive(Debug, Clone, Serialize)]
pub struct IpamRun {
    pub batching: bool,
    pub lab: String,
    pub pods: usize,
    pub failed_adds: usize,
    /// The first few failures, verbatim.
    pub failures: Vec<String>,
    pub seconds: f64,
    pub pods_per_second: f64,
    /// The cluster's revision before and after the burst; every etcd txn
    /// that writes anything adds exactly one.
    pub etcd_revision_before: i64,
    pub etcd_revision_after: i64,
    pub etcd_writes: i64,
    /// `etcd_writes` per successful ADD (one dual-stack allocation each).
    pub etcd_writes_per_pod: f64,
    pub add: Stats,
    /// Distinct addresses among the ADD results.
    pub addresses: usize,
    /// Addresses that came back in more than one ADD result.
    pub duplicates: usize,
    /// Nodes whose `GET /v1/ipam` was compared with the ADD results.
    pub views_checked: usize,
    /// Disagreements between a node's view and the ADD results (an address
    /// of ours missing, held by another container, or listed twice).
    pub view_mismatches: usize,
    pub view_problems: Vec<String>,
    /// weftd's resident memory per node with the pods attached, bytes.
    pub rss_bytes: Vec<u64>,
    pub rss_median_bytes: u64,
    pub rss_max_bytes: u64,
    /// CPU-seconds spent during the burst by every weftd, every etcd
    /// member, and this process with the weft-cni it ran.
    pub cpu_weftd_seconds: f64,
    pub cpu_etcd_seconds: f64,
    pub cpu_cni_and_bench_seconds: f64,
    /// ... of which weft-cni's own processes (the rest is this process:
    /// forking, waiting, parsing results).
    pub cpu_cni_seconds: f64,
    /// The machine's busy CPU-seconds during the burst that none of the
    /// above account for: the kernel's own workers, and other work on the
    /// machine (a large figure means the run was disturbed).
    pub cpu_other_seconds: f64,
    /// Share of the machine's CPU time that was busy during the burst.
    pub machine_busy: f64,
    /// ... and in the second before it: work of others on the machine
    /// (above 15%, the figures carry it).
    pub machine_busy_before: f64,
    pub stage_timings: Option<StageTimings>,
    /// Outside the figures: building the lab, making the namespaces, the
    /// DELs, tearing down.
    pub lab_up_seconds: f64,
    pub netns_seconds: f64,
    pub del_seconds: f64,
    pub failed_dels: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct IpamBenchReport {
    /// When and where it ran.
    #[serde(flatten)]
    pub machine: Machine,
    pub pods: usize,
    pub nodes: usize,
    pub etcd_members: usize,
    pub concurrency_per_node: usize,
    pub runs: Vec<IpamRun>,
}

impl IpamBenchReport {
    fn run(&self, batching: bool) -> Option<&IpamRun> {
        self.runs.iter().find(|r| r.batching == batching)
    }

    /// Whether every ADD succeeded and no address was handed out twice.
    pub fn ok(&self) -> bool {
        self.runs
            .iter()
            .all(|r| r.failed_adds == 0 && r.duplicates == 0 && r.view_mismatches == 0)
    }
}

/// Runs every mode of `spec`, each in its own lab, removed at the end.
pub fn run(
    spec: &IpamBenchSpec,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<IpamBenchReport> {
    if spec.pods == 0 || spec.concurrency == 0 {
        bail!("--pods and --concurrency must be at least 1");
    }
    if spec.etcd_members == 0 {
        bail!("weft bench ipam measures the shared store: --etcd-members 1 to 3");
    }
    let mut runs = Vec::new();
    for &batching in &spec.modes {
        let name = format!("{}{}", spec.name, if batching { "on" } else { "off" });
        runs.push(run_mode(spec, &name, batching, progress)?);
    }
    Ok(IpamBenchReport {
        machine: Machine::now(),
        pods: spec.pods,
        nodes: spec.nodes,
        etcd_members: spec.etcd_members,
        concurrency_per_node: spec.concurrency,
        runs,
    })
}

fn run_mode(
    spec: &IpamBenchSpec,
    name: &str,
    batching: bool,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<IpamRun> {
    let mode = if batching { "on" } else { "off" };
    let mut lab_spec = LabSpec::new(name, &spec.bin_dir);
    lab_spec.nodes = spec.nodes;
    lab_spec.etcd_members = spec.etcd_members;
    lab_spec.weftd_args = vec!["--ipam-batching".into(), batching.to_string()];
    if spec.stage_timings {
        lab_spec
            .weftd_args
            .extend(["--log".into(), "info,weft_agent=debug".into()]);
    }
    progress(&format!(
        "group commit {mode}: building lab {name}: {} nodes, {} etcd members",
        spec.nodes, spec.etcd_members
    ));
    let t = Instant::now();
    let lab = Lab::up(&lab_spec, &mut |_| {})?;
    let lab_up_seconds = t.elapsed().as_secs_f64();
    progress(&format!(
        "group commit {mode}: lab up in {lab_up_seconds:.1} s"
    ));
    let result = (|| {
        if !lab.shared_store {
            bail!("this weftd has no --store etcd: nothing to measure");
        }
        measure(&lab, spec, batching, lab_up_seconds, progress)
    })();
    progress(&format!("group commit {mode}: removing lab {name}"));
    let down = Lab::down(&lab.name);
    let run = result?;
    down?;
    Ok(run)
}

/// What one ADD gave: its latency and addresses, or why it failed.
type AddOutcome = Result<(Duration, Vec<IpAddr>), String>;

/// One pod of the burst: its node, container id, namespace.
struct PodSlot {
    node: usize,
    cid: String,
    name: String,
    netns: String,
}

fn measure(
    lab: &Lab,
    spec: &IpamBenchSpec,
    batching: bool,
    lab_up_seconds: f64,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<IpamRun> {
    let mode = if batching { "on" } else { "off" };
    let nodes = lab.nodes();
    let pods: Vec<PodSlot> = (0..spec.pods)
        .map(|i| {
            let name = format!("p{i}");
            let ns = format!("{}-{name}", lab.name);
            PodSlot {
                node: i % nodes.len(),
                cid: ns.clone(),
                name,
                netns: format!("/run/netns/{ns}"),
            }
        })
        .collect();
    progress(&format!(
        "group commit {mode}: making {} pod namespaces",
        pods.len()
    ));
    let t = Instant::now();
    let made = parallel(pods.len(), NETNS_WORKERS, |i| {
        ip(&[
            "netns",
            "add",
            pods[i].netns.trim_start_matches("/run/netns/"),
        ])
    });
    let netns_seconds = t.elapsed().as_secs_f64();
    if let Some(e) = made.into_iter().find_map(Result::err) {
        return Err(e.context("making pod namespaces"));
    }
    let confs: Vec<serde_json::Value> = (0..nodes.len())
        .map(|i| lab.net_conf_on(i, "1.0.0"))
        .collect();
    // one queue of pods per node, C workers each
    let queues: Vec<Vec<usize>> = (0..nodes.len())
        .map(|n| (0..pods.len()).filter(|i| pods[*i].node == n).collect())
        .collect();

    let weftd_pids: Vec<u32> = nodes.iter().filter_map(|n| n.weftd_pid).collect();
    let etcd_pids: Vec<u32> = lab.etcd_members().iter().filter_map(|m| m.pid).collect();
    // let the agents finish joining (registry, routes), and wait a while for
    // other work on the machine to end: its CPU would be charged to the burst
    let deadline = Instant::now() + QUIET_WAIT;
    let mut told = false;
    let machine_busy_before = loop {
        let busy = machine_busy_over(Duration::from_secs(1));
        if busy < QUIET || Instant::now() >= deadline {
            break busy;
        }
        if !told {
            progress(&format!(
                "group commit {mode}: the machine is {:.0}% busy with other work; waiting up to {} s for it to calm down",
                busy * 100.0,
                QUIET_WAIT.as_secs()
            ));
            told = true;
        }
    };
    progress(&format!(
        "group commit {mode}: burst of {} ADDs, {} in flight on each of {} nodes",
        pods.len(),
        spec.concurrency,
        nodes.len()
    ));
    let rev_before = etcd_revision(lab)?;
    let cpu_before = CpuSample::take(&weftd_pids, &etcd_pids);
    let outcomes: Vec<Mutex<Option<AddOutcome>>> =
        (0..pods.len()).map(|_| Mutex::new(None)).collect();
    let seconds = run_per_node(&queues, spec.concurrency, |i| {
        let p = &pods[i];
        let r = lab
            .cni_on(p.node, "ADD", &p.cid, &p.netns, &p.name, &confs[p.node])
            .map_err(|e| format!("{}: {e:#}", p.cid))
            .and_then(|out| {
                if !out.success {
                    return Err(format!(
                        "{}: {}{}",
                        p.cid,
                        out.stdout.trim(),
                        out.stderr.trim()
                    ));
                }
                let v = out.json().map_err(|e| format!("{}: {e:#}", p.cid))?;
                Ok((out.elapsed, result_ips(&v)))
            });
        *outcomes[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    });
    let cpu_after = CpuSample::take(&weftd_pids, &etcd_pids);
    let rev_after = etcd_revision(lab)?;

    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    let mut failed_adds = 0;
    let mut held: HashMap<IpAddr, usize> = HashMap::new();
    let mut duplicates = 0;
    for (i, o) in outcomes.into_iter().enumerate() {
        match o.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(Ok((elapsed, ips))) => {
                latencies.push(elapsed);
                for a in ips {
                    if held.insert(a, i).is_some() {
                        duplicates += 1;
                    }
                }
            }
            Some(Err(e)) => {
                failed_adds += 1;
                if failures.len() < 5 {
                    failures.push(e);
                }
            }
            None => failed_adds += 1,
        }
    }
    let ok_adds = pods.len() - failed_adds;
    let etcd_writes = rev_after - rev_before;
    progress(&format!(
        "group commit {mode}: {ok_adds} pods in {seconds:.2} s ({:.0} pods/s), {etcd_writes} etcd writes ({:.3} per pod), {failed_adds} failed",
        ok_adds as f64 / seconds.max(1e-9),
        etcd_writes as f64 / ok_adds.max(1) as f64
    ));

    let rss: Vec<u64> = nodes
        .iter()
        .map(|n| n.weftd_pid.and_then(rss_bytes).unwrap_or(0))
        .collect();
    progress(&format!(
        "group commit {mode}: checking every node's IPAM view against the ADD results"
    ));
    let (views_checked, view_problems, view_mismatches) = check_views(lab, &pods, &held);
    let stage_timings = spec.stage_timings.then(|| stage_timings(lab));

    progress(&format!(
        "group commit {mode}: DEL of every pod, removing the namespaces"
    ));
    let dels = Mutex::new((0usize, Vec::<String>::new()));
    let del_seconds = run_per_node(&queues, spec.concurrency, |i| {
        let p = &pods[i];
        let ok = matches!(
            lab.cni_on(p.node, "DEL", &p.cid, &p.netns, &p.name, &confs[p.node]),
            Ok(o) if o.success
        );
        if !ok {
            let mut d = dels.lock().unwrap_or_else(|e| e.into_inner());
            d.0 += 1;
            if d.1.len() < 3 {
                d.1.push(p.cid.clone());
            }
        }
    });
    let (failed_dels, _) = dels.into_inner().unwrap_or_else(|e| e.into_inner());
    let _ = parallel(pods.len(), NETNS_WORKERS, |i| {
        ip(&[
            "netns",
            "del",
            pods[i].netns.trim_start_matches("/run/netns/"),
        ])
    });

    let (rss_median_bytes, rss_max_bytes) = {
        let mut s = rss.clone();
        s.sort_unstable();
        (s[s.len() / 2], s.last().copied().unwrap_or(0))
    };
    let span = cpu_after.since(&cpu_before);
    Ok(IpamRun {
        batching,
        lab: lab.name.clone(),
        pods: pods.len(),
        failed_adds,
        failures,
        seconds,
        pods_per_second: ok_adds as f64 / seconds.max(1e-9),
        etcd_revision_before: rev_before,
        etcd_revision_after: rev_after,
        etcd_writes,
        etcd_writes_per_pod: etcd_writes as f64 / ok_adds.max(1) as f64,
        add: Stats::of(latencies),
        addresses: held.len(),
        duplicates,
        views_checked,
        view_mismatches,
        view_problems,
        rss_bytes: rss,
        rss_median_bytes,
        rss_max_bytes,
        cpu_weftd_seconds: span.weftd,
        cpu_etcd_seconds: span.etcd,
        cpu_cni_and_bench_seconds: span.own,
        cpu_cni_seconds: span.children,
        cpu_other_seconds: (span.busy_seconds - span.weftd - span.etcd - span.own).max(0.0),
        machine_busy: span.busy,
        machine_busy_before,
        stage_timings,
        lab_up_seconds,
        netns_seconds,
        del_seconds,
        failed_dels,
    })
}

/// Writes `<out>/ipam-<time>.json`, `.svg` and (with rsvg-convert) `.png`.
pub fn write_results(r: &IpamBenchReport, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    crate::report::write_results("ipam", &r.machine, r, &render_svg(r), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_timings_survive_colours() {
        let l = "\u{1b}[2m2026\u{1b}[0m \u{1b}[34mDEBUG\u{1b}[0m add timing \u{1b}[3mcreate_us\u{1b}[0m\u{1b}[2m=\u{1b}[0m412";
        assert!(strip_ansi(l).ends_with("add timing create_us=412"));
    }

    #[test]
    fn add_results_give_their_addresses() {
        let v = serde_json::json!({"ips": [{"address": "10.244.0.5/32"}, {"address": "fd00:10:244::5/128"}]});
        assert_eq!(
            result_ips(&v),
            vec![
                "10.244.0.5".parse::<IpAddr>().unwrap(),
                "fd00:10:244::5".parse().unwrap()
            ]
        );
    }

    #[test]
    fn workers_take_every_pod_of_their_node_once() {
        let queues = vec![vec![0, 2, 4], vec![1, 3]];
        let done: Vec<AtomicUsize> = (0..5).map(|_| AtomicUsize::new(0)).collect();
        run_per_node(&queues, 4, |i| {
            done[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(done.iter().all(|d| d.load(Ordering::Relaxed) == 1));
        assert_eq!(parallel(5, 3, |i| i * 2), vec![0, 2, 4, 6, 8]);
    }
}
