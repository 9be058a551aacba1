//! Building requests ([`Msg`]) and splitting answers into messages and
//! attributes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::consts::*;

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

    /// The encoded length so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Never true: a message holds at least its header.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn append_to(&self, out: &mut Vec<u8>, seq: u32) {
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

pub(crate) fn find_attr(buf: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(buf).find(|(t, _)| *t == ty).map(|(_, p)| p)
}

pub(crate) fn u32_of(p: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(p.get(..4)?.try_into().ok()?))
}

pub(crate) fn i32_of(p: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(p.get(..4)?.try_into().ok()?))
}

pub(crate) fn str_of(p: &[u8]) -> String {
    let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
    String::from_utf8_lossy(&p[..end]).into_owned()
}

pub(crate) fn ip_of(family: u8, p: &[u8]) -> Option<IpAddr> {
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
