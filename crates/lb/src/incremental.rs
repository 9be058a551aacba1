//! The desired state kept between events, so one Service or EndpointSlice
//! change among 10k costs that Service's work, not a rebuild of all.
//!
//! [`LbState::update`] recomputes the frontends of one Service, takes the
//! entries it had out of the maps and diffs them against its new ones
//! (backends shared with other Services are reference-counted, so they stay
//! while anyone uses them). The ops are the same kind [`crate::diff`] makes,
//! in the same order, restricted to what changed. When an address is
//! contested by two Services the winner depends on all of them, so such an
//! update falls back to a full [`LbState::reset`]. The maps always equal
//! what a full [`crate::build`] gives for the same input, up to the
//! numbering of new IDs (the tests check this after every random event).

use std::collections::{BTreeMap, BTreeSet};

use crate::diff::{diff, Op};
use crate::endpoints::{BackendAddr, BackendState};
use crate::error::LbError;
use crate::frontend::{ignored, service_frontends, Frontend, FrontendAddr, Skipped};
use crate::ids::IdAllocator;
use crate::maps::{build, frontend_entries, BackendValue, Config, LbMaps, MaglevKey};
use crate::model::{EndpointSlice, Service, ServiceName};

/// How many frontend scopes use a backend, by the state they see it in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Refs {
    active: u32,
    terminating: u32,
}

#[derive(Debug, Clone)]
pub struct LbState {
    config: Config,
    ids: IdAllocator,
    services: BTreeMap<ServiceName, Service>,
    slices: BTreeMap<ServiceName, Vec<EndpointSlice>>,
    fronts: BTreeMap<ServiceName, Vec<Frontend>>,
    owner: BTreeMap<FrontendAddr, ServiceName>,
    contested: BTreeSet<FrontendAddr>,
    refs: BTreeMap<BackendAddr, Refs>,
    maps: LbMaps,
}

impl LbState {
    /// An empty state; `ids` is [`IdAllocator::restore`]d from the kernel's
    /// maps after a restart.
    pub fn new(config: Config, ids: IdAllocator) -> Self {
        LbState {
            config,
            ids,
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            fronts: BTreeMap::new(),
            owner: BTreeMap::new(),
            contested: BTreeSet::new(),
            refs: BTreeMap::new(),
            maps: LbMaps::default(),
        }
    }

    pub fn maps(&self) -> &LbMaps {
        &self.maps
    }

    pub fn ids(&self) -> &IdAllocator {
        &self.ids
    }

    /// Everything at once (start-up, a watch relist): a full build.
    /// On error nothing changed.
    pub fn reset(
        &mut self,
        services: &[Service],
        slices: &[EndpointSlice],
    ) -> Result<Vec<Op>, LbError> {
        let prev_services = std::mem::replace(
            &mut self.services,
            services.iter().map(|s| (s.id(), s.clone())).collect(),
        );
        let prev_slices = std::mem::take(&mut self.slices);
        for s in slices {
            self.slices
                .entry(s.service.clone())
                .or_default()
                .push(s.clone());
        }
        let result = self.rebuild();
        if result.is_err() {
            self.services = prev_services;
            self.slices = prev_slices;
        }
        result
    }

    fn rebuild(&mut self) -> Result<Vec<Op>, LbError> {
        let services: Vec<Service> = self.services.values().cloned().collect();
        let slices: Vec<EndpointSlice> = self.slices.values().flatten().cloned().collect();
        let mut ids = self.ids.clone();
        let d = build(&services, &slices, &self.config, &mut ids)?;
        self.ids = ids;
        self.fronts.clear();
        self.owner.clear();
        self.refs.clear();
        for fe in d.frontends {
            self.owner.insert(fe.addr, fe.service.clone());
            count(&mut self.refs, &fe, 1);
            self.fronts.entry(fe.service.clone()).or_default().push(fe);
        }
        self.contested = d
            .skipped
            .iter()
            .filter_map(|s| match s {
                Skipped::Conflict { addr, .. } => Some(*addr),
                _ => None,
            })
            .collect();
        let ops = diff(&d.maps, &self.maps);
        self.maps = d.maps;
        Ok(ops)
    }

    /// Service `name` (re)appeared with these slices, or went (`None`).
    /// Returns the ops that bring the maps from the previous state to the
    /// new one. On error nothing changed.
    pub fn update(
        &mut self,
        name: &ServiceName,
        service: Option<Service>,
        slices: Vec<EndpointSlice>,
    ) -> Result<Vec<Op>, LbError> {
        let new_fes = match &service {
            Some(svc) if ignored(svc, &self.config.node).is_none() => {
                let refs: Vec<&EndpointSlice> = slices.iter().collect();
                service_frontends(svc, &refs, &self.config.node.node_name)
            }
            _ => Vec::new(),
        };
        let old_fes = self.fronts.get(name).cloned().unwrap_or_default();
        let touches_contest = old_fes.iter().chain(&new_fes).any(|f| {
            self.contested.contains(&f.addr) || self.owner.get(&f.addr).is_some_and(|o| o != name)
        });
        let (prev_svc, prev_slices) = (self.services.remove(name), self.slices.remove(name));
        if let Some(s) = service {
            self.services.insert(name.clone(), s);
        }
        if !slices.is_empty() {
            self.slices.insert(name.clone(), slices);
        }
        let result = if touches_contest {
            self.rebuild()
        } else {
            self.replace(name, old_fes, new_fes)
        };
        if result.is_err() {
            // Put the inputs back: the state still describes the maps.
            self.services.remove(name);
            self.slices.remove(name);
            self.services.extend(prev_svc.map(|s| (name.clone(), s)));
            self.slices.extend(prev_slices.map(|s| (name.clone(), s)));
        }
        result
    }

