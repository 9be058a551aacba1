//! `weft lab`: build, inspect, check and remove labs.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use weft_lab::kube::KubeSpec;
use weft_lab::{Lab, LabSpec};

use crate::output::{outln, table};
use crate::Format;

/// Whether lab `name` exists (its record is there).
pub fn exists(name: &str) -> bool {
    Lab::dir_of(name).join("lab.json").exists()
}

/// Whether a half-built or half-removed lab `name` left something
/// `weft lab down` would remove: its directory or a namespace of its prefix.
fn has_leftovers(name: &str) -> bool {
    let prefix = format!("{name}-");
    Lab::dir_of(name).exists()
        || std::fs::read_dir("/run/netns").is_ok_and(|rd| {
            rd.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        })
}

#[derive(Subcommand)]
pub enum LabCmd {
    /// Build a lab: fabric + node namespaces, etcd, weftd per node, and pods via weft-cni.
    Up {
        #[arg(long, default_value = "weft-demo")]
        name: String,
        /// Pods to create through weft-cni directly (pod-1 ... pod-K), spread
        /// round-robin over the nodes [default: 3; 0 with Kubernetes, whose
        /// pods come from the API]
        #[arg(long)]
        pods: Option<usize>,
        /// Nodes, each a namespace with its own weftd.
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        /// etcd members in the fabric (0: each weftd keeps its embedded store; 1 or 3).
        #[arg(long, default_value_t = 0)]
        etcd_members: usize,
        /// How pod traffic crosses nodes.
        #[arg(long, default_value = "overlay", value_parser = ["overlay", "native"])]
        routing: String,
        /// MTU of the nodes' underlay (pods inherit it).
        #[arg(long, default_value_t = 1500)]
        mtu: u32,
        #[arg(long, default_value_t = 30)]
        quarantine_seconds: u64,
        /// Where weftd and weft-cni are (default: beside this weft).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Run a Kubernetes control plane in the fabric and kube-proxy on
        /// every node (the default with more than one node).
        #[arg(long, conflicts_with = "no_kubernetes")]
        kubernetes: bool,
        /// weft alone, no Kubernetes (also with several nodes).
        #[arg(long)]
        no_kubernetes: bool,
        /// weftd keeps the cluster's state in the lab's API server
        /// (`--store kubernetes`): no etcd of weft's own.
        #[arg(long, conflicts_with = "no_kubernetes")]
        kube_store: bool,
        /// kube-proxy's mode on the nodes.
        #[arg(long, default_value = "nftables", value_parser = ["nftables", "iptables"])]
        kube_proxy_mode: String,
        /// Who load-balances Services: `kube-proxy` on every node, or
        /// `weft` (weftd --services on, no kube-proxy, a cgroup per node
        /// that pods and probes run in).
        #[arg(long, default_value = "kube-proxy", value_parser = ["kube-proxy", "weft"])]
        services: String,
        /// Where kube-apiserver, kubectl, ... are (default: the cache
        /// scripts/build-kube.sh fills).
        #[arg(long)]
        kube_bin_dir: Option<PathBuf>,
        /// Leave out the closing "next:" hint (scripts that remove the lab
        /// themselves, like make demo).
        #[arg(long, hide = true)]
        no_hint: bool,
    },
    /// Run kubectl against a lab's API server (as its admin).
    Kubectl {
        #[arg(long, default_value = "weft-demo")]
        name: String,
        /// kubectl's arguments (after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
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
    /// Every pod to every pod and to every node, TCP over IPv4 and IPv6.
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
    /// Run a command in a pod's network namespace (NAMESPACE/POD, node:NODE).
    Exec {
        #[arg(long, default_value = "weft-demo")]
        name: String,
        /// NAMESPACE/POD of the lab cluster, node:NODE, or a `lab pod add` pod.
        pod: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Connect from a pod or node to a pod or address; exits 0 when it
    /// connected (UDP: the answer came back), 1 when not, saying why.
    Probe {
        #[arg(long, default_value = "weft-demo")]
        name: String,
        /// NAMESPACE/POD or node:NODE.
        #[arg(long)]
        from: String,
        /// NAMESPACE/POD, node:NODE, or an address.
        #[arg(long)]
        to: String,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value = "tcp", value_parser = ["tcp", "udp"])]
        protocol: String,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// Send this line (a lab pod answers `hostname` with its name,
        /// `clientip` with the sender's address:port, echoes the rest).
        #[arg(long)]
        send: Option<String>,
        /// Print the reply to --send.
        #[arg(long, requires = "send")]
        print_reply: bool,
        /// New connections, one after the other, each reported (at most
        /// 1000); exits 0 when every one connected.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        count: u32,
    },
    /// Steady traffic from a pod or node to an address (a Service's, a
    /// pod's) for a bounded time: new connections at a pace plus
    /// long-lived ones; reports answers, failures, latencies, the longest
    /// gap and broken long-lived connections. With --until-* it ends as
    /// soon as all of those conditions hold (--seconds stays the bound).
    Traffic(crate::lab_traffic::TrafficArgs),
}

