//! The kernel seams of weftd, one small trait per concern, and [`Datapath`],
//! the umbrella the agent holds.
//!
//! Each concern has its Linux implementation in `linux/<concern>.rs` and its
//! fake in `recording/<concern>.rs`. A new kernel concern (policy maps, Service
//! maps, the flow reader) gets a trait of its own beside these, in its own
//! module, rather than more methods here. Callers holding a `dyn Datapath` or
//! a `D: Datapath` call every method without importing the concern traits; a
//! caller holding a concrete type (`LinuxDatapath`, `RecordingDatapath`)
//! imports the traits it uses (`use weft_datapath::seams::*`).

use std::net::IpAddr;

use crate::{
    Attached, DatapathError, FastEndpoint, FastPathReport, FastPathSetup, FastPathStats, HostLink,
    NodeSetup, OverlaySetup, PeerNode, PodLink, RoutingMode, SyncReport,
};

/// Pod interfaces: the routed veth of each pod and its host side.
pub trait Links: Send + Sync {
    /// Creates the pod's veth pair, addresses, routes and neighbours. A stale
    /// host link of the same name is replaced; on failure nothing is left.
    fn attach(&self, link: &PodLink) -> Result<Attached, DatapathError>;
    /// The first half of `attach`: the veth pair alone, up to the pod's MAC,
    /// without addresses (`link.ipv4`/`ipv6` are ignored). It lets weftd overlap
    /// the kernel's link creation with the address allocation it waits on. A
    /// stale host link of the same name is replaced; on failure nothing is left.
    fn create_link(&self, link: &PodLink) -> Result<Attached, DatapathError>;
    /// The second half: addresses, routes and neighbours on a pair that
    /// `create_link` made. On failure the pair is deleted.
    fn configure_link(&self, link: &PodLink) -> Result<Attached, DatapathError>;
    /// Checks that `netns` may be a pod's: a network namespace that is
    /// neither the node's own nor the host's
    /// ([`DatapathError::NodeNetns`], [`DatapathError::NotNetns`],
    /// [`DatapathError::NetnsGone`]). `create_link` and `attach` check the
    /// same; this lets weftd refuse before it allocates anything. The
    /// default (for test doubles) accepts every path.
    fn check_pod_netns(&self, _netns: &std::path::Path) -> Result<(), DatapathError> {
        Ok(())
    }
    /// Deletes the host veth (and with it the pod's end). A missing link is Ok.
    fn detach(&self, host_ifname: &str) -> Result<(), DatapathError>;
    /// Human-readable problems with an attachment; empty means fine.
    fn check(&self, link: &PodLink, pod_mac: [u8; 6]) -> Result<Vec<String>, DatapathError>;
    /// Re-adds missing host routes and neighbours; true if it changed something.
    fn restore_host_side(&self, link: &PodLink, pod_mac: [u8; 6]) -> Result<bool, DatapathError>;
    /// Veths in the agent's netns whose name starts with `prefix`.
    fn list_host_links(&self, prefix: &str) -> Result<Vec<HostLink>, DatapathError>;
}

/// The node itself: forwarding, masquerade, the underlay.
pub trait NodeNet: Send + Sync {
    /// Forwarding sysctls and the masquerade table. Idempotent.
    fn prepare_node(&self, setup: &NodeSetup) -> Result<(), DatapathError>;
    /// The underlay interface and its MTU: `iface` if given, else the device of
    /// the default route (IPv4, then IPv6).
    fn underlay_mtu(&self, iface: Option<&str>) -> Result<(String, u32), DatapathError>;
}

/// Routes to other nodes' pods: the VXLAN device and the peer routes.
pub trait Peers: Send + Sync {
    /// Creates (or fixes) this node's VXLAN device: no learning, no multicast
    /// group, UDP port `port`, MTU ([`OverlaySetup::effective_mtu`]), up. A
    /// device of that name with other VXLAN settings (or not VXLAN) is
    /// replaced; MTU and up are fixed in place. Returns its MAC (the node's
    /// VTEP MAC, published in the registry). Idempotent.
    fn ensure_overlay(&self, setup: &OverlaySetup) -> Result<[u8; 6], DatapathError>;
    /// Makes the kernel's routes to other nodes' blocks exactly `peers`: an
    /// idempotent full sync that removes what is no longer wanted and touches
    /// nothing weft did not make (routes carry protocol
    /// [`crate::netlink::RTPROT_WEFT`]; neighbours and FDB entries live on
    /// weft's VXLAN device). See [`crate::routing`] for what each mode
    /// programs. A peer that cannot be served fails the call before anything
    /// changes ([`DatapathError::InvalidPeer`]); in overlay mode the device
    /// must exist. In native mode the VXLAN device's entries, if it exists,
    /// are removed.
    fn sync_peers(
        &self,
        mode: RoutingMode,
        overlay_device: &str,
        peers: &[PeerNode],
    ) -> Result<SyncReport, DatapathError>;
}

/// The eBPF fast path's programs, hooks and endpoint map.
pub trait FastPathControl: Send + Sync {
    /// Loads the eBPF fast path ([`crate::fastpath`]) afresh and attaches it
    /// to the remote device; pod veths follow with
    /// [`FastPathControl::fastpath_sync`]. Programs of an earlier agent keep
    /// running until replaced.
    fn fastpath_start(&self, setup: &FastPathSetup) -> Result<(), DatapathError>;
    /// Takes weft's programs off every `prefix` veth and the remote device:
    /// the kernel path alone carries traffic. Idempotent; fine if none.
    fn fastpath_stop(
        &self,
        prefix: &str,
        remote_device: Option<&str>,
    ) -> Result<usize, DatapathError>;
    /// Makes the fast path's endpoints exactly `endpoints` (shaped veths are
    /// found here and kept slow) and attaches the program to their veths.
    /// A no-op returning the default report when the fast path is not started.
    fn fastpath_sync(&self, endpoints: &[FastEndpoint]) -> Result<FastPathReport, DatapathError>;
    /// Removes these addresses from the fast path now (a DEL).
    fn fastpath_forget(&self, ips: &[IpAddr]) -> Result<(), DatapathError>;
    /// The programs' counters; `None` when the fast path is not started.
    fn fastpath_stats(&self) -> Result<Option<FastPathStats>, DatapathError>;
}

/// The seam weftd holds: every concern above. Implemented for every type
/// that implements them all, so a new data path (or fake) implements the
/// concern traits and nothing else.
pub trait Datapath: Links + NodeNet + Peers + FastPathControl {}

impl<T: Links + NodeNet + Peers + FastPathControl + ?Sized> Datapath for T {}
