//! [`FakePolicyMaps`]: the policy maps in memory, byte for byte as the
//! kernel would hold them, and the programs' lookup replayed on them
//! (without conntrack: every packet judged as a connection's first).

use std::collections::BTreeMap;
use std::net::IpAddr;

use weft_bpf::bytes_of;
use weft_bpf_abi::{
    CidrKey, EpKey, PolicyEp, PolicyKey as RawPolicyKey, PolicyValue, POLICY_AUDIT,
    POLICY_DEFAULT_DENY, POLICY_DENY, POLICY_EGRESS_ISOLATED, POLICY_INGRESS_ISOLATED,
};
use weft_policy::{
    Compiled, Direction, EndpointRef, Identity, MapOp, PolicyKey, PortPrefix, RuleIds,
};

use super::writes::{raw_key, Translator, Write};
use super::{EndpointLookup, PolicyEndpoint, PolicyMaps};
use crate::DatapathError;

/// What one direction's policy decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The address is not a policy-managed pod of this node.
    NotManaged,
    /// Allowed: by the rule with this id, or (`None`) because nothing
    /// isolates the pod in this direction and no entry matched.
    Allowed(Option<u32>),
    /// Denied by a DENY entry (`default: false`) or the default deny.
    /// With `audit` the packet passes all the same.
    Denied {
        rule: u32,
        default: bool,
        audit: bool,
    },
}

impl Decision {
    /// Whether the packet passes this direction.
    pub fn passes(&self) -> bool {
        match self {
            Decision::Denied { audit, .. } => *audit,
            _ => true,
        }
    }
}

/// Both directions for one packet: the source's egress, the
/// destination's ingress (each judged only where that pod lives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    pub egress: Decision,
    pub ingress: Decision,
}

impl Judgement {
    pub fn passes(&self) -> bool {
        self.egress.passes() && self.ingress.passes()
    }
}

/// The policy maps of one node, in memory.
#[derive(Debug, Clone)]
pub struct FakePolicyMaps {
    translator: Translator,
    pub policy: BTreeMap<RawPolicyKey, PolicyValue>,
    pub ipcache: BTreeMap<CidrKey, u32>,
    pub endpoints: BTreeMap<EpKey, PolicyEp>,
    /// What tests set as counters ([`PolicyMaps::rule_hits`] returns it).
    pub hits: BTreeMap<u32, u64>,
}

/// Whether the first `bits` bits of `a` and `b` agree.
fn prefix_eq(a: &[u8], b: &[u8], bits: u32) -> bool {
    let full = (bits / 8) as usize;
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[full] & mask == b[full] & mask
    }
}

/// An LPM lookup: the entry with the longest prefix covering `key`.
fn lpm<'a, K: weft_bpf::Pod + Ord, V>(map: &'a BTreeMap<K, V>, key: &K) -> Option<&'a V> {
    let data = &bytes_of(key)[4..];
    map.iter()
        .filter_map(|(k, v)| {
            let b = bytes_of(k);
            let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            prefix_eq(&b[4..], data, len).then_some((len, v))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, v)| v)
}

impl FakePolicyMaps {
    pub fn new(node: &str, rules: RuleIds) -> Self {
        FakePolicyMaps {
            translator: Translator::new(node, rules),
            policy: BTreeMap::new(),
            ipcache: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            hits: BTreeMap::new(),
        }
    }

    fn write(&mut self, writes: Vec<Write>) -> usize {
        let n = writes.len();
        for w in writes {
            match w {
                Write::Policy(k, Some(v)) => drop(self.policy.insert(k, v)),
                Write::Policy(k, None) => drop(self.policy.remove(&k)),
                Write::Ipcache(k, Some(v)) => drop(self.ipcache.insert(k, v)),
                Write::Ipcache(k, None) => drop(self.ipcache.remove(&k)),
                Write::Endpoint(k, Some(v)) => drop(self.endpoints.insert(k, v)),
                Write::Endpoint(k, None) => drop(self.endpoints.remove(&k)),
            }
        }
        n
    }

