//! A node network namespace for BPF_PROG_TEST_RUN of the NodePort
//! programs (see services_run.rs), with the programs loaded.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::net::SocketAddr;

use super::common::*;
use super::packets::{addrs, checksums_ok, frame, sa};
use super::support::*;
use weft_bpf_abi::{LbNatKey, LbNatValue};
use weft_datapath::bpf::{SkbCtx, TypedMap};
use weft_datapath::netns::run_in;
use weft_datapath::services::{
    ServiceProgramOptions, ServicePrograms, ServiceStats, ServiceTable, NODEPORT_IN, NODEPORT_OUT,
};
use weft_lb::{Protocol, ServiceType, TrafficPolicy};

pub const NODE_IP: &str = "198.18.0.1";
pub const NODE_IP6: &str = "2001:2::1";

/// A node netns: `ext0` (198.18.0.1/24, 2001:2::1/64) where outside traffic
/// arrives, 10.244.1.0/24 and fd00:244:1::/64 (another node's pods) via
/// 198.18.0.254 and 2001:2::fe on it, and
/// 10.244.0.0/24 (this node's pods) behind `hv0`, a host veth with weft's
/// ee:ee:ee:ee:ee:ee MAC, neighbours permanent. Forwarding on.
pub struct Node {
    pub ns: Ns,
    pub ext: u32,
    pub progs: ServicePrograms,
}

pub fn ifindex(ns: &Ns, dev: &str) -> u32 {
    let out = ns.ip(&["-o", "link", "show", dev]);
    out.split(':').next().unwrap().trim().parse().unwrap()
}

pub fn node(test: &str) -> Node {
    let ns = Ns::new(test, "node");
    ns.veth_pair("ext0", "peer0", 1500);
    ns.veth_pair("hv0", "pv0", 1500);
    ns.ip(&["link", "set", "hv0", "address", "ee:ee:ee:ee:ee:ee"]);
    ns.ip(&["addr", "add", "198.18.0.1/24", "dev", "ext0"]);
    ns.ip(&["addr", "add", "2001:2::1/64", "dev", "ext0", "nodad"]);
    ns.ip(&[
        "neigh",
        "add",
        "198.18.0.254",
        "lladdr",
        "02:00:00:00:00:fe",
        "dev",
        "ext0",
        "nud",
        "permanent",
    ]);
    ns.ip(&[
        "route",
        "add",
        "10.244.1.0/24",
        "via",
        "198.18.0.254",
        "dev",
        "ext0",
    ]);
    ns.ip(&[
        "neigh",
        "add",
        "2001:2::fe",
        "lladdr",
        "02:00:00:00:00:fe",
        "dev",
        "ext0",
        "nud",
        "permanent",
    ]);
    ns.ip(&[
        "-6",
        "route",
        "add",
        "fd00:244:1::/64",
        "via",
        "2001:2::fe",
        "dev",
        "ext0",
    ]);
    ns.ip(&["route", "add", "10.244.0.0/24", "dev", "hv0"]);
    for i in 2..40 {
        let a = format!("10.244.0.{i}");
        ns.ip(&[
            "neigh",
            "add",
            &a,
            "lladdr",
            "02:00:00:00:00:05",
            "dev",
            "hv0",
            "nud",
            "permanent",
        ]);
    }
    for k in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
        run("ip", &["netns", "exec", &ns.name, "sysctl", "-qw", k]);
    }
    let ext = ifindex(&ns, "ext0");
    let progs = ServicePrograms::load(&ServiceProgramOptions::default()).unwrap();
    progs
        .maps()
        .set_node_addrs(&[ip(NODE_IP), ip(NODE_IP6)])
        .unwrap();
    Node { ns, ext, progs }
}

impl Node {
    pub fn run(&self, prog: &str, f: &[u8]) -> (i32, Vec<u8>) {
        let ctx = SkbCtx {
            ingress_ifindex: self.ext,
            ifindex: self.ext,
            ..Default::default()
        };
        let p = self.progs.program(prog).unwrap();
        let r = run_in(&self.ns.path(), || p.test_run(f, &ctx, 1))
            .unwrap()
            .unwrap();
        (r.retval, r.data)
    }

    /// The mean run time of `prog` on `f` over `repeat` runs (ns).
    pub fn time(&self, prog: &str, f: &[u8], repeat: u32) -> u32 {
        let ctx = SkbCtx {
            ingress_ifindex: self.ext,
            ifindex: self.ext,
            ..Default::default()
        };
        let p = self.progs.program(prog).unwrap();
        run_in(&self.ns.path(), || p.test_run(f, &ctx, repeat))
            .unwrap()
            .unwrap()
            .duration_ns
    }

    /// A packet from outside: verdict and (source, destination) after.
    pub fn inbound(&self, src: &str, dst: &str, proto: u8) -> (i32, SocketAddr, SocketAddr) {
        let (v, out) = self.run(NODEPORT_IN, &frame(sa(src), sa(dst), proto, b"ping"));
        assert!(checksums_ok(&out), "checksums after the rewrite");
        let (s, d) = addrs(&out);
        (v, s, d)
    }

    /// A reply leaving through the external device (egress).
    pub fn outbound(&self, src: &str, dst: &str, proto: u8) -> (i32, SocketAddr, SocketAddr) {
        let (v, out) = self.run(NODEPORT_OUT, &frame(sa(src), sa(dst), proto, b"pong"));
        assert!(checksums_ok(&out), "checksums after the rewrite");
        let (s, d) = addrs(&out);
        (v, s, d)
    }

    pub fn stats(&self) -> ServiceStats {
        self.progs.maps().counters().unwrap()
    }

    pub fn clear_nat(&self) {
        let nat =
            TypedMap::<LbNatKey, LbNatValue>::new(self.progs.map("weft_lb_nat").unwrap()).unwrap();
        for k in nat.keys().unwrap() {
            nat.remove(&k).unwrap();
        }
    }
}

pub fn nodeport(
    name: &str,
    cip: &str,
    proto: Protocol,
    np: u16,
    etp: TrafficPolicy,
) -> weft_lb::Service {
    let mut s = service(name, ServiceType::NodePort, cip, &[(proto, 80, Some(np))]);
    s.external_traffic_policy = etp;
    s
}
