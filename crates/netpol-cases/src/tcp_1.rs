//! The upstream NetworkPolicy e2e cases (kubernetes/kubernetes
//! test/e2e/network/netpol/network_policy.go, "NetworkPolicy between server
//! and client"), first half, as truth tables: same pods, same policies,
//! same expected matrix, each cell computed by the compiled maps and by the
//! evaluator. Each function is named after its upstream case. What the lab
//! versions need beyond the compiler is listed in this crate's README.

use crate::builders::*;
use crate::Driver;
use weft_policy::Protocol::Tcp;
use weft_policy::*;

pub fn should_support_a_default_deny_ingress_policy(k: &mut dyn Driver) {
    k.start(&["x/a", "x/b", "y/a", "y/b"], &[Tcp], &[80]);
    k.create(np("x", "deny-ingress", LabelSelector::all()).ingress_rules(vec![]));
    let mut r = k.reachability();
    r.expect_peer("", "x", false);
    k.validate(80, Tcp, &r);
}

pub fn should_support_a_default_deny_all_policy(k: &mut dyn Driver) {
    k.start(&["x/a", "x/b", "y/a"], &[Tcp], &[80]);
    k.create(
        np("x", "deny-all", LabelSelector::all())
            .ingress_rules(vec![])
            .egress_rules(vec![]),
    );
    let mut r = k.reachability();
    r.expect_peer("", "x", false);
    r.expect_peer("x", "", false);
    k.validate(80, Tcp, &r);
}

pub fn should_enforce_policy_to_allow_traffic_from_pods_within_server_namespace_based_on_pod_selector(
    k: &mut dyn Driver,
) {
    k.start(&["x/a", "x/b", "x/c", "y/a"], &[Tcp], &[80]);
    k.create(
        np("x", "x-a-allows-x-b", ml(&[("pod", "a")]))
            .ingress_rules(vec![from(vec![pods(ml(&[("pod", "b")]))])]),
    );
    let mut r = k.reachability();
    r.expect_all_ingress("x/a", false);
    r.expect("x/b", "x/a", true);
    k.validate(80, Tcp, &r);
}

pub fn should_enforce_policy_to_allow_ingress_traffic_for_a_target(k: &mut dyn Driver) {
    k.start(&["x/a", "x/b", "y/a"], &[Tcp], &[80]);
    k.create(np("x", "deny-all", LabelSelector::all()).ingress_rules(vec![]));
    let any_pod_anywhere = pods_in(LabelSelector::all(), LabelSelector::all());
    k.create(
        np("x", "allow-all-to-a", ml(&[("pod", "a")]))
            .ingress_rules(vec![from(vec![any_pod_anywhere])]),
    );
    let mut r = k.reachability();
    r.expect_all_ingress("x/a", true);
    r.expect_all_ingress("x/b", false);
    k.validate(80, Tcp, &r);
}

pub fn should_enforce_policy_to_allow_ingress_traffic_from_pods_in_all_namespaces(
    k: &mut dyn Driver,
) {
    k.start(&["x/a", "x/b", "y/a", "z/a"], &[Tcp], &[80]);
    k.create(
        np("x", "allow-from-another-ns", ml(&[("pod", "a")]))
            .ingress_rules(vec![from(vec![namespaces(ml(&[]))])]),
    );
    let r = k.reachability();
    k.validate(80, Tcp, &r);
}

pub fn should_enforce_policy_to_allow_traffic_only_from_a_different_namespace_based_on_namespace_selector(
    k: &mut dyn Driver,
) {
    k.start(&["x/a", "x/b", "y/a", "z/a"], &[Tcp], &[80]);
    k.create(
        np("x", "allow-client-a-via-ns-selector", ml(&[("pod", "a")]))
            .ingress_rules(vec![from(vec![namespaces(ns_named("y"))])]),
    );
    let mut r = k.reachability();
    r.expect_peer("x", "x/a", false);
    r.expect_peer("z", "x/a", false);
    k.validate(80, Tcp, &r);
}

pub fn should_enforce_policy_based_on_pod_selector_with_match_expressions(k: &mut dyn Driver) {
    k.start(&["x/a", "x/b", "y/a"], &[Tcp], &[80]);
    let allowed = LabelSelector::all().with("pod", Operator::In, &["b"]);
    k.create(
        np("x", "x-a-allows-x-b", ml(&[("pod", "a")]))
            .ingress_rules(vec![from(vec![pods(allowed)])]),
    );
    let mut r = k.reachability();
    r.expect_all_ingress("x/a", false);
    r.expect("x/b", "x/a", true);
    k.validate(80, Tcp, &r);
}

