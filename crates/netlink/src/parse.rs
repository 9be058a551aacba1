//! Views of the kernel's answers: the few fields weft reads, taken from
//! `netlink-packet-route`'s decoded messages. Each returns `None` for a
//! message of another kind.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
use netlink_packet_route::route::{RouteAddress, RouteAttribute};
use netlink_packet_route::tc::TcAttribute;
use netlink_packet_route::RouteNetlinkMessage as M;

use crate::consts::*;
use crate::msg::Message;

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

pub fn parse_link(m: &Message) -> Option<LinkMsg> {
    let (M::NewLink(l) | M::GetLink(l) | M::DelLink(l) | M::SetLink(l)) = m else {
        return None;
    };
    let mut v = LinkMsg {
        index: l.header.index,
        flags: l.header.flags.bits(),
        name: String::new(),
        mtu: 0,
        mac: None,
        kind: None,
        link: None,
        link_netnsid: None,
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => v.name = n.clone(),
            LinkAttribute::Mtu(mtu) => v.mtu = *mtu,
            LinkAttribute::Address(mac) => v.mac = <[u8; 6]>::try_from(&mac[..]).ok(),
            LinkAttribute::Link(i) => v.link = Some(*i),
            LinkAttribute::LinkNetNsId(i) => v.link_netnsid = Some(*i),
            LinkAttribute::LinkInfo(infos) => {
                v.kind = infos.iter().find_map(|i| match i {
                    // Display is the kernel's name (`veth`, `vxlan`, ...)
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    Some(v)
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

/// The VXLAN settings of a link message; `None` unless its kind is `vxlan`.
pub fn parse_vxlan(m: &Message) -> Option<VxlanInfo> {
    let (M::NewLink(l) | M::GetLink(l) | M::DelLink(l) | M::SetLink(l)) = m else {
        return None;
    };
    let infos = l.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(i) => Some(i),
        _ => None,
    })?;
    if !infos.contains(&LinkInfo::Kind(InfoKind::Vxlan)) {
        return None;
    }
    let mut v = VxlanInfo {
        vni: 0,
        port: 0,
        local: None,
        link: None,
        learning: true,
    };
    let data = infos.iter().find_map(|i| match i {
        LinkInfo::Data(InfoData::Vxlan(d)) => Some(&d[..]),
        _ => None,
    });
    for a in data.unwrap_or_default() {
        match a {
            InfoVxlan::Id(id) => v.vni = *id,
            InfoVxlan::Port(p) => v.port = *p,
            InfoVxlan::Local(a) => v.local = Some(IpAddr::V4(*a)),
            InfoVxlan::Local6(a) => v.local = Some(IpAddr::V6(*a)),
            InfoVxlan::Link(i) => v.link = Some(*i).filter(|&i| i != 0),
            InfoVxlan::Learning(on) => v.learning = *on,
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

pub fn parse_addr(m: &Message) -> Option<AddrMsg> {
    let (M::NewAddress(a) | M::GetAddress(a) | M::DelAddress(a)) = m else {
        return None;
    };
    let mut local = None;
    let mut address = None;
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    Some(AddrMsg {
        index: a.header.index,
        prefixlen: a.header.prefix_len,
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

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

pub fn parse_route(m: &Message) -> Option<RouteMsg> {
    let (M::NewRoute(r) | M::GetRoute(r) | M::DelRoute(r)) = m else {
        return None;
    };
    let h = &r.header;
    let mut v = RouteMsg {
        family: h.address_family.into(),
        dst_len: h.destination_prefix_length,
        table: h.table.into(),
        protocol: h.protocol.into(),
        rtype: h.kind.into(),
        flags: h.flags.bits(),
        dst: None,
        gateway: None,
        oif: None,
        priority: 0,
    };
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => v.dst = route_ip(d),
            RouteAttribute::Gateway(g) => v.gateway = route_ip(g),
            RouteAttribute::Oif(i) => v.oif = Some(*i),
            RouteAttribute::Table(t) => v.table = *t,
            RouteAttribute::Priority(p) => v.priority = *p,
            RouteAttribute::MultiPath(hops) if v.oif.is_none() => {
                v.oif = hops.first().map(|h| h.interface_index).filter(|&i| i != 0);
            }
            _ => {}
        }
    }
    Some(v)
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

pub fn parse_neigh(m: &Message) -> Option<NeighMsg> {
    let (M::NewNeighbour(n) | M::GetNeighbour(n) | M::DelNeighbour(n)) = m else {
        return None;
    };
    let mut v = NeighMsg {
        family: n.header.family.into(),
        ifindex: n.header.ifindex,
        state: n.header.state.into(),
        flags: n.header.flags.bits(),
        dst: None,
        lladdr: None,
    };
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(d) => {
                v.dst = match d {
                    NeighbourAddress::Inet(a) => Some(IpAddr::V4(*a)),
                    NeighbourAddress::Inet6(a) => Some(IpAddr::V6(*a)),
                    // a VXLAN FDB entry (AF_BRIDGE) has a remote of either
                    // family, told by its length; the crate keeps it raw
                    NeighbourAddress::Other(b) => ip_of_len(b),
                    _ => None,
                }
            }
            NeighbourAttribute::LinkLayerAddress(mac) => {
                v.lladdr = <[u8; 6]>::try_from(&mac[..]).ok()
            }
            _ => {}
        }
    }
    Some(v)
}

fn ip_of_len(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

/// One qdisc of a dump: the ifindex it sits on and its kind (`noqueue`,
/// `tbf`, `ingress`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QdiscMsg {
    pub ifindex: u32,
    pub kind: String,
}

pub fn parse_qdisc(m: &Message) -> Option<QdiscMsg> {
    let (M::NewQueueDiscipline(t) | M::GetQueueDiscipline(t)) = m else {
        return None;
    };
    let kind = t.attributes.iter().find_map(|a| match a {
        TcAttribute::Kind(k) => Some(k.clone()),
        _ => None,
    })?;
    Some(QdiscMsg {
        ifindex: t.header.index as u32,
        kind,
    })
}
