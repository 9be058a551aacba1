use std::collections::BTreeMap;
use std::num::NonZeroU16;

use weft_datapath::policy::{EndpointLookup, FakePolicyMaps};
use weft_k8s as k8s;
use weft_policy::{MapOp, MemoryAllocator, Protocol};

use super::*;

/// The data path's fake, made to fail every write while `broken`.
struct Maps {
    fake: FakePolicyMaps,
    broken: bool,
    replaced: usize,
}

impl PolicyMaps for Maps {
    fn apply(&mut self, ops: &[MapOp], eps: EndpointLookup<'_>) -> Result<usize, DatapathError> {
        if self.broken {
            return Err(DatapathError::Protocol {
                op: "write",
                what: "injected".into(),
            });
        }
        self.fake.apply(ops, eps)
    }
    fn replace(
        &mut self,
        state: &Compiled,
        eps: EndpointLookup<'_>,
    ) -> Result<usize, DatapathError> {
        if self.broken {
            return Err(DatapathError::Protocol {
                op: "write",
                what: "injected".into(),
            });
        }
        self.replaced += 1;
        self.fake.replace(state, eps)
    }
    fn write_endpoint(
        &mut self,
        state: &Compiled,
        endpoint: &EndpointRef,
        ep: &PolicyEndpoint,
    ) -> Result<usize, DatapathError> {
        self.fake.write_endpoint(state, endpoint, ep)
    }
    fn rule_hits(&self) -> Result<BTreeMap<u32, u64>, DatapathError> {
        self.fake.rule_hits()
    }
    fn rule_ids(&self) -> &RuleIds {
        self.fake.rule_ids()
    }
}

fn pod(ns: &str, name: &str, node: &str, ip: &str) -> k8s::PodInfo {
    k8s::PodInfo {
        namespace: ns.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: [("pod".to_string(), name.to_string())].into(),
        ips: vec![ip.parse().unwrap()],
        named_ports: vec![k8s::NamedPort {
            name: "serve-80-tcp".into(),
            port: NonZeroU16::new(80).unwrap(),
            protocol: k8s::Protocol::Tcp,
        }],
        host_network: false,
        node: node.into(),
        phase: "Running".into(),
        terminating: false,
    }
}

fn deny_all_ingress(ns: &str) -> k8s::NetPolicy {
    k8s::NetPolicy {
        namespace: ns.into(),
        name: "deny".into(),
        pod_selector: k8s::LabelSelector::default(),
        policy_types: Some(vec![k8s::PolicyType::Ingress]),
        ingress: None,
        egress: None,
        audit: false,
    }
}

fn local(ns: &str, name: &str, id: u32, ip: &str) -> LocalEndpoint {
    LocalEndpoint {
        pod: EndpointRef {
            namespace: ns.into(),
            name: name.into(),
        },
        uid: format!("uid-{name}"),
        id,
        ips: vec![ip.parse().unwrap()],
    }
}

