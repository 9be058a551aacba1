//! `weft bench services`: Service load balancing side by side, one lab
//! cluster per proxy (weft `--services on`, kube-proxy iptables, kube-proxy
//! nftables), each with N Services of E endpoints in the API server, and a
//! "direct" row (the client dialing a backend pod's address: the floor).
//!
//! Per proxy, from a client pod on node 1 to a Service whose backends are
//! pods on node 2, over rounds: new-connection latency p50/p99 and TCP
//! round trips on a long-lived connection (`weft lab traffic`, so a weft
//! client runs in its node's cgroup); the time from an EndpointSlice change
//! (one slice among N) to the new backend answering; the proxy's CPU time
//! and RSS on node 1 during a bounded churn of slice changes. Medians and
//! spread over rounds; progress on stderr; results written outside the
//! tree by the caller.
//!
//! Services have no selector: the benchmark writes their EndpointSlices
//! itself (E addresses each, the backend pods' addresses), so N Services
//! need only E pods.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::{json, Value};

use crate::chart::{Bar, Chart, Panel, BLUE, DARK_BLUE, GREY, LIGHT_BLUE, LIGHT_GREY};
use crate::report::Machine;
use plotters::style::RGBColor;
use weft_lab::kube::{KubeSpec, ProxyMode, ServiceProxy};
use weft_lab::traffic::TrafficReport;
use weft_lab::{Lab, LabSpec};

const NS: &str = "bench";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BenchProxy {
    Weft,
    KubeProxyIptables,
    KubeProxyNftables,
}

impl BenchProxy {
    pub fn label(self) -> &'static str {
        match self {
            BenchProxy::Weft => "weft",
            BenchProxy::KubeProxyIptables => "kube-proxy iptables",
            BenchProxy::KubeProxyNftables => "kube-proxy nftables",
        }
    }

    fn kube(self) -> KubeSpec {
        let mut k = KubeSpec::default();
        match self {
            BenchProxy::Weft => k.services = ServiceProxy::Weft,
            BenchProxy::KubeProxyIptables => k.proxy_mode = ProxyMode::Iptables,
            BenchProxy::KubeProxyNftables => k.proxy_mode = ProxyMode::Nftables,
        }
        k
    }

    /// The process that programs Services on a node.
    fn agent(self) -> &'static str {
        match self {
            BenchProxy::Weft => "weftd",
            _ => "kube-proxy",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServicesBenchSpec {
    pub name: String,
    pub bin_dir: std::path::PathBuf,
    pub services: usize,
    pub endpoints: usize,
    pub rounds: usize,
    /// Seconds of traffic per latency measurement.
    pub seconds: f64,
    /// Slice changes per second and seconds of churn.
    pub churn_rate: usize,
    pub churn_seconds: u64,
    pub proxies: Vec<BenchProxy>,
}

/// Median and spread (min, max) of one figure over the rounds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(mut v: Vec<f64>) -> Spread {
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(|a, b| a.total_cmp(b));
        Spread {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProxyResult {
    pub proxy: String,
    pub connect_p50_us: Spread,
    pub connect_p99_us: Spread,
    pub rr_p50_us: Spread,
    /// From the direct row: the same figures dialing a backend pod.
    pub direct_connect_p50_us: Spread,
    pub direct_rr_p50_us: Spread,
    /// EndpointSlice change to the new backend answering, ms, counted from
    /// the start of the `kubectl apply` (its own start-up included; the
    /// same for every proxy) and from its return (the API has the change);
    /// resolution about one probe, ~10 ms.
    pub update_ms: Spread,
    pub update_after_api_ms: Spread,
    /// Seconds to create the N Services and their slices and see the last
    /// one answer.
    pub load_seconds: f64,
    pub agent: String,
    pub agent_cpu_seconds_churn: f64,
    pub agent_rss_bytes_after_churn: u64,
    pub churn_changes: usize,
    /// Probes of the latency runs that failed, by kind (none in a clean
    /// run; the figures above are of the probes that succeeded).
    pub latency_failures: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServicesReport {
    pub machine: Machine,
    pub services: usize,
    pub endpoints: usize,
    pub rounds: usize,
    pub results: Vec<ProxyResult>,
    pub seconds: f64,
}

pub fn run(
    spec: &ServicesBenchSpec,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<ServicesReport> {
    if spec.name.len() > 16 {
        bail!("run name {:?} too long (at most 16 characters)", spec.name);
    }
    let started = Instant::now();
    let mut results = Vec::new();
    for (i, &proxy) in spec.proxies.iter().enumerate() {
        let name = format!("{}{i}", spec.name);
        progress(&format!(
            "[{}/{}] {}: a 2-node lab cluster, {} Services of {} endpoints",
            i + 1,
            spec.proxies.len(),
            proxy.label(),
            spec.services,
            spec.endpoints
        ));
        let mut lspec = LabSpec::new(&name, &spec.bin_dir);
        lspec.nodes = 2;
        lspec.etcd_members = 1;
        lspec.kubernetes = Some(proxy.kube());
        let lab = Lab::up(&lspec, &mut |m| {
            if !m.starts_with(' ') {
                progress(&format!("    {m}"))
            }
        })?;
        let out = one_proxy(&lab, spec, proxy, progress);
        if let Err(e) = Lab::down(&name) {
            progress(&format!("    removing lab {name}: {e:#}"));
        }
        results.push(out?);
    }
    Ok(ServicesReport {
        machine: Machine::now(),
        services: spec.services,
        endpoints: spec.endpoints,
        rounds: spec.rounds,
        results,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn kubectl_in(lab: &Lab, args: &[&str], stdin: Option<&[u8]>) -> anyhow::Result<String> {
    let kube = lab.kube().context("no cluster")?;
    let o = lab.kubectl_as(&kube.admin_kubeconfig.clone(), args, stdin)?;
    if !o.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn apply(lab: &Lab, items: Vec<Value>) -> anyhow::Result<()> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    kubectl_in(
        lab,
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(list.to_string().as_bytes()),
    )?;
    Ok(())
}

fn service(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("s{i}"), "namespace": NS},
        "spec": {"ports": [{"name": "tcp", "port": 80, "protocol": "TCP"}]}})
}

fn slice(i: usize, addrs: &[String]) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("s{i}-b"), "namespace": NS,
            "labels": {"kubernetes.io/service-name": format!("s{i}"),
                       "endpointslice.kubernetes.io/managed-by": "weft-bench"}},
        "addressType": "IPv4",
        "ports": [{"name": "tcp", "port": 8080, "protocol": "TCP"}],
        "endpoints": addrs.iter().map(|a| json!({"addresses": [a], "conditions": {"ready": true}})).collect::<Vec<_>>()})
}

