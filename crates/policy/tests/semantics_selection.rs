//! Truth tables for which pods a policy isolates and which peers its rules
//! name: policyTypes defaults, `None` vs `Some([])`, every peer form,
//! hostNetwork and node traffic, independence of the two directions, the
//! union of policies, and failing closed. Every cell is checked by the
//! compiled maps and by the evaluator (common::Checked).

mod common;

use common::*;
use weft_policy::Protocol::{Sctp, Tcp, Udp};
use weft_policy::*;

/// (policyTypes, ingress, egress, ingress to x/db allowed, egress from x/db allowed)
type Row = (
    Option<Vec<Direction>>,
    Option<Vec<Rule>>,
    Option<Vec<Rule>>,
    bool,
    bool,
);

const R: fn() -> Rule = || rule(None, Some(vec![port(9999, None)]));

#[test]
fn policy_types_defaults_truth_table() {
    let inv = small_cluster();
    use Direction::{Egress as E, Ingress as I};
    // (policyTypes, ingress, egress) -> (ingress to x/db allowed, egress from x/db allowed)
    let rows: Vec<Row> = vec![
        (None, None, None, false, true),
        (Some(vec![]), None, None, false, true),
        (None, None, Some(vec![]), false, true),
        (None, None, Some(vec![R()]), false, false),
        (None, Some(vec![R()]), None, false, true),
        (Some(vec![E]), Some(vec![R()]), None, true, false),
        (Some(vec![I]), None, Some(vec![R()]), false, true),
        (Some(vec![I, E]), None, None, false, false),
        (Some(vec![E]), None, Some(vec![R()]), true, false),
    ];
    for (types, ingress, egress, want_in, want_out) in rows {
        let mut p = np("x", "p", sel(&[("app", "db")]));
        p.policy_types = types.clone();
        p.ingress = ingress;
        p.egress = egress;
        assert_eq!(
            (p.affects(I), p.affects(E)),
            (!want_in, !want_out),
            "{types:?}"
        );
        let c = Checked::new(&[p], &inv);
        assert_eq!(
            c.allowed(Y_CLI, X_DB, Tcp, 80),
            want_in,
            "ingress, {types:?}"
        );
        assert_eq!(
            c.allowed(X_DB, Y_CLI, Tcp, 80),
            want_out,
            "egress, {types:?}"
        );
    }
}

#[test]
fn no_rules_and_an_empty_rule_list_both_allow_nothing() {
    let inv = small_cluster();
    let mut none = np("x", "p", sel(&[("app", "db")]));
    none.policy_types = Some(vec![Direction::Ingress]);
    let mut empty = none.clone();
    empty.ingress = Some(vec![]);
    for src in [X_WEB, Y_CLI, WORLD_1, NODE_1] {
        let a = Checked::new(std::slice::from_ref(&none), &inv).verdict(&flow(src, X_DB));
        let b = Checked::new(std::slice::from_ref(&empty), &inv).verdict(&flow(src, X_DB));
        assert_eq!(a, b);
        assert!(!a.allowed, "{src}");
    }
    // The pod's own node still gets in (kubelet probes).
    assert!(allowed(&[empty], &inv, NODE_2, X_DB, Tcp, 80));
}

fn flow(src: &str, dst: &str) -> Flow {
    Flow {
        src: ip(src),
        dst: ip(dst),
        proto: Tcp,
        port: 80,
    }
}

#[test]
fn a_rule_with_no_peers_or_no_ports_matches_everything_whether_none_or_empty() {
    let inv = small_cluster();
    for peers in [None, Some(vec![])] {
        for ports in [None, Some(vec![])] {
            let p = np("x", "p", sel(&[("app", "db")]))
                .ingress_rules(vec![rule(peers.clone(), ports.clone())]);
            let c = Checked::new(&[p], &inv);
            for src in [X_WEB, Y_CLI, WORLD_1, NODE_1] {
                for (proto, port) in [(Tcp, 1), (Tcp, 80), (Udp, 53), (Sctp, 9)] {
                    assert!(
                        c.allowed(src, X_DB, proto, port),
                        "{peers:?} {ports:?} {src} {proto}/{port}"
                    );
                }
            }
        }
    }
    // ...while a rule list without rules allows nothing.
    let deny = np("x", "p", sel(&[("app", "db")])).ingress_rules(vec![]);
    assert!(!allowed(&[deny], &inv, Y_CLI, X_DB, Tcp, 80));
}

