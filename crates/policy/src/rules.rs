//! The policy map's value: a numeric rule id.
//!
//! A map entry's value is 4 bytes (native endian, not part of the LPM key):
//! the id of the reason that allows, which indexes the per-rule packet
//! counters and lets the agent name the rule a verdict came from. Ids are
//! stable while the reason exists and never reused after it is gone, so a
//! counter slot never changes meaning. 0 is the node exemption.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::verdict::AllowedBy;

/// What an agent saves of its [`RuleIds`] across restarts (pinned maps
/// and per-rule counters keep the ids the previous process wrote).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedRuleIds {
    /// The next id to hand out (ids below it are never handed out again).
    pub next: u32,
    pub ids: Vec<(u32, AllowedBy)>,
}

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

    /// Changes whenever an id is handed out or forgotten (to save only
    /// then).
    pub fn version(&self) -> (u32, usize) {
        (self.next, self.by_id.len())
    }

    /// The table to save.
    pub fn save(&self) -> SavedRuleIds {
        SavedRuleIds {
            next: self.next,
            ids: self
                .by_id
                .iter()
                .filter(|(id, _)| **id != 0)
                .map(|(id, r)| (*id, r.clone()))
                .collect(),
        }
    }

    /// The table a previous process saved: every id keeps its reason and
    /// no id it handed out is handed out again. An entry that contradicts
    /// another (one id or one reason twice, id 0, an id at or past `next`)
    /// is dropped, so a damaged file costs counters, never a wrong name.
    pub fn restore(saved: SavedRuleIds) -> Self {
        let mut ids = RuleIds::new();
        ids.next = saved.next.max(1);
        for (id, reason) in saved.ids {
            // weftd before one representation of the default deny saved
            // the isolation's as a rule of index usize::MAX
            let reason = match reason {
                AllowedBy::Rule(r) if r.index == usize::MAX => {
                    AllowedBy::DefaultDeny(r.policy, r.direction)
                }
                r => r,
            };
            if id == 0
                || id >= ids.next
                || ids.by_id.contains_key(&id)
                || ids.by_reason.contains_key(&reason)
            {
                continue;
            }
            ids.by_reason.insert(reason.clone(), id);
            ids.by_id.insert(id, reason);
        }
        ids
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

    /// weftd before one representation of the default deny saved the
    /// isolation's as rule usize::MAX; the id keeps naming that default deny.
    #[test]
    fn an_old_default_deny_id_restores_as_the_default_deny() {
        let old = SavedRuleIds {
            next: 3,
            ids: vec![(1, rule("a", usize::MAX)), (2, rule("a", 0))],
        };
        let mut r = RuleIds::restore(old);
        let deny = AllowedBy::DefaultDeny(
            PolicyRef {
                namespace: "x".into(),
                name: "a".into(),
            },
            Direction::Ingress,
        );
        assert_eq!(r.reason(1), Some(&deny));
        assert_eq!(r.id(&deny), 1);
        assert_eq!(r.reason(2), Some(&rule("a", 0)));
    }

    #[test]
    fn a_saved_table_restores_every_id_and_the_counter() {
        let mut ids = RuleIds::new();
        let a0 = ids.id(&rule("a", 0));
        let a1 = ids.id(&rule("a", 1));
        ids.retain(|r| *r != rule("a", 0));
        let saved = ids.save();
        let json = serde_json::to_string(&saved).unwrap();
        let mut back = RuleIds::restore(serde_json::from_str(&json).unwrap());
        assert_eq!(back.save(), saved);
        assert_eq!(back.reason(a1), Some(&rule("a", 1)));
        assert_eq!(back.id(&rule("a", 1)), a1);
        assert_eq!(back.id(&AllowedBy::LocalNode), 0);
        assert!(
            back.id(&rule("a", 0)) > a1,
            "a forgotten id stays retired: {a0}"
        );
        // a damaged table: contradictions are dropped, never believed
        let bad = SavedRuleIds {
            next: 5,
            ids: vec![
                (0, rule("z", 0)),
                (2, rule("b", 0)),
                (2, rule("c", 0)),
                (3, rule("b", 0)),
                (9, rule("d", 0)),
            ],
        };
        let mut r = RuleIds::restore(bad);
        assert_eq!(r.reason(2), Some(&rule("b", 0)));
        assert_eq!(r.reason(3), None);
        assert_eq!(r.reason(9), None);
        assert_eq!(r.id(&rule("d", 0)), 5);
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
