//! The upstream NetworkPolicy e2e cases (kubernetes/kubernetes
//! test/e2e/network/netpol/network_policy.go), written once and run by two
//! drivers: `crates/policy/tests/upstream_netpol.rs` computes every cell
//! with the compiled maps and the evaluator, `tests/tests/netpol_*.rs`
//! creates the pods and policies in a lab cluster through the API server
//! and probes every cell over the network.
//!
//! The suite's world: namespaces x, y, z labelled `ns=<name>` (and the API
//! server's `kubernetes.io/metadata.name`), pods a, b, c labelled
//! `pod=<name>`, each serving the case's ports and protocols on container
//! ports named `serve-<port>-<proto>`. A case starts its pods
//! ([`Driver::start`]), creates or updates policies, changes labels, and
//! checks the whole matrix against upstream's `Reachability` table
//! ([`Driver::validate`]; loopback cells are not checked, as upstream).

pub mod builders;
mod reach;
pub mod tcp_1;
pub mod tcp_2;
pub mod udp_sctp;

pub use reach::Reach;
use weft_policy::{NetworkPolicy, Protocol};

/// What a case does to a cluster, real or computed.
pub trait Driver {
    /// The case's pods ("x/a", ...), each serving `ports` over `protocols`,
    /// and no policy.
    fn start(&mut self, pods: &[&str], protocols: &[Protocol], ports: &[u16]);
    /// CreatePolicy / UpdatePolicy: a policy of the same name is replaced.
    fn create(&mut self, policy: NetworkPolicy);
    fn delete_all(&mut self);
    fn add_pod_labels(&mut self, pod: &str, labels: &[(&str, &str)]);
    fn add_namespace_label(&mut self, ns: &str, key: &str, value: &str);
    /// The pod's (first) address.
    fn pod_ip(&self, pod: &str) -> String;
    /// The case's pods, every cell allowed.
    fn reachability(&self) -> Reach;
    /// Every cell of the matrix on `port`/`proto` as `want` says, else panic.
    fn validate(&self, port: u16, proto: Protocol, want: &Reach);
}

