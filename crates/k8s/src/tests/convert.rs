use std::num::NonZeroU16;

use k8s_openapi::api::networking::v1 as networking;

use super::*;
use crate::convert::Convert;
use crate::model::*;

fn port(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap()
}

#[test]
fn pod_keeps_what_policy_needs() {
    let mut pod = mk_pod(
        "shop",
        "web-1",
        &[("app", "web")],
        &["10.244.0.5", "fd00::5"],
    );
    pod.metadata.deletion_timestamp = serde_json::from_str("\"2026-12-03T10:00:00Z\"").ok();
    assert!(pod.metadata.deletion_timestamp.is_some());
    let p = pod.convert().unwrap();
    assert_eq!(
        (p.namespace.as_str(), p.name.as_str(), p.uid.as_str()),
        ("shop", "web-1", "uid-web-1")
    );
    assert_eq!(p.labels, labels(&[("app", "web")]));
    assert_eq!(
        p.ips,
        vec![
            "10.244.0.5".parse::<std::net::IpAddr>().unwrap(),
            "fd00::5".parse().unwrap()
        ]
    );
    // unnamed ports are not named ports; sorted by name
    assert_eq!(
        p.named_ports,
        vec![
            NamedPort {
                name: "dns".into(),
                port: port(53),
                protocol: Protocol::Udp
            },
            NamedPort {
                name: "http".into(),
                port: port(8080),
                protocol: Protocol::Tcp
            },
        ]
    );
    assert!(!p.host_network);
    assert!(p.terminating);
    assert_eq!((p.node.as_str(), p.phase.as_str()), ("node-a", "Running"));
}

#[test]
fn pod_without_addresses_yet_is_fine_and_a_bad_address_is_named() {
    let p = mk_pod("a", "pending", &[], &[]).convert().unwrap();
    assert!(p.ips.is_empty());
    let e = mk_pod("a", "x", &[], &["10.0.0.300"])
        .convert()
        .unwrap_err();
    assert_eq!(e.field, "status.podIPs");
    let mut nameless = mk_pod("a", "x", &[], &[]);
    nameless.metadata.name = None;
    assert_eq!(nameless.convert().unwrap_err().field, "metadata.name");
}

fn policy(json: serde_json::Value) -> Result<NetPolicy, crate::convert::ConvertError> {
    let mut v = serde_json::json!({"metadata": {"name": "p", "namespace": "ns"}});
    v["spec"] = json;
    serde_json::from_value::<networking::NetworkPolicy>(v)
        .unwrap()
        .convert()
}

#[test]
fn policy_keeps_missing_apart_from_empty() {
    let p = policy(serde_json::json!({
        "podSelector": {},
        "ingress": [
            {},
            {"from": [], "ports": []},
            {"from": [{"namespaceSelector": {}}, {"podSelector": {"matchLabels": {"a": "b"}}}]}
        ]
    }))
    .unwrap();
    assert!(p.pod_selector.is_empty());
    assert_eq!(p.egress, None);
    let ing = p.ingress.unwrap();
    assert_eq!((ing[0].from.clone(), ing[0].ports.clone()), (None, None));
    assert_eq!(
        (ing[1].from.clone(), ing[1].ports.clone()),
        (Some(vec![]), Some(vec![]))
    );
    let peers = ing[2].from.clone().unwrap();
    // {} namespaceSelector: every namespace; absent pod selector
    assert_eq!(peers[0].namespace_selector, Some(LabelSelector::default()));
    assert_eq!(peers[0].pod_selector, None);
    // absent namespaceSelector: the policy's own namespace
    assert_eq!(peers[1].namespace_selector, None);
    assert_eq!(
        peers[1].pod_selector.as_ref().unwrap().match_labels,
        labels(&[("a", "b")])
    );
}

#[test]
fn policy_types_default_as_the_api_says() {
    let ingress_only = policy(serde_json::json!({"podSelector": {}})).unwrap();
    assert_eq!(ingress_only.policy_types, None);
    assert_eq!(
        ingress_only.effective_policy_types(),
        vec![PolicyType::Ingress]
    );
    let with_egress = policy(serde_json::json!({"podSelector": {}, "egress": [{}]})).unwrap();
    assert_eq!(
        with_egress.effective_policy_types(),
        vec![PolicyType::Ingress, PolicyType::Egress]
    );
    let deny_egress =
        policy(serde_json::json!({"podSelector": {}, "policyTypes": ["Egress"]})).unwrap();
    assert_eq!(
        deny_egress.effective_policy_types(),
        vec![PolicyType::Egress]
    );
}

