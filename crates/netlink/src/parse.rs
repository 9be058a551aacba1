//! Decoding the kernel's answers into typed messages.

use std::net::IpAddr;

use crate::consts::*;
use crate::msg::*;

/// A link from an `RTM_NEWLINK` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkMsg {
    pub index: u32,
    pub flags: u32,
    pub name: String,
    pub mtu: u32,
    pub mac: Option<[u8; 6]>,
    /// `IFLA_INFO_KIND`, e.g. `veth`.
    pub kind: Option<String>,
    /// `IFLA_LINK`: for a veth, the peer's ifindex (in the peer's netns).
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the peer's netns, as an id of this netns.
    pub link_netnsid: Option<i32>,
}

impl LinkMsg {
    pub fn is_up(&self) -> bool {
        self.flags & IFF_UP != 0
    }
}

pub fn parse_link(payload: &[u8]) -> Option<LinkMsg> {
    if payload.len() < 16 {
        return None;
    }
    let index = u32::from_ne_bytes(payload[4..8].try_into().ok()?);
    let flags = u32::from_ne_bytes(payload[8..12].try_into().ok()?);
    let mut l = LinkMsg {
        index,
        flags,
        name: String::new(),
        mtu: 0,
        mac: None,
        kind: None,
        link: None,
        link_netnsid: None,
    };
    for (ty, p) in attrs(&payload[16..]) {
        match ty {
            IFLA_IFNAME => l.name = str_of(p),
            IFLA_MTU => l.mtu = u32_of(p).unwrap_or(0),
            IFLA_ADDRESS => l.mac = <[u8; 6]>::try_from(p).ok(),
            IFLA_LINK => l.link = u32_of(p),
            IFLA_LINK_NETNSID => l.link_netnsid = i32_of(p),
            IFLA_LINKINFO => l.kind = find_attr(p, IFLA_INFO_KIND).map(str_of),
            _ => {}
        }
    }
    Some(l)
}

/// The VXLAN settings of a link (`IFLA_INFO_DATA` of kind `vxlan`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanInfo {
    pub vni: u32,
    /// The UDP destination port (host order).
    pub port: u16,
    /// `IFLA_VXLAN_LOCAL` or `IFLA_VXLAN_LOCAL6`.
    pub local: Option<IpAddr>,
    /// `IFLA_VXLAN_LINK`: the underlay device, 0 or absent for none.
    pub link: Option<u32>,
    pub learning: bool,
}

/// The VXLAN settings of an `RTM_NEWLINK` payload; `None` unless its kind is
/// `vxlan`.
pub fn parse_vxlan(payload: &[u8]) -> Option<VxlanInfo> {
    let info = find_attr(payload.get(16..)?, IFLA_LINKINFO)?;
    if find_attr(info, IFLA_INFO_KIND).map(str_of).as_deref() != Some("vxlan") {
        return None;
    }
    let mut v = VxlanInfo {
        vni: 0,
        port: 0,
        local: None,
        link: None,
        learning: true,
    };
    for (ty, p) in attrs(find_attr(info, IFLA_INFO_DATA).unwrap_or(&[])) {
        match ty {
            IFLA_VXLAN_ID => v.vni = u32_of(p).unwrap_or(0),
            IFLA_VXLAN_PORT => v.port = p.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]])),
            IFLA_VXLAN_LOCAL => v.local = ip_of(AF_INET, p),
            IFLA_VXLAN_LOCAL6 => v.local = ip_of(AF_INET6, p),
            IFLA_VXLAN_LINK => v.link = u32_of(p).filter(|&i| i != 0),
            IFLA_VXLAN_LEARNING => v.learning = p.first().is_some_and(|&b| b != 0),
            _ => {}
        }
    }
    Some(v)
}

/// An address from an `RTM_NEWADDR` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrMsg {
    pub index: u32,
    pub prefixlen: u8,
    pub addr: IpAddr,
}

pub fn parse_addr(payload: &[u8]) -> Option<AddrMsg> {
    if payload.len() < 8 {
        return None;
    }
    let family = payload[0];
    let prefixlen = payload[1];
    let index = u32::from_ne_bytes(payload[4..8].try_into().ok()?);
    let mut local = None;
    let mut address = None;
    for (ty, p) in attrs(&payload[8..]) {
        match ty {
            IFA_LOCAL => local = ip_of(family, p),
            IFA_ADDRESS => address = ip_of(family, p),
            _ => {}
        }
    }
    Some(AddrMsg {
        index,
        prefixlen,
        addr: local.or(address)?,
    })
}

/// A route from an `RTM_NEWROUTE` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMsg {
    pub family: u8,
    pub dst_len: u8,
    pub table: u32,
    /// `rtm_protocol`: who made the route ([`RTPROT_WEFT`] for weft's).
    pub protocol: u8,
    pub rtype: u8,
    /// `rtm_flags` (e.g. [`RTNH_F_ONLINK`]).
    pub flags: u32,
    pub dst: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
    /// `RTA_OIF`, or the first nexthop's device of a multipath route.
    pub oif: Option<u32>,
    pub priority: u32,
}

pub fn parse_route(payload: &[u8]) -> Option<RouteMsg> {
    if payload.len() < 12 {
        return None;
    }
    let family = payload[0];
    let mut r = RouteMsg {
        family,
        dst_len: payload[1],
        table: payload[4] as u32,
        protocol: payload[5],
        rtype: payload[7],
        flags: u32_of(&payload[8..12])?,
        dst: None,
        gateway: None,
        oif: None,
        priority: 0,
    };
    for (ty, p) in attrs(&payload[12..]) {
        match ty {
            RTA_DST => r.dst = ip_of(family, p),
            RTA_GATEWAY => r.gateway = ip_of(family, p),
            RTA_OIF => r.oif = u32_of(p),
            RTA_TABLE => r.table = u32_of(p).unwrap_or(r.table),
            RTA_PRIORITY => r.priority = u32_of(p).unwrap_or(0),
            RTA_MULTIPATH if r.oif.is_none() => {
                // struct rtnexthop { u16 len; u8 flags; u8 hops; i32 ifindex; }
                r.oif = p.get(4..8).and_then(u32_of).filter(|&i| i != 0);
            }
            _ => {}
        }
    }
    Some(r)
}

/// A neighbour from an `RTM_NEWNEIGH` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighMsg {
    pub family: u8,
    pub ifindex: u32,
    pub state: u16,
    /// `ndm_flags` (e.g. [`NTF_SELF`]).
    pub flags: u8,
    pub dst: Option<IpAddr>,
    pub lladdr: Option<[u8; 6]>,
}

pub fn parse_neigh(payload: &[u8]) -> Option<NeighMsg> {
    if payload.len() < 12 {
        return None;
    }
    let family = payload[0];
    let mut n = NeighMsg {
        family,
        ifindex: u32::from_ne_bytes(payload[4..8].try_into().ok()?),
        state: u16::from_ne_bytes([payload[8], payload[9]]),
        flags: payload[10],
        dst: None,
        lladdr: None,
    };
    for (ty, p) in attrs(&payload[12..]) {
        match ty {
            NDA_DST => n.dst = ip_of(family, p),
            NDA_LLADDR => n.lladdr = <[u8; 6]>::try_from(p).ok(),
            _ => {}
        }
    }
    Some(n)
}

// ---- request builders ----

pub(crate) fn family_of(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

pub(crate) fn full_len(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}
