//! weftd, the node agent: owns the node's endpoints and IPAM, wires pods
//! through the data-path seam, and serves weft-cni and the CLI on a unix socket.
//!
//! - [`admission`]: who may hold a connection, body bytes or a lane slot
//! - [`agent`]: the CNI verbs and views (pure over its seams; unit-tested)
//! - [`endpoint`]: the agent's endpoint record (the API's `EndpointInfo` at
//!   the edge)
//! - [`endpoints`]: the persisted endpoint table (a DEL marks its record
//!   deleting before it gives anything up)
//! - [`fault`]: test-only fault points (`--fault-point`)
//! - [`gc`]: the CNI GC verb and leak collection
//! - [`fastpath`]: the eBPF fast path's start and its endpoint map
//! - [`flows`]: flow events read from the programs, the ring of recent
//!   flows, the streaming API behind `weft observe`
//! - [`health`]: liveness and readiness probes over HTTP
//! - [`metrics`]: Prometheus metrics (`--metrics-listen`)
//! - [`k8s`]: the Kubernetes adapter's start, pod metadata, gone-pod clean-up
//! - [`reconcile`]: start-up reconciliation and spool replay
//! - [`server`]: the socket, one thread per request
//! - [`services`]: Service load balancing (`--services on`): the API's
//!   Services and EndpointSlices into the data path's service maps
//! - [`startup`]: waiting for the datastore at start, the state directory's
//!   permissions
//! - [`teardown`]: deferred veth deletion, ordered before a new ADD
//! - [`naming`]: deterministic host-side names
//! - [`policy`]: NetworkPolicy compiled and written into the policy maps

pub mod admission;
pub mod agent;
pub mod config;
pub mod endpoint;
pub mod endpoints;
pub mod fastpath;
mod fastpath_state;
pub mod fault;
#[cfg(test)]
mod fence_tests;
pub mod flows;
mod gc;
pub mod health;
pub mod k8s;
pub mod metrics;
pub mod naming;
pub mod policy;
pub mod reconcile;
pub mod registry;
pub mod server;
pub mod services;
pub mod startup;
pub mod teardown;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use weft_datapath::{Datapath, FastPathSetup, LinuxDatapath, NodeSetup, OverlaySetup, RoutingMode};
use weft_ipam::{Ipam, IpamConfig, PoolConfig, SystemClock};
use weft_store::embedded::EmbeddedStore;
use weft_store::Store;

use crate::agent::{Agent, NodeFacts};
use crate::config::{AgentConfig, Routing, StoreKind, VXLAN_DEVICE, VXLAN_OVERHEAD};

