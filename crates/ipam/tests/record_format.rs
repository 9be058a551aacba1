//! The block record as stored: compact, lossless, and still able to read the
//! records earlier versions wrote.
//!
//! The size of a full block is printed, since every allocation or release
//! rewrites the whole block and the store pays for each byte:
//!
//! ```text
//! cargo test -p weft-ipam --test record_format -- --nocapture
//! ```

use serde_json::Value;
use weft_ipam::{block_key, Allocation, BlockRecord};
use weft_store::KeyValue;

fn kv(rec_json: &[u8], key: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: rec_json.to_vec(),
        create_revision: 1,
        mod_revision: 1,
        lease: None,
    }
}

fn encode(rec: &BlockRecord) -> Vec<u8> {
    serde_json::to_vec(rec).unwrap()
}

fn decode(bytes: &[u8]) -> BlockRecord {
    let rec: BlockRecord = serde_json::from_slice(bytes).unwrap();
    // and through the store path, with its checks
    let via_store = BlockRecord::decode(&kv(bytes, &block_key(&rec.cidr))).unwrap();
    assert_eq!(via_store, rec);
    rec
}

/// A full /26 the way a busy node has it: 64 pods with real (64 hex
/// characters) container ids, `eth0`, and ~20-character pod names.
fn full_v4_block() -> BlockRecord {
    let mut rec = BlockRecord::new(
        "10.244.3.0/26".parse().unwrap(),
        "10.244.0.0/16".parse().unwrap(),
        Some("worker-node-17".into()),
    );
    for o in 0..64u32 {
        let container_id = format!("{:064x}", 0x9f3c_51e2_u64.wrapping_mul(u64::from(o) + 1));
        rec.allocations.insert(
            o,
            Allocation {
                handle: weft_ipam::handle(&container_id, "eth0"),
                container_id,
                ifname: "eth0".into(),
                pod_namespace: "team-payments-prod".into(),
                pod_name: format!("checkout-7c5ddbdf54-{o:05}"),
                allocated_at_ms: 1_730_000_000_000 + u64::from(o) * 1_337,
                node: None,
            },
        );
    }
    rec.next = 64;
    rec
}

#[test]
fn a_full_block_record_is_compact() {
    let rec = full_v4_block();
    let bytes = encode(&rec);
    println!(
        "full /26 block record: {} bytes ({} per allocation)",
        bytes.len(),
        bytes.len() / 64
    );
    // 18923 bytes with the original long field names and the handle stored
    // next to the container id and interface name it repeats.
    assert!(bytes.len() < 10_240, "{} bytes", bytes.len());
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(
        !text.contains("handle") && !text.contains("\"h\""),
        "{text}"
    );
    assert_eq!(decode(&bytes), rec);
}

/// What the agent's route reconciler reads from a raw block record must stay
/// where it is: `cidr`, `affinity`, and `allocations.<ordinal>.node`.
#[test]
fn the_fields_the_agent_reads_keep_their_names() {
    let mut rec = full_v4_block();
    rec.allocations.get_mut(&5).unwrap().node = Some("worker-node-3".into());
    let v: Value = serde_json::from_slice(&encode(&rec)).unwrap();
    assert_eq!(v["cidr"], "10.244.3.0/26");
    assert_eq!(v["affinity"], "worker-node-17");
    assert_eq!(v["allocations"]["5"]["node"], "worker-node-3");
    assert!(v["allocations"]["4"].get("node").is_none());
}

/// A record as weft wrote it before the compact encoding (long names, the
/// handle repeated, one borrowed address, one with a free-form handle).
const OLD_RECORD: &str = r#"{"cidr":"10.244.1.0/26","pool":"10.244.0.0/16","affinity":"node-a","allocations":{"1":{"handle":"3f6940ab1c2d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccdd/eth0","container_id":"3f6940ab1c2d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccdd","ifname":"eth0","pod_namespace":"kube-system","pod_name":"coredns-5d78c9869d-x2x4q","allocated_at_ms":1729000000123},"2":{"handle":"legacy-handle","container_id":"abc","ifname":"net1","pod_namespace":"","pod_name":"","allocated_at_ms":1729000000456},"7":{"handle":"d1/eth0","container_id":"d1","ifname":"eth0","pod_namespace":"default","pod_name":"web-0","allocated_at_ms":1729000000789,"node":"node-b"}},"quarantine":{"3":1729000300000},"next":8}"#;

