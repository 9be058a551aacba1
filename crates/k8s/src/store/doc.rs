//! The store's one document (the `spec` of a `WeftStore` object) and the
//! pure logic of a commit on it: conditions, the new document, the events.
//! No I/O here; `api` reads and writes the document, this decides what to
//! write.
//!
//! A commit is one write of the document, so it is atomic and takes one
//! revision: the object's `resourceVersion` after the write. That revision
//! is not known before the write, so an entry written by the commit leaves
//! its revisions out (`c`/`m` absent) and they mean "the revision of this
//! version of the document"; the next writer fills them in with the
//! `resourceVersion` it read before writing its own.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use weft_store::{
    check_key, check_value, Event, EventKind, KeyValue, LeaseId, Revision, StoreError, StoreResult,
    TxnConflict, TxnOp,
};

/// One key of the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The value, when it is UTF-8 (weft's records are JSON: readable in
    /// `kubectl get -o yaml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<String>,
    /// The value in base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<String>,
    /// create_revision; absent: this version's revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c: Option<Revision>,
    /// mod_revision; absent: this version's revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m: Option<Revision>,
    /// The lease the key is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l: Option<LeaseId>,
}

impl Entry {
    fn new(value: &[u8], create: Option<Revision>, lease: Option<LeaseId>) -> Entry {
        let (v, b) = match std::str::from_utf8(value) {
            Ok(s) => (Some(s.to_string()), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(value)),
            ),
        };
        Entry {
            v,
            b,
            c: create,
            m: None,
            l: lease,
        }
    }

    fn value(&self) -> Vec<u8> {
        match (&self.v, &self.b) {
            (Some(s), _) => s.as_bytes().to_vec(),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }
}

/// A key the commit that wrote this version changed, in op order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub k: String,
    /// Deleted (else written).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub d: bool,
}

/// The `spec` of a `WeftStore` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doc {
    /// How many keys (for `kubectl get`'s column).
    #[serde(default)]
    pub keys: u64,
    #[serde(default)]
    pub entries: BTreeMap<String, Entry>,
    /// What the commit that wrote this version changed: a watch turns each
    /// version it sees into these events.
    #[serde(default)]
    pub last: Vec<Change>,
    /// The object does not exist yet (the first write creates it).
    #[serde(skip)]
    pub absent: bool,
}

impl Doc {
    /// Fills in the revisions this version's commit left out: after a read
    /// (with the object's `resourceVersion`) and after a write (with the
    /// new one), every entry in memory has both.
    pub fn resolve(&mut self, rev: Revision) {
        for e in self.entries.values_mut() {
            e.c.get_or_insert(rev);
            e.m.get_or_insert(rev);
        }
    }

    /// The key's state in a resolved document.
    pub fn kv(&self, key: &str) -> Option<KeyValue> {
        self.entries.get(key).map(|e| KeyValue {
            key: key.to_string(),
            value: e.value(),
            create_revision: e.c.unwrap_or(0),
            mod_revision: e.m.unwrap_or(0),
            lease: e.l,
        })
    }

