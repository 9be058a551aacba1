//! The kernel seam of weft.
//!
//! weftd talks to the kernel only through the [`Datapath`] trait, the
//! umbrella of one small trait per concern ([`seams`]: [`Links`], [`NodeNet`],
//! [`Peers`], [`FastPathControl`]). The real
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
//! Between nodes, [`Peers::sync_peers`] routes the other nodes' pod blocks
//! either over a VXLAN device ([`Peers::ensure_overlay`]) or natively via
//! their underlay addresses; [`routing`] describes what each mode programs.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

mod error;
pub mod fastpath;
pub mod flows;
mod linux;
pub mod nat;
pub mod netns;
mod nlsock;
pub mod policy;
mod recording;
pub mod routing;
pub mod services;
pub mod sysctl;

/// The kernel seams by concern and their umbrella, [`Datapath`].
pub mod seams;

/// The eBPF loader lives in its own crate; re-exported so callers keep
/// `weft_datapath::bpf::*`.
pub use weft_bpf as bpf;
/// The rtnetlink client lives in its own crate; re-exported so callers keep
/// `weft_datapath::netlink::*`.
pub use weft_netlink as netlink;

pub use error::DatapathError;
pub use fastpath::{FastEndpoint, FastPathStats};
pub use linux::LinuxDatapath;
pub use recording::{
    Call, FakeFastPath, FakeLinks, FakeNode, FakePeers, ModelRoute, Op, Recorder, RecordingDatapath,
};
pub use routing::{OverlaySetup, PeerNode, RoutingMode, SyncReport};
pub use seams::{Datapath, FastPathControl, Links, NodeNet, Peers};

/// The pod's default gateway (IPv4): configured on no interface, answered by
/// a permanent neighbour entry in the pod.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The pod's default gateway (IPv6), link-local on the pod's interface.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// The MAC of every host-side veth (each veth is its own L2 segment).
pub const HOST_VETH_MAC: [u8; 6] = [0xee; 6];
/// The longest interface name the kernel accepts (IFNAMSIZ - 1); the rule
/// is `weft_cni_spec::ifname`'s, the one every crate checks names with.
pub use weft_cni_spec::ifname::MAX_IFNAME_LEN;

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

/// What [`Links::attach`] made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attached {
    /// The MAC of the pod's interface.
    pub pod_mac: [u8; 6],
    /// The ifindex of the host-side veth in the agent's netns.
    pub host_ifindex: u32,
}

/// A host-side veth found by [`Links::list_host_links`].
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

/// What the eBPF fast path needs to know of the node ([`FastPathControl::fastpath_start`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FastPathSetup {
    /// The cluster's pod pools: only traffic to them may leave for another
    /// node past the host stack (the rest may need masquerade).
    pub pools: Vec<ipnet::IpNet>,
    /// Where other nodes' pod traffic arrives and leaves: the VXLAN device
    /// (overlay) or the underlay device (native); `None` on a single node.
    pub remote_device: Option<String>,
}

/// What [`FastPathControl::fastpath_sync`] found.
pub use fastpath::SyncOutcome as FastPathReport;

/// `aa:bb:cc:dd:ee:ff`, lowercase.
pub fn format_mac(mac: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    )
}

/// Checks that the kernel would accept `name` as an interface name
/// (`weft_cni_spec::ifname`'s rule).
pub fn validate_ifname(name: &str) -> Result<(), DatapathError> {
    weft_cni_spec::ifname::validate_ifname(name).map_err(|e| DatapathError::InvalidName {
        name: name.to_string(),
        reason: e.to_string(),
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
