//! The etcd v3 backend, over etcd's gRPC-gateway JSON API on plain HTTP/1.1
//! (`POST /v3/kv/range`, `/v3/kv/txn`, `/v3/watch`, `/v3/lease/*`), with a
//! small HTTP client of its own on `std::net`.
//!
//! Every request tries the endpoints in turn, starting with the last one that
//! worked, each attempt bounded by [`EtcdOptions::request_timeout`], the whole
//! operation by [`EtcdOptions::deadline`]; when no endpoint answers in time
//! the result is [`StoreError::Unavailable`] naming the endpoints.
//!
//! Every conditional write is one etcd txn: creates compare
//! `create_revision == 0`, updates and conditional deletes `mod_revision ==
//! expected`; the failure branch ranges every key of the txn, so a conflict
//! carries the current key without another round trip.
//!
//! A watch is a thread holding a streaming `/v3/watch`; on connection loss it
//! reconnects (to any endpoint) from the last delivered revision + 1, so a
//! leader change or member loss neither loses nor duplicates events.
//!
//! A request whose response is lost (connection reset after the request was
//! sent) is retried on another endpoint: a conditional write that did apply
//! then reports a conflict carrying its own write. Callers that care compare
//! the conflict's value with what they wrote.

mod client;
mod http;
mod json;
mod watch;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use self::client::{CallError, Client};
use self::http::Endpoint;
use self::json::{b64, prefix_range, GatewayError, LeaseResponse, RangeResponse, TxnResponse};
use crate::{
    check_key, check_value, Conflict, KeyValue, LeaseId, Listing, Revision, Store, StoreError,
    StoreResult, TxnConflict, TxnOp, Watch,
};

/// Tuning of the etcd backend.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Bound on one attempt against one endpoint (connect, send, answer).
    pub request_timeout: Duration,
    /// Bound on a TCP connect to one endpoint.
    pub connect_timeout: Duration,
    /// Bound on a whole operation, over every endpoint and retry; past it the
    /// operation is [`StoreError::Unavailable`].
    pub deadline: Duration,
    /// How long a watch keeps trying to reconnect before it gives up with
    /// [`crate::WatchMessage::Closed`].
    pub watch_reconnect_for: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(500),
            deadline: Duration::from_secs(4),
            watch_reconnect_for: Duration::from_secs(30),
        }
    }
}

/// One member's view, from `/v3/maintenance/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberStatus {
    pub member_id: u64,
    /// The member id of the leader this member knows (0: none).
    pub leader: u64,
    pub revision: Revision,
}

/// A [`Store`] on an etcd v3 cluster.
pub struct EtcdStore {
    client: Arc<Client>,
}

fn decode_err(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        reason: format!("etcd answered {what} with something unreadable: {e}"),
    }
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(body).map_err(|e| decode_err(what, e))
}

fn gateway_error(what: &str, e: GatewayError) -> StoreError {
    match e.code {
        3 | 8 | 9 | 11 => StoreError::Invalid {
            reason: format!("{what}: {}", e.message),
        },
        _ => StoreError::Unavailable {
            reason: format!("{what}: etcd error {}: {}", e.code, e.message),
        },
    }
}

fn is_lease_not_found(e: &GatewayError) -> bool {
    e.code == 5 && e.message.contains("lease not found")
}

impl EtcdStore {
    /// A store on the cluster behind `endpoints` (`http://host:port`). It
    /// checks that one endpoint answers within the deadline.
    pub fn connect(endpoints: &[String], opts: EtcdOptions) -> StoreResult<EtcdStore> {
        if endpoints.is_empty() {
            return Err(StoreError::Invalid {
                reason: "no etcd endpoint given".into(),
            });
        }
        let eps = endpoints
            .iter()
            .map(|e| Endpoint::parse(e).map_err(|reason| StoreError::Invalid { reason }))
            .collect::<StoreResult<Vec<_>>>()?;
        let store = EtcdStore {
            client: Arc::new(Client::new(eps, opts)),
        };
        store.status()?;
        Ok(store)
    }

    fn call(&self, what: &str, path: &str, body: &Value) -> StoreResult<Vec<u8>> {
        self.client.call(path, body).map_err(|e| match e {
            CallError::Unavailable(e) => e,
            CallError::Gateway(e) => gateway_error(what, e),
        })
    }

    /// The status of whichever member answered.
    pub fn status(&self) -> StoreResult<MemberStatus> {
        let body = self.call("status", "/v3/maintenance/status", &json!({}))?;
        let s: json::StatusResponse = parse("status", &body)?;
        Ok(MemberStatus {
            member_id: s.header.member_id,
            leader: s.leader,
            revision: s.header.revision,
        })
    }

    /// Compacts the history up to `revision` (watches from before it then see
    /// [`crate::WatchMessage::Compacted`]).
    pub fn compact(&self, revision: Revision) -> StoreResult<()> {
        self.call(
            "compact",
            "/v3/kv/compaction",
            &json!({ "revision": revision.to_string(), "physical": true }),
        )?;
        Ok(())
    }

