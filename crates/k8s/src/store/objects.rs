//! The store's objects and the pure logic of a commit on them (no I/O):
//! the head (`WeftStore`, the commit log's tip: at most one intent), the
//! per-kind objects (`Shard`: a few keys each), planning a commit's
//! changes from the keys it reads, and applying an intent to an object.
//! See `mod.rs` for the protocol and why it is atomic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use weft_store::{Event, EventKind, KeyValue, LeaseId, Revision, TxnConflict, TxnOp};

use super::doc::Entry;
use super::layout::{display, Kind};

/// The head's `layout`: per-kind objects (the single-object layout had no
/// such field).
pub const LAYOUT: &str = "objects";
/// What the head's `entries` says (a string where the single-object layout
/// had the map of every key, so a weftd of that layout fails to read the
/// store instead of writing into an empty one).
pub const MOVED: &str = "the keys are in per-kind objects: kubectl get ippools,ipamblocks,weftnodes,securityidentities,weftrecords -l weft.dev/store=<name>";

/// One key's change in an intent: its new entry (revisions absent: the
/// intent's own), or `None` for deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub k: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<Entry>,
}

/// A commit that is decided (its head version is written) and maybe not
/// yet applied to every object it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// The move from the single-object layout: no key changes value, so a
    /// watch shows nothing of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub migration: bool,
    pub changes: Vec<Change>,
}

/// The `spec` of the `WeftStore` head object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub layout: String,
    pub entries: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
}

impl Head {
    pub fn new(intent: Option<Intent>) -> Head {
        Head {
            layout: LAYOUT.into(),
            entries: MOVED.into(),
            intent,
        }
    }
}

/// The `spec` of one per-kind object: a few keys, and the revision its
/// state is as of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// The commit that last wrote the object (0 for an empty placeholder:
    /// then its creation's `resourceVersion`). An intent is applied to an
    /// object only while this is older than the intent: applying is
    /// idempotent, and a late applier never undoes a newer commit.
    pub rev: Revision,
    #[serde(default)]
    pub entries: BTreeMap<String, Entry>,
    /// The printer columns' fields (derived from the entries on write).
    #[serde(flatten)]
    pub display: Map<String, Value>,
}

impl Shard {
    pub fn leased(&self) -> bool {
        self.entries.values().any(|e| e.l.is_some())
    }
}

/// The key's state from a resolved entry.
pub fn kv(key: &str, e: &Entry) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: e.value(),
        create_revision: e.c.unwrap_or(0),
        mod_revision: e.m.unwrap_or(0),
        lease: e.l,
    }
}

/// An intent's entry with its revisions filled in (`rev`: the intent's).
pub fn resolved(e: &Entry, rev: Revision) -> Entry {
    let mut e = e.clone();
    e.c.get_or_insert(rev);
    e.m.get_or_insert(rev);
    e
}

/// A commit's plan: the changes to write, and for each op whether its key
/// existed (what a delete reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub existed: Vec<bool>,
}

/// Checks `ops`' conditions on `current` (every key of the ops that
/// exists, resolved) and says what to write. `Err` names the first op
/// whose condition fails; no changes means nothing to write.
pub fn plan(current: &BTreeMap<String, Entry>, ops: &[TxnOp<'_>]) -> Result<Plan, TxnConflict> {
    let mut out = Plan {
        changes: Vec::new(),
        existed: Vec::new(),
    };
    for (index, op) in ops.iter().enumerate() {
        let cur = current.get(op.key());
        let ok = match op {
            TxnOp::Create { .. } => cur.is_none(),
            TxnOp::Update { expected, .. } => cur.is_some_and(|e| e.m == Some(*expected)),
            TxnOp::Put { .. } => true,
            TxnOp::Delete { expected, .. } => match expected {
                None => true,
                Some(rev) => cur.is_some_and(|e| e.m == Some(*rev)),
            },
        };
        if !ok {
            return Err(TxnConflict {
                index,
                current: cur.map(|e| kv(op.key(), e)),
            });
        }
        out.existed.push(cur.is_some());
        let k = op.key().to_string();
        let e = match op {
            TxnOp::Create { value, lease, .. } => Some(Entry::new(value, None, *lease)),
            TxnOp::Update { value, .. } => {
                let old = cur.expect("checked");
                Some(Entry::new(value, old.c, old.l))
            }
            TxnOp::Put { value, .. } => Some(Entry::new(value, cur.and_then(|e| e.c), None)),
            TxnOp::Delete { .. } if cur.is_none() => continue,
            TxnOp::Delete { .. } => None,
        };
        out.changes.push(Change { k, e });
    }
    Ok(out)
}

/// `shard` after the intent at `rev` (its `changes` for this object).
pub fn apply_to(kind: Kind, shard: &Shard, changes: &[&Change], rev: Revision) -> Shard {
    let mut next = shard.clone();
    for c in changes {
        match &c.e {
            Some(e) => {
                next.entries.insert(c.k.clone(), resolved(e, rev));
            }
            None => {
                next.entries.remove(&c.k);
            }
        }
    }
    next.rev = rev;
    next.display = display(kind, &next.entries);
    next
}

/// The events a watch of `prefix` sees for the intent written at `rev`.
pub fn events(intent: &Intent, prefix: &str, rev: Revision) -> Vec<Event> {
    if intent.migration {
        return Vec::new();
    }
    intent
        .changes
        .iter()
        .filter(|c| c.k.starts_with(prefix))
        .map(|c| match &c.e {
            Some(e) => Event {
                kind: EventKind::Put,
                kv: kv(&c.k, &resolved(e, rev)),
            },
            None => Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: c.k.clone(),
                    value: Vec::new(),
                    create_revision: 0,
                    mod_revision: rev,
                    lease: None,
                },
            },
        })
        .collect()
}

