//! Builders of the requests the data path sends, as `netlink-packet-route`
//! messages wrapped in a [`Msg`] with their `NLM_F_*` flags.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::tc::TcMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage as M};

use crate::consts::*;
use crate::msg::Msg;
use crate::parse::RouteMsg;

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

/// An `ifinfomsg` for `index` (0: named by attribute), set up when `up`.
fn link(index: u32, up: bool) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    if up {
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
    }
    m
}

/// `RTM_NEWLINK` creating a veth pair, the first end up; the peer is created
/// directly in the netns behind `peer_netns_fd` (and set up separately).
pub fn new_veth(v: &VethSpec<'_>) -> Msg {
    // not up yet: the kernel configures the peer before the pair is linked,
    // and opening an unlinked veth fails with ENOTCONN
    let mut peer = link(0, false);
    peer.attributes
        .push(LinkAttribute::IfName(v.peer_name.into()));
    if v.mtu != 0 {
        peer.attributes.push(LinkAttribute::Mtu(v.mtu));
    }
    peer.attributes
        .push(LinkAttribute::NetNsFd(v.peer_netns_fd));
    let mut m = link(0, true);
    m.attributes.push(LinkAttribute::IfName(v.name.into()));
    if v.mtu != 0 {
        m.attributes.push(LinkAttribute::Mtu(v.mtu));
    }
    m.attributes.push(LinkAttribute::Address(v.mac.to_vec()));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    Msg::new(M::NewLink(m), NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
}

/// `RTM_NEWLINK` setting a link up by index.
pub fn set_link_up(index: i32) -> Msg {
    Msg::new(M::NewLink(link(index as u32, true)), NLM_F_ACK)
}

/// `RTM_DELLINK` by name.
pub fn del_link_by_name(name: &str) -> Msg {
    let mut m = link(0, false);
    m.attributes.push(LinkAttribute::IfName(name.into()));
    Msg::new(M::DelLink(m), NLM_F_ACK)
}

/// Answers without statistics: smaller, and all weft reads is configuration.
fn skip_stats(mut m: LinkMessage) -> LinkMessage {
    m.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    m
}

/// `RTM_GETLINK` by name (one link, not a dump).
pub fn get_link_by_name(name: &str) -> Msg {
    let mut m = link(0, false);
    m.attributes.push(LinkAttribute::IfName(name.into()));
    Msg::new(M::GetLink(skip_stats(m)), NLM_F_ACK)
}

/// `RTM_GETLINK` by index.
pub fn get_link_by_index(index: u32) -> Msg {
    Msg::new(M::GetLink(skip_stats(link(index, false))), NLM_F_ACK)
}

/// `RTM_GETLINK` dump of all links.
pub fn dump_links() -> Msg {
    Msg::new(M::GetLink(skip_stats(link(0, false))), NLM_F_DUMP)
}

/// `RTM_NEWADDR` (create or replace) of `ip/prefixlen` on `index`; IPv6
/// addresses skip duplicate address detection so they are usable at once.
pub fn new_addr(index: u32, ip: IpAddr, prefixlen: u8) -> Msg {
    let mut m = AddressMessage::default();
    m.header.family = family_of(ip);
    m.header.prefix_len = prefixlen;
    m.header.scope = AddressScope::Universe;
    m.header.index = index;
    match ip {
        IpAddr::V4(_) => {
            m.attributes.push(AddressAttribute::Local(ip));
            m.attributes.push(AddressAttribute::Address(ip));
        }
        IpAddr::V6(_) => {
            m.header.flags = AddressHeaderFlags::Nodad;
            m.attributes.push(AddressAttribute::Address(ip));
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
    }
    Msg::new(M::NewAddress(m), NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)
}

/// `RTM_GETADDR` dump of one family's addresses on one link (filtered by the
/// kernel under strict checking).
pub fn dump_addrs(family: u8, index: u32) -> Msg {
    let mut m = AddressMessage::default();
    m.header.family = family.into();
    m.header.index = index;
    Msg::new(M::GetAddress(m), NLM_F_DUMP)
}

/// A route to add to the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    pub dst: IpAddr,
    pub dst_len: u8,
    pub gateway: Option<IpAddr>,
    pub oif: u32,
    pub scope: RouteScope,
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
                IpAddr::V4(_) => RouteScope::Link,
                IpAddr::V6(_) => RouteScope::Universe,
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
            scope: RouteScope::Universe,
        }
    }
}

