use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use clap::Parser;
use prometheus_parse::{Scrape, Value};
use weft_api::{AddRequest, Attachment, PodRef};
use weft_bpf_abi::{FlowEvent, AF_INET, VERDICT_DROPPED, VERDICT_FORWARDED};
use weft_datapath::flows::{FakeFlowSource, FlowCounters, FlowSource};
use weft_datapath::RecordingDatapath;
use weft_store::embedded::EmbeddedStore;
use weft_store::Store;

use super::*;
use crate::config::AgentConfig;

fn agent() -> Arc<Agent> {
    let cfg = AgentConfig::parse_from([
        "weftd",
        "--node-name=n1",
        "--pool=10.10.0.0/16",
        "--spool-dir=/nonexistent-not-used",
        "--state-dir=/nonexistent-not-used",
    ]);
    let store = || -> Arc<dyn Store> { Arc::new(EmbeddedStore::in_memory()) };
    crate::build_with(
        &cfg,
        store::TimedStore::wrap(store()),
        store(),
        Arc::new(RecordingDatapath::new()),
    )
    .unwrap()
}

fn add(agent: &Agent) {
    agent
        .add(&AddRequest {
            attachment: Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into(),
            },
            netns: "/proc/self/ns/net".into(),
            network: "net1".into(),
            pod: PodRef {
                namespace: "default".into(),
                name: "p1".into(),
                uid: String::new(),
            },
            mtu: None,
            want_ipv4: true,
            want_ipv6: false,
            requested_ips: vec![],
        })
        .unwrap();
}

fn scrape(addr: SocketAddr) -> (String, Scrape) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    let parsed = Scrape::parse(body.as_bytes().lines()).unwrap();
    (body.to_string(), parsed)
}

fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.last().map(|c| c.count).unwrap_or(0.0),
            Value::Summary(_) => f64::NAN,
        })
}

fn ev(verdict: u8) -> FlowEvent {
    FlowEvent {
        ts_ns: crate::flows::decode::mono_now_ns(),
        family: AF_INET,
        proto: 6,
        verdict,
        drop_reason: if verdict == VERDICT_DROPPED { 1 } else { 0 },
        ..Default::default()
    }
}

#[test]
fn a_scrape_parses_with_a_real_parser_and_carries_every_family() {
    let agent = agent();
    add(&agent);
    telemetry().observe_cni("add", true, Duration::from_millis(3));
    telemetry().observe_kubernetes("list", "pods", Duration::from_millis(4));
    telemetry().observe_policy_update(Duration::from_micros(700));
    let fake = FakeFlowSource::new();
    fake.push(ev(VERDICT_DROPPED));
    fake.push(ev(VERDICT_FORWARDED));
    fake.push(ev(VERDICT_FORWARDED));
    let mut drops = [0u64; 5];
    drops[1] = 3;
    fake.set_counters(FlowCounters {
        drops: weft_bpf_abi::Drops::from_slots(drops),
        lost: 2,
    });
    let f = fake.clone();
    crate::flows::start(
        &agent,
        64,
        Box::new(move || Some(Box::new(f.clone()) as Box<dyn FlowSource>)),
    );
    let hub = agent.flows().hub().unwrap().clone();
    let start = Instant::now();
    while hub.len() < 3 || hub.stats().kernel.lost < 2 {
        assert!(start.elapsed() < Duration::from_secs(3), "reader too slow");
        std::thread::sleep(Duration::from_millis(10));
    }
    let addr = start_metrics(&agent);
    let (text, s) = scrape(addr);
    let v = |n, l: &[(&str, &str)]| {
        value(&s, n, l).unwrap_or_else(|| panic!("no {n} {l:?} in\n{text}"))
    };
    assert_eq!(v("weft_flows_total", &[("verdict", "dropped")]), 1.0);
    assert_eq!(v("weft_flows_total", &[("verdict", "forwarded")]), 2.0);
    assert_eq!(v("weft_drops_total", &[("reason", "policy_denied")]), 3.0);
    assert_eq!(v("weft_drops_total", &[("reason", "spoofed")]), 0.0);
    assert_eq!(v("weft_flow_events_lost_total", &[]), 2.0);
    assert_eq!(v("weft_flow_buffer_flows", &[]), 3.0);
    assert_eq!(v("weft_flow_buffer_capacity", &[]), 64.0);
    assert_eq!(v("weft_endpoints", &[]), 1.0);
    assert_eq!(v("weft_store_reachable", &[]), 1.0);
    let pool = [("pool", "10.10.0.0/16")];
    assert_eq!(v("weft_ipam_pool_allocated_addresses", &pool), 1.0);
    assert_eq!(v("weft_ipam_pool_quarantined_addresses", &pool), 0.0);
    assert!(v("weft_ipam_pool_addresses", &pool) >= 1.0);
    assert!(
        v(
            "weft_cni_request_duration_seconds",
            &[("verb", "add"), ("outcome", "success")]
        ) >= 1.0
    );
    assert!(
        v(
            "weft_store_request_duration_seconds",
            &[("backend", "embedded"), ("op", "commit")]
        ) >= 1.0
    );
    assert!(
        v(
            "weft_kubernetes_api_request_duration_seconds",
            &[("verb", "list"), ("resource", "pods")]
        ) >= 1.0
    );
    assert!(v("weft_policy_update_duration_seconds", &[]) >= 1.0);
    assert_eq!(v("weft_build_info", &[]), 1.0);
    assert!(v("process_resident_memory_bytes", &[]) > 0.0);
    // conventions: weft_ names (or the standard process_ ones), snake_case
    // labels, a help text for every family
    for x in &s.samples {
        assert!(
            x.metric.starts_with("weft_") || x.metric.starts_with("process_"),
            "{}",
            x.metric
        );
        assert!(
            x.metric
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{}",
            x.metric
        );
    }
    assert!(s.docs.len() >= 15, "{:?}", s.docs.keys());
    // anything but GET /metrics is not found
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"GET /other HTTP/1.1\r\n\r\n").unwrap();
    let mut raw = String::new();
    c.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");
}

fn start_metrics(agent: &Arc<Agent>) -> SocketAddr {
    start("127.0.0.1:0".parse().unwrap(), agent).unwrap()
}
