//! The forwarding programs under BPF_PROG_TEST_RUN: crafted frames in,
//! verdict, rewritten bytes and counters out. No device, route or namespace
//! is needed, except one private network namespace (on a thread of its own,
//! gone with it) for the conntrack case. Also the fast path's pinned maps,
//! in a private bpffs mounted and removed here. Without root they skip.

mod common;
#[path = "fastpath_run/packets.rs"]
mod packets;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use common::*;
use packets::{checksum, v6_tcp, HOST_MAC, ICMP, UDP, V4};
use weft_bpf_abi::{EpKey, EpValue, Stats, EP_FAST, TCX_NEXT, TC_ACT_REDIRECT};
use weft_datapath::bpf::{self, PinOutcome, PrivateBpffs, SkbCtx};
use weft_datapath::fastpath::{FastPath, FROM_POD, TO_POD};

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
const MAC_C: [u8; 6] = [2, 0, 0, 0, 0, 0xc];
/// Host veth ifindexes: made up, the programs only compare them.
const VETH_A: u32 = 9001;
const VETH_B: u32 = 9002;
const VETH_C: u32 = 9003;

fn pools() -> Vec<ipnet::IpNet> {
    vec![
        "10.244.0.0/16".parse().unwrap(),
        "fd00:244::/48".parse().unwrap(),
    ]
}

fn entry(ip: &str, ifindex: u32, mac: [u8; 6], fast: bool) -> (EpKey, EpValue) {
    (
        EpKey::new(ip.parse::<IpAddr>().unwrap()),
        EpValue {
            host_ifindex: ifindex,
            pod_mac: mac,
            flags: if fast { EP_FAST } else { 0 },
            pad: 0,
        },
    )
}

/// Pods a (10.244.0.2, fd00:244::2) and b (10.244.0.3, fd00:244::3) fast,
/// c (10.244.0.4) known but slow (shaped or unsettled).
fn fast_path() -> FastPath {
    let mut fp = FastPath::load(&pools(), 0, None).unwrap();
    let map = HashMap::from([
        entry("10.244.0.2", VETH_A, MAC_A, true),
        entry("fd00:244::2", VETH_A, MAC_A, true),
        entry("10.244.0.3", VETH_B, MAC_B, true),
        entry("fd00:244::3", VETH_B, MAC_B, true),
        entry("10.244.0.4", VETH_C, MAC_C, false),
    ]);
    // no veths: the map is filled, nothing is attached anywhere
    fp.sync(map, &HashSet::new()).unwrap();
    fp
}

