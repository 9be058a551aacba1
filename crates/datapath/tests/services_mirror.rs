//! The programs decide as weft_lb::select says: for many flows the NodePort
//! program's backend equals `select::pick` on the same maps with the
//! program's 5-tuple hash (random slots and Maglev), and ClientIP affinity
//! reuses, expires and drops entries as `select::affinity` does. Under
//! BPF_PROG_TEST_RUN in a private node netns; without root they skip.

mod common;
#[path = "services/node.rs"]
mod node;
#[path = "services/packets.rs"]
mod packets;
#[path = "services/support.rs"]
mod support;

use std::net::SocketAddr;

use common::*;
use node::*;
use packets::{sa, TCP};
use support::*;
use weft_bpf_abi::{LbAffinityKey, LbAffinityValue, AF_INET};
use weft_datapath::bpf::TypedMap;
use weft_datapath::services::encode::addr_bytes;
use weft_datapath::services::monotonic_secs;
use weft_lb::maps::ServiceKey;
use weft_lb::select::{affinity, pick, slot_backends, AffinityDecision, AffinityValue};
use weft_lb::{Algorithm, IdAllocator, LbMaps, Protocol, Scope, SessionAffinity, TrafficPolicy};

fn mix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// nodeport.bpf.c's np_hash: FNV-1a over the 32-bit words of the key as
/// the program reads them, then murmur3's finaliser.
fn np_hash(src: SocketAddr, dst: SocketAddr, proto: u8) -> u32 {
    let word = |b: &[u8; 16], i: usize| u32::from_ne_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
    let port = |p: u16| u32::from(u16::from_ne_bytes(p.to_be_bytes()));
    let (_, s) = addr_bytes(src.ip());
    let (_, d) = addr_bytes(dst.ip());
    let mut h: u32 = 0x811c_9dc5;
    for b in [&s, &d] {
        for i in 0..4 {
            h = (h ^ word(b, i)).wrapping_mul(0x0100_0193);
        }
    }
    h = (h ^ ((port(src.port()) << 16) | port(dst.port()))).wrapping_mul(0x0100_0193);
    h = (h ^ u32::from(proto)).wrapping_mul(0x0100_0193);
    mix32(h)
}

fn master(port: u16) -> ServiceKey {
    ServiceKey {
        addr: ip("0.0.0.0"),
        port,
        proto: Protocol::TCP,
        scope: Scope::External,
        slot: 0,
    }
}

/// What select.rs picks for the flow, as a socket address.
fn expected(maps: &LbMaps, port: u16, src: SocketAddr, dst: SocketAddr) -> SocketAddr {
    let id = pick(maps, &master(port), np_hash(src, dst, TCP)).expect("a backend");
    let b = maps.backends[&id];
    SocketAddr::new(b.addr, b.port)
}

#[test]
fn nodeport_picks_what_select_picks_privileged() {
    need_root!("nodeport_picks_what_select_picks_privileged");
    for (tag, alg) in [
        ("mirrorr", Algorithm::Random),
        ("mirrorm", Algorithm::maglev()),
    ] {
        let n = node(tag);
        let svc = nodeport(
            "mir",
            "10.96.0.50",
            Protocol::TCP,
            30200,
            TrafficPolicy::Local,
        );
        let eps: Vec<String> = (2..9).map(|i| format!("10.244.0.{i}")).collect();
        let eps: Vec<(&str, &str)> = eps.iter().map(|e| (e.as_str(), NODE)).collect();
        let maps = install(
            &n.progs,
            &[svc],
            &[slice("mir", &eps, &[(Protocol::TCP, 8080)])],
            alg,
            &mut IdAllocator::default(),
        );
        let fe = sa("198.18.0.1:30200");
        let mut agree = 0;
        for i in 0..400u16 {
            let src: SocketAddr = format!("198.18.{}.{}:{}", i % 3, 10 + i % 200, 1024 + i * 37)
                .parse()
                .unwrap();
            let (_, _, got) = n.inbound(&src.to_string(), &fe.to_string(), TCP);
            assert_eq!(got, expected(&maps, 30200, src, fe), "{tag}: flow {src}");
            agree += 1;
        }
        assert_eq!(agree, 400);
    }
}

#[test]
fn affinity_reuses_expires_and_drops_entries_as_select_says_privileged() {
    need_root!("affinity_reuses_expires_and_drops_entries_as_select_says_privileged");
    let n = node("mirroraff");
    let mut svc = nodeport(
        "aff",
        "10.96.0.51",
        Protocol::TCP,
        30201,
        TrafficPolicy::Local,
    );
    svc.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 60,
    };
    let eps: Vec<String> = (2..6).map(|i| format!("10.244.0.{i}")).collect();
    let eps: Vec<(&str, &str)> = eps.iter().map(|e| (e.as_str(), NODE)).collect();
    let maps = install(
        &n.progs,
        &[svc],
        &[slice("aff", &eps, &[(Protocol::TCP, 8080)])],
        Algorithm::Random,
        &mut IdAllocator::default(),
    );
    let (src, fe) = (sa("198.18.0.77:40000"), sa("198.18.0.1:30201"));
    let hashed = expected(&maps, 30201, src, fe);
    let svc_id = maps.services[&master(30201)].rev_nat_id;
    let slots = slot_backends(&maps, &master(30201));
    let other = *slots
        .iter()
        .find(|id| {
            let b = maps.backends[*id];
            SocketAddr::new(b.addr, b.port) != hashed
        })
        .unwrap();
    let other_addr = SocketAddr::new(maps.backends[&other].addr, maps.backends[&other].port);
    let aff =
        TypedMap::<LbAffinityKey, LbAffinityValue>::new(n.progs.map("weft_lb_affinity").unwrap())
            .unwrap();
    let (_, client) = addr_bytes(src.ip());
    let key = LbAffinityKey {
        client,
        family: AF_INET,
        pad: 0,
        service_id: svc_id,
    };
    let flow = || {
        n.clear_nat();
        n.inbound(&src.to_string(), &fe.to_string(), TCP).2
    };
    let set = |backend_id: u32, last_seen: u64| {
        aff.insert(
            &key,
            &LbAffinityValue {
                backend_id,
                pad: 0,
                last_seen,
            },
        )
        .unwrap();
    };
    // no entry: the hash decides, and the choice is recorded
    assert_eq!(flow(), hashed);
    let e = aff.get(&key).unwrap().expect("recorded");
    assert!(monotonic_secs().abs_diff(e.last_seen) <= 2);
    // (backend, age) -> what select.rs decides, and what the program does
    let now = monotonic_secs();
    for (id, last_seen, want) in [
        (other, now, other_addr),       // fresh: reused
        (other, now - 60, other_addr),  // exactly the timeout: reused
        (other, now - 61, hashed),      // older: chosen again
        (other, now + 100, other_addr), // clock went back: "just seen"
        (999_999, now, hashed),         // not among the slots: chosen again
    ] {
        let decided = affinity(
            Some(AffinityValue {
                backend_id: id,
                last_seen,
            }),
            monotonic_secs(),
            60,
            |b| slots.contains(&b),
        );
        let model = match decided {
            AffinityDecision::Reuse(b) => {
                let b = maps.backends[&b];
                SocketAddr::new(b.addr, b.port)
            }
            AffinityDecision::Select => hashed,
        };
        assert_eq!(model, want, "select.rs for ({id}, {last_seen})");
        set(id, last_seen);
        assert_eq!(flow(), want, "the program for ({id}, {last_seen})");
    }
}
