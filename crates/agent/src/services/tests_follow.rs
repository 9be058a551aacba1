//! The Kubernetes view's Service feed through [`Follow`] into the
//! reconciler: a change to one Service among 1k converts and writes that
//! Service only; a relist converts and compares them all.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU16;

use weft_k8s::{
    Endpoint as K8sEndpoint, EndpointSliceInfo, Index, ObjKey, Protocol as K8sProtocol,
    Service as K8sService, ServicePort as K8sPort,
};
use weft_lb::{Algorithm, Config, LbMaps, NodeView, ServiceName};

use super::follow::{Converted, Follow, Round};
use super::reconciler::{FakeKernel, Reconciler};

const N: u32 = 1000;

fn config() -> Config {
    Config {
        node: NodeView {
            node_name: "n1".into(),
            proxy_name: None,
        },
        algorithm: Algorithm::Random,
    }
}

fn cluster_ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a60_0000 + i))
}

fn service(i: u32, port: u16) -> K8sService {
    K8sService {
        namespace: "ns".into(),
        name: format!("s{i}"),
        service_type: "ClusterIP".into(),
        cluster_ips: vec![cluster_ip(i)],
        external_ips: vec![],
        load_balancer_ips: vec![],
        ports: vec![K8sPort {
            name: "tcp".into(),
            port: NonZeroU16::new(port).unwrap(),
            protocol: K8sProtocol::Tcp,
            target_port: None,
            node_port: None,
        }],
        selector: None,
        session_affinity_seconds: None,
        external_traffic_local: false,
        internal_traffic_local: false,
        publish_not_ready: false,
        labels: Default::default(),
    }
}

/// Service `i`'s slice with `n` of the ten backends.
fn slice(i: u32, n: u8) -> EndpointSliceInfo {
    EndpointSliceInfo {
        namespace: "ns".into(),
        name: format!("s{i}-b"),
        service: Some(format!("s{i}")),
        endpoints: (1..=n)
            .map(|b| K8sEndpoint {
                addr: IpAddr::V4(Ipv4Addr::new(10, 244, 1, b)),
                port: NonZeroU16::new(8080).unwrap(),
                port_name: "tcp".into(),
                proto: K8sProtocol::Tcp,
                ready: true,
                serving: true,
                terminating: false,
                node: Some("n2".into()),
            })
            .collect(),
        labels: Default::default(),
    }
}

fn name(i: u32) -> ServiceName {
    ServiceName {
        namespace: "ns".into(),
        name: format!("s{i}"),
    }
}

/// 1k Services of ten backends, listed, and a reconciler through its
/// first (full) round.
fn listed() -> (Index, Follow, Reconciler, FakeKernel) {
    let index = Index::new("test");
    let follow = Follow::new(index.view().service_feed());
    index.reset((0..N).map(|i| service(i, 80)).collect(), &HashSet::new());
    index.reset((0..N).map(|i| slice(i, 10)).collect(), &HashSet::new());
    let mut f = follow;
    let mut k = FakeKernel::default();
    let mut r = Reconciler::restore(config(), LbMaps::default());
    let Round::Full(inputs) = f.next(false) else {
        panic!("a new feed's first round is full");
    };
    assert_eq!(inputs.len(), N as usize);
    r.sync(inputs, &mut k);
    assert!(r.converged());
    (index, f, r, k)
}

/// The kernel's service entries whose frontend is not `ip`.
fn others(m: &LbMaps, ip: IpAddr) -> Vec<String> {
    m.services
        .iter()
        .filter(|(k, _)| k.addr != ip)
        .map(|e| format!("{e:?}"))
        .collect()
}

