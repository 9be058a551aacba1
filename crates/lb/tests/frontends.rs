//! Which frontends a Service yields: types, ports, families, external and
//! load-balancer addresses, and the Services left alone.

mod common;
use common::*;
use weft_lb::maps::flags;
use weft_lb::*;

const HTTP: &[(&str, Protocol, u16)] = &[("http", TCP, 80)];
const HTTP_EP: &[(&str, Protocol, u16)] = &[("http", TCP, 8080)];

fn addrs(d: &Desired) -> Vec<String> {
    d.frontends
        .iter()
        .map(|f| format!("{} {:?} {:?}", f.addr, f.kind, f.scope))
        .collect()
}

#[test]
fn cluster_ip_service_has_one_frontend_per_port() {
    let s = service(
        "ns/dns",
        &["10.96.0.10"],
        &[
            ("dns", UDP, 53),
            ("dns-tcp", TCP, 53),
            ("metrics", TCP, 9153),
        ],
    );
    let sl = slice(
        "ns/dns",
        &[
            ("dns", UDP, 5353),
            ("dns-tcp", TCP, 5353),
            ("metrics", TCP, 9153),
        ],
        vec![ep("10.0.0.1", "n")],
    );
    let d = desired(&[s], &[sl]);
    assert_eq!(
        addrs(&d),
        [
            "10.96.0.10:53/TCP ClusterIp External",
            "10.96.0.10:53/UDP ClusterIp External",
            "10.96.0.10:9153/TCP ClusterIp External",
        ]
    );
    assert_eq!(
        backends(fe(&d, "10.96.0.10:53/UDP", Scope::External)),
        ["10.0.0.1:5353/UDP"]
    );
    assert_eq!(
        backends(fe(&d, "10.96.0.10:53/TCP", Scope::External)),
        ["10.0.0.1:5353/TCP"]
    );
    // One service ID per frontend address, shared by nothing else.
    let ids: std::collections::BTreeSet<_> = d.maps.rev_nat.keys().collect();
    assert_eq!(ids.len(), 3);
}

#[test]
fn sctp_is_load_balanced_like_the_others() {
    let d = desired(
        &[service("ns/s", &["10.96.0.5"], &[("", SCTP, 3868)])],
        &[slice(
            "ns/s",
            &[("", SCTP, 3868)],
            vec![ep("10.0.0.1", "n")],
        )],
    );
    assert_eq!(
        backends(fe(&d, "10.96.0.5:3868/SCTP", Scope::External)),
        ["10.0.0.1:3868/SCTP"]
    );
}

#[test]
fn slice_port_of_another_protocol_does_not_match() {
    let d = desired(
        &[service("ns/s", &["10.96.0.5"], &[("", UDP, 53)])],
        &[slice("ns/s", &[("", TCP, 53)], vec![ep("10.0.0.1", "n")])],
    );
    assert_eq!(
        fe(&d, "10.96.0.5:53/UDP", Scope::External).verdict,
        Verdict::Reject
    );
}

#[test]
fn named_target_port_resolves_per_backend_through_its_slice() {
    // targetPort: http resolves to 8080 on old pods and 9090 on new ones;
    // the controller puts them in two slices, both ports named "http".
    let mut s = service("ns/web", &["10.96.0.10"], HTTP);
    s.ports[0].target_port = Some(TargetPort::Name("http".into()));
    let old = slice("ns/web", &[("http", TCP, 8080)], vec![ep("10.0.0.1", "n")]);
    let new = slice("ns/web", &[("http", TCP, 9090)], vec![ep("10.0.0.2", "n")]);
    let d = desired(&[s], &[old, new]);
    assert_eq!(
        backends(fe(&d, "10.96.0.10:80/TCP", Scope::External)),
        ["10.0.0.1:8080/TCP", "10.0.0.2:9090/TCP"]
    );
}

#[test]
fn the_slice_port_is_matched_by_the_service_port_name() {
    let s = service(
        "ns/web",
        &["10.96.0.10"],
        &[("http", TCP, 80), ("admin", TCP, 81)],
    );
    let sl = slice(
        "ns/web",
        &[("admin", TCP, 9000), ("http", TCP, 8080)],
        vec![ep("10.0.0.1", "n")],
    );
    let d = desired(&[s], &[sl]);
    assert_eq!(
        backends(fe(&d, "10.96.0.10:80/TCP", Scope::External)),
        ["10.0.0.1:8080/TCP"]
    );
    assert_eq!(
        backends(fe(&d, "10.96.0.10:81/TCP", Scope::External)),
        ["10.0.0.1:9000/TCP"]
    );
}

