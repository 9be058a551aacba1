//! The NodePort program under BPF_PROG_TEST_RUN: crafted frames from
//! outside the node in, verdict and rewritten frame out, with the maps
//! written through the seam weftd uses (weft_lb::build + reconcile into
//! ServiceMaps). The runs happen in a private network namespace holding an
//! external device, a remote route and a local pod route (the program asks
//! the FIB whether a backend is a pod of this node). ICMP errors about
//! these flows: `services_icmp_run.rs`. Without root they skip.

mod common;
#[path = "services/node.rs"]
mod node;
#[path = "services/packets.rs"]
mod packets;
#[path = "services/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use common::*;
use packets::{sa, TCP, UDP};
use support::*;
use weft_bpf_abi::{DROP_NO_BACKEND, TCX_DROP, TCX_NEXT, TC_ACT_REDIRECT};
use weft_datapath::bpf::PerCpuArray;
use weft_datapath::services::{ServiceTable, NODEPORT_IN};
use weft_lb::{Algorithm, IdAllocator, Protocol, TrafficPolicy};

use node::*;

#[test]
fn nodeport_local_policy_keeps_the_source_and_reverses_the_reply_privileged() {
    need_root!("nodeport_local_policy_keeps_the_source_and_reverses_the_reply_privileged");
    let n = node("nplocal");
    let svc = nodeport(
        "web",
        "10.96.0.10",
        Protocol::TCP,
        30080,
        TrafficPolicy::Local,
    );
    let sl = slice(
        "web",
        &[("10.244.0.5", NODE), ("10.244.1.7", "node-b")],
        &[(Protocol::TCP, 8080)],
    );
    install(
        &n.progs,
        &[svc],
        &[sl],
        Algorithm::Random,
        &mut IdAllocator::default(),
    );

    let (v, s, d) = n.inbound("198.18.0.100:40000", "198.18.0.1:30080", TCP);
    assert_eq!(v, TCX_NEXT, "translated, then routed by the kernel");
    assert_eq!(
        s,
        sa("198.18.0.100:40000"),
        "Local keeps the client's address"
    );
    assert_eq!(
        d,
        sa("10.244.0.5:8080"),
        "only this node's endpoint serves outside traffic"
    );
    // the flow's next packet follows its NAT entry
    let (_, _, d2) = n.inbound("198.18.0.100:40000", "198.18.0.1:30080", TCP);
    assert_eq!(d2, d);
    // the backend's reply leaves with the NodePort as its source
    let (v, s, d) = n.outbound("10.244.0.5:8080", "198.18.0.100:40000", TCP);
    assert_eq!(v, TCX_NEXT);
    assert_eq!((s, d), (sa("198.18.0.1:30080"), sa("198.18.0.100:40000")));
    // unrelated traffic passes untouched both ways
    let (v, s, d) = n.inbound("198.18.0.100:40001", "198.18.0.1:22", TCP);
    assert_eq!(
        (v, s, d),
        (TCX_NEXT, sa("198.18.0.100:40001"), sa("198.18.0.1:22"))
    );
    let (v, s, _) = n.outbound("10.244.0.5:8081", "198.18.0.100:40000", TCP);
    assert_eq!((v, s), (TCX_NEXT, sa("10.244.0.5:8081")));
    let st = n.stats();
    assert_eq!(
        (st.np_new, st.np_fwd, st.np_revnat, st.np_snat),
        (1, 1, 1, 0)
    );
    // what a packet of a known flow costs (a NAT hit and the rewrite), and
    // one that is no Service's (a NAT miss, two frontend lookups)
    let known = packets::frame(
        sa("198.18.0.100:40000"),
        sa("198.18.0.1:30080"),
        TCP,
        b"ping",
    );
    let other = packets::frame(sa("198.18.0.100:40001"), sa("198.18.0.1:22"), TCP, b"ping");
    println!(
        "nodeport_in: {} ns per packet of a known flow, {} ns per packet for no Service",
        n.time(NODEPORT_IN, &known, 100_000),
        n.time(NODEPORT_IN, &other, 100_000)
    );
}

