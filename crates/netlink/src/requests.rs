//! Builders of the requests the data path sends.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

use crate::consts::*;
use crate::msg::*;
use crate::parse::*;

/// Parameters of a veth pair created in one request.
#[derive(Debug, Clone)]
pub struct VethSpec<'a> {
    pub name: &'a str,
    pub mac: [u8; 6],
    /// 0: the kernel's default.
    pub mtu: u32,
    pub peer_name: &'a str,
    pub peer_netns_fd: RawFd,
}

/// `RTM_NEWLINK` creating a veth pair, the first end up; the peer is created
/// directly in the netns behind `peer_netns_fd` (and set up separately).
pub fn new_veth(v: &VethSpec<'_>) -> Msg {
    Msg::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
        .ifinfomsg(AF_UNSPEC, 0, IFF_UP, IFF_UP)
        .attr_str(IFLA_IFNAME, v.name)
        .attr_if(v.mtu != 0, IFLA_MTU, &v.mtu.to_ne_bytes())
        .attr(IFLA_ADDRESS, &v.mac)
        .begin_nest(IFLA_LINKINFO)
        .attr_str(IFLA_INFO_KIND, "veth")
        .begin_nest(IFLA_INFO_DATA)
        .begin_nest(VETH_INFO_PEER)
        // not up yet: the kernel configures the peer before the pair is
        // linked, and opening an unlinked veth fails with ENOTCONN
        .ifinfomsg(AF_UNSPEC, 0, 0, 0)
        .attr_str(IFLA_IFNAME, v.peer_name)
        .attr_if(v.mtu != 0, IFLA_MTU, &v.mtu.to_ne_bytes())
        .attr_u32(IFLA_NET_NS_FD, v.peer_netns_fd as u32)
        .end_nest()
        .end_nest()
        .end_nest()
}

/// `RTM_NEWLINK` setting a link up by index.
pub fn set_link_up(index: i32) -> Msg {
    Msg::new(RTM_NEWLINK, NLM_F_ACK).ifinfomsg(AF_UNSPEC, index, IFF_UP, IFF_UP)
}

/// `RTM_DELLINK` by name.
pub fn del_link_by_name(name: &str) -> Msg {
    Msg::new(RTM_DELLINK, NLM_F_ACK)
        .ifinfomsg(AF_UNSPEC, 0, 0, 0)
        .attr_str(IFLA_IFNAME, name)
}

/// `RTM_GETLINK` by name (one link, not a dump).
pub fn get_link_by_name(name: &str) -> Msg {
    Msg::new(RTM_GETLINK, NLM_F_ACK)
        .ifinfomsg(AF_UNSPEC, 0, 0, 0)
        .attr_str(IFLA_IFNAME, name)
        .attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
}

/// `RTM_GETLINK` by index.
pub fn get_link_by_index(index: u32) -> Msg {
    Msg::new(RTM_GETLINK, NLM_F_ACK)
        .ifinfomsg(AF_UNSPEC, index as i32, 0, 0)
        .attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
}

/// `RTM_GETLINK` dump of all links.
pub fn dump_links() -> Msg {
    Msg::new(RTM_GETLINK, NLM_F_DUMP)
        .ifinfomsg(AF_UNSPEC, 0, 0, 0)
        .attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
}

