//! The policy map's value: a numeric rule id.
//!
//! A map entry's value is 4 bytes (native endian, not part of the LPM key):
//! the id of the reason that allows, which indexes the per-rule packet
//! counters and lets the agent name the rule a verdict came from. Ids are
//! stable while the reason exists and never reused after it is gone, so a
//! counter slot never changes meaning. 0 is the node exemption.

use std::collections::BTreeMap;

use crate::verdict::AllowedBy;

/// Hands out rule ids; the agent keeps one for its lifetime.
#[derive(Debug, Clone)]
pub struct RuleIds {
    by_reason: BTreeMap<AllowedBy, u32>,
    by_id: BTreeMap<u32, AllowedBy>,
    next: u32,
}

impl Default for RuleIds {
    fn default() -> Self {
        let mut ids = RuleIds {
            by_reason: BTreeMap::new(),
            by_id: BTreeMap::new(),
            next: 1,
        };
        ids.by_reason.insert(AllowedBy::LocalNode, 0);
        ids.by_id.insert(0, AllowedBy::LocalNode);
        ids
    }
}

impl RuleIds {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of `reason`, allocating one the first time.
    pub fn id(&mut self, reason: &AllowedBy) -> u32 {
        if let Some(id) = self.by_reason.get(reason) {
            return *id;
        }
        let id = self.next;
        self.next += 1;
        self.by_reason.insert(reason.clone(), id);
        self.by_id.insert(id, reason.clone());
        id
    }

    /// What an id stands for (to print a counter or a verdict).
    pub fn reason(&self, id: u32) -> Option<&AllowedBy> {
        self.by_id.get(&id)
    }

    /// Forgets reasons no longer in use; their ids are not handed out again.
    pub fn retain(&mut self, mut live: impl FnMut(&AllowedBy) -> bool) {
        self.by_reason
            .retain(|r, _| *r == AllowedBy::LocalNode || live(r));
        let by_reason = &self.by_reason;
        self.by_id.retain(|_, r| by_reason.contains_key(r));
    }

    /// The value bytes of an entry allowed by `reason`.
    pub fn value(&mut self, reason: &AllowedBy) -> [u8; 4] {
        self.id(reason).to_ne_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Direction, PolicyRef};
    use crate::verdict::RuleRef;

    fn rule(name: &str, index: usize) -> AllowedBy {
        AllowedBy::Rule(RuleRef {
            policy: PolicyRef {
                namespace: "x".into(),
                name: name.into(),
            },
            direction: Direction::Ingress,
            index,
        })
    }

    #[test]
    fn ids_are_stable_and_never_reused() {
        let mut ids = RuleIds::new();
        assert_eq!(ids.id(&AllowedBy::LocalNode), 0);
        let a0 = ids.id(&rule("a", 0));
        let a1 = ids.id(&rule("a", 1));
        assert_ne!(a0, a1);
        assert_eq!(ids.id(&rule("a", 0)), a0);
        assert_eq!(ids.reason(a1), Some(&rule("a", 1)));
        ids.retain(|r| *r != rule("a", 1));
        assert_eq!(ids.reason(a1), None);
        assert_eq!(
            ids.id(&AllowedBy::LocalNode),
            0,
            "the node exemption is never forgotten"
        );
        let b0 = ids.id(&rule("b", 0));
        assert!(b0 > a1, "a forgotten id is not handed out again");
        assert_eq!(
            ids.id(&rule("a", 1)),
            b0 + 1,
            "a returning reason gets a fresh id"
        );
        assert_eq!(ids.value(&rule("a", 0)), a0.to_ne_bytes());
    }
}
