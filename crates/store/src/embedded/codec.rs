//! The log's records: framing (length, CRC), encoding each kind of
//! record, decoding them, and replaying a log into a state.

use super::*;

// Records

pub(super) enum Record {
    Put(KeyValue),
    Delete {
        key: String,
        revision: Revision,
    },
    Lease {
        id: LeaseId,
    },
    Meta {
        revision: Revision,
        next_lease: LeaseId,
    },
    Txn {
        revision: Revision,
        writes: Vec<TxnWrite>,
    },
}

/// One write inside a txn record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TxnWrite {
    /// The key's new state (its `mod_revision` is the txn's revision).
    Put(KeyValue),
    Delete(String),
}

/// What a log's records hold once replayed, and where the valid log ends
/// (the rest is a torn tail that opening truncates away).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub kvs: BTreeMap<String, KeyValue>,
    /// The highest revision any record names.
    pub revision: Revision,
    /// The first lease id never seen in the log (ids start at 1).
    pub next_lease: LeaseId,
    /// Offset just past the last valid record.
    pub end: usize,
}

/// Replays the bytes of a whole store log (magic included) the way opening
/// does, without touching any file: every byte is untrusted, so anything
/// malformed is an error or a torn tail, never a panic. `path` only names
/// the log in errors.
pub fn replay_log(data: &[u8], path: &Path) -> StoreResult<Replay> {
    if !data.starts_with(LOG_MAGIC) {
        return Err(corrupt(
            path,
            "not a weft store log (bad magic)".to_string(),
        ));
    }
    let mut replay = Replay::default();
    replay.end = scan_records(data, path, |rec| replay.apply(rec))?;
    Ok(replay)
}

impl Default for Replay {
    fn default() -> Self {
        Replay {
            kvs: BTreeMap::new(),
            revision: 0,
            // Lease ids start at 1: 0 encodes "no lease" in put records.
            next_lease: 1,
            end: 0,
        }
    }
}

impl Replay {
    pub(super) fn put(&mut self, kv: KeyValue) {
        self.revision = self.revision.max(kv.mod_revision);
        if let Some(l) = kv.lease {
            self.next_lease = self.next_lease.max(l + 1);
        }
        self.kvs.insert(kv.key.clone(), kv);
    }

    pub(super) fn delete(&mut self, key: &str, revision: Revision) {
        self.revision = self.revision.max(revision);
        self.kvs.remove(key);
    }

    pub(super) fn apply(&mut self, rec: Record) {
        match rec {
            Record::Put(kv) => self.put(kv),
            Record::Delete { key, revision } => self.delete(&key, revision),
            Record::Txn { revision, writes } => {
                for w in writes {
                    match w {
                        TxnWrite::Put(kv) => self.put(kv),
                        TxnWrite::Delete(key) => self.delete(&key, revision),
                    }
                }
                self.revision = self.revision.max(revision);
            }
            Record::Lease { id } => self.next_lease = self.next_lease.max(id + 1),
            Record::Meta {
                revision,
                next_lease,
            } => {
                self.revision = self.revision.max(revision);
                self.next_lease = self.next_lease.max(next_lease).max(1);
            }
        }
    }
}

/// CRC-32 (IEEE 802.3, the one of zlib and gzip). crc32fast uses the CPU's
/// carry-less multiply where it has one: every record of every write is
/// checksummed, and a full block record is ~18 KB.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

pub(super) fn put_frame_len(kv: &KeyValue) -> u64 {
    (FRAME_HEADER + 1 + 24 + 4 + kv.key.len() + 4 + kv.value.len()) as u64
}

pub(super) fn new_frame(payload_len: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(FRAME_HEADER + payload_len);
    buf.resize(FRAME_HEADER, 0);
    buf
}

pub(super) fn seal_frame(mut buf: Vec<u8>) -> Vec<u8> {
    let len = (buf.len() - FRAME_HEADER) as u32;
    let crc = crc32(&buf[FRAME_HEADER..]);
    buf[0..4].copy_from_slice(&len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc32(&len.to_le_bytes()).to_le_bytes());
    buf[8..12].copy_from_slice(&crc.to_le_bytes());
    buf
}

pub(super) fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
    buf.extend_from_slice(b);
}

pub(super) fn encode_put(kv: &KeyValue) -> Vec<u8> {
    let mut buf = new_frame(put_frame_len(kv) as usize - FRAME_HEADER);
    buf.push(OP_PUT);
    buf.extend_from_slice(&kv.mod_revision.to_le_bytes());
    buf.extend_from_slice(&kv.create_revision.to_le_bytes());
    buf.extend_from_slice(&kv.lease.unwrap_or(0).to_le_bytes());
    put_bytes(&mut buf, kv.key.as_bytes());
    put_bytes(&mut buf, &kv.value);
    seal_frame(buf)
}

pub(super) fn encode_delete(key: &str, revision: Revision) -> Vec<u8> {
    let mut buf = new_frame(1 + 8 + 4 + key.len());
    buf.push(OP_DELETE);
    buf.extend_from_slice(&revision.to_le_bytes());
    put_bytes(&mut buf, key.as_bytes());
    seal_frame(buf)
}

pub(super) fn txn_frame_len(writes: &[TxnWrite]) -> usize {
    let body: usize = writes
        .iter()
        .map(|w| match w {
            TxnWrite::Put(kv) => 1 + 8 + 8 + 4 + kv.key.len() + 4 + kv.value.len(),
            TxnWrite::Delete(key) => 1 + 4 + key.len(),
        })
        .sum();
    FRAME_HEADER + 1 + 8 + 4 + body
}