/// The first wait when the datastore is away at start (then doubling).
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Builds the agent from its configuration: opens the stores, prepares the
/// node, reconciles, replays the spool. Does not serve yet.
pub fn build(cfg: &AgentConfig) -> anyhow::Result<Arc<Agent>> {
    // before any Kubernetes client (the store's, the adapter's) is built
    metrics::time_kubernetes_requests();
    startup::private_dir(&cfg.state_dir)
        .with_context(|| format!("preparing state directory {}", cfg.state_dir.display()))?;
    // the Kubernetes store's Node registry (see registry::kube)
    let mut nodes: Option<Arc<dyn registry::kube::NodeApi>> = None;
    let ipam_store: Arc<dyn Store> = match cfg.store {
        StoreKind::Embedded => Arc::new(
            EmbeddedStore::open(&cfg.state_dir.join("ipam.db"))
                .context("opening the IPAM store")?,
        ),
        StoreKind::Etcd => {
            if cfg.etcd_endpoints.is_empty() {
                anyhow::bail!(
                    "--store etcd needs --etcd-endpoints http://HOST:2379[,http://HOST2:2379…]"
                );
            }
            let endpoints = cfg.etcd_endpoints.join(",");
            Arc::new(
                startup::until_available(
                    &format!("etcd at {endpoints}"),
                    STORE_RETRY,
                    |e: &weft_store::StoreError| {
                        matches!(e, weft_store::StoreError::Unavailable { .. })
                    },
                    || {
                        weft_store::etcd::EtcdStore::connect(
                            &cfg.etcd_endpoints,
                            Default::default(),
                        )
                    },
                )
                .with_context(|| format!("connecting to etcd at {endpoints}"))?,
            )
        }
        StoreKind::Kubernetes => {
            let mut kc = weft_k8s::store::KubeStoreConfig::new(k8s::store_source(cfg));
            kc.name = cfg.kube_store.clone();
            kc.namespace = cfg.kube_store_namespace.clone();
            let store = Arc::new(
                weft_k8s::store::KubeStore::connect(kc)
                    .context("starting the Kubernetes API store")?,
            );
            nodes = Some(store.clone());
            store
        }
    };
    let local_store: Arc<dyn Store> = Arc::new(
        EmbeddedStore::open(&cfg.state_dir.join("endpoints.db"))
            .context("opening the endpoint store")?,
    );
    // the stores made their files: none readable by others (pods' names and
    // addresses are in them)
    startup::private_files(&cfg.state_dir, &cfg.spool_dir);
    // NetworkPolicy rides on the fast path's programs: decided now, as
    // they are loaded with the mode (--fastpath off with policy on loads
    // them to judge only)
    let policy = policy_datapath_mode(cfg);
    let linux = Arc::new(
        LinuxDatapath::new()
            .context("opening rtnetlink")?
            .with_bpf_pin_dir(cfg.bpf_pin_dir.clone())
            .with_policy(policy)
            .with_flow_events(cfg.flows == config::FlowsMode::On),
    );
    let datapath: Arc<dyn Datapath> = linux.clone();
    let ipam_store = metrics::store::TimedStore::wrap(ipam_store);
    let agent = build_with_nodes(cfg, ipam_store, local_store, datapath, nodes)?;
    agent.services().share_fast_path(linux.clone());
    // the programs' flow ring, once a loaded program reports flows
    let provider = flows::kernel_provider(linux.clone(), Arc::downgrade(&agent), cfg.flow_selftest);
    flows::start(&agent, cfg.flow_buffer, provider);
    if policy.enforces() {
        let node = agent.facts().node.clone();
        // rule ids as the previous weftd numbered them (pinned maps and
        // counters carry them)
        let rule_ids = cfg.state_dir.join(policy::rule_ids::FILE);
        agent.policy().set_rule_ids_file(rule_ids.clone());
        agent.policy().set_opener(Box::new(move || {
            match linux.policy_maps(&node, policy::rule_ids::load(&rule_ids)) {
                Ok(Some(m)) => Ok(Box::new(m) as Box<dyn weft_datapath::policy::PolicyMaps>),
                Ok(None) => {
                    Err("the eBPF programs are not running (see the fast path's status)".into())
                }
                Err(e) => Err(e.to_string()),
            }
        }));
    }
    Ok(agent)
}

/// The programs' policy mode: on when `--policy` may enforce (not `off`,
/// and a Kubernetes API to read policies from); judging only when the fast
/// path itself is off.
fn policy_datapath_mode(cfg: &AgentConfig) -> weft_datapath::policy::PolicyMode {
    use weft_datapath::policy::PolicyMode as M;
    let wanted = cfg.policy != config::PolicyMode::Off && k8s::source(cfg).is_some();
    match (wanted, cfg.fastpath) {
        (false, _) => M::Off,
        (true, config::FastPathMode::Off) => M::EnforceOnly,
        (true, _) => M::Enforce,
    }
}

/// [`build`] over given seams (tests pass an in-memory store and a recording
/// data path); the node registry in the store.
pub fn build_with(
    cfg: &AgentConfig,
    ipam_store: Arc<dyn Store>,
    local_store: Arc<dyn Store>,
    datapath: Arc<dyn Datapath>,
) -> anyhow::Result<Arc<Agent>> {
    build_with_nodes(cfg, ipam_store, local_store, datapath, None)
}

