//! Constants of linux/netlink.h, linux/rtnetlink.h, linux/if_link.h,
//! linux/if_addr.h, linux/neighbour.h and linux/veth.h.

// ---- constants (from linux/netlink.h, linux/rtnetlink.h, linux/if_link.h,
// linux/if_addr.h, linux/neighbour.h, linux/veth.h) ----

pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
/// In an `NLMSG_ERROR`: the original request is not echoed in full.
pub const NLM_F_CAPPED: u16 = 0x100;
/// In an `NLMSG_ERROR`: extended-ack attributes follow.
pub const NLM_F_ACK_TLVS: u16 = 0x200;
pub const NLMSGERR_ATTR_MSG: u16 = 1;

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_DELADDR: u16 = 21;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_DELROUTE: u16 = 25;
pub const RTM_GETROUTE: u16 = 26;
pub const RTM_NEWNEIGH: u16 = 28;
pub const RTM_DELNEIGH: u16 = 29;
pub const RTM_GETNEIGH: u16 = 30;
pub const RTM_GETQDISC: u16 = 38;
pub const TCA_KIND: u16 = 1;

pub const IFLA_ADDRESS: u16 = 1;
pub const IFLA_IFNAME: u16 = 3;
pub const IFLA_MTU: u16 = 4;
pub const IFLA_LINK: u16 = 5;
pub const IFLA_LINKINFO: u16 = 18;
pub const IFLA_NET_NS_FD: u16 = 28;
pub const IFLA_EXT_MASK: u16 = 29;
pub const IFLA_LINK_NETNSID: u16 = 37;
pub const IFLA_INFO_KIND: u16 = 1;
pub const IFLA_INFO_DATA: u16 = 2;
pub const VETH_INFO_PEER: u16 = 1;
pub const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;

pub const IFA_ADDRESS: u16 = 1;
pub const IFA_LOCAL: u16 = 2;
pub const IFA_FLAGS: u16 = 8;
pub const IFA_F_NODAD: u32 = 0x02;

pub const RTA_DST: u16 = 1;
pub const RTA_OIF: u16 = 4;
pub const RTA_GATEWAY: u16 = 5;
pub const RTA_PRIORITY: u16 = 6;
pub const RTA_MULTIPATH: u16 = 9;
pub const RTA_TABLE: u16 = 15;
pub const RT_TABLE_MAIN: u8 = 254;
pub const RTPROT_STATIC: u8 = 4;
pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_LINK: u8 = 253;
pub const RTN_UNICAST: u8 = 1;
/// `rtm_flags`: answer a route get with the FIB entry that matched.
pub const RTM_F_FIB_MATCH: u32 = 0x2000;

pub const NDA_DST: u16 = 1;
pub const NDA_LLADDR: u16 = 2;
pub const NDA_IFINDEX: u16 = 8;
pub const NUD_PERMANENT: u16 = 0x80;
/// `ndm_flags`: the entry is the device's own (a VXLAN FDB entry), not its
/// bridge master's.
pub const NTF_SELF: u8 = 0x02;
/// `rtm_flags` / `rtnh_flags`: the gateway is on the link, whatever the
/// routes to it say.
pub const RTNH_F_ONLINK: u32 = 0x4;
/// A wildcard scope, for deletes.
pub const RT_SCOPE_NOWHERE: u8 = 255;

/// The rtnetlink protocol number (`rtm_protocol`) of the routes weft makes
/// to other nodes' pod blocks: 201. Neither the kernel (`linux/rtnetlink.h`
/// ends at `RTPROT_EIGRP` 192) nor iproute2's `rt_protos` (`eigrp` 192 is its
/// highest) use 200 and above; routing daemons are told to leave 200-254 to
/// local use. `sync_peers` prunes only routes of this protocol, and
/// `ip route show proto 201` lists them.
pub const RTPROT_WEFT: u8 = 201;

// linux/if_link.h: IFLA_VXLAN_*
pub const IFLA_VXLAN_ID: u16 = 1;
pub const IFLA_VXLAN_LINK: u16 = 3;
pub const IFLA_VXLAN_LOCAL: u16 = 4;
pub const IFLA_VXLAN_LEARNING: u16 = 7;
pub const IFLA_VXLAN_PORT: u16 = 15;
pub const IFLA_VXLAN_LOCAL6: u16 = 17;

pub const IFF_UP: u32 = 0x1;

pub const AF_UNSPEC: u8 = 0;
pub const AF_BRIDGE: u8 = libc::AF_BRIDGE as u8;
pub const AF_INET: u8 = libc::AF_INET as u8;
pub const AF_INET6: u8 = libc::AF_INET6 as u8;

pub(crate) const SOL_NETLINK: libc::c_int = 270;
pub(crate) const NETLINK_CAP_ACK: libc::c_int = 10;
pub(crate) const NETLINK_EXT_ACK: libc::c_int = 11;
pub(crate) const NETLINK_GET_STRICT_CHK: libc::c_int = 12;

pub(crate) const NLA_TYPE_MASK: u16 = 0x3fff;
#[cfg(test)]
pub(crate) const NLA_F_NESTED: u16 = 0x8000;

/// The name of a request type, for error messages.
pub fn msg_type_name(ty: u16) -> &'static str {
    match ty {
        RTM_NEWLINK => "RTM_NEWLINK",
        RTM_DELLINK => "RTM_DELLINK",
        RTM_GETLINK => "RTM_GETLINK",
        RTM_NEWADDR => "RTM_NEWADDR",
        RTM_DELADDR => "RTM_DELADDR",
        RTM_GETADDR => "RTM_GETADDR",
        RTM_NEWROUTE => "RTM_NEWROUTE",
        RTM_DELROUTE => "RTM_DELROUTE",
        RTM_GETROUTE => "RTM_GETROUTE",
        RTM_NEWNEIGH => "RTM_NEWNEIGH",
        RTM_DELNEIGH => "RTM_DELNEIGH",
        RTM_GETNEIGH => "RTM_GETNEIGH",
        _ => "RTM_?",
    }
}

pub(crate) const fn align4(n: usize) -> usize {
    (n + 3) & !3
}
