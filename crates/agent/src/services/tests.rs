//! The reconciler against the fake kernel: restore, first sync, per-Service
//! updates, failures and retries, the view.

use std::net::IpAddr;

use weft_lb::{
    AddressType, Algorithm, Config, Endpoint, EndpointConditions, EndpointPort, EndpointSlice,
    IdAllocator, LbState, NodeView, Protocol, Service, ServiceName, ServicePort, ServiceType,
    SessionAffinity, TrafficPolicy,
};

use super::reconciler::{FakeKernel, Inputs, Reconciler};
use super::view::services_view;

fn node() -> NodeView {
    NodeView {
        node_name: "n1".into(),
        proxy_name: None,
    }
}

fn config() -> Config {
    Config {
        node: node(),
        algorithm: Algorithm::Random,
    }
}

fn svc(name: &str, ip: &str) -> Service {
    Service {
        namespace: "ns".into(),
        name: name.into(),
        type_: ServiceType::ClusterIP,
        cluster_ips: vec![ip.parse().unwrap()],
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
        labels: Default::default(),
    }
}

fn slice(name: &str, addrs: &[&str]) -> EndpointSlice {
    EndpointSlice {
        service: ServiceName {
            namespace: "ns".into(),
            name: name.into(),
        },
        address_type: AddressType::IPv4,
        endpoints: addrs
            .iter()
            .map(|a| Endpoint {
                addresses: vec![a.parse::<IpAddr>().unwrap()],
                conditions: EndpointConditions::default(),
                node_name: Some("n1".into()),
                zone: None,
            })
            .collect(),
        ports: vec![EndpointPort {
            name: "http".into(),
            port: Some(8080),
            protocol: Protocol::TCP,
        }],
        labels: Default::default(),
    }
}

fn inputs(list: &[(&str, &str, &[&str])]) -> Inputs {
    list.iter()
        .map(|(n, ip, addrs)| (svc(n, ip).id(), (Some(svc(n, ip)), vec![slice(n, addrs)])))
        .collect()
}

fn full_build(i: &Inputs) -> weft_lb::LbMaps {
    let mut st = LbState::new(config(), IdAllocator::default());
    let services: Vec<Service> = i.values().filter_map(|x| x.0.clone()).collect();
    let slices: Vec<EndpointSlice> = i.values().flat_map(|x| x.1.clone()).collect();
    st.reset(&services, &slices).unwrap();
    st.maps().clone()
}

#[test]
fn the_first_round_programs_everything_and_converges() {
    let mut k = FakeKernel::default();
    let mut r = Reconciler::restore(config(), k.maps.clone());
    let i = inputs(&[
        ("a", "10.96.0.10", &["10.244.0.5", "10.244.0.6"]),
        ("b", "10.96.0.11", &["10.244.0.7"]),
    ]);
    let n = r.sync(i.clone(), &mut k);
    assert!(n > 0);
    assert!(r.converged());
    assert_eq!(k.maps, full_build(&i));
    assert_eq!(k.maps.services.len(), 2 + 3, "two masters, three slots");
}

#[test]
fn one_changed_service_costs_only_its_own_writes() {
    let mut k = FakeKernel::default();
    let mut r = Reconciler::restore(config(), k.maps.clone());
    let mut i = inputs(&[
        ("a", "10.96.0.10", &["10.244.0.5"]),
        ("b", "10.96.0.11", &["10.244.0.7"]),
    ]);
    r.sync(i.clone(), &mut k);
    let before = k.writes;
    assert_eq!(
        r.sync(i.clone(), &mut k),
        0,
        "nothing changed, nothing written"
    );
    i.get_mut(&svc("a", "10.96.0.10").id()).unwrap().1 =
        vec![slice("a", &["10.244.0.5", "10.244.0.6"])];
    let n = r.sync(i.clone(), &mut k);
    // the new backend, its slot, the master
    assert_eq!(n, 3);
    assert_eq!(k.writes - before, 3);
    assert!(r.converged());
    assert_eq!(weft_lb::dump_maps(&k.maps), weft_lb::dump_maps(r.maps()));
}

#[test]
fn a_deleted_service_leaves_no_entry_behind() {
    let mut k = FakeKernel::default();
    let mut r = Reconciler::restore(config(), k.maps.clone());
    let mut i = inputs(&[
        ("a", "10.96.0.10", &["10.244.0.5"]),
        ("b", "10.96.0.11", &["10.244.0.7"]),
    ]);
    r.sync(i.clone(), &mut k);
    i.remove(&svc("b", "10.96.0.11").id());
    r.sync(i.clone(), &mut k);
    assert!(r.converged());
    assert_eq!(k.maps, full_build(&i));
    assert!(r.inputs().len() == 1);
}