/// An `rtmsg` of `family`/`dst_len` in the main table.
fn route(
    family: AddressFamily,
    dst_len: u8,
    protocol: RouteProtocol,
    scope: RouteScope,
) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family;
    m.header.destination_prefix_length = dst_len;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = protocol;
    m.header.scope = scope;
    m.header.kind = RouteType::Unicast;
    m
}

/// `RTM_NEWROUTE` with `NLM_F_REPLACE` (idempotent) in the main table.
pub fn new_route(r: &RouteSpec) -> Msg {
    let mut m = route(family_of(r.dst), r.dst_len, RouteProtocol::Static, r.scope);
    if r.dst_len > 0 {
        m.attributes.push(RouteAttribute::Destination(r.dst.into()));
    }
    if let Some(gw) = r.gateway {
        m.attributes.push(RouteAttribute::Gateway(gw.into()));
    }
    m.attributes.push(RouteAttribute::Oif(r.oif));
    Msg::new(M::NewRoute(m), NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)
}

/// `RTM_GETROUTE` for the main-table FIB entry that `dst` matches
/// (`ip route get fibmatch`).
pub fn get_route_fibmatch(dst: IpAddr) -> Msg {
    let mut m = RouteMessage::default();
    m.header.address_family = family_of(dst);
    m.header.destination_prefix_length = full_len(dst);
    m.header.flags = RouteFlags::FibMatch;
    m.attributes.push(RouteAttribute::Destination(dst.into()));
    Msg::new(M::GetRoute(m), NLM_F_ACK)
}

/// `RTM_GETROUTE` dump of one family's routes.
pub fn dump_routes(family: u8) -> Msg {
    let mut m = RouteMessage::default();
    m.header.address_family = family.into();
    Msg::new(M::GetRoute(m), NLM_F_DUMP)
}

/// `RTM_GETQDISC` dump of every qdisc in the netns.
pub fn dump_qdiscs() -> Msg {
    Msg::new(M::GetQueueDiscipline(TcMessage::default()), NLM_F_DUMP)
}

/// An `ndmsg` of `family` on `ifindex`.
fn neigh(family: AddressFamily, ifindex: u32, state: NeighbourState) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family;
    m.header.ifindex = ifindex;
    m.header.state = state;
    m
}

/// `RTM_NEWNEIGH` (create or replace) of a permanent neighbour.
pub fn new_neigh(ifindex: u32, ip: IpAddr, mac: [u8; 6]) -> Msg {
    let mut m = neigh(family_of(ip), ifindex, NeighbourState::Permanent);
    m.attributes
        .push(NeighbourAttribute::Destination(ip.into()));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    Msg::new(M::NewNeighbour(m), NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)
}

/// `RTM_GETNEIGH` dump of one family's neighbours, filtered to one link by
/// the kernel under strict checking (0: all links).
pub fn dump_neighs(family: u8, ifindex: u32) -> Msg {
    let m = neigh(family.into(), ifindex, NeighbourState::None);
    Msg::new(M::GetNeighbour(m), NLM_F_DUMP)
}

/// `RTM_GETNEIGH` for one neighbour (`ip neigh get`).
pub fn get_neigh(ifindex: u32, ip: IpAddr) -> Msg {
    let mut m = neigh(family_of(ip), ifindex, NeighbourState::None);
    m.attributes
        .push(NeighbourAttribute::Destination(ip.into()));
    Msg::new(M::GetNeighbour(m), NLM_F_ACK)
}

/// `RTM_DELNEIGH` of an IP neighbour.
pub fn del_neigh(ifindex: u32, ip: IpAddr) -> Msg {
    let mut m = neigh(family_of(ip), ifindex, NeighbourState::None);
    m.attributes
        .push(NeighbourAttribute::Destination(ip.into()));
    Msg::new(M::DelNeighbour(m), NLM_F_ACK)
}

/// `RTM_GETNEIGH` dump of one link's neighbours of one family: IP families
/// are filtered with `NDA_IFINDEX` (strict checking wants `ndm_ifindex` 0),
/// the bridge FDB (`AF_BRIDGE`) with `ndm_ifindex`.
pub fn dump_neighs_on(family: u8, ifindex: u32) -> Msg {
    if family == AF_BRIDGE {
        return dump_neighs(family, ifindex);
    }
    let mut m = neigh(family.into(), 0, NeighbourState::None);
    m.attributes.push(NeighbourAttribute::IfIndex(ifindex));
    Msg::new(M::GetNeighbour(m), NLM_F_DUMP)
}

