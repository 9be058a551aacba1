//! The desired content of the data path's load-balancing maps, one Rust
//! struct per map entry, shaped like cilium's lb4/lb6 maps:
//!
//! - service map: key (address, port, protocol, scope, slot). Slot 0, the
//!   master, holds the backend count, the reverse-NAT (service) ID, flags
//!   and the affinity timeout; slots 1..=count hold one backend ID each.
//!   A random pick is slot `hash % count + 1`.
//! - backend map: backend ID -> address, port, protocol, state.
//! - reverse-NAT map: service ID -> frontend address and port, to rewrite
//!   replies' source.
//! - Maglev map: (service ID, scope) -> `M` backend IDs, with the MAGLEV
//!   flag on the master.
//!
//! The C mirror of these lives with the programs (`weft_maps.h`); these are
//! the typed, comparable form the diff works on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::endpoints::{BackendAddr, BackendState, Verdict};
use crate::error::LbError;
use crate::frontend::{frontends, Frontend, FrontendAddr, FrontendKind, NodeView, Scope, Skipped};
use crate::hash::backend_key;
use crate::ids::{BackendId, IdAllocator, ServiceId};
use crate::maglev::{build_table, MaglevBackend, DEFAULT_M};
use crate::model::{EndpointSlice, Protocol, Service};

