//! A small, synchronous rtnetlink client over a raw `AF_NETLINK` socket.
//!
//! Just what the node data path needs: build requests (links, addresses,
//! routes, neighbours) with properly aligned and nested attributes, send them
//! one at a time or as a batch in one `send`, match answers by sequence
//! number, decode `NLMSG_ERROR` (with the kernel's extended-ack message) and
//! read `NLM_F_DUMP` answers.
//!
//! All integers in netlink headers are in host byte order; addresses in
//! attributes are in network byte order (as the bytes of the address).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::DatapathError;

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

const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NETLINK_GET_STRICT_CHK: libc::c_int = 12;

const NLA_TYPE_MASK: u16 = 0x3fff;
#[cfg(test)]
const NLA_F_NESTED: u16 = 0x8000;

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

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

// ---- building messages ----

/// One netlink request under construction: the 16-byte `nlmsghdr`, the family
/// header (`ifinfomsg`, `ifaddrmsg`, `rtmsg`, `ndmsg`) and attributes.
///
/// The length and sequence number are filled in when the message is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    /// A new message of type `ty` with `NLM_F_REQUEST` and the given flags.
    pub fn new(ty: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, set in finish
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: to the kernel
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    pub fn msg_type(&self) -> u16 {
        u16::from_ne_bytes([self.buf[4], self.buf[5]])
    }

    pub fn flags(&self) -> u16 {
        u16::from_ne_bytes([self.buf[6], self.buf[7]])
    }

    /// `struct ifinfomsg` (16 bytes).
    pub fn ifinfomsg(mut self, family: u8, index: i32, flags: u32, change: u32) -> Self {
        self.buf.push(family);
        self.buf.push(0); // __ifi_pad
        self.buf.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&change.to_ne_bytes());
        self
    }

    /// `struct ifaddrmsg` (8 bytes).
    pub fn ifaddrmsg(
        mut self,
        family: u8,
        prefixlen: u8,
        flags: u8,
        scope: u8,
        index: u32,
    ) -> Self {
        self.buf
            .extend_from_slice(&[family, prefixlen, flags, scope]);
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self
    }

    /// `struct rtmsg` (12 bytes).
    #[expect(clippy::too_many_arguments, reason = "one per rtmsg field")]
    pub fn rtmsg(
        mut self,
        family: u8,
        dst_len: u8,
        table: u8,
        protocol: u8,
        scope: u8,
        rtype: u8,
        flags: u32,
    ) -> Self {
        // family, dst_len, src_len, tos, table, protocol, scope, type
        self.buf
            .extend_from_slice(&[family, dst_len, 0, 0, table, protocol, scope, rtype]);
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self
    }

    /// `struct ndmsg` (12 bytes).
    pub fn ndmsg(mut self, family: u8, ifindex: i32, state: u16, flags: u8, ntype: u8) -> Self {
        self.buf.extend_from_slice(&[family, 0, 0, 0]); // family, pad1, pad2
        self.buf.extend_from_slice(&ifindex.to_ne_bytes());
        self.buf.extend_from_slice(&state.to_ne_bytes());
        self.buf.extend_from_slice(&[flags, ntype]);
        self
    }

    /// Raw bytes appended as they are (for family headers not covered above).
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// An attribute: 2-byte length (header + payload, unpadded), 2-byte type,
    /// payload, zero padding to 4 bytes.
    pub fn attr(mut self, ty: u16, payload: &[u8]) -> Self {
        self.push_attr(ty, payload);
        self
    }

    fn push_attr(&mut self, ty: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    /// [`Msg::attr`] when `cond` holds, else nothing.
    pub fn attr_if(self, cond: bool, ty: u16, payload: &[u8]) -> Self {
        if cond {
            self.attr(ty, payload)
        } else {
            self
        }
    }

    pub fn attr_u32(self, ty: u16, v: u32) -> Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    /// A NUL-terminated string attribute (names).
    pub fn attr_str(mut self, ty: u16, s: &str) -> Self {
        let mut p = Vec::with_capacity(s.len() + 1);
        p.extend_from_slice(s.as_bytes());
        p.push(0);
        self.push_attr(ty, &p);
        self
    }

    /// An address attribute: 4 or 16 bytes in network order.
    pub fn attr_ip(self, ty: u16, ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => self.attr(ty, &a.octets()),
            IpAddr::V6(a) => self.attr(ty, &a.octets()),
        }
    }

    /// Opens a nested attribute; close it with [`Msg::end_nest`].
    pub fn begin_nest(mut self, ty: u16) -> Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self
    }

    /// Closes the innermost nested attribute, fixing up its length.
    pub fn end_nest(mut self) -> Self {
        let start = self.nests.pop().expect("end_nest without begin_nest");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// The bytes of the message with its length and sequence number set.
    pub fn finish(&self, seq: u32) -> Vec<u8> {
        let mut b = self.buf.clone();
        self.write_header(&mut b, seq);
        b
    }

    fn write_header(&self, b: &mut [u8], seq: u32) {
        assert!(self.nests.is_empty(), "unclosed nested attribute");
        let len = self.buf.len() as u32;
        b[0..4].copy_from_slice(&len.to_ne_bytes());
        b[8..12].copy_from_slice(&seq.to_ne_bytes());
    }

    fn append_to(&self, out: &mut Vec<u8>, seq: u32) {
        let start = out.len();
        out.extend_from_slice(&self.buf);
        self.write_header(&mut out[start..], seq);
    }
}

