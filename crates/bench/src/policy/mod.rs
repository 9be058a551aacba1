//! `weft bench policy`: the cost of NetworkPolicy on pod-to-pod traffic,
//! weft's eBPF programs side by side with the usual kernel alternatives, in
//! one run (issue 12, "Performance, side by side in one run").
//!
//! Every case is a node namespace with two pods, client and server, attached
//! by weft's own `LinuxDatapath` (no agent, no store), except raw veth:
//! 1. raw veth: two namespaces joined by one veth pair (the kernel floor);
//! 2. no policy, kernel path: weft's pods, forwarded by the node's routing;
//! 3. no policy, fast path: weft's eBPF redirects, policy off;
//! 4. weft eBPF: fast path with policy (`PolicyMode::Enforce`): the N
//!    policies compiled by `weft_policy::compile`, written by
//!    `KernelPolicyMaps`;
//! 5. weft eBPF, kpath: the same programs judging, the kernel forwarding
//!    (`PolicyMode::EnforceOnly`);
//! 6. and 7. iptables-legacy and iptables-nft: the rules laid out as
//!    Calico's iptables data plane does (see [`calico_rules`]);
//! 8. nftables with sets: one set of allowed (address, port) tuples.
//!
//! For every N in the rule counts, each policy case gets N policies
//! selecting the server, each allowing one peer address (in 100.64/10, no
//! pod) on one port, and last the one allowing the client on the measured
//! ports. Per N and round every case runs once, in a rotating order: iperf3
//! single stream, one-byte TCP round trips over one connection (RR), and
//! new connections each carrying one round trip (CRR: where a rule walk that
//! conntrack skips for established flows shows). Ratios are per round,
//! paired, against the matching no-policy case (fast path for weft eBPF,
//! kernel path for the rest).
//!
//! Every namespace starts with the run's name and goes at the end, with the
//! iperf3 servers (ended by pid), also on error. Traffic only flows between
//! these namespaces.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use weft_datapath::netns::{run_in, spawn_in};
use weft_datapath::policy::{KernelPolicyMaps, PolicyEndpoint, PolicyMaps, PolicyMode};
use weft_datapath::seams::*;
use weft_datapath::{FastEndpoint, FastPathSetup, LinuxDatapath, NodeSetup, PodLink};
use weft_policy::{
    compile, Compiled, Direction, EndpointRef, Inventory, IpBlock, LabelSelector, Labels,
    MemoryAllocator, NetworkPolicy, Node, Peer, PolicyPort, PortRef, Rule, RuleIds, Workload,
};

use crate::dataplane::measure::{iperf, pin_cpu, pin_this_thread};
use crate::dataplane::Spread;
use crate::report::Machine;
use weft_lab::ip;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 3);
const NODE_IP: &str = "10.99.0.1";
const NODE: &str = "node";
const NS: &str = "bench";
/// The measured ports on the server: iperf3, round trips, new connections.
const IPERF_PORT: u16 = 5201;
const RR_PORT: u16 = 5301;
const CRR_PORT: u16 = 5302;
const PORTS: [u16; 3] = [IPERF_PORT, RR_PORT, CRR_PORT];
/// The byte that ends the echo server (the client sends 7s).
const STOP: u8 = 0xff;