/// Master-slot flags.
pub mod flags {
    /// Another scope of this address exists; look it up for local traffic.
    pub const TWO_SCOPES: u16 = 1 << 0;
    /// Backends restricted to this node by a `Local` traffic policy.
    pub const LOCAL_ONLY: u16 = 1 << 1;
    /// ClientIP session affinity; the timeout is in `affinity_timeout`.
    pub const AFFINITY: u16 = 1 << 2;
    /// Pick through the Maglev table, not `hash % count`.
    pub const MAGLEV: u16 = 1 << 3;
    /// No backend: refuse new connections (count is 0).
    pub const REJECT: u16 = 1 << 4;
    /// No backend in this scope although the Service has some: drop.
    pub const DROP: u16 = 1 << 5;
    /// The backends are terminating ones (nothing ready, KEP-1669).
    pub const TERMINATING: u16 = 1 << 6;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ServiceKey {
    pub addr: IpAddr,
    pub port: u16,
    pub proto: Protocol,
    pub scope: Scope,
    pub slot: u16,
}

impl ServiceKey {
    pub fn frontend(&self) -> FrontendAddr {
        FrontendAddr {
            addr: self.addr,
            port: self.port,
            proto: self.proto,
        }
    }
    pub fn with_slot(mut self, slot: u16) -> Self {
        self.slot = slot;
        self
    }
}

/// A service map value. The master has `backend_id` 0; a slot has its
/// backend, the service ID and kind, and 0 for count, flags and timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ServiceValue {
    pub backend_id: BackendId,
    pub count: u16,
    pub rev_nat_id: ServiceId,
    pub kind: FrontendKind,
    pub flags: u16,
    /// Seconds; 0 without affinity.
    pub affinity_timeout: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BackendValue {
    pub addr: IpAddr,
    pub port: u16,
    pub proto: Protocol,
    pub state: BackendState,
}

impl BackendValue {
    pub fn addr(&self) -> BackendAddr {
        BackendAddr {
            addr: self.addr,
            port: self.port,
            proto: self.proto,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RevNatValue {
    pub addr: IpAddr,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct MaglevKey {
    pub service_id: ServiceId,
    pub scope: Scope,
}

/// All four maps, desired or as read back from the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LbMaps {
    pub services: BTreeMap<ServiceKey, ServiceValue>,
    pub backends: BTreeMap<BackendId, BackendValue>,
    pub rev_nat: BTreeMap<ServiceId, RevNatValue>,
    pub maglev: BTreeMap<MaglevKey, Vec<BackendId>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Slot `hash % count + 1`: cheap, but a backend change moves flows
    /// that have no conntrack entry yet (and all flows on other nodes).
    Random,
    /// A table of `m` slots per frontend scope (`m` prime).
    Maglev { m: u32 },
}

impl Algorithm {
    pub fn maglev() -> Self {
        Algorithm::Maglev { m: DEFAULT_M }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub node: NodeView,
    pub algorithm: Algorithm,
}

/// The desired state: the frontends (for listing), the map entries, and
/// what was left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub frontends: Vec<Frontend>,
    pub maps: LbMaps,
    pub skipped: Vec<Skipped>,
}

/// Services + EndpointSlices -> desired maps, IDs kept in (and new ones
/// taken from) `ids`; IDs of keys that are gone are released.
pub fn build(
    services: &[Service],
    slices: &[EndpointSlice],
    config: &Config,
    ids: &mut IdAllocator,
) -> Result<Desired, LbError> {
    let (fes, skipped) = frontends(services, slices, &config.node);
    let fe_keys: BTreeSet<FrontendAddr> = fes.iter().map(|f| f.addr).collect();
    let be_keys: BTreeSet<BackendAddr> = fes
        .iter()
        .flat_map(|f| f.backends.iter().map(|b| b.0))
        .collect();
    ids.retain(&fe_keys, &be_keys);
    for &k in &fe_keys {
        ids.alloc_service(k)?;
    }
    for &k in &be_keys {
        ids.alloc_backend(k)?;
    }

    let mut maps = LbMaps::default();
    for fe in &fes {
        frontend_entries(fe, config.algorithm, ids, &mut maps)?;
    }
    Ok(Desired {
        frontends: fes,
        maps,
        skipped,
    })
}

/// Writes one frontend scope's entries into `maps`: master, slots, reverse
/// NAT, Maglev table, and its backends (Active wins when two frontends see
/// one backend differently). IDs must have been allocated in key order
/// before (new ones are taken here otherwise).
pub(crate) fn frontend_entries(
    fe: &Frontend,
    algorithm: Algorithm,
    ids: &mut IdAllocator,
    maps: &mut LbMaps,
) -> Result<(), LbError> {
    let sid = ids.alloc_service(fe.addr)?;
    let count = u16::try_from(fe.backends.len()).map_err(|_| LbError::TooManyBackends {
        frontend: format!("{} ({})", fe.addr, fe.service),
        backends: fe.backends.len(),
    })?;
    let mut slot_ids = Vec::with_capacity(fe.backends.len());
    for &(b, state) in &fe.backends {
        let bid = ids.alloc_backend(b)?;
        slot_ids.push(bid);
        let value = BackendValue {
            addr: b.addr,
            port: b.port,
            proto: b.proto,
            state,
        };
        // A backend serving two frontends is Active if either sees it so.
        maps.backends
            .entry(bid)
            .and_modify(|v| v.state = v.state.min(state))
            .or_insert(value);
    }
    maps.rev_nat.insert(
        sid,
        RevNatValue {
            addr: fe.addr.addr,
            port: fe.addr.port,
        },
    );
    let mut fl = 0;
    if fe.two_scopes {
        fl |= flags::TWO_SCOPES;
    }
    if fe.local_only {
        fl |= flags::LOCAL_ONLY;
    }
    if fe.affinity_timeout.is_some() {
        fl |= flags::AFFINITY;
    }
    match fe.verdict {
        Verdict::Forward => {}
        Verdict::Reject => fl |= flags::REJECT,
        Verdict::Drop => fl |= flags::DROP,
    }
    if fe.backends.iter().any(|b| b.1 == BackendState::Terminating) {
        fl |= flags::TERMINATING;
    }
    if let (Algorithm::Maglev { m }, false) = (algorithm, slot_ids.is_empty()) {
        fl |= flags::MAGLEV;
        let mb: Vec<MaglevBackend> = fe
            .backends
            .iter()
            .zip(&slot_ids)
            .map(|(b, &id)| MaglevBackend {
                key: backend_key(&b.0),
                weight: 1,
                id,
            })
            .collect();
        let key = MaglevKey {
            service_id: sid,
            scope: fe.scope,
        };
        maps.maglev.insert(key, build_table(&mb, m)?);
    }
    let key = ServiceKey {
        addr: fe.addr.addr,
        port: fe.addr.port,
        proto: fe.addr.proto,
        scope: fe.scope,
        slot: 0,
    };
    let master = ServiceValue {
        backend_id: 0,
        count,
        rev_nat_id: sid,
        kind: fe.kind,
        flags: fl,
        affinity_timeout: fe.affinity_timeout.unwrap_or(0),
    };
    for (i, &bid) in slot_ids.iter().enumerate() {
        // Slots carry only what a lookup of one needs, so a change of
        // count or flags rewrites the master alone.
        let slot = ServiceValue {
            backend_id: bid,
            count: 0,
            flags: 0,
            affinity_timeout: 0,
            ..master
        };
        maps.services.insert(key.with_slot(i as u16 + 1), slot);
    }
    maps.services.insert(key, master);
    Ok(())
}
