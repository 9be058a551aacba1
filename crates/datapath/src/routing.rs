//! Routing between nodes: the types of [`crate::Datapath::ensure_overlay`]
//! and [`crate::Datapath::sync_peers`], and the pure plan of what the kernel
//! should hold for a set of peers.
//!
//! # Overlay (VXLAN)
//!
//! Per peer, on the VXLAN device:
//! - a static FDB entry `vtep_mac → dst <underlay IP>` of the tunnel's family
//!   (IPv4 unless the device was made with an IPv6 local address);
//! - a permanent neighbour per next hop below, answering it with `vtep_mac`.
//!
//! Per block: `block via <next hop> dev <vxlan> [onlink] proto 201`, where the
//! next hop is
//! - for IPv4 blocks the peer's IPv4 underlay address (`onlink`: it need not
//!   be reachable on the VXLAN device, the neighbour entry answers it);
//! - for IPv6 blocks the link-local `fe80::/64` address derived from the
//!   peer's VTEP MAC by modified EUI-64 ([`vtep_link_local`]). Not the peer's
//!   IPv6 underlay address: the kernel refuses an `onlink` IPv6 gateway that
//!   another route already places on a different device ("Nexthop has
//!   invalid gateway or device mismatch"), which is exactly the case for an
//!   underlay address. A link-local gateway needs no such check and no
//!   address on the VXLAN device, and it makes dual-stack pods work over an
//!   IPv4-only underlay.
//!
//! # Native
//!
//! Per block: `block via <peer underlay IP of the block's family> proto 201`
//! (nodes share an L2 segment; the kernel picks the device).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::DatapathError;
use crate::netlink::PeerRoute;

/// The VXLAN header overhead on an IPv4 underlay (outer IPv4 20 + UDP 8 +
/// VXLAN 8 + inner Ethernet 14).
pub const VXLAN_OVERHEAD_V4: u32 = 50;
/// The same on an IPv6 underlay (outer IPv6 40).
pub const VXLAN_OVERHEAD_V6: u32 = 70;

/// How pod blocks of other nodes are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RoutingMode {
    /// VXLAN between nodes: any underlay that routes UDP between them.
    Overlay,
    /// Plain routes via the peers' underlay addresses: nodes share L2.
    Native,
}

/// This node's VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OverlaySetup {
    /// The device name, usually `weft.vxlan`.
    pub device: String,
    /// The VXLAN network identifier, usually 4096.
    pub vni: u32,
    /// The UDP port, usually 4789.
    pub port: u16,
    /// The tunnel's local address. With `local_v4` the tunnel runs over IPv4
    /// (`local_v6` is then unused); with only `local_v6` over IPv6; with
    /// neither over IPv4 with the source the kernel picks.
    pub local_v4: Option<Ipv4Addr>,
    pub local_v6: Option<Ipv6Addr>,
    /// The underlay device the tunnel is bound to; `None`: not bound (and the
    /// device of the default route gives the MTU when `mtu` is 0).
    pub underlay_dev: Option<String>,
    /// The device MTU; 0: the underlay's MTU minus [`VXLAN_OVERHEAD_V4`] (or
    /// [`VXLAN_OVERHEAD_V6`] for an IPv6 tunnel).
    pub mtu: u32,
}

impl OverlaySetup {
    /// The tunnel's local address, if any (IPv4 first).
    pub fn local(&self) -> Option<IpAddr> {
        self.local_v4
            .map(IpAddr::V4)
            .or(self.local_v6.map(IpAddr::V6))
    }

    /// Whether the tunnel runs over IPv6.
    pub fn tunnel_v6(&self) -> bool {
        self.local_v4.is_none() && self.local_v6.is_some()
    }

    /// The device MTU for an underlay of `underlay_mtu`: `mtu` if set, else
    /// the underlay's minus the tunnel overhead.
    pub fn effective_mtu(&self, underlay_mtu: u32) -> u32 {
        if self.mtu != 0 {
            return self.mtu;
        }
        let overhead = if self.tunnel_v6() {
            VXLAN_OVERHEAD_V6
        } else {
            VXLAN_OVERHEAD_V4
        };
        underlay_mtu.saturating_sub(overhead)
    }
}

/// Another node, as the registry publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerNode {
    pub name: String,
    pub underlay_v4: Option<Ipv4Addr>,
    pub underlay_v6: Option<Ipv6Addr>,
    /// The MAC of the peer's VXLAN device (overlay mode only).
    pub vtep_mac: Option<[u8; 6]>,
    /// The peer's pod blocks (host bits are ignored).
    pub blocks: Vec<ipnet::IpNet>,
}