#[test]
fn peer_forms_truth_table() {
    let inv = small_cluster();
    let sources = [X_WEB, X_WEB2, Y_WEB, Y_CLI, WORLD_1, NODE_1, NODE_2];
    let not_web = LabelSelector::all().with("app", Operator::NotIn, &["web"]);
    let x_or_y =
        LabelSelector::all().with("kubernetes.io/metadata.name", Operator::In, &["x", "y"]);
    let rows: Vec<(&str, Peer, [bool; 7])> = vec![
        (
            "podSelector alone: own namespace",
            pods(sel(&[("app", "web")])),
            [true, true, false, false, false, false, true],
        ),
        (
            "podSelector {}: every pod of own namespace",
            pods(sel(&[])),
            [true, true, false, false, false, false, true],
        ),
        (
            "namespaceSelector {}: every pod anywhere",
            namespaces(sel(&[])),
            [true, true, true, true, false, false, true],
        ),
        (
            "namespaceSelector alone",
            namespaces(sel(&[("team", "b")])),
            [false, false, true, true, false, false, true],
        ),
        (
            "both: pods in namespaces",
            pods_in(sel(&[("team", "b")]), sel(&[("app", "web")])),
            [false, false, true, false, false, false, true],
        ),
        (
            "both empty",
            pods_in(sel(&[]), sel(&[])),
            [true, true, true, true, false, false, true],
        ),
        (
            "expressions",
            pods_in(x_or_y, not_web),
            [false, false, false, true, false, false, true],
        ),
        (
            "podSelector DoesNotExist",
            pods_in(
                sel(&[]),
                LabelSelector::all().with("app", Operator::DoesNotExist, &[]),
            ),
            [false, false, false, false, false, false, true],
        ),
    ];
    for (what, peer, want) in rows {
        let c = Checked::new(
            &[np("x", "p", sel(&[("app", "db")])).ingress_rules(vec![from(vec![peer])])],
            &inv,
        );
        let got: Vec<bool> = sources
            .iter()
            .map(|s| c.allowed(s, X_DB, Tcp, 80))
            .collect();
        assert_eq!(
            got, want,
            "{what} (sources {sources:?}; the last is x/db's own node)"
        );
    }
}

#[test]
fn host_network_pods_are_never_selected_and_are_their_node_as_peers() {
    let inv = small_cluster();
    let deny_all = np("x", "deny-all", sel(&[]))
        .ingress_rules(vec![])
        .egress_rules(vec![]);
    let c = Checked::new(std::slice::from_ref(&deny_all), &inv);
    assert!(
        !c.compiled.endpoints.keys().any(|e| e.name == "agent"),
        "hostNetwork pods get no policy map"
    );
    let v = c.verdict(&flow(NODE_1, Y_CLI));
    assert_eq!(v.egress, DirectionVerdict::NotApplicable);
    assert!(v.allowed, "x/agent is not isolated by x's deny-all");
    assert!(
        !c.allowed(X_WEB, NODE_1, Tcp, 80),
        "x/web's egress to its node is denied"
    );
    assert!(
        c.allowed(NODE_1, X_WEB, Tcp, 80),
        "x/agent is x/web's own node"
    );
    assert!(
        !c.allowed(NODE_1, X_DB, Tcp, 80),
        "x/agent is a remote node for x/db"
    );
    // Selectors never name it: it is node traffic, not a pod of x.
    let from_x =
        np("x", "from-x", sel(&[])).ingress_rules(vec![from(vec![pods(sel(&[("app", "web")]))])]);
    assert!(!allowed(&[from_x], &inv, NODE_1, X_DB, Tcp, 80));
}

#[test]
fn ingress_and_egress_isolation_are_independent() {
    let inv = small_cluster();
    let egress_only = np("x", "no-egress", sel(&[("app", "web")])).egress_rules(vec![]);
    let c = Checked::new(&[egress_only], &inv);
    assert!(!c.allowed(X_WEB, Y_CLI, Tcp, 80));
    assert!(c.allowed(Y_CLI, X_WEB, Tcp, 80));
    assert_eq!(
        c.verdict(&flow(Y_CLI, X_WEB)).ingress,
        DirectionVerdict::NotIsolated
    );
    let ingress_only = np("x", "no-ingress", sel(&[("app", "db")])).ingress_rules(vec![]);
    let c = Checked::new(&[ingress_only], &inv);
    assert!(c.allowed(X_DB, Y_CLI, Tcp, 80));
    assert!(!c.allowed(Y_CLI, X_DB, Tcp, 80));
    // Both ends must allow: egress open, ingress shut.
    let both = [
        np("y", "out", sel(&[("app", "cli")])).egress_rules(vec![Rule::default()]),
        np("x", "in", sel(&[("app", "db")])).ingress_rules(vec![]),
    ];
    assert!(!allowed(&both, &inv, Y_CLI, X_DB, Tcp, 80));
}