    /// The identity the ipcache gives `addr` (a miss is the world).
    pub fn identity_of(&self, addr: IpAddr) -> Identity {
        let host = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let key = CidrKey::new(ipnet::IpNet::new(addr, host).expect("host prefix"));
        Identity(
            lpm(&self.ipcache, &key)
                .copied()
                .unwrap_or(Identity::WORLD.0),
        )
    }

    /// What the program decides for the policy of the pod at `pod` in
    /// `dir`, for a packet exchanged with `peer` to destination port `port`.
    pub fn decide(
        &self,
        dir: Direction,
        pod: IpAddr,
        peer: IpAddr,
        proto: u8,
        port: u16,
    ) -> Decision {
        let Some(ep) = self.endpoints.get(&EpKey::new(pod)) else {
            return Decision::NotManaged;
        };
        let key = |identity| {
            raw_key(
                ep.endpoint,
                &PolicyKey {
                    identity,
                    direction: dir,
                    proto: Some(proto),
                    port: PortPrefix::exact(port),
                },
            )
        };
        let hit = lpm(&self.policy, &key(self.identity_of(peer)))
            .or_else(|| lpm(&self.policy, &key(Identity::ANY)));
        let audit = ep.flags & POLICY_AUDIT != 0;
        let (isolated, deny) = match dir {
            Direction::Ingress => (ep.flags & POLICY_INGRESS_ISOLATED, ep.ingress_deny),
            Direction::Egress => (ep.flags & POLICY_EGRESS_ISOLATED, ep.egress_deny),
        };
        match hit {
            Some(v) if v.action == POLICY_DENY || v.action == POLICY_DEFAULT_DENY => {
                Decision::Denied {
                    rule: v.rule_id,
                    default: v.action == POLICY_DEFAULT_DENY,
                    audit,
                }
            }
            Some(v) => Decision::Allowed(Some(v.rule_id)),
            None if isolated != 0 => Decision::Denied {
                rule: deny,
                default: true,
                audit,
            },
            None => Decision::Allowed(None),
        }
    }

    /// Both directions of a packet `src` -> `dst`, `proto`/`port`.
    pub fn judge(&self, src: IpAddr, dst: IpAddr, proto: u8, port: u16) -> Judgement {
        Judgement {
            egress: self.decide(Direction::Egress, src, dst, proto, port),
            ingress: self.decide(Direction::Ingress, dst, src, proto, port),
        }
    }
}

impl PolicyMaps for FakePolicyMaps {
    fn apply(
        &mut self,
        ops: &[MapOp],
        endpoints: EndpointLookup<'_>,
    ) -> Result<usize, DatapathError> {
        let writes = self.translator.translate(ops, endpoints);
        Ok(self.write(writes))
    }

    fn replace(
        &mut self,
        state: &Compiled,
        endpoints: EndpointLookup<'_>,
    ) -> Result<usize, DatapathError> {
        let writes = self.translator.replace(state, endpoints);
        let mut fresh = FakePolicyMaps::new(self.translator.node(), RuleIds::new());
        fresh.write(writes.clone());
        let mut n = self.write(writes);
        let (policy, ipcache, eps) = (fresh.policy, fresh.ipcache, fresh.endpoints);
        let before = self.policy.len() + self.ipcache.len() + self.endpoints.len();
        self.policy.retain(|k, _| policy.contains_key(k));
        self.ipcache.retain(|k, _| ipcache.contains_key(k));
        self.endpoints.retain(|k, _| eps.contains_key(k));
        n += before - (self.policy.len() + self.ipcache.len() + self.endpoints.len());
        Ok(n)
    }

    fn write_endpoint(
        &mut self,
        state: &Compiled,
        endpoint: &EndpointRef,
        ep: &PolicyEndpoint,
    ) -> Result<usize, DatapathError> {
        let writes = self.translator.endpoint(state, endpoint, ep);
        Ok(self.write(writes))
    }

    fn rule_hits(&self) -> Result<BTreeMap<u32, u64>, DatapathError> {
        Ok(self.hits.clone())
    }

    fn rule_ids(&self) -> &RuleIds {
        self.translator.rule_ids()
    }
}
