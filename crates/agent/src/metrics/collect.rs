//! The metrics read from the agent at each scrape. Names and labels follow
//! Prometheus conventions: `weft_` prefix, base units, counters end in
//! `_total` (the encoder adds it), one label per dimension, lowercase values
//! where weft chose them. The README lists them.

use std::fmt;
use std::sync::Weak;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::agent::Agent;

type Labels = Vec<(&'static str, String)>;

/// Reads the agent when scraped; holds it weakly (the metrics thread must
/// not keep an agent alive).
#[derive(Debug)]
pub struct AgentCollector {
    agent: Weak<Agent>,
}

impl AgentCollector {
    pub fn new(agent: Weak<Agent>) -> Self {
        AgentCollector { agent }
    }
}

/// One metric with its samples (none: the metric is left out).
fn emit<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: Vec<(Labels, M)>,
) -> fmt::Result {
    let Some(first) = samples.first() else {
        return Ok(());
    };
    let mut m = enc.encode_descriptor(name, help, None, first.1.metric_type())?;
    for (labels, v) in &samples {
        if labels.is_empty() {
            v.encode(m.encode_family(&Vec::<(&str, String)>::new())?)?;
        } else {
            v.encode(m.encode_family(labels)?)?;
        }
    }
    Ok(())
}

fn one<M>(v: M) -> Vec<(Labels, M)> {
    vec![(Vec::new(), v)]
}

fn gauge(v: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn verdict_name(code: usize) -> &'static str {
    match code {
        1 => "forwarded",
        2 => "dropped",
        3 => "audit",
        4 => "translated",
        _ => "unknown",
    }
}

impl Collector for AgentCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let Some(agent) = self.agent.upgrade() else {
            return Ok(());
        };
        let e = &mut enc;
        emit(
            e,
            "weft_build_info",
            "weftd's version (always 1)",
            vec![(
                vec![("version", env!("CARGO_PKG_VERSION").to_string())],
                gauge(1),
            )],
        )?;
        flows(e, &agent)?;
        emit(
            e,
            "weft_endpoints",
            "Pod interfaces weftd has attached on this node",
            one(gauge(agent.endpoints().len() as u64)),
        )?;
        let status = agent.status();
        emit(
            e,
            "weft_store_reachable",
            "1 when the IPAM datastore answered this scrape, else 0",
            one(gauge(u64::from(status.is_ok()))),
        )?;
        if let Ok(st) = &status {
            let pools = |f: fn(&weft_api::PoolUsage) -> u64| {
                st.pools
                    .iter()
                    .map(|p| (vec![("pool", p.cidr.to_string())], gauge(f(p))))
                    .collect::<Vec<_>>()
            };
            emit(
                e,
                "weft_ipam_pool_addresses",
                "Addresses of the pool's blocks claimed so far",
                pools(|p| p.capacity),
            )?;
            emit(
                e,
                "weft_ipam_pool_allocated_addresses",
                "Addresses of the pool held by pods",
                pools(|p| p.allocated),
            )?;
            emit(
                e,
                "weft_ipam_pool_quarantined_addresses",
                "Released addresses not yet given out again",
                pools(|p| p.quarantined),
            )?;
            emit(
                e,
                "weft_ipam_pool_blocks",
                "Blocks of the pool claimed",
                pools(|p| p.blocks as u64),
            )?;
            emit(
                e,
                "process_resident_memory_bytes",
                "Resident memory of weftd",
                one(gauge(st.rss_bytes)),
            )?;
            let fp = &st.fastpath;
            emit(
                e,
                "weft_fastpath_enabled",
                "1 when the eBPF fast path carries pod traffic",
                one(gauge(u64::from(fp.mode == "ebpf"))),
            )?;
            emit(
                e,
                "weft_fastpath_addresses",
                "Pod addresses in the fast path's endpoint map",
                one(gauge(fp.addresses as u64)),
            )?;
            emit(
                e,
                "weft_fastpath_packets",
                "Packets counted by the fast path's programs, by counter",
                fp.counters
                    .iter()
                    .map(|(k, v)| (vec![("counter", k.clone())], counter(*v)))
                    .collect(),
            )?;
        }
        kubernetes(e, &agent)
    }
}

