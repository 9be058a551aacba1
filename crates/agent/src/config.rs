//! weftd's configuration: every flag and environment variable in one place.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ipnet::IpNet;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "weftd",
    version,
    about = "weft node agent: serves weft-cni and the weft CLI on a unix socket"
)]
pub struct AgentConfig {
    /// Unix socket to serve on (root-only, mode 0600).
    #[arg(long, env = "WEFT_SOCKET", default_value = weft_api::DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// Directory for weftd's durable state (IPAM store, endpoints).
    #[arg(long, env = "WEFT_STATE_DIR", default_value = "/var/lib/weft")]
    pub state_dir: PathBuf,

    /// Directory where weft-cni spools DELs it could not deliver; replayed at start.
    #[arg(long, env = "WEFT_SPOOL_DIR", default_value = weft_api::DEFAULT_SPOOL_DIR)]
    pub spool_dir: PathBuf,

    /// This node's name (defaults to the host name).
    #[arg(long, env = "WEFT_NODE_NAME")]
    pub node_name: Option<String>,

    /// IP pools pods get addresses from (repeat for several; v4 and v6).
    #[arg(long = "pool", env = "WEFT_POOLS", value_delimiter = ',', default_values = ["10.244.0.0/16", "fd00:10:244::/56"])]
    pub pools: Vec<IpNet>,

    /// Prefix length of the blocks IPv4 pools are cut into.
    #[arg(long, default_value_t = 26)]
    pub block_prefix_v4: u8,

    /// Prefix length of the blocks IPv6 pools are cut into.
    #[arg(long, default_value_t = 122)]
    pub block_prefix_v6: u8,

    /// Seconds a released address rests before it is handed out again.
    #[arg(long, default_value_t = 30)]
    pub quarantine_seconds: u64,

    /// Seconds an allocation must exist before garbage collection may free it
    /// (protects an ADD still in flight).
    #[arg(long, default_value_t = 60)]
    pub gc_grace_seconds: u64,

    /// Seconds an attachment must exist before a CNI GC may collect it: the
    /// runtime's list of valid attachments can predate an ADD just finished.
    #[arg(long, default_value_t = 10)]
    pub gc_attachment_grace_seconds: u64,

    /// Seconds between garbage-collection passes over this node's addresses.
    #[arg(long, default_value_t = 300)]
    pub gc_interval_seconds: u64,

    /// Masquerade traffic from the pools to destinations outside them.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub nat_outgoing: bool,

    /// Pod MTU; by default the underlay interface's MTU.
    #[arg(long)]
    pub mtu: Option<u32>,

    /// Interface whose MTU pods inherit; by default the device of the default route.
    #[arg(long)]
    pub underlay_iface: Option<String>,

    /// Where cluster state (IPAM, node registry) lives: `embedded` (one node,
    /// a file in --state-dir), `etcd` (a cluster; see --etcd-endpoints) or
    /// `kubernetes` (a cluster, in the API server: weft.dev objects per
    /// pool, block and node behind a WeftStore head, with the kubeconfig or
    /// in-cluster config of --kubeconfig).
    #[arg(long, value_enum, default_value_t = StoreKind::Embedded)]
    pub store: StoreKind,

    /// The store's name (with --store kubernetes): its WeftStore head's, and
    /// the prefix and `weft.dev/store` label of its objects.
    #[arg(long, env = "WEFT_KUBE_STORE", default_value = "weft")]
    pub kube_store: String,

    /// The namespace of the store's Leases (with --store kubernetes).
    #[arg(long, env = "WEFT_KUBE_STORE_NAMESPACE", default_value = "weft-system")]
    pub kube_store_namespace: String,

    /// etcd client URLs, comma-separated (with --store etcd).
    #[arg(long, env = "WEFT_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,

    /// How other nodes' pod blocks are reached (with --store etcd or kubernetes).
    #[arg(long, value_enum, default_value_t = Routing::Overlay)]
    pub routing: Routing,

    /// This node's underlay addresses, as other nodes reach it (repeat for
    /// IPv4 and IPv6). Required with --store etcd or kubernetes.
    #[arg(long = "node-ip", value_delimiter = ',')]
    pub node_ips: Vec<std::net::IpAddr>,

    /// VXLAN network identifier of the overlay.
    #[arg(long, default_value_t = 4096)]
    pub vxlan_vni: u32,

