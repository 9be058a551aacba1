//! The policy maps as the reconciler sees them: ordered writes, stopping at
//! the first that fails (the caller keeps as applied only what went in).
//! Until the data path's own seam lands this is the shape it will have;
//! `FakePolicyMaps` records and can be told to fail.

use std::net::IpAddr;

use weft_policy::{EndpointRef, MapOp};

/// A local endpoint as the maps know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEndpoint {
    /// weftd's endpoint id (stable for the endpoint's life).
    pub id: u32,
    pub host_ifname: String,
    pub ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy map write {done} failed: {reason}")]
pub struct ApplyError {
    /// Ops written before the failing one.
    pub done: usize,
    pub reason: String,
}

pub trait PolicyMaps: Send {
    /// Writes `ops` in order; an op for an endpoint `ids` does not know is
    /// an error (the reconciler only plans for endpoints it resolves).
    fn apply(
        &mut self,
        ops: &[MapOp],
        ids: &dyn Fn(&EndpointRef) -> Option<PolicyEndpoint>,
    ) -> Result<(), ApplyError>;
}

/// Records every op it is given; fails the `fail_at`-th op from now on.
#[derive(Debug, Default)]
pub struct FakePolicyMaps {
    pub written: Vec<(MapOp, Option<u32>)>,
    pub fail_at: Option<usize>,
}

impl PolicyMaps for FakePolicyMaps {
    fn apply(
        &mut self,
        ops: &[MapOp],
        ids: &dyn Fn(&EndpointRef) -> Option<PolicyEndpoint>,
    ) -> Result<(), ApplyError> {
        for (i, op) in ops.iter().enumerate() {
            if self.fail_at == Some(self.written.len()) {
                return Err(ApplyError {
                    done: i,
                    reason: "injected".into(),
                });
            }
            let ep = match op {
                MapOp::PolicyUpsert { endpoint, .. }
                | MapOp::Isolation { endpoint, .. }
                | MapOp::PolicyDelete { endpoint, .. }
                | MapOp::EndpointGone { endpoint } => Some(endpoint),
                _ => None,
            };
            let id = match ep {
                Some(e) => match ids(e) {
                    Some(pe) => Some(pe.id),
                    None if matches!(op, MapOp::EndpointGone { .. }) => None,
                    None => {
                        return Err(ApplyError {
                            done: i,
                            reason: format!("no local endpoint for {}/{}", e.namespace, e.name),
                        })
                    }
                },
                None => None,
            };
            self.written.push((op.clone(), id));
        }
        Ok(())
    }
}
