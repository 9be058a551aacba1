//! `weft bench cni`: weft against the reference plugins, side by side in one
//! run on the same lab node: per-pod ADD and DEL latency one pod after another,
//! a burst of concurrent ADDs, and weftd's memory and CPU.
//!
//! Every plugin is executed the same way (fork+exec inside the node namespace,
//! config on stdin), so the comparison includes each plugin's own start-up
//! cost, as a runtime pays it. Namespaces for pods are made before the clock
//! starts and removed after it stops; they are not part of any figure.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use weft_lab::{cni_exec, ip, Lab, LabSpec};

use crate::chart::{Bar, Chart, Panel, AMBER, BLUE, DARK_BLUE, GREY, LIGHT_GREY};
use crate::report::{cpu_seconds, rss_bytes, Machine, Stats};

/// Where the reference plugins are (the lab uses them too).
pub use weft_lab::REFERENCE_PLUGINS;

#[derive(Debug, Clone)]
pub struct BenchSpec {
    pub name: String,
    pub bin_dir: PathBuf,
    /// Pods added (then deleted) one after another, per plugin.
    pub pods: usize,
    /// Pods in the concurrent burst, per plugin.
    pub burst: usize,
    /// Concurrent ADDs in flight during the burst.
    pub concurrency: usize,
    /// The one-after-another pods are split into this many rounds; each round
    /// runs every plugin in a rotated order, so slow drift of a shared machine
    /// (and the kernel's deferred clean-up after a plugin) is spread over all.
    pub rounds: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct PluginResult {
    pub plugin: String,
    pub add: Stats,
    pub del: Stats,
    pub burst_pods: usize,
    pub burst_seconds: f64,
    pub burst_pods_per_second: f64,
    /// weftd only: resident memory with `pods` pods attached, bytes.
    pub agent_rss_bytes: Option<u64>,
    /// weftd only: CPU seconds weftd spent over this plugin's whole run.
    pub agent_cpu_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// When and where it ran.
    #[serde(flatten)]
    pub machine: Machine,
    pub pods: usize,
    pub burst: usize,
    pub concurrency: usize,
    pub results: Vec<PluginResult>,
}

struct Scenario {
    label: &'static str,
    driver: Driver,
    is_weft: bool,
}

enum Driver {
    /// A CNI plugin executed as a runtime executes it.
    Plugin {
        plugin: PathBuf,
        cni_path: PathBuf,
        conf: Vec<u8>,
    },
    /// The same routed veth weft makes, in-process over netlink: the kernel's
    /// own cost, with no exec, no IPAM and no agent. Its DEL waits for the
    /// kernel's veth teardown, as a plugin that deletes synchronously must.
    KernelFloor(weft_datapath::LinuxDatapath),
}

fn plugin(plugin: PathBuf, cni_path: PathBuf, conf: serde_json::Value) -> Driver {
    Driver::Plugin {
        plugin,
        cni_path,
        conf: serde_json::to_vec(&conf).expect("config serialises"),
    }
}

fn scenarios(lab: &Lab) -> anyhow::Result<Vec<Scenario>> {
    let hl = lab.dir.join("host-local");
    let reference = PathBuf::from(REFERENCE_PLUGINS);
    let mut weft_v4 = lab.net_conf("1.0.0");
    weft_v4["ipFamilies"] = serde_json::json!(["ipv4"]);
    Ok(vec![
        Scenario {
            label: "bridge + host-local",
            driver: plugin(
                reference.join("bridge"),
                reference.clone(),
                serde_json::json!({
                    "cniVersion": "1.0.0", "name": "bench-bridge", "type": "bridge",
                    "bridge": "wbench0", "isGateway": true, "ipMasq": false,
                    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]], "dataDir": hl.join("bridge")}
                }),
            ),
            is_weft: false,
        },
        Scenario {
            label: "ptp + host-local",
            driver: plugin(
                reference.join("ptp"),
                reference.clone(),
                serde_json::json!({
                    "cniVersion": "1.0.0", "name": "bench-ptp", "type": "ptp", "ipMasq": false,
                    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.0.0/16"}]], "dataDir": hl.join("ptp")}
                }),
            ),
            is_weft: false,
        },
        Scenario {
            label: "weft (IPv4)",
            driver: plugin(lab.cni_plugin(), lab.bin_dir.clone(), weft_v4),
            is_weft: true,
        },
        Scenario {
            label: "weft (dual-stack)",
            driver: plugin(lab.cni_plugin(), lab.bin_dir.clone(), lab.net_conf("1.0.0")),
            is_weft: true,
        },
        Scenario {
            label: "kernel floor (netlink)",
            driver: Driver::KernelFloor(weft_datapath::netns::run_in(
                &lab.node_netns,
                weft_datapath::LinuxDatapath::new,
            )??),
            is_weft: false,
        },
    ])
}

