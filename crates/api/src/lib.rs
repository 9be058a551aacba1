//! The API weftd serves on its unix socket, shared by the agent, the CNI shim
//! and the CLI. HTTP/1.1 with JSON bodies, one request per connection, no async
//! runtime: the shim must start and finish in a few milliseconds.

pub mod flows;
pub mod http;
pub mod matrix;
pub mod policy;
pub mod services;
pub mod stream;
pub mod types;

pub use flows::{
    Flow, FlowFilter, FlowLine, FlowQuery, LostFlows, Peer, PolicyRef, ServiceRef, Verdict,
};
pub use matrix::*;
pub use policy::*;
pub use services::*;
pub use types::*;

/// Where weftd listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/weft/weftd.sock";
/// Where weft-cni records DELs it could not deliver; weftd replays them at start.
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/weft/spool";

/// Request paths. POST for the CNI verbs, GET for the read-only views.
pub mod paths {
    pub const CNI_ADD: &str = "/v1/cni/add";
    pub const CNI_DEL: &str = "/v1/cni/del";
    pub const CNI_CHECK: &str = "/v1/cni/check";
    pub const CNI_GC: &str = "/v1/cni/gc";
    pub const CNI_STATUS: &str = "/v1/cni/status";
    pub const STATUS: &str = "/v1/status";
    pub const ENDPOINTS: &str = "/v1/endpoints";
    pub const IPAM: &str = "/v1/ipam";
    pub const IPAM_CHECK: &str = "/v1/ipam/check";
    /// POST a [`crate::FlowQuery`]: a streamed reply of [`crate::FlowLine`]s
    /// (newline-delimited JSON in chunked transfer encoding).
    pub const FLOWS: &str = "/v1/flows";
    pub const POLICY: &str = "/v1/policy";
    pub const POLICY_SHOW: &str = "/v1/policy/show";
    pub const POLICY_EXPLAIN: &str = "/v1/policy/explain";
    /// POST a [`crate::PolicyPreviewRequest`]: a [`crate::PolicyPreview`].
    pub const POLICY_PREVIEW: &str = "/v1/policy/preview";
    /// POST a [`crate::PolicyMatrixRequest`]: a [`crate::PolicyMatrix`].
    pub const POLICY_MATRIX: &str = "/v1/policy/matrix";
    /// `weft services`: what the Service load balancer holds.
    pub const SERVICES: &str = "/v1/services";
}