/// What [`crate::Datapath::sync_peers`] changed: kernel objects (routes,
/// neighbours, FDB entries) added and removed. A route whose next hop changed
/// counts once in each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncReport {
    pub added: usize,
    pub removed: usize,
}

/// The IPv6 link-local address of a VTEP MAC by modified EUI-64 (RFC 4291
/// appendix A): `fe80::` + MAC with the universal/local bit flipped and
/// `ff:fe` in the middle. weft's IPv6 overlay next hop of a peer.
pub fn vtep_link_local(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([mac[0] ^ 0x02, mac[1]]),
        u16::from_be_bytes([mac[2], 0xff]),
        u16::from_be_bytes([0xfe, mac[3]]),
        u16::from_be_bytes([mac[4], mac[5]]),
    )
}

/// The overlay device as `sync_peers` found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Vtep {
    pub ifindex: u32,
    pub tunnel_v6: bool,
}

/// What the kernel should hold for a set of peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// (prefix, prefix length) → route.
    pub routes: BTreeMap<(IpAddr, u8), PeerRoute>,
    /// Neighbours on the VXLAN device: next hop → MAC.
    pub neighs: BTreeMap<IpAddr, [u8; 6]>,
    /// FDB entries on the VXLAN device: (MAC, remote).
    pub fdb: BTreeSet<([u8; 6], IpAddr)>,
}

fn invalid(peer: &PeerNode, reason: impl Into<String>) -> DatapathError {
    DatapathError::InvalidPeer {
        peer: peer.name.clone(),
        reason: reason.into(),
    }
}

