//! UDP sockets connected to a backend that left: which ones, and where.
//!
//! The socket LB translates a UDP socket's `connect()` once; the socket then
//! talks to that backend's address for its life. A resolver that keeps its
//! socket would go on asking a CoreDNS pod that is gone (kube-proxy's
//! conntrack-staleness bug in socket form; kube-proxy flushes the conntrack
//! entries of a removed UDP endpoint). So when the kernel's maps stop
//! selecting a UDP backend, weftd aborts the sockets still connected to it
//! in every network namespace the socket LB serves on this node (its own
//! and each local pod's): the owner's next call fails, it connects again and
//! the socket LB gives it a live backend. TCP needs none of this: a
//! connection to a removed pod fails by itself (reset or timeout).
//!
//! "Left" is measured on what the kernel holds (the reconciler's `current`),
//! so a socket is aborted only once its backend can no longer be chosen,
//! and never for a backend that merely moved between slots or is still
//! selectable through another UDP frontend.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use weft_lb::maps::ServiceKey;
use weft_lb::{LbMaps, Protocol};

use super::KernelMaps;

/// The UDP backends `m` can select: the address and port of every backend
/// in the live slots (1..=count) of a UDP frontend.
pub fn udp_selectable(m: &LbMaps) -> BTreeSet<SocketAddr> {
    let mut out = BTreeSet::new();
    for (k, v) in &m.services {
        if k.proto == Protocol::UDP && k.slot == 0 {
            out.extend(frontend_backends(m, k, v.count));
        }
    }
    out
}

/// The backends in slots 1..=`count` of `master`'s frontend.
pub fn frontend_backends<'a>(
    m: &'a LbMaps,
    master: &ServiceKey,
    count: u16,
) -> impl Iterator<Item = SocketAddr> + 'a {
    let master = *master;
    (1..=count).filter_map(move |s| {
        let slot = m.services.get(&master.with_slot(s))?;
        let b = m.backends.get(&slot.backend_id)?;
        Some(SocketAddr::new(b.addr, b.port))
    })
}

/// Where the socket LB's clients live on this node: weftd's own network
/// namespace (`None`, the node's) and each local pod's, once each.
pub fn namespaces(pods: impl IntoIterator<Item = PathBuf>) -> Vec<Option<PathBuf>> {
    let mut seen = BTreeSet::new();
    let mut out = vec![None];
    for p in pods {
        if seen.insert(p.clone()) {
            out.push(Some(p));
        }
    }
    out
}

/// Aborts the UDP sockets connected to one of `peers` in each of
/// `namespaces`. A namespace that fails (a pod that went away meanwhile)
/// does not stop the others; returns the sockets aborted and the errors.
pub fn abort<K: KernelMaps + ?Sized>(
    kernel: &mut K,
    namespaces: &[Option<PathBuf>],
    peers: &BTreeSet<SocketAddr>,
) -> (usize, Vec<String>) {
    if peers.is_empty() {
        return (0, Vec::new());
    }
    let peers: Vec<SocketAddr> = peers.iter().copied().collect();
    let (mut n, mut errors) = (0, Vec::new());
    for ns in namespaces {
        match kernel.abort_udp(ns.as_deref(), &peers) {
            Ok(k) => n += k,
            Err(e) => errors.push(format!(
                "{}: {e}",
                ns.as_deref()
                    .map_or("weftd's netns".into(), |p| p.display().to_string())
            )),
        }
    }
    (n, errors)
}
