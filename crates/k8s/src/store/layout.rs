//! Which object of which kind holds a key (pure): the store's key space
//! cut into one object per key group, a kind per part of weft's layout, so
//! no object grows with the cluster and `kubectl get ipamblocks` shows
//! what IPAM holds.
//!
//! | keys                                   | kind             | one object per |
//! |----------------------------------------|------------------|----------------|
//! | `/weft/ipam/v1/pools/<cidr>`           | IPPool           | pool           |
//! | `/weft/ipam/v1/blocks/<cidr>` and `/weft/cluster/v1/routes/<cidr>` | IPAMBlock | block (record and route summary together) |
//! | `/weft/cluster/v1/nodes/<name>`        | WeftNode         | node           |
//! | `/weft/identities/v1/<rest>`           | SecurityIdentity | key            |
//! | anything else                          | WeftRecord       | key            |
//!
//! Object names start with the store's name (one cluster may hold several
//! stores) and carry the key's tail when it is a valid name, else a
//! sanitized tail and a hash of the key (names are unique per store).

use serde_json::{Map, Value};

use super::doc::Entry;

/// weft's store kinds besides the head (`WeftStore`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pool,
    Block,
    Node,
    Identity,
    Record,
}

pub const KINDS: [Kind; 5] = [
    Kind::Pool,
    Kind::Block,
    Kind::Node,
    Kind::Identity,
    Kind::Record,
];

/// The key prefixes of the kinds with a layout of their own.
const SPACES: [(&str, Kind); 5] = [
    ("/weft/ipam/v1/pools/", Kind::Pool),
    ("/weft/ipam/v1/blocks/", Kind::Block),
    ("/weft/cluster/v1/routes/", Kind::Block),
    ("/weft/cluster/v1/nodes/", Kind::Node),
    ("/weft/identities/v1/", Kind::Identity),
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pool => "IPPool",
            Kind::Block => "IPAMBlock",
            Kind::Node => "WeftNode",
            Kind::Identity => "SecurityIdentity",
            Kind::Record => "WeftRecord",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pool => "ippools",
            Kind::Block => "ipamblocks",
            Kind::Node => "weftnodes",
            Kind::Identity => "securityidentities",
            Kind::Record => "weftrecords",
        }
    }
}

/// Where a key lives: its kind and object name, in store `store`.
pub fn locate(store: &str, key: &str) -> (Kind, String) {
    for (prefix, kind) in SPACES {
        if let Some(tail) = key.strip_prefix(prefix) {
            return (kind, object_name(store, tail));
        }
    }
    (Kind::Record, object_name(store, key))
}

/// The kinds that may hold a key starting with `prefix`.
pub fn kinds_for(prefix: &str) -> Vec<Kind> {
    let mut out: Vec<Kind> = Vec::new();
    let mut inside_one = false;
    for (space, kind) in SPACES {
        if prefix.starts_with(space) {
            inside_one = true;
        }
        if (prefix.starts_with(space) || space.starts_with(prefix)) && !out.contains(&kind) {
            out.push(kind);
        }
    }
    if !inside_one {
        out.push(Kind::Record);
    }
    out
}

