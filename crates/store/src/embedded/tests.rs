use super::*;

#[test]
fn crc32_check_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
}

/// Found by the `store_log` fuzz target: a checksummed record naming
/// lease id u64::MAX overflowed the replay (a panic with overflow
/// checks, a next lease id of 0, "no lease", without them). Ids and
/// revisions past [`ID_LIMIT`] are undecodable now: the log is corrupt.
#[test]
fn ids_past_the_limit_are_corruption_not_overflow() {
    let path = Path::new("store.log");
    let kv = |lease: Option<u64>, rev: u64| KeyValue {
        key: "k".to_string(),
        value: b"v".to_vec(),
        create_revision: rev,
        mod_revision: rev,
        lease,
    };
    let hostile = [
        encode_put(&kv(Some(u64::MAX), 1)),
        encode_put(&kv(Some(ID_LIMIT), 1)),
        encode_put(&kv(None, u64::MAX)),
        encode_lease(u64::MAX),
        encode_meta(1, u64::MAX),
        encode_meta(u64::MAX, 1),
        encode_delete("k", ID_LIMIT),
        encode_txn(u64::MAX, &[TxnWrite::Delete("k".to_string())]),
        encode_txn(
            2,
            &[TxnWrite::Put(KeyValue {
                mod_revision: 2,
                ..kv(Some(u64::MAX), 2)
            })],
        ),
    ];
    for frame in hostile {
        let mut log = LOG_MAGIC.to_vec();
        log.extend_from_slice(&encode_put(&kv(Some(3), 1)));
        log.extend_from_slice(&frame);
        match replay_log(&log, path) {
            Err(StoreError::Corrupt { reason, .. }) => {
                assert!(reason.contains("undecodable record"), "{reason}")
            }
            other => panic!("a record past the id limit replayed: {other:?}"),
        }
    }
    // The largest ids below the limit still replay, and the next grant
    // cannot overflow.
    let mut log = LOG_MAGIC.to_vec();
    log.extend_from_slice(&encode_put(&kv(Some(ID_LIMIT - 1), ID_LIMIT - 1)));
    let replay = replay_log(&log, path).unwrap();
    assert_eq!(replay.next_lease, ID_LIMIT);
    assert_eq!(replay.revision, ID_LIMIT - 1);
    assert_eq!(replay.end, log.len());
}

#[test]
fn frames_roundtrip() {
    let kv = KeyValue {
        key: "a/b".to_string(),
        value: b"hello".to_vec(),
        create_revision: 3,
        mod_revision: 7,
        lease: Some(9),
    };
    let frame = encode_put(&kv);
    assert_eq!(frame.len() as u64, put_frame_len(&kv));
    assert_eq!(valid_frame(&frame, 0), Some(frame.len()));
    match decode(&frame[FRAME_HEADER..]) {
        Some(Record::Put(got)) => assert_eq!(got, kv),
        _ => panic!("put did not roundtrip"),
    }
    assert_eq!(encode_meta(1, 2).len() as u64, META_FRAME_LEN);
    let writes = vec![
        TxnWrite::Put(KeyValue {
            mod_revision: 11,
            ..kv.clone()
        }),
        TxnWrite::Delete("gone".to_string()),
        TxnWrite::Put(KeyValue {
            key: "c".to_string(),
            value: Vec::new(),
            create_revision: 11,
            mod_revision: 11,
            lease: None,
        }),
    ];
    let frame = encode_txn(11, &writes);
    assert_eq!(frame.len(), txn_frame_len(&writes));
    assert_eq!(valid_frame(&frame, 0), Some(frame.len()));
    match decode(&frame[FRAME_HEADER..]) {
        Some(Record::Txn {
            revision,
            writes: got,
        }) => {
            assert_eq!(revision, 11);
            assert_eq!(got, writes);
        }
        _ => panic!("txn did not roundtrip"),
    }
    // A count larger than the writes present does not decode.
    let mut payload = frame[FRAME_HEADER..].to_vec();
    payload[9..13].copy_from_slice(&4u32.to_le_bytes());
    assert!(decode(&payload).is_none());
    let frame = encode_delete("k", 5);
    assert!(matches!(
        decode(&frame[FRAME_HEADER..]),
        Some(Record::Delete { ref key, revision: 5 }) if key == "k"
    ));
}