/// The plan for `peers`; a peer that cannot be served (no VTEP MAC in
/// overlay mode, no underlay address of a needed family, a block another
/// peer has too) fails the whole plan before anything is changed.
pub(crate) fn plan(
    mode: RoutingMode,
    vtep: Option<Vtep>,
    peers: &[PeerNode],
) -> Result<Plan, DatapathError> {
    let mut p = Plan::default();
    let mut owner: BTreeMap<(IpAddr, u8), &str> = BTreeMap::new();
    for peer in peers {
        let mac = match mode {
            RoutingMode::Overlay => Some(
                peer.vtep_mac
                    .ok_or_else(|| invalid(peer, "no VTEP MAC for overlay routing"))?,
            ),
            RoutingMode::Native => None,
        };
        if let (Some(mac), Some(v)) = (mac, vtep) {
            if peer.blocks.is_empty() {
                continue;
            }
            let remote = if v.tunnel_v6 {
                peer.underlay_v6.map(IpAddr::V6)
            } else {
                peer.underlay_v4.map(IpAddr::V4)
            };
            let remote = remote.ok_or_else(|| {
                invalid(
                    peer,
                    format!(
                        "no {} underlay address for the VXLAN tunnel",
                        if v.tunnel_v6 { "IPv6" } else { "IPv4" }
                    ),
                )
            })?;
            p.fdb.insert((mac, remote));
        }
        for block in &peer.blocks {
            let block = block.trunc();
            let key = (block.addr(), block.prefix_len());
            if let Some(other) = owner.insert(key, &peer.name) {
                if other != peer.name {
                    return Err(invalid(
                        peer,
                        format!("block {block} is also announced by {other}"),
                    ));
                }
            }
            let route = match (mode, block) {
                (RoutingMode::Native, ipnet::IpNet::V4(_)) => {
                    let gw = peer.underlay_v4.ok_or_else(|| {
                        invalid(peer, format!("no IPv4 underlay address for block {block}"))
                    })?;
                    PeerRoute {
                        dst: key.0,
                        dst_len: key.1,
                        gateway: IpAddr::V4(gw),
                        oif: None,
                        onlink: false,
                    }
                }
                (RoutingMode::Native, ipnet::IpNet::V6(_)) => {
                    let gw = peer.underlay_v6.ok_or_else(|| {
                        invalid(peer, format!("no IPv6 underlay address for block {block}"))
                    })?;
                    PeerRoute {
                        dst: key.0,
                        dst_len: key.1,
                        gateway: IpAddr::V6(gw),
                        oif: None,
                        onlink: false,
                    }
                }
                (RoutingMode::Overlay, net) => {
                    let (Some(mac), Some(v)) = (mac, vtep) else {
                        unreachable!("overlay plans have a VTEP and a MAC")
                    };
                    let (gateway, onlink) = match net {
                        ipnet::IpNet::V4(_) => {
                            let gw = peer.underlay_v4.ok_or_else(|| {
                                invalid(
                                    peer,
                                    format!(
                                        "no IPv4 underlay address to route block {block} over the overlay"
                                    ),
                                )
                            })?;
                            (IpAddr::V4(gw), true)
                        }
                        ipnet::IpNet::V6(_) => (IpAddr::V6(vtep_link_local(mac)), false),
                    };
                    p.neighs.insert(gateway, mac);
                    PeerRoute {
                        dst: key.0,
                        dst_len: key.1,
                        gateway,
                        oif: Some(v.ifindex),
                        onlink,
                    }
                }
            };
            p.routes.insert(key, route);
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, n: u8, blocks: &[&str]) -> PeerNode {
        PeerNode {
            name: name.into(),
            underlay_v4: Some(Ipv4Addr::new(198, 18, 0, n)),
            underlay_v6: Some(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, n as u16)),
            vtep_mac: Some([0x0a, 0, 0, 0, 0, n]),
            blocks: blocks.iter().map(|b| b.parse().unwrap()).collect(),
        }
    }

    const VTEP: Option<Vtep> = Some(Vtep {
        ifindex: 9,
        tunnel_v6: false,
    });

    #[test]
    fn link_local_of_mac() {
        assert_eq!(
            vtep_link_local([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]).to_string(),
            "fe80::5054:ff:fe12:3456"
        );
        assert_eq!(
            vtep_link_local([0x0a, 0, 0, 0, 0, 2]).to_string(),
            "fe80::800:ff:fe00:2"
        );
    }

    #[test]
    fn mtu_defaults() {
        let mut s = OverlaySetup {
            device: "weft.vxlan".into(),
            vni: 4096,
            port: 4789,
            local_v4: Some(Ipv4Addr::new(198, 18, 0, 1)),
            local_v6: None,
            underlay_dev: None,
            mtu: 0,
        };
        assert_eq!(s.effective_mtu(1500), 1450);
        assert_eq!(s.effective_mtu(9000), 8950);
        s.local_v4 = None;
        s.local_v6 = Some(Ipv6Addr::LOCALHOST);
        assert!(s.tunnel_v6());
        assert_eq!(s.effective_mtu(1500), 1430);
        s.mtu = 1400;
        assert_eq!(s.effective_mtu(1500), 1400);
    }

    #[test]
    fn overlay_plan() {
        let p = plan(
            RoutingMode::Overlay,
            VTEP,
            &[peer("n2", 2, &["10.244.0.70/26", "fd00:10:244::40/122"])],
        )
        .unwrap();
        let v4 = p.routes[&("10.244.0.64".parse().unwrap(), 26)];
        assert_eq!(v4.gateway, "198.18.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(v4.oif, Some(9));
        assert!(v4.onlink);
        let v6 = p.routes[&("fd00:10:244::40".parse().unwrap(), 122)];
        assert_eq!(v6.gateway, "fe80::800:ff:fe00:2".parse::<IpAddr>().unwrap());
        assert!(!v6.onlink);
        assert_eq!(p.neighs.len(), 2);
        assert_eq!(
            p.fdb.iter().collect::<Vec<_>>(),
            [&([0x0a, 0, 0, 0, 0, 2], "198.18.0.2".parse().unwrap())]
        );
        // a v4-only underlay still carries v6 blocks
        let mut q = peer("n3", 3, &["fd00:10:244::80/122"]);
        q.underlay_v6 = None;
        assert!(plan(RoutingMode::Overlay, VTEP, &[q]).is_ok());
    }

    #[test]
    fn native_plan_and_errors() {
        let p = plan(
            RoutingMode::Native,
            None,
            &[peer("n2", 2, &["10.244.0.64/26"])],
        )
        .unwrap();
        assert!(p.neighs.is_empty() && p.fdb.is_empty());
        assert_eq!(p.routes.values().next().unwrap().oif, None);
        let mut q = peer("n3", 3, &["fd00:10:244::80/122"]);
        q.underlay_v6 = None;
        let e = plan(RoutingMode::Native, None, &[q]).unwrap_err();
        assert!(e.to_string().contains("n3"), "{e}");
        let mut q = peer("n4", 4, &["10.244.1.0/26"]);
        q.vtep_mac = None;
        assert!(plan(RoutingMode::Overlay, VTEP, &[q]).is_err());
        let dup = [
            peer("a", 5, &["10.244.2.0/26"]),
            peer("b", 6, &["10.244.2.0/26"]),
        ];
        let e = plan(RoutingMode::Native, None, &dup).unwrap_err();
        assert!(e.to_string().contains("also announced by a"), "{e}");
    }
}
