//! From `weft_policy::MapOp`s to the bytes of map writes (pure, shared by
//! the kernel and the fake implementation so both hold the same entries);
//! an endpoint's trie entries are its compiled ones merged across the two
//! lookups (`merge.rs`).
//!
//! Revisions: the programs trust a conntrack entry (pass a connection's
//! forward packets without a policy lookup) while the endpoint's
//! `weft_policy_ep.revision` is the one the entry was judged under. So every
//! batch of writes ends by giving each endpoint whose decisions it may have
//! changed (its entries, its flags, or any ipcache entry: a peer's identity)
//! a new revision, written after everything else: a packet judged in
//! between is stamped with the old one and judged again. Revisions come
//! from one counter seeded from the clock, so they never repeat for an
//! address, across weftd restarts included (the pinned conntrack outlives
//! them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use weft_bpf_abi::{
    CidrKey, EpKey, PolicyEp, PolicyKey as RawPolicyKey, PolicyValue, POLICY_ALLOW, POLICY_AUDIT,
    POLICY_DEFAULT_DENY, POLICY_DENY, POLICY_EGRESS_ISOLATED, POLICY_EGRESS_RULES,
    POLICY_INGRESS_ISOLATED, POLICY_INGRESS_RULES,
};
use weft_policy::{
    Action, AllowedBy, Compiled, Direction, EndpointRef, MapOp, PolicyKey, PolicyRef, RuleIds,
};

use super::merge::merged;
use super::{EndpointLookup, PolicyEndpoint};

/// The reason whose [`RuleIds`] id a default deny of `policy` in `direction`
/// reports, through the endpoint's isolation: the compiler's own
/// [`AllowedBy::DefaultDeny`], so an entry carrying that default deny (under
/// an Admin Pass) and the isolation's deny have one id and one name.
pub fn default_deny_reason(policy: &PolicyRef, direction: Direction) -> AllowedBy {
    AllowedBy::DefaultDeny(policy.clone(), direction)
}

/// The policy whose default deny `reason` stands for, if it is one.
pub fn default_deny_policy(reason: &AllowedBy) -> Option<(&PolicyRef, Direction)> {
    match reason {
        AllowedBy::DefaultDeny(p, d) => Some((p, *d)),
        _ => None,
    }
}

/// What rule id `id` stands for, in words (a flow event's or counter's
/// rule): "rule 0 (ingress[0]) of ns/name", "the default deny of ns/name
/// (ingress)", "traffic from the pod's own node"; `None` for an id `rules`
/// never handed out or has forgotten.
pub fn describe_rule(rules: &RuleIds, id: u32) -> Option<String> {
    rules.reason(id).map(|r| r.to_string())
}

/// One map write (`None`: delete the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Policy(RawPolicyKey, Option<PolicyValue>),
    Ipcache(CidrKey, Option<u32>),
    Endpoint(EpKey, Option<PolicyEp>),
}

/// The trie key of `key` for endpoint `id`.
pub fn raw_key(id: u32, key: &PolicyKey) -> RawPolicyKey {
    let b = key.to_bytes();
    RawPolicyKey {
        prefixlen: 32 + key.prefix_len(),
        endpoint: id,
        identity: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        direction: b[4],
        proto: b[5],
        port: u16::from_ne_bytes([b[6], b[7]]),
    }
}

/// The map value of an entry decided by `reason`. Every compiled entry
/// allows today; deny entries (ClusterNetworkPolicy) map here.
fn value(rules: &mut RuleIds, reason: &AllowedBy) -> PolicyValue {
    PolicyValue {
        rule_id: rules.id(reason),
        // ClusterNetworkPolicy Deny rules (and their flattened regions)
        // deny; a region flattened to the isolating policy's default deny
        // says so, so the programs drop it as POLICY_DEFAULT like a miss
        action: match (reason, reason.action()) {
            (AllowedBy::DefaultDeny(..), _) => POLICY_DEFAULT_DENY,
            (_, Action::Allow) => POLICY_ALLOW,
            (_, Action::Deny) => POLICY_DENY,
        },
        pad: [0; 3],
    }
}

