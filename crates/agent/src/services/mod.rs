//! Service load balancing in weftd (`--services on`): a thread that follows
//! the Kubernetes view's Services and EndpointSlices and keeps the data
//! path's service maps equal to what `weft_lb` computes for this node.
//!
//! - [`convert`]: the adapter's types to `weft_lb`'s input
//! - [`follow`]: the view's changed Services, converted, as rounds
//! - [`reconciler`]: the rounds, pure over the [`KernelMaps`] seam
//! - [`stale`]: UDP sockets still connected to a backend that left
//! - [`view`]: `weft services`
//!
//! With `--services off` (the default) none of this runs: kube-proxy keeps
//! the Services and weft's programs leave its NAT alone.

pub mod convert;
pub mod follow;
pub mod kernel;
pub mod reconciler;
pub mod stale;
pub mod view;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use weft_api::ServicesView;
use weft_k8s::{Kind, View};
use weft_lb::{Algorithm, Config, NodeView};

pub use reconciler::{FakeKernel, KernelMaps, Reconciler};

use crate::agent::Agent;
use crate::config::{AgentConfig, ServicesMode};

/// How often a round runs without a change (retrying failed writes).
const IDLE_ROUND: Duration = Duration::from_secs(1);

/// After a change wakes the reconciler, it gathers the changes that follow
/// before running a round: until the view has been quiet for
/// [`GATHER_QUIET`], and at most [`GATHER_MAX`] after the wake. A burst of
/// slice changes (a rollout, `kubectl apply` of many objects: they arrive
/// a few ms apart) then costs one round, one lock of the maps and one batch
/// per map instead of one each, while a lone change waits only
/// [`GATHER_QUIET`] (kube-proxy waits up to its `minSyncPeriod`, 1 s; weft's
/// point is updates in milliseconds, so the bound stays far below the
/// ~200 ms a slice change takes to reach traffic through the API server).
pub const GATHER_QUIET: Duration = Duration::from_millis(10);
pub const GATHER_MAX: Duration = Duration::from_millis(100);

/// How often a round converts and compares every Service although the
/// view's feed told of no change: a safety net, cheap at this period
/// (tens of ms at 10k Services).
pub const FULL_RESYNC: Duration = Duration::from_secs(300);

struct Running {
    node: NodeView,
    inner: Mutex<Shared>,
}

struct Shared {
    reconciler: Reconciler,
    kernel: Box<dyn KernelMaps + Send>,
}

/// The agent's handle on the Service reconciler: empty with `--services off`.
#[derive(Default)]
pub struct Link {
    inner: OnceLock<Arc<Running>>,
    /// The kernel data path whose fast path shares its flow ring with the
    /// Service programs (set by [`crate::build`]).
    linux: OnceLock<Arc<weft_datapath::LinuxDatapath>>,
}

impl Link {
    /// Lets the Service programs share the fast path's flow ring, so their
    /// translations reach `weft observe` (weftd's build does this).
    pub fn share_fast_path(&self, linux: Arc<weft_datapath::LinuxDatapath>) {
        let _ = self.linux.set(linux);
    }

    /// The data path given to [`Link::share_fast_path`].
    pub fn fast_path(&self) -> Option<Arc<weft_datapath::LinuxDatapath>> {
        self.linux.get().cloned()
    }

    /// The Services the reconciler holds (flows name the Service of a
    /// translation from them); empty with `--services off`.
    pub fn services(&self) -> Vec<weft_lb::Service> {
        let Some(r) = self.inner.get() else {
            return Vec::new();
        };
        let shared = r.inner.lock().unwrap_or_else(|p| p.into_inner());
        shared
            .reconciler
            .inputs()
            .values()
            .filter_map(|i| i.0.clone())
            .collect()
    }

    /// `weft services`.
    pub fn view(&self) -> ServicesView {
        let Some(r) = self.inner.get() else {
            return ServicesView {
                mode: "off".into(),
                ..ServicesView::default()
            };
        };
        let mut shared = r.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut v = view::services_view(&shared.reconciler, &r.node);
        v.affinity = shared.kernel.affinity();
        v.counters = shared.kernel.counters();
        v
    }
}

