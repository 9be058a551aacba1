//! Garbage collection: the CNI GC verb (the runtime names the attachments it
//! still knows) and the periodic collection of leaked addresses.
//!
//! The runtime's list is a snapshot taken before the GC reaches weftd, so an
//! attachment ADDed meanwhile is missing from it through no fault of its
//! own. weftd therefore never collects an attachment whose ADD is still in
//! flight (it takes the container's lock, which an ADD holds from start to
//! end, and looks again), nor one younger than the grace period
//! ([`crate::agent::NodeFacts::gc_attachment_grace`]).

use std::collections::HashSet;

use weft_api::{Attachment, DelRequest, GcReply, GcRequest};
use weft_cni_spec::CniError;
use weft_ipam::IpamError;

use crate::agent::{alloc_attrs_of, ipam_error, unix_now, validate_attachment, Agent};

impl Agent {
    /// CNI GC: every endpoint of the network not in the valid list, and past
    /// the grace period, is removed (as a DEL); then leaked addresses of this
    /// node are collected (after the IPAM grace period).
    pub fn gc(&self, req: &GcRequest) -> Result<GcReply, CniError> {
        let mut valid: HashSet<&Attachment> = HashSet::new();
        let mut repeated = Vec::new();
        for a in &req.valid_attachments {
            if !valid.insert(a) {
                repeated.push(format!("{}/{}", a.container_id, a.ifname));
            }
        }
        if !repeated.is_empty() {
            tracing::warn!(network = %req.network, repeated = ?repeated,
                "CNI GC lists attachments more than once; the runtime's attachment list may be wrong");
        }
        let ours: Vec<_> = self
            .endpoints()
            .list()
            .into_iter()
            .filter(|ep| ep.network == req.network)
            .collect();
        let stale: Vec<_> = ours
            .iter()
            .filter(|ep| !valid.contains(&ep.attachment))
            .collect();
        if !stale.is_empty() && stale.len() == ours.len() {
            // legal, and what a runtime with no pods on this network sends;
            // also what a runtime that lost its state sends
            tracing::warn!(network = %req.network, attachments = ours.len(), valid = req.valid_attachments.len(),
                "CNI GC names none of this network's attachments: every one past the grace period is collected");
        }
        let grace = self.facts().gc_attachment_grace.as_secs();
        let mut collected = Vec::new();
        for ep in stale {
            validate_attachment(&ep.attachment)?;
            // an ADD holds this lock from start to end: past it, none is in
            // flight for this container, and the record is looked at again
            let _guard = self.lock_container(&ep.attachment.container_id);
            let Some(now) = self.endpoints().get(&ep.attachment) else {
                continue;
            };
            let age = unix_now().saturating_sub(now.created_at);
            // strictly older: created_at has whole seconds
            if age <= grace {
                tracing::info!(container = %ep.attachment.container_id, ifname = %ep.attachment.ifname, age_seconds = age,
                    "CNI GC: not collecting an attachment younger than the grace period");
                continue;
            }
            self.del_locked(&DelRequest {
                attachment: now.attachment.clone(),
                netns: now.netns.clone(),
                network: now.network.clone(),
            })?;
            collected.push(now.attachment);
        }
        if !collected.is_empty() {
            tracing::info!(network = %req.network, collected = ?collected, "CNI GC collected attachments");
        }
        self.collect_leaks().map_err(ipam_error)?;
        Ok(GcReply { collected })
    }

    /// Frees addresses held by handles that have no endpoint here, once they
    /// are older than the grace period. Never touches the address of a live
    /// endpoint, nor of one whose DEL has begun and not finished.
    pub fn collect_leaks(&self) -> Result<usize, IpamError> {
        let freed = self.ipam().gc(&self.live_handles())?;
        if !freed.is_empty() {
            tracing::info!(count = freed.len(), "collected leaked addresses");
        }
        Ok(freed.len())
    }

    /// The IPAM handles of every endpoint, live or being deleted.
    pub(crate) fn live_handles(&self) -> HashSet<String> {
        self.endpoints()
            .list()
            .iter()
            .chain(self.endpoints().deleting().iter())
            .map(|ep| alloc_attrs_of(ep).handle())
            .collect()
    }
}
