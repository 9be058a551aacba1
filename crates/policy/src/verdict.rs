//! Verdicts and who decided them, shared by the evaluator and the
//! compiled-state lookup so the two can be compared field by field.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cluster::{ClusterAction, Tier};
use crate::model::{Direction, PolicyRef};

/// One rule of one policy: `spec.ingress[index]` or `spec.egress[index]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RuleRef {
    pub policy: PolicyRef,
    pub direction: Direction,
    pub index: usize,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rule {} ({}[{}]) of {}",
            self.index, self.direction, self.index, self.policy
        )
    }
}

/// One rule of one ClusterNetworkPolicy that decided (Accept or Deny; a
/// Pass never decides, the next tier does).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClusterRuleRef {
    /// Field order is precedence order: Admin before Baseline, then lower
    /// priority, then name (the API leaves equal priorities to the
    /// implementation; weft breaks the tie by name), then rule order.
    pub tier: Tier,
    pub priority: u32,
    pub name: String,
    pub direction: Direction,
    pub index: usize,
    pub action: ClusterAction,
}

impl fmt::Display for ClusterRuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rule {} ({}[{}], {}) of cnp/{}",
            self.index, self.direction, self.index, self.action, self.name
        )
    }
}

/// What a policy map entry does to the traffic it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Action {
    Allow,
    Deny,
}

/// The decision a policy map entry carries (the name stays from when every
/// entry was an allow): who decides the traffic the entry covers. The order
/// is the tie-break among NetworkPolicy reasons (the smallest wins): the
/// node exemption, then rules by (policy namespace, policy name, direction,
/// index). Both the evaluator and the compiler pick the smallest, so
/// attribution is deterministic. ClusterNetworkPolicy rules are ordered by
/// their own precedence ([`ClusterRuleRef`]), never mixed with these.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AllowedBy {
    /// "traffic from the pod's local node" is always allowed in.
    LocalNode,
    Rule(RuleRef),
    /// A ClusterNetworkPolicy rule: its action is the entry's.
    Cluster(ClusterRuleRef),
    /// The default deny of the (smallest) NetworkPolicy isolating the
    /// direction: the one representation of it everywhere, both where the
    /// programs reach it through the endpoint's isolation (no entry
    /// matched: `weft_policy_ep`'s deny rule id) and where an entry carries
    /// it (written where a shorter entry would otherwise decide, e.g. under
    /// an Admin Pass rule). One reason, so one rule id and one name in flow
    /// events and counters.
    DefaultDeny(PolicyRef, Direction),
    /// No tier decided: Kubernetes' default allow, written where a shorter
    /// entry would otherwise decide (e.g. under a Baseline Pass rule).
    NoDecision,
}

impl AllowedBy {
    /// What the data path does with the traffic the entry covers.
    pub fn action(&self) -> Action {
        match self {
            AllowedBy::LocalNode | AllowedBy::Rule(_) | AllowedBy::NoDecision => Action::Allow,
            AllowedBy::Cluster(r) => match r.action {
                ClusterAction::Deny => Action::Deny,
                // A Pass is never written: the tier after it decides.
                ClusterAction::Accept | ClusterAction::Pass => Action::Allow,
            },
            AllowedBy::DefaultDeny(..) => Action::Deny,
        }
    }

    /// The direction verdict an entry with this value gives.
    pub fn verdict(&self) -> DirectionVerdict {
        match self {
            AllowedBy::Cluster(r) if r.action == ClusterAction::Deny => {
                DirectionVerdict::DeniedBy(r.clone())
            }
            AllowedBy::DefaultDeny(p, _) => DirectionVerdict::Denied(p.clone()),
            AllowedBy::NoDecision => DirectionVerdict::NotIsolated,
            by => DirectionVerdict::Allowed(by.clone()),
        }
    }
}

