//! `weft policy …`: NetworkPolicy as weftd compiled and enforces it.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde::de::DeserializeOwned;
use serde::Serialize;
use weft_api::{
    paths, PolicyExplain, PolicyExplainRequest, PolicyList, PolicyMatrix, PolicyMatrixRequest,
    PolicyShow, PolicyShowRequest,
};

use crate::output::{outln, table};
use crate::views::get;
use crate::Format;

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Every NetworkPolicy, the pods each isolates, rejected ones and why.
    List,
    /// One policy's compiled map entries, per pod it isolates.
    Show {
        /// NAMESPACE/NAME of the NetworkPolicy.
        policy: String,
    },
    /// Whether one pod may reach another, and which policy and rule decide.
    Explain {
        /// NAMESPACE/POD of the client.
        #[arg(long)]
        from: String,
        /// NAMESPACE/POD of the server.
        #[arg(long)]
        to: String,
        /// PORT/PROTOCOL, e.g. 80/tcp (the protocol defaults to tcp).
        #[arg(long)]
        port: String,
    },
    /// The reachability matrix of some pods for one port, from the compiled
    /// policy (rows: from, columns: to); exits 1 if any cell is denied.
    Matrix {
        /// NAMESPACE/POD, comma-separated or repeated (at least two).
        #[arg(long, value_delimiter = ',', required = true)]
        pods: Vec<String>,
        /// PORT/PROTOCOL, e.g. 80/tcp (the protocol defaults to tcp).
        #[arg(long)]
        port: String,
    },
    /// The recent flows candidate policies would newly drop (or newly let
    /// through), before they are applied: each node replays its flow ring.
    Preview {
        /// A YAML or JSON file of one or more NetworkPolicy documents.
        #[arg(short = 'f', long = "filename")]
        file: std::path::PathBuf,
        /// The namespace of documents that name none.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
}

pub fn post<Q: Serialize, R: DeserializeOwned>(
    socket: &Path,
    path: &str,
    q: &Q,
) -> anyhow::Result<R> {
    let body = serde_json::to_vec(q)?;
    let resp = weft_api::http::call(socket, "POST", path, &body, Duration::from_secs(30))
        .with_context(|| format!("talking to weftd at {}", socket.display()))?;
    if resp.status != 200 {
        let msg = serde_json::from_slice::<weft_api::CniError>(&resp.body)
            .map(|e| e.msg)
            .unwrap_or_else(|_| String::from_utf8_lossy(&resp.body).into_owned());
        bail!("weftd answered {}: {msg}", resp.status);
    }
    serde_json::from_slice(&resp.body)
        .context("weftd sent a reply this weft cannot read (version mismatch?)")
}

fn json<T: Serialize>(v: &T) -> anyhow::Result<ExitCode> {
    outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(ExitCode::SUCCESS)
}

/// `80/tcp`, `53/udp`, `8080` (tcp).
pub fn parse_port(s: &str) -> anyhow::Result<(u16, String)> {
    let (n, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let n: u16 = n
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .with_context(|| format!("--port {s:?}: say PORT/PROTOCOL, e.g. 80/tcp"))?;
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        bail!("--port {s:?}: the protocol is tcp, udp or sctp");
    }
    Ok((n, proto))
}

fn pods(v: &[String]) -> String {
    match v.len() {
        0 => "-".into(),
        n if n <= 4 => v.join(","),
        n => format!("{},… ({n})", v[..3].join(",")),
    }
}

