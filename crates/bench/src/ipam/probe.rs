//! Readings around a burst: etcd's revision, weftd's stage timings, CPU
//! time of the processes and of the machine.

use super::*;

/// The cluster's current revision, asked of the first member from inside
/// the fabric namespace (`POST /v3/maintenance/status`).
pub fn etcd_revision(lab: &Lab) -> anyhow::Result<i64> {
    let m = lab
        .etcd_members()
        .into_iter()
        .find(|m| m.alive())
        .context("no etcd member runs")?;
    revision_at(lab, SocketAddr::new(m.address, ETCD_CLIENT_PORT))
}

/// The revision of the etcd at `addr` in the lab's fabric namespace.
pub(super) fn revision_at(lab: &Lab, addr: SocketAddr) -> anyhow::Result<i64> {
    let body = weft_datapath::netns::run_in(&lab.fabric_netns, move || {
        http_post(
            addr,
            "/v3/maintenance/status",
            b"{}",
            Duration::from_secs(5),
        )
    })??;
    let v: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("etcd status: {body:?}"))?;
    let rev = &v["header"]["revision"];
    rev.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| rev.as_i64())
        .with_context(|| format!("etcd status without a revision: {body}"))
}

/// A minimal HTTP/1.0 POST with a JSON body; returns the body.
pub(super) fn http_post(
    addr: SocketAddr,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    if !head.starts_with("HTTP/1.") || head.split(' ').nth(1) != Some("200") {
        return Err(std::io::Error::other(format!(
            "POST {path}: {}",
            head.lines().next().unwrap_or_default()
        )));
    }
    Ok(body.to_string())
}

/// Summarises the `add timing` lines of every node's weftd log.
pub(super) fn stage_timings(lab: &Lab) -> StageTimings {
    let keys = ["create_us", "ipam_us", "stage1_us", "stage2_us"];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); keys.len()];
    for n in lab.nodes() {
        let log = std::fs::read_to_string(n.log_path()).unwrap_or_default();
        for line in log.lines().filter(|l| l.contains("add timing")) {
            let line = strip_ansi(line);
            for token in line.split_whitespace() {
                let Some((k, v)) = token.split_once('=') else {
                    continue;
                };
                if let (Some(slot), Ok(us)) = (keys.iter().position(|x| *x == k), v.parse()) {
                    samples[slot].push(Duration::from_micros(us));
                }
            }
        }
    }
    let mut it = samples.into_iter().map(Stats::of);
    let mut next = || it.next().unwrap_or_else(|| Stats::of(Vec::new()));
    StageTimings {
        create: next(),
        ipam: next(),
        stage1: next(),
        stage2: next(),
    }
}

pub(super) fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// CPU time at one instant: groups of processes (the weftds, the store's
/// processes, ...), this process with its reaped children (every
/// weft-cni), and the machine.
pub(super) struct CpuSample {
    groups: Vec<f64>,
    own: f64,
    children: f64,
    busy: u64,
    total: u64,
}

pub(super) struct CpuSpan {
    /// CPU-seconds of each group, in the order given to [`CpuSample::take`].
    pub(super) groups: Vec<f64>,
    pub(super) own: f64,
    pub(super) children: f64,
    pub(super) busy: f64,
    pub(super) busy_seconds: f64,
}

impl CpuSample {
    pub(super) fn take(groups: &[&[u32]]) -> CpuSample {
        let sum = |pids: &[u32]| {
            pids.iter()
                .filter_map(|p| proc_cpu(&format!("/proc/{p}/stat"), false))
                .sum()
        };
        let (busy, total) = machine_cpu().unwrap_or((0, 0));
        CpuSample {
            groups: groups.iter().map(|g| sum(g)).collect(),
            own: proc_cpu("/proc/self/stat", true).unwrap_or(0.0),
            children: proc_cpu("/proc/self/stat", true).unwrap_or(0.0)
                - proc_cpu("/proc/self/stat", false).unwrap_or(0.0),
            busy,
            total,
        }
    }

    pub(super) fn since(&self, before: &CpuSample) -> CpuSpan {
        CpuSpan {
            groups: self
                .groups
                .iter()
                .zip(&before.groups)
                .map(|(a, b)| a - b)
                .collect(),
            own: self.own - before.own,
            children: self.children - before.children,
            busy: (self.busy - before.busy) as f64 / (self.total - before.total).max(1) as f64,
            busy_seconds: (self.busy - before.busy) as f64 / 100.0,
        }
    }
}

/// The busy share of the machine's CPU time over the next `d`.
pub(super) fn machine_busy_over(d: Duration) -> f64 {
    let a = machine_cpu().unwrap_or((0, 0));
    std::thread::sleep(d);
    let b = machine_cpu().unwrap_or((0, 0));
    (b.0.saturating_sub(a.0)) as f64 / (b.1.saturating_sub(a.1)).max(1) as f64
}

/// (busy, total) jiffies of the whole machine, from `/proc/stat`.
pub(super) fn machine_cpu() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = s
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}