/// A Kubernetes object name (a DNS subdomain, at most 253 characters).
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The name of the object holding `tail` (unique per kind: the hash is of
/// the tail, so a block's record and route summary meet in one object).
fn object_name(store: &str, tail: &str) -> String {
    if valid_name(tail) {
        return format!("{store}.{tail}");
    }
    let clean: String = tail
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    let clean = clean.trim_matches('-');
    let hash = fnv(tail);
    if clean.is_empty() {
        format!("{store}.k{hash:016x}")
    } else {
        format!("{store}.{clean}-{hash:016x}")
    }
}

/// FNV-1a, 64 bits: stable across builds (a name must not change).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The fields `kubectl get` shows (printer columns), read from the
/// object's records; best effort: a record that is not what weft writes
/// shows nothing.
pub fn display(
    kind: Kind,
    entries: &std::collections::BTreeMap<String, Entry>,
) -> Map<String, Value> {
    let mut out = Map::new();
    let json = |key: &str| -> Option<Value> {
        entries
            .get(key)
            .and_then(|e| e.v.as_deref())
            .and_then(|v| serde_json::from_str(v).ok())
    };
    for (key, _) in entries.iter() {
        let Some(v) = json(key) else { continue };
        match kind {
            Kind::Pool => {
                copy(&v, "cidr", &mut out, "cidr");
                copy(&v, "block_prefix", &mut out, "blockPrefix");
            }
            Kind::Block if key.starts_with("/weft/ipam/v1/blocks/") => {
                copy(&v, "cidr", &mut out, "cidr");
                copy(&v, "affinity", &mut out, "node");
                copy(&v, "pool", &mut out, "pool");
                let used = v["allocations"].as_object().map_or(0, |a| a.len());
                out.insert("used".into(), used.into());
            }
            Kind::Block => {
                copy(&v, "cidr", &mut out, "cidr");
                let borrowed = v["borrowed"].as_object().map_or(0, |a| a.len());
                out.insert("borrowed".into(), borrowed.into());
            }
            Kind::Node => {
                copy(&v, "name", &mut out, "node");
                copy(&v, "underlay_v4", &mut out, "address");
                copy(&v, "version", &mut out, "version");
            }
            Kind::Identity => {
                copy(&v, "id", &mut out, "id");
            }
            Kind::Record => {}
        }
    }
    out
}

fn copy(from: &Value, field: &str, to: &mut Map<String, Value>, as_: &str) {
    match &from[field] {
        Value::Null => {}
        v => {
            to.insert(as_.into(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_and_its_route_summary_share_an_object() {
        let (k1, n1) = locate("weft", "/weft/ipam/v1/blocks/10.244.0.0-26");
        let (k2, n2) = locate("weft", "/weft/cluster/v1/routes/10.244.0.0-26");
        assert_eq!((k1, k2), (Kind::Block, Kind::Block));
        assert_eq!(n1, "weft.10.244.0.0-26");
        assert_eq!(n1, n2);
        let (_, v6) = locate("weft", "/weft/ipam/v1/blocks/fd00:10:244::-122");
        let (_, v6r) = locate("weft", "/weft/cluster/v1/routes/fd00:10:244::-122");
        assert_eq!(v6, v6r);
        assert!(valid_name(&v6), "{v6}");
        let (_, other) = locate("weft", "/weft/ipam/v1/blocks/fd00:10:244:0:1::-122");
        assert_ne!(v6, other);
    }

    #[test]
    fn every_key_gets_a_valid_unique_name() {
        let keys = [
            "a",
            "A",
            "conformance/x/1/k",
            "/weft/store/v1/fence",
            "",
            "é",
        ];
        let names: std::collections::BTreeSet<_> =
            keys.iter().map(|k| locate("conf-1-2", k).1).collect();
        assert_eq!(names.len(), keys.len());
        for n in &names {
            assert!(valid_name(n), "{n}");
        }
        assert_eq!(
            locate("s", "/weft/cluster/v1/nodes/n1"),
            (Kind::Node, "s.n1".into())
        );
    }

    #[test]
    fn a_prefix_names_the_kinds_that_may_hold_its_keys() {
        assert_eq!(
            kinds_for("/weft/cluster/v1/"),
            [Kind::Block, Kind::Node, Kind::Record]
        );
        assert_eq!(kinds_for("/weft/ipam/v1/blocks/10"), [Kind::Block]);
        assert_eq!(kinds_for("conformance/"), [Kind::Record]);
        assert_eq!(kinds_for("").len(), KINDS.len());
    }

    #[test]
    fn a_block_shows_its_cidr_node_and_use() {
        let mut e = std::collections::BTreeMap::new();
        let rec = r#"{"cidr":"10.0.0.0/26","pool":"10.0.0.0/16","affinity":"n1","allocations":{"1":{},"2":{}}}"#;
        e.insert(
            "/weft/ipam/v1/blocks/10.0.0.0-26".to_string(),
            Entry {
                v: Some(rec.into()),
                ..Entry::default()
            },
        );
        let d = display(Kind::Block, &e);
        assert_eq!(d["cidr"], "10.0.0.0/26");
        assert_eq!(d["node"], "n1");
        assert_eq!(d["used"], 2);
    }
}
