//! Request and reply bodies. A failed request answers with a non-2xx status
//! and a [`weft_cni_spec::CniError`] body, so the shim can print it as is.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
pub use weft_cni_spec::{CniError, NeutralResult};

/// The pod a container belongs to, from CNI_ARGS `K8S_POD_NAMESPACE`,
/// `K8S_POD_NAME`, `K8S_POD_UID` (empty when the runtime did not say).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub uid: String,
}

/// One attachment of a container to the network: the CNI identity of an
/// endpoint (spec: "container id + ifname" is unique per network).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddRequest {
    pub attachment: Attachment,
    /// Path of the container's network namespace (CNI_NETNS).
    pub netns: String,
    /// The network's name from the config.
    pub network: String,
    #[serde(default)]
    pub pod: PodRef,
    /// MTU from the config; `None` means derive it from the underlay.
    #[serde(default)]
    pub mtu: Option<u32>,
    pub want_ipv4: bool,
    pub want_ipv6: bool,
    /// Static addresses asked for (runtimeConfig.ips / args.cni.ips), with or
    /// without a prefix length.
    #[serde(default)]
    pub requested_ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelRequest {
    pub attachment: Attachment,
    /// May be empty: runtimes send DEL after the namespace is gone.
    #[serde(default)]
    pub netns: String,
    pub network: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRequest {
    pub attachment: Attachment,
    pub netns: String,
    pub network: String,
    /// The result the runtime holds for this attachment, when it sent one.
    #[serde(default)]
    pub prev_result: Option<NeutralResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRequest {
    pub network: String,
    /// `cni.dev/valid-attachments`: everything not listed may be collected.
    pub valid_attachments: Vec<Attachment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReply {
    /// Attachments torn down and whose addresses were released.
    pub collected: Vec<Attachment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRequest {
    pub network: String,
}

/// The CNI STATUS answer; `Ok` is an empty 200 reply, not-ready is a CniError
/// with code 50 or 51.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// `weft status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub node: String,
    pub version: String,
    pub pid: u32,
    pub uptime_seconds: u64,
    pub socket: String,
    pub store_backend: String,
    pub endpoints: usize,
    pub pools: Vec<PoolUsage>,
    /// Underlay interface and MTU the pod MTU is derived from.
    pub underlay: Option<String>,
    pub pod_mtu: u32,
    pub nat_outgoing: bool,
    /// DELs replayed from the spool at start.
    pub spool_replayed: usize,
    /// Resident memory of weftd in bytes (VmRSS).
    pub rss_bytes: u64,
    /// How pod traffic is forwarded: the eBPF fast path or the kernel alone.
    #[serde(default)]
    pub fastpath: FastPathStatus,
    /// The Kubernetes adapter, when weftd runs with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesStatus>,
}

/// The Kubernetes adapter as `weft status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesStatus {
    /// The API server's URL.
    pub server: String,
    /// Every watch has listed once and is healthy now.
    pub ready: bool,
    pub watches: Vec<WatchStatus>,
    /// Endpoints cleaned up because the API said their pod was gone from
    /// this node and no DEL came.
    #[serde(default)]
    pub pods_collected: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchStatus {
    /// `pods`, `namespaces`, …
    pub kind: String,
    pub synced: bool,
    pub healthy: bool,
    pub objects: usize,
    pub errors: u64,
    /// Objects skipped because weft could not read them.
    pub skipped: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The eBPF fast path as `weft status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FastPathStatus {
    /// `ebpf` (programs attached) or `kernel` (the kernel path alone).
    pub mode: String,
    /// Why the kernel path is used, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Pod addresses in the fast path's map, and how many of them are fast
    /// (settled and unshaped).
    pub addresses: usize,
    pub fast: usize,
    /// Host veths kept on the kernel path because they carry a qdisc.
    #[serde(default)]
    pub shaped: Vec<String>,
    /// The programs' counters (packets), by name.
    #[serde(default)]
    pub counters: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUsage {
    pub cidr: IpNet,
    pub block_prefix: u8,
    pub blocks: usize,
    pub capacity: u64,
    pub allocated: u64,
    pub quarantined: u64,
}

/// `weft endpoints`: one pod interface on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    pub attachment: Attachment,
    pub pod: PodRef,
    pub network: String,
    pub netns: String,
    pub host_ifname: String,
    pub mac: String,
    pub mtu: u32,
    pub ips: Vec<IpNet>,
    /// Unix seconds.
    pub created_at: u64,
}

/// `weft endpoints`: an endpoint and what the Kubernetes API says of its
/// pod (the record weftd keeps is [`EndpointInfo`]; labels are live, never
/// stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    #[serde(flatten)]
    pub endpoint: EndpointInfo,
    /// `None` without a Kubernetes adapter, or while the API has not shown
    /// this pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<PodMeta>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodMeta {
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// `None` while weftd has not seen the pod's namespace.
    #[serde(default)]
    pub namespace_labels: Option<BTreeMap<String, String>>,
}

/// `weft ipam show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamView {
    pub pools: Vec<PoolUsage>,
    pub blocks: Vec<BlockView>,
    pub allocations: Vec<AllocationView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockView {
    pub cidr: IpNet,
    pub affinity: Option<String>,
    pub allocated: u64,
    pub quarantined: u64,
    pub capacity: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationView {
    pub address: IpAddr,
    pub block: IpNet,
    pub handle: String,
    pub pod: PodRef,
    pub container_id: String,
    pub ifname: String,
    /// Unix seconds.
    pub allocated_at: u64,
    /// The node holding the address when it borrowed it from another node's
    /// block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub borrowed_by: Option<String>,
}

/// `weft ipam check`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamCheckReport {
    /// Addresses held by a handle that has no endpoint on its node.
    pub leaked: Vec<AllocationView>,
    /// Endpoints whose addresses IPAM does not attribute to them.
    pub unallocated_endpoints: Vec<Attachment>,
    /// Anything else that does not add up, in words.
    pub problems: Vec<String>,
}

impl IpamCheckReport {
    pub fn is_clean(&self) -> bool {
        self.leaked.is_empty() && self.unallocated_endpoints.is_empty() && self.problems.is_empty()
    }
}