#[test]
fn one_slice_change_among_1k_converts_and_writes_one_service() {
    let (index, mut f, mut r, mut k) = listed();
    let start = f.converted();
    assert_eq!(
        start,
        Converted {
            services: N as u64,
            slices: N as u64,
            full_rounds: 1
        }
    );
    let before = k.maps.clone();
    let writes = k.writes;

    index.apply(slice(500, 3));
    let Round::Changed(changed) = f.next(false) else {
        panic!("one slice change is not a full round");
    };
    assert_eq!(changed.keys().collect::<Vec<_>>(), vec![&name(500)]);
    let c = f.converted();
    assert_eq!(
        (c.services - start.services, c.slices - start.slices),
        (1, 1)
    );
    assert_eq!(c.full_rounds, 1);

    let n = r.sync_changed(changed, &mut k);
    // seven slots go; the master is rewritten with its new count (backends
    // stay: all Services share them)
    assert_eq!(n, 8);
    assert_eq!(k.writes - writes, 8);
    assert!(r.converged());
    assert_eq!(
        others(&k.maps, cluster_ip(500)),
        others(&before, cluster_ip(500))
    );
    assert_eq!(
        r.inputs()[&name(500)].1[0].endpoints.len(),
        3,
        "the reconciler holds the new input"
    );

    // nothing changed since: nothing converted, nothing written
    let Round::Changed(none) = f.next(false) else {
        panic!("no change is not a full round");
    };
    assert!(none.is_empty());
    assert_eq!(r.sync_changed(none, &mut k), 0);
    assert_eq!(f.converted().services, c.services);
}

#[test]
fn a_service_change_and_a_delete_convert_only_that_service() {
    let (index, mut f, mut r, mut k) = listed();
    let start = f.converted();
    index.apply(service(7, 8080));
    index.delete::<K8sService>(&ObjKey::new("ns", "s9"));
    index.delete::<EndpointSliceInfo>(&ObjKey::new("ns", "s9-b"));
    let Round::Changed(changed) = f.next(false) else {
        panic!("two changes are not a full round");
    };
    assert_eq!(changed.len(), 2);
    assert_eq!(changed[&name(9)], (None, vec![]), "gone");
    let c = f.converted();
    assert_eq!(
        (c.services - start.services, c.slices - start.slices),
        (1, 1),
        "s7 and its slice; s9 is gone, nothing to convert"
    );
    r.sync_changed(changed, &mut k);
    assert!(r.converged());
    assert!(!r.inputs().contains_key(&name(9)));
    assert!(k.maps.services.keys().all(|s| s.addr != cluster_ip(9)));
    assert!(k
        .maps
        .services
        .keys()
        .any(|s| s.addr == cluster_ip(7) && s.port == 8080));
}

#[test]
fn a_relist_converts_and_compares_every_service() {
    let (index, mut f, mut r, mut k) = listed();
    let start = f.converted();
    let mut slices: Vec<EndpointSliceInfo> = (0..N).map(|i| slice(i, 10)).collect();
    // the relist carries a change no event told of, and misses a slice
    // whose delete was not seen
    slices[3] = slice(3, 2);
    slices.remove(4);
    index.reset(slices, &HashSet::new());
    let Round::Full(inputs) = f.next(false) else {
        panic!("a relist is a full round");
    };
    let c = f.converted();
    assert_eq!(c.services - start.services, N as u64);
    assert_eq!(c.slices - start.slices, N as u64 - 1);
    assert_eq!(c.full_rounds, 2);
    let n = r.sync(inputs, &mut k);
    assert!(n > 0);
    assert!(r.converged());
    assert_eq!(r.inputs()[&name(3)].1[0].endpoints.len(), 2);
    assert!(r.inputs()[&name(4)].1.is_empty());
}

#[test]
fn a_full_round_on_demand_converts_everything_and_writes_nothing_new() {
    let (_index, mut f, mut r, mut k) = listed();
    let Round::Full(inputs) = f.next(true) else {
        panic!("asked for a full round");
    };
    assert_eq!(r.sync(inputs, &mut k), 0);
    assert_eq!(f.converted().full_rounds, 2);
}