#[test]
fn a_restart_keeps_every_id_and_removes_what_went_while_away() {
    let mut k = FakeKernel::default();
    let mut r = Reconciler::restore(config(), k.maps.clone());
    let i = inputs(&[
        ("a", "10.96.0.10", &["10.244.0.5", "10.244.0.6"]),
        ("b", "10.96.0.11", &["10.244.0.7"]),
        ("c", "10.96.0.12", &["10.244.0.8"]),
    ]);
    r.sync(i.clone(), &mut k);
    let ids_a = r.ids().service_id(&weft_lb::FrontendAddr {
        addr: "10.96.0.12".parse().unwrap(),
        port: 80,
        proto: Protocol::TCP,
    });
    let be = r.ids().backend_id(&weft_lb::BackendAddr {
        addr: "10.244.0.8".parse().unwrap(),
        port: 8080,
        proto: Protocol::TCP,
    });

    // weftd restarts; meanwhile Service a was deleted
    let mut again = Reconciler::restore(config(), k.maps.clone());
    assert!(!again.synced());
    let mut later = i.clone();
    later.remove(&svc("a", "10.96.0.10").id());
    again.sync(later.clone(), &mut k);
    assert!(again.converged());
    let fa = weft_lb::FrontendAddr {
        addr: "10.96.0.12".parse().unwrap(),
        port: 80,
        proto: Protocol::TCP,
    };
    assert_eq!(again.ids().service_id(&fa), ids_a, "service ID kept");
    assert_eq!(
        again.ids().backend_id(&weft_lb::BackendAddr {
            addr: "10.244.0.8".parse().unwrap(),
            port: 8080,
            proto: Protocol::TCP,
        }),
        be,
        "backend ID kept"
    );
    assert!(
        !k.maps
            .services
            .keys()
            .any(|s| s.addr == "10.96.0.10".parse::<IpAddr>().unwrap()),
        "a's entries went"
    );
}

#[test]
fn a_restart_with_nothing_changed_writes_nothing() {
    let mut k = FakeKernel::default();
    let mut r = Reconciler::restore(config(), k.maps.clone());
    let i = inputs(&[("a", "10.96.0.10", &["10.244.0.5", "10.244.0.6"])]);
    r.sync(i.clone(), &mut k);
    let writes = k.writes;
    let mut again = Reconciler::restore(config(), k.maps.clone());
    assert_eq!(again.sync(i, &mut k), 0);
    assert_eq!(k.writes, writes, "a restart under traffic rewrites nothing");
    assert!(again.converged());
}

#[test]
fn failed_writes_are_retried_until_the_maps_converge() {
    let mut k = FakeKernel::default();
    let mut r = Reconciler::restore(config(), k.maps.clone());
    let mut i = inputs(&[("a", "10.96.0.10", &["10.244.0.5"])]);
    r.sync(i.clone(), &mut k);
    i.insert(
        svc("b", "10.96.0.11").id(),
        (
            Some(svc("b", "10.96.0.11")),
            vec![slice("b", &["10.244.0.7", "10.244.0.8"])],
        ),
    );
    k.fail_after = Some(1);
    r.sync(i.clone(), &mut k);
    assert!(!r.converged());
    assert!(r.progress().pending);
    assert!(r.progress().ops_failed >= 1);
    assert!(
        k.maps.consistency_errors().is_empty(),
        "what the kernel holds is consistent after a failure: {:?}",
        k.maps.consistency_errors()
    );
    k.fail_after = None;
    r.sync(i.clone(), &mut k);
    assert!(r.converged());
    assert!(!r.progress().pending);
    assert_eq!(k.maps, full_build(&i));
}

#[test]
fn a_view_lists_frontends_backends_and_whether_they_are_programmed() {
    let mut k = FakeKernel::default();
    let mut r = Reconciler::restore(config(), k.maps.clone());
    let mut i = inputs(&[("a", "10.96.0.10", &["10.244.0.5", "10.244.0.6"])]);
    i.insert(
        svc("empty", "10.96.0.13").id(),
        (Some(svc("empty", "10.96.0.13")), vec![]),
    );
    let mut headless = svc("hl", "10.96.0.14");
    headless.cluster_ips.clear();
    headless.headless = true;
    i.insert(headless.id(), (Some(headless), vec![]));
    r.sync(i, &mut k);
    let v = services_view(&r, &node());
    assert!(v.synced && v.converged);
    assert_eq!(v.frontends.len(), 2);
    let a = &v.frontends[0];
    assert_eq!(a.service, "ns/a");
    assert_eq!(a.address, "10.96.0.10:80/TCP");
    assert_eq!(a.kind, "ClusterIP");
    assert!(a.programmed);
    assert_eq!(a.backends.len(), 2);
    assert_eq!(a.backends[0].address, "10.244.0.5:8080/TCP");
    assert_eq!(a.backends[0].state, "active");
    assert!(a.backends[0].id.is_some());
    let e = &v.frontends[1];
    assert_eq!(e.verdict, "reject");
    assert_eq!(e.flags, vec!["reject"]);
    assert_eq!(v.skipped, vec!["ns/hl: headless"]);
    assert_eq!(v.maps["service"], 4, "two masters, two slots");
}

#[test]
fn nothing_is_written_while_the_state_cannot_be_built() {
    // two backends, but only one backend ID: the build fails
    let mut k = FakeKernel::default();
    let mut r = Reconciler::restore(config(), k.maps.clone());
    let i = inputs(&[("a", "10.96.0.10", &["10.244.0.5"])]);
    r.sync(i, &mut k);
    let big: Vec<String> = (0..70_000u32)
        .map(|n| format!("10.{}.{}.{}", 100 + n / 65536, (n / 256) % 256, n % 256))
        .collect();
    let refs: Vec<&str> = big.iter().map(String::as_str).collect();
    let i = inputs(&[("a", "10.96.0.10", &refs)]);
    let before = k.maps.clone();
    r.sync(i, &mut k);
    assert_eq!(
        k.maps, before,
        "a Service too large for one entry changes nothing"
    );
    assert!(r
        .progress()
        .refused
        .contains_key(&svc("a", "10.96.0.10").id()));
}
