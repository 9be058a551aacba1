//! The Service programs pass the verifier, their maps take what weft_lb
//! builds and give it back (the read-back weftd restores IDs from), and the
//! compiled maps have the sizes of the Rust types weftd uses.

mod common;
#[path = "services/support.rs"]
mod support;

use std::mem::size_of;

use common::*;
use support::*;
use weft_bpf_abi::*;
use weft_datapath::bpf::{PinOutcome, PrivateBpffs};
use weft_datapath::services::{ServiceProgramOptions, ServicePrograms, ServiceTable};
use weft_lb::{Algorithm, IdAllocator, Protocol, ServiceType, SessionAffinity, TrafficPolicy};

/// A mix: dual-protocol NodePort with Local policy (two scopes), external
/// and LB addresses, affinity, IPv6, a Service without endpoints.
fn mix() -> (Vec<weft_lb::Service>, Vec<weft_lb::EndpointSlice>) {
    let mut web = service(
        "web",
        ServiceType::LoadBalancer,
        "10.96.0.10",
        &[
            (Protocol::TCP, 80, Some(30080)),
            (Protocol::UDP, 53, Some(30053)),
        ],
    );
    web.external_traffic_policy = TrafficPolicy::Local;
    web.external_ips = vec![ip("198.51.100.1")];
    web.load_balancer_ips = vec![ip("203.0.113.9")];
    web.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 10800,
    };
    let v6 = service(
        "v6",
        ServiceType::ClusterIP,
        "fd00:96::1",
        &[(Protocol::TCP, 443, None)],
    );
    let empty = service(
        "empty",
        ServiceType::ClusterIP,
        "10.96.0.11",
        &[(Protocol::TCP, 80, None)],
    );
    let ports = [(Protocol::TCP, 8080), (Protocol::UDP, 5353)];
    (
        vec![web, v6, empty],
        vec![
            slice(
                "web",
                &[("10.244.0.5", NODE), ("10.244.1.5", "node-b")],
                &ports,
            ),
            slice(
                "v6",
                &[("fd00:244::5", NODE), ("fd00:244:1::5", "node-b")],
                &[(Protocol::TCP, 8443)],
            ),
        ],
    )
}

#[test]
fn service_maps_read_back_what_weft_lb_built_privileged() {
    need_root!("service_maps_read_back_what_weft_lb_built_privileged");
    let (svcs, slices) = mix();
    for alg in [Algorithm::Random, Algorithm::maglev()] {
        let p = ServicePrograms::load(&ServiceProgramOptions::default()).unwrap();
        let mut ids = IdAllocator::default();
        let desired = install(&p, &svcs, &slices, alg, &mut ids);
        assert!(desired.services.len() > 20, "{}", desired.services.len());
        let back = p.maps().read_back().unwrap();
        assert_eq!(back, desired);
        // a restarted agent takes the same IDs back
        assert_eq!(IdAllocator::restore(&back), ids);
        // and removing everything empties the maps
        let mut none = IdAllocator::default();
        install(&p, &[], &[], alg, &mut none);
        assert_eq!(p.maps().read_back().unwrap(), weft_lb::LbMaps::default());
    }
}

/// weftd writes runs of one map's upserts or deletes as one batch
/// (BPF_MAP_UPDATE_BATCH / DELETE_BATCH), or one entry at a time where the
/// kernel refuses batches: both ways the maps end up as weft_lb built them,
/// through a build, a change and a removal of everything.
#[test]
fn service_maps_take_batched_and_single_writes_alike_privileged() {
    need_root!("service_maps_take_batched_and_single_writes_alike_privileged");
    let (svcs, slices) = mix();
    let mut fewer = slices.clone();
    fewer[0].endpoints.truncate(1);
    let mut results = Vec::new();
    for batches in [true, false] {
        let p = ServicePrograms::load(&ServiceProgramOptions::default()).unwrap();
        let mut maps = p.maps();
        maps.set_batches(batches);
        let mut ids = IdAllocator::default();
        let mut held = Vec::new();
        for (s, e) in [
            (&svcs[..], &slices),
            (&svcs[..], &fewer),
            (&[][..], &vec![]),
        ] {
            let desired = weft_lb::build(s, e, &config(Algorithm::Random), &mut ids).unwrap();
            let mut current = maps.read_back().unwrap();
            let round = weft_lb::reconcile(&desired.maps, &mut current, &mut maps);
            assert!(round.is_clean(), "batches {batches}: {:?}", round.failed);
            assert!(round.applied > 0);
            let back = maps.read_back().unwrap();
            assert_eq!(back, desired.maps, "batches {batches}");
            held.push(back);
        }
        // this kernel (5.6+) takes batches: none was refused
        assert_eq!(maps.batches(), batches);
        results.push(held);
    }
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0][2], weft_lb::LbMaps::default());
}

