//! Aborting the UDP sockets still connected to a backend that went away
//! (`SOCK_DESTROY` over `NETLINK_SOCK_DIAG`, what `ss -K` does).
//!
//! The socket LB translates at connect: a connected UDP socket keeps the
//! backend's address for its life, so a client that never reconnects (a
//! resolver's long-lived socket to CoreDNS) would talk to a dead pod
//! forever, kube-proxy's conntrack-staleness bug in socket form. When a
//! backend leaves, weftd aborts those sockets in each network namespace it
//! serves: the owner's next call fails (ECONNABORTED, then "destination
//! address required") and a fresh connect goes through the load balancer
//! again. Needs CAP_NET_ADMIN in the namespace and CONFIG_INET_DIAG_DESTROY.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::ServiceError;

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const IPPROTO_UDP: u8 = 17;
/// `struct inet_diag_sockid`: ports, 16-byte addresses, ifindex, cookie.
const SOCKID_LEN: usize = 48;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 8 + SOCKID_LEN;
/// `struct inet_diag_msg` up to and including the socket id.
const MSG_MIN: usize = 4 + SOCKID_LEN;

/// One UDP socket as the dump shows it: family and its raw socket id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpSock {
    pub family: u8,
    pub id: [u8; SOCKID_LEN],
}

impl UdpSock {
    /// The connected peer (unspecified for an unconnected socket).
    pub fn peer(&self) -> SocketAddr {
        let port = u16::from_be_bytes([self.id[2], self.id[3]]);
        let d = &self.id[20..36];
        let ip = if self.family == libc::AF_INET as u8 {
            IpAddr::V4(Ipv4Addr::new(d[0], d[1], d[2], d[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(d).expect("16 bytes")))
        };
        SocketAddr::new(ip, port)
    }
}

/// A `nlmsghdr` + `inet_diag_req_v2` for UDP sockets of `family`.
pub fn request(ty: u16, flags: u16, seq: u32, family: u8, id: &[u8; SOCKID_LEN]) -> Vec<u8> {
    let len = 16 + REQ_LEN;
    let mut m = Vec::with_capacity(len);
    m.extend((len as u32).to_ne_bytes());
    m.extend(ty.to_ne_bytes());
    m.extend(flags.to_ne_bytes());
    m.extend(seq.to_ne_bytes());
    m.extend(0u32.to_ne_bytes());
    m.extend([family, IPPROTO_UDP, 0, 0]);
    m.extend(u32::MAX.to_ne_bytes()); // every state
    m.extend(id);
    m
}

/// The sockets of a dump's answer datagram, and whether it was the last.
pub fn parse_dump(buf: &[u8], out: &mut Vec<UdpSock>) -> Result<bool, i32> {
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4")) as usize;
        let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().expect("2"));
        if len < 16 || off + len > buf.len() {
            return Err(libc::EPROTO);
        }
        let payload = &buf[off + 16..off + len];
        match ty {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let e = payload.get(..4).map_or(libc::EPROTO, |b| {
                    -i32::from_ne_bytes(b.try_into().expect("4"))
                });
                return Err(e);
            }
            SOCK_DIAG_BY_FAMILY if payload.len() >= MSG_MIN => out.push(UdpSock {
                family: payload[0],
                id: payload[4..MSG_MIN].try_into().expect("48 bytes"),
            }),
            _ => {}
        }
        off += (len + 3) & !3;
    }
    Ok(false)
}

struct DiagSocket(OwnedFd);

