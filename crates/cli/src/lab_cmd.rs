//! `weft lab`: build, inspect, check and remove labs.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use weft_lab::{Lab, LabSpec};

use crate::output::table;
use crate::Format;

#[derive(Subcommand)]
pub enum LabCmd {
    /// Build a lab: fabric + node namespaces, weftd, and pods via weft-cni.
    Up {
        #[arg(long, default_value = "weft-demo")]
        name: String,
        /// Pods to create (pod-1 ... pod-N).
        #[arg(long, default_value_t = 3)]
        pods: usize,
        /// MTU of the node's underlay (pods inherit it).
        #[arg(long, default_value_t = 1500)]
        mtu: u32,
        #[arg(long, default_value_t = 30)]
        quarantine_seconds: u64,
        /// Where weftd and weft-cni are (default: beside this weft).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Remove a lab and everything it made.
    Down {
        #[arg(long, default_value = "weft-demo")]
        name: String,
    },
    /// Show labs, or one lab's pods and addresses.
    Status {
        #[arg(long)]
        name: Option<String>,
    },
    /// Every pod to every pod and to the node, TCP over IPv4 and IPv6.
    Check {
        #[arg(long, default_value = "weft-demo")]
        name: String,
        /// Also draw the matrix as an SVG picture into this file.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// Add or delete a pod.
    Pod {
        #[command(subcommand)]
        command: PodCmd,
    },
}

#[derive(Subcommand)]
pub enum PodCmd {
    Add {
        pod: String,
        #[arg(long, default_value = "weft-demo")]
        name: String,
    },
    Del {
        pod: String,
        #[arg(long, default_value = "weft-demo")]
        name: String,
    },
}

pub fn default_bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this weft binary")?;
    Ok(exe.parent().map(Path::to_path_buf).unwrap_or_default())
}

pub fn run(cmd: LabCmd, fmt: Format) -> anyhow::Result<ExitCode> {
    match cmd {
        LabCmd::Up {
            name,
            pods,
            mtu,
            quarantine_seconds,
            bin_dir,
        } => {
            let mut spec = LabSpec::new(&name, &bin_dir.map(Ok).unwrap_or_else(default_bin_dir)?);
            spec.underlay_mtu = mtu;
            spec.quarantine_seconds = quarantine_seconds;
            let steps = 2 + pods;
            let mut step = 0;
            let mut progress = |msg: &str| {
                step += 1;
                eprintln!("[{}/{}] {msg}", step.min(steps + 2), steps + 2);
            };
            let mut lab = Lab::up(&spec, &mut progress)?;
            for i in 1..=pods {
                let pod = lab.add_pod(&format!("pod-{i}"));
                match pod {
                    Ok(p) => progress(&format!("pod {} up: {}", p.name, join_ips(&p.ips))),
                    Err(e) => {
                        eprintln!("weft: {e:#}; the lab stays up, `weft lab down --name {name}` removes it");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            eprintln!("lab {name} is up; try: weft --lab {name} endpoints | weft lab check --name {name} | weft lab down --name {name}");
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Down { name } => {
            Lab::down(&name)?;
            eprintln!("lab {name} removed");
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Status { name: None } => {
            let labs = Lab::list();
            if fmt == Format::Json {
                println!("{}", serde_json::to_string_pretty(&labs)?);
            } else if labs.is_empty() {
                println!("no labs; `weft lab up` builds one");
            } else {
                for l in labs {
                    println!("{l}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Status { name: Some(name) } => {
            let lab = Lab::load(&name)?;
            if fmt == Format::Json {
                println!("{}", serde_json::to_string_pretty(&lab)?);
                return Ok(ExitCode::SUCCESS);
            }
            let alive = lab
                .weftd_pid
                .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            println!("lab {} in {}", lab.name, lab.dir.display());
            println!(
                "node {} (underlay {} / {}), weftd {}",
                lab.node_netns.display(),
                lab.node_underlay_v4,
                lab.node_underlay_v6,
                match (lab.weftd_pid, alive) {
                    (Some(p), true) => format!("running as pid {p}"),
                    _ => "NOT running".into(),
                }
            );
            let rows: Vec<Vec<String>> = lab
                .pods
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.netns.display().to_string(),
                        join_ips(&p.ips),
                    ]
                })
                .collect();
            table(&["POD", "NETNS", "ADDRESSES"], &rows);
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Check { name, svg } => check(&name, fmt, svg.as_deref()),
        LabCmd::Pod {
            command: PodCmd::Add { pod, name },
        } => {
            let mut lab = Lab::load(&name)?;
            let p = lab.add_pod(&pod)?;
            println!("{} {}", p.name, join_ips(&p.ips));
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Pod {
            command: PodCmd::Del { pod, name },
        } => {
            let mut lab = Lab::load(&name)?;
            lab.del_pod(&pod)?;
            println!("{pod} deleted");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn join_ips(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// All-pairs TCP reachability, printed as a matrix: rows are sources,
/// columns destinations ("node" is the node's underlay address).
fn check(name: &str, fmt: Format, svg: Option<&Path>) -> anyhow::Result<ExitCode> {
    let lab = Lab::load(name)?;
    let timeout = Duration::from_secs(2);
    let mut targets: Vec<(String, PathBuf, Vec<IpAddr>)> = lab
        .pods
        .iter()
        .map(|p| (p.name.clone(), p.netns.clone(), p.ips.clone()))
        .collect();
    targets.push((
        "node".into(),
        lab.node_netns.clone(),
        vec![lab.node_underlay_v4, lab.node_underlay_v6],
    ));
    let mut results = Vec::new();
    let mut rows = Vec::new();
    for (i, src) in lab.pods.iter().enumerate() {
        let mut row = vec![src.name.clone()];
        for (dst, dst_ns, ips) in &targets {
            let mut cell = Vec::new();
            for ip in ips {
                let ok = weft_lab::probe::tcp_check(&src.netns, dst_ns, *ip, timeout).is_ok();
                let family = if ip.is_ipv4() { "v4" } else { "v6" };
                cell.push(format!("{family}:{}", if ok { "ok" } else { "FAIL" }));
                results.push(
                    serde_json::json!({"from": src.name, "to": dst, "address": ip, "ok": ok}),
                );
            }
            row.push(cell.join(" "));
        }
        rows.push(row);
        eprintln!(
            "[{}/{}] checked everything from {}",
            i + 1,
            lab.pods.len(),
            src.name
        );
    }
    let all_ok = results.iter().all(|r| r["ok"] == true);
    if let Some(path) = svg {
        let cols: Vec<&str> = targets.iter().map(|(n, _, _)| n.as_str()).collect();
        std::fs::write(path, matrix_svg(&lab.name, &cols, &rows))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if fmt == Format::Json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        let mut header = vec!["FROM \\ TO"];
        header.extend(targets.iter().map(|(n, _, _)| n.as_str()));
        table(&header, &rows);
        println!(
            "{}",
            if all_ok {
                "all pairs reachable over IPv4 and IPv6"
            } else {
                "some pairs are NOT reachable (FAIL)"
            }
        );
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The reachability matrix as a picture: one square per source and
/// destination, split into an IPv4 and an IPv6 half, green when TCP worked.
fn matrix_svg(lab: &str, cols: &[&str], rows: &[Vec<String>]) -> String {
    let (cell, left, top) = (70.0, 90.0, 60.0);
    let width = (left + cell * cols.len() as f64 + 20.0).max(560.0);
    let height = top + cell * rows.len() as f64 + 40.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="14" font-weight="bold">lab {lab}: TCP reachability (left half IPv4, right half IPv6)</text>"#
    );
    for (j, c) in cols.iter().enumerate() {
        let x = left + cell * j as f64 + cell / 2.0;
        svg.push_str(&format!(
            r#"<text x="{x}" y="{}" text-anchor="middle">{c}</text>"#,
            top - 8.0
        ));
    }
    for (i, row) in rows.iter().enumerate() {
        let y = top + cell * i as f64;
        svg.push_str(&format!(
            r#"<text x="10" y="{}">{}</text>"#,
            y + cell / 2.0 + 4.0,
            row[0]
        ));
        for (j, text) in row[1..].iter().enumerate() {
            let x = left + cell * j as f64;
            for (k, part) in text.split(' ').enumerate() {
                let ok = part.ends_with(":ok");
                let color = if ok { "#3c9d4e" } else { "#c0392b" };
                let half = cell / 2.0 - 2.0;
                svg.push_str(&format!(
                    r#"<rect x="{}" y="{}" width="{half}" height="{}" fill="{color}"/><text x="{}" y="{}" fill="white" text-anchor="middle">{}</text>"#,
                    x + 2.0 + k as f64 * (half + 1.0),
                    y + 2.0,
                    cell - 4.0,
                    x + 2.0 + k as f64 * (half + 1.0) + half / 2.0,
                    y + cell / 2.0 + 4.0,
                    part.split(':').next().unwrap_or_default()
                ));
            }
        }
    }
    svg.push_str(&format!(
        r#"<text x="10" y="{}">green: round trip ok, red: failed</text></svg>"#,
        height - 12.0
    ));
    svg
}
