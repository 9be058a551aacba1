//! `weft bench`: benchmarks that live in the project, run by a command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use weft_bench::cni::{self as bench, BenchSpec};
use weft_bench::report;

use crate::output::{out, outln};
use crate::Format;

/// Where benchmark reports go unless --out or WEFT_BENCH_DIR says otherwise:
/// never into the checkout a benchmark is run from.
pub(crate) const DEFAULT_OUT: &str = "/var/tmp/weft-bench";

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
        /// Directory for the JSON report and the chart (outside any checkout
        /// unless asked: pass --out bench/results to keep results with the code).
        #[arg(long, env = "WEFT_BENCH_DIR", default_value = DEFAULT_OUT)]
        out: PathBuf,
        /// Where weftd and weft-cni are (default: beside this weft).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Pod-to-pod throughput (iperf3) and TCP round-trip latency: weft
    /// same-node, overlay and native against a raw veth and a raw VXLAN.
    Dataplane {
        /// Rounds; each runs every case once, in a rotating order.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// iperf3 -t, seconds per throughput test.
        #[arg(long, default_value_t = 3)]
        seconds: u32,
        /// One-byte TCP request/response round trips per latency test.
        #[arg(long, default_value_t = 2000)]
        echoes: usize,
        /// Directory for the JSON report and the chart (outside any checkout
        /// unless asked: pass --out bench/results to keep results with the code).
        #[arg(long, env = "WEFT_BENCH_DIR", default_value = DEFAULT_OUT)]
        out: PathBuf,
        /// Where weftd and weft-cni are (default: beside this weft).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Run the flow events case instead: policy on, events on vs off
        /// (`weftd --flows`), the ring's sustained event rate, weftd's RSS
        /// with its flow buffer full.
        #[arg(long)]
        flows: bool,
        /// With --flows: new connections per CRR test.
        #[arg(long, default_value_t = 300)]
        connects: usize,
        /// With --flows: event rates per second the ring is driven at.
        #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 25_000, 50_000, 100_000, 200_000, 400_000, 800_000])]
        rates: Vec<u64>,
        /// With --flows: seconds per rate.
        #[arg(long, default_value_t = 2.0)]
        rate_seconds: f64,
        /// With --flows: both nodes with events off (an A/A run), to see
        /// the comparison's own noise on this machine.
        #[arg(long)]
        flows_control: bool,
    },
    /// Cluster IPAM under a burst: P pods over N nodes sharing a 3-member
    /// etcd, every ADD at once, with weftd's group commit on and off.
    Ipam(IpamArgs),
    /// NetworkPolicy cost, two pods on one node: weft's eBPF policy against
    /// Calico-style iptables (legacy and nft), nftables with sets, no policy
    /// and a raw veth, with N rules selecting the server.
    Policy(PolicyArgs),
    /// Service load balancing: weft against kube-proxy (iptables,
    /// nftables) and dialing the backend directly, with N Services of E
    /// endpoints in the API server: connect latency, TCP RR to a
    /// ClusterIP, slice change to traffic, the proxy's CPU and RSS under
    /// churn.
    Services(crate::bench_services_cmd::ServicesArgs),
}

pub fn run(cmd: BenchCmd, fmt: Format) -> anyhow::Result<ExitCode> {
    if let BenchCmd::Ipam(args) = cmd {
        return run_ipam(args, fmt);
    }
    if let BenchCmd::Policy(args) = cmd {
        return run_policy(args, fmt);
    }
    if let BenchCmd::Services(args) = cmd {
        return crate::bench_services_cmd::run(args, fmt);
    }
    if let BenchCmd::Dataplane {
        rounds,
        seconds,
        echoes,
        out,
        bin_dir,
        flows,
        connects,
        rates,
        rate_seconds,
        flows_control,
    } = cmd
    {
        let bin_dir = match bin_dir {
            Some(d) => d,
            None => crate::lab_cmd::default_bin_dir()?,
        };
        if flows {
            let spec = weft_bench::dataplane::flows::FlowsSpec {
                name: crate::interrupt::removed_on_interrupt(format!("wfl{}", std::process::id()))?,
                bin_dir,
                rounds,
                seconds,
                echoes,
                connects,
                rates,
                rate_seconds,
                control: flows_control,
            };
            return run_flows(&spec, &out, fmt);
        }
        let spec = weft_bench::dataplane::DataplaneSpec {
            name: crate::interrupt::removed_on_interrupt(format!("wdp{}", std::process::id()))?,
            bin_dir,
            rounds,
            seconds,
            echoes,
        };
        return run_dataplane(&spec, &out, fmt);
    }
    let BenchCmd::Cni {
        pods,
        burst,
        concurrency,
        rounds,
        out,
        bin_dir,
    } = cmd
    else {
        unreachable!("handled above")
    };
    let bin_dir = match bin_dir {
        Some(d) => d,
        None => crate::lab_cmd::default_bin_dir()?,
    };
    let spec = BenchSpec {
        name: crate::interrupt::removed_on_interrupt(format!("wbench{}", std::process::id()))?,
        bin_dir,
        pods,
        burst,
        concurrency,
        rounds,
    };
    let report = bench::run(&spec, &mut |m| eprintln!("{m}"))?;
    let written = report::write_results(
        "cni",
        &report.machine,
        &report,
        &bench::render_svg(&report),
        &out,
    )?;
    if fmt == Format::Json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", bench::render_table(&report));
    }
    announce(&written);
    Ok(ExitCode::SUCCESS)
}

