//! A request ([`Msg`]) on its way to bytes, and received bytes on their way
//! to messages: the framing around `netlink-packet-route`'s types.

use netlink_packet_core::{
    DecodeError, Emitable, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable, NlasIterator, Parseable, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;

use crate::consts::msg_type_name;

/// A decoded rtnetlink message: what requests carry and answers hold.
pub type Message = RouteNetlinkMessage;

const HEADER_LEN: usize = 16;
/// `NLMSGERR_ATTR_MSG` (linux/netlink.h): the extended ack's text.
const NLMSGERR_ATTR_MSG: u16 = 1;

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One request: a message and its `NLM_F_*` flags. The length and sequence
/// number are filled in when it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    msg: Message,
    flags: u16,
}

impl Msg {
    /// A request of `msg` with `NLM_F_REQUEST` and the given flags.
    pub fn new(msg: Message, flags: u16) -> Self {
        Msg {
            msg,
            flags: flags | NLM_F_REQUEST,
        }
    }

    /// The message this request carries.
    pub fn message(&self) -> &Message {
        &self.msg
    }

    /// `nlmsg_type`, e.g. `RTM_NEWLINK` (16).
    pub fn msg_type(&self) -> u16 {
        self.msg.message_type()
    }

    /// The request type's name, for error messages.
    pub fn op(&self) -> &'static str {
        msg_type_name(&self.msg)
    }

    /// `nlmsg_flags`.
    pub fn flags(&self) -> u16 {
        self.flags
    }

    /// The encoded length (header and payload, padded to 4 bytes).
    pub fn len(&self) -> usize {
        align4(HEADER_LEN + Emitable::buffer_len(&self.msg))
    }

    /// Never true: a message holds at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The bytes of the request with its sequence number set.
    pub fn finish(&self, seq: u32) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.len());
        self.append_to(&mut b, seq);
        b
    }

    /// Appends the request's bytes to `out` (one datagram may carry many).
    pub(crate) fn append_to(&self, out: &mut Vec<u8>, seq: u32) {
        let body = Emitable::buffer_len(&self.msg);
        let mut header = NetlinkHeader::default();
        header.length = (HEADER_LEN + body) as u32;
        header.message_type = self.msg.message_type();
        header.flags = self.flags;
        header.sequence_number = seq;
        // port 0: to the kernel
        let start = out.len();
        out.resize(start + self.len(), 0);
        header.emit(&mut out[start..start + HEADER_LEN]);
        self.msg
            .serialize(&mut out[start + HEADER_LEN..start + HEADER_LEN + body]);
    }
}

/// One received netlink message, its header read, its payload decoded on
/// demand (so a message for another request costs nothing).
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    bytes: &'a [u8],
}

impl Received<'_> {
    /// The message, decoded by `netlink-packet-route`.
    pub fn decode(&self) -> Result<NetlinkMessage<Message>, DecodeError> {
        NetlinkMessage::parse(&NetlinkBuffer::new_checked(&self.bytes)?)
    }
}

/// Splits a datagram into netlink messages. Stops at a malformed header.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Received<'_>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let nl = NetlinkBuffer::new_checked(rest).ok()?;
        let len = nl.length() as usize;
        let m = Received {
            ty: nl.message_type(),
            flags: nl.flags(),
            seq: nl.sequence_number(),
            bytes: &rest[..len],
        };
        rest = &rest[align4(len).min(rest.len())..];
        Some(m)
    })
}

/// What an `NLMSG_ERROR` (or an `NLMSG_DONE` that ends a failed dump) says:
/// the (positive) errno, 0 for an ack, and the kernel's extended-ack text.
pub fn error_of(m: &NetlinkMessage<Message>) -> Option<(i32, Option<String>)> {
    let flags = m.header.flags;
    match &m.payload {
        NetlinkPayload::Error(e) => {
            // struct nlmsgerr = error (4) + the original nlmsghdr (16), then
            // the original payload unless NLM_F_CAPPED, then the TLVs. The
            // crate keeps all of it after the error code as raw bytes and
            // leaves the TLVs to the caller.
            let rest = &e.header;
            let mut off = HEADER_LEN;
            if flags & NLM_F_CAPPED == 0 {
                if let Ok(orig) = NetlinkBuffer::new_checked(&rest[..]) {
                    off = align4(orig.length() as usize);
                }
            }
            let detail = ext_ack_msg(flags, rest.get(off..).unwrap_or_default());
            Some((-e.raw_code(), detail))
        }
        // a dump that fails after it started ends in an NLMSG_DONE carrying
        // the error, with the TLVs straight after it
        NetlinkPayload::Done(d) => Some((-d.code, ext_ack_msg(flags, &d.extended_ack))),
        _ => None,
    }
}

fn ext_ack_msg(flags: u16, tlvs: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    NlasIterator::new(tlvs)
        .filter_map(Result::ok)
        .find(|a| a.kind() == NLMSGERR_ATTR_MSG)
        .map(|a| {
            let v = a.value();
            let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
            String::from_utf8_lossy(&v[..end]).into_owned()
        })
}
