//! Verdicts and who decided them, shared by the evaluator and the
//! compiled-state lookup so the two can be compared field by field.

use std::fmt;

use serde::{Deserialize, Serialize};

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

/// Why traffic was let through. The order is the tie-break when several
/// reasons hold (the smallest wins): the node exemption, then rules by
/// (policy namespace, policy name, direction, index). Both the evaluator and
/// the compiler pick the smallest, so attribution is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AllowedBy {
    /// "traffic from the pod's local node" is always allowed in.
    LocalNode,
    Rule(RuleRef),
}

impl fmt::Display for AllowedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowedBy::LocalNode => write!(f, "traffic from the pod's own node"),
            AllowedBy::Rule(r) => write!(f, "{r}"),
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
}

impl DirectionVerdict {
    pub fn allows(&self) -> bool {
        !matches!(self, DirectionVerdict::Denied(_))
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