/// Runs the whole benchmark in a fresh lab named `spec.name`, removed at the end.
pub fn run(spec: &BenchSpec, progress: &mut dyn FnMut(&str)) -> anyhow::Result<BenchReport> {
    for p in ["bridge", "ptp", "host-local"] {
        if !Path::new(REFERENCE_PLUGINS).join(p).exists() {
            bail!("reference plugin {p} missing in {REFERENCE_PLUGINS}; apt-get install containernetworking-plugins (make setup does)");
        }
    }
    let mut lab_spec = LabSpec::new(&spec.name, &spec.bin_dir);
    // the burst re-uses no address, but keep quarantine short so repeated runs
    // in one lab never starve
    lab_spec.quarantine_seconds = 1;
    let lab = Lab::up(&lab_spec, progress)?;
    let result = run_in_lab(&lab, spec, progress);
    let _ = Lab::down(&lab.name);
    result
}

fn run_in_lab(
    lab: &Lab,
    spec: &BenchSpec,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<BenchReport> {
    let scenarios = scenarios(lab)?;
    let n = scenarios.len();
    let rounds = spec.rounds.clamp(1, spec.pods.max(1));
    let mut adds: Vec<Vec<Duration>> = vec![Vec::new(); n];
    let mut dels: Vec<Vec<Duration>> = vec![Vec::new(); n];
    let mut cpu = vec![0.0f64; n];
    for round in 0..rounds {
        let per_round = spec.pods / rounds + usize::from(round < spec.pods % rounds);
        progress(&format!(
            "round {}/{rounds}: {per_round} pods one after another per plugin",
            round + 1
        ));
        for k in 0..n {
            let i = (k + round) % n;
            settle(lab)?;
            let before = lab.weftd_pid.and_then(cpu_seconds);
            let (a, d) = sequential(lab, &scenarios[i], &format!("r{round}s{i}"), per_round)?;
            cpu[i] += cpu_delta(&scenarios[i], lab, before);
            adds[i].extend(a);
            dels[i].extend(d);
        }
    }
    let mut results: Vec<PluginResult> = Vec::with_capacity(n);
    let mut bursts = vec![(0.0, None); n];
    for k in 0..n {
        let i = (k + rounds) % n;
        progress(&format!(
            "burst: {} pods, {} at once: {}",
            spec.burst, spec.concurrency, scenarios[i].label
        ));
        settle(lab)?;
        let before = lab.weftd_pid.and_then(cpu_seconds);
        bursts[i] = burst(lab, &scenarios[i], &format!("b{i}"), spec)?;
        cpu[i] += cpu_delta(&scenarios[i], lab, before);
    }
    for (i, sc) in scenarios.iter().enumerate() {
        let (seconds, rss) = bursts[i];
        results.push(PluginResult {
            plugin: sc.label.to_string(),
            add: Stats::of(std::mem::take(&mut adds[i])),
            del: Stats::of(std::mem::take(&mut dels[i])),
            burst_pods: spec.burst,
            burst_seconds: seconds,
            burst_pods_per_second: spec.burst as f64 / f64::max(seconds, 1e-9),
            agent_rss_bytes: rss,
            agent_cpu_seconds: sc.is_weft.then_some(cpu[i]),
        });
        let r = &results[i];
        progress(&format!(
            "{:<24} ADD p50 {:.2} ms  DEL p50 {:.2} ms  burst {:.0} pods/s",
            r.plugin, r.add.p50_ms, r.del.p50_ms, r.burst_pods_per_second
        ));
    }
    Ok(BenchReport {
        machine: Machine::now(),
        pods: spec.pods,
        burst: spec.burst,
        concurrency: spec.concurrency,
        results,
    })
}

fn cpu_delta(sc: &Scenario, lab: &Lab, before: Option<f64>) -> f64 {
    match (sc.is_weft, before, lab.weftd_pid.and_then(cpu_seconds)) {
        (true, Some(a), Some(b)) => b - a,
        _ => 0.0,
    }
}

/// Waits until the node is quiet before a measurement: weft's deferred veth
/// teardowns have drained (no weft or bench links left in the node) and the
/// kernel has had a moment for its own deferred namespace clean-up, which
/// would otherwise be charged to whichever plugin runs next.
fn settle(lab: &Lab) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = std::process::Command::new("ip")
            .args(["-n", &lab.node_netns_name(), "-o", "link", "show"])
            .output()?;
        let busy = String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.contains(": weft") || l.contains(": veth") || l.contains(": wkf"));
        if !busy || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

