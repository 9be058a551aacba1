//! ICMP errors about NodePort flows under BPF_PROG_TEST_RUN: an error
//! quoting a translated packet is translated as conntrack's NAT does, over
//! IPv4 and IPv6, in the same private namespace as `services_run.rs` (the
//! translations themselves are tested there). Without root they skip.

mod common;
#[path = "services/node.rs"]
mod node;
#[path = "services/packets.rs"]
mod packets;
#[path = "services/support.rs"]
mod support;

use common::*;
use packets::{addrs, checksums_ok, icmp4_ok, icmp4_parts, sa, TCP, UDP};
use support::*;
use weft_bpf_abi::{TCX_NEXT, TC_ACT_REDIRECT};
use weft_datapath::services::{NODEPORT_IN, NODEPORT_OUT};
use weft_lb::{Algorithm, IdAllocator, Protocol, TrafficPolicy};

use node::*;

/// An ICMP error about a NATed flow is translated as conntrack's NAT does:
/// the client sees its own packet to the NodePort quoted, the backend its
/// reply, each error going where the flow's packets go.
#[test]
fn icmp_errors_about_nodeport_flows_are_translated_both_ways_privileged() {
    need_root!("icmp_errors_about_nodeport_flows_are_translated_both_ways_privileged");
    let n = node("npicmp");
    let local = nodeport(
        "near",
        "10.96.0.10",
        Protocol::UDP,
        30080,
        TrafficPolicy::Local,
    );
    let remote = nodeport(
        "far",
        "10.96.0.11",
        Protocol::TCP,
        30081,
        TrafficPolicy::Cluster,
    );
    install(
        &n.progs,
        &[local, remote],
        &[
            slice("near", &[("10.244.0.5", NODE)], &[(Protocol::UDP, 5353)]),
            slice("far", &[("10.244.1.7", "node-b")], &[(Protocol::TCP, 8080)]),
        ],
        Algorithm::Random,
        &mut IdAllocator::default(),
    );
    let (client, router) = ("198.18.0.100", "198.18.0.254");
    let check = |f: &[u8]| {
        assert!(icmp4_ok(f), "outer and ICMP checksums");
        let (outer, quoted) = icmp4_parts(f);
        assert!(packets::sum_ok(&quoted[14..34]), "quoted IPv4 checksum");
        // a quoted TCP checksum lies past the 8 bytes an error must carry:
        // left as it was (as conntrack does); a quoted UDP one is updated
        assert!(
            quoted[23] != UDP || checksums_ok(&quoted),
            "quoted UDP checksum"
        );
        (outer, addrs(&quoted))
    };

    // a kept-source flow to a pod of this node
    let (v, _, d) = n.inbound("198.18.0.100:40000", "198.18.0.1:30080", UDP);
    assert_eq!((v, d), (TCX_NEXT, sa("10.244.0.5:5353")));
    // the backend refuses a datagram of it (port unreachable): leaving, the
    // client sees the NodePort refuse its own datagram
    let from_pod = packets::frame(
        sa("198.18.0.100:40000"),
        sa("10.244.0.5:5353"),
        UDP,
        b"ping",
    );
    let err = packets::icmp4_error("10.244.0.5", client, 3, 3, &from_pod);
    let (v, out) = n.run(NODEPORT_OUT, &err);
    assert_eq!(v, TCX_NEXT);
    assert_eq!(
        check(&out),
        (
            (ip("198.18.0.1"), ip(client)),
            (sa("198.18.0.100:40000"), sa("198.18.0.1:30080"))
        )
    );
    // a router on the way to the client cannot pass the reply (frag
    // needed): the backend sees its own reply quoted, from the router
    let reply = packets::frame(
        sa("198.18.0.1:30080"),
        sa("198.18.0.100:40000"),
        UDP,
        b"pong",
    );
    let err = packets::icmp4_error(router, "198.18.0.1", 3, 4, &reply);
    let (v, out) = n.run(NODEPORT_IN, &err);
    assert_eq!(v, TCX_NEXT);
    assert_eq!(
        check(&out),
        (
            (ip(router), ip("10.244.0.5")),
            (sa("10.244.0.5:5353"), sa("198.18.0.100:40000"))
        )
    );

    // a source-NATed flow to another node's pod
    let (v, s, _) = n.inbound("198.18.0.100:41000", "198.18.0.1:30081", TCP);
    assert_eq!(v, TC_ACT_REDIRECT);
    let to_backend = packets::frame(s, sa("10.244.1.7:8080"), TCP, b"");
    // a router towards the backend: the error goes on to the client
    let err = packets::icmp4_error(router, "198.18.0.1", 3, 4, &to_backend);
    let (v, out) = n.run(NODEPORT_IN, &err);
    assert_eq!(
        v, TCX_NEXT,
        "routed by the kernel: the source is the router's"
    );
    assert_eq!(
        check(&out),
        (
            (ip(router), ip(client)),
            (sa("198.18.0.100:41000"), sa("198.18.0.1:30081"))
        )
    );
    // the backend's node itself (host unreachable): it shows as the node
    let err = packets::icmp4_error("10.244.1.7", "198.18.0.1", 3, 1, &to_backend);
    let (v, out) = n.run(NODEPORT_IN, &err);
    assert_eq!(v, TC_ACT_REDIRECT, "from a node address: sent out directly");
    assert_eq!(check(&out).0, (ip("198.18.0.1"), ip(client)));

    // errors about no NATed flow pass untouched
    let other = packets::frame(sa("198.18.0.1:22"), sa("198.18.0.100:40000"), TCP, b"");
    let err = packets::icmp4_error(router, "198.18.0.1", 3, 4, &other);
    assert_eq!(n.run(NODEPORT_IN, &err), (TCX_NEXT, err.clone()));
    assert_eq!(n.stats().np_icmp, 4);
}