/// What was written for one endpoint.
#[derive(Debug, Clone, Default)]
struct Shadow {
    id: u32,
    addresses: Vec<IpAddr>,
    audit: bool,
    /// The compiled entries (`MapOp::PolicyUpsert`/`PolicyDelete`).
    entries: BTreeMap<PolicyKey, AllowedBy>,
    /// What the trie holds for this endpoint ([`merged`] of `entries`).
    written: BTreeMap<PolicyKey, AllowedBy>,
    /// The default-deny rule id per direction while isolated.
    ingress: Option<u32>,
    egress: Option<u32>,
    /// `weft_policy_ep.revision` as last written.
    revision: u32,
}

impl Shadow {
    fn state(&self) -> PolicyEp {
        let mut flags = 0;
        if self.ingress.is_some() {
            flags |= POLICY_INGRESS_ISOLATED;
        }
        if self.egress.is_some() {
            flags |= POLICY_EGRESS_ISOLATED;
        }
        if self.audit {
            flags |= POLICY_AUDIT;
        }
        for k in self.written.keys() {
            flags |= match k.direction {
                Direction::Ingress => POLICY_INGRESS_RULES,
                Direction::Egress => POLICY_EGRESS_RULES,
            };
        }
        PolicyEp {
            endpoint: self.id,
            ingress_deny: self.ingress.unwrap_or(0),
            egress_deny: self.egress.unwrap_or(0),
            flags,
            pad: [0; 3],
            revision: self.revision,
        }
    }
}

/// Turns ops into writes for one node, remembering what it wrote per
/// endpoint (to remove a gone endpoint's entries) and owning the rule ids.
#[derive(Debug, Clone)]
pub struct Translator {
    node: String,
    rules: RuleIds,
    endpoints: BTreeMap<EndpointRef, Shadow>,
    /// The last revision handed out (see the module docs).
    revision: u32,
}

/// A revision no earlier weftd on this node handed out: the clock in
/// milliseconds (a counter that reached it would have had to write 1000
/// batches a second since the last start).
fn first_revision() -> u32 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    ms as u32
}

impl Translator {
    pub fn new(node: &str, rules: RuleIds) -> Self {
        Translator {
            node: node.to_string(),
            rules,
            endpoints: BTreeMap::new(),
            revision: first_revision(),
        }
    }

