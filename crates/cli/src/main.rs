//! weft: the command-line tool for people and scripts.

// stdout goes through output::{out, outln}: print!/println! panic on a
// closed pipe (`weft ... | head -1`)
#![warn(clippy::print_stdout)]

mod bench_cmd;
mod bench_services_cmd;
mod install;
mod interrupt;
mod lab_cmd;
mod lab_traffic;
mod observe;
mod observe_cluster;
mod output;
mod policy_cmd;
mod preview_cmd;
mod services_cmd;
mod store_cmd;
mod ui;
mod views;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "weft: Kubernetes pod networking; inspect the node agent, run labs and benchmarks"
)]
struct Cli {
    /// weftd's socket.
    #[arg(long, global = true, env = "WEFT_SOCKET", default_value = weft_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Talk to the weftd of this lab instead of --socket.
    #[arg(long, global = true)]
    lab: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    /// One line per flow (`weft observe`; a table elsewhere).
    Compact,
    /// hubble's JSON lines: `{"flow": …, "node_name": …, "time": …}`
    /// (`weft observe`; JSON elsewhere).
    Jsonpb,
}

#[derive(Subcommand)]
enum Cmd {
    /// The agent: node, pools, endpoints, memory.
    Status,
    /// The pod interfaces on this node.
    Endpoints,
    /// Flows: what the programs forwarded, dropped and translated, and why
    /// (every lab node's with --lab).
    Observe(observe::ObserveArgs),
    /// Services as this node load-balances them (weftd --services on):
    /// frontends, backends, state, affinity entries, counters.
    Services,
    /// Addresses: pools, blocks, who holds what.
    Ipam {
        #[command(subcommand)]
        command: IpamCmd,
    },
    /// NetworkPolicy as weftd enforces it: list, show, explain, preview.
    Policy {
        #[command(subcommand)]
        command: policy_cmd::PolicyCmd,
    },
    /// A web page: live flows, a service map, the policy matrix (serves on
    /// 127.0.0.1:8080 unless --listen says otherwise).
    Ui(ui::UiArgs),
    /// Install weft on this host: binaries, CNI plugin, conflist, systemd unit.
    Install(install::InstallArgs),
    /// Benchmarks, side by side with the reference plugins.
    Bench {
        #[command(subcommand)]
        command: bench_cmd::BenchCmd,
    },
    /// The cluster's datastore: move it between etcd and the Kubernetes API.
    Store {
        #[command(subcommand)]
        command: store_cmd::StoreCmd,
    },
    /// Labs: a weft node with pods in network namespaces on this machine.
    Lab {
        #[command(subcommand)]
        command: lab_cmd::LabCmd,
    },
}

#[derive(Subcommand)]
enum IpamCmd {
    /// Pool use, blocks and every allocation with its pod.
    Show,
    /// Leaks and inconsistencies; exits 1 when something is wrong.
    Check,
}

/// Whose flows `weft observe` shows: every node of the lab, or the weftd
/// at --socket.
fn observe_targets(cli: &Cli) -> anyhow::Result<Vec<observe::Target>> {
    if let Cmd::Observe(a) = &cli.command {
        if a.cluster {
            return observe_cluster::from_cluster(
                a.kubeconfig.as_deref(),
                a.flows_port,
                a.ca.as_deref(),
                a.token_file.as_deref(),
            );
        }
    }
    match &cli.lab {
        Some(name) if !lab_cmd::exists(name) => {
            anyhow::bail!("no lab named {name}; `weft lab status` lists the labs")
        }
        Some(name) => Ok(weft_lab::Lab::load(name)?
            .nodes()
            .into_iter()
            .map(|n| observe::Target {
                node: n.name,
                socket: n.socket,
                remote: None,
            })
            .collect()),
        None => Ok(vec![observe::Target {
            node: cli.socket.display().to_string(),
            socket: cli.socket.clone(),
            remote: None,
        }]),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // the weftd the views talk to: a lab's, or the one at --socket
    let socket = || -> anyhow::Result<PathBuf> {
        match &cli.lab {
            Some(name) if !lab_cmd::exists(name) => {
                anyhow::bail!("no lab named {name}; `weft lab status` lists the labs")
            }
            Some(name) => Ok(weft_lab::Lab::dir_of(name).join("weftd.sock")),
            None => Ok(cli.socket.clone()),
        }
    };
    // views take -o jsonpb as json and compact as a table
    let view_fmt = match cli.output {
        Format::Jsonpb => Format::Json,
        Format::Compact => Format::Table,
        f => f,
    };
    let result = match cli.command {
        Cmd::Observe(ref args) => {
            observe_targets(&cli).and_then(|t| observe::run(t, args, cli.output))
        }
        Cmd::Ui(ref args) => observe_targets(&cli).and_then(|t| ui::run(t, args)),
        Cmd::Status => socket().and_then(|s| views::status(&s, view_fmt)),
        Cmd::Endpoints => socket().and_then(|s| views::endpoints(&s, view_fmt)),
        Cmd::Services => socket().and_then(|s| services_cmd::run(&s, view_fmt)),
        Cmd::Ipam {
            command: IpamCmd::Show,
        } => socket().and_then(|s| views::ipam_show(&s, view_fmt)),
        Cmd::Ipam {
            command: IpamCmd::Check,
        } => socket().and_then(|s| views::ipam_check(&s, view_fmt)),
        Cmd::Lab { command } => lab_cmd::run(command, view_fmt),
        Cmd::Store { command } => store_cmd::run(command, view_fmt),
        Cmd::Bench { command } => bench_cmd::run(command, view_fmt),
        // a lab's nodes each replay their own flows: ask them all
        Cmd::Policy {
            command:
                policy_cmd::PolicyCmd::Preview {
                    ref file,
                    ref namespace,
                },
        } if cli.lab.is_some() => {
            observe_targets(&cli).and_then(|t| preview_cmd::run(t, file, namespace, view_fmt))
        }
        Cmd::Policy { command } => socket().and_then(|s| policy_cmd::run(command, &s, view_fmt)),
        Cmd::Install(args) => install::run(args, &cli.socket),
    };
    // interrupted: the run's errors are the clean-up pulling things from
    // under it; the clean-up thread ends the process
    interrupt::hold_while_cleaning();
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weft: {e:#}");
            ExitCode::FAILURE
        }
    };
    // A reader that went away early (`weft ... | head`) is not an error.
    if let Some(e) = output::finish() {
        eprintln!("weft: writing to stdout: {e}");
        return ExitCode::FAILURE;
    }
    code
}
