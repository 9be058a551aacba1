//! Frames for BPF_PROG_TEST_RUN with valid IPv4 header and TCP/UDP
//! checksums, and the checks that a rewritten frame's still are.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::net::{IpAddr, SocketAddr};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

fn sum16(b: &[u8], mut sum: u32) -> u32 {
    for c in b.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ip_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// The L4 checksum over the pseudo header and `seg` (checksum field zeroed).
fn l4_sum(src: IpAddr, dst: IpAddr, proto: u8, seg: &[u8]) -> u16 {
    let mut pseudo = ip_bytes(src);
    pseudo.extend(ip_bytes(dst));
    if src.is_ipv4() {
        pseudo.extend([0, proto]);
        pseudo.extend((seg.len() as u16).to_be_bytes());
    } else {
        pseudo.extend((seg.len() as u32).to_be_bytes());
        pseudo.extend([0, 0, 0, proto]);
    }
    fold(sum16(seg, sum16(&pseudo, 0)))
}

/// Ethernet + IP + a TCP SYN or a UDP datagram carrying `payload`.
pub fn frame(src: SocketAddr, dst: SocketAddr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut seg = Vec::new();
    seg.extend(src.port().to_be_bytes());
    seg.extend(dst.port().to_be_bytes());
    if proto == TCP {
        seg.extend([0, 0, 0, 1, 0, 0, 0, 0, 5 << 4, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        seg.extend(((8 + payload.len()) as u16).to_be_bytes());
        seg.extend([0, 0]);
    }
    seg.extend(payload);
    let c = l4_sum(src.ip(), dst.ip(), proto, &seg);
    let at = if proto == TCP { 16 } else { 6 };
    seg[at..at + 2].copy_from_slice(&c.to_be_bytes());

    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    if src.is_ipv4() {
        f.extend([0x08, 0x00]);
        let mut ip = vec![0x45, 0];
        ip.extend(((20 + seg.len()) as u16).to_be_bytes());
        ip.extend([0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
        ip.extend(ip_bytes(src.ip()));
        ip.extend(ip_bytes(dst.ip()));
        let c = fold(sum16(&ip, 0));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend(ip);
    } else {
        f.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend((seg.len() as u16).to_be_bytes());
        f.extend([proto, 64]);
        f.extend(ip_bytes(src.ip()));
        f.extend(ip_bytes(dst.ip()));
    }
    f.extend(seg);
    f
}

fn l3(f: &[u8]) -> (IpAddr, IpAddr, usize, u8) {
    if f[12..14] == [0x08, 0x00] {
        let a = |o: usize| IpAddr::from(<[u8; 4]>::try_from(&f[o..o + 4]).unwrap());
        (a(26), a(30), 34, f[23])
    } else {
        let a = |o: usize| IpAddr::from(<[u8; 16]>::try_from(&f[o..o + 16]).unwrap());
        (a(22), a(38), 54, f[20])
    }
}

/// (source, destination) of a frame as it is now.
pub fn addrs(f: &[u8]) -> (SocketAddr, SocketAddr) {
    let (s, d, l4, _) = l3(f);
    let port = |o: usize| u16::from_be_bytes([f[l4 + o], f[l4 + o + 1]]);
    (SocketAddr::new(s, port(0)), SocketAddr::new(d, port(2)))
}

/// Whether the IPv4 header checksum and the L4 checksum are right.
pub fn checksums_ok(f: &[u8]) -> bool {
    let (s, d, l4, proto) = l3(f);
    if s.is_ipv4() && fold(sum16(&f[14..34], 0)) != 0 {
        return false;
    }
    let seg = &f[l4..];
    let at = if proto == TCP { 16 } else { 6 };
    if proto == UDP && s.is_ipv4() && seg[at..at + 2] == [0, 0] {
        return true;
    }
    let mut z = seg.to_vec();
    z[at..at + 2].copy_from_slice(&[0, 0]);
    let want = l4_sum(s, d, proto, &z);
    // 0 is sent as 0xffff over UDP
    let got = u16::from_be_bytes([seg[at], seg[at + 1]]);
    got == want || (proto == UDP && want == 0 && got == 0xffff)
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test socket address")
}

/// Whether the Internet checksum over `b` (its checksum field included)
/// verifies.
pub fn sum_ok(b: &[u8]) -> bool {
    fold(sum16(b, 0)) == 0
}

/// Whether an Ethernet + IPv6 + ICMPv6 frame's ICMPv6 checksum verifies.
pub fn icmp6_ok(f: &[u8]) -> bool {
    let msg = &f[54..];
    let mut pseudo = f[22..54].to_vec();
    pseudo.extend((msg.len() as u32).to_be_bytes());
    pseudo.extend([0, 0, 0, 58]);
    fold(sum16(msg, sum16(&pseudo, 0))) == 0
}

/// Ethernet + IPv4 + an ICMP error `(type, code)` from `from` to `to`
/// quoting `quoted` (a frame of [`frame`], its IP packet whole), with the
/// next-hop MTU field set (frag needed) and valid checksums.
pub fn icmp4_error(from: &str, to: &str, type_: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let (from, to): (IpAddr, IpAddr) = (from.parse().unwrap(), to.parse().unwrap());
    let mut msg = vec![type_, code, 0, 0, 0, 0, 0x05, 0x78];
    msg.extend(&quoted[14..]);
    let c = fold(sum16(&msg, 0));
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let mut ip = vec![0x45, 0];
    ip.extend(((20 + msg.len()) as u16).to_be_bytes());
    ip.extend([0x56, 0x78, 0, 0, 64, 1, 0, 0]);
    ip.extend(ip_bytes(from));
    ip.extend(ip_bytes(to));
    let c = fold(sum16(&ip, 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend(ip);
    f.extend(msg);
    f
}

/// An ICMP error frame's outer (source, destination), and the packet it
/// quotes as a frame of its own (for [`addrs`] and [`checksums_ok`]).
pub fn icmp4_parts(f: &[u8]) -> ((IpAddr, IpAddr), Vec<u8>) {
    let (s, d, _, _) = l3(f);
    let mut quoted = f[..14].to_vec();
    quoted.extend(&f[42..]);
    ((s, d), quoted)
}

/// Whether an ICMP error frame's outer IPv4 and ICMP checksums verify.
pub fn icmp4_ok(f: &[u8]) -> bool {
    sum_ok(&f[14..34]) && sum_ok(&f[34..])
}

/// [`icmp4_error`] for IPv6: Ethernet + IPv6 + an ICMPv6 error quoting
/// `quoted` whole, its checksum over the pseudo header.
pub fn icmp6_error(from: &str, to: &str, type_: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let (from, to): (IpAddr, IpAddr) = (from.parse().unwrap(), to.parse().unwrap());
    let mut msg = vec![type_, code, 0, 0, 0, 0, 0x05, 0x00];
    msg.extend(&quoted[14..]);
    let mut pseudo = ip_bytes(from);
    pseudo.extend(ip_bytes(to));
    pseudo.extend((msg.len() as u32).to_be_bytes());
    pseudo.extend([0, 0, 0, 58]);
    let c = fold(sum16(&msg, sum16(&pseudo, 0)));
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xdd];
    f.extend([0x60, 0, 0, 0]);
    f.extend((msg.len() as u16).to_be_bytes());
    f.extend([58, 64]);
    f.extend(ip_bytes(from));
    f.extend(ip_bytes(to));
    f.extend(msg);
    f
}

/// [`icmp4_parts`] for an ICMPv6 error frame.
pub fn icmp6_parts(f: &[u8]) -> ((IpAddr, IpAddr), Vec<u8>) {
    let (s, d, _, _) = l3(f);
    let mut quoted = f[..14].to_vec();
    quoted.extend(&f[62..]);
    ((s, d), quoted)
}