/// `X` allowed, `-` denied, then every denied cell and who denied it.
fn print_matrix(m: &PolicyMatrix) {
    let mut header = vec![""];
    header.extend(m.pods.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = m
        .pods
        .iter()
        .zip(&m.rows)
        .map(|(from, row)| {
            let mut r = vec![from.clone()];
            r.extend(row.iter().map(|c| {
                match c.state.as_str() {
                    "allowed" => "X",
                    "denied" => "-",
                    "self" => ".",
                    _ => "?",
                }
                .to_string()
            }));
            r
        })
        .collect();
    table(&header, &rows);
    for (from, row) in m.pods.iter().zip(&m.rows) {
        for (to, c) in m.pods.iter().zip(row) {
            if matches!(c.state.as_str(), "denied" | "unknown") {
                let why = if c.decided_by.is_empty() {
                    &c.summary
                } else {
                    &c.decided_by
                };
                outln!("{from} -> {to}: {} ({why})", c.state);
            }
        }
    }
}

pub fn run(cmd: PolicyCmd, socket: &Path, fmt: Format) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCmd::Matrix { pods, port } => {
            let (port, protocol) = parse_port(&port)?;
            let m: PolicyMatrix = post(
                socket,
                paths::POLICY_MATRIX,
                &PolicyMatrixRequest {
                    pods,
                    port,
                    protocol,
                },
            )?;
            if fmt == Format::Json {
                json(&m)?;
            } else {
                outln!(
                    "{}/{}: may each row reach each column (X allowed, - denied, . self, ? unknown)",
                    m.port,
                    m.protocol
                );
                print_matrix(&m);
            }
            let all = m
                .rows
                .iter()
                .flatten()
                .all(|c| c.allowed() || c.state == "self");
            Ok(if all {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        PolicyCmd::Preview { file, namespace } => {
            let target = crate::observe::Target {
                node: socket.display().to_string(),
                socket: socket.to_path_buf(),
                remote: None,
            };
            crate::preview_cmd::run(vec![target], &file, &namespace, fmt)
        }
        PolicyCmd::List => {
            let l: PolicyList = get(socket, paths::POLICY)?;
            if fmt == Format::Json {
                return json(&l);
            }
            if !l.enabled {
                outln!("NetworkPolicy not enforced: {}", l.reason);
                return Ok(ExitCode::SUCCESS);
            }
            outln!(
                "enforcing ({}); {} rounds, last {} writes in {} µs; {} identities, {} ipcache and {} policy entries on this node{}",
                l.reason,
                l.rounds,
                l.last_ops,
                l.last_micros,
                l.identities,
                l.ipcache_entries,
                l.policy_entries,
                if l.synced { "" } else { "; waiting for the first list of pods, namespaces and policies" }
            );
            if let Some(e) = &l.last_error {
                outln!("last round failed (retrying): {e}");
            }
            if !l.fail_closed.is_empty() {
                outln!(
                    "fail-closed (pod not known yet): {}",
                    l.fail_closed.join(", ")
                );
            }
            let rows: Vec<Vec<String>> = l
                .policies
                .iter()
                .map(|p| {
                    vec![
                        format!("{}/{}", p.namespace, p.name),
                        if p.audit { "audit" } else { "enforce" }.into(),
                        pods(&p.ingress),
                        pods(&p.egress),
                        p.rejected
                            .as_ref()
                            .map_or_else(|| "ok".into(), |r| format!("REJECTED: {r}")),
                    ]
                })
                .collect();
            table(
                &[
                    "POLICY",
                    "MODE",
                    "ISOLATES INGRESS",
                    "ISOLATES EGRESS",
                    "STATE",
                ],
                &rows,
            );
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Show { policy } => {
            let Some((namespace, name)) = policy.split_once('/') else {
                bail!("{policy:?}: say NAMESPACE/NAME");
            };
            let s: PolicyShow = post(
                socket,
                paths::POLICY_SHOW,
                &PolicyShowRequest {
                    namespace: namespace.into(),
                    name: name.into(),
                },
            )?;
            if fmt == Format::Json {
                return json(&s);
            }
            outln!("{policy}");
            if let Some(r) = &s.policy.rejected {
                outln!("  REJECTED (isolates, allows nothing): {r}");
            }
            for e in &s.endpoints {
                outln!(
                    "  {} on {}: ingress {}, egress {}",
                    e.pod,
                    e.node,
                    e.ingress_isolated_by
                        .as_deref()
                        .map_or("not isolated".to_string(), |p| format!("isolated by {p}")),
                    e.egress_isolated_by
                        .as_deref()
                        .map_or("not isolated".to_string(), |p| format!("isolated by {p}")),
                );
                for en in &e.entries {
                    outln!("    {} ({}) -> {}", en.key, en.peer, en.allowed_by);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Explain { from, to, port } => {
            let (port, protocol) = parse_port(&port)?;
            let e: PolicyExplain = post(
                socket,
                paths::POLICY_EXPLAIN,
                &PolicyExplainRequest {
                    from,
                    to,
                    port,
                    protocol: protocol.clone(),
                },
            )?;
            if fmt == Format::Json {
                json(&e)?;
            } else {
                outln!("{} -> {} {protocol}/{port}: {}", e.src, e.dst, e.summary);
                for (dir, s) in [("egress", &e.egress), ("ingress", &e.ingress)] {
                    if let Some(s) = s {
                        outln!(
                            "  {dir} at {}: peer identity {} ({}){}: {}",
                            s.pod,
                            s.peer_identity,
                            s.peer,
                            s.entry
                                .as_ref()
                                .map_or(String::new(), |k| format!(", entry [{k}]")),
                            s.verdict
                        );
                    }
                }
            }
            // scripts can branch on the verdict
            Ok(if e.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_read_with_and_without_protocol() {
        assert_eq!(parse_port("80/tcp").unwrap(), (80, "tcp".into()));
        assert_eq!(parse_port("53/UDP").unwrap(), (53, "udp".into()));
        assert_eq!(parse_port("8080").unwrap(), (8080, "tcp".into()));
        assert!(parse_port("0/tcp").is_err());
        assert!(parse_port("80/icmp").is_err());
        assert!(parse_port("http").is_err());
    }
}
