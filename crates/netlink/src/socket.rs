//! The `NETLINK_ROUTE` socket: send, match answers by sequence number.
//! netlink-sys's blocking socket underneath; the request/ack discipline
//! (sequence matching, batches in one datagram, dump retries) is weft's.

use std::io;
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLMSG_ERROR, NLMSG_NOOP, NLM_F_DUMP_INTR,
};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::SocketAddr;

use crate::error::NetlinkError;
use crate::msg::*;

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

    fn error(&self, errno: i32, detail: Option<String>) -> NetlinkError {
        NetlinkError::Kernel {
            op: self.msg.op(),
            object: self.object.clone(),
            errno,
            detail,
        }
    }
}

/// A `NETLINK_ROUTE` socket, bound to the netns of the thread that opened it.
#[derive(Debug)]
pub struct Socket {
    sock: netlink_sys::Socket,
    seq: u32,
    buf: Vec<u8>,
    /// A send or receive failed or an answer was missing: unread answers may
    /// be queued, so the socket should not be reused.
    broken: bool,
}

impl Socket {
    /// Opens a socket in the calling thread's current network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        let mut sock = netlink_sys::Socket::new(NETLINK_ROUTE)
            .map_err(|e| NetlinkError::syscall("socket", "AF_NETLINK NETLINK_ROUTE", e))?;
        sock.set_ext_ack(true)
            .map_err(|e| NetlinkError::syscall("setsockopt", "NETLINK_EXT_ACK", e))?;
        sock.set_cap_ack(true)
            .map_err(|e| NetlinkError::syscall("setsockopt", "NETLINK_CAP_ACK", e))?;
        sock.set_netlink_get_strict_chk(true)
            .map_err(|e| NetlinkError::syscall("setsockopt", "NETLINK_GET_STRICT_CHK", e))?;
        // A bounded wait: rtnetlink answers synchronously, so this only
        // matters if something is badly wrong.
        set_recv_timeout(&sock, 10)
            .map_err(|e| NetlinkError::syscall("setsockopt", "SO_RCVTIMEO", e))?;
        // port 0: the kernel picks the port id
        sock.bind_auto()
            .map_err(|e| NetlinkError::syscall("bind", "AF_NETLINK", e))?;
        Ok(Socket {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
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

    fn send_bytes(&mut self, bytes: &[u8], what: &str) -> Result<(), NetlinkError> {
        let kernel = SocketAddr::new(0, 0);
        loop {
            match self.sock.send_to(bytes, &kernel, 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.broken = true;
                    return Err(NetlinkError::syscall("netlink send", what.to_string(), e));
                }
                Ok(_) => return Ok(()),
            }
        }
    }

    /// Receives one datagram into the internal buffer.
    fn recv(&mut self, what: &str) -> Result<(), NetlinkError> {
        loop {
            self.buf.clear();
            match self.sock.recv(&mut self.buf, 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.broken = true;
                    return Err(NetlinkError::syscall("netlink recv", what.to_string(), e));
                }
                Ok(_) => return Ok(()),
            }
        }
    }

    /// Decodes an answer to `req`; a message the crate cannot decode fails
    /// the request (and leaves the socket broken: its other answers are
    /// unread) rather than being skipped, so a caller never acts on a
    /// partial view.
    fn decode(
        &mut self,
        m: &Received<'_>,
        req: &Request,
    ) -> Result<NetlinkMessage<Message>, NetlinkError> {
        m.decode().map_err(|e| {
            self.broken = true;
            NetlinkError::Protocol {
                op: req.msg.op(),
                what: format!(
                    "cannot decode the kernel's answer (type {}) for {}: {e}",
                    m.ty, req.object
                ),
            }
        })
    }

    /// Sends one request (with `NLM_F_ACK`) and returns the messages
    /// answered before the ack (the object of a GET request).
    pub fn request(&mut self, req: &Request) -> Result<Vec<Message>, NetlinkError> {
        let seq = self.next_seq();
        self.send_bytes(&req.msg.finish(seq), &req.object)?;
        let mut out = Vec::new();
        // Bounded: every datagram either belongs to an older request (skipped)
        // or moves this one towards its ack.
        for _ in 0..10_000 {
            self.recv(&req.object)?;
            let buf = std::mem::take(&mut self.buf);
            let done = self.collect(&buf, seq, req, &mut out, &mut false);
            self.buf = buf;
            if done? {
                return Ok(out);
            }
        }
        self.broken = true;
        Err(NetlinkError::Protocol {
            op: req.msg.op(),
            what: format!("no ack for {}", req.object),
        })
    }