#[test]
fn nodeport_cluster_policy_snats_towards_another_node_and_reverses_the_reply_privileged() {
    need_root!(
        "nodeport_cluster_policy_snats_towards_another_node_and_reverses_the_reply_privileged"
    );
    let n = node("npclus");
    let remote = nodeport(
        "remote",
        "10.96.0.11",
        Protocol::TCP,
        30081,
        TrafficPolicy::Cluster,
    );
    let mut local = nodeport(
        "local",
        "10.96.0.12",
        Protocol::UDP,
        30082,
        TrafficPolicy::Cluster,
    );
    local.external_ips = vec![ip("198.51.100.7")];
    let slices = [
        slice(
            "remote",
            &[("10.244.1.7", "node-b")],
            &[(Protocol::TCP, 8080)],
        ),
        slice("local", &[("10.244.0.6", NODE)], &[(Protocol::UDP, 5353)]),
    ];
    install(
        &n.progs,
        &[remote, local],
        &slices,
        Algorithm::Random,
        &mut IdAllocator::default(),
    );

    // a backend on another node: the source becomes the node's, the port kept
    // (a packet from a node address would be a martian on the stack's
    // input path: the program sends it out itself)
    let (v, s, d) = n.inbound("198.18.0.100:40000", "198.18.0.1:30081", TCP);
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!((s, d), (sa("198.18.0.1:40000"), sa("10.244.1.7:8080")));
    // its reply comes back to the node and leaves as the NodePort's
    let (v, s, d) = n.inbound("10.244.1.7:8080", "198.18.0.1:40000", TCP);
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!((s, d), (sa("198.18.0.1:30081"), sa("198.18.0.100:40000")));
    // a second client on the same port gets another SNAT port
    let (_, s2, _) = n.inbound("198.18.0.101:40000", "198.18.0.1:30081", TCP);
    assert_eq!(s2.ip(), ip(NODE_IP));
    assert_ne!(
        s2.port(),
        40000,
        "the node's port 40000 to this backend is taken"
    );
    let (_, s, d) = n.inbound("10.244.1.7:8080", &s2.to_string(), TCP);
    assert_eq!((s, d), (sa("198.18.0.1:30081"), sa("198.18.0.101:40000")));

    // a backend that is a pod of this node keeps the source (Cluster too),
    // through an external IP as through the NodePort
    for fe in ["198.51.100.7:80", "198.18.0.1:30082"] {
        let (v, s, d) = n.inbound("198.18.0.100:5000", fe, UDP);
        assert_eq!(v, TCX_NEXT);
        assert_eq!(
            (s, d),
            (sa("198.18.0.100:5000"), sa("10.244.0.6:5353")),
            "{fe}"
        );
        let (_, s, d) = n.outbound("10.244.0.6:5353", "198.18.0.100:5000", UDP);
        assert_eq!((s, d), (sa(fe), sa("198.18.0.100:5000")));
        n.clear_nat();
    }
    assert_eq!(n.stats().np_snat, 2);
}

