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

//!
//! `Socket` sends and receives; the builders (`new_veth`, `new_route`, ...)
//! make requests; the parsers (`parse_link`, `parse_route`, ...) read
//! answers; `NetlinkError` is what can go wrong. No state beyond the socket.

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
pub use parse::*;
pub use requests::*;
pub use socket::*;
