//! Truth tables for ports: numbered, ranges (and their map expansion),
//! protocols, SCTP, and named ports resolved on the destination pod.

mod common;

use common::*;
use weft_policy::Protocol::{Sctp, Tcp, Udp};
use weft_policy::*;

fn ingress_to_db(ports: Vec<PolicyPort>) -> NetworkPolicy {
    np("x", "p", sel(&[("app", "db")])).ingress_rules(vec![rule(None, Some(ports))])
}

#[test]
fn numbered_ports_and_protocols_truth_table() {
    let inv = small_cluster();
    let probes = [
        (Tcp, 80),
        (Tcp, 81),
        (Udp, 80),
        (Udp, 53),
        (Sctp, 80),
        (Tcp, 53),
    ];
    let rows: Vec<(&str, Vec<PolicyPort>, [bool; 6])> = vec![
        (
            "80, protocol defaulted",
            vec![port(80, None)],
            [true, false, false, false, false, false],
        ),
        (
            "80/TCP",
            vec![port(80, Some(Tcp))],
            [true, false, false, false, false, false],
        ),
        (
            "80/UDP",
            vec![port(80, Some(Udp))],
            [false, false, true, false, false, false],
        ),
        (
            "any UDP port",
            vec![proto_only(Udp)],
            [false, false, true, true, false, false],
        ),
        (
            "any TCP port",
            vec![proto_only(Tcp)],
            [true, true, false, false, false, true],
        ),
        (
            "80/SCTP",
            vec![port(80, Some(Sctp))],
            [false, false, false, false, true, false],
        ),
        (
            "80/TCP or 53/UDP",
            vec![port(80, None), port(53, Some(Udp))],
            [true, false, false, true, false, false],
        ),
    ];
    for (what, ports, want) in rows {
        let c = Checked::new(&[ingress_to_db(ports)], &inv);
        let got: Vec<bool> = probes
            .iter()
            .map(|(pr, po)| c.allowed(Y_CLI, X_DB, *pr, *po))
            .collect();
        assert_eq!(got, want, "{what} over {probes:?}");
    }
}

#[test]
fn end_port_ranges_are_inclusive_and_become_prefix_blocks() {
    let inv = small_cluster();
    let c = Checked::new(&[ingress_to_db(vec![port_range(8000, 8010, None)])], &inv);
    for (p, want) in [
        (7999, false),
        (8000, true),
        (8007, true),
        (8008, true),
        (8010, true),
        (8011, false),
    ] {
        assert_eq!(c.allowed(Y_CLI, X_DB, Tcp, p), want, "port {p}");
    }
    assert!(!c.allowed(Y_CLI, X_DB, Udp, 8005));
    // The map holds exactly the aligned blocks of the range, for the ANY
    // peer (the rule has no peers), besides the node exemption.
    let db = EndpointRef {
        namespace: "x".into(),
        name: "db".into(),
    };
    let blocks: Vec<PortPrefix> = c.compiled.endpoints[&db]
        .entries
        .keys()
        .filter(|k| k.identity == Identity::ANY)
        .map(|k| k.port)
        .collect();
    assert_eq!(blocks, range_prefixes(8000, 8010));
    assert_eq!(
        blocks,
        vec![
            PortPrefix {
                port: 8000,
                len: 13
            },
            PortPrefix {
                port: 8008,
                len: 15
            },
            PortPrefix::exact(8010)
        ]
    );
}

#[test]
fn an_sctp_only_policy_opens_nothing_else() {
    let inv = small_cluster();
    let c = Checked::new(
        &[ingress_to_db(vec![
            port(81, Some(Sctp)),
            port_range(100, 200, Some(Sctp)),
        ])],
        &inv,
    );
    for proto in [Tcp, Udp] {
        for p in [81, 100, 150, 200, 1] {
            assert!(!c.allowed(Y_CLI, X_DB, proto, p), "{proto}/{p}");
        }
    }
    assert!(c.allowed(Y_CLI, X_DB, Sctp, 81));
    let db = EndpointRef {
        namespace: "x".into(),
        name: "db".into(),
    };
    for (k, by) in &c.compiled.endpoints[&db].entries {
        if let AllowedBy::Rule(_) = by {
            assert_eq!(k.proto, Some(132), "an SCTP rule produced {k}");
        }
    }
}