#[test]
fn nodeport_without_a_usable_backend_rejects_or_drops_and_reports_privileged() {
    need_root!("nodeport_without_a_usable_backend_rejects_or_drops_and_reports_privileged");
    let n = node("npnone");
    let empty = service(
        "empty",
        weft_lb::ServiceType::NodePort,
        "10.96.0.13",
        &[
            (Protocol::TCP, 80, Some(30083)),
            (Protocol::UDP, 80, Some(30083)),
        ],
    );
    // Local with endpoints only on another node: dropped from outside
    let elsewhere = nodeport(
        "away",
        "10.96.0.14",
        Protocol::TCP,
        30084,
        TrafficPolicy::Local,
    );
    let slices = [slice(
        "away",
        &[("10.244.1.9", "node-b")],
        &[(Protocol::TCP, 8080)],
    )];
    let empty6 = service(
        "empty6",
        weft_lb::ServiceType::NodePort,
        "fd00:96::13",
        &[(Protocol::UDP, 80, Some(30085))],
    );
    install(
        &n.progs,
        &[empty, elsewhere, empty6],
        &slices,
        Algorithm::Random,
        &mut IdAllocator::default(),
    );
    // no endpoint at all: kube-proxy's REJECT, an ICMP port unreachable
    // sent back out of the device, for TCP and UDP alike
    for proto in [TCP, UDP] {
        let orig = packets::frame(
            sa("198.18.0.100:40000"),
            sa("198.18.0.1:30083"),
            proto,
            b"ping",
        );
        let (v, out) = n.run(NODEPORT_IN, &orig);
        assert_eq!(v, TC_ACT_REDIRECT, "{proto}");
        assert_eq!(out.len(), 14 + 20 + 8 + 28, "{proto}");
        assert_eq!(
            (&out[0..6], &out[6..12]),
            (&orig[6..12], &orig[0..6]),
            "MACs swapped"
        );
        assert_eq!(out[23], 1, "ICMP");
        assert_eq!(
            &out[26..30],
            &[198, 18, 0, 1],
            "from the address the client asked"
        );
        assert_eq!(&out[30..34], &[198, 18, 0, 100], "to the client");
        assert!(packets::sum_ok(&out[14..34]), "IP header checksum");
        assert_eq!((out[34], out[35]), (3, 3), "destination unreachable, port");
        assert!(packets::sum_ok(&out[34..]), "ICMP checksum");
        assert_eq!(
            &out[42..70],
            &orig[14..42],
            "the offending header and 8 bytes"
        );
    }
    // and over IPv6, an ICMPv6 port unreachable
    let orig = packets::frame(
        sa("[2001:2::100]:40000"),
        sa("[2001:2::1]:30085"),
        UDP,
        b"ping",
    );
    let (v, out) = n.run(NODEPORT_IN, &orig);
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!(out.len(), 14 + 40 + 8 + 48);
    assert_eq!((&out[0..6], &out[6..12]), (&orig[6..12], &orig[0..6]));
    assert_eq!((out[20], out[21]), (58, 64), "ICMPv6, a fresh hop limit");
    assert_eq!(
        &out[22..38],
        &orig[38..54],
        "from the address the client asked"
    );
    assert_eq!(&out[38..54], &orig[22..38], "to the client");
    assert_eq!((out[54], out[55]), (1, 4), "destination unreachable, port");
    assert!(packets::icmp6_ok(&out), "ICMPv6 checksum");
    assert_eq!(
        &out[62..110],
        &orig[14..62],
        "the offending header and 8 bytes"
    );
    // none in this scope although the Service has some (Local): dropped
    let (v, s, d) = n.inbound("198.18.0.100:40000", "198.18.0.1:30084", TCP);
    assert_eq!(v, TCX_DROP);
    assert_eq!(
        (s, d),
        (sa("198.18.0.100:40000"), sa("198.18.0.1:30084")),
        "left as it was"
    );
    assert_eq!(n.stats().np_drop, 4);
    let drops = PerCpuArray::<u64>::new(n.progs.map("weft_drops").unwrap()).unwrap();
    assert_eq!(
        drops.sum(DROP_NO_BACKEND).unwrap(),
        4,
        "counted as no-backend drops"
    );
}

#[test]
fn nodeport_ipv6_udp_is_translated_both_ways_privileged() {
    need_root!("nodeport_ipv6_udp_is_translated_both_ways_privileged");
    let n = node("np6");
    let svc = nodeport(
        "dns6",
        "fd00:96::10",
        Protocol::UDP,
        30053,
        TrafficPolicy::Local,
    );
    let sl = slice("dns6", &[("fd00:244::5", NODE)], &[(Protocol::UDP, 5353)]);
    install(
        &n.progs,
        &[svc],
        &[sl],
        Algorithm::maglev(),
        &mut IdAllocator::default(),
    );
    let (v, s, d) = n.inbound("[2001:2::100]:40000", "[2001:2::1]:30053", UDP);
    assert_eq!(v, TCX_NEXT);
    assert_eq!(
        (s, d),
        (sa("[2001:2::100]:40000"), sa("[fd00:244::5]:5353"))
    );
    let (_, s, d) = n.outbound("[fd00:244::5]:5353", "[2001:2::100]:40000", UDP);
    assert_eq!((s, d), (sa("[2001:2::1]:30053"), sa("[2001:2::100]:40000")));
}

