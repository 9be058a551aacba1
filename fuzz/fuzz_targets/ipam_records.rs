//! IPAM's records as read back from the shared store, where any node (or
//! anyone who can write to etcd) may have put them: block records (the
//! large, hot ones), route summaries and pool records. An input is the key,
//! a newline, and the value; an empty key stands for the key the record
//! itself names, so the decoder's checks beyond the key are reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_ipam::{
    block_key, parse_block_key, BlockRecord, PoolConfig, RouteSummary, POOLS_PREFIX, ROUTES_PREFIX,
};
use weft_store::KeyValue;

fuzz_target!(|bytes: &[u8]| {
    let (key, value) = match bytes.iter().position(|&b| b == b'\n') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (&b""[..], bytes),
    };
    let mut key = String::from_utf8_lossy(key).into_owned();
    if key.is_empty() {
        let named = serde_json::from_slice::<serde_json::Value>(value)
            .ok()
            .and_then(|v| v.get("cidr")?.as_str()?.parse().ok());
        if let Some(cidr) = named {
            key = block_key(&cidr);
        }
    }
    let _ = parse_block_key(&key);
    let kv = KeyValue {
        key: key.clone(),
        value: value.to_vec(),
        create_revision: 1,
        mod_revision: 1,
        lease: None,
    };

    if let Ok(rec) = BlockRecord::decode(&kv) {
        exercise_block(&rec, &kv);
    }
    if key.starts_with(ROUTES_PREFIX) || key.is_empty() {
        if let Ok(summary) = RouteSummary::decode(value) {
            let again = RouteSummary::decode(&summary.encode());
            assert_eq!(
                again.ok().as_ref(),
                Some(&summary),
                "route summary round trip"
            );
        }
    }
    if key.starts_with(POOLS_PREFIX) || key.is_empty() {
        if let Ok(pool) = serde_json::from_slice::<PoolConfig>(value) {
            let _ = pool.validate();
            let _ = pool.family();
        }
    }
});

/// Everything the agent and the views do with a block record they read.
fn exercise_block(rec: &BlockRecord, kv: &KeyValue) {
    let _ = rec.size();
    let _ = rec.capacity();
    let _ = rec.family();
    for now in [0, u64::MAX] {
        let _ = rec.pick_free(now);
        let _ = rec.active_quarantine(now).count();
    }
    for (&ordinal, alloc) in &rec.allocations {
        let addr = rec.addr(ordinal);
        let _ = rec.ordinal(addr);
        let _ = rec.usable(ordinal);
        let _ = alloc.owner(rec);
    }
    for &ordinal in rec.quarantine.keys() {
        let _ = rec.addr(ordinal);
        let _ = rec.is_free(ordinal, 0);
    }
    let summary = rec.route_summary();
    let _ = RouteSummary::decode(&summary.encode());
    assert!(rec.same_routes(rec));
    let mut pruned = rec.clone();
    pruned.prune(u64::MAX / 2);

    // What a node writes back after reading it decodes to the same record.
    let Ok(encoded) = serde_json::to_vec(rec) else {
        return;
    };
    let again = BlockRecord::decode(&KeyValue {
        value: encoded,
        ..kv.clone()
    });
    match again {
        Ok(again) => assert_eq!(&again, rec, "block record round trip"),
        Err(e) => panic!("a decoded block record does not decode once encoded: {e}"),
    }
}