/// A VXLAN FDB entry's `ndmsg`: the device's own (`NTF_SELF`), to `mac` via
/// the remote `dst`.
fn fdb(ifindex: u32, mac: [u8; 6], dst: IpAddr, state: NeighbourState) -> NeighbourMessage {
    let mut m = neigh(AddressFamily::Bridge, ifindex, state);
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(dst.into()));
    m
}

/// `RTM_NEWNEIGH` (create or replace) of a static VXLAN FDB entry: frames to
/// `mac` leave `ifindex` in UDP to `dst` (`bridge fdb replace MAC dev D dst
/// IP self permanent`).
pub fn new_fdb(ifindex: u32, mac: [u8; 6], dst: IpAddr) -> Msg {
    Msg::new(
        M::NewNeighbour(fdb(ifindex, mac, dst, NeighbourState::Permanent)),
        NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
    )
}

/// `RTM_DELNEIGH` of one remote of a VXLAN FDB entry.
pub fn del_fdb(ifindex: u32, mac: [u8; 6], dst: IpAddr) -> Msg {
    Msg::new(
        M::DelNeighbour(fdb(ifindex, mac, dst, NeighbourState::None)),
        NLM_F_ACK,
    )
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
    let mut data = vec![
        InfoVxlan::Id(v.vni),
        InfoVxlan::Learning(false),
        InfoVxlan::Port(v.port),
    ];
    match v.local {
        Some(IpAddr::V4(a)) => data.push(InfoVxlan::Local(a)),
        Some(IpAddr::V6(a)) => data.push(InfoVxlan::Local6(a)),
        None => {}
    }
    if let Some(link) = v.link {
        data.push(InfoVxlan::Link(link));
    }
    let mut m = link(0, true);
    m.attributes.push(LinkAttribute::IfName(v.name.into()));
    if v.mtu != 0 {
        m.attributes.push(LinkAttribute::Mtu(v.mtu));
    }
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Vxlan),
        LinkInfo::Data(InfoData::Vxlan(data)),
    ]));
    Msg::new(M::NewLink(m), NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
}

/// `RTM_NEWLINK` setting a link's MTU and up.
pub fn set_link_mtu_up(index: u32, mtu: u32) -> Msg {
    let mut m = link(index, true);
    m.attributes.push(LinkAttribute::Mtu(mtu));
    Msg::new(M::NewLink(m), NLM_F_ACK)
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
    let mut m = route(
        family_of(r.dst),
        r.dst_len,
        RouteProtocol::from(RTPROT_WEFT),
        RouteScope::Universe,
    );
    if r.onlink {
        m.header.flags = RouteFlags::Onlink;
    }
    m.attributes.push(RouteAttribute::Destination(r.dst.into()));
    m.attributes.push(RouteAttribute::Gateway(r.gateway.into()));
    if let Some(oif) = r.oif {
        m.attributes.push(RouteAttribute::Oif(oif));
    }
    Msg::new(M::NewRoute(m), NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
}

/// `RTM_DELROUTE` of exactly the dumped route `r` (prefix, protocol, metric,
/// gateway, device): the kernel matches every given field, so only that
/// route goes.
pub fn del_route(r: &RouteMsg) -> Msg {
    let mut m = route(
        r.family.into(),
        r.dst_len,
        r.protocol.into(),
        // a wildcard scope, for deletes
        RouteScope::NoWhere,
    );
    m.header.kind = r.rtype.into();
    if let Some(dst) = r.dst {
        m.attributes.push(RouteAttribute::Destination(dst.into()));
    }
    if let Some(gw) = r.gateway {
        m.attributes.push(RouteAttribute::Gateway(gw.into()));
    }
    if let Some(oif) = r.oif {
        m.attributes.push(RouteAttribute::Oif(oif));
    }
    m.attributes.push(RouteAttribute::Priority(r.priority));
    m.attributes.push(RouteAttribute::Table(r.table));
    Msg::new(M::DelRoute(m), NLM_F_ACK)
}

pub(crate) fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

pub(crate) fn full_len(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}