#[test]
fn nodeport_ipv6_cluster_policy_snats_towards_another_node_privileged() {
    need_root!("nodeport_ipv6_cluster_policy_snats_towards_another_node_privileged");
    let n = node("np6snat");
    let svc = nodeport(
        "web6",
        "fd00:96::11",
        Protocol::TCP,
        30054,
        TrafficPolicy::Cluster,
    );
    let sl = slice(
        "web6",
        &[("fd00:244:1::7", "node-b")],
        &[(Protocol::TCP, 8080)],
    );
    install(
        &n.progs,
        &[svc],
        &[sl],
        Algorithm::Random,
        &mut IdAllocator::default(),
    );
    let (v, s, d) = n.inbound("[2001:2::100]:40000", "[2001:2::1]:30054", TCP);
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!(
        (s, d),
        (sa("[2001:2::1]:40000"), sa("[fd00:244:1::7]:8080"))
    );
    let (v, s, d) = n.inbound("[fd00:244:1::7]:8080", "[2001:2::1]:40000", TCP);
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!((s, d), (sa("[2001:2::1]:30054"), sa("[2001:2::100]:40000")));
}

/// The backend each of `flows` client ports gets, through the program.
fn backends_of(n: &Node, fe: &str, flows: u16) -> Vec<SocketAddr> {
    (0..flows)
        .map(|i| {
            let client = format!("198.18.0.{}:{}", 100 + i % 50, 20000 + i);
            let (v, _, d) = n.inbound(&client, fe, TCP);
            assert_eq!(v, TCX_NEXT);
            d
        })
        .collect()
}

#[test]
fn maglev_removing_one_of_ten_backends_moves_about_a_tenth_of_flows_privileged() {
    need_root!("maglev_removing_one_of_ten_backends_moves_about_a_tenth_of_flows_privileged");
    let n = node("npmaglev");
    let svc = nodeport(
        "mag",
        "10.96.0.20",
        Protocol::TCP,
        30090,
        TrafficPolicy::Local,
    );
    let eps: Vec<String> = (10..20).map(|i| format!("10.244.0.{i}")).collect();
    let all: Vec<(&str, &str)> = eps.iter().map(|e| (e.as_str(), NODE)).collect();
    let mut ids = IdAllocator::default();
    let port = [(Protocol::TCP, 8080)];
    install(
        &n.progs,
        std::slice::from_ref(&svc),
        &[slice("mag", &all, &port)],
        Algorithm::maglev(),
        &mut ids,
    );
    const FLOWS: u16 = 3000;
    let before = backends_of(&n, "198.18.0.1:30090", FLOWS);
    let mut per: BTreeMap<SocketAddr, usize> = BTreeMap::new();
    for b in &before {
        *per.entry(*b).or_default() += 1;
    }
    assert_eq!(per.len(), 10, "every backend takes flows: {per:?}");
    assert!(
        per.values().all(|&c| (200..=400).contains(&c)),
        "even shares: {per:?}"
    );

    // one backend goes; new flows are chosen again (NAT entries cleared)
    let gone = sa("10.244.0.13:8080");
    let rest: Vec<(&str, &str)> = all
        .iter()
        .copied()
        .filter(|e| e.0 != "10.244.0.13")
        .collect();
    install(
        &n.progs,
        &[svc],
        &[slice("mag", &rest, &port)],
        Algorithm::maglev(),
        &mut ids,
    );
    n.clear_nat();
    let after = backends_of(&n, "198.18.0.1:30090", FLOWS);
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    let moved_kept = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| **b != gone && b != a)
        .count();
    assert!(after.iter().all(|a| *a != gone));
    println!(
        "maglev: {moved} of {FLOWS} flows moved ({:.1}%), {moved_kept} of them from a backend that stayed",
        100.0 * moved as f64 / f64::from(FLOWS)
    );
    assert_eq!(
        moved - moved_kept,
        per[&gone],
        "every flow of the removed backend moved"
    );
    let share = moved as f64 / f64::from(FLOWS);
    assert!((0.07..0.14).contains(&share), "about 1/10 moved: {share}");
    assert!(
        moved_kept * 100 < usize::from(FLOWS) * 2,
        "under 2% of the others moved"
    );
}