    /// Adds the answers to `seq` in one datagram to `out`; `true` once the
    /// ack (or the end of a dump) came. Sets `intr` when the kernel flagged
    /// the dump as interrupted.
    fn collect(
        &mut self,
        buf: &[u8],
        seq: u32,
        req: &Request,
        out: &mut Vec<Message>,
        intr: &mut bool,
    ) -> Result<bool, NetlinkError> {
        for m in messages(buf) {
            if m.seq != seq {
                continue;
            }
            *intr |= m.flags & NLM_F_DUMP_INTR != 0;
            if m.ty == NLMSG_NOOP {
                continue;
            }
            let msg = self.decode(&m, req)?;
            if let Some((errno, detail)) = error_of(&msg) {
                if errno != 0 {
                    return Err(req.error(errno, detail));
                }
                return Ok(true);
            }
            if let NetlinkPayload::InnerMessage(inner) = msg.payload {
                out.push(inner);
            }
        }
        Ok(false)
    }

    /// Like [`Socket::request`] for a GET that answers one object.
    pub fn get_one(&mut self, req: &Request) -> Result<Message, NetlinkError> {
        self.request(req)?
            .into_iter()
            .next()
            .ok_or_else(|| NetlinkError::Protocol {
                op: req.msg.op(),
                what: format!("empty answer for {}", req.object),
            })
    }

    /// Sends a dump request and returns all answered messages. Retries (a
    /// bounded number of times) when the kernel flags the dump as
    /// interrupted by a concurrent change.
    pub fn dump(&mut self, req: &Request) -> Result<Vec<Message>, NetlinkError> {
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

    fn dump_once(&mut self, req: &Request) -> Result<(Vec<Message>, bool), NetlinkError> {
        let seq = self.next_seq();
        self.send_bytes(&req.msg.finish(seq), &req.object)?;
        let mut out = Vec::new();
        let mut intr = false;
        for _ in 0..1_000_000 {
            self.recv(&req.object)?;
            let buf = std::mem::take(&mut self.buf);
            let done = self.collect(&buf, seq, req, &mut out, &mut intr);
            self.buf = buf;
            if done? {
                return Ok((out, intr));
            }
        }
        self.broken = true;
        Err(NetlinkError::Protocol {
            op: req.msg.op(),
            what: format!("dump of {} did not end", req.object),
        })
    }

    /// Sends all requests in one datagram (the kernel runs them in order) and
    /// waits for every ack. Returns the first failure, naming its request.
    pub fn batch(&mut self, reqs: &[Request]) -> Result<(), NetlinkError> {
        if reqs.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(reqs.iter().map(|r| r.msg.len()).sum());
        let mut seqs = Vec::with_capacity(reqs.len());
        for r in reqs {
            let seq = self.next_seq();
            r.msg.append_to(&mut bytes, seq);
            seqs.push(seq);
        }
        self.send_bytes(&bytes, &reqs[0].object)?;
        let mut pending = reqs.len();
        let mut first_err: Option<(usize, NetlinkError)> = None;
        for _ in 0..10_000 {
            if pending == 0 {
                break;
            }
            self.recv(&reqs[0].object)?;
            let buf = std::mem::take(&mut self.buf);
            for m in messages(&buf) {
                if m.ty != NLMSG_ERROR {
                    continue;
                }
                let Some(i) = seqs.iter().position(|&s| s == m.seq) else {
                    continue;
                };
                pending -= 1;
                let (errno, detail) = match m.decode().as_ref().map(error_of) {
                    Ok(Some(e)) => e,
                    // an NLMSG_ERROR that does not decode still ends its
                    // request; say so rather than guess an errno
                    _ => (
                        libc::EPROTO,
                        Some("undecodable netlink error answer".into()),
                    ),
                };
                if errno != 0 && first_err.as_ref().is_none_or(|(j, _)| i < *j) {
                    first_err = Some((i, reqs[i].error(errno, detail)));
                }
            }
            self.buf = buf;
        }
        if pending != 0 {
            self.broken = true;
        }
        if let Some((_, e)) = first_err {
            return Err(e);
        }
        if pending != 0 {
            return Err(NetlinkError::Protocol {
                op: reqs[0].msg.op(),
                what: format!("{pending} of {} acks missing", reqs.len()),
            });
        }
        Ok(())
    }
}

/// `SO_RCVTIMEO`, which netlink-sys has no call for.
fn set_recv_timeout(sock: &netlink_sys::Socket, seconds: libc::time_t) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: seconds,
        tv_usec: 0,
    };
    // SAFETY: the fd is valid for the socket's lifetime; tv is a valid
    // timeval that outlives the call and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