#[test]
fn a_refused_service_is_retried_by_changed_rounds_until_it_fits() {
    let (index, mut f, mut r, mut k) = listed();
    // one Service's input the state refuses: more backends than a
    // service entry's count holds
    let mut big = slice(1, 0);
    big.endpoints = (0..70_000u32)
        .map(|n| K8sEndpoint {
            addr: IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + n)),
            ..slice(1, 1).endpoints[0].clone()
        })
        .collect();
    index.apply(big);
    let Round::Changed(changed) = f.next(false) else {
        panic!("one change");
    };
    let before = k.maps.clone();
    r.sync_changed(changed, &mut k);
    assert_eq!(k.maps, before, "nothing written for the refused Service");
    assert!(r.progress().refused.contains_key(&name(1)));
    // the next rounds retry it without the feed telling of it again
    let Round::Changed(none) = f.next(false) else {
        panic!("no change");
    };
    r.sync_changed(none, &mut k);
    assert!(
        r.progress().refused.contains_key(&name(1)),
        "still too large"
    );
    // a change that fits ends the retries
    index.apply(slice(1, 4));
    let Round::Changed(changed) = f.next(false) else {
        panic!("one change");
    };
    r.sync_changed(changed, &mut k);
    assert!(r.progress().refused.is_empty());
    assert!(r.converged());
    assert_eq!(r.inputs()[&name(1)].1[0].endpoints.len(), 4);
}

/// A burst of slice changes gathered into one round is one changed round
/// with one write of every Service's ops, and leaves the maps as one round
/// per change would.
#[test]
fn a_burst_of_slice_changes_is_one_round_and_one_write() {
    let (index, mut f, mut r, mut k) = listed();
    let (_i1, mut f1, r1, k1) = {
        let (i1, mut f1, mut r1, mut k1) = listed();
        for i in 100..150 {
            i1.apply(slice(i, 1 + (i % 9) as u8));
            let Round::Changed(c) = f1.next(false) else {
                panic!("a slice change is not a full round");
            };
            r1.sync_changed(c, &mut k1);
        }
        (i1, f1, r1, k1)
    };
    let (rounds, calls) = (r.progress().rounds, k.write_alls);
    for i in 100..150 {
        index.apply(slice(i, 1 + (i % 9) as u8));
    }
    let Round::Changed(changed) = f.next(false) else {
        panic!("a burst is not a full round");
    };
    assert_eq!(changed.len(), 50);
    let n = r.sync_changed(changed, &mut k);
    assert!(n > 50, "{n}");
    assert_eq!(r.progress().rounds - rounds, 1);
    assert_eq!(k.write_alls - calls, 1, "one write of the whole round");
    assert!(r.converged() && r1.converged());
    assert_eq!(k.maps, k1.maps);
    let Round::Changed(none) = f1.next(false) else {
        panic!("no change is not a full round");
    };
    assert!(none.is_empty());
    assert_eq!(r1.progress().ops_applied, r.progress().ops_applied);
}

/// The gathering before a round: it ends when the view is quiet, and a
/// stream of changes that never pauses cannot hold the round back beyond
/// its bound.
#[test]
fn gathering_ends_when_quiet_and_within_its_bound() {
    use std::time::{Duration, Instant};
    let ms = Duration::from_millis;
    // quiet at once: no wait beyond the first
    let mut calls = 0;
    let g = super::gather(
        &mut |seen, _| {
            calls += 1;
            seen
        },
        7,
        ms(10),
        ms(100),
    );
    assert_eq!((g, calls), (7, 1));
    // three more changes, then quiet
    let mut left = 3;
    let g = super::gather(
        &mut |seen, _| {
            if left == 0 {
                return seen;
            }
            left -= 1;
            seen + 1
        },
        7,
        ms(10),
        ms(100),
    );
    assert_eq!(g, 10);
    // a change every ms forever: the bound ends it
    let t = Instant::now();
    let g = super::gather(
        &mut |seen, timeout| {
            assert!(timeout <= ms(10));
            std::thread::sleep(ms(1));
            seen + 1
        },
        0,
        ms(10),
        ms(30),
    );
    let took = t.elapsed();
    assert!(g >= 10, "{g}");
    assert!(took >= ms(30) && took < ms(500), "{took:?}");
}
