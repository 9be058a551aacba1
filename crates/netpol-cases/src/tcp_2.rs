//! The upstream NetworkPolicy e2e cases, second half ("NetworkPolicy between
//! server and client" from "should allow ingress access from updated pod"
//! on), as truth tables computed by the compiled maps and the
//! evaluator. See upstream_netpol_tcp_1.rs.

use crate::builders::*;
use crate::Driver;
use weft_policy::Protocol::{Sctp, Tcp, Udp};
use weft_policy::*;

pub fn should_allow_ingress_access_from_updated_pod(k: &mut dyn Driver) {
    k.start(&["x/a", "x/b"], &[Tcp], &[80]);
    let match_labels = [("pod", "b"), ("pod2", "updated")];
    k.create(
        np("x", "allow-client-a-via-pod-selector", ml(&[("pod", "a")]))
            .ingress_rules(vec![from(vec![pods(ml(&match_labels))])]),
    );
    let mut r = k.reachability();
    r.expect_all_ingress("x/a", false);
    k.validate(80, Tcp, &r);
    k.add_pod_labels("x/b", &match_labels);
    let mut with_label = k.reachability();
    with_label.expect_all_ingress("x/a", false);
    with_label.expect("x/b", "x/a", true);
    k.validate(80, Tcp, &with_label);
}

pub fn should_deny_ingress_from_pods_on_other_namespaces(k: &mut dyn Driver) {
    k.start(&["x/a", "x/b", "y/a", "z/a"], &[Tcp], &[80]);
    k.create(
        np("x", "deny-empty-policy", LabelSelector::all())
            .ingress_rules(vec![from(vec![pods(ml(&[]))])]),
    );
    let mut r = k.reachability();
    r.expect_peer("y", "x", false);
    r.expect_peer("z", "x", false);
    k.validate(80, Tcp, &r);
}

pub fn should_deny_ingress_access_to_updated_pod(k: &mut dyn Driver) {
    k.start(&["x/a", "y/a"], &[Tcp], &[80]);
    k.create(
        np(
            "x",
            "deny-ingress-via-label-selector",
            ml(&[("target", "isolated")]),
        )
        .ingress_rules(vec![]),
    );
    k.validate(80, Tcp, &k.reachability());
    k.add_pod_labels("x/a", &[("target", "isolated")]);
    let mut isolated = k.reachability();
    isolated.expect_all_ingress("x/a", false);
    k.validate(80, Tcp, &isolated);
}

pub fn should_deny_egress_from_pods_based_on_pod_selector(k: &mut dyn Driver) {
    k.start(&["x/a", "x/b", "y/a"], &[Tcp], &[80]);
    k.create(np("x", "deny-egress-pod-a", ml(&[("pod", "a")])).egress_rules(vec![]));
    let mut r = k.reachability();
    r.expect_all_egress("x/a", false);
    k.validate(80, Tcp, &r);
}

pub fn should_deny_egress_from_all_pods_in_a_namespace(k: &mut dyn Driver) {
    k.start(&["x/a", "x/b", "y/a"], &[Tcp], &[80]);
    k.create(np("x", "deny-egress-ns-x", LabelSelector::all()).egress_rules(vec![]));
    let mut r = k.reachability();
    r.expect_peer("x", "", false);
    k.validate(80, Tcp, &r);
}

pub fn should_work_with_ingress_egress_specified_together(k: &mut dyn Driver) {
    k.start(&["x/a", "x/b", "x/c", "y/a"], &[Tcp], &[80, 81]);
    let mut policy = np("x", "allow-client-a-via-pod-selector", ml(&[("pod", "a")]))
        .ingress_rules(vec![from(vec![pods(ml(&[("pod", "b")]))])]);
    policy.egress = Some(vec![rule(None, Some(vec![port(80, None)]))]);
    policy.policy_types = Some(vec![Direction::Egress, Direction::Ingress]);
    k.create(policy);
    let mut r80 = k.reachability();
    r80.expect_all_ingress("x/a", false);
    r80.expect("x/b", "x/a", true);
    k.validate(80, Tcp, &r80);
    let mut r81 = k.reachability();
    r81.expect_all_ingress("x/a", false);
    r81.expect_all_egress("x/a", false);
    r81.expect("x/b", "x/a", true);
    k.validate(81, Tcp, &r81);
}

