//! The `NETLINK_ROUTE` socket: send, match answers by sequence number.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::consts::*;
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
    pub fn open() -> Result<Self, NetlinkError> {
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
            return Err(NetlinkError::syscall(
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
                .map_err(|e| NetlinkError::syscall("setsockopt", name, e))?;
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
            return Err(NetlinkError::syscall(
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
            return Err(NetlinkError::syscall(
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

    fn send_bytes(&mut self, bytes: &[u8], what: &str) -> Result<(), NetlinkError> {
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
                return Err(NetlinkError::syscall("netlink send", what.to_string(), e));
            }
            return Ok(());
        }
    }

    /// Receives one datagram into the internal buffer; returns its length.
    fn recv(&mut self, what: &str) -> Result<usize, NetlinkError> {
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
                return Err(NetlinkError::syscall("netlink recv", what.to_string(), e));
            }
            return Ok(n as usize);
        }
    }

    /// Sends one request (with `NLM_F_ACK`) and returns the payloads of the
    /// messages answered before the ack (the object of a GET request).
    pub fn request(&mut self, req: &Request) -> Result<Vec<Vec<u8>>, NetlinkError> {
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
        Err(NetlinkError::Protocol {
            op: msg_type_name(req.msg.msg_type()),
            what: format!("no ack for {}", req.object),
        })
    }

    /// Like [`Socket::request`] for a GET that answers one object.
    pub fn get_one(&mut self, req: &Request) -> Result<Vec<u8>, NetlinkError> {
        self.request(req)?
            .into_iter()
            .next()
            .ok_or_else(|| NetlinkError::Protocol {
                op: msg_type_name(req.msg.msg_type()),
                what: format!("empty answer for {}", req.object),
            })
    }

    /// Sends a dump request and returns the payloads of all answered messages.
    /// Retries (a bounded number of times) when the kernel flags the dump as
    /// interrupted by a concurrent change.
    pub fn dump(&mut self, req: &Request) -> Result<Vec<Vec<u8>>, NetlinkError> {
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

    fn dump_once(&mut self, req: &Request) -> Result<(Vec<Vec<u8>>, bool), NetlinkError> {
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
        Err(NetlinkError::Protocol {
            op: msg_type_name(req.msg.msg_type()),
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
            return Err(NetlinkError::Protocol {
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