fn run_dataplane(
    spec: &weft_bench::dataplane::DataplaneSpec,
    out: &std::path::Path,
    fmt: Format,
) -> anyhow::Result<ExitCode> {
    use weft_bench::dataplane as dp;
    let report = dp::run(spec, &mut |m| eprintln!("{m}"))?;
    let written = report::write_results(
        "dataplane",
        &report.machine,
        &report,
        &dp::render_svg(&report),
        out,
    )?;
    if fmt == Format::Json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", dp::render_table(&report));
    }
    announce(&written);
    Ok(ExitCode::SUCCESS)
}

fn run_flows(
    spec: &weft_bench::dataplane::flows::FlowsSpec,
    out: &std::path::Path,
    fmt: Format,
) -> anyhow::Result<ExitCode> {
    use weft_bench::dataplane::flows as fl;
    let report = fl::run(spec, &mut |m| eprintln!("{m}"))?;
    // a table, no chart: the JSON report alone
    std::fs::create_dir_all(out)?;
    let json = out.join(format!("flows-{}.json", report.machine.when_unix));
    std::fs::write(&json, serde_json::to_vec_pretty(&report)?)?;
    let written = vec![json];
    if fmt == Format::Json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", fl::render_table(&report));
    }
    announce(&written);
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct IpamArgs {
    /// Pods in the burst, spread round-robin over the nodes.
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// Lab nodes, each with its own weftd.
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    /// ADDs in flight at once on each node.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// etcd members the weftds share (with --store etcd).
    #[arg(long, default_value_t = 3)]
    etcd_members: usize,
    /// The shared stores to run on, in turn: weft's own etcd, and the lab's
    /// Kubernetes API server (`weftd --store kubernetes`, no etcd of weft's
    /// own).
    #[arg(long, value_delimiter = ',', default_value = "etcd,kubernetes", value_parser = ["etcd", "kubernetes"])]
    store: Vec<String>,
    /// Group commit: both (on, then off), or only one of them.
    #[arg(long, default_value = "both", value_parser = ["both", "on", "off"])]
    batching: String,
    /// weftd's --ipam-local-allocations: on (weftd's default), off (every
    /// allocation a store write), or both in turn.
    #[arg(long, default_value = "on", value_parser = ["both", "on", "off"])]
    local_allocations: String,
    /// Run weftd with a debug log and report where each ADD's time went in
    /// it (costs a little throughput).
    #[arg(long)]
    stage_timings: bool,
    /// Directory for the JSON report and the chart (outside any checkout
    /// unless asked: pass --out bench/results to keep results with the code).
    #[arg(long, env = "WEFT_BENCH_DIR", default_value = DEFAULT_OUT)]
    out: PathBuf,
    /// Where weftd and weft-cni are (default: beside this weft).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

fn run_ipam(a: IpamArgs, fmt: Format) -> anyhow::Result<ExitCode> {
    use weft_bench::ipam as bi;
    let spec = bi::IpamBenchSpec {
        name: crate::interrupt::removed_on_interrupt(format!("wbi{}", std::process::id()))?,
        bin_dir: match a.bin_dir {
            Some(d) => d,
            None => crate::lab_cmd::default_bin_dir()?,
        },
        pods: a.pods,
        nodes: a.nodes,
        etcd_members: a.etcd_members,
        stores: a
            .store
            .iter()
            .map(|s| bi::BenchStore::parse(s))
            .collect::<anyhow::Result<_>>()?,
        concurrency: a.concurrency,
        modes: match a.batching.as_str() {
            "on" => vec![true],
            "off" => vec![false],
            _ => vec![true, false],
        },
        local: match a.local_allocations.as_str() {
            "on" => vec![true],
            "off" => vec![false],
            _ => vec![true, false],
        },
        stage_timings: a.stage_timings,
    };
    let report = bi::run(&spec, &mut |m| eprintln!("{m}"))?;
    let written = bi::write_results(&report, &a.out)?;
    if fmt == Format::Json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", bi::render_table(&report));
    }
    announce(&written);
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(clap::Args)]
pub struct PolicyArgs {
    /// Policy at scale instead: a lab cluster with the real API server,
    /// --pods pods and --policies NetworkPolicies, one of them changed
    /// --changes times: API write to weftd, weftd to maps, API write to the
    /// verdict flipping; weftd's RSS and CPU; map bytes per rule.
    #[arg(long)]
    scale: bool,
    /// With --scale: pods, the client and the server included.
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// With --scale: NetworkPolicies, the changed one included.
    #[arg(long, default_value_t = 1000)]
    policies: usize,
    /// With --scale: changes of the probed policy.
    #[arg(long, default_value_t = 20)]
    changes: usize,
    /// With --scale: where weftd, weft-cni and weft-lab-kubelet are
    /// (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Rule counts, measured in turn (N decoy policies, then the allowing
    /// one last).
    #[arg(long, value_delimiter = ',', default_values_t = [0, 100, 1000, 10000])]
    rules: Vec<usize>,
    /// Rounds per rule count; each runs every case once, in a rotating order.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// iperf3 -t, seconds per throughput test.
    #[arg(long, default_value_t = 2)]
    seconds: u32,
    /// One-byte TCP round trips per latency test, over one connection.
    #[arg(long, default_value_t = 2000)]
    echoes: usize,
    /// New connections (each carrying one round trip) per test.
    #[arg(long, default_value_t = 300)]
    connects: usize,
    /// Directory for the JSON report and the chart (outside any checkout
    /// unless asked: pass --out bench/results to keep results with the code).
    #[arg(long, env = "WEFT_BENCH_DIR", default_value = DEFAULT_OUT)]
    out: PathBuf,
}

