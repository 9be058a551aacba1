//! What flow events and metrics are told about rules (`flows::RuleBook`):
//! the policy and rule behind a rule id the programs reported, and how
//! many packets each rule decided, read from the data path's seam.

use std::sync::Arc;

use weft_api::PolicyRef;
use weft_datapath::policy::PolicyMaps;
use weft_policy::{Action, AllowedBy};

use super::Running;
use crate::flows::{RuleBook, RuleHit};

/// The reconciler's rules, for the flow reader and the metrics.
pub struct Rules(pub Arc<Running>);

/// The API's name of the reason behind a rule id; `None` for what no policy
/// decided (the node exemption, the default allow).
pub fn policy_ref(reason: &AllowedBy) -> Option<PolicyRef> {
    match reason {
        AllowedBy::Rule(r) => Some(PolicyRef {
            namespace: r.policy.namespace.clone(),
            name: r.policy.name.clone(),
            rule: format!("{}[{}]", r.direction, r.index),
        }),
        AllowedBy::Cluster(c) => Some(PolicyRef {
            namespace: String::new(),
            name: c.name.clone(),
            rule: format!("{}[{}]", c.direction, c.index),
        }),
        AllowedBy::DefaultDeny(p, dir) => Some(PolicyRef {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            rule: format!("default deny ({dir})"),
        }),
        AllowedBy::LocalNode | AllowedBy::NoDecision => None,
    }
}

impl RuleBook for Rules {
    fn rule(&self, rule_id: u32) -> Option<PolicyRef> {
        let rec = self.0.rec.lock().unwrap_or_else(|p| p.into_inner());
        rec.maps().rule_ids().reason(rule_id).and_then(policy_ref)
    }

    fn hits(&self) -> Vec<RuleHit> {
        let rec = self.0.rec.lock().unwrap_or_else(|p| p.into_inner());
        let Ok(hits) = rec.maps().rule_hits() else {
            return Vec::new();
        };
        let ids = rec.maps().rule_ids();
        hits.into_iter()
            .filter_map(|(id, packets)| {
                let reason = ids.reason(id)?;
                let denies = reason.action() == Action::Deny;
                Some(RuleHit {
                    policy: policy_ref(reason)?,
                    verdict: if denies { "DROPPED" } else { "FORWARDED" }.into(),
                    packets,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use weft_datapath::policy::{Decision, FakePolicyMaps, PolicyEndpoint};
    use weft_policy::{
        compile_all, ClusterNetworkPolicy, Direction, EndpointRef, Flow, Inventory,
        MemoryAllocator, NetworkPolicy, Protocol, RuleIds,
    };

    /// A NetworkPolicy's default deny reaches the programs two ways: no
    /// entry matches and the endpoint's isolation denies (its deny rule
    /// id), or an entry carries it (under an Admin Pass rule). Both are
    /// one reason, so one rule id, and a flow event names it the same way
    /// the compiler's explain does.
    #[test]
    fn a_default_deny_is_named_alike_whichever_way_the_programs_reach_it() {
        let pod = |name: &str, ip: &str| {
            json!({"namespace": "x", "name": name, "labels": {"pod": name},
                "namespaceLabels": {"ns": "x"}, "ips": [ip], "node": "n1"})
        };
        let inventory: Inventory = serde_json::from_value(json!({
            "workloads": [pod("a", "10.0.0.1"), pod("b", "10.0.0.2")],
            "nodes": [{"name": "n1", "ips": ["10.9.0.1"]}]}))
        .unwrap();
        let np: NetworkPolicy = serde_json::from_value(json!({
            "namespace": "x", "name": "deny-in",
            "podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Ingress"]}))
        .unwrap();
        // a Pass on 80 only: the entry under it carries the default deny
        let cnp: ClusterNetworkPolicy = serde_json::from_value(json!({
            "name": "pass-80", "tier": "Admin", "priority": 1,
            "subject": {"pods": {"podSelector": {"matchLabels": {"pod": "b"}}}},
            "ingress": [{"action": "Pass",
                "peers": [{"pods": {"podSelector": {"matchLabels": {"pod": "a"}}}}],
                "protocols": [{"number": {"protocol": "TCP", "port": 80}}]}]}))
        .unwrap();
        let compiled = compile_all(&[np], &[cnp], &inventory, &mut MemoryAllocator::new()).unwrap();
        let mut maps = FakePolicyMaps::new("n1", RuleIds::new());
        let lookup = |e: &EndpointRef| {
            let (id, ip) = match e.name.as_str() {
                "a" => (1, "10.0.0.1"),
                _ => (2, "10.0.0.2"),
            };
            Some(PolicyEndpoint {
                id,
                addresses: vec![ip.parse().unwrap()],
                audit: false,
            })
        };
        maps.replace(&compiled, &lookup).unwrap();
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let denied = |port: u16| match maps.judge(a, b, 6, port).ingress {
            Decision::Denied { rule, .. } => rule,
            d => panic!("port {port}: {d:?}"),
        };
        let (under_pass, isolation) = (denied(80), denied(81));
        assert_eq!(under_pass, isolation, "one reason, one rule id");
        let p = weft_policy::PolicyRef {
            namespace: "x".into(),
            name: "deny-in".into(),
        };
        let reason = maps.rule_ids().reason(isolation).unwrap();
        assert_eq!(
            reason,
            &AllowedBy::DefaultDeny(p.clone(), Direction::Ingress)
        );
        assert_eq!(
            policy_ref(reason),
            Some(PolicyRef {
                namespace: "x".into(),
                name: "deny-in".into(),
                rule: "default deny (ingress)".into(),
            })
        );
        assert_eq!(
            weft_datapath::policy::describe_rule(maps.rule_ids(), isolation).as_deref(),
            Some("the default deny of x/deny-in (ingress)")
        );
        // and the compiler's own explain says the same of both flows
        for port in [80, 81] {
            let v = compiled.check(&Flow {
                src: a,
                dst: b,
                proto: Protocol::Tcp,
                port,
            });
            assert_eq!(
                v.ingress,
                weft_policy::DirectionVerdict::Denied(p.clone()),
                "{port}"
            );
        }
    }
}
