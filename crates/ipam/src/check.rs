//! The consistency check behind `weft ipam check`.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use crate::record::BlockRecord;
use crate::types::{AllocationInfo, CheckFindings};
use crate::{Family, Ipam, IpamError};

impl Ipam {
    /// Compares the store with the node's `live` handles without changing
    /// anything: allocations this node holds (in its blocks, or borrowed)
    /// not live (any age) are leaks; inconsistencies anywhere in the IPAM keys are problems.
    /// This node's journaled allocations are written to the store first
    /// (a flush: it changes what the store shows, not what is allocated).
    pub fn check(&self, live: &HashSet<String>) -> Result<CheckFindings, IpamError> {
        self.flush()?;
        let mut st = self.lock();
        let listing = self.refresh_locked(&mut st)?;
        drop(st);
        let mut findings = CheckFindings::default();
        let mut by_handle: BTreeMap<(String, Family), Vec<IpAddr>> = BTreeMap::new();
        for kv in &listing.kvs {
            let rec = match BlockRecord::decode(kv) {
                Ok(rec) => rec,
                Err(e) => {
                    findings.problems.push(e.to_string());
                    continue;
                }
            };
            match self.cfg.pools.iter().find(|p| p.cidr.contains(&rec.cidr)) {
                None => findings.problems.push(format!(
                    "block {} is not inside any configured pool",
                    rec.cidr
                )),
                Some(p) if p.block_prefix != rec.cidr.prefix_len() || p.cidr != rec.pool => {
                    findings.problems.push(format!(
                        "block {} does not match pool {} (/{} blocks)",
                        rec.cidr, p.cidr, p.block_prefix
                    ))
                }
                Some(_) => {}
            }
            for (&o, a) in &rec.allocations {
                if o >= rec.size() {
                    findings.problems.push(format!(
                        "block {}: allocation of handle {} at ordinal {o} lies outside the block",
                        rec.cidr, a.handle
                    ));
                    continue;
                }
                let addr = rec.addr(o);
                if !rec.usable(o) {
                    findings.problems.push(format!(
                        "block {}: {addr} is allocated to handle {} but is a reserved address of pool {}",
                        rec.cidr, a.handle, rec.pool
                    ));
                }
                if rec.quarantine.contains_key(&o) {
                    findings.problems.push(format!(
                        "block {}: {addr} is both allocated (handle {}) and quarantined",
                        rec.cidr, a.handle
                    ));
                }
                by_handle
                    .entry((a.handle.clone(), Family::of(&addr)))
                    .or_default()
                    .push(addr);
                if self.holds(&rec, a) && !live.contains(&a.handle) {
                    findings.leaked.push(AllocationInfo::new(&rec, o, a));
                }
            }
        }
        for ((handle, family), addrs) in by_handle {
            if addrs.len() > 1 {
                let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                findings.problems.push(format!(
                    "handle {handle} holds {} {family} addresses: {}",
                    addrs.len(),
                    list.join(", ")
                ));
            }
        }
        Ok(findings)
    }
}