/// The IPv6 twin: ICMPv6 errors about a NodePort flow translated both ways,
/// the ICMPv6 checksum (pseudo header included) and a quoted UDP one right.
#[test]
fn icmpv6_errors_about_nodeport_flows_are_translated_both_ways_privileged() {
    need_root!("icmpv6_errors_about_nodeport_flows_are_translated_both_ways_privileged");
    let n = node("npicmp6");
    let svc = nodeport(
        "dns6",
        "fd00:96::10",
        Protocol::UDP,
        30053,
        TrafficPolicy::Local,
    );
    install(
        &n.progs,
        &[svc],
        &[slice(
            "dns6",
            &[("fd00:244::5", NODE)],
            &[(Protocol::UDP, 5353)],
        )],
        Algorithm::Random,
        &mut IdAllocator::default(),
    );
    let (v, _, d) = n.inbound("[2001:2::100]:40000", "[2001:2::1]:30053", UDP);
    assert_eq!((v, d), (TCX_NEXT, sa("[fd00:244::5]:5353")));
    let check = |f: &[u8]| {
        assert!(packets::icmp6_ok(f), "ICMPv6 checksum");
        let (outer, quoted) = packets::icmp6_parts(f);
        assert!(checksums_ok(&quoted), "quoted UDP checksum");
        (outer, addrs(&quoted))
    };
    // the backend's port unreachable leaves as the NodePort's
    let from_pod = packets::frame(
        sa("[2001:2::100]:40000"),
        sa("[fd00:244::5]:5353"),
        UDP,
        b"ping",
    );
    let err = packets::icmp6_error("fd00:244::5", "2001:2::100", 1, 4, &from_pod);
    let (v, out) = n.run(NODEPORT_OUT, &err);
    assert_eq!(v, TCX_NEXT);
    assert_eq!(
        check(&out),
        (
            (ip("2001:2::1"), ip("2001:2::100")),
            (sa("[2001:2::100]:40000"), sa("[2001:2::1]:30053"))
        )
    );
    // a router's packet too big about the reply reaches the backend
    let reply = packets::frame(
        sa("[2001:2::1]:30053"),
        sa("[2001:2::100]:40000"),
        UDP,
        b"pong",
    );
    let err = packets::icmp6_error("2001:2::fe", "2001:2::1", 2, 0, &reply);
    let (v, out) = n.run(NODEPORT_IN, &err);
    assert_eq!(v, TCX_NEXT);
    assert_eq!(
        check(&out),
        (
            (ip("2001:2::fe"), ip("fd00:244::5")),
            (sa("[fd00:244::5]:5353"), sa("[2001:2::100]:40000"))
        )
    );
    assert_eq!(n.stats().np_icmp, 2);
}