pub(super) fn encode_txn(revision: Revision, writes: &[TxnWrite]) -> Vec<u8> {
    let mut buf = new_frame(txn_frame_len(writes) - FRAME_HEADER);
    buf.push(OP_TXN);
    buf.extend_from_slice(&revision.to_le_bytes());
    buf.extend_from_slice(&(writes.len() as u32).to_le_bytes());
    for w in writes {
        match w {
            TxnWrite::Put(kv) => {
                buf.push(TXN_PUT);
                buf.extend_from_slice(&kv.create_revision.to_le_bytes());
                buf.extend_from_slice(&kv.lease.unwrap_or(0).to_le_bytes());
                put_bytes(&mut buf, kv.key.as_bytes());
                put_bytes(&mut buf, &kv.value);
            }
            TxnWrite::Delete(key) => {
                buf.push(TXN_DELETE);
                put_bytes(&mut buf, key.as_bytes());
            }
        }
    }
    seal_frame(buf)
}

pub(super) fn encode_lease(id: LeaseId) -> Vec<u8> {
    let mut buf = new_frame(9);
    buf.push(OP_LEASE);
    buf.extend_from_slice(&id.to_le_bytes());
    seal_frame(buf)
}

pub(super) fn encode_meta(revision: Revision, next_lease: LeaseId) -> Vec<u8> {
    let mut buf = new_frame(17);
    buf.push(OP_META);
    buf.extend_from_slice(&revision.to_le_bytes());
    buf.extend_from_slice(&next_lease.to_le_bytes());
    seal_frame(buf)
}

pub(super) struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Some(head)
    }
    pub(super) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub(super) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    pub(super) fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    pub(super) fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub(super) fn string(&mut self) -> Option<String> {
        std::str::from_utf8(self.bytes()?).ok().map(str::to_string)
    }
}

/// Revisions and lease ids count up from 1 by one per write or grant, so
/// none reaches 2^62 (a write every nanosecond for 146 years). A record
/// naming one at or past it is damage, not data: taking it would make the
/// next write or grant overflow (a lease id wrapping to 0, "no lease").
pub(super) const ID_LIMIT: u64 = 1 << 62;

impl Cursor<'_> {
    /// A revision or lease id (0 included: "none" where it is allowed).
    pub(super) fn id(&mut self) -> Option<u64> {
        self.u64().filter(|&v| v < ID_LIMIT)
    }
}

pub(super) fn decode(payload: &[u8]) -> Option<Record> {
    let mut c = Cursor { b: payload };
    let rec = match c.u8()? {
        OP_PUT => {
            let mod_revision = c.id()?;
            let create_revision = c.id()?;
            let lease = c.id()?;
            let key = c.string()?;
            let value = c.bytes()?.to_vec();
            Record::Put(KeyValue {
                key,
                value,
                create_revision,
                mod_revision,
                lease: (lease != 0).then_some(lease),
            })
        }
        OP_DELETE => {
            let revision = c.id()?;
            let key = c.string()?;
            Record::Delete { key, revision }
        }
        OP_LEASE => Record::Lease { id: c.id()? },
        OP_META => Record::Meta {
            revision: c.id()?,
            next_lease: c.id()?,
        },
        OP_TXN => {
            let revision = c.id()?;
            let count = c.u32()? as usize;
            // Every write takes at least 5 bytes: never trust `count` for
            // an allocation beyond what the payload can hold.
            let mut writes = Vec::with_capacity(count.min(c.b.len() / 5));
            for _ in 0..count {
                let w = match c.u8()? {
                    TXN_PUT => {
                        let create_revision = c.id()?;
                        let lease = c.id()?;
                        let key = c.string()?;
                        let value = c.bytes()?.to_vec();
                        TxnWrite::Put(KeyValue {
                            key,
                            value,
                            create_revision,
                            mod_revision: revision,
                            lease: (lease != 0).then_some(lease),
                        })
                    }
                    TXN_DELETE => TxnWrite::Delete(c.string()?),
                    _ => return None,
                };
                writes.push(w);
            }
            Record::Txn { revision, writes }
        }
        _ => return None,
    };
    c.b.is_empty().then_some(rec)
}

/// The length of the valid frame at `off`, if there is one.
pub(super) fn valid_frame(data: &[u8], off: usize) -> Option<usize> {
    let header = data.get(off..off + FRAME_HEADER)?;
    let len_bytes: [u8; 4] = header[0..4].try_into().ok()?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    let len_crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if len == 0 || crc32(&len_bytes) != len_crc {
        return None;
    }
    let crc = u32::from_le_bytes(header[8..12].try_into().ok()?);
    let payload = data.get(off + FRAME_HEADER..(off + FRAME_HEADER).checked_add(len)?)?;
    (crc32(payload) == crc).then_some(FRAME_HEADER + len)
}

/// Replays the records of `data` (which starts with the magic) into `apply`
/// and returns where the valid log ends. A damaged record followed by any
/// valid record is corruption; one followed by nothing valid is a torn tail.
pub(super) fn scan_records(
    data: &[u8],
    path: &Path,
    mut apply: impl FnMut(Record),
) -> StoreResult<usize> {
    let mut off = LOG_MAGIC.len();
    while off < data.len() {
        let Some(n) = valid_frame(data, off) else {
            if let Some(next) = (off + 1..data.len()).find(|&q| valid_frame(data, q).is_some()) {
                return Err(corrupt(
                    path,
                    format!("damaged record at offset {off} followed by a valid record at offset {next}"),
                ));
            }
            return Ok(off);
        };
        let Some(rec) = decode(&data[off + FRAME_HEADER..off + n]) else {
            return Err(corrupt(
                path,
                format!("undecodable record at offset {off} (checksum ok)"),
            ));
        };
        apply(rec);
        off += n;
    }
    Ok(off)
}
