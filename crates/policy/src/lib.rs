//! Kubernetes NetworkPolicy (networking.k8s.io/v1), compiled the way
//! Cilium models it and checked against a plain evaluator. Pure: no kernel,
//! no API client, no async.
//!
//! - [`model`]: the inputs (policies, pods, nodes) as the API writes them.
//! - [`identity`]: numeric security identities and their allocator seam.
//! - [`compile()`]: identities, per-node ipcaches (prefix -> identity) and
//!   per-endpoint policy map entries ((identity, direction, protocol, port
//!   prefix) -> the rule that allows), see [`mapkey`] for the layout.
//! - [`Compiled::check`] / [`Compiled::explain`]: the data path's lookups
//!   replayed, with attribution.
//! - [`Incremental`]: the same compile, redone only for the endpoints a
//!   change can affect.
//! - [`plan()`]: an update's map writes, ordered so nothing allowed before
//!   and after is dropped in between.
//! - [`evaluate()`]: the reference, read straight off the API docs.

pub mod audit;
pub mod cluster;
pub mod cluster_api;
pub mod compile;
mod entries;
pub mod evaluate;
mod flatten;
pub mod identity;
pub mod incremental;
pub mod lookup;
pub mod mapkey;
pub mod model;
mod peers;
pub mod plan;
pub mod ports;
pub mod preview;
pub mod rules;
pub mod selector;
pub mod tiers;
pub mod verdict;

// The unit tests share generators with the integration tests, which name
// this crate.
#[cfg(test)]
extern crate self as weft_policy;
#[cfg(test)]
mod peers_tests;

pub use audit::{evaluate_audit, Audited, Outcome};
pub use cluster::{
    ClusterAction, ClusterNetworkPolicy, ClusterPeer, ClusterPort, ClusterRule, ClusterSubject,
    NamespacedPod, Tier,
};
pub use cluster_api::{ApiClusterNetworkPolicy, ApiError};
pub use compile::{
    compile, compile_all, compile_endpoint, compile_endpoint_all, Compiled, EndpointPolicy,
    EndpointRef, PolicySummary,
};
pub use evaluate::{evaluate, End};
pub use identity::{Collected, Identity, IdentityAllocator, IdentityKey, MemoryAllocator, Subject};
pub use incremental::{Incremental, Update};
pub use lookup::{Explanation, Step};
pub use mapkey::PolicyKey;
pub use model::{
    Direction, Flow, Inventory, IpBlock, NetworkPolicy, Node, Peer, PolicyPort, PolicyRef, PortRef,
    Protocol, Rule, Workload,
};
pub use plan::{apply, plan, MapOp};
pub use ports::{range_prefixes, PortPrefix};
pub use rules::{RuleIds, SavedRuleIds};
pub use selector::{LabelSelector, Labels, Operator, Requirement};
pub use tiers::{evaluate_all, TierOutcome};
pub use verdict::{Action, AllowedBy, ClusterRuleRef, DirectionVerdict, RuleRef, Verdict};

/// What can go wrong. Messages say what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid label selector: {0}")]
    Selector(String),
    #[error("invalid peer: {0}")]
    Peer(String),
    #[error("invalid port: {0}")]
    Port(String),
    #[error("policy {policy} is invalid ({reason}); it isolates the pods it selects and allows nothing until it is fixed")]
    Invalid { policy: String, reason: String },
    #[error("identity allocation failed: {0}; check the identity store")]
    Allocator(String),
}