#[test]
fn an_old_format_record_still_decodes_and_is_rewritten_compactly() {
    let rec = decode(OLD_RECORD.as_bytes());
    assert_eq!(rec.cidr, "10.244.1.0/26".parse().unwrap());
    assert_eq!(rec.affinity.as_deref(), Some("node-a"));
    assert_eq!(rec.next, 8);
    assert_eq!(rec.quarantine.get(&3), Some(&1_729_000_300_000));
    assert_eq!(rec.emptied_at_ms, None);
    let cid = "3f6940ab1c2d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccdd";
    assert_eq!(
        rec.allocations[&1],
        Allocation {
            handle: format!("{cid}/eth0"),
            container_id: cid.into(),
            ifname: "eth0".into(),
            pod_namespace: "kube-system".into(),
            pod_name: "coredns-5d78c9869d-x2x4q".into(),
            allocated_at_ms: 1_729_000_000_123,
            node: None,
        }
    );
    assert_eq!(
        rec.allocations[&2],
        Allocation {
            handle: "legacy-handle".into(),
            container_id: "abc".into(),
            ifname: "net1".into(),
            pod_namespace: String::new(),
            pod_name: String::new(),
            allocated_at_ms: 1_729_000_000_456,
            node: None,
        }
    );
    assert_eq!(rec.allocations[&7].handle, "d1/eth0");
    assert_eq!(rec.allocations[&7].node.as_deref(), Some("node-b"));

    // Re-encoded: the compact form, nothing lost.
    let bytes = encode(&rec);
    assert!(bytes.len() < OLD_RECORD.len());
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        v["allocations"]["1"],
        serde_json::json!({"c": cid, "ns": "kube-system",
            "n": "coredns-5d78c9869d-x2x4q", "t": 1_729_000_000_123u64})
    );
    assert_eq!(
        v["allocations"]["2"],
        serde_json::json!({"h": "legacy-handle", "c": "abc", "i": "net1",
            "t": 1_729_000_000_456u64})
    );
    assert_eq!(
        v["allocations"]["7"],
        serde_json::json!({"c": "d1", "ns": "default", "n": "web-0",
            "t": 1_729_000_000_789u64, "node": "node-b"})
    );
    assert_eq!(decode(&bytes), rec);
}

/// A record mixing both namings decodes too; unknown fields (from a newer
/// weft) are ignored.
#[test]
fn old_and_new_entries_mix() {
    let json = r#"{"cidr":"fd00::/122","pool":"fd00::/56","affinity":null,"allocations":{"1":{"handle":"a/eth0","container_id":"a","ifname":"eth0","allocated_at_ms":5},"2":{"c":"b","i":"eth0","t":6,"future":true},"3":{"c":"d","t":7},"4":{"c":"e","i":""}},"quarantine":{},"next":3}"#;
    let rec = decode(json.as_bytes());
    assert_eq!(rec.allocations[&1].handle, "a/eth0");
    assert_eq!(rec.allocations[&1].pod_name, "");
    assert_eq!(rec.allocations[&2].handle, "b/eth0");
    assert_eq!(rec.allocations[&2].allocated_at_ms, 6);
    // no interface name: eth0; an empty one is written out
    assert_eq!(rec.allocations[&3].ifname, "eth0");
    assert_eq!(rec.allocations[&3].handle, "d/eth0");
    assert_eq!(rec.allocations[&4].ifname, "");
    assert_eq!(rec.allocations[&4].handle, "e/");
    assert_eq!(rec.allocations[&4].allocated_at_ms, 0);
    let v: Value = serde_json::from_slice(&encode(&rec)).unwrap();
    assert_eq!(v["allocations"]["3"], serde_json::json!({"c": "d", "t": 7}));
    assert_eq!(
        v["allocations"]["4"],
        serde_json::json!({"c": "e", "i": ""})
    );
}

