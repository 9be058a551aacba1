//! Attribution across the two lookups. The program looks up the peer's
//! identity and, only on a miss, identity 0 (rules without peers), while
//! the deciding rule is the smallest reason of *both* hits (what
//! `weft_policy::evaluate` names, and later the tier precedence of deny
//! entries). So for every identity with entries of its own, the endpoint's
//! identity-0 entries are copied under that identity, and every entry of
//! that identity carries the smallest reason of the entries covering it in
//! both tries: the first hit is then the answer. Verdicts are unchanged by
//! this (a copy covers what its original covers); it costs one entry per
//! (identity with entries, identity-0 entry) of an endpoint.

use std::collections::BTreeMap;

use weft_policy::{AllowedBy, Identity, PolicyKey, PortPrefix};

/// The most specific of `entries` of `identity` covering `key`: at most
/// 18 lookups (the key's own port prefix, each shorter one, every
/// protocol), so an endpoint with many entries merges in n log n.
fn lpm<'a>(
    entries: &'a BTreeMap<PolicyKey, AllowedBy>,
    identity: Identity,
    key: &PolicyKey,
) -> Option<&'a AllowedBy> {
    let all = PolicyKey::all_protocols(identity, key.direction);
    let Some(proto) = key.proto else {
        return entries.get(&all);
    };
    (0..=key.port.len)
        .rev()
        .map(|len| {
            let mask = if len == 0 { 0 } else { u16::MAX << (16 - len) };
            PolicyKey {
                identity,
                direction: key.direction,
                proto: Some(proto),
                port: PortPrefix {
                    port: key.port.port & mask,
                    len,
                },
            }
        })
        .chain(std::iter::once(all))
        .find_map(|k| entries.get(&k))
}

/// The trie entries for one endpoint's compiled `entries` (see the module
/// docs): the identity-0 entries copied under every other identity with
/// entries, each key valued by the smallest reason of both lookups.
pub fn merged(entries: &BTreeMap<PolicyKey, AllowedBy>) -> BTreeMap<PolicyKey, AllowedBy> {
    let any: Vec<&PolicyKey> = entries
        .keys()
        .filter(|k| k.identity == Identity::ANY)
        .collect();
    let mut out = BTreeMap::new();
    for (k, v) in entries {
        if k.identity == Identity::ANY {
            out.insert(*k, v.clone());
            continue;
        }
        let copies = any
            .iter()
            .filter(|a| a.direction == k.direction)
            .map(|a| PolicyKey {
                identity: k.identity,
                ..**a
            });
        for key in std::iter::once(*k).chain(copies) {
            if out.contains_key(&key) {
                continue;
            }
            let best = [
                lpm(entries, k.identity, &key),
                lpm(entries, Identity::ANY, &key),
            ]
            .into_iter()
            .flatten()
            .min()
            .expect("the key itself or its original covers it");
            out.insert(key, best.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_policy::{Direction, PolicyRef, RuleRef};

    fn policy(name: &str) -> PolicyRef {
        PolicyRef {
            namespace: "x".into(),
            name: name.into(),
        }
    }

    #[test]
    fn identity_zero_entries_are_copied_under_each_identity_with_the_smaller_reason() {
        let rule = |name: &str, index| {
            AllowedBy::Rule(RuleRef {
                policy: policy(name),
                direction: Direction::Ingress,
                index,
            })
        };
        let tcp = |identity, port| PolicyKey {
            identity,
            direction: Direction::Ingress,
            proto: Some(6),
            port: PortPrefix::exact(port),
        };
        let any_80 = tcp(Identity::ANY, 80);
        let entries = BTreeMap::from([
            // identity 300: every protocol by b/1; identity 0: tcp/80 by a/0
            (
                PolicyKey::all_protocols(Identity(300), Direction::Ingress),
                rule("b", 1),
            ),
            (any_80, rule("a", 0)),
            (tcp(Identity(301), 80), rule("a", 0)),
        ]);
        let m = merged(&entries);
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(m[&any_80], rule("a", 0));
        assert_eq!(
            m[&tcp(Identity(300), 80)],
            rule("a", 0),
            "the copy: a/0 < b/1"
        );
        assert_eq!(
            m[&PolicyKey::all_protocols(Identity(300), Direction::Ingress)],
            rule("b", 1)
        );
        assert_eq!(m[&tcp(Identity(301), 80)], rule("a", 0));
    }

    /// 10k entries for one endpoint (a rule per port for one peer, plus
    /// identity-0 ones) merge fast enough for an update's budget.
    #[test]
    fn ten_thousand_entries_merge_quickly() {
        let rule = AllowedBy::Rule(RuleRef {
            policy: policy("big"),
            direction: Direction::Ingress,
            index: 0,
        });
        let mut entries = BTreeMap::new();
        for port in 10_000..20_000u16 {
            let key = PolicyKey {
                identity: Identity(300),
                direction: Direction::Ingress,
                proto: Some(6),
                port: PortPrefix::exact(port),
            };
            entries.insert(key, rule.clone());
        }
        for port in [80, 443, 8080] {
            let key = PolicyKey {
                identity: Identity::ANY,
                direction: Direction::Ingress,
                proto: Some(6),
                port: PortPrefix::exact(port),
            };
            entries.insert(key, rule.clone());
        }
        let t = std::time::Instant::now();
        let m = merged(&entries);
        assert_eq!(m.len(), 10_000 + 3 + 3);
        // generous for a debug build on a shared machine
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
    }
}
