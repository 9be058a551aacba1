//! How long the pure model takes at the scales: building the desired
//! maps for N Services of 10 endpoints each, and the diff after one endpoint
//! of one Service changes (the update path of an EndpointSlice event), by a
//! full rebuild and through [`LbState::update`].
//! Prints figures; writes nothing. `cargo run --release -p weft-lb --example
//! scale -- 10000 random` (or `maglev:<M>`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use weft_lb::*;

fn world(n: u32, changed: bool) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut svcs = Vec::new();
    let mut slices = Vec::new();
    for i in 0..n {
        let [_, _, b, c] = i.to_be_bytes();
        let svc = Service {
            namespace: "bench".into(),
            name: format!("s{i}"),
            type_: ServiceType::ClusterIP,
            cluster_ips: vec![IpAddr::V4(Ipv4Addr::new(10, 96, b, c))],
            headless: false,
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::TCP,
                port: 80,
                target_port: None,
                node_port: None,
            }],
            external_ips: vec![],
            load_balancer_ips: vec![],
            session_affinity: SessionAffinity::None,
            external_traffic_policy: TrafficPolicy::Cluster,
            internal_traffic_policy: TrafficPolicy::Cluster,
            publish_not_ready_addresses: false,
            labels: BTreeMap::new(),
        };
        let endpoints = (0..10u32)
            .map(|e| {
                let k = i * 10 + e + u32::from(changed && i == n / 2 && e == 0) * 7_000_000;
                let [_, x, y, z] = k.to_be_bytes();
                Endpoint {
                    addresses: vec![IpAddr::V4(Ipv4Addr::new(10, x.wrapping_add(128), y, z))],
                    conditions: EndpointConditions::default(),
                    node_name: Some(format!("node-{}", e % 3)),
                    zone: None,
                }
            })
            .collect();
        slices.push(EndpointSlice {
            service: svc.id(),
            address_type: AddressType::IPv4,
            endpoints,
            ports: vec![EndpointPort {
                name: "http".into(),
                port: Some(8080),
                protocol: Protocol::TCP,
            }],
            labels: BTreeMap::new(),
        });
        svcs.push(svc);
    }
    (svcs, slices)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u32 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000)
        .min(60_000);
    let algorithm = match args.get(2).map(String::as_str) {
        Some(a) if a.starts_with("maglev:") => Algorithm::Maglev {
            m: a[7..].parse().expect("maglev:<prime>"),
        },
        _ => Algorithm::Random,
    };
    let config = Config {
        node: NodeView {
            node_name: "node-0".into(),
            proxy_name: None,
        },
        algorithm,
    };
    let (s0, e0) = world(n, false);
    let (s1, e1) = world(n, true);
    let mut ids = IdAllocator::default();
    let t = Instant::now();
    let d0 = build(&s0, &e0, &config, &mut ids).expect("build");
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let first = diff(&d0.maps, &LbMaps::default());
    let first_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let d1 = build(&s1, &e1, &config, &mut ids).expect("build");
    let rebuild_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let ops = diff(&d1.maps, &d0.maps);
    let diff_ms = t.elapsed().as_secs_f64() * 1e3;
    // The same change through the incremental state: one Service's work.
    let mut state = LbState::new(config.clone(), IdAllocator::default());
    state.reset(&s0, &e0).expect("reset");
    let name = s1[n as usize / 2].id();
    let mine: Vec<EndpointSlice> = e1.iter().filter(|s| s.service == name).cloned().collect();
    let t = Instant::now();
    let inc_ops = state
        .update(&name, Some(s1[n as usize / 2].clone()), mine)
        .expect("update");
    let inc_us = t.elapsed().as_secs_f64() * 1e6;
    assert_eq!(inc_ops.len(), ops.len());
    println!(
        "{n} services x 10 endpoints, {algorithm:?}: build {build_ms:.1} ms, initial diff {} ops in {first_ms:.1} ms; \
         one endpoint changed: rebuild {rebuild_ms:.1} ms, diff {diff_ms:.1} ms -> {} ops; \
         incremental update {inc_us:.0} us",
        first.len(),
        ops.len()
    );
}