fn weft(
    lab: &Lab,
    spec: &ServicesBenchSpec,
    args: &[&str],
) -> anyhow::Result<std::process::Output> {
    Command::new(spec.bin_dir.join("weft"))
        .args(["lab"])
        .args(args)
        .args(["--name", &lab.name])
        .output()
        .context("running weft")
}

fn traffic(
    lab: &Lab,
    spec: &ServicesBenchSpec,
    to: &str,
    port: u16,
) -> anyhow::Result<TrafficReport> {
    let secs = spec.seconds.to_string();
    let o = weft(
        lab,
        spec,
        &[
            "traffic",
            "--from",
            &format!("{NS}/client"),
            "--to",
            to,
            "--port",
            &port.to_string(),
            "--seconds",
            &secs,
            "--interval-ms",
            "0",
            "--persistent",
            "1",
            "-o",
            "json",
        ],
    )?;
    if !o.status.success() {
        bail!(
            "weft lab traffic: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(serde_json::from_slice(&o.stdout)?)
}

fn ask(lab: &Lab, spec: &ServicesBenchSpec, to: &str) -> Option<String> {
    let o = weft(
        lab,
        spec,
        &[
            "probe",
            "--from",
            &format!("{NS}/client"),
            "--to",
            to,
            "--port",
            "80",
            "--timeout-ms",
            "500",
            "--send",
            "hostname",
            "--print-reply",
        ],
    )
    .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// utime + stime of `pid`, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // fields 14 and 15 of stat; after the name, at 11 and 12
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn one_proxy(
    lab: &Lab,
    spec: &ServicesBenchSpec,
    proxy: BenchProxy,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<ProxyResult> {
    let nodes: Vec<String> = lab.nodes().into_iter().map(|n| n.name).collect();
    kubectl_in(lab, &["create", "namespace", NS], None)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while kubectl_in(lab, &["get", "serviceaccount", "-n", NS, "default"], None).is_err() {
        if Instant::now() > deadline {
            bail!("no default ServiceAccount in {NS}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // E backend pods on node 2, the client on node 1
    let pod = |name: &str, node: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "app", "image": "weft.test/agnhost",
                    "ports": [{"containerPort": 8080}]}]}})
    };
    let mut items: Vec<Value> = (0..spec.endpoints)
        .map(|i| pod(&format!("be-{i}"), &nodes[1]))
        .collect();
    items.push(pod("spare", &nodes[1]));
    items.push(pod("client", &nodes[0]));
    apply(lab, items)?;
    let ips = wait_pod_ips(lab, spec.endpoints + 2)?;
    let backends: Vec<String> = (0..spec.endpoints)
        .map(|i| ips[&format!("be-{i}")].clone())
        .collect();
    progress(&format!(
        "    {} backend pods and a client Ready",
        spec.endpoints
    ));

    let t = Instant::now();
    for chunk in (0..spec.services).collect::<Vec<_>>().chunks(500) {
        apply(lab, chunk.iter().map(|&i| service(i)).collect())?;
        apply(lab, chunk.iter().map(|&i| slice(i, &backends)).collect())?;
        progress(&format!(
            "    {} of {} Services created",
            chunk[chunk.len() - 1] + 1,
            spec.services
        ));
    }
    let last = spec.services - 1;
    let cip = |i: usize| -> anyhow::Result<String> {
        kubectl_in(
            lab,
            &[
                "get",
                "service",
                "-n",
                NS,
                &format!("s{i}"),
                "-o",
                "jsonpath={.spec.clusterIP}",
            ],
            None,
        )
    };
    let last_ip = cip(last)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while ask(lab, spec, &last_ip).is_none() {
        if Instant::now() > deadline {
            bail!("the last Service never answered");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let load_seconds = t.elapsed().as_secs_f64();
    progress(&format!(
        "    the last Service answers {load_seconds:.1} s after the first was created"
    ));

    let (mut c50, mut c99, mut rr, mut dc50, mut drr, mut upd) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let mut upd_api = Vec::new();
    let mut failures = std::collections::BTreeMap::new();
    let probe_idx = spec.services / 2;
    let probe_ip = cip(probe_idx)?;
    for round in 0..spec.rounds {
        // the direct row and the Service alternate inside each round
        let d = traffic(lab, spec, &backends[0], 8080)?;
        let s = traffic(lab, spec, &last_ip, 80)?;
        // a failed probe is counted and shown, not the end of the run: the
        // churn's CPU figure after the rounds is worth having (kube-proxy
        // iptables' labs lose a direct connect now and then)
        for (what, f) in [("service", &s.failures), ("direct", &d.failures)] {
            for (k, n) in f {
                *failures.entry(format!("{what}: {k}")).or_insert(0) += n;
            }
        }
        if !s.failures.is_empty() || !d.failures.is_empty() {
            progress(&format!(
                "    round {}: failed probes, service {:?}, direct {:?}",
                round + 1,
                s.failures,
                d.failures
            ));
        }
        c50.push(s.connect_us_p50 as f64);
        c99.push(s.connect_us_p99 as f64);
        rr.push(s.rr_us_p50 as f64);
        dc50.push(d.connect_us_p50 as f64);
        drr.push(d.rr_us_p50 as f64);
        // one slice among N now names only the spare pod
        let target = if round % 2 == 0 {
            "spare".to_string()
        } else {
            "be-0".to_string()
        };
        let addr = ips[&target].clone();
        let t = Instant::now();
        apply(lab, vec![slice(probe_idx, &[addr])])?;
        let accepted = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if ask(lab, spec, &probe_ip).as_deref() == Some(target.as_str()) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the slice change never took traffic");
            }
        }
        upd.push(t.elapsed().as_secs_f64() * 1e3);
        upd_api.push(accepted.elapsed().as_secs_f64() * 1e3);
        progress(&format!(
            "    round {}/{}: connect p50 {} us (direct {}), RR p50 {} us (direct {}), update {:.0} ms",
            round + 1, spec.rounds, s.connect_us_p50, d.connect_us_p50, s.rr_us_p50, d.rr_us_p50,
            upd[upd.len() - 1]
        ));
    }

    // churn: one kubectl apply a second carrying `churn_rate` slice changes
    let agent_pid = match proxy {
        BenchProxy::Weft => lab.nodes()[0].weftd_pid,
        _ => lab
            .kube()
            .and_then(|k| k.process("kube-proxy", Some(0)))
            .and_then(|p| p.pid),
    }
    .context("the proxy's pid")?;
    let cpu0 = cpu_seconds(agent_pid);
    let mut changes = 0;
    for s in 0..spec.churn_seconds {
        let t = Instant::now();
        let items: Vec<Value> = (0..spec.churn_rate.min(spec.services))
            .map(|k| {
                let i = (s as usize * spec.churn_rate + k) % spec.services;
                let n = 1 + (s as usize + k) % spec.endpoints;
                slice(i, &backends[..n])
            })
            .collect();
        changes += items.len();
        apply(lab, items)?;
        if let Some(rest) = Duration::from_secs(1).checked_sub(t.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    // let the proxy catch up before reading its cost
    std::thread::sleep(Duration::from_secs(2));
    let cpu = cpu_seconds(agent_pid) - cpu0;
    let rss = rss_bytes(agent_pid);
    progress(&format!(
        "    churn: {changes} slice changes in {} s; {} used {cpu:.2} s CPU, RSS {:.1} MiB",
        spec.churn_seconds,
        proxy.agent(),
        rss as f64 / (1 << 20) as f64
    ));
    Ok(ProxyResult {
        proxy: proxy.label().into(),
        connect_p50_us: Spread::of(c50),
        connect_p99_us: Spread::of(c99),
        rr_p50_us: Spread::of(rr),
        direct_connect_p50_us: Spread::of(dc50),
        direct_rr_p50_us: Spread::of(drr),
        update_ms: Spread::of(upd),
        update_after_api_ms: Spread::of(upd_api),
        load_seconds,
        agent: proxy.agent().into(),
        agent_cpu_seconds_churn: cpu,
        agent_rss_bytes_after_churn: rss,
        churn_changes: changes,
        latency_failures: failures,
    })
}

fn wait_pod_ips(lab: &Lab, n: usize) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = kubectl_in(lab, &["get", "pods", "-n", NS, "-o", "json"], None)?;
        let v: Value = serde_json::from_str(&out)?;
        let ready: std::collections::BTreeMap<String, String> = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .filter_map(|p| {
                Some((
                    p["metadata"]["name"].as_str()?.to_string(),
                    p["status"]["podIP"].as_str()?.to_string(),
                ))
            })
            .collect();
        if ready.len() >= n {
            return Ok(ready);
        }
        if Instant::now() > deadline {
            bail!("{} of {n} bench pods Ready after 120 s", ready.len());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub fn render_table(r: &ServicesReport) -> String {
    let mut s = format!(
        "{} Services x {} endpoints, {} rounds (median [min..max])\n",
        r.services, r.endpoints, r.rounds
    );
    let f = |x: &Spread| format!("{:.0} [{:.0}..{:.0}]", x.median, x.min, x.max);
    s.push_str(&format!(
        "{:<20} {:>22} {:>22} {:>22} {:>22} {:>18} {:>18} {:>10} {:>14}\n",
        "proxy",
        "connect p50 us",
        "connect p99 us",
        "RR p50 us",
        "direct RR p50 us",
        "update ms",
        "after API ms",
        "CPU s",
        "RSS MiB"
    ));
    for p in &r.results {
        s.push_str(&format!(
            "{:<20} {:>22} {:>22} {:>22} {:>22} {:>18} {:>18} {:>10.2} {:>14.1}\n",
            p.proxy,
            f(&p.connect_p50_us),
            f(&p.connect_p99_us),
            f(&p.rr_p50_us),
            f(&p.direct_rr_p50_us),
            f(&p.update_ms),
            f(&p.update_after_api_ms),
            p.agent_cpu_seconds_churn,
            p.agent_rss_bytes_after_churn as f64 / (1 << 20) as f64
        ));
    }
    s
}

/// A proxy's colour by its place in the run (weft first: blue).
fn proxy_color(i: usize) -> RGBColor {
    [BLUE, GREY, LIGHT_GREY, DARK_BLUE][i % 4]
}

/// Four panels: TCP RR p50 to the ClusterIP beside the direct dial (the
/// floor), connect p50, slice change to traffic, the proxy's CPU during the
/// churn; one bar per proxy with its min–max over the rounds.
pub fn chart(r: &ServicesReport) -> Chart {
    let bar = |label: String, x: &Spread, color| Bar {
        label,
        value: x.median,
        range: Some((x.min, x.max)),
        color,
    };
    let mut rr = Vec::new();
    for (i, p) in r.results.iter().enumerate() {
        rr.push(bar(p.proxy.clone(), &p.rr_p50_us, proxy_color(i)));
        rr.push(bar(
            format!("{} direct", p.proxy),
            &p.direct_rr_p50_us,
            LIGHT_BLUE,
        ));
    }
    let per = |f: fn(&ProxyResult) -> &Spread| -> Vec<Bar> {
        r.results
            .iter()
            .enumerate()
            .map(|(i, p)| bar(p.proxy.clone(), f(p), proxy_color(i)))
            .collect()
    };
    let cpu = r
        .results
        .iter()
        .enumerate()
        .map(|(i, p)| Bar {
            label: p.proxy.clone(),
            value: p.agent_cpu_seconds_churn,
            range: None,
            color: proxy_color(i),
        })
        .collect();
    Chart {
        title: format!(
            "weft bench services: {} Services x {} endpoints, {} rounds",
            r.services, r.endpoints, r.rounds
        ),
        note: "median, whisker min..max over rounds; direct = the client dialing a backend pod"
            .into(),
        width: 820,
        panels: vec![
            Panel {
                title: "TCP round trip p50 to a ClusterIP (us, lower is better)".into(),
                unit: " us".into(),
                bars: rr,
            },
            Panel {
                title: "new connection p50 (us, lower is better)".into(),
                unit: " us".into(),
                bars: per(|p| &p.connect_p50_us),
            },
            Panel {
                title: "EndpointSlice change to the new backend answering (ms)".into(),
                unit: " ms".into(),
                bars: per(|p| &p.update_ms),
            },
            Panel {
                title: format!(
                    "the proxy's CPU during {} slice changes (s, lower is better)",
                    r.results.first().map_or(0, |p| p.churn_changes)
                ),
                unit: " s".into(),
                bars: cpu,
            },
        ],
    }
}

/// [`chart`] as SVG.
pub fn render_svg(r: &ServicesReport) -> String {
    chart(r).render_svg()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_median_and_range() {
        let s = Spread::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(vec![]).median, 0.0);
    }

    #[test]
    fn the_chart_has_a_bar_per_proxy_and_the_direct_floor() {
        let p = |name: &str| ProxyResult {
            proxy: name.into(),
            connect_p50_us: Spread::of(vec![40.0]),
            connect_p99_us: Spread::of(vec![90.0]),
            rr_p50_us: Spread::of(vec![30.0, 31.0]),
            direct_connect_p50_us: Spread::of(vec![35.0]),
            direct_rr_p50_us: Spread::of(vec![29.0]),
            update_ms: Spread::of(vec![12.0]),
            update_after_api_ms: Spread::of(vec![5.0]),
            load_seconds: 3.0,
            agent: "weftd".into(),
            agent_cpu_seconds_churn: 0.4,
            agent_rss_bytes_after_churn: 30 << 20,
            churn_changes: 100,
            latency_failures: Default::default(),
        };
        let r = ServicesReport {
            machine: crate::report::Machine::now(),
            services: 10,
            endpoints: 2,
            rounds: 2,
            results: vec![p("weft"), p("kube-proxy nftables")],
            seconds: 1.0,
        };
        let c = chart(&r);
        assert_eq!(c.panels.len(), 4);
        assert_eq!(c.panels[0].bars.len(), 4, "each proxy and its direct floor");
        assert_eq!(c.panels[2].bars[0].value, 12.0);
        let svg = render_svg(&r);
        assert!(svg.starts_with("<svg") && svg.contains("kube-proxy nftables"));
    }

    #[test]
    fn a_slice_names_its_service_and_every_address() {
        let s = slice(7, &["10.244.0.5".into(), "10.244.0.6".into()]);
        assert_eq!(s["metadata"]["labels"]["kubernetes.io/service-name"], "s7");
        assert_eq!(s["endpoints"].as_array().unwrap().len(), 2);
        assert_eq!(service(7)["metadata"]["name"], "s7");
    }
}