    fn replace(
        &mut self,
        name: &ServiceName,
        old: Vec<Frontend>,
        new: Vec<Frontend>,
    ) -> Result<Vec<Op>, LbError> {
        // New entries first; on an error (IDs, Maglev) the IDs taken for
        // them are given back and nothing else has changed yet.
        let new_addrs: BTreeSet<FrontendAddr> = new.iter().map(|f| f.addr).collect();
        let new_backends: BTreeSet<BackendAddr> = new
            .iter()
            .flat_map(|f| f.backends.iter().map(|b| b.0))
            .collect();
        let fresh_addrs: Vec<FrontendAddr> = new_addrs
            .iter()
            .filter(|a| self.ids.service_id(a).is_none())
            .copied()
            .collect();
        let fresh_backends: Vec<BackendAddr> = new_backends
            .iter()
            .filter(|b| self.ids.backend_id(b).is_none())
            .copied()
            .collect();
        let mut after = LbMaps::default();
        let built = self.entries(&fresh_addrs, &fresh_backends, &new, &mut after);
        if let Err(e) = built {
            fresh_addrs.iter().for_each(|a| self.ids.release_service(a));
            fresh_backends
                .iter()
                .for_each(|b| self.ids.release_backend(b));
            return Err(e);
        }
        let before = self.extract(&old);
        let (ids, refs) = (&mut self.ids, &mut self.refs);
        for fe in &old {
            count(refs, fe, -1);
        }
        for fe in &new {
            count(refs, fe, 1);
        }

        // Backends this Service touched: kept (with the state all users
        // agree on) while anyone refers to them, else pruned.
        let touched: BTreeSet<BackendAddr> = old
            .iter()
            .chain(&new)
            .flat_map(|f| f.backends.iter().map(|b| b.0))
            .collect();
        for b in &touched {
            let (Some(id), Some(r)) = (ids.backend_id(b), refs.get(b)) else {
                continue;
            };
            let state = if r.active > 0 {
                BackendState::Active
            } else {
                BackendState::Terminating
            };
            after.backends.insert(
                id,
                BackendValue {
                    addr: b.addr,
                    port: b.port,
                    proto: b.proto,
                    state,
                },
            );
        }

        let ops = diff(&after, &before);
        for op in &ops {
            self.maps.apply(op);
        }
        for fe in &old {
            if !new_addrs.contains(&fe.addr) {
                ids.release_service(&fe.addr);
                self.owner.remove(&fe.addr);
            }
        }
        for b in &touched {
            if !refs.contains_key(b) {
                ids.release_backend(b);
            }
        }
        for fe in &new {
            self.owner.insert(fe.addr, name.clone());
        }
        if new.is_empty() {
            self.fronts.remove(name);
        } else {
            self.fronts.insert(name.clone(), new);
        }
        Ok(ops)
    }

    fn entries(
        &mut self,
        addrs: &[FrontendAddr],
        backends: &[BackendAddr],
        fes: &[Frontend],
        out: &mut LbMaps,
    ) -> Result<(), LbError> {
        for a in addrs {
            self.ids.alloc_service(*a)?;
        }
        for b in backends {
            self.ids.alloc_backend(*b)?;
        }
        for fe in fes {
            frontend_entries(fe, self.config.algorithm, &mut self.ids, out)?;
        }
        Ok(())
    }

    /// The entries `fes` have in the maps now.
    fn extract(&self, fes: &[Frontend]) -> LbMaps {
        let mut out = LbMaps::default();
        for fe in fes {
            let Some(sid) = self.ids.service_id(&fe.addr) else {
                continue;
            };
            let master = crate::maps::ServiceKey {
                addr: fe.addr.addr,
                port: fe.addr.port,
                proto: fe.addr.proto,
                scope: fe.scope,
                slot: 0,
            };
            for (k, v) in self
                .maps
                .services
                .range(master..=master.with_slot(u16::MAX))
            {
                out.services.insert(*k, *v);
                if k.slot > 0 {
                    if let Some(b) = self.maps.backends.get(&v.backend_id) {
                        out.backends.insert(v.backend_id, *b);
                    }
                }
            }
            if let Some(r) = self.maps.rev_nat.get(&sid) {
                out.rev_nat.insert(sid, *r);
            }
            let mk = MaglevKey {
                service_id: sid,
                scope: fe.scope,
            };
            if let Some(t) = self.maps.maglev.get(&mk) {
                out.maglev.insert(mk, t.clone());
            }
        }
        out
    }
}

fn count(refs: &mut BTreeMap<BackendAddr, Refs>, fe: &Frontend, delta: i32) {
    for &(b, state) in &fe.backends {
        let r = refs.entry(b).or_default();
        let n = match state {
            BackendState::Active => &mut r.active,
            BackendState::Terminating => &mut r.terminating,
        };
        *n = n.saturating_add_signed(delta);
        if *r == Refs::default() {
            refs.remove(&b);
        }
    }
}