/// xorshift64*: a reproducible stream, no dependency needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn string(&mut self) -> String {
        const PIECES: &[&str] = &[
            "a", "0", "f", "/", "eth0", "-", "\"", "\\", "\n", "\u{0}", "é", "名前", "🦀", " ",
            "h", "c", "%2F", "\u{202e}",
        ];
        let len = match self.below(4) {
            0 => 0,
            1 => 1,
            2 => self.below(8) as usize,
            _ => self.below(40) as usize,
        };
        (0..len)
            .map(|_| PIECES[self.below(PIECES.len() as u64) as usize])
            .collect()
    }

    fn allocation(&mut self) -> Allocation {
        let container_id = match self.below(3) {
            0 => format!(
                "{:016x}{:016x}{:016x}{:016x}",
                self.next(),
                self.next(),
                self.next(),
                self.next()
            ),
            _ => self.string(),
        };
        let ifname = match self.below(3) {
            0 => "eth0".to_string(),
            _ => self.string(),
        };
        let derived = weft_ipam::handle(&container_id, &ifname);
        let handle = match self.below(9) {
            0 => self.string(),
            1 => String::new(),
            2 => format!("{derived}x"),
            3 => format!("{container_id}//{ifname}"),
            4 => format!("{ifname}/{container_id}"),
            5 => derived[..derived.len() - ifname.len()].to_string(),
            6 => format!("{container_id}x{ifname}"),
            _ => derived,
        };
        Allocation {
            handle,
            container_id,
            ifname,
            pod_namespace: self.string(),
            pod_name: self.string(),
            allocated_at_ms: match self.below(3) {
                0 => 0,
                1 => u64::MAX,
                _ => self.next() >> self.below(64),
            },
            node: match self.below(3) {
                0 => Some(self.string()),
                _ => None,
            },
        }
    }
}

#[test]
fn encoding_round_trips_random_allocations() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..300 {
        let v6 = rng.below(2) == 0;
        let mut rec = if v6 {
            BlockRecord::new(
                "fd00:10:244::40/122".parse().unwrap(),
                "fd00:10:244::/56".parse().unwrap(),
                Some(rng.string()).filter(|_| rng.below(2) == 0),
            )
        } else {
            BlockRecord::new(
                "10.244.0.64/26".parse().unwrap(),
                "10.244.0.0/16".parse().unwrap(),
                Some(rng.string()).filter(|_| rng.below(2) == 0),
            )
        };
        for _ in 0..rng.below(65) {
            let o = rng.below(64) as u32;
            let a = rng.allocation();
            rec.allocations.insert(o, a);
        }
        for _ in 0..rng.below(4) {
            rec.quarantine.insert(rng.below(64) as u32, rng.next());
        }
        rec.next = rng.below(64) as u32;
        rec.emptied_at_ms = Some(rng.next()).filter(|_| rng.below(2) == 0);

        let bytes = encode(&rec);
        let back = decode(&bytes);
        assert_eq!(
            back,
            rec,
            "case {case}: {}",
            String::from_utf8_lossy(&bytes)
        );

        // The same record in the old encoding decodes to the same thing, and
        // re-encodes to exactly the compact bytes.
        let old = old_encoding(&rec);
        let from_old = decode(&old);
        assert_eq!(from_old, rec, "case {case}");
        assert_eq!(encode(&from_old), bytes, "case {case}");
        assert!(bytes.len() <= old.len(), "case {case}");

        // The handle is stored exactly when it cannot be derived.
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        for (o, a) in &rec.allocations {
            let entry = &v["allocations"][o.to_string()];
            let derived = a.handle == weft_ipam::handle(&a.container_id, &a.ifname);
            assert_eq!(entry.get("h").is_none(), derived, "case {case}: {entry}");
        }
    }
}

/// `rec` as the original encoding wrote it (every field, long names).
fn old_encoding(rec: &BlockRecord) -> Vec<u8> {
    let allocations: serde_json::Map<String, Value> = rec
        .allocations
        .iter()
        .map(|(o, a)| {
            let mut e = serde_json::json!({
                "handle": a.handle,
                "container_id": a.container_id,
                "ifname": a.ifname,
                "pod_namespace": a.pod_namespace,
                "pod_name": a.pod_name,
                "allocated_at_ms": a.allocated_at_ms,
            });
            if let Some(n) = &a.node {
                e["node"] = Value::from(n.as_str());
            }
            (o.to_string(), e)
        })
        .collect();
    let mut v = serde_json::json!({
        "cidr": rec.cidr,
        "pool": rec.pool,
        "affinity": rec.affinity,
        "allocations": allocations,
        "quarantine": rec.quarantine,
        "next": rec.next,
    });
    if let Some(t) = rec.emptied_at_ms {
        v["emptied_at_ms"] = Value::from(t);
    }
    serde_json::to_vec(&v).unwrap()
}