#[test]
fn dual_stack_service_gets_a_frontend_per_family_with_that_familys_backends() {
    let mut s = service("ns/web", &["10.96.0.10", "fd00:96::10"], HTTP);
    s.type_ = ServiceType::NodePort;
    s.ports[0].node_port = Some(30080);
    let v4 = slice("ns/web", HTTP_EP, vec![ep("10.0.0.1", "n")]);
    let v6 = slice("ns/web", HTTP_EP, vec![ep("fd00::1", "n")]);
    let d = desired(&[s], &[v4, v6]);
    assert_eq!(
        backends(fe(&d, "10.96.0.10:80/TCP", Scope::External)),
        ["10.0.0.1:8080/TCP"]
    );
    assert_eq!(
        backends(fe(&d, "[fd00:96::10]:80/TCP", Scope::External)),
        ["[fd00::1]:8080/TCP"]
    );
    assert_eq!(
        backends(fe(&d, "0.0.0.0:30080/TCP", Scope::External)),
        ["10.0.0.1:8080/TCP"]
    );
    assert_eq!(
        backends(fe(&d, "[::]:30080/TCP", Scope::External)),
        ["[fd00::1]:8080/TCP"]
    );
}

#[test]
fn single_stack_service_has_no_frontend_in_the_other_family() {
    let mut s = service("ns/web", &["10.96.0.10"], HTTP);
    s.external_ips = vec![ip("198.51.100.7"), ip("2001:db8::7")];
    let d = desired(&[s], &[slice("ns/web", HTTP_EP, vec![ep("10.0.0.1", "n")])]);
    assert_eq!(
        addrs(&d),
        [
            "10.96.0.10:80/TCP ClusterIp External",
            "198.51.100.7:80/TCP ExternalIp External"
        ]
    );
}

#[test]
fn node_port_and_load_balancer_frontends() {
    let mut s = service("ns/web", &["10.96.0.10"], HTTP);
    s.type_ = ServiceType::LoadBalancer;
    s.ports[0].node_port = Some(30080);
    s.load_balancer_ips = vec![ip("203.0.113.10")];
    s.external_ips = vec![ip("198.51.100.7")];
    let d = desired(
        &[s.clone()],
        &[slice("ns/web", HTTP_EP, vec![ep("10.0.0.1", "n")])],
    );
    assert_eq!(
        addrs(&d),
        [
            "0.0.0.0:30080/TCP NodePort External",
            "10.96.0.10:80/TCP ClusterIp External",
            "198.51.100.7:80/TCP ExternalIp External",
            "203.0.113.10:80/TCP LoadBalancer External",
        ]
    );
    assert!(d
        .frontends
        .iter()
        .all(|f| backends(f) == ["10.0.0.1:8080/TCP"]));

    // Load-balancer IPs belong to type LoadBalancer only, node ports to
    // NodePort and LoadBalancer.
    s.type_ = ServiceType::ClusterIP;
    let d = desired(&[s], &[]);
    assert_eq!(
        addrs(&d),
        [
            "10.96.0.10:80/TCP ClusterIp External",
            "198.51.100.7:80/TCP ExternalIp External"
        ]
    );
}

#[test]
fn load_balancer_without_node_ports_has_none() {
    // allocateLoadBalancerNodePorts: false leaves nodePort unset.
    let mut s = service("ns/web", &["10.96.0.10"], HTTP);
    s.type_ = ServiceType::LoadBalancer;
    s.load_balancer_ips = vec![ip("203.0.113.10")];
    let d = desired(&[s], &[]);
    assert!(d.frontends.iter().all(|f| f.kind != FrontendKind::NodePort));
}

#[test]
fn external_name_headless_and_other_proxies_are_left_alone() {
    let mut ext = service("ns/ext", &[], HTTP);
    ext.type_ = ServiceType::ExternalName;
    let mut headless = service("ns/headless", &[], HTTP);
    headless.headless = true;
    let mut labelled = service("ns/labelled", &["10.96.0.11"], HTTP);
    labelled.labels.insert(LABEL_HEADLESS.into(), String::new());
    let mut other = service("ns/other", &["10.96.0.12"], HTTP);
    other
        .labels
        .insert(LABEL_SERVICE_PROXY_NAME.into(), "someone-else".into());
    let mine = service("ns/mine", &["10.96.0.13"], HTTP);
    let d = desired(&[ext, headless, labelled, other.clone(), mine], &[]);
    assert_eq!(addrs(&d), ["10.96.0.13:80/TCP ClusterIp External"]);
    assert_eq!(
        d.skipped,
        [
            Skipped::ExternalName(name("ns/ext")),
            Skipped::Headless(name("ns/headless")),
            Skipped::Headless(name("ns/labelled")),
            Skipped::OtherProxy(name("ns/other")),
        ]
    );

    // A proxy given that name takes exactly the Services labelled for it.
    let mut cfg = config(Algorithm::Random);
    cfg.node.proxy_name = Some("someone-else".into());
    let mine = service("ns/mine", &["10.96.0.13"], HTTP);
    let d = build(&[other, mine], &[], &cfg, &mut IdAllocator::default()).unwrap();
    assert_eq!(addrs(&d), ["10.96.0.12:80/TCP ClusterIp External"]);
    assert_eq!(d.skipped, [Skipped::OtherProxy(name("ns/mine"))]);
}

