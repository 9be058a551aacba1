use super::*;

fn peer(ns: &str, pod: &str, labels: &[(&str, &str)], port: u16) -> Peer {
    Peer {
        ip: Some("10.244.0.2".parse().unwrap()),
        port,
        namespace: Some(ns.into()),
        pod: Some(pod.into()),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn flow() -> Flow {
    Flow {
        time: String::new(),
        time_unix_nano: 0,
        node: "n1".into(),
        verdict: Verdict::Dropped,
        drop_reason: Some("POLICY_DEFAULT".into()),
        kind: "DECISION".into(),
        ip_version: 4,
        protocol: "TCP".into(),
        source: peer("shop", "web-1", &[("app", "web")], 40000),
        destination: peer("db", "pg-0", &[("app", "pg"), ("tier", "data")], 5432),
        tcp_flags: vec!["SYN".into()],
        traffic_direction: "INGRESS".into(),
        observation_point: "TO_POD".into(),
        ifindex: 3,
        rule_id: 0,
        policy: None,
        translated_to: None,
        service: None,
        packets: 1,
        bytes: 60,
    }
}

fn m(f: FlowFilter) -> bool {
    f.matches(&flow())
}

#[test]
fn empty_matches_everything() {
    assert!(m(FlowFilter::default()));
}

#[test]
fn values_of_one_flag_are_alternatives_flags_all_hold() {
    let v = |vs: Vec<Verdict>| FlowFilter {
        verdicts: vs,
        ..Default::default()
    };
    assert!(m(v(vec![Verdict::Forwarded, Verdict::Dropped])));
    assert!(!m(v(vec![Verdict::Forwarded])));
    assert!(!m(FlowFilter {
        verdicts: vec![Verdict::Dropped],
        ports: vec![80],
        ..Default::default()
    }));
    assert!(m(FlowFilter {
        verdicts: vec![Verdict::Dropped],
        ports: vec![80, 5432],
        protocols: vec!["tcp".into()],
        ..Default::default()
    }));
}

#[test]
fn sides_namespaces_pods_and_labels() {
    let f = |g: fn(&mut FlowFilter)| {
        let mut x = FlowFilter::default();
        g(&mut x);
        m(x)
    };
    assert!(f(|x| x.namespaces = vec!["db".into()]));
    assert!(!f(|x| x.namespaces = vec!["kube-system".into()]));
    assert!(f(|x| x.pods = vec!["pg-0".into()]));
    assert!(f(|x| x.pods = vec!["shop/web-*".into()]));
    assert!(!f(|x| x.pods = vec!["db/web-1".into()]));
    assert!(f(|x| x.from_pods = vec!["web-1".into()]));
    assert!(!f(|x| x.from_pods = vec!["pg-0".into()]));
    assert!(f(|x| x.to_pods = vec!["db/pg-0".into()]));
    // a bare pod name is looked for in the namespaces asked for
    assert!(!f(|x| {
        x.namespaces = vec!["db".into()];
        x.from_pods = vec!["web-1".into()];
    }));
    assert!(f(|x| x.labels = vec!["tier".into()]));
    assert!(f(|x| x.from_labels = vec!["app=web".into()]));
    assert!(!f(|x| x.from_labels = vec!["app=pg".into()]));
    assert!(f(|x| x.to_labels = vec!["app=pg".into(), "app=x".into()]));
    assert!(!f(|x| x.to_labels = vec!["tier=web".into()]));
    assert!(f(|x| x.ports = vec![40000]));
    assert!(!f(|x| x.protocols = vec!["udp".into()]));
}

#[test]
fn a_peer_without_a_pod_matches_no_pod_filter() {
    let mut fl = flow();
    fl.source = Peer {
        ip: Some("198.18.0.9".parse().unwrap()),
        port: 1,
        ..Default::default()
    };
    let x = FlowFilter {
        from_pods: vec!["*".into()],
        ..Default::default()
    };
    assert!(!x.matches(&fl));
    assert!(FlowFilter {
        to_pods: vec!["*".into()],
        ..Default::default()
    }
    .matches(&fl));
}

#[test]
fn verdicts_parse_as_typed() {
    assert_eq!(Verdict::parse("dropped"), Some(Verdict::Dropped));
    assert_eq!(Verdict::parse("FORWARDED"), Some(Verdict::Forwarded));
    assert_eq!(Verdict::parse("nope"), None);
    let line = FlowLine::Lost(LostFlows {
        node: "n".into(),
        flows: 3,
    });
    assert_eq!(
        serde_json::to_string(&line).unwrap(),
        r#"{"lost":{"node":"n","flows":3}}"#
    );
}