#[test]
fn policies_add_up_and_a_deny_all_takes_nothing_away() {
    let inv = small_cluster();
    let policies = [
        np("x", "a-from-web", sel(&[("app", "db")]))
            .ingress_rules(vec![from(vec![pods(sel(&[("app", "web")]))])]),
        np("x", "b-from-cli", sel(&[("app", "db")])).ingress_rules(vec![from(vec![pods_in(
            sel(&[("team", "b")]),
            sel(&[("app", "cli")]),
        )])]),
        np("x", "c-deny", sel(&[])).ingress_rules(vec![]),
    ];
    let c = Checked::new(&policies, &inv);
    let got: Vec<bool> = [X_WEB, Y_CLI, Y_WEB, WORLD_1]
        .iter()
        .map(|s| c.allowed(s, X_DB, Tcp, 80))
        .collect();
    assert_eq!(got, [true, true, false, false]);
    // Other namespaces are untouched.
    assert!(c.allowed(X_DB, Y_WEB, Tcp, 80));
    assert!(c.allowed(WORLD_1, Y_WEB, Tcp, 80));
}

#[test]
fn invalid_policies_isolate_and_open_nothing() {
    let inv = small_cluster();
    let mut bad_port = np("x", "broken", sel(&[("app", "db")]))
        .ingress_rules(vec![rule(None, Some(vec![port_range(90, 80, None)]))]);
    bad_port.ingress.as_mut().unwrap().push(Rule::default());
    let c = Checked::new(std::slice::from_ref(&bad_port), &inv);
    assert!(!c.allowed(X_WEB, X_DB, Tcp, 85));
    assert!(
        !c.allowed(X_WEB, X_DB, Tcp, 1),
        "the valid allow-all rule of an invalid policy opens nothing"
    );
    assert_eq!(c.compiled.rejected.len(), 1);
    assert!(
        c.compiled.rejected[0]
            .1
            .contains("endPort 80 is below port 90"),
        "{:?}",
        c.compiled.rejected
    );
    let err = bad_port.validate().unwrap_err().to_string();
    assert!(
        err.contains("x/broken") && err.contains("allows nothing until it is fixed"),
        "{err}"
    );

    // An invalid podSelector cannot say whom it means: the whole namespace
    // is isolated in the policy's directions.
    let mut bad_selector = np(
        "x",
        "broken-selector",
        LabelSelector::all().with("app", Operator::In, &[]),
    );
    bad_selector.policy_types = Some(vec![Direction::Egress]);
    bad_selector.egress = Some(vec![Rule::default()]);
    let c = Checked::new(&[bad_selector], &inv);
    assert!(!c.allowed(X_WEB, Y_CLI, Tcp, 80));
    assert!(!c.allowed(X_DB, WORLD_1, Tcp, 80));
    assert!(
        c.allowed(Y_CLI, X_WEB, Tcp, 80),
        "ingress is not among its policyTypes"
    );
    assert!(c.allowed(Y_CLI, Y_WEB, Tcp, 80), "namespace y is untouched");
}

#[test]
fn peers_must_name_something_and_ip_blocks_stand_alone() {
    let cases = [
        (Peer::default(), "must set"),
        (
            Peer {
                pod_selector: Some(sel(&[])),
                ..cidr("10.0.0.0/8", &[])
            },
            "cannot be combined",
        ),
        (cidr("10.0.0.0/8", &["11.0.0.0/16"]), "not strictly inside"),
        (cidr("10.0.0.0/8", &["10.0.0.0/8"]), "not strictly inside"),
    ];
    for (peer, msg) in cases {
        let p = np("x", "p", sel(&[])).ingress_rules(vec![from(vec![peer])]);
        let err = p.validate().unwrap_err().to_string();
        assert!(err.contains(msg), "{err}");
    }
    let named_with_end = PolicyPort {
        end_port: Some(90),
        ..named("http", None)
    };
    for (port, msg) in [
        (named_with_end, "endPort needs a numbered port"),
        (named("HTTP", None), "not a valid port name"),
        (named("a--b", None), "not a valid port name"),
        (named("1234", None), "not a valid port name"),
        (port(0, None), "port 0"),
        (
            PolicyPort {
                end_port: Some(90),
                ..proto_only(Tcp)
            },
            "endPort needs a port",
        ),
    ] {
        let p = np("x", "p", sel(&[])).ingress_rules(vec![rule(None, Some(vec![port]))]);
        let err = p.validate().unwrap_err().to_string();
        assert!(err.contains(msg), "{err}");
    }
}