/// `RTM_NEWADDR` (create or replace) of `ip/prefixlen` on `index`; IPv6
/// addresses skip duplicate address detection so they are usable at once.
pub fn new_addr(index: u32, ip: IpAddr, prefixlen: u8) -> Msg {
    let m = Msg::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
    match ip {
        IpAddr::V4(_) => m
            .ifaddrmsg(AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
            .attr_ip(IFA_LOCAL, ip)
            .attr_ip(IFA_ADDRESS, ip),
        IpAddr::V6(_) => m
            .ifaddrmsg(
                AF_INET6,
                prefixlen,
                IFA_F_NODAD as u8,
                RT_SCOPE_UNIVERSE,
                index,
            )
            .attr_ip(IFA_ADDRESS, ip)
            .attr_u32(IFA_FLAGS, IFA_F_NODAD),
    }
}

/// `RTM_GETADDR` dump of one family's addresses on one link (filtered by the
/// kernel under strict checking).
pub fn dump_addrs(family: u8, index: u32) -> Msg {
    Msg::new(RTM_GETADDR, NLM_F_DUMP).ifaddrmsg(family, 0, 0, 0, index)
}

/// A route to add to the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    pub dst: IpAddr,
    pub dst_len: u8,
    pub gateway: Option<IpAddr>,
    pub oif: u32,
    pub scope: u8,
}

impl RouteSpec {
    /// A host route (`/32` or `/128`) on a link, no gateway.
    pub fn host(dst: IpAddr, oif: u32) -> Self {
        RouteSpec {
            dst,
            dst_len: full_len(dst),
            gateway: None,
            oif,
            scope: match dst {
                IpAddr::V4(_) => RT_SCOPE_LINK,
                IpAddr::V6(_) => RT_SCOPE_UNIVERSE,
            },
        }
    }

    /// A default route via `gateway` on a link.
    pub fn default_via(gateway: IpAddr, oif: u32) -> Self {
        let dst = match gateway {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        RouteSpec {
            dst,
            dst_len: 0,
            gateway: Some(gateway),
            oif,
            scope: RT_SCOPE_UNIVERSE,
        }
    }
}

/// `RTM_NEWROUTE` with `NLM_F_REPLACE` (idempotent) in the main table.
pub fn new_route(r: &RouteSpec) -> Msg {
    let mut m = Msg::new(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE).rtmsg(
        family_of(r.dst),
        r.dst_len,
        RT_TABLE_MAIN,
        RTPROT_STATIC,
        r.scope,
        RTN_UNICAST,
        0,
    );
    if r.dst_len > 0 {
        m = m.attr_ip(RTA_DST, r.dst);
    }
    if let Some(gw) = r.gateway {
        m = m.attr_ip(RTA_GATEWAY, gw);
    }
    m.attr_u32(RTA_OIF, r.oif)
}

/// `RTM_GETROUTE` for the main-table FIB entry that `dst` matches
/// (`ip route get fibmatch`).
pub fn get_route_fibmatch(dst: IpAddr) -> Msg {
    Msg::new(RTM_GETROUTE, NLM_F_ACK)
        .rtmsg(family_of(dst), full_len(dst), 0, 0, 0, 0, RTM_F_FIB_MATCH)
        .attr_ip(RTA_DST, dst)
}

/// `RTM_GETROUTE` dump of one family's routes.
/// `RTM_GETQDISC` dump of every qdisc in the netns.
pub fn dump_qdiscs() -> Msg {
    // struct tcmsg: family, 3 bytes pad, ifindex, handle, parent, info
    Msg::new(RTM_GETQDISC, NLM_F_DUMP).raw(&[0u8; 20])
}

/// One qdisc of a dump: the ifindex it sits on and its kind (`noqueue`,
/// `tbf`, `ingress`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QdiscMsg {
    pub ifindex: u32,
    pub kind: String,
}

pub fn parse_qdisc(payload: &[u8]) -> Option<QdiscMsg> {
    if payload.len() < 20 {
        return None;
    }
    let ifindex = u32::from_ne_bytes(payload[4..8].try_into().ok()?);
    let kind = attrs(&payload[20..])
        .find(|(ty, _)| *ty == TCA_KIND)
        .map(|(_, v)| {
            String::from_utf8_lossy(v)
                .trim_end_matches('\0')
                .to_string()
        })?;
    Some(QdiscMsg { ifindex, kind })
}

