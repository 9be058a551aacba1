//! Attribution from day one: every verdict names the rule that allowed it
//! or the policy whose default deny dropped it, the same way in the
//! compiled maps and the evaluator; `explain` and `render_endpoint` say it
//! in words.

mod common;

use common::*;
use weft_policy::Protocol::Tcp;
use weft_policy::*;

fn policies() -> Vec<NetworkPolicy> {
    vec![
        np("x", "db-ingress", sel(&[("app", "db")])).ingress_rules(vec![
            rule(Some(vec![pods(sel(&[("app", "nothing")]))]), None),
            rule(
                Some(vec![pods(sel(&[("app", "web")]))]),
                Some(vec![port(5432, None)]),
            ),
            rule(
                Some(vec![namespaces(sel(&[("team", "b")]))]),
                Some(vec![port_range(5000, 6000, None)]),
            ),
        ]),
        np("x", "a-deny-all", sel(&[])).ingress_rules(vec![]),
    ]
}

fn v(c: &Checked, src: &str, dst: &str, port: u16) -> Verdict {
    c.verdict(&Flow {
        src: ip(src),
        dst: ip(dst),
        proto: Tcp,
        port,
    })
}

#[test]
fn allowed_traffic_names_its_rule_and_denied_traffic_its_policy() {
    let c = Checked::new(&policies(), &small_cluster());
    let rule_of = |index| {
        DirectionVerdict::Allowed(AllowedBy::Rule(RuleRef {
            policy: PolicyRef {
                namespace: "x".into(),
                name: "db-ingress".into(),
            },
            direction: Direction::Ingress,
            index,
        }))
    };
    assert_eq!(v(&c, X_WEB, X_DB, 5432).ingress, rule_of(1));
    assert_eq!(v(&c, Y_CLI, X_DB, 5432).ingress, rule_of(2));
    // y/web is app=web, but of namespace y: rule 1 (own namespace) is not it.
    assert_eq!(v(&c, Y_WEB, X_DB, 5999).ingress, rule_of(2));
    let denied = v(&c, Y_CLI, X_DB, 80);
    assert!(!denied.allowed);
    assert_eq!(
        denied.ingress,
        DirectionVerdict::Denied(PolicyRef {
            namespace: "x".into(),
            name: "a-deny-all".into()
        }),
        "the smallest isolating policy is named"
    );
    assert_eq!(
        v(&c, NODE_2, X_DB, 80).ingress,
        DirectionVerdict::Allowed(AllowedBy::LocalNode)
    );
    assert_eq!(v(&c, X_DB, Y_CLI, 80).egress, DirectionVerdict::NotIsolated);
    assert_eq!(
        v(&c, WORLD_1, Y_CLI, 80).egress,
        DirectionVerdict::NotApplicable
    );
}