#[test]
fn policy_ports_and_blocks() {
    let p = policy(serde_json::json!({
        "podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["db"]}]},
        "egress": [{
            "to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
            "ports": [
                {"port": 5432},
                {"protocol": "UDP", "port": "dns"},
                {"port": 30000, "endPort": 32767},
                {"protocol": "TCP"}
            ]
        }]
    }))
    .unwrap();
    assert_eq!(p.pod_selector.match_expressions[0].operator, SelectorOp::In);
    let rule = &p.egress.unwrap()[0];
    let block = rule.to.as_ref().unwrap()[0].ip_block.clone().unwrap();
    assert_eq!(block.cidr.to_string(), "10.0.0.0/8");
    assert_eq!(block.except[0].to_string(), "10.1.0.0/16");
    let ports = rule.ports.clone().unwrap();
    assert_eq!(
        ports[0],
        PolicyPort {
            protocol: Protocol::Tcp,
            port: Some(PortRef::Number(port(5432))),
            end_port: None
        }
    );
    assert_eq!(ports[1].port, Some(PortRef::Name("dns".into())));
    assert_eq!(ports[1].protocol, Protocol::Udp);
    assert_eq!(ports[2].end_port, Some(port(32767)));
    assert_eq!(ports[3].port, None);
}

#[test]
fn a_policy_weft_cannot_read_says_where() {
    let e = policy(serde_json::json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "nope"}}]}]}))
        .unwrap_err();
    assert!(e.field.contains("ipBlock"), "{e}");
    let e = policy(serde_json::json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}))
        .unwrap_err();
    assert!(e.reason.contains("Near"), "{e}");
}

#[test]
fn selectors_match_as_the_api_defines() {
    let sel = |json| {
        let s: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
            serde_json::from_value(json).unwrap();
        let p = policy(serde_json::json!({"podSelector": s})).unwrap();
        p.pod_selector
    };
    let web = labels(&[("app", "web"), ("tier", "front")]);
    let db = labels(&[("app", "db")]);
    let none = labels(&[]);
    let cases = [
        (serde_json::json!({}), [true, true, true]),
        (
            serde_json::json!({"matchLabels": {"app": "web"}}),
            [true, false, false],
        ),
        (
            serde_json::json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]}),
            [true, true, false],
        ),
        (
            serde_json::json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}),
            [false, true, true],
        ),
        (
            serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
            [true, false, false],
        ),
        (
            serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
            [false, true, true],
        ),
        (
            serde_json::json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
            [false, false, false],
        ),
    ];
    for (json, want) in cases {
        let s = sel(json.clone());
        let got = [s.matches(&web), s.matches(&db), s.matches(&none)];
        assert_eq!(got, want, "{json}");
    }
}

#[test]
fn service_ports_and_headless() {
    let s = mk_service("shop", "web", "10.96.0.10").convert().unwrap();
    assert_eq!(
        s.cluster_ips,
        vec!["10.96.0.10".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(s.service_type, "ClusterIP");
    assert_eq!(s.ports[0].port, port(80));
    assert_eq!(s.ports[0].target_port, Some(PortRef::Name("http".into())));
    assert_eq!(s.selector, Some(labels(&[("app", "web")])));
    let headless = mk_service("shop", "db", "None").convert().unwrap();
    assert!(headless.cluster_ips.is_empty());
    let mut numeric = mk_service("shop", "n", "10.96.0.11");
    numeric.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].target_port =
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("8080".into()));
    assert_eq!(
        numeric.convert().unwrap().ports[0].target_port,
        Some(PortRef::Number(port(8080)))
    );
}

#[test]
fn slice_conditions_read_as_documented() {
    let s = mk_slice(
        "shop",
        "web-abc",
        "web",
        &[
            ("10.244.0.5", None, None, None),
            ("10.244.0.6", Some(false), Some(true), Some(true)),
            ("10.244.0.7", Some(false), None, None),
        ],
    )
    .convert()
    .unwrap();
    assert_eq!(s.service.as_deref(), Some("web"));
    let e: Vec<(String, bool, bool, bool)> = s
        .endpoints
        .iter()
        .map(|e| (e.addr.to_string(), e.ready, e.serving, e.terminating))
        .collect();
    assert_eq!(
        e,
        vec![
            ("10.244.0.5".into(), true, true, false),
            ("10.244.0.6".into(), false, true, true),
            ("10.244.0.7".into(), false, false, false),
        ]
    );
    assert!(s.endpoints.iter().all(|e| e.port == port(8080)
        && e.port_name == "web"
        && e.node.as_deref() == Some("node-a")));
    let mut fqdn = mk_slice("shop", "ext", "ext", &[("example.com", None, None, None)]);
    fqdn.address_type = "FQDN".into();
    assert!(fqdn.convert().unwrap().endpoints.is_empty());
}

#[test]
fn the_audit_annotation_reaches_policies_and_namespaces() {
    let annotated = |v: &str| {
        serde_json::json!({"metadata": {"name": "p", "namespace": "ns",
            "annotations": {"weft.dev/audit": v}}, "spec": {"podSelector": {}}})
    };
    let conv = |v| {
        serde_json::from_value::<networking::NetworkPolicy>(v)
            .unwrap()
            .convert()
            .unwrap()
            .audit
    };
    assert!(conv(annotated("true")));
    assert!(conv(annotated("True")));
    assert!(!conv(annotated("false")));
    assert!(
        !policy(serde_json::json!({"podSelector": {}}))
            .unwrap()
            .audit
    );
    let mut ns = mk_ns("shop", &[]);
    assert!(!ns.convert().unwrap().audit);
    ns.metadata.annotations = Some([(AUDIT_ANNOTATION.to_string(), "true".to_string())].into());
    assert!(ns.convert().unwrap().audit);
}
