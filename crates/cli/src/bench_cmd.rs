//! `weft bench`: benchmarks that live in the project, run by a command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use weft_lab::bench::{self, BenchSpec};

use crate::Format;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// CNI ADD/DEL latency and burst throughput: weft against bridge + host-local
    /// and ptp + host-local, side by side in one run; weftd's memory and CPU.
    Cni {
        /// Pods added then deleted one after another, per plugin.
        #[arg(long, default_value_t = 200)]
        pods: usize,
        /// Pods in the concurrent burst, per plugin.
        #[arg(long, default_value_t = 200)]
        burst: usize,
        /// ADDs in flight at once during the burst.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Rounds the one-after-another pods are split into (plugins rotate
        /// their order each round, so machine drift hits all alike).
        #[arg(long, default_value_t = 4)]
        rounds: usize,
        /// Directory for the JSON report and the chart.
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// Where weftd and weft-cni are (default: beside this weft).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
}

pub fn run(cmd: BenchCmd, fmt: Format) -> anyhow::Result<ExitCode> {
    let BenchCmd::Cni {
        pods,
        burst,
        concurrency,
        rounds,
        out,
        bin_dir,
    } = cmd;
    let bin_dir = match bin_dir {
        Some(d) => d,
        None => crate::lab_cmd::default_bin_dir()?,
    };
    let spec = BenchSpec {
        name: format!("wbench{}", std::process::id()),
        bin_dir,
        pods,
        burst,
        concurrency,
        rounds,
    };
    let report = bench::run(&spec, &mut |m| eprintln!("{m}"))?;
    std::fs::create_dir_all(&out)?;
    let stem = out.join(format!("cni-{}", report.when_unix));
    std::fs::write(
        stem.with_extension("json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    let svg = stem.with_extension("svg");
    std::fs::write(&svg, bench::render_svg(&report))?;
    let png = stem.with_extension("png");
    let png_ok = std::process::Command::new("rsvg-convert")
        .arg("-o")
        .arg(&png)
        .arg(&svg)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if fmt == Format::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", bench::render_table(&report));
    }
    eprintln!(
        "wrote {} and {}{}",
        stem.with_extension("json").display(),
        svg.display(),
        if png_ok {
            format!(" and {}", png.display())
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}