/// [`build_with`], the node registry from the Kubernetes API's Nodes when
/// `nodes` is given (`--store kubernetes`).
pub fn build_with_nodes(
    cfg: &AgentConfig,
    ipam_store: Arc<dyn Store>,
    local_store: Arc<dyn Store>,
    datapath: Arc<dyn Datapath>,
    nodes: Option<Arc<dyn registry::kube::NodeApi>>,
) -> anyhow::Result<Arc<Agent>> {
    let node = cfg.node();
    let pools = cfg
        .pools
        .iter()
        .map(|cidr| PoolConfig {
            cidr: *cidr,
            block_prefix: match cidr {
                ipnet::IpNet::V4(_) => cfg.block_prefix_v4,
                ipnet::IpNet::V6(_) => cfg.block_prefix_v6,
            },
        })
        .collect();
    let mut ipam_cfg = IpamConfig::new(node.clone(), pools);
    ipam_cfg.quarantine = cfg.quarantine();
    ipam_cfg.gc_grace = cfg.gc_grace();
    ipam_cfg.strict_affinity = cfg.strict_affinity;
    ipam_cfg.max_blocks_per_node = cfg.max_blocks_per_node;
    ipam_cfg.batching = cfg.ipam_batching;
    ipam_cfg.flush_interval = Duration::from_millis(cfg.ipam_flush_ms.max(1));
    let backend = ipam_store.backend().to_string();
    refuse_fenced(&*ipam_store)?;
    let cluster = matches!(cfg.store, StoreKind::Etcd | StoreKind::Kubernetes);
    // the node's own embedded store (endpoints.db) is the IPAM journal
    let journal = (cluster && cfg.ipam_local_allocations).then(|| local_store.clone());
    let ipam = startup::until_available(
        "the IPAM pools",
        STORE_RETRY,
        weft_ipam::IpamError::is_temporary,
        || {
            Ipam::with_journal(
                ipam_store.clone(),
                ipam_cfg.clone(),
                Arc::new(SystemClock),
                journal.clone(),
            )
        },
    )
    .context("setting up IPAM")?;

    datapath
        .prepare_node(&NodeSetup {
            pools: cfg.pools.clone(),
            nat_outgoing: cfg.nat_outgoing,
        })
        .context("preparing the node (forwarding, masquerade)")?;
    let (underlay, underlay_mtu) = match datapath.underlay_mtu(cfg.underlay_iface.as_deref()) {
        Ok((iface, mtu)) => (Some(iface), mtu),
        Err(e) => {
            if cfg.mtu.is_none() {
                tracing::warn!(error = %e, "cannot find the underlay interface; pods get MTU 1500 (set --mtu or --underlay-iface)");
            }
            (None, 1500)
        }
    };
    let overlay = cluster && cfg.routing == Routing::Overlay;
    let pod_mtu = cfg.mtu.unwrap_or(if overlay {
        underlay_mtu - VXLAN_OVERHEAD
    } else {
        underlay_mtu
    });
    let mut live_nodes = None;
    if cluster {
        live_nodes = start_cluster(
            cfg,
            &node,
            ipam.journal_gate(),
            &ipam_store,
            &datapath,
            nodes,
            underlay.as_deref(),
            underlay_mtu,
        )?;
        // A migration may have run entirely between the check above and the
        // registration (it saw no weftd, fenced, copied, saw none again):
        // the store is checked again now that this weftd is registered, and
        // before it allocates anything.
        refuse_fenced(&*ipam_store)?;
    }

    let (endpoints, bad) = endpoints::Endpoints::load(local_store).context("loading endpoints")?;
    for e in bad {
        tracing::error!(error = %e, "skipping an unreadable endpoint record");
    }
    let facts = NodeFacts {
        node,
        socket: cfg.socket.display().to_string(),
        pod_mtu,
        underlay,
        nat_outgoing: cfg.nat_outgoing,
        store_backend: backend,
        gc_attachment_grace: Duration::from_secs(cfg.gc_attachment_grace_seconds),
    };
    let agent = Arc::new(Agent::new(facts, ipam, endpoints, datapath));
    // identities are agreed on through the cluster store (etcd in a cluster)
    agent.policy().set_store(ipam_store.clone());
    if cluster {
        start_cluster_housekeeping(
            agent.clone(),
            ipam_store.clone(),
            Duration::from_secs(cfg.gc_interval_seconds.max(1)),
            Duration::from_secs(cfg.node_gone_grace_seconds),
            live_nodes,
        );
        if journal.is_some() {
            start_ipam_flush(agent.clone());
        }
    }

    let report = reconcile::reconcile(&agent);
    tracing::info!(finished_deletes = ?report.finished_deletes, restored = ?report.restored, vanished = ?report.vanished,
        orphans_removed = ?report.orphans_removed, "reconciled endpoints with the kernel");
    for e in &report.errors {
        tracing::error!(problem = %e, "reconciliation");
    }
    let (replayed, errors) = reconcile::replay_spool(&agent, &cfg.spool_dir);
    agent.add_spool_replayed(replayed);
    if replayed > 0 {
        tracing::info!(count = replayed, dir = %cfg.spool_dir.display(), "replayed spooled DELs");
    }
    for e in errors {
        tracing::error!(problem = %e, "spool replay");
    }

    // after reconciliation: the first sync fills the map from the endpoints
    // that really exist before this agent's programs replace any earlier ones
    let remote_device = match (cluster, overlay) {
        (true, true) => Some(VXLAN_DEVICE.to_string()),
        (true, false) => agent.facts().underlay.clone(),
        (false, _) => None,
    };
    // policy judges in the same programs: with `--fastpath off` they are
    // loaded all the same (forwarding nothing, see policy_datapath_mode)
    let policy_programs = cfg.policy != config::PolicyMode::Off && k8s::source(cfg).is_some();
    let fastpath_mode = match cfg.fastpath {
        config::FastPathMode::Off if policy_programs => config::FastPathMode::Auto,
        m => m,
    };
    fastpath::start(
        &agent,
        fastpath_mode,
        FastPathSetup {
            pools: cfg.pools.clone(),
            remote_device,
        },
        naming::HOST_PREFIX,
    )?;
    Ok(agent)
}