pub fn should_support_denying_of_egress_traffic_on_the_client_side_even_if_the_server_explicitly_allows_this_traffic(
    k: &mut dyn Driver,
) {
    k.start(&["x/a", "y/a", "y/b"], &[Tcp], &[80]);
    k.create(
        np("x", "allow-to-ns-y-pod-a", ml(&[("pod", "a")])).egress_rules(vec![from(vec![
            pods_in(ns_named("y"), ml(&[("pod", "a")])),
        ])]),
    );
    let from_x_a = || vec![from(vec![pods_in(ns_named("x"), ml(&[("pod", "a")]))])];
    k.create(
        np(
            "y",
            "allow-from-xa-on-ya-match-selector",
            ml(&[("pod", "a")]),
        )
        .ingress_rules(from_x_a()),
    );
    k.create(
        np(
            "y",
            "allow-from-xa-on-yb-match-selector",
            ml(&[("pod", "b")]),
        )
        .ingress_rules(from_x_a()),
    );
    let mut r = k.reachability();
    r.expect_peer("x/a", "", false);
    r.expect_peer("", "y/a", false);
    r.expect_peer("x/a", "y/a", true);
    r.expect_peer("", "y/b", false);
    k.validate(80, Tcp, &r);
}

pub fn should_enforce_egress_policy_allowing_traffic_to_a_server_in_a_different_namespace_based_on_pod_selector_and_namespace_selector(
    k: &mut dyn Driver,
) {
    k.start(&["x/a", "y/a", "y/b"], &[Tcp], &[80]);
    k.create(
        np("x", "allow-to-ns-y-pod-a", ml(&[("pod", "a")])).egress_rules(vec![from(vec![
            pods_in(ns_named("y"), ml(&[("pod", "a")])),
        ])]),
    );
    let mut r = k.reachability();
    r.expect_all_egress("x/a", false);
    r.expect("x/a", "y/a", true);
    k.validate(80, Tcp, &r);
}

pub fn should_enforce_ingress_policy_allowing_any_port_traffic_to_a_server_on_a_specific_protocol(
    k: &mut dyn Driver,
) {
    k.start(&["x/a", "y/a"], &[Tcp, Udp], &[80]);
    k.create(
        np("x", "allow-ingress-by-proto", ml(&[("pod", "a")]))
            .ingress_rules(vec![rule(None, Some(vec![proto_only(Tcp)]))]),
    );
    k.validate(80, Tcp, &k.reachability());
    let mut udp = k.reachability();
    udp.expect_peer("", "x/a", false);
    k.validate(80, Udp, &udp);
}

pub fn should_enforce_multiple_ingress_policies_with_ingress_allow_all_policy_taking_precedence(
    k: &mut dyn Driver,
) {
    k.start(&["x/a", "y/a"], &[Tcp], &[81]);
    k.create(
        np("x", "allow-ingress-port-80", ml(&[]))
            .ingress_rules(vec![rule(None, Some(vec![port(80, None)]))]),
    );
    let mut r = k.reachability();
    r.expect_peer("", "x", false);
    k.validate(81, Tcp, &r);
    k.create(np("x", "allow-ingress", ml(&[])).ingress_rules(vec![Rule::default()]));
    k.validate(81, Tcp, &k.reachability());
}

pub fn should_enforce_multiple_egress_policies_with_egress_allow_all_policy_taking_precedence(
    k: &mut dyn Driver,
) {
    k.start(&["x/a", "y/a"], &[Tcp], &[81]);
    k.create(
        np("x", "allow-egress-port-80", ml(&[]))
            .egress_rules(vec![rule(None, Some(vec![port(80, None)]))]),
    );
    let mut r = k.reachability();
    r.expect_peer("x", "", false);
    k.validate(81, Tcp, &r);
    k.create(np("x", "allow-egress", ml(&[])).egress_rules(vec![Rule::default()]));
    k.validate(81, Tcp, &k.reachability());
}

