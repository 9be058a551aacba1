//! Between etcd-client's types and weft's: endpoints, key ranges, key-values,
//! events, and what an error of the client means for the caller.

use etcd_client::{EventType, KeyValue as EtcdKv};

use crate::{Event, EventKind, KeyValue, Revision, StoreError};

/// etcd's default client port, for endpoints given without one.
const DEFAULT_PORT: u16 = 2379;

/// One endpoint as the user gave it (`http://host:port`, `host:port` or
/// `host`) and the URL the gRPC channel dials.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// As the caller gave it, for messages.
    pub url: String,
    /// `http://host:port`, the port filled in when it was left out (tonic
    /// would dial port 80).
    pub dial: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if url.starts_with("https://") {
            return Err(format!(
                "{url}: https is not supported yet (give etcd's plain http:// client URL)"
            ));
        } else if url.contains("://") {
            return Err(format!(
                "{url}: unsupported scheme (expected http://host:port)"
            ));
        } else {
            url
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(format!("{url}: expected http://host:port"));
        }
        let has_port = authority.rsplit_once(':').is_some_and(|(_, p)| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !authority.ends_with(']')
        });
        let dial = if has_port {
            format!("http://{authority}")
        } else {
            format!("http://{authority}:{DEFAULT_PORT}")
        };
        Ok(Endpoint {
            url: url.to_string(),
            dial,
        })
    }
}

/// The `[key, range_end)` of a byte prefix (`""` is every key).
pub fn prefix_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        return (vec![0], vec![0]);
    }
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (prefix.as_bytes().to_vec(), end);
        }
    }
    // All 0xff: to the end of the keyspace.
    (prefix.as_bytes().to_vec(), vec![0])
}

/// etcd's int64 revisions as weft's (etcd never sends a negative one).
pub fn rev(r: i64) -> Revision {
    Revision::try_from(r).unwrap_or(0)
}

/// weft's revision as etcd's int64; one past etcd's range never matches.
pub fn etcd_rev(r: Revision) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

/// A key-value etcd owns (from `take_kvs`), without copying the value.
pub fn owned_kv(kv: EtcdKv) -> KeyValue {
    let (create_revision, mod_revision, lease) = (
        rev(kv.create_revision()),
        rev(kv.mod_revision()),
        kv.lease(),
    );
    let (key, value) = kv.into_key_value();
    KeyValue {
        key: String::from_utf8(key)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        value,
        create_revision,
        mod_revision,
        lease: (lease > 0).then(|| rev(lease)),
    }
}

/// A key-value inside a response etcd-client lends out.
pub fn borrowed_kv(kv: &EtcdKv) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: rev(kv.create_revision()),
        mod_revision: rev(kv.mod_revision()),
        lease: (kv.lease() > 0).then(|| rev(kv.lease())),
    }
}

/// A watch event; `None` for one without a key-value (etcd always sends it).
pub fn event(e: &etcd_client::Event) -> Option<Event> {
    let kind = match e.event_type() {
        EventType::Put => EventKind::Put,
        EventType::Delete => EventKind::Delete,
    };
    let mut kv = borrowed_kv(e.kv()?);
    if kind == EventKind::Delete {
        // The contract: a delete carries no value, no creation, no lease.
        kv.value.clear();
        kv.create_revision = 0;
        kv.lease = None;
    }
    Some(Event { kind, kv })
}

/// What a failed call means.
#[derive(Debug)]
pub enum Failure {
    /// Worth another endpoint (connection lost, no leader, timed out).
    Retry(String),
    /// etcd answered with a definite error: another endpoint would say the
    /// same.
    Definite { code: i32, message: String },
}

/// gRPC codes that are etcd's definite answers to the request itself:
/// InvalidArgument, NotFound, AlreadyExists, PermissionDenied,
/// ResourceExhausted, FailedPrecondition, OutOfRange, Unimplemented,
/// Unauthenticated. Everything else (Unavailable: no leader or the
/// connection failed; Unknown and Internal: a stream cut; DeadlineExceeded;
/// Canceled; Aborted) may go better on another member.
const DEFINITE: &[i32] = &[3, 5, 6, 7, 8, 9, 11, 12, 16];

pub fn classify(e: etcd_client::Error) -> Failure {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let code = i32::from(s.code());
            if DEFINITE.contains(&code) {
                Failure::Definite {
                    code,
                    message: s.message().to_string(),
                }
            } else {
                Failure::Retry(format!("etcd error {code}: {}", s.message()))
            }
        }
        // "lease not found" from a keep-alive stream's first answer.
        etcd_client::Error::LeaseKeepAliveError(m) if m.contains("not found") => {
            Failure::Definite {
                code: 5,
                message: format!("requested lease not found ({m})"),
            }
        }
        other => Failure::Retry(other.to_string()),
    }
}

pub fn is_lease_not_found(code: i32, message: &str) -> bool {
    code == 5 && message.contains("lease not found")
}

/// A definite etcd error as the store's error.
pub fn definite(what: &str, code: i32, message: &str) -> StoreError {
    match code {
        3 | 8 | 9 | 11 => StoreError::Invalid {
            reason: format!("{what}: {message}"),
        },
        _ => StoreError::Unavailable {
            reason: format!("{what}: etcd error {code}: {message}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges() {
        assert_eq!(prefix_range("a/b"), (b"a/b".to_vec(), b"a/c".to_vec()));
        assert_eq!(prefix_range(""), (vec![0], vec![0]));
        assert_eq!(
            prefix_range("a\u{7f}"),
            (b"a\x7f".to_vec(), b"a\x80".to_vec())
        );
    }

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://10.0.0.1:2379").unwrap();
        assert_eq!(
            (e.url.as_str(), e.dial.as_str()),
            ("http://10.0.0.1:2379", "http://10.0.0.1:2379")
        );
        assert_eq!(
            Endpoint::parse("etcd-0").unwrap().dial,
            "http://etcd-0:2379"
        );
        assert_eq!(
            Endpoint::parse("127.0.0.1:12379/").unwrap().dial,
            "http://127.0.0.1:12379"
        );
        assert_eq!(Endpoint::parse("[::1]").unwrap().dial, "http://[::1]:2379");
        assert_eq!(
            Endpoint::parse("http://[::1]:3").unwrap().dial,
            "http://[::1]:3"
        );
        assert!(Endpoint::parse("https://a:2379")
            .unwrap_err()
            .contains("https"));
        assert!(Endpoint::parse("unix://x").is_err());
        assert!(Endpoint::parse("http://").is_err());
        assert!(Endpoint::parse("http://a:1/v3").is_err());
    }

    #[test]
    fn revisions_cross_the_sign() {
        assert_eq!(rev(-1), 0);
        assert_eq!(rev(7), 7);
        assert_eq!(etcd_rev(u64::MAX), i64::MAX);
    }

    #[test]
    fn errors() {
        assert!(matches!(
            definite("txn", 3, "too large"),
            StoreError::Invalid { .. }
        ));
        assert!(matches!(
            definite("txn", 7, "denied"),
            StoreError::Unavailable { .. }
        ));
        assert!(is_lease_not_found(
            5,
            "etcdserver: requested lease not found"
        ));
        assert!(!is_lease_not_found(5, "key not found"));
    }
}
