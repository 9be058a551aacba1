//! The report as a table and as a chart.

use super::*;

pub(super) fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

/// The report as a table, with the ratio of group commit on to off.
pub fn render_table(r: &IpamBenchReport) -> String {
    let mut out = format!(
        "weft bench ipam: {} pods on {} nodes ({} ADDs in flight per node, {} at once), {}-member etcd ({} CPUs, kernel {})\n\n",
        r.pods,
        r.nodes,
        r.concurrency_per_node,
        r.concurrency_per_node * r.nodes,
        r.etcd_members,
        r.machine.cpus,
        r.machine.kernel
    );
    out.push_str(&format!(
        "{:<13} {:>8} {:>7} {:>11} {:>10} {:>9} {:>9} {:>8} {:>7} {:>9} {:>9}\n",
        "GROUP COMMIT",
        "SECONDS",
        "PODS/S",
        "ETCD WRITES",
        "WRITES/POD",
        "ADD p50",
        "ADD p99",
        "DUPLIC.",
        "FAILED",
        "RSS p50",
        "RSS max"
    ));
    for x in &r.runs {
        out.push_str(&format!(
            "{:<13} {:>8.2} {:>7.0} {:>11} {:>10.3} {:>7.1}ms {:>7.1}ms {:>8} {:>7} {:>5.1} MiB {:>5.1} MiB\n",
            if x.batching { "on" } else { "off" },
            x.seconds,
            x.pods_per_second,
            x.etcd_writes,
            x.etcd_writes_per_pod,
            x.add.p50_ms,
            x.add.p99_ms,
            x.duplicates,
            x.failed_adds,
            mib(x.rss_median_bytes),
            mib(x.rss_max_bytes),
        ));
    }
    if let (Some(on), Some(off)) = (r.run(true), r.run(false)) {
        out.push_str(&format!(
            "\non / off: {:.2}x the time, {:.2}x the pods/s, {:.3}x the etcd writes per pod\n",
            on.seconds / off.seconds.max(1e-9),
            on.pods_per_second / off.pods_per_second.max(1e-9),
            on.etcd_writes_per_pod / off.etcd_writes_per_pod.max(1e-9),
        ));
    }
    out.push('\n');
    for x in &r.runs {
        let mode = if x.batching { "on " } else { "off" };
        out.push_str(&format!(
            "{mode}: {} distinct addresses, {} duplicates; {} node views checked, {} mismatches\n",
            x.addresses, x.duplicates, x.views_checked, x.view_mismatches
        ));
        out.push_str(&format!(
            "{mode}: CPU during the burst: weftd {:.2} s, etcd {:.2} s, weft-cni {:.2} s + bench {:.2} s, kernel workers + others {:.2} s; machine {:.0}% busy\n",
            x.cpu_weftd_seconds,
            x.cpu_etcd_seconds,
            x.cpu_cni_seconds,
            x.cpu_cni_and_bench_seconds - x.cpu_cni_seconds,
            x.cpu_other_seconds,
            x.machine_busy * 100.0
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
    if let Some(on) = r.run(true) {
        let projected = on.seconds * 1000.0 / on.pods.max(1) as f64;
        out.push_str(&format!(
            "\ntarget, 1000 pods in under 5 s with group commit: {} ({:.2} s{})\n",
            if projected < 5.0 { "met" } else { "MISSED" },
            projected,
            if on.pods == 1000 {
                String::new()
            } else {
                format!(", projected from {} pods", on.pods)
            }
        ));
    }
    out
}

/// Five panels, group commit on and off side by side.
pub fn chart(r: &IpamBenchReport) -> Chart {
    type Metric = fn(&IpamRun) -> f64;
    let panels: [(&str, Metric, &str); 5] = [
        ("burst wall time (s, lower is better)", |x| x.seconds, " s"),
        (
            "throughput (pods/s, higher is better)",
            |x| x.pods_per_second,
            "/s",
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
            "weft bench ipam: {} pods, {} nodes x {} in flight, {}-member etcd ({} CPUs)",
            r.pods, r.nodes, r.concurrency_per_node, r.etcd_members, r.machine.cpus
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
                        let (label, color) = if x.batching {
                            ("group commit on", BLUE)
                        } else {
                            ("group commit off", LIGHT_GREY)
                        };
                        Bar {
                            label: label.into(),
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