/// What `--services on` needs from the data path: the service maps (read
/// back at start), with the programs attached under `cgroup_root` and on
/// the node's devices.
/// Called with weftd's configuration and the node's external devices.
pub type KernelFactory =
    dyn FnOnce(&AgentConfig, &[String]) -> anyhow::Result<Box<dyn KernelMaps + Send>> + Send;

/// Starts the reconciler thread with the kernel `open` gives. Returns at
/// once; the first round waits for the Service and EndpointSlice watches.
pub fn start(
    cfg: &AgentConfig,
    agent: &Arc<Agent>,
    open: Box<KernelFactory>,
) -> anyhow::Result<()> {
    if cfg.services == ServicesMode::Off {
        // a weftd that ran with --services on before leaves nothing behind
        // (only where told: a default root is the machine's, which a weftd
        // of a lab or test must never touch)
        if let Some(root) = &cfg.cgroup_root {
            match weft_datapath::services::detach_cgroup(root) {
                Ok(0) | Err(_) => {}
                Ok(n) => {
                    tracing::info!(n, cgroup = %root.display(), "--services off: socket load balancing detached")
                }
            }
        }
        return Ok(());
    }
    let Some(view) = agent.kubernetes().view() else {
        bail!(
            "--services on load-balances the Kubernetes API's Services: give weftd the API \
             (--kubeconfig, or run it in a pod), or use --services off and kube-proxy"
        );
    };
    let devices: Vec<String> = agent.facts().underlay.iter().cloned().collect();
    let mut kernel =
        open(cfg, &devices).context("preparing the Service load-balancing data path")?;
    let restored = kernel
        .read_back()
        .map_err(anyhow::Error::msg)
        .context("reading the service maps back")?;
    tracing::info!(
        services = restored.services.len(),
        backends = restored.backends.len(),
        "service maps read back; their IDs are kept"
    );
    let node = NodeView {
        node_name: agent.facts().node.clone(),
        proxy_name: None,
    };
    let config = Config {
        node: node.clone(),
        algorithm: Algorithm::Random,
    };
    let node_ips = cfg.node_ips.clone();
    let pods = agent.clone();
    let running = Arc::new(Running {
        node,
        inner: Mutex::new(Shared {
            reconciler: Reconciler::restore(config, restored),
            kernel,
        }),
    });
    let _ = agent.services().inner.set(running.clone());
    std::thread::Builder::new()
        .name("services".into())
        .spawn(move || run(&running, &view, &node_ips, &|| pod_namespaces(&pods)))
        .context("spawning the Service reconciler")?;
    Ok(())
}

/// This node's addresses, where NodePorts answer: the Node's addresses in
/// the API and `--node-ip`.
fn node_addrs(view: &View, configured: &[IpAddr]) -> Vec<IpAddr> {
    let mut a: Vec<IpAddr> = view.node().map(|n| n.addresses).unwrap_or_default();
    a.extend_from_slice(configured);
    a.sort();
    a.dedup();
    a
}

/// The network namespaces of this node's pods (the endpoint table's).
fn pod_namespaces(agent: &Agent) -> Vec<PathBuf> {
    agent
        .endpoints()
        .list()
        .into_iter()
        .filter(|e| !e.netns.is_empty())
        .map(|e| PathBuf::from(e.netns))
        .collect()
}

/// The kinds the Service thread reads: a change of any other (a pod, a
/// NetworkPolicy) does not wake it.
pub const READS: [Kind; 3] = [Kind::Service, Kind::EndpointSlice, Kind::Node];