pub fn dump_routes(family: u8) -> Msg {
    Msg::new(RTM_GETROUTE, NLM_F_DUMP).rtmsg(family, 0, 0, 0, 0, 0, 0)
}

/// `RTM_NEWNEIGH` (create or replace) of a permanent neighbour.
pub fn new_neigh(ifindex: u32, ip: IpAddr, mac: [u8; 6]) -> Msg {
    Msg::new(RTM_NEWNEIGH, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)
        .ndmsg(family_of(ip), ifindex as i32, NUD_PERMANENT, 0, 0)
        .attr_ip(NDA_DST, ip)
        .attr(NDA_LLADDR, &mac)
}

/// `RTM_GETNEIGH` dump of one family's neighbours, filtered to one link by
/// the kernel under strict checking (0: all links).
pub fn dump_neighs(family: u8, ifindex: u32) -> Msg {
    Msg::new(RTM_GETNEIGH, NLM_F_DUMP).ndmsg(family, ifindex as i32, 0, 0, 0)
}

/// `RTM_GETNEIGH` for one neighbour (`ip neigh get`).
pub fn get_neigh(ifindex: u32, ip: IpAddr) -> Msg {
    Msg::new(RTM_GETNEIGH, NLM_F_ACK)
        .ndmsg(family_of(ip), ifindex as i32, 0, 0, 0)
        .attr_ip(NDA_DST, ip)
}

/// `RTM_DELNEIGH` of an IP neighbour.
pub fn del_neigh(ifindex: u32, ip: IpAddr) -> Msg {
    Msg::new(RTM_DELNEIGH, NLM_F_ACK)
        .ndmsg(family_of(ip), ifindex as i32, 0, 0, 0)
        .attr_ip(NDA_DST, ip)
}

/// `RTM_GETNEIGH` dump of one link's neighbours of one family: IP families
/// are filtered with `NDA_IFINDEX` (strict checking wants `ndm_ifindex` 0),
/// the bridge FDB (`AF_BRIDGE`) with `ndm_ifindex`.
pub fn dump_neighs_on(family: u8, ifindex: u32) -> Msg {
    if family == AF_BRIDGE {
        Msg::new(RTM_GETNEIGH, NLM_F_DUMP).ndmsg(family, ifindex as i32, 0, 0, 0)
    } else {
        Msg::new(RTM_GETNEIGH, NLM_F_DUMP)
            .ndmsg(family, 0, 0, 0, 0)
            .attr_u32(NDA_IFINDEX, ifindex)
    }
}

/// `RTM_NEWNEIGH` (create or replace) of a static VXLAN FDB entry: frames to
/// `mac` leave `ifindex` in UDP to `dst` (`bridge fdb replace MAC dev D dst
/// IP self permanent`).
pub fn new_fdb(ifindex: u32, mac: [u8; 6], dst: IpAddr) -> Msg {
    Msg::new(RTM_NEWNEIGH, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)
        .ndmsg(AF_BRIDGE, ifindex as i32, NUD_PERMANENT, NTF_SELF, 0)
        .attr(NDA_LLADDR, &mac)
        .attr_ip(NDA_DST, dst)
}

/// `RTM_DELNEIGH` of one remote of a VXLAN FDB entry.
pub fn del_fdb(ifindex: u32, mac: [u8; 6], dst: IpAddr) -> Msg {
    Msg::new(RTM_DELNEIGH, NLM_F_ACK)
        .ndmsg(AF_BRIDGE, ifindex as i32, 0, NTF_SELF, 0)
        .attr(NDA_LLADDR, &mac)
        .attr_ip(NDA_DST, dst)
}

/// Parameters of a VXLAN device.
#[derive(Debug, Clone)]
pub struct VxlanSpec<'a> {
    pub name: &'a str,
    pub vni: u32,
    pub port: u16,
    pub local: Option<IpAddr>,
    /// The underlay device's ifindex.
    pub link: Option<u32>,
    /// 0: the kernel's default.
    pub mtu: u32,
}