#[test]
fn established_flows_keep_their_backend_and_a_removed_one_is_chosen_again_privileged() {
    need_root!("established_flows_keep_their_backend_and_a_removed_one_is_chosen_again_privileged");
    let n = node("npkeep");
    let svc = nodeport(
        "keep",
        "10.96.0.21",
        Protocol::TCP,
        30091,
        TrafficPolicy::Local,
    );
    let port = [(Protocol::TCP, 8080)];
    let three = [
        ("10.244.0.20", NODE),
        ("10.244.0.21", NODE),
        ("10.244.0.22", NODE),
    ];
    let mut ids = IdAllocator::default();
    install(
        &n.progs,
        std::slice::from_ref(&svc),
        &[slice("keep", &three, &port)],
        Algorithm::Random,
        &mut ids,
    );
    let before = backends_of(&n, "198.18.0.1:30091", 300);
    // random slots: a backend change would move most new flows, but these
    // have NAT entries; only the removed backend's flows choose again
    let four = [
        ("10.244.0.20", NODE),
        ("10.244.0.22", NODE),
        ("10.244.0.23", NODE),
        ("10.244.0.24", NODE),
    ];
    install(
        &n.progs,
        &[svc],
        &[slice("keep", &four, &port)],
        Algorithm::Random,
        &mut ids,
    );
    let after = backends_of(&n, "198.18.0.1:30091", 300);
    for (b, a) in before.iter().zip(&after) {
        if *b == sa("10.244.0.21:8080") {
            assert_ne!(a, b, "the removed backend takes no packet");
        } else {
            assert_eq!(a, b, "an established flow stays");
        }
    }
}

#[test]
fn client_ip_affinity_holds_across_flows_from_outside_privileged() {
    need_root!("client_ip_affinity_holds_across_flows_from_outside_privileged");
    let n = node("npaff");
    let mut svc = nodeport(
        "aff",
        "10.96.0.22",
        Protocol::TCP,
        30092,
        TrafficPolicy::Local,
    );
    svc.session_affinity = weft_lb::SessionAffinity::ClientIp {
        timeout_seconds: 600,
    };
    let eps: Vec<(&str, &str)> = ["10.244.0.30", "10.244.0.31", "10.244.0.32", "10.244.0.33"]
        .iter()
        .map(|e| (*e, NODE))
        .collect();
    install(
        &n.progs,
        &[svc],
        &[slice("aff", &eps, &[(Protocol::TCP, 8080)])],
        Algorithm::Random,
        &mut IdAllocator::default(),
    );
    let mut chosen = std::collections::BTreeSet::new();
    for c in 0..8 {
        let first: Vec<SocketAddr> = (0..25)
            .map(|p| {
                let client = format!("198.18.0.{}:{}", 100 + c, 30000 + p);
                n.inbound(&client, "198.18.0.1:30092", TCP).2
            })
            .collect();
        assert!(
            first.iter().all(|b| *b == first[0]),
            "client {c}: {first:?}"
        );
        chosen.insert(first[0]);
    }
    assert!(chosen.len() > 1, "different clients spread: {chosen:?}");
    let aff = n.progs.maps().affinity().unwrap();
    assert_eq!(aff.len(), 8, "one entry per client: {aff:?}");
}

/// The events in the programs' ring buffer (weft_flows).
fn flow_events(n: &Node) -> Vec<weft_bpf_abi::FlowEvent> {
    let mut ring = weft_datapath::bpf::RingBuf::new(n.progs.map("weft_flows").unwrap()).unwrap();
    let mut out = Vec::new();
    ring.drain(1000, |b| {
        if let Some(e) = weft_datapath::bpf::from_bytes::<weft_bpf_abi::FlowEvent>(b) {
            out.push(e);
        }
    });
    out
}