/// Runs `prog` on `frame` as if it came in on `ingress`; the verdict, the
/// frame after the program, and which counters moved.
fn run_on(
    fp: &FastPath,
    prog: &str,
    frame: &[u8],
    ingress: u32,
) -> (i32, Vec<u8>, Vec<(&'static str, u64)>) {
    let before = fp.stats().unwrap();
    let ctx = SkbCtx {
        ingress_ifindex: ingress,
        ..Default::default()
    };
    let r = fp.program(prog).unwrap().test_run(frame, &ctx, 1).unwrap();
    (r.retval, r.data, moved(&before, &fp.stats().unwrap()))
}

fn moved(before: &Stats, after: &Stats) -> Vec<(&'static str, u64)> {
    before
        .pairs()
        .iter()
        .zip(after.pairs())
        .filter(|(b, a)| a.1 != b.1)
        .map(|(b, a)| (b.0, a.1 - b.1))
        .collect()
}

/// `frame` after one routing hop into b: b's MAC, the host veth's MAC, the
/// TTL (hop limit) at `ttl_at` down by one and, for IPv4, the header
/// checksum recomputed from scratch.
fn routed(frame: &[u8], ttl_at: usize) -> Vec<u8> {
    let mut want = frame.to_vec();
    want[0..6].copy_from_slice(&MAC_B);
    want[6..12].copy_from_slice(&HOST_MAC);
    want[ttl_at] -= 1;
    if frame[12..14] == [0x08, 0x00] {
        want[24..26].copy_from_slice(&[0, 0]);
        let c = checksum(&want[14..34]);
        want[24..26].copy_from_slice(&c.to_be_bytes());
    }
    want
}

/// Asserts the kernel path gets the frame untouched, counted under `why`.
fn assert_passed(fp: &FastPath, prog: &str, frame: &[u8], ingress: u32, why: &str) {
    let (verdict, out, counters) = run_on(fp, prog, frame, ingress);
    assert_eq!(verdict, TCX_NEXT, "{why}: verdict");
    assert_eq!(out, frame, "{why}: a passed frame is not rewritten");
    assert_eq!(counters, vec![(why, 1)]);
}

#[test]
fn known_pod_to_local_pod_is_redirected_and_rewritten_privileged() {
    need_root!("fastpath_run");
    let fp = fast_path();
    let frame = V4::tcp("10.244.0.2", "10.244.0.3", MAC_A).frame();
    let (verdict, out, counters) = run_on(&fp, FROM_POD, &frame, VETH_A);
    assert_eq!(verdict, TC_ACT_REDIRECT, "bpf_redirect_peer into b");
    assert_eq!(counters, vec![("local", 1)]);
    assert_eq!(out, routed(&frame, 14 + 8), "b's MAC, the host's, ttl 63");
    assert_eq!(checksum(&out[14..34]), 0, "ip header checksum still valid");

    // IPv6: hop limit down by one, MACs rewritten
    let frame6 = v6_tcp("fd00:244::2", "fd00:244::3", MAC_A, 64);
    let (verdict, out, counters) = run_on(&fp, FROM_POD, &frame6, VETH_A);
    assert_eq!((verdict, counters), (TC_ACT_REDIRECT, vec![("local", 1)]));
    assert_eq!(out, routed(&frame6, 14 + 7));

    // from another node (weft_to_pod on the remote device): into b as well
    let (verdict, out, counters) = run_on(&fp, TO_POD, &frame, 1);
    assert_eq!((verdict, counters), (TC_ACT_REDIRECT, vec![("local", 1)]));
    assert_eq!(&out[0..6], &MAC_B);
}

#[test]
fn unknown_spoofed_and_slow_pods_take_the_kernel_path_privileged() {
    need_root!("fastpath_run");
    let fp = fast_path();
    // a source the map does not know
    let f = V4::tcp("10.244.0.9", "10.244.0.3", MAC_A).frame();
    assert_passed(&fp, FROM_POD, &f, VETH_A, "pass_slow_endpoint");
    // a's address, but from b's veth (spoofed)
    let f = V4::tcp("10.244.0.2", "10.244.0.3", MAC_A).frame();
    assert_passed(&fp, FROM_POD, &f, VETH_B, "pass_slow_endpoint");
    // to a pod that is not fast (shaped or just created)
    let f = V4::tcp("10.244.0.2", "10.244.0.4", MAC_A).frame();
    assert_passed(&fp, FROM_POD, &f, VETH_A, "pass_slow_endpoint");
    // to something outside the pools: masquerade is the kernel's
    let f = V4::tcp("10.244.0.2", "192.0.2.1", MAC_A).frame();
    assert_passed(&fp, FROM_POD, &f, VETH_A, "pass_not_pod");
    // a pod of another node on a single node (no remote device): the kernel's
    let f = V4::tcp("10.244.0.2", "10.244.7.1", MAC_A).frame();
    assert_passed(&fp, FROM_POD, &f, VETH_A, "pass_not_pod");
    // from another node to no pod here
    let f = V4::tcp("10.244.7.1", "10.244.0.9", MAC_A).frame();
    assert_passed(&fp, TO_POD, &f, 1, "pass_not_pod");
}

#[test]
fn fragments_options_ttl_and_other_protocols_take_the_kernel_path_privileged() {
    need_root!("fastpath_run");
    let fp = fast_path();
    let base = V4::tcp("10.244.0.2", "10.244.0.3", MAC_A);
    let cases = [
        (
            "more fragments",
            V4 {
                frag: 0x2000,
                ..base.clone()
            },
        ),
        (
            "a later fragment",
            V4 {
                frag: 0x0010,
                ..base.clone()
            },
        ),
        (
            "ip options",
            V4 {
                options: vec![1, 1, 1, 0],
                ..base.clone()
            },
        ),
        (
            "expiring ttl",
            V4 {
                ttl: 1,
                ..base.clone()
            },
        ),
        (
            "icmp",
            V4 {
                proto: ICMP,
                ..base.clone()
            },
        ),
    ];
    for (what, p) in cases {
        println!("{what}");
        assert_passed(&fp, FROM_POD, &p.frame(), VETH_A, "pass_proto");
        assert_passed(&fp, TO_POD, &p.frame(), 1, "pass_proto");
    }
    // the same flow with none of these is fast: the cases above differ only there
    let (verdict, _, _) = run_on(&fp, FROM_POD, &base.frame(), VETH_A);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    // IPv6 with an expiring hop limit; a frame that is not IP at all
    assert_passed(
        &fp,
        FROM_POD,
        &v6_tcp("fd00:244::2", "fd00:244::3", MAC_A, 1),
        VETH_A,
        "pass_proto",
    );
    let mut arp = base.frame();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_passed(&fp, FROM_POD, &arp, VETH_A, "pass_proto");
    // too short to hold the ports
    let short = base.frame()[..14 + 20 + 2].to_vec();
    assert_passed(&fp, FROM_POD, &short, VETH_A, "pass_proto");
}

/// A flow conntrack knows (the host stack saw it first and may have NATed
/// it) stays on the kernel path; the same pods on another flow are fast.
/// conntrack lives per network namespace, and BPF_PROG_TEST_RUN runs on the
/// loopback device of the caller's, so this runs on a thread that unshares a
/// private one: lo up, a `ct state` rule to switch conntrack on, one UDP
/// datagram 127.0.0.1:40001 → 127.0.0.2:40002 for an entry. The namespace
/// dies with the thread.
#[test]
fn conntrack_known_flow_takes_the_kernel_path_privileged() {
    need_root!("fastpath_run");
    let mut fp = FastPath::load(&pools(), 0, None).unwrap();
    let map = HashMap::from([
        entry("127.0.0.1", VETH_A, MAC_A, true),
        entry("127.0.0.2", VETH_B, MAC_B, true),
    ]);
    fp.sync(map, &HashSet::new()).unwrap();
    let flow = |sport, dport| V4 {
        proto: UDP,
        sport,
        dport,
        ..V4::tcp("127.0.0.1", "127.0.0.2", MAC_A)
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare(2) with a constant flag; it only changes this
            // thread's network namespace, which nothing else here uses.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
            run("ip", &["link", "set", "lo", "up"]);
            run(
                "nft",
                &["add table ip wfr; \
                   add chain ip wfr pre { type filter hook prerouting priority 0; }; \
                   add rule ip wfr pre ct state new counter"],
            );
            let sock = std::net::UdpSocket::bind("127.0.0.1:40001").unwrap();
            sock.send_to(b"x", "127.0.0.2:40002").unwrap();

            let (verdict, _, counters) = run_prog(&fp, &flow(40001, 40002).frame());
            assert_eq!(verdict, TCX_NEXT, "conntrack knows this flow");
            assert_eq!(counters, vec![("pass_tracked", 1)]);
            let (verdict, _, counters) = run_prog(&fp, &flow(40003, 40004).frame());
            assert_eq!(
                verdict, TC_ACT_REDIRECT,
                "an unknown flow of the same pods is fast"
            );
            assert_eq!(counters, vec![("local", 1)]);
        });
    });
}