/// `RTM_NEWLINK` creating a VXLAN device, up: no learning, no group, no
/// default remote (every destination comes from a static FDB entry).
pub fn new_vxlan(v: &VxlanSpec<'_>) -> Msg {
    let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
        .ifinfomsg(AF_UNSPEC, 0, IFF_UP, IFF_UP)
        .attr_str(IFLA_IFNAME, v.name)
        .attr_if(v.mtu != 0, IFLA_MTU, &v.mtu.to_ne_bytes())
        .begin_nest(IFLA_LINKINFO)
        .attr_str(IFLA_INFO_KIND, "vxlan")
        .begin_nest(IFLA_INFO_DATA)
        .attr_u32(IFLA_VXLAN_ID, v.vni)
        .attr(IFLA_VXLAN_LEARNING, &[0])
        .attr(IFLA_VXLAN_PORT, &v.port.to_be_bytes());
    match v.local {
        Some(IpAddr::V4(a)) => m = m.attr(IFLA_VXLAN_LOCAL, &a.octets()),
        Some(IpAddr::V6(a)) => m = m.attr(IFLA_VXLAN_LOCAL6, &a.octets()),
        None => {}
    }
    if let Some(link) = v.link {
        m = m.attr_u32(IFLA_VXLAN_LINK, link);
    }
    m.end_nest().end_nest()
}

/// `RTM_NEWLINK` setting a link's MTU and up.
pub fn set_link_mtu_up(index: u32, mtu: u32) -> Msg {
    Msg::new(RTM_NEWLINK, NLM_F_ACK)
        .ifinfomsg(AF_UNSPEC, index as i32, IFF_UP, IFF_UP)
        .attr_u32(IFLA_MTU, mtu)
}

/// A route weft makes to another node's pod block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerRoute {
    pub dst: IpAddr,
    pub dst_len: u8,
    pub gateway: IpAddr,
    /// The device; `None` lets the kernel resolve the gateway (native mode).
    pub oif: Option<u32>,
    pub onlink: bool,
}

/// `RTM_NEWROUTE` of a [`PeerRoute`] in the main table with protocol
/// [`RTPROT_WEFT`]; `NLM_F_EXCL`, so a route of the same prefix and metric
/// that someone else made is never replaced (the request fails with EEXIST).
pub fn new_peer_route(r: &PeerRoute) -> Msg {
    let flags = if r.onlink { RTNH_F_ONLINK } else { 0 };
    let m = Msg::new(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
        .rtmsg(
            family_of(r.dst),
            r.dst_len,
            RT_TABLE_MAIN,
            RTPROT_WEFT,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
            flags,
        )
        .attr_ip(RTA_DST, r.dst)
        .attr_ip(RTA_GATEWAY, r.gateway);
    match r.oif {
        Some(oif) => m.attr_u32(RTA_OIF, oif),
        None => m,
    }
}

/// `RTM_DELROUTE` of exactly the dumped route `r` (prefix, protocol, metric,
/// gateway, device): the kernel matches every given field, so only that
/// route goes.
pub fn del_route(r: &RouteMsg) -> Msg {
    let mut m = Msg::new(RTM_DELROUTE, NLM_F_ACK).rtmsg(
        r.family,
        r.dst_len,
        RT_TABLE_MAIN,
        r.protocol,
        RT_SCOPE_NOWHERE,
        r.rtype,
        0,
    );
    if let Some(dst) = r.dst {
        m = m.attr_ip(RTA_DST, dst);
    }
    if let Some(gw) = r.gateway {
        m = m.attr_ip(RTA_GATEWAY, gw);
    }
    if let Some(oif) = r.oif {
        m = m.attr_u32(RTA_OIF, oif);
    }
    m.attr_u32(RTA_PRIORITY, r.priority)
        .attr_u32(RTA_TABLE, r.table)
}
