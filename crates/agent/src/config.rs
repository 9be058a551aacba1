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

    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "weft_agent=debug".
    #[arg(long, env = "WEFT_LOG", default_value = "info")]
    pub log: String,
}

impl AgentConfig {
    pub fn quarantine(&self) -> Duration {
        Duration::from_secs(self.quarantine_seconds)
    }

    pub fn gc_grace(&self) -> Duration {
        Duration::from_secs(self.gc_grace_seconds)
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