#[derive(Subcommand)]
pub enum PodCmd {
    Add {
        pod: String,
        #[arg(long, default_value = "weft-demo")]
        name: String,
        /// Node to run it on: 1 for n1 (the only node of a one-node lab), 2 for n2, ...
        #[arg(long, default_value_t = 1)]
        node: usize,
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
            nodes,
            etcd_members,
            routing,
            mtu,
            quarantine_seconds,
            bin_dir,
            kubernetes,
            no_kubernetes,
            kube_store,
            kube_proxy_mode,
            services,
            kube_bin_dir,
            no_hint,
        } => {
            let mut spec = LabSpec::new(&name, &bin_dir.map(Ok).unwrap_or_else(default_bin_dir)?);
            spec.underlay_mtu = mtu;
            spec.quarantine_seconds = quarantine_seconds;
            spec.nodes = nodes;
            spec.etcd_members = etcd_members;
            spec.routing = routing;
            if wants_kubernetes(nodes, kubernetes || kube_store, no_kubernetes) {
                let mut k = KubeSpec {
                    store: kube_store,
                    ..KubeSpec::default()
                };
                if let Some(dir) = kube_bin_dir {
                    k.bin_dir = dir;
                }
                k.proxy_mode = kube_proxy_mode.parse().map_err(anyhow::Error::msg)?;
                k.services = services.parse().map_err(anyhow::Error::msg)?;
                spec.kubernetes = Some(k);
            }
            let pods = pods.unwrap_or(if spec.kubernetes.is_some() { 0 } else { 3 });
            let steps = spec.progress_steps() + pods;
            let mut step = 0;
            let mut progress = |msg: &str| {
                // a line starting with a space is a note within the step
                if msg.starts_with(' ') {
                    eprintln!("     {msg}");
                    return;
                }
                step += 1;
                eprintln!("[{}/{}] {msg}", step.min(steps), steps);
            };
            let started = std::time::Instant::now();
            let mut lab = Lab::up(&spec, &mut progress)?;
            let node_names: Vec<String> = lab.nodes().into_iter().map(|n| n.name).collect();
            for i in 1..=pods {
                let node = (i - 1) % node_names.len();
                let pod = lab.add_pod_on(&format!("pod-{i}"), node);
                match pod {
                    Ok(p) => progress(&format!(
                        "pod {} up on {}: {}",
                        p.name,
                        node_names[node],
                        join_ips(&p.ips)
                    )),
                    Err(e) => {
                        eprintln!("weft: {e:#}; the lab stays up, `weft lab down --name {name}` removes it");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            eprintln!(
                "lab {name} is up ({} node(s), {} etcd member(s)) in {:.1} s",
                node_names.len(),
                etcd_members,
                started.elapsed().as_secs_f64()
            );
            if !no_hint {
                if let Some(kube) = lab.kube() {
                    eprintln!(
                        "kubernetes {} at {} (inside the lab's namespaces): \
                         weft lab kubectl --name {name} -- get nodes",
                        kube.version, kube.server
                    );
                    eprintln!(
                        "KUBECONFIG={} (for clients run inside the lab, e.g. ip netns exec {})",
                        kube.admin_kubeconfig.display(),
                        lab.fabric_netns
                            .file_name()
                            .unwrap_or_default()
                            .to_string_lossy()
                    );
                }
                eprintln!("next: `weft --lab {name} endpoints`, `weft lab check --name {name}`, then `weft lab down --name {name}`");
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Kubectl { name, args } => {
            let lab = Lab::load(&name)?;
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let status = lab.kubectl_interactive(&args)?;
            Ok(ExitCode::from(
                status.code().unwrap_or(1).clamp(0, 255) as u8
            ))
        }
        LabCmd::Down { name } => {
            if !exists(&name) && !has_leftovers(&name) {
                anyhow::bail!("no lab named {name}; `weft lab status` lists the labs");
            }
            Lab::down(&name)?;
            eprintln!("lab {name} removed");
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Status { name: None } => {
            let labs = Lab::list();
            if fmt == Format::Json {
                outln!("{}", serde_json::to_string_pretty(&labs)?);
            } else if labs.is_empty() {
                outln!("no labs; `weft lab up` builds one");
            } else {
                for l in labs {
                    outln!("{l}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Status { name: Some(name) } => {
            let lab = Lab::load(&name)?;
            if fmt == Format::Json {
                outln!("{}", serde_json::to_string_pretty(&lab)?);
                return Ok(ExitCode::SUCCESS);
            }
            let nodes = lab.nodes();
            let etcd = lab.etcd_members();
            outln!("lab {} in {}", lab.name, lab.dir.display());
            outln!(
                "store: {}, routing: {}",
                if etcd.is_empty() {
                    "embedded (per node)".to_string()
                } else if lab.shared_store {
                    format!("etcd {}", lab.etcd_endpoints().join(","))
                } else {
                    format!(
                        "etcd {} runs, but this weftd has no --store etcd: embedded (per node)",
                        lab.etcd_endpoints().join(",")
                    )
                },
                lab.routing
            );
            let node_rows: Vec<Vec<String>> = nodes
                .iter()
                .map(|n| {
                    vec![
                        n.name.clone(),
                        format!("{} / {}", n.underlay_v4, n.underlay_v6),
                        pid_state(n.weftd_pid, n.weftd_alive()),
                        n.socket.display().to_string(),
                    ]
                })
                .collect();
            table(&["NODE", "UNDERLAY", "WEFTD", "SOCKET"], &node_rows);
            if !etcd.is_empty() {
                outln!();
                let etcd_rows: Vec<Vec<String>> = etcd
                    .iter()
                    .map(|m| vec![m.name.clone(), m.client_url(), pid_state(m.pid, m.alive())])
                    .collect();
                table(&["ETCD", "CLIENT URL", "PID"], &etcd_rows);
            }
            if let Some(kube) = lab.kube() {
                outln!();
                outln!(
                    "kubernetes {} at {}, KUBECONFIG={}",
                    kube.version,
                    kube.server,
                    kube.admin_kubeconfig.display()
                );
                let rows: Vec<Vec<String>> = kube
                    .processes
                    .iter()
                    .map(|p| {
                        vec![
                            p.name.clone(),
                            p.node
                                .and_then(|i| nodes.get(i))
                                .map(|n| n.name.clone())
                                .unwrap_or_else(|| "fabric".into()),
                            pid_state(p.pid, p.alive()),
                            p.log.display().to_string(),
                        ]
                    })
                    .collect();
                table(&["KUBERNETES", "WHERE", "PID", "LOG"], &rows);
            }
            outln!();
            let rows: Vec<Vec<String>> = lab
                .pods
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        nodes
                            .get(p.node)
                            .map(|n| n.name.clone())
                            .unwrap_or_else(|| format!("#{}", p.node)),
                        p.netns.display().to_string(),
                        join_ips(&p.ips),
                    ]
                })
                .collect();
            table(&["POD", "NODE", "NETNS", "ADDRESSES"], &rows);
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Check { name, svg } => check(&name, fmt, svg.as_deref()),
        LabCmd::Pod {
            command: PodCmd::Add { pod, name, node },
        } => {
            let mut lab = Lab::load(&name)?;
            let count = lab.nodes().len();
            if node == 0 || node > count {
                anyhow::bail!("--node {node}: lab {name} has nodes 1 to {count}");
            }
            let p = lab.add_pod_on(&pod, node - 1)?;
            outln!("{} {}", p.name, join_ips(&p.ips));
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Exec { name, pod, command } => exec(&name, &pod, &command),
        LabCmd::Traffic(args) => crate::lab_traffic::run(args, fmt),
        LabCmd::Probe {
            name,
            from,
            to,
            port,
            protocol,
            timeout_ms,
            send,
            print_reply,
            count,
        } => {
            let lab = Lab::load(&name)?;
            let from_ns = weft_lab::kubelet::netns_of(&lab, &from)?;
            // a client of a node (or its pod) runs in that node's cgroup,
            // where weft's socket-level load balancing sees it
            lab.enter_cgroup_of(&from)?;
            let addr = std::net::SocketAddr::new(weft_lab::kubelet::address_of(&lab, &to)?, port);
            let transport = if protocol == "udp" {
                weft_lab::probe::Transport::Udp
            } else {
                weft_lab::probe::Transport::Tcp
            };
            let timeout = Duration::from_millis(timeout_ms);
            let mut all = true;
            for _ in 0..count {
                let out =
                    weft_lab::probe::probe(&from_ns, addr, transport, timeout, send.as_deref())?;
                all &= out.connected();
                if fmt == Format::Json {
                    let reply = match &out {
                        weft_lab::probe::Outcome::Connected { reply } => reply.clone(),
                        _ => None,
                    };
                    outln!(
                        "{}",
                        serde_json::json!({"from": from, "to": addr.to_string(), "protocol": protocol,
                            "connected": out.connected(), "outcome": out.describe(), "reply": reply})
                    );
                } else {
                    if let (true, weft_lab::probe::Outcome::Connected { reply: Some(r) }) =
                        (print_reply, &out)
                    {
                        outln!("{r}");
                    }
                    eprintln!("{protocol} {from} -> {addr}: {}", out.describe());
                }
            }
            Ok(if all {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        LabCmd::Pod {
            command: PodCmd::Del { pod, name },
        } => {
            let mut lab = Lab::load(&name)?;
            lab.del_pod(&pod)?;
            outln!("{pod} deleted");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs `command` inside the namespace `pod` names and exits as it did.
fn exec(name: &str, pod: &str, command: &[String]) -> anyhow::Result<ExitCode> {
    let lab = Lab::load(name)?;
    let netns = weft_lab::kubelet::netns_of(&lab, pod)?;
    let mut cmd = std::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    let status = weft_lab::spawn_in_netns(&mut cmd, &netns)
        .with_context(|| format!("running {} in {}", command[0], netns.display()))?
        .wait()?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

/// A multi-node lab is a cluster: it runs Kubernetes unless told otherwise
/// (pods from Deployments, Services through kube-proxy); one node runs
/// weft alone unless asked.
fn wants_kubernetes(nodes: usize, kubernetes: bool, no_kubernetes: bool) -> bool {
    kubernetes || (nodes > 1 && !no_kubernetes)
}

fn pid_state(pid: Option<u32>, alive: bool) -> String {
    match (pid, alive) {
        (Some(p), true) => format!("pid {p} alive"),
        (Some(p), false) => format!("pid {p} NOT running"),
        (None, _) => "NOT running".into(),
    }
}

/// A node's short label: `node` (one-node lab) or `n1`, `n2`, ...
fn node_label(lab: &Lab, node_name: &str) -> String {
    node_name
        .strip_prefix(&format!("{}-", lab.name))
        .unwrap_or(node_name)
        .to_string()
}

fn join_ips(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// All-pairs TCP reachability, printed as a matrix: rows are sources (pods,
/// with their node), columns destinations: every pod, then every node's
/// underlay address ("node" in a one-node lab, else n1, n2, ...). Sources
/// are probed in parallel, each on its own thread.
fn check(name: &str, fmt: Format, svg: Option<&Path>) -> anyhow::Result<ExitCode> {
    let lab = Lab::load(name)?;
    let timeout = Duration::from_secs(2);
    let nodes = lab.nodes();
    let multi = nodes.len() > 1;
    let mut targets: Vec<(String, PathBuf, Vec<IpAddr>)> = lab
        .pods
        .iter()
        .map(|p| (p.name.clone(), p.netns.clone(), p.ips.clone()))
        .collect();
    for n in &nodes {
        targets.push((
            node_label(&lab, &n.name),
            n.netns.clone(),
            vec![n.underlay_v4, n.underlay_v6],
        ));
    }
    let total = lab.pods.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let per_source: Vec<(Vec<String>, Vec<serde_json::Value>)> = std::thread::scope(|s| {
        let handles: Vec<_> = lab
            .pods
            .iter()
            .map(|src| {
                let (targets, done, nodes, lab) = (&targets, &done, &nodes, &lab);
                s.spawn(move || {
                    let src_node = nodes
                        .get(src.node)
                        .map(|n| node_label(lab, &n.name))
                        .unwrap_or_default();
                    let label = if multi {
                        format!("{} ({src_node})", src.name)
                    } else {
                        src.name.clone()
                    };
                    let mut row = vec![label];
                    // every destination on its own thread too: a failed probe
                    // waits out its timeout, and they should not queue up
                    let cells: Vec<(String, Vec<serde_json::Value>)> = std::thread::scope(|s| {
                        let handles: Vec<_> = targets
                            .iter()
                            .map(|(dst, dst_ns, ips)| {
                                let src_node = &src_node;
                                s.spawn(move || {
                                    let mut cell = Vec::new();
                                    let mut results = Vec::new();
                                    for ip in ips {
                                        let ok = weft_lab::probe::tcp_check(
                                            &src.netns, dst_ns, *ip, timeout,
                                        )
                                        .is_ok();
                                        let family = if ip.is_ipv4() { "v4" } else { "v6" };
                                        cell.push(format!(
                                            "{family}:{}",
                                            if ok { "ok" } else { "FAIL" }
                                        ));
                                        results.push(serde_json::json!({
                                            "from": src.name, "from_node": src_node,
                                            "to": dst, "address": ip, "ok": ok
                                        }));
                                    }
                                    (cell.join(" "), results)
                                })
                            })
                            .collect();
                        handles
                            .into_iter()
                            .map(|h| h.join().expect("probe thread"))
                            .collect()
                    });
                    let mut results = Vec::new();
                    for (cell, r) in cells {
                        row.push(cell);
                        results.extend(r);
                    }
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    eprintln!("[{n}/{total}] checked everything from {}", src.name);
                    (row, results)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("probe thread"))
            .collect()
    });
    let mut rows = Vec::new();
    let mut results = Vec::new();
    for (row, r) in per_source {
        rows.push(row);
        results.extend(r);
    }
    let all_ok = results.iter().all(|r| r["ok"] == true);
    if let Some(path) = svg {
        let cols: Vec<&str> = targets.iter().map(|(n, _, _)| n.as_str()).collect();
        std::fs::write(path, matrix_svg(&lab.name, &cols, &rows))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if fmt == Format::Json {
        outln!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        let mut header = vec!["FROM \\ TO"];
        header.extend(targets.iter().map(|(n, _, _)| n.as_str()));
        table(&header, &rows);
        outln!(
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
    let (cell, top) = (70.0, 60.0);
    // room for the longest row label ("pod-12 (n3)")
    let left = rows
        .iter()
        .map(|r| r[0].len() as f64 * 7.5 + 20.0)
        .fold(90.0, f64::max);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_node_labs_run_kubernetes_unless_told_otherwise() {
        assert!(!wants_kubernetes(1, false, false));
        assert!(wants_kubernetes(1, true, false));
        assert!(wants_kubernetes(3, false, false));
        assert!(!wants_kubernetes(3, false, true));
    }
}
