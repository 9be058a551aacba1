//! Crafted frames for BPF_PROG_TEST_RUN: Ethernet + IPv4/IPv6 + a TCP, UDP
//! or ICMP header, with a valid IPv4 header checksum.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const HOST_MAC: [u8; 6] = [0xee; 6];

/// What goes into one IPv4 frame.
#[derive(Clone)]
pub struct V4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    /// flags + fragment offset, host order (0x2000: more fragments)
    pub frag: u16,
    /// IP options (a multiple of 4 bytes)
    pub options: Vec<u8>,
    pub sport: u16,
    pub dport: u16,
    pub smac: [u8; 6],
}

impl V4 {
    pub fn tcp(src: &str, dst: &str, smac: [u8; 6]) -> Self {
        V4 {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: TCP,
            ttl: 64,
            frag: 0,
            options: Vec::new(),
            sport: 43_210,
            dport: 8080,
            smac,
        }
    }

    pub fn frame(&self) -> Vec<u8> {
        let mut f = eth(HOST_MAC, self.smac, 0x0800);
        let ihl = 5 + self.options.len() / 4;
        let l4 = l4(self.proto, self.sport, self.dport);
        let total = (ihl * 4 + l4.len()) as u16;
        let mut ip = vec![(4 << 4) | ihl as u8, 0];
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0x12, 0x34]); // id
        ip.extend_from_slice(&self.frag.to_be_bytes());
        ip.extend_from_slice(&[self.ttl, self.proto, 0, 0]);
        ip.extend_from_slice(&self.src.octets());
        ip.extend_from_slice(&self.dst.octets());
        ip.extend_from_slice(&self.options);
        let c = checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&l4);
        f
    }
}

/// An IPv6 frame with a TCP header.
pub fn v6_tcp(src: &str, dst: &str, smac: [u8; 6], hop_limit: u8) -> Vec<u8> {
    let mut f = eth(HOST_MAC, smac, 0x86dd);
    let l4 = l4(TCP, 43_210, 8080);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    f.extend_from_slice(&[TCP, hop_limit]);
    f.extend_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
    f.extend_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
    f.extend_from_slice(&l4);
    f
}

fn eth(dst: [u8; 6], src: [u8; 6], ty: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ty.to_be_bytes());
    f
}

/// A TCP (20 bytes, SYN), UDP (8) or other (8 zero bytes) header.
fn l4(proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut h = Vec::new();
    if proto == TCP || proto == UDP {
        h.extend_from_slice(&sport.to_be_bytes());
        h.extend_from_slice(&dport.to_be_bytes());
    }
    match proto {
        TCP => {
            h.resize(20, 0);
            h[12] = 5 << 4;
            h[13] = 0x02; // SYN
        }
        _ => h.resize(8, 0),
    }
    h
}

/// The Internet checksum of `b`.
pub fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
