//! `weft bench ipam`: cluster IPAM under a burst. P pods spread over N lab
//! nodes that share one store (weft's own etcd, or the lab's Kubernetes API
//! server with `--store kubernetes`), every ADD in flight at once (C per
//! node, as C runtimes' workers would), once with weftd's group commit of
//! concurrent allocations and once without, each in a fresh lab so both
//! start from the same empty store. Right before each burst, in the same
//! lab, the kernel floor: the same veths made in-process (see `floor`).
//!
//! Per store and mode it reports the burst's wall time and pods/s (and its
//! ratio to the floor's), how many etcd writes (revisions of weft's etcd
//! or of the API server's) the burst made per pod, ADD latency as the runtime
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
mod floor;
mod probe;
mod render;
mod store;
mod workers;

use check::*;
pub use floor::FloorRun;
use floor::*;
pub use probe::etcd_revision;
use probe::*;
pub use render::{chart, render_svg, render_table};
pub use store::BenchStore;
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
    /// The stores to run on, in order; each runs every mode.
    pub stores: Vec<BenchStore>,
    /// ADDs in flight at once on each node.
    pub concurrency: usize,
    /// The modes to run, in order: `true` is group commit on.
    pub modes: Vec<bool>,
    /// weftd's `--ipam-local-allocations` values to run, in order (`true`:
    /// allocations in a node's own blocks go to its journal first).
    pub local: Vec<bool>,
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
    pub store: BenchStore,
    pub batching: bool,
    /// weftd's `--ipam-local-allocations`.
    pub local: bool,
    pub lab: String,
    /// The kernel floor, measured in the same lab just before the burst.
    pub floor: FloorRun,
    /// `pods_per_second` / the floor's.
    pub of_floor: f64,
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
    /// From the end of the burst until every view agreed (or the check
    /// gave up): the flush lag of local allocations.
    pub views_agreed_after_seconds: f64,
    /// weftd's resident memory per node with the pods attached, bytes.
    pub rss_bytes: Vec<u64>,
    pub rss_median_bytes: u64,
    pub rss_max_bytes: u64,
    /// CPU-seconds spent during the burst by every weftd, every etcd
    /// member (weft's own, or the one behind the API server), the API
    /// server, the other processes of a Kubernetes lab (kubelets,
    /// kube-proxies, controller-manager, scheduler), and this process with
    /// the weft-cni it ran.
    pub cpu_weftd_seconds: f64,
    pub cpu_etcd_seconds: f64,
    pub cpu_apiserver_seconds: f64,
    pub cpu_kube_others_seconds: f64,
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
    /// `/proc/loadavg`'s three load averages when the run began (the
    /// machine may be shared: ratios within one run are what count).
    pub load_average: String,
    pub runs: Vec<IpamRun>,
}

impl IpamBenchReport {
    fn run(&self, store: BenchStore, local: bool, batching: bool) -> Option<&IpamRun> {
        self.runs
            .iter()
            .find(|r| r.store == store && r.local == local && r.batching == batching)
    }