    fn next_revision(&mut self) -> u32 {
        self.revision = self.revision.wrapping_add(1);
        self.revision
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn rule_ids(&self) -> &RuleIds {
        &self.rules
    }

    /// Forgets what was written (before a [`Translator::replace`]).
    fn reset(&mut self) {
        self.endpoints.clear();
    }

    /// The shadow of `ep`, resolved; a changed id or address set means the
    /// pod is another one: its old entries are removed first.
    fn shadow(
        &mut self,
        ep: &EndpointRef,
        lookup: EndpointLookup<'_>,
        out: &mut Vec<Write>,
    ) -> Option<&mut Shadow> {
        let want: PolicyEndpoint = lookup(ep)?;
        let stale = self
            .endpoints
            .get(ep)
            .is_some_and(|s| s.id != want.id || s.addresses != want.addresses);
        if stale {
            self.gone(ep, out);
        }
        if !self.endpoints.contains_key(ep) {
            // never a revision an earlier entry of the address was stamped with
            let revision = self.next_revision();
            self.endpoints.insert(
                ep.clone(),
                Shadow {
                    revision,
                    ..Default::default()
                },
            );
        }
        let s = self.endpoints.get_mut(ep).expect("inserted above");
        s.id = want.id;
        s.addresses = want.addresses;
        s.audit = want.audit;
        Some(s)
    }

    fn gone(&mut self, ep: &EndpointRef, out: &mut Vec<Write>) {
        if let Some(s) = self.endpoints.remove(ep) {
            out.extend(
                s.written
                    .keys()
                    .map(|k| Write::Policy(raw_key(s.id, k), None)),
            );
            out.extend(
                s.addresses
                    .iter()
                    .map(|a| Write::Endpoint(EpKey::new(*a), None)),
            );
        }
    }

    /// Brings the trie entries of the endpoints in `dirty` in line with
    /// their compiled entries: writes first, then removals.
    fn flush(
        &mut self,
        dirty: &mut BTreeSet<EndpointRef>,
        touched: &mut BTreeSet<EndpointRef>,
        out: &mut Vec<Write>,
    ) {
        let mut removals = Vec::new();
        for ep in std::mem::take(dirty) {
            let Some(s) = self.endpoints.get_mut(&ep) else {
                continue;
            };
            touched.insert(ep);
            let want = merged(&s.entries);
            for (k, v) in &want {
                if s.written.get(k) != Some(v) {
                    out.push(Write::Policy(
                        raw_key(s.id, k),
                        Some(value(&mut self.rules, v)),
                    ));
                }
            }
            for k in s.written.keys().filter(|k| !want.contains_key(*k)) {
                removals.push(Write::Policy(raw_key(s.id, k), None));
            }
            s.written = want;
        }
        out.extend(removals);
    }

    /// The writes of `ops`, in their order.
    pub fn translate(&mut self, ops: &[MapOp], lookup: EndpointLookup<'_>) -> Vec<Write> {
        let mut out = Vec::new();
        // policy entries of a run of ops are merged per endpoint at its end
        let mut dirty = BTreeSet::new();
        // endpoints whose decisions may change: a new revision at the end
        let mut touched = BTreeSet::new();
        let mut ipcache = false;
        for op in ops {
            if !matches!(op, MapOp::PolicyUpsert { .. } | MapOp::PolicyDelete { .. }) {
                self.flush(&mut dirty, &mut touched, &mut out);
            }
            match op {
                MapOp::PolicyUpsert {
                    endpoint,
                    key,
                    value,
                } => {
                    if let Some(s) = self.shadow(endpoint, lookup, &mut out) {
                        s.entries.insert(*key, value.clone());
                        dirty.insert(endpoint.clone());
                    }
                }
                MapOp::PolicyDelete { endpoint, key } => {
                    if let Some(s) = self.endpoints.get_mut(endpoint) {
                        if s.entries.remove(key).is_some() {
                            dirty.insert(endpoint.clone());
                        }
                    }
                }
                MapOp::Isolation {
                    endpoint,
                    direction,
                    isolated_by,
                } => {
                    let rule = isolated_by
                        .as_ref()
                        .map(|p| self.rules.id(&default_deny_reason(p, *direction)));
                    if let Some(s) = self.shadow(endpoint, lookup, &mut out) {
                        match direction {
                            Direction::Ingress => s.ingress = rule,
                            Direction::Egress => s.egress = rule,
                        }
                        let state = s.state();
                        out.extend(
                            s.addresses
                                .iter()
                                .map(|a| Write::Endpoint(EpKey::new(*a), Some(state))),
                        );
                        touched.insert(endpoint.clone());
                    }
                }
                MapOp::IpcacheUpsert {
                    node,
                    prefix,
                    identity,
                } if *node == self.node => {
                    out.push(Write::Ipcache(
                        CidrKey::new(prefix.trunc()),
                        Some(identity.0),
                    ));
                    ipcache = true;
                }
                MapOp::IpcacheDelete { node, prefix } if *node == self.node => {
                    out.push(Write::Ipcache(CidrKey::new(prefix.trunc()), None));
                    ipcache = true;
                }
                MapOp::IpcacheUpsert { .. } | MapOp::IpcacheDelete { .. } => {}
                MapOp::EndpointGone { endpoint } => self.gone(endpoint, &mut out),
            }
        }
        self.flush(&mut dirty, &mut touched, &mut out);
        if ipcache {
            touched = self.endpoints.keys().cloned().collect();
        }
        self.bump(&touched, &mut out);
        out
    }

    /// Gives each endpoint of `touched` a new revision, written last.
    fn bump(&mut self, touched: &BTreeSet<EndpointRef>, out: &mut Vec<Write>) {
        for ep in touched {
            let revision = self.next_revision();
            let Some(s) = self.endpoints.get_mut(ep) else {
                continue;
            };
            s.revision = revision;
            let state = s.state();
            out.extend(
                s.addresses
                    .iter()
                    .map(|a| Write::Endpoint(EpKey::new(*a), Some(state))),
            );
        }
    }

    /// The writes that make one endpoint's entries and state exactly what
    /// `state` compiled for it, as `ep` (a pod just added, or one whose
    /// earlier ops were skipped because it did not resolve yet).
    pub fn endpoint(
        &mut self,
        state: &Compiled,
        endpoint: &EndpointRef,
        ep: &PolicyEndpoint,
    ) -> Vec<Write> {
        let empty = Default::default();
        let compiled = state.endpoints.get(endpoint).unwrap_or(&empty);
        let mut ops: Vec<MapOp> = compiled
            .entries
            .iter()
            .map(|(k, v)| MapOp::PolicyUpsert {
                endpoint: endpoint.clone(),
                key: *k,
                value: v.clone(),
            })
            .collect();
        if let Some(s) = self.endpoints.get(endpoint) {
            ops.extend(
                s.entries
                    .keys()
                    .filter(|k| !compiled.entries.contains_key(*k))
                    .map(|k| MapOp::PolicyDelete {
                        endpoint: endpoint.clone(),
                        key: *k,
                    }),
            );
        }
        for direction in [Direction::Ingress, Direction::Egress] {
            ops.push(MapOp::Isolation {
                endpoint: endpoint.clone(),
                direction,
                isolated_by: compiled.isolated_by(direction).cloned(),
            });
        }
        let lookup = |e: &EndpointRef| (e == endpoint).then(|| ep.clone());
        self.translate(&ops, &lookup)
    }

    /// The writes that fill empty maps with `state` (the shadow starts
    /// afresh); the caller removes whatever else the maps hold.
    pub fn replace(&mut self, state: &Compiled, lookup: EndpointLookup<'_>) -> Vec<Write> {
        self.reset();
        let ops = weft_policy::plan(&Compiled::default(), state);
        self.translate(&ops, lookup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_policy::{Identity, PortPrefix, RuleRef};

    fn ep(name: &str) -> EndpointRef {
        EndpointRef {
            namespace: "x".into(),
            name: name.into(),
        }
    }

    fn policy(name: &str) -> PolicyRef {
        PolicyRef {
            namespace: "x".into(),
            name: name.into(),
        }
    }

    #[test]
    fn raw_key_is_the_endpoint_then_the_policy_key_bytes() {
        let k = PolicyKey {
            identity: Identity(0x0102_0304),
            direction: Direction::Egress,
            proto: Some(6),
            port: PortPrefix { port: 80, len: 12 },
        };
        let raw = raw_key(7, &k);
        let bytes = weft_bpf::bytes_of(&raw);
        assert_eq!(&bytes[0..4], &(32 + 60u32).to_ne_bytes());
        assert_eq!(&bytes[4..8], &7u32.to_ne_bytes());
        assert_eq!(&bytes[8..16], &k.to_bytes());
    }

    #[test]
    fn ops_of_other_nodes_are_skipped_and_a_gone_endpoint_is_cleaned_up() {
        let mut t = Translator::new("node-1", RuleIds::new());
        let lookup = |e: &EndpointRef| {
            (e.name == "a").then(|| PolicyEndpoint {
                id: 5,
                addresses: vec!["10.0.0.5".parse().unwrap()],
                audit: false,
            })
        };
        let key = PolicyKey::all_protocols(Identity(300), Direction::Ingress);
        let rule = AllowedBy::Rule(RuleRef {
            policy: policy("p"),
            direction: Direction::Ingress,
            index: 0,
        });
        let ops = vec![
            MapOp::PolicyUpsert {
                endpoint: ep("a"),
                key,
                value: rule.clone(),
            },
            MapOp::PolicyUpsert {
                endpoint: ep("b"),
                key,
                value: rule.clone(),
            },
            MapOp::Isolation {
                endpoint: ep("a"),
                direction: Direction::Ingress,
                isolated_by: Some(policy("p")),
            },
            MapOp::IpcacheUpsert {
                node: "node-2".into(),
                prefix: "10.0.0.9/32".parse().unwrap(),
                identity: Identity(300),
            },
        ];
        let w = t.translate(&ops, &lookup);
        // the entry, the isolation, and last the endpoint's new revision
        assert_eq!(w.len(), 3, "{w:?}");
        let Write::Endpoint(_, Some(isolated)) = &w[1] else {
            panic!("{w:?}")
        };
        let Write::Endpoint(_, Some(state)) = &w[2] else {
            panic!("{w:?}")
        };
        assert_eq!(state.flags, POLICY_INGRESS_ISOLATED | POLICY_INGRESS_RULES);
        assert_eq!(isolated.flags, state.flags);
        assert_ne!(isolated.revision, state.revision, "bumped after the writes");
        let reason = t.rule_ids().reason(state.ingress_deny).unwrap();
        assert_eq!(
            default_deny_policy(reason),
            Some((&policy("p"), Direction::Ingress))
        );
        assert_eq!(
            describe_rule(t.rule_ids(), state.ingress_deny).as_deref(),
            Some("the default deny of x/p (ingress)")
        );
        let rule_id = t.rules.id(&rule);
        assert_eq!(
            describe_rule(t.rule_ids(), rule_id).as_deref(),
            Some("rule 0 (ingress[0]) of x/p")
        );
        assert_ne!(state.ingress_deny, t.rules.id(&rule));
        let gone = t.translate(&[MapOp::EndpointGone { endpoint: ep("a") }], &lookup);
        assert_eq!(
            gone,
            vec![
                Write::Policy(raw_key(5, &key), None),
                Write::Endpoint(EpKey::new("10.0.0.5".parse().unwrap()), None)
            ]
        );
    }

    /// Which endpoints get a new revision: those whose entries or flags a
    /// batch changed, every one when the ipcache changed, none otherwise;
    /// revisions never repeat.
    #[test]
    fn a_batch_bumps_the_revision_of_the_endpoints_it_may_change() {
        let mut t = Translator::new("node-1", RuleIds::new());
        let lookup = |e: &EndpointRef| {
            let id = if e.name == "a" { 5 } else { 6 };
            Some(PolicyEndpoint {
                id,
                addresses: vec![format!("10.0.0.{id}").parse().unwrap()],
                audit: false,
            })
        };
        let revisions = |w: &[Write]| -> BTreeMap<u32, u32> {
            w.iter()
                .filter_map(|w| match w {
                    Write::Endpoint(_, Some(s)) => Some((s.endpoint, s.revision)),
                    _ => None,
                })
                .collect()
        };
        let rule = AllowedBy::Rule(RuleRef {
            policy: policy("p"),
            direction: Direction::Egress,
            index: 0,
        });
        let mut ops = Vec::new();
        for name in ["a", "b"] {
            for direction in [Direction::Ingress, Direction::Egress] {
                ops.push(MapOp::Isolation {
                    endpoint: ep(name),
                    direction,
                    isolated_by: None,
                });
            }
        }
        let first = revisions(&t.translate(&ops, &lookup));
        assert_eq!(first.len(), 2);

        let key = PolicyKey::all_protocols(Identity(300), Direction::Egress);
        let upsert = MapOp::PolicyUpsert {
            endpoint: ep("a"),
            key,
            value: rule,
        };
        let w = t.translate(&[upsert], &lookup);
        let Some(Write::Endpoint(_, Some(state))) = w.last() else {
            panic!("{w:?}")
        };
        assert_eq!(state.flags, POLICY_EGRESS_RULES, "a has egress entries");
        let second = revisions(&w);
        assert_eq!(second.keys().collect::<Vec<_>>(), [&5], "only a: {w:?}");
        assert_ne!(second[&5], first[&5]);

        let ipcache = MapOp::IpcacheUpsert {
            node: "node-1".into(),
            prefix: "10.0.1.9/32".parse().unwrap(),
            identity: Identity(300),
        };
        let third = revisions(&t.translate(&[ipcache], &lookup));
        assert_eq!(third.len(), 2, "an identity moved: every endpoint");
        let mut seen: Vec<u32> = [&first, &second, &third]
            .iter()
            .flat_map(|m| m.values().copied())
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 5, "no revision handed out twice");

        let other_node = MapOp::IpcacheUpsert {
            node: "node-2".into(),
            prefix: "10.0.2.9/32".parse().unwrap(),
            identity: Identity(300),
        };
        assert!(t.translate(&[other_node], &lookup).is_empty());
    }
}
