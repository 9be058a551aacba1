//! The kernel seam of weft.
//!
//! weftd talks to the kernel only through the [`Datapath`] trait. The real
//! implementation, [`LinuxDatapath`], speaks rtnetlink over its own small,
//! synchronous client (the `weft-netlink` crate, re-exported as [`netlink`]), enters network namespaces with `setns`
//! ([`netns`]) and writes sysctls; it runs `nft` once at agent start for the
//! masquerade table ([`nat`]). [`RecordingDatapath`] is the test double that
//! records typed calls so the agent's logic is testable without root.
//!
//! The node data path is a routed veth per pod (no bridge): the pod's `eth0`
//! holds its `/32` and `/128`, its default routes go via [`GATEWAY_V4`] and
//! [`GATEWAY_V6`], which are configured nowhere and answered by permanent
//! neighbour entries pointing at [`HOST_VETH_MAC`], the MAC of every host-side
//! veth. The host side has a host route and a permanent neighbour per pod
//! address, so neither side ever needs ARP or neighbour discovery.
//!
//! Between nodes, [`Datapath::sync_peers`] routes the other nodes' pod blocks
//! either over a VXLAN device ([`Datapath::ensure_overlay`]) or natively via
//! their underlay addresses; [`routing`] describes what each mode programs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

mod error;
pub mod fastpath;
mod linux;
pub mod nat;
pub mod netns;
mod nlsock;
mod recording;
pub mod routing;
pub mod services;
pub mod sysctl;

/// The eBPF loader lives in its own crate; re-exported so callers keep
/// `weft_datapath::bpf::*`.
pub use weft_bpf as bpf;
/// The rtnetlink client lives in its own crate; re-exported so callers keep
/// `weft_datapath::netlink::*`.
pub use weft_netlink as netlink;

pub use error::DatapathError;
pub use fastpath::{FastEndpoint, FastPathStats};
pub use linux::LinuxDatapath;
pub use recording::{Call, ModelRoute, Op, RecordingDatapath};
pub use routing::{OverlaySetup, PeerNode, RoutingMode, SyncReport};

/// The pod's default gateway (IPv4): configured on no interface, answered by
/// a permanent neighbour entry in the pod.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The pod's default gateway (IPv6), link-local on the pod's interface.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// The MAC of every host-side veth (each veth is its own L2 segment).
pub const HOST_VETH_MAC: [u8; 6] = [0xee; 6];
/// The longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// One pod interface to plumb.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodLink {
    /// The pod's netns path (`/run/netns/x`, `/proc/<pid>/ns/net`).
    pub netns: PathBuf,
    /// The interface name inside the pod (usually `eth0`).
    pub ifname: String,
    /// The host-side veth name in the agent's netns.
    pub host_ifname: String,
    /// The MTU of both ends; 0 leaves the kernel's default.
    pub mtu: u32,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

/// What [`Datapath::attach`] made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attached {
    /// The MAC of the pod's interface.
    pub pod_mac: [u8; 6],
    /// The ifindex of the host-side veth in the agent's netns.
    pub host_ifindex: u32,
}

/// A host-side veth found by [`Datapath::list_host_links`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostLink {
    pub name: String,
    pub ifindex: u32,
    /// The netns id (as seen from the agent's netns) of the peer's netns;
    /// `None` when the peer is gone or in the same netns.
    pub peer_netnsid: Option<i32>,
}

/// Node-wide settings applied once at agent start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeSetup {
    /// The cluster's pod pools (IPv4 and IPv6).
    pub pools: Vec<ipnet::IpNet>,
    /// Masquerade traffic from the pools to destinations outside all pools.
    pub nat_outgoing: bool,
}

/// What the eBPF fast path needs to know of the node ([`Datapath::fastpath_start`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FastPathSetup {
    /// The cluster's pod pools: only traffic to them may leave for another
    /// node past the host stack (the rest may need masquerade).
    pub pools: Vec<ipnet::IpNet>,
    /// Where other nodes' pod traffic arrives and leaves: the VXLAN device
    /// (overlay) or the underlay device (native); `None` on a single node.
    pub remote_device: Option<String>,
}

/// What [`Datapath::fastpath_sync`] found.
pub use fastpath::SyncOutcome as FastPathReport;

/// The seam: weftd talks to the kernel only through this trait.
pub trait Datapath: Send + Sync {
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
    /// Forwarding sysctls and the masquerade table. Idempotent.
    fn prepare_node(&self, setup: &NodeSetup) -> Result<(), DatapathError>;
    /// The underlay interface and its MTU: `iface` if given, else the device of
    /// the default route (IPv4, then IPv6).
    fn underlay_mtu(&self, iface: Option<&str>) -> Result<(String, u32), DatapathError>;
    /// Creates (or fixes) this node's VXLAN device: no learning, no multicast
    /// group, UDP port `port`, MTU ([`OverlaySetup::effective_mtu`]), up. A
    /// device of that name with other VXLAN settings (or not VXLAN) is
    /// replaced; MTU and up are fixed in place. Returns its MAC (the node's
    /// VTEP MAC, published in the registry). Idempotent.
    fn ensure_overlay(&self, setup: &OverlaySetup) -> Result<[u8; 6], DatapathError>;
    /// Makes the kernel's routes to other nodes' blocks exactly `peers`: an
    /// idempotent full sync that removes what is no longer wanted and touches
    /// nothing weft did not make (routes carry protocol
    /// [`netlink::RTPROT_WEFT`]; neighbours and FDB entries live on weft's
    /// VXLAN device). See [`routing`] for what each mode programs. A peer that
    /// cannot be served fails the call before anything changes
    /// ([`DatapathError::InvalidPeer`]); in overlay mode the device must exist.
    /// In native mode the VXLAN device's entries, if it exists, are removed.
    fn sync_peers(
        &self,
        mode: RoutingMode,
        overlay_device: &str,
        peers: &[PeerNode],
    ) -> Result<SyncReport, DatapathError>;
    /// Loads the eBPF fast path ([`fastpath`]) afresh and attaches it to the
    /// remote device; pod veths follow with [`Datapath::fastpath_sync`].
    /// Programs of an earlier agent keep running until replaced.
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

/// `aa:bb:cc:dd:ee:ff`, lowercase.
pub fn format_mac(mac: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    )
}

/// Checks that the kernel would accept `name` as an interface name.
pub fn validate_ifname(name: &str) -> Result<(), DatapathError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_IFNAME_LEN {
        "longer than 15 bytes"
    } else if name == "." || name == ".." {
        "reserved"
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
    {
        "contains '/', ':', whitespace or nul"
    } else {
        return Ok(());
    };
    Err(DatapathError::InvalidName {
        name: name.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_format() {
        assert_eq!(format_mac(HOST_VETH_MAC), "ee:ee:ee:ee:ee:ee");
        assert_eq!(format_mac([0x0a, 0, 0xff, 1, 2, 0x3c]), "0a:00:ff:01:02:3c");
    }

    #[test]
    fn gateways() {
        assert_eq!(GATEWAY_V4.to_string(), "169.254.1.1");
        assert_eq!(GATEWAY_V6.to_string(), "fe80::1");
    }

    #[test]
    fn ifname_validation() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("weft1a2b3c4d5e6").is_ok());
        assert!(validate_ifname("weft1a2b3c4d5e6f").is_err());
        assert!(validate_ifname("").is_err());
        assert!(validate_ifname("a/b").is_err());
        assert!(validate_ifname("a b").is_err());
    }
}