fn run_prog(fp: &FastPath, frame: &[u8]) -> (i32, Vec<u8>, Vec<(&'static str, u64)>) {
    run_on(fp, FROM_POD, frame, VETH_A)
}

/// The counters are pinned: with a pin directory they outlive the agent
/// (a reload re-uses them), and a pinned map of another layout (an older
/// weft with other counters) is replaced rather than misread.
#[test]
fn pinned_counters_outlive_a_reload_and_a_changed_layout_is_replaced_privileged() {
    need_root!("fastpath_run");
    let fs = PrivateBpffs::mount("fastpath").unwrap();
    let dir = fs.path().join("node-a");
    let not_ip = {
        let mut f = V4::tcp("10.244.0.2", "10.244.0.3", MAC_A).frame();
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        f
    };
    let bump = |fp: &FastPath| {
        let r = fp
            .program(FROM_POD)
            .unwrap()
            .test_run(&not_ip, &SkbCtx::default(), 5)
            .unwrap();
        assert_eq!(r.retval, TCX_NEXT);
    };

    // every pinned map, weft_stats first; the others (policy, flow
    // counters) share the directory and must do what weft_stats does
    let outcomes = |fp: &FastPath, stats: PinOutcome, others: PinOutcome| {
        let pinned = fp.pinned();
        assert_eq!(pinned[0], ("weft_stats".to_string(), stats));
        for (name, outcome) in &pinned[1..] {
            assert_eq!(*outcome, others, "{name}");
        }
    };
    let first = FastPath::load(&pools(), 0, Some(&dir)).unwrap();
    outcomes(&first, PinOutcome::Created, PinOutcome::Created);
    bump(&first);
    assert_eq!(first.stats().unwrap().pass_proto, 5);
    drop(first);

    let second = FastPath::load(&pools(), 0, Some(&dir)).unwrap();
    outcomes(&second, PinOutcome::Reused, PinOutcome::Reused);
    assert_eq!(
        second.stats().unwrap().pass_proto,
        5,
        "the counters survived"
    );
    bump(&second);
    assert_eq!(second.stats().unwrap().pass_proto, 10);
    drop(second);

    // an older weft's counters map: 3 slots instead of STAT_MAX
    std::fs::remove_file(dir.join("weft_stats")).unwrap();
    let old = bpf::MapDef {
        map_type: 6, // BPF_MAP_TYPE_PERCPU_ARRAY
        key_size: 4,
        value_size: 8,
        max_entries: 3,
        flags: 0,
        pinning: bpf::PIN_BY_NAME,
    };
    drop(bpf::pin::open_or_create(&dir, "weft_stats", old).unwrap());
    let third = FastPath::load(&pools(), 0, Some(&dir)).unwrap();
    outcomes(&third, PinOutcome::Replaced, PinOutcome::Reused);
    assert_eq!(third.stats().unwrap(), Stats::default());
    bump(&third);
    assert_eq!(third.stats().unwrap().pass_proto, 5);
    drop(third);

    bpf::pin::remove_dir(&dir).unwrap();
}

#[test]
fn another_nodes_own_traffic_takes_the_kernel_path_privileged() {
    need_root!("fastpath_run");
    let fp = fast_path();
    // from a pod of another node: into b
    let f = V4::tcp("10.244.7.1", "10.244.0.3", MAC_A).frame();
    let (verdict, _, counters) = run_on(&fp, TO_POD, &f, 1);
    assert_eq!((verdict, counters), (TC_ACT_REDIRECT, vec![("local", 1)]));
    // from the other node itself (its underlay address): conntrack must see
    // the flow, or b's reply, outside the pools, would be masqueraded
    let f = V4::tcp("198.18.0.11", "10.244.0.3", MAC_A).frame();
    assert_passed(&fp, TO_POD, &f, 1, "pass_not_pod");
    let f6 = v6_tcp("2001:2::11", "fd00:244::3", MAC_A, 64);
    assert_passed(&fp, TO_POD, &f6, 1, "pass_not_pod");
}