/// A case: its upstream name (spaces and punctuation as underscores, the
/// UDP and SCTP variants prefixed) and its steps.
pub type Case = (&'static str, fn(&mut dyn Driver));

/// Every case, in upstream's order.
pub const ALL: &[Case] = &[
    ("should_support_a_default_deny_ingress_policy", tcp_1::should_support_a_default_deny_ingress_policy),
    ("should_support_a_default_deny_all_policy", tcp_1::should_support_a_default_deny_all_policy),
    ("should_enforce_policy_to_allow_traffic_from_pods_within_server_namespace_based_on_pod_selector", tcp_1::should_enforce_policy_to_allow_traffic_from_pods_within_server_namespace_based_on_pod_selector),
    ("should_enforce_policy_to_allow_ingress_traffic_for_a_target", tcp_1::should_enforce_policy_to_allow_ingress_traffic_for_a_target),
    ("should_enforce_policy_to_allow_ingress_traffic_from_pods_in_all_namespaces", tcp_1::should_enforce_policy_to_allow_ingress_traffic_from_pods_in_all_namespaces),
    ("should_enforce_policy_to_allow_traffic_only_from_a_different_namespace_based_on_namespace_selector", tcp_1::should_enforce_policy_to_allow_traffic_only_from_a_different_namespace_based_on_namespace_selector),
    ("should_enforce_policy_based_on_pod_selector_with_match_expressions", tcp_1::should_enforce_policy_based_on_pod_selector_with_match_expressions),
    ("should_enforce_policy_based_on_namespace_selector_with_match_expressions", tcp_1::should_enforce_policy_based_on_namespace_selector_with_match_expressions),
    ("should_enforce_policy_based_on_pod_selector_or_namespace_selector", tcp_1::should_enforce_policy_based_on_pod_selector_or_namespace_selector),
    ("should_enforce_policy_based_on_pod_selector_and_namespace_selector", tcp_1::should_enforce_policy_based_on_pod_selector_and_namespace_selector),
    ("should_enforce_policy_based_on_multiple_pod_selectors_and_namespace_selectors", tcp_1::should_enforce_policy_based_on_multiple_pod_selectors_and_namespace_selectors),
    ("should_enforce_policy_based_on_any_pod_selectors", tcp_1::should_enforce_policy_based_on_any_pod_selectors),
    ("should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector", tcp_1::should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector),
    ("should_enforce_policy_based_on_ports", tcp_1::should_enforce_policy_based_on_ports),
    ("should_enforce_multiple_stacked_policies_with_overlapping_pod_selectors", tcp_1::should_enforce_multiple_stacked_policies_with_overlapping_pod_selectors),
    ("should_support_allow_all_policy", tcp_1::should_support_allow_all_policy),
    ("should_allow_ingress_access_on_one_named_port", tcp_1::should_allow_ingress_access_on_one_named_port),
    ("should_allow_ingress_access_from_namespace_on_one_named_port", tcp_1::should_allow_ingress_access_from_namespace_on_one_named_port),
    ("should_allow_egress_access_on_one_named_port", tcp_1::should_allow_egress_access_on_one_named_port),
    ("should_enforce_updated_policy", tcp_1::should_enforce_updated_policy),
    ("should_allow_ingress_access_from_updated_namespace", tcp_1::should_allow_ingress_access_from_updated_namespace),
    ("should_allow_ingress_access_from_updated_pod", tcp_2::should_allow_ingress_access_from_updated_pod),
    ("should_deny_ingress_from_pods_on_other_namespaces", tcp_2::should_deny_ingress_from_pods_on_other_namespaces),
    ("should_deny_ingress_access_to_updated_pod", tcp_2::should_deny_ingress_access_to_updated_pod),
    ("should_deny_egress_from_pods_based_on_pod_selector", tcp_2::should_deny_egress_from_pods_based_on_pod_selector),
    ("should_deny_egress_from_all_pods_in_a_namespace", tcp_2::should_deny_egress_from_all_pods_in_a_namespace),
    ("should_work_with_ingress_egress_specified_together", tcp_2::should_work_with_ingress_egress_specified_together),
    ("should_support_denying_of_egress_traffic_on_the_client_side_even_if_the_server_explicitly_allows_this_traffic", tcp_2::should_support_denying_of_egress_traffic_on_the_client_side_even_if_the_server_explicitly_allows_this_traffic),
    ("should_enforce_egress_policy_allowing_traffic_to_a_server_in_a_different_namespace_based_on_pod_selector_and_namespace_selector", tcp_2::should_enforce_egress_policy_allowing_traffic_to_a_server_in_a_different_namespace_based_on_pod_selector_and_namespace_selector),
    ("should_enforce_ingress_policy_allowing_any_port_traffic_to_a_server_on_a_specific_protocol", tcp_2::should_enforce_ingress_policy_allowing_any_port_traffic_to_a_server_on_a_specific_protocol),
    ("should_enforce_multiple_ingress_policies_with_ingress_allow_all_policy_taking_precedence", tcp_2::should_enforce_multiple_ingress_policies_with_ingress_allow_all_policy_taking_precedence),
    ("should_enforce_multiple_egress_policies_with_egress_allow_all_policy_taking_precedence", tcp_2::should_enforce_multiple_egress_policies_with_egress_allow_all_policy_taking_precedence),
    ("should_stop_enforcing_policies_after_they_are_deleted", tcp_2::should_stop_enforcing_policies_after_they_are_deleted),
    ("should_allow_egress_access_to_server_in_cidr_block", tcp_2::should_allow_egress_access_to_server_in_cidr_block),
    ("should_enforce_except_clause_while_egress_access_to_server_in_cidr_block", tcp_2::should_enforce_except_clause_while_egress_access_to_server_in_cidr_block),
    ("should_ensure_an_ip_overlapping_both_ip_block_cidr_and_ip_block_except_is_allowed", tcp_2::should_ensure_an_ip_overlapping_both_ip_block_cidr_and_ip_block_except_is_allowed),
    ("should_enforce_policies_to_check_ingress_and_egress_policies_can_be_controlled_independently_based_on_pod_selector", tcp_2::should_enforce_policies_to_check_ingress_and_egress_policies_can_be_controlled_independently_based_on_pod_selector),
    ("should_not_mistakenly_treat_protocol_sctp_as_protocol_tcp_even_if_the_plugin_doesnt_support_sctp", tcp_2::should_not_mistakenly_treat_protocol_sctp_as_protocol_tcp_even_if_the_plugin_doesnt_support_sctp),
    ("should_properly_isolate_pods_that_are_selected_by_a_policy_allowing_sctp_even_if_the_plugin_doesnt_support_sctp", tcp_2::should_properly_isolate_pods_that_are_selected_by_a_policy_allowing_sctp_even_if_the_plugin_doesnt_support_sctp),
    ("should_not_allow_access_by_tcp_when_a_policy_specifies_only_udp", tcp_2::should_not_allow_access_by_tcp_when_a_policy_specifies_only_udp),
    ("should_enforce_policy_to_allow_traffic_based_on_namespace_selector_with_match_labels_using_default_ns_label", tcp_2::should_enforce_policy_to_allow_traffic_based_on_namespace_selector_with_match_labels_using_default_ns_label),
    ("should_enforce_policy_based_on_namespace_selector_with_match_expressions_using_default_ns_label", tcp_2::should_enforce_policy_based_on_namespace_selector_with_match_expressions_using_default_ns_label),
    ("udp_should_support_a_default_deny_ingress_policy", udp_sctp::udp_should_support_a_default_deny_ingress_policy),
    ("udp_should_enforce_policy_based_on_ports", udp_sctp::udp_should_enforce_policy_based_on_ports),
    ("udp_should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector", udp_sctp::udp_should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector),
    ("sctp_should_support_a_default_deny_ingress_policy", udp_sctp::sctp_should_support_a_default_deny_ingress_policy),
    ("sctp_should_enforce_policy_based_on_ports", udp_sctp::sctp_should_enforce_policy_based_on_ports),
    ("sctp_should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector", udp_sctp::sctp_should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector),
];