fn flows(e: &mut DescriptorEncoder, agent: &Agent) -> fmt::Result {
    if let Some(book) = agent.flows().rule_book() {
        emit(
            e,
            "weft_policy_verdicts",
            "Packets decided by a policy rule, by policy, rule and verdict",
            book.hits()
                .into_iter()
                .map(|h| {
                    (
                        vec![
                            ("namespace", h.policy.namespace),
                            ("policy", h.policy.name),
                            ("rule", h.policy.rule),
                            ("verdict", h.verdict.to_ascii_lowercase()),
                        ],
                        counter(h.packets),
                    )
                })
                .collect(),
        )?;
    }
    let Some(hub) = agent.flows().hub() else {
        return Ok(());
    };
    let st = hub.stats();
    emit(
        e,
        "weft_flows",
        "Flow events weftd read from the programs, by verdict",
        (1..st.by_verdict.len())
            .map(|i| {
                (
                    vec![("verdict", verdict_name(i).to_string())],
                    counter(st.by_verdict[i]),
                )
            })
            .collect(),
    )?;
    emit(
        e,
        "weft_drops",
        "Packets the programs dropped, by reason (every packet, unlike the rate-limited flow events)",
        st.kernel
            .drops
            .pairs()
            .into_iter()
            .filter(|(n, _)| *n != "none")
            .map(|(n, v)| (vec![("reason", n.to_string())], counter(v)))
            .collect(),
    )?;
    emit(
        e,
        "weft_flow_events_lost",
        "Flow events the programs could not report because the ring buffer was full",
        one(counter(st.kernel.lost)),
    )?;
    emit(
        e,
        "weft_flow_buffer_flows",
        "Flows in weftd's buffer of recent flows",
        one(gauge(hub.len() as u64)),
    )?;
    emit(
        e,
        "weft_flow_buffer_capacity",
        "The most flows weftd keeps (--flow-buffer)",
        one(gauge(hub.capacity() as u64)),
    )?;
    if st.ring_bytes > 0 {
        emit(
            e,
            "weft_flow_ring_bytes",
            "Size of the programs' flow ring buffer",
            one(gauge(st.ring_bytes)),
        )?;
    }
    emit(
        e,
        "weft_flow_reader_active",
        "1 when a program's flow ring is being read",
        one(gauge(u64::from(st.reading))),
    )
}

fn kubernetes(e: &mut DescriptorEncoder, agent: &Agent) -> fmt::Result {
    let Some(k) = agent.kubernetes().status() else {
        return Ok(());
    };
    let all_healthy = !k.watches.is_empty() && k.watches.iter().all(|w| w.healthy);
    emit(
        e,
        "weft_kubernetes_api_reachable",
        "1 when every watch on the API server is healthy",
        one(gauge(u64::from(all_healthy))),
    )?;
    let per = |f: fn(&weft_api::WatchStatus) -> u64| {
        k.watches
            .iter()
            .map(|w| (vec![("kind", w.kind.clone())], f(w)))
            .collect::<Vec<_>>()
    };
    let g = |v: Vec<(Labels, u64)>| v.into_iter().map(|(l, v)| (l, gauge(v))).collect();
    emit(
        e,
        "weft_kubernetes_watch_healthy",
        "1 when the watch of this kind is current",
        g(per(|w| u64::from(w.healthy))),
    )?;
    emit(
        e,
        "weft_kubernetes_watch_objects",
        "Objects the watch of this kind holds",
        g(per(|w| w.objects as u64)),
    )?;
    emit(
        e,
        "weft_kubernetes_watch_errors",
        "Errors of the watch of this kind (each retried)",
        per(|w| w.errors)
            .into_iter()
            .map(|(l, v)| (l, counter(v)))
            .collect(),
    )?;
    emit(
        e,
        "weft_kubernetes_pods_collected",
        "Endpoints cleaned up because the API said their pod was gone",
        one(counter(k.pods_collected)),
    )
}