fn setup() -> Reconciler<Maps> {
    let mut r = Reconciler::new(
        "n1".into(),
        Maps {
            fake: FakePolicyMaps::new("n1", RuleIds::new()),
            broken: false,
            replaced: 0,
        },
        Box::new(MemoryAllocator::new()),
    );
    // this node sends to pods from 10.0.0.254
    r.source_towards = |_| Some("10.0.0.254".parse().unwrap());
    r
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Whether the maps let `src` open TCP `port` on `dst`.
fn passes(r: &Reconciler<Maps>, src: &str, dst: &str, port: u16) -> bool {
    r.maps().fake.judge(ip(src), ip(dst), 6, port).passes()
}

fn ep(ns: &str, name: &str) -> EndpointRef {
    EndpointRef {
        namespace: ns.into(),
        name: name.into(),
    }
}

#[test]
fn this_nodes_endpoints_and_ipcache_are_written_and_enforce() {
    let mut r = setup();
    let snap = Snapshot {
        pods: vec![
            pod("x", "a", "n1", "10.0.0.1"),
            pod("x", "b", "n2", "10.0.1.1"),
        ],
        policies: vec![deny_all_ingress("x")],
        ..Snapshot::default()
    };
    let a = local("x", "a", 7, "10.0.0.1");
    assert!(
        r.round(Some(&snap), std::slice::from_ref(&a), None)
            .unwrap()
            > 0
    );
    assert_eq!(
        r.maps().replaced,
        1,
        "the first round replaces what pinned maps held"
    );
    assert!(
        !passes(&r, "10.0.1.1", "10.0.0.1", 80),
        "x/b -> x/a denied at x/a's ingress"
    );
    assert!(
        passes(&r, "10.0.0.1", "10.0.1.1", 80),
        "x/a's egress is open"
    );
    // both pods are in this node's ipcache (b as a peer), x/b has no maps here
    assert_eq!(r.applied().ipcache["n1"].len(), 2);
    assert_eq!(r.applied().endpoints.len(), 1);
    assert_eq!(r.maps().fake.endpoints.len(), 1);
    // nothing new: nothing written
    assert_eq!(
        r.round(Some(&snap), std::slice::from_ref(&a), None)
            .unwrap(),
        0
    );
    // explain answers from the whole compile
    let e = r
        .compiled()
        .explain_pods(&ep("x", "b"), &ep("x", "a"), Protocol::Tcp, 80)
        .unwrap();
    assert!(!e.verdict.allowed);
    // the policy deleted: open again, by a plan, not a replace
    let open = Snapshot {
        policies: vec![],
        ..snap
    };
    r.round(Some(&open), std::slice::from_ref(&a), None)
        .unwrap();
    assert!(passes(&r, "10.0.1.1", "10.0.0.1", 80));
    assert_eq!(r.maps().replaced, 1);
}

#[test]
fn an_unknown_kubelet_pod_is_fail_closed_until_a_round_knows_it() {
    let mut r = setup();
    let a = local("x", "a", 1, "10.0.0.1");
    // the watches have not listed yet
    r.round(None, std::slice::from_ref(&a), Some(&a.pod))
        .unwrap();
    let p = &r.applied().endpoints[&a.pod];
    assert_eq!(p.ingress_isolated_by, Some(fail_closed_ref()));
    assert_eq!(p.egress_isolated_by, Some(fail_closed_ref()));
    assert_eq!(r.report.fail_closed, vec![a.pod.clone()]);
    assert!(!passes(&r, "10.0.9.9", "10.0.0.1", 80));
    assert!(!passes(&r, "10.0.0.1", "10.0.9.9", 80));
    // listed, but the pod is not there yet: still closed
    r.round(Some(&Snapshot::default()), std::slice::from_ref(&a), None)
        .unwrap();
    assert!(!passes(&r, "10.0.9.9", "10.0.0.1", 80));
    // the pod shows up, no policy selects it: open both ways
    let snap = Snapshot {
        pods: vec![pod("x", "a", "n1", "10.0.0.1")],
        ..Snapshot::default()
    };
    r.round(Some(&snap), std::slice::from_ref(&a), None)
        .unwrap();
    assert!(passes(&r, "10.0.9.9", "10.0.0.1", 80));
    assert!(passes(&r, "10.0.0.1", "10.0.9.9", 80));
    assert!(r.report.fail_closed.is_empty());
    // endpoints of other runtimes (no pod UID) get no policy state
    let mut podman = local("", "c", 3, "10.0.0.3");
    podman.uid = String::new();
    r.round(Some(&snap), &[a.clone(), podman], None).unwrap();
    assert_eq!(r.applied().endpoints.len(), 1);
}

#[test]
fn before_the_first_list_known_state_is_left_alone() {
    let mut r = setup();
    let a = local("x", "a", 1, "10.0.0.1");
    let snap = Snapshot {
        pods: vec![pod("x", "a", "n1", "10.0.0.1")],
        policies: vec![deny_all_ingress("x")],
        ..Snapshot::default()
    };
    r.round(Some(&snap), std::slice::from_ref(&a), None)
        .unwrap();
    let before = r.applied().clone();
    let b = local("x", "b", 2, "10.0.0.2");
    r.round(None, &[a.clone(), b.clone()], Some(&b.pod))
        .unwrap();
    assert_eq!(r.applied().endpoints[&a.pod], before.endpoints[&a.pod]);
    let mut cache = before.ipcache.clone();
    cache
        .get_mut("n1")
        .unwrap()
        .insert("10.0.0.254/32".parse().unwrap(), Identity::HOST);
    assert_eq!(
        r.applied().ipcache,
        cache,
        "the node's own address is the host"
    );
    assert_eq!(
        r.applied().endpoints[&b.pod].ingress_isolated_by,
        Some(fail_closed_ref())
    );
    assert!(!passes(&r, "10.0.0.1", "10.0.0.2", 80), "b is closed");
    assert!(
        passes(&r, "10.0.0.254", "10.0.0.2", 80),
        "but its node is let in"
    );
}

#[test]
fn a_restart_without_the_api_leaves_older_pods_alone() {
    let mut r = setup();
    let (a, b) = (
        local("x", "a", 1, "10.0.0.1"),
        local("x", "b", 2, "10.0.0.2"),
    );
    // a fresh weftd, the API away: b is being added, a was there before
    r.round(None, &[a.clone(), b.clone()], Some(&b.pod))
        .unwrap();
    assert!(!r.holds(&a.pod), "a keeps what the maps had");
    assert!(r.holds(&b.pod));
    assert_eq!(
        r.maps().fake.endpoints.len(),
        1,
        "only b's address has state"
    );
    assert!(!passes(&r, "10.0.0.1", "10.0.0.2", 80));
    assert!(passes(&r, "10.0.0.254", "10.0.0.2", 80));
}

#[test]
fn a_failed_write_is_retried_by_replacing_the_maps() {
    let mut r = setup();
    let a = local("x", "a", 1, "10.0.0.1");
    let open = Snapshot {
        pods: vec![
            pod("x", "a", "n1", "10.0.0.1"),
            pod("x", "b", "n2", "10.0.1.1"),
        ],
        ..Snapshot::default()
    };
    r.round(Some(&open), std::slice::from_ref(&a), None)
        .unwrap();
    let closed = Snapshot {
        policies: vec![deny_all_ingress("x")],
        ..open.clone()
    };
    r.maps.broken = true;
    let err = r
        .round(Some(&closed), std::slice::from_ref(&a), None)
        .unwrap_err();
    assert!(err.contains("injected"), "{err}");
    assert_eq!(r.report.last_error.as_deref(), Some(err.as_str()));
    r.maps.broken = false;
    r.round(Some(&closed), std::slice::from_ref(&a), None)
        .unwrap();
    assert_eq!(
        r.maps().replaced,
        2,
        "after a failure the maps are replaced whole"
    );
    assert!(r.report.last_error.is_none());
    assert!(!passes(&r, "10.0.1.1", "10.0.0.1", 80));
    assert_eq!(
        r.round(Some(&closed), std::slice::from_ref(&a), None)
            .unwrap(),
        0
    );
}

#[test]
fn an_invalid_policy_isolates_and_is_reported() {
    let mut r = setup();
    let mut bad = deny_all_ingress("x");
    bad.name = "bad".into();
    bad.ingress = Some(vec![k8s::IngressRule {
        from: Some(vec![k8s::Peer {
            pod_selector: None,
            namespace_selector: None,
            ip_block: Some(k8s::IpBlock {
                cidr: "10.0.0.0/24".parse().unwrap(),
                except: vec!["10.9.0.0/24".parse().unwrap()],
            }),
        }]),
        ports: None,
    }]);
    let snap = Snapshot {
        pods: vec![
            pod("x", "a", "n1", "10.0.0.1"),
            pod("x", "b", "n2", "10.0.0.2"),
        ],
        policies: vec![bad],
        ..Snapshot::default()
    };
    let a = local("x", "a", 1, "10.0.0.1");
    r.round(Some(&snap), std::slice::from_ref(&a), None)
        .unwrap();
    assert_eq!(r.compiled().rejected.len(), 1);
    let p = &r.applied().endpoints[&a.pod];
    assert_eq!(
        p.ingress_isolated_by.as_ref().map(|p| p.name.as_str()),
        Some("bad")
    );
    assert!(
        p.entries.values().all(|v| *v == AllowedBy::LocalNode),
        "opens nothing but the node"
    );
    assert!(
        !passes(&r, "10.0.0.2", "10.0.0.1", 80),
        "the cidr would have allowed it"
    );
}

#[test]
fn a_pod_remade_under_its_name_is_rewritten_under_its_new_id() {
    let mut r = setup();
    let snap = Snapshot {
        pods: vec![
            pod("x", "a", "n1", "10.0.0.1"),
            pod("x", "b", "n2", "10.0.1.1"),
        ],
        policies: vec![deny_all_ingress("x")],
        ..Snapshot::default()
    };
    r.round(Some(&snap), &[local("x", "a", 1, "10.0.0.1")], None)
        .unwrap();
    r.round(Some(&snap), &[local("x", "a", 2, "10.0.0.1")], None)
        .unwrap();
    let ids: Vec<u32> = r
        .maps()
        .fake
        .endpoints
        .values()
        .map(|e| e.endpoint)
        .collect();
    assert_eq!(ids, vec![2]);
    assert!(!passes(&r, "10.0.1.1", "10.0.0.1", 80));
    // the DEL of the last endpoint removes its state
    r.round(Some(&snap), &[], None).unwrap();
    assert!(r.applied().endpoints.is_empty());
    assert!(r.maps().fake.endpoints.is_empty());
    assert!(r.maps().fake.policy.is_empty());
}

#[test]
fn an_audited_policy_reports_and_turns_enforced_in_place() {
    let mut r = setup();
    let mut deny = deny_all_ingress("x");
    deny.audit = true;
    let snap = Snapshot {
        pods: vec![
            pod("x", "a", "n1", "10.0.0.1"),
            pod("x", "b", "n2", "10.0.1.1"),
        ],
        policies: vec![deny],
        ..Snapshot::default()
    };
    let a = local("x", "a", 7, "10.0.0.1");
    r.round(Some(&snap), std::slice::from_ref(&a), None)
        .unwrap();
    let j = r.maps().fake.judge(ip("10.0.1.1"), ip("10.0.0.1"), 6, 80);
    assert!(
        matches!(
            j.ingress,
            weft_datapath::policy::Decision::Denied {
                default: true,
                audit: true,
                ..
            }
        ),
        "a would-be drop at x/a: {j:?}"
    );
    assert!(j.passes(), "audit drops nothing");
    assert!(r.applied().endpoints[&a.pod].audit);

    // the annotation removed: the same policy enforces, by a plan
    let enforced = Snapshot {
        policies: vec![deny_all_ingress("x")],
        ..snap.clone()
    };
    assert!(
        r.round(Some(&enforced), std::slice::from_ref(&a), None)
            .unwrap()
            > 0
    );
    assert!(!passes(&r, "10.0.1.1", "10.0.0.1", 80));
    assert_eq!(r.maps().replaced, 1);

    // the namespace annotated: every policy of it back in audit
    let ns_audit = Snapshot {
        namespaces: vec![k8s::NamespaceInfo {
            name: "x".into(),
            labels: Default::default(),
            audit: true,
        }],
        ..enforced
    };
    r.round(Some(&ns_audit), std::slice::from_ref(&a), None)
        .unwrap();
    assert!(passes(&r, "10.0.1.1", "10.0.0.1", 80));
    assert!(r.applied().endpoints[&a.pod].audit);
}

/// After the first round compiles the whole cluster, a policy change
/// compiles only the pods it selects, with the same result.
#[test]
fn a_change_compiles_only_what_it_can_affect() {
    let mut r = setup();
    let mut deny_y = deny_all_ingress("y");
    deny_y.name = "deny-y".into();
    let snap = Snapshot {
        pods: vec![
            pod("x", "a", "n1", "10.0.0.1"),
            pod("x", "b", "n1", "10.0.0.2"),
            pod("y", "c", "n1", "10.0.0.3"),
        ],
        policies: vec![deny_y],
        ..Snapshot::default()
    };
    let locals = [
        local("x", "a", 1, "10.0.0.1"),
        local("x", "b", 2, "10.0.0.2"),
        local("y", "c", 3, "10.0.0.3"),
    ];
    r.round(Some(&snap), &locals, None).unwrap();
    assert_eq!(r.report.last_whole, Some("first"));
    assert_eq!(r.report.last_recompiled, 3);
    assert!(passes(&r, "10.0.0.3", "10.0.0.1", 80));

    // a deny-all in x: x's two pods, not y's
    let mut with_x = snap.clone();
    with_x.policies.push(deny_all_ingress("x"));
    r.round(Some(&with_x), &locals, None).unwrap();
    assert_eq!(r.report.last_whole, None);
    assert_eq!(r.report.last_recompiled, 2);
    assert!(!passes(&r, "10.0.0.3", "10.0.0.1", 80));
    assert!(!passes(&r, "10.0.0.1", "10.0.0.3", 80), "y's deny stays");
    assert_eq!(r.report.drifts, 0);
}

/// Policy `p{i}` in x: pod `p{i}` takes TCP from pod `p{from}` only.
fn one_to_one(i: usize, from: usize) -> k8s::NetPolicy {
    let sel = |n: usize| k8s::LabelSelector {
        match_labels: [("pod".to_string(), format!("p{n}"))].into(),
        ..k8s::LabelSelector::default()
    };
    k8s::NetPolicy {
        namespace: "x".into(),
        name: format!("p{i}"),
        pod_selector: sel(i),
        policy_types: Some(vec![k8s::PolicyType::Ingress]),
        ingress: Some(vec![k8s::IngressRule {
            from: Some(vec![k8s::Peer {
                pod_selector: Some(sel(from)),
                namespace_selector: None,
                ip_block: None,
            }]),
            ports: None,
        }]),
        egress: None,
        audit: false,
    }
}

fn pod_ip(i: usize) -> String {
    format!("10.0.{}.{}", i / 200, i % 200 + 1)
}

#[test]
fn one_endpoints_change_among_a_thousand_plans_only_that_endpoint() {
    const N: usize = 1000;
    let mut r = setup();
    let locals: Vec<LocalEndpoint> = (0..N)
        .map(|i| local("x", &format!("p{i}"), i as u32 + 1, &pod_ip(i)))
        .collect();
    let mut snap = Snapshot {
        pods: (0..N)
            .map(|i| pod("x", &format!("p{i}"), "n1", &pod_ip(i)))
            .collect(),
        policies: (0..N).map(|i| one_to_one(i, (i + 1) % N)).collect(),
        ..Snapshot::default()
    };
    r.round(Some(&snap), &locals, None).unwrap();
    assert_eq!(r.report.last_planned, N, "the first round is the full path");
    assert!(passes(&r, &pod_ip(6), &pod_ip(5), 80));

    // p5 now takes p7 instead of p6: one endpoint's entries change
    snap.policies[5] = one_to_one(5, 7);
    let before = r.applied().clone();
    let started = Instant::now();
    let writes = r.round(Some(&snap), &locals, None).unwrap();
    let took = started.elapsed();
    assert_eq!(r.report.last_whole, None);
    assert_eq!(r.report.last_recompiled, 1);
    assert_eq!(r.report.last_planned, 1, "only p5 is planned");
    assert!(writes <= 4, "p6's entry goes, p7's comes: {writes} writes");
    assert!(passes(&r, &pod_ip(7), &pod_ip(5), 80));
    assert!(!passes(&r, &pod_ip(6), &pod_ip(5), 80));
    eprintln!(
        "one change among {N}: round {took:?}, of which compile {} us",
        r.report.last_compile_micros
    );

    // the same as the full path: a fresh reconciler's first round
    let mut fresh = setup();
    fresh.round(Some(&snap), &locals, None).unwrap();
    assert_eq!(r.applied(), fresh.applied());
    let full_plan = plan(&before, fresh.applied());
    assert!(!full_plan.is_empty());
    assert!(
        full_plan.iter().all(|op| matches!(op,
            MapOp::PolicyUpsert { endpoint, .. } | MapOp::PolicyDelete { endpoint, .. }
                if *endpoint == ep("x", "p5"))),
        "the full path's plan writes p5's entries only: {full_plan:?}"
    );
    for i in [4, 5, 6, 7, 8] {
        for j in [4, 5, 6, 7, 8] {
            let (s, d) = (pod_ip(i), pod_ip(j));
            assert_eq!(
                r.maps().fake.judge(ip(&s), ip(&d), 6, 80),
                fresh.maps().fake.judge(ip(&s), ip(&d), 6, 80),
                "p{i} -> p{j}"
            );
        }
    }
    assert_eq!(r.report.drifts, 0);
}

#[test]
fn a_new_local_endpoint_takes_the_full_path() {
    let mut r = setup();
    let mut snap = Snapshot {
        pods: (0..3)
            .map(|i| pod("x", &format!("p{i}"), "n1", &pod_ip(i)))
            .collect(),
        policies: (0..3).map(|i| one_to_one(i, (i + 1) % 3)).collect(),
        ..Snapshot::default()
    };
    let mut locals: Vec<LocalEndpoint> = (0..3)
        .map(|i| local("x", &format!("p{i}"), i as u32 + 1, &pod_ip(i)))
        .collect();
    r.round(Some(&snap), &locals, None).unwrap();
    snap.pods.push(pod("x", "p3", "n1", &pod_ip(3)));
    locals.push(local("x", "p3", 4, &pod_ip(3)));
    r.round(Some(&snap), &locals, None).unwrap();
    assert_eq!(r.report.last_whole, None);
    assert_eq!(
        r.report.last_planned, 4,
        "a new endpoint and address: the full path"
    );
    assert!(
        passes(&r, &pod_ip(0), &pod_ip(3), 80),
        "p3 is not selected: open"
    );
    assert!(!passes(&r, &pod_ip(3), &pod_ip(0), 80), "p0 takes p1 only");
    let mut fresh = setup();
    fresh.round(Some(&snap), &locals, None).unwrap();
    assert_eq!(r.applied(), fresh.applied());
}