pub fn should_stop_enforcing_policies_after_they_are_deleted(k: &mut dyn Driver) {
    k.start(&["x/a", "y/a"], &[Tcp], &[80]);
    k.create(
        np("x", "deny-all", LabelSelector::all())
            .ingress_rules(vec![])
            .egress_rules(vec![]),
    );
    let mut r = k.reachability();
    r.expect_peer("x", "", false);
    r.expect_peer("", "x", false);
    k.validate(80, Tcp, &r);
    k.delete_all();
    k.validate(80, Tcp, &k.reachability());
}

/// makeLargeCIDRForIP: the /4 around an address.
fn large_cidr_for(addr: &str) -> String {
    let net: ipnet::IpNet = format!("{addr}/4").parse().unwrap();
    net.trunc().to_string()
}

pub fn should_allow_egress_access_to_server_in_cidr_block(k: &mut dyn Driver) {
    k.start(&["x/a", "y/a", "y/b"], &[Tcp], &[80]);
    let server = format!("{}/32", k.pod_ip("y/b"));
    k.create(
        np(
            "x",
            "allow-client-a-via-cidr-egress-rule",
            ml(&[("pod", "a")]),
        )
        .egress_rules(vec![from(vec![cidr(&server, &[])])]),
    );
    let mut r = k.reachability();
    r.expect_all_egress("x/a", false);
    r.expect("x/a", "y/b", true);
    k.validate(80, Tcp, &r);
}

pub fn should_enforce_except_clause_while_egress_access_to_server_in_cidr_block(
    k: &mut dyn Driver,
) {
    k.start(&["x/a", "x/b", "x/c"], &[Tcp], &[80]);
    let b = k.pod_ip("x/b");
    let (allow, except) = (large_cidr_for(&b), format!("{b}/32"));
    k.create(
        np(
            "x",
            "allow-client-a-via-cidr-egress-rule",
            ml(&[("pod", "a")]),
        )
        .egress_rules(vec![from(vec![cidr(&allow, &[&except])])]),
    );
    let mut r = k.reachability();
    r.expect("x/a", "x/b", false);
    k.validate(80, Tcp, &r);
}

pub fn should_ensure_an_ip_overlapping_both_ip_block_cidr_and_ip_block_except_is_allowed(
    k: &mut dyn Driver,
) {
    k.start(&["x/a", "x/b", "x/c"], &[Tcp], &[80]);
    let b = k.pod_ip("x/b");
    let (allow, b32) = (large_cidr_for(&b), format!("{b}/32"));
    let name = "allow-client-a-via-cidr-egress-rule";
    k.create(
        np("x", name, ml(&[("pod", "a")])).egress_rules(vec![from(vec![cidr(&allow, &[&b32])])]),
    );
    let mut r = k.reachability();
    r.expect("x/a", "x/b", false);
    k.validate(80, Tcp, &r);
    // Upstream updates the policy of the same name to allow only x/b.
    k.create(np("x", name, ml(&[("pod", "a")])).egress_rules(vec![from(vec![cidr(&b32, &[])])]));
    let mut allow_b = k.reachability();
    allow_b.expect_all_egress("x/a", false);
    allow_b.expect("x/a", "x/b", true);
    k.validate(80, Tcp, &allow_b);
}

pub fn should_enforce_policies_to_check_ingress_and_egress_policies_can_be_controlled_independently_based_on_pod_selector(
    k: &mut dyn Driver,
) {
    k.start(&["x/a", "x/b", "y/a"], &[Tcp], &[80]);
    let target = ml(&[("pod", "a")]);
    k.create(
        np("x", "allow-egress-for-target", target.clone()).egress_rules(vec![Rule::default()]),
    );
    k.validate(80, Tcp, &k.reachability());
    k.create(np("x", "deny-ingress-via-label-selector", target).ingress_rules(vec![]));
    let mut r = k.reachability();
    r.expect_all_ingress("x/a", false);
    k.validate(80, Tcp, &r);
}

