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
use super::{services, Decider, Stored};
use crate::agent::Agent;

/// A pod as flows name it; shared by every flow of the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerMeta {
    pub namespace: String,
    pub pod: String,
    pub labels: BTreeMap<String, String>,
}

/// Address to pod, and a translated address to its Service.
pub trait Resolve: Send {
    fn resolve(&mut self, ip: IpAddr) -> Option<Arc<PeerMeta>>;

    /// The Service whose frontend `dst:port` (`proto`: the IP protocol
    /// number) is; None where Services are not known.
    fn service(&mut self, _dst: IpAddr, _port: u16, _proto: u8) -> Option<Arc<Decider>> {
        None
    }
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
/// How old the table may be when a translation names no known Service.
const MISS_REFRESH: Duration = Duration::from_millis(100);

/// The agent's table: its endpoints joined with their pods' labels, rebuilt
/// at most once a second (and only while flows come).
pub struct AgentResolver {
    agent: Weak<Agent>,
    table: HashMap<IpAddr, Arc<PeerMeta>>,
    /// The Services' frontends (`--services on`; else empty).
    services: HashMap<services::Key, Arc<Decider>>,
    built: Option<Instant>,
}

impl AgentResolver {
    pub fn new(agent: Weak<Agent>) -> Self {
        AgentResolver {
            agent,
            table: HashMap::new(),
            services: HashMap::new(),
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
        self.services = services::table(&agent.services().services());
        self.built = Some(Instant::now());
    }

    fn fresh(&mut self) {
        if self.built.is_none_or(|t| t.elapsed() >= REFRESH) {
            self.rebuild();
        }
    }
}

impl Resolve for AgentResolver {
    fn resolve(&mut self, ip: IpAddr) -> Option<Arc<PeerMeta>> {
        self.fresh();
        self.table.get(&ip).cloned()
    }

    fn service(&mut self, dst: IpAddr, port: u16, proto: u8) -> Option<Arc<Decider>> {
        self.fresh();
        let found = services::lookup(&self.services, dst, port, proto);
        // a Service newer than the table: look again, at most every 100 ms
        if found.is_none() && self.built.is_some_and(|t| t.elapsed() >= MISS_REFRESH) {
            self.rebuild();
            return services::lookup(&self.services, dst, port, proto);
        }
        found
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
    let policy = match (ev.verdict, ev.rule_id, rules) {
        (weft_bpf_abi::VERDICT_TRANSLATED, _, _) => decode::address(ev.family, &ev.dst)
            .and_then(|ip| resolve.service(ip, u16::from_be(ev.dport), ev.proto)),
        (_, 0, _) | (_, _, None) => None,
        (_, id, Some(book)) => book.rule(id).map(|r| Arc::new(Decider::Policy(r))),
    };
    Stored {
        ev: *ev,
        wall_ns: clock.wall(ev.ts_ns),
        src,
        dst,
        policy,
    }
}