    /// UDP port of the overlay.
    #[arg(long, default_value_t = 4789)]
    pub vxlan_port: u16,

    /// Seconds a node's registration outlives its last renewal: a node that
    /// stops (crash, partition) leaves everyone's routes this long after.
    #[arg(long, default_value_t = 10)]
    pub node_lease_seconds: u64,

    /// Never borrow addresses from other nodes' blocks (the node stops at
    /// its own blocks and --max-blocks-per-node).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub strict_affinity: bool,

    /// Most blocks of each IP family this node may claim (default: no limit).
    #[arg(long)]
    pub max_blocks_per_node: Option<u32>,

    /// Batch concurrent allocations into one datastore write (group commit).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub ipam_batching: bool,

    /// With a cluster store (etcd, kubernetes): allocations in this node's
    /// own blocks are recorded in its state directory first (fsync'ed
    /// before ADD returns) and written to the store in one commit per
    /// --ipam-flush-ms; block claims and borrowed addresses still go to the
    /// store at once. Only while this node's registration lease is alive
    /// with a margin and the store answers (each batch reads its blocks
    /// first): otherwise the ADD is a store write, which fails fast with
    /// the store away (see ARCHITECTURE.md).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub ipam_local_allocations: bool,

    /// How often journaled allocations are written to the cluster store
    /// (the most `weft ipam show` on another node lags behind).
    #[arg(long, default_value_t = 500)]
    pub ipam_flush_ms: u64,

    /// Seconds a node must be gone from the registry before its leaked
    /// addresses and its blocks are collected.
    #[arg(long, default_value_t = 300)]
    pub node_gone_grace_seconds: u64,

    /// The eBPF forwarding fast path (tc programs on the pod veths and the
    /// remote device): `auto` uses it when the kernel can (Linux >= 6.6 with
    /// tcx and conntrack kfuncs) and falls back to the kernel path with a
    /// warning; `on` refuses to start without it; `off` removes it.
    #[arg(long, env = "WEFT_FASTPATH", value_enum, default_value_t = FastPathMode::Auto)]
    pub fastpath: FastPathMode,

    /// Watch the Kubernetes API (pods' labels, namespaces, policies,
    /// services): `auto` when --kubeconfig is given or weftd runs in a pod
    /// with a service account, `on` insists (and infers the config like
    /// kubectl when neither is there), `off` never.
    #[arg(long, env = "WEFT_KUBERNETES", value_enum, default_value_t = KubernetesMode::Auto)]
    pub kubernetes: KubernetesMode,

    /// Enforce Kubernetes NetworkPolicy in the eBPF data path: `auto` when
    /// the Kubernetes adapter runs and the kernel can load the policy
    /// programs (else off, with a warning), `on` refuses to start without
    /// them, `off` never.
    #[arg(long, env = "WEFT_POLICY", value_enum, default_value_t = PolicyMode::Auto)]
    pub policy: PolicyMode,

    /// kubeconfig to reach the API server with; in a pod the service
    /// account's in-cluster config is used without it.
    #[arg(long, env = "WEFT_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Seconds a pod must be gone from this node in the API before weftd
    /// cleans up its endpoint when no DEL came (what CNI GC would do).
    #[arg(long, default_value_t = 60)]
    pub pod_gone_grace_seconds: u64,

    /// Address to answer liveness (`/healthz`) and readiness (`/readyz`)
    /// probes on, e.g. 127.0.0.1:9765 (the DaemonSet's); none by default.
    #[arg(long, env = "WEFT_HEALTH_LISTEN")]
    pub health_listen: Option<std::net::SocketAddr>,

    /// Address to serve Prometheus metrics on (`/metrics`), e.g. the node's
    /// own address and port 9964; none by default. The metrics name pods and
    /// addresses: bind the node address or loopback, never a public one.
    #[arg(long, env = "WEFT_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// Flows kept for `weft observe` (136 bytes each, pods' names and
    /// labels shared); 0 turns flow observation off.
    #[arg(long, default_value_t = crate::flows::DEFAULT_CAPACITY)]
    pub flow_buffer: usize,

    /// Tests only: report every TCP/UDP packet pods send through a test
    /// program on their host veths, instead of the programs' own flows.
    #[arg(long, hide = true)]
    pub flow_selftest: bool,