/// `entries` (a snapshot of the objects at `rev`) with the intent written
/// at `rev` laid over it.
pub fn overlay(entries: &mut BTreeMap<String, Entry>, intent: &Intent, rev: Revision) {
    for c in &intent.changes {
        match &c.e {
            Some(e) => {
                entries.insert(c.k.clone(), resolved(e, rev));
            }
            None => {
                entries.remove(&c.k);
            }
        }
    }
}

/// Keys attached to a lease, by lease.
pub fn leased(entries: &BTreeMap<String, Entry>) -> BTreeMap<LeaseId, Vec<(String, Revision)>> {
    let mut out: BTreeMap<LeaseId, Vec<(String, Revision)>> = BTreeMap::new();
    for (k, e) in entries {
        if let Some(l) = e.l {
            out.entry(l)
                .or_default()
                .push((k.clone(), e.m.unwrap_or(0)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(v: &str, c: u64, m: u64) -> Entry {
        Entry {
            v: Some(v.into()),
            c: Some(c),
            m: Some(m),
            ..Entry::default()
        }
    }

    #[test]
    fn a_plan_checks_every_condition_and_keeps_revisions_and_leases() {
        let mut cur = BTreeMap::new();
        cur.insert(
            "a".to_string(),
            Entry {
                l: Some(7),
                ..entry("1", 3, 5)
            },
        );
        let p = plan(
            &cur,
            &[
                TxnOp::Update {
                    key: "a",
                    value: b"2",
                    expected: 5,
                },
                TxnOp::Create {
                    key: "b",
                    value: b"x",
                    lease: None,
                },
                TxnOp::Delete {
                    key: "zz",
                    expected: None,
                },
            ],
        )
        .unwrap();
        assert_eq!(p.existed, [true, false, false]);
        assert_eq!(
            p.changes.len(),
            2,
            "a delete of a missing key writes nothing"
        );
        let a = p.changes[0].e.clone().unwrap();
        assert_eq!((a.c, a.m, a.l), (Some(3), None, Some(7)));
        let c = plan(
            &cur,
            &[
                TxnOp::Put {
                    key: "x",
                    value: b"",
                },
                TxnOp::Update {
                    key: "a",
                    value: b"2",
                    expected: 4,
                },
            ],
        )
        .unwrap_err();
        assert_eq!(c.index, 1);
        assert_eq!(c.current.unwrap().mod_revision, 5);
    }

    #[test]
    fn applying_resolves_revisions_and_is_the_same_twice() {
        let changes = [
            Change {
                k: "/weft/ipam/v1/blocks/b".into(),
                e: Some(Entry::new(b"{\"cidr\":\"10.0.0.0/26\"}", None, None)),
            },
            Change {
                k: "gone".into(),
                e: None,
            },
        ];
        let mut s = Shard {
            rev: 4,
            ..Shard::default()
        };
        s.entries.insert("gone".into(), entry("x", 2, 2));
        let refs: Vec<&Change> = changes.iter().collect();
        let next = apply_to(Kind::Block, &s, &refs, 9);
        assert_eq!(next.rev, 9);
        assert_eq!(next.entries.len(), 1);
        let e = &next.entries["/weft/ipam/v1/blocks/b"];
        assert_eq!((e.c, e.m), (Some(9), Some(9)));
        assert_eq!(next.display["cidr"], "10.0.0.0/26");
        assert_eq!(apply_to(Kind::Block, &next, &refs, 9), next);
    }

    #[test]
    fn a_watch_sees_an_intent_in_op_order_and_not_a_migration() {
        let mut i = Intent {
            migration: false,
            changes: vec![
                Change {
                    k: "p/b".into(),
                    e: Some(Entry::new(b"1", Some(2), None)),
                },
                Change {
                    k: "p/a".into(),
                    e: None,
                },
                Change {
                    k: "q".into(),
                    e: None,
                },
            ],
        };
        let ev = events(&i, "p/", 12);
        assert_eq!(ev.len(), 2);
        assert_eq!((ev[0].kv.create_revision, ev[0].kv.mod_revision), (2, 12));
        assert_eq!(
            (ev[1].kind.clone(), ev[1].kv.mod_revision),
            (EventKind::Delete, 12)
        );
        i.migration = true;
        assert!(events(&i, "", 12).is_empty());
    }

    #[test]
    fn a_head_is_not_the_single_object_layout() {
        let h = serde_json::to_value(Head::new(None)).unwrap();
        // what a weftd of the single-object layout reads as its document
        assert!(serde_json::from_value::<super::super::doc::Doc>(h).is_err());
    }
}