// ---- parsing messages ----

/// One received netlink message (borrowing the receive buffer).
#[derive(Debug, Clone, Copy)]
pub struct NlMsg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Splits a buffer into netlink messages. Stops at a malformed header.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = NlMsg<'_>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(rest[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return None;
        }
        let m = NlMsg {
            ty: u16::from_ne_bytes([rest[4], rest[5]]),
            flags: u16::from_ne_bytes([rest[6], rest[7]]),
            seq: u32::from_ne_bytes(rest[8..12].try_into().ok()?),
            payload: &rest[NLMSG_HDRLEN..len],
        };
        rest = &rest[align4(len).min(rest.len())..];
        Some(m)
    })
}

/// Iterates `(type, payload)` over a run of attributes (the nested flag and
/// byte-order flag are masked off the type).
pub fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let ty = u16::from_ne_bytes([rest[2], rest[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > rest.len() {
            return None;
        }
        let payload = &rest[4..len];
        rest = &rest[align4(len).min(rest.len())..];
        Some((ty, payload))
    })
}

fn find_attr(buf: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(buf).find(|(t, _)| *t == ty).map(|(_, p)| p)
}

fn u32_of(p: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(p.get(..4)?.try_into().ok()?))
}

fn i32_of(p: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(p.get(..4)?.try_into().ok()?))
}

fn str_of(p: &[u8]) -> String {
    let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
    String::from_utf8_lossy(&p[..end]).into_owned()
}

fn ip_of(family: u8, p: &[u8]) -> Option<IpAddr> {
    match (family, p.len()) {
        // a VXLAN FDB entry's remote is of either family, told by its length
        (AF_BRIDGE, 4) => ip_of(AF_INET, p),
        (AF_BRIDGE, 16) => ip_of(AF_INET6, p),
        (AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(p).ok()?))),
        (AF_INET6, 16) => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(p).ok()?))),
        _ => None,
    }
}

/// Decodes an `NLMSG_ERROR` payload: the (positive) errno, 0 for an ack, and
/// the extended-ack message if the kernel sent one.
pub fn parse_error(m: &NlMsg<'_>) -> (i32, Option<String>) {
    let errno = i32_of(m.payload).map(|e| -e).unwrap_or(libc::EPROTO);
    let mut detail = None;
    if m.flags & NLM_F_ACK_TLVS != 0 {
        // struct nlmsgerr = error (4) + the original nlmsghdr (16), followed by
        // the original payload unless NLM_F_CAPPED, then the TLVs.
        let mut off = 4 + NLMSG_HDRLEN;
        if m.flags & NLM_F_CAPPED == 0 {
            if let Some(h) = m.payload.get(4..8) {
                let orig_len = u32::from_ne_bytes(h.try_into().unwrap_or([0; 4])) as usize;
                off = 4 + align4(orig_len);
            }
        }
        if let Some(tlvs) = m.payload.get(off..) {
            detail = find_attr(tlvs, NLMSGERR_ATTR_MSG).map(str_of);
        }
    }
    (errno, detail)
}

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