/// Also checked: UDP on the port stays shut, and SCTP itself is open (the
/// compiled entry exists; this kernel just never sees SCTP).
pub fn should_not_mistakenly_treat_protocol_sctp_as_protocol_tcp_even_if_the_plugin_doesnt_support_sctp(
    k: &mut dyn Driver,
) {
    k.start(&["x/a", "y/a"], &[Tcp], &[81]);
    k.create(np("x", "deny-ingress", LabelSelector::all()).ingress_rules(vec![]));
    k.create(
        np(
            "x",
            "allow-only-sctp-ingress-on-port-81",
            ml(&[("pod", "a")]),
        )
        .ingress_rules(vec![rule(None, Some(vec![port(81, Some(Sctp))]))]),
    );
    let mut r = k.reachability();
    r.expect_peer("", "x", false);
    k.validate(81, Tcp, &r);
    k.validate(81, Udp, &r);
    k.validate(81, Sctp, &k.reachability());
}

pub fn should_properly_isolate_pods_that_are_selected_by_a_policy_allowing_sctp_even_if_the_plugin_doesnt_support_sctp(
    k: &mut dyn Driver,
) {
    k.start(&["x/a", "y/a"], &[Tcp], &[81]);
    k.create(
        np(
            "x",
            "allow-only-sctp-ingress-on-port-80",
            ml(&[("pod", "a")]),
        )
        .ingress_rules(vec![rule(None, Some(vec![port(80, Some(Sctp))]))]),
    );
    let mut r = k.reachability();
    r.expect_all_ingress("x/a", false);
    k.validate(81, Tcp, &r);
    k.validate(80, Tcp, &r);
    k.validate(80, Udp, &r);
}

pub fn should_not_allow_access_by_tcp_when_a_policy_specifies_only_udp(k: &mut dyn Driver) {
    k.start(&["x/a", "y/a"], &[Tcp], &[81]);
    k.create(
        np(
            "x",
            "allow-only-udp-ingress-on-port-81",
            ml(&[("pod", "a")]),
        )
        .ingress_rules(vec![rule(None, Some(vec![port(81, Some(Udp))]))]),
    );
    let mut r = k.reachability();
    r.expect_all_ingress("x/a", false);
    k.validate(81, Tcp, &r);
}

pub fn should_enforce_policy_to_allow_traffic_based_on_namespace_selector_with_match_labels_using_default_ns_label(
    k: &mut dyn Driver,
) {
    k.start(&["x/a", "x/b", "y/a", "z/a"], &[Tcp], &[80]);
    k.create(
        np(
            "x",
            "allow-client-a-via-ns-selector-for-immutable-ns-label",
            ml(&[("pod", "a")]),
        )
        .ingress_rules(vec![from(vec![namespaces(ns_named("y"))])]),
    );
    let mut r = k.reachability();
    r.expect_peer("x", "x/a", false);
    r.expect_peer("z", "x/a", false);
    k.validate(80, Tcp, &r);
}

pub fn should_enforce_policy_based_on_namespace_selector_with_match_expressions_using_default_ns_label(
    k: &mut dyn Driver,
) {
    k.start(&["x/a", "x/b", "y/a", "z/a"], &[Tcp], &[80]);
    let not_y = LabelSelector::all().with("kubernetes.io/metadata.name", Operator::NotIn, &["y"]);
    k.create(
        np(
            "x",
            "allow-ns-y-match-selector-for-immutable-ns-label",
            ml(&[("pod", "a")]),
        )
        .egress_rules(vec![from(vec![namespaces(not_y)])]),
    );
    let mut r = k.reachability();
    r.expect_peer("x/a", "y", false);
    k.validate(80, Tcp, &r);
}
