//! `weft observe`: flows of one node's weftd, or of every node of a lab
//! (`weft --lab X observe`), with `hubble observe`'s flags and formats.
//!
//! Filtering happens in weftd (only matching flows cross the socket); the
//! CLI merges nodes: their stored flows are fetched from every node at
//! once, sorted by time and cut to `--last N`, then (with `-f`) each node is
//! followed from just after the last flow it gave, and new flows are
//! printed as they arrive from any node.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use weft_api::stream::{stream, Streamed};
use weft_api::{paths, Flow, FlowFilter, FlowLine, FlowQuery, Peer, Verdict};

use crate::output::outln;
use crate::Format;

/// Flows shown without `--last`, `--since` or `-f` (as hubble).
const DEFAULT_LAST: usize = 20;
/// A node silent for this long is taken as gone (weftd sends keep-alives
/// every second).
const IDLE: Duration = Duration::from_secs(10);

#[derive(Args, Debug, Default, Clone)]
pub struct ObserveArgs {
    /// FORWARDED, DROPPED, AUDIT or TRANSLATED (repeat for several).
    #[arg(long)]
    verdict: Vec<String>,
    /// Either side in this namespace.
    #[arg(short = 'n', long)]
    namespace: Vec<String>,
    /// Either side is this pod: NAME, NAMESPACE/NAME, or a PREFIX*.
    #[arg(long)]
    pod: Vec<String>,
    /// The source is this pod.
    #[arg(long)]
    from_pod: Vec<String>,
    /// The destination is this pod.
    #[arg(long)]
    to_pod: Vec<String>,
    /// Either side carries this label: KEY=VALUE or KEY.
    #[arg(short = 'l', long)]
    label: Vec<String>,
    #[arg(long)]
    from_label: Vec<String>,
    #[arg(long)]
    to_label: Vec<String>,
    /// Either side's port.
    #[arg(long)]
    port: Vec<u16>,
    /// tcp, udp, icmp, icmpv6, sctp.
    #[arg(long)]
    protocol: Vec<String>,
    /// Flows since a time ago (30s, 5m, 1h, 2d, 1h30m) or an RFC 3339 time
    /// (2026-12-03T12:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// Only the last N stored flows (20 by default without --since or -f).
    #[arg(long)]
    last: Option<usize>,
    /// Keep following: print new flows as they come (Ctrl-C ends).
    #[arg(short = 'f', long)]
    follow: bool,
    /// Every node of the Kubernetes cluster (the kubeconfig's): each weftd
    /// dialled at its InternalIP over TLS (`weftd --flows-listen`), the
    /// kubeconfig's token presented; needs --ca.
    #[arg(long)]
    pub cluster: bool,
    /// With --cluster: the CA (PEM) that signed the weftds' certificates.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// With --cluster: the kubeconfig (default: $KUBECONFIG, ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// With --cluster: a file holding the bearer token to present instead
    /// of the kubeconfig's.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// With --cluster: the port weftd's --flows-listen uses.
    #[arg(long, default_value_t = crate::observe_cluster::DEFAULT_PORT)]
    pub flows_port: u16,
}

/// A weftd to ask, by node name.
#[derive(Clone)]
pub struct Target {
    pub node: String,
    pub socket: PathBuf,
    /// A node of a cluster, over TLS, instead of the socket.
    pub remote: Option<std::sync::Arc<crate::observe_cluster::Remote>>,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// `30s`, `5m`, `1h30m`, `2d` (ago), or RFC 3339 in UTC; ns since the epoch.
pub fn parse_since(s: &str, now_ns: u64) -> anyhow::Result<u64> {
    if let Some(t) = parse_rfc3339(s) {
        return Ok(t);
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => bail!("--since {s:?}: use a duration like 30s, 5m, 1h30m, 2d or an RFC 3339 time"),
        };
        let n: u64 = num
            .parse()
            .with_context(|| format!("--since {s:?}: a number must come before {c}"))?;
        total += n * unit;
        num.clear();
    }
    if !num.is_empty() || total == 0 {
        bail!("--since {s:?}: use a duration like 30s, 5m, 1h30m, 2d or an RFC 3339 time");
    }
    Ok(now_ns.saturating_sub(total * 1_000_000_000))
}

/// `YYYY-MM-DDTHH:MM:SS[.frac]Z` (UTC only).
fn parse_rfc3339(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix('z'))?;
    let (date, time) = s.split_once(['T', 't'])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: u64 = format!("{frac:0<9}").parse().ok()?;
    // Howard Hinnant's days_from_civil
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs).ok().map(|s| s * 1_000_000_000 + nanos)
}

