use super::*;

fn flow(node: &str, t: u64) -> Flow {
    serde_json::from_value(serde_json::json!({
        "time": "2026-12-03T12:00:01.250000000Z",
        "time_unix_nano": t,
        "node": node,
        "verdict": "DROPPED",
        "drop_reason": "POLICY_DEFAULT",
        "kind": "DECISION",
        "ip_version": 4,
        "protocol": "TCP",
        "source": {"ip": "10.244.0.2", "port": 40000, "namespace": "shop", "pod": "web-1"},
        "destination": {"ip": "10.244.1.3", "port": 5432},
        "tcp_flags": ["SYN"],
        "traffic_direction": "INGRESS",
        "observation_point": "TO_POD",
        "ifindex": 3,
        "rule_id": 0,
        "policy": {"namespace": "db", "name": "deny-all", "rule": ""},
        "packets": 1,
        "bytes": 60
    }))
    .unwrap()
}

#[test]
fn since_takes_durations_and_rfc3339() {
    let now = 10_000 * 1_000_000_000;
    assert_eq!(parse_since("30s", now).unwrap(), now - 30_000_000_000);
    assert_eq!(
        parse_since("1h30m", now).unwrap(),
        now - 5400 * 1_000_000_000
    );
    assert_eq!(parse_since("2d", 0).unwrap(), 0);
    assert_eq!(
        parse_since("2026-12-03T12:00:00.000000123Z", now).unwrap(),
        1_796_299_200_000_000_123
    );
    assert_eq!(
        parse_since("1970-01-01T00:00:10Z", now).unwrap(),
        10_000_000_000
    );
    for bad in [
        "",
        "5",
        "5x",
        "m",
        "2026-13-03T12:00:00Z",
        "2026-12-03T12:00:00",
    ] {
        assert!(parse_since(bad, now).is_err(), "{bad}");
    }
}

#[test]
fn lines_read_like_hubbles() {
    let f = flow("lab-n1", 1);
    assert_eq!(
        compact_line(&f),
        "12:00:01.250 [lab-n1]: shop/web-1:40000 -> 10.244.1.3:5432 ingress TCP DROPPED (POLICY_DEFAULT db/deny-all TCP SYN)"
    );
    let t = table_line(&f);
    assert!(
        t.starts_with("12:00:01.250  lab-n1      shop/web-1:40000"),
        "{t}"
    );
    assert!(
        t.ends_with("DROPPED     POLICY_DEFAULT db/deny-all TCP SYN"),
        "{t}"
    );
    let pb: serde_json::Value = serde_json::from_str(&jsonpb_line(&f).unwrap()).unwrap();
    assert_eq!(pb["node_name"], "lab-n1");
    assert_eq!(pb["flow"]["verdict"], "DROPPED");
    assert_eq!(pb["time"], "2026-12-03T12:00:01.250000000Z");
}

#[test]
fn flags_become_the_filter() {
    let args = ObserveArgs {
        verdict: vec!["dropped".into()],
        from_pod: vec!["shop/web-1".into()],
        port: vec![5432],
        ..Default::default()
    };
    let f = args.filter().unwrap();
    assert_eq!(f.verdicts, [Verdict::Dropped]);
    assert!(f.matches(&flow("n", 1)));
    let bad = ObserveArgs {
        verdict: vec!["ALLOWED".into()],
        ..Default::default()
    };
    assert!(bad.filter().is_err());
}

#[test]
fn nodes_are_merged_by_time_and_cut_to_last() {
    // two fake weftds on sockets of their own, each with stored flows
    let dir = std::env::temp_dir().join(format!("weft-observe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut targets = Vec::new();
    let mut servers = Vec::new();
    for (node, times) in [("a", vec![1u64, 4, 5]), ("b", vec![2u64, 3, 6])] {
        let sock = dir.join(node);
        let _ = std::fs::remove_file(&sock);
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        servers.push(std::thread::spawn(move || {
            let c = l.incoming().next().unwrap().unwrap();
            let req = weft_api::http::read_request(&c).unwrap();
            let q: FlowQuery = serde_json::from_slice(&req.body).unwrap();
            assert_eq!(q.last, Some(4));
            weft_api::stream::write_stream_head(&c).unwrap();
            for t in times {
                let line = serde_json::to_string(&FlowLine::Flow(Box::new(flow(node, t)))).unwrap();
                weft_api::stream::write_chunk(&c, format!("{line}\n").as_bytes()).unwrap();
            }
            weft_api::stream::write_stream_end(&c).unwrap();
        }));
        targets.push(Target {
            node: node.into(),
            socket: sock,
            remote: None,
        });
    }
    let q = FlowQuery {
        last: Some(4),
        ..Default::default()
    };
    let mut flows = Vec::new();
    fan_out(&targets, vec![q.clone(), q], |m| {
        if let Msg::Flow(f) = m {
            flows.push(*f);
        }
        Ok(())
    })
    .unwrap();
    for s in servers {
        s.join().unwrap();
    }
    let got: Vec<(String, u64)> = merge(flows, Some(4))
        .iter()
        .map(|f| (f.node.clone(), f.time_unix_nano))
        .collect();
    assert_eq!(
        got,
        [
            ("b".into(), 3),
            ("a".into(), 4),
            ("a".into(), 5),
            ("b".into(), 6)
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
