//! `GET /v1/services`: Service load balancing as weftd runs it (`weft
//! services`): every frontend with its backends, what the kernel's maps
//! hold, the reconciler's progress, affinity entries and counters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicesView {
    /// `on`: weftd load-balances Services; `off`: kube-proxy (or nobody)
    /// does, and the rest of this view is empty.
    pub mode: String,
    /// The first full round ran (both watches had listed once).
    pub synced: bool,
    /// The kernel's maps equal the desired state.
    pub converged: bool,
    pub frontends: Vec<FrontendView>,
    /// Services left alone, with why (headless, ExternalName, another
    /// proxy's, an address another Service holds).
    pub skipped: Vec<String>,
    pub reconcile: ReconcileView,
    /// Entries per map, as the kernel holds them.
    pub maps: BTreeMap<String, usize>,
    /// ClientIP affinity entries in the kernel.
    pub affinity: Vec<AffinityView>,
    /// The data path's Service counters by name.
    pub counters: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontendView {
    /// `namespace/name`.
    pub service: String,
    pub port_name: String,
    /// `address:port/PROTO` (`0.0.0.0:port` for a NodePort: every node address).
    pub address: String,
    /// ClusterIP, NodePort, ExternalIP, LoadBalancer.
    pub kind: String,
    /// `ext` or `int` (the second scope of an `externalTrafficPolicy: Local` address).
    pub scope: String,
    /// The service ID (reverse NAT, conntrack), once assigned.
    pub id: Option<u16>,
    /// forward, reject (no endpoints) or drop (none in a Local scope).
    pub verdict: String,
    pub flags: Vec<String>,
    pub affinity_timeout_seconds: Option<u32>,
    pub backends: Vec<BackendView>,
    /// The kernel's master entry is the desired one.
    pub programmed: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendView {
    pub id: Option<u32>,
    /// `address:port/PROTO`.
    pub address: String,
    /// active or terminating.
    pub state: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileView {
    pub rounds: u64,
    pub ops_applied: u64,
    pub ops_failed: u64,
    /// Ops are waiting for a retry.
    pub pending: bool,
    pub last_error: Option<String>,
    /// Services the desired state could not take, with why.
    pub refused: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AffinityView {
    pub client: String,
    pub service_id: u16,
    pub backend_id: u32,
    /// Seconds since the entry was last used.
    pub idle_seconds: u64,
}
