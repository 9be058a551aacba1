//! The read-only views of a node's weftd.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use weft_api::{paths, AgentStatus, EndpointView, IpamCheckReport, IpamView};

use crate::output::{bytes, outln, table};
use crate::Format;

pub fn get<T: DeserializeOwned>(socket: &Path, path: &str) -> anyhow::Result<T> {
    let resp = match weft_api::http::call(socket, "GET", path, b"", Duration::from_secs(30)) {
        Ok(r) => r,
        // said once: the error's own text already names the socket
        Err(weft_api::http::HttpError::Connect { source, .. }) => bail!(
            "cannot reach weftd at {} ({source}); is it running? (`systemctl status weftd`; \
             --socket PATH or --lab NAME for another one)",
            socket.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("talking to weftd at {}", socket.display()))
        }
    };
    if resp.status != 200 {
        let msg = serde_json::from_slice::<weft_api::CniError>(&resp.body)
            .map(|e| e.msg)
            .unwrap_or_else(|_| String::from_utf8_lossy(&resp.body).into_owned());
        bail!("weftd answered {}: {msg}", resp.status);
    }
    serde_json::from_slice(&resp.body)
        .context("weftd sent a reply this weft cannot read (version mismatch?)")
}

fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<ExitCode> {
    outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(ExitCode::SUCCESS)
}

pub fn status(socket: &Path, fmt: Format) -> anyhow::Result<ExitCode> {
    let s: AgentStatus = get(socket, paths::STATUS)?;
    if fmt == Format::Json {
        return json(&s);
    }
    outln!("node:         {}", s.node);
    outln!(
        "weftd:        {} (pid {}, up {} s, rss {})",
        s.version,
        s.pid,
        s.uptime_seconds,
        bytes(s.rss_bytes)
    );
    outln!("socket:       {}", s.socket);
    outln!("store:        {}", s.store_backend);
    outln!("endpoints:    {}", s.endpoints);
    outln!(
        "pod mtu:      {}{}",
        s.pod_mtu,
        s.underlay
            .map(|u| format!(" (from underlay {u})"))
            .unwrap_or_else(|| " (configured)".into())
    );
    outln!(
        "nat outgoing: {}",
        if s.nat_outgoing { "on" } else { "off" }
    );
    if s.spool_replayed > 0 {
        outln!("spool:        {} DELs replayed at start", s.spool_replayed);
    }
    outln!("forwarding:   {}", fastpath_line(&s.fastpath, s.endpoints));
    if let Some(k) = &s.kubernetes {
        outln!("kubernetes:   {}", kubernetes_line(k));
    }
    outln!();
    pools_table(&s.pools);
    Ok(ExitCode::SUCCESS)
}

/// `ebpf fast path: 12 of 14 pod addresses fast (1 shaped); 5321 local, 80 remote, 77 to the kernel`
fn fastpath_line(f: &weft_api::FastPathStatus, endpoints: usize) -> String {
    if f.mode != "ebpf" {
        let why = f.reason.as_deref().unwrap_or("not started");
        return format!("kernel path ({why})");
    }
    if f.addresses == 0 && endpoints > 0 {
        return "ebpf fast path: the pods are not in its map yet (it syncs every second; pods turn fast 2-3 s after ADD)".into();
    }
    let c = |k: &str| f.counters.get(k).copied().unwrap_or(0);
    let to_kernel: u64 = f
        .counters
        .iter()
        .filter(|(k, _)| k.starts_with("pass_"))
        .map(|(_, v)| v)
        .sum();
    let shaped = if f.shaped.is_empty() {
        String::new()
    } else {
        format!(" ({} shaped veths stay on the kernel path)", f.shaped.len())
    };
    format!(
        "ebpf fast path: {} of {} pod addresses fast{shaped}; packets {} local, {} remote, {} to the kernel",
        f.fast,
        f.addresses,
        c("local"),
        c("remote"),
        to_kernel
    )
}

