//! The upstream NetworkPolicy e2e cases (kubernetes/kubernetes
//! test/e2e/network/netpol/network_policy.go, "NetworkPolicy between server
//! and client", also "using UDP" and "using SCTP") as pure truth tables:
//! the cases themselves live in `crates/netpol-cases` (the lab's e2e port,
//! `tests/tests/netpol_privileged.rs`, runs the same ones against a real
//! cluster); here each cell is computed by the compiled maps and by the
//! evaluator, which must agree. One test per case, named after it.

mod common;

use common::netpol::Case;
use weft_netpol_cases::{tcp_1, tcp_2, udp_sctp};

fn run(case: fn(&mut dyn weft_netpol_cases::Driver)) {
    case(&mut Case::default());
}

macro_rules! cases {
    ($($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run($module::$name);
            }
        )*
    };
}

cases! {
    tcp_1::should_support_a_default_deny_ingress_policy,
    tcp_1::should_support_a_default_deny_all_policy,
    tcp_1::should_enforce_policy_to_allow_traffic_from_pods_within_server_namespace_based_on_pod_selector,
    tcp_1::should_enforce_policy_to_allow_ingress_traffic_for_a_target,
    tcp_1::should_enforce_policy_to_allow_ingress_traffic_from_pods_in_all_namespaces,
    tcp_1::should_enforce_policy_to_allow_traffic_only_from_a_different_namespace_based_on_namespace_selector,
    tcp_1::should_enforce_policy_based_on_pod_selector_with_match_expressions,
    tcp_1::should_enforce_policy_based_on_namespace_selector_with_match_expressions,
    tcp_1::should_enforce_policy_based_on_pod_selector_or_namespace_selector,
    tcp_1::should_enforce_policy_based_on_pod_selector_and_namespace_selector,
    tcp_1::should_enforce_policy_based_on_multiple_pod_selectors_and_namespace_selectors,
    tcp_1::should_enforce_policy_based_on_any_pod_selectors,
    tcp_1::should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector,
    tcp_1::should_enforce_policy_based_on_ports,
    tcp_1::should_enforce_multiple_stacked_policies_with_overlapping_pod_selectors,
    tcp_1::should_support_allow_all_policy,
    tcp_1::should_allow_ingress_access_on_one_named_port,
    tcp_1::should_allow_ingress_access_from_namespace_on_one_named_port,
    tcp_1::should_allow_egress_access_on_one_named_port,
    tcp_1::should_enforce_updated_policy,
    tcp_1::should_allow_ingress_access_from_updated_namespace,
    tcp_2::should_allow_ingress_access_from_updated_pod,
    tcp_2::should_deny_ingress_from_pods_on_other_namespaces,
    tcp_2::should_deny_ingress_access_to_updated_pod,
    tcp_2::should_deny_egress_from_pods_based_on_pod_selector,
    tcp_2::should_deny_egress_from_all_pods_in_a_namespace,
    tcp_2::should_work_with_ingress_egress_specified_together,
    tcp_2::should_support_denying_of_egress_traffic_on_the_client_side_even_if_the_server_explicitly_allows_this_traffic,
    tcp_2::should_enforce_egress_policy_allowing_traffic_to_a_server_in_a_different_namespace_based_on_pod_selector_and_namespace_selector,
    tcp_2::should_enforce_ingress_policy_allowing_any_port_traffic_to_a_server_on_a_specific_protocol,
    tcp_2::should_enforce_multiple_ingress_policies_with_ingress_allow_all_policy_taking_precedence,
    tcp_2::should_enforce_multiple_egress_policies_with_egress_allow_all_policy_taking_precedence,
    tcp_2::should_stop_enforcing_policies_after_they_are_deleted,
    tcp_2::should_allow_egress_access_to_server_in_cidr_block,
    tcp_2::should_enforce_except_clause_while_egress_access_to_server_in_cidr_block,
    tcp_2::should_ensure_an_ip_overlapping_both_ip_block_cidr_and_ip_block_except_is_allowed,
    tcp_2::should_enforce_policies_to_check_ingress_and_egress_policies_can_be_controlled_independently_based_on_pod_selector,
    tcp_2::should_not_mistakenly_treat_protocol_sctp_as_protocol_tcp_even_if_the_plugin_doesnt_support_sctp,
    tcp_2::should_properly_isolate_pods_that_are_selected_by_a_policy_allowing_sctp_even_if_the_plugin_doesnt_support_sctp,
    tcp_2::should_not_allow_access_by_tcp_when_a_policy_specifies_only_udp,
    tcp_2::should_enforce_policy_to_allow_traffic_based_on_namespace_selector_with_match_labels_using_default_ns_label,
    tcp_2::should_enforce_policy_based_on_namespace_selector_with_match_expressions_using_default_ns_label,
    udp_sctp::udp_should_support_a_default_deny_ingress_policy,
    udp_sctp::udp_should_enforce_policy_based_on_ports,
    udp_sctp::udp_should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector,
    udp_sctp::sctp_should_support_a_default_deny_ingress_policy,
    udp_sctp::sctp_should_enforce_policy_based_on_ports,
    udp_sctp::sctp_should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector,
}

#[test]
fn every_case_is_listed_once() {
    let mut names: Vec<&str> = weft_netpol_cases::ALL.iter().map(|(n, _)| *n).collect();
    assert_eq!(names.len(), 48, "the upstream suite has 48 cases");
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 48);
}