    /// Flow events from the policy programs: `off` keeps the programs from
    /// reporting (drops are still counted in weft_drops_total; Service
    /// translations still report), for hosts that want no cost at all.
    #[arg(long, env = "WEFT_FLOWS", value_enum, default_value_t = FlowsMode::On)]
    pub flows: FlowsMode,

    /// Serve flows over TLS to readers the cluster authorises (`weft
    /// observe --cluster`): a bearer token the API server accepts, whose
    /// user RBAC lets `get` the non-resource URL /weft/flows. Off by default;
    /// bind the node's own address (e.g. $NODE_IP:9965). Needs the
    /// Kubernetes API, --flows-tls-cert and --flows-tls-key.
    #[arg(long, env = "WEFT_FLOWS_LISTEN", requires_all = ["flows_tls_cert", "flows_tls_key"])]
    pub flows_listen: Option<std::net::SocketAddr>,

    /// The TLS certificate (PEM, with its chain) of --flows-listen; its
    /// names must include the node's address readers dial.
    #[arg(long, env = "WEFT_FLOWS_TLS_CERT")]
    pub flows_tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --flows-tls-cert.
    #[arg(long, env = "WEFT_FLOWS_TLS_KEY")]
    pub flows_tls_key: Option<PathBuf>,

    /// Start without --flows-listen, saying so, when --flows-tls-cert is
    /// not there (the DaemonSet's optional Secret not created); without
    /// this a missing certificate stops weftd.
    #[arg(long, env = "WEFT_FLOWS_TLS_OPTIONAL")]
    pub flows_tls_optional: bool,

    /// Where the fast path pins the maps that outlive a restart (its
    /// counters), one directory per weftd on a bpf filesystem, e.g.
    /// /sys/fs/bpf/weft. Unset: every start begins with fresh maps.
    #[arg(long, env = "WEFT_BPF_PIN_DIR")]
    pub bpf_pin_dir: Option<PathBuf>,

    /// Service load balancing: `off` leaves Services to kube-proxy (weft's
    /// programs stay correct under its NAT); `on` load-balances them in
    /// eBPF (socket-level for pods and the node, tc for traffic from
    /// outside) from the API's Services and EndpointSlices, with kube-proxy
    /// absent. Needs the Kubernetes API.
    #[arg(long, env = "WEFT_SERVICES", value_enum, default_value_t = ServicesMode::Off)]
    pub services: ServicesMode,

    /// The cgroup v2 directory socket-level load balancing attaches to
    /// (with --services on): every process below it (pods, the node's own
    /// clients) connects straight to a backend. Default: the unified
    /// hierarchy's root, /sys/fs/cgroup.
    #[arg(long, env = "WEFT_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,

    /// Tests only: stop at this named step (see the `fault` module) so a
    /// test can kill weftd there. Never set in production.
    #[arg(long, hide = true)]
    pub fault_point: Option<String>,

    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "weft_agent=debug".
    #[arg(long, env = "WEFT_LOG", default_value = "info")]
    pub log: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Embedded,
    Etcd,
    Kubernetes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Routing {
    /// VXLAN between nodes: works on any underlay, costs 50 bytes of MTU.
    Overlay,
    /// A route per remote block via the node's underlay address (one L2).
    Native,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FastPathMode {
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyMode {
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlowsMode {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServicesMode {
    On,
    Off,
}

impl PolicyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Auto => "auto",
            PolicyMode::On => "on",
            PolicyMode::Off => "off",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KubernetesMode {
    Auto,
    On,
    Off,
}

/// The overlay's device name.
pub const VXLAN_DEVICE: &str = "weft.vxlan";
/// IPv4 + UDP + VXLAN headers that the overlay adds to every packet.
pub const VXLAN_OVERHEAD: u32 = 50;

impl AgentConfig {
    pub fn quarantine(&self) -> Duration {
        Duration::from_secs(self.quarantine_seconds)
    }

    pub fn gc_grace(&self) -> Duration {
        Duration::from_secs(self.gc_grace_seconds)
    }

    /// Where socket-level load balancing attaches.
    pub fn cgroup_root(&self) -> PathBuf {
        self.cgroup_root
            .clone()
            .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"))
    }

    pub fn node(&self) -> String {
        self.node_name.clone().unwrap_or_else(hostname)
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