#[test]
fn overlapping_rules_resolve_to_the_smallest_everywhere() {
    // Rule 0 allows web on every port, rule 1 only 5432: 5432 is rule 0's,
    // even though the 5432 entry is the more specific map key.
    let p = np("x", "p", sel(&[("app", "db")])).ingress_rules(vec![
        from(vec![pods(sel(&[("app", "web")]))]),
        rule(
            Some(vec![pods(sel(&[("app", "web")]))]),
            Some(vec![port(5432, None)]),
        ),
        rule(None, Some(vec![port(5432, None)])),
    ]);
    let c = Checked::new(&[p], &small_cluster());
    for port in [5432, 1] {
        match v(&c, X_WEB, X_DB, port).ingress {
            DirectionVerdict::Allowed(AllowedBy::Rule(r)) => assert_eq!(r.index, 0, "port {port}"),
            other => panic!("{other:?}"),
        }
    }
    match v(&c, Y_CLI, X_DB, 5432).ingress {
        DirectionVerdict::Allowed(AllowedBy::Rule(r)) => assert_eq!(r.index, 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn explain_says_who_decided_in_words() {
    let c = Checked::new(&policies(), &small_cluster());
    let allowed = c.compiled.explain(&Flow {
        src: ip(X_WEB),
        dst: ip(X_DB),
        proto: Tcp,
        port: 5432,
    });
    let text = allowed.to_string();
    assert!(
        text.starts_with("10.244.0.10 -> 10.244.0.11 tcp/5432: allowed"),
        "{text}"
    );
    assert!(
        text.contains("ingress: allowed by rule 1 (ingress[1]) of x/db-ingress"),
        "{text}"
    );
    assert!(text.contains("egress: no policy selects the pod"), "{text}");
    assert!(text.contains("ingress at x/db: peer identity"), "{text}");
    assert!(
        text.contains("(pod in x {app=web} ports {http=8080/tcp})"),
        "{text}"
    );
    assert!(text.contains("entry [ingress "), "{text}");
    assert!(text.contains(" tcp/5432]"), "{text}");
    let step = allowed.ingress.as_ref().unwrap();
    assert_eq!(step.entry.unwrap().port, PortPrefix::exact(5432));

    let denied = c.compiled.explain(&Flow {
        src: ip(WORLD_1),
        dst: ip(X_DB),
        proto: Tcp,
        port: 5432,
    });
    let text = denied.to_string();
    assert!(text.contains("denied at ingress"), "{text}");
    assert!(
        text.contains("denied by the default deny of x/a-deny-all"),
        "{text}"
    );
    assert!(text.contains("peer identity 2 (world)"), "{text}");
}

#[test]
fn show_lists_an_endpoints_entries() {
    let c = Checked::new(&policies(), &small_cluster());
    let db = EndpointRef {
        namespace: "x".into(),
        name: "db".into(),
    };
    let text = c.compiled.render_endpoint(&db).unwrap();
    assert!(
        text.starts_with("ingress: isolated by x/a-deny-all\negress: not isolated\n"),
        "{text}"
    );
    assert!(
        text.contains("ingress 1 any (host) -> traffic from the pod's own node"),
        "{text}"
    );
    assert!(text.contains("tcp/5000-5007"), "{text}");
    assert!(text.contains("tcp/6000 "), "{text}");
    assert!(
        text.contains("-> rule 2 (ingress[2]) of x/db-ingress"),
        "{text}"
    );
    assert!(
        !text.contains("app=nothing"),
        "a rule naming nobody adds no entry"
    );
    assert!(c
        .compiled
        .render_endpoint(&EndpointRef {
            namespace: "x".into(),
            name: "agent".into()
        })
        .is_none());
}

#[test]
fn one_endpoint_recompiles_to_what_the_whole_cluster_gave_it() {
    let inv = small_cluster();
    let c = Checked::new(&policies(), &inv);
    for w in inv.workloads.iter().filter(|w| !w.host_network) {
        let alone = compile_endpoint(&policies(), &c.compiled.identities, w);
        let ep = EndpointRef {
            namespace: w.namespace.clone(),
            name: w.name.clone(),
        };
        assert_eq!(alone, c.compiled.endpoints[&ep], "{ep:?}");
    }
}

#[test]
fn list_and_explain_by_pod_name() {
    let mut all = policies();
    let mut broken = np("y", "broken", sel(&[]));
    broken.ingress = Some(vec![rule(None, Some(vec![port(0, None)]))]);
    all.push(broken);
    let c = Checked::new(&all, &small_cluster());
    let ep = |ns: &str, name: &str| EndpointRef {
        namespace: ns.into(),
        name: name.into(),
    };
    let list = &c.compiled.policies;
    assert_eq!(list.len(), 3);
    let deny_all = &list[&PolicyRef {
        namespace: "x".into(),
        name: "a-deny-all".into(),
    }];
    assert_eq!(
        deny_all.ingress,
        vec![ep("x", "db"), ep("x", "web"), ep("x", "web2")],
        "hostNetwork x/agent is not selected"
    );
    assert!(deny_all.egress.is_empty());
    let broken = &list[&PolicyRef {
        namespace: "y".into(),
        name: "broken".into(),
    }];
    assert_eq!(broken.ingress, vec![ep("y", "cli"), ep("y", "web")]);
    assert_eq!(c.compiled.rejected.len(), 1);

    let e = c
        .compiled
        .explain_pods(&ep("x", "web"), &ep("x", "db"), Tcp, 5432)
        .unwrap();
    assert_eq!(e.flow.src, ip(X_WEB));
    assert!(e.verdict.allowed);
    assert!(
        c.compiled
            .explain_pods(&ep("x", "agent"), &ep("x", "db"), Tcp, 1)
            .is_none(),
        "hostNetwork pods have no endpoint"
    );
}