fn run(r: &Running, view: &View, configured: &[IpAddr], pods: &dyn Fn() -> Vec<PathBuf>) {
    let mut seen = view.generation_of(&READS);
    let mut logged_wait = false;
    let mut addrs: Option<Vec<IpAddr>> = None;
    let mut follow = follow::Follow::new(view.service_feed());
    let mut last_full: Option<Instant> = None;
    loop {
        let synced = r
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reconciler
            .synced();
        let listed = view.current(Kind::Service) && view.current(Kind::EndpointSlice);
        if !synced && !listed {
            if !logged_wait {
                tracing::info!("Service load balancing waits for the Service and EndpointSlice watches to list once; the maps stay as they are");
                logged_wait = true;
            }
            seen = view.wait_change_of(&READS, seen, IDLE_ROUND);
            continue;
        }
        let now = view.generation_of(&READS);
        let started = Instant::now();
        let full = !synced || last_full.is_none_or(|t| t.elapsed() >= FULL_RESYNC);
        let round = follow.next(full);
        let mut guard = r.inner.lock().unwrap_or_else(|p| p.into_inner());
        let shared = &mut *guard;
        let want = node_addrs(view, configured);
        if addrs.as_ref() != Some(&want) {
            match shared.kernel.set_node_addrs(&want) {
                Ok(()) => {
                    tracing::info!(addresses = ?want, "NodePorts answer on these node addresses");
                    addrs = Some(want);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot set the node addresses for NodePorts; retrying")
                }
            }
        }
        let failed_before = shared.reconciler.progress().ops_failed;
        let written = match round {
            follow::Round::Full(inputs) => {
                last_full = Some(Instant::now());
                shared.reconciler.sync(inputs, &mut shared.kernel)
            }
            follow::Round::Changed(changed) => {
                shared.reconciler.sync_changed(changed, &mut shared.kernel)
            }
        };
        let left = shared.reconciler.take_left_udp();
        if !left.is_empty() {
            let t = Instant::now();
            let ns = stale::namespaces(pods());
            let (n, errors) = stale::abort(&mut shared.kernel, &ns, &left);
            tracing::info!(backends = ?left, namespaces = ns.len(), sockets = n,
                took_us = t.elapsed().as_micros() as u64,
                "UDP backends left their Services: sockets still connected to them aborted");
            for e in errors {
                tracing::warn!(error = %e, "aborting stale UDP sockets failed there; their owners keep the old backend until they reconnect");
            }
        }
        let p = shared.reconciler.progress();
        if !synced && shared.reconciler.synced() {
            tracing::info!(
                frontends = shared.reconciler.maps().services.len(),
                ops = written,
                took_ms = started.elapsed().as_millis() as u64,
                "Service maps in step with the API"
            );
        } else if written > 0 {
            tracing::debug!(
                ops = written,
                took_us = started.elapsed().as_micros() as u64,
                "Service maps updated"
            );
        }
        if p.ops_failed > failed_before {
            tracing::warn!(
                error = p.last_error.as_deref().unwrap_or(""),
                "writing the service maps failed; retrying"
            );
        }
        drop(guard);
        seen = view.wait_change_of(&READS, now, IDLE_ROUND);
        if seen != now {
            seen = gather(
                &mut |g, t| view.wait_change_of(&READS, g, t),
                seen,
                GATHER_QUIET,
                GATHER_MAX,
            );
        }
    }
}

/// Waits (with `wait`, the view's `wait_change_of` on [`READS`]) for changes after
/// generation `seen` until none came for `quiet` or `max` has passed;
/// returns the generation then.
pub fn gather(
    wait: &mut dyn FnMut(u64, Duration) -> u64,
    mut seen: u64,
    quiet: Duration,
    max: Duration,
) -> u64 {
    let start = Instant::now();
    loop {
        let left = max.saturating_sub(start.elapsed());
        if left.is_zero() {
            return seen;
        }
        let now = wait(seen, quiet.min(left));
        if now == seen {
            return seen;
        }
        seen = now;
    }
}

/// `--cgroup-root`'s check: socket-level load balancing attaches there and
/// applies to every process below, so it must be a cgroup v2 directory.
pub fn check_cgroup_root(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    if !path.join("cgroup.procs").exists() {
        bail!(
            "--cgroup-root {}: not a cgroup v2 directory (no cgroup.procs); give the unified \
             hierarchy's root (e.g. /sys/fs/cgroup) or the cgroup the pods run in",
            path.display()
        );
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_follow;
#[cfg(test)]
mod tests_udp;
