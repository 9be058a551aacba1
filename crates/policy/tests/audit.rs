//! Audit mode: the compiled maps with each endpoint's audit flag give the
//! same outcome (FORWARDED, AUDIT, DROPPED) as the audit evaluator, on
//! truth tables and on random clusters with some policies in audit.

mod common;
mod gen;
mod gen_cnp;

use common::*;
use weft_policy::Protocol::Tcp;
use weft_policy::*;

fn audited(mut p: NetworkPolicy) -> NetworkPolicy {
    p.audit = true;
    p
}

fn deny_all_ingress(ns: &str, name: &str, selector: LabelSelector) -> NetworkPolicy {
    let mut p = np(ns, name, selector);
    p.policy_types = Some(vec![Direction::Ingress]);
    p
}

fn flow(src: &str, dst: &str, port: u16) -> Flow {
    Flow {
        src: ip(src),
        dst: ip(dst),
        proto: Tcp,
        port,
    }
}

/// Both the compiler and the evaluator, which must agree.
fn outcome(policies: &[NetworkPolicy], src: &str, dst: &str, port: u16) -> Outcome {
    let inv = small_cluster();
    let compiled = compile(policies, &inv, &mut MemoryAllocator::new()).unwrap();
    let f = flow(src, dst, port);
    let by_maps = compiled.check_audit(&f);
    let by_docs = evaluate_audit(policies, &[], &inv, &f);
    assert_eq!(by_maps, by_docs, "{f:?}");
    by_maps.outcome
}

#[test]
fn an_audited_deny_all_reports_audit_and_drops_nothing() {
    let p = [audited(deny_all_ingress("x", "deny", LabelSelector::all()))];
    assert_eq!(outcome(&p, Y_CLI, X_DB, 5432), Outcome::Audit);
    assert_eq!(outcome(&p, X_WEB, X_DB, 5432), Outcome::Audit);
    // the namespace's pods are in audit; others are untouched
    assert_eq!(outcome(&p, X_DB, Y_CLI, 80), Outcome::Forwarded);
    let inv = small_cluster();
    let c = compile(&p, &inv, &mut MemoryAllocator::new()).unwrap();
    let db = EndpointRef {
        namespace: "x".into(),
        name: "db".into(),
    };
    assert!(c.endpoints[&db].audit);
    // the audit verdict names the policy whose default deny would decide
    let f = flow(Y_CLI, X_DB, 5432);
    assert_eq!(
        c.check_audit(&f).verdict.ingress,
        DirectionVerdict::Denied(p[0].reference())
    );
}

#[test]
fn an_audited_allow_next_to_an_audited_deny_forwards() {
    let allow_web = audited(
        deny_all_ingress("x", "db-from-web", sel(&[("app", "db")]))
            .ingress_rules(vec![from(vec![pods(sel(&[("app", "web")]))])]),
    );
    let p = [
        audited(deny_all_ingress("x", "deny", LabelSelector::all())),
        allow_web,
    ];
    assert_eq!(outcome(&p, X_WEB, X_DB, 5432), Outcome::Forwarded);
    assert_eq!(outcome(&p, Y_CLI, X_DB, 5432), Outcome::Audit);
}

#[test]
fn an_enforced_policy_on_the_pod_wins_over_an_audited_one() {
    // db: enforced "only web may reach me", audited "nobody may".
    let enforced = deny_all_ingress("x", "db-from-web", sel(&[("app", "db")]))
        .ingress_rules(vec![from(vec![pods(sel(&[("app", "web")]))])]);
    let p = [
        enforced,
        audited(deny_all_ingress("x", "deny", LabelSelector::all())),
    ];
    // what the enforced policy denies is dropped
    assert_eq!(outcome(&p, Y_CLI, X_DB, 5432), Outcome::Dropped);
    // what it allows stays allowed (an audited policy never closes more)
    assert_eq!(outcome(&p, X_WEB, X_DB, 5432), Outcome::Forwarded);
    // web has only the audited policy: audit
    assert_eq!(outcome(&p, Y_CLI, X_WEB, 8080), Outcome::Audit);
}

#[test]
fn a_drop_anywhere_on_the_path_beats_an_audit() {
    // egress of x/web audited deny-all, ingress of y/cli enforced deny-all
    let mut egress = np("x", "no-egress", sel(&[("app", "web")]));
    egress.policy_types = Some(vec![Direction::Egress]);
    let p = [
        audited(egress),
        deny_all_ingress("y", "deny", sel(&[("app", "cli")])),
    ];
    assert_eq!(outcome(&p, X_WEB, Y_CLI, 80), Outcome::Dropped);
    assert_eq!(outcome(&p, X_WEB, Y_WEB, 80), Outcome::Audit);
}

