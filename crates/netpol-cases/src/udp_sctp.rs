//! The upstream suite's UDP ("NetworkPolicy between server and client using
//! UDP") and SCTP ("... using SCTP") cases as truth tables. SCTP is
//! judged as the API defines it; this kernel has no SCTP, so each SCTP case
//! also proves that its SCTP-only rules open neither TCP nor UDP.

use crate::builders::*;
use crate::Driver;
use weft_policy::Protocol::{Sctp, Tcp, Udp};
use weft_policy::*;

fn default_deny_ingress(k: &mut dyn Driver, proto: Protocol) {
    k.start(&["x/a", "x/b", "y/a", "y/b"], &[proto], &[80]);
    k.create(np("x", "deny-all", LabelSelector::all()).ingress_rules(vec![]));
    let mut r = k.reachability();
    r.expect_peer("", "x", false);
    k.validate(80, proto, &r);
}

fn enforce_policy_based_on_ports(k: &mut dyn Driver, proto: Protocol) {
    k.start(&["x/a", "x/b", "y/a", "z/a"], &[proto], &[81]);
    k.create(
        np("x", "allow-ingress-on-port-81-ns-x", ml(&[("pod", "a")])).ingress_rules(vec![rule(
            Some(vec![namespaces(ns_named("y"))]),
            Some(vec![port(81, Some(proto))]),
        )]),
    );
    let mut r = k.reachability();
    r.expect_peer("x", "x/a", false);
    r.expect_peer("z", "x/a", false);
    k.validate(81, proto, &r);
    // The rule names one protocol: every other one stays shut for x/a.
    let mut shut = k.reachability();
    shut.expect_all_ingress("x/a", false);
    for other in [Tcp, Udp, Sctp].into_iter().filter(|p| *p != proto) {
        k.validate(81, other, &shut);
    }
}

fn allow_only_from_a_pod_in_a_different_namespace(k: &mut dyn Driver, proto: Protocol) {
    k.start(&["x/a", "x/b", "y/a"], &[proto], &[80]);
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
    k.validate(80, proto, &r);
}

pub fn udp_should_support_a_default_deny_ingress_policy(k: &mut dyn Driver) {
    default_deny_ingress(k, Udp);
}

pub fn udp_should_enforce_policy_based_on_ports(k: &mut dyn Driver) {
    enforce_policy_based_on_ports(k, Udp);
}

pub fn udp_should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector(
    k: &mut dyn Driver,
) {
    allow_only_from_a_pod_in_a_different_namespace(k, Udp);
}

pub fn sctp_should_support_a_default_deny_ingress_policy(k: &mut dyn Driver) {
    default_deny_ingress(k, Sctp);
}

pub fn sctp_should_enforce_policy_based_on_ports(k: &mut dyn Driver) {
    enforce_policy_based_on_ports(k, Sctp);
}

pub fn sctp_should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector(
    k: &mut dyn Driver,
) {
    allow_only_from_a_pod_in_a_different_namespace(k, Sctp);
}
