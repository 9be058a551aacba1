//! Stable numeric IDs for services (frontend addresses) and backends.
//!
//! Conntrack and reverse-NAT entries written by the data path name a
//! service by its ID, and slots name backends by theirs, so an ID must not
//! change under a live flow: not when the agent restarts, not when other
//! Services come and go (cilium keeps `restoredServiceIDs` for this).
//! The rules:
//! - a key keeps its ID for as long as it is in the desired state;
//! - [`IdAllocator::restore`] takes the assignment back from the maps the
//!   kernel still holds, so a restarted agent keeps every ID;
//! - new keys are numbered in key order from a cursor that only moves
//!   forward (wrapping at the limit), so an ID just released is not handed
//!   to another frontend while old flows may still carry it; from an empty
//!   start the same state always gets the same IDs;
//! - 0 is never an ID (the data path reads it as "none").
//!
//! A service ID is per frontend address (address, port, protocol), shared
//! by both scopes of that address: reverse NAT maps it back to the address.

use std::collections::{BTreeMap, BTreeSet};

use crate::endpoints::BackendAddr;
use crate::error::LbError;
use crate::frontend::FrontendAddr;
use crate::maps::LbMaps;

pub type ServiceId = u16;
pub type BackendId = u32;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pool<K: Ord + Copy> {
    by_key: BTreeMap<K, u32>,
    used: BTreeSet<u32>,
    next: u32,
    max: u32,
}

impl<K: Ord + Copy> Pool<K> {
    fn new(max: u32) -> Self {
        Pool {
            by_key: BTreeMap::new(),
            used: BTreeSet::new(),
            next: 1,
            max,
        }
    }

    fn restore(&mut self, key: K, id: u32) {
        if id == 0 || id > self.max || self.used.contains(&id) || self.by_key.contains_key(&key) {
            return; // a corrupt or duplicate entry: the key gets a fresh ID
        }
        self.by_key.insert(key, id);
        self.used.insert(id);
        self.next = self.next.max(id % self.max + 1);
    }

    fn get_or_alloc(&mut self, key: K) -> Option<u32> {
        if let Some(&id) = self.by_key.get(&key) {
            return Some(id);
        }
        if self.used.len() as u64 >= u64::from(self.max) {
            return None;
        }
        let mut id = self.next;
        while self.used.contains(&id) {
            id = id % self.max + 1;
        }
        self.next = id % self.max + 1;
        self.by_key.insert(key, id);
        self.used.insert(id);
        Some(id)
    }

    fn release(&mut self, key: &K) {
        if let Some(id) = self.by_key.remove(key) {
            self.used.remove(&id);
        }
    }

    fn retain(&mut self, keep: &BTreeSet<K>) {
        let used = &mut self.used;
        self.by_key.retain(|k, id| {
            let kept = keep.contains(k);
            if !kept {
                used.remove(id);
            }
            kept
        });
    }
}

/// The ID assignment, kept by the agent between builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdAllocator {
    services: Pool<FrontendAddr>,
    backends: Pool<BackendAddr>,
}

impl Default for IdAllocator {
    fn default() -> Self {
        Self::with_limits(u32::from(ServiceId::MAX), 1 << 24)
    }
}

impl IdAllocator {
    /// Limits below the type's range, for tests of exhaustion and wrapping.
    pub fn with_limits(max_services: u32, max_backends: u32) -> Self {
        IdAllocator {
            services: Pool::new(max_services.min(u32::from(ServiceId::MAX))),
            backends: Pool::new(max_backends),
        }
    }

    /// The assignment the maps hold: service IDs from master slots, backend
    /// IDs from the backend map.
    pub fn restore(maps: &LbMaps) -> Self {
        let mut ids = Self::default();
        ids.restore_from(maps);
        ids
    }

    pub fn restore_from(&mut self, maps: &LbMaps) {
        for (k, v) in maps.services.iter().filter(|(k, _)| k.slot == 0) {
            self.services.restore(k.frontend(), u32::from(v.rev_nat_id));
        }
        for (&id, b) in &maps.backends {
            self.backends.restore(b.addr(), id);
        }
    }

    pub fn service_id(&self, addr: &FrontendAddr) -> Option<ServiceId> {
        self.services.by_key.get(addr).map(|&id| id as ServiceId)
    }

    pub fn backend_id(&self, addr: &BackendAddr) -> Option<BackendId> {
        self.backends.by_key.get(addr).copied()
    }

    pub(crate) fn alloc_service(&mut self, addr: FrontendAddr) -> Result<ServiceId, LbError> {
        let max = self.services.max;
        self.services
            .get_or_alloc(addr)
            .map(|id| id as ServiceId)
            .ok_or(LbError::ServiceIdsExhausted { max })
    }

    pub(crate) fn alloc_backend(&mut self, addr: BackendAddr) -> Result<BackendId, LbError> {
        let max = self.backends.max;
        self.backends
            .get_or_alloc(addr)
            .ok_or(LbError::BackendIdsExhausted { max })
    }

    pub(crate) fn release_service(&mut self, addr: &FrontendAddr) {
        self.services.release(addr);
    }

    pub(crate) fn release_backend(&mut self, addr: &BackendAddr) {
        self.backends.release(addr);
    }

    /// Releases the IDs of keys no longer wanted.
    pub(crate) fn retain(
        &mut self,
        services: &BTreeSet<FrontendAddr>,
        backends: &BTreeSet<BackendAddr>,
    ) {
        self.services.retain(services);
        self.backends.retain(backends);
    }
}
