//! Giving addresses back: release (into quarantine) and rollback (without)
//! of what a handle holds.

use std::net::IpAddr;

use crate::record::{Allocation, BlockRecord};
use crate::state::{Change, State};
use crate::types::AllocationInfo;
use crate::{ms, Ipam, IpamError, MAX_ATTEMPTS};

impl Ipam {
    /// Releases every address `handle` holds for this node (in its own
    /// blocks or borrowed); each rests in quarantine until now +
    /// `quarantine`. Releasing a handle that holds nothing is a no-op (no
    /// store access with strict affinity; without it, one listing to look
    /// for addresses another `Ipam` of this node borrowed). Returns what
    /// was released.
    pub fn release(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        let until = self.clock.now_ms().saturating_add(ms(self.cfg.quarantine));
        self.release_handle(handle, Some(until))
    }

    /// Like [`Ipam::release`] but without quarantine: for an ADD that failed
    /// after [`Ipam::allocate`] and before the addresses reached a pod. Only
    /// call it when this ADD allocated them (not when `allocate` merely
    /// returned what an earlier, successful ADD holds), or a live pod's
    /// address could be handed out again at once.
    pub fn rollback(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        self.release_handle(handle, None)
    }

    pub(crate) fn release_handle(
        &self,
        handle: &str,
        until: Option<u64>,
    ) -> Result<Vec<IpAddr>, IpamError> {
        let mut st = self.lock();
        let mut keys = self.handle_keys(&st, handle);
        if keys.is_empty() && !self.cfg.strict_affinity {
            // Not in the index: another Ipam of this node may have borrowed
            // for it since our last listing.
            self.refresh_locked(&mut st)?;
            keys = self.handle_keys(&st, handle);
        }
        let freed = self.free_in_blocks(&mut st, &keys, until, |rec, _, a| {
            a.handle == handle && self.holds(rec, a)
        })?;
        st.borrowed.remove(handle);
        let mut out: Vec<IpAddr> = freed.into_iter().map(|f| f.address).collect();
        out.sort();
        if let Some(until) = until.filter(|_| !out.is_empty()) {
            let now = self.clock.now_ms();
            st.released.retain(|_, r| r.iter().any(|&(_, u)| u > now));
            st.released.insert(
                handle.to_string(),
                out.iter().map(|&a| (a, until)).collect(),
            );
        }
        Ok(out)
    }

    /// Removes the allocations of the cached blocks `keys` that `pick`
    /// selects, all blocks in one atomic commit (retried on conflict against
    /// the fresh record), putting them in quarantine until
    /// `quarantine_until` when given.
    pub(crate) fn free_in_blocks(
        &self,
        st: &mut State,
        keys: &[String],
        quarantine_until: Option<u64>,
        pick: impl Fn(&BlockRecord, u32, &Allocation) -> bool,
    ) -> Result<Vec<AllocationInfo>, IpamError> {
        let now = self.clock.now_ms();
        let mut attempts = 0;
        loop {
            let mut changes = Vec::new();
            let mut freed = Vec::new();
            for key in keys {
                let Some(cached) = st.cached(key) else {
                    continue;
                };
                let mut rec = cached.rec.clone();
                let ordinals: Vec<u32> = rec
                    .allocations
                    .iter()
                    .filter(|(&o, a)| pick(&rec, o, a))
                    .map(|(&o, _)| o)
                    .collect();
                if ordinals.is_empty() {
                    continue;
                }
                rec.prune(now);
                for o in ordinals {
                    if let Some(a) = rec.allocations.remove(&o) {
                        freed.push(AllocationInfo::new(&rec, o, &a));
                    }
                    if let Some(until) = quarantine_until {
                        rec.quarantine.insert(o, until);
                    }
                }
                if rec.allocations.is_empty() {
                    rec.emptied_at_ms = Some(now);
                }
                changes.push(Change::new(key.clone(), rec, cached.rev, false)?);
            }
            if changes.is_empty() {
                return Ok(Vec::new());
            }
            match self.write(st, changes)? {
                Ok(()) => return Ok(freed),
                Err(key) => {
                    attempts += 1;
                    if attempts >= MAX_ATTEMPTS {
                        return Err(IpamError::Contended { key, attempts });
                    }
                }
            }
        }
    }
}