/// Refuses a store `weft store migrate` moved the cluster away from: what
/// weftd allocated there would be lost to the store the cluster now uses.
fn refuse_fenced(store: &dyn Store) -> anyhow::Result<()> {
    let fence = startup::until_available(
        "the datastore",
        STORE_RETRY,
        |e: &weft_store::StoreError| matches!(e, weft_store::StoreError::Unavailable { .. }),
        || registry::fence(store),
    )
    .context("reading the datastore")?;
    if let Some(moved_to) = fence {
        anyhow::bail!(
            "this {} store was migrated to {moved_to} by `weft store migrate`; start weftd with \
             --store {moved_to} (or migrate back)",
            store.backend()
        );
    }
    Ok(())
}

/// Joins the cluster: the overlay device (in overlay mode), this node's
/// registration, and the reconciler that keeps routes to the other nodes.
/// With `nodes` (the Kubernetes store) the node's facts go on its Node
/// object and the registry reads Nodes (see [`registry::kube`]); returns
/// then the live Nodes for gone-node collection.
#[allow(clippy::too_many_arguments)] // each is one fact of the node's joining
fn start_cluster(
    cfg: &AgentConfig,
    node: &str,
    journal_gate: Arc<weft_ipam::JournalGate>,
    store: &Arc<dyn Store>,
    datapath: &Arc<dyn Datapath>,
    nodes: Option<Arc<dyn registry::kube::NodeApi>>,
    underlay: Option<&str>,
    underlay_mtu: u32,
) -> anyhow::Result<Option<registry::kube::LiveNodes>> {
    let v4 = cfg.node_ips.iter().find_map(|ip| match ip {
        std::net::IpAddr::V4(a) => Some(*a),
        std::net::IpAddr::V6(_) => None,
    });
    let v6 = cfg.node_ips.iter().find_map(|ip| match ip {
        std::net::IpAddr::V6(a) => Some(*a),
        std::net::IpAddr::V4(_) => None,
    });
    if v4.is_none() && v6.is_none() {
        anyhow::bail!(
            "--store etcd or kubernetes needs this node's underlay address: --node-ip ADDR (IPv4 and/or IPv6)"
        );
    }
    let mode = match cfg.routing {
        Routing::Overlay => RoutingMode::Overlay,
        Routing::Native => RoutingMode::Native,
    };
    let vtep_mac = match mode {
        RoutingMode::Overlay => Some(
            datapath
                .ensure_overlay(&OverlaySetup {
                    device: VXLAN_DEVICE.to_string(),
                    vni: cfg.vxlan_vni,
                    port: cfg.vxlan_port,
                    local_v4: v4,
                    local_v6: v6,
                    underlay_dev: underlay.map(str::to_string),
                    mtu: underlay_mtu - VXLAN_OVERHEAD,
                })
                .context("creating the VXLAN device")?,
        ),
        RoutingMode::Native => None,
    };
    let vtep_mac = vtep_mac.map(weft_datapath::format_mac);
    if let Some(api) = &nodes {
        // what the Node lacks, before anyone may route to this node
        startup::until_available(
            &format!("this node's Node object ({node})"),
            STORE_RETRY,
            |e: &weft_store::StoreError| matches!(e, weft_store::StoreError::Unavailable { .. }),
            || api.annotate_node(node, registry::kube::own_annotations(vtep_mac.clone())),
        )
        .context("writing this node's annotations on its Node")?;
    }
    // the Kubernetes store keeps only this weftd's presence: its node's
    // facts are on the Node
    let prefix = match nodes {
        Some(_) => weft_store::AGENTS_PREFIX,
        None => registry::NODES_PREFIX,
    };
    let lease_ttl = Duration::from_secs(cfg.node_lease_seconds.max(2));
    let registered = registry::start_registration_observed(
        store.clone(),
        prefix,
        registry::NodeRecord {
            name: node.to_string(),
            underlay_v4: v4,
            underlay_v6: v6,
            vtep_mac,
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        lease_ttl,
        // the IPAM journal takes allocations only while this lease lives
        Box::new(move |sent_at_ms| journal_gate.lease_renewed(sent_at_ms, lease_ttl)),
    );
    // registered before any allocation: `weft store migrate` refuses while a
    // registration exists, so the fence check after this one (see build_with)
    // sees any migration this registration did not stop
    loop {
        match registered.recv_timeout(Duration::from_secs(10)) {
            Ok(registry::Registration::Live) => break,
            Ok(registry::Registration::Fenced(to)) => anyhow::bail!(
                "this {} store was migrated to {to} by `weft store migrate`; start weftd with \
                 --store {to} (or migrate back)",
                store.backend()
            ),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    node,
                    "waiting for this node's first registration in the store"
                )
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                anyhow::bail!("the node registration thread ended before registering")
            }
        }
    }
    stop_when_fenced(registered);
    let (feed, live) = match &nodes {
        Some(api) => {
            let mut feed =
                registry::kube::NodeFeed::new(api.watch_nodes(), mode == RoutingMode::Overlay);
            if feed.first(Duration::from_secs(30)) {
                registry::kube::move_weftnodes(&**store, &**api, feed.nodes());
            } else {
                tracing::warn!("no list of the cluster's Nodes within 30 s; routes to other nodes follow once it comes");
            }
            let live = feed.live();
            (Some(feed), Some(live))
        }
        None => (None, None),
    };
    registry::start_reconciler(
        store.clone(),
        datapath.clone(),
        node.to_string(),
        mode,
        VXLAN_DEVICE.to_string(),
        feed,
    );
    Ok(live)
}

