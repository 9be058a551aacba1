//! A small, synchronous rtnetlink client: weft's requests and views over
//! `netlink-packet-route`'s message types, on netlink-sys's socket.
//!
//! Just what the node data path needs: build requests (links, addresses,
//! routes, neighbours, VXLAN devices and FDB entries), send them one at a
//! time or as a batch in one `send`, match answers by sequence number,
//! decode `NLMSG_ERROR` (with the kernel's extended-ack message) and read
//! `NLM_F_DUMP` answers.
//!
//! `Socket` sends and receives; the builders (`new_veth`, `new_route`, ...)
//! make requests; the views (`parse_link`, `parse_route`, ...) read the
//! decoded answers; `NetlinkError` is what can go wrong. No state beyond the
//! socket. The wire format (headers, attributes, nesting, byte order) is
//! the crate's: `route` re-exports it for callers that need a type.

mod consts;
mod error;
mod msg;
mod parse;
mod requests;
mod socket;
#[cfg(test)]
mod tests;

pub use consts::*;
pub use error::{errno_text, NetlinkError};
pub use msg::*;
pub use netlink_packet_route as route;
pub use parse::*;
pub use requests::*;
pub use socket::*;