impl DiagSocket {
    fn open() -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments; the fd is checked and
        // then owned by one OwnedFd.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: fd is valid; tv is a timeval of the size passed.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(DiagSocket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: msg is a valid buffer of msg.len() bytes; the kernel is the
        // destination (a zeroed sockaddr_nl would be the same).
        let n = unsafe { libc::send(self.0.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is writable for buf.len() bytes.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

fn diag_err(what: &str, e: impl std::fmt::Display) -> ServiceError {
    ServiceError::SockDiag(format!("{what}: {e}"))
}

/// Every UDP socket (IPv4 and IPv6) of the calling thread's netns.
pub fn udp_sockets() -> Result<Vec<UdpSock>, ServiceError> {
    let s = DiagSocket::open().map_err(|e| diag_err("socket NETLINK_SOCK_DIAG", e))?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for (seq, family) in [(1, libc::AF_INET as u8), (2, libc::AF_INET6 as u8)] {
        s.send(&request(
            SOCK_DIAG_BY_FAMILY,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            family,
            &[0; SOCKID_LEN],
        ))
        .map_err(|e| diag_err("send the UDP socket dump", e))?;
        loop {
            let n = s
                .recv(&mut buf)
                .map_err(|e| diag_err("receive the UDP socket dump", e))?;
            match parse_dump(&buf[..n], &mut out) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return Err(diag_err("UDP socket dump", io::Error::from_raw_os_error(e))),
            }
        }
    }
    Ok(out)
}

/// Aborts every UDP socket of the calling thread's netns connected to one
/// of `peers`; returns how many. A socket gone meanwhile is not an error.
pub fn destroy_udp_to(peers: &[SocketAddr]) -> Result<usize, ServiceError> {
    let victims: Vec<UdpSock> = udp_sockets()?
        .into_iter()
        .filter(|s| {
            // an IPv6 socket connected to an IPv4-mapped address talks to
            // the IPv4 backend
            let p = s.peer();
            peers.contains(&p) || peers.contains(&SocketAddr::new(p.ip().to_canonical(), p.port()))
        })
        .collect();
    if victims.is_empty() {
        return Ok(0);
    }
    let s = DiagSocket::open().map_err(|e| diag_err("socket NETLINK_SOCK_DIAG", e))?;
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    for (i, v) in victims.iter().enumerate() {
        let req = request(
            SOCK_DESTROY,
            NLM_F_REQUEST | NLM_F_ACK,
            100 + i as u32,
            v.family,
            &v.id,
        );
        s.send(&req).map_err(|e| diag_err("send SOCK_DESTROY", e))?;
        let len = s
            .recv(&mut buf)
            .map_err(|e| diag_err("receive SOCK_DESTROY's ack", e))?;
        match parse_dump(&buf[..len], &mut Vec::new()) {
            Err(0) => n += 1,
            Err(libc::ENOENT) => {}
            Err(e) => {
                return Err(diag_err(
                    &format!("SOCK_DESTROY of the UDP socket to {}", v.peer()),
                    io::Error::from_raw_os_error(e),
                ))
            }
            Ok(_) => return Err(diag_err("SOCK_DESTROY", "no ack")),
        }
    }
    Ok(n)
}

/// [`destroy_udp_to`] inside the network namespace at `netns`.
pub fn destroy_udp_to_in(netns: &Path, peers: &[SocketAddr]) -> Result<usize, ServiceError> {
    crate::netns::run_in(netns, || destroy_udp_to(peers))
        .map_err(|e| diag_err(&format!("enter {}", netns.display()), e))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend(((16 + payload.len()) as u32).to_ne_bytes());
        m.extend(ty.to_ne_bytes());
        m.extend([0u8; 10]);
        m.extend(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn request_layout_is_the_kernels() {
        let r = request(
            SOCK_DIAG_BY_FAMILY,
            NLM_F_REQUEST | NLM_F_DUMP,
            7,
            2,
            &[0; 48],
        );
        assert_eq!(r.len(), 16 + 56);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes(r[4..6].try_into().unwrap()), 20);
        assert_eq!(u16::from_ne_bytes(r[6..8].try_into().unwrap()), 0x301);
        assert_eq!(&r[16..20], &[2, 17, 0, 0]);
    }

    #[test]
    fn dump_answers_parse_into_peers() {
        let mut msg = vec![2u8, 1, 0, 0];
        let mut id = [0u8; 48];
        id[0..2].copy_from_slice(&40000u16.to_be_bytes());
        id[2..4].copy_from_slice(&53u16.to_be_bytes());
        id[4..8].copy_from_slice(&[10, 0, 0, 1]);
        id[20..24].copy_from_slice(&[10, 96, 0, 10]);
        msg.extend(id);
        msg.extend([0u8; 20]);
        let mut buf = answer(SOCK_DIAG_BY_FAMILY, &msg);
        buf.extend(answer(NLMSG_DONE, &[0; 4]));
        let mut out = Vec::new();
        assert_eq!(parse_dump(&buf, &mut out), Ok(true));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].peer(), "10.96.0.10:53".parse().unwrap());
        let err = answer(NLMSG_ERROR, &(-libc::ENOENT).to_ne_bytes());
        assert_eq!(parse_dump(&err, &mut out), Err(libc::ENOENT));
        let ack = answer(NLMSG_ERROR, &0i32.to_ne_bytes());
        assert_eq!(parse_dump(&ack, &mut out), Err(0));
    }
}