/// Ends weftd when its registration finds the store fenced (a
/// re-registration during `weft store migrate`): from then on, anything it
/// allocated would be lost to the store the cluster moves to. It exits
/// rather than runs on: a restarted weftd refuses the fenced store and says
/// which store to use.
fn stop_when_fenced(registered: std::sync::mpsc::Receiver<registry::Registration>) {
    std::thread::Builder::new()
        .name("fence".into())
        .spawn(move || {
            while let Ok(r) = registered.recv() {
                if let registry::Registration::Fenced(to) = r {
                    tracing::error!(moved_to = %to, "this store was migrated by `weft store migrate` while weftd ran; exiting (restart weftd with --store {to})");
                    std::process::exit(1);
                }
            }
        })
        .expect("spawn fence watch");
}

/// Cluster IPAM housekeeping, until the process ends: blocks this node no
/// longer uses go back to the pool, and nodes gone from the registry for
/// longer than `grace` have their leaked addresses and blocks collected.
/// The registry is the store's registrations, or the live Nodes (`nodes`,
/// the Kubernetes store).
fn start_cluster_housekeeping(
    agent: Arc<Agent>,
    store: Arc<dyn Store>,
    every: Duration,
    grace: Duration,
    nodes: Option<registry::kube::LiveNodes>,
) {
    std::thread::Builder::new()
        .name("cluster-gc".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            match agent.ipam().release_empty_blocks() {
                Ok(given) if !given.is_empty() => tracing::info!(blocks = ?given, "gave back empty blocks"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "giving back empty blocks failed"),
            }
            let live = match &nodes {
                Some(n) => match n.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                    Some(live) => live.into_iter().collect(),
                    // no list of the Nodes yet: every node might be live
                    None => continue,
                },
                None => match store.list(registry::NODES_PREFIX) {
                    Ok(l) => l
                        .kvs
                        .iter()
                        .filter_map(|kv| kv.key.strip_prefix(registry::NODES_PREFIX).map(str::to_string))
                        .collect(),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list nodes; skipping gone-node collection");
                        continue;
                    }
                },
            };
            match agent.ipam().collect_gone_nodes(&live, grace) {
                Ok(c) if !c.freed.is_empty() || !c.blocks.is_empty() => tracing::info!(
                    freed = c.freed.len(), blocks = ?c.blocks, "collected what gone nodes left behind"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "gone-node collection failed"),
            }
        })
        .expect("spawn cluster housekeeping");
}