/// Makes `n` pod namespaces named `<lab>-<tag>-<i>`; removed on drop.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn make(lab: &Lab, tag: &str, n: usize) -> anyhow::Result<Namespaces> {
        let mut made = Namespaces(Vec::with_capacity(n));
        for i in 0..n {
            let name = format!("{}-{tag}-{i}", lab.name);
            ip(&["netns", "add", &name])?;
            made.0.push(name);
        }
        Ok(made)
    }

    fn path(&self, i: usize) -> String {
        format!("/run/netns/{}", self.0[i])
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// One ADD or DEL of pod `i` (container id `<tag>-<i>`), timed.
fn op(
    lab: &Lab,
    sc: &Scenario,
    cmd: &str,
    tag: &str,
    ns: &Namespaces,
    i: usize,
) -> anyhow::Result<Duration> {
    let cid = format!("{tag}-{i}");
    match &sc.driver {
        Driver::Plugin {
            plugin,
            cni_path,
            conf,
        } => {
            let out = cni_exec(
                plugin,
                cni_path,
                &lab.node_netns,
                cmd,
                &cid,
                &ns.path(i),
                "eth0",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=pod",
                conf,
            )?;
            if !out.success {
                bail!(
                    "{} {cmd} {cid} failed: {}{}",
                    sc.label,
                    out.stdout.trim(),
                    out.stderr.trim()
                );
            }
            Ok(out.elapsed)
        }
        Driver::KernelFloor(dp) => {
            let t = Instant::now();
            kernel_floor_op(dp, cmd, &format!("{tag}-{i}"), &ns.path(i), i)?;
            Ok(t.elapsed())
        }
    }
}

/// The kernel floor's ADD or DEL of pod `i`: the routed veth weft makes
/// (host side `wkf<tag>`, the pod's `eth0` in `netns` with an address of
/// 10.90.0.0/16), made or removed in-process over netlink by `dp`. Also
/// `weft bench ipam`'s floor, so both benches measure the same thing.
pub fn kernel_floor_op(
    dp: &weft_datapath::LinuxDatapath,
    cmd: &str,
    tag: &str,
    netns: &str,
    i: usize,
) -> anyhow::Result<()> {
    use weft_datapath::Links;
    let host = format!("wkf{tag}");
    if cmd == "ADD" {
        dp.attach(&weft_datapath::PodLink {
            netns: netns.into(),
            ifname: "eth0".into(),
            host_ifname: host,
            mtu: 1500,
            ipv4: Some(std::net::Ipv4Addr::new(
                10,
                90,
                (i / 250) as u8,
                (i % 250 + 1) as u8,
            )),
            ipv6: None,
        })?;
    } else {
        dp.detach(&host)?;
    }
    Ok(())
}

fn sequential(
    lab: &Lab,
    sc: &Scenario,
    tag: &str,
    n: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let ns = Namespaces::make(lab, tag, n).context("making pod namespaces")?;
    let adds = (0..n)
        .map(|i| op(lab, sc, "ADD", tag, &ns, i))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dels = (0..n)
        .map(|i| op(lab, sc, "DEL", tag, &ns, i))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((adds, dels))
}

/// A burst of `spec.burst` ADDs, `spec.concurrency` at a time: the seconds it
/// took, and weftd's resident memory with all of them attached.
fn burst(
    lab: &Lab,
    sc: &Scenario,
    tag: &str,
    spec: &BenchSpec,
) -> anyhow::Result<(f64, Option<u64>)> {
    let ns = Namespaces::make(lab, tag, spec.burst).context("making pod namespaces")?;
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..spec.concurrency.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= spec.burst {
                    break;
                }
                if let Err(e) = op(lab, sc, "ADD", tag, &ns, i) {
                    failure
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                    break;
                }
            });
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let rss = if sc.is_weft {
        lab.weftd_pid.and_then(rss_bytes)
    } else {
        None
    };
    for i in 0..spec.burst {
        op(lab, sc, "DEL", tag, &ns, i)?;
    }
    Ok((seconds, rss))
}

