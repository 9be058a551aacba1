//! `weft bench dataplane`: pod-to-pod throughput and latency through weft,
//! side by side with the kernel's own limit, in one run.
//!
//! Five cases, each a client namespace and a server namespace:
//! 1. raw veth: two namespaces joined by one plain veth pair;
//! 2. weft same-node: two pods on one lab node;
//! 3. raw VXLAN: two namespaces, each with a VXLAN device (static FDB and
//!    neighbour, no learning) over a veth underlay joining them;
//! 4. weft overlay: pods on two nodes of a lab with routing "overlay";
//! 5. weft native: pods on two nodes of a lab with routing "native";
//! 6. raw VXLAN, fab: as 3, but the underlay crosses the overlay lab's
//!    fabric bridge like the lab nodes' traffic does; the overlay target is
//!    set against this one, so weft is not charged for the lab's switch;
//! 7. and 8. weft same-node and overlay again, in a lab whose agents run
//!    with `--fastpath off`: the kernel path alone, for the eBPF path's gain.
//!
//! The weft cases start once every pod of their lab is on the eBPF fast
//! path (or the agent reports the kernel path), so no measured flow began
//! before its pods turned fast; each case records how it was forwarded.
//!
//! Per case and round: iperf3 throughput with 1 and 4 streams, and the
//! latency of small TCP request/response round trips over one connection,
//! timed in-process. Rounds interleave the cases (in a rotating order), so a
//! shared machine's drift hits every case alike; the report gives medians
//! and min–max over rounds, and per-round paired ratios weft / kernel.
//!
//! `--flows` runs instead the flow events case ([`flows`]): the same pods
//! with weftd's flow events on and off, the ring's sustained event rate and
//! weftd's RSS with its flow buffer full.
//!
//! Every namespace the bench makes starts with the run's name; all of them,
//! both labs and the iperf3 servers (ended by their pids) are removed at the
//! end, also on error. Traffic only flows between these namespaces.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use weft_datapath::netns::{run_in, spawn_in};

use weft_lab::{ip, Lab, LabSpec};

use crate::chart::{Bar, Chart, Panel, BLUE, GREY, LIGHT_BLUE};
use crate::report::Machine;

pub mod flows;
pub(crate) mod measure;
mod render;
mod setup;

use measure::*;
pub use render::{chart, render_svg, render_table};
use setup::*;

/// The TCP port iperf3 servers listen on (each in its own namespace).
const IPERF_PORT: u16 = 5201;

#[derive(Debug, Clone)]
pub struct DataplaneSpec {
    /// Prefix of every namespace and lab the run makes (keep it short: lab
    /// names are at most 24 characters with their suffix).
    pub name: String,
    pub bin_dir: PathBuf,
    /// Rounds; each runs every case once.
    pub rounds: usize,
    /// iperf3 `-t`, seconds per throughput test.
    pub seconds: u32,
    /// One-byte request/response round trips per latency test.
    pub echoes: usize,
}

