//! The embedded store's log as opening replays it. Half the inputs are a
//! log as is (magic, frames, torn tails); the other half are payloads the
//! harness frames with valid checksums, so the record decoder sees every
//! shape a damaged-but-checksummed or hostile log file can hold instead of
//! stopping at the CRC.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use weft_store::embedded::{crc32, replay_log, LOG_MAGIC};

/// `len | crc32(len) | crc32(payload) | payload`, as the store writes it.
fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u32).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc32(&len).to_le_bytes());
    out.extend_from_slice(&crc32(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&mode, rest)) = bytes.split_first() else {
        return;
    };
    let log = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        // Payloads separated by the two bytes 0xff 0x00, each framed.
        let mut log = LOG_MAGIC.to_vec();
        let mut start = 0;
        let mut i = 0;
        while i + 1 < rest.len() {
            if rest[i] == 0xff && rest[i + 1] == 0x00 {
                frame(&rest[start..i], &mut log);
                start = i + 2;
                i += 2;
            } else {
                i += 1;
            }
        }
        frame(&rest[start..], &mut log);
        log
    };
    let Ok(replay) = replay_log(&log, Path::new("fuzz.log")) else {
        return;
    };
    assert!(replay.end <= log.len());
    for (key, kv) in &replay.kvs {
        assert_eq!(key, &kv.key);
        assert!(kv.mod_revision <= replay.revision, "revision behind a key");
        if let Some(lease) = kv.lease {
            assert!(lease < replay.next_lease, "lease id {lease} may be reused");
        }
    }
});
