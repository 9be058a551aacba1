//! weft's transactions as etcd txns, and their answers back.
//!
//! Every conditional write is one etcd txn: creates compare
//! `create_revision == 0`, updates and conditional deletes `mod_revision ==
//! expected`; the failure branch ranges every key of the txn, so a conflict
//! carries the current key without another round trip.

use std::collections::HashSet;

use etcd_client::{
    Compare, CompareOp, PutOptions, Txn, TxnOp as EtcdOp, TxnOpResponse, TxnResponse,
};

use super::convert::{borrowed_kv, etcd_rev, rev};
use crate::{check_key, check_value, Revision, StoreError, StoreResult, TxnConflict, TxnOp};

/// Checks `ops` as the contract asks (not empty, no key twice, keys and
/// values within the rules).
pub fn check(ops: &[TxnOp<'_>]) -> StoreResult<()> {
    if ops.is_empty() {
        return Err(StoreError::Invalid {
            reason: "empty transaction".into(),
        });
    }
    let mut seen = HashSet::new();
    for op in ops {
        check_key(op.key())?;
        if !seen.insert(op.key()) {
            return Err(StoreError::Invalid {
                reason: format!("key {} twice in one transaction", op.key()),
            });
        }
        if let TxnOp::Create { key, value, .. }
        | TxnOp::Update { key, value, .. }
        | TxnOp::Put { key, value } = op
        {
            check_value(key, value)?;
        }
    }
    Ok(())
}

/// The etcd txn of `ops` (already checked).
pub fn build(ops: &[TxnOp<'_>]) -> Txn {
    let mut compare = Vec::new();
    let mut success = Vec::with_capacity(ops.len());
    let mut failure = Vec::with_capacity(ops.len());
    // etcd compares a missing key's mod_revision as 0: `expected == 0`
    // must also ask that the key exist.
    let exists = |key: &str| Compare::create_revision(key, CompareOp::Greater, 0);
    for op in ops {
        let key = op.key();
        match *op {
            TxnOp::Create { value, lease, .. } => {
                compare.push(Compare::create_revision(key, CompareOp::Equal, 0));
                let opts = lease.map(|l| PutOptions::new().with_lease(etcd_rev(l)));
                success.push(EtcdOp::put(key, value, opts));
            }
            TxnOp::Update {
                value, expected, ..
            } => {
                compare.push(Compare::mod_revision(
                    key,
                    CompareOp::Equal,
                    etcd_rev(expected),
                ));
                if expected == 0 {
                    compare.push(exists(key));
                }
                let keep_lease = PutOptions::new().with_ignore_lease();
                success.push(EtcdOp::put(key, value, Some(keep_lease)));
            }
            TxnOp::Put { value, .. } => {
                // No compare, and no lease: etcd detaches the key from a
                // lease it had, as the contract says.
                success.push(EtcdOp::put(key, value, None));
            }
            TxnOp::Delete { expected, .. } => {
                if let Some(r) = expected {
                    compare.push(Compare::mod_revision(key, CompareOp::Equal, etcd_rev(r)));
                    if r == 0 {
                        compare.push(exists(key));
                    }
                }
                success.push(EtcdOp::delete(key, None));
            }
        }
        failure.push(EtcdOp::get(key, None));
    }
    Txn::new().when(compare).and_then(success).or_else(failure)
}

/// What a txn did: its revision and how many keys its first op deleted
/// (for the single-key delete), or the first failed condition.
pub type Outcome = Result<(Revision, i64), TxnConflict>;

pub fn decode(ops: &[TxnOp<'_>], resp: &TxnResponse) -> StoreResult<Outcome> {
    let unreadable = |why: &str| StoreError::Unavailable {
        reason: format!("etcd answered a txn with something unreadable: {why}"),
    };
    let responses = resp.op_responses();
    if resp.succeeded() {
        let revision = resp
            .header()
            .map(|h| rev(h.revision()))
            .ok_or_else(|| unreadable("no header"))?;
        let deleted = match responses.first() {
            Some(TxnOpResponse::Delete(d)) => d.deleted(),
            _ => 0,
        };
        return Ok(Ok((revision, deleted)));
    }
    if responses.len() != ops.len() {
        return Err(unreadable("failure branch of the wrong length"));
    }
    for (index, (op, r)) in ops.iter().zip(&responses).enumerate() {
        let current = match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(borrowed_kv),
            _ => return Err(unreadable("failure branch without a range")),
        };
        let mod_rev = current.as_ref().map(|kv| kv.mod_revision);
        let holds = match *op {
            TxnOp::Create { .. } => current.is_none(),
            TxnOp::Update { expected, .. } => mod_rev == Some(expected),
            TxnOp::Put { .. } => true,
            TxnOp::Delete { expected, .. } => expected.is_none_or(|r| mod_rev == Some(r)),
        };
        if !holds {
            return Ok(Err(TxnConflict { index, current }));
        }
    }
    Err(unreadable("failed, yet every condition holds"))
}

/// The leases `ops` attach keys to, in op order.
pub fn leases(ops: &[TxnOp<'_>]) -> Vec<u64> {
    ops.iter()
        .filter_map(|op| match op {
            TxnOp::Create { lease, .. } => *lease,
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks() {
        assert!(check(&[]).is_err());
        let twice = [
            TxnOp::Put {
                key: "a",
                value: b"1",
            },
            TxnOp::Delete {
                key: "a",
                expected: None,
            },
        ];
        assert!(matches!(check(&twice), Err(StoreError::Invalid { .. })));
        assert!(check(&[TxnOp::Put {
            key: "",
            value: b""
        }])
        .is_err());
        assert!(check(&[TxnOp::Put {
            key: "a",
            value: b"1"
        }])
        .is_ok());
    }

    #[test]
    fn leases_in_op_order() {
        let ops = [
            TxnOp::Create {
                key: "a",
                value: b"",
                lease: Some(7),
            },
            TxnOp::Put {
                key: "b",
                value: b"",
            },
            TxnOp::Create {
                key: "c",
                value: b"",
                lease: Some(9),
            },
        ];
        assert_eq!(leases(&ops), [7, 9]);
    }
}
