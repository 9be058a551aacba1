//! Who the addresses of a flow are: the pods of this node from the endpoint
//! table, with their labels from the Kubernetes View, resolved when the flow
//! is read (so a flow keeps the pod it was about after the pod is gone), and
//! the policy rule that decided, named by the policy side ([`RuleBook`]).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use weft_api::PolicyRef;
use weft_bpf_abi::FlowEvent;

use super::decode::{self, Clock};
use super::Stored;
use crate::agent::Agent;

/// A pod as flows name it; shared by every flow of the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerMeta {
    pub namespace: String,
    pub pod: String,
    pub labels: BTreeMap<String, String>,
}

/// Address to pod.
pub trait Resolve: Send {
    fn resolve(&mut self, ip: IpAddr) -> Option<Arc<PeerMeta>>;
}

/// A fixed table (tests).
impl Resolve for HashMap<IpAddr, Arc<PeerMeta>> {
    fn resolve(&mut self, ip: IpAddr) -> Option<Arc<PeerMeta>> {
        self.get(&ip).cloned()
    }
}

/// One rule's count of decisions, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleHit {
    pub policy: PolicyRef,
    /// `FORWARDED`, `DROPPED`, `AUDIT`.
    pub verdict: String,
    pub packets: u64,
}

/// What the policy side tells flows and metrics: the rule behind a rule id,
/// and how often each rule decided. Implemented where policy is compiled
/// for the node; until then no flow names a policy and the metric is empty.
pub trait RuleBook: Send + Sync {
    fn rule(&self, rule_id: u32) -> Option<PolicyRef>;
    fn hits(&self) -> Vec<RuleHit> {
        Vec::new()
    }
}

/// How long the address table is used before it is built again.
const REFRESH: Duration = Duration::from_secs(1);

/// The agent's table: its endpoints joined with their pods' labels, rebuilt
/// at most once a second (and only while flows come).
pub struct AgentResolver {
    agent: Weak<Agent>,
    table: HashMap<IpAddr, Arc<PeerMeta>>,
    built: Option<Instant>,
}

impl AgentResolver {
    pub fn new(agent: Weak<Agent>) -> Self {
        AgentResolver {
            agent,
            table: HashMap::new(),
            built: None,
        }
    }

    fn rebuild(&mut self) {
        let Some(agent) = self.agent.upgrade() else {
            return;
        };
        let mut table = HashMap::new();
        for v in crate::k8s::endpoint_views(&agent) {
            let pod = &v.endpoint.pod;
            let meta = Arc::new(PeerMeta {
                namespace: pod.namespace.clone(),
                // a runtime that gave no pod name: the container id stands in
                pod: if pod.name.is_empty() {
                    v.endpoint.attachment.container_id.clone()
                } else {
                    pod.name.clone()
                },
                labels: v.kubernetes.map(|k| k.labels).unwrap_or_default(),
            });
            for ip in &v.endpoint.ips {
                table.insert(ip.addr(), meta.clone());
            }
        }
        self.table = table;
        self.built = Some(Instant::now());
    }
}

impl Resolve for AgentResolver {
    fn resolve(&mut self, ip: IpAddr) -> Option<Arc<PeerMeta>> {
        if self.built.is_none_or(|t| t.elapsed() >= REFRESH) {
            self.rebuild();
        }
        self.table.get(&ip).cloned()
    }
}

/// A kernel event as the ring keeps it.
pub fn store(
    ev: &FlowEvent,
    clock: &Clock,
    resolve: &mut dyn Resolve,
    rules: Option<&dyn RuleBook>,
) -> Stored {
    let src = decode::address(ev.family, &ev.src).and_then(|ip| resolve.resolve(ip));
    let dst = decode::address(ev.family, &ev.dst).and_then(|ip| resolve.resolve(ip));
    let policy = match (ev.rule_id, rules) {
        (0, _) | (_, None) => None,
        (id, Some(book)) => book.rule(id).map(Arc::new),
    };
    Stored {
        ev: *ev,
        wall_ns: clock.wall(ev.ts_ns),
        src,
        dst,
        policy,
    }
}