pub fn should_enforce_policy_based_on_namespace_selector_with_match_expressions(
    k: &mut dyn Driver,
) {
    k.start(&["x/a", "x/b", "y/a", "z/a"], &[Tcp], &[80]);
    let allowed = LabelSelector::all().with("kubernetes.io/metadata.name", Operator::In, &["y"]);
    k.create(
        np("x", "allow-ns-y-match-selector", ml(&[("pod", "a")]))
            .ingress_rules(vec![from(vec![namespaces(allowed)])]),
    );
    let mut r = k.reachability();
    r.expect_peer("x", "x/a", false);
    r.expect_peer("z", "x/a", false);
    k.validate(80, Tcp, &r);
}

pub fn should_enforce_policy_based_on_pod_selector_or_namespace_selector(k: &mut dyn Driver) {
    k.start(&["x/a", "x/b", "x/c", "y/a"], &[Tcp], &[80]);
    let not_x = LabelSelector::all().with("kubernetes.io/metadata.name", Operator::NotIn, &["x"]);
    k.create(
        np("x", "allow-ns-y-match-selector", ml(&[("pod", "a")])).ingress_rules(vec![from(vec![
            namespaces(not_x),
            pods(ml(&[("pod", "b")])),
        ])]),
    );
    let mut r = k.reachability();
    r.expect("x/a", "x/a", false);
    r.expect("x/c", "x/a", false);
    k.validate(80, Tcp, &r);
}

pub fn should_enforce_policy_based_on_pod_selector_and_namespace_selector(k: &mut dyn Driver) {
    k.start(&["x/a", "x/b", "y/a", "y/b", "z/b"], &[Tcp], &[80]);
    let not_x = LabelSelector::all().with("kubernetes.io/metadata.name", Operator::NotIn, &["x"]);
    k.create(
        np(
            "x",
            "allow-ns-y-podselector-and-nsselector",
            ml(&[("pod", "a")]),
        )
        .ingress_rules(vec![from(vec![pods_in(not_x, ml(&[("pod", "b")]))])]),
    );
    let mut r = k.reachability();
    r.expect_all_ingress("x/a", false);
    r.expect("y/b", "x/a", true);
    r.expect("z/b", "x/a", true);
    k.validate(80, Tcp, &r);
}

pub fn should_enforce_policy_based_on_multiple_pod_selectors_and_namespace_selectors(
    k: &mut dyn Driver,
) {
    k.start(&["x/a", "x/b", "y/a", "y/b", "y/c"], &[Tcp], &[80]);
    let not_x = LabelSelector::all().with("kubernetes.io/metadata.name", Operator::NotIn, &["x"]);
    let b_or_c = LabelSelector::all().with("pod", Operator::In, &["b", "c"]);
    k.create(
        np("x", "allow-ns-y-z-pod-b-c", ml(&[("pod", "a")]))
            .ingress_rules(vec![from(vec![pods_in(not_x, b_or_c)])]),
    );
    let mut r = k.reachability();
    r.expect_peer("x", "x/a", false);
    r.expect("y/a", "x/a", false);
    k.validate(80, Tcp, &r);
}

pub fn should_enforce_policy_based_on_any_pod_selectors(k: &mut dyn Driver) {
    k.start(&["x/a", "x/b", "x/c"], &[Tcp], &[80]);
    k.create(
        np("x", "allow-ns-x-pod-b-c", ml(&[("pod", "a")])).ingress_rules(vec![from(vec![
            pods(ml(&[("pod", "b")])),
            pods(ml(&[("pod", "c")])),
        ])]),
    );
    let mut r = k.reachability();
    r.expect_all_ingress("x/a", false);
    r.expect("x/b", "x/a", true);
    r.expect("x/c", "x/a", true);
    k.validate(80, Tcp, &r);
}

pub fn should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector(
    k: &mut dyn Driver,
) {
    k.start(&["x/a", "x/b", "y/a", "y/b", "z/a"], &[Tcp], &[80]);
    k.create(
        np(
            "x",
            "allow-ns-y-pod-a-via-namespace-pod-selector",
            ml(&[("pod", "a")]),
        )
        .ingress_rules(vec![from(vec![pods_in(
            ns_named("y"),
            ml(&[("pod", "a")]),
        )])]),
    );
    let mut r = k.reachability();
    r.expect_all_ingress("x/a", false);
    r.expect("y/a", "x/a", true);
    k.validate(80, Tcp, &r);
}

pub fn should_enforce_policy_based_on_ports(k: &mut dyn Driver) {
    k.start(&["x/a", "x/b", "y/a", "y/b", "z/a"], &[Tcp], &[81]);
    k.create(
        np("x", "allow-client-a-via-ns-selector", ml(&[("pod", "a")])).ingress_rules(vec![rule(
            Some(vec![namespaces(ns_named("y"))]),
            Some(vec![port(81, Some(Tcp))]),
        )]),
    );
    let mut r = k.reachability();
    r.expect_peer("x", "x/a", false);
    r.expect_peer("y", "x/a", true);
    r.expect_peer("z", "x/a", false);
    k.validate(81, Tcp, &r);
}