/// Median and spread of one metric over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Spread {
    pub fn of(samples: &[f64]) -> Spread {
        let mut s: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
        s.sort_by(f64::total_cmp);
        let median = match s.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => s[n / 2],
            n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        };
        Spread {
            median,
            min: s.first().copied().unwrap_or(f64::NAN),
            max: s.last().copied().unwrap_or(f64::NAN),
            samples: samples.to_vec(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub case: String,
    /// What the client and the server are, and the path between them.
    pub path: String,
    /// The client's interface MTU.
    pub mtu: u32,
    /// How weft forwarded it: "ebpf" or "kernel" (the agent's report); "-"
    /// for the kernel-only baselines.
    pub forwarding: String,
    pub gbps_1: Spread,
    pub gbps_4: Spread,
    pub rtt_p50_us: Spread,
    pub rtt_p99_us: Spread,
}

/// weft / kernel for one metric: per-round paired ratios.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub name: String,
    pub metric: String,
    pub ratio: Spread,
    /// The target, as a bound on the median ratio (throughput: at least,
    /// latency: at most); None when the issue sets none.
    pub target: Option<f64>,
    pub higher_is_better: bool,
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DataplaneReport {
    /// When and where it ran.
    #[serde(flatten)]
    pub machine: Machine,
    pub rounds: usize,
    pub seconds: u32,
    pub echoes: usize,
    /// The CPU that client and server of the 1-stream tests and of the round
    /// trips are pinned to (4-stream tests are not pinned).
    pub pinned_cpu: usize,
    pub cases: Vec<CaseResult>,
    pub ratios: Vec<Ratio>,
    pub wall_seconds: f64,
}

/// One measured pair: a client and a server namespace, the server's address.
struct Case {
    label: &'static str,
    path: &'static str,
    forwarding: String,
    client: PathBuf,
    server: PathBuf,
    addr: IpAddr,
}

/// Everything the run made that must go: namespaces, labs, iperf3 servers.
/// Dropped on every way out of [`run`].
#[derive(Default)]
struct Cleanup {
    netns: Vec<String>,
    labs: Vec<String>,
    servers: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.servers {
            // by pid: Child::kill signals exactly this child
            let _ = c.kill();
            let _ = c.wait();
        }
        for l in &self.labs {
            let _ = Lab::down(l);
        }
        for n in &self.netns {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

/// Runs the whole benchmark; everything it made is removed when it returns.
pub fn run(
    spec: &DataplaneSpec,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<DataplaneReport> {
    let started = Instant::now();
    if Command::new("iperf3").arg("--version").output().is_err() {
        bail!("iperf3 not found; apt-get install iperf3");
    }
    if spec.name.len() > 20 {
        bail!("run name {:?} too long (at most 20 characters)", spec.name);
    }
    let mut clean = Cleanup::default();
    let prefix = &spec.name;

    progress("raw veth: two namespaces, one veth pair");
    let (va, vb, vaddr) = raw_veth(prefix, &mut clean)?;
    progress("raw VXLAN: two namespaces, VXLAN over a veth underlay, static FDB");
    let (xa, xb, xaddr) = raw_vxlan(prefix, "vx", Underlay::Direct, &mut clean)?;

    progress("lab with routing overlay: 2 nodes, 1 etcd member");
    let mut overlay = two_node_lab(
        &format!("{prefix}-o"),
        &spec.bin_dir,
        "overlay",
        &[],
        &mut clean,
        progress,
    )?;
    progress("lab with routing native: 2 nodes, 1 etcd member");
    let mut native = two_node_lab(
        &format!("{prefix}-n"),
        &spec.bin_dir,
        "native",
        &[],
        &mut clean,
        progress,
    )?;
    progress("lab with routing overlay and --fastpath off: 2 nodes, 1 etcd member");
    let mut kernel = two_node_lab(
        &format!("{prefix}-k"),
        &spec.bin_dir,
        "overlay",
        &["--fastpath", "off"],
        &mut clean,
        progress,
    )?;
    progress("raw VXLAN over the overlay lab's fabric bridge (the nodes' underlay path)");
    let (fa, fb, faddr) = raw_vxlan(
        prefix,
        "fx",
        Underlay::Fabric(&overlay.fabric_netns),
        &mut clean,
    )?;
    progress("pods: two on node 1 of the overlay labs, one on node 2 of each lab");
    let sa = overlay.add_pod_on("sa", 0)?;
    let sb = overlay.add_pod_on("sb", 0)?;
    let xo = overlay.add_pod_on("xo", 1)?;
    let na = native.add_pod_on("na", 0)?;
    let nb = native.add_pod_on("nb", 1)?;
    let ka = kernel.add_pod_on("ka", 0)?;
    let kb = kernel.add_pod_on("kb", 0)?;
    let kx = kernel.add_pod_on("kx", 1)?;
    progress("waiting until the pods are on the eBPF fast path");
    let fwd_overlay = wait_forwarding(&overlay)?;
    let fwd_native = wait_forwarding(&native)?;
    let fwd_kernel = wait_forwarding(&kernel)?;
    let raw = || "-".to_string();

    let cases = vec![
        Case {
            label: "raw veth",
            path: "netns -> veth -> netns",
            forwarding: raw(),
            client: va,
            server: vb,
            addr: vaddr,
        },
        Case {
            label: "weft same-node",
            path: "pod -> veth -> node -> veth -> pod",
            forwarding: fwd_overlay.clone(),
            client: sa.netns.clone(),
            server: sb.netns.clone(),
            addr: first_v4(&sb.ips)?,
        },
        Case {
            label: "raw VXLAN",
            path: "netns vxlan -> veth underlay -> vxlan netns",
            forwarding: raw(),
            client: xa,
            server: xb,
            addr: xaddr,
        },
        Case {
            label: "weft overlay",
            path: "pod -> veth -> node vxlan -> fabric bridge -> node vxlan -> veth -> pod",
            forwarding: fwd_overlay.clone(),
            client: sa.netns.clone(),
            server: xo.netns.clone(),
            addr: first_v4(&xo.ips)?,
        },
        Case {
            label: "weft native",
            path: "pod -> veth -> node -> fabric bridge -> node -> veth -> pod",
            forwarding: fwd_native,
            client: na.netns.clone(),
            server: nb.netns.clone(),
            addr: first_v4(&nb.ips)?,
        },
        Case {
            label: "raw VXLAN, fab",
            path: "netns vxlan -> veth -> fabric bridge -> veth -> vxlan netns",
            forwarding: raw(),
            client: fa,
            server: fb,
            addr: faddr,
        },
        Case {
            label: "same-node kpath",
            path: "as weft same-node, --fastpath off",
            forwarding: fwd_kernel.clone(),
            client: ka.netns.clone(),
            server: kb.netns.clone(),
            addr: first_v4(&kb.ips)?,
        },
        Case {
            label: "overlay kpath",
            path: "as weft overlay, --fastpath off",
            forwarding: fwd_kernel,
            client: ka.netns.clone(),
            server: kx.netns.clone(),
            addr: first_v4(&kx.ips)?,
        },
    ];
    for c in &cases {
        progress(&format!(
            "{}: waiting until {} answers, starting iperf3 -s there",
            c.label, c.addr
        ));
        wait_reachable(&c.client, &c.server, c.addr)
            .with_context(|| format!("case {}", c.label))?;
        start_iperf_server(&c.server, c.addr, &mut clean)?;
    }
    let mtus: Vec<u32> = cases
        .iter()
        .map(|c| {
            let dev = if c.label.starts_with("raw VXLAN") {
                "vx0"
            } else {
                "eth0"
            };
            mtu_in(&c.client, dev)
        })
        .collect();

    let n = cases.len();
    let rounds = spec.rounds.max(1);
    let mut g1 = vec![Vec::new(); n];
    let mut g4 = vec![Vec::new(); n];
    let mut p50 = vec![Vec::new(); n];
    let mut p99 = vec![Vec::new(); n];
    for round in 0..rounds {
        for k in 0..n {
            let i = (k + round) % n;
            let c = &cases[i];
            let one = iperf(&c.client, c.addr, 1, spec.seconds)
                .with_context(|| format!("case {}", c.label))?;
            let four = iperf(&c.client, c.addr, 4, spec.seconds)
                .with_context(|| format!("case {}", c.label))?;
            let (l50, l99) = rtt(&c.client, &c.server, c.addr, spec.echoes)
                .with_context(|| format!("case {}", c.label))?;
            progress(&format!(
                "round {}/{rounds} {:<15} 1 stream {:6.2} Gbit/s  4 streams {:6.2} Gbit/s  rtt p50 {:6.1} us  p99 {:6.1} us",
                round + 1,
                c.label,
                one,
                four,
                l50,
                l99
            ));
            g1[i].push(one);
            g4[i].push(four);
            p50[i].push(l50);
            p99[i].push(l99);
        }
    }

    let results: Vec<CaseResult> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| CaseResult {
            case: c.label.to_string(),
            path: c.path.to_string(),
            mtu: mtus[i],
            forwarding: c.forwarding.clone(),
            gbps_1: Spread::of(&g1[i]),
            gbps_4: Spread::of(&g4[i]),
            rtt_p50_us: Spread::of(&p50[i]),
            rtt_p99_us: Spread::of(&p99[i]),
        })
        .collect();
    let mut ratios = Vec::new();
    // (name, weft case, kernel case, target)
    let pairs = [
        ("weft same-node / raw veth", 1, 0, Some(0.05)),
        ("weft overlay / raw VXLAN, fabric", 3, 5, Some(0.05)),
        ("weft overlay / raw VXLAN, direct", 3, 2, None),
        ("weft native / raw veth", 4, 0, None),
        ("same-node kernel path / raw veth", 6, 0, None),
        ("overlay kernel path / raw VXLAN, fab", 7, 5, None),
    ];
    for (name, w, k, tol) in pairs {
        let metrics: [(&str, &Vec<Vec<f64>>, bool); 4] = [
            ("throughput, 1 stream", &g1, true),
            ("throughput, 4 streams", &g4, true),
            ("rtt p50", &p50, false),
            ("rtt p99", &p99, false),
        ];
        for (metric, data, higher) in metrics {
            let per_round: Vec<f64> = data[w].iter().zip(&data[k]).map(|(a, b)| a / b).collect();
            let ratio = Spread::of(&per_round);
            let target: Option<f64> = tol.map(|t: f64| if higher { 1.0 - t } else { 1.0 + t });
            let met = target.map(|t| {
                if higher {
                    ratio.median >= t
                } else {
                    ratio.median <= t
                }
            });
            ratios.push(Ratio {
                name: name.to_string(),
                metric: metric.to_string(),
                ratio,
                target,
                higher_is_better: higher,
                met,
            });
        }
    }
    progress("removing the labs, namespaces and iperf3 servers");
    drop(clean);
    Ok(DataplaneReport {
        machine: Machine::now(),
        rounds,
        seconds: spec.seconds,
        echoes: spec.echoes,
        pinned_cpu: pin_cpu(),
        cases: results,
        ratios,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_median_and_the_range() {
        let s = Spread::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Spread::of(&[4.0, 1.0, 2.0, 3.0]);
        assert_eq!(s.median, 2.5);
        assert!(Spread::of(&[]).median.is_nan());
    }
}
