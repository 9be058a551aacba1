//! [`KernelPolicyMaps`]: the seam over the programs' policy maps.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use weft_bpf::{Loaded, Map, TypedMap};
use weft_bpf_abi::{
    CidrKey, EpKey, PolicyCtKey, PolicyCtValue, PolicyEp, PolicyKey as RawPolicyKey, PolicyValue,
};
use weft_policy::{Compiled, EndpointRef, MapOp, RuleIds};

use super::writes::{Translator, Write};
use super::{EndpointLookup, PolicyEndpoint, PolicyMaps};
use crate::DatapathError;

/// The policy maps by name, in the order [`KernelPolicyMaps`] keeps them.
pub const POLICY_MAPS: [&str; 5] = [
    "weft_ipcache",
    "weft_policy",
    "weft_policy_eps",
    "weft_policy_ct",
    "weft_rule_hits",
];

/// Handles on the policy maps the programs use (its own fds: it outlives
/// the load it came from, and a reload that re-uses pinned maps keeps
/// them valid).
#[derive(Debug)]
pub struct KernelPolicyMaps {
    translator: Translator,
    ipcache: Map,
    policy: Map,
    eps: Map,
    ct: Map,
    hits: Map,
}

impl KernelPolicyMaps {
    fn from_maps(node: &str, rules: RuleIds, mut maps: Vec<Map>) -> Result<Self, DatapathError> {
        let hits = maps.pop().expect("five maps");
        let ct = maps.pop().expect("five maps");
        let eps = maps.pop().expect("five maps");
        let policy = maps.pop().expect("five maps");
        let ipcache = maps.pop().expect("five maps");
        let m = KernelPolicyMaps {
            translator: Translator::new(node, rules),
            ipcache,
            policy,
            eps,
            ct,
            hits,
        };
        // the layouts, checked once
        TypedMap::<CidrKey, u32>::new(&m.ipcache)?;
        TypedMap::<RawPolicyKey, PolicyValue>::new(&m.policy)?;
        TypedMap::<EpKey, PolicyEp>::new(&m.eps)?;
        TypedMap::<PolicyCtKey, PolicyCtValue>::new(&m.ct)?;
        Ok(m)
    }

