//! The inputs read the API's JSON (a NetworkPolicy's spec flattened beside
//! its namespace and name), so the adapter can convert by serde and fixtures
//! can be written as the API writes them. `null`/absent and `[]` survive.

use weft_policy::*;

#[test]
fn a_spec_in_the_apis_json_shape_parses_with_its_distinctions() {
    let json = r#"{
        "namespace": "x",
        "name": "mixed",
        "podSelector": {"matchLabels": {"app": "db"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {"from": [
                {"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["1", "2"]}]},
                 "namespaceSelector": {}},
                {"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}}
             ],
             "ports": [{"port": 5432}, {"protocol": "UDP", "port": "dns"}, {"port": 8000, "endPort": 8010}]},
            {}
        ],
        "egress": []
    }"#;
    let p: NetworkPolicy = serde_json::from_str(json).unwrap();
    p.validate().unwrap();
    assert_eq!(
        p.policy_types,
        Some(vec![Direction::Ingress, Direction::Egress])
    );
    assert_eq!(
        p.egress,
        Some(vec![]),
        "an empty list stays distinct from absent"
    );
    let rules = p.ingress.as_ref().unwrap();
    assert_eq!(
        rules[1],
        Rule {
            peers: None,
            ports: None
        }
    );
    let peers = rules[0].peers.as_ref().unwrap();
    assert_eq!(
        peers[0].namespace_selector,
        Some(LabelSelector::all()),
        "{{}} is present and empty"
    );
    assert_eq!(
        peers[0].pod_selector,
        Some(LabelSelector::all().with("tier", Operator::In, &["1", "2"]))
    );
    assert!(peers[1]
        .ip_block
        .as_ref()
        .unwrap()
        .contains("192.0.2.1".parse().unwrap()));
    assert!(!peers[1]
        .ip_block
        .as_ref()
        .unwrap()
        .contains("192.0.2.200".parse().unwrap()));
    let ports = rules[0].ports.as_ref().unwrap();
    assert_eq!(
        ports[0],
        PolicyPort {
            protocol: None,
            port: Some(PortRef::Number(5432)),
            end_port: None
        }
    );
    assert_eq!(
        ports[0].protocol(),
        Protocol::Tcp,
        "protocol defaults to TCP"
    );
    assert_eq!(ports[1].port, Some(PortRef::Name("dns".into())));
    assert_eq!(ports[1].protocol, Some(Protocol::Udp));
    assert_eq!(ports[2].end_port, Some(8010));

    let egress_rule: Rule = serde_json::from_str(
        r#"{"to": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}], "ports": []}"#,
    )
    .unwrap();
    assert_eq!(egress_rule.ports, Some(vec![]));
    assert_eq!(egress_rule.peers.unwrap().len(), 1);
}

#[test]
fn inputs_round_trip_through_json() {
    let p = NetworkPolicy {
        namespace: "y".into(),
        name: "rt".into(),
        pod_selector: LabelSelector::labels([("a", "b")]).with("k", Operator::DoesNotExist, &[]),
        policy_types: None,
        ingress: Some(vec![Rule {
            peers: Some(vec![]),
            ports: Some(vec![PolicyPort {
                protocol: Some(Protocol::Sctp),
                port: Some(PortRef::Number(9)),
                end_port: Some(19),
            }]),
        }]),
        egress: None,
        audit: true,
    };
    let back: NetworkPolicy = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
}

#[test]
fn compiled_state_round_trips_through_json() {
    let inv: Inventory = serde_json::from_str(
        r#"{"workloads": [
              {"namespace": "x", "name": "a", "labels": {"app": "web"}, "namespaceLabels": {"kubernetes.io/metadata.name": "x"},
               "ips": ["10.244.0.10", "fd00::a"], "namedPorts": {"http": [8080, "TCP"]}, "node": "n1"},
              {"namespace": "x", "name": "b", "labels": {}, "namespaceLabels": {"kubernetes.io/metadata.name": "x"},
               "ips": ["10.244.0.11"], "node": "n2"}
            ],
            "nodes": [{"name": "n1", "ips": ["198.18.0.1"]}, {"name": "n2", "ips": ["198.18.0.2"]}]}"#,
    )
    .unwrap();
    let policy: NetworkPolicy = serde_json::from_str(
        r#"{"namespace": "x", "name": "p", "podSelector": {},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}, {"ipBlock": {"cidr": "192.0.2.0/24"}}],
                         "ports": [{"port": 8000, "endPort": 8100}, {"port": "http"}]}]}"#,
    )
    .unwrap();
    let compiled = compile(&[policy], &inv, &mut MemoryAllocator::new()).unwrap();
    let json = serde_json::to_string(&compiled).expect("compiled state serializes to JSON");
    let back: Compiled = serde_json::from_str(&json).unwrap();
    assert_eq!(back, compiled);
    assert!(!compiled.endpoints.values().all(|e| e.entries.is_empty()));
}
