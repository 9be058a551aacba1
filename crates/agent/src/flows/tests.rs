use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use weft_api::{FlowFilter, FlowLine, FlowQuery, PolicyRef, Verdict};
use weft_bpf_abi::{
    AF_INET, AF_INET6, DIR_INGRESS, DROP_POLICY_DENIED, FLOW_KIND_DECISION, POINT_TO_POD,
    VERDICT_DROPPED, VERDICT_FORWARDED, VERDICT_TRANSLATED,
};
use weft_datapath::flows::{FakeFlowSource, FlowCounters};

use super::decode::{mono_now_ns, render, rfc3339};
use super::*;

fn v4(s: &str) -> [u8; 16] {
    let ip: std::net::Ipv4Addr = s.parse().unwrap();
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&ip.octets());
    b
}

fn event(src: &str, dst: &str, dport: u16, verdict: u8) -> FlowEvent {
    FlowEvent {
        ts_ns: mono_now_ns(),
        src: v4(src),
        dst: v4(dst),
        family: AF_INET,
        proto: 6,
        verdict,
        kind: FLOW_KIND_DECISION,
        sport: 40000u16.to_be(),
        dport: dport.to_be(),
        tcp_flags: 0x02,
        point: POINT_TO_POD,
        direction: DIR_INGRESS,
        drop_reason: if verdict == VERDICT_DROPPED {
            DROP_POLICY_DENIED as u8
        } else {
            0
        },
        ifindex: 12,
        packets: 1,
        bytes: 60,
        ..Default::default()
    }
}

fn meta(ns: &str, pod: &str, app: &str) -> Arc<PeerMeta> {
    Arc::new(PeerMeta {
        namespace: ns.into(),
        pod: pod.into(),
        labels: [("app".to_string(), app.to_string())].into(),
    })
}

fn pods() -> HashMap<IpAddr, Arc<PeerMeta>> {
    HashMap::from([
        ("10.244.0.2".parse().unwrap(), meta("shop", "web-1", "web")),
        ("10.244.0.3".parse().unwrap(), meta("db", "pg-0", "pg")),
    ])
}

struct Book;
impl RuleBook for Book {
    fn rule(&self, id: u32) -> Option<PolicyRef> {
        (id == 7).then(|| PolicyRef {
            namespace: "db".into(),
            name: "pg-only-from-api".into(),
            rule: "ingress[0]".into(),
        })
    }
}

/// A hub fed by a reader over the fake source; waits until `n` flows are in.
fn reader(cap: usize) -> (Arc<Hub>, FakeFlowSource) {
    let hub = Hub::new("n1", cap);
    let fake = FakeFlowSource::new();
    let f = fake.clone();
    let mut given = false;
    let rules: Arc<OnceLock<Arc<dyn RuleBook>>> = Arc::new(OnceLock::new());
    let _ = rules.set(Arc::new(Book));
    start_reader(
        hub.clone(),
        Box::new(move || {
            if given {
                return None;
            }
            given = true;
            Some(Box::new(f.clone()) as Box<dyn FlowSource>)
        }),
        Box::new(pods()),
        rules,
    );
    (hub, fake)
}

