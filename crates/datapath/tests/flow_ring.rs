//! The flow ring's round trip under BPF_PROG_TEST_RUN: the test-only
//! `weft_flow_selftest` program reports every packet through `flow_report()`
//! (bpf/lib/flow.h), and `KernelFlowSource` reads them back: N in, N out or
//! counted lost, dropped flows rate-limited but every drop counted. No
//! device or namespace is needed. Without root they skip.

mod common;
#[path = "fastpath_run/packets.rs"]
#[allow(dead_code)]
mod packets;

use std::net::Ipv4Addr;

use common::*;
use packets::V4;
use weft_bpf_abi::{
    FlowEvent, DIR_EGRESS, DROP_POLICY_DEFAULT, FLOW_KIND_DECISION, POINT_FROM_POD,
    VERDICT_DROPPED, VERDICT_FORWARDED,
};
use weft_datapath::bpf::{self, Loaded, SkbCtx};
use weft_datapath::flows::{FlowSource, KernelFlowSource, FLOW_SELFTEST, FLOW_SELFTEST_OBJECT};

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xa];

fn load() -> (Loaded, KernelFlowSource) {
    let l = bpf::load(FLOW_SELFTEST_OBJECT).unwrap();
    let src = KernelFlowSource::find(&[&l])
        .unwrap()
        .expect("the selftest object has the ring");
    (l, src)
}

fn run(l: &Loaded, frame: &[u8], mark: u32, repeat: u32) {
    let ctx = SkbCtx {
        mark,
        ingress_ifindex: 7,
        ..Default::default()
    };
    let r = l
        .program(FLOW_SELFTEST)
        .unwrap()
        .test_run(frame, &ctx, repeat)
        .unwrap();
    assert_eq!(r.retval, weft_bpf_abi::TCX_NEXT);
}

/// Drains everything, `max` at a time, checking no drain exceeds it.
fn drain_all(src: &mut KernelFlowSource, max: usize) -> Vec<FlowEvent> {
    let mut out = Vec::new();
    loop {
        let before = out.len();
        let d = src.drain(max, &mut out).unwrap();
        assert_eq!(d.bad, 0);
        assert!(d.read <= max);
        assert_eq!(out.len() - before, d.read);
        if d.read == 0 {
            return out;
        }
    }
}

#[test]
fn every_forwarded_packet_comes_back_whole_privileged() {
    need_root!("every_forwarded_packet_comes_back_whole_privileged");
    let (l, mut src) = load();
    let frame = V4::tcp("10.244.0.2", "10.244.0.3", MAC).frame();
    run(&l, &frame, 0, 300);
    assert!(src.wait(std::time::Duration::from_millis(100)).unwrap());
    let evs = drain_all(&mut src, 64);
    assert_eq!(evs.len(), 300);
    let e = evs[0];
    assert_eq!(&e.src[..4], &Ipv4Addr::new(10, 244, 0, 2).octets());
    assert_eq!(&e.dst[..4], &Ipv4Addr::new(10, 244, 0, 3).octets());
    assert_eq!(u16::from_be(e.sport), 43_210);
    assert_eq!(u16::from_be(e.dport), 8080);
    assert_eq!(e.proto, packets::TCP);
    assert_eq!(e.verdict, VERDICT_FORWARDED);
    assert_eq!(e.kind, FLOW_KIND_DECISION);
    assert_eq!(e.point, POINT_FROM_POD);
    assert_eq!(e.direction, DIR_EGRESS);
    assert_eq!(e.ifindex, 7);
    assert_eq!(e.tcp_flags, 0x02, "the TCP header's flags byte (SYN)");
    assert_eq!((e.packets, e.bytes), (1, frame.len() as u64));
    assert!(evs.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
    assert_eq!(src.counters().unwrap().lost, 0);
}

#[test]
fn a_dropped_flow_is_reported_once_a_second_and_every_drop_counted_privileged() {
    need_root!("a_dropped_flow_is_reported_once_a_second_and_every_drop_counted_privileged");
    let (l, mut src) = load();
    let frame = V4::tcp("10.244.0.2", "10.244.0.3", MAC).frame();
    let mark = VERDICT_DROPPED as u32 | (DROP_POLICY_DEFAULT << 8) | (42 << 16);
    run(&l, &frame, mark, 50);
    let evs = drain_all(&mut src, 64);
    assert_eq!(evs.len(), 1, "rate-limited per flow");
    assert_eq!(evs[0].verdict, VERDICT_DROPPED);
    assert_eq!(evs[0].drop_reason as u32, DROP_POLICY_DEFAULT);
    assert_eq!(evs[0].rule_id, 42);
    let c = src.counters().unwrap();
    assert_eq!(c.drops.policy_default, 50);
    assert_eq!(c.drops.policy_denied, 0);
    // another flow is reported on its own
    let mut other = V4::tcp("10.244.0.2", "10.244.0.3", MAC);
    other.sport = 1234;
    run(&l, &other.frame(), mark, 1);
    assert_eq!(drain_all(&mut src, 64).len(), 1);
}

#[test]
fn a_full_ring_counts_what_it_loses_privileged() {
    need_root!("a_full_ring_counts_what_it_loses_privileged");
    let (l, mut src) = load();
    let frame = V4::tcp("10.244.0.2", "10.244.0.3", MAC).frame();
    // 256 KiB of 112-byte records holds ~2340: 5000 overflow it
    const N: u32 = 5000;
    run(&l, &frame, 0, N);
    let got = drain_all(&mut src, 512).len() as u64;
    let lost = src.counters().unwrap().lost;
    assert!(lost > 0, "the ring should have overflowed");
    assert!(got > 2000, "read {got}");
    assert_eq!(got + lost, N as u64);
    // drained, the ring takes events again
    run(&l, &frame, 0, 10);
    assert_eq!(drain_all(&mut src, 512).len(), 10);
}
