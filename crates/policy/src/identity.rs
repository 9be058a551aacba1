//! Security identities: the number a packet's peer is known by.
//!
//! An address's identity is allocated for what a policy can ask of it:
//! for a pod, its namespace, its labels, its namespace's labels and its
//! named ports; for a node, "this node" or "another node"; otherwise the
//! world. Each comes together with the **CIDR piece** the address falls in
//! (the longest of all prefixes named by any `ipBlock` cidr or except), so
//! one LPM lookup in the ipcache yields one identity that answers label
//! selectors and ipBlocks alike, pod addresses included (the upstream
//! suite's CIDR cases point ipBlocks at pod IPs).
//!
//! Named ports are part of a pod's key because an egress rule's named port
//! resolves on the destination pod: two pods with the same labels but
//! different numbers for one name must not share a map entry. Pods of one
//! ReplicaSet share both, so in practice this splits nothing.

use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::model::Protocol;
use crate::selector::Labels;
use crate::PolicyError;

/// A numeric security identity, as the ipcache values and the policy map
/// keys carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identity(pub u32);

impl Identity {
    /// Wildcard in policy map keys: any peer ("all sources").
    pub const ANY: Identity = Identity(0);
    /// This node (the ipcache of each node gives its own addresses this).
    pub const HOST: Identity = Identity(1);
    /// An address nothing else claims (also the ipcache miss).
    pub const WORLD: Identity = Identity(2);
    /// Another node of the cluster.
    pub const REMOTE_NODE: Identity = Identity(6);
    /// Allocated identities start here; below are reserved.
    pub const FIRST_ALLOCATED: u32 = 256;
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What an identity stands for, without the CIDR piece.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Subject {
    Pod {
        namespace: String,
        labels: Labels,
        namespace_labels: Labels,
        named_ports: BTreeMap<String, (u16, Protocol)>,
    },
    /// The node whose ipcache this is (relative: every node maps its own
    /// addresses to it).
    Host,
    RemoteNode,
    World,
}

/// The allocator's key: a subject and the CIDR piece of the address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IdentityKey {
    pub subject: Subject,
    pub cidr: Option<IpNet>,
}

impl IdentityKey {
    /// The fixed identities that need no allocation.
    pub fn reserved(&self) -> Option<Identity> {
        match (&self.subject, self.cidr) {
            (Subject::Host, None) => Some(Identity::HOST),
            (Subject::World, None) => Some(Identity::WORLD),
            (Subject::RemoteNode, None) => Some(Identity::REMOTE_NODE),
            _ => None,
        }
    }
}

impl fmt::Display for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.subject {
            Subject::Pod {
                namespace,
                labels,
                named_ports,
                ..
            } => {
                write!(f, "pod in {namespace} {{")?;
                for (i, (k, v)) in labels.iter().enumerate() {
                    write!(f, "{}{k}={v}", if i > 0 { "," } else { "" })?;
                }
                write!(f, "}}")?;
                // Named ports split identities; show them so two entries
                // with equal labels are told apart.
                if !named_ports.is_empty() {
                    write!(f, " ports {{")?;
                    for (i, (name, (n, p))) in named_ports.iter().enumerate() {
                        write!(f, "{}{name}={n}/{p}", if i > 0 { "," } else { "" })?;
                    }
                    write!(f, "}}")?;
                }
            }
            Subject::Host => write!(f, "host")?,
            Subject::RemoteNode => write!(f, "remote-node")?,
            Subject::World => write!(f, "world")?,
        }
        if let Some(c) = self.cidr {
            write!(f, " in cidr {c}")?;
        }
        Ok(())
    }
}

/// Hands out identities. The in-memory one serves one process; the
/// cluster-wide one (every node must agree) will sit on the store behind
/// this same trait.
pub trait IdentityAllocator {
    /// The identity of `key`, the same on every call.
    fn allocate(&mut self, key: &IdentityKey) -> Result<Identity, PolicyError>;

    /// Garbage collection: `in_use` is every identity a compile of the
    /// whole cluster gave (nothing else is used); identities not in it are
    /// released once they have stayed unused for the allocator's grace
    /// period, so a pod restarting with the same labels keeps its number.
    /// The default keeps everything.
    fn collect(
        &mut self,
        _in_use: &BTreeMap<Identity, IdentityKey>,
        _now: std::time::SystemTime,
    ) -> Result<Collected, PolicyError> {
        Ok(Collected::default())
    }
}

/// What one garbage collection pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Newly marked unused (their grace period starts).
    pub marked: usize,
    /// Marked before, in use again: unmarked.
    pub revived: usize,
    /// Unused for the whole grace period: gone.
    pub released: usize,
}

/// Numbers from [`Identity::FIRST_ALLOCATED`] up, never reused.
#[derive(Debug, Default, Clone)]
pub struct MemoryAllocator {
    by_key: BTreeMap<IdentityKey, Identity>,
}

impl MemoryAllocator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

impl IdentityAllocator for MemoryAllocator {
    fn allocate(&mut self, key: &IdentityKey) -> Result<Identity, PolicyError> {
        if let Some(id) = key.reserved() {
            return Ok(id);
        }
        if let Some(id) = self.by_key.get(key) {
            return Ok(*id);
        }
        let next = Identity::FIRST_ALLOCATED
            .checked_add(self.by_key.len() as u32)
            .ok_or_else(|| PolicyError::Allocator("identity space exhausted".into()))?;
        self.by_key.insert(key.clone(), Identity(next));
        Ok(Identity(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(app: &str, cidr: Option<&str>) -> IdentityKey {
        IdentityKey {
            subject: Subject::Pod {
                namespace: "x".into(),
                labels: [("app".to_string(), app.to_string())].into(),
                namespace_labels: Labels::new(),
                named_ports: BTreeMap::new(),
            },
            cidr: cidr.map(|c| c.parse().unwrap()),
        }
    }

    #[test]
    fn same_key_same_identity_and_reserved_stay_reserved() {
        let mut a = MemoryAllocator::new();
        let web = a.allocate(&pod("web", None)).unwrap();
        let db = a.allocate(&pod("db", None)).unwrap();
        let web_in = a.allocate(&pod("web", Some("10.0.0.0/8"))).unwrap();
        assert_eq!(a.allocate(&pod("web", None)).unwrap(), web);
        assert!(web != db && web != web_in && db != web_in);
        assert!(web.0 >= Identity::FIRST_ALLOCATED);
        let world = IdentityKey {
            subject: Subject::World,
            cidr: None,
        };
        assert_eq!(a.allocate(&world).unwrap(), Identity::WORLD);
        let host = IdentityKey {
            subject: Subject::Host,
            cidr: None,
        };
        assert_eq!(a.allocate(&host).unwrap(), Identity::HOST);
        let world_in = IdentityKey {
            subject: Subject::World,
            cidr: Some("192.0.2.0/24".parse().unwrap()),
        };
        assert!(a.allocate(&world_in).unwrap().0 >= Identity::FIRST_ALLOCATED);
        assert_eq!(a.len(), 4);
    }

    #[test]
    fn display_names_the_subject_and_cidr() {
        assert_eq!(
            pod("web", Some("10.0.0.0/8")).to_string(),
            "pod in x {app=web} in cidr 10.0.0.0/8"
        );
    }
}