pub fn should_enforce_multiple_stacked_policies_with_overlapping_pod_selectors(k: &mut dyn Driver) {
    k.start(&["x/a", "x/b", "y/a", "y/b", "z/a"], &[Tcp], &[80, 81]);
    let from_y_on = |p| {
        vec![rule(
            Some(vec![namespaces(ns_named("y"))]),
            Some(vec![port(p, Some(Tcp))]),
        )]
    };
    k.create(
        np("x", "allow-client-a-via-ns-selector", ml(&[("pod", "a")])).ingress_rules(from_y_on(81)),
    );
    let mut allow = k.reachability();
    allow.expect_peer("x", "x/a", false);
    allow.expect_peer("y", "x/a", true);
    allow.expect_peer("z", "x/a", false);
    k.validate(81, Tcp, &allow);
    let mut deny = k.reachability();
    deny.expect_all_ingress("x/a", false);
    k.validate(80, Tcp, &deny);
    k.create(
        np(
            "x",
            "allow-client-a-via-ns-selector-80",
            ml(&[("pod", "a")]),
        )
        .ingress_rules(from_y_on(80)),
    );
    k.validate(80, Tcp, &allow);
}

pub fn should_support_allow_all_policy(k: &mut dyn Driver) {
    k.start(&["x/a", "x/b", "y/a"], &[Tcp], &[80, 81]);
    k.create(np("x", "allow-all", ml(&[])).ingress_rules(vec![Rule::default()]));
    let r = k.reachability();
    k.validate(80, Tcp, &r);
    k.validate(81, Tcp, &r);
}

pub fn should_allow_ingress_access_on_one_named_port(k: &mut dyn Driver) {
    k.start(&["x/a", "x/b", "y/a"], &[Tcp], &[80, 81]);
    k.create(
        np("x", "allow-all", ml(&[]))
            .ingress_rules(vec![rule(None, Some(vec![named("serve-81-tcp", None)]))]),
    );
    k.validate(81, Tcp, &k.reachability());
    let mut r80 = k.reachability();
    r80.expect_peer("", "x", false);
    k.validate(80, Tcp, &r80);
}

pub fn should_allow_ingress_access_from_namespace_on_one_named_port(k: &mut dyn Driver) {
    k.start(&["x/a", "x/b", "y/a", "z/a"], &[Tcp], &[80, 81]);
    k.create(
        np(
            "x",
            "allow-client-a-via-ns-selector-80",
            ml(&[("pod", "a")]),
        )
        .ingress_rules(vec![rule(
            Some(vec![namespaces(ns_named("y"))]),
            Some(vec![named("serve-80-tcp", Some(Tcp))]),
        )]),
    );
    let mut r = k.reachability();
    r.expect_peer("x", "x/a", false);
    r.expect_peer("z", "x/a", false);
    k.validate(80, Tcp, &r);
    let mut fail = k.reachability();
    fail.expect_all_ingress("x/a", false);
    k.validate(81, Tcp, &fail);
}

pub fn should_allow_egress_access_on_one_named_port(k: &mut dyn Driver) {
    k.start(&["x/a", "y/a"], &[Tcp], &[80, 81]);
    k.create(
        np("x", "allow-egress", ml(&[]))
            .egress_rules(vec![rule(None, Some(vec![named("serve-80-tcp", None)]))]),
    );
    k.validate(80, Tcp, &k.reachability());
    let mut r81 = k.reachability();
    r81.expect_peer("x", "", false);
    k.validate(81, Tcp, &r81);
}

pub fn should_enforce_updated_policy(k: &mut dyn Driver) {
    k.start(&["x/a", "y/a"], &[Tcp], &[81]);
    let mut policy =
        np("x", "allow-all-mutate-to-deny-all", ml(&[])).ingress_rules(vec![Rule::default()]);
    k.create(policy.clone());
    k.validate(81, Tcp, &k.reachability());
    policy.ingress = Some(vec![]);
    k.create(policy);
    let mut deny = k.reachability();
    deny.expect_peer("", "x", false);
    k.validate(81, Tcp, &deny);
}

pub fn should_allow_ingress_access_from_updated_namespace(k: &mut dyn Driver) {
    k.start(&["x/a", "y/a"], &[Tcp], &[80]);
    k.create(
        np("x", "allow-client-a-via-ns-selector", ml(&[("pod", "a")]))
            .ingress_rules(vec![from(vec![namespaces(ml(&[("ns2", "updated")]))])]),
    );
    let mut r = k.reachability();
    r.expect_all_ingress("x/a", false);
    k.validate(80, Tcp, &r);
    k.add_namespace_label("y", "ns2", "updated");
    let mut with_label = k.reachability();
    with_label.expect_all_ingress("x/a", false);
    with_label.expect_peer("y", "", true);
    k.validate(80, Tcp, &with_label);
}