fn pools_table(pools: &[weft_api::PoolUsage]) {
    let rows: Vec<Vec<String>> = pools
        .iter()
        .map(|p| {
            vec![
                p.cidr.to_string(),
                format!("/{}", p.block_prefix),
                p.blocks.to_string(),
                p.allocated.to_string(),
                p.quarantined.to_string(),
                capacity(&p.cidr, p.capacity),
                format!(
                    "{:.2}%",
                    100.0 * p.allocated as f64 / p.capacity.max(1) as f64
                ),
            ]
        })
        .collect();
    table(
        &[
            "POOL",
            "BLOCKS OF",
            "BLOCKS",
            "ALLOCATED",
            "QUARANTINED",
            "CAPACITY",
            "USED",
        ],
        &rows,
    );
}

pub fn endpoints(socket: &Path, fmt: Format) -> anyhow::Result<ExitCode> {
    let eps: Vec<EndpointView> = get(socket, paths::ENDPOINTS)?;
    if fmt == Format::Json {
        return json(&eps);
    }
    let short = shortener(
        eps.iter()
            .map(|e| e.endpoint.attachment.container_id.as_str()),
    );
    let rows: Vec<Vec<String>> = eps
        .iter()
        .map(|v| {
            let e = &v.endpoint;
            vec![
                if e.pod.name.is_empty() {
                    "-".into()
                } else {
                    format!("{}/{}", e.pod.namespace, e.pod.name)
                },
                short(&e.attachment.container_id),
                e.attachment.ifname.clone(),
                e.ips
                    .iter()
                    .map(|i| i.addr().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                e.host_ifname.clone(),
                e.mtu.to_string(),
                pod_labels(v.kubernetes.as_ref()),
            ]
        })
        .collect();
    table(
        &[
            "POD",
            "CONTAINER",
            "IF",
            "ADDRESSES",
            "HOST IF",
            "MTU",
            "LABELS",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// `watching https://198.18.0.1:6443: 6 pods, 5 namespaces, …` or what
/// each watch still waits for.
fn kubernetes_line(k: &weft_api::KubernetesStatus) -> String {
    let collected = if k.pods_collected > 0 {
        format!("; {} gone pods cleaned up", k.pods_collected)
    } else {
        String::new()
    };
    if k.ready {
        let counts: Vec<String> = k
            .watches
            .iter()
            .map(|w| format!("{} {}", w.objects, w.kind))
            .collect();
        return format!("watching {}: {}{collected}", k.server, counts.join(", "));
    }
    // watches that fail alike (the API server is away) are named together
    let mut by_error: Vec<(String, Vec<&str>)> = Vec::new();
    for w in k.watches.iter().filter(|w| !(w.synced && w.healthy)) {
        let why = w.last_error.clone().unwrap_or_else(|| "listing".into());
        match by_error.iter_mut().find(|(e, _)| *e == why) {
            Some((_, kinds)) => kinds.push(&w.kind),
            None => by_error.push((why, vec![&w.kind])),
        }
    }
    let waiting: Vec<String> = by_error
        .iter()
        .map(|(why, kinds)| format!("{} ({why})", kinds.join(", ")))
        .collect();
    format!(
        "waiting for {}: {}{collected}",
        k.server,
        waiting.join("; ")
    )
}

/// `app=web,tier=front`; `-` when the API has not shown the pod (or weftd
/// runs without Kubernetes). Namespace labels are in `-o json`.
fn pod_labels(meta: Option<&weft_api::PodMeta>) -> String {
    match meta {
        None => "-".into(),
        Some(m) if m.labels.is_empty() => "(none)".into(),
        Some(m) => m
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// A pool's size in words a person can read: exact up to 2^32, a power of
/// two beyond (an IPv6 pool's count does not fit in any integer column).
fn capacity(cidr: &ipnet::IpNet, exact: u64) -> String {
    let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
    if host_bits > 32 {
        format!("2^{host_bits}")
    } else {
        exact.to_string()
    }
}

/// Container ids cut to the shortest length (at least 20 characters) at which
/// every id in the table is still told apart: runtimes give ids long common
/// prefixes (`cnitool-…`, `<namespace>-<name>-…`), so a fixed cut can show
/// the same text on every row.
fn shortener<'a>(ids: impl Iterator<Item = &'a str> + Clone) -> impl Fn(&str) -> String {
    const MIN: usize = 20;
    let longest = ids.clone().map(|i| i.chars().count()).max().unwrap_or(0);
    let mut len = MIN;
    while len < longest {
        let mut seen = std::collections::BTreeSet::new();
        let distinct = ids
            .clone()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .all(|id| seen.insert(id.chars().take(len).collect::<String>()));
        if distinct {
            break;
        }
        len += 1;
    }
    move |id: &str| id.chars().take(len).collect()
}

pub fn ipam_show(socket: &Path, fmt: Format) -> anyhow::Result<ExitCode> {
    let v: IpamView = get(socket, paths::IPAM)?;
    if fmt == Format::Json {
        return json(&v);
    }
    pools_table(&v.pools);
    outln!();
    let rows: Vec<Vec<String>> = v
        .blocks
        .iter()
        .map(|b| {
            vec![
                b.cidr.to_string(),
                b.affinity.clone().unwrap_or_else(|| "-".into()),
                b.allocated.to_string(),
                b.quarantined.to_string(),
                b.capacity.to_string(),
            ]
        })
        .collect();
    table(
        &["BLOCK", "NODE", "ALLOCATED", "QUARANTINED", "CAPACITY"],
        &rows,
    );
    outln!();
    let short = shortener(v.allocations.iter().map(|a| a.container_id.as_str()));
    let rows: Vec<Vec<String>> = v
        .allocations
        .iter()
        .map(|a| {
            vec![
                a.address.to_string(),
                if a.pod.name.is_empty() {
                    "-".into()
                } else {
                    format!("{}/{}", a.pod.namespace, a.pod.name)
                },
                short(&a.container_id),
                a.ifname.clone(),
                a.block.to_string(),
                a.borrowed_by.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &["ADDRESS", "POD", "CONTAINER", "IF", "BLOCK", "BORROWED BY"],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

pub fn ipam_check(socket: &Path, fmt: Format) -> anyhow::Result<ExitCode> {
    let r: IpamCheckReport = get(socket, paths::IPAM_CHECK)?;
    let code = if r.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if fmt == Format::Json {
        json(&r)?;
        return Ok(code);
    }
    if r.is_clean() {
        outln!("ipam is consistent: every address belongs to a live endpoint and every endpoint's address is allocated to it");
        return Ok(code);
    }
    for a in &r.leaked {
        outln!("leaked: {} held by {} (pod {}/{}) with no endpoint on this node; weftd frees it after the gc grace period", a.address, a.handle, a.pod.namespace, a.pod.name);
    }
    for a in &r.unallocated_endpoints {
        outln!("unallocated: endpoint {}/{} has an address ipam does not attribute to it; DEL and ADD the pod", a.container_id, a.ifname);
    }
    for p in &r.problems {
        outln!("problem: {p}");
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::shortener;

    #[test]
    fn container_ids_stay_apart_in_tables() {
        let ids = [
            "cnitool-2f1c0e9a8b7d6c5e4f3a",
            "cnitool-2f1c0e9a8b7d6c5e4f3b",
            "k8s.io-0123456789abcdef0123456789abcdef",
        ];
        let short = shortener(ids.iter().copied());
        let rows: Vec<String> = ids.iter().map(|i| short(i)).collect();
        assert_eq!(rows[0], ids[0]);
        assert_ne!(rows[0], rows[1]);
        assert_eq!(rows[2].len(), ids[0].len());
        // distinct within 20 characters: cut at 20
        let short = shortener(["abcdefghijklmnopqrstuvwxyz-1", "zyx"].into_iter());
        assert_eq!(short("abcdefghijklmnopqrstuvwxyz-1").len(), 20);
        // the same id twice (two interfaces of one container) is not a reason to grow
        let same = "a".repeat(40);
        let short = shortener([same.as_str(), same.as_str()].into_iter());
        assert_eq!(short(&same).len(), 20);
    }
}