#[test]
fn service_maps_survive_a_reload_with_a_pin_dir_privileged() {
    need_root!("service_maps_survive_a_reload_with_a_pin_dir_privileged");
    let bpffs = PrivateBpffs::mount("svcpin").unwrap();
    let opts = ServiceProgramOptions {
        pin_dir: Some(bpffs.path()),
        share: None,
    };
    let (svcs, slices) = mix();
    let first = ServicePrograms::load(&opts).unwrap();
    assert!(first
        .pinned()
        .iter()
        .all(|(_, o)| *o == PinOutcome::Created));
    let desired = install(
        &first,
        &svcs,
        &slices,
        Algorithm::maglev(),
        &mut IdAllocator::default(),
    );
    let mut maps = first.maps();
    maps.set_node_addrs(&[ip("198.18.0.1")]).unwrap();
    drop(first);
    let second = ServicePrograms::load(&opts).unwrap();
    let pinned = second.pinned();
    for name in [
        "weft_lb_services",
        "weft_lb_backends",
        "weft_lb_nat",
        "weft_lb_affinity",
    ] {
        assert!(
            pinned
                .iter()
                .any(|(n, o)| n == name && *o == PinOutcome::Reused),
            "{name}: {pinned:?}"
        );
    }
    assert_eq!(second.maps().read_back().unwrap(), desired);
}

#[test]
fn cgroup_root_must_be_a_cgroup2_directory_privileged() {
    need_root!("cgroup_root_must_be_a_cgroup2_directory_privileged");
    let mut p = ServicePrograms::load(&ServiceProgramOptions::default()).unwrap();
    let e = p.attach_cgroup(std::path::Path::new("/tmp")).unwrap_err();
    assert!(e.to_string().contains("not a cgroup v2 directory"), "{e}");
    assert!(p.cgroup().is_none());
}

/// The compiled objects' maps have the key and value sizes of the Rust
/// types ServiceMaps reads and writes them with.
#[test]
fn compiled_service_maps_match_the_rust_types() {
    use weft_datapath::services::programs::{NODEPORT_OBJECT, SOCK_LB_OBJECT};
    let want = [
        (
            "weft_lb_services",
            size_of::<LbSvcKey>(),
            size_of::<LbSvcValue>(),
        ),
        ("weft_lb_backends", 4, size_of::<LbBackend>()),
        ("weft_lb_revnat", 4, size_of::<LbRevnat>()),
        (
            "weft_lb_maglev",
            size_of::<LbMaglevKey>(),
            size_of::<LbMaglev>(),
        ),
        ("weft_lb_node", size_of::<LbNodeKey>(), 4),
        (
            "weft_lb_affinity",
            size_of::<LbAffinityKey>(),
            size_of::<LbAffinityValue>(),
        ),
        ("weft_lb_stats", 4, 8),
        (
            "weft_lb_sk_revnat",
            size_of::<LbSkKey>(),
            size_of::<LbRevnat>(),
        ),
        (
            "weft_lb_nat",
            size_of::<LbNatKey>(),
            size_of::<LbNatValue>(),
        ),
    ];
    let mut seen = 0;
    for obj in [SOCK_LB_OBJECT, NODEPORT_OBJECT] {
        let parsed = weft_datapath::bpf::parse_object(obj).unwrap();
        for (name, def) in parsed.map_defs() {
            if let Some((_, k, v)) = want.iter().find(|w| w.0 == name) {
                assert_eq!(
                    (def.key_size as usize, def.value_size as usize),
                    (*k, *v),
                    "{name}"
                );
                seen += 1;
            }
        }
    }
    assert_eq!(
        seen,
        7 * 2 + 2,
        "lib/lb.h's maps in both objects, one own map each"
    );
}
