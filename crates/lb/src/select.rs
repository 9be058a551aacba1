//! The per-connection decisions the programs make, written once here in
//! plain Rust so the C can be checked against them: which slot a flow hash
//! picks, and whether ClientIP session affinity keeps a client on its
//! previous backend.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::ids::{BackendId, ServiceId};
use crate::maglev;
use crate::maps::{flags, LbMaps, MaglevKey, ServiceKey};

/// Random selection: slot `hash % count + 1`, `None` without backends.
pub fn random_slot(flow_hash: u32, count: u16) -> Option<u16> {
    if count == 0 {
        return None;
    }
    Some((flow_hash % u32::from(count)) as u16 + 1)
}

/// The backend a new flow to `master` gets, as the program picks it:
/// through the Maglev table when the master says so, else a random slot.
pub fn pick(maps: &LbMaps, master: &ServiceKey, flow_hash: u32) -> Option<BackendId> {
    let v = maps.services.get(&master.with_slot(0))?;
    if v.flags & flags::MAGLEV != 0 {
        let key = MaglevKey {
            service_id: v.rev_nat_id,
            scope: master.scope,
        };
        return maglev::lookup(maps.maglev.get(&key)?, flow_hash);
    }
    let slot = random_slot(flow_hash, v.count)?;
    maps.services
        .get(&master.with_slot(slot))
        .map(|s| s.backend_id)
}

/// Affinity map key: one entry per client address and service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct AffinityKey {
    pub client: IpAddr,
    pub service_id: ServiceId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AffinityValue {
    pub backend_id: BackendId,
    /// Monotonic seconds of the client's last new flow to the service.
    pub last_seen: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffinityDecision {
    /// Send the flow to this backend and refresh `last_seen` to now.
    Reuse(BackendId),
    /// Pick a backend as usual, then record it with `last_seen` = now.
    Select,
}

/// ClientIP affinity for a new flow: reuse the recorded backend if it is
/// still one this frontend may use and the entry is not older than
/// `timeout` seconds (kube-proxy's `recent --rcheck --seconds`; cilium's
/// `last_used + timeout >= now`). A clock that went backwards counts as
/// "just seen". `usable` says whether a backend ID is among the frontend's
/// current slots (a removed or drained backend is not).
pub fn affinity(
    entry: Option<AffinityValue>,
    now: u64,
    timeout: u32,
    usable: impl Fn(BackendId) -> bool,
) -> AffinityDecision {
    match entry {
        Some(e)
            if now.saturating_sub(e.last_seen) <= u64::from(timeout) && usable(e.backend_id) =>
        {
            AffinityDecision::Reuse(e.backend_id)
        }
        _ => AffinityDecision::Select,
    }
}

/// A frontend scope's usable backend IDs (its slots), for [`affinity`].
pub fn slot_backends(maps: &LbMaps, master: &ServiceKey) -> Vec<BackendId> {
    let count = maps
        .services
        .get(&master.with_slot(0))
        .map_or(0, |v| v.count);
    (1..=count)
        .filter_map(|s| {
            maps.services
                .get(&master.with_slot(s))
                .map(|v| v.backend_id)
        })
        .collect()
}

/// Expired entries an agent may sweep (the program ignores them anyway).
pub fn expired_affinity(
    entries: &BTreeMap<AffinityKey, AffinityValue>,
    timeouts: &BTreeMap<ServiceId, u32>,
    now: u64,
) -> Vec<AffinityKey> {
    entries
        .iter()
        .filter(|(k, v)| match timeouts.get(&k.service_id) {
            Some(&t) => now.saturating_sub(v.last_seen) > u64::from(t),
            None => true, // the service lost affinity or is gone
        })
        .map(|(k, _)| *k)
        .collect()
}
