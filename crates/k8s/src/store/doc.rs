//! One key as the store's objects hold it ([`Entry`]), the single-object
//! document of earlier versions (read only, to move it), and the checks
//! every commit passes first. No I/O here.
//!
//! An entry written by a commit leaves its revisions out (`c`/`m` absent)
//! where the revision is not known before the write: in an intent, they
//! mean the intent's revision (the head's `resourceVersion`); an applier
//! fills them in when it writes the entry into its object.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use weft_store::{check_key, check_value, LeaseId, Revision, StoreError, StoreResult, TxnOp};

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
    pub fn new(value: &[u8], create: Option<Revision>, lease: Option<LeaseId>) -> Entry {
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

    pub fn value(&self) -> Vec<u8> {
        match (&self.v, &self.b) {
            (Some(s), _) => s.as_bytes().to_vec(),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }
}

/// The `spec` of a `WeftStore` object in the single-object layout of
/// earlier versions (every key in one object): read only, to move such a
/// store into per-kind objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doc {
    #[serde(default)]
    pub keys: u64,
    #[serde(default)]
    pub entries: BTreeMap<String, Entry>,
}

impl Doc {
    /// Fills in the revisions the version's commit left out (they mean
    /// the object's `resourceVersion`).
    pub fn resolve(&mut self, rev: Revision) {
        for e in self.entries.values_mut() {
            e.c.get_or_insert(rev);
            e.m.get_or_insert(rev);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_object_document_resolves_to_its_revision() {
        let mut d: Doc = serde_json::from_str(
            r#"{"keys":2,"entries":{"a":{"v":"1","c":3,"m":4,"l":9},"b":{"b":"/wA="}},"last":[{"k":"b"}]}"#,
        )
        .unwrap();
        d.resolve(10);
        assert_eq!(
            (d.entries["a"].c, d.entries["a"].m, d.entries["a"].l),
            (Some(3), Some(4), Some(9))
        );
        assert_eq!(
            (d.entries["b"].m, d.entries["b"].value()),
            (Some(10), vec![0xff, 0])
        );
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
