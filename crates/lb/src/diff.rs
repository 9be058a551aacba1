//! Desired maps vs current maps -> the ordered, idempotent operations a
//! reconciler applies (cilium's `updateFrontend` order):
//!
//! 1. backends, reverse-NAT entries and Maglev tables that are new or
//!    changed (nothing refers to them yet, or they change in place);
//! 2. per frontend scope: its changed slots 1..n, then the master (which
//!    publishes the new count and flags), then its slots beyond the new
//!    count;
//! 3. frontends that are gone: master first (lookups stop), then slots;
//! 4. orphans: Maglev tables, reverse-NAT entries, backends no longer
//!    referenced.
//!
//! So a reader between any two operations sees, for every master, all its
//! slots, every backend they name, its reverse-NAT entry and, with the
//! MAGLEV flag, a full table ([`LbMaps::consistency_errors`] checks that;
//! the tests apply every diff one op at a time and check after each).
//! Applying the ops to `current` yields `desired`; a repeated apply is
//! harmless (upserts of the same value, deletes of missing keys succeed),
//! and a diff of equal maps is empty.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::ids::{BackendId, ServiceId};
use crate::maps::{flags, BackendValue, LbMaps, MaglevKey, RevNatValue, ServiceKey, ServiceValue};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Op {
    UpsertBackend(BackendId, BackendValue),
    UpsertRevNat(ServiceId, RevNatValue),
    UpsertMaglev(MaglevKey, Vec<BackendId>),
    UpsertService(ServiceKey, ServiceValue),
    DeleteService(ServiceKey),
    DeleteMaglev(MaglevKey),
    DeleteRevNat(ServiceId),
    DeleteBackend(BackendId),
}

pub fn diff(desired: &LbMaps, current: &LbMaps) -> Vec<Op> {
    let mut ops = Vec::new();
    for (&id, v) in &desired.backends {
        if current.backends.get(&id) != Some(v) {
            ops.push(Op::UpsertBackend(id, *v));
        }
    }
    for (&id, v) in &desired.rev_nat {
        if current.rev_nat.get(&id) != Some(v) {
            ops.push(Op::UpsertRevNat(id, *v));
        }
    }
    for (k, t) in &desired.maglev {
        if current.maglev.get(k) != Some(t) {
            ops.push(Op::UpsertMaglev(*k, t.clone()));
        }
    }

    let masters = |m: &LbMaps| -> BTreeSet<ServiceKey> {
        m.services.keys().map(|k| k.with_slot(0)).collect()
    };
    let wanted = masters(desired);
    for &master in &wanted {
        let mut stale = Vec::new();
        let mut master_op = None;
        for (k, v) in group(desired, master) {
            if current.services.get(&k) == Some(&v) {
                continue;
            }
            if k.slot == 0 {
                master_op = Some(Op::UpsertService(k, v));
            } else {
                ops.push(Op::UpsertService(k, v));
            }
        }
        for (k, _) in group(current, master) {
            if !desired.services.contains_key(&k) {
                stale.push(Op::DeleteService(k));
            }
        }
        ops.extend(master_op);
        ops.extend(stale);
    }
    // Gone frontends, master first: the slot keys sort after it.
    for master in masters(current).difference(&wanted) {
        for (k, _) in group(current, *master) {
            ops.push(Op::DeleteService(k));
        }
    }

    for k in current.maglev.keys() {
        if !desired.maglev.contains_key(k) {
            ops.push(Op::DeleteMaglev(*k));
        }
    }
    for id in current.rev_nat.keys() {
        if !desired.rev_nat.contains_key(id) {
            ops.push(Op::DeleteRevNat(*id));
        }
    }
    for id in current.backends.keys() {
        if !desired.backends.contains_key(id) {
            ops.push(Op::DeleteBackend(*id));
        }
    }
    ops
}

/// The master and slots of one frontend scope, master first.
fn group(m: &LbMaps, master: ServiceKey) -> impl Iterator<Item = (ServiceKey, ServiceValue)> + '_ {
    m.services
        .range(master..=master.with_slot(u16::MAX))
        .map(|(k, v)| (*k, *v))
}

impl LbMaps {
    /// What a map writer does with one op (the fake the reconciler's tests
    /// and these use; deleting a missing key is not an error).
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::UpsertBackend(id, v) => {
                self.backends.insert(*id, *v);
            }
            Op::UpsertRevNat(id, v) => {
                self.rev_nat.insert(*id, *v);
            }
            Op::UpsertMaglev(k, t) => {
                self.maglev.insert(*k, t.clone());
            }
            Op::UpsertService(k, v) => {
                self.services.insert(*k, *v);
            }
            Op::DeleteService(k) => {
                self.services.remove(k);
            }
            Op::DeleteMaglev(k) => {
                self.maglev.remove(k);
            }
            Op::DeleteRevNat(id) => {
                self.rev_nat.remove(id);
            }
            Op::DeleteBackend(id) => {
                self.backends.remove(id);
            }
        }
    }

    /// What a data-path lookup could trip over: a master whose slots,
    /// backends, reverse-NAT entry or Maglev table are missing. Empty for
    /// any state a reader may see between two ops of a [`diff`].
    pub fn consistency_errors(&self) -> Vec<String> {
        let mut errs = Vec::new();
        for (k, v) in self.services.iter().filter(|(k, _)| k.slot == 0) {
            for slot in 1..=v.count {
                match self.services.get(&k.with_slot(slot)) {
                    None => errs.push(format!("{k:?}: slot {slot} missing")),
                    Some(s) if !self.backends.contains_key(&s.backend_id) => errs.push(format!(
                        "{k:?}: slot {slot} names missing backend {}",
                        s.backend_id
                    )),
                    Some(_) => {}
                }
            }
            if !self.rev_nat.contains_key(&v.rev_nat_id) {
                errs.push(format!("{k:?}: reverse NAT {} missing", v.rev_nat_id));
            }
            if v.flags & flags::MAGLEV != 0 {
                let key = MaglevKey {
                    service_id: v.rev_nat_id,
                    scope: k.scope,
                };
                match self.maglev.get(&key) {
                    None => errs.push(format!("{k:?}: maglev table missing")),
                    Some(t) => {
                        if let Some(id) = t.iter().find(|id| !self.backends.contains_key(id)) {
                            errs.push(format!("{k:?}: maglev table names missing backend {id}"));
                        }
                    }
                }
            }
        }
        errs
    }
}