#[test]
fn translations_and_no_backend_drops_are_reported_as_flow_events_privileged() {
    need_root!("translations_and_no_backend_drops_are_reported_as_flow_events_privileged");
    use weft_bpf_abi::{POINT_NODEPORT, VERDICT_DROPPED, VERDICT_TRANSLATED};
    let n = node("npflows");
    let web = nodeport(
        "web",
        "10.96.0.40",
        Protocol::TCP,
        30100,
        TrafficPolicy::Local,
    );
    let empty = nodeport(
        "gone",
        "10.96.0.41",
        Protocol::TCP,
        30101,
        TrafficPolicy::Local,
    );
    let sl = slice("web", &[("10.244.0.9", NODE)], &[(Protocol::TCP, 8080)]);
    install(
        &n.progs,
        &[web, empty],
        &[sl],
        Algorithm::Random,
        &mut IdAllocator::default(),
    );
    n.inbound("198.18.0.100:40000", "198.18.0.1:30100", TCP);
    n.inbound("198.18.0.100:40000", "198.18.0.1:30100", TCP); // known flow: no event
                                                              // (answered with an ICMP error, see the test above)
    let refused = packets::frame(sa("198.18.0.100:40001"), sa("198.18.0.1:30101"), TCP, b"x");
    n.run(NODEPORT_IN, &refused);
    n.run(NODEPORT_IN, &refused); // rate-limited drop
    let ev = flow_events(&n);
    assert_eq!(ev.len(), 2, "{ev:?}");
    let t = &ev[0];
    assert_eq!(
        (t.verdict, t.point, t.proto),
        (VERDICT_TRANSLATED, POINT_NODEPORT, TCP)
    );
    assert_eq!(&t.src[..4], &[198, 18, 0, 100]);
    assert_eq!(
        (&t.dst[..4], u16::from_be(t.dport)),
        (&[198u8, 18, 0, 1][..], 30100)
    );
    assert_eq!(
        (&t.xlat_dst[..4], u16::from_be(t.xlat_dport)),
        (&[10u8, 244, 0, 9][..], 8080)
    );
    let d = &ev[1];
    assert_eq!(
        (d.verdict, d.drop_reason),
        (VERDICT_DROPPED, DROP_NO_BACKEND as u8)
    );
    assert_eq!(u16::from_be(d.dport), 30101);
}

/// internalTrafficPolicy Local with the only endpoint on another node:
/// kube-proxy drops (the client times out). The socket programs leave such
/// a connect untranslated; its packets are dropped at the node's external
/// device, while a Service with a local endpoint and other traffic pass.
#[test]
fn internal_traffic_policy_local_without_a_local_endpoint_drops_on_the_way_out_privileged() {
    need_root!(
        "internal_traffic_policy_local_without_a_local_endpoint_drops_on_the_way_out_privileged"
    );
    let n = node("npitp");
    let mut far = service(
        "far",
        weft_lb::ServiceType::ClusterIP,
        "10.96.0.20",
        &[(Protocol::TCP, 80, None), (Protocol::UDP, 53, None)],
    );
    far.internal_traffic_policy = TrafficPolicy::Local;
    let mut near = far.clone();
    near.name = "near".into();
    near.cluster_ips = vec![ip("10.96.0.21")];
    let ports = [(Protocol::TCP, 8080), (Protocol::UDP, 5353)];
    install(
        &n.progs,
        &[far, near],
        &[
            slice("far", &[("10.244.1.7", "node-b")], &ports),
            slice("near", &[("10.244.0.5", NODE)], &ports),
        ],
        Algorithm::Random,
        &mut IdAllocator::default(),
    );
    for (dst, proto) in [("10.96.0.20:80", TCP), ("10.96.0.20:53", UDP)] {
        let (v, _, d) = n.outbound("10.244.0.9:40000", dst, proto);
        assert_eq!((v, d), (TCX_DROP, sa(dst)), "{dst}: dropped, not sent on");
    }
    let (v, _, d) = n.outbound("10.244.0.9:40000", "10.96.0.21:80", TCP);
    assert_eq!(
        (v, d),
        (TCX_NEXT, sa("10.96.0.21:80")),
        "a Service served here is no business of the egress program"
    );
    let (v, _, _) = n.outbound("10.244.0.9:40000", "198.18.0.100:80", TCP);
    assert_eq!(v, TCX_NEXT);
    assert_eq!(n.stats().np_drop, 2);
}
