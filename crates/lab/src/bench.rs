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

use crate::cmd::{cni_exec, ip};
use crate::lab::{Lab, LabSpec};

/// Where Debian's containernetworking-plugins put the reference plugins.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

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
}

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub n: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Stats {
    pub fn of(mut samples: Vec<Duration>) -> Stats {
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let q = |p: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
            ms(samples[i])
        };
        Stats {
            n: samples.len(),
            min_ms: q(0.0),
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            max_ms: q(1.0),
        }
    }
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
    pub when_unix: u64,
    pub kernel: String,
    pub cpus: usize,
    pub pods: usize,
    pub burst: usize,
    pub concurrency: usize,
    pub results: Vec<PluginResult>,
}

struct Scenario {
    label: &'static str,
    plugin: PathBuf,
    cni_path: PathBuf,
    conf: serde_json::Value,
    is_weft: bool,
}

fn scenarios(lab: &Lab) -> Vec<Scenario> {
    let hl = lab.dir.join("host-local");
    let reference = PathBuf::from(REFERENCE_PLUGINS);
    let mut weft_v4 = lab.net_conf("1.0.0");
    weft_v4["ipFamilies"] = serde_json::json!(["ipv4"]);
    vec![
        Scenario {
            label: "bridge + host-local",
            plugin: reference.join("bridge"),
            cni_path: reference.clone(),
            conf: serde_json::json!({
                "cniVersion": "1.0.0", "name": "bench-bridge", "type": "bridge",
                "bridge": "wbench0", "isGateway": true, "ipMasq": false,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]], "dataDir": hl.join("bridge")}
            }),
            is_weft: false,
        },
        Scenario {
            label: "ptp + host-local",
            plugin: reference.join("ptp"),
            cni_path: reference.clone(),
            conf: serde_json::json!({
                "cniVersion": "1.0.0", "name": "bench-ptp", "type": "ptp", "ipMasq": false,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.0.0/16"}]], "dataDir": hl.join("ptp")}
            }),
            is_weft: false,
        },
        Scenario {
            label: "weft (IPv4)",
            plugin: lab.cni_plugin(),
            cni_path: lab.bin_dir.clone(),
            conf: weft_v4,
            is_weft: true,
        },
        Scenario {
            label: "weft (dual-stack)",
            plugin: lab.cni_plugin(),
            cni_path: lab.bin_dir.clone(),
            conf: lab.net_conf("1.0.0"),
            is_weft: true,
        },
    ]
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
    let mut results = Vec::new();
    let scenarios = scenarios(lab);
    let total = scenarios.len();
    for (i, sc) in scenarios.iter().enumerate() {
        progress(&format!(
            "[{}/{total}] {}: {} pods one after another, then a burst of {} ({} at once)",
            i + 1,
            sc.label,
            spec.pods,
            spec.burst,
            spec.concurrency
        ));
        results.push(run_scenario(lab, spec, sc, i)?);
        let r = results.last().expect("just pushed");
        progress(&format!(
            "      ADD p50 {:.2} ms  DEL p50 {:.2} ms  burst {:.0} pods/s",
            r.add.p50_ms, r.del.p50_ms, r.burst_pods_per_second
        ));
    }
    progress(&format!(
        "[+] kernel floor: the same routed veth made in-process over netlink, no plugin, no IPAM ({} pods, burst {})",
        spec.pods, spec.burst
    ));
    let floor = kernel_floor(lab, spec)?;
    progress(&format!(
        "      ADD p50 {:.2} ms  DEL p50 {:.2} ms  burst {:.0} pods/s",
        floor.add.p50_ms, floor.del.p50_ms, floor.burst_pods_per_second
    ));
    results.push(floor);
    Ok(BenchReport {
        when_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        pods: spec.pods,
        burst: spec.burst,
        concurrency: spec.concurrency,
        results,
    })
}

/// The kernel's own limit for what every plugin here must do: the routed
/// veth of one IPv4 pod (weft's data path), created and deleted in-process over
/// netlink with no exec, no IPAM and no agent. DEL here waits for the kernel's
/// veth teardown, as a plugin that deletes synchronously must.
fn kernel_floor(lab: &Lab, spec: &BenchSpec) -> anyhow::Result<PluginResult> {
    use weft_datapath::{Datapath, LinuxDatapath, PodLink};
    let dp = weft_datapath::netns::run_in(&lab.node_netns, LinuxDatapath::new)??;
    let link = |ns: &Namespaces, i: usize, tag: &str| PodLink {
        netns: ns.path(i).into(),
        ifname: "eth0".into(),
        host_ifname: format!("wkf{tag}{i}"),
        mtu: 1500,
        ipv4: Some(std::net::Ipv4Addr::new(
            10,
            90,
            (i / 250) as u8,
            (i % 250 + 1) as u8,
        )),
        ipv6: None,
    };
    let seq = Namespaces::make(lab, "kf", spec.pods).context("making pod namespaces")?;
    let mut adds = Vec::with_capacity(spec.pods);
    for i in 0..spec.pods {
        let t = Instant::now();
        dp.attach(&link(&seq, i, "s"))?;
        adds.push(t.elapsed());
    }
    let mut dels = Vec::with_capacity(spec.pods);
    for i in 0..spec.pods {
        let t = Instant::now();
        dp.detach(&format!("wkfs{i}"))?;
        dels.push(t.elapsed());
    }
    drop(seq);
    let burst = Namespaces::make(lab, "kb", spec.burst).context("making pod namespaces")?;
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
                if let Err(e) = dp.attach(&link(&burst, i, "b")) {
                    failure
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e.into());
                    break;
                }
            });
        }
    });
    let burst_seconds = start.elapsed().as_secs_f64();
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    for i in 0..spec.burst {
        dp.detach(&format!("wkfb{i}"))?;
    }
    drop(burst);
    Ok(PluginResult {
        plugin: "kernel floor (netlink)".into(),
        add: Stats::of(adds),
        del: Stats::of(dels),
        burst_pods: spec.burst,
        burst_seconds,
        burst_pods_per_second: spec.burst as f64 / burst_seconds.max(1e-9),
        agent_rss_bytes: None,
        agent_cpu_seconds: None,
    })
}