impl fmt::Display for AllowedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowedBy::LocalNode => write!(f, "traffic from the pod's own node"),
            AllowedBy::Rule(r) => write!(f, "{r}"),
            AllowedBy::Cluster(r) => write!(f, "{r}"),
            AllowedBy::DefaultDeny(p, d) => write!(f, "the default deny of {p} ({d})"),
            AllowedBy::NoDecision => write!(f, "no policy decides (the default allow)"),
        }
    }
}

/// The verdict of one direction at one end.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DirectionVerdict {
    /// That end is not a pod policies select (a node, hostNetwork, the world).
    NotApplicable,
    /// No policy selects the pod for this direction.
    NotIsolated,
    Allowed(AllowedBy),
    /// Isolated and no rule matched: the default deny of (the smallest of)
    /// the policies isolating the pod.
    Denied(PolicyRef),
    /// A ClusterNetworkPolicy Deny rule.
    DeniedBy(ClusterRuleRef),
}

impl DirectionVerdict {
    pub fn allows(&self) -> bool {
        !matches!(
            self,
            DirectionVerdict::Denied(_) | DirectionVerdict::DeniedBy(_)
        )
    }
}

/// Egress at the source, then ingress at the destination; both must allow.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Verdict {
    pub allowed: bool,
    pub egress: DirectionVerdict,
    pub ingress: DirectionVerdict,
}

impl Verdict {
    pub fn new(egress: DirectionVerdict, ingress: DirectionVerdict) -> Self {
        Verdict {
            allowed: egress.allows() && ingress.allows(),
            egress,
            ingress,
        }
    }

    /// The one line `weft policy explain` prints first.
    pub fn summary(&self) -> String {
        let say = |dir: &str, v: &DirectionVerdict| match v {
            DirectionVerdict::NotApplicable => format!("{dir}: not a policy-managed pod"),
            DirectionVerdict::NotIsolated => format!("{dir}: no policy selects the pod"),
            DirectionVerdict::Allowed(by) => format!("{dir}: allowed by {by}"),
            DirectionVerdict::Denied(p) => format!("{dir}: denied by the default deny of {p}"),
            DirectionVerdict::DeniedBy(r) => format!("{dir}: denied by {r}"),
        };
        let head = if self.allowed {
            "allowed".to_string()
        } else if !self.egress.allows() {
            "denied at egress".to_string()
        } else {
            "denied at ingress".to_string()
        };
        format!(
            "{head} ({}; {})",
            say("egress", &self.egress),
            say("ingress", &self.ingress)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cnp(action: ClusterAction) -> AllowedBy {
        AllowedBy::Cluster(ClusterRuleRef {
            tier: Tier::Admin,
            priority: 10,
            name: "guard".into(),
            direction: Direction::Ingress,
            index: 2,
            action,
        })
    }

    #[test]
    fn every_value_has_an_action_and_says_who_decided() {
        let p = PolicyRef {
            namespace: "x".into(),
            name: "np".into(),
        };
        assert_eq!(AllowedBy::LocalNode.action(), Action::Allow);
        assert_eq!(AllowedBy::NoDecision.action(), Action::Allow);
        assert_eq!(cnp(ClusterAction::Accept).action(), Action::Allow);
        assert_eq!(cnp(ClusterAction::Deny).action(), Action::Deny);
        let deny = AllowedBy::DefaultDeny(p.clone(), Direction::Ingress);
        assert_eq!(deny.action(), Action::Deny);
        assert_eq!(deny.to_string(), "the default deny of x/np (ingress)");
        assert_eq!(
            cnp(ClusterAction::Deny).to_string(),
            "rule 2 (ingress[2], Deny) of cnp/guard"
        );
        assert!(!cnp(ClusterAction::Deny).verdict().allows());
        assert_eq!(deny.verdict(), DirectionVerdict::Denied(p));
        assert_eq!(
            AllowedBy::NoDecision.verdict(),
            DirectionVerdict::NotIsolated
        );
    }
}
