//! Shared by the policy PROG_TEST_RUN tests: crafted frames, the programs
//! loaded with policy on and the seam over their maps, and the flow events
//! read back from the ring buffer.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use weft_bpf_abi::{EpKey, EpValue, FlowEvent, EP_FAST};
use weft_datapath::bpf::{self, RingBuf, SkbCtx};
use weft_datapath::fastpath::FastPath;
use weft_datapath::policy::{KernelPolicyMaps, PolicyMode};
use weft_policy::RuleIds;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;
pub const SCTP: u8 = 132;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;

pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[macro_export]
macro_rules! need_root {
    ($name:expr) => {
        if !support::is_root() {
            println!("skipping {}: needs root", $name);
            return;
        }
    };
}

/// One packet to craft.
#[derive(Debug, Clone, Copy)]
pub struct Pkt {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// TCP flags (SYN by default).
    pub flags: u8,
    /// IPv4 flags + fragment offset (host order); 0x0010: a later fragment.
    pub frag: u16,
    pub smac: [u8; 6],
}

impl Pkt {
    pub fn new(src: &str, dst: &str, proto: u8, sport: u16, dport: u16) -> Self {
        Pkt {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            sport,
            dport,
            flags: SYN,
            frag: 0,
            smac: [2, 0, 0, 0, 0, 1],
        }
    }

    pub fn flags(mut self, flags: u8) -> Self {
        self.flags = flags;
        self
    }

    /// The answer: addresses and ports swapped.
    pub fn reply(&self, flags: u8) -> Self {
        Pkt {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            flags,
            ..*self
        }
    }

    fn l4(&self) -> Vec<u8> {
        let mut h = Vec::new();
        match self.proto {
            TCP => {
                h.extend_from_slice(&self.sport.to_be_bytes());
                h.extend_from_slice(&self.dport.to_be_bytes());
                h.resize(20, 0);
                h[12] = 5 << 4;
                h[13] = self.flags;
            }
            UDP => {
                h.extend_from_slice(&self.sport.to_be_bytes());
                h.extend_from_slice(&self.dport.to_be_bytes());
                h.extend_from_slice(&8u16.to_be_bytes());
                h.extend_from_slice(&[0, 0]);
            }
            SCTP => {
                h.extend_from_slice(&self.sport.to_be_bytes());
                h.extend_from_slice(&self.dport.to_be_bytes());
                h.resize(12, 0);
            }
            ICMP => h.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]), // echo request
            ICMPV6 => h.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]),
            _ => h.resize(8, 0),
        }
        h
    }

    pub fn frame(&self) -> Vec<u8> {
        let mut f = vec![0xee; 6];
        f.extend_from_slice(&self.smac);
        let l4 = self.l4();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&[0x08, 0x00]);
                let mut ip = vec![0x45, 0];
                ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
                ip.extend_from_slice(&[0x12, 0x34]);
                ip.extend_from_slice(&self.frag.to_be_bytes());
                ip.extend_from_slice(&[64, self.proto, 0, 0]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                let c = checksum(&ip);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&ip);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&[0x86, 0xdd]);
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                f.extend_from_slice(&[self.proto, 64]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
            }
            _ => panic!("a packet never mixes families"),
        }
        f.extend_from_slice(&l4);
        f
    }
}

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

/// The programs with policy on, their policy maps, and the events' ring.
pub struct Rig {
    pub fp: FastPath,
    pub maps: KernelPolicyMaps,
    pub ring: RingBuf,
}

/// A pod of this node the fast path knows: (address, host veth ifindex).
pub fn endpoint_entries(pods: &[(IpAddr, u32)]) -> HashMap<EpKey, EpValue> {
    pods.iter()
        .map(|&(ip, ifindex)| {
            (
                EpKey::new(ip),
                EpValue {
                    host_ifindex: ifindex,
                    pod_mac: [2, 0, 0, 0, 0, ifindex as u8],
                    flags: EP_FAST,
                    pad: 0,
                },
            )
        })
        .collect()
}

impl Rig {
    /// Loads the programs (fresh maps) for `node`; `pods` fill the fast
    /// path's endpoint map (nothing is attached anywhere).
    pub fn new(node: &str, pods: &[(IpAddr, u32)]) -> Rig {
        Self::with_mode(node, pods, PolicyMode::Enforce)
    }

    /// [`Rig::new`] with policy in `mode`.
    pub fn with_mode(node: &str, pods: &[(IpAddr, u32)], mode: PolicyMode) -> Rig {
        let pools: Vec<ipnet::IpNet> = vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:244::/48".parse().unwrap(),
        ];
        let mut fp = FastPath::load_with_policy(&pools, 0, None, mode).unwrap();
        fp.sync(endpoint_entries(pods), &HashSet::new()).unwrap();
        let maps = fp.policy_maps(node, RuleIds::new()).unwrap();
        let ring = RingBuf::new(fp.map("weft_flows").unwrap()).unwrap();
        Rig { fp, maps, ring }
    }

    /// Runs `prog` on `pkt` as if it came in on `ingress`: the verdict.
    pub fn run(&self, prog: &str, pkt: &Pkt, ingress: u32) -> i32 {
        let ctx = SkbCtx {
            ingress_ifindex: ingress,
            ..Default::default()
        };
        self.fp
            .program(prog)
            .unwrap()
            .test_run(&pkt.frame(), &ctx, 1)
            .unwrap()
            .retval
    }

    /// The flow events since the last call.
    pub fn events(&mut self) -> Vec<FlowEvent> {
        let mut out = Vec::new();
        self.ring.drain(10_000, |b| {
            out.push(bpf::from_bytes::<FlowEvent>(b).expect("a whole flow event"))
        });
        out
    }
}

/// An ICMP error from `from` to the sender of `about`, quoting its IP
/// header and 8 bytes after it: IPv4 port unreachable (3/3), IPv6 packet
/// too big (2/0).
pub fn icmp_error(from: &str, about: &Pkt) -> Vec<u8> {
    let quoted = about.frame();
    let v4 = about.src.is_ipv4();
    let ip_len = if v4 { 20 } else { 40 };
    let quote = &quoted[14..(14 + ip_len + 8).min(quoted.len())];
    let mut icmp = if v4 {
        vec![3, 3, 0, 0, 0, 0, 0, 0]
    } else {
        vec![2, 0, 0, 0, 0, 0, 0x05, 0x00] // mtu 1280
    };
    icmp.extend_from_slice(quote);
    let mut f = vec![0xee; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, 9]);
    match (from.parse::<IpAddr>().unwrap(), about.src) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0x12, 0x35, 0, 0, 64, ICMP, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = checksum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
            f.extend_from_slice(&[ICMPV6, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => panic!("a packet never mixes families"),
    }
    f.extend_from_slice(&icmp);
    f
}

impl Rig {
    /// Runs `prog` on a raw frame: the verdict.
    pub fn run_frame(&self, prog: &str, frame: &[u8], ingress: u32) -> i32 {
        let ctx = SkbCtx {
            ingress_ifindex: ingress,
            ..Default::default()
        };
        self.fp
            .program(prog)
            .unwrap()
            .test_run(frame, &ctx, 1)
            .unwrap()
            .retval
    }
}