#[test]
fn slices_labelled_headless_are_ignored() {
    let mut sl = slice("ns/web", HTTP_EP, vec![ep("10.0.0.1", "n")]);
    sl.labels.insert(LABEL_HEADLESS.into(), String::new());
    let d = desired(&[service("ns/web", &["10.96.0.10"], HTTP)], &[sl]);
    assert_eq!(
        fe(&d, "10.96.0.10:80/TCP", Scope::External).verdict,
        Verdict::Reject
    );
}

#[test]
fn two_services_on_one_external_ip_and_port_first_by_name_wins() {
    let mut a = service("ns/a", &["10.96.0.1"], HTTP);
    a.external_ips = vec![ip("198.51.100.7")];
    let mut b = service("ns/b", &["10.96.0.2"], HTTP);
    b.external_ips = vec![ip("198.51.100.7")];
    let d = desired(&[b.clone(), a.clone()], &[]);
    assert_eq!(
        fe(&d, "198.51.100.7:80/TCP", Scope::External).service,
        name("ns/a")
    );
    assert!(
        matches!(&d.skipped[..], [Skipped::Conflict { dropped, .. }] if *dropped == name("ns/b"))
    );
    assert_eq!(d, desired(&[a, b], &[]));
}

#[test]
fn session_affinity_is_set_on_every_frontend_of_the_service() {
    let mut s = service("ns/web", &["10.96.0.10"], HTTP);
    s.type_ = ServiceType::NodePort;
    s.ports[0].node_port = Some(30080);
    s.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 60,
    };
    let d = desired(&[s], &[slice("ns/web", HTTP_EP, vec![ep("10.0.0.1", "n")])]);
    for (k, v) in d.maps.services.iter().filter(|(k, _)| k.slot == 0) {
        assert_eq!(v.affinity_timeout, 60, "{k:?}");
        assert_ne!(v.flags & flags::AFFINITY, 0, "{k:?}");
    }
}

#[test]
fn input_order_does_not_matter() {
    let mut a = service(
        "ns/a",
        &["10.96.0.1", "fd00:96::1"],
        &[("http", TCP, 80), ("dns", UDP, 53)],
    );
    a.type_ = ServiceType::NodePort;
    a.ports[0].node_port = Some(30001);
    let b = service("ns/b", &["10.96.0.2"], HTTP);
    let slices = vec![
        slice(
            "ns/a",
            &[("http", TCP, 8080), ("dns", UDP, 53)],
            vec![ep("10.0.0.1", "n"), ep("10.0.0.2", NODE)],
        ),
        slice(
            "ns/a",
            &[("http", TCP, 8080), ("dns", UDP, 53)],
            vec![ep("fd00::1", "n")],
        ),
        slice(
            "ns/b",
            HTTP_EP,
            vec![ep("10.0.0.3", "n"), ep("10.0.0.4", "n")],
        ),
    ];
    let want = desired(&[a.clone(), b.clone()], &slices);
    let mut rev = slices.clone();
    rev.reverse();
    for s in &mut rev {
        s.endpoints.reverse();
    }
    assert_eq!(desired(&[b, a], &rev), want);
}

#[test]
fn a_conflict_drops_every_scope_of_the_losing_services_address() {
    // ns/a holds the external IP with one scope; ns/b (Local, two scopes)
    // must not slip its internal scope in beside it.
    let mut a = service("ns/a", &["10.96.0.1"], HTTP);
    a.external_ips = vec![ip("198.51.100.7")];
    let mut b = service("ns/b", &["10.96.0.2"], HTTP);
    b.external_ips = vec![ip("198.51.100.7")];
    b.external_traffic_policy = TrafficPolicy::Local;
    let d = desired(&[a, b], &[]);
    let on_ip: Vec<_> = d
        .frontends
        .iter()
        .filter(|f| f.addr.addr == ip("198.51.100.7"))
        .collect();
    assert_eq!(on_ip.len(), 1);
    assert_eq!(on_ip[0].service, name("ns/a"));
    assert!(!on_ip[0].two_scopes);
    assert_eq!(d.skipped.len(), 1, "{:?}", d.skipped);
}