fn family_of(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

fn full_len(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

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

// ---- the socket ----

const RECV_BUF: usize = 64 * 1024;

/// A request in a batch, with what to say about it when it fails.
#[derive(Debug)]
pub struct Request {
    pub msg: Msg,
    pub object: String,
}

impl Request {
    pub fn new(msg: Msg, object: impl Into<String>) -> Self {
        Request {
            msg,
            object: object.into(),
        }
    }

    fn error(&self, errno: i32, detail: Option<String>) -> DatapathError {
        DatapathError::Netlink {
            op: msg_type_name(self.msg.msg_type()),
            object: self.object.clone(),
            errno,
            detail,
        }
    }
}

/// A `NETLINK_ROUTE` socket, bound to the netns of the thread that opened it.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
    /// A send or receive failed or an answer was missing: unread answers may
    /// be queued, so the socket should not be reused.
    broken: bool,
}

impl Socket {
    /// Opens a socket in the calling thread's current network namespace.
    pub fn open() -> Result<Self, DatapathError> {
        // SAFETY: socket(2) with constant arguments; the returned fd is checked
        // and then owned by exactly one OwnedFd.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(DatapathError::syscall(
                "socket",
                "AF_NETLINK NETLINK_ROUTE",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: fd is a freshly created, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        for (opt, name) in [
            (NETLINK_EXT_ACK, "NETLINK_EXT_ACK"),
            (NETLINK_CAP_ACK, "NETLINK_CAP_ACK"),
            (NETLINK_GET_STRICT_CHK, "NETLINK_GET_STRICT_CHK"),
        ] {
            setsockopt_int(&fd, SOL_NETLINK, opt, 1)
                .map_err(|e| DatapathError::syscall("setsockopt", name, e))?;
        }
        // A bounded wait: rtnetlink answers synchronously, so this only
        // matters if something is badly wrong.
        let tv = libc::timeval {
            tv_sec: 10,
            tv_usec: 0,
        };
        // SAFETY: fd is valid; tv is a valid timeval that outlives the call and
        // its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(DatapathError::syscall(
                "setsockopt",
                "SO_RCVTIMEO",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: an all-zero sockaddr_nl is valid (nl_pid 0: the kernel picks
        // the port id).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: fd is valid; addr is a valid sockaddr_nl and its size is passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(DatapathError::syscall(
                "bind",
                "AF_NETLINK",
                io::Error::last_os_error(),
            ));
        }
        Ok(Socket {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUF],
            broken: false,
        })
    }

    /// Whether the socket may hold stray answers (see [`Socket::request`]).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        if self.seq == 0 {
            self.seq = 1;
        }
        self.seq
    }

    fn send_bytes(&mut self, bytes: &[u8], what: &str) -> Result<(), DatapathError> {
        // SAFETY: an all-zero sockaddr_nl addresses the kernel (pid 0).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        loop {
            // SAFETY: fd is valid; bytes is a live buffer of the given length;
            // addr is a valid sockaddr_nl and its size is passed.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    bytes.as_ptr() as *const libc::c_void,
                    bytes.len(),
                    0,
                    &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.broken = true;
                return Err(DatapathError::syscall("netlink send", what.to_string(), e));
            }
            return Ok(());
        }
    }

    /// Receives one datagram into the internal buffer; returns its length.
    fn recv(&mut self, what: &str) -> Result<usize, DatapathError> {
        loop {
            // SAFETY: fd is valid; buf is a live, writable buffer of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.broken = true;
                return Err(DatapathError::syscall("netlink recv", what.to_string(), e));
            }
            return Ok(n as usize);
        }
    }

    /// Sends one request (with `NLM_F_ACK`) and returns the payloads of the
    /// messages answered before the ack (the object of a GET request).
    pub fn request(&mut self, req: &Request) -> Result<Vec<Vec<u8>>, DatapathError> {
        let seq = self.next_seq();
        self.send_bytes(&req.msg.finish(seq), &req.object)?;
        let mut out = Vec::new();
        // Bounded: every datagram either belongs to an older request (skipped)
        // or moves this one towards its ack.
        for _ in 0..10_000 {
            let n = self.recv(&req.object)?;
            for m in messages(&self.buf[..n]) {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_ERROR => {
                        let (errno, detail) = parse_error(&m);
                        if errno != 0 {
                            return Err(req.error(errno, detail));
                        }
                        return Ok(out);
                    }
                    NLMSG_DONE | NLMSG_NOOP => {}
                    _ => out.push(m.payload.to_vec()),
                }
            }
        }
        self.broken = true;
        Err(DatapathError::Protocol {
            op: msg_type_name(req.msg.msg_type()),
            what: format!("no ack for {}", req.object),
        })
    }

    /// Like [`Socket::request`] for a GET that answers one object.
    pub fn get_one(&mut self, req: &Request) -> Result<Vec<u8>, DatapathError> {
        self.request(req)?
            .into_iter()
            .next()
            .ok_or_else(|| DatapathError::Protocol {
                op: msg_type_name(req.msg.msg_type()),
                what: format!("empty answer for {}", req.object),
            })
    }

    /// Sends a dump request and returns the payloads of all answered messages.
    /// Retries (a bounded number of times) when the kernel flags the dump as
    /// interrupted by a concurrent change.
    pub fn dump(&mut self, req: &Request) -> Result<Vec<Vec<u8>>, DatapathError> {
        let mut last = Vec::new();
        for _attempt in 0..3 {
            let (out, intr) = self.dump_once(req)?;
            if !intr {
                return Ok(out);
            }
            last = out;
        }
        Ok(last)
    }

    fn dump_once(&mut self, req: &Request) -> Result<(Vec<Vec<u8>>, bool), DatapathError> {
        let seq = self.next_seq();
        self.send_bytes(&req.msg.finish(seq), &req.object)?;
        let mut out = Vec::new();
        let mut intr = false;
        for _ in 0..1_000_000 {
            let n = self.recv(&req.object)?;
            for m in messages(&self.buf[..n]) {
                if m.seq != seq {
                    continue;
                }
                if m.flags & NLM_F_DUMP_INTR != 0 {
                    intr = true;
                }
                match m.ty {
                    NLMSG_DONE => return Ok((out, intr)),
                    NLMSG_ERROR => {
                        let (errno, detail) = parse_error(&m);
                        if errno != 0 {
                            return Err(req.error(errno, detail));
                        }
                        return Ok((out, intr));
                    }
                    NLMSG_NOOP => {}
                    _ => out.push(m.payload.to_vec()),
                }
            }
        }
        self.broken = true;
        Err(DatapathError::Protocol {
            op: msg_type_name(req.msg.msg_type()),
            what: format!("dump of {} did not end", req.object),
        })
    }

    /// Sends all requests in one datagram (the kernel runs them in order) and
    /// waits for every ack. Returns the first failure, naming its request.
    pub fn batch(&mut self, reqs: &[Request]) -> Result<(), DatapathError> {
        if reqs.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(reqs.iter().map(|r| r.msg.buf.len()).sum());
        let mut seqs = Vec::with_capacity(reqs.len());
        for r in reqs {
            let seq = self.next_seq();
            r.msg.append_to(&mut bytes, seq);
            seqs.push(seq);
        }
        self.send_bytes(&bytes, &reqs[0].object)?;
        let mut pending = reqs.len();
        let mut first_err: Option<(usize, DatapathError)> = None;
        for _ in 0..10_000 {
            if pending == 0 {
                break;
            }
            let n = self.recv(&reqs[0].object)?;
            for m in messages(&self.buf[..n]) {
                if m.ty != NLMSG_ERROR {
                    continue;
                }
                let Some(i) = seqs.iter().position(|&s| s == m.seq) else {
                    continue;
                };
                pending -= 1;
                let (errno, detail) = parse_error(&m);
                if errno != 0 && first_err.as_ref().is_none_or(|(j, _)| i < *j) {
                    first_err = Some((i, reqs[i].error(errno, detail)));
                }
            }
        }
        if pending != 0 {
            self.broken = true;
        }
        if let Some((_, e)) = first_err {
            return Err(e);
        }
        if pending != 0 {
            return Err(DatapathError::Protocol {
                op: msg_type_name(reqs[0].msg.msg_type()),
                what: format!("{pending} of {} acks missing", reqs.len()),
            });
        }
        Ok(())
    }
}