fn run_policy(a: PolicyArgs, fmt: Format) -> anyhow::Result<ExitCode> {
    use weft_bench::policy as bp;
    if a.scale {
        return run_policy_scale(a, fmt);
    }
    let spec = bp::PolicyBenchSpec {
        name: crate::interrupt::removed_on_interrupt(format!("wbp{}", std::process::id()))?,
        rules: a.rules,
        rounds: a.rounds,
        seconds: a.seconds,
        echoes: a.echoes,
        connects: a.connects,
    };
    let report = bp::run(&spec, &mut |m| eprintln!("{m}"))?;
    let written = weft_bench::report::write_results(
        "policy",
        &report.machine,
        &report,
        &bp::render_svg(&report),
        &a.out,
    )?;
    if fmt == Format::Json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", bp::render_table(&report));
    }
    announce(&written);
    Ok(ExitCode::SUCCESS)
}

fn run_policy_scale(a: PolicyArgs, fmt: Format) -> anyhow::Result<ExitCode> {
    use weft_bench::policy::scale;
    let spec = scale::ScaleSpec {
        name: crate::interrupt::removed_on_interrupt(format!("wps{}", std::process::id()))?,
        bin_dir: match a.bin_dir {
            Some(d) => d,
            None => crate::lab_cmd::default_bin_dir()?,
        },
        pods: a.pods,
        policies: a.policies,
        changes: a.changes,
    };
    let report = scale::run(&spec, &mut |m| eprintln!("{m}"))?;
    std::fs::create_dir_all(&a.out)?;
    let json = a
        .out
        .join(format!("policy-scale-{}.json", report.machine.when_unix));
    std::fs::write(&json, serde_json::to_vec_pretty(&report)?)?;
    if fmt == Format::Json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", scale::render_table(&report));
    }
    announce(&[json]);
    Ok(ExitCode::SUCCESS)
}

/// Tells the person where the report and the chart went.
pub(crate) fn announce(written: &[std::path::PathBuf]) {
    let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    eprintln!("wrote {}", names.join(", "));
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_go_outside_the_checkout_by_default() {
        let out = std::path::Path::new(super::DEFAULT_OUT);
        let checkout = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .canonicalize()
            .unwrap();
        assert!(out.is_absolute() && !out.starts_with(&checkout));
    }
}