#[derive(Debug, Clone)]
pub struct PolicyBenchSpec {
    /// Prefix of every namespace the run makes (at most 16 characters).
    pub name: String,
    /// Rule counts, each measured in turn (0 = the allowing rule alone).
    pub rules: Vec<usize>,
    /// Rounds per rule count; each runs every case once.
    pub rounds: usize,
    /// iperf3 `-t`, seconds per throughput test.
    pub seconds: u32,
    /// One-byte round trips per RR test.
    pub echoes: usize,
    /// New connections per CRR test.
    pub connects: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyCaseResult {
    pub case: String,
    pub rules: usize,
    pub gbps: Spread,
    pub rr_p50_us: Spread,
    pub rr_p99_us: Spread,
    pub crr_p50_us: Spread,
    /// Seconds to install the N rules (compile + map writes, or the
    /// restore); 0 for the no-policy cases.
    pub install_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyRatio {
    pub case: String,
    pub baseline: String,
    pub rules: usize,
    pub rr_p50: Spread,
    pub rr_p99: Spread,
    pub crr_p50: Spread,
    pub gbps: Spread,
}

/// weft's BPF map memory at one rule count, as the kernel accounts it
/// (`memlock` of /proc/self/fdinfo, summed over the weft eBPF case's maps).
#[derive(Debug, Clone, Serialize)]
pub struct MapMemory {
    pub rules: usize,
    pub memlock_bytes: u64,
    /// Growth over the smallest rule count, per added rule.
    pub bytes_per_rule: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyReport {
    #[serde(flatten)]
    pub machine: Machine,
    pub rounds: usize,
    pub seconds: u32,
    pub echoes: usize,
    pub connects: usize,
    pub pinned_cpu: usize,
    pub cases: Vec<PolicyCaseResult>,
    pub ratios: Vec<PolicyRatio>,
    pub map_memory: Vec<MapMemory>,
    /// Goal of issue 12: weft eBPF at the largest N within this of no
    /// policy (fast path) on RR p50, and whether the median met it.
    pub goal_rr_p50: f64,
    pub goal_met: Option<bool>,
    /// Why the kube-network-policies row is absent: it runs as a pod agent
    /// queueing new connections with nftables `queue`, which this kernel
    /// may lack (see [`nft_queue_support`]).
    pub kube_network_policies: String,
    pub wall_seconds: f64,
}

mod cases;
mod measure;
mod render;
mod rules;
pub mod scale;
mod scale_probe;

use cases::*;
pub(crate) use cases::{pod_pair, PodPair};
use measure::*;
pub use render::{render_svg, render_table};
use rules::*;
pub use rules::{calico_rules, nft_set_rules};

/// Runs the whole benchmark; everything it made is removed when it returns.
pub fn run(spec: &PolicyBenchSpec, progress: &mut dyn FnMut(&str)) -> anyhow::Result<PolicyReport> {
    let started = Instant::now();
    if spec.name.len() > 16 {
        bail!("run name {:?} too long (at most 16 characters)", spec.name);
    }
    for tool in ["iperf3", "iptables-legacy", "iptables-nft", "nft"] {
        if Command::new(tool).arg("--version").output().is_err() {
            bail!("{tool} not found; apt-get install iperf3 iptables nftables");
        }
    }
    let mut clean = Cleanup::default();
    let p = &spec.name;
    progress("setting up 8 cases: raw veth, 7 nodes with a client and a server pod each");
    let mut cases = vec![
        raw_veth(p, &mut clean)?,
        weft_node(p, "k0", "none, kpath", Enforcer::None, None, &mut clean)?,
        weft_node(
            p,
            "f0",
            "none, fast",
            Enforcer::None,
            Some(PolicyMode::Off),
            &mut clean,
        )?,
        weft_node(
            p,
            "wf",
            "weft eBPF",
            Enforcer::Weft,
            Some(PolicyMode::Enforce),
            &mut clean,
        )?,
        weft_node(
            p,
            "wk",
            "weft eBPF, kpath",
            Enforcer::Weft,
            Some(PolicyMode::EnforceOnly),
            &mut clean,
        )?,
        weft_node(
            p,
            "il",
            "iptables-legacy",
            Enforcer::Iptables("iptables-legacy"),
            None,
            &mut clean,
        )?,
        weft_node(
            p,
            "in",
            "iptables-nft",
            Enforcer::Iptables("iptables-nft"),
            None,
            &mut clean,
        )?,
        weft_node(
            p,
            "ns",
            "nftables sets",
            Enforcer::NftSets,
            None,
            &mut clean,
        )?,
    ];
    for (i, c) in cases.iter_mut().enumerate() {
        c.baseline = match (i, c.enforcer) {
            (_, Enforcer::None) => None,
            (3, _) => Some(2),
            _ => Some(1),
        };
    }
    for c in &cases {
        start_iperf(&c.server, &mut clean).with_context(|| c.label.to_string())?;
    }

    let rounds = spec.rounds.max(1);
    let mut results = Vec::new();
    let mut ratios = Vec::new();
    let mut map_memory: Vec<MapMemory> = Vec::new();
    let weft_ids = cases[3].map_ids.clone();
    for &n in &spec.rules {
        progress(&format!("{n} rules: installing them in every policy case"));
        let mut installs = vec![0.0; cases.len()];
        for (i, c) in cases.iter_mut().enumerate() {
            installs[i] = install(c, n).with_context(|| format!("{} with {n} rules", c.label))?;
            check_enforced(c).with_context(|| format!("{} with {n} rules", c.label))?;
            if c.enforcer != Enforcer::None {
                progress(&format!(
                    "  {:<17} {:.2} s {}",
                    c.label, installs[i], c.note
                ));
            }
        }
        let memlock = memlock_of(&weft_ids)?;
        let base = map_memory
            .first()
            .map(|m: &MapMemory| (m.rules, m.memlock_bytes));
        map_memory.push(MapMemory {
            rules: n,
            memlock_bytes: memlock,
            bytes_per_rule: base
                .filter(|(r, _)| n > *r)
                .map(|(r, b)| (memlock as f64 - b as f64) / (n - r) as f64),
        });
        let k = cases.len();
        let mut m: Vec<[Vec<f64>; 4]> = (0..k).map(|_| Default::default()).collect();
        for round in 0..rounds {
            for j in 0..k {
                let i = (j + round) % k;
                let c = &cases[i];
                let g = iperf(&c.client, IpAddr::V4(SERVER), 1, spec.seconds)
                    .with_context(|| format!("{} with {n} rules", c.label))?;
                let (p50, p99, crr) = round_trips(&c.client, &c.server, spec.echoes, spec.connects)
                    .with_context(|| format!("{} with {n} rules", c.label))?;
                progress(&format!(
                    "{n:>5} rules, round {}/{rounds} {:<17} {g:6.2} Gbit/s  rr p50 {p50:6.1} us  p99 {p99:6.1} us  crr p50 {crr:6.1} us",
                    round + 1,
                    c.label
                ));
                for (v, x) in m[i].iter_mut().zip([g, p50, p99, crr]) {
                    v.push(x);
                }
            }
        }
        for (i, c) in cases.iter().enumerate() {
            results.push(PolicyCaseResult {
                case: c.label.into(),
                rules: n,
                gbps: Spread::of(&m[i][0]),
                rr_p50_us: Spread::of(&m[i][1]),
                rr_p99_us: Spread::of(&m[i][2]),
                crr_p50_us: Spread::of(&m[i][3]),
                install_s: installs[i],
            });
            if let Some(b) = c.baseline {
                let r = |x: usize| {
                    let v: Vec<f64> = m[i][x].iter().zip(&m[b][x]).map(|(a, b)| a / b).collect();
                    Spread::of(&v)
                };
                ratios.push(PolicyRatio {
                    case: c.label.into(),
                    baseline: cases[b].label.into(),
                    rules: n,
                    gbps: r(0),
                    rr_p50: r(1),
                    rr_p99: r(2),
                    crr_p50: r(3),
                });
            }
        }
    }
    let goal = 1.05;
    let max_n = spec.rules.iter().copied().max();
    let goal_met = ratios
        .iter()
        .find(|r| r.case == "weft eBPF" && Some(r.rules) == max_n)
        .map(|r| r.rr_p50.median <= goal);
    let kube_network_policies = match nft_queue_support(&cases[7]) {
        Ok(()) => "not run by this bench yet: see scripts/build-kube-network-policies.sh".into(),
        Err(e) => format!("cannot enforce on this kernel: {e:#}"),
    };
    progress(&format!("kube-network-policies: {kube_network_policies}"));
    progress("removing the namespaces and iperf3 servers");
    drop(cases);
    drop(clean);
    Ok(PolicyReport {
        machine: Machine::now(),
        rounds,
        seconds: spec.seconds,
        echoes: spec.echoes,
        connects: spec.connects,
        pinned_cpu: pin_cpu(),
        cases: results,
        ratios,
        map_memory,
        goal_rr_p50: goal,
        goal_met,
        kube_network_policies,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowing_policy_comes_last_and_every_decoy_is_outside_the_pods() {
        let p = network_policies(3);
        assert_eq!(p.len(), 4);
        assert_eq!(p[3].name, "zz-allow-client");
        for i in 0..1000 {
            let (a, _) = decoy(i);
            assert!(a.octets()[0] == 100 && a.octets()[1] & 0xc0 == 64, "{a}");
        }
    }

    #[test]
    fn weft_compiles_one_entry_per_decoy_and_the_client() {
        let small = policies(0).unwrap();
        let big = policies(100).unwrap();
        assert!(small.rejected.is_empty() && big.rejected.is_empty());
        let entries = |c: &Compiled| format!("{c:?}").matches("PolicyKey").count();
        assert!(entries(&big) > entries(&small), "more rules, more entries");
    }

    #[test]
    fn calico_layout_walks_every_policy_chain_in_order_after_conntrack() {
        let r = calico_rules(2, "calic", "calis");
        let tw: Vec<&str> = r
            .lines()
            .filter(|l| l.starts_with("-A cali-tw-calis "))
            .collect();
        assert!(tw[0].contains("RELATED,ESTABLISHED -j ACCEPT"), "{tw:?}");
        let jumps: Vec<&str> = tw
            .iter()
            .filter_map(|l| l.split(" -j ").nth(1))
            .filter(|t| t.starts_with("cali-pi-"))
            .collect();
        assert_eq!(
            jumps,
            [
                "cali-pi-_p00000",
                "cali-pi-_p00001",
                "cali-pi-_zz-allow-client"
            ]
        );
        assert!(tw.last().unwrap().contains("-j DROP"));
        assert!(r.contains("-A cali-pi-_zz-allow-client -p tcp -s 10.244.0.2/32 -m multiport --dports 5201,5301,5302"));
        assert!(r.trim_end().ends_with("COMMIT"));
    }

    #[test]
    fn nft_set_holds_every_peer_and_port() {
        let r = nft_set_rules(2, "calis");
        assert!(r.contains("100.64.0.1 . 8000, 100.64.0.2 . 8001, 10.244.0.2 . 5201"));
        assert!(r.contains("oifname \"calis\" jump to_server"));
    }
}