fn wait_for(hub: &Hub, pushed: u64) {
    let start = Instant::now();
    while hub.stats().by_verdict.iter().sum::<u64>() < pushed {
        assert!(start.elapsed() < Duration::from_secs(3), "reader too slow");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn query(hub: &Hub, q: &FlowQuery) -> Vec<FlowLine> {
    let mut out = Vec::new();
    stream::serve(hub, q, &mut out, &|| false).unwrap();
    lines(&out)
}

/// Lines of chunked output (chunks hold whole lines here).
fn lines(raw: &[u8]) -> Vec<FlowLine> {
    String::from_utf8_lossy(raw)
        .split("\r\n")
        .filter(|l| l.starts_with('{'))
        .flat_map(|c| c.lines().map(str::to_string).collect::<Vec<_>>())
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect()
}

fn flows(ls: &[FlowLine]) -> Vec<&weft_api::Flow> {
    ls.iter()
        .filter_map(|l| match l {
            FlowLine::Flow(f) => Some(&**f),
            FlowLine::Lost(_) => None,
        })
        .collect()
}

#[test]
fn the_ring_keeps_the_last_n_and_tells_a_slow_observer_what_it_missed() {
    let hub = Hub::new("n1", 3);
    let clock = decode::Clock::now();
    let mut r = pods();
    for port in 1..=5 {
        let ev = event("10.244.0.2", "10.244.0.3", port, VERDICT_FORWARDED);
        hub.push([enrich::store(&ev, &clock, &mut r, None)]);
    }
    assert_eq!(hub.len(), 3);
    let (snap, cursor) = hub.snapshot();
    assert_eq!(cursor, 5);
    let ports: Vec<u16> = snap.iter().map(|s| u16::from_be(s.ev.dport)).collect();
    assert_eq!(ports, [3, 4, 5]);
    let b = hub.after(1, Duration::ZERO);
    assert_eq!((b.missed, b.flows.len(), b.cursor), (1, 3, 5));
    let b = hub.after(5, Duration::from_millis(20));
    assert_eq!((b.missed, b.flows.len()), (0, 0));
    assert_eq!(hub.stats().by_verdict[VERDICT_FORWARDED as usize], 5);
}

#[test]
fn the_reader_enriches_with_pods_labels_and_rules() {
    let (hub, fake) = reader(100);
    let mut dropped = event("10.244.0.2", "10.244.0.3", 5432, VERDICT_DROPPED);
    dropped.rule_id = 7;
    fake.push(dropped);
    fake.push(event("198.18.0.1", "10.244.0.3", 5432, VERDICT_FORWARDED));
    fake.set_counters(FlowCounters {
        lost: 4,
        ..Default::default()
    });
    wait_for(&hub, 2);
    let got = query(&hub, &FlowQuery::default());
    let f = flows(&got);
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].source.pod.as_deref(), Some("web-1"));
    assert_eq!(f[0].source.labels["app"], "web");
    assert_eq!(f[0].destination.namespace.as_deref(), Some("db"));
    assert_eq!(f[0].verdict, Verdict::Dropped);
    assert_eq!(f[0].drop_reason.as_deref(), Some("POLICY_DENIED"));
    assert_eq!(f[0].policy.as_ref().unwrap().name, "pg-only-from-api");
    // an address of no pod of this node stays an address
    assert_eq!(f[1].source.pod, None);
    assert_eq!(f[1].source.ip, Some("198.18.0.1".parse().unwrap()));
    assert!(f[1].policy.is_none());
    // the flow's time is the kernel's stamp in wall-clock time
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    assert!(now - f[0].time_unix_nano < 5_000_000_000);
    // the kernel's counters come within a tick
    let start = Instant::now();
    while hub.stats().kernel.lost != 4 {
        assert!(start.elapsed() < Duration::from_secs(3));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(hub.stats().reading);
}

#[test]
fn queries_filter_and_take_the_last_n() {
    let (hub, fake) = reader(100);
    for port in [80, 443, 5432, 80] {
        fake.push(event("10.244.0.2", "10.244.0.3", port, VERDICT_FORWARDED));
    }
    fake.push(event("10.244.0.3", "10.244.0.2", 9000, VERDICT_DROPPED));
    wait_for(&hub, 5);
    let q = |filter: FlowFilter, last: Option<usize>| FlowQuery {
        filter,
        last,
        ..Default::default()
    };
    let ports =
        |ls: Vec<FlowLine>| -> Vec<u16> { flows(&ls).iter().map(|f| f.destination.port).collect() };
    assert_eq!(
        ports(query(&hub, &q(FlowFilter::default(), Some(2)))),
        [80, 9000]
    );
    let drops = FlowFilter {
        verdicts: vec![Verdict::Dropped],
        ..Default::default()
    };
    assert_eq!(ports(query(&hub, &q(drops, None))), [9000]);
    let to_pg_80 = FlowFilter {
        to_pods: vec!["db/pg-0".into()],
        ports: vec![80],
        ..Default::default()
    };
    assert_eq!(ports(query(&hub, &q(to_pg_80, None))), [80, 80]);
    let from_pg = FlowFilter {
        from_labels: vec!["app=pg".into()],
        ..Default::default()
    };
    assert_eq!(ports(query(&hub, &q(from_pg, None))), [9000]);
    let future = FlowQuery {
        since_unix_nano: Some(u64::MAX),
        ..Default::default()
    };
    assert!(query(&hub, &future).is_empty());
}

#[test]
fn following_sends_new_flows_as_they_come_then_stops() {
    let (hub, fake) = reader(100);
    fake.push(event("10.244.0.2", "10.244.0.3", 1, VERDICT_FORWARDED));
    wait_for(&hub, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let (h, s) = (hub.clone(), stop.clone());
    let server = std::thread::spawn(move || {
        let mut out = Vec::new();
        let q = FlowQuery {
            follow: true,
            filter: FlowFilter {
                ports: vec![2],
                ..Default::default()
            },
            ..Default::default()
        };
        stream::serve(&h, &q, &mut out, &|| !s.load(Ordering::SeqCst)).unwrap();
        out
    });
    std::thread::sleep(Duration::from_millis(50));
    fake.push(event("10.244.0.2", "10.244.0.3", 3, VERDICT_FORWARDED));
    fake.push(event("10.244.0.2", "10.244.0.3", 2, VERDICT_FORWARDED));
    wait_for(&hub, 3);
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::SeqCst);
    let out = server.join().unwrap();
    let got = lines(&out);
    assert_eq!(flows(&got).len(), 1);
    assert_eq!(flows(&got)[0].destination.port, 2);
}

#[test]
fn flow_json_field_names_are_stable() {
    let clock = decode::Clock {
        mono_ns: 1_000,
        wall_ns: 1_796_299_200_000_000_123,
    };
    let mut r = pods();
    let mut ev = event("10.244.0.2", "10.244.0.3", 5432, VERDICT_DROPPED);
    ev.ts_ns = 1_000;
    ev.rule_id = 7;
    let s = enrich::store(&ev, &clock, &mut r, Some(&Book));
    let json = serde_json::to_string_pretty(&render(&s, "n1")).unwrap();
    let golden = include_str!("../../tests/fixtures/flow_dropped.json");
    assert_eq!(json.trim(), golden.trim(), "the flow JSON changed:\n{json}");

    // a translation, over IPv6, without pods
    let mut t = FlowEvent {
        family: AF_INET6,
        proto: 17,
        verdict: VERDICT_TRANSLATED,
        kind: FLOW_KIND_DECISION,
        point: weft_bpf_abi::POINT_SOCKET,
        direction: weft_bpf_abi::DIR_NONE,
        sport: 5353u16.to_be(),
        dport: 53u16.to_be(),
        xlat_dport: 5353u16.to_be(),
        ts_ns: 1_000,
        packets: 1,
        bytes: 80,
        ..Default::default()
    };
    t.src[15] = 2;
    t.dst[..2].copy_from_slice(&[0xfd, 0x00]);
    t.dst[15] = 10;
    t.xlat_dst = t.dst;
    t.xlat_dst[15] = 11;
    // the Service it was for, from the Services' frontends
    let dns = weft_lb::Service {
        namespace: "kube-system".into(),
        name: "dns".into(),
        type_: weft_lb::ServiceType::ClusterIP,
        cluster_ips: vec!["fd00::a".parse().unwrap()],
        headless: false,
        ports: vec![weft_lb::ServicePort {
            name: "dns".into(),
            protocol: weft_lb::Protocol::UDP,
            port: 53,
            target_port: None,
            node_port: None,
        }],
        external_ips: Vec::new(),
        load_balancer_ips: Vec::new(),
        session_affinity: Default::default(),
        external_traffic_policy: Default::default(),
        internal_traffic_policy: Default::default(),
        publish_not_ready_addresses: false,
        labels: Default::default(),
    };
    let mut known = Frontends(services::table(&[dns]));
    let s = enrich::store(&t, &clock, &mut known, None);
    let json = serde_json::to_string_pretty(&render(&s, "n1")).unwrap();
    let golden = include_str!("../../tests/fixtures/flow_translated.json");
    assert_eq!(json.trim(), golden.trim(), "the flow JSON changed:\n{json}");
}

/// Services known, pods not.
struct Frontends(HashMap<services::Key, Arc<Decider>>);

impl Resolve for Frontends {
    fn resolve(&mut self, _: IpAddr) -> Option<Arc<PeerMeta>> {
        None
    }

    fn service(&mut self, dst: IpAddr, port: u16, proto: u8) -> Option<Arc<Decider>> {
        services::lookup(&self.0, dst, port, proto)
    }
}

#[test]
fn a_stored_flow_is_136_bytes_as_the_docs_say() {
    assert_eq!(std::mem::size_of::<Stored>(), 136);
}

#[test]
fn times_are_rfc3339_utc() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
    assert_eq!(
        rfc3339(1_796_299_200_000_000_123),
        "2026-12-03T12:00:00.000000123Z"
    );
    assert_eq!(
        rfc3339(951_782_400_000_000_000),
        "2000-02-29T00:00:00.000000000Z"
    );
}