    /// Whether every ADD succeeded and no address was handed out twice.
    pub fn ok(&self) -> bool {
        self.runs.iter().all(|r| {
            r.failed_adds == 0 && r.duplicates == 0 && r.view_mismatches == 0 && r.floor.failed == 0
        })
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
    if spec.etcd_members == 0 && spec.stores.contains(&BenchStore::Etcd) {
        bail!("weft bench ipam measures the shared store: --etcd-members 1 to 3");
    }
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let mut runs = Vec::new();
    for &store in &spec.stores {
        for &local in &spec.local {
            for &batching in &spec.modes {
                let name = format!(
                    "{}{}{}{}",
                    spec.name,
                    store.tag(),
                    if local { "" } else { "s" },
                    if batching { "on" } else { "off" }
                );
                let mode = Mode {
                    store,
                    local,
                    batching,
                };
                runs.push(run_mode(spec, mode, &name, progress)?);
            }
        }
    }
    Ok(IpamBenchReport {
        machine: Machine::now(),
        pods: spec.pods,
        nodes: spec.nodes,
        etcd_members: spec.etcd_members,
        concurrency_per_node: spec.concurrency,
        load_average,
        runs,
    })
}

/// One configuration a burst runs in.
#[derive(Debug, Clone, Copy)]
struct Mode {
    store: BenchStore,
    local: bool,
    batching: bool,
}

impl Mode {
    fn label(&self) -> String {
        format!(
            "{}{}, group commit {}",
            self.store.name(),
            if self.local { "" } else { " (no journal)" },
            if self.batching { "on" } else { "off" }
        )
    }
}

fn run_mode(
    spec: &IpamBenchSpec,
    m: Mode,
    name: &str,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<IpamRun> {
    let store = m.store;
    let mode = &m.label();
    let mut lab_spec = LabSpec::new(name, &spec.bin_dir);
    lab_spec.nodes = spec.nodes;
    store.configure(&mut lab_spec, spec.etcd_members);
    lab_spec.weftd_args = vec![
        "--ipam-batching".into(),
        m.batching.to_string(),
        "--ipam-local-allocations".into(),
        m.local.to_string(),
    ];
    if spec.stage_timings {
        lab_spec
            .weftd_args
            .extend(["--log".into(), "info,weft_agent=debug".into()]);
    }
    progress(&format!(
        "{mode}: building lab {name}: {} nodes, store {}",
        spec.nodes,
        match store {
            BenchStore::Etcd => format!("{} etcd members", spec.etcd_members),
            BenchStore::Kubernetes => "the lab's API server".to_string(),
        }
    ));
    let t = Instant::now();
    let lab = Lab::up(&lab_spec, &mut |_| {})?;
    let lab_up_seconds = t.elapsed().as_secs_f64();
    progress(&format!("{mode}: lab up in {lab_up_seconds:.1} s"));
    let result = (|| {
        if !store.running(&lab) {
            bail!(
                "the lab's weftds do not share the {} store: nothing to measure",
                store.name()
            );
        }
        measure(&lab, spec, m, lab_up_seconds, progress)
    })();
    progress(&format!("{mode}: removing lab {name}"));
    let down = Lab::down(&lab.name);
    let run = result?;
    down?;
    Ok(run)
}

/// What one ADD gave: its latency and addresses, or why it failed.
type AddOutcome = Result<(Duration, Vec<IpAddr>), String>;

/// One pod of the burst: its node, container id, namespace.
pub(super) struct PodSlot {
    node: usize,
    cid: String,
    name: String,
    netns: String,
}

fn measure(
    lab: &Lab,
    spec: &IpamBenchSpec,
    m: Mode,
    lab_up_seconds: f64,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<IpamRun> {
    let (store, batching) = (m.store, m.batching);
    let mode = &m.label();
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
    progress(&format!("{mode}: making {} pod namespaces", pods.len()));
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
    let store_pids = store.pids(lab);
    let groups: [&[u32]; 4] = [
        &weftd_pids,
        &store_pids.etcd,
        &store_pids.apiserver,
        &store_pids.kube_others,
    ];
    // the floor and the burst each start on a machine as quiet as it gets
    quiet(mode, progress);
    progress(&format!(
        "{mode}: kernel floor: the same {} veths made in-process, {} in flight on each of {} nodes",
        pods.len(),
        spec.concurrency,
        nodes.len()
    ));
    let floor = kernel_floor(lab, &pods, &queues, spec.concurrency)?;
    progress(&format!(
        "{mode}: kernel floor: {:.2} s ({:.0} pods/s), {} failed",
        floor.seconds, floor.pods_per_second, floor.failed
    ));
    let machine_busy_before = quiet(mode, progress);
    progress(&format!(
        "{mode}: burst of {} ADDs, {} in flight on each of {} nodes",
        pods.len(),
        spec.concurrency,
        nodes.len()
    ));
    let rev_before = store.revision(lab)?;
    let cpu_before = CpuSample::take(&groups);
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
    let cpu_after = CpuSample::take(&groups);
    let rev_after = store.revision(lab)?;

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
        "{mode}: {ok_adds} pods in {seconds:.2} s ({:.0} pods/s), {etcd_writes} etcd writes ({:.3} per pod), {failed_adds} failed",
        ok_adds as f64 / seconds.max(1e-9),
        etcd_writes as f64 / ok_adds.max(1) as f64
    ));

    let rss: Vec<u64> = nodes
        .iter()
        .map(|n| n.weftd_pid.and_then(rss_bytes).unwrap_or(0))
        .collect();
    progress(&format!(
        "{mode}: checking every node's IPAM view against the ADD results"
    ));
    // with local allocations, a node's view shows another node's newest
    // allocations after that node's next flush (every 500 ms): checked
    // again until they agree, for at most 10 s
    let t = Instant::now();
    let (views_checked, view_problems, view_mismatches) = loop {
        let v = check_views(lab, &pods, &held);
        if v.2 == 0 || t.elapsed() > Duration::from_secs(10) {
            break v;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let views_agreed_after_seconds = t.elapsed().as_secs_f64();
    let stage_timings = spec.stage_timings.then(|| stage_timings(lab));

    progress(&format!(
        "{mode}: DEL of every pod, removing the namespaces"
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
    let [cpu_weftd, cpu_etcd, cpu_apiserver, cpu_kube_others] = span.groups[..] else {
        bail!("four CPU groups asked for");
    };
    let pods_per_second = ok_adds as f64 / seconds.max(1e-9);
    Ok(IpamRun {
        store,
        batching,
        local: m.local,
        lab: lab.name.clone(),
        of_floor: pods_per_second / floor.pods_per_second.max(1e-9),
        floor,
        pods: pods.len(),
        failed_adds,
        failures,
        seconds,
        pods_per_second,
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
        views_agreed_after_seconds,
        rss_bytes: rss,
        rss_median_bytes,
        rss_max_bytes,
        cpu_weftd_seconds: cpu_weftd,
        cpu_etcd_seconds: cpu_etcd,
        cpu_apiserver_seconds: cpu_apiserver,
        cpu_kube_others_seconds: cpu_kube_others,
        cpu_cni_and_bench_seconds: span.own,
        cpu_cni_seconds: span.children,
        cpu_other_seconds: (span.busy_seconds - span.groups.iter().sum::<f64>() - span.own)
            .max(0.0),
        machine_busy: span.busy,
        machine_busy_before,
        stage_timings,
        lab_up_seconds,
        netns_seconds,
        del_seconds,
        failed_dels,
    })
}

/// Waits (at most [`QUIET_WAIT`]) for the agents to finish joining
/// (registry, routes) and for other work on the machine to end: its CPU
/// would be charged to the burst. Returns the machine's busy share at the
/// end of the wait.
fn quiet(mode: &str, progress: &mut dyn FnMut(&str)) -> f64 {
    let deadline = Instant::now() + QUIET_WAIT;
    let mut told = false;
    loop {
        let busy = machine_busy_over(Duration::from_secs(1));
        if busy < QUIET || Instant::now() >= deadline {
            return busy;
        }
        if !told {
            progress(&format!(
                "{mode}: the machine is {:.0}% busy with other work; waiting up to {} s for it to calm down",
                busy * 100.0,
                QUIET_WAIT.as_secs()
            ));
            told = true;
        }
    }
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
