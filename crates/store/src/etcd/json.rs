//! The JSON shapes of etcd's gRPC-gateway (field names as in the protobufs,
//! int64 as strings, bytes as base64, zero values omitted), and base64.

use serde::{Deserialize, Deserializer};

use crate::{Event, EventKind, KeyValue};

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn b64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard (or URL-safe) base64, padding optional.
pub fn unb64(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            b'\r' | b'\n' => continue,
            _ => return Err(format!("invalid base64 byte {c:#x}")),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// An int64/uint64 the gateway sends as a string (or a number); negative
/// values (etcd's "-1" for an unknown lease TTL) read as 0.
fn de_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        S(String),
        U(u64),
        I(i64),
    }
    match Num::deserialize(d)? {
        Num::U(n) => Ok(n),
        Num::I(n) => Ok(n.max(0) as u64),
        Num::S(s) => match s.parse::<u64>() {
            Ok(n) => Ok(n),
            Err(_) => s
                .parse::<i64>()
                .map(|_| 0)
                .map_err(serde::de::Error::custom),
        },
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Header {
    #[serde(deserialize_with = "de_u64")]
    pub revision: u64,
    #[serde(deserialize_with = "de_u64")]
    pub member_id: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Kv {
    pub key: String,
    pub value: String,
    #[serde(deserialize_with = "de_u64")]
    pub create_revision: u64,
    #[serde(deserialize_with = "de_u64")]
    pub mod_revision: u64,
    #[serde(deserialize_with = "de_u64")]
    pub lease: u64,
}

impl Kv {
    pub fn into_kv(self) -> Result<KeyValue, String> {
        Ok(KeyValue {
            key: String::from_utf8_lossy(&unb64(&self.key)?).into_owned(),
            value: unb64(&self.value)?,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            lease: (self.lease != 0).then_some(self.lease),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RangeResponse {
    pub header: Header,
    pub kvs: Vec<Kv>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteRangeResponse {
    #[serde(deserialize_with = "de_u64")]
    pub deleted: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ResponseOp {
    pub response_range: Option<RangeResponse>,
    pub response_delete_range: Option<DeleteRangeResponse>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TxnResponse {
    pub header: Header,
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LeaseResponse {
    pub header: Header,
    #[serde(rename = "ID", deserialize_with = "de_u64")]
    pub id: u64,
    #[serde(rename = "TTL", deserialize_with = "de_u64")]
    pub ttl: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StatusResponse {
    pub header: Header,
    #[serde(deserialize_with = "de_u64")]
    pub leader: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WatchEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub kv: Kv,
}

impl WatchEvent {
    pub fn into_event(self) -> Result<Event, String> {
        let kind = if self.kind == "DELETE" {
            EventKind::Delete
        } else {
            EventKind::Put
        };
        let mut kv = self.kv.into_kv()?;
        if kind == EventKind::Delete {
            kv.value.clear();
            kv.create_revision = 0;
            kv.lease = None;
        }
        Ok(Event { kind, kv })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WatchResponse {
    pub header: Header,
    pub created: bool,
    pub canceled: bool,
    #[serde(deserialize_with = "de_u64")]
    pub compact_revision: u64,
    pub cancel_reason: String,
    pub events: Vec<WatchEvent>,
}

/// A gateway error: `{"error": "...", "code": N}` (unary) or
/// `{"error": {"grpc_code": N, "message": "..."}}` (streams).
#[derive(Debug, Clone)]
pub struct GatewayError {
    pub code: u64,
    pub message: String,
}

impl GatewayError {
    pub fn from_value(v: &serde_json::Value) -> Option<GatewayError> {
        let err = v.get("error")?;
        if let Some(msg) = err.as_str() {
            let code = v
                .get("code")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(2);
            return Some(GatewayError {
                code,
                message: msg.to_string(),
            });
        }
        let code = err
            .get("grpc_code")
            .or_else(|| err.get("code"))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(2);
        let message = err
            .get("message")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("unknown gateway error")
            .to_string();
        Some(GatewayError { code, message })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64(plain.as_bytes()), enc);
            assert_eq!(unb64(enc).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        assert_eq!(unb64(&b64(&all)).unwrap(), all);
        assert!(unb64("a*b").is_err());
    }

    #[test]
    fn prefix_ranges() {
        assert_eq!(prefix_range("a/b"), (b"a/b".to_vec(), b"a/c".to_vec()));
        assert_eq!(prefix_range(""), (vec![0], vec![0]));
    }

    #[test]
    fn int64_strings() {
        let r: LeaseResponse = serde_json::from_str(r#"{"ID":"7","TTL":3}"#).unwrap();
        assert_eq!((r.id, r.ttl), (7, 3));
        let w: WatchResponse =
            serde_json::from_str(r#"{"canceled":true,"compact_revision":"2"}"#).unwrap();
        assert_eq!(w.compact_revision, 2);
    }
}
