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

use weft_policy::{AllowedBy, Identity, PolicyKey};

/// The most specific of `entries` of `identity` covering `key`.
fn lpm<'a>(
    entries: &'a BTreeMap<PolicyKey, AllowedBy>,
    identity: Identity,
    key: &PolicyKey,
) -> Option<&'a AllowedBy> {
    let key = PolicyKey { identity, ..*key };
    entries
        .iter()
        .filter(|(c, _)| c.identity == identity && c.covers(&key))
        .max_by_key(|(c, _)| c.prefix_len())
        .map(|(_, v)| v)
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
    use weft_policy::{Direction, PolicyRef, PortPrefix, RuleRef};

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
}