/// The report as a table with ratios to the first row (bridge + host-local).
pub fn render_table(r: &BenchReport) -> String {
    let base = &r.results[0];
    let mut out = format!(
        "weft bench cni: {} pods one after another, burst of {} with {} concurrent ADDs ({} CPUs, kernel {})\n\n",
        r.pods, r.burst, r.concurrency, r.machine.cpus, r.machine.kernel
    );
    out.push_str(&format!(
        "{:<20} {:>9} {:>9} {:>8} {:>9} {:>9} {:>8} {:>10} {:>8} {:>10}\n",
        "PLUGIN",
        "ADD p50",
        "ADD p99",
        "vs base",
        "DEL p50",
        "DEL p99",
        "vs base",
        "BURST/s",
        "vs base",
        "AGENT RSS"
    ));
    for x in &r.results {
        out.push_str(&format!(
            "{:<20} {:>7.2}ms {:>7.2}ms {:>7.2}x {:>7.2}ms {:>7.2}ms {:>7.2}x {:>10.0} {:>7.2}x {:>10}\n",
            x.plugin,
            x.add.p50_ms,
            x.add.p99_ms,
            x.add.p50_ms / base.add.p50_ms,
            x.del.p50_ms,
            x.del.p99_ms,
            x.del.p50_ms / base.del.p50_ms,
            x.burst_pods_per_second,
            x.burst_pods_per_second / base.burst_pods_per_second,
            x.agent_rss_bytes.map(|b| format!("{:.1} MiB", b as f64 / 1048576.0)).unwrap_or_else(|| "-".into()),
        ));
    }
    out.push_str("\n(vs base: ratio to bridge + host-local; latency below 1.00x and burst above 1.00x are better)\n");
    for x in &r.results {
        if let Some(cpu) = x.agent_cpu_seconds {
            out.push_str(&format!(
                "{}: weftd used {:.2} CPU-seconds for {} pods ({:.2} ms per ADD+DEL)\n",
                x.plugin,
                cpu,
                r.pods + r.burst,
                cpu * 1e3 / (r.pods + r.burst) as f64
            ));
        }
    }
    out
}

/// Three panels (ADD p50, DEL p50, burst pods/s), one bar per plugin.
pub fn chart(r: &BenchReport) -> Chart {
    type Metric = fn(&PluginResult) -> f64;
    let panels: [(&str, Metric, &str); 3] = [
        (
            "ADD latency, median (ms, lower is better)",
            |x| x.add.p50_ms,
            "ms",
        ),
        (
            "DEL latency, median (ms, lower is better)",
            |x| x.del.p50_ms,
            "ms",
        ),
        (
            "burst throughput (pods/s, higher is better)",
            |x| x.burst_pods_per_second,
            "/s",
        ),
    ];
    let colors = [GREY, LIGHT_GREY, BLUE, DARK_BLUE, AMBER];
    Chart {
        title: format!(
            "weft bench cni: {} pods sequential, burst {} x{} ({} CPUs)",
            r.pods, r.burst, r.concurrency, r.machine.cpus
        ),
        note: String::new(),
        width: 780,
        panels: panels
            .iter()
            .map(|(title, value, unit)| Panel {
                title: title.to_string(),
                unit: unit.to_string(),
                bars: r
                    .results
                    .iter()
                    .enumerate()
                    .map(|(i, x)| Bar {
                        label: x.plugin.clone(),
                        value: value(x),
                        range: None,
                        color: colors[i % colors.len()],
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// [`chart`] as SVG.
pub fn render_svg(r: &BenchReport) -> String {
    chart(r).render_svg()
}