    /// Every key with the byte prefix, sorted (a BTreeMap is).
    pub fn list(&self, prefix: &str) -> Vec<KeyValue> {
        self.entries
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, _)| self.kv(k))
            .collect()
    }

    /// The events of the commit that wrote this (resolved) version, at
    /// revision `rev`, for keys under `prefix`.
    pub fn events(&self, prefix: &str, rev: Revision) -> Vec<Event> {
        self.last
            .iter()
            .filter(|c| c.k.starts_with(prefix))
            .map(|c| match (c.d, self.kv(&c.k)) {
                (false, Some(kv)) => Event {
                    kind: EventKind::Put,
                    kv,
                },
                _ => Event {
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

    /// Keys attached to a lease, by lease.
    pub fn leased(&self) -> BTreeMap<LeaseId, Vec<String>> {
        let mut out: BTreeMap<LeaseId, Vec<String>> = BTreeMap::new();
        for (k, e) in &self.entries {
            if let Some(l) = e.l {
                out.entry(l).or_default().push(k.clone());
            }
        }
        out
    }
}

/// Refuses what every backend refuses, before anything is read or written.
pub fn validate(ops: &[TxnOp<'_>]) -> StoreResult<()> {
    if ops.is_empty() {
        return Err(StoreError::Invalid {
            reason: "empty transaction".into(),
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    for op in ops {
        check_key(op.key())?;
        if !seen.insert(op.key()) {
            return Err(StoreError::Invalid {
                reason: format!("key {} twice in one transaction", op.key()),
            });
        }
        match op {
            TxnOp::Create { key, value, .. }
            | TxnOp::Update { key, value, .. }
            | TxnOp::Put { key, value } => check_value(key, value)?,
            TxnOp::Delete { .. } => {}
        }
    }
    Ok(())
}

/// The document after `ops` on the resolved `doc`: `Ok(None)` when the ops
/// write nothing (unconditional deletes of missing keys), `Err` naming the
/// first op whose condition fails. Leases are not checked here.
pub fn apply(doc: &Doc, ops: &[TxnOp<'_>]) -> Result<Option<Doc>, TxnConflict> {
    for (index, op) in ops.iter().enumerate() {
        let cur = doc.entries.get(op.key());
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
                current: doc.kv(op.key()),
            });
        }
    }
    let mut next = doc.clone();
    next.last.clear();
    next.absent = doc.absent;
    for op in ops {
        let key = op.key().to_string();
        let change = match op {
            TxnOp::Create { value, lease, .. } => {
                next.entries
                    .insert(key.clone(), Entry::new(value, None, *lease));
                Some(false)
            }
            TxnOp::Update { value, .. } => {
                let old = &doc.entries[&key];
                next.entries
                    .insert(key.clone(), Entry::new(value, old.c, old.l));
                Some(false)
            }
            TxnOp::Put { value, .. } => {
                let create = doc.entries.get(&key).and_then(|e| e.c);
                next.entries
                    .insert(key.clone(), Entry::new(value, create, None));
                Some(false)
            }
            TxnOp::Delete { .. } => next.entries.remove(&key).map(|_| true),
        };
        if let Some(d) = change {
            next.last.push(Change { k: key, d });
        }
    }
    if next.last.is_empty() {
        return Ok(None);
    }
    next.keys = next.entries.len() as u64;
    Ok(Some(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(doc: &Doc, ops: &[TxnOp<'_>], rev: Revision) -> Doc {
        let mut d = apply(doc, ops).expect("no conflict").expect("writes");
        // what goes over the wire, read back
        d = serde_json::from_value(serde_json::to_value(&d).unwrap()).unwrap();
        d.resolve(rev);
        d
    }

    #[test]
    fn a_commit_takes_one_revision_and_keeps_the_others() {
        let d = written(
            &Doc::default(),
            &[
                TxnOp::Create {
                    key: "a",
                    value: b"1",
                    lease: Some(7),
                },
                TxnOp::Create {
                    key: "b",
                    value: &[0xff, 0],
                    lease: None,
                },
            ],
            10,
        );
        assert_eq!(d.kv("a").unwrap().mod_revision, 10);
        assert_eq!(d.kv("b").unwrap().value, vec![0xff, 0]);
        let d2 = written(
            &d,
            &[TxnOp::Update {
                key: "a",
                value: b"2",
                expected: 10,
            }],
            12,
        );
        let a = d2.kv("a").unwrap();
        assert_eq!(
            (a.create_revision, a.mod_revision, a.lease),
            (10, 12, Some(7))
        );
        assert_eq!(d2.kv("b").unwrap().mod_revision, 10);
        assert_eq!(d2.keys, 2);
        let ev = d2.events("", 12);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kv.value, b"2");
    }

    #[test]
    fn the_first_failing_condition_is_named_and_nothing_changes() {
        let d = written(
            &Doc::default(),
            &[TxnOp::Create {
                key: "a",
                value: b"1",
                lease: None,
            }],
            5,
        );
        let c = apply(
            &d,
            &[
                TxnOp::Put {
                    key: "x",
                    value: b"1",
                },
                TxnOp::Update {
                    key: "a",
                    value: b"2",
                    expected: 4,
                },
                TxnOp::Create {
                    key: "a",
                    value: b"2",
                    lease: None,
                },
            ],
        )
        .unwrap_err();
        assert_eq!(c.index, 1);
        assert_eq!(c.current.unwrap().mod_revision, 5);
    }

    #[test]
    fn deleting_nothing_writes_nothing_and_puts_drop_the_lease() {
        let d = written(
            &Doc::default(),
            &[TxnOp::Create {
                key: "a",
                value: b"1",
                lease: Some(3),
            }],
            5,
        );
        assert_eq!(
            apply(
                &d,
                &[TxnOp::Delete {
                    key: "zz",
                    expected: None
                }]
            ),
            Ok(None)
        );
        let d2 = written(
            &d,
            &[
                TxnOp::Put {
                    key: "a",
                    value: b"2",
                },
                TxnOp::Delete {
                    key: "q",
                    expected: None,
                },
            ],
            6,
        );
        let a = d2.kv("a").unwrap();
        assert_eq!((a.create_revision, a.lease), (5, None));
        assert_eq!(d2.last.len(), 1);
        let d3 = written(
            &d2,
            &[TxnOp::Delete {
                key: "a",
                expected: Some(6),
            }],
            9,
        );
        let ev = d3.events("a", 9);
        assert_eq!(
            (ev[0].kind.clone(), ev[0].kv.mod_revision),
            (EventKind::Delete, 9)
        );
    }

    #[test]
    fn list_is_a_sorted_byte_prefix() {
        let ops: Vec<_> = ["a/b/2", "a/bc", "a/b", "b", "a/b/1"]
            .iter()
            .map(|k| TxnOp::Put {
                key: k,
                value: b"x",
            })
            .collect();
        let d = written(&Doc::default(), &ops, 1);
        let keys: Vec<_> = d.list("a/b").into_iter().map(|kv| kv.key).collect();
        assert_eq!(keys, ["a/b", "a/b/1", "a/b/2", "a/bc"]);
    }

    #[test]
    fn bad_transactions_are_invalid() {
        assert!(validate(&[]).is_err());
        let dup = [
            TxnOp::Put {
                key: "a",
                value: b"",
            },
            TxnOp::Delete {
                key: "a",
                expected: None,
            },
        ];
        assert!(matches!(validate(&dup), Err(StoreError::Invalid { .. })));
        assert!(validate(&[TxnOp::Put {
            key: "",
            value: b""
        }])
        .is_err());
    }
}