fn setsockopt_int(
    fd: &OwnedFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: fd is valid; v is a live c_int and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ne16(v: u16) -> [u8; 2] {
        v.to_ne_bytes()
    }
    fn ne32(v: u32) -> [u8; 4] {
        v.to_ne_bytes()
    }

    #[test]
    fn new_addr_v4_bytes() {
        let got = new_addr(3, "10.0.0.1".parse().unwrap(), 32).finish(7);
        let mut want = Vec::new();
        // nlmsghdr
        want.extend(ne32(40)); // nlmsg_len: 16 + 8 + 8 + 8
        want.extend(ne16(RTM_NEWADDR)); // 20
        want.extend(ne16(0x0505)); // REQUEST | ACK | REPLACE | CREATE
        want.extend(ne32(7)); // nlmsg_seq
        want.extend(ne32(0)); // nlmsg_pid
                              // ifaddrmsg
        want.extend([2, 32, 0, 0]); // AF_INET, prefixlen 32, flags, scope universe
        want.extend(ne32(3)); // ifa_index
                              // IFA_LOCAL 10.0.0.1
        want.extend(ne16(8));
        want.extend(ne16(2));
        want.extend([10, 0, 0, 1]);
        // IFA_ADDRESS 10.0.0.1
        want.extend(ne16(8));
        want.extend(ne16(1));
        want.extend([10, 0, 0, 1]);
        assert_eq!(got, want);
    }

    #[test]
    fn new_addr_v6_has_nodad() {
        let got = new_addr(4, "fd00::5".parse().unwrap(), 128).finish(1);
        assert_eq!(got.len(), 16 + 8 + 20 + 8);
        assert_eq!(&got[16..20], &[10, 128, 0x02, 0]); // AF_INET6, /128, NODAD
                                                       // IFA_FLAGS attribute at the end
        assert_eq!(&got[44..48], &[ne16(8), ne16(IFA_FLAGS)].concat()[..]);
        assert_eq!(&got[48..52], &ne32(IFA_F_NODAD));
    }

    #[test]
    fn string_attr_is_nul_terminated_and_padded() {
        let m = Msg::new(RTM_DELLINK, NLM_F_ACK)
            .ifinfomsg(0, 0, 0, 0)
            .attr_str(IFLA_IFNAME, "eth0")
            .finish(1);
        // 16 hdr + 16 ifinfomsg + attr (4 + 5 = 9, padded to 12)
        assert_eq!(m.len(), 44);
        assert_eq!(&m[32..34], &ne16(9));
        assert_eq!(&m[34..36], &ne16(IFLA_IFNAME));
        assert_eq!(&m[36..44], b"eth0\0\0\0\0");
    }

    #[test]
    fn veth_request_nests() {
        let m = new_veth(&VethSpec {
            name: "weft1",
            mac: [0xee; 6],
            mtu: 1450,
            peer_name: "eth0",
            peer_netns_fd: 9,
        })
        .finish(1);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        // walk: the top-level attributes after ifinfomsg
        let top: Vec<_> = attrs(&m[32..]).collect();
        assert_eq!(top[0], (IFLA_IFNAME, &b"weft1\0"[..]));
        assert_eq!(top[1], (IFLA_MTU, &ne32(1450)[..]));
        assert_eq!(top[2], (IFLA_ADDRESS, &[0xee; 6][..]));
        assert_eq!(top[3].0, IFLA_LINKINFO);
        let info: Vec<_> = attrs(top[3].1).collect();
        assert_eq!(info[0], (IFLA_INFO_KIND, &b"veth\0"[..]));
        let data: Vec<_> = attrs(info[1].1).collect();
        assert_eq!(data[0].0, VETH_INFO_PEER);
        let peer = data[0].1;
        // the peer's ifinfomsg: flags/change 0 (set up later)
        assert_eq!(&peer[8..12], &ne32(0));
        assert_eq!(&peer[12..16], &ne32(0));
        let pattrs: Vec<_> = attrs(&peer[16..]).collect();
        assert_eq!(pattrs[0], (IFLA_IFNAME, &b"eth0\0"[..]));
        assert_eq!(pattrs[2], (IFLA_NET_NS_FD, &ne32(9)[..]));
        // the nest length covers exactly the nested bytes
        let linkinfo_len = u16::from_ne_bytes([m[32 + 12 + 8 + 12], m[32 + 12 + 8 + 12 + 1]]);
        assert_eq!(linkinfo_len as usize, 4 + top[3].1.len());
    }

    #[test]
    fn route_bytes() {
        let m = new_route(&RouteSpec::default_via("169.254.1.1".parse().unwrap(), 2)).finish(5);
        let mut want = Vec::new();
        want.extend(ne32(16 + 12 + 8 + 8));
        want.extend(ne16(RTM_NEWROUTE));
        want.extend(ne16(0x0505));
        want.extend(ne32(5));
        want.extend(ne32(0));
        // rtmsg: AF_INET, dst_len 0, src_len, tos, table main, proto static,
        // scope universe, type unicast; flags
        want.extend([2, 0, 0, 0, 254, 4, 0, 1]);
        want.extend(ne32(0));
        want.extend(ne16(8));
        want.extend(ne16(RTA_GATEWAY));
        want.extend([169, 254, 1, 1]);
        want.extend(ne16(8));
        want.extend(ne16(RTA_OIF));
        want.extend(ne32(2));
        assert_eq!(m, want);
    }

    #[test]
    fn neigh_bytes() {
        let m = new_neigh(2, "169.254.1.1".parse().unwrap(), [0xee; 6]).finish(1);
        assert_eq!(m.len(), 16 + 12 + 8 + 12);
        // ndmsg: AF_INET, pads, ifindex 2, NUD_PERMANENT, flags, type
        let mut nd = vec![2, 0, 0, 0];
        nd.extend(ne32(2));
        nd.extend(ne16(0x80));
        nd.extend([0, 0]);
        assert_eq!(&m[16..28], &nd[..]);
        assert_eq!(
            &m[28..36],
            &[ne16(8), ne16(NDA_DST)]
                .concat()
                .iter()
                .chain(&[169, 254, 1, 1])
                .copied()
                .collect::<Vec<_>>()[..]
        );
        assert_eq!(&m[36..40], &[ne16(10), ne16(NDA_LLADDR)].concat()[..]);
        assert_eq!(&m[40..48], &[0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0, 0]);
    }

    /// A canned `RTM_NEWLINK` as a dump answers it: veth `weft0a1b2c3d` up,
    /// index 7, mtu 1450, mac ee:..., peer ifindex 2 in netnsid 0.
    fn canned_newlink() -> Vec<u8> {
        let mut p = Vec::new();
        p.extend([0u8, 0]); // family, pad
        p.extend(ne16(1)); // ARPHRD_ETHER
        p.extend(ne32(7)); // index
        p.extend(ne32(0x1_1043)); // UP|BROADCAST|RUNNING|MULTICAST|LOWER_UP
        p.extend(ne32(0)); // change
        let mut attr = |ty: u16, data: &[u8]| {
            p.extend(ne16(4 + data.len() as u16));
            p.extend(ne16(ty));
            p.extend(data);
            while p.len() % 4 != 0 {
                p.push(0);
            }
        };
        attr(IFLA_IFNAME, b"weft0a1b2c3d\0");
        attr(IFLA_MTU, &ne32(1450));
        attr(IFLA_LINK, &ne32(2));
        attr(IFLA_ADDRESS, &[0xee; 6]);
        // IFLA_LINKINFO (nested flag set as the kernel does) { KIND "veth" }
        let mut li = Vec::new();
        li.extend(ne16(9));
        li.extend(ne16(IFLA_INFO_KIND));
        li.extend(b"veth\0\0\0\0");
        attr(IFLA_LINKINFO | NLA_F_NESTED, &li);
        attr(IFLA_LINK_NETNSID, &0i32.to_ne_bytes());
        let mut msg = Vec::new();
        msg.extend(ne32(16 + p.len() as u32));
        msg.extend(ne16(RTM_NEWLINK));
        msg.extend(ne16(NLM_F_MULTI));
        msg.extend(ne32(42));
        msg.extend(ne32(1234));
        msg.extend(p);
        msg
    }

    #[test]
    fn parse_canned_newlink() {
        let buf = canned_newlink();
        let mut done = Vec::new();
        done.extend(ne32(20));
        done.extend(ne16(NLMSG_DONE));
        done.extend(ne16(NLM_F_MULTI));
        done.extend(ne32(42));
        done.extend(ne32(1234));
        done.extend(ne32(0));
        let all = [buf, done].concat();
        let msgs: Vec<_> = messages(&all).collect();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].ty, RTM_NEWLINK);
        assert_eq!(msgs[0].seq, 42);
        assert_eq!(msgs[1].ty, NLMSG_DONE);
        let l = parse_link(msgs[0].payload).unwrap();
        assert_eq!(
            l,
            LinkMsg {
                index: 7,
                flags: 0x1_1043,
                name: "weft0a1b2c3d".into(),
                mtu: 1450,
                mac: Some([0xee; 6]),
                kind: Some("veth".into()),
                link: Some(2),
                link_netnsid: Some(0),
            }
        );
        assert!(l.is_up());
    }

    #[test]
    fn parse_error_with_ext_ack() {
        // NLMSG_ERROR, capped, with TLVs: error -17, original header, MSG attr
        let mut p = Vec::new();
        p.extend((-17i32).to_ne_bytes());
        p.extend([0u8; 16]);
        p.extend(ne16(4 + 12));
        p.extend(ne16(NLMSGERR_ATTR_MSG));
        p.extend(b"name in use\0");
        let m = NlMsg {
            ty: NLMSG_ERROR,
            flags: NLM_F_CAPPED | NLM_F_ACK_TLVS,
            seq: 1,
            payload: &p,
        };
        assert_eq!(parse_error(&m), (17, Some("name in use".into())));
        let ack = 0i32.to_ne_bytes();
        let m = NlMsg {
            ty: NLMSG_ERROR,
            flags: 0,
            seq: 1,
            payload: &ack,
        };
        assert_eq!(parse_error(&m), (0, None));
    }

    #[test]
    fn parse_route_multipath_oif() {
        let mut p = vec![2u8, 0, 0, 0, 254, 4, 0, 1];
        p.extend(ne32(0));
        // RTA_MULTIPATH with one rtnexthop {len 8, flags, hops, ifindex 5}
        p.extend(ne16(4 + 8));
        p.extend(ne16(RTA_MULTIPATH));
        p.extend(ne16(8));
        p.extend([0, 0]);
        p.extend(ne32(5));
        let r = parse_route(&p).unwrap();
        assert_eq!(r.dst_len, 0);
        assert_eq!(r.oif, Some(5));
        assert_eq!(r.table, 254);
    }

    #[test]
    fn vxlan_request_roundtrips_through_parse() {
        let m = new_vxlan(&VxlanSpec {
            name: "weft.vxlan",
            vni: 4096,
            port: 4789,
            local: Some("198.18.0.1".parse().unwrap()),
            link: Some(2),
            mtu: 1450,
        })
        .finish(1);
        // the request's ifinfomsg + attributes parse like a kernel answer
        let payload = &m[NLMSG_HDRLEN..];
        let l = parse_link(payload).unwrap();
        assert_eq!((l.name.as_str(), l.mtu), ("weft.vxlan", 1450));
        assert_eq!(l.kind.as_deref(), Some("vxlan"));
        assert_eq!(
            parse_vxlan(payload).unwrap(),
            VxlanInfo {
                vni: 4096,
                port: 4789,
                local: Some("198.18.0.1".parse().unwrap()),
                link: Some(2),
                learning: false,
            }
        );
        // the port is in network order on the wire
        let info = find_attr(&payload[16..], IFLA_LINKINFO).unwrap();
        let data = find_attr(info, IFLA_INFO_DATA).unwrap();
        assert_eq!(find_attr(data, IFLA_VXLAN_PORT).unwrap(), &[0x12, 0xb5]);
        // a veth is not vxlan
        let veth = new_veth(&VethSpec {
            name: "v",
            mac: [0xee; 6],
            mtu: 0,
            peer_name: "p",
            peer_netns_fd: 3,
        })
        .finish(1);
        assert_eq!(parse_vxlan(&veth[NLMSG_HDRLEN..]), None);
    }

    #[test]
    fn peer_route_carries_weft_protocol() {
        let r = PeerRoute {
            dst: "10.244.0.64".parse().unwrap(),
            dst_len: 26,
            gateway: "198.18.0.2".parse().unwrap(),
            oif: Some(9),
            onlink: true,
        };
        let m = new_peer_route(&r).finish(1);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), 0x0605); // REQ|ACK|EXCL|CREATE
        let parsed = parse_route(&m[NLMSG_HDRLEN..]).unwrap();
        assert_eq!(parsed.protocol, RTPROT_WEFT);
        assert_eq!(parsed.flags, RTNH_F_ONLINK);
        assert_eq!(parsed.dst, Some(r.dst));
        assert_eq!(parsed.gateway, Some(r.gateway));
        assert_eq!(parsed.oif, Some(9));
        // the delete names exactly that route
        let d = del_route(&parsed).finish(2);
        assert_eq!(u16::from_ne_bytes([d[4], d[5]]), RTM_DELROUTE);
        let again = parse_route(&d[NLMSG_HDRLEN..]).unwrap();
        assert_eq!(
            (again.protocol, again.dst, again.gateway, again.oif),
            (RTPROT_WEFT, parsed.dst, parsed.gateway, parsed.oif)
        );
    }

    #[test]
    fn fdb_request_bytes() {
        let m = new_fdb(7, [2, 0, 0, 0, 0, 1], "198.18.0.2".parse().unwrap()).finish(1);
        let n = parse_neigh(&m[NLMSG_HDRLEN..]).unwrap();
        assert_eq!(n.family, AF_BRIDGE);
        assert_eq!(n.ifindex, 7);
        assert_eq!(n.state, NUD_PERMANENT);
        assert_eq!(n.flags, NTF_SELF);
        assert_eq!(n.lladdr, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(n.dst, Some("198.18.0.2".parse().unwrap()));
        // IP neighbour dumps filter by attribute, ndm_ifindex stays 0
        let d = dump_neighs_on(AF_INET, 7).finish(1);
        assert_eq!(&d[20..24], &ne32(0));
        assert_eq!(find_attr(&d[28..], NDA_IFINDEX), Some(&ne32(7)[..]));
    }

    #[test]
    fn malformed_input_does_not_panic() {
        for len in 0..64 {
            let b = vec![0xffu8; len];
            let _ = messages(&b).count();
            let _ = attrs(&b).count();
            let _ = parse_link(&b);
            let _ = parse_route(&b);
            let _ = parse_addr(&b);
            let _ = parse_neigh(&b);
            let _ = parse_vxlan(&b);
        }
    }
}
