//! What flow events and metrics are told about rules (`flows::RuleBook`):
//! the policy and rule behind a rule id the programs reported, and how
//! many packets each rule decided, read from the data path's seam.

use std::sync::Arc;

use weft_api::PolicyRef;
use weft_datapath::policy::{default_deny_policy, PolicyMaps};
use weft_policy::{Action, AllowedBy};

use super::Running;
use crate::flows::{RuleBook, RuleHit};

/// The reconciler's rules, for the flow reader and the metrics.
pub struct Rules(pub Arc<Running>);

/// The API's name of the reason behind a rule id; `None` for what no policy
/// decided (the node exemption, the default allow).
pub fn policy_ref(reason: &AllowedBy) -> Option<PolicyRef> {
    if let Some((p, dir)) = default_deny_policy(reason) {
        return Some(PolicyRef {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            rule: format!("default deny ({dir})"),
        });
    }
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
        AllowedBy::DefaultDeny(p) => Some(PolicyRef {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            rule: "default deny".into(),
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
                let denies =
                    default_deny_policy(reason).is_some() || reason.action() == Action::Deny;
                Some(RuleHit {
                    policy: policy_ref(reason)?,
                    verdict: if denies { "DROPPED" } else { "FORWARDED" }.into(),
                    packets,
                })
            })
            .collect()
    }
}
