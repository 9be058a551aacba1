//! NetworkPolicy in the kernel: the seam between weftd's compiled policy
//! (`weft_policy::Compiled`, updated by `weft_policy::plan`'s ordered
//! [`MapOp`]s) and the programs' maps (`bpf/lib/policy.h`, layouts in
//! `weft/policy.h`).
//!
//! The maps, all pinned (a weftd restart keeps enforcing with them):
//! - `weft_ipcache`: LPM trie, address -> identity (this node's ipcache);
//! - `weft_policy`: one LPM trie for every endpoint, keyed by the endpoint
//!   id weftd chose and the 8 bytes of [`weft_policy::PolicyKey`], valued
//!   by (rule id, ALLOW/DENY);
//! - `weft_policy_eps`: pod address -> (endpoint id, isolation and audit
//!   flags, the rule id each direction's default deny reports);
//! - `weft_policy_ct`: LRU conntrack of what a policy let through;
//! - `weft_rule_hits`: per-CPU rule id -> packets.
//!
//! [`PolicyMaps`] is the seam: [`KernelPolicyMaps`] writes the maps,
//! [`FakePolicyMaps`] keeps the same bytes in memory and answers what the
//! programs would decide, so agent tests can assert on verdicts.
//!
//! Rule ids: the seam owns the [`RuleIds`] (given at construction, so an
//! agent that persists one can hand it back after a restart) and writes
//! `rule_ids.id(&allowed_by)` into each entry; [`PolicyMaps::rule_ids`]
//! names what an id (a counter, a flow event's `rule_id`) stands for. The
//! default deny of policy P in direction D gets the id of
//! [`default_deny_reason`]`(P, D)`: the compiler's `AllowedBy::DefaultDeny`,
//! also what an entry carrying that default deny is written with.

mod fake;
mod kernel;
mod merge;
mod writes;

use std::collections::BTreeMap;
use std::net::IpAddr;

use weft_policy::{EndpointRef, MapOp, RuleIds};

use crate::DatapathError;

pub use fake::{Decision, FakePolicyMaps, Judgement};
pub use kernel::{KernelPolicyMaps, POLICY_MAPS};
pub use writes::{default_deny_policy, default_deny_reason, describe_rule, Translator, Write};

/// What the seam needs to know of an endpoint on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEndpoint {
    /// Nonzero, unique among this node's endpoints, fixed for the pod's
    /// life (a pod that comes back under the same name after
    /// `MapOp::EndpointGone` may get another).
    pub id: u32,
    /// The pod's addresses (the keys of its `weft_policy_eps` entries).
    pub addresses: Vec<IpAddr>,
    /// Would-be drops pass and are reported as AUDIT.
    pub audit: bool,
}

/// Resolves an endpoint of the compiled state: `None` for pods of other
/// nodes (their maps are written there), whose ops are skipped.
pub type EndpointLookup<'a> = &'a dyn Fn(&EndpointRef) -> Option<PolicyEndpoint>;

/// Whether the programs enforce policy, and whether they forward too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyMode {
    /// No policy is judged (the maps may be filled all the same).
    #[default]
    Off,
    /// Policy is judged; the fast path forwards as well.
    Enforce,
    /// Policy alone: the programs judge and hand every packet to the
    /// kernel path (`--fastpath off` with policy on).
    EnforceOnly,
}

impl PolicyMode {
    /// `weft_config.flags` for this mode.
    pub fn config_flags(self) -> u32 {
        use weft_bpf_abi::{CONFIG_NO_FORWARD, CONFIG_POLICY};
        match self {
            PolicyMode::Off => 0,
            PolicyMode::Enforce => CONFIG_POLICY,
            PolicyMode::EnforceOnly => CONFIG_POLICY | CONFIG_NO_FORWARD,
        }
    }

    pub fn enforces(self) -> bool {
        self != PolicyMode::Off
    }

    /// Whether the fast path's redirects are on.
    pub fn forwards(self) -> bool {
        self != PolicyMode::EnforceOnly
    }
}

/// The policy maps of one node. On an error the maps may hold part of the
/// writes: call [`PolicyMaps::replace`] with the full state to converge.
pub trait PolicyMaps: Send {
    /// Writes `ops` (from `weft_policy::plan`, in its order) for this node:
    /// ops of endpoints `endpoints` does not resolve and ipcache ops of
    /// other nodes are skipped. Returns the map writes made.
    fn apply(
        &mut self,
        ops: &[MapOp],
        endpoints: EndpointLookup<'_>,
    ) -> Result<usize, DatapathError>;

    /// Makes the maps hold exactly `state` for this node, whatever they held
    /// (at start: pinned maps keep an earlier agent's entries). Entries are
    /// written before stale ones are removed, so enforcement never lapses.
    fn replace(
        &mut self,
        state: &weft_policy::Compiled,
        endpoints: EndpointLookup<'_>,
    ) -> Result<usize, DatapathError>;

    /// Writes one endpoint's entries and state as `state` compiled them
    /// (a pod being added: its policy is in the maps before its CNI ADD
    /// returns; `apply` skips ops of endpoints that do not resolve yet).
    fn write_endpoint(
        &mut self,
        state: &weft_policy::Compiled,
        endpoint: &EndpointRef,
        ep: &PolicyEndpoint,
    ) -> Result<usize, DatapathError>;

    /// Packets each rule id decided, summed over CPUs.
    fn rule_hits(&self) -> Result<BTreeMap<u32, u64>, DatapathError>;

    /// What each rule id stands for.
    fn rule_ids(&self) -> &RuleIds;
}
