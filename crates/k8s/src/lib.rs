//! weft's Kubernetes adapter, the only part of weftd that is async and links
//! kube-rs. It watches this node's Node, the pods bound to this node,
//! Namespaces, NetworkPolicies, Services and EndpointSlices, and keeps them
//! as plain domain types ([`model`]) in an index that plain threads read.
//!
//! - [`cnp`]: the ClusterNetworkPolicy watch (a CRD; absent is empty)
//! - [`model`]: the domain types (no kube types leak out)
//! - [`convert`]: Kubernetes objects cut to them, field errors named
//! - [`guarded`]: per-object decoding, so one bad object never stalls a watch
//! - [`index`]: `apply` / `delete` / `reset` in, [`View`] out
//! - [`watch`]: one watch's events into the index, errors retried with backoff
//! - [`runtime`]: the adapter thread, its tokio runtime and client
//! - [`store`]: weft's datastore on the Kubernetes API (`--store kubernetes`)

pub mod access;
pub mod cnp;
pub mod convert;
pub mod guarded;
pub mod index;
pub mod model;
pub mod runtime;
pub mod store;
pub mod timing;
pub mod watch;

pub use index::{AdapterStatus, Index, KindStatus, View};
pub use model::*;
pub use runtime::{Adapter, AdapterConfig, K8sError, PodPresence, Source};

#[cfg(test)]
mod tests;
