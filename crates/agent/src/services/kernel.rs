//! The data path's side of `--services on`: the Service programs (socket
//! LB under `--cgroup-root`, NodePort translation on the node's external
//! device) and their maps, behind the reconciler's [`KernelMaps`] seam.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use weft_api::AffinityView;
use weft_datapath::bpf::Loaded;
use weft_datapath::services::{
    default_cgroup_root, monotonic_secs, sockdiag, ServiceMaps, ServiceProgramOptions,
    ServicePrograms, ServiceTable,
};
use weft_datapath::LinuxDatapath;
use weft_lb::{LbMaps, MapWriter, Op};

use super::KernelMaps;
use crate::config::AgentConfig;

/// The loaded programs (kept: they own the attachments' objects) and the
/// maps the reconciler writes.
pub struct Kernel {
    _programs: ServicePrograms,
    maps: ServiceMaps,
}

impl MapWriter for Kernel {
    type Error = String;
    fn write(&mut self, op: &Op) -> Result<(), String> {
        self.maps.write(op).map_err(|e| e.to_string())
    }
    fn write_all(&mut self, ops: &[Op]) -> (usize, Option<String>) {
        let (n, e) = self.maps.write_all(ops);
        (n, e.map(|e| e.to_string()))
    }
}

impl KernelMaps for Kernel {
    fn read_back(&mut self) -> Result<LbMaps, String> {
        self.maps.read_back().map_err(|e| e.to_string())
    }

    fn set_node_addrs(&mut self, addrs: &[IpAddr]) -> Result<(), String> {
        self.maps.set_node_addrs(addrs).map_err(|e| e.to_string())
    }

    fn affinity(&mut self) -> Vec<AffinityView> {
        let now = monotonic_secs();
        self.maps
            .affinity()
            .unwrap_or_default()
            .into_iter()
            .map(|a| AffinityView {
                client: a.client.to_string(),
                service_id: a.service_id,
                backend_id: a.backend_id,
                idle_seconds: now.saturating_sub(a.last_seen),
            })
            .collect()
    }

    fn abort_udp(&mut self, netns: Option<&Path>, peers: &[SocketAddr]) -> Result<usize, String> {
        let r = match netns {
            None => sockdiag::destroy_udp_to(peers),
            Some(ns) => sockdiag::destroy_udp_to_in(ns, peers),
        };
        r.map_err(|e| e.to_string())
    }

    fn counters(&mut self) -> BTreeMap<String, u64> {
        self.maps
            .counters()
            .map(|c| c.pairs().iter().map(|(k, v)| (k.to_string(), *v)).collect())
            .unwrap_or_default()
    }
}

/// Where the socket programs go: `--cgroup-root`, else the cgroup2 mount.
pub fn cgroup_root(cfg: &AgentConfig) -> anyhow::Result<PathBuf> {
    match (&cfg.cgroup_root, default_cgroup_root()) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(p)) => Ok(p),
        (None, None) => anyhow::bail!(
            "no cgroup v2 hierarchy is mounted: socket-level load balancing needs one; give \
             --cgroup-root or use --services off"
        ),
    }
}

/// weftd's factory: [`open_with`], sharing the flow ring of `linux`'s fast
/// path when it runs (the fast path starts before Services), so socket-LB
/// and NodePort translations reach `weft observe` beside the fast path's.
pub fn opener(linux: Option<Arc<LinuxDatapath>>) -> Box<super::KernelFactory> {
    Box::new(move |cfg: &AgentConfig, devices: &[String]| match linux {
        Some(l) => l.with_fast_maps(|share| {
            if share.is_none() {
                tracing::info!("the eBPF fast path is off: Service translations are not observed");
            }
            open_with(cfg, devices, share)
        }),
        None => open_with(cfg, devices, None),
    })
}

/// Loads the programs (maps pinned under `--bpf-pin-dir`, so a restart
/// finds them, IDs and NAT state included; maps of `share`'s names, the
/// flow ring among them, taken from it), attaches the socket programs
/// under the cgroup root and the NodePort pair to `devices`.
pub fn open_with(
    cfg: &AgentConfig,
    devices: &[String],
    share: Option<&Loaded>,
) -> anyhow::Result<Box<dyn KernelMaps + Send>> {
    let root = super::check_cgroup_root(&cgroup_root(cfg)?)?;
    let mut programs = ServicePrograms::load(&ServiceProgramOptions {
        pin_dir: cfg.bpf_pin_dir.as_deref(),
        share,
    })
    .context("loading the Service programs")?;
    programs
        .attach_cgroup(&root)
        .with_context(|| format!("attaching socket load balancing to {}", root.display()))?;
    for dev in devices {
        let ifindex = ifindex(dev)?;
        programs
            .attach_device(ifindex)
            .with_context(|| format!("attaching NodePort translation to {dev}"))?;
    }
    tracing::info!(cgroup = %root.display(), devices = ?devices, "Service programs attached");
    let maps = programs.maps();
    Ok(Box::new(Kernel {
        _programs: programs,
        maps,
    }))
}

/// The device's index in weftd's own namespace (sysfs may show another).
fn ifindex(dev: &str) -> anyhow::Result<u32> {
    use weft_datapath::netlink as nl;
    let mut sock = nl::Socket::open().context("opening a netlink socket")?;
    let payload = sock
        .get_one(&nl::Request::new(
            nl::get_link_by_name(dev),
            format!("link {dev}"),
        ))
        .with_context(|| format!("device {dev} not found (give --underlay-iface)"))?;
    nl::parse_link(&payload)
        .map(|l| l.index)
        .with_context(|| format!("device {dev}: unreadable link message"))
}