/// Writes the IPAM journal's allocations to the cluster store every flush
/// interval, until the process ends (the journal keeps them meanwhile; a
/// failed flush is tried again with the next).
fn start_ipam_flush(agent: Arc<Agent>) {
    let every = agent.ipam().config().flush_interval;
    std::thread::Builder::new()
        .name("ipam-flush".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            if let Err(e) = agent.ipam().flush() {
                tracing::warn!(error = %e, "writing journaled ipam allocations to the store failed; retrying");
            }
        })
        .expect("spawn ipam flush");
}

/// Replays the spool every `every` until the process ends: DELs that weft-cni
/// spooled while weftd could not finish them (its datastore away) go through
/// as soon as they can.
pub fn start_spool_replay(agent: Arc<Agent>, dir: std::path::PathBuf, every: Duration) {
    std::thread::Builder::new()
        .name("spool".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let (done, errors) = reconcile::replay_spool(&agent, &dir);
            if done > 0 {
                agent.add_spool_replayed(done);
                tracing::info!(count = done, dir = %dir.display(), "replayed spooled DELs");
            }
            for e in errors {
                // repeats every few seconds while the store is away: debug
                tracing::debug!(problem = %e, "spool replay");
            }
        })
        .expect("spawn spool replay");
}

/// Runs periodic leak collection until the process ends.
pub fn start_gc_loop(agent: Arc<Agent>, every: Duration) {
    std::thread::Builder::new()
        .name("gc".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            // a DEL whose last steps failed (its record still marked deleting)
            for e in reconcile::finish_deletes(&agent).1 {
                tracing::warn!(problem = %e, "finishing a begun DEL");
            }
            if let Err(e) = agent.collect_leaks() {
                tracing::warn!(error = %e, "garbage collection pass failed");
            }
        })
        .expect("spawn gc thread");
}