#[test]
fn a_cluster_policy_on_the_pod_keeps_it_enforced() {
    let inv = small_cluster();
    let mut rng = Rng(7);
    let cnps: Vec<ClusterNetworkPolicy> = (0..8)
        .map(|i| gen_cnp::cluster_policy(&mut rng, &format!("c{i}")))
        .collect();
    let p = [audited(deny_all_ingress("x", "deny", LabelSelector::all()))];
    let c = compile_all(&p, &cnps, &inv, &mut MemoryAllocator::new()).unwrap();
    for w in inv.workloads.iter().filter(|w| !w.host_network) {
        let ep = EndpointRef {
            namespace: w.namespace.clone(),
            name: w.name.clone(),
        };
        let cluster_on_it = cnps
            .iter()
            .any(|c| c.selects(w) && !(c.ingress.is_empty() && c.egress.is_empty()));
        let want = w.namespace == "x" && !cluster_on_it;
        assert_eq!(c.endpoints[&ep].audit, want, "{ep:?}");
    }
}

/// Random clusters, NetworkPolicies (each in audit or not) and
/// ClusterNetworkPolicies: maps and evaluator agree on every outcome.
#[test]
fn compiled_audit_agrees_with_the_evaluator_on_random_clusters() {
    let (mut audits, mut drops, mut flows) = (0, 0, 0);
    for seed in 0..60u64 {
        let mut rng = Rng(0xA0D1_0000 + seed);
        let inventory = gen::inventory(&mut rng);
        let pods: Vec<Workload> = inventory
            .workloads
            .iter()
            .filter(|w| !w.host_network)
            .cloned()
            .collect();
        let policies: Vec<NetworkPolicy> = (0..1 + rng.below(4))
            .map(|i| {
                let mut p = gen::policy(&mut rng, &pods, &format!("np{i}"));
                p.audit = rng.chance(50);
                p
            })
            .collect();
        let cluster: Vec<ClusterNetworkPolicy> = (0..rng.below(2))
            .map(|i| gen_cnp::cluster_policy(&mut rng, &format!("cnp{i}")))
            .collect();
        let compiled =
            compile_all(&policies, &cluster, &inventory, &mut MemoryAllocator::new()).unwrap();
        let addrs = gen::addresses(&inventory);
        let ports = gen::probe_ports(&policies);
        for &src in &addrs {
            for &dst in addrs.iter().filter(|d| d.is_ipv4() == src.is_ipv4()) {
                for _ in 0..4 {
                    let f = Flow {
                        src,
                        dst,
                        proto: Tcp,
                        port: *rng.pick(&ports),
                    };
                    let by_maps = compiled.check_audit(&f);
                    let by_docs = evaluate_audit(&policies, &cluster, &inventory, &f);
                    assert_eq!(
                        by_maps,
                        by_docs,
                        "seed {seed}: {f:?}\npolicies: {}",
                        serde_json::to_string_pretty(&policies).unwrap()
                    );
                    match by_maps.outcome {
                        Outcome::Audit => audits += 1,
                        Outcome::Dropped => drops += 1,
                        Outcome::Forwarded => {}
                    }
                    flows += 1;
                }
            }
        }
    }
    assert!(flows > 10_000, "only {flows} flows");
    assert!(audits > 100 && drops > 100, "audits {audits} drops {drops}");
}

#[test]
fn a_preview_lists_what_the_candidate_newly_drops_and_allows() {
    let inv = small_cluster();
    // today: x/db open to all; y/web closed to all (enforced)
    let current = [deny_all_ingress("y", "closed", sel(&[("app", "web")]))];
    let flows = [
        flow(X_WEB, X_DB, 5432), // 0: stays allowed (web may)
        flow(Y_CLI, X_DB, 5432), // 1: newly dropped
        flow(X_WEB, Y_WEB, 80),  // 2: newly allowed by the update below
        flow(Y_CLI, Y_WEB, 80),  // 3: stays dropped
        flow(X_DB, Y_CLI, 80),   // 4: untouched
    ];
    let db_from_web = deny_all_ingress("x", "db-from-web", sel(&[("app", "db")]))
        .ingress_rules(vec![from(vec![pods(sel(&[("app", "web")]))])]);
    // an update of y/closed letting namespace x in, in audit as written:
    // judged as enforced all the same
    let opened = audited(
        deny_all_ingress("y", "closed", sel(&[("app", "web")]))
            .ingress_rules(vec![from(vec![namespaces(sel(&[("team", "a")]))])]),
    );
    let changes = preview::replay(&current, &[], &inv, &[db_from_web, opened], &flows);
    let got: Vec<(usize, bool, String)> = changes
        .iter()
        .map(|c| (c.index, c.newly_dropped(), c.decided_by()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, true, "ingress: x/db-from-web default deny".to_string()),
            (
                2,
                false,
                format!(
                    "ingress: {}",
                    AllowedBy::Rule(RuleRef {
                        policy: PolicyRef {
                            namespace: "y".into(),
                            name: "closed".into()
                        },
                        direction: Direction::Ingress,
                        index: 0,
                    })
                )
            ),
        ]
    );
    // an audited policy today is not "dropped before"
    let audited_now = [audited(deny_all_ingress("x", "deny", LabelSelector::all()))];
    let enforce_it = deny_all_ingress("x", "deny", LabelSelector::all());
    let changes = preview::replay(&audited_now, &[], &inv, &[enforce_it], &flows[..2]);
    assert_eq!(changes.len(), 2);
    assert!(changes
        .iter()
        .all(|c| c.before.outcome == Outcome::Audit && c.newly_dropped()));
}