/// Makes `n` pod namespaces named `<lab>-s<scenario>-<i>`; removed on drop.
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

fn exec(
    lab: &Lab,
    sc: &Scenario,
    cmd: &str,
    cid: &str,
    netns: &str,
    conf: &[u8],
) -> anyhow::Result<Duration> {
    let out = cni_exec(
        &sc.plugin,
        &sc.cni_path,
        &lab.node_netns,
        cmd,
        cid,
        netns,
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

fn run_scenario(
    lab: &Lab,
    spec: &BenchSpec,
    sc: &Scenario,
    idx: usize,
) -> anyhow::Result<PluginResult> {
    let conf = serde_json::to_vec(&sc.conf)?;
    let cpu_before = lab.weftd_pid.and_then(cpu_seconds);

    // one after another
    let seq =
        Namespaces::make(lab, &format!("s{idx}"), spec.pods).context("making pod namespaces")?;
    let mut adds = Vec::with_capacity(spec.pods);
    for i in 0..spec.pods {
        adds.push(exec(
            lab,
            sc,
            "ADD",
            &format!("seq{idx}-{i}"),
            &seq.path(i),
            &conf,
        )?);
    }
    let rss = if sc.is_weft {
        lab.weftd_pid.and_then(rss_bytes)
    } else {
        None
    };
    let mut dels = Vec::with_capacity(spec.pods);
    for i in 0..spec.pods {
        dels.push(exec(
            lab,
            sc,
            "DEL",
            &format!("seq{idx}-{i}"),
            &seq.path(i),
            &conf,
        )?);
    }
    drop(seq);

    // burst
    let burst =
        Namespaces::make(lab, &format!("b{idx}"), spec.burst).context("making pod namespaces")?;
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
                if let Err(e) = exec(
                    lab,
                    sc,
                    "ADD",
                    &format!("burst{idx}-{i}"),
                    &burst.path(i),
                    &conf,
                ) {
                    failure
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                    break;
                }
            });
        }
    });
    let burst_seconds = start.elapsed().as_secs_f64();
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    for i in 0..spec.burst {
        exec(
            lab,
            sc,
            "DEL",
            &format!("burst{idx}-{i}"),
            &burst.path(i),
            &conf,
        )?;
    }
    drop(burst);
    let cpu_after = lab.weftd_pid.and_then(cpu_seconds);
    Ok(PluginResult {
        plugin: sc.label.to_string(),
        add: Stats::of(adds),
        del: Stats::of(dels),
        burst_pods: spec.burst,
        burst_seconds,
        burst_pods_per_second: spec.burst as f64 / burst_seconds.max(1e-9),
        agent_rss_bytes: rss,
        agent_cpu_seconds: match (sc.is_weft, cpu_before, cpu_after) {
            (true, Some(a), Some(b)) => Some(b - a),
            _ => None,
        },
    })
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// utime + stime of `pid`, seconds (clock ticks are 100 Hz on Linux x86_64).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // after the comm: state is field 0, utime is 11, stime is 12
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The report as a table with ratios to the first row (bridge + host-local).
pub fn render_table(r: &BenchReport) -> String {
    let base = &r.results[0];
    let mut out = format!(
        "weft bench cni: {} pods one after another, burst of {} with {} concurrent ADDs ({} CPUs, kernel {})\n\n",
        r.pods, r.burst, r.concurrency, r.cpus, r.kernel
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

/// Three bar charts (ADD p50, DEL p50, burst pods/s) as one SVG.
pub fn render_svg(r: &BenchReport) -> String {
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
    let colors = ["#8c8c8c", "#b0b0b0", "#2a7ab0", "#1b4f72", "#d4a017"];
    let (w, bar_h, left) = (780.0, 24.0, 190.0);
    let panel_h = 40.0 + r.results.len() as f64 * (bar_h + 4.0);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"#,
        panel_h * 3.0 + 40.0
    );
    svg.push_str(&format!(
        r#"<text x="10" y="20" font-size="14" font-weight="bold">weft bench cni: {} pods sequential, burst {} x{} ({} CPUs)</text>"#,
        r.pods, r.burst, r.concurrency, r.cpus
    ));
    for (p, (title, value, unit)) in panels.iter().enumerate() {
        let top = 40.0 + p as f64 * panel_h;
        svg.push_str(&format!(
            r#"<text x="10" y="{}" font-weight="bold">{title}</text>"#,
            top + 14.0
        ));
        let max = r.results.iter().map(value).fold(0.0, f64::max).max(1e-9);
        for (i, x) in r.results.iter().enumerate() {
            let v = value(x);
            let y = top + 24.0 + i as f64 * (bar_h + 4.0);
            let len = (w - left - 90.0) * v / max;
            svg.push_str(&format!(
                r#"<text x="10" y="{}">{}</text><rect x="{left}" y="{y}" width="{len:.1}" height="{bar_h}" fill="{}"/><text x="{}" y="{}">{v:.2}{unit}</text>"#,
                y + 16.0,
                x.plugin,
                colors[i % colors.len()],
                left + len + 6.0,
                y + 16.0
            ));
        }
    }
    svg.push_str("</svg>\n");
    svg
}
