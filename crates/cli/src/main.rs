//! weft: the command-line tool for people and scripts.

// stdout goes through output::{out, outln}: print!/println! panic on a
// closed pipe (`weft ... | head -1`)
#![warn(clippy::print_stdout)]

mod bench_cmd;
mod bench_services_cmd;
mod install;
mod lab_cmd;
mod output;
mod services_cmd;
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
}

#[derive(Subcommand)]
enum Cmd {
    /// The agent: node, pools, endpoints, memory.
    Status,
    /// The pod interfaces on this node.
    Endpoints,
    /// Services as this node load-balances them (weftd --services on):
    /// frontends, backends, state, affinity entries, counters.
    Services,
    /// Addresses: pools, blocks, who holds what.
    Ipam {
        #[command(subcommand)]
        command: IpamCmd,
    },
    /// Install weft on this host: binaries, CNI plugin, conflist, systemd unit.
    Install(install::InstallArgs),
    /// Benchmarks, side by side with the reference plugins.
    Bench {
        #[command(subcommand)]
        command: bench_cmd::BenchCmd,
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
    let result = match cli.command {
        Cmd::Status => socket().and_then(|s| views::status(&s, cli.output)),
        Cmd::Endpoints => socket().and_then(|s| views::endpoints(&s, cli.output)),
        Cmd::Services => socket().and_then(|s| services_cmd::run(&s, cli.output)),
        Cmd::Ipam {
            command: IpamCmd::Show,
        } => socket().and_then(|s| views::ipam_show(&s, cli.output)),
        Cmd::Ipam {
            command: IpamCmd::Check,
        } => socket().and_then(|s| views::ipam_check(&s, cli.output)),
        Cmd::Lab { command } => lab_cmd::run(command, cli.output),
        Cmd::Bench { command } => bench_cmd::run(command, cli.output),
        Cmd::Install(args) => install::run(args, &cli.socket),
    };
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
