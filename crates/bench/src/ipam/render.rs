//! The report as a table and as a chart.

use super::*;

pub(super) fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

impl IpamRun {
    /// `etcd, on`: the store and group commit.
    pub(super) fn label(&self) -> String {
        format!(
            "{}{}, {}",
            self.store.name(),
            if self.local { "" } else { " (no jrnl)" },
            if self.batching { "on" } else { "off" }
        )
    }
}

/// The report as a table: per store and group commit, the burst beside the
/// kernel floor measured in the same lab, then where the CPU went.
pub fn render_table(r: &IpamBenchReport) -> String {
    let mut out = format!(
        "weft bench ipam: {} pods on {} nodes ({} ADDs in flight per node, {} at once); stores: {}-member etcd, the lab's API server ({} CPUs, kernel {}, load {})\n\n",
        r.pods,
        r.nodes,
        r.concurrency_per_node,
        r.concurrency_per_node * r.nodes,
        r.etcd_members,
        r.machine.cpus,
        r.machine.kernel,
        r.load_average,
    );
    out.push_str(&format!(
        "{:<26} {:>7} {:>7} {:>7} {:>7} {:>7} {:>10} {:>9} {:>9} {:>8} {:>7} {:>9}\n",
        "STORE, GROUP COMMIT",
        "SECONDS",
        "PODS/S",
        "FLOOR/S",
        "x FLOOR",
        "WRITES",
        "WRITES/POD",
        "ADD p50",
        "ADD p99",
        "DUPLIC.",
        "FAILED",
        "RSS p50"
    ));
    for x in &r.runs {
        out.push_str(&format!(
            "{:<26} {:>7.2} {:>7.0} {:>7.0} {:>7.2} {:>7} {:>10.3} {:>7.1}ms {:>7.1}ms {:>8} {:>7} {:>5.1} MiB\n",
            x.label(),
            x.seconds,
            x.pods_per_second,
            x.floor.pods_per_second,
            x.of_floor,
            x.etcd_writes,
            x.etcd_writes_per_pod,
            x.add.p50_ms,
            x.add.p99_ms,
            x.duplicates,
            x.failed_adds,
            mib(x.rss_median_bytes),
        ));
    }
    for store in [BenchStore::Etcd, BenchStore::Kubernetes] {
        for local in [true, false] {
            if let (Some(on), Some(off)) = (r.run(store, local, true), r.run(store, local, false)) {
                out.push_str(&format!(
                    "\n{}: group commit on / off: {:.2}x the time, {:.3}x the writes per pod",
                    on.label(),
                    on.seconds / off.seconds.max(1e-9),
                    on.etcd_writes_per_pod / off.etcd_writes_per_pod.max(1e-9),
                ));
            }
        }
    }
    out.push_str("\n\n");
    for x in &r.runs {
        let mode = x.label();
        out.push_str(&format!(
            "{mode}: {} distinct addresses, {} duplicates; {} node views checked, {} mismatches (agreed {:.1} s after the burst)\n",
            x.addresses, x.duplicates, x.views_checked, x.view_mismatches, x.views_agreed_after_seconds
        ));
        out.push_str(&format!(
            "{mode}: CPU during the burst: weftd {:.2} s, weft-cni {:.2} s + bench {:.2} s, etcd {:.2} s, kube-apiserver {:.2} s, other kube processes {:.2} s, kernel workers + others {:.2} s; machine {:.0}% busy (the floor: {:.2} s busy)\n",
            x.cpu_weftd_seconds,
            x.cpu_cni_seconds,
            x.cpu_cni_and_bench_seconds - x.cpu_cni_seconds,
            x.cpu_etcd_seconds,
            x.cpu_apiserver_seconds,
            x.cpu_kube_others_seconds,
            x.cpu_other_seconds,
            x.machine_busy * 100.0,
            x.floor.cpu_busy_seconds,
        ));
        if x.machine_busy_before >= QUIET {
            out.push_str(&format!(
                "{mode}: WARNING: the machine was {:.0}% busy with other work just before the burst; these figures carry it\n",
                x.machine_busy_before * 100.0
            ));
        }
        if let Some(t) = &x.stage_timings {
            out.push_str(&format!(
                "{mode}: in weftd per ADD (p50 / p99): veth {:.1} / {:.1} ms, ipam {:.1} / {:.1} ms, stage 1 {:.1} / {:.1} ms, stage 2 {:.1} / {:.1} ms\n",
                t.create.p50_ms, t.create.p99_ms, t.ipam.p50_ms, t.ipam.p99_ms,
                t.stage1.p50_ms, t.stage1.p99_ms, t.stage2.p50_ms, t.stage2.p99_ms
            ));
        }
        for f in &x.failures {
            out.push_str(&format!("{mode}: failed ADD: {f}\n"));
        }
        for p in &x.view_problems {
            out.push_str(&format!("{mode}: view: {p}\n"));
        }
    }
    let missed: Vec<String> = r
        .runs
        .iter()
        .filter(|x| x.batching && x.of_floor < 0.5)
        .map(|x| x.label())
        .collect();
    if r.runs.iter().any(|x| x.batching) {
        out.push_str(&format!(
            "\ntarget, half the kernel floor's pods/s or better with group commit: {}\n",
            if missed.is_empty() {
                "met".to_string()
            } else {
                format!("MISSED ({})", missed.join("; "))
            }
        ));
    }
    out
}

/// Six panels, every store and group commit mode side by side.
pub fn chart(r: &IpamBenchReport) -> Chart {
    type Metric = fn(&IpamRun) -> f64;
    let panels: [(&str, Metric, &str); 6] = [
        ("burst wall time (s, lower is better)", |x| x.seconds, " s"),
        (
            "throughput (pods/s, higher is better)",
            |x| x.pods_per_second,
            "/s",
        ),
        (
            "throughput / kernel floor's (higher is better)",
            |x| x.of_floor,
            "x",
        ),
        (
            "etcd writes per pod (lower is better)",
            |x| x.etcd_writes_per_pod,
            "",
        ),
        (
            "ADD latency p99 (ms, lower is better)",
            |x| x.add.p99_ms,
            " ms",
        ),
        (
            "weftd resident memory, median node (MiB)",
            |x| mib(x.rss_median_bytes),
            " MiB",
        ),
    ];
    Chart {
        title: format!(
            "weft bench ipam: {} pods, {} nodes x {} in flight, etcd or the API server ({} CPUs)",
            r.pods, r.nodes, r.concurrency_per_node, r.machine.cpus
        ),
        note: String::new(),
        width: 780,
        panels: panels
            .iter()
            .map(|(title, value, unit)| Panel {
                title: title.to_string(),
                unit: unit.to_string(),
                bars: r
                    .runs
                    .iter()
                    .map(|x| {
                        let color = if x.batching { BLUE } else { LIGHT_GREY };
                        Bar {
                            label: x.label(),
                            value: value(x),
                            range: None,
                            color,
                        }
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// [`chart`] as SVG.
pub fn render_svg(r: &IpamBenchReport) -> String {
    chart(r).render_svg()
}