impl ObserveArgs {
    fn filter(&self) -> anyhow::Result<FlowFilter> {
        let verdicts = self
            .verdict
            .iter()
            .map(|v| {
                Verdict::parse(v).with_context(|| {
                    format!("--verdict {v:?}: use FORWARDED, DROPPED, AUDIT or TRANSLATED")
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(FlowFilter {
            verdicts,
            namespaces: self.namespace.clone(),
            pods: self.pod.clone(),
            from_pods: self.from_pod.clone(),
            to_pods: self.to_pod.clone(),
            labels: self.label.clone(),
            from_labels: self.from_label.clone(),
            to_labels: self.to_label.clone(),
            ports: self.port.clone(),
            protocols: self.protocol.clone(),
        })
    }
}

fn peer_text(p: &Peer) -> String {
    let who = match (&p.namespace, &p.pod) {
        (Some(ns), Some(pod)) if !ns.is_empty() => format!("{ns}/{pod}"),
        (_, Some(pod)) => pod.clone(),
        _ => p.ip.map(|ip| ip.to_string()).unwrap_or_else(|| "?".into()),
    };
    if p.port == 0 {
        who
    } else if who.contains(':') && p.pod.is_none() {
        format!("[{who}]:{}", p.port)
    } else {
        format!("{who}:{}", p.port)
    }
}

/// What decided, in a few words: the reason and the policy rule, or the
/// backend of a translation.
fn summary(f: &Flow) -> String {
    let mut parts = Vec::new();
    if let Some(r) = &f.drop_reason {
        parts.push(r.clone());
    }
    if let Some(p) = &f.policy {
        let name = if p.namespace.is_empty() {
            p.name.clone()
        } else {
            format!("{}/{}", p.namespace, p.name)
        };
        parts.push(if p.rule.is_empty() {
            name
        } else {
            format!("{name} {}", p.rule)
        });
    } else if f.rule_id != 0 {
        parts.push(format!("rule {}", f.rule_id));
    }
    if let Some(s) = &f.service {
        parts.push(format!("service {}/{}:{}", s.namespace, s.name, s.port));
    }
    if let Some(t) = &f.translated_to {
        parts.push(format!("-> {}", peer_text(t)));
    }
    if !f.tcp_flags.is_empty() {
        parts.push(format!("TCP {}", f.tcp_flags.join(",")));
    }
    parts.join(" ")
}

/// `12:00:00.123` of the flow's RFC 3339 time (the date is in json).
fn clock(f: &Flow) -> &str {
    f.time.get(11..23).unwrap_or(&f.time)
}

const HEADER: &str = "TIME          NODE        SOURCE                          DESTINATION                     PROTO   VERDICT     SUMMARY";

pub fn table_line(f: &Flow) -> String {
    format!(
        "{:<13} {:<11} {:<31} {:<31} {:<7} {:<11} {}",
        clock(f),
        f.node,
        peer_text(&f.source),
        peer_text(&f.destination),
        f.protocol,
        f.verdict.as_str(),
        summary(f)
    )
    .trim_end()
    .to_string()
}

pub fn compact_line(f: &Flow) -> String {
    let s = summary(f);
    format!(
        "{} [{}]: {} -> {} {} {} {}{}{}",
        clock(f),
        f.node,
        peer_text(&f.source),
        peer_text(&f.destination),
        f.traffic_direction.to_ascii_lowercase(),
        f.protocol,
        f.verdict.as_str(),
        if s.is_empty() { "" } else { " " },
        if s.is_empty() {
            String::new()
        } else {
            format!("({s})")
        }
    )
}

/// hubble's `-o jsonpb`: a response object around the flow.
pub fn jsonpb_line(f: &Flow) -> anyhow::Result<String> {
    Ok(serde_json::to_string(&serde_json::json!({
        "flow": f,
        "node_name": f.node,
        "time": f.time,
    }))?)
}

struct Printer {
    fmt: Format,
    header: bool,
}

impl Printer {
    fn print(&mut self, f: &Flow) -> anyhow::Result<()> {
        if !crate::output::is_open() {
            bail!(StdoutClosed);
        }
        match self.fmt {
            Format::Json => outln!("{}", serde_json::to_string(f)?),
            Format::Jsonpb => outln!("{}", jsonpb_line(f)?),
            Format::Compact => outln!("{}", compact_line(f)),
            Format::Table => {
                if !self.header {
                    outln!("{HEADER}");
                    self.header = true;
                }
                outln!("{}", table_line(f));
            }
        }
        Ok(())
    }
}

/// Printing stopped: stdout's reader went away (not an error to report).
#[derive(Debug)]
struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// What a node's thread reports.
enum Msg {
    Flow(Box<Flow>),
    Lost(String, u64),
    /// The node's stream ended (an error says why).
    Done(String, Option<String>),
}

/// Streams `query` from one node into `tx` until the stream ends.
fn pump(t: &Target, query: &FlowQuery, tx: &mpsc::Sender<Msg>) -> Option<String> {
    let body = match serde_json::to_vec(query) {
        Ok(b) => b,
        Err(e) => return Some(e.to_string()),
    };
    let on_line = |line: &[u8]| {
        let msg = match serde_json::from_slice::<FlowLine>(line) {
            Ok(FlowLine::Flow(f)) => Msg::Flow(f),
            Ok(FlowLine::Lost(l)) => Msg::Lost(l.node, l.flows),
            // a newer weftd's line this weft does not know: skip it
            Err(_) => return true,
        };
        tx.send(msg).is_ok()
    };
    let r = match &t.remote {
        Some(r) => crate::observe_cluster::stream(r, "POST", paths::FLOWS, &body, IDLE, on_line),
        None => stream(&t.socket, "POST", paths::FLOWS, &body, IDLE, on_line),
    };
    match r {
        Ok(Streamed::Done | Streamed::Stopped) => None,
        Ok(Streamed::Refused(resp)) => {
            let msg = serde_json::from_slice::<weft_api::CniError>(&resp.body)
                .map(|e| e.msg)
                .unwrap_or_else(|_| format!("weftd answered {}", resp.status));
            Some(match &t.remote {
                Some(_) => crate::observe_cluster::refusal(resp.status, &msg),
                None => msg,
            })
        }
        Err(e) => Some(match &t.remote {
            Some(r) => crate::observe_cluster::describe(r, &e),
            None => format!("{e} (is weftd running at {}?)", t.socket.display()),
        }),
    }
}

/// Runs one query on every target at once; `on` sees every message. When
/// `on` fails the streams are left to the process's end (a followed stream
/// of an idle node would keep a joined thread waiting).
fn fan_out(
    targets: &[Target],
    queries: Vec<FlowQuery>,
    mut on: impl FnMut(Msg) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel();
    for (t, q) in targets.iter().cloned().zip(queries) {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let err = pump(&t, &q, &tx);
            let _ = tx.send(Msg::Done(t.node, err));
        });
    }
    drop(tx);
    for msg in rx {
        on(msg)?;
    }
    Ok(())
}

/// Flows of several nodes in time order, the last `last` of them.
fn merge(mut flows: Vec<Flow>, last: Option<usize>) -> Vec<Flow> {
    flows.sort_by_key(|f| f.time_unix_nano);
    if let Some(n) = last {
        flows.drain(..flows.len().saturating_sub(n));
    }
    flows
}

pub fn run(targets: Vec<Target>, args: &ObserveArgs, fmt: Format) -> anyhow::Result<ExitCode> {
    match observe(targets, args, fmt) {
        Err(e) if e.is::<StdoutClosed>() => Ok(ExitCode::SUCCESS),
        r => r,
    }
}

fn observe(targets: Vec<Target>, args: &ObserveArgs, fmt: Format) -> anyhow::Result<ExitCode> {
    let filter = args.filter()?;
    let start = now_ns();
    let since = args
        .since
        .as_deref()
        .map(|s| parse_since(s, start))
        .transpose()?;
    let last = match (args.last, since, args.follow) {
        (Some(n), _, _) => Some(n),
        (None, None, false) => Some(DEFAULT_LAST),
        _ => None,
    };
    let mut printer = Printer { fmt, header: false };
    let mut failed = 0usize;
    let mut report = |node: &str, err: Option<String>| {
        if let Some(e) = err {
            eprintln!("weft: node {node}: {e}");
            failed += 1;
        }
    };
    // the stored flows of every node, merged by time
    let want_history = !args.follow || last.is_some() || since.is_some();
    let mut after: Vec<u64> = vec![since.unwrap_or(start); targets.len()];
    if want_history {
        let q = FlowQuery {
            filter: filter.clone(),
            since_unix_nano: since,
            last,
            follow: false,
        };
        let mut flows = Vec::new();
        fan_out(&targets, vec![q; targets.len()], |m| {
            match m {
                Msg::Flow(f) => flows.push(*f),
                Msg::Lost(..) => {}
                Msg::Done(node, err) => report(&node, err),
            }
            Ok(())
        })?;
        for (i, t) in targets.iter().enumerate() {
            // follow each node from just after the last flow it gave
            if let Some(max) = flows
                .iter()
                .filter(|f| f.node == t.node)
                .map(|f| f.time_unix_nano)
                .max()
            {
                after[i] = max + 1;
            }
        }
        for f in &merge(flows, last) {
            printer.print(f)?;
        }
    }
    if args.follow {
        let queries = after
            .iter()
            .map(|&a| FlowQuery {
                filter: filter.clone(),
                since_unix_nano: Some(a),
                last: None,
                follow: true,
            })
            .collect();
        fan_out(&targets, queries, |m| {
            match m {
                Msg::Flow(f) => printer.print(&f)?,
                Msg::Lost(node, n) => {
                    eprintln!("weft: node {node}: {n} flows lost (this observer fell behind)")
                }
                Msg::Done(node, err) => {
                    report(&node, err.or_else(|| Some("weftd ended the stream".into())))
                }
            }
            Ok(())
        })?;
    }
    if failed == targets.len() {
        bail!("no node answered");
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
#[path = "observe_tests.rs"]
mod tests;