    /// Drops idle pooled connections.
    pub fn reset_connections(&self) {
        self.client.clear_pool();
    }

    fn range(&self, key: &[u8], range_end: Option<&[u8]>) -> StoreResult<RangeResponse> {
        let mut req = json!({ "key": b64(key) });
        if let Some(end) = range_end {
            req["range_end"] = Value::String(b64(end));
        }
        let body = self.call("range", "/v3/kv/range", &req)?;
        parse("range", &body)
    }

    /// Runs `ops` as one etcd txn: `Ok(Ok((revision, success responses)))`
    /// or the first failed condition.
    fn txn(
        &self,
        ops: &[TxnOp<'_>],
    ) -> StoreResult<Result<(Revision, Vec<json::ResponseOp>), TxnConflict>> {
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
        let mut compare = Vec::new();
        let mut success = Vec::new();
        let mut failure = Vec::new();
        let mod_eq = |key: &str, rev: Revision| {
            json!({"target": "MOD", "result": "EQUAL", "key": b64(key.as_bytes()),
                   "mod_revision": rev.to_string()})
        };
        let exists = |key: &str| {
            json!({"target": "CREATE", "result": "GREATER", "key": b64(key.as_bytes()),
                   "create_revision": "0"})
        };
        for op in ops {
            let k = b64(op.key().as_bytes());
            match *op {
                TxnOp::Create { value, lease, .. } => {
                    compare.push(json!({"target": "CREATE", "result": "EQUAL", "key": k,
                                        "create_revision": "0"}));
                    let mut put = json!({"key": k, "value": b64(value)});
                    if let Some(l) = lease {
                        put["lease"] = Value::String(l.to_string());
                    }
                    success.push(json!({ "request_put": put }));
                }
                TxnOp::Update {
                    key,
                    value,
                    expected,
                } => {
                    compare.push(mod_eq(key, expected));
                    if expected == 0 {
                        compare.push(exists(key));
                    }
                    success.push(json!({"request_put": {"key": k, "value": b64(value),
                                                        "ignore_lease": true}}));
                }
                TxnOp::Put { value, .. } => {
                    // No compare, and no `lease`: etcd detaches the key from
                    // a lease it had, as the contract says.
                    success.push(json!({"request_put": {"key": k, "value": b64(value)}}));
                }
                TxnOp::Delete { key, expected } => {
                    if let Some(rev) = expected {
                        compare.push(mod_eq(key, rev));
                        if rev == 0 {
                            compare.push(exists(key));
                        }
                    }
                    success.push(json!({"request_delete_range": {"key": k}}));
                }
            }
            failure.push(json!({"request_range": {"key": k}}));
        }
        let req = json!({"compare": compare, "success": success, "failure": failure});
        let body = match self.client.call("/v3/kv/txn", &req) {
            Ok(b) => b,
            Err(CallError::Unavailable(e)) => return Err(e),
            Err(CallError::Gateway(e)) if is_lease_not_found(&e) => {
                return Err(self.missing_lease(ops));
            }
            Err(CallError::Gateway(e)) => return Err(gateway_error("txn", e)),
        };
        let resp: TxnResponse = parse("txn", &body)?;
        if resp.succeeded {
            return Ok(Ok((resp.header.revision, resp.responses)));
        }
        if resp.responses.len() != ops.len() {
            return Err(decode_err("txn", "failure branch of the wrong length"));
        }
        for (index, (op, r)) in ops.iter().zip(resp.responses).enumerate() {
            let current = match r.response_range.and_then(|r| r.kvs.into_iter().next()) {
                Some(kv) => Some(kv.into_kv().map_err(|e| decode_err("txn", e))?),
                None => None,
            };
            let mod_rev = current.as_ref().map(|kv| kv.mod_revision);
            let holds = match *op {
                TxnOp::Create { .. } => current.is_none(),
                TxnOp::Update { expected, .. } => mod_rev == Some(expected),
                TxnOp::Put { .. } => true,
                TxnOp::Delete { expected, .. } => expected.is_none_or(|rev| mod_rev == Some(rev)),
            };
            if !holds {
                return Ok(Err(TxnConflict { index, current }));
            }
        }
        Err(decode_err("txn", "failed, yet every condition holds"))
    }

    /// The lease error of a txn etcd refused for an unknown lease.
    fn missing_lease(&self, ops: &[TxnOp<'_>]) -> StoreError {
        let leases: Vec<LeaseId> = ops
            .iter()
            .filter_map(|op| match op {
                TxnOp::Create { lease, .. } => *lease,
                _ => None,
            })
            .collect();
        let lease = leases
            .iter()
            .copied()
            .find(|&l| !matches!(self.lease_ttl(l), Ok(Some(_))))
            .or(leases.first().copied())
            .unwrap_or(0);
        StoreError::LeaseNotFound { lease }
    }

    /// The remaining TTL of a lease, `None` when etcd does not know it.
    fn lease_ttl(&self, lease: LeaseId) -> StoreResult<Option<i64>> {
        let body = self.call(
            "lease time-to-live",
            "/v3/lease/timetolive",
            &json!({ "ID": lease.to_string() }),
        )?;
        let v: Value = parse("lease time-to-live", &body)?;
        let ttl = match &v["TTL"] {
            Value::String(s) => s.parse().unwrap_or(-1),
            Value::Number(n) => n.as_i64().unwrap_or(-1),
            _ => 0,
        };
        Ok((ttl >= 0).then_some(ttl))
    }
}

fn conflict(c: TxnConflict) -> Conflict {
    Conflict { current: c.current }
}

impl Store for EtcdStore {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        check_key(key)?;
        let r = self.range(key.as_bytes(), None)?;
        match r.kvs.into_iter().next() {
            Some(kv) => Ok(Some(kv.into_kv().map_err(|e| decode_err("range", e))?)),
            None => Ok(None),
        }
    }

    fn list(&self, prefix: &str) -> StoreResult<Listing> {
        let (key, end) = prefix_range(prefix);
        let r = self.range(&key, Some(&end))?;
        let kvs = r
            .kvs
            .into_iter()
            .map(|kv| kv.into_kv().map_err(|e| decode_err("range", e)))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Listing {
            kvs,
            revision: r.header.revision,
        })
    }

    fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> StoreResult<Result<Revision, Conflict>> {
        Ok(self
            .txn(&[TxnOp::Create { key, value, lease }])?
            .map(|(rev, _)| rev)
            .map_err(conflict))
    }

    fn update(
        &self,
        key: &str,
        value: &[u8],
        expected: Revision,
    ) -> StoreResult<Result<Revision, Conflict>> {
        Ok(self
            .txn(&[TxnOp::Update {
                key,
                value,
                expected,
            }])?
            .map(|(rev, _)| rev)
            .map_err(conflict))
    }

    fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> StoreResult<Result<Option<Revision>, Conflict>> {
        Ok(self
            .txn(&[TxnOp::Delete { key, expected }])?
            .map(|(rev, responses)| {
                let deleted = responses
                    .first()
                    .and_then(|r| r.response_delete_range.as_ref())
                    .map_or(0, |d| d.deleted);
                (deleted > 0).then_some(rev)
            })
            .map_err(conflict))
    }

    fn commit(&self, ops: &[TxnOp<'_>]) -> StoreResult<Result<Revision, TxnConflict>> {
        Ok(self.txn(ops)?.map(|(rev, _)| rev))
    }

    fn watch(&self, prefix: &str, after: Revision) -> StoreResult<Watch> {
        watch::start(self.client.clone(), prefix, after)
    }

    fn grant_lease(&self, ttl: Duration) -> StoreResult<LeaseId> {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let body = self.call(
            "lease grant",
            "/v3/lease/grant",
            &json!({ "TTL": secs.max(1).to_string() }),
        )?;
        let r: LeaseResponse = parse("lease grant", &body)?;
        if r.id == 0 {
            return Err(decode_err("lease grant", "no lease id"));
        }
        Ok(r.id)
    }

    fn keep_alive(&self, lease: LeaseId) -> StoreResult<()> {
        let body = self.call(
            "lease keep-alive",
            "/v3/lease/keepalive",
            &json!({ "ID": lease.to_string() }),
        )?;
        // A stream of one message: {"result": {...}} or {"error": {...}}.
        let line = body
            .split(|&b| b == b'\n')
            .find(|l| !l.iter().all(u8::is_ascii_whitespace))
            .unwrap_or(&[]);
        let v: Value = parse("lease keep-alive", line)?;
        if let Some(e) = GatewayError::from_value(&v) {
            return Err(if is_lease_not_found(&e) {
                StoreError::LeaseNotFound { lease }
            } else {
                gateway_error("lease keep-alive", e)
            });
        }
        let r: LeaseResponse = serde_json::from_value(v["result"].clone())
            .map_err(|e| decode_err("lease keep-alive", e))?;
        if r.ttl == 0 {
            return Err(StoreError::LeaseNotFound { lease });
        }
        Ok(())
    }

    fn revoke_lease(&self, lease: LeaseId) -> StoreResult<()> {
        match self
            .client
            .call("/v3/lease/revoke", &json!({ "ID": lease.to_string() }))
        {
            Ok(_) => Ok(()),
            Err(CallError::Gateway(e)) if is_lease_not_found(&e) => {
                Err(StoreError::LeaseNotFound { lease })
            }
            Err(CallError::Gateway(e)) => Err(gateway_error("lease revoke", e)),
            Err(CallError::Unavailable(e)) => Err(e),
        }
    }
}
