//! The report as tables and as a chart.

use super::*;

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