    /// The maps of a loaded object (the fast path's `weft_from_pod`).
    pub fn from_loaded(node: &str, rules: RuleIds, loaded: &Loaded) -> Result<Self, DatapathError> {
        let maps = POLICY_MAPS
            .iter()
            .map(|n| loaded.map(n).and_then(|m| m.try_clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_maps(node, rules, maps)
    }

    /// The pinned maps under `pin_dir`, created with the programs' layouts
    /// if absent: the programs, loaded before or after with the same pin
    /// directory, use the same maps.
    pub fn open_pinned(node: &str, rules: RuleIds, pin_dir: &Path) -> Result<Self, DatapathError> {
        let obj = weft_bpf::parse_object(crate::fastpath::FROM_POD_OBJECT)?;
        let defs: BTreeMap<&str, weft_bpf::MapDef> = obj.map_defs().map(|(n, d)| (n, *d)).collect();
        let maps = POLICY_MAPS
            .iter()
            .map(|n| Map::open_pinned(pin_dir, n, defs[n]))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_maps(node, rules, maps)
    }

    fn write(&self, writes: &[Write]) -> Result<usize, DatapathError> {
        let policy = TypedMap::<RawPolicyKey, PolicyValue>::new(&self.policy)?;
        let ipcache = TypedMap::<CidrKey, u32>::new(&self.ipcache)?;
        let eps = TypedMap::<EpKey, PolicyEp>::new(&self.eps)?;
        for w in writes {
            match w {
                Write::Policy(k, Some(v)) => policy.insert(k, v)?,
                Write::Policy(k, None) => drop(policy.remove(k)?),
                Write::Ipcache(k, Some(v)) => ipcache.insert(k, v)?,
                Write::Ipcache(k, None) => drop(ipcache.remove(k)?),
                Write::Endpoint(k, Some(v)) => eps.insert(k, v)?,
                Write::Endpoint(k, None) => drop(eps.remove(k)?),
            }
        }
        Ok(writes.len())
    }

    /// Connections the policy conntrack holds (for tests and `weft status`).
    pub fn conntrack(&self) -> Result<Vec<(PolicyCtKey, PolicyCtValue)>, DatapathError> {
        let ct = TypedMap::<PolicyCtKey, PolicyCtValue>::new(&self.ct)?;
        let mut out = Vec::new();
        for k in ct.keys()? {
            if let Some(v) = ct.get(&k)? {
                out.push((k, v));
            }
        }
        Ok(out)
    }

    /// Empties the policy conntrack (tests: each probe a first packet).
    pub fn flush_conntrack(&self) -> Result<(), DatapathError> {
        let ct = TypedMap::<PolicyCtKey, PolicyCtValue>::new(&self.ct)?;
        for k in ct.keys()? {
            ct.remove(&k)?;
        }
        Ok(())
    }
}

/// Deletes every key of `map` not in `keep`.
fn sweep<K: weft_bpf::Pod + std::hash::Hash + Eq, V: weft_bpf::Pod>(
    map: &Map,
    keep: &HashSet<K>,
) -> Result<usize, DatapathError> {
    let m = TypedMap::<K, V>::new(map)?;
    let mut n = 0;
    for k in m.keys()? {
        if !keep.contains(&k) && m.remove(&k)? {
            n += 1;
        }
    }
    Ok(n)
}

impl PolicyMaps for KernelPolicyMaps {
    fn apply(
        &mut self,
        ops: &[MapOp],
        endpoints: EndpointLookup<'_>,
    ) -> Result<usize, DatapathError> {
        let writes = self.translator.translate(ops, endpoints);
        self.write(&writes)
    }

    fn replace(
        &mut self,
        state: &Compiled,
        endpoints: EndpointLookup<'_>,
    ) -> Result<usize, DatapathError> {
        let writes = self.translator.replace(state, endpoints);
        let mut n = self.write(&writes)?;
        let (mut policy, mut ipcache, mut eps) = (HashSet::new(), HashSet::new(), HashSet::new());
        for w in &writes {
            match w {
                Write::Policy(k, Some(_)) => drop(policy.insert(*k)),
                Write::Ipcache(k, Some(_)) => drop(ipcache.insert(*k)),
                Write::Endpoint(k, Some(_)) => drop(eps.insert(*k)),
                _ => {}
            }
        }
        n += sweep::<RawPolicyKey, PolicyValue>(&self.policy, &policy)?;
        n += sweep::<CidrKey, u32>(&self.ipcache, &ipcache)?;
        n += sweep::<EpKey, PolicyEp>(&self.eps, &eps)?;
        Ok(n)
    }

    fn write_endpoint(
        &mut self,
        state: &Compiled,
        endpoint: &EndpointRef,
        ep: &PolicyEndpoint,
    ) -> Result<usize, DatapathError> {
        let writes = self.translator.endpoint(state, endpoint, ep);
        self.write(&writes)
    }

    fn rule_hits(&self) -> Result<BTreeMap<u32, u64>, DatapathError> {
        let mut out = BTreeMap::new();
        for k in self.hits.keys()? {
            let Some(per_cpu) = self.hits.lookup_percpu(&k)? else {
                continue;
            };
            let id = weft_bpf::from_bytes::<u32>(&k).unwrap_or_default();
            let sum: u64 = per_cpu
                .iter()
                .filter_map(|b| weft_bpf::from_bytes::<u64>(b))
                .sum();
            out.insert(id, sum);
        }
        Ok(out)
    }

    fn rule_ids(&self) -> &RuleIds {
        self.translator.rule_ids()
    }
}
