//! The few numbers weft's callers compare answers against, and the names of
//! request types for error messages. Everything else on the wire (message
//! types, attribute numbers, flag bits) is `netlink-packet-route`'s.

use netlink_packet_route::link::LinkFlags;
use netlink_packet_route::neighbour::NeighbourFlags;
use netlink_packet_route::route::{RouteFlags, RouteHeader};
use netlink_packet_route::RouteNetlinkMessage;

pub const AF_UNSPEC: u8 = libc::AF_UNSPEC as u8;
pub const AF_BRIDGE: u8 = libc::AF_BRIDGE as u8;
pub const AF_INET: u8 = libc::AF_INET as u8;
pub const AF_INET6: u8 = libc::AF_INET6 as u8;

pub const RT_TABLE_MAIN: u8 = RouteHeader::RT_TABLE_MAIN;
/// `rtm_type` of an ordinary route (`RouteType::Unicast`).
pub const RTN_UNICAST: u8 = libc::RTN_UNICAST;
/// `ndm_state` bit of a static neighbour or FDB entry
/// (`NeighbourState::Permanent`); the views keep the raw state so a caller
/// can test the bit whatever else the kernel set.
pub const NUD_PERMANENT: u16 = libc::NUD_PERMANENT;
/// `ndm_flags`: the entry is the device's own (a VXLAN FDB entry), not its
/// bridge master's (`NeighbourFlags::Own`).
pub const NTF_SELF: u8 = NeighbourFlags::Own.bits();
/// `rtm_flags`: the gateway is on the link, whatever the routes to it say
/// (`RouteFlags::Onlink`).
pub const RTNH_F_ONLINK: u32 = RouteFlags::Onlink.bits();
/// `IFF_UP` (`LinkFlags::Up`).
pub const IFF_UP: u32 = LinkFlags::Up.bits();

/// The rtnetlink protocol number (`rtm_protocol`) of the routes weft makes
/// to other nodes' pod blocks: 201. Neither the kernel (`linux/rtnetlink.h`
/// ends at `RTPROT_EIGRP` 192) nor iproute2's `rt_protos` (`eigrp` 192 is its
/// highest) use 200 and above; routing daemons are told to leave 200-254 to
/// local use. `sync_peers` prunes only routes of this protocol, and
/// `ip route show proto 201` lists them. On the wire it is
/// `RouteProtocol::Other(201)`: the crate names only the kernel's own.
pub const RTPROT_WEFT: u8 = 201;

/// The name of a request type, for error messages.
pub fn msg_type_name(m: &RouteNetlinkMessage) -> &'static str {
    use RouteNetlinkMessage as M;
    match m {
        M::NewLink(_) => "RTM_NEWLINK",
        M::DelLink(_) => "RTM_DELLINK",
        M::GetLink(_) => "RTM_GETLINK",
        M::NewAddress(_) => "RTM_NEWADDR",
        M::DelAddress(_) => "RTM_DELADDR",
        M::GetAddress(_) => "RTM_GETADDR",
        M::NewRoute(_) => "RTM_NEWROUTE",
        M::DelRoute(_) => "RTM_DELROUTE",
        M::GetRoute(_) => "RTM_GETROUTE",
        M::NewNeighbour(_) => "RTM_NEWNEIGH",
        M::DelNeighbour(_) => "RTM_DELNEIGH",
        M::GetNeighbour(_) => "RTM_GETNEIGH",
        M::GetQueueDiscipline(_) => "RTM_GETQDISC",
        _ => "RTM_?",
    }
}
