//! The report as a table and a chart.

use super::*;

/// The report as tables: per rule count, the cases; then the ratios and
/// weft's map memory.
pub fn render_table(r: &PolicyReport) -> String {
    let cell = |s: &Spread, p: usize| format!("{:.p$} ({:.p$}-{:.p$})", s.median, s.min, s.max);
    let mut out = format!(
        "weft bench policy: {} rounds, iperf3 -t {} s, {} round trips, {} new connections ({} CPUs, kernel {}, {:.0} s)\n\n",
        r.rounds, r.seconds, r.echoes, r.connects, r.machine.cpus, r.machine.kernel, r.wall_seconds
    );
    out.push_str(&format!(
        "{:>6} {:<17} {:>20} {:>20} {:>22} {:>22} {:>9}\n",
        "RULES", "CASE", "1 STREAM Gbit/s", "RR p50 us", "RR p99 us", "CRR p50 us", "INSTALL s"
    ));
    for c in &r.cases {
        out.push_str(&format!(
            "{:>6} {:<17} {:>20} {:>20} {:>22} {:>22} {:>9.2}\n",
            c.rules,
            c.case,
            cell(&c.gbps, 2),
            cell(&c.rr_p50_us, 1),
            cell(&c.rr_p99_us, 1),
            cell(&c.crr_p50_us, 1),
            c.install_s
        ));
    }
    out.push_str(&format!(
        "\n(median over rounds, min-max in brackets; client and server pinned to CPU {})\n\n",
        r.pinned_cpu
    ));
    out.push_str(&format!(
        "{:>6} {:<17} {:<12} {:>20} {:>20} {:>20} {:>20}\n",
        "RULES", "RATIO (paired)", "AGAINST", "RR p50", "RR p99", "CRR p50", "Gbit/s"
    ));
    for x in &r.ratios {
        out.push_str(&format!(
            "{:>6} {:<17} {:<12} {:>20} {:>20} {:>20} {:>20}\n",
            x.rules,
            x.case,
            x.baseline,
            cell(&x.rr_p50, 3),
            cell(&x.rr_p99, 3),
            cell(&x.crr_p50, 3),
            cell(&x.gbps, 3)
        ));
    }
    out.push_str(&format!(
        "\ngoal: weft eBPF at the largest rule count within {:.2}x of no policy (fast path) on RR p50: {}\n\n",
        r.goal_rr_p50,
        match r.goal_met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "-",
        }
    ));
    out.push_str(&format!(
        "kube-network-policies: {}\n\n",
        r.kube_network_policies
    ));
    out.push_str("weft BPF map memory (kernel memlock of the weft eBPF case's maps)\n");
    for m in &r.map_memory {
        out.push_str(&format!(
            "{:>6} rules {:>12} bytes{}\n",
            m.rules,
            m.memlock_bytes,
            m.bytes_per_rule
                .map(|b| format!("  {b:.0} bytes per added rule"))
                .unwrap_or_default()
        ));
    }
    out
}

/// One panel per metric: per rule count, a bar per case at the median with
/// a min-max whisker, as one SVG.
pub fn render_svg(r: &PolicyReport) -> String {
    type Metric = fn(&PolicyCaseResult) -> &Spread;
    let panels: [(&str, Metric); 3] = [
        ("TCP 1-byte round trip p50 (us, lower is better)", |c| {
            &c.rr_p50_us
        }),
        (
            "new connection + round trip p50 (us, lower is better)",
            |c| &c.crr_p50_us,
        ),
        ("iperf3, 1 stream (Gbit/s, higher is better)", |c| &c.gbps),
    ];
    let colors = [
        "#9a9a9a", "#c8c8c8", "#8fb8d8", "#2a7ab0", "#5aa0c8", "#d9822b", "#e8b04a", "#5aa05a",
    ];
    let mut names: Vec<&str> = Vec::new();
    for c in &r.cases {
        if !names.contains(&c.case.as_str()) {
            names.push(&c.case);
        }
    }
    let (w, bar_h, left) = (1000.0, 12.0, 190.0);
    let rows = r.cases.len() as f64;
    let groups = (r.cases.len() / names.len().max(1)) as f64;
    let panel_h = 30.0 + rows * (bar_h + 2.0) + groups * 8.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="14" font-weight="bold">weft bench policy: {} rounds, iperf3 -t {} s, {} round trips, {} new connections ({} CPUs, kernel {})</text><text x="10" y="38" fill="dimgray">per rule count N (the allowing rule last), a bar per case at the median over rounds, whiskers min-max</text>"#,
        panel_h * panels.len() as f64 + 60.0,
        r.rounds,
        r.seconds,
        r.echoes,
        r.connects,
        r.machine.cpus,
        r.machine.kernel
    );
    for (p, (title, metric)) in panels.iter().enumerate() {
        let top = 56.0 + p as f64 * panel_h;
        svg.push_str(&format!(
            r#"<text x="10" y="{}" font-weight="bold">{title}</text>"#,
            top + 12.0
        ));
        let max = r
            .cases
            .iter()
            .map(|c| metric(c).max)
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max)
            .max(1e-9);
        let scale = (w - left - 90.0) / max;
        let mut y = top + 20.0;
        let mut last_n = None;
        for c in &r.cases {
            if last_n != Some(c.rules) {
                y += 8.0;
                last_n = Some(c.rules);
            }
            let s = metric(c);
            let color = names
                .iter()
                .position(|n| *n == c.case)
                .map(|i| colors[i % colors.len()])
                .unwrap_or("black");
            let len = if s.median.is_finite() {
                s.median * scale
            } else {
                0.0
            };
            let (lo, hi) = (s.min * scale + left, s.max * scale + left);
            svg.push_str(&format!(
                r#"<text x="10" y="{ty:.1}">N={} {}</text><rect x="{left}" y="{y:.1}" width="{len:.1}" height="{bar_h}" fill="{color}"/><line x1="{lo:.1}" x2="{hi:.1}" y1="{m:.1}" y2="{m:.1}" stroke="black"/><text x="{tx:.1}" y="{ty:.1}">{:.1}</text>"#,
                c.rules,
                c.case,
                s.median,
                ty = y + 10.0,
                m = y + bar_h / 2.0,
                tx = hi.max(left + len) + 4.0,
            ));
            y += bar_h + 2.0;
        }
    }
    svg.push_str("</svg>\n");
    svg
}
