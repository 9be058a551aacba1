//! `weft bench services` (its own file so benches can move as a group).

use std::path::PathBuf;
use std::process::ExitCode;

use weft_bench::services::{self as bs, BenchProxy};

use crate::bench_cmd::{announce, DEFAULT_OUT};
use crate::output::{out, outln};
use crate::Format;

#[derive(clap::Args)]
pub struct ServicesArgs {
    /// Services in the API server (1000 and 10000 are the sizes).
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Endpoints per Service (backend pods on the second node).
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Rounds of the latency and update measurements per proxy.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of traffic per latency measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// EndpointSlice changes per second during the churn.
    #[arg(long, default_value_t = 100)]
    churn_rate: usize,
    /// Seconds of churn (at most 120).
    #[arg(long, default_value_t = 30)]
    churn_seconds: u64,
    /// Which proxies, comma-separated: weft, iptables, nftables.
    #[arg(long, value_delimiter = ',', default_values = ["weft", "iptables", "nftables"])]
    proxies: Vec<String>,
    /// Directory for the JSON report and the chart (outside any checkout
    /// unless asked).
    #[arg(long, env = "WEFT_BENCH_DIR", default_value = DEFAULT_OUT)]
    out: PathBuf,
    /// Where weft, weftd and weft-cni are (default: beside this weft).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

pub fn run(a: ServicesArgs, fmt: Format) -> anyhow::Result<ExitCode> {
    let proxies = a
        .proxies
        .iter()
        .map(|p| match p.as_str() {
            "weft" => Ok(BenchProxy::Weft),
            "iptables" => Ok(BenchProxy::KubeProxyIptables),
            "nftables" => Ok(BenchProxy::KubeProxyNftables),
            other => anyhow::bail!("proxy {other:?}: use weft, iptables or nftables"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if a.services == 0 || a.endpoints == 0 || a.rounds == 0 {
        anyhow::bail!("--services, --endpoints and --rounds must be at least 1");
    }
    let spec = bs::ServicesBenchSpec {
        name: crate::interrupt::removed_on_interrupt(format!(
            "wbs{}",
            std::process::id() % 100_000
        ))?,
        bin_dir: match a.bin_dir {
            Some(d) => d,
            None => crate::lab_cmd::default_bin_dir()?,
        },
        services: a.services,
        endpoints: a.endpoints,
        rounds: a.rounds,
        seconds: a.seconds.clamp(0.5, 60.0),
        churn_rate: a.churn_rate,
        churn_seconds: a.churn_seconds.min(120),
        proxies,
    };
    let report = bs::run(&spec, &mut |m| eprintln!("{m}"))?;
    let written = weft_bench::report::write_results(
        "services",
        &report.machine,
        &report,
        &bs::render_svg(&report),
        &a.out,
    )?;
    if fmt == Format::Json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", bs::render_table(&report));
    }
    announce(&written);
    Ok(ExitCode::SUCCESS)
}