#[test]
fn ingress_named_ports_resolve_on_each_selected_pod() {
    // x/web and x/web2 share labels but call "http" 8080 and 80.
    let inv = small_cluster();
    let p = np("x", "p", sel(&[("app", "web")]))
        .ingress_rules(vec![rule(None, Some(vec![named("http", None)]))]);
    let c = Checked::new(&[p], &inv);
    assert!(c.allowed(Y_CLI, X_WEB, Tcp, 8080));
    assert!(!c.allowed(Y_CLI, X_WEB, Tcp, 80));
    assert!(c.allowed(Y_CLI, X_WEB2, Tcp, 80));
    assert!(!c.allowed(Y_CLI, X_WEB2, Tcp, 8080));
    assert!(!c.allowed(Y_CLI, X_WEB, Udp, 8080), "http is a TCP port");
}

#[test]
fn egress_named_ports_resolve_on_each_destination_pod() {
    let inv = small_cluster();
    let to_web = np("x", "p", sel(&[("app", "db")])).egress_rules(vec![rule(
        Some(vec![namespaces(sel(&[]))]),
        Some(vec![named("http", None)]),
    )]);
    let c = Checked::new(&[to_web], &inv);
    let rows = [
        (X_WEB, 8080, true),
        (X_WEB, 80, false),
        (X_WEB2, 80, true),
        (X_WEB2, 8080, false),
        (Y_WEB, 80, true),
        (Y_CLI, 80, false),
    ];
    for (dst, p, want) in rows {
        assert_eq!(c.allowed(X_DB, dst, Tcp, p), want, "x/db -> {dst}:{p}");
    }
    // The two pods with one label set but different numbers for "http"
    // are two identities, so one map entry cannot serve both.
    let id = |a: &str| c.compiled.identity_of("node-2", ip(a));
    assert_ne!(id(X_WEB), id(X_WEB2));
}

#[test]
fn named_ports_match_their_protocol_and_only_pods() {
    let inv = small_cluster();
    let udp_http = np("x", "p", sel(&[("app", "db")]))
        .egress_rules(vec![rule(None, Some(vec![named("http", Some(Udp))]))]);
    let c = Checked::new(&[udp_http], &inv);
    assert!(!c.allowed(X_DB, Y_WEB, Tcp, 80));
    assert!(!c.allowed(X_DB, Y_WEB, Udp, 80));
    let dns = np("x", "p", sel(&[("app", "db")]))
        .egress_rules(vec![rule(None, Some(vec![named("dns", Some(Udp))]))]);
    let c = Checked::new(&[dns], &inv);
    assert!(c.allowed(X_DB, Y_WEB, Udp, 53));
    assert!(
        !c.allowed(X_DB, WORLD_1, Udp, 53),
        "the world has no named ports"
    );
    assert!(!c.allowed(X_DB, NODE_1, Udp, 53), "nor do nodes");
    // An ipBlock around a pod: the name still resolves on that pod.
    let block = np("x", "p", sel(&[("app", "db")])).egress_rules(vec![rule(
        Some(vec![cidr("0.0.0.0/0", &[])]),
        Some(vec![named("http", None)]),
    )]);
    let c = Checked::new(&[block], &inv);
    assert!(c.allowed(X_DB, Y_WEB, Tcp, 80));
    assert!(c.allowed(X_DB, X_WEB, Tcp, 8080));
    assert!(!c.allowed(X_DB, X_WEB, Tcp, 80));
    assert!(!c.allowed(X_DB, WORLD_1, Tcp, 80));
}

#[test]
fn other_protocols_meet_only_rules_without_ports() {
    // ICMP (1) has no ports: a rule naming ports never allows it, a rule
    // without ports does. The evaluator's flows are TCP/UDP/SCTP only, so
    // this reads the compiled map directly, as the program will.
    let inv = small_cluster();
    let policies = [
        np("x", "ports", sel(&[("app", "db")])).ingress_rules(vec![rule(
            None,
            Some(vec![port(80, None), proto_only(Udp)]),
        )]),
        np("x", "from-web", sel(&[("app", "db")]))
            .ingress_rules(vec![from(vec![pods(sel(&[("app", "web")]))])]),
    ];
    let c = Checked::new(&policies, &inv);
    let db = &c.compiled.endpoints[&EndpointRef {
        namespace: "x".into(),
        name: "db".into(),
    }];
    let id = |a: &str| c.compiled.identity_of("node-2", ip(a));
    let (v, _) = db.decide(Direction::Ingress, id(X_WEB), 1, 0);
    assert!(v.allows(), "x/web may ping x/db (a rule without ports)");
    let (v, _) = db.decide(Direction::Ingress, id(Y_CLI), 1, 0);
    assert_eq!(
        v,
        DirectionVerdict::Denied(PolicyRef {
            namespace: "x".into(),
            name: "from-web".into()
        })
    );
    let (v, _) = db.decide(Direction::Ingress, id(Y_CLI), 17, 4000);
    assert!(v.allows(), "any UDP port");
}
