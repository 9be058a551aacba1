//! The rtnetlink socket as the data path uses it: [`weft_netlink::Socket`]
//! with its errors turned into [`DatapathError`] at each call, so the
//! plumbing code can mix netlink and namespace calls under one `?`.

use weft_netlink::{self as nl, Message, Request};

use crate::error::DatapathError;

/// A `NETLINK_ROUTE` socket bound to the netns of the thread that opened it.
#[derive(Debug)]
pub struct Socket(nl::Socket);

impl Socket {
    /// Opens a socket in the calling thread's current network namespace.
    pub fn open() -> Result<Self, DatapathError> {
        Ok(Socket(nl::Socket::open()?))
    }

    /// Whether the socket may hold stray answers.
    pub fn is_broken(&self) -> bool {
        self.0.is_broken()
    }

    /// One request, waiting for its ack; the answered messages.
    pub fn request(&mut self, req: &Request) -> Result<Vec<Message>, DatapathError> {
        Ok(self.0.request(req)?)
    }

    /// A GET that answers one object.
    pub fn get_one(&mut self, req: &Request) -> Result<Message, DatapathError> {
        Ok(self.0.get_one(req)?)
    }

    /// A dump; every answered message.
    pub fn dump(&mut self, req: &Request) -> Result<Vec<Message>, DatapathError> {
        Ok(self.0.dump(req)?)
    }

    /// Every request in one datagram; the first failure, naming its request.
    pub fn batch(&mut self, reqs: &[Request]) -> Result<(), DatapathError> {
        Ok(self.0.batch(reqs)?)
    }
}
